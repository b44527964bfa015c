//! Integration tests of the embedded log: durability, group commit, recovery, retention.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use runnel_log::{
    BenchLimit, Fault, FsyncPolicy, Log, LogError, LogOptions, Record, TopicConfig,
    run_append_bench, run_read_bench,
};

// ---------- helpers ----------

fn options() -> LogOptions {
    LogOptions {
        index_interval_bytes: 256,
        ..LogOptions::default()
    }
}

fn open(dir: &Path) -> Log {
    Log::open(dir, options()).expect("open log")
}

fn small_segments(partitions: u32) -> TopicConfig {
    TopicConfig {
        segment_bytes: 1024,
        ..TopicConfig::with_partitions(partitions)
    }
}

fn value(i: u64) -> Vec<u8> {
    format!("value-{i:06}-{}", "x".repeat((i % 37) as usize)).into_bytes()
}

fn partition_dir(dir: &Path, topic: &str, p: u32) -> PathBuf {
    dir.join("topics").join(topic).join(p.to_string())
}

fn segment_files(dir: &Path, topic: &str, p: u32) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(partition_dir(dir, topic, p))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

fn read_all(log: &Log, topic: &str, p: u32) -> Vec<(u64, Vec<u8>)> {
    let t = log.topic(topic).unwrap();
    let part = t.partition(p).unwrap();
    let mut out = Vec::new();
    let mut offset = part.start_offset();
    loop {
        let got = part.read(offset, 7, 1 << 20).unwrap();
        let Some(last) = got.last() else { break };
        offset = last.offset + 1;
        out.extend(got.into_iter().map(|r| (r.offset, r.value)));
    }
    out
}

/// Appends `batches` batches of `per_batch` records to partition 0; returns the frame end
/// positions (file, byte) after each batch, by reading the segment file sizes.
fn fill(log: &Log, topic: &str, batches: u64, per_batch: u64) {
    let part = log.topic(topic).unwrap();
    let part = part.partition(0).unwrap();
    for b in 0..batches {
        let recs = (0..per_batch)
            .map(|i| Record::from_value(value(b * per_batch + i)))
            .collect();
        part.append(recs).unwrap();
    }
}

/// Byte positions of frame starts in a segment file (walks the length fields).
fn frame_starts(file: &Path) -> Vec<u64> {
    let bytes = fs::read(file).unwrap();
    let mut pos = 0usize;
    let mut starts = Vec::new();
    while pos + 11 <= bytes.len() {
        starts.push(pos as u64);
        let len = u32::from_le_bytes(bytes[pos + 3..pos + 7].try_into().unwrap()) as usize + 11;
        pos += len;
    }
    starts
}

/// Captures tracing events (level + all fields) on the current thread.
#[derive(Default, Clone)]
struct Captured(Arc<Mutex<Vec<String>>>);

impl Captured {
    fn warnings(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

struct CaptureSubscriber(Captured);

struct FieldText(String);

impl tracing::field::Visit for FieldText {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
}

impl tracing::Subscriber for CaptureSubscriber {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            let mut text = FieldText(String::new());
            event.record(&mut text);
            self.0.0.lock().unwrap().push(text.0);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn open_capturing(dir: &Path) -> (Log, Captured) {
    let captured = Captured::default();
    let log = tracing::subscriber::with_default(CaptureSubscriber(captured.clone()), || open(dir));
    (log, captured)
}

// ---------- basics ----------

#[test]
fn append_read_round_trip_with_all_fields() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let topic = log
        .create_topic("orders", TopicConfig::with_partitions(3))
        .unwrap();
    assert!(matches!(
        log.create_topic("orders", TopicConfig::with_partitions(1)),
        Err(LogError::TopicExists(_))
    ));
    for bad in ["", "a/b", "..", "sp ace", &"x".repeat(201)] {
        assert!(matches!(
            log.create_topic(bad, TopicConfig::default()),
            Err(LogError::InvalidName { .. })
        ));
    }
    log.create_topic("a.b_c-D9", TopicConfig::default())
        .unwrap();
    assert_eq!(
        log.topics(),
        vec!["a.b_c-D9".to_string(), "orders".to_string()]
    );

    let p = topic.partition(1).unwrap();
    let rec = Record {
        key: Some(b"k1".to_vec()),
        value: b"hello".to_vec(),
        headers: vec![("h".into(), b"v".to_vec()), ("h".into(), Vec::new())],
        event_time: Some(-5),
    };
    let r = p
        .append(vec![rec.clone(), Record::from_value("second")])
        .unwrap();
    assert_eq!((r.base_offset, r.count), (0, 2));
    assert_eq!(p.end_offset(), 2);
    assert_eq!(p.start_offset(), 0);
    assert!(p.size_bytes() > 0);
    let got = p.read(0, 10, 1 << 20).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].offset, 0);
    assert!(got[0].timestamp > 1_600_000_000_000);
    assert_eq!(got[0].clone().into_record(), rec);
    assert_eq!(got[1].value, b"second");
    assert_eq!(p.read(1, 10, 1 << 20).unwrap().len(), 1);
    assert!(p.read(2, 10, 1 << 20).unwrap().is_empty());
    assert!(matches!(
        p.read(3, 10, 1),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        p.append(Vec::new()),
        Err(LogError::InvalidAppend(_))
    ));
    // max_bytes limits but always returns one record.
    assert_eq!(p.read(0, 10, 1).unwrap().len(), 1);

