//! The scenarios, each a function of (peers, seed), and what a run found.
//!
//! | name | what happens |
//! |---|---|
//! | `partition-heal` | peers scattered on the plane; walls split the mesh, links clog (one direction, and rolling from link to link), both sides write the same fields; the walls come down |
//! | `chain` | peers on a line, each in range of its neighbours only: every change crosses every hop |
//! | `churn` | peers on LMDB walk about (links come and go with range), crash and restart from disk, leave and come back, join late |
//! | `skew` | peers' clocks minutes apart (within the engine's hour of drift) write the same fields |
//! | `storm` | bursts of concurrent writers on the same fields of one document, over a LAN site and radios |
//! | `crash-restart` | peers on LMDB on a line go down and come back from disk while others write |
//! | `crowd` | every peer in one small room, in range of all the others: each planner keeps a few sessions per kind and rotates them while writers write and peers come and go |
//!
//! In every scenario each peer's connection planner picks whom, of the
//! peers in range, to hold sessions with (see [`crate::board`]).
//!
//! Every run draws its fault menu from its seed (delay spikes always;
//! loss, duplication and reordering when [`LOSSY`]), ends by healing
//! everything, waits for quiescence and checks the invariants: every peer
//! holds the same documents with the same CRDT metadata, version vectors
//! included ([`CHECK_CRDT_METADATA`]), no acknowledged write is lost (see
//! [`crate::mesh::Ledger`]), every live query ends on its peer's documents,
//! no peer ever held more sessions of a kind than its planner's limit.
//! The "sometimes" counters of the [`Report`] prove the faults happened.

use crate::board::ROTATION_PERIOD_MS;
use crate::mesh::{write, Mesh, Setup, Traffic, DOCS, FIELDS};
use crate::plane::{Pos, Wall};
use crate::Rng;
use rhizome_actors::{Direction, Faults, PeerError};
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

/// Whether runs draw loss, duplication and reordering of frames (delay
/// spikes and clogs are always drawn).
pub const LOSSY: bool = true;

/// Whether differing CRDT metadata fails a run: every peer must hold every
/// document with the same field stamps, counters, deletions and version
/// vector, not just the same JSON. An overtaken write travels only as
/// metadata, so the end-of-run wait ([`Mesh::settle`]) waits for the CRDT
/// states to agree as well (the JSON can agree while that news is held by a
/// delay spike or in a lost round asked again after the stall timeout;
/// `engine/tests/sync_metadata.rs` pins this down). The count is reported
/// either way (`crdt_diverged`).
pub const CHECK_CRDT_METADATA: bool = true;

/// The scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scenario {
    /// See the module doc.
    PartitionHeal,
    /// See the module doc.
    Chain,
    /// See the module doc.
    Churn,
    /// See the module doc.
    Skew,
    /// See the module doc.
    Storm,
    /// See the module doc.
    CrashRestart,
    /// See the module doc.
    Crowd,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 7] = [
        Scenario::PartitionHeal,
        Scenario::Chain,
        Scenario::Churn,
        Scenario::Skew,
        Scenario::Storm,
        Scenario::CrashRestart,
        Scenario::Crowd,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::PartitionHeal => "partition-heal",
            Scenario::Chain => "chain",
            Scenario::Churn => "churn",
            Scenario::Skew => "skew",
            Scenario::Storm => "storm",
            Scenario::CrashRestart => "crash-restart",
            Scenario::Crowd => "crowd",
        }
    }

    /// The scenario of this name.
    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether its peers keep their data on disk (LMDB), in a folder the
    /// caller provides.
    pub fn on_disk(self) -> bool {
        matches!(self, Scenario::Churn | Scenario::CrashRestart)
    }
}

