//! Replication frames: every Multi-Paxos message round-trips through a batch, and no byte
//! sequence makes the decoder panic.

use proptest::prelude::*;
use tessera_engine::paxos::{Ballot, Entry, Envelope, Member, Message, Value};
use tessera_wire::frame::{self, Decoded};
use tessera_wire::replication::{decode_batch, encode_batch, PeerMessage, SnapshotAck, SnapshotChunk, SnapshotEnd};
use tessera_wire::{ErrorCode, MessageType, Request};

fn values() -> Vec<Value> {
    vec![
        Value::Noop,
        Value::Command { id: 7, bytes: b"a command".to_vec().into() },
        Value::Command { id: 8, bytes: Vec::new().into() },
        Value::Members(vec![Member::full(1), Member::full(2), Member::log(9)]),
    ]
}

fn messages() -> Vec<Message> {
    let ballot = Ballot { round: u64::MAX - 1, replica: 3 };
    let entries =
        values().into_iter().enumerate().map(|(at, value)| (at as u64 + 5, Entry { ballot, value })).collect();
    vec![
        Message::Prepare { ballot, from_slot: 12 },
        Message::Promise { ballot, entries, commit: 4, log_start: 3 },
        Message::Promise { ballot, entries: Vec::new(), commit: 0, log_start: 1 },
        Message::Accept { ballot, first_slot: 9, entries: values(), commit: 8, sent_at: 123_456 },
        Message::Accept { ballot, first_slot: 9, entries: Vec::new(), commit: 8, sent_at: 1 },
        Message::Accepted { ballot, up_to: 30, sent_at: 99, gap: true, checkpointed: 20 },
        Message::Reject { promised: ballot },
    ]
}

/// Snapshot chunks (a middle one, a last one, an empty last one) and acknowledgements.
fn snapshot_messages() -> Vec<PeerMessage> {
    let ballot = Ballot { round: 9, replica: 1 };
    let chunk = SnapshotChunk {
        partition: 1 << 40,
        from: 1,
        to: 2,
        stream: u64::MAX,
        seq: 3,
        slot: 77,
        ballot,
        entries: vec![(b"key".to_vec(), vec![0; 1000]), (Vec::new(), Vec::new())],
        last: None,
    };
    let end = SnapshotEnd { members: vec![Member::full(1), Member::log(4)], items: 2, bytes: 1003 };
    vec![
        PeerMessage::Chunk(chunk.clone()),
        PeerMessage::Chunk(SnapshotChunk { seq: 4, last: Some(end.clone()), ..chunk.clone() }),
        PeerMessage::Chunk(SnapshotChunk { seq: 0, entries: Vec::new(), last: Some(end), ..chunk }),
        PeerMessage::Ack(SnapshotAck { partition: 5, from: 2, to: 1, stream: 8, next: 4, refused: None }),
        PeerMessage::Ack(SnapshotAck { partition: 5, from: 2, to: 1, stream: 8, next: 0, refused: Some("why".into()) }),
    ]
}

#[test]
fn every_message_round_trips_in_one_frame() {
    let mut batch: Vec<_> = messages()
        .into_iter()
        .enumerate()
        .map(|(at, message)| PeerMessage::Paxos((1 << 20 | at as u64, Envelope { from: 1, to: 2, message })))
        .collect();
    batch.extend(snapshot_messages());
    let mut bytes = Vec::new();
    encode_batch(&batch, &mut bytes);
    let Ok(Decoded::Frame(frame, used)) = frame::decode(&bytes) else { panic!("one whole frame") };
    assert_eq!(
        (used, frame.header.message_type, frame.checksum_ok),
        (bytes.len(), MessageType::Replication as u16, true)
    );
    assert_eq!(decode_batch(frame.payload).unwrap(), batch);
    // A client connection refuses it by name: it is not a request.
    let error = Request::decode(frame.header.message_type, frame.payload).unwrap_err();
    assert_eq!(error.code, ErrorCode::UnknownMessageType);
    // An empty batch is a batch.
    let mut empty = Vec::new();
    encode_batch(&[], &mut empty);
    let Ok(Decoded::Frame(frame, _)) = frame::decode(&empty) else { panic!("one whole frame") };
    assert_eq!(decode_batch(frame.payload).unwrap(), vec![]);
}

proptest! {
    #[test]
    fn garbage_and_damage_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let _ = decode_batch(&bytes);
        let mut batch: Vec<_> =
            messages().into_iter().map(|message| PeerMessage::Paxos((1, Envelope { from: 2, to: 1, message }))).collect();
        batch.extend(snapshot_messages());
        let mut encoded = Vec::new();
        encode_batch(&batch, &mut encoded);
        let mut payload = encoded[frame::HEADER_LEN..].to_vec();
        for (index, byte) in flips {
            let at = index.index(payload.len());
            payload[at] ^= byte | 1;
        }
        if let Err(error) = decode_batch(&payload) {
            prop_assert_eq!(error.code, ErrorCode::MalformedMessage);
        }
    }
}
