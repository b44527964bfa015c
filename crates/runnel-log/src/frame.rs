//! On-disk batch frame: magic, version, length, CRC32C, then offset, count, timestamps and
//! the compactly encoded records. One `append` call writes exactly one frame.
//!
//! ```text
//! byte  0  magic        b"RN"
//!       2  version      u8 (1)
//!       3  length       u32 LE: bytes after the CRC field (flags .. end of payload)
//!       7  crc32c       u32 LE over those `length` bytes
//!      11  flags        u8 (0; reserved for transactional / control batches)
//!      12  base_offset  u64 LE
//!      20  count        u32 LE
//!      24  min_ts       i64 LE (append time, ms)
//!      32  max_ts       i64 LE
//!      40  payload      `count` records, each:
//!                         attrs u8 (bit 0: key present, bit 1: event time present)
//!                         ts_delta varint (timestamp - min_ts)
//!                         [event_time zigzag varint] [key_len varint, key]
//!                         value_len varint, value
//!                         header_count varint, (name_len varint, name utf-8, val_len varint, val)*
//! ```
//!
//! Everything after the CRC field is covered by the CRC; magic, version and length are
//! checked exactly, so any single corrupted byte is detected.

use crate::record::{Record, StoredRecord};

/// Frame magic bytes.
const MAGIC: [u8; 2] = *b"RN";
/// Current frame format version.
const VERSION: u8 = 1;
/// The first bytes of every frame, used to resync after damage.
pub(crate) const MAGIC_AND_VERSION: [u8; 3] = [MAGIC[0], MAGIC[1], VERSION];
/// Bytes before the payload.
pub(crate) const HEADER_LEN: usize = 40;
/// Bytes before the CRC-covered body.
const PREFIX_LEN: usize = 11;
/// Smallest legal `length` field (a body with no payload).
const MIN_BODY_LEN: usize = HEADER_LEN - PREFIX_LEN;
/// Largest frame we write or accept; bounds allocations when reading a corrupt length.
pub(crate) const MAX_FRAME_LEN: usize = 256 << 20;
/// Flag bits this version understands (none yet; transactions will add some).
const KNOWN_FLAGS: u8 = 0;

const ATTR_KEY: u8 = 1;
const ATTR_EVENT_TIME: u8 = 2;

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The buffer ends before the frame does; `needed` is the full frame length if known.
    Incomplete { needed: Option<usize> },
    /// The first two bytes are not `RN`.
    BadMagic,
    /// Unknown format version.
    BadVersion(u8),
    /// The length field is out of bounds.
    BadLength(u64),
    /// The stored CRC does not match the bytes.
    Crc { stored: u32, computed: u32 },
    /// CRC matched but the contents are inconsistent (written by a buggy or newer runnel).
    BadPayload(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Incomplete { needed: Some(n) } => {
                write!(f, "truncated batch (needs {n} bytes)")
            }
            FrameError::Incomplete { needed: None } => write!(f, "truncated batch header"),
            FrameError::BadMagic => write!(f, "bad magic (not a runnel batch)"),
            FrameError::BadVersion(v) => write!(f, "unknown batch format version {v}"),
            FrameError::BadLength(l) => write!(f, "batch length {l} out of range"),
            FrameError::Crc { stored, computed } => write!(
                f,
                "CRC32C mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            FrameError::BadPayload(m) => write!(f, "malformed batch payload: {m}"),
        }
    }
}

/// The fixed fields of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub flags: u8,
    pub base_offset: u64,
    pub count: u32,
    pub min_ts: i64,
    pub max_ts: i64,
    /// Total frame length in bytes, header included.
    pub frame_len: usize,
}

impl FrameHeader {
    /// One past the last offset in the frame.
    pub fn end_offset(&self) -> u64 {
        self.base_offset + u64::from(self.count)
    }
}

/// A CRC-checked frame borrowed from a buffer.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    pub header: FrameHeader,
    pub payload: &'a [u8],
}

