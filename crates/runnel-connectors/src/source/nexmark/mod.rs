//! `nexmark` source: the Nexmark benchmark generator (persons, auctions, bids).
//!
//! Follows the Apache Beam / Flink Nexmark generator: every 50 events are 1
//! person, 3 auctions and 46 bids; ids, hot auctions, hot bidders, hot
//! sellers, prices, channels and extra padding are drawn as there. Each event
//! is a pure function of `(seed, event number)` — a small PRNG seeded per
//! event — so the generator splits across subtasks (subtask `i` of `P` owns
//! the 50-event epochs `e` with `e % P == i`) and resumes from an event number.
//! Event time starts at [`BASE_TIME`] and advances by `1 / rate` seconds per
//! event (10 000 events/s when no rate is given).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use runnel_common::TableSpec;
use runnel_common::metrics::ConnectorMetrics;
use runnel_common::types::sql_name;
use serde_json::json;

mod generator;

use crate::descriptor::{self, Connector, Guarantee, OptionDef, OptionType};
use crate::{ConnectorError, Source, SourceContext, SourcePoll};
use generator::*;

/// `connector = 'nexmark'`: the Nexmark benchmark's generator.
pub const CONNECTOR: Connector = Connector {
    name: "nexmark",
    doc: "the Nexmark benchmark's event generator (person, auction, bid)",
    options: &[
        OptionDef::new(
            "stream",
            OptionType::Choice(&["person", "auction", "bid"]),
            "which events the table holds",
        )
        .required(),
        OptionDef::new(
            "events",
            OptionType::Int {
                min: 0,
                max: u64::MAX,
            },
            "events to generate (all streams together), then end; without it, run for ever",
        ),
        OptionDef::new(
            "rate",
            OptionType::Int {
                min: 1,
                max: u64::MAX,
            },
            "events per second of event time; also the generator's wall-clock pace unless 'throttle' = 'false'",
        )
        .default("10000"),
        OptionDef::new(
            "throttle",
            OptionType::Bool,
            "with 'rate' given: generate no faster than 'rate' events per wall-clock second",
        )
        .default("true"),
        OptionDef::new(
            "seed",
            OptionType::Int {
                min: 0,
                max: u64::MAX,
            },
            "random seed",
        )
        .default("42"),
        OptionDef::new(
            "batch-size",
            OptionType::Int {
                min: 1,
                max: u64::MAX,
            },
            "rows per batch",
        )
        .default("8192"),
    ],
    source: Some(build),
    sink: None,
    unbounded: never_ends,
    guarantee: Guarantee::AtLeastOnce,
    updates: descriptor::append_only,
    needs: &[],
    validate,
    check: descriptor::no_check,
    metadata: &[],
    upserts: false,
};

/// Every declared column must be one the stream produces.
fn validate(spec: &TableSpec) -> Result<(), ConnectorError> {
    let config = NexmarkConfig::try_new(spec)?;
    project(spec, config.stream).map(|_| ())
}

/// Event time of event 0: 2026-01-01T00:00:00Z.
pub const BASE_TIME: i64 = 1_767_225_600_000;
/// Events per second of event time when no `rate` is given (Nexmark's default).
pub const DEFAULT_EVENT_RATE: u64 = 10_000;
/// Rows per batch when no `batch-size` is given.
pub const DEFAULT_BATCH_SIZE: usize = 8192;

/// Which of the three Nexmark event kinds a table reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NexmarkStream {
    /// New users.
    Person,
    /// New auctions.
    Auction,
    /// Bids on auctions.
    Bid,
}

