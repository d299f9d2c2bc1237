//! Identities (`sockit id`, `--identity`): made once, kept private,
//! printed with check characters, refused when unsafe or broken.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;

/// A fresh, empty directory of this test's own.
fn scratch(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sockit-tls-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// An ID as `sockit id` prints it: SKT- and eight groups of 7.
fn is_id(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 9
        && groups[0] == "SKT"
        && groups[1..].iter().all(|g| {
            g.len() == 7
                && g.bytes()
                    .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        })
}

#[test]
fn an_identity_is_made_once_kept_private_and_printed_the_same_after() {
    let dir = scratch("made");
    let file = dir.join("sub/identity.pem");
    let file_arg = file.to_str().expect("utf-8 path");
    let out = sockit(&["id", "--identity", file_arg]);
    assert_ok(&out);
    let id = stdout(&out).trim().to_string();
    assert!(is_id(&id), "{id:?}");
    assert_eq!(
        stderr(&out).trim(),
        format!("sockit: made a new identity in {file_arg}")
    );
    let mode = std::fs::metadata(&file)
        .expect("identity file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    // The second time it is read, not made: the same ID, nothing said.
    let again = sockit(&["id", "--identity", file_arg]);
    assert_ok(&again);
    assert_eq!(stdout(&again).trim(), id);
    assert_eq!(stderr(&again), "");
    // openssl reads what we wrote: a key and its certificate.
    let text = std::fs::read_to_string(&file).expect("read identity");
    assert!(text.contains("BEGIN PRIVATE KEY") && text.contains("BEGIN CERTIFICATE"));
    // The default place follows XDG_DATA_HOME.
    let data = dir.join("data");
    let out = Command::new(sockit_bin())
        .arg("id")
        .env("XDG_DATA_HOME", &data)
        .output()
        .expect("run sockit id");
    assert_ok(&out);
    assert!(data.join("sockit/identity.pem").is_file());
    assert_ne!(stdout(&out).trim(), id, "a new key, a new identity");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_identity_others_can_read_or_that_is_broken_is_refused() {
    let dir = scratch("refused");
    let file = dir.join("identity.pem");
    let file_arg = file.to_str().expect("utf-8 path");
    assert_ok(&sockit(&["id", "--identity", file_arg]));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = assert_error(
        &sockit(&["id", "--identity", file_arg]),
        1,
        "sockit: error: ",
    );
    assert_eq!(
        err.trim_end(),
        format!(
            "sockit: error: identity {file_arg} can be read by others (mode 0644) (run: chmod 600 {file_arg})"
        )
    );
    for (bad, why) in [
        ("not a pem file\n", "no certificate in it"),
        ("", "no certificate in it"),
    ] {
        std::fs::write(&file, bad).expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = assert_error(
            &sockit(&["id", "--identity", file_arg]),
            1,
            "sockit: error: ",
        );
        assert_eq!(
            err.trim_end(),
            format!("sockit: error: identity {file_arg} is not usable ({why})")
        );
    }
    // A key that is not the certificate's.
    let other = dir.join("other.pem");
    let other_arg = other.to_str().expect("utf-8 path");
    assert_ok(&sockit(&["id", "--identity", other_arg]));
    let mine = dir.join("mine.pem");
    assert_ok(&sockit(&[
        "id",
        "--identity",
        mine.to_str().expect("utf-8"),
    ]));
    let key_of = |text: &str| {
        let end = text.find("-----END PRIVATE KEY-----").expect("a key") + 26;
        text[..end].to_string()
    };
    let cert_of =
        |text: &str| text[text.find("-----BEGIN CERTIFICATE").expect("a cert")..].to_string();
    let other_text = std::fs::read_to_string(&other).expect("read");
    let mine_text = std::fs::read_to_string(&mine).expect("read");
    std::fs::write(
        &file,
        format!("{}{}", key_of(&other_text), cert_of(&mine_text)),
    )
    .expect("write");
    let err = assert_error(
        &sockit(&["id", "--identity", file_arg]),
        1,
        "sockit: error: ",
    );
    assert!(
        err.contains("the private key is not the certificate's"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
