//! NodeSpec → operator. One match arm per operator.

pub mod project;

use arrow::datatypes::SchemaRef;
use runnel_sql::{Node, NodeSpec};

use crate::error::EngineError;
use crate::operator::Operator;

/// Builds one subtask's operator for `node`, whose first input has schema `input`.
pub fn build(node: &Node, input: &SchemaRef) -> Result<Box<dyn Operator>, EngineError> {
    Ok(match &node.spec {
        NodeSpec::Project(spec) => Box::new(project::Project::try_new(
            &node.label,
            spec,
            input,
            &node.schema,
        )?),
        NodeSpec::Source(_) | NodeSpec::Sink(_) => {
            return Err(EngineError::Internal(format!(
                "{} is not an operator node",
                node.label
            )));
        }
    })
}
