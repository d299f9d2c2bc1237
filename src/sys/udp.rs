//! Batched UDP I/O on Linux, for the echo server's hot loop and the bench
//! tools: `recvmmsg(2)` and `sendmmsg(2)` (a whole batch of datagrams per
//! system call), UDP generic segmentation offload (UDP_SEGMENT, "GSO": one
//! message the kernel cuts into equal-sized datagrams as late as it can),
//! its receiving twin UDP_GRO (a burst from one sender received as one
//! buffer plus its segment size), and socket addresses in the kernel's own
//! form ([`RawAddr`]), so a reply goes back to exactly the address a
//! datagram came from (v4-mapped, flow info and scope included) without
//! converting it twice.
//!
//! [`Mmsg`] owns the scratch the calls need (the `mmsghdr` and `iovec`
//! arrays, GSO control messages, GRO control buffers), allocated once.
//! Payload buffers stay the caller's: they are borrowed for one call (a
//! receive) or for one [`SendBatch`] (a send), and Rust's borrow rules
//! keep them alive and untouched for as long as the kernel may use them.
//! What a receive learnt comes back in plain [`RecvMeta`] values.

use std::io;
use std::marker::PhantomData;
use std::mem;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Most messages (and buffers) one [`Mmsg`] call takes: the kernel's
/// UIO_MAXIOV, its limit for `recvmmsg`/`sendmmsg` and for one message's
/// buffers.
pub const MAX_BATCH: usize = libc::UIO_MAXIOV as usize;

/// Most datagrams one UDP_SEGMENT message may carry (the kernel's
/// UDP_MAX_SEGMENTS: 64 before Linux 6.11, 128 since).
pub const GSO_MAX_SEGMENTS: usize = 64;

/// Control-message space per received buffer, in 8-byte words (cmsghdr
/// alignment): the UDP_GRO message takes CMSG_SPACE(4) = 24 bytes; the rest
/// is spare, so nothing unexpected can make it overflow (MSG_CTRUNC).
const CONTROL_WORDS: usize = 8;

/// Bytes of a `sockaddr_storage`, the most a [`RawAddr`] holds.
const STORAGE_LEN: libc::socklen_t = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;

/// Whether a call may block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// As the socket says. On a blocking socket a receive waits (up to the
    /// socket's receive timeout) for the first datagram only, then takes
    /// just what is queued (MSG_WAITFORONE); a send waits for buffer room
    /// (no flags).
    Socket,
    /// Never, whatever the socket says (MSG_DONTWAIT): `WouldBlock` instead.
    Never,
}

impl Wait {
    fn recv_flags(self) -> libc::c_int {
        match self {
            Wait::Socket => libc::MSG_WAITFORONE,
            Wait::Never => libc::MSG_DONTWAIT,
        }
    }

    fn send_flags(self) -> libc::c_int {
        match self {
            Wait::Socket => 0,
            Wait::Never => libc::MSG_DONTWAIT,
        }
    }
}

