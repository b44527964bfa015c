//! NodeSpec → operator. One match arm per operator.

pub mod aggregate;
pub mod group_aggregate;
pub mod join;
pub mod lookup_join;
pub mod multiset;
pub mod normalize;
pub mod over;
pub mod project;
pub mod quality;
pub mod rank;
#[cfg(test)]
mod restore_tests;
pub mod rows;
pub mod session;
pub mod unnest;
pub mod window_aggregate;
pub mod window_assign;
pub mod window_join;

use arrow::datatypes::SchemaRef;
use runnel_sql::{Node, NodeSpec};

use crate::error::EngineError;
use crate::eval::RowErrors;
use crate::metrics::NodeMetrics;
use crate::operator::Operator;

/// Builds one subtask's operator for `node`; `inputs` are the schemas of its inputs.
pub fn build(
    node: &Node,
    inputs: &[SchemaRef],
    metrics: &NodeMetrics,
    errors: &RowErrors,
) -> Result<Box<dyn Operator>, EngineError> {
    let input = inputs
        .first()
        .ok_or_else(|| EngineError::Invalid(format!("{} has no input", node.label)))?;
    let late = metrics.late_rows.clone();
    Ok(match &node.spec {
        NodeSpec::Project(spec) => Box::new(project::Project::try_new(
            &node.label,
            spec,
            input,
            &node.schema,
            errors.clone(),
        )?),
        NodeSpec::WindowAssign(spec) => Box::new(window_assign::WindowAssign::try_new(
            &node.label,
            spec,
            input,
            &node.schema,
            late,
        )?),
        NodeSpec::WindowAggregate(spec) => match spec.session_gap_ms {
            Some(gap) => Box::new(session::SessionAggregate::try_new(
                spec,
                gap,
                input,
                &node.schema,
                late,
                errors.clone(),
            )?),
            None => Box::new(window_aggregate::WindowAggregate::try_new(
                spec,
                input,
                &node.schema,
                late,
                errors.clone(),
            )?),
        },
        NodeSpec::WindowJoin(spec) => {
            let right = inputs.get(spec.left_inputs).ok_or_else(|| {
                EngineError::Invalid(format!("{} has no right input", node.label))
            })?;
            Box::new(window_join::WindowJoin::try_new(
                spec,
                input,
                right,
                &node.schema,
                late,
                errors.clone(),
            )?)
        }
        NodeSpec::GroupAggregate(spec) => Box::new(group_aggregate::GroupAggregate::try_new(
            spec,
            input,
            &node.schema,
            errors.clone(),
        )?),
        NodeSpec::Join(spec) => {
            let right = inputs.get(spec.left_inputs).ok_or_else(|| {
                EngineError::Invalid(format!("{} has no right input", node.label))
            })?;
            Box::new(join::Join::try_new(
                spec,
                input,
                right,
                &node.schema,
                node.updating.is_none(),
                errors.clone(),
            )?)
        }
        NodeSpec::Over(spec) => Box::new(over::Over::try_new(
            spec,
            input,
            &node.schema,
            late,
            errors.clone(),
        )?),
        NodeSpec::Rank(spec) => Box::new(rank::Rank::try_new(
            spec,
            input,
            &node.schema,
            spec.input_updating,
        )?),
        NodeSpec::Normalize(spec) => Box::new(normalize::Normalize::try_new(spec, input)?),
        NodeSpec::Unnest(spec) => Box::new(unnest::Unnest::try_new(spec, input, &node.schema)?),
        NodeSpec::Quality(spec) => Box::new(quality::Quality::new(
            &node.label,
            spec,
            &metrics.rules,
            None,
        )),
        NodeSpec::LookupJoin(_) => {
            return Err(EngineError::Internal(format!(
                "{} is built with its looked-up table",
                node.label
            )));
        }
        NodeSpec::Source(..) | NodeSpec::Sink(_) => {
            return Err(EngineError::Internal(format!(
                "{} is not an operator node",
                node.label
            )));
        }
    })
}
