//! SQL functions over a binary image column:
//! `classify(image)` → `Struct{label, score}` (top-1) and
//! `classify_topk(image, k)` → `List<Struct{label, score}>` (best first).
//!
//! A whole RecordBatch column is one call of [`Classifier::classify_batch`], whose
//! images run in parallel on its pool. A NULL image gives NULL; an empty or undecodable one
//! gives NULL too and a [`DeadLetter`] through the callback given at construction.
//! Evaluation blocks (decode + inference): the engine calls it off the async runtime.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Builder, Int64Array, ListArray, StringBuilder, StructArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion_common::{DataFusionError, Result, ScalarValue};
use datafusion_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use crate::{Classifier, Detector, Prediction};

/// One image a classify function could not use: its row in the batch and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Row index within the evaluated batch.
    pub row: usize,
    /// Why the image was rejected (empty, undecodable, unsupported format, …).
    pub reason: String,
    /// Length of the rejected value in bytes.
    pub bytes_len: usize,
    /// The rejected value itself.
    pub bytes: Vec<u8>,
}

/// Receives each rejected image; the engine routes it to the dead-letter output.
pub type RejectFn = Arc<dyn Fn(DeadLetter) + Send + Sync>;

/// Builds `classify` and `classify_topk` around one shared classifier.
pub fn udfs(classifier: Arc<Classifier>, on_reject: RejectFn) -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(ClassifyUdf::new(classifier.clone(), on_reject.clone())),
        ScalarUDF::new_from_impl(ClassifyTopkUdf::new(classifier, on_reject)),
    ]
}

/// The fields of one prediction: `label` (Utf8) and `score` (Float64).
pub fn prediction_fields() -> Fields {
    Fields::from(vec![
        Field::new("label", DataType::Utf8, false),
        Field::new("score", DataType::Float64, false),
    ])
}

/// `classify(image BYTES) → Struct{label, score}`: the top-1 class.
pub struct ClassifyUdf {
    classifier: Arc<Classifier>,
    on_reject: RejectFn,
    signature: Signature,
}

/// `classify_topk(image BYTES, k BIGINT) → List<Struct{label, score}>`: the k best classes.
pub struct ClassifyTopkUdf {
    classifier: Arc<Classifier>,
    on_reject: RejectFn,
    signature: Signature,
}

