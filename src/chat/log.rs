//! The room's shared output: every line the server sends, to the room or
//! to one member, is stored once, in an append-only chain of sealed
//! segments, and each member reads the chain through its own [`Outbox`].
//!
//! # Why a shared log
//!
//! Copying each message into every member's own queue costs a copy and a
//! lock per delivery: at 1,000 members that copy was the largest single
//! item of the server's profile (29% of its samples), ahead of the
//! kernel's own copy into the socket. Here a message is appended once;
//! a member's writer hands the kernel slices of the shared segments with
//! one `writev`, leaving out the pieces it must not get (its own messages,
//! its own join notice, other members' private lines).
//!
//! # Segments
//!
//! Lines are appended to an open buffer; sealing moves that buffer into an
//! immutable [`Segment`] linked after the previous one. A small room seals
//! after every relay; a large one every flush tick (see `room.rs`). Each
//! segment knows its global byte offset, and for each run of its bytes who
//! receives it ([`To`]).
//!
//! A member's [`Outbox`] holds an `Arc` of the segment it is reading, and
//! through the `next` links every later one; a segment is freed as soon as
//! the last member has read past it.
//!
//! # Private lines are runs too
//!
//! Lines for one member (its welcome, `/who`, errors, `/msg`) are runs
//! addressed to that member alone ([`To::Only`]), not a queue of their
//! own. So a member's place in the log is everything the server still owes
//! it: order holds between private and public lines without bookkeeping
//! (a `/msg` lands after its sender's earlier messages because it is
//! appended after them), and the room's flow control, which measures how
//! far members are behind the log's end, covers private lines as well.

use std::io::{self, IoSlice};
use std::sync::{Arc, OnceLock};

/// Most slices handed to one `writev` (well within IOV_MAX).
const MAX_SLICES: usize = 64;

/// Who receives a run of the log. Member ids start at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    All,
    /// Everyone but this member (its own messages, its own join).
    AllBut(u64),
    /// This member alone (a private line).
    Only(u64),
}

impl To {
    fn includes(self, me: u64) -> bool {
        match self {
            To::All => true,
            To::AllBut(id) => id != me,
            To::Only(id) => id == me,
        }
    }
}

/// One sealed stretch of the room's output.
pub struct Segment {
    /// Global offset of the first byte.
    start: u64,
    bytes: Vec<u8>,
    /// For each run of bytes, its end (offset within `bytes`) and who
    /// receives it. Ends ascend and the last is `bytes.len()`.
    runs: Vec<(usize, To)>,
    /// Holds a run for more than one member.
    public: bool,
    /// The members its private runs are for, sorted: a member none of
    /// them is for skips the whole segment at once (a connect storm's
    /// welcomes would otherwise cost every member a step per newcomer).
    only: Vec<u64>,
    next: OnceLock<Arc<Segment>>,
}

impl Segment {
    fn empty(start: u64) -> Arc<Segment> {
        Arc::new(Segment {
            start,
            bytes: Vec::new(),
            runs: Vec::new(),
            public: false,
            only: Vec::new(),
            next: OnceLock::new(),
        })
    }

    /// Whether nothing in it is for member `me`.
    fn skips(&self, me: u64) -> bool {
        !self.public && self.only.binary_search(&me).is_err()
    }

    /// Global offset just past the last byte.
    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    /// The run containing offset `off` (< len): its end and audience.
    fn run_at(&self, off: usize) -> (usize, To) {
        let i = self.runs.partition_point(|&(end, _)| end <= off);
        self.runs
            .get(i)
            .copied()
            .unwrap_or((self.bytes.len(), To::All))
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
    runs: Vec<(usize, To)>,
    /// What is open holds a run for more than one member.
    open_public: bool,
    tail: Arc<Segment>,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            open: Vec::new(),
            runs: Vec::new(),
            open_public: false,
            tail: Segment::empty(0),
        }
    }
}

impl Log {
    /// Appends `bytes` for the members `to` names.
    pub fn append(&mut self, to: To, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.open.extend_from_slice(bytes);
        self.open_public |= !matches!(to, To::Only(_));
        match self.runs.last_mut() {
            Some((end, last)) if *last == to => *end = self.open.len(),
            _ => self.runs.push((self.open.len(), to)),
        }
    }

