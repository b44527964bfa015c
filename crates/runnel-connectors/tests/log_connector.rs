//! The `log` connector against a real embedded log in a temporary directory.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, BinaryArray, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use runnel_common::metrics::ConnectorMetrics;
use runnel_common::{Options, TableSpec};
use runnel_connectors::format::json::encode_to_string;
use runnel_connectors::registry::{build_sinks, build_sources};
use runnel_connectors::{ConnectorError, SinkContext, Source, SourceContext, SourcePoll};
use runnel_log::{Log, LogOptions, Record, TopicConfig};

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

fn spec(name: &str, fields: Vec<Field>, opts: &[(&str, &str)]) -> TableSpec {
    let mut o = vec![("connector".to_string(), "log".to_string())];
    o.extend(opts.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    TableSpec {
        line: 0,
        name: name.into(),
        schema: Arc::new(Schema::new(fields)),
        watermark: None,
        metadata: Vec::new(),
        primary_key: Vec::new(),
        partition_keys: Vec::new(),
        options: Options::new(o),
    }
}

fn source_ctxs(
    n: usize,
    log: &Arc<Log>,
    metrics: &ConnectorMetrics,
    batch_size: usize,
) -> Vec<SourceContext> {
    (0..n)
        .map(|subtask| SourceContext {
            subtask,
            parallelism: n,
            metrics: metrics.clone(),
            data_dir: PathBuf::from("."),
            batch_size,
            log: Some(log.clone()),
            checkpointing: false,
            dead_letters: runnel_connectors::dead_letters::DeadLetters::new(
                None,
                Some(log.clone()),
                true,
            ),
            task: None,
        })
        .collect()
}

fn sink_ctxs(n: usize, log: &Arc<Log>, metrics: &ConnectorMetrics) -> Vec<SinkContext> {
    (0..n)
        .map(|subtask| SinkContext {
            subtask,
            parallelism: n,
            metrics: metrics.clone(),
            data_dir: PathBuf::from("."),
            log: Some(log.clone()),
            checkpoint: None,
            dashboards: Default::default(),
            task: None,
            sealed: None,
            pipeline: None,
        })
        .collect()
}

fn open_log() -> (tempfile::TempDir, Arc<Log>) {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), LogOptions::default()).unwrap());
    (dir, log)
}

/// Polls until `End`; returns the batches as JSON lines, in order.
async fn drain(s: &mut Box<dyn Source>) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "bounded source did not end");
        match s.poll().await.unwrap() {
            SourcePoll::Batch(b) => {
                let text = encode_to_string(&b).unwrap();
                out.extend(text.lines().map(str::to_string));
            }
            SourcePoll::Pending => {}
            SourcePoll::End => return out,
        }
    }
}

fn append(log: &Log, topic: &str, p: u32, values: &[&str]) {
    let t = log.topic(topic).unwrap();
    t.partition(p)
        .unwrap()
        .append(values.iter().map(|v| Record::from_value(*v)).collect())
        .unwrap();
}

