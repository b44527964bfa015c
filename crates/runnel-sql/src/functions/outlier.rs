//! Outlier, noise and scaling functions for the cleaning layer, as aggregates: over an
//! OVER frame (`… OVER (PARTITION BY sensor ORDER BY ts ROWS BETWEEN 20 PRECEDING AND
//! CURRENT ROW)`) each row is judged against the frame that ends at it; in a window's
//! GROUP BY they judge the last row the window received against the whole window.
//!
//! | function | gives |
//! |---|---|
//! | `zscore(x)` (`standardize`) | (x − mean) / sample stddev of the frame |
//! | `robust_zscore(x)` | 0.6745 · (x − median) / MAD (Iglewicz–Hoaglin) |
//! | `mad(x)` | median absolute deviation from the median |
//! | `moving_median(x)` | the frame's median (a smoothed value) |
//! | `ewma(x, alpha)` | exponentially weighted moving average, s₀ = x₀, sₜ = α·xₜ + (1 − α)·sₜ₋₁ |
//! | `minmax_scale(x)` | (x − min) / (max − min) |
//! | `is_outlier(x, method [, threshold])` | `'zscore'` \|z\| > t (3), `'mad'` \|robust z\| > t (3.5), `'iqr'` outside [Q1 − t·IQR, Q3 + t·IQR] (1.5) |
//!
//! "x" is the current (last) row's value; the frame includes it. NULLs are skipped; a
//! NULL current value gives NULL. Quantiles interpolate linearly (NumPy's default).
//! When the MAD is 0 (over half the values equal), the robust z-score falls back to
//! the mean absolute deviation (× 1.2533), as is usual.
//!
//! Over a bounded frame the values in it are kept; over an unbounded one the mean,
//! variance, minimum, maximum and EWMA are kept as running sums, and the functions that
//! need the median keep every value (so the planner refuses those on unbounded frames).

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, ListArray};
use arrow::datatypes::{
    DataType, Field, FieldRef, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    UInt32Type, UInt64Type,
};
use datafusion_common::{Result, ScalarValue, exec_err, plan_err};
use datafusion_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion_physical_expr::expressions::Literal;

/// Functions that keep every value of an unbounded frame.
pub const NEED_BOUNDED_FRAME: &[&str] = &["robust_zscore", "mad", "moving_median", "is_outlier"];

/// Every function of this module.
pub fn all() -> Vec<Arc<AggregateUDF>> {
    [
        Kind::ZScore,
        Kind::Robust,
        Kind::Mad,
        Kind::Median,
        Kind::Ewma,
        Kind::MinMax,
        Kind::Outlier,
    ]
    .into_iter()
    .map(|kind| Arc::new(AggregateUDF::from(FrameFunction::new(kind))))
    .collect()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
enum Kind {
    #[default]
    ZScore,
    Robust,
    Mad,
    Median,
    Ewma,
    MinMax,
    Outlier,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ZScore => "zscore",
            Kind::Robust => "robust_zscore",
            Kind::Mad => "mad",
            Kind::Median => "moving_median",
            Kind::Ewma => "ewma",
            Kind::MinMax => "minmax_scale",
            Kind::Outlier => "is_outlier",
        }
    }

    fn usage(self) -> &'static str {
        match self {
            Kind::Ewma => "ewma(x, alpha)",
            Kind::Outlier => "is_outlier(x, 'zscore' | 'mad' | 'iqr' [, threshold])",
            Kind::ZScore => "zscore(x)",
            Kind::Robust => "robust_zscore(x)",
            Kind::Mad => "mad(x)",
            Kind::Median => "moving_median(x)",
            Kind::MinMax => "minmax_scale(x)",
        }
    }

    /// Whether it needs the frame's values (a median or quantiles).
    fn needs_values(self) -> bool {
        matches!(
            self,
            Kind::Robust | Kind::Mad | Kind::Median | Kind::Outlier
        )
    }
}

/// How `is_outlier` judges.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Method {
    ZScore(f64),
    Mad(f64),
    Iqr(f64),
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct FrameFunction {
    kind: Kind,
    signature: Signature,
    aliases: Vec<String>,
}

