//! `sockit file send` / `sockit file receive`: the real binary on both
//! sides, raw protocol bytes for crafted offers, and in-test TCP proxies
//! that flip a byte or hold the data back at a known point.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{LIMIT, Server, assert_ok, sockit, stderr, stdout};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("sockit-file-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }

    fn str(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn receiver(dir: &TempDir, extra: &[&str]) -> Server {
    let mut args = vec![
        "file",
        "receive",
        "-b",
        "127.0.0.1",
        "-p",
        "0",
        "-d",
        dir.str(),
    ];
    args.extend_from_slice(extra);
    Server::sockit(&args)
}

fn send(port: u16, paths: &[&Path], extra: &[&str]) -> std::process::Output {
    let port = port.to_string();
    let mut args: Vec<&str> = vec!["file", "send", "127.0.0.1", &port];
    let paths: Vec<&str> = paths.iter().map(|p| p.to_str().expect("utf-8")).collect();
    args.extend(paths);
    args.extend_from_slice(extra);
    sockit(&args)
}

fn random_file(path: &Path, len: u64) {
    let mut src = fs::File::open("/dev/urandom").expect("urandom");
    let mut dst = fs::File::create(path).expect("create");
    let copied = std::io::copy(&mut (&mut src).take(len), &mut dst).expect("fill");
    assert_eq!(copied, len);
}

fn hash(path: &Path) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher.finalize()
}

/// Every file and directory under `root`, relative, sorted; with each
/// file's hash.
fn tree(root: &Path) -> Vec<(String, Option<blake3::Hash>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Option<blake3::Hash>)>) {
        for entry in fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            let meta = fs::symlink_metadata(&path).expect("lstat");
            if meta.is_dir() {
                out.push((rel, None));
                walk(root, &path, out);
            } else {
                out.push((rel, Some(hash(&path))));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Names in `dir` that are the receiver's temporary files.
fn partials(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".sockit-partial-"))
        .collect()
}

fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn summary(out: &std::process::Output) -> serde_json::Value {
    json_lines(out)
        .into_iter()
        .find(|v| v["summary"] == true)
        .expect("a summary object")
}

#[test]
fn empty_one_byte_and_a_unicode_tree_arrive_identical() {
    let src = TempDir::new("tree-src");
    let dst = TempDir::new("tree-dst");
    fs::write(src.join("empty"), b"").unwrap();
    fs::write(src.join("one"), b"x").unwrap();
    let root = src.join("tree");
    fs::create_dir_all(root.join("사진/2024/여름")).unwrap();
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::create_dir_all(root.join("비어 있음")).unwrap(); // empty directory
    fs::write(root.join("사진/2024/여름/바다.txt"), "파도 소리\n").unwrap();
    fs::write(root.join("a/b/c/deep.bin"), vec![7u8; 3 << 20]).unwrap();
    fs::write(root.join("a/zero"), b"").unwrap();
    random_file(&root.join("a/rand"), 1_234_567);

    let server = receiver(&dst, &[]);
    let out = send(
        server.port(),
        &[&src.join("empty"), &src.join("one"), &root],
        &[],
    );
    assert_ok(&out);
    let line = stdout(&out);
    assert!(
        line.starts_with("6 files, 8 directories, ") && line.contains(" MB/s)"),
        "summary: {line}"
    );

    assert_eq!(fs::read(dst.join("empty")).unwrap(), b"");
    assert_eq!(fs::read(dst.join("one")).unwrap(), b"x");
    assert_eq!(tree(&root), tree(&dst.join("tree")));
    assert!(dst.join("tree/비어 있음").is_dir());
    assert!(partials(dst.path()).is_empty());
    // The receiver reports each entry on stdout.
    let lines: Vec<String> = (0..14).map(|_| server.next_line()).collect();
    assert!(
        lines.iter().all(|l| l.starts_with("received ")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l
                .starts_with("received tree/사진/2024/여름/바다.txt (14 bytes) from 127.0.0.1:")),
        "{lines:?}"
    );
}

#[test]
fn a_200_mb_random_file_arrives_identical() {
    let src = TempDir::new("big-src");
    let dst = TempDir::new("big-dst");
    let file = src.join("big.bin");
    random_file(&file, 200 << 20);
    let server = receiver(&dst, &["--once"]);
    let out = send(server.port(), &[&file], &["--json"]);
    assert_ok(&out);
    let s = summary(&out);
    assert_eq!(s["files"], 1);
    assert_eq!(s["bytes"], 200u64 << 20);
    assert_eq!(s["sent"], 200u64 << 20);
    assert_eq!(hash(&file), hash(&dst.join("big.bin")));
    // --once: the receiver exits by itself, successfully.
    let mut server = server;
    let status = common::wait_bounded(&mut server.child, LIMIT);
    assert!(status.success(), "{status:?}");
}

