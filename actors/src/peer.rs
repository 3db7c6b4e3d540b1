//! [`Peer`]: the small peer as an app holds it.
//!
//! Opening a peer starts its actors (store, observer, merger, presence) under
//! supervision and hands back one cloneable handle. Every call is a message
//! to the actor that owns the state it touches; none panics on bad input,
//! and every failure is a [`PeerError`].

use crate::actor::{self, AskError, Escalation, Spec, WeakAddr};
use crate::conns;
use crate::error::PeerError;
use crate::latest;
use crate::link::{self, LinkModel, LinkStats};
use crate::links::{self, Links};
use crate::merger::{MergeStats, MergerActor, MergerMsg};
use crate::observer::{ObserverActor, ObserverMsg, PendingCommits, QueryEvent, Registry, Slot};
use crate::presence::{Link, LinkKind, PresenceActor, PresenceGraph};
use crate::session::{self, Remote, SessionActor, SessionMsg};
use crate::store::{self, AnyResult, Backend, StoreActor, StoreMsg, TxExec};
use crate::{rt, Addr};
use rhizome_engine::doc::Doc;
use rhizome_engine::dql;
use rhizome_engine::dql::eval::Params;
use rhizome_engine::dql::exec::Output;
use rhizome_engine::hlc::PeerId;
use rhizome_engine::mem::MemKv;
use rhizome_engine::sync::scope;
use rhizome_engine::sync::wire::SubscriptionSpec;
use rhizome_engine::value::Value;
use rhizome_engine::vv::VersionVector;
use rhizome_lmdb::{LmdbConfig, LmdbKv};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// Where a peer keeps its data.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Storage {
    /// An LMDB environment in this directory (created if missing). The
    /// peer's identity is stored there too, so reopening keeps it.
    Directory(PathBuf),
    /// In memory, gone when the peer closes (tests, simulations, caches).
    Memory,
}

/// Sync settings. Build from `SyncConfig::default()` and set fields.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncConfig {
    /// Whether this peer syncs at all (off: a purely local database, and
    /// connecting it is refused).
    pub enabled: bool,
    /// Most sync sessions kept at once over Bluetooth LE: the limit of the
    /// peer's connection planner ([`crate::conns::conns_config`]), whose
    /// decisions the link layer (the simulator's switchboard, a transport)
    /// carries out.
    pub max_sessions_ble: u32,
    /// Most sync sessions kept at once over peer-to-peer Wi-Fi, and over a
    /// LAN (each), likewise.
    pub max_sessions_wifi: u32,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            enabled: true,
            max_sessions_ble: 3,
            max_sessions_wifi: 4,
        }
    }
}

/// How to open a [`Peer`]: build with [`PeerConfig::directory`] or
/// [`PeerConfig::memory`], then set fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PeerConfig {
    /// Where the data lives.
    pub storage: Storage,
    /// Sync settings.
    pub sync: SyncConfig,
    /// Mailbox capacity of each actor, in messages.
    pub mailbox: usize,
    /// Added to the system clock when stamping writes (0 in an app): the
    /// simulator gives peers clocks that are minutes apart.
    pub clock_skew_ms: i64,
    /// How long a deleted document's tombstone is kept, from its deletion's
    /// HLC (default 7 days). A peer that returns after longer rebases: see
    /// ARCHITECTURE.md, "Tombstones".
    pub tombstone_ttl_ms: u64,
    /// How often tombstones past their lifetime are reaped (default hourly).
    pub reap_interval_ms: u64,
}

impl PeerConfig {
    /// A peer stored in `dir`.
    pub fn directory(dir: impl Into<PathBuf>) -> PeerConfig {
        PeerConfig {
            storage: Storage::Directory(dir.into()),
            sync: SyncConfig::default(),
            mailbox: 256,
            clock_skew_ms: 0,
            tombstone_ttl_ms: rhizome_engine::store::DEFAULT_TOMBSTONE_TTL_MS,
            reap_interval_ms: 60 * 60 * 1000,
        }
    }

    /// A peer held in memory.
    pub fn memory() -> PeerConfig {
        PeerConfig {
            storage: Storage::Memory,
            ..PeerConfig::directory("")
        }
    }
}

/// A subsystem of the peer, for fault injection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Subsystem {
    /// The store actor.
    Store,
    /// The observer (live query) actor.
    Observer,
}

struct Inner {
    id: PeerId,
    sync: SyncConfig,
    store: Addr<StoreActor>,
    observer: Addr<ObserverActor>,
    merger: Addr<MergerActor>,
    presence: Addr<PresenceActor>,
    /// Only the presence actor (and its factory) hold the sender, so
    /// receivers see the channel close when it stops.
    graph: latest::Receiver<PresenceGraph>,
    /// Live queries (so a dropped handle forgets its query at once).
    registry: Arc<Mutex<Registry>>,
    /// Commits that changed documents (sessions offer news on it).
    commits: latest::Receiver<CommitNews>,
    next_link: AtomicU64,
    /// Live sync sessions, stopped by `close`.
    sessions: Mutex<Vec<Addr<SessionActor>>>,
    /// The session over transports' links with each remote peer, and its
    /// links (see `Peer::attach_link`); ended ones are pruned when a link
    /// is attached.
    attached: Mutex<Attached>,
    /// This peer's sync subscriptions, as announced to other peers.
    subscriptions: Mutex<Vec<SubscriptionSpec>>,
    /// The subscriptions the store's version vector is complete for
    /// (persisted; `None`: the current ones). Sessions update it.
    claimed_for: session::ClaimedFor,
    /// Caught-up rounds of the sessions (for a connection planner), and a
    /// receiver feeds are cloned from.
    caught_up: (conns::CaughtUpSender, latest::Receiver<conns::CaughtUpLog>),
    failed: Failures,
}

/// An open small peer: a local-first document database that syncs with
/// nearby peers. Cheap to clone; every clone is the same peer.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rhizome_actors::PeerError> {
/// use rhizome_actors::{Peer, PeerConfig};
/// use serde_json::json;
///
/// let peer = Peer::open(PeerConfig::memory()).await?;
/// peer.store()
///     .execute("INSERT INTO tasks DOCUMENTS (:t)", json!({"t": {"_id": "t1", "title": "milk", "done": false}}))
///     .await?;
/// let open = peer.store().execute("SELECT * FROM tasks WHERE done = false", json!({})).await?;
/// assert_eq!(open.items[0]["title"], "milk");
/// peer.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Peer {
    inner: Arc<Inner>,
}

