//! The packed encoding of a version vector: how vectors are stored and sent.
//!
//! A vector with thousands of origins is sent with every sync request and
//! kept by every store, so its bytes matter (workload 5 of the benchmark
//! suite: one entry per writer). Entries are sorted by peer id and ids are
//! 64 random bits, so the gaps between consecutive ids are close to
//! geometric: Golomb-Rice coding them costs about `log2(2^64 / n) + 1.5`
//! bits, against 64 for the raw id. HLCs are split as `hlc.rs` packs them,
//! wall milliseconds and logical counter: walls are coded as offsets from
//! the vector's smallest wall (writes of one mesh happen within a short
//! span of each other), logical counters as they are (mostly 0). Each of
//! the three columns picks its own coding per vector (all zero, fixed
//! width, or Rice with parameter k), whichever is shortest for that
//! vector's values, and names it in a 7-bit header field. The bit layout
//! is in `docs/format.md` ("Packed version vectors").
//!
//! Decoding takes hostile bytes: every field is bounds-checked, the entry
//! count is checked against the bits left before anything is allocated,
//! and errors name the bit where decoding stopped. The encoding is
//! canonical (padding bits are zero, nothing follows), so equal vectors
//! have equal bytes.

use super::VersionVector;
use crate::hlc::{Hlc, PeerId};
use std::fmt;

/// The encoding's version, the first 4 bits of every packed vector.
pub const FORMAT: u8 = 1;

const FORMAT_BITS: u32 = 4;
const PARAM_BITS: u32 = 7;
const WALL_BITS: u32 = 48;
const LOGICAL_BITS: u32 = 16;
const WALL_MAX: u64 = (1 << WALL_BITS) - 1;
const LOGICAL_MAX: u64 = (1 << LOGICAL_BITS) - 1;
/// Column parameter: every value is 0, and takes no bits.
const P_ZERO: u8 = 0;
/// Column parameters `1..=64`: fixed width of that many bits.
const P_FIXED_MAX: u8 = 64;
/// Column parameters `65..=127`: Rice coding with `k = p - 65`.
const P_RICE_BASE: u8 = 65;
const RICE_K_MAX: u32 = 62;

/// One of the three per-entry fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    /// Peer ids, as gaps to the previous one.
    Peer,
    /// HLC wall milliseconds, as offsets from the smallest.
    Wall,
    /// HLC logical counters.
    Logical,
}

/// Why bytes are not a packed version vector.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PackedVvError {
    /// The bytes end inside a field that starts at bit `bit`.
    Truncated {
        /// Bit offset where the field starts.
        bit: u64,
    },
    /// A version of the encoding this build does not read.
    UnknownFormat {
        /// The version found.
        found: u8,
    },
    /// The entry count needs more bits than are left.
    TooManyEntries {
        /// Entries claimed.
        count: u64,
        /// Most entries the remaining bits can hold.
        max: u64,
    },
    /// A column parameter that is not allowed for its column.
    BadParam {
        /// Which column.
        column: Column,
        /// The parameter found.
        param: u8,
    },
    /// A value does not fit its field (a Rice quotient past 64 bits, a
    /// peer id past `u64::MAX`, a wall past 48 bits, a logical counter
    /// past 16).
    Overflow {
        /// Which column.
        column: Column,
        /// The entry (0 for header fields).
        entry: u64,
        /// Bit offset of the value.
        bit: u64,
    },
    /// An entry whose HLC is zero (a vector has no such entry).
    ZeroHlc {
        /// The entry.
        entry: u64,
    },
    /// The bits padding the last byte are not zero.
    NonZeroPadding {
        /// Bit offset of the padding.
        bit: u64,
    },
    /// Whole bytes after the encoding's end.
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

