//! Live queries: observers that hold a query's result and are told, after
//! each commit that can affect it, the new result and a diff.
//!
//! Pure bookkeeping: the caller (the query actor) passes what a commit
//! changed and a way to read documents; this module decides which queries
//! must re-run and computes their diffs. Observers of the same query and
//! parameters share one result and one re-run. A changed document can only
//! affect a query if it is in the query's collection and it is either in the
//! last result or now matches the filter; anything else is skipped without
//! re-running (with a `LIMIT`, a document that neither was in the top rows
//! nor matches now cannot change them).
//!
//! A `SELECT *` result with an `ORDER BY` is patched in place from the
//! changed documents when that provably gives what a re-run would (see
//! `Query::patched`); only the doubtful cases re-run.
//!
//! A `SELECT *` result without `ORDER BY` that the plan reads with a plain
//! scan comes out in scan order, the order of document numbers. It is kept
//! with each row's number ([`Rows`], numbered), and a commit's changed
//! documents are inserted, replaced or removed at their number's place: a
//! commit costs O(changed documents), not O(result), which keeps a sync of
//! n documents into a live `SELECT * FROM c` at O(n) instead of O(n²) (see
//! `Query::patch_scan`; a full `LIMIT` window that would lose or gain rows
//! re-runs).

use super::ast::SelectItem;
use super::ast::{Select, Statement};
use super::eval::{self, Params};
use super::exec::{cmp_keys, count_param, eval_keys, run_read, Docs, DqlError, MAX_RESULT_ROWS};
use super::plan::{self, Access};
use super::rows::Edit;
pub use super::rows::Rows;
use super::source::LazyRow;
use crate::store::RawDoc;
use crate::store::{Changed, Committed};
use crate::value::Value;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// Identifies one observer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObserverId(pub u64);

/// How a result changed: indexes into the old and new result lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// New rows (indexes in the new result).
    pub inserted: Vec<usize>,
    /// Rows gone (indexes in the old result).
    pub deleted: Vec<usize>,
    /// Rows whose content changed (indexes in the new result).
    pub updated: Vec<usize>,
    /// Rows that changed position: (old index, new index).
    pub moved: Vec<(usize, usize)>,
}

impl Diff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.inserted.is_empty() && self.deleted.is_empty() && self.updated.is_empty() && self.moved.is_empty()
    }
}

/// What an observer receives.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The observer.
    pub observer: ObserverId,
    /// The whole current result (shared: cloning it is cheap).
    pub items: Rows,
    /// Its difference from the previous one (everything inserted at first).
    pub diff: Diff,
    /// Which result `diff` is against: the address ([`Rows::address`]) of
    /// the `items` of this query's previous event, 0 for the first. A consumer
    /// still holding that `Arc` can take `diff` as is instead of diffing
    /// the two results again (which costs a pass over both).
    pub previous: usize,
}

/// The address [`Event::previous`] names a result by.
pub fn result_address(items: &Rows) -> usize {
    items.address()
}

fn key_bytes(v: &Value) -> Vec<u8> {
    crate::codec::encode_id(v)
}

/// A row's identity across results, encoded: its `_id` when it has one,
/// else itself.
fn row_key(v: &Value) -> Vec<u8> {
    key_bytes(v.as_object().and_then(|o| o.get("_id")).unwrap_or(v))
}

/// The list diff of two results, rows matched by identity. Moves are the
/// rows that are not in the longest run kept in relative order (so a row
/// inserted at the top does not report every other row as moved).
pub fn diff(old: &[Value], new: &[Value]) -> Diff {
    let old: Vec<&Value> = old.iter().collect();
    let new: Vec<&Value> = new.iter().collect();
    diff_refs(&old, &new)
}

/// [`diff`] of two [`Rows`].
pub fn diff_rows(old: &Rows, new: &Rows) -> Diff {
    let old: Vec<&Value> = old.iter().collect();
    let new: Vec<&Value> = new.iter().collect();
    diff_refs(&old, &new)
}

