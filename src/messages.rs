//! Where a client's messages come from: its arguments, or else stdin lines.
//!
//! Both `echo send` and `json send` take messages either as arguments or,
//! when none are given, one per line of standard input (read as it arrives,
//! so a client can be driven interactively or from a pipe). Lines are bytes,
//! not `String`s: invalid UTF-8 on stdin is the user's data, not our error.

use std::collections::VecDeque;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Stdin};

use crate::error::{Error, Result};

/// Longest stdin line accepted; a longer one is an error rather than an
/// unbounded allocation.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// A source of messages, each without its line terminator.
pub enum Messages {
    /// The command-line arguments, in order.
    Args(VecDeque<Vec<u8>>),
    /// Standard input, one message per line (`\n` or `\r\n`).
    Stdin {
        reader: BufReader<Stdin>,
        line: usize,
    },
}

impl Messages {
    /// Arguments if there are any, standard input otherwise.
    pub fn from_args_or_stdin(args: Vec<String>) -> Self {
        if args.is_empty() {
            Messages::Stdin {
                reader: BufReader::new(tokio::io::stdin()),
                line: 0,
            }
        } else {
            Messages::Args(args.into_iter().map(String::into_bytes).collect())
        }
    }

    /// The next message, or `None` when there are no more.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>> {
        match self {
            Messages::Args(args) => Ok(args.pop_front()),
            Messages::Stdin { reader, line } => {
                let mut buf = Vec::new();
                // `take` bounds the line; one byte over the limit tells us
                // the line was longer than allowed.
                let mut limited = (&mut *reader).take(MAX_LINE as u64 + 1);
                let n = limited
                    .read_until(b'\n', &mut buf)
                    .await
                    .map_err(|e| Error::io("cannot read standard input", e))?;
                if n == 0 {
                    return Ok(None);
                }
                *line += 1;
                if buf.len() > MAX_LINE {
                    return Err(Error::Input {
                        what: format!("stdin line {line} is too long"),
                        why: format!("more than {MAX_LINE} bytes"),
                    });
                }
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                }
                Ok(Some(buf))
            }
        }
    }
}
