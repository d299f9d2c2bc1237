//! Identities (`sockit id`, `--identity`): made once, kept private,
//! printed with check characters, refused when unsafe or broken.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;

/// A fresh, empty directory of this test's own.
fn scratch(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sockit-tls-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// An ID as `sockit id` prints it: SKT- and eight groups of 7.
fn is_id(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 9
        && groups[0] == "SKT"
        && groups[1..].iter().all(|g| {
            g.len() == 7
                && g.bytes()
                    .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        })
}

#[test]
fn an_identity_is_made_once_kept_private_and_printed_the_same_after() {
    let dir = scratch("made");
    let file = dir.join("sub/identity.pem");
    let file_arg = file.to_str().expect("utf-8 path");
    let out = sockit(&["id", "--identity", file_arg]);
    assert_ok(&out);
    let id = stdout(&out).trim().to_string();
    assert!(is_id(&id), "{id:?}");
    assert_eq!(
        stderr(&out).trim(),
        format!("sockit: made a new identity in {file_arg}")
    );
    let mode = std::fs::metadata(&file)
        .expect("identity file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    // The second time it is read, not made: the same ID, nothing said.
    let again = sockit(&["id", "--identity", file_arg]);
    assert_ok(&again);
    assert_eq!(stdout(&again).trim(), id);
    assert_eq!(stderr(&again), "");
    // openssl reads what we wrote: a key and its certificate.
    let text = std::fs::read_to_string(&file).expect("read identity");
    assert!(text.contains("BEGIN PRIVATE KEY") && text.contains("BEGIN CERTIFICATE"));
    // The default place follows XDG_DATA_HOME.
    let data = dir.join("data");
    let out = Command::new(sockit_bin())
        .arg("id")
        .env("XDG_DATA_HOME", &data)
        .output()
        .expect("run sockit id");
    assert_ok(&out);
    assert!(data.join("sockit/identity.pem").is_file());
    assert_ne!(stdout(&out).trim(), id, "a new key, a new identity");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_identity_others_can_read_or_that_is_broken_is_refused() {
    let dir = scratch("refused");
    let file = dir.join("identity.pem");
    let file_arg = file.to_str().expect("utf-8 path");
    assert_ok(&sockit(&["id", "--identity", file_arg]));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = assert_error(
        &sockit(&["id", "--identity", file_arg]),
        1,
        "sockit: error: ",
    );
    assert_eq!(
        err.trim_end(),
        format!(
            "sockit: error: identity {file_arg} can be read by others (mode 0644) (run: chmod 600 {file_arg})"
        )
    );
    for (bad, why) in [
        ("not a pem file\n", "no certificate in it"),
        ("", "no certificate in it"),
    ] {
        std::fs::write(&file, bad).expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = assert_error(
            &sockit(&["id", "--identity", file_arg]),
            1,
            "sockit: error: ",
        );
        assert_eq!(
            err.trim_end(),
            format!("sockit: error: identity {file_arg} is not usable ({why})")
        );
    }
    // A key that is not the certificate's.
    let other = dir.join("other.pem");
    let other_arg = other.to_str().expect("utf-8 path");
    assert_ok(&sockit(&["id", "--identity", other_arg]));
    let mine = dir.join("mine.pem");
    assert_ok(&sockit(&[
        "id",
        "--identity",
        mine.to_str().expect("utf-8"),
    ]));
    let key_of = |text: &str| {
        let end = text.find("-----END PRIVATE KEY-----").expect("a key") + 26;
        text[..end].to_string()
    };
    let cert_of =
        |text: &str| text[text.find("-----BEGIN CERTIFICATE").expect("a cert")..].to_string();
    let other_text = std::fs::read_to_string(&other).expect("read");
    let mine_text = std::fs::read_to_string(&mine).expect("read");
    std::fs::write(
        &file,
        format!("{}{}", key_of(&other_text), cert_of(&mine_text)),
    )
    .expect("write");
    let err = assert_error(
        &sockit(&["id", "--identity", file_arg]),
        1,
        "sockit: error: ",
    );
    assert!(
        err.contains("the private key is not the certificate's"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `sockit chat serve --tls EXTRA...` with its identity in `dir`, and
/// the ID it printed after `listening on`.
fn tls_chat(dir: &std::path::Path, extra: &[&str]) -> (Server, String) {
    let mut kind = vec!["chat", "serve"];
    kind.extend_from_slice(extra);
    let (server, id) = tls_server(dir, &kind);
    assert!(is_id(&id), "{id}");
    (server, id)
}

/// `openssl s_client` as a chat member: lines in on its stdin, what the
/// server says out on its stdout.
struct OpenSsl {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl OpenSsl {
    fn connect(server: &Server) -> OpenSsl {
        require("openssl");
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-connect"])
            .arg(server.addr.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl runs");
        let lines = line_channel(child.stdout.take().expect("stdout"));
        OpenSsl { child, lines }
    }

    fn send(&mut self, text: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write to openssl");
        stdin.flush().expect("flush");
    }

    /// The first line that `wanted` takes (the ones before are skipped).
    fn expect(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return line,
                Ok(_) => {}
                Err(e) => panic!("openssl s_client: no {what} ({e})"),
            }
        }
    }
}

impl Drop for OpenSsl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `stream` to its end (bounded by LIMIT): what the server said.
fn read_all(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    stream.set_read_timeout(Some(LIMIT)).expect("timeout");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn read_line(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

#[test]
fn openssl_and_a_plaintext_client_share_a_tls_chat_on_one_port() {
    use std::io::Write;
    let dir = scratch("chat");
    let (server, id) = tls_chat(&dir, &[]);
    // The ID shown is the one `sockit id` prints for the same file.
    let file = dir.join("identity.pem");
    let out = sockit(&["id", "--identity", file.to_str().expect("utf-8")]);
    assert_eq!(stdout(&out).trim(), id);
    let mut tls = OpenSsl::connect(&server);
    tls.expect("the welcome", |l| {
        l.starts_with("* welcome to sockit chat, you are ")
    });
    // A plaintext client on the same port: it says nothing first, as a
    // chat client waiting for its welcome does, and still gets it.
    let (mut plain, plain_nick) = chat_join_raw(server.addr);
    tls.expect("the plain client's join", |l| {
        l == format!("* {plain_nick} joined (2 online)")
    });
    tls.send("/nick ossl\nhello over tls\n");
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("[ossl] hello over tls") {
        seen.push(read_line(&mut plain));
        assert!(seen.len() < 10, "{seen:?}");
    }
    assert!(seen.iter().any(|l| l.ends_with(" is now ossl")), "{seen:?}");
    plain.write_all(b"hello in plain\n").expect("write");
    tls.expect("the plain line", |l| {
        l == format!("[{plain_nick}] hello in plain")
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_only_refuses_plaintext_in_one_line_and_still_takes_tls() {
    use std::io::Write;
    let dir = scratch("only");
    let (server, _) = tls_chat(&dir, &["--tls-only"]);
    const REFUSED: &str = "* error: this server takes TLS connections only (connect with --tls)\n";
    // One that speaks first, and one that waits for the server.
    let mut talker = std::net::TcpStream::connect(server.addr).expect("connect");
    talker.write_all(b"hello\n").expect("write");
    assert_eq!(read_all(&mut talker), REFUSED);
    let mut silent = std::net::TcpStream::connect(server.addr).expect("connect");
    assert_eq!(read_all(&mut silent), REFUSED);
    let tls = OpenSsl::connect(&server);
    tls.expect("the welcome", |l| {
        l.starts_with("* welcome to sockit chat, you are ")
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stalled_handshake_blocks_nobody_and_is_dropped() {
    use std::io::Write;
    let dir = scratch("stall");
    let (server, _) = tls_chat(&dir, &[]);
    // The first byte of a TLS record, then nothing.
    let mut stalled = std::net::TcpStream::connect(server.addr).expect("connect");
    stalled.write_all(&[0x16]).expect("write");
    let started = std::time::Instant::now();
    let tls = OpenSsl::connect(&server);
    tls.expect("the welcome", |l| {
        l.starts_with("* welcome to sockit chat, you are ")
    });
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // The server gives up on it after its handshake timeout (10 s).
    let said = read_all(&mut stalled);
    let took = started.elapsed();
    assert!(!said.contains("welcome"), "{said:?}");
    assert!(
        took >= std::time::Duration::from_secs(9) && took < LIMIT,
        "dropped after {took:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `sockit ARGS...` with stdin `input`.
fn sockit_in(args: &[&str], input: &str) -> std::process::Output {
    sockit_stdin(args, input.as_bytes())
}

#[test]
fn a_client_trusts_on_first_use_and_refuses_a_changed_identity() {
    let dir = scratch("tofu");
    let (server, id) = tls_chat(&dir, &[]);
    let port = server.port_arg();
    let peer = format!("127.0.0.1:{port}");
    let known = dir.join("known_hosts");
    let known_arg = known.to_str().expect("utf-8");
    let join = [
        "chat",
        "join",
        "127.0.0.1",
        &port,
        "--tls",
        "--known-hosts",
        known_arg,
    ];
    // First use: trusted, said, remembered.
    let out = sockit_in(&join, "hi\n");
    assert_ok(&out);
    assert!(
        stdout(&out).starts_with("* welcome to sockit chat"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        stderr(&out).trim_end(),
        format!("sockit: trusting new identity {id} for {peer} (remembered in {known_arg})")
    );
    assert_eq!(
        std::fs::read_to_string(&known).expect("known hosts"),
        format!("{peer} {id}\n")
    );
    // Known: nothing said.
    let out = sockit_in(&join, "hi\n");
    assert_ok(&out);
    assert_eq!(stderr(&out), "");
    // The same host:port with another identity on record: refused, with
    // both identities and the line to delete; nothing was sent.
    let other = dir.join("other.pem");
    let out = sockit(&["id", "--identity", other.to_str().expect("utf-8")]);
    let other_id = stdout(&out).trim().to_string();
    std::fs::write(&known, format!("# sockit\n{peer} {other_id}\n")).expect("write");
    let out = sockit_in(&join, "hi\n");
    let err = assert_error(&out, 1, "sockit: error: ");
    assert_eq!(
        err.trim_end(),
        format!(
            "sockit: error: the identity of {peer} has changed: it was {other_id}, it is now {id} \
             (someone may be in between; if the server's key was replaced on purpose, \
             delete line 2 of {known_arg})"
        )
    );
    assert!(!stdout(&out).contains("welcome"), "{}", stdout(&out));
    // A pin decides alone: the right one connects, another is refused.
    let pinned = ["chat", "join", "127.0.0.1", &port, "--tls", "--pin", &id];
    assert_ok(&sockit_in(&pinned, "hi\n"));
    let wrong = [
        "chat",
        "join",
        "127.0.0.1",
        &port,
        "--tls",
        "--pin",
        &other_id,
    ];
    let err = assert_error(&sockit_in(&wrong, "hi\n"), 1, "sockit: error: ");
    assert_eq!(
        err.trim_end(),
        format!(
            "sockit: error: server {peer} is not the one pinned (it has identity {id}; --pin says {other_id})"
        )
    );
    // A mistyped pin is a usage error.
    let mut typo = id.clone().into_bytes();
    let at = typo.len() - 3;
    typo[at] = if typo[at] == b'A' { b'B' } else { b'A' };
    let typo = String::from_utf8(typo).expect("ascii");
    let out = sockit(&["chat", "join", "127.0.0.1", &port, "--tls", "--pin", &typo]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("its check characters do not match: mistyped?"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until something listens on 127.0.0.1:`port` (bounded).
fn wait_listening(port: u16) {
    let deadline = std::time::Instant::now() + LIMIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A background peer, killed when dropped.
struct Peer(std::process::Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sockit_clients_talk_to_openssl_s_server_and_ncat_ssl() {
    require("openssl");
    require("ncat");
    let dir = scratch("peers");
    let path = |name: &str| dir.join(name).to_str().expect("utf-8").to_string();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // A CA and a certificate it signed for 127.0.0.1.
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=test CA"];
    ca.extend(ec);
    let (ca_key, ca_cert) = (path("ca.key"), path("ca.pem"));
    ca.extend(["-keyout", &ca_key, "-out", &ca_cert]);
    run(&ca);
    let (key, csr, cert) = (path("leaf.key"), path("leaf.csr"), path("leaf.pem"));
    let mut req = vec![
        "req",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &key,
        "-out",
        &csr,
    ];
    req.extend(ec);
    run(&req);
    let ext = path("ext.cnf");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n").expect("write");
    // The CA signs the server's request, for `days` days, into `out`.
    let sign = |days: &str, out: &str| {
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_cert,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            days,
            "-extfile",
            &ext,
            "-out",
            out,
        ])
    };
    sign("2", &cert);

    // openssl s_server -rev: answers each line reversed.
    let port = closed_port();
    let _s_server = Peer(
        Command::new("openssl")
            .args([
                "s_server", "-quiet", "-rev", "-cert", &cert, "-key", &key, "-accept",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_server runs"),
    );
    wait_listening(port);
    let port_arg = port.to_string();
    let out = sockit(&[
        "echo",
        "send",
        "127.0.0.1",
        &port_arg,
        "--tls",
        "--ca",
        &ca_cert,
        "stressed",
    ]);
    assert_ok(&out);
    assert_eq!(stdout(&out), "desserts\n");
    // Another CA does not vouch for it.
    let out = sockit(&[
        "echo",
        "send",
        "127.0.0.1",
        &port_arg,
        "--tls",
        "--ca",
        &cert,
        "x",
    ]);
    let err = assert_error(
        &out,
        1,
        &format!("sockit: error: TLS with 127.0.0.1:{port} failed ("),
    );
    assert!(err.contains("certificate"), "{err}");

    // ncat --ssl -l with sockit's own identity, echoing through cat: a
    // pin on that identity.
    let identity = path("identity.pem");
    let out = sockit(&["id", "--identity", &identity]);
    let id = stdout(&out).trim().to_string();
    let port = closed_port();
    let port_arg = port.to_string();
    let _ncat = Peer(
        Command::new("ncat")
            .args(["--ssl", "--ssl-cert", &identity, "--ssl-key", &identity])
            .args(["-l", "127.0.0.1", &port_arg, "-k", "-e", "/bin/cat"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("ncat runs"),
    );
    wait_listening(port);
    let out = send_pinned("echo", &port_arg, &id, &["hello", "tls"]);
    assert_ok(&out);
    assert_eq!(stdout(&out), "hello\ntls\n");
    let out = send_pinned("json", &port_arg, &id, &[r#"{"a":1}"#]);
    assert_ok(&out);
    assert_eq!(stdout(&out), "{\"a\":1}\n");
    // ping --tcp --tls: every probe comes back through ncat's TLS.
    let out = sockit(&[
        "ping",
        "127.0.0.1",
        &port_arg,
        "--tcp",
        "--tls",
        "--pin",
        &id,
        "-c",
        "3",
        "-i",
        "0",
    ]);
    assert_ok(&out);
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!(
            "PING 127.0.0.1:{port} (tcp+tls): 64 bytes of data, connected in "
        )),
        "{text}"
    );
    assert!(
        text.contains("3 packets transmitted, 3 received, 0% packet loss"),
        "{text}"
    );
    assert!(text.contains("tcp+tls connect time "), "{text}");
    // --tls is for --tcp: UDP probes have none.
    let out = sockit(&["ping", "127.0.0.1", &port_arg, "--tls", "-c", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // sockit's own server with that CA-signed certificate (--cert/--key):
    // a client checking with --ca reaches it, and the identity it shows
    // is the key's, so a certificate issued again for the same key keeps
    // it.
    let chat_with = |cert: &str| {
        let server = Server::sockit(&[
            "chat",
            "serve",
            "-b",
            "127.0.0.1",
            "-p",
            "0",
            "--tls",
            "--cert",
            cert,
            "--key",
            &key,
        ]);
        let line = server.next_line();
        (
            server,
            line.strip_prefix("identity ")
                .unwrap_or_default()
                .to_string(),
        )
    };
    let (server, shown) = chat_with(&cert);
    let port = server.port_arg();
    let join = [
        "chat",
        "join",
        "127.0.0.1",
        &port,
        "--tls",
        "--ca",
        &ca_cert,
    ];
    let out = sockit_in(&join, "hi\n");
    assert_ok(&out);
    assert!(
        stdout(&out).starts_with("* welcome to sockit chat"),
        "{}",
        stdout(&out)
    );
    let both = path("both.pem");
    let text = format!(
        "{}{}",
        std::fs::read_to_string(&key).expect("key"),
        std::fs::read_to_string(&cert).expect("cert")
    );
    std::fs::write(&both, text).expect("write");
    std::fs::set_permissions(&both, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = sockit(&["id", "--identity", &both]);
    assert_eq!(stdout(&out).trim(), shown);
    drop(server);
    let renewed = path("renewed.pem");
    sign("30", &renewed);
    let (_server, renewed_shown) = chat_with(&renewed);
    assert_eq!(renewed_shown, shown, "the same key, the same identity");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `sockit KIND send 127.0.0.1 PORT --tls --pin ID ARGS...`.
fn send_pinned(kind: &str, port: &str, id: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec![kind, "send", "127.0.0.1", port, "--tls", "--pin", id];
    all.extend_from_slice(args);
    sockit(&all)
}

/// A `--tls` server of `kind` (echo --tcp or json) with its identity in
/// `dir`, and its ID.
fn tls_server(dir: &std::path::Path, kind: &[&str]) -> (Server, String) {
    let file = dir.join("identity.pem");
    let mut args = kind.to_vec();
    args.extend(["-b", "127.0.0.1", "-p", "0", "--tls", "--identity"]);
    args.push(file.to_str().expect("utf-8 path"));
    let server = Server::sockit(&args);
    let id = server.identity();
    (server, id)
}

#[test]
fn echo_and_json_servers_take_tls_and_plaintext_on_one_port() {
    use std::io::{Read, Write};
    let dir = scratch("echo");
    let (echo, id) = tls_server(&dir, &["echo", "serve", "--tcp"]);
    let port = echo.port_arg();
    let out = send_pinned("echo", &port, &id, &["hello"]);
    assert_ok(&out);
    assert_eq!(stdout(&out), "hello\n");
    let mut tls = OpenSsl::connect(&echo);
    tls.send("from openssl\n");
    tls.expect("the echo", |l| l == "from openssl");
    let mut plain = std::net::TcpStream::connect(echo.addr).expect("connect");
    plain.set_read_timeout(Some(LIMIT)).expect("timeout");
    plain.write_all(b"plain\n").expect("write");
    let mut got = [0u8; 6];
    plain.read_exact(&mut got).expect("the plain echo");
    assert_eq!(&got, b"plain\n");

    let (json, id) = tls_server(&dir, &["json", "serve"]);
    let port = json.port_arg();
    let out = send_pinned("json", &port, &id, &["[1, 2]"]);
    assert_ok(&out);
    assert_eq!(stdout(&out), "[1,2]\n");
    let mut tls = OpenSsl::connect(&json);
    tls.send("{\"x\": [1, 2]}\n");
    tls.expect("the compact value", |l| l == "{\"x\":[1,2]}");
    // --tls is for the TCP side: a UDP-only echo server has none.
    let out = sockit(&["echo", "serve", "--udp", "--tls", "-p", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TCP connection to `to` from the local address `from`.
fn connect_from(from: &str, to: std::net::SocketAddr) -> std::net::TcpStream {
    let from: std::net::SocketAddr = format!("{from}:0")
        .replace("::1:0", "[::1]:0")
        .parse()
        .expect("a source address");
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    socket.bind(&from.into()).expect("bind the source address");
    socket.connect(&to.into()).expect("connect");
    socket.into()
}

fn ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

#[test]
fn allow_and_deny_decide_who_is_served_over_ipv4_and_ipv6() {
    use std::io::Read;
    if !ipv6_loopback() {
        eprintln!("SKIPPED: no IPv6 loopback on this machine (::1 cannot be bound)");
        return;
    }
    let welcome = |stream: &mut std::net::TcpStream| {
        stream.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut line = String::new();
        let mut byte = [0u8; 1];
        while stream.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
            line.push(byte[0] as char);
        }
        line
    };
    // Dual-stack, IPv4 loopback allowed but one address of it denied.
    let server = Server::sockit(&[
        "chat",
        "serve",
        "-b",
        "::",
        "-p",
        "0",
        "--allow",
        "127.0.0.0/8",
        "--deny",
        "127.0.0.2",
    ]);
    let v4: std::net::SocketAddr = format!("127.0.0.1:{}", server.port())
        .parse()
        .expect("addr");
    let v6: std::net::SocketAddr = format!("[::1]:{}", server.port()).parse().expect("addr");
    let mut ok = connect_from("127.0.0.1", v4);
    assert!(welcome(&mut ok).starts_with("* welcome to sockit chat"));
    let mut denied = connect_from("127.0.0.2", v4);
    assert_eq!(
        read_all(&mut denied),
        "* error: not allowed from 127.0.0.2\n"
    );
    let mut not_allowed = connect_from("::1", v6);
    assert_eq!(
        read_all(&mut not_allowed),
        "* error: not allowed from ::1\n"
    );
    let mut also_ok = connect_from("127.0.0.3", v4);
    assert!(welcome(&mut also_ok).starts_with("* welcome to sockit chat"));
    // Only IPv6 loopback allowed.
    let server = Server::sockit(&["json", "serve", "-b", "::", "-p", "0", "--allow", "::1/128"]);
    let v4: std::net::SocketAddr = format!("127.0.0.1:{}", server.port())
        .parse()
        .expect("addr");
    let mut refused = connect_from("127.0.0.1", v4);
    assert_eq!(
        read_all(&mut refused),
        "* error: not allowed from 127.0.0.1\n"
    );
    let out = sockit(&["json", "send", "::1", &server.port_arg(), "1"]);
    assert_ok(&out);
    // UDP: a refused datagram gets no answer and is counted.
    let echo = Server::sockit(&[
        "-v",
        "echo",
        "serve",
        "--udp",
        "-b",
        "::",
        "-p",
        "0",
        "--deny",
        "127.0.0.2",
    ]);
    let port = echo.port();
    let send_from = |from: &str| {
        let socket = std::net::UdpSocket::bind(format!("{from}:0")).expect("bind");
        socket
            .set_read_timeout(Some(std::time::Duration::from_millis(500)))
            .expect("timeout");
        socket.send_to(b"ping", ("127.0.0.1", port)).expect("send");
        let mut buf = [0u8; 16];
        socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
    };
    // (The refused one is asked first: its silence is bounded by the
    // read timeout, and the answered one after shows the server went on.)
    assert_eq!(send_from("127.0.0.2"), None);
    assert_eq!(send_from("127.0.0.1"), Some(b"ping".to_vec()));
    let (status, _, err) = echo.terminate();
    assert!(status.success(), "{status:?}");
    assert!(err.contains("refused a datagram from 127.0.0.2:"), "{err}");
    assert!(err.contains("1 refused (--allow/--deny)"), "{err}");
    // A bad block is a usage error.
    let out = sockit(&["chat", "serve", "--allow", "10.0.0.0/40"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("the prefix length must be 0-32"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_tls_member_that_stops_reading_is_cut_off_and_the_room_goes_on() {
    use std::io::{BufRead, Write};
    let dir = scratch("stalled");
    let (server, _) = tls_chat(&dir, &["--stall-timeout", "1", "--flood", "0"]);
    // A TLS member that reads nothing after its handshake.
    let script = r#"
import socket, ssl, sys, time
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
raw = socket.socket()
raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
raw.connect(("127.0.0.1", int(sys.argv[1])))
s = ctx.wrap_socket(raw)
print("connected", flush=True)
time.sleep(60)
"#;
    let mut stalled = Peer(
        Command::new("python3")
            .args(["-c", script, &server.port_arg()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs"),
    );
    let ready = line_channel(stalled.0.stdout.take().expect("stdout"));
    assert_eq!(ready.recv_timeout(LIMIT).expect("connected"), "connected");
    // A plaintext member that reads everything, on a thread of its own.
    let (watcher, _) = chat_join_raw(server.addr);
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(watcher)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // A sender of 12 MB: more than the room's window and the kernel's
    // largest send buffer (tcp_wmem, 4 MiB by default) hold together.
    let (mut sender, nick) = chat_join_raw(server.addr);
    let text = "y".repeat(1000);
    // The connection comes back from the thread and stays open until the
    // watcher is done: closing it with the notices it never read would
    // reset it, and the server would lose the lines still in its buffer.
    let writer = std::thread::spawn(move || {
        for i in 0..12000 {
            if sender
                .write_all(format!("{i} {text}\n").as_bytes())
                .is_err()
            {
                return None;
            }
        }
        Some(sender)
    });
    let (mut next, mut cut) = (0, false);
    let deadline = std::time::Instant::now() + LIMIT;
    while next < 12000 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines.recv_timeout(left).unwrap_or_else(|_| {
            panic!("the watcher got {next} of 12000 lines; cut off seen: {cut}")
        });
        if line.ends_with(" was cut off (not reading)") {
            cut = true;
        } else if let Some(rest) = line.strip_prefix(&format!("[{nick}] ")) {
            assert!(
                rest.starts_with(&format!("{next} ")),
                "line {next} was {}",
                &rest[..10.min(rest.len())]
            );
            next += 1;
        }
    }
    assert!(cut, "the stalled TLS member was never cut off");
    let sender = writer.join().expect("the writer thread");
    assert!(sender.is_some(), "the sender was disconnected");
    drop(stalled);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_broken_client_hello_and_garbage_after_the_handshake_cost_nobody_else() {
    use std::io::{Read, Write};
    let dir = scratch("garbage");
    let (server, _) = tls_chat(&dir, &[]);
    let (member, _) = chat_join_raw(server.addr);

    // A record header that says handshake, then no ClientHello: the
    // server answers with a TLS alert (or nothing) and closes.
    let mut broken = std::net::TcpStream::connect(server.addr).expect("connect");
    broken.set_read_timeout(Some(LIMIT)).expect("timeout");
    broken
        .write_all(b"\x16\x03\x01\x00\x20this is not a client hello at all")
        .expect("write");
    let mut got = Vec::new();
    broken.read_to_end(&mut got).expect("closed, not timed out");
    assert!(
        got.is_empty() || got[0] == 0x15,
        "a TLS alert or nothing, not {got:?}"
    );

    // A real TLS client that writes raw garbage under its session, and an
    // oversized record header after it: the server ends that session.
    let script = r#"
import os, socket, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))))
s.recv(4096)
os.write(s.fileno(), b"\x17\x03\x03\x00\x10" + os.urandom(16) + b"\x17\x03\x03\xff\xff" + os.urandom(4096))
s.settimeout(10)
try:
    while s.recv(4096):
        pass
    print("closed", flush=True)
except (ssl.SSLError, ConnectionError) as e:
    print("closed", flush=True)
except socket.timeout:
    print("still open", flush=True)
"#;
    let out = Command::new("python3")
        .args(["-c", script, &server.port_arg()])
        .output()
        .expect("python3 runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "closed\n",
        "{}",
        stderr(&out)
    );

    // The room goes on for the member that was there all along.
    let (mut other, _) = chat_join_raw(server.addr);
    other.write_all(b"still here\n").expect("write");
    let mut member_lines = std::io::BufReader::new(member);
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        assert!(std::time::Instant::now() < deadline, "the line never came");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut member_lines, &mut line).expect("read");
        if line.ends_with("] still here\n") {
            break;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