impl ClassifyUdf {
    /// Wraps `classifier`; rejected rows are passed to `on_reject`.
    pub fn new(classifier: Arc<Classifier>, on_reject: RejectFn) -> Self {
        ClassifyUdf {
            classifier,
            on_reject,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ClassifyTopkUdf {
    /// Wraps `classifier`; rejected rows are passed to `on_reject`.
    pub fn new(classifier: Arc<Classifier>, on_reject: RejectFn) -> Self {
        ClassifyTopkUdf {
            classifier,
            on_reject,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for ClassifyUdf {
    fn name(&self) -> &str {
        "classify"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [image] => Ok(vec![coerce_image(self.name(), image)?]),
            _ => plan_err(format!(
                "classify(image) takes 1 argument, got {}",
                arg_types.len()
            )),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(prediction_fields()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = all_scalar(&args.args);
        let rows = if scalar { 1 } else { args.number_rows };
        let [image] = args.args.as_slice() else {
            return plan_err("classify(image) takes 1 argument".to_string());
        };
        let image = image.to_array(rows)?;
        let predictions = run(&self.classifier, &self.on_reject, &image, |_| Some(1))?;
        let (values, nulls) = flatten(predictions, true);
        let nulls = NullBuffer::from(nulls);
        let out = StructArray::try_new(prediction_fields(), values, Some(nulls))?;
        finish(Arc::new(out), scalar)
    }
}

impl ScalarUDFImpl for ClassifyTopkUdf {
    fn name(&self) -> &str {
        "classify_topk"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [image, k] if k.is_integer() || k.is_null() => {
                Ok(vec![coerce_image(self.name(), image)?, DataType::Int64])
            }
            [_, k] => plan_err(format!(
                "classify_topk(image, k): k must be an integer, got {k}"
            )),
            _ => plan_err(format!(
                "classify_topk(image, k) takes 2 arguments, got {}",
                arg_types.len()
            )),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(topk_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = all_scalar(&args.args);
        let rows = if scalar { 1 } else { args.number_rows };
        let [image, k] = args.args.as_slice() else {
            return plan_err("classify_topk(image, k) takes 2 arguments".to_string());
        };
        let image = image.to_array(rows)?;
        let k = cast(&k.to_array(rows)?, &DataType::Int64)?;
        let k: &Int64Array = k.as_primitive();
        if let Some(bad) = k.iter().flatten().find(|k| *k < 1) {
            return Err(DataFusionError::Execution(format!(
                "classify_topk(image, k): k must be at least 1, got {bad}"
            )));
        }
        let classes = self.classifier.labels().len();
        let want = |row: usize| {
            k.is_valid(row).then(|| {
                usize::try_from(k.value(row))
                    .unwrap_or(classes)
                    .min(classes)
            })
        };
        let predictions = run(&self.classifier, &self.on_reject, &image, want)?;
        let lengths: Vec<usize> = predictions
            .iter()
            .map(|p| p.as_ref().map_or(0, Vec::len))
            .collect();
        let (values, nulls) = flatten(predictions, false);
        let items = StructArray::try_new(prediction_fields(), values, None)?;
        let list = ListArray::try_new(
            list_item_field(),
            OffsetBuffer::from_lengths(lengths),
            Arc::new(items),
            Some(NullBuffer::from(nulls)),
        )?;
        finish(Arc::new(list), scalar)
    }
}

// Two UDF instances are the same function when they share the classifier and callback.
impl PartialEq for ClassifyUdf {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.classifier, &other.classifier)
            && Arc::ptr_eq(&self.on_reject, &other.on_reject)
    }
}
impl Eq for ClassifyUdf {}
impl Hash for ClassifyUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name().hash(state);
        Arc::as_ptr(&self.classifier).hash(state);
    }
}
impl std::fmt::Debug for ClassifyUdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassifyUdf")
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ClassifyTopkUdf {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.classifier, &other.classifier)
            && Arc::ptr_eq(&self.on_reject, &other.on_reject)
    }
}
impl Eq for ClassifyTopkUdf {}
impl Hash for ClassifyTopkUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name().hash(state);
        Arc::as_ptr(&self.classifier).hash(state);
    }
}
impl std::fmt::Debug for ClassifyTopkUdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassifyTopkUdf")
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}

/// The return type of `classify_topk`.
pub fn topk_type() -> DataType {
    DataType::List(list_item_field())
}

fn list_item_field() -> FieldRef {
    Arc::new(Field::new_list_field(
        DataType::Struct(prediction_fields()),
        true,
    ))
}

fn plan_err<T>(message: String) -> Result<T> {
    Err(DataFusionError::Plan(message))
}

fn coerce_image(function: &str, t: &DataType) -> Result<DataType> {
    match t {
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Ok(t.clone()),
        DataType::Null | DataType::FixedSizeBinary(_) => Ok(DataType::Binary),
        other => plan_err(format!(
            "{function}(image): image must be binary (BYTES / BYTEA) holding JPEG, PNG or WebP, got {other}"
        )),
    }
}

fn all_scalar(args: &[ColumnarValue]) -> bool {
    args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)))
}

/// Classifies every row with a value and a `k`; rejected rows go to `on_reject`.
fn run(
    classifier: &Classifier,
    on_reject: &RejectFn,
    image: &ArrayRef,
    want: impl Fn(usize) -> Option<usize>,
) -> Result<Vec<Option<Prediction>>> {
    let bytes = binary_values(image)?;
    let inputs: Vec<Option<&[u8]>> = bytes
        .iter()
        .enumerate()
        .map(|(row, b)| b.filter(|_| want(row).is_some()))
        .collect();
    let max_k = (0..inputs.len()).filter_map(&want).max().unwrap_or(1);
    let results = classifier.classify_batch(&inputs, max_k);
    Ok(results
        .into_iter()
        .zip(inputs)
        .enumerate()
        .map(|(row, (result, input))| match (result, input) {
            (Ok(mut top), _) => {
                top.truncate(want(row).unwrap_or(0));
                Some(top)
            }
            // A NULL image (or NULL k) is NULL out, not a rejected record.
            (Err(_), None) => None,
            (Err(reason), Some(b)) => {
                on_reject(DeadLetter {
                    row,
                    reason,
                    bytes_len: b.len(),
                    bytes: b.to_vec(),
                });
                None
            }
        })
        .collect())
}

