//! The log's frame decoder and open-time recovery scan: a partition whose segment holds
//! any bytes (alone, or after a valid batch) opens, reads and takes appends without a
//! panic, and never hands out an offset twice.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use runnel_log::{Log, LogOptions, Record, TopicConfig};

/// A topic config and one segment holding one valid batch, made once.
struct Template {
    config: Vec<u8>,
    segment: String,
    bytes: Vec<u8>,
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = Log::open(dir.path(), LogOptions::default()).expect("log");
        let topic = log
            .create_topic("f", TopicConfig::with_partitions(1))
            .expect("topic");
        let p = topic.partition(0).expect("partition");
        p.append(vec![Record::from_value("a"), Record::from_value("bb")])
            .expect("append");
        log.close().expect("close");
        let tdir = dir.path().join("topics/f");
        let config = std::fs::read(tdir.join("topic.json")).expect("config");
        let seg: PathBuf = std::fs::read_dir(tdir.join("0"))
            .expect("partition dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "log"))
            .expect("segment");
        Template {
            config,
            segment: seg
                .file_name()
                .and_then(|n| n.to_str())
                .expect("name")
                .to_string(),
            bytes: std::fs::read(&seg).expect("segment bytes"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let t = template();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let pdir = dir.path().join("topics/f/0");
    std::fs::create_dir_all(&pdir).expect("dirs");
    std::fs::write(dir.path().join("topics/f/topic.json"), &t.config).expect("config");
    let mut segment = if mode % 2 == 0 {
        Vec::new()
    } else {
        t.bytes.clone()
    };
    segment.extend_from_slice(rest);
    std::fs::write(pdir.join(&t.segment), &segment).expect("segment");
    let Ok(log) = Log::open(dir.path(), LogOptions::default()) else {
        return;
    };
    let Some(topic) = log.topic("f") else {
        return;
    };
    let Some(p) = topic.partition(0) else {
        return;
    };
    let end = p.end_offset();
    let mut offset = p.start_offset();
    let mut seen = std::collections::HashSet::new();
    while offset < end {
        match p.read(offset, 64, 1 << 20) {
            Ok(records) if !records.is_empty() => {
                for r in &records {
                    assert!(seen.insert(r.offset), "offset {} read twice", r.offset);
                    assert!(r.offset < end, "offset {} past the end {end}", r.offset);
                }
                offset = records.last().map_or(end, |r| r.offset + 1);
            }
            // Damage: the partition names where reading goes on, past the damage.
            outcome => match p.resume_after_damage(offset) {
                Some(next) if next > offset => offset = next,
                _ => panic!("read at {offset} gave {outcome:?} and no place to resume"),
            },
        }
    }
    if let Ok(appended) = p.append(vec![Record::from_value("after")]) {
        assert!(
            appended.base_offset >= end,
            "offset {} reused",
            appended.base_offset
        );
    }
    let _ = log.close();
});