    // Keys route stably; no key → round robin over all partitions.
    let k = topic.partition_for(Some(b"customer-7"));
    assert_eq!(k, topic.partition_for(Some(b"customer-7")));
    let rr: std::collections::BTreeSet<u32> = (0..6).map(|_| topic.partition_for(None)).collect();
    assert_eq!(rr.len(), 3);
    assert!(topic.partition(3).is_none());
    assert_eq!(topic.partitions().len(), 3);
    assert!(log.health().is_healthy());
}

#[test]
fn reopen_keeps_records_config_and_refuses_a_second_opener() {
    let dir = tempfile::tempdir().unwrap();
    let config = TopicConfig {
        retention_ms: Some(60_000),
        fsync: FsyncPolicy::Interval(Duration::from_millis(20)),
        ..small_segments(2)
    };
    {
        let log = open(dir.path());
        assert!(matches!(
            Log::open(dir.path(), options()),
            Err(LogError::Locked { .. })
        ));
        log.create_topic("t", config.clone()).unwrap();
        fill(&log, "t", 40, 3);
        log.close().unwrap();
    }
    let log = open(dir.path());
    let t = log.topic("t").unwrap();
    assert_eq!(t.config(), &config);
    let all = read_all(&log, "t", 0);
    assert_eq!(all.len(), 120);
    for (i, (off, v)) in all.iter().enumerate() {
        assert_eq!(*off, i as u64);
        assert_eq!(v, &value(i as u64));
    }
    assert!(log.health().is_healthy(), "{:?}", log.health());
    drop(log);
    // Drop (without close) also writes recovery points; a third open works.
    let log = open(dir.path());
    assert_eq!(
        log.topic("t").unwrap().partition(0).unwrap().end_offset(),
        120
    );
}

// ---------- group commit ----------

#[test]
fn concurrent_appenders_get_unique_contiguous_offsets_and_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let topic = log.create_topic("gc", small_segments(1)).unwrap();
    let threads = 8u64;
    let per_thread = 60u64;
    let results: Vec<Vec<(u64, Vec<u8>)>> = std::thread::scope(|s| {
        (0..threads)
            .map(|t| {
                let topic = topic.clone();
                s.spawn(move || {
                    let p = topic.partition(0).unwrap();
                    (0..per_thread)
                        .map(|i| {
                            let v = format!("t{t}-r{i}").into_bytes();
                            let r = p.append(vec![Record::from_value(v.clone())]).unwrap();
                            assert_eq!(r.count, 1);
                            (r.base_offset, v)
                        })
                        .collect()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect()
    });
    let mut by_offset = BTreeMap::new();
    for (off, v) in results.into_iter().flatten() {
        assert!(
            by_offset.insert(off, v).is_none(),
            "offset {off} handed out twice"
        );
    }
    let n = threads * per_thread;
    assert_eq!(
        by_offset.keys().copied().collect::<Vec<_>>(),
        (0..n).collect::<Vec<_>>()
    );
    let p = topic.partition(0).unwrap();
    assert_eq!(p.end_offset(), n);
    assert_eq!(p.append_count(), n);
    let fsyncs = p.fsync_count();
    assert!(
        fsyncs < n,
        "{fsyncs} fsyncs for {n} appends: group commit did not batch"
    );
    // Every acknowledged record reads back at the offset it was given.
    for (off, v) in read_all(&log, "gc", 0) {
        assert_eq!(by_offset[&off], v);
    }
    assert!(p.segment_count() > 1);
}

// ---------- segments and index ----------

#[test]
fn segments_roll_and_reads_cross_them_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        log.create_topic("roll", small_segments(1)).unwrap();
        fill(&log, "roll", 100, 2);
        let p = log.topic("roll").unwrap();
        let p = p.partition(0).unwrap();
        assert!(p.segment_count() >= 5, "{} segments", p.segment_count());
        // Every segment but an oversized one stays under segment_bytes.
        for f in segment_files(dir.path(), "roll", 0) {
            assert!(fs::metadata(&f).unwrap().len() <= 1024, "{}", f.display());
        }
        // Reads from any offset, with small batches, see the right records.
        for off in [0, 1, 57, 123, 199] {
            let got = p.read(off, 3, 1 << 20).unwrap();
            assert_eq!(got[0].offset, off);
            assert_eq!(got[0].value, value(off));
        }
        log.close().unwrap();
    }
    let log = open(dir.path());
    let all = read_all(&log, "roll", 0);
    assert_eq!(all.len(), 200);
    let names: Vec<String> = segment_files(dir.path(), "roll", 0)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names[0], "00000000000000000000.log");
    // Appends continue after the last offset.
    let p = log.topic("roll").unwrap();
    let r = p
        .partition(0)
        .unwrap()
        .append(vec![Record::from_value("more")])
        .unwrap();
    assert_eq!(r.base_offset, 200);
}

