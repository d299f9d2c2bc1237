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

/// `sockit chat serve --tls` with its identity in `dir`, and the ID it
/// printed after `listening on`.
fn tls_chat(dir: &std::path::Path, extra: &[&str]) -> (Server, String) {
    let file = dir.join("identity.pem");
    let mut args = vec![
        "chat",
        "serve",
        "-b",
        "127.0.0.1",
        "-p",
        "0",
        "--tls",
        "--identity",
        file.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    let server = Server::sockit(&args);
    let line = server.next_line();
    let id = line
        .strip_prefix("identity ")
        .unwrap_or_else(|| panic!("second line was {line:?}"))
        .to_string();
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
