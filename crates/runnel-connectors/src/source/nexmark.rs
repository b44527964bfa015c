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

use std::sync::{Arc, OnceLock};
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

use crate::{ConnectorError, Source, SourceContext, SourcePoll};

/// Option keys of `connector = 'nexmark'`.
pub const OPTIONS: &[&str] = &["stream", "events", "rate", "seed", "batch-size"];

/// Event time of event 0: 2026-01-01T00:00:00Z.
pub const BASE_TIME: i64 = 1_767_225_600_000;
/// Events per second of event time when no `rate` is given (Nexmark's default).
pub const DEFAULT_EVENT_RATE: u64 = 10_000;
/// Rows per batch when no `batch-size` is given.
pub const DEFAULT_BATCH_SIZE: usize = 8192;

const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
const TOTAL_PROPORTION: u64 = 50;
const FIRST_PERSON_ID: i64 = 1000;
const FIRST_AUCTION_ID: i64 = 1000;
const FIRST_CATEGORY_ID: i64 = 10;
const NUM_CATEGORIES: u64 = 5;
const NUM_ACTIVE_PEOPLE: u64 = 1000;
const NUM_IN_FLIGHT_AUCTIONS: u64 = 100;
const PERSON_ID_LEAD: u64 = 10;
const AUCTION_ID_LEAD: u64 = 10;
/// P(hot auction) = 1 - 1/2, P(hot bidder) = P(hot seller) = 1 - 1/4.
const HOT_AUCTION_RATIO: u64 = 2;
const HOT_BIDDERS_RATIO: u64 = 4;
const HOT_SELLERS_RATIO: u64 = 4;
/// Hot ids are the first of each batch of this many recent auctions / people.
const HOT_ID_BATCH: u64 = 100;
const AVG_PERSON_BYTE_SIZE: usize = 200;
const AVG_AUCTION_BYTE_SIZE: usize = 500;
const AVG_BID_BYTE_SIZE: usize = 100;
const CHANNELS_NUMBER: u64 = 10_000;
const HOT_CHANNELS_RATIO: u64 = 2;
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
const MIN_STRING_LENGTH: u64 = 3;
const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];

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
    /// Wall-clock throttle in events per second (all kinds); unthrottled when `None`.
    pub rate: Option<u64>,
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
        o.check_known("nexmark", OPTIONS).map_err(opt)?;
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
            let idx = cols
                .iter()
                .position(|(n, _)| *n == f.name().as_str())
                .or_else(|| cols.iter().position(|(n, _)| n.eq_ignore_ascii_case(f.name())))
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
            rate: config.rate,
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

/// Events until `NUM_IN_FLIGHT_AUCTIONS` more auctions exist: the average auction length.
const AUCTION_HORIZON_EVENTS: u64 = NUM_IN_FLIGHT_AUCTIONS * TOTAL_PROPORTION / AUCTION_PROPORTION;

fn last_base0_person_id(event: u64) -> u64 {
    let epoch = event / TOTAL_PROPORTION;
    // Nexmark clamps the offset to the epoch's last person; kept general in the proportions.
    #[allow(clippy::unnecessary_min_or_max)]
    let offset = (event % TOTAL_PROPORTION).min(PERSON_PROPORTION - 1);
    epoch * PERSON_PROPORTION + offset
}

fn next_base0_person_id(event: u64, rng: &mut Rng) -> u64 {
    let num_people = last_base0_person_id(event) + 1;
    let active = num_people.min(NUM_ACTIVE_PEOPLE);
    let n = rng.next_long(active + PERSON_ID_LEAD);
    num_people - active + n
}

fn last_base0_auction_id(event: u64) -> u64 {
    let mut epoch = event / TOTAL_PROPORTION;
    let mut offset = event % TOTAL_PROPORTION;
    if offset < PERSON_PROPORTION {
        // Before the first auction of this epoch: the last auction of the previous one.
        if epoch == 0 {
            return 0;
        }
        epoch -= 1;
        offset = AUCTION_PROPORTION - 1;
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        offset = AUCTION_PROPORTION - 1;
    } else {
        offset -= PERSON_PROPORTION;
    }
    epoch * AUCTION_PROPORTION + offset
}

fn next_base0_auction_id(event: u64, rng: &mut Rng) -> u64 {
    let max = last_base0_auction_id(event);
    let min = max.saturating_sub(NUM_IN_FLIGHT_AUCTIONS);
    min + rng.next_long(max - min + 1 + AUCTION_ID_LEAD)
}

