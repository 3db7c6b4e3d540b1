//! Merging remote ops straight into a stored document's bytes.
//!
//! Why: merging a batch of remote changes is the hot path of sync, and the
//! reference way (decode the stored body into a [`Doc`](crate::doc::Doc),
//! apply each op, encode it again, free the tree) spends most of its time
//! building and freeing the tree: the CRDT joins themselves are a small
//! part. Here the stored slots are walked in path order beside the
//! incoming ops sorted by path; a slot no op touches is re-emitted from its
//! bytes (paths and register values copied, stamp indexes re-interned), and
//! a touched slot keeps whichever write wins by the same comparisons as
//! [`Doc::apply`](crate::doc::Doc::apply). Counters (rare) are decoded and
//! joined with the very code `Doc::apply` uses.
//!
//! The output is byte for byte what decode → apply → [`encode_doc`](super::encode_doc)
//! writes (a property test, `engine/tests/merge_encoded.rs`, holds the two
//! to it). Where that is not certain, [`merge_encoded`] declines (`None`)
//! and the caller takes the reference path, which also reports damaged
//! bytes: a document deletion among the ops, a record that does not decode,
//! or a register value whose bytes are not exactly what encoding its
//! decoded value gives back (overlong varints, unsorted object keys).

use super::{push_varint, read_counter, read_interned, stamp_at, CodecError, Interner, Reader, DOC_FORMAT};
use crate::doc::{Counter, Deletion, Op, Path, RegVal};
use crate::hlc::Stamp;
use crate::value::MAX_DEPTH;
use crate::vv::VersionVector;
use std::cmp::Ordering;

/// What [`merge_encoded`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedMerge {
    /// Whether the document changed (its new record is then in `out`).
    pub changed: bool,
    /// The document's version vector before the merge.
    pub before: VersionVector,
    /// And after it.
    pub after: VersionVector,
}

/// Merges `ops` (valid, as `Doc::apply` requires) into the stored document
/// `body` (a record's body, its envelope already checked) and, if anything
/// changed, writes the new record for `id_bytes` into `out` (cleared
/// first). `None`: declined, `out` is to be ignored; decode and apply
/// instead (see the module doc for when).
pub fn merge_encoded<'a>(id_bytes: &[u8], body: &'a [u8], ops: &[&'a Op], out: &mut Vec<u8>) -> Option<EncodedMerge> {
    if ops.iter().any(|op| matches!(op, Op::Delete { .. })) {
        return None;
    }
    merge(id_bytes, body, ops, out).ok().flatten()
}

/// A register's content: stored bytes (a canonical `RegVal` encoding) or an op's value.
#[derive(Clone, Copy)]
enum RegSrc<'a> {
    Stored(&'a [u8]),
    New(&'a RegVal),
}

impl RegSrc<'_> {
    /// `RegVal::tiebreak` of two contents: their encodings compared.
    fn cmp_encoded(self, other: RegSrc<'_>) -> Ordering {
        match (self, other) {
            (RegSrc::New(a), RegSrc::New(b)) => a.tiebreak(b),
            (a, b) => a.encoded().cmp(&b.encoded()),
        }
    }

    fn encoded(self) -> Vec<u8> {
        match self {
            RegSrc::Stored(b) => b.to_vec(),
            RegSrc::New(v) => postcard::to_allocvec(v).unwrap_or_default(),
        }
    }
}

/// The merge walk's output side: slots written so far and the interner.
struct Emit<'a> {
    t: Interner,
    slots: Vec<u8>,
    count: usize,
    /// Path of the last slot written (for the shared-prefix count).
    prev: Vec<&'a [u8]>,
    /// Whether the last slot written is the last stored slot read.
    prev_is_stored: bool,
}

