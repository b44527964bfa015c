//! What the planner tells the connector registry about one table.

use arrow::datatypes::SchemaRef;

use crate::options::Options;

/// A declared table: its name, columns, event time and connector options.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// Table name as declared.
    pub name: String,
    /// Declared columns (all nullable).
    pub schema: SchemaRef,
    /// The `WATERMARK FOR` clause, if any.
    pub watermark: Option<WatermarkSpec>,
    /// The `WITH (…)` options, including `connector`.
    pub options: Options,
    /// Line of the `CREATE TABLE` (0 when the table was not declared in a script).
    pub line: u64,
    /// Columns declared `METADATA [FROM 'key'] [VIRTUAL]`: filled by the connector from
    /// the record's metadata (a Kafka record's timestamp, partition, offset …).
    pub metadata: Vec<MetadataColumn>,
    /// `PRIMARY KEY (…) NOT ENFORCED`: indexes of its columns (empty: none).
    pub primary_key: Vec<usize>,
    /// `PARTITIONED BY (…)`: indexes of its columns, in order (empty: none).
    pub partition_keys: Vec<usize>,
}

/// A column declared `name TYPE METADATA [FROM 'key'] [VIRTUAL]` (Flink's syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataColumn {
    /// Index of the column in the table's schema.
    pub column: usize,
    /// The metadata key (`FROM 'key'`, else the column's name).
    pub key: String,
    /// `VIRTUAL`: read-only, not written by a sink.
    pub is_virtual: bool,
}

/// `WATERMARK FOR col AS col - INTERVAL 'n' unit`.
#[derive(Debug, Clone, PartialEq)]
pub struct WatermarkSpec {
    /// Index of the event-time column in the table's schema.
    pub column: usize,
    /// Allowed out-of-orderness in milliseconds.
    pub delay_ms: i64,
}

impl TableSpec {
    /// The connector name (the planner guarantees the option is present).
    pub fn connector(&self) -> &str {
        self.options.connector().unwrap_or("")
    }

    /// The metadata key of column `column`, if it is a metadata column.
    pub fn metadata_of(&self, column: usize) -> Option<&MetadataColumn> {
        self.metadata.iter().find(|m| m.column == column)
    }
}
