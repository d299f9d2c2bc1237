//! `sockit json serve` / `sockit json send`, against the seed 4-4 programs
//! and raw sockets.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};

use common::*;

fn serve(extra: &[&str]) -> Server {
    let mut args = vec!["json", "serve", "-b", "127.0.0.1", "-p", "0"];
    args.extend_from_slice(extra);
    Server::sockit(&args)
}

/// A raw client that reads replies line by line.
struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(server: &Server) -> Client {
        let stream = TcpStream::connect(server.addr).expect("connect");
        stream.set_read_timeout(Some(LIMIT)).expect("timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Client { stream, reader }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read reply");
        assert!(line.ends_with('\n'), "reply is a whole line: {line:?}");
        line.pop();
        line
    }
}

fn error_of(line: &str) -> (String, u64) {
    let v: serde_json::Value = serde_json::from_str(line).expect("error reply is JSON");
    let message = v["error"].as_str().expect("error field").to_string();
    let offset = v["offset"].as_u64().expect("offset field");
    (message, offset)
}

#[test]
fn seed44_client_gets_its_ten_dicts_back() {
    let server = serve(&[]);
    let out = python(
        "seed004_json_client.py",
        &["127.0.0.1", &server.port_arg()],
        b"",
    );
    assert_ok(&out);
    let replies: Vec<String> = stdout(&out)
        .lines()
        .filter(|l| l.starts_with("From Server:"))
        .map(String::from)
        .collect();
    let expected: Vec<String> = (0..10)
        .map(|i| format!("From Server:  {{'name': 'jung', 'count': {i}}}"))
        .collect();
    assert_eq!(replies, expected);
}

#[test]
fn json_send_talks_to_seed44_server() {
    let server = Server::python("seed004_json_server.py", &["0"]);
    let out = sockit(&[
        "json",
        "send",
        "127.0.0.1",
        &server.port_arg(),
        r#"{"name": "jung", "count": 0}"#,
        "[1, 2.5, \"한글\"]",
        "42",
    ]);
    assert_ok(&out);
    // The seed answers json.dumps(...) without a newline; sockit prints
    // each reply compacted on its own line.
    assert_eq!(
        stdout(&out),
        "{\"name\":\"jung\",\"count\":0}\n[1,2.5,\"\\ud55c\\uae00\"]\n42\n"
    );
}

