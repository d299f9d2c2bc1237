//! Shared code of the bench tools: batched datagram I/O.
//!
//! One `sendmmsg(2)` or `recvmmsg(2)` moves a whole batch of datagrams
//! across the user/kernel boundary, so a load generator that keeps dozens of
//! datagrams in flight pays one system call per batch instead of one per
//! datagram and can outrun the servers it measures. Each datagram is still
//! its own datagram on the wire; only the system calls are shared.
//!
//! The code is sockit's own ([`sockit::sys::udp`]), the very code the echo
//! server runs, re-exported here: the tools measure with the same system
//! calls and have no `unsafe` of their own. [`Mmsg`] owns the scratch
//! headers; the payload buffers are borrowed for one call (a receive) or one
//! [`SendBatch`] (a send), so no pointer outlives the borrow it came from.

pub use sockit::sys::udp::{
    GSO_MAX_SEGMENTS, MAX_BATCH, Mmsg, RawAddr, RecvMeta, SendBatch, Wait, enable_gro,
};

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
            let to = RawAddr::from(b.local_addr().unwrap());
            let msgs: [&[u8]; 3] = [b"one", b"", b"three!"];
            let mut mm = Mmsg::new(8);
            let mut out = mm.batch();
            for msg in msgs {
                assert!(out.push(Some(&to), [msg], None));
            }
            assert_eq!(out.send(a.as_fd(), Wait::Socket).unwrap(), 3);
            let mut store = [[0u8; 4]; 8];
            let mut meta = [RecvMeta::default(); 8];
            let mut got = 0;
            while got < 3 {
                got += mm
                    .recv(
                        b.as_fd(),
                        store[got..].iter_mut().map(|s| &mut s[..]),
                        &mut meta[got..],
                        Wait::Socket,
                    )
                    .unwrap();
            }
            assert_eq!(&store[0][..meta[0].len], b"one");
            assert!(!meta[0].truncated);
            assert_eq!(meta[1].len, 0);
            assert_eq!(&store[2][..meta[2].len], b"thre");
            assert!(meta[2].truncated);
            assert!(
                meta[..3]
                    .iter()
                    .all(|m| m.from.to_socket_addr() == Some(a.local_addr().unwrap()))
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
        let to = RawAddr::from(b.local_addr().unwrap());
        let sent = tx
            .send_msg(a.as_fd(), Some(&to), msgs, Some(8), Wait::Socket)
            .unwrap();
        assert_eq!(sent, 4);
        let mut store = vec![0u8; 1024];
        let mut meta = [RecvMeta::default(); 1];
        let mut rx = Mmsg::new(1);
        rx.set_gro(true);
        let got = rx
            .recv(b.as_fd(), [&mut store[..]], &mut meta, Wait::Socket)
            .unwrap();
        assert_eq!(got, 1);
        assert_eq!(
            (meta[0].len, meta[0].segment, meta[0].truncated),
            (27, 8, false)
        );
        let parts: Vec<&[u8]> = meta[0].datagrams().map(|r| &store[r]).collect();
        assert_eq!(parts, msgs);
    }
}
