//! What an echo server answers, for datagrams and for byte streams.
//!
//! A datagram is a whole message, so [`Reply::datagram`] maps one to one.
//! A TCP stream has no message boundaries and arrives in arbitrary reads,
//! so [`StreamReply`] carries the state that makes the answer independent
//! of how the bytes were split:
//!
//! * `--upper` keeps the unfinished tail of a UTF-8 character (at most 3
//!   bytes) until the next read completes it, so `한` split across two
//!   reads is still passed through whole, and `é` split is still upper-cased.
//!   Bytes that can never be UTF-8 are echoed unchanged.
//! * `--reply TEXT` answers every read: once per `\n` in it with `TEXT\n`,
//!   and once more with a bare `TEXT` when the read ends without a newline
//!   (the seed's clients send messages without newline and `recv` one
//!   chunk, message after message on one connection). A line that a slow
//!   network splits across reads is therefore answered once per piece.

use bytes::{BufMut, Bytes, BytesMut};

/// The answer policy, chosen by `--upper` / `--reply` (plain echo otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// RFC 862: the same bytes back.
    Echo,
    /// The same text, upper-cased (Unicode-aware, seed 000's server).
    Upper,
    /// A fixed answer (seed 003's "Hello, i'm server!", seed 004's
    /// "Hello UDP Client").
    Fixed(Bytes),
}

impl Reply {
    /// The reply to one datagram, written into `out` (cleared first).
    pub fn datagram(&self, input: &[u8], out: &mut Vec<u8>) {
        out.clear();
        match self {
            Reply::Echo => out.extend_from_slice(input),
            Reply::Upper => {
                let mut tail = Vec::new();
                upper_into(input, &mut tail, out);
                out.extend_from_slice(&tail);
            }
            Reply::Fixed(text) => out.extend_from_slice(text),
        }
    }
}

/// Per-connection state for answering a byte stream.
#[derive(Debug)]
pub struct StreamReply {
    reply: Reply,
    /// `--upper`: bytes of a UTF-8 character whose rest has not arrived.
    carry: Vec<u8>,
}

/// Upper-casing never makes text more than this many times longer
/// (`ΐ`, 2 bytes, becomes 6).
const UPPER_GROWTH: usize = 3;

impl StreamReply {
    pub fn new(reply: Reply) -> Self {
        StreamReply {
            reply,
            carry: Vec::with_capacity(4),
        }
    }

    /// True for plain echo, where the input bytes can be sent back as they are.
    pub fn is_identity(&self) -> bool {
        self.reply == Reply::Echo
    }

    /// The most input bytes whose answer fits in `budget` bytes, so a caller
    /// can bound the memory an answer takes (a read full of newlines under
    /// `--reply` would otherwise multiply by the reply's length).
    pub fn input_for(&self, budget: usize) -> usize {
        match &self.reply {
            Reply::Echo => budget,
            Reply::Upper => (budget / UPPER_GROWTH).max(1),
            Reply::Fixed(text) => (budget / (text.len() + 1)).max(1),
        }
    }

    /// Appends the answer to `input` to `out`. `input` is one read, or a
    /// piece of one; `read_ends` says whether the read ends with it.
    pub fn push(&mut self, input: &[u8], read_ends: bool, out: &mut BytesMut) {
        match &self.reply {
            Reply::Echo => out.extend_from_slice(input),
            Reply::Upper => {
                if self.carry.is_empty() {
                    upper_into(input, &mut self.carry, out);
                } else {
                    let mut joined = std::mem::take(&mut self.carry);
                    joined.extend_from_slice(input);
                    upper_into(&joined, &mut self.carry, out);
                }
            }
            Reply::Fixed(text) => {
                let lines = input.iter().filter(|&&b| b == b'\n').count();
                for _ in 0..lines {
                    out.extend_from_slice(text);
                    out.put_u8(b'\n');
                }
                if read_ends && input.last().is_some_and(|&b| b != b'\n') {
                    out.extend_from_slice(text);
                }
            }
        }
    }

    /// Flushes what is held back when the peer has finished sending: an
    /// unfinished UTF-8 sequence goes back unchanged.
    pub fn finish(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(&self.carry);
        self.carry.clear();
    }
}

/// Something bytes can be appended to: `Vec<u8>` for datagrams, `BytesMut`
/// for streams.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for BytesMut {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Upper-cases the UTF-8 text in `input` into `out`. Invalid bytes pass
/// through unchanged; an incomplete character at the very end is left in
/// `tail` for the caller to complete or flush.
fn upper_into(input: &[u8], tail: &mut Vec<u8>, out: &mut impl Sink) {
    let mut rest = input;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(text) => {
                upper_str(text, out);
                return;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                if let Ok(text) = std::str::from_utf8(valid) {
                    upper_str(text, out);
                }
                match e.error_len() {
                    Some(n) => {
                        out.put(&after[..n]);
                        rest = &after[n..];
                    }
                    None => {
                        // Unexpected end: the start of a character whose
                        // remaining bytes are still in flight.
                        tail.extend_from_slice(after);
                        return;
                    }
                }
            }
        }
    }
}

fn upper_str(text: &str, out: &mut impl Sink) {
    if text.is_ascii() {
        // Fast path: no allocation per character.
        let mut chunk = [0u8; 256];
        for piece in text.as_bytes().chunks(chunk.len()) {
            let dst = &mut chunk[..piece.len()];
            dst.copy_from_slice(piece);
            dst.make_ascii_uppercase();
            out.put(dst);
        }
    } else {
        out.put(text.to_uppercase().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(reply: Reply, reads: &[&[u8]]) -> Vec<u8> {
        let mut state = StreamReply::new(reply);
        let mut out = BytesMut::new();
        for read in reads {
            // Each read fed in one-byte pieces must answer as the whole read.
            for (i, byte) in read.iter().enumerate() {
                state.push(std::slice::from_ref(byte), i + 1 == read.len(), &mut out);
            }
        }
        state.finish(&mut out);
        out.to_vec()
    }

    #[test]
    fn upper_keeps_korean_and_converts_ascii() {
        let mut out = Vec::new();
        Reply::Upper.datagram("hello 한글 straße".as_bytes(), &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "HELLO 한글 STRASSE");
    }

    #[test]
    fn upper_survives_every_split_point() {
        let text = "aé한b😀ç".as_bytes();
        for cut in 0..=text.len() {
            let out = stream(Reply::Upper, &[&text[..cut], &text[cut..]]);
            assert_eq!(String::from_utf8(out).unwrap(), "AÉ한B😀Ç", "cut at {cut}");
        }
    }

    #[test]
    fn upper_passes_invalid_bytes_through() {
        let out = stream(Reply::Upper, &[b"ab\xffcd\xe2\x82", b"x"]);
        assert_eq!(out, b"AB\xffCD\xe2\x82X");
        let out = stream(Reply::Upper, &[b"end\xe2\x82"]);
        assert_eq!(out, b"END\xe2\x82");
    }

    #[test]
    fn fixed_reply_once_per_line_and_per_unfinished_read() {
        let hi = Reply::Fixed(Bytes::from_static(b"HI"));
        assert_eq!(stream(hi.clone(), &[b"hello"]), b"HI");
        assert_eq!(stream(hi.clone(), &[b"first", b"second"]), b"HIHI");
        assert_eq!(stream(hi.clone(), &[b"a\nb\n"]), b"HI\nHI\n");
        assert_eq!(stream(hi.clone(), &[b"one\ntw"]), b"HI\nHI");
        assert_eq!(stream(hi, &[b"\n\n"]), b"HI\nHI\n");
    }
}
