//! Byte formats: stored documents and changes on the wire.
//!
//! Both are postcard (serde, varint integers, no field names) inside a small
//! envelope we own, so the layout is documented (`docs/format.md`) and
//! versioned independently of any library:
//!
//! * a stored document: `[format: u8][CRC-32 (IEEE) of the rest: u32 LE][id length:
//!   varint][id][body]`. The id sits outside the body so a damaged body can
//!   still be named in an error. The body interns peers and stamps (a freshly
//!   inserted document has one stamp for all its fields), and shares path
//!   prefixes with the previous slot.
//! * a change: `[format: u8][postcard Change]`.
//!
//! Decoding treats bytes as hostile: every index is checked, paths must be
//! strictly ordered, nesting is bounded, and no length prefix is trusted with
//! an allocation.

mod lookup;
mod merge;

pub use lookup::{lookup_field, lookup_field_from_first_slot, plainly_visible, FieldReader, Lookup};
pub use merge::{merge_encoded, EncodedMerge};

use crate::doc::{Counter, Deletion, Doc, Floor, Num, Op, Path, Reg, RegVal, Slot};
use crate::hlc::{Hlc, PeerId, Stamp};
use crate::value::{Value, MAX_DEPTH};
use crate::vv::VersionVector;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Register variant tags in a stored body (the order of [`RegVal`]).
const REG_ABSENT: u64 = 0;
const REG_OBJECT: u64 = 1;
const REG_VALUE: u64 = 2;
const REG_ATTACHMENT: u64 = 3;

/// Version of the stored-document format written by this build.
pub const DOC_FORMAT: u8 = 1;
/// Version of the change wire format written by this build (2: a
/// deletion's version vector is packed, `vv::packed`).
pub const CHANGE_FORMAT: u8 = 2;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// Fewer bytes than the envelope needs.
    Truncated,
    /// A format version this build does not know.
    UnknownFormat {
        /// The version found.
        found: u8,
    },
    /// The checksum does not match: the bytes were damaged.
    Checksum,
    /// The bytes do not follow the format; `reason` says where.
    Malformed {
        /// What was wrong.
        reason: String,
    },
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Truncated => write!(f, "record is truncated"),
            CodecError::UnknownFormat { found } => write!(f, "unknown format version {found}"),
            CodecError::Checksum => write!(f, "checksum mismatch (damaged bytes)"),
            CodecError::Malformed { reason } => write!(f, "malformed record: {reason}"),
        }
    }
}

impl std::error::Error for CodecError {}

fn malformed(reason: impl Into<String>) -> CodecError {
    CodecError::Malformed { reason: reason.into() }
}

impl From<postcard::Error> for CodecError {
    fn from(e: postcard::Error) -> Self {
        match e {
            postcard::Error::DeserializeUnexpectedEnd => CodecError::Truncated,
            e => malformed(e.to_string()),
        }
    }
}

// ---- document ids ----

/// Encodes a canonical document id (see `crate::store::canonical_id`).
pub fn encode_id(id: &Value) -> Vec<u8> {
    match id {
        // Postcard's form written directly (every point read encodes its
        // id): the variant (4), the length as a varint, the bytes.
        Value::String(s) => {
            let mut out = Vec::with_capacity(s.len() + 6);
            out.push(STRING_VARIANT);
            push_varint(&mut out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
            out
        }
        _ => postcard::to_allocvec(id).unwrap_or_default(),
    }
}

/// The variant index of `Value::String` in `Value`'s serde form.
const STRING_VARIANT: u8 = 4;

/// Decodes a document id.
pub fn decode_id(bytes: &[u8]) -> Result<Value, CodecError> {
    let (v, rest) = postcard::take_from_bytes::<Value>(bytes)?;
    if !rest.is_empty() {
        return Err(malformed("trailing bytes after id"));
    }
    Ok(v)
}

// ---- stored documents ----

#[derive(Serialize)]
struct DocOut<'a> {
    peers: Vec<u64>,
    stamps: Vec<(u64, u32)>,
    vv: Vec<(u32, u64)>,
    deleted: Option<(u32, Vec<(u32, u64)>)>,
    slots: Vec<SlotOut<'a>>,
}

#[derive(Serialize)]
struct SlotOut<'a> {
    shared: u32,
    rest: &'a [String],
    reg: Option<(u32, &'a RegVal)>,
    counter: Option<CounterRepr>,
}

#[derive(Serialize, Deserialize)]
struct CounterRepr {
    /// (peer index, hlc, total)
    parts: Vec<(u32, u64, Num)>,
    /// (peer index, hlc, total, stamp index of the reset)
    floors: Vec<(u32, u64, Num, u32)>,
    base: Option<(u32, Num)>,
}

/// Interning tables built while encoding. A document has few peers and
/// stamps, so a linear search beats a map and allocates nothing extra.
#[derive(Default)]
struct Interner {
    peers: Vec<u64>,
    stamps: Vec<(u64, u32)>,
}

