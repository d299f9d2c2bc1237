//! `sockit echo serve` / `sockit echo send`, against the seed programs,
//! plain tools and raw sockets.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rand::{RngExt, SeedableRng};

/// `sockit echo serve EXTRA... -b 127.0.0.1 -p 0`.
fn serve(extra: &[&str]) -> Server {
    let mut args = vec!["echo", "serve"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-b", "127.0.0.1", "-p", "0"]);
    Server::sockit(&args)
}

fn udp_client() -> UdpSocket {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind client");
    sock.set_read_timeout(Some(LIMIT)).expect("timeout");
    sock
}

fn tcp_client(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.addr).expect("connect");
    stream.set_read_timeout(Some(LIMIT)).expect("timeout");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Reads exactly `n` bytes.
fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).expect("read reply");
    buf
}

// ---- seed programs as peers -------------------------------------------

#[test]
fn seed000_client_gets_upper_case_from_echo_serve_udp_upper() {
    let server = serve(&["--udp", "--upper"]);
    let out = python(
        "seed000_udp_client.py",
        &["127.0.0.1", &server.port_arg()],
        "hello world 안녕하세요\n".as_bytes(),
    );
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        "Input lowercase sentence:HELLO WORLD 안녕하세요\n"
    );
}

#[test]
fn echo_send_udp_gets_upper_case_from_seed000_server() {
    let server = Server::python("seed000_udp_server.py", &["0"]);
    let out = sockit(&[
        "echo",
        "send",
        "-u",
        "127.0.0.1",
        &server.port_arg(),
        "hello",
        "한글 abc",
    ]);
    assert_ok(&out);
    assert_eq!(stdout(&out), "HELLO\n한글 ABC\n");
}

#[test]
fn seed003_tcp_client_gets_fixed_reply() {
    let server = serve(&["--tcp", "--reply", "Hello, i'm server!"]);
    let out = python(
        "seed003_tcp_client.py",
        &["127.0.0.1", &server.port_arg()],
        b"",
    );
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        "Connection Success..\nClient : Data Received :  Hello, i'm server!\n"
    );
}

#[test]
fn echo_send_tcp_talks_to_seed003_server() {
    let server = Server::python("seed003_tcp_server.py", &["0"]);
    let out = sockit(&[
        "echo",
        "send",
        "127.0.0.1",
        &server.port_arg(),
        "Hello, i'm client!",
    ]);
    assert_ok(&out);
    assert_eq!(stdout(&out), "Hello, i'm server!\n");
    assert_eq!(server.next_line(), "Waiting for Connection..");
    assert!(server.next_line().ends_with("by Connetcion.."));
    // sockit sends the message as a line, so the seed prints its newline too.
    assert_eq!(
        server.next_line(),
        "Server : Data Received : Hello, i'm client!"
    );
}

#[test]
fn seed003_udp_client_gets_its_datagram_back() {
    let server = serve(&["--udp"]);
    let out = python(
        "seed003_udp_client.py",
        &["127.0.0.1", &server.port_arg()],
        b"",
    );
    assert_ok(&out);
    let expected = format!("Hello! ('127.0.0.1', {})\n", server.port());
    assert_eq!(stdout(&out), expected);
}

#[test]
fn seed004_notify_gets_hello_udp_client() {
    let server = serve(&["--udp", "--reply", "Hello UDP Client"]);
    let out = python("seed004_notify.py", &["127.0.0.1", &server.port_arg()], b"");
    assert_ok(&out);
    let expected = format!(
        "Message from Server ('127.0.0.1', {})\n[Recv Data] Hello UDP Client\n",
        server.port()
    );
    assert_eq!(stdout(&out), expected);
}

#[test]
fn echo_send_udp_talks_to_seed004_listener() {
    let server = Server::python("seed004_listener.py", &["0"]);
    let out = sockit(&[
        "echo",
        "send",
        "-u",
        "127.0.0.1",
        &server.port_arg(),
        "Hello UDP Listener",
    ]);
    assert_ok(&out);
    assert_eq!(stdout(&out), "Hello UDP Client\n");
}

// ---- plain tools as peers ----------------------------------------------

