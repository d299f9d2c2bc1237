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
//! * `--reply TEXT` answers once per line (ended by `\n`) with `TEXT\n`, and
//!   once per newline-less burst with a bare `TEXT` (the seed's clients send
//!   no newline and `recv` one chunk). A line split across reads is
//!   answered once, when its first bytes arrive.

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
    /// `--reply`: the current unfinished line has already been answered.
    answered_partial: bool,
}

impl StreamReply {
    pub fn new(reply: Reply) -> Self {
        StreamReply {
            reply,
            carry: Vec::with_capacity(4),
            answered_partial: false,
        }
    }

    /// True for plain echo, where the input bytes can be sent back as they are.
    pub fn is_identity(&self) -> bool {
        self.reply == Reply::Echo
    }

    /// Appends the answer to `input` to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut BytesMut) {
        match &self.reply {
            Reply::Echo => out.extend_from_slice(input),
            Reply::Upper => {
                if self.carry.is_empty() {
                    let mut tail = std::mem::take(&mut self.carry);
                    upper_into(input, &mut tail, &mut BufWriter(out));
                    self.carry = tail;
                } else {
                    let mut joined = std::mem::take(&mut self.carry);
                    joined.extend_from_slice(input);
                    upper_into(&joined, &mut self.carry, &mut BufWriter(out));
                }
            }
            Reply::Fixed(text) => {
                let mut rest = input;
                while let Some(i) = memchr(b'\n', rest) {
                    if !self.answered_partial {
                        out.extend_from_slice(text);
                        out.put_u8(b'\n');
                    }
                    self.answered_partial = false;
                    rest = &rest[i + 1..];
                }
                if !rest.is_empty() && !self.answered_partial {
                    out.extend_from_slice(text);
                    self.answered_partial = true;
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

struct BufWriter<'a>(&'a mut BytesMut);

impl Sink for BufWriter<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
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

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(reply: Reply, reads: &[&[u8]]) -> Vec<u8> {
        let mut state = StreamReply::new(reply);
        let mut out = BytesMut::new();
        for read in reads {
            state.push(read, &mut out);
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
    fn fixed_reply_once_per_line_or_burst() {
        let hi = Reply::Fixed(Bytes::from_static(b"HI"));
        assert_eq!(stream(hi.clone(), &[b"hello"]), b"HI");
        assert_eq!(stream(hi.clone(), &[b"a\nb\n"]), b"HI\nHI\n");
        assert_eq!(stream(hi.clone(), &[b"hel", b"lo\n", b"x\n"]), b"HIHI\n");
        assert_eq!(stream(hi, &[b"one\ntw", b"o\n"]), b"HI\nHI");
    }
}
