//! The internal RPC: work on one partition (`PartitionOp`) and its answer (`PartitionAnswer`).
//! A coordinator asks it of the partition's owner: another core of its node over the core
//! mesh, as these values; the node that leads the partition as a `PartitionOp` frame on its
//! client port (a cluster member only). Keys are encoded keys and values stored bytes, as the
//! tree holds them: no item is decoded and encoded again on the way.

use std::ops::Bound;

use flatbuffers::{FlatBufferBuilder, WIPOffset};
use tessera_engine::partition::PartitionId;
use tessera_engine::{Command, Stamped};

use crate::error::{ErrorCode, WireError};
use crate::frame::{self, MessageType};
use crate::generated::tessera::fb;
use crate::message::{read_error, root, write_error};

/// Work on one partition, at its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionOp {
    /// `return_old`: answer the stored value it replaced.
    Put {
        partition: PartitionId,
        key: Vec<u8>,
        value: Vec<u8>,
        return_old: bool,
    },
    Delete {
        partition: PartitionId,
        key: Vec<u8>,
        return_old: bool,
    },
    /// `consistent`: a strongly consistent read (a replicated partition serves it only where
    /// it leads with a lease).
    Get {
        partition: PartitionId,
        key: Vec<u8>,
        consistent: bool,
    },
    /// A conditional put, delete or update, checked and written by one log record.
    Conditional {
        partition: PartitionId,
        command: Command,
    },
    /// Entries within the bounds, until `limit` entries or `bytes_max` bytes of values.
    Scan {
        partition: PartitionId,
        consistent: bool,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
        limit: usize,
        bytes_max: usize,
    },
    /// With `previous`, answers the stored value each write replaced (`Values`, in order).
    Batch {
        partition: PartitionId,
        commands: Vec<Command>,
        previous: bool,
    },
}

/// A `PartitionOp`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionAnswer {
    Value(Option<Vec<u8>>),
    Values(Vec<Option<Vec<u8>>>),
    /// A conditional write: whether its condition held, and the stored value before and after.
    Conditional {
        passed: bool,
        old: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
    /// `more`: the scan stopped at its limit or byte budget, not at the end of its range.
    Entries {
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        more: bool,
    },
    Done,
    Error(WireError),
}

fn invalid(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::ValidationException, message)
}

impl PartitionOp {
    /// The partition it works on.
    pub fn partition(&self) -> PartitionId {
        match self {
            PartitionOp::Put { partition, .. }
            | PartitionOp::Delete { partition, .. }
            | PartitionOp::Get { partition, .. }
            | PartitionOp::Conditional { partition, .. }
            | PartitionOp::Scan { partition, .. }
            | PartitionOp::Batch { partition, .. } => *partition,
        }
    }

    /// Appends the op as a whole frame to `out`; `Err` if a command does not encode as the
    /// log would take it (nothing is appended then).
    pub fn encode(&self, request_id: u64, out: &mut Vec<u8>) -> Result<(), WireError> {
        let mut fbb = FlatBufferBuilder::with_capacity(256);
        let mut args = fb::PartitionOpRequestArgs { partition: self.partition(), ..Default::default() };
        let command = |command: Command| {
            let mut bytes = Vec::new();
            Stamped { at_us: 0, command }.encode_payload(&mut bytes).map_err(invalid)?;
            Ok::<_, WireError>(bytes)
        };
        match self {
            PartitionOp::Put { key, value, return_old, .. } => {
                args.kind = fb::PartitionOpKind::PUT;
                args.key = Some(fbb.create_vector(key));
                args.value = Some(fbb.create_vector(value));
                args.flag = *return_old;
            }
            PartitionOp::Delete { key, return_old, .. } => {
                args.kind = fb::PartitionOpKind::DELETE;
                args.key = Some(fbb.create_vector(key));
                args.flag = *return_old;
            }
            PartitionOp::Get { key, consistent, .. } => {
                args.kind = fb::PartitionOpKind::GET;
                args.key = Some(fbb.create_vector(key));
                args.flag = *consistent;
            }
            PartitionOp::Conditional { command: conditional, .. } => {
                args.kind = fb::PartitionOpKind::CONDITIONAL;
                args.command = Some(fbb.create_vector(&command(conditional.clone())?));
            }
            PartitionOp::Scan { consistent, lower, upper, reverse, limit, bytes_max, .. } => {
                args.kind = fb::PartitionOpKind::SCAN;
                args.flag = *consistent;
                args.lower = write_bound(&mut fbb, lower);
                args.upper = write_bound(&mut fbb, upper);
                args.reverse = *reverse;
                args.limit = *limit as u64;
                args.bytes_max = *bytes_max as u64;
            }
            PartitionOp::Batch { commands, previous, .. } => {
                args.kind = fb::PartitionOpKind::BATCH;
                args.command = Some(fbb.create_vector(&command(Command::Batch(commands.clone()))?));
                args.flag = *previous;
            }
        }
        let root = fb::PartitionOpRequest::create(&mut fbb, &args);
        fbb.finish_minimal(root);
        frame::encode(request_id, MessageType::PartitionOp, 0, fbb.finished_data(), out);
        Ok(())
    }

