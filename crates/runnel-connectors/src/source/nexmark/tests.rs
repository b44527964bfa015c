//! Unit tests of the Nexmark generator and source.
use std::collections::BTreeMap;
use std::path::PathBuf;

use arrow::datatypes::{Field, Schema};
use runnel_common::Options;

use super::*;
use crate::format::json::encode_to_string;

fn bid_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, true),
        Field::new("bidder", DataType::Int64, true),
        Field::new("price", DataType::Int64, true),
        Field::new("channel", DataType::Utf8, true),
        Field::new("url", DataType::Utf8, true),
        Field::new(
            "date_time",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
        Field::new("extra", DataType::Utf8, true),
    ]))
}

fn spec(schema: SchemaRef, opts: &[(&str, &str)]) -> TableSpec {
    let mut o = vec![("connector".to_string(), "nexmark".to_string())];
    o.extend(opts.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    TableSpec {
        line: 0,
        name: "bids".into(),
        schema,
        watermark: None,
        metadata: Vec::new(),
        primary_key: Vec::new(),
        partition_keys: Vec::new(),
        options: Options::new(o),
    }
}

fn ctx(subtask: usize, parallelism: usize) -> SourceContext {
    SourceContext {
        subtask,
        parallelism,
        metrics: ConnectorMetrics::default(),
        data_dir: PathBuf::from("."),
        batch_size: 1000,
        log: None,
        checkpointing: false,
        dead_letters: crate::dead_letters::DeadLetters::new(None, None, true),
        task: None,
    }
}

#[test]
fn event_ids_follow_nexmark() {
    assert_eq!(last_base0_person_id(0), 0);
    assert_eq!(last_base0_person_id(49), 0);
    assert_eq!(last_base0_person_id(50), 1);
    assert_eq!(last_base0_auction_id(1), 0);
    assert_eq!(last_base0_auction_id(3), 2);
    assert_eq!(last_base0_auction_id(10), 2);
    assert_eq!(last_base0_auction_id(50), 2);
    assert_eq!(last_base0_auction_id(51), 3);
}

#[tokio::test]
async fn bids_look_like_nexmark() {
    let mut s = build(
        &spec(bid_schema(), &[("stream", "bid"), ("events", "100")]),
        vec![ctx(0, 1)],
    )
    .unwrap();
    let SourcePoll::Batch(b) = s[0].poll().await.unwrap() else {
        panic!("expected a batch")
    };
    assert_eq!(b.num_rows(), 92);
    let text = encode_to_string(&b).unwrap();
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("{\"auction\":"), "{first}");
    assert!(
        first.contains("\"date_time\":\"2026-01-01T00:00:00.000Z\""),
        "{first}"
    );
    assert!(matches!(s[0].poll().await.unwrap(), SourcePoll::End));
}

#[test]
fn flink_column_names_are_accepted() {
    let ts = DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None);
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("itemName", DataType::Utf8, true),
        Field::new("initialBid", DataType::Int64, true),
        Field::new("dateTime", ts.clone(), true),
        Field::new("expires", ts, true),
    ]));
    assert!(build(&spec(schema, &[("stream", "auction")]), vec![ctx(0, 1)]).is_ok());
}

#[test]
fn unknown_columns_and_types_are_errors() {
    let schema = Arc::new(Schema::new(vec![Field::new("nope", DataType::Int64, true)]));
    let err = build(&spec(schema, &[("stream", "bid")]), vec![ctx(0, 1)])
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("column 'nope' is not produced by the nexmark 'bid' stream"),
        "{err}"
    );
    let schema = Arc::new(Schema::new(vec![Field::new("price", DataType::Utf8, true)]));
    let err = build(&spec(schema, &[("stream", "bid")]), vec![ctx(0, 1)])
        .err()
        .unwrap();
    assert!(err.to_string().contains("which produces BIGINT"), "{err}");
    let err = build(&spec(bid_schema(), &[]), vec![ctx(0, 1)])
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("without 'stream', a nexmark table has Flink's shape"),
        "{err}"
    );
}

