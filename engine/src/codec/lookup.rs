//! Reading one field of a stored document straight from its bytes.
//!
//! A query filters and sorts on a few fields of many documents, and building
//! every document to read three of its fields was most of a scan's cost.
//! [`lookup_field`] walks the slots once without allocating, stops as soon
//! as the field's place in the sorted slot order is passed, and answers only
//! where the bytes alone are certain: a *plain* field, a register whose
//! ancestors are object markers no newer than it, with no counter and
//! nothing stored below it. Anything else (a deleted document, a counter, an
//! object assembled from several slots, a shadowed write) is
//! [`Lookup::Unknown`], and the caller renders the document instead. A
//! property test holds every answer to what rendering gives.
//!
//! Skipped values are not validated (their UTF-8 or float bits): the
//! record's checksum was verified before, and full decoding validates.

use super::{malformed, CodecError, Reader};
use crate::hlc::{Hlc, PeerId, Stamp};
use crate::value::{Value, MAX_DEPTH};
use std::cmp::Ordering;

/// What a field lookup found.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    /// The field's value.
    Value(Value),
    /// The document has no such field (or it is not visible).
    Missing,
    /// The bytes alone cannot say: render the document.
    Unknown,
}

/// Interning tables larger than this are left to the full decoder, so the
/// lookup needs no allocation.
pub(super) const MAX_INTERNED: usize = 32;

/// Where the interning tables of a small, undeleted document body are,
/// checked once. Stamps are decoded when a comparison needs one: most
/// lookups compare none (a top-level field has no ancestor to be shadowed
/// by), and a header this small is cheap to move around with its row.
#[derive(Clone, Copy, Debug)]
pub(super) struct Header {
    /// Position of the first peer.
    peers_at: usize,
    peer_count: usize,
    /// Position of the first stamp.
    stamps_at: usize,
    count: usize,
}

impl Header {
    /// Whether `i` is a stamp index of this document.
    #[inline]
    fn check(&self, i: u32) -> Result<(), CodecError> {
        if (i as usize) < self.count {
            Ok(())
        } else {
            Err(malformed("stamp index"))
        }
    }

    /// Stamp `i` of the document whose body is `body`.
    fn stamp(&self, body: &[u8], i: u32) -> Result<Stamp, CodecError> {
        self.check(i)?;
        let mut r = Reader {
            buf: body,
            pos: self.stamps_at,
        };
        for _ in 0..i {
            r.varint()?;
            r.varint()?;
        }
        let hlc = Hlc(r.varint()?);
        let p = r.u32()?;
        if p as usize >= self.peer_count {
            return Err(malformed("peer index"));
        }
        let mut peers = Reader {
            buf: body,
            pos: self.peers_at,
        };
        for _ in 0..p {
            peers.varint()?;
        }
        Ok(Stamp {
            hlc,
            peer: PeerId(peers.varint()?),
        })
    }

    /// Every stamp, decoded into `out`.
    pub(super) fn stamps<'s>(
        &self,
        body: &[u8],
        out: &'s mut [Stamp; MAX_INTERNED],
    ) -> Result<&'s [Stamp], CodecError> {
        let mut peers = [0u64; MAX_INTERNED];
        let mut r = Reader {
            buf: body,
            pos: self.peers_at,
        };
        for p in peers.iter_mut().take(self.peer_count) {
            *p = r.varint()?;
        }
        r.pos = self.stamps_at;
        for s in out.iter_mut().take(self.count) {
            let hlc = Hlc(r.varint()?);
            let p = r.u32()? as usize;
            let peer = *peers[..self.peer_count].get(p).ok_or_else(|| malformed("peer index"))?;
            *s = Stamp {
                hlc,
                peer: PeerId(peer),
            };
        }
        Ok(&out[..self.count])
    }
}

/// Reads and checks the interning tables, the version vector and the
/// deletion flag; `None` when the document is deleted or its tables are
/// large (the reader is then somewhere in the header).
pub(super) fn read_header(r: &mut Reader<'_>) -> Result<Option<Header>, CodecError> {
    let peer_count = r.len()?;
    if peer_count > MAX_INTERNED {
        return Ok(None);
    }
    let peers_at = r.pos;
    for _ in 0..peer_count {
        r.varint()?;
    }
    let count = r.len()?;
    if count > MAX_INTERNED {
        return Ok(None);
    }
    let stamps_at = r.pos;
    for _ in 0..count {
        r.varint()?;
        if r.u32()? as usize >= peer_count {
            return Err(malformed("peer index"));
        }
    }
    for _ in 0..r.len()? {
        r.u32()?;
        r.varint()?;
    }
    if r.bool()? {
        return Ok(None);
    }
    Ok(Some(Header {
        peers_at,
        peer_count,
        stamps_at,
        count,
    }))
}

