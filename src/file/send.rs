//! `sockit file send`: walks the paths, offers each entry to a receiver
//! (see `super::protocol`), streams file data, and reports per entry.
//!
//! The data path is blocking I/O on two threads per file: this thread
//! moves the file into the socket with `sendfile(2)` (no copy through user
//! space; plain `pread`+`write` where the file system cannot), while a
//! hashing thread feeds BLAKE3 (SIMD) from a memory map of the file
//! (`pread` for small and resumed files).
//! Hashing and the network so overlap on two cores and neither waits for a
//! pre-pass over the file. If the file changes while it is sent, the bytes
//! sent and the bytes hashed can differ: the receiver then rejects the
//! copy, which is the right answer for a file that was not stable.
//!
//! A third thread reads the receiver's replies, so a verdict that arrives
//! early (the receiver's disk is full) stops the data at the next chunk.

use std::cell::RefCell;
use std::fs::{self, File};
use std::io::{self, BufReader, IsTerminal, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use socket2::Socket;

use super::protocol::{self, Data, DecodeError, Digest, Entry, Hello, MAX_PATH, Reply};
use crate::context::{Context, Output};
use crate::error::{Error, Result, cause};
use crate::net;
use crate::sys;
use crate::transport::Connector;

/// Bytes per data chunk: large enough that per-chunk costs vanish, small
/// enough that an early verdict stops the data quickly.
const CHUNK: usize = 1 << 20;

/// Files at least this big are hashed through a memory map (see
/// [`hash_mapped`]); smaller ones, and resumed ones, with `pread`.
const MMAP_MIN: u64 = 1 << 20;

/// The hashing thread reads (and hashes) in pieces this big.
const HASH_PIECE: usize = 1 << 20;

/// How long to wait for any reply from the receiver. Generous: the verdict
/// on a large file comes after the receiver's fsync of it.
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);

/// What `file send` was asked to do.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    /// Files and directories to send (directories recursively).
    pub paths: Vec<PathBuf>,
    /// One JSON object per entry and one for the summary, on stdout.
    pub json: bool,
    /// Connect timeout.
    pub wait: Duration,
    /// Plain TCP or TLS, and how the receiver is trusted.
    pub connector: Connector,
}

/// One thing to send, found by [`walk`].
#[derive(Debug)]
struct Item {
    /// The path the receiver sees: relative, `/`-separated, UTF-8.
    rel: String,
    /// Where it is here.
    source: PathBuf,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Dir {
        mode: u32,
    },
    File {
        size: u64,
    },
    /// Cannot be sent (unreadable directory, non-UTF-8 name): reported as
    /// failed without asking the receiver.
    Broken(String),
}

/// How one entry went.
#[derive(Debug)]
struct Outcome {
    rel: String,
    is_dir: bool,
    size: u64,
    /// Data bytes put on the wire for it.
    sent: u64,
    /// Bytes the receiver already had (resume).
    resumed: u64,
    error: Option<String>,
}

/// Sends everything in `config.paths`; exit 1 (an error) if any entry
/// failed, after printing each failure and the summary.
pub async fn send(config: Config, ctx: Context) -> Result<()> {
    let items = walk(&config.paths);
    let peer = net::display_target(&config.host, config.port);
    let stream = config
        .connector
        .connect(&config.host, config.port, config.wait)
        .await?;
    let (stream, bridge) = stream
        .into_blocking()
        .map_err(|e| Error::io("cannot set up the connection", e))?;
    let fault = bridge.fault();
    let json = config.json;
    let wait = config.wait;
    let out = ctx.out;
    let sent =
        tokio::task::spawn_blocking(move || run_session(stream, items, &peer, json, wait, out))
            .await
            .map_err(|e| Error::io("the sending thread failed", io::Error::other(e)))?;
    // The receiver has closed by now (the session waits for it); a TLS
    // bridge only has its own end to finish.
    bridge.finish(wait).await;
    // A lost connection is named by its TLS failure, if it had one.
    match sent {
        Err(Error::Closed { peer, source }) if fault.get().is_some() => Err(Error::closed(
            peer,
            io::Error::other(fault.explain(&source)),
        )),
        sent => sent,
    }
}

