//! HTTP API tests: the router on 127.0.0.1:0 over a temp-dir log, one test per status.

use std::io::{Read, Write};
use std::sync::Arc;

use axum::http::Method;
use runnel_log::{Fault, Log, LogOptions, TopicConfig};
use runnel_server::client::{HttpClient, HttpResponse};
use runnel_server::{ServerState, router, serve};
use serde_json::{Value, json};

/// A server on a free port over a fresh log.
struct TestServer {
    client: HttpClient,
    addr: std::net::SocketAddr,
    log: Arc<Log>,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    async fn start(configure: impl FnOnce(ServerState) -> ServerState) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = Arc::new(Log::open(dir.path(), LogOptions::default()).expect("open log"));
        let state = configure(ServerState::new(log.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, router(state), async move {
            let _ = rx.await;
        }));
        let client = HttpClient::new(&format!("http://{addr}")).expect("client");
        TestServer {
            client,
            addr,
            log,
            _dir: dir,
            stop: Some(tx),
        }
    }

    async fn with_topic(name: &str, partitions: u32) -> TestServer {
        let s = TestServer::start(|s| s).await;
        s.log
            .create_topic(name, TopicConfig::with_partitions(partitions))
            .expect("create topic");
        s
    }

    async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<bytes::Bytes>,
    ) -> HttpResponse {
        self.client
            .request(Method::POST, path, headers, body)
            .await
            .expect("POST")
    }

    async fn get(&self, path: &str) -> HttpResponse {
        self.client
            .request(Method::GET, path, &[], bytes::Bytes::new())
            .await
            .expect("GET")
    }

    /// Every record of a partition through the read endpoint.
    async fn read_all(&self, topic: &str, partition: u32) -> Vec<Value> {
        let r = self
            .get(&format!(
                "/v1/topics/{topic}/records?partition={partition}&max=10000"
            ))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
            .lines()
            .map(|l| serde_json::from_str(l).expect("NDJSON line"))
            .collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn assert_error(r: &HttpResponse, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_answers_ok() {
    let s = TestServer::start(|s| s).await;
    let r = s.get("/healthz").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
}

#[tokio::test(flavor = "multi_thread")]
async fn json_object_and_array_round_trip() {
    let s = TestServer::with_topic("orders", 1).await;
    let ct = [("content-type", "application/json")];
    let r = s
        .post(
            "/v1/topics/orders/records",
            &ct,
            r#"{"id": 1, "price": 12.50}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"topic": "orders", "partition": 0, "offsets": [0]})
    );
    let r = s
        .post(
            "/v1/topics/orders/records",
            &ct,
            r#"[{"id": 2}, {"id": 3}, [4]]"#,
        )
        .await;
    assert_eq!(r.json()["offsets"], json!([1, 2, 3]));
    let got = s.read_all("orders", 0).await;
    let values: Vec<&Value> = got.iter().map(|r| &r["value"]).collect();
    assert_eq!(
        values,
        vec![
            &json!({"id": 1, "price": 12.50}),
            &json!({"id": 2}),
            &json!({"id": 3}),
            &json!([4])
        ]
    );
    assert_eq!(got[0]["offset"], 0);
    assert_eq!(got[0]["partition"], 0);
    assert_eq!(got[0]["key"], Value::Null);
    assert_eq!(got[0]["event_time"], Value::Null);
    assert_eq!(got[0]["headers"]["content-type"], "application/json");
    // The exact bytes are kept: 12.50 stays 12.50.
    let raw = s.get("/v1/topics/orders/records?offset=0&max=1").await;
    assert!(
        raw.text().contains(r#""value":{"id": 1, "price": 12.50}"#),
        "{}",
        raw.text()
    );
    assert_eq!(
        raw.headers
            .get("x-next-offset")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ndjson_round_trip_with_key_event_time_and_meta() {
    let s = TestServer::with_topic("events", 4).await;
    let headers = [
        ("content-type", "application/x-ndjson"),
        ("x-key", "sensor-7"),
        ("x-event-time", "2026-01-01T00:00:10Z"),
        ("X-Meta-Source", "lab"),
    ];
    let r = s
        .post(
            "/v1/topics/events/records",
            &headers,
            "{\"t\":1}\n\n{\"t\":2}\r\n{\"t\":3}",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let partition = r.json()["partition"].as_u64().expect("partition") as u32;
    assert_eq!(r.json()["offsets"], json!([0, 1, 2]));
    // The same key always lands in the same partition.
    let again = s
        .post(
            "/v1/topics/events/records",
            &[
                ("content-type", "application/x-ndjson"),
                ("x-key", "sensor-7"),
                ("x-event-time", "1767225600000"),
            ],
            "{\"t\":4}",
        )
        .await;
    assert_eq!(again.json()["partition"], partition);
    let got = s.read_all("events", partition).await;
    assert_eq!(got.len(), 4);
    assert_eq!(got[1]["value"], json!({"t": 2}));
    assert_eq!(got[2]["value"], json!({"t": 3}));
    assert_eq!(got[0]["key"], "sensor-7");
    assert_eq!(got[0]["event_time"], "2026-01-01T00:00:10.000Z");
    assert_eq!(got[3]["event_time"], "2026-01-01T00:00:00.000Z");
    assert_eq!(
        got[0]["headers"],
        json!({"content-type": "application/json", "source": "lab"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_bytes_round_trip_as_base64() {
    let s = TestServer::with_topic("frames", 1).await;
    let jpeg: Vec<u8> = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x80];
    let r = s
        .post(
            "/v1/topics/frames/records",
            &[("content-type", "image/jpeg"), ("x-key", "cam-1")],
            jpeg.clone(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = s
        .post(
            "/v1/topics/frames/records",
            &[("content-type", "text/plain")],
            "hello\nworld",
        )
        .await;
    assert_eq!(text.json()["offsets"], json!([1]));
    let got = s.read_all("frames", 0).await;
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(got[0]["value"], b64.encode(&jpeg));
    assert_eq!(got[0]["headers"]["content-type"], "image/jpeg");
    assert_eq!(got[1]["value"], b64.encode("hello\nworld"));
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_json_is_400_and_nothing_is_stored() {
    let s = TestServer::with_topic("orders", 1).await;
    let r = s
        .post(
            "/v1/topics/orders/records",
            &[("content-type", "application/json")],
            r#"[{"id": 1}, {"id": "#,
        )
        .await;
    assert_error(&r, 400, "malformed_json");
    let r = s
        .post(
            "/v1/topics/orders/records",
            &[("content-type", "application/x-ndjson")],
            "{\"id\":1}\n{\"id\":2}\n{oops}\n{\"id\":4}\n",
        )
        .await;
    assert_error(&r, 400, "malformed_json");
    assert!(
        r.json()["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("line 3,")),
        "{}",
        r.text()
    );
    let r = s
        .post(
            "/v1/topics/orders/records",
            &[("content-type", "application/x-ndjson")],
            "\n \n",
        )
        .await;
    assert_error(&r, 400, "empty_body");
    assert!(s.read_all("orders", 0).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn unparseable_event_time_is_400() {
    let s = TestServer::with_topic("orders", 1).await;
    let r = s
        .post(
            "/v1/topics/orders/records",
            &[
                ("content-type", "application/json"),
                ("x-event-time", "yesterday"),
            ],
            "{}",
        )
        .await;
    assert_error(&r, 400, "invalid_event_time");
    assert!(s.read_all("orders", 0).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_topic_is_404_unless_auto_create() {
    let s = TestServer::start(|s| s).await;
    let r = s
        .post(
            "/v1/topics/nope/records",
            &[("content-type", "application/json")],
            "{}",
        )
        .await;
    assert_error(&r, 404, "unknown_topic");
    assert_error(
        &s.get("/v1/topics/nope/records").await,
        404,
        "unknown_topic",
    );
    assert_error(&s.get("/v1/topics/nope").await, 404, "unknown_topic");
    assert!(s.log.topic("nope").is_none());

    let s = TestServer::start(|s| s.with_auto_create(Some(3))).await;
    let r = s
        .post(
            "/v1/topics/fresh/records",
            &[("content-type", "application/json")],
            "{}",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.log.topic("fresh").map(|t| t.partition_count()), Some(3));
    // Reads never create topics.
    assert_error(
        &s.get("/v1/topics/other/records").await,
        404,
        "unknown_topic",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn body_over_the_limit_is_413_before_it_is_buffered() {
    let s = TestServer::start(|s| s.with_max_body_bytes(1024)).await;
    s.log
        .create_topic("big", TopicConfig::with_partitions(1))
        .expect("create");
    let r = s
        .post(
            "/v1/topics/big/records",
            &[("content-type", "application/octet-stream")],
            vec![b'x'; 1025],
        )
        .await;
    assert_error(&r, 413, "body_too_large");
    let ok = s
        .post(
            "/v1/topics/big/records",
            &[("content-type", "application/octet-stream")],
            vec![b'x'; 1024],
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());

    // Chunked (no Content-Length): rejected while streaming; the server answers 413
    // although the client never finishes the body.
    let addr = s.addr;
    let (status, body) = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        let head = "POST /v1/topics/big/records HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
        stream.write_all(head.as_bytes()).expect("write head");
        for _ in 0..4 {
            let _ = stream.write_all(format!("200\r\n{}\r\n", "y".repeat(0x200)).as_bytes());
        }
        // No terminating chunk: the body is never complete.
        let mut answer = Vec::new();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&answer).contains("body_too_large") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&answer).into_owned();
        (text.split(' ').nth(1).unwrap_or_default().to_owned(), text)
    })
    .await
    .expect("raw client");
    assert_eq!(status, "413", "{body}");
    assert!(body.contains("body_too_large"), "{body}");
    assert_eq!(s.read_all("big", 0).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_full_is_503_with_retry_after_and_loses_nothing_acknowledged() {
    let s = TestServer::with_topic("orders", 1).await;
    let ct = [("content-type", "application/x-ndjson")];
    let mut acked = Vec::new();
    for i in 0..5 {
        let r = s
            .post("/v1/topics/orders/records", &ct, format!("{{\"seq\":{i}}}"))
            .await;
        assert_eq!(r.status, 200);
        acked.push(i);
    }
    let topic = s.log.topic("orders").expect("topic");
    let partition = topic.partition(0).expect("partition 0");
    for (fault, seq) in [(Fault::NoSpace, 100), (Fault::NoSpacePartial, 200)] {
        partition.inject_failure(Some(fault));
        for i in seq..seq + 3 {
            let r = s
                .post(
                    "/v1/topics/orders/records",
                    &ct,
                    format!("{{\"seq\":{i}}}\n{{\"seq\":{}}}", i + 1000),
                )
                .await;
            assert_error(&r, 503, "unavailable");
            assert_eq!(
                r.headers.get("retry-after").and_then(|v| v.to_str().ok()),
                Some("1")
            );
        }
        // Reads and the status API keep working while writes fail.
        assert_eq!(s.read_all("orders", 0).await.len(), acked.len());
        assert_eq!(s.get("/v1/topics/orders").await.status, 200);
        assert_eq!(s.get("/healthz").await.status, 200);
        partition.inject_failure(None);
        let r = s
            .post(
                "/v1/topics/orders/records",
                &ct,
                format!("{{\"seq\":{}}}", seq + 50),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        acked.push(seq + 50);
    }
    let seqs: Vec<u64> = s
        .read_all("orders", 0)
        .await
        .iter()
        .map(|r| r["value"]["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, acked);
}

#[tokio::test(flavor = "multi_thread")]
async fn topics_create_list_describe() {
    let s = TestServer::start(|s| s).await;
    let r = s
        .post(
            "/v1/topics",
            &[("content-type", "application/json")],
            r#"{"name": "orders", "partitions": 3}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["partitions"].as_array().map(Vec::len), Some(3));
    assert_error(
        &s.post("/v1/topics", &[], r#"{"name": "orders", "partitions": 1}"#)
            .await,
        409,
        "topic_exists",
    );
    assert_error(
        &s.post(
            "/v1/topics",
            &[],
            r#"{"name": "bad/name", "partitions": 1}"#,
        )
        .await,
        400,
        "invalid_name",
    );
    assert_error(
        &s.post("/v1/topics", &[], r#"{"name": "zero", "partitions": 0}"#)
            .await,
        400,
        "invalid_config",
    );
    assert_error(
        &s.post("/v1/topics", &[], r#"{"name": "#).await,
        400,
        "malformed_json",
    );
    s.post(
        "/v1/topics/orders/records",
        &[("content-type", "application/json"), ("x-key", "a")],
        "[1,2]",
    )
    .await;
    let list = s.get("/v1/topics").await.json();
    assert_eq!(
        list["topics"],
        json!([{"name": "orders", "partitions": 3, "records": 2, "size_bytes": list["topics"][0]["size_bytes"]}])
    );
    assert!(
        list["topics"][0]["size_bytes"]
            .as_u64()
            .is_some_and(|b| b > 0)
    );
    let d = s.get("/v1/topics/orders").await.json();
    assert_eq!(d["name"], "orders");
    let ends: u64 = d["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["end_offset"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(ends, 2);
    assert_eq!(d["partitions"][0]["start_offset"], 0);
    assert_eq!(d["corruption"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn read_parameters_are_checked() {
    let s = TestServer::with_topic("orders", 2).await;
    s.post(
        "/v1/topics/orders/records",
        &[("content-type", "application/json")],
        "[1,2,3]",
    )
    .await;
    assert_error(
        &s.get("/v1/topics/orders/records?offset=abc").await,
        400,
        "invalid_parameter",
    );
    assert_error(
        &s.get("/v1/topics/orders/records?max=0").await,
        400,
        "invalid_parameter",
    );
    assert_error(
        &s.get("/v1/topics/orders/records?max=10001").await,
        400,
        "invalid_parameter",
    );
    assert_error(
        &s.get("/v1/topics/orders/records?limit=3").await,
        400,
        "invalid_parameter",
    );
    assert_error(
        &s.get("/v1/topics/orders/records?partition=2").await,
        400,
        "unknown_partition",
    );
    let p = s
        .log
        .topic("orders")
        .expect("topic")
        .partitions()
        .iter()
        .position(|p| p.end_offset() == 3)
        .expect("a partition got the batch");
    assert_error(
        &s.get(&format!("/v1/topics/orders/records?partition={p}&offset=4"))
            .await,
        416,
        "offset_out_of_range",
    );
    let r = s
        .get(&format!(
            "/v1/topics/orders/records?partition={p}&offset=1&max=1"
        ))
        .await;
    assert_eq!(r.text().lines().count(), 1);
    assert!(r.text().contains(r#""offset":1"#), "{}", r.text());
    let end = s
        .get(&format!("/v1/topics/orders/records?partition={p}&offset=3"))
        .await;
    assert_eq!((end.status, end.text().as_str()), (200, ""));
}

#[tokio::test(flavor = "multi_thread")]
async fn group_offsets_commit_and_read_back() {
    let s = TestServer::with_topic("orders", 2).await;
    let r = s
        .post(
            "/v1/groups/billing/offsets",
            &[],
            r#"{"topic": "orders", "partition": 1, "offset": 7}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = s.get("/v1/groups/billing/offsets").await.json();
    assert_eq!(
        got["offsets"],
        json!([{"topic": "orders", "partition": 1, "offset": 7}])
    );
    assert_error(
        &s.post(
            "/v1/groups/billing/offsets",
            &[],
            r#"{"topic": "nope", "partition": 0, "offset": 1}"#,
        )
        .await,
        404,
        "unknown_topic",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn load_generator_posts_at_the_offered_rate() {
    use runnel_server::loadgen::{IngestBench, run_ingest_bench};
    let s = TestServer::with_topic("load", 2).await;
    let bench = IngestBench {
        topic: "load".into(),
        rate: 400,
        batch: 2,
        record_size: 50,
        duration: std::time::Duration::from_millis(250),
        connections: 4,
    };
    let report = run_ingest_bench(&s.client, &bench).await.expect("bench");
    assert_eq!(report.failed_requests, 0, "{report}");
    assert_eq!(report.acked, 100, "{report}");
    let stored: u64 = s
        .log
        .topic("load")
        .expect("topic")
        .partitions()
        .iter()
        .map(|p| p.end_offset())
        .sum();
    assert_eq!(stored, 100);
}

/// Issue 16: event times outside years 1–9999 and repeated single-valued headers are
/// refused, not stored and read back as something else.
#[tokio::test(flavor = "multi_thread")]
async fn out_of_range_event_time_and_repeated_key_are_refused() {
    let s = TestServer::with_topic("t", 1).await;
    for t in [
        "-9223372036854775808",
        "9223372036854775807",
        "253402300800000",
    ] {
        let r = s
            .post(
                "/v1/topics/t/records",
                &[("content-type", "application/json"), ("x-event-time", t)],
                "{}",
            )
            .await;
        assert_eq!(r.status, 400, "{t}: {}", r.text());
    }
    let r = s
        .post(
            "/v1/topics/t/records",
            &[
                ("content-type", "application/json"),
                ("x-key", "a"),
                ("x-key", "b"),
            ],
            "{}",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("x-key is given 2 times"), "{}", r.text());
}