/// What a scenario run found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The scenario's name.
    pub scenario: &'static str,
    /// Peers.
    pub peers: usize,
    /// The seed.
    pub seed: u64,
    /// Whether, after healing, every peer ended with the same documents
    /// (and the same CRDT metadata, with [`CHECK_CRDT_METADATA`]), no
    /// acknowledged write lost and every live query on its peer's
    /// documents.
    pub converged: bool,
    /// Simulated (virtual under madsim) time the run took, in ms.
    pub sim_time_ms: u64,
    /// Real time the run took, in ms (set by the runner; not deterministic).
    pub wall_ms: u64,
    /// Protocol messages (frames) the links carried.
    pub messages: u64,
    /// Bytes the links carried (chunk headers included).
    pub bytes: u64,
    /// Each change's encoded size times (holders - 1) (see `bound`).
    pub bytes_lower_bound: u64,
    /// Writes acknowledged.
    pub writes: u64,
    /// Acknowledged writes missing or overtaken somewhere at the end (must
    /// be 0).
    pub lost_writes: u64,
    /// Live queries not ending on their peer's documents (must be 0).
    pub stale_observers: u64,
    /// Peers whose CRDT metadata differs from the others' (must be 0).
    pub crdt_diverged: u64,
    /// Changes peers refused to merge.
    pub refused: u64,
    /// Changes peers received (each copy counted).
    pub changes_received: u64,
    /// Received changes that were new to their peer (the rest arrived
    /// twice or more, over several links).
    pub changes_applied: u64,
    /// Most sessions of one kind a peer held (after each round of its
    /// planner's decisions).
    pub max_sessions_seen: u64,
    /// Times a peer held more sessions of a kind than its planner's limit
    /// (must be 0).
    pub session_limit_breaches: u64,
    /// Sometimes: links cut by a partition.
    pub cuts: u64,
    /// Sometimes: times the mesh was in more than one piece.
    pub partitions: u64,
    /// Sometimes: writes made while the mesh was split.
    pub split_writes: u64,
    /// Sometimes: writes that had not seen the last write of their field.
    pub conflicts: u64,
    /// Sometimes: link directions clogged.
    pub clogs: u64,
    /// Sometimes: peers crashed and restarted from disk.
    pub crashes: u64,
    /// Sometimes: links made or cut as peers moved, left and came back.
    pub link_changes: u64,
    /// Sometimes: the widest clock difference between two peers, in ms.
    pub skew_spread_ms: u64,
    /// Sometimes: sessions a planner rotated out for a peer not met lately.
    pub rotations: u64,
    /// Sometimes: link faults that happened.
    pub traffic: Traffic,
}

impl Report {
    /// The one JSON line `rhizome sim` ends with.
    pub fn json(&self) -> String {
        let t = &self.traffic;
        format!(
            concat!(
                r#"{{"scenario":"{}","peers":{},"seed":{},"converged":{},"sim_time_ms":{},"wall_ms":{},"#,
                r#""messages":{},"bytes":{},"bytes_lower_bound":{},"writes":{},"lost_writes":{},"#,
                r#""stale_observers":{},"crdt_diverged":{},"refused":{},"changes_received":{},"changes_applied":{},"max_sessions_seen":{},"session_limit_breaches":{},"#,
                r#""sometimes":{{"cuts":{},"partitions":{},"split_writes":{},"#,
                r#""conflicts":{},"clogs":{},"crashes":{},"link_changes":{},"skew_spread_ms":{},"rotations":{},"lost_chunks":{},"#,
                r#""dropped_frames":{},"duplicated_frames":{},"reordered_frames":{},"delay_spikes":{}}}}}"#
            ),
            self.scenario,
            self.peers,
            self.seed,
            self.converged,
            self.sim_time_ms,
            self.wall_ms,
            self.messages,
            self.bytes,
            self.bytes_lower_bound,
            self.writes,
            self.lost_writes,
            self.stale_observers,
            self.crdt_diverged,
            self.refused,
            self.changes_received,
            self.changes_applied,
            self.max_sessions_seen,
            self.session_limit_breaches,
            self.cuts,
            self.partitions,
            self.split_writes,
            self.conflicts,
            self.clogs,
            self.crashes,
            self.link_changes,
            self.skew_spread_ms,
            self.rotations,
            t.lost_chunks,
            t.dropped_frames,
            t.duplicated,
            t.reordered,
            t.spikes,
        )
    }
}

/// Runs `scenario` with `peers` peers from `seed`; on-disk scenarios keep
/// their peers' folders under `root` (required for them).
pub async fn run(scenario: Scenario, peers: usize, seed: u64, root: Option<&Path>) -> Result<Report, PeerError> {
    let peers = peers.max(2);
    let need_root = || {
        root.ok_or_else(|| PeerError::InvalidInput {
            reason: format!("{} keeps peers on disk: give it a folder", scenario.name()),
        })
    };
    match scenario {
        Scenario::PartitionHeal => partition_heal(peers, seed).await,
        Scenario::Chain => chain(peers, seed).await,
        Scenario::Churn => churn(peers, seed, need_root()?).await,
        Scenario::Skew => skew(peers, seed).await,
        Scenario::Storm => storm(peers, seed).await,
        Scenario::CrashRestart => crash_restart(peers, seed, need_root()?).await,
        Scenario::Crowd => crowd(peers, seed).await,
    }
}

