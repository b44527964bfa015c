//! The bundled model on the bundled photos: labels, rejects, the SQL functions, loading.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, Int64Array};
use arrow::datatypes::{DataType, Field};
use datafusion_common::ScalarValue;
use datafusion_common::config::ConfigOptions;
use datafusion_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF};
use runnel_vision::{Classifier, ClassifierOptions, DeadLetter, VisionError, udfs};

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets")
}

fn model_path() -> PathBuf {
    assets().join("models/efficientnet-lite0/model.onnx")
}

fn photo(name: &str) -> Vec<u8> {
    std::fs::read(assets().join("images").join(name)).unwrap()
}

/// Loaded once per test binary: optimizing the model takes seconds.
fn classifier() -> Arc<Classifier> {
    static CLASSIFIER: OnceLock<Arc<Classifier>> = OnceLock::new();
    CLASSIFIER
        .get_or_init(|| {
            let options = ClassifierOptions {
                threads: 2,
                ..ClassifierOptions::default()
            };
            Arc::new(Classifier::load_with_options(&model_path(), &options).unwrap())
        })
        .clone()
}

/// (file, accepted top-1 labels) from assets/README.md.
const EXPECTED: &[(&str, &[&str])] = &[
    ("coffee.png", &["espresso"]),
    (
        "chelsea.png",
        &[
            "tabby",
            "tiger cat",
            "Persian cat",
            "Siamese cat",
            "Egyptian cat",
        ],
    ),
    ("china.jpg", &["palace"]),
    ("flower.jpg", &["daisy"]),
    ("rocket.jpg", &["missile"]),
];

#[test]
fn every_bundled_photo_gets_its_expected_label() {
    let photos: Vec<Vec<u8>> = EXPECTED.iter().map(|(f, _)| photo(f)).collect();
    let inputs: Vec<Option<&[u8]>> = photos.iter().map(|p| Some(p.as_slice())).collect();
    let results = classifier().classify_batch(&inputs, 5);
    for ((file, accepted), result) in EXPECTED.iter().zip(results) {
        let top = result.unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(top.len(), 5, "{file}");
        assert!(accepted.contains(&top[0].0.as_str()), "{file}: {top:?}");
        assert!(
            top.windows(2).all(|w| w[0].1 >= w[1].1),
            "{file}: not sorted"
        );
        assert!(top[0].1 > 0.1 && top[0].1 <= 1.0, "{file}: {top:?}");
    }
}

#[test]
fn batch_and_single_image_agree() {
    let coffee = photo("coffee.png");
    let alone = classifier().classify_batch(&[Some(&coffee)], 1);
    let china = photo("china.jpg");
    let batched = classifier().classify_batch(&[Some(&china), Some(&coffee)], 1);
    let (a, b) = (
        &alone[0].as_ref().unwrap()[0],
        &batched[1].as_ref().unwrap()[0],
    );
    assert_eq!(a.0, b.0);
    assert!((a.1 - b.1).abs() < 1e-4, "{a:?} vs {b:?}");
}

#[test]
fn corrupt_and_empty_images_are_rejected_and_the_rest_classified() {
    let coffee = photo("coffee.png");
    let china = photo("china.jpg");
    let truncated = &china[..china.len() / 3];
    let flower = photo("flower.jpg");
    let inputs: Vec<Option<&[u8]>> = vec![
        Some(&coffee),
        Some(truncated),
        Some(&[]),
        None,
        Some(&flower),
    ];
    let results = classifier().classify_batch(&inputs, 1);
    assert_eq!(results.len(), 5);
    assert_eq!(results[0].as_ref().unwrap()[0].0, "espresso");
    let cut = results[1].as_ref().unwrap_err();
    assert!(cut.contains("truncated"), "{cut}");
    let empty = results[2].as_ref().unwrap_err();
    assert!(empty.contains("empty"), "{empty}");
    assert!(results[3].is_err());
    assert_eq!(results[4].as_ref().unwrap()[0].0, "daisy");
}

fn invoke(udf: &ScalarUDF, args: Vec<ColumnarValue>, rows: usize) -> ColumnarValue {
    let arg_types: Vec<DataType> = args.iter().map(|a| a.data_type()).collect();
    let arg_fields = arg_types
        .iter()
        .map(|t| Arc::new(Field::new("a", t.clone(), true)))
        .collect();
    let return_type = udf.return_type(&arg_types).unwrap();
    udf.invoke_with_args(ScalarFunctionArgs {
        args,
        arg_fields,
        number_rows: rows,
        return_field: Arc::new(Field::new(udf.name(), return_type, true)),
        config_options: Arc::new(ConfigOptions::default()),
    })
    .unwrap()
}

fn collecting_udfs() -> (Vec<ScalarUDF>, Arc<Mutex<Vec<DeadLetter>>>) {
    let dead = Arc::new(Mutex::new(Vec::new()));
    let sink = dead.clone();
    let udfs = udfs(
        classifier(),
        Arc::new(move |d| sink.lock().unwrap().push(d)),
    );
    (udfs, dead)
}

