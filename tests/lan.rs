//! `broadcast`, `discover` and `respond`: across hosts built from network
//! namespaces (see `common::netns`), with the seed's broadcaster,
//! receiver, caller and callee as peers; and on loopback for the
//! responder's anti-amplification rules and garbage.

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::netns::{Host, Lan, Running};
use common::*;
use serde_json::Value;

/// A LAN of `n` hosts on one switch, host i at 198.18.0.(i+1).
fn one_segment(test: &str, n: usize) -> Option<(Lan, Vec<Host>)> {
    let lan = Lan::new(test)?;
    let mut switch = lan.switch();
    let hosts = (0..n)
        .map(|i| {
            let mut host = lan.host();
            let cidr = format!("198.18.0.{}/24", i + 1);
            lan.plug(&mut host, &mut switch, Some(&cidr));
            host
        })
        .collect();
    Some((lan, hosts))
}

fn listening(line: &str) -> bool {
    line.starts_with("listening on ")
}

/// Runs `sockit discover` in `host` to the end; returns its JSON objects.
fn discover_json(host: &Host, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["discover", "--json"];
    all.extend_from_slice(args);
    let out = run_with_input(&mut host.sockit(&all), b"");
    assert_ok(&out);
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("discover --json prints JSON lines"))
        .collect()
}

fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name].as_str().unwrap_or("-")
}

#[test]
fn broadcast_reaches_sockit_and_seed_listeners_and_the_seed_broadcaster_reaches_sockit() {
    let Some((_lan, hosts)) = one_segment("broadcast", 4) else {
        return;
    };
    let (a, b, c, d) = (&hosts[0], &hosts[1], &hosts[2], &hosts[3]);
    let b_listen = Running::ready(
        &mut b.sockit(&["broadcast", "listen", "-c", "1"]),
        listening,
    );
    let c_listen = Running::ready(
        &mut c.sockit(&["broadcast", "listen", "-c", "1", "--json"]),
        listening,
    );
    let d_seed = Running::ready(&mut d.python("seed004_receiver.py", &[]), |l| {
        l == "Broadcast receiver start"
    });

    let message = "hello LAN 안녕";
    let sent = run_with_input(
        &mut a.sockit(&["broadcast", "send", message, "-c", "3", "-i", "0.2"]),
        b"",
    );
    assert_ok(&sent);
    let expected = format!("sent {} bytes to 198.18.0.255:37020 (eth0)", message.len());
    assert_eq!(
        stdout(&sent).lines().filter(|l| *l == expected).count(),
        3,
        "{}",
        stdout(&sent)
    );

    let (status, lines, err) = b_listen.finish();
    assert!(status.success(), "{err}");
    let heard = &lines[1];
    assert!(
        heard.starts_with("198.18.0.1:") && heard.ends_with(&format!(": {message}")),
        "{heard:?}"
    );
    let (status, lines, err) = c_listen.finish();
    assert!(status.success(), "{err}");
    let json: Value = serde_json::from_str(&lines[1]).expect("JSON line");
    assert!(field(&json, "from").starts_with("198.18.0.1:"), "{json}");
    assert_eq!(field(&json, "text"), message);
    assert_eq!(json["bytes"], message.len());
    let (status, lines, err) = d_seed.finish();
    assert!(status.success(), "{err}");
    assert!(
        lines[1].starts_with("Message [b'hello LAN ")
            && lines[1].contains("from Server ('198.18.0.1', "),
        "{lines:?}"
    );

    // The other way round: the seed's broadcaster (to <broadcast>) in A.
    let b_listen = Running::ready(
        &mut b.sockit(&["broadcast", "listen", "-c", "1"]),
        listening,
    );
    let seed = run_with_input(
        &mut a.python(
            "seed004_broadcaster.py",
            &["--count", "3", "--interval", "0.2"],
        ),
        b"",
    );
    assert_ok(&seed);
    let (status, lines, err) = b_listen.finish();
    assert!(status.success(), "{err}");
    assert!(
        lines[1].starts_with("198.18.0.1:") && lines[1].ends_with(": broadcast message"),
        "{lines:?}"
    );
}

