//! `sockit file receive`: accepts sessions (see `super::protocol`) and
//! writes what they carry into one directory, never outside it.
//!
//! Each connection runs on a blocking thread: the data path is plain
//! `read`/`write` with 1 MiB buffers in a three-stage pipeline per file
//! (receive, hash, write), so on two cores the network, BLAKE3 and the
//! page cache overlap. A file is received into a temporary
//! name in DIR (`protocol::partial_name`), verified, fsynced once at the
//! end, and then linked (or, with `--overwrite`, renamed) to its final name,
//! so a file under its final name is always complete and verified. A
//! transfer cut short keeps its temporary file for the next offer of the
//! same file to resume.
//!
//! Path safety: `protocol::safe_path` refuses absolute paths, `..` and
//! the like; here every directory on the way is checked with `lstat` and a
//! symlink or special file is refused, never followed. (A local user who
//! can swap a directory for a symlink in DIR between our check and our use
//! could still race us; DIR is assumed to belong to the receiving user.)
//!
//! This file is the server and the order of things: sessions, and each
//! file offer as offer -> accept -> stream -> verdict. The steps' work is
//! in the files beside it: `paths.rs` (where an entry may go),
//! `install.rs` (temporary files and their atomic install) and
//! `pipeline.rs` (the data stream).

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::install::{self, Busy, STALE_SCAN_MIN};
use super::paths::{self, Target};
use super::pipeline::{self, Complete, Streamed};
use super::protocol::{self, Code, DecodeError, Digest, Entry, Hello, Reason, Reply, partial_stem};
use crate::context::Context;
use crate::error::{Error, Result, cause};
use crate::service::{self, Listen, OnShutdown};
use crate::transport::{Fault, Stream};

use socket2::Socket;

/// Default for `--idle-timeout`: a sender silent for this long mid-session
/// is dropped, so a stalled or malicious peer cannot hold a connection
/// slot forever.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// At most this many sessions at once: each holds BUFFERS x PIECE bytes
/// of buffers (4 MiB; see `pipeline.rs`) and three threads while a file
/// streams.
const MAX_SESSIONS: usize = 32;

/// What `file receive` was asked to do.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where files go (canonical; created if missing).
    pub dir: PathBuf,
    /// Replace existing files.
    pub overwrite: bool,
    /// Stop after the first session.
    pub once: bool,
    /// How long a sender may send nothing mid-session.
    pub idle_timeout: Duration,
    /// Partial files untouched for longer are removed (see
    /// `install::sweep_partials`).
    pub keep_partial: Duration,
    /// Partial files beyond this many bytes in all are removed, oldest
    /// first.
    pub max_partial: u64,
}

/// Default for `--keep-partial`: a week to come back and resume.
pub const DEFAULT_KEEP_PARTIAL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Default for `--max-partial`, in bytes (4 GiB).
pub const DEFAULT_MAX_PARTIAL: u64 = 4 << 30;

/// How often kept partial files are swept while the receiver runs.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// State shared by all sessions.
struct Shared {
    config: Config,
    /// Temporary names in use (see [`Busy`]).
    busy: Busy,
}

/// How a session went, for `--once`'s exit code.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    failed: usize,
    /// False for a peer that never said hello (not a transfer at all).
    transfer: bool,
}

/// Prepares DIR: creates it if missing and returns its canonical path.
pub fn prepare_dir(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let canonical = fs::canonicalize(dir)
        .map_err(|e| Error::io(format!("cannot open {}", dir.display()), e))?;
    if !canonical.is_dir() {
        return Err(Error::Input {
            what: format!("cannot receive into {}", dir.display()),
            why: "not a directory".into(),
        });
    }
    Ok(canonical)
}