fn binary_values(array: &ArrayRef) -> Result<Vec<Option<&[u8]>>> {
    Ok(match array.data_type() {
        DataType::Binary => array.as_binary::<i32>().iter().collect(),
        DataType::LargeBinary => array.as_binary::<i64>().iter().collect(),
        DataType::BinaryView => array.as_binary_view().iter().collect(),
        DataType::Null => vec![None; array.len()],
        other => {
            return Err(DataFusionError::Execution(format!(
                "classify: expected a binary image column, got {other}"
            )));
        }
    })
}

/// Label and score columns of all predictions in row order, plus each row's validity.
fn flatten(predictions: Vec<Option<Prediction>>, one_per_row: bool) -> (Vec<ArrayRef>, Vec<bool>) {
    let rows = predictions.len();
    let items: usize = predictions.iter().flatten().map(Vec::len).sum();
    let mut labels = StringBuilder::with_capacity(items.max(rows), items.max(rows) * 12);
    let mut scores = Float64Builder::with_capacity(items.max(rows));
    let mut valid = Vec::with_capacity(rows);
    for p in predictions {
        match p {
            Some(top) if one_per_row => {
                // classify: exactly one struct per row, even if the model had no classes.
                let (label, score) = top.into_iter().next().unwrap_or_default();
                labels.append_value(label);
                scores.append_value(score);
                valid.push(true);
            }
            Some(top) => {
                for (label, score) in top {
                    labels.append_value(label);
                    scores.append_value(score);
                }
                valid.push(true);
            }
            None if one_per_row => {
                // Placeholder under a NULL struct slot keeps the children non-null.
                labels.append_value("");
                scores.append_value(0.0);
                valid.push(false);
            }
            None => valid.push(false),
        }
    }
    let columns: Vec<ArrayRef> = vec![Arc::new(labels.finish()), Arc::new(scores.finish())];
    (columns, valid)
}

fn finish(array: ArrayRef, scalar: bool) -> Result<ColumnarValue> {
    if scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
            &array, 0,
        )?))
    } else {
        Ok(ColumnarValue::Array(array))
    }
}

/// Builds `detect(image [, min_score])` around one shared detector.
pub fn detect_udf(detector: Arc<Detector>, on_reject: RejectFn) -> ScalarUDF {
    ScalarUDF::new_from_impl(DetectUdf {
        detector,
        on_reject,
        signature: Signature::user_defined(Volatility::Immutable),
    })
}

/// The fields of one detected object: `label`, `score` and the box `x1, y1, x2, y2` in
/// the image's pixels.
pub fn detection_fields() -> Fields {
    let mut fields = vec![
        Field::new("label", DataType::Utf8, false),
        Field::new("score", DataType::Float64, false),
    ];
    fields.extend(["x1", "y1", "x2", "y2"].map(|n| Field::new(n, DataType::Float64, false)));
    Fields::from(fields)
}

/// The return type of `detect`: `ARRAY<ROW<label, score, x1, y1, x2, y2>>`.
pub fn detect_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(
        DataType::Struct(detection_fields()),
        true,
    )))
}

/// `detect(image BYTES [, min_score DOUBLE]) → ARRAY<ROW<label, score, x1, y1, x2, y2>>`:
/// the objects in the image, best first; an empty array when there are none.
pub struct DetectUdf {
    detector: Arc<Detector>,
    on_reject: RejectFn,
    signature: Signature,
}

