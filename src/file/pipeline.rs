//! The receiving side of one file's data: a three-stage pipeline (receive,
//! hash, write) on three threads, so that on two cores the socket, BLAKE3
//! and the page cache work at the same time. Buffers circulate between the
//! stages instead of being allocated per piece, and the writer asks the
//! kernel to start writing back early so the final fsync has little left to
//! wait for. What a stream comes to ([`Streamed`]) is for `receive.rs` to
//! act on: this file neither reports nor touches the file's name.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

use super::protocol::{Data, DecodeError, Digest, Reply};
use super::receive::io_reason;
use crate::sys;

/// Buffers in flight through the receiving, hashing and writing threads.
const BUFFERS: usize = 4;

/// Size of those buffers: data moves through the pipeline in pieces this
/// big (256 KiB pieces, which stay in a smaller cache, measured no faster).
/// Memory per session: BUFFERS x PIECE.
const PIECE: usize = 1 << 20;

/// The writer asks the kernel to start writing back after this many bytes
/// (see [`start_writeback`]).
const WRITEBACK_EVERY: usize = 16 << 20;

/// How a file's data stream ended.
pub(super) enum Streamed {
    /// The end marker came.
    Done(Complete),
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

/// A stream that reached its end marker, for the verdict to check: the
/// file written, our hash of what arrived, and the sender's.
pub(super) struct Complete {
    pub(super) file: File,
    /// Boxed: a BLAKE3 state is about 2 KB.
    pub(super) hasher: Box<blake3::Hasher>,
    /// The sender's digest of the whole file.
    pub(super) digest: Digest,
    /// Data bytes that arrived (from the start offset on).
    pub(super) received: u64,
}

/// What the hash-and-write thread hands back.
enum Done {
    /// A buffer, free for reuse.
    Free(Vec<u8>),
    /// A write failed; no further writes are made.
    Failed(io::Error),
}

/// A buffer on its way down the pipeline, and how many of its bytes are
/// data.
type Piece = (Vec<u8>, usize);

/// Receives the data frames of one file (`expected` bytes of it). The
/// receiving thread (this one) reads frames into buffers; a second thread
/// hashes and a third writes them, so the socket, BLAKE3 and the page cache
/// work at the same time.
pub(super) fn stream_data(
    reader: &mut BufReader<socket2::Socket>,
    file: File,
    hasher: blake3::Hasher,
    expected: u64,
) -> Streamed {
    let (to_worker, jobs) = mpsc::sync_channel::<Piece>(BUFFERS);
    let (to_writer, writes) = mpsc::sync_channel::<Piece>(BUFFERS);
    let (done_tx, done) = mpsc::channel::<Done>();
    std::thread::scope(|scope| {
        let worker = scope.spawn(move || hash_stage(hasher, jobs, to_writer));
        let writer = scope.spawn(move || write_stage(file, writes, done_tx));
        let mut receiving = Receiving {
            reader,
            to_worker,
            done,
            free: Vec::new(),
            allocated: 0,
            received: 0,
            failure: None,
            early: false,
        };
        let outcome = receiving.run(expected);
        let Receiving {
            to_worker,
            done,
            mut failure,
            early,
            received,
            ..
        } = receiving;
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
            (Ok(Some(digest)), None) => Streamed::Done(Complete {
                file,
                hasher: Box::new(hasher),
                digest,
                received,
            }),
            (Ok(None), None) => Streamed::Aborted { file },
        }
    })
}

/// Stage 2: hash, then pass the buffer on to the writer.
fn hash_stage(
    mut hasher: blake3::Hasher,
    jobs: Receiver<Piece>,
    to_writer: SyncSender<Piece>,
) -> blake3::Hasher {
    for (buf, len) in jobs {
        hasher.update(&buf[..len]);
        if to_writer.send((buf, len)).is_err() {
            break;
        }
    }
    hasher
}

/// Stage 3: write into the page cache, asking the kernel to start writing
/// back every WRITEBACK_EVERY bytes so the final fsync has little left to
/// wait for; return the buffer to stage 1. After a failed write no further
/// writes are made, but buffers still go back, so stage 1 can read (and
/// discard) the rest of the data.
fn write_stage(mut file: File, writes: Receiver<Piece>, done_tx: Sender<Done>) -> File {
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
}