fn open_backend(storage: &Storage, memory: &Option<Arc<MemKv>>, ttl_ms: u64) -> Result<Box<dyn Backend>, PeerError> {
    let fresh = rt::entropy() | 1;
    match (storage, memory) {
        (Storage::Directory(dir), _) => {
            std::fs::create_dir_all(dir).map_err(|e| PeerError::InvalidInput {
                reason: format!("cannot create {}: {e}", dir.display()),
            })?;
            let kv = LmdbKv::open(dir, &LmdbConfig::default()).map_err(|e| PeerError::Store(e.into()))?;
            Ok(store::open_backend(kv, fresh, ttl_ms)?)
        }
        (_, Some(mem)) => Ok(store::open_backend(mem.clone(), fresh, ttl_ms)?),
        (Storage::Memory, None) => unreachable!("memory storage comes with its tables"),
    }
}

/// The session over transports' links with each remote, and its links.
type Attached = BTreeMap<PeerId, (WeakAddr<SessionActor>, Arc<Links>)>;

/// Escalations of the peer's actors, by actor name.
type Failures = Arc<Mutex<BTreeMap<String, Escalation>>>;

fn spec(name: &str, config: &PeerConfig, failed: &Failures) -> Spec {
    spec_then(name, config, failed, |_| {})
}

/// A supervised actor's spec whose escalation is recorded, then handed to
/// `then`.
fn spec_then(
    name: &str,
    config: &PeerConfig,
    failed: &Failures,
    then: impl FnOnce(&Escalation) + Send + 'static,
) -> Spec {
    let failed = failed.clone();
    Spec::new(name).mailbox(config.mailbox.max(1)).on_escalate(move |e| {
        then(&e);
        failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(e.actor.to_string(), e);
    })
}

impl Peer {
    /// Opens (or creates) a peer and starts its actors. Must be called
    /// inside a tokio (or madsim) runtime.
    pub async fn open(config: PeerConfig) -> Result<Peer, PeerError> {
        let failed: Failures = Arc::default();
        let memory = matches!(config.storage, Storage::Memory).then(|| Arc::new(MemKv::new()));
        let ttl_ms = config.tombstone_ttl_ms;
        let first = open_backend(&config.storage, &memory, ttl_ms)?;
        let id = first.peer();

        let pending = Arc::new(PendingCommits::default());
        // Filled once the observer actor exists; commits before that have
        // no live query to update. Weak: the observer holds the store, so a
        // strong handle back would keep both alive forever.
        let wake: Arc<Mutex<Option<WeakAddr<ObserverActor>>>> = Arc::default();
        let (commits_tx, commits) = latest::channel(CommitNews::default());
        let listener: store::CommitListener = {
            let (pending, wake) = (pending.clone(), wake.clone());
            Arc::new(move |c, from, moved| {
                commits_tx.send_modify(|n| n.push(from, moved));
                pending.add(c);
                let obs = wake
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .and_then(WeakAddr::upgrade);
                if let Some(obs) = obs {
                    // Full means a message is queued, and every message
                    // makes the observer look at the pending commits.
                    let _ = obs.try_tell(ObserverMsg::Wake);
                }
            })
        };
        let mut first = Some(first);
        let storage = config.storage.clone();
        let clock_skew_ms = config.clock_skew_ms;
        let store = actor::spawn(spec("store", &config, &failed), move |_| {
            let backend = match first.take() {
                Some(b) => b,
                None => open_backend(&storage, &memory, ttl_ms).map_err(|e| e.to_string())?,
            };
            Ok(StoreActor::new(backend, listener.clone(), clock_skew_ms))
        })
        .map_err(|reason| PeerError::InvalidInput { reason })?;

        let registry = Arc::new(Mutex::new(Registry::default()));
        let observer = {
            let (store, pending, reg) = (store.clone(), pending.clone(), registry.clone());
            // When the observer gives up, every live query ends with why.
            let ended = registry.clone();
            let give_up = move |e: &Escalation| {
                let e = e.clone();
                ended
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .end_all(|| Some(PeerError::Failed(e.clone())));
            };
            actor::spawn(spec_then("observer", &config, &failed, give_up), move |_| {
                Ok(ObserverActor::new(store.clone(), reg.clone(), pending.clone()))
            })
            .map_err(|reason| PeerError::InvalidInput { reason })?
        };
        *wake.lock().unwrap_or_else(|p| p.into_inner()) = Some(observer.downgrade());

        let merger = {
            let store = store.clone();
            actor::spawn(spec("merger", &config, &failed), move |_| {
                Ok(MergerActor::new(store.clone()))
            })
            .map_err(|reason| PeerError::InvalidInput { reason })?
        };
        let (graph_tx, graph) = latest::channel(PresenceGraph {
            me: id,
            ..PresenceGraph::default()
        });
        let presence = {
            let graph = Arc::new(graph_tx);
            actor::spawn(spec("presence", &config, &failed), move |_| {
                Ok(PresenceActor::new(graph.clone()))
            })
            .map_err(|reason| PeerError::InvalidInput { reason })?
        };
        let subscriptions = Mutex::new(load_subscriptions(&store).await?);
        let claimed_for = Arc::new(Mutex::new(load_claimed_for(&store).await?));
        spawn_reaper(store.downgrade(), config.reap_interval_ms);
        tracing::info!(peer = %id, "peer open");
        Ok(Peer {
            inner: Arc::new(Inner {
                id,
                sync: config.sync,
                store,
                observer,
                merger,
                presence,
                graph,
                registry,
                commits,
                next_link: AtomicU64::new(1),
                sessions: Mutex::default(),
                attached: Mutex::default(),
                subscriptions,
                claimed_for,
                caught_up: conns::caught_up_channel(),
                failed,
            }),
        })
    }

    /// Connects this peer with `other` in the same process and starts a
    /// sync session on each side (tests, simulations, and apps that run
    /// several peers). The link shows in both presence graphs until closed.
    pub async fn connect_in_process(&self, other: &Peer) -> Result<InProcessLink, PeerError> {
        self.connect(other, None).await
    }

