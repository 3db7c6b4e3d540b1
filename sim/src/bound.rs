//! The traffic lower bound: each change crossing each link of a spanning
//! tree once.
//!
//! Every write is one change (one field of one document). A mesh where `h`
//! peers end up holding it must carry it over at least `h - 1` links (the
//! edges of a spanning tree of the holders), so the bound is the sum over
//! writes of the change's encoded size times (holders - 1). The size is the
//! engine's own encoding of the change (`codec::encode_change`: id, field,
//! value and its hybrid-logical-clock stamp), measured on a scratch store
//! that makes the same write; it leaves out everything the protocol adds
//! (frame headers, version vectors, requests), which is the protocol's
//! overhead the bound exposes. Writes a later write replaced before they
//! reached everyone need not travel at all, so the bound is a fair target,
//! not a tight one.

use rhizome_engine::codec::encode_change;
use rhizome_engine::dql;
use rhizome_engine::hlc::PeerId;
use rhizome_engine::mem::MemKv;
use rhizome_engine::store::{Store, StoreConfig};
use rhizome_engine::value::Value;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// A plausible wall clock for the scratch store (its stamps' size).
const NOW_MS: u64 = 1_750_000_000_000;

/// Sizes measured so far, by (id, field, value length).
static SIZES: Mutex<BTreeMap<(String, String, usize), u64>> = Mutex::new(BTreeMap::new());

/// Encoded bytes of the change setting `field` of document `id` (of the
/// simulator's collection) to the string `value`.
pub fn change_bytes(id: &str, field: &str, value: &str) -> u64 {
    let key = (id.to_string(), field.to_string(), value.len());
    if let Some(n) = SIZES.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return *n;
    }
    let n = measure(id, field, value).unwrap_or(0);
    SIZES.lock().unwrap_or_else(|p| p.into_inner()).insert(key, n);
    n
}

fn measure(id: &str, field: &str, value: &str) -> Option<u64> {
    let store = Store::open(MemKv::new(), StoreConfig::default(), PeerId(1), 1).ok()?;
    let run = |text: String, params: serde_json::Value, now: u64| -> Option<()> {
        let stmt = dql::Prepared::new().get(&text).ok()?;
        let params = dql::params_from_json(&Value::from_json(&params).ok()?).ok()?;
        dql::execute(&store, &stmt, &params, now).ok()?;
        Some(())
    };
    let coll = crate::mesh::COLLECTION;
    run(
        format!("INSERT INTO {coll} DOCUMENTS (:d)"),
        serde_json::json!({ "d": { "_id": id } }),
        NOW_MS,
    )?;
    let before = store.read().ok()?.version_vector().ok()?;
    run(
        format!("UPDATE {coll} SET {field} = :v WHERE _id = :id"),
        serde_json::json!({ "v": value, "id": id }),
        NOW_MS + 1,
    )?;
    let batch = store.read().ok()?.changes_since(&before, None, 10).ok()?;
    Some(batch.changes.iter().map(|c| encode_change(c).len() as u64).sum())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_field_write_is_a_few_dozen_bytes() {
        let n = super::change_bytes("d0", "a", "p1w1");
        assert!((10..200).contains(&n), "{n}");
    }
}
