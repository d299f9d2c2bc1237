//! The room: who is connected, under which nick, and each member's
//! outbound queue.
//!
//! # Fan-out and the slow-client policy
//!
//! A message is relayed by the task that read it: it takes the member
//! table's read lock once per batch of lines (everything one read brought
//! in), and for each recipient appends the batch's bytes to that member's
//! [`Outbox`] under the member's own small mutex. Nothing is awaited while
//! a lock is held, and no lock is shared by all deliveries, so senders
//! relay in parallel and a recipient's writer only contends with the
//! senders writing to it. The recipient's task swaps the whole outbox out
//! and writes it with as few `write` calls as the socket allows: when the
//! room is busy, one system call carries many messages, which is where the
//! speed comes from.
//!
//! An outbox holds at most [`OUTBOX_LIMIT`] bytes beyond what the kernel's
//! socket buffers already hold. A member whose outbox would overflow has
//! stopped reading (or reads far slower than the room talks): it is marked
//! overflowed, its queue is freed at once, and its own task disconnects it
//! and tells the room. Nobody ever waits for a slow member, and a slow
//! member costs at most its outbox.
//!
//! # Join and leave notices
//!
//! In a room of up to [`LARGE_ROOM`] members every join and leave is
//! announced as it happens. Above that, announcing each one would make a
//! connect storm quadratic (every joiner told to everyone), so they are
//! counted and summed up in one line per [`PRESENCE_INTERVAL`] instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use futures_util::task::AtomicWaker;

use super::protocol::{MAX_WHO, Notice, nick_key};

/// Bytes a member's outbound queue may hold before it is cut off.
pub const OUTBOX_LIMIT: usize = 1024 * 1024;

/// Largest room that is told of every join and leave one by one and gets
/// every message written at once; larger rooms sum up joins and leaves
/// and coalesce their output (see [`Room::broadcast`]).
pub const LARGE_ROOM: usize = 100;

/// How long a large room's output may wait to be coalesced into fewer
/// writes, at least and at most (see [`Room::flush_interval`]): small
/// next to human reaction time and to the 100 ms p99 a room of ten
/// thousand is held to, large enough that a busy room sends several
/// messages per write.
pub const FLUSH_INTERVAL: (Duration, Duration) =
    (Duration::from_millis(20), Duration::from_millis(50));

/// Queued bytes that are written at once, without waiting for the flush.
pub const FLUSH_NOW: usize = 64 * 1024;

/// How often a large room hears the sum of its joins and leaves.
pub const PRESENCE_INTERVAL: Duration = Duration::from_secs(1);

/// The chat room shared by every connection.
pub struct Room {
    members: RwLock<Members>,
    /// Relay a sender's messages back to it too (seed task 4's behaviour).
    echo_self: bool,
    /// Connections beyond this are told `* error: server full`.
    max_clients: usize,
    /// The next `guestN` number to try.
    next_guest: AtomicU64,
    next_id: AtomicU64,
    /// Joins and leaves not yet announced (large rooms only).
    presence: Mutex<Presence>,
    /// The server is shutting down: every member's task says goodbye.
    closing: AtomicBool,
    /// Members with coalesced output waiting for [`Room::wake_dirty`].
    dirty: Mutex<Vec<Arc<Member>>>,
}

#[derive(Default)]
struct Members {
    by_id: HashMap<u64, Arc<Member>>,
    /// Case-folded nick -> (member id, nick as the member spelled it).
    nicks: HashMap<String, (u64, Arc<str>)>,
}

impl Members {
    /// Queues `bytes` for every member but `skip` and wakes their tasks;
    /// in a large room, returns instead the members whose wake-up the
    /// next flush is to do.
    fn push_all(&self, skip: Option<u64>, bytes: &[u8]) -> Vec<Arc<Member>> {
        let coalesce = self.by_id.len() > LARGE_ROOM;
        let mut soon = Vec::new();
        for member in self.by_id.values() {
            if Some(member.id) == skip {
                continue;
            }
            match member.enqueue(bytes) {
                Wake::No => {}
                Wake::Soon if coalesce => soon.push(member.clone()),
                Wake::Soon | Wake::Now => member.waker.wake(),
            }
        }
        soon
    }
}

#[derive(Default)]
struct Presence {
    joined: u64,
    left: u64,
    cut_off: u64,
}

