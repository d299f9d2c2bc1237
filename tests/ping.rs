//! `sockit ping` against sockit's lossy echo server, the seed's upper-casing
//! server, misbehaving Python servers, closed ports, and Ctrl-C.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;

use common::*;
use rand::{RngExt, SeedableRng};

/// `sockit echo serve EXTRA... -b 127.0.0.1 -p 0`.
fn serve(extra: &[&str]) -> Server {
    let mut args = vec!["echo", "serve"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-b", "127.0.0.1", "-p", "0"]);
    Server::sockit(&args)
}

/// `sockit ping 127.0.0.1 PORT ARGS...`.
fn ping(server: &Server, args: &[&str]) -> std::process::Output {
    let port = server.port_arg();
    let mut all = vec!["ping", "127.0.0.1", &port];
    all.extend_from_slice(args);
    sockit(&all)
}

/// The summary line's figures.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    transmitted: u64,
    received: u64,
    duplicates: u64,
    late: u64,
    reordered: u64,
    foreign: u64,
    errors: u64,
    in_flight: u64,
    loss: String,
}

/// Parses `N packets transmitted, M received, [+D duplicates, ...] X% packet loss, time Tms`.
#[track_caller]
fn counts(out: &str) -> Counts {
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no summary in {out:?}"));
    let mut c = Counts::default();
    for part in line.split(", ") {
        let (n, what) = part.split_once(' ').expect("`N what`");
        let num = || n.trim_start_matches('+').parse::<u64>().expect("a count");
        match what {
            "packets transmitted" => c.transmitted = num(),
            "received" => c.received = num(),
            "duplicates" => c.duplicates = num(),
            "late" => c.late = num(),
            "reordered" => c.reordered = num(),
            "foreign" => c.foreign = num(),
            "errors" => c.errors = num(),
            "in flight" => c.in_flight = num(),
            "packet loss" => c.loss = n.to_string(),
            w if w.starts_with("loss") || n == "time" => {}
            _ => panic!("unexpected summary part {part:?} in {line:?}"),
        }
    }
    c
}

/// Per-reply lines as (seq, note), e.g. (3, "") or (4, " (DUP!)").
fn replies(out: &str) -> Vec<(u64, String)> {
    out.lines()
        .filter(|l| l.contains(" bytes from "))
        .map(|l| {
            let seq = l.split("seq=").nth(1).expect("seq=");
            let (seq, rest) = seq.split_once(' ').expect("seq then rtt");
            let note = rest.split_once(" ms").map_or("", |(_, n)| n);
            (seq.parse().expect("seq number"), note.to_string())
        })
        .collect()
}

#[test]
fn loss_equals_the_seeded_servers_actual_drops() {
    // The server drops datagram i (in arrival order) when the i-th draw of
    // ChaCha8(7).random_bool(0.3) says so; ping sends one probe at a time,
    // so probe seq = i + 1 arrives i-th.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let dropped: Vec<bool> = (0..1000).map(|_| rng.random_bool(0.3)).collect();
    let answered: BTreeSet<u64> = (1..=1000).filter(|s| !dropped[*s as usize - 1]).collect();
    let drops = 1000 - answered.len() as u64;

    let server = serve(&["--udp", "--drop", "0.3", "--seed", "7", "-v"]);
    let out = ping(&server, &["-c", "1000", "-i", "0", "-W", "0.03"]);
    assert_ok(&out);
    let text = stdout(&out);
    let c = counts(&text);
    // A reply slower than -W (a stall on a busy machine) is late, not
    // received, and not a drop either: account for it explicitly.
    assert_eq!(c.transmitted, 1000);
    assert_eq!(c.transmitted - c.received - c.late, drops, "{text}");
    assert_eq!(c.duplicates, 0);
    let fresh: BTreeSet<u64> = replies(&text)
        .into_iter()
        .filter(|(_, note)| !note.contains("late"))
        .map(|(seq, _)| seq)
        .collect();
    let late: BTreeSet<u64> = replies(&text)
        .into_iter()
        .filter(|(_, note)| note.contains("late"))
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(fresh.len() as u64, c.received);
    assert_eq!(
        &fresh | &late,
        answered,
        "exactly the undropped probes came back"
    );
    let loss = (1000 - c.received) as f64 / 10.0;
    assert_eq!(
        c.loss.trim_end_matches('%').parse::<f64>().expect("loss"),
        loss
    );

    // The server's own count, printed at shutdown with -v, agrees.
    let (_, _, err) = server.terminate();
    assert!(
        err.contains(&format!("udp: 1000 datagrams received, {drops} dropped")),
        "{err}"
    );
}

