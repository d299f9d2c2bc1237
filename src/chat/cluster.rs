//! `--redis`: what this server knows of the members of the other servers,
//! without any I/O (`super::link` feeds it, `super::hub` asks it).
//!
//! Every server keeps its own members in Redis (a hash per server, see
//! `super::link`) and says each change in the presence stream as an
//! [`Event`]. The view is rebuilt from the hashes when a server (re)joins
//! the link and kept up from the events after that, so `/who`, `/rooms`,
//! the counts in notices and `/msg` cover every server without asking
//! Redis on the connection's path. Uniqueness of nicks is decided in
//! Redis (`super::link`'s claim script); the view only answers early when
//! the answer is already known.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::protocol::nick_key;

/// Longest `/msg` line taken from another server (far above any
/// `--max-line` plus labels people use; bounds what a foreign entry costs).
const MAX_PRIVATE: usize = 1 << 20;

/// A change on another server, as its presence stream entry says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member came (connected, or was seen again after a reconnect:
    /// `quiet`, nobody is told).
    Joined {
        nick: String,
        room: String,
        quiet: bool,
    },
    Renamed {
        old: String,
        new: String,
    },
    Moved {
        nick: String,
        to: String,
    },
    /// `cut`: it was cut off for not reading.
    Left {
        nick: String,
        cut: bool,
    },
    /// `/msg` to a nick on the server that holds it.
    Private {
        to: String,
        line: Vec<u8>,
    },
    /// The server stopped (its members are gone with it).
    Gone,
    /// The server is about to say again who its members are (after a
    /// reconnect): forget them quietly until it does.
    Reset,
}

impl Event {
    /// The stream entry's fields (besides the origin), as name/value pairs.
    pub fn fields(&self) -> Vec<(&'static str, Vec<u8>)> {
        let text = |s: &str| s.as_bytes().to_vec();
        match self {
            Event::Joined { nick, room, quiet } => vec![
                ("k", text(if *quiet { "s" } else { "j" })),
                ("n", text(nick)),
                ("r", text(room)),
            ],
            Event::Renamed { old, new } => {
                vec![("k", text("n")), ("p", text(old)), ("n", text(new))]
            }
            Event::Moved { nick, to } => vec![("k", text("m")), ("n", text(nick)), ("r", text(to))],
            Event::Left { nick, cut } => {
                vec![("k", text(if *cut { "c" } else { "l" })), ("n", text(nick))]
            }
            Event::Private { to, line } => {
                vec![("k", text("p")), ("n", text(to)), ("b", line.clone())]
            }
            Event::Gone => vec![("k", text("q"))],
            Event::Reset => vec![("k", text("r"))],
        }
    }

    /// The event in a stream entry's fields; `None` for anything else
    /// (anyone with access to Redis can add entries).
    pub fn parse(field: impl Fn(&str) -> Option<Vec<u8>>) -> Option<Event> {
        let text = |name: &str| field(name).and_then(|b| String::from_utf8(b).ok());
        let nick = || text("n").filter(|n| super::protocol::valid_nick(n));
        let room = || text("r").filter(|r| super::protocol::room_name(r).as_deref() == Some(r));
        Some(match text("k")?.as_str() {
            "j" | "s" => Event::Joined {
                nick: nick()?,
                room: room()?,
                quiet: text("k")? == "s",
            },
            "n" => Event::Renamed {
                old: text("p").filter(|n| super::protocol::valid_nick(n))?,
                new: nick()?,
            },
            "m" => Event::Moved {
                nick: nick()?,
                to: room()?,
            },
            "l" | "c" => Event::Left {
                nick: nick()?,
                cut: text("k")? == "c",
            },
            "p" => Event::Private {
                to: nick()?,
                line: field("b").filter(|b| b.ends_with(b"\n") && b.len() <= MAX_PRIVATE)?,
            },
            "q" => Event::Gone,
            "r" => Event::Reset,
            _ => return None,
        })
    }
}

/// A member of another server.
#[derive(Debug, Clone)]
struct Seen {
    nick: Arc<str>,
    room: String,
}

/// A room as the other servers have it.
#[derive(Debug, Default)]
struct RoomSeen {
    /// As one of them spelled it.
    name: Arc<str>,
    /// Case-folded nick -> nick.
    nicks: BTreeMap<String, Arc<str>>,
}

/// What a change did to a room, for its local members' notice.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Joined {
        room: String,
        nick: Arc<str>,
    },
    Left {
        room: String,
        nick: Arc<str>,
        cut: bool,
    },
    Moved {
        from: String,
        to: Arc<str>,
        nick: Arc<str>,
    },
    Renamed {
        room: String,
        old: Arc<str>,
        new: Arc<str>,
    },
    /// Members of a room gone with their server.
    Gone {
        room: String,
        count: usize,
    },
}

impl Change {
    /// The key of the room it happened in.
    pub fn room(&self) -> &str {
        match self {
            Change::Joined { room, .. }
            | Change::Left { room, .. }
            | Change::Renamed { room, .. }
            | Change::Gone { room, .. } => room,
            Change::Moved { from, .. } => from,
        }
    }
}

