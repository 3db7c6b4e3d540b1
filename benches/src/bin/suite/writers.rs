//! Workload 5, many writers (the B3.1 case of the public crdt-benchmarks):
//! N peers each set the same key of one shared record, starting from the
//! same state; one replica then merges all their updates. Measured: the
//! merge, the bytes of all updates, and the size of the merged replica's
//! version metadata (what it stores and sends to say what it has seen).
//!
//! Rhizome's writers are stores on the in-memory backend; each answers a
//! request from the shared version with a real `Changes` frame. The
//! merging replica is a durable LMDB store; it decodes and unpacks every
//! frame and applies them all in one transaction, recording each writer's
//! claim. Each CRDT library merges with its batch path where it has one
//! (loro `import_batch`, automerge one `load_incremental` of all the
//! changes, yrs one transaction).

use crate::crdt::{Automerge, Crdt, Loro, Yrs};
use crate::insert::{now_ms, PEER_A};
use crate::rhizome::{self, BATCH_DOCS, COLLECTION};
use crate::{Sizes, Target};
use rhizome_benches::{print_table, FieldEdit, Rng, SEED};
use rhizome_engine::codec::Change;
use rhizome_engine::hlc::PeerId;
use rhizome_engine::mem::MemKv;
use rhizome_engine::store::{Store, StoreConfig};
use rhizome_engine::sync::pack::{self, UnpackLimits};
use rhizome_engine::sync::scope::Interest;
use rhizome_engine::sync::wire::{self, Message, Role, SubscriptionSpec};
use rhizome_engine::value::Value;
use rhizome_engine::vv::{packed, VersionVector};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// What one system's merge of N writers cost.
struct Merged {
    merge: Duration,
    bytes: usize,
    version_bytes: usize,
    /// Updates merged before the time budget ran out (all, normally).
    merged: usize,
}

/// Longest the suite lets one library merge (yrs is quadratic here).
const MERGE_BUDGET: Duration = Duration::from_secs(20);

fn shared_record() -> serde_json::Value {
    json!({"_id": "shared", "v": 0})
}

fn write_of(i: usize) -> FieldEdit {
    FieldEdit {
        id: "shared".into(),
        field: "v",
        value: json!(i),
    }
}

/// Random peer ids, the same for every system.
fn peers(n: usize) -> Vec<u64> {
    let mut rng = Rng::new(SEED ^ 5);
    (0..n).map(|_| rng.next_u64() | 1).collect()
}

/// The frame a writer sends a replica at `base`.
fn rhizome_writer(peer: u64, i: usize, base: &[Change], base_vv: &VersionVector, interest: &Interest) -> Vec<u8> {
    let w = Store::open(MemKv::new(), StoreConfig::default(), PeerId(peer), peer).expect("open");
    let now = now_ms();
    let mut tx = w.write(now).expect("write");
    tx.apply_batch(base).expect("apply");
    tx.mark_synced(base_vv);
    tx.commit().expect("commit");
    rhizome::edit(&w, &[write_of(i)], now);
    let batch = w
        .read()
        .expect("read")
        .changes_for(base_vv, None, BATCH_DOCS, interest, Role::SmallPeer)
        .expect("changes");
    let message = Message::Changes {
        round: 1,
        seq: 0,
        changes: pack::pack(&batch.changes),
        upto: batch.upto.grown_past(base_vv),
        last: true,
        complete: true,
    };
    wire::encode(&message, wire::PROTOCOL_VERSION)
}

