//! The two file system calls the transfer uses that std does not offer:
//! `sendfile(2)` (file to socket inside the kernel, for `file send`) and
//! `sync_file_range(2)` (early writeback, for `file receive`). Both take
//! descriptors and integers only; no memory of the caller's is touched.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Copies up to `len` bytes of `file`, from byte `offset` on, to `out` (a
/// socket) inside the kernel, without moving the file's position. Returns
/// how many bytes went out: fewer than `len` is normal (call again for the
/// rest), 0 means `offset` is at or past the end of the file. Errors are
/// the kernel's (EINVAL, ENOSYS or EOPNOTSUPP where the file system cannot
/// do it; an offset beyond `off_t` is EINVAL too).
pub fn sendfile(
    out: BorrowedFd<'_>,
    file: BorrowedFd<'_>,
    offset: u64,
    len: usize,
) -> io::Result<usize> {
    let Ok(mut off) = libc::off_t::try_from(offset) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: both descriptors are borrowed, so open for the whole call;
    // `off` is a live local the kernel reads and updates; no other memory
    // of ours is read or written.
    let n = unsafe { libc::sendfile(out.as_raw_fd(), file.as_raw_fd(), &mut off, len) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Starts writing all of `file`'s dirty pages to disk without waiting for
/// it (`sync_file_range(SYNC_FILE_RANGE_WRITE)` over the whole file). A
/// hint: it makes no promise of durability (fsync still does that).
pub fn start_writeback(file: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: sync_file_range takes a descriptor, which is borrowed and so
    // open for the whole call, and plain integers; no memory of ours is
    // read or written.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    #[test]
    fn sendfile_sends_from_the_offset_and_reports_the_end() {
        let dir = std::env::temp_dir().join(format!("sockit-sys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sendfile");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(b"0123456789")
            .unwrap();
        let file = std::fs::File::open(&path).unwrap();
        start_writeback(file.as_fd()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let out = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        assert_eq!(sendfile(out.as_fd(), file.as_fd(), 4, 100).unwrap(), 6);
        assert_eq!(sendfile(out.as_fd(), file.as_fd(), 10, 100).unwrap(), 0);
        assert_eq!(
            sendfile(out.as_fd(), file.as_fd(), u64::MAX, 1)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EINVAL)
        );
        drop(out);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"456789");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
