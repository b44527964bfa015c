//! Window (OVER) functions the planner knows. Their streaming execution is an operator
//! of its own (ROW_NUMBER → Rank), so only the signature lives here.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion_common::{Result as DfResult, plan_err};
use datafusion_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion_expr::{PartitionEvaluator, Signature, Volatility, WindowUDF, WindowUDFImpl};

/// `ROW_NUMBER()`: 1, 2, 3, … within a partition, in ORDER BY order.
#[derive(Debug, PartialEq, Eq, Hash)]
struct RowNumber {
    signature: Signature,
}

impl WindowUDFImpl for RowNumber {
    fn name(&self) -> &str {
        "row_number"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(
        &self,
        _args: PartitionEvaluatorArgs,
    ) -> DfResult<Box<dyn PartitionEvaluator>> {
        plan_err!("ROW_NUMBER() runs as runnel's Top-N operator, not as a DataFusion window")
    }

    fn field(&self, args: WindowUDFFieldArgs) -> DfResult<FieldRef> {
        Ok(Arc::new(Field::new(args.name(), DataType::UInt64, false)))
    }
}

/// The window functions by lower-case name.
pub fn window_functions() -> Vec<Arc<WindowUDF>> {
    vec![Arc::new(WindowUDF::from(RowNumber {
        signature: Signature::nullary(Volatility::Immutable),
    }))]
}
