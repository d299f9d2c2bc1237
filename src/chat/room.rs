//! The room: who is connected, under which nick, where each member is in
//! the room's output, and the flow control that keeps them together.
//!
//! # Fan-out
//!
//! A message is relayed by the task that read it: it appends the batch of
//! lines one read brought in to the room's shared [`Log`], once, whatever
//! the number of members (see [`super::log`]). In a room of up to
//! [`LARGE_ROOM`] members the log is sealed at once and every member's
//! task is woken; a larger room seals it every flush tick and wakes one
//! group of members per tick ([`FLUSH_SLOTS`]), so each member writes what
//! a busy room said meanwhile with one `writev`, which is where the speed
//! comes from. Nothing is awaited while a lock is held.
//!
//! # Flow control: the room goes at the pace of its slowest reader
//!
//! Nobody's line is ever dropped for being late. Instead the log may run
//! at most [`WINDOW`] bytes ahead of the slowest member still in the room
//! (its *floor*, beyond what the kernel's socket buffers already hold).
//! A sender that finds the window full stops reading its socket
//! ([`Room::admit`] says no), so TCP pushes back on it as a pipe would; it
//! is woken when the slowest members have caught up to half the window
//! (the hysteresis keeps a full room from waking its senders for every
//! few bytes), and each sender woken then gets one read's turn before the
//! window is looked at again, so a flooder cannot take every turn from a
//! sender who has one line to say.
//!
//! That makes memory bounded (one window of log, shared, whatever the
//! number of members) and lossless for every reader that reads, and puts
//! the cost of a reader that does not read on time: the server cuts off
//! a member that does not catch up with what the room had said within the
//! stall timeout (see `super::server`). Until then the others wait at
//! most that long, and only once the window is full, which at chat rates
//! (and in every benchmark shape, where a whole run is smaller than the
//! window plus the kernel's buffers) it never is.
//!
//! Why not cut off a member as soon as it is some number of bytes behind,
//! as this room once did: then one flooding sender decides who is "too
//! slow", and an honest reader that merely reads slower than the flood
//! arrives loses its connection and everything after it.
//!
//! # Join and leave notices
//!
//! In a room of up to [`LARGE_ROOM`] members every join and leave is
//! announced as it happens. Above that, announcing each one would make a
//! connect storm quadratic (every joiner told to everyone), so they are
//! counted and summed up in one line per [`PRESENCE_INTERVAL`] instead.

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use futures_util::task::AtomicWaker;

use super::history::{History, now_ms, render};
use super::log::{Log, Outbox, To, Wrote};
use super::protocol::{MAX_WHO, Notice, nick_key};

/// How far the log may run ahead of the slowest member, in bytes: the
/// only buffer of the room's output besides the kernel's. Large enough
/// that a member who stopped reading does not hold anyone up at chat
/// rates (a whole 1,000-client benchmark run is 640 KB per member), small
/// enough that a full window drains in milliseconds for readers that read.
pub const WINDOW: u64 = 1024 * 1024;

/// Largest room that is told of every join and leave one by one and gets
/// every message written at once; larger rooms sum up joins and leaves
/// and coalesce their output (see [`Room::flush`]).
pub const LARGE_ROOM: usize = 100;

/// How long a large room's output may wait to be coalesced into fewer
/// writes, at least and at most (see [`Room::flush_interval`]): small
/// next to human reaction time and to the 100 ms p99 a room of ten
/// thousand is held to, large enough that a busy room sends several
/// messages per write.
pub const FLUSH_INTERVAL: (Duration, Duration) =
    (Duration::from_millis(20), Duration::from_millis(50));

/// A large room's members are woken in this many groups (member id modulo
/// `FLUSH_SLOTS`), one group per tick of [`Room::flush_interval`] /
/// `FLUSH_SLOTS`.
pub const FLUSH_SLOTS: usize = 10;

/// Unsealed bytes that are sealed and sent at once, without waiting for
/// the flush.
pub const FLUSH_NOW: usize = 64 * 1024;

/// How often a large room hears the sum of its joins and leaves.
pub const PRESENCE_INTERVAL: Duration = Duration::from_secs(1);

