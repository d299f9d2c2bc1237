//! A LAN made of network namespaces, for testing what crosses a network:
//! broadcasts, multicast, replies from several hosts.
//!
//! Each switch is a namespace holding a bridge; each host is a namespace
//! with a veth pair to a switch per interface, addresses in 198.18.0.0/15
//! (the benchmarking range, never routed anywhere) and IPv6 link-local
//! addresses usable at once (duplicate address detection is off). Nothing
//! is created in the test runner's own namespace, so deleting the
//! namespaces removes everything. Names carry the test process id and a
//! random tag: parallel tests never collide, [`Lan`]'s `Drop` removes its
//! namespaces (also when a test panics), and namespaces left by a test
//! process that was killed are swept by the next [`Lan::new`].
//!
//! Where namespaces cannot be made (not root, no `ip`), [`Lan::new`]
//! returns `None` after printing a loud SKIPPED line, and the test returns
//! early; under CI (`CI` set) it fails instead, because CI runs as root and
//! a skip there would hide a broken harness.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use super::{LIMIT, line_channel, wait_bounded};

/// Namespace names start with this, then the creating process id.
const PREFIX: &str = "sktest";

/// A LAN under construction and in use; torn down when dropped.
pub struct Lan {
    tag: String,
    namespaces: Mutex<Vec<String>>,
    next: AtomicUsize,
}

/// A host: a namespace with interfaces on switches.
pub struct Host {
    pub ns: String,
    interfaces: usize,
    has_default_route: bool,
}

/// A switch: a namespace with one bridge, `br0`.
pub struct Switch {
    ns: String,
    ports: usize,
}

