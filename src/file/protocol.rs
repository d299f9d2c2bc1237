//! The file-transfer wire format, its encoders and decoders, and the rules
//! for which received paths are safe. No sockets here: decoders read from
//! any `Read` (a socket in `server`/`client`, a byte slice in the tests).
//!
//! # Wire protocol `SOCKIT-FILE 1`
//!
//! One TCP connection carries one *session*: any number of entries (files
//! and directories) from the sender, each answered by the receiver. All
//! integers are big-endian. `S>` is sender to receiver, `R>` the reverse.
//!
//! ```text
//! S> "SOCKIT-FILE" version:u8=1                      hello
//! R> "SOCKIT-FILE" version:u8=1                      hello back
//!
//! per directory:
//! S> 'D' path_len:u16 path mode:u32
//! R> 'K'                                             created or already there
//!  | 'R' code:u8 len:u16 message                     refused (see Code)
//!
//! per file:
//! S> 'F' path_len:u16 path mode:u32 size:u64 identity:u64
//! R> 'A' offset:u64 prefix_digest:[32]               accepted; I hold `offset`
//!                                                    bytes whose BLAKE3 is
//!                                                    prefix_digest (offset 0:
//!                                                    digest of nothing)
//!  | 'R' code:u8 len:u16 message                     refused: next entry
//! S> start:u64                                       = offset if the sender's
//!                                                    own first `offset` bytes
//!                                                    hash to prefix_digest,
//!                                                    else 0 (start over)
//! S> ( len:u32 (1..=MAX_CHUNK) bytes )*              the data from `start`
//! S> 0:u32 digest:[32]                               end: BLAKE3 of the WHOLE
//!                                                    file, bytes 0..size
//!  | 0xFFFFFFFF:u32                                  abort (sender gave up)
//! R> 'K' | 'R' code:u8 len:u16 message               the verdict, once per file
//!
//! S> 'E'                                             end of session, then the
//!                                                    sender half-closes (FIN)
//! R> (closes after reading 'E' and the FIN)
//! ```
//!
//! **Paths** are UTF-8, relative, `/`-separated, and checked by
//! [`safe_path`]: no absolute paths, no `.`/`..`/empty components, no
//! control characters or backslashes, no Windows device names (`CON`,
//! `NUL`, `COM1`, ...), at most [`MAX_PATH`] bytes and [`MAX_COMPONENT`]
//! per component. The receiver additionally refuses to pass through or
//! replace a symlink or special file inside its directory.
//!
//! **Integrity.** Both sides hash while streaming (never a pre-pass over
//! the file): the sender hashes what it reads, the receiver what it
//! receives, and the receiver compares its BLAKE3 of bytes `0..size` with
//! the sender's `digest`. Only then is the file synced and renamed into
//! place, so a file under its final name is always complete and verified.
//!
//! **Resume.** The receiver keeps an interrupted file under a deterministic
//! temporary name in its directory, [`partial_name`]: derived from the
//! path, the size and the sender's `identity` (its inode and modification
//! time), so a changed source file never resumes onto an old prefix. On the
//! next offer it hashes that prefix and answers `'A' offset digest`. The
//! sender hashes its own first `offset` bytes (it has to feed them into
//! the whole-file hash anyway), and continues from `offset` only if the
//! digests match; otherwise it says `start = 0` and the receiver truncates.
//! The final digest still covers the whole file, so a resumed file is
//! verified exactly like a fresh one.
//!
//! **Early verdict.** If the receiver cannot write (disk full, permission
//! denied) it sends its `'R'` verdict at once, deletes the temporary file
//! and discards the rest of the data; the sender, which watches for
//! replies while it streams, stops and sends the abort marker. Either way
//! exactly one verdict is sent per file, so the two sides stay in step and
//! the next entry follows on the same connection.
//!
//! **Closing.** After `'E'` the sender shuts down its write side and reads
//! until the receiver closes; the receiver closes only after it has read
//! `'E'` and the FIN. Neither side closes with unread data in its socket,
//! so no reset can destroy the last verdict.
//!
//! A peer that does not start with the hello (`nc`, a browser, a port
//! scanner) gets one plain-text line explaining what this port expects.