fn unwrap_err<T>(r: Result<T, ConnectorError>) -> ConnectorError {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn sink_then_source_round_trip() {
    let (_dir, log) = open_log();
    let fields = vec![
        Field::new("id", DataType::Int64, true),
        Field::new("key", DataType::Utf8, true),
        Field::new("event_time", ts(), true),
    ];
    let opts = [("topic", "orders"), ("partitions", "2")];
    let sink_spec = spec("out", fields.clone(), &opts);
    let m = ConnectorMetrics::default();
    let mut sinks = build_sinks(&sink_spec, sink_ctxs(1, &log, &m)).unwrap();
    let batch = RecordBatch::try_new(
        sink_spec.schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3, 4])) as ArrayRef,
            Arc::new(StringArray::from(vec!["a", "b", "a", "c"])),
            Arc::new(TimestampMillisecondArray::from(vec![
                1000, 2000, 3000, 4000,
            ])),
        ],
    )
    .unwrap();
    sinks[0].write(batch).await.unwrap();
    sinks[0].finish().await.unwrap();
    assert_eq!(m.rows.get(), 4);

    let topic = log.topic("orders").expect("the sink created the topic");
    assert_eq!(topic.partition_count(), 2);
    // Keyed: both rows with key "a" are in one partition, in order.
    let p = topic.partition_for(Some(b"a"));
    let recs = topic.partition(p).unwrap().read(0, 100, 1 << 20).unwrap();
    let a: Vec<_> = recs
        .iter()
        .filter(|r| r.key.as_deref() == Some(b"a"))
        .collect();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].event_time, Some(1000));
    assert_eq!(
        a[0].headers,
        vec![("content-type".to_string(), b"application/json".to_vec())]
    );
    assert_eq!(
        String::from_utf8_lossy(&a[0].value),
        r#"{"id":1,"key":"a","event_time":"1970-01-01T00:00:01.000Z"}"#
    );

    let src_spec = spec(
        "in",
        fields,
        &[
            ("topic", "orders"),
            ("bounded", "true"),
            ("scan.startup.mode", "earliest"),
        ],
    );
    let sm = ConnectorMetrics::default();
    let mut sources = build_sources(&src_spec, source_ctxs(1, &log, &sm, 100)).unwrap();
    let mut rows = drain(&mut sources[0]).await;
    rows.sort();
    assert_eq!(
        rows,
        vec![
            r#"{"id":1,"key":"a","event_time":"1970-01-01T00:00:01.000Z"}"#,
            r#"{"id":2,"key":"b","event_time":"1970-01-01T00:00:02.000Z"}"#,
            r#"{"id":3,"key":"a","event_time":"1970-01-01T00:00:03.000Z"}"#,
            r#"{"id":4,"key":"c","event_time":"1970-01-01T00:00:04.000Z"}"#,
        ]
    );
    assert_eq!(sm.rows.get(), 4);
}

#[tokio::test]
async fn json_metadata_columns_are_filled_when_absent() {
    let (_dir, log) = open_log();
    log.create_topic("m", TopicConfig::with_partitions(1))
        .unwrap();
    let t = log.topic("m").unwrap();
    t.partition(0)
        .unwrap()
        .append(vec![
            Record {
                key: Some(b"k1".to_vec()),
                value: br#"{"id":1}"#.to_vec(),
                headers: Vec::new(),
                event_time: Some(5000),
            },
            Record {
                key: Some(b"k2".to_vec()),
                value: br#"{"id":2,"key":"own","offset":99}"#.to_vec(),
                headers: Vec::new(),
                event_time: Some(6000),
            },
        ])
        .unwrap();
    let s = spec(
        "t",
        vec![
            Field::new("id", DataType::Int64, true),
            Field::new("key", DataType::Utf8, true),
            Field::new("event_time", ts(), true),
            Field::new("partition", DataType::Int32, true),
            Field::new("offset", DataType::Int64, true),
        ],
        &[("topic", "m"), ("bounded", "true")],
    );
    let m = ConnectorMetrics::default();
    let mut src = build_sources(&s, source_ctxs(1, &log, &m, 10)).unwrap();
    assert_eq!(
        drain(&mut src[0]).await,
        vec![
            r#"{"id":1,"key":"k1","event_time":"1970-01-01T00:00:05.000Z","partition":0,"offset":0}"#,
            r#"{"id":2,"key":"own","event_time":"1970-01-01T00:00:06.000Z","partition":0,"offset":99}"#,
        ]
    );
}