/// A document body with its header read once, for several lookups.
pub struct FieldReader<'a> {
    body: &'a [u8],
    /// `None`: deleted, or tables too large; every answer is `Unknown`.
    header: Option<Header>,
    /// Where the slots start.
    slots_at: usize,
}

impl<'a> FieldReader<'a> {
    /// Reads the header of a document body.
    pub fn new(body: &'a [u8]) -> Result<FieldReader<'a>, CodecError> {
        let mut r = Reader { buf: body, pos: 0 };
        let header = read_header(&mut r)?;
        Ok(FieldReader {
            body,
            header,
            slots_at: r.pos,
        })
    }

    /// Whether the document is visible, when the bytes say so plainly (not
    /// deleted, a root object marker); `None`: render it to know.
    pub fn plainly_visible(&self) -> Result<Option<bool>, CodecError> {
        if self.header.is_none() {
            return Ok(None);
        }
        let mut r = Reader {
            buf: self.body,
            pos: self.slots_at,
        };
        if r.len()? == 0 {
            return Ok(Some(false));
        }
        // The first slot must be the root (a document built only from
        // remote field writes has none), then an object marker alone.
        if (r.u32()?, r.len()?) != (0, 0) {
            return Ok(None);
        }
        let marker = r.bool()? && {
            r.u32()?;
            r.varint()? == REG_OBJECT
        };
        Ok((marker && !r.bool()?).then_some(true))
    }

    /// The value of the field at `keys` (a path of object keys, at least one).
    pub fn lookup(&self, keys: &[&str]) -> Result<Lookup, CodecError> {
        self.lookup_from(keys, true)
    }

    /// [`FieldReader::lookup`], with [`plain_start`] or from the first slot.
    fn lookup_from(&self, keys: &[&str], skip_plain: bool) -> Result<Lookup, CodecError> {
        assert!(
            !keys.is_empty() && keys.len() <= MAX_DEPTH,
            "lookup of {} keys",
            keys.len()
        );
        let Some(header) = &self.header else {
            return Ok(Lookup::Unknown);
        };
        let mut r = Reader {
            buf: self.body,
            pos: self.slots_at,
        };
        walk(&mut r, header, keys, skip_plain)
    }
}

/// Whether a document body is visible, when the bytes say so plainly.
pub fn plainly_visible(body: &[u8]) -> Result<Option<bool>, CodecError> {
    FieldReader::new(body)?.plainly_visible()
}

use super::{REG_ABSENT, REG_ATTACHMENT, REG_OBJECT, REG_VALUE};

/// The value of the field at `keys` (a path of object keys, at least one).
pub fn lookup_field(body: &[u8], keys: &[&str]) -> Result<Lookup, CodecError> {
    FieldReader::new(body)?.lookup(keys)
}

/// [`lookup_field`] walking every slot from the first (no
/// [`plain_start`]): tests hold the two to the same answers, damaged
/// bodies included.
#[doc(hidden)]
pub fn lookup_field_from_first_slot(body: &[u8], keys: &[&str]) -> Result<Lookup, CodecError> {
    FieldReader::new(body)?.lookup_from(keys, false)
}

/// Walks the slots from `r` to the field at `keys`, from the first slot or
/// (`skip_plain`) from where [`plain_start`] says.
fn walk(r: &mut Reader<'_>, header: &Header, keys: &[&str], skip_plain: bool) -> Result<Lookup, CodecError> {
    let body = r.buf;
    let target = keys.len();
    let mut depth = 0usize;
    // Leading keys of the current path equal to `keys`.
    let mut matched = 0usize;
    // The newest register above the field: older writes below it are
    // hidden.
    let mut shadow = Shadow::None;
    let mut found: Option<Lookup> = None;
    let slots = r.len()?;
    let mut first = 0;
    let start = skip_plain.then(|| plain_start(body, r.pos, slots, header, keys[0].as_bytes()));
    if let Some((i, at, root)) = start.flatten() {
        (first, r.pos, shadow) = (i, at, root);
    }
    for i in first..slots {
        let (shared, rest) = r.two_small()?;
        if shared > depth || (i > 0 && rest == 0) || shared + rest > MAX_DEPTH {
            return Err(malformed(format!("slot {i}: bad path")));
        }
        matched = matched.min(shared);
        depth = shared;
        // Slots are in path order: a key greater than the field's at the
        // first place they differ means every later slot is past it.
        let mut past = false;
        for _ in 0..rest {
            let key = r.short_bytes()?;
            if matched == depth && depth < target {
                match cmp_key(key, keys[depth].as_bytes()) {
                    Ordering::Equal => matched += 1,
                    Ordering::Greater => past = true,
                    Ordering::Less => {}
                }
            }
            depth += 1;
        }
        if matched == target && depth > target {
            return Ok(Lookup::Unknown); // something below the field: an object
        }
        if matched < depth {
            if past || found.is_some() {
                break;
            }
            match skip_plain_slot(r.buf, r.pos) {
                Some(end) => r.pos = end,
                None => skip_slot(r)?,
            }
            continue;
        }
        let reg = read_reg(r, header)?;
        if depth < target {
            match reg {
                Some((at, REG_OBJECT)) if !r.bool()? => shadow = shadow.above(header, body, at)?,
                _ => return Ok(Lookup::Unknown),
            }
            continue;
        }
        if let Some((at, _)) = reg {
            if shadow.hides(header, body, at)? {
                return Ok(Lookup::Unknown);
            }
        }
        let value = match reg {
            Some((_, REG_ABSENT)) => Lookup::Missing,
            Some((_, REG_VALUE)) => Lookup::Value(r.value(0)?),
            Some((_, REG_ATTACHMENT)) => Lookup::Value(r.attachment()?.to_value()),
            _ => return Ok(Lookup::Unknown),
        };
        if r.bool()? {
            return Ok(Lookup::Unknown); // a counter beside the register
        }
        found = Some(value);
    }
    Ok(found.unwrap_or(Lookup::Missing))
}

/// Where [`walk`] may start looking for a field under top-level key `key`:
/// past the top-level slots with smaller keys (and the slots below them),
/// passed here with plain index arithmetic while they have the common
/// shape (one-byte heads and keys, [`skip_plain_slot`]), which costs a
/// fraction of the general loop per slot. (slot index, its offset, the
/// shadow there); `None`: start at the first slot.
///
/// The walk from there is the walk from the first slot: it would pass
/// every slot before (none is on the field's path, and none stops it),
/// and what it knows at a top-level slot is the root marker's shadow
/// alone. So the handover is at a top-level slot: the first whose key is
/// not smaller than `key`, or the last one before a slot not read here.
fn plain_start(
    body: &[u8],
    slots_at: usize,
    slots: usize,
    header: &Header,
    key: &[u8],
) -> Option<(usize, usize, Shadow)> {
    // The root: an empty path, a register with a one-byte stamp index
    // holding an object marker, no counter.
    let root = body.get(slots_at..slots_at + 6)?;
    let at = u32::from(root[3]);
    let plain_root = root[..3] == [0, 0, 1] && root[3] < 0x80 && u64::from(root[4]) == REG_OBJECT && root[5] == 0;
    if !plain_root || header.check(at).is_err() || slots == 0 {
        return None;
    }
    let (mut i, mut p) = (1, slots_at + 6);
    let (mut top_i, mut top_p) = (i, p);
    let mut depth = 0;
    while i < slots {
        let Some(&[shared, rest]) = body.get(p..p + 2) else {
            break;
        };
        let (shared, rest) = (usize::from(shared), usize::from(rest));
        if shared > depth || rest == 0 || shared + rest > MAX_DEPTH {
            break; // (also any head byte of 0x80 or more)
        }
        let mut q = p + 2;
        let (mut first_key, mut keys_read): (&[u8], usize) = (&[], 0);
        while keys_read < rest {
            let Some(k) = body
                .get(q)
                .filter(|&&n| n < 0x80)
                .and_then(|&n| body.get(q + 1..q + 1 + usize::from(n)))
            else {
                break;
            };
            if keys_read == 0 {
                first_key = k;
            }
            q += 1 + k.len();
            keys_read += 1;
        }
        if keys_read < rest {
            break;
        }
        if shared == 0 {
            (top_i, top_p) = (i, p);
            if cmp_key(first_key, key) != Ordering::Less {
                break;
            }
        }
        let Some(end) = skip_plain_slot(body, q) else { break };
        depth = shared + rest;
        (i, p) = (i + 1, end);
    }
    Some((top_i, top_p, Shadow::Index(at)))
}

/// The newest object marker above a field, which hides older writes below
/// it. Kept as a stamp index while every marker met has the same one (a
/// document written in one go has a single stamp), so the common case
/// decodes no stamp: a write with the marker's own stamp is not older.
#[derive(Clone, Copy)]
enum Shadow {
    None,
    Index(u32),
    Stamp(Stamp),
}

impl Shadow {
    /// The shadow once a marker with stamp index `at` is passed.
    #[inline]
    fn above(self, header: &Header, body: &[u8], at: u32) -> Result<Shadow, CodecError> {
        Ok(match self {
            Shadow::None => Shadow::Index(at),
            Shadow::Index(i) if i == at => self,
            Shadow::Index(i) => Shadow::Stamp(header.stamp(body, i)?.max(header.stamp(body, at)?)),
            Shadow::Stamp(s) => Shadow::Stamp(s.max(header.stamp(body, at)?)),
        })
    }

