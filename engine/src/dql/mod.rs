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
pub mod observe;
pub mod plan;
pub mod source;

use crate::kv::Kv;
use crate::store::{Committed, Store};
use crate::value::Value;
use ast::Statement;
use eval::Params;
use exec::{DqlError, Output};
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

    /// The parsed statement of `text`, from the cache or freshly parsed.
    /// The least recently used entry goes when the cache is full.
    pub fn get(&self, text: &str) -> Result<Arc<Statement>, DqlError> {
        let mut guard = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (clock, map) = &mut *guard;
        *clock += 1;
        if let Some((used, stmt)) = map.get_mut(text) {
            *used = *clock;
            return Ok(stmt.clone());
        }
        let stmt = Arc::new(parse::parse(text)?);
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
    if exec::is_read_only(stmt) {
        let mut r = store.read()?;
        return Ok((exec::run_read(&mut r, stmt, params)?, None));
    }
    let mut w = store.write(now_ms)?;
    let out = exec::run_write(&mut w, stmt, params)?;
    let committed = w.commit()?;
    Ok((out, Some(committed)))
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