    /// [`Peer::connect_in_process`] over a modelled link: frames are cut to
    /// its MTU and take its serialization time and latency (virtual time
    /// under the simulator).
    pub async fn connect_in_process_with(&self, other: &Peer, model: LinkModel) -> Result<InProcessLink, PeerError> {
        self.connect(other, Some(model)).await
    }

    /// Whether this peer may start a sync session with `remote`.
    fn can_sync_with(&self, remote: PeerId) -> Result<(), PeerError> {
        if remote == self.id() {
            return Err(PeerError::InvalidInput {
                reason: "a peer cannot connect to itself".into(),
            });
        }
        if self.inner.store.is_stopped() {
            return Err(PeerError::Stopped {
                subsystem: "store".into(),
            });
        }
        if !self.inner.sync.enabled {
            return Err(PeerError::InvalidInput {
                reason: format!("sync is disabled on peer {}", self.id()),
            });
        }
        Ok(())
    }

    async fn connect(&self, other: &Peer, model: Option<LinkModel>) -> Result<InProcessLink, PeerError> {
        self.can_sync_with(other.id())?;
        other.can_sync_with(self.id())?;
        let kind = model.map_or(LinkKind::InProcess, |m| m.kind);
        let (here, there): (Remote, Remote) = (Arc::default(), Arc::default());
        let a = self.start_session(other.id(), here.clone(), kind)?;
        let b = other.start_session(self.id(), there.clone(), kind)?;
        // Wired after both exist (each holds the other weakly: its own peer
        // owns it); each then starts the handshake.
        let _ = here.session.set(b.downgrade());
        let _ = there.session.set(a.downgrade());
        let stats = Arc::new(LinkStats::default());
        if let Some(model) = model {
            let _ = here.pipe.set(link::pipe(model, b.downgrade(), stats.clone()));
            let _ = there.pipe.set(link::pipe(model, a.downgrade(), stats.clone()));
        }
        for s in [&a, &b] {
            let _ = s.tell(SessionMsg::Start).await;
        }
        Ok(InProcessLink { ends: [a, b], stats })
    }

    /// Runs a sync session with `remote` over a transport's link that
    /// carries whole frames (byte vectors, see `docs/format.md`, "Sync
    /// frames"). The session's frames go to `outbound`, a bounded channel
    /// the transport drains onto the wire (a full channel holds the session
    /// back; a closed one takes the link down); frames from the wire go in
    /// through [`AttachedLink::deliver`].
    ///
    /// Several links to one remote share one session (the link manager,
    /// ARCHITECTURE.md): a link attached while a session with `remote`
    /// runs joins it, the session's frames go on the fastest live link
    /// (by `kind`), frames are taken from any of them, and when a link
    /// goes (its [`AttachedLink`] dropped or closed, or `outbound` found
    /// closed) the session carries on over the next one, asking again at
    /// once for what was in flight, without a new handshake. The session
    /// ends with its last link; when it ends by itself (refused, failed,
    /// the peer closed), every link's `outbound` closes and
    /// [`AttachedLink::closed`] returns.
    ///
    /// The transport vouches for `remote` (a QUIC link checks it against
    /// the remote's certificate); the session ends at once if the remote's
    /// handshake names another peer.
    pub async fn attach_link(
        &self,
        remote: PeerId,
        kind: LinkKind,
        outbound: tokio::sync::mpsc::Sender<Vec<u8>>,
    ) -> Result<AttachedLink, PeerError> {
        self.can_sync_with(remote)?;
        let link = Link {
            id: self.inner.next_link.fetch_add(1, Ordering::Relaxed),
            kind,
        };
        let watched = outbound.clone();
        let (session, links, present, joined) = self.join_or_start(remote, link.clone(), outbound)?;
        // Dropping the handle drops `guard`, which takes the link out (a
        // `Drop` cannot wait for the mailbox; the watcher can).
        let (guard, dropped) = tokio::sync::oneshot::channel::<()>();
        let watch = links::Watch {
            links: links.clone(),
            link: link.clone(),
            remote,
            session: session.downgrade(),
            presence: self.inner.presence.downgrade(),
        };
        links::watch(watch, watched, present.clone(), dropped);
        let first = match joined {
            true => SessionMsg::LinksChanged,
            false => SessionMsg::Start,
        };
        let _ = session.tell(first).await;
        Ok(AttachedLink {
            session,
            remote,
            link,
            links,
            present,
            _guard: guard,
        })
    }

    /// Adds `link` to the live session with `remote`, or starts one with
    /// it (then `false`): the session, its links, what tells when `link`
    /// leaves them, and whether it joined.
    #[allow(clippy::type_complexity)]
    fn join_or_start(
        &self,
        remote: PeerId,
        link: Link,
        outbound: tokio::sync::mpsc::Sender<Vec<u8>>,
    ) -> Result<(Addr<SessionActor>, Arc<Links>, links::Presence, bool), PeerError> {
        // Held while joining or starting: two links attached at once to a
        // remote without a session start one session, not two.
        let mut attached = self.inner.attached.lock().unwrap_or_else(|p| p.into_inner());
        attached.retain(|_, (_, l)| !l.is_ended());
        let mut outbound = outbound;
        if let Some((session, links)) = attached.get(&remote) {
            if let Some(session) = session.upgrade() {
                match links.add(link.clone(), outbound) {
                    Ok(present) => return Ok((session, links.clone(), present, true)),
                    Err(back) => outbound = back,
                }
            }
        }
        let links = Arc::new(Links::default());
        let Ok(present) = links.add(link.clone(), outbound) else {
            unreachable!("a new link set takes links");
        };
        let end: Remote = Arc::default();
        let _ = end.links.set(links.clone());
        let session = self.start_session(remote, end, link.kind)?;
        attached.insert(remote, (session.downgrade(), links.clone()));
        Ok((session, links, present, false))
    }

