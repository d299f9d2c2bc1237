//! The server's rooms and the names that are unique across all of them.
//!
//! Every connection starts in [`LOBBY`]; `/join #name` moves it to a room
//! made on first join and dropped when its last member leaves (the lobby
//! stays). A connection is a member of one room at a time, and each room
//! is what it was before rooms existed: its own log, window, flush and
//! history (see `super::room`), so a busy room costs the others nothing.
//!
//! Nicks are unique across the server, so `/msg` needs no room, and the
//! nick table says which room each holder is in.
//!
//! Moving is leaving one room (its output for the member stops at that
//! moment, and the member's task writes it out first) and entering the
//! other (its output for the member starts then): nothing is lost or
//! shown twice, and what the member reads stays in order.
//!
//! With `--redis` the hub is one server of several (see `super::link`):
//! what it knows of the others' members is `super::cluster`'s view, which
//! `/who`, `/rooms`, the counts in notices and `/msg` consult, and every
//! change here is handed to the link in order with the lines. A nick is
//! taken here at once and claimed in Redis after; the rare nick that
//! another server claimed first (both took it within the same few
//! milliseconds, or during an outage) is taken back ([`Hub::revoke`]),
//! as IRC servers settle a nick collision on a link.
//!
//! Locks: the room map, then a room's own or the remote view; the nick
//! table, then the guest numbers or the remote view. The remote view and
//! the guest numbers are never held while taking another.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use super::cluster::{Change, Event, Remote};
use super::link::{GUEST_BLOCK, Link, Op};
use super::protocol::{LOBBY, MAX_WHO, Notice, nick_key};
use super::room::{Leave, Member, Room, Told};

/// A connection's place: its room, and itself as that room's member.
#[derive(Clone)]
pub struct Seat {
    pub room: Arc<Room>,
    pub member: Arc<Member>,
}

/// Why a nick could not be taken.
#[derive(Debug, PartialEq, Eq)]
pub enum NickError {
    Taken,
}

/// Why `/join` did not move the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum JoinError {
    AlreadyIn,
    /// The server is shutting down.
    Closing,
}

/// What the hub's rooms are made with.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Relay a sender's messages back to it too.
    pub echo_self: bool,
    /// Connections beyond this are told `* error: server full`.
    pub max_clients: usize,
    /// Lines of history kept per room.
    pub history: usize,
    /// Lines of history sent to each member on entering a room.
    pub replay: usize,
}

/// Who holds a nick.
struct Holder {
    id: u64,
    nick: Arc<str>,
    room: Arc<Room>,
}

pub struct Hub {
    settings: Settings,
    lobby: Arc<Room>,
    /// By key (case-folded name); the lobby is one of them.
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    /// Case-folded nick -> its holder.
    nicks: Mutex<HashMap<String, Holder>>,
    online: AtomicUsize,
    /// The `guestN` numbers this server hands out.
    guests: Mutex<Guests>,
    next_id: AtomicU64,
    closing: AtomicBool,
    /// `--redis`: the other servers, set once at start.
    link: OnceLock<Link>,
    /// `--redis`: the other servers' members.
    remote: Mutex<Remote>,
    /// Nicks taken back (member id -> its nick now), for its task to pick up.
    forced: Mutex<HashMap<u64, Arc<str>>>,
}

/// Guest numbers: alone, every number from 1; with `--redis`, blocks of
/// [`GUEST_BLOCK`] that no other server hands out (taken from a counter
/// in Redis, the next one asked for when half of this one is used).
struct Guests {
    next: u64,
    end: u64,
    spare: Option<(u64, u64)>,
    asked: bool,
}

impl Guests {
    /// The next number, and whether to ask for another block now. Past
    /// the end with no block to go on (Redis is away) numbering goes on,
    /// and a collision is settled like any other ([`Hub::revoke`]).
    fn take(&mut self) -> (u64, bool) {
        if self.next > self.end
            && let Some((start, end)) = self.spare.take()
        {
            (self.next, self.end) = (start, end);
            self.asked = false;
        }
        let n = self.next;
        self.next += 1;
        let ask = self.end != u64::MAX
            && self.spare.is_none()
            && !self.asked
            && self.next.saturating_add(GUEST_BLOCK / 2) > self.end;
        self.asked |= ask;
        (n, ask)
    }
}

