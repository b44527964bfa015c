//! runnel's own SQL functions: Flink's names and semantics where DataFusion lacks them
//! or means something else (`DATE_FORMAT` with Java patterns, `FROM_UNIXTIME` giving
//! text, …). They replace DataFusion's functions of the same name. Other crates add
//! theirs through a function provider (e.g. `classify` from runnel-vision).

mod lag;
mod normalize;
pub mod outlier;
mod simple;
mod text;
mod time;
mod window;

pub(crate) use window::window_functions;

/// Aggregates runnel adds to DataFusion's: LAG for OVER, and the outlier, smoothing
/// and scaling functions of the cleaning layer.
pub fn aggregates() -> Vec<Arc<datafusion_expr::AggregateUDF>> {
    let mut v = vec![lag::lag()];
    v.extend(outlier::all());
    v
}

pub use time::java_pattern;

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion_common::{Result, plan_err};
use datafusion_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
    binary_expr,
};

/// Functions runnel adds to DataFusion's built-ins.
pub fn all() -> Vec<Arc<ScalarUDF>> {
    let mut v = vec![
        Arc::new(ScalarUDF::new_from_impl(Mod::new())),
        Arc::new(ScalarUDF::new_from_impl(MsSince::new())),
    ];
    v.extend(time::all());
    v.extend(text::all());
    v.extend(normalize::all());
    v
}

/// Checks the literal date patterns of `DATE_FORMAT`, `TO_TIMESTAMP`, `FROM_UNIXTIME`
/// and `UNIX_TIMESTAMP`, and the literal regex of `REGEXP_EXTRACT`, while planning, so a
/// bad one is a planning error with the statement's line rather than a failure when the
/// first row arrives.
///
/// # Errors
/// The first bad pattern, with the function and the letter.
pub fn check_literal_patterns(
    plan: &datafusion_expr::LogicalPlan,
) -> std::result::Result<(), String> {
    use datafusion_common::ScalarValue;
    use datafusion_common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut bad = None;
    let _ = plan.apply(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                let Expr::ScalarFunction(f) = e else {
                    return Ok(TreeNodeRecursion::Continue);
                };
                if f.func.name() == "convert_unit"
                    && let (
                        Some(Expr::Literal(ScalarValue::Utf8(Some(from)), _)),
                        Some(Expr::Literal(ScalarValue::Utf8(Some(to)), _)),
                    ) = (f.args.get(1), f.args.get(2))
                    && let Err(msg) = normalize::check_units(from, to)
                {
                    bad = Some(msg);
                    return Ok(TreeNodeRecursion::Stop);
                }
                let Some(Expr::Literal(ScalarValue::Utf8(Some(p)), _)) = f.args.get(1) else {
                    return Ok(TreeNodeRecursion::Continue);
                };
                let name = f.func.name();
                let problem = match name {
                    "date_format" | "to_timestamp" | "from_unixtime" | "unix_timestamp" => {
                        java_pattern(p).err()
                    }
                    "regexp_extract" => regex::Regex::new(p)
                        .err()
                        .map(|e| format!("invalid regex '{p}': {e}")),
                    _ => None,
                };
                if let Some(msg) = problem {
                    bad = Some(format!("{}: {msg}", name.to_ascii_uppercase()));
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    bad.map_or(Ok(()), Err)
}

/// `ms_since(ts)`: milliseconds from `ts` to the moment the row is evaluated (BIGINT).
///
/// Volatile, so it is computed per batch at run time, never folded at planning. Used to
/// measure end-to-end latency, e.g. `ms_since(ingest_time)` of a log record right after
/// classifying it; every value is also recorded in the
/// `runnel_end_to_end_latency_seconds` histogram of `/metrics`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct MsSince {
    signature: Signature,
}

impl MsSince {
    fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Volatile),
        }
    }
}

impl ScalarUDFImpl for MsSince {
    fn name(&self) -> &str {
        "ms_since"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [t] if matches!(t, DataType::Timestamp(..) | DataType::Null) || t.is_integer() => {
                Ok(vec![DataType::Timestamp(
                    arrow::datatypes::TimeUnit::Millisecond,
                    None,
                )])
            }
            [t] => plan_err!("ms_since(ts) needs a TIMESTAMP (or epoch ms), got {t}"),
            _ => plan_err!("ms_since(ts) takes one argument, got {}", arg_types.len()),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        use arrow::array::{Array, AsArray, Int64Builder};
        use arrow::datatypes::TimestampMillisecondType;
        let [ts] = <[ColumnarValue; 1]>::try_from(args.args).map_err(|_| {
            datafusion_common::DataFusionError::Plan("ms_since takes one argument".into())
        })?;
        let ts = ts.into_array(args.number_rows)?;
        let ts = ts.as_primitive::<TimestampMillisecondType>();
        let now = runnel_common::time::now_ms();
        let histogram = metrics::histogram!("runnel_end_to_end_latency_seconds");
        let mut out = Int64Builder::with_capacity(ts.len());
        for i in 0..ts.len() {
            if ts.is_null(i) {
                out.append_null();
            } else {
                let ms = now.saturating_sub(ts.value(i));
                histogram.record(ms.max(0) as f64 / 1000.0);
                out.append_value(ms);
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// Flink's `MOD(a, b)`: the remainder of a / b, with the sign of a.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Mod {
    signature: Signature,
}

impl Mod {
    fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Mod {
    fn name(&self) -> &str {
        "mod"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 2 {
            return plan_err!("MOD takes two arguments, got {}", arg_types.len());
        }
        let integer = |t: &DataType| t.is_integer() || t.is_null();
        let numeric = |t: &DataType| t.is_numeric() || t.is_null();
        if arg_types.iter().all(integer) {
            Ok(vec![DataType::Int64, DataType::Int64])
        } else if arg_types.iter().all(numeric) {
            Ok(vec![DataType::Float64, DataType::Float64])
        } else {
            plan_err!(
                "MOD needs numeric arguments, got {} and {}",
                arg_types[0],
                arg_types[1]
            )
        }
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types.first().cloned().unwrap_or(DataType::Int64))
    }

    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        match <[Expr; 2]>::try_from(args) {
            Ok([a, b]) => Ok(ExprSimplifyResult::Simplified(binary_expr(
                a,
                datafusion_expr::Operator::Modulo,
                b,
            ))),
            Err(args) => Ok(ExprSimplifyResult::Original(args)),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [a, b] = <[ColumnarValue; 2]>::try_from(args.args).map_err(|_| {
            datafusion_common::DataFusionError::Plan("MOD takes two arguments".into())
        })?;
        let rows = args.number_rows;
        let (a, b) = (a.into_array(rows)?, b.into_array(rows)?);
        Ok(ColumnarValue::Array(arrow::compute::kernels::numeric::rem(
            &a, &b,
        )?))
    }
}