    fn start_session(
        &self,
        remote_peer: PeerId,
        remote: Remote,
        kind: LinkKind,
    ) -> Result<Addr<SessionActor>, PeerError> {
        let i = &self.inner;
        let link = Link {
            id: i.next_link.fetch_add(1, Ordering::Relaxed),
            kind,
        };
        let actors = (i.store.clone(), i.merger.clone(), i.presence.clone());
        // Held until the session is listed, so that a concurrent change of
        // subscriptions either is read here or reaches it
        // (`announce_subscriptions` takes this lock first too).
        let mut sessions = i.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let subscriptions = i.subscriptions.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let claimed_for = i.claimed_for.clone();
        let caught_up = i.caught_up.0.clone();
        let me = i.id;
        let give_up = session::on_give_up(remote.clone(), i.presence.downgrade(), remote_peer, link.id);
        // No restarts: a session's state belongs to its link, so a failed
        // session takes the link down (to be reconnected afresh).
        let spec = Spec::new(&format!("session {me}->{remote_peer}"))
            .mailbox(64)
            .restarts(0, 1)
            .on_escalate(give_up);
        let addr = actor::spawn(spec, move |_| {
            Ok(SessionActor::new(
                (me, remote_peer),
                link.clone(),
                remote.clone(),
                actors.clone(),
                subscriptions.clone(),
                claimed_for.clone(),
                caught_up.clone(),
            ))
        })
        .map_err(|reason| PeerError::InvalidInput { reason })?;
        sessions.retain(|s| !s.is_stopped());
        sessions.push(addr.clone());
        drop(sessions);
        // Offers local commits to the session; coalesced by the latest-value
        // channel, and ends with the session or the store. Weak, so it does
        // not keep the session alive.
        let (mut commits, session) = (i.commits.clone(), addr.downgrade());
        tokio::spawn(async move {
            let mut seen = commits.borrow_and_update().seq;
            while commits.changed().await.is_ok() {
                let offer = commits.borrow_and_update().offer(seen, remote_peer);
                seen = offer.0;
                let Some(moved) = offer.1 else { continue };
                let Some(s) = session.upgrade() else { break };
                if s.tell(SessionMsg::LocalCommit(moved)).await.is_err() {
                    break;
                }
            }
        });
        Ok(addr)
    }

    /// This peer's identity (chosen at creation, persisted with the data).
    pub fn id(&self) -> PeerId {
        self.inner.id
    }

    /// The sync settings the peer was opened with.
    pub fn sync_config(&self) -> &SyncConfig {
        &self.inner.sync
    }

    /// The document store: DQL statements, transactions, live queries.
    pub fn store(&self) -> StoreApi<'_> {
        StoreApi { peer: self }
    }

    /// Sync subscriptions: what this peer wants from others.
    pub fn sync(&self) -> SyncApi<'_> {
        SyncApi { peer: self }
    }

    /// Who this peer is connected to, now and as it changes.
    pub fn presence(&self) -> Presence {
        let mut rx = self.inner.graph.clone();
        // `next` waits for a change after this call, not before.
        rx.borrow_and_update();
        Presence { rx }
    }

    /// The remote peers this peer's sync sessions catch up with, from now
    /// on (a round ended with nothing left to exchange): what tells a
    /// connection planner ([`crate::conns::ConnDriver`]) a peer was met.
    /// Never holds a session back: a slow reader skips the oldest.
    pub fn caught_up(&self) -> conns::CaughtUpFeed {
        conns::CaughtUpFeed::new(self.inner.caught_up.1.clone())
    }

    /// Changes merged from each other peer so far.
    pub async fn merge_stats(&self) -> Result<BTreeMap<PeerId, MergeStats>, PeerError> {
        self.inner.merger.ask(MergerMsg::Stats).await.map_err(|e| self.error(e))
    }

    /// Closes the peer: its sync sessions end (links close), live queries
    /// end, queued work is finished, and the store is closed last. Other clones of the handle get
    /// [`PeerError::Stopped`] afterwards.
    pub async fn close(&self) {
        let sessions = std::mem::take(&mut *self.inner.sessions.lock().unwrap_or_else(|p| p.into_inner()));
        for s in &sessions {
            s.stop().await;
        }
        self.inner.observer.stop().await;
        self.inner.merger.stop().await;
        self.inner.presence.stop().await;
        self.inner.store.stop().await;
        tracing::info!(peer = %self.inner.id, "peer closed");
    }

    /// Fault injection for tests and simulations: makes the subsystem's
    /// actor panic on its next message. It is restarted from its durable
    /// state, as after a real bug.
    pub async fn inject_panic(&self, subsystem: Subsystem) -> Result<(), PeerError> {
        let sent = match subsystem {
            Subsystem::Store => self.inner.store.tell(StoreMsg::Panic).await.is_ok(),
            Subsystem::Observer => self.inner.observer.tell(ObserverMsg::Panic).await.is_ok(),
        };
        if sent {
            Ok(())
        } else {
            Err(PeerError::Stopped {
                subsystem: format!("{subsystem:?}").to_lowercase(),
            })
        }
    }

    fn error(&self, e: AskError) -> PeerError {
        let actor = match &e {
            AskError::Stopped { actor } | AskError::NoReply { actor } => actor.to_string(),
        };
        match self.inner.failed.lock().unwrap_or_else(|p| p.into_inner()).get(&actor) {
            Some(esc) => PeerError::Failed(esc.clone()),
            None => e.into(),
        }
    }
}

/// Converts app parameters (a JSON object, or null for none).
fn params(json: serde_json::Value) -> Result<Params, PeerError> {
    let v = Value::from_json(&json).map_err(|e| PeerError::InvalidInput {
        reason: format!("parameters: {e}"),
    })?;
    Ok(dql::params_from_json(&v)?)
}

/// What a statement returned.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueryResult {
    /// Result rows (`SELECT`, `RETURNING`, `EXPLAIN`, `SHOW`).
    pub items: Vec<serde_json::Value>,
    /// Ids of the documents a mutation changed.
    pub mutated_ids: Vec<serde_json::Value>,
}

