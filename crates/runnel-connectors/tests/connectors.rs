//! Connectors built through the registry, as the engine builds them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use runnel_common::metrics::ConnectorMetrics;
use runnel_common::{Options, TableSpec};
use runnel_connectors::format::json::{decode_all, encode_to_string};
use runnel_connectors::registry::{build_sinks, build_sources};
use runnel_connectors::{Sink, SinkContext, Source, SourceContext, SourcePoll};

fn spec(name: &str, schema: SchemaRef, opts: &[(&str, &str)]) -> TableSpec {
    TableSpec {
        line: 0,
        name: name.into(),
        schema,
        watermark: None,
        metadata: Vec::new(),
        primary_key: Vec::new(),
        partition_keys: Vec::new(),
        options: Options::new(opts.iter().map(|(k, v)| (k.to_string(), v.to_string()))),
    }
}

fn source_ctxs(n: usize, metrics: &ConnectorMetrics, batch_size: usize) -> Vec<SourceContext> {
    (0..n)
        .map(|i| SourceContext {
            subtask: i,
            parallelism: n,
            metrics: metrics.clone(),
            data_dir: PathBuf::from("."),
            batch_size,
            log: None,
            checkpointing: false,
            dead_letters: runnel_connectors::dead_letters::DeadLetters::new(None, None, true),
            task: None,
        })
        .collect()
}

fn sink_ctxs(n: usize, metrics: &ConnectorMetrics) -> Vec<SinkContext> {
    (0..n)
        .map(|i| SinkContext {
            subtask: i,
            parallelism: n,
            metrics: metrics.clone(),
            data_dir: PathBuf::from("."),
            log: None,
            checkpoint: None,
            dashboards: Default::default(),
            task: None,
            sealed: None,
            pipeline: None,
        })
        .collect()
}

/// Every row of a source subtask, as JSON lines.
async fn drain(source: &mut Box<dyn Source>) -> Vec<String> {
    let mut rows = Vec::new();
    loop {
        match source.poll().await.expect("poll") {
            SourcePoll::Batch(b) => {
                assert!(b.num_rows() > 0);
                rows.extend(
                    encode_to_string(&b)
                        .expect("encode")
                        .lines()
                        .map(str::to_string),
                );
            }
            SourcePoll::Pending => {}
            SourcePoll::End => return rows,
        }
    }
}

fn kv_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("v", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]))
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write input");
}

#[tokio::test]
async fn file_source_reads_a_directory_split_across_subtasks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("in");
    std::fs::create_dir(&dir).expect("mkdir");
    write(
        &dir,
        "b.jsonl",
        "{\"k\":\"b1\",\"v\":1,\"ts\":1000}\n{\"k\":\"b2\",\"v\":\"x\"}\n",
    );
    write(
        &dir,
        "a.jsonl",
        "{\"k\":\"a1\",\"v\":1,\"ts\":\"1970-01-01T00:00:02Z\"}\n\n{\"k\":\"a2\"}\nnot json\n",
    );
    write(&dir, "c.jsonl", "{\"k\":\"c1\",\"v\":3}\n");
    write(&dir, ".hidden.jsonl", "{\"k\":\"hidden\"}\n");
    std::fs::create_dir(dir.join("sub")).expect("mkdir sub");

    let metrics = ConnectorMetrics::default();
    let path = dir.display().to_string();
    let t = spec("t", kv_schema(), &[("connector", "file"), ("path", &path)]);
    let mut sources = build_sources(&t, source_ctxs(2, &metrics, 2)).expect("build");
    let first = drain(&mut sources[0]).await;
    let second = drain(&mut sources[1]).await;
    // Files in name order a, b, c: subtask 0 reads a and c, subtask 1 reads b.
    assert_eq!(
        first,
        vec![
            r#"{"k":"a1","v":1,"ts":"1970-01-01T00:00:02.000Z"}"#,
            r#"{"k":"a2","v":null,"ts":null}"#,
            r#"{"k":"c1","v":3,"ts":null}"#,
        ]
    );
    assert_eq!(
        second,
        vec![r#"{"k":"b1","v":1,"ts":"1970-01-01T00:00:01.000Z"}"#]
    );
    assert_eq!(metrics.rows.get(), 4);
    assert_eq!(metrics.dead_letters.get(), 2);

    let dead_path = format!("{path}.dead-letter.jsonl");
    assert_eq!(
        metrics.dead_letter_path.lock().expect("lock").clone(),
        Some(dead_path.clone())
    );
    let mut dead: Vec<serde_json::Value> = std::fs::read_to_string(&dead_path)
        .expect("dead letters written")
        .lines()
        .map(|l| serde_json::from_str(l).expect("dead letter is JSON"))
        .collect();
    dead.sort_by_key(|v| v["file"].as_str().unwrap_or_default().to_string());
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["file"], dir.join("a.jsonl").display().to_string());
    assert_eq!(dead[0]["line"], 4);
    assert_eq!(dead[0]["raw"], "not json");
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("invalid JSON")
    );
    assert_eq!(dead[1]["line"], 2);
    assert_eq!(dead[1]["reason"], "column 'v': expected BIGINT, got \"x\"");
    assert_eq!(dead[1]["raw"], r#"{"k":"b2","v":"x"}"#);
}