impl fmt::Display for PackedVvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackedVvError::Truncated { bit } => write!(f, "packed version vector truncated in the field at bit {bit}"),
            PackedVvError::UnknownFormat { found } => {
                write!(
                    f,
                    "packed version vector format {found} is unknown (this build reads {FORMAT})"
                )
            }
            PackedVvError::TooManyEntries { count, max } => {
                write!(
                    f,
                    "packed version vector claims {count} entries, its bits hold at most {max}"
                )
            }
            PackedVvError::BadParam { column, param } => {
                write!(
                    f,
                    "packed version vector: parameter {param} is not allowed for the {column:?} column"
                )
            }
            PackedVvError::Overflow { column, entry, bit } => write!(
                f,
                "packed version vector: {column:?} value of entry {entry} at bit {bit} is out of range"
            ),
            PackedVvError::ZeroHlc { entry } => write!(f, "packed version vector: entry {entry} has a zero HLC"),
            PackedVvError::NonZeroPadding { bit } => {
                write!(f, "packed version vector: padding bits from bit {bit} are not zero")
            }
            PackedVvError::TrailingBytes { count } => {
                write!(f, "packed version vector: {count} bytes after its end")
            }
        }
    }
}

impl std::error::Error for PackedVvError {}

/// How one column is coded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coding {
    Zero,
    Fixed(u32),
    Rice(u32),
}

impl Coding {
    fn param(self) -> u8 {
        match self {
            Coding::Zero => P_ZERO,
            Coding::Fixed(w) => w as u8,
            Coding::Rice(k) => P_RICE_BASE + k as u8,
        }
    }

    fn of_param(p: u8) -> Coding {
        match p {
            P_ZERO => Coding::Zero,
            1..=P_FIXED_MAX => Coding::Fixed(u32::from(p)),
            _ => Coding::Rice(u32::from(p - P_RICE_BASE)),
        }
    }

    /// Fewest bits one value takes.
    fn min_bits(self) -> u64 {
        match self {
            Coding::Zero => 0,
            Coding::Fixed(w) => u64::from(w),
            Coding::Rice(k) => u64::from(k) + 1,
        }
    }

    /// The shortest coding of `values` (`zero_ok`: whether the all-zero
    /// coding may be used). Two passes: sum and maximum first, then the
    /// exact Rice cost of the few parameters near the mean's log.
    fn choose(values: &[u64], zero_ok: bool) -> Coding {
        let n = values.len() as u64;
        let (mut sum, mut max) = (0u128, 0u64);
        for &v in values {
            sum += u128::from(v);
            max = max.max(v);
        }
        if max == 0 && zero_ok {
            return Coding::Zero;
        }
        let width = (64 - max.leading_zeros()).max(1);
        let mut best = (u128::from(n) * u128::from(width), Coding::Fixed(width));
        let mean = (sum / u128::from(n.max(1))) as u64;
        let centre = 63u32.saturating_sub(mean.max(1).leading_zeros());
        let ks: [u32; 4] = std::array::from_fn(|i| (centre + i as u32).saturating_sub(2).min(RICE_K_MAX));
        // Every quotient sum is at most `sum`: when that fits 64 bits (the
        // usual case; a peer column's gaps add up to its largest id),
        // 64-bit adds suffice.
        let quotients: [u128; 4] = match u64::try_from(sum) {
            Ok(_) => quotient_sums::<u64>(values, &ks).map(u128::from),
            Err(_) => quotient_sums::<u128>(values, &ks),
        };
        for (q, &k) in quotients.iter().zip(&ks) {
            let bits = q + u128::from(n) * u128::from(k + 1);
            if bits < best.0 {
                best = (bits, Coding::Rice(k));
            }
        }
        best.1
    }
}

/// For each Rice parameter `k` of `ks`, the sum of `v >> k` over `values`
/// (the unary parts' bits), added in `T`: the caller picks a `T` wide
/// enough for the sum of `values`.
fn quotient_sums<T: From<u64> + std::ops::AddAssign + Copy + Default>(values: &[u64], ks: &[u32; 4]) -> [T; 4] {
    let mut sums = [T::default(); 4];
    for &v in values {
        for (q, &k) in sums.iter_mut().zip(ks) {
            *q += T::from(v >> k);
        }
    }
    sums
}

