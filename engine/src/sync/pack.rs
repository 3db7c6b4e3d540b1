//! Packed changes: a compact, versioned encoding of a batch of [`Change`]s
//! for the sync protocol (version vectors have their own: `vv::packed`).
//!
//! Why: reconciliation after a long separation ships only the differences
//! (version vectors and the per-origin change log see to that), so what is
//! left to cut is the bytes per difference. Plain postcard repeats, for every
//! field edit, the collection name, the whole id as a tagged value, every
//! path segment as text, and a 16-byte stamp as two full varints: about 63
//! bytes for a one-field edit. Here the same edit costs 13 to 18 (measured
//! by `engine/tests/reconcile_bytes.rs`):
//!
//! * **tables**: peers (8 bytes each, once), strings used more than once
//!   (collection names, path segments, repeated values such as a status) and
//!   paths used more than once; a reference is one byte below 64 entries;
//! * **ids**: a 16-hex-character string (the engine's generated ids and most
//!   app ids) travels as its 8 bytes; integers as varints;
//! * **stamps**: "same as the previous op", or the writer's HLC as a delta
//!   from that writer's previous one (wall milliseconds and logical counter
//!   apart), so edits of one session cost a byte or two;
//! * **values**: the op code carries the value's kind (booleans and null
//!   cost nothing more); floats that are short decimals (`12.5`) travel as
//!   a varint mantissa and an exponent;
//! * **range coding**: every byte of that plain form belongs to a context
//!   (op codes, path references, text, stamp deltas, ...) and is coded with
//!   an adaptive binary range coder (LZMA's) with one model per context, so
//!   skewed bytes (letters, repeated codes) cost their entropy. The encoder
//!   keeps whichever of the plain and coded forms is smaller.
//!
//! The layout is in `docs/format.md` ("Packed changes"). Every byte may come
//! from a hostile peer: decoding never panics, checks every count against
//! the bytes left and against [`UnpackLimits`] before allocating, bounds the
//! decoded size of a range-coded body (no decompression bombs) and the
//! estimated memory of the result (a table string referenced a million times
//! is charged a million times), and reports the offset and the reason of the
//! first thing wrong.

use crate::codec::Change;
use crate::doc::{Attachment, Num, Op, Path, RegVal};
use crate::hlc::{Hlc, PeerId, Stamp};
use crate::value::{Value, MAX_DEPTH};
use crate::vv::VersionVector;
use std::collections::BTreeMap;
use std::fmt;
use std::mem::size_of;

/// The encoder's interning tables. They are never iterated (order cannot
/// reach the bytes) and hold the keys of one outgoing batch, which the
/// store's batch bound keeps small, so colliding keys could at worst cost
/// that batch quadratic time: a fast unkeyed hash is enough (SipHash was
/// 2% of a simulation's instructions).
type HashMap<K, V> = std::collections::HashMap<K, V, rustc_hash::FxBuildHasher>;

/// Version of the packed-changes format written by this build.
pub const PACK_FORMAT: u8 = 1;
/// Bytes before the body: format and coding.
const HEADER_BYTES: usize = 2;

/// How the body of a pack is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Coding {
    /// The plain form, byte for byte.
    Plain,
    /// The plain form range-coded, one adaptive model per byte context.
    Range,
}

impl Coding {
    fn byte(self) -> u8 {
        match self {
            Coding::Plain => 0,
            Coding::Range => 1,
        }
    }
}

/// What a receiver accepts from one pack. Every bound is checked before the
/// memory it guards is allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Most changes (documents) in one pack.
    pub max_changes: usize,
    /// Most ops in one pack, all changes together.
    pub max_ops: usize,
    /// Largest plain body (for a range-coded pack: after decoding).
    pub max_body_bytes: usize,
    /// Largest estimated memory of the decoded changes (structs, strings,
    /// values; a string referenced from a table counts at every use).
    pub max_output_bytes: usize,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_changes: 1 << 20,
            max_ops: 1 << 22,
            max_body_bytes: 64 << 20,
            max_output_bytes: 512 << 20,
        }
    }
}

/// Why bytes are not a pack.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PackError {
    /// The bytes end before the pack does.
    Truncated {
        /// Offset in the plain form (header included) where more was needed.
        offset: usize,
    },
    /// A format version this build does not know.
    UnknownFormat {
        /// The version found.
        found: u8,
    },
    /// A body coding this build does not know.
    UnknownCoding {
        /// The coding byte found.
        found: u8,
    },
    /// A count or size beyond a limit of the receiver or beyond what the
    /// bytes left could hold.
    TooLarge {
        /// Offset in the plain form (header included).
        offset: usize,
        /// What was counted.
        what: &'static str,
        /// How many were announced (or needed).
        count: u64,
        /// How many are allowed there.
        limit: u64,
    },
    /// The bytes do not follow the format.
    Malformed {
        /// Offset in the plain form (header included).
        offset: usize,
        /// What was wrong.
        reason: String,
    },
    /// Bytes after the end of the pack.
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

impl fmt::Display for PackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackError::Truncated { offset } => write!(f, "packed changes truncated at byte {offset}"),
            PackError::UnknownFormat { found } => write!(f, "unknown packed-changes format {found}"),
            PackError::UnknownCoding { found } => write!(f, "unknown packed-changes coding {found}"),
            PackError::TooLarge {
                offset,
                what,
                count,
                limit,
            } => write!(
                f,
                "packed changes at byte {offset}: {count} {what}, more than the {limit} allowed"
            ),
            PackError::Malformed { offset, reason } => write!(f, "malformed packed changes at byte {offset}: {reason}"),
            PackError::TrailingBytes { count } => write!(f, "{count} bytes after the packed changes"),
        }
    }
}

impl std::error::Error for PackError {}

// ---- byte contexts ----

/// What an integer is. Byte `i` of a varint has context
/// `VARINT_CTXS * role + min(i, VARINT_CTXS - 1)`.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Role {
    /// Table sizes, change counts, lengths of segment lists, arrays, objects.
    Count = 0,
    /// A change's head (op count, collection flag, id form).
    Head = 1,
    /// An op's code (kind and stamp mode).
    Code = 2,
    /// A path reference (table index or inline segment count).
    Path = 3,
    /// A string reference (table index or inline length).
    Str = 4,
    /// A peer-table index.
    Peer = 5,
    /// An HLC delta.
    Stamp = 6,
    /// Integers, decimal floats, counter numbers, raw HLCs, lengths.
    Int = 7,
    /// A value tag (nested values, counter numbers).
    Tag = 8,
}

/// Contexts per role: a varint's first, second, third, and later bytes.
const VARINT_CTXS: u8 = 4;
/// Context of string bytes.
const CTX_TEXT: u8 = 9 * VARINT_CTXS;
/// Context of bytes that are random by nature (hex ids, peer ids, raw
/// floats): range-coded as direct bits, with no model.
const CTX_RAW: u8 = CTX_TEXT + 1;
/// Contexts with a model (all but [`CTX_RAW`]).
const MODELLED_CTXS: usize = CTX_RAW as usize;

