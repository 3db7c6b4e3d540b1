//! The Rhizome side of the suite: stores on durable LMDB (or the in-memory
//! backend where a workload says so), and a driver of two real sync
//! sessions (`engine::sync::session`, the state machines the actors run)
//! that carries their frames in waves and counts frames, bytes, waves and
//! the time spent serving and applying.
//!
//! The driver does what the actors do: a `Serve` reads the change log in
//! batches of [`BATCH_DOCS`] documents (`changes_for`) and hands them to the
//! session, which packs them into frames; an `Apply` joins the open
//! durable write transaction (`apply_batch`, `mark_synced` with the claim),
//! committed as [`Commits`] says: by default as the merger does it, up to
//! [`MAX_JOINED_BATCHES`] batches (and [`MAX_BATCH_CHANGES`] changes plus
//! one batch) a commit.

use crate::crdt::Exchange;
use rhizome_benches::{thread_cpu, FieldEdit};
use rhizome_engine::hlc::PeerId;
use rhizome_engine::kv::Kv;
use rhizome_engine::store::{Edit, OnConflict, Store, StoreConfig, WriteTx};
use rhizome_engine::sync::scope::Interest;
use rhizome_engine::sync::session::{Output, Session, SessionConfig};
use rhizome_engine::sync::wire::{self, Role, SubscriptionSpec};
use rhizome_engine::value::Value;
use rhizome_lmdb::{LmdbConfig, LmdbKv};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Documents per `Changes` batch, as the session actor reads them
/// (`rhizome_actors::session::BATCH_DOCS`).
pub const BATCH_DOCS: usize = 500;

/// Most batches the merger joins into one transaction.
pub const MAX_JOINED_BATCHES: usize = rhizome_actors::MAX_JOINED_BATCHES;

/// Changes past which the merger joins no further batch.
pub const MAX_BATCH_CHANGES: usize = rhizome_actors::MAX_BATCH_CHANGES;

/// When a side commits the batches it applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commits {
    /// One durable commit per batch (the merger before it joined batches).
    PerBatch,
    /// As the merger: the batches that have arrived, up to
    /// [`MAX_JOINED_BATCHES`] and [`MAX_BATCH_CHANGES`] changes plus one
    /// batch, in one commit (here every batch of a wave has arrived).
    Joined,
    /// One commit per round.
    PerRound,
}

/// The collection every workload writes.
pub const COLLECTION: &str = "tasks";

/// A durable store in `dir`.
pub fn open_lmdb(dir: &Path, peer: u64) -> Store<LmdbKv> {
    let kv = LmdbKv::open(dir, &LmdbConfig::default()).expect("open lmdb");
    Store::open(kv, StoreConfig::default(), PeerId(peer), peer).expect("open store")
}

/// Inserts `docs` in one transaction at `now_ms`.
pub fn insert<K: Kv>(store: &Store<K>, docs: &[Value], now_ms: u64) {
    let mut w = store.write(now_ms).expect("write");
    for d in docs {
        w.insert(COLLECTION, d, OnConflict::Fail).expect("insert");
    }
    w.commit().expect("commit");
}

/// The engine's edit for a field edit.
pub fn edit_of(e: &FieldEdit) -> (Value, Edit) {
    let edit = Edit::Set {
        path: vec![e.field.into()],
        value: Value::from_json(&e.value).expect("valid value"),
    };
    (Value::String(e.id.clone()), edit)
}

/// Applies `edits` in one transaction at `now_ms`.
pub fn edit<K: Kv>(store: &Store<K>, edits: &[FieldEdit], now_ms: u64) {
    let mut w = store.write(now_ms).expect("write");
    for e in edits {
        let (id, edit) = edit_of(e);
        assert!(w.update(COLLECTION, &id, &[edit]).expect("update"), "record exists");
    }
    w.commit().expect("commit");
}

