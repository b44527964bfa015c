//! Look-ups for lookup joins (`JOIN t FOR SYSTEM_TIME AS OF s.proc_time`): the
//! looked-up table is not a stream of the dataflow; the join operator asks it for the
//! rows matching a batch of keys.
//!
//! A bounded table of any connector (a file, a bounded log topic) is answered by
//! [`ScannedTable`]: read once, in full, when the join starts, and indexed by its key
//! columns, as Flink's filesystem lookup source does. Its rows are the table's contents
//! for the whole run (the file is not re-read).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use async_trait::async_trait;
use runnel_common::TableSpec;

use crate::{ConnectorError, SourceContext, SourcePoll};

/// The rows of a table matching a batch of keys.
#[derive(Debug)]
pub struct Matches {
    /// For each matching table row, the index of the key row it matches.
    pub probe: UInt32Array,
    /// The matching table rows (the table's columns), pairwise with `probe`.
    pub rows: RecordBatch,
}

/// A table that answers look-ups by key.
#[async_trait]
pub trait LookupTable: Send + Sync {
    /// Loads what look-ups need. Every subtask of the join awaits it before its first
    /// look-up; only the first call does the work.
    ///
    /// # Errors
    /// The table cannot be read.
    async fn open(&self) -> Result<(), ConnectorError>;

    /// The rows whose key columns equal row `i` of `keys` (one array per key column, in
    /// the key columns' types), for every `i`. NULL keys match nothing.
    ///
    /// # Errors
    /// The table cannot answer (not opened, or a failed query).
    fn lookup(&self, keys: &[ArrayRef]) -> Result<Matches, ConnectorError>;
}

/// A bounded table read in full and indexed by its key columns.
pub struct ScannedTable {
    spec: TableSpec,
    keys: Vec<usize>,
    context: Mutex<Option<SourceContext>>,
    index: tokio::sync::OnceCell<Index>,
}

struct Index {
    rows: RecordBatch,
    converter: RowConverter,
    /// Encoded key → rows with that key.
    map: HashMap<Box<[u8]>, Vec<u32>>,
}

impl ScannedTable {
    /// A table `spec`, looked up by its columns `keys`, read through its connector's
    /// source with `context` (one subtask).
    pub fn new(spec: TableSpec, keys: Vec<usize>, context: SourceContext) -> Self {
        ScannedTable {
            spec,
            keys,
            context: Mutex::new(Some(context)),
            index: tokio::sync::OnceCell::new(),
        }
    }

    async fn load(&self) -> Result<Index, ConnectorError> {
        let context = self
            .context
            .lock()
            .map_err(|_| ConnectorError::Other("lookup table context poisoned".into()))?
            .take()
            .ok_or_else(|| {
                ConnectorError::Other(format!(
                    "table '{}': an earlier attempt to load it for look-ups failed",
                    self.spec.name
                ))
            })?;
        let mut sources = crate::registry::build_sources(&self.spec, vec![context])?;
        let mut batches = Vec::new();
        for source in &mut sources {
            loop {
                match source.poll().await? {
                    SourcePoll::Batch(b) => batches.push(b),
                    SourcePoll::Pending => tokio::time::sleep(Duration::from_millis(5)).await,
                    SourcePoll::End => break,
                }
            }
        }
        let rows = concat_batches(&self.spec.schema, &batches)?;
        let fields = self
            .keys
            .iter()
            .map(|&k| SortField::new(self.spec.schema.field(k).data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields)?;
        let key_columns: Vec<ArrayRef> =
            self.keys.iter().map(|&k| rows.column(k).clone()).collect();
        let encoded = converter.convert_columns(&key_columns)?;
        let mut map: HashMap<Box<[u8]>, Vec<u32>> = HashMap::new();
        for (i, row) in encoded.iter().enumerate() {
            if key_columns.iter().any(|c| c.is_null(i)) {
                continue;
            }
            map.entry(row.as_ref().into()).or_default().push(i as u32);
        }
        tracing::info!(
            table = %self.spec.name,
            rows = rows.num_rows(),
            keys = map.len(),
            "loaded for look-ups"
        );
        Ok(Index {
            rows,
            converter,
            map,
        })
    }
}

#[async_trait]
impl LookupTable for ScannedTable {
    async fn open(&self) -> Result<(), ConnectorError> {
        self.index.get_or_try_init(|| self.load()).await.map(|_| ())
    }

    fn lookup(&self, keys: &[ArrayRef]) -> Result<Matches, ConnectorError> {
        let index = self.index.get().ok_or_else(|| {
            ConnectorError::Other(format!(
                "table '{}' was looked up before it was loaded",
                self.spec.name
            ))
        })?;
        let encoded = index.converter.convert_columns(keys)?;
        let mut probe = Vec::new();
        let mut found = Vec::new();
        for (i, row) in encoded.iter().enumerate() {
            if keys.iter().any(|c| c.is_null(i)) {
                continue;
            }
            if let Some(hits) = index.map.get(row.as_ref()) {
                for &h in hits {
                    probe.push(i as u32);
                    found.push(h);
                }
            }
        }
        let rows = take_record_batch(&index.rows, &UInt32Array::from(found))?;
        Ok(Matches {
            probe: UInt32Array::from(probe),
            rows,
        })
    }
}
