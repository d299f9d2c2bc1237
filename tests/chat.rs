//! `sockit chat serve` / `sockit chat join`, against the seed 4-1 / 4-3
//! programs, plain tools and raw sockets. The wire behaviour under test is
//! the chat protocol contract: welcome, notices, relay, commands, limits.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::ops::{Deref, DerefMut};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const WELCOME: &str = "* welcome to sockit chat, you are ";
const TOO_LONG: &str = "* error: line too long (max 4096 bytes)";
const INVALID_NICK: &str = "* error: invalid nick (1-32 letters, digits, _ or -)";

/// `sockit chat serve -b 127.0.0.1 -p 0 EXTRA...`.
fn serve(extra: &[&str]) -> Server {
    let mut args = vec!["chat", "serve", "-b", "127.0.0.1", "-p", "0"];
    args.extend_from_slice(extra);
    Server::sockit(&args)
}

/// The guest nick a welcome line gives, if it is one.
fn welcome_nick(line: &str) -> Option<String> {
    let rest = line.strip_prefix(WELCOME)?;
    let (nick, tail) = rest.split_once(' ')?;
    (tail.starts_with('(') && tail.ends_with(" online; /help for commands)"))
        .then(|| nick.to_string())
}

/// A received line as text; bytes that are not UTF-8 are shown so that
/// every comparison with the expected text fails visibly.
fn decode(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => format!(
            "<invalid UTF-8: {}>",
            String::from_utf8_lossy(bytes).escape_debug()
        ),
    }
}

fn shorten(line: &str) -> String {
    if line.len() <= 200 {
        line.to_string()
    } else {
        let cut = (0..=200)
            .rev()
            .find(|&i| line.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}... ({} bytes)", &line[..cut], line.len())
    }
}

// ---- reading lines from a socket or a process, with deadlines ------------

/// What a reader thread passes on: bytes, or how the stream ended
/// (`None`: a clean end of file).
enum Chunk {
    Data(Vec<u8>),
    End(Option<String>),
}

fn pump<R: Read + Send + 'static>(mut source: R) -> mpsc::Receiver<Chunk> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match source.read(&mut buf) {
                Ok(0) => {
                    let _ = tx.send(Chunk::End(None));
                    break;
                }
                Ok(n) => {
                    if tx.send(Chunk::Data(buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Chunk::End(Some(e.to_string())));
                    break;
                }
            }
        }
    });
    rx
}

/// The lines a peer receives, consumed in order; every wait ends by LIMIT.
struct Feed {
    who: String,
    rx: mpsc::Receiver<Chunk>,
    buf: Vec<u8>,
    end: Option<Option<String>>,
    /// Every line consumed so far.
    seen: Vec<String>,
}

impl Feed {
    fn new(who: &str, rx: mpsc::Receiver<Chunk>) -> Feed {
        Feed {
            who: who.to_string(),
            rx,
            buf: Vec::new(),
            end: None,
            seen: Vec::new(),
        }
    }

    fn context(&self) -> String {
        let from = self.seen.len().saturating_sub(20);
        let mut text = format!("{}: last lines received:\n", self.who);
        for line in &self.seen[from..] {
            text.push_str(&format!("  {:?}\n", shorten(line)));
        }
        if !self.buf.is_empty() {
            text.push_str(&format!(
                "  and no newline yet after {:?}\n",
                shorten(&String::from_utf8_lossy(&self.buf))
            ));
        }
        if let Some(end) = &self.end {
            text.push_str(&format!("  then the stream ended: {end:?}\n"));
        }
        text
    }

    /// The next whole line, or `None` once the stream has ended.
    fn next_line(&mut self, deadline: Instant, what: &str) -> Option<String> {
        match self.line_by(deadline) {
            Ok(line) => line,
            Err(()) => panic!("timed out waiting for {what}\n{}", self.context()),
        }
    }

    /// The next whole line if one comes by `deadline` (`Err`: none came).
    fn line_by(&mut self, deadline: Instant) -> Result<Option<String>, ()> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let text = decode(&line[..line.len() - 1]);
                self.seen.push(text.clone());
                return Ok(Some(text));
            }
            if self.end.is_some() {
                return Ok(None);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Chunk::Data(data)) => self.buf.extend_from_slice(&data),
                Ok(Chunk::End(end)) => self.end = Some(end),
                Err(RecvTimeoutError::Disconnected) => {
                    self.end = Some(Some("reader thread gone".into()));
                }
                Err(RecvTimeoutError::Timeout) => return Err(()),
            }
        }
    }

    /// The first line that matches; the lines before it are skipped.
    #[track_caller]
    fn expect(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        self.until(what, wanted).1
    }

    #[track_caller]
    fn expect_eq(&mut self, want: &str) {
        self.expect(&format!("{want:?}"), |l| l == want);
    }

    /// A seed client's display of `text`: `receive :  TEXT`, or a bare
    /// continuation line when one recv() brought several lines at once
    /// (which TCP may do whenever two lines are sent close together).
    #[track_caller]
    fn expect_shown(&mut self, text: &str) {
        self.expect(&format!("{:?}", seed_shows(text)), |l| seed_got(l, text));
    }

    /// The lines before the first that matches, and that line.
    #[track_caller]
    fn until(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> (Vec<String>, String) {
        let deadline = Instant::now() + LIMIT;
        let mut before = Vec::new();
        loop {
            match self.next_line(deadline, what) {
                Some(line) if wanted(&line) => return (before, line),
                Some(line) => before.push(line),
                None => panic!("stream ended before {what}\n{}", self.context()),
            }
        }
    }

    /// The lines before the fence line `fence`.
    #[track_caller]
    fn until_eq(&mut self, fence: &str) -> Vec<String> {
        self.until(&format!("{fence:?}"), |l| l == fence).0
    }

    /// Every line until the stream ends, and how it ended (`None`: EOF).
    #[track_caller]
    fn rest(&mut self) -> (Vec<String>, Option<String>) {
        let lines = self.rest_lines();
        assert!(
            self.buf.is_empty(),
            "the stream ended inside a line\n{}",
            self.context()
        );
        (lines, self.end.clone().flatten())
    }

    /// Every whole line until the stream ends.
    fn rest_lines(&mut self) -> Vec<String> {
        let deadline = Instant::now() + LIMIT;
        let mut lines = Vec::new();
        while let Some(line) = self.next_line(deadline, "the end of the stream") {
            lines.push(line);
        }
        lines
    }

    /// Reads to the end and asserts a clean EOF after `last` as last line.
    #[track_caller]
    fn expect_last_then_eof(&mut self, last: &str) {
        let (lines, end) = self.rest();
        assert_eq!(
            lines.last().map(String::as_str),
            Some(last),
            "{}",
            self.context()
        );
        assert_eq!(end, None, "a clean EOF\n{}", self.context());
    }
}

/// A raw TCP chat client.
struct Raw {
    stream: TcpStream,
    feed: Feed,
    nick: String,
}

impl Raw {
    /// Connects without waiting for anything.
    fn open(addr: std::net::SocketAddr, who: &str) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let feed = Feed::new(who, pump(stream.try_clone().expect("clone")));
        Raw {
            stream,
            feed,
            nick: String::new(),
        }
    }

    /// Connects and waits for the welcome line, which names its nick.
    #[track_caller]
    fn join(server: &Server) -> Raw {
        let mut raw = Raw::open(server.addr, "raw client");
        let deadline = Instant::now() + LIMIT;
        let first = raw
            .next_line(deadline, "the welcome line")
            .unwrap_or_else(|| panic!("no welcome line\n{}", raw.context()));
        raw.nick =
            welcome_nick(&first).unwrap_or_else(|| panic!("first line is no welcome: {first:?}"));
        raw.feed.who = format!("raw client {}", raw.nick);
        raw
    }

    fn send(&self, text: &str) {
        self.send_bytes(text.as_bytes());
    }

    fn send_bytes(&self, bytes: &[u8]) {
        (&self.stream).write_all(bytes).expect("write");
    }
}

impl Deref for Raw {
    type Target = Feed;
    fn deref(&self) -> &Feed {
        &self.feed
    }
}

impl DerefMut for Raw {
    fn deref_mut(&mut self) -> &mut Feed {
        &mut self.feed
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// A process driven line by line: stdin piped, stdout read as a Feed.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    feed: Feed,
    stderr: Option<thread::JoinHandle<String>>,
    nick: String,
}

impl Proc {
    fn spawn(cmd: &mut Command, who: &str) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {who}: {e}"));
        let stdin = child.stdin.take();
        let feed = Feed::new(who, pump(child.stdout.take().expect("stdout piped")));
        let mut err = child.stderr.take().expect("stderr piped");
        let stderr = Some(thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        }));
        Proc {
            child,
            stdin,
            feed,
            stderr,
            nick: String::new(),
        }
    }

    /// Writes one line of input (with its newline).
    fn line(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin
            .write_all(format!("{text}\n").as_bytes())
            .expect("write to stdin");
        stdin.flush().expect("flush stdin");
    }

    /// Closes stdin and waits (bounded) for the exit; returns the status,
    /// the lines it still printed, and its stderr.
    fn finish(&mut self) -> (ExitStatus, Vec<String>, String) {
        self.stdin = None;
        // Whole lines only: the seed client can exit while its receive
        // thread is in the middle of printing.
        let lines = self.feed.rest_lines();
        let status = wait_bounded(&mut self.child, LIMIT);
        let err = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        (status, lines, err)
    }

    #[track_caller]
    fn finish_ok(&mut self) -> Vec<String> {
        let (status, lines, err) = self.finish();
        assert!(
            status.success(),
            "{} exited with {status:?}; stderr: {err}\n{}",
            self.feed.who,
            self.feed.context()
        );
        lines
    }
}

