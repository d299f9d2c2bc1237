//! The chat line protocol without any I/O: how bytes become lines
//! ([`LineFramer`]), which lines are commands ([`Command`]), what a valid
//! nick is, and the exact text of every line the server sends ([`Notice`]
//! and [`push_message`]).
//!
//! Everything the server sends is UTF-8 and ends with `\n`. Text from
//! clients is decoded lossily (invalid bytes become U+FFFD) and escaped
//! with `crate::text::push_printable` before anyone else sees it, and
//! every relayed line carries its sender's label, so a client can neither
//! recolour other people's terminals nor forge a second label by sending
//! a newline (the label goes on every line, not on every read as in
//! `ncat --chat`).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::time::Duration;

use super::history::DEFAULT_SHOWN;

/// Default for `--max-line`: the longest line a client may send, in bytes.
pub const DEFAULT_MAX_LINE: usize = 4096;

/// Bytes with no newline are taken as a whole message once the sender has
/// sent nothing for this long (the seed client sends no newline; the spec
/// promises delivery within 100 ms).
pub const PAUSE: Duration = Duration::from_millis(50);

/// Longest nick, in characters.
pub const MAX_NICK: usize = 32;

/// Longest `/who` list; a bigger room is summarised after this many names
/// (the answer must fit comfortably in one client's outbound queue).
pub const MAX_WHO: usize = 1000;

/// What the framer found in the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// A complete line without its `\n` or `\r\n`.
    Line(&'a [u8]),
    /// A line grew past the limit; the rest of it is being discarded.
    TooLong,
}

/// Splits a TCP byte stream into lines of at most `max_line` bytes.
///
/// Only the unfinished tail of the input is kept between reads, so an idle
/// connection (or one whose every read ends in a newline) holds no buffer.
/// A line that grows past the limit is reported once and then skipped up
/// to its newline without being stored: a 100 MB line costs nothing.
#[derive(Debug)]
pub struct LineFramer {
    partial: Vec<u8>,
    max_line: usize,
    discarding: bool,
}

/// A partial-line buffer grown past this is given back once it is used.
const KEEP_PARTIAL: usize = 1024;

impl LineFramer {
    pub fn new(max_line: usize) -> LineFramer {
        LineFramer {
            partial: Vec::new(),
            max_line,
            discarding: false,
        }
    }

    /// Feeds bytes just read, calling `on` for every complete line and for
    /// every line found too long, until `on` breaks; returns how many bytes
    /// of `data` were taken (all of them unless `on` broke). The caller
    /// feeds the rest again later: that is how a sender is throttled
    /// between two lines of one read.
    pub fn feed(
        &mut self,
        data: &[u8],
        on: &mut impl FnMut(Input<'_>) -> ControlFlow<()>,
    ) -> usize {
        let mut rest = data;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            let line = &rest[..end];
            rest = &rest[end + 1..];
            let flow = if self.discarding {
                self.discarding = false;
                ControlFlow::Continue(())
            } else if self.partial.is_empty() {
                self.emit(line, on)
            } else if self.partial.len() + line.len() > self.max_line + 1 {
                self.clear_partial();
                on(Input::TooLong)
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                let flow = self.emit(&whole, on);
                whole.clear();
                if whole.capacity() <= KEEP_PARTIAL {
                    self.partial = whole;
                }
                flow
            };
            if flow.is_break() {
                return data.len() - rest.len();
            }
        }
        if rest.is_empty() || self.discarding {
            return data.len();
        }
        // One byte of slack for a `\r` still waiting for its `\n`.
        if self.partial.len() + rest.len() > self.max_line + 1 {
            self.clear_partial();
            self.discarding = true;
            let _ = on(Input::TooLong);
        } else {
            self.partial.extend_from_slice(rest);
        }
        data.len()
    }

