//! The system calls std, tokio and socket2 do not wrap, behind safe
//! functions: batched UDP I/O with segmentation and receive offload
//! ([`udp`]), `sendfile` and `sync_file_range` ([`file`](mod@file)), and `poll` on
//! one descriptor ([`wait`]).
//!
//! # Why in one place
//!
//! This is the only module of the crate allowed `unsafe` (`lib.rs` denies
//! it everywhere else), so that every raw pointer handed to the kernel is
//! built, and its soundness argued (a `// SAFETY:` comment on each block),
//! in one file per subject that can be read in one sitting. The echo server
//! and the bench tools share it, so the mmsghdr, cmsg and sockaddr code
//! exists once and is tested once. The wrappers add no work to the hot
//! paths: each makes exactly the system call its name says, with the flags
//! the caller chose, and copies no payload.
//!
//! # What callers may rely on
//!
//! - Every function is safe for any arguments: lengths given to the kernel
//!   are those of live Rust buffers borrowed for the whole call, and no
//!   pointer into a caller's buffer is used after the call returns (the
//!   scratch headers of [`udp::Mmsg`] may still hold stale ones; they are
//!   rewritten before each use and never read by Rust).
//! - Errors are the kernel's, as `io::Error::last_os_error()`, so callers
//!   can match `WouldBlock`, `Interrupted` or raw errno values as before.
//! - Nothing here panics on what the network or the kernel sends: lengths
//!   the kernel reports are clamped to the buffers, and control data and
//!   addresses are parsed with bounds checks.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

pub mod file;
pub mod udp;

/// What [`wait`] waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ready {
    /// Something to read (POLLIN).
    Read,
    /// Room to write (POLLOUT).
    Write,
}

/// Blocks until `fd` is ready as asked, an error or hang-up is pending on
/// it, or `timeout` has passed (poll(2) on the one descriptor). Returns
/// whether it is ready (or has an error pending) rather than timed out.
/// EINTR is returned as `Interrupted`; most callers simply try again.
pub fn wait(fd: BorrowedFd<'_>, ready: Ready, timeout: Duration) -> io::Result<bool> {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: match ready {
            Ready::Read => libc::POLLIN,
            Ready::Write => libc::POLLOUT,
        },
        revents: 0,
    };
    let timeout = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pollfd` is one valid, initialised pollfd that lives across
    // the call, and the count passed is 1; the kernel writes only its
    // `revents`. The descriptor is borrowed, so it stays open meanwhile.
    let rc = unsafe { libc::poll(&mut pollfd, 1, timeout) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    #[test]
    fn wait_sees_readiness_and_times_out() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let short = Duration::from_millis(10);
        assert!(!wait(b.as_fd(), Ready::Read, short).unwrap());
        assert!(wait(b.as_fd(), Ready::Write, short).unwrap());
        a.send_to(b"x", b.local_addr().unwrap()).unwrap();
        assert!(wait(b.as_fd(), Ready::Read, Duration::from_secs(2)).unwrap());
    }
}
