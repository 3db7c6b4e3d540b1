//! A JSON document as a CRDT.
//!
//! State is a flat, sorted map from field paths to slots. A slot holds at most
//! one register (a scalar, an array, an attachment token, an "object" marker
//! or an "absent" tombstone, last writer wins by [`Stamp`]) and at most one
//! counter (a PN-counter: one running total per peer). Nested objects are
//! maps: each key is its own path, so concurrent edits of different fields at
//! any depth all survive.
//!
//! Every mutation is an [`Op`], and applying an op is a join in a semilattice
//! (keep the greater stamp, the greater per-peer total, the union of what a
//! deletion saw), so merging is commutative, associative and idempotent. The
//! visible JSON is a pure function of the state, computed by [`Doc::render`]:
//!
//! * replacing what is under a path (setting `a = {..}` or `a = 5`, unsetting
//!   `a`, inserting a document) writes an *absent* register at every path
//!   below it that the writer sees: removal is observed-remove, so a
//!   concurrent write below `a` that the writer had not seen survives (two
//!   peers creating the same document keep both peers' fields); a register
//!   never hides entries below it by stamp order alone;
//! * at one path, the kind with the newest stamp wins: a scalar, the map of
//!   its visible children, or the counter (ties: counter, then map, then scalar);
//! * a document deletion records the version vector its writer had seen; every
//!   write it covers is gone, and writes it did not see (concurrent ones)
//!   survive, so the document comes back with just those fields;
//! * counter resets (restart, unset, delete) record per-peer "floors": the
//!   totals their writer saw, so a concurrent increment later counts only its
//!   own delta and never resurrects increments the reset removed.

use crate::hlc::{Hlc, PeerId, Stamp};
use crate::value::{Value, MAX_DEPTH};
use crate::vv::VersionVector;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

/// Keys from the document root to a field. The empty path is the document itself.
pub type Path = Vec<String>;

/// A number held by a counter.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Num {
    /// Exact integer.
    Int(i64),
    /// Finite float.
    Float(f64),
}

impl Num {
    /// The number of a JSON value, if it is one.
    pub fn from_value(v: &Value) -> Option<Num> {
        match v {
            Value::Int(i) => Some(Num::Int(*i)),
            Value::Float(f) => Some(Num::Float(*f)),
            _ => None,
        }
    }

    /// As a JSON value.
    pub fn to_value(self) -> Value {
        match self {
            Num::Int(i) => Value::Int(i),
            Num::Float(f) => Value::Float(f),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    /// Sum; integers stay exact until they would overflow, then become floats.
    pub fn plus(self, o: Num) -> Num {
        match (self, o) {
            (Num::Int(a), Num::Int(b)) => a.checked_add(b).map_or(Num::Float(a as f64 + b as f64), Num::Int),
            _ => finite(self.as_f64() + o.as_f64()),
        }
    }

    /// Difference, with the same rules as [`Num::plus`].
    pub fn minus(self, o: Num) -> Num {
        match (self, o) {
            (Num::Int(a), Num::Int(b)) => a.checked_sub(b).map_or(Num::Float(a as f64 - b as f64), Num::Int),
            _ => finite(self.as_f64() - o.as_f64()),
        }
    }

    fn is_finite(self) -> bool {
        match self {
            Num::Int(_) => true,
            Num::Float(f) => f.is_finite(),
        }
    }

    fn total_cmp(self, o: Num) -> Ordering {
        self.to_value()
            .total_cmp(&o.to_value())
            .then_with(|| matches!(self, Num::Float(_)).cmp(&matches!(o, Num::Float(_))))
    }
}

/// Saturates instead of producing infinities, which JSON cannot carry.
fn finite(f: f64) -> Num {
    Num::Float(if f.is_finite() { f } else { f.signum() * f64::MAX })
}

/// A reference to attachment bytes stored elsewhere, by content hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// Content hash of the bytes (e.g. `blake3:` followed by hex).
    pub id: String,
    /// Length of the bytes.
    pub len: u64,
    /// App metadata (file name, MIME type, ...).
    pub meta: BTreeMap<String, Value>,
}

impl Attachment {
    /// The JSON an app reads for an attachment field.
    pub fn to_value(&self) -> Value {
        let mut o = BTreeMap::new();
        o.insert("_type".into(), Value::from("attachment"));
        o.insert("id".into(), Value::String(self.id.clone()));
        o.insert("len".into(), Value::Int(self.len.min(i64::MAX as u64) as i64));
        o.insert("meta".into(), Value::Object(self.meta.clone()));
        Value::Object(o)
    }
}

/// What a register holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RegVal {
    /// Tombstone: the field was unset (or its value reaped by a deletion).
    Absent,
    /// The field is an object (a map); its keys are slots of their own.
    Object,
    /// A scalar or an array (or a whole object declared as a register).
    Value(Value),
    /// An attachment token.
    Attachment(Attachment),
}

