//! [`Rows`]: a live query's result, shared between the query and its
//! observers without copying.
//!
//! A live query hands its whole result to every observer after each commit.
//! As one `Vec` that costs a copy of the result per commit (the query keeps
//! patching its own while observers still hold the old one), which made a
//! sync of n documents cost O(n²). `Rows` is a list of shared chunks behind
//! one `Arc`: an event clones in O(1), and a patch copies the chunk list and
//! the chunks it changes, not the rows it leaves alone.
//!
//! A result kept in scan order also carries each row's document number
//! (crate-private), so that a changed document's place is found by binary
//! search.

use super::observe::Diff;
use crate::value::Value;
use std::fmt;
use std::ops::Index;
use std::sync::Arc;

/// Rows per chunk when a result is built; patches keep chunks between
/// `CHUNK_ROWS / 4` and `2 * CHUNK_ROWS` rows (or rebuild them).
pub const CHUNK_ROWS: usize = 512;

/// One chunk: rows, and their document numbers when the result is numbered
/// (empty otherwise).
#[derive(Clone, Default)]
struct Chunk {
    rows: Vec<Value>,
    nums: Vec<u64>,
}

#[derive(Clone, Default)]
struct Inner {
    chunks: Vec<Arc<Chunk>>,
    /// Index of the first row of each chunk.
    starts: Vec<usize>,
    len: usize,
    numbered: bool,
}

/// A query result: rows in order, in shared chunks (cheap to clone).
#[derive(Clone, Default)]
pub struct Rows(Arc<Inner>);

/// What a patch does to the row with a document number.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Edit {
    /// Remove it, if present.
    Remove,
    /// Insert it, or replace the row with that number.
    Put(Value),
}

impl Rows {
    /// No rows.
    pub fn new() -> Rows {
        Rows::default()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.0.len
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }

    /// The row at `index`.
    pub fn get(&self, index: usize) -> Option<&Value> {
        if index >= self.0.len {
            return None;
        }
        let c = self.0.starts.partition_point(|&s| s <= index) - 1;
        self.0.chunks[c].rows.get(index - self.0.starts[c])
    }

    /// The first row.
    pub fn first(&self) -> Option<&Value> {
        self.0.chunks.first().and_then(|c| c.rows.first())
    }

    /// The last row.
    pub fn last(&self) -> Option<&Value> {
        self.0.chunks.last().and_then(|c| c.rows.last())
    }