#[test]
fn nc_and_socat_are_echoed() {
    require("nc");
    require("socat");
    let server = serve(&[]);
    let port = server.port_arg();
    let out = run_with_input(
        Command::new("nc").args(["-N", "127.0.0.1", &port]),
        "line one\n둘\n".as_bytes(),
    );
    assert_ok(&out);
    assert_eq!(stdout(&out), "line one\n둘\n");
    let out = run_with_input(
        Command::new("socat").args(["-t", "1", "-", &format!("UDP:127.0.0.1:{port}")]),
        b"via socat",
    );
    assert_ok(&out);
    assert_eq!(stdout(&out), "via socat");
}

// ---- behaviour -----------------------------------------------------------

#[test]
fn udp_and_tcp_share_the_port_and_ipv6_dual_stack_works() {
    let server = Server::sockit(&["echo", "serve", "-b", "::", "-p", "0", "--upper"]);
    let port = server.port_arg();
    for host in ["127.0.0.1", "::1"] {
        let tcp = sockit(&["echo", "send", host, &port, "tcp"]);
        assert_ok(&tcp);
        assert_eq!(stdout(&tcp), "TCP\n");
        let udp = sockit(&["echo", "send", "-u", host, &port, "udp"]);
        assert_ok(&udp);
        assert_eq!(stdout(&udp), "UDP\n");
    }
}

#[test]
fn stdin_lines_are_messages() {
    let server = serve(&[]);
    let out = sockit_stdin(
        &["echo", "send", "127.0.0.1", &server.port_arg()],
        b"one\r\ntwo\nthree",
    );
    assert_ok(&out);
    assert_eq!(stdout(&out), "one\ntwo\nthree\n");
    let out = sockit_stdin(
        &["echo", "send", "-u", "127.0.0.1", &server.port_arg()],
        b"a\nb\n",
    );
    assert_ok(&out);
    assert_eq!(stdout(&out), "a\nb\n");
}

#[test]
fn upper_converts_a_character_split_across_reads() {
    let server = serve(&["--tcp", "--upper"]);
    let mut stream = tcp_client(&server);
    let e_acute = "é".as_bytes(); // c3 a9
    let han = "한".as_bytes(); // ed 95 9c
    // The server cannot answer a half character, so reading "A" proves it
    // has consumed the first half on its own before the rest is sent.
    stream.write_all(&[b'a', e_acute[0]]).expect("write");
    assert_eq!(read_n(&mut stream, 1), b"A");
    stream
        .write_all(&[e_acute[1], b'b', han[0], han[1]])
        .expect("write");
    assert_eq!(read_n(&mut stream, 3), "Éb".to_uppercase().as_bytes());
    stream.write_all(&[han[2], b'c']).expect("write");
    assert_eq!(read_n(&mut stream, 4), "한C".as_bytes());
}

#[test]
fn tcp_reply_answers_lines_with_lines() {
    let server = serve(&["--tcp", "--reply", "OK"]);
    let mut stream = tcp_client(&server);
    stream.write_all(b"first\nsecond\n").expect("write");
    assert_eq!(read_n(&mut stream, 6), b"OK\nOK\n");
}

#[test]
fn tcp_reply_answers_every_newline_less_message_on_one_connection() {
    // The seed's clients send a message without newline and recv once,
    // message after message.
    let server = serve(&["--tcp", "--reply", "Hello, i'm server!"]);
    let mut stream = tcp_client(&server);
    for message in ["Hello, i'm client!", "second message", "세 번째"] {
        stream.write_all(message.as_bytes()).expect("write");
        assert_eq!(read_n(&mut stream, 18), b"Hello, i'm server!");
    }
}

#[test]
fn a_long_reply_to_a_flood_of_newlines_costs_bounded_memory() {
    let text = "x".repeat(1000);
    let server = serve(&["--tcp", "--reply", &text]);
    let before = server.rss_kib();
    let newlines = vec![b'\n'; 1 << 20];
    let mut hogs = Vec::new();
    for _ in 0..10 {
        let mut hog = tcp_client(&server);
        hog.set_write_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        // Each newline asks for 1001 bytes; the client never reads them.
        for _ in 0..8 {
            if hog.write(&newlines).is_err() {
                break;
            }
        }
        hogs.push(hog);
    }
    let after = server.rss_kib();
    assert!(
        after < before + 32 * 1024,
        "server RSS grew from {before} KiB to {after} KiB"
    );
    let out = sockit(&["echo", "send", "127.0.0.1", &server.port_arg(), "hi"]);
    assert_eq!(stdout(&out), format!("{text}\n"));
}

