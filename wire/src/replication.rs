//! Replication frames: batches of Multi-Paxos messages between the replicas of partitions,
//! and the chunks of partition snapshots and their acknowledgements, sent on peer links (node
//! to node, core to core). One-way: a receiver never answers a replication frame; a bad one is
//! counted and dropped, and the protocol's own retries (heartbeats resend what was not
//! acknowledged; a snapshot's sender waits for each chunk's acknowledgement) cover the loss.

use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, WIPOffset};
use tessera_engine::paxos::{Ballot, Entry, Envelope, Member, Message, ReplicaId, Slot, Value};

use crate::error::{ErrorCode, WireError};
use crate::frame;
use crate::frame::MessageType;
use crate::generated::tessera::fb;
use crate::message::{read_members, root, write_members};

/// A Multi-Paxos message for one partition's replica.
pub type PartitionMessage = (u64, Envelope);

/// What a peer link carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMessage {
    Paxos(PartitionMessage),
    Chunk(SnapshotChunk),
    Ack(SnapshotAck),
}

impl PeerMessage {
    /// The replica (node) the message is for.
    pub fn to(&self) -> ReplicaId {
        match self {
            PeerMessage::Paxos((_, envelope)) => envelope.to,
            PeerMessage::Chunk(chunk) => chunk.to,
            PeerMessage::Ack(ack) => ack.to,
        }
    }
}

/// A piece of a partition snapshot (`Store::snapshot`), from the leader `from` to `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub partition: u64,
    pub from: ReplicaId,
    pub to: ReplicaId,
    pub stream: u64,
    pub seq: u32,
    pub slot: Slot,
    pub ballot: Ballot,
    /// Keys (without the partition prefix) and stored values, in key order.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// Present in the last chunk.
    pub last: Option<SnapshotEnd>,
}

/// What the last chunk of a snapshot adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotEnd {
    /// The configuration in force at the snapshot's slot.
    pub members: Vec<Member>,
    /// The partition's item count and bytes in the snapshot, checked by the receiver.
    pub items: u64,
    pub bytes: u64,
}

/// The receiver's word on a snapshot stream: it stored every chunk before `next` (0: it
/// wants a snapshot from the start), or `refused` it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotAck {
    pub partition: u64,
    pub from: ReplicaId,
    pub to: ReplicaId,
    pub stream: u64,
    pub next: u32,
    pub refused: Option<String>,
}

/// Appends one frame carrying `messages` to `out`.
pub fn encode_batch(messages: &[PeerMessage], out: &mut Vec<u8>) {
    BatchEncoder::default().encode(messages, out);
}

/// `encode_batch` with a builder kept from frame to frame, so that a link's frames reuse its
/// buffer rather than growing a new one (copying as it doubles) for every frame.
#[derive(Default)]
pub struct BatchEncoder {
    fbb: FlatBufferBuilder<'static>,
}

impl BatchEncoder {
    /// Appends one frame carrying `messages` to `out`.
    pub fn encode(&mut self, messages: &[PeerMessage], out: &mut Vec<u8>) {
        self.fbb.reset();
        encode_into(&mut self.fbb, messages, out);
    }
}

fn encode_into(fbb: &mut FlatBufferBuilder<'static>, messages: &[PeerMessage], out: &mut Vec<u8>) {
    let (mut paxos, mut chunks, mut acks) = (Vec::new(), Vec::new(), Vec::new());
    for message in messages {
        match message {
            PeerMessage::Paxos((partition, envelope)) => {
                let (body_type, body) = write_body(fbb, &envelope.message);
                let args = fb::PaxosMessageArgs {
                    partition: *partition,
                    from: envelope.from,
                    to: envelope.to,
                    body_type,
                    body: Some(body),
                };
                paxos.push(fb::PaxosMessage::create(fbb, &args));
            }
            PeerMessage::Chunk(chunk) => chunks.push(write_chunk(fbb, chunk)),
            PeerMessage::Ack(ack) => {
                let refused = ack.refused.as_deref().map(|reason| fbb.create_string(reason));
                let args = fb::SnapshotAckArgs {
                    partition: ack.partition,
                    from: ack.from,
                    to: ack.to,
                    stream: ack.stream,
                    next: ack.next,
                    refused,
                };
                acks.push(fb::SnapshotAck::create(fbb, &args));
            }
        }
    }
    let args = fb::ReplicationBatchArgs {
        messages: Some(fbb.create_vector(&paxos)),
        chunks: (!chunks.is_empty()).then(|| fbb.create_vector(&chunks)),
        acks: (!acks.is_empty()).then(|| fbb.create_vector(&acks)),
    };
    let root = fb::ReplicationBatch::create(fbb, &args);
    fbb.finish_minimal(root);
    frame::encode(0, MessageType::Replication, 0, fbb.finished_data(), out);
}

