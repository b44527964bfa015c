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
//!
//! A table reads one stream (`'stream' = 'bid'`, its columns by name), or, without
//! `stream`, all three the way Flink's Nexmark connector declares them (its
//! `ddl_gen.sql` runs unchanged): `event_type INT` (0 person, 1 auction, 2 bid) and
//! `person`, `auction`, `bid` ROW columns of which the event's own is set, with that
//! connector's options (`events.num`, `first-event.rate`, …).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, Int32Array, Int64Array, StringArray, StructArray, TimestampMillisecondArray,
    UInt32Array, new_null_array,
};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Fields, SchemaRef, TimeUnit};
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
            "which events the table holds; without it, the table has Flink's shape: event_type and person, auction, bid rows",
        ),
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
            "events.num",
            OptionType::Int {
                min: 0,
                max: u64::MAX,
            },
            "Flink's name of 'events'",
        ),
        OptionDef::new(
            "first-event.rate",
            OptionType::Int {
                min: 1,
                max: u64::MAX,
            },
            "Flink's name of 'rate'",
        ),
        OptionDef::new(
            "next-event.rate",
            OptionType::Int {
                min: 1,
                max: u64::MAX,
            },
            "Flink's second rate: must equal first-event.rate (one rate throughout)",
        ),
        OptionDef::new(
            "max-emit-speed",
            OptionType::Bool,
            "Flink's: 'true' generates as fast as the pipeline takes (throttle = false)",
        ),
        OptionDef::new(
            "person.proportion",
            OptionType::Int { min: 0, max: 1_000 },
            "Flink's event mix: only Nexmark's 1 : 3 : 46 is generated",
        )
        .default("1"),
        OptionDef::new(
            "auction.proportion",
            OptionType::Int { min: 0, max: 1_000 },
            "Flink's event mix: only Nexmark's 1 : 3 : 46 is generated",
        )
        .default("3"),
        OptionDef::new(
            "bid.proportion",
            OptionType::Int { min: 0, max: 1_000 },
            "Flink's event mix: only Nexmark's 1 : 3 : 46 is generated",
        )
        .default("46"),
        OptionDef::new(
            "keep-alive",
            OptionType::Bool,
            "Flink's: 'true' keeps the source open (idle) after the last event",
        )
        .default("false"),
        OptionDef::new(
            "stop-at",
            OptionType::Text,
            "Flink's: only -1 (stop after events.num) is supported",
        )
        .default("-1"),
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
    lookup: None,
};