/// The members of every other server.
#[derive(Debug, Default)]
pub struct Remote {
    /// Server id -> case-folded nick -> member.
    servers: HashMap<String, HashMap<String, Seen>>,
    /// Case-folded nick -> the server holding it.
    nicks: HashMap<String, String>,
    /// Room key -> the room.
    rooms: HashMap<String, RoomSeen>,
}

impl Remote {
    /// Applies an event from `origin`; returns what it changed in which
    /// room (nothing for an event about something unknown).
    pub fn apply(&mut self, origin: &str, event: &Event) -> Vec<Change> {
        match event {
            Event::Joined { nick, room, .. } => {
                // Seen again (a quiet join after a reconnect): moved, if anything.
                self.remove(origin, nick);
                let room = self.insert(origin, nick, room);
                vec![Change::Joined {
                    room,
                    nick: nick.as_str().into(),
                }]
            }
            Event::Renamed { old, new } => match self.remove(origin, old) {
                Some(seen) => {
                    let room = self.insert(origin, new, &seen.room);
                    vec![Change::Renamed {
                        room,
                        old: seen.nick,
                        new: new.as_str().into(),
                    }]
                }
                None => Vec::new(),
            },
            Event::Moved { nick, to } => match self.remove(origin, nick) {
                Some(seen) => {
                    let from = nick_key(&seen.room);
                    let room = self.insert(origin, nick, to);
                    vec![
                        Change::Moved {
                            from,
                            to: to.as_str().into(),
                            nick: seen.nick.clone(),
                        },
                        Change::Joined {
                            room,
                            nick: seen.nick,
                        },
                    ]
                }
                None => Vec::new(),
            },
            Event::Left { nick, cut } => match self.remove(origin, nick) {
                Some(seen) => vec![Change::Left {
                    room: nick_key(&seen.room),
                    nick: seen.nick,
                    cut: *cut,
                }],
                None => Vec::new(),
            },
            Event::Private { .. } => Vec::new(),
            Event::Gone | Event::Reset => self.drop_server(origin),
        }
    }

    /// Forgets `origin` and its members: counts per room.
    pub fn drop_server(&mut self, origin: &str) -> Vec<Change> {
        let Some(members) = self.servers.remove(origin) else {
            return Vec::new();
        };
        let mut gone: BTreeMap<String, usize> = BTreeMap::new();
        for (key, seen) in members {
            self.forget(&key, &seen);
            *gone.entry(nick_key(&seen.room)).or_default() += 1;
        }
        gone.into_iter()
            .map(|(room, count)| Change::Gone { room, count })
            .collect()
    }

    /// Forgets every server not in `live`.
    pub fn keep_only(&mut self, live: &[String]) -> Vec<Change> {
        let dead: Vec<String> = self
            .servers
            .keys()
            .filter(|origin| !live.contains(origin))
            .cloned()
            .collect();
        dead.iter()
            .flat_map(|origin| self.drop_server(origin))
            .collect()
    }

    /// Replaces everything with `servers` (each with its `(nick, room)`
    /// members), as read from Redis at once.
    pub fn replace(&mut self, servers: Vec<(String, Vec<(String, String)>)>) {
        *self = Remote::default();
        for (origin, members) in servers {
            self.servers.entry(origin.clone()).or_default();
            for (nick, room) in members {
                self.insert(&origin, &nick, &room);
            }
        }
    }

    /// The server holding `nick` (any case), and the nick as spelled.
    pub fn holder(&self, nick: &str) -> Option<(&str, Arc<str>)> {
        let key = nick_key(nick);
        let origin = self.nicks.get(&key)?;
        let seen = self.servers.get(origin)?.get(&key)?;
        Some((origin, seen.nick.clone()))
    }

    /// How many members the room `key` has on the other servers.
    pub fn count(&self, key: &str) -> usize {
        self.rooms.get(key).map_or(0, |room| room.nicks.len())
    }

