//! Loading the classifier: `model.json` (what the model expects), `labels.txt` (class
//! names) and `model.onnx` (optimized by tract for one image at a time), and
//! finding the bundled model when the user names none.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tract_onnx::prelude::multithread::Executor;
use tract_onnx::prelude::*;

use crate::error::VisionError;

/// File name of the machine-readable model description beside `model.onnx`.
pub const SPEC_FILE: &str = "model.json";

/// Environment variable naming a folder that holds `model.onnx`, `labels.txt` and `model.json`.
pub const MODEL_DIR_ENV: &str = "RUNNEL_MODEL_DIR";

/// Where the bundled model lives relative to the repository root (or an install prefix).
pub const BUNDLED_MODEL_PATH: &str = "assets/models/efficientnet-lite0/model.onnx";

/// The model description read from `model.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelSpec {
    /// Model name, e.g. `efficientnet-lite0`.
    pub name: String,
    /// Number of classes the output has, when the spec states it.
    #[serde(default)]
    pub classes: Option<usize>,
    /// The input tensor the model expects.
    pub input: InputSpec,
    /// The output tensor the model produces.
    pub output: OutputSpec,
    /// How an image becomes the input tensor.
    pub preprocess: PreprocessSpec,
    /// Labels file name, relative to the spec's folder.
    #[serde(default = "default_labels_file")]
    pub labels: String,
}

/// The model's input tensor: name, layout and spatial size.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InputSpec {
    /// Name of the ONNX input.
    pub name: String,
    /// Memory layout; only `NCHW` is supported.
    pub layout: String,
    /// Channel order; only `RGB` is supported.
    pub channels: String,
    /// Input height in pixels.
    pub height: u32,
    /// Input width in pixels.
    pub width: u32,
    /// Element type; only `float32` is supported.
    pub dtype: String,
}

/// The model's output tensor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OutputSpec {
    /// Name of the ONNX output.
    pub name: String,
    /// Whether the output already is a probability distribution (else we softmax logits).
    #[serde(default)]
    pub softmax: bool,
}

/// Preprocessing: resize the shorter side, center-crop, then `(pixel - mean) / std`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PreprocessSpec {
    /// Target length of the shorter side after resizing.
    pub resize_shorter_side: u32,
    /// Side of the square center crop; must equal the input height and width.
    pub center_crop: u32,
    /// Resize filter: `bilinear` (Triangle), `nearest`, `bicubic` or `lanczos`.
    #[serde(default = "default_interpolation")]
    pub interpolation: String,
    /// Per-channel mean subtracted from pixel values in 0..=255.
    pub mean: [f32; 3],
    /// Per-channel divisor applied after subtracting the mean.
    pub std: [f32; 3],
}

fn default_labels_file() -> String {
    "labels.txt".to_string()
}

fn default_interpolation() -> String {
    "bilinear".to_string()
}

impl ModelSpec {
    /// Parses and validates `model.json` text; `origin` names it in errors.
    pub fn parse(json: &str, origin: &str) -> Result<ModelSpec, VisionError> {
        let spec: ModelSpec = serde_json::from_str(json).map_err(|e| VisionError::Spec {
            origin: origin.to_string(),
            reason: e.to_string(),
        })?;
        spec.validate(origin)?;
        Ok(spec)
    }