// ---- op codes and value tags ----

const SET_ABSENT: u8 = 0;
const SET_OBJECT: u8 = 1;
/// `SET_VALUE + tag`: a register holding a value with that tag.
const SET_VALUE: u8 = 2;
const SET_ATTACHMENT: u8 = 11;
const COUNT: u8 = 12;
const RESTART: u8 = 13;
const FLOOR: u8 = 14;
const SEEN: u8 = 15;
const DELETE: u8 = 16;
const KIND_MASK: u8 = 0x1f;
const MODE_SHIFT: u32 = 5;

/// Stamp modes (bits 5-6 of an op code).
const STAMP_SAME: u8 = 0;
const STAMP_SAME_PEER: u8 = 1;
const STAMP_PEER: u8 = 2;

const T_NULL: u8 = 0;
const T_FALSE: u8 = 1;
const T_TRUE: u8 = 2;
const T_INT: u8 = 3;
const T_DECIMAL: u8 = 4;
const T_F64: u8 = 5;
const T_STR: u8 = 6;
const T_ARRAY: u8 = 7;
const T_OBJECT: u8 = 8;

/// Id forms (low 3 bits of a change head).
const ID_HEX16: u64 = 0;
const ID_STR: u64 = 1;
const ID_INT: u64 = 2;
const ID_VALUE: u64 = 3;
const HEAD_NEW_COLLECTION: u64 = 0b1000;
const HEAD_OPS_SHIFT: u32 = 4;

/// Powers of ten a decimal float may be divided by (all exact in `f64`).
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];
/// Mantissas of decimal floats stay below this (exact in `f64`).
const DECIMAL_MANTISSA_LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53

const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;
const WALL_LIMIT: i64 = 1 << 48;

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// `f` as `m / 10^e` with `|m| < 2^53` and `e <= 15`, when that division
/// gives back exactly `f` (so `12.5`, `0.1`, `1999.99`; not `-0.0`).
fn decimal(f: f64) -> Option<(i64, u32)> {
    if !f.is_finite() {
        return None;
    }
    for (e, &p) in POW10.iter().enumerate() {
        let m = (f * p).round();
        if m.abs() >= DECIMAL_MANTISSA_LIMIT {
            return None;
        }
        // Through the integer, as the decoder computes it (`-0.0` fails here).
        if ((m as i64) as f64 / p).to_bits() == f.to_bits() {
            return Some((m as i64, e as u32));
        }
    }
    None
}

fn is_hex16(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn hex_nibble(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        _ => b - b'a' + 10,
    }
}

// ---- encoding ----

/// The plain form being written, with the context of every byte.
#[derive(Default)]
struct Out {
    bytes: Vec<u8>,
    /// Empty when contexts are not recorded (the body stays plain).
    ctxs: Vec<u8>,
    /// Record each byte's context (needed only for range coding).
    with_ctxs: bool,
    /// Count bytes without storing them (the counting pass: its output is
    /// thrown away, so it only measures).
    discard: bool,
    /// Bytes written while discarding.
    counted: usize,
}

impl Out {
    fn new(with_ctxs: bool, discard: bool) -> Out {
        Out {
            with_ctxs,
            discard,
            ..Out::default()
        }
    }

    #[inline]
    fn byte(&mut self, ctx: u8, b: u8) {
        if self.discard {
            self.counted += 1;
            return;
        }
        self.bytes.push(b);
        if self.with_ctxs {
            self.ctxs.push(ctx);
        }
    }

    fn varint(&mut self, role: Role, mut v: u64) {
        let first = VARINT_CTXS * role as u8;
        let mut i = 0;
        while v >= 0x80 {
            self.byte(first + i, (v as u8) | 0x80);
            v >>= 7;
            i = (i + 1).min(VARINT_CTXS - 1);
        }
        self.byte(first + i, v as u8);
    }

    fn run(&mut self, ctx: u8, bytes: &[u8]) {
        if self.discard {
            self.counted += bytes.len();
            return;
        }
        self.bytes.extend_from_slice(bytes);
        if self.with_ctxs {
            self.ctxs.resize(self.ctxs.len() + bytes.len(), ctx);
        }
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.run(CTX_RAW, bytes);
    }

    fn text(&mut self, s: &str) {
        self.run(CTX_TEXT, s.as_bytes());
    }
}

/// Interning tables and the running state of the stamp deltas.
struct Enc<'a> {
    out: Out,
    peers: Vec<u64>,
    peer_index: HashMap<u64, usize>,
    /// Strings in the table, by first use.
    strs: Vec<&'a str>,
    str_index: HashMap<&'a str, usize>,
    /// While counting: uses of each string, and first-use order.
    str_uses: HashMap<&'a str, u32>,
    str_order: Vec<&'a str>,
    paths: Vec<&'a [String]>,
    path_index: HashMap<&'a [String], usize>,
    /// The previous op's stamp and its peer's index.
    prev: Option<(usize, Stamp)>,
    /// Per peer index: the HLC of its previous stamp (0 at first).
    last_hlc: Vec<u64>,
    counting: bool,
}

impl<'a> Enc<'a> {
    fn new() -> Self {
        Enc {
            out: Out::default(),
            peers: Vec::new(),
            peer_index: HashMap::default(),
            strs: Vec::new(),
            str_index: HashMap::default(),
            str_uses: HashMap::default(),
            str_order: Vec::new(),
            paths: Vec::new(),
            path_index: HashMap::default(),
            prev: None,
            last_hlc: Vec::new(),
            counting: false,
        }
    }

    fn intern_peer(&mut self, p: PeerId) {
        if !self.peer_index.contains_key(&p.0) {
            self.peer_index.insert(p.0, self.peers.len());
            self.peers.push(p.0);
        }
    }

    fn peer(&self, p: PeerId) -> usize {
        self.peer_index.get(&p.0).copied().unwrap_or(0)
    }

    fn str(&mut self, s: &'a str) {
        if self.counting {
            let uses = self.str_uses.entry(s).or_insert(0);
            if *uses == 0 {
                self.str_order.push(s);
            }
            *uses += 1;
        }
        match self.str_index.get(s) {
            Some(&i) => self.out.varint(Role::Str, (i as u64) << 1),
            None => {
                self.out.varint(Role::Str, ((s.len() as u64) << 1) | 1);
                self.out.text(s);
            }
        }
    }

    fn path(&mut self, path: &'a [String]) {
        match self.path_index.get(path) {
            Some(&i) => self.out.varint(Role::Path, (i as u64) << 1),
            None => {
                self.out.varint(Role::Path, ((path.len() as u64) << 1) | 1);
                for seg in path {
                    self.str(seg);
                }
            }
        }
    }

