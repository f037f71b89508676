//! Log commands: what a replica applies at a slot, and how it is encoded in a WAL record
//! (FORMAT.md, "Commands"). Applying a command is deterministic and idempotent, so replaying
//! a record that was already applied before a crash changes nothing.

use crate::codec::{put_varint, Reader};

const COMMAND_FORMAT_VERSION: u8 = 1;
const PUT: u8 = 1;
const DELETE: u8 = 2;
const BATCH: u8 = 3;

/// A change to one partition. Keys are encoded primary keys (`KeySchema::encode_key`);
/// values are encoded items (`encode_item`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Several changes applied atomically, in order.
    Batch(Vec<Command>),
}

/// What applying a command found: the previous value of each key it wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Previous(Option<Vec<u8>>),
    Batch(Vec<Outcome>),
}

impl Command {
    #[cfg(test)]
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_payload(&mut out);
        out
    }

    /// Appends the command as a WAL record payload.
    pub(crate) fn encode_payload(&self, out: &mut Vec<u8>) {
        out.push(COMMAND_FORMAT_VERSION);
        self.encode_into(out);
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Command::Put { key, value } => {
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
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Command, String> {
        let mut reader = Reader::new(bytes);
        let version = reader.u8()?;
        if version != COMMAND_FORMAT_VERSION {
            return Err(format!("unknown command format version {version}"));
        }
        let command = Command::decode_from(&mut reader, 0)?;
        if !reader.is_empty() {
            return Err("trailing bytes after the command".to_string());
        }
        Ok(command)
    }

    fn decode_from(reader: &mut Reader<'_>, depth: usize) -> Result<Command, String> {
        let bytes = |reader: &mut Reader<'_>| -> Result<Vec<u8>, String> {
            let len = reader.varint()?;
            Ok(reader.take(usize::try_from(len).map_err(|_| "length overflows")?)?.to_vec())
        };
        Ok(match reader.u8()? {
            PUT => Command::Put { key: bytes(reader)?, value: bytes(reader)? },
            DELETE => Command::Delete { key: bytes(reader)? },
            BATCH if depth == 0 => {
                let count = reader.varint()?;
                let mut commands = Vec::new();
                for _ in 0..count {
                    commands.push(Command::decode_from(reader, depth + 1)?);
                }
                Command::Batch(commands)
            }
            other => return Err(format!("unknown command kind {other}")),
        })
    }

    /// Length of the longest key the command writes.
    pub(crate) fn key_len_max(&self) -> usize {
        match self {
            Command::Put { key, .. } | Command::Delete { key } => key.len(),
            Command::Batch(commands) => commands.iter().map(Command::key_len_max).max().unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_reject_garbage() {
        let command = Command::Batch(vec![
            Command::Put { key: b"k1".to_vec(), value: vec![9; 300] },
            Command::Delete { key: b"k2".to_vec() },
        ]);
        let bytes = command.encode();
        assert_eq!(Command::decode(&bytes).unwrap(), command);
        for cut in 0..bytes.len() {
            assert!(Command::decode(&bytes[..cut]).is_err());
        }
        let nested = Command::Batch(vec![command.clone()]).encode();
        assert!(Command::decode(&nested).unwrap_err().contains("unknown command kind"));
    }
}
