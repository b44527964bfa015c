//! `VisionError`: why a model could not be found, loaded or run.

use std::path::PathBuf;

/// Errors of runnel-vision; a bad image is not one of them (it yields a per-row reason).
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    /// A model, labels or spec file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file that was being read.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// model.json is missing a field, is not valid JSON, or asks for something unsupported.
    #[error("invalid model spec {origin}: {reason}")]
    Spec {
        /// Where the spec came from (a path or "embedded model.json").
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// labels.txt does not match the model (wrong count, empty line).
    #[error("invalid labels file {origin}: {reason}")]
    Labels {
        /// Where the labels came from.
        origin: String,
        /// What is wrong with them.
        reason: String,
    },
    /// tract could not parse, type or optimize the ONNX model.
    #[error("cannot load ONNX model {origin}: {reason}")]
    Model {
        /// Where the model came from.
        origin: String,
        /// tract's explanation.
        reason: String,
    },
    /// No model file was found and none is embedded in this binary.
    #[error(
        "no image model found (looked in: {tried}); set RUNNEL_MODEL_DIR to a folder holding \
         model.onnx, labels.txt and model.json, or build with the `embed-model` feature"
    )]
    NotFound {
        /// The places searched, comma separated.
        tried: String,
    },
    /// Running the model on a batch failed.
    #[error("inference failed: {0}")]
    Inference(String),
    /// The worker thread pool could not be started.
    #[error("cannot start the vision thread pool: {0}")]
    ThreadPool(String),
}
