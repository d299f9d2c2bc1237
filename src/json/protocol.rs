//! Framing a byte stream into JSON values: the codec both `json serve` and
//! `json send` speak.
//!
//! The stream is a sequence of JSON values with or without whitespace
//! between them (seed 004's client sends `{...}{...}` with nothing in
//! between). [`JsonCodec`] finds where each value ends with a cheap
//! structural scan (brackets, strings, escapes), remembered across reads so
//! a value arriving in many pieces is scanned once. Only a complete value
//! is handed to serde_json, which validates it; it is then passed on as one
//! compact line (whitespace outside strings removed, everything else,
//! including key order and number spelling, kept byte for byte).
//!
//! "Need more bytes" is never "bad input". Bad input becomes a
//! [`Frame::Error`] with the stream offset where the value went wrong, and
//! decoding resumes at the next line: at the start of the bad byte's own
//! line when that byte begins it (so `{` followed by a line of good JSON
//! loses only the `{`), else after the next newline. Further rules:
//! * a value that is still open is test-parsed when its bytes have doubled,
//!   or grown by a quarter and brought a newline (geometric growth keeps
//!   the total cost linear), so an early syntax error is reported at once
//!   instead of waiting for a `}` that never comes; a number cut off by the
//!   end of the buffer (`1.`, `-`, `1e+`) is unfinished, not wrong;
//! * a value longer than `max_size` is refused as soon as it is known to be
//!   too long and skipped to its structural end as it arrives, without
//!   buffering it (a pretty-printed value does not leak its inner lines);
//! * a top-level number touching the end of the buffer may still be growing
//!   (`12` then `3`), so it is complete only when a delimiter follows, the
//!   stream ends, or the codec is `eager` (a client reading replies, which
//!   arrive whole); `true`, `false` and `null` cannot grow and are answered
//!   at once.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::de::IgnoredAny;
use tokio_util::codec::{Decoder, Encoder};

/// Default `--max-size`: the largest value accepted, in bytes.
pub const DEFAULT_MAX_SIZE: usize = 1024 * 1024;

/// One decoded item: a value to pass on, or a complaint about bad input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A valid value, compacted to one line (no trailing newline).
    Value(Bytes),
    /// Input that is not a valid value: why, and the offset in the stream
    /// (counted in bytes from the connection's first byte) where it failed.
    Error { message: String, offset: u64 },
}

impl Frame {
    /// The error reply `{"error": "...", "offset": N}` as one JSON line.
    fn error_json(message: &str, offset: u64) -> Vec<u8> {
        let value = serde_json::json!({ "error": message, "offset": offset });
        serde_json::to_vec(&value).unwrap_or_else(|_| b"{\"error\":\"internal\"}".to_vec())
    }
}

/// Where the scan of the value at the front of the buffer has got to.
#[derive(Debug, Default, Clone)]
struct Scan {
    /// The first byte has been looked at (and `scalar` or `depth` set).
    started: bool,
    /// A number, literal or garbage token, which ends at a delimiter.
    scalar: bool,
    /// Bytes of the current value already scanned.
    pos: usize,
    /// Open `{` / `[` not yet closed.
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Buffer length at the last test-parse of an incomplete value.
    checked_len: usize,
}

impl Scan {
    /// Scans `buf` from `self.pos`; `buf[0]` is the value's first byte
    /// unless the scan was already started. Returns where the value ends.
    fn advance(&mut self, buf: &[u8]) -> Option<usize> {
        if !self.started {
            self.started = true;
            self.pos = 1;
            match buf[0] {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth = 1,
                _ => self.scalar = true,
            }
        }
        if self.scalar {
            // At least one byte, then up to the next delimiter.
            let from = self.pos;
            let found = buf[from..].iter().position(|&b| is_delimiter(b));
            self.pos = buf.len();
            return found.map(|i| from + i);
        }
        while self.pos < buf.len() {
            let b = buf[self.pos];
            self.pos += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    if self.depth == 0 {
                        return Some(self.pos);
                    }
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        self.depth = self.depth.saturating_sub(1);
                        if self.depth == 0 {
                            return Some(self.pos);
                        }
                    }
                    _ => {}
                }
            }
        }
        None
    }
}

/// The JSON stream codec (see the module doc).
#[derive(Debug)]
pub struct JsonCodec {
    max_size: usize,
    /// Replies arrive whole, so a scalar at the end of the buffer is done.
    eager: bool,
    /// Stream offset of the first byte still in the buffer.
    offset: u64,
    scan: Scan,
    /// After bad input: discarding bytes up to the next newline.
    resyncing: bool,
    /// After an oversize value was refused while still open: discarding
    /// the rest of it (tracked by `scan`) up to its structural end.
    discarding: bool,
}

