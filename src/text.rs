//! Making untrusted bytes safe to show on a terminal.
//!
//! Peers send whatever they like. Before their bytes reach a terminal we
//! decode them as UTF-8 (invalid sequences become U+FFFD, so Korean and
//! every other script stay readable, unlike ncat's octal escapes) and
//! escape the characters that can move the cursor, recolour the screen or
//! reorder text: C0/C1 controls (except tab and newline), bidi overrides
//! and isolates, and zero-width characters that hide text.

/// Returns `bytes` as printable text: lossy UTF-8 with dangerous characters
/// escaped as `\x1b` or `\u{202e}`.
pub fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if !text.chars().any(needs_escape) {
        return text.into_owned();
    }
    let mut out = Vec::with_capacity(text.len() + 16);
    push_printable(&mut out, &text);
    // Only whole characters and ASCII escapes were pushed.
    String::from_utf8(out).unwrap_or_default()
}

/// Returns `bytes` as printable text with nothing hidden: like
/// [`printable`], but bytes that are not UTF-8 are shown as `\xff` instead
/// of U+FFFD, for a datagram whose exact bytes matter (`broadcast listen`).
/// A backslash is doubled, so `\x41` sent as text cannot pass for a byte,
/// and a newline is shown as `\n`, so one datagram stays one line.
pub fn escaped(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        if valid.contains(['\\', '\n']) {
            let plain = valid.replace('\\', "\\\\").replace('\n', "\\n");
            push_printable(&mut out, &plain);
        } else {
            push_printable(&mut out, valid);
        }
        for b in chunk.invalid() {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
    }
    // Only whole characters and ASCII escapes were pushed.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends `text` to `out` with dangerous characters escaped, without an
/// intermediate `String`: the chat relay formats every line this way.
/// Printable ASCII (the common case) is copied in one go.
pub fn push_printable(out: &mut Vec<u8>, text: &str) {
    if text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    for c in text.chars() {
        if needs_escape(c) {
            let code = c as u32;
            let escaped = if code < 0x100 {
                format!("\\x{code:02x}")
            } else {
                format!("\\u{{{code:x}}}")
            };
            out.extend_from_slice(escaped.as_bytes());
        } else {
            let mut utf8 = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        }
    }
}

fn needs_escape(c: char) -> bool {
    match c {
        '\t' | '\n' => false,
        c if c.is_control() => true,
        // bidi embeddings/overrides, isolates, marks
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' => true,
        // zero-width space/joiners, word joiner, BOM
        '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}' => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::{escaped, printable};

    #[test]
    fn escaped_shows_every_byte() {
        assert_eq!(escaped("안녕".as_bytes()), "안녕");
        assert_eq!(escaped(b"ok\xffok"), "ok\\xffok");
        assert_eq!(escaped(b"a\\x41\x1b"), "a\\\\x41\\x1b");
        assert_eq!(escaped(b"\xe4\xb8"), "\\xe4\\xb8");
        assert_eq!(escaped(b"two\nlines\t"), "two\\nlines\t");
    }

    #[test]
    fn korean_is_kept_and_controls_escaped() {
        assert_eq!(printable("안녕 hello".as_bytes()), "안녕 hello");
        assert_eq!(printable(b"a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(printable("x\u{202e}y".as_bytes()), "x\\u{202e}y");
        assert_eq!(printable(b"ok\xffok"), "ok\u{fffd}ok");
        assert_eq!(printable(b"tab\tnl\n"), "tab\tnl\n");
    }
}