/// Serves sessions until `shutdown` is cancelled (or, with `--once`, until
/// the first transfer ends: its failures then make the exit code 1).
pub async fn run(listen: Listen, config: Config, ctx: Context) -> Result<()> {
    let shutdown = ctx.shutdown;
    let once = config.once;
    let shared = Arc::new(Shared {
        config,
        busy: Busy::default(),
    });
    sweep(&shared);
    let sweeper = tokio::spawn(sweep_every(shared.clone()));
    let outcome = serve(listen, shared, once, shutdown).await;
    sweeper.abort();
    outcome
}

/// Sweeps kept partial files every [`SWEEP_EVERY`].
async fn sweep_every(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let shared = shared.clone();
        let _ = tokio::task::spawn_blocking(move || sweep(&shared)).await;
    }
}

/// One sweep of kept partial files, reported when it removed any.
fn sweep(shared: &Shared) {
    let config = &shared.config;
    let swept = install::sweep_partials(
        &config.dir,
        &shared.busy,
        config.keep_partial,
        config.max_partial,
    );
    if swept.files > 0 {
        report(&format!(
            "removed {} partial file{} ({} bytes): untouched for {} days or over the {} byte cap",
            swept.files,
            if swept.files == 1 { "" } else { "s" },
            swept.bytes,
            config.keep_partial.as_secs_f64() / 86_400.0,
            config.max_partial
        ));
    }
}

async fn serve(
    mut listen: Listen,
    shared: Arc<Shared>,
    once: bool,
    shutdown: CancellationToken,
) -> Result<()> {
    if !once {
        listen.max_connections = listen.max_connections.min(MAX_SESSIONS);
        service::serve_tcp(
            listen,
            shutdown,
            OnShutdown::Finish,
            move |stream, peer, token| {
                let shared = shared.clone();
                async move { connection(stream, peer, shared, token).await.map(|_| ()) }
            },
        )
        .await;
        return Ok(());
    }
    // --once: one connection at a time through the same accept loop; the
    // first one that carried a transfer ends the server with its verdict
    // (a connection that sent no transfer, a port scan say, does not).
    listen.max_connections = 1;
    let done = shutdown.child_token();
    let verdict: Arc<Mutex<Option<Result<()>>>> = Arc::default();
    let (stop, result) = (done.clone(), verdict.clone());
    service::serve_tcp(
        listen,
        done,
        OnShutdown::Finish,
        move |stream, peer, token| {
            let (shared, stop, result) = (shared.clone(), stop.clone(), result.clone());
            async move {
                let outcome = match connection(stream, peer, shared, token).await {
                    Err(e) => Err(Error::io(format!("transfer from {peer} failed"), e)),
                    Ok(tally) if !tally.transfer => return Ok(()),
                    Ok(tally) if tally.failed > 0 => Err(Error::Incomplete {
                        what: format!("transfer from {peer}"),
                        failed: tally.failed,
                        total: tally.ok + tally.failed,
                    }),
                    Ok(_) => Ok(()),
                };
                if let Ok(mut slot) = result.lock() {
                    *slot = Some(outcome);
                }
                stop.cancel();
                Ok(())
            }
        },
    )
    .await;
    let outcome = verdict.lock().ok().and_then(|mut slot| slot.take());
    outcome.unwrap_or(Ok(()))
}