impl QueryResult {
    /// The rows as values of an app type (through serde).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), rhizome_actors::PeerError> {
    /// # let peer = rhizome_actors::Peer::open(rhizome_actors::PeerConfig::memory()).await?;
    /// #[derive(serde::Deserialize)]
    /// struct Task { title: String, done: bool }
    ///
    /// use serde_json::json;
    /// peer.store().execute("INSERT INTO tasks DOCUMENTS ({'title': 'milk', 'done': false})", json!({})).await?;
    /// let tasks: Vec<Task> = peer.store().execute("SELECT * FROM tasks", json!({})).await?.items_as()?;
    /// assert_eq!(tasks[0].title, "milk");
    /// # Ok(())
    /// # }
    /// ```
    pub fn items_as<T: serde::de::DeserializeOwned>(&self) -> Result<Vec<T>, PeerError> {
        self.items
            .iter()
            .enumerate()
            .map(|(index, v)| {
                T::deserialize(v).map_err(|e| PeerError::Decode {
                    index,
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    fn from_output(out: Output) -> Result<QueryResult, PeerError> {
        let items = out
            .items
            .iter()
            .map(|i| i.value().map(Value::to_json))
            .collect::<Result<_, _>>()?;
        Ok(QueryResult {
            items,
            mutated_ids: out.mutated.iter().map(Value::to_json).collect(),
        })
    }
}

/// A live in-process link between two peers (see
/// [`Peer::connect_in_process`]).
pub struct InProcessLink {
    ends: [Addr<SessionActor>; 2],
    stats: Arc<LinkStats>,
}

impl InProcessLink {
    /// What crossed the link so far (counted on modelled links only).
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// Takes the link down: both sessions finish what they queued and stop,
    /// and the link leaves both presence graphs.
    pub async fn close(self) {
        for end in &self.ends {
            end.stop().await;
        }
    }
}

/// One transport link of a sync session (see [`Peer::attach_link`]).
/// Dropping it takes the link out of the session, which ends with its last
/// link.
pub struct AttachedLink {
    session: Addr<SessionActor>,
    remote: PeerId,
    link: Link,
    links: Arc<Links>,
    /// Closes when the link leaves the session.
    present: links::Presence,
    _guard: tokio::sync::oneshot::Sender<()>,
}

impl AttachedLink {
    /// The remote peer.
    pub fn remote(&self) -> PeerId {
        self.remote
    }

    /// This link (its id, as in the presence graph, and kind).
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Whether the session's frames go on this link now (it is the
    /// fastest live link to the remote).
    pub fn is_active(&self) -> bool {
        self.links.active().is_some_and(|l| l.id == self.link.id)
    }

    /// Hands the session a frame from the wire, waiting while its mailbox
    /// is full (back-pressure: the transport stops reading meanwhile).
    /// Fails once this link has left the session, or the session ended.
    pub async fn deliver(&self, frame: Vec<u8>) -> Result<(), PeerError> {
        let stopped = || PeerError::Stopped {
            subsystem: self.session.name().to_string(),
        };
        if !self.links.contains(self.link.id) {
            return Err(stopped());
        }
        self.session.tell(SessionMsg::Frame(frame)).await.map_err(|_| stopped())
    }

    /// Whether this link has left the session (or the session ended).
    pub fn is_closed(&self) -> bool {
        self.session.is_stopped() || !self.links.contains(self.link.id)
    }

    /// Returns when this link has left the session: the session ended
    /// (refused, failed, the peer closed), the transport's channel was
    /// found closed, or [`AttachedLink::close`].
    pub async fn closed(&self) {
        let mut present = self.present.clone();
        // `biased`: no random branch order (the simulator must replay).
        tokio::select! {
            biased;
            () = self.session.stopped() => {}
            // The value never changes: this returns when the link leaves.
            _ = present.changed() => {}
        }
    }

    /// Takes this link out of the session. If it was the last, the session
    /// ends: what it queued is handled, then it stops and the link leaves
    /// the presence graph.
    pub async fn close(self) {
        self.links.remove(self.link.id);
        if self.links.is_ended() {
            let _ = self.session.tell(SessionMsg::LinksChanged).await;
            self.session.stopped().await;
        }
    }
}

impl std::fmt::Debug for AttachedLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachedLink")
            .field("remote", &self.remote)
            .field("link", &self.link)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// The last commits that changed documents, as sessions see them.
///
/// A session does not offer the remote a commit that only merged that
/// remote's own batch: the remote holds every change in it, and its ask
/// would be an empty round (a quarter of all rounds with four sessions a
/// peer). Other commits are offered naming the writes they merged, joined
/// over the commits a session has not seen yet. Commits coalesce (the
/// channel keeps the latest value), so the last [`RECENT_COMMITS`] are
/// kept; a session that missed more offers news without naming it.
#[derive(Clone, Debug, Default)]
struct CommitNews {
    /// Commits so far.
    seq: u64,
    /// The last commits, oldest first: (number, source, writes merged).
    /// The source is the one remote whose batches the commit merged (None:
    /// a write of this peer's own, a reap, an eviction, or a merger's
    /// joined transaction that took batches of several remotes: each of
    /// them lacks the others' changes, so every session offers it); the
    /// writes are `None` when not known (this peer's own).
    recent: std::collections::VecDeque<(u64, Option<PeerId>, Option<VersionVector>)>,
}

/// Commits [`CommitNews`] remembers.
const RECENT_COMMITS: usize = 16;

impl CommitNews {
    fn push(&mut self, from: Option<PeerId>, moved: Option<VersionVector>) {
        self.seq += 1;
        if self.recent.len() == RECENT_COMMITS {
            self.recent.pop_front();
        }
        self.recent.push_back((self.seq, from, moved));
    }

    /// What a session with `remote` that saw commits up to `seen` offers:
    /// (the newest commit, `None` when there is nothing to offer, else the
    /// news: `Some(None)` when it cannot be named).
    fn offer(&self, seen: u64, remote: PeerId) -> (u64, Option<Option<VersionVector>>) {
        let missed = self.recent.iter().filter(|(seq, ..)| *seq > seen);
        if self.seq > seen && self.recent.front().is_none_or(|(first, ..)| *first > seen + 1) {
            return (self.seq, Some(None)); // forgotten: offer it blind
        }
        let mut news: Option<Option<VersionVector>> = None;
        for (_, _, moved) in missed.filter(|(_, from, _)| *from != Some(remote)) {
            news = match (news, moved) {
                (None, Some(m)) => Some(Some(m.clone())),
                (Some(Some(mut n)), Some(m)) => {
                    n.join(m);
                    Some(Some(n))
                }
                _ => Some(None),
            };
        }
        (self.seq, news)
    }
}

/// The store of a peer (see [`Peer::store`]).
pub struct StoreApi<'p> {
    peer: &'p Peer,
}

impl StoreApi<'_> {
    /// Runs one DQL statement; a mutation commits atomically on its own.
    /// `params` is a JSON object of `:name` parameters (or null).
    pub async fn execute(&self, dql: &str, params: serde_json::Value) -> Result<QueryResult, PeerError> {
        let params = self::params(params)?;
        let out = self
            .peer
            .inner
            .store
            .ask(|reply| StoreMsg::Execute {
                text: dql.to_string(),
                params,
                reply,
            })
            .await
            .map_err(|e| self.peer.error(e))??;
        QueryResult::from_output(out)
    }

    /// Every document of `collection` with its full CRDT state (field
    /// stamps, counters, deletions; deleted documents included), by `_id`
    /// as JSON text. For checking that replicas converged to the same
    /// metadata, not only the same JSON (the simulator does).
    pub async fn crdt_states(&self, collection: &str) -> Result<BTreeMap<String, Doc>, PeerError> {
        let collection = collection.to_string();
        self.peer
            .inner
            .store
            .ask(|reply| {
                StoreMsg::Read(Box::new(move |docs| {
                    reply.send(docs.and_then(|docs| {
                        let mut out = BTreeMap::new();
                        let mut failed = None;
                        docs.scan(&collection, &mut |raw| {
                            let state = raw.id().and_then(|id| Ok((id, raw.doc()?)));
                            match state {
                                Ok((id, doc)) => {
                                    out.insert(id.to_string(), doc);
                                }
                                Err(e) => failed = Some(e),
                            }
                            true
                        })?;
                        match failed {
                            Some(e) => Err(e.into()),
                            None => Ok(out),
                        }
                    }))
                }))
            })
            .await
            .map_err(|e| self.peer.error(e))?
    }

    /// Runs `f` in one write transaction: its statements see each other's
    /// writes, and they commit together when `f` returns `Ok`, or not at all
    /// when it returns `Err` (or a statement failed, or `f` panicked).
    ///
    /// `f` runs on the store actor and is synchronous, so it cannot hold the
    /// transaction across an `.await`; keep it short, other writers wait.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), rhizome_actors::PeerError> {
    /// # let peer = rhizome_actors::Peer::open(rhizome_actors::PeerConfig::memory()).await?;
    /// use serde_json::json;
    /// let n = peer.store().transaction(|tx| {
    ///     tx.execute("INSERT INTO tasks DOCUMENTS ({'_id': 'a', 'done': false})", json!({}))?;
    ///     tx.execute("UPDATE tasks SET done = true WHERE _id = 'a'", json!({}))?;
    ///     Ok(tx.execute("SELECT * FROM tasks WHERE done = true", json!({}))?.items.len())
    /// }).await?;
    /// assert_eq!(n, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn transaction<T, F>(&self, f: F) -> Result<T, PeerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, PeerError> + Send + 'static,
    {
        let run: store::TxFn = Box::new(move |exec: &mut dyn TxExec| -> AnyResult {
            let value = f(&mut Tx { exec })?;
            Ok(Box::new(value))
        });
        let out = self
            .peer
            .inner
            .store
            .ask(|reply| StoreMsg::Transaction { run, reply })
            .await
            .map_err(|e| self.peer.error(e))??;
        match out.downcast::<T>() {
            Ok(v) => Ok(*v),
            Err(_) => unreachable!("the closure's own type comes back"),
        }
    }

    /// Observes a `SELECT`: the returned [`LiveQuery`] yields the current
    /// result first, then a new result with its diff after every commit
    /// (local or merged from another peer) that changes it. Dropping it
    /// cancels the query.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), rhizome_actors::PeerError> {
    /// # let peer = rhizome_actors::Peer::open(rhizome_actors::PeerConfig::memory()).await?;
    /// use serde_json::json;
    /// let mut open = peer.store().observe("SELECT * FROM tasks WHERE done = false", json!({})).await?;
    /// assert!(open.next().await.unwrap()?.items.is_empty());
    /// peer.store().execute("INSERT INTO tasks DOCUMENTS ({'_id': 'a', 'done': false})", json!({})).await?;
    /// let event = open.next().await.unwrap()?;
    /// assert_eq!(event.diff.inserted, vec![0]);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn observe(&self, dql: &str, params: serde_json::Value) -> Result<LiveQuery, PeerError> {
        let params = self::params(params)?;
        let (id, slot) = self
            .peer
            .inner
            .observer
            .ask(|reply| ObserverMsg::Observe {
                text: dql.to_string(),
                params,
                reply,
            })
            .await
            .map_err(|e| self.peer.error(e))??;
        Ok(LiveQuery {
            id,
            slot,
            observer: self.peer.inner.observer.clone(),
            registry: self.peer.inner.registry.clone(),
        })
    }

    /// [`StoreApi::observe`] with a callback, called on a task of its own
    /// for every item of the stream. Dropping the returned handle cancels
    /// it; no call starts after that.
    pub async fn observe_with(
        &self,
        dql: &str,
        params: serde_json::Value,
        mut on_event: impl FnMut(Result<QueryEvent, PeerError>) + Send + 'static,
    ) -> Result<ObserverHandle, PeerError> {
        let mut live = self.observe(dql, params).await?;
        let slot = live.slot.clone();
        tokio::spawn(async move {
            while let Some(ev) = live.next().await {
                on_event(ev);
            }
        });
        Ok(ObserverHandle { slot })
    }
}

/// Statements inside [`StoreApi::transaction`].
pub struct Tx<'a> {
    exec: &'a mut dyn TxExec,
}

impl Tx<'_> {
    /// Runs one statement in the transaction; it sees the writes of the
    /// statements before it. An error aborts the transaction.
    pub fn execute(&mut self, dql: &str, params: serde_json::Value) -> Result<QueryResult, PeerError> {
        let params = self::params(params)?;
        QueryResult::from_output(self.exec.execute(dql, &params)?)
    }
}

