//! The key-value boundary between the document store and its durable medium.
//!
//! The store (`crate::store`) is pure logic over ordered byte tables; a backend
//! only has to provide atomic write transactions and snapshot reads over a fixed
//! set of tables. That keeps the engine free of I/O: LMDB lives in
//! `rhizome-lmdb`, the in-memory backend (`crate::mem`) serves simulations of
//! thousands of peers, and both run the same conformance suite
//! (`crate::testing::kv_conformance`).

use std::fmt;

/// The fixed set of tables every backend provides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Store-wide records: format version, peer id, clock high-water mark,
    /// collection catalogue, global version vector.
    Meta,
    /// Documents keyed by `(collection id, document number)`.
    Docs,
    /// Secondary index `(collection id, encoded _id)` -> document number.
    Ids,
    /// Change log `(origin peer, hlc)` -> `(collection id, document number)`.
    Log,
    /// Secondary indexes `(index id, encoded values, document number)`.
    Index,
}

impl Table {
    /// Every table, in a stable order (backends create them in this order).
    pub const ALL: [Table; 5] = [Table::Meta, Table::Docs, Table::Ids, Table::Log, Table::Index];

    /// Stable on-disk name of the table.
    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Docs => "docs",
            Table::Ids => "ids",
            Table::Log => "log",
            Table::Index => "index",
        }
    }

    /// Position in [`Table::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Failures of a key-value backend.
#[derive(Debug)]
#[non_exhaustive]
pub enum KvError {
    /// The backend's space is exhausted (LMDB's map size); the transaction was not committed.
    Full,
    /// An operating-system I/O failure.
    Io(std::io::Error),
    /// A key or value the backend cannot take (e.g. a key longer than LMDB's 511-byte limit).
    BadKey {
        /// The table the key was meant for.
        table: Table,
        /// Its length in bytes.
        len_bytes: usize,
    },
    /// Any other backend failure, kept as the backend's own error.
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::Full => write!(f, "storage is full (increase the map size)"),
            KvError::Io(e) => write!(f, "storage I/O error: {e}"),
            KvError::BadKey { table, len_bytes } => {
                write!(f, "key of {len_bytes} bytes not accepted by table {}", table.name())
            }
            KvError::Backend(e) => write!(f, "storage backend error: {e}"),
        }
    }
}

impl std::error::Error for KvError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KvError::Io(e) => Some(e),
            KvError::Backend(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

/// A backend: ordered byte tables with snapshot reads and one writer at a time.
pub trait Kv: Send + Sync + 'static {
    /// A consistent read-only snapshot.
    type Read<'a>: KvRead
    where
        Self: 'a;
    /// The single write transaction; dropping it without `commit` aborts it.
    type Write<'a>: KvWrite
    where
        Self: 'a;

    /// Opens a snapshot of the last committed state.
    fn read(&self) -> Result<Self::Read<'_>, KvError>;
    /// Opens the write transaction, waiting for any other writer to finish.
    fn write(&self) -> Result<Self::Write<'_>, KvError>;
}

/// Reads inside a transaction.
pub trait KvRead {
    /// The value stored under `key`, if any.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<&[u8]>, KvError>;

    /// Visits entries with `from <= key < to` (no upper bound when `to` is
    /// `None`) in key order, or in reverse key order when `reverse` is set,
    /// until `visit` returns `false`.
    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), KvError>;
}

/// Writes inside the write transaction; reads see the transaction's own writes.
pub trait KvWrite: KvRead {
    /// Inserts or replaces `key`.
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), KvError>;
    /// Removes `key`; returns whether it existed.
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool, KvError>;
    /// Makes every write of the transaction durable and visible, atomically.
    /// When this returns `Ok`, a crash of the process loses none of it.
    fn commit(self) -> Result<(), KvError>;
}

/// A shared backend is a backend: an embedding layer keeps an `Arc` of an
/// in-memory store so that its contents outlive the actor that had it open
/// (a restarted store actor reopens the same data).
impl<K: Kv> Kv for std::sync::Arc<K> {
    type Read<'a>
        = K::Read<'a>
    where
        Self: 'a;
    type Write<'a>
        = K::Write<'a>
    where
        Self: 'a;

    fn read(&self) -> Result<Self::Read<'_>, KvError> {
        K::read(self)
    }

    fn write(&self) -> Result<Self::Write<'_>, KvError> {
        K::write(self)
    }
}
