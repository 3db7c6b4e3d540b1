//! The document store: collections of CRDT documents over a key-value backend.
//!
//! One write transaction covers any number of documents in any number of
//! collections and commits atomically; the change log and the global version
//! vector are updated in the same transaction, so sync never sees a document
//! without its log entry or the other way round.
//!
//! Documents are keyed by a sequential number rather than by `_id`: inserts
//! append to the end of the `docs` B-tree instead of touching random pages,
//! and only the small hashed entries of the id index land at random places
//! (see `layout.rs`). The log keeps one entry per (document, origin peer): the
//! newest, so it stays as large as the data, not as long as the history, and
//! "what changed after version V" is a range scan per origin.
//!
//! Within a write transaction, `docs` and `log` writes are buffered and
//! written in key order at commit: interleaved with the id index's random
//! inserts they would scatter LMDB's page allocation and cost a third more I/O.

mod index;
mod layout;
mod local;
mod raw;

pub use index::{encode_sort_key, entry_columns, prefix_end, sort_key_len, IndexDef};
pub use local::MAX_LOCAL_NAME_BYTES;
pub use raw::{Fields, RawDoc};

use crate::codec::{self, Change, CodecError};
use crate::doc::{Attachment, Doc, Inferred, Num, Op, OpError, Path, Schema, Whole};
use crate::hlc::{Clock, ClockError, Hlc, PeerId, Stamp, DEFAULT_MAX_DRIFT_MS};
use crate::kv::{Kv, KvError, KvRead, KvWrite, Table};
use crate::sync::scope::{Interest, Selection, SyncScopes};
use crate::sync::wire::Role;
use crate::value::{Value, ValueError, MAX_DEPTH};
use crate::vv::{packed, VersionVector};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// Store format written by this build; a store of another format is refused.
pub const STORE_FORMAT: u32 = 4;
/// Default limit on a stored document's size.
pub const DEFAULT_MAX_DOC_BYTES: usize = 5 * 1024 * 1024;
/// Longest encoded `_id` (LMDB keys are at most 511 bytes).
pub const MAX_ID_BYTES: usize = 480;
/// Longest collection name, in bytes.
pub const MAX_COLLECTION_BYTES: usize = 128;

/// Settings of a store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Largest stored document (values and CRDT metadata), in bytes.
    pub max_doc_bytes: usize,
    /// How far ahead of local time a remote timestamp may be.
    pub max_drift_ms: u64,
    /// How long a deleted document's tombstone is kept (from its deletion's
    /// HLC) before [`WriteTx::reap_tombstones`] removes it.
    pub tombstone_ttl_ms: u64,
}

/// Default tombstone lifetime: 7 days.
pub const DEFAULT_TOMBSTONE_TTL_MS: u64 = 7 * 24 * 60 * 60 * 1000;

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_doc_bytes: DEFAULT_MAX_DOC_BYTES,
            max_drift_ms: DEFAULT_MAX_DRIFT_MS,
            tombstone_ttl_ms: DEFAULT_TOMBSTONE_TTL_MS,
        }
    }
}

/// Errors of the document store.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed; the transaction did not commit.
    Kv(KvError),
    /// A timestamp was refused (too far in the future) or the clock ran out.
    Clock(ClockError),
    /// The store on disk has a format this build does not read.
    UnsupportedFormat {
        /// The format found.
        found: u32,
    },
    /// A document is not a JSON object, or holds what JSON cannot.
    InvalidDocument {
        /// Collection.
        collection: String,
        /// Why.
        reason: ValueError,
    },
    /// An `_id` of a type ids cannot have, or too long.
    InvalidId {
        /// Collection.
        collection: String,
        /// Why.
        reason: &'static str,
    },
    /// A collection name that is empty, too long or has control characters.
    InvalidCollection {
        /// The name.
        name: String,
    },
    /// A field path that cannot be written (empty, `_id`, too deep).
    InvalidPath {
        /// The path, dotted.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// An insert found a live document with the same `_id`.
    AlreadyExists {
        /// Collection.
        collection: String,
        /// The id, as JSON.
        id: String,
    },
    /// The document would exceed the size limit; nothing was written.
    DocumentTooLarge {
        /// Collection.
        collection: String,
        /// The id, as JSON.
        id: String,
        /// Its stored size.
        size_bytes: usize,
        /// The limit.
        limit_bytes: usize,
    },
    /// A stored record could not be read; the rest of the store is unaffected.
    Corrupt {
        /// Collection.
        collection: String,
        /// The id, as JSON, when it could still be read.
        id: Option<String>,
        /// What was wrong.
        reason: CodecError,
    },
    /// A local record's name is empty or longer than
    /// [`MAX_LOCAL_NAME_BYTES`].
    InvalidLocalName {
        /// Its length.
        length_bytes: usize,
    },
    /// An index that cannot be created or dropped.
    InvalidIndex {
        /// Its name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A change from another peer carries an invalid op; nothing was applied.
    InvalidChange {
        /// Collection.
        collection: String,
        /// Why.
        reason: OpError,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Kv(e) => write!(f, "{e}"),
            StoreError::Clock(e) => write!(f, "{e}"),
            StoreError::UnsupportedFormat { found } => {
                write!(
                    f,
                    "store format {found} is not supported (this build reads {STORE_FORMAT})"
                )
            }
            StoreError::InvalidDocument { collection, reason } => {
                write!(f, "invalid document for {collection}: {reason}")
            }
            StoreError::InvalidId { collection, reason } => write!(f, "invalid _id in {collection}: {reason}"),
            StoreError::InvalidCollection { name } => write!(
                f,
                "invalid collection name {name:?}: 1 to {MAX_COLLECTION_BYTES} bytes without control characters"
            ),
            StoreError::InvalidPath { path, reason } => write!(f, "invalid field path {path:?}: {reason}"),
            StoreError::AlreadyExists { collection, id } => {
                write!(f, "a document with _id {id} already exists in {collection}")
            }
            StoreError::DocumentTooLarge {
                collection,
                id,
                size_bytes,
                limit_bytes,
            } => write!(
                f,
                "document {id} in {collection} would take {size_bytes} bytes, over the {limit_bytes}-byte limit"
            ),
            StoreError::Corrupt { collection, id, reason } => match id {
                Some(id) => write!(f, "document {id} in {collection} is unreadable: {reason}"),
                None => write!(f, "a document in {collection} is unreadable: {reason}"),
            },
            StoreError::InvalidChange { collection, reason } => write!(f, "invalid change for {collection}: {reason}"),
            StoreError::InvalidIndex { name, reason } => write!(f, "index {name}: {reason}"),
            StoreError::InvalidLocalName { length_bytes } => write!(
                f,
                "a local record's name has 1 to {MAX_LOCAL_NAME_BYTES} bytes, not {length_bytes}"
            ),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Kv(e) => Some(e),
            StoreError::Clock(e) => Some(e),
            StoreError::InvalidDocument { reason, .. } => Some(reason),
            StoreError::Corrupt { reason, .. } => Some(reason),
            StoreError::InvalidChange { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

impl StoreError {
    fn clone_too_large(&self) -> StoreError {
        match self {
            StoreError::DocumentTooLarge {
                collection,
                id,
                size_bytes,
                limit_bytes,
            } => StoreError::DocumentTooLarge {
                collection: collection.clone(),
                id: id.clone(),
                size_bytes: *size_bytes,
                limit_bytes: *limit_bytes,
            },
            _ => unreachable!("only size errors are shared by a document's changes"),
        }
    }
}

impl From<KvError> for StoreError {
    fn from(e: KvError) -> Self {
        StoreError::Kv(e)
    }
}

impl From<ClockError> for StoreError {
    fn from(e: ClockError) -> Self {
        StoreError::Clock(e)
    }
}

/// One edit of an existing document.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Edit {
    /// Sets a field; objects become maps whose keys merge independently.
    Set {
        /// Field.
        path: Path,
        /// New value.
        value: Value,
    },
    /// Sets a field to a value held whole (an object is not split into keys).
    SetRegister {
        /// Field.
        path: Path,
        /// New value.
        value: Value,
    },
    /// Removes a field.
    Unset {
        /// Field.
        path: Path,
    },
    /// Adds to a counter (a number field becomes a counter starting at its value).
    Increment {
        /// Field.
        path: Path,
        /// Amount (negative to decrement).
        by: Num,
    },
    /// Restarts a counter at a value.
    Restart {
        /// Field.
        path: Path,
        /// New value.
        to: Num,
    },
    /// Sets an attachment token.
    Attach {
        /// Field.
        path: Path,
        /// The token.
        token: Attachment,
    },
}

/// What to do when an insert meets a live document with the same `_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnConflict {
    /// Refuse with [`StoreError::AlreadyExists`].
    Fail,
    /// Leave the existing document alone.
    Ignore,
    /// Write every given field; fields not given stay.
    Merge,
    /// Replace the document: fields not given are removed.
    Replace,
    /// Write only the given fields whose value differs (descending into
    /// maps), so unchanged fields are not re-replicated.
    MergeDiff,
    /// Default data (`INITIAL DOCUMENTS`): skipped where the id was ever
    /// seen; otherwise written with the lowest possible timestamp, so that
    /// any real edit, on any peer, wins over it.
    Initial,
}

/// What an insert did.
#[derive(Clone, Debug, PartialEq)]
pub struct Inserted {
    /// The document's canonical `_id` (generated if the document had none).
    pub id: Value,
    /// Whether anything was written (false when ignored on conflict).
    pub written: bool,
}

/// A bounded slice of the changes another replica is missing.
///
/// The receiver's version vector is a claim of *complete* knowledge, so it
/// must not advance as changes trickle in (a document's delta carries writes
/// of many origins, and a partial sync would then claim writes it never got).
/// Instead, once the last batch of a sync (`resume == None`) is applied, the
/// receiver joins the first batch's `upto` with [`WriteTx::mark_synced`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChangeBatch {
    /// The changes, one per document.
    pub changes: Vec<Change>,
    /// The asker has not seen deletions this replica has since reaped: it
    /// may hold documents that are gone, so instead of changes it must
    /// rebase (see [`WriteTx::evict_covered`]). `changes` is then empty.
    pub behind_reaped: bool,
    /// A collection the asker wants is kept from it by its sync scope: the
    /// round is then not complete for it (see `Session::set_withheld`).
    pub withheld: bool,
    /// The sender's version vector when the batch was read.
    pub upto: VersionVector,
    /// Where the next batch starts; `None` when this batch completes the sync.
    pub resume: Option<SyncCursor>,
}

/// Most changed documents a commit lists per collection; past it, the
/// collection is reported as [`Changed::Many`] (bounds a commit's memory).
pub const MAX_LISTED_CHANGES: usize = 65_536;

/// What a commit changed in one collection (for live queries).
#[derive(Clone, Debug, PartialEq)]
pub enum Changed {
    /// These documents (by id), in id order.
    Docs(Vec<Value>),
    /// More than [`MAX_LISTED_CHANGES`] documents.
    Many,
}

/// What a commit changed, by collection; local writes and merged remote
/// changes alike.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Committed {
    /// Changed documents per collection.
    pub changed: BTreeMap<String, Changed>,
}

/// What [`WriteTx::apply_batch`] did.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Changes that brought something new.
    pub applied: usize,
    /// Changes refused, by index in the batch, with the reason.
    pub refused: Vec<(usize, StoreError)>,
}

/// Position in the sender's change log (its last log key sent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncCursor(pub [u8; 28]);

/// -2^63 as a float (exact); 2^63 is the first float above `i64::MAX`.
const I64_MIN_F: f64 = i64::MIN as f64;

/// Canonical form of a document id: strings, integers, finite floats
/// (integral ones an `i64` can hold become integers, so `3.0` and `3` are
/// one id, and an integer id never equals a float id) and objects of such
/// values.
pub fn canonical_id(collection: &str, id: &Value) -> Result<Value, StoreError> {
    let bad = |reason| StoreError::InvalidId {
        collection: collection.to_string(),
        reason,
    };
    let canon = match id {
        Value::String(_) | Value::Int(_) => id.clone(),
        // Every integral float an i64 can hold: [-2^63, 2^63).
        Value::Float(f) if f.fract() == 0.0 && (I64_MIN_F..-I64_MIN_F).contains(f) => Value::Int(*f as i64),
        Value::Float(_) => id.clone(),
        Value::Object(o) if o.is_empty() => return Err(bad("an object id needs at least one field")),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), canonical_part(v))).collect()),
        _ => return Err(bad("an _id must be a string, a number or an object")),
    };
    canon.validate().map_err(|_| bad("an _id must be valid JSON"))?;
    Ok(canon)
}