    /// Writes the op code with the stamp's mode, then the stamp's delta.
    fn code_and_stamp(&mut self, kind: u8, s: Stamp) {
        let idx = self.peer(s.peer);
        let mode = match self.prev {
            Some((_, p)) if p == s => STAMP_SAME,
            Some((_, p)) if p.peer == s.peer => STAMP_SAME_PEER,
            _ => STAMP_PEER,
        };
        self.out.varint(Role::Code, u64::from(kind | (mode << MODE_SHIFT)));
        if mode == STAMP_SAME {
            return;
        }
        if mode == STAMP_PEER {
            self.out.varint(Role::Peer, idx as u64);
        }
        let last = self.last_hlc.get(idx).copied().unwrap_or(0);
        let (wall, logical) = ((s.hlc.0 >> LOGICAL_BITS) as i64, s.hlc.0 & LOGICAL_MASK);
        let (last_wall, last_logical) = ((last >> LOGICAL_BITS) as i64, last & LOGICAL_MASK);
        let dw = wall - last_wall;
        // Relative to the successor of the last HLC: consecutive writes of
        // one transaction (logical + 1) cost one byte.
        let lp = if dw == 0 {
            zigzag(logical as i64 - last_logical as i64 - 1)
        } else {
            logical
        };
        self.out.varint(Role::Stamp, (zigzag(dw) << 1) | u64::from(lp != 0));
        if lp != 0 {
            self.out.varint(Role::Stamp, lp);
        }
        if let Some(slot) = self.last_hlc.get_mut(idx) {
            *slot = s.hlc.0;
        }
        self.prev = Some((idx, s));
    }

    fn float(&mut self, f: f64) -> u8 {
        match decimal(f) {
            Some((m, e)) => {
                self.out.varint(Role::Int, (zigzag(m) << 4) | u64::from(e));
                T_DECIMAL
            }
            None => {
                self.out.raw(&f.to_le_bytes());
                T_F64
            }
        }
    }

    fn num(&mut self, n: Num) {
        match n {
            Num::Int(i) => {
                self.out.varint(Role::Tag, u64::from(T_INT));
                self.out.varint(Role::Int, zigzag(i));
            }
            Num::Float(f) => {
                let tag = if decimal(f).is_some() { T_DECIMAL } else { T_F64 };
                self.out.varint(Role::Tag, u64::from(tag));
                self.float(f);
            }
        }
    }

    /// The tag of a value; its payload is written by [`Enc::value_body`].
    fn tag(v: &Value) -> u8 {
        match v {
            Value::Null => T_NULL,
            Value::Bool(false) => T_FALSE,
            Value::Bool(true) => T_TRUE,
            Value::Int(_) => T_INT,
            Value::Float(f) if decimal(*f).is_some() => T_DECIMAL,
            Value::Float(_) => T_F64,
            Value::String(_) => T_STR,
            Value::Array(_) => T_ARRAY,
            Value::Object(_) => T_OBJECT,
        }
    }

    fn value_body(&mut self, v: &'a Value) {
        match v {
            Value::Null | Value::Bool(_) => {}
            Value::Int(i) => self.out.varint(Role::Int, zigzag(*i)),
            Value::Float(f) => {
                self.float(*f);
            }
            Value::String(s) => self.str(s),
            Value::Array(items) => {
                self.out.varint(Role::Count, items.len() as u64);
                for item in items {
                    self.value(item);
                }
            }
            Value::Object(fields) => self.object(fields),
        }
    }

    fn value(&mut self, v: &'a Value) {
        self.out.varint(Role::Tag, u64::from(Self::tag(v)));
        self.value_body(v);
    }

    fn object(&mut self, fields: &'a BTreeMap<String, Value>) {
        self.out.varint(Role::Count, fields.len() as u64);
        for (k, v) in fields {
            self.str(k);
            self.value(v);
        }
    }

    fn id_form(id: &Value) -> u64 {
        match id {
            Value::String(s) if is_hex16(s) => ID_HEX16,
            Value::String(_) => ID_STR,
            Value::Int(_) => ID_INT,
            _ => ID_VALUE,
        }
    }

    fn id_body(&mut self, id: &'a Value, form: u64) {
        match (form, id) {
            (ID_HEX16, Value::String(s)) => {
                let b = s.as_bytes();
                let mut bytes = [0u8; 8];
                for (i, out) in bytes.iter_mut().enumerate() {
                    *out = (hex_nibble(b[2 * i]) << 4) | hex_nibble(b[2 * i + 1]);
                }
                self.out.raw(&bytes);
            }
            (ID_STR, Value::String(s)) => self.str(s),
            (ID_INT, Value::Int(i)) => self.out.varint(Role::Int, zigzag(*i)),
            _ => self.value(id),
        }
    }

    fn op(&mut self, op: &'a Op) {
        match op {
            Op::Set { path, stamp, val } => {
                let kind = match val {
                    RegVal::Absent => SET_ABSENT,
                    RegVal::Object => SET_OBJECT,
                    RegVal::Value(v) => SET_VALUE + Self::tag(v),
                    RegVal::Attachment(_) => SET_ATTACHMENT,
                };
                self.code_and_stamp(kind, *stamp);
                self.path(path);
                match val {
                    RegVal::Absent | RegVal::Object => {}
                    RegVal::Value(v) => self.value_body(v),
                    RegVal::Attachment(a) => {
                        self.str(&a.id);
                        self.out.varint(Role::Int, a.len);
                        self.object(&a.meta);
                    }
                }
            }
            Op::Count { path, stamp, total } => {
                self.code_and_stamp(COUNT, *stamp);
                self.path(path);
                self.num(*total);
            }
            Op::Restart { path, stamp, base } => {
                self.code_and_stamp(RESTART, *stamp);
                self.path(path);
                self.num(*base);
            }
            Op::Floor {
                path,
                peer,
                hlc,
                total,
                by,
            } => {
                self.code_and_stamp(FLOOR, *by);
                self.path(path);
                self.out.varint(Role::Peer, self.peer(*peer) as u64);
                self.out.varint(Role::Int, hlc.0);
                self.num(*total);
            }
            Op::Seen { stamp } => self.code_and_stamp(SEEN, *stamp),
            Op::Delete { stamp, seen } => {
                self.code_and_stamp(DELETE, *stamp);
                self.out.varint(Role::Count, seen.len() as u64);
                for (p, h) in seen.iter() {
                    self.out.varint(Role::Peer, self.peer(p) as u64);
                    self.out.varint(Role::Int, h.0);
                }
            }
        }
    }