    /// Whether what is open holds a line for more than one member.
    pub fn has_public(&self) -> bool {
        self.open_public
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
        let runs = std::mem::take(&mut self.runs);
        let mut only: Vec<u64> = runs
            .iter()
            .filter_map(|(_, to)| match to {
                To::Only(id) => Some(*id),
                _ => None,
            })
            .collect();
        only.sort_unstable();
        only.dedup();
        let segment = Arc::new(Segment {
            start: self.tail.end(),
            bytes: std::mem::take(&mut self.open),
            runs,
            public: std::mem::take(&mut self.open_public),
            only,
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
            stop: None,
        }
    }
}

/// How a write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrote {
    /// Everything there was to write is written.
    All,
    /// The socket took part of it (or nothing): wait until it is writable.
    Blocked,
}

/// One member's reading position in the log.
pub struct Outbox {
    me: u64,
    segment: Arc<Segment>,
    /// Bytes of `segment` already written (or skipped).
    off: usize,
    /// Read the log no further than this (the member has left).
    stop: Option<u64>,
}

impl Outbox {
    /// Global offset read up to.
    pub fn position(&self) -> u64 {
        self.segment.start + self.off as u64
    }

    /// Lets go of the log: the member was cut off, and nothing more is
    /// written to it. What it had not read is freed once nobody else
    /// needs it.
    pub fn cut_off(&mut self) {
        let at = self.position();
        self.segment = Segment::empty(at);
        self.off = 0;
        self.stop = Some(at);
    }

    /// Reads the log no further than `end` from now on (the member left).
    pub fn stop_at(&mut self, end: u64) {
        self.stop = Some(self.stop.map_or(end, |s| s.min(end)));
    }

    /// Whether anything is left to write, given the sealed end (skipped
    /// runs count until they are passed).
    pub fn has_pending(&self, end: u64) -> bool {
        self.position() < self.limit(end)
    }

    fn limit(&self, end: u64) -> u64 {
        self.stop.map_or(end, |s| s.min(end))
    }

    /// Writes the log up to `end` with `write`, a vectored non-blocking
    /// write, until it is all written or the socket is full. At most
    /// `rounds` writes are made; `Ok(None)` means more is left after them.
    pub fn write(
        &mut self,
        end: u64,
        rounds: usize,
        mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> io::Result<Option<Wrote>> {
        let upto = self.limit(end);
        for _ in 0..rounds {
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
        self.skip_to(upto);
        Ok(if self.position() < upto {
            None
        } else {
            Some(Wrote::All)
        })
    }

    /// Moves past runs not for this member and finished segments without
    /// passing `upto`; returns the position reached.
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
            if self.segment.skips(self.me) {
                self.off = self.segment.bytes.len().min(self.local(upto));
                continue;
            }
            let (run_end, to) = self.segment.run_at(self.off);
            if to.includes(self.me) {
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

    /// The slices for this member from the position up to `upto`.
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
            let (run_end, to) = segment.run_at(off);
            let stop = run_end
                .min(usize::try_from(upto.saturating_sub(segment.start)).unwrap_or(usize::MAX));
            if to.includes(self.me) {
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
            log.append(To::All, b"x\n");
            log.seal();
        }
        assert_eq!(log.end() - outbox.position(), 400_000);
        // The outbox holds the only reference to all but the last segment.
        drop(outbox);
        assert_eq!(Arc::strong_count(&log.tail), 1);
    }

    #[test]
    fn a_member_skips_its_own_pieces_and_only_those() {
        let mut log = Log::default();
        let mut outbox = log.outbox(7);
        log.append(To::All, b"all ");
        log.append(To::AllBut(7), b"mine ");
        log.append(To::AllBut(8), b"theirs ");
        log.append(To::Only(9), b"for nine ");
        log.append(To::Only(7), b"for me ");
        log.append(To::All, b"end");
        let end = log.seal();
        let mut out = Vec::new();
        let wrote = outbox.write(end, 10, |slices| {
            assert_eq!(slices.len(), 4);
            let n = slices.iter().map(|s| s.len()).sum();
            slices.iter().for_each(|s| out.extend_from_slice(s));
            Ok(n)
        });
        assert_eq!(wrote.unwrap(), Some(Wrote::All));
        assert_eq!(out, b"all theirs for me end");
        assert_eq!(outbox.position(), end);
        assert!(!outbox.has_pending(end));
    }
}