    /// The rows in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Value> + '_ {
        self.0.chunks.iter().flat_map(|c| c.rows.iter())
    }

    /// The rows in order, as consecutive slices.
    pub fn chunks(&self) -> impl Iterator<Item = &[Value]> + '_ {
        self.0.chunks.iter().map(|c| c.rows.as_slice())
    }

    /// The rows copied out.
    pub fn to_vec(&self) -> Vec<Value> {
        self.iter().cloned().collect()
    }

    /// The rows, moved out where no one else holds them.
    pub fn into_vec(self) -> Vec<Value> {
        let inner = Arc::try_unwrap(self.0).unwrap_or_else(|shared| (*shared).clone());
        let mut out = Vec::with_capacity(inner.len);
        for c in inner.chunks {
            match Arc::try_unwrap(c) {
                Ok(c) => out.extend(c.rows),
                Err(shared) => out.extend(shared.rows.iter().cloned()),
            }
        }
        out
    }

    /// Identifies this result while it is alive: clones share it, a patched
    /// result gets another.
    pub fn address(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// Rows with their document numbers (strictly increasing).
    pub(crate) fn numbered(rows: Vec<(u64, Value)>) -> Rows {
        debug_assert!(rows.windows(2).all(|w| w[0].0 < w[1].0), "numbers must increase");
        let mut chunks = Vec::with_capacity(rows.len().div_ceil(CHUNK_ROWS));
        let mut it = rows.into_iter().peekable();
        while it.peek().is_some() {
            let (nums, rows): (Vec<u64>, Vec<Value>) = it.by_ref().take(CHUNK_ROWS).unzip();
            chunks.push(Arc::new(Chunk { rows, nums }));
        }
        Rows::from_chunks(chunks, true)
    }

    /// Each row with its document number when numbered.
    pub(crate) fn numbered_iter(&self) -> impl Iterator<Item = (Option<u64>, &Value)> + '_ {
        self.0
            .chunks
            .iter()
            .flat_map(|c| c.rows.iter().enumerate().map(|(i, v)| (c.nums.get(i).copied(), v)))
    }

    /// Whether rows carry document numbers (see [`Rows::patch`]).
    pub(crate) fn is_numbered(&self) -> bool {
        self.0.numbered
    }

    /// The largest document number, if numbered and not empty.
    pub(crate) fn last_num(&self) -> Option<u64> {
        self.0.chunks.last().and_then(|c| c.nums.last().copied())
    }

    /// Whether a row has this document number.
    pub(crate) fn contains_num(&self, num: u64) -> bool {
        let c = self.chunk_of(num);
        self.0
            .chunks
            .get(c)
            .is_some_and(|ch| ch.nums.binary_search(&num).is_ok())
    }

    fn from_chunks(chunks: Vec<Arc<Chunk>>, numbered: bool) -> Rows {
        let mut inner = Inner {
            chunks,
            starts: Vec::new(),
            len: 0,
            numbered,
        };
        inner.reindex();
        Rows(Arc::new(inner))
    }

    /// The chunk where a row numbered `num` is or would go.
    fn chunk_of(&self, num: u64) -> usize {
        let chunks = &self.0.chunks;
        let c = chunks.partition_point(|ch| ch.nums.last().is_some_and(|&l| l < num));
        c.min(chunks.len().saturating_sub(1))
    }

    /// Applies edits by document number (strictly increasing numbers) to a
    /// numbered result, and returns the diff (no moves: rows keep their
    /// numbers, hence their order). Only the chunks edited are copied, when
    /// another holder still shares them.
    pub(crate) fn patch(&mut self, edits: Vec<(u64, Edit)>) -> Diff {
        assert!(self.0.numbered, "only a numbered result can be patched");
        assert!(
            edits.windows(2).all(|w| w[0].0 < w[1].0),
            "edits must be in increasing document numbers"
        );
        // Positions first, against the old result: an edit's old index is the
        // number of old rows numbered below it; its new index adds the rows
        // inserted and removes those removed before it.
        let mut d = Diff::default();
        let mut delta: isize = 0;
        let mut touched: Vec<(usize, Vec<(u64, Edit)>)> = Vec::new();
        for (num, edit) in edits {
            let c = self.chunk_of(num);
            let (found, old_index) = match self.0.chunks.get(c) {
                Some(ch) => match ch.nums.binary_search(&num) {
                    Ok(p) => (Some(&ch.rows[p]), self.0.starts[c] + p),
                    Err(p) => (None, self.0.starts[c] + p),
                },
                None => (None, 0),
            };
            let new_index = (old_index as isize + delta) as usize;
            let effective = match (found, &edit) {
                (Some(_), Edit::Remove) => {
                    d.deleted.push(old_index);
                    delta -= 1;
                    true
                }
                (Some(old), Edit::Put(v)) => {
                    let changed = old != v;
                    if changed {
                        d.updated.push(new_index);
                    }
                    changed
                }
                (None, Edit::Put(_)) => {
                    d.inserted.push(new_index);
                    delta += 1;
                    true
                }
                (None, Edit::Remove) => false,
            };
            if !effective {
                continue;
            }
            match touched.last_mut() {
                Some((tc, list)) if *tc == c => list.push((num, edit)),
                _ => touched.push((c, vec![(num, edit)])),
            }
        }
        if d.is_empty() {
            return d;
        }
        let inner = Arc::make_mut(&mut self.0);
        if inner.chunks.is_empty() {
            inner.chunks.push(Arc::new(Chunk::default()));
        }
        // Edited chunks, last first, so that splitting one does not shift
        // the indexes of those still to do.
        for (c, list) in touched.into_iter().rev() {
            let chunk = Arc::make_mut(&mut inner.chunks[c]);
            merge_into(chunk, list);
            let pieces = split(std::mem::take(chunk));
            inner.chunks.splice(c..=c, pieces.into_iter().map(Arc::new));
        }
        inner.compact();
        inner.reindex();
        d
    }
}

