//! The room's shared output: every line relayed to the room is stored
//! once, in an append-only chain of sealed segments, and each member reads
//! the chain through its own [`Outbox`].
//!
//! # Why a shared log
//!
//! Copying each message into every member's own queue costs a copy and a
//! lock per delivery: at 1,000 members that copy was the largest single
//! item of the server's profile (29% of its samples), ahead of the
//! kernel's own copy into the socket. Here a message is appended once;
//! a member's writer hands the kernel slices of the shared segments with
//! one `writev`, leaving out the pieces it must not get (its own messages,
//! its own join notice).
//!
//! # Segments
//!
//! Lines are appended to an open buffer; sealing moves that buffer into an
//! immutable [`Segment`] linked after the previous one. A small room seals
//! after every relay; a large one every flush tick (see `room.rs`). Each
//! segment knows its global byte offset, and for each run of its bytes the
//! one member that must not receive it (`skip`, 0 for nobody).
//!
//! A member's [`Outbox`] holds an `Arc` of the segment it is reading, and
//! through the `next` links every later one; a segment is freed as soon as
//! the last member has read past it. How far a member is behind the sealed
//! end is what the slow-client policy measures ([`Outbox::lag`]).
//!
//! # Private lines
//!
//! Lines for one member (its welcome, `/who`, errors, `/msg`) wait in the
//! member's own queue, each stamped with the log offset it was queued at;
//! the writer sends it once the member has read the log that far. A `/msg`
//! is stamped after sealing the sender's earlier messages, so a receiver
//! sees each sender's lines in the order they were sent, private or not.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::{Arc, OnceLock};

/// Most slices handed to one `writev` (well within IOV_MAX).
const MAX_SLICES: usize = 64;

/// One sealed stretch of the room's output.
pub struct Segment {
    /// Global offset of the first byte.
    start: u64,
    bytes: Vec<u8>,
    /// For each run of bytes, its end (offset within `bytes`) and the
    /// member that must not receive it (0: everyone does). Ends ascend and
    /// the last is `bytes.len()`.
    runs: Vec<(usize, u64)>,
    next: OnceLock<Arc<Segment>>,
}

impl Segment {
    fn empty(start: u64) -> Arc<Segment> {
        Arc::new(Segment {
            start,
            bytes: Vec::new(),
            runs: Vec::new(),
            next: OnceLock::new(),
        })
    }

    /// Global offset just past the last byte.
    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    /// The run containing offset `off` (< len): its end and skip id.
    fn run_at(&self, off: usize) -> (usize, u64) {
        let i = self.runs.partition_point(|&(end, _)| end <= off);
        self.runs.get(i).copied().unwrap_or((self.bytes.len(), 0))
    }
}

impl Drop for Segment {
    /// Frees the chain after this segment iteratively: a member cut off
    /// far behind may hold the only reference to thousands of segments,
    /// and dropping them one inside the other would exhaust the stack.
    fn drop(&mut self) {
        let mut next = self.next.take();
        while let Some(segment) = next {
            next = Arc::into_inner(segment).and_then(|mut s| s.next.take());
        }
    }
}

/// The writing side of the log, owned by the room (under its lock).
pub struct Log {
    open: Vec<u8>,
    runs: Vec<(usize, u64)>,
    tail: Arc<Segment>,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            open: Vec::new(),
            runs: Vec::new(),
            tail: Segment::empty(0),
        }
    }
}

impl Log {
    /// Appends `bytes` for every member but `skip` (0: for everyone).
    pub fn append(&mut self, skip: u64, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.open.extend_from_slice(bytes);
        match self.runs.last_mut() {
            Some((end, id)) if *id == skip => *end = self.open.len(),
            _ => self.runs.push((self.open.len(), skip)),
        }
    }

    /// Bytes appended but not sealed yet.
    pub fn open_len(&self) -> usize {
        self.open.len()
    }

    /// Seals what was appended into a new segment, visible to readers;
    /// returns the new sealed end (unchanged if nothing was open).
    pub fn seal(&mut self) -> u64 {
        if self.open.is_empty() {
            return self.end();
        }
        let segment = Arc::new(Segment {
            start: self.tail.end(),
            bytes: std::mem::take(&mut self.open),
            runs: std::mem::take(&mut self.runs),
            next: OnceLock::new(),
        });
        // Only the log links segments, under the room's lock, and each
        // tail is linked once: the set cannot fail.
        let _ = self.tail.next.set(segment.clone());
        self.tail = segment;
        self.end()
    }

