//! CRDT metadata converges, not just the JSON: after the links heal and
//! the sessions go quiet, every replica holds every document with the same
//! field stamps, counters, deletions *and* the same per-document version
//! vector (`Doc::vv`), including origins whose writes to a document were
//! all overtaken (equal-HLC ties broken by peer id, clocks skewed so one
//! peer's writes carry logical counters).
//!
//! Why this file exists: the simulator once reported replicas whose JSON
//! agreed while a document's version vector did not. The engine was not at
//! fault: an overtaken write travels only as metadata (`Op::Seen`, or a
//! register that loses on arrival), so when the frame carrying it is lost or
//! held back, the JSON of every replica already agrees while that news is
//! still on its way (a lost round is asked again after `stall_ms`). A check
//! that stops at "same JSON and a quiet moment" sees the gap; one that waits
//! for quiescence does not. The first test pins that mechanism down on two
//! peers; the second drives a mesh of real sessions over the store's
//! `changes_for` and `apply_batch` with lost, duplicated and reordered
//! frames, cut and restored links and skewed clocks, and checks the
//! metadata of every document after quiescence.

mod sync_harness;

use rhizome_engine::codec::Change;
use rhizome_engine::doc::{Doc, Num};
use rhizome_engine::hlc::PeerId;
use rhizome_engine::mem::MemKv;
use rhizome_engine::store::{Edit, OnConflict, Store, StoreConfig};
use rhizome_engine::sync::scope::Interest;
use rhizome_engine::sync::session::{Output, Session, SessionConfig, Timer};
use rhizome_engine::sync::wire::{self, Message, Role};
use rhizome_engine::value::Value;
use rhizome_engine::vv::VersionVector;
use std::collections::BTreeMap;
use std::sync::Arc;
use sync_harness::{id, spec, Net, Peer, Rng, NOW_MS, STALL_MS};

const COLL: &str = "t";
const SUB: &str = "SELECT * FROM t";