#[test]
fn values_without_separators_each_get_a_line() {
    let server = serve(&[]);
    let mut c = Client::connect(&server);
    let burst: String = (0..10)
        .map(|i| format!(r#"{{"name": "jung", "count": {i}}}"#))
        .collect();
    c.send(burst.as_bytes());
    for i in 0..10 {
        assert_eq!(c.line(), format!(r#"{{"name":"jung","count":{i}}}"#));
    }
}

#[test]
fn json_send_reads_ndjson_from_stdin_and_keeps_order_and_spelling() {
    let server = serve(&[]);
    let input = "{\"b\": 1, \"a\": 1.50}\n\n[\"안녕\", null]\n";
    let out = sockit_stdin(
        &["json", "send", "127.0.0.1", &server.port_arg()],
        input.as_bytes(),
    );
    assert_ok(&out);
    assert_eq!(stdout(&out), "{\"b\":1,\"a\":1.50}\n[\"안녕\",null]\n");
}

#[test]
fn bad_input_gets_an_error_and_the_connection_goes_on() {
    let server = serve(&[]);
    let mut c = Client::connect(&server);
    c.send(b"{\"ok\":1}{bad}\n");
    assert_eq!(c.line(), "{\"ok\":1}");
    assert_eq!(error_of(&c.line()), ("key must be a string".to_string(), 9));
    c.send(b"\xff\xfe garbage\n\"\xc3\x28\"\n[true]\n");
    let (_, offset) = error_of(&c.line());
    assert_eq!(offset, 14);
    let (message, offset) = error_of(&c.line());
    assert_eq!((message.as_str(), offset), ("invalid UTF-8", 26));
    assert_eq!(c.line(), "[true]");
}

#[test]
fn a_ten_megabyte_value_is_refused_and_others_are_served() {
    let server = serve(&[]);
    let mut big = Client::connect(&server);
    let mut other = Client::connect(&server);
    let mut value = b"[\"".to_vec();
    value.extend(std::iter::repeat_n(b'x', 10 << 20));
    value.extend_from_slice(b"\"]\n{\"after\":true}\n");
    let writer_stream = big.stream.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let mut s = writer_stream;
        s.write_all(&value).expect("write 10 MB");
    });
    let (message, offset) = error_of(&big.line());
    assert_eq!(
        (message.as_str(), offset),
        ("value too large (max 1048576 bytes)", 0)
    );
    other.send(b"{\"meanwhile\":1}\n");
    assert_eq!(other.line(), "{\"meanwhile\":1}");
    writer.join().expect("writer");
    assert_eq!(big.line(), "{\"after\":true}");
    assert!(server.rss_kib() < 64 * 1024, "RSS {} KiB", server.rss_kib());
}

#[test]
fn max_size_is_configurable() {
    let server = serve(&["--max-size", "16"]);
    let mut c = Client::connect(&server);
    c.send(b"[\"0123456789abcdef\"]\n[1]\n");
    assert_eq!(error_of(&c.line()).0, "value too large (max 16 bytes)");
    assert_eq!(c.line(), "[1]");
}

#[test]
fn a_peer_that_disconnects_mid_value_does_not_stop_the_server() {
    let server = serve(&[]);
    let mut c = Client::connect(&server);
    c.send(b"{\"a\": [1, 2");
    c.stream.shutdown(Shutdown::Write).expect("half close");
    let (message, offset) = error_of(&c.line());
    assert_eq!(
        (message.as_str(), offset),
        ("connection closed in the middle of a value", 11)
    );
    let mut rest = Vec::new();
    c.reader.read_to_end(&mut rest).expect("server closes");
    assert!(rest.is_empty());
    for _ in 0..10 {
        let s = TcpStream::connect(server.addr).expect("connect");
        (&s).write_all(b"{\"cut\":").expect("write");
        drop(s);
    }
    let out = sockit(&[
        "json",
        "send",
        "127.0.0.1",
        &server.port_arg(),
        "{\"still\":\"here\"}",
    ]);
    assert_ok(&out);
    assert_eq!(stdout(&out), "{\"still\":\"here\"}\n");
}

#[test]
fn invalid_values_are_caught_before_sending() {
    let server = serve(&[]);
    let out = sockit(&[
        "json",
        "send",
        "127.0.0.1",
        &server.port_arg(),
        "{not json}",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not valid JSON"), "{}", stderr(&out));
    let out = sockit_stdin(
        &["json", "send", "127.0.0.1", &server.port_arg()],
        b"[1]\n{oops\n[2]\n",
    );
    assert_eq!(stdout(&out), "[1]\n[2]\n");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines()
            .last()
            .unwrap_or("")
            .starts_with("sockit: error: 1 input line(s) were not valid JSON"),
        "{err}"
    );
}

#[test]
fn a_client_that_never_reads_replies_costs_bounded_memory() {
    let server = serve(&[]);
    let before = server.rss_kib();
    let hog = TcpStream::connect(server.addr).expect("connect");
    hog.set_write_timeout(Some(std::time::Duration::from_millis(500)))
        .expect("timeout");
    let values: Vec<u8> = b"{\"pipelined\":[1,2,3,4,5,6,7,8]}\n".repeat(32 * 1024); // 1 MiB
    let mut pushed = 0usize;
    for _ in 0..200 {
        match (&hog).write(&values) {
            Ok(n) => pushed += n,
            Err(_) => break, // the server stopped reading: its replies are not being taken
        }
    }
    assert!(
        pushed < 150 << 20,
        "the server kept reading {pushed} bytes from a client that never reads"
    );
    let after = server.rss_kib();
    assert!(
        after < before + 8 * 1024,
        "server RSS grew from {before} KiB to {after} KiB"
    );
    let out = sockit(&[
        "json",
        "send",
        "127.0.0.1",
        &server.port_arg(),
        "[\"others\",\"fine\"]",
    ]);
    assert_ok(&out);
    assert_eq!(stdout(&out), "[\"others\",\"fine\"]\n");
}

#[test]
fn sigterm_stops_the_json_server_within_a_second() {
    let server = serve(&[]);
    let mut c = Client::connect(&server);
    c.send(b"{\"open\":");
    let (status, took, err) = server.terminate();
    assert!(status.success(), "exit {status:?}, stderr {err}");
    assert!(took < std::time::Duration::from_secs(1), "took {took:?}");
}
