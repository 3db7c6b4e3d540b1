//! A mesh of real peers on the plane: opening, moving, crashing and
//! restarting them, telling the switchboard ([`crate::board`]) what their
//! radios reach (each peer's connection planner picks whom to link with,
//! over modelled links with faults), writing through them, and checking
//! the invariants at the end.
//!
//! Writes go through a transaction that reads the field before setting it,
//! so the [`Ledger`] knows which earlier value each write replaced: a value
//! some later write replaced must never be the final one (the later write
//! is causally after it, so it wins under hybrid-logical-clock order).

use crate::board::{Board, BoardStats, SharedBoard};
use crate::plane::{self, Node, Pos, Radio, Wall};
use crate::Rng;
use rhizome_actors::{Direction, Faults, InProcessLink, LinkKind, MergeStats, Peer, PeerConfig, PeerError};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Collection every scenario writes to.
pub const COLLECTION: &str = "docs";
/// Documents the scenarios share (`d0` .. `d3`). The first write to one
/// creates it; peers creating one concurrently keep both writers' fields.
/// (Not default data inserted on every peer: each peer's insert would be a
/// change of its own, and every peer one more entry of every version
/// vector the protocol sends.)
pub const DOCS: usize = 4;
/// Fields the writers set.
pub const FIELDS: [&str; 3] = ["a", "b", "c"];
/// Most peers given a live query (spread evenly over the mesh).
pub const MAX_OBSERVED: usize = 64;
/// Most distinct writers of a `storm` run (drawn from the seed; see
/// [`Mesh::any_writer`]). Every writer is one entry of every version
/// vector the protocol sends, so a mesh where thousands write would
/// measure version vectors, not the mesh. The other scenarios' bursts
/// write from any up peer, their writes capped per burst (so at most
/// 144 writers in `partition-heal`: 135 distinct at 1,000 peers, seed 7).
pub const MAX_WRITERS: usize = 16;

/// Longest wait between two comparisons of every peer's documents while
/// settling, in ms (see [`Mesh::settle`]).
pub const SETTLE_CHECK_MS: u64 = 1_000;

/// Virtual time a new mesh is given for its planners' first dials.
pub const WARM_UP_MS: u64 = 1_000;

/// Every acknowledged write, per (document, field).
#[derive(Debug, Default)]
pub struct Ledger {
    /// Values written, per (document, field).
    written: BTreeMap<(String, String), BTreeSet<String>>,
    /// Values a later write read and replaced, per (document, field).
    replaced: BTreeMap<(String, String), BTreeSet<String>>,
    /// The last value written, per (document, field), in the order the
    /// writes were acknowledged.
    last: BTreeMap<(String, String), String>,
    /// Writes that did not see the last acknowledged value of their field
    /// (concurrent writes: conflicts).
    pub conflicts: u64,
    /// Writes acknowledged.
    pub writes: u64,
    /// Values handed out (each write's value is unique).
    issued: u64,
    /// Writes made while the mesh was split.
    pub split_writes: u64,
    /// Whether the mesh is split now (set by the scenario).
    pub split: bool,
    /// Bytes of the changes written (the encoding of one field write each).
    pub change_bytes: u64,
}

impl Ledger {
    fn record(&mut self, id: &str, field: &str, value: String, before: Option<String>) {
        let key = (id.to_string(), field.to_string());
        if before.as_ref() != self.last.get(&key) {
            self.conflicts += 1;
        }
        if let Some(b) = before {
            self.replaced.entry(key.clone()).or_default().insert(b);
        }
        self.written.entry(key.clone()).or_default().insert(value.clone());
        self.last.insert(key, value);
        self.writes += 1;
        if self.split {
            self.split_writes += 1;
        }
    }