    /// An op from a `PartitionOp` frame's payload.
    pub fn decode(payload: &[u8]) -> Result<PartitionOp, WireError> {
        let op = root::<fb::PartitionOpRequest>(payload, "PartitionOp")?;
        let partition = op.partition();
        let bytes = |field: Option<flatbuffers::Vector<'_, u8>>, what: &str| {
            field
                .map(|bytes| bytes.bytes().to_vec())
                .ok_or_else(|| invalid(format!("a PartitionOp without its {what}")))
        };
        let command = || {
            let encoded = bytes(op.command(), "command")?;
            Stamped::decode(&encoded).map(|stamped| stamped.command).map_err(invalid)
        };
        let size = |value: u64| usize::try_from(value).map_err(|_| invalid("a PartitionOp scan bound beyond memory"));
        Ok(match op.kind() {
            fb::PartitionOpKind::PUT => PartitionOp::Put {
                partition,
                key: bytes(op.key(), "key")?,
                value: bytes(op.value(), "value")?,
                return_old: op.flag(),
            },
            fb::PartitionOpKind::DELETE => {
                PartitionOp::Delete { partition, key: bytes(op.key(), "key")?, return_old: op.flag() }
            }
            fb::PartitionOpKind::GET => {
                PartitionOp::Get { partition, key: bytes(op.key(), "key")?, consistent: op.flag() }
            }
            fb::PartitionOpKind::CONDITIONAL => match command()? {
                command @ Command::Conditional(_) => PartitionOp::Conditional { partition, command },
                _ => return Err(invalid("a conditional PartitionOp whose command is not conditional")),
            },
            fb::PartitionOpKind::SCAN => {
                let (limit, bytes_max) = (size(op.limit())?, size(op.bytes_max())?);
                if limit == 0 || bytes_max == 0 {
                    return Err(invalid("a PartitionOp scan for no entries"));
                }
                PartitionOp::Scan {
                    partition,
                    consistent: op.flag(),
                    lower: read_bound(op.lower()),
                    upper: read_bound(op.upper()),
                    reverse: op.reverse(),
                    limit,
                    bytes_max,
                }
            }
            fb::PartitionOpKind::BATCH => match command()? {
                Command::Batch(commands) => PartitionOp::Batch { partition, commands, previous: op.flag() },
                _ => return Err(invalid("a batch PartitionOp whose command is not a batch")),
            },
            other => return Err(invalid(format!("unknown PartitionOp kind {}", other.0))),
        })
    }
}

impl PartitionAnswer {
    /// Appends the answer to request `request_id` as a whole frame to `out`.
    pub fn encode(&self, request_id: u64, out: &mut Vec<u8>) {
        let mut fbb = FlatBufferBuilder::with_capacity(256);
        let mut args = fb::PartitionAnswerResponseArgs::default();
        match self {
            PartitionAnswer::Value(value) => {
                args.kind = fb::PartitionAnswerKind::VALUE;
                args.value = Some(write_maybe(&mut fbb, value.as_deref()));
            }
            PartitionAnswer::Values(values) => {
                args.kind = fb::PartitionAnswerKind::VALUES;
                let values: Vec<_> = values.iter().map(|value| write_maybe(&mut fbb, value.as_deref())).collect();
                args.values = Some(fbb.create_vector(&values));
            }
            PartitionAnswer::Conditional { passed, old, new } => {
                args.kind = fb::PartitionAnswerKind::CONDITIONAL;
                args.passed = *passed;
                args.value = Some(write_maybe(&mut fbb, old.as_deref()));
                args.new_value = Some(write_maybe(&mut fbb, new.as_deref()));
            }
            PartitionAnswer::Entries { entries, more } => {
                args.kind = fb::PartitionAnswerKind::ENTRIES;
                let entries: Vec<_> = entries
                    .iter()
                    .map(|(key, value)| {
                        let entry = fb::SnapshotEntryArgs {
                            key: Some(fbb.create_vector(key)),
                            value: Some(fbb.create_vector(value)),
                        };
                        fb::SnapshotEntry::create(&mut fbb, &entry)
                    })
                    .collect();
                args.entries = Some(fbb.create_vector(&entries));
                args.more = *more;
            }
            PartitionAnswer::Done => args.kind = fb::PartitionAnswerKind::DONE,
            PartitionAnswer::Error(error) => {
                args.kind = fb::PartitionAnswerKind::ERROR;
                args.error = Some(write_error(&mut fbb, error));
            }
        }
        let root = fb::PartitionAnswerResponse::create(&mut fbb, &args);
        fbb.finish_minimal(root);
        frame::encode(request_id, MessageType::PartitionAnswer, 0, fbb.finished_data(), out);
    }