    /// Whether a write with stamp index `at` is older than the shadow.
    #[inline]
    fn hides(self, header: &Header, body: &[u8], at: u32) -> Result<bool, CodecError> {
        Ok(match self {
            Shadow::None => false,
            Shadow::Index(i) if i == at => false,
            Shadow::Index(i) => header.stamp(body, at)? < header.stamp(body, i)?,
            Shadow::Stamp(s) => header.stamp(body, at)? < s,
        })
    }
}

/// Byte order of two keys; most keys differ in their first byte, which is
/// compared without a call.
#[inline]
fn cmp_key(a: &[u8], b: &[u8]) -> Ordering {
    match (a.first(), b.first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

/// A slot's register as (stamp index, checked; variant tag), its payload
/// not yet read.
#[inline]
fn read_reg(r: &mut Reader<'_>, header: &Header) -> Result<Option<(u32, u64)>, CodecError> {
    if !r.bool()? {
        return Ok(None);
    }
    let at = r.u32()?;
    header.check(at)?;
    Ok(Some((at, r.varint()?)))
}

/// The end of a slot starting at `p` (its path read) in the common shape:
/// one-byte stamp index, a scalar value or a marker, no counter; `None`
/// for anything else (or too few bytes), which [`skip_slot`] then reads.
/// Returns where `skip_slot` would stop, with plain index arithmetic and
/// no `Result` per byte: the walk passes most slots this way.
#[inline(always)]
fn skip_plain_slot(b: &[u8], p: usize) -> Option<usize> {
    // The common shapes: a register [1, stamp, tag, value kind, ...] or
    // none [0], then the counter flag. Four bytes read at once.
    let head = b.get(p..p + 4).and_then(|h| <[u8; 4]>::try_from(h).ok());
    let end = match head {
        Some([1, stamp, tag, kind]) if stamp < 0x80 => match u64::from(tag) {
            REG_ABSENT | REG_OBJECT => p + 3,
            REG_VALUE => match kind {
                0 => p + 4,
                1 => p + 5,
                2 => {
                    // A varint of at most ten bytes.
                    let n = b.get(p + 4..)?.iter().take(10).position(|&x| x < 0x80)?;
                    p + 5 + n
                }
                3 => p + 12,
                4 => {
                    let n = *b.get(p + 4)?;
                    if n >= 0x80 {
                        return None;
                    }
                    p + 5 + usize::from(n)
                }
                _ => return None,
            },
            _ => return None,
        },
        // Fewer than four bytes left: the register, or what follows it,
        // is read the long way.
        None if b.get(p..p + 2) == Some(&[0, 0]) => return Some(p + 2),
        None if b.get(p) == Some(&1) => return None,
        Some([0, ..]) => p + 1,
        _ => return None,
    };
    // No counter.
    (*b.get(end)? == 0).then_some(end + 1)
}

/// Skips the register and counter of a slot whose path was read.
fn skip_slot(r: &mut Reader<'_>) -> Result<(), CodecError> {
    if r.bool()? {
        r.u32()?;
        match r.varint()? {
            REG_ABSENT | REG_OBJECT => {}
            REG_VALUE => r.skip_scalar_or_value()?,
            REG_ATTACHMENT => {
                r.bytes()?;
                r.varint()?;
                r.skip_object(1)?;
            }
            t => return Err(malformed(format!("register tag {t}"))),
        }
    }
    if r.bool()? {
        skip_counter(r)?;
    }
    Ok(())
}

fn skip_counter(r: &mut Reader<'_>) -> Result<(), CodecError> {
    for _ in 0..r.len()? {
        r.u32()?;
        r.varint()?;
        r.skip_num()?;
    }
    for _ in 0..r.len()? {
        r.u32()?;
        r.varint()?;
        r.skip_num()?;
        r.u32()?;
    }
    if r.bool()? {
        r.u32()?;
        r.skip_num()?;
    }
    Ok(())
}

impl<'a> Reader<'a> {
    /// A slot's path head: the count of keys shared with the previous path
    /// (a `u32`) and of keys that follow (a length); both are one byte in
    /// all but deep or damaged documents, read here without a `Result` per
    /// byte.
    #[inline]
    fn two_small(&mut self) -> Result<(usize, usize), CodecError> {
        if let Some(&[a, b]) = self.buf.get(self.pos..self.pos + 2) {
            let left = self.buf.len() - self.pos - 2;
            if a < 0x80 && b < 0x80 && usize::from(b) <= left {
                self.pos += 2;
                return Ok((usize::from(a), usize::from(b)));
            }
        }
        Ok((self.u32()? as usize, self.len()?))
    }

    /// [`Reader::bytes`], with a one-byte length (keys) read directly.
    #[inline]
    fn short_bytes(&mut self) -> Result<&'a [u8], CodecError> {
        if let Some(&n) = self.buf.get(self.pos) {
            let start = self.pos + 1;
            if n < 0x80 {
                if let Some(b) = self.buf.get(start..start + usize::from(n)) {
                    self.pos = start + usize::from(n);
                    return Ok(b);
                }
            }
        }
        self.bytes()
    }

    #[inline]
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let b = self.buf.get(self.pos..self.pos + n).ok_or(CodecError::Truncated)?;
        self.pos += n;
        Ok(b)
    }

    /// A length-prefixed byte string (a key or string), unvalidated.
    #[inline]
    pub(super) fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.len()?;
        self.take(n)
    }