fn rhizome_merge(n: usize, root: &Path) -> (Merged, VvCosts) {
    let m = rhizome::open_lmdb(&root.join(format!("w5-{n}")), PEER_A);
    rhizome::insert(&m, &[Value::from_json(&shared_record()).expect("valid")], now_ms());
    let base = m
        .read()
        .expect("read")
        .changes_since(&VersionVector::new(), None, usize::MAX)
        .expect("changes");
    let interest = Interest::compile(&[SubscriptionSpec {
        query: format!("SELECT * FROM {COLLECTION}"),
        params: "{}".into(),
    }])
    .expect("interest");
    let frames: Vec<Vec<u8>> = peers(n)
        .iter()
        .enumerate()
        .map(|(i, &p)| rhizome_writer(p, i, &base.changes, &base.upto, &interest))
        .collect();
    let start = Instant::now();
    let mut changes = Vec::with_capacity(n);
    let mut claims = Vec::with_capacity(n);
    for f in &frames {
        let (_, msg) = wire::decode(f, wire::DEFAULT_MAX_FRAME_BYTES as usize).expect("a frame");
        let Message::Changes {
            changes: packed, upto, ..
        } = msg
        else {
            panic!("a Changes frame")
        };
        changes.extend(pack::unpack(&packed, UnpackLimits::default()).expect("unpack"));
        claims.push(upto);
    }
    // Each frame's claim is its `upto` over the shared version.
    let claim: VersionVector = base
        .upto
        .iter()
        .chain(claims.iter().flat_map(VersionVector::iter))
        .collect();
    let mut w = m.write(now_ms()).expect("write");
    let outcome = w.apply_batch(&changes).expect("apply");
    assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
    w.mark_synced(&claim);
    w.commit().expect("commit");
    let merge = start.elapsed();
    let vv = m.read().expect("read").version_vector().expect("vv");
    assert_eq!(vv.len(), n + 1, "every writer is in the version vector");
    let merged = Merged {
        merge,
        bytes: frames.iter().map(Vec::len).sum(),
        version_bytes: packed::encode(&vv).len(),
        merged: n,
    };
    (merged, vv_costs(&vv))
}

/// The merged vector's bytes as a postcard map (the encoding before
/// `vv::packed`), and the time to pack, unpack, and encode it as a map
/// (best of a few runs).
struct VvCosts {
    map_bytes: usize,
    pack: Duration,
    unpack: Duration,
    map_encode: Duration,
}

fn vv_costs(vv: &VersionVector) -> VvCosts {
    fn best<T>(mut f: impl FnMut() -> T) -> Duration {
        (0..5)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(f());
                start.elapsed()
            })
            .min()
            .unwrap_or_default()
    }
    let bytes = packed::encode(vv);
    assert_eq!(packed::decode(&bytes).as_ref(), Ok(vv), "the packed vector round-trips");
    let map: std::collections::BTreeMap<PeerId, rhizome_engine::hlc::Hlc> = vv.iter().collect();
    VvCosts {
        map_bytes: postcard_vv_map_bytes(vv),
        pack: best(|| packed::encode(vv)),
        unpack: best(|| packed::decode(&bytes)),
        map_encode: best(|| postcard::to_allocvec(&map)),
    }
}

/// The bytes the vector took as a postcard map of peer to HLC (protocol
/// 4 and store format 3, before `vv::packed`), for comparison.
fn postcard_vv_map_bytes(vv: &VersionVector) -> usize {
    let entries: std::collections::BTreeMap<PeerId, rhizome_engine::hlc::Hlc> = vv.iter().collect();
    postcard::to_allocvec(&entries).expect("encodes").len()
}

fn crdt_merge<C: Crdt>(n: usize) -> Merged {
    crdt_merge_with::<C>(n, |c, updates| {
        c.apply_all(updates);
        updates.len()
    })
}

/// The writers' updates of a CRDT library, merged by `merge` (which
/// returns how many it merged).
fn crdt_merge_with<C: Crdt>(n: usize, merge: impl FnOnce(&mut C, &[Vec<u8>]) -> usize) -> Merged {
    let mut base = C::new(PEER_A);
    base.insert(&[shared_record()]);
    let at = base.version();
    let updates: Vec<Vec<u8>> = peers(n)
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let mut w = base.replica(p);
            w.edit(&[write_of(i)]);
            w.diff(&at)
        })
        .collect();
    let start = Instant::now();
    let merged = merge(&mut base, &updates);
    let merge = start.elapsed();
    Merged {
        merge,
        bytes: updates.iter().map(Vec::len).sum(),
        version_bytes: base.version().len(),
        merged,
    }
}