    /// Writes missing from `docs` (one peer's documents): fields whose value
    /// is not one written, or one a later write replaced.
    pub fn lost_in(&self, docs: &[Value]) -> u64 {
        let mut lost = 0;
        for ((id, field), values) in &self.written {
            let doc = docs.iter().find(|d| d["_id"] == json!(id));
            let got = doc.and_then(|d| d.get(field)).and_then(Value::as_str);
            let replaced = self.replaced.get(&(id.clone(), field.clone()));
            match got {
                Some(v) if values.contains(v) && !replaced.is_some_and(|r| r.contains(v)) => {}
                _ => {
                    if std::env::var_os("RHIZOME_SIM_DEBUG").is_some() {
                        eprintln!(
                            "lost: {id}.{field} = {got:?} (last written {:?}; replaced: {})",
                            self.last.get(&(id.clone(), field.clone())),
                            got.is_some_and(|v| replaced.is_some_and(|r| r.contains(v)))
                        );
                    }
                    lost += 1
                }
            }
        }
        lost
    }
}

/// Shared ledger (writer tasks hold it too).
pub type SharedLedger = Arc<Mutex<Ledger>>;

/// Peer `peer` (index `who`) sets `field` of `id` to a fresh value, reading
/// the value it replaces in the same transaction; records it.
pub async fn write(peer: &Peer, ledger: &SharedLedger, who: usize, id: &str, field: &str) -> Result<(), PeerError> {
    let n = {
        let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
        l.issued += 1;
        l.issued
    };
    let value = format!("p{who}w{n}");
    let (id_s, field_s, v) = (id.to_string(), field.to_string(), value.clone());
    let before = peer
        .store()
        .transaction(move |tx| {
            let found = tx.execute(
                &format!("SELECT * FROM {COLLECTION} WHERE _id = :id"),
                json!({ "id": id_s }),
            )?;
            let before = found
                .items
                .first()
                .and_then(|d| d.get(&field_s))
                .and_then(Value::as_str)
                .map(str::to_string);
            if found.items.is_empty() {
                tx.execute(
                    &format!("INSERT INTO {COLLECTION} DOCUMENTS (:d)"),
                    json!({ "d": { "_id": id_s, field_s: v } }),
                )?;
            } else {
                tx.execute(
                    &format!("UPDATE {COLLECTION} SET {field_s} = :v WHERE _id = :id"),
                    json!({ "v": v, "id": id_s }),
                )?;
            }
            Ok(before)
        })
        .await?;
    let size = crate::bound::change_bytes(id, field, &value);
    let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
    l.change_bytes += size;
    l.record(id, field, value, before);
    Ok(())
}

/// How a mesh is built.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Peers.
    pub peers: usize,
    /// Where peers keep their data (one folder each): LMDB; `None`: memory.
    pub root: Option<PathBuf>,
    /// Chance a peer has Wi-Fi, in parts per million.
    pub wifi_ppm: u32,
    /// Peers `0 .. lan_site` share a LAN.
    pub lan_site: usize,
    /// Largest clock skew of a peer, either way, in milliseconds.
    pub max_skew_ms: i64,
    /// Peers on a line (each in range of its neighbours only) instead of
    /// scattered.
    pub line: bool,
    /// Peers in a square room of this side, in meters, instead of
    /// scattered (a crowd: a small room has everyone in range).
    pub room_m: Option<f64>,
}

impl Setup {
    /// `peers` in-memory peers scattered on the plane.
    pub fn new(peers: usize) -> Setup {
        Setup {
            peers,
            root: None,
            wifi_ppm: 700_000,
            lan_site: 0,
            max_skew_ms: 0,
            line: false,
            room_m: None,
        }
    }
}

/// Traffic of links, counted when they close and summed with live ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes on the air.
    pub bytes: u64,
    /// Frames (protocol messages).
    pub frames: u64,
    /// Chunks lost.
    pub lost_chunks: u64,
    /// Frames discarded for a lost chunk.
    pub dropped_frames: u64,
    /// Frames delivered twice.
    pub duplicated: u64,
    /// Frames delivered out of order.
    pub reordered: u64,
    /// Delay spikes.
    pub spikes: u64,
}

impl Traffic {
    pub(crate) fn add(&mut self, link: &InProcessLink) {
        let s = link.stats();
        self.bytes += s.bytes();
        self.frames += s.frames();
        self.lost_chunks += s.lost_chunks();
        self.dropped_frames += s.dropped_frames();
        self.duplicated += s.duplicated_frames();
        self.reordered += s.reordered_frames();
        self.spikes += s.spikes();
    }
}