/// Starts writing the file's dirty pages to disk without waiting
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so disk writes overlap the
/// transfer and the fsync at the end waits only for the last few MiB.
/// Purely a hint: errors are ignored (the final fsync reports them).
fn start_writeback(file: &File) {
    let _ = sys::file::start_writeback(file.as_fd());
}

/// Stage 1, on the session's thread: reads data frames into buffers and
/// hands them to stage 2, reusing the buffers stage 3 gives back. Its
/// state is a struct so that each part of the loop is a named method.
struct Receiving<'a> {
    reader: &'a mut BufReader<socket2::Socket>,
    to_worker: SyncSender<Piece>,
    /// Buffers given back by the writer, and its failure.
    done: Receiver<Done>,
    /// Buffers free for reuse.
    free: Vec<Vec<u8>>,
    /// Buffers made so far (at most BUFFERS).
    allocated: usize,
    /// Data bytes read so far.
    received: u64,
    /// A failed write: from then on the data is read and discarded.
    failure: Option<io::Error>,
    /// Whether the sender was already told of `failure`.
    early: bool,
}

impl Receiving<'_> {
    /// Reads frames until the end marker (the sender's digest) or the abort
    /// marker (None).
    fn run(&mut self, expected: u64) -> Result<Option<Digest>, Streamed> {
        loop {
            self.collect();
            self.tell_failure()?;
            let frame = match Data::decode(&mut *self.reader) {
                Ok(f) => f,
                Err(DecodeError::Io(e)) => return Err(Streamed::Lost(e)),
                Err(DecodeError::Bad(why)) => return Err(Streamed::Protocol(why)),
            };
            match frame {
                Data::Chunk(len) => self.chunk(len, expected)?,
                Data::End(digest) => return Ok(Some(digest)),
                Data::Abort => return Ok(None),
            }
        }
    }

    /// Collects what the worker gave back, and notices a failed write.
    fn collect(&mut self) {
        while let Ok(msg) = self.done.try_recv() {
            match msg {
                Done::Free(buf) => self.free.push(buf),
                Done::Failed(e) => self.failure = Some(e),
            }
        }
    }

    /// Tells the sender of a failed write as soon as it is noticed (once);
    /// the rest of the data is then discarded.
    fn tell_failure(&mut self) -> Result<(), Streamed> {
        if let Some(e) = &self.failure
            && !self.early
        {
            let reason = io_reason("cannot write it", e);
            let mut w = self.reader.get_ref();
            if w.write_all(&Reply::Refused(reason).encode()).is_err() {
                return Err(Streamed::Lost(io::Error::other("cannot send the verdict")));
            }
            self.early = true;
        }
        Ok(())
    }

    /// Reads one chunk of `len` bytes. The chunk goes down the pipeline in
    /// pieces that stay in the CPU cache between the three stages.
    fn chunk(&mut self, len: usize, expected: u64) -> Result<(), Streamed> {
        if self.received + len as u64 > expected {
            return Err(Streamed::Protocol(format!(
                "more data than the {expected} bytes announced"
            )));
        }
        let mut left = len;
        while left > 0 {
            let piece = left.min(PIECE);
            let mut buf = self.buffer();
            if let Err(e) = self.reader.read_exact(&mut buf[..piece]) {
                return Err(Streamed::Lost(e));
            }
            left -= piece;
            self.received += piece as u64;
            if self.failure.is_some() {
                self.free.push(buf);
            } else if self.to_worker.send((buf, piece)).is_err() {
                return Err(Streamed::Lost(io::Error::other(
                    "the hashing thread stopped",
                )));
            }
        }
        Ok(())
    }

    /// A buffer for the next piece: a free one, a new one while fewer than
    /// BUFFERS exist, or else the next one the writer gives back.
    fn buffer(&mut self) -> Vec<u8> {
        loop {
            if let Some(buf) = self.free.pop() {
                return buf;
            }
            if self.allocated < BUFFERS {
                self.allocated += 1;
                return vec![0u8; PIECE];
            }
            match self.done.recv() {
                Ok(Done::Free(buf)) => return buf,
                // Its buffer follows as Done::Free.
                Ok(Done::Failed(e)) => self.failure = Some(e),
                Err(_) => return vec![0u8; PIECE],
            }
        }
    }
}