/// What a test proxy does to the client-to-server byte stream.
enum Tamper {
    /// Flip all bits of the byte at this stream offset.
    Flip(u64),
    /// Forward this many bytes, report it on the channel, then forward
    /// nothing more until the gate is opened.
    Hold {
        after: u64,
        reached: mpsc::Sender<()>,
        open: mpsc::Receiver<()>,
    },
}

/// A one-connection TCP proxy to `target` on 127.0.0.1; returns its port.
/// Half-closes are passed on in both directions.
fn proxy(target: SocketAddr, tamper: Tamper) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else {
            return;
        };
        let Ok(server) = TcpStream::connect(target) else {
            return;
        };
        let (c2, s2) = (
            client.try_clone().expect("clone"),
            server.try_clone().expect("clone"),
        );
        thread::spawn(move || {
            let _ = std::io::copy(&mut &s2, &mut &c2);
            let _ = c2.shutdown(Shutdown::Write);
        });
        let mut buf = vec![0u8; 64 << 10];
        let mut pos = 0u64;
        let mut gate = Some(tamper);
        loop {
            let mut want = buf.len();
            if let Some(Tamper::Hold { after, .. }) = &gate {
                want = want.min((*after - pos) as usize);
                if want == 0 {
                    if let Some(Tamper::Hold { reached, open, .. }) = gate.take() {
                        let _ = reached.send(());
                        let _ = open.recv_timeout(LIMIT);
                    }
                    continue;
                }
            }
            let n = match (&client).read(&mut buf[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(Tamper::Flip(at)) = &gate
                && (pos..pos + n as u64).contains(at)
            {
                buf[(*at - pos) as usize] ^= 0xff;
                gate = None;
            }
            pos += n as u64;
            if (&server).write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = server.shutdown(Shutdown::Write);
    });
    port
}

#[test]
fn a_byte_flipped_in_transit_is_rejected() {
    let src = TempDir::new("flip-src");
    let dst = TempDir::new("flip-dst");
    let file = src.join("data.bin");
    random_file(&file, 3 << 20);
    let server = receiver(&dst, &[]);
    // Offset 500,000 is inside the first data chunk (the headers before it
    // are under 100 bytes, a chunk is 1 MiB).
    let port = proxy(server.addr, Tamper::Flip(500_000));
    let out = send(port, &[&file], &[]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("sockit: error: cannot send 'data.bin' (corrupted in transit (BLAKE3 mismatch); nothing was written)"),
        "{err}"
    );
    assert!(
        !dst.join("data.bin").exists(),
        "a corrupted file got its final name"
    );
    assert!(
        partials(dst.path()).is_empty(),
        "the corrupt temporary file was kept"
    );
    let line = server.next_line();
    assert!(
        line.starts_with("refused data.bin from 127.0.0.1:"),
        "{line}"
    );
    assert!(line.contains("BLAKE3 mismatch"), "{line}");

    // A clean send afterwards succeeds: nothing of the bad copy is reused.
    let out = send(server.port(), &[&file], &[]);
    assert_ok(&out);
    assert_eq!(hash(&file), hash(&dst.join("data.bin")));
}

#[test]
fn a_killed_sender_resumes_where_it_stopped() {
    killed_sender_resumes(false);
}

#[test]
fn a_killed_tls_sender_resumes_where_it_stopped() {
    killed_sender_resumes(true);
}

