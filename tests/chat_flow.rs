//! `sockit chat serve`'s flow control (issue 13): a flooding sender is
//! slowed down, never the reason another member loses a line; a member that
//! does not read is cut off after `--stall-timeout`; one flooder does not
//! starve the other senders; memory stays bounded throughout.
//!
//! Kept apart from `tests/chat.rs` (the protocol contract) because these
//! tests are load tests: each pushes megabytes through a real server, with
//! Python and Rust readers on real sockets. Every flooding line is
//! `mNNNNNN ` and padding, so each reader can check that it got every line
//! of every sender, in order.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// The memory bound the issue sets for the server, in KiB.
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// `sockit chat serve -b 127.0.0.1 -p 0 EXTRA...`.
fn serve(extra: &[&str]) -> Server {
    let mut args = vec!["chat", "serve", "-b", "127.0.0.1", "-p", "0"];
    args.extend_from_slice(extra);
    Server::sockit(&args)
}

/// When the test process started: lines carry nanoseconds since then.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn join(server: &Server) -> (TcpStream, String) {
    chat_join_raw(server.addr)
}

/// Line `seq` of a flood: `mNNNNNN yyyy...\n`, `size` bytes in all.
fn push_flood_line(out: &mut Vec<u8>, seq: usize, size: usize) {
    let start = out.len();
    write!(out, "m{seq:06} ").expect("write to a Vec");
    out.resize(start + size - 1, b'y');
    out.push(b'\n');
}

/// Sends `count` flood lines of `size` bytes as fast as the server takes
/// them (or fewer, once `stop` is set), then `end`; returns how many.
/// The caller keeps the stream open until `end` has arrived: a socket
/// closed with unread input (the notices a sender gets) is reset, and the
/// reset discards what the server had not read yet.
fn flood(mut stream: &TcpStream, count: usize, size: usize, stop: &AtomicBool) -> usize {
    let mut batch = Vec::with_capacity(64 * size);
    let mut sent = 0;
    while sent < count && !stop.load(Ordering::Relaxed) {
        batch.clear();
        for seq in sent..(sent + 64).min(count) {
            push_flood_line(&mut batch, seq, size);
        }
        stream.write_all(&batch).expect("send a flood");
        sent = (sent + 64).min(count);
    }
    stream.write_all(b"end\n").expect("send end");
    sent
}

/// What one reader saw.
#[derive(Debug, Default)]
struct Seen {
    /// Flood lines per sender, all in order.
    lines: HashMap<String, usize>,
    /// Notices, with when they arrived.
    notices: Vec<(Instant, String)>,
    /// Latencies of the `tNNNNNN NANOS` lines.
    latencies: Vec<Duration>,
}

/// Reads until `ends` senders said `end`, checking that each sender's
/// flood lines come whole and in order; notices and `t` lines are noted.
fn read_room(stream: TcpStream, ends: usize, who: &str) -> Result<Seen, String> {
    read_room_until(stream, ends, who, None)
}

/// [`read_room`], which also sets `flag` once it sees the notice `text`.
fn read_room_until(
    stream: TcpStream,
    ends: usize,
    who: &str,
    signal: Option<(&str, &AtomicBool)>,
) -> Result<Seen, String> {
    let mut reader = BufReader::with_capacity(32 << 10, stream);
    let mut seen = Seen::default();
    let mut ended = 0;
    let mut line = Vec::with_capacity(4096);
    while ended < ends {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("{who}: {e} after {:?}", seen.lines))?;
        if n == 0 || line[n - 1] != b'\n' {
            return Err(format!("{who}: end of stream after {:?}", seen.lines));
        }
        let text = std::str::from_utf8(&line[..n - 1])
            .map_err(|_| format!("{who}: a line that is not UTF-8"))?;
        if text.starts_with("* ") {
            if let Some((wanted, flag)) = signal
                && text == wanted
            {
                flag.store(true, Ordering::Relaxed);
            }
            seen.notices.push((Instant::now(), text.to_string()));
            continue;
        }
        let (nick, body) = text
            .strip_prefix('[')
            .and_then(|t| t.split_once("] "))
            .ok_or_else(|| format!("{who}: unexpected {text:.80?}"))?;
        if body == "end" {
            ended += 1;
        } else if let Some(rest) = body.strip_prefix('m') {
            let count = seen.lines.entry(nick.to_string()).or_default();
            let number: usize = rest
                .get(..6)
                .and_then(|n| n.parse().ok())
                .unwrap_or(usize::MAX);
            if number != *count {
                return Err(format!(
                    "{who}: line {number} of {nick} where {count} was due ({} bytes)",
                    text.len()
                ));
            }
            *count += 1;
        } else if let Some(rest) = body.strip_prefix('t') {
            let sent: u64 = rest
                .split(' ')
                .nth(1)
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("{who}: bad timed line {text:.80?}"))?;
            let now = epoch().elapsed().as_nanos() as u64;
            seen.latencies
                .push(Duration::from_nanos(now.saturating_sub(sent)));
        } else {
            return Err(format!("{who}: unexpected {text:.80?}"));
        }
    }
    Ok(seen)
}

