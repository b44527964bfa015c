//! `CROSS JOIN UNNEST(…)`: each row repeated once per element of one of its
//! array (or map) columns, with the element appended as one more column (a MAP
//! entry as a ROW of key and value; the planner spreads ROW fields into columns
//! with a projection after this). Rows whose array is NULL or empty produce
//! nothing, as in Flink. A changelog row's kind goes with every row it becomes, so
//! a retraction retracts each element it once added. Stateless.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::{DataType, SchemaRef};
use runnel_common::changelog;
use runnel_sql::UnnestSpec;

use crate::error::EngineError;
use crate::operator::{Operator, Output};

/// The Unnest operator.
pub struct Unnest {
    column: usize,
    schema: SchemaRef,
}

impl Unnest {
    /// Checks that the unnested column is an array or a map.
    pub fn try_new(
        spec: &UnnestSpec,
        input: &SchemaRef,
        output: &SchemaRef,
    ) -> Result<Self, EngineError> {
        let field = input.fields().get(spec.column).ok_or_else(|| {
            EngineError::Invalid(format!("UNNEST column {} is not an input", spec.column))
        })?;
        if !matches!(field.data_type(), DataType::List(_) | DataType::Map(..)) {
            return Err(EngineError::Invalid(format!(
                "UNNEST needs an ARRAY or MAP, but '{}' is {}",
                field.name(),
                runnel_common::types::sql_name(field.data_type())
            )));
        }
        Ok(Self {
            column: spec.column,
            schema: output.clone(),
        })
    }

    fn expand(&self, batch: &RecordBatch) -> Result<Option<RecordBatch>, EngineError> {
        let ops = changelog::ops(batch).cloned();
        let data = changelog::data(batch);
        let col = data.column(self.column);
        let (offsets, values): (Vec<usize>, ArrayRef) = match col.data_type() {
            DataType::List(_) => {
                let l = col.as_list::<i32>();
                (
                    l.value_offsets().iter().map(|&o| o as usize).collect(),
                    l.values().clone(),
                )
            }
            DataType::Map(..) => {
                let m = col.as_map();
                (
                    m.value_offsets().iter().map(|&o| o as usize).collect(),
                    Arc::new(m.entries().clone()) as ArrayRef,
                )
            }
            other => {
                return Err(EngineError::Internal(format!(
                    "UNNEST over {other} reached the operator"
                )));
            }
        };
        let mut rows = Vec::new();
        let mut elements = Vec::new();
        for i in 0..data.num_rows() {
            if col.is_null(i) {
                continue;
            }
            for j in offsets[i]..offsets[i + 1] {
                rows.push(i as u32);
                elements.push(j as u32);
            }
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let rows = UInt32Array::from(rows);
        let elements = UInt32Array::from(elements);
        let mut columns: Vec<ArrayRef> = data
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), &rows, None))
            .collect::<Result<_, _>>()?;
        columns.push(take(values.as_ref(), &elements, None)?);
        if let Some(ops) = ops {
            columns.push(take(&ops, &rows, None)?);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        let schema = if changelog::ops(batch).is_some() {
            let mut fields: Vec<_> = self.schema.fields().iter().cloned().collect();
            fields.push(Arc::new(changelog::op_field()));
            Arc::new(arrow::datatypes::Schema::new(fields))
        } else {
            self.schema.clone()
        };
        Ok(Some(RecordBatch::try_new_with_options(
            schema, columns, &options,
        )?))
    }
}

impl Operator for Unnest {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        if let Some(b) = self.expand(&batch)? {
            out.emit(b);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use runnel_common::types::{array_type, row_type};

    fn boxes_type() -> DataType {
        array_type(row_type(vec![
            ("label".into(), DataType::Utf8),
            ("score".into(), DataType::Float64),
        ]))
    }

    #[test]
    fn rows_repeat_per_element_with_the_element_appended() {
        let input = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("boxes", boxes_type(), true),
        ]));
        let DataType::List(element) = boxes_type() else {
            panic!()
        };
        let output = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("boxes", boxes_type(), true),
            element.as_ref().clone().with_name("box"),
        ]));
        let text = concat!(
            r#"{"id":1,"boxes":[{"label":"dog","score":0.9},{"label":"cat","score":0.5}]}"#,
            "\n",
            r#"{"id":2,"boxes":[]}"#,
            "\n",
            r#"{"id":3}"#,
            "\n",
            r#"{"id":4,"boxes":[null,{"label":"car"}]}"#,
            "\n",
        );
        let batch = runnel_connectors::format::json::decode_all(input.clone(), text.as_bytes())
            .expect("decodes")
            .batch
            .expect("rows");
        let op = Unnest::try_new(&UnnestSpec { column: 1 }, &input, &output).expect("valid");
        let out = op.expand(&batch).expect("expands").expect("rows");
        let ids: Vec<i64> = out
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("ids")
            .values()
            .to_vec();
        assert_eq!(ids, [1, 1, 4, 4]);
        let boxes = out.column(2).as_struct();
        assert_eq!(boxes.null_count(), 1);
        let labels: Vec<Option<&str>> = boxes
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("labels")
            .iter()
            .collect();
        assert_eq!(labels[..2], [Some("dog"), Some("cat")]);
        assert_eq!(labels[3], Some("car"));
    }

    #[test]
    fn a_retraction_retracts_every_element() {
        let input = Arc::new(Schema::new(vec![Field::new(
            "tags",
            array_type(DataType::Utf8),
            true,
        )]));
        let output = Arc::new(Schema::new(vec![
            Field::new("tags", array_type(DataType::Utf8), true),
            Field::new("tag", DataType::Utf8, true),
        ]));
        let tags =
            runnel_connectors::format::json::decode_all(input.clone(), br#"{"tags":["a","b"]}"#)
                .expect("decodes")
                .batch
                .expect("rows");
        let batch = changelog::with_kinds(
            &input,
            tags.columns().to_vec(),
            &[changelog::RowKind::Delete],
        )
        .expect("changelog");
        let op = Unnest::try_new(&UnnestSpec { column: 0 }, &input, &output).expect("valid");
        let out = op.expand(&batch).expect("expands").expect("rows");
        let kinds: Vec<i8> = changelog::ops(&out).expect("kinds").values().to_vec();
        assert_eq!(kinds, [3, 3]);
    }
}