/// One chat room: its members, its log and its history.
pub struct Room {
    /// As its first member spelled it, `#` included.
    name: Arc<str>,
    /// What names are unique under.
    key: String,
    members: RwLock<Members>,
    /// Members online (kept beside the table, so relays need no lock on it).
    online: AtomicUsize,
    /// `--redis`: members on the other servers, for the counts people see.
    remote: AtomicUsize,
    log: Mutex<Log>,
    /// The log's sealed end, for readers that do not take its lock.
    end: AtomicU64,
    /// The end of the last sealed line meant for more than one member: a
    /// large room's flush wakes only members behind it, so a private line
    /// does not wake everyone.
    public_end: AtomicU64,
    /// No member is behind this (a lower bound, raised by
    /// [`Room::rescan`]): the window's start.
    floor: AtomicU64,
    /// Senders waiting for the window to open.
    held: Mutex<Vec<Arc<Member>>>,
    held_count: AtomicUsize,
    /// Members whose private line waits for the next flush to be sealed.
    newcomers: Mutex<Vec<Arc<Member>>>,
    /// Relay a sender's messages back to it too (seed task 4's behaviour).
    echo_self: bool,
    /// The lines said here lately.
    history: Mutex<History>,
    /// Joins and leaves not yet announced (large rooms only).
    presence: Mutex<Presence>,
    /// The server is shutting down: every member's task says goodbye.
    closing: AtomicBool,
    /// When it was made (ms since the epoch): with `--redis`, where the
    /// reading of its stream starts.
    made: u64,
}

#[derive(Default)]
struct Members {
    /// By flush slot, then id.
    by_slot: [HashMap<u64, Arc<Member>>; FLUSH_SLOTS],
    /// Member id -> nick, for `/who`.
    names: HashMap<u64, Arc<str>>,
}

impl Members {
    fn get(&self, id: u64) -> Option<&Arc<Member>> {
        self.by_slot[slot(id)].get(&id)
    }

    fn all(&self) -> impl Iterator<Item = &Arc<Member>> {
        self.by_slot.iter().flat_map(HashMap::values)
    }

    fn len(&self) -> usize {
        self.by_slot.iter().map(HashMap::len).sum()
    }

    /// Wakes every member but `skip` (0: nobody is skipped).
    fn wake_all(&self, skip: u64) {
        for member in self.all() {
            if member.id != skip {
                member.waker.wake();
            }
        }
    }
}

/// A member's flush slot.
fn slot(id: u64) -> usize {
    (id % FLUSH_SLOTS as u64) as usize
}

#[derive(Default)]
struct Presence {
    joined: u64,
    left: u64,
    cut_off: u64,
}

/// What another server's member did, for [`Room::announce`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Told {
    Joined,
    Left,
    CutOff,
}

/// How a member left, for the room's notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leave {
    /// `/quit`, `bye`, a closed or broken connection.
    Left,
    /// It did not read what the room said in time.
    CutOff,
    /// The server is shutting down: nobody is told.
    Shutdown,
    /// It went to the room named so.
    Moved(Arc<str>),
}

impl Room {
    /// An empty room called `name` (`#` included) that keeps
    /// `history` lines.
    pub fn new(name: &str, echo_self: bool, history: usize) -> Room {
        Room {
            name: Arc::from(name),
            key: nick_key(name),
            members: RwLock::new(Members::default()),
            online: AtomicUsize::new(0),
            remote: AtomicUsize::new(0),
            log: Mutex::new(Log::default()),
            end: AtomicU64::new(0),
            public_end: AtomicU64::new(0),
            floor: AtomicU64::new(0),
            held: Mutex::new(Vec::new()),
            held_count: AtomicUsize::new(0),
            newcomers: Mutex::new(Vec::new()),
            echo_self,
            history: Mutex::new(History::new(history)),
            presence: Mutex::new(Presence::default()),
            closing: AtomicBool::new(false),
            made: now_ms(),
        }
    }

    /// When the room was made, in ms since the epoch.
    pub fn made(&self) -> u64 {
        self.made
    }