impl Interner {
    fn peer(&mut self, p: PeerId) -> u32 {
        match self.peers.iter().position(|&x| x == p.0) {
            Some(i) => i as u32,
            None => {
                self.peers.push(p.0);
                (self.peers.len() - 1) as u32
            }
        }
    }
    fn stamp(&mut self, s: Stamp) -> u32 {
        let p = self.peer(s.peer);
        let key = (s.hlc.0, p);
        match self.stamps.iter().position(|&x| x == key) {
            Some(i) => i as u32,
            None => {
                self.stamps.push(key);
                (self.stamps.len() - 1) as u32
            }
        }
    }
    fn vv(&mut self, vv: &VersionVector) -> Vec<(u32, u64)> {
        vv.iter().map(|(p, h)| (self.peer(p), h.0)).collect()
    }
}

/// A counter as stored, its peers and stamps interned in `t` (in this order).
fn counter_repr(t: &mut Interner, c: &Counter) -> CounterRepr {
    CounterRepr {
        parts: c.parts.iter().map(|(&p, &(h, n))| (t.peer(p), h.0, n)).collect(),
        floors: c
            .floors
            .iter()
            .map(|(&p, f)| (t.peer(p), f.hlc.0, f.total, t.stamp(f.by)))
            .collect(),
        base: c.base.map(|(s, n)| (t.stamp(s), n)),
    }
}

/// Encodes a stored document record into `out` (cleared first).
pub fn encode_doc(id_bytes: &[u8], doc: &Doc, out: &mut Vec<u8>) {
    let mut t = Interner::default();
    let mut slots = Vec::with_capacity(doc.slots.len());
    let mut prev: &[String] = &[];
    for (path, slot) in &doc.slots {
        let shared = prev.iter().zip(path).take_while(|(a, b)| a == b).count();
        let reg = slot.reg.as_ref().map(|r| (t.stamp(r.stamp), &r.val));
        let counter = slot.counter.as_ref().map(|c| counter_repr(&mut t, c));
        slots.push(SlotOut {
            shared: shared as u32,
            rest: &path[shared..],
            reg,
            counter,
        });
        prev = path;
    }
    let deleted = doc.deleted.as_ref().map(|d| (t.stamp(d.stamp), t.vv(&d.seen)));
    let vv = t.vv(&doc.vv);
    let body = DocOut {
        peers: t.peers,
        stamps: t.stamps,
        vv,
        deleted,
        slots,
    };
    seal(id_bytes, &body, out);
}

/// Writes the envelope around `body`: format, checksum, id.
fn seal(id_bytes: &[u8], body: &impl Serialize, out: &mut Vec<u8>) {
    out.clear();
    out.push(DOC_FORMAT);
    out.extend_from_slice(&[0; 4]);
    push_varint(out, id_bytes.len() as u64);
    out.extend_from_slice(id_bytes);
    // Serializing plain data into a Vec cannot fail.
    let encoded = postcard::to_extend(body, std::mem::take(out)).unwrap_or_default();
    *out = encoded;
    let crc = crc32fast::hash(&out[5..]);
    out[1..5].copy_from_slice(&crc.to_le_bytes());
}

/// Same layout and variant numbers as [`RegVal`], borrowing the value.
#[derive(Serialize)]
enum RegValRef<'a> {
    #[allow(dead_code)]
    Absent,
    Object,
    Value(&'a Value),
}

#[derive(Serialize)]
struct FreshSlot<'a> {
    shared: u32,
    rest: &'a [String],
    reg: Option<(u32, RegValRef<'a>)>,
    counter: Option<CounterRepr>,
}

#[derive(Serialize)]
struct FreshDoc<'a> {
    // Slices, not arrays: postcard writes arrays without a length prefix.
    peers: &'a [u64],
    stamps: &'a [(u64, u32)],
    vv: &'a [(u32, u64)],
    deleted: Option<(u32, Vec<(u32, u64)>)>,
    slots: Vec<FreshSlot<'a>>,
}

/// Encodes a brand-new document straight from its JSON fields (`_id`
/// skipped), byte-for-byte what [`encode_doc`] writes for the document that
/// `Doc::ops_replace` builds at `stamp`, without building it: inserting is
/// the hot path of bulk loads.
pub fn encode_fresh(id_bytes: &[u8], fields: &BTreeMap<String, Value>, stamp: Stamp, out: &mut Vec<u8>) {
    let mut slots = Vec::with_capacity(fields.len() + 1);
    slots.push(FreshSlot {
        shared: 0,
        rest: &[],
        reg: Some((0, RegValRef::Object)),
        counter: None,
    });
    push_fresh(fields.iter().filter(|(k, _)| k.as_str() != "_id"), 0, &mut slots);
    let body = FreshDoc {
        peers: &[stamp.peer.0],
        stamps: &[(stamp.hlc.0, 0)],
        vv: &[(0, stamp.hlc.0)],
        deleted: None,
        slots,
    };
    seal(id_bytes, &body, out);
}

