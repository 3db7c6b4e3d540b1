//! A deterministic driver of two sans-IO sync sessions over two in-memory
//! stores, shared by the sync tests (`sync_session.rs`, `sync_scope.rs`).
//!
//! Each [`Peer`] does the store work its session asks for at once
//! (`ReadVersionVector`, `Serve` with the last `Interest`, `Apply` with
//! `mark_synced(claim)`), and the [`Net`] carries frames and fires timers
//! in virtual time from one ordered queue: on a perfect link every frame
//! arrives after 1 ms, in order; with [`Faults`] a seeded generator drops,
//! duplicates and delays (so reorders) frames. Nothing reads a clock.
#![allow(dead_code)]

use rhizome_engine::codec::Change;
use rhizome_engine::doc::{Doc, Num};
use rhizome_engine::hlc::PeerId;
use rhizome_engine::mem::MemKv;
use rhizome_engine::store::{Edit, OnConflict, Store, StoreConfig};
use rhizome_engine::sync::scope::Interest;
use rhizome_engine::sync::session::{Output, Session, SessionConfig, Timer};
use rhizome_engine::sync::wire::{self, Message, Refusal, Role, SubscriptionSpec};
use rhizome_engine::value::Value;
use rhizome_engine::vv::VersionVector;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Wall clock of the first write (virtual milliseconds are added to it).
pub const NOW_MS: u64 = 1_700_000_000_000;
/// `SessionConfig::stall_ms` of every harness peer.
pub const STALL_MS: u64 = 100;
/// `SessionConfig::retry_ms` of every harness peer.
pub const RETRY_MS: u64 = 10;

/// A subscription without parameters.
pub fn spec(query: &str) -> SubscriptionSpec {
    spec_with(query, "{}")
}

/// A subscription with parameters (JSON text).
pub fn spec_with(query: &str, params: &str) -> SubscriptionSpec {
    SubscriptionSpec {
        query: query.into(),
        params: params.into(),
    }
}

/// Parses JSON text (test data).
pub fn v(json: &str) -> Value {
    Value::parse(json).expect("test JSON")
}

/// A string id.
pub fn id(s: &str) -> Value {
    Value::String(s.into())
}

/// Decodes a frame the session produced.
pub fn msg(frame: &[u8]) -> Message {
    wire::decode(frame, wire::MAX_FRAME_BYTES as usize)
        .expect("the session sends decodable frames")
        .1
}

/// A frame of the protocol version in use.
pub fn frame(m: &Message) -> Vec<u8> {
    wire::encode(m, wire::PROTOCOL_VERSION)
}

/// The session configuration of a harness peer.
pub fn config(peer: u64, subscriptions: Vec<SubscriptionSpec>) -> SessionConfig {
    SessionConfig {
        me: PeerId(peer),
        role: Role::SmallPeer,
        subscriptions,
        max_frame_bytes: wire::DEFAULT_MAX_FRAME_BYTES,
        retry_ms: RETRY_MS,
        stall_ms: STALL_MS,
        claimed_for: None,
    }
}

/// One `Output::Apply` the peer carried out.
#[derive(Clone, Debug)]
pub struct Applied {
    pub round: u64,
    pub changes: Vec<Change>,
    pub last: bool,
    pub claim: Option<VersionVector>,
    pub ok: bool,
}

/// What the driver asks of the network.
#[derive(Debug)]
pub enum Effect {
    Send(Vec<u8>),
    Timer(Timer, u64),
}

/// A store, its session, and a record of what the session asked for.
pub struct Peer {
    pub store: Store<MemKv>,
    pub session: Session,
    /// The remote's interest (the last `Output::Interest`).
    pub interest: Arc<Interest>,
    pub established: Option<(PeerId, Role, u16)>,
    pub closed: Option<Option<Refusal>>,
    pub caught_up: usize,
    /// Every message sent, decoded, in order.
    pub sent: Vec<Message>,
    /// Every `Serve` (round, since).
    pub serves: Vec<(u64, VersionVector)>,
    pub applies: Vec<Applied>,
    /// Documents per `Changes` batch when serving.
    pub batch: usize,
    /// Virtual milliseconds of the next write (set by the network).
    pub clock: u64,
    /// Answer `Apply` with a failure (the store refused something).
    pub fail_applies: bool,
    /// `Rebase` outputs carried out.
    pub rebases: usize,
    /// What the store's version vector is complete for, as a driver
    /// persists it (`None`: the subscriptions it was created with).
    pub claimed_for: Option<Vec<SubscriptionSpec>>,
    /// The subscriptions it was created with.
    pub first_subscriptions: Vec<SubscriptionSpec>,
}

