//! The Nexmark event generator: every event is a pure function of (seed, event number),
//! so subtasks generate disjoint slices and a restart regenerates the same events.

use std::sync::{Arc, OnceLock};

use super::*;

pub(super) const PERSON_PROPORTION: u64 = 1;
pub(super) const AUCTION_PROPORTION: u64 = 3;
pub(super) const TOTAL_PROPORTION: u64 = 50;
pub(super) const FIRST_PERSON_ID: i64 = 1000;
pub(super) const FIRST_AUCTION_ID: i64 = 1000;
pub(super) const FIRST_CATEGORY_ID: i64 = 10;
pub(super) const NUM_CATEGORIES: u64 = 5;
pub(super) const NUM_ACTIVE_PEOPLE: u64 = 1000;
pub(super) const NUM_IN_FLIGHT_AUCTIONS: u64 = 100;
pub(super) const PERSON_ID_LEAD: u64 = 10;
pub(super) const AUCTION_ID_LEAD: u64 = 10;
/// P(hot auction) = 1 - 1/2, P(hot bidder) = P(hot seller) = 1 - 1/4.
pub(super) const HOT_AUCTION_RATIO: u64 = 2;
pub(super) const HOT_BIDDERS_RATIO: u64 = 4;
pub(super) const HOT_SELLERS_RATIO: u64 = 4;
/// Hot ids are the first of each batch of this many recent auctions / people.
pub(super) const HOT_ID_BATCH: u64 = 100;
pub(super) const AVG_PERSON_BYTE_SIZE: usize = 200;
pub(super) const AVG_AUCTION_BYTE_SIZE: usize = 500;
pub(super) const AVG_BID_BYTE_SIZE: usize = 100;
pub(super) const CHANNELS_NUMBER: u64 = 10_000;
pub(super) const HOT_CHANNELS_RATIO: u64 = 2;
pub(super) const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
pub(super) const MIN_STRING_LENGTH: u64 = 3;
pub(super) const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
pub(super) const US_CITIES: [&str; 10] = [
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
pub(super) const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
pub(super) const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];

/// Events until `NUM_IN_FLIGHT_AUCTIONS` more auctions exist: the average auction length.
pub(super) const AUCTION_HORIZON_EVENTS: u64 =
    NUM_IN_FLIGHT_AUCTIONS * TOTAL_PROPORTION / AUCTION_PROPORTION;

pub(super) fn last_base0_person_id(event: u64) -> u64 {
    let epoch = event / TOTAL_PROPORTION;
    // Nexmark clamps the offset to the epoch's last person; kept general in the proportions.
    #[allow(clippy::unnecessary_min_or_max)]
    let offset = (event % TOTAL_PROPORTION).min(PERSON_PROPORTION - 1);
    epoch * PERSON_PROPORTION + offset
}

pub(super) fn next_base0_person_id(event: u64, rng: &mut Rng) -> u64 {
    let num_people = last_base0_person_id(event) + 1;
    let active = num_people.min(NUM_ACTIVE_PEOPLE);
    let n = rng.next_long(active + PERSON_ID_LEAD);
    num_people - active + n
}

pub(super) fn last_base0_auction_id(event: u64) -> u64 {
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

pub(super) fn next_base0_auction_id(event: u64, rng: &mut Rng) -> u64 {
    let max = last_base0_auction_id(event);
    let min = max.saturating_sub(NUM_IN_FLIGHT_AUCTIONS);
    min + rng.next_long(max - min + 1 + AUCTION_ID_LEAD)
}

pub(super) fn next_price(rng: &mut Rng) -> i64 {
    (10f64.powf(rng.next_double() * 6.0) * 100.0).round() as i64
}

pub(super) fn gen_bid(out: &mut Out, rng: &mut Rng, t: &Tables, n: u64, ts: i64) {
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

pub(super) fn gen_auction(
    out: &mut Out,
    rng: &mut Rng,
    t: &Tables,
    n: u64,
    ts: i64,
    horizon_ms: i64,
) {
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

pub(super) fn gen_person(out: &mut Out, rng: &mut Rng, t: &Tables, n: u64, ts: i64) {
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
pub(super) fn next_string(rng: &mut Rng, max_len: u64, special: u8, buf: &mut Vec<u8>) {
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
pub(super) fn next_extra<'t>(rng: &mut Rng, t: &'t Tables, current: usize, avg: usize) -> &'t [u8] {
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
pub(super) fn tables() -> Arc<Tables> {
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

pub(super) fn base_url(rng: &mut Rng) -> String {
    let mut b = b"https://www.nexmark.com/".to_vec();
    for _ in 0..3 {
        next_string(rng, 5, b'_', &mut b);
        b.push(b'/');
    }
    b.extend_from_slice(b"item.htm?query=1");
    String::from_utf8_lossy(&b).into_owned()
}

/// splitmix64, seeded per event so every event is a pure function of (seed, number).
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64, event: u64) -> Self {
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
pub(super) struct Out {
    ints: Vec<Option<Vec<i64>>>,
    strs: Vec<Option<(Vec<i32>, Vec<u8>)>>,
    scratch: Vec<u8>,
}

impl Out {
    pub(super) fn new(cols: &[(&str, Kind)], wanted: &[bool], rows: usize) -> Self {
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

    pub(super) fn finish(
        self,
        cols: &[(&str, Kind)],
    ) -> Result<Vec<Option<ArrayRef>>, ConnectorError> {
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
