//! Puts the commit sockit was built from into `--version` (as
//! `SOCKIT_VERSION`), where git and a checkout are there: a bug report
//! then says exactly which code it was. A build from a source tarball
//! says the package version alone.

use std::path::Path;
use std::process::Command;

fn main() {
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rerun-if-changed=build.rs");
    let full = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) => {
            // Rebuild the string when HEAD moves: HEAD itself (a checkout)
            // and the branch it points at (a commit). Paths that do not
            // exist are left out: cargo would rerun this on every build.
            for name in ["HEAD", "packed-refs"] {
                watch(git(&["rev-parse", "--git-path", name]));
            }
            if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                watch(git(&["rev-parse", "--git-path", &branch]));
            }
            format!("{version} (git {commit})")
        }
        None => version,
    };
    println!("cargo:rustc-env=SOCKIT_VERSION={full}");
}

/// `git ARGS` in the package directory, its first line if it succeeded.
fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let line = text.lines().next()?.trim().to_string();
    (out.status.success() && !line.is_empty()).then_some(line)
}

fn watch(path: Option<String>) {
    let Some(path) = path else { return };
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let path = Path::new(&dir).join(path);
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
