//! Shared code of the bench tools: batched datagram I/O.
//!
//! One `sendmmsg(2)` or `recvmmsg(2)` moves a whole batch of datagrams
//! across the user/kernel boundary, so a load generator that keeps dozens of
//! datagrams in flight pays one system call per batch instead of one per
//! datagram and can outrun the servers it measures. Each datagram is still
//! its own datagram on the wire; only the system calls are shared.
//!
//! [`Mmsg`] owns the scratch headers (`mmsghdr`, `iovec`, socket addresses).
//! They point into the caller's buffers only for the duration of one call
//! and are rebuilt before the next, so no pointer outlives the borrow it was
//! taken from.

use std::io;
use std::mem;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

pub use sockit::gro::enable_gro;
use sockit::gro::{CONTROL_WORDS, gro_segment};

/// Most messages one `sendmmsg`/`recvmmsg` call takes (the kernel's
/// UIO_MAXIOV).
pub const MAX_BATCH: usize = libc::UIO_MAXIOV as usize;

/// Most datagrams one UDP_SEGMENT send may carry (the kernel's
/// UDP_MAX_SEGMENTS, 64 before Linux 6.11 and 128 since).
pub const GSO_MAX_SEGMENTS: usize = 64;

/// A received datagram's length, whether it was cut to fit the buffer, and
/// where it came from (unconnected sockets only).
#[derive(Clone, Copy, Debug, Default)]
pub struct Received {
    /// Bytes written into the buffer.
    pub len: usize,
    /// The datagram was longer than its buffer (MSG_TRUNC), or (with GRO)
    /// its control message was cut (MSG_CTRUNC).
    pub truncated: bool,
    /// With [`Mmsg::set_gro`]: 0 if the buffer holds one datagram, else the
    /// buffer holds several coalesced ones (UDP_GRO) of this many bytes
    /// each, the last perhaps shorter.
    pub segment: usize,
}

impl Received {
    /// Where in the buffer each datagram lies, in order.
    pub fn datagrams(&self) -> impl Iterator<Item = std::ops::Range<usize>> + use<> {
        let (len, segment) = (self.len, self.segment);
        let (count, step) = if segment == 0 || len <= segment {
            (1, len)
        } else {
            (len.div_ceil(segment), segment)
        };
        (0..count).map(move |k| k * step..len.min((k + 1) * step))
    }
}

/// Scratch headers for up to `capacity` datagrams per call.
pub struct Mmsg {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    /// Control buffers for receiving, used with `gro`.
    controls: Vec<[u64; CONTROL_WORDS]>,
    gro: bool,
}

impl Mmsg {
    /// Scratch space for batches of at most `capacity` (clamped to
    /// 1..=[`MAX_BATCH`]) datagrams.
    pub fn new(capacity: usize) -> Self {
        let n = capacity.clamp(1, MAX_BATCH);
        // SAFETY: mmsghdr, iovec and sockaddr_storage are plain C structs of
        // integers and raw pointers, for which all-zero bytes are a valid
        // value (null pointers, zero lengths, AF_UNSPEC).
        let (hdr, iov, addr) = unsafe {
            (
                mem::zeroed::<libc::mmsghdr>(),
                mem::zeroed::<libc::iovec>(),
                mem::zeroed::<libc::sockaddr_storage>(),
            )
        };
        Mmsg {
            hdrs: vec![hdr; n],
            iovs: vec![iov; n],
            addrs: vec![addr; n],
            controls: Vec::new(),
            gro: false,
        }
    }

    /// With `on`, [`recv`](Self::recv) takes control messages and reports
    /// each buffer's UDP_GRO segment size (the socket needs [`enable_gro`]).
    pub fn set_gro(&mut self, on: bool) {
        self.gro = on;
        self.controls = if on {
            vec![[0u64; CONTROL_WORDS]; self.hdrs.len()]
        } else {
            Vec::new()
        };
    }

