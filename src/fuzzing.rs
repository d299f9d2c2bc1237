//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing` only;
//! not part of the API). Each takes arbitrary bytes, runs one parser the
//! network feeds, and panics if an invariant breaks: not only "no panic",
//! but what the parser's callers rely on (a decoded message encodes back
//! to itself, lengths and offsets stay within the input, line framing does
//! not depend on where reads end).

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::chat::protocol::{Command, frame_in_pieces, name_prefix, valid_nick};
use crate::file::protocol::{Data, Entry, MAX_CHUNK, Reply as FileReply, read_start};
use crate::json::protocol::{Frame, JsonCodec};
use crate::lan::protocol::{Probe as LanProbe, Reply as LanReply, classify};
use crate::ping::protocol as ping;

/// The chat server's line framer and command parser.
pub fn chat_lines(data: &[u8]) {
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let max = usize::from(first % 64) + 1;
    let whole = frame_in_pieces(data, &[], max);
    let cut = usize::from(first) * data.len() / 255;
    assert_eq!(
        whole,
        frame_in_pieces(data, &[cut], max),
        "framing depends on the read boundary"
    );
    for line in whole.iter().flatten() {
        let text = String::from_utf8_lossy(line);
        let _ = Command::parse(&text);
        if let Some((name, _)) = name_prefix(&text) {
            assert!(valid_nick(name));
        }
    }
}

/// The JSON server's stream decoder.
pub fn json_stream(data: &[u8]) {
    let mut codec = JsonCodec::new(256);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in data.chunks(7) {
        buf.extend_from_slice(piece);
        while let Ok(Some(frame)) = codec.decode(&mut buf) {
            frames.push(frame);
        }
    }
    while let Ok(Some(frame)) = codec.decode_eof(&mut buf) {
        frames.push(frame);
    }
    for frame in frames {
        match frame {
            Frame::Value(line) => {
                assert!(!line.contains(&b'\n'));
                // Valid JSON by the grammar (numbers of any size: a value
                // is passed on as written, not converted).
                serde_json::from_slice::<serde::de::IgnoredAny>(&line)
                    .expect("a value frame is valid JSON");
            }
            Frame::Error { offset, .. } => assert!(offset <= data.len() as u64),
        }
    }
}

/// `sockit ping`'s reply parser.
pub fn ping_reply(data: &[u8]) {
    if let Some(probe) = ping::decode(data) {
        assert!(data.len() >= ping::HEADER_LEN);
        let mut again = Vec::new();
        ping::encode(&mut again, probe.run, probe.seq, probe.sent_ns, data.len());
        assert_eq!(ping::decode(&again), Some(probe));
    }
}

/// The discovery probe and reply parsers.
pub fn discovery(data: &[u8]) {
    let _ = classify(data);
    if let Some(probe) = LanProbe::decode(data) {
        assert_eq!(LanProbe::decode(&probe.encode()), Some(probe));
    }
    if let Some(reply) = LanReply::decode(data) {
        let again = reply.encode_within(usize::MAX).expect("no limit");
        assert_eq!(LanReply::decode(&again), Some(reply));
    }
}

/// The file protocol's entry headers, the receiver's replies (its resume
/// offer among them), the sender's resume start and its data frames.
pub fn file_messages(data: &[u8]) {
    let _ = read_start(&mut &data[..]);
    if let Ok(Data::Chunk(len)) = Data::decode(&mut &data[..]) {
        assert!((1..=MAX_CHUNK).contains(&len), "chunk of {len} bytes");
    }
    if let Ok(Some(entry)) = Entry::decode(&mut &data[..]) {
        if let Entry::Dir { path, .. } | Entry::File { path, .. } = &entry {
            assert!(path.len() + 3 <= data.len());
        }
        let again = entry.encode();
        assert!(matches!(Entry::decode(&mut &again[..]), Ok(Some(e)) if e == entry));
    }
    if let Ok(reply) = FileReply::decode(&mut &data[..]) {
        // A refusal's text is escaped on the way in, so its code (not its
        // text) is what must survive another trip.
        let again = FileReply::decode(&mut &reply.encode()[..]).expect("re-decodes");
        assert_eq!(
            std::mem::discriminant(&again),
            std::mem::discriminant(&reply)
        );
    }
}
