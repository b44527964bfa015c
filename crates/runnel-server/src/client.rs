//! A small HTTP/1.1 client for runnel's own API (`runnel topics|produce|consume --url`,
//! `runnel cameras`, `runnel bench ingest`, tests): `http://` or `https://`, one
//! connection per `Connection`, with the bearer token on every request when one is given.
//!
//! Over `https://` the server's certificate is checked against the system's CA bundle
//! (`SSL_CERT_FILE` or the usual Debian/Red Hat paths), a PEM file given with `--tls-ca`
//! (a CA, or the server's own self-signed certificate), or pinned by the SHA-256
//! fingerprint a `--tls-self-signed` server prints (`--tls-fingerprint`).

use std::path::PathBuf;
use std::sync::Arc;

use axum::http::{Method, Request, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use runnel_common::tls;

use crate::error::ServerError;

/// Which server certificates an `https://` client accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Trust {
    /// Those that chain to the system's CA bundle.
    #[default]
    System,
    /// Those that chain to a certificate in this PEM file (a CA, or the server's own).
    CaFile(PathBuf),
    /// The one whose leaf has this SHA-256 fingerprint (hex, colons optional).
    Fingerprint(String),
}

/// How a client reaches and authenticates to a server.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Sent as `Authorization: Bearer …` on every request.
    pub token: Option<String>,
    /// Certificates accepted over `https://`.
    pub trust: Trust,
}

/// Where a runnel server listens: `http://host:port` or `https://host:port`.
#[derive(Debug, Clone)]
pub struct HttpClient {
    url: String,
    authority: String,
    authorization: Option<String>,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

/// One kept-alive connection; requests on it are sent one after another.
#[derive(Debug)]
pub struct Connection {
    url: String,
    authority: String,
    authorization: Option<String>,
    sender: SendRequest<Full<Bytes>>,
}

/// A complete answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: axum::http::HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl HttpClient {
    /// A client for the server at `url` (`http://host:port` or `https://host:port`, a
    /// trailing `/` is ignored), with no token and the system's CAs.
    ///
    /// # Errors
    /// `InvalidUrl` for anything but an `http://` or `https://` URL with a host, or when
    /// no CA bundle can be read for `https://`.
    pub fn new(url: &str) -> Result<Self, ServerError> {
        Self::with_options(url, &ClientOptions::default())
    }

    /// A client with a token and a choice of trusted certificates.
    ///
    /// # Errors
    /// As [`HttpClient::new`]; also an unreadable `--tls-ca` file or a malformed
    /// fingerprint.
    pub fn with_options(url: &str, options: &ClientOptions) -> Result<Self, ServerError> {
        let bad = |reason: &str| ServerError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let (scheme, default_port) = match uri.scheme_str() {
            Some("http") => ("http", 80),
            Some("https") => ("https", 443),
            _ => {
                return Err(bad(
                    "only http:// and https:// are supported, e.g. http://127.0.0.1:8080",
                ));
            }
        };
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let port = uri.port_u16().unwrap_or(default_port);
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(bad("give only scheme, host and port"));
        }
        let tls = if scheme == "https" {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(bare.to_owned())
                .map_err(|_| bad("the host is not a valid TLS server name"))?;
            let config = client_config(&options.trust).map_err(|reason| bad(&reason))?;
            Some((config, name))
        } else {
            None
        };
        Ok(HttpClient {
            url: format!("{scheme}://{host}:{port}"),
            authority: format!("{host}:{port}"),
            authorization: options.token.as_ref().map(|t| format!("Bearer {t}")),
            tls,
        })
    }

    /// The server's base URL, `http://host:port` or `https://host:port`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens a connection for a series of requests.
    ///
    /// # Errors
    /// `Connect` if the server cannot be reached or the TLS handshake fails (an untrusted
    /// certificate among others).
    pub async fn connect(&self) -> Result<Connection, ServerError> {
        let connect_err = |reason: String| ServerError::Connect {
            url: self.url.clone(),
            reason,
        };
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let sender = match &self.tls {
            None => handshake(TokioIo::new(stream)).await,
            Some((config, name)) => {
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name.clone(), stream)
                    .await
                    .map_err(|e| connect_err(format!("TLS: {e}")))?;
                handshake(TokioIo::new(stream)).await
            }
        }
        .map_err(|e| connect_err(e.to_string()))?;
        Ok(Connection {
            url: self.url.clone(),
            authority: self.authority.clone(),
            authorization: self.authorization.clone(),
            sender,
        })
    }

    /// Sends one request on a fresh connection; `path` includes the query.
    ///
    /// # Errors
    /// `Connect` if the server cannot be reached or the connection breaks.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<HttpResponse, ServerError> {
        self.connect()
            .await?
            .request(method, path, headers, body)
            .await
    }
}