#[tokio::test]
async fn file_source_reads_csv_and_writes_no_dead_letters_when_clean() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write(tmp.path(), "in.csv", "V,k\n1,x\n,y\n");
    let path = tmp.path().join("in.csv").display().to_string();
    let metrics = ConnectorMetrics::default();
    let t = spec(
        "t",
        kv_schema(),
        &[("connector", "file"), ("path", &path), ("format", "csv")],
    );
    let mut sources = build_sources(&t, source_ctxs(1, &metrics, 100)).expect("build");
    assert_eq!(
        drain(&mut sources[0]).await,
        vec![
            r#"{"k":"x","v":1,"ts":null}"#,
            r#"{"k":"y","v":null,"ts":null}"#
        ]
    );
    assert!(!Path::new(&format!("{path}.dead-letter.jsonl")).exists());
    assert_eq!(metrics.dead_letter_path.lock().expect("lock").clone(), None);
}

#[test]
fn unknown_option_names_the_known_ones() {
    let t = spec(
        "t",
        kv_schema(),
        &[("connector", "file"), ("path", "/tmp"), ("pth", "x")],
    );
    let err = build_sources(&t, source_ctxs(1, &ConnectorMetrics::default(), 10))
        .err()
        .expect("error");
    assert_eq!(
        err.to_string(),
        "table 't': unknown option 'pth' for connector 'file'; did you mean 'path'?; known options: path, format, dead-letter.path, dead-letter.topic, sink.rolling-policy.file-size, sink.rolling-policy.rollover-interval"
    );
    let t = spec(
        "n",
        kv_schema(),
        &[("connector", "nexmark"), ("stream", "bid"), ("speed", "1")],
    );
    let err = build_sources(&t, source_ctxs(1, &ConnectorMetrics::default(), 10))
        .err()
        .expect("error");
    assert!(
        err.to_string()
            .contains("unknown option 'speed' for connector 'nexmark'"),
        "{err}"
    );
}

#[test]
fn missing_input_path_is_an_error_naming_it() {
    let t = spec(
        "t",
        kv_schema(),
        &[("connector", "file"), ("path", "/no/such/input.jsonl")],
    );
    let err = build_sources(&t, source_ctxs(1, &ConnectorMetrics::default(), 10))
        .err()
        .expect("error");
    let msg = err.to_string();
    assert!(
        msg.contains("table 't': input path '/no/such/input.jsonl'"),
        "{msg}"
    );
    let t = spec("t", kv_schema(), &[("connector", "file")]);
    let err = build_sources(&t, source_ctxs(1, &ConnectorMetrics::default(), 10))
        .err()
        .expect("error");
    assert_eq!(
        err.to_string(),
        "table 't': connector 'file' needs option 'path'"
    );
}