impl FrameFunction {
    fn new(kind: Kind) -> Self {
        let arity = match kind {
            Kind::Ewma => vec![TypeSignature::Any(2)],
            Kind::Outlier => vec![TypeSignature::Any(2), TypeSignature::Any(3)],
            _ => vec![TypeSignature::Any(1)],
        };
        FrameFunction {
            kind,
            signature: Signature::one_of(arity, Volatility::Immutable),
            aliases: if kind == Kind::ZScore {
                vec!["standardize".into()]
            } else {
                Vec::new()
            },
        }
    }

    fn make(&self, args: &AccumulatorArgs, sliding: bool) -> Result<Box<dyn Accumulator>> {
        let usage = self.kind.usage();
        let literal = |i: usize| -> Result<Option<ScalarValue>> {
            match args.exprs.get(i) {
                None => Ok(None),
                Some(e) => match e.downcast_ref::<Literal>() {
                    Some(l) => Ok(Some(l.value().clone())),
                    None => plan_err!("{usage}: argument {} must be a constant", i + 1),
                },
            }
        };
        let number = |i: usize| -> Result<Option<f64>> {
            match literal(i)? {
                None => Ok(None),
                Some(v) => match v.cast_to(&DataType::Float64) {
                    Ok(ScalarValue::Float64(Some(x))) if x.is_finite() => Ok(Some(x)),
                    _ => plan_err!("{usage}: argument {} must be a number, not {v}", i + 1),
                },
            }
        };
        let mut alpha = 0.0;
        let mut method = Method::ZScore(3.0);
        match self.kind {
            Kind::Ewma => {
                alpha = number(1)?.unwrap_or(f64::NAN);
                if !(alpha > 0.0 && alpha <= 1.0) {
                    return plan_err!("{usage}: alpha must be in (0, 1]");
                }
            }
            Kind::Outlier => {
                let name = match literal(1)? {
                    Some(ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s))) => s,
                    _ => return plan_err!("{usage}: the method is a string"),
                };
                let t = number(2)?;
                if t.is_some_and(|t| t <= 0.0) {
                    return plan_err!("{usage}: the threshold must be positive");
                }
                method = match name.to_ascii_lowercase().as_str() {
                    "zscore" | "z" => Method::ZScore(t.unwrap_or(3.0)),
                    "mad" | "robust" => Method::Mad(t.unwrap_or(3.5)),
                    "iqr" => Method::Iqr(t.unwrap_or(1.5)),
                    other => {
                        return plan_err!(
                            "{usage}: unknown method '{other}'; use 'zscore', 'mad' or 'iqr'"
                        );
                    }
                };
            }
            _ => {}
        }
        Ok(Box::new(Frame {
            kind: self.kind,
            alpha,
            method,
            keep_values: sliding || self.kind.needs_values(),
            sliding,
            ..Frame::default()
        }))
    }
}

impl AggregateUDFImpl for FrameFunction {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let Some(x) = arg_types.first() else {
            return plan_err!("{} needs a value", self.kind.usage());
        };
        if !(x.is_numeric() || x.is_null()) {
            return plan_err!("{}: x must be a number, not {x}", self.kind.usage());
        }
        let mut out = vec![DataType::Float64];
        out.extend(arg_types[1..].iter().cloned());
        Ok(out)
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(if self.kind == Kind::Outlier {
            DataType::Boolean
        } else {
            DataType::Float64
        })
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.make(&args, false)
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.make(&args, true)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let f = |n: &str| {
            Arc::new(Field::new(
                format!("{}[{n}]", args.name),
                DataType::Float64,
                true,
            ))
        };
        Ok(vec![
            Arc::new(Field::new(
                format!("{}[values]", args.name),
                DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true))),
                true,
            )),
            f("last"),
            f("count"),
            f("mean"),
            f("m2"),
            f("min"),
            f("max"),
            f("ewma"),
        ])
    }
}