    /// Their nicks there, in case-folded order.
    pub fn nicks(&self, key: &str) -> Vec<Arc<str>> {
        self.rooms
            .get(key)
            .map(|room| room.nicks.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every room the other servers have members in: key, name, count.
    pub fn rooms(&self) -> Vec<(String, Arc<str>, usize)> {
        self.rooms
            .iter()
            .map(|(key, room)| (key.clone(), room.name.clone(), room.nicks.len()))
            .collect()
    }

    /// Adds a member; returns its room's key.
    fn insert(&mut self, origin: &str, nick: &str, room: &str) -> String {
        let key = nick_key(nick);
        let nick: Arc<str> = Arc::from(nick);
        let room_key = nick_key(room);
        // A nick is held once: an older holder elsewhere lost it (the
        // claim in Redis decided), so it is forgotten here too.
        if let Some(other) = self.nicks.get(&key).cloned()
            && other != origin
            && let Some(seen) = self.servers.get_mut(&other).and_then(|m| m.remove(&key))
        {
            self.forget(&key, &seen);
        }
        let seen_room = self.rooms.entry(room_key.clone()).or_default();
        if seen_room.nicks.is_empty() {
            seen_room.name = Arc::from(room);
        }
        seen_room.nicks.insert(key.clone(), nick.clone());
        self.nicks.insert(key.clone(), origin.to_string());
        self.servers.entry(origin.to_string()).or_default().insert(
            key,
            Seen {
                nick,
                room: room.to_string(),
            },
        );
        room_key
    }

    /// Removes `origin`'s member `nick`, if it has one.
    fn remove(&mut self, origin: &str, nick: &str) -> Option<Seen> {
        let key = nick_key(nick);
        let seen = self.servers.get_mut(origin)?.remove(&key)?;
        self.forget(&key, &seen);
        Some(seen)
    }

    /// Drops a removed member from the indexes.
    fn forget(&mut self, key: &str, seen: &Seen) {
        self.nicks.remove(key);
        let room_key = nick_key(&seen.room);
        if let Some(room) = self.rooms.get_mut(&room_key) {
            room.nicks.remove(key);
            if room.nicks.is_empty() {
                self.rooms.remove(&room_key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(nick: &str, room: &str) -> Event {
        Event::Joined {
            nick: nick.into(),
            room: room.into(),
            quiet: false,
        }
    }

    #[test]
    fn events_round_trip_and_foreign_ones_are_refused() {
        let events = [
            joined("alice", "#lobby"),
            Event::Joined {
                nick: "bob".into(),
                room: "#Rust".into(),
                quiet: true,
            },
            Event::Renamed {
                old: "bob".into(),
                new: "Bobby".into(),
            },
            Event::Moved {
                nick: "ünal".into(),
                to: "#x".into(),
            },
            Event::Left {
                nick: "a".into(),
                cut: true,
            },
            Event::Private {
                to: "alice".into(),
                line: b"[bob -> alice] hi\n".to_vec(),
            },
            Event::Gone,
            Event::Reset,
        ];
        for event in events {
            let fields = event.fields();
            let parsed = Event::parse(|name| {
                fields
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.clone())
            });
            assert_eq!(parsed.as_ref(), Some(&event));
        }
        let bad: [&[(&str, &[u8])]; 4] = [
            &[("k", b"j"), ("n", b"a b"), ("r", b"#x")],
            &[("k", b"j"), ("n", b"a"), ("r", b"x")],
            &[("k", b"p"), ("n", b"a"), ("b", b"no newline")],
            &[("k", b"z")],
        ];
        for fields in bad {
            let parsed = Event::parse(|name| {
                fields
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_vec())
            });
            assert_eq!(parsed, None, "{fields:?}");
        }
    }

    #[test]
    fn the_view_follows_joins_moves_renames_and_leaves() {
        let mut view = Remote::default();
        view.apply("a", &joined("Alice", "#lobby"));
        view.apply("b", &joined("bob", "#Lobby"));
        assert_eq!(view.count("#lobby"), 2);
        assert_eq!(
            view.holder("ALICE").map(|(o, n)| (o.to_string(), n)),
            Some(("a".into(), "Alice".into()))
        );
        let changes = view.apply(
            "a",
            &Event::Moved {
                nick: "alice".into(),
                to: "#Rust".into(),
            },
        );
        assert_eq!(changes.len(), 2);
        assert_eq!(view.count("#lobby"), 1);
        assert_eq!(view.nicks("#rust"), vec![Arc::<str>::from("alice")]);
        view.apply(
            "a",
            &Event::Renamed {
                old: "alice".into(),
                new: "al".into(),
            },
        );
        assert!(view.holder("alice").is_none());
        assert_eq!(view.nicks("#rust"), vec![Arc::<str>::from("al")]);
        // Someone else's member is not another server's to remove.
        assert!(
            view.apply(
                "b",
                &Event::Left {
                    nick: "al".into(),
                    cut: false
                }
            )
            .is_empty()
        );
        assert_eq!(
            view.apply(
                "a",
                &Event::Left {
                    nick: "al".into(),
                    cut: false
                }
            ),
            vec![Change::Left {
                room: "#rust".into(),
                nick: "al".into(),
                cut: false
            }]
        );
        assert!(view.rooms().iter().all(|(key, _, _)| key != "#rust"));
    }

    #[test]
    fn a_dead_server_takes_its_members_with_it() {
        let mut view = Remote::default();
        for n in 0..3 {
            view.apply("a", &joined(&format!("a{n}"), "#lobby"));
        }
        view.apply("a", &joined("x", "#other"));
        view.apply("b", &joined("b0", "#lobby"));
        let changes = view.keep_only(&["b".to_string()]);
        assert_eq!(
            changes,
            vec![
                Change::Gone {
                    room: "#lobby".into(),
                    count: 3
                },
                Change::Gone {
                    room: "#other".into(),
                    count: 1
                }
            ]
        );
        assert_eq!(view.count("#lobby"), 1);
        assert!(view.holder("a0").is_none());
        // A nick claimed anew elsewhere moves there.
        view.apply("c", &joined("b0", "#lobby"));
        assert_eq!(
            view.holder("b0").map(|(o, _)| o.to_string()),
            Some("c".into())
        );
        assert_eq!(view.count("#lobby"), 1);
    }
}