/// A socket address as the kernel reads and writes it: a
/// `sockaddr_storage` and how many of its bytes are in use (never more than
/// its size). A receive fills one in; a send reads one, so replying to a
/// sender copies no address and converts nothing.
#[derive(Clone, Copy)]
pub struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawAddr {
    /// No address (family AF_UNSPEC, length 0).
    pub fn new() -> Self {
        RawAddr {
            // SAFETY: sockaddr_storage is a C struct of integers, for which
            // all-zero bytes are a valid value (family AF_UNSPEC).
            storage: unsafe { mem::zeroed() },
            len: 0,
        }
    }

    /// The address, if it is an IPv4 or IPv6 one (from a UDP socket it
    /// always is).
    pub fn to_socket_addr(&self) -> Option<SocketAddr> {
        let len = self.len as usize;
        let storage = &self.storage;
        match libc::c_int::from(storage.ss_family) {
            libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family says a sockaddr_in was written, the
                // length says all of it, and a sockaddr_storage is larger
                // than and at least as aligned as every sockaddr type, so
                // the read stays inside `storage` and is aligned.
                let sin: libc::sockaddr_in =
                    unsafe { std::ptr::read((storage as *const libc::sockaddr_storage).cast()) };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    u32::from_be(sin.sin_addr.s_addr).into(),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for a sockaddr_in6.
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
}

impl Default for RawAddr {
    fn default() -> Self {
        RawAddr::new()
    }
}

impl From<SocketAddr> for RawAddr {
    fn from(addr: SocketAddr) -> Self {
        let mut raw = RawAddr::new();
        let storage = (&mut raw.storage as *mut libc::sockaddr_storage).cast::<u8>();
        raw.len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*a.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: `storage` points at a live, exclusively borrowed
                // sockaddr_storage, which is larger than and at least as
                // aligned as a sockaddr_in, so the write fits at its start.
                unsafe { std::ptr::write(storage.cast(), sin) };
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
                // SAFETY: as above, for a sockaddr_in6.
                unsafe { std::ptr::write(storage.cast(), sin6) };
                mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        };
        raw
    }
}

impl std::fmt::Debug for RawAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_socket_addr() {
            Some(addr) => write!(f, "RawAddr({addr})"),
            None => write!(
                f,
                "RawAddr(family {}, {} bytes)",
                self.storage.ss_family, self.len
            ),
        }
    }
}

/// What one receive buffer got: its length, whether it was cut, how it
/// splits into datagrams, and its sender.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecvMeta {
    /// Bytes written into the buffer.
    pub len: usize,
    /// 0 if the buffer holds one datagram; else (UDP_GRO) it holds several
    /// coalesced ones of this many bytes each, the last perhaps shorter.
    pub segment: usize,
    /// The kernel cut the receive short: the datagram was longer than its
    /// buffer (MSG_TRUNC), or (with GRO) its control data was cut
    /// (MSG_CTRUNC, so `segment` may be missing). `len` bytes still arrived.
    pub truncated: bool,
    /// Where it came from, as the kernel wrote it.
    pub from: RawAddr,
}

impl RecvMeta {
    /// Where in the buffer each of its datagrams lies, in order: the whole
    /// of it, or with GRO its `segment`-byte pieces (the last perhaps
    /// shorter).
    pub fn datagrams(&self) -> impl Iterator<Item = Range<usize>> + use<> {
        let (len, segment) = (self.len, self.segment);
        let (count, step) = if segment == 0 || len <= segment {
            (1, len)
        } else {
            (len.div_ceil(segment), segment)
        };
        (0..count).map(move |k| k * step..len.min((k + 1) * step))
    }
}

