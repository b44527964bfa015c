//! Shared pieces of the windowed aggregates: vectorized accumulators per
//! group (DataFusion's `GroupsAccumulator`), group keys as Arrow rows, and
//! assembling an output batch in GROUP BY order.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, TimestampMillisecondArray};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::row::{RowConverter, Rows, SortField};
use datafusion_expr::{EmitTo, GroupsAccumulator};
use datafusion_functions_aggregate_common::aggregate::groups_accumulator::GroupsAccumulatorAdapter;
use datafusion_physical_expr::PhysicalExpr;
use datafusion_physical_expr::aggregate::AggregateFunctionExpr;
use hashbrown::HashMap;
use runnel_sql::GroupCol;

use crate::error::EngineError;
use crate::eval::Failure;

/// The aggregate functions of one windowed GROUP BY.
pub struct AggFns {
    aggs: Vec<Arc<AggregateFunctionExpr>>,
    /// Per aggregate: argument expressions, then ORDER BY expressions.
    inputs: Vec<Vec<Arc<dyn PhysicalExpr>>>,
}

impl AggFns {
    /// Wraps compiled aggregate expressions.
    pub fn new(aggs: &[Arc<AggregateFunctionExpr>]) -> Self {
        let inputs = aggs
            .iter()
            .map(|a| {
                let mut v = a.expressions();
                v.extend(a.order_bys().iter().map(|s| Arc::clone(&s.expr)));
                v
            })
            .collect();
        Self {
            aggs: aggs.to_vec(),
            inputs,
        }
    }

    /// Fresh accumulators, one per aggregate.
    pub fn accumulators(&self) -> Result<Vec<Box<dyn GroupsAccumulator>>, EngineError> {
        self.aggs
            .iter()
            .map(|a| {
                if a.groups_accumulator_supported() {
                    a.create_groups_accumulator().map_err(internal)
                } else {
                    let a = Arc::clone(a);
                    Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
                        a.create_accumulator()
                    })) as Box<dyn GroupsAccumulator>)
                }
            })
            .collect()
    }

    /// Evaluates every aggregate's inputs over `batch`.
    ///
    /// # Errors
    /// The failing argument expression and its error.
    pub fn evaluate_inputs(&self, batch: &RecordBatch) -> Result<Vec<Vec<ArrayRef>>, Failure> {
        self.inputs
            .iter()
            .map(|exprs| {
                exprs
                    .iter()
                    .map(|e| {
                        e.evaluate(batch)
                            .and_then(|v| v.into_array(batch.num_rows()))
                            .map_err(|err| Failure::new(e, err))
                    })
                    .collect()
            })
            .collect()
    }

    /// Number of intermediate-state columns of each aggregate (for snapshots).
    pub fn state_widths(&self) -> Result<Vec<usize>, EngineError> {
        self.aggs
            .iter()
            .map(|a| a.state_fields().map(|f| f.len()).map_err(internal))
            .collect()
    }

    /// Output fields of the aggregates.
    pub fn fields(&self) -> Vec<Field> {
        self.aggs
            .iter()
            .map(|a| a.field().as_ref().clone().with_nullable(true))
            .collect()
    }
}

/// Feeds `rows` of the evaluated inputs, in groups `gids`, to `accs`.
pub fn update(
    accs: &mut [Box<dyn GroupsAccumulator>],
    inputs: &[Vec<ArrayRef>],
    rows: Option<&arrow::array::UInt32Array>,
    gids: &[usize],
    num_groups: usize,
) -> Result<(), EngineError> {
    for (acc, values) in accs.iter_mut().zip(inputs) {
        let taken: Vec<ArrayRef>;
        let values = match rows {
            None => values.as_slice(),
            Some(idx) => {
                taken = values
                    .iter()
                    .map(|v| arrow::compute::take(v.as_ref(), idx, None))
                    .collect::<Result<_, _>>()?;
                taken.as_slice()
            }
        };
        acc.update_batch(values, gids, None, num_groups)
            .map_err(internal)?;
    }
    Ok(())
}

/// Takes the intermediate state of every group out of `accs` (for a
/// snapshot) and puts it back into fresh accumulators, so the operator keeps
/// running; returns the state columns, aggregate after aggregate.
pub fn snapshot_state(
    fns: &AggFns,
    accs: &mut Vec<Box<dyn GroupsAccumulator>>,
    num_groups: usize,
) -> Result<Vec<ArrayRef>, EngineError> {
    let gids: Vec<usize> = (0..num_groups).collect();
    let mut fresh = fns.accumulators()?;
    let mut cols = Vec::new();
    for (acc, new) in accs.iter_mut().zip(fresh.iter_mut()) {
        let state = acc.state(EmitTo::All).map_err(internal)?;
        new.merge_batch(&state, &gids, num_groups)
            .map_err(internal)?;
        cols.extend(state);
    }
    *accs = fresh;
    Ok(cols)
}