#[test]
fn classify_udf_returns_structs_nulls_and_dead_letters() {
    let (udfs, dead) = collecting_udfs();
    let classify = udfs.iter().find(|u| u.name() == "classify").unwrap();
    let coffee = photo("coffee.png");
    let rocket = photo("rocket.jpg");
    let column = BinaryArray::from(vec![
        Some(coffee.as_slice()),
        Some(&b"not an image"[..]),
        None,
        Some(&[][..]),
        Some(rocket.as_slice()),
    ]);
    let out = invoke(classify, vec![ColumnarValue::Array(Arc::new(column))], 5);
    let ColumnarValue::Array(out) = out else {
        panic!("expected an array")
    };
    assert_eq!(
        out.data_type(),
        &classify.return_type(&[DataType::Binary]).unwrap()
    );
    let out = out.as_struct();
    let labels = out.column_by_name("label").unwrap().as_string::<i32>();
    let scores = out
        .column_by_name("score")
        .unwrap()
        .as_primitive::<arrow::datatypes::Float64Type>();
    assert_eq!(
        (0..5).map(|i| out.is_valid(i)).collect::<Vec<_>>(),
        [true, false, false, false, true]
    );
    assert_eq!(labels.value(0), "espresso");
    assert!(scores.value(0) > 0.5);
    assert_eq!(labels.value(4), "missile");

    let dead = dead.lock().unwrap();
    let rows: Vec<usize> = dead.iter().map(|d| d.row).collect();
    assert_eq!(rows, [1, 3], "{dead:?}");
    assert_eq!(dead[0].bytes_len, 12);
    assert!(dead[0].reason.contains("format"), "{dead:?}");
    assert!(dead[1].reason.contains("empty"), "{dead:?}");
}

#[test]
fn classify_topk_udf_returns_lists() {
    let (udfs, dead) = collecting_udfs();
    let topk = udfs.iter().find(|u| u.name() == "classify_topk").unwrap();
    let flower = photo("flower.jpg");
    let column: ArrayRef = Arc::new(BinaryArray::from(vec![
        Some(flower.as_slice()),
        None,
        Some(&b"\xff\xd8\xff"[..]),
    ]));
    let k = ColumnarValue::Scalar(ScalarValue::Int64(Some(3)));
    let ColumnarValue::Array(out) = invoke(topk, vec![ColumnarValue::Array(column), k], 3) else {
        panic!("expected an array")
    };
    let list = out.as_list::<i32>();
    assert!(list.is_valid(0) && list.is_null(1) && list.is_null(2));
    let first = list.value(0);
    let first = first.as_struct();
    assert_eq!(first.len(), 3);
    assert_eq!(first.column(0).as_string::<i32>().value(0), "daisy");
    assert_eq!(dead.lock().unwrap().len(), 1);

    // Per-row k from a column, and a scalar call folds to a scalar.
    let column: ArrayRef = Arc::new(BinaryArray::from(vec![
        Some(flower.as_slice()),
        Some(flower.as_slice()),
    ]));
    let ks: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(4)]));
    let ColumnarValue::Array(out) = invoke(
        topk,
        vec![ColumnarValue::Array(column), ColumnarValue::Array(ks)],
        2,
    ) else {
        panic!("expected an array")
    };
    let list = out.as_list::<i32>();
    assert_eq!((list.value_length(0), list.value_length(1)), (1, 4));

    let scalar = ColumnarValue::Scalar(ScalarValue::Binary(Some(flower.clone())));
    let k = ColumnarValue::Scalar(ScalarValue::Int64(Some(2)));
    let ColumnarValue::Scalar(ScalarValue::List(one)) = invoke(topk, vec![scalar, k], 1) else {
        panic!("expected a list scalar")
    };
    assert_eq!(one.value_length(0), 2);
}

#[test]
fn udf_rejects_non_binary_arguments_at_planning() {
    let (udfs, _) = collecting_udfs();
    let classify = udfs.iter().find(|u| u.name() == "classify").unwrap();
    let err = classify.coerce_types(&[DataType::Utf8]).unwrap_err();
    assert!(err.to_string().contains("binary"), "{err}");
    assert_eq!(
        classify.coerce_types(&[DataType::LargeBinary]).unwrap(),
        [DataType::LargeBinary]
    );
}