    /// Global offset just past the last sealed byte.
    pub fn end(&self) -> u64 {
        self.tail.end()
    }

    /// A reader for member `me` that starts at the sealed end.
    pub fn outbox(&self, me: u64) -> Outbox {
        Outbox {
            me,
            segment: self.tail.clone(),
            off: self.tail.bytes.len(),
            private: VecDeque::new(),
            private_bytes: 0,
            current: None,
            stop: None,
            cut_off: false,
        }
    }
}

/// A line for one member, to go out once the log is read up to `at`.
struct Private {
    at: u64,
    bytes: Vec<u8>,
}

/// How a write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrote {
    /// Everything there was to write is written.
    All,
    /// The socket took part of it (or nothing): wait until it is writable.
    Blocked,
}

/// One member's reading position in the log, plus its private lines.
pub struct Outbox {
    me: u64,
    segment: Arc<Segment>,
    /// Bytes of `segment` already written (or skipped).
    off: usize,
    private: VecDeque<Private>,
    private_bytes: usize,
    /// A private line being written and how much of it went out.
    current: Option<(Vec<u8>, usize)>,
    /// Read the log no further than this (the member has left).
    stop: Option<u64>,
    /// It fell too far behind: see [`Outbox::cut_off`].
    cut_off: bool,
}

impl Outbox {
    /// Global offset read up to.
    pub fn position(&self) -> u64 {
        self.segment.start + self.off as u64
    }

    /// Bytes of the log sealed up to `end` not yet written, plus private
    /// lines waiting: what the slow-client policy limits.
    pub fn lag(&self, end: u64) -> usize {
        if self.cut_off {
            return usize::MAX;
        }
        let log = usize::try_from(end.saturating_sub(self.position())).unwrap_or(usize::MAX);
        let current = self.current.as_ref().map_or(0, |(b, w)| b.len() - w);
        log.saturating_add(self.private_bytes)
            .saturating_add(current)
    }

    /// Lets go of the log and of everything queued: the member is cut off
    /// (from now on it lags without end and nothing is queued for it).
    pub fn cut_off(&mut self) {
        self.cut_off = true;
        self.segment = Segment::empty(u64::MAX);
        self.off = 0;
        self.private = VecDeque::new();
        self.private_bytes = 0;
        self.current = None;
    }

    /// Queues a private line to go out after the log up to `at`.
    pub fn push_private(&mut self, at: u64, bytes: Vec<u8>) {
        if self.cut_off {
            return;
        }
        self.private_bytes += bytes.len();
        self.private.push_back(Private { at, bytes });
    }

    /// Reads the log no further than `end` from now on (the member left).
    pub fn stop_at(&mut self, end: u64) {
        self.stop = Some(self.stop.map_or(end, |s| s.min(end)));
    }

    /// Whether anything is left to write, given the sealed end.
    pub fn has_pending(&self, end: u64) -> bool {
        self.current.is_some() || !self.private.is_empty() || self.position() < self.limit(end)
    }

    fn limit(&self, end: u64) -> u64 {
        self.stop.map_or(end, |s| s.min(end))
    }

