//! A small task-list app embedding a Rhizome peer.
//!
//! It opens a peer (in memory, or in `--data DIR` so the list survives),
//! observes the open tasks, and prints each change of that live result as a
//! diff. It then adds, edits and completes tasks, and a second peer (a
//! "phone", connected in-process) edits the same list concurrently: its
//! changes arrive through sync and show up in the same live query.
//!
//! `cargo run --example tasks [-- --data DIR]`

use rhizome_actors::{Peer, PeerConfig, PeerError, QueryEvent};
use serde_json::{json, Value};
use std::time::Duration;

const OPEN_TASKS: &str = "SELECT * FROM tasks WHERE done = false ORDER BY created_at";

fn title(doc: &Value) -> &str {
    doc["title"].as_str().unwrap_or("?")
}

/// Prints one event of the live query as a diff against the previous one.
fn print_event(n: usize, ev: &QueryEvent, previous: &[Value]) {
    let now = ev.json_items();
    println!("  [live #{n}] {} open task(s)", now.len());
    for &i in &ev.diff.inserted {
        println!("    + {}", title(&now[i]));
    }
    for &i in &ev.diff.deleted {
        println!("    - {}", previous.get(i).map_or("?", title));
    }
    for &i in &ev.diff.updated {
        println!("    ~ {}", title(&now[i]));
    }
    for &(from, to) in &ev.diff.moved {
        println!("    > {} moved {from} -> {to}", title(&now[to]));
    }
}

async fn add(peer: &Peer, id: &str, title: &str, at: u64) -> Result<(), PeerError> {
    println!("{}: add {title:?}", peer.id());
    peer.store()
        .execute(
            "INSERT INTO tasks DOCUMENTS (:t) ON ID CONFLICT DO NOTHING",
            json!({"t": {"_id": id, "title": title, "done": false, "created_at": at}}),
        )
        .await?;
    Ok(())
}

/// Waits (at most 5 s) until `dql` returns a row count that `ok` accepts.
async fn wait_for(peer: &Peer, dql: &str, ok: impl Fn(usize) -> bool) -> Result<(), PeerError> {
    for _ in 0..500 {
        if ok(peer.store().execute(dql, json!({})).await?.items.len()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(PeerError::InvalidInput {
        reason: format!("timed out waiting on {dql}"),
    })
}

async fn run(config: PeerConfig) -> Result<(), PeerError> {
    let laptop = Peer::open(config).await?;
    println!("laptop peer {} open", laptop.id());
    // A peer receives only what it subscribes to.
    laptop.sync().subscribe("SELECT * FROM tasks", json!({})).await?;

    // The live query: print every change of the open tasks.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<usize>(64);
    let mut live = laptop.store().observe(OPEN_TASKS, json!({})).await?;
    let printer = tokio::spawn(async move {
        let (mut n, mut previous) = (0, Vec::new());
        while let Some(ev) = live.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    eprintln!("  [live] {e}");
                    continue;
                }
            };
            n += 1;
            print_event(n, &ev, &previous);
            previous = ev.json_items();
            let _ = done_tx.send(previous.len()).await;
        }
    });
    let settle = async |rx: &mut tokio::sync::mpsc::Receiver<usize>| {
        // Wait for the live query to catch up, then a moment of quiet.
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(150), rx.recv()).await {}
    };
    settle(&mut done_rx).await;

    add(&laptop, "milk", "buy milk", 1).await?;
    add(&laptop, "call", "call grandma", 2).await?;
    add(&laptop, "tax", "file taxes", 3).await?;
    settle(&mut done_rx).await;

    println!("{}: rename and complete in one transaction", laptop.id());
    laptop
        .store()
        .transaction(|tx| {
            tx.execute("UPDATE tasks SET title = 'buy oat milk' WHERE _id = 'milk'", json!({}))?;
            tx.execute("UPDATE tasks SET done = true WHERE _id = 'call'", json!({}))?;
            Ok(())
        })
        .await?;
    settle(&mut done_rx).await;

    // A second device joins; both edit while connected.
    let phone = Peer::open(PeerConfig::memory()).await?;
    phone.sync().subscribe("SELECT * FROM tasks", json!({})).await?;
    println!("phone peer {} connects", phone.id());
    let link = laptop.connect_in_process(&phone).await?;
    wait_for(&phone, "SELECT * FROM tasks WHERE _id = 'tax'", |n| n == 1).await?;
    add(&phone, "plants", "water the plants", 4).await?;
    phone
        .store()
        .execute("UPDATE tasks SET done = true WHERE _id = 'tax'", json!({}))
        .await
        .map(|r| {
            println!(
                "{}: completed {} task(s) it had synced",
                phone.id(),
                r.mutated_ids.len()
            )
        })?;
    settle(&mut done_rx).await;

    wait_for(&laptop, OPEN_TASKS, |n| n == 2).await?;
    let graph = laptop.presence().graph();
    println!(
        "laptop sees {} peer(s): {:?}",
        graph.peers.len(),
        graph.peers.keys().collect::<Vec<_>>()
    );
    let on_laptop = laptop.store().execute(OPEN_TASKS, json!({})).await?.items;
    let on_phone = phone.store().execute(OPEN_TASKS, json!({})).await?.items;
    println!(
        "open on laptop: {:?}\nopen on phone:  {:?}",
        on_laptop.iter().map(title).collect::<Vec<_>>(),
        on_phone.iter().map(title).collect::<Vec<_>>()
    );
    link.close().await;
    phone.close().await;
    laptop.close().await;
    let _ = printer.await;
    if on_laptop != on_phone {
        return Err(PeerError::InvalidInput {
            reason: "the two peers did not converge".into(),
        });
    }
    println!("both peers agree");
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match args.as_slice() {
        [] => PeerConfig::memory(),
        [flag, dir] if flag == "--data" => PeerConfig::directory(dir),
        _ => {
            eprintln!("usage: tasks [--data DIR]");
            return std::process::ExitCode::from(2);
        }
    };
    match run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