/// Appends one frame holding `records` (offsets from `base_offset`, all stamped `timestamp`).
pub(crate) fn encode_frame(
    base_offset: u64,
    timestamp: i64,
    records: &[Record],
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    for r in records {
        let mut attrs = 0;
        if r.key.is_some() {
            attrs |= ATTR_KEY;
        }
        if r.event_time.is_some() {
            attrs |= ATTR_EVENT_TIME;
        }
        out.push(attrs);
        put_varint(out, 0); // every record of an append shares the batch timestamp
        if let Some(et) = r.event_time {
            put_varint(out, zigzag(et));
        }
        if let Some(k) = &r.key {
            put_bytes(out, k);
        }
        put_bytes(out, &r.value);
        put_varint(out, r.headers.len() as u64);
        for (name, val) in &r.headers {
            put_bytes(out, name.as_bytes());
            put_bytes(out, val);
        }
    }
    let frame_len = out.len() - start;
    let count = match u32::try_from(records.len()) {
        Ok(c) if frame_len <= MAX_FRAME_LEN => c,
        _ => {
            out.truncate(start);
            return Err(FrameError::BadLength(frame_len as u64));
        }
    };
    let f = &mut out[start..];
    f[0..2].copy_from_slice(&MAGIC);
    f[2] = VERSION;
    f[3..7].copy_from_slice(&((frame_len - PREFIX_LEN) as u32).to_le_bytes());
    f[11] = 0;
    f[12..20].copy_from_slice(&base_offset.to_le_bytes());
    f[20..24].copy_from_slice(&count.to_le_bytes());
    f[24..32].copy_from_slice(&timestamp.to_le_bytes());
    f[32..40].copy_from_slice(&timestamp.to_le_bytes());
    let crc = crc32c::crc32c(&f[PREFIX_LEN..]);
    f[7..11].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Checks magic, version and length of the frame starting at `buf[0]`; returns the
/// frame's total length. Does not check the CRC.
pub(crate) fn frame_len(buf: &[u8]) -> Result<usize, FrameError> {
    if buf.len() < PREFIX_LEN {
        // Still check what we have, so garbage is not mistaken for a short write.
        if !buf.is_empty() && buf[0] != MAGIC[0] || buf.len() >= 2 && buf[1] != MAGIC[1] {
            return Err(FrameError::BadMagic);
        }
        return Err(FrameError::Incomplete { needed: None });
    }
    if buf[0..2] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    if buf[2] != VERSION {
        return Err(FrameError::BadVersion(buf[2]));
    }
    let body = u32::from_le_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    if body < MIN_BODY_LEN || body + PREFIX_LEN > MAX_FRAME_LEN {
        return Err(FrameError::BadLength(body as u64));
    }
    Ok(body + PREFIX_LEN)
}

/// Validates the frame at the start of `buf` (magic, version, length, CRC, header sanity).
pub(crate) fn decode_frame(buf: &[u8]) -> Result<Frame<'_>, FrameError> {
    let len = frame_len(buf)?;
    if buf.len() < len {
        return Err(FrameError::Incomplete { needed: Some(len) });
    }
    let f = &buf[..len];
    let stored = u32::from_le_bytes([f[7], f[8], f[9], f[10]]);
    let computed = crc32c::crc32c(&f[PREFIX_LEN..]);
    if stored != computed {
        return Err(FrameError::Crc { stored, computed });
    }
    let flags = f[11];
    if flags & !KNOWN_FLAGS != 0 {
        return Err(FrameError::BadPayload(format!(
            "unknown flags {flags:#04x} (written by a newer runnel?)"
        )));
    }
    let header = FrameHeader {
        flags,
        base_offset: le_u64(&f[12..20]),
        count: u32::from_le_bytes([f[20], f[21], f[22], f[23]]),
        min_ts: le_u64(&f[24..32]) as i64,
        max_ts: le_u64(&f[32..40]) as i64,
        frame_len: len,
    };
    if header.min_ts > header.max_ts {
        return Err(FrameError::BadPayload(
            "min timestamp > max timestamp".into(),
        ));
    }
    if header
        .base_offset
        .checked_add(u64::from(header.count))
        .is_none()
    {
        return Err(FrameError::BadPayload("offset overflow".into()));
    }
    Ok(Frame {
        header,
        payload: &f[HEADER_LEN..],
    })
}