fn next_price(rng: &mut Rng) -> i64 {
    (10f64.powf(rng.next_double() * 6.0) * 100.0).round() as i64
}

fn gen_bid(out: &mut Out, rng: &mut Rng, t: &Tables, n: u64, ts: i64) {
    let auction = if rng.next_int(HOT_AUCTION_RATIO) > 0 {
        (last_base0_auction_id(n) / HOT_ID_BATCH) * HOT_ID_BATCH
    } else {
        next_base0_auction_id(n, rng)
    };
    let bidder = if rng.next_int(HOT_BIDDERS_RATIO) > 0 {
        // The second person of the batch, so hot bidders and hot sellers differ.
        (last_base0_person_id(n) / HOT_ID_BATCH) * HOT_ID_BATCH + 1
    } else {
        next_base0_person_id(n, rng)
    };
    let price = next_price(rng);
    let (channel, url): (&str, &str) = if rng.next_int(HOT_CHANNELS_RATIO) > 0 {
        let i = rng.next_int(HOT_CHANNELS.len() as u64) as usize;
        (HOT_CHANNELS[i], t.hot_urls[i].as_str())
    } else {
        let (c, u) = &t.channels[rng.next_int(CHANNELS_NUMBER) as usize];
        (c.as_str(), u.as_str())
    };
    out.int(0, auction as i64 + FIRST_AUCTION_ID);
    out.int(1, bidder as i64 + FIRST_PERSON_ID);
    out.int(2, price);
    out.str(3, channel.as_bytes());
    out.str(4, url.as_bytes());
    out.int(5, ts);
    let extra = next_extra(rng, t, 32, AVG_BID_BYTE_SIZE);
    out.str(6, extra);
}

fn gen_auction(out: &mut Out, rng: &mut Rng, t: &Tables, n: u64, ts: i64, horizon_ms: i64) {
    let id = last_base0_auction_id(n) as i64 + FIRST_AUCTION_ID;
    let seller_base0 = if rng.next_int(HOT_SELLERS_RATIO) > 0 {
        (last_base0_person_id(n) / HOT_ID_BATCH) * HOT_ID_BATCH
    } else {
        next_base0_person_id(n, rng)
    };
    let seller = seller_base0 as i64 + FIRST_PERSON_ID;
    let category = FIRST_CATEGORY_ID + rng.next_int(NUM_CATEGORIES) as i64;
    let initial_bid = next_price(rng);
    let expires = ts + 1 + rng.next_long((horizon_ms.max(1) * 2) as u64) as i64;
    out.int(0, id);
    let name_len = out.str_with(1, |buf| next_string(rng, 20, b' ', buf));
    let desc_len = out.str_with(2, |buf| next_string(rng, 100, b' ', buf));
    let reserve = initial_bid + next_price(rng);
    out.int(3, initial_bid);
    out.int(4, reserve);
    out.int(5, ts);
    out.int(6, expires);
    out.int(7, seller);
    out.int(8, category);
    let extra = next_extra(rng, t, 8 + name_len + desc_len + 40, AVG_AUCTION_BYTE_SIZE);
    out.str(9, extra);
}

fn gen_person(out: &mut Out, rng: &mut Rng, t: &Tables, n: u64, ts: i64) {
    let id = last_base0_person_id(n) as i64 + FIRST_PERSON_ID;
    out.int(0, id);
    let name = &t.names[rng.next_int(t.names.len() as u64) as usize];
    out.str(1, name.as_bytes());
    let email_len = out.str_with(2, |buf| {
        next_string(rng, 7, b' ', buf);
        buf.push(b'@');
        next_string(rng, 5, b' ', buf);
        buf.extend_from_slice(b".com");
    });
    out.str_with(3, |buf| {
        for i in 0..4 {
            if i > 0 {
                buf.push(b' ');
            }
            let v = rng.next_int(10_000) as u16;
            buf.extend_from_slice(&[
                b'0' + (v / 1000) as u8,
                b'0' + (v / 100 % 10) as u8,
                b'0' + (v / 10 % 10) as u8,
                b'0' + (v % 10) as u8,
            ]);
        }
    });
    let city = US_CITIES[rng.next_int(US_CITIES.len() as u64) as usize];
    let state = US_STATES[rng.next_int(US_STATES.len() as u64) as usize];
    out.str(4, city.as_bytes());
    out.str(5, state.as_bytes());
    out.int(6, ts);
    let size = 8 + name.len() + email_len + 19 + city.len() + state.len();
    let extra = next_extra(rng, t, size, AVG_PERSON_BYTE_SIZE);
    out.str(7, extra);
}