/// A sender killed after about 80 MB of 200, then the same file again:
/// only the rest is sent, and the copy is whole. With `tls`, both times
/// over TLS, pinned: the part kept is what crossed the bridge.
fn killed_sender_resumes(tls: bool) {
    let name = if tls { "resume-tls" } else { "resume" };
    let src = TempDir::new(&format!("{name}-src"));
    let dst = TempDir::new(&format!("{name}-dst"));
    let ids = TempDir::new(&format!("{name}-id"));
    let file = src.join("big.bin");
    random_file(&file, 200 << 20);
    let (server, tls_args) = if tls {
        let (server, id) = tls_receiver(&dst, &ids, &[]);
        (server, vec!["--tls".to_string(), "--pin".to_string(), id])
    } else {
        (receiver(&dst, &[]), Vec::new())
    };
    let tls_args: Vec<&str> = tls_args.iter().map(String::as_str).collect();

    // The proxy lets about 80 MB through, then holds the rest back.
    let (reached_tx, reached) = mpsc::channel();
    let (open, open_rx) = mpsc::channel();
    let port = proxy(
        server.addr,
        Tamper::Hold {
            after: 80 << 20,
            reached: reached_tx,
            open: open_rx,
        },
    );
    let mut first = Command::new(common::sockit_bin())
        .args(["file", "send", "127.0.0.1", &port.to_string()])
        .arg(&file)
        .arg("--json")
        .args(&tls_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sender");
    reached
        .recv_timeout(LIMIT)
        .expect("the proxy never saw 80 MB of data");
    common::signal(&first, libc::SIGKILL);
    let status = common::wait_bounded(&mut first, LIMIT);
    assert!(!status.success());
    open.send(()).expect("open the gate");
    // The receiver says it kept the part it has.
    let line = server.next_line();
    assert!(
        line.starts_with("interrupted big.bin from 127.0.0.1:"),
        "{line}"
    );
    assert!(line.ends_with("kept for a resume"), "{line}");
    assert!(!dst.join("big.bin").exists());
    assert_eq!(partials(dst.path()).len(), 1);

    let mut args = vec!["--json"];
    args.extend(&tls_args);
    let out = send(server.port(), &[&file], &args);
    assert_ok(&out);
    let s = summary(&out);
    let sent = s["sent"].as_u64().expect("sent");
    let resumed = s["resumed"].as_u64().expect("resumed");
    assert!(resumed >= 80 << 20, "resumed only {resumed} bytes");
    assert_eq!(sent + resumed, 200 << 20);
    assert!(sent <= 120 << 20, "sent {sent} bytes: no resume");
    assert_eq!(hash(&file), hash(&dst.join("big.bin")));
    assert!(partials(dst.path()).is_empty());
    let line = server.next_line();
    assert!(
        line.starts_with(&format!(
            "received big.bin ({} bytes, resumed at {resumed})",
            200 << 20
        )),
        "{line}"
    );
}

/// Speaks the protocol by hand: hello, then returns the connection.
fn raw_session(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(b"SOCKIT-FILE\x01").unwrap();
    let mut hello = [0u8; 12];
    s.read_exact(&mut hello).unwrap();
    assert_eq!(&hello, b"SOCKIT-FILE\x01");
    s
}

fn file_offer(path: &[u8], size: u64) -> Vec<u8> {
    let mut out = vec![b'F'];
    out.extend_from_slice(&(path.len() as u16).to_be_bytes());
    out.extend_from_slice(path);
    out.extend_from_slice(&0o644u32.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&1u64.to_be_bytes());
    out
}

/// Reads one reply; returns (type byte, code, message).
fn read_reply(s: &mut TcpStream) -> (u8, u8, String) {
    let mut kind = [0u8; 1];
    s.read_exact(&mut kind).unwrap();
    match kind[0] {
        b'R' => {
            let mut head = [0u8; 3];
            s.read_exact(&mut head).unwrap();
            let len = u16::from_be_bytes([head[1], head[2]]) as usize;
            let mut text = vec![0u8; len];
            s.read_exact(&mut text).unwrap();
            (b'R', head[0], String::from_utf8(text).unwrap())
        }
        b'A' => {
            let mut rest = [0u8; 40];
            s.read_exact(&mut rest).unwrap();
            (b'A', 0, String::new())
        }
        other => (other, 0, String::new()),
    }
}

#[test]
fn crafted_paths_are_refused_and_nothing_is_written_outside() {
    let base = TempDir::new("crafted");
    let dst = base.join("dst");
    let outside = base.join("outside");
    fs::create_dir_all(&dst).unwrap();
    fs::create_dir_all(&outside).unwrap();
    symlink(&outside, dst.join("link")).unwrap();
    symlink(outside.join("target"), dst.join("leaf")).unwrap();
    let server = Server::sockit(&[
        "file",
        "receive",
        "-b",
        "127.0.0.1",
        "-p",
        "0",
        "-d",
        dst.to_str().unwrap(),
        "--overwrite",
    ]);
    let mut s = raw_session(server.addr);
    let cases: [(&[u8], &str); 8] = [
        (b"../x", "contains '..'"),
        (b"/etc/x", "is an absolute path"),
        (b"a/../../x", "contains '..'"),
        (b"link/x", "'link' is a symlink on the receiver"),
        (b"leaf", "it is a symlink on the receiver"),
        (b"NUL", "names the device 'NUL'"),
        (b"a\\..\\x", "contains a backslash"),
        (b"\xff.txt", "not valid UTF-8"),
    ];
    for (path, expected) in cases {
        s.write_all(&file_offer(path, 5)).unwrap();
        let (kind, code, message) = read_reply(&mut s);
        assert_eq!(kind, b'R', "{:?} accepted", String::from_utf8_lossy(path));
        assert_eq!(code, 1, "{message}");
        assert!(
            message.contains(expected),
            "{:?}: {message}",
            String::from_utf8_lossy(path)
        );
    }
    // An oversize path is read whole (the framing holds) and refused.
    s.write_all(&file_offer(&vec![b'a'; 5000], 5)).unwrap();
    let (kind, code, message) = read_reply(&mut s);
    assert_eq!((kind, code), (b'R', 1), "{message}");
    assert!(message.contains("5000 bytes long"), "{message}");
    // Directories are checked the same way.
    let mut dir = vec![b'D'];
    dir.extend_from_slice(&(11u16).to_be_bytes());
    dir.extend_from_slice(b"link/nested");
    dir.extend_from_slice(&0o755u32.to_be_bytes());
    s.write_all(&dir).unwrap();
    let (kind, code, _) = read_reply(&mut s);
    assert_eq!((kind, code), (b'R', 1));
    // The session is still in step: a good file after the refusals works.
    s.write_all(&file_offer(b"ok.txt", 5)).unwrap();
    assert_eq!(read_reply(&mut s).0, b'A');
    s.write_all(&0u64.to_be_bytes()).unwrap();
    s.write_all(&5u32.to_be_bytes()).unwrap();
    s.write_all(b"hello").unwrap();
    s.write_all(&0u32.to_be_bytes()).unwrap();
    s.write_all(blake3::hash(b"hello").as_bytes()).unwrap();
    assert_eq!(read_reply(&mut s).0, b'K');
    s.write_all(b"E").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());

    assert_eq!(fs::read(dst.join("ok.txt")).unwrap(), b"hello");
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "something was written outside"
    );
    assert!(
        fs::symlink_metadata(dst.join("leaf"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(!base.join("x").exists());

    // The real sender gets the refusal as a readable error.
    let src = TempDir::new("crafted-src");
    fs::write(src.join("leaf"), b"data").unwrap();
    let out = send(server.port(), &[&src.join("leaf")], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "cannot send 'leaf' (it is a symlink on the receiver, which is never replaced)"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn an_existing_file_is_kept_unless_overwrite() {
    let src = TempDir::new("exists-src");
    let dst = TempDir::new("exists-dst");
    fs::write(src.join("f.txt"), b"new").unwrap();
    fs::write(dst.join("f.txt"), b"old").unwrap();
    let server = receiver(&dst, &[]);
    let out = send(server.port(), &[&src.join("f.txt")], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(
            "cannot send 'f.txt' (it already exists on the receiver (started without --overwrite))"
        ),
        "{err}"
    );
    assert!(
        err.ends_with("sockit: error: transfer incomplete (1 of 1 entries failed)\n"),
        "{err}"
    );
    assert_eq!(fs::read(dst.join("f.txt")).unwrap(), b"old");
    drop(server);

    let server = receiver(&dst, &["--overwrite"]);
    let out = send(server.port(), &[&src.join("f.txt")], &[]);
    assert_ok(&out);
    assert_eq!(fs::read(dst.join("f.txt")).unwrap(), b"new");
}

/// A tmpfs mounted for one test, unmounted (and its mount point removed)
/// on drop.
struct Tmpfs(TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = TempDir::new("tmpfs");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                dir.str(),
            ])
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn an_offer_larger_than_the_free_space_is_refused_at_once() {
    let tmpfs = match Tmpfs::mount("20m") {
        Ok(t) => t,
        Err(why) => {
            eprintln!(
                "SKIPPED an_offer_larger_than_the_free_space_is_refused_at_once: cannot mount a \
                 tmpfs ({why}); this test needs root"
            );
            return;
        }
    };
    let src = TempDir::new("nospace-src");
    let file = src.join("big.bin");
    random_file(&file, 50 << 20);
    let server = receiver(&tmpfs.0, &[]);
    let out = send(server.port(), &[&file], &["--json"]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "cannot send 'big.bin' (not enough space on the receiver: 52 MB offered, 21 MB free)"
        ),
        "{err}"
    );
    let line = server.next_line();
    assert!(
        line.starts_with("refused big.bin from 127.0.0.1:")
            && line.contains("not enough space on the receiver"),
        "{line}"
    );
    // Nothing was sent, and nothing was created.
    assert_eq!(summary(&out)["sent"].as_u64(), Some(0), "{}", stdout(&out));
    assert_eq!(
        fs::read_dir(tmpfs.0.path()).unwrap().count(),
        0,
        "leftovers in DIR"
    );
}

#[test]
fn a_full_disk_is_a_clear_error_on_both_sides() {
    let tmpfs = match Tmpfs::mount("20m") {
        Ok(t) => t,
        Err(why) => {
            eprintln!(
                "SKIPPED a_full_disk_is_a_clear_error_on_both_sides: cannot mount a tmpfs ({why}); \
                 this test needs root"
            );
            return;
        }
    };
    // Two senders at once, 15 MB each: the two together do not fit. If
    // both offers come before much data has, each fits in what is free
    // when it is made and space runs out while the data is arriving; if
    // one file is mostly in by the time the other offers, that offer is
    // refused at once. Either is a clear error, on both sides.
    let src = TempDir::new("enospc-src");
    let files = [src.join("one.bin"), src.join("two.bin")];
    for file in &files {
        random_file(file, 15 << 20);
    }
    let server = receiver(&tmpfs.0, &[]);
    let started = Instant::now();
    let port = server.port();
    let sends: Vec<_> = files
        .iter()
        .map(|file| {
            let file = file.clone();
            std::thread::spawn(move || send(port, &[&file], &["--json"]))
        })
        .collect();
    let outs: Vec<_> = sends.into_iter().map(|s| s.join().unwrap()).collect();
    let failed: Vec<_> = outs.iter().filter(|o| o.status.code() == Some(1)).collect();
    assert!(!failed.is_empty(), "both fit in 20 MB?");
    for out in &failed {
        let err = stderr(out);
        assert!(
            err.contains("(cannot write it on the receiver (no space left on device))")
                || err.contains("(not enough space on the receiver: 16 MB offered, "),
            "{err}"
        );
        assert_eq!(summary(out)["files"].as_u64(), Some(0), "{}", stdout(out));
    }
    // One line per file: `received` for the one that fit, if any, and a
    // `refused` with the reason for each that did not.
    let mut refusals = 0;
    for _ in &files {
        let line = server.next_line();
        if line.starts_with("received ") {
            continue;
        }
        assert!(
            line.starts_with("refused ")
                && (line.contains("no space left on device")
                    || line.contains("not enough space on the receiver")),
            "{line}"
        );
        refusals += 1;
    }
    assert_eq!(refusals, failed.len());
    // Only whole files are left: no partial of a failed one.
    for entry in fs::read_dir(tmpfs.0.path()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(name == "one.bin" || name == "two.bin", "leftover {name}");
    }
    assert!(started.elapsed() < LIMIT);
    drop(server);
}

#[test]
fn a_peer_that_is_not_a_sender_is_told_and_the_receiver_carries_on() {
    let dst = TempDir::new("garbage");
    let server = receiver(&dst, &[]);
    // Plain text, as nc would send it.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(b"hello there, this is not a transfer\n")
        .unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer.contains("this port expects `sockit file send`"),
        "{answer}"
    );

    // An oversize data chunk: refused as a protocol error.
    let mut s = raw_session(server.addr);
    s.write_all(&file_offer(b"x.bin", 100 << 20)).unwrap();
    assert_eq!(read_reply(&mut s).0, b'A');
    s.write_all(&0u64.to_be_bytes()).unwrap();
    s.write_all(&u32::MAX.wrapping_sub(1).to_be_bytes())
        .unwrap();
    let (kind, code, message) = read_reply(&mut s);
    assert_eq!((kind, code), (b'R', 7), "{message}");
    assert!(message.contains("data chunk"), "{message}");
    drop(s);

    // More data than announced: refused.
    let mut s = raw_session(server.addr);
    s.write_all(&file_offer(b"y.bin", 3)).unwrap();
    assert_eq!(read_reply(&mut s).0, b'A');
    s.write_all(&0u64.to_be_bytes()).unwrap();
    s.write_all(&5u32.to_be_bytes()).unwrap();
    s.write_all(b"12345").unwrap();
    let (kind, code, message) = read_reply(&mut s);
    assert_eq!((kind, code), (b'R', 7), "{message}");
    drop(s);

    // A sender that vanishes mid-header.
    let mut s = raw_session(server.addr);
    s.write_all(&file_offer(b"z.bin", 10)[..5]).unwrap();
    drop(s);

    // Still serving, and nothing half-written under a final name.
    let src = TempDir::new("garbage-src");
    fs::write(src.join("fine.txt"), b"fine").unwrap();
    let out = send(server.port(), &[&src.join("fine.txt")], &[]);
    assert_ok(&out);
    assert_eq!(fs::read(dst.join("fine.txt")).unwrap(), b"fine");
    assert!(!dst.join("x.bin").exists() && !dst.join("y.bin").exists());
}

#[test]
fn sender_errors_are_single_clear_lines() {
    let port = common::closed_port().to_string();
    let src = TempDir::new("refused-src");
    fs::write(src.join("a"), b"a").unwrap();
    let out = sockit(&[
        "file",
        "send",
        "127.0.0.1",
        &port,
        src.join("a").to_str().unwrap(),
    ]);
    common::assert_error(&out, 1, "sockit: error: cannot connect to 127.0.0.1:");
    assert!(stderr(&out).contains("connection refused"));

    // A missing source is a per-file failure; the rest is still sent.
    let dst = TempDir::new("missing-dst");
    let server = receiver(&dst, &[]);
    let out = send(server.port(), &[&src.join("nope"), &src.join("a")], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("cannot send '"), "{err}");
    assert!(
        err.contains("nope' (cannot read it (no such file or directory))"),
        "{err}"
    );
    assert_eq!(fs::read(dst.join("a")).unwrap(), b"a");

    // A peer that is not a receiver and never answers: a timeout, not a hang.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    let out = sockit(&[
        "file",
        "send",
        "127.0.0.1",
        &port,
        src.join("a").to_str().unwrap(),
        "-w",
        "0.5",
    ]);
    common::assert_error(&out, 1, "sockit: error: no reply from 127.0.0.1:");
    drop(silent);

    // Usage errors exit 2.
    let out = sockit(&["file", "send", "127.0.0.1", "9009"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn receiver_stops_promptly_on_sigterm_even_mid_session() {
    let dst = TempDir::new("sigterm");
    let server = receiver(&dst, &[]);
    let mut s = raw_session(server.addr);
    s.write_all(&file_offer(b"slow.bin", 1 << 20)).unwrap();
    assert_eq!(read_reply(&mut s).0, b'A');
    s.write_all(&0u64.to_be_bytes()).unwrap();
    s.write_all(&4u32.to_be_bytes()).unwrap();
    s.write_all(b"abcd").unwrap();
    let (status, took, _) = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(!dst.join("slow.bin").exists());
}

#[test]
fn permission_denied_on_the_receiver_is_a_clear_error_on_both_sides() {
    // Root may write anywhere, so the receiver runs as nobody in a
    // directory only root may write to.
    let dst = TempDir::new("perm");
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(common::sockit_bin())
        .args([
            "file",
            "receive",
            "-b",
            "127.0.0.1",
            "-p",
            "0",
            "-d",
            dst.str(),
        ]);
    let probe = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .status();
    if !matches!(probe, Ok(s) if s.success()) {
        eprintln!(
            "SKIPPED permission_denied_on_the_receiver_is_a_clear_error_on_both_sides: \
             cannot run a process as nobody with setpriv (needs root): {probe:?}"
        );
        return;
    }
    let server = Server::command(&mut cmd);
    let src = TempDir::new("perm-src");
    fs::write(src.join("f.txt"), b"data").unwrap();
    let out = send(server.port(), &[&src.join("f.txt")], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot send 'f.txt' (cannot create a temporary file on the receiver (permission denied))"),
        "{err}"
    );
    let line = server.next_line();
    assert!(line.starts_with("refused f.txt from 127.0.0.1:"), "{line}");
    assert!(line.ends_with("(permission denied))"), "{line}");
    assert_eq!(fs::read_dir(dst.path()).unwrap().count(), 0);
}

#[test]
fn a_symlinked_argument_is_sent_under_its_own_name() {
    let src = TempDir::new("symarg-src");
    let dst = TempDir::new("symarg-dst");
    fs::write(src.join("real.txt"), b"real").unwrap();
    symlink(src.join("real.txt"), src.join("alias.txt")).unwrap();
    fs::create_dir(src.join("d")).unwrap();
    symlink(src.join("real.txt"), src.join("d/inner-link")).unwrap();
    let server = receiver(&dst, &[]);
    let out = send(
        server.port(),
        &[&src.join("alias.txt"), &src.join("d")],
        &[],
    );
    assert_ok(&out);
    assert_eq!(fs::read(dst.join("alias.txt")).unwrap(), b"real");
    // Symlinks inside a directory are skipped (with a warning), not followed.
    assert!(dst.join("d").is_dir());
    assert!(!dst.join("d/inner-link").exists());
    assert!(
        stderr(&out).contains("skipping symlink"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_idle_sender_is_told_and_closed_after_the_idle_timeout() {
    let dst = TempDir::new("idle");
    let server = receiver(&dst, &["--idle-timeout", "1"]);
    // A sender that says hello and then nothing.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(b"SOCKIT-FILE\x01").unwrap();
    let mut hello = [0u8; 12];
    s.read_exact(&mut hello).unwrap();
    assert_eq!(&hello, b"SOCKIT-FILE\x01");
    let started = Instant::now();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(5),
        "closed after {idle:?}"
    );
    // The refusal carries the reason as text.
    assert!(
        String::from_utf8_lossy(&rest).contains("sender idle for 1 s, closed"),
        "{rest:?}"
    );
    let line = server.next_line();
    assert!(
        line.starts_with("127.0.0.1:") && line.ends_with(": sender idle for 1 s, closed"),
        "{line}"
    );
    // The limit is in --help.
    let help = stdout(&sockit(&["file", "receive", "--help"]));
    assert!(
        help.contains("--idle-timeout <SECS>") && help.contains("[default: 60]"),
        "{help}"
    );
}

/// A file of `len` bytes at `path`, last modified `age` ago.
fn aged_file(path: &Path, len: usize, age: Duration) {
    fs::write(path, vec![7u8; len]).unwrap();
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now() - age)
        .unwrap();
}

#[test]
fn kept_partial_files_expire_and_are_capped() {
    const DAY: Duration = Duration::from_secs(86_400);
    let dst = TempDir::new("sweep-age");
    aged_file(&dst.join(".sockit-partial-old"), 1024, 8 * DAY);
    aged_file(&dst.join(".sockit-partial-fresh"), 1024, DAY);
    aged_file(&dst.join("not-a-partial.txt"), 1024, 30 * DAY);
    let server = receiver(&dst, &[]);
    assert_eq!(
        server.next_line(),
        "removed 1 partial file (1024 bytes): untouched for 7 days or over the 4294967296 byte cap"
    );
    assert!(!dst.join(".sockit-partial-old").exists());
    assert!(dst.join(".sockit-partial-fresh").exists());
    assert!(dst.join("not-a-partial.txt").exists());
    drop(server);

    // Over the cap, the oldest go first.
    let dst = TempDir::new("sweep-cap");
    for (name, hours) in [("a", 3), ("b", 2), ("c", 1)] {
        let path = dst.join(&format!(".sockit-partial-{name}"));
        aged_file(&path, 1 << 20, Duration::from_secs(hours * 3600));
    }
    let server = receiver(&dst, &["--max-partial", "2M"]);
    assert_eq!(
        server.next_line(),
        "removed 1 partial file (1048576 bytes): untouched for 7 days or over the 2097152 byte cap"
    );
    assert!(!dst.join(".sockit-partial-a").exists());
    assert!(dst.join(".sockit-partial-b").exists() && dst.join(".sockit-partial-c").exists());
    let help = stdout(&sockit(&["file", "receive", "--help"]));
    assert!(help.contains("--keep-partial <DAYS>") && help.contains("--max-partial <SIZE>"));
}

/// A protocol entry as `sockit file send` frames it.
fn entry(kind: u8, path: &str, mode: u32, file: Option<(u64, u64)>) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(path.len() as u16).to_be_bytes());
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(&mode.to_be_bytes());
    if let Some((size, identity)) = file {
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&identity.to_be_bytes());
    }
    out
}

