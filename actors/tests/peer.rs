//! The embedding API end to end: statements, transactions, live queries,
//! sync subscriptions, presence, in-process sync, restarts after injected
//! panics, and close. Runs on tokio and, built with `--cfg madsim`, inside
//! the simulator.

use rhizome_actors::{LinkKind, LiveQuery, Peer, PeerConfig, PeerError, QueryEvent, Subsystem};
use serde_json::{json, Value};
use std::time::Duration;

/// A peer in memory that wants the test collections from other peers.
async fn memory_peer() -> Peer {
    let peer = Peer::open(PeerConfig::memory()).await.expect("open");
    for coll in ["t", "tasks"] {
        let q = format!("SELECT * FROM {coll}");
        peer.sync().subscribe(&q, json!({})).await.expect("subscribe");
    }
    peer
}

async fn insert(peer: &Peer, coll: &str, doc: Value) {
    peer.store()
        .execute(&format!("INSERT INTO {coll} DOCUMENTS (:d)"), json!({ "d": doc }))
        .await
        .expect("insert");
}

async fn titles(peer: &Peer, dql: &str) -> Vec<String> {
    let out = peer.store().execute(dql, json!({})).await.expect("select");
    out.items
        .iter()
        .map(|d| d["title"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// The next live-query event, which must be a result (not an error).
async fn next_event(live: &mut LiveQuery, what: &str) -> QueryEvent {
    match live.next().await {
        Some(Ok(ev)) => ev,
        other => panic!("{what}: expected an event, got {other:?}"),
    }
}

/// The titles of a live-query event's rows.
fn event_titles(ev: &QueryEvent) -> Vec<Value> {
    ev.json_items().iter().map(|d| d["title"].clone()).collect()
}

/// Runs a statement without parameters that must succeed.
async fn run(peer: &Peer, dql: &str, what: &str) {
    peer.store().execute(dql, json!({})).await.expect(what);
}

/// Polls `cond` on the (virtual, under madsim) clock, up to 5 s.
async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    for _ in 0..500 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn statements_return_items_and_mutated_ids() {
    let peer = memory_peer().await;
    let out = peer
        .store()
        .execute(
            "INSERT INTO tasks DOCUMENTS (:a), (:b)",
            json!({"a": {"_id": "a", "title": "milk", "done": false}, "b": {"_id": "b", "title": "eggs", "done": true}}),
        )
        .await
        .expect("insert");
    assert_eq!(out.mutated_ids, vec![json!("a"), json!("b")]);
    assert_eq!(titles(&peer, "SELECT * FROM tasks WHERE done = false").await, ["milk"]);
    let out = peer
        .store()
        .execute("UPDATE tasks SET done = true WHERE _id = :id", json!({"id": "a"}))
        .await
        .expect("update");
    assert_eq!(out.mutated_ids, vec![json!("a")]);
    let n = peer
        .store()
        .execute("SELECT count(*) AS n FROM tasks WHERE done = true", Value::Null)
        .await
        .expect("count");
    assert_eq!(n.items, vec![json!({"n": 2})]);
    peer.close().await;
}

#[tokio::test]
async fn bad_input_is_a_typed_error_not_a_panic() {
    let peer = memory_peer().await;
    let e = peer.store().execute("SELEC * FROM t", json!({})).await.unwrap_err();
    assert!(matches!(e, PeerError::Dql(_)), "{e:?}");
    assert!(e.to_string().contains("line 1"), "{e}");
    let e = peer
        .store()
        .execute("SELECT * FROM t", json!([1, 2]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("parameters must be a JSON object"), "{e}");
    let e = peer
        .store()
        .execute("SELECT * FROM t WHERE a = :missing", json!({}))
        .await
        .unwrap_err();
    assert!(matches!(e, PeerError::Dql(_)), "{e:?}");
    insert(&peer, "t", json!({"_id": 1})).await;
    let e = peer
        .store()
        .execute("INSERT INTO t DOCUMENTS ({'_id': 1})", json!({}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("exists"), "{e}");
    // The peer still serves.
    assert_eq!(
        peer.store()
            .execute("SELECT * FROM t", json!({}))
            .await
            .expect("select")
            .items
            .len(),
        1
    );
    peer.close().await;
}

#[tokio::test]
async fn transactions_commit_together_or_not_at_all() {
    let peer = memory_peer().await;
    let seen = peer
        .store()
        .transaction(|tx| {
            tx.execute("INSERT INTO tasks DOCUMENTS ({'_id': 'a', 'title': 'milk'})", json!({}))?;
            tx.execute("UPDATE tasks SET title = 'oat milk' WHERE _id = 'a'", json!({}))?;
            Ok(tx.execute("SELECT * FROM tasks", json!({}))?.items)
        })
        .await
        .expect("transaction");
    assert_eq!(seen[0]["title"], "oat milk", "reads see the transaction's writes");

    let failed = peer
        .store()
        .transaction(|tx| {
            tx.execute("INSERT INTO tasks DOCUMENTS ({'_id': 'b', 'title': 'eggs'})", json!({}))?;
            Err::<(), _>(PeerError::InvalidInput {
                reason: "changed my mind".into(),
            })
        })
        .await;
    assert!(failed.is_err());
    // A statement error the closure swallows still aborts the transaction.
    let swallowed = peer
        .store()
        .transaction(|tx| {
            tx.execute(
                "INSERT INTO tasks DOCUMENTS ({'_id': 'c', 'title': 'bread'})",
                json!({}),
            )?;
            let _ = tx.execute("INSERT INTO tasks DOCUMENTS ({'_id': 'a'})", json!({}));
            Ok(())
        })
        .await;
    assert!(swallowed.is_err());
    let panicked = peer
        .store()
        .transaction(|tx| -> Result<(), PeerError> {
            tx.execute("INSERT INTO tasks DOCUMENTS ({'_id': 'd', 'title': 'jam'})", json!({}))?;
            panic!("app bug")
        })
        .await;
    assert!(matches!(panicked, Err(PeerError::InvalidInput { .. })), "{panicked:?}");
    assert_eq!(
        titles(&peer, "SELECT * FROM tasks").await,
        ["oat milk"],
        "only the first committed"
    );
    peer.close().await;
}

#[tokio::test]
async fn live_queries_deliver_results_with_diffs_and_stop_when_dropped() {
    let peer = memory_peer().await;
    insert(&peer, "tasks", json!({"_id": "a", "title": "milk", "done": false})).await;
    let mut open = peer
        .store()
        .observe("SELECT * FROM tasks WHERE done = false ORDER BY title", json!({}))
        .await
        .expect("observe");
    let first = next_event(&mut open, "first").await;
    assert_eq!(first.items.len(), 1);
    assert_eq!(first.diff.inserted, vec![0]);

    insert(&peer, "tasks", json!({"_id": "b", "title": "eggs", "done": false})).await;
    let ev = next_event(&mut open, "insert event").await;
    assert_eq!(event_titles(&ev), [json!("eggs"), json!("milk")]);
    assert_eq!(ev.diff.inserted, vec![0]);

    run(&peer, "UPDATE tasks SET done = true WHERE _id = 'a'", "update").await;
    let ev = next_event(&mut open, "update event").await;
    assert_eq!(ev.items.len(), 1);
    assert_eq!(ev.diff.deleted, vec![1]);

    // A write that does not change the result sends nothing.
    insert(&peer, "other", json!({"_id": 1})).await;
    run(&peer, "UPDATE tasks SET title = 'toast' WHERE _id = 'b'", "update").await;
    let ev = next_event(&mut open, "title change").await;
    assert_eq!(ev.diff.updated, vec![0]);
    assert_eq!(ev.json_items()[0]["title"], "toast");

    // The callback form, cancelled by dropping its handle.
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let handle = peer
        .store()
        .observe_with("SELECT * FROM tasks", json!({}), move |ev| {
            let _ = tx.try_send(ev.map(|e| e.items.len()).unwrap_or(usize::MAX));
        })
        .await
        .expect("observe_with");
    assert_eq!(rx.recv().await, Some(2));
    insert(&peer, "tasks", json!({"_id": "c", "title": "jam", "done": true})).await;
    assert_eq!(rx.recv().await, Some(3));
    drop(handle);
    assert_eq!(rx.recv().await, None, "the callback task ended with its handle");
    drop(open);
    peer.close().await;
}

#[tokio::test]
async fn a_slow_consumer_gets_the_latest_result_with_a_correct_diff() {
    let peer = memory_peer().await;
    let mut live = peer
        .store()
        .observe("SELECT * FROM tasks ORDER BY _id", json!({}))
        .await
        .expect("observe");
    assert!(next_event(&mut live, "first").await.items.is_empty());
    for i in 0..20 {
        insert(&peer, "tasks", json!({"_id": i, "title": format!("t{i}")})).await;
    }
    // Let the observer catch up on every commit before reading.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ev = next_event(&mut live, "event").await;
    assert_eq!(ev.items.len(), 20, "the latest result, not the first of 20 queued");
    assert_eq!(ev.diff.inserted, (0..20).collect::<Vec<_>>());
    peer.close().await;
}

#[tokio::test]
async fn identity_data_and_subscriptions_persist_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let peer = Peer::open(PeerConfig::directory(dir.path())).await.expect("open");
    let id = peer.id();
    insert(&peer, "tasks", json!({"_id": "a", "title": "milk"})).await;
    let sub = peer
        .sync()
        .subscribe("SELECT * FROM tasks WHERE done = :d", json!({"d": false}))
        .await
        .expect("subscribe");
    let again = peer
        .sync()
        .subscribe("SELECT * FROM tasks WHERE done = :d", json!({"d": false}))
        .await
        .expect("subscribe again");
    assert_eq!(sub.id(), again.id(), "same query and parameters, same subscription");
    peer.sync()
        .subscribe("SELECT * FROM notes", json!({}))
        .await
        .expect("subscribe");
    for refused in [
        "SELECT * FROM tasks WHERE no_such_function(done)",
        "SELECT * FROM tasks WHERE done = :not_given",
        "SELECT * FROM a JOIN b ON a.x = b._id",
        "SELECT title FROM tasks",
        "SELECT * FROM tasks LIMIT 3",
        "UPDATE tasks SET a = 1",
    ] {
        let e = peer.sync().subscribe(refused, json!({})).await.unwrap_err();
        assert!(
            matches!(e, PeerError::InvalidInput { .. } | PeerError::Dql(_)),
            "{refused}: {e:?}"
        );
    }
    peer.close().await;

    let peer = Peer::open(PeerConfig::directory(dir.path())).await.expect("reopen");
    assert_eq!(peer.id(), id, "the identity is persisted");
    assert_eq!(titles(&peer, "SELECT * FROM tasks").await, ["milk"]);
    let subs = peer.sync().subscriptions().await.expect("list");
    assert_eq!(subs.len(), 2);
    let sub = subs
        .into_iter()
        .find(|s| s.query().contains("done"))
        .expect("persisted");
    assert_eq!(sub.params(), &json!({"d": false}));
    sub.cancel().await.expect("cancel");
    let subs = peer.sync().subscriptions().await.expect("list");
    assert_eq!(
        subs.iter().map(|s| s.query()).collect::<Vec<_>>(),
        ["SELECT * FROM notes"]
    );
    peer.close().await;
}

#[tokio::test]
async fn connected_peers_sync_multihop_and_show_in_presence() {
    let (a, b, c) = (memory_peer().await, memory_peer().await, memory_peer().await);
    let mut presence = a.presence();
    assert!(presence.graph().peers.is_empty());
    let ab = a.connect_in_process(&b).await.expect("connect");
    let bc = b.connect_in_process(&c).await.expect("connect");
    let graph = presence.next().await.expect("presence change");
    assert_eq!(graph.me, a.id());
    let links = graph.peers.get(&b.id()).expect("b is connected");
    assert_eq!(links[0].kind, LinkKind::InProcess);

    // A and C never meet; B carries the changes both ways.
    insert(&a, "tasks", json!({"_id": "from-a", "title": "a"})).await;
    insert(&c, "tasks", json!({"_id": "from-c", "title": "c"})).await;
    for p in [&a, &b, &c] {
        eventually("every peer has both tasks", async || {
            titles(p, "SELECT * FROM tasks ORDER BY title").await == ["a", "c"]
        })
        .await;
    }
    // Concurrent edits of one field converge to one value everywhere.
    run(&a, "UPDATE tasks SET title = 'x' WHERE _id = 'from-c'", "edit").await;
    run(&c, "UPDATE tasks SET title = 'y' WHERE _id = 'from-c'", "edit").await;
    let all = "SELECT * FROM tasks ORDER BY _id";
    eventually("convergence", async || {
        let (ra, rb, rc) = (titles(&a, all).await, titles(&b, all).await, titles(&c, all).await);
        ra == rb && rb == rc && ra[1] != "c"
    })
    .await;
    assert!(a.merge_stats().await.expect("stats").contains_key(&b.id()));

    ab.close().await;
    eventually("a sees b leave", async || presence.graph().peers.is_empty()).await;
    bc.close().await;
    for p in [a, b, c] {
        p.close().await;
    }
}

#[tokio::test]
async fn the_peer_survives_a_panic_in_the_observer_actor() {
    let peer = memory_peer().await;
    insert(&peer, "tasks", json!({"_id": "a", "title": "milk", "done": false})).await;
    let mut open = peer
        .store()
        .observe("SELECT * FROM tasks WHERE done = false ORDER BY title", json!({}))
        .await
        .expect("observe");
    assert_eq!(next_event(&mut open, "first").await.items.len(), 1);

    peer.inject_panic(Subsystem::Observer).await.expect("inject");
    // While the observer restarts, the peer keeps serving queries and writes.
    insert(&peer, "tasks", json!({"_id": "b", "title": "eggs", "done": false})).await;
    assert_eq!(
        titles(&peer, "SELECT * FROM tasks ORDER BY title").await,
        ["eggs", "milk"]
    );

    // The observer resumes with the correct result and a diff from what
    // this consumer last saw (the write during the restart included).
    let ev = next_event(&mut open, "resumed").await;
    assert_eq!(event_titles(&ev), [json!("eggs"), json!("milk")]);
    assert_eq!(ev.diff.inserted, vec![0]);
    // And it keeps going.
    run(&peer, "UPDATE tasks SET done = true WHERE _id = 'a'", "update").await;
    let ev = next_event(&mut open, "after restart").await;
    assert_eq!(ev.items.len(), 1);
    assert_eq!(ev.diff.deleted, vec![1]);
    // New live queries work too.
    let mut all = peer
        .store()
        .observe("SELECT * FROM tasks", json!({}))
        .await
        .expect("observe");
    assert_eq!(next_event(&mut all, "first").await.items.len(), 2);
    peer.close().await;
}

#[tokio::test]
async fn the_store_actor_restarts_from_disk_after_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let peer = Peer::open(PeerConfig::directory(dir.path())).await.expect("open");
    insert(&peer, "tasks", json!({"_id": "a", "title": "milk"})).await;
    let mut live = peer
        .store()
        .observe("SELECT * FROM tasks", json!({}))
        .await
        .expect("observe");
    assert_eq!(next_event(&mut live, "first").await.items.len(), 1);
    peer.inject_panic(Subsystem::Store).await.expect("inject");
    // The environment was closed and reopened; acknowledged data is there.
    assert_eq!(titles(&peer, "SELECT * FROM tasks").await, ["milk"]);
    insert(&peer, "tasks", json!({"_id": "b", "title": "eggs"})).await;
    assert_eq!(next_event(&mut live, "update").await.items.len(), 2);
    peer.close().await;
}

#[tokio::test]
async fn close_ends_live_queries_and_refuses_later_calls() {
    let peer = memory_peer().await;
    let mut live = peer
        .store()
        .observe("SELECT * FROM tasks", json!({}))
        .await
        .expect("observe");
    assert!(live.next().await.is_some());
    let clone = peer.clone();
    peer.close().await;
    assert!(live.next().await.is_none(), "the stream ends");
    let e = clone
        .store()
        .execute("SELECT * FROM tasks", json!({}))
        .await
        .unwrap_err();
    assert!(matches!(e, PeerError::Stopped { .. }), "{e:?}");
}

#[tokio::test]
async fn closing_a_peer_takes_its_links_down_on_the_other_side() {
    let (a, b) = (memory_peer().await, memory_peer().await);
    let _link = a.connect_in_process(&b).await.expect("connect");
    let presence = b.presence();
    eventually("b sees a", async || presence.graph().peers.contains_key(&a.id())).await;
    a.close().await;
    eventually("b sees a leave", async || presence.graph().peers.is_empty()).await;
    // b keeps working alone.
    insert(&b, "tasks", json!({"_id": 1, "title": "alone"})).await;
    assert_eq!(titles(&b, "SELECT * FROM tasks").await, ["alone"]);
    b.close().await;
}

#[tokio::test]
async fn opening_bad_storage_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let Err(e) = Peer::open(PeerConfig::directory(&file)).await else {
        panic!("a file is not a data directory")
    };
    assert!(!e.to_string().is_empty());
    // One directory, one open peer per process (LMDB's rule).
    let first = Peer::open(PeerConfig::directory(dir.path().join("d")))
        .await
        .expect("open");
    let second = Peer::open(PeerConfig::directory(dir.path().join("d"))).await;
    assert!(matches!(second, Err(PeerError::Store(_))), "{:?}", second.err());
    first.close().await;
    let again = Peer::open(PeerConfig::directory(dir.path().join("d")))
        .await
        .expect("reopen after close");
    again.close().await;
}

#[tokio::test]
async fn a_restart_storm_shuts_the_subsystem_down_and_says_so() {
    let peer = memory_peer().await;
    let mut live = peer
        .store()
        .observe("SELECT * FROM tasks", json!({}))
        .await
        .expect("observe");
    assert!(live.next().await.is_some());
    for _ in 0..6 {
        let _ = peer.inject_panic(Subsystem::Observer).await;
    }
    eventually("the observer gives up", async || {
        matches!(
            peer.store().observe("SELECT * FROM tasks", json!({})).await,
            Err(PeerError::Failed(_))
        )
    })
    .await;
    // Its live queries end, saying why, instead of hanging.
    let mut last = None;
    while let Some(item) = live.next().await {
        last = Some(item);
    }
    assert!(matches!(last, Some(Err(PeerError::Failed(_)))), "{last:?}");
    // Statements are served by the store actor, which is fine.
    insert(&peer, "tasks", json!({"_id": 1, "title": "still here"})).await;
    assert_eq!(titles(&peer, "SELECT * FROM tasks").await, ["still here"]);
    peer.close().await;
    // After close, the store's own error, not the observer's.
    let e = peer
        .store()
        .execute("SELECT * FROM tasks", json!({}))
        .await
        .unwrap_err();
    assert!(matches!(e, PeerError::Stopped { .. }), "{e:?}");
}

#[tokio::test]
async fn a_failing_live_query_does_not_stop_the_others() {
    let peer = memory_peer().await;
    let mut all = peer
        .store()
        .observe("SELECT * FROM t ORDER BY _id", json!({}))
        .await
        .expect("observe");
    let mut parsed = peer
        .store()
        .observe("SELECT * FROM t WHERE deserialize_json(raw) IS NOT NULL", json!({}))
        .await
        .expect("observe");
    assert!(all.next().await.expect("first").is_ok());
    assert!(parsed.next().await.expect("first").is_ok());
    insert(&peer, "t", json!({"_id": 1, "raw": "not json"})).await;
    let ev = all.next().await.expect("event").expect("the plain query is updated");
    assert_eq!(ev.items.len(), 1);
    let failed = parsed.next().await.expect("event");
    assert!(matches!(failed, Err(PeerError::LiveQuery { .. })), "{failed:?}");
    // New live queries work, and the others keep going.
    let mut more = peer
        .store()
        .observe("SELECT * FROM t", json!({}))
        .await
        .expect("observe");
    assert_eq!(more.next().await.expect("first").expect("ok").items.len(), 1);
    insert(&peer, "t", json!({"_id": 2, "raw": "[1]"})).await;
    assert_eq!(all.next().await.expect("event").expect("ok").items.len(), 2);
    // Once the bad row is fixed, the failed query recovers.
    run(&peer, "UPDATE t SET raw = '{}' WHERE _id = 1", "fix").await;
    eventually(
        "the failed query recovers",
        async || matches!(parsed.next().await, Some(Ok(ev)) if ev.items.len() == 2),
    )
    .await;
    peer.close().await;
}

#[tokio::test]
async fn live_queries_keep_up_with_a_mailbox_of_one() {
    let mut config = PeerConfig::memory();
    config.mailbox = 1;
    let peer = Peer::open(config).await.expect("open");
    let mut live = peer
        .store()
        .observe("SELECT * FROM t", json!({}))
        .await
        .expect("observe");
    assert!(live.next().await.expect("first").is_ok());
    for i in 0..20 {
        // Dropped live queries fill the observer's mailbox with cancels.
        let extra = peer
            .store()
            .observe("SELECT * FROM t", json!({}))
            .await
            .expect("observe");
        drop(extra);
        insert(&peer, "t", json!({"_id": i})).await;
    }
    eventually(
        "the live query has every row",
        async || matches!(live.next().await, Some(Ok(ev)) if ev.items.len() == 20),
    )
    .await;
    peer.close().await;
}

#[tokio::test]
async fn a_peer_dropped_without_close_releases_its_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Peer::open(PeerConfig::directory(dir.path())).await.expect("open");
    let b = memory_peer().await;
    let link = a.connect_in_process(&b).await.expect("connect");
    insert(&a, "t", json!({"_id": 1})).await;
    let mut live = a.store().observe("SELECT * FROM t", json!({})).await.expect("observe");
    assert!(live.next().await.is_some());
    drop((a, link, live));
    // Every actor stops once no handle is left, and LMDB lets go of the
    // directory; reopening then succeeds.
    let mut reopened = None;
    for _ in 0..500 {
        if let Ok(p) = Peer::open(PeerConfig::directory(dir.path())).await {
            reopened = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let a = reopened.expect("the directory was released");
    assert_eq!(
        a.store()
            .execute("SELECT * FROM t", json!({}))
            .await
            .expect("read")
            .items
            .len(),
        1
    );
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn presence_next_waits_for_a_change() {
    let (a, b) = (memory_peer().await, memory_peer().await);
    let mut presence = a.presence();
    let waited = tokio::time::timeout(Duration::from_millis(50), presence.next()).await;
    assert!(waited.is_err(), "no change yet");
    let link = a.connect_in_process(&b).await.expect("connect");
    let g = presence.next().await.expect("change");
    assert!(g.peers.contains_key(&b.id()));
    link.close().await;
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_large_first_sync_arrives_in_paced_batches() {
    let (a, b) = (memory_peer().await, memory_peer().await);
    a.store()
        .transaction(|tx| {
            for i in 0..1_200 {
                tx.execute("INSERT INTO t DOCUMENTS (:d)", json!({"d": {"_id": i, "v": i * 2}}))?;
            }
            Ok(())
        })
        .await
        .expect("insert");
    let link = a.connect_in_process(&b).await.expect("connect");
    eventually("b has every document", async || {
        let n = b
            .store()
            .execute("SELECT count(*) AS n FROM t", json!({}))
            .await
            .expect("count");
        n.items == vec![json!({"n": 1200})]
    })
    .await;
    let stats = b.merge_stats().await.expect("stats");
    assert!(stats[&a.id()].batches >= 3, "{stats:?}");
    link.close().await;
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_modelled_ble_link_carries_a_sync_at_its_pace() {
    use rhizome_actors::LinkModel;
    let (a, b) = (memory_peer().await, memory_peer().await);
    insert_noise(&a, 300).await;
    let started = tokio::time::Instant::now();
    let link = a.connect_in_process_with(&b, LinkModel::ble()).await.expect("connect");
    let presence = b.presence();
    eventually("b has every document", async || {
        let n = b
            .store()
            .execute("SELECT count(*) AS n FROM t", json!({}))
            .await
            .expect("count");
        n.items == vec![json!({"n": 300})]
    })
    .await;
    let elapsed = started.elapsed();
    let stats = link.stats();
    // Tens of kB of documents cross in 244-byte chunks at about 100 kB/s.
    assert!(stats.bytes() > 30_000, "{} bytes", stats.bytes());
    assert!(stats.chunks() > stats.bytes() / 244, "chunks are at most the MTU");
    assert!(stats.frames() >= 4, "hello, request and changes each way");
    let floor = Duration::from_secs_f64(stats.bytes() as f64 / 100_000.0 * 0.9);
    assert!(
        elapsed >= floor,
        "took {elapsed:?}, faster than the link allows ({floor:?})"
    );
    let links = presence.graph().peers[&a.id()].clone();
    assert_eq!(links[0].kind, LinkKind::Ble);
    link.close().await;
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_peer_receives_only_what_it_subscribes_to_and_a_new_subscription_catches_up() {
    let a = memory_peer().await;
    let b = Peer::open(PeerConfig::memory()).await.expect("open");
    b.sync()
        .subscribe("SELECT * FROM todo WHERE done = :d", json!({"d": false}))
        .await
        .expect("subscribe");
    for (id, done) in [("open1", false), ("closed", true), ("open2", false)] {
        insert(&a, "todo", json!({"_id": id, "done": done})).await;
    }
    insert(&a, "notes", json!({"_id": "n1", "text": "private"})).await;
    let link = a.connect_in_process(&b).await.expect("connect");
    eventually("b has the open todos", async || {
        titles_of(&b, "SELECT * FROM todo ORDER BY _id").await == ["open1", "open2"]
    })
    .await;
    assert!(titles_of(&b, "SELECT * FROM notes").await.is_empty(), "not subscribed");
    // A later subscription pulls what was skipped before.
    b.sync()
        .subscribe("SELECT * FROM notes", json!({}))
        .await
        .expect("subscribe");
    eventually("b caught up on notes", async || {
        titles_of(&b, "SELECT * FROM notes").await == ["n1"]
    })
    .await;
    link.close().await;
    a.close().await;
    b.close().await;
}

/// The `_id`s a query returns.
async fn titles_of(peer: &Peer, dql: &str) -> Vec<String> {
    let r = peer.store().execute(dql, json!({})).await.expect("query");
    r.items
        .iter()
        .map(|d| d["_id"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[tokio::test]
async fn sync_scopes_keep_collections_from_other_peers() {
    let (a, b) = (memory_peer().await, memory_peer().await);
    for coll in ["secrets", "cloud", "mesh"] {
        let q = format!("SELECT * FROM {coll}");
        b.sync().subscribe(&q, json!({})).await.expect("subscribe");
    }
    a.store()
        .execute(
            "ALTER SYSTEM SET USER_COLLECTION_SYNC_SCOPES = :s",
            json!({"s": {"secrets": "LocalPeerOnly", "cloud": "BigPeerOnly", "mesh": "SmallPeersOnly"}}),
        )
        .await
        .expect("set scopes");
    let bad = a
        .store()
        .execute(
            "ALTER SYSTEM SET USER_COLLECTION_SYNC_SCOPES = {'x': 'Nowhere'}",
            json!({}),
        )
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("Nowhere"), "{bad}");
    for coll in ["secrets", "cloud", "mesh", "t"] {
        insert(&a, coll, json!({"_id": coll})).await;
    }
    let link = a.connect_in_process(&b).await.expect("connect");
    eventually("b has the shared collections", async || {
        titles_of(&b, "SELECT * FROM mesh").await == ["mesh"] && titles_of(&b, "SELECT * FROM t").await == ["t"]
    })
    .await;
    // Another round cannot bring them either.
    insert(&a, "t", json!({"_id": "later"})).await;
    eventually("the later write arrived", async || {
        titles_of(&b, "SELECT * FROM t").await.len() == 2
    })
    .await;
    for coll in ["secrets", "cloud"] {
        let q = format!("SELECT * FROM {coll}");
        assert!(titles_of(&b, &q).await.is_empty(), "{coll} stays off other small peers");
    }
    link.close().await;
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_peer_back_after_the_tombstone_lifetime_rebases_and_deleted_documents_stay_deleted() {
    let open = async || {
        let mut config = PeerConfig::memory();
        config.tombstone_ttl_ms = 50;
        config.reap_interval_ms = 20;
        let peer = Peer::open(config).await.expect("open");
        peer.sync()
            .subscribe("SELECT * FROM t", json!({}))
            .await
            .expect("subscribe");
        peer
    };
    let (a, r) = (open().await, open().await);
    for id in ["x", "y"] {
        insert(&a, "t", json!({"_id": id, "v": 1})).await;
    }
    let link = a.connect_in_process(&r).await.expect("connect");
    eventually("r has x and y", async || {
        titles_of(&r, "SELECT * FROM t ORDER BY _id").await == ["x", "y"]
    })
    .await;
    link.close().await;

    // While r is away: a deletes x; r edits y and adds z.
    run(&a, "DELETE FROM t WHERE _id = 'x'", "delete").await;
    run(&r, "UPDATE t SET w = 2 WHERE _id = 'y'", "edit").await;
    insert(&r, "t", json!({"_id": "z"})).await;
    // Longer than the lifetime: a reaps x's tombstone and forgets it.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let link = a.connect_in_process(&r).await.expect("reconnect");
    for p in [&a, &r] {
        eventually("both hold y and z, and x is gone", async || {
            titles_of(p, "SELECT * FROM t ORDER BY _id").await == ["y", "z"]
        })
        .await;
    }
    let y = r
        .store()
        .execute("SELECT * FROM t WHERE _id = 'y'", json!({}))
        .await
        .expect("y");
    assert_eq!(
        y.items,
        vec![json!({"_id": "y", "v": 1, "w": 2})],
        "r's offline edit survives"
    );
    let y = a
        .store()
        .execute("SELECT * FROM t WHERE _id = 'y'", json!({}))
        .await
        .expect("y");
    assert_eq!(y.items, vec![json!({"_id": "y", "v": 1, "w": 2})]);
    link.close().await;
    a.close().await;
    r.close().await;
}

#[tokio::test]
async fn a_slow_link_does_not_hold_up_a_fast_one() {
    use rhizome_actors::LinkModel;
    let (a, slow, fast) = (memory_peer().await, memory_peer().await, memory_peer().await);
    insert_noise(&a, 300).await;
    let count = async |p: &Peer| {
        let n = p
            .store()
            .execute("SELECT count(*) AS n FROM t", json!({}))
            .await
            .expect("count");
        n.items[0]["n"].as_i64().unwrap_or(0)
    };
    let ble = a.connect_in_process_with(&slow, LinkModel::ble()).await.expect("ble");
    let wifi = a
        .connect_in_process_with(&fast, LinkModel::p2p_wifi())
        .await
        .expect("wifi");
    eventually("the Wi-Fi peer has everything", async || count(&fast).await == 300).await;
    // Same source, same store actor: the BLE session is still sending.
    assert!(count(&slow).await < 300, "the BLE peer cannot be done yet");
    eventually("the BLE peer catches up", async || count(&slow).await == 300).await;
    let states = a.store().crdt_states("t").await.expect("states");
    assert_eq!(states.len(), 300);
    for p in [&slow, &fast] {
        assert_eq!(
            p.store().crdt_states("t").await.expect("states"),
            states,
            "same CRDT metadata"
        );
    }
    for l in [ble, wifi] {
        l.close().await;
    }
    for p in [a, slow, fast] {
        p.close().await;
    }
}

/// 200 characters of text that does not compress (a link must carry it all).
fn noise(seed: u64) -> String {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ seed;
    (0..50)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{:04x}", x & 0xFFFF)
        })
        .collect()
}

/// `n` documents of 200 incompressible characters into `t`, in one transaction.
async fn insert_noise(peer: &Peer, n: u64) {
    peer.store()
        .transaction(move |tx| {
            for i in 0..n {
                let text = noise(i);
                tx.execute("INSERT INTO t DOCUMENTS (:d)", json!({"d": {"_id": i, "text": text}}))?;
            }
            Ok(())
        })
        .await
        .expect("insert");
}

#[tokio::test]
async fn a_subscription_made_offline_fetches_documents_skipped_before() {
    let a = memory_peer().await;
    let b = Peer::open(PeerConfig::memory()).await.expect("open");
    b.sync()
        .subscribe("SELECT * FROM todo", json!({}))
        .await
        .expect("subscribe");
    insert(&a, "todo", json!({"_id": "t1"})).await;
    insert(&a, "notes", json!({"_id": "n1"})).await;
    let link = a.connect_in_process(&b).await.expect("connect");
    eventually("b has the todo", async || {
        titles_of(&b, "SELECT * FROM todo").await == ["t1"]
    })
    .await;
    link.close().await;
    // Offline, b starts wanting notes: its claims do not cover them.
    b.sync()
        .subscribe("SELECT * FROM notes", json!({}))
        .await
        .expect("subscribe");
    let link = a.connect_in_process(&b).await.expect("reconnect");
    eventually("b fetched the note skipped before", async || {
        titles_of(&b, "SELECT * FROM notes").await == ["n1"]
    })
    .await;
    link.close().await;
    a.close().await;
    b.close().await;
}
