//! Issue 22: `detect()` in SQL — boxes per frame, `CROSS JOIN UNNEST` into per-class
//! counts in event-time windows, thresholds, and undecodable images dead-lettered.

use std::path::Path;

use serde_json::Value;

use crate::harness::TestDir;

fn hex_photo(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/images")
        .join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

const PIPELINE: &str = "
CREATE TABLE frames (cam STRING, img STRING, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
  WITH ('connector' = 'file', 'path' = 'frames.jsonl', 'format' = 'json');
CREATE TABLE boxes (cam STRING, ts TIMESTAMP(3),
  objects ARRAY<ROW<label STRING, score DOUBLE, x1 DOUBLE, y1 DOUBLE, x2 DOUBLE, y2 DOUBLE>>,
  sure ARRAY<ROW<label STRING, score DOUBLE, x1 DOUBLE, y1 DOUBLE, x2 DOUBLE, y2 DOUBLE>>)
  WITH ('connector' = 'file', 'path' = 'boxes.jsonl');
CREATE TABLE counts (cam STRING, window_start TIMESTAMP(3), label STRING, n BIGINT, best DOUBLE)
  WITH ('connector' = 'file', 'path' = 'counts.jsonl');
CREATE VIEW detected AS
  SELECT cam, ts, detect(decode(img, 'hex')) AS objects, detect(decode(img, 'hex'), 0.9) AS sure
  FROM frames;
INSERT INTO boxes SELECT * FROM detected;
INSERT INTO counts
SELECT cam, window_start, d.label, COUNT(*), MAX(d.score)
FROM TABLE(TUMBLE(TABLE detected, DESCRIPTOR(ts), INTERVAL '10' SECOND))
  CROSS JOIN UNNEST(objects) AS d (label, score, x1, y1, x2, y2)
GROUP BY cam, window_start, window_end, d.label;
";

#[test]
fn detect_boxes_unnest_into_window_counts_and_rejects_bad_images() {
    let t = TestDir::new();
    let frame = |cam: &str, img: &str, second: u32| {
        format!(
            "{{\"cam\":\"{cam}\",\"img\":\"{img}\",\"ts\":\"2026-01-01T00:00:{second:02}Z\"}}\n"
        )
    };
    let mut input = String::new();
    input.push_str(&frame("a", &hex_photo("coffee.png"), 1));
    input.push_str(&frame("a", &hex_photo("chelsea.png"), 2));
    input.push_str(&frame("b", &hex_photo("astronaut.png"), 3));
    input.push_str(&frame("b", &hex_photo("china.jpg"), 4));
    input.push_str(&frame("b", "00ff00ff", 5));
    input.push_str(&frame("a", &hex_photo("astronaut.png"), 12));
    t.write("frames.jsonl", &input);
    t.write("p.sql", PIPELINE);
    let r = t.runnel(&["run", "p.sql", "--parallelism", "2"]);
    r.assert_ok();

    // Per frame: the objects with boxes in the photo's pixels; none is an empty array;
    // an undecodable image is NULL.
    let boxes = json_lines(&t.read("boxes.jsonl"));
    assert_eq!(boxes.len(), 6, "{boxes:?}");
    let at = |second: &str| {
        boxes
            .iter()
            .find(|b| b["ts"].as_str().unwrap_or_default().contains(second))
            .unwrap_or_else(|| panic!("no frame at {second}: {boxes:?}"))
    };
    let coffee = at(":01");
    let cup = coffee["objects"]
        .as_array()
        .and_then(|o| o.iter().find(|d| d["label"] == "cup"))
        .unwrap_or_else(|| panic!("no cup: {coffee}"));
    for (k, want) in [("x1", 167.0), ("y1", 14.0), ("x2", 411.0), ("y2", 287.0)] {
        let got = cup[k].as_f64().unwrap_or(f64::NAN);
        assert!((got - want).abs() <= 4.0, "cup {k} = {got}, want {want}");
    }
    assert_eq!(
        coffee["sure"].as_array().map(Vec::len),
        Some(1),
        "only the cup scores 0.9: {coffee}"
    );
    assert_eq!(at(":04")["objects"], serde_json::json!([]), "china.jpg");
    assert!(at(":05")["objects"].is_null(), "{}", at(":05"));

    // Counted per camera, class and 10-second window after UNNEST.
    let mut counts: Vec<String> = json_lines(&t.read("counts.jsonl"))
        .iter()
        .map(|c| {
            format!(
                "{} {} {} {}",
                c["cam"].as_str().unwrap_or("?"),
                &c["window_start"].as_str().unwrap_or("?")[11..19],
                c["label"].as_str().unwrap_or("?"),
                c["n"]
            )
        })
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        [
            "a 00:00:00 cat 1",
            "a 00:00:00 cup 1",
            "a 00:00:00 diningtable 1",
            "a 00:00:00 dog 1",
            "a 00:00:10 person 1",
            "b 00:00:00 person 1",
        ],
        "{}",
        r.stderr
    );

    // The bad image, dead-lettered with its reason (twice: both detect calls read it).
    let letters = json_lines(&t.read("runnel-data/dead-letters/detect.jsonl"));
    assert!(!letters.is_empty(), "{}", r.stderr);
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("unrecognized image format"),
        "{letters:?}"
    );
    assert!(r.stderr.contains("function detect"), "{}", r.stderr);
}

/// `vision.detect-size` the model's heads cannot tile is refused before the pipeline
/// runs, naming the setting and the reason.
#[test]
fn a_detect_size_the_heads_cannot_tile_is_refused() {
    let t = TestDir::new();
    t.write("frames.jsonl", "");
    t.write(
        "p.sql",
        &format!("SET 'vision.detect-size' = '300';\n{PIPELINE}"),
    );
    t.runnel(&["run", "p.sql"])
        .assert_err("must be a multiple of 32")
        .assert_err("'vision.detect-size' = '300'");
}
