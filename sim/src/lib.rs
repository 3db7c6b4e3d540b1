//! Simulated meshes of Rhizome peers: the real actors and protocol, many
//! peers in one process, links made and cut by a scenario, every choice
//! drawn from one seed. Built with `--cfg madsim` it runs in virtual time
//! and the same seed gives the same run; built normally it runs on tokio.
//!
//! This is the first part of the simulator: meshes over modelled links
//! (Bluetooth LE or peer-to-peer Wi-Fi: MTU, throughput, latency), cut and
//! healed (a cut link is a closed session; healing connects afresh, as a
//! transport reconnecting does), concurrent writers, traffic counts, and
//! the convergence check. Range and movement, loss, crashes and clock skew
//! come next.

use rhizome_actors::{InProcessLink, LinkModel, Peer, PeerConfig, PeerError};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn config(dir: &Option<PathBuf>) -> PeerConfig {
    match dir {
        Some(d) => PeerConfig::directory(d),
        None => PeerConfig::memory(),
    }
}

/// A small deterministic generator (xorshift64*), seeded by the scenario.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, zero included).
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Peers and the links between them, by peer index.
pub struct Mesh {
    /// The peers.
    pub peers: Vec<Peer>,
    /// Where each peer keeps its data (`None`: in memory).
    dirs: Vec<Option<PathBuf>>,
    links: BTreeMap<(usize, usize), InProcessLink>,
    /// Bytes and frames of links already cut.
    carried: (u64, u64),
    /// Every (document, field) an acknowledged write set.
    written: std::collections::BTreeSet<(String, String)>,
}

/// Collection every scenario writes to.
pub const COLLECTION: &str = "docs";
/// Documents the scenarios share (`d0` .. `d3`).
const DOCS: usize = 4;

impl Mesh {
    /// `n` fresh in-memory peers, unconnected.
    pub async fn new(n: usize) -> Result<Mesh, PeerError> {
        Mesh::open(vec![None; n]).await
    }

    /// `n` peers on LMDB, each in a folder of `root` (for crash and
    /// restart scenarios).
    pub async fn on_disk(n: usize, root: &Path) -> Result<Mesh, PeerError> {
        Mesh::open((0..n).map(|i| Some(root.join(format!("peer{i}")))).collect()).await
    }

    async fn open(dirs: Vec<Option<PathBuf>>) -> Result<Mesh, PeerError> {
        let mut peers = Vec::with_capacity(dirs.len());
        for dir in &dirs {
            let peer = Peer::open(config(dir)).await?;
            // The shared documents exist everywhere from the start (as
            // default data, which never overrides real edits), so writers
            // edit fields rather than create documents: two peers inserting
            // one id concurrently is a whole-document replace today (see
            // the note of issue 5).
            let initial: Vec<Value> = (0..DOCS).map(|i| json!({ "_id": format!("d{i}") })).collect();
            peer.store()
                .execute(
                    &format!("INSERT INTO {COLLECTION} INITIAL DOCUMENTS (:a), (:b), (:c), (:d)"),
                    json!({"a": initial[0], "b": initial[1], "c": initial[2], "d": initial[3]}),
                )
                .await?;
            peers.push(peer);
        }
        Ok(Mesh {
            peers,
            dirs,
            links: BTreeMap::new(),
            carried: (0, 0),
            written: Default::default(),
        })
    }

    /// Acknowledged writes missing from some peer: (document, field) pairs
    /// written but absent there. Scenarios never delete, so with merging by
    /// field every written field must be present everywhere.
    pub async fn lost_writes(&self) -> Result<u64, PeerError> {
        let mut lost = 0;
        for docs in self.states().await? {
            for (id, field) in &self.written {
                let doc = docs.iter().find(|d| d["_id"] == json!(id));
                if doc.is_none_or(|d| d.get(field).is_none()) {
                    lost += 1;
                }
            }
        }
        Ok(lost)
    }

    /// Peer `i` goes down and comes back from its data (on disk: everything
    /// it acknowledged; in memory: nothing). Its links are cut, and come
    /// back with the same models.
    pub async fn restart(&mut self, i: usize, models: &BTreeMap<(usize, usize), LinkModel>) -> Result<(), PeerError> {
        let linked: Vec<(usize, usize)> = self.links.keys().copied().filter(|(a, b)| *a == i || *b == i).collect();
        for (a, b) in &linked {
            self.cut(*a, *b).await;
        }
        self.peers[i].close().await;
        self.peers[i] = Peer::open(config(&self.dirs[i])).await?;
        for (a, b) in linked {
            let model = models.get(&(a, b)).copied().unwrap_or_else(LinkModel::lan);
            self.connect(a, b, model).await?;
        }
        Ok(())
    }

