//! TLS for every HTTP endpoint, with rustls on the ring provider.
//!
//! The certificate comes from PEM files (`--tls-cert`, `--tls-key`), read again on
//! SIGHUP so a renewed certificate is picked up without a restart (a reload that fails
//! keeps the old one and says why), or is generated at start (`--tls-self-signed`, for
//! trying it out: clients must trust it by its printed SHA-256 fingerprint).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use runnel_common::tls;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Where the server's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM files: the certificate chain and its private key.
    Files {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// Private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
    /// A certificate for `localhost`, `127.0.0.1` and `::1`, generated at start.
    SelfSigned,
}

/// The server's TLS settings, swapped whole on reload.
#[derive(Debug)]
pub struct Tls {
    source: TlsSource,
    current: RwLock<(Arc<ServerConfig>, String)>,
}

impl Tls {
    /// Loads (or generates) the certificate.
    ///
    /// # Errors
    /// A file cannot be read or holds no usable certificate or key; the message names it.
    pub fn load(source: TlsSource) -> Result<Arc<Tls>, String> {
        let current = build(&source)?;
        Ok(Arc::new(Tls {
            source,
            current: RwLock::new(current),
        }))
    }

    /// Reads the files again; on failure the current certificate stays.
    ///
    /// # Errors
    /// As [`Tls::load`]; a self-signed certificate is never replaced.
    pub fn reload(&self) -> Result<String, String> {
        if self.source == TlsSource::SelfSigned {
            return Err("a self-signed certificate is not reloaded".into());
        }
        let next = build(&self.source)?;
        let fingerprint = next.1.clone();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(fingerprint)
    }

    /// Whether SIGHUP reloads it (it comes from files).
    pub fn reloadable(&self) -> bool {
        matches!(self.source, TlsSource::Files { .. })
    }

    /// SHA-256 of the current leaf certificate, as colon-separated hex.
    pub fn fingerprint(&self) -> String {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone();
        tokio_rustls::TlsAcceptor::from(config)
    }
}

fn build(source: &TlsSource) -> Result<(Arc<ServerConfig>, String), String> {
    let (certs, key) = match source {
        TlsSource::Files { cert, key } => (
            tls::read_certs(cert, "--tls-cert")?,
            tls::read_key(key, "--tls-key")?,
        ),
        TlsSource::SelfSigned => self_signed()?,
    };
    let fingerprint = certs.first().map(|c| sha256_hex(c)).unwrap_or_default();
    let mut config = ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the TLS certificate and key do not go together: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), fingerprint))
}

type CertAndKey = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn self_signed() -> Result<CertAndKey, String> {
    let names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("generating a self-signed certificate: {e}"))?;
    let cert = generated.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.key_pair.serialize_der()));
    Ok((vec![cert], key))
}

/// SHA-256 of `der` as colon-separated upper-case hex (how fingerprints are printed).
pub(crate) fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_loads_and_has_a_fingerprint() {
        let tls = Tls::load(TlsSource::SelfSigned).expect("generates");
        assert_eq!(tls.fingerprint().len(), 32 * 3 - 1);
        assert!(tls.reload().is_err());
    }

    #[test]
    fn missing_files_are_named() {
        let e = Tls::load(TlsSource::Files {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        })
        .expect_err("no files");
        assert!(e.contains("/nonexistent/cert.pem"), "{e}");
    }
}