    fn validate(&self, origin: &str) -> Result<(), VisionError> {
        let bad = |reason: String| {
            Err(VisionError::Spec {
                origin: origin.to_string(),
                reason,
            })
        };
        let input = &self.input;
        if !input.layout.eq_ignore_ascii_case("NCHW") {
            return bad(format!(
                "input.layout '{}' is not supported; only NCHW",
                input.layout
            ));
        }
        if !input.channels.eq_ignore_ascii_case("RGB") {
            return bad(format!(
                "input.channels '{}' is not supported; only RGB",
                input.channels
            ));
        }
        if input.dtype != "float32" {
            return bad(format!(
                "input.dtype '{}' is not supported; only float32",
                input.dtype
            ));
        }
        let pre = &self.preprocess;
        if input.height == 0 || input.height != input.width || pre.center_crop != input.height {
            return bad(format!(
                "preprocess.center_crop ({}) must equal input height ({}) and width ({})",
                pre.center_crop, input.height, input.width
            ));
        }
        if pre.resize_shorter_side < pre.center_crop {
            return bad(format!(
                "preprocess.resize_shorter_side ({}) is smaller than center_crop ({})",
                pre.resize_shorter_side, pre.center_crop
            ));
        }
        if pre.std.iter().any(|s| !s.is_normal()) || pre.mean.iter().any(|m| !m.is_finite()) {
            return bad("preprocess.std must be non-zero and mean finite".to_string());
        }
        if crate::preprocess::filter_for(&pre.interpolation).is_none() {
            return bad(format!(
                "preprocess.interpolation '{}' is unknown; use bilinear, nearest, bicubic or lanczos",
                pre.interpolation
            ));
        }
        if self.classes == Some(0) {
            return bad("classes must be at least 1".to_string());
        }
        Ok(())
    }
}

/// Options for building a [`crate::Classifier`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifierOptions {
    /// Worker threads for decoding and for tract's matrix products (default: available cores).
    pub threads: usize,
    /// Largest number of images handled per parallel round of a `classify_batch` call;
    /// bigger inputs are chunked so that memory stays bounded (default 16).
    pub max_batch: usize,
    /// `detect()` only: the side of the square the detector runs at instead of its
    /// model.json's (a multiple of its largest head stride; smaller is faster and finds
    /// fewer small objects). The classifier ignores it.
    pub detect_size: Option<u32>,
}

impl Default for ClassifierOptions {
    fn default() -> Self {
        ClassifierOptions {
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            max_batch: 16,
            detect_size: None,
        }
    }
}

/// The optimized tract plan with its thread pool.
pub(crate) type Plan = Arc<TypedRunnableModel>;

/// Everything [`crate::Classifier`] holds once loaded.
pub(crate) struct Loaded {
    pub(crate) spec: ModelSpec,
    pub(crate) labels: Vec<String>,
    /// For one image at a time, called outside the pool (multi-threaded matrix products).
    pub(crate) plan: Plan,
    /// For images run in parallel on the pool (single-threaded each).
    pub(crate) each: Plan,
    pub(crate) pool: Arc<rayon::ThreadPool>,
}

/// Reads `model.onnx` plus the `model.json` and labels file beside it.
pub(crate) fn load_dir(
    model_path: &Path,
    options: &ClassifierOptions,
) -> Result<Loaded, VisionError> {
    let dir = model_path.parent().unwrap_or(Path::new("."));
    let spec_path = dir.join(SPEC_FILE);
    let spec_text = read_text(&spec_path)?;
    let spec = ModelSpec::parse(&spec_text, &spec_path.display().to_string())?;
    let labels_path = dir.join(&spec.labels);
    let labels_text = read_text(&labels_path)?;
    let labels = parse_labels(&labels_text, &spec, &labels_path.display().to_string())?;
    let onnx = std::fs::read(model_path).map_err(|source| VisionError::Read {
        path: model_path.to_path_buf(),
        source,
    })?;
    build(
        spec,
        labels,
        &onnx,
        &model_path.display().to_string(),
        options,
    )
}

/// Builds from in-memory files; `origin` names the model in errors.
pub(crate) fn load_bytes(
    onnx: &[u8],
    labels: &str,
    spec_json: &str,
    origin: &str,
    options: &ClassifierOptions,
) -> Result<Loaded, VisionError> {
    let spec = ModelSpec::parse(spec_json, &format!("{origin} model.json"))?;
    let labels = parse_labels(labels, &spec, &format!("{origin} labels"))?;
    build(spec, labels, onnx, origin, options)
}

/// Finds the bundled model file: `$RUNNEL_MODEL_DIR/model.onnx` when that variable is set,
/// else [`BUNDLED_MODEL_PATH`] under the current directory or one of its ancestors, else
/// under the executable's folder or one of its ancestors. `None` when no file exists (the embedded copy may still be used).
pub fn default_model_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(MODEL_DIR_ENV).filter(|d| !d.is_empty()) {
        // An explicit setting wins even if the file is missing, so the load error names it.
        return Some(PathBuf::from(dir).join("model.onnx"));
    }
    candidate_paths().into_iter().find(|p| p.is_file())
}