impl RegVal {
    pub(crate) fn tiebreak(&self, other: &RegVal) -> Ordering {
        // Equal stamps mean the same write, but a hostile or buggy peer could
        // send two values under one stamp: any strict, replica-independent
        // order keeps replicas converged.
        let a = postcard::to_allocvec(self).unwrap_or_default();
        let b = postcard::to_allocvec(other).unwrap_or_default();
        a.cmp(&b)
    }
}

/// One mutation of a document. The unit of merging and of delta sync.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Register write at `path`.
    Set {
        /// Field.
        path: Path,
        /// Write identity.
        stamp: Stamp,
        /// New content.
        val: RegVal,
    },
    /// The running total of `stamp.peer`'s increments of the counter at `path`.
    Count {
        /// Field.
        path: Path,
        /// Write identity (its peer owns the total).
        stamp: Stamp,
        /// Sum of that peer's increments.
        total: Num,
    },
    /// Counter restart: its value becomes `base` plus later increments.
    Restart {
        /// Field.
        path: Path,
        /// Write identity.
        stamp: Stamp,
        /// New starting value.
        base: Num,
    },
    /// What a reset saw of one peer's counter total; earlier increments stop counting.
    Floor {
        /// Counter field.
        path: Path,
        /// Whose total.
        peer: PeerId,
        /// HLC of that peer's total when the reset was made.
        hlc: Hlc,
        /// The total.
        total: Num,
        /// The reset that recorded it.
        by: Stamp,
    },
    /// A write that was seen but left no trace in the state (it was
    /// overwritten): keeps version vectors equal across delta sync.
    Seen {
        /// The write's identity.
        stamp: Stamp,
    },
    /// Document deletion covering every write in `seen`.
    Delete {
        /// Write identity.
        stamp: Stamp,
        /// What the deleting peer had seen of the document.
        seen: VersionVector,
    },
}

impl Op {
    /// The write identity the op advances its document's version vector with.
    pub fn stamp(&self) -> Stamp {
        match self {
            Op::Set { stamp, .. }
            | Op::Count { stamp, .. }
            | Op::Restart { stamp, .. }
            | Op::Seen { stamp }
            | Op::Delete { stamp, .. } => *stamp,
            Op::Floor { by, .. } => *by,
        }
    }

    /// The field the op writes (`None`: a document-wide op).
    pub fn path(&self) -> Option<&Path> {
        match self {
            Op::Set { path, .. } | Op::Count { path, .. } | Op::Restart { path, .. } | Op::Floor { path, .. } => {
                Some(path)
            }
            Op::Delete { .. } | Op::Seen { .. } => None,
        }
    }

    /// Checks what a remote peer could get wrong; local ops are valid by construction.
    pub fn validate(&self) -> Result<(), OpError> {
        if self.stamp().hlc == Hlc::ZERO {
            return Err(OpError::ZeroStamp);
        }
        if let Some(path) = self.path() {
            if path.len() > MAX_DEPTH {
                return Err(OpError::PathTooDeep { depth: path.len() });
            }
            if path.first().is_some_and(|k| k == "_id") {
                return Err(OpError::WritesId);
            }
            if path.is_empty()
                && !matches!(
                    self,
                    Op::Set {
                        val: RegVal::Absent | RegVal::Object,
                        ..
                    }
                )
            {
                return Err(OpError::RootNotObject);
            }
        }
        match self {
            Op::Set {
                val: RegVal::Value(v), ..
            } => v.validate().map_err(|_| OpError::BadValue),
            Op::Set {
                val: RegVal::Attachment(a),
                ..
            } => Value::Object(a.meta.clone()).validate().map_err(|_| OpError::BadValue),
            Op::Count { total: n, .. } | Op::Restart { base: n, .. } | Op::Floor { total: n, .. } if !n.is_finite() => {
                Err(OpError::BadValue)
            }
            _ => Ok(()),
        }
    }
}

