//! A server's long-lived identity, and the ID a person checks it by.
//!
//! A `--tls` server uses one key for as long as its identity file lives
//! (made on first use, kept with mode 0600), and a self-signed
//! certificate for it. What a person compares is not the certificate but
//! an [`Id`]: a hash of the public key (BLAKE3 of the certificate's
//! SubjectPublicKeyInfo), so a certificate issued again for the same key
//! (`--cert`/`--key` from a CA, renewed) keeps the identity.
//!
//! The ID is written as Syncthing writes device IDs: the 32-byte hash in
//! base32 (52 characters), cut into four groups of 13, each followed by a
//! Luhn mod 32 check character, shown in dash-separated groups of 7 after
//! `SKT-`. A mistyped character or two swapped neighbours fail the check,
//! so a wrong `--pin` is refused as a typo, not as a different server.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// RFC 4648 base32, as Syncthing uses it.
const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A server's identity: what its clients pin and remember.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Id([u8; 32]);

impl Id {
    /// The identity of the key in `cert` (DER); an error if it is no
    /// certificate.
    pub fn of_certificate(cert: &CertificateDer<'_>) -> std::result::Result<Id, String> {
        let parsed = webpki::EndEntityCert::try_from(cert).map_err(|e| format!("{e:?}"))?;
        let spki = parsed.subject_public_key_info();
        Ok(Id(*blake3::hash(spki.as_ref()).as_bytes()))
    }
}

/// Why a text is not an ID.
#[derive(Debug, PartialEq, Eq)]
pub enum IdError {
    /// Not 56 base32 characters (after the prefix and dashes).
    Shape,
    /// A check character does not match: a typo.
    Check,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Shape => write!(f, "an identity is SKT- and 56 letters and digits 2-7"),
            IdError::Check => write!(f, "its check characters do not match: mistyped?"),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = base32(&self.0);
        let mut checked = String::with_capacity(56);
        for group in plain.as_bytes().chunks(13) {
            checked.push_str(std::str::from_utf8(group).unwrap_or_default());
            checked.push(luhn32(group) as char);
        }
        f.write_str("SKT")?;
        for group in checked.as_bytes().chunks(7) {
            write!(f, "-{}", std::str::from_utf8(group).unwrap_or_default())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({self})")
    }
}

impl FromStr for Id {
    type Err = IdError;

    /// Takes an ID as printed, in any case, with or without its prefix
    /// and dashes.
    fn from_str(text: &str) -> std::result::Result<Id, IdError> {
        let upper = text.trim().to_ascii_uppercase();
        let body = upper.strip_prefix("SKT-").unwrap_or(&upper);
        let chars: Vec<u8> = body.bytes().filter(|&b| b != b'-' && b != b' ').collect();
        if chars.len() != 56 || !chars.iter().all(|b| ALPHABET.contains(b)) {
            return Err(IdError::Shape);
        }
        let mut plain = Vec::with_capacity(52);
        for group in chars.chunks(14) {
            let (data, check) = group.split_at(13);
            if luhn32(data) != check[0] {
                return Err(IdError::Check);
            }
            plain.extend_from_slice(data);
        }
        let bytes = unbase32(&plain).ok_or(IdError::Shape)?;
        let hash: [u8; 32] = bytes.try_into().map_err(|_| IdError::Shape)?;
        // The last character carries 4 bits of padding: only one spelling
        // of each ID is accepted.
        if base32(&hash).as_bytes() != plain.as_slice() {
            return Err(IdError::Shape);
        }
        Ok(Id(hash))
    }
}