impl Deref for Proc {
    type Target = Feed;
    fn deref(&self) -> &Feed {
        &self.feed
    }
}

impl DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Feed {
        &mut self.feed
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the seed client prints for a received chunk `text` (one line).
fn seed_shows(text: &str) -> String {
    format!("receive :  {text}")
}

/// Whether a seed client's output line shows `text`: as `receive :  TEXT`
/// or, when one recv() got several lines, as a continuation line.
fn seed_got(line: &str, text: &str) -> bool {
    line == text || line.strip_prefix("receive :  ") == Some(text)
}

/// Starts the seed 4-1 client (or 4-3 with a name) and waits until it
/// shows sockit's welcome.
#[track_caller]
fn seed_client(server: &Server, name: Option<&str>) -> Proc {
    let mut cmd = Command::new("python3");
    cmd.arg("-u")
        .arg(peer_script("seed004_chat_client.py"))
        .arg("127.0.0.1")
        .arg(server.port_arg());
    if name.is_some() {
        cmd.arg("--name");
    }
    let mut proc = Proc::spawn(&mut cmd, "seed client");
    if let Some(name) = name {
        proc.line(name);
    }
    let prefix = seed_shows(WELCOME);
    let welcome = proc.expect("the welcome", |l| l.starts_with(&prefix));
    proc.nick = welcome_nick(&welcome["receive :  ".len()..])
        .unwrap_or_else(|| panic!("not a welcome: {welcome:?}"));
    proc.feed.who = format!("seed client {}", proc.nick);
    proc
}

/// Starts `sockit chat join 127.0.0.1 PORT EXTRA...`.
fn chat_join(port: &str, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(sockit_bin());
    cmd.args(["chat", "join", "127.0.0.1", port]).args(extra);
    Proc::spawn(&mut cmd, "sockit chat join")
}

/// Waits until the seed server prints `what` (once more). Its threads
/// print at once, so their output can be interleaved mid-line:
/// `connection from :  # of client: 2`.
#[track_caller]
fn server_says(server: &Server, what: &str) {
    let deadline = Instant::now() + LIMIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match server.lines.recv_timeout(left) {
            Ok(line) if line.contains(what) => return,
            Ok(line) => seen.push(line),
            Err(_) => panic!("the server did not print {what:?}; it printed {seen:?}"),
        }
    }
}

// ---- the seed programs as peers -------------------------------------------

#[test]
fn three_seed_clients_chat_and_nobody_gets_their_own_message() {
    let server = serve(&[]);
    let mut p1 = seed_client(&server, None);
    let mut p2 = seed_client(&server, None);
    p1.expect_shown(&format!("* {} joined (2 online)", p2.nick));
    let mut p3 = seed_client(&server, None);
    let joined = format!("* {} joined (3 online)", p3.nick);
    p1.expect_shown(&joined);
    p2.expect_shown(&joined);

    // One message at a time: the seed client sends no newline, so the next
    // one may only be typed once the last has been seen.
    let m1 = format!("[{}] message from one", p1.nick);
    p1.line("message from one");
    p2.expect_shown(&m1);
    p3.expect_shown(&m1);
    let m2 = format!("[{}] 둘에서 온 메시지", p2.nick);
    p2.line("둘에서 온 메시지");
    p1.expect_shown(&m2);
    p3.expect_shown(&m2);
    let m3 = format!("[{}] message from three", p3.nick);
    p3.line("message from three");
    p1.expect_shown(&m3);
    p2.expect_shown(&m3);
    // A fence for p3: everything p3 could have got of its own is before it.
    let done = format!("[{}] done", p1.nick);
    p1.line("done");
    p2.expect_shown(&done);
    p3.expect_shown(&done);

    for (p, own) in [(&p1, &m1), (&p2, &m2), (&p3, &m3)] {
        assert!(
            !p.seen.iter().any(|l| l.contains(own.as_str())),
            "{} got its own message\n{}",
            p.nick,
            p.context()
        );
    }
    for p in [&mut p1, &mut p2, &mut p3] {
        p.finish_ok();
    }
}

#[test]
fn seed_client_with_a_name_is_shown_once_under_that_name() {
    let server = serve(&[]);
    let mut raw = Raw::join(&server);
    let mut named = seed_client(&server, Some("syjung"));
    let guest = named.nick.clone();
    raw.expect_eq(&format!("* {guest} joined (2 online)"));
    // The seed sends `[syjung] hello`: the guest becomes syjung.
    named.line("hello");
    let renamed = format!("* {guest} is now syjung");
    let before = raw.until_eq("[syjung] hello");
    assert_eq!(before, std::slice::from_ref(&renamed), "{}", raw.context());
    named.expect_shown(&renamed);
    named.line("again");
    let (_, line) = raw.until("a line from syjung", |l| l.starts_with("[syjung]"));
    assert_eq!(line, "[syjung] again");
    named.line("bye");
    named.finish_ok();
    raw.expect_eq("* syjung left (1 online)");
}

#[test]
fn bye_and_quit_leave_the_room() {
    let server = serve(&[]);
    let mut raw = Raw::join(&server);
    let mut named = seed_client(&server, Some("syjung"));
    let mut plain = seed_client(&server, None);
    raw.expect_eq(&format!("* {} joined (3 online)", plain.nick));
    named.line("hello");
    raw.expect_eq("[syjung] hello");
    named.line("bye");
    raw.expect_eq("* syjung left (2 online)");
    plain.expect("syjung leaving", |l| {
        seed_got(l, "* syjung left (2 online)")
    });
    named.finish_ok();
    plain.line("bye");
    raw.expect_eq(&format!("* {} left (1 online)", plain.nick));
    plain.finish_ok();

    // A raw client sending a bare `bye` (no newline) keeps its side open:
    // the server says goodbye and closes.
    let mut leaver = Raw::join(&server);
    let nick = leaver.nick.clone();
    raw.expect_eq(&format!("* {nick} joined (2 online)"));
    leaver.send("bye");
    leaver.expect_last_then_eof("* bye");
    raw.expect_eq(&format!("* {nick} left (1 online)"));

    let mut quitter = Raw::join(&server);
    quitter.send("/quit\n");
    quitter.expect_last_then_eof("* bye");
    raw.expect_eq(&format!("* {} left (1 online)", quitter.nick));
}

// ---- plain tools as peers -----------------------------------------------------

#[test]
fn nc_and_ncat_chat_with_a_raw_client() {
    require("nc");
    require("ncat");
    let server = serve(&[]);
    let port = server.port_arg();
    let mut raw = Raw::join(&server);
    let mut tools = Vec::new();
    for (tool, args) in [("nc", &["-N"][..]), ("ncat", &[][..])] {
        let mut cmd = Command::new(tool);
        cmd.args(args).args(["127.0.0.1", &port]);
        let mut proc = Proc::spawn(&mut cmd, tool);
        let welcome = proc.expect("the welcome", |l| l.starts_with(WELCOME));
        proc.nick = welcome_nick(&welcome).expect("welcome names the nick");
        raw.expect(&format!("{} joining", proc.nick), |l| {
            l.starts_with(&format!("* {} joined", proc.nick))
        });
        tools.push(proc);
    }
    for i in 0..tools.len() {
        let text = format!("a line from {}", tools[i].who);
        tools[i].line(&text);
        let relayed = format!("[{}] {text}", tools[i].nick);
        raw.expect_eq(&relayed);
        tools[1 - i].expect_eq(&relayed);
    }
    raw.send("to both tools\n");
    for tool in &mut tools {
        tool.expect_eq(&format!("[{}] to both tools", raw.nick));
    }
    let mut online = 2;
    for tool in &mut tools {
        tool.finish_ok();
        raw.expect_eq(&format!("* {} left ({online} online)", tool.nick));
        online -= 1;
    }
}

// ---- sockit chat join ---------------------------------------------------------

#[test]
fn chat_join_with_a_name_against_sockit() {
    let server = serve(&[]);
    let mut raw = Raw::join(&server);
    let mut alice = chat_join(&server.port_arg(), &["-n", "alice"]);
    let welcome = alice.expect("the welcome", |l| l.starts_with(WELCOME));
    let guest = welcome_nick(&welcome).expect("welcome names the nick");
    let renamed = format!("* {guest} is now alice");
    alice.expect_eq(&renamed);
    raw.expect_eq(&format!("* {guest} joined (2 online)"));
    raw.expect_eq(&renamed);
    alice.line("hi");
    raw.expect_eq("[alice] hi");
    raw.send("hello alice \u{1b}[2J\n");
    alice.expect_eq(&format!("[{}] hello alice \\x1b[2J", raw.nick));
    let started = Instant::now();
    let rest = alice.finish_ok();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "join took {:?} to leave",
        started.elapsed()
    );
    assert_eq!(rest.last().map(String::as_str), Some("* bye"), "{rest:?}");
    raw.expect_eq("* alice left (1 online)");
}