impl<'a> Emit<'a> {
    /// Writes a slot; `shared`: its shared-prefix count with the last
    /// slot written, when the caller knows it.
    fn slot(
        &mut self,
        path: &[&'a [u8]],
        shared: Option<usize>,
        reg: Option<(Stamp, RegSrc<'a>)>,
        counter: Option<&Counter>,
    ) -> Result<(), CodecError> {
        let shared = shared.unwrap_or_else(|| self.prev.iter().zip(path).take_while(|(a, b)| a == b).count());
        debug_assert_eq!(shared, self.prev.iter().zip(path).take_while(|(a, b)| a == b).count());
        push_varint(&mut self.slots, shared as u64);
        push_varint(&mut self.slots, (path.len() - shared) as u64);
        for seg in &path[shared..] {
            push_varint(&mut self.slots, seg.len() as u64);
            self.slots.extend_from_slice(seg);
        }
        self.prev.clear();
        self.prev.extend_from_slice(path);
        match reg {
            None => self.slots.push(0),
            Some((stamp, src)) => {
                self.slots.push(1);
                push_varint(&mut self.slots, u64::from(self.t.stamp(stamp)));
                match src {
                    RegSrc::Stored(b) => self.slots.extend_from_slice(b),
                    RegSrc::New(v) => {
                        self.slots = postcard::to_extend(v, std::mem::take(&mut self.slots))
                            .map_err(|_| super::malformed("register value does not encode"))?;
                    }
                }
            }
        }
        match counter {
            None => self.slots.push(0),
            Some(c) => {
                self.slots.push(1);
                let repr = super::counter_repr(&mut self.t, c);
                self.slots = postcard::to_extend(&repr, std::mem::take(&mut self.slots))
                    .map_err(|_| super::malformed("counter does not encode"))?;
            }
        }
        self.count += 1;
        Ok(())
    }

    /// Writes the slots of the paths only the ops write, from `edits[*next]`
    /// on, while they sort before `below` (all of them when `None`);
    /// returns whether any op changed something.
    #[inline]
    fn op_only_slots(
        &mut self,
        edits: &[(&'a Path, &'a Op)],
        next: &mut usize,
        below: Option<&[&'a [u8]]>,
        deleted: Option<&Deletion>,
    ) -> Result<bool, CodecError> {
        let mut changed = false;
        // Allocates only when such a path exists (this runs once per stored slot).
        let mut segs: Vec<&'a [u8]> = Vec::new();
        while let Some(&(p, _)) = edits
            .get(*next)
            .filter(|(p, _)| below.is_none_or(|b| cmp_path(p, b) == Ordering::Less))
        {
            let mut j = Joining {
                reg: None,
                counter: None,
                changed: false,
            };
            while let Some(&(_, op)) = edits.get(*next).filter(|(q, _)| *q == p) {
                j.op(op, deleted);
                *next += 1;
            }
            changed |= j.changed;
            segs.clear();
            segs.extend(p.iter().map(|s| s.as_bytes()));
            self.slot(&segs, None, j.reg, j.counter.as_ref())?;
            self.prev_is_stored = false;
        }
        Ok(changed)
    }
}

/// Compares an op's path with a path of byte segments (the order of `Path`).
fn cmp_path(a: &[String], b: &[&[u8]]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match x.as_bytes().cmp(y) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    a.len().cmp(&b.len())
}

/// State of one path while its ops are joined in.
struct Joining<'a> {
    reg: Option<(Stamp, RegSrc<'a>)>,
    counter: Option<Counter>,
    changed: bool,
}

impl<'a> Joining<'a> {
    /// Joins one op of this path, as `Doc::apply` does.
    fn op(&mut self, op: &'a Op, deleted: Option<&Deletion>) {
        const ABSENT: &RegVal = &RegVal::Absent;
        match op {
            Op::Set { stamp, val, .. } => {
                // A covered write keeps its stamp but not its value.
                let val = if deleted.is_some_and(|d| d.seen.covers(*stamp)) {
                    ABSENT
                } else {
                    val
                };
                let new = RegSrc::New(val);
                let wins = match self.reg {
                    None => true,
                    Some((s, cur)) => stamp.cmp(&s).then_with(|| new.cmp_encoded(cur)) == Ordering::Greater,
                };
                if wins {
                    self.reg = Some((*stamp, new));
                    self.changed = true;
                }
            }
            op => self.changed |= self.counter.get_or_insert_with(Default::default).apply(op),
        }
    }
}

/// The walk; `Err` and `Ok(None)` both decline.
fn merge<'a>(
    id_bytes: &[u8],
    body: &'a [u8],
    ops: &[&'a Op],
    out: &mut Vec<u8>,
) -> Result<Option<EncodedMerge>, CodecError> {
    let mut r = Reader { buf: body, pos: 0 };
    let (peers, stamps) = read_interned(&mut r)?;
    let before = r.vv(&peers)?;
    let deleted = if r.bool()? {
        let stamp = stamp_at(&stamps, r.u32()?)?;
        Some(Deletion {
            stamp,
            seen: r.vv(&peers)?,
        })
    } else {
        None
    };
    let mut after = before.clone();
    let mut changed = false;
    for op in ops {
        changed |= after.observe(op.stamp());
    }
    // Ops with a path, in path order (stable: a path's ops keep their order).
    let mut edits: Vec<(&'a Path, &'a Op)> = ops.iter().filter_map(|&op| op.path().map(|p| (p, op))).collect();
    edits.sort_by(|a, b| a.0.cmp(b.0));
    let mut next = 0usize;

    let n = r.len()?;
    let mut emit = Emit {
        t: Interner::default(),
        slots: Vec::with_capacity(body.len() + 64 * edits.len()),
        count: 0,
        prev: Vec::with_capacity(8),
        prev_is_stored: false,
    };
    let mut path: Vec<&'a [u8]> = Vec::with_capacity(8);
    for i in 0..n {
        // The stored slot, with the checks of `read_doc`.
        let shared = r.u32()? as usize;
        let rest = r.len()?;
        if shared > path.len() || (i > 0 && rest == 0) || shared + rest > MAX_DEPTH {
            return Ok(None);
        }
        // The previous path's segment where this one departs from it.
        let departs = path.get(shared).copied();
        path.truncate(shared);
        for _ in 0..rest {
            let seg = r.bytes()?;
            check_utf8(seg)?;
            path.push(seg);
        }
        // Strictly after the previous path (which it shares `shared`
        // segments with): longer, or greater where they depart. An equal
        // segment there (a shorter prefix than the paths share: not what
        // encoding writes) is left to the reference.
        if i > 0 && departs.is_some_and(|d| path[shared] <= d) {
            return Ok(None);
        }
        let reg = if r.bool()? {
            let stamp = stamp_at(&stamps, r.u32()?)?;
            Some((stamp, RegSrc::Stored(reg_val_bytes(&mut r)?)))
        } else {
            None
        };
        let counter = if r.bool()? {
            Some(read_counter(&mut r, &peers, &stamps)?)
        } else {
            None
        };
        // Paths only the ops write, before this one.
        changed |= emit.op_only_slots(&edits, &mut next, Some(&path), deleted.as_ref())?;
        // This path's ops.
        let mut j = Joining {
            reg,
            counter,
            changed: false,
        };
        while let Some(&(_, op)) = edits.get(next).filter(|(p, _)| cmp_path(p, &path) == Ordering::Equal) {
            j.op(op, deleted.as_ref());
            next += 1;
        }
        changed |= j.changed;
        // Written right after the previous stored slot, the shared count
        // stays (it is the longest: the paths depart right after it).
        let keep_shared = (emit.count == 0 || emit.prev_is_stored).then_some(shared);
        emit.slot(&path, keep_shared, j.reg, j.counter.as_ref())?;
        emit.prev_is_stored = true;
    }
    if r.pos != body.len() {
        return Ok(None);
    }
    // Paths only the ops write, after every stored one.
    changed |= emit.op_only_slots(&edits, &mut next, None, deleted.as_ref())?;
    if !changed {
        return Ok(Some(EncodedMerge { changed, before, after }));
    }
    // The tables and headers, interned after the slots as `encode_doc` does.
    let mut t = emit.t;
    let deletion = deleted.as_ref().map(|d| (t.stamp(d.stamp), t.vv(&d.seen)));
    let vv = t.vv(&after);
    out.clear();
    out.reserve(emit.slots.len() + id_bytes.len() + 16 * (t.peers.len() + t.stamps.len() + vv.len()) + 16);
    out.push(DOC_FORMAT);
    out.extend_from_slice(&[0; 4]);
    push_varint(out, id_bytes.len() as u64);
    out.extend_from_slice(id_bytes);
    push_varint(out, t.peers.len() as u64);
    for &p in &t.peers {
        push_varint(out, p);
    }
    push_varint(out, t.stamps.len() as u64);
    for &(hlc, peer) in &t.stamps {
        push_varint(out, hlc);
        push_varint(out, u64::from(peer));
    }
    push_pairs(out, &vv);
    match deletion {
        None => out.push(0),
        Some((stamp, seen)) => {
            out.push(1);
            push_varint(out, u64::from(stamp));
            push_pairs(out, &seen);
        }
    }
    push_varint(out, emit.count as u64);
    out.extend_from_slice(&emit.slots);
    let crc = crc32fast::hash(&out[5..]);
    out[1..5].copy_from_slice(&crc.to_le_bytes());
    Ok(Some(EncodedMerge { changed, before, after }))
}

/// UTF-8 as the decoder requires it; keys and short strings are mostly
/// ASCII, checked inline.
#[inline]
fn check_utf8(b: &[u8]) -> Result<(), CodecError> {
    if b.is_ascii() || std::str::from_utf8(b).is_ok() {
        Ok(())
    } else {
        Err(super::malformed("invalid UTF-8"))
    }
}

/// A version vector as (peer index, hlc) pairs, as postcard writes them.
fn push_pairs(out: &mut Vec<u8>, pairs: &[(u32, u64)]) {
    push_varint(out, pairs.len() as u64);
    for &(p, h) in pairs {
        push_varint(out, u64::from(p));
        push_varint(out, h);
    }
}

impl<'a> Reader<'a> {
    /// A varint in its shortest form (what encoding writes); a longer one
    /// would not be copied byte for byte.
    #[inline]
    fn canonical(&mut self) -> Result<u64, CodecError> {
        let start = self.pos;
        let v = self.varint()?;
        self.check_canonical(start)?;
        Ok(v)
    }

    /// The varint read from `start` is what encoding its value writes: no
    /// trailing zero byte, and a tenth byte holding only bit 63 (the
    /// decoder drops the bits past it).
    #[inline]
    fn check_canonical(&self, start: usize) -> Result<(), CodecError> {
        let n = self.pos - start;
        let last = self.buf[self.pos - 1];
        if n > 1 && (last == 0 || (n == 10 && last > 1)) {
            return Err(super::malformed("varint not in its shortest form"));
        }
        Ok(())
    }

    #[inline]
    fn canonical_len(&mut self) -> Result<usize, CodecError> {
        let start = self.pos;
        let n = self.len()?;
        self.check_canonical(start)?;
        Ok(n)
    }

    #[inline]
    fn canon_string(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.canonical_len()?;
        let b = self.take(n)?;
        check_utf8(b)?;
        Ok(b)
    }

    /// Skips a value as [`Reader::value`] reads it, with the same checks.
    fn canon_value(&mut self, depth: usize) -> Result<(), CodecError> {
        if depth > MAX_DEPTH {
            return Err(super::malformed("value nested too deep"));
        }
        match self.canonical()? {
            0 => {}
            1 => {
                self.bool()?;
            }
            2 => {
                self.canonical()?;
            }
            3 => {
                self.f64()?;
            }
            4 => {
                self.canon_string()?;
            }
            5 => {
                for _ in 0..self.canonical_len()? {
                    self.canon_value(depth + 1)?;
                }
            }
            6 => self.canon_object(depth + 1)?,
            t => return Err(super::malformed(format!("value tag {t}"))),
        }
        Ok(())
    }

    /// Keys must be strictly increasing: a map decodes them sorted and
    /// without repeats, so other bytes would not be written back alike.
    fn canon_object(&mut self, depth: usize) -> Result<(), CodecError> {
        let mut last: Option<&[u8]> = None;
        for _ in 0..self.canonical_len()? {
            let k = self.canon_string()?;
            if last.is_some_and(|l| l >= k) {
                return Err(super::malformed("object keys out of order"));
            }
            last = Some(k);
            self.canon_value(depth)?;
        }
        Ok(())
    }
}

/// The bytes of a stored `RegVal`, checked as [`Reader::reg_val`] checks
/// them and canonical.
fn reg_val_bytes<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], CodecError> {
    let start = r.pos;
    match r.canonical()? {
        0 | 1 => {}
        2 => r.canon_value(0)?,
        3 => {
            r.canon_string()?;
            r.canonical()?;
            r.canon_object(1)?;
        }
        t => return Err(super::malformed(format!("register tag {t}"))),
    }
    Ok(&r.buf[start..r.pos])
}