/// The frame of one partition (or one window's group).
#[derive(Debug, Default)]
struct Frame {
    kind: Kind,
    alpha: f64,
    method: Method,
    keep_values: bool,
    sliding: bool,
    /// The frame's non-NULL values, oldest first (when kept).
    values: VecDeque<f64>,
    /// The current row's value.
    last: Option<f64>,
    /// Running statistics of everything added (unbounded frames).
    count: f64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    ewma: Option<f64>,
}

impl Default for Method {
    fn default() -> Self {
        Method::ZScore(3.0)
    }
}

/// The q-quantile of sorted values, interpolated linearly.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl Frame {
    fn add(&mut self, x: f64) {
        if self.keep_values {
            self.values.push_back(x);
        }
        if self.count == 0.0 {
            self.min = x;
            self.max = x;
        }
        self.count += 1.0;
        let d = x - self.mean;
        self.mean += d / self.count;
        self.m2 += d * (x - self.mean);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        self.ewma = Some(match self.ewma {
            None => x,
            Some(s) => self.alpha * x + (1.0 - self.alpha) * s,
        });
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.values.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// (count, mean, sample stddev) of the frame.
    fn moments(&self) -> (f64, f64, f64) {
        if self.sliding {
            let n = self.values.len() as f64;
            let mean = self.values.iter().sum::<f64>() / n;
            let var = self.values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
            (n, mean, var.sqrt())
        } else {
            (self.count, self.mean, (self.m2 / (self.count - 1.0)).sqrt())
        }
    }

    fn zscore(&self, x: f64) -> Option<f64> {
        let (n, mean, sd) = self.moments();
        if n < 2.0 {
            return None;
        }
        Some(if sd > 0.0 { (x - mean) / sd } else { 0.0 })
    }

    /// (median, MAD) of sorted values.
    fn median_mad(sorted: &[f64]) -> (f64, f64) {
        let median = quantile(sorted, 0.5);
        let mut dev: Vec<f64> = sorted.iter().map(|v| (v - median).abs()).collect();
        dev.sort_by(f64::total_cmp);
        (median, quantile(&dev, 0.5))
    }

    fn robust(&self, x: f64) -> Option<f64> {
        let sorted = self.sorted();
        if sorted.is_empty() {
            return None;
        }
        let (median, mad) = Self::median_mad(&sorted);
        if mad > 0.0 {
            return Some(0.6745 * (x - median) / mad);
        }
        let mean_ad = sorted.iter().map(|v| (v - median).abs()).sum::<f64>() / sorted.len() as f64;
        Some(if mean_ad > 0.0 {
            (x - median) / (1.253_314 * mean_ad)
        } else {
            0.0
        })
    }

    fn value(&self) -> Option<f64> {
        let x = self.last?;
        let empty = if self.keep_values {
            self.values.is_empty()
        } else {
            self.count == 0.0
        };
        if empty {
            return None;
        }
        match self.kind {
            Kind::ZScore => self.zscore(x),
            Kind::Robust => self.robust(x),
            Kind::Mad => Some(Self::median_mad(&self.sorted()).1),
            Kind::Median => Some(quantile(&self.sorted(), 0.5)),
            Kind::Ewma => {
                if self.sliding {
                    let mut it = self.values.iter();
                    let first = *it.next()?;
                    Some(it.fold(first, |s, v| self.alpha * v + (1.0 - self.alpha) * s))
                } else {
                    self.ewma
                }
            }
            Kind::MinMax => {
                let (lo, hi) = if self.sliding {
                    self.values
                        .iter()
                        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                            (lo.min(*v), hi.max(*v))
                        })
                } else {
                    (self.min, self.max)
                };
                Some(if hi > lo { (x - lo) / (hi - lo) } else { 0.0 })
            }
            Kind::Outlier => None,
        }
    }

    fn outlier(&self) -> Option<bool> {
        let x = self.last?;
        match self.method {
            Method::ZScore(t) => self.zscore(x).map(|z| z.abs() > t),
            Method::Mad(t) => self.robust(x).map(|z| z.abs() > t),
            Method::Iqr(k) => {
                let sorted = self.sorted();
                if sorted.len() < 4 {
                    return None;
                }
                let (q1, q3) = (quantile(&sorted, 0.25), quantile(&sorted, 0.75));
                let iqr = q3 - q1;
                Some(x < q1 - k * iqr || x > q3 + k * iqr)
            }
        }
    }
}