#[test]
fn every_probe_is_answered_by_the_seed_upper_casing_server() {
    let server = Server::python("seed000_udp_server.py", &["0"]);
    let out = ping(&server, &["-c", "50", "-i", "0", "-s", "100"]);
    assert_ok(&out);
    let text = stdout(&out);
    let c = counts(&text);
    assert_eq!(
        (c.transmitted, c.received, c.foreign),
        (50, 50, 0),
        "{text}"
    );
    assert_eq!(c.loss, "0%");
    let seqs: Vec<u64> = replies(&text).into_iter().map(|(s, _)| s).collect();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    assert!(text.contains("100 bytes from 127.0.0.1:"), "{text}");
    assert!(text.contains("rtt min/avg/max/mdev = "), "{text}");
    assert!(text.contains("rtt p50/p90/p99/p99.9 = "), "{text}");
    assert!(text.contains(" ms, 50 samples"), "{text}");
}

#[test]
fn replies_after_w_are_late_not_received() {
    let server = serve(&["--udp", "--delay", "300"]);
    // Probes at 0, 0.5 and 1.0 s; replies 0.3 s later, after -W 0.1.
    let out = ping(&server, &["-c", "3", "-i", "0.5", "-W", "0.1"]);
    let text = stdout(&out);
    let notes = replies(&text);
    assert!(notes.len() >= 2, "{text}");
    for (_, note) in &notes {
        assert_eq!(note, " (late, not counted)", "{text}");
    }
    let c = counts(&text);
    assert_eq!((c.transmitted, c.received), (3, 0), "{text}");
    assert_eq!(c.late, notes.len() as u64);
    assert_eq!(c.loss, "100%");
    assert!(!text.contains("rtt min"), "no RTT figures without replies");
    // Nothing answered in time: exit 1, and the error says the server is slow.
    let err = assert_error(&out, 1, "sockit: error: no reply from 127.0.0.1:");
    assert!(
        err.contains("3 probes sent, none answered within 0.1 s;"),
        "{err}"
    );
    assert!(err.contains("answered late"), "{err}");
}

#[test]
fn duplicates_are_counted_and_loss_stays_right() {
    // Every datagram answered twice, every third not at all.
    let server = Server::python(
        "misbehaving_udp_echo.py",
        &["0", "--twice", "--drop-every", "3"],
    );
    let out = ping(&server, &["-c", "30", "-i", "0.02", "-W", "0.1"]);
    assert_ok(&out);
    let text = stdout(&out);
    let c = counts(&text);
    assert_eq!((c.transmitted, c.received), (30, 20), "{text}");
    assert_eq!(c.loss, "33.3333%");
    // The last probe's second copy may come after ping has finished.
    assert!((19..=20).contains(&c.duplicates), "{text}");
    let dups = replies(&text)
        .iter()
        .filter(|(_, n)| n == " (DUP!)")
        .count();
    assert_eq!(dups as u64, c.duplicates);
    let fresh: Vec<u64> = replies(&text)
        .into_iter()
        .filter(|(_, n)| n.is_empty())
        .map(|(s, _)| s)
        .collect();
    assert_eq!(fresh, (1..=30).filter(|s| s % 3 != 0).collect::<Vec<_>>());
}

#[test]
fn foreign_datagrams_are_ignored() {
    let server = Server::python("misbehaving_udp_echo.py", &["0", "--garbage"]);
    let out = ping(&server, &["-c", "10", "-i", "0"]);
    assert_ok(&out);
    let c = counts(&stdout(&out));
    assert_eq!((c.transmitted, c.received, c.duplicates), (10, 10, 0));
    // Each garbage datagram precedes its answer, so all but perhaps none
    // are read before the run ends.
    assert!((9..=10).contains(&c.foreign), "{c:?}");
}

#[test]
fn a_closed_udp_port_is_a_clear_error() {
    // Bind, note the port, close: nothing listens there now.
    let port = {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.local_addr().expect("addr").port()
    };
    let out = sockit(&["ping", "127.0.0.1", &port.to_string(), "-c", "3"]);
    let err = assert_error(&out, 1, "sockit: error: no reply from 127.0.0.1:");
    assert!(err.contains("connection refused"), "{err}");
    assert!(!stdout(&out).contains("statistics"));
}

