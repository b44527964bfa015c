//! A small HTTP/1.1 client for runnel's own API (`runnel topics|produce|consume --url`,
//! `runnel bench ingest`, tests): plain `http://`, one connection per `Connection`.

use axum::http::{Method, Request, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::error::ServerError;

/// Where a runnel server listens: `http://host:port`.
#[derive(Debug, Clone)]
pub struct HttpClient {
    url: String,
    authority: String,
}

/// One kept-alive connection; requests on it are sent one after another.
#[derive(Debug)]
pub struct Connection {
    url: String,
    authority: String,
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
    /// A client for the server at `url` (`http://host:port`, a trailing `/` is ignored).
    ///
    /// # Errors
    /// `InvalidUrl` for anything but a plain `http://` URL with a host.
    pub fn new(url: &str) -> Result<Self, ServerError> {
        let bad = |reason: &str| ServerError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// is supported, e.g. http://127.0.0.1:8080"));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(bad("give only scheme, host and port"));
        }
        Ok(HttpClient {
            url: format!("http://{host}:{port}"),
            authority: format!("{host}:{port}"),
        })
    }

    /// The server's base URL, `http://host:port`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens a connection for a series of requests.
    ///
    /// # Errors
    /// `Connect` if the server cannot be reached.
    pub async fn connect(&self) -> Result<Connection, ServerError> {
        let connect_err = |reason: String| ServerError::Connect {
            url: self.url.clone(),
            reason,
        };
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "client connection ended");
            }
        });
        Ok(Connection {
            url: self.url.clone(),
            authority: self.authority.clone(),
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