/// Asks the kernel for UDP_GRO on `fd`: bursts of equal-sized datagrams
/// from one sender may then arrive coalesced in one buffer, with their
/// segment size in a control message, which [`Mmsg::recv`] reads once
/// [`Mmsg::set_gro`] is on.
pub fn enable_gro(fd: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: we pass a pointer to a live c_int and its exact size; the
    // kernel only reads that many bytes from it. The descriptor is
    // borrowed, so open for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_GRO,
            (&on as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
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
fn gro_segment(control: &[u64; CONTROL_WORDS], len: usize) -> Option<usize> {
    let len = len.min(mem::size_of_val(control));
    // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
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
                let data_end = data as usize + mem::size_of::<libc::c_int>();
                if (*cmsg).cmsg_len as usize
                    >= libc::CMSG_LEN(mem::size_of::<libc::c_int>() as u32) as usize
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

/// The control message that asks for UDP generic segmentation offload
/// (`UDP_SEGMENT`): the message's payload is cut into datagrams of
/// `segment` bytes. Laid out as the C macros want it: the data follows the
/// header directly (CMSG_ALIGN(sizeof(struct cmsghdr)) is the header's
/// size on Linux), and the size of the whole is CMSG_SPACE(2).
#[repr(C)]
#[derive(Clone, Copy)]
struct GsoCmsg {
    hdr: libc::cmsghdr,
    segment: u16,
}

impl GsoCmsg {
    /// A control message asking for `segment`-byte datagrams.
    fn new(segment: u16) -> Self {
        // SAFETY: GsoCmsg is a C struct of integers, for which all-zero
        // bytes (padding included) are a valid value.
        let mut cmsg: GsoCmsg = unsafe { mem::zeroed() };
        cmsg.set(segment);
        cmsg
    }

    /// Makes this control message ask for `segment`-byte datagrams. Only
    /// fields are written, so the padding stays zero.
    fn set(&mut self, segment: u16) {
        self.hdr.cmsg_len = (mem::size_of::<libc::cmsghdr>() + mem::size_of::<u16>()) as _;
        self.hdr.cmsg_level = libc::SOL_UDP;
        self.hdr.cmsg_type = libc::UDP_SEGMENT;
        self.segment = segment;
    }
}

/// Scratch headers for batches of up to [`capacity`](Self::capacity)
/// messages and as many buffers, allocated once and reused by every call.
/// Between calls the headers may still point at buffers of an earlier one;
/// every call rewrites each field it hands to the kernel first, so such
/// stale pointers are never used.
pub struct Mmsg {
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    /// One UDP_SEGMENT control message per message sent.
    gso: Box<[GsoCmsg]>,
    /// One control buffer per message received, with GRO (else empty).
    controls: Box<[[u64; CONTROL_WORDS]]>,
}

impl Mmsg {
    /// Scratch space for batches of at most `capacity` (clamped to
    /// 1..=[`MAX_BATCH`]) messages and buffers.
    pub fn new(capacity: usize) -> Self {
        let n = capacity.clamp(1, MAX_BATCH);
        // SAFETY: mmsghdr and iovec are plain C structs of integers and raw
        // pointers, for which all-zero bytes are a valid value (null
        // pointers, zero lengths).
        let (hdr, iov) = unsafe { (mem::zeroed::<libc::mmsghdr>(), mem::zeroed::<libc::iovec>()) };
        Mmsg {
            hdrs: vec![hdr; n].into_boxed_slice(),
            iovs: vec![iov; n].into_boxed_slice(),
            gso: vec![GsoCmsg::new(0); n].into_boxed_slice(),
            controls: Box::new([]),
        }
    }

    /// How many messages (and buffers) one call handles at most.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// With `on`, [`recv`](Self::recv) asks for control data and reports
    /// each buffer's UDP_GRO segment size, and MSG_CTRUNC as a cut (the
    /// socket needs [`enable_gro`] for the kernel to coalesce anything).
    pub fn set_gro(&mut self, on: bool) {
        self.controls = if on {
            vec![[0u64; CONTROL_WORDS]; self.hdrs.len()].into_boxed_slice()
        } else {
            Box::new([])
        };
    }

    /// Receives up to [`capacity`](Self::capacity) (and `meta.len()`)
    /// buffers with one `recvmmsg`, the i-th into the i-th of `bufs` (each
    /// one datagram, or with GRO a coalesced run), describing it in
    /// `meta[i]`. Returns how many (at least one), or the error:
    /// `WouldBlock` when nothing came (on a blocking socket: within its
    /// receive timeout).
    pub fn recv<'b>(
        &mut self,
        fd: BorrowedFd<'_>,
        bufs: impl IntoIterator<Item = &'b mut [u8]>,
        meta: &mut [RecvMeta],
        wait: Wait,
    ) -> io::Result<usize> {
        let room = self.hdrs.len().min(meta.len());
        let mut n = 0;
        for (iov, buf) in self.iovs[..room].iter_mut().zip(bufs) {
            *iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        let gro = !self.controls.is_empty();
        // Raw pointers into the scratch arrays are taken only now, after the
        // last reference into them, so none is invalidated before the call.
        let iovs = self.iovs.as_mut_ptr();
        let controls = self.controls.as_mut_ptr();
        for (i, (hdr, m)) in self.hdrs[..n].iter_mut().zip(meta.iter_mut()).enumerate() {
            let msg = &mut hdr.msg_hdr;
            msg.msg_name = (&raw mut m.from.storage).cast();
            msg.msg_namelen = STORAGE_LEN;
            msg.msg_iov = iovs.wrapping_add(i);
            msg.msg_iovlen = 1;
            if gro {
                msg.msg_control = controls.wrapping_add(i).cast();
                msg.msg_controllen = mem::size_of::<[u64; CONTROL_WORDS]>() as _;
            } else {
                msg.msg_control = std::ptr::null_mut();
                msg.msg_controllen = 0;
            }
            msg.msg_flags = 0;
            hdr.msg_len = 0;
        }
        // SAFETY: the first `n` headers were all filled just above (`n` is
        // at most their number): each points at its own iovec, which covers
        // exactly one of the caller's buffers (mutably borrowed for 'b,
        // longer than this call), at the whole sockaddr_storage of its own
        // `meta` entry (mutably borrowed for this call and not otherwise
        // touched until it returns) with that size as the name length, and
        // with GRO at its own whole control array in `self.controls` (as
        // long as `self.hdrs`, see set_gro) with its size as the control
        // length, else at no control data. The kernel writes at most those
        // lengths and each header's msg_len, msg_namelen, msg_controllen and
        // msg_flags; no timeout pointer is passed.
        let got = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                n as _,
                wait.recv_flags() as _,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = (got as usize).min(n);
        for (i, (hdr, m)) in self.hdrs[..got].iter().zip(meta.iter_mut()).enumerate() {
            let flags = hdr.msg_hdr.msg_flags;
            // What arrived is kept even if it was cut (as recv_from does).
            m.len = (hdr.msg_len as usize).min(self.iovs[i].iov_len);
            m.from.len = hdr.msg_hdr.msg_namelen.min(STORAGE_LEN);
            m.segment = if gro {
                gro_segment(&self.controls[i], hdr.msg_hdr.msg_controllen as _).unwrap_or(0)
            } else {
                0
            };
            m.truncated = flags & libc::MSG_TRUNC != 0 || (gro && flags & libc::MSG_CTRUNC != 0);
        }
        Ok(got)
    }

    /// An empty batch of messages to send with one `sendmmsg`; the buffers
    /// and addresses pushed onto it stay borrowed until it is sent or
    /// dropped.
    pub fn batch<'b>(&mut self) -> SendBatch<'_, 'b> {
        SendBatch {
            mmsg: self,
            messages: 0,
            bufs: 0,
            _borrows: PhantomData,
        }
    }

    /// Sends ONE message with `sendmsg(2)`: the concatenation of `bufs`
    /// (at most [`capacity`](Self::capacity) of them) to `to`, or to the
    /// connected peer if None; with `segment` as one UDP_SEGMENT message
    /// that the kernel cuts into datagrams of that many bytes (all but the
    /// last must be exactly that long, the last at most), else as one
    /// datagram. Returns how many buffers went out: all, or an error.
    pub fn send_msg<'b>(
        &mut self,
        fd: BorrowedFd<'_>,
        to: Option<&RawAddr>,
        bufs: impl IntoIterator<Item = &'b [u8]>,
        segment: Option<u16>,
        wait: Wait,
    ) -> io::Result<usize> {
        let mut n = 0;
        for buf in bufs {
            let Some(iov) = self.iovs.get_mut(n) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "more buffers than the batch's capacity",
                ));
            };
            *iov = libc::iovec {
                iov_base: buf.as_ptr().cast_mut().cast(),
                iov_len: buf.len(),
            };
            n += 1;
        }
        let mut gso = segment.map(GsoCmsg::new);
        // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        if let Some(to) = to {
            msg.msg_name = (&raw const to.storage).cast_mut().cast();
            msg.msg_namelen = to.len;
        }
        msg.msg_iov = self.iovs.as_mut_ptr();
        msg.msg_iovlen = n as _;
        if let Some(gso) = gso.as_mut() {
            msg.msg_control = (gso as *mut GsoCmsg).cast();
            msg.msg_controllen = mem::size_of::<GsoCmsg>() as _;
        }
        // SAFETY: `msg` points at the first `n` iovecs of `self.iovs`, filled
        // just above, each covering one buffer borrowed for 'b (longer than
        // this call); at `to`'s storage (borrowed for the call) with its
        // length, which never exceeds that storage, or at no name; and at
        // one whole, valid GsoCmsg on our stack or at no control data. The
        // kernel only reads them (the `*mut` casts are for the C types).
        let sent = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, wait.send_flags()) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n)
    }
}

