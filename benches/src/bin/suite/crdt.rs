//! The CRDT libraries Rhizome is measured against (yrs, loro, automerge),
//! behind one small trait so every workload runs the same code on each.
//!
//! Each replica is one CRDT document holding a root map `records`, with a
//! nested map per record (its `meta` object a nested map too, so edits of
//! different fields merge as they do in Rhizome; its `tags` array a plain
//! value where the library has one, a list otherwise). Each library syncs
//! with its own exchange: yrs and loro send their version (state vector,
//! version vector) and answer with the updates the other lacks; automerge
//! runs its sync protocol until neither side has a message.

use rhizome_benches::{thread_cpu, FieldEdit};
use serde_json::Value as Json;
use std::time::{Duration, Instant};

/// What one sync exchange between two replicas cost.
#[derive(Clone, Debug, Default)]
pub struct Exchange {
    /// Messages sent, both ways.
    pub messages: usize,
    /// Waves of messages in flight (both directions at once count once):
    /// round trips are half of this, rounded up.
    pub flights: usize,
    /// Bytes sent A to B and B to A.
    pub bytes: [usize; 2],
    /// Time spent producing what goes out (both sides).
    pub produce: Duration,
    /// Time spent applying what came in (both sides).
    pub apply: Duration,
    /// CPU time of that (the rest is waiting: for the disk, for a turn).
    pub apply_cpu: Duration,
    /// Wall time of the whole exchange.
    pub total: Duration,
}

/// One replica of a CRDT library.
pub trait Crdt: Sized {
    /// The library, as printed.
    const NAME: &'static str;
    /// What its version metadata is, as printed.
    const VERSION_KIND: &'static str;
    /// An empty replica of peer `peer`.
    fn new(peer: u64) -> Self;
    /// Inserts `docs` as records in one transaction.
    fn insert(&mut self, docs: &[Json]);
    /// Applies `edits` in one transaction.
    fn edit(&mut self, edits: &[FieldEdit]);
    /// Its version metadata, encoded as it would be sent.
    fn version(&mut self) -> Vec<u8>;
    /// The update a replica at `version` lacks.
    fn diff(&mut self, version: &[u8]) -> Vec<u8>;
    /// Applies an update from another replica.
    fn apply(&mut self, update: &[u8]);
    /// Applies many updates at once (the library's batch path if it has one).
    fn apply_all(&mut self, updates: &[Vec<u8>]) {
        for u in updates {
            self.apply(u);
        }
    }
    /// A second replica of peer `peer` holding this one's state.
    fn replica(&mut self, peer: u64) -> Self;
    /// What changed since the last call (what a durable log appends).
    fn increment(&mut self) -> Vec<u8>;
    /// Whether both replicas hold the same state.
    fn same(&mut self, other: &mut Self) -> bool;

    /// The library's own sync exchange, both ways at once: each side sends
    /// its version, each answers with what the other lacks.
    fn sync(a: &mut Self, b: &mut Self) -> Exchange {
        let start = Instant::now();
        let (va, vb) = (a.version(), b.version());
        let t = Instant::now();
        let (ua, ub) = (a.diff(&vb), b.diff(&va));
        let produce = t.elapsed();
        let (t, cpu) = (Instant::now(), thread_cpu());
        b.apply(&ua);
        a.apply(&ub);
        let (apply, apply_cpu) = (t.elapsed(), thread_cpu() - cpu);
        Exchange {
            messages: 4,
            flights: 2,
            bytes: [va.len() + ua.len(), vb.len() + ub.len()],
            produce,
            apply,
            apply_cpu,
            total: start.elapsed(),
        }
    }
}

// ---- yrs ----

/// A yrs (Yjs in Rust) replica.
pub struct Yrs {
    doc: yrs::Doc,
    records: yrs::MapRef,
    /// State at the last [`Crdt::increment`].
    logged: yrs::StateVector,
}

fn y_any(v: &Json) -> yrs::Any {
    use yrs::Any;
    match v {
        Json::Null => Any::Null,
        Json::Bool(b) => Any::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Any::Number(yrs::Number::Int(i)),
            None => Any::Number(yrs::Number::Float(n.as_f64().unwrap_or_default())),
        },
        Json::String(s) => Any::String(s.as_str().into()),
        Json::Array(a) => Any::Array(a.iter().map(y_any).collect()),
        Json::Object(o) => Any::Map(std::sync::Arc::new(
            o.iter().map(|(k, v)| (k.clone(), y_any(v))).collect(),
        )),
    }
}