/// Every declared column must be one the stream produces.
fn validate(spec: &TableSpec) -> Result<(), ConnectorError> {
    let config = NexmarkConfig::try_new(spec)?;
    layout(spec, config.stream).map(|_| ())
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

    /// The kind of event number `n`.
    fn of_event(n: u64) -> Self {
        match n % TOTAL_PROPORTION {
            o if o < PERSON_PROPORTION => NexmarkStream::Person,
            o if o < PERSON_PROPORTION + AUCTION_PROPORTION => NexmarkStream::Auction,
            _ => NexmarkStream::Bid,
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
    /// `person`, `auction` or `bid`; `None`: all three in Flink's table shape.
    pub stream: Option<NexmarkStream>,
    /// Stay open (and idle) after the last event.
    pub keep_alive: bool,
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
        let stream = match o
            .choice("nexmark", "stream", &["person", "auction", "bid"])
            .map_err(opt)?
        {
            Some("person") => Some(NexmarkStream::Person),
            Some("auction") => Some(NexmarkStream::Auction),
            Some(_) => Some(NexmarkStream::Bid),
            None => None,
        };
        let positive = |v: &str| v.trim().parse::<u64>().ok().filter(|n| *n > 0);
        let whole = |v: &str| v.trim().parse::<u64>().ok();
        let boolean = |v: &str| match v.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        };
        let bad = |key: &str, reason: String| {
            opt(runnel_common::options::OptionError::Invalid {
                connector: "nexmark".into(),
                key: key.into(),
                value: o.get(key).unwrap_or_default().to_string(),
                reason,
            })
        };
        // Flink's names of the same settings; runnel's win when both are given.
        let events = match o
            .parsed("nexmark", "events", "expected a whole number", whole)
            .map_err(opt)?
        {
            Some(n) => Some(n),
            // Flink's Nexmark: 0 events means no end.
            None => o
                .parsed("nexmark", "events.num", "expected a whole number", whole)
                .map_err(opt)?
                .filter(|n| *n > 0),
        };
        let first_rate = o
            .parsed(
                "nexmark",
                "first-event.rate",
                "expected events per second > 0",
                positive,
            )
            .map_err(opt)?;
        let next_rate = o
            .parsed(
                "nexmark",
                "next-event.rate",
                "expected events per second > 0",
                positive,
            )
            .map_err(opt)?;
        if let (Some(f), Some(n)) = (first_rate, next_rate)
            && f != n
        {
            return Err(bad(
                "next-event.rate",
                format!("runnel's generator has one rate; set it equal to first-event.rate ({f})"),
            ));
        }
        let rate = o
            .parsed(
                "nexmark",
                "rate",
                "expected events per second > 0",
                positive,
            )
            .map_err(opt)?
            .or(first_rate);
        let max_speed = o
            .parsed(
                "nexmark",
                "max-emit-speed",
                "expected true or false",
                boolean,
            )
            .map_err(opt)?;
        let throttle = o
            .parsed("nexmark", "throttle", "expected true or false", boolean)
            .map_err(opt)?
            .or(max_speed.map(|m| !m))
            .unwrap_or(true);
        for (key, want) in [
            ("person.proportion", PERSON_PROPORTION),
            ("auction.proportion", AUCTION_PROPORTION),
            (
                "bid.proportion",
                TOTAL_PROPORTION - PERSON_PROPORTION - AUCTION_PROPORTION,
            ),
        ] {
            let got = o
                .parsed("nexmark", key, "expected a whole number", whole)
                .map_err(opt)?;
            if got.is_some_and(|g| g != want) {
                return Err(bad(
                    key,
                    format!(
                        "runnel's generator mixes person : auction : bid as Nexmark's 1 : 3 : 46; expected {want}"
                    ),
                ));
            }
        }
        let keep_alive = o
            .parsed("nexmark", "keep-alive", "expected true or false", boolean)
            .map_err(opt)?
            .unwrap_or(false);
        if let Some(v) = o.get("stop-at")
            && v.trim() != "-1"
        {
            return Err(bad(
                "stop-at",
                "only -1 is supported: the generator stops after events.num events".into(),
            ));
        }
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
            keep_alive,
            events,
            rate,
            throttle,
            seed: seed.unwrap_or(42),
            batch_size: batch.map_or(DEFAULT_BATCH_SIZE, |b| b as usize),
        })
    }
}

