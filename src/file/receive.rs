//! `sockit file receive`: accepts sessions (see [`super::protocol`]) and
//! writes what they carry into one directory, never outside it.
//!
//! Each connection runs on a blocking thread: the data path is plain
//! `read`/`write` with 1 MiB buffers in a three-stage pipeline per file
//! (receive, hash, write), so on two cores the network, BLAKE3 and the
//! page cache overlap. A file is received into a temporary
//! name in DIR ([`protocol::partial_name`]), verified, fsynced once at the
//! end, and then linked (or, with `--overwrite`, renamed) to its final name,
//! so a file under its final name is always complete and verified. A
//! transfer cut short keeps its temporary file for the next offer of the
//! same file to resume.
//!
//! Path safety: [`protocol::safe_path`] refuses absolute paths, `..` and
//! the like; here every directory on the way is checked with `lstat` and a
//! symlink or special file is refused, never followed. (A local user who
//! can swap a directory for a symlink in DIR between our check and our use
//! could still race us; DIR is assumed to belong to the receiving user.)

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::protocol::{
    self, Code, Data, DecodeError, Entry, Hello, Reason, Reply, partial_name, partial_stem,
};
use crate::context::Context;
use crate::error::{Error, Result, cause};
use crate::service::{self, Listen, OnShutdown};
use crate::sys;
use crate::transport::Stream;

/// A sender silent for this long mid-session is dropped, so a stalled or
/// malicious peer cannot hold a connection slot forever.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// At most this many sessions at once: each holds BUFFERS x PIECE bytes
/// of buffers (4 MiB) and three threads while a file streams.
const MAX_SESSIONS: usize = 32;

/// Buffers in flight through the receiving, hashing and writing threads.
const BUFFERS: usize = 4;

/// Size of those buffers: data moves through the pipeline in pieces this
/// big (256 KiB pieces, which stay in a smaller cache, measured no faster).
/// Memory per session: BUFFERS x PIECE.
const PIECE: usize = 1 << 20;

/// The writer asks the kernel to start writing back after this many bytes
/// (see [`start_writeback`]).
const WRITEBACK_EVERY: usize = 16 << 20;

/// Temporary files are created owner-only; the sender's mode is applied
/// just before the file gets its final name.
const PARTIAL_MODE: u32 = 0o600;

/// Stale partials of older versions of a path are looked for (a scan of
/// DIR) only when a new partial of at least this size is started: small
/// ones are not worth a directory scan per file.
const STALE_SCAN_MIN: u64 = 1 << 20;

/// What `file receive` was asked to do.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where files go (canonical; created if missing).
    pub dir: PathBuf,
    /// Replace existing files.
    pub overwrite: bool,
    /// Stop after the first session.
    pub once: bool,
}

/// State shared by all sessions.
struct Shared {
    config: Config,
    /// Temporary names in use: two senders of the same file at once would
    /// otherwise write into one temporary file.
    busy: Mutex<HashSet<String>>,
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
pub async fn run(mut listen: Listen, config: Config, ctx: Context) -> Result<()> {
    let shutdown = ctx.shutdown;
    let once = config.once;
    let shared = Arc::new(Shared {
        config,
        busy: Mutex::new(HashSet::new()),
    });
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
    let stream = stream
        .into_plain()
        .ok_or_else(|| io::Error::other("file transfer runs over plain TCP only"))?
        .into_std()?;
    stream.set_nonblocking(false)?;
    let handle = stream.try_clone()?;
    let job = tokio::task::spawn_blocking(move || session(stream, peer, &shared));
    tokio::pin!(job);
    tokio::select! {
        done = &mut job => done.map_err(io::Error::other)?,
        _ = shutdown.cancelled() => {
            let _ = handle.shutdown(Shutdown::Both);
            Ok(Tally::default())
        }
    }
}

/// One session, start to end. Errors end the connection; refusals of
/// single entries do not.
fn session(stream: TcpStream, peer: SocketAddr, shared: &Shared) -> io::Result<Tally> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let mut tally = Tally::default();
    let mut reader = BufReader::with_capacity(64 << 10, stream.try_clone()?);
    let mut writer = &stream;