/// A record as a yrs map: nested objects are maps of their own.
fn y_record(doc: &Json) -> yrs::MapPrelim {
    let Json::Object(fields) = doc else {
        return yrs::MapPrelim::default();
    };
    fields
        .iter()
        .map(|(k, v)| {
            let value: yrs::In = match v {
                Json::Object(_) => yrs::In::Map(y_record(v)),
                v => yrs::In::Any(y_any(v)),
            };
            (k.as_str(), value)
        })
        .collect()
}

impl Crdt for Yrs {
    const NAME: &'static str = "yrs 0.28";
    const VERSION_KIND: &'static str = "state vector";

    fn new(peer: u64) -> Self {
        // yrs client ids are 53-bit (JavaScript numbers).
        let doc = yrs::Doc::with_client_id(peer & ((1 << 53) - 1));
        let records = doc.get_or_insert_map("records");
        Yrs {
            doc,
            records,
            logged: yrs::StateVector::default(),
        }
    }

    fn insert(&mut self, docs: &[Json]) {
        use yrs::{Map, Transact};
        let mut txn = self.doc.transact_mut();
        for d in docs {
            let id = d["_id"].as_str().unwrap_or_default();
            self.records.insert(&mut txn, id, y_record(d));
        }
    }

    fn edit(&mut self, edits: &[FieldEdit]) {
        use yrs::{Map, Transact};
        let mut txn = self.doc.transact_mut();
        for e in edits {
            if let Some(yrs::Out::YMap(m)) = self.records.get(&txn, &e.id) {
                m.insert(&mut txn, e.field, y_any(&e.value));
            }
        }
    }

    fn version(&mut self) -> Vec<u8> {
        use yrs::updates::encoder::Encode;
        use yrs::{ReadTxn, Transact};
        self.doc.transact().state_vector().encode_v1()
    }

    fn diff(&mut self, version: &[u8]) -> Vec<u8> {
        use yrs::updates::decoder::Decode;
        use yrs::{ReadTxn, Transact};
        let sv = yrs::StateVector::decode_v1(version).expect("a state vector");
        self.doc.transact().encode_diff_v1(&sv)
    }

    fn apply(&mut self, update: &[u8]) {
        use yrs::updates::decoder::Decode;
        use yrs::Transact;
        let update = yrs::Update::decode_v1(update).expect("an update");
        self.doc.transact_mut().apply_update(update).expect("applies");
    }

    fn apply_all(&mut self, updates: &[Vec<u8>]) {
        self.apply_within(updates, Duration::MAX);
    }

    fn replica(&mut self, peer: u64) -> Self {
        let mut other = Yrs::new(peer);
        let all = self.diff(&self.logged_empty());
        other.apply(&all);
        other.logged = other.current();
        other
    }

    fn increment(&mut self) -> Vec<u8> {
        use yrs::{ReadTxn, Transact};
        let out = self.doc.transact().encode_diff_v1(&self.logged);
        self.logged = self.current();
        out
    }

    fn same(&mut self, other: &mut Self) -> bool {
        use yrs::types::ToJson;
        use yrs::Transact;
        let (ta, tb) = (self.doc.transact(), other.doc.transact());
        self.records.to_json(&ta) == other.records.to_json(&tb)
    }
}

impl Yrs {
    /// Applies `updates`, 1,000 to a transaction, stopping once `budget`
    /// is spent; returns how many were applied. Concurrent writes of one
    /// key cost yrs time quadratic in their number (each new item is
    /// ordered against every concurrent one), which at 30,000 writers is
    /// minutes.
    pub fn apply_within(&mut self, updates: &[Vec<u8>], budget: Duration) -> usize {
        use yrs::updates::decoder::Decode;
        use yrs::Transact;
        let start = Instant::now();
        let mut applied = 0;
        for chunk in updates.chunks(1_000) {
            let mut txn = self.doc.transact_mut();
            for u in chunk {
                let update = yrs::Update::decode_v1(u).expect("an update");
                txn.apply_update(update).expect("applies");
            }
            drop(txn);
            applied += chunk.len();
            if start.elapsed() > budget {
                break;
            }
        }
        applied
    }

    fn current(&self) -> yrs::StateVector {
        use yrs::{ReadTxn, Transact};
        self.doc.transact().state_vector()
    }
    fn logged_empty(&self) -> Vec<u8> {
        use yrs::updates::encoder::Encode;
        yrs::StateVector::default().encode_v1()
    }
}

// ---- loro ----