    /// An answer from a `PartitionAnswer` frame's payload.
    pub fn decode(payload: &[u8]) -> Result<PartitionAnswer, WireError> {
        let answer = root::<fb::PartitionAnswerResponse>(payload, "PartitionAnswer")?;
        Ok(match answer.kind() {
            fb::PartitionAnswerKind::VALUE => PartitionAnswer::Value(read_maybe(answer.value())),
            fb::PartitionAnswerKind::VALUES => PartitionAnswer::Values(
                answer.values().into_iter().flatten().map(|value| read_maybe(Some(value))).collect(),
            ),
            fb::PartitionAnswerKind::CONDITIONAL => PartitionAnswer::Conditional {
                passed: answer.passed(),
                old: read_maybe(answer.value()),
                new: read_maybe(answer.new_value()),
            },
            fb::PartitionAnswerKind::ENTRIES => PartitionAnswer::Entries {
                entries: answer
                    .entries()
                    .into_iter()
                    .flatten()
                    .map(|entry| {
                        let key = entry.key().map(|key| key.bytes().to_vec()).unwrap_or_default();
                        (key, entry.value().map(|value| value.bytes().to_vec()).unwrap_or_default())
                    })
                    .collect(),
                more: answer.more(),
            },
            fb::PartitionAnswerKind::DONE => PartitionAnswer::Done,
            fb::PartitionAnswerKind::ERROR => match answer.error() {
                Some(error) => PartitionAnswer::Error(read_error(error)?),
                None => return Err(invalid("a PartitionAnswer error without its error")),
            },
            other => return Err(invalid(format!("unknown PartitionAnswer kind {}", other.0))),
        })
    }
}

fn write_bound<'a>(fbb: &mut FlatBufferBuilder<'a>, bound: &Bound<Vec<u8>>) -> Option<WIPOffset<fb::KeyBound<'a>>> {
    let (key, inclusive) = match bound {
        Bound::Unbounded => return None,
        Bound::Included(key) => (key, true),
        Bound::Excluded(key) => (key, false),
    };
    let key = Some(fbb.create_vector(key));
    Some(fb::KeyBound::create(fbb, &fb::KeyBoundArgs { key, inclusive }))
}

fn read_bound(bound: Option<fb::KeyBound<'_>>) -> Bound<Vec<u8>> {
    match bound {
        None => Bound::Unbounded,
        Some(bound) => {
            let key = bound.key().map(|key| key.bytes().to_vec()).unwrap_or_default();
            if bound.inclusive() {
                Bound::Included(key)
            } else {
                Bound::Excluded(key)
            }
        }
    }
}

fn write_maybe<'a>(fbb: &mut FlatBufferBuilder<'a>, value: Option<&[u8]>) -> WIPOffset<fb::MaybeValue<'a>> {
    let data = value.map(|value| fbb.create_vector(value));
    fb::MaybeValue::create(fbb, &fb::MaybeValueArgs { present: value.is_some(), data })
}

