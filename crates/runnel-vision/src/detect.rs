//! Object detection: which objects are in an image, where, and how sure the model is.
//!
//! [`Detector`] runs a YOLO-style ONNX model (YOLOv4-tiny on the 80 COCO classes is
//! bundled) whose output rows are `cx, cy, w, h, objectness, class probabilities…` in
//! pixels of its square input, boxes already decoded. An image is letterboxed into
//! that square (aspect ratio kept, gray padding), each box gets a score per class
//! (objectness × class probability), boxes under the threshold go, non-maximum
//! suppression runs per class, and the boxes are mapped back to the original image's
//! pixels. What the model expects is read from its `model.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde::Deserialize;
use tract_onnx::prelude::*;

use crate::error::VisionError;
use crate::model::{self, ClassifierOptions, InputSpec, Plan};
use crate::preprocess::{self, Letterbox};

/// Where the bundled detector lives relative to the repository root (or an install prefix).
pub const BUNDLED_DETECT_MODEL_PATH: &str = "assets/models/yolov4-tiny/model.onnx";

/// Environment variable naming a folder that holds the detector's `model.onnx`,
/// `labels.txt` and `model.json`.
pub const DETECT_MODEL_DIR_ENV: &str = "RUNNEL_DETECT_MODEL_DIR";

/// One object found in an image: its class, score and box in the image's pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Class name.
    pub label: String,
    /// Objectness × class probability, 0..1.
    pub score: f64,
    /// Left edge.
    pub x1: f64,
    /// Top edge.
    pub y1: f64,
    /// Right edge.
    pub x2: f64,
    /// Bottom edge.
    pub y2: f64,
}

/// The detector's `model.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DetectorSpec {
    /// Model name, e.g. `yolov4-tiny`.
    pub name: String,
    /// Must be `object-detection`.
    pub task: String,
    /// Number of classes, when the spec states it.
    #[serde(default)]
    pub classes: Option<usize>,
    /// The input tensor (square, NCHW, RGB, float32).
    pub input: InputSpec,
    /// The output tensor: `[batch, boxes, 5 + classes]`.
    pub output: DetectOutput,
    /// Letterbox settings.
    #[serde(default)]
    pub preprocess: LetterboxSpec,
    /// Thresholds.
    #[serde(default)]
    pub postprocess: PostprocessSpec,
    /// Labels file name, relative to the spec's folder.
    #[serde(default = "default_labels")]
    pub labels: String,
}

/// The detector's output tensor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DetectOutput {
    /// Name of the ONNX output.
    pub name: String,
    /// The model's raw YOLO heads. When given, runnel runs the model only up to them
    /// and decodes the boxes itself (what the graph's own tail does), so the model runs
    /// at any input size that is a multiple of the largest stride (`vision.detect-size`):
    /// the tail's reshapes and grids are fixed to one size, the convolutions are not.
    #[serde(default)]
    pub heads: Vec<HeadSpec>,
    /// Darknet's `scale_x_y` (1.05 for YOLOv4-tiny): a box centre is
    /// `(sigmoid(t) · s − (s − 1) / 2 + cell) · stride`.
    #[serde(default = "one")]
    pub scale_xy: f32,
}

/// One YOLO head: a tensor `[batch, anchors × (5 + classes), rows, columns]` of raw
/// values (`tx, ty, tw, th, objectness, class logits` per anchor).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HeadSpec {
    /// Name of the ONNX tensor.
    pub output: String,
    /// Input pixels per cell (32 for a 13×13 head at 416).
    pub stride: u32,
    /// Anchor boxes `[width, height]` in input pixels, in the tensor's channel order.
    pub anchors: Vec<[f32; 2]>,
}

/// How an image becomes the input: letterboxed on a gray square.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LetterboxSpec {
    /// Must be true: the aspect ratio is kept.
    #[serde(default = "yes")]
    pub letterbox: bool,
    /// Gray level of the padding, 0..255.
    #[serde(default = "default_pad")]
    pub pad_value: u8,
    /// Resize filter (`bilinear`, `nearest`, `bicubic`, `lanczos`).
    #[serde(default = "default_interpolation")]
    pub interpolation: String,
}

impl Default for LetterboxSpec {
    fn default() -> Self {
        LetterboxSpec {
            letterbox: true,
            pad_value: default_pad(),
            interpolation: default_interpolation(),
        }
    }
}

/// Score threshold and the overlap at which NMS suppresses a box of the same class.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PostprocessSpec {
    /// Boxes scoring below this are dropped (default 0.25).
    #[serde(default = "default_score")]
    pub score_threshold: f64,
    /// A box overlapping a better one of its class by more than this IoU goes (default 0.45).
    #[serde(default = "default_iou")]
    pub iou_threshold: f64,
}