    /// The key of the link between `a` and `b`.
    pub fn key(a: usize, b: usize) -> (usize, usize) {
        (a.min(b), a.max(b))
    }

    /// Connects peers `a` and `b` over a link of `model` (no-op if they
    /// are linked).
    pub async fn connect(&mut self, a: usize, b: usize, model: LinkModel) -> Result<(), PeerError> {
        let key = Mesh::key(a, b);
        if a == b || self.links.contains_key(&key) {
            return Ok(());
        }
        let link = self.peers[key.0]
            .connect_in_process_with(&self.peers[key.1], model)
            .await?;
        self.links.insert(key, link);
        Ok(())
    }

    /// Cuts the link between `a` and `b`, if any.
    pub async fn cut(&mut self, a: usize, b: usize) {
        if let Some(link) = self.links.remove(&Mesh::key(a, b)) {
            self.carried.0 += link.stats().bytes();
            self.carried.1 += link.stats().frames();
            link.close().await;
        }
    }

    /// Bytes and frames carried by every link so far.
    pub fn traffic(&self) -> (u64, u64) {
        self.links.values().fold(self.carried, |(b, f), l| {
            (b + l.stats().bytes(), f + l.stats().frames())
        })
    }

    /// Whether `a` and `b` are linked.
    pub fn linked(&self, a: usize, b: usize) -> bool {
        self.links.contains_key(&Mesh::key(a, b))
    }

    /// Peer `i` sets `field` of document `id` to `value` (creating it).
    pub async fn write(&mut self, i: usize, id: &str, field: &str, value: Value) -> Result<(), PeerError> {
        let store = self.peers[i].store();
        let doc = json!({ "_id": id, field: value.clone() });
        let updated = store
            .execute(
                &format!("UPDATE {COLLECTION} SET {field} = :v WHERE _id = :id"),
                json!({"v": value, "id": id}),
            )
            .await?;
        if updated.mutated_ids.is_empty() {
            store
                .execute(
                    &format!("INSERT INTO {COLLECTION} DOCUMENTS (:d) ON ID CONFLICT DO UPDATE"),
                    json!({ "d": doc }),
                )
                .await?;
        }
        self.written.insert((id.to_string(), field.to_string()));
        Ok(())
    }

    /// Every peer's documents, as JSON, in id order.
    pub async fn states(&self) -> Result<Vec<Vec<Value>>, PeerError> {
        let mut out = Vec::with_capacity(self.peers.len());
        for p in &self.peers {
            let q = format!("SELECT * FROM {COLLECTION} ORDER BY _id");
            out.push(p.store().execute(&q, json!({})).await?.items);
        }
        Ok(out)
    }

    /// Waits (in steps of `step_ms`, at most `max_steps`) until every peer
    /// holds the same documents; returns whether they did.
    pub async fn settle(&self, step_ms: u64, max_steps: u32) -> Result<bool, PeerError> {
        for _ in 0..max_steps {
            let states = self.states().await?;
            if states.windows(2).all(|w| w[0] == w[1]) {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(step_ms)).await;
        }
        Ok(false)
    }

    /// Closes every link and peer.
    pub async fn close(mut self) {
        for (_, link) in std::mem::take(&mut self.links) {
            link.close().await;
        }
        for p in &self.peers {
            p.close().await;
        }
    }
}

/// What a scenario run found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The scenario's name.
    pub scenario: &'static str,
    /// Peers.
    pub peers: usize,
    /// The seed.
    pub seed: u64,
    /// Whether every peer ended with the same documents.
    pub converged: bool,
    /// Writes made.
    pub writes: u64,
    /// Links cut during the run ("sometimes" check: the partition happened).
    pub cuts: u64,
    /// Writes made while the mesh was split.
    pub split_writes: u64,
    /// Bytes the links carried (chunk headers included).
    pub bytes: u64,
    /// Protocol messages (frames) the links carried.
    pub messages: u64,
    /// Acknowledged writes missing somewhere at the end (must be 0).
    pub lost_writes: u64,
}

/// A link model drawn for one link: Bluetooth LE or peer-to-peer Wi-Fi.
fn draw_link(rng: &mut Rng) -> LinkModel {
    match rng.below(2) {
        0 => LinkModel::ble().with_latency_ms(10 + rng.below(41)),
        _ => LinkModel::p2p_wifi().with_latency_ms(2 + rng.below(9)),
    }
}