/// Why an op from another peer was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpError {
    /// A stamp with HLC zero (reserved for "nothing").
    ZeroStamp,
    /// A path deeper than [`MAX_DEPTH`].
    PathTooDeep {
        /// Its depth.
        depth: usize,
    },
    /// A write to `_id`, which is immutable.
    WritesId,
    /// The document root can only be an object or absent.
    RootNotObject,
    /// A value JSON cannot carry, or nested too deep.
    BadValue,
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::ZeroStamp => write!(f, "op carries the reserved zero timestamp"),
            OpError::PathTooDeep { depth } => write!(f, "field path of depth {depth} exceeds {MAX_DEPTH}"),
            OpError::WritesId => write!(f, "op writes the immutable _id field"),
            OpError::RootNotObject => write!(f, "op sets the document root to a non-object"),
            OpError::BadValue => write!(f, "op carries a value JSON cannot represent"),
        }
    }
}

impl std::error::Error for OpError {}

/// A register: the last write to a path.
#[derive(Clone, Debug, PartialEq)]
pub struct Reg {
    /// Identity of the winning write.
    pub stamp: Stamp,
    /// Its content.
    pub val: RegVal,
}

/// One peer's total as seen by a reset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Floor {
    /// HLC of the total.
    pub hlc: Hlc,
    /// The total.
    pub total: Num,
    /// The reset that recorded it.
    pub by: Stamp,
}

/// A PN-counter.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Counter {
    /// Per peer: HLC of its latest increment and its running total.
    pub parts: BTreeMap<PeerId, (Hlc, Num)>,
    /// Per peer: the total a reset saw.
    pub floors: BTreeMap<PeerId, Floor>,
    /// The latest restart.
    pub base: Option<(Stamp, Num)>,
}

impl Counter {
    /// Joins a counter op (`Count`, `Restart` or `Floor`) into this
    /// counter; returns whether it changed. Any other op changes nothing.
    /// Shared by [`Doc::apply`] and the merge of encoded documents
    /// (`codec::merge_encoded`), so the two cannot disagree.
    pub fn apply(&mut self, op: &Op) -> bool {
        match op {
            Op::Count { stamp, total, .. } => join_max(self.parts.entry(stamp.peer), (stamp.hlc, *total), |a, b| {
                a.0.cmp(&b.0).then(a.1.total_cmp(b.1))
            }),
            Op::Restart { stamp, base, .. } => {
                let newer = match self.base {
                    None => true,
                    Some((s, b)) => stamp.cmp(&s).then(base.total_cmp(b)) == Ordering::Greater,
                };
                if newer {
                    self.base = Some((*stamp, *base));
                }
                newer
            }
            Op::Floor {
                peer, hlc, total, by, ..
            } => {
                let f = Floor {
                    hlc: *hlc,
                    total: *total,
                    by: *by,
                };
                join_max(self.floors.entry(*peer), f, |a, b| {
                    a.hlc.cmp(&b.hlc).then(a.total.total_cmp(b.total)).then(a.by.cmp(&b.by))
                })
            }
            Op::Set { .. } | Op::Seen { .. } | Op::Delete { .. } => false,
        }
    }
}

/// What one path holds.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Slot {
    /// The register, if ever written.
    pub reg: Option<Reg>,
    /// The counter, if ever incremented or restarted.
    pub counter: Option<Counter>,
}

/// The join of every deletion of a document.
#[derive(Clone, Debug, PartialEq)]
pub struct Deletion {
    /// The newest deletion.
    pub stamp: Stamp,
    /// Union of what the deletions saw.
    pub seen: VersionVector,
}

/// A document's full CRDT state.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Doc {
    /// Slots by path, sorted, so a subtree is a contiguous range.
    pub slots: BTreeMap<Path, Slot>,
    /// Every write ever applied, per origin.
    pub vv: VersionVector,
    /// Deletions, if any.
    pub deleted: Option<Deletion>,
}

/// Which kind of content won at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Scalar,
    Map,
    Counter,
}

struct Rendered {
    value: Value,
    stamp: Stamp,
    kind: Kind,
}

impl Doc {
    /// An empty document (no fields, never written).
    pub fn new() -> Doc {
        Doc::default()
    }