impl Hub {
    pub fn new(settings: Settings) -> Hub {
        let lobby = Arc::new(Room::new(LOBBY, settings.echo_self, settings.history));
        let rooms = HashMap::from([(lobby.key().to_string(), lobby.clone())]);
        Hub {
            settings,
            lobby,
            rooms: Mutex::new(rooms),
            nicks: Mutex::new(HashMap::new()),
            online: AtomicUsize::new(0),
            guests: Mutex::new(Guests {
                next: 1,
                end: u64::MAX,
                spare: None,
                asked: false,
            }),
            next_id: AtomicU64::new(1),
            closing: AtomicBool::new(false),
            link: OnceLock::new(),
            remote: Mutex::new(Remote::default()),
            forced: Mutex::new(HashMap::new()),
        }
    }

    /// A new connection: a fresh `guestN` nick, a seat in the lobby, its
    /// welcome. `None` when the server is full.
    pub fn connect(&self) -> Option<(Seat, Arc<str>)> {
        if self.online.fetch_add(1, Ordering::AcqRel) >= self.settings.max_clients {
            self.online.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let room = self.lobby.clone();
        let nick = {
            let mut nicks = lock(&self.nicks);
            let nick = self.free_guest(&nicks);
            let holder = Holder {
                id,
                nick: nick.clone(),
                room: room.clone(),
            };
            nicks.insert(nick.to_string(), holder);
            nick
        };
        self.claim_new(id, &nick, &room);
        let replay = self.settings.replay;
        let member = room.enter(id, &nick, |online| {
            let mut greeting = Notice::Welcome {
                nick: &nick,
                online,
            }
            .to_bytes();
            if replay > 0 {
                greeting.extend(room.replay(replay));
            }
            greeting
        });
        Some((Seat { room, member }, nick))
    }

    /// A `guestN` nick nobody here or elsewhere holds (as far as this
    /// server knows: see [`Hub::revoke`]).
    fn free_guest(&self, nicks: &HashMap<String, Holder>) -> Arc<str> {
        loop {
            let (n, ask) = lock(&self.guests).take();
            if ask {
                self.tell_link(|| Op::Guests);
            }
            let nick = format!("guest{n}");
            if !nicks.contains_key(&nick) && lock(&self.remote).holder(&nick).is_none() {
                return Arc::from(nick);
            }
        }
    }

    /// `--redis`: a block of guest numbers (the first replaces the
    /// numbering alone; later ones are kept for when this one runs out).
    pub fn add_guests(&self, start: u64, end: u64) {
        let mut guests = lock(&self.guests);
        if guests.end == u64::MAX {
            (guests.next, guests.end) = (start, end);
        } else {
            guests.spare = Some((start, end));
        }
    }

    /// Hands `op` to the other servers, with `--redis`.
    fn tell_link(&self, op: impl FnOnce() -> Op) {
        if let Some(link) = self.link.get() {
            link.send(op());
        }
    }

    /// A connection is gone: it leaves its room as `how` says (`last`, if
    /// any, is its own last line) and its nick is free.
    pub fn disconnect(&self, seat: &Seat, nick: &Arc<str>, how: Leave, last: Option<&[u8]>) {
        // A server shutting down says so once for all its members.
        if how != Leave::Shutdown {
            let cut = how == Leave::CutOff;
            self.tell_link(|| Op::Left {
                nick: nick.clone(),
                cut,
            });
        }
        seat.room.leave(&seat.member, nick, how, last);
        {
            let mut nicks = lock(&self.nicks);
            let key = nick_key(nick);
            if nicks.get(&key).is_some_and(|h| h.id == seat.member.id) {
                nicks.remove(&key);
            }
        }
        self.online.fetch_sub(1, Ordering::AcqRel);
        self.prune(&seat.room);
    }

    /// Moves the connection in `seat` to the room called `name` (`#`
    /// included, valid), made if there is none: returns its new seat. The
    /// old seat's output stops where it is now; the caller writes it out
    /// before the new one's.
    pub fn move_to(&self, seat: &Seat, nick: &Arc<str>, name: &str) -> Result<Seat, JoinError> {
        let key = nick_key(name);
        if key == seat.room.key() {
            return Err(JoinError::AlreadyIn);
        }
        let id = seat.member.id;
        let replay = self.settings.replay;
        let (room, member) = {
            let mut rooms = lock(&self.rooms);
            // Checked under the map's lock: `close_all` closes every room
            // in it, so no room is made after that.
            if self.is_closing() {
                return Err(JoinError::Closing);
            }
            let room = rooms
                .entry(key.clone())
                .or_insert_with(|| {
                    let room = Room::new(name, self.settings.echo_self, self.settings.history);
                    room.set_remote(lock(&self.remote).count(&key));
                    Arc::new(room)
                })
                .clone();
            // Entered under the map's lock, so `prune` cannot drop the
            // room between the look-up and the entry.
            let member = room.enter(id, nick, |online| {
                let mut greeting = Notice::InRoom {
                    room: room.name(),
                    online,
                }
                .to_bytes();
                if replay > 0 {
                    greeting.extend(room.replay(replay));
                }
                greeting
            });
            (room, member)
        };
        if let Some(holder) = lock(&self.nicks).get_mut(&nick_key(nick))
            && holder.id == id
        {
            holder.room = room.clone();
        }
        self.tell_link(|| Op::Moved {
            nick: nick.clone(),
            to: room.name().clone(),
        });
        seat.room
            .leave(&seat.member, nick, Leave::Moved(room.name().clone()), None);
        self.prune(&seat.room);
        Ok(Seat { room, member })
    }

    /// Drops `room` if it is empty (and not the lobby).
    fn prune(&self, room: &Arc<Room>) {
        if Arc::ptr_eq(room, &self.lobby) || room.online() > 0 {
            return;
        }
        let mut rooms = lock(&self.rooms);
        // Members enter under this lock: an empty room stays empty here.
        if room.online() == 0 && rooms.get(room.key()).is_some_and(|r| Arc::ptr_eq(r, room)) {
            rooms.remove(room.key());
        }
    }

    /// Renames the connection in `seat` from `old` to `new` and tells its
    /// room. A change of case only is allowed; a nick another connection
    /// holds is not.
    pub fn rename(&self, seat: &Seat, old: &str, new: &str) -> Result<Arc<str>, NickError> {
        let new: Arc<str> = Arc::from(new);
        let id = seat.member.id;
        {
            let mut nicks = lock(&self.nicks);
            let key = nick_key(&new);
            if nicks.get(&key).is_some_and(|h| h.id != id)
                || lock(&self.remote).holder(&new).is_some()
            {
                return Err(NickError::Taken);
            }
            let old_key = nick_key(old);
            if nicks.get(&old_key).is_some_and(|h| h.id == id) {
                nicks.remove(&old_key);
            }
            let holder = Holder {
                id,
                nick: new.clone(),
                room: seat.room.clone(),
            };
            nicks.insert(key, holder);
        }
        if *old != *new {
            self.tell_link(|| Op::Claim {
                id,
                nick: new.clone(),
                room: seat.room.name().clone(),
                old: Some(Arc::from(old)),
                quiet: false,
            });
        }
        seat.room.renamed(id, old, &new);
        Ok(new)
    }

    /// `--redis`: member `id`'s claim of `nick` lost to another server's.
    /// It gets back the nick it had (`old`, still its own in Redis) or,
    /// if it had none or that is gone, a fresh guest nick; it and its
    /// room are told. If it has moved on to another nick meanwhile, only
    /// the one it had is let go.
    pub fn revoke(&self, id: u64, nick: &Arc<str>, old: Option<Arc<str>>) {
        let key = nick_key(nick);
        let mut nicks = lock(&self.nicks);
        let Some(holder) = nicks.get(&key).filter(|h| h.id == id) else {
            if let Some(old) = old
                && nicks.get(&nick_key(&old)).is_none_or(|h| h.id != id)
            {
                self.tell_link(|| Op::Forget { nick: old });
            }
            return;
        };
        let room = holder.room.clone();
        let back = old.filter(|old| !nicks.contains_key(&nick_key(old)));
        let (now, fresh) = match back {
            Some(old) => (old, false),
            None => (self.free_guest(&nicks), true),
        };
        nicks.remove(&key);
        nicks.insert(
            nick_key(&now),
            Holder {
                id,
                nick: now.clone(),
                room: room.clone(),
            },
        );
        drop(nicks);
        lock(&self.forced).insert(id, now.clone());
        room.renamed(id, nick, &now);
        room.tell_id(id, &Notice::NickLost { nick, now: &now }.to_bytes());
        room.force(id);
        if fresh {
            self.claim_new(id, &now, &room);
        }
    }

    /// `--redis`: member `id`, new here as `nick` in `room`, claims it.
    fn claim_new(&self, id: u64, nick: &Arc<str>, room: &Room) {
        self.tell_link(|| Op::Claim {
            id,
            nick: nick.clone(),
            room: room.name().clone(),
            old: None,
            quiet: false,
        });
    }

    /// The nick member `id` was given by [`Hub::revoke`], once.
    pub fn take_forced(&self, id: u64) -> Option<Arc<str>> {
        lock(&self.forced).remove(&id)
    }

    /// Every nick held here: member id, nick, room name.
    pub fn holders(&self) -> Vec<(u64, Arc<str>, Arc<str>)> {
        lock(&self.nicks)
            .values()
            .map(|h| (h.id, h.nick.clone(), h.room.name().clone()))
            .collect()
    }

    /// An event from the server `origin`: the view follows it, and the
    /// local members of the rooms concerned are told.
    pub fn remote(&self, origin: &str, event: Event) {
        if let Event::Private { to, line } = &event {
            let found = lock(&self.nicks)
                .get(&nick_key(to))
                .map(|h| (h.id, h.room.clone()));
            if let Some((id, room)) = found {
                room.tell_id(id, line);
            }
            return;
        }
        let quiet = matches!(event, Event::Joined { quiet: true, .. } | Event::Reset);
        let changes = {
            let mut remote = lock(&self.remote);
            let changes = remote.apply(origin, &event);
            counted(&remote, changes)
        };
        self.announce(changes, quiet);
    }

    /// Forgets the servers not in `live` (and says so where their
    /// members were).
    pub fn keep_servers(&self, live: &[String]) {
        let changes = {
            let mut remote = lock(&self.remote);
            let changes = remote.keep_only(live);
            counted(&remote, changes)
        };
        self.announce(changes, false);
    }

    /// Replaces the view of the other servers (read afresh from Redis).
    pub fn replace_remote(&self, servers: Vec<(String, Vec<(String, String)>)>) {
        // The room map before the view: `move_to` takes them in that order.
        let rooms = self.all_rooms();
        let mut remote = lock(&self.remote);
        remote.replace(servers);
        for room in rooms {
            room.set_remote(remote.count(room.key()));
        }
    }

    /// Tells each local room concerned what changed elsewhere (`quiet`:
    /// only the counts change).
    fn announce(&self, changes: Vec<(usize, Change)>, quiet: bool) {
        for (count, change) in changes {
            let Some(room) = lock(&self.rooms).get(change.room()).cloned() else {
                continue;
            };
            room.set_remote(count);
            if quiet {
                continue;
            }
            match change {
                Change::Joined { nick, .. } => {
                    room.announce(Told::Joined, |online| {
                        Notice::Joined {
                            nick: &nick,
                            online,
                        }
                        .to_bytes()
                    });
                }
                Change::Left {
                    nick, cut: true, ..
                } => {
                    room.announce(Told::CutOff, |_| Notice::CutOff { nick: &nick }.to_bytes());
                }
                Change::Left { nick, .. } => room.announce(Told::Left, |online| {
                    Notice::Left {
                        nick: &nick,
                        online,
                    }
                    .to_bytes()
                }),
                Change::Moved { to, nick, .. } => room.announce(Told::Left, |online| {
                    Notice::Moved {
                        nick: &nick,
                        room: &to,
                        online,
                    }
                    .to_bytes()
                }),
                Change::Renamed { old, new, .. } => {
                    room.broadcast(
                        &Notice::Renamed {
                            from: &old,
                            to: &new,
                        }
                        .to_bytes(),
                    );
                }
                Change::Gone { count, .. } => {
                    let online = room.online_total();
                    room.broadcast(&Notice::ServerGone { count, online }.to_bytes());
                }
            }
        }
    }

    /// Says `bytes` in every room.
    pub fn broadcast_all(&self, bytes: &[u8]) {
        for room in self.all_rooms() {
            room.broadcast(bytes);
        }
    }

    /// The `/who` answer for the room in `seat`, every server's members.
    pub fn who(&self, seat: &Seat) -> Vec<u8> {
        let remote = lock(&self.remote).nicks(seat.room.key());
        seat.room.who(&remote)
    }

    /// Sends the line `bytes` makes (given the receiver's nick as spelled)
    /// to the connection called `nick` (any case), in whichever room, and,
    /// unless that is the sender itself, a copy to the sender. The copy
    /// lands after everything the sender relayed before. Returns whether
    /// there was such a connection.
    pub fn send_to(&self, from: &Seat, nick: &str, bytes: impl FnOnce(&str) -> Vec<u8>) -> bool {
        let (id, spelled, room) = {
            let nicks = lock(&self.nicks);
            match nicks.get(&nick_key(nick)) {
                Some(holder) => (holder.id, holder.nick.clone(), holder.room.clone()),
                None => match lock(&self.remote).holder(nick) {
                    // Member ids start at 1: 0 marks another server's.
                    Some((_, spelled)) => (0, spelled, from.room.clone()),
                    None => return false,
                },
            }
        };
        let line = bytes(&spelled);
        if id == 0 {
            // Held on another server.
            from.room.tell(&from.member, &line);
            self.tell_link(|| Op::Private { to: spelled, line });
            return true;
        }
        if !room.tell_id(id, &line) {
            // It moved or left between the look-up and now.
            return false;
        }
        if id != from.member.id {
            from.room.tell(&from.member, &line);
        }
        true
    }

    /// The `/rooms` answer: every room with its member count, by name.
    pub fn rooms(&self) -> Vec<u8> {
        let mut by_key: BTreeMap<String, (String, usize)> = self
            .all_rooms()
            .iter()
            .map(|room| {
                let entry = (room.name().to_string(), room.online());
                (room.key().to_string(), entry)
            })
            .collect();
        for (key, name, count) in lock(&self.remote).rooms() {
            by_key.entry(key).or_insert_with(|| (name.to_string(), 0)).1 += count;
        }
        let mut rooms: Vec<(String, usize)> = by_key.into_values().collect();
        let total = rooms.len();
        rooms.truncate(MAX_WHO);
        Notice::Rooms {
            rooms: &rooms,
            total,
        }
        .to_bytes()
    }

    /// Every room now.
    pub fn all_rooms(&self) -> Vec<Arc<Room>> {
        lock(&self.rooms).values().cloned().collect()
    }

    /// Links the hub to the other servers (once).
    pub fn set_link(&self, link: Link) {
        let _ = self.link.set(link);
    }
}

/// Each change with its room's count on the other servers after it.
fn counted(remote: &Remote, changes: Vec<Change>) -> Vec<(usize, Change)> {
    changes
        .into_iter()
        .map(|change| (remote.count(change.room()), change))
        .collect()
}

impl Hub {
    /// Relays a sender's lines in its room, here and, with `--redis`, on
    /// every other server.
    pub fn relay(&self, seat: &Seat, bytes: &[u8]) {
        seat.room.relay(seat.member.id, bytes);
        if let Some(link) = self.link.get() {
            link.publish(seat.room.key(), bytes);
        }
    }