impl Lan {
    /// A new, empty LAN, or `None` (after a loud message) if this machine
    /// cannot make network namespaces. Under CI, panics instead of `None`.
    pub fn new(test: &str) -> Option<Lan> {
        sweep_stale();
        let tag = format!(
            "{PREFIX}{}-{:06x}",
            std::process::id(),
            rand::random::<u32>() & 0xff_ffff
        );
        let probe = format!("{tag}-probe");
        let made = Command::new("ip").args(["netns", "add", &probe]).output();
        match made {
            Ok(out) if out.status.success() => {
                let _ = Command::new("ip").args(["netns", "del", &probe]).output();
            }
            other => {
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var_os("CI").is_none(),
                    "{test}: cannot create network namespaces under CI: {why}"
                );
                eprintln!(
                    "\n*** SKIPPED {test}: cannot create network namespaces ({why}); \
                     run the tests as root with iproute2 to test LAN behaviour ***\n"
                );
                return None;
            }
        }
        Some(Lan {
            tag,
            namespaces: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
        })
    }

    fn new_namespace(&self, kind: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let ns = format!("{}-{kind}{n}", self.tag);
        ip(&["netns", "add", &ns]);
        self.namespaces
            .lock()
            .expect("namespace list")
            .push(ns.clone());
        ns
    }

    /// A switch (a bridge) to plug hosts into.
    pub fn switch(&self) -> Switch {
        let ns = self.new_namespace("s");
        // No multicast snooping: the bridge floods multicast like a cheap
        // classroom switch, with no querier needed.
        ip(&[
            "-n",
            &ns,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip(&["-n", &ns, "link", "set", "br0", "up"]);
        Switch { ns, ports: 0 }
    }

    /// A host with no interfaces yet but loopback.
    pub fn host(&self) -> Host {
        let ns = self.new_namespace("h");
        // Link-local IPv6 addresses usable the moment a link is up.
        sh_in(
            &ns,
            "echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad && \
             echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad",
        );
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        Host {
            ns,
            interfaces: 0,
            has_default_route: false,
        }
    }

    /// Plugs `host` into `switch` with a new interface `ethN`, with the
    /// IPv4 address `cidr` (`198.18.0.2/24`) and its broadcast address
    /// (`brd +`) if given. The first IPv4 interface also gets the default
    /// route, so the seed programs' `<broadcast>` (255.255.255.255) has a
    /// way out. Returns the name.
    pub fn plug(&self, host: &mut Host, switch: &mut Switch, cidr: Option<&str>) -> String {
        self.plug_with(host, switch, cidr, true)
    }

    /// [`Lan::plug`] as a bare `ip addr add CIDR dev ethN` leaves it: no
    /// broadcast address on the interface (issue 17), which programs must
    /// cope with, since many hosts are configured that way.
    pub fn plug_without_brd(&self, host: &mut Host, switch: &mut Switch, cidr: &str) -> String {
        self.plug_with(host, switch, Some(cidr), false)
    }

    fn plug_with(
        &self,
        host: &mut Host,
        switch: &mut Switch,
        cidr: Option<&str>,
        brd: bool,
    ) -> String {
        let eth = format!("eth{}", host.interfaces);
        let port = format!("p{}", switch.ports);
        host.interfaces += 1;
        switch.ports += 1;
        ip(&[
            "-n", &switch.ns, "link", "add", &port, "type", "veth", "peer", "name", &eth, "netns",
            &host.ns,
        ]);
        ip(&[
            "-n", &switch.ns, "link", "set", &port, "master", "br0", "up",
        ]);
        if let Some(cidr) = cidr {
            let brd: &[&str] = if brd { &["brd", "+"] } else { &[] };
            let mut args = vec!["-n", &host.ns, "addr", "add", cidr];
            args.extend_from_slice(brd);
            args.extend_from_slice(&["dev", &eth]);
            ip(&args);
        }
        ip(&["-n", &host.ns, "link", "set", &eth, "up"]);
        if cidr.is_some() && !host.has_default_route {
            ip(&["-n", &host.ns, "route", "add", "default", "dev", &eth]);
            host.has_default_route = true;
        }
        eth
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let namespaces = match self.namespaces.lock() {
            Ok(list) => list.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        for ns in namespaces.iter().rev() {
            remove_namespace(ns);
        }
    }
}

impl Host {
    /// `PROGRAM ARGS...` to run inside this host.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, program]).args(args);
        cmd
    }

    /// `sockit ARGS...` inside this host.
    pub fn sockit(&self, args: &[&str]) -> Command {
        self.command(super::sockit_bin(), args)
    }

    /// A seed peer (python3 -u tests/peers/SCRIPT ARGS...) inside this host.
    pub fn python(&self, script: &str, args: &[&str]) -> Command {
        let path = super::peer_script(script);
        let mut all = vec!["-u", path.to_str().expect("peer path is UTF-8")];
        all.extend_from_slice(args);
        self.command("python3", &all)
    }

    /// Waits (bounded) until `eth`'s IPv6 link-local address is usable.
    pub fn wait_ipv6(&self, eth: &str) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let out = Command::new("ip")
                .args([
                    "-n", &self.ns, "-6", "addr", "show", "dev", eth, "scope", "link",
                ])
                .output()
                .expect("run ip");
            let text = String::from_utf8_lossy(&out.stdout);
            if text.contains("inet6") && !text.contains("tentative") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{eth} in {} got no IPv6 address: {text}",
                self.ns
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A process running in a namespace, its stdout read line by line.
pub struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Running {
    pub fn start(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn in namespace");
        let lines = line_channel(child.stdout.take().expect("stdout piped"));
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Starts `cmd` and waits for its first line to satisfy `ready`.
    pub fn ready(cmd: &mut Command, ready: impl Fn(&str) -> bool) -> Running {
        let mut running = Running::start(cmd);
        running.expect_line(ready);
        running
    }

    /// Reads lines until one satisfies `wanted` (bounded by LIMIT); returns it.
    pub fn expect_line(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    let err = self.stderr();
                    panic!(
                        "no expected line within {LIMIT:?}; saw {:?}; stderr: {err}",
                        self.seen
                    );
                }
            }
        }
    }

    /// Waits (bounded) for the process to exit; returns its status, all
    /// its stdout lines and its stderr.
    pub fn finish(mut self) -> (ExitStatus, Vec<String>, String) {
        let status = wait_bounded(&mut self.child, LIMIT);
        while let Ok(line) = self.lines.recv_timeout(LIMIT) {
            self.seen.push(line);
        }
        let err = self.stderr();
        (status, std::mem::take(&mut self.seen), err)
    }

    fn stderr(&mut self) -> String {
        let mut err = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut err);
        }
        err
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `ip ARGS...`, failing the test with ip's message if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sh_in(ns: &str, script: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", script])
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "in {ns}: {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills whatever still runs in `ns`, then deletes it (its interfaces go
/// with it).
fn remove_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).output();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).output();
}

/// Removes namespaces left behind by test processes that no longer run
/// (killed before their `Drop` could run).
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            remove_namespace(name);
        }
    }
}