    /// The slot at `path`, created if absent (without cloning the path when it exists).
    fn slot_mut(&mut self, path: &Path) -> &mut Slot {
        if !self.slots.contains_key(path) {
            self.slots.insert(path.clone(), Slot::default());
        }
        self.slots
            .get_mut(path)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    fn covered(&self, stamp: Stamp) -> bool {
        self.deleted.as_ref().is_some_and(|d| d.seen.covers(stamp))
    }

    /// Merges one op; returns whether the state changed. `op` must be valid.
    pub fn apply(&mut self, op: &Op) -> bool {
        debug_assert!(op.validate().is_ok(), "invalid op {op:?}");
        let advanced = self.vv.observe(op.stamp());
        let changed = match op {
            Op::Set { path, stamp, val } => self.apply_set(path, *stamp, val),
            Op::Count { path, .. } | Op::Restart { path, .. } | Op::Floor { path, .. } => self
                .slot_mut(path)
                .counter
                .get_or_insert_with(Default::default)
                .apply(op),
            Op::Seen { .. } => false,
            Op::Delete { stamp, seen } => self.apply_delete(*stamp, seen),
        };
        debug_assert!(self.vv.covers(op.stamp()));
        advanced || changed
    }

    fn apply_set(&mut self, path: &Path, stamp: Stamp, val: &RegVal) -> bool {
        // A covered write keeps its stamp (it still orders the path) but not its value.
        const ABSENT: &RegVal = &RegVal::Absent;
        let val = if self.covered(stamp) { ABSENT } else { val };
        let slot = self.slot_mut(path);
        let wins = match &slot.reg {
            None => true,
            Some(r) => stamp.cmp(&r.stamp).then_with(|| val.tiebreak(&r.val)) == Ordering::Greater,
        };
        // Cloned only when it wins: a merge loses about as often as it wins.
        if wins {
            slot.reg = Some(Reg {
                stamp,
                val: val.clone(),
            });
        }
        wins
    }

    fn apply_delete(&mut self, stamp: Stamp, seen: &VersionVector) -> bool {
        let d = self.deleted.get_or_insert_with(|| Deletion {
            stamp,
            seen: VersionVector::new(),
        });
        let before = (d.stamp, d.seen.clone());
        d.stamp = d.stamp.max(stamp);
        d.seen.join(seen);
        let changed = before != (d.stamp, d.seen.clone());
        let seen = d.seen.clone();
        for slot in self.slots.values_mut() {
            if let Some(r) = &mut slot.reg {
                if seen.covers(r.stamp) {
                    r.val = RegVal::Absent;
                }
            }
        }
        changed
    }

    /// The visible document (without `_id`), or `None` if it does not exist
    /// (never written, or deleted with nothing written concurrently).
    pub fn render(&self) -> Option<BTreeMap<String, Value>> {
        let items: Vec<(&Path, &Slot)> = self.slots.iter().collect();
        match self.render_node(&items, 0) {
            Some(Rendered {
                value: Value::Object(o),
                ..
            }) => Some(o),
            _ => None,
        }
    }

    /// Whether the document is visible.
    pub fn exists(&self) -> bool {
        // Every write checks this, so the common case skips rendering: a
        // root object marker no deletion covers, and no counter at the
        // root, leave the map the only thing the root can render as.
        let plain_root = self.slots.first_key_value().is_some_and(|(path, slot)| {
            path.is_empty()
                && slot.counter.is_none()
                && slot
                    .reg
                    .as_ref()
                    .is_some_and(|r| r.val == RegVal::Object && !self.covered(r.stamp))
        });
        let exists = plain_root || self.render().is_some();
        debug_assert_eq!(exists, self.render().is_some(), "the fast path of exists");
        exists
    }

    /// `items` are the slots whose paths start with one prefix of length
    /// `depth`, in order; the first may be the prefix itself.
    fn render_node(&self, items: &[(&Path, &Slot)], depth: usize) -> Option<Rendered> {
        let (own, rest) = match items.first() {
            Some((p, s)) if p.len() == depth => (Some(*s), &items[1..]),
            _ => (None, items),
        };
        let reg = own.and_then(|s| s.reg.as_ref());
        // A register ends the counter parts older than it at its own path
        // (an unset or overwritten counter); entries below are ended only
        // by the absent registers their remover wrote.
        let own_shadow = reg.map_or(Stamp::ZERO, |r| r.stamp);
        let reg = reg.filter(|r| !self.covered(r.stamp));

        let mut children = BTreeMap::new();
        let mut children_stamp = Stamp::ZERO;
        let mut i = 0;
        while i < rest.len() {
            let key = &rest[i].0[depth];
            let end = i + rest[i..].iter().take_while(|(p, _)| &p[depth] == key).count();
            if let Some(r) = self.render_node(&rest[i..end], depth + 1) {
                children.insert(key.clone(), r.value);
                children_stamp = children_stamp.max(r.stamp);
            }
            i = end;
        }

        let mut best: Option<Rendered> = None;
        let mut offer = |r: Rendered| {
            if best.as_ref().is_none_or(|b| (r.stamp, r.kind) > (b.stamp, b.kind)) {
                best = Some(r);
            }
        };
        match reg {
            Some(Reg {
                stamp,
                val: RegVal::Value(v),
            }) => offer(Rendered {
                value: v.clone(),
                stamp: *stamp,
                kind: Kind::Scalar,
            }),
            Some(Reg {
                stamp,
                val: RegVal::Attachment(a),
            }) => offer(Rendered {
                value: a.to_value(),
                stamp: *stamp,
                kind: Kind::Scalar,
            }),
            _ => {}
        }
        let marker = reg.filter(|r| r.val == RegVal::Object).map(|r| r.stamp);
        if marker.is_some() || !children.is_empty() {
            let stamp = marker.unwrap_or(Stamp::ZERO).max(children_stamp);
            offer(Rendered {
                value: Value::Object(children),
                stamp,
                kind: Kind::Map,
            });
        }
        if let Some(c) = own.and_then(|s| s.counter.as_ref()) {
            if let Some(r) = self.render_counter(c, own_shadow) {
                offer(r);
            }
        }
        best
    }

    fn render_counter(&self, c: &Counter, shadow: Stamp) -> Option<Rendered> {
        let live = |s: Stamp| s >= shadow && !self.covered(s);
        let mut stamp = None::<Stamp>;
        let mut sum = Num::Int(0);
        if let Some((s, b)) = c.base.filter(|(s, _)| live(*s)) {
            stamp = Some(s);
            sum = b;
        }
        for (&peer, &(hlc, total)) in &c.parts {
            let s = Stamp { hlc, peer };
            let floor = c.floors.get(&peer);
            if !live(s) || floor.is_some_and(|f| f.hlc >= hlc) {
                continue;
            }
            stamp = stamp.max(Some(s));
            sum = sum.plus(floor.map_or(total, |f| total.minus(f.total)));
        }
        stamp.map(|stamp| Rendered {
            value: sum.to_value(),
            stamp,
            kind: Kind::Counter,
        })
    }

    /// Which kind of content is visible at `path` (`None`: nothing).
    fn kind_at(&self, path: &[String]) -> Option<Kind> {
        let items: Vec<(&Path, &Slot)> = self.subtree(path).collect();
        self.render_node(&items, path.len()).map(|r| r.kind)
    }

    /// The slots at and below `path`.
    fn subtree<'a>(&'a self, path: &'a [String]) -> impl Iterator<Item = (&'a Path, &'a Slot)> + 'a {
        self.slots
            .range::<[String], _>((std::ops::Bound::Included(path), std::ops::Bound::Unbounded))
            .take_while(move |(p, _)| p.starts_with(path))
    }

    /// The visible value at `path`, if any.
    pub fn get(&self, path: &[String]) -> Option<Value> {
        let mut v = Value::Object(self.render()?);
        for key in path {
            v = match v {
                Value::Object(mut o) => o.remove(key)?,
                _ => return None,
            };
        }
        Some(v)
    }

    // ---- local edits: each produces the ops that express it ----

    /// Floors for every counter at or below `path`, recording what this peer sees.
    fn floors_under(&self, path: &[String], by: Stamp, out: &mut Vec<Op>) {
        for (p, slot) in self.subtree(path) {
            for (&peer, &(hlc, total)) in slot.counter.iter().flat_map(|c| &c.parts) {
                out.push(Op::Floor {
                    path: p.clone(),
                    peer,
                    hlc,
                    total,
                    by,
                });
            }
        }
    }

    /// Absent registers for every path strictly below `path` that holds a
    /// value or a counter, except those `keep` says the caller writes anew:
    /// removal is observed-remove, so a replace or unset ends exactly what
    /// its writer sees, and a concurrent write below survives.
    fn clears_under(&self, path: &[String], stamp: Stamp, keep: &dyn Fn(&Path) -> bool, out: &mut Vec<Op>) {
        for (p, slot) in self.subtree(path).filter(|(p, _)| p.len() > path.len()) {
            let live_reg = slot.reg.as_ref().is_some_and(|r| r.val != RegVal::Absent);
            if (live_reg || slot.counter.is_some()) && !keep(p) {
                out.push(Op::Set {
                    path: p.clone(),
                    stamp,
                    val: RegVal::Absent,
                });
            }
        }
    }

    /// Sets `path` to `value`, replacing what was under it. Objects become
    /// maps (their keys merge one by one) unless the schema makes the field
    /// a register, which stores the value whole.
    pub fn ops_set(&self, path: &[String], value: &Value, stamp: Stamp, schema: &dyn Schema, out: &mut Vec<Op>) {
        self.floors_under(path, stamp, out);
        let from = out.len();
        push_set(path.to_vec(), value, stamp, schema, out);
        self.clears_not_written(path, stamp, from, out);
    }

    /// Clears below `path` what the ops from `out[from..]` do not write.
    fn clears_not_written(&self, path: &[String], stamp: Stamp, from: usize, out: &mut Vec<Op>) {
        let written: std::collections::BTreeSet<&Path> = out[from..].iter().filter_map(Op::path).collect();
        let mut clears = Vec::new();
        self.clears_under(path, stamp, &|p| written.contains(p), &mut clears);
        out.extend(clears);
    }

    /// Like [`Doc::ops_set`], but writes only what differs from the visible
    /// value, descending into maps, so unchanged fields are not re-replicated.
    pub fn ops_set_diff(&self, path: &[String], value: &Value, stamp: Stamp, schema: &dyn Schema, out: &mut Vec<Op>) {
        let current = self.get(path);
        if current.as_ref() == Some(value) {
            return;
        }
        match (current, value, schema.kind(path, value)) {
            (Some(Value::Object(_)), Value::Object(o), FieldKind::Map) => {
                let mut child = path.to_vec();
                for (k, v) in o {
                    child.push(k.clone());
                    self.ops_set_diff(&child, v, stamp, schema, out);
                    child.pop();
                }
            }
            _ => self.ops_set(path, value, stamp, schema, out),
        }
    }

    /// Replaces the whole document with `fields`.
    pub fn ops_replace(&self, fields: &BTreeMap<String, Value>, stamp: Stamp, schema: &dyn Schema, out: &mut Vec<Op>) {
        self.floors_under(&[], stamp, out);
        let from = out.len();
        out.push(Op::Set {
            path: Vec::new(),
            stamp,
            val: RegVal::Object,
        });
        for (k, v) in fields {
            push_set(vec![k.clone()], v, stamp, schema, out);
        }
        self.clears_not_written(&[], stamp, from, out);
    }

    /// Removes `path` (and everything below it that this replica sees).
    pub fn ops_unset(&self, path: &[String], stamp: Stamp, out: &mut Vec<Op>) {
        self.floors_under(path, stamp, out);
        out.push(Op::Set {
            path: path.to_vec(),
            stamp,
            val: RegVal::Absent,
        });
        self.clears_under(path, stamp, &|_| false, out);
    }

    /// Sets `path` to an attachment token.
    pub fn ops_attach(&self, path: &[String], token: Attachment, stamp: Stamp, out: &mut Vec<Op>) {
        self.floors_under(path, stamp, out);
        out.push(Op::Set {
            path: path.to_vec(),
            stamp,
            val: RegVal::Attachment(token),
        });
        self.clears_under(path, stamp, &|_| false, out);
    }

    /// Adds `by` to the counter at `path`. A field that is not currently a
    /// counter becomes one, starting from its value if that is a number.
    pub fn ops_increment(&self, path: &[String], by: Num, stamp: Stamp, out: &mut Vec<Op>) {
        let counter = self.slots.get(path).and_then(|s| s.counter.as_ref());
        if self.kind_at(path) != Some(Kind::Counter) {
            let start = self.get(path).as_ref().and_then(Num::from_value).unwrap_or(Num::Int(0));
            self.ops_restart(path, start, stamp, out);
        }
        let mine = counter.and_then(|c| {
            let part = c.parts.get(&stamp.peer).copied();
            let floor = c.floors.get(&stamp.peer).map(|f| (f.hlc, f.total));
            part.into_iter().chain(floor).max_by_key(|p| p.0)
        });
        let total = mine.map_or(Num::Int(0), |(_, t)| t).plus(by);
        out.push(Op::Count {
            path: path.to_vec(),
            stamp,
            total,
        });
    }

    /// Restarts the counter at `path` at `to`.
    pub fn ops_restart(&self, path: &[String], to: Num, stamp: Stamp, out: &mut Vec<Op>) {
        self.floors_under(path, stamp, out);
        out.push(Op::Restart {
            path: path.to_vec(),
            stamp,
            base: to,
        });
    }

    /// Deletes the document: every write seen so far is covered.
    pub fn ops_delete(&self, stamp: Stamp, out: &mut Vec<Op>) {
        self.floors_under(&[], stamp, out);
        let mut seen = self.vv.clone();
        seen.observe(stamp);
        out.push(Op::Delete { stamp, seen });
    }

    /// [`Doc::delta_since`] restricted to the writes of `origin` (and the
    /// deletions that saw writes of `origin` the other side lacks): sync
    /// ships a document once per origin with news, in each origin's order.
    pub fn delta_from(&self, since: &VersionVector, origin: PeerId) -> Vec<Op> {
        self.delta(since, Some(origin))
    }

    /// The whole state as far as it does not run ahead of `since` for an
    /// origin other than `origin`: every write `since` covers (the other
    /// side may lack them all) and `origin`'s writes. Filtered
    /// subscriptions take a matching document this way, once per origin
    /// with news, so each origin's writes still arrive in order.
    pub fn whole_from(&self, since: &VersionVector, origin: PeerId) -> Vec<Op> {
        let mut ops = self.delta_since(&VersionVector::new());
        ops.retain(|op| from_origin(op, since, origin) || since.covers(op.stamp()));
        ops
    }

    /// The ops that bring a replica which has seen `since` up to this state:
    /// only writes newer than `since`, never the whole document.
    pub fn delta_since(&self, since: &VersionVector) -> Vec<Op> {
        self.delta(since, None)
    }

    /// [`Doc::delta_since`], keeping only what [`from_origin`] lets travel
    /// for `origin` when one is given. Filtering while collecting (not
    /// after) matters: sync reads every document once per origin with
    /// news, and the other origins' ops would be cloned only to be dropped.
    fn delta(&self, since: &VersionVector, origin: Option<PeerId>) -> Vec<Op> {
        let ours = |peer: PeerId| origin.is_none_or(|o| o == peer);
        let new = |s: Stamp| ours(s.peer) && !since.covers(s);
        let mut out = Vec::new();
        // Joined deletions: ship when the other side misses any part of what they saw.
        if let Some(d) = self
            .deleted
            .as_ref()
            .filter(|d| !since.covers(d.stamp) || !since.dominates(&d.seen))
        {
            let op = Op::Delete {
                stamp: d.stamp,
                seen: d.seen.clone(),
            };
            if origin.is_none_or(|o| from_origin(&op, since, o)) {
                out.push(op);
            }
        }
        for (path, slot) in &self.slots {
            if let Some(r) = slot.reg.as_ref().filter(|r| new(r.stamp)) {
                out.push(Op::Set {
                    path: path.clone(),
                    stamp: r.stamp,
                    val: r.val.clone(),
                });
            }
            let Some(c) = &slot.counter else { continue };
            for (&peer, &(hlc, total)) in &c.parts {
                if new(Stamp { hlc, peer }) {
                    out.push(Op::Count {
                        path: path.clone(),
                        stamp: Stamp { hlc, peer },
                        total,
                    });
                }
            }
            for (&peer, f) in &c.floors {
                if new(f.by) {
                    out.push(Op::Floor {
                        path: path.clone(),
                        peer,
                        hlc: f.hlc,
                        total: f.total,
                        by: f.by,
                    });
                }
            }
            if let Some((stamp, base)) = c.base.filter(|(s, _)| new(*s)) {
                out.push(Op::Restart {
                    path: path.clone(),
                    stamp,
                    base,
                });
            }
        }
        // A `Seen` for each origin the document saw further than `since`
        // and the ops above carry.
        let shipped: VersionVector = out.iter().map(|op| (op.stamp().peer, op.stamp().hlc)).collect();
        let seen_past = |peer: PeerId, hlc: Hlc| since.get(peer).max(shipped.get(peer)) < hlc;
        match origin {
            Some(o) => out.extend(Some((o, self.vv.get(o))).filter(|&(p, h)| seen_past(p, h)).map(seen_op)),
            None => out.extend(self.vv.iter().filter(|&(p, h)| seen_past(p, h)).map(seen_op)),
        }
        out
    }
}

fn seen_op((peer, hlc): (PeerId, Hlc)) -> Op {
    Op::Seen {
        stamp: Stamp { hlc, peer },
    }
}

/// How a field's value is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// An object whose keys merge independently.
    Map,
    /// A last-writer-wins register holding the value whole.
    Register,
    /// A PN-counter (a number value sets its starting point).
    Counter,
    /// An attachment token.
    Attachment,
}

