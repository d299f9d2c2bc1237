//! A room's history: the last lines said in it, each with its time, for
//! `/history` and `chat serve --replay`.
//!
//! Kept as one byte ring plus one small record per line, so a relay adds a
//! copy of its batch and a few words per line, and no allocation once the
//! ring has grown: the relay path is the chat's hot path.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

/// Default for `--history`: lines kept per room.
pub const DEFAULT_HISTORY: usize = 1000;

/// Default number of lines `/history` shows.
pub const DEFAULT_SHOWN: usize = 20;

/// Bytes of history kept per room, whatever `--history` says: a room's
/// history is bounded in memory even when its lines are long.
pub const MAX_BYTES: usize = 512 * 1024;

/// The lines said in one room, oldest first.
#[derive(Default)]
pub struct History {
    bytes: VecDeque<u8>,
    /// Per line: its time (ms since the epoch) and its length, newline
    /// included.
    lines: VecDeque<(u64, u32)>,
    max_lines: usize,
}

impl History {
    pub fn new(max_lines: usize) -> History {
        History {
            max_lines,
            ..History::default()
        }
    }

    /// Records the lines of `batch` (whole lines, each ending in `\n`),
    /// said at `time` (ms since the epoch).
    pub fn push(&mut self, time: u64, batch: &[u8]) {
        if self.max_lines == 0 {
            return;
        }
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', batch) {
            let line = &batch[start..=end];
            start = end + 1;
            if line.len() > MAX_BYTES {
                continue;
            }
            self.bytes.extend(line);
            self.lines.push_back((time, line.len() as u32));
        }
        while self.lines.len() > self.max_lines || self.bytes.len() > MAX_BYTES {
            let Some((_, len)) = self.lines.pop_front() else {
                break;
            };
            self.bytes.drain(..len as usize);
        }
    }

    /// Puts `earlier` (time, batch of whole lines; oldest first) before
    /// what is kept: what was said in a room before this server had it
    /// (`--redis`). Done once per room, so rebuilding is cheap enough.
    pub fn prepend(&mut self, earlier: &[(u64, Vec<u8>)]) {
        let mut whole = History::new(self.max_lines);
        for (time, batch) in earlier {
            whole.push(*time, batch);
        }
        for (time, mut line) in self.last(self.lines.len()) {
            line.push(b'\n');
            whole.push(time, &line);
        }
        *self = whole;
    }

    /// The last `n` lines, oldest first: (time, line without its newline).
    pub fn last(&self, n: usize) -> Vec<(u64, Vec<u8>)> {
        let skip = self.lines.len().saturating_sub(n);
        let mut at: usize = self
            .lines
            .iter()
            .take(skip)
            .map(|&(_, len)| len as usize)
            .sum();
        let mut out = Vec::with_capacity(self.lines.len() - skip);
        for &(time, len) in self.lines.iter().skip(skip) {
            let len = len as usize;
            let line: Vec<u8> = self.bytes.range(at..at + len - 1).copied().collect();
            at += len;
            out.push((time, line));
        }
        out
    }

    /// Lines kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lines.len()
    }
}

/// Now, in ms since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Appends `[HH:MM:SS] line\n` for each of `lines`, in the server's local
/// time zone (the one its users share, in a classroom or on a LAN). A
/// line from another day shows its date too.
pub fn render(out: &mut Vec<u8>, lines: &[(u64, Vec<u8>)]) {
    let zone = jiff::tz::TimeZone::system();
    let today = jiff::Timestamp::now()
        .to_zoned_datetime(zone.clone())
        .date();
    for (time, line) in lines {
        let stamp = jiff::Timestamp::from_millisecond(*time as i64)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_zoned_datetime(zone.clone());
        let format = if stamp.date() == today {
            "[%H:%M:%S] "
        } else {
            "[%Y-%m-%d %H:%M:%S] "
        };
        out.extend_from_slice(stamp.strftime(format).to_string().as_bytes());
        out.extend_from_slice(line);
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(history: &History, n: usize) -> Vec<String> {
        history
            .last(n)
            .into_iter()
            .map(|(_, l)| String::from_utf8(l).unwrap())
            .collect()
    }

    #[test]
    fn keeps_the_last_lines_of_each_batch_in_order() {
        let mut history = History::new(3);
        history.push(1, b"[a] one\n[a] two\n");
        history.push(2, b"[b] three\n");
        assert_eq!(texts(&history, 10), ["[a] one", "[a] two", "[b] three"]);
        history.push(3, b"[c] four\n");
        assert_eq!(texts(&history, 10), ["[a] two", "[b] three", "[c] four"]);
        assert_eq!(texts(&history, 1), ["[c] four"]);
        assert_eq!(history.last(2)[0].0, 2);
    }

    #[test]
    fn is_bounded_in_bytes_too() {
        let mut history = History::new(1_000_000);
        let line = vec![b'x'; 1023];
        for _ in 0..2000 {
            let mut batch = line.clone();
            batch.push(b'\n');
            history.push(0, &batch);
        }
        assert!(history.len() <= MAX_BYTES / 1024);
        assert!(history.len() >= MAX_BYTES / 1024 - 1);
    }

    #[test]
    fn zero_keeps_nothing() {
        let mut history = History::new(0);
        history.push(1, b"[a] one\n");
        assert!(history.last(5).is_empty());
    }

    #[test]
    fn renders_a_time_before_each_line() {
        let mut out = Vec::new();
        render(&mut out, &[(now_ms(), b"[a] hi".to_vec())]);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.len(), "[12:34:56] [a] hi\n".len(), "{text}");
        assert!(text.ends_with("] [a] hi\n"), "{text}");
    }
}