/// Messages to send with one `sendmmsg`, built in a [`Mmsg`]'s scratch
/// (see [`Mmsg::batch`]). Every buffer and address pushed must live for
/// `'b`, which the batch cannot outlive, so they are all alive and
/// unchanged when [`send`](Self::send) hands them to the kernel.
pub struct SendBatch<'m, 'b> {
    mmsg: &'m mut Mmsg,
    /// Messages pushed: they use the first `messages` headers ...
    messages: usize,
    /// ... and the first `bufs` iovecs, in order.
    bufs: usize,
    _borrows: PhantomData<&'b [u8]>,
}

impl<'b> SendBatch<'_, 'b> {
    /// Adds one message: the concatenation of `bufs` to `to`, or to the
    /// connected peer if None; with `segment` a UDP_SEGMENT message the
    /// kernel cuts into datagrams of that many bytes (all but the last
    /// buffer's bytes must come in exactly such pieces), else one datagram.
    /// Returns false, adding nothing, if the batch has no room left for it
    /// (the [`Mmsg`]'s capacity bounds both messages and buffers).
    pub fn push(
        &mut self,
        to: Option<&'b RawAddr>,
        bufs: impl IntoIterator<Item = &'b [u8]>,
        segment: Option<u16>,
    ) -> bool {
        let m = self.messages;
        if m == self.mmsg.hdrs.len() {
            return false;
        }
        let mut end = self.bufs;
        for buf in bufs {
            // The iovecs past `self.bufs` are unused scratch, so leaving on
            // overflow adds nothing.
            let Some(iov) = self.mmsg.iovs.get_mut(end) else {
                return false;
            };
            *iov = libc::iovec {
                iov_base: buf.as_ptr().cast_mut().cast(),
                iov_len: buf.len(),
            };
            end += 1;
        }
        let controllen = match segment {
            Some(segment) => {
                self.mmsg.gso[m].set(segment);
                mem::size_of::<GsoCmsg>()
            }
            None => 0,
        };
        let hdr = &mut self.mmsg.hdrs[m];
        let msg = &mut hdr.msg_hdr;
        (msg.msg_name, msg.msg_namelen) = match to {
            Some(to) => ((&raw const to.storage).cast_mut().cast(), to.len),
            None => (std::ptr::null_mut(), 0),
        };
        // The iovec and control pointers are set by `send`, once no more
        // references into the scratch arrays are taken.
        msg.msg_iov = std::ptr::null_mut();
        msg.msg_iovlen = (end - self.bufs) as _;
        msg.msg_control = std::ptr::null_mut();
        msg.msg_controllen = controllen as _;
        msg.msg_flags = 0;
        hdr.msg_len = 0;
        self.messages += 1;
        self.bufs = end;
        true
    }

    /// Messages pushed so far.
    pub fn len(&self) -> usize {
        self.messages
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// Sends the messages with one `sendmmsg` (none: no call, `Ok(0)`).
    /// Returns how many BUFFERS went out, those of the messages the kernel
    /// sent: it stops at the first message it cannot send and reports that
    /// failure only if it was the very first, so a short count means "push
    /// the rest again" (the next call starts with the failed one, and
    /// reports why).
    pub fn send(self, fd: BorrowedFd<'_>, wait: Wait) -> io::Result<usize> {
        let n = self.messages;
        if n == 0 {
            return Ok(0);
        }
        let mmsg = self.mmsg;
        // Raw pointers into the scratch arrays are taken only now, after the
        // last reference into them, so none is invalidated before the call.
        let iovs = mmsg.iovs.as_mut_ptr();
        let gso = mmsg.gso.as_mut_ptr();
        let mut at = 0;
        for (m, hdr) in mmsg.hdrs[..n].iter_mut().enumerate() {
            let msg = &mut hdr.msg_hdr;
            msg.msg_iov = iovs.wrapping_add(at);
            at += iovlen(msg);
            if msg.msg_controllen != 0 {
                msg.msg_control = gso.wrapping_add(m).cast();
            }
        }
        // SAFETY: the first `n` headers were filled by `push` and above:
        // message m points at its own msg_iovlen consecutive iovecs (the
        // messages' runs follow each other from the first iovec and end at
        // `self.bufs`, within `mmsg.iovs`), each covering a buffer borrowed
        // for 'b, which this batch cannot outlive; at an address borrowed for
        // 'b with its length (never more than its storage) or at none; and
        // at no control data or at its own whole, valid GsoCmsg in
        // `mmsg.gso`. For sending the kernel only reads those (the `*mut`
        // casts are for the C types) and writes each header's msg_len.
        let sent = unsafe {
            libc::sendmmsg(
                fd.as_raw_fd(),
                mmsg.hdrs.as_mut_ptr(),
                n as _,
                wait.send_flags() as _,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(mmsg.hdrs[..(sent as usize).min(n)]
            .iter()
            .map(|hdr| iovlen(&hdr.msg_hdr))
            .sum())
    }
}

/// How many buffers a message has (`msg_iovlen` is a size_t in glibc, an
/// int in musl).
#[allow(clippy::unnecessary_cast)]
fn iovlen(msg: &libc::msghdr) -> usize {
    msg.msg_iovlen as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;
    use std::time::Duration;

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

    #[test]
    fn gso_control_message_has_the_c_layout() {
        // SAFETY: CMSG_LEN and CMSG_SPACE only compute sizes.
        let (len, space) = unsafe { (libc::CMSG_LEN(2), libc::CMSG_SPACE(2)) };
        let cmsg = GsoCmsg::new(64);
        assert_eq!(cmsg.hdr.cmsg_len as u64, u64::from(len));
        assert_eq!(cmsg.segment, 64);
        assert_eq!(mem::size_of::<GsoCmsg>(), space as usize);
    }

    #[test]
    fn raw_addresses_round_trip() {
        for addr in ["127.0.0.1:7", "[::1]:65535", "[::ffff:10.0.0.1]:1"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(RawAddr::from(addr).to_socket_addr(), Some(addr));
        }
        // Flow info and scope survive too.
        let v6 = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 5, 0x12345, 3));
        assert_eq!(RawAddr::from(v6).to_socket_addr(), Some(v6));
        assert_eq!(RawAddr::new().to_socket_addr(), None);
        // A length too short for the family is no address.
        let mut short = RawAddr::from(v6);
        short.len = 8;
        assert_eq!(short.to_socket_addr(), None);
    }

    #[test]
    fn batches_keep_messages_senders_and_gso_runs() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let to = RawAddr::from(b.local_addr().unwrap());
        let mut tx = Mmsg::new(4);
        let mut out = tx.batch();
        assert!(out.push(Some(&to), [&b"one"[..]], None));
        // Two buffers of one GSO message: two datagrams.
        assert!(out.push(Some(&to), [&b"ab"[..], b"c"], Some(2)));
        assert!(!out.push(Some(&to), [&b"x"[..], b"y"], None), "no room");
        assert!(out.push(Some(&to), [&b""[..]], None));
        assert_eq!(out.len(), 3);
        assert_eq!(out.send(a.as_fd(), Wait::Socket).unwrap(), 4);
        let mut store = [[0u8; 8]; 4];
        let mut meta = [RecvMeta::default(); 4];
        let mut rx = Mmsg::new(4);
        let mut got = Vec::new();
        while got.len() < 4 {
            let n = rx
                .recv(
                    b.as_fd(),
                    store.iter_mut().map(|s| &mut s[..]),
                    &mut meta,
                    Wait::Socket,
                )
                .unwrap();
            for (s, m) in store.iter().zip(&meta).take(n) {
                assert_eq!(m.from.to_socket_addr(), Some(a.local_addr().unwrap()));
                got.push(s[..m.len].to_vec());
            }
        }
        assert_eq!(got, [&b"one"[..], b"ab", b"c", b""]);
        // Nothing pushed: no call at all.
        assert_eq!(tx.batch().send(a.as_fd(), Wait::Never).unwrap(), 0);
        let too_many = [&b"x"[..]; 5];
        let err = tx
            .send_msg(a.as_fd(), Some(&to), too_many, None, Wait::Never)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