/// `MIN_STRING_LENGTH..max_len` characters `a`–`z`, with `special` one time in 13.
fn next_string(rng: &mut Rng, max_len: u64, special: u8, buf: &mut Vec<u8>) {
    let len = MIN_STRING_LENGTH + rng.next_int(max_len - MIN_STRING_LENGTH);
    for _ in 0..len {
        // One draw per character: low half decides "special", high half the letter.
        let x = rng.next_u64();
        if ((x & 0xffff_ffff) * 13) >> 32 == 0 {
            buf.push(special);
        } else {
            buf.push(b'a' + (((x >> 32) * 26) >> 32) as u8);
        }
    }
}

/// Padding that brings the event to about `avg` bytes (±20%), cut from a random-letter pool.
fn next_extra<'t>(rng: &mut Rng, t: &'t Tables, current: usize, avg: usize) -> &'t [u8] {
    if current > avg {
        return b"";
    }
    let desired = avg - current;
    let delta = (desired as f64 * 0.2).round() as usize;
    let min = desired - delta;
    let size = if delta == 0 {
        min
    } else {
        min + rng.next_int(2 * delta as u64) as usize
    };
    let size = size.min(t.pool.len());
    let start = rng.next_int((t.pool.len() - size + 1) as u64) as usize;
    &t.pool[start..start + size]
}

/// Precomputed strings shared by every generator: channels, urls, names, padding.
pub struct Tables {
    channels: Vec<(String, String)>,
    hot_urls: Vec<String>,
    names: Vec<String>,
    pool: Vec<u8>,
}

/// The shared tables, built once per process (they do not depend on the seed).
fn tables() -> Arc<Tables> {
    static TABLES: OnceLock<Arc<Tables>> = OnceLock::new();
    TABLES
        .get_or_init(|| {
            let mut rng = Rng::new(0x006e_6578_6d61_726b, 0);
            let hot_urls = (0..HOT_CHANNELS.len())
                .map(|_| base_url(&mut rng))
                .collect();
            let channels = (0..CHANNELS_NUMBER as i32)
                .map(|i| {
                    let mut url = base_url(&mut rng);
                    if rng.next_int(10) > 0 {
                        url.push_str(&format!("&channel_id={}", i.reverse_bits().wrapping_abs()));
                    }
                    (format!("channel-{i}"), url)
                })
                .collect();
            let names = FIRST_NAMES
                .iter()
                .flat_map(|f| LAST_NAMES.iter().map(move |l| format!("{f} {l}")))
                .collect();
            let pool = (0..64 * 1024)
                .map(|_| b'a' + rng.next_int(26) as u8)
                .collect();
            Arc::new(Tables {
                channels,
                hot_urls,
                names,
                pool,
            })
        })
        .clone()
}

fn base_url(rng: &mut Rng) -> String {
    let mut b = b"https://www.nexmark.com/".to_vec();
    for _ in 0..3 {
        next_string(rng, 5, b'_', &mut b);
        b.push(b'/');
    }
    b.extend_from_slice(b"item.htm?query=1");
    String::from_utf8_lossy(&b).into_owned()
}

/// splitmix64, seeded per event so every event is a pure function of (seed, number).
struct Rng(u64);