    let mut hello = [0u8; 12];
    if let Err(e) = reader.read_exact(&mut hello) {
        tracing::debug!("{peer}: no hello ({e})");
        refuse_foreign(&stream);
        return Ok(tally);
    }
    match protocol::check_hello(&hello) {
        Hello::Ok => {}
        Hello::Foreign => {
            tracing::warn!("{peer}: not a sockit sender; told it so");
            refuse_foreign(&stream);
            return Ok(tally);
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
            writer.write_all(&out)?;
            close_after_peer(&stream);
            return Ok(tally);
        }
    }
    writer.write_all(&protocol::hello())?;
    tally.transfer = true;

    loop {
        let entry = match Entry::decode(&mut reader) {
            Ok(Some(entry)) => entry,
            Ok(None) => {
                tracing::warn!("{peer}: the sender left without ending the session");
                return Ok(tally);
            }
            Err(DecodeError::Io(e)) => {
                tracing::warn!("{peer}: connection lost ({})", cause(&e));
                return Ok(tally);
            }
            Err(DecodeError::Bad(why)) => {
                tracing::warn!("{peer}: protocol error ({why})");
                let _ =
                    writer.write_all(&Reply::Refused(Reason::new(Code::Protocol, why)).encode());
                close_after_peer(&stream);
                return Ok(tally);
            }
        };
        let outcome = match entry {
            Entry::End => {
                // Read the sender's FIN before closing, so nothing unread
                // makes our close a reset.
                close_after_peer(&stream);
                return Ok(tally);
            }
            Entry::Dir { path, mode } => {
                let reply = match make_dir(&shared.config, &path, mode) {
                    Ok(shown) => {
                        report(&format!("received {shown}/ from {peer}"));
                        tally.ok += 1;
                        Reply::Ok
                    }
                    Err(reason) => {
                        report(&format!(
                            "refused {}/ from {peer} ({})",
                            crate::text::printable(&path),
                            reason.message
                        ));
                        tally.failed += 1;
                        Reply::Refused(reason)
                    }
                };
                writer.write_all(&reply.encode())?;
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
                receive_file(shared, &offer, &mut reader, &stream, peer, &mut tally)?
            }
        };
        if let Step::Stop = outcome {
            close_after_peer(&stream);
            return Ok(tally);
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
struct Offer {
    path: Vec<u8>,
    mode: u32,
    size: u64,
    identity: u64,
}

/// A received line for the user: one per entry, on stdout.
fn report(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Tells a peer that is not `sockit file send` what this port is, then
/// closes without a reset.
fn refuse_foreign(stream: &TcpStream) {
    let mut w = stream;
    let _ = w.write_all(protocol::NOT_A_SENDER.as_bytes());
    close_after_peer(stream);
}

/// Half-closes, then reads (a bounded amount, for a bounded time) until
/// the peer closes too, so our close never turns into a reset that could
/// destroy the last bytes we sent.
fn close_after_peer(stream: &TcpStream) {
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

/// The directory `parts` leads to under `root`, created where missing.
/// Every existing component is checked with `lstat`: a symlink or a
/// non-directory in the way is refused, never followed.
fn make_parents(root: &Path, parts: &[&str]) -> Result<PathBuf, Reason> {
    let mut at = root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let here = || crate::text::printable(parts[..=i].join("/").as_bytes());
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(Reason::new(
                    Code::Unsafe,
                    format!(
                        "'{}' is a symlink on the receiver; it is never followed",
                        here()
                    ),
                ));
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(Reason::new(
                    Code::Unsafe,
                    format!("'{}' is a file on the receiver, not a directory", here()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Err(e) = fs::create_dir(&at)
                    && e.kind() != io::ErrorKind::AlreadyExists
                {
                    return Err(io_reason(
                        &format!("cannot create directory '{}'", here()),
                        &e,
                    ));
                }
                // Created by us, or by a racing session: check it again.
                match fs::symlink_metadata(&at) {
                    Ok(meta) if meta.is_dir() => {}
                    _ => {
                        return Err(Reason::new(
                            Code::Unsafe,
                            format!("'{}' changed on the receiver while it was checked", here()),
                        ));
                    }
                }
            }
            Err(e) => return Err(io_reason(&format!("cannot check '{}'", here()), &e)),
        }
    }
    Ok(at)
}

fn io_reason(what: &str, e: &io::Error) -> Reason {
    Reason::new(Code::Io, format!("{what} on the receiver ({})", cause(e)))
}

/// Creates a received directory (and its parents) and applies its mode
/// (always keeping it writable and searchable for us).
fn make_dir(config: &Config, path: &[u8], mode: u32) -> Result<String, Reason> {
    let parts = protocol::safe_path(path).map_err(|m| Reason::new(Code::Unsafe, m))?;
    let shown = crate::text::printable(path);
    let dir = make_parents(&config.dir, &parts)?;
    let _ = fs::set_permissions(&dir, fs::Permissions::from_mode((mode & 0o777) | 0o700));
    Ok(shown)
}

/// Where a checked file offer will go.
struct Target {
    /// Final path.
    dest: PathBuf,
    /// Temporary path in DIR.
    partial: PathBuf,
    /// The temporary file's name, as held in `Shared::busy`.
    partial_name: String,
    /// The path as the user should read it.
    shown: String,
}

/// Checks an offer and works out its target; refusals go to the sender.
fn check_offer(config: &Config, offer: &Offer) -> Result<Target, Reason> {
    let parts = protocol::safe_path(&offer.path).map_err(|m| Reason::new(Code::Unsafe, m))?;
    let shown = crate::text::printable(&offer.path);
    let (name, parents) = parts
        .split_last()
        .ok_or_else(|| Reason::new(Code::Unsafe, "empty"))?;
    let parent = make_parents(&config.dir, parents)?;
    let dest = parent.join(name);
    match fs::symlink_metadata(&dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_reason("cannot check it", &e)),
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(Reason::new(
                Code::Unsafe,
                "it is a symlink on the receiver, which is never replaced",
            ));
        }
        Ok(meta) if meta.is_dir() => {
            return Err(Reason::new(
                Code::Unsafe,
                "it is a directory on the receiver",
            ));
        }
        Ok(meta) if !meta.is_file() => {
            return Err(Reason::new(
                Code::Unsafe,
                "it is a device or other special file on the receiver",
            ));
        }
        Ok(_) if !config.overwrite => {
            return Err(Reason::new(
                Code::Exists,
                "it already exists on the receiver (started without --overwrite)",
            ));
        }
        Ok(_) => {}
    }
    let rel = parts.join("/");
    let partial_name = partial_name(&rel, offer.size, offer.identity);
    Ok(Target {
        dest,
        partial: config.dir.join(&partial_name),
        partial_name,
        shown,
    })
}

/// Releases a temporary name from `Shared::busy` when the transfer ends.
struct BusyGuard<'a> {
    shared: &'a Shared,
    name: String,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut busy) = self.shared.busy.lock() {
            busy.remove(&self.name);
        }
    }
}