impl Peer {
    /// A peer `peer` (its store seeded with it) subscribing to `subscriptions`.
    pub fn new(peer: u64, subscriptions: &[&str]) -> Peer {
        Peer::with_specs(peer, subscriptions.iter().map(|q| spec(q)).collect())
    }

    /// [`Peer::new`] with full subscription specs.
    pub fn with_specs(peer: u64, subscriptions: Vec<SubscriptionSpec>) -> Peer {
        let store = Store::open(MemKv::new(), StoreConfig::default(), PeerId(peer), peer).expect("store");
        Peer {
            store,
            session: Session::new(config(peer, subscriptions.clone()), 0),
            interest: Arc::new(Interest::none()),
            established: None,
            closed: None,
            caught_up: 0,
            sent: Vec::new(),
            serves: Vec::new(),
            applies: Vec::new(),
            batch: 2,
            clock: 0,
            fail_applies: false,
            rebases: 0,
            claimed_for: None,
            first_subscriptions: subscriptions,
        }
    }

    fn now_ms(&mut self) -> u64 {
        // Strictly increasing, so every local write gets a later stamp.
        self.clock += 1;
        NOW_MS + self.clock
    }

    /// What this replica has completely received.
    pub fn vv(&self) -> VersionVector {
        self.store.read().expect("read").version_vector().expect("vv")
    }

