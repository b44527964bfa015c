//! S3-compatible object stores: one way to build a client for `s3://bucket/prefix`, used by
//! checkpoints and by the sinks that write there (`filesystem`), with the same settings
//! (`SET 's3.endpoint'`, `'s3.region'`, `'s3.access-key'`, `'s3.secret-key'`,
//! `'s3.allow-http'`).

use std::sync::Arc;

use object_store::ObjectStore;

/// How to reach an S3-compatible object store; unset fields come from the standard
/// `AWS_*` environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_REGION`, `AWS_ENDPOINT`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// Endpoint URL for S3-compatible stores (MinIO, Ceph, ...); path-style requests.
    pub endpoint: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Access key id.
    pub access_key: Option<String>,
    /// Secret access key.
    pub secret_key: Option<String>,
    /// Allow plain-HTTP endpoints (implied by an `http://` endpoint).
    pub allow_http: bool,
}

/// The option keys a table takes for its `s3://` path (the pipeline's `SET 's3.…'`
/// settings fill in those it does not set).
pub const OPTION_KEYS: [&str; 5] = [
    "s3.endpoint",
    "s3.region",
    "s3.access-key",
    "s3.secret-key",
    "s3.allow-http",
];

impl S3Options {
    /// The options from `s3.*` keys, as [`OPTION_KEYS`] names them.
    pub fn from_keys<'a>(get: impl Fn(&str) -> Option<&'a str>) -> S3Options {
        let text = |k: &str| get(k).map(str::to_string);
        S3Options {
            endpoint: text("s3.endpoint"),
            region: text("s3.region"),
            access_key: text("s3.access-key"),
            secret_key: text("s3.secret-key"),
            allow_http: get("s3.allow-http").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
        }
    }

    /// The options as `s3.*` key/value pairs (the unset ones left out).
    pub fn to_keys(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for (k, v) in [
            ("s3.endpoint", &self.endpoint),
            ("s3.region", &self.region),
            ("s3.access-key", &self.access_key),
            ("s3.secret-key", &self.secret_key),
        ] {
            if let Some(v) = v {
                out.push((k, v.clone()));
            }
        }
        if self.allow_http {
            out.push(("s3.allow-http", "true".into()));
        }
        out
    }
}

/// `s3://bucket/prefix` split into bucket and prefix (without surrounding slashes).
///
/// # Errors
/// Not an `s3://` URL, or no bucket.
pub fn split_url(url: &str) -> Result<(&str, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("'{url}' is not an s3:// URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!(
            "'{url}' names no bucket (expected s3://bucket/prefix)"
        ));
    }
    Ok((bucket, prefix.trim_matches('/').to_string()))
}

/// A client for the bucket of `url` and the prefix inside it. Nothing is contacted yet.
///
/// # Errors
/// A URL without a bucket, or options the client refuses.
pub fn store(url: &str, options: &S3Options) -> Result<(Arc<dyn ObjectStore>, String), String> {
    let (bucket, prefix) = split_url(url)?;
    let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(endpoint) = &options.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(options.allow_http || endpoint.starts_with("http://"));
    } else if options.allow_http {
        builder = builder.with_allow_http(true);
    }
    if let Some(region) = &options.region {
        builder = builder.with_region(region);
    }
    if let Some(key) = &options.access_key {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &options.secret_key {
        builder = builder.with_secret_access_key(secret);
    }
    let store = builder.build().map_err(|e| format!("{url}: {e}"))?;
    Ok((Arc::new(store), prefix))
}
