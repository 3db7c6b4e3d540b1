//! `rhizome demo --local`, the foundation demo: three peers, offline
//! edits, delta sync, convergence, all in one process.
//!
//! Each peer is a real store on LMDB in its own directory. Syncs go through
//! the wire encoding of changes, in small batches (so they are resumable), and
//! only along the links of a line alice — bob — carol: alice and carol never
//! talk, bob carries their changes. The run ends by comparing every peer's
//! JSON and CRDT metadata.

use rhizome_engine::codec::{decode_change, encode_change, Change};
use rhizome_engine::doc::Num;
use rhizome_engine::hlc::PeerId;
use rhizome_engine::store::{Edit, OnConflict, Store, StoreConfig, StoreError};
use rhizome_engine::value::Value;
use rhizome_lmdb::{LmdbConfig, LmdbKv};
use std::path::PathBuf;
use std::process::ExitCode;

/// Command-line options of `rhizome demo` and `rhizome demo --local`.
pub struct Options {
    pub(crate) data: Option<PathBuf>,
}

impl Options {
    /// Parses `[--data DIR]`.
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut data = None;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--data" => data = Some(PathBuf::from(it.next().ok_or("--data needs a directory")?)),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(Options { data })
    }
}

struct Peer {
    name: &'static str,
    store: Store<LmdbKv>,
}

/// Wall clock in milliseconds; the engine takes time as an argument.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn json(s: &str) -> Value {
    Value::parse(s).unwrap_or(Value::Null)
}

fn field(s: &str) -> Vec<String> {
    s.split('.').map(str::to_string).collect()
}

/// Sends `to` what it lacks from `from`, in batches of 2 documents, through
/// the wire encoding. Returns (changes, bytes).
fn sync(from: &Peer, to: &Peer) -> Result<(usize, usize), Box<dyn std::error::Error>> {
    let since = to.store.read()?.version_vector()?;
    let (mut changes, mut bytes) = (0, 0);
    let mut resume = None;
    let mut upto = None;
    loop {
        let batch = from.store.read()?.changes_since(&since, resume.as_ref(), 2)?;
        let upto = upto.get_or_insert(batch.upto);
        let wire: Vec<Vec<u8>> = batch.changes.iter().map(encode_change).collect();
        bytes += wire.iter().map(Vec::len).sum::<usize>();
        let received: Vec<Change> = wire.iter().filter_map(|b| decode_change(b).ok()).collect();
        let mut w = to.store.write(now_ms())?;
        let outcome = w.apply_batch(&received)?;
        if let Some((i, e)) = outcome.refused.first() {
            return Err(format!("{} refused a change of {} (batch index {i}): {e}", to.name, from.name).into());
        }
        changes += received.len();
        if batch.resume.is_none() {
            w.mark_synced(upto);
        }
        w.commit()?;
        resume = batch.resume;
        if resume.is_none() {
            break;
        }
    }
    println!(
        "  sync {:>5} -> {:<5} {changes:>2} document deltas, {bytes:>5} bytes",
        from.name, to.name
    );
    Ok((changes, bytes))
}

fn show(p: &Peer, id: &str) -> Result<String, StoreError> {
    Ok(p.store
        .read()?
        .get("tasks", &json(id))?
        .map_or("(deleted)".to_string(), |v| v.to_string()))
}

fn edit(p: &Peer, id: &str, edits: &[Edit]) -> Result<(), StoreError> {
    let mut w = p.store.write(now_ms())?;
    w.update("tasks", &json(id), edits)?;
    w.commit().map(drop)
}

/// Runs the demo; exit code 0 when every peer converged.
pub fn run(opts: &Options) -> ExitCode {
    match run_inner(opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("rhizome demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(opts: &Options) -> Result<bool, Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let root = opts.data.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let mut peers = Vec::new();
    for (i, name) in ["alice", "bob", "carol"].into_iter().enumerate() {
        let kv = LmdbKv::open(&root.join(name), &LmdbConfig::default())?;
        let seed = now_ms() ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let store = Store::open(kv, StoreConfig::default(), PeerId(seed | 1), seed)?;
        println!("peer {name:<5} id {} store {}", store.peer(), root.join(name).display());
        peers.push(Peer { name, store });
    }
    let [alice, bob, carol] = &peers[..] else {
        unreachable!("three peers")
    };

    println!("\n1. alice creates a task list while offline");
    let mut w = alice.store.write(now_ms())?;
    for (id, title) in [("t1", "buy milk"), ("t2", "fix bike"), ("t3", "call mom")] {
        let doc = json(&format!(
            r#"{{"_id":"{id}","title":"{title}","done":false,"meta":{{"owner":"alice"}}}}"#
        ));
        w.insert("tasks", &doc, OnConflict::Fail)?;
    }
    w.commit()?;
    println!("\n2. the line alice - bob - carol syncs (carol never meets alice)");
    sync(alice, bob)?;
    sync(bob, carol)?;
    println!("  carol sees t1 = {}", show(carol, "\"t1\"")?);

    println!("\n3. everyone edits offline, concurrently");
    edit(
        alice,
        "\"t1\"",
        &[Edit::Set {
            path: field("done"),
            value: json("true"),
        }],
    )?;
    edit(
        bob,
        "\"t1\"",
        &[Edit::Set {
            path: field("meta.due"),
            value: json("\"friday\""),
        }],
    )?;
    edit(
        carol,
        "\"t1\"",
        &[Edit::Set {
            path: field("title"),
            value: json("\"buy oat milk\""),
        }],
    )?;
    for p in [alice, bob, carol] {
        edit(
            p,
            "\"t2\"",
            &[Edit::Increment {
                path: field("votes"),
                by: Num::Int(1),
            }],
        )?;
    }
    let mut w = bob.store.write(now_ms())?;
    w.delete("tasks", &json("\"t3\""))?;
    w.commit()?;
    edit(
        carol,
        "\"t3\"",
        &[Edit::Set {
            path: field("note"),
            value: json("\"she called back\""),
        }],
    )?;
    println!("  alice: t1.done = true      bob: t1.meta.due = friday   carol: t1.title = buy oat milk");
    println!("  all three: t2.votes += 1   bob deletes t3              carol, unaware, notes on t3");

    println!("\n4. gossip along the line until quiet");
    let mut total_bytes = 0;
    for _ in 0..2 {
        for (from, to) in [(alice, bob), (bob, carol), (carol, bob), (bob, alice)] {
            total_bytes += sync(from, to)?.1;
        }
    }

    println!("\n5. result on every peer");
    let mut converged = true;
    for id in ["\"t1\"", "\"t2\"", "\"t3\""] {
        let views: Vec<String> = peers.iter().map(|p| show(p, id)).collect::<Result<_, _>>()?;
        let metas: Vec<_> = peers
            .iter()
            .map(|p| p.store.read().and_then(|r| r.get_doc("tasks", &json(id))))
            .collect::<Result<_, _>>()?;
        let same = views.windows(2).all(|w| w[0] == w[1]) && metas.windows(2).all(|w| w[0] == w[1]);
        converged &= same;
        println!(
            "  {id}: {} {}",
            views[0],
            if same { "(identical on all peers)" } else { "(DIFFERS)" }
        );
        if !same {
            for (p, v) in peers.iter().zip(&views) {
                println!("      {}: {v}", p.name);
            }
        }
    }
    println!("\n{total_bytes} bytes of deltas in the final gossip");
    if converged {
        println!("every peer converged: concurrent field edits merged, counter increments added up,");
        println!("and the delete kept only carol's concurrent note.");
    } else {
        println!("NOT CONVERGED");
    }
    Ok(converged)
}
