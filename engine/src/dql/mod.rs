//! DQL: the SQL-like query language of Rhizome, over JSON documents.
//!
//! Text is parsed once into a [`ast::Statement`] (prepared statements are
//! cached by text), expressions are evaluated by `eval` with a missing value
//! distinct from null, and statements run against a store transaction. The
//! whole module is pure: the store comes in as a transaction.

pub mod ast;
pub mod eval;
mod lex;
pub mod parse;

pub mod exec;
pub mod item;
pub mod observe;
pub mod plan;
pub mod profile;
pub mod rows;
pub mod source;

use crate::kv::Kv;
use crate::store::{Committed, Store, WriteTx};
use crate::value::Value;
use ast::Statement;
use eval::Params;
use exec::{DqlError, Output};
use profile::ClockUs;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Most statements kept prepared (parsed) at once.
pub const CACHE_STATEMENTS: usize = 256;

/// Cached statements by text, each with when it was last used.
type Cache = BTreeMap<String, (u64, Arc<Statement>)>;

/// Prepared statements, by text: parse once, run many times.
#[derive(Default)]
pub struct Prepared {
    /// (use counter, cache)
    cache: Mutex<(u64, Cache)>,
}

impl Prepared {
    /// An empty cache.
    pub fn new() -> Prepared {
        Prepared::default()
    }

    /// The parsed statement of `text`, from the cache or freshly parsed and
    /// checked (unknown functions, argument counts, literal patterns and
    /// units are errors here, whatever the data).
    /// The least recently used entry goes when the cache is full.
    pub fn get(&self, text: &str) -> Result<Arc<Statement>, DqlError> {
        let mut guard = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (clock, map) = &mut *guard;
        *clock += 1;
        if let Some((used, stmt)) = map.get_mut(text) {
            *used = *clock;
            return Ok(stmt.clone());
        }
        let stmt = parse::parse(text)?;
        eval::check(&stmt)?;
        let stmt = Arc::new(stmt);
        if map.len() >= CACHE_STATEMENTS {
            if let Some(oldest) = map.iter().min_by_key(|(_, (used, _))| *used).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        map.insert(text.to_string(), (*clock, stmt.clone()));
        Ok(stmt)
    }

    /// Number of statements cached.
    pub fn len(&self) -> usize {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).1.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Runs one statement in its own transaction: a snapshot for reads, the
/// write transaction (committed) for anything that changes data. Returns
/// the output and, for writes, what the commit changed.
pub fn execute<K: Kv>(
    store: &Store<K>,
    stmt: &Statement,
    params: &Params,
    now_ms: u64,
) -> Result<(Output, Option<Committed>), DqlError> {
    execute_with(store, stmt, params, now_ms, None)
}

/// [`execute`] with a microsecond clock for `PROFILE` timings.
pub fn execute_with<K: Kv>(
    store: &Store<K>,
    stmt: &Statement,
    params: &Params,
    now_ms: u64,
    clock: Option<ClockUs<'_>>,
) -> Result<(Output, Option<Committed>), DqlError> {
    if exec::is_read_only(stmt) {
        let mut r = store.read()?;
        return Ok((exec::run_read_with(&mut r, stmt, params, clock)?, None));
    }
    let mut tx = Transaction::begin(store, now_ms)?;
    let out = tx.execute_with(stmt, params, clock)?;
    Ok((out, Some(tx.commit()?)))
}

/// Several statements in one atomic transaction: each sees the writes of
/// the ones before it, and other readers see all of them or none (they
/// commit together). A statement that fails may have written part of its
/// work, so the first error aborts the transaction: later statements and
/// the commit are refused, and dropping it rolls everything back.
pub struct Transaction<'s, K: Kv> {
    tx: WriteTx<'s, K>,
    /// The error that aborted the transaction, as text.
    aborted: Option<String>,
    statements: usize,
}

impl<'s, K: Kv> Transaction<'s, K> {
    /// Starts a write transaction (one at a time per store; this waits for
    /// the current one).
    pub fn begin(store: &'s Store<K>, now_ms: u64) -> Result<Transaction<'s, K>, DqlError> {
        Ok(Transaction {
            tx: store.write(now_ms)?,
            aborted: None,
            statements: 0,
        })
    }

    /// Runs a statement (read or write) inside the transaction.
    pub fn execute(&mut self, stmt: &Statement, params: &Params) -> Result<Output, DqlError> {
        self.execute_with(stmt, params, None)
    }

    /// [`Transaction::execute`] with a microsecond clock for `PROFILE`.
    pub fn execute_with(
        &mut self,
        stmt: &Statement,
        params: &Params,
        clock: Option<ClockUs<'_>>,
    ) -> Result<Output, DqlError> {
        if let Some(first) = &self.aborted {
            return Err(aborted(first));
        }
        self.statements += 1;
        exec::run_write_with(&mut self.tx, stmt, params, clock).inspect_err(|e| {
            self.aborted = Some(format!("statement {} failed: {e}", self.statements));
        })
    }

    /// Commits every statement's writes atomically.
    pub fn commit(self) -> Result<Committed, DqlError> {
        if let Some(first) = &self.aborted {
            return Err(aborted(first));
        }
        Ok(self.tx.commit()?)
    }

    /// Drops every write of the transaction.
    pub fn rollback(self) {}

    /// Whether an error aborted the transaction (only rollback is left).
    pub fn is_aborted(&self) -> bool {
        self.aborted.is_some()
    }
}

fn aborted(first: &str) -> DqlError {
    DqlError::Invalid {
        reason: format!("the transaction was aborted ({first}); roll it back"),
    }
}

/// Parameters from a JSON object (`{"name": value, ...}`).
pub fn params_from_json(v: &Value) -> Result<Params, DqlError> {
    match v {
        Value::Object(o) => Ok(Params::from(o.clone())),
        Value::Null => Ok(Params::new()),
        other => Err(DqlError::Invalid {
            reason: format!("parameters must be a JSON object, got {other}"),
        }),
    }
}