use std::io::{self, Read};

/// The first bytes of a session, in both directions.
pub const MAGIC: &[u8; 11] = b"SOCKIT-FILE";

/// The protocol version this build speaks.
pub const VERSION: u8 = 1;

/// Longest path accepted, in bytes (Linux's PATH_MAX).
pub const MAX_PATH: usize = 4096;

/// Longest path component, in bytes (NAME_MAX on Linux filesystems).
pub const MAX_COMPONENT: usize = 255;

/// Largest data chunk a receiver accepts; bounds its buffers.
pub const MAX_CHUNK: usize = 4 << 20;

/// Longest refusal message; longer ones are cut (by the sender of the
/// message) and refused (by its reader).
pub const MAX_REASON: usize = 1024;

/// Prefix of the receiver's temporary files; no received path may use it.
pub const PARTIAL_PREFIX: &str = ".sockit-partial-";

/// The plain-text line a peer that is not `sockit file send` gets.
pub const NOT_A_SENDER: &str = "sockit file receive: this port expects `sockit file send` \
     (protocol SOCKIT-FILE 1); nothing was written\n";

/// Chunk-length value that marks the sender's abort.
const ABORT: u32 = u32::MAX;

/// A BLAKE3 digest as it travels.
pub type Digest = [u8; 32];

/// The hello both sides send first.
pub fn hello() -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..11].copy_from_slice(MAGIC);
    out[11] = VERSION;
    out
}

/// What a received hello said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hello {
    /// A sockit peer speaking this version.
    Ok,
    /// A sockit peer speaking another version.
    Version(u8),
    /// Not a sockit peer at all.
    Foreign,
}

/// Checks a 12-byte hello.
pub fn check_hello(bytes: &[u8; 12]) -> Hello {
    if &bytes[..11] != MAGIC {
        Hello::Foreign
    } else if bytes[11] == VERSION {
        Hello::Ok
    } else {
        Hello::Version(bytes[11])
    }
}

/// An entry the sender offers. Paths are raw bytes until [`safe_path`]
/// accepts them, so a bad path is refused without losing the framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory to create (kept even when empty).
    Dir { path: Vec<u8>, mode: u32 },
    /// A regular file; its data follows once the receiver accepts it.
    File {
        path: Vec<u8>,
        mode: u32,
        size: u64,
        /// The sender's identity of this version of the file (inode and
        /// modification time), so a partial copy of an older version is
        /// never resumed.
        identity: u64,
    },
    /// The session is over.
    End,
}

impl Entry {
    /// The entry as bytes on the wire. Paths longer than `u16::MAX` cannot
    /// be framed; the sender checks [`MAX_PATH`] before it gets here.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        match self {
            Entry::Dir { path, mode } => {
                out.push(b'D');
                push_path(&mut out, path);
                out.extend_from_slice(&mode.to_be_bytes());
            }
            Entry::File {
                path,
                mode,
                size,
                identity,
            } => {
                out.push(b'F');
                push_path(&mut out, path);
                out.extend_from_slice(&mode.to_be_bytes());
                out.extend_from_slice(&size.to_be_bytes());
                out.extend_from_slice(&identity.to_be_bytes());
            }
            Entry::End => out.push(b'E'),
        }
        out
    }

    /// Reads the next entry. A clean end of stream before its first byte
    /// is `Ok(None)` (the sender vanished between entries).
    pub fn decode(r: &mut impl Read) -> Result<Option<Entry>, DecodeError> {
        let mut kind = [0u8; 1];
        loop {
            match r.read(&mut kind) {
                Ok(0) => return Ok(None),
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        match kind[0] {
            b'D' => {
                let path = read_path(r)?;
                let mode = read_u32(r)?;
                Ok(Some(Entry::Dir { path, mode }))
            }
            b'F' => {
                let path = read_path(r)?;
                let mode = read_u32(r)?;
                let size = read_u64(r)?;
                let identity = read_u64(r)?;
                Ok(Some(Entry::File {
                    path,
                    mode,
                    size,
                    identity,
                }))
            }
            b'E' => Ok(Some(Entry::End)),
            other => Err(DecodeError::Bad(format!(
                "unknown entry type 0x{other:02x}"
            ))),
        }
    }
}

fn push_path(out: &mut Vec<u8>, path: &[u8]) {
    let len = u16::try_from(path.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&path[..usize::from(len)]);
}

fn read_path(r: &mut impl Read) -> Result<Vec<u8>, DecodeError> {
    let len = usize::from(read_u16(r)?);
    let mut path = vec![0u8; len];
    r.read_exact(&mut path)?;
    Ok(path)
}

/// Why the receiver refused an entry; the sender may act on the code, and
/// shows the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The path is unsafe (absolute, `..`, a symlink in the way, ...).
    Unsafe,
    /// A file is already there and `--overwrite` was not given.
    Exists,
    /// The data did not hash to the sender's digest.
    Corrupt,
    /// The receiver could not write (disk full, permission denied, ...).
    Io,
    /// Another sender is transferring the same file right now.
    Busy,
    /// The transfer was abandoned (by the sender, or a short transfer).
    Aborted,
    /// The peer broke the protocol; the connection ends.
    Protocol,
    /// A code from a newer version.
    Unknown(u8),
}