/// Samples the server's resident memory until dropped; `peak` has the
/// largest figure seen.
struct RssWatch {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let deadline = Instant::now() + 4 * LIMIT;
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                p.fetch_max(rss_kib_of(pid), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(20));
            }
        });
        RssWatch {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the peak in KiB.
    fn peak(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// Waits until the server has closed (or reset) `stream`, reading and
/// discarding what is left; panics if it is still open after LIMIT.
fn assert_closed_by_server(mut stream: TcpStream, who: &str) {
    let deadline = Instant::now() + LIMIT;
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                assert!(
                    Instant::now() < deadline,
                    "{who}'s connection is still open"
                );
            }
            Err(_) => return, // reset
            Ok(_) => assert!(
                Instant::now() < deadline,
                "{who}'s connection is still open"
            ),
        }
    }
}

/// `python3 tests/peers/chat_reader.py HOST PORT COUNT [TRICKLE]`, once it
/// said `ready NICK`: the process, its nick and its stdout lines.
fn python_reader(
    server: &Server,
    count: usize,
    trickle: Option<usize>,
) -> (std::process::Child, String, mpsc::Receiver<String>) {
    let mut cmd = Command::new("python3");
    cmd.arg("-u")
        .arg(peer_script("chat_reader.py"))
        .arg(server.addr.ip().to_string())
        .arg(server.port_arg())
        .arg(count.to_string());
    if let Some(per_s) = trickle {
        cmd.arg(per_s.to_string());
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let lines = line_channel(child.stdout.take().expect("stdout"));
    let ready = lines.recv_timeout(LIMIT).expect("the Python reader joined");
    let nick = ready
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("the Python reader said {ready:?}"))
        .to_string();
    (child, nick, lines)
}

/// The Python reader's lines up to its last one (bounded).
fn python_output(lines: &mpsc::Receiver<String>) -> Vec<String> {
    let deadline = Instant::now() + LIMIT;
    let mut out = Vec::new();
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        out.push(line);
    }
    out
}

fn cut_off(nick: &str) -> String {
    format!("* {nick} was cut off (not reading)")
}

#[test]
fn a_flood_reaches_a_python_reader_whole_and_the_one_that_never_reads_is_cut_off() {
    const LINES: usize = 20_000;
    let server = serve(&["--flood", "0", "--stall-timeout", "2"]);
    let rss = RssWatch::start(server.child.id());
    let (never, never_nick) = join(&server);
    let (mut python, _, output) = python_reader(&server, LINES, None);
    let (sender, _) = join(&server);
    let stop = AtomicBool::new(false);
    assert_eq!(flood(&sender, LINES, 1000, &stop), LINES);
    let out = python_output(&output);
    let status = wait_bounded(&mut python, LIMIT);
    assert!(
        status.success()
            && out
                .last()
                .is_some_and(|l| l == &format!("got {LINES} in order")),
        "the Python reader said {out:?}"
    );
    let notice = format!("notice {}", cut_off(&never_nick));
    assert!(out.contains(&notice), "no {notice:?} in {out:?}");
    assert_closed_by_server(never, "the never-reader");
    let peak = rss.peak();
    assert!(peak < RSS_LIMIT_KIB, "server RSS reached {peak} KiB");
    eprintln!("peak server RSS {peak} KiB");
}