impl ScalarUDFImpl for DetectUdf {
    fn name(&self) -> &str {
        "detect"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [image] => Ok(vec![coerce_image(self.name(), image)?]),
            [image, s] if s.is_numeric() || s.is_null() => {
                Ok(vec![coerce_image(self.name(), image)?, DataType::Float64])
            }
            [_, s] => plan_err(format!(
                "detect(image, min_score): min_score must be a number between 0 and 1, got {s}"
            )),
            _ => plan_err(format!(
                "detect(image [, min_score]) takes 1 or 2 arguments, got {}",
                arg_types.len()
            )),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(detect_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = all_scalar(&args.args);
        let rows = if scalar { 1 } else { args.number_rows };
        let (image, min_score) = match args.args.as_slice() {
            [image] => (image.to_array(rows)?, None),
            [image, s] => (
                image.to_array(rows)?,
                Some(cast(&s.to_array(rows)?, &DataType::Float64)?),
            ),
            _ => return plan_err("detect(image [, min_score]) takes 1 or 2 arguments".into()),
        };
        let default = self.detector.spec().postprocess.score_threshold;
        let thresholds: Vec<Option<f64>> = match &min_score {
            None => vec![Some(default); rows],
            Some(s) => s
                .as_primitive::<arrow::datatypes::Float64Type>()
                .iter()
                .collect(),
        };
        if let Some(bad) = thresholds
            .iter()
            .flatten()
            .find(|s| !(0.0..=1.0).contains(*s))
        {
            return Err(DataFusionError::Execution(format!(
                "detect(image, min_score): min_score must lie between 0 and 1, got {bad}"
            )));
        }
        let bytes = binary_values(&image)?;
        let inputs: Vec<Option<&[u8]>> = bytes
            .iter()
            .zip(&thresholds)
            .map(|(b, s)| b.filter(|_| s.is_some()))
            .collect();
        // One pass at the lowest threshold asked for; each row keeps its own.
        let lowest = thresholds.iter().flatten().copied().fold(1.0, f64::min);
        let results = self.detector.detect_batch(&inputs, Some(lowest));
        let mut lengths = Vec::with_capacity(rows);
        let mut valid = Vec::with_capacity(rows);
        let mut labels = StringBuilder::new();
        let mut numbers: [Float64Builder; 5] = Default::default();
        for (row, (result, input)) in results.into_iter().zip(&inputs).enumerate() {
            match (result, input) {
                (Ok(found), _) => {
                    let min = thresholds[row].unwrap_or(default);
                    let mut n = 0;
                    for d in found.iter().filter(|d| d.score >= min) {
                        labels.append_value(&d.label);
                        for (b, v) in numbers.iter_mut().zip([d.score, d.x1, d.y1, d.x2, d.y2]) {
                            b.append_value(v);
                        }
                        n += 1;
                    }
                    lengths.push(n);
                    valid.push(true);
                }
                (Err(_), None) => {
                    lengths.push(0);
                    valid.push(false);
                }
                (Err(reason), Some(b)) => {
                    (self.on_reject)(DeadLetter {
                        row,
                        reason,
                        bytes_len: b.len(),
                        bytes: b.to_vec(),
                    });
                    lengths.push(0);
                    valid.push(false);
                }
            }
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(labels.finish())];
        columns.extend(numbers.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        let items = StructArray::try_new(detection_fields(), columns, None)?;
        let DataType::List(item) = detect_type() else {
            return plan_err("detect: return type is not a list".into());
        };
        let list = ListArray::try_new(
            item,
            OffsetBuffer::from_lengths(lengths),
            Arc::new(items),
            Some(NullBuffer::from(valid)),
        )?;
        finish(Arc::new(list), scalar)
    }
}

impl PartialEq for DetectUdf {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.detector, &other.detector)
            && Arc::ptr_eq(&self.on_reject, &other.on_reject)
    }
}
impl Eq for DetectUdf {}
impl Hash for DetectUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name().hash(state);
        Arc::as_ptr(&self.detector).hash(state);
    }
}
impl std::fmt::Debug for DetectUdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetectUdf")
            .field("detector", &self.detector)
            .finish_non_exhaustive()
    }
}
