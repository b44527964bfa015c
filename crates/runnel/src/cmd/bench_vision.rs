//! `runnel bench vision`: images/s and per-image latency of `classify` or `detect`
//! (decode, resize, normalize, inference; NMS for detection) on the bundled photos or a
//! folder of images.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use runnel_vision::{Classifier, ClassifierOptions, Detector};

/// What `runnel bench vision` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VisionTask {
    /// `classify`: the bundled EfficientNet-Lite0 (ImageNet, top-1)
    Classify,
    /// `detect`: the bundled YOLOv4-tiny (COCO objects with boxes)
    Detect,
}

/// `runnel bench vision`.
#[derive(Debug, Args)]
pub struct BenchVisionArgs {
    /// Classification or object detection
    #[arg(long, value_enum, default_value_t = VisionTask::Classify)]
    pub task: VisionTask,
    /// Images per classify call (the RecordBatch size)
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Worker threads (default: the number of cores)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Timed batches after one warm-up batch
    #[arg(long, default_value_t = 50)]
    pub iterations: usize,
    /// Folder of JPEG/PNG/WebP images (default: the bundled test photos)
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// An ONNX model with model.json and labels beside it (default: the bundled one for --task)
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// --task detect: the side the detector runs at (default: its model.json's, 416)
    #[arg(long)]
    pub size: Option<u32>,
}

/// Loads the model, classifies `iterations` batches and prints the report.
pub async fn bench_vision(args: BenchVisionArgs) -> anyhow::Result<()> {
    if args.batch == 0 || args.iterations == 0 {
        bail!("--batch and --iterations must be at least 1");
    }
    let images = encoded_images(args.images.as_ref())?;
    let mut options = ClassifierOptions::default();
    if let Some(t) = args.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        options.threads = t;
    }
    options.max_batch = options.max_batch.max(args.batch);
    if args.size.is_some() && args.task != VisionTask::Detect {
        bail!("--size applies to --task detect only");
    }
    options.detect_size = args.size;
    let threads = options.threads;
    let model = args.model.clone();
    let task = args.task;
    let report = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        if task == VisionTask::Detect {
            let detector = match &model {
                Some(p) => Detector::load(p, &options)
                    .with_context(|| format!("--model {}", p.display()))?,
                None => Detector::load_default(&options).context("loading the bundled detector")?,
            };
            return Ok(runnel_vision::run_detect_bench(
                &detector,
                images,
                args.batch,
                args.iterations,
            ));
        }
        let classifier = match &model {
            Some(p) => Classifier::load_with_options(p, &options)
                .with_context(|| format!("--model {}", p.display()))?,
            None => Classifier::load_default(&options).context("loading the bundled model")?,
        };
        Ok(runnel_vision::run_bench(
            &classifier,
            images,
            args.batch,
            args.iterations,
        ))
    })
    .await
    .context("the benchmark thread failed")??;
    println!(
        "batch={} threads={threads} images={} rejected={}",
        report.batch, report.images, report.rejected
    );
    println!(
        "latency_ms p50={:.1} p99={:.1} (one {} call of {} images: decode+resize+infer)",
        report.p50_ms,
        report.p99_ms,
        match args.task {
            VisionTask::Classify => "classify",
            VisionTask::Detect => "detect",
        },
        report.batch
    );
    println!("per_image_ms={:.1}", report.per_image_ms);
    println!("images_per_s={:.1}", report.images_per_s);
    Ok(())
}

fn encoded_images(dir: Option<&PathBuf>) -> anyhow::Result<Vec<Vec<u8>>> {
    match dir {
        None => Ok(crate::cmd::camera_sim::BUNDLED
            .iter()
            .map(|(_, b)| b.to_vec())
            .collect()),
        Some(dir) => {
            let mut out = Vec::new();
            let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
                .with_context(|| format!("--images {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            paths.sort();
            for p in paths {
                out.push(std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?);
            }
            if out.is_empty() {
                bail!("--images {}: no files", dir.display());
            }
            Ok(out)
        }
    }
}
