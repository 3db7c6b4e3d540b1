//! The sync protocol's bytes: frames round-trip, hostile bytes are refused
//! with an error (never a panic), and version negotiation refuses with a
//! reason. (Chunks: `sync_chunk.rs`.)

use proptest::prelude::*;
use rhizome_engine::codec::Change;
use rhizome_engine::doc::{Op, RegVal};
use rhizome_engine::hlc::{Hlc, PeerId, Stamp};
use rhizome_engine::sync::pack::{self, UnpackLimits};
use rhizome_engine::sync::wire::{
    decode, encode, negotiate, Hello, Message, Refusal, Role, SubscriptionSpec, WireError, DEFAULT_MAX_FRAME_BYTES,
    FRAME_HEADER_BYTES, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use rhizome_engine::value::Value;
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
        heard: false,
        role: Role::SmallPeer,
        vv_digest: 0,
    }
}

fn vv(entries: &[(u64, u64)]) -> VersionVector {
    let mut v = VersionVector::new();
    for &(peer, hlc) in entries {
        v.observe(Stamp {
            hlc: Hlc(hlc),
            peer: PeerId(peer),
        });
    }
    v
}

fn sample_changes() -> Vec<Change> {
    vec![Change {
        collection: "tasks".into(),
        id: Value::String("a".into()),
        ops: vec![Op::Set {
            path: vec!["title".into()],
            stamp: Stamp {
                hlc: Hlc(7 << 16),
                peer: PeerId(3),
            },
            val: RegVal::Value(Value::String("write tests".into())),
        }],
    }]
}

/// One message of every kind, and every variant of the ones with variants.
fn sample_messages() -> Vec<Message> {
    vec![
        Message::Hello(hello(7, (2, 2))),
        Message::Hello(Hello {
            heard: true,
            role: Role::BigPeer,
            subscriptions: Vec::new(),
            max_frame_bytes: 1024,
            ..hello(u64::MAX, (0, u16::MAX))
        }),
        Message::Refuse(Refusal::UnsupportedVersion {
            ours: (2, 2),
            theirs: (3, 4),
        }),
        Message::Refuse(Refusal::ProtocolViolation { reason: "x".into() }),
        Message::Refuse(Refusal::SamePeer),
        Message::Refuse(Refusal::HandshakeTimedOut),
        Message::Request {
            round: 3,
            delta: false,
            since: vv(&[(1, 5), (u64::MAX, u64::MAX)]),
            subscriptions: None,
            of_hello: 0,
        },
        Message::Request {
            round: 4,
            delta: false,
            since: VersionVector::new(),
            subscriptions: Some(vec![SubscriptionSpec {
                query: "SELECT * FROM tasks".into(),
                params: "{}".into(),
            }]),
            of_hello: 0,
        },
        Message::Request {
            round: 5,
            delta: false,
            since: VersionVector::new(),
            subscriptions: None,
            of_hello: 0x005e_ed0f_4e11_0000,
        },
        Message::Changes {
            round: 3,
            seq: 0,
            changes: pack::pack(&sample_changes()),
            upto: vv(&[(3, 7 << 16)]),
            last: false,
            complete: true,
        },
        Message::Changes {
            round: u64::MAX,
            seq: u32::MAX,
            changes: pack::pack(&[]),
            upto: VersionVector::new(),
            last: true,
            complete: false,
        },
        Message::Poke {
            nonce: 0,
            moved: None,
            ack: None,
        },
        Message::Poke {
            nonce: u64::MAX,
            moved: Some(vv(&[(3, 7 << 16), (u64::MAX, u64::MAX)])),
            ack: Some(u64::MAX),
        },
        Message::Push {
            nonce: 3,
            ack: None,
            asked: u64::MAX,
            changes: pack::pack(&sample_changes()),
            upto: vv(&[(3, 7 << 16)]),
            complete: true,
        },
        Message::Have { nonce: 7 },
        Message::Subscribe {
            subscriptions: vec![
                SubscriptionSpec {
                    query: "SELECT * FROM tasks".into(),
                    params: "{}".into(),
                },
                hello(1, (2, 2)).subscriptions[0].clone(),
            ],
        },
        Message::Subscribe {
            subscriptions: Vec::new(),
        },
        Message::Rebase {
            round: 9,
            upto: vv(&[(2, 1 << 40)]),
            complete: true,
        },
    ]
}

/// How many [`sample_messages`] there are (for strategies).
const SAMPLES: usize = 18;

