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
/// (always keeping it writable and searchable for us). Directories it
/// creates are added to `created`.
pub(super) fn make_dir(
    config: &Config,
    path: &[u8],
    mode: u32,
    created: &mut Vec<PathBuf>,
) -> Result<String, Reason> {
    let parts = protocol::safe_path(path).map_err(|m| Reason::new(Code::Unsafe, m))?;
    let shown = crate::text::printable(path);
    let dir = make_parents(&config.dir, &parts, created)?;
    let _ = fs::set_permissions(&dir, fs::Permissions::from_mode((mode & 0o777) | 0o700));
    Ok(shown)
}

/// Checks an offer and works out its target; refusals go to the sender.
/// Directories it creates on the way are added to `created`.
pub(super) fn check_offer(
    config: &Config,
    offer: &Offer,
    created: &mut Vec<PathBuf>,
) -> Result<Target, Reason> {
    let parts = protocol::safe_path(&offer.path).map_err(|m| Reason::new(Code::Unsafe, m))?;
    let shown = crate::text::printable(&offer.path);
    let (name, parents) = parts
        .split_last()
        .ok_or_else(|| Reason::new(Code::Unsafe, "empty"))?;
    let rel = parts.join("/");
    let partial_name = partial_name(&rel, offer.size, offer.identity);
    let partial = config.dir.join(&partial_name);
    check_space(&config.dir, &partial, offer.size)?;
    let parent = make_parents(&config.dir, parents, created)?;
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
    Ok(Target {
        dest,
        partial,
        partial_name,
        shown,
    })
}

/// Refuses an offer that cannot fit, before anything is created for it:
/// what a kept partial already holds of it counts as received. Space that
/// runs out later (another writer, a race between two offers) is still
/// the write's own `no space left on device`. If the free space cannot be
/// read, the offer goes ahead and the write decides.
fn check_space(dir: &Path, partial: &Path, size: u64) -> Result<(), Reason> {
    let held = fs::metadata(partial).map_or(0, |m| m.len());
    let needed = size.saturating_sub(held);
    let Ok(stat) = nix::sys::statvfs::statvfs(dir) else {
        return Ok(());
    };
    // Both are 32-bit on some targets (a 32-bit Raspberry Pi OS).
    #[allow(clippy::useless_conversion)]
    let free = u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size()));
    if needed <= free {
        return Ok(());
    }
    Err(Reason::new(
        Code::Io,
        format!(
            "not enough space on the receiver: {} offered, {} free",
            decimal_size(needed),
            decimal_size(free)
        ),
    ))
}

/// A byte count as people read disk sizes: `78 GB`, `1.0 TB` (powers of
/// 1000, as `df -H` and disk labels; two digits where one would say little).
pub(super) fn decimal_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.5 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if value < 9.95 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// The directory `parts` leads to under `root`, created where missing
/// (each one created is added to `created`, parents first). Every existing
/// component is checked with `lstat`: a symlink or a non-directory in the
/// way is refused, never followed.
fn make_parents(
    root: &Path,
    parts: &[&str],
    created: &mut Vec<PathBuf>,
) -> Result<PathBuf, Reason> {
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
                match fs::create_dir(&at) {
                    Ok(()) => created.push(at.clone()),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        return Err(io_reason(
                            &format!("cannot create directory '{}'", here()),
                            &e,
                        ));
                    }
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

/// Removes the directories in `created` (parents listed before their
/// children) that are still empty, deepest first: what an abandoned
/// transfer made and never filled. A directory holding anything, or one
/// that was there before, is never touched (`rmdir` removes only empty
/// directories).
pub(super) fn remove_empty(created: &[PathBuf]) -> usize {
    created
        .iter()
        .rev()
        .filter(|dir| fs::remove_dir(dir).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::decimal_size;

    #[test]
    fn sizes_read_as_disk_sizes() {
        assert_eq!(decimal_size(0), "0 B");
        assert_eq!(decimal_size(999), "999 B");
        assert_eq!(decimal_size(1000), "1.0 kB");
        assert_eq!(decimal_size(52_428_800), "52 MB");
        assert_eq!(decimal_size(78_000_000_000), "78 GB");
        assert_eq!(decimal_size(1_000_000_000_000), "1.0 TB");
        assert_eq!(decimal_size(999_999_999), "1.0 GB");
        assert_eq!(decimal_size(u64::MAX), "18 EB");
    }
}