/// Decodes the records of `frame` with offset >= `from`, at most `max_records` of them and
/// stopping once `budget` bytes of data are used (but always at least one if `out` is empty).
/// Returns the remaining budget.
pub(crate) fn decode_records(
    frame: &Frame<'_>,
    from: u64,
    max_records: usize,
    mut budget: usize,
    out: &mut Vec<StoredRecord>,
) -> Result<usize, FrameError> {
    let h = &frame.header;
    let mut cur = Cursor {
        buf: frame.payload,
        pos: 0,
    };
    let mut stopped = false;
    for i in 0..u64::from(h.count) {
        let offset = h.base_offset + i;
        let attrs = cur.byte()?;
        if attrs & !(ATTR_KEY | ATTR_EVENT_TIME) != 0 {
            return Err(FrameError::BadPayload(format!(
                "unknown record attributes {attrs:#04x}"
            )));
        }
        let delta = cur.varint()?;
        let timestamp = i64::try_from(delta)
            .ok()
            .and_then(|d| h.min_ts.checked_add(d))
            .filter(|t| *t <= h.max_ts)
            .ok_or_else(|| FrameError::BadPayload("record timestamp outside batch range".into()))?;
        let event_time = if attrs & ATTR_EVENT_TIME != 0 {
            Some(unzigzag(cur.varint()?))
        } else {
            None
        };
        let key = if attrs & ATTR_KEY != 0 {
            Some(cur.slice()?)
        } else {
            None
        };
        let value = cur.slice()?;
        let n_headers = cur.varint()?;
        let mut headers = Vec::new();
        for _ in 0..n_headers {
            let name = cur.slice()?;
            let name = std::str::from_utf8(name)
                .map_err(|_| FrameError::BadPayload("header name is not UTF-8".into()))?;
            headers.push((name, cur.slice()?));
        }
        if offset < from || out.len() >= max_records || stopped {
            continue;
        }
        let size = key.map_or(0, <[u8]>::len)
            + value.len()
            + headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if size > budget && !out.is_empty() {
            stopped = true;
            budget = 0;
            continue;
        }
        budget = budget.saturating_sub(size);
        out.push(StoredRecord {
            offset,
            timestamp,
            key: key.map(<[u8]>::to_vec),
            value: value.to_vec(),
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_vec()))
                .collect(),
            event_time,
        });
    }
    if cur.pos != cur.buf.len() {
        return Err(FrameError::BadPayload(format!(
            "{} trailing bytes after {} records",
            cur.buf.len() - cur.pos,
            h.count
        )));
    }
    Ok(budget)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Bounds-checked reader over a payload.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Result<u8, FrameError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| FrameError::BadPayload("payload ends inside a record".into()))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, FrameError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(FrameError::BadPayload("varint longer than 10 bytes".into()))
    }

    fn slice(&mut self) -> Result<&'a [u8], FrameError> {
        let len = self.varint()?;
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= self.buf.len() - self.pos)
            .ok_or_else(|| FrameError::BadPayload("field length beyond payload".into()))?;
        let s = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            proptest::collection::vec(any::<u8>(), 0..200),
            proptest::collection::vec(
                ("[a-z]{0,8}", proptest::collection::vec(any::<u8>(), 0..10)),
                0..3,
            ),
            proptest::option::of(any::<i64>()),
        )
            .prop_map(|(key, value, headers, event_time)| Record {
                key,
                value,
                headers,
                event_time,
            })
    }

    fn decode_all(buf: &[u8]) -> Result<(FrameHeader, Vec<StoredRecord>), FrameError> {
        let frame = decode_frame(buf)?;
        let mut out = Vec::new();
        decode_records(&frame, 0, usize::MAX, usize::MAX, &mut out)?;
        Ok((frame.header, out))
    }

    proptest! {
        #[test]
        fn frame_round_trips(
            records in proptest::collection::vec(arb_record(), 0..8),
            base in 0u64..u64::MAX / 2,
            ts in any::<i64>(),
        ) {
            let mut buf = Vec::new();
            encode_frame(base, ts, &records, &mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(frame_len(&buf), Ok(buf.len()));
            let (h, out) = decode_all(&buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(h.base_offset, base);
            prop_assert_eq!(h.count as usize, records.len());
            prop_assert_eq!(h.frame_len, buf.len());
            prop_assert_eq!(out.len(), records.len());
            for (i, (got, want)) in out.into_iter().zip(records).enumerate() {
                prop_assert_eq!(got.offset, base + i as u64);
                prop_assert_eq!(got.timestamp, ts);
                prop_assert_eq!(got.into_record(), want);
            }
        }

        #[test]
        fn any_single_byte_corruption_is_detected(
            records in proptest::collection::vec(arb_record(), 1..4),
            pos_seed in any::<usize>(),
            xor in 1u8..=255,
        ) {
            let mut buf = Vec::new();
            encode_frame(7, 1_700_000_000_000, &records, &mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let pos = pos_seed % buf.len();
            buf[pos] ^= xor;
            prop_assert!(decode_all(&buf).is_err(), "corruption at byte {} not detected", pos);
        }

        #[test]
        fn every_proper_prefix_is_incomplete_or_invalid(
            records in proptest::collection::vec(arb_record(), 1..4),
            cut_seed in any::<usize>(),
        ) {
            let mut buf = Vec::new();
            encode_frame(0, 5, &records, &mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let cut = cut_seed % buf.len();
            prop_assert!(decode_frame(&buf[..cut]).is_err());
        }
    }

    #[test]
    fn budget_returns_at_least_one_record() {
        let recs = vec![
            Record::from_value(vec![1u8; 100]),
            Record::from_value(vec![2u8; 100]),
        ];
        let mut buf = Vec::new();
        encode_frame(10, 1, &recs, &mut buf).unwrap();
        let frame = decode_frame(&buf).unwrap();
        let mut out = Vec::new();
        decode_records(&frame, 10, 10, 50, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        let mut out = Vec::new();
        decode_records(&frame, 11, 10, 1000, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].offset, 11);
    }
}