#[test]
fn an_abandoned_transfer_leaves_no_empty_directories_of_its_own() {
    let dst = TempDir::new("abandoned-dirs");
    fs::create_dir(dst.join("keep")).unwrap();
    let server = receiver(&dst, &[]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(b"SOCKIT-FILE\x01").unwrap();
    let mut hello = [0u8; 12];
    s.read_exact(&mut hello).unwrap();
    // Two directories (one inside a directory that was there before)...
    for path in ["a/b/c", "keep/new"] {
        s.write_all(&entry(b'D', path, 0o755, None)).unwrap();
        let mut reply = [0u8; 1];
        s.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"K", "{path}");
    }
    // ...and a file two new directories deep, accepted, then nothing.
    s.write_all(&entry(b'F', "g/h/f.bin", 0o644, Some((100, 7))))
        .unwrap();
    let mut accept = [0u8; 41];
    s.read_exact(&mut accept).unwrap();
    assert_eq!(accept[0], b'A');
    drop(s);
    let mut lines = Vec::new();
    while lines.len() < 10 {
        let line = server.next_line();
        let done = line.starts_with("removed ");
        lines.push(line);
        if done {
            break;
        }
    }
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("removed 6 empty directories of the abandoned transfer from 127.0.0.1:"),
        "{lines:?}"
    );
    for gone in ["a", "keep/new", "g"] {
        assert!(!dst.join(gone).exists(), "{gone} is still there");
    }
    assert!(
        dst.join("keep").is_dir(),
        "a directory that was there before went"
    );
    // The partial file is kept for a resume, in DIR itself.
    let partials = fs::read_dir(dst.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".sockit-partial-")
        })
        .count();
    assert_eq!(partials, 1);
}