/// Finds what to send. A command-line path is followed if it is a
/// symlink; inside directories symlinks and special files are skipped with
/// a warning (following them could loop or leave the tree).
fn walk(paths: &[PathBuf]) -> Vec<Item> {
    let mut items = Vec::new();
    for path in paths {
        let shown = path.display().to_string();
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) => {
                items.push(broken(
                    &shown,
                    path,
                    format!("cannot read it ({})", cause(&e)),
                ));
                continue;
            }
        };
        // The name as given (a symlink keeps its own name); `.`, `..` and
        // the like are resolved to the directory's real name.
        let name = match path.components().next_back() {
            Some(Component::Normal(n)) => Some(n.to_owned()),
            _ => fs::canonicalize(path)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_owned())),
        };
        let Some(name) = name else {
            items.push(broken(
                &shown,
                path,
                "it has no name to send it under".into(),
            ));
            continue;
        };
        let Some(name) = name.to_str().map(str::to_string) else {
            items.push(broken(&shown, path, "its name is not valid UTF-8".into()));
            continue;
        };
        if meta.is_dir() {
            items.push(Item {
                rel: name.clone(),
                source: path.clone(),
                kind: Kind::Dir {
                    mode: meta.permissions().mode(),
                },
            });
            walk_dir(path, &name, &mut items, 0);
        } else if meta.is_file() {
            items.push(Item {
                rel: name,
                source: path.clone(),
                kind: Kind::File { size: meta.len() },
            });
        } else {
            tracing::warn!("skipping {shown}: not a regular file or directory");
        }
    }
    items
}

/// Deeper than this is almost certainly a mistake (or a bind-mount loop).
const MAX_DEPTH: usize = 256;

fn walk_dir(dir: &Path, rel: &str, items: &mut Vec<Item>, depth: usize) {
    if depth >= MAX_DEPTH {
        items.push(broken(rel, dir, format!("deeper than {MAX_DEPTH} levels")));
        return;
    }
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            items.push(broken(rel, dir, format!("cannot list it ({})", cause(&e))));
            return;
        }
    };
    let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            let shown = format!("{rel}/{}", entry.file_name().to_string_lossy());
            items.push(broken(&shown, &path, "its name is not valid UTF-8".into()));
            continue;
        };
        let child = format!("{rel}/{name}");
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                items.push(broken(
                    &child,
                    &path,
                    format!("cannot read it ({})", cause(&e)),
                ));
                continue;
            }
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            tracing::warn!("skipping symlink {}", path.display());
        } else if ft.is_dir() {
            items.push(Item {
                rel: child.clone(),
                source: path.clone(),
                kind: Kind::Dir {
                    mode: meta.permissions().mode(),
                },
            });
            walk_dir(&path, &child, items, depth + 1);
        } else if ft.is_file() {
            items.push(Item {
                rel: child,
                source: path,
                kind: Kind::File { size: meta.len() },
            });
        } else {
            tracing::warn!(
                "skipping {}: not a regular file or directory",
                path.display()
            );
        }
    }
}

fn broken(rel: &str, source: &Path, why: String) -> Item {
    Item {
        rel: rel.to_string(),
        source: source.to_path_buf(),
        kind: Kind::Broken(why),
    }
}

/// What the reply-reading thread passes on.
type Incoming = std::result::Result<Reply, String>;

/// The connection, the reply channel and the running totals of a session.
struct Session<'a> {
    stream: &'a Socket,
    replies: mpsc::Receiver<Incoming>,
    peer: &'a str,
    progress: ProgressBar,
    /// Where outcomes and the summary are printed (one thread uses it).
    out: RefCell<Output>,
}

/// Runs the whole session and prints the results.
fn run_session(
    stream: Socket,
    items: Vec<Item>,
    peer: &str,
    json: bool,
    wait: Duration,
    out: Output,
) -> Result<()> {
    let started = Instant::now();
    let total: u64 = items
        .iter()
        .map(|i| match i.kind {
            Kind::File { size } => size,
            _ => 0,
        })
        .sum();
    let progress = progress_bar(total);
    let _ = stream.set_write_timeout(Some(REPLY_TIMEOUT));
    let reading = handshake(&stream, peer, wait)?;
    let (tx, replies) = mpsc::channel();
    let reader = std::thread::spawn(move || read_replies(reading, tx));
    let session = Session {
        stream: &stream,
        replies,
        peer,
        progress,
        out: RefCell::new(out),
    };

    let (outcomes, fatal) = session.send_all(&items, json);
    session.progress.finish_and_clear();
    let _ = stream.shutdown(Shutdown::Both);
    let _ = reader.join();

    let seconds = started.elapsed().as_secs_f64();
    print_summary(&mut *session.out.borrow_mut(), &outcomes, seconds, json);
    if let Some(e) = fatal {
        return Err(e);
    }
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    if failed > 0 {
        return Err(Error::Incomplete {
            what: "transfer incomplete".into(),
            failed,
            total: outcomes.len(),
        });
    }
    Ok(())
}