/// What a complete value failed with.
struct Invalid {
    message: String,
    /// Byte index in the value the complaint refers to.
    at: usize,
    /// serde ran out of input: the value is unfinished, not wrong.
    eof: bool,
}

impl JsonCodec {
    /// A codec for a server: values up to `max_size` bytes.
    pub fn new(max_size: usize) -> Self {
        JsonCodec {
            max_size,
            eager: false,
            offset: 0,
            scan: Scan::default(),
            resyncing: false,
            discarding: false,
        }
    }

    /// A codec for reading replies, where a value ends with its last write.
    pub fn eager(max_size: usize) -> Self {
        JsonCodec {
            eager: true,
            ..JsonCodec::new(max_size)
        }
    }

    fn advance(&mut self, buf: &mut BytesMut, n: usize) {
        buf.advance(n);
        self.offset += n as u64;
    }

    /// Reports bad input at `at` (relative to the buffer) and decides where
    /// decoding resumes: at the start of the line the bad byte begins (so
    /// `{` followed by a line of good JSON loses only the `{`), otherwise
    /// after the next newline from the bad byte on.
    fn bad_input(&mut self, buf: &mut BytesMut, message: String, at: usize) -> Frame {
        let offset = self.offset + at as u64;
        self.scan = Scan::default();
        let at = at.min(buf.len());
        let line_start = buf[..at].iter().rposition(|&b| b == b'\n').map(|i| i + 1);
        match line_start {
            Some(start) if buf[start..at].iter().all(|b| is_space(*b)) => {
                self.advance(buf, start);
            }
            _ => {
                self.advance(buf, at.max(1));
                self.resyncing = true;
            }
        }
        Frame::Error { message, offset }
    }

    fn too_large_message(&self) -> String {
        format!("value too large (max {} bytes)", self.max_size)
    }

    /// Drops what an earlier error said to drop: the rest of an oversize
    /// value (`discarding`) or of a bad line (`resyncing`). `false` when
    /// that used up the whole buffer.
    fn skip_dropped(&mut self, buf: &mut BytesMut) -> bool {
        if self.discarding {
            match self.scan.advance(buf) {
                Some(end) => {
                    self.advance(buf, end);
                    self.discarding = false;
                    self.scan = Scan::default();
                }
                None => {
                    let all = buf.len();
                    self.advance(buf, all);
                    self.scan.pos = 0;
                    return false;
                }
            }
        }
        if self.resyncing {
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.advance(buf, i + 1);
                    self.resyncing = false;
                }
                None => {
                    let all = buf.len();
                    self.advance(buf, all);
                    return false;
                }
            }
        }
        true
    }

    fn decode_inner(&mut self, buf: &mut BytesMut, at_eof: bool) -> Option<Frame> {
        if !self.skip_dropped(buf) {
            return None;
        }
        let blank = buf.iter().take_while(|b| is_space(**b)).count();
        if blank > 0 {
            self.advance(buf, blank);
            self.scan = Scan::default();
        }
        if buf.is_empty() {
            return None;
        }
        let end = match self.scan.advance(buf) {
            Some(end) => Some(end),
            // A scalar touching the end of the buffer: complete if the
            // stream ended, replies are read (eager), or it is a literal
            // that cannot grow; a number might.
            None if self.scan.scalar
                && (at_eof || self.eager || matches!(&buf[..], b"true" | b"false" | b"null")) =>
            {
                Some(buf.len())
            }
            None => None,
        };
        match end {
            Some(end) if end > self.max_size => {
                let frame = Frame::Error {
                    message: self.too_large_message(),
                    offset: self.offset,
                };
                self.advance(buf, end);
                self.scan = Scan::default();
                Some(frame)
            }
            Some(end) => Some(self.finish_value(buf, end)),
            None if buf.len() > self.max_size => {
                // Refuse it now and drop the rest of it as it arrives,
                // without buffering it.
                let frame = Frame::Error {
                    message: self.too_large_message(),
                    offset: self.offset,
                };
                let all = buf.len();
                self.advance(buf, all);
                self.scan.pos = 0;
                self.discarding = true;
                Some(frame)
            }
            None if at_eof => {
                let frame = match validate(buf) {
                    Err(bad) if !bad.eof => self.bad_input(buf, bad.message, bad.at),
                    _ => self.closed_mid_value(buf),
                };
                let rest = buf.len();
                self.advance(buf, rest);
                Some(frame)
            }
            None => self.early_check(buf),
        }
    }

    fn closed_mid_value(&mut self, buf: &mut BytesMut) -> Frame {
        let at = buf.len();
        let offset = self.offset + at as u64;
        self.advance(buf, at);
        self.scan = Scan::default();
        Frame::Error {
            message: "connection closed in the middle of a value".into(),
            offset,
        }
    }

    /// Test-parses an incomplete value when that can tell us something new
    /// (see the module doc); returns the error if it is already invalid.
    /// A check happens when the buffer has doubled, or has grown by a
    /// quarter and brought a newline: geometric growth keeps the total
    /// cost linear in the value's size.
    fn early_check(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        let len = buf.len();
        let last = self.scan.checked_len;
        let doubled = len >= last.saturating_mul(2).max(64);
        let newline = len >= last + last / 4 && buf[last.min(len)..].contains(&b'\n');
        if !doubled && !newline {
            return None;
        }
        self.scan.checked_len = len;
        let bad = match validate(buf) {
            Err(bad) if !bad.eof => bad,
            _ => return None,
        };
        // A number cut off by the end of the buffer (`1.`, `-`, `1e+`) is
        // "invalid" to serde but only unfinished: more bytes may fix it.
        let tail = buf
            .iter()
            .rev()
            .take_while(|b| b"0123456789.eE+-".contains(b))
            .count();
        if bad.at >= len - tail {
            return None;
        }
        Some(self.bad_input(buf, bad.message, bad.at))
    }

    /// Validates and compacts the complete value `buf[..end]`.
    fn finish_value(&mut self, buf: &mut BytesMut, end: usize) -> Frame {
        match validate(&buf[..end]) {
            Ok(()) => {
                let compact = compact(&buf[..end]);
                self.advance(buf, end);
                self.scan = Scan::default();
                Frame::Value(compact)
            }
            Err(bad) if bad.eof && end == buf.len() => self.closed_mid_value(buf),
            Err(bad) => self.bad_input(buf, bad.message, bad.at),
        }
    }
}