/// Fresh accumulators holding the state columns written by [`snapshot_state`].
pub fn restore_state(
    fns: &AggFns,
    cols: &[ArrayRef],
    num_groups: usize,
) -> Result<Vec<Box<dyn GroupsAccumulator>>, EngineError> {
    let gids: Vec<usize> = (0..num_groups).collect();
    let mut accs = fns.accumulators()?;
    let mut at = 0;
    for (acc, width) in accs.iter_mut().zip(fns.state_widths()?) {
        let state = cols.get(at..at + width).ok_or_else(|| {
            EngineError::Internal("snapshot has fewer state columns than the aggregates".into())
        })?;
        acc.merge_batch(state, &gids, num_groups)
            .map_err(internal)?;
        at += width;
    }
    Ok(accs)
}

/// A batch of `cols` with positional names, as snapshots store them.
pub fn state_batch(cols: Vec<ArrayRef>) -> Result<RecordBatch, EngineError> {
    let fields: Vec<Field> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).map_err(internal)
}

/// Final values of every group, in group-index order.
pub fn evaluate(accs: &mut [Box<dyn GroupsAccumulator>]) -> Result<Vec<ArrayRef>, EngineError> {
    accs.iter_mut()
        .map(|a| a.evaluate(EmitTo::All).map_err(internal))
        .collect()
}

/// Group keys ↔ dense group indices, keys kept in Arrow's row format.
pub struct GroupKeys {
    map: HashMap<Box<[u8]>, usize>,
    rows: Rows,
}

impl GroupKeys {
    /// An empty key set for `converter`'s columns.
    pub fn new(converter: &RowConverter) -> Self {
        Self {
            map: HashMap::new(),
            rows: converter.empty_rows(16, 256),
        }
    }

    /// The group index of `row`, adding it if new.
    pub fn intern(&mut self, row: arrow::row::Row<'_>) -> usize {
        if let Some(g) = self.map.get(row.as_ref()) {
            return *g;
        }
        let g = self.map.len();
        self.map.insert(row.as_ref().into(), g);
        self.rows.push(row);
        g
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True before the first key.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The key columns of all groups, in group-index order.
    pub fn columns(&self, converter: &RowConverter) -> Result<Vec<ArrayRef>, EngineError> {
        converter.convert_rows(self.rows.iter()).map_err(internal)
    }
}

/// A row converter for the key columns of `schema`.
pub fn key_converter(schema: &Schema, key_cols: &[usize]) -> Result<RowConverter, EngineError> {
    RowConverter::new(
        key_cols
            .iter()
            .map(|&c| SortField::new(schema.field(c).data_type().clone()))
            .collect(),
    )
    .map_err(internal)
}

/// Output schema: group columns in GROUP BY order, then aggregates; names from the plan.
pub fn output_schema(
    input: &Schema,
    key_cols: &[usize],
    start_col: usize,
    end_col: usize,
    layout: &[GroupCol],
    aggs: &AggFns,
    planned: &SchemaRef,
) -> SchemaRef {
    let mut fields: Vec<Field> = layout
        .iter()
        .map(|g| match g {
            GroupCol::Key(i) => input.field(key_cols[*i]).clone(),
            GroupCol::Start => input.field(start_col).clone(),
            GroupCol::End => input.field(end_col).clone(),
        })
        .collect();
    fields.extend(aggs.fields());
    let named = fields
        .into_iter()
        .zip(planned.fields())
        .map(|(f, p)| Field::new(p.name(), f.data_type().clone(), true))
        .collect::<Vec<_>>();
    Arc::new(Schema::new(named))
}

/// Assembles one window's (or several sessions') result batch.
pub fn assemble(
    schema: &SchemaRef,
    layout: &[GroupCol],
    keys: Vec<ArrayRef>,
    starts: Vec<i64>,
    ends: Vec<i64>,
    values: Vec<ArrayRef>,
) -> Result<RecordBatch, EngineError> {
    let starts: ArrayRef = Arc::new(TimestampMillisecondArray::from(starts));
    let ends: ArrayRef = Arc::new(TimestampMillisecondArray::from(ends));
    let mut cols: Vec<ArrayRef> = layout
        .iter()
        .map(|g| match g {
            GroupCol::Key(i) => Arc::clone(&keys[*i]),
            GroupCol::Start => Arc::clone(&starts),
            GroupCol::End => Arc::clone(&ends),
        })
        .collect();
    cols.extend(values);
    // Window columns of the input may carry a time zone; match the planned type.
    let cols = super::rows::conform(cols, schema)?;
    RecordBatch::try_new(Arc::clone(schema), cols).map_err(internal)
}

fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(format!("aggregation: {e}"))
}

impl From<arrow::error::ArrowError> for EngineError {
    fn from(e: arrow::error::ArrowError) -> Self {
        EngineError::Internal(format!("arrow: {e}"))
    }
}