/// A live query (see [`StoreApi::observe`]); also a [`futures_core::Stream`].
/// A slow consumer skips intermediate results but always gets the latest
/// with a correct diff from the one it took last.
///
/// An `Err` item says the query could not be brought up to date
/// ([`PeerError::LiveQuery`]: it keeps its last result and is retried at
/// the next commit) or that the peer's observer gave up
/// ([`PeerError::Failed`], the last item).
pub struct LiveQuery {
    id: u64,
    slot: Arc<Slot>,
    observer: Addr<ObserverActor>,
    registry: Arc<Mutex<Registry>>,
}

impl LiveQuery {
    /// The next event; `None` once the peer is closed.
    pub async fn next(&mut self) -> Option<Result<QueryEvent, PeerError>> {
        std::future::poll_fn(|cx| self.slot.poll_take(cx)).await
    }
}

impl futures_core::Stream for LiveQuery {
    type Item = Result<QueryEvent, PeerError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.slot.poll_take(cx)
    }
}

impl Drop for LiveQuery {
    fn drop(&mut self) {
        self.slot.close();
        self.registry.lock().unwrap_or_else(|p| p.into_inner()).remove(self.id);
        // If the mailbox is full the actor still finds the slot closed the
        // next time it has an event for it.
        let _ = self.observer.try_tell(ObserverMsg::Cancel(self.id));
    }
}