/// The fault menu of a run: each fault on or off by the seed, at a drawn
/// rate.
fn draw_faults(rng: &mut Rng) -> Faults {
    let mut f = Faults::none();
    if rng.below(2) == 0 {
        f.spike_ppm = 2_000 + rng.below(20_000) as u32;
        f.spike_ms = 50 + rng.below(450);
    }
    if LOSSY {
        if rng.below(2) == 0 {
            f.loss_ppm = 1_000 + rng.below(20_000) as u32;
        }
        if rng.below(2) == 0 {
            f.duplicate_ppm = 5_000 + rng.below(50_000) as u32;
        }
        if rng.below(2) == 0 {
            f.reorder_ppm = 5_000 + rng.below(50_000) as u32;
        }
    }
    f
}

/// Writes per burst for a mesh of `peers`: grows with the mesh, capped so
/// large meshes measure the protocol, not the writers.
fn writes_for(peers: usize) -> u64 {
    (peers as u64).clamp(4, 48)
}

/// A run in progress: the mesh, the run's generator and its start.
struct Run {
    mesh: Mesh,
    rng: Rng,
    start: Instant,
    report: Report,
}

impl Run {
    async fn open(name: &'static str, setup: Setup, seed: u64) -> Result<Run, PeerError> {
        let start = Instant::now();
        let mut rng = Rng::new(seed);
        let mut mesh = Mesh::open(&setup, seed).await?;
        mesh.set_faults(draw_faults(&mut rng)).await;
        Ok(Run {
            mesh,
            rng,
            start,
            report: Report {
                scenario: name,
                peers: setup.peers,
                seed,
                skew_spread_ms: 0,
                ..Report::default()
            },
        })
    }

    /// `count` writes by random up peers to random fields of the shared
    /// documents (so many conflict), with short random pauses.
    async fn write_burst(&mut self, count: u64) -> Result<(), PeerError> {
        for _ in 0..count {
            let Some(who) = self.mesh.any_up(&mut self.rng) else {
                return Ok(());
            };
            let id = format!("d{}", self.rng.below(DOCS as u64));
            let field = FIELDS[self.rng.below(FIELDS.len() as u64) as usize];
            if let Some(peer) = self.mesh.peer(who) {
                write(peer, &self.mesh.ledger, who, &id, field).await?;
            }
            if self.rng.below(4) == 0 {
                tokio::time::sleep(Duration::from_millis(self.rng.below(5))).await;
            }
        }
        Ok(())
    }

    /// Notes whether the mesh is in pieces now.
    fn note_partition(&mut self) {
        if self.mesh.components() > 1 {
            self.report.partitions += 1;
        }
    }

    /// Heals everything (walls down, clogs lifted, peers home and up),
    /// waits for quiescence and checks the invariants.
    async fn finish(mut self) -> Result<Report, PeerError> {
        let mesh = &mut self.mesh;
        mesh.walls.clear();
        let faults = Faults {
            clogged: false,
            ..mesh.faults
        };
        mesh.set_faults(faults).await;
        for i in 0..mesh.len() {
            if mesh.nodes[i].pos.is_none() || mesh.peer(i).is_none() {
                let home = mesh.home[i];
                mesh.restart(i, home).await?;
            }
        }
        mesh.relink().await?;
        let settled = mesh.settle(50, 120_000).await?;
        let r = &mut self.report;
        r.lost_writes = mesh.lost_writes().await?;
        r.stale_observers = mesh.stale_observers().await?;
        r.crdt_diverged = mesh.crdt_diverged().await?;
        let merged = mesh.merge_totals().await?;
        r.refused = merged.refused;
        r.changes_received = merged.received;
        r.changes_applied = merged.applied;
        let board = mesh.board_stats().await;
        if std::env::var_os("RHIZOME_SIM_DEBUG").is_some() {
            eprintln!("{board:?}");
        }
        r.max_sessions_seen = board.max_sessions_seen;
        r.session_limit_breaches = board.limit_breaches;
        r.rotations = board.rotations;
        r.link_changes += board.link_changes;
        r.converged = settled
            && mesh.components() == 1
            && r.lost_writes == 0
            && r.stale_observers == 0
            && r.session_limit_breaches == 0
            && (r.crdt_diverged == 0 || !CHECK_CRDT_METADATA);
        r.traffic = mesh.traffic().await;
        (r.bytes, r.messages) = (r.traffic.bytes, r.traffic.frames);
        {
            let l = mesh.ledger.lock().unwrap_or_else(|p| p.into_inner());
            r.writes = l.writes;
            r.split_writes = l.split_writes;
            r.conflicts = l.conflicts;
            r.bytes_lower_bound = l.change_bytes * (mesh.up().len() as u64).saturating_sub(1);
        }
        r.sim_time_ms = self.start.elapsed().as_millis() as u64;
        self.mesh.close().await;
        Ok(self.report)
    }
}