#[test]
fn chat_join_with_a_name_against_the_seed_server() {
    let server = Server::python("seed004_chat_server.py", &["0"]);
    // It prints `# of client:` once it has added a client to its list.
    let mut raw = Raw::open(server.addr, "raw client of the seed server");
    server_says(&server, "# of client:");
    let mut bob = chat_join(&server.port_arg(), &["-n", "bob"]);
    server_says(&server, "# of client:");
    bob.line("hi");
    raw.expect_eq("[bob] hi");
    raw.send("yo there\n");
    bob.expect_eq("yo there");
    // A chunk without a newline is printed after a pause.
    raw.send("no newline 한글");
    bob.expect_eq("no newline 한글");
    bob.finish_ok();
}

#[test]
fn chat_join_usage_errors_and_piped_input() {
    let out = sockit(&["chat", "join", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    let out = sockit(&["chat", "join", "127.0.0.1", "abc"]);
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    let port = closed_port().to_string();
    let out = sockit(&["chat", "join", "127.0.0.1", &port]);
    let err = assert_error(&out, 1, "sockit: error: cannot connect");
    assert_eq!(
        err,
        format!("sockit: error: cannot connect to 127.0.0.1:{port} (connection refused)\n")
    );

    let server = serve(&[]);
    let port = server.port_arg();
    let mut raw = Raw::join(&server);
    let out = sockit_stdin(&["chat", "join", "127.0.0.1", &port], b"hi\nbye\n");
    assert_ok(&out);
    let printed = stdout(&out);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 2, "{printed:?}");
    let guest = welcome_nick(lines[0]).unwrap_or_else(|| panic!("{printed:?}"));
    assert_eq!(lines[1], "* bye");
    raw.expect_eq(&format!("[{guest}] hi"));
    raw.expect_eq(&format!("* {guest} left (1 online)"));
    // The end of stdin leaves too.
    let out = sockit_stdin(&["chat", "join", "127.0.0.1", &port], b"only line");
    assert_ok(&out);
    let guest = welcome_nick(stdout(&out).lines().next().unwrap_or(""))
        .unwrap_or_else(|| panic!("{:?}", stdout(&out)));
    raw.expect_eq(&format!("[{guest}] only line"));
    raw.expect_eq(&format!("* {guest} left (1 online)"));
}

// ---- the room -------------------------------------------------------------------

#[test]
fn welcome_join_and_leave_notices() {
    let server = serve(&[]);
    let mut a = Raw::open(server.addr, "a");
    a.expect_eq("* welcome to sockit chat, you are guest1 (1 online; /help for commands)");
    assert_eq!(a.seen.len(), 1, "the welcome is the first line");
    let mut b = Raw::open(server.addr, "b");
    b.expect_eq("* welcome to sockit chat, you are guest2 (2 online; /help for commands)");
    assert_eq!(b.seen.len(), 1, "the welcome is the first line");
    a.expect_eq("* guest2 joined (2 online)");
    b.stream.shutdown(Shutdown::Write).expect("half close");
    a.expect_eq("* guest2 left (1 online)");
    let (lines, end) = b.rest();
    assert!(lines.is_empty(), "{lines:?}");
    assert_eq!(end, None, "a clean EOF");
}

/// The count in a `(N online)` notice.
fn online_count(line: &str) -> Option<usize> {
    let head = line.strip_suffix(" online)")?;
    head[head.rfind('(')? + 1..].parse().ok()
}

#[test]
fn the_welcome_comes_first_even_while_others_come_and_go() {
    let server = serve(&[]);
    let addr = server.addr;
    for round in 0..10 {
        // Old members leave while new ones join, four threads each.
        let old: Vec<Raw> = (0..48).map(|_| Raw::join(&server)).collect();
        let mut old = old.into_iter();
        let leaving: Vec<_> = (0..4)
            .map(|_| {
                let some: Vec<Raw> = old.by_ref().take(12).collect();
                thread::spawn(move || drop(some))
            })
            .collect();
        let joining: Vec<_> = (0..4)
            .map(|_| {
                thread::spawn(move || {
                    (0..12)
                        .map(|_| {
                            let mut raw = Raw::open(addr, "newcomer");
                            let first = raw
                                .next_line(Instant::now() + LIMIT, "the welcome")
                                .unwrap_or_default();
                            raw.nick = welcome_nick(&first).unwrap_or_else(|| {
                                panic!("round {round}: a newcomer's first line was {first:?}")
                            });
                            raw
                        })
                        .collect::<Vec<Raw>>()
                })
            })
            .collect();
        for handle in leaving {
            handle.join().expect("leaving");
        }
        let mut new: Vec<Raw> = joining
            .into_iter()
            .flat_map(|h| h.join().expect("a newcomer got no welcome first"))
            .collect();
        // Every notice a member gets counts that member in.
        let fence = format!("[{}] fence", new[0].nick);
        new[0].send("fence\n");
        for raw in &mut new[1..] {
            for line in raw.until_eq(&fence) {
                let online = online_count(&line).unwrap_or(usize::MAX);
                assert!(online >= 1, "round {round}: {} got {line:?}", raw.nick);
            }
        }
    }
}

#[test]
fn nick_rules() {
    let server = serve(&[]);
    let mut a = Raw::join(&server);
    let mut b = Raw::join(&server);
    let mut c = Raw::join(&server);
    a.expect_eq(&format!("* {} joined (3 online)", c.nick));
    b.expect_eq(&format!("* {} joined (3 online)", c.nick));

    // A Korean nick: everyone, the changer too, is told.
    a.send("/nick 정훈\n");
    let renamed = format!("* {} is now 정훈", a.nick);
    for peer in [&mut a, &mut b, &mut c] {
        peer.expect_eq(&renamed);
    }
    a.send("안녕하세요\n");
    b.expect_eq("[정훈] 안녕하세요");

    // Invalid nicks are refused, to the sender only, and change nothing.
    let long = format!("/nick {}", "a".repeat(33));
    for bad in [
        "/nick bad name",
        "/nick [x]",
        "/nick a.b",
        "/nick \u{200b}",
        &long,
    ] {
        a.send(&format!("{bad}\n"));
        let (before, line) = a.until("an error", |l| l.starts_with("* error"));
        assert_eq!(line, INVALID_NICK, "for {bad:?} after {before:?}");
    }
    // No name at all is a usage error (like /msg without text).
    a.send("/nick\n");
    a.expect_eq("* error: usage: /nick NAME");
    a.send("still 정훈\n");
    let before = b.until_eq("[정훈] still 정훈");
    assert!(
        !before.iter().any(|l| l.starts_with("* ")),
        "errors went only to the sender: {before:?}"
    );
    // 32 characters are fine (here 32 Hangul syllables, 96 bytes).
    let longest = "가".repeat(32);
    a.send(&format!("/nick {longest}\n"));
    b.expect_eq(&format!("* 정훈 is now {longest}"));
    a.send("/nick alice\n");
    b.expect_eq(&format!("* {longest} is now alice"));

    // Taken, case-insensitively.
    b.send("/nick Alice\n");
    b.expect_eq("* error: nick Alice is taken");
    b.send("/nick ALICE\n");
    b.expect_eq("* error: nick ALICE is taken");

    // c never renamed and sends its first message as `[alice] hi`: no
    // impersonation, the message goes out under c's own nick.
    c.send("[alice] hi\n");
    c.expect_eq("* error: nick alice is taken");
    let shown = format!("[{}] [alice] hi", c.nick);
    a.expect_eq(&shown);
    b.expect_eq(&shown);
    // The same with a guest nick that is taken.
    let mut d = Raw::join(&server);
    d.send(&format!("[{}] hi\n", b.nick));
    d.expect_eq(&format!("* error: nick {} is taken", b.nick));
    let shown = format!("[{}] [{}] hi", d.nick, b.nick);
    b.expect_eq(&shown);

    // A forged second line in one write is two lines, both c's.
    c.send("hi\n[alice] I owe you\n");
    let first = format!("[{}] hi", c.nick);
    let second = format!("[{}] [alice] I owe you", c.nick);
    let from_c = format!("[{}] ", c.nick);
    for peer in [&mut a, &mut b, &mut d] {
        let (_, line) = peer.until("c's line", |l| l.starts_with(&from_c));
        assert_eq!(line, first);
        let (_, line) = peer.until("c's line", |l| l.starts_with(&from_c));
        assert_eq!(line, second);
    }

    // Only the FIRST message can adopt a prefix.
    let mut e = Raw::join(&server);
    e.send("first\n");
    a.expect_eq(&format!("[{}] first", e.nick));
    e.send("[carol] second\n");
    a.expect_eq(&format!("[{}] [carol] second", e.nick));
    // /who shows the nicks.
    e.send("/who\n");
    let mut names = ["alice", b.nick.as_str(), &c.nick, &d.nick, &e.nick];
    names.sort_by_key(|n| n.to_lowercase());
    let who = format!("* 5 online in #lobby: {}", names.join(", "));
    e.expect_eq(&who);
}

#[test]
fn private_messages_and_commands() {
    let server = serve(&[]);
    let mut a = Raw::join(&server);
    let mut b = Raw::join(&server);
    let mut c = Raw::join(&server);
    let cn = c.nick.clone();
    a.send("/nick alice\n");
    for peer in [&mut a, &mut b, &mut c] {
        peer.expect("a renamed", |l| l.ends_with(" is now alice"));
    }
    b.send("/nick Bob\n");
    for peer in [&mut a, &mut b, &mut c] {
        peer.expect("b renamed", |l| l.ends_with(" is now Bob"));
    }

    a.send("/msg Bob hi there\n");
    b.expect_eq("[alice -> Bob] hi there");
    a.expect_eq("[alice -> Bob] hi there");
    b.send("after the private one\n");
    let before = c.until_eq("[Bob] after the private one");
    assert!(
        !before.iter().any(|l| l.contains("hi there")),
        "c saw the private message: {before:?}"
    );

    a.send("/msg nobody hi\n");
    a.expect_eq("* error: no such nick: nobody");
    a.send("/msg Bob\n");
    a.expect_eq("* error: usage: /msg NICK TEXT");

    c.send("/who\n");
    c.expect_eq(&format!("* 3 online in #lobby: alice, Bob, {cn}"));

    a.send("/me waves 👋\n");
    b.expect_eq("* alice waves 👋");
    c.expect_eq("* alice waves 👋");
    b.send("fence\n");
    let before = a.until_eq("[Bob] fence");
    assert!(
        !before.iter().any(|l| l.contains("waves")),
        "the sender got its own /me: {before:?}"
    );

    a.send("/help\n");
    a.expect("the help", |l| l.starts_with("* commands: "));
    a.send("/frobnicate now\n");
    a.expect_eq("* error: unknown command /frobnicate (see /help)");
    a.send("done\n");
    let before = c.until_eq("[alice] done");
    assert!(
        !before
            .iter()
            .any(|l| l.starts_with("* error") || l.starts_with("* commands")),
        "replies to alice reached c: {before:?}"
    );
}

#[test]
fn text_is_made_safe_but_kept() {
    let server = serve(&[]);
    let a = Raw::join(&server);
    let mut b = Raw::join(&server);
    let an = a.nick.clone();
    let cases: [(&[u8], &str); 8] = [
        (b"bad \xff bytes", "bad \u{fffd} bytes"),
        (b"cut \xed\x95x", "cut \u{fffd}x"),
        (b"\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("abc\u{202e}def".as_bytes(), "abc\\u{202e}def"),
        ("zero\u{200b}width".as_bytes(), "zero\\u{200b}width"),
        (b"bell\x07 and tab\tkept", "bell\\x07 and tab\tkept"),
        ("한국어 텍스트 ✓".as_bytes(), "한국어 텍스트 ✓"),
        (b"crlf\r", "crlf"),
    ];
    for (sent, shown) in cases {
        let mut line = sent.to_vec();
        line.push(b'\n');
        a.send_bytes(&line);
        let (_, got) = b.until("a's line", |l| l.starts_with(&format!("[{an}]")));
        assert_eq!(got, format!("[{an}] {shown}"), "for {sent:?}");
    }
}

#[test]
fn a_ten_megabyte_line_is_refused_and_the_connection_goes_on() {
    let server = serve(&[]);
    let mut a = Raw::join(&server);
    let mut b = Raw::join(&server);
    let an = a.nick.clone();
    let mut big = vec![b'x'; 10 << 20];
    big.extend_from_slice(b"\nshort after\n");
    let mut writer_stream = a.stream.try_clone().expect("clone");
    let writer = thread::spawn(move || writer_stream.write_all(&big).expect("write 10 MB"));
    a.expect_eq(TOO_LONG);
    b.expect_eq(&format!("[{an}] short after"));
    writer.join().expect("writer");
    b.send("fence\n");
    a.until_eq(&format!("[{}] fence", b.nick));
    let errors = a.seen.iter().filter(|l| l.starts_with("* error")).count();
    assert_eq!(errors, 1, "one error for the long line\n{}", a.context());
    assert!(
        b.seen.iter().all(|l| l.len() < 200),
        "b saw a long line\n{}",
        b.context()
    );

    let server = serve(&["--max-line", "100"]);
    let mut a = Raw::join(&server);
    let mut b = Raw::join(&server);
    let an = a.nick.clone();
    a.send(&format!("{}\n{}\n", "y".repeat(101), "z".repeat(100)));
    a.expect_eq("* error: line too long (max 100 bytes)");
    let before = b.until_eq(&format!("[{an}] {}", "z".repeat(100)));
    assert!(
        !before.iter().any(|l| l.contains("yyy")),
        "the long line was relayed: {before:?}"
    );
}

#[test]
fn max_clients_turns_the_next_one_away() {
    let server = serve(&["--max-clients", "2"]);
    let a = Raw::join(&server);
    let mut b = Raw::join(&server);
    let mut c = Raw::open(server.addr, "third client");
    let (lines, end) = c.rest();
    assert_eq!(lines, ["* error: server full"]);
    assert_eq!(end, None, "a clean EOF");
    a.send("fence\n");
    let before = b.until_eq(&format!("[{}] fence", a.nick));
    assert!(
        before.is_empty(),
        "b was told about the refused one: {before:?}"
    );
    // Room again once someone leaves.
    drop(a);
    b.expect("a leaving", |l| l.ends_with(" left (1 online)"));
    let d = Raw::join(&server);
    assert!(!d.nick.is_empty());
}

#[test]
fn sigterm_tells_every_client_and_exits_within_a_second() {
    let server = serve(&[]);
    let mut clients: Vec<Raw> = (0..3).map(|_| Raw::join(&server)).collect();
    let joined = format!("* {} joined (3 online)", clients[2].nick);
    clients[0].expect_eq(&joined);
    clients[1].expect_eq(&joined);
    let (status, took, err) = server.terminate();
    assert!(status.success(), "exit {status:?}, stderr {err}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    for client in &mut clients {
        client.expect_last_then_eof("* server shutting down");
    }
}

#[test]
fn echo_self_sends_the_sender_its_own_lines() {
    let server = serve(&["--echo-self"]);
    let mut a = Raw::join(&server);
    let mut b = Raw::join(&server);
    let an = a.nick.clone();
    a.send("me too\n");
    a.expect_eq(&format!("[{an}] me too"));
    b.expect_eq(&format!("[{an}] me too"));
    a.send("/me nods\n");
    a.expect_eq(&format!("* {an} nods"));
    b.expect_eq(&format!("* {an} nods"));
}

#[test]
fn lines_without_newline_empty_lines_and_end_of_file() {
    let server = serve(&[]);
    let mut a = Raw::join(&server);
    let mut b = Raw::join(&server);
    let an = a.nick.clone();
    a.expect_eq(&format!("* {} joined (2 online)", b.nick));
    // Like the seed client: no newline, then a pause.
    a.send("hello");
    b.expect_eq(&format!("[{an}] hello"));
    // Two writes back to back are one line.
    a.send("wor");
    a.send("ld\n");
    a.send("next\n");
    let before = b.until_eq(&format!("[{an}] next"));
    assert_eq!(before, [format!("[{an}] world")]);
    // Empty lines are ignored.
    a.send("\n\r\n\n");
    a.send("after empties\n");
    let before = b.until_eq(&format!("[{an}] after empties"));
    assert!(before.is_empty(), "{before:?}");
    // The end of the stream ends a line too.
    a.send("tail");
    a.stream.shutdown(Shutdown::Write).expect("half close");
    b.expect_eq(&format!("[{an}] tail"));
    b.expect_eq(&format!("* {an} left (1 online)"));
    let (lines, end) = a.rest();
    assert!(lines.is_empty(), "{lines:?}");
    assert_eq!(end, None, "a clean EOF");
}

#[test]
fn garbage_does_not_hurt_the_room() {
    let server = serve(&[]);
    let a = Raw::join(&server);
    let mut b = Raw::join(&server);
    let an = a.nick.clone();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let garbage: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect();
    a.send_bytes(&garbage);
    a.send("\nend of garbage\n");
    let before = b.until_eq(&format!("[{an}] end of garbage"));
    assert!(before.len() > 50, "{} lines of garbage", before.len());
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\t')
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    for line in &before {
        assert!(
            line.starts_with(&format!("[{an}] ")) || line.starts_with("* "),
            "{line:?}"
        );
        assert!(
            !line.starts_with("<invalid") && !line.chars().any(unsafe_char),
            "unsafe line relayed: {line:?}"
        );
    }
    let mut c = Raw::join(&server);
    b.send("still chatting\n");
    c.expect_eq(&format!("[{}] still chatting", b.nick));
}

#[test]
fn a_peer_that_vanishes_mid_line_is_dropped_and_the_room_goes_on() {
    let server = serve(&[]);
    let mut b = Raw::join(&server);
    // A bare socket that never reads and ends with a reset, not a FIN.
    let vanisher = TcpStream::connect(server.addr).expect("connect");
    let joined = b.expect("the vanisher's join notice", |l| {
        l.ends_with(" joined (2 online)")
    });
    let nick = joined
        .trim_start_matches("* ")
        .trim_end_matches(" joined (2 online)")
        .to_string();
    // Output queued for it that it never reads, and half a line from it.
    for i in 0..100 {
        b.send(&format!("line {i} for nobody\n"));
    }
    (&vanisher).write_all(b"half a li").expect("write");
    socket2::SockRef::from(&vanisher)
        .set_linger(Some(Duration::ZERO))
        .expect("linger 0");
    drop(vanisher);
    let (before, _) = b.until("the leave notice", |l| {
        l == format!("* {nick} left (1 online)")
    });
    // Whether the half line made it before the reset is a race; if it
    // did, it came whole and labelled, never merged into anything else.
    for line in &before {
        assert_eq!(
            line,
            &format!("[{nick}] half a li"),
            "unexpected line before the leave"
        );
    }
    let mut c = Raw::join(&server);
    b.send("still here\n");
    c.expect_eq(&format!("[{}] still here", b.nick));
}

// ---- load ----------------------------------------------------------------------

fn plain_join(server: &Server) -> (TcpStream, String) {
    chat_join_raw(server.addr)
}

/// The joins a big room's summary reports (`* 37 joined, 2 left (1000
/// online)`); `None` for any other line.
fn summed_joins(text: &str) -> Option<usize> {
    let (count, _) = text.strip_prefix("* ")?.split_once(" joined")?;
    text.ends_with(" online)").then_some(())?;
    count.parse().ok()
}

/// Counts, per reader and sender, the messages received in order.
type Progress = Arc<(Mutex<Vec<[usize; 2]>>, Condvar)>;

#[test]
fn a_client_that_never_reads_is_cut_off_and_the_others_get_everything() {
    const LINE: usize = 1000; // bytes per message, newline included
    const PER_SENDER: usize = (25 << 20) / LINE; // 50 MiB through the room
    const WINDOW: usize = 256; // lines a sender may be ahead of a reader
    const RSS_LIMIT_KIB: u64 = 32 * 1024;
    let started = Instant::now();
    let server = serve(&["--flood", "0", "--stall-timeout", "2"]);
    let pid = server.child.id();
    let (never, never_nick) = plain_join(&server);
    // Participants 0 and 1 send (and read the other), 2 and 3 only read.
    let (streams, nicks): (Vec<TcpStream>, Vec<String>) =
        (0..4).map(|_| plain_join(&server)).unzip();
    let senders = [nicks[0].clone(), nicks[1].clone()];
    let cut_off = format!("* {never_nick} was cut off (not reading)");
    let progress: Progress = Arc::new((Mutex::new(vec![[0; 2]; 4]), Condvar::new()));
    let max_rss = Arc::new(AtomicU64::new(0));

    let mut readers = Vec::new();
    for (r, stream) in streams.iter().enumerate() {
        let stream = stream.try_clone().expect("clone");
        let (senders, cut_off, progress) = (senders.clone(), cut_off.clone(), progress.clone());
        readers.push(thread::spawn(move || -> Result<(), String> {
            let mut reader = std::io::BufReader::with_capacity(256 << 10, stream);
            let mut want = [PER_SENDER; 2];
            if r < 2 {
                want[r] = 0;
            }
            let mut got = [0usize; 2];
            let mut saw_cut_off = false;
            let mut line = Vec::with_capacity(2 * LINE);
            let report = |got: [usize; 2]| {
                let (lock, cv) = &*progress;
                lock.lock().expect("lock")[r] = got;
                cv.notify_all();
            };
            while got != want || !saw_cut_off {
                line.clear();
                let n =
                    std::io::BufRead::read_until(&mut reader, b'\n', &mut line).map_err(|e| {
                        format!(
                            "reader {r}: {e} with {got:?} of {want:?} messages, \
                             cut-off notice seen: {saw_cut_off}, at {:?}",
                            started.elapsed()
                        )
                    })?;
                if n == 0 || line[n - 1] != b'\n' {
                    return Err(format!("reader {r}: end of stream after {got:?}"));
                }
                let text = std::str::from_utf8(&line[..n - 1])
                    .map_err(|_| format!("reader {r}: invalid UTF-8"))?;
                if text == cut_off {
                    saw_cut_off = true;
                    continue;
                }
                if text.starts_with("* ") {
                    continue;
                }
                let (nick, body) = text
                    .strip_prefix('[')
                    .and_then(|t| t.split_once("] "))
                    .ok_or_else(|| format!("reader {r}: unexpected {:?}", shorten(text)))?;
                let s = senders
                    .iter()
                    .position(|n| n == nick)
                    .filter(|&s| want[s] > 0)
                    .ok_or_else(|| format!("reader {r}: unexpected {:?}", shorten(text)))?;
                let prefix = format!("{s}:{:07}:", got[s]);
                if !body.starts_with(&prefix) || body.len() != LINE - 1 {
                    return Err(format!(
                        "reader {r}: expected message {prefix} of {nick}, got {:?}",
                        shorten(body)
                    ));
                }
                got[s] += 1;
                if got[s] % 32 == 0 || got[s] == want[s] {
                    report(got);
                }
                if got == want {
                    eprintln!("reader {r}: every message by {:?}", started.elapsed());
                }
            }
            Ok(())
        }));
    }

    let mut writers = Vec::new();
    for (s, stream) in streams.iter().take(2).enumerate() {
        let mut stream = stream.try_clone().expect("clone");
        let (progress, max_rss) = (progress.clone(), max_rss.clone());
        writers.push(thread::spawn(move || -> Result<(), String> {
            let deadline = Instant::now() + LIMIT;
            let mut batch = Vec::with_capacity(64 * LINE);
            for i in 0..PER_SENDER {
                if i % 32 == 0 {
                    stream
                        .write_all(&batch)
                        .map_err(|e| format!("send {s}: {e}"))?;
                    batch.clear();
                    let (lock, cv) = &*progress;
                    let mut counts = lock.lock().expect("lock");
                    while (0..4).any(|r| r != s && i - counts[r][s].min(i) >= WINDOW) {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Err(format!("sender {s} stalled at {i}: {:?}", *counts));
                        }
                        counts = cv.wait_timeout(counts, left).expect("lock").0;
                    }
                }
                if i % 1024 == 0 {
                    max_rss.fetch_max(rss_kib_of(pid), Ordering::Relaxed);
                }
                let head = format!("{s}:{i:07}:");
                batch.extend_from_slice(head.as_bytes());
                batch.resize(batch.len() + LINE - 1 - head.len(), b'x');
                batch.push(b'\n');
            }
            stream
                .write_all(&batch)
                .map_err(|e| format!("send {s}: {e}"))
        }));
    }
    let mut failures = Vec::new();
    for handle in writers.into_iter().chain(readers) {
        if let Err(e) = handle.join().expect("thread") {
            failures.push(e);
        }
    }
    let rss = max_rss.load(Ordering::Relaxed).max(server.rss_kib());
    assert!(
        failures.is_empty(),
        "{failures:#?}\n(peak server RSS {rss} KiB)"
    );
    assert!(rss < RSS_LIMIT_KIB, "server RSS reached {rss} KiB");

    // The never-reader's connection was closed (reset) by the server.
    let deadline = Instant::now() + LIMIT;
    let mut never = never;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match never.read(&mut buf) {
            Ok(0) => break,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the never-reader's connection is still open")
            }
            Err(_) => break, // reset
            Ok(_) => assert!(Instant::now() < deadline, "never-reader still open"),
        }
    }
    eprintln!(
        "slow reader: 50 MiB through the room in {:?}, peak server RSS {rss} KiB",
        started.elapsed()
    );
}

