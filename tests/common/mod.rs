//! Test harness: run the real `sockit` binary and the seed peers as
//! processes, read the port a server chose from its first stdout line,
//! and clean up on drop. Every wait is bounded.

#![allow(dead_code)] // each test file uses a different part of this

pub mod netns;
pub mod redis;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long anything in a test may take before the test fails.
pub const LIMIT: Duration = Duration::from_secs(30);

pub fn sockit_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sockit")
}

pub fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

/// A long-running process (a sockit server or a seed server) that said
/// `listening on ADDR:PORT` first. Killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The rest of its stdout, line by line.
    pub lines: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `sockit ARGS...` and waits for its `listening on` line.
    pub fn sockit(args: &[&str]) -> Server {
        Server::start(Command::new(sockit_bin()).args(args))
    }

    /// Starts a seed peer server (python3 tests/peers/NAME ARGS...).
    pub fn python(script: &str, args: &[&str]) -> Server {
        Server::start(
            Command::new("python3")
                .arg("-u")
                .arg(peer_script(script))
                .args(args),
        )
    }

    /// Starts any server command (e.g. sockit under another user) and
    /// waits for its `listening on` line.
    pub fn command(cmd: &mut Command) -> Server {
        Server::start(cmd)
    }

    fn start(cmd: &mut Command) -> Server {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let stdout = child.stdout.take().expect("stdout piped");
        let lines = line_channel(stdout);
        let first = match lines.recv_timeout(LIMIT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("wait");
                panic!(
                    "server printed no first line; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        };
        let addr_text = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line was {first:?}"));
        let mut addr: SocketAddr = addr_text.parse().expect("address in first line");
        if addr.ip().is_unspecified() {
            let ip = if addr.is_ipv4() { "127.0.0.1" } else { "::1" };
            addr.set_ip(ip.parse().expect("loopback"));
        }
        Server { child, addr, lines }
    }

    /// The next line the server prints, waiting at most LIMIT.
    pub fn next_line(&self) -> String {
        self.lines
            .recv_timeout(LIMIT)
            .expect("the server printed no further line in time")
    }

    /// The identity a `--tls` server prints after `listening on` (its
    /// next line): `SKT-...`.
    pub fn identity(&self) -> String {
        let line = self.next_line();
        line.strip_prefix("identity ")
            .unwrap_or_else(|| panic!("expected the identity line, got {line:?}"))
            .to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn port_arg(&self) -> String {
        self.port().to_string()
    }

    /// Sends SIGTERM and waits (bounded) for the exit; returns the status,
    /// the time it took, and everything it wrote to stderr.
    pub fn terminate(mut self) -> (ExitStatus, Duration, String) {
        let started = Instant::now();
        signal(&self.child, libc::SIGTERM);
        let status = wait_bounded(&mut self.child, LIMIT);
        let took = started.elapsed();
        let mut err = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut err);
        }
        (status, took, err)
    }

    /// Resident memory of the server process in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn line_channel(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(line) => {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    rx
}

/// Sends `signal` (libc::SIGTERM, ...) to a child process.
pub fn signal(child: &Child, signal: i32) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) takes plain integers and touches no memory of ours;
    // `pid` is our own child, which we have not reaped yet.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
}

pub fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Runs a command to completion with `stdin` as its input, bounded by LIMIT.
pub fn run_with_input(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn command");
    let mut input = child.stdin.take().expect("stdin piped");
    let data = stdin.to_vec();
    let writer = thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(LIMIT) {
        Ok(out) => out.expect("wait for command"),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("command did not finish within {LIMIT:?}: {cmd:?}");
        }
    };
    let _ = writer.join();
    out
}

/// Runs `sockit ARGS...` with empty stdin.
pub fn sockit(args: &[&str]) -> Output {
    run_with_input(Command::new(sockit_bin()).args(args), b"")
}

/// Runs `sockit ARGS...` with the given stdin.
pub fn sockit_stdin(args: &[&str], stdin: &[u8]) -> Output {
    run_with_input(Command::new(sockit_bin()).args(args), stdin)
}

/// Runs a seed peer client to completion.
pub fn python(script: &str, args: &[&str], stdin: &[u8]) -> Output {
    run_with_input(
        Command::new("python3").arg(peer_script(script)).args(args),
        stdin,
    )
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a successful exit, showing stderr otherwise.
#[track_caller]
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
}

/// Asserts the failure contract: exit `code` and exactly one stderr line
/// starting with `sockit: error: ` (usage errors come from clap instead).
#[track_caller]
pub fn assert_error(out: &Output, code: i32, starts_with: &str) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "exactly one error line, got: {err}");
    assert!(
        err.starts_with(starts_with),
        "expected {starts_with:?}, got {err:?}"
    );
    err
}

/// Requires an external tool the test script installs.
pub fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: run ./scripts/test.sh, which installs it"
    );
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

/// Resident memory of process `pid` in KiB (0 once it is gone).
pub fn rss_kib_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Joins a sockit chat room at `addr` and reads its welcome line byte by
/// byte (nothing more), so the stream can be read by someone else or not
/// at all afterwards; returns the stream and the guest nick it was given.
pub fn chat_join_raw(addr: SocketAddr) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(LIMIT)).expect("timeout");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 1000 {
        stream.read_exact(&mut byte).expect("read the welcome");
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    let nick = line
        .strip_prefix("* welcome to sockit chat, you are ")
        .and_then(|rest| rest.split_once(' '))
        .filter(|(_, tail)| tail.ends_with(" online; /help for commands)"))
        .map(|(nick, _)| nick.to_string())
        .unwrap_or_else(|| panic!("no welcome: {line:?}"));
    (stream, nick)
}