/// The last result a peer's live query gave.
type Seen = Arc<Mutex<Option<Vec<Value>>>>;

/// Peers, where they are, and the links between them.
pub struct Mesh {
    /// Draws of the mesh (placement, writers).
    rng: Rng,
    /// Each peer's position (`None`: down or away) and radios.
    pub nodes: Vec<Node>,
    /// Where each peer started (connected positions).
    pub home: Vec<Pos>,
    peers: Vec<Option<Peer>>,
    dirs: Vec<Option<PathBuf>>,
    skew: Vec<i64>,
    /// Links, and the peers' connection drivers.
    board: SharedBoard,
    /// Partition lines now.
    pub walls: Vec<Wall>,
    /// Faults new radio links get.
    pub faults: Faults,
    /// The writes.
    pub ledger: SharedLedger,
    observed: BTreeMap<usize, Seen>,
    /// The peers that write.
    writers: Vec<usize>,
}

impl Mesh {
    /// Opens the peers of `setup`, places them and tells their drivers who
    /// is in range.
    pub async fn open(setup: &Setup, seed: u64) -> Result<Mesh, PeerError> {
        let mut rng = Rng::new(seed ^ 0x6D65_7368);
        let n = setup.peers;
        let radios: Vec<Radio> = (0..n)
            .map(|i| Radio {
                wifi: rng.chance(setup.wifi_ppm),
                site: (i < setup.lan_site).then_some(0),
            })
            .collect();
        let home = match (setup.line, setup.room_m) {
            (true, _) => line(&radios),
            (false, Some(side)) => (0..n)
                .map(|_| Pos {
                    x: rng.unit() * side,
                    y: rng.unit() * side,
                })
                .collect(),
            (false, None) => scatter(&radios, &mut rng),
        };
        let skew: Vec<i64> = (0..n)
            .map(|_| match setup.max_skew_ms {
                0 => 0,
                m => rng.below(2 * m as u64 + 1) as i64 - m,
            })
            .collect();
        let dirs: Vec<Option<PathBuf>> = (0..n)
            .map(|i| setup.root.as_ref().map(|r| r.join(format!("peer{i}"))))
            .collect();
        let nodes = home
            .iter()
            .zip(&radios)
            .map(|(p, r)| Node {
                pos: Some(*p),
                radio: *r,
            })
            .collect();
        let mut mesh = Mesh {
            rng,
            nodes,
            home,
            peers: vec![None; n],
            dirs,
            skew,
            board: Board::start(n, seed),
            walls: Vec::new(),
            faults: Faults::none(),
            ledger: SharedLedger::default(),
            observed: BTreeMap::new(),
            writers: Vec::new(),
        };
        let mut pool: Vec<usize> = (0..n).collect();
        for k in 0..n.min(MAX_WRITERS) {
            let pick = k + mesh.rng.below((n - k) as u64) as usize;
            pool.swap(k, pick);
        }
        pool.truncate(MAX_WRITERS);
        pool.sort_unstable();
        mesh.writers = pool;
        let every = n.div_ceil(MAX_OBSERVED).max(1);
        for i in 0..n {
            mesh.start(i, i % every == 0).await?;
        }
        mesh.relink().await?;
        // The first dials take up to 600 ms (BLE): let them land, so a run
        // starts from a linked mesh as it would after peers met.
        tokio::time::sleep(Duration::from_millis(WARM_UP_MS)).await;
        Ok(mesh)
    }

    /// The widest clock difference between two peers, in ms.
    pub fn skew_spread_ms(&self) -> u64 {
        let (lo, hi) = (self.skew.iter().min(), self.skew.iter().max());
        lo.zip(hi).map_or(0, |(lo, hi)| hi.abs_diff(*lo))
    }

    /// Number of peers (up or down).
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the mesh has no peers.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Peer `i`, if up.
    pub fn peer(&self, i: usize) -> Option<&Peer> {
        self.peers[i].as_ref()
    }

