//! The store's contract on the in-memory backend (LMDB runs the same suite).

#[test]
fn kv_contract() {
    rhizome_engine::testing::kv_conformance(&rhizome_engine::mem::MemKv::new());
}

#[test]
fn store_contract() {
    rhizome_engine::testing::store_suite(&mut rhizome_engine::mem::MemKv::new);
}