/// Checks that `id` is already in canonical form (as a remote change's id
/// must be): what [`canonical_id`] would return is `id` itself. Strings and
/// integers, canonical as they are, are checked without a copy.
fn check_canonical_id(collection: &str, id: &Value) -> Result<(), StoreError> {
    let canonical = match id {
        Value::String(_) | Value::Int(_) => {
            id.validate().map_err(|_| StoreError::InvalidId {
                collection: collection.to_string(),
                reason: "an _id must be valid JSON",
            })?;
            true
        }
        _ => canonical_id(collection, id)? == *id,
    };
    if !canonical {
        return Err(StoreError::InvalidId {
            collection: collection.to_string(),
            reason: "id is not in canonical form",
        });
    }
    Ok(())
}

/// [`canonical_id`] of an owned id: strings and integers, canonical as
/// they are, are returned without a copy.
pub fn into_canonical_id(collection: &str, id: Value) -> Result<Value, StoreError> {
    match id {
        Value::String(_) | Value::Int(_) => Ok(id),
        other => canonical_id(collection, &other),
    }
}

/// Canonical form of a value inside an object id: integral floats an `i64`
/// can hold become integers, at any depth (in arrays too), so ids that
/// compare equal are one id.
fn canonical_part(v: &Value) -> Value {
    match v {
        Value::Float(f) if f.fract() == 0.0 && (I64_MIN_F..-I64_MIN_F).contains(f) => Value::Int(*f as i64),
        Value::Array(a) => Value::Array(a.iter().map(canonical_part).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), canonical_part(x))).collect()),
        other => other.clone(),
    }
}

fn check_collection(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > MAX_COLLECTION_BYTES || name.chars().any(char::is_control) {
        return Err(StoreError::InvalidCollection { name: name.to_string() });
    }
    Ok(())
}

fn check_path(path: &[String]) -> Result<(), StoreError> {
    let bad = |reason| StoreError::InvalidPath {
        path: path.join("."),
        reason,
    };
    if path.is_empty() {
        return Err(bad("a field path needs at least one key"));
    }
    if path[0] == "_id" {
        return Err(bad("_id cannot be changed"));
    }
    if path.len() > MAX_DEPTH / 2 {
        return Err(bad("too deep"));
    }
    Ok(())
}

use layout::{
    be_u32, be_u64, bucket_nums, bucket_push, coll_key, coll_name_key, doc_key, log_key, IdHasher, LEVEL_MAIN,
    LEVEL_RECENT, MERGE_SLICES, META_FORMAT, META_HLC, META_IDS_CURSOR, META_IDS_RECENT, META_ID_KEY, META_LOG_HEADS,
    META_LOG_HEADS_OWN, META_NEXT_COLL, META_NEXT_DOC, META_PEER, META_REAPED, META_VV, META_VV_OWN, RECENT_MAX,
};

fn meta_u64<R: KvRead + ?Sized>(r: &R, key: &[u8]) -> Result<Option<u64>, StoreError> {
    Ok(r.get(Table::Meta, key)?.and_then(be_u64))
}

/// A pseudo-random generator for document ids, seeded by the caller (the
/// runtime's entropy), so generated ids are reproducible under simulation.
struct IdGen(u64);

impl IdGen {
    fn next_u64(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A UUID (version 4 layout) string.
    fn uuid(&mut self) -> String {
        let (a, b) = (self.next_u64(), self.next_u64());
        let a = (a & !0xF000) | 0x4000; // version 4
        let b = (b & !(0xC << 60)) | (0x8 << 60); // RFC 4122 variant
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xFFFF,
            a & 0xFFFF,
            b >> 48,
            b & 0xFFFF_FFFF_FFFF
        )
    }
}

/// A document store over backend `K`.
pub struct Store<K: Kv> {
    kv: K,
    config: StoreConfig,
    peer: PeerId,
    hasher: IdHasher,
    clock: Mutex<Clock>,
    ids: Mutex<IdGen>,
    colls: CollIds,
    vvs: VvCache,
    docs: DocCache,
}

/// Most collection ids [`CollIds`] keeps (a store has a few collections;
/// past this, lookups just read `meta`).
const MAX_CACHED_COLLS: usize = 256;

/// Collection ids by name, as committed snapshots showed them. A
/// collection's id never changes once committed (collections are never
/// dropped or renumbered), so a read can skip the `meta` lookup. Only what
/// a snapshot read is kept, never a write transaction's own creation, which
/// is not committed yet. An older snapshot that predates a cached
/// collection finds no documents under its id, as it would find no id.
#[derive(Default)]
struct CollIds(RwLock<Vec<(String, u32)>>);

/// Decoded version vectors of `meta` (the store's and the change log's
/// heads), each with the packed bytes it was decoded from. Why: every sync
/// request reads both, and in a mesh of thousands of peers they hold
/// thousands of entries whose bit-packed decoding was a fifth of serving a
/// request (2,000-peer simulation); comparing the bytes is one `memcmp`.
/// Keyed by the bytes themselves, a hit is exactly what decoding them gives,
/// whichever snapshot or transaction reads them.
#[derive(Default)]
struct VvCache(Mutex<Vec<CachedVv>>);

/// Documents the change feed decoded lately, each with the record it was
/// decoded from. Why: a peer's sessions each read the same news for their
/// remotes within moments of each other, and decoding the document's CRDT
/// state was a tenth of a simulated mesh's instructions. Keyed by the
/// record's bytes, a hit is exactly what decoding them gives, whichever
/// snapshot reads them; [`DOC_CACHE_SLOTS`] bounds it.
#[derive(Default)]
struct DocCache(Mutex<DocSlots>);

/// Documents [`DocCache`] keeps, replaced in turn: enough for the news of
/// one commit read by a few sessions, little memory for a small peer.
const DOC_CACHE_SLOTS: usize = 8;
/// Largest record [`DocCache`] keeps: bounds its memory (documents may be
/// megabytes) while news (a few fields) fits.
const DOC_CACHE_MAX_RECORD_BYTES: usize = 16 << 10;

/// A decoded document's `_id` and CRDT state, shared by the reads that
/// found the same record.
type DecodedDoc = Arc<(Value, Doc)>;

#[derive(Default)]
struct DocSlots {
    /// (collection, document number, record, what it decodes to).
    slots: Vec<(u32, u64, Vec<u8>, DecodedDoc)>,
    /// The slot the next new document takes once all are used.
    next: usize,
}

impl DocCache {
    fn get(&self, coll: u32, num: u64, record: &[u8]) -> Option<DecodedDoc> {
        let cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cached
            .slots
            .iter()
            .find(|(c, n, r, _)| (*c, *n) == (coll, num) && r == record)
            .map(|(_, _, _, doc)| Arc::clone(doc))
    }

    fn put(&self, coll: u32, num: u64, record: &[u8], doc: &DecodedDoc) {
        if record.len() > DOC_CACHE_MAX_RECORD_BYTES {
            return;
        }
        let entry = (coll, num, record.to_vec(), Arc::clone(doc));
        let mut cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let DocSlots { slots, next } = &mut *cached;
        if let Some(i) = slots.iter().position(|(c, n, _, _)| (*c, *n) == (coll, num)) {
            slots[i] = entry;
        } else if slots.len() < DOC_CACHE_SLOTS {
            slots.push(entry);
        } else {
            slots[*next] = entry;
            *next = (*next + 1) % DOC_CACHE_SLOTS;
        }
        debug_assert!(slots.len() <= DOC_CACHE_SLOTS);
    }
}

/// The meta key, the packed bytes, and what they decode to.
type CachedVv = (&'static [u8], Vec<u8>, VersionVector);

impl VvCache {
    fn get(&self, key: &[u8], bytes: &[u8]) -> Option<VersionVector> {
        let cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cached
            .iter()
            .find(|(k, b, _)| *k == key && b == bytes)
            .map(|(_, _, vv)| vv.clone())
    }

    fn put(&self, key: &'static [u8], bytes: &[u8], vv: &VersionVector) {
        let mut cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cached.retain(|(k, _, _)| *k != key);
        // Bounded: one entry per meta key (two keys use it).
        debug_assert!(cached.len() < 2, "one cached vector per meta key");
        cached.push((key, bytes.to_vec(), vv.clone()));
    }
}

impl CollIds {
    fn get(&self, name: &str) -> Option<u32> {
        let cached = self.0.read().unwrap_or_else(|e| e.into_inner());
        cached.iter().find(|(n, _)| n == name).map(|&(_, id)| id)
    }

    fn note(&self, name: &str, id: u32) {
        let mut cached = self.0.write().unwrap_or_else(|e| e.into_inner());
        if cached.len() < MAX_CACHED_COLLS && !cached.iter().any(|(n, _)| n == name) {
            cached.push((name.to_string(), id));
        }
    }
}

impl<K: Kv> Store<K> {
    /// Opens (or initializes) a store. `fresh_peer` becomes the peer id of a
    /// new store and is ignored for an existing one; `seed` (runtime entropy)
    /// seeds id generation and, for a new store, its id-hashing key.
    pub fn open(kv: K, config: StoreConfig, fresh_peer: PeerId, seed: u64) -> Result<Store<K>, StoreError> {
        let mut entropy = IdGen(seed ^ fresh_peer.0.rotate_left(17));
        let mut w = kv.write()?;
        match meta_u64(&w, META_FORMAT)? {
            Some(f) if f != STORE_FORMAT as u64 => return Err(StoreError::UnsupportedFormat { found: f as u32 }),
            Some(_) => {}
            None => {
                w.put(Table::Meta, META_FORMAT, &(STORE_FORMAT as u64).to_be_bytes())?;
                w.put(Table::Meta, META_PEER, &fresh_peer.0.to_be_bytes())?;
                let key = IdHasher::new(entropy.next_u64(), entropy.next_u64());
                w.put(Table::Meta, META_ID_KEY, &key.to_bytes())?;
            }
        }
        let meta_corrupt = || {
            corrupt(
                "(meta)",
                None,
                CodecError::Malformed {
                    reason: "store identity".into(),
                },
            )
        };
        let peer = PeerId(meta_u64(&w, META_PEER)?.ok_or_else(meta_corrupt)?);
        let hasher = w
            .get(Table::Meta, META_ID_KEY)?
            .and_then(IdHasher::from_bytes)
            .ok_or_else(meta_corrupt)?;
        let high_water = Hlc(meta_u64(&w, META_HLC)?.unwrap_or(0));
        if w.get(Table::Meta, META_LOG_HEADS)?.is_none() {
            let heads = rebuild_log_heads(&w)?;
            put_split_vv(&mut w, (META_LOG_HEADS, META_LOG_HEADS_OWN), &heads, peer, true, None)?;
        }
        w.commit()?;
        let clock = Clock::new(high_water, config.max_drift_ms);
        Ok(Store {
            kv,
            config,
            peer,
            hasher,
            clock: Mutex::new(clock),
            ids: Mutex::new(entropy),
            colls: CollIds::default(),
            vvs: VvCache::default(),
            docs: DocCache::default(),
        })
    }

    /// This replica's peer id (persisted).
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The settings.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The backend.
    pub fn kv(&self) -> &K {
        &self.kv
    }

    /// The greatest timestamp issued or observed.
    pub fn clock_high_water(&self) -> Hlc {
        self.clock.lock().unwrap_or_else(|e| e.into_inner()).last()
    }

    /// A consistent snapshot for reading.
    pub fn read(&self) -> Result<ReadTx<'_, K>, StoreError> {
        Ok(ReadTx {
            kv: self.kv.read()?,
            hasher: self.hasher,
            colls: &self.colls,
            vvs: &self.vvs,
            docs: &self.docs,
        })
    }

    /// The write transaction; `now_ms` is the wall clock for its timestamps.
    pub fn write(&self, now_ms: u64) -> Result<WriteTx<'_, K>, StoreError> {
        let kv = self.kv.write()?;
        let clock = self.clock.lock().unwrap_or_else(|e| e.into_inner());
        let vv = version_vector(&kv, Some(&self.vvs))?;
        let next_doc = meta_u64(&kv, META_NEXT_DOC)?.unwrap_or(1);
        let next_coll = meta_u64(&kv, META_NEXT_COLL)?.unwrap_or(1) as u32;
        let ids_recent = meta_u64(&kv, META_IDS_RECENT)?.unwrap_or(0);
        let indexes = indexes(&kv)?;
        Ok(WriteTx {
            store: self,
            kv,
            pending: Pending::default(),
            clock,
            now_ms,
            vv,
            own_dirty: false,
            others_dirty: false,
            heads: None,
            heads_others_dirty: false,
            next_doc,
            next_coll,
            ids_recent,
            counters_dirty: false,
            colls: Vec::new(),
            indexes,
            changed: BTreeMap::new(),
            record: Vec::with_capacity(512),
            ops: Vec::with_capacity(32),
        })
    }
}

// ---- the write buffer of `docs` and `log` ----