/// Slots in path order (pre-order, keys sorted): each path extends its
/// parent's, so only the last key is written and the rest is shared.
fn push_fresh<'a>(fields: impl Iterator<Item = (&'a String, &'a Value)>, depth: u32, out: &mut Vec<FreshSlot<'a>>) {
    for (k, v) in fields {
        let rest = std::slice::from_ref(k);
        match v {
            Value::Object(o) => {
                out.push(FreshSlot {
                    shared: depth,
                    rest,
                    reg: Some((0, RegValRef::Object)),
                    counter: None,
                });
                push_fresh(o.iter(), depth + 1, out);
            }
            v => out.push(FreshSlot {
                shared: depth,
                rest,
                reg: Some((0, RegValRef::Value(v))),
                counter: None,
            }),
        }
    }
}

#[inline]
fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(bytes: &[u8]) -> Result<(u64, &[u8]), CodecError> {
    // Up to nine bytes (63 bits: stamps, timestamps) from one 8-byte load
    // without a loop; longer or near the end of the buffer, byte by byte.
    if let Some(head) = bytes.get(..8) {
        let w = u64::from_le_bytes(head.try_into().unwrap_or_default());
        let ends = !w & 0x8080_8080_8080_8080;
        if ends != 0 {
            let n = (ends.trailing_zeros() / 8 + 1) as usize;
            let keep = if n == 8 { u64::MAX } else { (1u64 << (8 * n)) - 1 };
            return Ok((gather7(w & keep), &bytes[n..]));
        }
        if let Some(&last) = bytes.get(8) {
            if last < 0x80 {
                return Ok((gather7(w) | (u64::from(last) << 56), &bytes[9..]));
            }
        }
    }
    take_varint_slow(bytes)
}

/// The low seven bits of each byte of `w`, packed (the payload of eight
/// varint bytes, continuation bits dropped).
#[inline]
fn gather7(w: u64) -> u64 {
    let x = w & 0x7f7f_7f7f_7f7f_7f7f;
    let x = ((x & 0x7f00_7f00_7f00_7f00) >> 1) | (x & 0x007f_007f_007f_007f);
    let x = ((x & 0x3fff_0000_3fff_0000) >> 2) | (x & 0x0000_3fff_0000_3fff);
    ((x & 0x0fff_ffff_0000_0000) >> 4) | (x & 0x0000_0000_0fff_ffff)
}

fn take_varint_slow(bytes: &[u8]) -> Result<(u64, &[u8]), CodecError> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        v |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((v, &bytes[i + 1..]));
        }
    }
    Err(if bytes.len() < 10 {
        CodecError::Truncated
    } else {
        malformed("varint too long")
    })
}

/// The id bytes of a stored record, without checking the rest (cheap: used
/// to confirm an id-index hit before the record is decoded).
pub fn record_id(bytes: &[u8]) -> Result<&[u8], CodecError> {
    let (len, rest) = take_varint(bytes.get(5..).ok_or(CodecError::Truncated)?)?;
    let len = usize::try_from(len).map_err(|_| malformed("id length"))?;
    rest.get(..len).ok_or(CodecError::Truncated)
}

/// One part of a stored record, or why it cannot be read.
pub type Part<'a> = Result<&'a [u8], CodecError>;

/// Splits a stored record into its id bytes and body, checking the envelope.
/// The id is returned even when the body is damaged, so errors can name it.
pub fn split_record(bytes: &[u8]) -> (Part<'_>, Part<'_>) {
    split(bytes, true)
}

/// [`split_record`] for a record already checked when it was read and
/// kept unchanged since (a query result row): the checksum is not
/// computed again.
pub fn split_checked_record(bytes: &[u8]) -> (Part<'_>, Part<'_>) {
    split(bytes, false)
}

fn split(bytes: &[u8], verify: bool) -> (Part<'_>, Part<'_>) {
    if bytes.len() < 6 {
        return (Err(CodecError::Truncated), Err(CodecError::Truncated));
    }
    let id_and_body = take_varint(&bytes[5..]).and_then(|(len, rest)| {
        let len = usize::try_from(len).map_err(|_| malformed("id length"))?;
        if len > rest.len() {
            return Err(CodecError::Truncated);
        }
        Ok(rest.split_at(len))
    });
    let id = id_and_body.as_ref().map(|(id, _)| *id).map_err(Clone::clone);
    let body = if bytes[0] != DOC_FORMAT {
        Err(CodecError::UnknownFormat { found: bytes[0] })
    } else if verify && crc32fast::hash(&bytes[5..]).to_le_bytes() != bytes[1..5] {
        Err(CodecError::Checksum)
    } else {
        id_and_body.map(|(_, body)| body)
    };
    (id, body)
}