impl Code {
    fn to_byte(self) -> u8 {
        match self {
            Code::Unsafe => 1,
            Code::Exists => 2,
            Code::Corrupt => 3,
            Code::Io => 4,
            Code::Busy => 5,
            Code::Aborted => 6,
            Code::Protocol => 7,
            Code::Unknown(b) => b,
        }
    }

    fn from_byte(b: u8) -> Code {
        match b {
            1 => Code::Unsafe,
            2 => Code::Exists,
            3 => Code::Corrupt,
            4 => Code::Io,
            5 => Code::Busy,
            6 => Code::Aborted,
            7 => Code::Protocol,
            b => Code::Unknown(b),
        }
    }
}

/// A refusal: a code and a sentence for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub code: Code,
    pub message: String,
}

impl Reason {
    pub fn new(code: Code, message: impl Into<String>) -> Reason {
        Reason {
            code,
            message: message.into(),
        }
    }
}

/// Everything the receiver says after the hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `'A'`: a file offer accepted; the receiver already holds `offset`
    /// bytes hashing to `prefix`.
    Accept { offset: u64, prefix: Digest },
    /// `'K'`: a directory made, or a file verified and in place.
    Ok,
    /// `'R'`: refused, or the file failed.
    Refused(Reason),
}

impl Reply {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(41);
        match self {
            Reply::Accept { offset, prefix } => {
                out.push(b'A');
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(prefix);
            }
            Reply::Ok => out.push(b'K'),
            Reply::Refused(reason) => {
                out.push(b'R');
                out.push(reason.code.to_byte());
                let mut end = reason.message.len().min(MAX_REASON);
                while !reason.message.is_char_boundary(end) {
                    end -= 1;
                }
                let text = &reason.message.as_bytes()[..end];
                out.extend_from_slice(&(text.len() as u16).to_be_bytes());
                out.extend_from_slice(text);
            }
        }
        out
    }

    pub fn decode(r: &mut impl Read) -> Result<Reply, DecodeError> {
        match read_u8(r)? {
            b'A' => {
                let offset = read_u64(r)?;
                let mut prefix = [0u8; 32];
                r.read_exact(&mut prefix)?;
                Ok(Reply::Accept { offset, prefix })
            }
            b'K' => Ok(Reply::Ok),
            b'R' => {
                let code = Code::from_byte(read_u8(r)?);
                let len = usize::from(read_u16(r)?);
                if len > MAX_REASON {
                    return Err(DecodeError::Bad(format!(
                        "a {len}-byte refusal message (limit {MAX_REASON})"
                    )));
                }
                let mut text = vec![0u8; len];
                r.read_exact(&mut text)?;
                Ok(Reply::Refused(Reason {
                    code,
                    message: crate::text::printable(&text),
                }))
            }
            other => Err(DecodeError::Bad(format!(
                "unknown reply type 0x{other:02x}"
            ))),
        }
    }
}