/// Says hello and waits for the receiver's. Returns the connection's
/// reading side (a clone, for the reply thread); a peer that is not a
/// receiver, or does not answer in time, is an error.
fn handshake(stream: &Socket, peer: &str, wait: Duration) -> Result<Socket> {
    let lost = |e: io::Error| Error::closed(peer, e);
    let mut writer = stream;
    writer.write_all(&protocol::hello()).map_err(lost)?;

    let reading = stream.try_clone().map_err(lost)?;
    // A peer that is not a receiver (nc, a web server) may never answer:
    // wait for the hello only as long as for the connection.
    let hello = match read_hello(&reading, wait) {
        Ok(hello) => hello,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Err(Error::NoReply {
                peer: peer.to_string(),
                waited: wait,
            });
        }
        Err(e) => return Err(lost(e)),
    };
    let _ = reading.set_read_timeout(Some(REPLY_TIMEOUT));
    match protocol::check_hello(&hello) {
        Hello::Ok | Hello::Version(_) => {}
        Hello::Foreign if crate::transport::TLS_ONLY.starts_with(&hello) => {
            return Err(Error::Input {
                what: format!("{peer} takes TLS connections only"),
                why: "send with --tls".into(),
            });
        }
        Hello::Foreign => {
            return Err(Error::Input {
                what: format!("{peer} is not a sockit file receiver"),
                why: "it answered with something else".into(),
            });
        }
    }
    Ok(reading)
}

fn read_hello(stream: &Socket, wait: Duration) -> io::Result<[u8; 12]> {
    stream.set_read_timeout(Some(wait))?;
    let mut hello = [0u8; 12];
    let mut r = stream;
    r.read_exact(&mut hello)?;
    Ok(hello)
}

/// Reads replies until the connection ends, passing each on.
fn read_replies(stream: Socket, tx: mpsc::Sender<Incoming>) {
    let mut reader = BufReader::new(stream);
    loop {
        match Reply::decode(&mut reader) {
            Ok(reply) => {
                if tx.send(Ok(reply)).is_err() {
                    return;
                }
            }
            Err(DecodeError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                let _ = tx.send(Err("the receiver closed the connection".into()));
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        }
    }
}

impl Session<'_> {
    /// Sends every item, printing each outcome as it comes, then ends the
    /// session. Returns the outcomes, and the error that cut the session
    /// short if one did.
    fn send_all(&self, items: &[Item], json: bool) -> (Vec<Outcome>, Option<Error>) {
        let mut outcomes = Vec::new();
        for item in items {
            match send_item(self, item) {
                Ok(outcome) => {
                    let out = &mut *self.out.borrow_mut();
                    print_outcome(out, &outcome, json, &self.progress);
                    outcomes.push(outcome);
                }
                Err(e) => return (outcomes, Some(e)),
            }
        }
        // End the session and half-close; the receiver closes after it
        // has read everything, and we read until then.
        let mut writer = self.stream;
        let end = writer
            .write_all(&Entry::End.encode())
            .and_then(|()| self.stream.shutdown(Shutdown::Write));
        if let Err(e) = end {
            return (outcomes, Some(Error::closed(self.peer, e)));
        }
        // The reader thread ends at the receiver's close.
        let _ = self.replies.recv_timeout(REPLY_TIMEOUT);
        (outcomes, None)
    }

    /// The next reply; a lost connection or a timeout ends the session.
    fn reply(&self) -> Result<Reply> {
        match self.replies.recv_timeout(REPLY_TIMEOUT) {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(why)) => Err(self.closed(why)),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::NoReply {
                peer: self.peer.to_string(),
                waited: REPLY_TIMEOUT,
            }),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(self.closed("the receiver closed the connection".into()))
            }
        }
    }

    fn closed(&self, why: String) -> Error {
        Error::closed(self.peer, io::Error::other(why))
    }

    fn write(&self, bytes: &[u8]) -> Result<()> {
        let mut w = self.stream;
        w.write_all(bytes).map_err(|e| Error::closed(self.peer, e))
    }
}