/// `partition-heal`: walls split a scattered mesh (one to three of them,
/// through its middle half), some links clog in one direction, a clog
/// rolls from link to link, both sides write (often the same fields), then
/// everything heals and every peer must converge.
pub async fn partition_heal(peers: usize, seed: u64) -> Result<Report, PeerError> {
    let mut run = Run::open("partition-heal", Setup::new(peers), seed).await?;
    let w = writes_for(peers);
    run.write_burst(w).await?;
    tokio::time::sleep(Duration::from_millis(run.rng.below(500))).await;
    // Walls through the middle half of the occupied area.
    let (lo, hi) = bounds(&run.mesh.home);
    for _ in 0..1 + run.rng.below(3) {
        let t = 0.25 + 0.5 * run.rng.unit();
        let wall = if run.rng.below(2) == 0 {
            Wall::Vertical(lo.x + t * (hi.x - lo.x))
        } else {
            Wall::Horizontal(lo.y + t * (hi.y - lo.y))
        };
        run.mesh.walls.push(wall);
    }
    let kept = run.mesh.link_kinds().await;
    run.mesh.relink().await?;
    let now = run.mesh.link_kinds().await;
    run.report.cuts = kept.keys().filter(|k| !now.contains_key(k)).count() as u64;
    run.note_partition();
    run.mesh.ledger.lock().unwrap_or_else(|p| p.into_inner()).split = true;
    // Asymmetric clogs: one direction of a few links.
    let links: Vec<(usize, usize)> = run.mesh.link_kinds().await.keys().copied().collect();
    for _ in 0..links.len().min(1 + run.rng.below(3) as usize) {
        let (a, b) = links[run.rng.below(links.len() as u64) as usize];
        let dir = if run.rng.below(2) == 0 {
            Direction::Forward
        } else {
            Direction::Backward
        };
        if run.mesh.clog(a, b, dir, true).await {
            run.report.clogs += 1;
        }
    }
    // A rolling clog, interleaved with the split writes.
    let steps = 4;
    for _ in 0..steps {
        let rolling = (!links.is_empty()).then(|| links[run.rng.below(links.len() as u64) as usize]);
        if let Some((a, b)) = rolling {
            for d in [Direction::Forward, Direction::Backward] {
                if run.mesh.clog(a, b, d, true).await {
                    run.report.clogs += 1;
                }
            }
        }
        run.write_burst(2 * w / steps).await?;
        tokio::time::sleep(Duration::from_millis(50 + run.rng.below(250))).await;
        if let Some((a, b)) = rolling {
            for d in [Direction::Forward, Direction::Backward] {
                run.mesh.clog(a, b, d, false).await;
            }
        }
    }
    run.mesh.ledger.lock().unwrap_or_else(|p| p.into_inner()).split = false;
    run.finish().await
}

/// The corners of the box holding `points`.
fn bounds(points: &[Pos]) -> (Pos, Pos) {
    let mut lo = Pos {
        x: f64::MAX,
        y: f64::MAX,
    };
    let mut hi = Pos {
        x: f64::MIN,
        y: f64::MIN,
    };
    for p in points {
        (lo.x, lo.y) = (lo.x.min(p.x), lo.y.min(p.y));
        (hi.x, hi.y) = (hi.x.max(p.x), hi.y.max(p.y));
    }
    (lo, hi)
}

