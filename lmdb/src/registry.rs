//! Process-wide registry of open store directories.
//!
//! LMDB must not open the same environment twice in one process: the second
//! `close()` of the data file would release the POSIX advisory locks the
//! first one still relies on, and the two memory maps would not coordinate.
//! That one-env-per-path rule is what makes `EnvOpenOptions::open` sound, so
//! it is enforced here rather than trusted to callers.

use crate::error::AlreadyOpen;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

static OPEN: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

fn open_paths() -> MutexGuard<'static, BTreeSet<PathBuf>> {
    // The set is changed by single insert/remove calls, so a panic elsewhere
    // while holding the lock cannot have left it half-updated.
    OPEN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Exclusive claim on a canonical directory path; released on drop.
#[derive(Debug)]
pub(crate) struct Registration {
    path: PathBuf,
}

impl Registration {
    /// Claims `path` (already canonicalized) for this process.
    pub(crate) fn claim(path: PathBuf) -> Result<Registration, AlreadyOpen> {
        let mut open = open_paths();
        if open.contains(&path) {
            return Err(AlreadyOpen { path });
        }
        open.insert(path.clone());
        Ok(Registration { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        open_paths().remove(&self.path);
    }
}