    /// The whole body: tables, then changes.
    fn body(&mut self, changes: &'a [Change]) {
        self.prev = None;
        self.last_hlc = vec![0; self.peers.len()];
        self.out.varint(Role::Count, self.peers.len() as u64);
        for i in 0..self.peers.len() {
            let p = self.peers[i];
            self.out.raw(&p.to_le_bytes());
        }
        self.out.varint(Role::Count, self.strs.len() as u64);
        for i in 0..self.strs.len() {
            let s = self.strs[i];
            self.out.varint(Role::Str, s.len() as u64);
            self.out.text(s);
        }
        self.out.varint(Role::Count, self.paths.len() as u64);
        for i in 0..self.paths.len() {
            let path = self.paths[i];
            self.out.varint(Role::Count, path.len() as u64);
            for seg in path {
                self.str(seg);
            }
        }
        self.out.varint(Role::Count, changes.len() as u64);
        let mut collection: Option<&str> = None;
        for c in changes {
            let form = Self::id_form(&c.id);
            let new_collection = collection != Some(c.collection.as_str());
            let head =
                ((c.ops.len() as u64) << HEAD_OPS_SHIFT) | if new_collection { HEAD_NEW_COLLECTION } else { 0 } | form;
            self.out.varint(Role::Head, head);
            if new_collection {
                self.str(&c.collection);
                collection = Some(&c.collection);
            }
            self.id_body(&c.id, form);
            for op in &c.ops {
                self.op(op);
            }
        }
    }
}

/// The plain body of `changes`, with the context of each of its bytes
/// unless the body would be larger than `ctx_max_bytes` (then `ctxs` is
/// empty: the body is only ever sent plain).
fn plain_body(changes: &[Change], ctx_max_bytes: usize) -> Out {
    let mut enc = Enc::new();
    // Peers, and paths used more than once, in first-use order.
    let mut path_uses: HashMap<&[String], u32> = HashMap::default();
    let mut path_order: Vec<&[String]> = Vec::new();
    for c in changes {
        for op in &c.ops {
            enc.intern_peer(op.stamp().peer);
            let path: Option<&Path> = match op {
                Op::Set { path, .. } | Op::Count { path, .. } | Op::Restart { path, .. } => Some(path),
                Op::Floor { path, peer, .. } => {
                    enc.intern_peer(*peer);
                    Some(path)
                }
                Op::Delete { seen, .. } => {
                    for (p, _) in seen.iter() {
                        enc.intern_peer(p);
                    }
                    None
                }
                Op::Seen { .. } => None,
            };
            if let Some(path) = path {
                let uses = path_uses.entry(path.as_slice()).or_insert(0);
                if *uses == 0 {
                    path_order.push(path.as_slice());
                }
                *uses += 1;
            }
        }
    }
    for p in path_order {
        if path_uses.get(p).copied().unwrap_or(0) >= 2 {
            enc.path_index.insert(p, enc.paths.len());
            enc.paths.push(p);
        }
    }
    // A counting pass finds the strings written more than once (and
    // bounds the body's size: without the string table it is larger).
    enc.counting = true;
    enc.out = Out::new(false, true);
    enc.body(changes);
    enc.counting = false;
    let upper_bytes = enc.out.counted;
    for s in std::mem::take(&mut enc.str_order) {
        if enc.str_uses.get(s).copied().unwrap_or(0) >= 2 {
            enc.str_index.insert(s, enc.strs.len());
            enc.strs.push(s);
        }
    }
    let with_ctxs = upper_bytes <= ctx_max_bytes;
    enc.out = Out::new(with_ctxs, false);
    enc.out.bytes.reserve(upper_bytes);
    if with_ctxs {
        enc.out.ctxs.reserve(upper_bytes);
    }
    enc.body(changes);
    enc.out
}

/// Packs a batch of changes: whichever of the plain and range-coded forms
/// is smaller.
pub fn pack(changes: &[Change]) -> Vec<u8> {
    pack_bounded(changes, usize::MAX)
}

/// Packs a batch of changes like [`pack`], except that a body larger than
/// about `range_max_bytes` (plain) is sent plain without trying the range
/// coder: for bulk transfers on fast links the coder costs more CPU on
/// both ends (about 8 adaptive binary decisions per byte) than the bytes it
/// saves. Decoders need nothing new: `Plain` is a coding of format 1.
pub fn pack_bounded(changes: &[Change], range_max_bytes: usize) -> Vec<u8> {
    let body = plain_body(changes, range_max_bytes);
    // A body this small cannot shrink by more than the coder's flush.
    if body.bytes.len() <= 8 || body.ctxs.len() != body.bytes.len() {
        return with_header(Coding::Plain, &body.bytes);
    }
    let coded = range_encode(&body);
    if coded.len() < body.bytes.len() {
        with_header(Coding::Range, &coded)
    } else {
        with_header(Coding::Plain, &body.bytes)
    }
}

/// Packs a batch of changes with the given body coding.
pub fn pack_as(changes: &[Change], coding: Coding) -> Vec<u8> {
    match coding {
        Coding::Plain => with_header(coding, &plain_body(changes, 0).bytes),
        Coding::Range => with_header(coding, &range_encode(&plain_body(changes, usize::MAX))),
    }
}

fn with_header(coding: Coding, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.push(PACK_FORMAT);
    out.push(coding.byte());
    out.extend_from_slice(body);
    out
}

// ---- range coding (LZMA's binary range coder) ----

const PROB_BITS: u32 = 11;
const PROB_ONE: u32 = 1 << PROB_BITS;
const PROB_INIT: u16 = 1 << (PROB_BITS - 1);
/// The slowest adaptation: a probability moves by 1/32 of its distance.
const MAX_SHIFT: u32 = 5;
/// Probabilities stay within these (of 2048), so a surprise costs at most
/// about 6 bits. It also bounds how far one bit shrinks the range: from at
/// least `RANGE_TOP` (2^24) to at least `(2^24 >> 11) * 31`, above 2^17,
/// whichever the bit (a 0 keeps `p` of `range >> 11` parts, a 1 at least
/// the other `2048 - p`), so a single 8-bit shift brings it back over
/// `RANGE_TOP`.
const PROB_MIN: u16 = 31;
const PROB_MAX: u16 = 2017;
const RANGE_TOP: u32 = 1 << 24;

/// The probability that the next bit is 0 (of 2048), and how many bits
/// it has seen. A fresh model learns fast (it moves by 1/2, then 1/4, ...)
/// and settles at 1/32: `shift = min(5, floor(log2(seen + 2)))`, which
/// tracks the frequency counted so far while a batch is small.
#[derive(Clone, Copy)]
struct Prob {
    p: u16,
    seen: u8,
}

/// `min(MAX_SHIFT, floor(log2(seen + 2)))` for every `seen` a model can
/// reach (0..=62): a load instead of a logarithm on the hot path.
const SHIFTS: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut seen = 0;
    while seen < 64 {
        let shift = (seen as u32 + 2).ilog2();
        t[seen] = if shift > MAX_SHIFT {
            MAX_SHIFT as u8
        } else {
            shift as u8
        };
        seen += 1;
    }
    t
};