fn diff_refs(old: &[&Value], new: &[&Value]) -> Diff {
    // Each row's key is encoded once and looked up by reference; the maps
    // are for lookups only (the output follows the lists' order).
    let old_keys: Vec<Vec<u8>> = old.iter().map(|v| row_key(v)).collect();
    let new_keys: Vec<Vec<u8>> = new.iter().map(|v| row_key(v)).collect();
    let old_pos: HashMap<&[u8], usize> = old_keys.iter().enumerate().map(|(i, k)| (k.as_slice(), i)).collect();
    let new_pos: HashSet<&[u8]> = new_keys.iter().map(Vec::as_slice).collect();
    let mut d = Diff {
        deleted: (0..old.len())
            .filter(|&i| !new_pos.contains(old_keys[i].as_slice()))
            .collect(),
        ..Diff::default()
    };
    let mut kept: Vec<(usize, usize)> = Vec::new();
    for (j, v) in new.iter().enumerate() {
        match old_pos.get(new_keys[j].as_slice()) {
            None => d.inserted.push(j),
            Some(&i) => {
                if old[i] != *v {
                    d.updated.push(j);
                }
                kept.push((i, j));
            }
        }
    }
    d.moved = moves(&kept);
    d
}

/// The kept rows (old index, new index), in new order, that moved: those
/// outside a longest run whose old positions increase.
fn moves(kept: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let stay = longest_increasing(kept);
    kept.iter()
        .enumerate()
        .filter(|(k, _)| !stay.contains(k))
        .map(|(_, &p)| p)
        .collect()
}

/// Indexes (into `pairs`, which is in new order) of a longest run whose old
/// positions increase: O(n log n) patience sorting.
fn longest_increasing(pairs: &[(usize, usize)]) -> BTreeSet<usize> {
    let mut tails: Vec<usize> = Vec::new();
    let mut prev: Vec<Option<usize>> = vec![None; pairs.len()];
    for k in 0..pairs.len() {
        let at = tails.partition_point(|&t| pairs[t].0 < pairs[k].0);
        prev[k] = at.checked_sub(1).map(|a| tails[a]);
        if at == tails.len() {
            tails.push(k);
        } else {
            tails[at] = k;
        }
    }
    let mut out = BTreeSet::new();
    let mut cur = tails.last().copied();
    while let Some(k) = cur {
        out.insert(k);
        cur = prev[k];
    }
    out
}

/// Most changed documents of one commit patched into a result; more re-run
/// the query.
const MAX_PATCH_DOCS: usize = 64;

type Keys = Vec<Option<Value>>;

/// A row of a patched result.
enum Row {
    /// The row at this index of the old result, unchanged.
    Old(usize),
    /// A changed document, and where it was in the old result.
    New { value: Value, was: Option<usize> },
}

impl Row {
    fn was(&self) -> Option<usize> {
        match self {
            Row::Old(i) => Some(*i),
            Row::New { was, .. } => *was,
        }
    }
}

struct Query {
    stmt: Arc<Statement>,
    params: Params,
    observers: BTreeSet<ObserverId>,
    items: Rows,
    /// Row identities ([`row_key`]) of `items`, with their document numbers
    /// when `items` is numbered (0 otherwise).
    ids: BTreeMap<Vec<u8>, u64>,
    /// The `ORDER BY` keys of `items` when the result can be patched.
    keys: Vec<Keys>,
    /// An update failed midway: `items` may not match the store, so the
    /// next commit re-runs the query whatever it changed.
    stale: bool,
}

impl Query {
    fn select(&self) -> Option<&Select> {
        match self.stmt.as_ref() {
            Statement::Select(s) => Some(s),
            _ => None,
        }
    }

