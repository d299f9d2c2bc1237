//! Where a received entry may go inside DIR. [`protocol::safe_path`] has
//! already refused absolute paths, `..` and the like; here every directory
//! on the way is checked with `lstat` (and created where missing), and a
//! symlink or special file is refused, never followed. (A local user who
//! can swap a directory for a symlink in DIR between our check and our use
//! could still race us; DIR is assumed to belong to the receiving user.)

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::protocol::{self, Code, Reason, partial_name};
use super::receive::{Config, Offer, io_reason};

/// Where a checked file offer will go.
pub(super) struct Target {
    /// Final path.
    pub(super) dest: PathBuf,
    /// Temporary path in DIR.
    pub(super) partial: PathBuf,
    /// The temporary file's name, as claimed in the busy set while the
    /// transfer runs.
    pub(super) partial_name: String,
    /// The path as the user should read it.
    pub(super) shown: String,
}

/// Creates a received directory (and its parents) and applies its mode
/// (always keeping it writable and searchable for us).
pub(super) fn make_dir(config: &Config, path: &[u8], mode: u32) -> Result<String, Reason> {
    let parts = protocol::safe_path(path).map_err(|m| Reason::new(Code::Unsafe, m))?;
    let shown = crate::text::printable(path);
    let dir = make_parents(&config.dir, &parts)?;
    let _ = fs::set_permissions(&dir, fs::Permissions::from_mode((mode & 0o777) | 0o700));
    Ok(shown)
}

/// Checks an offer and works out its target; refusals go to the sender.
pub(super) fn check_offer(config: &Config, offer: &Offer) -> Result<Target, Reason> {
    let parts = protocol::safe_path(&offer.path).map_err(|m| Reason::new(Code::Unsafe, m))?;
    let shown = crate::text::printable(&offer.path);
    let (name, parents) = parts
        .split_last()
        .ok_or_else(|| Reason::new(Code::Unsafe, "empty"))?;
    let parent = make_parents(&config.dir, parents)?;
    let dest = parent.join(name);
    match fs::symlink_metadata(&dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_reason("cannot check it", &e)),
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(Reason::new(
                Code::Unsafe,
                "it is a symlink on the receiver, which is never replaced",
            ));
        }
        Ok(meta) if meta.is_dir() => {
            return Err(Reason::new(
                Code::Unsafe,
                "it is a directory on the receiver",
            ));
        }
        Ok(meta) if !meta.is_file() => {
            return Err(Reason::new(
                Code::Unsafe,
                "it is a device or other special file on the receiver",
            ));
        }
        Ok(_) if !config.overwrite => {
            return Err(Reason::new(
                Code::Exists,
                "it already exists on the receiver (started without --overwrite)",
            ));
        }
        Ok(_) => {}
    }
    let rel = parts.join("/");
    let partial_name = partial_name(&rel, offer.size, offer.identity);
    Ok(Target {
        dest,
        partial: config.dir.join(&partial_name),
        partial_name,
        shown,
    })
}

/// The directory `parts` leads to under `root`, created where missing.
/// Every existing component is checked with `lstat`: a symlink or a
/// non-directory in the way is refused, never followed.
fn make_parents(root: &Path, parts: &[&str]) -> Result<PathBuf, Reason> {
    let mut at = root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let here = || crate::text::printable(parts[..=i].join("/").as_bytes());
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(Reason::new(
                    Code::Unsafe,
                    format!(
                        "'{}' is a symlink on the receiver; it is never followed",
                        here()
                    ),
                ));
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(Reason::new(
                    Code::Unsafe,
                    format!("'{}' is a file on the receiver, not a directory", here()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Err(e) = fs::create_dir(&at)
                    && e.kind() != io::ErrorKind::AlreadyExists
                {
                    return Err(io_reason(
                        &format!("cannot create directory '{}'", here()),
                        &e,
                    ));
                }
                // Created by us, or by a racing session: check it again.
                match fs::symlink_metadata(&at) {
                    Ok(meta) if meta.is_dir() => {}
                    _ => {
                        return Err(Reason::new(
                            Code::Unsafe,
                            format!("'{}' changed on the receiver while it was checked", here()),
                        ));
                    }
                }
            }
            Err(e) => return Err(io_reason(&format!("cannot check '{}'", here()), &e)),
        }
    }
    Ok(at)
}