/// Runs one session on a blocking thread; on shutdown the socket is shut
/// down under it, which ends the session promptly (its partial file is
/// kept for a resume).
async fn connection(
    stream: Stream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> io::Result<Tally> {
    let (stream, bridge) = stream.into_blocking()?;
    let handle = stream.try_clone()?;
    let idle = shared.config.idle_timeout;
    let fault = bridge.fault();
    let job = tokio::task::spawn_blocking(move || session(stream, peer, &shared, fault));
    tokio::pin!(job);
    let tally = tokio::select! {
        done = &mut job => done.map_err(io::Error::other)?,
        _ = shutdown.cancelled() => {
            let _ = handle.shutdown(Shutdown::Both);
            Ok(Tally::default())
        }
    };
    drop(handle);
    // A TLS session ends once the bridge has passed our last reply on.
    bridge.finish(idle).await;
    tally
}

/// One session, start to end: the hello, then entries until the sender
/// ends the session. Errors end the connection; refusals of single
/// entries do not.
fn session(stream: Socket, peer: SocketAddr, shared: &Shared, fault: Fault) -> io::Result<Tally> {
    stream.set_read_timeout(Some(shared.config.idle_timeout))?;
    stream.set_write_timeout(Some(shared.config.idle_timeout))?;
    let mut s = Session {
        shared,
        tally: Tally::default(),
        reader: BufReader::with_capacity(64 << 10, stream.try_clone()?),
        stream: &stream,
        peer,
        fault,
        created: Vec::new(),
    };
    if !s.greet()? {
        return Ok(s.tally);
    }
    s.tally.transfer = true;
    let ended = s.entries();
    // A transfer that did not end as the sender meant leaves no empty
    // directories of its own behind (a resume makes them again).
    if !matches!(ended, Ok(true)) {
        let removed = paths::remove_empty(&s.created);
        if removed > 0 {
            report(&format!(
                "removed {removed} empty director{} of the abandoned transfer from {peer}",
                if removed == 1 { "y" } else { "ies" }
            ));
        }
    }
    ended.map(|_| s.tally)
}

impl Session<'_> {
    /// Entries until the session is over: `Ok(true)` when the sender ended
    /// it as planned.
    fn entries(&mut self) -> io::Result<bool> {
        let stream = self.stream;
        loop {
            let Some(entry) = self.next_entry() else {
                return Ok(false);
            };
            let outcome = match entry {
                Entry::End => {
                    // Read the sender's FIN before closing, so nothing
                    // unread makes our close a reset.
                    close_after_peer(stream);
                    return Ok(true);
                }
                Entry::Dir { path, mode } => {
                    self.receive_dir(&path, mode)?;
                    Step::Next
                }
                Entry::File {
                    path,
                    mode,
                    size,
                    identity,
                } => {
                    let offer = Offer {
                        path,
                        mode,
                        size,
                        identity,
                    };
                    self.receive_file(&offer)?
                }
            };
            if let Step::Stop = outcome {
                close_after_peer(stream);
                return Ok(false);
            }
        }
    }
}

/// What to do after an entry.
enum Step {
    Next,
    /// The sender broke the protocol: say so (done) and end the session.
    Stop,
}

/// A file offer from the sender.
pub(super) struct Offer {
    pub(super) path: Vec<u8>,
    pub(super) mode: u32,
    pub(super) size: u64,
    pub(super) identity: u64,
}

/// An accepted file offer whose data follows, from `start`: into `file`
/// (positioned there), with `hasher` holding the BLAKE3 state of the bytes
/// before it.
struct Accepted {
    file: File,
    start: u64,
    hasher: blake3::Hasher,
}

/// One session's connection and running tally: what every step of an
/// entry reads from, answers on and counts into.
struct Session<'a> {
    shared: &'a Shared,
    tally: Tally,
    /// The reading side (a clone of `stream`), buffered for the headers.
    reader: BufReader<Socket>,
    /// The writing side: replies go straight out, unbuffered.
    stream: &'a Socket,
    peer: SocketAddr,
    /// A TLS session's failure, named instead of its echo on `stream`.
    fault: Fault,
    /// Directories this session created, parents first.
    created: Vec<PathBuf>,
}