/// Keeps a callback observer alive (see [`StoreApi::observe_with`]).
pub struct ObserverHandle {
    slot: Arc<Slot>,
}

impl Drop for ObserverHandle {
    fn drop(&mut self) {
        // Ends the callback task's stream; the task drops its LiveQuery,
        // which cancels the query.
        self.slot.close();
    }
}

/// Sync subscriptions of a peer (see [`Peer::sync`]).
pub struct SyncApi<'p> {
    peer: &'p Peer,
}

/// A sync subscription: declares that this peer wants the documents
/// matching its query from other peers (a peer sends another only what
/// that peer subscribes to). It is persisted, so it outlives the handle and
/// restarts; cancel it to stop wanting them.
#[derive(Clone, Debug)]
pub struct Subscription {
    id: String,
    query: String,
    params: serde_json::Value,
    peer: Peer,
}

const SUBSCRIPTION_PREFIX: &str = "sub/";

impl Subscription {
    /// Stable id (same query and parameters, same id).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The query text.
    pub fn query(&self) -> &str {
        &self.query
    }

    /// Its parameters.
    pub fn params(&self) -> &serde_json::Value {
        &self.params
    }

    /// Stops pulling these documents (those already here stay).
    pub async fn cancel(self) -> Result<(), PeerError> {
        let name = format!("{SUBSCRIPTION_PREFIX}{}", self.id);
        let pinned = self.peer.pin_claimed_for().await?;
        self.peer.put_local(name, None).await?;
        self.peer.announce_subscriptions().await?;
        self.peer.settle_claimed_for(pinned).await
    }
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

/// Tombstones past their lifetime per reaping pass (bounds one write
/// transaction; the next pass takes the rest).
const REAP_BATCH_DOCS: usize = 10_000;

/// Reaps tombstones every `interval_ms` while the store lives.
fn spawn_reaper(store: WeakAddr<StoreActor>, interval_ms: u64) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(interval_ms.max(1))).await;
            let Some(store) = store.upgrade() else { return };
            match store
                .ask(|reply| StoreMsg::Reap {
                    max_docs: REAP_BATCH_DOCS,
                    reply,
                })
                .await
            {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(reaped = n, "tombstones reaped"),
                Ok(Err(e)) => tracing::warn!(error = %e, "reaping tombstones failed"),
                Err(_) => return,
            }
        }
    });
}

/// The local record naming what the version vector is complete for.
pub(crate) const CLAIMED_FOR_RECORD: &str = "claimed_for";

/// The subscriptions the store's version vector is complete for, if
/// recorded.
async fn load_claimed_for(store: &Addr<StoreActor>) -> Result<Option<Vec<SubscriptionSpec>>, PeerError> {
    let records = store
        .ask(|reply| StoreMsg::Locals {
            prefix: CLAIMED_FOR_RECORD.to_string(),
            reply,
        })
        .await??;
    Ok(records
        .into_iter()
        .find(|(name, _)| name == CLAIMED_FOR_RECORD)
        .map(|(_, v)| session::specs_from_value(&v)))
}

/// The persisted subscriptions of the peer whose store this is, as
/// announced to other peers (in id order).
async fn load_subscriptions(store: &Addr<StoreActor>) -> Result<Vec<SubscriptionSpec>, PeerError> {
    let records = store
        .ask(|reply| StoreMsg::Locals {
            prefix: SUBSCRIPTION_PREFIX.to_string(),
            reply,
        })
        .await??;
    Ok(records
        .into_iter()
        .filter_map(|(_, v)| {
            let o = v.as_object()?;
            Some(SubscriptionSpec {
                query: o.get("query")?.as_str()?.to_string(),
                params: o.get("params").map(Value::to_string).unwrap_or_else(|| "{}".into()),
            })
        })
        .collect())
}

impl Peer {
    async fn put_local(&self, name: String, value: Option<Value>) -> Result<(), PeerError> {
        self.inner
            .store
            .ask(|reply| StoreMsg::PutLocal { name, value, reply })
            .await
            .map_err(|e| self.error(e))?
    }

    /// Before the subscriptions change: if nothing records what the
    /// version vector is complete for, it is complete for the current ones.
    /// Returns them when that pin is provisional (see
    /// [`Peer::settle_claimed_for`]).
    async fn pin_claimed_for(&self) -> Result<Option<Vec<SubscriptionSpec>>, PeerError> {
        // A version vector with no other origin's entry claims nothing: it
        // is complete for any subscriptions. But a session may still record
        // a claim of a round asked for the current subscriptions until it
        // is told of the change, so pin them anyway, and drop the pin once
        // every session took the new ones if the vector still claims
        // nothing (`settle_claimed_for`).
        let vv = self
            .inner
            .store
            .ask(StoreMsg::VersionVector)
            .await
            .map_err(|e| self.error(e))??;
        let claims_nothing = vv.iter().all(|(peer, _)| peer == self.inner.id);
        let current = self
            .inner
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let pinned = {
            let mut claimed = self.inner.claimed_for.lock().unwrap_or_else(|p| p.into_inner());
            match claimed.as_ref() {
                Some(_) => None,
                None => {
                    *claimed = Some(current.clone());
                    Some(current)
                }
            }
        };
        match pinned {
            Some(specs) => {
                let value = session::specs_to_value(&specs);
                self.put_local(CLAIMED_FOR_RECORD.to_string(), Some(value)).await?;
                Ok(claims_nothing.then_some(specs))
            }
            None => Ok(None),
        }
    }