    /// Tells every member of every room that the server is shutting down
    /// and wakes their tasks to say goodbye.
    pub fn close_all(&self) {
        let rooms = {
            let rooms = lock(&self.rooms);
            self.closing.store(true, Ordering::SeqCst);
            rooms.values().cloned().collect::<Vec<_>>()
        };
        for room in rooms {
            room.close_all();
        }
    }

    /// True once [`Hub::close_all`] was called.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }
}

// A panic while holding one of these locks leaves plain data behind (maps
// of names), never a broken invariant, so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::room::LARGE_ROOM;
    use crate::chat::room::tests::drain;

    fn hub(max_clients: usize) -> Hub {
        Hub::new(Settings {
            echo_self: false,
            max_clients,
            history: 100,
            replay: 0,
        })
    }

    /// Everything waiting for `seat`.
    fn out(seat: &Seat) -> String {
        drain(&seat.room, &seat.member)
    }

    #[test]
    fn nicks_are_unique_ignoring_case_across_rooms() {
        let hub = hub(10);
        let (a, a_nick) = hub.connect().unwrap();
        let (b, b_nick) = hub.connect().unwrap();
        let b = hub.move_to(&b, &b_nick, "#elsewhere").unwrap();
        let a_nick = hub.rename(&a, &a_nick, "Alice").unwrap();
        assert_eq!(hub.rename(&b, &b_nick, "aLiCe"), Err(NickError::Taken));
        assert_eq!(&*hub.rename(&b, &b_nick, "guest1").unwrap(), "guest1");
        assert!(hub.rename(&a, &a_nick, "alice").is_ok());
        assert!(
            String::from_utf8(hub.who(&a))
                .unwrap()
                .contains("1 online in #lobby: alice")
        );
    }

