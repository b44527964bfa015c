//! A `log` source subtask: reads its share of the topic's partitions from their
//! positions, turns records into rows (dead-lettering what cannot be read) and reports
//! its position for checkpoints.

use super::*;

/// A partition read by this subtask.
#[derive(Debug, Clone)]
pub(super) struct Owned {
    pub(super) id: u32,
    /// Next offset to read.
    pub(super) next: u64,
    /// Last offset committed to the group.
    pub(super) committed: u64,
    /// With `bounded`: the end offset captured at build time.
    pub(super) end: Option<u64>,
}

impl Owned {
    fn done(&self) -> bool {
        self.end.is_some_and(|e| self.next >= e)
    }
}

/// One subtask of the log source.
pub struct LogSource {
    pub(super) table: String,
    pub(super) log: Arc<Log>,
    pub(super) topic: Arc<Topic>,
    pub(super) group: String,
    pub(super) bounded: bool,
    pub(super) decode: RecordDecoder,
    pub(super) owned: Vec<Owned>,
    /// Index into `owned` of the partition read first next time (fairness).
    pub(super) cursor: usize,
    pub(super) batch_size: usize,
    pub(super) metrics: ConnectorMetrics,
    pub(super) last_commit: Instant,
    /// Positions live in checkpoints; committing group offsets ahead of them could skip
    /// records after a crash.
    pub(super) checkpointing: bool,
}

/// What one blocking fetch asks for: (index into owned, partition, next, max records).
type Want = (usize, u32, u64, usize);

/// Records read per partition (index into owned), and partitions whose offset fell
/// below the first retained one (with that offset).
type Fetched = (Vec<(usize, Vec<StoredRecord>)>, Vec<(usize, u64)>);

/// Reads up to `budget` records over `wants`, waiting up to `wait` when there are none.
/// Returns (index into owned, records) and partitions whose offset fell below the start.
pub(super) fn fetch(
    topic: &Topic,
    wants: &[Want],
    budget: usize,
    wait: Duration,
) -> Result<Fetched, ConnectorError> {
    let mut out = Vec::new();
    let mut resets = Vec::new();
    // (records, bytes) read.
    let read = |want: &Want,
                max: usize,
                max_bytes: usize,
                out: &mut Vec<(usize, Vec<StoredRecord>)>,
                resets: &mut Vec<(usize, u64)>|
     -> Result<(usize, usize), ConnectorError> {
        let &(idx, id, next, limit) = want;
        let Some(part) = topic.partition(id) else {
            return Ok((0, 0));
        };
        match part.read(next, max.min(limit), max_bytes) {
            Ok(records) => {
                let n = records.len();
                let bytes = records.iter().map(StoredRecord::data_len).sum();
                if n > 0 {
                    out.push((idx, records));
                }
                Ok((n, bytes))
            }
            Err(LogError::OffsetOutOfRange { start, .. }) if next < start => {
                resets.push((idx, start));
                Ok((0, 0))
            }
            Err(e) => Err(log_error(
                format!("reading {}/{id} at offset {next}", topic.name()),
                e,
            )),
        }
    };
    let (mut left, mut bytes_left) = (budget, MAX_POLL_BYTES);
    for w in wants {
        if left == 0 || bytes_left == 0 {
            break;
        }
        let (n, bytes) = read(w, left, bytes_left, &mut out, &mut resets)?;
        left -= n;
        bytes_left = bytes_left.saturating_sub(bytes);
    }
    if !out.is_empty() || !resets.is_empty() || wait.is_zero() || wants.is_empty() {
        return Ok((out, resets));
    }
    // Nothing new: wait for any owned partition, in short slices when there are several.
    let deadline = Instant::now() + wait;
    let slice = (Duration::from_millis(20) / wants.len() as u32).max(Duration::from_millis(1));
    while Instant::now() < deadline {
        for w in wants {
            let Some(part) = topic.partition(w.1) else {
                continue;
            };
            let timeout = if wants.len() == 1 {
                deadline.saturating_duration_since(Instant::now())
            } else {
                slice
            };
            if part.wait_for(w.2, timeout) {
                read(w, budget, MAX_POLL_BYTES, &mut out, &mut resets)?;
                return Ok((out, resets));
            }
        }
    }
    Ok((out, resets))
}