#[test]
fn a_thousand_clients_each_get_every_message_exactly_once_in_order() {
    const CLIENTS: usize = 1000;
    let soft = rlimit::increase_nofile_limit(u64::MAX).expect("raise RLIMIT_NOFILE");
    assert!(
        soft >= 2 * CLIENTS as u64 + 100,
        "RLIMIT_NOFILE is only {soft}"
    );
    let server = serve(&[]);
    let addr = server.addr;
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (one_by_one, summed) = runtime
        .block_on(thousand_clients(addr, CLIENTS))
        .unwrap_or_else(|e| panic!("{e}"));
    // Joins are told one by one while the room has at most 100 members
    // (guest2 to guest100), then summed up once a second.
    assert_eq!((one_by_one, summed), (99, 900));
    eprintln!("1000 clients: {:?}", started.elapsed());
    // Still serving.
    let mut a = Raw::join(&server);
    a.send("/who\n");
    a.expect("the answer to /who", |l| l.contains(" online in #lobby: "));
}

/// Connects `clients` clients; the first 5 send 20 messages each; every
/// other client must get each exactly once, in order per sender. Returns
/// how many joins the first client was told one by one, and how many in
/// summaries.
async fn thousand_clients(
    addr: std::net::SocketAddr,
    clients: usize,
) -> Result<(usize, usize), String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::time::timeout_at;
    const SENDERS: usize = 5;
    const MESSAGES: usize = 20;
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    let mut nicks = Vec::new();
    for i in 0..clients {
        let stream = timeout_at(deadline, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting client {i} timed out"))?
            .map_err(|e| format!("connect client {i}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (r, w) = stream.into_split();
        let mut r = BufReader::new(r);
        let mut line = String::new();
        timeout_at(deadline, r.read_line(&mut line))
            .await
            .map_err(|_| format!("no welcome for client {i}"))?
            .map_err(|e| format!("client {i}: {e}"))?;
        let nick = welcome_nick(line.trim_end_matches('\n'))
            .ok_or_else(|| format!("client {i}: not a welcome: {line:?}"))?;
        readers.push(r);
        writers.push(w);
        nicks.push(nick);
    }
    let fencer = clients - 1;
    let fence = format!("[{}] end", nicks[fencer]);
    let who = format!("* {clients} online in #lobby: ");
    let senders: Arc<Vec<String>> = Arc::new(nicks[..SENDERS].to_vec());
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let mut ready_tx = Some(ready_tx);
    let mut tasks = Vec::new();
    for (i, mut r) in readers.into_iter().enumerate() {
        let (fence, who, senders) = (fence.clone(), who.clone(), senders.clone());
        let mut ready = if i == fencer { ready_tx.take() } else { None };
        tasks.push(tokio::spawn(async move {
            let want = MESSAGES * if i < SENDERS { SENDERS - 1 } else { SENDERS };
            let mut got = [0usize; SENDERS];
            let (mut total, mut notices, mut summed) = (0, 0, 0);
            let mut line = String::new();
            loop {
                line.clear();
                let n = timeout_at(deadline, r.read_line(&mut line))
                    .await
                    .map_err(|_| format!("client {i} timed out with {got:?}"))?
                    .map_err(|e| format!("client {i}: {e}"))?;
                let text = line
                    .strip_suffix('\n')
                    .filter(|_| n > 0)
                    .ok_or_else(|| format!("client {i}: end of stream after {got:?}"))?;
                if text == fence || (i == fencer && text.starts_with(&who)) {
                    break;
                }
                if text.starts_with("* ") {
                    match summed_joins(text) {
                        Some(n) => summed += n,
                        None => notices += 1,
                    }
                    continue;
                }
                let (nick, body) = text
                    .strip_prefix('[')
                    .and_then(|t| t.split_once("] "))
                    .ok_or_else(|| format!("client {i}: unexpected {text:?}"))?;
                let s = senders
                    .iter()
                    .position(|n| n == nick)
                    .filter(|&s| s != i)
                    .ok_or_else(|| format!("client {i}: unexpected {text:?}"))?;
                if body != format!("s{s} {}", got[s]) {
                    return Err(format!(
                        "client {i}: expected message {} of sender {s}, got {text:?}",
                        got[s]
                    ));
                }
                got[s] += 1;
                total += 1;
                if total == want
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(());
                }
            }
            if total != want {
                return Err(format!(
                    "client {i} got {total} of {want} messages: {got:?}"
                ));
            }
            // The first client goes on until the summaries of the joins
            // (one line a second) have added up.
            while i == 0 && notices + summed < clients - 1 {
                line.clear();
                timeout_at(deadline, r.read_line(&mut line))
                    .await
                    .map_err(|_| format!("joins summed up to {summed} only"))?
                    .map_err(|e| format!("client {i}: {e}"))?;
                match summed_joins(line.trim_end()) {
                    Some(n) => summed += n,
                    None => return Err(format!("client {i}: unexpected {line:?}")),
                }
            }
            Ok::<(usize, usize), String>((notices, summed))
        }));
    }
    let mut sending = Vec::new();
    for (s, mut w) in writers.drain(..SENDERS).enumerate() {
        sending.push(tokio::spawn(async move {
            for m in 0..MESSAGES {
                w.write_all(format!("s{s} {m}\n").as_bytes()).await?;
            }
            Ok::<_, std::io::Error>(w)
        }));
    }
    let mut kept = Vec::new();
    for task in sending {
        kept.push(
            task.await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("send: {e}"))?,
        );
    }
    // The last client has everything: its `end` fences all the others,
    // and its own /who fences itself.
    if !matches!(timeout_at(deadline, ready_rx).await, Ok(Ok(()))) {
        // Show why the last client did not get everything.
        let last = tasks.pop().expect("clients");
        last.abort();
        return Err(match last.await {
            Ok(Err(e)) => e,
            _ => "the last client did not get every message in time".to_string(),
        });
    }
    let last = writers.last_mut().expect("clients");
    last.write_all(b"end\n/who\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut failures = Vec::new();
    let mut first_notices = (0, 0);
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.map_err(|e| e.to_string())? {
            Ok(counts) if i == 0 => first_notices = counts,
            Ok(_) => {}
            Err(e) => failures.push(e),
        }
    }
    drop(kept);
    if failures.is_empty() {
        Ok(first_notices)
    } else {
        Err(format!(
            "{} clients failed, e.g. {:#?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        ))
    }
}

/// Sends `/join ROOM` and waits for the answer.
#[track_caller]
fn join_room(raw: &mut Raw, room: &str, online: usize) {
    raw.send(&format!("/join {room}\n"));
    raw.expect_eq(&format!(
        "* you are in {room} now ({online} online; /who lists them)"
    ));
}

#[test]
fn rooms_keep_their_talk_apart_and_the_seed_client_stays_in_the_lobby() {
    let server = serve(&[]);
    let mut seed = seed_client(&server, None);
    let mut a = Raw::join(&server);
    let mut b = Raw::join(&server);
    let (sn, an) = (seed.nick.clone(), a.nick.clone());
    seed.expect_shown(&format!("* {} joined (2 online)", a.nick));
    seed.expect_shown(&format!("* {} joined (3 online)", b.nick));
    a.expect_eq(&format!("* {} joined (3 online)", b.nick));
    join_room(&mut a, "#한국어", 1);
    seed.expect_shown(&format!("* {} went to #한국어 (2 online)", a.nick));
    b.expect_eq(&format!("* {} went to #한국어 (2 online)", a.nick));
    join_room(&mut b, "#한국어", 2);
    a.expect_eq(&format!("* {} joined (2 online)", b.nick));
    // Talk in the room stays there...
    a.send("안녕\n");
    b.expect_eq(&format!("[{}] 안녕", a.nick));
    // ...and the lobby's stays in the lobby: the seed client is alone
    // there now, and /who says so.
    seed.line("/who");
    seed.expect_shown(&format!("* 1 online in #lobby: {sn}"));
    b.send("/who\n");
    let mut both = [a.nick.clone(), b.nick.clone()];
    both.sort();
    b.expect_eq(&format!("* 2 online in #한국어: {}", both.join(", ")));
    b.send("/rooms\n");
    b.expect_eq("* 2 rooms: #lobby (1), #한국어 (2)");
    // /msg reaches any room, both ways.
    seed.line(&format!("/msg {} psst", a.nick));
    a.expect_eq(&format!("[{sn} -> {an}] psst"));
    a.send(&format!("/msg {} hello lobby\n", seed.nick));
    seed.expect_shown(&format!("[{an} -> {sn}] hello lobby"));
    // Nothing from the room reached the lobby, nor the lobby the room.
    b.send("/join #lobby\n");
    b.expect_eq("* you are in #lobby now (2 online; /who lists them)");
    let seen = seed.until("b back in the lobby", |l| {
        seed_got(l, &format!("* {} joined (2 online)", b.nick))
    });
    assert!(seen.0.iter().all(|l| !l.contains("안녕")), "{:?}", seen.0);
    a.expect_eq(&format!("* {} went to #lobby (1 online)", b.nick));
}

#[test]
fn bad_room_names_are_refused_and_joining_twice_is_said() {
    let server = serve(&[]);
    let mut a = Raw::join(&server);
    for bad in ["#", "#a b", "##x", "#[x]", &format!("#{}", "r".repeat(33))] {
        a.send(&format!("/join {bad}\n"));
        a.expect_eq("* error: invalid room name (# and 1-32 letters, digits, _ or -)");
    }
    a.send("/join\n");
    a.expect_eq("* error: usage: /join #ROOM");
    a.send("/join #LOBBY\n");
    a.expect_eq("* you are in #lobby already");
    // Without the `#` it is the same room name.
    join_room(&mut a, "#dev", 1);
    a.send("/join dev\n");
    a.expect_eq("* you are in #dev already");
    a.send("/history many\n");
    a.expect_eq("* error: usage: /history [LINES]");
}

#[test]
fn history_and_replay_show_a_rooms_last_lines_with_their_times() {
    let server = serve(&["--history", "3", "--replay", "2"]);
    let mut a = Raw::join(&server);
    // A seed client's first message (and name) lands in the history too.
    let mut seed = seed_client(&server, Some("syjung"));
    a.until("the seed's join", |l| l.ends_with("joined (2 online)"));
    seed.line("first");
    a.until_eq("[syjung] first");
    for n in 2..=4 {
        a.send(&format!("line {n}\n"));
        seed.expect_shown(&format!("[{}] line {n}", a.nick));
    }
    // /history is capped by --history (3 lines kept).
    a.send("/history 10\n");
    a.expect_eq("* history of #lobby: 3 lines");
    let stamp = |l: &str, want: &str| {
        // `[HH:MM:SS] ` then the line.
        l.len() == 11 + want.len() && l.starts_with('[') && &l[9..11] == "] " && l.ends_with(want)
    };
    for n in 2..=4 {
        let want = format!("[{}] line {n}", a.nick);
        a.expect(&want, |l| stamp(l, &want));
    }
    a.expect_eq("* end of history");
    // A newcomer gets the last two, right after its welcome.
    let mut c = Raw::join(&server);
    c.expect_eq("* history of #lobby: 2 lines");
    for n in 3..=4 {
        let want = format!("[{}] line {n}", a.nick);
        c.expect(&want, |l| stamp(l, &want));
    }
    c.expect_eq("* end of history");
    // A room of its own has none to replay, and says so when asked.
    join_room(&mut c, "#quiet", 1);
    c.send("/history\n");
    c.expect_eq("* history of #quiet: 0 lines");
    c.expect_eq("* end of history");
}

// ---- several servers on one Redis (`--redis`) -----------------------------

fn serve_on(redis: &common::redis::RedisServer) -> Server {
    serve(&["--redis", &redis.url()])
}

/// Renames `raw` and waits until its server says so.
#[track_caller]
fn rename(raw: &mut Raw, nick: &str) {
    raw.send(&format!("/nick {nick}\n"));
    let said = format!("* {} is now {nick}", raw.nick);
    raw.expect_eq(&said);
    raw.nick = nick.to_string();
}

#[test]
fn two_servers_on_one_redis_share_their_rooms_in_order() {
    let redis = common::redis::RedisServer::start();
    let (one, two) = (serve_on(&redis), serve_on(&redis));
    let mut seed = seed_client(&one, None);
    let mut a = Raw::join(&one);
    let mut b = Raw::join(&two);
    rename(&mut a, "alice");
    rename(&mut b, "bob");
    // Every line bob writes on server two reaches server one's members,
    // the seed's client included, in the order he wrote them.
    let sent: Vec<String> = (0..30).map(|i| format!("[bob] line {i} 한국어")).collect();
    for i in 0..30 {
        b.send(&format!("line {i} 한국어\n"));
    }
    let (before, last) = a.until("bob's last line", |l| l == sent[29]);
    let mut got: Vec<String> = before
        .into_iter()
        .filter(|l| l.starts_with("[bob]"))
        .collect();
    got.push(last);
    assert_eq!(got, sent, "{}", a.context());
    seed.expect_shown(&sent[0]);
    seed.expect_shown(&sent[29]);
    // And back: the seed's client on one reaches bob on two.
    seed.line("hello over redis");
    b.expect_eq(&format!("[{}] hello over redis", seed.nick));
    // A room made on both servers is shared too, and stays apart; the
    // counts people see cover both servers (each waits for the other's
    // move to be known before its own, so the counts are exact).
    join_room(&mut a, "#dev", 1);
    b.until("alice's move, on server two", |l| {
        l == "* alice went to #dev (2 online)"
    });
    join_room(&mut b, "#dev", 2);
    a.expect_eq("* bob joined (2 online)");
    a.send("in dev\n");
    b.expect_eq("[alice] in dev");
    seed.line("fence");
    join_room(&mut a, "#lobby", 2);
    b.expect_eq("* alice went to #lobby (1 online)");
    join_room(&mut b, "#lobby", 3);
    b.send("back\n");
    let (seen, _) = seed.until("bob back in the lobby", |l| seed_got(l, "[bob] back"));
    assert!(seen.iter().all(|l| !l.contains("in dev")), "{seen:?}");
    // One XADD per batch of lines, never one per member.
    let stats = redis.cli(&["info", "commandstats"]);
    let xadds: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_xadd:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no XADD in {stats}"));
    assert!((3..=33).contains(&xadds), "{xadds} XADDs\n{stats}");
}

#[test]
fn an_unreachable_redis_stops_the_server_at_start() {
    let port = closed_port();
    let url = format!("redis://127.0.0.1:{port}");
    let out = sockit(&[
        "chat",
        "serve",
        "-b",
        "127.0.0.1",
        "-p",
        "0",
        "--redis",
        &url,
    ]);
    let err = assert_error(&out, 1, "sockit: error: cannot reach redis at 127.0.0.1:");
    assert_eq!(
        err.trim_end(),
        format!("sockit: error: cannot reach redis at 127.0.0.1:{port} (connection refused)")
    );
    assert!(!stdout(&out).contains("listening"), "{}", stdout(&out));
    let out = sockit(&["chat", "serve", "-p", "0", "--redis", "http://x"]);
    assert_error(&out, 1, "sockit: error: invalid redis URL 'http://x'");
}

#[test]
fn redis_going_away_is_said_once_and_nothing_is_lost_or_doubled_after() {
    let mut redis = common::redis::RedisServer::start();
    let (one, two) = (serve_on(&redis), serve_on(&redis));
    let mut a = Raw::join(&one);
    let mut a2 = Raw::join(&one);
    let mut b = Raw::join(&two);
    rename(&mut a, "ann");
    rename(&mut b, "ben");
    a.send("first\n");
    b.expect_eq("[ann] first");
    redis.stop();
    const LOST: &str = "* link to other servers lost";
    const BACK: &str = "* link restored";
    for raw in [&mut a, &mut a2, &mut b] {
        raw.expect_eq(LOST);
    }
    // Each server goes on serving its own members meanwhile.
    a.send("during\n");
    a2.expect_eq("[ann] during");
    b.send("ben during\n");
    redis.restart();
    // Back: said once, then what was said meanwhile crosses over.
    let (gap, _) = b.until(BACK, |l| l == BACK);
    assert!(!gap.iter().any(|l| l == LOST), "{gap:?}");
    b.expect_eq("[ann] during");
    let (gap, _) = a.until(BACK, |l| l == BACK);
    assert!(!gap.iter().any(|l| l == LOST), "{gap:?}");
    a.expect_eq("[ben] ben during");
    a.send("after\n");
    let (between, _) = b.until("ann's after", |l| l == "[ann] after");
    assert!(
        !between
            .iter()
            .any(|l| l == "[ann] during" || l == BACK || l == LOST),
        "{between:?}"
    );
    a2.expect_eq("[ben] ben during");
    a2.expect_eq("[ann] after");
}

#[test]
fn foreign_entries_in_the_streams_are_skipped_and_the_room_goes_on() {
    let redis = common::redis::RedisServer::start();
    let one = serve_on(&redis);
    let mut a = Raw::join(&one);
    // Entries no sockit server wrote: no fields we know, no newline,
    // invalid UTF-8 with its newline (relayed as the bytes they are).
    for fields in [
        &["x", "y"][..],
        &["o", "someone", "b", "no newline"][..],
        &["o", "someone", "b", ""][..],
    ] {
        let mut args = vec!["XADD", "sockit:room:#lobby", "*"];
        args.extend_from_slice(fields);
        let id = redis.cli(&args);
        assert!(id.contains('-'), "XADD answered {id:?}");
    }
    // And presence events no server wrote: unknown kinds, a nick with a
    // space, a /msg without its newline (for a's nick, on a's server).
    for fields in [
        &["o", "someone", "k", "zz"][..],
        &["o", "someone", "k", "j", "n", "a b", "r", "#lobby"][..],
        &[
            "o",
            "someone",
            "k",
            "p",
            "n",
            a.nick.as_str(),
            "b",
            "no newline",
        ][..],
        &["x", "y"][..],
    ] {
        let mut args = vec!["XADD", "sockit:events", "*"];
        args.extend_from_slice(fields);
        let id = redis.cli(&args);
        assert!(id.contains('-'), "XADD answered {id:?}");
    }
    let two = serve_on(&redis);
    let b = Raw::join(&two);
    b.send("after the garbage\n");
    let (before, line) = a.until("the line after", |l| l.ends_with("after the garbage"));
    assert_eq!(line, format!("[{}] after the garbage", b.nick));
    assert!(
        before
            .iter()
            .all(|l| !l.contains("no newline") && !l.contains("a b")),
        "{before:?}"
    );
}

#[test]
fn a_member_that_stops_reading_on_one_server_never_holds_up_another() {
    let redis = common::redis::RedisServer::start();
    let url = redis.url();
    let one = serve(&["--redis", &url, "--flood", "0"]);
    let two = serve(&["--redis", &url, "--stall-timeout", "1"]);
    let mut reader = Raw::join(&one);
    let sender = Raw::join(&one);
    // On server two: one member that never reads past its welcome, and
    // one that reads.
    let (_stalled, _) = chat_join_raw(two.addr);
    let mut witness = Raw::join(&two);
    // 4 MB: four times the room window, if the kernel does not take it.
    let text = "x".repeat(2000);
    let last = format!("[{}] 1999 {text}", sender.nick);
    for i in 0..2000 {
        sender.send(&format!("{i} {text}\n"));
    }
    let started = Instant::now();
    let (before, _) = reader.until("the last line on server one", |l| l == last);
    let got = before.iter().filter(|l| l.ends_with(&text)).count() + 1;
    assert_eq!(got, 2000, "{}", reader.context());
    // Server two went on too: its reading member got every line. (Its
    // stalled member may still fit it all in its kernel buffers, or have
    // been cut off; either way it held nobody up. Cutting off is the
    // single-server tests' business.)
    let (seen, _) = witness.until("the last line on server two", |l| l == last);
    assert_eq!(
        seen.iter().filter(|l| l.ends_with(&text)).count(),
        1999,
        "{}",
        witness.context()
    );
    eprintln!(
        "server one's reader had every line {:?} after the last was sent",
        started.elapsed()
    );
}

/// Sends `/who` until the answer is `want` (another server's changes
/// reach this one's view asynchronously); bounded in count and time.
#[track_caller]
fn who_becomes(raw: &mut Raw, want: &str) {
    let mut last = String::new();
    for _ in 0..50 {
        raw.send("/who\n");
        last = raw.expect("the /who answer", |l| l.contains(" online in #"));
        if last == want {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("/who never said {want:?}; last {last:?}\n{}", raw.context());
}

#[test]
fn nicks_and_presence_span_the_servers() {
    let redis = common::redis::RedisServer::start();
    let (one, two) = (serve_on(&redis), serve_on(&redis));
    let mut a = Raw::join(&one);
    let mut b = Raw::join(&two);
    // Guest numbers come from blocks that no two servers share.
    assert_ne!(a.nick, b.nick);
    let (a_guest, b_guest) = (a.nick.clone(), b.nick.clone());
    rename(&mut a, "alice");
    // A rename on one server is seen on the other, and the nick is
    // refused there, in any case.
    b.expect_eq(&format!("* {a_guest} is now alice"));
    b.send("/nick ALICE\n");
    b.expect_eq("* error: nick ALICE is taken");
    rename(&mut b, "bob");
    a.expect_eq(&format!("* {b_guest} is now bob"));
    a.send("/who\n");
    a.expect_eq("* 2 online in #lobby: alice, bob");
    // Rooms and their counts cover both servers.
    join_room(&mut b, "#dev", 1);
    a.expect_eq("* bob went to #dev (1 online)");
    a.send("/rooms\n");
    a.expect_eq("* 2 rooms: #dev (1), #lobby (1)");
    // /msg crosses servers, both ways, into any room.
    a.send("/msg BOB psst\n");
    a.expect_eq("[alice -> bob] psst");
    b.expect_eq("[alice -> bob] psst");
    b.send("/msg alice back\n");
    a.expect_eq("[bob -> alice] back");
    a.send("/msg nobody x\n");
    a.expect_eq("* error: no such nick: nobody");
    // Joins and leaves on one server are said on the other.
    let mut seed = seed_client(&two, Some("sam"));
    let (_, joined) = a.until("the seed's join", |l| l.ends_with(" joined (2 online)"));
    let guest = joined
        .strip_prefix("* ")
        .and_then(|l| l.strip_suffix(" joined (2 online)"))
        .unwrap_or_default();
    seed.line("hi from the seed");
    a.expect_eq(&format!("* {guest} is now sam"));
    a.expect_eq("[sam] hi from the seed");
    drop(seed);
    a.expect_eq("* sam left (1 online)");
}

#[test]
fn a_stopped_or_killed_servers_members_are_gone_and_their_nicks_free() {
    let redis = common::redis::RedisServer::start();
    let (mut one, two, three) = (serve_on(&redis), serve_on(&redis), serve_on(&redis));
    let mut a = Raw::join(&one);
    let mut c = Raw::join(&three);
    let mut b = Raw::join(&two);
    let (a_guest, c_guest) = (a.nick.clone(), c.nick.clone());
    rename(&mut a, "alice");
    rename(&mut c, "carol");
    let renames = [
        format!("* {a_guest} is now alice"),
        format!("* {c_guest} is now carol"),
    ];
    let mut seen = 0;
    while seen < 2 {
        b.until("the renames on the other servers", |l| {
            renames.iter().any(|r| r == l)
        });
        seen += 1;
    }
    b.send("/nick alice\n");
    b.expect_eq("* error: nick alice is taken");
    // A server that stops says goodbye: its members are gone at once.
    let (status, _, _) = three.terminate();
    assert!(status.success(), "{status:?}");
    let (_, gone) = b.until("carol's server going", |l| {
        l.contains("left with their server")
    });
    assert_eq!(gone, "* 1 member left with their server (2 online)");
    rename(&mut b, "carol");
    // A server killed outright says nothing: its nicks are free once it
    // has missed its heartbeats, within 30 s.
    one.child.kill().expect("kill -9 server one");
    let killed = Instant::now();
    let (_, gone) = b.until("alice's server missing", |l| {
        l.contains("left with their server")
    });
    let took = killed.elapsed();
    assert_eq!(gone, "* 1 member left with their server (1 online)");
    assert!(took < Duration::from_secs(30), "{took:?}");
    rename(&mut b, "alice");
    eprintln!("a killed server's nick was free again {took:?} after kill -9");
}

#[test]
fn redis_coming_back_empty_is_said_and_nicks_and_presence_are_rebuilt() {
    let redis = common::redis::RedisServer::start();
    let (one, two) = (serve_on(&redis), serve_on(&redis));
    let mut a = Raw::join(&one);
    let mut b = Raw::join(&two);
    let a_guest = a.nick.clone();
    rename(&mut a, "alice");
    b.expect_eq(&format!("* {a_guest} is now alice"));
    rename(&mut b, "bob");
    let flushed = redis.cli(&["FLUSHALL"]);
    assert_eq!(flushed.trim(), "OK");
    const RESET: &str =
        "* redis lost its state (restarted empty?): nicks and presence are being rebuilt";
    a.expect_eq(RESET);
    b.expect_eq(RESET);
    // Both servers claimed their nicks again and read each other's
    // members afresh: the same answers as before the flush.
    who_becomes(&mut a, "* 2 online in #lobby: alice, bob");
    who_becomes(&mut b, "* 2 online in #lobby: alice, bob");
    let mut c = Raw::join(&two);
    c.send("/nick alice\n");
    c.expect_eq("* error: nick alice is taken");
    a.send("still here\n");
    b.expect_eq("[alice] still here");
}

#[test]
fn a_nick_taken_on_two_servers_during_an_outage_stays_with_one() {
    let mut redis = common::redis::RedisServer::start();
    let (one, two) = (serve_on(&redis), serve_on(&redis));
    let mut a = Raw::join(&one);
    let mut b = Raw::join(&two);
    redis.stop();
    const LOST: &str = "* link to other servers lost";
    a.expect_eq(LOST);
    b.expect_eq(LOST);
    // Neither server can ask the other: both give out the nick.
    rename(&mut a, "dana");
    rename(&mut b, "dana");
    redis.restart();
    // Back, the claims in Redis decide: exactly one keeps it, the other
    // is told and given another nick (seen on both servers).
    let deadline = Instant::now() + Duration::from_secs(30);
    let lost = |l: &str| l.starts_with("* error: nick dana is taken on another server; you are ");
    let (loser, winner) = loop {
        assert!(
            Instant::now() < deadline,
            "nobody lost dana\n{}\n{}",
            a.context(),
            b.context()
        );
        let step = Instant::now() + Duration::from_millis(50);
        if let Ok(Some(line)) = a.feed.line_by(step)
            && lost(&line)
        {
            break (a, b);
        }
        if let Ok(Some(line)) = b.feed.line_by(step)
            && lost(&line)
        {
            break (b, a);
        }
    };
    let told = loser.feed.seen.last().cloned().unwrap_or_default();
    let now = told.rsplit(' ').next().unwrap_or_default().to_string();
    assert!(now.starts_with("guest"), "{told}");
    let mut winner = winner;
    who_becomes(&mut winner, &format!("* 2 online in #lobby: dana, {now}"));
    assert!(
        !winner.feed.seen.iter().any(|l| lost(l)),
        "both lost it\n{}",
        winner.context()
    );
}

#[test]
fn history_covers_what_was_said_before_a_server_had_the_room() {
    let redis = common::redis::RedisServer::start();
    let (one, two) = (serve_on(&redis), serve_on(&redis));
    let mut a = Raw::join(&one);
    rename(&mut a, "alice");
    join_room(&mut a, "#old", 1);
    a.send("early one\n");
    a.send("early two\n");
    // Server two has nobody in #old until b joins.
    let mut b = Raw::join(&two);
    b.send("/join #old\n");
    b.expect("b in #old", |l| l.starts_with("* you are in #old now"));
    a.send("now\n");
    b.expect_eq("[alice] now");
    b.send("/history\n");
    b.expect_eq("* history of #old: 3 lines");
    for text in ["early one", "early two", "now"] {
        let line = b.expect("a line of history", |_| true);
        assert!(
            line.starts_with('[') && line.ends_with(&format!("] [alice] {text}")),
            "{line:?}\n{}",
            b.context()
        );
    }
    b.expect_eq("* end of history");
}

#[test]
fn servers_share_a_redis_over_its_unix_socket() {
    let redis = common::redis::RedisServer::start_unix();
    let url = redis.unix_url();
    let (one, two) = (serve(&["--redis", &url]), serve(&["--redis", &url]));
    let a = Raw::join(&one);
    let mut b = Raw::join(&two);
    a.send("over the socket\n");
    b.until("a's line on server two", |l| {
        l == format!("[{}] over the socket", a.nick)
    });
}