/// How a member left, for the room's notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// `/quit`, `bye`, a closed or broken connection.
    Left,
    /// Its outbox overflowed: it stopped reading.
    CutOff,
    /// The server is shutting down: nobody is told.
    Shutdown,
}

/// Why a nick could not be taken.
#[derive(Debug, PartialEq, Eq)]
pub enum NickError {
    Taken,
}

impl Room {
    pub fn new(echo_self: bool, max_clients: usize) -> Room {
        Room {
            members: RwLock::new(Members::default()),
            echo_self,
            max_clients,
            next_guest: AtomicU64::new(1),
            next_id: AtomicU64::new(1),
            presence: Mutex::new(Presence::default()),
            closing: AtomicBool::new(false),
            dirty: Mutex::new(Vec::new()),
        }
    }

    /// Tells every member's task that the server is shutting down.
    pub fn close_all(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let members = read(&self.members);
        for member in members.by_id.values() {
            member.waker.wake();
        }
    }

    /// True once [`Room::close_all`] was called.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Adds a member under a fresh `guestN` nick, queues its welcome and
    /// tells the room. `None` when the room is full.
    pub fn join(&self) -> Option<(Arc<Member>, Arc<str>)> {
        let member = Arc::new(Member::new(self.next_id.fetch_add(1, Ordering::Relaxed)));
        // The welcome and the notices are queued under the write lock, so
        // a newcomer's first line is its welcome and every count is exact.
        let mut members = write(&self.members);
        if members.by_id.len() >= self.max_clients {
            return None;
        }
        let nick = loop {
            let n = self.next_guest.fetch_add(1, Ordering::Relaxed);
            let nick = format!("guest{n}");
            if !members.nicks.contains_key(&nick) {
                break Arc::<str>::from(nick);
            }
        };
        members
            .nicks
            .insert(nick.to_string(), (member.id, nick.clone()));
        let online = members.by_id.len() + 1;
        member.push(
            &Notice::Welcome {
                nick: &nick,
                online,
            }
            .to_bytes(),
        );
        if online <= LARGE_ROOM {
            let notice = Notice::Joined {
                nick: &nick,
                online,
            };
            // A room this small writes at once: nothing is deferred.
            members.push_all(None, &notice.to_bytes());
        } else {
            lock(&self.presence).joined += 1;
        }
        members.by_id.insert(member.id, member.clone());
        Some((member, nick))
    }

    /// Removes a member and tells the room how it left.
    pub fn leave(&self, member: &Member, nick: &str, how: Leave) {
        member.close();
        let mut members = write(&self.members);
        if members.by_id.remove(&member.id).is_none() {
            return;
        }
        let key = nick_key(nick);
        if members
            .nicks
            .get(&key)
            .is_some_and(|(id, _)| *id == member.id)
        {
            members.nicks.remove(&key);
        }
        let online = members.by_id.len();
        if how == Leave::Shutdown {
            return;
        }
        // Announced one by one in a room that had up to LARGE_ROOM
        // members, under the lock like joins (so nothing is deferred).
        if online < LARGE_ROOM {
            let notice = match how {
                Leave::CutOff => Notice::CutOff { nick, online },
                _ => Notice::Left { nick, online },
            };
            members.push_all(None, &notice.to_bytes());
        } else {
            let mut presence = lock(&self.presence);
            match how {
                Leave::CutOff => presence.cut_off += 1,
                _ => presence.left += 1,
            }
        }
    }

    /// Appends `bytes` to every member's outbox, except `from`'s unless
    /// the room echoes senders' messages back.
    pub fn relay(&self, from: u64, bytes: &[u8]) {
        let skip = (!self.echo_self).then_some(from);
        self.broadcast(skip, bytes);
    }

    /// Appends `bytes` to every member's outbox but `skip`'s.
    ///
    /// In a room of more than [`LARGE_ROOM`] members, a member whose
    /// outbox was empty is not woken at once but put on the dirty list,
    /// which [`Room::wake_dirty`] empties every [`Room::flush_interval`]:
    /// what a busy room says in that interval then leaves in one write per
    /// member instead of one per message (the write, not the copy, is what
    /// costs). A member with [`FLUSH_NOW`] bytes waiting is woken at once.
    pub fn broadcast(&self, skip: Option<u64>, bytes: &[u8]) {
        let mut soon = read(&self.members).push_all(skip, bytes);
        if !soon.is_empty() {
            lock(&self.dirty).append(&mut soon);
        }
    }