impl NexmarkStream {
    /// The generator's columns for this stream, in Nexmark order.
    pub fn columns(self) -> &'static [(&'static str, Kind)] {
        use Kind::*;
        match self {
            NexmarkStream::Bid => &[
                ("auction", Int),
                ("bidder", Int),
                ("price", Int),
                ("channel", Str),
                ("url", Str),
                ("date_time", Ts),
                ("extra", Str),
            ],
            NexmarkStream::Auction => &[
                ("id", Int),
                ("item_name", Str),
                ("description", Str),
                ("initial_bid", Int),
                ("reserve", Int),
                ("date_time", Ts),
                ("expires", Ts),
                ("seller", Int),
                ("category", Int),
                ("extra", Str),
            ],
            NexmarkStream::Person => &[
                ("id", Int),
                ("name", Str),
                ("email_address", Str),
                ("credit_card", Str),
                ("city", Str),
                ("state", Str),
                ("date_time", Ts),
                ("extra", Str),
            ],
        }
    }

    /// Offsets within each 50-event epoch that are events of this kind.
    fn offsets(self) -> (u64, u64) {
        match self {
            NexmarkStream::Person => (0, PERSON_PROPORTION),
            NexmarkStream::Auction => (PERSON_PROPORTION, PERSON_PROPORTION + AUCTION_PROPORTION),
            NexmarkStream::Bid => (PERSON_PROPORTION + AUCTION_PROPORTION, TOTAL_PROPORTION),
        }
    }

    fn name(self) -> &'static str {
        match self {
            NexmarkStream::Person => "person",
            NexmarkStream::Auction => "auction",
            NexmarkStream::Bid => "bid",
        }
    }
}

/// The type of a generator column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// BIGINT.
    Int,
    /// STRING.
    Str,
    /// TIMESTAMP(3) (or TIMESTAMP_LTZ(3)).
    Ts,
}

/// Options of `CREATE TABLE … WITH (connector = 'nexmark', …)`.
#[derive(Debug, Clone)]
pub struct NexmarkConfig {
    /// `person`, `auction` or `bid`.
    pub stream: NexmarkStream,
    /// Total events of the whole generator (all kinds); unbounded when `None`.
    pub events: Option<u64>,
    /// Events per second of event time (all kinds); Nexmark's default when `None`.
    pub rate: Option<u64>,
    /// Hold generation to `rate` events per wall-clock second (when `rate` is given).
    pub throttle: bool,
    /// PRNG seed; the same seed gives the same events.
    pub seed: u64,
    /// Rows per batch.
    pub batch_size: usize,
}

impl NexmarkConfig {
    /// Reads and validates the table's options.
    pub fn try_new(spec: &TableSpec) -> Result<Self, ConnectorError> {
        let o = &spec.options;
        let opt = |source| ConnectorError::Option {
            table: spec.name.clone(),
            source,
        };
        CONNECTOR.check_options(spec)?;
        o.required("nexmark", "stream").map_err(opt)?;
        let stream = match o
            .choice("nexmark", "stream", &["person", "auction", "bid"])
            .map_err(opt)?
        {
            Some("person") => NexmarkStream::Person,
            Some("auction") => NexmarkStream::Auction,
            _ => NexmarkStream::Bid,
        };
        let positive = |v: &str| v.trim().parse::<u64>().ok().filter(|n| *n > 0);
        let events = o
            .parsed("nexmark", "events", "expected a whole number", |v| {
                v.trim().parse::<u64>().ok()
            })
            .map_err(opt)?;
        let rate = o
            .parsed(
                "nexmark",
                "rate",
                "expected events per second > 0",
                positive,
            )
            .map_err(opt)?;
        let throttle = o
            .parsed(
                "nexmark",
                "throttle",
                "expected true or false",
                |v| match v.trim() {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => None,
                },
            )
            .map_err(opt)?
            .unwrap_or(true);
        let seed = o
            .parsed("nexmark", "seed", "expected a whole number", |v| {
                v.trim().parse::<u64>().ok()
            })
            .map_err(opt)?;
        let batch = o
            .parsed(
                "nexmark",
                "batch-size",
                "expected a number of rows > 0",
                positive,
            )
            .map_err(opt)?;
        Ok(Self {
            stream,
            events,
            rate,
            throttle,
            seed: seed.unwrap_or(42),
            batch_size: batch.map_or(DEFAULT_BATCH_SIZE, |b| b as usize),
        })
    }
}

/// Whether the generator runs forever (no `events` count).
pub fn never_ends(spec: &TableSpec) -> bool {
    spec.options.get("events").is_none()
}

/// Validates options and the declared schema; returns one generator subtask per context.
///
/// # Errors
/// Unknown or invalid options, or a declared column the stream does not produce
/// (or with an incompatible type).
pub fn build(
    spec: &TableSpec,
    contexts: Vec<SourceContext>,
) -> Result<Vec<Box<dyn Source>>, ConnectorError> {
    let config = NexmarkConfig::try_new(spec)?;
    let projection = project(spec, config.stream)?;
    let tables = tables();
    Ok(contexts
        .into_iter()
        .map(|ctx| {
            Box::new(NexmarkSource::new(
                spec.schema.clone(),
                &config,
                projection.clone(),
                tables.clone(),
                ctx,
            )) as Box<dyn Source>
        })
        .collect())
}