/// Checks that `value` is exactly one valid JSON value in valid UTF-8.
/// (serde does not check the UTF-8 of strings it is told to ignore, hence
/// the first step.)
fn validate(value: &[u8]) -> Result<(), Invalid> {
    if let Err(e) = std::str::from_utf8(value) {
        // A character cut off by the end of the buffer is unfinished.
        return Err(Invalid {
            message: "invalid UTF-8".to_string(),
            at: e.valid_up_to(),
            eof: e.error_len().is_none(),
        });
    }
    serde_json::from_slice::<IgnoredAny>(value)
        .map(|_| ())
        .map_err(|e| Invalid {
            message: serde_message(&e),
            at: error_position(value, &e),
            eof: e.is_eof(),
        })
}

impl Decoder for JsonCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Self::Error> {
        Ok(self.decode_inner(buf, false))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Self::Error> {
        Ok(self.decode_inner(buf, true))
    }
}

impl Encoder<Frame> for JsonCodec {
    type Error = std::io::Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), Self::Error> {
        match frame {
            Frame::Value(bytes) => dst.extend_from_slice(&bytes),
            Frame::Error { message, offset } => {
                dst.extend_from_slice(&Frame::error_json(&message, offset))
            }
        }
        dst.put_u8(b'\n');
        Ok(())
    }
}