#[test]
fn ten_flooders_and_a_thousand_readers_lose_nothing() {
    const FLOODERS: usize = 10;
    const READERS: usize = 1000;
    // 1.2 MB through the room: more than its window.
    const LINES: usize = 600;
    const SIZE: usize = 200;
    let started = Instant::now();
    rlimit::increase_nofile_limit(u64::MAX).expect("raise RLIMIT_NOFILE");
    let server = serve(&["--flood", "0"]);
    let rss = RssWatch::start(server.child.id());
    let mut readers = Vec::new();
    for r in 0..READERS {
        let (stream, _) = join(&server);
        readers.push(thread::spawn(move || {
            read_room(stream, FLOODERS, &format!("reader {r}"))
        }));
    }
    let mut flooders = Vec::new();
    let mut nicks = Vec::new();
    let streams: Vec<(TcpStream, String)> = (0..FLOODERS).map(|_| join(&server)).collect();
    for (f, (stream, nick)) in streams.into_iter().enumerate() {
        nicks.push(nick);
        // A flooder reads the others' floods too.
        let reading = stream.try_clone().expect("clone");
        readers.push(thread::spawn(move || {
            read_room(reading, FLOODERS - 1, &format!("flooder {f}"))
        }));
        flooders.push(thread::spawn(move || {
            flood(&stream, LINES, SIZE, &AtomicBool::new(false))
        }));
    }
    for flooder in flooders {
        assert_eq!(flooder.join().expect("flooder"), LINES);
    }
    for (r, reader) in readers.into_iter().enumerate() {
        let seen = reader
            .join()
            .expect("reader")
            .unwrap_or_else(|e| panic!("{e}"));
        for (f, nick) in nicks.iter().enumerate() {
            let own = r >= READERS && r - READERS == f;
            let want = if own { 0 } else { LINES };
            assert_eq!(
                seen.lines.get(nick).copied().unwrap_or(0),
                want,
                "reader {r}, {nick}"
            );
        }
        assert!(
            !seen.notices.iter().any(|(_, n)| n.contains("cut off")),
            "reader {r} saw {:?}",
            seen.notices
        );
    }
    let peak = rss.peak();
    assert!(peak < RSS_LIMIT_KIB, "server RSS reached {peak} KiB");
    eprintln!(
        "{} MB delivered in {:?}, peak server RSS {peak} KiB",
        FLOODERS * LINES * SIZE * (READERS + FLOODERS - 1) / 1_000_000,
        started.elapsed()
    );
}

/// One sender floods (1,000-byte lines, at most 40 MB) until an honest
/// reader, which reads it all, sees `notice`; then the sender says `end`.
fn flood_until(server: &Server, notice: &str) -> FloodRun {
    let (reader, _) = join(server);
    let (sender, sender_nick) = join(server);
    let stop = Arc::new(AtomicBool::new(false));
    let reading = {
        let (stop, notice) = (stop.clone(), notice.to_string());
        thread::spawn(move || {
            read_room_until(reader, 1, "the honest reader", Some((&notice, &stop)))
        })
    };
    let started = Instant::now();
    let sent = flood(&sender, 40_000, 1000, &stop);
    let seen = reading
        .join()
        .expect("reader")
        .unwrap_or_else(|e| panic!("{e}"));
    drop(sender);
    let run = FloodRun { started, seen };
    assert_eq!(
        run.seen.lines.get(&sender_nick).copied(),
        Some(sent),
        "the honest reader lost lines"
    );
    run
}

struct FloodRun {
    started: Instant,
    seen: Seen,
}

impl FloodRun {
    /// When `notice` arrived, counted from the start of the flood.
    fn notice_after(&self, notice: &str) -> Duration {
        let (at, _) = self
            .seen
            .notices
            .iter()
            .find(|(_, n)| n == notice)
            .unwrap_or_else(|| panic!("no {notice:?} in {:?}", self.seen.notices));
        at.duration_since(self.started)
    }
}

#[test]
fn a_stalled_reader_is_cut_off_within_the_timeout_and_the_room_goes_on() {
    let server = serve(&["--flood", "0", "--stall-timeout", "2"]);
    let (stalled, stalled_nick) = join(&server);
    let notice = cut_off(&stalled_nick);
    let run = flood_until(&server, &notice);
    let after = run.notice_after(&notice);
    assert!(
        after >= Duration::from_secs(2) && after <= Duration::from_secs(3),
        "cut off {after:?} into the flood (timeout 2 s)"
    );
    assert_closed_by_server(stalled, "the stalled reader");
    eprintln!("cut off {after:?} into the flood");
}

