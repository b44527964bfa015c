//! PEM files and trust anchors for every TLS client and server runnel opens: the HTTP
//! server (`--tls-cert`/`--tls-key`), its client (`--tls-ca`) and the connectors that
//! speak TLS to a broker (`mqtts://`). One crypto provider (rustls on ring) throughout.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Where Debian, Red Hat and Alpine/macOS keep the system's CA bundle.
const CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The crypto provider of every TLS connection (rustls on ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process's default crypto provider. Libraries that build TLS configs
/// without naming a provider (HTTP clients of object stores, Delta Lake's) need one when
/// more than one is compiled in (deltalake's client brings aws-lc-rs). Call it first thing.
pub fn install_default_provider() {
    // Err: one is installed already (a second call); that one stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The certificates of a PEM file; `what` names the setting it came from in errors
/// (`--tls-cert`, `option 'tls.ca-file'`, …).
///
/// # Errors
/// The file cannot be read, is not PEM, or holds no certificate.
pub fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
///
/// # Errors
/// The file cannot be read or holds no usable key.
pub fn read_key(path: &Path, what: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        format!(
            "{what} {}: no usable PEM private key in it ({e})",
            path.display()
        )
    })
}

/// The certificates of a PEM file as trust anchors, and as they are.
///
/// # Errors
/// As [`read_certs`], or none of them can be a trust anchor.
pub fn read_roots(
    path: &Path,
    what: &str,
) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), String> {
    let certs = read_certs(path, what)?;
    let mut store = RootCertStore::empty();
    for cert in &certs {
        // A bundle may hold certificates this TLS stack cannot use; skip those.
        let _ = store.add(cert.clone());
    }
    if store.is_empty() {
        return Err(format!(
            "{what} {}: no usable PEM certificate in it",
            path.display()
        ));
    }
    Ok((store, certs))
}

/// The system's CA bundle: `SSL_CERT_FILE`, or the first of the usual paths that exists.
///
/// # Errors
/// No bundle is found, or it cannot be read.
pub fn system_roots() -> Result<RootCertStore, String> {
    let path = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .or_else(|| CA_BUNDLES.iter().map(PathBuf::from).find(|p| p.is_file()))
        .ok_or_else(|| "no system CA bundle found (set SSL_CERT_FILE)".to_string())?;
    Ok(read_roots(&path, "the system CA bundle")?.0)
}

/// Files a TLS client is configured with; all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFiles {
    /// Trust the certificates in this PEM file (a CA, or the server's own) instead of the
    /// system's CAs.
    pub ca: Option<PathBuf>,
    /// Present this certificate chain (mutual TLS), with `key`.
    pub cert: Option<PathBuf>,
    /// The private key of `cert`.
    pub key: Option<PathBuf>,
}

/// A client configuration that checks the server's certificate against `files.ca` (or
/// the system's CAs) and presents `files.cert` when given. `what` prefixes errors.
///
/// # Errors
/// A file cannot be read, or the certificate and key do not go together.
pub fn client_config(files: &ClientFiles, what: &str) -> Result<Arc<ClientConfig>, String> {
    let roots = match &files.ca {
        Some(ca) => read_roots(ca, &format!("{what}: CA file"))?.0,
        None => system_roots().map_err(|e| format!("{what}: {e}, or give a CA file"))?,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{what}: TLS setup: {e}"))?
        .with_root_certificates(roots);
    let config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let certs = read_certs(cert, &format!("{what}: certificate file"))?;
            let key = read_key(key, &format!("{what}: key file"))?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                format!("{what}: the client certificate and key do not go together: {e}")
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(format!(
                "{what}: a client certificate needs both a certificate file and a key file"
            ));
        }
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_name_the_setting() {
        let dir = std::env::temp_dir().join(format!("runnel-tls-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not pem\n").expect("write");
        let e = read_certs(&empty, "option 'tls.ca-file'").expect_err("no certificate");
        assert!(
            e.contains("option 'tls.ca-file'") && e.contains("empty.pem"),
            "{e}"
        );
        let e = read_key(&dir.join("absent.pem"), "--tls-key").expect_err("no file");
        assert!(e.contains("--tls-key") && e.contains("absent.pem"), "{e}");
        let files = ClientFiles {
            cert: Some(empty.clone()),
            ..ClientFiles::default()
        };
        let e = client_config(
            &ClientFiles {
                ca: Some(empty),
                ..files
            },
            "table 't'",
        )
        .expect_err("bad CA");
        assert!(e.starts_with("table 't': CA file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
