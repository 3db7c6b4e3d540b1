//! Workloads 3 (concurrent merge) and 4 (reconcile after a partition):
//! two replicas, each system syncing with its own exchange (Rhizome: two
//! real sync sessions over durable stores), and an assertion that both
//! replicas end identical.

use crate::crdt::{Automerge, Crdt, Exchange, Loro, Yrs};
use crate::insert::{now_ms, Built, PEER_A, PEER_B};
use crate::rhizome::{self, fingerprint, Commits};
use crate::{Sizes, Target};
use rhizome_benches::{concurrent_edits, dataset, field_edits, print_table, FieldEdit, SEED};
use rhizome_engine::value::Value;
use serde_json::Value as Json;
use std::path::Path;

fn ms(d: std::time::Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn ids_of(json: &[Json]) -> Vec<String> {
    json.iter()
        .map(|d| d["_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Workload 3 for one CRDT library.
fn crdt_merge<C: Crdt>(json: &[Json], edits: &[Vec<FieldEdit>; 2], sizes: &Sizes) -> Exchange {
    let mut a = C::new(PEER_A);
    for chunk in json.chunks(sizes.txn_docs) {
        a.insert(chunk);
    }
    let mut b = a.replica(PEER_B);
    for chunk in edits[0].chunks(sizes.edit_txn) {
        a.edit(chunk);
    }
    for chunk in edits[1].chunks(sizes.edit_txn) {
        b.edit(chunk);
    }
    let ex = C::sync(&mut a, &mut b);
    assert!(a.same(&mut b), "{}: replicas differ after the merge", C::NAME);
    ex
}

/// The measured sync of workload 3, apart so that a profiler can collect
/// it alone (`--toggle-collect='*merge_sync*'`).
#[inline(never)]
fn merge_sync<K: rhizome_engine::kv::Kv>(
    a: &rhizome_engine::store::Store<K>,
    b: &rhizome_engine::store::Store<K>,
    commits: Commits,
) -> crate::crdt::Exchange {
    rhizome::sync_with(a, b, now_ms(), commits)
}

/// Workload 3 for Rhizome: two durable stores in `root`/`name`-a and -b.
fn rhizome_merge(
    root: &Path,
    name: &str,
    docs: &[Value],
    edits: &[Vec<FieldEdit>; 2],
    sizes: &Sizes,
    commits: Commits,
) -> Exchange {
    let a = rhizome::open_lmdb(&root.join(format!("{name}-a")), PEER_A);
    let b = rhizome::open_lmdb(&root.join(format!("{name}-b")), PEER_B);
    for chunk in docs.chunks(sizes.txn_docs) {
        rhizome::insert(&a, chunk, now_ms());
    }
    rhizome::sync(&a, &b, now_ms());
    assert_eq!(fingerprint(&a), fingerprint(&b), "Rhizome: the shared records");
    for (store, edits) in [(&a, &edits[0]), (&b, &edits[1])] {
        for chunk in edits.chunks(sizes.edit_txn) {
            rhizome::edit(store, chunk, now_ms());
        }
    }
    let ex = merge_sync(&a, &b, commits);
    assert_eq!(
        fingerprint(&a),
        fingerprint(&b),
        "Rhizome: replicas differ after the merge"
    );
    ex
}

/// Workload 3's Rhizome merge alone (hidden `--profile-merge`): for
/// profilers, e.g. `valgrind --tool=callgrind --collect-atstart=no
/// --toggle-collect='*merge_sync*'`, then
/// the inclusive cost of `Side::apply_batch` and `Session::handle_frame`.
pub fn profile_merge(sizes: &Sizes, root: &Path) {
    let json = dataset(sizes.merge_records as u64);
    let ids = ids_of(&json);
    let edits = concurrent_edits(SEED ^ 3, &ids, sizes.merge_edits, 30);
    let docs: Vec<Value> = json.iter().map(|d| Value::from_json(d).expect("valid")).collect();
    let ex = rhizome_merge(root, "w3p", &docs, &edits, sizes, Commits::Joined);
    println!(
        "Rhizome merge: apply {} ms (CPU {} ms), produce {} ms",
        ms(ex.apply),
        ms(ex.apply_cpu),
        ms(ex.produce)
    );
}

/// Workload 3.
pub fn merge(sizes: &Sizes, root: &Path, targets: &mut Vec<Target>) {
    let json = dataset(sizes.merge_records as u64);
    let ids = ids_of(&json);
    let edits = concurrent_edits(SEED ^ 3, &ids, sizes.merge_edits, 30);
    let conflicting = edits[0]
        .iter()
        .zip(&edits[1])
        .filter(|(a, b)| a.id == b.id && a.field == b.field)
        .count();

    let docs: Vec<Value> = json.iter().map(|d| Value::from_json(d).expect("valid")).collect();
    let ours = rhizome_merge(root, "w3", &docs, &edits, sizes, Commits::Joined);
    let per_batch = rhizome_merge(root, "w3b", &docs, &edits, sizes, Commits::PerBatch);
    let per_round = rhizome_merge(root, "w3c", &docs, &edits, sizes, Commits::PerRound);

    let figures = [
        ("Rhizome (LMDB, durable)", ours.clone()),
        ("Rhizome, one commit per batch", per_batch),
        ("Rhizome, one commit per round", per_round),
        (Yrs::NAME, crdt_merge::<Yrs>(&json, &edits, sizes)),
        (Loro::NAME, crdt_merge::<Loro>(&json, &edits, sizes)),
        (Automerge::NAME, crdt_merge::<Automerge>(&json, &edits, sizes)),
    ];
    let n_edits = 2 * sizes.merge_edits;
    let per_edit = |e: &Exchange| (e.bytes[0] + e.bytes[1]) as f64 / n_edits as f64;
    let rows: Vec<Vec<String>> = figures
        .iter()
        .map(|(name, e)| {
            vec![
                name.to_string(),
                ms(e.produce),
                ms(e.apply),
                ms(e.apply_cpu),
                e.bytes[0].to_string(),
                e.bytes[1].to_string(),
                format!("{:.1}", per_edit(e)),
                e.flights.to_string(),
                format!("{:.2}", e.apply.as_secs_f64() / ours.apply.as_secs_f64()),
                format!("{:.2}", per_edit(e) / per_edit(&ours)),
                "yes".into(),
            ]
        })
        .collect();
    print_table(
        &format!(
            "3. Concurrent merge: {} shared records, {} single-field edits on each side offline ({} per commit; {conflicting} pairs on the same record and field), then sync both ways",
            sizes.merge_records, sizes.merge_edits, sizes.edit_txn
        ),
        &[
            "system",
            "produce ms",
            "apply ms",
            "apply CPU ms",
            "bytes A->B",
            "bytes B->A",
            "bytes/edit",
            "waves",
            "apply vs Rhizome",
            "bytes vs Rhizome",
            "identical",
        ],
        &rows,
    );
    println!(
        "(Rhizome: produce = reading the change log and packing frames on both sides; apply = unpacking, merging and durable commits of batches of {} documents, joined as the merger joins the batches queued at it, up to {} a commit (second row: one commit per batch, third: one per round); waves after the handshake; CRDT libraries apply in memory)",
        rhizome::BATCH_DOCS,
        rhizome::MAX_JOINED_BATCHES
    );
    let yrs = &figures[3].1;
    targets.push(Target::new(
        "3. merge: bytes/edit <= yrs's",
        per_edit(&ours) <= per_edit(yrs),
        format!("{:.1} vs {:.1} bytes/edit", per_edit(&ours), per_edit(yrs)),
    ));
    targets.push(Target::new(
        "3. merge: apply time <= half of yrs's (durable)",
        ours.apply.as_secs_f64() * 2.0 <= yrs.apply.as_secs_f64(),
        format!(
            "{} vs {} ms ({:.2}x of yrs's; CPU {} vs {} ms; one commit per batch {} ms ({:.2}x), per round {} ms)",
            ms(ours.apply),
            ms(yrs.apply),
            ours.apply.as_secs_f64() / yrs.apply.as_secs_f64(),
            ms(ours.apply_cpu),
            ms(yrs.apply_cpu),
            ms(figures[1].1.apply),
            figures[1].1.apply.as_secs_f64() / yrs.apply.as_secs_f64(),
            ms(figures[2].1.apply),
        ),
    ));
}

/// Workload 4 for one CRDT library, on the replica workload 1 built.
fn crdt_reconcile<C: Crdt>(mut a: C, edits: &[FieldEdit]) -> Exchange {
    let mut b = a.replica(PEER_B);
    a.edit(edits);
    let ex = C::sync(&mut a, &mut b);
    assert!(a.same(&mut b), "{}: replicas differ after the reconcile", C::NAME);
    ex
}

/// Workload 4, on the store and replicas workload 1 built.
pub fn reconcile(sizes: &Sizes, root: &Path, built: Built, targets: &mut Vec<Target>) {
    let ids = ids_of(&built.json);
    let edits = field_edits(SEED ^ 4, &ids, sizes.reconcile_edits);
    let a = built.store;
    let b = rhizome::open_lmdb(&root.join("w4-b"), PEER_B);
    let first = rhizome::sync(&a, &b, now_ms());
    rhizome::edit(&a, &edits, now_ms());
    let ours = rhizome::sync(&a, &b, now_ms());
    assert_eq!(
        fingerprint(&a),
        fingerprint(&b),
        "Rhizome: replicas differ after the reconcile"
    );
    drop((a, b));

    // Automerge holds fewer records (see `Sizes::automerge_docs`); its
    // edits are drawn the same way from the records it holds.
    let am_docs = sizes.automerge_docs.min(ids.len());
    let am_edits = field_edits(SEED ^ 4, &ids[..am_docs], sizes.reconcile_edits);
    let am_name = format!("{} ({am_docs} records)", Automerge::NAME);
    let figures = [
        ("Rhizome (LMDB, durable)", ours.clone(), true),
        (Yrs::NAME, crdt_reconcile(built.yrs, &edits), false),
        (Loro::NAME, crdt_reconcile(built.loro, &edits), false),
        (am_name.as_str(), crdt_reconcile(built.automerge, &am_edits), false),
    ];
    let total = |e: &Exchange| e.bytes[0] + e.bytes[1];
    let rows: Vec<Vec<String>> = figures
        .iter()
        .map(|(name, e, handshake)| {
            vec![
                name.to_string(),
                e.messages.to_string(),
                format!("{}{}", e.flights, if *handshake { " + hello" } else { "" }),
                e.flights.div_ceil(2).to_string(),
                e.bytes[0].to_string(),
                e.bytes[1].to_string(),
                total(e).to_string(),
                ms(e.total),
                format!("{:.2}", total(e) as f64 / total(&ours) as f64),
                format!("{:.2}", e.total.as_secs_f64() / ours.total.as_secs_f64()),
            ]
        })
        .collect();
    print_table(
        &format!(
            "4. Reconcile after a partition: {} shared records, {} field edits on A (one commit), each system's own sync exchange until converged",
            built.json.len(),
            sizes.reconcile_edits
        ),
        &[
            "system",
            "messages",
            "waves",
            "round trips",
            "bytes A->B",
            "bytes B->A",
            "total bytes",
            "time ms",
            "bytes vs Rhizome",
            "time vs Rhizome",
        ],
        &rows,
    );
    println!(
        "(Rhizome's first contact before it, B empty: {} messages, {} bytes ({:.0} a record), {} ms; round trips are after the handshake)",
        first.messages,
        total(&first),
        total(&first) as f64 / built.json.len() as f64,
        ms(first.total)
    );
    let loro = &figures[2].1;
    targets.push(Target::new(
        "4. reconcile: <= 1 round trip after the handshake",
        ours.flights.div_ceil(2) <= 1,
        format!("{} waves after the hellos", ours.flights),
    ));
    targets.push(Target::new(
        "4. reconcile: bytes <= loro's",
        total(&ours) <= total(loro),
        format!("{} vs {} bytes", total(&ours), total(loro)),
    ));
}
