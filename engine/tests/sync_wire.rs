//! The sync protocol's bytes: frames round-trip, hostile bytes are refused
//! with an error (never a panic), chunking to any MTU reassembles, and
//! version negotiation refuses with a reason.

use proptest::prelude::*;
use rhizome_engine::codec::Change;
use rhizome_engine::hlc::PeerId;
use rhizome_engine::sync::wire::{
    chunks, decode, encode, negotiate, Hello, Message, Reassembler, Refusal, SubscriptionSpec, WireError,
    DEFAULT_MAX_FRAME_BYTES, FRAME_HEADER_BYTES, PROTOCOL_VERSION,
};
use rhizome_engine::vv::VersionVector;

const LIMIT: usize = DEFAULT_MAX_FRAME_BYTES as usize;

fn hello(peer: u64, versions: (u16, u16)) -> Hello {
    Hello {
        versions,
        peer: PeerId(peer),
        subscriptions: vec![SubscriptionSpec {
            query: "SELECT * FROM tasks WHERE done = :d".into(),
            params: r#"{"d":false}"#.into(),
        }],
        max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
    }
}

fn sample_messages() -> Vec<Message> {
    vec![
        Message::Hello(hello(7, (1, 1))),
        Message::Refuse(Refusal::UnsupportedVersion {
            ours: (1, 1),
            theirs: (2, 3),
        }),
        Message::Refuse(Refusal::ProtocolViolation { reason: "x".into() }),
        Message::Request {
            round: 3,
            since: VersionVector::new(),
        },
        Message::Changes {
            round: 3,
            changes: vec![Change {
                collection: "tasks".into(),
                id: rhizome_engine::value::Value::String("a".into()),
                ops: vec![],
            }],
            upto: VersionVector::new(),
            last: true,
        },
    ]
}

#[test]
fn messages_round_trip() {
    for msg in sample_messages() {
        let frame = encode(&msg, PROTOCOL_VERSION);
        assert_eq!(decode(&frame, LIMIT), Ok((PROTOCOL_VERSION, msg)));
    }
}

#[test]
fn damaged_frames_are_refused_with_a_reason() {
    let frame = encode(&sample_messages()[0], PROTOCOL_VERSION);
    assert!(matches!(decode(&frame[..5], LIMIT), Err(WireError::Truncated { .. })));
    assert!(matches!(
        decode(&frame[..frame.len() - 1], LIMIT),
        Err(WireError::Truncated { .. })
    ));
    let mut longer = frame.clone();
    longer.push(0);
    assert_eq!(decode(&longer, LIMIT), Err(WireError::TrailingBytes { count: 1 }));
    let mut magic = frame.clone();
    magic[0] = b'X';
    assert_eq!(decode(&magic, LIMIT), Err(WireError::BadMagic));
    assert!(matches!(
        decode(&frame, 20),
        Err(WireError::TooLarge { limit_bytes: 20, .. })
    ));
    // Every single flipped bit of the body is caught.
    for i in FRAME_HEADER_BYTES..frame.len() {
        for bit in 0..8 {
            let mut bad = frame.clone();
            bad[i] ^= 1 << bit;
            assert_eq!(decode(&bad, LIMIT), Err(WireError::Checksum), "byte {i} bit {bit}");
        }
    }
}

#[test]
fn a_frame_claiming_a_huge_length_is_refused_before_it_is_buffered() {
    let mut frame = encode(&sample_messages()[0], PROTOCOL_VERSION);
    frame[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(decode(&frame, LIMIT), Err(WireError::TooLarge { .. })));
    let mut r = Reassembler::new(LIMIT);
    let first = chunks(&frame, 20).remove(0);
    assert!(matches!(r.push(&first), Err(WireError::TooLarge { .. })));
}

#[test]
fn chunks_out_of_order_are_refused() {
    let frame = encode(&sample_messages()[4], PROTOCOL_VERSION);
    let parts = chunks(&frame, 8);
    assert!(parts.len() > 2);
    let mut r = Reassembler::new(LIMIT);
    assert_eq!(r.push(&parts[1]), Err(WireError::ChunkOrder));
    let mut r = Reassembler::new(LIMIT);
    assert_eq!(r.push(&parts[0]), Ok(None));
    assert_eq!(r.push(&parts[0]), Err(WireError::ChunkOrder));
    assert_eq!(r.push(&[]), Err(WireError::BadChunk));
    assert_eq!(r.push(&[0x80, 1]), Err(WireError::BadChunk));
}

#[test]
fn versions_are_negotiated_or_refused_with_a_reason() {
    assert_eq!(negotiate(&hello(1, (1, 3)), &hello(2, (2, 5))), Ok(3));
    let refused = negotiate(&hello(1, (1, 1)), &hello(2, (2, 4))).unwrap_err();
    assert_eq!(
        refused,
        Refusal::UnsupportedVersion {
            ours: (1, 1),
            theirs: (2, 4)
        }
    );
    assert!(refused.to_string().contains("no protocol version in common"));
    assert_eq!(negotiate(&hello(1, (1, 1)), &hello(1, (1, 1))), Err(Refusal::SamePeer));
    assert!(
        negotiate(&hello(1, (1, 9)), &hello(2, (5, 2))).is_err(),
        "an empty range is refused"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes, LIMIT);
        let mut r = Reassembler::new(4096);
        for piece in bytes.chunks(7) {
            let _ = r.push(piece);
        }
    }

    #[test]
    fn random_bodies_behind_a_valid_header_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        // A correct header and checksum around garbage reaches the body decoder.
        let mut frame = vec![b'R', b'Z', 0, 1];
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        frame.extend_from_slice(&body);
        if let Ok((_, msg)) = decode(&frame, LIMIT) {
            // Whatever decodes re-encodes to a frame that decodes to the
            // same bytes again (bytes, not values: a float's bits are kept).
            let again = encode(&msg, 1);
            let (_, msg2) = decode(&again, LIMIT).expect("re-encoded frame decodes");
            prop_assert_eq!(encode(&msg2, 1), again);
        }
    }

    #[test]
    fn chunking_to_any_mtu_reassembles(which in 0usize..5, mtu in 0usize..300) {
        let frame = encode(&sample_messages()[which], PROTOCOL_VERSION);
        let mut r = Reassembler::new(LIMIT);
        let parts = chunks(&frame, mtu);
        let mut out = None;
        for (i, p) in parts.iter().enumerate() {
            prop_assert!(p.len() <= mtu.max(2));
            let got = r.push(p).expect("in-order chunks");
            prop_assert_eq!(got.is_some(), i + 1 == parts.len());
            out = got.or(out);
        }
        prop_assert_eq!(out, Some(frame));
    }
}