    /// Tells every member that the server is shutting down (one line in
    /// the log, for everyone) and wakes their tasks to say goodbye.
    pub fn close_all(&self) {
        {
            let mut log = lock(&self.log);
            log.append(To::All, &Notice::ShuttingDown.to_bytes());
            self.seal(&mut log);
        }
        self.closing.store(true, Ordering::SeqCst);
        read(&self.members).wake_all(0);
    }

    /// True once [`Room::close_all`] was called.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// The log's sealed end.
    pub fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Seals what `log` (the room's, locked) holds open and publishes the
    /// new end; returns it.
    fn seal(&self, log: &mut Log) -> u64 {
        let public = log.has_public();
        let end = log.seal();
        self.end.store(end, Ordering::Release);
        if public {
            self.public_end.store(end, Ordering::Release);
        }
        end
    }

    fn is_large(&self) -> bool {
        self.online.load(Ordering::Relaxed) > LARGE_ROOM
    }

    /// The room's name, `#` included.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Its name as names are compared.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Adds member `id` as `nick`, queues `greeting` (given the number of
    /// members, the newcomer included) as its first lines and tells the
    /// room.
    pub fn enter(
        &self,
        id: u64,
        nick: &Arc<str>,
        greeting: impl FnOnce(usize) -> Vec<u8>,
    ) -> Arc<Member> {
        // The greeting and the notice are appended under the table's lock,
        // so a newcomer's first line is its greeting and every count is
        // exact.
        let mut members = write(&self.members);
        let here = members.len() + 1;
        let online = here + self.remote();
        members.names.insert(id, nick.clone());
        let small = here <= LARGE_ROOM;
        let member = {
            let mut log = lock(&self.log);
            // A newcomer reads from the sealed end on: what is open must
            // not be for it (others' welcomes are not).
            if log.has_public() {
                self.seal(&mut log);
            }
            let member = Arc::new(Member::new(id, log.outbox(id)));
            log.append(To::Only(id), &greeting(online));
            if small {
                // Everyone but the newcomer hears of it at once.
                let joined = Notice::Joined { nick, online };
                log.append(To::AllBut(id), &joined.to_bytes());
                self.seal(&mut log);
            } else {
                // Sealed by the next flush tick, with the other joins of a
                // connect storm, which wakes the newcomer then.
                lock(&self.presence).joined += 1;
                lock(&self.newcomers).push(member.clone());
            }
            member
        };
        if small {
            members.wake_all(id);
        }
        members.by_slot[slot(id)].insert(id, member.clone());
        self.online.store(here, Ordering::Relaxed);
        member
    }

    /// Removes a member and tells the room how it left. `last`, if any,
    /// is the member's own last line (`* bye`); its writer stops after
    /// it. A member cut off lets go of the log at once.
    pub fn leave(&self, member: &Member, nick: &str, how: Leave, last: Option<&[u8]>) {
        let end = {
            let mut log = lock(&self.log);
            if let Some(last) = last {
                log.append(To::Only(member.id), last);
            }
            self.seal(&mut log)
        };
        {
            let mut outbox = member.outbox();
            if how == Leave::CutOff {
                outbox.cut_off();
            } else {
                outbox.stop_at(end);
            }
        }
        let mut members = write(&self.members);
        if members.by_slot[slot(member.id)]
            .remove(&member.id)
            .is_none()
        {
            return;
        }
        members.names.remove(&member.id);
        let here = members.len();
        self.online.store(here, Ordering::Relaxed);
        let online = here + self.remote();
        if how != Leave::Shutdown {
            // Announced one by one in a room that had up to LARGE_ROOM
            // members, under the lock like joins (so nothing is deferred).
            if here < LARGE_ROOM {
                let notice = match &how {
                    Leave::CutOff => Notice::CutOff { nick },
                    Leave::Moved(room) => Notice::Moved { nick, room, online },
                    _ => Notice::Left { nick, online },
                };
                let mut log = lock(&self.log);
                log.append(To::All, &notice.to_bytes());
                self.seal(&mut log);
                drop(log);
                members.wake_all(0);
            } else {
                let mut presence = lock(&self.presence);
                match how {
                    Leave::CutOff => presence.cut_off += 1,
                    _ => presence.left += 1,
                }
            }
        }
        drop(members);
        self.unhold(member);
        // It may have been the slowest member, holding senders back.
        if self.held_count.load(Ordering::Acquire) > 0 {
            self.release();
        }
    }

    /// Appends `bytes` for every member, but not for `from` unless the
    /// room echoes senders' messages back.
    pub fn relay(&self, from: u64, bytes: &[u8]) {
        let to = if self.echo_self {
            To::All
        } else {
            To::AllBut(from)
        };
        self.publish(to, bytes);
        self.remember(now_ms(), bytes);
    }

    /// `--redis`: lines said here on other servers before this one had
    /// the room go before its own history.
    pub fn remember_earlier(&self, earlier: &[(u64, Vec<u8>)]) {
        lock(&self.history).prepend(earlier);
    }

    /// Adds lines said at `time` to the room's history.
    pub fn remember(&self, time: u64, bytes: &[u8]) {
        lock(&self.history).push(time, bytes);
    }

    /// The `/history` answer: the room's last `n` lines, with their
    /// times, between a header and an end line.
    pub fn history(&self, n: usize) -> Vec<u8> {
        let lines = lock(&self.history).last(n);
        self.history_block(&lines)
    }

    /// The same for `--replay`: nothing at all while the history is empty.
    pub fn replay(&self, n: usize) -> Vec<u8> {
        let lines = lock(&self.history).last(n);
        if lines.is_empty() {
            return Vec::new();
        }
        self.history_block(&lines)
    }

    fn history_block(&self, lines: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        Notice::HistoryStart {
            room: &self.name,
            lines: lines.len(),
        }
        .push(&mut out);
        render(&mut out, lines);
        Notice::HistoryEnd.push(&mut out);
        out
    }

    /// Appends `bytes` for every member.
    ///
    /// A small room seals it and wakes every member at once. A room of
    /// more than [`LARGE_ROOM`] members leaves it for the next
    /// [`Room::flush`]: what a busy room says in a flush interval then
    /// leaves in one write per member instead of one per message (the
    /// write, not the copy, is what costs). [`FLUSH_NOW`] unsealed bytes
    /// are sent at once.
    pub fn broadcast(&self, bytes: &[u8]) {
        self.publish(To::All, bytes);
    }

    fn publish(&self, to: To, bytes: &[u8]) {
        let large = self.is_large();
        {
            let mut log = lock(&self.log);
            log.append(to, bytes);
            if large && log.open_len() < FLUSH_NOW {
                return;
            }
            self.seal(&mut log);
        }
        let skip = match to {
            To::AllBut(id) => id,
            _ => 0,
        };
        read(&self.members).wake_all(skip);
    }

    /// A flush tick of a large room: seals what was appended and wakes
    /// the members of flush slot `slot` that have not written up to the
    /// last line meant for them all, and every newcomer.
    pub fn flush(&self, slot: usize) {
        self.seal(&mut lock(&self.log));
        for member in std::mem::take(&mut *lock(&self.newcomers)) {
            member.waker.wake();
        }
        let public = self.public_end.load(Ordering::Acquire);
        let members = read(&self.members);
        let Some(group) = members.by_slot.get(slot) else {
            return;
        };
        for member in group.values() {
            if member.written.load(Ordering::Relaxed) < public {
                member.waker.wake();
            }
        }
    }

    /// Appends `bytes` for `member` alone, sealed at once (an answer to
    /// its command should not wait for a flush), and wakes its task.
    pub fn tell(&self, member: &Member, bytes: &[u8]) {
        {
            let mut log = lock(&self.log);
            log.append(To::Only(member.id), bytes);
            self.seal(&mut log);
        }
        member.waker.wake();
    }

    /// Member `id` is called `new` now (it was `old`): tells the room,
    /// unless the two are the same.
    pub fn renamed(&self, id: u64, old: &str, new: &Arc<str>) {
        write(&self.members).names.insert(id, new.clone());
        if *old != **new {
            self.broadcast(&Notice::Renamed { from: old, to: new }.to_bytes());
        }
    }

    /// Appends `bytes` for member `id` and wakes it; false if it is not
    /// here (any more).
    pub fn tell_id(&self, id: u64, bytes: &[u8]) -> bool {
        let members = read(&self.members);
        let Some(member) = members.get(id) else {
            return false;
        };
        self.tell(member, bytes);
        true
    }

    /// The `/who` answer: how many are online and their nicks, sorted;
    /// `remote`: the room's members on other servers.
    pub fn who(&self, remote: &[Arc<str>]) -> Vec<u8> {
        let (mut nicks, online) = {
            let members = read(&self.members);
            let nicks: Vec<(String, Arc<str>)> = members
                .names
                .values()
                .chain(remote)
                .map(|nick| (nick_key(nick), nick.clone()))
                .collect();
            (nicks, members.len() + remote.len())
        };
        nicks.sort_unstable();
        let names: Vec<String> = nicks
            .into_iter()
            .take(MAX_WHO)
            .map(|(_, nick)| nick.to_string())
            .collect();
        Notice::Who {
            room: &self.name,
            nicks: &names,
            online,
        }
        .to_bytes()
    }

    /// The joins and leaves of a large room since the last call, as one
    /// notice, or `None` when there were none.
    pub fn presence_summary(&self) -> Option<Vec<u8>> {
        let presence = std::mem::take(&mut *lock(&self.presence));
        if presence.joined + presence.left + presence.cut_off == 0 {
            return None;
        }
        Some(
            Notice::Presence {
                joined: presence.joined,
                left: presence.left,
                cut_off: presence.cut_off,
                online: self.online_total(),
            }
            .to_bytes(),
        )
    }

    /// How long coalesced output may wait now. Writes to a loopback or
    /// LAN socket cost microseconds each, one per member per flush, so a
    /// bigger room waits longer (1 ms per 100 members, within
    /// [`FLUSH_INTERVAL`]) and sends more messages per write.
    pub fn flush_interval(&self) -> Duration {
        let (least, most) = FLUSH_INTERVAL;
        let scaled = Duration::from_millis(self.online() as u64 / 100);
        scaled.clamp(least, most)
    }

    /// Members online now (here).
    pub fn online(&self) -> usize {
        self.online.load(Ordering::Relaxed)
    }

    /// `--redis`: members on the other servers.
    fn remote(&self) -> usize {
        self.remote.load(Ordering::Relaxed)
    }

    /// Members online on every server.
    pub fn online_total(&self) -> usize {
        self.online() + self.remote()
    }

    /// `--redis`: the room has `count` members on the other servers.
    pub fn set_remote(&self, count: usize) {
        self.remote.store(count, Ordering::Relaxed);
    }

    /// Another server's member came or went: said at once in a room of
    /// up to [`LARGE_ROOM`] members here (`notice` is given the count on
    /// every server), summed up with the room's own joins and leaves in
    /// a larger one.
    pub fn announce(&self, what: Told, notice: impl FnOnce(usize) -> Vec<u8>) {
        if self.is_large() {
            let mut presence = lock(&self.presence);
            match what {
                Told::Joined => presence.joined += 1,
                Told::Left => presence.left += 1,
                Told::CutOff => presence.cut_off += 1,
            }
        } else {
            self.broadcast(&notice(self.online_total()));
        }
    }

    /// Member `id`'s nick was taken back (see `super::hub`): its task
    /// picks up the new one.
    pub fn force(&self, id: u64) {
        if let Some(member) = read(&self.members).get(id) {
            member.forced.store(true, Ordering::Release);
            member.waker.wake();
        }
    }

    /// Whether the log holds anything `member` has not written yet (or
    /// skipped).
    pub fn pending(&self, member: &Member) -> bool {
        member.outbox().has_pending(self.end())
    }

    /// How far `member` is behind the log's end, in bytes.
    pub fn lag(&self, member: &Member) -> u64 {
        self.end()
            .saturating_sub(member.written.load(Ordering::Relaxed))
    }

    /// Writes what is waiting for `member` with `write` (a non-blocking
    /// vectored write), in at most `rounds` writes.
    pub fn write_out(
        &self,
        member: &Member,
        rounds: usize,
        write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> io::Result<Flow> {
        let end = self.end();
        let (wrote, before, after) = {
            let mut outbox = member.outbox();
            let before = outbox.position();
            let wrote = outbox.write(end, rounds, write);
            let after = outbox.position();
            member.written.store(after, Ordering::Relaxed);
            (wrote, before, after)
        };
        // Only the slowest members can open the window: those at the
        // floor, and (the floor may be stale, or read while they moved)
        // those that were half a window behind. The others need not look.
        if after > before
            && self.held_count.load(Ordering::Acquire) > 0
            && (before <= self.floor.load(Ordering::Relaxed)
                || end.saturating_sub(before) >= WINDOW / 2)
        {
            self.release();
        }
        Ok(match wrote? {
            Some(Wrote::All) => Flow::Idle,
            Some(Wrote::Blocked) => Flow::Blocked,
            None => Flow::Busy,
        })
    }

    /// Whether `member` may add to the log now. If the window is full it
    /// is put on the list of held senders, woken (with
    /// [`Member::take_turn`] set) once the window is half empty again.
    pub fn admit(&self, member: &Arc<Member>) -> bool {
        let end = self.end();
        if end.saturating_sub(self.floor.load(Ordering::Relaxed)) < WINDOW
            || end.saturating_sub(self.rescan()) < WINDOW
        {
            if member.held.load(Ordering::Acquire) {
                self.unhold(member);
            }
            return true;
        }
        if !member.held.swap(true, Ordering::AcqRel) {
            let mut held = lock(&self.held);
            held.push(member.clone());
            self.held_count.store(held.len(), Ordering::Release);
        }
        // A release that ran before we were on the list did not see us.
        self.release();
        // Members with nothing to write but others' private lines are not
        // woken by a large room's flush; the window needs them to move on.
        let end = self.end();
        for laggard in read(&self.members).all() {
            if end.saturating_sub(laggard.written.load(Ordering::Relaxed)) >= WINDOW / 2 {
                laggard.waker.wake();
            }
        }
        false
    }

    /// Takes `member` off the list of held senders (it got in on a retry,
    /// or it is leaving): it is not given a turn later, and the list does
    /// not keep its place in the log alive.
    fn unhold(&self, member: &Member) {
        if member.held.swap(false, Ordering::AcqRel) {
            let mut held = lock(&self.held);
            held.retain(|m| m.id != member.id);
            self.held_count.store(held.len(), Ordering::Release);
        }
        member.turn.store(false, Ordering::Release);
    }

    /// Raises the floor to the slowest member's position; returns it.
    fn rescan(&self) -> u64 {
        let end = self.end();
        let slowest = read(&self.members)
            .all()
            .map(|m| m.written.load(Ordering::Relaxed))
            .min()
            .unwrap_or(end);
        self.floor
            .fetch_max(slowest, Ordering::Relaxed)
            .max(slowest)
    }

    /// Wakes every held sender if the window is less than half full.
    fn release(&self) {
        if self.end().saturating_sub(self.rescan()) >= WINDOW / 2 {
            return;
        }
        let held = {
            let mut held = lock(&self.held);
            self.held_count.store(0, Ordering::Release);
            std::mem::take(&mut *held)
        };
        for member in held {
            member.held.store(false, Ordering::Release);
            member.turn.store(true, Ordering::Release);
            member.waker.wake();
        }
    }
}

/// What writing found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Everything queued is written.
    Idle,
    /// The socket is full; wait until it is writable.
    Blocked,
    /// More is queued already; come back after letting others run.
    Busy,
}

/// One connected client as the room sees it: an id and its place in the
/// log.
pub struct Member {
    pub id: u64,
    outbox: Mutex<Outbox>,
    /// How far it has written the log (for the flush's wake-ups and the
    /// window's floor).
    written: AtomicU64,
    /// On the list of senders waiting for the window.
    held: AtomicBool,
    /// Released from that list: may add one read's worth regardless.
    turn: AtomicBool,
    /// Its nick was taken back: the hub has its new one.
    forced: AtomicBool,
    /// Wakes the member's task when there is output for it, when the
    /// window opens for it, or when the server shuts down.
    pub waker: AtomicWaker,
}

impl Member {
    fn new(id: u64, outbox: Outbox) -> Member {
        Member {
            id,
            written: AtomicU64::new(outbox.position()),
            outbox: Mutex::new(outbox),
            held: AtomicBool::new(false),
            turn: AtomicBool::new(false),
            forced: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        lock(&self.outbox)
    }

    /// How far it has written the log.
    pub fn position(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// True (once) after its nick was taken back.
    pub fn take_forced(&self) -> bool {
        self.forced.load(Ordering::Acquire) && self.forced.swap(false, Ordering::AcqRel)
    }

    /// True (once) after the window opened for this held sender.
    pub fn take_turn(&self) -> bool {
        // Looked at on every poll: a plain load first keeps the cache line
        // shared while there is no turn.
        self.turn.load(Ordering::Acquire) && self.turn.swap(false, Ordering::AcqRel)
    }
}

// A panic while holding one of these locks leaves plain data behind (byte
// buffers, maps), never a broken invariant, so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::chat::protocol::LOBBY;

    /// Adds a member to `room` as the hub would, under the nick
    /// `guestN`, N its place in the room.
    pub(crate) fn join(room: &Room) -> (Arc<Member>, Arc<str>) {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let nick: Arc<str> = format!("guest{}", room.online() + 1).into();
        let member = room.enter(id, &nick, |online| {
            Notice::Welcome {
                nick: &nick,
                online,
            }
            .to_bytes()
        });
        (member, nick)
    }

    /// Everything waiting for `member`, as if its socket took it all.
    pub(crate) fn drain(room: &Room, member: &Member) -> String {
        let mut out = Vec::new();
        let flow = room
            .write_out(member, 1000, |slices| {
                let before = out.len();
                for s in slices {
                    out.extend_from_slice(s);
                }
                Ok(out.len() - before)
            })
            .unwrap();
        assert_eq!(flow, Flow::Idle);
        String::from_utf8(out).unwrap()
    }

    /// Writes `budget` bytes of what waits for `member`, as a socket that
    /// then fills up would take them.
    fn write_at_most(room: &Room, member: &Member, mut budget: usize) {
        room.write_out(member, 1000, |slices| {
            let n = slices.iter().map(|s| s.len()).sum::<usize>().min(budget);
            budget -= n;
            Ok(n)
        })
        .unwrap();
    }

    #[test]
    fn messages_reach_everyone_but_the_sender() {
        let room = Room::new(LOBBY, false, 0);
        let (a, a_nick) = join(&room);
        let (b, _) = join(&room);
        assert_eq!(&*a_nick, "guest1");
        assert!(drain(&room, &a).contains("guest2 joined (2 online)"));
        assert!(drain(&room, &b).starts_with("* welcome to sockit chat, you are guest2 (2 online"));
        room.relay(a.id, b"[guest1] hi\n");
        assert_eq!(drain(&room, &b), "[guest1] hi\n");
        assert_eq!(drain(&room, &a), "");
        assert!(!room.pending(&a));
    }

    #[test]
    fn history_keeps_what_was_relayed_with_its_time() {
        let room = Room::new(LOBBY, false, 10);
        let (a, _) = join(&room);
        assert!(room.replay(5).is_empty());
        let empty = String::from_utf8(room.history(5)).unwrap();
        assert_eq!(empty, "* history of #lobby: 0 lines\n* end of history\n");
        room.relay(a.id, b"[guest1] one\n[guest1] two\n");
        room.tell(&a, b"* not history\n");
        room.relay(a.id, b"[guest1] three\n");
        let text = String::from_utf8(room.history(2)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0], "* history of #lobby: 2 lines");
        assert!(lines[1].starts_with('[') && lines[1].ends_with("] [guest1] two"));
        assert!(lines[2].ends_with("] [guest1] three"));
        assert_eq!(lines[3], "* end of history");
        assert_eq!(room.replay(2), room.history(2));
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let room = Room::new(LOBBY, false, 0);
        let (a, _) = join(&room);
        let (b, _) = join(&room);
        drain(&room, &b);
        room.relay(a.id, b"first\n");
        room.relay(b.id, b"own\n");
        room.relay(a.id, b"second\n");
        room.tell(&b, b"note\n");
        let mut out = Vec::new();
        // A socket that takes three bytes per write.
        loop {
            let flow = room
                .write_out(&b, 1, |slices| {
                    let mut n = 0;
                    for s in slices {
                        let take = (3 - n).min(s.len());
                        out.extend_from_slice(&s[..take]);
                        n += take;
                    }
                    Ok(n)
                })
                .unwrap();
            if flow == Flow::Idle {
                break;
            }
        }
        assert_eq!(String::from_utf8(out).unwrap(), "first\nsecond\nnote\n");
    }