    /// How many datagrams one call handles at most.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Sends each of `bufs` (at most [`capacity`](Self::capacity) are used)
    /// as one datagram with a single `sendmmsg`, to `to[i]` or, if `to` is
    /// empty, to the socket's connected peer (a non-empty `to` shorter than
    /// `bufs` limits the batch). Returns how many were sent:
    /// the kernel stops at the first that fails and reports that failure
    /// only if it was the very first, so a short count means "call again
    /// with the rest".
    pub fn send<'b>(
        &mut self,
        fd: BorrowedFd<'_>,
        bufs: impl IntoIterator<Item = &'b [u8]>,
        to: &[SocketAddr],
        flags: libc::c_int,
    ) -> io::Result<usize> {
        let limit = if to.is_empty() {
            self.hdrs.len()
        } else {
            self.hdrs.len().min(to.len())
        };
        let mut n = 0;
        for (i, buf) in bufs.into_iter().take(limit).enumerate() {
            self.iovs[i] = libc::iovec {
                iov_base: buf.as_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            };
            self.hdrs[i].msg_hdr.msg_namelen = match to.get(i) {
                Some(addr) => write_sockaddr(&mut self.addrs[i], *addr),
                None => 0,
            };
            n = i + 1;
        }
        // Raw pointers are taken only now, after the last reference into
        // the scratch vectors, so none is invalidated before the call.
        let iovs = self.iovs.as_mut_ptr();
        let addrs = self.addrs.as_mut_ptr();
        for (i, hdr) in self.hdrs[..n].iter_mut().enumerate() {
            let named = hdr.msg_hdr.msg_namelen != 0;
            hdr.msg_hdr.msg_name = if named {
                addrs.wrapping_add(i).cast()
            } else {
                std::ptr::null_mut()
            };
            hdr.msg_hdr.msg_iov = iovs.wrapping_add(i);
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = std::ptr::null_mut();
            hdr.msg_hdr.msg_controllen = 0;
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
        }
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: the first `n` headers were filled just above: each points
        // at one iovec in `self.iovs`, which points at a buffer borrowed for
        // this whole call (`bufs` items live for 'b, longer than the call),
        // and at an initialised address in `self.addrs` or at none. The
        // kernel only reads those and writes `msg_len` of each header.
        let sent =
            unsafe { libc::sendmmsg(fd.as_raw_fd(), self.hdrs.as_mut_ptr(), n as _, flags as _) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sent as usize)
    }

    /// Sends `segments` as that many datagrams with ONE `sendmsg` using UDP
    /// generic segmentation offload (UDP_SEGMENT): the kernel builds one
    /// large packet and cuts it into `segment`-byte datagrams as late as it
    /// can (on loopback: when the receiving socket queues them). Every
    /// segment but the last must be exactly `segment` bytes, the last at
    /// most that; at most [`GSO_MAX_SEGMENTS`] and the capacity are used.
    /// Returns how many datagrams were sent (all or an error).
    pub fn send_gso<'b>(
        &mut self,
        fd: BorrowedFd<'_>,
        segments: impl IntoIterator<Item = &'b [u8]>,
        segment: u16,
        to: Option<SocketAddr>,
    ) -> io::Result<usize> {
        let limit = self.iovs.len().min(GSO_MAX_SEGMENTS);
        let mut n = 0;
        for (i, seg) in segments.into_iter().take(limit).enumerate() {
            self.iovs[i] = libc::iovec {
                iov_base: seg.as_ptr() as *mut libc::c_void,
                iov_len: seg.len(),
            };
            n = i + 1;
        }
        if n == 0 {
            return Ok(0);
        }
        let namelen = match to {
            Some(addr) => write_sockaddr(&mut self.addrs[0], addr),
            None => 0,
        };
        // Room for one cmsghdr carrying a u16, 8-byte aligned as cmsghdr
        // needs (CMSG_SPACE(2) is 24 on 64-bit Linux).
        let mut control = [0u64; 4];
        // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = if namelen == 0 {
            std::ptr::null_mut()
        } else {
            self.addrs.as_mut_ptr().cast()
        };
        msg.msg_namelen = namelen;
        msg.msg_iov = self.iovs.as_mut_ptr();
        msg.msg_iovlen = n as _;
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a size.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) } as _;
        debug_assert!(msg.msg_controllen as usize <= mem::size_of_val(&control));
        // SAFETY: msg_control points at `control`, which is 8-byte aligned
        // and at least msg_controllen bytes long, so CMSG_FIRSTHDR returns a
        // valid, aligned cmsghdr inside it whose data (CMSG_DATA, CMSG_LEN(2)
        // bytes from its start) also lies inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = libc::UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
        }
        // SAFETY: msg points at `n` iovecs covering buffers borrowed for 'b
        // (longer than this call), at an initialised address or none, and at
        // the control buffer filled above; the kernel only reads them.
        let sent = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n)
    }

    /// Receives up to `bufs.len()` (and [`capacity`](Self::capacity))
    /// datagrams with one `recvmmsg`, the i-th into `bufs[i]`, describing
    /// each in `meta[i]` and, if `from` is given, its sender in `from[i]`.
    /// With `MSG_WAITFORONE` in `flags` a blocking socket waits (up to its
    /// receive timeout) for the first datagram only.
    pub fn recv(
        &mut self,
        fd: BorrowedFd<'_>,
        bufs: &mut [&mut [u8]],
        meta: &mut [Received],
        mut from: Option<&mut [Option<SocketAddr>]>,
        flags: libc::c_int,
    ) -> io::Result<usize> {
        let mut n = self.hdrs.len().min(bufs.len()).min(meta.len());
        if let Some(from) = from.as_deref() {
            n = n.min(from.len());
        }
        if n == 0 {
            return Ok(0);
        }
        for (iov, buf) in self.iovs[..n].iter_mut().zip(bufs.iter_mut()) {
            *iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
        }
        let iovs = self.iovs.as_mut_ptr();
        let addrs = self.addrs.as_mut_ptr();
        let gro = self.gro;
        let controls = self.controls.as_mut_ptr();
        for (i, hdr) in self.hdrs[..n].iter_mut().enumerate() {
            hdr.msg_hdr.msg_name = addrs.wrapping_add(i).cast();
            hdr.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_hdr.msg_iov = iovs.wrapping_add(i);
            hdr.msg_hdr.msg_iovlen = 1;
            if gro {
                hdr.msg_hdr.msg_control = controls.wrapping_add(i).cast();
                hdr.msg_hdr.msg_controllen = mem::size_of::<[u64; CONTROL_WORDS]>() as _;
            } else {
                hdr.msg_hdr.msg_control = std::ptr::null_mut();
                hdr.msg_hdr.msg_controllen = 0;
            }
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
        }
        // SAFETY: the first `n` headers were filled just above: each points
        // at one iovec covering exactly one of the caller's buffers, which
        // are mutably borrowed for this whole call, at a whole
        // sockaddr_storage with its true size as the name length, and (with
        // `gro`) at its own whole control array in `self.controls` (as long
        // as `self.hdrs`, see set_gro) with its true size. The kernel writes
        // at most those sizes and sets msg_len, msg_namelen, msg_controllen
        // and msg_flags; no timeout pointer is passed.
        let got = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                n as _,
                flags as _,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = got as usize;
        for i in 0..got {
            let hdr = &self.hdrs[i];
            let flags = hdr.msg_hdr.msg_flags;
            meta[i] = Received {
                len: (hdr.msg_len as usize).min(bufs[i].len()),
                truncated: flags & libc::MSG_TRUNC != 0
                    || (self.gro && flags & libc::MSG_CTRUNC != 0),
                segment: if self.gro {
                    gro_segment(&self.controls[i], hdr.msg_hdr.msg_controllen as _).unwrap_or(0)
                } else {
                    0
                },
            };
            if let Some(from) = from.as_deref_mut() {
                from[i] = read_sockaddr(&self.addrs[i], hdr.msg_hdr.msg_namelen);
            }
        }
        Ok(got)
    }
}