/// The live documents as sorted JSON text, and the version vector: equal
/// on two replicas when they converged.
pub fn fingerprint<K: Kv>(store: &Store<K>) -> (Vec<String>, rhizome_engine::vv::VersionVector) {
    let r = store.read().expect("read");
    let mut out = Vec::new();
    r.scan(COLLECTION, &mut |d| {
        out.push(d.expect("doc").to_string());
        true
    })
    .expect("scan");
    out.sort_unstable();
    (out, r.version_vector().expect("vv"))
}

/// The subscription both sides hold.
fn subscriptions() -> Vec<SubscriptionSpec> {
    vec![SubscriptionSpec {
        query: format!("SELECT * FROM {COLLECTION}"),
        params: "{}".into(),
    }]
}

/// One side of a session: its store, its session, what it was asked for.
struct Side<'s, K: Kv> {
    store: &'s Store<K>,
    session: Session,
    interest: Arc<Interest>,
    remote_role: Role,
    now_ms: u64,
    serve: Duration,
    apply: Duration,
    apply_cpu: Duration,
    /// When to commit.
    commits: Commits,
    /// The open transaction, its batches' rounds, and its changes so far.
    pending: Option<(WriteTx<'s, K>, Vec<u64>, usize)>,
}

impl<K: Kv> Side<'_, K> {
    /// Carries out the session's outputs; returns the frames it sent.
    fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut sent = Vec::new();
        while let Some(out) = self.session.poll_output() {
            match out {
                Output::Send(frame) => sent.push(frame),
                Output::Established { role, .. } => self.remote_role = role,
                Output::Interest(i) => self.interest = i,
                Output::ReadVersionVector { round } => {
                    let vv = self.store.read().expect("read").version_vector().expect("vv");
                    self.session.send_request(round, &vv);
                }
                Output::Serve { round, since } => {
                    let t = Instant::now();
                    self.serve(round, &since);
                    self.serve += t.elapsed();
                }
                Output::Apply {
                    round,
                    changes,
                    claim,
                    last,
                } => {
                    let (t, cpu) = (Instant::now(), thread_cpu());
                    self.apply_batch(round, &changes, claim.as_ref(), last);
                    self.apply += t.elapsed();
                    self.apply_cpu += thread_cpu() - cpu;
                }
                // The suite offers no news mid-session: poke if it ever does.
                Output::ReadPush { .. } => {
                    let none = rhizome_engine::vv::VersionVector::new();
                    self.session.send_push(&[], &none, true);
                }
                Output::Rebase { .. } => panic!("no tombstones are reaped in the suite"),
                Output::Closed { refusal } => assert!(refusal.is_none(), "session refused: {refusal:?}"),
                // Timers guard lost frames; this link loses none.
                Output::SetTimer { .. } | Output::CaughtUp | Output::ClaimedFor(_) => {}
            }
        }
        sent
    }

    /// Merges one batch; commits (durably) as `commits` says.
    fn apply_batch(
        &mut self,
        round: u64,
        changes: &[rhizome_engine::codec::Change],
        claim: Option<&rhizome_engine::vv::VersionVector>,
        last: bool,
    ) {
        let (w, rounds, joined) = match self.pending.as_mut() {
            Some(p) => p,
            None => {
                self.now_ms += 1;
                let w = self.store.write(self.now_ms).expect("write");
                self.pending.insert((w, Vec::new(), 0))
            }
        };
        let outcome = w.apply_batch(changes).expect("apply");
        assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
        if let Some(claim) = claim {
            w.mark_synced(claim);
        }
        rounds.push(round);
        *joined += changes.len();
        let full = match self.commits {
            Commits::PerBatch => true,
            Commits::Joined => rounds.len() >= MAX_JOINED_BATCHES || *joined >= MAX_BATCH_CHANGES,
            Commits::PerRound => false,
        };
        // The merger commits what has arrived: at the end of a round here
        // (nothing more of it is in flight), or when the join is full.
        if full || last {
            let (w, rounds, _) = self.pending.take().expect("open");
            w.commit().expect("commit");
            for r in rounds {
                self.session.handle_applied(r, true);
            }
        }
    }

    fn serve(&mut self, round: u64, since: &rhizome_engine::vv::VersionVector) {
        let mut resume = None;
        loop {
            let batch = self
                .store
                .read()
                .expect("read")
                .changes_for(since, resume.as_ref(), BATCH_DOCS, &self.interest, self.remote_role)
                .expect("changes");
            assert!(!batch.behind_reaped);
            let last = batch.resume.is_none();
            let going = self
                .session
                .send_changes(round, &batch.changes, batch.upto, last)
                .expect("a batch fits a frame");
            resume = batch.resume;
            if last || !going {
                return;
            }
        }
    }
}