/// A loro replica.
pub struct Loro {
    doc: loro::LoroDoc,
    records: loro::LoroMap,
    logged: loro::VersionVector,
}

fn loro_value(v: &Json) -> loro::LoroValue {
    use loro::LoroValue;
    match v {
        Json::Null => LoroValue::Null,
        Json::Bool(b) => LoroValue::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => LoroValue::I64(i),
            None => LoroValue::Double(n.as_f64().unwrap_or_default()),
        },
        Json::String(s) => LoroValue::from(s.as_str()),
        Json::Array(a) => LoroValue::from(a.iter().map(loro_value).collect::<Vec<_>>()),
        Json::Object(o) => LoroValue::from(
            o.iter()
                .map(|(k, v)| (k.clone(), loro_value(v)))
                .collect::<std::collections::HashMap<_, _>>(),
        ),
    }
}

/// Fills `map` with a record's fields; nested objects are maps of their own.
fn loro_fill(map: &loro::LoroMap, doc: &Json) {
    let Json::Object(fields) = doc else { return };
    for (k, v) in fields {
        match v {
            Json::Object(_) => {
                let child = map.insert_container(k, loro::LoroMap::new()).expect("insert");
                loro_fill(&child, v);
            }
            v => map.insert(k, loro_value(v)).expect("insert"),
        }
    }
}

impl Crdt for Loro {
    const NAME: &'static str = "loro 1.17";
    const VERSION_KIND: &'static str = "version vector";

    fn new(peer: u64) -> Self {
        let doc = loro::LoroDoc::new();
        doc.set_peer_id(peer).expect("peer id");
        let records = doc.get_map("records");
        Loro {
            doc,
            records,
            logged: loro::VersionVector::default(),
        }
    }

    fn insert(&mut self, docs: &[Json]) {
        for d in docs {
            let id = d["_id"].as_str().unwrap_or_default();
            let m = self.records.insert_container(id, loro::LoroMap::new()).expect("insert");
            loro_fill(&m, d);
        }
        self.doc.commit();
    }

    fn edit(&mut self, edits: &[FieldEdit]) {
        for e in edits {
            if let Some(loro::ValueOrContainer::Container(loro::Container::Map(m))) = self.records.get(&e.id) {
                m.insert(e.field, loro_value(&e.value)).expect("insert");
            }
        }
        self.doc.commit();
    }

    fn version(&mut self) -> Vec<u8> {
        self.doc.oplog_vv().encode()
    }

    fn diff(&mut self, version: &[u8]) -> Vec<u8> {
        let vv = loro::VersionVector::decode(version).expect("a version vector");
        self.doc.export(loro::ExportMode::updates(&vv)).expect("export")
    }

    fn apply(&mut self, update: &[u8]) {
        self.doc.import(update).expect("import");
    }

    fn apply_all(&mut self, updates: &[Vec<u8>]) {
        self.doc.import_batch(updates).expect("import");
    }

    fn replica(&mut self, peer: u64) -> Self {
        let doc = self.doc.fork();
        doc.set_peer_id(peer).expect("peer id");
        let records = doc.get_map("records");
        let logged = doc.oplog_vv();
        Loro { doc, records, logged }
    }

    fn increment(&mut self) -> Vec<u8> {
        let out = self
            .doc
            .export(loro::ExportMode::updates(&self.logged))
            .expect("export");
        self.logged = self.doc.oplog_vv();
        out
    }

    fn same(&mut self, other: &mut Self) -> bool {
        self.doc.oplog_vv() == other.doc.oplog_vv() && self.doc.get_deep_value() == other.doc.get_deep_value()
    }
}

// ---- automerge ----

/// An automerge replica.
pub struct Automerge {
    doc: automerge::AutoCommit,
}

fn am_scalar(v: &Json) -> automerge::ScalarValue {
    use automerge::ScalarValue;
    match v {
        Json::Bool(b) => ScalarValue::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => ScalarValue::Int(i),
            None => ScalarValue::F64(n.as_f64().unwrap_or_default()),
        },
        Json::String(s) => ScalarValue::Str(s.as_str().into()),
        _ => ScalarValue::Null,
    }
}