/// Largest write buffer before it is written through (bounds a transaction's memory).
const PENDING_MAX_BYTES: usize = 8 << 20;

/// Buffered writes of the `docs` and `log` tables (`None`: a delete).
#[derive(Default)]
struct Pending {
    docs: BTreeMap<[u8; 12], Option<Vec<u8>>>,
    log: BTreeMap<[u8; 28], bool>,
    bytes: usize,
}

/// Reads through the write buffer: what the transaction's reads must see.
struct View<'a, W> {
    kv: &'a W,
    pending: &'a Pending,
}

impl<W: KvRead> KvRead for View<'_, W> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<&[u8]>, KvError> {
        if table == Table::Docs {
            if let Some(v) = <[u8; 12]>::try_from(key).ok().and_then(|k| self.pending.docs.get(&k)) {
                return Ok(v.as_deref());
            }
        }
        debug_assert!(
            table != Table::Log || self.pending.log.is_empty(),
            "log reads need a flushed buffer"
        );
        self.kv.get(table, key)
    }

    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), KvError> {
        assert!(
            self.pending.docs.is_empty() && self.pending.log.is_empty(),
            "scans inside a write transaction flush its buffer first"
        );
        self.kv.scan(table, from, to, reverse, visit)
    }
}

// ---- reads shared by both transaction kinds ----

fn coll_id<R: KvRead + ?Sized>(r: &R, name: &str) -> Result<Option<u32>, StoreError> {
    Ok(r.get(Table::Meta, &coll_key(name))?.and_then(be_u32))
}

/// [`coll_id`] through the store's cache of committed ids, when `r` is a
/// committed snapshot (`cache` is `None` for the write transaction).
fn coll_id_cached<R: KvRead + ?Sized>(r: &R, cache: Option<&CollIds>, name: &str) -> Result<Option<u32>, StoreError> {
    if let Some(id) = cache.and_then(|c| c.get(name)) {
        return Ok(Some(id));
    }
    let id = coll_id(r, name)?;
    if let (Some(cache), Some(id)) = (cache, id) {
        cache.note(name, id);
    }
    Ok(id)
}

/// The document number and stored record of an encoded id: the bucket's
/// candidate whose record carries exactly this id.
///
/// The main level is read first and a confirmed record ends the search
/// (the record carries the id, so it is the document): the recent level
/// holds at most [`RECENT_MAX`](layout::RECENT_MAX) entries, so most
/// documents are in the main one, and a hit there costs one index read
/// instead of two. The recent level is read when the main one has no
/// confirmed record.
fn locate<'r, R: KvRead + ?Sized>(
    r: &'r R,
    h: &IdHasher,
    coll: u32,
    id_bytes: &[u8],
) -> Result<Option<(u64, &'r [u8])>, StoreError> {
    // A record whose id cannot be read cannot be confirmed; if it is the
    // only candidate of both levels it is taken, so that the damage is
    // reported.
    let mut candidates = 0usize;
    let mut unreadable = None;
    for level in [LEVEL_MAIN, LEVEL_RECENT] {
        let bucket = r.get(Table::Ids, &h.key(level, coll, id_bytes))?.unwrap_or_default();
        for num in bucket_nums(bucket) {
            candidates += 1;
            let Some(record) = r.get(Table::Docs, &doc_key(coll, num))? else {
                continue;
            };
            match codec::record_id(record) {
                Ok(id) if id == id_bytes => return Ok(Some((num, record))),
                Ok(_) => {}
                Err(_) => unreadable = Some((num, record)),
            }
        }
    }
    Ok(unreadable.filter(|_| candidates == 1))
}

fn corrupt(collection: &str, id: Option<&[u8]>, reason: CodecError) -> StoreError {
    let id = id.and_then(|b| codec::decode_id(b).ok()).map(|v| v.to_string());
    StoreError::Corrupt {
        collection: collection.to_string(),
        id,
        reason,
    }
}

/// Decodes a stored record into (id bytes, document).
fn decode_record<'b>(collection: &str, bytes: &'b [u8]) -> Result<(&'b [u8], Doc), StoreError> {
    let (id, body) = split_checked(collection, bytes)?;
    let doc = codec::decode_doc(body).map_err(|e| corrupt(collection, Some(id), e))?;
    Ok((id, doc))
}

/// A stored record's (id bytes, body), the envelope checked; damage is an
/// error naming the document when its id can still be read.
fn split_checked<'b>(collection: &str, bytes: &'b [u8]) -> Result<(&'b [u8], &'b [u8]), StoreError> {
    let (id, body) = codec::split_record(bytes);
    let body = body.map_err(|e| corrupt(collection, id.as_ref().ok().copied(), e))?;
    let id = id.map_err(|e| corrupt(collection, None, e))?;
    Ok((id, body))
}

/// The stored record of a document, found by id.
fn find_record<'r, R: KvRead + ?Sized>(
    r: &'r R,
    h: &IdHasher,
    cache: Option<&CollIds>,
    collection: &str,
    id: &Value,
) -> Result<Option<&'r [u8]>, StoreError> {
    let id_bytes = match id {
        // Already canonical: encoded without a copy.
        Value::String(_) | Value::Int(_) => codec::encode_id(id),
        _ => codec::encode_id(&canonical_id(collection, id)?),
    };
    let Some(coll) = coll_id_cached(r, cache, collection)? else {
        return Ok(None);
    };
    Ok(locate(r, h, coll, &id_bytes)?.map(|(_, record)| record))
}

fn with_id(id: &Value, mut fields: BTreeMap<String, Value>) -> Value {
    fields.insert("_id".to_string(), id.clone());
    Value::Object(fields)
}

fn get_doc<R: KvRead + ?Sized>(
    r: &R,
    h: &IdHasher,
    cache: Option<&CollIds>,
    collection: &str,
    id: &Value,
) -> Result<Option<Doc>, StoreError> {
    let Some(record) = find_record(r, h, cache, collection, id)? else {
        return Ok(None);
    };
    decode_record(collection, record).map(|(_, d)| Some(d))
}

fn get<R: KvRead + ?Sized>(
    r: &R,
    h: &IdHasher,
    cache: Option<&CollIds>,
    collection: &str,
    id: &Value,
) -> Result<Option<Value>, StoreError> {
    match get_raw(r, h, cache, collection, id)? {
        Some(raw) => raw.render(),
        None => Ok(None),
    }
}

fn get_raw<'r, R: KvRead + ?Sized>(
    r: &'r R,
    h: &IdHasher,
    cache: Option<&CollIds>,
    collection: &'r str,
    id: &Value,
) -> Result<Option<RawDoc<'r>>, StoreError> {
    match find_record(r, h, cache, collection, id)? {
        Some(record) => RawDoc::open(collection, record).map(Some),
        None => Ok(None),
    }
}

/// Visits the stored records of a collection (visible or not) in storage
/// order; a damaged record is passed as an error.
fn scan_raw<'r, R: KvRead + ?Sized>(
    r: &'r R,
    cache: Option<&CollIds>,
    collection: &'r str,
    visit: &mut dyn FnMut(Result<RawDoc<'_>, StoreError>) -> bool,
) -> Result<(), StoreError> {
    let Some(coll) = coll_id_cached(r, cache, collection)? else {
        return Ok(());
    };
    let from = coll.to_be_bytes();
    let to = (coll + 1).to_be_bytes();
    r.scan(Table::Docs, &from, Some(&to), false, &mut |_, bytes| {
        visit(RawDoc::open(collection, bytes))
    })?;
    Ok(())
}

/// A stored record with its document number, as numbered scans pass it.
pub type NumberedRecord<'a> = Result<(u64, RawDoc<'a>), StoreError>;

/// The stored record of a document (visible or not) with its document
/// number: the position of the record in storage (scan) order.
fn get_numbered<'r, R: KvRead + ?Sized>(
    r: &'r R,
    h: &IdHasher,
    cache: Option<&CollIds>,
    collection: &'r str,
    id: &Value,
) -> Result<Option<(u64, RawDoc<'r>)>, StoreError> {
    let id_bytes = match id {
        Value::String(_) | Value::Int(_) => codec::encode_id(id),
        _ => codec::encode_id(&canonical_id(collection, id)?),
    };
    let Some(coll) = coll_id_cached(r, cache, collection)? else {
        return Ok(None);
    };
    match locate(r, h, coll, &id_bytes)? {
        Some((num, record)) => Ok(Some((num, RawDoc::open(collection, record)?))),
        None => Ok(None),
    }
}

/// [`scan_raw`] with each record's document number (ascending).
fn scan_numbered<'r, R: KvRead + ?Sized>(
    r: &'r R,
    cache: Option<&CollIds>,
    collection: &'r str,
    visit: &mut dyn FnMut(NumberedRecord<'_>) -> bool,
) -> Result<(), StoreError> {
    let Some(coll) = coll_id_cached(r, cache, collection)? else {
        return Ok(());
    };
    let from = coll.to_be_bytes();
    let to = (coll + 1).to_be_bytes();
    r.scan(Table::Docs, &from, Some(&to), false, &mut |key, bytes| {
        // Keys of this range are `doc_key`s: 4 bytes of collection, 8 of number.
        let num = <[u8; 8]>::try_from(key.get(4..12).unwrap_or_default()).map(u64::from_be_bytes);
        match num {
            Ok(num) if key.len() == 12 => visit(RawDoc::open(collection, bytes).map(|raw| (num, raw))),
            _ => visit(Err(StoreError::Corrupt {
                collection: collection.to_string(),
                id: None,
                reason: CodecError::Malformed {
                    reason: "document key of the wrong length".into(),
                },
            })),
        }
    })?;
    Ok(())
}

/// Adapts a visitor of live JSON documents to one of raw records: invisible
/// documents are skipped, the others rendered.
fn rendering<'v>(
    visit: &'v mut dyn FnMut(Result<Value, StoreError>) -> bool,
) -> impl FnMut(Result<RawDoc<'_>, StoreError>) -> bool + 'v {
    move |raw| match raw.and_then(|raw| raw.render()) {
        Ok(None) => true,
        Ok(Some(v)) => visit(Ok(v)),
        Err(e) => visit(Err(e)),
    }
}

const META_NEXT_INDEX: &[u8] = b"next_index";

fn index_catalog_key(name: &str) -> Vec<u8> {
    [b"x/".as_slice(), name.as_bytes()].concat()
}

fn indexes<R: KvRead + ?Sized>(r: &R) -> Result<Vec<IndexDef>, StoreError> {
    let mut out = Vec::new();
    let mut bad = false;
    r.scan(Table::Meta, b"x/", Some(b"x0"), false, &mut |_, v| {
        match postcard::from_bytes::<IndexDef>(v) {
            Ok(d) => out.push(d),
            Err(_) => bad = true,
        }
        true
    })?;
    if bad {
        return Err(corrupt(
            "(indexes)",
            None,
            CodecError::Malformed {
                reason: "index catalogue".into(),
            },
        ));
    }
    Ok(out)
}

/// Visits the stored records of an index's entries in `[from, to)` (full
/// entry keys), in key order or reversed. Entries whose key `keep_key`
/// refuses are passed over without reading their document (a filter on
/// the indexed values); entries whose document is gone are skipped;
/// damaged records are passed as errors.
#[allow(clippy::too_many_arguments)]
fn index_scan_raw<'r, R: KvRead + ?Sized>(
    r: &'r R,
    cache: Option<&CollIds>,
    def: &'r IndexDef,
    from: &[u8],
    to: Option<&[u8]>,
    reverse: bool,
    keep_key: &mut dyn FnMut(&[u8]) -> bool,
    visit: &mut dyn FnMut(Result<RawDoc<'_>, StoreError>) -> bool,
) -> Result<(), StoreError> {
    let Some(coll) = coll_id_cached(r, cache, &def.collection)? else {
        return Ok(());
    };
    let mut failure = None;
    r.scan(Table::Index, from, to, reverse, &mut |k, _| {
        let Some(num) = k.len().checked_sub(8).and_then(|at| be_u64(&k[at..])) else {
            return true;
        };
        if !keep_key(k) {
            return true;
        }
        match r.get(Table::Docs, &doc_key(coll, num)) {
            Ok(Some(record)) => visit(RawDoc::open(&def.collection, record)),
            Ok(None) => true,
            Err(e) => {
                failure = Some(StoreError::from(e));
                false
            }
        }
    })?;
    failure.map_or(Ok(()), Err)
}

fn settings<R: KvRead + ?Sized>(r: &R) -> Result<Vec<(String, Value)>, StoreError> {
    local::json_records(r, b"s/", "setting")
}

fn collections<R: KvRead + ?Sized>(r: &R) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    r.scan(Table::Meta, b"c/", Some(b"c0"), false, &mut |k, _| {
        out.push(String::from_utf8_lossy(&k[2..]).into_owned());
        true
    })?;
    Ok(out)
}