impl Default for PostprocessSpec {
    fn default() -> Self {
        PostprocessSpec {
            score_threshold: default_score(),
            iou_threshold: default_iou(),
        }
    }
}

fn yes() -> bool {
    true
}
fn one() -> f32 {
    1.0
}
fn default_pad() -> u8 {
    127
}
fn default_interpolation() -> String {
    "bilinear".to_string()
}
fn default_score() -> f64 {
    0.25
}
fn default_iou() -> f64 {
    0.45
}
fn default_labels() -> String {
    "labels.txt".to_string()
}

impl DetectorSpec {
    /// Parses and validates `model.json` text; `origin` names it in errors.
    pub fn parse(json: &str, origin: &str) -> Result<DetectorSpec, VisionError> {
        let bad = |reason: String| VisionError::Spec {
            origin: origin.to_string(),
            reason,
        };
        let spec: DetectorSpec = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        if spec.task != "object-detection" {
            return Err(bad(format!(
                "task is '{}'; a detector needs 'object-detection'",
                spec.task
            )));
        }
        let input = &spec.input;
        if !input.layout.eq_ignore_ascii_case("NCHW")
            || !input.channels.eq_ignore_ascii_case("RGB")
            || input.dtype != "float32"
        {
            return Err(bad(format!(
                "input must be NCHW RGB float32, not {} {} {}",
                input.layout, input.channels, input.dtype
            )));
        }
        if input.height == 0 || input.height != input.width {
            return Err(bad(format!(
                "input must be square, not {}×{}",
                input.width, input.height
            )));
        }
        if !spec.preprocess.letterbox {
            return Err(bad("preprocess.letterbox must be true".to_string()));
        }
        if preprocess::filter_for(&spec.preprocess.interpolation).is_none() {
            return Err(bad(format!(
                "preprocess.interpolation '{}' is unknown; use bilinear, nearest, bicubic or lanczos",
                spec.preprocess.interpolation
            )));
        }
        for h in &spec.output.heads {
            if h.stride == 0 || h.anchors.is_empty() {
                return Err(bad(format!(
                    "output.heads: head '{}' needs a stride above 0 and at least one anchor",
                    h.output
                )));
            }
        }
        if !(0.5..=2.0).contains(&spec.output.scale_xy) {
            return Err(bad(format!(
                "output.scale_xy must lie between 0.5 and 2, not {}",
                spec.output.scale_xy
            )));
        }
        let post = &spec.postprocess;
        if !(0.0..=1.0).contains(&post.score_threshold)
            || !(0.0..=1.0).contains(&post.iou_threshold)
        {
            return Err(bad(
                "postprocess thresholds must lie between 0 and 1".to_string()
            ));
        }
        Ok(spec)
    }
}

/// A YOLO-style object detector with its labels and thread pool.
pub struct Detector {
    spec: DetectorSpec,
    /// The side of the square the model runs at (model.json's, or `detect_size`).
    side: usize,
    labels: Vec<String>,
    plan: Plan,
    each: Plan,
    pool: Arc<rayon::ThreadPool>,
    options: ClassifierOptions,
    origin: String,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("model", &self.spec.name)
            .field("origin", &self.origin)
            .field("classes", &self.labels.len())
            .finish_non_exhaustive()
    }
}

impl Detector {
    /// Loads `model_path` (an `.onnx` file, or the folder holding it) with the
    /// `model.json` and labels file beside it.
    pub fn load(model_path: &Path, options: &ClassifierOptions) -> Result<Detector, VisionError> {
        let model_path = if model_path.is_dir() {
            model_path.join("model.onnx")
        } else {
            model_path.to_path_buf()
        };
        let dir = model_path.parent().unwrap_or(Path::new("."));
        let spec_path = dir.join(model::SPEC_FILE);
        let spec_text = model::read_text(&spec_path)?;
        let spec = DetectorSpec::parse(&spec_text, &spec_path.display().to_string())?;
        let labels_path = dir.join(&spec.labels);
        let labels_text = model::read_text(&labels_path)?;
        let onnx = std::fs::read(&model_path).map_err(|source| VisionError::Read {
            path: model_path.clone(),
            source,
        })?;
        let origin = model_path.display().to_string();
        let labels = model::label_lines(
            &labels_text,
            spec.classes,
            &labels_path.display().to_string(),
        )?;
        Self::build(spec, labels, &onnx, origin, options)
    }