#[test]
fn missing_or_corrupt_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        log.create_topic(
            "ix",
            TopicConfig {
                segment_bytes: 8192,
                ..TopicConfig::default()
            },
        )
        .unwrap();
        fill(&log, "ix", 200, 2);
        log.close().unwrap();
    }
    let segs = segment_files(dir.path(), "ix", 0);
    assert!(segs.len() >= 3);
    let idx = |p: &Path| p.with_extension("index");
    let original: Vec<Vec<u8>> = segs.iter().map(|s| fs::read(idx(s)).unwrap()).collect();
    assert!(original[0].len() >= 32, "the index should have entries");
    fs::remove_file(idx(&segs[0])).unwrap();
    let mut garbage = original[1].clone();
    for b in garbage.iter_mut().take(20) {
        *b ^= 0x5a;
    }
    fs::write(idx(&segs[1]), &garbage).unwrap();
    fs::write(idx(&segs[2]), &original[2][..original[2].len() - 3]).unwrap();

    let log = open(dir.path());
    let p = log.topic("ix").unwrap();
    let p = p.partition(0).unwrap();
    for off in 0..400 {
        let got = p.read(off, 1, 1 << 20).unwrap();
        assert_eq!(got[0].offset, off);
        assert_eq!(got[0].value, value(off));
    }
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(
            fs::read(idx(s)).unwrap(),
            original[i],
            "index {i} not rebuilt identically"
        );
    }
    assert!(log.health().is_healthy());
}

// ---------- recovery ----------