fn read_maybe(value: Option<fb::MaybeValue<'_>>) -> Option<Vec<u8>> {
    value
        .filter(|value| value.present())
        .map(|value| value.data().map(|data| data.bytes().to_vec()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Decoded;

    fn round_trip_op(op: PartitionOp) {
        let mut bytes = Vec::new();
        op.encode(9, &mut bytes).unwrap();
        let Ok(Decoded::Frame(frame, _)) = frame::decode(&bytes) else { panic!("one frame") };
        assert_eq!(frame.header.message_type, MessageType::PartitionOp as u16);
        assert_eq!(PartitionOp::decode(frame.payload).unwrap(), op);
    }

    fn round_trip_answer(answer: PartitionAnswer) {
        let mut bytes = Vec::new();
        answer.encode(9, &mut bytes);
        let Ok(Decoded::Frame(frame, _)) = frame::decode(&bytes) else { panic!("one frame") };
        assert_eq!(frame.header.message_type, MessageType::PartitionAnswer as u16);
        assert_eq!(PartitionAnswer::decode(frame.payload).unwrap(), answer);
    }

    #[test]
    fn ops_and_answers_round_trip() {
        let key = b"\x00\x01key".to_vec();
        round_trip_op(PartitionOp::Put { partition: 7, key: key.clone(), value: vec![], return_old: true });
        round_trip_op(PartitionOp::Delete { partition: 7, key: key.clone(), return_old: false });
        round_trip_op(PartitionOp::Get { partition: 1 << 40, key: key.clone(), consistent: true });
        let write = tessera_engine::ConditionalWrite::Delete;
        round_trip_op(PartitionOp::Conditional {
            partition: 3,
            command: Command::conditional(key.clone(), None, write),
        });
        for (lower, upper) in [
            (Bound::Unbounded, Bound::Unbounded),
            (Bound::Included(vec![]), Bound::Excluded(vec![0xFF; 8])),
            (Bound::Excluded(key.clone()), Bound::Included(key.clone())),
        ] {
            let scan = PartitionOp::Scan {
                partition: 2,
                consistent: false,
                lower,
                upper,
                reverse: true,
                limit: 10,
                bytes_max: 1 << 20,
            };
            round_trip_op(scan);
        }
        let commands =
            vec![Command::Put { key: key.clone(), value: b"v".to_vec().into() }, Command::Delete { key: key.clone() }];
        round_trip_op(PartitionOp::Batch { partition: 4, commands, previous: true });
        round_trip_answer(PartitionAnswer::Value(None));
        round_trip_answer(PartitionAnswer::Value(Some(vec![])));
        round_trip_answer(PartitionAnswer::Values(vec![None, Some(b"old".to_vec())]));
        round_trip_answer(PartitionAnswer::Conditional { passed: false, old: Some(b"o".to_vec()), new: None });
        round_trip_answer(PartitionAnswer::Entries { entries: vec![(key.clone(), b"v".to_vec())], more: true });
        round_trip_answer(PartitionAnswer::Done);
        let not_leader =
            WireError { leader: Some("10.0.0.2:7000".into()), ..WireError::new(ErrorCode::NotLeader, "no") };
        round_trip_answer(PartitionAnswer::Error(not_leader));
    }

    #[test]
    fn bad_ops_are_refused_by_name() {
        let mut fbb = FlatBufferBuilder::new();
        let args = fb::PartitionOpRequestArgs { kind: fb::PartitionOpKind::GET, ..Default::default() };
        let root = fb::PartitionOpRequest::create(&mut fbb, &args);
        fbb.finish_minimal(root);
        assert!(PartitionOp::decode(fbb.finished_data()).unwrap_err().message.contains("without its key"));
        let mut fbb = FlatBufferBuilder::new();
        let command = Some(fbb.create_vector(&[9u8, 9, 9]));
        let args = fb::PartitionOpRequestArgs { kind: fb::PartitionOpKind::BATCH, command, ..Default::default() };
        let root = fb::PartitionOpRequest::create(&mut fbb, &args);
        fbb.finish_minimal(root);
        assert_eq!(PartitionOp::decode(fbb.finished_data()).unwrap_err().code, ErrorCode::ValidationException);
        let mut fbb = FlatBufferBuilder::new();
        let args = fb::PartitionOpRequestArgs { kind: fb::PartitionOpKind::SCAN, ..Default::default() };
        let root = fb::PartitionOpRequest::create(&mut fbb, &args);
        fbb.finish_minimal(root);
        assert!(PartitionOp::decode(fbb.finished_data()).unwrap_err().message.contains("for no entries"));
        assert_eq!(PartitionOp::decode(b"garbage").unwrap_err().code, ErrorCode::MalformedMessage);
    }
}