/// One frame of a file's data stream, as the receiver reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    /// `len` bytes of data follow.
    Chunk(usize),
    /// The data is complete; the sender's BLAKE3 of the whole file.
    End(Digest),
    /// The sender gave up on this file.
    Abort,
}

impl Data {
    /// The 4-byte header of a chunk of `len` bytes (1..=MAX_CHUNK).
    pub fn chunk_header(len: usize) -> [u8; 4] {
        debug_assert!((1..=MAX_CHUNK).contains(&len));
        (len as u32).to_be_bytes()
    }

    /// The end marker with the whole file's digest.
    pub fn end(digest: &Digest) -> [u8; 36] {
        let mut out = [0u8; 36];
        out[4..].copy_from_slice(digest);
        out
    }

    /// The abort marker.
    pub fn abort() -> [u8; 4] {
        ABORT.to_be_bytes()
    }

    /// Reads a frame header (and the digest of an end marker); a chunk's
    /// bytes are left for the caller to read.
    pub fn decode(r: &mut impl Read) -> Result<Data, DecodeError> {
        match read_u32(r)? {
            0 => {
                let mut digest = [0u8; 32];
                r.read_exact(&mut digest)?;
                Ok(Data::End(digest))
            }
            ABORT => Ok(Data::Abort),
            len if len as usize <= MAX_CHUNK => Ok(Data::Chunk(len as usize)),
            len => Err(DecodeError::Bad(format!(
                "a {len}-byte data chunk (limit {MAX_CHUNK})"
            ))),
        }
    }
}