fn write_batches(dir: &Path, segment_bytes: u64, batches: u64) -> Vec<PathBuf> {
    let log = open(dir);
    log.create_topic(
        "r",
        TopicConfig {
            segment_bytes,
            ..TopicConfig::default()
        },
    )
    .unwrap();
    fill(&log, "r", batches, 3);
    log.close().unwrap();
    segment_files(dir, "r", 0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// A log cut at any byte recovers to the valid prefix and appends continue after it.
    #[test]
    fn torn_tail_at_any_byte_recovers_the_valid_prefix(cut_seed in any::<u64>(), keep_rp in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let segs = write_batches(dir.path(), 2048, 30);
        let last = segs.last().unwrap().clone();
        let starts = frame_starts(&last);
        let len = fs::metadata(&last).unwrap().len();
        let cut = cut_seed % len;
        fs::OpenOptions::new().write(true).open(&last).unwrap().set_len(cut).unwrap();
        if !keep_rp {
            fs::remove_file(partition_dir(dir.path(), "r", 0).join("recovery-point.json")).unwrap();
        }
        let whole_before_cut = starts.iter().filter(|s| **s < cut).count() as u64 - 1 + u64::from(starts.contains(&cut));
        let kept_len = *starts.iter().filter(|s| **s <= cut).max().unwrap();
        let base: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();

        let (log, captured) = open_capturing(dir.path());
        let p = log.topic("r").unwrap();
        let p = p.partition(0).unwrap();
        let expected_end = base + 3 * (starts.iter().filter(|s| **s < kept_len).count() as u64);
        // Offsets the recovery point vouched for are never handed out again.
        let end = if keep_rp { base + 3 * starts.len() as u64 } else { expected_end };
        prop_assert_eq!(p.end_offset(), end);
        prop_assert_eq!(fs::metadata(&last).unwrap().len(), kept_len);
        if cut != kept_len {
            let w = captured.warnings();
            prop_assert!(
                w.iter().any(|w| w.contains("torn write") && w.contains(&format!("position={kept_len}"))
                    && w.contains(&format!("bytes_dropped={}", cut - kept_len))
                    && w.contains(last.file_name().unwrap().to_str().unwrap())),
                "warnings: {:?}", w
            );
        }
        let _ = whole_before_cut;
        let all = read_all(&log, "r", 0);
        prop_assert_eq!(all.len() as u64, expected_end);
        for (off, v) in &all {
            prop_assert_eq!(v, &value(*off));
        }
        prop_assert_eq!(log.health().corruption.is_empty(), !keep_rp, "{:?}", log.health());
        let r = p.append(vec![Record::from_value("after")]).unwrap();
        prop_assert_eq!(r.base_offset, end);
        drop(log);
        let log = open(dir.path());
        prop_assert_eq!(read_all(&log, "r", 0).len() as u64, expected_end + 1);
    }

    /// A flipped byte in a batch of the last segment is reported and the later batches
    /// stay readable; in the last batch too (it was written whole, so it is corruption,
    /// not a torn write), and its offsets are not handed out again. Only damage to the
    /// last batch's magic, version or length cannot be told from a torn write.
    #[test]
    fn flipped_byte_in_the_last_segment(which in 0usize..1000, byte_seed in any::<u64>(), xor in 1u8..=255) {
        let dir = tempfile::tempdir().unwrap();
        let segs = write_batches(dir.path(), 1 << 20, 12);
        let file = segs.last().unwrap().clone();
        let starts = frame_starts(&file);
        let len = fs::metadata(&file).unwrap().len();
        let frame = which % starts.len();
        let fstart = starts[frame];
        let fend = starts.get(frame + 1).copied().unwrap_or(len);
        let pos = fstart + byte_seed % (fend - fstart);
        let mut bytes = fs::read(&file).unwrap();
        bytes[pos as usize] ^= xor;
        fs::write(&file, &bytes).unwrap();
        fs::remove_file(partition_dir(dir.path(), "r", 0).join("recovery-point.json")).unwrap();

        let (log, captured) = open_capturing(dir.path());
        let p = log.topic("r").unwrap();
        let p = p.partition(0).unwrap();
        let damaged_first = frame as u64 * 3;
        if frame + 1 == starts.len() && pos - fstart < 7 {
            prop_assert!(p.end_offset() >= damaged_first);
        } else if frame + 1 == starts.len() {
            prop_assert!(p.end_offset() >= damaged_first + 3, "end {}", p.end_offset());
            prop_assert_eq!(fs::metadata(&file).unwrap().len(), len);
            let health = log.health();
            prop_assert_eq!(health.corruption.len(), 1);
            let c = &health.corruption[0];
            prop_assert_eq!(c.position, fstart);
            prop_assert_eq!(c.first_offset, damaged_first);
            prop_assert_eq!(c.resume_offset, p.end_offset());
            let r = p.append(vec![Record::from_value("after")]).unwrap();
            prop_assert_eq!(r.base_offset, p.end_offset() - 1);
            prop_assert!(r.base_offset >= damaged_first + 3);
        } else {
            prop_assert_eq!(p.end_offset(), 36);
            prop_assert_eq!(fs::metadata(&file).unwrap().len(), len);
            let health = log.health();
            prop_assert_eq!(health.corruption.len(), 1);
            let c = &health.corruption[0];
            prop_assert_eq!(c.position, fstart);
            prop_assert_eq!(c.first_offset, damaged_first);
            prop_assert_eq!(c.resume_offset, damaged_first + 3);
            prop_assert!(captured.warnings().iter().any(|w| w.contains("corrupt batch")));
            match p.read(damaged_first, 10, 1 << 20) {
                Err(LogError::Corrupt { file: f, position, .. }) => {
                    prop_assert_eq!(f, file.clone());
                    prop_assert_eq!(position, fstart);
                }
                other => prop_assert!(false, "expected Corrupt, got {:?}", other),
            }
            // A read starting before the damage gets the good records before it, and
            // the partition says where reading goes on.
            if damaged_first > 0 {
                let prefix = p.read(0, 100, 1 << 20).unwrap();
                prop_assert_eq!(prefix.len() as u64, damaged_first);
            }
            prop_assert_eq!(p.resume_after_damage(damaged_first), Some(damaged_first + 3));
            let after = p.read(damaged_first + 3, 100, 1 << 20).unwrap();
            prop_assert_eq!(after.len() as u64, 36 - damaged_first - 3);
            for r in &after {
                prop_assert_eq!(&r.value, &value(r.offset));
            }
        }
        for off in 0..damaged_first {
            prop_assert_eq!(&p.read(off, 1, 1 << 20).unwrap()[0].value, &value(off));
        }
    }
}

#[test]
fn corruption_in_a_sealed_segment_is_reported_and_later_data_kept() {
    for keep_rp in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let segs = write_batches(dir.path(), 1024, 60);
        assert!(segs.len() >= 4);
        let victim = &segs[1];
        let base: u64 = victim
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let starts = frame_starts(victim);
        let target = starts[starts.len() / 2];
        let mut bytes = fs::read(victim).unwrap();
        bytes[target as usize + 45] ^= 0xff; // inside the payload
        fs::write(victim, &bytes).unwrap();
        let sizes: Vec<u64> = segs
            .iter()
            .map(|s| fs::metadata(s).unwrap().len())
            .collect();
        if !keep_rp {
            fs::remove_file(partition_dir(dir.path(), "r", 0).join("recovery-point.json")).unwrap();
        }

        let (log, captured) = open_capturing(dir.path());
        let p = log.topic("r").unwrap();
        let p = p.partition(0).unwrap();
        assert_eq!(p.end_offset(), 180, "nothing after the damage is dropped");
        let damaged = base + 3 * (starts.len() / 2) as u64;
        if !keep_rp {
            // Found by the open-time scan.
            let h = log.health();
            assert_eq!(h.corruption.len(), 1, "{h:?}");
            assert_eq!(&h.corruption[0].file, victim);
            assert_eq!(h.corruption[0].position, target);
            assert_eq!(h.corruption[0].first_offset, damaged);
            assert!(
                captured
                    .warnings()
                    .iter()
                    .any(|w| w.contains("corrupt batch")
                        && w.contains(&format!("position={target}")))
            );
        }
        match p.read(damaged, 10, 1 << 20) {
            Err(LogError::Corrupt { file, position, .. }) => {
                assert_eq!(&file, victim);
                assert_eq!(position, target);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        // Reads that hit the damage report it (and it shows in health) ...
        assert_eq!(log.health().corruption.len(), 1);
        // ... and data after the damaged batch is still there and readable.
        for off in (damaged + 3)..180 {
            let got = p.read(off, 1, 1 << 20).unwrap();
            assert_eq!(got[0].value, value(off), "offset {off}");
        }
        for off in 0..damaged {
            assert_eq!(p.read(off, 1, 1 << 20).unwrap()[0].value, value(off));
        }
        drop(log);
        let after: Vec<u64> = segs
            .iter()
            .map(|s| fs::metadata(s).unwrap().len())
            .collect();
        assert_eq!(after, sizes, "no segment was truncated");
    }
}

/// A batch whose checksum holds but whose records do not decode (a buggy writer or a
/// crafted file) is damage like any other: reads before it return, a read at it says
/// `corrupt` and the partition names the offset past it, and later batches stay readable.
#[test]
fn a_checksummed_batch_that_does_not_decode_is_skipped_by_its_offsets() {
    for sealed in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let segs = write_batches(dir.path(), if sealed { 1024 } else { 1 << 20 }, 60);
        let victim = &segs[0];
        let starts = frame_starts(victim);
        let target = starts[4] as usize; // offsets 12..15
        let mut bytes = fs::read(victim).unwrap();
        bytes[target + 40] = 0xff; // the first record's attributes: unknown bits
        let len = u32::from_le_bytes(bytes[target + 3..target + 7].try_into().unwrap()) as usize;
        let crc = crc32c::crc32c(&bytes[target + 11..target + 11 + len]);
        bytes[target + 7..target + 11].copy_from_slice(&crc.to_le_bytes());
        fs::write(victim, &bytes).unwrap();

        let log = open(dir.path());
        let topic = log.topic("r").unwrap();
        let p = topic.partition(0).unwrap();
        assert_eq!(p.end_offset(), 180);
        let before = p.read(0, 100, 1 << 20).unwrap();
        let offsets: Vec<u64> = before.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (0..12).collect::<Vec<_>>(), "the readable prefix");
        match p.read(13, 10, 1 << 20) {
            Err(LogError::Corrupt { position, .. }) => assert_eq!(position, target as u64),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert_eq!(p.resume_after_damage(12), Some(15));
        assert_eq!(p.resume_after_damage(14), Some(15));
        assert_eq!(log.health().corruption.len(), 1);
        for off in 15..180 {
            assert_eq!(
                p.read(off, 1, 1 << 20).unwrap()[0].value,
                value(off),
                "{off}"
            );
        }
        let appended = p.append(vec![Record::from_value("next")]).unwrap();
        assert_eq!(appended.base_offset, 180);
    }
}

// ---------- durability under failures ----------

#[test]
fn injected_enospc_and_eio_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        let t = log.create_topic("f", small_segments(1)).unwrap();
        let p = t.partition(0).unwrap();
        for i in 0..10 {
            p.append(vec![Record::from_value(value(i))]).unwrap();
        }
        for fault in [Fault::NoSpace, Fault::NoSpacePartial, Fault::FsyncIo] {
            p.inject_failure(Some(fault));
            for _ in 0..3 {
                let err = p.append(vec![Record::from_value("lost")]).unwrap_err();
                assert!(err.is_retryable(), "{fault:?}: {err}");
                assert!(matches!(err, LogError::Unavailable { .. }), "{err}");
            }
            assert_eq!(
                p.end_offset(),
                10,
                "{fault:?} advanced the acknowledged end"
            );
            assert_eq!(read_all(&log, "f", 0).len(), 10);
            p.inject_failure(None);
        }
        // Appends work again and continue right after the acknowledged records.
        let r = p.append(vec![Record::from_value(value(10))]).unwrap();
        assert_eq!(r.base_offset, 10);
        // Failures during a roll do not lose anything either.
        p.inject_failure(Some(Fault::FsyncIo));
        for _ in 0..30 {
            assert!(p.append(vec![Record::from_value(vec![b'z'; 200])]).is_err());
        }
        p.inject_failure(None);
        for i in 11..40 {
            assert_eq!(
                p.append(vec![Record::from_value(value(i))])
                    .unwrap()
                    .base_offset,
                i
            );
        }
        drop(log); // no explicit close
    }
    let log = open(dir.path());
    let all = read_all(&log, "f", 0);
    assert_eq!(all.len(), 40);
    for (off, v) in all {
        assert_eq!(v, value(off));
    }
    assert!(log.health().is_healthy(), "{:?}", log.health());
}