/// Two peers write one field at the same HLC; the overtaken write's only
/// trace on the other side is metadata, and the frame carrying it is lost.
/// The JSON agrees at once, the version vectors only once the round is
/// asked again; after quiescence everything agrees.
#[test]
fn overtaken_write_lost_in_flight_converges_at_quiescence() {
    let mut net = Net::new(Peer::new(1, &[SUB]), Peer::new(2, &[SUB]));
    net.on(0, |p| p.insert(COLL, r#"{"_id":"d","b":"start"}"#));
    net.connect();
    net.run();
    net.assert_converged(COLL, "after the first sync");

    // Both write `b` at the same virtual millisecond: equal HLCs, peer 2
    // wins the tie, so peer 1's write is overtaken everywhere.
    let t = net.now + 10;
    net.run_until(t);
    // Peer 1's news to peer 2 (its overtaken write: a push, or a round's
    // answer) is lost.
    net.losses
        .push((0, |m| matches!(m, Message::Changes { .. } | Message::Push { .. })));
    net.on(0, |p| p.set(COLL, "d", "b", r#""one""#));
    net.on(1, |p| p.set(COLL, "d", "b", r#""two""#));
    let stamp = |p: &Peer| {
        p.doc(COLL, "d")
            .and_then(|d| d.slots.get(&vec!["b".to_string()]).cloned())
            .and_then(|s| s.reg)
            .map(|r| r.stamp)
    };
    let (s1, s2) = (stamp(&net.peers[0]), stamp(&net.peers[1]));
    assert_eq!(s1.map(|s| s.hlc), s2.map(|s| s.hlc), "the two writes tie on HLC");

    net.run_until(t + STALL_MS / 2);
    assert_eq!(
        net.peers[0].live(COLL),
        net.peers[1].live(COLL),
        "the JSON agrees already"
    );
    assert_eq!(
        net.peers[1].get(COLL, "d"),
        Some(sync_harness::v(r#"{"_id":"d","b":"two"}"#))
    );
    let vv = |p: &Peer| p.doc(COLL, "d").map(|d| d.vv).unwrap_or_default();
    assert_ne!(
        vv(&net.peers[0]),
        vv(&net.peers[1]),
        "the overtaken write's metadata is still on its way"
    );
    assert_eq!(net.lost, 1);

    net.run();
    net.assert_converged(COLL, "after quiescence");
}

// ---- a mesh of sessions ----

/// One session of a node with one remote.
struct Link {
    session: Session,
    /// What the remote wants (its last `Output::Interest`).
    interest: Arc<Interest>,
    /// Bumped when the link is cut: events of an older session are dropped.
    epoch: u64,
    up: bool,
}

/// A replica: its store, its clock offset and its sessions by remote.
struct Node {
    store: Store<MemKv>,
    skew_ms: u64,
    links: BTreeMap<usize, Link>,
}

enum Ev {
    Frame {
        from: usize,
        to: usize,
        epoch: u64,
        frame: Vec<u8>,
    },
    Timer {
        node: usize,
        remote: usize,
        epoch: u64,
        timer: Timer,
    },
}

/// Bound on the events of one run (a protocol that never quiesces fails).
const MAX_EVENTS: u64 = 400_000;

struct Mesh {
    nodes: Vec<Node>,
    now: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    seq: u64,
    rng: Rng,
    /// Faults on (per mille): loss, duplication, holding back.
    faults: Option<(u64, u64, u64)>,
    events: u64,
    label: String,
}

fn session_config(me: usize) -> SessionConfig {
    SessionConfig {
        me: PeerId(me as u64 + 1),
        role: Role::SmallPeer,
        subscriptions: vec![spec(SUB)],
        claimed_for: None,
        max_frame_bytes: wire::DEFAULT_MAX_FRAME_BYTES,
        retry_ms: sync_harness::RETRY_MS,
        stall_ms: STALL_MS,
    }
}

impl Mesh {
    fn new(n: usize, seed: u64, skews: &[u64]) -> Mesh {
        let nodes = (0..n)
            .map(|i| Node {
                store: Store::open(MemKv::new(), StoreConfig::default(), PeerId(i as u64 + 1), seed).expect("store"),
                skew_ms: skews[i],
                links: BTreeMap::new(),
            })
            .collect();
        Mesh {
            nodes,
            now: 0,
            queue: BTreeMap::new(),
            seq: 0,
            rng: Rng::new(seed),
            faults: None,
            events: 0,
            label: format!("seed {seed}"),
        }
    }

    fn at(&mut self, time: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((time, self.seq), ev);
    }

    fn wall(&self, node: usize) -> u64 {
        NOW_MS + self.now + self.nodes[node].skew_ms
    }

    /// Opens fresh sessions between `a` and `b` (both say hello).
    fn connect(&mut self, a: usize, b: usize) {
        for (x, y) in [(a, b), (b, a)] {
            let epoch = self.nodes[x].links.get(&y).map_or(0, |l| l.epoch + 1);
            let link = Link {
                session: Session::new(session_config(x), epoch * 1_000),
                interest: Arc::new(Interest::none()),
                epoch,
                up: true,
            };
            self.nodes[x].links.insert(y, link);
        }
        for (x, y) in [(a, b), (b, a)] {
            let local = self.nodes[x].store.read().expect("read").version_vector().expect("vv");
            if let Some(l) = self.nodes[x].links.get_mut(&y) {
                l.session.handle_connected_at(&local);
            }
            self.pump(x, y);
        }
    }

    /// Cuts the link: both sessions end, frames in flight are lost.
    fn cut(&mut self, a: usize, b: usize) {
        for (x, y) in [(a, b), (b, a)] {
            if let Some(l) = self.nodes[x].links.get_mut(&y) {
                l.session.handle_close();
                l.epoch += 1;
                l.up = false;
            }
        }
    }

    fn is_up(&self, a: usize, b: usize) -> bool {
        self.nodes[a].links.get(&b).is_some_and(|l| l.up)
    }

    /// A local write on `node`; every session of it is told.
    fn write(&mut self, node: usize, edit: impl FnOnce(&mut rhizome_engine::store::WriteTx<'_, MemKv>)) {
        let now = self.wall(node);
        let mut w = self.nodes[node].store.write(now).expect("write");
        edit(&mut w);
        w.commit().expect("commit");
        self.committed(node, None);
    }

    /// Tells every session of `node` but `except` that it has news.
    fn committed(&mut self, node: usize, except: Option<usize>) {
        let remotes: Vec<usize> = self.nodes[node].links.keys().copied().collect();
        for r in remotes {
            if Some(r) == except {
                continue;
            }
            if let Some(l) = self.nodes[node].links.get_mut(&r).filter(|l| l.up) {
                l.session.handle_local_commit();
                self.pump(node, r);
            }
        }
    }

    /// Carries out what the session of `node` with `remote` asks.
    fn pump(&mut self, node: usize, remote: usize) {
        let mut merged = false;
        loop {
            let now = self.wall(node);
            let Node { store, links, .. } = &mut self.nodes[node];
            let Some(link) = links.get_mut(&remote).filter(|l| l.up) else {
                return;
            };
            let epoch = link.epoch;
            let Some(out) = link.session.poll_output() else { break };
            match out {
                Output::Send(frame) => self.transmit(node, remote, epoch, frame),
                Output::SetTimer { timer, after_ms } => {
                    let ev = Ev::Timer {
                        node,
                        remote,
                        epoch,
                        timer,
                    };
                    self.at(self.now + after_ms, ev);
                }
                Output::Interest(i) => link.interest = i,
                Output::ReadVersionVector { round } => {
                    let local = store.read().expect("read").version_vector().expect("vv");
                    link.session.send_request(round, &local);
                }
                Output::ReadPush { since } => {
                    let batch = store
                        .read()
                        .expect("read")
                        .changes_for(&since, None, 2, &link.interest, Role::SmallPeer)
                        .expect("changes");
                    let more = batch.resume.is_some() || batch.behind_reaped;
                    link.session.send_push(&batch.changes, &batch.upto, more);
                }
                Output::Serve { round, since } => {
                    link.session.set_withheld(false);
                    let mut resume = None;
                    loop {
                        let batch = store
                            .read()
                            .expect("read")
                            .changes_for(&since, resume.as_ref(), 2, &link.interest, Role::SmallPeer)
                            .expect("changes");
                        if batch.behind_reaped {
                            link.session.send_rebase(round, batch.upto);
                            break;
                        }
                        let last = batch.resume.is_none();
                        let going = link
                            .session
                            .send_changes(round, &batch.changes, batch.upto, last)
                            .expect("a batch fits the frame limit");
                        resume = batch.resume;
                        if last || !going {
                            break;
                        }
                    }
                }
                Output::Apply {
                    round, changes, claim, ..
                } => {
                    let ok = apply(store, now, &changes, claim.as_ref(), &mut merged);
                    link.session.handle_applied(round, ok);
                }
                Output::Rebase { round, upto, interest } => {
                    let mut w = store.write(now).expect("write");
                    w.evict_covered(&upto, &interest).expect("evict");
                    w.commit().expect("commit");
                    link.session.handle_rebased(round, true);
                }
                Output::Established { .. } | Output::CaughtUp | Output::ClaimedFor(_) | Output::Closed { .. } => {}
            }
        }
        // Merged changes commit like local ones: the other sessions offer
        // them on (multihop).
        if merged {
            self.committed(node, Some(remote));
        }
    }

    fn transmit(&mut self, from: usize, to: usize, epoch: u64, frame: Vec<u8>) {
        let mut arrive = self.now + 1 + self.rng.below(5);
        if let Some((lose, dup, hold)) = self.faults {
            if self.rng.chance(lose) {
                return;
            }
            if self.rng.chance(hold) {
                arrive += 1 + self.rng.below(60);
            }
            if self.rng.chance(dup) {
                let late = arrive + self.rng.below(30);
                let copy = Ev::Frame {
                    from,
                    to,
                    epoch,
                    frame: frame.clone(),
                };
                self.at(late, copy);
            }
        }
        self.at(arrive, Ev::Frame { from, to, epoch, frame });
    }

    /// Handles the next event; false when none is left.
    fn step(&mut self) -> bool {
        let Some(((time, _), ev)) = self.queue.pop_first() else {
            return false;
        };
        self.events += 1;
        assert!(self.events < MAX_EVENTS, "{}: the sessions did not quiesce", self.label);
        self.now = self.now.max(time);
        match ev {
            Ev::Frame { from, to, epoch, frame } => {
                // The receiving side's session of the same epoch.
                let Some(l) = self.nodes[to].links.get_mut(&from).filter(|l| l.up && l.epoch == epoch) else {
                    return true;
                };
                l.session.handle_frame(&frame);
                self.pump(to, from);
            }
            Ev::Timer {
                node,
                remote,
                epoch,
                timer,
            } => {
                let Some(l) = self.nodes[node]
                    .links
                    .get_mut(&remote)
                    .filter(|l| l.up && l.epoch == epoch)
                else {
                    return true;
                };
                l.session.handle_timer(timer);
                self.pump(node, remote);
            }
        }
        true
    }

    fn run_until(&mut self, t: u64) {
        while self.queue.first_key_value().is_some_and(|((time, _), _)| *time <= t) {
            self.step();
        }
        self.now = self.now.max(t);
    }

    /// Every stored document (tombstones too) of `node`, as CRDT state.
    fn states(&self, node: usize) -> BTreeMap<String, Doc> {
        let r = self.nodes[node].store.read().expect("read");
        let mut ids = Vec::new();
        r.scan_raw(COLL, &mut |d| {
            ids.push(d.expect("record").id().expect("id"));
            true
        })
        .expect("scan_raw");
        ids.into_iter()
            .map(|i| {
                let doc = r.get_doc(COLL, &i).expect("get_doc").expect("stored");
                (i.to_string(), doc)
            })
            .collect()
    }
}

/// Applies a batch in one transaction; records the claim if nothing was refused.
fn apply(store: &Store<MemKv>, now: u64, changes: &[Change], claim: Option<&VersionVector>, merged: &mut bool) -> bool {
    let mut w = store.write(now).expect("write");
    let outcome = w.apply_batch(changes).expect("apply");
    if !outcome.refused.is_empty() {
        return false;
    }
    if let Some(claim) = claim {
        w.mark_synced(claim);
    }
    w.commit().expect("commit");
    *merged |= outcome.applied > 0;
    true
}

/// One run: `n` peers on a random connected graph write the same fields of
/// a few documents at close or equal HLCs while frames are lost,
/// duplicated and held back and links are cut and restored; then every
/// link is restored, faults stop, and the mesh runs until nothing is
/// pending. Every replica must then hold the same CRDT state of every
/// document, version vector included. Returns how many documents hold an
/// origin whose writes to them were all overtaken (the case at stake).
fn run_mesh(seed: u64) -> usize {
    let mut rng = Rng::new(seed ^ 0x5EED);
    let n = 3 + rng.below(3) as usize;
    // Some clocks behind: their writes carry logical counters.
    let skews: Vec<u64> = (0..n)
        .map(|_| if rng.chance(300) { 0 } else { rng.below(3) * 40 })
        .collect();
    let mut m = Mesh::new(n, seed, &skews);
    let mut edges: Vec<(usize, usize)> = (1..n).map(|i| (rng.below(i as u64) as usize, i)).collect();
    for a in 0..n {
        for b in a + 1..n {
            if !edges.contains(&(a, b)) && rng.chance(250) {
                edges.push((a, b));
            }
        }
    }
    for &(a, b) in &edges {
        m.connect(a, b);
    }
    m.faults = Some((60 + rng.below(100), rng.below(60), rng.below(80)));
    let fields = ["a", "b", "c"];
    let mut value = 0u64;
    for _ in 0..60 {
        // Small steps: writes of different peers often share a millisecond.
        let t = m.now + rng.below(4);
        m.run_until(t);
        let node = rng.below(n as u64) as usize;
        let doc = format!("d{}", rng.below(3));
        value += 1;
        match rng.below(20) {
            0..=2 => {
                let json = format!(r#"{{"_id":"{doc}","a":"p{node}v{value}"}}"#);
                m.write(node, |w| {
                    w.insert(COLL, &Value::parse(&json).expect("json"), OnConflict::Merge)
                        .expect("insert");
                });
            }
            3..=13 => {
                let field = fields[rng.below(3) as usize];
                let edit = Edit::Set {
                    path: vec![field.into()],
                    value: Value::String(format!("p{node}v{value}")),
                };
                m.write(node, |w| {
                    w.update(COLL, &id(&doc), &[edit]).expect("update");
                });
            }
            14..=15 => {
                let edit = Edit::Increment {
                    path: vec!["n".into()],
                    by: Num::Int(1),
                };
                m.write(node, |w| {
                    w.update(COLL, &id(&doc), &[edit]).expect("increment");
                });
            }
            16 => {
                let edit = Edit::Unset {
                    path: vec![fields[rng.below(3) as usize].into()],
                };
                m.write(node, |w| {
                    w.update(COLL, &id(&doc), &[edit]).expect("unset");
                });
            }
            17 => m.write(node, |w| {
                w.delete(COLL, &id(&doc)).expect("delete");
            }),
            _ => {
                let (a, b) = edges[rng.below(edges.len() as u64) as usize];
                if m.is_up(a, b) {
                    m.cut(a, b);
                } else {
                    m.connect(a, b);
                }
            }
        }
    }
    // Heal: faults off, every link back, run until nothing is pending.
    m.faults = None;
    for &(a, b) in &edges {
        if !m.is_up(a, b) {
            m.connect(a, b);
        }
    }
    while m.step() {}
    let first = m.states(0);
    for node in 1..n {
        let here = m.states(node);
        assert_eq!(
            first.keys().collect::<Vec<_>>(),
            here.keys().collect::<Vec<_>>(),
            "{}: stored ids differ at node {node}",
            m.label
        );
        for (doc, state) in &first {
            assert_eq!(
                Some(state),
                here.get(doc),
                "{}: CRDT state of {doc} differs at node {node} (vv {:?} vs {:?})",
                m.label,
                state.vv,
                here.get(doc).map(|d| &d.vv)
            );
        }
    }
    first.values().filter(|d| has_overtaken_origin(d)).count()
}

/// Whether some origin in the document's version vector left no stamp in
/// its state: every write it made there was overtaken.
fn has_overtaken_origin(doc: &Doc) -> bool {
    let mut left = std::collections::BTreeSet::new();
    for slot in doc.slots.values() {
        left.extend(slot.reg.iter().map(|r| r.stamp.peer));
        if let Some(c) = &slot.counter {
            left.extend(c.parts.keys().copied());
            left.extend(c.floors.values().map(|f| f.by.peer));
            left.extend(c.base.iter().map(|(s, _)| s.peer));
        }
    }
    left.extend(doc.deleted.iter().map(|d| d.stamp.peer));
    doc.vv.iter().any(|(peer, _)| !left.contains(&peer))
}

#[test]
fn metadata_converges_over_a_lossy_mesh_of_sessions() {
    let overtaken: usize = (0..120).map(run_mesh).sum();
    assert!(overtaken > 0, "some origin's writes were all overtaken");
}
