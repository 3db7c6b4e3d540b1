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

use super::ast::{Select, Statement};
use super::eval::{self, Params};
use super::exec::{run_read, Docs, DqlError};
use crate::store::{Changed, Committed};
use crate::value::Value;
use std::collections::{BTreeMap, BTreeSet};
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
    /// The whole current result.
    pub items: Arc<Vec<Value>>,
    /// Its difference from the previous one (everything inserted at first).
    pub diff: Diff,
}

/// A row's identity across results: its `_id` when it has one, else itself.
fn identity(v: &Value) -> Value {
    v.as_object()
        .and_then(|o| o.get("_id"))
        .cloned()
        .unwrap_or_else(|| v.clone())
}

fn key_bytes(v: &Value) -> Vec<u8> {
    crate::codec::encode_id(v)
}

/// The list diff of two results, rows matched by identity. Moves are the
/// rows that are not in the longest run kept in relative order (so a row
/// inserted at the top does not report every other row as moved).
pub fn diff(old: &[Value], new: &[Value]) -> Diff {
    let old_pos: BTreeMap<Vec<u8>, usize> = old
        .iter()
        .enumerate()
        .map(|(i, v)| (key_bytes(&identity(v)), i))
        .collect();
    let new_pos: BTreeMap<Vec<u8>, usize> = new
        .iter()
        .enumerate()
        .map(|(i, v)| (key_bytes(&identity(v)), i))
        .collect();
    let mut d = Diff::default();
    for (i, v) in old.iter().enumerate() {
        if !new_pos.contains_key(&key_bytes(&identity(v))) {
            d.deleted.push(i);
        }
    }
    let mut kept: Vec<(usize, usize)> = Vec::new();
    for (j, v) in new.iter().enumerate() {
        match old_pos.get(&key_bytes(&identity(v))) {
            None => d.inserted.push(j),
            Some(&i) => {
                if old[i] != *v {
                    d.updated.push(j);
                }
                kept.push((i, j));
            }
        }
    }
    let stay = longest_increasing(&kept);
    d.moved = kept
        .iter()
        .enumerate()
        .filter(|(k, _)| !stay.contains(k))
        .map(|(_, &p)| p)
        .collect();
    d
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

struct Query {
    stmt: Arc<Statement>,
    params: Params,
    observers: BTreeSet<ObserverId>,
    items: Arc<Vec<Value>>,
    ids: BTreeSet<Vec<u8>>,
}

impl Query {
    fn select(&self) -> Option<&Select> {
        match self.stmt.as_ref() {
            Statement::Select(s) => Some(s),
            _ => None,
        }
    }

    fn set_items(&mut self, items: Vec<Value>) {
        self.ids = items.iter().map(|v| key_bytes(&identity(v))).collect();
        self.items = Arc::new(items);
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
        if !rowwise {
            return Ok(true);
        }
        for id in ids {
            if self.ids.contains(&key_bytes(id)) {
                return Ok(true);
            }
            let Some(doc) = docs.get(&s.from.collection, id)? else {
                continue;
            };
            let matches = match &s.filter {
                None => true,
                Some(f) => eval::truthy(&eval::eval(f, &doc, &self.params)?),
            };
            if matches {
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
            let items = run_read(docs, &stmt, &params)?.items;
            self.runs += 1;
            let mut q = Query {
                stmt,
                params,
                observers: BTreeSet::new(),
                items: Arc::default(),
                ids: BTreeSet::new(),
            };
            q.set_items(items);
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

    /// Number of distinct queries running (observers of one query share it).
    pub fn queries(&self) -> usize {
        self.queries.len()
    }

    /// After a commit: re-runs the queries it can affect and returns an
    /// event for every observer whose result changed.
    pub fn on_commit(&mut self, committed: &Committed, docs: &mut dyn Docs) -> Result<Vec<Event>, DqlError> {
        let mut events = Vec::new();
        for q in self.queries.values_mut() {
            if !q.affected_by(committed, docs)? {
                continue;
            }
            let items = run_read(docs, &q.stmt, &q.params)?.items;
            self.runs += 1;
            let d = diff(&q.items, &items);
            if d.is_empty() {
                continue;
            }
            q.set_items(items);
            for &o in &q.observers {
                events.push(Event {
                    observer: o,
                    items: q.items.clone(),
                    diff: d.clone(),
                });
            }
        }
        Ok(events)
    }
}