fn claim<'a>(shared: &'a Shared, name: &str) -> Option<BusyGuard<'a>> {
    let mut busy = shared.busy.lock().ok()?;
    if !busy.insert(name.to_string()) {
        return None;
    }
    Some(BusyGuard {
        shared,
        name: name.to_string(),
    })
}

/// Removes temporary files of older versions of the same path (another
/// size or identity), which can never be resumed now.
fn remove_stale(shared: &Shared, rel_stem: &str, keep: &str) {
    let Ok(entries) = fs::read_dir(&shared.config.dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(rel_stem) && name != keep {
            // Skip ones another session is writing right now.
            if let Some(_guard) = claim(shared, name) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// The temporary file, opened for resuming: its length and the BLAKE3
/// state over that prefix.
fn open_partial(target: &Target, size: u64) -> io::Result<(File, u64, blake3::Hasher)> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(PARTIAL_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&target.partial)?;
    let held = file.metadata()?.len();
    let mut hasher = blake3::Hasher::new();
    if held > size {
        file.set_len(0)?;
        return Ok((file, 0, hasher));
    }
    if held > 0 {
        let mut buf = vec![0u8; 1 << 20];
        let mut left = held;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            file.read_exact(&mut buf[..want])?;
            hasher.update(&buf[..want]);
            left -= want as u64;
        }
    }
    Ok((file, held, hasher))
}

/// Handles one file offer: answer, data, verdict.
fn receive_file(
    shared: &Shared,
    offer: &Offer,
    reader: &mut BufReader<TcpStream>,
    stream: &TcpStream,
    peer: SocketAddr,
    tally: &mut Tally,
) -> io::Result<Step> {
    let mut writer = stream;
    let refuse = |writer: &mut &TcpStream, tally: &mut Tally, reason: Reason| {
        report(&format!(
            "refused {} from {peer} ({})",
            crate::text::printable(&offer.path),
            reason.message
        ));
        tally.failed += 1;
        writer.write_all(&Reply::Refused(reason).encode())
    };
    let target = match check_offer(&shared.config, offer) {
        Ok(t) => t,
        Err(reason) => {
            refuse(&mut writer, tally, reason)?;
            return Ok(Step::Next);
        }
    };
    let Some(_guard) = claim(shared, &target.partial_name) else {
        let reason = Reason::new(
            Code::Busy,
            "it is being received from another sender right now",
        );
        refuse(&mut writer, tally, reason)?;
        return Ok(Step::Next);
    };
    let (mut file, held, prefix) = match open_partial(&target, offer.size) {
        Ok(opened) => opened,
        Err(e) => {
            let reason = io_reason("cannot create a temporary file", &e);
            refuse(&mut writer, tally, reason)?;
            return Ok(Step::Next);
        }
    };
    if held == 0 && offer.size >= STALE_SCAN_MIN {
        let rel = String::from_utf8_lossy(&offer.path).into_owned();
        remove_stale(shared, &partial_stem(&rel), &target.partial_name);
    }
    let prefix_digest: [u8; 32] = *prefix.clone().finalize().as_bytes();
    writer.write_all(
        &Reply::Accept {
            offset: held,
            prefix: prefix_digest,
        }
        .encode(),
    )?;

    let start = match protocol::read_start(reader) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("{peer}: '{}': connection lost ({e})", target.shown);
            return Ok(Step::Stop);
        }
    };
    let hasher = if start == held {
        prefix
    } else if start == 0 {
        blake3::Hasher::new()
    } else {
        let why = format!("start offset {start} is neither 0 nor the offered {held}");
        refuse(&mut writer, tally, Reason::new(Code::Protocol, why))?;
        return Ok(Step::Stop);
    };
    let positioned = if start == held {
        Ok(())
    } else {
        file.set_len(0)
    };
    if let Err(e) = positioned.and_then(|()| file.seek(SeekFrom::Start(start)).map(|_| ())) {
        // The data is already on its way: refuse and end the session
        // rather than read it all only to discard it.
        refuse(
            &mut writer,
            tally,
            io_reason("cannot prepare the temporary file", &e),
        )?;
        return Ok(Step::Stop);
    }

    let expected = offer.size - start;
    let streamed = stream_data(reader, file, hasher, expected);
    let result = match streamed {
        Streamed::Lost(e) => {
            let held = fs::metadata(&target.partial).map(|m| m.len()).unwrap_or(0);
            tally.failed += 1;
            report(&format!(
                "interrupted {} from {peer} at {held} of {} bytes ({}); kept for a resume",
                target.shown,
                offer.size,
                cause(&e)
            ));
            return Ok(Step::Stop);
        }
        Streamed::Protocol(why) => {
            let _ = fs::remove_file(&target.partial);
            refuse(&mut writer, tally, Reason::new(Code::Protocol, why))?;
            return Ok(Step::Stop);
        }
        Streamed::WriteFailed { error, early } => {
            let _ = fs::remove_file(&target.partial);
            let reason = io_reason("cannot write it", &error);
            // The verdict went out as soon as the write failed (`early`),
            // unless the failure came with the last chunk.
            if early {
                tally.failed += 1;
                report(&format!(
                    "refused {} from {peer} ({})",
                    target.shown, reason.message
                ));
            } else {
                refuse(&mut writer, tally, reason)?;
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
        Streamed::Done {
            file,
            hasher,
            digest,
            received,
        } => {
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
                install(&shared.config, &target, file, offer.mode)
            }
        }
    };
    match result {
        Ok(()) => {
            tally.ok += 1;
            let resumed = if start > 0 {
                format!(", resumed at {start}")
            } else {
                String::new()
            };
            report(&format!(
                "received {} ({} bytes{resumed}) from {peer}",
                target.shown, offer.size
            ));
            writer.write_all(&Reply::Ok.encode())?;
        }
        Err(reason) => refuse(&mut writer, tally, reason)?,
    }
    Ok(Step::Next)
}