    /// Builds a detector from in-memory `model.onnx`, `labels.txt` and `model.json`.
    pub fn from_bytes(
        onnx: &[u8],
        labels: &str,
        spec_json: &str,
        origin: &str,
        options: &ClassifierOptions,
    ) -> Result<Detector, VisionError> {
        let spec = DetectorSpec::parse(spec_json, &format!("{origin} model.json"))?;
        let labels = model::label_lines(labels, spec.classes, &format!("{origin} labels"))?;
        Self::build(spec, labels, onnx, origin.to_string(), options)
    }

    /// The bundled detector: `$RUNNEL_DETECT_MODEL_DIR`, else
    /// [`BUNDLED_DETECT_MODEL_PATH`] under the current directory, the executable's
    /// folder or their ancestors, else the copy embedded in the binary.
    pub fn load_default(options: &ClassifierOptions) -> Result<Detector, VisionError> {
        if let Some(path) = default_detect_model_path() {
            return Self::load(&path, options);
        }
        if let Some((onnx, labels, spec)) = embedded_detect_model() {
            let detector = Self::from_bytes(onnx, labels, spec, "embedded detector", options);
            model::release_embedded(onnx);
            return detector;
        }
        let tried: Vec<String> = model::candidates_for(BUNDLED_DETECT_MODEL_PATH)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        Err(VisionError::NotFound {
            tried: format!("${DETECT_MODEL_DIR_ENV}, {}", tried.join(", ")),
        })
    }

    fn build(
        spec: DetectorSpec,
        labels: Vec<String>,
        onnx: &[u8],
        origin: String,
        options: &ClassifierOptions,
    ) -> Result<Detector, VisionError> {
        let width = 5 + labels.len();
        let native = spec.input.height as usize;
        let side = options.detect_size.map_or(native, |s| s as usize);
        let heads = &spec.output.heads;
        if side != native {
            let stride = heads.iter().map(|h| h.stride as usize).max();
            let Some(stride) = stride else {
                return Err(VisionError::Spec {
                    origin: origin.clone(),
                    reason: format!(
                        "the model runs at {native}×{native} only: another size ({side}) needs \
                         output.heads in its model.json"
                    ),
                });
            };
            if side == 0 || !side.is_multiple_of(stride) || side > 4096 {
                return Err(VisionError::Spec {
                    origin: origin.clone(),
                    reason: format!(
                        "detect size {side} must be a multiple of {stride} (the largest head \
                         stride), up to 4096"
                    ),
                });
            }
        }
        let outputs: Vec<&str> = heads.iter().map(|h| h.output.as_str()).collect();
        let (plan, each, pool) = model::plans(
            onnx,
            &spec.input.name,
            side,
            &outputs,
            &origin,
            options,
            |typed| {
                if heads.is_empty() {
                    check_output(typed, width)
                } else {
                    check_heads(typed, heads, side, width)
                }
            },
        )?;
        Ok(Detector {
            spec,
            side,
            labels,
            plan,
            each,
            pool,
            options: ClassifierOptions {
                threads: options.threads.max(1),
                max_batch: options.max_batch.max(1),
                detect_size: options.detect_size,
            },
            origin,
        })
    }

    /// The model description.
    pub fn spec(&self) -> &DetectorSpec {
        &self.spec
    }

    /// The side of the square input the model runs at.
    pub fn input_side(&self) -> usize {
        self.side
    }

    /// Class labels in output order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Where the model was loaded from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The objects in each image scoring at least `min_score` (the spec's threshold when
    /// `None`), best first, or the reason the image was rejected. Blocking and
    /// CPU-heavy, like [`crate::Classifier::classify_batch`]; results in input order.
    pub fn detect_batch(
        &self,
        images: &[Option<&[u8]>],
        min_score: Option<f64>,
    ) -> Vec<Result<Vec<Detection>, String>> {
        let min_score = min_score.unwrap_or(self.spec.postprocess.score_threshold);
        let mut results = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.options.max_batch) {
            let one = |plan: &Plan, image: &Option<&[u8]>| {
                let started = std::time::Instant::now();
                let bytes = image.ok_or_else(|| "no image (NULL)".to_string())?;
                let result = self.detect_one(plan, bytes, min_score);
                metrics::histogram!("runnel_detect_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                result
            };
            if let [image] = chunk {
                results.push(one(&self.plan, image));
                continue;
            }
            results.extend(self.pool.install(|| {
                chunk
                    .par_iter()
                    .map(|i| one(&self.each, i))
                    .collect::<Vec<_>>()
            }));
        }
        results
    }

