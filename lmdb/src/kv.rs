//! The engine's key-value traits implemented over one LMDB environment.
//!
//! Each engine table is a named LMDB database, created once when the store is
//! opened, so transactions never touch LMDB's database catalogue. Reads and
//! writes are thin: they go straight to heed with raw byte codecs and hand out
//! slices that borrow from the transaction.

use crate::error::{map_err, PutSize};
use crate::registry::Registration;
use crate::LmdbConfig;
use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, RoTxn, RwTxn, WithoutTls};
use rhizome_engine::kv::{Kv, KvError, KvRead, KvWrite, Table};
use std::convert::Infallible;
use std::fmt;
use std::ops::Bound;
use std::path::Path;

/// One LMDB database per engine table.
type Db = Database<'static, Bytes, Bytes>;

/// Number of engine tables, hence of named LMDB databases.
const TABLES: usize = Table::ALL.len();

/// LMDB's compile-time key limit (`MDB_MAXKEYSIZE`). Checked here rather than
/// asked of the environment so that a build of heed with `longer-keys` cannot
/// write stores that default builds are unable to read.
const MAX_KEY_BYTES: usize = 511;

/// Map sizes are rounded up to this, a multiple of every common OS page size
/// (4, 16 and 64 KiB), because heed refuses a map size that is not page-aligned.
const MAP_ALIGN_BYTES: usize = 64 << 10;

/// Whether LMDB can store `key` at all. It rejects empty keys (even as a seek
/// target) and keys over its limit, so such keys can never be present.
fn storable(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_BYTES
}

/// A Rhizome store in one LMDB environment (a directory holding `data.mdb`
/// and `lock.mdb`).
///
/// Commits are fully synchronous: once [`KvWrite::commit`] returns `Ok`, the
/// data survives a process kill or a power loss. At most one `LmdbKv` per
/// directory may exist in a process; dropping it closes the environment.
pub struct LmdbKv {
    dbs: [Db; TABLES],
    // Field order matters: the environment must be closed before the
    // directory is released for another `open` in this process.
    env: Env<WithoutTls>,
    _registration: Registration,
}

impl LmdbKv {
    /// Opens the store in `dir`, creating the directory and the store if they
    /// do not exist.
    ///
    /// Opening a directory that another live `LmdbKv` in this process already
    /// holds fails with [`KvError::Backend`] wrapping an [`AlreadyOpen`](crate::AlreadyOpen).
    ///
    /// The directory must be on a local file system (LMDB's locks and memory
    /// map do not work over network file systems) and its files must not be
    /// modified other than through LMDB.
    pub fn open(dir: &Path, config: &LmdbConfig) -> Result<LmdbKv, KvError> {
        std::fs::create_dir_all(dir).map_err(KvError::Io)?;
        // Canonical, so that two spellings of one directory (relative paths,
        // symlinks) are recognised as the same environment.
        let path = dir.canonicalize().map_err(KvError::Io)?;
        let registration = Registration::claim(path).map_err(|e| KvError::Backend(Box::new(e)))?;

        let map_size = config
            .map_size_bytes
            .checked_next_multiple_of(MAP_ALIGN_BYTES)
            .unwrap_or(usize::MAX / MAP_ALIGN_BYTES * MAP_ALIGN_BYTES);
        // Without TLS, reader slots belong to transactions instead of threads:
        // LMDB's per-environment thread-local key would otherwise cap a process
        // at about a thousand open stores, and a thread could hold only one
        // snapshot per store. No other flags: LMDB's defaults fsync data and
        // meta pages on every commit, which is the durability the engine needs.
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options
            .map_size(map_size)
            .max_readers(config.max_readers)
            .max_dbs(TABLES as u32);
        // SAFETY: LMDB's memory map is sound as long as its files are only
        // changed through LMDB and each environment is opened once per
        // process. The registration held above guarantees the latter for
        // every store this crate opens; no unsafe flag (NO_LOCK, NO_SYNC, ...)
        // is set, so LMDB's lock file coordinates other processes; and `open`
        // documents that the directory belongs to the store alone.
        let env = unsafe { options.open(registration.path()) }.map_err(|e| map_err(e, None))?;

        debug_assert!(Table::ALL.iter().enumerate().all(|(i, t)| t.index() == i));
        let wtxn = env.write_txn().map_err(|e| map_err(e, None))?;
        let created = env
            .create_databases_and_commit(wtxn, |opener, wtxn| {
                // Destructured so that a new table is a compile error here
                // rather than a database silently left out.
                let [a, b, c, d, e] =
                    Table::ALL.map(|table| opener.create_database::<Bytes, Bytes>(wtxn, Some(table.name())));
                Ok::<_, heed::Error>(CommitOrAbort::<_, Infallible>::Commit([a?, b?, c?, d?, e?]))
            })
            .map_err(|e| map_err(e, None))?;
        let dbs = match created {
            CommitOrAbort::Commit(dbs) => dbs,
            CommitOrAbort::Abort(never) => match never {},
        };

        Ok(LmdbKv {
            dbs,
            env,
            _registration: registration,
        })
    }
}

impl fmt::Debug for LmdbKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LmdbKv")
            .field("path", &self.env.path())
            .finish_non_exhaustive()
    }
}

/// A snapshot of the last commit as of [`Kv::read`]; holds one LMDB reader
/// slot until dropped.
pub struct LmdbRead<'a> {
    txn: RoTxn<'a, WithoutTls>,
    dbs: &'a [Db; TABLES],
}