/// Merges edits (increasing numbers) into a chunk's rows.
fn merge_into(chunk: &mut Chunk, edits: Vec<(u64, Edit)>) {
    let old_rows = std::mem::take(&mut chunk.rows);
    let old_nums = std::mem::take(&mut chunk.nums);
    let cap = old_rows.len() + edits.len();
    let (mut rows, mut nums) = (Vec::with_capacity(cap), Vec::with_capacity(cap));
    let mut old = old_nums.into_iter().zip(old_rows).peekable();
    for (num, edit) in edits {
        while let Some((n, r)) = old.next_if(|(n, _)| *n < num) {
            nums.push(n);
            rows.push(r);
        }
        if old.peek().is_some_and(|(n, _)| *n == num) {
            old.next();
        }
        if let Edit::Put(v) = edit {
            nums.push(num);
            rows.push(v);
        }
    }
    for (n, r) in old {
        nums.push(n);
        rows.push(r);
    }
    chunk.rows = rows;
    chunk.nums = nums;
}

/// A chunk as pieces of at most `2 * CHUNK_ROWS` rows (none if empty).
fn split(chunk: Chunk) -> Vec<Chunk> {
    if chunk.rows.is_empty() {
        return Vec::new();
    }
    if chunk.rows.len() <= 2 * CHUNK_ROWS {
        return vec![chunk];
    }
    let mut out = Vec::new();
    let mut rows = chunk.rows.into_iter();
    let mut nums = chunk.nums.into_iter();
    loop {
        let r: Vec<Value> = rows.by_ref().take(CHUNK_ROWS).collect();
        if r.is_empty() {
            break;
        }
        let n: Vec<u64> = nums.by_ref().take(r.len()).collect();
        out.push(Chunk { rows: r, nums: n });
    }
    out
}

impl Inner {
    fn reindex(&mut self) {
        self.starts.clear();
        let mut at = 0;
        for c in &self.chunks {
            self.starts.push(at);
            at += c.rows.len();
        }
        self.len = at;
    }

    /// Merges neighbouring small chunks (left by removals), so that the
    /// chunk list stays O(rows / CHUNK_ROWS) long.
    fn compact(&mut self) {
        let small = |c: &Chunk| c.rows.len() < CHUNK_ROWS / 4;
        if !self.chunks.iter().any(|c| small(c)) {
            return;
        }
        let mut out: Vec<Arc<Chunk>> = Vec::with_capacity(self.chunks.len());
        for c in std::mem::take(&mut self.chunks) {
            match out.last_mut() {
                Some(prev) if (small(prev) || small(&c)) && prev.rows.len() + c.rows.len() <= CHUNK_ROWS => {
                    let p = Arc::make_mut(prev);
                    p.rows.extend(c.rows.iter().cloned());
                    p.nums.extend(c.nums.iter().copied());
                }
                _ => out.push(c),
            }
        }
        self.chunks = out;
    }
}

impl From<Vec<Value>> for Rows {
    fn from(rows: Vec<Value>) -> Rows {
        let mut chunks = Vec::with_capacity(rows.len().div_ceil(CHUNK_ROWS));
        let mut it = rows.into_iter().peekable();
        while it.peek().is_some() {
            chunks.push(Arc::new(Chunk {
                rows: it.by_ref().take(CHUNK_ROWS).collect(),
                nums: Vec::new(),
            }));
        }
        Rows::from_chunks(chunks, false)
    }
}