#[test]
fn missing_files_are_named_in_the_error() {
    let dir = std::env::temp_dir().join(format!("runnel-vision-missing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = Classifier::load(&dir.join("model.onnx")).unwrap_err();
    assert!(matches!(err, VisionError::Read { .. }), "{err}");
    assert!(err.to_string().contains("model.json"), "{err}");

    let spec =
        std::fs::read_to_string(assets().join("models/efficientnet-lite0/model.json")).unwrap();
    std::fs::write(dir.join("model.json"), &spec).unwrap();
    let err = Classifier::load(&dir.join("model.onnx")).unwrap_err();
    assert!(err.to_string().contains("labels.txt"), "{err}");

    std::fs::write(dir.join("labels.txt"), "a\nb\n").unwrap();
    let err = Classifier::load(&dir.join("model.onnx")).unwrap_err();
    assert!(err.to_string().contains("1000 classes"), "{err}");

    let err = Classifier::from_bytes(b"not onnx", "a\n", &spec.replace("1000", "1")).unwrap_err();
    assert!(matches!(err, VisionError::Model { .. }), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn default_model_is_found() {
    // cargo runs tests from the crate folder; the executable's ancestors reach the repo root.
    let path = Classifier::default_model_path();
    if std::env::var_os("RUNNEL_MODEL_DIR").is_none() {
        let path = path.expect("bundled model not found");
        assert!(
            path.ends_with("assets/models/efficientnet-lite0/model.onnx"),
            "{path:?}"
        );
    }
}

#[cfg(feature = "embed-model")]
#[test]
fn embedded_model_classifies() {
    let (onnx, labels, spec) = runnel_vision::embedded_model().unwrap();
    let options = ClassifierOptions {
        threads: 1,
        max_batch: 4,
        ..ClassifierOptions::default()
    };
    let c = Classifier::from_bytes_with_options(onnx, labels, spec, &options).unwrap();
    let coffee = photo("coffee.png");
    let top = c.classify_batch(&[Some(&coffee)], 1);
    assert_eq!(top[0].as_ref().unwrap()[0].0, "espresso");
}

/// Latency at batch 1 and 8 on one thread; run with `--ignored --nocapture`.
#[test]
#[ignore]
fn measure_latency_one_thread() {
    let options = ClassifierOptions {
        threads: 1,
        max_batch: 64,
        ..ClassifierOptions::default()
    };
    let c = Classifier::load_with_options(&model_path(), &options).unwrap();
    let photos: Vec<Vec<u8>> = EXPECTED.iter().map(|(f, _)| photo(f)).collect();
    for (batch, iterations) in [(1, 20), (8, 4)] {
        let r = runnel_vision::run_bench(&c, photos.clone(), batch, iterations);
        println!(
            "batch {batch}: {:.1} images/s, per image {:.1} ms, batch latency p50 {:.1} ms p99 {:.1} ms, rejected {}",
            r.images_per_s, r.per_image_ms, r.p50_ms, r.p99_ms, r.rejected
        );
    }
}

/// Symbolic-batch plan vs a plan fixed at batch 1 (what Classifier uses), inference
/// only, one thread; plus decode+preprocess alone. Run with `--ignored --nocapture`.
#[test]
#[ignore]
fn measure_symbolic_vs_concrete_plan() {
    use std::time::Instant;
    use tract_onnx::prelude::*;

    let spec = runnel_vision::ModelSpec::parse(
        &std::fs::read_to_string(assets().join("models/efficientnet-lite0/model.json")).unwrap(),
        "model.json",
    )
    .unwrap();
    let photos: Vec<Vec<u8>> = EXPECTED.iter().map(|(f, _)| photo(f)).collect();
    let mut slot = vec![0f32; 3 * 224 * 224];
    let t = Instant::now();
    for p in &photos {
        runnel_vision::preprocess::preprocess_into(p, &spec.preprocess, &mut slot).unwrap();
    }
    println!(
        "decode+preprocess: {:.1} ms per image",
        t.elapsed().as_secs_f64() * 1e3 / photos.len() as f64
    );

    let time = |plan: &Arc<TypedRunnableModel>, n: usize, runs: usize| {
        let input: Tensor = tract_ndarray::Array4::<f32>::zeros((n, 3, 224, 224)).into();
        plan.run(tvec!(input.clone().into())).unwrap();
        let t = Instant::now();
        for _ in 0..runs {
            plan.run(tvec!(input.clone().into())).unwrap();
        }
        t.elapsed().as_secs_f64() * 1e3 / (runs * n) as f64
    };
    let load = || tract_onnx::onnx().model_for_path(model_path()).unwrap();
    let mut symbolic = load();
    let n = symbolic.symbols.sym("N");
    symbolic
        .set_input_fact(
            0,
            f32::fact([n.to_dim(), 3.to_dim(), 224.to_dim(), 224.to_dim()]).into(),
        )
        .unwrap();
    let symbolic = symbolic.into_optimized().unwrap().into_runnable().unwrap();
    let concrete = load()
        .with_input_fact(0, f32::fact([1, 3, 224, 224]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    println!(
        "symbolic plan, batch 1: {:.1} ms per image",
        time(&symbolic, 1, 10)
    );
    println!(
        "symbolic plan, batch 8: {:.1} ms per image",
        time(&symbolic, 8, 2)
    );
    println!(
        "concrete plan, batch 1: {:.1} ms per image",
        time(&concrete, 1, 10)
    );
}