/// Reads the sender's `start` offset.
pub fn read_start(r: &mut impl Read) -> Result<u64, DecodeError> {
    Ok(read_u64(r)?)
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The connection failed or ended mid-frame.
    #[error("{}", crate::error::cause(.0))]
    Io(#[from] io::Error),
    /// The bytes are not this protocol.
    #[error("{0}")]
    Bad(String),
}

fn read_u8(r: &mut impl Read) -> io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

fn read_u16(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

/// Checks a received path and splits it into its components. The error is
/// the sentence the sender is shown.
pub fn safe_path(path: &[u8]) -> Result<Vec<&str>, String> {
    let text = std::str::from_utf8(path).map_err(|_| "the path is not valid UTF-8".to_string())?;
    let shown = crate::text::printable(path);
    if text.is_empty() {
        return Err("the path is empty".into());
    }
    if text.len() > MAX_PATH {
        return Err(format!(
            "the path is {} bytes long (limit {MAX_PATH})",
            text.len()
        ));
    }
    if text.starts_with('/') {
        return Err(format!("'{shown}' is an absolute path"));
    }
    if text.contains('\\') {
        return Err(format!("'{shown}' contains a backslash"));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("'{shown}' contains a control character"));
    }
    let parts: Vec<&str> = text.split('/').collect();
    for part in &parts {
        match *part {
            "" => return Err(format!("'{shown}' has an empty component")),
            "." | ".." => return Err(format!("'{shown}' contains '{part}'")),
            _ => {}
        }
        if part.len() > MAX_COMPONENT {
            return Err(format!(
                "a component of '{shown}' is {} bytes long (limit {MAX_COMPONENT})",
                part.len()
            ));
        }
        if is_device_name(part) {
            return Err(format!("'{shown}' names the device '{part}'"));
        }
        if part.starts_with(PARTIAL_PREFIX) {
            return Err(format!(
                "'{shown}' uses the reserved prefix '{PARTIAL_PREFIX}'"
            ));
        }
    }
    Ok(parts)
}

/// Windows' reserved device names (with or without an extension): a file
/// called `CON` or `aux.c` cannot be opened as a file there, and a tree
/// received on a shared drive must not turn into device writes.
fn is_device_name(part: &str) -> bool {
    let stem = part.split('.').next().unwrap_or(part).trim_end();
    let upper = stem.to_ascii_uppercase();
    match upper.as_str() {
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$" => true,
        _ => {
            let bytes = upper.as_bytes();
            bytes.len() == 4
                && (upper.starts_with("COM") || upper.starts_with("LPT"))
                && bytes[3].is_ascii_digit()
        }
    }
}

/// The receiver's temporary file name for one file offer: `PREFIX` + 16
/// hex digits of the path's hash + `-` + 16 hex digits of the hash of
/// (path, size, identity). The first half lets the receiver find and
/// delete partials of older versions of the same path.
pub fn partial_name(path: &str, size: u64, identity: u64) -> String {
    let path_hash = blake3::hash(path.as_bytes());
    let mut id = blake3::Hasher::new();
    id.update(path.as_bytes());
    id.update(&[0]);
    id.update(&size.to_be_bytes());
    id.update(&identity.to_be_bytes());
    let id = id.finalize();
    format!(
        "{PARTIAL_PREFIX}{}-{}",
        &path_hash.to_hex()[..16],
        &id.to_hex()[..16]
    )
}

/// The part of [`partial_name`] shared by every version of `path`.
pub fn partial_stem(path: &str) -> String {
    format!(
        "{PARTIAL_PREFIX}{}-",
        &blake3::hash(path.as_bytes()).to_hex()[..16]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let entries = [
            Entry::Dir {
                path: "한글/빈".as_bytes().to_vec(),
                mode: 0o755,
            },
            Entry::File {
                path: b"a/b.txt".to_vec(),
                mode: 0o644,
                size: 1 << 40,
                identity: 7,
            },
            Entry::End,
        ];
        let mut wire = Vec::new();
        for e in &entries {
            wire.extend_from_slice(&e.encode());
        }
        let mut r = &wire[..];
        for e in &entries {
            assert_eq!(Entry::decode(&mut r).unwrap().as_ref(), Some(e));
        }
        assert!(Entry::decode(&mut r).unwrap().is_none());
    }

    #[test]
    fn entry_cut_short_or_unknown_is_an_error() {
        let wire = Entry::File {
            path: b"x".to_vec(),
            mode: 0,
            size: 1,
            identity: 0,
        }
        .encode();
        let mut r = &wire[..wire.len() - 1];
        assert!(matches!(Entry::decode(&mut r), Err(DecodeError::Io(_))));
        let mut r = &b"Z"[..];
        assert!(matches!(Entry::decode(&mut r), Err(DecodeError::Bad(_))));
    }

    #[test]
    fn replies_round_trip() {
        let replies = [
            Reply::Accept {
                offset: 12345,
                prefix: [9; 32],
            },
            Reply::Ok,
            Reply::Refused(Reason::new(Code::Exists, "x exists")),
            Reply::Refused(Reason::new(Code::Unknown(99), "new")),
        ];
        for reply in &replies {
            let wire = reply.encode();
            assert_eq!(&Reply::decode(&mut &wire[..]).unwrap(), reply);
        }
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        let wire = Reply::Refused(Reason::new(Code::Io, "가".repeat(1000))).encode();
        match Reply::decode(&mut &wire[..]).unwrap() {
            Reply::Refused(r) => {
                assert!(r.message.len() <= MAX_REASON);
                assert!(r.message.chars().all(|c| c == '가'));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusal_text_is_made_printable() {
        let mut wire = vec![b'R', 3, 0, 4];
        wire.extend_from_slice(b"\x1b[2J");
        match Reply::decode(&mut &wire[..]).unwrap() {
            Reply::Refused(r) => assert_eq!(r.message, "\\x1b[2J"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn data_frames() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&Data::chunk_header(5));
        wire.extend_from_slice(&Data::end(&[1; 32]));
        wire.extend_from_slice(&Data::abort());
        let mut r = &wire[..];
        assert_eq!(Data::decode(&mut r).unwrap(), Data::Chunk(5));
        assert_eq!(Data::decode(&mut r).unwrap(), Data::End([1; 32]));
        assert_eq!(Data::decode(&mut r).unwrap(), Data::Abort);
        let big = ((MAX_CHUNK + 1) as u32).to_be_bytes();
        assert!(matches!(
            Data::decode(&mut &big[..]),
            Err(DecodeError::Bad(_))
        ));
    }

    #[test]
    fn hellos() {
        assert_eq!(check_hello(&hello()), Hello::Ok);
        let mut other = hello();
        other[11] = 9;
        assert_eq!(check_hello(&other), Hello::Version(9));
        assert_eq!(check_hello(b"GET / HTTP/1"), Hello::Foreign);
    }

    #[test]
    fn safe_paths_are_split() {
        assert_eq!(safe_path(b"a").unwrap(), vec!["a"]);
        assert_eq!(
            safe_path("사진/2024/a b.jpg".as_bytes()).unwrap(),
            vec!["사진", "2024", "a b.jpg"]
        );
        assert_eq!(safe_path(b".hidden/..x").unwrap(), vec![".hidden", "..x"]);
        assert!(safe_path(b"console.txt").is_ok());
        assert!(safe_path(b"com10").is_ok());
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in [
            &b""[..],
            b"../x",
            b"/etc/x",
            b"a/../../x",
            b"a/./b",
            b"a//b",
            b"a/",
            b"..",
            b".",
            b"a\\..\\x",
            b"a\nb",
            b"\xff\xfe",
            b"CON",
            b"aux.c",
            b"dir/nul.txt",
            b"LPT1",
            b"com3.log",
            b".sockit-partial-abc",
        ] {
            assert!(
                safe_path(bad).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(safe_path(&vec![b'a'; MAX_PATH + 1]).is_err());
        assert!(safe_path(&vec![b'a'; MAX_COMPONENT + 1]).is_err());
        let long_ok: Vec<u8> = [vec![b'a'; 200], b"/".to_vec(), vec![b'b'; 200]].concat();
        assert!(safe_path(&long_ok).is_ok());
    }

    #[test]
    fn partial_names_depend_on_path_size_and_identity() {
        let a = partial_name("a", 10, 1);
        assert!(a.starts_with(&partial_stem("a")));
        assert_eq!(a, partial_name("a", 10, 1));
        assert_ne!(a, partial_name("a", 11, 1));
        assert_ne!(a, partial_name("a", 10, 2));
        assert!(!partial_name("b", 10, 1).starts_with(&partial_stem("a")));
        assert!(a.len() < MAX_COMPONENT);
    }

    proptest::proptest! {
        /// Every entry decodes to itself.
        #[test]
        fn any_entry_round_trips(
            path in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            mode in proptest::prelude::any::<u32>(),
            size in proptest::prelude::any::<u64>(),
            identity in proptest::prelude::any::<u64>(),
            kind in 0u8..3,
        ) {
            let entry = match kind {
                0 => Entry::Dir { path, mode },
                1 => Entry::File { path, mode, size, identity },
                _ => Entry::End,
            };
            let bytes = entry.encode();
            let back = Entry::decode(&mut &bytes[..]);
            proptest::prop_assert!(matches!(back, Ok(Some(ref e)) if *e == entry), "{back:?}");
        }

        /// Every reply decodes to itself (a refusal's text within its limit).
        #[test]
        fn any_reply_round_trips(
            offset in proptest::prelude::any::<u64>(),
            prefix in proptest::prelude::any::<[u8; 32]>(),
            code in 1u8..=7,
            // Printable text: a reason's control and invisible characters
            // are escaped on the way in, by design.
            message in "[a-zA-Z0-9 ,.:()'/가-힣-]{0,100}",
            kind in 0u8..3,
        ) {
            let reply = match kind {
                0 => Reply::Accept { offset, prefix },
                1 => Reply::Ok,
                _ => Reply::Refused(Reason::new(Code::from_byte(code), message)),
            };
            let bytes = reply.encode();
            let back = Reply::decode(&mut &bytes[..]);
            proptest::prop_assert!(matches!(back, Ok(ref r) if *r == reply), "{back:?}");
        }

        /// Garbage never panics, and a path read from it is no longer
        /// than the bytes it came from.
        #[test]
        fn garbage_entries_are_errors_or_fit(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Ok(Some(Entry::Dir { path, .. } | Entry::File { path, .. })) =
                Entry::decode(&mut &bytes[..])
            {
                proptest::prop_assert!(path.len() + 3 <= bytes.len());
            }
            let _ = Reply::decode(&mut &bytes[..]);
        }
    }
}