/// Writes `addr` into `storage` as the C socket address, returning its length.
fn write_sockaddr(storage: &mut libc::sockaddr_storage, addr: SocketAddr) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and at least as aligned
            // as every sockaddr type, so a sockaddr_in fits at its start.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin) };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin6) };
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads the socket address the kernel wrote into `storage`, if it is an
/// IPv4 or IPv6 one.
fn read_sockaddr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match storage.ss_family as libc::c_int {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the kernel wrote a sockaddr_in, the
            // length says all of it, and sockaddr_storage is large and
            // aligned enough to hold one.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read((storage as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                u32::from_be(sin.sin_addr.s_addr).into(),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((storage as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                sin6.sin6_addr.s6_addr.into(),
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;
    use std::time::Duration;

    #[test]
    fn batch_round_trip_keeps_boundaries_and_senders() {
        for local in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(a) = UdpSocket::bind(local) else {
                continue; // no IPv6 on this machine
            };
            let b = UdpSocket::bind(local).unwrap();
            b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let to = b.local_addr().unwrap();
            let msgs: [&[u8]; 3] = [b"one", b"", b"three!"];
            let mut mm = Mmsg::new(8);
            let sent = mm.send(a.as_fd(), msgs, &[to; 3], 0).unwrap();
            assert_eq!(sent, 3);
            let mut store = [[0u8; 4]; 8];
            let mut bufs: Vec<&mut [u8]> = store.iter_mut().map(|b| &mut b[..]).collect();
            let mut meta = [Received::default(); 8];
            let mut from = [None; 8];
            let mut got = 0;
            while got < 3 {
                got += mm
                    .recv(
                        b.as_fd(),
                        &mut bufs[got..],
                        &mut meta[got..],
                        Some(&mut from[got..]),
                        libc::MSG_WAITFORONE,
                    )
                    .unwrap();
            }
            assert_eq!(&bufs[0][..meta[0].len], b"one");
            assert!(!meta[0].truncated);
            assert_eq!(meta[1].len, 0);
            assert_eq!(&bufs[2][..meta[2].len], b"thre");
            assert!(meta[2].truncated);
            assert!(
                from[..3]
                    .iter()
                    .all(|f| *f == Some(a.local_addr().unwrap()))
            );
        }
    }

    #[test]
    fn gso_send_arrives_coalesced_with_gro_and_splits_back() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        if enable_gro(b.as_fd()).is_err() {
            return; // old kernel
        }
        let msgs: [&[u8]; 4] = [b"aaaaaaaa", b"bbbbbbbb", b"cccccccc", b"ddd"];
        let mut tx = Mmsg::new(8);
        let sent = tx
            .send_gso(a.as_fd(), msgs, 8, Some(b.local_addr().unwrap()))
            .unwrap();
        assert_eq!(sent, 4);
        let mut store = vec![0u8; 1024];
        let mut bufs: Vec<&mut [u8]> = vec![&mut store[..]];
        let mut meta = [Received::default(); 1];
        let mut rx = Mmsg::new(1);
        rx.set_gro(true);
        let got = rx
            .recv(b.as_fd(), &mut bufs, &mut meta, None, libc::MSG_WAITFORONE)
            .unwrap();
        assert_eq!(got, 1);
        assert_eq!(
            (meta[0].len, meta[0].segment, meta[0].truncated),
            (27, 8, false)
        );
        let parts: Vec<&[u8]> = meta[0].datagrams().map(|r| &bufs[0][r]).collect();
        assert_eq!(parts, msgs);
    }
}