    /// Wakes every member that had output coalesced since the last call.
    pub fn wake_dirty(&self) {
        let dirty = std::mem::take(&mut *lock(&self.dirty));
        for member in dirty {
            member.waker.wake();
        }
    }

    /// Renames member `id` from `old` to `new` and tells everyone. A change
    /// of case only is allowed; a nick another member holds is not.
    pub fn rename(&self, id: u64, old: &str, new: &str) -> Result<Arc<str>, NickError> {
        let new: Arc<str> = Arc::from(new);
        {
            let mut members = write(&self.members);
            let key = nick_key(&new);
            match members.nicks.get(&key) {
                Some((holder, _)) if *holder != id => return Err(NickError::Taken),
                _ => {}
            }
            let old_key = nick_key(old);
            if members
                .nicks
                .get(&old_key)
                .is_some_and(|(holder, _)| *holder == id)
            {
                members.nicks.remove(&old_key);
            }
            members.nicks.insert(key, (id, new.clone()));
        }
        if *old != *new {
            self.broadcast(
                None,
                &Notice::Renamed {
                    from: old,
                    to: &new,
                }
                .to_bytes(),
            );
        }
        Ok(new)
    }

    /// Appends `bytes` to the outbox of the member called `nick` (any
    /// case); returns that member's id and nick as spelled, if there is one.
    pub fn send_to(&self, nick: &str, bytes: impl FnOnce(&str) -> Vec<u8>) -> Option<u64> {
        let members = read(&self.members);
        let (id, spelled) = members.nicks.get(&nick_key(nick))?;
        let member = members.by_id.get(id)?;
        member.push(&bytes(spelled));
        Some(*id)
    }

    /// The `/who` answer: how many are online and their nicks, sorted.
    pub fn who(&self) -> Vec<u8> {
        let (mut nicks, online) = {
            let members = read(&self.members);
            let nicks: Vec<(String, Arc<str>)> = members
                .nicks
                .iter()
                .map(|(key, (_, nick))| (key.clone(), nick.clone()))
                .collect();
            (nicks, members.by_id.len())
        };
        nicks.sort_unstable();
        let names: Vec<String> = nicks
            .into_iter()
            .take(MAX_WHO)
            .map(|(_, nick)| nick.to_string())
            .collect();
        Notice::Who {
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
        let online = read(&self.members).by_id.len();
        Some(
            Notice::Presence {
                joined: presence.joined,
                left: presence.left,
                cut_off: presence.cut_off,
                online,
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

    /// Members online now.
    pub fn online(&self) -> usize {
        read(&self.members).by_id.len()
    }
}

/// One connected client as the room sees it: an id and an outbox.
pub struct Member {
    pub id: u64,
    outbox: Mutex<Outbox>,
    /// Wakes the member's task when its outbox stops being empty (or
    /// overflows, or the server shuts down).
    pub waker: AtomicWaker,
}

/// A member's queued output: the bytes themselves, so a burst of messages
/// leaves in one write.
#[derive(Default)]
struct Outbox {
    bytes: Vec<u8>,
    state: State,
}

#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Open,
    /// It stopped reading: the next take reports it and nothing more is
    /// queued.
    Overflowed,
    /// It has left: nothing more is queued.
    Closed,
}

/// When a member's task must be woken after output was queued for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// It already knows.
    No,
    /// Its outbox was empty: wake it, or let the flush do it.
    Soon,
    /// Overflowed or a lot is waiting: wake it now.
    Now,
}

/// What [`Member::queued`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    Nothing,
    Bytes,
    /// The outbox overflowed: the member must be disconnected, even in
    /// the middle of a write that will never finish.
    Overflowed,
}

/// The member's outbox overflowed: it must be disconnected.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflowed;

impl Member {
    fn new(id: u64) -> Member {
        Member {
            id,
            outbox: Mutex::new(Outbox::default()),
            waker: AtomicWaker::new(),
        }
    }

    /// Queues `bytes` and wakes the member's task, or marks the member
    /// overflowed if they do not fit.
    pub fn push(&self, bytes: &[u8]) {
        if self.enqueue(bytes) != Wake::No {
            self.waker.wake();
        }
    }