    fn skip_num(&mut self) -> Result<(), CodecError> {
        match self.varint()? {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            t => Err(malformed(format!("number tag {t}"))),
        }
    }

    /// Skips a value; scalars, the common case, without a call.
    #[inline]
    fn skip_scalar_or_value(&mut self) -> Result<(), CodecError> {
        match self.buf.get(self.pos) {
            Some(0) => self.pos += 1,
            Some(1) => self.take(2).map(drop)?,
            Some(2) => {
                self.pos += 1;
                self.skip_varint()?;
            }
            Some(3) => {
                self.pos += 1;
                self.take(8)?;
            }
            Some(4) => {
                self.pos += 1;
                self.bytes()?;
            }
            _ => self.skip_value(0)?,
        }
        Ok(())
    }

    /// Skips a varint without decoding it: to its first byte below 0x80
    /// (at most ten bytes, as [`Reader::varint`] reads).
    #[inline]
    fn skip_varint(&mut self) -> Result<(), CodecError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        match rest.iter().take(10).position(|&b| b < 0x80) {
            Some(i) => {
                self.pos += i + 1;
                Ok(())
            }
            None if rest.len() < 10 => Err(CodecError::Truncated),
            None => Err(malformed("varint too long")),
        }
    }

    fn skip_value(&mut self, depth: usize) -> Result<(), CodecError> {
        if depth > MAX_DEPTH {
            return Err(malformed("value nested too deep"));
        }
        match self.varint()? {
            0 => {}
            1 => {
                self.bool()?;
            }
            2 => {
                self.varint()?;
            }
            3 => {
                self.take(8)?;
            }
            4 => {
                self.bytes()?;
            }
            5 => {
                for _ in 0..self.len()? {
                    self.skip_value(depth + 1)?;
                }
            }
            6 => self.skip_object(depth + 1)?,
            t => return Err(malformed(format!("value tag {t}"))),
        }
        Ok(())
    }

    fn skip_object(&mut self, depth: usize) -> Result<(), CodecError> {
        for _ in 0..self.len()? {
            self.bytes()?;
            self.skip_value(depth)?;
        }
        Ok(())
    }
}