impl FromIterator<Value> for Rows {
    fn from_iter<I: IntoIterator<Item = Value>>(iter: I) -> Rows {
        Rows::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl Index<usize> for Rows {
    type Output = Value;
    fn index(&self, index: usize) -> &Value {
        match self.get(index) {
            Some(v) => v,
            None => panic!("row {index} out of {} rows", self.len()),
        }
    }
}

impl<'a> IntoIterator for &'a Rows {
    type Item = &'a Value;
    type IntoIter = Box<dyn DoubleEndedIterator<Item = &'a Value> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl PartialEq for Rows {
    fn eq(&self, other: &Rows) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl PartialEq<[Value]> for Rows {
    fn eq(&self, other: &[Value]) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl PartialEq<Vec<Value>> for Rows {
    fn eq(&self, other: &Vec<Value>) -> bool {
        *self == *other.as_slice()
    }
}

impl fmt::Debug for Rows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn model_patch(model: &mut Vec<(u64, Value)>, edits: &[(u64, Edit)]) {
        for (num, edit) in edits {
            let at = model.partition_point(|(n, _)| n < num);
            let found = model.get(at).is_some_and(|(n, _)| n == num);
            match (found, edit) {
                (true, Edit::Remove) => {
                    model.remove(at);
                }
                (true, Edit::Put(v)) => model[at].1 = v.clone(),
                (false, Edit::Put(v)) => model.insert(at, (*num, v.clone())),
                (false, Edit::Remove) => {}
            }
        }
    }

    fn edits() -> impl Strategy<Value = Vec<(u64, Edit)>> {
        // Numbers up to a few chunks' worth, so that chunks split and merge.
        let edit = prop_oneof![Just(Edit::Remove), (0i64..4).prop_map(|x| Edit::Put(Value::Int(x))),];
        prop::collection::btree_map(0u64..(6 * CHUNK_ROWS as u64), edit, 0..(3 * CHUNK_ROWS))
            .prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        /// Patches give the rows of a plain sorted list with the same
        /// edits, and a diff that turns the old rows into the new ones;
        /// a holder of the old rows keeps them.
        #[test]
        fn patches_equal_a_sorted_list(start in edits(), rounds in prop::collection::vec(edits(), 1..6)) {
            let start: Vec<(u64, Value)> = start
                .into_iter()
                .filter_map(|(n, e)| match e { Edit::Put(v) => Some((n, v)), Edit::Remove => None })
                .collect();
            let mut model = start.clone();
            let mut rows = Rows::numbered(start);
            for round in rounds {
                let before = rows.clone();
                let old_model = model.clone();
                let d = rows.patch(round.clone());
                model_patch(&mut model, &round);
                let want: Vec<Value> = model.iter().map(|(_, v)| v.clone()).collect();
                prop_assert_eq!(&rows, &want);
                prop_assert_eq!(rows.len(), want.len());
                for (i, v) in want.iter().enumerate() {
                    prop_assert_eq!(rows.get(i), Some(v));
                }
                let nums: Vec<u64> = rows.numbered_iter().map(|(n, _)| n.unwrap()).collect();
                prop_assert_eq!(nums, model.iter().map(|(n, _)| *n).collect::<Vec<_>>());
                prop_assert!(rows.0.chunks.iter().all(|c| !c.rows.is_empty() && c.rows.len() <= 2 * CHUNK_ROWS));
                prop_assert!(rows.0.chunks.len() <= 4 * (rows.len() / (CHUNK_ROWS / 4) + 1));
                // The old rows are intact and the diff replays onto them.
                let old: Vec<Value> = old_model.iter().map(|(_, v)| v.clone()).collect();
                prop_assert_eq!(&before, &old);
                let mut replay: Vec<Option<Value>> = old.into_iter().map(Some).collect();
                for &i in &d.deleted {
                    replay[i] = None;
                }
                let mut replay: Vec<Value> = replay.into_iter().flatten().collect();
                for &j in &d.inserted {
                    replay.insert(j, want[j].clone());
                }
                for &j in &d.updated {
                    replay[j] = want[j].clone();
                }
                prop_assert_eq!(replay, want);
                prop_assert!(d.moved.is_empty());
            }
        }
    }
}