#[test]
fn concurrent_appenders_during_fsync_failures_never_see_reused_offsets_acked_twice() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let t = log.create_topic("race", small_segments(1)).unwrap();
    let acked: Vec<(u64, Vec<u8>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let t = t.clone();
                s.spawn(move || {
                    let p = t.partition(0).unwrap();
                    let mut ok = Vec::new();
                    for i in 0..80 {
                        let v = format!("w{w}-{i}").into_bytes();
                        if let Ok(r) = p.append(vec![Record::from_value(v.clone())]) {
                            ok.push((r.base_offset, v));
                        }
                    }
                    ok
                })
            })
            .collect();
        let p = t.partition(0).unwrap();
        for _ in 0..10 {
            p.inject_failure(Some(Fault::FsyncIo));
            std::thread::sleep(Duration::from_millis(2));
            p.inject_failure(None);
            std::thread::sleep(Duration::from_millis(2));
        }
        workers
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let stored: BTreeMap<u64, Vec<u8>> = read_all(&log, "race", 0).into_iter().collect();
    for (off, v) in &acked {
        assert_eq!(
            stored.get(off),
            Some(v),
            "acknowledged offset {off} lost or overwritten"
        );
    }
    assert_eq!(
        stored.keys().copied().collect::<Vec<_>>(),
        (0..stored.len() as u64).collect::<Vec<_>>()
    );
}