impl Prob {
    #[inline(always)]
    fn update(&mut self, bit: u8) {
        let shift = u32::from(SHIFTS[usize::from(self.seen & 63)]);
        let p = u32::from(self.p);
        let up = p + ((PROB_ONE - p) >> shift);
        let down = p - (p >> shift);
        let p = if bit == 0 { up } else { down };
        self.p = (p as u16).clamp(PROB_MIN, PROB_MAX);
        self.seen += u8::from(self.seen < 62);
    }
}

/// The models of every context, each made fresh on its first use: a
/// small batch touches a few contexts, and filling all of them up front
/// cost more than coding it.
struct Models {
    /// Per context, where its 256 models start in `tables` (`u32::MAX`:
    /// not used yet).
    start: [u32; MODELLED_CTXS],
    tables: Vec<Prob>,
}

impl Models {
    fn new() -> Models {
        Models {
            start: [u32::MAX; MODELLED_CTXS],
            // Room for the contexts a typical batch touches, so the table
            // is not moved as they are first used.
            tables: Vec::with_capacity(TYPICAL_CTXS * 256),
        }
    }

    /// The 256 models of `ctx` (made on first use); `None` if `ctx` is not
    /// modelled.
    #[inline]
    fn of(&mut self, ctx: u8) -> Option<&mut [Prob; 256]> {
        let slot = self.start.get_mut(usize::from(ctx))?;
        if *slot == u32::MAX {
            *slot = self.tables.len() as u32;
            self.tables
                .resize(self.tables.len() + 256, Prob { p: PROB_INIT, seen: 0 });
        }
        let base = *slot as usize;
        self.tables.get_mut(base..base + 256)?.try_into().ok()
    }
}

/// Contexts a batch of a few changes uses (op codes, paths, stamps, ids,
/// values, counts, text): [`Models::new`] makes room for this many.
const TYPICAL_CTXS: usize = 16;

struct RangeEncoder {
    low: u64,
    range: u32,
    cache: u8,
    cache_size: u64,
    out: Vec<u8>,
}

impl RangeEncoder {
    fn new() -> Self {
        RangeEncoder {
            low: 0,
            range: u32::MAX,
            cache: 0,
            cache_size: 1,
            out: Vec::new(),
        }
    }

    fn shift_low(&mut self) {
        if self.low < 0xFF00_0000 || self.low > 0xFFFF_FFFF {
            let carry = (self.low >> 32) as u8;
            let mut temp = self.cache;
            loop {
                self.out.push(temp.wrapping_add(carry));
                temp = 0xFF;
                self.cache_size -= 1;
                if self.cache_size == 0 {
                    break;
                }
            }
            self.cache = ((self.low >> 24) & 0xFF) as u8;
        }
        self.cache_size += 1;
        self.low = (self.low & 0x00FF_FFFF) << 8;
    }

    fn normalize(&mut self) {
        while self.range < RANGE_TOP {
            self.range <<= 8;
            self.shift_low();
        }
    }

    /// Codes the 8 bits of `byte`, most significant first, each with the
    /// model of its node in the byte's binary tree. The hot loop of
    /// packing: the coder's state stays in locals, and one shift restores
    /// the range after a bit (see [`PROB_MIN`]).
    #[inline]
    fn byte(&mut self, models: &mut [Prob; 256], byte: u8) {
        let (mut low, mut range) = (self.low, self.range);
        let mut m = 1usize;
        for i in (0..8).rev() {
            let bit = (byte >> i) & 1;
            let prob = &mut models[m & 0xff];
            let bound = (range >> PROB_BITS) * u32::from(prob.p);
            if bit == 0 {
                range = bound;
            } else {
                low += u64::from(bound);
                range -= bound;
            }
            prob.update(bit);
            if range < RANGE_TOP {
                range <<= 8;
                self.low = low;
                self.shift_low();
                low = self.low;
            }
            debug_assert!(range >= RANGE_TOP);
            m = (m << 1) | usize::from(bit);
        }
        (self.low, self.range) = (low, range);
    }

    fn direct(&mut self, bit: u8) {
        self.range >>= 1;
        if bit != 0 {
            self.low += u64::from(self.range);
        }
        self.normalize();
    }

    /// The coded bytes, without the leading byte LZMA always writes as 0.
    fn finish(mut self) -> Vec<u8> {
        for _ in 0..5 {
            self.shift_low();
        }
        debug_assert_eq!(self.out.first(), Some(&0));
        self.out.split_off(1.min(self.out.len()))
    }
}

fn range_encode(body: &Out) -> Vec<u8> {
    debug_assert_eq!(
        body.bytes.len(),
        body.ctxs.len(),
        "range coding needs every byte's context"
    );
    let mut models = Models::new();
    let mut enc = RangeEncoder::new();
    for (&b, &ctx) in body.bytes.iter().zip(&body.ctxs) {
        if ctx == CTX_RAW {
            for i in (0..8).rev() {
                enc.direct((b >> i) & 1);
            }
            continue;
        }
        let models = models.of(ctx).expect("the plain form's contexts are all modelled");
        enc.byte(models, b);
    }
    enc.finish()
}

struct RangeDecoder<'a> {
    buf: &'a [u8],
    pos: usize,
    range: u32,
    code: u32,
    models: Models,
}

impl<'a> RangeDecoder<'a> {
    fn new(buf: &'a [u8]) -> Option<Self> {
        let first = buf.get(..4)?;
        Some(RangeDecoder {
            buf,
            pos: 4,
            range: u32::MAX,
            code: u32::from_be_bytes([first[0], first[1], first[2], first[3]]),
            models: Models::new(),
        })
    }

    fn normalize(&mut self) -> Option<()> {
        if self.range < RANGE_TOP {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            self.range <<= 8;
            self.code = (self.code << 8) | u32::from(b);
        }
        Some(())
    }

    fn direct(&mut self) -> Option<u8> {
        self.range >>= 1;
        let bit = if self.code >= self.range {
            self.code -= self.range;
            1
        } else {
            0
        };
        self.normalize()?;
        Some(bit)
    }

    /// The next byte of context `ctx`; `None` when the input ran out.
    fn byte(&mut self, ctx: u8) -> Option<u8> {
        let mut b = 0u8;
        if ctx == CTX_RAW {
            for _ in 0..8 {
                b = (b << 1) | self.direct()?;
            }
            return Some(b);
        }
        // The hot loop of unpacking: the coder's state in locals, the
        // context's 256 models as one slice (one model per node of the
        // byte's binary tree, as the encoder's `RangeEncoder::byte`).
        let models = self.models.of(ctx)?;
        let (mut range, mut code, mut pos) = (self.range, self.code, self.pos);
        let mut m = 1usize;
        for _ in 0..8 {
            let prob = &mut models[m & 0xff];
            let bound = (range >> PROB_BITS) * u32::from(prob.p);
            let bit = if code < bound {
                range = bound;
                0
            } else {
                code -= bound;
                range -= bound;
                1
            };
            prob.update(bit);
            if range < RANGE_TOP {
                let b = *self.buf.get(pos)?;
                pos += 1;
                range <<= 8;
                code = (code << 8) | u32::from(b);
            }
            m = (m << 1) | usize::from(bit);
        }
        (self.range, self.code, self.pos) = (range, code, pos);
        Some(m as u8)
    }
}