#[tokio::test]
async fn raw_format_exposes_record_columns() {
    let (_dir, log) = open_log();
    log.create_topic("frames", TopicConfig::with_partitions(1))
        .unwrap();
    let t = log.topic("frames").unwrap();
    t.partition(0)
        .unwrap()
        .append(vec![
            Record {
                key: Some(b"cam-1".to_vec()),
                value: vec![0xff, 0xd8, 0x00],
                headers: vec![("content-type".into(), b"image/jpeg".to_vec())],
                event_time: Some(1_767_225_600_000),
            },
            Record::from_value("plain"),
        ])
        .unwrap();
    let s = spec(
        "frames",
        vec![
            Field::new("key", DataType::Utf8, true),
            Field::new("value", DataType::Binary, true),
            Field::new("headers", DataType::Utf8, true),
            Field::new("event_time", ts(), true),
            Field::new("partition", DataType::Int32, true),
            Field::new("offset", DataType::Int64, true),
            Field::new("ingest_time", ts(), true),
        ],
        &[("topic", "frames"), ("format", "raw"), ("bounded", "true")],
    );
    let m = ConnectorMetrics::default();
    let mut src = build_sources(&s, source_ctxs(1, &log, &m, 10)).unwrap();
    let rows = drain(&mut src[0]).await;
    assert_eq!(rows.len(), 2);
    let first: serde_json::Value = serde_json::from_str(&rows[0]).unwrap();
    assert_eq!(first["key"], "cam-1");
    assert_eq!(first["value"], "/9gA"); // base64 of ff d8 00
    assert_eq!(first["headers"], r#"{"content-type":"image/jpeg"}"#);
    assert_eq!(first["event_time"], "2026-01-01T00:00:00.000Z");
    assert_eq!(first["partition"], 0);
    assert_eq!(first["offset"], 0);
    assert!(first["ingest_time"].is_string());
    let second: serde_json::Value = serde_json::from_str(&rows[1]).unwrap();
    assert_eq!(second["key"], serde_json::Value::Null);
    assert_eq!(second["offset"], 1);
    // No event time: the append time stands in.
    assert_eq!(second["event_time"], second["ingest_time"]);

    let bad = spec(
        "frames",
        vec![Field::new("payload", DataType::Binary, true)],
        &[("topic", "frames"), ("format", "raw")],
    );
    let e = unwrap_err(build_sources(&bad, source_ctxs(1, &log, &m, 10)));
    assert!(e.to_string().contains("payload"), "{e}");
    assert!(e.to_string().contains("event_time"), "{e}");
}

#[tokio::test]
async fn malformed_json_goes_to_the_dead_letter_topic() {
    let (_dir, log) = open_log();
    log.create_topic("events", TopicConfig::with_partitions(1))
        .unwrap();
    append(
        &log,
        "events",
        0,
        &[r#"{"id":1}"#, "{not json", r#"{"id":"x"}"#, r#"{"id":4}"#],
    );
    let s = spec(
        "events",
        vec![Field::new("id", DataType::Int64, true)],
        &[("topic", "events"), ("bounded", "true")],
    );
    let m = ConnectorMetrics::default();
    let mut src = build_sources(&s, source_ctxs(1, &log, &m, 100)).unwrap();
    assert_eq!(drain(&mut src[0]).await, vec![r#"{"id":1}"#, r#"{"id":4}"#]);
    assert_eq!(m.rows.get(), 2);
    assert_eq!(m.dead_letters.get(), 2);

    let dl = log
        .topic("events.dead-letter")
        .expect("dead-letter topic created on first reject");
    let recs = dl.partition(0).unwrap().read(0, 10, 1 << 20).unwrap();
    assert_eq!(recs.len(), 2);
    let first: serde_json::Value = serde_json::from_slice(&recs[0].value).unwrap();
    assert_eq!(first["topic"], "events");
    assert_eq!(first["partition"], 0);
    assert_eq!(first["offset"], 1);
    assert_eq!(first["raw"], "{not json");
    assert!(
        first["reason"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON"),
        "{first}"
    );
    let second: serde_json::Value = serde_json::from_slice(&recs[1].value).unwrap();
    assert_eq!(second["offset"], 2);
    assert_eq!(second["reason"], r#"column 'id': expected BIGINT, got "x""#);
}

#[tokio::test]
async fn group_offsets_resume_where_the_last_run_stopped() {
    let (_dir, log) = open_log();
    log.create_topic("g", TopicConfig::with_partitions(1))
        .unwrap();
    append(&log, "g", 0, &[r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#]);
    let s = spec(
        "g",
        vec![Field::new("n", DataType::Int64, true)],
        &[("topic", "g"), ("bounded", "true"), ("group", "reader")],
    );
    let m = ConnectorMetrics::default();
    let mut first = build_sources(&s, source_ctxs(1, &log, &m, 2)).unwrap();
    assert_eq!(drain(&mut first[0]).await.len(), 3);
    assert_eq!(log.committed_offset("reader", "g", 0), Some(3));

    append(&log, "g", 0, &[r#"{"n":4}"#, r#"{"n":5}"#]);
    let mut second = build_sources(&s, source_ctxs(1, &log, &m, 10)).unwrap();
    assert_eq!(
        drain(&mut second[0]).await,
        vec![r#"{"n":4}"#, r#"{"n":5}"#]
    );
    assert_eq!(log.committed_offset("reader", "g", 0), Some(5));

    // The default group is per table; `latest` skips what is there.
    let latest = spec(
        "other",
        vec![Field::new("n", DataType::Int64, true)],
        &[
            ("topic", "g"),
            ("bounded", "true"),
            ("scan.startup.mode", "latest"),
        ],
    );
    let mut third = build_sources(&latest, source_ctxs(1, &log, &m, 10)).unwrap();
    assert!(drain(&mut third[0]).await.is_empty());
}

#[tokio::test]
async fn position_and_seek_resume_per_partition() {
    let (_dir, log) = open_log();
    log.create_topic("s", TopicConfig::with_partitions(1))
        .unwrap();
    append(&log, "s", 0, &[r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#]);
    let s = spec(
        "s",
        vec![Field::new("n", DataType::Int64, true)],
        &[
            ("topic", "s"),
            ("bounded", "true"),
            ("scan.startup.mode", "earliest"),
        ],
    );
    let m = ConnectorMetrics::default();
    let mut a = build_sources(&s, source_ctxs(1, &log, &m, 1)).unwrap();
    assert!(matches!(a[0].poll().await.unwrap(), SourcePoll::Batch(_)));
    let pos = a[0].position().unwrap();
    assert_eq!(pos, serde_json::json!({"0": 1}));
    let mut b = build_sources(&s, source_ctxs(1, &log, &m, 10)).unwrap();
    b[0].seek(&pos).await.unwrap();
    assert_eq!(drain(&mut b[0]).await, vec![r#"{"n":2}"#, r#"{"n":3}"#]);
}

#[tokio::test]
async fn unknown_option_and_missing_log_are_clear_errors() {
    let (_dir, log) = open_log();
    let m = ConnectorMetrics::default();
    let fields = vec![Field::new("n", DataType::Int64, true)];
    let s = spec("t", fields.clone(), &[("topic", "x"), ("topik", "y")]);
    let e = unwrap_err(build_sources(&s, source_ctxs(1, &log, &m, 10)));
    assert!(matches!(e, ConnectorError::Option { .. }), "{e}");
    assert!(e.to_string().contains("'topik'"), "{e}");
    assert!(e.to_string().contains("scan.startup.mode"), "{e}");
    let e = unwrap_err(build_sinks(&s, sink_ctxs(1, &log, &m)));
    assert!(matches!(e, ConnectorError::Option { .. }), "{e}");

    let s = spec(
        "t",
        fields.clone(),
        &[("scan.startup.mode", "newest"), ("topic", "x")],
    );
    let e = unwrap_err(build_sources(&s, source_ctxs(1, &log, &m, 10)));
    assert!(e.to_string().contains("group-offsets"), "{e}");

    let s = spec("t", fields, &[("topic", "x")]);
    let mut ctxs = source_ctxs(1, &log, &m, 10);
    ctxs[0].log = None;
    let e = unwrap_err(build_sources(&s, ctxs));
    assert!(e.to_string().contains("--data-dir"), "{e}");
    assert!(log.topic("x").is_none());
}

#[tokio::test]
async fn three_partitions_over_two_subtasks_read_every_record_once() {
    let (_dir, log) = open_log();
    log.create_topic("p3", TopicConfig::with_partitions(3))
        .unwrap();
    let mut expected = BTreeSet::new();
    for p in 0..3u32 {
        let values: Vec<String> = (0..10)
            .map(|i| {
                let n = p * 100 + i;
                expected.insert(n as i64);
                format!("{{\"n\":{n}}}")
            })
            .collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        append(&log, "p3", p, &refs);
    }
    let s = spec(
        "p3",
        vec![
            Field::new("n", DataType::Int64, true),
            Field::new("partition", DataType::Int64, true),
        ],
        &[("topic", "p3"), ("bounded", "true")],
    );
    let m = ConnectorMetrics::default();
    let mut subtasks = build_sources(&s, source_ctxs(2, &log, &m, 4)).unwrap();
    let mut seen = Vec::new();
    for (i, sub) in subtasks.iter_mut().enumerate() {
        for line in drain(sub).await {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let p = v["partition"].as_i64().unwrap();
            assert_eq!(p as usize % 2, i, "partition {p} read by subtask {i}");
            seen.push(v["n"].as_i64().unwrap());
        }
    }
    assert_eq!(seen.len(), 30);
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), expected);
    assert_eq!(m.rows.get(), 30);
}

#[tokio::test]
async fn unbounded_source_waits_briefly_then_sees_new_records() {
    let (_dir, log) = open_log();
    let s = spec(
        "live",
        vec![Field::new("n", DataType::Int64, true)],
        &[("topic", "live")],
    );
    let m = ConnectorMetrics::default();
    let mut src = build_sources(&s, source_ctxs(1, &log, &m, 10)).unwrap();
    assert!(log.topic("live").is_some(), "the source created the topic");
    let started = Instant::now();
    assert!(matches!(src[0].poll().await.unwrap(), SourcePoll::Pending));
    assert!(started.elapsed() < Duration::from_millis(500));

    let writer = log.clone();
    let t = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(30));
        append(&writer, "live", 0, &[r#"{"n":7}"#]);
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let got = loop {
        assert!(
            Instant::now() < deadline,
            "the appended record never arrived"
        );
        if let SourcePoll::Batch(b) = src[0].poll().await.unwrap() {
            break encode_to_string(&b).unwrap();
        }
    };
    t.await.unwrap();
    assert_eq!(got, "{\"n\":7}\n");
}

#[tokio::test]
async fn raw_sink_writes_key_value_and_headers_as_given() {
    let (_dir, log) = open_log();
    let s = spec(
        "copy",
        vec![
            Field::new("key", DataType::Utf8, true),
            Field::new("value", DataType::Binary, true),
            Field::new("headers", DataType::Utf8, true),
        ],
        &[("topic", "copy"), ("format", "raw")],
    );
    let m = ConnectorMetrics::default();
    let mut sinks = build_sinks(&s, sink_ctxs(1, &log, &m)).unwrap();
    let batch = RecordBatch::try_new(
        s.schema.clone(),
        vec![
            Arc::new(StringArray::from(vec![Some("k"), None])) as ArrayRef,
            Arc::new(BinaryArray::from(vec![&[1u8, 2][..], b"x"])),
            Arc::new(StringArray::from(vec![
                Some(r#"{"content-type":"image/png"}"#),
                None,
            ])),
        ],
    )
    .unwrap();
    sinks[0].write(batch).await.unwrap();
    let recs = log
        .topic("copy")
        .unwrap()
        .partition(0)
        .unwrap()
        .read(0, 10, 1 << 20)
        .unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].key.as_deref(), Some(&b"k"[..]));
    assert_eq!(recs[0].value, vec![1, 2]);
    assert_eq!(
        recs[0].headers,
        vec![("content-type".to_string(), b"image/png".to_vec())]
    );
    assert_eq!(recs[1].key, None);
    assert!(recs[1].headers.is_empty());

    let bad = spec(
        "copy",
        vec![Field::new("id", DataType::Int64, true)],
        &[("topic", "copy"), ("format", "raw")],
    );
    let e = unwrap_err(build_sinks(&bad, sink_ctxs(1, &log, &m)));
    assert!(e.to_string().contains("'id'"), "{e}");
}