    /// True while bytes of an unfinished line are held (or skipped): the
    /// caller then starts the pause timer.
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty() || self.discarding
    }

    /// The sender paused or closed: what it sent so far is a whole line.
    pub fn flush(&mut self, on: &mut impl FnMut(Input<'_>) -> ControlFlow<()>) {
        if self.discarding {
            self.discarding = false;
        } else if !self.partial.is_empty() {
            let whole = std::mem::take(&mut self.partial);
            let _ = self.emit(&whole, on);
        }
    }

    fn emit(
        &self,
        line: &[u8],
        on: &mut impl FnMut(Input<'_>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > self.max_line {
            on(Input::TooLong)
        } else {
            on(Input::Line(line))
        }
    }

    fn clear_partial(&mut self) {
        self.partial = Vec::new();
    }
}

/// A line that starts with `/` (or the seed's bare `bye`).
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    Nick(&'a str),
    Who,
    /// `/join #room`: the name as typed, `#` included or not.
    Join(&'a str),
    Rooms,
    /// `/history [N]`.
    History(usize),
    Me(&'a str),
    Msg {
        to: &'a str,
        text: &'a str,
    },
    Help,
    Quit,
    /// A command with its arguments missing: the usage to show.
    Usage(&'static str),
    Unknown(&'a str),
}

impl<'a> Command<'a> {
    /// The command in `line`, or `None` for an ordinary message.
    pub fn parse(line: &'a str) -> Option<Command<'a>> {
        if line == "bye" {
            return Some(Command::Quit);
        }
        let body = line.strip_prefix('/')?;
        let (name, rest) = match body.split_once(' ') {
            Some((name, rest)) => (name, rest.trim()),
            None => (body, ""),
        };
        Some(match (name, rest) {
            ("nick", "") => Command::Usage("/nick NAME"),
            ("nick", name) => Command::Nick(name),
            ("who", _) => Command::Who,
            ("join", "") => Command::Usage("/join #ROOM"),
            ("join", room) => Command::Join(room),
            ("rooms", _) => Command::Rooms,
            ("history", "") => Command::History(DEFAULT_SHOWN),
            ("history", n) => match n.parse() {
                Ok(n) => Command::History(n),
                Err(_) => Command::Usage("/history [LINES]"),
            },
            ("me", "") => Command::Usage("/me ACTION"),
            ("me", action) => Command::Me(action),
            ("msg", rest) => match rest.split_once(' ') {
                Some((to, text)) if !text.trim().is_empty() => Command::Msg {
                    to,
                    text: text.trim(),
                },
                _ => Command::Usage("/msg NICK TEXT"),
            },
            ("help", _) => Command::Help,
            ("quit", _) => Command::Quit,
            _ => Command::Unknown(name),
        })
    }
}

/// True for a nick a user may take: 1 to `MAX_NICK` characters, each a
/// letter of any script, a digit, `_` or `-`. That excludes spaces,
/// brackets (no `[alice] ` look-alikes), controls and invisible
/// characters.
pub fn valid_nick(nick: &str) -> bool {
    let mut count = 0;
    for c in nick.chars() {
        count += 1;
        if count > MAX_NICK || !(c.is_alphanumeric() || c == '_' || c == '-') {
            return false;
        }
    }
    count > 0
}

/// The room every connection starts in.
pub const LOBBY: &str = "#lobby";

/// A room's name as `/join` takes it: `#` and 1 to `MAX_NICK` letters of
/// any script, digits, `_` or `-` (the `#` may be left out). Returns the
/// name with its `#`, as the user spelled it.
pub fn room_name(name: &str) -> Option<String> {
    let bare = name.strip_prefix('#').unwrap_or(name);
    valid_nick(bare).then(|| format!("#{bare}"))
}

/// The key nicks (and room names) are unique under: case-insensitive in every script.
pub fn nick_key(nick: &str) -> String {
    nick.to_lowercase()
}

/// A seed 4-3 message, `[NAME] text`: the name and the text after it.
pub fn name_prefix(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix('[')?;
    let (name, text) = rest.split_once("] ")?;
    valid_nick(name).then_some((name, text))
}

/// Decodes a line as UTF-8, replacing invalid bytes with U+FFFD.
pub fn decode(line: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(line)
}

/// Appends `[nick] text\n` to `out`, with `text` escaped.
pub fn push_message(out: &mut Vec<u8>, nick: &str, text: &str) {
    push_labelled(out, &["[", nick, "] "], text);
}

/// Appends `* nick action\n` (`/me`) to `out`, with `action` escaped.
pub fn push_action(out: &mut Vec<u8>, nick: &str, action: &str) {
    push_labelled(out, &["* ", nick, " "], action);
}

/// Appends `[from -> to] text\n` (`/msg`) to `out`, with `text` escaped.
pub fn push_private(out: &mut Vec<u8>, from: &str, to: &str, text: &str) {
    push_labelled(out, &["[", from, " -> ", to, "] "], text);
}

/// Appends a label (our own text and valid nicks, so written as is), the
/// client's `text` escaped, and the newline.
fn push_labelled(out: &mut Vec<u8>, label: &[&str], text: &str) {
    for part in label {
        out.extend_from_slice(part.as_bytes());
    }
    crate::text::push_printable(out, text);
    out.push(b'\n');
}

/// Every server notice, each rendered as one `* ...\n` line.
#[derive(Debug)]
pub enum Notice<'a> {
    Welcome {
        nick: &'a str,
        online: usize,
    },
    Joined {
        nick: &'a str,
        online: usize,
    },
    Left {
        nick: &'a str,
        online: usize,
    },
    /// A member that did not read in time (`super::server`'s stall rule).
    CutOff {
        nick: &'a str,
    },
    /// Joins and leaves of a large room, summed over an interval.
    Presence {
        joined: u64,
        left: u64,
        cut_off: u64,
        online: usize,
    },
    Renamed {
        from: &'a str,
        to: &'a str,
    },
    Who {
        room: &'a str,
        nicks: &'a [String],
        online: usize,
    },
    /// To the rest of a room: a member went to another room.
    Moved {
        nick: &'a str,
        room: &'a str,
        online: usize,
    },
    /// To a member that joined a room.
    InRoom {
        room: &'a str,
        online: usize,
    },
    AlreadyIn(&'a str),
    InvalidRoom,
    /// `/rooms`: names and member counts, and how many rooms in all.
    Rooms {
        rooms: &'a [(String, usize)],
        total: usize,
    },
    /// Before the lines of `/history` or `--replay`.
    HistoryStart {
        room: &'a str,
        lines: usize,
    },
    HistoryEnd,
    Help,
    Bye,
    ShuttingDown,
    /// `--redis`: the other servers cannot be reached (or can again).
    LinkLost,
    LinkRestored,
    /// Redis came back without the link's state (restarted empty,
    /// `FLUSHALL`): nicks and presence are being claimed again.
    LinkReset,
    /// Members of a room that left with their server (stopped, killed).
    ServerGone {
        count: usize,
        online: usize,
    },
    /// Another server claimed the nick first: the member is `now` again.
    NickLost {
        nick: &'a str,
        now: &'a str,
    },
    NickTaken(&'a str),
    InvalidNick,
    NoSuchNick(&'a str),
    Usage(&'static str),
    UnknownCommand(&'a str),
    LineTooLong(usize),
    ServerFull,
}

impl Notice<'_> {
    /// Appends the notice as one line to `out`.
    pub fn push(&self, out: &mut Vec<u8>) {
        let mut line = String::with_capacity(64);
        line.push_str("* ");
        // Writing to a String cannot fail.
        let _ = match self {
            Notice::Welcome { nick, online } => write!(
                line,
                "welcome to sockit chat, you are {nick} ({online} online; /help for commands)"
            ),
            Notice::Joined { nick, online } => write!(line, "{nick} joined ({online} online)"),
            Notice::Left { nick, online } => write!(line, "{nick} left ({online} online)"),
            Notice::CutOff { nick } => write!(line, "{nick} was cut off (not reading)"),
            Notice::Presence {
                joined,
                left,
                cut_off,
                online,
            } => {
                let mut parts = Vec::new();
                if *joined > 0 {
                    parts.push(format!("{joined} joined"));
                }
                if *left > 0 {
                    parts.push(format!("{left} left"));
                }
                if *cut_off > 0 {
                    parts.push(format!("{cut_off} cut off for not reading"));
                }
                write!(line, "{} ({online} online)", parts.join(", "))
            }
            Notice::Renamed { from, to } => write!(line, "{from} is now {to}"),
            Notice::Who {
                room,
                nicks,
                online,
            } => {
                let _ = write!(line, "{online} online in {room}: {}", nicks.join(", "));
                match online.checked_sub(nicks.len()) {
                    Some(more) if more > 0 => write!(line, ", ... and {more} more"),
                    _ => Ok(()),
                }
            }
            Notice::Moved { nick, room, online } => {
                write!(line, "{nick} went to {room} ({online} online)")
            }
            Notice::InRoom { room, online } => {
                write!(
                    line,
                    "you are in {room} now ({online} online; /who lists them)"
                )
            }
            Notice::AlreadyIn(room) => write!(line, "you are in {room} already"),
            Notice::InvalidRoom => write!(
                line,
                "error: invalid room name (# and 1-{MAX_NICK} letters, digits, _ or -)"
            ),
            Notice::Rooms { rooms, total } => {
                let list: Vec<String> = rooms
                    .iter()
                    .map(|(name, online)| format!("{name} ({online})"))
                    .collect();
                let noun = if *total == 1 { "room" } else { "rooms" };
                let _ = write!(line, "{total} {noun}: {}", list.join(", "));
                match total.checked_sub(rooms.len()) {
                    Some(more) if more > 0 => write!(line, ", ... and {more} more"),
                    _ => Ok(()),
                }
            }
            Notice::HistoryStart { room, lines } => {
                let noun = if *lines == 1 { "line" } else { "lines" };
                write!(line, "history of {room}: {lines} {noun}")
            }
            Notice::HistoryEnd => write!(line, "end of history"),
            Notice::Help => write!(
                line,
                "commands: /nick NAME (rename), /who (who is here), /join #ROOM, \
                 /rooms, /history [LINES], /me ACTION, /msg NICK TEXT (private), \
                 /quit or bye (leave), /help"
            ),
            Notice::Bye => write!(line, "bye"),
            Notice::ShuttingDown => write!(line, "server shutting down"),
            Notice::LinkLost => write!(line, "link to other servers lost"),
            Notice::LinkRestored => write!(line, "link restored"),
            Notice::LinkReset => write!(
                line,
                "redis lost its state (restarted empty?): nicks and presence are being rebuilt"
            ),
            Notice::ServerGone { count, online } => {
                let noun = if *count == 1 { "member" } else { "members" };
                write!(
                    line,
                    "{count} {noun} left with their server ({online} online)"
                )
            }
            Notice::NickLost { nick, now } => write!(
                line,
                "error: nick {nick} is taken on another server; you are {now}"
            ),
            Notice::NickTaken(nick) => write!(line, "error: nick {nick} is taken"),
            Notice::InvalidNick => write!(
                line,
                "error: invalid nick (1-{MAX_NICK} letters, digits, _ or -)"
            ),
            Notice::NoSuchNick(nick) => write!(line, "error: no such nick: {nick}"),
            Notice::Usage(usage) => write!(line, "error: usage: {usage}"),
            Notice::UnknownCommand(name) => {
                write!(line, "error: unknown command /{name} (see /help)")
            }
            Notice::LineTooLong(max) => write!(line, "error: line too long (max {max} bytes)"),
            Notice::ServerFull => write!(line, "error: server full"),
        };
        crate::text::push_printable(out, &line);
        out.push(b'\n');
    }

    /// The notice as its own buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.push(&mut out);
        out
    }
}

/// Everything a framer with limit `max` makes of `data` fed in pieces cut
/// at `cuts` (in any order, clamped to the data), then flushed as if the
/// sender closed: each line, or `None` for "too long". Checks on the way
/// that a line is within the limit and holds no newline, and that every
/// piece is taken whole. For the property tests and the fuzz target.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn frame_in_pieces(data: &[u8], cuts: &[usize], max: usize) -> Vec<Option<Vec<u8>>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(data.len())).collect();
    cuts.sort_unstable();
    let mut framer = LineFramer::new(max);
    let mut lines = Vec::new();
    let mut on = |input: Input<'_>| {
        lines.push(match input {
            Input::Line(l) => {
                assert!(l.len() <= max && !l.contains(&b'\n'), "{l:?}");
                Some(l.to_vec())
            }
            Input::TooLong => None,
        });
        ControlFlow::Continue(())
    };
    let mut at = 0;
    for cut in cuts.into_iter().chain([data.len()]) {
        assert_eq!(framer.feed(&data[at..cut], &mut on), cut - at);
        at = cut;
    }
    framer.flush(&mut on);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(framer: &mut LineFramer, data: &[u8]) -> Vec<String> {
        let mut got = Vec::new();
        let taken = framer.feed(data, &mut |input| {
            got.push(match input {
                Input::Line(l) => String::from_utf8_lossy(l).into_owned(),
                Input::TooLong => "<too long>".to_string(),
            });
            ControlFlow::Continue(())
        });
        assert_eq!(taken, data.len());
        got
    }

    #[test]
    fn a_break_leaves_the_rest_for_later() {
        let input = b"one\ntwo\r\nthree\nfour";
        let mut f = LineFramer::new(100);
        let mut got = Vec::new();
        let take = |data: &[u8], f: &mut LineFramer, got: &mut Vec<String>| {
            f.feed(data, &mut |input| {
                if let Input::Line(l) = input {
                    got.push(String::from_utf8_lossy(l).into_owned());
                }
                ControlFlow::Break(())
            })
        };
        let first = take(input, &mut f, &mut got);
        assert_eq!(first, 4);
        let second = take(&input[first..], &mut f, &mut got);
        assert_eq!(second, 5);
        let rest = &input[first + second..];
        assert_eq!(take(rest, &mut f, &mut got), 6);
        // The unfinished tail is taken and kept, as without a break.
        assert_eq!(take(&rest[6..], &mut f, &mut got), 4);
        assert_eq!(got, ["one", "two", "three"]);
        assert!(f.has_partial());
    }

    #[test]
    fn lines_split_anywhere_come_out_whole() {
        let input = b"hello\r\nworld\n\nthird line\n";
        for split in 0..input.len() {
            let mut f = LineFramer::new(100);
            let mut got = frame(&mut f, &input[..split]);
            got.extend(frame(&mut f, &input[split..]));
            assert_eq!(got, ["hello", "world", "", "third line"], "split {split}");
            assert!(!f.has_partial());
        }
    }

    #[test]
    fn a_pause_ends_a_line() {
        let mut f = LineFramer::new(100);
        assert!(frame(&mut f, b"hel").is_empty());
        assert!(frame(&mut f, b"lo").is_empty());
        assert!(f.has_partial());
        let mut got = Vec::new();
        f.flush(&mut |i| {
            got.push(format!("{i:?}"));
            ControlFlow::Continue(())
        });
        assert_eq!(got, [format!("{:?}", Input::Line(b"hello"))]);
        assert!(!f.has_partial());
    }

    #[test]
    fn long_lines_are_refused_once_and_skipped() {
        let mut f = LineFramer::new(4);
        assert_eq!(
            frame(&mut f, b"abcd\nabcde\nok\n"),
            ["abcd", "<too long>", "ok"]
        );
        assert_eq!(frame(&mut f, b"abc"), Vec::<String>::new());
        assert_eq!(frame(&mut f, b"defgh"), ["<too long>"]);
        assert_eq!(frame(&mut f, &[b'x'; 1000]), Vec::<String>::new());
        assert_eq!(frame(&mut f, b"xx\nfine\n"), ["fine"]);
        // `\r\n` does not count against the limit.
        assert_eq!(frame(&mut f, b"abcd\r"), Vec::<String>::new());
        assert_eq!(frame(&mut f, b"\n"), ["abcd"]);
        // A pause ends a skipped line too.
        assert_eq!(frame(&mut f, b"toolong"), ["<too long>"]);
        f.flush(&mut |_| panic!("nothing to flush"));
        assert_eq!(frame(&mut f, b"ok\n"), ["ok"]);
    }

    #[test]
    fn commands() {
        assert_eq!(Command::parse("hello"), None);
        assert_eq!(Command::parse("bye"), Some(Command::Quit));
        assert_eq!(Command::parse("bye now"), None);
        assert_eq!(Command::parse("/nick 정훈"), Some(Command::Nick("정훈")));
        assert_eq!(Command::parse("/nick"), Some(Command::Usage("/nick NAME")));
        assert_eq!(
            Command::parse("/msg bob  hi there "),
            Some(Command::Msg {
                to: "bob",
                text: "hi there"
            })
        );
        assert_eq!(
            Command::parse("/msg bob"),
            Some(Command::Usage("/msg NICK TEXT"))
        );
        assert_eq!(Command::parse("/me waves"), Some(Command::Me("waves")));
        assert_eq!(Command::parse("/frob x"), Some(Command::Unknown("frob")));
        assert_eq!(Command::parse("/join #한국"), Some(Command::Join("#한국")));
        assert_eq!(Command::parse("/join"), Some(Command::Usage("/join #ROOM")));
        assert_eq!(Command::parse("/rooms"), Some(Command::Rooms));
        assert_eq!(Command::parse("/history"), Some(Command::History(20)));
        assert_eq!(Command::parse("/history 5"), Some(Command::History(5)));
        assert_eq!(
            Command::parse("/history lots"),
            Some(Command::Usage("/history [LINES]"))
        );
    }

    #[test]
    fn room_names() {
        assert_eq!(room_name("#Rust").as_deref(), Some("#Rust"));
        assert_eq!(room_name("rust").as_deref(), Some("#rust"));
        assert_eq!(room_name("#서울_2").as_deref(), Some("#서울_2"));
        assert_eq!(room_name("#"), None);
        assert_eq!(room_name("##a"), None);
        assert_eq!(room_name("#a b"), None);
        assert_eq!(room_name(&format!("#{}", "x".repeat(33))), None);
    }

    #[test]
    fn nicks() {
        assert!(valid_nick("alice"));
        assert!(valid_nick("정훈"));
        assert!(valid_nick("a_b-9"));
        assert!(valid_nick(&"é".repeat(32)));
        assert!(!valid_nick(&"a".repeat(33)));
        assert!(!valid_nick(""));
        assert!(!valid_nick("a b"));
        assert!(!valid_nick("[a]"));
        assert!(!valid_nick("a\u{200b}"));
        assert_eq!(nick_key("Alice"), nick_key("aLICE"));
        assert_eq!(name_prefix("[syjung] hello"), Some(("syjung", "hello")));
        assert_eq!(name_prefix("[sy jung] hello"), None);
        assert_eq!(name_prefix("[syjung]hello"), None);
    }

    #[test]
    fn relayed_text_is_escaped_and_labelled() {
        let mut out = Vec::new();
        push_message(&mut out, "bob", &decode(b"hi \x1b[2J\xff \xe2\x80\xae"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[bob] hi \\x1b[2J\u{fffd} \\u{202e}\n"
        );
        let who = ["a".to_string(), "b".to_string()];
        assert_eq!(
            Notice::Who {
                room: "#lobby",
                nicks: &who,
                online: 5
            }
            .to_bytes(),
            b"* 5 online in #lobby: a, b, ... and 3 more\n"
        );
    }

    proptest::proptest! {
        /// How TCP happens to cut the stream changes nothing: the same
        /// lines, each within the limit and without a newline, and one
        /// "too long" per overlong line.
        #[test]
        fn framing_does_not_depend_on_where_reads_end(
            data in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(b'\n'),
                    proptest::strategy::Just(b'\r'),
                    proptest::prelude::any::<u8>(),
                ],
                0..400,
            ),
            cuts in proptest::collection::vec(0usize..400, 0..6),
            max in 1usize..40,
        ) {
            proptest::prop_assert_eq!(
                frame_in_pieces(&data, &[], max),
                frame_in_pieces(&data, &cuts, max)
            );
        }

        /// Any text parses as a command or a message without panicking,
        /// and a parsed nick is one `valid_nick` would check.
        #[test]
        fn any_line_parses(line in ".{0,80}") {
            let _ = Command::parse(&line);
            if let Some((name, rest)) = name_prefix(&line) {
                proptest::prop_assert!(valid_nick(name));
                proptest::prop_assert!(line.ends_with(rest));
            }
        }
    }
}