/// Runs two sessions between `a` and `b` until nothing is in flight; the
/// link delivers every frame, in waves (all frames sent in answer to one
/// wave form the next). Returns what it cost; `flights` counts the waves
/// after the handshake (`Hello` both ways at once is the first).
pub fn sync<K: Kv>(a: &Store<K>, b: &Store<K>, now_ms: u64) -> Exchange {
    sync_with(a, b, now_ms, Commits::Joined)
}

/// [`sync`], committing as `commits` says.
pub fn sync_with<K: Kv>(a: &Store<K>, b: &Store<K>, now_ms: u64, commits: Commits) -> Exchange {
    let start = Instant::now();
    fn side<K: Kv>(store: &Store<K>, now_ms: u64, commits: Commits) -> Side<'_, K> {
        let config = SessionConfig {
            me: store.peer(),
            role: Role::SmallPeer,
            subscriptions: subscriptions(),
            claimed_for: None,
            max_frame_bytes: wire::DEFAULT_MAX_FRAME_BYTES,
            retry_ms: 1_000,
            stall_ms: 10_000,
        };
        Side {
            store,
            session: Session::new(config, 0),
            interest: Arc::new(Interest::none()),
            remote_role: Role::SmallPeer,
            now_ms,
            serve: Duration::ZERO,
            apply: Duration::ZERO,
            apply_cpu: Duration::ZERO,
            commits,
            pending: None,
        }
    }
    let mut sides = [side(a, now_ms, commits), side(b, now_ms, commits)];
    let mut ex = Exchange::default();
    // Frames in flight to side 0 and to side 1.
    let mut inflight: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    for (i, s) in sides.iter_mut().enumerate() {
        s.session.handle_connected();
        inflight[1 - i] = s.drain();
    }
    let mut waves = 0;
    // Bounded: a sync of two stores takes a handful of waves.
    while inflight.iter().any(|f| !f.is_empty()) && waves < 1_000 {
        waves += 1;
        let arriving = std::mem::take(&mut inflight);
        for (to, frames) in arriving.into_iter().enumerate() {
            ex.messages += frames.len();
            ex.bytes[1 - to] += frames.iter().map(Vec::len).sum::<usize>();
            for f in frames {
                let (t, cpu) = (Instant::now(), thread_cpu());
                sides[to].session.handle_frame(&f);
                // Unpacking `Changes` happens here.
                sides[to].apply += t.elapsed();
                sides[to].apply_cpu += thread_cpu() - cpu;
                inflight[1 - to].extend(sides[to].drain());
            }
        }
    }
    assert!(waves < 1_000, "the sessions did not quiesce");
    // The first wave carried the hellos.
    ex.flights = waves - 1;
    ex.produce = sides[0].serve + sides[1].serve;
    ex.apply = sides[0].apply + sides[1].apply;
    ex.apply_cpu = sides[0].apply_cpu + sides[1].apply_cpu;
    assert!(sides.iter().all(|s| s.pending.is_none()), "every round ended");
    ex.total = start.elapsed();
    ex
}