    /// Opens peer `i` from its data; with `observe`, gives it a live query
    /// of every document.
    async fn start(&mut self, i: usize, observe: bool) -> Result<(), PeerError> {
        let mut config = match &self.dirs[i] {
            Some(d) => PeerConfig::directory(d),
            None => PeerConfig::memory(),
        };
        config.clock_skew_ms = self.skew[i];
        let peer = Peer::open(config).await?;
        // Every peer wants every document of the collection (a peer sends
        // another only what it subscribes to).
        peer.sync()
            .subscribe(&format!("SELECT * FROM {COLLECTION}"), json!({}))
            .await?;
        if observe || self.observed.contains_key(&i) {
            let seen: Seen = Arc::default();
            let mut live = peer
                .store()
                .observe(&format!("SELECT * FROM {COLLECTION} ORDER BY _id"), json!({}))
                .await?;
            let last = seen.clone();
            tokio::spawn(async move {
                while let Some(ev) = live.next().await {
                    if let Ok(ev) = ev {
                        *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(ev.json_items());
                    }
                }
            });
            self.observed.insert(i, seen);
        }
        self.board.lock().await.peer_up(i, peer.clone())?;
        self.peers[i] = Some(peer);
        Ok(())
    }

    /// Peer `i` goes down: its links are cut, it is closed (on disk its
    /// acknowledged writes survive; in memory it loses everything).
    pub async fn crash(&mut self, i: usize) {
        self.board.lock().await.peer_down(i).await;
        if let Some(p) = self.peers[i].take() {
            p.close().await;
        }
        self.nodes[i].pos = None;
    }

    /// Peer `i` comes back from its data at `pos`, with a fresh driver told
    /// who is in range.
    pub async fn restart(&mut self, i: usize, pos: Pos) -> Result<(), PeerError> {
        if self.peers[i].is_none() {
            self.start(i, false).await?;
        }
        self.nodes[i].pos = Some(pos);
        self.relink().await
    }

    /// Peer `i` walks away out of everyone's range (up, but unlinked).
    pub async fn leave(&mut self, i: usize) {
        self.nodes[i].pos = None;
        self.apply_reach().await;
    }

    /// Tells the switchboard what the radios reach now (see
    /// [`plane::reach`]): links out of reach break, drivers hear of peers
    /// found and lost, and dial whom they choose.
    pub async fn relink(&mut self) -> Result<(), PeerError> {
        self.apply_reach().await;
        Ok(())
    }

    async fn apply_reach(&mut self) {
        let reach = plane::reach(&self.nodes, &self.walls);
        self.board.lock().await.set_reach(reach).await;
    }

    /// Links now, by peer pair.
    pub async fn link_kinds(&self) -> BTreeMap<(usize, usize), LinkKind> {
        self.board.lock().await.link_kinds()
    }

    /// What the switchboard did so far (dials, rotations, session counts).
    pub async fn board_stats(&self) -> BoardStats {
        self.board.lock().await.stats()
    }

    /// Groups of peers whose radios (or LANs) reach each other now,
    /// through peers in between: pieces the sessions cannot join, whatever
    /// the planners pick.
    pub fn components(&self) -> usize {
        let reach = plane::reach(&self.nodes, &self.walls);
        plane::components(&self.nodes, reach.iter().map(|(a, b, _)| (*a, *b))).len()
    }

    /// Sets one direction's clog on the link `a`–`b` (`a` < `b`: forward is
    /// `a` to `b`); false if there is no such link.
    pub async fn clog(&self, a: usize, b: usize, direction: Direction, clogged: bool) -> bool {
        self.board.lock().await.clog(a, b, direction, clogged)
    }

