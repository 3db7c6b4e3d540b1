//! Version vectors: what a replica has seen, per origin peer.
//!
//! The sequence of a peer is its hybrid logical clock: every write a peer
//! originates carries a strictly larger HLC than its previous one, so "seen up
//! to HLC h of peer P" is a cumulative claim, provided each origin's changes
//! are delivered in order (the sync protocol guarantees that).

use crate::hlc::{Hlc, PeerId, Stamp};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::Arc;

pub mod packed;

/// Per origin peer, the greatest HLC seen from it.
///
/// Entries sit in a vector sorted by peer, with no `Hlc::ZERO` entry: sync
/// clones, joins and compares vectors on every message, and a merge walk
/// over two sorted runs is several times cheaper than the same over a
/// tree. The vector is shared copy-on-write: a session keeps a dozen
/// vectors that are mostly copies of one another (the remote's `since`,
/// the base of its pushes, what it was served from), so a clone is a
/// reference count and only a change copies the entries; at thousands of
/// simulated peers the copies were a quarter of the heap. Serialized as a
/// map, peer to HLC, in human-readable formats (JSON), and as the bytes of
/// its [`packed`] encoding in binary ones (postcard: the sync protocol,
/// change records).
#[derive(Clone, Default)]
pub struct VersionVector(Option<Arc<Vec<(PeerId, Hlc)>>>);

impl VersionVector {
    /// Nothing seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// From entries sorted by peer, without repeats or `Hlc::ZERO`.
    fn from_sorted(entries: Vec<(PeerId, Hlc)>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        debug_assert!(entries.iter().all(|&(_, h)| h != Hlc::ZERO));
        VersionVector((!entries.is_empty()).then(|| Arc::new(entries)))
    }

    fn entries(&self) -> &[(PeerId, Hlc)] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    /// The entries to change in place (copied first if shared).
    fn entries_mut(&mut self) -> &mut Vec<(PeerId, Hlc)> {
        Arc::make_mut(self.0.get_or_insert_with(Default::default))
    }

    fn find(&self, peer: PeerId) -> Result<usize, usize> {
        self.entries().binary_search_by_key(&peer, |&(p, _)| p)
    }

    /// The greatest HLC seen from `peer` (`Hlc::ZERO` if none).
    pub fn get(&self, peer: PeerId) -> Hlc {
        self.find(peer).map_or(Hlc::ZERO, |i| self.entries()[i].1)
    }

    /// Whether the write `stamp` is included.
    pub fn covers(&self, stamp: Stamp) -> bool {
        stamp.hlc != Hlc::ZERO && self.get(stamp.peer) >= stamp.hlc
    }

    /// Records `stamp` as seen; returns whether that advanced the vector.
    pub fn observe(&mut self, stamp: Stamp) -> bool {
        if stamp.hlc == Hlc::ZERO {
            return false;
        }
        match self.find(stamp.peer) {
            Ok(i) if self.entries()[i].1 >= stamp.hlc => false,
            Ok(i) => {
                self.entries_mut()[i].1 = stamp.hlc;
                true
            }
            Err(i) => {
                self.entries_mut().insert(i, (stamp.peer, stamp.hlc));
                true
            }
        }
    }

    /// Sets the entry of `peer` to `hlc`, lower or higher (`Hlc::ZERO`
    /// removes it).
    pub fn set(&mut self, peer: PeerId, hlc: Hlc) {
        match (self.find(peer), hlc == Hlc::ZERO) {
            (Ok(i), true) => {
                self.entries_mut().remove(i);
                if self.entries().is_empty() {
                    self.0 = None;
                }
            }
            (Ok(i), false) if self.entries()[i].1 == hlc => {}
            (Ok(i), false) => self.entries_mut()[i].1 = hlc,
            (Err(_), true) => {}
            (Err(i), false) => self.entries_mut().insert(i, (peer, hlc)),
        }
    }

    /// Pointwise maximum.
    pub fn join(&mut self, other: &VersionVector) {
        let theirs = other.entries();
        if theirs.is_empty() {
            return;
        }
        if self.entries().is_empty() {
            self.0.clone_from(&other.0); // shared, not copied
            return;
        }
        // Not at all (no copy of a shared vector) when `other` adds
        // nothing; `other` itself, shared, when it covers all of `self`
        // (a session catching up with its store's vector: no allocation,
        // and one copy in memory); in place when it adds no peer (vectors
        // of one session share their origins); else one merge walk.
        let (missing, raises, ahead) = compare(self.entries(), theirs);
        if missing == 0 && !raises {
            return;
        }
        if !ahead {
            self.0.clone_from(&other.0);
        } else if missing > 0 {
            self.0 = Some(Arc::new(merge(self.entries(), theirs, missing)));
        } else if raises {
            let mine = self.entries_mut();
            let mut i = 0;
            for &(p, h) in theirs {
                while mine[i].0 < p {
                    i += 1;
                }
                mine[i].1 = mine[i].1.max(h);
            }
        }
    }