/// Whether a collection `interest` wants is kept from its role by a sync scope.
fn withheld<R: KvRead + ?Sized>(r: &R, interest: Option<(&Interest, Role)>) -> Result<bool, StoreError> {
    let Some((interest, role)) = interest else {
        return Ok(false);
    };
    let scopes = SyncScopes::from_settings(&settings(r)?);
    Ok(collections(r)?
        .iter()
        .any(|c| interest.wants_collection(c) && !scopes.of(c).allows(role)))
}

fn reaped<R: KvRead + ?Sized>(r: &R) -> Result<VersionVector, StoreError> {
    meta_vv(r, META_REAPED, None)
}

fn version_vector<R: KvRead + ?Sized>(r: &R, cache: Option<&VvCache>) -> Result<VersionVector, StoreError> {
    split_vv(r, (META_VV, META_VV_OWN), cache)
}

fn log_heads<R: KvRead + ?Sized>(r: &R, cache: Option<&VvCache>) -> Result<VersionVector, StoreError> {
    split_vv(r, (META_LOG_HEADS, META_LOG_HEADS_OWN), cache)
}

/// A packed version vector of the meta table (none: empty), decoded or
/// found in `cache`.
fn meta_vv<R: KvRead + ?Sized>(
    r: &R,
    key: &'static [u8],
    cache: Option<&VvCache>,
) -> Result<VersionVector, StoreError> {
    let Some(b) = r.get(Table::Meta, key)? else {
        return Ok(VersionVector::new());
    };
    if let Some(vv) = cache.and_then(|c| c.get(key, b)) {
        return Ok(vv);
    }
    let vv = packed::decode(b).map_err(|e| {
        let reason = format!("version vector {:?}: {e}", String::from_utf8_lossy(key));
        corrupt("(meta)", None, CodecError::Malformed { reason })
    })?;
    if let Some(c) = cache {
        c.put(key, b, &vv);
    }
    Ok(vv)
}

/// A version vector kept in two records (see `layout::META_VV`): the
/// packed entries of other origins, and this store's own entry.
fn split_vv<R: KvRead + ?Sized>(
    r: &R,
    (others, own): (&'static [u8], &[u8]),
    cache: Option<&VvCache>,
) -> Result<VersionVector, StoreError> {
    let mut vv = meta_vv(r, others, cache)?;
    if let (Some(hlc), Some(peer)) = (meta_u64(r, own)?, meta_u64(r, META_PEER)?) {
        vv.set(PeerId(peer), Hlc(hlc));
    }
    Ok(vv)
}

/// Writes a vector kept in two records: this store's own entry always
/// (8 bytes), the packed entries of other origins only when `others_changed`.
/// Those are also handed to `cache` with what they decode to, so the next
/// read need not decode them: a merge rewrites them on every commit, and
/// decoding them back cost as much as encoding.
fn put_split_vv<W: KvWrite + ?Sized>(
    w: &mut W,
    (others, own): (&'static [u8], &[u8]),
    vv: &VersionVector,
    peer: PeerId,
    others_changed: bool,
    cache: Option<&VvCache>,
) -> Result<(), StoreError> {
    if others_changed {
        let bytes = packed::encode_except(vv, peer);
        w.put(Table::Meta, others, &bytes)?;
        if let Some(cache) = cache {
            let mut rest = vv.clone();
            rest.set(peer, Hlc::ZERO);
            debug_assert_eq!(packed::decode(&bytes).ok().as_ref(), Some(&rest));
            cache.put(others, &bytes, &rest);
        }
    }
    w.put(Table::Meta, own, &vv.get(peer).0.to_be_bytes())?;
    Ok(())
}

/// The change log's heads, read off the log (a store written before they
/// were kept).
fn rebuild_log_heads<R: KvRead + ?Sized>(r: &R) -> Result<VersionVector, StoreError> {
    let mut heads = VersionVector::new();
    let mut origin = Some(0);
    while let Some(start) = origin {
        let Some(peer) = next_log_origin(r, start)? else { break };
        origin = peer.0.checked_add(1);
        let to = origin.map(|p| p.to_be_bytes());
        r.scan(
            Table::Log,
            &peer.0.to_be_bytes(),
            to.as_ref().map(|t| &t[..]),
            true,
            &mut |k, _| {
                if let Some(hlc) = be_u64(&k[8..]) {
                    heads.observe(Stamp { peer, hlc: Hlc(hlc) });
                }
                false
            },
        )?;
    }
    Ok(heads)
}

/// The first origin at or after `start` with an entry in the change log.
fn next_log_origin<R: KvRead + ?Sized>(r: &R, start: u64) -> Result<Option<PeerId>, StoreError> {
    let mut found = None;
    r.scan(Table::Log, &start.to_be_bytes(), None, false, &mut |k, _| {
        found = be_u64(k).map(PeerId);
        false
    })?;
    Ok(found)
}

/// Log entries to send (origin, collection id, document number), and where
/// the next batch starts.
struct LogDocs {
    docs: Vec<(PeerId, u32, u64)>,
    next: Option<SyncCursor>,
}

/// Log entries newer than `since`, in log order (origins ascending, then
/// oldest first), at most `max_docs`. A document has one entry per origin
/// (its latest write from there), so it comes once per origin with news.
fn log_docs<R: KvRead + ?Sized>(
    r: &R,
    since: &VersionVector,
    resume: Option<&SyncCursor>,
    max_docs: usize,
    cache: Option<&VvCache>,
) -> Result<LogDocs, StoreError> {
    let mut docs: Vec<(PeerId, u32, u64)> = Vec::new();
    let mut next: Option<SyncCursor> = None;
    let mut last = [0u8; 28];
    let resume_peer = resume.and_then(|c| be_u64(&c.0)).unwrap_or(0);
    // Origins as the log has them, not as the version vector claims them:
    // writes merged from a peer whose claims were not complete for us are
    // held and must be passed on too (multihop). Only those with entries
    // past `since` are visited: a request with no news costs no seek.
    let heads = log_heads(r, cache)?;
    let news = heads.iter().filter(|&(p, h)| p.0 >= resume_peer && h > since.get(p));
    for (peer, _) in news {
        let after = since.get(peer);
        let mut from = log_key(peer, Hlc(after.0 + 1), 0, 0).to_vec();
        if let Some(c) = resume.filter(|_| peer.0 == resume_peer) {
            from = from.max([&c.0[..], &[0]].concat());
        }
        let to = peer.0.checked_add(1).map(|p| p.to_be_bytes());
        r.scan(Table::Log, &from, to.as_ref().map(|t| &t[..]), false, &mut |k, _| {
            let (Some(c), Some(n)) = (be_u32(&k[16..]), be_u64(&k[20..])) else {
                return true;
            };
            if docs.len() == max_docs {
                next = Some(SyncCursor(last));
                return false;
            }
            docs.push((peer, c, n));
            last.copy_from_slice(k);
            true
        })?;
        if next.is_some() {
            break;
        }
    }
    Ok(LogDocs { docs, next })
}

fn changes_since<R: KvRead + ?Sized>(
    r: &R,
    since: &VersionVector,
    resume: Option<&SyncCursor>,
    max_docs: usize,
    interest: Option<(&Interest, Role)>,
    (cache, doc_cache): (Option<&VvCache>, Option<&DocCache>),
) -> Result<ChangeBatch, StoreError> {
    assert!(max_docs > 0, "a batch must be allowed at least one document");
    let upto = version_vector(r, cache)?;
    // A fresh asker (nothing seen) holds nothing that was deleted.
    if resume.is_none() && !since.is_empty() && !since.dominates(&reaped(r)?) {
        return Ok(ChangeBatch {
            changes: Vec::new(),
            behind_reaped: true,
            withheld: withheld(r, interest)?,
            upto,
            resume: None,
        });
    }
    let LogDocs { docs, next } = log_docs(r, since, resume, max_docs, cache)?;
    // News (a few documents) is read by every session; a bulk batch would
    // only churn the cache.
    let doc_cache = doc_cache.filter(|_| docs.len() <= DOC_CACHE_SLOTS);
    let scopes = match interest {
        Some(_) => SyncScopes::from_settings(&settings(r)?),
        None => SyncScopes::default(),
    };
    let mut names: BTreeMap<u32, String> = BTreeMap::new();
    let mut changes = Vec::with_capacity(docs.len());
    let mut decoded: BTreeMap<(u32, u64), DecodedDoc> = BTreeMap::new();
    for (origin, coll, num) in docs {
        if let std::collections::btree_map::Entry::Vacant(e) = names.entry(coll) {
            let name = r
                .get(Table::Meta, &coll_name_key(coll))?
                .map(|b| String::from_utf8_lossy(b).into_owned());
            e.insert(name.unwrap_or_default());
        }
        let collection = &names[&coll];
        if interest.is_some_and(|(i, role)| !i.wants_collection(collection) || !scopes.of(collection).allows(role)) {
            continue;
        }
        // A document with news from several origins comes once per origin:
        // decode it once per batch (the cache holds at most `max_docs`).
        let pair = match decoded.entry((coll, num)) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                // A log entry may outlive its document (eviction): skip it.
                let Some(bytes) = r.get(Table::Docs, &doc_key(coll, num))? else {
                    continue;
                };
                match doc_cache.and_then(|c| c.get(coll, num, bytes)) {
                    Some(pair) => e.insert(pair),
                    None => {
                        let (id, doc) = decode_record(collection, bytes)?;
                        let id = codec::decode_id(id).map_err(|e| corrupt(collection, None, e))?;
                        let pair = Arc::new((id, doc));
                        if let Some(c) = doc_cache {
                            c.put(coll, num, bytes, &pair);
                        }
                        e.insert(pair)
                    }
                }
            }
        };
        let (id, doc) = (&pair.0, &pair.1);
        // Only this origin's writes (and, sent whole, what `since` covers):
        // the batch is then a prefix of every origin's writes (log order),
        // so a receiver never exposes a change without the earlier ones
        // from its origin, even mid-round.
        let ops = match interest.map_or(Selection::Delta, |(i, _)| i.select(collection, id, doc)) {
            Selection::Skip => continue,
            Selection::Delta => doc.delta_from(since, origin),
            Selection::Whole => doc.whole_from(since, origin),
        };
        if !ops.is_empty() {
            changes.push(Change {
                collection: collection.clone(),
                id: id.clone(),
                ops,
            });
        }
    }
    Ok(ChangeBatch {
        changes,
        behind_reaped: false,
        withheld: withheld(r, interest)?,
        upto,
        resume: next,
    })
}

/// A read-only snapshot.
pub struct ReadTx<'s, K: Kv> {
    kv: K::Read<'s>,
    hasher: IdHasher,
    colls: &'s CollIds,
    vvs: &'s VvCache,
    docs: &'s DocCache,
}