impl Rng {
    fn new(seed: u64, event: u64) -> Self {
        let mut r = Rng(seed ^ event.wrapping_mul(0xd1b5_4a32_d192_ed03));
        r.0 = r.next_u64();
        r
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn next_int(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `0..n`, 0 when `n` is 0.
    fn next_long(&mut self, n: u64) -> u64 {
        self.next_int(n)
    }

    /// Uniform in `[0, 1)`.
    fn next_double(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Column buffers of one batch; columns nobody declared are not written.
struct Out {
    ints: Vec<Option<Vec<i64>>>,
    strs: Vec<Option<(Vec<i32>, Vec<u8>)>>,
    scratch: Vec<u8>,
}

impl Out {
    fn new(cols: &[(&str, Kind)], wanted: &[bool], rows: usize) -> Self {
        let ints = cols
            .iter()
            .zip(wanted)
            .map(|((_, k), w)| (*w && *k != Kind::Str).then(|| Vec::with_capacity(rows)))
            .collect();
        let strs = cols
            .iter()
            .zip(wanted)
            .map(|((_, k), w)| {
                (*w && *k == Kind::Str).then(|| {
                    let mut offsets = Vec::with_capacity(rows + 1);
                    offsets.push(0);
                    (offsets, Vec::with_capacity(rows * 32))
                })
            })
            .collect();
        Self {
            ints,
            strs,
            scratch: Vec::new(),
        }
    }

    #[inline]
    fn int(&mut self, col: usize, v: i64) {
        if let Some(Some(b)) = self.ints.get_mut(col) {
            b.push(v);
        }
    }

    #[inline]
    fn str(&mut self, col: usize, v: &[u8]) {
        if let Some(Some((offsets, values))) = self.strs.get_mut(col) {
            values.extend_from_slice(v);
            offsets.push(values.len() as i32);
        }
    }

    /// Builds a string value in place with `f`; returns its length. Runs `f`
    /// even for an undeclared column so the random draws stay the same.
    #[inline]
    fn str_with(&mut self, col: usize, f: impl FnOnce(&mut Vec<u8>)) -> usize {
        match self.strs.get_mut(col) {
            Some(Some((offsets, values))) => {
                let start = values.len();
                f(values);
                offsets.push(values.len() as i32);
                values.len() - start
            }
            _ => {
                self.scratch.clear();
                f(&mut self.scratch);
                self.scratch.len()
            }
        }
    }

    fn finish(self, cols: &[(&str, Kind)]) -> Result<Vec<Option<ArrayRef>>, ConnectorError> {
        let mut arrays = Vec::with_capacity(cols.len());
        for (((_, kind), ints), strs) in cols.iter().zip(self.ints).zip(self.strs) {
            arrays.push(match (kind, ints, strs) {
                (Kind::Int, Some(v), _) => Some(Arc::new(Int64Array::from(v)) as ArrayRef),
                (Kind::Ts, Some(v), _) => {
                    Some(Arc::new(TimestampMillisecondArray::from(v)) as ArrayRef)
                }
                (Kind::Str, _, Some((offsets, values))) => {
                    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
                    Some(Arc::new(StringArray::try_new(
                        offsets,
                        Buffer::from_vec(values),
                        None,
                    )?) as ArrayRef)
                }
                _ => None,
            });
        }
        Ok(arrays)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use arrow::datatypes::{Field, Schema};
    use runnel_common::Options;

    use super::*;
    use crate::format::json::encode_to_string;

    fn bid_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("auction", DataType::Int64, true),
            Field::new("bidder", DataType::Int64, true),
            Field::new("price", DataType::Int64, true),
            Field::new("channel", DataType::Utf8, true),
            Field::new("url", DataType::Utf8, true),
            Field::new(
                "date_time",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
            Field::new("extra", DataType::Utf8, true),
        ]))
    }

    fn spec(schema: SchemaRef, opts: &[(&str, &str)]) -> TableSpec {
        let mut o = vec![("connector".to_string(), "nexmark".to_string())];
        o.extend(opts.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        TableSpec {
            name: "bids".into(),
            schema,
            watermark: None,
            options: Options::new(o),
        }
    }

    fn ctx(subtask: usize, parallelism: usize) -> SourceContext {
        SourceContext {
            subtask,
            parallelism,
            metrics: ConnectorMetrics::default(),
            data_dir: PathBuf::from("."),
            batch_size: 1000,
            log: None,
            checkpointing: false,
        }
    }

    #[test]
    fn event_ids_follow_nexmark() {
        assert_eq!(last_base0_person_id(0), 0);
        assert_eq!(last_base0_person_id(49), 0);
        assert_eq!(last_base0_person_id(50), 1);
        assert_eq!(last_base0_auction_id(1), 0);
        assert_eq!(last_base0_auction_id(3), 2);
        assert_eq!(last_base0_auction_id(10), 2);
        assert_eq!(last_base0_auction_id(50), 2);
        assert_eq!(last_base0_auction_id(51), 3);
    }

    #[tokio::test]
    async fn bids_look_like_nexmark() {
        let mut s = build(
            &spec(bid_schema(), &[("stream", "bid"), ("events", "100")]),
            vec![ctx(0, 1)],
        )
        .unwrap();
        let SourcePoll::Batch(b) = s[0].poll().await.unwrap() else {
            panic!("expected a batch")
        };
        assert_eq!(b.num_rows(), 92);
        let text = encode_to_string(&b).unwrap();
        let first = text.lines().next().unwrap();
        assert!(first.starts_with("{\"auction\":"), "{first}");
        assert!(
            first.contains("\"date_time\":\"2026-01-01T00:00:00.000Z\""),
            "{first}"
        );
        assert!(matches!(s[0].poll().await.unwrap(), SourcePoll::End));
    }

    #[test]
    fn unknown_columns_and_types_are_errors() {
        let schema = Arc::new(Schema::new(vec![Field::new("nope", DataType::Int64, true)]));
        let err = build(&spec(schema, &[("stream", "bid")]), vec![ctx(0, 1)])
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("column 'nope' is not produced by the nexmark 'bid' stream"),
            "{err}"
        );
        let schema = Arc::new(Schema::new(vec![Field::new("price", DataType::Utf8, true)]));
        let err = build(&spec(schema, &[("stream", "bid")]), vec![ctx(0, 1)])
            .err()
            .unwrap();
        assert!(err.to_string().contains("which produces BIGINT"), "{err}");
        let err = build(&spec(bid_schema(), &[]), vec![ctx(0, 1)])
            .err()
            .unwrap();
        assert!(err.to_string().contains("needs option 'stream'"), "{err}");
    }

    #[test]
    fn resumes_from_its_position() {
        let s = spec(bid_schema(), &[("stream", "bid"), ("seed", "7")]);
        let config = NexmarkConfig::try_new(&s).unwrap();
        let proj = project(&s, NexmarkStream::Bid).unwrap();
        let mut a = NexmarkSource::new(bid_schema(), &config, proj.clone(), tables(), ctx(1, 2));
        let first = a.generate(30, u64::MAX).unwrap().unwrap();
        let pos = a.position().unwrap();
        let rest = a.generate(30, u64::MAX).unwrap().unwrap();
        let mut b = NexmarkSource::new(bid_schema(), &config, proj, tables(), ctx(1, 2));
        futures_lite_block(b.seek(&pos)).unwrap();
        assert_eq!(b.generate(30, u64::MAX).unwrap().unwrap(), rest);
        assert_ne!(first, rest);
    }

    fn futures_lite_block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn person_and_auction_streams_generate() {
        for (stream, cols) in [(NexmarkStream::Person, 8), (NexmarkStream::Auction, 10)] {
            let fields: Vec<Field> = stream
                .columns()
                .iter()
                .map(|(n, k)| {
                    let dt = match k {
                        Kind::Int => DataType::Int64,
                        Kind::Str => DataType::Utf8,
                        Kind::Ts => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    };
                    Field::new(*n, dt, true)
                })
                .collect();
            let schema = Arc::new(Schema::new(fields));
            let s = spec(
                schema.clone(),
                &[("stream", stream.name()), ("events", "500")],
            );
            let config = NexmarkConfig::try_new(&s).unwrap();
            let proj = project(&s, stream).unwrap();
            let mut src = NexmarkSource::new(schema, &config, proj, tables(), ctx(0, 1));
            let b = src.generate(1000, 500).unwrap().unwrap();
            assert_eq!(b.num_columns(), cols);
            let expect = if stream == NexmarkStream::Person {
                10
            } else {
                30
            };
            assert_eq!(b.num_rows(), expect);
            let text = encode_to_string(&b).unwrap();
            let mut ids = BTreeMap::new();
            for l in text.lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                *ids.entry(v["id"].as_i64().unwrap()).or_insert(0) += 1;
            }
            // Ids are consecutive from 1000 and unique.
            assert_eq!(
                ids.keys().copied().collect::<Vec<_>>(),
                (1000..1000 + expect as i64).collect::<Vec<_>>()
            );
        }
    }

    /// Prints the generation speed of bids on one subtask: `cargo test --release -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn measure_bid_generation_speed() {
        let s = spec(bid_schema(), &[("stream", "bid")]);
        let config = NexmarkConfig::try_new(&s).unwrap();
        let proj = project(&s, NexmarkStream::Bid).unwrap();
        let mut src = NexmarkSource::new(bid_schema(), &config, proj, tables(), ctx(0, 1));
        let target = 5_000_000;
        let started = Instant::now();
        let mut rows = 0;
        while rows < target {
            rows += src
                .generate(DEFAULT_BATCH_SIZE, u64::MAX)
                .unwrap()
                .map_or(0, |b| b.num_rows());
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "nexmark: {rows} bids in {secs:.3} s = {:.2} M rows/s on one subtask",
            rows as f64 / secs / 1e6
        );
    }
}