#[test]
fn messages_round_trip() {
    assert_eq!(sample_messages().len(), SAMPLES);
    for msg in sample_messages() {
        let frame = encode(&msg, PROTOCOL_VERSION);
        assert_eq!(decode(&frame, LIMIT), Ok((PROTOCOL_VERSION, msg.clone())), "{msg:?}");
        // The version in the header is the one given.
        assert_eq!(decode(&encode(&msg, 9), LIMIT).map(|d| d.0), Ok(9));
    }
}

#[test]
fn packed_changes_in_a_frame_unpack_to_what_was_packed() {
    let frame = encode(&sample_messages()[9], PROTOCOL_VERSION);
    let Ok((_, Message::Changes { changes, .. })) = decode(&frame, LIMIT) else {
        panic!("a Changes message")
    };
    assert_eq!(pack::unpack(&changes, UnpackLimits::default()), Ok(sample_changes()));
}

#[test]
fn this_build_speaks_protocol_version_6() {
    assert_eq!((MIN_PROTOCOL_VERSION, PROTOCOL_VERSION), (6, 6));
}

#[test]
fn refusals_say_why() {
    let cases = [
        (
            Refusal::UnsupportedVersion {
                ours: (2, 2),
                theirs: (3, 4),
            },
            "no protocol version in common: we speak 2..=2, the peer 3..=4",
        ),
        (
            Refusal::ProtocolViolation { reason: "x".into() },
            "protocol violation: x",
        ),
        (Refusal::SamePeer, "a peer cannot sync with itself"),
        (Refusal::HandshakeTimedOut, "the peer did not complete the handshake"),
    ];
    for (refusal, text) in cases {
        assert_eq!(refusal.to_string(), text);
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
    }

    #[test]
    fn random_bodies_behind_a_valid_header_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        // A correct header and checksum around garbage reaches the body decoder.
        let mut frame = vec![b'R', b'Z'];
        frame.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        frame.extend_from_slice(&body);
        if let Ok((_, msg)) = decode(&frame, LIMIT) {
            // Whatever decodes re-encodes to a frame that decodes to the
            // same bytes again (bytes, not values: a float's bits are kept).
            let again = encode(&msg, PROTOCOL_VERSION);
            let (_, msg2) = decode(&again, LIMIT).expect("re-encoded frame decodes");
            prop_assert_eq!(encode(&msg2, PROTOCOL_VERSION), again);
        }
    }

    #[test]
    fn mutated_frames_never_panic(
        which in 0usize..SAMPLES,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        // Valid frames with bytes changed, inserted or removed in the body,
        // the checksum fixed so the body decoder sees them.
        let frame = encode(&sample_messages()[which], PROTOCOL_VERSION);
        let mut body = frame[FRAME_HEADER_BYTES..].to_vec();
        for (at, byte, how) in edits {
            let i = at.index(body.len() + 1);
            match how {
                0 if i < body.len() => body[i] = byte,
                1 => body.insert(i, byte),
                _ if i < body.len() => {
                    body.remove(i);
                }
                _ => {}
            }
        }
        let mut bad = frame[..4].to_vec();
        bad.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bad.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        bad.extend_from_slice(&body);
        if let Ok((_, msg)) = decode(&bad, LIMIT) {
            let again = encode(&msg, PROTOCOL_VERSION);
            prop_assert!(decode(&again, LIMIT).is_ok());
            // Packed changes inside are checked as hostile too.
            if let Message::Changes { changes, .. } = &msg {
                let _ = pack::unpack(changes, UnpackLimits::default());
            }
            if let Message::Hello(Hello { subscriptions, .. }) | Message::Subscribe { subscriptions } = &msg {
                let _ = rhizome_engine::sync::scope::Interest::compile(subscriptions);
            }
        }
        // A damaged frame (checksum not fixed) is refused.
        if body != frame[FRAME_HEADER_BYTES..] && body.len() + FRAME_HEADER_BYTES == frame.len() {
            let mut damaged = frame.clone();
            damaged[FRAME_HEADER_BYTES..].copy_from_slice(&body);
            prop_assert_eq!(decode(&damaged, LIMIT), Err(WireError::Checksum));
        }
    }
}

/// Version 5's pokes named no news; its frames are refused by version
/// before their body is read.
#[test]
fn a_version_5_frame_is_refused_as_old() {
    let frame = encode(&sample_messages()[0], 5);
    assert_eq!(decode(&frame, LIMIT), Err(WireError::OldVersion { version: 5 }));
}