    /// One local write transaction; the session is told (it pokes).
    pub fn write(&mut self, f: impl FnOnce(&mut rhizome_engine::store::WriteTx<'_, MemKv>)) {
        let now = self.now_ms();
        let mut w = self.store.write(now).expect("write");
        f(&mut w);
        w.commit().expect("commit");
        self.session.handle_local_commit();
    }

    /// Inserts (merging into an existing document).
    pub fn insert(&mut self, coll: &str, json: &str) {
        let doc = v(json);
        self.write(|w| {
            w.insert(coll, &doc, OnConflict::Merge).expect("insert");
        });
    }

    /// Sets a field of a live document (nothing if there is none).
    pub fn set(&mut self, coll: &str, doc: &str, field: &str, value: &str) {
        let edit = Edit::Set {
            path: vec![field.into()],
            value: v(value),
        };
        self.write(|w| {
            w.update(coll, &id(doc), &[edit]).expect("update");
        });
    }

    /// Adds to a counter field of a live document.
    pub fn increment(&mut self, coll: &str, doc: &str, field: &str, by: i64) {
        let edit = Edit::Increment {
            path: vec![field.into()],
            by: Num::Int(by),
        };
        self.write(|w| {
            w.update(coll, &id(doc), &[edit]).expect("increment");
        });
    }

    /// Deletes a live document.
    pub fn delete(&mut self, coll: &str, doc: &str) {
        self.write(|w| {
            w.delete(coll, &id(doc)).expect("delete");
        });
    }

    /// The live documents of `coll` as sorted JSON text.
    pub fn live(&self, coll: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.store
            .read()
            .expect("read")
            .scan(coll, &mut |d| {
                out.push(d.expect("doc").to_string());
                true
            })
            .expect("scan");
        // Storage order differs between replicas; contents must not.
        out.sort();
        out
    }

    /// The live document `doc` of `coll`, as JSON.
    pub fn get(&self, coll: &str, doc: &str) -> Option<Value> {
        self.store.read().expect("read").get(coll, &id(doc)).expect("get")
    }

    /// The CRDT state of `doc` (deleted ones too).
    pub fn doc(&self, coll: &str, doc: &str) -> Option<Doc> {
        self.store
            .read()
            .expect("read")
            .get_doc(coll, &id(doc))
            .expect("get_doc")
    }

    /// Every stored document of `coll` (tombstones too) by id, as CRDT state.
    pub fn states(&self, coll: &str) -> BTreeMap<String, Doc> {
        let r = self.store.read().expect("read");
        let mut ids = Vec::new();
        r.scan_raw(coll, &mut |d| {
            ids.push(d.expect("record").id().expect("id"));
            true
        })
        .expect("scan_raw");
        ids.into_iter()
            .map(|i| {
                let doc = r.get_doc(coll, &i).expect("get_doc").expect("stored");
                (i.to_string(), doc)
            })
            .collect()
    }

    /// The remote's role (a small peer until the handshake says).
    pub fn remote_role(&self) -> Role {
        self.established.map_or(Role::SmallPeer, |e| e.1)
    }

    /// Requests this peer sent: (round, since).
    pub fn requests(&self) -> Vec<(u64, VersionVector)> {
        self.sent
            .iter()
            .filter_map(|m| match m {
                Message::Request { round, since, .. } => Some((*round, since.clone())),
                _ => None,
            })
            .collect()
    }

    /// Changes this peer received and applied, flattened.
    pub fn received(&self) -> Vec<&Change> {
        self.applies.iter().flat_map(|a| a.changes.iter()).collect()
    }

    /// The refusal that closed the session, if it closed with one.
    pub fn refusal(&self) -> Option<&Refusal> {
        self.closed.as_ref().and_then(|r| r.as_ref())
    }

    /// Answers the session's outputs; returns what the network must do.
    pub fn drain(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        while let Some(out) = self.session.poll_output() {
            match out {
                Output::Send(f) => {
                    self.sent.push(msg(&f));
                    effects.push(Effect::Send(f));
                }
                Output::Established { remote, role, version } => self.established = Some((remote, role, version)),
                Output::Rebase { round, upto, interest } => {
                    let now = self.now_ms();
                    let mut w = self.store.write(now).expect("write");
                    w.evict_covered(&upto, &interest).expect("evict");
                    w.commit().expect("commit");
                    self.rebases += 1;
                    self.session.handle_rebased(round, true);
                }
                Output::Interest(i) => self.interest = i,
                Output::ReadVersionVector { round } => {
                    let local = self.vv();
                    self.session.send_request(round, &local);
                }
                Output::Serve { round, since } => self.serve(round, since),
                Output::ReadPush { since } => {
                    let batch = self
                        .store
                        .read()
                        .expect("read")
                        .changes_for(
                            &since,
                            None,
                            rhizome_engine::sync::session::PUSH_MAX_CHANGES,
                            &self.interest,
                            self.remote_role(),
                        )
                        .expect("changes");
                    let more = batch.resume.is_some() || batch.behind_reaped;
                    self.session.send_push(&batch.changes, &batch.upto, more);
                }
                Output::Apply {
                    round,
                    changes,
                    last,
                    claim,
                } => self.apply(round, changes, last, claim),
                Output::CaughtUp => self.caught_up += 1,
                Output::ClaimedFor(specs) => self.claimed_for = Some(specs),
                Output::SetTimer { timer, after_ms } => effects.push(Effect::Timer(timer, after_ms)),
                Output::Closed { refusal } => self.closed = Some(refusal),
            }
        }
        effects
    }

    fn serve(&mut self, round: u64, since: VersionVector) {
        self.serves.push((round, since.clone()));
        {
            let r = self.store.read().expect("read");
            let scopes = rhizome_engine::sync::scope::SyncScopes::from_settings(&r.settings().expect("settings"));
            let role = self.remote_role();
            let withheld = r
                .collections()
                .expect("collections")
                .iter()
                .any(|c| self.interest.wants_collection(c) && !scopes.of(c).allows(role));
            self.session.set_withheld(withheld);
        }
        let mut resume = None;
        loop {
            let batch = self
                .store
                .read()
                .expect("read")
                .changes_for(&since, resume.as_ref(), self.batch, &self.interest, self.remote_role())
                .expect("changes");
            if batch.behind_reaped {
                self.session.send_rebase(round, batch.upto);
                return;
            }
            let last = batch.resume.is_none();
            let going = self
                .session
                .send_changes(round, &batch.changes, batch.upto, last)
                .expect("a batch fits the frame limit");
            resume = batch.resume;
            if last || !going {
                return;
            }
        }
    }

    fn apply(&mut self, round: u64, changes: Vec<Change>, last: bool, claim: Option<VersionVector>) {
        let now = self.now_ms();
        let mut w = self.store.write(now).expect("write");
        let outcome = w.apply_batch(&changes).expect("apply");
        let ok = outcome.refused.is_empty() && !self.fail_applies;
        if ok {
            if let Some(claim) = &claim {
                w.mark_synced(claim);
            }
            w.commit().expect("commit");
        }
        self.applies.push(Applied {
            round,
            changes,
            last,
            claim,
            ok,
        });
        self.session.handle_applied(round, ok);
    }
}

/// A small deterministic generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// What the link does to frames. It is a FIFO link with a variable
/// latency, but for the faults: a frame may be lost, delivered twice, or
/// held back (delayed past the frames sent after it: reordered).
#[derive(Clone, Debug)]
pub struct Faults {
    pub rng: Rng,
    /// Frames lost, per mille.
    pub drop: u64,
    /// Frames delivered twice (the copy held back), per mille.
    pub dup: u64,
    /// Frames held back, per mille.
    pub reorder: u64,
    /// Latency of a frame: 1..=max_delay_ms; a frame held back takes up
    /// to four times that.
    pub max_delay_ms: u64,
}

/// Something that happens at a virtual time.
enum Event {
    Frame { to: usize, frame: Vec<u8> },
    Timer { side: usize, timer: Timer },
}

/// A message in a line.
pub fn brief(m: &Message) -> String {
    match m {
        Message::Changes {
            round, seq, last, upto, ..
        } => format!("Changes {{ round: {round}, seq: {seq}, last: {last}, upto: {upto:?} }}"),
        Message::Hello(h) => format!("Hello {{ heard: {} }}", h.heard),
        m => format!("{m:?}"),
    }
}

/// Drops the next frame from `from` for which `matches` holds.
pub type Loss = (usize, fn(&Message) -> bool);

/// Two peers, the link between them and the timers, in virtual time.
pub struct Net {
    pub peers: [Peer; 2],
    /// Virtual milliseconds since the start.
    pub now: u64,
    queue: BTreeMap<(u64, u64), Event>,
    next: u64,
    pub faults: Option<Faults>,
    /// One-shot losses, checked before `faults`.
    pub losses: Vec<Loss>,
    /// Events handled so far.
    pub events: u64,
    /// Arrival time of the last in-order frame, per receiving side.
    arrivals: [u64; 2],
    /// Says which run this is, in failures.
    pub label: String,
    /// When set, a line per event (for debugging a failing seed).
    pub trace: Option<Vec<String>>,
    /// Frames the link lost.
    pub lost: u64,
}

/// Bound on the events of one run (a protocol that never quiesces).
const MAX_EVENTS: u64 = 200_000;

impl Net {
    pub fn new(a: Peer, b: Peer) -> Net {
        Net {
            peers: [a, b],
            now: 0,
            queue: BTreeMap::new(),
            next: 0,
            faults: None,
            losses: Vec::new(),
            events: 0,
            arrivals: [0; 2],
            label: String::new(),
            trace: None,
            lost: 0,
        }
    }