    /// Writes what is pending (log up to `end`, private lines in their
    /// places) with `write`, a vectored non-blocking write, until it is all
    /// written or the socket is full. At most `rounds` writes are made;
    /// `Ok(None)` means more is left after them.
    pub fn write(
        &mut self,
        end: u64,
        rounds: usize,
        mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> io::Result<Option<Wrote>> {
        for _ in 0..rounds {
            if let Some((bytes, written)) = &mut self.current {
                match write(&[IoSlice::new(&bytes[*written..])]) {
                    Ok(n) => *written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(Some(Wrote::Blocked));
                    }
                    Err(e) => return Err(e),
                }
                if *written < bytes.len() {
                    return Ok(Some(Wrote::Blocked));
                }
                self.current = None;
                continue;
            }
            // The next private line is due once the log is written up to
            // where it was queued (or as far as this member reads).
            let limit = self.limit(end);
            let upto = match self.private.front() {
                Some(p) => {
                    let at = p.at.min(limit);
                    if self.skip_to(at) >= at {
                        if let Some(p) = self.private.pop_front() {
                            self.private_bytes -= p.bytes.len();
                            self.current = Some((p.bytes, 0));
                        }
                        continue;
                    }
                    at
                }
                None => limit,
            };
            self.skip_to(upto);
            let mut slices = Vec::with_capacity(MAX_SLICES);
            self.slices(upto, &mut slices);
            if slices.is_empty() {
                return Ok(Some(Wrote::All));
            }
            let n = match write(&slices) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Some(Wrote::Blocked));
                }
                Err(e) => return Err(e),
            };
            let offered: usize = slices.iter().map(|s| s.len()).sum();
            drop(slices);
            self.advance(n, upto);
            if n < offered {
                return Ok(Some(Wrote::Blocked));
            }
        }
        Ok(None)
    }

    /// Moves past skipped runs and finished segments without passing
    /// `upto`; returns the position reached.
    fn skip_to(&mut self, upto: u64) -> u64 {
        loop {
            if self.off >= self.segment.bytes.len() {
                // Moving on does not change the position, and lets the
                // finished segment go.
                let Some(next) = self.segment.next.get() else {
                    break;
                };
                let next = next.clone();
                self.segment = next;
                self.off = 0;
                continue;
            }
            if self.position() >= upto {
                break;
            }
            let (run_end, skip) = self.segment.run_at(self.off);
            if skip != self.me {
                break;
            }
            self.off = run_end.min(self.local(upto));
        }
        self.position()
    }

    /// `upto` as an offset within the current segment (it is never before
    /// the segment's start).
    fn local(&self, upto: u64) -> usize {
        usize::try_from(upto.saturating_sub(self.segment.start)).unwrap_or(usize::MAX)
    }

    /// The unskipped slices from the position up to `upto`.
    fn slices<'a>(&'a self, upto: u64, out: &mut Vec<IoSlice<'a>>) {
        let mut segment: &'a Arc<Segment> = &self.segment;
        let mut off = self.off;
        while out.len() < MAX_SLICES {
            if segment.start + off as u64 >= upto {
                return;
            }
            if off >= segment.bytes.len() {
                match segment.next.get() {
                    Some(next) => {
                        segment = next;
                        off = 0;
                        continue;
                    }
                    None => return,
                }
            }
            let (run_end, skip) = segment.run_at(off);
            let stop = run_end
                .min(usize::try_from(upto.saturating_sub(segment.start)).unwrap_or(usize::MAX));
            if skip != self.me {
                out.push(IoSlice::new(&segment.bytes[off..stop]));
            }
            off = stop;
        }
    }

    /// Marks `n` bytes of the slices from the position up to `upto` as
    /// written (skipped runs on the way are passed too).
    fn advance(&mut self, mut n: usize, upto: u64) {
        loop {
            self.skip_to(upto);
            if n == 0 || self.position() >= upto {
                return;
            }
            let (run_end, _) = self.segment.run_at(self.off);
            let stop = run_end.min(self.local(upto));
            let take = n.min(stop - self.off);
            self.off += take;
            n -= take;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_chain_is_freed_without_recursion() {
        let mut log = Log::default();
        let outbox = log.outbox(1);
        for _ in 0..200_000 {
            log.append(0, b"x\n");
            log.seal();
        }
        assert_eq!(outbox.lag(log.end()), 400_000);
        // The outbox holds the only reference to all but the last segment.
        drop(outbox);
        assert_eq!(Arc::strong_count(&log.tail), 1);
    }

    #[test]
    fn a_member_skips_its_own_pieces_and_only_those() {
        let mut log = Log::default();
        let mut outbox = log.outbox(7);
        log.append(0, b"all ");
        log.append(7, b"mine ");
        log.append(8, b"theirs ");
        log.append(0, b"end");
        let end = log.seal();
        let mut out = Vec::new();
        let wrote = outbox.write(end, 10, |slices| {
            assert_eq!(slices.len(), 3);
            let n = slices.iter().map(|s| s.len()).sum();
            slices.iter().for_each(|s| out.extend_from_slice(s));
            Ok(n)
        });
        assert_eq!(wrote.unwrap(), Some(Wrote::All));
        assert_eq!(out, b"all theirs end");
        assert_eq!(outbox.position(), end);
        assert!(!outbox.has_pending(end));
    }
}