impl LogSource {
    /// Commits every partition whose position moved since the last commit (blocking, durable).
    async fn commit(&mut self) -> Result<(), ConnectorError> {
        if self.checkpointing {
            return Ok(());
        }
        let dirty: Vec<(usize, u32, u64)> = self
            .owned
            .iter()
            .enumerate()
            .filter(|(_, o)| o.next != o.committed)
            .map(|(i, o)| (i, o.id, o.next))
            .collect();
        self.last_commit = Instant::now();
        if dirty.is_empty() {
            return Ok(());
        }
        let log = self.log.clone();
        let group = self.group.clone();
        let topic = self.topic.name().to_string();
        let table = self.table.clone();
        let todo = dirty.clone();
        blocking("committing consumer offsets", move || {
            for (_, p, next) in todo {
                log.commit_offset(&group, &topic, p, next).map_err(|e| {
                    log_error(
                        format!(
                            "table '{table}': committing offset {next} of {topic}/{p} for group '{group}'"
                        ),
                        e,
                    )
                })?;
            }
            Ok(())
        })
        .await?;
        for (i, _, next) in dirty {
            self.owned[i].committed = next;
        }
        Ok(())
    }
}

#[async_trait]
impl Source for LogSource {
    async fn poll(&mut self) -> Result<SourcePoll, ConnectorError> {
        if self.last_commit.elapsed() >= COMMIT_INTERVAL {
            self.commit().await?;
        }
        let n = self.owned.len();
        let wants: Vec<Want> = (0..n)
            .map(|k| (self.cursor + k) % n)
            .filter(|&i| !self.owned[i].done())
            .map(|i| {
                let o = &self.owned[i];
                let limit = o.end.map_or(usize::MAX, |e| {
                    usize::try_from(e.saturating_sub(o.next)).unwrap_or(usize::MAX)
                });
                (i, o.id, o.next, limit)
            })
            .collect();
        if wants.is_empty() {
            self.commit().await?;
            if self.bounded {
                return Ok(SourcePoll::End);
            }
            // No partition is assigned to this subtask: idle politely.
            tokio::time::sleep(IDLE_WAIT).await;
            return Ok(SourcePoll::Pending);
        }
        if n > 0 {
            self.cursor = (self.cursor + 1) % n;
        }
        let topic = self.topic.clone();
        let budget = self.batch_size;
        let (fetched, resets) = blocking("reading the log", move || {
            fetch(&topic, &wants, budget, IDLE_WAIT)
        })
        .await?;
        for (i, start) in resets {
            let o = &mut self.owned[i];
            tracing::warn!(table = %self.table, topic = %self.topic.name(), partition = o.id,
                "offset {} was deleted by retention; continuing at {start}", o.next);
            o.next = start;
        }
        if fetched.is_empty() {
            // Idle: a good moment to commit what was handed over.
            self.commit().await?;
            return Ok(SourcePoll::Pending);
        }
        let mut bytes = 0u64;
        for (i, recs) in &fetched {
            if let Some(last) = recs.last() {
                self.owned[*i].next = last.offset + 1;
            }
            bytes += recs.iter().map(|r| r.data_len() as u64).sum::<u64>();
        }
        self.metrics.bytes.add(bytes);
        let owned = &self.owned;
        let records: Vec<Read<'_>> = fetched
            .iter()
            .flat_map(|(i, recs)| {
                let id = owned[*i].id;
                recs.iter().map(move |r| (id, r))
            })
            .collect();
        match self.decode.decode(self.topic.name(), &records).await? {
            Some(batch) => {
                self.metrics.rows.add(batch.num_rows() as u64);
                Ok(SourcePoll::Batch(batch))
            }
            None => Ok(SourcePoll::Pending),
        }
    }

    fn position(&self) -> Option<serde_json::Value> {
        let map: serde_json::Map<String, serde_json::Value> = self
            .owned
            .iter()
            .map(|o| (o.id.to_string(), o.next.into()))
            .collect();
        Some(serde_json::Value::Object(map))
    }

    async fn seek(&mut self, position: &serde_json::Value) -> Result<(), ConnectorError> {
        let Some(map) = position.as_object() else {
            return Err(ConnectorError::Other(format!(
                "table '{}': cannot resume the log source from position {position}; \
                 expected {{\"<partition>\": <offset>, …}}",
                self.table
            )));
        };
        let wanted: BTreeMap<u32, u64> = map
            .iter()
            .filter_map(|(k, v)| Some((k.parse::<u32>().ok()?, v.as_u64()?)))
            .collect();
        for o in &mut self.owned {
            if let Some(&next) = wanted.get(&o.id) {
                let end = self.topic.partition(o.id).map_or(next, |p| p.end_offset());
                if next > end {
                    tracing::warn!(table = %self.table, topic = %self.topic.name(), partition = o.id,
                        "resume offset {next} is past the end {end}; continuing at {end}");
                }
                o.next = next.min(end);
            }
        }
        Ok(())
    }
}