#[test]
fn discover_lists_responders_and_the_seed_callee_once_each_and_the_seed_caller_hears_all() {
    let Some((_lan, hosts)) = one_segment("discover", 4) else {
        return;
    };
    let (a, b, c, d) = (&hosts[0], &hosts[1], &hosts[2], &hosts[3]);
    let _b = Running::ready(&mut b.sockit(&["respond", "--name", "board-b"]), listening);
    let _c = Running::ready(&mut c.sockit(&["respond", "--name", "보드-c"]), listening);
    let _d = Running::ready(&mut d.python("seed004_callee.py", &[]), |l| {
        l == "Answer to caller"
    });

    let out = run_with_input(&mut a.sockit(&["discover", "-w", "1"]), b"");
    assert_ok(&out);
    let table = stdout(&out);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let summary: Vec<(&str, &str)> = rows.iter().map(|r| (r[0], r[1])).collect();
    assert_eq!(
        summary,
        vec![
            ("198.18.0.2:37021", "board-b"),
            ("198.18.0.3:37021", "보드-c"),
            ("198.18.0.4:37021", "-"),
        ],
        "{table}"
    );
    assert!(table.starts_with("ADDRESS"), "{table}");
    for row in &rows {
        assert_eq!(row.last(), Some(&"ms"), "{table}");
    }

    // The JSON says the same, and that b and c answered over IPv6 too.
    let found = discover_json(a, &["-w", "1"]);
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(field(&found[0], "kind"), "sockit");
    assert_eq!(field(&found[2], "kind"), "text");
    assert!(found[2]["name"].is_null());
    for responder in &found[..2] {
        let also = responder["also"].as_array().expect("an IPv6 address too");
        assert!(
            also[0].as_str().unwrap_or("").starts_with("[fe80::"),
            "{responder}"
        );
    }

    // The seed's caller in A hears B, C and D.
    let out = run_with_input(
        &mut a.python("seed004_caller.py", &["--rounds", "1", "--timeout", "1"]),
        b"",
    );
    assert_ok(&out);
    let heard: HashSet<String> = stdout(&out)
        .lines()
        .filter_map(|l| l.strip_prefix("Message from client ('"))
        .filter_map(|l| l.split('\'').next().map(str::to_string))
        .collect();
    let expected: HashSet<String> = ["198.18.0.2", "198.18.0.3", "198.18.0.4"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(heard, expected, "{}", stdout(&out));
}

/// Issue 17: a host whose address was added without `brd +` has no
/// broadcast address on the interface (getifaddrs reports its own address
/// there). sockit derives 198.18.0.255 from 198.18.0.1/24 and says so
/// under -v; a host with `brd` keeps the kernel's. A is configured without
/// brd, B with, C without (so it must also *receive* a directed broadcast).
#[test]
fn a_host_without_brd_still_broadcasts_and_discovers_on_its_subnet() {
    let Some(lan) = Lan::new("no-brd") else {
        return;
    };
    let mut switch = lan.switch();
    let (mut a, mut b, mut c) = (lan.host(), lan.host(), lan.host());
    lan.plug_without_brd(&mut a, &mut switch, "198.18.0.1/24");
    lan.plug(&mut b, &mut switch, Some("198.18.0.2/24"));
    lan.plug_without_brd(&mut c, &mut switch, "198.18.0.3/24");
    let shown = run_with_input(
        &mut a.command("ip", &["-4", "addr", "show", "dev", "eth0"]),
        b"",
    );
    assert!(
        stdout(&shown).contains("inet 198.18.0.1/24 scope") && !stdout(&shown).contains(" brd "),
        "A has no broadcast address: {}",
        stdout(&shown)
    );

    let b_listen = Running::ready(
        &mut b.sockit(&["broadcast", "listen", "-c", "1"]),
        listening,
    );
    let c_seed = Running::ready(&mut c.python("seed004_receiver.py", &[]), |l| {
        l == "Broadcast receiver start"
    });
    let sent = run_with_input(
        &mut a.sockit(&["-v", "broadcast", "send", "hi", "-c", "3", "-i", "0.2"]),
        b"",
    );
    assert_ok(&sent);
    assert_eq!(
        stdout(&sent).lines().collect::<Vec<_>>(),
        vec!["sent 2 bytes to 198.18.0.255:37020 (eth0)"; 3],
        "{}",
        stderr(&sent)
    );
    assert!(
        stderr(&sent).contains("198.18.0.255 on eth0 (derived from 198.18.0.1/24"),
        "-v says the address was derived: {}",
        stderr(&sent)
    );
    let (status, lines, err) = b_listen.finish();
    assert!(status.success(), "{err}");
    assert!(
        lines[1].starts_with("198.18.0.1:") && lines[1].ends_with(": hi"),
        "{lines:?}"
    );
    let (status, lines, err) = c_seed.finish();
    assert!(status.success(), "{err}");
    assert!(
        lines[1].starts_with("Message [b'hi'] from Server ('198.18.0.1', "),
        "{lines:?}"
    );

    // discover from A finds B and C over IPv4 (an IPv4 address is listed
    // first when a responder answered over both).
    let _b = Running::ready(&mut b.sockit(&["respond", "--name", "with-brd"]), listening);
    let _c = Running::ready(&mut c.sockit(&["respond", "--name", "no-brd"]), listening);
    let out = run_with_input(&mut a.sockit(&["-v", "discover", "--json", "-w", "1"]), b"");
    assert_ok(&out);
    let found: Vec<(String, String)> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
        .map(|f| {
            (
                field(&f, "address").to_string(),
                field(&f, "name").to_string(),
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![
            ("198.18.0.2:37021".to_string(), "with-brd".to_string()),
            ("198.18.0.3:37021".to_string(), "no-brd".to_string()),
        ],
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("broadcast address 198.18.0.255 on eth0 (derived from 198.18.0.1/24"),
        "{}",
        stderr(&out)
    );

    // B, configured with brd, keeps the kernel's address and says so.
    let out = run_with_input(&mut b.sockit(&["-v", "broadcast", "send", "-c", "1"]), b"");
    assert_ok(&out);
    assert!(
        stderr(&out).contains("198.18.0.255 on eth0 (the kernel's broadcast address)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn discover_from_a_host_on_two_segments_finds_both() {
    let Some(lan) = Lan::new("two-segments") else {
        return;
    };
    let (mut s1, mut s2) = (lan.switch(), lan.switch());
    let mut a = lan.host();
    lan.plug(&mut a, &mut s1, Some("198.18.0.1/24"));
    lan.plug(&mut a, &mut s2, Some("198.18.1.1/24"));
    let mut b = lan.host();
    lan.plug(&mut b, &mut s1, Some("198.18.0.2/24"));
    let mut c = lan.host();
    lan.plug(&mut c, &mut s2, Some("198.18.1.2/24"));
    let _b = Running::ready(&mut b.sockit(&["respond", "--name", "left"]), listening);
    let _c = Running::ready(&mut c.sockit(&["respond", "--name", "right"]), listening);

    let found = discover_json(&a, &["-w", "1"]);
    let names: Vec<(&str, &str)> = found
        .iter()
        .map(|f| (field(f, "address"), field(f, "name")))
        .collect();
    assert_eq!(
        names,
        vec![("198.18.0.2:37021", "left"), ("198.18.1.2:37021", "right")]
    );
}

#[test]
fn discover_finds_a_responder_over_ipv6_link_local_multicast_alone() {
    let Some(lan) = Lan::new("ipv6") else {
        return;
    };
    let mut switch = lan.switch();
    let mut a = lan.host();
    let a_eth = lan.plug(&mut a, &mut switch, None);
    let mut b = lan.host();
    let b_eth = lan.plug(&mut b, &mut switch, None);
    a.wait_ipv6(&a_eth);
    b.wait_ipv6(&b_eth);
    let _b = Running::ready(&mut b.sockit(&["respond", "--name", "six"]), listening);

    let found = discover_json(&a, &["-w", "1"]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        field(&found[0], "address").starts_with("[fe80::"),
        "{found:?}"
    );
    assert!(
        field(&found[0], "address").ends_with("]:37021"),
        "{found:?}"
    );
    assert_eq!(field(&found[0], "name"), "six");
}

#[test]
fn discover_finds_all_twenty_responders_in_every_one_of_twenty_runs() {
    let Some((_lan, hosts)) = one_segment("twenty", 21) else {
        return;
    };
    let _responders: Vec<Running> = hosts[1..]
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let name = format!("pi-{:02}", i + 1);
            Running::ready(&mut h.sockit(&["respond", "--name", &name]), listening)
        })
        .collect();
    let expected: HashSet<String> = (1..=20).map(|i| format!("pi-{i:02}")).collect();
    for run in 1..=20 {
        let started = Instant::now();
        let found = discover_json(&hosts[0], &["-w", "2"]);
        let names: HashSet<String> = found.iter().map(|f| field(f, "name").to_string()).collect();
        assert_eq!(names, expected, "run {run}: {found:?}");
        assert_eq!(found.len(), 20, "run {run}: each once: {found:?}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "run {run} took {:?}",
            started.elapsed()
        );
    }
}

// ---- on loopback: the responder's rules ----

/// A UDP socket on its own loopback address, so each source has its own
/// rate-limit budget at the responder.
fn source(ip: &str) -> UdpSocket {
    let socket = UdpSocket::bind((ip, 0)).expect("bind loopback source");
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    socket
}

fn probe(seq: u32) -> Vec<u8> {
    let mut probe = format!("SOCKIT-DISCOVER/1 PROBE 0123456789abcdef {seq}\n").into_bytes();
    probe.resize(160, b'.');
    probe
}

/// Every reply `socket` gets until none comes for 300 ms.
fn replies(socket: &UdpSocket) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + LIMIT;
    while let Ok((n, _)) = socket.recv_from(&mut buf) {
        got.push(buf[..n].to_vec());
        assert!(Instant::now() < deadline, "replies never stop");
    }
    got
}

fn responder() -> Server {
    Server::sockit(&["respond", "-b", "127.0.0.1", "-p", "0", "--name", "loop"])
}

#[test]
fn replies_are_never_more_than_three_times_what_caused_them() {
    let server = responder();
    let tiny = source("127.0.0.11");
    let small = source("127.0.0.12");
    let short_probe = source("127.0.0.13");
    let full_probe = source("127.0.0.14");
    tiny.send_to(b"x", server.addr).expect("send");
    small
        .send_to(b"abcdefghijklmnopqrst", server.addr)
        .expect("send");
    let mut unpadded = probe(1);
    unpadded.truncate(unpadded.iter().position(|&b| b == b'\n').expect("newline") + 1);
    short_probe.send_to(&unpadded, server.addr).expect("send");
    full_probe.send_to(&probe(2), server.addr).expect("send");

    let full = replies(&full_probe);
    assert_eq!(full.len(), 1);
    assert!(full[0].len() <= 3 * 160);
    let text = String::from_utf8_lossy(&full[0]);
    assert!(text.starts_with("SOCKIT-DISCOVER/1 REPLY {"), "{text}");
    assert!(text.contains("\"name\":\"loop\""), "{text}");

    let short = replies(&short_probe);
    assert!(
        short.iter().all(|r| r.len() <= 3 * unpadded.len()),
        "{short:?}"
    );
    assert_eq!(replies(&small), vec![b"receive message".to_vec()]);
    assert_eq!(
        replies(&tiny),
        Vec::<Vec<u8>>::new(),
        "a 1-byte datagram gets nothing"
    );
}

#[test]
fn a_flood_of_probes_from_one_source_is_answered_at_the_rate_limit() {
    let server = responder();
    let flood = source("127.0.0.21");
    let started = Instant::now();
    for seq in 0..10_000 {
        flood.send_to(&probe(seq), server.addr).expect("send");
    }
    let got = replies(&flood);
    let secs = started.elapsed().as_secs_f64();
    // 5 at once, then 2 a second (one more for a refill at the edge).
    let most = 5 + (2.0 * secs).ceil() as usize + 1;
    assert!(
        !got.is_empty() && got.len() <= most,
        "{} replies to 10,000 probes in {secs:.2} s (at most {most})",
        got.len()
    );
    // Another source is still answered at once.
    let other = source("127.0.0.22");
    other.send_to(&probe(1), server.addr).expect("send");
    assert_eq!(replies(&other).len(), 1);
}

#[test]
fn garbage_never_crashes_respond_or_discover() {
    let server = responder();
    let junk = source("127.0.0.31");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..2_000 {
        let len = (next() % 1500) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        junk.send_to(&bytes, server.addr).expect("send");
    }
    for crafted in [
        &b"SOCKIT-DISCOVER/1 PROBE "[..],
        b"SOCKIT-DISCOVER/1 PROBE 0123456789abcdef 99999999999999999999999999\n",
        b"SOCKIT-DISCOVER/1 PROBE 0123456789abcdef\xff\xfe 1\n",
        b"SOCKIT-DISCOVER/1 REPLY {\"probe\":\"x\",\"seq\":4294967296}\n",
        b"SOCKIT-DISCOVER/9 PROBE 0123456789abcdef 1\n",
    ] {
        junk.send_to(crafted, server.addr).expect("send");
    }
    // The flood may have filled the responder's receive buffer (the kernel
    // then drops datagrams, ours too): ask again, a bounded number of times.
    let probe_src = source("127.0.0.32");
    let answered = (0..5).any(|seq| {
        probe_src.send_to(&probe(seq), server.addr).expect("send");
        !replies(&probe_src).is_empty()
    });
    assert!(answered, "the responder still answers");

    // discover against a fake responder that answers with garbage first.
    let fake = UdpSocket::bind("127.0.0.33:0").expect("bind");
    fake.set_read_timeout(Some(LIMIT)).expect("timeout");
    let port = fake.local_addr().expect("addr").port().to_string();
    let discover = std::thread::spawn(move || {
        sockit(&[
            "discover",
            "--to",
            "127.0.0.33",
            "-p",
            &port,
            "-w",
            "1",
            "--json",
        ])
    });
    let mut buf = [0u8; 2048];
    let (n, prober) = fake.recv_from(&mut buf).expect("a probe");
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    let mut words = first.lines().next().unwrap_or("").split(' ').skip(2);
    let (id, seq) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let answers: Vec<Vec<u8>> = vec![
        b"SOCKIT-DISCOVER/1 REPLY {".to_vec(),
        b"SOCKIT-DISCOVER/1 REPLY {\"probe\":1}".to_vec(),
        format!("SOCKIT-DISCOVER/1 REPLY {{\"probe\":\"{id}\",\"seq\":4000000000,\"id\":\"x\"}}").into_bytes(),
        format!("SOCKIT-DISCOVER/1 REPLY {{\"probe\":\"ffffffffffffffff\",\"seq\":{seq},\"id\":\"x\"}}").into_bytes(),
        format!(
            "SOCKIT-DISCOVER/1 REPLY {{\"probe\":\"{id}\",\"seq\":{seq},\"id\":\"f\",\"name\":\"{}\",\"held_us\":18446744073709551615}}",
            "n".repeat(1800)
        )
        .into_bytes(),
        format!(
            "SOCKIT-DISCOVER/1 REPLY {{\"probe\":\"{id}\",\"seq\":{seq},\"id\":\"fake\",\"name\":\"evil\\u001b[2J\",\"version\":\"9\"}}\n"
        )
        .into_bytes(),
    ];
    for answer in &answers {
        fake.send_to(answer, prober).expect("answer");
    }
    let out = discover.join().expect("discover thread");
    assert_ok(&out);
    let found: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(found.len(), 2, "{found:?}");
    let fake_entry = found
        .iter()
        .find(|f| field(f, "id") == "fake")
        .expect("the well-formed reply is listed");
    assert_eq!(
        field(fake_entry, "name"),
        "evil\\x1b[2J",
        "escaped for the terminal"
    );
    let sockit_f = found
        .iter()
        .find(|f| field(f, "id") == "f")
        .expect("the long one too");
    assert_eq!(
        field(sockit_f, "address"),
        format!("127.0.0.33:{}", fake.local_addr().expect("addr").port())
    );
    let _: SocketAddr = field(fake_entry, "address").parse().expect("an address");
}

#[test]
fn no_answer_is_an_error_and_bad_arguments_are_usage_errors() {
    let closed = UdpSocket::bind("127.0.0.41:0").expect("bind");
    let port = closed.local_addr().expect("addr").port().to_string();
    drop(closed);
    let out = sockit(&["discover", "--to", "127.0.0.41", "-p", &port, "-w", "0.3"]);
    assert_error(
        &out,
        1,
        &format!(
            "sockit: error: no reply from any device on UDP port {port} (nothing within 0.3 s)"
        ),
    );
    let out = sockit(&["respond", "--name", ""]);
    assert_eq!(out.status.code(), Some(2));
    let out = sockit(&["broadcast", "send", "-p", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let out = sockit(&["discover", "-w", "0"]);
    assert_eq!(out.status.code(), Some(2));
}
