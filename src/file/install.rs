//! Temporary files and their installation. A file is received into a
//! temporary name in DIR ([`protocol::partial_name`](super::protocol::partial_name)),
//! created owner-only and resumed from what an earlier transfer left there;
//! only once verified does it get its mode and final name, durably (fsync,
//! an atomic link or rename into place, fsync of the directory), so a file
//! under its final name is always complete. Without `--overwrite` nothing
//! already there is ever replaced.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::paths::Target;
use super::protocol::{Code, PARTIAL_PREFIX, Reason};
use super::receive::{Config, io_reason};

/// Temporary files are created owner-only; the sender's mode is applied
/// just before the file gets its final name.
const PARTIAL_MODE: u32 = 0o600;

/// Stale partials of older versions of a path are looked for (a scan of
/// DIR) only when a new partial of at least this size is started: small
/// ones are not worth a directory scan per file.
pub(super) const STALE_SCAN_MIN: u64 = 1 << 20;

/// Temporary names in use: two senders of the same file at once would
/// otherwise write into one temporary file.
#[derive(Default)]
pub(super) struct Busy(Mutex<HashSet<String>>);

impl Busy {
    /// Claims a temporary name for as long as the guard lives; None if
    /// another session holds it.
    pub(super) fn claim(&self, name: &str) -> Option<BusyGuard<'_>> {
        let mut busy = self.0.lock().ok()?;
        if !busy.insert(name.to_string()) {
            return None;
        }
        Some(BusyGuard {
            busy: self,
            name: name.to_string(),
        })
    }
}

/// Releases a temporary name from [`Busy`] when the transfer ends.
pub(super) struct BusyGuard<'a> {
    busy: &'a Busy,
    name: String,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut busy) = self.busy.0.lock() {
            busy.remove(&self.name);
        }
    }
}

/// Removes temporary files in `dir` of older versions of the same path
/// (another size or identity), which can never be resumed now.
pub(super) fn remove_stale(dir: &Path, busy: &Busy, rel_stem: &str, keep: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(rel_stem) && name != keep {
            // Skip ones another session is writing right now.
            if let Some(_guard) = busy.claim(name) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// What a sweep of kept partial files removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Swept {
    pub(super) files: usize,
    pub(super) bytes: u64,
}

/// Removes the partial files kept in `dir` for resuming that nobody is
/// writing: first those untouched for longer than `max_age` (a resume
/// after that is unlikely), then the oldest others until the rest take at
/// most `max_total` bytes. Abandoned offers would otherwise fill the disk
/// a little more with each one.
pub(super) fn sweep_partials(dir: &Path, busy: &Busy, max_age: Duration, max_total: u64) -> Swept {
    let Ok(entries) = fs::read_dir(dir) else {
        return Swept::default();
    };
    let mut kept: Vec<(SystemTime, u64, String)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let meta = entry.path().symlink_metadata().ok()?;
            (name.starts_with(PARTIAL_PREFIX) && meta.is_file())
                .then(|| (meta.modified().unwrap_or(UNIX_EPOCH), meta.len(), name))
        })
        .collect();
    kept.sort();
    let now = SystemTime::now();
    let mut total: u64 = kept.iter().map(|(_, len, _)| len).sum();
    let mut swept = Swept::default();
    for (modified, len, name) in &kept {
        let old = now.duration_since(*modified).unwrap_or_default() > max_age;
        if !old && total <= max_total {
            continue;
        }
        // Skip one another session is writing right now.
        if let Some(_guard) = busy.claim(name)
            && fs::remove_file(dir.join(name)).is_ok()
        {
            total -= len;
            swept.files += 1;
            swept.bytes += len;
        }
    }
    swept
}

/// The temporary file, opened for resuming: its length and the BLAKE3
/// state over that prefix.
pub(super) fn open_partial(target: &Target, size: u64) -> io::Result<(File, u64, blake3::Hasher)> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(PARTIAL_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&target.partial)?;
    let held = file.metadata()?.len();
    let mut hasher = blake3::Hasher::new();
    if held > size {
        file.set_len(0)?;
        return Ok((file, 0, hasher));
    }
    if held > 0 {
        let mut buf = vec![0u8; 1 << 20];
        let mut left = held;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            file.read_exact(&mut buf[..want])?;
            hasher.update(&buf[..want]);
            left -= want as u64;
        }
    }
    Ok((file, held, hasher))
}

/// Positions the temporary file (which holds `held` bytes) where the
/// sender starts: after what it holds, or emptied for a start from 0.
pub(super) fn seek_partial(file: &mut File, held: u64, start: u64) -> io::Result<()> {
    let positioned = if start == held {
        Ok(())
    } else {
        file.set_len(0)
    };
    positioned.and_then(|()| file.seek(SeekFrom::Start(start)).map(|_| ()))
}

/// Gives a verified temporary file its mode and final name, durably:
/// fsync the file, link (or rename, with `--overwrite`) it into place,
/// fsync the directory. Without `--overwrite` the link fails if a file
/// appeared under the final name meanwhile, so nothing is ever replaced.
pub(super) fn install(
    config: &Config,
    target: &Target,
    file: File,
    mode: u32,
) -> Result<(), Reason> {
    let fail = |what: &str, e: &io::Error| {
        let _ = fs::remove_file(&target.partial);
        io_reason(&format!("{what} it"), e)
    };
    file.set_permissions(fs::Permissions::from_mode(mode & 0o777))
        .map_err(|e| fail("cannot set the mode of", &e))?;
    file.sync_all().map_err(|e| fail("cannot sync", &e))?;
    drop(file);
    if config.overwrite {
        fs::rename(&target.partial, &target.dest).map_err(|e| fail("cannot rename", &e))?;
    } else {
        match fs::hard_link(&target.partial, &target.dest) {
            Ok(()) => {
                let _ = fs::remove_file(&target.partial);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let _ = fs::remove_file(&target.partial);
                return Err(Reason::new(
                    Code::Exists,
                    "a file of that name appeared on the receiver during the transfer",
                ));
            }
            // No hard links on this file system (FAT, some FUSE mounts):
            // check, then rename. A file created in between would be
            // replaced; on such file systems that narrow race is the price.
            Err(_) if fs::symlink_metadata(&target.dest).is_err() => {
                fs::rename(&target.partial, &target.dest).map_err(|e| fail("cannot rename", &e))?;
            }
            Err(e) => return Err(fail("cannot link into place", &e)),
        }
    }
    if let Some(parent) = target.dest.parent()
        && let Ok(dir) = File::open(parent)
    {
        let _ = dir.sync_all();
    }
    if target.dest.parent() != Some(config.dir.as_path())
        && let Ok(dir) = File::open(&config.dir)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}