/// HTTP/1.1 over `io`, the connection driven by a task of its own.
async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, hyper::Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "client connection ended");
        }
    });
    Ok(sender)
}

fn client_config(trust: &Trust) -> Result<Arc<ClientConfig>, String> {
    let provider = tls::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut config = match trust {
        Trust::Fingerprint(hex) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier {
                accept: Accept::Pinned(parse_fingerprint(hex)?),
                provider,
            }))
            .with_no_client_auth(),
        Trust::CaFile(path) => {
            let (store, listed) = tls::read_roots(path, "--tls-ca")?;
            let chain = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(store),
                provider.clone(),
            )
            .build()
            .map_err(|e| format!("--tls-ca {}: {e}", path.display()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Verifier {
                    accept: Accept::Listed { chain, listed },
                    provider,
                }))
                .with_no_client_auth()
        }
        Trust::System => builder
            .with_root_certificates(
                tls::system_roots()
                    .map_err(|e| format!("{e}, or pass --tls-ca or --tls-fingerprint"))?,
            )
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `AB:CD:…` or `abcd…` → 32 bytes.
fn parse_fingerprint(hex: &str) -> Result<Vec<u8>, String> {
    let digits: String = hex.chars().filter(|c| *c != ':').collect();
    let bytes: Option<Vec<u8>> = (0..digits.len())
        .step_by(2)
        .map(|i| {
            digits
                .get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
        })
        .collect();
    match bytes {
        Some(b) if b.len() == 32 => Ok(b),
        _ => Err(format!(
            "--tls-fingerprint '{hex}' is not a SHA-256 fingerprint (64 hex digits, colons \
             optional)"
        )),
    }
}

/// Server certificates accepted without the system's CAs; the handshake signatures are
/// still checked, so the server must hold the certificate's key.
#[derive(Debug)]
struct Verifier {
    accept: Accept,
    provider: Arc<CryptoProvider>,
}

#[derive(Debug)]
enum Accept {
    /// `--tls-fingerprint`: exactly the certificate with this SHA-256.
    Pinned(Vec<u8>),
    /// `--tls-ca`: a certificate that chains to one in the file, or is one in the file —
    /// a self-signed server certificate made by `openssl req -x509` is marked as a CA,
    /// which chain validation refuses as a server's own; listed verbatim, it is trusted.
    Listed {
        chain: Arc<rustls::client::WebPkiServerVerifier>,
        listed: Vec<CertificateDer<'static>>,
    },
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.accept {
            Accept::Pinned(sha256) => {
                let got = ring::digest::digest(&ring::digest::SHA256, end_entity);
                if got.as_ref() == sha256.as_slice() {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::General(format!(
                        "the server's certificate has SHA-256 fingerprint {}, not the one \
                         given",
                        crate::tls::sha256_hex(end_entity)
                    )))
                }
            }
            Accept::Listed { chain, listed } => chain
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .or_else(|e| {
                    if listed.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
                        Ok(ServerCertVerified::assertion())
                    } else {
                        Err(e)
                    }
                }),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl Connection {
    /// Sends one request and reads the whole answer; `path` includes the query.
    ///
    /// # Errors
    /// `Connect` if the connection breaks, `Request` for an invalid header.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<HttpResponse, ServerError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.authority)
            // A custom header: marks runnel's own clients as not a cross-site browser
            // request, whatever the content type (see `guard`).
            .header(
                crate::guard::CLIENT_HEADER,
                concat!("runnel/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(auth) = &self.authorization {
            builder = builder.header(header::AUTHORIZATION, auth);
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(body.into()))
            .map_err(|e| ServerError::Request(e.to_string()))?;
        let broken = |e: hyper::Error| ServerError::Connect {
            url: self.url.clone(),
            reason: e.to_string(),
        };
        self.sender.ready().await.map_err(broken)?;
        let response = self.sender.send_request(request).await.map_err(broken)?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(broken)?.to_bytes();
        Ok(HttpResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }
}

impl HttpResponse {
    /// The body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// "<status>: <detail>" from an error answer, for messages.
    pub fn error_message(&self) -> String {
        let json = self.json();
        match (json["error"].as_str(), json["detail"].as_str()) {
            (Some(code), Some(detail)) => format!("HTTP {} {code}: {detail}", self.status),
            _ => format!("HTTP {}: {}", self.status, self.text().trim()),
        }
    }
}
