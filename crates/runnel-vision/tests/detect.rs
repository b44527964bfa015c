//! The bundled object detector on the bundled photos: classes and boxes as PROVENANCE
//! lists them, empty results, batches, rejects.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use runnel_vision::{ClassifierOptions, Detection, Detector};

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets")
}

fn photo(name: &str) -> Vec<u8> {
    std::fs::read(assets().join("images").join(name)).expect("bundled photo")
}

/// Loaded once per test binary: optimizing the model takes seconds.
fn detector() -> Arc<Detector> {
    static DETECTOR: OnceLock<Arc<Detector>> = OnceLock::new();
    DETECTOR
        .get_or_init(|| {
            let options = ClassifierOptions {
                threads: 2,
                max_batch: 8,
                ..ClassifierOptions::default()
            };
            let path = assets().join("models/yolov4-tiny/model.onnx");
            Arc::new(Detector::load(&path, &options).expect("the bundled detector loads"))
        })
        .clone()
}

/// (photo, [(label, score, [x1, y1, x2, y2])]) with the reference's letterbox and
/// thresholds (assets/README.md; ONNX Runtime and OpenCV agree on them).
/// An expected object: label, score, box.
type Object = (&'static str, f64, [f64; 4]);

const EXPECTED: &[(&str, &[Object])] = &[
    (
        "coffee.png",
        &[
            ("cup", 0.94, [167.0, 14.0, 411.0, 287.0]),
            ("diningtable", 0.40, [52.0, 21.0, 544.0, 371.0]),
        ],
    ),
    (
        "chelsea.png",
        &[
            ("cat", 0.64, [12.0, 0.0, 432.0, 293.0]),
            ("dog", 0.38, [0.0, 2.0, 407.0, 293.0]),
        ],
    ),
    (
        "astronaut.png",
        &[("person", 0.87, [27.0, 0.0, 402.0, 468.0])],
    ),
    (
        "grace_hopper.jpg",
        &[
            ("person", 0.89, [0.0, 77.0, 512.0, 600.0]),
            ("tie", 0.44, [230.0, 442.0, 290.0, 535.0]),
        ],
    ),
    (
        "camera.png",
        &[("person", 0.72, [13.0, 49.0, 271.0, 474.0])],
    ),
    (
        "boats.jpg",
        &[
            ("boat", 0.74, [435.0, 445.0, 725.0, 584.0]),
            ("person", 0.57, [373.0, 651.0, 459.0, 712.0]),
            ("boat", 0.49, [63.0, 624.0, 368.0, 719.0]),
            ("boat", 0.48, [346.0, 518.0, 469.0, 569.0]),
            ("boat", 0.31, [417.0, 231.0, 731.0, 589.0]),
        ],
    ),
    ("china.jpg", &[]),
    ("flower.jpg", &[]),
    ("rocket.jpg", &[]),
];

fn show(found: &[Detection]) -> String {
    found
        .iter()
        .map(|d| {
            format!(
                "{} {:.2} [{:.0},{:.0},{:.0},{:.0}]",
                d.label, d.score, d.x1, d.y1, d.x2, d.y2
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn finds_the_expected_objects_and_boxes() {
    let detector = detector();
    for (file, expected) in EXPECTED {
        let bytes = photo(file);
        let found = detector
            .detect_batch(&[Some(bytes.as_slice())], None)
            .remove(0)
            .expect("detects");
        assert_eq!(
            found.len(),
            expected.len(),
            "{file}: found {}",
            show(&found)
        );
        for (label, score, b) in *expected {
            // Several objects of one class (boats): the one scored nearest.
            let hit = found
                .iter()
                .filter(|d| d.label == *label)
                .min_by(|a, b| (a.score - score).abs().total_cmp(&(b.score - score).abs()))
                .unwrap_or_else(|| panic!("{file}: no {label} in {}", show(&found)));
            assert!(
                (hit.score - score).abs() < 0.05,
                "{file}: {label} scored {:.3}, expected {score}",
                hit.score
            );
            let got = [hit.x1, hit.y1, hit.x2, hit.y2];
            for (g, e) in got.iter().zip(b) {
                assert!(
                    (g - e).abs() <= 4.0,
                    "{file}: {label} box {got:?}, expected {b:?}"
                );
            }
        }
    }
}

#[test]
fn a_batch_gives_what_single_images_give() {
    let detector = detector();
    let photos: Vec<Vec<u8>> = ["coffee.png", "chelsea.png", "china.jpg", "astronaut.png"]
        .iter()
        .map(|f| photo(f))
        .collect();
    let refs: Vec<Option<&[u8]>> = photos.iter().map(|p| Some(p.as_slice())).collect();
    let batch = detector.detect_batch(&refs, None);
    for (one, image) in batch.iter().zip(&refs) {
        let single = detector.detect_batch(&[*image], None).remove(0);
        assert_eq!(one, &single);
    }
}

#[test]
fn thresholds_and_rejects() {
    let detector = detector();
    let coffee = photo("coffee.png");
    let strict = detector
        .detect_batch(&[Some(coffee.as_slice())], Some(0.9))
        .remove(0)
        .expect("detects");
    assert_eq!(strict.len(), 1, "{}", show(&strict));
    assert_eq!(strict[0].label, "cup");
    let bad = detector.detect_batch(&[Some(b"not an image".as_slice()), None], None);
    assert!(
        bad[0].as_ref().is_err_and(|e| e.contains("unrecognized")),
        "{bad:?}"
    );
    assert!(bad[1].is_err());
}

/// The bundled detector built from its files, with `edit` applied to its model.json.
fn detector_with(edit: impl FnOnce(&mut serde_json::Value), size: Option<u32>) -> Detector {
    let dir = assets().join("models/yolov4-tiny");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("bundled file");
    let mut spec: serde_json::Value = serde_json::from_str(&read("model.json")).expect("json");
    edit(&mut spec);
    let onnx = std::fs::read(dir.join("model.onnx")).expect("bundled model");
    let options = ClassifierOptions {
        threads: 2,
        max_batch: 8,
        detect_size: size,
    };
    Detector::from_bytes(
        &onnx,
        &read("labels.txt"),
        &spec.to_string(),
        "test",
        &options,
    )
    .expect("the detector builds")
}

/// Decoding the raw heads in runnel (model.json's `heads`) gives what the model's own
/// tail computes: the same objects, scores and boxes.
#[test]
fn decoding_the_heads_equals_the_models_own_tail() {
    let whole = detector_with(
        |spec| {
            if let Some(o) = spec["output"].as_object_mut() {
                o.remove("heads");
            }
        },
        None,
    );
    let heads = detector();
    for (file, _) in EXPECTED {
        let bytes = photo(file);
        let image = [Some(bytes.as_slice())];
        // A low threshold: many boxes to compare.
        let a = whole
            .detect_batch(&image, Some(0.05))
            .remove(0)
            .expect("ok");
        let b = heads
            .detect_batch(&image, Some(0.05))
            .remove(0)
            .expect("ok");
        assert_eq!(a.len(), b.len(), "{file}: {} vs {}", show(&a), show(&b));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.label, y.label, "{file}");
            assert!((x.score - y.score).abs() < 1e-4, "{file}: {x:?} vs {y:?}");
            for (p, q) in [(x.x1, y.x1), (x.y1, y.y1), (x.x2, y.x2), (x.y2, y.y2)] {
                assert!((p - q).abs() < 0.05, "{file}: {x:?} vs {y:?}");
            }
        }
    }
}

/// At 352×352 (`vision.detect-size`) the main objects are still found, their boxes
/// close to the 416 ones (at 320 too, but for the close-up astronaut, whose person scores
/// only 0.19 there); a size the heads cannot tile, or a model without heads, is refused
/// with the reason.
#[test]
fn runs_at_another_size() {
    for (size, file, label) in [
        (352, "coffee.png", "cup"),
        (352, "chelsea.png", "cat"),
        (352, "astronaut.png", "person"),
        (320, "coffee.png", "cup"),
        (320, "chelsea.png", "cat"),
        (320, "boats.jpg", "boat"),
    ] {
        let small = detector_with(|_| {}, Some(size));
        assert_eq!(small.input_side(), size as usize);
        let bytes = photo(file);
        let found = small
            .detect_batch(&[Some(bytes.as_slice())], None)
            .remove(0)
            .expect("detects");
        let big = detector()
            .detect_batch(&[Some(bytes.as_slice())], None)
            .remove(0)
            .expect("detects");
        let (Some(s), Some(b)) = (
            found.iter().find(|d| d.label == label),
            big.iter().find(|d| d.label == label),
        ) else {
            panic!("{file}: no {label} at 320: {}", show(&found));
        };
        let overlap = iou([s.x1, s.y1, s.x2, s.y2], [b.x1, b.y1, b.x2, b.y2]);
        assert!(
            overlap > 0.7,
            "{size} {file}: {} vs {}",
            show(&found),
            show(&big)
        );
    }
    let dir = assets().join("models/yolov4-tiny");
    let refused = |edit: fn(&mut serde_json::Value), size| {
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("bundled file");
        let mut spec: serde_json::Value = serde_json::from_str(&read("model.json")).expect("json");
        edit(&mut spec);
        let onnx = std::fs::read(dir.join("model.onnx")).expect("bundled model");
        let options = ClassifierOptions {
            detect_size: Some(size),
            ..ClassifierOptions::default()
        };
        Detector::from_bytes(&onnx, &read("labels.txt"), &spec.to_string(), "t", &options)
            .expect_err("refused")
            .to_string()
    };
    let odd = refused(|_| {}, 300);
    assert!(odd.contains("multiple of 32"), "{odd}");
    let headless = refused(
        |spec| {
            if let Some(o) = spec["output"].as_object_mut() {
                o.remove("heads");
            }
        },
        320,
    );
    assert!(headless.contains("output.heads"), "{headless}");
}

fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = |r: [f64; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    w * h / (area(a) + area(b) - w * h)
}
