//! Log commands: what a replica applies at a slot, and how it is encoded in a WAL record
//! (FORMAT.md, "Commands"). Applying a command is deterministic: every replica that applies the
//! same records in the same order holds the same state. Conditional commands are not
//! idempotent (an ADD applied twice counts twice), so each record is applied exactly once,
//! recovery included (it replays only what the checkpoint does not cover).
//!
//! The edge and replay are one rule. Values from a client (JSON or flatbuffers) are held to
//! the data model where they are decoded (no empty sets, nesting within `NESTING_MAX`; keys
//! within the store's limit where every key is encoded, so a BatchWriteItem with one bad key
//! is refused whole), and `Stamped::encode_payload` decodes what it wrote with the decoder
//! recovery and followers run, refusing the write before it is logged or proposed if that
//! decoder would not take it. `tests/dynamodb/crash_api.py` sends every kind of write with edge
//! values until SIGKILL, then checks that what was acknowledged is there and what was refused
//! is not (run by `tools/tests/http.rs` and `tools/tests/cluster.rs`).

use bytes::Bytes;

use crate::codec::{decode_item, encode_item, put_varint, ItemMeta, Reader, VARINT_LEN_MAX};
use crate::expr::codec::{decode_condition, decode_update, encode_condition, encode_update};
use crate::expr::{Condition, Update};
use crate::partition::schema::PartitionSchema;
use crate::value::Item;

/// Commands written before entries were stamped with their time (still read).
const COMMAND_FORMAT_V1: u8 = 1;
/// The format written: the version, the entry's time (varint), the command.
const COMMAND_FORMAT_VERSION: u8 = 2;
const PUT: u8 = 1;
const DELETE: u8 = 2;
const BATCH: u8 = 3;
const CONDITIONAL: u8 = 4;
/// The write of a conditional command that applies an update.
const UPDATE: u8 = 5;
const SCHEMA: u8 = 6;

/// A change to one partition. Keys are encoded primary keys (`KeySchema::encode_key`);
/// values are encoded items (`encode_item`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// The value is shared bytes: a command decoded from a replicated log entry holds a slice
    /// of the entry rather than a copy.
    Put {
        key: Vec<u8>,
        value: Bytes,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Several changes applied atomically, in order.
    Batch(Vec<Command>),
    /// A write that happens only if its condition holds when the record is applied.
    Conditional(Box<ConditionalCommand>),
    /// Sets the partition's schema (its view of its table).
    Schema(PartitionSchema),
}

/// A command as its log holds it: with the time its proposer made the entry, in microseconds
/// since the Unix epoch (0 for records written before entries were stamped), carried in the
/// entry so that every replica records the same time for the changes it makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamped {
    pub at_us: u64,
    pub command: Command,
}

/// The wall clock, in microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
}

impl Stamped {
    /// `command`, stamped with the proposer's clock now.
    pub fn now(command: Command) -> Stamped {
        Stamped { at_us: now_us(), command }
    }

    /// Appends the entry as a WAL record payload (or a replicated log entry), checked by the
    /// decoder that recovery and every follower run on it: a command that decoder would refuse
    /// (an empty set in a condition's value, say) is refused here, with nothing appended to
    /// `out`, so that nothing acknowledged can fail to replay. The edge's own checks come
    /// first and name the request's mistake; this one makes the edge and replay one rule.
    pub fn encode_payload(&self, out: &mut Vec<u8>) -> Result<(), String> {
        let start = out.len();
        out.push(COMMAND_FORMAT_VERSION);
        put_varint(out, self.at_us);
        self.command.encode_into(out);
        match Stamped::decode_with(&out[start..], Values::Skipped) {
            Ok(_) => Ok(()),
            Err(reason) => {
                out.truncate(start);
                Err(reason)
            }
        }
    }