    pub fn a(&mut self) -> &mut Peer {
        &mut self.peers[0]
    }

    pub fn b(&mut self) -> &mut Peer {
        &mut self.peers[1]
    }

    fn at(&mut self, time: u64, event: Event) {
        self.next += 1;
        self.queue.insert((time, self.next), event);
    }

    /// Both sides connect (say hello).
    /// News goes as pokes and rounds only, never as pushes (for tests of
    /// rounds).
    #[allow(dead_code)]
    pub fn rounds_only(mut self) -> Net {
        for p in &mut self.peers {
            p.session.set_pushes(false);
        }
        self
    }

    pub fn connect(&mut self) {
        for side in 0..2 {
            let local = self.peers[side].vv();
            self.peers[side].session.handle_connected_at(&local);
            self.pump(side);
        }
    }

    /// Runs `f` on a side (a write, a subscription change...) at the current
    /// virtual time, then carries out its session's outputs.
    pub fn on(&mut self, side: usize, f: impl FnOnce(&mut Peer)) {
        if let Some(t) = self.trace.as_mut() {
            t.push(format!("{} on {side}", self.now));
        }
        self.peers[side].clock = self.peers[side].clock.max(self.now);
        f(&mut self.peers[side]);
        self.pump(side);
    }

    /// Carries out a side's outputs (call after driving its session).
    pub fn pump(&mut self, side: usize) {
        self.peers[side].clock = self.peers[side].clock.max(self.now);
        for effect in self.peers[side].drain() {
            match effect {
                Effect::Send(frame) => self.transmit(side, frame),
                Effect::Timer(timer, after_ms) => self.at(self.now + after_ms, Event::Timer { side, timer }),
            }
        }
    }