/// Sends one entry. `Err` only when the session cannot go on.
fn send_item(s: &Session, item: &Item) -> Result<Outcome> {
    let mut outcome = Outcome {
        rel: item.rel.clone(),
        is_dir: matches!(item.kind, Kind::Dir { .. }),
        size: 0,
        sent: 0,
        resumed: 0,
        error: None,
    };
    if item.rel.len() > MAX_PATH {
        outcome.error = Some(format!("the path is longer than {MAX_PATH} bytes"));
        return Ok(outcome);
    }
    match &item.kind {
        Kind::Broken(why) => outcome.error = Some(why.clone()),
        Kind::Dir { mode } => {
            s.write(
                &Entry::Dir {
                    path: item.rel.as_bytes().to_vec(),
                    mode: *mode,
                }
                .encode(),
            )?;
            match s.reply()? {
                Reply::Ok => {}
                Reply::Refused(r) => outcome.error = Some(r.message),
                Reply::Accept { .. } => {
                    return Err(s.closed("the receiver answered out of turn".into()));
                }
            }
        }
        Kind::File { size: walked } => {
            let file = match File::open(&item.source) {
                Ok(f) => f,
                Err(e) => {
                    outcome.error = Some(format!("cannot open it ({})", cause(&e)));
                    s.progress.dec_length(*walked);
                    return Ok(outcome);
                }
            };
            let meta = file
                .metadata()
                .map_err(|e| Error::io("cannot read file metadata", e))?;
            outcome.size = meta.len();
            if outcome.size != *walked {
                s.progress.set_length(
                    s.progress.length().unwrap_or(0).saturating_sub(*walked) + outcome.size,
                );
            }
            send_file(s, item, &file, &meta, &mut outcome)?;
        }
    }
    Ok(outcome)
}

/// The sender's identity of this version of a file: its inode and its
/// modification time. Stable across runs while the file is unchanged.
fn identity(meta: &fs::Metadata) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&meta.dev().to_be_bytes());
    h.update(&meta.ino().to_be_bytes());
    h.update(&meta.mtime().to_be_bytes());
    h.update(&meta.mtime_nsec().to_be_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d.as_bytes()[..8]);
    u64::from_be_bytes(first)
}

fn send_file(
    s: &Session,
    item: &Item,
    file: &File,
    meta: &fs::Metadata,
    outcome: &mut Outcome,
) -> Result<()> {
    let size = meta.len();
    s.write(
        &Entry::File {
            path: item.rel.as_bytes().to_vec(),
            mode: meta.permissions().mode() & 0o7777,
            size,
            identity: identity(meta),
        }
        .encode(),
    )?;
    let (offset, prefix) = match s.reply()? {
        Reply::Accept { offset, prefix } => (offset, prefix),
        Reply::Refused(r) => {
            outcome.error = Some(r.message);
            s.progress.dec_length(size);
            return Ok(());
        }
        Reply::Ok => return Err(s.closed("the receiver answered out of turn".into())),
    };
    // Resume only if our own first `offset` bytes are what the receiver holds.
    let (start, hasher) = match check_prefix(file, offset, size, &prefix) {
        Ok(Some(hasher)) => (offset, hasher),
        Ok(None) => (0, blake3::Hasher::new()),
        Err(e) => {
            // Cannot read our own file: start from 0 and let the data
            // stream report the failure.
            tracing::debug!("cannot check the resumed prefix: {e}");
            (0, blake3::Hasher::new())
        }
    };
    s.write(&start.to_be_bytes())?;
    outcome.resumed = start;
    s.progress.inc(start);

    let streamed = stream_file(s, file, &item.source, start, size, hasher)?;
    outcome.sent = streamed.sent;
    match streamed.end {
        StreamEnd::Sent(digest) => {
            s.write(&Data::end(&digest))?;
            match s.reply()? {
                Reply::Ok => {}
                Reply::Refused(r) => outcome.error = Some(r.message),
                Reply::Accept { .. } => {
                    return Err(s.closed("the receiver answered out of turn".into()));
                }
            }
        }
        StreamEnd::Refused(message) => {
            // The receiver's verdict came early; it discards until our abort.
            s.write(&Data::abort())?;
            outcome.error = Some(message);
        }
        StreamEnd::LocalError(message) => {
            s.write(&Data::abort())?;
            // The receiver answers an abort with a refusal; ours says more.
            let _ = s.reply()?;
            outcome.error = Some(message);
        }
    }
    Ok(())
}

