//! Replication frames: batches of Multi-Paxos messages between the replicas of partitions,
//! sent on peer links (node to node, core to core). One-way: a receiver never answers a
//! replication frame; a bad one is counted and dropped, and the protocol's own retries
//! (heartbeats resend what was not acknowledged) cover the loss.

use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, WIPOffset};
use tessera_engine::paxos::{Ballot, Entry, Envelope, Member, MemberKind, Message, Value};

use crate::error::{ErrorCode, WireError};
use crate::frame;
use crate::generated::tessera::fb;
use crate::message::{root, MessageType};

/// A Multi-Paxos message for one partition's replica.
pub type PartitionMessage = (u64, Envelope);

/// Appends one frame carrying `messages` to `out`.
pub fn encode_batch(messages: &[PartitionMessage], out: &mut Vec<u8>) {
    let mut fbb = FlatBufferBuilder::with_capacity(256);
    let encoded: Vec<_> = messages
        .iter()
        .map(|(partition, envelope)| {
            let (body_type, body) = write_body(&mut fbb, &envelope.message);
            let args = fb::PaxosMessageArgs {
                partition: *partition,
                from: envelope.from,
                to: envelope.to,
                body_type,
                body: Some(body),
            };
            fb::PaxosMessage::create(&mut fbb, &args)
        })
        .collect();
    let messages = Some(fbb.create_vector(&encoded));
    let root = fb::ReplicationBatch::create(&mut fbb, &fb::ReplicationBatchArgs { messages });
    fbb.finish_minimal(root);
    frame::encode(0, MessageType::Replication, 0, fbb.finished_data(), out);
}

/// The messages of a replication frame's payload, or what was wrong with it.
pub fn decode_batch(payload: &[u8]) -> Result<Vec<PartitionMessage>, WireError> {
    let batch = root::<fb::ReplicationBatch>(payload, "replication batch")?;
    let Some(messages) = batch.messages() else { return Ok(Vec::new()) };
    messages
        .iter()
        .map(|message| {
            let envelope = Envelope { from: message.from(), to: message.to(), message: read_body(&message)? };
            Ok((message.partition(), envelope))
        })
        .collect()
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
            let members: Vec<_> = members
                .iter()
                .map(|member| {
                    let args = fb::PaxosMemberArgs { id: member.id, log: member.kind == MemberKind::Log };
                    fb::PaxosMember::create(fbb, &args)
                })
                .collect();
            args.members = Some(fbb.create_vector(&members));
        }
    }
    fb::PaxosValue::create(fbb, &args)
}

fn read_value(value: fb::PaxosValue<'_>) -> Result<Value, WireError> {
    Ok(match value.kind() {
        fb::PaxosValueKind::NOOP => Value::Noop,
        fb::PaxosValueKind::COMMAND => Value::Command {
            id: value.id(),
            bytes: value.bytes().ok_or_else(|| missing("a command's bytes"))?.bytes().to_vec(),
        },
        fb::PaxosValueKind::MEMBERS => Value::Members(
            value
                .members()
                .ok_or_else(|| missing("the members of a configuration"))?
                .iter()
                .map(|member| Member {
                    id: member.id(),
                    kind: if member.log() { MemberKind::Log } else { MemberKind::Full },
                })
                .collect(),
        ),
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