/// Which kind each field is: declared types, or what the value suggests.
pub trait Schema {
    /// The kind of the field at `path` about to be set to `value`.
    fn kind(&self, path: &[String], value: &Value) -> FieldKind;
    /// Whether this is [`Inferred`] (lets the store take its fast paths).
    fn is_inferred(&self) -> bool {
        false
    }
}

/// The default typing: objects are maps, everything else a register.
#[derive(Clone, Copy, Debug, Default)]
pub struct Inferred;

impl Schema for Inferred {
    fn kind(&self, _: &[String], value: &Value) -> FieldKind {
        match value {
            Value::Object(_) => FieldKind::Map,
            _ => FieldKind::Register,
        }
    }
    fn is_inferred(&self) -> bool {
        true
    }
}

/// Every field a register: values are stored whole.
#[derive(Clone, Copy, Debug, Default)]
pub struct Whole;

impl Schema for Whole {
    fn kind(&self, _: &[String], _: &Value) -> FieldKind {
        FieldKind::Register
    }
}

impl Attachment {
    /// Reads a token from its JSON form `{"id": .., "len": .., "meta": {..}}`.
    pub fn from_value(v: &Value) -> Option<Attachment> {
        let o = v.as_object()?;
        let id = o.get("id")?.as_str()?.to_string();
        let len = match o.get("len")? {
            Value::Int(n) if *n >= 0 => *n as u64,
            _ => return None,
        };
        let meta = match o.get("meta") {
            None => BTreeMap::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return None,
        };
        (!id.is_empty()).then_some(Attachment { id, len, meta })
    }
}

