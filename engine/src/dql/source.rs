//! Where statements read documents, and rows that decode only what a query
//! reads.
//!
//! [`Docs`] is a snapshot or the write transaction (so statements in one
//! transaction see each other's writes). Scans hand out stored records
//! ([`RawDoc`]), and a [`LazyRow`] answers the fields a filter or sort key
//! asks for straight from the bytes, rendering the document only when the
//! bytes cannot say or the row is returned: most scanned documents are
//! never built.

use super::ast::{Path, Segment};
use super::eval::Row;
use super::plan::IndexAccess;
use crate::codec::Lookup;
use crate::kv::Kv;
use crate::store::{Fields, IndexDef, RawDoc, ReadTx, StoreError, WriteTx};
use crate::value::Value;
use std::cell::{OnceCell, RefCell};

/// Where a statement reads documents: a snapshot or the write transaction.
pub trait Docs {
    /// The live document with this id.
    fn get(&self, collection: &str, id: &Value) -> Result<Option<Value>, StoreError>;
    /// Lends the stored record of this id (visible or not) to `visit`.
    fn get_raw(&self, collection: &str, id: &Value, visit: &mut dyn FnMut(RawDoc<'_>)) -> Result<(), StoreError>;
    /// Every stored record of a collection (visible or not), in storage
    /// order; stops when `visit` returns false. Damage is an error.
    fn scan(&mut self, collection: &str, visit: &mut dyn FnMut(RawDoc<'_>) -> bool) -> Result<(), StoreError>;
    /// Lends the stored record of this id (visible or not) to `visit`,
    /// with its document number (its place in `scan` order).
    fn get_numbered(
        &self,
        collection: &str,
        id: &Value,
        visit: &mut dyn FnMut(u64, RawDoc<'_>),
    ) -> Result<(), StoreError>;
    /// [`Docs::scan`] with each record's document number (ascending).
    fn scan_numbered(
        &mut self,
        collection: &str,
        visit: &mut dyn FnMut(u64, RawDoc<'_>) -> bool,
    ) -> Result<(), StoreError>;
    /// System settings that were set.
    fn settings(&self) -> Result<Vec<(String, Value)>, StoreError>;
    /// Every index.
    fn indexes(&self) -> Result<Vec<IndexDef>, StoreError>;
    /// The stored records of an index range, in its order, of the entries
    /// whose key `keep_key` accepts (refused ones are not read).
    fn index_scan(
        &mut self,
        a: &IndexAccess,
        keep_key: &mut dyn FnMut(&[u8]) -> bool,
        visit: &mut dyn FnMut(RawDoc<'_>) -> bool,
    ) -> Result<(), StoreError>;
}

/// Runs a store scan whose items may be errors, stopping at the first.
fn scan_with<F>(scan: F, visit: &mut dyn FnMut(RawDoc<'_>) -> bool) -> Result<(), StoreError>
where
    F: FnOnce(&mut dyn FnMut(Result<RawDoc<'_>, StoreError>) -> bool) -> Result<(), StoreError>,
{
    let mut failure = None;
    scan(&mut |item| match item {
        Ok(doc) => visit(doc),
        Err(e) => {
            failure = Some(e);
            false
        }
    })?;
    failure.map_or(Ok(()), Err)
}

/// [`scan_with`] for scans that number their records.
fn scan_numbered_with<F>(scan: F, visit: &mut dyn FnMut(u64, RawDoc<'_>) -> bool) -> Result<(), StoreError>
where
    F: FnOnce(&mut dyn FnMut(Result<(u64, RawDoc<'_>), StoreError>) -> bool) -> Result<(), StoreError>,
{
    let mut failure = None;
    scan(&mut |item| match item {
        Ok((num, doc)) => visit(num, doc),
        Err(e) => {
            failure = Some(e);
            false
        }
    })?;
    failure.map_or(Ok(()), Err)
}

impl<K: Kv> Docs for ReadTx<'_, K> {
    fn get(&self, collection: &str, id: &Value) -> Result<Option<Value>, StoreError> {
        ReadTx::get(self, collection, id)
    }
    fn get_raw(&self, collection: &str, id: &Value, visit: &mut dyn FnMut(RawDoc<'_>)) -> Result<(), StoreError> {
        ReadTx::get_raw(self, collection, id).map(|raw| raw.map_or((), visit))
    }
    fn scan(&mut self, collection: &str, visit: &mut dyn FnMut(RawDoc<'_>) -> bool) -> Result<(), StoreError> {
        scan_with(|v| ReadTx::scan_raw(self, collection, v), visit)
    }
    fn get_numbered(
        &self,
        collection: &str,
        id: &Value,
        visit: &mut dyn FnMut(u64, RawDoc<'_>),
    ) -> Result<(), StoreError> {
        ReadTx::get_numbered(self, collection, id).map(|raw| raw.map_or((), |(num, raw)| visit(num, raw)))
    }
    fn scan_numbered(
        &mut self,
        collection: &str,
        visit: &mut dyn FnMut(u64, RawDoc<'_>) -> bool,
    ) -> Result<(), StoreError> {
        scan_numbered_with(|v| ReadTx::scan_numbered(self, collection, v), visit)
    }
    fn settings(&self) -> Result<Vec<(String, Value)>, StoreError> {
        ReadTx::settings(self)
    }
    fn indexes(&self) -> Result<Vec<IndexDef>, StoreError> {
        ReadTx::indexes(self)
    }
    fn index_scan(
        &mut self,
        a: &IndexAccess,
        keep_key: &mut dyn FnMut(&[u8]) -> bool,
        visit: &mut dyn FnMut(RawDoc<'_>) -> bool,
    ) -> Result<(), StoreError> {
        scan_with(
            |v| ReadTx::index_scan_raw(self, &a.def, &a.from, a.to.as_deref(), a.reverse, keep_key, v),
            visit,
        )
    }
}

impl<K: Kv> Docs for WriteTx<'_, K> {
    fn get(&self, collection: &str, id: &Value) -> Result<Option<Value>, StoreError> {
        WriteTx::get(self, collection, id)
    }
    fn get_raw(&self, collection: &str, id: &Value, visit: &mut dyn FnMut(RawDoc<'_>)) -> Result<(), StoreError> {
        WriteTx::with_raw(self, collection, id, visit).map(drop)
    }
    fn scan(&mut self, collection: &str, visit: &mut dyn FnMut(RawDoc<'_>) -> bool) -> Result<(), StoreError> {
        scan_with(|v| WriteTx::scan_raw(self, collection, v), visit)
    }
    fn get_numbered(
        &self,
        collection: &str,
        id: &Value,
        visit: &mut dyn FnMut(u64, RawDoc<'_>),
    ) -> Result<(), StoreError> {
        WriteTx::with_numbered(self, collection, id, visit).map(drop)
    }
    fn scan_numbered(
        &mut self,
        collection: &str,
        visit: &mut dyn FnMut(u64, RawDoc<'_>) -> bool,
    ) -> Result<(), StoreError> {
        scan_numbered_with(|v| WriteTx::scan_numbered(self, collection, v), visit)
    }
    fn settings(&self) -> Result<Vec<(String, Value)>, StoreError> {
        WriteTx::settings(self)
    }
    fn indexes(&self) -> Result<Vec<IndexDef>, StoreError> {
        WriteTx::indexes(self)
    }
    fn index_scan(
        &mut self,
        a: &IndexAccess,
        keep_key: &mut dyn FnMut(&[u8]) -> bool,
        visit: &mut dyn FnMut(RawDoc<'_>) -> bool,
    ) -> Result<(), StoreError> {
        scan_with(
            |v| WriteTx::index_scan_raw(self, &a.def, &a.from, a.to.as_deref(), a.reverse, keep_key, v),
            visit,
        )
    }
}

/// Longest key path read from the bytes; deeper paths render the document.
const MAX_LAZY_KEYS: usize = 8;

/// A stored document as a row: fields come from the bytes when they can,
/// else from the rendered document (rendered at most once). `Row::field`
/// cannot fail, so a storage error is kept and must be collected with
/// [`LazyRow::check`] after each evaluation.
pub struct LazyRow<'a> {
    fields: Fields<'a>,
    rendered: OnceCell<Option<Value>>,
    error: RefCell<Option<StoreError>>,
}

impl<'a> LazyRow<'a> {
    /// A row over a stored record.
    pub fn new(raw: RawDoc<'a>) -> Result<LazyRow<'a>, StoreError> {
        Ok(LazyRow {
            fields: raw.fields()?,
            rendered: OnceCell::new(),
            error: RefCell::new(None),
        })
    }

    /// The stored record.
    pub fn raw(&self) -> RawDoc<'a> {
        self.fields.raw()
    }

    /// Whether the document is visible (invisible ones are no rows at all).
    pub fn is_visible(&self) -> Result<bool, StoreError> {
        self.fields.is_visible()
    }

    /// A storage error met while reading fields, if any.
    pub fn check(&self) -> Result<(), StoreError> {
        self.error.borrow_mut().take().map_or(Ok(()), Err)
    }

    /// The whole document (`Null` if it is not visible).
    pub fn value(&self) -> Result<Value, StoreError> {
        self.check()?;
        let v = self.rendered().cloned().unwrap_or(Value::Null);
        self.check()?;
        Ok(v)
    }

    /// The whole document, consuming the row.
    pub fn into_value(self) -> Result<Value, StoreError> {
        self.check()?;
        let raw = self.raw();
        if let Some(v) = self.rendered.into_inner() {
            return Ok(v.unwrap_or(Value::Null));
        }
        Ok(raw.render()?.unwrap_or(Value::Null))
    }

    fn rendered(&self) -> Option<&Value> {
        self.rendered
            .get_or_init(|| {
                self.raw().render().unwrap_or_else(|e| {
                    self.fail(e);
                    None
                })
            })
            .as_ref()
    }

    fn fail(&self, e: StoreError) {
        self.error.borrow_mut().get_or_insert(e);
    }

    fn rendered_field(&self, path: &Path) -> Option<Value> {
        super::eval::lookup(self.rendered()?, &path.segments).cloned()
    }
}

impl Row for LazyRow<'_> {
    fn field(&self, path: &Path) -> Option<Value> {
        let n = path
            .segments
            .iter()
            .take_while(|s| matches!(s, Segment::Key(_)))
            .count();
        if n == 0 || n > MAX_LAZY_KEYS || self.rendered.get().is_some() {
            return self.rendered_field(path);
        }
        let mut keys = [""; MAX_LAZY_KEYS];
        for (k, s) in keys.iter_mut().zip(&path.segments) {
            if let Segment::Key(name) = s {
                *k = name;
            }
        }
        match self.fields.field(&keys[..n]) {
            Ok(Lookup::Value(v)) if n == path.segments.len() => Some(v),
            Ok(Lookup::Value(v)) => super::eval::lookup(&v, &path.segments[n..]).cloned(),
            Ok(Lookup::Missing) => None,
            Ok(Lookup::Unknown) => self.rendered_field(path),
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }
}
