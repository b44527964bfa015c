//! `LAG(x [, offset [, default]]) OVER (PARTITION BY k ORDER BY ts …)`: the value of
//! `x` in the row `offset` (default 1) rows before the current one in its partition,
//! else `default` (NULL when not given) — Flink's LAG in OVER aggregates.
//!
//! An aggregate for the OVER operator, which feeds rows in time order: it keeps the
//! last `offset + 1` values itself, so the frame the query declares does not limit it
//! (as in Flink), and a row leaving the frame is not forgotten. LEAD would need rows
//! that have not arrived, so a stream cannot compute it.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, ListArray};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion_common::{Result, ScalarValue, exec_err, plan_err};
use datafusion_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion_physical_expr::expressions::Literal;

/// Largest offset LAG accepts (it keeps that many values per partition).
const MAX_OFFSET: i64 = 10_000;

#[derive(Debug, PartialEq, Eq, Hash)]
struct Lag {
    signature: Signature,
}

/// The LAG aggregate.
pub fn lag() -> Arc<AggregateUDF> {
    Arc::new(AggregateUDF::from(Lag {
        signature: Signature::one_of(
            vec![
                TypeSignature::Any(1),
                TypeSignature::Any(2),
                TypeSignature::Any(3),
            ],
            Volatility::Immutable,
        ),
    }))
}

impl AggregateUDFImpl for Lag {
    fn name(&self) -> &str {
        "lag"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args.first() {
            Some(t) => Ok(t.clone()),
            None => plan_err!("LAG(x [, offset [, default]]) needs a value"),
        }
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let literal = |i: usize| -> Result<Option<ScalarValue>> {
            match args.exprs.get(i) {
                None => Ok(None),
                Some(e) => match e.downcast_ref::<Literal>() {
                    Some(l) => Ok(Some(l.value().clone())),
                    None => plan_err!("LAG: the offset and default must be constants"),
                },
            }
        };
        let offset = match literal(1)? {
            None => 1,
            Some(v) => match v.cast_to(&DataType::Int64)? {
                ScalarValue::Int64(Some(n)) if (0..=MAX_OFFSET).contains(&n) => n as usize,
                other => {
                    return plan_err!(
                        "LAG: offset {other} is not a whole number in 0..={MAX_OFFSET}"
                    );
                }
            },
        };
        let data_type = args.return_type().clone();
        let default = match literal(2)? {
            None => ScalarValue::try_from(&data_type)?,
            Some(v) if v.is_null() => ScalarValue::try_from(&data_type)?,
            Some(v) => v.cast_to(&data_type)?,
        };
        Ok(Box::new(LagAccumulator {
            offset,
            default,
            data_type,
            values: VecDeque::new(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let item = args.return_field.data_type().clone();
        Ok(vec![Arc::new(Field::new(
            format!("{}[values]", args.name),
            DataType::List(Arc::new(Field::new_list_field(item, true))),
            true,
        ))])
    }
}

#[derive(Debug)]
struct LagAccumulator {
    offset: usize,
    default: ScalarValue,
    data_type: DataType,
    /// The last `offset + 1` values, oldest first.
    values: VecDeque<ScalarValue>,
}

impl LagAccumulator {
    fn push(&mut self, v: ScalarValue) {
        self.values.push_back(v);
        while self.values.len() > self.offset + 1 {
            self.values.pop_front();
        }
    }
}

impl Accumulator for LagAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(col) = values.first() else {
            return exec_err!("LAG: no argument");
        };
        for i in 0..col.len() {
            self.push(ScalarValue::try_from_array(col, i)?);
        }
        Ok(())
    }

    /// Rows leaving the frame stay: LAG looks back by rows, not by frame.
    fn retract_batch(&mut self, _values: &[ArrayRef]) -> Result<()> {
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.values.len() > self.offset {
            Ok(self.values[self.values.len() - 1 - self.offset].clone())
        } else {
            Ok(self.default.clone())
        }
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self.values.iter().map(ScalarValue::size).sum::<usize>()
            + self.default.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let values: Vec<ScalarValue> = self.values.iter().cloned().collect();
        let list = ScalarValue::new_list_nullable(&values, &self.data_type);
        Ok(vec![ScalarValue::List(list)])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(lists) = states
            .first()
            .and_then(|s| s.as_any().downcast_ref::<ListArray>())
        else {
            return exec_err!("LAG: state is not a list");
        };
        for i in 0..lists.len() {
            if lists.is_null(i) {
                continue;
            }
            let items = lists.value(i);
            for j in 0..items.len() {
                self.push(ScalarValue::try_from_array(&items, j)?);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    fn acc(offset: usize) -> LagAccumulator {
        LagAccumulator {
            offset,
            default: ScalarValue::Int64(Some(-1)),
            data_type: DataType::Int64,
            values: VecDeque::new(),
        }
    }

    #[test]
    fn looks_back_by_rows_and_survives_a_state_round_trip() {
        let mut a = acc(2);
        assert_eq!(a.evaluate().unwrap(), ScalarValue::Int64(Some(-1)));
        let batch: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3, 4]));
        a.update_batch(std::slice::from_ref(&batch)).unwrap();
        assert_eq!(a.evaluate().unwrap(), ScalarValue::Int64(Some(2)));
        // Leaving the frame does not forget.
        a.retract_batch(&[batch]).unwrap();
        assert_eq!(a.evaluate().unwrap(), ScalarValue::Int64(Some(2)));
        // A checkpoint's state restores the same answers.
        let state: Vec<ArrayRef> = a
            .state()
            .unwrap()
            .iter()
            .map(|s| s.to_array().unwrap())
            .collect();
        let mut b = acc(2);
        b.merge_batch(&state).unwrap();
        assert_eq!(b.evaluate().unwrap(), ScalarValue::Int64(Some(2)));
        b.update_batch(&[Arc::new(Int64Array::from(vec![5]))])
            .unwrap();
        assert_eq!(b.evaluate().unwrap(), ScalarValue::Int64(Some(3)));
    }
}