    /// An entry from its encoding, its values copied out of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Stamped, String> {
        Stamped::decode_with(bytes, Values::Copied)
    }

    /// An entry from its encoding in shared `bytes`: a put's value is a slice of them.
    pub fn decode_shared(bytes: &Bytes) -> Result<Stamped, String> {
        Stamped::decode_with(bytes, Values::Shared(bytes))
    }

    fn decode_with(bytes: &[u8], values: Values<'_>) -> Result<Stamped, String> {
        let mut reader = Reader::new(bytes);
        let at_us = match reader.u8()? {
            COMMAND_FORMAT_V1 => 0,
            COMMAND_FORMAT_VERSION => reader.varint()?,
            version => return Err(format!("unknown command format version {version}")),
        };
        let command = Command::decode_from(&mut reader, 0, values)?;
        if !reader.is_empty() {
            return Err("trailing bytes after the command".to_string());
        }
        Ok(Stamped { at_us, command })
    }
}

/// A write that happens only if `condition` holds for the item stored under `key` when the
/// record is applied (an absent item is an empty one): the check and the write are one log
/// record, so no other write to the key can come between them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionalCommand {
    pub key: Vec<u8>,
    pub condition: Option<Condition>,
    pub write: ConditionalWrite,
}

impl Command {
    /// A conditional command (see `ConditionalCommand`).
    pub fn conditional(key: Vec<u8>, condition: Option<Condition>, write: ConditionalWrite) -> Command {
        Command::Conditional(Box::new(ConditionalCommand { key, condition, write }))
    }
}

/// What a conditional command writes when its condition holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConditionalWrite {
    /// Store this encoded item.
    Put(Vec<u8>),
    Delete,
    /// Apply `update` to the stored item, or to `key_item` (the key attributes) if there is
    /// none; the result is stored with `write_timestamp`, carried in the record so that every
    /// replica stores the same bytes.
    Update {
        key_item: Item,
        update: Update,
        write_timestamp: u64,
    },
}

/// What applying a command found: the previous value of each key it wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Previous(Option<Vec<u8>>),
    /// A put or delete whose proposer does not take its outcome: nothing of the value it
    /// replaced is copied out.
    Written,
    Batch(Vec<Outcome>),
    /// A conditional command: whether its condition held (nothing was written if not), and the
    /// encoded item before and after.
    Conditional {
        passed: bool,
        old: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
    /// The update could not be applied to the stored item (a type it does not fit, a result
    /// over the size limit); nothing was written. A `ValidationException` for the caller.
    Invalid(String),
}

/// How a decode treats a put's value bytes.
#[derive(Clone, Copy)]
enum Values<'a> {
    /// Copied out of the encoding.
    Copied,
    /// Slices of these shared bytes (the encoding).
    Shared(&'a Bytes),
    /// Left out: the decode only checks the encoding.
    Skipped,
}

