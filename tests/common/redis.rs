//! A real `redis-server` per test, on a free loopback port, without
//! persistence (a restart comes back empty, as an unpersisted Redis
//! does). Killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;

use super::{LIMIT, closed_port, require};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// Also listening on this unix socket (in a directory of its own).
    socket: Option<PathBuf>,
}

impl RedisServer {
    /// Starts one on a port nothing listens on (tried again on another if
    /// someone takes it first).
    pub fn start() -> RedisServer {
        RedisServer::start_with(None)
    }

    /// The same, also listening on a unix socket in a fresh directory.
    pub fn start_unix() -> RedisServer {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sockit-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("make the socket's directory");
        RedisServer::start_with(Some(dir.join("redis.sock")))
    }

    fn start_with(socket: Option<PathBuf>) -> RedisServer {
        require("redis-server");
        for _ in 0..5 {
            let port = closed_port();
            if let Some(child) = spawn(port, socket.as_deref()) {
                return RedisServer {
                    child: Some(child),
                    port,
                    socket,
                };
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// `unix:///DIR/redis.sock` (for one started with `start_unix`).
    pub fn unix_url(&self) -> String {
        let socket = self.socket.as_ref().expect("started with start_unix");
        format!("unix://{}", socket.display())
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (as a crash or `systemctl stop` would end it).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Some(
            spawn(self.port, self.socket.as_deref()).expect("redis-server restarts on its port"),
        );
    }

    /// Runs `redis-cli -p PORT ARGS...` and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.socket.as_ref().and_then(|s| s.parent()) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Starts `redis-server` on `port` and waits until it accepts
/// connections; `None` if it exits first (the port was taken).
fn spawn(port: u16, socket: Option<&Path>) -> Option<Child> {
    let mut cmd = Command::new("redis-server");
    if let Some(socket) = socket {
        cmd.arg("--unixsocket")
            .arg(socket)
            .args(["--unixsocketperm", "700"]);
    }
    let mut child = cmd
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--logfile", ""])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server runs");
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    };
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("Ready to accept connections") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(LIMIT).is_ok() {
        Some(child)
    } else {
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}