    /// Whether every entry of `other` is covered by `self`.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        let mine = self.entries();
        let mut i = 0;
        other.entries().iter().all(|&(p, h)| {
            while i < mine.len() && mine[i].0 < p {
                i += 1;
            }
            mine.get(i).is_some_and(|e| e.0 == p && e.1 >= h)
        })
    }

    /// A 64-bit digest of the entries, never 0 (0 means "no vector" on the
    /// wire). Equal vectors have equal digests on every peer; unequal ones
    /// collide with a chance of about 2^-64. Only used to skip sending a
    /// vector the other side already announced (see `Hello::vv_digest`),
    /// where a collision costs at most that one round's completeness, so
    /// a fast non-cryptographic mix is enough.
    pub fn digest(&self) -> u64 {
        let mut h: u64 = 0x9E37_79B9_7F4A_7C15 ^ self.len() as u64;
        for &(p, hlc) in self.entries() {
            h = mix(h ^ p.0);
            h = mix(h ^ hlc.0);
        }
        h.max(1)
    }

    /// The entries of `self` ahead of `base` (what grew past it).
    pub fn grown_past(&self, base: &VersionVector) -> VersionVector {
        Self::from_sorted(self.iter().filter(|&(p, h)| h > base.get(p)).collect())
    }

    /// Entries in peer order.
    pub fn iter(&self) -> impl Iterator<Item = (PeerId, Hlc)> + '_ {
        self.entries().iter().copied()
    }

    /// Number of peers with an entry.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether nothing was seen.
    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }
}

impl PartialEq for VersionVector {
    fn eq(&self, other: &Self) -> bool {
        self.entries() == other.entries()
    }
}

impl Eq for VersionVector {}

impl std::hash::Hash for VersionVector {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.entries().hash(state);
    }
}

impl fmt::Debug for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("VersionVector").field(&self.entries()).finish()
    }
}

/// How `b` relates to `a` (both sorted by peer): how many of its peers `a`
/// lacks, whether it raises an entry `a` has, and whether `a` is ahead of
/// it anywhere (a peer `b` lacks, or a later entry): if not, `b` is the
/// join.
fn compare(a: &[(PeerId, Hlc)], b: &[(PeerId, Hlc)]) -> (usize, bool, bool) {
    let (mut missing, mut raises, mut ahead) = (0, false, false);
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let ((p, g), (q, h)) = (a[i], b[j]);
        if p < q {
            ahead = true;
            i += 1;
        } else if p > q {
            missing += 1;
            j += 1;
        } else {
            raises |= h > g;
            ahead |= g > h;
            i += 1;
            j += 1;
        }
    }
    (missing + (b.len() - j), raises, ahead || i < a.len())
}

/// The pointwise maximum of two sorted runs, `b` holding `missing` peers
/// that `a` lacks (allocated to size: joined vectors are kept).
fn merge(a: &[(PeerId, Hlc)], b: &[(PeerId, Hlc)], missing: usize) -> Vec<(PeerId, Hlc)> {
    let mut out = Vec::with_capacity(a.len() + missing);
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push((a[i].0, a[i].1.max(b[j].1)));
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    debug_assert_eq!(out.len(), a.len() + missing);
    out
}

impl Serialize for VersionVector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            return serializer.serialize_bytes(&packed::encode(self));
        }
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (peer, hlc) in self.entries() {
            map.serialize_entry(peer, hlc)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Packed;
        impl<'de> Visitor<'de> for Packed {
            type Value = VersionVector;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the bytes of a packed version vector")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<VersionVector, E> {
                packed::decode(bytes).map_err(E::custom)
            }
        }
        if !deserializer.is_human_readable() {
            return deserializer.deserialize_bytes(Packed);
        }
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = VersionVector;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of peer to HLC")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<VersionVector, A::Error> {
                // Bytes from the network: the length hint is not trusted
                // for allocation, and any order or repeat is joined.
                let mut entries: Vec<(PeerId, Hlc)> = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
                while let Some((peer, hlc)) = map.next_entry::<PeerId, Hlc>()? {
                    if hlc != Hlc::ZERO {
                        entries.push((peer, hlc));
                    }
                }
                let sorted = entries.windows(2).all(|w| w[0].0 < w[1].0);
                if sorted {
                    return Ok(VersionVector::from_sorted(entries));
                }
                Ok(entries.into_iter().collect())
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

impl FromIterator<(PeerId, Hlc)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (PeerId, Hlc)>>(iter: I) -> Self {
        // Sort once (not an insertion per entry: untrusted input may be
        // long and in any order), then keep each peer's greatest HLC.
        let mut entries: Vec<(PeerId, Hlc)> = iter.into_iter().filter(|&(_, h)| h != Hlc::ZERO).collect();
        entries.sort_unstable();
        entries.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 = kept.1.max(later.1);
            }
            same
        });
        VersionVector::from_sorted(entries)
    }
}

/// splitmix64's finalizer: every input bit moves about half the output bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