fn write_chunk<'a>(fbb: &mut FlatBufferBuilder<'a>, chunk: &SnapshotChunk) -> WIPOffset<fb::SnapshotChunk<'a>> {
    let entries: Vec<_> = chunk
        .entries
        .iter()
        .map(|(key, value)| {
            let args =
                fb::SnapshotEntryArgs { key: Some(fbb.create_vector(key)), value: Some(fbb.create_vector(value)) };
            fb::SnapshotEntry::create(fbb, &args)
        })
        .collect();
    let mut args = fb::SnapshotChunkArgs {
        partition: chunk.partition,
        from: chunk.from,
        to: chunk.to,
        stream: chunk.stream,
        seq: chunk.seq,
        slot: chunk.slot,
        ballot: Some(&ballot(chunk.ballot)),
        entries: Some(fbb.create_vector(&entries)),
        ..Default::default()
    };
    if let Some(end) = &chunk.last {
        args.last = true;
        args.members = Some(write_members(fbb, &end.members));
        args.items = end.items;
        args.bytes = end.bytes;
    }
    fb::SnapshotChunk::create(fbb, &args)
}

/// The messages of a replication frame's payload, or what was wrong with it.
pub fn decode_batch(payload: &[u8]) -> Result<Vec<PeerMessage>, WireError> {
    let batch = root::<fb::ReplicationBatch>(payload, "replication batch")?;
    let mut decoded = Vec::new();
    for message in batch.messages().iter().flatten() {
        let envelope = Envelope { from: message.from(), to: message.to(), message: read_body(&message)? };
        decoded.push(PeerMessage::Paxos((message.partition(), envelope)));
    }
    for chunk in batch.chunks().iter().flatten() {
        let entries = chunk
            .entries()
            .iter()
            .flatten()
            .map(|entry| {
                let key = entry.key().ok_or_else(|| missing("a snapshot entry's key"))?;
                let value = entry.value().ok_or_else(|| missing("a snapshot entry's value"))?;
                Ok((key.bytes().to_vec(), value.bytes().to_vec()))
            })
            .collect::<Result<_, WireError>>()?;
        let last = match chunk.last() {
            false => None,
            true => Some(SnapshotEnd {
                members: read_members(chunk.members(), "the members of a snapshot")?,
                items: chunk.items(),
                bytes: chunk.bytes(),
            }),
        };
        decoded.push(PeerMessage::Chunk(SnapshotChunk {
            partition: chunk.partition(),
            from: chunk.from(),
            to: chunk.to(),
            stream: chunk.stream(),
            seq: chunk.seq(),
            slot: chunk.slot(),
            ballot: read_ballot(chunk.ballot(), "a snapshot's ballot")?,
            entries,
            last,
        }));
    }
    for ack in batch.acks().iter().flatten() {
        decoded.push(PeerMessage::Ack(SnapshotAck {
            partition: ack.partition(),
            from: ack.from(),
            to: ack.to(),
            stream: ack.stream(),
            next: ack.next(),
            refused: ack.refused().map(str::to_string),
        }));
    }
    Ok(decoded)
}

fn ballot(ballot: Ballot) -> fb::Ballot {
    fb::Ballot::new(ballot.round, ballot.replica)
}

fn read_ballot(ballot: Option<&fb::Ballot>, what: &str) -> Result<Ballot, WireError> {
    let ballot = ballot.ok_or_else(|| missing(what))?;
    Ok(Ballot { round: ballot.round(), replica: ballot.replica() })
}

fn missing(what: &str) -> WireError {
    WireError::new(ErrorCode::MalformedMessage, format!("a replication message lacks {what}"))
}

fn write_value<'a>(fbb: &mut FlatBufferBuilder<'a>, value: &Value) -> WIPOffset<fb::PaxosValue<'a>> {
    let mut args = fb::PaxosValueArgs::default();
    match value {
        Value::Noop => args.kind = fb::PaxosValueKind::NOOP,
        Value::Command { id, bytes } => {
            args.kind = fb::PaxosValueKind::COMMAND;
            args.id = *id;
            args.bytes = Some(fbb.create_vector(bytes));
        }
        Value::Members(members) => {
            args.kind = fb::PaxosValueKind::MEMBERS;
            args.members = Some(write_members(fbb, members));
        }
    }
    fb::PaxosValue::create(fbb, &args)
}

fn read_value(value: fb::PaxosValue<'_>) -> Result<Value, WireError> {
    Ok(match value.kind() {
        fb::PaxosValueKind::NOOP => Value::Noop,
        fb::PaxosValueKind::COMMAND => Value::Command {
            id: value.id(),
            bytes: value.bytes().ok_or_else(|| missing("a command's bytes"))?.bytes().to_vec().into(),
        },
        fb::PaxosValueKind::MEMBERS => Value::Members(read_members(value.members(), "the members of a configuration")?),
        other => {
            return Err(WireError::new(ErrorCode::MalformedMessage, format!("unknown paxos value kind {}", other.0)))
        }
    })
}