impl Command {
    #[cfg(test)]
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        Stamped { at_us: 7, command: self.clone() }.encode_payload(&mut out).expect("a command that replays");
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Command::Put { key, value } => {
                out.reserve(1 + 2 * VARINT_LEN_MAX + key.len() + value.len());
                out.push(PUT);
                put_varint(out, key.len() as u64);
                out.extend_from_slice(key);
                put_varint(out, value.len() as u64);
                out.extend_from_slice(value);
            }
            Command::Delete { key } => {
                out.push(DELETE);
                put_varint(out, key.len() as u64);
                out.extend_from_slice(key);
            }
            Command::Batch(commands) => {
                out.push(BATCH);
                put_varint(out, commands.len() as u64);
                commands.iter().for_each(|command| command.encode_into(out));
            }
            Command::Conditional(conditional) => {
                let ConditionalCommand { key, condition, write } = &**conditional;
                out.push(CONDITIONAL);
                put_varint(out, key.len() as u64);
                out.extend_from_slice(key);
                match condition {
                    None => out.push(0),
                    Some(condition) => {
                        out.push(1);
                        encode_condition(condition, out);
                    }
                }
                match write {
                    ConditionalWrite::Put(value) => {
                        out.reserve(1 + VARINT_LEN_MAX + value.len());
                        out.push(PUT);
                        put_varint(out, value.len() as u64);
                        out.extend_from_slice(value);
                    }
                    ConditionalWrite::Delete => out.push(DELETE),
                    ConditionalWrite::Update { key_item, update, write_timestamp } => {
                        out.push(UPDATE);
                        let mut item = Vec::new();
                        encode_item(key_item, ItemMeta::default(), &mut item);
                        put_varint(out, item.len() as u64);
                        out.extend_from_slice(&item);
                        encode_update(update, out);
                        out.extend_from_slice(&write_timestamp.to_le_bytes());
                    }
                }
            }
            Command::Schema(schema) => {
                out.push(SCHEMA);
                schema.encode(out);
            }
        }
    }

    fn decode_from<'a>(reader: &mut Reader<'a>, depth: usize, values: Values<'_>) -> Result<Command, String> {
        let slice = |reader: &mut Reader<'a>| -> Result<&'a [u8], String> {
            let len = reader.varint()?;
            reader.take(usize::try_from(len).map_err(|_| "length overflows")?)
        };
        let bytes = |reader: &mut Reader<'a>| slice(reader).map(<[u8]>::to_vec);
        Ok(match reader.u8()? {
            PUT => {
                let key = bytes(reader)?;
                let value = slice(reader)?;
                let value = match values {
                    Values::Copied => Bytes::copy_from_slice(value),
                    Values::Shared(shared) => shared.slice_ref(value),
                    Values::Skipped => Bytes::new(),
                };
                Command::Put { key, value }
            }
            DELETE => Command::Delete { key: bytes(reader)? },
            BATCH if depth == 0 => {
                let count = reader.varint()?;
                let mut commands = Vec::new();
                for _ in 0..count {
                    commands.push(Command::decode_from(reader, depth + 1, values)?);
                }
                Command::Batch(commands)
            }
            CONDITIONAL => {
                let key = bytes(reader)?;
                let condition = match reader.u8()? {
                    0 => None,
                    1 => Some(decode_condition(reader, 0)?),
                    other => return Err(format!("unknown condition flag {other}")),
                };
                let write = match reader.u8()? {
                    PUT => ConditionalWrite::Put(bytes(reader)?),
                    DELETE => ConditionalWrite::Delete,
                    UPDATE => {
                        let (key_item, _) = decode_item(&bytes(reader)?)?;
                        let update = decode_update(reader)?;
                        let timestamp = reader.take(8)?.try_into().expect("8 bytes");
                        ConditionalWrite::Update { key_item, update, write_timestamp: u64::from_le_bytes(timestamp) }
                    }
                    other => return Err(format!("unknown conditional write kind {other}")),
                };
                Command::conditional(key, condition, write)
            }
            SCHEMA if depth == 0 => Command::Schema(PartitionSchema::decode_from(reader)?),
            other => return Err(format!("unknown command kind {other}")),
        })
    }

    /// The key a command's encoding names first, read without decoding the rest: what a report
    /// of a record that does not decode can name (None if even that much is unreadable).
    pub fn key_of(bytes: &[u8]) -> Option<&[u8]> {
        let mut reader = Reader::new(bytes);
        match reader.u8().ok()? {
            COMMAND_FORMAT_V1 => {}
            COMMAND_FORMAT_VERSION => drop(reader.varint().ok()?),
            _ => return None,
        }
        let kind = reader.u8().ok()?;
        if kind == BATCH {
            reader.varint().ok()?;
            reader.u8().ok()?;
        } else if ![PUT, DELETE, CONDITIONAL].contains(&kind) {
            return None;
        }
        let len = reader.varint().ok()?;
        reader.take(usize::try_from(len).ok()?).ok()
    }

    /// Length of the longest key the command writes.
    #[cfg(feature = "storage")]
    pub(crate) fn key_len_max(&self) -> usize {
        match self {
            Command::Put { key, .. } | Command::Delete { key } => key.len(),
            Command::Conditional(conditional) => conditional.key.len(),
            Command::Batch(commands) => commands.iter().map(Command::key_len_max).max().unwrap_or(0),
            Command::Schema(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_reject_garbage() {
        let command = Command::Batch(vec![
            Command::Put { key: b"k1".to_vec(), value: vec![9; 300].into() },
            Command::Delete { key: b"k2".to_vec() },
        ]);
        let bytes = command.encode();
        assert_eq!(Stamped::decode(&bytes).unwrap(), Stamped { at_us: 7, command: command.clone() });
        for cut in 0..bytes.len() {
            assert!(Stamped::decode(&bytes[..cut]).is_err());
        }
        // Decoded from shared bytes, a put's value is a slice of them, not a copy.
        let shared = Bytes::from(bytes.clone());
        let Command::Batch(decoded) = Stamped::decode_shared(&shared).unwrap().command else { panic!("a batch") };
        let Command::Put { value, .. } = &decoded[0] else { panic!("a put") };
        assert!(shared.as_ptr_range().contains(&value.as_ptr()) && value[..] == [9; 300]);
        assert_eq!(Command::Batch(decoded), command);
        assert!(Stamped::decode_shared(&shared.slice(..bytes.len() - 1)).is_err());
        // A batch inside a batch does not decode, so it does not encode either.
        let mut nested = Vec::new();
        let error = Stamped { at_us: 0, command: Command::Batch(vec![command.clone()]) }
            .encode_payload(&mut nested)
            .unwrap_err();
        assert!(error.contains("unknown command kind") && nested.is_empty(), "{error}");
        // A schema entry round-trips; inside a batch it is refused.
        let schema =
            Command::Schema(PartitionSchema { changes: crate::partition::ChangeView::NewImage, retention_s: 60 });
        assert_eq!(Stamped::decode(&schema.encode()).unwrap().command, schema);
        let error =
            Stamped { at_us: 0, command: Command::Batch(vec![schema]) }.encode_payload(&mut nested).unwrap_err();
        assert!(error.contains("unknown command kind") && nested.is_empty(), "{error}");
    }

    /// Records written before entries were stamped (format version 1) still decode, at time 0.
    #[test]
    fn unstamped_commands_of_the_previous_format_decode() {
        let mut v1 = vec![COMMAND_FORMAT_V1];
        Command::Delete { key: b"k".to_vec() }.encode_into(&mut v1);
        let decoded = Stamped::decode(&v1).unwrap();
        assert_eq!(decoded, Stamped { at_us: 0, command: Command::Delete { key: b"k".to_vec() } });
        assert_eq!(Command::key_of(&v1), Some(&b"k"[..]));
        assert_eq!(Command::key_of(&Command::Delete { key: b"k".to_vec() }.encode()), Some(&b"k"[..]));
    }

    fn conditional_commands() -> Vec<Command> {
        use crate::expr::{parse_condition, parse_update, Placeholders};
        use crate::value::AttributeValue;
        use std::collections::HashMap;
        let names = HashMap::from([("#n".to_string(), "name".to_string())]);
        let values = HashMap::from([
            (":v".to_string(), AttributeValue::N(crate::Number::from(3))),
            (":l".to_string(), AttributeValue::L(vec![AttributeValue::S("x".into())])),
            (":s".to_string(), AttributeValue::Ss(["a".to_string()].into())),
            (":t".to_string(), AttributeValue::S("N".into())),
        ]);
        let mut placeholders = Placeholders::new(&names, &values);
        // Every node kind of the condition AST.
        let condition = parse_condition(
            "(a = :v OR NOT b.c[2] <> :v) AND a BETWEEN :v AND :v AND a IN (:v, :v) AND attribute_exists(#n) \
             AND attribute_not_exists(d) AND attribute_type(a, :t) AND begins_with(e, :t) AND contains(f, :v) \
             AND size(g) < :v",
            &mut placeholders,
        )
        .unwrap();
        let update = parse_update(
            "SET a = a + :v, b = if_not_exists(b, :v) - :v, c = list_append(c, :l) REMOVE d[1] ADD e :v DELETE f :s",
            &mut placeholders,
        )
        .unwrap();
        let key_item = crate::value::Item::from([("id".to_string(), AttributeValue::S("k".into()))]);
        vec![
            Command::conditional(b"k".to_vec(), Some(condition.clone()), ConditionalWrite::Put(vec![1, 2, 3])),
            Command::conditional(b"k".to_vec(), None, ConditionalWrite::Delete),
            Command::conditional(
                b"k".to_vec(),
                Some(condition),
                ConditionalWrite::Update { key_item, update, write_timestamp: 42 },
            ),
        ]
    }

    #[test]
    fn conditional_commands_round_trip_and_reject_truncation() {
        for command in conditional_commands() {
            let bytes = command.encode();
            assert_eq!(Stamped::decode(&bytes).unwrap().command, command);
            for cut in 0..bytes.len() {
                assert!(Stamped::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    /// Any value, empty sets and nesting past the limit included (what a client could send
    /// if the edge let it through).
    fn arb_any_value() -> impl proptest::strategy::Strategy<Value = crate::value::AttributeValue> {
        use crate::value::AttributeValue;
        use proptest::prelude::*;
        prop_oneof![
            4 => crate::codec::tests::arb_value(),
            1 => Just(AttributeValue::Ss(Default::default())),
            1 => Just(AttributeValue::Ns(Default::default())),
            1 => Just(AttributeValue::Bs(Default::default())),
            1 => (30usize..40).prop_map(|depth| (0..depth).fold(AttributeValue::Null, |inner, _| AttributeValue::L(vec![inner]))),
        ]
    }

    const CONDITIONS: [&str; 6] = [
        "a = :v",
        "a <> :v OR attribute_exists(b)",
        "a IN (:v, :w)",
        "contains(a, :v)",
        "a BETWEEN :v AND :w",
        "NOT (size(a) > :w)",
    ];
    const UPDATES: [&str; 5] =
        ["SET a = :v", "SET a = if_not_exists(a, :v)", "ADD n :v", "DELETE s :v", "SET l = list_append(:v, :w)"];

    proptest::proptest! {
        /// The encoder produces only what the decoder accepts: every command either encodes to
        /// bytes that decode to itself, or is refused with nothing written; and the refusals
        /// are exactly the commands holding a value the data model forbids.
        #[test]
        fn commands_encode_only_what_replay_decodes(
            v in arb_any_value(),
            w in arb_any_value(),
            condition in proptest::option::of(0..CONDITIONS.len()),
            write in 0..UPDATES.len() + 2,
        ) {
            use crate::expr::{parse_condition, parse_update, Placeholders};
            use std::collections::HashMap;
            let names = HashMap::new();
            let values = HashMap::from([(":v".to_string(), v.clone()), (":w".to_string(), w.clone())]);
            let mut placeholders = Placeholders::new(&names, &values);
            let Ok(condition) = condition.map(|at| parse_condition(CONDITIONS[at], &mut placeholders)).transpose() else {
                return Ok(());
            };
            let write = match write {
                0 => ConditionalWrite::Delete,
                1 => ConditionalWrite::Put(vec![7; 3]),
                at => match parse_update(UPDATES[at - 2], &mut placeholders) {
                    Ok(update) => ConditionalWrite::Update { key_item: crate::value::Item::new(), update, write_timestamp: 1 },
                    Err(_) => return Ok(()),
                },
            };
            let command = Command::conditional(b"k".to_vec(), condition, write);
            let mut out = vec![0xAB];
            match (Stamped { at_us: 3, command: command.clone() }).encode_payload(&mut out) {
                Ok(()) => proptest::prop_assert_eq!(Stamped::decode(&out[1..]).unwrap().command, command),
                Err(_) => {
                    proptest::prop_assert_eq!(out, vec![0xAB], "a refused command leaves nothing behind");
                    let valid = |value: &crate::value::AttributeValue| value.validate("v").is_ok();
                    proptest::prop_assert!(!valid(&v) || !valid(&w), "a valid command was refused: {command:?}");
                }
            }
        }

        #[test]
        fn decoding_damaged_commands_never_panics(flips in proptest::collection::vec((0usize..4096, 0u8..=255), 1..8), which in 0usize..3) {
            let mut bytes = conditional_commands()[which].encode();
            for (at, byte) in flips {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            let _ = Stamped::decode(&bytes);
        }
    }
}