/// Whether the generator runs forever (no `events` count, or Flink's `keep-alive`).
pub fn never_ends(spec: &TableSpec) -> bool {
    NexmarkConfig::try_new(spec).is_ok_and(|c| c.events.is_none() || c.keep_alive)
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
    let projection = layout(spec, config.stream)?;
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

/// What a table's columns read from the generator.
#[derive(Debug, Clone)]
pub enum Layout {
    /// One stream: for each declared column, the generator column it reads.
    Stream(NexmarkStream, Vec<usize>),
    /// Flink's shape: every event, its kind and its own stream's row.
    Union(Vec<UnionColumn>),
}

/// A column of Flink's Nexmark table.
#[derive(Debug, Clone)]
pub enum UnionColumn {
    /// `event_type`: 0 person, 1 auction, 2 bid.
    EventType,
    /// A ROW of one stream's columns (these generator columns), set on its events.
    Row(NexmarkStream, Fields, Vec<usize>),
}

impl Layout {
    /// Offsets within each 50-event epoch of the events the table holds.
    fn offsets(&self) -> (u64, u64) {
        match self {
            Layout::Stream(s, _) => s.offsets(),
            Layout::Union(_) => (0, TOTAL_PROPORTION),
        }
    }
}

/// Matches the declared columns with the generator's: one stream's, or Flink's shape.
fn layout(spec: &TableSpec, stream: Option<NexmarkStream>) -> Result<Layout, ConnectorError> {
    if let Some(stream) = stream {
        return Ok(Layout::Stream(
            stream,
            project(spec, stream, spec.schema.fields())?,
        ));
    }
    let shape = "without 'stream', a nexmark table has Flink's shape: event_type INT, person ROW<…>, auction ROW<…>, bid ROW<…> (or set 'stream' = 'person' | 'auction' | 'bid')";
    let norm = |n: &str| n.replace('_', "").to_ascii_lowercase();
    if !spec
        .schema
        .fields()
        .iter()
        .any(|f| norm(f.name()) == "eventtype")
    {
        return Err(ConnectorError::Other(format!(
            "table '{}': {shape}",
            spec.name
        )));
    }
    spec.schema
        .fields()
        .iter()
        .map(|f| {
            let name = f.name().replace('_', "").to_ascii_lowercase();
            let stream = match name.as_str() {
                "eventtype" => {
                    return match f.data_type() {
                        DataType::Int32 | DataType::Int64 => Ok(UnionColumn::EventType),
                        other => Err(ConnectorError::Type {
                            table: spec.name.clone(),
                            column: f.name().clone(),
                            data_type: sql_name(other),
                            reason: "event_type is INT (0 person, 1 auction, 2 bid)".into(),
                        }),
                    };
                }
                "person" => NexmarkStream::Person,
                "auction" => NexmarkStream::Auction,
                "bid" => NexmarkStream::Bid,
                _ => {
                    return Err(ConnectorError::Other(format!(
                        "table '{}': column '{}' is not produced by the nexmark connector; {shape}",
                        spec.name,
                        f.name()
                    )));
                }
            };
            let DataType::Struct(fields) = f.data_type() else {
                return Err(ConnectorError::Type {
                    table: spec.name.clone(),
                    column: f.name().clone(),
                    data_type: sql_name(f.data_type()),
                    reason: format!("the {} column is a ROW of its fields", stream.name()),
                });
            };
            Ok(UnionColumn::Row(
                stream,
                fields.clone(),
                project(spec, stream, fields)?,
            ))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Layout::Union)
}

/// For each of `fields`, the index of the generator column of `stream` it reads.
fn project(
    spec: &TableSpec,
    stream: NexmarkStream,
    fields: &Fields,
) -> Result<Vec<usize>, ConnectorError> {
    let cols = stream.columns();
    fields
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
    layout: Layout,
    /// Offsets within each 50-event epoch of the events this table holds.
    offsets: (u64, u64),
    keep_alive: bool,
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
        layout: Layout,
        tables: Arc<Tables>,
        ctx: SourceContext,
    ) -> Self {
        let event_rate = config.rate.unwrap_or(DEFAULT_EVENT_RATE).max(1);
        let offsets = layout.offsets();
        Self {
            schema,
            layout,
            offsets,
            keep_alive: config.keep_alive,
            tables,
            seed: config.seed,
            events: config.events.unwrap_or(u64::MAX),
            rate: config.rate.filter(|_| config.throttle),
            delay_us: (1_000_000 / event_rate).max(1),
            batch_size: config.batch_size.max(1),
            subtask: ctx.subtask as u64,
            parallelism: ctx.parallelism.max(1) as u64,
            next: ctx.subtask as u64 * TOTAL_PROPORTION + offsets.0,
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
        let (lo, hi) = self.offsets;
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
        // Which columns of each stream are read.
        let mut wanted: [Vec<bool>; 3] = STREAMS.map(|s| vec![false; s.columns().len()]);
        match &self.layout {
            Layout::Stream(s, projection) => {
                for &i in projection {
                    wanted[*s as usize][i] = true;
                }
            }
            Layout::Union(cols) => {
                for c in cols {
                    if let UnionColumn::Row(s, _, projection) = c {
                        for &i in projection {
                            wanted[*s as usize][i] = true;
                        }
                    }
                }
            }
        }
        let mut outs: [Out; 3] =
            [0, 1, 2].map(|k| Out::new(STREAMS[k].columns(), &wanted[k], max_rows));
        let generated = wanted.clone().map(|w| w.iter().any(|w| *w));
        let mut kinds: Vec<u8> = Vec::with_capacity(max_rows);
        while kinds.len() < max_rows && self.next < limit {
            let n = self.next;
            let ts = self.timestamp(n);
            let kind = NexmarkStream::of_event(n);
            if generated[kind as usize] {
                let mut rng = Rng::new(self.seed, n);
                let out = &mut outs[kind as usize];
                match kind {
                    NexmarkStream::Bid => gen_bid(out, &mut rng, &self.tables, n, ts),
                    NexmarkStream::Auction => {
                        let horizon = self.timestamp(n + AUCTION_HORIZON_EVENTS) - ts;
                        gen_auction(out, &mut rng, &self.tables, n, ts, horizon)
                    }
                    NexmarkStream::Person => gen_person(out, &mut rng, &self.tables, n, ts),
                }
            }
            kinds.push(kind as u8);
            self.next = self.advance(n);
        }
        if kinds.is_empty() {
            return Ok(None);
        }
        let [p, a, b] = outs;
        let arrays = [
            p.finish(NexmarkStream::Person.columns())?,
            a.finish(NexmarkStream::Auction.columns())?,
            b.finish(NexmarkStream::Bid.columns())?,
        ];
        let columns: Vec<ArrayRef> = match &self.layout {
            Layout::Stream(s, projection) => {
                pick(&arrays[*s as usize], projection, self.schema.fields())?
            }
            Layout::Union(cols) => cols
                .iter()
                .zip(self.schema.fields())
                .map(|(c, f)| match c {
                    UnionColumn::EventType => Ok(match f.data_type() {
                        DataType::Int64 => Arc::new(Int64Array::from_iter_values(
                            kinds.iter().map(|k| *k as i64),
                        )) as ArrayRef,
                        _ => Arc::new(Int32Array::from_iter_values(
                            kinds.iter().map(|k| *k as i32),
                        )),
                    }),
                    UnionColumn::Row(s, fields, projection) => {
                        spread(&arrays[*s as usize], projection, fields, &kinds, *s as u8)
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Some(RecordBatch::try_new(self.schema.clone(), columns)?))
    }
}

/// The three streams, indexed by `NexmarkStream as usize`.
const STREAMS: [NexmarkStream; 3] = [
    NexmarkStream::Person,
    NexmarkStream::Auction,
    NexmarkStream::Bid,
];

/// The generated columns `projection` as `fields` (time zones as declared).
fn pick(
    arrays: &[Option<ArrayRef>],
    projection: &[usize],
    fields: &Fields,
) -> Result<Vec<ArrayRef>, ConnectorError> {
    projection
        .iter()
        .zip(fields)
        .map(
            |(&i, f)| match (arrays.get(i).and_then(Option::as_ref), f.data_type()) {
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
            },
        )
        .collect()
}

/// One stream's generated rows as a ROW column over all events: set where the
/// event is of `kind`, NULL elsewhere.
fn spread(
    arrays: &[Option<ArrayRef>],
    projection: &[usize],
    fields: &Fields,
    kinds: &[u8],
    kind: u8,
) -> Result<ArrayRef, ConnectorError> {
    let data_type = DataType::Struct(fields.clone());
    let count = kinds.iter().filter(|k| **k == kind).count();
    if count == 0 {
        return Ok(new_null_array(&data_type, kinds.len()));
    }
    let rows = StructArray::try_new(fields.clone(), pick(arrays, projection, fields)?, None)?;
    let mut next = 0u32;
    let at: UInt32Array = kinds
        .iter()
        .map(|k| {
            (*k == kind).then(|| {
                next += 1;
                next - 1
            })
        })
        .collect();
    Ok(arrow::compute::take(&rows, &at, None)?)
}

fn internal() -> ConnectorError {
    ConnectorError::Other("runnel bug in the nexmark generator: a projected column was not generated; please report it".into())
}

#[async_trait]
impl Source for NexmarkSource {
    async fn poll(&mut self) -> Result<SourcePoll, ConnectorError> {
        if self.next >= self.events {
            if self.keep_alive {
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Ok(SourcePoll::Pending);
            }
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
        let (lo, hi) = self.offsets;
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