/// Gives a verified temporary file its mode and final name, durably:
/// fsync the file, link (or rename, with `--overwrite`) it into place,
/// fsync the directory. Without `--overwrite` the link fails if a file
/// appeared under the final name meanwhile, so nothing is ever replaced.
fn install(config: &Config, target: &Target, file: File, mode: u32) -> Result<(), Reason> {
    let fail = |what: &str, e: &io::Error| {
        let _ = fs::remove_file(&target.partial);
        io_reason(&format!("{what} it"), e)
    };
    file.set_permissions(fs::Permissions::from_mode(mode & 0o777))
        .map_err(|e| fail("cannot set the mode of", &e))?;
    file.sync_all().map_err(|e| fail("cannot sync", &e))?;
    drop(file);
    if config.overwrite {
        fs::rename(&target.partial, &target.dest).map_err(|e| fail("cannot rename", &e))?;
    } else {
        match fs::hard_link(&target.partial, &target.dest) {
            Ok(()) => {
                let _ = fs::remove_file(&target.partial);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let _ = fs::remove_file(&target.partial);
                return Err(Reason::new(
                    Code::Exists,
                    "a file of that name appeared on the receiver during the transfer",
                ));
            }
            // No hard links on this file system (FAT, some FUSE mounts):
            // check, then rename. A file created in between would be
            // replaced; on such file systems that narrow race is the price.
            Err(_) if fs::symlink_metadata(&target.dest).is_err() => {
                fs::rename(&target.partial, &target.dest).map_err(|e| fail("cannot rename", &e))?;
            }
            Err(e) => return Err(fail("cannot link into place", &e)),
        }
    }
    if let Some(parent) = target.dest.parent()
        && let Ok(dir) = File::open(parent)
    {
        let _ = dir.sync_all();
    }
    if target.dest.parent() != Some(config.dir.as_path())
        && let Ok(dir) = File::open(&config.dir)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Starts writing the file's dirty pages to disk without waiting
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so disk writes overlap the
/// transfer and the fsync at the end waits only for the last few MiB.
/// Purely a hint: errors are ignored (the final fsync reports them).
fn start_writeback(file: &File) {
    let _ = sys::file::start_writeback(file.as_fd());
}

/// How a file's data stream ended.
enum Streamed {
    /// The end marker came; `digest` is the sender's.
    Done {
        file: File,
        /// Boxed: a BLAKE3 state is about 2 KB.
        hasher: Box<blake3::Hasher>,
        digest: [u8; 32],
        received: u64,
    },
    /// The sender sent the abort marker (no early verdict was sent).
    Aborted { file: File },
    /// Writing failed; `early` says whether the verdict was already sent
    /// while the data still flowed (then the rest was discarded).
    WriteFailed { error: io::Error, early: bool },
    /// The connection failed or closed mid-stream.
    Lost(io::Error),
    /// The sender broke the framing (more data than announced, ...).
    Protocol(String),
}

/// What the hash-and-write thread hands back.
enum Done {
    /// A buffer, free for reuse.
    Free(Vec<u8>),
    /// A write failed; no further writes are made.
    Failed(io::Error),
}

/// Receives the data frames of one file. The receiving thread (this one)
/// reads frames into buffers; a second thread hashes and writes them, so
/// the socket, BLAKE3 and the page cache work at the same time.
fn stream_data(
    reader: &mut BufReader<TcpStream>,
    file: File,
    hasher: blake3::Hasher,
    expected: u64,
) -> Streamed {
    let (to_worker, jobs) = mpsc::sync_channel::<(Vec<u8>, usize)>(BUFFERS);
    let (to_writer, writes) = mpsc::sync_channel::<(Vec<u8>, usize)>(BUFFERS);
    let (done_tx, done) = mpsc::channel::<Done>();
    std::thread::scope(|scope| {
        // Stage 2: hash, then pass the buffer on to the writer.
        let worker = scope.spawn(move || {
            let mut hasher = hasher;
            for (buf, len) in jobs {
                hasher.update(&buf[..len]);
                if to_writer.send((buf, len)).is_err() {
                    break;
                }
            }
            hasher
        });
        // Stage 3: write into the page cache, asking the kernel to start
        // writing back every WRITEBACK_EVERY bytes so the final fsync has
        // little left to wait for; return the buffer to stage 1.
        let writer = scope.spawn(move || {
            let mut file = file;
            let mut failed = false;
            let mut unsynced = 0usize;
            for (buf, len) in writes {
                if !failed {
                    if let Err(e) = file.write_all(&buf[..len]) {
                        failed = true;
                        let _ = done_tx.send(Done::Failed(e));
                    } else {
                        unsynced += len;
                        if unsynced >= WRITEBACK_EVERY {
                            start_writeback(&file);
                            unsynced = 0;
                        }
                    }
                }
                if done_tx.send(Done::Free(buf)).is_err() {
                    break;
                }
            }
            file
        });

        let mut free: Vec<Vec<u8>> = Vec::new();
        let mut allocated = 0;
        let mut received = 0u64;
        let mut failure: Option<io::Error> = None;
        let mut early = false;
        let outcome = loop {
            // Collect what the worker gave back, and notice a failed write.
            while let Ok(msg) = done.try_recv() {
                match msg {
                    Done::Free(buf) => free.push(buf),
                    Done::Failed(e) => failure = Some(e),
                }
            }
            if let Some(e) = &failure
                && !early
            {
                // Tell the sender now; then discard the rest of the data.
                let reason = io_reason("cannot write it", e);
                let mut w = reader.get_ref();
                if w.write_all(&Reply::Refused(reason).encode()).is_err() {
                    break Err(Streamed::Lost(io::Error::other("cannot send the verdict")));
                }
                early = true;
            }
            let frame = match Data::decode(reader) {
                Ok(f) => f,
                Err(DecodeError::Io(e)) => break Err(Streamed::Lost(e)),
                Err(DecodeError::Bad(why)) => break Err(Streamed::Protocol(why)),
            };
            match frame {
                Data::Chunk(len) => {
                    if received + len as u64 > expected {
                        break Err(Streamed::Protocol(format!(
                            "more data than the {expected} bytes announced"
                        )));
                    }
                    // The chunk goes down the pipeline in pieces that stay
                    // in the CPU cache between the three stages.
                    let mut left = len;
                    let mut lost = None;
                    while left > 0 {
                        let piece = left.min(PIECE);
                        let mut buf = match free.pop() {
                            Some(b) => b,
                            None if allocated < BUFFERS => {
                                allocated += 1;
                                vec![0u8; PIECE]
                            }
                            None => match done.recv() {
                                Ok(Done::Free(b)) => b,
                                Ok(Done::Failed(e)) => {
                                    // Its buffer follows as Done::Free.
                                    failure = Some(e);
                                    continue;
                                }
                                Err(_) => vec![0u8; PIECE],
                            },
                        };
                        if let Err(e) = reader.read_exact(&mut buf[..piece]) {
                            lost = Some(e);
                            break;
                        }
                        left -= piece;
                        received += piece as u64;
                        if failure.is_some() {
                            free.push(buf);
                        } else if to_worker.send((buf, piece)).is_err() {
                            lost = Some(io::Error::other("the hashing thread stopped"));
                            break;
                        }
                    }
                    if let Some(e) = lost {
                        break Err(Streamed::Lost(e));
                    }
                }
                Data::End(digest) => break Ok((Some(digest), received)),
                Data::Abort => break Ok((None, received)),
            }
        };
        drop(to_worker);
        // Drain the worker's messages so it can finish, keeping a failure.
        let (Ok(hasher), Ok(file)) = (worker.join(), writer.join()) else {
            return Streamed::Lost(io::Error::other("a receiving thread panicked"));
        };
        for msg in done.try_iter() {
            if let Done::Failed(e) = msg {
                failure = Some(e);
            }
        }
        match (outcome, failure) {
            (Err(streamed), _) => streamed,
            (Ok(_), Some(error)) => Streamed::WriteFailed { error, early },
            (Ok((Some(digest), received)), None) => Streamed::Done {
                file,
                hasher: Box::new(hasher),
                digest,
                received,
            },
            (Ok((None, _)), None) => Streamed::Aborted { file },
        }
    })
}
