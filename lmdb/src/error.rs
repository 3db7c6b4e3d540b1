//! Translation of LMDB failures into the engine's [`KvError`].
//!
//! The store reacts differently to "the map is full" (grow it or refuse
//! writes), "the disk failed" and "this key can never be stored", so those
//! cases get their own variants; everything else stays heed's own error,
//! boxed, so nothing is lost for diagnostics. Keeping the translation in one
//! function keeps the backend's contract in one place.

use heed::MdbError;
use rhizome_engine::kv::{KvError, Table};
use std::fmt;
use std::path::PathBuf;

/// Returned (inside [`KvError::Backend`]) when a directory is opened while an
/// [`LmdbKv`](crate::LmdbKv) for it is still alive in this process.
///
/// LMDB forbids two environments on the same files in one process: closing
/// either would drop the other's advisory locks. Callers can recognise this
/// case with `downcast_ref::<AlreadyOpen>()` on the boxed error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlreadyOpen {
    /// The canonical path of the directory that is already open.
    pub path: PathBuf,
}

impl fmt::Display for AlreadyOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LMDB store {} is already open in this process", self.path.display())
    }
}

impl std::error::Error for AlreadyOpen {}

/// A put whose size LMDB may reject: the table and the length of the
/// offending input, reported back in [`KvError::BadKey`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct PutSize {
    pub(crate) table: Table,
    pub(crate) len_bytes: usize,
}

/// Maps a heed error into the engine's vocabulary.
///
/// `put` is set only for puts: LMDB's `MDB_BAD_VALSIZE` carries no hint of
/// what was too big, so the caller says which input it was. Keys are checked
/// before they reach LMDB, so on a put this is the value.
pub(crate) fn map_err(error: heed::Error, put: Option<PutSize>) -> KvError {
    match (error, put) {
        (heed::Error::Mdb(MdbError::MapFull), _) => KvError::Full,
        (heed::Error::Mdb(MdbError::BadValSize), Some(PutSize { table, len_bytes })) => {
            KvError::BadKey { table, len_bytes }
        }
        (heed::Error::Io(e), _) => KvError::Io(e),
        (other, _) => KvError::Backend(Box::new(other)),
    }
}