// ---------- reads, waits, interval policy ----------

#[test]
fn wait_for_wakes_a_tailing_reader() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let t = log.create_topic("tail", TopicConfig::default()).unwrap();
    let p = t.partition(0).unwrap();
    assert!(!p.wait_for(0, Duration::from_millis(5)));
    std::thread::scope(|s| {
        let waiter = s.spawn(|| p.wait_for(0, Duration::from_secs(20)));
        std::thread::sleep(Duration::from_millis(20));
        p.append(vec![Record::from_value("x")]).unwrap();
        assert!(waiter.join().unwrap());
    });
    assert!(p.wait_for(0, Duration::ZERO));
}

#[test]
fn interval_policy_acknowledges_before_fsync_and_flushes_in_background() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        let t = log
            .create_topic(
                "iv",
                TopicConfig {
                    fsync: "interval:5ms".parse().unwrap(),
                    ..TopicConfig::default()
                },
            )
            .unwrap();
        let p = t.partition(0).unwrap();
        for i in 0..50 {
            p.append(vec![Record::from_value(value(i))]).unwrap();
        }
        assert_eq!(p.end_offset(), 50);
        let mut waited = 0;
        while p.fsync_count() == 0 && waited < 2000 {
            std::thread::sleep(Duration::from_millis(5));
            waited += 5;
        }
        assert!(p.fsync_count() > 0, "background flusher never ran");
        assert!(p.fsync_count() < 50);
        // A failing background fsync makes the partition refuse writes until one succeeds.
        p.inject_failure(Some(Fault::FsyncIo));
        p.append(vec![Record::from_value(value(50))]).unwrap();
        let mut waited = 0;
        while p.unavailable_reason().is_none() && waited < 2000 {
            std::thread::sleep(Duration::from_millis(5));
            waited += 5;
        }
        assert!(!log.health().unavailable.is_empty());
        assert!(
            p.append(vec![Record::from_value("refused")])
                .unwrap_err()
                .is_retryable()
        );
        p.inject_failure(None);
        let mut waited = 0;
        while p.unavailable_reason().is_some() && waited < 2000 {
            std::thread::sleep(Duration::from_millis(5));
            waited += 5;
        }
        p.append(vec![Record::from_value(value(51))]).unwrap();
        log.close().unwrap();
    }
    let log = open(dir.path());
    assert_eq!(read_all(&log, "iv", 0).len(), 52);
}

