//! SQL functions the planner asks for by name: `classify` and `classify_topk` load the
//! image classifier, `detect` the object detector, the first time a query calls one of
//! them (a second each, so scripts without them never pay for it), with the `vision.*`
//! settings.

use std::sync::{Arc, Mutex, OnceLock};

use datafusion_expr::ScalarUDF;
use runnel_common::metrics::ConnectorMetrics;
use runnel_connectors::dead_letters::{DeadLetter, DeadLetterWriter, Location};
use runnel_sql::{FunctionProvider, ProvidedFunction};
use runnel_vision::{Classifier, ClassifierOptions, DeadLetter as VisionReject, Detector};

use crate::settings::VisionSettings;

/// The names [`VisionFunctions`] provides.
const VISION_FUNCTIONS: &[&str] = &["classify", "classify_topk", "detect"];

/// Where `classify` puts images it cannot read: the run's dead-letter service, bound
/// when the pipeline starts (planning happens before the service exists).
#[derive(Debug, Clone, Default)]
pub struct Rejects {
    writer: Arc<OnceLock<Arc<DeadLetterWriter>>>,
    /// Counts, shown with the projection that calls `classify`.
    pub metrics: ConnectorMetrics,
}

impl Rejects {
    /// Sends rejects to `writer` from now on.
    pub fn bind(&self, writer: Arc<DeadLetterWriter>) {
        let _ = self.writer.set(writer);
    }

    /// Where they go, once bound.
    pub fn target(&self) -> Option<String> {
        self.writer.get().map(|w| w.target().to_string())
    }
}

/// Provides `classify` / `classify_topk`, loading the model on first use.
#[derive(Debug)]
pub struct VisionFunctions {
    settings: VisionSettings,
    rejects: Rejects,
    loaded: Mutex<Option<Vec<ScalarUDF>>>,
    detect: Mutex<Option<ScalarUDF>>,
}

impl VisionFunctions {
    /// A provider with these settings; rejected images go to `rejects`.
    pub fn new(settings: VisionSettings, rejects: Rejects) -> Self {
        VisionFunctions {
            settings,
            rejects,
            loaded: Mutex::new(None),
            detect: Mutex::new(None),
        }
    }

    /// Whether a query called one of its functions (so a model is loaded).
    pub fn used(&self) -> bool {
        !self.used_names().is_empty()
    }

    /// `classify` and/or `detect`, as the queries called them.
    pub fn used_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            names.push("classify");
        }
        if self
            .detect
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            names.push("detect");
        }
        names
    }
}

impl FunctionProvider for VisionFunctions {
    fn function(&self, name: &str) -> Result<Option<ProvidedFunction>, String> {
        if !VISION_FUNCTIONS.contains(&name) {
            return Ok(None);
        }
        if name == "detect" {
            let mut loaded = self.detect.lock().unwrap_or_else(|p| p.into_inner());
            if loaded.is_none() {
                let detector = Arc::new(load_detector(&self.settings)?);
                *loaded = Some(runnel_vision::detect_udf(
                    detector,
                    reject_fn(self.rejects.clone(), "detect"),
                ));
            }
            return Ok(loaded.as_ref().map(|u| ProvidedFunction {
                udf: Arc::new(u.clone()),
                blocking: true,
            }));
        }
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.is_none() {
            let classifier = Arc::new(load_classifier(&self.settings)?);
            *loaded = Some(runnel_vision::udfs(
                classifier,
                reject_fn(self.rejects.clone(), "classify"),
            ));
        }
        Ok(loaded
            .iter()
            .flatten()
            .find(|u| u.name() == name)
            .map(|u| ProvidedFunction {
                udf: Arc::new(u.clone()),
                blocking: true,
            }))
    }
}

/// The thread and batch options of `vision.threads` and `vision.batch`.
fn options(settings: &VisionSettings) -> ClassifierOptions {
    let mut options = ClassifierOptions::default();
    if let Some(n) = settings.threads {
        options.threads = n;
    }
    if let Some(n) = settings.batch {
        options.max_batch = n;
    }
    options.detect_size = settings.detect_size;
    options
}

/// Loads `vision.model` (default: the bundled EfficientNet-Lite0) with the
/// `vision.threads` and `vision.batch` settings.
///
/// # Errors
/// The model cannot be read or is not a classifier runnel can run.
pub fn load_classifier(settings: &VisionSettings) -> Result<Classifier, String> {
    let options = options(settings);
    let started = std::time::Instant::now();
    let classifier = match &settings.model {
        Some(path) => Classifier::load_with_options(path, &options)
            .map_err(|e| format!("SET 'vision.model' = '{}': {e}", path.display()))?,
        None => Classifier::load_default(&options)
            .map_err(|e| format!("loading the bundled image model: {e}"))?,
    };
    tracing::info!(
        model = classifier.spec().name,
        classes = classifier.labels().len(),
        threads = options.threads,
        ms = started.elapsed().as_millis() as u64,
        "image classifier loaded"
    );
    Ok(classifier)
}

/// Loads `vision.detect-model` (default: the bundled YOLOv4-tiny) with the
/// `vision.threads`, `vision.batch` and `vision.detect-size` settings.
///
/// # Errors
/// The model cannot be read or is not a detector runnel can run.
pub fn load_detector(settings: &VisionSettings) -> Result<Detector, String> {
    let options = options(settings);
    let started = std::time::Instant::now();
    let loaded = match &settings.detect_model {
        Some(path) => Detector::load(path, &options)
            .map_err(|e| format!("SET 'vision.detect-model' = '{}': {e}", path.display())),
        None => Detector::load_default(&options)
            .map_err(|e| format!("loading the bundled object detector: {e}")),
    };
    let detector = loaded.map_err(|e| match settings.detect_size {
        Some(side) => format!("{e} (with SET 'vision.detect-size' = '{side}')"),
        None => e,
    })?;
    tracing::info!(
        model = detector.spec().name,
        classes = detector.labels().len(),
        side = detector.input_side(),
        threads = options.threads,
        ms = started.elapsed().as_millis() as u64,
        "object detector loaded"
    );
    Ok(detector)
}

/// Sends each image `function` rejects to the dead-letter service; never fails the
/// pipeline (a destination that cannot be written is reported once).
fn reject_fn(r: Rejects, function: &'static str) -> runnel_vision::RejectFn {
    let warned = std::sync::atomic::AtomicBool::new(false);
    Arc::new(move |d: VisionReject| {
        let letter = DeadLetter::new(
            Location::Function {
                name: function.into(),
            },
            d.reason,
            d.bytes,
        );
        let result = match r.writer.get() {
            Some(w) => w.write(std::slice::from_ref(&letter)),
            None => {
                r.metrics.dead_letters.add(1);
                Ok(())
            }
        };
        if let Err(e) = result
            && !warned.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!("cannot write {function} dead letters: {e}");
        }
    })
}
