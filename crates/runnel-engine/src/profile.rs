//! A live profile of a source table (`SET 'quality.profile' = 'on'`): rows, NULLs per
//! column, an estimate of distinct values (HyperLogLog), and for numeric columns the
//! minimum, maximum, mean, standard deviation and the 50th / 99th percentiles (a
//! t-digest). The source's subtasks feed it each batch they read; the admin API reads
//! it. It describes this run's input and is not checkpointed.

use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, SchemaRef};
use datafusion_common::hash_utils::{RandomState, create_hashes};
use datafusion_functions_aggregate_common::tdigest::TDigest;
use serde_json::{Value, json};

/// Values buffered before they are merged into the t-digest.
const BUFFER: usize = 4096;

/// HyperLogLog registers (2^12: about 1.6 % standard error).
const HLL_BITS: u32 = 12;

/// A HyperLogLog sketch of 64-bit hashes (Flajolet et al., with linear counting for
/// small counts). DataFusion's own is private to its `approx_distinct`.
#[derive(Debug, Clone)]
struct HyperLogLog {
    registers: Vec<u8>,
}

impl HyperLogLog {
    fn new() -> Self {
        HyperLogLog {
            registers: vec![0; 1 << HLL_BITS],
        }
    }

    fn add(&mut self, hash: u64) {
        // The row hashes are made for hash tables; mix them so every bit is random
        // (MurmurHash3's finaliser), as the estimate assumes.
        let mut hash = hash;
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        hash ^= hash >> 33;
        let index = (hash >> (64 - HLL_BITS)) as usize;
        let rest = hash << HLL_BITS;
        let rank = (rest.leading_zeros() + 1).min(64 - HLL_BITS + 1) as u8;
        if rank > self.registers[index] {
            self.registers[index] = rank;
        }
    }

    fn count(&self) -> u64 {
        let m = self.registers.len() as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let sum: f64 = self
            .registers
            .iter()
            .map(|&r| 2f64.powi(-i32::from(r)))
            .sum();
        let estimate = alpha * m * m / sum;
        let zeros = self.registers.iter().filter(|&&r| r == 0).count();
        if estimate <= 2.5 * m && zeros > 0 {
            (m * (m / zeros as f64).ln()).round() as u64
        } else {
            estimate.round() as u64
        }
    }
}

/// Where a source node's profile lives, when profiling is on.
#[derive(Debug, Clone, Default)]
pub struct ProfileSlot(Arc<OnceLock<Mutex<Profile>>>);

impl ProfileSlot {
    /// Starts profiling rows of `schema`.
    pub fn enable(&self, schema: &SchemaRef) {
        let _ = self.0.set(Mutex::new(Profile::new(schema)));
    }

    /// Adds `batch` to the profile, if profiling is on.
    pub fn observe(&self, batch: &RecordBatch) {
        if let Some(p) = self.0.get() {
            p.lock().unwrap_or_else(|p| p.into_inner()).observe(batch);
        }
    }

    /// The profile as JSON, if profiling is on.
    pub fn json(&self) -> Option<Value> {
        self.0
            .get()
            .map(|p| p.lock().unwrap_or_else(|p| p.into_inner()).json())
    }
}

/// Statistics of one table's rows.
#[derive(Debug)]
pub struct Profile {
    rows: u64,
    columns: Vec<Column>,
    hashes: Vec<u64>,
    random: RandomState,
}

#[derive(Debug)]
struct Column {
    name: String,
    data_type: DataType,
    nulls: u64,
    distinct: HyperLogLog,
    numbers: Option<Numbers>,
}

#[derive(Debug)]
struct Numbers {
    count: f64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    digest: TDigest,
    buffer: Vec<f64>,
}

