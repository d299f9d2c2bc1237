//! How a `--tls` client decides that it reached the server it meant.
//!
//! In this order: `--pin ID` (the server's identity must be exactly that);
//! `--ca FILE` (ordinary certificate and host-name verification against
//! those roots); otherwise trust on first use, with a known-hosts file as
//! ssh keeps one: a server never seen is trusted and said so on stderr, a
//! server whose identity *changed* is refused, naming both identities and
//! the line to delete. Nothing is ever "connected anyway" in silence.
//!
//! Identities are checked on the key (see `crate::identity`): for a pin
//! or a known host, any certificate is taken in the handshake (rustls
//! still checks that the server signed the handshake with its key), and
//! the key's ID is compared right after, before a byte of the service is
//! sent.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::error::{Error, Result};
use crate::identity::Id;

/// What a client trusts.
#[derive(Debug, Clone)]
pub enum Trust {
    Pin(Id),
    Ca(PathBuf),
    /// Trust on first use, remembered in this file.
    KnownHosts(PathBuf),
}

/// Where trust on first use is kept unless `--known-hosts` says
/// otherwise: `$XDG_CONFIG_HOME/sockit/known_hosts`, else
/// `~/.config/sockit/known_hosts`.
pub fn default_known_hosts() -> Result<PathBuf> {
    let from_env = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    from_env("XDG_CONFIG_HOME")
        .or_else(|| from_env("HOME").map(|h| h.join(".config")))
        .map(|dir| dir.join("sockit").join("known_hosts"))
        .ok_or_else(|| Error::Input {
            what: "cannot find a place for known hosts".into(),
            why: "neither XDG_CONFIG_HOME nor HOME is set; give --known-hosts FILE or --pin ID"
                .into(),
        })
}

/// The client side of TLS as `trust` says.
pub fn client_config(trust: &Trust) -> Result<Arc<rustls::ClientConfig>> {
    let provider = crate::transport::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Input {
            what: "cannot set up TLS".into(),
            why: e.to_string(),
        })?;
    let config = match trust {
        Trust::Ca(file) => {
            let mut roots = rustls::RootCertStore::empty();
            let shown = file.display();
            let pem = fs::read(file).map_err(|e| Error::Io {
                what: format!("cannot read {shown}"),
                source: e,
            })?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| Error::Input {
                    what: format!("cannot use --ca {shown}"),
                    why: e.to_string(),
                })?;
                roots.add(cert).map_err(|e| Error::Input {
                    what: format!("cannot use --ca {shown}"),
                    why: e.to_string(),
                })?;
            }
            if roots.is_empty() {
                return Err(Error::Input {
                    what: format!("cannot use --ca {shown}"),
                    why: "no certificate in it".into(),
                });
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Pin(_) | Trust::KnownHosts(_) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(KeyOnly(provider)))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Checks the identity of `peer` (`HOST:PORT`), whose certificate is
/// `cert`, after the handshake. `Ok` to go on.
pub fn check(trust: &Trust, peer: &str, cert: Option<&CertificateDer<'_>>) -> Result<()> {
    let id = match cert.map(Id::of_certificate) {
        Some(Ok(id)) => id,
        Some(Err(why)) => {
            return Err(Error::Input {
                what: format!("server {peer} sent a certificate that cannot be read"),
                why,
            });
        }
        None => {
            return Err(Error::Input {
                what: format!("server {peer} sent no certificate"),
                why: "cannot check its identity".into(),
            });
        }
    };
    match trust {
        // Checked in the handshake.
        Trust::Ca(_) => Ok(()),
        Trust::Pin(pin) if *pin == id => Ok(()),
        Trust::Pin(pin) => Err(Error::Input {
            what: format!("server {peer} is not the one pinned"),
            why: format!("it has identity {id}; --pin says {pin}"),
        }),
        Trust::KnownHosts(file) => known_host(file, peer, id),
    }
}

/// Trust on first use: `peer` known as `id`, or new (remembered and said).
fn known_host(file: &Path, peer: &str, id: Id) -> Result<()> {
    let shown = file.display();
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(Error::Io {
                what: format!("cannot read known hosts {shown}"),
                source: e,
            });
        }
    };
    for (n, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        let (Some(host), Some(known)) = (words.next(), words.next()) else {
            continue;
        };
        if host != peer || line.trim_start().starts_with('#') {
            continue;
        }
        return match known.parse::<Id>() {
            Ok(known) if known == id => Ok(()),
            Ok(known) => Err(Error::Input {
                what: format!("the identity of {peer} has changed: it was {known}, it is now {id}"),
                why: format!(
                    "someone may be in between; if the server's key was replaced on purpose, \
                     delete line {} of {shown}",
                    n + 1
                ),
            }),
            Err(e) => Err(Error::Input {
                what: format!("line {} of {shown} is not an identity", n + 1),
                why: e.to_string(),
            }),
        };
    }
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| Error::Io {
            what: format!("cannot make directory {}", dir.display()),
            source: e,
        })?;
    }
    let mut out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|e| Error::Io {
            what: format!("cannot write known hosts {shown}"),
            source: e,
        })?;
    writeln!(out, "{peer} {id}").map_err(|e| Error::Io {
        what: format!("cannot write known hosts {shown}"),
        source: e,
    })?;
    eprintln!("sockit: trusting new identity {id} for {peer} (remembered in {shown})");
    Ok(())
}

/// Takes any certificate whose key signed the handshake: the key's
/// identity is what [`check`] then compares.
#[derive(Debug)]
struct KeyOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for KeyOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