impl Session<'_> {
    /// Reads the sender's hello and answers it. False if the session ends
    /// here: the peer is no sender, or speaks another protocol version
    /// (either way it was told).
    fn greet(&mut self) -> io::Result<bool> {
        let peer = self.peer;
        let mut hello = [0u8; 12];
        if let Err(e) = self.reader.read_exact(&mut hello) {
            tracing::debug!("{peer}: no hello ({e})");
            refuse_foreign(self.stream);
            return Ok(false);
        }
        match protocol::check_hello(&hello) {
            Hello::Ok => {}
            Hello::Foreign => {
                tracing::warn!("{peer}: not a sockit sender; told it so");
                refuse_foreign(self.stream);
                return Ok(false);
            }
            Hello::Version(v) => {
                let mut out = protocol::hello().to_vec();
                out.extend(
                    Reply::Refused(Reason::new(
                        Code::Protocol,
                        format!(
                            "protocol version {v} is not supported (this receiver speaks {})",
                            protocol::VERSION
                        ),
                    ))
                    .encode(),
                );
                self.write(&out)?;
                close_after_peer(self.stream);
                return Ok(false);
            }
        }
        self.write(&protocol::hello())?;
        Ok(true)
    }

    /// The sender's next entry; None once the session is over (the sender
    /// left, or broke the protocol and was told so).
    fn next_entry(&mut self) -> Option<Entry> {
        let peer = self.peer;
        match Entry::decode(&mut self.reader) {
            Ok(Some(entry)) => Some(entry),
            Ok(None) => {
                tracing::warn!("{peer}: the sender left without ending the session");
                None
            }
            Err(DecodeError::Io(e)) => {
                self.lost(&e, &format!("{peer}"));
                None
            }
            Err(DecodeError::Bad(why)) => {
                tracing::warn!("{peer}: protocol error ({why})");
                let _ = self.write(&Reply::Refused(Reason::new(Code::Protocol, why)).encode());
                close_after_peer(self.stream);
                None
            }
        }
    }

    /// Handles one directory entry: created (with its parents), or refused.
    fn receive_dir(&mut self, path: &[u8], mode: u32) -> io::Result<()> {
        let peer = self.peer;
        let reply = match paths::make_dir(&self.shared.config, path, mode, &mut self.created) {
            Ok(shown) => {
                report(&format!("received {shown}/ from {peer}"));
                self.tally.ok += 1;
                Reply::Ok
            }
            Err(reason) => {
                report(&format!(
                    "refused {}/ from {peer} ({})",
                    crate::text::printable(path),
                    reason.message
                ));
                self.tally.failed += 1;
                Reply::Refused(reason)
            }
        };
        self.write(&reply.encode())
    }

    /// Handles one file offer: offer (checked, and its temporary name
    /// claimed), accept, stream, verdict.
    fn receive_file(&mut self, offer: &Offer) -> io::Result<Step> {
        let shared = self.shared;
        let target = match paths::check_offer(&shared.config, offer, &mut self.created) {
            Ok(t) => t,
            Err(reason) => {
                self.refuse(offer, reason)?;
                return Ok(Step::Next);
            }
        };
        let Some(_guard) = shared.busy.claim(&target.partial_name) else {
            let reason = Reason::new(
                Code::Busy,
                "it is being received from another sender right now",
            );
            self.refuse(offer, reason)?;
            return Ok(Step::Next);
        };
        let Accepted {
            file,
            start,
            hasher,
        } = match self.accept(offer, &target)? {
            ControlFlow::Continue(accepted) => accepted,
            ControlFlow::Break(step) => return Ok(step),
        };
        let expected = offer.size - start;
        let streamed = pipeline::stream_data(&mut self.reader, file, hasher, expected);
        self.verdict(offer, &target, streamed, start, expected)
    }

    /// Opens the offer's temporary file, tells the sender how much of the
    /// file it already holds, and reads where the sender starts. `Break`
    /// when no data follows for this offer (the sender was told why): the
    /// session goes on as the step says.
    fn accept(
        &mut self,
        offer: &Offer,
        target: &Target,
    ) -> io::Result<ControlFlow<Step, Accepted>> {
        let peer = self.peer;
        let (mut file, held, prefix) = match install::open_partial(target, offer.size) {
            Ok(opened) => opened,
            Err(e) => {
                let reason = io_reason("cannot create a temporary file", &e);
                self.refuse(offer, reason)?;
                return Ok(ControlFlow::Break(Step::Next));
            }
        };
        if held == 0 && offer.size >= STALE_SCAN_MIN {
            let rel = String::from_utf8_lossy(&offer.path).into_owned();
            let shared = self.shared;
            install::remove_stale(
                &shared.config.dir,
                &shared.busy,
                &partial_stem(&rel),
                &target.partial_name,
            );
        }
        let prefix_digest: Digest = *prefix.clone().finalize().as_bytes();
        self.write(
            &Reply::Accept {
                offset: held,
                prefix: prefix_digest,
            }
            .encode(),
        )?;

        let start = match protocol::read_start(&mut self.reader) {
            Ok(s) => s,
            Err(DecodeError::Io(e)) => {
                self.lost(&e, &format!("{peer}: '{}'", target.shown));
                return Ok(ControlFlow::Break(Step::Stop));
            }
            Err(e) => {
                tracing::warn!("{peer}: '{}': connection lost ({e})", target.shown);
                return Ok(ControlFlow::Break(Step::Stop));
            }
        };
        let hasher = if start == held {
            prefix
        } else if start == 0 {
            blake3::Hasher::new()
        } else {
            let why = format!("start offset {start} is neither 0 nor the offered {held}");
            self.refuse(offer, Reason::new(Code::Protocol, why))?;
            return Ok(ControlFlow::Break(Step::Stop));
        };
        if let Err(e) = install::seek_partial(&mut file, held, start) {
            // The data is already on its way: refuse and end the session
            // rather than read it all only to discard it.
            let reason = io_reason("cannot prepare the temporary file", &e);
            self.refuse(offer, reason)?;
            return Ok(ControlFlow::Break(Step::Stop));
        }
        Ok(ControlFlow::Continue(Accepted {
            file,
            start,
            hasher,
        }))
    }

    /// Acts on how the data stream ended and gives the sender its verdict
    /// (unless it already has it, or the connection is gone). The
    /// temporary file is kept only where a resume can use it.
    fn verdict(
        &mut self,
        offer: &Offer,
        target: &Target,
        streamed: Streamed,
        start: u64,
        expected: u64,
    ) -> io::Result<Step> {
        let peer = self.peer;
        let result = match streamed {
            Streamed::Lost(e) => {
                let held = fs::metadata(&target.partial).map(|m| m.len()).unwrap_or(0);
                self.tally.failed += 1;
                let why = match self.idle(&e) {
                    Some(idle) => {
                        self.tell_idle(&idle);
                        idle
                    }
                    None => self.fault.explain(&e),
                };
                report(&format!(
                    "interrupted {} from {peer} at {held} of {} bytes ({why}); kept for a resume",
                    target.shown, offer.size,
                ));
                return Ok(Step::Stop);
            }
            Streamed::Protocol(why) => {
                let _ = fs::remove_file(&target.partial);
                self.refuse(offer, Reason::new(Code::Protocol, why))?;
                return Ok(Step::Stop);
            }
            Streamed::WriteFailed { error, early } => {
                let _ = fs::remove_file(&target.partial);
                let reason = io_reason("cannot write it", &error);
                // The verdict went out as soon as the write failed (`early`),
                // unless the failure came with the last chunk.
                if early {
                    self.tally.failed += 1;
                    report(&format!(
                        "refused {} from {peer} ({})",
                        target.shown, reason.message
                    ));
                } else {
                    self.refuse(offer, reason)?;
                }
                return Ok(Step::Next);
            }
            Streamed::Aborted { file } => {
                drop(file);
                Err(Reason::new(
                    Code::Aborted,
                    "the sender aborted; the part received is kept for a resume",
                ))
            }
            Streamed::Done(complete) => self.install_verified(offer, target, complete, expected),
        };
        match result {
            Ok(()) => {
                self.tally.ok += 1;
                let resumed = if start > 0 {
                    format!(", resumed at {start}")
                } else {
                    String::new()
                };
                report(&format!(
                    "received {} ({} bytes{resumed}) from {peer}",
                    target.shown, offer.size
                ));
                self.write(&Reply::Ok.encode())?;
            }
            Err(reason) => self.refuse(offer, reason)?,
        }
        Ok(Step::Next)
    }

    /// Installs a completely streamed file if it is all there and its
    /// BLAKE3 matches the sender's; otherwise removes it (nothing in it
    /// can be resumed).
    fn install_verified(
        &self,
        offer: &Offer,
        target: &Target,
        complete: Complete,
        expected: u64,
    ) -> Result<(), Reason> {
        let Complete {
            file,
            hasher,
            digest,
            received,
        } = complete;
        if received != expected {
            let _ = fs::remove_file(&target.partial);
            Err(Reason::new(
                Code::Aborted,
                format!("only {received} of {expected} bytes arrived before the end marker"),
            ))
        } else if hasher.finalize().as_bytes() != &digest {
            let _ = fs::remove_file(&target.partial);
            Err(Reason::new(
                Code::Corrupt,
                "corrupted in transit (BLAKE3 mismatch); nothing was written",
            ))
        } else {
            install::install(&self.shared.config, target, file, offer.mode)
        }
    }

    /// Refuses an offered file: reported here, counted, and sent to the
    /// sender.
    fn refuse(&mut self, offer: &Offer, reason: Reason) -> io::Result<()> {
        let peer = self.peer;
        report(&format!(
            "refused {} from {peer} ({})",
            crate::text::printable(&offer.path),
            reason.message
        ));
        self.tally.failed += 1;
        self.write(&Reply::Refused(reason).encode())
    }

    /// `sender idle for N s, closed` if `e` is the idle timeout running
    /// out (a read timeout is `EAGAIN` on Linux).
    fn idle(&self, e: &io::Error) -> Option<String> {
        matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        )
        .then(|| {
            format!(
                "sender idle for {} s, closed",
                self.shared.config.idle_timeout.as_secs_f64()
            )
        })
    }

    /// The connection ended under `what` (the peer, the file): said in
    /// the log, and to a sender that went idle, why it is closed.
    fn lost(&self, e: &io::Error, what: &str) {
        match self.idle(e) {
            Some(idle) => {
                report(&format!("{what}: {idle}"));
                self.tell_idle(&idle);
            }
            None => tracing::warn!("{what}: connection lost ({})", self.fault.explain(e)),
        }
    }

    /// Tells an idle sender (which may be reading) why it is closed.
    fn tell_idle(&self, idle: &str) {
        let _ = self.write(&Reply::Refused(Reason::new(Code::Aborted, idle)).encode());
        close_after_peer(self.stream);
    }

    fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let mut writer = self.stream;
        writer.write_all(bytes)
    }
}

/// A refusal for a local failure, in the words the sender reads: what we
/// could not do, and why.
pub(super) fn io_reason(what: &str, e: &io::Error) -> Reason {
    Reason::new(Code::Io, format!("{what} on the receiver ({})", cause(e)))
}

/// A received line for the user: one per entry, on stdout.
fn report(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Tells a peer that is not `sockit file send` what this port is, then
/// closes without a reset.
fn refuse_foreign(stream: &Socket) {
    let mut w = stream;
    let _ = w.write_all(protocol::NOT_A_SENDER.as_bytes());
    close_after_peer(stream);
}

/// Half-closes, then reads (a bounded amount, for a bounded time) until
/// the peer closes too, so our close never turns into a reset that could
/// destroy the last bytes we sent.
fn close_after_peer(stream: &Socket) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut sink = [0u8; 16 << 10];
    let mut r = stream;
    for _ in 0..256 {
        match r.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}