type Values<'a> = Option<Vector<'a, ForwardsUOffset<fb::PaxosValue<'a>>>>;

fn read_values(values: Values<'_>) -> Result<Vec<Value>, WireError> {
    values.map_or(Ok(Vec::new()), |values| values.iter().map(read_value).collect())
}

fn write_body<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    message: &Message,
) -> (fb::PaxosBody, WIPOffset<flatbuffers::UnionWIPOffset>) {
    match message {
        Message::Prepare { ballot: b, from_slot } => {
            let args = fb::PrepareArgs { ballot: Some(&ballot(*b)), from_slot: *from_slot };
            (fb::PaxosBody::Prepare, fb::Prepare::create(fbb, &args).as_union_value())
        }
        Message::Promise { ballot: b, entries, commit, log_start } => {
            let entries: Vec<_> = entries
                .iter()
                .map(|(slot, entry)| {
                    let value = Some(write_value(fbb, &entry.value));
                    let args = fb::PaxosEntryArgs { slot: *slot, ballot: Some(&ballot(entry.ballot)), value };
                    fb::PaxosEntry::create(fbb, &args)
                })
                .collect();
            let entries = Some(fbb.create_vector(&entries));
            let args = fb::PromiseArgs { ballot: Some(&ballot(*b)), entries, commit: *commit, log_start: *log_start };
            (fb::PaxosBody::Promise, fb::Promise::create(fbb, &args).as_union_value())
        }
        Message::Accept { ballot: b, first_slot, entries, commit, sent_at } => {
            let entries: Vec<_> = entries.iter().map(|value| write_value(fbb, value)).collect();
            let entries = Some(fbb.create_vector(&entries));
            let args = fb::AcceptArgs {
                ballot: Some(&ballot(*b)),
                first_slot: *first_slot,
                entries,
                commit: *commit,
                sent_at: *sent_at,
            };
            (fb::PaxosBody::Accept, fb::Accept::create(fbb, &args).as_union_value())
        }
        Message::Accepted { ballot: b, up_to, sent_at, gap, checkpointed } => {
            let args = fb::AcceptedArgs {
                ballot: Some(&ballot(*b)),
                up_to: *up_to,
                sent_at: *sent_at,
                gap: *gap,
                checkpointed: *checkpointed,
            };
            (fb::PaxosBody::Accepted, fb::Accepted::create(fbb, &args).as_union_value())
        }
        Message::Reject { promised } => {
            let args = fb::RejectArgs { promised: Some(&ballot(*promised)) };
            (fb::PaxosBody::Reject, fb::Reject::create(fbb, &args).as_union_value())
        }
    }
}

fn read_body(message: &fb::PaxosMessage<'_>) -> Result<Message, WireError> {
    let body = |what| missing(what);
    Ok(match message.body_type() {
        fb::PaxosBody::Prepare => {
            let prepare = message.body_as_prepare().ok_or_else(|| body("a Prepare"))?;
            Message::Prepare { ballot: read_ballot(prepare.ballot(), "a ballot")?, from_slot: prepare.from_slot() }
        }
        fb::PaxosBody::Promise => {
            let promise = message.body_as_promise().ok_or_else(|| body("a Promise"))?;
            let entries = promise.entries().map_or(Ok(Vec::new()), |entries| {
                entries
                    .iter()
                    .map(|entry| {
                        let value = read_value(entry.value().ok_or_else(|| missing("an entry's value"))?)?;
                        Ok((entry.slot(), Entry { ballot: read_ballot(entry.ballot(), "an entry's ballot")?, value }))
                    })
                    .collect::<Result<_, WireError>>()
            })?;
            Message::Promise {
                ballot: read_ballot(promise.ballot(), "a ballot")?,
                entries,
                commit: promise.commit(),
                log_start: promise.log_start(),
            }
        }
        fb::PaxosBody::Accept => {
            let accept = message.body_as_accept().ok_or_else(|| body("an Accept"))?;
            Message::Accept {
                ballot: read_ballot(accept.ballot(), "a ballot")?,
                first_slot: accept.first_slot(),
                entries: read_values(accept.entries())?,
                commit: accept.commit(),
                sent_at: accept.sent_at(),
            }
        }
        fb::PaxosBody::Accepted => {
            let accepted = message.body_as_accepted().ok_or_else(|| body("an Accepted"))?;
            Message::Accepted {
                ballot: read_ballot(accepted.ballot(), "a ballot")?,
                up_to: accepted.up_to(),
                sent_at: accepted.sent_at(),
                gap: accepted.gap(),
                checkpointed: accepted.checkpointed(),
            }
        }
        fb::PaxosBody::Reject => {
            let reject = message.body_as_reject().ok_or_else(|| body("a Reject"))?;
            Message::Reject { promised: read_ballot(reject.promised(), "the promised ballot")? }
        }
        other => {
            return Err(WireError::new(ErrorCode::MalformedMessage, format!("unknown paxos message kind {}", other.0)))
        }
    })
}