/// Decodes a stored document body (see [`split_record`]).
///
/// Hand-written over postcard's documented wire format rather than derived:
/// reading paths and values straight into the document, with no
/// intermediate structures, halves the cost of the merge hot path. The
/// encoder stays serde-derived, and round-trip property tests hold the two
/// to the same layout.
pub fn decode_doc(body: &[u8]) -> Result<Doc, CodecError> {
    let mut r = Reader { buf: body, pos: 0 };
    let doc = read_doc(&mut r)?;
    if r.pos != body.len() {
        return Err(malformed("trailing bytes after document"));
    }
    Ok(doc)
}

/// A cursor over untrusted postcard bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self.buf.get(self.pos).ok_or(CodecError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, CodecError> {
        // Most varints are one byte (tags, flags, small lengths and indexes).
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        self.varint_long()
    }

    #[cold]
    fn varint_long(&mut self) -> Result<u64, CodecError> {
        let (v, rest) = take_varint(&self.buf[self.pos..])?;
        self.pos = self.buf.len() - rest.len();
        Ok(v)
    }

    #[inline]
    fn u32(&mut self) -> Result<u32, CodecError> {
        u32::try_from(self.varint()?).map_err(|_| malformed("u32 out of range"))
    }

    fn i64(&mut self) -> Result<i64, CodecError> {
        let z = self.varint()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    fn f64(&mut self) -> Result<f64, CodecError> {
        let b = self.buf.get(self.pos..self.pos + 8).ok_or(CodecError::Truncated)?;
        self.pos += 8;
        let f = f64::from_le_bytes(b.try_into().map_err(|_| CodecError::Truncated)?);
        if !f.is_finite() {
            return Err(malformed("non-finite float"));
        }
        Ok(f)
    }

    #[inline]
    fn bool(&mut self) -> Result<bool, CodecError> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(malformed("bool")),
        }
    }

    /// A length prefix, which can never exceed the bytes left (each element
    /// takes at least one byte), so it never drives a large allocation.
    #[inline]
    fn len(&mut self) -> Result<usize, CodecError> {
        let n = self.varint()?;
        if n > (self.buf.len() - self.pos) as u64 {
            return Err(CodecError::Truncated);
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String, CodecError> {
        let n = self.len()?;
        let b = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| malformed("invalid UTF-8"))
    }

    fn value(&mut self, depth: usize) -> Result<Value, CodecError> {
        if depth > MAX_DEPTH {
            return Err(malformed("value nested too deep"));
        }
        Ok(match self.varint()? {
            0 => Value::Null,
            1 => Value::Bool(self.bool()?),
            2 => Value::Int(self.i64()?),
            3 => Value::Float(self.f64()?),
            4 => Value::String(self.string()?),
            5 => {
                let n = self.len()?;
                let mut a = Vec::with_capacity(n);
                for _ in 0..n {
                    a.push(self.value(depth + 1)?);
                }
                Value::Array(a)
            }
            6 => Value::Object(self.object(depth + 1)?),
            t => return Err(malformed(format!("value tag {t}"))),
        })
    }

    fn object(&mut self, depth: usize) -> Result<BTreeMap<String, Value>, CodecError> {
        let n = self.len()?;
        let mut o = BTreeMap::new();
        for _ in 0..n {
            let k = self.string()?;
            let v = self.value(depth)?;
            o.insert(k, v);
        }
        Ok(o)
    }

    fn reg_val(&mut self) -> Result<RegVal, CodecError> {
        Ok(match self.varint()? {
            0 => RegVal::Absent,
            1 => RegVal::Object,
            2 => RegVal::Value(self.value(0)?),
            3 => RegVal::Attachment(self.attachment()?),
            t => return Err(malformed(format!("register tag {t}"))),
        })
    }

    fn attachment(&mut self) -> Result<crate::doc::Attachment, CodecError> {
        Ok(crate::doc::Attachment {
            id: self.string()?,
            len: self.varint()?,
            meta: self.object(1)?,
        })
    }

    fn num(&mut self) -> Result<Num, CodecError> {
        match self.varint()? {
            0 => Ok(Num::Int(self.i64()?)),
            1 => Ok(Num::Float(self.f64()?)),
            t => Err(malformed(format!("number tag {t}"))),
        }
    }

    fn vv(&mut self, peers: &[u64]) -> Result<VersionVector, CodecError> {
        let n = self.len()?;
        // Collected, then sorted once (`FromIterator`): entries come in
        // interning order, and an insertion each was a hot spot of sync
        // reads (a shared document's vector names every writer).
        let mut entries = Vec::with_capacity(n.min(self.buf.len().saturating_sub(self.pos)));
        for _ in 0..n {
            let p = peer_at(peers, self.u32()?)?;
            entries.push((p, Hlc(self.varint()?)));
        }
        Ok(entries.into_iter().collect())
    }
}

fn peer_at(peers: &[u64], i: u32) -> Result<PeerId, CodecError> {
    peers
        .get(i as usize)
        .map(|&p| PeerId(p))
        .ok_or_else(|| malformed("peer index"))
}

fn stamp_at(stamps: &[Stamp], i: u32) -> Result<Stamp, CodecError> {
    stamps.get(i as usize).copied().ok_or_else(|| malformed("stamp index"))
}