// ---- decoding ----

enum Src<'a> {
    Plain { buf: &'a [u8], pos: usize },
    Range(Box<RangeDecoder<'a>>),
}

/// A cursor over the plain body (read as is, or decoded on the fly),
/// keeping the budgets.
struct In<'a> {
    src: Src<'a>,
    /// Bytes before the body, for offsets in errors.
    header: usize,
    /// Plain body bytes read so far.
    consumed: usize,
    limits: UnpackLimits,
    /// Estimated bytes of output left.
    budget: usize,
    ops: usize,
}

impl<'a> In<'a> {
    fn offset(&self) -> usize {
        self.header + self.consumed
    }

    fn malformed<T>(&self, reason: impl Into<String>) -> Result<T, PackError> {
        Err(PackError::Malformed {
            offset: self.offset(),
            reason: reason.into(),
        })
    }

    fn too_large<T>(&self, what: &'static str, count: u64, limit: u64) -> Result<T, PackError> {
        Err(PackError::TooLarge {
            offset: self.offset(),
            what,
            count,
            limit,
        })
    }

    /// Plain body bytes that may still be read.
    fn remaining(&self) -> usize {
        let by_limit = self.limits.max_body_bytes.saturating_sub(self.consumed);
        match &self.src {
            Src::Plain { buf, pos } => by_limit.min(buf.len().saturating_sub(*pos)),
            Src::Range(_) => by_limit,
        }
    }

    fn byte(&mut self, ctx: u8) -> Result<u8, PackError> {
        if self.consumed >= self.limits.max_body_bytes {
            let limit = self.limits.max_body_bytes as u64;
            return self.too_large("body bytes", limit.saturating_add(1), limit);
        }
        let b = match &mut self.src {
            Src::Plain { buf, pos } => {
                let b = buf.get(*pos).copied();
                *pos += usize::from(b.is_some());
                b
            }
            Src::Range(d) => d.byte(ctx),
        };
        let b = b.ok_or(PackError::Truncated { offset: self.offset() })?;
        self.consumed += 1;
        Ok(b)
    }

    fn varint(&mut self, role: Role) -> Result<u64, PackError> {
        let first = VARINT_CTXS * role as u8;
        let mut v = 0u64;
        for i in 0..10u8 {
            let b = self.byte(first + i.min(VARINT_CTXS - 1))?;
            if i == 9 && b > 1 {
                return self.malformed("varint overflows 64 bits");
            }
            v |= u64::from(b & 0x7f) << (7 * u32::from(i));
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        self.malformed("varint longer than 10 bytes")
    }

    /// A count of items of at least `min_bytes` each, at most `max`.
    fn count(&mut self, what: &'static str, min_bytes: usize, max: usize) -> Result<usize, PackError> {
        let n = self.varint(Role::Count)?;
        self.check_count(what, n, min_bytes, max)
    }

    fn check_count(&self, what: &'static str, n: u64, min_bytes: usize, max: usize) -> Result<usize, PackError> {
        let by_bytes = self.remaining() / min_bytes.max(1);
        let limit = by_bytes.min(max);
        if n > limit as u64 {
            return self.too_large(what, n, limit as u64);
        }
        Ok(n as usize)
    }

    /// Charges `bytes` of estimated output to the budget.
    fn charge(&mut self, bytes: usize) -> Result<(), PackError> {
        match self.budget.checked_sub(bytes) {
            Some(left) => {
                self.budget = left;
                Ok(())
            }
            None => self.too_large(
                "estimated bytes of decoded changes",
                (self.limits.max_output_bytes - self.budget).saturating_add(bytes) as u64,
                self.limits.max_output_bytes as u64,
            ),
        }
    }

    fn text(&mut self, len: usize) -> Result<String, PackError> {
        self.charge(size_of::<String>() + len)?;
        // A plain body's text is one slice (the byte-by-byte path below
        // reports truncation and the body limit).
        if let Src::Plain { buf, pos } = &mut self.src {
            let fits = self.consumed.saturating_add(len) <= self.limits.max_body_bytes;
            if let Some(slice) = buf.get(*pos..pos.saturating_add(len)).filter(|_| fits) {
                *pos += len;
                self.consumed += len;
                return match std::str::from_utf8(slice) {
                    Ok(s) => Ok(s.to_owned()),
                    Err(_) => self.malformed("string is not UTF-8"),
                };
            }
        }
        // The length is checked against the bytes left, but a range-coded
        // body's are only bounded by the limit: grow as bytes arrive.
        let mut bytes = Vec::with_capacity(len.min(4096));
        for _ in 0..len {
            bytes.push(self.byte(CTX_TEXT)?);
        }
        match String::from_utf8(bytes) {
            Ok(s) => Ok(s),
            Err(_) => self.malformed("string is not UTF-8"),
        }
    }

    fn raw8(&mut self) -> Result<[u8; 8], PackError> {
        let mut out = [0u8; 8];
        for b in &mut out {
            *b = self.byte(CTX_RAW)?;
        }
        Ok(out)
    }
}

/// The tables and running state of a decode.
struct Dec<'a> {
    r: In<'a>,
    peers: Vec<PeerId>,
    strs: Vec<String>,
    paths: Vec<Path>,
    /// The previous op's stamp and its peer's index.
    prev: Option<(usize, Stamp)>,
    last_hlc: Vec<u64>,
}

impl<'a> Dec<'a> {
    fn str(&mut self) -> Result<String, PackError> {
        let x = self.r.varint(Role::Str)?;
        if x & 1 == 1 {
            let len = self.r.check_count("string bytes", x >> 1, 1, usize::MAX)?;
            return self.r.text(len);
        }
        let i = x >> 1;
        match self.strs.get(usize::try_from(i).unwrap_or(usize::MAX)) {
            Some(s) => {
                let s = s.clone();
                self.r.charge(size_of::<String>() + s.len())?;
                Ok(s)
            }
            None => self
                .r
                .malformed(format!("string {i} is not in the table of {}", self.strs.len())),
        }
    }

    fn segments(&mut self, n: usize) -> Result<Path, PackError> {
        if n > MAX_DEPTH {
            return self
                .r
                .malformed(format!("path of {n} segments is deeper than {MAX_DEPTH}"));
        }
        self.r.charge(size_of::<Path>())?;
        let mut path = Vec::with_capacity(n);
        for _ in 0..n {
            path.push(self.str()?);
        }
        Ok(path)
    }