/// For each declared column, the index of the generator column it reads.
fn project(spec: &TableSpec, stream: NexmarkStream) -> Result<Vec<usize>, ConnectorError> {
    let cols = stream.columns();
    spec.schema
        .fields()
        .iter()
        .map(|f| {
            // Flink's Nexmark names too: `dateTime`, `itemName`, `emailAddress`, … (and
            // `customTime`, the newer queries' name of the event time).
            let norm = |n: &str| n.replace('_', "").to_ascii_lowercase();
            let wanted = match norm(f.name()).as_str() {
                "customtime" => "datetime".to_string(),
                other => other.to_string(),
            };
            let idx = cols
                .iter()
                .position(|(n, _)| *n == f.name().as_str())
                .or_else(|| cols.iter().position(|(n, _)| norm(n) == wanted))
                .ok_or_else(|| {
                    ConnectorError::Other(format!(
                        "table '{}': column '{}' is not produced by the nexmark '{}' stream; its columns are: {}",
                        spec.name,
                        f.name(),
                        stream.name(),
                        cols.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                    ))
                })?;
            let (ok, want) = match cols[idx].1 {
                Kind::Int => (f.data_type() == &DataType::Int64, "BIGINT"),
                Kind::Str => (f.data_type() == &DataType::Utf8, "STRING"),
                Kind::Ts => (matches!(f.data_type(), DataType::Timestamp(TimeUnit::Millisecond, _)), "TIMESTAMP(3)"),
            };
            if !ok {
                return Err(ConnectorError::Type {
                    table: spec.name.clone(),
                    column: f.name().clone(),
                    data_type: sql_name(f.data_type()),
                    reason: format!("does not match the nexmark '{}' stream, which produces {want}", stream.name()),
                });
            }
            Ok(idx)
        })
        .collect()
}

/// One subtask of the generator.
pub struct NexmarkSource {
    schema: SchemaRef,
    stream: NexmarkStream,
    projection: Vec<usize>,
    tables: Arc<Tables>,
    seed: u64,
    events: u64,
    rate: Option<u64>,
    /// Milliseconds of event time per event, times 1000 (µs), as Nexmark's inter-event delay.
    delay_us: u64,
    batch_size: usize,
    subtask: u64,
    parallelism: u64,
    /// The next event number this subtask generates.
    next: u64,
    /// Wall-clock start of throttling, and the event number at that time.
    throttle_start: Option<(Instant, u64)>,
    metrics: ConnectorMetrics,
}

impl NexmarkSource {
    fn new(
        schema: SchemaRef,
        config: &NexmarkConfig,
        projection: Vec<usize>,
        tables: Arc<Tables>,
        ctx: SourceContext,
    ) -> Self {
        let event_rate = config.rate.unwrap_or(DEFAULT_EVENT_RATE).max(1);
        let stream = config.stream;
        Self {
            schema,
            stream,
            projection,
            tables,
            seed: config.seed,
            events: config.events.unwrap_or(u64::MAX),
            rate: config.rate.filter(|_| config.throttle),
            delay_us: (1_000_000 / event_rate).max(1),
            batch_size: config.batch_size.max(1),
            subtask: ctx.subtask as u64,
            parallelism: ctx.parallelism.max(1) as u64,
            next: ctx.subtask as u64 * TOTAL_PROPORTION + stream.offsets().0,
            throttle_start: None,
            metrics: ctx.metrics,
        }
    }

    /// Event time of event `n`.
    fn timestamp(&self, n: u64) -> i64 {
        BASE_TIME + ((n as u128 * self.delay_us as u128) / 1000) as i64
    }

    /// The event after `n` that this subtask owns and that is of its stream.
    fn advance(&self, n: u64) -> u64 {
        let (lo, hi) = self.stream.offsets();
        if n % TOTAL_PROPORTION + 1 < hi {
            n + 1
        } else {
            (n / TOTAL_PROPORTION + self.parallelism) * TOTAL_PROPORTION + lo
        }
    }