    #[test]
    fn a_full_window_holds_senders_until_the_slowest_half_catches_up() {
        let room = Room::new(LOBBY, false, 0);
        let (a, _) = join(&room);
        let (b, _) = join(&room);
        let (c, _) = join(&room);
        drain(&room, &a);
        drain(&room, &b);
        drain(&room, &c);
        let line = vec![b'x'; 1000];
        let mut sent = 0;
        while room.admit(&a) {
            room.relay(a.id, &line);
            sent += 1;
            assert!(sent <= WINDOW / 1000 + 1, "the window never closed");
        }
        // The sender passes its own lines (its task writes after every
        // relay).
        assert_eq!(drain(&room, &a), "");
        // Nothing is dropped: c, which read nothing, holds it all.
        assert!(room.lag(&c) >= WINDOW);
        assert!(!room.admit(&a));
        assert!(!a.take_turn());
        // b catching up does not open the window: c is still behind.
        drain(&room, &b);
        assert!(!a.take_turn());
        // c reading most of it (to less than half the window behind)
        // gives the held sender its turn.
        write_at_most(&room, &c, (WINDOW / 2 + 1000) as usize);
        assert!(a.take_turn());
        assert!(room.admit(&a));
        // And c gets every line.
        assert_eq!(
            (WINDOW / 2 + 1000) as usize + drain(&room, &c).len(),
            sent as usize * 1000
        );
    }

