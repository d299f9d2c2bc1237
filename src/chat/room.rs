//! The room: who is connected, under which nick, and each member's
//! outbound queue.
//!
//! # Fan-out and the slow-client policy
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
//! A member may fall at most [`OUTBOX_LIMIT`] bytes behind the log (beyond
//! what the kernel's socket buffers already hold). A member further behind
//! has stopped reading (or reads far slower than the room talks): its own
//! task, which checks this whenever it is woken, disconnects it, lets go of
//! the log and tells the room. Nobody ever waits for a slow member, and a
//! slow member holds at most that much of the log.
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

use super::log::{Log, Outbox, Wrote};
use super::protocol::{MAX_WHO, Notice, nick_key};

/// Bytes a member may fall behind before it is cut off.
pub const OUTBOX_LIMIT: usize = 1024 * 1024;

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

/// The chat room shared by every connection.
pub struct Room {
    members: RwLock<Members>,
    /// Members online (kept beside the table, so relays need no lock on it).
    online: AtomicUsize,
    log: Mutex<Log>,
    /// The log's sealed end, for readers that do not take its lock.
    end: AtomicU64,
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
}

#[derive(Default)]
struct Members {
    /// By flush slot, then id.
    by_slot: [HashMap<u64, Arc<Member>>; FLUSH_SLOTS],
    /// Case-folded nick -> (member id, nick as the member spelled it).
    nicks: HashMap<String, (u64, Arc<str>)>,
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

/// How a member left, for the room's notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// `/quit`, `bye`, a closed or broken connection.
    Left,
    /// It fell too far behind: it stopped reading.
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
            online: AtomicUsize::new(0),
            log: Mutex::new(Log::default()),
            end: AtomicU64::new(0),
            echo_self,
            max_clients,
            next_guest: AtomicU64::new(1),
            next_id: AtomicU64::new(1),
            presence: Mutex::new(Presence::default()),
            closing: AtomicBool::new(false),
        }
    }

    /// Tells every member's task that the server is shutting down.
    pub fn close_all(&self) {
        self.closing.store(true, Ordering::SeqCst);
        read(&self.members).wake_all(0);
    }

    /// True once [`Room::close_all`] was called.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// The log's sealed end.
    fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Seals what `log` (the room's, locked) holds open and publishes the
    /// new end; returns it.
    fn seal(&self, log: &mut Log) -> u64 {
        let end = log.seal();
        self.end.store(end, Ordering::Release);
        end
    }

    fn is_large(&self) -> bool {
        self.online.load(Ordering::Relaxed) > LARGE_ROOM
    }

    /// Adds a member under a fresh `guestN` nick, queues its welcome and
    /// tells the room. `None` when the room is full.
    pub fn join(&self) -> Option<(Arc<Member>, Arc<str>)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // The welcome and the notice are queued under the table's lock, so
        // a newcomer's first line is its welcome and every count is exact.
        let mut members = write(&self.members);
        let online = members.len() + 1;
        if online > self.max_clients {
            return None;
        }
        let nick = loop {
            let n = self.next_guest.fetch_add(1, Ordering::Relaxed);
            let nick = format!("guest{n}");
            if !members.nicks.contains_key(&nick) {
                break Arc::<str>::from(nick);
            }
        };
        members.nicks.insert(nick.to_string(), (id, nick.clone()));
        let member = {
            let mut log = lock(&self.log);
            let mut outbox = log.outbox(id);
            outbox.push_private(
                log.end(),
                Notice::Welcome {
                    nick: &nick,
                    online,
                }
                .to_bytes(),
            );
            if online <= LARGE_ROOM {
                // Everyone but the newcomer hears of it at once.
                log.append(
                    id,
                    &Notice::Joined {
                        nick: &nick,
                        online,
                    }
                    .to_bytes(),
                );
                self.seal(&mut log);
            } else {
                lock(&self.presence).joined += 1;
            }
            Arc::new(Member::new(id, outbox))
        };
        if online <= LARGE_ROOM {
            members.wake_all(id);
        }
        members.by_slot[slot(id)].insert(id, member.clone());
        self.online.store(online, Ordering::Relaxed);
        Some((member, nick))
    }

    /// Removes a member and tells the room how it left. The member's
    /// writer stops at what the log held when it left.
    pub fn leave(&self, member: &Member, nick: &str, how: Leave) {
        member.outbox().stop_at(self.end());
        let mut members = write(&self.members);
        if members.by_slot[slot(member.id)]
            .remove(&member.id)
            .is_none()
        {
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
        let online = members.len();
        self.online.store(online, Ordering::Relaxed);
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
            let mut log = lock(&self.log);
            log.append(0, &notice.to_bytes());
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

    /// Appends `bytes` for every member, but not for `from` unless the
    /// room echoes senders' messages back.
    pub fn relay(&self, from: u64, bytes: &[u8]) {
        let skip = if self.echo_self { 0 } else { from };
        self.publish(skip, bytes);
    }

    /// Appends `bytes` for every member but `skip` (0: for everyone).
    ///
    /// A small room seals it and wakes every member at once. A room of
    /// more than [`LARGE_ROOM`] members leaves it for the next
    /// [`Room::flush`]: what a busy room says in a flush interval then
    /// leaves in one write per member instead of one per message (the
    /// write, not the copy, is what costs). [`FLUSH_NOW`] unsealed bytes
    /// are sent at once.
    pub fn broadcast(&self, skip: Option<u64>, bytes: &[u8]) {
        self.publish(skip.unwrap_or(0), bytes);
    }

    fn publish(&self, skip: u64, bytes: &[u8]) {
        let large = self.is_large();
        {
            let mut log = lock(&self.log);
            log.append(skip, bytes);
            if large && log.open_len() < FLUSH_NOW {
                return;
            }
            self.seal(&mut log);
        }
        read(&self.members).wake_all(skip);
    }

    /// A flush tick of a large room: seals what was appended and wakes
    /// the members of flush slot `slot` that have not written up to it.
    pub fn flush(&self, slot: usize) {
        let end = self.seal(&mut lock(&self.log));
        let members = read(&self.members);
        let Some(group) = members.by_slot.get(slot) else {
            return;
        };
        for member in group.values() {
            if member.written.load(Ordering::Relaxed) < end {
                member.waker.wake();
            }
        }
    }

    /// Queues `bytes` for `member` alone and wakes its task.
    pub fn tell(&self, member: &Member, bytes: Vec<u8>) {
        self.queue_private(member, self.end(), bytes);
    }

    /// Queues a private line for `member` after the log up to `at`, or
    /// cuts the member off if that puts it too far behind.
    fn queue_private(&self, member: &Member, at: u64, bytes: Vec<u8>) {
        {
            let mut outbox = member.outbox();
            if outbox.lag(self.end()).saturating_add(bytes.len()) > OUTBOX_LIMIT {
                outbox.cut_off();
            } else {
                outbox.push_private(at, bytes);
            }
        }
        member.waker.wake();
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

    /// Queues `bytes` for the member called `nick` (any case), after
    /// everything the sender relayed before; returns that member's id and
    /// nick as spelled, if there is one.
    pub fn send_to(&self, nick: &str, bytes: impl FnOnce(&str) -> Vec<u8>) -> Option<u64> {
        let members = read(&self.members);
        let (id, spelled) = members.nicks.get(&nick_key(nick))?;
        let member = members.get(*id)?;
        // Seal first: the sender's earlier messages may still be unsealed,
        // and the private line must not overtake them.
        let at = self.seal(&mut lock(&self.log));
        self.queue_private(member, at, bytes(spelled));
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
            (nicks, members.len())
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
        Some(
            Notice::Presence {
                joined: presence.joined,
                left: presence.left,
                cut_off: presence.cut_off,
                online: self.online(),
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
        self.online.load(Ordering::Relaxed)
    }

    /// What is waiting for `member`'s task.
    pub fn queued(&self, member: &Member) -> Queued {
        let end = self.end();
        let outbox = member.outbox();
        if outbox.lag(end) > OUTBOX_LIMIT {
            Queued::Overflowed
        } else if outbox.has_pending(end) {
            Queued::Bytes
        } else {
            Queued::Nothing
        }
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
        let mut outbox = member.outbox();
        if outbox.lag(end) > OUTBOX_LIMIT {
            outbox.cut_off();
            return Ok(Flow::CutOff);
        }
        let wrote = outbox.write(end, rounds, write);
        member.written.store(outbox.position(), Ordering::Relaxed);
        Ok(match wrote? {
            Some(Wrote::All) => Flow::Idle,
            Some(Wrote::Blocked) => Flow::Blocked,
            None => Flow::Busy,
        })
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
    /// The member fell too far behind.
    CutOff,
}

/// One connected client as the room sees it: an id and its outbox.
pub struct Member {
    pub id: u64,
    outbox: Mutex<Outbox>,
    /// How far it has written the log (for the flush's wake-ups).
    written: AtomicU64,
    /// Wakes the member's task when there is output for it (or it fell
    /// too far behind, or the server shuts down).
    pub waker: AtomicWaker,
}

/// What [`Room::queued`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    Nothing,
    Bytes,
    /// The member fell too far behind: it must be disconnected, even in
    /// the middle of a write that will never finish.
    Overflowed,
}

impl Member {
    fn new(id: u64, outbox: Outbox) -> Member {
        Member {
            id,
            written: AtomicU64::new(outbox.position()),
            outbox: Mutex::new(outbox),
            waker: AtomicWaker::new(),
        }
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        lock(&self.outbox)
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

    /// Everything waiting for `member`, as if its socket took it all.
    fn drain(room: &Room, member: &Member) -> String {
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
        assert_ne!(flow, Flow::CutOff);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn messages_reach_everyone_but_the_sender() {
        let room = Room::new(false, 10);
        let (a, a_nick) = room.join().unwrap();
        let (b, _) = room.join().unwrap();
        assert_eq!(&*a_nick, "guest1");
        assert!(drain(&room, &a).contains("guest2 joined (2 online)"));
        assert!(drain(&room, &b).starts_with("* welcome to sockit chat, you are guest2 (2 online"));
        room.relay(a.id, b"[guest1] hi\n");
        assert_eq!(drain(&room, &b), "[guest1] hi\n");
        assert_eq!(drain(&room, &a), "");
        assert_eq!(room.queued(&a), Queued::Nothing);
    }

    #[test]
    fn a_private_line_keeps_its_place_after_the_senders_messages() {
        let room = Room::new(false, 1000);
        let mut members: Vec<_> = (0..LARGE_ROOM + 1)
            .map(|_| room.join().unwrap().0)
            .collect();
        let (a, b) = (members.remove(0), members.remove(0));
        drain(&room, &a);
        drain(&room, &b);
        // A large room leaves relays unsealed until the flush...
        room.relay(a.id, b"one\n");
        assert_eq!(drain(&room, &b), "");
        // ...but a private line seals them first.
        room.send_to("guest2", |_| b"private\n".to_vec());
        room.relay(a.id, b"two\n");
        room.flush(0);
        assert_eq!(drain(&room, &b), "one\nprivate\ntwo\n");
        assert_eq!(drain(&room, &a), "");
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let room = Room::new(false, 10);
        let (a, _) = room.join().unwrap();
        let (b, _) = room.join().unwrap();
        drain(&room, &b);
        room.relay(a.id, b"first\n");
        room.relay(b.id, b"own\n");
        room.relay(a.id, b"second\n");
        room.tell(&b, b"note\n".to_vec());
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
    fn a_member_too_far_behind_is_cut_off_and_lets_go_of_the_log() {
        let room = Room::new(false, 10);
        let (a, _) = room.join().unwrap();
        let (b, _) = room.join().unwrap();
        let line = vec![b'x'; 1000];
        for _ in 0..OUTBOX_LIMIT / 1000 + 1 {
            room.relay(a.id, &line);
        }
        assert_eq!(room.queued(&b), Queued::Overflowed);
        assert_eq!(room.write_out(&b, 1, |_| Ok(0)).unwrap(), Flow::CutOff);
        // It holds no segment any more, and stays cut off.
        assert!(b.outbox().position() > room.end());
        assert_eq!(room.queued(&b), Queued::Overflowed);
    }

    #[test]
    fn a_full_room_refuses() {
        let room = Room::new(false, 1);
        assert!(room.join().is_some());
        assert!(room.join().is_none());
        assert_eq!(room.online(), 1);
    }
}