    /// Generates up to `max_rows` events with numbers below `limit` into a batch.
    pub fn generate(
        &mut self,
        max_rows: usize,
        limit: u64,
    ) -> Result<Option<RecordBatch>, ConnectorError> {
        let cols = self.stream.columns();
        let mut wanted = vec![false; cols.len()];
        for &i in &self.projection {
            wanted[i] = true;
        }
        let mut out = Out::new(cols, &wanted, max_rows);
        let mut rows = 0;
        while rows < max_rows && self.next < limit {
            let n = self.next;
            let mut rng = Rng::new(self.seed, n);
            let ts = self.timestamp(n);
            match self.stream {
                NexmarkStream::Bid => gen_bid(&mut out, &mut rng, &self.tables, n, ts),
                NexmarkStream::Auction => {
                    let horizon = self.timestamp(n + AUCTION_HORIZON_EVENTS) - ts;
                    gen_auction(&mut out, &mut rng, &self.tables, n, ts, horizon)
                }
                NexmarkStream::Person => gen_person(&mut out, &mut rng, &self.tables, n, ts),
            }
            rows += 1;
            self.next = self.advance(n);
        }
        if rows == 0 {
            return Ok(None);
        }
        let arrays = out.finish(cols)?;
        let columns: Vec<ArrayRef> = self
            .projection
            .iter()
            .zip(self.schema.fields())
            .map(|(&i, f)| match (&arrays[i], f.data_type()) {
                (Some(a), DataType::Timestamp(_, tz)) => {
                    let ts = a
                        .as_any()
                        .downcast_ref::<TimestampMillisecondArray>()
                        .cloned();
                    ts.map(|t| Arc::new(t.with_timezone_opt(tz.clone())) as ArrayRef)
                        .ok_or_else(internal)
                }
                (Some(a), _) => Ok(a.clone()),
                (None, _) => Err(internal()),
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(RecordBatch::try_new(self.schema.clone(), columns)?))
    }
}

fn internal() -> ConnectorError {
    ConnectorError::Other("runnel bug in the nexmark generator: a projected column was not generated; please report it".into())
}

#[async_trait]
impl Source for NexmarkSource {
    async fn poll(&mut self) -> Result<SourcePoll, ConnectorError> {
        if self.next >= self.events {
            return Ok(SourcePoll::End);
        }
        let mut limit = self.events;
        if let Some(rate) = self.rate {
            let (start, first) = *self
                .throttle_start
                .get_or_insert((Instant::now(), self.next));
            let allowed =
                first + (start.elapsed().as_micros() as u64).saturating_mul(rate) / 1_000_000;
            if self.next >= allowed {
                // Sleep until our next event is due, but never past the poll deadline.
                let due_us = (self.next + 1 - first).saturating_mul(1_000_000) / rate;
                let wait = Duration::from_micros(due_us).saturating_sub(start.elapsed());
                tokio::time::sleep(wait.min(Duration::from_millis(50))).await;
                return Ok(SourcePoll::Pending);
            }
            limit = limit.min(allowed);
        }
        match self.generate(self.batch_size, limit)? {
            Some(batch) => {
                self.metrics.rows.add(batch.num_rows() as u64);
                Ok(SourcePoll::Batch(batch))
            }
            None if self.next >= self.events => Ok(SourcePoll::End),
            None => Ok(SourcePoll::Pending),
        }
    }

    fn position(&self) -> Option<serde_json::Value> {
        Some(json!({ "next_event": self.next }))
    }

    async fn seek(&mut self, position: &serde_json::Value) -> Result<(), ConnectorError> {
        let next = position
            .get("next_event")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| {
                ConnectorError::Other(format!(
                    "cannot resume the nexmark source from position {position}"
                ))
            })?;
        let (lo, hi) = self.stream.offsets();
        let epoch = next / TOTAL_PROPORTION;
        let off = next % TOTAL_PROPORTION;
        if epoch % self.parallelism != self.subtask || off < lo || off >= hi {
            return Err(ConnectorError::Other(format!(
                "nexmark position {next} does not belong to subtask {} of {}; was the parallelism changed?",
                self.subtask, self.parallelism
            )));
        }
        self.next = next;
        self.throttle_start = None;
        Ok(())
    }
}

// ---- the Nexmark event model ----

#[cfg(test)]
mod tests;