    /// Queues `bytes` (or marks the member overflowed) and says when its
    /// task needs waking; the caller does the waking.
    fn enqueue(&self, bytes: &[u8]) -> Wake {
        let mut outbox = lock(&self.outbox);
        if outbox.state != State::Open {
            return Wake::No;
        }
        let before = outbox.bytes.len();
        if before + bytes.len() > OUTBOX_LIMIT {
            outbox.state = State::Overflowed;
            outbox.bytes = Vec::new();
            return Wake::Now;
        }
        outbox.bytes.extend_from_slice(bytes);
        if before == 0 {
            Wake::Soon
        } else if before < FLUSH_NOW && before + bytes.len() >= FLUSH_NOW {
            Wake::Now
        } else {
            // Its task was woken (or is due to be) when the first bytes
            // came in.
            Wake::No
        }
    }

    /// What is waiting for the member's task.
    pub fn queued(&self) -> Queued {
        let outbox = lock(&self.outbox);
        if outbox.state == State::Overflowed {
            Queued::Overflowed
        } else if outbox.bytes.is_empty() {
            Queued::Nothing
        } else {
            Queued::Bytes
        }
    }

    /// Moves everything queued into `out` (which must be empty) by
    /// swapping buffers, so the queue keeps `out`'s allocation.
    pub fn take(&self, out: &mut Vec<u8>) -> Result<(), Overflowed> {
        debug_assert!(out.is_empty());
        let mut outbox = lock(&self.outbox);
        if outbox.state == State::Overflowed {
            return Err(Overflowed);
        }
        std::mem::swap(out, &mut outbox.bytes);
        Ok(())
    }

    /// Stops queueing for a member that left; what is queued stays to be
    /// written.
    fn close(&self) {
        let mut outbox = lock(&self.outbox);
        if outbox.state == State::Open {
            outbox.state = State::Closed;
        }
    }

    /// Queues `bytes` even after the member left (its last words: `* bye`,
    /// `* server shutting down`), within the same limit.
    pub fn push_final(&self, bytes: &[u8]) {
        let mut outbox = lock(&self.outbox);
        if outbox.state != State::Overflowed && outbox.bytes.len() + bytes.len() <= OUTBOX_LIMIT {
            outbox.bytes.extend_from_slice(bytes);
        }
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
mod tests {
    use super::*;

    fn drain(member: &Member) -> String {
        let mut out = Vec::new();
        member.take(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn messages_reach_everyone_but_the_sender() {
        let room = Room::new(false, 10);
        let (a, a_nick) = room.join().unwrap();
        let (b, _) = room.join().unwrap();
        assert_eq!(&*a_nick, "guest1");
        assert!(drain(&a).contains("guest2 joined (2 online)"));
        assert!(drain(&b).starts_with("* welcome to sockit chat, you are guest2 (2 online"));
        room.relay(a.id, b"[guest1] hi\n");
        assert_eq!(drain(&b), "[guest1] hi\n");
        assert_eq!(drain(&a), "");
    }

    #[test]
    fn nicks_are_unique_ignoring_case() {
        let room = Room::new(false, 10);
        let (a, _) = room.join().unwrap();
        let (b, _) = room.join().unwrap();
        assert!(room.rename(a.id, "guest1", "Alice").is_ok());
        assert_eq!(room.rename(b.id, "guest2", "aLiCe"), Err(NickError::Taken));
        assert_eq!(
            room.rename(b.id, "guest2", "guest1").map(|n| n.to_string()),
            Ok("guest1".into())
        );
        assert!(room.rename(a.id, "Alice", "alice").is_ok());
        assert!(
            String::from_utf8(room.who())
                .unwrap()
                .contains("2 online: alice, guest1")
        );
    }

    #[test]
    fn an_overflowing_member_is_reported_and_freed() {
        let room = Room::new(false, 10);
        let (a, _) = room.join().unwrap();
        let line = vec![b'x'; 1000];
        for _ in 0..OUTBOX_LIMIT / 1000 + 1 {
            a.push(&line);
        }
        let mut out = Vec::new();
        assert_eq!(a.take(&mut out), Err(Overflowed));
        assert_eq!(lock(&a.outbox).bytes.capacity(), 0);
    }

    #[test]
    fn a_full_room_refuses() {
        let room = Room::new(false, 1);
        assert!(room.join().is_some());
        assert!(room.join().is_none());
        assert_eq!(room.online(), 1);
    }
}