/// The visible JSON of a stored document body, read straight from the bytes
/// when the document is *simple*: never deleted, no counters, every field's
/// write at least as new as the object it sits in, no tombstone or scalar
/// with fields below it. That is most documents, and it skips building the
/// CRDT state and rendering it. `Ok(None)`: not simple; decode the document
/// and render it instead (same result, checked by property tests).
pub fn decode_visible(body: &[u8]) -> Result<Option<BTreeMap<String, Value>>, CodecError> {
    let mut objects = Objects::default();
    Ok(walk_visible(body, &mut objects)?.then(|| objects.finish()))
}

/// The visible JSON text of a simple document (see [`decode_visible`]) with
/// its `_id`, appended to `out`; false (and `out` unchanged) if it is not
/// simple. Byte for byte what rendering and printing the [`Value`] gives,
/// without building it.
pub fn visible_json(body: &[u8], id: &Value, out: &mut String) -> Result<bool, CodecError> {
    json_text(body, Id::Value(id), out)
}

/// [`visible_json`] with the `_id` as a stored record holds it (encoded,
/// see [`encode_id`]): it is written straight from its bytes too.
pub fn visible_json_encoded_id(body: &[u8], id_bytes: &[u8], out: &mut String) -> Result<bool, CodecError> {
    json_text(body, Id::Encoded(id_bytes), out)
}