/// Bits, most significant first, into bytes. Bits gather in a 64-bit word
/// (from its top down) that goes out whole when full, so a value costs a
/// shift and an or, and the output grows 8 bytes at a time.
struct BitWriter {
    out: Vec<u8>,
    /// Pending bits, left-aligned: the first `used` bits from the top.
    acc: u64,
    /// Bits pending in `acc`, fewer than 64 between calls.
    used: u32,
}

impl BitWriter {
    /// A writer with room for `bytes` of output.
    fn with_capacity(bytes: usize) -> Self {
        BitWriter {
            out: Vec::with_capacity(bytes),
            acc: 0,
            used: 0,
        }
    }

    /// Appends the low `n` bits of `v` (`n <= 64`).
    #[inline]
    fn put(&mut self, v: u64, n: u32) {
        debug_assert!(n <= 64 && (n == 64 || v >> n == 0));
        debug_assert!(self.used < 64);
        if n == 0 {
            return;
        }
        let free = 64 - self.used;
        if n < free {
            self.acc |= v << (free - n);
            self.used += n;
        } else {
            // The word fills: its last `free` bits are the top of `v`, and
            // the `rest` low bits of `v` start the next word.
            let rest = n - free;
            self.acc |= v >> rest;
            self.out.extend_from_slice(&self.acc.to_be_bytes());
            self.acc = if rest == 0 { 0 } else { v << (64 - rest) };
            self.used = rest;
        }
    }

    fn zeros(&mut self, mut n: u64) {
        while n > 0 {
            let step = n.min(64) as u32;
            self.put(0, step);
            n -= u64::from(step);
        }
    }

    #[inline]
    fn value(&mut self, v: u64, coding: Coding) {
        match coding {
            Coding::Zero => {}
            Coding::Fixed(w) => self.put(v, w),
            Coding::Rice(k) => {
                let (q, low) = (v >> k, v & ((1 << k) - 1));
                if q < 64 && q as u32 + 1 + k <= 64 {
                    // The quotient's zeros, its stop bit and the low bits
                    // as one field: the stop bit is its leading 1.
                    self.put((1 << k) | low, q as u32 + 1 + k);
                } else {
                    self.zeros(q);
                    self.put(1, 1);
                    self.put(low, k);
                }
            }
        }
    }

    fn finish(mut self) -> Vec<u8> {
        let bytes = self.used.div_ceil(8) as usize;
        self.out.extend_from_slice(&self.acc.to_be_bytes()[..bytes]);
        self.out
    }
}

/// Reads bits most significant first; every read is bounds-checked.
struct BitReader<'a> {
    bytes: &'a [u8],
    bit: u64,
    total: u64,
}