#[test]
fn flink_shape_sets_the_event_own_row() {
    let row = |s: NexmarkStream| DataType::Struct(stream_fields(s, None).into());
    let schema = Arc::new(Schema::new(vec![
        Field::new("event_type", DataType::Int32, true),
        Field::new("person", row(NexmarkStream::Person), true),
        Field::new("auction", row(NexmarkStream::Auction), true),
        Field::new("bid", row(NexmarkStream::Bid), true),
    ]));
    let s = spec(
        schema.clone(),
        &[("events.num", "100"), ("first-event.rate", "1000")],
    );
    let config = NexmarkConfig::try_new(&s).unwrap();
    let layout = layout(&s, None).unwrap();
    let mut src = NexmarkSource::new(schema, &config, layout, tables(), ctx(0, 1));
    let b = src.generate(1000, 100).unwrap().unwrap();
    assert_eq!(b.num_rows(), 100);
    let kinds = b.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
    for i in 0..100 {
        let k = kinds.value(i) as usize;
        assert_eq!(k, NexmarkStream::of_event(i as u64) as usize);
        for c in 0..3 {
            assert_eq!(b.column(1 + c).is_valid(i), c == k, "row {i}, column {c}");
        }
    }
    // Options Flink's connector takes that runnel's generator cannot honour.
    let err = NexmarkConfig::try_new(&spec(bid_schema(), &[("bid.proportion", "40")])).unwrap_err();
    assert!(err.to_string().contains("1 : 3 : 46"), "{err}");
}

#[test]
fn resumes_from_its_position() {
    let s = spec(bid_schema(), &[("stream", "bid"), ("seed", "7")]);
    let config = NexmarkConfig::try_new(&s).unwrap();
    let proj = layout(&s, Some(NexmarkStream::Bid)).unwrap();
    let mut a = NexmarkSource::new(bid_schema(), &config, proj.clone(), tables(), ctx(1, 2));
    let first = a.generate(30, u64::MAX).unwrap().unwrap();
    let pos = a.position().unwrap();
    let rest = a.generate(30, u64::MAX).unwrap().unwrap();
    let mut b = NexmarkSource::new(bid_schema(), &config, proj, tables(), ctx(1, 2));
    futures_lite_block(b.seek(&pos)).unwrap();
    assert_eq!(b.generate(30, u64::MAX).unwrap().unwrap(), rest);
    assert_ne!(first, rest);
}

fn futures_lite_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// A stream's columns as declared fields (timestamps in `tz`).
fn stream_fields(stream: NexmarkStream, tz: Option<&str>) -> Vec<Field> {
    stream
        .columns()
        .iter()
        .map(|(n, k)| {
            let dt = match k {
                Kind::Int => DataType::Int64,
                Kind::Str => DataType::Utf8,
                Kind::Ts => DataType::Timestamp(TimeUnit::Millisecond, tz.map(Into::into)),
            };
            Field::new(*n, dt, true)
        })
        .collect()
}

#[test]
fn person_and_auction_streams_generate() {
    for (stream, cols) in [(NexmarkStream::Person, 8), (NexmarkStream::Auction, 10)] {
        let fields = stream_fields(stream, Some("UTC"));
        let schema = Arc::new(Schema::new(fields));
        let s = spec(
            schema.clone(),
            &[("stream", stream.name()), ("events", "500")],
        );
        let config = NexmarkConfig::try_new(&s).unwrap();
        let proj = layout(&s, Some(stream)).unwrap();
        let mut src = NexmarkSource::new(schema, &config, proj, tables(), ctx(0, 1));
        let b = src.generate(1000, 500).unwrap().unwrap();
        assert_eq!(b.num_columns(), cols);
        let expect = if stream == NexmarkStream::Person {
            10
        } else {
            30
        };
        assert_eq!(b.num_rows(), expect);
        let text = encode_to_string(&b).unwrap();
        let mut ids = BTreeMap::new();
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            *ids.entry(v["id"].as_i64().unwrap()).or_insert(0) += 1;
        }
        // Ids are consecutive from 1000 and unique.
        assert_eq!(
            ids.keys().copied().collect::<Vec<_>>(),
            (1000..1000 + expect as i64).collect::<Vec<_>>()
        );
    }
}

/// Prints the generation speed of bids on one subtask: `cargo test --release -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_bid_generation_speed() {
    let s = spec(bid_schema(), &[("stream", "bid")]);
    let config = NexmarkConfig::try_new(&s).unwrap();
    let proj = layout(&s, Some(NexmarkStream::Bid)).unwrap();
    let mut src = NexmarkSource::new(bid_schema(), &config, proj, tables(), ctx(0, 1));
    let target = 5_000_000;
    let started = Instant::now();
    let mut rows = 0;
    while rows < target {
        rows += src
            .generate(DEFAULT_BATCH_SIZE, u64::MAX)
            .unwrap()
            .map_or(0, |b| b.num_rows());
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "nexmark: {rows} bids in {secs:.3} s = {:.2} M rows/s on one subtask",
        rows as f64 / secs / 1e6
    );
}