/// Base32 without padding.
fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn unbase32(chars: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(chars.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0);
    for &c in chars {
        let value = ALPHABET.iter().position(|&a| a == c)? as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

/// The Luhn mod N check character of `group` (base32 characters).
fn luhn32(group: &[u8]) -> u8 {
    let n = 32;
    let (mut factor, mut sum) = (1, 0);
    for &c in group {
        let code = ALPHABET.iter().position(|&a| a == c).unwrap_or(0) as u32;
        let addend = factor * code;
        factor = if factor == 2 { 1 } else { 2 };
        sum += addend / n + addend % n;
    }
    ALPHABET[((n - sum % n) % n) as usize]
}

/// A certificate and its private key, and the identity of that key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub id: Id,
}

impl Identity {
    /// The identity kept in `path`, made there first if there is none.
    /// Returns it and whether it was just made.
    pub fn load_or_create(path: &Path) -> Result<(Identity, bool)> {
        match fs::symlink_metadata(path) {
            Ok(_) => Identity::load(path).map(|identity| (identity, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Identity::create(path).map(|identity| (identity, true))
            }
            Err(e) => Err(Error::Io {
                what: format!("cannot read identity {}", path.display()),
                source: e,
            }),
        }
    }

    /// The identity kept in `path`: refused if anyone but its owner may
    /// read it (the key in it is the server's identity).
    pub fn load(path: &Path) -> Result<Identity> {
        let shown = path.display();
        let meta = fs::metadata(path).map_err(|e| Error::Io {
            what: format!("cannot read identity {shown}"),
            source: e,
        })?;
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::Input {
                what: format!("identity {shown} can be read by others (mode {mode:04o})"),
                why: format!("run: chmod 600 {shown}"),
            });
        }
        let pem = fs::read(path).map_err(|e| Error::Io {
            what: format!("cannot read identity {shown}"),
            source: e,
        })?;
        Identity::from_pem(&pem, &pem).map_err(|why| Error::Input {
            what: format!("identity {shown} is not usable"),
            why,
        })
    }

    /// `--cert FILE --key FILE`: a certificate (chain) from elsewhere.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Identity> {
        let read = |path: &Path| {
            fs::read(path).map_err(|e| Error::Io {
                what: format!("cannot read {}", path.display()),
                source: e,
            })
        };
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        Identity::from_pem(&cert_pem, &key_pem).map_err(|why| Error::Input {
            what: format!(
                "cannot use certificate {} with key {}",
                cert.display(),
                key.display()
            ),
            why,
        })
    }

    fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> std::result::Result<Identity, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| format!("bad PEM: {e}"))?;
        let Some(first) = chain.first() else {
            return Err("no certificate in it".into());
        };
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => "no private key in it".to_string(),
            e => format!("bad private key: {e}"),
        })?;
        let id = Id::of_certificate(first).map_err(|e| format!("bad certificate: {e}"))?;
        // The key must be the certificate's: a server that cannot sign
        // for its certificate fails every handshake.
        let signer = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| format!("unsupported private key: {e}"))?;
        let certified = rustls::sign::CertifiedKey::new(chain.clone(), signer);
        certified
            .keys_match()
            .map_err(|_| "the private key is not the certificate's".to_string())?;
        Ok(Identity { chain, key, id })
    }

    /// Makes a new key and self-signed certificate and keeps them in
    /// `path` (mode 0600, its directory made 0700 if missing).
    fn create(path: &Path) -> Result<Identity> {
        let shown = path.display();
        let failed = |why: String| Error::Input {
            what: format!("cannot make identity {shown}"),
            why,
        };
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| failed(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(vec!["sockit".to_string()])
            .map_err(|e| failed(e.to_string()))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sockit");
        let cert = params
            .self_signed(&key)
            .map_err(|e| failed(e.to_string()))?;
        let pem = format!("{}{}", key.serialize_pem(), cert.pem());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::Io {
                    what: format!("cannot make directory {}", dir.display()),
                    source: e,
                })?;
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::Io {
                what: format!("cannot write identity {shown}"),
                source: e,
            })?;
        file.write_all(pem.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::Io {
                what: format!("cannot write identity {shown}"),
                source: e,
            })?;
        Identity::from_pem(pem.as_bytes(), pem.as_bytes()).map_err(failed)
    }
}

/// Where the identity is kept unless `--identity` says otherwise:
/// `$XDG_DATA_HOME/sockit/identity.pem`, else
/// `~/.local/share/sockit/identity.pem`.
pub fn default_path() -> Result<PathBuf> {
    data_home()
        .map(|dir| dir.join("sockit").join("identity.pem"))
        .ok_or_else(|| Error::Input {
            what: "cannot find a place for the identity".into(),
            why: "neither XDG_DATA_HOME nor HOME is set; give --identity FILE".into(),
        })
}

fn data_home() -> Option<PathBuf> {
    let from_env = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    from_env("XDG_DATA_HOME").or_else(|| from_env("HOME").map(|h| h.join(".local/share")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_and_parse_with_their_checks() {
        let id = Id(*blake3::hash(b"some key").as_bytes());
        let text = id.to_string();
        assert!(text.starts_with("SKT-"), "{text}");
        let groups: Vec<&str> = text.split('-').collect();
        assert_eq!(groups.len(), 9, "{text}");
        assert!(groups[1..].iter().all(|g| g.len() == 7), "{text}");
        assert_eq!(text.parse::<Id>(), Ok(id));
        assert_eq!(text.to_lowercase().parse::<Id>(), Ok(id));
        assert_eq!(text.replace('-', "")[3..].parse::<Id>(), Ok(id));
        // One character changed anywhere is caught.
        for at in 4..text.len() {
            let mut bytes = text.clone().into_bytes();
            if bytes[at] == b'-' {
                continue;
            }
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            let typo = String::from_utf8(bytes).unwrap();
            assert!(typo.parse::<Id>().is_err(), "{typo} was taken");
        }
        assert_eq!("SKT-ABC".parse::<Id>(), Err(IdError::Shape));
    }

    #[test]
    fn base32_round_trips() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = base32(&bytes);
            assert_eq!(unbase32(text.as_bytes()).unwrap()[..len], bytes[..]);
        }
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    }
}
