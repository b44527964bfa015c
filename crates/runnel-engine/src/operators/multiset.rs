//! A retractable accumulator for MIN, MAX and COUNT(DISTINCT …) over a changelog.
//!
//! DataFusion's MIN/MAX keep one value and its sliding variants assume the oldest row
//! leaves first (window frames). A retraction from an updating input can take out any
//! value, so this keeps every value with its multiplicity, ordered by Arrow's
//! order-preserving row encoding: MIN is the first key, MAX the last, COUNT(DISTINCT)
//! the number of keys.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, Int64Array, ListArray};
use arrow::datatypes::{DataType, Int64Type};
use arrow::row::{RowConverter, SortField};
use datafusion_common::utils::SingleRowListArrayBuilder;
use datafusion_common::{DataFusionError, ScalarValue};
use datafusion_expr::Accumulator;

/// What the multiset answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The smallest value.
    Min,
    /// The largest value.
    Max,
    /// The number of distinct values.
    CountDistinct,
}

/// Values with their multiplicities.
#[derive(Debug)]
pub struct Multiset {
    pick: Pick,
    data_type: DataType,
    converter: Arc<RowConverter>,
    values: BTreeMap<Vec<u8>, i64>,
}

impl Multiset {
    /// An empty multiset of `data_type` values.
    pub fn try_new(pick: Pick, data_type: &DataType) -> Result<Self, DataFusionError> {
        let converter = RowConverter::new(vec![SortField::new(data_type.clone())])?;
        Ok(Self {
            pick,
            data_type: data_type.clone(),
            converter: Arc::new(converter),
            values: BTreeMap::new(),
        })
    }

    fn add(&mut self, values: &ArrayRef, sign: i64) -> Result<(), DataFusionError> {
        let rows = self.converter.convert_columns(&[Arc::clone(values)])?;
        for i in 0..values.len() {
            if values.is_null(i) {
                continue;
            }
            let key = rows.row(i).as_ref().to_vec();
            let n = self.values.entry(key.clone()).or_insert(0);
            *n += sign;
            if *n <= 0 {
                self.values.remove(&key);
            }
        }
        Ok(())
    }

    fn value(&self, key: Option<&Vec<u8>>) -> Result<ScalarValue, DataFusionError> {
        let Some(key) = key else {
            return ScalarValue::try_from(&self.data_type);
        };
        let parser = self.converter.parser();
        let row = parser.parse(key);
        let cols = self.converter.convert_rows([row])?;
        ScalarValue::try_from_array(&cols[0], 0)
    }
}

impl Accumulator for Multiset {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<(), DataFusionError> {
        match values.first() {
            Some(v) => self.add(v, 1),
            None => Ok(()),
        }
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<(), DataFusionError> {
        match values.first() {
            Some(v) => self.add(v, -1),
            None => Ok(()),
        }
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> Result<ScalarValue, DataFusionError> {
        match self.pick {
            Pick::Min => self.value(self.values.keys().next()),
            Pick::Max => self.value(self.values.keys().next_back()),
            Pick::CountDistinct => Ok(ScalarValue::Int64(Some(self.values.len() as i64))),
        }
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.values.keys().map(|k| k.len() + 40).sum::<usize>()
    }

    /// Two lists: the encoded values and their counts.
    fn state(&mut self) -> Result<Vec<ScalarValue>, DataFusionError> {
        let keys = BinaryArray::from_iter_values(self.values.keys());
        let counts = Int64Array::from_iter_values(self.values.values().copied());
        Ok(vec![
            SingleRowListArrayBuilder::new(Arc::new(keys)).build_list_scalar(),
            SingleRowListArrayBuilder::new(Arc::new(counts)).build_list_scalar(),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<(), DataFusionError> {
        let (Some(keys), Some(counts)) = (states.first(), states.get(1)) else {
            return Ok(());
        };
        let (Some(keys), Some(counts)) = (
            keys.as_any().downcast_ref::<ListArray>(),
            counts.as_any().downcast_ref::<ListArray>(),
        ) else {
            return Err(DataFusionError::Internal(
                "multiset state is not two lists".into(),
            ));
        };
        for r in 0..keys.len() {
            let k = keys.value(r);
            let c = counts.value(r);
            let (Some(k), Some(c)) = (k.as_binary_opt::<i32>(), c.as_primitive_opt::<Int64Type>())
            else {
                return Err(DataFusionError::Internal(
                    "multiset state has the wrong element types".into(),
                ));
            };
            for (key, n) in k.iter().zip(c.iter()) {
                if let (Some(key), Some(n)) = (key, n) {
                    *self.values.entry(key.to_vec()).or_insert(0) += n;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(v: &[i64]) -> ArrayRef {
        Arc::new(Int64Array::from(v.to_vec()))
    }

    #[test]
    fn min_and_max_survive_retracting_any_value() {
        let mut max = Multiset::try_new(Pick::Max, &DataType::Int64).expect("multiset");
        max.update_batch(&[arr(&[3, 9, 9, 5])]).expect("update");
        max.retract_batch(&[arr(&[9])]).expect("retract");
        assert_eq!(max.evaluate().expect("max"), ScalarValue::Int64(Some(9)));
        max.retract_batch(&[arr(&[9])]).expect("retract");
        assert_eq!(max.evaluate().expect("max"), ScalarValue::Int64(Some(5)));
        let mut min = Multiset::try_new(Pick::Min, &DataType::Int64).expect("multiset");
        min.update_batch(&[arr(&[3, 1])]).expect("update");
        min.retract_batch(&[arr(&[1])]).expect("retract");
        assert_eq!(min.evaluate().expect("min"), ScalarValue::Int64(Some(3)));
        min.retract_batch(&[arr(&[3])]).expect("retract");
        assert_eq!(min.evaluate().expect("min"), ScalarValue::Int64(None));
    }

    #[test]
    fn state_round_trips() {
        let mut d = Multiset::try_new(Pick::CountDistinct, &DataType::Int64).expect("multiset");
        d.update_batch(&[arr(&[1, 2, 2, 7])]).expect("update");
        let state: Vec<ArrayRef> = d
            .state()
            .expect("state")
            .into_iter()
            .map(|s| s.to_array().expect("array"))
            .collect();
        let mut back = Multiset::try_new(Pick::CountDistinct, &DataType::Int64).expect("multiset");
        back.merge_batch(&state).expect("merge");
        back.retract_batch(&[arr(&[2])]).expect("retract");
        assert_eq!(back.evaluate().expect("count"), ScalarValue::Int64(Some(3)));
        back.retract_batch(&[arr(&[2])]).expect("retract");
        assert_eq!(back.evaluate().expect("count"), ScalarValue::Int64(Some(2)));
    }
}
