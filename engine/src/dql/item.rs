//! One row of a query result, decoded only when it is read.
//!
//! A `SELECT *` row is a stored document, and building it as a [`Value`]
//! costs more than finding it (an allocation per field). Apps often read a
//! few fields of a few rows, or pass JSON on to a UI or across an FFI, so a
//! document row stays its stored record until asked: [`Item::value`] builds
//! (once) the `Value`, [`Item::to_json`] writes JSON straight from the
//! bytes. Computed rows (projections, aggregates) are values from the start.

use crate::codec;
use crate::store::{RawDoc, StoreError};
use crate::value::Value;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// A result row.
#[derive(Clone)]
pub struct Item {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    Value(Arc<Value>),
    Stored(Arc<Stored>),
}

/// A stored record, checked when it was read (envelope and checksum), so
/// reading it again skips the checksum.
struct Stored {
    collection: Arc<str>,
    record: Box<[u8]>,
    value: OnceLock<Value>,
}

impl Item {
    /// A row that is a document as stored (`record` as read: envelope
    /// and checksum verified).
    pub fn stored(collection: Arc<str>, record: Vec<u8>) -> Item {
        Item {
            repr: Repr::Stored(Arc::new(Stored {
                collection,
                record: record.into_boxed_slice(),
                value: OnceLock::new(),
            })),
        }
    }

    /// The row as a value, built on first use. An error means the record
    /// is damaged in a way its checksum did not catch.
    pub fn value(&self) -> Result<&Value, StoreError> {
        match &self.repr {
            Repr::Value(v) => Ok(v),
            Repr::Stored(s) => {
                if let Some(v) = s.value.get() {
                    return Ok(v);
                }
                let v = RawDoc::reopen(&s.collection, &s.record)?
                    .render()?
                    .unwrap_or(Value::Null);
                Ok(s.value.get_or_init(|| v))
            }
        }
    }

    /// The row as an owned value.
    pub fn into_value(self) -> Result<Value, StoreError> {
        match self.repr {
            Repr::Value(v) => Ok(Arc::try_unwrap(v).unwrap_or_else(|shared| (*shared).clone())),
            Repr::Stored(s) => match Arc::try_unwrap(s) {
                Ok(s) => match s.value.into_inner() {
                    Some(v) => Ok(v),
                    None => Ok(RawDoc::reopen(&s.collection, &s.record)?
                        .render()?
                        .unwrap_or(Value::Null)),
                },
                Err(shared) => Item {
                    repr: Repr::Stored(shared),
                }
                .value()
                .cloned(),
            },
        }
    }

    /// The row as compact JSON (what printing its value gives), written
    /// straight from the stored bytes when the document is simple.
    pub fn to_json(&self) -> Result<String, StoreError> {
        let mut out = String::new();
        if let Repr::Stored(s) = &self.repr {
            if s.value.get().is_none() {
                let raw = RawDoc::reopen(&s.collection, &s.record)?;
                let written = codec::visible_json_encoded_id(raw.body(), raw.id_bytes(), &mut out);
                if written.map_err(|e| raw.damaged(e))? {
                    return Ok(out);
                }
            }
        }
        self.value()?.write_json(&mut out);
        Ok(out)
    }
}

impl From<Value> for Item {
    fn from(v: Value) -> Item {
        Item {
            repr: Repr::Value(Arc::new(v)),
        }
    }
}

/// Items are equal when their values are (a damaged row equals nothing).
impl PartialEq for Item {
    fn eq(&self, other: &Item) -> bool {
        matches!((self.value(), other.value()), (Ok(a), Ok(b)) if a == b)
    }
}

impl PartialEq<Value> for Item {
    fn eq(&self, other: &Value) -> bool {
        self.value().is_ok_and(|v| v == other)
    }
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value() {
            Ok(v) => write!(f, "{v:?}"),
            Err(e) => write!(f, "<{e}>"),
        }
    }
}

/// Values of a list of items.
pub fn values(items: Vec<Item>) -> Result<Vec<Value>, StoreError> {
    items.into_iter().map(Item::into_value).collect()
}
