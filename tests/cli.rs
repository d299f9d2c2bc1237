//! The error contract of the command line: one clear line on stderr,
//! exit 1 for failures and 2 for usage errors, no panics.

mod common;

use std::net::{TcpListener, UdpSocket};
use std::process::Command;

use common::*;

#[test]
fn tcp_port_already_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let out = sockit(&[
        "echo",
        "serve",
        "--tcp",
        "-b",
        "127.0.0.1",
        "-p",
        &port.to_string(),
    ]);
    let err = assert_error(&out, 1, "sockit: error: cannot listen on");
    assert_eq!(
        err,
        format!("sockit: error: cannot listen on tcp 127.0.0.1:{port} (address already in use)\n")
    );
    let out = sockit(&["json", "serve", "-b", "127.0.0.1", "-p", &port.to_string()]);
    assert_error(&out, 1, "sockit: error: cannot listen on");
}

#[test]
fn udp_port_already_in_use() {
    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let out = sockit(&["echo", "serve", "-b", "127.0.0.1", "-p", &port.to_string()]);
    let err = assert_error(&out, 1, "sockit: error: cannot listen on");
    assert_eq!(
        err,
        format!("sockit: error: cannot listen on udp 127.0.0.1:{port} (address already in use)\n")
    );
}

#[test]
fn connection_refused() {
    let port = closed_port().to_string();
    let out = sockit(&["echo", "send", "127.0.0.1", &port, "hi"]);
    let err = assert_error(&out, 1, "sockit: error: cannot connect to");
    assert_eq!(
        err,
        format!("sockit: error: cannot connect to 127.0.0.1:{port} (connection refused)\n")
    );
    let out = sockit(&["json", "send", "127.0.0.1", &port, "1"]);
    assert_error(&out, 1, "sockit: error: cannot connect to");
}