#[tokio::test]
async fn file_sink_collects_every_subtask() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out.jsonl");
    let path = out.display().to_string();
    let metrics = ConnectorMetrics::default();
    let t = spec(
        "out",
        kv_schema(),
        &[("connector", "file"), ("path", &path)],
    );
    let mut sinks: Vec<Box<dyn Sink>> = build_sinks(&t, sink_ctxs(2, &metrics)).expect("build");
    assert!(out.exists(), "created at build time");
    let batch = |text: &str| {
        decode_all(kv_schema(), text.as_bytes())
            .expect("decode")
            .batch
            .expect("rows")
    };
    sinks[0]
        .write(batch("{\"k\":\"a\",\"v\":1}\n{\"k\":\"b\"}"))
        .await
        .expect("write");
    sinks[1]
        .write(batch("{\"k\":\"c\",\"ts\":0}"))
        .await
        .expect("write");
    for s in &mut sinks {
        s.finish().await.expect("finish");
    }
    assert_eq!(
        std::fs::read_to_string(&out).expect("read"),
        concat!(
            r#"{"k":"a","v":1,"ts":null}"#,
            "\n",
            r#"{"k":"b","v":null,"ts":null}"#,
            "\n",
            r#"{"k":"c","v":null,"ts":"1970-01-01T00:00:00.000Z"}"#,
            "\n"
        )
    );
    assert_eq!(metrics.rows.get(), 3);

    let bad = spec(
        "out",
        kv_schema(),
        &[("connector", "file"), ("path", "/dev/null/sub/out.jsonl")],
    );
    let err = build_sinks(&bad, sink_ctxs(1, &metrics))
        .err()
        .expect("error");
    assert!(err.to_string().contains("/dev/null/sub/out.jsonl"), "{err}");
}

#[tokio::test]
async fn blackhole_counts_and_sources_cannot_be_sinks() {
    let metrics = ConnectorMetrics::default();
    let t = spec("b", kv_schema(), &[("connector", "blackhole")]);
    let mut sinks = build_sinks(&t, sink_ctxs(1, &metrics)).expect("build");
    let batch = decode_all(kv_schema(), b"{\"k\":\"a\"}\n{\"k\":\"b\"}")
        .expect("decode")
        .batch
        .expect("rows");
    sinks[0].write(batch).await.expect("write");
    sinks[0].finish().await.expect("finish");
    assert_eq!(metrics.rows.get(), 2);
    let t = spec(
        "n",
        kv_schema(),
        &[("connector", "nexmark"), ("stream", "bid")],
    );
    let err = build_sinks(&t, sink_ctxs(1, &metrics))
        .err()
        .expect("error");
    assert!(err.to_string().contains("not written to"), "{err}");
}

fn nexmark_schema(stream: &str) -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, None);
    let fields = match stream {
        "bid" => vec![
            Field::new("auction", DataType::Int64, true),
            Field::new("bidder", DataType::Int64, true),
            Field::new("price", DataType::Int64, true),
            Field::new("channel", DataType::Utf8, true),
            Field::new("url", DataType::Utf8, true),
            Field::new("date_time", ts(), true),
            Field::new("extra", DataType::Utf8, true),
        ],
        "auction" => vec![
            Field::new("id", DataType::Int64, true),
            Field::new("expires", ts(), true),
        ],
        _ => vec![
            Field::new("date_time", ts(), true),
            Field::new("id", DataType::Int64, true),
        ],
    };
    Arc::new(Schema::new(fields))
}

async fn nexmark_rows(stream: &str, parallelism: usize, seed: &str, events: &str) -> Vec<String> {
    let t = spec(
        stream,
        nexmark_schema(stream),
        &[
            ("connector", "nexmark"),
            ("stream", stream),
            ("events", events),
            ("seed", seed),
            ("batch-size", "333"),
        ],
    );
    let metrics = ConnectorMetrics::default();
    let mut rows = Vec::new();
    for mut s in build_sources(&t, source_ctxs(parallelism, &metrics, 1000)).expect("build") {
        rows.extend(drain(&mut s).await);
    }
    assert_eq!(metrics.rows.get(), rows.len() as u64);
    rows
}

#[tokio::test]
async fn nexmark_is_deterministic_and_splits_across_subtasks() {
    let one = nexmark_rows("bid", 1, "42", "5000").await;
    assert_eq!(one, nexmark_rows("bid", 1, "42", "5000").await);
    assert_ne!(one, nexmark_rows("bid", 1, "43", "5000").await);
    let mut two = nexmark_rows("bid", 2, "42", "5000").await;
    let mut sorted = one.clone();
    sorted.sort();
    two.sort();
    assert_eq!(sorted, two);
}

#[tokio::test]
async fn nexmark_proportions_are_1_3_46() {
    let persons = nexmark_rows("person", 3, "42", "5000").await.len();
    let auctions = nexmark_rows("auction", 3, "42", "5000").await.len();
    let bids = nexmark_rows("bid", 3, "42", "5000").await.len();
    assert_eq!((persons, auctions, bids), (100, 300, 4600));
}