/// Validates one value given as text (an argument or a stdin line) and
/// returns it compacted, or serde's complaint.
pub fn parse_value(text: &[u8]) -> Result<Bytes, String> {
    match validate(text) {
        Ok(()) => Ok(compact(text)),
        Err(bad) => Err(format!("{} at byte {}", bad.message, bad.at)),
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn is_delimiter(b: u8) -> bool {
    is_space(b) || matches!(b, b'{' | b'}' | b'[' | b']' | b',' | b':' | b'"')
}

/// Removes whitespace outside strings from valid JSON.
fn compact(value: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(value.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, &b) in value.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if is_space(b) {
            out.extend_from_slice(&value[start..i]);
            start = i + 1;
        }
    }
    out.extend_from_slice(&value[start..]);
    out.freeze()
}

/// serde_json's message without its " at line L column C" suffix (the
/// offset says where).
fn serde_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Byte index in `value` of serde_json's (line, column) error position.
fn error_position(value: &[u8], e: &serde_json::Error) -> usize {
    let (line, column) = (e.line(), e.column());
    let mut index = 0;
    for _ in 1..line {
        match value[index..].iter().position(|&b| b == b'\n') {
            Some(i) => index += i + 1,
            None => break,
        }
    }
    (index + column.saturating_sub(1)).min(value.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut JsonCodec, reads: &[&[u8]]) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for read in reads {
            buf.extend_from_slice(read);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                frames.push(f);
            }
        }
        while let Some(f) = codec.decode_eof(&mut buf).unwrap() {
            frames.push(f);
        }
        frames
    }

    fn value(s: &str) -> Frame {
        Frame::Value(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn err(message: &str, offset: u64) -> Frame {
        Frame::Error {
            message: message.into(),
            offset,
        }
    }

    #[test]
    fn values_without_separators() {
        let mut c = JsonCodec::new(1024);
        let frames = decode_all(
            &mut c,
            &[br#"{"name": "jung", "count": 0}{"name": "jung", "count": 1}"#],
        );
        assert_eq!(
            frames,
            vec![
                value(r#"{"name":"jung","count":0}"#),
                value(r#"{"name":"jung","count":1}"#)
            ]
        );
    }

    #[test]
    fn values_split_across_reads_at_every_point() {
        let input = br#" {"a": [1, "x}\"y"]} "s p" 42 true"#;
        for cut in 0..=input.len() {
            let mut c = JsonCodec::new(1024);
            let frames = decode_all(&mut c, &[&input[..cut], &input[cut..]]);
            assert_eq!(
                frames,
                vec![
                    value(r#"{"a":[1,"x}\"y"]}"#),
                    value(r#""s p""#),
                    value("42"),
                    value("true")
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn bad_value_reports_offset_and_resyncs_at_newline() {
        let mut c = JsonCodec::new(1024);
        let frames = decode_all(&mut c, &[b"{\"a\":1}{bad}\n[2]\n"]);
        assert_eq!(
            frames,
            vec![
                value(r#"{"a":1}"#),
                err("key must be a string", 8),
                value("[2]")
            ]
        );
    }

    #[test]
    fn unclosed_value_does_not_swallow_the_next_line() {
        let mut c = JsonCodec::new(1 << 20);
        let frames = decode_all(&mut c, &[b"{\n", b"{\"ok\":true}\n"]);
        assert_eq!(frames[0], err("key must be a string", 2));
        assert_eq!(frames[1..], [value(r#"{"ok":true}"#)]);
    }

    #[test]
    fn oversize_is_refused_without_buffering_it() {
        let mut c = JsonCodec::new(100);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"[\"");
        buf.extend_from_slice(&[b'x'; 150]);
        let f = c.decode(&mut buf).unwrap();
        assert_eq!(f, Some(err("value too large (max 100 bytes)", 0)));
        // Framed decodes again right after a frame: the rest is discarded.
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty(), "the oversize bytes are discarded");
        buf.extend_from_slice(b"xxxx\"]\n{}");
        assert_eq!(c.decode(&mut buf).unwrap(), Some(value("{}")));
    }

    #[test]
    fn invalid_utf8_and_garbage_are_errors() {
        let mut c = JsonCodec::new(1024);
        let frames = decode_all(
            &mut c,
            &[b"\"\xff\"\n\x00\x01garbage\n{\"k\":\"\xed\xa0\x80\"}\n7\n"],
        );
        assert!(
            matches!(frames[0], Frame::Error { offset: 1, .. }),
            "{frames:?}"
        );
        assert!(
            matches!(frames[1], Frame::Error { offset: 4, .. }),
            "{frames:?}"
        );
        assert!(
            matches!(frames[2], Frame::Error { offset: 20, .. }),
            "{frames:?}"
        );
        assert_eq!(frames[3], value("7"));
        assert_eq!(frames.len(), 4);
    }

    #[test]
    fn number_at_buffer_end_waits_unless_eager() {
        let mut c = JsonCodec::new(1024);
        let mut buf = BytesMut::from(&b"12"[..]);
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"3 ");
        assert_eq!(c.decode(&mut buf).unwrap(), Some(value("123")));
        let mut eager = JsonCodec::eager(1024);
        let mut buf = BytesMut::from(&b"12"[..]);
        assert_eq!(eager.decode(&mut buf).unwrap(), Some(value("12")));
    }

    #[test]
    fn disconnect_mid_value_is_reported() {
        let mut c = JsonCodec::new(1024);
        let frames = decode_all(&mut c, &[br#"{"a": [1, 2"#]);
        assert_eq!(
            frames,
            vec![err("connection closed in the middle of a value", 11)]
        );
    }

    #[test]
    fn pretty_values_with_numbers_survive_every_split() {
        let input = b"[\n  -1.5e+3,\n  {\"k\": -0.25, \"e\": 6E-2, \"s\": \"a\\\"b\"},\n  [1, 2.0, 3e4, -7]\n]\n";
        assert!(input.len() > 64);
        let want = value(r#"[-1.5e+3,{"k":-0.25,"e":6E-2,"s":"a\"b"},[1,2.0,3e4,-7]]"#);
        for cut in 0..=input.len() {
            for second in cut..=input.len() {
                let mut c = JsonCodec::new(1024);
                let frames = decode_all(
                    &mut c,
                    &[&input[..cut], &input[cut..second], &input[second..]],
                );
                assert_eq!(frames, vec![want.clone()], "cuts at {cut} and {second}");
            }
        }
    }

    #[test]
    fn a_broken_pretty_value_does_not_leak_its_inner_lines() {
        let mut c = JsonCodec::new(1024);
        let frames = decode_all(
            &mut c,
            &[b"{\n  \"a\": 1,\n  \"b\": bad\n}\n{\"next\":1}\n"],
        );
        assert!(
            frames
                .iter()
                .all(|f| !matches!(f, Frame::Value(v) if v.as_ref() != b"{\"next\":1}")),
            "{frames:?}"
        );
        assert_eq!(frames.last(), Some(&value(r#"{"next":1}"#)));
    }

    #[test]
    fn an_oversize_pretty_value_is_skipped_whole() {
        let big: String = format!(
            "{{\n{}\n}}\n",
            (0..20)
                .map(|i| format!("  \"k{i}\": [1, 2, 3]"))
                .collect::<Vec<_>>()
                .join(",\n")
        );
        let input = format!("{big}[\"after\"]\n");
        for cut in [10, 63, 65, 100, big.len()] {
            let mut c = JsonCodec::new(64);
            let frames = decode_all(
                &mut c,
                &[&input.as_bytes()[..cut], &input.as_bytes()[cut..]],
            );
            assert_eq!(
                frames,
                vec![
                    err("value too large (max 64 bytes)", 0),
                    value(r#"["after"]"#)
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn literals_at_the_end_are_answered_and_cut_ones_reported_at_eof() {
        let mut c = JsonCodec::new(1024);
        let mut buf = BytesMut::from(&b"true"[..]);
        assert_eq!(c.decode(&mut buf).unwrap(), Some(value("true")));
        let frames = decode_all(&mut JsonCodec::new(1024), &[b"[1] tru"]);
        assert_eq!(
            frames,
            vec![
                value("[1]"),
                err("connection closed in the middle of a value", 7)
            ]
        );
    }

    #[test]
    fn encoder_writes_lines() {
        let mut c = JsonCodec::new(1024);
        let mut out = BytesMut::new();
        c.encode(value("[1]"), &mut out).unwrap();
        c.encode(err("bad", 3), &mut out).unwrap();
        assert_eq!(&out[..], b"[1]\n{\"error\":\"bad\",\"offset\":3}\n");
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            ".{0,20}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(".{0,8}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Any value, pretty-printed and cut into reads anywhere, comes out
        /// as one compact line that parses back to the same value.
        #[test]
        fn values_round_trip_through_any_reads(value in any_json(), cut in 0usize..400) {
            let text = serde_json::to_string_pretty(&value).expect("serialize");
            let cut = cut.min(text.len());
            let frames = decode_all(
                &mut JsonCodec::new(DEFAULT_MAX_SIZE),
                &[&text.as_bytes()[..cut], &text.as_bytes()[cut..], b"\n"],
            );
            proptest::prop_assert_eq!(frames.len(), 1, "{:?}", frames);
            let Frame::Value(line) = &frames[0] else {
                return Err(proptest::test_runner::TestCaseError::fail(format!("{frames:?}")));
            };
            // Compacting keeps every token as it was written (numbers
            // digit for digit): the line is exactly the compact form.
            let compact = serde_json::to_string(&value).expect("serialize");
            proptest::prop_assert_eq!(std::str::from_utf8(line).ok(), Some(compact.as_str()));
        }

        /// Garbage gives errors whose offsets lie within the input.
        #[test]
        fn garbage_errors_point_into_the_input(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let frames = decode_all(&mut JsonCodec::new(64), &[&bytes]);
            for frame in frames {
                if let Frame::Error { offset, .. } = frame {
                    proptest::prop_assert!(offset <= bytes.len() as u64);
                }
            }
        }
    }
}