/// Whether `op` travels when a document is visited for `origin`'s news: the
/// origin's own writes, and a (joined) deletion that saw writes of `origin`
/// the other side lacks (joined deletions carry the newest stamp only, so
/// the others' part would otherwise never travel).
fn from_origin(op: &Op, since: &VersionVector, origin: PeerId) -> bool {
    match op {
        Op::Delete { stamp, seen } => stamp.peer == origin || seen.get(origin) > since.get(origin),
        op => op.stamp().peer == origin,
    }
}

fn push_set(path: Path, value: &Value, stamp: Stamp, schema: &dyn Schema, out: &mut Vec<Op>) {
    let val = match (schema.kind(&path, value), value) {
        (FieldKind::Map, Value::Object(o)) => {
            for (k, v) in o {
                let mut child = path.clone();
                child.push(k.clone());
                push_set(child, v, stamp, schema, out);
            }
            RegVal::Object
        }
        (FieldKind::Counter, v) if Num::from_value(v).is_some() => {
            let base = Num::from_value(v).unwrap_or(Num::Int(0));
            out.push(Op::Restart { path, stamp, base });
            return;
        }
        (FieldKind::Attachment, v) => match Attachment::from_value(v) {
            Some(token) => RegVal::Attachment(token),
            None => RegVal::Value(v.clone()),
        },
        (_, v) => RegVal::Value(v.clone()),
    };
    out.push(Op::Set { path, stamp, val });
}

/// Keeps the greater of the present and offered entry; returns whether it changed.
fn join_max<K: Ord, V: Copy>(
    entry: std::collections::btree_map::Entry<'_, K, V>,
    offered: V,
    cmp: impl Fn(&V, &V) -> Ordering,
) -> bool {
    use std::collections::btree_map::Entry;
    match entry {
        Entry::Vacant(e) => {
            e.insert(offered);
            true
        }
        Entry::Occupied(mut e) => {
            if cmp(&offered, e.get()) == Ordering::Greater {
                e.insert(offered);
                true
            } else {
                false
            }
        }
    }
}