#[test]
fn full_duplex_100_mb_stream_does_not_deadlock() {
    let server = serve(&["--tcp"]);
    let stream = tcp_client(&server);
    let mut writer = stream.try_clone().expect("clone");
    const TOTAL: usize = 100 * 1024 * 1024;
    let sender = thread::spawn(move || {
        let mut block = vec![0u8; 256 * 1024];
        let mut sent = 0usize;
        while sent < TOTAL {
            for (i, b) in block.iter_mut().enumerate() {
                *b = ((sent + i) % 251) as u8;
            }
            writer.write_all(&block).expect("write");
            sent += block.len();
        }
        writer.shutdown(Shutdown::Write).expect("half close");
    });
    let mut reader = stream;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0usize;
    loop {
        let n = reader.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        for (i, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, ((got + i) % 251) as u8, "byte {} differs", got + i);
        }
        got += n;
    }
    sender.join().expect("sender");
    assert_eq!(got, TOTAL);
}

#[test]
fn two_hundred_concurrent_tcp_clients() {
    let server = serve(&["--tcp"]);
    let streams: Vec<TcpStream> = (0..200).map(|_| tcp_client(&server)).collect();
    // All connected at once; now each talks.
    for round in 0..3 {
        for (i, s) in streams.iter().enumerate() {
            let mut s = s;
            s.write_all(format!("client {i} round {round}\n").as_bytes())
                .expect("write");
        }
        for (i, s) in streams.iter().enumerate() {
            let mut s = s.try_clone().expect("clone");
            let want = format!("client {i} round {round}\n");
            assert_eq!(read_n(&mut s, want.len()), want.as_bytes());
        }
    }
}

#[test]
fn drop_with_seed_is_a_reproducible_pattern() {
    // The contract: datagram i (in arrival order) is dropped when the i-th
    // draw of ChaCha8(seed).random_bool(p) says so. Compute it here.
    let seed = 7u64;
    let p = 0.3;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let dropped: Vec<bool> = (0..200).map(|_| rng.random_bool(p)).collect();
    let expected: Vec<u32> = (0..200u32).filter(|i| !dropped[*i as usize]).collect();
    assert!(expected.len() > 100 && expected.len() < 180);

    for _run in 0..2 {
        let server = serve(&["--udp", "--drop", "0.3", "--seed", "7"]);
        let sock = udp_client();
        sock.connect(server.addr).expect("connect");
        let mut answered = Vec::new();
        let mut buf = [0u8; 64];
        for i in 0..200u32 {
            sock.send(&i.to_be_bytes()).expect("send");
            if !dropped[i as usize] {
                // Replies come in order; the next one must be this datagram.
                let n = sock.recv(&mut buf).expect("reply");
                assert_eq!(n, 4);
                answered.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
            }
        }
        assert_eq!(answered, expected);
    }
}

#[test]
fn delay_holds_replies_back() {
    let server = serve(&["--delay", "300"]);
    let sock = udp_client();
    let started = Instant::now();
    sock.send_to(b"late", server.addr).expect("send");
    let mut buf = [0u8; 16];
    let (n, _) = sock.recv_from(&mut buf).expect("reply");
    assert_eq!(&buf[..n], b"late");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );

    let mut stream = tcp_client(&server);
    let started = Instant::now();
    stream.write_all(b"tcp\n").expect("write");
    assert_eq!(read_n(&mut stream, 4), b"tcp\n");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

// ---- bad input -------------------------------------------------------------

