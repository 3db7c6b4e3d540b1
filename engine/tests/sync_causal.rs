//! Causal consistency of delta sync: a round cut into batches of one
//! document still exposes, after every batch, a prefix of each origin's
//! writes (a receiver never shows a write without the earlier ones from the
//! same origin), and a doubly written document is not shipped twice over.

use rhizome_engine::hlc::PeerId;
use rhizome_engine::mem::MemKv;
use rhizome_engine::store::{OnConflict, Store, StoreConfig};
use rhizome_engine::value::Value;

fn v(s: &str) -> Value {
    Value::parse(s).unwrap()
}

fn open(peer: u64) -> Store<MemKv> {
    Store::open(MemKv::new(), StoreConfig::default(), PeerId(peer), peer).unwrap()
}

/// One write transaction of one statement-like edit.
fn put(s: &Store<MemKv>, now_ms: u64, doc: &str) {
    let mut w = s.write(now_ms).unwrap();
    w.insert("t", &v(doc), OnConflict::Merge).unwrap();
    w.commit().unwrap();
}

fn field(s: &Store<MemKv>, id: &str, f: &str) -> Option<Value> {
    let doc = s.read().unwrap().get("t", &v(&format!("\"{id}\""))).unwrap()?;
    doc.as_object()?.get(f).cloned()
}

#[test]
fn every_batch_is_a_prefix_of_each_origin() {
    let (a, c, b) = (open(3), open(1), open(2));
    // Origin 3 writes x.f, then y.f, then x.g: x's newest write comes after y's.
    put(&a, 1_000, r#"{"_id":"x","f":1}"#);
    put(&a, 1_001, r#"{"_id":"y","f":1}"#);
    put(&a, 1_002, r#"{"_id":"x","g":1}"#);
    // Origin 1 (scanned first) also touched x, so x has news from two origins.
    put(&c, 1_003, r#"{"_id":"x","h":1}"#);
    rhizome_engine::testing::sync_into(&c, &a, 2_000, 100);

    let since = b.read().unwrap().version_vector().unwrap();
    let mut resume = None;
    let mut batches = 0;
    loop {
        let got = a.read().unwrap().changes_since(&since, resume.as_ref(), 1).unwrap();
        let mut w = b.write(2_000).unwrap();
        assert!(w.apply_batch(&got.changes).unwrap().refused.is_empty());
        if got.resume.is_none() {
            w.mark_synced(&got.upto);
        }
        w.commit().unwrap();
        batches += 1;
        // x.g is origin 3's newest write: never visible before y.f.
        if field(&b, "x", "g").is_some() {
            assert!(
                field(&b, "y", "f").is_some(),
                "x.g exposed before y.f (batch {batches})"
            );
        }
        resume = got.resume;
        if resume.is_none() {
            break;
        }
    }
    assert_eq!(batches, 3, "x once per origin with news, y once");
    for (id, f) in [("x", "f"), ("x", "g"), ("x", "h"), ("y", "f")] {
        assert_eq!(field(&b, id, f), Some(v("1")), "{id}.{f}");
    }
    assert_eq!(
        b.read().unwrap().get_doc("t", &v("\"x\"")).unwrap(),
        a.read().unwrap().get_doc("t", &v("\"x\"")).unwrap(),
        "identical CRDT state"
    );
}