    fn detect_one(
        &self,
        plan: &Plan,
        bytes: &[u8],
        min_score: f64,
    ) -> Result<Vec<Detection>, String> {
        let n = self.side;
        let side = n as u32;
        let mut input = vec![0f32; 3 * n * n];
        let algorithm = preprocess::filter_for(&self.spec.preprocess.interpolation)
            .ok_or_else(|| "unknown interpolation".to_string())?;
        let letterbox = preprocess::letterbox_into(
            bytes,
            side,
            self.spec.preprocess.pad_value,
            algorithm,
            &mut input,
        )?;
        let err = |e: TractError| format!("inference failed: {e:#}");
        let tensor = tract_ndarray::Array4::from_shape_vec((1, 3, n, n), input)
            .map_err(|e| e.to_string())?
            .into_tensor();
        let outputs = plan.run(tvec!(tensor.into())).map_err(err)?;
        if !self.spec.output.heads.is_empty() {
            let mut rows = Vec::new();
            for (head, out) in self.spec.output.heads.iter().zip(&outputs) {
                let view = out.try_as_plain_ram().map_err(err)?;
                let raw = view.as_slice::<f32>().map_err(err)?;
                decode_head(
                    head,
                    self.spec.output.scale_xy,
                    raw,
                    self.side / head.stride as usize,
                    self.labels.len(),
                    min_score as f32,
                    &mut rows,
                );
            }
            return Ok(self.boxes(&rows, min_score, &letterbox));
        }
        let out = outputs
            .first()
            .ok_or_else(|| "model produced no output".to_string())?;
        let view = out.try_as_plain_ram().map_err(err)?;
        let rows = view.as_slice::<f32>().map_err(err)?;
        Ok(self.boxes(rows, min_score, &letterbox))
    }

    /// Scores, thresholds, per-class NMS and the way back to original pixels.
    fn boxes(&self, rows: &[f32], min_score: f64, letterbox: &Letterbox) -> Vec<Detection> {
        let width = 5 + self.labels.len();
        // (class, score, x1, y1, x2, y2) in input pixels.
        let mut candidates: Vec<(usize, f64, [f64; 4])> = Vec::new();
        for row in rows.chunks_exact(width) {
            let objectness = f64::from(row[4]);
            if objectness.is_nan() || objectness < min_score {
                continue;
            }
            let (cx, cy, w, h) = (
                f64::from(row[0]),
                f64::from(row[1]),
                f64::from(row[2]),
                f64::from(row[3]),
            );
            let b = [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0];
            if b.iter().any(|v| !v.is_finite()) {
                continue;
            }
            for (class, p) in row[5..].iter().enumerate() {
                let score = objectness * f64::from(*p);
                if score >= min_score && score.is_finite() {
                    candidates.push((class, score, b));
                }
            }
        }
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
        let iou_max = self.spec.postprocess.iou_threshold;
        let mut kept: Vec<(usize, f64, [f64; 4])> = Vec::new();
        for c in candidates {
            if kept.iter().any(|k| k.0 == c.0 && iou(&k.2, &c.2) > iou_max) {
                continue;
            }
            kept.push(c);
        }
        kept.into_iter()
            .map(|(class, score, b)| {
                let (x1, y1) = letterbox.to_original(b[0], b[1]);
                let (x2, y2) = letterbox.to_original(b[2], b[3]);
                Detection {
                    label: self.labels[class].clone(),
                    score,
                    x1,
                    y1,
                    x2,
                    y2,
                }
            })
            .collect()
    }
}

/// Appends to `rows` the decoded boxes of one head's raw `[1, anchors × (5 + classes),
/// cells, cells]` output as the graph's own tail computes them — `cx, cy, w, h` in input
/// pixels, objectness and class probabilities — in the tail's order (anchor, row,
/// column); cells whose objectness is under `min_objectness` are skipped (no class can
/// score above its objectness), so only their sigmoid is computed.
fn decode_head(
    head: &HeadSpec,
    scale_xy: f32,
    raw: &[f32],
    cells: usize,
    classes: usize,
    min_objectness: f32,
    rows: &mut Vec<f32>,
) {
    let per = 5 + classes;
    let plane = cells * cells;
    let sigmoid = |v: f32| 1.0 / (1.0 + (-v).exp());
    let stride = head.stride as f32;
    let bias = -(scale_xy - 1.0) / 2.0;
    for (a, anchor) in head.anchors.iter().enumerate() {
        let at = |k: usize, cell: usize| raw.get((a * per + k) * plane + cell).copied();
        for cell in 0..plane {
            let Some(objectness) = at(4, cell).map(sigmoid) else {
                return;
            };
            if objectness.is_nan() || objectness < min_objectness {
                continue;
            }
            let (y, x) = ((cell / cells) as f32, (cell % cells) as f32);
            let t = |k| at(k, cell).unwrap_or(f32::NAN);
            rows.push((sigmoid(t(0)) * scale_xy + bias + x) * stride);
            rows.push((sigmoid(t(1)) * scale_xy + bias + y) * stride);
            rows.push(t(2).exp() * anchor[0]);
            rows.push(t(3).exp() * anchor[1]);
            rows.push(objectness);
            rows.extend((5..per).map(|k| sigmoid(t(k))));
        }
    }
}

