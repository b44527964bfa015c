//! A scalar function from plain parts: its name, how argument types are coerced, its
//! return type, and an evaluation over whole arrays. Most Flink functions runnel adds
//! are this shape, so each is a few lines in `time.rs` / `text.rs`.

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::DataType;
use datafusion_common::Result;
use datafusion_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// Coerces the argument types (or explains, naming the function, why they cannot be).
pub type Coerce = fn(&[DataType]) -> Result<Vec<DataType>>;
/// The return type for the coerced argument types.
pub type Returns = fn(&[DataType]) -> Result<DataType>;
/// Evaluates over arrays of `rows` rows (scalar arguments are expanded first); gets the
/// function's name, so one body can serve a family (`HOUR`, `MINUTE`, …).
pub type Eval = fn(&str, &[ArrayRef], usize) -> Result<ArrayRef>;

/// A function built from the parts above; functions are told apart by name.
#[derive(Debug)]
pub struct Simple {
    name: &'static str,
    signature: Signature,
    coerce: Coerce,
    returns: Returns,
    eval: Eval,
}

impl PartialEq for Simple {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Simple {}

impl std::hash::Hash for Simple {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

/// A function that gives the same output for the same input.
pub fn immutable(
    name: &'static str,
    coerce: Coerce,
    returns: Returns,
    eval: Eval,
) -> Arc<ScalarUDF> {
    make(name, Volatility::Immutable, coerce, returns, eval)
}

/// A function that reads the clock (evaluated per batch, never folded at planning).
pub fn volatile(
    name: &'static str,
    coerce: Coerce,
    returns: Returns,
    eval: Eval,
) -> Arc<ScalarUDF> {
    make(name, Volatility::Volatile, coerce, returns, eval)
}

fn make(
    name: &'static str,
    volatility: Volatility,
    coerce: Coerce,
    returns: Returns,
    eval: Eval,
) -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(Simple {
        name,
        signature: Signature::user_defined(volatility),
        coerce,
        returns,
        eval,
    }))
}

impl ScalarUDFImpl for Simple {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        (self.coerce)(arg_types)
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        (self.returns)(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = args
            .args
            .into_iter()
            .map(|a| a.into_array(rows))
            .collect::<Result<Vec<_>>>()?;
        Ok(ColumnarValue::Array((self.eval)(self.name, &arrays, rows)?))
    }
}
