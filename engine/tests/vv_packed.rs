//! The packed version-vector encoding (`vv::packed`): every vector
//! round-trips, and any bytes decode to a vector or an error, never a
//! panic.

use proptest::prelude::*;
use rhizome_engine::hlc::{Hlc, PeerId};
use rhizome_engine::vv::packed::{decode, encode, encode_except, PackedVvError};
use rhizome_engine::vv::VersionVector;

/// Vectors of every shape: ids anywhere or clustered, HLCs spread or
/// equal, logical counters zero or not.
fn vector() -> impl Strategy<Value = VersionVector> {
    let peer = prop_oneof![any::<u64>(), 0u64..64, (u64::MAX - 64)..=u64::MAX];
    let wall = prop_oneof![
        Just(1_800_000_000_000u64),
        1_800_000_000_000u64..1_800_000_100_000,
        0u64..(1 << 48)
    ];
    let logical = prop_oneof![Just(0u16), any::<u16>(), 0u16..4];
    prop::collection::vec((peer, wall, logical), 0..300).prop_map(|entries| {
        entries
            .into_iter()
            .map(|(p, w, l)| (PeerId(p), Hlc::new(w, l)))
            .filter(|&(_, h)| h != Hlc::ZERO)
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_vector_round_trips(v in vector()) {
        let bytes = encode(&v);
        prop_assert_eq!(decode(&bytes), Ok(v.clone()));
        // A vector never costs more than its raw entries (16 bytes each)
        // and a few header bytes.
        prop_assert!(bytes.len() <= 16 * v.len() + 16, "{} bytes for {} entries", bytes.len(), v.len());
    }

    #[test]
    fn a_vector_without_one_entry_round_trips(v in vector(), pick in any::<prop::sample::Index>()) {
        let Some((peer, _)) = v.iter().nth(pick.index(v.len().max(1))) else {
            return Ok(());
        };
        let mut without = v.clone();
        without.set(peer, Hlc::ZERO);
        prop_assert_eq!(decode(&encode_except(&v, peer)), Ok(without.clone()));
        prop_assert_eq!(encode_except(&v, peer), encode(&without));
    }

    #[test]
    fn random_bytes_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(v) = decode(&bytes) {
            let again = encode(&v);
            prop_assert_eq!(decode(&again), Ok(v));
        }
    }

    #[test]
    fn mutated_encodings_decode_or_fail_cleanly(v in vector(), at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let mut bytes = encode(&v);
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        let _ = decode(&bytes);
        let _ = decode(&bytes[..i]);
    }
}

/// The suite's shape (workload 5): random ids, walls within 4 seconds,
/// logical counters zero. Below yrs's state vector on the suite (8.94
/// bytes a writer).
#[test]
fn random_ids_cost_under_nine_bytes_an_entry() {
    let mut x = 0x1234_5678_9ABC_DEF0u64;
    let mut next = || {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for n in [1_541usize, 30_001] {
        let v: VersionVector = (0..n)
            .map(|_| (PeerId(next()), Hlc::new(1_800_000_000_000 + next() % 4_000, 0)))
            .collect();
        let bytes = encode(&v);
        assert_eq!(decode(&bytes), Ok(v));
        let per_entry = bytes.len() as f64 / n as f64;
        assert!(per_entry < 8.9, "{n} entries: {per_entry:.2} bytes each");
    }
}

#[test]
fn errors_say_where() {
    let e = decode(&[0x18, 0]).unwrap_err();
    assert_eq!(e, PackedVvError::TrailingBytes { count: 1 });
    assert_eq!(e.to_string(), "packed version vector: 1 bytes after its end");
    let e = decode(&[0x10]).unwrap_err();
    assert!(e.to_string().contains("truncated in the field at bit 4"), "{e}");
}