    /// Sets the faults of every radio link, both directions (and of links
    /// made later).
    pub async fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
        self.board.lock().await.set_faults(faults);
    }

    /// Bytes, frames and faults of every link so far.
    pub async fn traffic(&self) -> Traffic {
        self.board.lock().await.traffic()
    }

    /// Every up peer's documents, as JSON, in id order (`None`: down).
    pub async fn states(&self) -> Result<Vec<Option<Vec<Value>>>, PeerError> {
        let mut out = Vec::with_capacity(self.peers.len());
        let q = format!("SELECT * FROM {COLLECTION} ORDER BY _id");
        for p in &self.peers {
            out.push(match p {
                Some(p) => Some(p.store().execute(&q, json!({})).await?.items),
                None => None,
            });
        }
        Ok(out)
    }

    /// Waits until every up peer holds the same documents (looking every
    /// `step_ms`, for at most `max_ms`); returns whether they did. They are
    /// compared when the links were quiet for a step (no frame sent), the
    /// cheap sign of a settled mesh, and at least every
    /// [`SETTLE_CHECK_MS`]: in a large mesh some planner is always rotating
    /// a session (each new session's handshake is traffic), so a quiet step
    /// may be long in coming.
    pub async fn settle(&self, step_ms: u64, max_ms: u64) -> Result<bool, PeerError> {
        let mut frames = u64::MAX;
        let mut waited = 0;
        let mut last_check_ms = 0;
        while waited <= max_ms {
            let now = self.traffic().await.frames;
            if now == frames || waited >= last_check_ms + SETTLE_CHECK_MS {
                last_check_ms = waited;
                if self.agree().await? {
                    return Ok(true);
                }
            }
            frames = now;
            tokio::time::sleep(Duration::from_millis(step_ms)).await;
            waited += step_ms;
        }
        Ok(false)
    }

    /// Whether every up peer holds the same documents; with
    /// [`CHECK_CRDT_METADATA`], the same CRDT states (which render to the
    /// same documents). An overtaken write travels only as metadata, so the
    /// JSON can agree while that news is still on its way (held by a delay
    /// spike, or in a lost round asked again after the stall timeout): a
    /// quiet moment is no proof that nothing is in flight.
    ///
    /// [`CHECK_CRDT_METADATA`]: crate::scenarios::CHECK_CRDT_METADATA
    async fn agree(&self) -> Result<bool, PeerError> {
        if !crate::scenarios::CHECK_CRDT_METADATA {
            let states = self.states().await?;
            let mut up = states.iter().flatten();
            let first = up.next();
            return Ok(up.all(|s| Some(s) == first));
        }
        Ok(self.crdt_differing(false).await? == 0)
    }

    /// Peers whose live query does not end on their documents (waiting a
    /// little for the last events).
    pub async fn stale_observers(&self) -> Result<u64, PeerError> {
        let states = self.states().await?;
        let mut stale = 0;
        for _ in 0..50 {
            stale = 0;
            for (i, seen) in &self.observed {
                let Some(state) = &states[*i] else { continue };
                if seen.lock().unwrap_or_else(|p| p.into_inner()).as_ref() != Some(state) {
                    stale += 1;
                }
            }
            if stale == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(stale)
    }

    /// Up peers whose documents' CRDT state (field stamps, counters,
    /// deletions) differs from the first up peer's: converged JSON is not
    /// enough, the metadata must agree too.
    pub async fn crdt_diverged(&self) -> Result<u64, PeerError> {
        self.crdt_differing(true).await
    }

    /// Up peers whose CRDT states differ from the first up peer's. Without
    /// `count_all` it stops at the first (1: the check of a settling
    /// mesh); with it, it counts them all and, under `RHIZOME_SIM_DEBUG`,
    /// prints the documents that differ.
    async fn crdt_differing(&self, count_all: bool) -> Result<u64, PeerError> {
        let mut first = None;
        let mut diverged = 0;
        for p in self.peers.iter().flatten() {
            let states = p.store().crdt_states(COLLECTION).await?;
            match &first {
                None => first = Some(states),
                Some(f) if *f != states => {
                    if !count_all {
                        return Ok(1);
                    }
                    if std::env::var_os("RHIZOME_SIM_DEBUG").is_some() {
                        for (id, doc) in &states {
                            if f.get(id) != Some(doc) {
                                eprintln!(
                                    "crdt differs at {}: {id}:\n  first: {:?}\n  here:  {doc:?}",
                                    p.id(),
                                    f.get(id)
                                );
                            }
                        }
                    }
                    diverged += 1
                }
                Some(_) => {}
            }
        }
        Ok(diverged)
    }

    /// Acknowledged writes missing on some up peer (see [`Ledger::lost_in`]).
    pub async fn lost_writes(&self) -> Result<u64, PeerError> {
        let states = self.states().await?;
        let ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        Ok(states.iter().flatten().map(|s| ledger.lost_in(s)).sum())
    }

    /// Every peer's merge counts summed: changes received, applied (new
    /// to the peer) and refused (too far in the future, say).
    pub async fn merge_totals(&self) -> Result<MergeStats, PeerError> {
        let mut total = MergeStats::default();
        for p in self.peers.iter().flatten() {
            for s in p.merge_stats().await?.values() {
                total.batches += s.batches;
                total.received += s.received;
                total.applied += s.applied;
                total.refused += s.refused;
            }
        }
        Ok(total)
    }

    /// Peers up now.
    pub fn up(&self) -> Vec<usize> {
        (0..self.peers.len()).filter(|i| self.peers[*i].is_some()).collect()
    }

    /// A random up peer.
    pub fn any_up(&self, rng: &mut Rng) -> Option<usize> {
        let up = self.up();
        (!up.is_empty()).then(|| up[rng.below(up.len() as u64) as usize])
    }

    /// A random writer that is up (any up peer if none is).
    pub fn any_writer(&self, rng: &mut Rng) -> Option<usize> {
        let up: Vec<usize> = self
            .writers
            .iter()
            .copied()
            .filter(|i| self.peers[*i].is_some())
            .collect();
        if up.is_empty() {
            return self.any_up(rng);
        }
        Some(up[rng.below(up.len() as u64) as usize])
    }

    /// Closes every link and peer.
    pub async fn close(self) {
        self.board.lock().await.close().await;
        for p in self.peers.iter().flatten() {
            p.close().await;
        }
    }
}