/// The `_id` a document's JSON gets.
#[derive(Clone, Copy)]
enum Id<'v> {
    Value(&'v Value),
    /// As [`encode_id`] wrote it.
    Encoded(&'v [u8]),
}

/// Writes the JSON as bytes, then checks once that the text is UTF-8: the
/// strings in the body are copied unchecked, and one pass over the result
/// is cheaper than one check per string. A bad string is an error, as
/// decoding it would be.
fn json_text(body: &[u8], id: Id<'_>, out: &mut String) -> Result<bool, CodecError> {
    let mut bytes = std::mem::take(out).into_bytes();
    let start = bytes.len();
    let written = write_visible_json(body, id, &mut bytes);
    if !matches!(written, Ok(true)) {
        bytes.truncate(start);
    }
    match String::from_utf8(bytes) {
        Ok(text) => {
            *out = text;
            written
        }
        Err(e) => {
            let mut bytes = e.into_bytes();
            bytes.truncate(start); // what `out` held: text
            *out = String::from_utf8(bytes).unwrap_or_default();
            Err(malformed("invalid UTF-8"))
        }
    }
}

/// [`visible_json`] into bytes; on `Ok(false)` or an error, what was
/// appended is for the caller to drop.
fn write_visible_json(body: &[u8], id: Id<'_>, out: &mut Vec<u8>) -> Result<bool, CodecError> {
    out.reserve(body.len() + 32); // JSON is about as long as the body
    let mut json = Json {
        out,
        id: Some(id),
        first: true,
        depth: 0,
    };
    json.out.push(b'{');
    if !walk_visible(body, &mut json)? {
        return Ok(false);
    }
    json.id_before(None)?;
    json.out.push(b'}');
    Ok(true)
}

/// Receives the fields of a simple document in order: depth first, keys
/// sorted, each object's fields before the next sibling. Keys are the
/// stored bytes, not yet checked to be UTF-8.
trait Visible<'a> {
    /// Opens an object at `key` inside the innermost open one.
    fn open(&mut self, key: &'a [u8]) -> Result<(), CodecError>;
    /// Closes the innermost open object.
    fn close(&mut self);
    /// A field of the innermost open object whose value is next in `r`;
    /// the sink reads it.
    fn field(&mut self, key: &'a [u8], r: &mut Reader<'a>) -> Result<(), CodecError>;
    /// A field of the innermost open object, its value decoded.
    fn field_value(&mut self, key: &'a [u8], value: Value) -> Result<(), CodecError>;
}

/// Walks a simple document's slots into `sink`; false as soon as it turns
/// out not to be simple (what the sink got is then to be dropped).
fn walk_visible<'a, S: Visible<'a>>(body: &'a [u8], sink: &mut S) -> Result<bool, CodecError> {
    let mut r = Reader { buf: body, pos: 0 };
    // Small tables (most documents) are read without allocating.
    let mut small = [Stamp::ZERO; lookup::MAX_INTERNED];
    let large: Vec<Stamp>;
    let stamps: &[Stamp] = match lookup::read_header(&mut r)? {
        Some(header) => header.stamps(body, &mut small)?,
        None => {
            r.pos = 0;
            let (peers, stamps) = read_interned(&mut r)?;
            for _ in 0..r.len()? {
                peer_at(&peers, r.u32()?)?;
                r.varint()?;
            }
            if r.bool()? {
                return Ok(false); // deleted: the deletion decides what is visible
            }
            large = stamps;
            &large
        }
    };
    let n = r.len()?;
    if n == 0 {
        return Ok(false); // never written: not visible
    }
    let mut path: Vec<&'a [u8]> = Vec::with_capacity(8);
    // Registers on the current path, outermost first, each with what it
    // and those above it say about the slots below: (depth, newest stamp,
    // whether one is not an object marker). A slot is shadowed by a
    // register above it that is newer or is not an object.
    let mut stack: Vec<(usize, Stamp, bool)> = Vec::with_capacity(8);
    // Objects open below the root; slots come in pre-order with keys sorted,
    // so an object is complete when the walk leaves its prefix.
    let mut open = 0usize;
    for i in 0..n {
        let shared = r.u32()? as usize;
        let rest = r.len()?;
        if shared > path.len() || (i > 0 && rest == 0) || shared + rest > MAX_DEPTH {
            return Err(malformed(format!("slot {i}: bad path")));
        }
        path.truncate(shared);
        for _ in 0..rest {
            path.push(r.bytes()?);
        }
        if path.first() == Some(&b"_id".as_slice()) {
            return Ok(false); // a stored top-level `_id` field: rendering hides it
        }
        while open > shared {
            sink.close();
            open -= 1;
        }
        // Depths only grow along the stack: leaving a prefix pops its registers.
        while stack.last().is_some_and(|&(depth, _, _)| depth > shared) {
            stack.pop();
        }
        // A slot without a register (a counter alone) is not simple.
        if !r.bool()? {
            return Ok(false);
        }
        let stamp = stamp_at(stamps, r.u32()?)?;
        let tag = r.varint()?;
        let shadowed = stack
            .last()
            .is_some_and(|&(_, newest, blocked)| blocked || newest > stamp);
        if shadowed || (i == 0) != path.is_empty() || (path.is_empty() && tag != REG_OBJECT) {
            return Ok(false);
        }
        // What this register adds for the slots below it.
        let (newest, blocked) = stack
            .last()
            .map_or((stamp, false), |&(_, newest, blocked)| (newest.max(stamp), blocked));
        if tag == REG_ABSENT {
            stack.push((path.len(), newest, true));
        } else if let Some((last, parents)) = path.split_last() {
            // Objects above this field without a slot of their own.
            for k in parents.get(open..).unwrap_or_default() {
                sink.open(k)?;
                open += 1;
            }
            match tag {
                REG_OBJECT => {
                    sink.open(last)?;
                    open += 1;
                }
                REG_VALUE => sink.field(last, &mut r)?,
                REG_ATTACHMENT => sink.field_value(last, r.attachment()?.to_value())?,
                t => return Err(malformed(format!("register tag {t}"))),
            }
            stack.push((path.len(), newest, blocked || tag != REG_OBJECT));
        } else {
            stack.push((0, newest, blocked)); // the root's object marker
        }
        if r.bool()? {
            return Ok(false); // a counter beside the register
        }
    }
    if r.pos != body.len() {
        return Err(malformed("trailing bytes after document"));
    }
    for _ in 0..open {
        sink.close();
    }
    Ok(true)
}

/// Builds the document's objects: `frames[d]` is the open object at depth
/// `d` with its key, fields in order.
struct Objects {
    frames: Vec<(String, Vec<(String, Value)>)>,
}

impl Default for Objects {
    fn default() -> Self {
        Objects {
            frames: vec![(String::new(), Vec::new())],
        }
    }
}

fn key_text(key: &[u8]) -> Result<String, CodecError> {
    std::str::from_utf8(key)
        .map(str::to_string)
        .map_err(|_| malformed("invalid UTF-8"))
}

impl<'a> Visible<'a> for Objects {
    fn open(&mut self, key: &'a [u8]) -> Result<(), CodecError> {
        self.frames.push((key_text(key)?, Vec::new()));
        Ok(())
    }

    fn close(&mut self) {
        if self.frames.len() > 1 {
            if let Some((key, fields)) = self.frames.pop() {
                let object = Value::Object(fields.into_iter().collect());
                if let Some((_, parent)) = self.frames.last_mut() {
                    parent.push((key, object));
                }
            }
        }
    }

    fn field(&mut self, key: &'a [u8], r: &mut Reader<'a>) -> Result<(), CodecError> {
        let value = r.value(0)?;
        self.field_value(key, value)
    }

    fn field_value(&mut self, key: &'a [u8], value: Value) -> Result<(), CodecError> {
        let key = key_text(key)?;
        if let Some((_, fields)) = self.frames.last_mut() {
            fields.push((key, value));
        }
        Ok(())
    }
}

impl Objects {
    fn finish(mut self) -> BTreeMap<String, Value> {
        while self.frames.len() > 1 {
            self.close();
        }
        self.frames
            .pop()
            .map(|(_, fields)| fields.into_iter().collect())
            .unwrap_or_default()
    }
}

/// Writes the document as compact JSON bytes, `_id` among the top-level
/// keys in key order. (A stored top-level `_id` field, which rendering
/// hides, makes the document not simple: the walk never passes one.)
struct Json<'o, 'v> {
    out: &'o mut Vec<u8>,
    /// The `_id`, until it is written.
    id: Option<Id<'v>>,
    /// Whether the innermost open object has no field written yet.
    first: bool,
    depth: usize,
}

impl Json<'_, '_> {
    #[inline]
    fn key(&mut self, key: &[u8]) {
        // One capacity check for the comma, quotes and colon around the key.
        self.out.reserve(key.len() + 4);
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        if crate::value::any_escape(key) {
            crate::value::push_json_string(key, self.out);
            self.out.push(b':');
        } else {
            self.out.push(b'"');
            self.out.extend_from_slice(key);
            self.out.push(b'"');
            self.out.push(b':');
        }
    }

    /// Writes the `_id` if the next top-level key sorts after it (`None`: the end).
    #[inline(always)]
    fn id_before(&mut self, next: Option<&[u8]>) -> Result<(), CodecError> {
        // Once written (mostly at the first field), this is one test.
        if self.id.is_none() || self.depth > 0 || next.is_some_and(|k| k <= b"_id".as_slice()) {
            return Ok(());
        }
        self.write_id()
    }

    #[inline(never)]
    fn write_id(&mut self) -> Result<(), CodecError> {
        self.key(b"_id");
        match self.id.take() {
            Some(Id::Value(id)) => id.write_json_bytes(self.out),
            Some(Id::Encoded(bytes)) => {
                let mut r = Reader { buf: bytes, pos: 0 };
                r.json(self.out, 0)?;
                if r.pos != bytes.len() {
                    return Err(malformed("trailing bytes after id"));
                }
            }
            None => {}
        }
        Ok(())
    }
}

impl<'a> Visible<'a> for Json<'_, '_> {
    fn open(&mut self, key: &'a [u8]) -> Result<(), CodecError> {
        self.id_before(Some(key))?;
        self.key(key);
        self.out.push(b'{');
        self.first = true;
        self.depth += 1;
        Ok(())
    }

    fn close(&mut self) {
        self.out.push(b'}');
        self.first = false;
        self.depth = self.depth.saturating_sub(1);
    }

    fn field(&mut self, key: &'a [u8], r: &mut Reader<'a>) -> Result<(), CodecError> {
        self.id_before(Some(key))?;
        self.key(key);
        r.json(self.out, 0)
    }

    fn field_value(&mut self, key: &'a [u8], value: Value) -> Result<(), CodecError> {
        self.id_before(Some(key))?;
        self.key(key);
        value.write_json_bytes(self.out);
        Ok(())
    }
}

impl Reader<'_> {
    /// Copies a value to `out` as JSON, as [`Value::write_json`] writes the
    /// value [`Reader::value`] would build (same checks, except that
    /// strings are copied unchecked: the caller checks the whole text is
    /// UTF-8).
    fn json(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), CodecError> {
        use crate::value::{push_json_string, JsonOut};
        if depth > MAX_DEPTH {
            return Err(malformed("value nested too deep"));
        }
        match self.varint()? {
            0 => out.extend_from_slice(b"null"),
            1 => out.extend_from_slice(if self.bool()? { b"true" } else { b"false" }),
            2 => out.int(self.i64()?),
            3 => out.float(self.f64()?),
            4 => push_json_string(self.bytes()?, out),
            5 => {
                out.push(b'[');
                for i in 0..self.len()? {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.json(out, depth + 1)?;
                }
                out.push(b']');
            }
            6 => {
                out.push(b'{');
                for i in 0..self.len()? {
                    if i > 0 {
                        out.push(b',');
                    }
                    push_json_string(self.bytes()?, out);
                    out.push(b':');
                    self.json(out, depth + 1)?;
                }
                out.push(b'}');
            }
            t => return Err(malformed(format!("value tag {t}"))),
        }
        Ok(())
    }
}

/// The interning tables at the start of a document body: peers, stamps.
fn read_interned(r: &mut Reader<'_>) -> Result<(Vec<u64>, Vec<Stamp>), CodecError> {
    let n = r.len()?;
    let mut peers = Vec::with_capacity(n);
    for _ in 0..n {
        peers.push(r.varint()?);
    }
    let n = r.len()?;
    let mut stamps = Vec::with_capacity(n);
    for _ in 0..n {
        let hlc = Hlc(r.varint()?);
        stamps.push(Stamp {
            hlc,
            peer: peer_at(&peers, r.u32()?)?,
        });
    }
    Ok((peers, stamps))
}

fn read_doc(r: &mut Reader<'_>) -> Result<Doc, CodecError> {
    let (peers, stamps) = read_interned(r)?;
    let mut doc = Doc {
        vv: r.vv(&peers)?,
        ..Doc::default()
    };
    if r.bool()? {
        let stamp = stamp_at(&stamps, r.u32()?)?;
        doc.deleted = Some(Deletion {
            stamp,
            seen: r.vv(&peers)?,
        });
    }
    let n = r.len()?;
    let empty: Path = Vec::new();
    // Slots arrive in strictly increasing path order (checked below), so
    // they are gathered in a vector and the map built from it in one bulk
    // pass, rather than searched for and inserted one at a time: this is
    // the merge's hot path (every merged document is decoded).
    let mut slots: Vec<(Path, Slot)> = Vec::with_capacity(n);
    for i in 0..n {
        let prev = slots.last().map_or(&empty, |(p, _)| p);
        let shared = r.u32()? as usize;
        let rest = r.len()?;
        if shared > prev.len() || (i > 0 && rest == 0) || shared + rest > MAX_DEPTH {
            return Err(malformed(format!("slot {i}: bad path")));
        }
        let mut path = Vec::with_capacity(shared + rest);
        path.extend_from_slice(&prev[..shared]);
        for _ in 0..rest {
            path.push(r.string()?);
        }
        if i > 0 && path <= *prev {
            return Err(malformed(format!("slot {i}: path out of order")));
        }
        let reg = if r.bool()? {
            Some(Reg {
                stamp: stamp_at(&stamps, r.u32()?)?,
                val: r.reg_val()?,
            })
        } else {
            None
        };
        let counter = if r.bool()? {
            Some(read_counter(r, &peers, &stamps)?)
        } else {
            None
        };
        slots.push((path, Slot { reg, counter }));
    }
    doc.slots = slots.into_iter().collect();
    Ok(doc)
}

fn read_counter(r: &mut Reader<'_>, peers: &[u64], stamps: &[Stamp]) -> Result<Counter, CodecError> {
    let mut c = Counter::default();
    for _ in 0..r.len()? {
        let p = peer_at(peers, r.u32()?)?;
        let hlc = Hlc(r.varint()?);
        c.parts.insert(p, (hlc, r.num()?));
    }
    for _ in 0..r.len()? {
        let p = peer_at(peers, r.u32()?)?;
        let hlc = Hlc(r.varint()?);
        let total = r.num()?;
        c.floors.insert(
            p,
            Floor {
                hlc,
                total,
                by: stamp_at(stamps, r.u32()?)?,
            },
        );
    }
    if r.bool()? {
        let s = stamp_at(stamps, r.u32()?)?;
        c.base = Some((s, r.num()?));
    }
    Ok(c)
}

// ---- changes ----

/// The field-level changes of one document: what sync ships.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Collection name.
    pub collection: String,
    /// Canonical document id.
    pub id: Value,
    /// The ops, each a join into the document's state.
    pub ops: Vec<Op>,
}