/// Workload 5.
pub fn run(sizes: &Sizes, root: &Path, targets: &mut Vec<Target>) {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for n in sizes.writers {
        let (ours, vv) = rhizome_merge(n, root);
        let figures = [
            ("Rhizome (LMDB, durable)", ours),
            (
                Yrs::NAME,
                crdt_merge_with::<Yrs>(n, |y, u| y.apply_within(u, MERGE_BUDGET)),
            ),
            (Loro::NAME, crdt_merge::<Loro>(n)),
            (Automerge::NAME, crdt_merge::<Automerge>(n)),
        ];
        let kinds = [
            "version vector",
            Yrs::VERSION_KIND,
            Loro::VERSION_KIND,
            Automerge::VERSION_KIND,
        ];
        let ours = &figures[0].1;
        for ((name, f), kind) in figures.iter().zip(kinds) {
            rows.push(vec![
                n.to_string(),
                name.to_string(),
                match f.merged == n {
                    true => format!("{:.1}", f.merge.as_secs_f64() * 1e3),
                    false => format!(
                        "> {:.0} (stopped: {} of {n} merged)",
                        f.merge.as_secs_f64() * 1e3,
                        f.merged
                    ),
                },
                f.bytes.to_string(),
                format!("{:.1}", f.bytes as f64 / n as f64),
                match f.merged == n {
                    true => format!("{} ({kind})", f.version_bytes),
                    false => format!("{} ({kind} of {} writers)", f.version_bytes, f.merged),
                },
                format!(
                    "{}{:.2}",
                    if f.merged < n { "> " } else { "" },
                    f.merge.as_secs_f64() / ours.merge.as_secs_f64()
                ),
                format!("{:.2}", f.version_bytes as f64 / ours.version_bytes as f64),
            ]);
        }
        let loro = &figures[2].1;
        targets.push(Target::new(
            &format!("5. {n} writers: merge faster than loro"),
            ours.merge < loro.merge,
            format!(
                "{:.1} vs {:.1} ms",
                ours.merge.as_secs_f64() * 1e3,
                loro.merge.as_secs_f64() * 1e3
            ),
        ));
        // Per writer merged: a library stopped by the time budget reports
        // the metadata of the writers it merged, not of all of them.
        let per_writer = |f: &Merged| f.version_bytes as f64 / f.merged.max(1) as f64;
        let smallest_peer = figures[1..]
            .iter()
            .map(|(_, f)| per_writer(f))
            .fold(f64::INFINITY, f64::min);
        targets.push(Target::new(
            &format!("5. {n} writers: version metadata smaller than every peer's"),
            per_writer(ours) < smallest_peer,
            format!(
                "{:.2} vs {:.2} bytes a writer merged (smallest peer)",
                per_writer(ours),
                smallest_peer
            ),
        ));
        notes.push(format!(
            "{n} writers: Rhizome's version vector is {} bytes as stored and sent (`vv::packed`, {:.2} a writer); {} ({:.2} a writer) as a postcard map (the encoding before). Pack {:.3} ms, unpack {:.3} ms, postcard map encode {:.3} ms (pack/postcard {:.2})",
            ours.version_bytes,
            ours.version_bytes as f64 / n as f64,
            vv.map_bytes,
            vv.map_bytes as f64 / n as f64,
            vv.pack.as_secs_f64() * 1e3,
            vv.unpack.as_secs_f64() * 1e3,
            vv.map_encode.as_secs_f64() * 1e3,
            vv.pack.as_secs_f64() / vv.map_encode.as_secs_f64()
        ));
    }
    print_table(
        "5. Many writers: N peers each set the same key of one shared record; one replica merges all their updates",
        &[
            "writers",
            "system",
            "merge ms",
            "update bytes",
            "bytes/writer",
            "version metadata bytes",
            "merge vs Rhizome",
            "metadata vs Rhizome",
        ],
        &rows,
    );
    for n in notes {
        println!("({n})");
    }
}