#[test]
fn a_trickle_reader_is_cut_off_and_the_others_get_everything() {
    let server = serve(&["--flood", "0", "--stall-timeout", "2"]);
    let (mut python, trickle_nick, output) = python_reader(&server, 0, Some(1024));
    let notice = cut_off(&trickle_nick);
    let run = flood_until(&server, &notice);
    let after = run.notice_after(&notice);
    assert!(
        after <= Duration::from_secs(4),
        "the trickle reader was cut off only {after:?} into the flood"
    );
    // It was reading all along (what the kernel still holds for it, it
    // may read for minutes at this pace: it is not waited for).
    python.kill().expect("kill the trickle reader");
    wait_bounded(&mut python, LIMIT);
    let out = python_output(&output);
    assert!(
        out.iter().any(|l| l.starts_with("read ")),
        "the trickle reader said {out:?}"
    );
    eprintln!("trickle reader cut off {after:?} into the flood");
}

#[test]
fn a_second_sender_gets_through_a_flood_within_100_ms() {
    const READERS: usize = 10;
    const TIMED: usize = 100;
    let server = serve(&["--flood", "0"]);
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let (stream, _) = join(&server);
            thread::spawn(move || read_room(stream, 2, &format!("reader {r}")))
        })
        .collect();
    let (flooder, _) = join(&server);
    let (second, _) = join(&server);
    // Both read what the other says (neither is a staller).
    let flooder_reads = {
        let stream = flooder.try_clone().expect("clone");
        thread::spawn(move || read_room(stream, 1, "the flooder"))
    };
    let second_reads = {
        let stream = second.try_clone().expect("clone");
        thread::spawn(move || read_room(stream, 1, "the second sender"))
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = {
        let stop = stop.clone();
        thread::spawn(move || {
            let sent = flood(&flooder, 1_000_000, 1000, &stop);
            (sent, flooder)
        })
    };
    // Lines a person might type, every 20 ms, while the flood goes on.
    let mut second_ref = &second;
    for seq in 0..TIMED {
        thread::sleep(Duration::from_millis(20));
        let now = epoch().elapsed().as_nanos();
        writeln!(second_ref, "t{seq:06} {now} between the flood's lines").expect("send");
    }
    stop.store(true, Ordering::Relaxed);
    writeln!(second_ref, "end").expect("send end");
    let (sent, flooder) = flooding.join().expect("flooder");
    let mut latencies = Vec::new();
    for reader in readers {
        let seen = reader
            .join()
            .expect("reader")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(seen.latencies.len(), TIMED, "a timed line went missing");
        latencies.extend(seen.latencies);
    }
    for reads in [flooder_reads, second_reads] {
        reads
            .join()
            .expect("a sender's reader")
            .unwrap_or_else(|e| panic!("{e}"));
    }
    drop((flooder, second));
    latencies.sort_unstable();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "second sender through a flood of {} MB: p50 {p50:?}, p99 {p99:?}",
        sent / 1000
    );
    assert!(
        sent > 2 * TIMED,
        "the flood was not flooding ({sent} lines)"
    );
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");
}

#[test]
fn the_flood_rule_throttles_a_sender_without_losing_or_disconnecting() {
    // 10 lines at once, then 50 a second: 60 lines take about a second.
    const LINES: usize = 60;
    let server = serve(&["--flood", "50", "--flood-burst", "10"]);
    let (reader, _) = join(&server);
    let (sender, sender_nick) = join(&server);
    let reading = thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut arrivals = Vec::new();
        let mut line = String::new();
        while arrivals.len() < LINES {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if line.starts_with("* ") => {}
                Ok(_) => arrivals.push((Instant::now(), line.trim_end().to_string())),
            }
        }
        arrivals
    });
    let started = Instant::now();
    let mut batch = Vec::new();
    for seq in 0..LINES {
        push_flood_line(&mut batch, seq, 40);
    }
    (&sender).write_all(&batch).expect("send");
    let arrivals = reading.join().expect("reader");
    assert_eq!(arrivals.len(), LINES, "lines went missing");
    for (seq, (_, line)) in arrivals.iter().enumerate() {
        assert!(
            line.starts_with(&format!("[{sender_nick}] m{seq:06} ")),
            "line {seq}: {line:?}"
        );
    }
    let burst = arrivals[9].0.duration_since(started);
    let all = arrivals[LINES - 1].0.duration_since(started);
    eprintln!("burst in {burst:?}, all {LINES} in {all:?}");
    assert!(
        burst < Duration::from_millis(500),
        "the burst took {burst:?}"
    );
    // 50 lines after the burst at 50 a second: a second, give or take.
    assert!(
        all >= Duration::from_millis(900) && all < Duration::from_secs(3),
        "60 lines took {all:?}"
    );
    // Still connected: a line now goes through.
    (&sender).write_all(b"still here\n").expect("send");
}