/// `chain`: peers on a line, each in range of its neighbours only; random
/// peers write random fields of a few shared documents; every change must
/// cross the whole line (multihop).
pub async fn chain(peers: usize, seed: u64) -> Result<Report, PeerError> {
    let setup = Setup {
        line: true,
        ..Setup::new(peers)
    };
    let mut run = Run::open("chain", setup, seed).await?;
    let w = writes_for(peers);
    run.write_burst(3 * w).await?;
    run.finish().await
}

/// `churn`: peers on LMDB scattered on the plane walk about for a while
/// (0.5 to 5 m/s, turning now and then), so links come and go with range;
/// some crash and restart from disk, some walk out of everyone's range and
/// come back, a few join late; random peers write throughout.
pub async fn churn(peers: usize, seed: u64, root: &Path) -> Result<Report, PeerError> {
    let setup = Setup {
        root: Some(root.to_path_buf()),
        ..Setup::new(peers)
    };
    let mut run = Run::open("churn", setup, seed).await?;
    let n = peers;
    let mut heading: Vec<(f64, f64)> = (0..n)
        .map(|_| {
            let (speed, angle) = (0.5 + 4.5 * run.rng.unit(), run.rng.unit() * std::f64::consts::TAU);
            (speed * angle.cos(), speed * angle.sin())
        })
        .collect();
    // Late joiners: away from the start, they appear at a drawn step.
    let steps = 12;
    let mut appear = vec![None; n];
    for slot in appear.iter_mut().take(n).skip(1) {
        if run.rng.below(8) == 0 {
            *slot = Some(1 + run.rng.below(steps as u64 - 2));
        }
    }
    for (i, at) in appear.iter().enumerate() {
        if at.is_some() {
            run.mesh.leave(i).await;
        }
    }
    run.mesh.relink().await?;
    let mut back_at: Vec<Option<u64>> = vec![None; n];
    let w = writes_for(peers);
    for step in 0..steps as u64 {
        // Everyone present walks one second.
        for (i, h) in heading.iter_mut().enumerate() {
            if let Some(p) = run.mesh.nodes[i].pos.as_mut() {
                p.x += h.0;
                p.y += h.1;
            }
            if run.rng.below(5) == 0 {
                let angle = run.rng.unit() * std::f64::consts::TAU;
                let speed = (h.0 * h.0 + h.1 * h.1).sqrt();
                *h = (speed * angle.cos(), speed * angle.sin());
            }
        }
        // Comings and goings.
        for i in 0..n {
            if appear[i] == Some(step) || back_at[i] == Some(step) {
                let home = run.mesh.home[i];
                run.mesh.restart(i, home).await?;
                back_at[i] = None;
            }
        }
        if let Some(i) = run.mesh.any_up(&mut run.rng) {
            let away = run.mesh.nodes[i].pos.is_some() && appear[i].is_none_or(|s| s < step);
            match run.rng.below(3) {
                0 if away => {
                    run.mesh.crash(i).await;
                    run.report.crashes += 1;
                    back_at[i] = Some(step + 1 + run.rng.below(3));
                }
                1 if away => {
                    run.mesh.leave(i).await;
                    back_at[i] = Some(step + 1 + run.rng.below(3));
                }
                _ => {}
            }
        }
        run.mesh.relink().await?;
        run.note_partition();
        run.write_burst(w / 2 + 1).await?;
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    }
    // Everyone comes home.
    for i in 0..n {
        run.mesh.nodes[i].pos = run.mesh.nodes[i].pos.map(|_| run.mesh.home[i]);
    }
    run.finish().await
}

/// `skew`: every peer's clock is off by up to 25 minutes either way (two
/// peers at most 50 minutes apart, within the engine's hour of allowed
/// drift); bursts of writers on the same fields.
pub async fn skew(peers: usize, seed: u64) -> Result<Report, PeerError> {
    let max = 25 * 60 * 1000;
    let setup = Setup {
        max_skew_ms: max,
        ..Setup::new(peers)
    };
    let mut run = Run::open("skew", setup, seed).await?;
    run.report.skew_spread_ms = run.mesh.skew_spread_ms();
    let w = writes_for(peers);
    for _ in 0..3 {
        run.write_burst(w).await?;
        concurrent_burst(&mut run, 4).await?;
        tokio::time::sleep(Duration::from_millis(run.rng.below(300))).await;
    }
    run.finish().await
}