impl<K: Kv> ReadTx<'_, K> {
    /// The document with this `_id`, as JSON (with `_id`), if it exists.
    pub fn get(&self, collection: &str, id: &Value) -> Result<Option<Value>, StoreError> {
        get(&self.kv, &self.hasher, Some(self.colls), collection, id)
    }

    /// The document's full CRDT state (also for deleted documents).
    pub fn get_doc(&self, collection: &str, id: &Value) -> Result<Option<Doc>, StoreError> {
        get_doc(&self.kv, &self.hasher, Some(self.colls), collection, id)
    }

    /// Visits every live document of a collection until `visit` returns
    /// false. A damaged record is passed as an error, and the scan goes on.
    pub fn scan(
        &self,
        collection: &str,
        visit: &mut dyn FnMut(Result<Value, StoreError>) -> bool,
    ) -> Result<(), StoreError> {
        scan_raw(&self.kv, Some(self.colls), collection, &mut rendering(visit))
    }

    /// The stored record of the document with this `_id` (visible or not).
    pub fn get_raw<'r>(&'r self, collection: &'r str, id: &Value) -> Result<Option<RawDoc<'r>>, StoreError> {
        get_raw(&self.kv, &self.hasher, Some(self.colls), collection, id)
    }

    /// Visits every stored record of a collection, visible or not, until
    /// `visit` returns false; a damaged record is passed as an error.
    pub fn scan_raw<'r>(
        &'r self,
        collection: &'r str,
        visit: &mut dyn FnMut(Result<RawDoc<'_>, StoreError>) -> bool,
    ) -> Result<(), StoreError> {
        scan_raw(&self.kv, Some(self.colls), collection, visit)
    }

    /// The stored record of a document (visible or not) with its document
    /// number, the order of scans.
    pub fn get_numbered<'r>(
        &'r self,
        collection: &'r str,
        id: &Value,
    ) -> Result<Option<(u64, RawDoc<'r>)>, StoreError> {
        get_numbered(&self.kv, &self.hasher, Some(self.colls), collection, id)
    }

    /// [`ReadTx::scan_raw`] with each record's document number.
    pub fn scan_numbered<'r>(
        &'r self,
        collection: &'r str,
        visit: &mut dyn FnMut(NumberedRecord<'_>) -> bool,
    ) -> Result<(), StoreError> {
        scan_numbered(&self.kv, Some(self.colls), collection, visit)
    }

    /// Every collection ever written.
    pub fn collections(&self) -> Result<Vec<String>, StoreError> {
        collections(&self.kv)
    }

    /// System settings that were set (`ALTER SYSTEM SET`), by name.
    pub fn settings(&self) -> Result<Vec<(String, Value)>, StoreError> {
        settings(&self.kv)
    }

    /// Every index.
    pub fn indexes(&self) -> Result<Vec<IndexDef>, StoreError> {
        indexes(&self.kv)
    }

    /// Visits the live documents of an index's entries in `[from, to)`
    /// (full entry keys: see [`IndexDef::entry`]).
    pub fn index_scan(
        &self,
        def: &IndexDef,
        from: &[u8],
        to: Option<&[u8]>,
        reverse: bool,
        visit: &mut dyn FnMut(Result<Value, StoreError>) -> bool,
    ) -> Result<(), StoreError> {
        index_scan_raw(
            &self.kv,
            Some(self.colls),
            def,
            from,
            to,
            reverse,
            &mut |_| true,
            &mut rendering(visit),
        )
    }

    /// The stored records (visible or not) of an index range; see
    /// [`ReadTx::index_scan`]. Entries whose key `keep_key` refuses are
    /// skipped without reading their document.
    pub fn index_scan_raw<'r>(
        &'r self,
        def: &'r IndexDef,
        from: &[u8],
        to: Option<&[u8]>,
        reverse: bool,
        keep_key: &mut dyn FnMut(&[u8]) -> bool,
        visit: &mut dyn FnMut(Result<RawDoc<'_>, StoreError>) -> bool,
    ) -> Result<(), StoreError> {
        index_scan_raw(&self.kv, Some(self.colls), def, from, to, reverse, keep_key, visit)
    }

    /// What this replica has completely received, per origin peer.
    pub fn version_vector(&self) -> Result<VersionVector, StoreError> {
        version_vector(&self.kv, Some(self.vvs))
    }

    /// Joined version vectors of every document reaped after deletion.
    pub fn reaped(&self) -> Result<VersionVector, StoreError> {
        reaped(&self.kv)
    }

    /// Field-level changes a replica that has seen `since` is missing, for
    /// at most `max_docs` documents; pass the previous batch's `resume` to
    /// continue. See [`ChangeBatch`] for what the receiver may then claim.
    pub fn changes_since(
        &self,
        since: &VersionVector,
        resume: Option<&SyncCursor>,
        max_docs: usize,
    ) -> Result<ChangeBatch, StoreError> {
        let caches = (Some(self.vvs), Some(self.docs));
        changes_since(&self.kv, since, resume, max_docs, None, caches)
    }

    /// [`ReadTx::changes_since`] for a peer of `role` that wants only
    /// `interest`: documents it does not want, or that the collection's
    /// sync scope keeps from it, are skipped, and those matching a filtered
    /// subscription are sent whole (see [`crate::sync::scope`]).
    pub fn changes_for(
        &self,
        since: &VersionVector,
        resume: Option<&SyncCursor>,
        max_docs: usize,
        interest: &Interest,
        role: Role,
    ) -> Result<ChangeBatch, StoreError> {
        changes_since(
            &self.kv,
            since,
            resume,
            max_docs,
            Some((interest, role)),
            (Some(self.vvs), Some(self.docs)),
        )
    }
}

/// A located document, ready to be changed and saved.
struct Located {
    coll: u32,
    num: u64,
    id: Value,
    id_bytes: Vec<u8>,
    doc: Doc,
    before: VersionVector,
    /// Index entries of the document as loaded.
    indexed: Vec<Vec<u8>>,
}

impl Located {
    /// A document not stored yet (its number is allocated when it is saved).
    fn new(coll: u32, id: Value, id_bytes: Vec<u8>) -> Located {
        let (doc, before, indexed) = (Doc::new(), VersionVector::new(), Vec::new());
        Located {
            coll,
            num: 0,
            id,
            id_bytes,
            doc,
            before,
            indexed,
        }
    }
}

/// The write transaction. Dropping it without [`WriteTx::commit`] discards it.
pub struct WriteTx<'s, K: Kv> {
    store: &'s Store<K>,
    kv: K::Write<'s>,
    pending: Pending,
    clock: MutexGuard<'s, Clock>,
    now_ms: u64,
    vv: VersionVector,
    /// Whether this store's own entry of `vv` changed.
    own_dirty: bool,
    /// Whether an entry of another origin changed (the packed record of
    /// the others is rewritten only then).
    others_dirty: bool,
    /// The change log's heads, loaded at the first log entry written (and
    /// then written back at commit).
    heads: Option<VersionVector>,
    /// Whether a head of another origin changed.
    heads_others_dirty: bool,
    next_doc: u64,
    next_coll: u32,
    /// Entries in the id index's recent level (see `layout`).
    ids_recent: u64,
    counters_dirty: bool,
    /// Collections used by this transaction (a few; linear search is fastest).
    colls: Vec<(String, u32)>,
    /// Every index, loaded when the transaction starts.
    indexes: Vec<IndexDef>,
    /// Documents changed, per collection (encoded ids); `None` past the bound.
    changed: BTreeMap<String, Option<BTreeSet<Vec<u8>>>>,
    record: Vec<u8>,
    ops: Vec<Op>,
}

impl<'s, K: Kv> WriteTx<'s, K> {
    fn view(&self) -> View<'_, K::Write<'s>> {
        View {
            kv: &self.kv,
            pending: &self.pending,
        }
    }

    /// Writes the buffer through, in key order per table.
    fn flush(&mut self) -> Result<(), StoreError> {
        for (k, v) in std::mem::take(&mut self.pending.docs) {
            match v {
                Some(v) => self.kv.put(Table::Docs, &k, &v)?,
                None => self.kv.delete(Table::Docs, &k).map(drop)?,
            }
        }
        for (k, put) in std::mem::take(&mut self.pending.log) {
            match put {
                true => self.kv.put(Table::Log, &k, &[])?,
                false => self.kv.delete(Table::Log, &k).map(drop)?,
            }
        }
        self.pending.bytes = 0;
        Ok(())
    }

    fn note_change(&mut self, collection: &str, id_bytes: &[u8]) {
        let slot = match self.changed.get_mut(collection) {
            Some(slot) => slot,
            None => self
                .changed
                .entry(collection.to_string())
                .or_insert_with(|| Some(BTreeSet::new())),
        };
        if let Some(set) = slot {
            set.insert(id_bytes.to_vec());
            if set.len() > MAX_LISTED_CHANGES {
                *slot = None;
            }
        }
    }

    fn put_doc(&mut self, coll: u32, num: u64) -> Result<(), StoreError> {
        self.pending.bytes += self.record.len() + 12;
        self.pending.docs.insert(doc_key(coll, num), Some(self.record.clone()));
        self.put_log_bound()
    }

    fn put_log(&mut self, key: [u8; 28], put: bool) -> Result<(), StoreError> {
        if put {
            if self.heads.is_none() {
                self.heads = Some(log_heads(&self.kv, Some(&self.store.vvs))?);
            }
            if let (Some(heads), Some(peer), Some(hlc)) = (self.heads.as_mut(), be_u64(&key), be_u64(&key[8..])) {
                let moved = heads.observe(Stamp {
                    peer: PeerId(peer),
                    hlc: Hlc(hlc),
                });
                self.heads_others_dirty |= moved && PeerId(peer) != self.store.peer;
            }
        }
        self.pending.bytes += 28;
        self.pending.log.insert(key, put);
        self.put_log_bound()
    }