/// Fills the map `obj` with a record's fields: nested objects are maps,
/// arrays lists (automerge has no plain array value).
fn am_fill(doc: &mut automerge::AutoCommit, obj: &automerge::ObjId, fields: &serde_json::Map<String, Json>) {
    use automerge::transaction::Transactable;
    use automerge::ObjType;
    for (k, v) in fields {
        match v {
            Json::Object(o) => {
                let child = doc.put_object(obj, k.as_str(), ObjType::Map).expect("put");
                am_fill(doc, &child, o);
            }
            Json::Array(a) => {
                let list = doc.put_object(obj, k.as_str(), ObjType::List).expect("put");
                for (i, item) in a.iter().enumerate() {
                    doc.insert(&list, i, am_scalar(item)).expect("insert");
                }
            }
            v => doc.put(obj, k.as_str(), am_scalar(v)).expect("put"),
        }
    }
}

fn am_actor(peer: u64) -> automerge::ActorId {
    automerge::ActorId::from(peer.to_be_bytes().as_slice())
}

impl Crdt for Automerge {
    const NAME: &'static str = "automerge 0.12";
    const VERSION_KIND: &'static str = "heads";

    fn new(peer: u64) -> Self {
        Automerge {
            doc: automerge::AutoCommit::new().with_actor(am_actor(peer)),
        }
    }

    fn insert(&mut self, docs: &[Json]) {
        use automerge::transaction::Transactable;
        for d in docs {
            let Json::Object(fields) = d else { continue };
            let id = d["_id"].as_str().unwrap_or_default();
            let m = self
                .doc
                .put_object(automerge::ROOT, id, automerge::ObjType::Map)
                .expect("put");
            am_fill(&mut self.doc, &m, fields);
        }
        self.doc.commit();
    }

    fn edit(&mut self, edits: &[FieldEdit]) {
        use automerge::transaction::Transactable;
        use automerge::ReadDoc;
        for e in edits {
            if let Ok(Some((_, obj))) = self.doc.get(automerge::ROOT, e.id.as_str()) {
                self.doc.put(&obj, e.field, am_scalar(&e.value)).expect("put");
            }
        }
        self.doc.commit();
    }

    fn version(&mut self) -> Vec<u8> {
        self.doc.get_heads().iter().flat_map(|h| h.0).collect()
    }

    fn diff(&mut self, version: &[u8]) -> Vec<u8> {
        let heads: Vec<automerge::ChangeHash> = version
            .chunks_exact(32)
            .map(|c| automerge::ChangeHash(c.try_into().expect("32 bytes")))
            .collect();
        self.doc.save_after(&heads)
    }

    fn apply(&mut self, update: &[u8]) {
        self.doc.load_incremental(update).expect("load");
    }

    fn apply_all(&mut self, updates: &[Vec<u8>]) {
        // Concatenated changes load in one call.
        self.doc.load_incremental(&updates.concat()).expect("load");
    }

    fn replica(&mut self, peer: u64) -> Self {
        Automerge {
            doc: self.doc.fork().with_actor(am_actor(peer)),
        }
    }

    fn increment(&mut self) -> Vec<u8> {
        self.doc.save_incremental()
    }

    fn same(&mut self, other: &mut Self) -> bool {
        let mut a = self.doc.get_heads();
        let mut b = other.doc.get_heads();
        a.sort();
        b.sort();
        a == b
    }

    /// The automerge sync protocol, both sides generating and receiving
    /// in waves until neither has anything to say.
    fn sync(a: &mut Self, b: &mut Self) -> Exchange {
        use automerge::sync::{Message, State, SyncDoc};
        let start = Instant::now();
        let mut states = [State::new(), State::new()];
        let mut ex = Exchange::default();
        // Bounded: the protocol converges in a few waves.
        for _ in 0..64 {
            let t = Instant::now();
            let out: Vec<Option<Vec<u8>>> = [&mut *a, &mut *b]
                .into_iter()
                .zip(states.iter_mut())
                .map(|(r, s)| r.doc.sync().generate_sync_message(s).map(Message::encode))
                .collect();
            ex.produce += t.elapsed();
            if out.iter().all(Option::is_none) {
                break;
            }
            ex.flights += 1;
            let (t, cpu) = (Instant::now(), thread_cpu());
            for (from, msg) in out.into_iter().enumerate() {
                let Some(bytes) = msg else { continue };
                ex.messages += 1;
                ex.bytes[from] += bytes.len();
                let to = if from == 0 { &mut *b } else { &mut *a };
                let msg = Message::decode(&bytes).expect("a sync message");
                to.doc
                    .sync()
                    .receive_sync_message(&mut states[1 - from], msg)
                    .expect("receive");
            }
            ex.apply += t.elapsed();
            ex.apply_cpu += thread_cpu() - cpu;
        }
        ex.total = start.elapsed();
        ex
    }
}