/// Encodes a change for the wire.
pub fn encode_change(change: &Change) -> Vec<u8> {
    let mut out = vec![CHANGE_FORMAT];
    out = postcard::to_extend(change, out).unwrap_or_default();
    out
}

/// Decodes a change from (untrusted) wire bytes. Ops are not validated here;
/// the store validates them before applying.
pub fn decode_change(bytes: &[u8]) -> Result<Change, CodecError> {
    let (&format, body) = bytes.split_first().ok_or(CodecError::Truncated)?;
    if format != CHANGE_FORMAT {
        return Err(CodecError::UnknownFormat { found: format });
    }
    let (c, rest) = postcard::take_from_bytes::<Change>(body)?;
    if !rest.is_empty() {
        return Err(malformed("trailing bytes after change"));
    }
    Ok(c)
}

#[cfg(test)]
mod varint_tests {
    use super::{take_varint, take_varint_slow};
    use proptest::prelude::*;

    fn encode(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    proptest! {
        /// The one-load decoder agrees with the byte loop on any bytes
        /// (values, lengths consumed and errors alike).
        #[test]
        fn fast_varint_agrees_with_the_loop(bytes in prop::collection::vec(any::<u8>(), 0..14)) {
            prop_assert_eq!(format!("{:?}", take_varint(&bytes)), format!("{:?}", take_varint_slow(&bytes)));
        }

        /// Every value round-trips, with any bytes after it.
        #[test]
        fn varints_round_trip(shift in 0u32..64, v in any::<u64>(), tail in prop::collection::vec(any::<u8>(), 0..10)) {
            let v = v >> shift;
            let mut bytes = Vec::new();
            encode(v, &mut bytes);
            let n = bytes.len();
            bytes.extend_from_slice(&tail);
            let (got, rest) = take_varint(&bytes).unwrap();
            prop_assert_eq!(got, v);
            prop_assert_eq!(rest.len(), bytes.len() - n);
        }
    }
}

#[cfg(test)]
mod id_tests {
    use super::{decode_id, encode_id};
    use crate::value::Value;
    use proptest::prelude::*;

    proptest! {
        /// A string id's direct encoding is postcard's, byte for byte
        /// (stored records and index keys hold the postcard form).
        #[test]
        fn a_string_id_encodes_as_postcard_does(s in ".{0,300}") {
            let id = Value::String(s);
            let direct = encode_id(&id);
            prop_assert_eq!(&direct, &postcard::to_allocvec(&id).unwrap());
            prop_assert_eq!(decode_id(&direct).unwrap(), id);
        }
    }
}
