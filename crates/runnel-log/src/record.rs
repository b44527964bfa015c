//! `Record` (what producers append) and `StoredRecord` (what consumers read back).

/// One record to append: optional key, value bytes, headers and an optional event time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Partitioning key; `None` means round robin across partitions.
    pub key: Option<Vec<u8>>,
    /// The payload.
    pub value: Vec<u8>,
    /// Application headers, in order; names need not be unique.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Event time in ms since the Unix epoch, if the producer knows it.
    pub event_time: Option<i64>,
}

impl Record {
    /// A record with only a value.
    pub fn from_value(value: impl Into<Vec<u8>>) -> Self {
        Record {
            value: value.into(),
            ..Record::default()
        }
    }

    /// A record with a key and a value.
    pub fn keyed(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Record {
            key: Some(key.into()),
            value: value.into(),
            ..Record::default()
        }
    }

    /// Bytes of user data (key, value, header names and values); used for read budgets.
    pub fn data_len(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.value.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// A record read back from the log, with the offset and append time the log gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Position of the record in its partition.
    pub offset: u64,
    /// Append time in ms since the Unix epoch (assigned by the log).
    pub timestamp: i64,
    /// Partitioning key, as appended.
    pub key: Option<Vec<u8>>,
    /// The payload, as appended.
    pub value: Vec<u8>,
    /// Headers, as appended.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Event time in ms since the Unix epoch, as appended.
    pub event_time: Option<i64>,
}

impl StoredRecord {
    /// Bytes of user data (key, value, header names and values); used for read budgets.
    pub fn data_len(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.value.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }

    /// The record without its log position.
    pub fn into_record(self) -> Record {
        Record {
            key: self.key,
            value: self.value,
            headers: self.headers,
            event_time: self.event_time,
        }
    }
}