    fn path(&mut self) -> Result<Path, PackError> {
        let x = self.r.varint(Role::Path)?;
        if x & 1 == 1 {
            let n = self.r.check_count("path segments", x >> 1, 1, MAX_DEPTH + 1)?;
            return self.segments(n);
        }
        let i = x >> 1;
        match self.paths.get(usize::try_from(i).unwrap_or(usize::MAX)) {
            Some(p) => {
                let p = p.clone();
                let bytes: usize = p.iter().map(|s| size_of::<String>() + s.len()).sum();
                self.r.charge(size_of::<Path>() + bytes)?;
                Ok(p)
            }
            None => self
                .r
                .malformed(format!("path {i} is not in the table of {}", self.paths.len())),
        }
    }

    fn peer(&mut self) -> Result<(usize, PeerId), PackError> {
        let i = self.r.varint(Role::Peer)?;
        match self.peers.get(usize::try_from(i).unwrap_or(usize::MAX)) {
            Some(&p) => Ok((i as usize, p)),
            None => self
                .r
                .malformed(format!("peer {i} is not in the table of {}", self.peers.len())),
        }
    }

    /// An op code and its stamp: (kind, stamp).
    fn code_and_stamp(&mut self) -> Result<(u8, Stamp), PackError> {
        let code = self.r.varint(Role::Code)?;
        if code > 0x7f {
            return self.r.malformed(format!("unknown op code {code}"));
        }
        let (kind, mode) = (code as u8 & KIND_MASK, (code as u8) >> MODE_SHIFT);
        let (idx, peer) = match (mode, self.prev) {
            (STAMP_SAME, Some((_, p))) => return Ok((kind, p)),
            (STAMP_SAME, None) => return self.r.malformed("op repeats the stamp of no earlier op"),
            (STAMP_SAME_PEER, Some((idx, p))) => (idx, p.peer),
            (STAMP_SAME_PEER, None) => return self.r.malformed("op repeats the peer of no earlier op"),
            (STAMP_PEER, _) => self.peer()?,
            _ => return self.r.malformed(format!("unknown stamp mode {mode}")),
        };
        let last = self.last_hlc.get(idx).copied().unwrap_or(0);
        let x = self.r.varint(Role::Stamp)?;
        let lp = if x & 1 == 1 { self.r.varint(Role::Stamp)? } else { 0 };
        let dw = unzigzag(x >> 1);
        let wall = ((last >> LOGICAL_BITS) as i64).checked_add(dw);
        let Some(wall) = wall.filter(|w| (0..WALL_LIMIT).contains(w)) else {
            return self.r.malformed("timestamp delta leaves the 48-bit wall-clock range");
        };
        let logical = if dw == 0 {
            ((last & LOGICAL_MASK) as i64 + 1).checked_add(unzigzag(lp))
        } else {
            i64::try_from(lp).ok()
        };
        let Some(logical) = logical.filter(|l| (0..=LOGICAL_MASK as i64).contains(l)) else {
            return self.r.malformed("timestamp's logical counter out of range");
        };
        let hlc = ((wall as u64) << LOGICAL_BITS) | logical as u64;
        if let Some(slot) = self.last_hlc.get_mut(idx) {
            *slot = hlc;
        }
        let stamp = Stamp { hlc: Hlc(hlc), peer };
        self.prev = Some((idx, stamp));
        Ok((kind, stamp))
    }

    fn float(&mut self, tag: u8) -> Result<f64, PackError> {
        let f = if tag == T_DECIMAL {
            let x = self.r.varint(Role::Int)?;
            let e = (x & 0xf) as usize;
            unzigzag(x >> 4) as f64 / POW10[e]
        } else {
            f64::from_le_bytes(self.r.raw8()?)
        };
        Ok(f)
    }