/// `-v` adds the error's whole chain under the one line, as the system
/// said it (the OS error code included), for a user who needs the detail.
#[test]
fn verbose_errors_show_the_cause_chain() {
    let port = closed_port().to_string();
    let out = sockit(&["-v", "echo", "send", "127.0.0.1", &port, "hi"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.ends_with(&format!(
            "sockit: error: cannot connect to 127.0.0.1:{port} (connection refused)\n  \
             caused by: Connection refused (os error 111)\n"
        )),
        "stderr: {err}"
    );
}

#[test]
fn udp_to_a_closed_port_is_refused() {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = sock.local_addr().expect("addr").port().to_string();
    drop(sock);
    let out = sockit(&["echo", "send", "-u", "-w", "20", "127.0.0.1", &port, "hi"]);
    let err = assert_error(&out, 1, "sockit: error: no reply from 127.0.0.1");
    assert!(err.contains("(connection refused"), "{err}");
}

#[test]
fn no_udp_reply_within_wait() {
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let out = sockit(&[
        "echo",
        "send",
        "-u",
        "-w",
        "0.5",
        "127.0.0.1",
        &port.to_string(),
        "anyone?",
    ]);
    let err = assert_error(&out, 1, "sockit: error:");
    assert_eq!(
        err,
        format!("sockit: error: no reply from 127.0.0.1:{port} (nothing within 0.5 s)\n")
    );
    let mut buf = [0u8; 16];
    let (n, _) = silent.recv_from(&mut buf).expect("the datagram arrived");
    assert_eq!(&buf[..n], b"anyone?");
}

#[test]
fn no_tcp_reply_within_wait() {
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let out = sockit(&[
        "echo",
        "send",
        "-w",
        "0.5",
        "127.0.0.1",
        &port.to_string(),
        "hello?",
    ]);
    let err = assert_error(&out, 1, "sockit: error:");
    assert_eq!(
        err,
        format!("sockit: error: no reply from 127.0.0.1:{port} (nothing within 0.5 s)\n")
    );
}

/// Name resolution is tested inside a fresh network namespace with no
/// interfaces up, so the lookup fails on this machine without a single
/// packet leaving it (the configured resolver is not ours to query).
#[test]
fn host_not_found() {
    let probe = Command::new("unshare").args(["-n", "true"]).status();
    if !matches!(probe, Ok(s) if s.success()) {
        eprintln!(
            "!!! SKIPPED host_not_found: cannot create a network namespace (unshare -n); run as root"
        );
        return;
    }
    let out = run_with_input(
        Command::new("unshare").args([
            "-n",
            sockit_bin(),
            "echo",
            "send",
            "no-such-host.invalid",
            "9",
            "hi",
        ]),
        b"",
    );
    let err = assert_error(
        &out,
        1,
        "sockit: error: cannot resolve host 'no-such-host.invalid' (",
    );
    assert!(!err.contains("os error"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["echo", "send"][..],
        &["echo", "send", "127.0.0.1"],
        &["echo", "send", "127.0.0.1", "notaport", "x"],
        &["echo", "send", "127.0.0.1", "0", "x"],
        &["echo", "serve", "--drop", "1.5"],
        &["echo", "serve", "--udp", "--tcp"],
        &["echo", "serve", "--upper", "--reply", "x"],
        &["echo", "serve", "-b", "not-an-ip"],
        &["json", "serve", "--max-size", "0"],
        &["echo", "send", "-w", "-1", "127.0.0.1", "9"],
        &["frobnicate"],
        &[],
    ] {
        let out = sockit(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "sockit {args:?}: {}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
}

#[test]
fn help_and_version() {
    let out = sockit(&["--help"]);
    assert_ok(&out);
    for command in ["echo", "json"] {
        assert!(stdout(&out).contains(command), "{}", stdout(&out));
    }
    let out = sockit(&["--version"]);
    assert_ok(&out);
    let version = stdout(&out);
    assert!(version.starts_with("sockit 0.1.0"), "{version}");
    // Built from a checkout: the commit is in it, the one checked out.
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    if let Ok(head) = head
        && head.status.success()
    {
        let commit = String::from_utf8_lossy(&head.stdout).trim().to_string();
        assert_eq!(version, format!("sockit 0.1.0 (git {commit})\n"));
    }
}

#[test]
fn short_and_long_help_name_every_job_and_keep_global_options_apart() {
    for flag in ["-h", "--help"] {
        let out = sockit(&[flag]);
        assert_ok(&out);
        let text = stdout(&out);
        for job in [
            "echo",
            "chat",
            "JSON",
            "broadcast",
            "discovery",
            "ping",
            "file",
        ] {
            assert!(text.contains(job), "{flag} does not mention {job}: {text}");
        }
        let (_, global) = text
            .split_once("Global options:")
            .unwrap_or_else(|| panic!("{flag}: no global options heading: {text}"));
        assert!(
            global.contains("--verbose") && global.contains("--quiet"),
            "{text}"
        );
    }
    // Every command says what it does in plain words: the course's seed
    // numbers are for the README's table, not for someone who never took
    // the course.
    let commands: &[&[&str]] = &[
        &[],
        &["echo", "serve"],
        &["echo", "send"],
        &["json", "serve"],
        &["json", "send"],
        &["chat", "serve"],
        &["chat", "join"],
        &["broadcast", "send"],
        &["broadcast", "listen"],
        &["discover"],
        &["respond"],
        &["ping"],
        &["file", "send"],
        &["file", "receive"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let text = stdout(&sockit(&args));
        for jargon in ["seed 0", "seed 4", "seeds ", "seed task"] {
            assert!(!text.contains(jargon), "{args:?} says {jargon:?}: {text}");
        }
    }
    // A command's own help lists them under that heading too.
    let text = stdout(&sockit(&["chat", "serve", "--help"]));
    let (own, global) = text.split_once("Global options:").expect("heading");
    assert!(
        !own.contains("--verbose") && global.contains("--verbose"),
        "{text}"
    );
}

#[test]
fn completions_load_in_their_shells() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = sockit(&["completions", shell]);
        assert_ok(&out);
        let script = stdout(&out);
        assert!(
            script.contains("sockit") && script.contains("discover"),
            "{shell}: {script:.200}"
        );
    }
    // bash loads it, and it registers a completion for sockit.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source <({} completions bash) && complete -p sockit",
            sockit_bin()
        ))
        .output()
        .expect("bash");
    assert_ok(&out);
    assert!(stdout(&out).contains("sockit"), "{}", stdout(&out));
    let out = sockit(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("possible values: bash, elvish, fish, powershell, zsh"));
}

#[test]
fn the_man_page_renders() {
    let page = sockit(&["man"]);
    assert_ok(&page);
    let out = run_with_input(
        Command::new("man").args(["-l", "-"]).env("MANWIDTH", "100"),
        &page.stdout,
    );
    assert_ok(&out);
    let text = stdout(&out);
    for part in ["NAME", "SYNOPSIS", "sockit", "chat", "GLOBAL OPTIONS"] {
        assert!(text.contains(part), "no {part} in {text}");
    }
}

#[test]
fn broken_pipe_on_stdout_is_not_an_error() {
    let server = Server::sockit(&["echo", "serve", "-b", "127.0.0.1", "-p", "0"]);
    let script = format!(
        "yes hello | head -n 2000 | {} echo send 127.0.0.1 {} | head -n 1; echo \"${{PIPESTATUS[2]}}\"",
        sockit_bin(),
        server.port()
    );
    let out = run_with_input(Command::new("bash").args(["-c", &script]), b"");
    assert_eq!(stdout(&out), "hello\n0\n", "stderr: {}", stderr(&out));
}

#[test]
fn clients_stop_on_ctrl_c() {
    // The test is the server: once it has accepted the client's
    // connection, the client is running (its handlers are installed
    // before it connects) and waits on stdin, which stays open and empty.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    for command in ["json", "echo"] {
        let mut child = Command::new(sockit_bin())
            .args([command, "send", "127.0.0.1", &port])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn client");
        let (_conn, _) = listener.accept().expect("the client connects");
        signal(&child, libc::SIGINT);
        let status = wait_bounded(&mut child, std::time::Duration::from_secs(5));
        assert_eq!(status.code(), Some(130), "sockit {command} send");
    }
}