    fn transmit(&mut self, from: usize, frame: Vec<u8>) {
        let to = 1 - from;
        let m = msg(&frame);
        if let Some(i) = self.losses.iter().position(|(side, f)| *side == from && f(&m)) {
            self.losses.remove(i);
            self.lost += 1;
            return;
        }
        let Some(faults) = self.faults.as_mut() else {
            return self.at(self.now + 1, Event::Frame { to, frame });
        };
        if faults.rng.chance(faults.drop) {
            if let Some(t) = self.trace.as_mut() {
                t.push(format!("{} lost {from} -> {to}: {}", self.now, brief(&m)));
            }
            self.lost += 1;
            return;
        }
        let latency = 1 + faults.rng.below(faults.max_delay_ms);
        let held_back = faults.rng.chance(faults.reorder);
        let late = self.now + 1 + faults.rng.below(4 * faults.max_delay_ms);
        let copy = faults.rng.chance(faults.dup);
        let copy_late = self.now + 1 + faults.rng.below(4 * faults.max_delay_ms);
        if held_back {
            self.at(
                late,
                Event::Frame {
                    to,
                    frame: frame.clone(),
                },
            );
        } else {
            let arrival = (self.now + latency).max(self.arrivals[to]);
            self.arrivals[to] = arrival;
            self.at(
                arrival,
                Event::Frame {
                    to,
                    frame: frame.clone(),
                },
            );
        }
        if copy {
            self.at(copy_late, Event::Frame { to, frame });
        }
    }

    /// Handles the next event; false when there is none.
    pub fn step(&mut self) -> bool {
        let Some(((time, _), event)) = self.queue.pop_first() else {
            return false;
        };
        if let Some(t) = self.trace.as_mut() {
            t.push(match &event {
                Event::Frame { to, frame } => format!("{time} -> {to}: {}", brief(&msg(frame))),
                Event::Timer { side, timer } => format!("{time} timer {side}: {timer:?}"),
            });
        }
        self.events += 1;
        assert!(self.events < MAX_EVENTS, "{}: the sessions did not quiesce", self.label);
        self.now = self.now.max(time);
        let side = match event {
            Event::Frame { to, frame } => {
                self.peers[to].session.handle_frame(&frame);
                to
            }
            Event::Timer { side, timer } => {
                self.peers[side].session.handle_timer(timer);
                side
            }
        };
        self.pump(side);
        true
    }

    /// Runs until nothing is in flight and no timer is pending.
    pub fn run(&mut self) {
        while self.step() {}
    }

    /// Runs the events due up to virtual time `t`, then sets the time to `t`.
    pub fn run_until(&mut self, t: u64) {
        while self.queue.first_key_value().is_some_and(|((time, _), _)| *time <= t) {
            self.step();
        }
        self.now = self.now.max(t);
    }

    /// Frames in flight to `side`, decoded, in arrival order.
    pub fn in_flight_to(&self, side: usize) -> Vec<Message> {
        self.queue
            .values()
            .filter_map(|e| match e {
                Event::Frame { to, frame } if *to == side => Some(msg(frame)),
                _ => None,
            })
            .collect()
    }

    /// Delivers `m` to `side` now (as if the link carried it) and pumps.
    pub fn inject(&mut self, side: usize, m: &Message) {
        self.peers[side].session.handle_frame(&frame(m));
        self.pump(side);
    }

    /// Fires `timer` at `side` now and pumps.
    pub fn fire(&mut self, side: usize, timer: Timer) {
        self.peers[side].session.handle_timer(timer);
        self.pump(side);
    }

    /// Drops every pending event (frames and timers).
    pub fn clear(&mut self) {
        self.queue.clear();
    }

    /// Asserts that both replicas hold the same documents of `coll`, CRDT
    /// state included (tombstones too), and the same version vector.
    pub fn assert_converged(&self, coll: &str, context: &str) {
        let (a, b) = (&self.peers[0], &self.peers[1]);
        assert_eq!(a.live(coll), b.live(coll), "{context}: live documents differ");
        let (sa, sb) = (a.states(coll), b.states(coll));
        assert_eq!(
            sa.keys().collect::<Vec<_>>(),
            sb.keys().collect::<Vec<_>>(),
            "{context}: stored ids differ"
        );
        for (id, doc) in &sa {
            assert_eq!(Some(doc), sb.get(id), "{context}: CRDT states of {id} differ");
        }
        assert_eq!(a.vv(), b.vv(), "{context}: version vectors differ");
    }
}