/// Hashes our first `offset` bytes; the hasher if they match the
/// receiver's `prefix`, None if they do not (start over).
fn check_prefix(
    file: &File,
    offset: u64,
    size: u64,
    prefix: &Digest,
) -> io::Result<Option<blake3::Hasher>> {
    if offset == 0 || offset > size {
        return Ok(None);
    }
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    while pos < offset {
        let want = (offset - pos).min(CHUNK as u64) as usize;
        file.read_exact_at(&mut buf[..want], pos)?;
        hasher.update(&buf[..want]);
        pos += want as u64;
    }
    Ok((hasher.finalize().as_bytes() == prefix).then_some(hasher))
}

/// How a file's data stream ended.
enum StreamEnd {
    /// All data sent; the whole file's digest.
    Sent(Digest),
    /// The receiver refused while the data flowed.
    Refused(String),
    /// We could not read our file.
    LocalError(String),
}

struct Streamed {
    end: StreamEnd,
    sent: u64,
}

/// Streams bytes `start..size` of `file` as data frames while a second
/// thread hashes the same range.
fn stream_file(
    s: &Session,
    file: &File,
    source: &Path,
    start: u64,
    size: u64,
    hasher: blake3::Hasher,
) -> Result<Streamed> {
    std::thread::scope(|scope| {
        let hashing = scope.spawn(move || {
            if start == 0 && size >= MMAP_MIN {
                hash_mapped(source, size)
            } else {
                hash_range(file, start, size, hasher)
            }
        });
        let mut copier = Copier::new();
        let mut pos = start;
        let mut end = None;
        while pos < size {
            // A verdict that arrives now is the receiver giving up early.
            match s.replies.try_recv() {
                Ok(Ok(Reply::Refused(r))) => {
                    end = Some(StreamEnd::Refused(r.message));
                    break;
                }
                Ok(Ok(_)) => return Err(s.closed("the receiver answered out of turn".into())),
                Ok(Err(why)) => return Err(s.closed(why)),
                Err(_) => {}
            }
            let len = (size - pos).min(CHUNK as u64) as usize;
            s.write(&Data::chunk_header(len))?;
            match copier.copy(file, s.stream, pos, len) {
                Ok(()) => {}
                Err(CopyError::Socket(e)) => return Err(Error::closed(s.peer, e)),
                Err(CopyError::File(e)) => {
                    end = Some(StreamEnd::LocalError(format!(
                        "cannot read it ({})",
                        cause(&e)
                    )));
                    break;
                }
            }
            pos += len as u64;
            s.progress.inc(len as u64);
        }
        let sent = pos - start;
        let hashed = hashing
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the hashing thread failed")));
        let end = match (end, hashed) {
            (Some(end), _) => end,
            (None, Ok(digest)) => StreamEnd::Sent(digest),
            (None, Err(e)) => StreamEnd::LocalError(format!("cannot read it ({})", cause(&e))),
        };
        Ok(Streamed { end, sent })
    })
}

/// BLAKE3 of a whole file through blake3's own memory map of it
/// (`Hasher::update_mmap`): the hash reads the page cache directly, which
/// saves copying every byte into a buffer first (a third of the sender's
/// CPU time with `pread`). The map covers the file as it is now; if it no
/// longer has `size` bytes, that is an error (the receiver would reject
/// the copy anyway). Like b3sum, this relies on nobody truncating the file
/// while it is hashed.
fn hash_mapped(source: &Path, size: u64) -> io::Result<Digest> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap(source)?;
    if hasher.count() != size {
        return Err(io::Error::other("the file changed size while it was sent"));
    }
    Ok(*hasher.finalize().as_bytes())
}

/// BLAKE3 of the whole file, continuing `hasher` (which holds `0..start`).
fn hash_range(
    file: &File,
    start: u64,
    size: u64,
    mut hasher: blake3::Hasher,
) -> io::Result<Digest> {
    let mut buf = vec![0u8; HASH_PIECE];
    let mut pos = start;
    while pos < size {
        let want = (size - pos).min(HASH_PIECE as u64) as usize;
        file.read_exact_at(&mut buf[..want], pos)?;
        hasher.update(&buf[..want]);
        pos += want as u64;
    }
    Ok(*hasher.finalize().as_bytes())
}

enum CopyError {
    Socket(io::Error),
    File(io::Error),
}

/// Copies file ranges into the socket: `sendfile(2)`, or `pread` and
/// `write` once the file system has said it cannot do `sendfile`.
struct Copier {
    fallback: Option<Vec<u8>>,
}

impl Copier {
    fn new() -> Copier {
        Copier { fallback: None }
    }