#[test]
fn garbage_and_invalid_utf8_are_survived() {
    let server = serve(&["--upper"]);
    let garbage: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    // TCP: bytes that are not UTF-8 come back unchanged, ASCII upper-cased.
    let mut stream = tcp_client(&server);
    stream.write_all(b"ok\xff\xfe\xc3").expect("write");
    stream.shutdown(Shutdown::Write).expect("half close");
    let mut back = Vec::new();
    stream.read_to_end(&mut back).expect("read");
    assert_eq!(back, b"OK\xff\xfe\xc3");
    let mut stream = tcp_client(&server);
    stream.write_all(&garbage).expect("write");
    stream.shutdown(Shutdown::Write).expect("half close");
    let mut back = Vec::new();
    stream.read_to_end(&mut back).expect("read");
    assert_eq!(
        back,
        garbage.to_ascii_uppercase(),
        "ASCII upper-cased, the rest unchanged"
    );
    // UDP: empty, invalid, and the largest possible datagram.
    let sock = udp_client();
    let mut buf = vec![0u8; 70_000];
    for datagram in [&b""[..], b"\xff\x00abc", &vec![b'x'; 65_507]] {
        sock.send_to(datagram, server.addr).expect("send");
        let (n, _) = sock.recv_from(&mut buf).expect("reply");
        assert_eq!(n, datagram.len());
    }
    // Still serving.
    let out = sockit(&[
        "echo",
        "send",
        "127.0.0.1",
        &server.port_arg(),
        "still here",
    ]);
    assert_eq!(stdout(&out), "STILL HERE\n");
}

#[test]
fn a_client_that_never_reads_costs_bounded_memory() {
    let server = serve(&["--tcp"]);
    let before = server.rss_kib();
    let mut hog = tcp_client(&server);
    hog.set_write_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let block = vec![b'z'; 1 << 20];
    let mut pushed = 0usize;
    // Write until the kernel and the server stop taking bytes (the write
    // times out): everything in between is what the server buffers.
    for _ in 0..200 {
        match hog.write(&block) {
            Ok(n) => pushed += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => break,
            Err(e) => panic!("write failed: {e}"),
        }
    }
    assert!(
        pushed < 150 << 20,
        "the server kept reading ({pushed} bytes) from a client that never reads"
    );
    let after = server.rss_kib();
    assert!(
        after < before + 8 * 1024,
        "server RSS grew from {before} KiB to {after} KiB"
    );
    // Others are unaffected.
    let out = sockit(&["echo", "send", "127.0.0.1", &server.port_arg(), "hi"]);
    assert_eq!(stdout(&out), "hi\n");
}

#[test]
fn a_peer_that_vanishes_mid_stream_does_not_hurt() {
    let server = serve(&["--tcp", "--upper"]);
    for _ in 0..20 {
        let stream = tcp_client(&server);
        let sock = socket2::SockRef::from(&stream);
        sock.set_linger(Some(Duration::ZERO)).expect("linger");
        (&stream).write_all(&[b'a'; 10_000]).expect("write");
        (&stream).write_all(&"한".as_bytes()[..2]).expect("write");
        drop(stream); // RST with data in flight
    }
    let out = sockit(&["echo", "send", "127.0.0.1", &server.port_arg(), "alive"]);
    assert_ok(&out);
    assert_eq!(stdout(&out), "ALIVE\n");
}

#[test]
fn sigterm_stops_the_server_within_a_second() {
    let server = serve(&[]);
    let _idle = tcp_client(&server);
    let (status, took, err) = server.terminate();
    assert!(status.success(), "exit {status:?}, stderr {err}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn json_output_has_one_object_per_reply() {
    let server = serve(&["--upper"]);
    for proto in [&[][..], &["-u"][..]] {
        let mut args = vec!["echo", "send", "--json"];
        args.extend_from_slice(proto);
        let port = server.port_arg();
        args.extend_from_slice(&["127.0.0.1", &port, "one", "두 \u{1b}"]);
        let out = sockit(&args);
        assert_ok(&out);
        let lines: Vec<serde_json::Value> = stdout(&out)
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        assert_eq!(lines.len(), 2, "{proto:?}");
        assert_eq!(lines[0]["message"], "one");
        assert_eq!(lines[0]["reply"], "ONE");
        assert_eq!(lines[1]["reply"], "두 \u{1b}");
        assert!(lines[1]["rtt_ms"].as_f64().is_some_and(|ms| ms >= 0.0));
    }
}