    #[test]
    fn a_sender_let_in_on_a_retry_is_off_the_held_list() {
        let room = Room::new(LOBBY, false, 0);
        let (a, _) = join(&room);
        let (c, _) = join(&room);
        drain(&room, &a);
        drain(&room, &c);
        let line = vec![b'x'; 1000];
        while room.admit(&a) {
            room.relay(a.id, &line);
        }
        drain(&room, &a);
        // c reads a quarter of the window: open again, but not half empty,
        // so nobody is released...
        write_at_most(&room, &c, (WINDOW / 4) as usize);
        assert!(!a.take_turn());
        // ...and the sender, looking again, gets in and is off the list:
        assert!(room.admit(&a));
        assert_eq!(room.held_count.load(Ordering::Relaxed), 0);
        // c catching up later gives it no turn it did not ask for.
        drain(&room, &c);
        assert!(!a.take_turn());
    }

    #[test]
    fn a_member_leaving_opens_the_window_it_held() {
        let room = Room::new(LOBBY, false, 0);
        let (a, _) = join(&room);
        let (b, b_nick) = join(&room);
        drain(&room, &a);
        let line = vec![b'x'; 64 * 1024];
        while room.admit(&a) {
            room.relay(a.id, &line);
        }
        assert_eq!(drain(&room, &a), "");
        assert!(!a.take_turn());
        room.leave(&b, &b_nick, Leave::CutOff, None);
        assert!(a.take_turn());
        assert!(room.admit(&a));
        assert_eq!(
            drain(&room, &a),
            format!("* {b_nick} was cut off (not reading)\n")
        );
    }
}