/// Peers on a line, each in range of its neighbours only (0.8 of the range
/// of the pair's best radio apart).
fn line(radios: &[Radio]) -> Vec<Pos> {
    let mut x = 0.0;
    let mut out = Vec::with_capacity(radios.len());
    for (i, r) in radios.iter().enumerate() {
        if i > 0 {
            let prev = &radios[i - 1];
            x += if prev.wifi && r.wifi {
                0.8 * plane::WIFI_RANGE_M
            } else {
                0.8 * plane::BLE_RANGE_M
            };
        }
        out.push(Pos { x, y: 0.0 });
    }
    out
}

/// Peers scattered at random over a square sized for about six Wi-Fi
/// neighbours each; groups out of everyone's range are moved next to a
/// random peer of the largest group, so the mesh starts connected.
fn scatter(radios: &[Radio], rng: &mut Rng) -> Vec<Pos> {
    let n = radios.len();
    let side = plane::WIFI_RANGE_M * (std::f64::consts::PI * n as f64 / 6.0).sqrt();
    let mut pos: Vec<Pos> = (0..n)
        .map(|_| Pos {
            x: rng.unit() * side,
            y: rng.unit() * side,
        })
        .collect();
    for _ in 0..8 {
        let nodes: Vec<Node> = pos
            .iter()
            .zip(radios)
            .map(|(p, r)| Node {
                pos: Some(*p),
                radio: *r,
            })
            .collect();
        let reach = plane::reach(&nodes, &[]);
        let groups = plane::components(&nodes, reach.iter().map(|(a, b, _)| (*a, *b)));
        if groups.len() <= 1 {
            break;
        }
        let main = groups.values().max_by_key(|g| g.len()).cloned().unwrap_or_default();
        for group in groups.values() {
            if group.len() == main.len() && *group == main {
                continue;
            }
            let anchor = pos[main[rng.below(main.len() as u64) as usize]];
            let angle = rng.unit() * std::f64::consts::TAU;
            let reach = 0.7 * plane::BLE_RANGE_M;
            let first = pos[group[0]];
            let (dx, dy) = (
                anchor.x + reach * angle.cos() - first.x,
                anchor.y + reach * angle.sin() - first.y,
            );
            for &m in group {
                pos[m] = Pos {
                    x: pos[m].x + dx,
                    y: pos[m].y + dy,
                };
            }
        }
    }
    pos
}