    #[test]
    fn a_full_server_refuses() {
        let hub = hub(1);
        assert!(hub.connect().is_some());
        assert!(hub.connect().is_none());
        assert_eq!(hub.online.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_private_line_keeps_its_place_after_the_senders_messages() {
        let hub = hub(1000);
        let mut seats: Vec<Seat> = (0..LARGE_ROOM + 1)
            .map(|_| hub.connect().unwrap().0)
            .collect();
        for seat in &seats {
            out(seat);
        }
        let (a, b) = (seats.remove(0), seats.remove(0));
        let room = &a.room;
        // A large room leaves relays unsealed until the flush...
        room.relay(a.member.id, b"one\n");
        assert_eq!(out(&b), "");
        // ...but a private line seals them first.
        assert!(hub.send_to(&a, "guest2", |_| b"private\n".to_vec()));
        room.relay(a.member.id, b"two\n");
        room.flush(0);
        assert_eq!(out(&b), "one\nprivate\ntwo\n");
        // The sender gets its copy; the others, nothing.
        assert_eq!(out(&a), "private\n");
        assert_eq!(out(&seats[0]), "one\ntwo\n");
    }

    #[test]
    fn moving_ends_one_room_and_starts_the_other() {
        let hub = hub(10);
        let (a, a_nick) = hub.connect().unwrap();
        let (b, b_nick) = hub.connect().unwrap();
        let (c, c_nick) = hub.connect().unwrap();
        let c = hub.move_to(&c, &c_nick, "#Rust").unwrap();
        out(&a);
        out(&b);
        assert_eq!(
            out(&c),
            "* you are in #Rust now (1 online; /who lists them)\n"
        );
        // Said in the lobby before b moves: b still gets it, from there.
        a.room.relay(a.member.id, b"[guest1] before\n");
        let moved = hub.move_to(&b, &b_nick, "#rust").unwrap();
        assert!(
            Arc::ptr_eq(&moved.room, &c.room),
            "names are case-insensitive"
        );
        a.room.relay(a.member.id, b"[guest1] after\n");
        c.room.relay(c.member.id, b"[guest3] in rust\n");
        assert_eq!(out(&b), "[guest1] before\n");
        assert_eq!(
            out(&moved),
            "* you are in #Rust now (2 online; /who lists them)\n[guest3] in rust\n"
        );
        assert_eq!(out(&a), format!("* {b_nick} went to #Rust (1 online)\n"));
        assert_eq!(out(&c), format!("* {b_nick} joined (2 online)\n"));
        // /msg crosses rooms.
        assert!(hub.send_to(&a, &c_nick, |to| {
            format!("[{a_nick} -> {to}] hi\n").into_bytes()
        }));
        assert_eq!(out(&c), format!("[{a_nick} -> {c_nick}] hi\n"));
        assert_eq!(out(&a), format!("[{a_nick} -> {c_nick}] hi\n"));
        assert!(matches!(
            hub.move_to(&c, &c_nick, "#RUST"),
            Err(JoinError::AlreadyIn)
        ));
        let rooms = String::from_utf8(hub.rooms()).unwrap();
        assert_eq!(rooms, "* 2 rooms: #lobby (1), #Rust (2)\n");
    }

    #[test]
    fn an_empty_room_is_dropped_but_not_the_lobby() {
        let hub = hub(10);
        let (a, a_nick) = hub.connect().unwrap();
        let a = hub.move_to(&a, &a_nick, "#tmp").unwrap();
        assert_eq!(hub.all_rooms().len(), 2);
        let a = hub.move_to(&a, &a_nick, "#lobby").unwrap();
        assert_eq!(
            String::from_utf8(hub.rooms()).unwrap(),
            "* 1 room: #lobby (1)\n"
        );
        hub.disconnect(&a, &a_nick, Leave::Left, None);
        assert_eq!(
            String::from_utf8(hub.rooms()).unwrap(),
            "* 1 room: #lobby (0)\n"
        );
        // Its nick is free again.
        let (b, b_nick) = hub.connect().unwrap();
        assert!(hub.rename(&b, &b_nick, &a_nick).is_ok());
    }

    #[test]
    fn replay_greets_a_newcomer_with_the_rooms_last_lines() {
        let hub = Hub::new(Settings {
            echo_self: false,
            max_clients: 10,
            history: 100,
            replay: 2,
        });
        let (a, _) = hub.connect().unwrap();
        assert!(out(&a).starts_with("* welcome"), "nothing to replay yet");
        for line in ["one", "two", "three"] {
            a.room
                .relay(a.member.id, format!("[guest1] {line}\n").as_bytes());
        }
        let (b, _) = hub.connect().unwrap();
        let text = out(&b);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("* welcome to sockit chat, you are guest2"));
        assert_eq!(lines[1], "* history of #lobby: 2 lines");
        assert!(lines[2].ends_with("] [guest1] two"), "{text}");
        assert!(lines[3].ends_with("] [guest1] three"), "{text}");
        assert_eq!(lines[4], "* end of history");
    }
}
