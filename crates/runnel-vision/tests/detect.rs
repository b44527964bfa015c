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
            let hit = found
                .iter()
                .find(|d| d.label == *label)
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