/// `storm`: bursts of concurrent writers (tasks of their own, all at once)
/// on the same fields of one document, while sync runs; the first peers
/// share a LAN site, the rest are on radios.
pub async fn storm(peers: usize, seed: u64) -> Result<Report, PeerError> {
    let setup = Setup {
        lan_site: peers.min(4),
        ..Setup::new(peers)
    };
    let mut run = Run::open("storm", setup, seed).await?;
    for _ in 0..4 {
        concurrent_burst(&mut run, 6).await?;
        tokio::time::sleep(Duration::from_millis(run.rng.below(200))).await;
    }
    run.finish().await
}

/// Up to eight writers at once, each setting `per_writer` times a random
/// field of one document picked for the burst.
async fn concurrent_burst(run: &mut Run, per_writer: u64) -> Result<(), PeerError> {
    let writers = run.mesh.up().len().min(8);
    let id = format!("d{}", run.rng.below(DOCS as u64));
    let mut tasks = Vec::new();
    for k in 0..writers {
        let Some(who) = run.mesh.any_writer(&mut run.rng) else {
            break;
        };
        let Some(peer) = run.mesh.peer(who).cloned() else {
            continue;
        };
        let ledger = run.mesh.ledger.clone();
        let (id, seed) = (id.clone(), run.rng.next_u64() ^ k as u64);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed);
            for _ in 0..per_writer {
                let field = FIELDS[rng.below(2) as usize];
                write(&peer, &ledger, who, &id, field).await?;
                tokio::time::sleep(Duration::from_millis(rng.below(3))).await;
            }
            Ok::<(), PeerError>(())
        }));
    }
    for t in tasks {
        match t.await {
            Ok(r) => r?,
            Err(e) => {
                return Err(PeerError::InvalidInput {
                    reason: format!("a writer task failed: {e}"),
                })
            }
        }
    }
    Ok(())
}

/// `crash-restart`: peers on LMDB on a line; random peers go down and come
/// back from disk while others keep writing; every acknowledged write must
/// survive and every peer converge.
pub async fn crash_restart(peers: usize, seed: u64, root: &Path) -> Result<Report, PeerError> {
    let setup = Setup {
        root: Some(root.to_path_buf()),
        line: true,
        ..Setup::new(peers)
    };
    let mut run = Run::open("crash-restart", setup, seed).await?;
    let n = peers as u64;
    for _ in 0..3 {
        run.write_burst(n).await?;
        let victim = run.rng.below(n) as usize;
        run.mesh.crash(victim).await;
        run.report.crashes += 1;
        run.note_partition();
        run.write_burst(n / 2).await?;
        let home = run.mesh.home[victim];
        run.mesh.restart(victim, home).await?;
    }
    run.write_burst(n).await?;
    run.finish().await
}

/// Side of the `crowd` room, in meters: every two peers in it are within
/// BLE range (its diagonal is 21 m), and those with Wi-Fi within Wi-Fi's.
pub const CROWD_ROOM_M: f64 = 15.0;

/// `crowd`: every peer in one small room, each in range of all the others
/// (over BLE, and Wi-Fi for those that have it), so each could hold
/// hundreds of sessions; its planner keeps a few per kind and rotates one
/// now and then. Writers write (some all at once) over several rotation
/// periods while a peer walks out each round and the one before comes
/// back; every peer must converge without ever passing its limits.
pub async fn crowd(peers: usize, seed: u64) -> Result<Report, PeerError> {
    let setup = Setup {
        room_m: Some(CROWD_ROOM_M),
        ..Setup::new(peers)
    };
    let mut run = Run::open("crowd", setup, seed).await?;
    let w = writes_for(peers);
    let mut away: Option<usize> = None;
    for _ in 0..5 {
        run.write_burst(w / 2 + 1).await?;
        concurrent_burst(&mut run, 3).await?;
        if let Some(i) = away.take() {
            let home = run.mesh.home[i];
            run.mesh.restart(i, home).await?;
        }
        if let Some(i) = run.mesh.any_up(&mut run.rng) {
            run.mesh.leave(i).await;
            away = Some(i);
        }
        // Most of a rotation period between rounds, so sessions rotate
        // while changes spread.
        let pause_ms = ROTATION_PERIOD_MS / 2 + run.rng.below(ROTATION_PERIOD_MS / 2);
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
    }
    run.finish().await
}