/// The places [`default_model_path`] searches, in order (without the env variable).
pub(crate) fn candidate_paths() -> Vec<PathBuf> {
    candidates_for(BUNDLED_MODEL_PATH)
}

/// `relative` under the current directory and its ancestors, then under the
/// executable's folder and its ancestors.
pub(crate) fn candidates_for(relative: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        // Ancestors too, so `runnel` started anywhere inside a checkout finds the model.
        out.extend(cwd.ancestors().map(|a| a.join(relative)));
    }
    if let Ok(exe) = std::env::current_exe() {
        let exe = exe.canonicalize().unwrap_or(exe);
        if let Some(bin_dir) = exe.parent() {
            out.extend(bin_dir.ancestors().map(|a| a.join(relative)));
        }
    }
    out
}

/// `(model.onnx, labels.txt, model.json)` of `assets/models/<dir>/`, compiled in.
#[cfg(feature = "embed-model")]
macro_rules! embedded_files {
    ($dir:literal) => {
        Some((
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../assets/models/",
                $dir,
                "/model.onnx"
            ))
            .as_slice(),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../assets/models/",
                $dir,
                "/labels.txt"
            )),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../assets/models/",
                $dir,
                "/model.json"
            )),
        ))
    };
}
#[cfg(feature = "embed-model")]
pub(crate) use embedded_files;

/// The bundled model compiled into this binary: (onnx, labels, model.json).
#[cfg(feature = "embed-model")]
pub fn embedded_model() -> Option<(&'static [u8], &'static str, &'static str)> {
    embedded_files!("efficientnet-lite0")
}

/// The bundled model compiled into this binary; none without the `embed-model` feature.
#[cfg(not(feature = "embed-model"))]
pub fn embedded_model() -> Option<(&'static [u8], &'static str, &'static str)> {
    None
}

/// Hands the pages of an embedded model back to the kernel once it has been built.
///
/// The ONNX bytes are read once, while the plan is built (weights are copied into
/// packed tensors); afterwards the ~43 MB of both bundled models would stay resident as
/// file-backed pages of the binary for nothing. They are clean, read-only pages of a
/// private file mapping, so `MADV_DONTNEED` only drops them from this process: a later
/// read (another pipeline loading the model) faults them in again from the file.
pub(crate) fn release_embedded(bytes: &'static [u8]) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = (bytes.as_ptr() as usize).div_ceil(PAGE) * PAGE;
        let end = (bytes.as_ptr() as usize + bytes.len()) / PAGE * PAGE;
        if end > start {
            // SAFETY: [start, end) lies inside a `&'static [u8]` compiled into the binary,
            // i.e. a read-only private file mapping; MADV_DONTNEED on it discards nothing
            // that cannot be read back from the file, so the slice stays valid and equal.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
}

/// The thread pool of every model loaded with `threads` threads: the classifier and the
/// detector of one pipeline share it, so a frame's two inferences queue for the same
/// cores instead of running four at once on two (each holds its activations, tens of MB
/// for the detector, while it runs).
fn shared_pool(threads: usize) -> Result<Arc<rayon::ThreadPool>, VisionError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, Weak};
    static POOLS: Mutex<Option<HashMap<usize, Weak<rayon::ThreadPool>>>> = Mutex::new(None);
    let mut pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
    let pools = pools.get_or_insert_with(HashMap::new);
    if let Some(pool) = pools.get(&threads).and_then(Weak::upgrade) {
        return Ok(pool);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("runnel-vision-{i}"))
        .build()
        .map_err(|e| VisionError::ThreadPool(e.to_string()))?;
    let pool = Arc::new(pool);
    pools.retain(|_, p| p.strong_count() > 0);
    pools.insert(threads, Arc::downgrade(&pool));
    Ok(pool)
}