/// The receiver's `--tls` identity file in `dir`, and the receiver with
/// it (its second line is `identity ID`).
fn tls_receiver(dst: &TempDir, id_dir: &TempDir, extra: &[&str]) -> (Server, String) {
    let identity = id_dir.join("identity.pem");
    let mut args = vec!["--tls", "--identity", identity.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    let server = receiver(dst, &args);
    let id = server.identity();
    (server, id)
}

#[test]
fn files_cross_tls_verified_beside_plaintext_senders() {
    let src = TempDir::new("tls-src");
    let dst = TempDir::new("tls-dst");
    let ids = TempDir::new("tls-id");
    let top = src.join("tree");
    fs::create_dir_all(top.join("sub")).expect("mkdir");
    random_file(&top.join("big.bin"), 5 << 20);
    random_file(&top.join("sub/small.bin"), 1000);
    fs::write(top.join("sub/empty"), b"").expect("write");
    let (server, id) = tls_receiver(&dst, &ids, &[]);

    let out = send(server.port(), &[&top], &["--tls", "--pin", &id]);
    assert_ok(&out);
    assert!(
        stdout(&out).starts_with("3 files, 2 directories, "),
        "{}",
        stdout(&out)
    );
    assert_eq!(tree(&top), tree(&dst.join("tree")));

    // The same port takes the course's plaintext senders as before.
    let plain = src.join("plain.bin");
    random_file(&plain, 300_000);
    let out = send(server.port(), &[&plain], &[]);
    assert_ok(&out);
    assert_eq!(hash(&plain), hash(&dst.join("plain.bin")));

    // A receiver that is not the one pinned gets no byte of the files.
    let other = TempDir::new("tls-id-other");
    let (wrong, _) = tls_receiver(&dst, &other, &[]);
    let lone = src.join("lone.bin");
    random_file(&lone, 1000);
    let out = send(wrong.port(), &[&lone], &["--tls", "--pin", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not the one pinned"),
        "{}",
        stderr(&out)
    );
    assert!(!dst.join("lone.bin").exists());
    assert!(partials(dst.path()).is_empty());

    // --tls-only: a plaintext sender is told what to do.
    let (only, _) = tls_receiver(&dst, &other, &["--tls-only"]);
    let out = send(only.port(), &[&lone], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "sockit: error: 127.0.0.1:{} takes TLS connections only (send with --tls)\n",
            only.port()
        )
    );
    assert!(!dst.join("lone.bin").exists());
}

#[test]
fn a_byte_flipped_inside_tls_ends_the_transfer_and_writes_nothing() {
    let src = TempDir::new("tls-flip-src");
    let dst = TempDir::new("tls-flip-dst");
    let ids = TempDir::new("tls-flip-id");
    let file = src.join("data.bin");
    random_file(&file, 3 << 20);
    let (server, id) = tls_receiver(&dst, &ids, &[]);
    // Past the handshake (a few KiB), inside the first data chunk.
    let port = proxy(server.addr, Tamper::Flip(500_000));
    let out = send(port, &[&file], &["--tls", "--pin", &id]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    // TLS finds the flip before BLAKE3 could: the receiver's session
    // fails on the record and says so; the sender hears its alert.
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "sockit: error: connection to 127.0.0.1:{port} closed (the TLS session failed: "
        )),
        "{err}"
    );
    assert!(
        !dst.join("data.bin").exists(),
        "a corrupted file got its final name"
    );
    let line = server.next_line();
    assert!(
        line.starts_with("interrupted data.bin from 127.0.0.1:")
            && line.contains("(the TLS session failed: cannot decrypt peer's message)"),
        "{line}"
    );

    // The receiver goes on: a clean send afterwards succeeds.
    let out = send(server.port(), &[&file], &["--tls", "--pin", &id]);
    assert_ok(&out);
    assert_eq!(hash(&file), hash(&dst.join("data.bin")));
}