#[test]
fn json_parses_and_agrees_with_the_text_summary() {
    // Two servers with the same seed drop the same probes.
    let a = serve(&["--udp", "--drop", "0.3", "--seed", "11"]);
    let b = serve(&["--udp", "--drop", "0.3", "--seed", "11"]);
    let args = ["-c", "100", "-i", "0", "-W", "0.05"];
    let text_out = ping(&a, &args);
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let json_out = ping(&b, &json_args);
    assert_ok(&text_out);
    assert_ok(&json_out);
    let c = counts(&stdout(&text_out));
    let json_text = stdout(&json_out);
    assert_eq!(json_text.lines().count(), 1, "one object: {json_text}");
    let j: serde_json::Value = serde_json::from_str(&json_text).expect("valid JSON");
    assert_eq!(j["transmitted"], c.transmitted);
    assert_eq!(
        j["received"].as_u64().unwrap() + j["late"].as_u64().unwrap(),
        c.received + c.late
    );
    assert_eq!(j["duplicates"], 0);
    assert_eq!(j["protocol"], "udp");
    assert_eq!(j["size"], 64);
    assert_eq!(j["samples"], j["received"]);
    let loss = j["loss_percent"].as_f64().expect("loss_percent");
    let received = j["received"].as_f64().unwrap();
    assert!((loss - (100.0 - received)).abs() < 1e-9, "{j}");
    let rtt = &j["rtt_ms"];
    let f = |k: &str| {
        rtt[k]
            .as_f64()
            .unwrap_or_else(|| panic!("rtt_ms.{k} in {j}"))
    };
    assert!(f("min") <= f("p50") && f("p50") <= f("p90") && f("p90") <= f("p99"));
    assert!(
        f("p99") <= f("p99_9") && f("p99_9") <= f("max") * 1.001 + 0.001,
        "{j}"
    );
    assert!(f("min") <= f("avg") && f("avg") <= f("max") && f("mdev") >= 0.0);
}

#[test]
fn sigint_prints_the_summary() {
    let server = serve(&["--udp"]);
    let mut child = Command::new(sockit_bin())
        .args(["ping", "127.0.0.1", &server.port_arg(), "-i", "0.05"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ping");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while lines
        .iter()
        .filter(|l: &&String| l.contains("seq="))
        .count()
        < 3
    {
        lines.push(rx.recv_timeout(LIMIT).expect("a reply line in time"));
    }
    signal(&child, libc::SIGINT);
    let status = wait_bounded(&mut child, LIMIT);
    lines.extend(rx.iter());
    let text = lines.join("\n");
    assert!(status.success(), "exit {status:?}: {text}");
    let c = counts(&text);
    assert!(c.received >= 3 && c.transmitted >= c.received, "{text}");
    assert!(text.contains("rtt min/avg/max/mdev = "), "{text}");
}

#[test]
fn interval_zero_is_bounded_by_the_deadline() {
    let server = serve(&["--udp"]);
    let started = std::time::Instant::now();
    let out = ping(&server, &["-i", "0", "-w", "0.3", "-q"]);
    assert_ok(&out);
    assert!(started.elapsed() < LIMIT);
    let text = stdout(&out);
    assert!(!text.contains("seq="), "-q prints only the summary: {text}");
    let c = counts(&text);
    assert!(c.transmitted > 10 && c.received > 10, "{text}");
    // The probe cut off by the deadline (if any) is in flight, not lost.
    assert!(c.in_flight <= 1, "{text}");
    assert_eq!(c.transmitted, c.received + c.in_flight, "{text}");
    assert_eq!(c.loss, "0%", "{text}");
}

#[test]
fn tcp_measures_connect_time_and_round_trips() {
    let server = serve(&["--tcp", "--upper"]);
    let out = ping(&server, &["--tcp", "-c", "20", "-i", "0", "-s", "200"]);
    assert_ok(&out);
    let text = stdout(&out);
    assert!(text.starts_with("PING 127.0.0.1:"), "{text}");
    assert!(
        text.contains("(tcp): 200 bytes of data, connected in "),
        "{text}"
    );
    assert!(text.contains("tcp connect time "), "{text}");
    let c = counts(&text);
    assert_eq!(
        (c.transmitted, c.received, c.foreign),
        (20, 20, 0),
        "{text}"
    );

    let json = ping(&server, &["--tcp", "-c", "3", "-i", "0", "--json"]);
    assert_ok(&json);
    let j: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("JSON");
    assert_eq!(j["protocol"], "tcp");
    assert!(j["connect_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{j}");
}

#[test]
fn tcp_to_a_closed_port_is_a_clear_error() {
    let port = closed_port().to_string();
    let out = sockit(&["ping", "--tcp", "127.0.0.1", &port, "-c", "1"]);
    let err = assert_error(&out, 1, "sockit: error: cannot connect to 127.0.0.1:");
    assert!(err.contains("connection refused"), "{err}");
}

#[test]
fn a_probe_size_below_the_header_is_a_usage_error() {
    let out = sockit(&["ping", "127.0.0.1", "-s", "20"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