impl BitReader<'_> {
    /// The 64 bits from `self.bit` on (zeros past the end).
    fn window(&self) -> u64 {
        let byte = (self.bit / 8) as usize;
        if let Some(&[a, b, c, d, e, f, g, h, ninth]) = self.bytes.get(byte..byte + 9) {
            // Away from the end (most reads): two loads, no copy.
            let w = u64::from_be_bytes([a, b, c, d, e, f, g, h]);
            return match (self.bit % 8) as u32 {
                0 => w,
                s => (w << s) | (u64::from(ninth) >> (8 - s)),
            };
        }
        let mut buf = [0u8; 8];
        let have = self.bytes.len().saturating_sub(byte).min(8);
        buf[..have].copy_from_slice(&self.bytes[byte..byte + have]);
        let w = u64::from_be_bytes(buf) << (self.bit % 8);
        // The up to 7 bits shifted out are taken from the 9th byte.
        match (self.bit % 8, self.bytes.get(byte + 8)) {
            (0, _) | (_, None) => w,
            (s, Some(&b)) => w | (u64::from(b) >> (8 - s)),
        }
    }

    fn left(&self) -> u64 {
        self.total - self.bit
    }

    /// `n` bits (`n <= 64`) as a number.
    fn get(&mut self, n: u32) -> Result<u64, PackedVvError> {
        if n == 0 {
            return Ok(0);
        }
        if u64::from(n) > self.left() {
            return Err(PackedVvError::Truncated { bit: self.bit });
        }
        let v = self.window() >> (64 - n);
        self.bit += u64::from(n);
        Ok(v)
    }

    /// A run of zeros ended by a one: its length. Longer than `max` is
    /// an overflow of `column`.
    fn unary(&mut self, max: u64, column: Column, entry: u64) -> Result<u64, PackedVvError> {
        let start = self.bit;
        let mut q = 0u64;
        loop {
            if self.left() == 0 {
                return Err(PackedVvError::Truncated { bit: start });
            }
            let zeros = u64::from(self.window().leading_zeros()).min(self.left());
            if zeros < 64 && zeros < self.left() {
                q += zeros;
                self.bit += zeros + 1;
                break;
            }
            q += zeros;
            self.bit += zeros;
            if q > max {
                break;
            }
        }
        if q > max {
            return Err(PackedVvError::Overflow {
                column,
                entry,
                bit: start,
            });
        }
        Ok(q)
    }

    fn value(&mut self, coding: Coding, column: Column, entry: u64) -> Result<u64, PackedVvError> {
        match coding {
            Coding::Zero => Ok(0),
            Coding::Fixed(w) => self.get(w),
            Coding::Rice(k) => {
                let q = self.unary(u64::MAX >> k, column, entry)?;
                Ok((q << k) | self.get(k)?)
            }
        }
    }

    /// An Elias-gamma code of a number at least 1.
    fn gamma(&mut self) -> Result<u64, PackedVvError> {
        let start = self.bit;
        let zeros = self.unary(63, Column::Peer, 0).map_err(|e| match e {
            PackedVvError::Overflow { .. } => PackedVvError::TooManyEntries {
                count: u64::MAX,
                max: self.left(),
            },
            e => e,
        })?;
        let rest = self
            .get(zeros as u32)
            .map_err(|_| PackedVvError::Truncated { bit: start })?;
        Ok((1 << zeros) | rest)
    }
}

/// Appends the Elias-gamma code of `v >= 1`.
fn put_gamma(w: &mut BitWriter, v: u64) {
    debug_assert!(v >= 1);
    let len = 64 - v.leading_zeros();
    w.zeros(u64::from(len - 1));
    w.put(v, len);
}

/// Encodes `vv`.
pub fn encode(vv: &VersionVector) -> Vec<u8> {
    encode_runs(vv.entries(), &[])
}

/// Encodes `vv` without the entry of `peer` (without copying the rest).
pub fn encode_except(vv: &VersionVector, peer: PeerId) -> Vec<u8> {
    match vv.find(peer) {
        Ok(i) => encode_runs(&vv.entries()[..i], &vv.entries()[i + 1..]),
        Err(_) => encode(vv),
    }
}

/// Encodes the entries of two sorted runs, every peer of `a` below every
/// peer of `b`.
fn encode_runs(a: &[(PeerId, Hlc)], b: &[(PeerId, Hlc)]) -> Vec<u8> {
    debug_assert!(a.last().zip(b.first()).is_none_or(|(x, y)| x.0 < y.0));
    let n = a.len() + b.len();
    let mut w = BitWriter::with_capacity(8 + n * 8);
    w.put(u64::from(FORMAT), FORMAT_BITS);
    put_gamma(&mut w, n as u64 + 1);
    if n == 0 {
        return w.finish();
    }
    // The three columns, worked out once (each is read three times:
    // to choose its coding, twice, and to write it).
    let base_wall = a.iter().chain(b).map(|&(_, h)| h.wall_ms()).min().unwrap_or(0);
    let mut columns = vec![0u64; 3 * n];
    let (gaps, rest) = columns.split_at_mut(n);
    let (walls, logicals) = rest.split_at_mut(n);
    let mut prev: Option<u64> = None;
    for (i, &(p, h)) in a.iter().chain(b).enumerate() {
        gaps[i] = prev.map_or(p.0, |q| p.0 - q - 1);
        prev = Some(p.0);
        walls[i] = h.wall_ms() - base_wall;
        logicals[i] = u64::from(h.logical());
    }
    let peer = Coding::choose(gaps, false);
    let wall = Coding::choose(walls, true);
    let logical = Coding::choose(logicals, true);
    w.put(u64::from(peer.param()), PARAM_BITS);
    w.put(u64::from(wall.param()), PARAM_BITS);
    w.put(u64::from(logical.param()), PARAM_BITS);
    w.put(base_wall, WALL_BITS);
    for i in 0..n {
        w.value(gaps[i], peer);
        w.value(walls[i], wall);
        w.value(logicals[i], logical);
    }
    w.finish()
}