    /// After every session took the new subscriptions: a provisional pin
    /// (`pinned`) is dropped if the version vector still claims nothing
    /// (no round of the old subscriptions recorded a claim meanwhile) and
    /// no fresh round has recorded what the claims are complete for since.
    async fn settle_claimed_for(&self, pinned: Option<Vec<SubscriptionSpec>>) -> Result<(), PeerError> {
        let Some(pinned) = pinned else { return Ok(()) };
        let vv = self
            .inner
            .store
            .ask(StoreMsg::VersionVector)
            .await
            .map_err(|e| self.error(e))??;
        if !vv.iter().all(|(peer, _)| peer == self.inner.id) {
            return Ok(());
        }
        {
            let mut claimed = self.inner.claimed_for.lock().unwrap_or_else(|p| p.into_inner());
            if claimed.as_ref() != Some(&pinned) {
                return Ok(());
            }
            *claimed = None;
        }
        self.put_local(CLAIMED_FOR_RECORD.to_string(), None).await
    }

    /// Reloads the subscriptions and tells every live session; returns once
    /// each has taken them.
    async fn announce_subscriptions(&self) -> Result<(), PeerError> {
        let specs = load_subscriptions(&self.inner.store).await?;
        let sessions = {
            // A session being started reads the subscriptions under this
            // lock: it gets the new ones, or is listed and told them.
            let sessions = self.inner.sessions.lock().unwrap_or_else(|p| p.into_inner());
            *self.inner.subscriptions.lock().unwrap_or_else(|p| p.into_inner()) = specs.clone();
            sessions.clone()
        };
        for s in sessions {
            // A session that is gone records nothing more.
            let _ = s.ask(|reply| SessionMsg::Subscriptions(specs.clone(), reply)).await;
        }
        Ok(())
    }
}

impl SyncApi<'_> {
    /// Subscribes to the documents matching `dql` (a `SELECT * FROM coll
    /// [USE IDS ...] [WHERE ...]`) from other peers. Subscribing twice to
    /// the same query and parameters gives the same subscription.
    pub async fn subscribe(&self, dql: &str, params: serde_json::Value) -> Result<Subscription, PeerError> {
        let canonical = Value::from_json(&params).map_err(|e| PeerError::InvalidInput {
            reason: format!("parameters: {e}"),
        })?;
        let text = canonical.to_string();
        let spec = SubscriptionSpec {
            query: dql.to_string(),
            params: text.clone(),
        };
        scope::check(&spec).map_err(|e| PeerError::InvalidInput { reason: e.to_string() })?;
        let id = format!("{:016x}", fnv64(&[dql.as_bytes(), text.as_bytes()]));
        let mut record = BTreeMap::new();
        record.insert("query".to_string(), Value::String(dql.to_string()));
        record.insert("params".to_string(), canonical);
        let name = format!("{SUBSCRIPTION_PREFIX}{id}");
        let pinned = self.peer.pin_claimed_for().await?;
        self.peer.put_local(name, Some(Value::Object(record))).await?;
        self.peer.announce_subscriptions().await?;
        self.peer.settle_claimed_for(pinned).await?;
        Ok(Subscription {
            id,
            query: dql.to_string(),
            params,
            peer: self.peer.clone(),
        })
    }

    /// Every subscription of this peer (persisted ones included), by id.
    pub async fn subscriptions(&self) -> Result<Vec<Subscription>, PeerError> {
        let records = self
            .peer
            .inner
            .store
            .ask(|reply| StoreMsg::Locals {
                prefix: SUBSCRIPTION_PREFIX.to_string(),
                reply,
            })
            .await
            .map_err(|e| self.peer.error(e))??;
        Ok(records
            .into_iter()
            .filter_map(|(name, v)| {
                let o = v.as_object()?;
                Some(Subscription {
                    id: name.strip_prefix(SUBSCRIPTION_PREFIX)?.to_string(),
                    query: o.get("query")?.as_str()?.to_string(),
                    params: o.get("params").map(Value::to_json).unwrap_or_default(),
                    peer: self.peer.clone(),
                })
            })
            .collect())
    }
}

/// FNV-1a, 64 bits: a stable id for (query, parameters), the same on every
/// platform and version.
fn fnv64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(&[0xFF]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

/// The mesh as this peer sees it (see [`Peer::presence`]).
pub struct Presence {
    rx: latest::Receiver<PresenceGraph>,
}

impl Presence {
    /// The current graph.
    pub fn graph(&self) -> PresenceGraph {
        self.rx.current()
    }

    /// The next version of the graph (versions in between may be skipped);
    /// `None` once the peer is closed.
    pub async fn next(&mut self) -> Option<PresenceGraph> {
        self.rx.changed().await.ok()?;
        Some(self.rx.borrow_and_update())
    }

    /// The changes as a [`futures_core::Stream`].
    pub fn into_stream(self) -> PresenceStream {
        PresenceStream {
            state: PresenceState::Idle(self),
        }
    }
}

enum PresenceState {
    Idle(Presence),
    Waiting(Pin<Box<dyn Future<Output = (Presence, Option<PresenceGraph>)> + Send>>),
    Done,
}

/// Presence changes as a stream (see [`Presence::into_stream`]).
pub struct PresenceStream {
    state: PresenceState,
}

impl futures_core::Stream for PresenceStream {
    type Item = PresenceGraph;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PresenceGraph>> {
        loop {
            match std::mem::replace(&mut self.state, PresenceState::Done) {
                PresenceState::Idle(mut p) => {
                    self.state = PresenceState::Waiting(Box::pin(async move {
                        let g = p.next().await;
                        (p, g)
                    }));
                }
                PresenceState::Waiting(mut fut) => match fut.as_mut().poll(cx) {
                    Poll::Ready((p, Some(g))) => {
                        self.state = PresenceState::Idle(p);
                        return Poll::Ready(Some(g));
                    }
                    Poll::Ready((_, None)) => return Poll::Ready(None),
                    Poll::Pending => {
                        self.state = PresenceState::Waiting(fut);
                        return Poll::Pending;
                    }
                },
                PresenceState::Done => return Poll::Ready(None),
            }
        }
    }
}