    fn num(&mut self) -> Result<Num, PackError> {
        let tag = self.r.varint(Role::Tag)?;
        match u8::try_from(tag).unwrap_or(u8::MAX) {
            T_INT => Ok(Num::Int(unzigzag(self.r.varint(Role::Int)?))),
            t @ (T_DECIMAL | T_F64) => Ok(Num::Float(self.float(t)?)),
            _ => self.r.malformed(format!("unknown number tag {tag}")),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, PackError> {
        let tag = self.r.varint(Role::Tag)?;
        if tag > u64::from(T_OBJECT) {
            return self.r.malformed(format!("unknown value tag {tag}"));
        }
        self.value_body(tag as u8, depth)
    }

    fn value_body(&mut self, tag: u8, depth: usize) -> Result<Value, PackError> {
        if depth > MAX_DEPTH {
            return self.r.malformed(format!("value nested deeper than {MAX_DEPTH} levels"));
        }
        self.r.charge(size_of::<Value>())?;
        Ok(match tag {
            T_NULL => Value::Null,
            T_FALSE => Value::Bool(false),
            T_TRUE => Value::Bool(true),
            T_INT => Value::Int(unzigzag(self.r.varint(Role::Int)?)),
            T_DECIMAL | T_F64 => {
                let f = self.float(tag)?;
                if !f.is_finite() {
                    return self.r.malformed("value float is not finite");
                }
                Value::Float(f)
            }
            T_STR => Value::String(self.str()?),
            T_ARRAY => {
                let n = self.r.count("array items", 1, usize::MAX)?;
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::Array(items)
            }
            _ => Value::Object(self.object(depth + 1)?),
        })
    }

    fn object(&mut self, depth: usize) -> Result<BTreeMap<String, Value>, PackError> {
        let n = self.r.count("object fields", 2, usize::MAX)?;
        let mut fields = BTreeMap::new();
        let mut last: Option<String> = None;
        for _ in 0..n {
            let k = self.str()?;
            if last.as_ref().is_some_and(|l| *l >= k) {
                return self.r.malformed("object keys not in strictly increasing order");
            }
            let v = self.value(depth)?;
            last = Some(k.clone());
            fields.insert(k, v);
        }
        Ok(fields)
    }

    fn id(&mut self, form: u64) -> Result<Value, PackError> {
        Ok(match form {
            ID_HEX16 => {
                self.r.charge(size_of::<Value>() + size_of::<String>() + 16)?;
                let mut s = String::with_capacity(16);
                for b in self.r.raw8()? {
                    for nibble in [b >> 4, b & 0xf] {
                        s.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
                    }
                }
                Value::String(s)
            }
            ID_STR => Value::String(self.str()?),
            ID_INT => Value::Int(unzigzag(self.r.varint(Role::Int)?)),
            ID_VALUE => self.value(0)?,
            _ => return self.r.malformed(format!("unknown id form {form}")),
        })
    }

    fn op(&mut self) -> Result<Op, PackError> {
        let (kind, stamp) = self.code_and_stamp()?;
        self.r.charge(size_of::<Op>())?;
        Ok(match kind {
            SET_ABSENT | SET_OBJECT => Op::Set {
                path: self.path()?,
                stamp,
                val: if kind == SET_ABSENT {
                    RegVal::Absent
                } else {
                    RegVal::Object
                },
            },
            k if (SET_VALUE..=SET_VALUE + T_OBJECT).contains(&k) => {
                let path = self.path()?;
                Op::Set {
                    path,
                    stamp,
                    val: RegVal::Value(self.value_body(k - SET_VALUE, 0)?),
                }
            }
            SET_ATTACHMENT => {
                let path = self.path()?;
                let id = self.str()?;
                let len = self.r.varint(Role::Int)?;
                let meta = self.object(1)?;
                Op::Set {
                    path,
                    stamp,
                    val: RegVal::Attachment(Attachment { id, len, meta }),
                }
            }
            COUNT => Op::Count {
                path: self.path()?,
                stamp,
                total: self.num()?,
            },
            RESTART => Op::Restart {
                path: self.path()?,
                stamp,
                base: self.num()?,
            },
            FLOOR => {
                let path = self.path()?;
                let (_, peer) = self.peer()?;
                let hlc = Hlc(self.r.varint(Role::Int)?);
                Op::Floor {
                    path,
                    peer,
                    hlc,
                    total: self.num()?,
                    by: stamp,
                }
            }
            SEEN => Op::Seen { stamp },
            DELETE => {
                let n = self.r.count("deletion's version-vector entries", 2, usize::MAX)?;
                self.r.charge(n.saturating_mul(4 * size_of::<u64>()))?;
                let mut seen = VersionVector::new();
                let mut last: Option<PeerId> = None;
                for _ in 0..n {
                    let (_, peer) = self.peer()?;
                    if last.is_some_and(|l| l >= peer) {
                        return self.r.malformed("deletion's peers not in strictly increasing order");
                    }
                    last = Some(peer);
                    let hlc = Hlc(self.r.varint(Role::Int)?);
                    seen.observe(Stamp { hlc, peer });
                }
                Op::Delete { stamp, seen }
            }
            _ => return self.r.malformed(format!("unknown op kind {kind}")),
        })
    }

    fn body(&mut self) -> Result<Vec<Change>, PackError> {
        let n = self.r.count("peers", 8, usize::MAX)?;
        self.r.charge(n.saturating_mul(3 * size_of::<u64>()))?;
        for _ in 0..n {
            self.peers.push(PeerId(u64::from_le_bytes(self.r.raw8()?)));
        }
        self.last_hlc = vec![0; self.peers.len()];
        let n = self.r.count("table strings", 1, usize::MAX)?;
        for _ in 0..n {
            let len = self.r.varint(Role::Str)?;
            let len = self.r.check_count("string bytes", len, 1, usize::MAX)?;
            let s = self.r.text(len)?;
            self.strs.push(s);
        }
        let n = self.r.count("table paths", 1, usize::MAX)?;
        for _ in 0..n {
            let segs = self.r.count("path segments", 1, MAX_DEPTH + 1)?;
            let path = self.segments(segs)?;
            self.paths.push(path);
        }
        let n = self.r.count("changes", 2, self.r.limits.max_changes)?;
        let mut changes = Vec::with_capacity(n.min(4096));
        let mut collection: Option<String> = None;
        for _ in 0..n {
            let head = self.r.varint(Role::Head)?;
            let ops = head >> HEAD_OPS_SHIFT;
            let max_ops = self.r.limits.max_ops.saturating_sub(self.r.ops);
            let ops = self.r.check_count("ops", ops, 1, max_ops)?;
            self.r.ops += ops;
            self.r.charge(size_of::<Change>())?;
            if head & HEAD_NEW_COLLECTION != 0 {
                collection = Some(self.str()?);
            } else if collection.is_none() {
                return self.r.malformed("first change names no collection");
            }
            let collection = collection.clone().unwrap_or_default();
            self.r.charge(size_of::<String>() + collection.len())?;
            let id = self.id(head & 0b111)?;
            let mut list = Vec::with_capacity(ops.min(1024));
            for _ in 0..ops {
                list.push(self.op()?);
            }
            changes.push(Change {
                collection,
                id,
                ops: list,
            });
        }
        Ok(changes)
    }
}

/// Unpacks a batch of changes from untrusted bytes, within `limits`. Ops are
/// not validated here (as with `codec::decode_change`): the store validates
/// them before applying. What no valid change can hold is refused: paths
/// deeper than 64 segments, values nested deeper than 64 levels, non-finite
/// floats in values, unsorted object keys.
pub fn unpack(bytes: &[u8], limits: UnpackLimits) -> Result<Vec<Change>, PackError> {
    let (&format, rest) = bytes.split_first().ok_or(PackError::Truncated { offset: 0 })?;
    if format != PACK_FORMAT {
        return Err(PackError::UnknownFormat { found: format });
    }
    let (&coding, body) = rest.split_first().ok_or(PackError::Truncated { offset: 1 })?;
    let src = match coding {
        0 => Src::Plain { buf: body, pos: 0 },
        1 => Src::Range(Box::new(
            RangeDecoder::new(body).ok_or(PackError::Truncated { offset: HEADER_BYTES })?,
        )),
        found => return Err(PackError::UnknownCoding { found }),
    };
    let mut dec = Dec {
        r: In {
            src,
            header: HEADER_BYTES,
            consumed: 0,
            limits,
            budget: limits.max_output_bytes,
            ops: 0,
        },
        peers: Vec::new(),
        strs: Vec::new(),
        paths: Vec::new(),
        prev: None,
        last_hlc: Vec::new(),
    };
    let changes = dec.body()?;
    let left = match &dec.r.src {
        Src::Plain { buf, pos } => buf.len() - pos,
        Src::Range(d) => d.buf.len() - d.pos,
    };
    if left > 0 {
        return Err(PackError::TrailingBytes { count: left });
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_round_trip_exactly() {
        for f in [
            0.0, 1.0, 12.5, 0.1, 1999.99, -3.25, 123456.789, 1e15, 5e-324, -0.0, 1e300,
        ] {
            if let Some((m, e)) = decimal(f) {
                assert_eq!((m as f64 / POW10[e as usize]).to_bits(), f.to_bits(), "{f}");
            }
        }
        assert_eq!(decimal(12.5), Some((125, 1)));
        assert_eq!(decimal(-0.0), None);
        assert_eq!(decimal(1e300), None);
    }

    #[test]
    fn range_coder_round_trips_every_context() {
        let mut out = Out::new(true, false);
        for i in 0..2000u32 {
            let ctx = (i % u32::from(CTX_RAW + 1)) as u8;
            out.byte(ctx, (i.wrapping_mul(2_654_435_761) >> 13) as u8);
        }
        let coded = range_encode(&out);
        let mut d = RangeDecoder::new(&coded).unwrap();
        for (&b, &ctx) in out.bytes.iter().zip(&out.ctxs) {
            assert_eq!(d.byte(ctx), Some(b));
        }
        assert_eq!(d.pos, coded.len(), "the decoder reads exactly what the encoder wrote");
    }
}