/// `chain`: peers on a line (each linked to the next only); random peers
/// write random fields of a few shared documents; every change must cross
/// the whole line.
pub async fn chain(peers: usize, seed: u64) -> Result<Report, PeerError> {
    let mut rng = Rng::new(seed);
    let (mut mesh, _) = line(peers, &mut rng).await?;
    let writes = write_burst(&mut mesh, &mut rng, peers as u64 * 3).await?;
    finish(mesh, report("chain", peers, seed, writes)).await
}

/// `partition-heal`: a connected line is cut in one or more places, both
/// sides write (often the same fields of the same documents), then the
/// cuts heal and every peer must converge.
pub async fn partition_heal(peers: usize, seed: u64) -> Result<Report, PeerError> {
    let mut rng = Rng::new(seed);
    let (mut mesh, models) = line(peers, &mut rng).await?;
    let writes = write_burst(&mut mesh, &mut rng, peers as u64).await?;
    mesh.settle(20, 500).await?;
    let cuts = 1 + rng.below(peers.saturating_sub(1).max(1) as u64 / 2 + 1);
    let mut cut = Vec::new();
    for _ in 0..cuts {
        let i = 1 + rng.below(peers.saturating_sub(1).max(1) as u64) as usize;
        if mesh.linked(i - 1, i) {
            mesh.cut(i - 1, i).await;
            cut.push(i);
        }
    }
    let split_writes = write_burst(&mut mesh, &mut rng, peers as u64 * 2).await?;
    tokio::time::sleep(Duration::from_millis(rng.below(200))).await;
    for i in &cut {
        mesh.connect(i - 1, *i, models[*i]).await?;
    }
    let mut r = report("partition-heal", peers, seed, writes + split_writes);
    r.cuts = cut.len() as u64;
    r.split_writes = split_writes;
    finish(mesh, r).await
}

/// `peers` peers on a line over drawn links; `models[i]` links peers
/// `i - 1` and `i`.
async fn line(peers: usize, rng: &mut Rng) -> Result<(Mesh, Vec<LinkModel>), PeerError> {
    let mut mesh = Mesh::new(peers).await?;
    let models: Vec<LinkModel> = (0..peers).map(|_| draw_link(rng)).collect();
    for (i, model) in models.iter().enumerate().skip(1) {
        mesh.connect(i - 1, i, *model).await?;
    }
    Ok((mesh, models))
}

/// A report of a run not yet finished.
fn report(scenario: &'static str, peers: usize, seed: u64, writes: u64) -> Report {
    Report {
        scenario,
        peers,
        seed,
        converged: false,
        writes,
        cuts: 0,
        split_writes: 0,
        bytes: 0,
        messages: 0,
        lost_writes: 0,
    }
}

/// Waits for convergence, counts the traffic and closes the mesh.
async fn finish(mesh: Mesh, mut report: Report) -> Result<Report, PeerError> {
    report.converged = mesh.settle(20, 500).await?;
    report.lost_writes = mesh.lost_writes().await?;
    (report.bytes, report.messages) = mesh.traffic();
    mesh.close().await;
    Ok(report)
}

/// `crash-restart`: peers on LMDB on a line; random peers go down and come
/// back from disk while others keep writing; every acknowledged write must
/// survive and every peer converge.
pub async fn crash_restart(peers: usize, seed: u64, root: &Path) -> Result<Report, PeerError> {
    let mut rng = Rng::new(seed);
    let mut mesh = Mesh::on_disk(peers, root).await?;
    let mut models = BTreeMap::new();
    for i in 1..peers {
        let model = draw_link(&mut rng);
        models.insert(Mesh::key(i - 1, i), model);
        mesh.connect(i - 1, i, model).await?;
    }
    let mut writes = 0;
    let mut crashes = 0;
    for _ in 0..3 {
        writes += write_burst(&mut mesh, &mut rng, peers as u64).await?;
        let victim = rng.below(peers as u64) as usize;
        mesh.restart(victim, &models).await?;
        crashes += 1;
    }
    writes += write_burst(&mut mesh, &mut rng, peers as u64).await?;
    let mut r = report("crash-restart", peers, seed, writes);
    r.cuts = crashes;
    finish(mesh, r).await
}

/// `count` writes by random peers to random fields of a few documents (so
/// many of them conflict), with short random pauses.
async fn write_burst(mesh: &mut Mesh, rng: &mut Rng, count: u64) -> Result<u64, PeerError> {
    for n in 0..count {
        let peer = rng.below(mesh.peers.len() as u64) as usize;
        let id = format!("d{}", rng.below(DOCS as u64));
        let field = ["a", "b", "c"][rng.below(3) as usize];
        mesh.write(peer, &id, field, json!(n)).await?;
        if rng.below(4) == 0 {
            tokio::time::sleep(Duration::from_millis(rng.below(5))).await;
        }
    }
    Ok(count)
}
