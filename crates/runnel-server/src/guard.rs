//! What keeps other web sites out, token or not: a page the user visits must not be able
//! to write to a runnel on `127.0.0.1` (cross-site requests), nor read it through a
//! domain that resolves to it (DNS rebinding).
//!
//! - `Host` must name this server: a loopback name or address, the bound address, or
//!   the host of `--public-url`. A server bound to a non-loopback address without
//!   `--public-url` accepts any host name (it needs a token anyway).
//! - A state-changing request (anything but GET/HEAD/OPTIONS) that carries an `Origin`
//!   must come from the server's own origin.
//! - A POST must carry what a browser cannot send cross-site without asking first (a
//!   CORS preflight, which runnel never grants): a content type other than `text/plain`,
//!   `application/x-www-form-urlencoded` and `multipart/form-data` (JSON, NDJSON,
//!   `application/octet-stream`, `image/jpeg`, …), or a header a page cannot add without a
//!   preflight: `X-Key`, `X-Event-Time`, `X-Meta-*` or `X-Runnel-Client` (which runnel's
//!   own clients send).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The header runnel's own HTTP clients send with every request.
pub const CLIENT_HEADER: &str = "x-runnel-client";

/// Whether the request carries a custom header that a cross-site page could only send
/// after a CORS preflight (which this server never grants).
fn has_custom_header(headers: &HeaderMap) -> bool {
    headers.keys().any(|k| {
        let k = k.as_str();
        k == "x-key" || k == "x-event-time" || k == CLIENT_HEADER || k.starts_with("x-meta-")
    })
}

/// The host names and addresses this server answers to.
#[derive(Debug, Clone)]
pub struct Guard {
    port: u16,
    /// Lower-case host names (without port) accepted besides loopback ones.
    hosts: Vec<String>,
    /// `--public-url`'s port, if it names one.
    public_port: Option<u16>,
    any_host: bool,
}

impl Guard {
    /// The rules for a server bound to `bound`, reached at `public_url` if given.
    ///
    /// # Errors
    /// `public_url` is not an `http://` or `https://` URL with a host.
    pub fn new(bound: SocketAddr, public_url: Option<&str>) -> Result<Self, String> {
        let mut hosts = vec![host_of_ip(bound.ip())];
        let mut public_port = None;
        if let Some(url) = public_url {
            let (host, port) = authority_of_url(url).ok_or_else(|| {
                format!("--public-url '{url}' is not an http:// or https:// URL with a host")
            })?;
            hosts.push(host);
            public_port = port.or(Some(if url.starts_with("https") { 443 } else { 80 }));
        }
        Ok(Guard {
            port: bound.port(),
            hosts,
            public_port,
            any_host: !bound.ip().is_loopback() && public_url.is_none(),
        })
    }

    /// Whether `authority` (`host[:port]` from a `Host` header) names this server.
    fn host_allowed(&self, authority: &str) -> bool {
        if self.any_host {
            return true;
        }
        let Some((host, port)) = split_authority(authority) else {
            return false;
        };
        let port_ok = port.is_none_or(|p| p == self.port || Some(p) == self.public_port);
        let loopback = host == "localhost"
            || host.ends_with(".localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        port_ok && (loopback || self.hosts.contains(&host))
    }
}

fn host_of_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// `host[:port]` → (lower-case host, port).
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let a = authority.trim().to_ascii_lowercase();
    if a.is_empty() || a.contains(['/', '@', ' ']) {
        return None;
    }
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = format!("[{}]", &rest[..end]);
        match &rest[end + 1..] {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?.parse().ok()?)),
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.parse().ok()?)),
            None => (a.clone(), None),
        }
    };
    (!host.is_empty()).then_some((host, port))
}

/// `http(s)://host[:port][/…]` → (host, port).
fn authority_of_url(url: &str) -> Option<(String, Option<u16>)> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    split_authority(authority)
}

fn forbidden(code: &'static str, detail: String) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, code, detail).into_response()
}

/// Content types a browser sends cross-site without a preflight.
fn is_simple_content_type(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let essence = ct
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "" | "text/plain" | "application/x-www-form-urlencoded" | "multipart/form-data"
    )
}

/// Axum middleware applying the [`Guard`]'s rules.
pub async fn check(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers.get(header::HOST).map(|h| h.to_str().unwrap_or(""));
    if let Some(host) = host
        && !guard.host_allowed(host)
    {
        return forbidden(
            "bad_host",
            format!(
                "this server does not answer to host '{host}' (use 127.0.0.1 or localhost, \
                 or start it with --public-url)"
            ),
        );
    }
    let method = request.method();
    let writes = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if writes && let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        let own = authority_of_url(origin).is_some_and(|(h, p)| {
            host.and_then(split_authority)
                .is_some_and(|(hh, hp)| hh == h && hp == p)
        });
        if !own {
            return forbidden(
                "cross_origin",
                format!(
                    "a {method} from origin '{origin}' is not allowed: writes must come from this server's own page or a non-browser client"
                ),
            );
        }
    }
    if *method == Method::POST && is_simple_content_type(headers) && !has_custom_header(headers) {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a POST needs Content-Type: application/json or application/x-ndjson (or \
             the raw form: any other content type such as application/octet-stream, or \
             an X-Key, X-Event-Time, X-Meta-* or X-Runnel-Client header)",
        )
        .into_response();
    }
    next.run(request).await
}

/// The page's content security policy: everything from this server only, no inline
/// script, and no framing by other sites.
const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";

/// Axum middleware adding the security headers: `X-Content-Type-Options` everywhere,
/// a content security policy and framing ban on the page, `Cache-Control: no-store` on
/// API answers (they are live state, and may carry data a shared cache must not keep).
pub async fn security_headers(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if crate::auth::is_public(&path) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_CSP),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    } else {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> Guard {
        Guard::new("127.0.0.1:8080".parse().expect("addr"), None).expect("guard")
    }

    #[test]
    fn loopback_server_answers_only_to_loopback_names() {
        let g = loopback();
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
        ] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "evil.example",
            "127.0.0.1:9999",
            "",
            "a@b",
        ] {
            assert!(!g.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn public_url_adds_its_host() {
        let g = Guard::new(
            "0.0.0.0:8080".parse().expect("addr"),
            Some("https://runnel.example.com"),
        )
        .expect("guard");
        assert!(g.host_allowed("runnel.example.com"));
        assert!(g.host_allowed("runnel.example.com:443"));
        assert!(g.host_allowed("localhost:8080"));
        assert!(!g.host_allowed("evil.example"));
        let open = Guard::new("0.0.0.0:8080".parse().expect("addr"), None).expect("guard");
        assert!(open.host_allowed("any.host"));
        assert!(Guard::new("0.0.0.0:1".parse().expect("addr"), Some("ftp://x")).is_err());
    }

    #[test]
    fn splits_authorities() {
        assert_eq!(
            split_authority("Example.com:80"),
            Some(("example.com".into(), Some(80)))
        );
        assert_eq!(
            split_authority("[::1]:8080"),
            Some(("[::1]".into(), Some(8080)))
        );
        assert_eq!(split_authority("host:notaport"), None);
        assert_eq!(
            authority_of_url("http://127.0.0.1:8080/x"),
            Some(("127.0.0.1".into(), Some(8080)))
        );
    }
}