    fn set_items(&mut self, items: Rows) -> Result<(), DqlError> {
        self.ids = items
            .numbered_iter()
            .map(|(n, v)| (row_key(v), n.unwrap_or(0)))
            .collect();
        self.keys = match self.select().filter(|s| patchable(s)) {
            Some(s) => items
                .iter()
                .map(|v| eval_keys(&s.order_by, v, &self.params))
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        self.items = items;
        Ok(())
    }

    /// Runs the query afresh: numbered, by a scan of its own, when it is a
    /// plain scan (see [`scan_window`]), else by the executor.
    fn fresh(&self, docs: &mut dyn Docs) -> Result<Rows, DqlError> {
        if let Some(s) = self.select() {
            if let Some(limit) = scan_window(s, &self.params, docs)? {
                return run_numbered(docs, s, &self.params, limit);
            }
        }
        Ok(Rows::from(super::item::values(
            run_read(docs, &self.stmt, &self.params)?.items,
        )?))
    }

    /// Patches a numbered result with a commit; `None` when only a re-run
    /// can tell (many changes, a plan that is no longer a scan, a full
    /// `LIMIT` window that would gain or lose rows).
    fn patch_scan(&mut self, committed: &Committed, docs: &mut dyn Docs) -> Result<Option<Diff>, DqlError> {
        if !self.items.is_numbered() {
            return Ok(None);
        }
        let stmt = self.stmt.clone();
        let Statement::Select(s) = stmt.as_ref() else {
            return Ok(None);
        };
        let ids = match committed.changed.get(&s.from.collection) {
            None => return Ok(Some(Diff::default())),
            Some(Changed::Many) => return Ok(None),
            Some(Changed::Docs(ids)) => ids,
        };
        // Planned again: an index created since would change the order.
        let Some(limit) = scan_window(s, &self.params, docs)? else {
            return Ok(None);
        };
        let Some((edits, moved_ids)) = self.scan_edits(s, ids, docs, limit)? else {
            return Ok(None);
        };
        let d = self.items.patch(edits);
        for (key, num) in moved_ids {
            match num {
                Some(n) => self.ids.insert(key, n),
                None => self.ids.remove(&key),
            };
        }
        debug_assert_eq!(self.ids.len(), self.items.len());
        Ok(Some(d))
    }

    /// The edits a commit that changed documents `ids` makes to a numbered
    /// result, and the new numbers of the row identities they move (`None`:
    /// no longer a row); `None` when only a re-run can tell.
    #[allow(clippy::type_complexity)]
    fn scan_edits(
        &self,
        s: &Select,
        ids: &[Value],
        docs: &dyn Docs,
        limit: usize,
    ) -> Result<Option<(Vec<(u64, Edit)>, Vec<(Vec<u8>, Option<u64>)>)>, DqlError> {
        let full = self.items.len() >= limit;
        let last = self.items.last_num();
        let mut edits: BTreeMap<u64, Edit> = BTreeMap::new();
        let mut moved = Vec::new();
        for id in ids {
            let key = key_bytes(id);
            let was = self.ids.get(&key).copied();
            let mut now: Option<(u64, Option<Value>)> = None;
            let mut failure = None;
            docs.get_numbered(&s.from.collection, id, &mut |num, raw| {
                if full && last.is_some_and(|l| num > l) {
                    // Past a full window: a re-run stops before it.
                    now = Some((num, None));
                    return;
                }
                match admit(s, &self.params, raw) {
                    Ok(v) => now = Some((num, v)),
                    Err(e) => failure = Some(e),
                }
            })?;
            if let Some(e) = failure {
                return Err(e);
            }
            if let Some(m) = was {
                if now.as_ref().is_none_or(|(n, v)| *n != m || v.is_none()) {
                    edits.insert(m, Edit::Remove);
                }
            }
            let row_num = match now {
                Some((n, Some(v))) => {
                    edits.insert(n, Edit::Put(v));
                    Some(n)
                }
                _ => None,
            };
            if was.is_some() || row_num.is_some() {
                moved.push((key, row_num));
            }
        }
        let removed = edits.values().filter(|e| matches!(e, Edit::Remove)).count();
        let added = edits
            .iter()
            .filter(|(n, e)| matches!(e, Edit::Put(_)) && !self.items.contains_num(**n))
            .count();
        // A full window that loses a row would take in one from past it; one
        // that gains a row would push its last out (a re-run is simpler).
        if (full && (removed > 0 || added > 0)) || self.items.len() - removed + added > limit {
            return Ok(None);
        }
        Ok(Some((edits.into_iter().collect(), moved)))
    }

    /// The result after a commit that changed documents `ids` of the
    /// query's collection, computed from the old result and those documents
    /// alone; `None` when only a re-run can tell. Rows outside a full
    /// `LIMIT` window are unknown, so a window row that leaves it or gets
    /// worse than the last row, and ties that the scan order would break,
    /// need a re-run.
    fn patched(&self, ids: &[Value], docs: &dyn Docs) -> Result<Option<Vec<(Keys, Row)>>, DqlError> {
        let Some(s) = self.select().filter(|s| patchable(s)) else {
            return Ok(None);
        };
        if ids.len() > MAX_PATCH_DOCS || self.keys.len() != self.items.len() {
            return Ok(None);
        }
        let limit = count_param(&s.limit, "LIMIT", &self.params)?;
        let full = limit.is_some_and(|l| self.items.len() >= l);
        let last = self.keys.last();
        let mut rows: Vec<(Keys, Row)> = self
            .keys
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, k)| (k, Row::Old(i)))
            .collect();
        for id in ids {
            let at = rows.iter().position(|(_, r)| match r {
                Row::Old(i) => self.items[*i].as_object().and_then(|o| o.get("_id")) == Some(id),
                Row::New { value, .. } => value.as_object().and_then(|o| o.get("_id")) == Some(id),
            });
            let doc = match docs.get(&s.from.collection, id)? {
                Some(d) if self.matches(s, &d)? => Some(d),
                _ => None,
            };
            let keys = doc
                .as_ref()
                .map(|d| eval_keys(&s.order_by, d, &self.params))
                .transpose()?;
            // Compared with the old last row of a full window: rows outside it rank after it.
            let inside = |k: &Keys| last.is_none_or(|l| cmp_keys(&s.order_by, k, l) == Ordering::Less);
            match (at, doc, keys) {
                (Some(i), Some(value), Some(k)) if !full || inside(&k) => {
                    let was = rows[i].1.was();
                    rows[i] = (k, Row::New { value, was });
                }
                (Some(i), None, _) if !full => {
                    rows.remove(i);
                }
                (None, Some(value), Some(k)) if !full || inside(&k) => rows.push((k, Row::New { value, was: None })),
                (None, Some(_), Some(k)) if last.is_some_and(|l| cmp_keys(&s.order_by, &k, l) == Ordering::Greater) => {
                }
                (None, None, _) => {}
                _ => return Ok(None),
            }
        }
        // Stable: unchanged rows keep their relative (scan) order.
        rows.sort_by(|a, b| cmp_keys(&s.order_by, &a.0, &b.0));
        let changed = |r: &Row| matches!(r, Row::New { .. });
        let tie = rows.windows(2).any(|w| {
            (changed(&w[0].1) || changed(&w[1].1)) && cmp_keys(&s.order_by, &w[0].0, &w[1].0) == Ordering::Equal
        });
        if tie {
            return Ok(None);
        }
        rows.truncate(limit.unwrap_or(usize::MAX));
        Ok(Some(rows))
    }

    /// Takes a patch: its diff against the current result, and the new
    /// result built by moving unchanged rows (no copies unless an event
    /// still holds the old result).
    fn apply_patch(&mut self, rows: Vec<(Keys, Row)>) -> Result<Diff, DqlError> {
        let mut d = Diff::default();
        let mut kept = Vec::with_capacity(rows.len());
        let mut present = vec![false; self.items.len()];
        for (j, (_, row)) in rows.iter().enumerate() {
            match row {
                Row::Old(i) => kept.push((*i, j)),
                Row::New { was: None, .. } => d.inserted.push(j),
                Row::New { was: Some(i), value } => {
                    if self.items[*i] != *value {
                        d.updated.push(j);
                    }
                    kept.push((*i, j));
                }
            }
        }
        for &(i, _) in &kept {
            present[i] = true;
        }
        d.deleted = (0..self.items.len()).filter(|&i| !present[i]).collect();
        d.moved = moves(&kept);
        if d.is_empty() {
            return Ok(d);
        }
        let mut old = std::mem::take(&mut self.items).into_vec();
        let (keys, items): (Vec<Keys>, Vec<Value>) = rows
            .into_iter()
            .map(|(k, row)| match row {
                Row::Old(i) => (k, std::mem::replace(&mut old[i], Value::Null)),
                Row::New { value, .. } => (k, value),
            })
            .unzip();
        self.ids = items.iter().map(|v| (row_key(v), 0)).collect();
        self.items = Rows::from(items);
        self.keys = keys;
        Ok(d)
    }

    fn matches(&self, s: &Select, doc: &Value) -> Result<bool, DqlError> {
        match &s.filter {
            None => Ok(true),
            Some(f) => Ok(eval::truthy(&eval::eval(f, doc, &self.params)?)),
        }
    }

    /// Whether a commit can change this query's result.
    fn affected_by(&self, committed: &Committed, docs: &dyn Docs) -> Result<bool, DqlError> {
        let Some(s) = self.select() else { return Ok(false) };
        if !s.joins.is_empty() {
            return Ok(committed.changed.contains_key(&s.from.collection)
                || s.joins
                    .iter()
                    .any(|j| committed.changed.contains_key(&j.source.collection)));
        }
        let Some(changed) = committed.changed.get(&s.from.collection) else {
            return Ok(false);
        };
        let Changed::Docs(ids) = changed else { return Ok(true) };
        // Aggregated and DISTINCT rows are not documents: a document that
        // matched before may have left them, so any change re-runs them.
        let rowwise = s.group_by.is_empty()
            && !s.distinct
            && !s
                .items
                .iter()
                .any(|i| matches!(i, super::ast::SelectItem::Expr { expr, .. } if eval::contains_aggregate(expr)));
        // Rows skipped by an OFFSET are not in the result, yet one that
        // leaves shifts the window.
        if !rowwise || s.offset.is_some() {
            return Ok(true);
        }
        for id in ids {
            if self.ids.contains_key(&key_bytes(id)) {
                return Ok(true);
            }
            let Some(doc) = docs.get(&s.from.collection, id)? else {
                continue;
            };
            if self.matches(s, &doc)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Every live query of one peer.
#[derive(Default)]
pub struct Observers {
    next: u64,
    runs: u64,
    patches: u64,
    queries: BTreeMap<(String, Vec<u8>), Query>,
    by_observer: BTreeMap<ObserverId, (String, Vec<u8>)>,
}

impl Observers {
    /// No observers.
    pub fn new() -> Observers {
        Observers::default()
    }

    /// Registers an observer of `text` (a `SELECT`) with `params`, and
    /// returns its first event: the full current result.
    pub fn observe(
        &mut self,
        text: &str,
        stmt: Arc<Statement>,
        params: Params,
        docs: &mut dyn Docs,
    ) -> Result<Event, DqlError> {
        let Statement::Select(_) = stmt.as_ref() else {
            return Err(DqlError::Invalid {
                reason: "only SELECT statements can be observed".into(),
            });
        };
        let key = (text.to_string(), params.fingerprint());
        let id = ObserverId(self.next);
        self.next += 1;
        if !self.queries.contains_key(&key) {
            let mut q = Query {
                stmt,
                params,
                observers: BTreeSet::new(),
                items: Rows::new(),
                ids: BTreeMap::new(),
                keys: Vec::new(),
                stale: false,
            };
            let items = q.fresh(docs)?;
            self.runs += 1;
            q.set_items(items)?;
            self.queries.insert(key.clone(), q);
        }
        let Some(q) = self.queries.get_mut(&key) else {
            unreachable!("inserted above")
        };
        q.observers.insert(id);
        self.by_observer.insert(id, key);
        let diff = Diff {
            inserted: (0..q.items.len()).collect(),
            ..Diff::default()
        };
        Ok(Event {
            observer: id,
            items: q.items.clone(),
            diff,
            previous: 0,
        })
    }

    /// Removes an observer; its query stops when no observer is left.
    pub fn cancel(&mut self, id: ObserverId) {
        if let Some(key) = self.by_observer.remove(&id) {
            if let Some(q) = self.queries.get_mut(&key) {
                q.observers.remove(&id);
                if q.observers.is_empty() {
                    self.queries.remove(&key);
                }
            }
        }
    }

    /// How many times queries were run (first results and re-runs).
    pub fn runs(&self) -> u64 {
        self.runs
    }

    /// How many times a result was patched from changed documents instead
    /// of re-running its query.
    pub fn patches(&self) -> u64 {
        self.patches
    }

    /// Number of distinct queries running (observers of one query share it).
    pub fn queries(&self) -> usize {
        self.queries.len()
    }

    /// After a commit: re-runs the queries it can affect and returns an
    /// event for every observer whose result changed. The first query that
    /// fails fails the whole call; see [`Observers::on_commit_each`] to keep
    /// the others going.
    pub fn on_commit(&mut self, committed: &Committed, docs: &mut dyn Docs) -> Result<Vec<Event>, DqlError> {
        let (events, mut failures) = self.on_commit_each(committed, docs);
        match failures.pop() {
            Some((_, e)) => Err(e),
            None => Ok(events),
        }
    }

    /// [`Observers::on_commit`] with each query on its own: a query whose
    /// update fails (a function refusing a value that just arrived, say)
    /// reports its observers and the error, keeps its previous result, and
    /// is re-run in full at the next commit; the other queries are updated.
    pub fn on_commit_each(
        &mut self,
        committed: &Committed,
        docs: &mut dyn Docs,
    ) -> (Vec<Event>, Vec<(Vec<ObserverId>, DqlError)>) {
        let (mut events, mut failures) = (Vec::new(), Vec::new());
        let (mut runs, mut patches) = (0, 0);
        for q in self.queries.values_mut() {
            // An address only (no reference): holding the Arc would make
            // the patch path copy the whole result.
            let previous = result_address(&q.items);
            match q.update(committed, docs, &mut runs, &mut patches) {
                Ok(d) if d.is_empty() => {}
                Ok(d) => events.extend(q.observers.iter().map(|&o| Event {
                    observer: o,
                    items: q.items.clone(),
                    diff: d.clone(),
                    previous,
                })),
                Err(e) => {
                    q.stale = true;
                    failures.push((q.observers.iter().copied().collect(), e));
                }
            }
        }
        self.runs += runs;
        self.patches += patches;
        (events, failures)
    }
}

impl Query {
    /// Brings the result up to date with a commit; the diff is empty when
    /// nothing changed.
    fn update(
        &mut self,
        committed: &Committed,
        docs: &mut dyn Docs,
        runs: &mut u64,
        patches: &mut u64,
    ) -> Result<Diff, DqlError> {
        if !self.stale {
            if let Some(d) = self.patch_scan(committed, docs)? {
                if !d.is_empty() {
                    *patches += 1;
                }
                return Ok(d);
            }
        }
        if !self.stale && !self.affected_by(committed, docs)? {
            return Ok(Diff::default());
        }
        let patched = match (
            self.stale,
            self.select().map(|s| committed.changed.get(&s.from.collection)),
        ) {
            (false, Some(Some(Changed::Docs(ids)))) => self.patched(ids, docs)?,
            _ => None,
        };
        let d = match patched {
            Some(rows) => {
                *patches += 1;
                self.apply_patch(rows)?
            }
            None => {
                *runs += 1;
                let items = self.fresh(docs)?;
                let d = diff_rows(&self.items, &items);
                // A numbered result takes the new numbers even when the rows
                // are the same (an evicted document may have come back).
                if !d.is_empty() || self.stale || items.is_numbered() || self.items.is_numbered() {
                    self.set_items(items)?;
                }
                d
            }
        };
        self.stale = false;
        Ok(d)
    }
}

/// Whether a query's result can be patched: `SELECT *` rows of one
/// collection (not a `USE IDS` list) in an explicit order, no `OFFSET`
/// (rows before the window are unknown), no grouping.
fn patchable(s: &Select) -> bool {
    matches!(s.items.as_slice(), [SelectItem::All(None)])
        && s.use_ids.is_none()
        && !s.order_by.is_empty()
        && s.offset.is_none()
        && s.joins.is_empty()
        && s.group_by.is_empty()
        && s.having.is_none()
        && !s.distinct
}

/// Whether a query's rows are whole documents of one collection, filtered
/// only, in the order they are read: then a plain scan returns them in
/// document-number order.
fn scan_shaped(s: &Select) -> bool {
    matches!(s.items.as_slice(), [SelectItem::All(None)])
        && s.use_ids.is_none()
        && s.order_by.is_empty()
        && s.joins.is_empty()
        && s.group_by.is_empty()
        && s.having.is_none()
        && !s.distinct
        && s.from.collection != "system:indexes"
}

/// For a scan-shaped query that the plan reads with a plain scan (no point
/// reads, no index) and without `OFFSET`: how many rows it keeps at most
/// (its `LIMIT`, capped as the executor caps results). `None`: its result
/// cannot be kept numbered.
fn scan_window(s: &Select, params: &Params, docs: &dyn Docs) -> Result<Option<usize>, DqlError> {
    if !scan_shaped(s) || count_param(&s.offset, "OFFSET", params)?.is_some_and(|o| o > 0) {
        return Ok(None);
    }
    let limit = count_param(&s.limit, "LIMIT", params)?
        .unwrap_or(MAX_RESULT_ROWS)
        .min(MAX_RESULT_ROWS);
    if limit == 0 {
        return Ok(None);
    }
    let access = match plan::direct(s, params)? {
        Some(a) => a,
        None => plan::plan(s, &docs.indexes()?, params)?,
    };
    Ok((access == Access::Scan).then_some(limit))
}

/// A scan-shaped query's rows, numbered, read as the executor reads a plain
/// scan: records in storage order, visible ones that pass the filter,
/// stopping at `limit` rows.
fn run_numbered(docs: &mut dyn Docs, s: &Select, params: &Params, limit: usize) -> Result<Rows, DqlError> {
    assert!(limit > 0, "an empty window is not scanned");
    let mut rows = Vec::new();
    let mut failure = None;
    docs.scan_numbered(&s.from.collection, &mut |num, raw| {
        match admit(s, params, raw) {
            Ok(Some(v)) => rows.push((num, v)),
            Ok(None) => {}
            Err(e) => failure = Some(e),
        }
        failure.is_none() && rows.len() < limit
    })?;
    match failure {
        Some(e) => Err(e),
        None => Ok(Rows::numbered(rows)),
    }
}

/// A stored record as a row of a scan-shaped query: the document when it
/// is visible and passes the filter.
fn admit(s: &Select, params: &Params, raw: RawDoc<'_>) -> Result<Option<Value>, DqlError> {
    let row = LazyRow::new(raw)?;
    if !row.is_visible()? {
        return Ok(None);
    }
    if let Some(f) = &s.filter {
        let v = eval::eval(f, &row, params);
        row.check()?;
        if !eval::truthy(&v?) {
            return Ok(None);
        }
    }
    Ok(Some(row.into_value()?))
}