pub(crate) fn read_text(path: &Path) -> Result<String, VisionError> {
    std::fs::read_to_string(path).map_err(|source| VisionError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// One label per line; of several synonyms separated by ", " the first is shown.
fn parse_labels(text: &str, spec: &ModelSpec, origin: &str) -> Result<Vec<String>, VisionError> {
    label_lines(text, spec.classes, origin)
}

/// [`parse_labels`] for any model that states (or not) its number of classes.
pub(crate) fn label_lines(
    text: &str,
    classes: Option<usize>,
    origin: &str,
) -> Result<Vec<String>, VisionError> {
    let mut labels = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let first = line.split(", ").next().unwrap_or("").trim();
        if first.is_empty() {
            return Err(VisionError::Labels {
                origin: origin.to_string(),
                reason: format!("line {} is empty", i + 1),
            });
        }
        labels.push(first.to_string());
    }
    if labels.is_empty() {
        return Err(VisionError::Labels {
            origin: origin.to_string(),
            reason: "no labels".to_string(),
        });
    }
    if let Some(classes) = classes
        && classes != labels.len()
    {
        return Err(VisionError::Labels {
            origin: origin.to_string(),
            reason: format!(
                "{} labels but model.json says {classes} classes",
                labels.len()
            ),
        });
    }
    Ok(labels)
}

fn build(
    spec: ModelSpec,
    labels: Vec<String>,
    onnx: &[u8],
    origin: &str,
    options: &ClassifierOptions,
) -> Result<Loaded, VisionError> {
    let classes = labels.len();
    let (plan, each, pool) = plans(
        onnx,
        &spec.input.name,
        spec.input.height as usize,
        &[],
        origin,
        options,
        |typed| check_output(typed, classes),
    )?;
    Ok(Loaded {
        spec,
        labels,
        plan,
        each,
        pool,
    })
}

/// The two runnable plans of an ONNX image model with one input named `input` of
/// `[1, 3, side, side]`, and their thread pool; `check` vets the optimized model's
/// output. `outputs`, when not empty, names the tensors to stop at instead of the
/// model's outputs (what only feeds the rest is dropped). Shared by the classifier and
/// the detector.
pub(crate) fn plans(
    onnx: &[u8],
    input: &str,
    side: usize,
    outputs: &[&str],
    origin: &str,
    options: &ClassifierOptions,
    check: impl FnOnce(&TypedModel) -> Result<(), String>,
) -> Result<(Plan, Plan, Arc<rayon::ThreadPool>), VisionError> {
    let model_err = |reason: String| VisionError::Model {
        origin: origin.to_string(),
        reason,
    };
    let threads = options.threads.max(1);
    let pool = shared_pool(threads)?;

    let mut model = tract_onnx::onnx()
        .model_for_read(&mut Cursor::new(onnx))
        .map_err(|e| model_err(format!("{e:#}")))?;
    let input_names: Vec<String> = model
        .input_outlets()
        .map_err(|e| model_err(format!("{e:#}")))?
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect();
    if input_names != [input] {
        return Err(model_err(format!(
            "model inputs are {input_names:?} but model.json names input '{input}'"
        )));
    }
    if !outputs.is_empty() {
        model
            .select_outputs_by_name(outputs)
            .and_then(|()| model.compact())
            .map_err(|e| model_err(format!("selecting outputs {outputs:?}: {e:#}")))?;
    }
    // Measured with tract 0.21 on this model: a symbolic batch dimension ran 4-8x slower
    // per image than a plan fixed at batch 1 (tract picks its fast kernels only for concrete
    // shapes), so the plan takes one image and a batch's images run in parallel on the pool.
    let fact = f32::fact([1, 3, side, side]);
    model
        .set_input_fact(0, fact.into())
        .map_err(|e| model_err(format!("{e:#}")))?;
    let mut typed = model
        .into_typed()
        .and_then(|m| m.into_decluttered())
        .map_err(|e| model_err(format!("{e:#}")))?;
    channels_last(&mut typed).map_err(model_err)?;
    let typed = typed
        .into_optimized()
        .map_err(|e| model_err(format!("{e:#}")))?;
    check(&typed).map_err(model_err)?;
    // Two plans of the same optimized model. Several images run side by side on the pool,
    // each single-threaded: a multi-threaded matrix product inside a pool worker lets the
    // waiting worker steal another image's inference and re-enter tract's per-thread
    // scratch space ("RefCell already borrowed", then an abort). A lone image runs from
    // the caller's thread with its matrix products spread over the pool instead.
    let runnable = |executor| {
        typed
            .clone()
            .into_runnable_with_options(&RunOptions {
                executor: Some(executor),
                ..RunOptions::default()
            })
            .map_err(|e| model_err(format!("{e:#}")))
    };
    let each = runnable(Executor::SingleThread)?;
    let plan = if threads > 1 {
        runnable(Executor::MultiThread(pool.clone()))?
    } else {
        each.clone()
    };
    Ok((plan, each, pool))
}

/// Runs the convolutions channel-last (NHWC): depthwise ones on our vectorized kernel
/// ([`crate::depthwise`]), dense ones with more than one tap on our direct kernel
/// ([`crate::conv`], on CPUs with AVX2 and FMA), the others through tract's `conv_nhwc`
/// transform; pools and upsamples are made channel-last too ([`crate::layout`]) so that
/// the declutter pass folds away the layout moves between them. Measured on
/// EfficientNet-Lite0 and YOLOv4-tiny (see BENCHMARKS.md).
fn channels_last(model: &mut TypedModel) -> Result<(), String> {
    crate::depthwise::channel_last_depthwise(model).map_err(|e| format!("{e:#}"))?;
    let transform = tract_onnx::tract_core::transform::get_transform("conv_nhwc")
        .map_err(|e| format!("{e:#}"))?
        .ok_or_else(|| "tract has no conv_nhwc transform".to_string())?;
    model
        .transform(transform.as_ref())
        .and_then(|()| crate::conv::channel_last_conv(model))
        .and_then(|()| crate::layout::channel_last_through(model))
        .map_err(|e| format!("{e:#}"))
}

/// The output must be [N, classes] with one label per class.
fn check_output(model: &TypedModel, labels: usize) -> Result<(), String> {
    let outlets = model.output_outlets().map_err(|e| format!("{e:#}"))?;
    let Some(outlet) = outlets.first() else {
        return Err("model has no output".to_string());
    };
    let fact = model.outlet_fact(*outlet).map_err(|e| format!("{e:#}"))?;
    let shape = &fact.shape;
    let classes = shape.last().and_then(|d| d.to_i64().ok());
    if shape.rank() != 2 || classes != i64::try_from(labels).ok() {
        return Err(format!(
            "output shape {shape:?} does not match [batch, {labels}] (one class per label)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = include_str!("../../../assets/models/efficientnet-lite0/model.json");

    #[test]
    fn bundled_spec_parses() {
        let spec = ModelSpec::parse(SPEC, "model.json").unwrap();
        assert_eq!(spec.input.name, "input");
        assert_eq!(spec.input.height, 224);
        assert_eq!(spec.preprocess.resize_shorter_side, 256);
        assert_eq!(spec.preprocess.mean, [127.0; 3]);
        assert_eq!(spec.preprocess.std, [128.0; 3]);
        assert_eq!(spec.classes, Some(1000));
    }

    #[test]
    fn spec_errors_name_the_problem() {
        let nhwc = SPEC.replace("\"NCHW\"", "\"NHWC\"");
        let err = ModelSpec::parse(&nhwc, "x/model.json").unwrap_err();
        assert!(err.to_string().contains("x/model.json"), "{err}");
        assert!(err.to_string().contains("NHWC"), "{err}");
        let err = ModelSpec::parse("{", "y.json").unwrap_err();
        assert!(err.to_string().contains("y.json"), "{err}");
    }

    #[test]
    fn labels_take_the_first_synonym() {
        let mut spec = ModelSpec::parse(SPEC, "model.json").unwrap();
        spec.classes = None;
        let labels = parse_labels("tabby, tabby cat\ntiger cat\n", &spec, "t").unwrap();
        assert_eq!(labels, ["tabby", "tiger cat"]);
        assert!(parse_labels("a\n\nb\n", &spec, "t").is_err());
        spec.classes = Some(3);
        let err = parse_labels("a\nb\n", &spec, "t").unwrap_err();
        assert!(err.to_string().contains("3 classes"), "{err}");
    }
}