/// Each head's output must be `[1, anchors × (5 + classes), side / stride, side / stride]`.
fn check_heads(
    model: &TypedModel,
    heads: &[HeadSpec],
    side: usize,
    width: usize,
) -> Result<(), String> {
    let outlets = model.output_outlets().map_err(|e| format!("{e:#}"))?;
    if outlets.len() != heads.len() {
        return Err(format!(
            "model.json names {} heads, the model gives {} outputs",
            heads.len(),
            outlets.len()
        ));
    }
    for (head, outlet) in heads.iter().zip(outlets) {
        let fact = model.outlet_fact(*outlet).map_err(|e| format!("{e:#}"))?;
        let cells = side / head.stride as usize;
        let want = [1, head.anchors.len() * width, cells, cells];
        let dims: Vec<Option<usize>> = fact
            .shape
            .iter()
            .map(|d| d.to_i64().ok().and_then(|v| usize::try_from(v).ok()))
            .collect();
        if dims != want.map(Some) {
            return Err(format!(
                "head '{}' has shape {:?}, expected {want:?} (anchors × (5 + classes), cells, cells)",
                head.output, fact.shape
            ));
        }
    }
    Ok(())
}

/// Intersection over union of two `[x1, y1, x2, y2]` boxes.
fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f64; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// The output must be `[1, boxes, 5 + classes]`.
fn check_output(model: &TypedModel, width: usize) -> Result<(), String> {
    let outlets = model.output_outlets().map_err(|e| format!("{e:#}"))?;
    let Some(outlet) = outlets.first() else {
        return Err("model has no output".to_string());
    };
    let fact = model.outlet_fact(*outlet).map_err(|e| format!("{e:#}"))?;
    let shape = &fact.shape;
    let last = shape.last().and_then(|d| d.to_i64().ok());
    if shape.rank() != 3 || last != i64::try_from(width).ok() {
        return Err(format!(
            "output shape {shape:?} does not match [batch, boxes, {width}] \
             (cx, cy, w, h, objectness and one probability per label)"
        ));
    }
    Ok(())
}

/// The detector file to load: `$RUNNEL_DETECT_MODEL_DIR/model.onnx` when set, else the
/// first bundled copy found on disk.
pub fn default_detect_model_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(DETECT_MODEL_DIR_ENV).filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("model.onnx"));
    }
    model::candidates_for(BUNDLED_DETECT_MODEL_PATH)
        .into_iter()
        .find(|p| p.is_file())
}

/// The bundled detector compiled into this binary: (onnx, labels, model.json).
#[cfg(feature = "embed-model")]
pub fn embedded_detect_model() -> Option<(&'static [u8], &'static str, &'static str)> {
    model::embedded_files!("yolov4-tiny")
}

/// The bundled detector compiled into this binary; none without the `embed-model` feature.
#[cfg(not(feature = "embed-model"))]
pub fn embedded_detect_model() -> Option<(&'static [u8], &'static str, &'static str)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_boxes() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert!((iou(&a, &a) - 1.0).abs() < 1e-12);
        assert_eq!(iou(&a, &[20.0, 20.0, 30.0, 30.0]), 0.0);
        let half = iou(&a, &[5.0, 0.0, 15.0, 10.0]);
        assert!((half - 50.0 / 150.0).abs() < 1e-12);
    }

    #[test]
    fn spec_errors_name_the_problem() {
        let json = include_str!("../../../assets/models/yolov4-tiny/model.json");
        let spec = DetectorSpec::parse(json, "m.json").expect("parses");
        assert_eq!(spec.input.height, 416);
        assert_eq!(spec.preprocess.pad_value, 127);
        let err = DetectorSpec::parse(
            &json.replace("object-detection", "classification"),
            "m.json",
        )
        .expect_err("refused");
        assert!(err.to_string().contains("object-detection"), "{err}");
    }
}