// ---------- retention and consumer offsets ----------

#[test]
fn retention_deletes_whole_sealed_segments_by_size_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let by_size = log
        .create_topic(
            "size",
            TopicConfig {
                retention_bytes: Some(3000),
                ..small_segments(1)
            },
        )
        .unwrap();
    let by_age = log
        .create_topic(
            "age",
            TopicConfig {
                retention_ms: Some(1),
                ..small_segments(1)
            },
        )
        .unwrap();
    let keep = log.create_topic("keep", small_segments(1)).unwrap();
    for t in ["size", "age", "keep"] {
        fill(&log, t, 60, 2);
    }
    std::thread::sleep(Duration::from_millis(5));
    let before: Vec<usize> = [&by_size, &by_age, &keep]
        .iter()
        .map(|t| t.partition(0).unwrap().segment_count())
        .collect();
    let report = log.enforce_retention().unwrap();
    assert!(report.segments_deleted > 0 && report.bytes_deleted > 0);

    let p = by_size.partition(0).unwrap();
    assert!(p.segment_count() < before[0]);
    assert!(
        p.size_bytes() >= 3000,
        "retention_bytes keeps at least that much"
    );
    let start = p.start_offset();
    assert!(start > 0);
    assert!(
        matches!(p.read(0, 1, 100), Err(LogError::OffsetOutOfRange { start: s, .. }) if s == start)
    );
    assert_eq!(p.read(start, 1, 1 << 20).unwrap()[0].value, value(start));

    let p = by_age.partition(0).unwrap();
    assert_eq!(
        p.segment_count(),
        1,
        "only the active segment survives age retention"
    );
    assert_eq!(p.end_offset(), 120);
    assert_eq!(segment_files(dir.path(), "age", 0).len(), 1);

    assert_eq!(keep.partition(0).unwrap().segment_count(), before[2]);
    assert_eq!(keep.partition(0).unwrap().start_offset(), 0);
    // Appends still work after retention, and start offsets survive a reopen.
    by_age
        .partition(0)
        .unwrap()
        .append(vec![Record::from_value("x")])
        .unwrap();
    let size_start = start;
    drop((by_size, by_age, keep));
    log.close().unwrap();
    let log = open(dir.path());
    assert_eq!(
        log.topic("size")
            .unwrap()
            .partition(0)
            .unwrap()
            .start_offset(),
        size_start
    );
    assert_eq!(
        log.topic("age").unwrap().partition(0).unwrap().end_offset(),
        121
    );
}

#[test]
fn consumer_offsets_are_durable_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        log.create_topic("t", TopicConfig::with_partitions(2))
            .unwrap();
        assert_eq!(log.committed_offset("g", "t", 0), None);
        log.commit_offset("g", "t", 0, 5).unwrap();
        log.commit_offset("g", "t", 1, 7).unwrap();
        log.commit_offset("g", "t", 0, 6).unwrap();
        log.commit_offset("other", "t", 1, 1).unwrap();
        assert!(matches!(
            log.commit_offset("g", "nope", 0, 1),
            Err(LogError::UnknownTopic(_))
        ));
        assert!(matches!(
            log.commit_offset("g", "t", 2, 1),
            Err(LogError::UnknownPartition { .. })
        ));
        assert!(matches!(
            log.commit_offset("bad/group", "t", 0, 1),
            Err(LogError::InvalidName { .. })
        ));
        drop(log); // no close: commits are durable on return
    }
    let log = open(dir.path());
    assert_eq!(log.committed_offset("g", "t", 0), Some(6));
    assert_eq!(log.committed_offset("g", "t", 1), Some(7));
    assert_eq!(log.committed_offset("other", "t", 1), Some(1));
    assert_eq!(
        log.consumer_groups(),
        vec!["g".to_string(), "other".to_string()]
    );
    assert_eq!(
        log.group_offsets("g"),
        vec![("t".to_string(), 0, 6), ("t".to_string(), 1, 7)]
    );
}

// ---------- bench ----------