/// Decodes a vector encoded by [`encode`]: exactly `bytes`, nothing after.
pub fn decode(bytes: &[u8]) -> Result<VersionVector, PackedVvError> {
    let mut r = BitReader {
        bytes,
        bit: 0,
        total: bytes.len() as u64 * 8,
    };
    let format = r.get(FORMAT_BITS)? as u8;
    if format != FORMAT {
        return Err(PackedVvError::UnknownFormat { found: format });
    }
    let n = r.gamma()? - 1;
    let mut entries = Vec::new();
    if n > 0 {
        let param = |r: &mut BitReader<'_>| r.get(PARAM_BITS).map(|p| Coding::of_param(p as u8));
        let (peer, wall, logical) = (param(&mut r)?, param(&mut r)?, param(&mut r)?);
        if peer == Coding::Zero {
            return Err(PackedVvError::BadParam {
                column: Column::Peer,
                param: P_ZERO,
            });
        }
        let base_bit = r.bit;
        let base_wall = r.get(WALL_BITS)?;
        // Every entry takes at least one bit (its peer gap's), so the
        // count is bounded by the input before anything is allocated.
        let per_entry = peer.min_bits() + wall.min_bits() + logical.min_bits();
        let max = r.left() / per_entry;
        if n > max {
            return Err(PackedVvError::TooManyEntries { count: n, max });
        }
        entries.reserve_exact(n as usize);
        let mut prev: Option<u64> = None;
        for i in 0..n {
            let bit = r.bit;
            let gap = r.value(peer, Column::Peer, i)?;
            let id = match prev {
                None => Some(gap),
                Some(q) => q.checked_add(gap).and_then(|v| v.checked_add(1)),
            }
            .ok_or(PackedVvError::Overflow {
                column: Column::Peer,
                entry: i,
                bit,
            })?;
            prev = Some(id);
            let bit = r.bit;
            let wall_ms = r
                .value(wall, Column::Wall, i)?
                .checked_add(base_wall)
                .filter(|&w| w <= WALL_MAX)
                .ok_or(PackedVvError::Overflow {
                    column: Column::Wall,
                    entry: i,
                    bit: if i == 0 { base_bit } else { bit },
                })?;
            let bit = r.bit;
            let l = r.value(logical, Column::Logical, i)?;
            if l > LOGICAL_MAX {
                return Err(PackedVvError::Overflow {
                    column: Column::Logical,
                    entry: i,
                    bit,
                });
            }
            let hlc = Hlc::new(wall_ms, l as u16);
            if hlc == Hlc::ZERO {
                return Err(PackedVvError::ZeroHlc { entry: i });
            }
            entries.push((PeerId(id), hlc));
        }
    }
    let pad = r.left();
    if pad >= 8 {
        return Err(PackedVvError::TrailingBytes {
            count: (pad / 8) as usize,
        });
    }
    let at = r.bit;
    if r.get(pad as u32)? != 0 {
        return Err(PackedVvError::NonZeroPadding { bit: at });
    }
    Ok(VersionVector::from_sorted(entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(entries: &[(u64, u64)]) -> VersionVector {
        entries.iter().map(|&(p, h)| (PeerId(p), Hlc(h))).collect()
    }

    fn round_trip(v: &VersionVector) -> Vec<u8> {
        let bytes = encode(v);
        assert_eq!(decode(&bytes).as_ref(), Ok(v), "{bytes:02x?}");
        bytes
    }

    #[test]
    fn empty_is_one_byte() {
        assert_eq!(round_trip(&VersionVector::new()), vec![(FORMAT << 4) | 0b1000]);
    }

    #[test]
    fn edge_vectors_round_trip() {
        let max_hlc = Hlc::new(WALL_MAX, u16::MAX).0;
        for v in [
            vv(&[(0, 1)]),
            vv(&[(u64::MAX, max_hlc)]),
            vv(&[(0, max_hlc), (u64::MAX, 1)]),
            vv(&[(u64::MAX - 1, 7), (u64::MAX, 7)]),
            vv(&[(1, 5 << 16), (2, 5 << 16), (3, 5 << 16)]),
            vv(&[(9, 1), (10, 2), (11, 3), (1 << 40, 65_535)]),
            (0..1000u64).map(|i| (PeerId(i), Hlc(1))).collect(),
        ] {
            round_trip(&v);
        }
    }

    #[test]
    fn one_entry_is_smaller_than_as_a_postcard_map() {
        // Postcard: count (1), peer varint (10), HLC varint (9).
        let bytes = round_trip(&vv(&[(0xDEAD_BEEF_0123_4567, Hlc::new(1_800_000_000_000, 3).0)]));
        assert_eq!(bytes.len(), 18);
    }

    #[test]
    fn consecutive_equal_entries_take_a_bit_each() {
        let v: VersionVector = (0..800u64).map(|i| (PeerId(i), Hlc(1 << 16))).collect();
        // Header 4 + 19 + 21 + 48 bits, then 800 one-bit gaps.
        assert_eq!(round_trip(&v).len(), 112);
    }

    #[test]
    fn rejects_bad_bytes_with_reasons() {
        assert_eq!(decode(&[]), Err(PackedVvError::Truncated { bit: 0 }));
        assert_eq!(decode(&[0x28]), Err(PackedVvError::UnknownFormat { found: 2 }));
        let mut one = encode(&vv(&[(5, 9)]));
        one.push(0);
        assert_eq!(decode(&one), Err(PackedVvError::TrailingBytes { count: 1 }));
        // Empty, with a padding bit set.
        assert_eq!(decode(&[0x19]), Err(PackedVvError::NonZeroPadding { bit: 5 }));
        // A count of 2^40 - 1 in a few bytes.
        let mut w = BitWriter::with_capacity(0);
        w.put(u64::from(FORMAT), FORMAT_BITS);
        put_gamma(&mut w, 1 << 40);
        w.put(u64::from(P_RICE_BASE), PARAM_BITS);
        w.put(0, PARAM_BITS);
        w.put(0, PARAM_BITS);
        w.put(0, WALL_BITS);
        w.put(0xFF, 8);
        assert!(matches!(
            decode(&w.finish()),
            Err(PackedVvError::TooManyEntries { count, .. }) if count == (1 << 40) - 1
        ));
        // An all-zero peer column.
        let mut zero_peers = encode(&vv(&[(0, 1)]));
        zero_peers[0] = 0x14; // format 1 (`0001`), count 1 (`010`), then the peer parameter
        zero_peers[1] = 0;
        assert_eq!(
            decode(&zero_peers),
            Err(PackedVvError::BadParam {
                column: Column::Peer,
                param: P_ZERO
            })
        );
        // A zero HLC: one entry at peer 0, fixed-width 1 columns, wall 0.
        let mut w = BitWriter::with_capacity(0);
        w.put(u64::from(FORMAT), FORMAT_BITS);
        put_gamma(&mut w, 2);
        for _ in 0..3 {
            w.put(1, PARAM_BITS);
        }
        w.put(0, WALL_BITS);
        w.put(0, 3);
        assert_eq!(decode(&w.finish()), Err(PackedVvError::ZeroHlc { entry: 0 }));
    }

    #[test]
    fn every_prefix_of_a_vector_fails_cleanly() {
        let v: VersionVector = (0..50u64)
            .map(|i| {
                (
                    PeerId(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                    Hlc((1_000 + i * 7) << 16 | i),
                )
            })
            .collect();
        let bytes = round_trip(&v);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "{cut}");
        }
    }
}
