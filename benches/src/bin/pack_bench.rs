//! Packed changes (`sync::pack`) against postcard `Vec<Change>`: bytes and
//! encode/decode time, on the changes of a first contact (whole documents
//! of the benchmark data set) and of 100 field edits. Times are ratios to
//! postcard measured in the same run.
//!
//! `cargo run --release -p rhizome-benches --bin pack_bench [-- --docs N]`

use rhizome_benches::{dataset, print_table, timed};
use rhizome_engine::codec::{self, Change};
use rhizome_engine::hlc::PeerId;
use rhizome_engine::mem::MemKv;
use rhizome_engine::store::{Edit, OnConflict, Store, StoreConfig};
use rhizome_engine::sync::pack::{pack_as, unpack, Coding, UnpackLimits};
use rhizome_engine::value::Value;
use rhizome_engine::vv::VersionVector;
use std::time::Duration;

const NOW_MS: u64 = 1_767_225_600_000;
const RUNS: usize = 3;

fn best<T>(mut f: impl FnMut() -> T) -> (T, Duration) {
    let (mut out, mut t) = timed(&mut f);
    for _ in 1..RUNS {
        let (o, d) = timed(&mut f);
        if d < t {
            (out, t) = (o, d);
        }
    }
    (out, t)
}

fn measure(name: &str, changes: &[Change], rows: &mut Vec<Vec<String>>) {
    // Postcard as the wire carries it today (`codec::encode_change` is a
    // format byte and the postcard `Change`).
    let (encoded, enc) = best(|| changes.iter().map(codec::encode_change).collect::<Vec<_>>());
    let ((), dec) = best(|| {
        let back: Vec<Change> = encoded
            .iter()
            .map(|b| codec::decode_change(b).expect("decode"))
            .collect();
        assert_eq!(back.len(), changes.len());
    });
    // Less the format bytes, plus a length prefix of at most 3 bytes.
    let bytes = vec![0u8; encoded.iter().map(|b| b.len() - 1).sum::<usize>() + 3];
    rows.push(vec![
        name.into(),
        "postcard".into(),
        bytes.len().to_string(),
        "1.00".into(),
        format!("{:.1}", enc.as_secs_f64() * 1e3),
        format!("{:.1}", dec.as_secs_f64() * 1e3),
    ]);
    for coding in [Coding::Plain, Coding::Range] {
        let (packed, penc) = best(|| pack_as(changes, coding));
        let ((), pdec) = best(|| {
            let back = unpack(&packed, UnpackLimits::default()).expect("unpack");
            assert_eq!(back.len(), changes.len());
        });
        rows.push(vec![
            name.into(),
            format!("pack {coding:?}"),
            packed.len().to_string(),
            format!("{:.2}", packed.len() as f64 / bytes.len() as f64),
            format!(
                "{:.1} ({:.1}x)",
                penc.as_secs_f64() * 1e3,
                penc.as_secs_f64() / enc.as_secs_f64()
            ),
            format!(
                "{:.1} ({:.1}x)",
                pdec.as_secs_f64() * 1e3,
                pdec.as_secs_f64() / dec.as_secs_f64()
            ),
        ]);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let docs: u64 = args
        .iter()
        .position(|a| a == "--docs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let store = Store::open(MemKv::new(), StoreConfig::default(), PeerId(0x9f3a_6c2e_51d4_b807), 1).expect("open");
    let data = dataset(docs);
    let mut ids = Vec::new();
    for chunk in data.chunks(1_000) {
        let mut w = store.write(NOW_MS).expect("write");
        for d in chunk {
            let v = Value::from_json(d).expect("value");
            ids.push(w.insert("tasks", &v, OnConflict::Fail).expect("insert").id);
        }
        w.commit().expect("commit");
    }
    let all = store
        .read()
        .expect("read")
        .changes_since(&VersionVector::new(), None, usize::MAX)
        .expect("changes");
    let since = store.read().expect("read").version_vector().expect("vv");
    let mut w = store.write(NOW_MS + 1_000).expect("write");
    for (i, id) in ids.iter().step_by((ids.len() / 100).max(1)).take(100).enumerate() {
        let edit = Edit::Set {
            path: vec!["priority".into()],
            value: Value::Int(1 + (i % 5) as i64),
        };
        w.update("tasks", id, &[edit]).expect("update");
    }
    w.commit().expect("commit");
    let edits = store
        .read()
        .expect("read")
        .changes_since(&since, None, usize::MAX)
        .expect("changes");

    let mut rows = Vec::new();
    measure(&format!("{docs} documents"), &all.changes, &mut rows);
    measure("100 edits", &edits.changes, &mut rows);
    print_table(
        "Packed changes against postcard (best of 3; times in ms, ratio to postcard)",
        &["batch", "encoding", "bytes", "size ratio", "encode ms", "decode ms"],
        &rows,
    );
}