    /// Sends exactly `len` bytes from `pos`. If the file ends early (it
    /// shrank), zeros fill the promised length so the framing holds, and
    /// the error is reported: the receiver never keeps such a copy (the
    /// digest cannot match).
    fn copy(&mut self, file: &File, sock: &Socket, pos: u64, len: usize) -> Result<(), CopyError> {
        let mut done = 0usize;
        while done < len && self.fallback.is_none() {
            let e = match sys::file::sendfile(
                sock.as_fd(),
                file.as_fd(),
                pos + done as u64,
                len - done,
            ) {
                Ok(0) => return pad(sock, len - done, "the file shrank while it was sent"),
                Ok(n) => {
                    done += n;
                    continue;
                }
                Err(e) => e,
            };
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) if done == 0 => {
                    self.fallback = Some(vec![0u8; CHUNK]);
                }
                Some(libc::EIO)
                | Some(libc::EINVAL)
                | Some(libc::ENOSYS)
                | Some(libc::EOPNOTSUPP) => {
                    return pad(sock, len - done, &cause(&e));
                }
                _ => return Err(CopyError::Socket(e)),
            }
        }
        if let Some(buf) = self.fallback.as_mut() {
            while done < len {
                let want = (len - done).min(buf.len());
                let n = match file.read_at(&mut buf[..want], pos + done as u64) {
                    Ok(0) => {
                        return pad(sock, len - done, "the file shrank while it was sent");
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return pad(sock, len - done, &cause(&e)),
                };
                let mut w = sock;
                w.write_all(&buf[..n]).map_err(CopyError::Socket)?;
                done += n;
            }
        }
        Ok(())
    }
}

/// Fills the rest of a promised chunk with zeros, then reports `why`.
fn pad(sock: &Socket, mut left: usize, why: &str) -> Result<(), CopyError> {
    let zeros = [0u8; 64 << 10];
    let mut w = sock;
    while left > 0 {
        let n = left.min(zeros.len());
        w.write_all(&zeros[..n]).map_err(CopyError::Socket)?;
        left -= n;
    }
    Err(CopyError::File(io::Error::other(why.to_string())))
}

fn progress_bar(total: u64) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

fn print_outcome(out: &mut dyn Write, o: &Outcome, json: bool, progress: &ProgressBar) {
    if let Some(error) = &o.error {
        let line = format!(
            "cannot send '{}' ({error})",
            crate::text::printable(o.rel.as_bytes())
        );
        progress.suspend(|| crate::error::print(&line));
    }
    if json {
        let value = json!({
            "path": o.rel,
            "kind": if o.is_dir { "dir" } else { "file" },
            "size": o.size,
            "sent": o.sent,
            "resumed": o.resumed,
            "ok": o.error.is_none(),
            "error": o.error,
        });
        progress.suspend(|| println_flush(out, &value.to_string()));
    }
}

fn print_summary(out: &mut dyn Write, outcomes: &[Outcome], seconds: f64, json: bool) {
    let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.error.is_none()).collect();
    let files = ok.iter().filter(|o| !o.is_dir).count();
    let dirs = ok.iter().filter(|o| o.is_dir).count();
    let failed = outcomes.len() - ok.len();
    let bytes: u64 = ok.iter().map(|o| o.size).sum();
    let sent: u64 = outcomes.iter().map(|o| o.sent).sum();
    let resumed: u64 = ok.iter().map(|o| o.resumed).sum();
    let rate = if seconds > 0.0 {
        sent as f64 / seconds / 1e6
    } else {
        0.0
    };
    if json {
        let value = json!({
            "summary": true,
            "files": files,
            "dirs": dirs,
            "failed": failed,
            "bytes": bytes,
            "sent": sent,
            "resumed": resumed,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "mb_per_s": (rate * 10.0).round() / 10.0,
        });
        println_flush(out, &value.to_string());
        return;
    }
    let plural = |n: usize, word: &str| {
        if n == 1 {
            format!("{n} {word}")
        } else {
            format!("{n} {word}s")
        }
    };
    let mut line = format!(
        "{}, {}, {bytes} bytes in {seconds:.2} s ({rate:.1} MB/s)",
        plural(files, "file"),
        plural(dirs, "directory").replace("directorys", "directories"),
    );
    if resumed > 0 {
        line.push_str(&format!("; {sent} bytes sent, {resumed} resumed"));
    }
    if failed > 0 {
        line.push_str(&format!("; {failed} failed"));
    }
    println_flush(out, &line);
}

fn println_flush(out: &mut dyn Write, line: &str) {
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