#[test]
fn bench_functions_run() {
    let dir = tempfile::tempdir().unwrap();
    let r = run_append_bench(dir.path(), 100, 4, BenchLimit::Records(200)).unwrap();
    assert_eq!(r.records, 200);
    assert!(r.fsyncs <= 200 && r.p99_us >= r.p50_us);
    let r = run_read_bench(dir.path(), 100, 2000, 100).unwrap();
    assert_eq!(r.records, 2000);
}

/// Prints bench numbers: `cargo test --release -p runnel-log -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark, run by hand"]
fn bench_report() {
    let dir = tempfile::tempdir().unwrap();
    for producers in [1, 4, 16] {
        let r = run_append_bench(
            dir.path(),
            200,
            producers,
            BenchLimit::Duration(Duration::from_secs(3)),
        )
        .unwrap();
        println!("append 200 B x {producers} producers: {r}");
    }
    let r = run_read_bench(dir.path(), 200, 500_000, 1000).unwrap();
    println!("read 200 B, 1000 per call: {r}");
}

/// Issue 16: a topic whose `topic.json` is missing or damaged is quarantined; the log
/// and its other topics open.
#[test]
fn a_topic_with_a_damaged_config_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        for name in ["good", "broken", "gone"] {
            log.create_topic(name, TopicConfig::with_partitions(1))
                .unwrap();
        }
        let p = log.topic("good").unwrap();
        p.partition(0)
            .unwrap()
            .append(vec![Record::from_value("kept")])
            .unwrap();
    }
    let topics = dir.path().join("topics");
    fs::write(topics.join("broken/topic.json"), b"{not json").unwrap();
    fs::remove_file(topics.join("gone/topic.json")).unwrap();
    let log = open(dir.path());
    assert_eq!(read_all(&log, "good", 0).len(), 1);
    assert!(log.topic("broken").is_none());
    let health = log.health();
    let mut names: Vec<&str> = health.quarantined.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(names, ["broken", "gone"]);
    assert!(
        log.quarantined("broken")
            .is_some_and(|w| w.contains("topic.json"))
    );
    assert!(matches!(
        log.create_topic("broken", TopicConfig::with_partitions(1)),
        Err(LogError::TopicExists(_))
    ));
}

/// Issue 16: a topic with more partitions than the process can keep open is refused
/// before anything is written, and the log still opens afterwards.
#[test]
fn too_many_partitions_for_the_file_limit_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let too_many = log.create_topic("wide", TopicConfig::with_partitions(5000));
    assert!(
        matches!(too_many, Err(LogError::InvalidConfig { .. })),
        "{too_many:?}"
    );
    assert!(!dir.path().join("topics/wide").exists());
    drop(log);
    let log = open(dir.path());
    assert!(log.health().is_healthy());
}

/// Issue 23: `shutdown` closes the log through a shared handle while another handle is
/// still alive: appends fail, reads work, nothing writes into the directory afterwards
/// (so its owner may remove it), and a reopen finds every acknowledged record.
#[test]
fn shutdown_through_a_shared_handle_stops_all_writes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        Log::open(
            dir.path(),
            LogOptions {
                recovery_point_interval: Duration::from_millis(1),
                background_tick: Duration::from_millis(1),
                ..options()
            },
        )
        .unwrap(),
    );
    let topic = log
        .create_topic(
            "t",
            TopicConfig {
                fsync: FsyncPolicy::Interval(Duration::from_millis(1)),
                ..TopicConfig::with_partitions(2)
            },
        )
        .unwrap();
    for i in 0..20 {
        topic
            .partition((i % 2) as u32)
            .unwrap()
            .append(vec![Record::from_value(value(i))])
            .unwrap();
    }
    let holder = log.clone();
    log.shutdown().unwrap();
    log.shutdown().unwrap();
    let t = holder.topic("t").unwrap();
    let p0 = t.partition(0).unwrap();
    assert!(matches!(
        p0.append(vec![Record::from_value("late")]),
        Err(LogError::Closed)
    ));
    assert!(matches!(
        holder.create_topic("u", TopicConfig::with_partitions(1)),
        Err(LogError::Closed)
    ));
    assert_eq!(read_all(&holder, "t", 0).len(), 10);
    // The background thread is gone: removing the directory under a live handle gives
    // no late recovery-point write (which would recreate files or warn).
    let pdir = partition_dir(dir.path(), "t", 0);
    let rp = pdir.join("recovery-point.json");
    assert!(rp.exists());
    fs::remove_file(&rp).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(!rp.exists() && !pdir.join("recovery-point.json.tmp").exists());
    drop(t);
    drop(holder);
    drop(log);
    let log = open(dir.path());
    assert_eq!(
        read_all(&log, "t", 0).len() + read_all(&log, "t", 1).len(),
        20
    );
}
