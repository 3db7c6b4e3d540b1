//! In-memory backend: the same tables as LMDB, held in ordered maps.
//!
//! It exists so that the simulator can run thousands of peers in one process
//! (an LMDB environment per peer would exhaust address space and file
//! handles). Snapshots are `Arc`s of the committed tables: a reader clones the
//! `Arc`, and a commit mutates in place unless a reader still holds the old
//! version (then it copies once). Durability is "as long as the value lives".

use crate::kv::{Kv, KvError, KvRead, KvWrite, Table};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;
type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

#[derive(Clone, Default)]
struct Tables([Map; Table::ALL.len()]);

/// The in-memory backend.
#[derive(Default)]
pub struct MemKv {
    committed: Mutex<Arc<Tables>>,
    writer: Mutex<()>,
}

impl MemKv {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn snapshot(&self) -> Arc<Tables> {
        // A poisoned lock only means another thread panicked mid-read; the
        // committed tables are replaced atomically, so they are still whole.
        self.committed.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A snapshot of the committed tables.
pub struct MemRead {
    snap: Arc<Tables>,
}

/// The write transaction: writes go to an overlay until commit.
pub struct MemWrite<'a> {
    kv: &'a MemKv,
    _writer: MutexGuard<'a, ()>,
    base: Arc<Tables>,
    overlay: [Overlay; Table::ALL.len()],
}

impl Kv for MemKv {
    type Read<'a> = MemRead;
    type Write<'a> = MemWrite<'a>;

    fn read(&self) -> Result<MemRead, KvError> {
        Ok(MemRead { snap: self.snapshot() })
    }

    fn write(&self) -> Result<MemWrite<'_>, KvError> {
        let guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        Ok(MemWrite {
            kv: self,
            _writer: guard,
            base: self.snapshot(),
            overlay: Default::default(),
        })
    }
}

fn range_bounds<'k>(from: &'k [u8], to: Option<&'k [u8]>) -> (Bound<&'k [u8]>, Bound<&'k [u8]>) {
    (Bound::Included(from), to.map_or(Bound::Unbounded, Bound::Excluded))
}

fn empty_range(from: &[u8], to: Option<&[u8]>) -> bool {
    to.is_some_and(|to| to <= from)
}

impl KvRead for MemRead {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<&[u8]>, KvError> {
        Ok(self.snap.0[table.index()].get(key).map(Vec::as_slice))
    }

    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), KvError> {
        if empty_range(from, to) {
            return Ok(());
        }
        let range = self.snap.0[table.index()].range::<[u8], _>(range_bounds(from, to));
        let mut step = |(k, v): (&Vec<u8>, &Vec<u8>)| visit(k, v);
        if reverse {
            for kv in range.rev() {
                if !step(kv) {
                    break;
                }
            }
        } else {
            for kv in range {
                if !step(kv) {
                    break;
                }
            }
        }
        Ok(())
    }
}

impl KvRead for MemWrite<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<&[u8]>, KvError> {
        match self.overlay[table.index()].get(key) {
            Some(pending) => Ok(pending.as_deref()),
            None => Ok(self.base.0[table.index()].get(key).map(Vec::as_slice)),
        }
    }

    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), KvError> {
        if empty_range(from, to) {
            return Ok(());
        }
        let bounds = range_bounds(from, to);
        let base = self.base.0[table.index()]
            .range::<[u8], _>(bounds)
            .map(|(k, v)| (k, Some(v)));
        let over = self.overlay[table.index()]
            .range::<[u8], _>(bounds)
            .map(|(k, v)| (k, v.as_ref()));
        if reverse {
            merge_visit(base.rev(), over.rev(), |a, b| b.cmp(a), visit);
        } else {
            merge_visit(base, over, |a, b| a.cmp(b), visit);
        }
        Ok(())
    }
}

/// Visits the union of two sorted streams; on equal keys the overlay wins and
/// a `None` overlay value (a pending delete) hides the key.
fn merge_visit<'a>(
    base: impl Iterator<Item = (&'a Vec<u8>, Option<&'a Vec<u8>>)>,
    over: impl Iterator<Item = (&'a Vec<u8>, Option<&'a Vec<u8>>)>,
    order: impl Fn(&[u8], &[u8]) -> std::cmp::Ordering,
    visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) {
    use std::cmp::Ordering::*;
    let mut base = base.peekable();
    let mut over = over.peekable();
    loop {
        let pick = match (base.peek(), over.peek()) {
            (None, None) => return,
            (Some(_), None) => base.next(),
            (None, Some(_)) => over.next(),
            (Some(b), Some(o)) => match order(b.0, o.0) {
                Less => base.next(),
                Greater => over.next(),
                Equal => {
                    base.next();
                    over.next()
                }
            },
        };
        if let Some((k, Some(v))) = pick {
            if !visit(k, v) {
                return;
            }
        }
    }
}

impl KvWrite for MemWrite<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.overlay[table.index()].insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool, KvError> {
        let existed = self.get(table, key)?.is_some();
        self.overlay[table.index()].insert(key.to_vec(), None);
        Ok(existed)
    }

    fn commit(self) -> Result<(), KvError> {
        let MemWrite {
            kv,
            _writer,
            base,
            overlay,
        } = self;
        drop(base); // so that make_mut can mutate in place when no reader holds a snapshot
        let mut committed = kv.committed.lock().unwrap_or_else(|e| e.into_inner());
        let tables = Arc::make_mut(&mut committed);
        for (map, pending) in tables.0.iter_mut().zip(overlay) {
            for (k, v) in pending {
                match v {
                    Some(v) => map.insert(k, v),
                    None => map.remove(&k),
                };
            }
        }
        Ok(())
    }
}
