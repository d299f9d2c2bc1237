//! UDP generic receive offload (GRO), shared by the echo server and the
//! bench's load generators: turning it on, and reading the segment size
//! the kernel reports for a coalesced receive. The control-data parsing is
//! the one `unsafe` piece here, so it exists once.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Control-message space per received buffer, in 8-byte words (cmsghdr
/// alignment): the UDP_GRO message takes CMSG_SPACE(4) = 24 bytes; the rest
/// is spare, so nothing unexpected can make it overflow (MSG_CTRUNC).
pub const CONTROL_WORDS: usize = 8;

/// Asks the kernel for UDP_GRO on `fd`: bursts of equal-sized datagrams
/// from one sender may then arrive coalesced in one buffer, with their
/// segment size in a control message (see [`gro_segment`]).
pub fn enable_gro(fd: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: we pass a pointer to a live c_int and its exact size; the
    // kernel only reads that many bytes from it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_GRO,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The segment size of a GRO-coalesced receive, from the first `len` bytes
/// of its control data (as the kernel left them); None if there is no
/// UDP_GRO message (a single datagram) or it is malformed.
pub fn gro_segment(control: &[u64; CONTROL_WORDS], len: usize) -> Option<usize> {
    let len = len.min(std::mem::size_of_val(control));
    // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_control = control.as_ptr().cast_mut().cast();
    msg.msg_controllen = len as _;
    let end = control.as_ptr() as usize + len;
    // SAFETY: `msg` describes `len` bytes of `control`, which is borrowed
    // (and only read) throughout, and is 8-byte aligned as a cmsghdr must
    // be. CMSG_FIRSTHDR returns null unless a whole cmsghdr fits in those
    // bytes; CMSG_NXTHDR reads the current header's length (inside them)
    // and returns null unless the next whole header, and all of its
    // declared length, lies inside them too. So every header read is inside
    // `control`. The data is read only after checking that its 4 bytes end
    // within both the message's declared length and `len`, and is read
    // unaligned (CMSG_DATA need not be aligned for an int).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                let data = libc::CMSG_DATA(cmsg);
                let data_end = data as usize + std::mem::size_of::<libc::c_int>();
                if (*cmsg).cmsg_len as usize
                    >= libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as usize
                    && data_end <= end
                {
                    let segment = std::ptr::read_unaligned(data.cast::<libc::c_int>());
                    return usize::try_from(segment).ok().filter(|&s| s > 0);
                }
                return None;
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gro_segment_reads_only_a_well_formed_udp_gro_message() {
        let mut control = [0u64; CONTROL_WORDS];
        assert_eq!(gro_segment(&control, 0), None);
        assert_eq!(gro_segment(&control, 64), None); // a zero-length header
        // SAFETY: CMSG_LEN only computes a size.
        let len = unsafe { libc::CMSG_LEN(4) } as usize;
        // SAFETY: `control` is 8-byte aligned and 64 bytes long, so a
        // cmsghdr and its 4 data bytes fit at its start.
        unsafe {
            let hdr = control.as_mut_ptr().cast::<libc::cmsghdr>();
            (*hdr).cmsg_len = len as _;
            (*hdr).cmsg_level = libc::SOL_UDP;
            (*hdr).cmsg_type = libc::UDP_GRO;
            std::ptr::write_unaligned(libc::CMSG_DATA(hdr).cast::<libc::c_int>(), 1200);
        }
        assert_eq!(gro_segment(&control, len), Some(1200));
        assert_eq!(gro_segment(&control, len - 1), None); // data cut off
        // SAFETY: as above.
        unsafe { (*control.as_mut_ptr().cast::<libc::cmsghdr>()).cmsg_type = libc::UDP_SEGMENT };
        assert_eq!(gro_segment(&control, len), None);
    }
}