impl Numbers {
    fn add(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        if self.count == 0.0 {
            self.min = x;
            self.max = x;
        }
        self.count += 1.0;
        let d = x - self.mean;
        self.mean += d / self.count;
        self.m2 += d * (x - self.mean);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        self.buffer.push(x);
        if self.buffer.len() >= BUFFER {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.buffer.is_empty() {
            let values = std::mem::take(&mut self.buffer);
            self.digest = self.digest.merge_unsorted_f64(values);
        }
    }
}

impl Profile {
    /// An empty profile of rows of `schema`.
    pub fn new(schema: &SchemaRef) -> Self {
        Profile {
            rows: 0,
            columns: schema
                .fields()
                .iter()
                .map(|f| Column {
                    name: f.name().clone(),
                    data_type: f.data_type().clone(),
                    nulls: 0,
                    distinct: HyperLogLog::new(),
                    numbers: f.data_type().is_numeric().then(|| Numbers {
                        count: 0.0,
                        mean: 0.0,
                        m2: 0.0,
                        min: 0.0,
                        max: 0.0,
                        digest: TDigest::new(100),
                        buffer: Vec::new(),
                    }),
                })
                .collect(),
            hashes: Vec::new(),
            random: RandomState::with_seed(0x9e37_79b9),
        }
    }

    /// Adds a batch (columns beyond the profiled ones, like a changelog's, are ignored).
    pub fn observe(&mut self, batch: &RecordBatch) {
        let n = batch.num_rows();
        self.rows += n as u64;
        for (i, c) in self.columns.iter_mut().enumerate() {
            let Some(array) = batch.columns().get(i) else {
                continue;
            };
            c.nulls += array.null_count() as u64;
            self.hashes.clear();
            self.hashes.resize(n, 0);
            if create_hashes([array.as_ref()], &self.random, &mut self.hashes).is_ok() {
                for (row, h) in self.hashes.iter().enumerate() {
                    if array.is_valid(row) {
                        c.distinct.add(*h);
                    }
                }
            }
            if let Some(numbers) = &mut c.numbers
                && let Ok(values) = cast(array, &DataType::Float64)
            {
                for x in values.as_primitive::<Float64Type>().iter().flatten() {
                    numbers.add(x);
                }
            }
        }
    }

    /// Rows, and per column its statistics.
    pub fn json(&mut self) -> Value {
        let rows = self.rows;
        let columns: Vec<Value> = self
            .columns
            .iter_mut()
            .map(|c| {
                let mut v = json!({
                    "name": c.name,
                    "type": runnel_common::types::sql_name(&c.data_type),
                    "nulls": c.nulls,
                    "null_fraction": if rows > 0 { c.nulls as f64 / rows as f64 } else { 0.0 },
                    "distinct": c.distinct.count(),
                });
                if let Some(n) = &mut c.numbers
                    && n.count > 0.0
                {
                    n.flush();
                    let stddev = if n.count > 1.0 {
                        (n.m2 / (n.count - 1.0)).sqrt()
                    } else {
                        0.0
                    };
                    if let Value::Object(m) = &mut v {
                        m.insert("min".into(), json!(n.min));
                        m.insert("max".into(), json!(n.max));
                        m.insert("mean".into(), json!(n.mean));
                        m.insert("stddev".into(), json!(stddev));
                        m.insert("p50".into(), json!(n.digest.estimate_quantile(0.5)));
                        m.insert("p99".into(), json!(n.digest.estimate_quantile(0.99)));
                    }
                }
                v
            })
            .collect();
        json!({ "rows": rows, "columns": columns })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn counts_nulls_distinct_and_percentiles() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("sensor", DataType::Utf8, true),
            Field::new("t", DataType::Float64, true),
        ]));
        let mut p = Profile::new(&schema);
        let sensors: Vec<Option<&str>> = (0..1000)
            .map(|i| (i % 10 != 0).then_some(["a", "b", "c"][i % 3]))
            .collect();
        let values: Vec<Option<f64>> = (0..1000).map(|i| Some(i as f64)).collect();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(sensors)),
                Arc::new(Float64Array::from(values)),
            ],
        )
        .unwrap();
        p.observe(&batch);
        let v = p.json();
        assert_eq!(v["rows"], 1000);
        assert_eq!(v["columns"][0]["nulls"], 100);
        assert_eq!(v["columns"][0]["distinct"], 3);
        let t = &v["columns"][1];
        assert_eq!(t["min"], 0.0);
        assert_eq!(t["max"], 999.0);
        assert!((t["mean"].as_f64().unwrap() - 499.5).abs() < 1e-9);
        assert!((t["p50"].as_f64().unwrap() - 499.5).abs() < 5.0);
        assert!((t["p99"].as_f64().unwrap() - 989.0).abs() < 5.0);
        let d = v["columns"][1]["distinct"].as_u64().unwrap();
        assert!((970..=1030).contains(&d), "{d}");
    }
}
