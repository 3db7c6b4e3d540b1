//! LMDB backend of the Rhizome document store, built on `heed`.
//!
//! The engine is pure logic over the [`Kv`](rhizome_engine::kv::Kv) traits;
//! this crate gives it durable storage on a device: one LMDB environment per
//! store directory, one named LMDB database per engine
//! [`Table`](rhizome_engine::kv::Table). LMDB fits the engine's contract
//! directly: a single serialized writer, MVCC snapshot readers that never
//! block it, ordered byte keys, and commits that are durable once they return.
//!
//! Values handed out by reads borrow straight from the memory map, so reads
//! copy nothing.

#![warn(missing_docs)]

mod error;
mod kv;
mod registry;

pub use error::AlreadyOpen;
pub use kv::{LmdbKv, LmdbRead, LmdbWrite};

/// Sizing of an LMDB environment, fixed when the store is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LmdbConfig {
    /// Upper bound on the size of the data file. LMDB reserves this much
    /// address space up front (not disk: the file grows as data is written),
    /// and writes beyond it fail with
    /// [`KvError::Full`](rhizome_engine::kv::KvError::Full). It is rounded up
    /// to a multiple of 64 KiB, because LMDB requires a multiple of the OS page
    /// size. If the existing data file is larger, LMDB uses the file's size.
    pub map_size_bytes: usize,
    /// Maximum number of read transactions open at once across every process
    /// using the directory. Each live [`LmdbRead`] holds one slot.
    pub max_readers: u32,
}

impl Default for LmdbConfig {
    /// 16 GiB of map (1 GiB on 32-bit targets, whose address space cannot
    /// hold more) and LMDB's own default of 126 readers.
    fn default() -> Self {
        const DEFAULT_MAP_BYTES: u64 = 16 << 30;
        LmdbConfig {
            map_size_bytes: usize::try_from(DEFAULT_MAP_BYTES).unwrap_or(1 << 30),
            max_readers: 126,
        }
    }
}
