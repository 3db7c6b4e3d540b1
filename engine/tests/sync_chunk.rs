//! Chunks (the framing of BLE links and of the simulator's modelled links):
//! any frame cut to any chunk size comes back exactly; a lost, duplicated
//! or reordered chunk is an error, never a panic and never a wrong frame;
//! random bytes never panic and never grow the buffer past its limit.

use proptest::prelude::*;
use rhizome_engine::sync::chunk::{ChunkError, Chunker, Reassembler, MIN_CHUNK_BYTES};

/// What a damaged chunk stream does to the receiver.
#[derive(Clone, Debug)]
enum Fault {
    Lose(usize),
    Duplicate(usize),
    Swap(usize),
}

fn frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..2_000), 1..6)
}

/// Feeds chunks in order; returns the frames that came out, or the first
/// error.
fn reassemble(r: &mut Reassembler, chunks: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, ChunkError> {
    let mut out = Vec::new();
    for c in chunks {
        if let Some(frame) = r.push(c)? {
            out.push(frame);
        }
    }
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn frames_round_trip_at_any_chunk_size(frames in frames(), chunk_bytes in MIN_CHUNK_BYTES..600) {
        let mut c = Chunker::new();
        let mut r = Reassembler::new(2_000);
        for frame in &frames {
            let chunks = c.split(frame, chunk_bytes).expect("size in range");
            let expected = chunks.len();
            let parts: Vec<_> = chunks.collect();
            prop_assert_eq!(parts.len(), expected);
            prop_assert!(parts.iter().all(|p| p.len() <= chunk_bytes));
            let out = reassemble(&mut r, &parts).expect("in-order chunks");
            prop_assert_eq!(out, vec![frame.clone()]);
            prop_assert!(!r.is_partial());
        }
    }

    #[test]
    fn damaged_streams_give_an_error_never_a_wrong_frame(
        frames in frames(),
        chunk_bytes in MIN_CHUNK_BYTES..64,
        fault in prop_oneof![
            any::<prop::sample::Index>().prop_map(|i| Fault::Lose(i.index(1 << 16))),
            any::<prop::sample::Index>().prop_map(|i| Fault::Duplicate(i.index(1 << 16))),
            any::<prop::sample::Index>().prop_map(|i| Fault::Swap(i.index(1 << 16))),
        ],
    ) {
        let mut c = Chunker::new();
        let mut chunks = Vec::new();
        for frame in &frames {
            chunks.extend(c.split(frame, chunk_bytes).expect("size in range"));
        }
        match fault {
            Fault::Lose(i) => {
                chunks.remove(i % chunks.len());
            }
            Fault::Duplicate(i) => {
                let i = i % chunks.len();
                chunks.insert(i, chunks[i].clone());
            }
            Fault::Swap(i) => {
                if chunks.len() < 2 {
                    return Ok(());
                }
                let i = i % (chunks.len() - 1);
                chunks.swap(i, i + 1);
            }
        }
        // The stream is refused at the damage (the sequence numbers see
        // it), or, when the very last chunk was lost, ends short.
        let mut r = Reassembler::new(2_000);
        if let Ok(out) = reassemble(&mut r, &chunks) {
            prop_assert!(out.len() < frames.len());
            prop_assert_eq!(&out[..], &frames[..out.len()]);
        }
        // Fed one by one as a link does (errors skipped), every frame that
        // comes out is one that was sent, in order.
        let mut r = Reassembler::new(2_000);
        let mut sent = frames.iter();
        for chunk in &chunks {
            if let Ok(Some(frame)) = r.push(chunk) {
                prop_assert!(sent.any(|f| *f == frame), "a frame that was never sent came out");
            }
        }
    }

    #[test]
    fn random_bytes_never_panic_nor_pass_the_limit(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..64),
        limit in 0usize..256,
    ) {
        let mut r = Reassembler::new(limit);
        for chunk in &chunks {
            if let Ok(Some(frame)) = r.push(chunk) {
                prop_assert!(frame.len() <= limit);
            }
        }
    }

    #[test]
    fn headers_mutated_never_panic(
        frame in proptest::collection::vec(any::<u8>(), 0..300),
        chunk_bytes in MIN_CHUNK_BYTES..40,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..6, any::<u8>()), 1..6),
    ) {
        let mut chunks: Vec<Vec<u8>> = Chunker::new().split(&frame, chunk_bytes).expect("size in range").collect();
        for (which, at, byte) in edits {
            let n = chunks.len();
            let c = &mut chunks[which.index(n)];
            if let Some(b) = c.get_mut(at) {
                *b = byte;
            }
        }
        let mut r = Reassembler::new(300);
        for chunk in &chunks {
            if let Ok(Some(out)) = r.push(chunk) {
                prop_assert!(out.len() <= 300);
            }
        }
    }
}

#[test]
fn a_frame_over_the_limit_is_refused_at_its_first_chunk() {
    let frame = vec![0u8; 101];
    let first = Chunker::new()
        .split(&frame, 20)
        .expect("size in range")
        .next()
        .expect("a chunk");
    assert_eq!(
        Reassembler::new(100).push(&first),
        Err(ChunkError::TooLarge {
            size_bytes: 101,
            limit_bytes: 100
        })
    );
}

#[test]
fn more_than_256_chunks_keep_numbering() {
    let frame: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
    let parts: Vec<_> = Chunker::new().split(&frame, 23).expect("size in range").collect();
    assert!(parts.len() > 256);
    let mut r = Reassembler::new(1 << 20);
    assert_eq!(reassemble(&mut r, &parts), Ok(vec![frame]));
}
