//! Window (OVER) functions the planner knows. Their streaming execution is an operator
//! of its own (ROW_NUMBER, RANK, DENSE_RANK → Rank), so only the signature lives here.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion_common::{Result as DfResult, plan_err};
use datafusion_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion_expr::{PartitionEvaluator, Signature, Volatility, WindowUDF, WindowUDFImpl};

/// `ROW_NUMBER()`: 1, 2, 3, … within a partition, in ORDER BY order; `RANK()`: ties
/// share a number and leave gaps; `DENSE_RANK()`: ties share a number, no gaps.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Numbering {
    name: &'static str,
    signature: Signature,
}

impl WindowUDFImpl for Numbering {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(
        &self,
        _args: PartitionEvaluatorArgs,
    ) -> DfResult<Box<dyn PartitionEvaluator>> {
        plan_err!(
            "{}() runs as runnel's Top-N operator, not as a DataFusion window",
            self.name.to_ascii_uppercase()
        )
    }

    fn field(&self, args: WindowUDFFieldArgs) -> DfResult<FieldRef> {
        Ok(Arc::new(Field::new(args.name(), DataType::UInt64, false)))
    }
}

/// The window functions by lower-case name.
pub fn window_functions() -> Vec<Arc<WindowUDF>> {
    ["row_number", "rank", "dense_rank"]
        .into_iter()
        .map(|name| {
            Arc::new(WindowUDF::from(Numbering {
                name,
                signature: Signature::nullary(Volatility::Immutable),
            }))
        })
        .collect()
}