/// The store's single write transaction; dropping it without committing
/// aborts it.
pub struct LmdbWrite<'a> {
    txn: RwTxn<'a>,
    dbs: &'a [Db; TABLES],
}

impl Kv for LmdbKv {
    type Read<'a> = LmdbRead<'a>;
    type Write<'a> = LmdbWrite<'a>;

    fn read(&self) -> Result<LmdbRead<'_>, KvError> {
        let txn = self.env.read_txn().map_err(|e| map_err(e, None))?;
        Ok(LmdbRead { txn, dbs: &self.dbs })
    }

    fn write(&self) -> Result<LmdbWrite<'_>, KvError> {
        let txn = self.env.write_txn().map_err(|e| map_err(e, None))?;
        Ok(LmdbWrite { txn, dbs: &self.dbs })
    }
}

fn get<'t>(db: Db, txn: &'t RoTxn<'_>, key: &[u8]) -> Result<Option<&'t [u8]>, KvError> {
    if !storable(key) {
        return Ok(None);
    }
    db.get(txn, key).map_err(|e| map_err(e, None))
}

fn scan(
    db: Db,
    txn: &RoTxn<'_>,
    from: &[u8],
    to: Option<&[u8]>,
    reverse: bool,
    visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) -> Result<(), KvError> {
    if to.is_some_and(|to| to <= from) {
        return Ok(());
    }
    // Every key is >= the empty key, and LMDB refuses to seek to an empty one.
    let start = if from.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Included(from)
    };
    let bounds = (start, to.map_or(Bound::Unbounded, Bound::Excluded));
    if reverse {
        visit_entries(db.rev_range(txn, &bounds).map_err(|e| map_err(e, None))?, visit)
    } else {
        visit_entries(db.range(txn, &bounds).map_err(|e| map_err(e, None))?, visit)
    }
}

fn visit_entries<'t>(
    entries: impl Iterator<Item = heed::Result<(&'t [u8], &'t [u8])>>,
    visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) -> Result<(), KvError> {
    for entry in entries {
        let (key, value) = entry.map_err(|e| map_err(e, None))?;
        if !visit(key, value) {
            break;
        }
    }
    Ok(())
}

impl KvRead for LmdbRead<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<&[u8]>, KvError> {
        get(self.dbs[table.index()], &self.txn, key)
    }

    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), KvError> {
        scan(self.dbs[table.index()], &self.txn, from, to, reverse, visit)
    }
}

impl KvRead for LmdbWrite<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<&[u8]>, KvError> {
        get(self.dbs[table.index()], &self.txn, key)
    }

    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), KvError> {
        scan(self.dbs[table.index()], &self.txn, from, to, reverse, visit)
    }
}

impl KvWrite for LmdbWrite<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        // Rejected here so that the error names the key; LMDB would also
        // poison the whole transaction on an oversized key.
        if !storable(key) {
            return Err(KvError::BadKey {
                table,
                len_bytes: key.len(),
            });
        }
        let put = PutSize {
            table,
            len_bytes: value.len(),
        };
        let db = self.dbs[table.index()];
        // Document numbers are allocated in order, so new records usually
        // land past the table's end: appended, a full leaf stays full where
        // LMDB's split would leave it ~89% full. `MDB_APPEND` refuses a key
        // not past the end before touching anything, and the put falls back.
        if table == Table::Docs {
            match db.put_with_flags(&mut self.txn, heed::PutFlags::APPEND, key, value) {
                Err(heed::Error::Mdb(heed::MdbError::KeyExist)) => {}
                r => return r.map_err(|e| map_err(e, Some(put))),
            }
        }
        db.put(&mut self.txn, key, value).map_err(|e| map_err(e, Some(put)))
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool, KvError> {
        if !storable(key) {
            return Ok(false);
        }
        self.dbs[table.index()]
            .delete(&mut self.txn, key)
            .map_err(|e| map_err(e, None))
    }

    fn commit(self) -> Result<(), KvError> {
        self.txn.commit().map_err(|e| map_err(e, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heed::EnvFlags;

    /// The TLS and durability choices are invisible to behavioural tests in a
    /// small process, so check the flags LMDB actually runs with.
    #[test]
    #[allow(deprecated)] // `NO_TLS` is deprecated for setting, not for reading back.
    fn env_runs_without_tls_and_with_full_sync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = LmdbKv::open(
            dir.path(),
            &LmdbConfig {
                map_size_bytes: 1 << 20,
                max_readers: 8,
            },
        )
        .expect("open");
        let flags = kv.env.get_flags().expect("flags");
        assert_ne!(flags & EnvFlags::NO_TLS.bits(), 0, "reader slots must not use TLS");
        let unsafe_flags = EnvFlags::NO_SYNC | EnvFlags::NO_META_SYNC | EnvFlags::MAP_ASYNC | EnvFlags::NO_LOCK;
        assert_eq!(flags & unsafe_flags.bits(), 0, "commits must be durable");
    }

    #[test]
    fn map_size_is_page_aligned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = LmdbKv::open(
            dir.path(),
            &LmdbConfig {
                map_size_bytes: 1_000_000,
                max_readers: 8,
            },
        )
        .expect("open");
        assert_eq!(kv.env.info().map_size, 1 << 20);
    }
}