    fn put_log_bound(&mut self) -> Result<(), StoreError> {
        if self.pending.bytes > PENDING_MAX_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// See [`ReadTx::get`]; sees this transaction's writes.
    pub fn get(&self, collection: &str, id: &Value) -> Result<Option<Value>, StoreError> {
        get(&self.view(), &self.store.hasher, None, collection, id)
    }

    /// See [`ReadTx::get_doc`].
    pub fn get_doc(&self, collection: &str, id: &Value) -> Result<Option<Doc>, StoreError> {
        get_doc(&self.view(), &self.store.hasher, None, collection, id)
    }

    /// See [`ReadTx::settings`]; sees this transaction's writes.
    pub fn settings(&self) -> Result<Vec<(String, Value)>, StoreError> {
        settings(&self.kv)
    }

    /// Every index (including those created in this transaction).
    pub fn indexes(&self) -> Result<Vec<IndexDef>, StoreError> {
        Ok(self.indexes.clone())
    }

    /// See [`ReadTx::index_scan`]; sees this transaction's writes.
    pub fn index_scan(
        &mut self,
        def: &IndexDef,
        from: &[u8],
        to: Option<&[u8]>,
        reverse: bool,
        visit: &mut dyn FnMut(Result<Value, StoreError>) -> bool,
    ) -> Result<(), StoreError> {
        self.flush()?;
        index_scan_raw(
            &self.view(),
            None,
            def,
            from,
            to,
            reverse,
            &mut |_| true,
            &mut rendering(visit),
        )
    }

    /// See [`ReadTx::index_scan_raw`]; sees this transaction's writes.
    pub fn index_scan_raw(
        &mut self,
        def: &IndexDef,
        from: &[u8],
        to: Option<&[u8]>,
        reverse: bool,
        keep_key: &mut dyn FnMut(&[u8]) -> bool,
        visit: &mut dyn FnMut(Result<RawDoc<'_>, StoreError>) -> bool,
    ) -> Result<(), StoreError> {
        self.flush()?;
        index_scan_raw(&self.view(), None, def, from, to, reverse, keep_key, visit)
    }

    /// Creates an index and fills it from the documents already there.
    /// Returns false if one of that name exists (an error unless `if_not_exists`).
    pub fn create_index(
        &mut self,
        name: &str,
        collection: &str,
        paths: &[Vec<String>],
        if_not_exists: bool,
    ) -> Result<bool, StoreError> {
        check_collection(collection)?;
        if paths.is_empty() || paths.iter().any(|p| p.is_empty() || p.len() > MAX_DEPTH / 2) {
            return Err(StoreError::InvalidIndex {
                name: name.to_string(),
                reason: "needs 1 or more non-empty paths",
            });
        }
        if name.is_empty() || name.len() > MAX_COLLECTION_BYTES || name.chars().any(char::is_control) {
            return Err(StoreError::InvalidIndex {
                name: name.to_string(),
                reason: "invalid name",
            });
        }
        if self.indexes.iter().any(|d| d.name == name) {
            if if_not_exists {
                return Ok(false);
            }
            return Err(StoreError::InvalidIndex {
                name: name.to_string(),
                reason: "an index of that name exists",
            });
        }
        let id = meta_u64(&self.kv, META_NEXT_INDEX)?.unwrap_or(1) as u32;
        self.kv
            .put(Table::Meta, META_NEXT_INDEX, &(id as u64 + 1).to_be_bytes())?;
        let def = IndexDef {
            name: name.to_string(),
            id,
            collection: collection.to_string(),
            paths: paths.to_vec(),
        };
        let bytes = postcard::to_allocvec(&def).unwrap_or_default();
        self.kv.put(Table::Meta, &index_catalog_key(name), &bytes)?;
        self.backfill(&def)?;
        // Plans of the collection may read the index now, in its order:
        // live queries must look again.
        self.changed.insert(def.collection.clone(), None);
        self.indexes.push(def);
        Ok(true)
    }

    fn backfill(&mut self, def: &IndexDef) -> Result<(), StoreError> {
        self.flush()?;
        let Some(coll) = coll_id(&self.kv, &def.collection)? else {
            return Ok(());
        };
        let from = coll.to_be_bytes();
        let to = (coll + 1).to_be_bytes();
        let mut entries = Vec::new();
        let mut failure = None;
        self.kv.scan(Table::Docs, &from, Some(&to), false, &mut |k, record| {
            let Some(num) = be_u64(&k[4..]) else { return true };
            match decode_record(&def.collection, record) {
                Ok((id, doc)) => {
                    let id = codec::decode_id(id).unwrap_or(Value::Null);
                    if let Some(fields) = doc.render() {
                        entries.push(def.entry(&def.values(&with_id(&id, fields)), num));
                    }
                    true
                }
                Err(e) => {
                    failure = Some(e);
                    false
                }
            }
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        for e in entries {
            self.kv.put(Table::Index, &e, &[])?;
        }
        Ok(())
    }

    /// Drops an index and its entries. Returns false if there is none (an
    /// error unless `if_exists`).
    pub fn drop_index(&mut self, name: &str, if_exists: bool) -> Result<bool, StoreError> {
        let Some(at) = self.indexes.iter().position(|d| d.name == name) else {
            if if_exists {
                return Ok(false);
            }
            return Err(StoreError::InvalidIndex {
                name: name.to_string(),
                reason: "no index of that name",
            });
        };
        let def = self.indexes.remove(at);
        self.kv.delete(Table::Meta, &index_catalog_key(name))?;
        let from = def.id.to_be_bytes();
        let to = (def.id + 1).to_be_bytes();
        let mut keys = Vec::new();
        self.kv.scan(Table::Index, &from, Some(&to), false, &mut |k, _| {
            keys.push(k.to_vec());
            true
        })?;
        for k in keys {
            self.kv.delete(Table::Index, &k)?;
        }
        // Plans that read the index read otherwise now (see `create_index`).
        self.changed.insert(def.collection, None);
        Ok(true)
    }

    /// Index entries of a document as it is rendered now (none if it is not visible).
    fn index_entries(&self, collection: &str, id: &Value, doc: &Doc, num: u64) -> Vec<Vec<u8>> {
        self.index_entries_of(collection, id, || doc.render(), num)
    }

    /// As [`WriteTx::index_entries`], rendering only if the collection has indexes.
    fn index_entries_of(
        &self,
        collection: &str,
        id: &Value,
        render: impl FnOnce() -> Option<BTreeMap<String, Value>>,
        num: u64,
    ) -> Vec<Vec<u8>> {
        let mine: Vec<&IndexDef> = self.indexes.iter().filter(|d| d.collection == collection).collect();
        if mine.is_empty() {
            return Vec::new();
        }
        let Some(fields) = render() else { return Vec::new() };
        let value = with_id(id, fields);
        mine.iter().map(|d| d.entry(&d.values(&value), num)).collect()
    }

    /// Moves a document's index entries from `before` to what it is now.
    fn reindex(&mut self, before: &[Vec<u8>], now: &[Vec<u8>]) -> Result<(), StoreError> {
        for k in before.iter().filter(|k| !now.contains(k)) {
            self.kv.delete(Table::Index, k)?;
        }
        for k in now.iter().filter(|k| !before.contains(k)) {
            self.kv.put(Table::Index, k, &[])?;
        }
        Ok(())
    }

    /// Sets a system setting (local to this replica; never synced).
    pub fn set_setting(&mut self, name: &str, value: &Value) -> Result<(), StoreError> {
        let key = [b"s/".as_slice(), name.as_bytes()].concat();
        self.kv.put(Table::Meta, &key, value.to_string().as_bytes())?;
        Ok(())
    }

    /// See [`ReadTx::scan`]; sees this transaction's writes.
    pub fn scan(
        &mut self,
        collection: &str,
        visit: &mut dyn FnMut(Result<Value, StoreError>) -> bool,
    ) -> Result<(), StoreError> {
        self.flush()?;
        scan_raw(&self.view(), None, collection, &mut rendering(visit))
    }

    /// See [`ReadTx::scan_raw`]; sees this transaction's writes.
    pub fn scan_raw(
        &mut self,
        collection: &str,
        visit: &mut dyn FnMut(Result<RawDoc<'_>, StoreError>) -> bool,
    ) -> Result<(), StoreError> {
        self.flush()?;
        scan_raw(&self.view(), None, collection, visit)
    }

    /// See [`ReadTx::scan_numbered`]; sees this transaction's writes.
    pub fn scan_numbered(
        &mut self,
        collection: &str,
        visit: &mut dyn FnMut(NumberedRecord<'_>) -> bool,
    ) -> Result<(), StoreError> {
        self.flush()?;
        scan_numbered(&self.view(), None, collection, visit)
    }

    /// See [`ReadTx::get_numbered`]; the record is lent to `visit`.
    pub fn with_numbered(
        &self,
        collection: &str,
        id: &Value,
        visit: &mut dyn FnMut(u64, RawDoc<'_>),
    ) -> Result<bool, StoreError> {
        let view = self.view();
        let raw = get_numbered(&view, &self.store.hasher, None, collection, id)?;
        Ok(raw.map(|(num, raw)| visit(num, raw)).is_some())
    }

    /// See [`ReadTx::get_raw`]; sees this transaction's writes. The record
    /// borrows the transaction's write buffer, so it is lent to `visit`;
    /// returns whether there was one.
    pub fn with_raw(
        &self,
        collection: &str,
        id: &Value,
        visit: &mut dyn FnMut(RawDoc<'_>),
    ) -> Result<bool, StoreError> {
        let view = self.view();
        let raw = get_raw(&view, &self.store.hasher, None, collection, id)?;
        Ok(raw.map(visit).is_some())
    }

    fn coll_id_or_create(&mut self, name: &str) -> Result<u32, StoreError> {
        if let Some((_, id)) = self.colls.iter().find(|(n, _)| n == name) {
            return Ok(*id);
        }
        check_collection(name)?;
        if let Some(id) = coll_id(&self.kv, name)? {
            self.colls.push((name.to_string(), id));
            return Ok(id);
        }
        let id = self.next_coll;
        self.colls.push((name.to_string(), id));
        self.next_coll += 1;
        self.counters_dirty = true;
        self.kv.put(Table::Meta, &coll_key(name), &id.to_be_bytes())?;
        self.kv.put(Table::Meta, &coll_name_key(id), name.as_bytes())?;
        Ok(id)
    }

    /// A stamp for a local write; our own writes are always completely known.
    fn tick(&mut self) -> Result<Stamp, StoreError> {
        let stamp = Stamp {
            hlc: self.clock.tick(self.now_ms)?,
            peer: self.store.peer,
        };
        self.saw(stamp);
        Ok(stamp)
    }

    /// Records `stamp` in the version vector, noting which record changed.
    fn saw(&mut self, stamp: Stamp) {
        if self.vv.observe(stamp) {
            match stamp.peer == self.store.peer {
                true => self.own_dirty = true,
                false => self.others_dirty = true,
            }
        }
    }

    /// Records that every change up to `upto` has been received (see [`ChangeBatch`]).
    pub fn mark_synced(&mut self, upto: &VersionVector) {
        let own = self.store.peer;
        let others_move = upto.iter().any(|(p, h)| p != own && h > self.vv.get(p));
        self.own_dirty |= upto.get(own) > self.vv.get(own);
        self.others_dirty |= others_move;
        self.vv.join(upto);
    }

    fn check_id_len(collection: &str, id_bytes: &[u8]) -> Result<(), StoreError> {
        if id_bytes.len() > MAX_ID_BYTES {
            return Err(StoreError::InvalidId {
                collection: collection.to_string(),
                reason: "longer than 480 bytes encoded",
            });
        }
        Ok(())
    }

    /// Allocates a document number and adds it to the id index.
    fn allocate(&mut self, coll: u32, id_bytes: &[u8]) -> Result<u64, StoreError> {
        let num = self.next_doc;
        self.next_doc += 1;
        self.counters_dirty = true;
        let key = self.store.hasher.key(LEVEL_RECENT, coll, id_bytes);
        let mut bucket = self.kv.get(Table::Ids, &key)?.map(<[u8]>::to_vec).unwrap_or_default();
        bucket_push(&mut bucket, num);
        self.kv.put(Table::Ids, &key, &bucket)?;
        self.ids_recent += 1;
        Ok(num)
    }

    /// Merges slices of the id index's recent level until it holds fewer
    /// than [`RECENT_MAX`] entries: a commit that adds more than a slice
    /// (a bulk import) must not leave the level growing, or lookups of
    /// most documents would read both levels. At most one pass per slice
    /// the level holds, and none once a pass finds nothing to move.
    fn merge_recent_ids_over(&mut self) -> Result<(), StoreError> {
        let max_passes = self.ids_recent / (RECENT_MAX / MERGE_SLICES) + 1;
        for _ in 0..max_passes {
            if self.ids_recent < RECENT_MAX || self.merge_recent_ids()? == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Moves the next [`RECENT_MAX`]` / `[`MERGE_SLICES`] buckets of the id
    /// index's recent level, from a cursor that rotates through the hash
    /// space, into the main level, in key order (see `layout`). A slice of
    /// the hash space rewrites only that slice of the main level's pages, so
    /// a commit frees a fraction of the main level instead of all of it, and
    /// LMDB, which can reuse freed pages only two commits later, grows the
    /// file by that fraction.
    /// Returns the number of entries moved.
    fn merge_recent_ids(&mut self) -> Result<u64, StoreError> {
        let max_buckets = (RECENT_MAX / MERGE_SLICES) as usize;
        let cursor = match self.kv.get(Table::Meta, META_IDS_CURSOR)? {
            // Disk bytes: a cursor outside the recent level restarts it.
            Some(c) if c.first() == Some(&LEVEL_RECENT) && c.len() <= 64 => c.to_vec(),
            _ => vec![LEVEL_RECENT],
        };
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let end = [LEVEL_RECENT + 1];
        // From the cursor to the level's end, then around from its start.
        for (from, to) in [(&cursor[..], &end[..]), (&[LEVEL_RECENT][..], &cursor[..])] {
            if entries.len() >= max_buckets {
                break;
            }
            self.kv.scan(Table::Ids, from, Some(to), false, &mut |k, v| {
                entries.push((k.to_vec(), v.to_vec()));
                entries.len() < max_buckets
            })?;
        }
        let next = match entries.last() {
            // The smallest key after the last bucket taken.
            Some((k, _)) if entries.len() >= max_buckets => [&k[..], &[0]].concat(),
            _ => vec![LEVEL_RECENT],
        };
        let mut merged = 0u64;
        for (mut key, nums) in entries {
            merged += bucket_nums(&nums).count() as u64;
            self.kv.delete(Table::Ids, &key)?;
            key[0] = LEVEL_MAIN;
            let mut bucket = self.kv.get(Table::Ids, &key)?.map(<[u8]>::to_vec).unwrap_or_default();
            bucket.extend_from_slice(&nums);
            self.kv.put(Table::Ids, &key, &bucket)?;
        }
        self.kv.put(Table::Meta, META_IDS_CURSOR, &next)?;
        self.ids_recent = self.ids_recent.saturating_sub(merged);
        Ok(merged)
    }

    fn check_size(&self, collection: &str, id: &Value) -> Result<(), StoreError> {
        let limit = self.store.config.max_doc_bytes;
        if self.record.len() > limit {
            return Err(StoreError::DocumentTooLarge {
                collection: collection.to_string(),
                id: id.to_string(),
                size_bytes: self.record.len(),
                limit_bytes: limit,
            });
        }
        Ok(())
    }

    /// Encodes and writes a document, and moves its log entries forward.
    fn save(&mut self, collection: &str, at: &mut Located) -> Result<(), StoreError> {
        codec::encode_doc(&at.id_bytes, &at.doc, &mut self.record);
        self.check_size(collection, &at.id)?;
        if at.num == 0 {
            at.num = self.allocate(at.coll, &at.id_bytes)?;
        }
        self.put_doc(at.coll, at.num)?;
        for (peer, hlc) in at.doc.vv.iter() {
            let old = at.before.get(peer);
            if old == hlc {
                continue;
            }
            debug_assert!(old < hlc, "a document's version vector only grows");
            if old != Hlc::ZERO {
                self.put_log(log_key(peer, old, at.coll, at.num), false)?;
            }
            self.put_log(log_key(peer, hlc, at.coll, at.num), true)?;
        }
        let now = self.index_entries(collection, &at.id, &at.doc, at.num);
        self.reindex(&at.indexed, &now)?;
        at.indexed = now;
        self.note_change(collection, &at.id_bytes);
        Ok(())
    }

    /// Finds a document (live or not) by id.
    fn find(&self, collection: &str, id: &Value) -> Result<Option<Located>, StoreError> {
        let id = canonical_id(collection, id)?;
        let id_bytes = codec::encode_id(&id);
        self.find_encoded(collection, id, id_bytes)
    }

    /// [`WriteTx::find`] for an id already canonical and encoded.
    fn find_encoded(&self, collection: &str, id: Value, id_bytes: Vec<u8>) -> Result<Option<Located>, StoreError> {
        let Some(coll) = self
            .colls
            .iter()
            .find(|(n, _)| n == collection)
            .map(|c| c.1)
            .map_or_else(|| coll_id(&self.kv, collection), |c| Ok(Some(c)))?
        else {
            return Ok(None);
        };
        let view = self.view();
        let Some((num, record)) = locate(&view, &self.store.hasher, coll, &id_bytes)? else {
            return Ok(None);
        };
        let doc = decode_record(collection, record)?.1;
        let before = doc.vv.clone();
        let indexed = self.index_entries(collection, &id, &doc, num);
        Ok(Some(Located {
            coll,
            num,
            id,
            id_bytes,
            doc,
            before,
            indexed,
        }))
    }

    fn find_live(&self, collection: &str, id: &Value) -> Result<Option<Located>, StoreError> {
        Ok(self.find(collection, id)?.filter(|at| at.doc.exists()))
    }

    /// Inserts a document (a JSON object). Without `_id`, one is generated.
    pub fn insert(&mut self, collection: &str, doc: &Value, on_conflict: OnConflict) -> Result<Inserted, StoreError> {
        self.insert_with(collection, doc, on_conflict, &Inferred)
    }

    /// [`WriteTx::insert`] with declared field kinds.
    pub fn insert_with(
        &mut self,
        collection: &str,
        doc: &Value,
        on_conflict: OnConflict,
        schema: &dyn Schema,
    ) -> Result<Inserted, StoreError> {
        let invalid = |reason| StoreError::InvalidDocument {
            collection: collection.to_string(),
            reason,
        };
        let Value::Object(fields) = doc else {
            let reason = "a document must be an object".into();
            return Err(invalid(ValueError::Syntax {
                line: 1,
                column: 1,
                reason,
            }));
        };
        doc.validate().map_err(invalid)?;
        let id = match fields.get("_id") {
            Some(id) => canonical_id(collection, id)?,
            None => Value::String(self.store.ids.lock().unwrap_or_else(|e| e.into_inner()).uuid()),
        };
        let id_bytes = codec::encode_id(&id);
        Self::check_id_len(collection, &id_bytes)?;
        let coll = self.coll_id_or_create(collection)?;
        let found = self.find(collection, &id)?;
        if found.is_none() && schema.is_inferred() && on_conflict != OnConflict::Initial {
            return self.insert_fresh(collection, coll, id, &id_bytes, fields);
        }
        let live = found.as_ref().is_some_and(|at| at.doc.exists());
        match (live, on_conflict) {
            (true, OnConflict::Fail) => {
                return Err(StoreError::AlreadyExists {
                    collection: collection.to_string(),
                    id: id.to_string(),
                })
            }
            (true, OnConflict::Ignore) => return Ok(Inserted { id, written: false }),
            (_, OnConflict::Initial) if found.is_some() => return Ok(Inserted { id, written: false }),
            _ => {}
        }
        let mut at = found.unwrap_or_else(|| Located::new(coll, id.clone(), id_bytes));
        let stamp = match on_conflict {
            OnConflict::Initial => Stamp {
                hlc: Hlc(1),
                peer: self.store.peer,
            },
            _ => self.tick()?,
        };
        let mut ops = std::mem::take(&mut self.ops);
        ops.clear();
        let given = fields.iter().filter(|(k, _)| k.as_str() != "_id");
        match (live, on_conflict) {
            (true, OnConflict::Merge) => {
                given.for_each(|(k, v)| at.doc.ops_set(std::slice::from_ref(k), v, stamp, schema, &mut ops))
            }
            (true, OnConflict::MergeDiff) => {
                given.for_each(|(k, v)| at.doc.ops_set_diff(std::slice::from_ref(k), v, stamp, schema, &mut ops))
            }
            _ => {
                let body: BTreeMap<String, Value> = given.map(|(k, v)| (k.clone(), v.clone())).collect();
                at.doc.ops_replace(&body, stamp, schema, &mut ops);
            }
        }
        for op in &ops {
            at.doc.apply(op);
        }
        let wrote = !ops.is_empty();
        self.ops = ops;
        if wrote {
            self.saw(stamp);
            self.save(collection, &mut at)?;
        }
        Ok(Inserted { id, written: wrote })
    }

    /// A document whose id was never seen: encoded straight from its JSON.
    fn insert_fresh(
        &mut self,
        collection: &str,
        coll: u32,
        id: Value,
        id_bytes: &[u8],
        fields: &BTreeMap<String, Value>,
    ) -> Result<Inserted, StoreError> {
        let stamp = self.tick()?;
        codec::encode_fresh(id_bytes, fields, stamp, &mut self.record);
        self.check_size(collection, &id)?;
        let num = self.allocate(coll, id_bytes)?;
        self.put_doc(coll, num)?;
        let body = || {
            Some(
                fields
                    .iter()
                    .filter(|(k, _)| k.as_str() != "_id")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )
        };
        let now = self.index_entries_of(collection, &id, body, num);
        self.reindex(&[], &now)?;
        self.note_change(collection, id_bytes);
        self.put_log(log_key(stamp.peer, stamp.hlc, coll, num), true)?;
        Ok(Inserted { id, written: true })
    }

    /// Applies edits to a live document; returns false if there is none.
    pub fn update(&mut self, collection: &str, id: &Value, edits: &[Edit]) -> Result<bool, StoreError> {
        self.update_with(collection, id, edits, &Inferred)
    }

    /// [`WriteTx::update`] with declared field kinds (for `Edit::Set`).
    pub fn update_with(
        &mut self,
        collection: &str,
        id: &Value,
        edits: &[Edit],
        schema: &dyn Schema,
    ) -> Result<bool, StoreError> {
        for e in edits {
            let (Edit::Set { path, .. }
            | Edit::SetRegister { path, .. }
            | Edit::Unset { path }
            | Edit::Increment { path, .. }
            | Edit::Restart { path, .. }
            | Edit::Attach { path, .. }) = e;
            check_path(path)?;
            if let Edit::Set { value, .. } | Edit::SetRegister { value, .. } = e {
                value.validate().map_err(|reason| StoreError::InvalidDocument {
                    collection: collection.to_string(),
                    reason,
                })?;
            }
        }
        let Some(mut at) = self.find_live(collection, id)? else {
            return Ok(false);
        };
        let stamp = self.tick()?;
        let mut ops = Vec::new();
        for e in edits {
            ops.clear();
            let doc = &at.doc;
            match e {
                Edit::Set { path, value } => doc.ops_set(path, value, stamp, schema, &mut ops),
                Edit::SetRegister { path, value } => doc.ops_set(path, value, stamp, &Whole, &mut ops),
                Edit::Unset { path } => doc.ops_unset(path, stamp, &mut ops),
                Edit::Increment { path, by } => doc.ops_increment(path, *by, stamp, &mut ops),
                Edit::Restart { path, to } => doc.ops_restart(path, *to, stamp, &mut ops),
                Edit::Attach { path, token } => doc.ops_attach(path, token.clone(), stamp, &mut ops),
            }
            for op in &ops {
                at.doc.apply(op);
            }
        }
        self.save(collection, &mut at)?;
        Ok(true)
    }

    /// Deletes a live document, leaving a tombstone that syncs; returns false if there is none.
    pub fn delete(&mut self, collection: &str, id: &Value) -> Result<bool, StoreError> {
        let Some(mut at) = self.find_live(collection, id)? else {
            return Ok(false);
        };
        let stamp = self.tick()?;
        let mut ops = Vec::new();
        at.doc.ops_delete(stamp, &mut ops);
        for op in &ops {
            at.doc.apply(op);
        }
        self.save(collection, &mut at)?;
        Ok(true)
    }

    /// Removes a document from this replica only: no tombstone, nothing
    /// syncs. Works on damaged records too. Returns whether there was one.
    pub fn evict(&mut self, collection: &str, id: &Value) -> Result<bool, StoreError> {
        let id = canonical_id(collection, id)?;
        let Some(coll) = coll_id(&self.kv, collection)? else {
            return Ok(false);
        };
        let id_bytes = codec::encode_id(&id);
        let view = self.view();
        let Some((num, record)) = locate(&view, &self.store.hasher, coll, &id_bytes)? else {
            return Ok(false);
        };
        // Log entries of a damaged record cannot be found; readers skip dangling ones.
        let vv = decode_record(collection, record)
            .map(|(_, doc)| doc.vv)
            .unwrap_or_default();
        for (peer, hlc) in vv.iter() {
            self.put_log(log_key(peer, hlc, coll, num), false)?;
        }
        self.pending.docs.insert(doc_key(coll, num), None);
        for level in [LEVEL_RECENT, LEVEL_MAIN] {
            let key = self.store.hasher.key(level, coll, &id_bytes);
            let Some(bucket) = self.kv.get(Table::Ids, &key)?.map(<[u8]>::to_vec) else {
                continue;
            };
            let mut rest = Vec::new();
            for n in bucket_nums(&bucket).filter(|&n| n != num) {
                bucket_push(&mut rest, n);
            }
            if rest.is_empty() {
                self.kv.delete(Table::Ids, &key)?;
            } else {
                self.kv.put(Table::Ids, &key, &rest)?;
            }
        }
        // Local readers (live queries) must see the document go.
        self.note_change(collection, &id_bytes);
        Ok(true)
    }

    /// Removes the deleted documents whose deletion is older than the
    /// tombstone lifetime and that nothing concurrent brought back, at most
    /// `max_docs` of them; returns how many. Their version vectors join the
    /// *reaped horizon*: a peer that has not seen all of it is told to
    /// rebase instead of given changes (it could hold a document whose
    /// deletion it will never hear of). Scans every record: run it rarely.
    pub fn reap_tombstones(&mut self, max_docs: usize) -> Result<usize, StoreError> {
        let ttl_ms = self.store.config.tombstone_ttl_ms;
        let cutoff_ms = self.now_ms.saturating_sub(ttl_ms);
        let mut doomed: Vec<(String, Value, VersionVector)> = Vec::new();
        for collection in collections(&self.kv)? {
            self.scan_raw(&collection, &mut |raw| {
                let Ok(raw) = raw else { return true };
                let Ok((_, doc)) = decode_record(raw.collection(), raw.record()) else {
                    return true;
                };
                let old = doc.deleted.as_ref().is_some_and(|d| d.stamp.hlc.wall_ms() < cutoff_ms);
                if old && doc.render().is_none() {
                    if let Ok(id) = raw.id() {
                        doomed.push((raw.collection().to_string(), id, doc.vv.clone()));
                    }
                }
                doomed.len() < max_docs
            })?;
        }
        let mut horizon = reaped(&self.kv)?;
        for (collection, id, vv) in &doomed {
            self.evict(collection, id)?;
            let mut claimed = VersionVector::new();
            for (peer, hlc) in vv.iter() {
                let h = hlc.min(self.vv.get(peer));
                if h != Hlc::ZERO {
                    claimed.observe(Stamp { hlc: h, peer });
                }
            }
            horizon.join(&claimed);
        }
        if !doomed.is_empty() {
            self.kv.put(Table::Meta, META_REAPED, &packed::encode(&horizon))?;
        }
        Ok(doomed.len())
    }

    /// Rebasing on a peer whose state is `upto`: evicts (locally, without
    /// tombstones) every document of the collections `interest` wants whose
    /// every write `upto` covers, so that asking that peer afresh brings
    /// back exactly those it still has. Documents with writes it has not
    /// seen stay (they sync to it as usual). Returns how many went.
    pub fn evict_covered(&mut self, upto: &VersionVector, interest: &Interest) -> Result<usize, StoreError> {
        let mut covered: Vec<(String, Value)> = Vec::new();
        let mut partly: Vec<(String, Value, Vec<crate::doc::Op>)> = Vec::new();
        for collection in collections(&self.kv)? {
            if !interest.wants_collection(&collection) {
                continue;
            }
            self.scan_raw(&collection, &mut |raw| {
                let Ok(raw) = raw else { return true };
                if let Ok((_, doc)) = decode_record(raw.collection(), raw.record()) {
                    if upto.dominates(&doc.vv) {
                        if let Ok(id) = raw.id() {
                            covered.push((raw.collection().to_string(), id));
                        }
                    } else if let Ok(id) = raw.id() {
                        partly.push((raw.collection().to_string(), id, doc.delta_since(upto)));
                    }
                }
                true
            })?;
        }
        for (collection, id) in &covered {
            self.evict(collection, id)?;
        }
        // Partly covered: keep only the writes `upto` does not cover; the
        // fresh round brings back the rest, if the other side still has it.
        for (collection, id, ops) in partly {
            self.evict(&collection, &id)?;
            let coll = self.coll_id_or_create(&collection)?;
            let id_bytes = codec::encode_id(&id);
            let mut at = Located::new(coll, id, id_bytes);
            for op in &ops {
                at.doc.apply(op);
            }
            self.save(&collection, &mut at)?;
        }
        Ok(covered.len())
    }

    /// Checks a remote change before anything is applied: collection, id in
    /// canonical form, every op valid and no timestamp too far in the future.
    /// Returns the encoded id and the newest timestamp.
    fn check_change(&self, change: &Change) -> Result<(Vec<u8>, Hlc), StoreError> {
        let collection = change.collection.as_str();
        check_collection(collection)?;
        check_canonical_id(collection, &change.id)?;
        let mut newest = Hlc::ZERO;
        for op in &change.ops {
            op.validate().map_err(|reason| StoreError::InvalidChange {
                collection: collection.to_string(),
                reason,
            })?;
            self.clock.check(op.stamp().hlc, self.now_ms)?;
            newest = newest.max(op.stamp().hlc);
        }
        let id_bytes = codec::encode_id(&change.id);
        Self::check_id_len(collection, &id_bytes)?;
        Ok((id_bytes, newest))
    }

    /// Merges checked changes of one document: read once, written once.
    /// A stored document of a collection without indexes is merged in its
    /// encoded form (`codec::merge_encoded`); anything it declines, a new
    /// document, and collections with indexes (whose entries need the
    /// rendered document) go through the decoded [`Doc`].
    fn merge_doc<'c>(
        &mut self,
        first: &'c Change,
        rest: impl Iterator<Item = &'c Change>,
        id_bytes: Vec<u8>,
        newest: Hlc,
    ) -> Result<bool, StoreError> {
        let collection = first.collection.as_str();
        let coll = self.coll_id_or_create(collection)?;
        let ops: Vec<&Op> = std::iter::once(first).chain(rest).flat_map(|c| &c.ops).collect();
        if !self.indexes.iter().any(|d| d.collection == collection) {
            if let Some(changed) = self.merge_encoded(collection, coll, &first.id, &id_bytes, &ops, newest)? {
                return Ok(changed);
            }
        }
        let mut at = match self.find_encoded(collection, first.id.clone(), id_bytes.clone())? {
            Some(at) => at,
            None => Located::new(coll, first.id.clone(), id_bytes),
        };
        let mut changed = false;
        for op in ops {
            changed |= at.doc.apply(op);
        }
        if !changed {
            return Ok(false);
        }
        self.clock.observe(newest, self.now_ms)?;
        self.save(collection, &mut at)?;
        Ok(true)
    }

    /// [`WriteTx::merge_doc`] on the stored bytes; `None`: not stored, or
    /// declined (the caller merges the decoded document, which also reports
    /// damage). Writes what [`WriteTx::save`] would for a collection without
    /// indexes.
    fn merge_encoded(
        &mut self,
        collection: &str,
        coll: u32,
        id: &Value,
        id_bytes: &[u8],
        ops: &[&Op],
        newest: Hlc,
    ) -> Result<Option<bool>, StoreError> {
        let mut out = std::mem::take(&mut self.record);
        let merged = {
            let view = self.view();
            match locate(&view, &self.store.hasher, coll, id_bytes)? {
                None => None,
                Some((num, record)) => {
                    let (_, body) = split_checked(collection, record)?;
                    codec::merge_encoded(id_bytes, body, ops, &mut out).map(|m| (num, m))
                }
            }
        };
        self.record = out;
        let Some((num, m)) = merged else { return Ok(None) };
        if !m.changed {
            return Ok(Some(false));
        }
        self.clock.observe(newest, self.now_ms)?;
        self.check_size(collection, id)?;
        self.put_doc(coll, num)?;
        for (peer, hlc) in m.after.iter() {
            let old = m.before.get(peer);
            if old == hlc {
                continue;
            }
            debug_assert!(old < hlc, "a document's version vector only grows");
            if old != Hlc::ZERO {
                self.put_log(log_key(peer, old, coll, num), false)?;
            }
            self.put_log(log_key(peer, hlc, coll, num), true)?;
        }
        self.note_change(collection, id_bytes);
        Ok(Some(true))
    }

    /// Merges a change from another replica. All or nothing: an invalid op or
    /// a timestamp too far in the future refuses the whole change. Returns
    /// whether anything was new.
    pub fn apply(&mut self, change: &Change) -> Result<bool, StoreError> {
        let (id_bytes, newest) = self.check_change(change)?;
        self.merge_doc(change, std::iter::empty(), id_bytes, newest)
    }

    /// Merges many changes from other replicas, each document decoded and
    /// written once however many changes of it the batch holds. A change that
    /// is refused (see [`WriteTx::apply`]), or whose document would grow past
    /// the size limit, is reported by index and changes nothing; the others
    /// are applied. An `Err` is a storage failure: drop the transaction.
    pub fn apply_batch(&mut self, changes: &[Change]) -> Result<BatchOutcome, StoreError> {
        let mut out = BatchOutcome::default();
        // (collection, encoded id) -> (indexes of its changes, newest timestamp)
        type Groups<'c> = BTreeMap<(&'c str, Vec<u8>), (Vec<usize>, Hlc)>;
        let mut groups: Groups<'_> = BTreeMap::new();
        for (i, change) in changes.iter().enumerate() {
            match self.check_change(change) {
                Ok((id_bytes, newest)) => {
                    let g = groups.entry((change.collection.as_str(), id_bytes)).or_default();
                    g.0.push(i);
                    g.1 = g.1.max(newest);
                }
                Err(e) => out.refused.push((i, e)),
            }
        }
        for ((_, id_bytes), (members, newest)) in groups {
            let first = &changes[members[0]];
            let rest = members[1..].iter().map(|&i| &changes[i]);
            match self.merge_doc(first, rest, id_bytes, newest) {
                Ok(true) => out.applied += members.len(),
                Ok(false) => {}
                Err(e @ StoreError::DocumentTooLarge { .. }) => {
                    out.refused.extend(members.iter().map(|&i| (i, e.clone_too_large())));
                }
                Err(e) => return Err(e),
            }
        }
        out.refused.sort_by_key(|(i, _)| *i);
        Ok(out)
    }

    /// Makes every write of the transaction durable and visible, atomically.
    /// Returns what changed, for live queries.
    pub fn commit(mut self) -> Result<Committed, StoreError> {
        self.flush()?;
        let peer = self.store.peer;
        if self.own_dirty || self.others_dirty {
            let (vv, dirty, cache) = (&self.vv, self.others_dirty, Some(&self.store.vvs));
            put_split_vv(&mut self.kv, (META_VV, META_VV_OWN), vv, peer, dirty, cache)?;
        }
        if let Some(heads) = &self.heads {
            let others = (META_LOG_HEADS, META_LOG_HEADS_OWN);
            let (dirty, cache) = (self.heads_others_dirty, Some(&self.store.vvs));
            put_split_vv(&mut self.kv, others, heads, peer, dirty, cache)?;
        }
        if self.counters_dirty {
            self.merge_recent_ids_over()?;
            self.kv.put(Table::Meta, META_NEXT_DOC, &self.next_doc.to_be_bytes())?;
            let next_coll = self.next_coll as u64;
            self.kv.put(Table::Meta, META_NEXT_COLL, &next_coll.to_be_bytes())?;
            self.kv
                .put(Table::Meta, META_IDS_RECENT, &self.ids_recent.to_be_bytes())?;
        }
        self.kv.put(Table::Meta, META_HLC, &self.clock.last().0.to_be_bytes())?;
        let changed = std::mem::take(&mut self.changed);
        self.kv.commit()?;
        let changed = changed
            .into_iter()
            .map(|(coll, ids)| {
                let listed = ids.map_or(Changed::Many, |ids| {
                    Changed::Docs(ids.iter().filter_map(|b| codec::decode_id(b).ok()).collect())
                });
                (coll, listed)
            })
            .collect();
        Ok(Committed { changed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemKv;

    /// A commit larger than a merge slice (a bulk import) leaves the id
    /// index's recent level under its bound, as `locate` counts on (a
    /// lookup of most documents reads one level), and every document is
    /// still found.
    #[test]
    fn a_bulk_commit_leaves_the_recent_level_bounded() {
        let store = Store::open(MemKv::new(), StoreConfig::default(), PeerId(1), 1).expect("store");
        let id = |i: u64| Value::String(format!("{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let per_commit = 3 * RECENT_MAX / 2;
        for batch in 0..2 {
            let mut w = store.write(1_000 + batch).expect("write");
            for i in batch * per_commit..(batch + 1) * per_commit {
                let doc = Value::Object([("_id".to_string(), id(i))].into_iter().collect());
                w.insert("docs", &doc, OnConflict::Fail).expect("insert");
            }
            w.commit().expect("commit");
            let r = store.read().expect("read");
            let recent = meta_u64(&r.kv, META_IDS_RECENT).expect("meta").unwrap_or(0);
            assert!(recent < RECENT_MAX, "after commit {batch}: {recent} recent entries");
        }
        let r = store.read().expect("read");
        for i in 0..2 * per_commit {
            assert!(r.get_raw("docs", &id(i)).expect("get").is_some(), "document {i}");
        }
    }

    /// A remote change's id must already be canonical: strings and
    /// integers pass as they are; an integral float (canonically an
    /// integer) or an object id with a non-canonical part is refused, and
    /// nothing is written.
    #[test]
    fn remote_changes_need_canonical_ids() {
        let store = Store::open(MemKv::new(), StoreConfig::default(), PeerId(1), 1).expect("store");
        let op = Op::Set {
            path: vec!["v".to_string()],
            stamp: crate::hlc::Stamp {
                hlc: Hlc(1 << 20),
                peer: PeerId(2),
            },
            val: crate::doc::RegVal::Value(Value::Int(1)),
        };
        let change = |id: Value| Change {
            collection: "docs".to_string(),
            id,
            ops: vec![op.clone()],
        };
        let mut w = store.write(1_000).expect("write");
        for id in [Value::String("a".into()), Value::Int(7)] {
            assert!(w.apply(&change(id.clone())).expect("canonical"), "{id:?}");
        }
        let float = change(Value::Float(8.0));
        assert!(matches!(
            w.apply(&float),
            Err(StoreError::InvalidId {
                reason: "id is not in canonical form",
                ..
            })
        ));
        let object = Value::Object([("k".to_string(), Value::Float(2.0))].into_iter().collect());
        assert!(matches!(
            w.apply(&change(object.clone())),
            Err(StoreError::InvalidId {
                reason: "id is not in canonical form",
                ..
            })
        ));
        w.commit().expect("commit");
        let r = store.read().expect("read");
        assert!(r.get("docs", &Value::Int(7)).expect("get").is_some());
        assert!(r.get("docs", &Value::String("a".into())).expect("get").is_some());
        // The refused ids' canonical forms were not written either.
        let canonical = Value::Object([("k".to_string(), Value::Int(2))].into_iter().collect());
        assert!(r.get("docs", &canonical).expect("get").is_none());
        assert!(r.get("docs", &object).expect("get").is_none());
        assert!(r.get("docs", &Value::Int(8)).expect("get").is_none());
    }

    /// The change feed's decoded documents are found by their record's
    /// bytes: every read gives what decoding afresh gives, across an edit
    /// of a cached document, a snapshot older than a cached record, and
    /// batches larger than the cache (which skip it).
    #[test]
    fn the_change_feed_never_serves_a_stale_decoded_document() {
        let feed = |r: &ReadTx<'_, MemKv>| -> Vec<Change> {
            let cached = r
                .changes_since(&VersionVector::new(), None, usize::MAX)
                .expect("changes");
            let none = VersionVector::new();
            let fresh = changes_since(&r.kv, &none, None, usize::MAX, None, (None, None)).expect("changes");
            assert_eq!(cached.changes, fresh.changes, "cached and fresh decoding agree");
            cached.changes
        };
        let set = |w: &mut WriteTx<'_, MemKv>, i: usize, v: i64| {
            let doc = Value::from_json(&serde_json::json!({"_id": format!("d{i}"), "v": v})).expect("doc");
            w.insert("docs", &doc, OnConflict::Merge).expect("write");
        };
        let cached = |store: &Store<MemKv>| store.docs.0.lock().expect("lock").slots.len();
        let d0 = |c: &[Change]| c.iter().find(|c| c.id == Value::from("d0")).cloned();
        for docs in [DOC_CACHE_SLOTS / 2, 2 * DOC_CACHE_SLOTS] {
            let store = Store::open(MemKv::new(), StoreConfig::default(), PeerId(1), 1).expect("store");
            let mut w = store.write(1_000).expect("write");
            (0..docs).for_each(|i| set(&mut w, i, 0));
            w.commit().expect("commit");
            let old = store.read().expect("read");
            let before = feed(&old);
            assert_eq!(before.len(), docs);
            let small = docs <= DOC_CACHE_SLOTS;
            assert_eq!(cached(&store), if small { docs } else { 0 }, "{docs} documents");
            let mut w = store.write(2_000).expect("write");
            set(&mut w, 0, 1);
            w.commit().expect("commit");
            let after = feed(&store.read().expect("read"));
            assert_ne!(d0(&after), d0(&before), "the edit is in the second read");
            assert_eq!(feed(&old), before, "the older snapshot reads its own records");
        }
    }
}