/// Calls `f` with each value of the first argument as DOUBLE (`None` for NULL). OVER
/// hands arguments over uncoerced, often a row at a time: the common numeric types are
/// read in place, others are cast.
fn each_double(name: &str, values: &[ArrayRef], mut f: impl FnMut(Option<f64>)) -> Result<()> {
    let Some(col) = values.first() else {
        return exec_err!("{name}: no argument");
    };
    macro_rules! native {
        ($($t:ty),*) => {$(
            if let Some(a) = col.as_primitive_opt::<$t>() {
                a.iter().for_each(|v| f(v.map(|x| x as f64)));
                return Ok(());
            }
        )*};
    }
    native!(
        Float64Type,
        Int64Type,
        Int32Type,
        Float32Type,
        Int16Type,
        Int8Type,
        UInt64Type,
        UInt32Type
    );
    let cast = arrow::compute::cast(col, &DataType::Float64)?;
    cast.as_primitive::<Float64Type>().iter().for_each(f);
    Ok(())
}

impl Accumulator for Frame {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        each_double(self.kind.name(), values, |v| {
            self.last = v;
            if let Some(x) = v {
                self.add(x);
            }
        })
    }

    /// The oldest rows leave the frame (the OVER operator retracts in arrival order).
    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(col) = values.first() else {
            return exec_err!("{}: no argument", self.kind.name());
        };
        for _ in 0..col.len() - col.null_count() {
            self.values.pop_front();
        }
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(if self.kind == Kind::Outlier {
            ScalarValue::Boolean(self.outlier())
        } else {
            ScalarValue::Float64(self.value().filter(|v| v.is_finite()))
        })
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.values.capacity() * 8
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let values: Vec<ScalarValue> = self
            .values
            .iter()
            .map(|v| ScalarValue::Float64(Some(*v)))
            .collect();
        let f = |v: f64| ScalarValue::Float64(Some(v));
        Ok(vec![
            ScalarValue::List(ScalarValue::new_list_nullable(&values, &DataType::Float64)),
            ScalarValue::Float64(self.last),
            f(self.count),
            f(self.mean),
            f(self.m2),
            f(self.min),
            f(self.max),
            ScalarValue::Float64(self.ewma),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [lists, last, count, mean, m2, min, max, ewma] = states else {
            return exec_err!(
                "{}: state has {} columns, not 8",
                self.kind.name(),
                states.len()
            );
        };
        let Some(lists) = lists.as_any().downcast_ref::<ListArray>() else {
            return exec_err!("{}: state values are not a list", self.kind.name());
        };
        let float = |a: &ArrayRef| -> Result<Float64Array> {
            a.as_primitive_opt::<Float64Type>().cloned().ok_or_else(|| {
                datafusion_common::DataFusionError::Execution("state is not DOUBLE".into())
            })
        };
        let (last, count, mean, m2, min, max, ewma) = (
            float(last)?,
            float(count)?,
            float(mean)?,
            float(m2)?,
            float(min)?,
            float(max)?,
            float(ewma)?,
        );
        for i in 0..lists.len() {
            if !lists.is_null(i) {
                let items = lists.value(i);
                if let Some(items) = items.as_primitive_opt::<Float64Type>() {
                    self.values.extend(items.iter().flatten());
                }
            }
            let n = count.value(i);
            if n > 0.0 {
                // Chan et al.'s parallel combination of means and variances.
                let total = self.count + n;
                let d = mean.value(i) - self.mean;
                self.m2 += m2.value(i) + d * d * self.count * n / total;
                self.mean += d * n / total;
                if self.count == 0.0 {
                    self.min = min.value(i);
                    self.max = max.value(i);
                } else {
                    self.min = self.min.min(min.value(i));
                    self.max = self.max.max(max.value(i));
                }
                self.count = total;
            }
            self.last = last.is_valid(i).then(|| last.value(i));
            if ewma.is_valid(i) {
                self.ewma = Some(ewma.value(i));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: Kind, sliding: bool) -> Frame {
        Frame {
            kind,
            alpha: 0.5,
            keep_values: sliding || kind.needs_values(),
            sliding,
            ..Frame::default()
        }
    }

    fn feed(f: &mut Frame, xs: &[f64]) {
        let a: ArrayRef = Arc::new(Float64Array::from(xs.to_vec()));
        f.update_batch(&[a]).unwrap();
    }

    fn value(f: &mut Frame) -> f64 {
        match f.evaluate().unwrap() {
            ScalarValue::Float64(Some(v)) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn zscore_matches_hand_computed_values_sliding_and_running() {
        // mean 3, sample sd sqrt(2.5): (5 - 3) / 1.5811 = 1.2649.
        for sliding in [false, true] {
            let mut f = frame(Kind::ZScore, sliding);
            feed(&mut f, &[1.0, 2.0, 3.0, 4.0, 5.0]);
            assert!(
                (value(&mut f) - 1.264_911).abs() < 1e-6,
                "sliding {sliding}"
            );
        }
        // Sliding: 1 leaves, frame [2, 3, 4, 5, 9]: mean 4.6, sd 2.70185, z = 1.62851.
        let mut f = frame(Kind::ZScore, true);
        feed(&mut f, &[1.0, 2.0, 3.0, 4.0, 5.0, 9.0]);
        f.retract_batch(&[Arc::new(Float64Array::from(vec![1.0])) as ArrayRef])
            .unwrap();
        let v = value(&mut f);
        assert!((v - 1.628_513).abs() < 1e-6, "{v}");
    }

    #[test]
    fn robust_zscore_mad_median_and_iqr() {
        let mut f = frame(Kind::Robust, true);
        // median 3, deviations [2,1,0,1,97] → MAD 1; 0.6745 * 97 = 65.4265.
        feed(&mut f, &[1.0, 2.0, 3.0, 4.0, 100.0]);
        assert!((value(&mut f) - 65.4265).abs() < 1e-9);
        let mut m = frame(Kind::Mad, true);
        feed(&mut m, &[1.0, 2.0, 3.0, 4.0, 100.0]);
        assert_eq!(value(&mut m), 1.0);
        let mut med = frame(Kind::Median, true);
        feed(&mut med, &[5.0, 1.0, 4.0, 2.0]);
        assert_eq!(value(&mut med), 3.0);
        // Q1 = 1.75, Q3 = 3.25 on [1, 2, 3, 4]... with 100: [1,2,3,4,100] Q1 2, Q3 4,
        // fence 4 + 1.5 * 2 = 7 < 100.
        let mut o = frame(Kind::Outlier, true);
        o.method = Method::Iqr(1.5);
        feed(&mut o, &[1.0, 2.0, 3.0, 4.0, 100.0]);
        assert_eq!(o.evaluate().unwrap(), ScalarValue::Boolean(Some(true)));
        feed(&mut o, &[3.0]);
        assert_eq!(o.evaluate().unwrap(), ScalarValue::Boolean(Some(false)));
    }

    #[test]
    fn ewma_and_minmax_and_state_round_trip() {
        let mut e = frame(Kind::Ewma, false);
        feed(&mut e, &[10.0, 20.0, 20.0]);
        // 10 → 15 → 17.5
        assert_eq!(value(&mut e), 17.5);
        let state: Vec<ArrayRef> = e
            .state()
            .unwrap()
            .iter()
            .map(|s| s.to_array().unwrap())
            .collect();
        let mut r = frame(Kind::Ewma, false);
        r.merge_batch(&state).unwrap();
        feed(&mut r, &[0.0]);
        assert_eq!(value(&mut r), 8.75);
        let mut s = frame(Kind::MinMax, false);
        feed(&mut s, &[0.0, 10.0, 2.5]);
        assert_eq!(value(&mut s), 0.25);
        // A NULL current value gives NULL.
        let a: ArrayRef = Arc::new(Float64Array::from(vec![None::<f64>]));
        s.update_batch(&[a]).unwrap();
        assert_eq!(s.evaluate().unwrap(), ScalarValue::Float64(None));
    }
}
