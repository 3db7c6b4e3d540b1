//! Version vectors against a model: the sorted-vector representation must
//! behave exactly like a map of peer to greatest HLC, and decode any map
//! the network sends (any order, repeats, zeros) to the same vector.

use proptest::prelude::*;
use rhizome_engine::hlc::{Hlc, PeerId, Stamp};
use rhizome_engine::vv::VersionVector;
use std::collections::BTreeMap;

type Model = BTreeMap<u64, u64>;

fn entries() -> impl Strategy<Value = Vec<(u64, u64)>> {
    // Few peers so that operations collide on the same entries.
    prop::collection::vec((0u64..12, 0u64..40), 0..16)
}

fn build(entries: &[(u64, u64)]) -> (VersionVector, Model) {
    let mut vv = VersionVector::new();
    let mut model = Model::new();
    for &(p, h) in entries {
        vv.observe(Stamp {
            peer: PeerId(p),
            hlc: Hlc(h),
        });
        if h > 0 {
            let e = model.entry(p).or_insert(0);
            *e = (*e).max(h);
        }
    }
    (vv, model)
}

fn as_model(vv: &VersionVector) -> Model {
    vv.iter().map(|(p, h)| (p.0, h.0)).collect()
}

proptest! {
    #[test]
    fn observe_join_and_dominates_match_the_model(a in entries(), b in entries(), sets in entries()) {
        let (mut x, mut mx) = build(&a);
        let (y, my) = build(&b);
        prop_assert_eq!(as_model(&x), mx.clone());
        prop_assert_eq!(x.dominates(&y), my.iter().all(|(p, h)| mx.get(p).copied().unwrap_or(0) >= *h));
        let grown = x.grown_past(&y);
        let model_grown: Model = mx.iter().filter(|(p, h)| **h > my.get(p).copied().unwrap_or(0)).map(|(p, h)| (*p, *h)).collect();
        prop_assert_eq!(as_model(&grown), model_grown);
        x.join(&y);
        for (p, h) in &my {
            let e = mx.entry(*p).or_insert(0);
            *e = (*e).max(*h);
        }
        prop_assert_eq!(as_model(&x), mx.clone());
        for (p, h) in sets {
            x.set(PeerId(p), Hlc(h));
            match h {
                0 => mx.remove(&p),
                _ => mx.insert(p, h),
            };
            prop_assert_eq!(as_model(&x), mx.clone());
            prop_assert_eq!(x.get(PeerId(p)), Hlc(h));
        }
        prop_assert_eq!(x.len(), mx.len());
    }

    /// Joining a vector that covers this one takes it (shared, not
    /// copied): equal to the model's join, and a later change to either
    /// never shows in the other.
    #[test]
    fn joining_a_covering_vector_shares_it_safely(a in entries(), b in entries(), sets in entries()) {
        let (mut x, mx) = build(&a);
        let (mut y, _) = build(&b);
        y.join(&x);
        let my = as_model(&y);
        x.join(&y);
        prop_assert_eq!(&x, &y);
        prop_assert_eq!(as_model(&x), my.clone());
        let (before_x, before_y) = (x.clone(), y.clone());
        for &(p, h) in &sets {
            x.set(PeerId(p), Hlc(h));
        }
        prop_assert_eq!(as_model(&y), my.clone());
        let mut x2 = before_x;
        let mut y2 = before_y;
        x2.join(&y2);
        for &(p, h) in &sets {
            y2.set(PeerId(p), Hlc(h + 1));
        }
        prop_assert_eq!(as_model(&x2), my);
        prop_assert!(mx.iter().all(|(p, h)| x2.get(PeerId(*p)) >= Hlc(*h)));
    }

    /// Vectors are shared copy-on-write: a change to one never shows in a
    /// clone, nor in the vector an empty one joined (and so shares).
    #[test]
    fn a_change_never_shows_in_a_copy(a in entries(), b in entries(), sets in entries()) {
        let (mut x, mx) = build(&a);
        let (y, my) = build(&b);
        let copy = x.clone();
        let mut empty = VersionVector::new();
        empty.join(&y);
        prop_assert_eq!(&empty, &y);
        x.join(&y);
        for (p, h) in sets {
            x.set(PeerId(p), Hlc(h));
            empty.set(PeerId(p), Hlc(h));
            x.observe(Stamp { peer: PeerId(p), hlc: Hlc(h + 1) });
            empty.observe(Stamp { peer: PeerId(p), hlc: Hlc(h + 1) });
        }
        prop_assert_eq!(as_model(&copy), mx);
        prop_assert_eq!(as_model(&y), my);
        // A vector emptied by `set` equals (and hashes as) a new one.
        for (p, _) in x.clone().iter() {
            x.set(p, Hlc::ZERO);
        }
        prop_assert_eq!(&x, &VersionVector::new());
        let hash = |v: &VersionVector| {
            use std::hash::{BuildHasher, BuildHasherDefault};
            BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(v)
        };
        prop_assert_eq!(hash(&x), hash(&VersionVector::new()));
    }

    #[test]
    fn any_json_map_decodes_to_the_joined_vector(raw in entries()) {
        // The raw pairs as a JSON map in the given order, repeats and zeros
        // included: what a hand-written or hostile document could hold.
        let body: Vec<String> = raw.iter().map(|(p, h)| format!("\"{p}\":{h}")).collect();
        let text = format!("{{{}}}", body.join(","));
        let decoded: VersionVector = serde_json::from_str(&text).expect("a map decodes");
        let (built, model) = build(&raw);
        prop_assert_eq!(&decoded, &built);
        prop_assert_eq!(as_model(&decoded), model);
        let again: VersionVector = postcard::from_bytes(&postcard::to_stdvec(&decoded).unwrap_or_default()).expect("roundtrip");
        prop_assert_eq!(again, decoded);
    }
}

#[test]
fn binary_encodings_carry_the_packed_bytes_and_json_a_map() {
    let vv: VersionVector = [(PeerId(2), Hlc(7)), (PeerId(1), Hlc(5))].into_iter().collect();
    let packed = rhizome_engine::vv::packed::encode(&vv);
    assert_eq!(
        postcard::to_stdvec(&vv).unwrap_or_default(),
        postcard::to_stdvec(&packed).unwrap_or_default()
    );
    assert_eq!(serde_json::to_string(&vv).unwrap_or_default(), r#"{"1":5,"2":7}"#);
}
