//! The durable form of a replica's persist (`Action::Persist`): a WAL record payload of kind 2
//! (FORMAT.md, "Multi-Paxos records").

use super::{Ballot, Entry, Member, MemberKind, Slot, Value};
use crate::codec::Reader;

const FORMAT_VERSION: u8 = 1;
const VALUE_NOOP: u8 = 0;
const VALUE_COMMAND: u8 = 1;
const VALUE_MEMBERS: u8 = 2;

/// Appends the promise (if any) and entries as one record payload.
pub fn encode_persist(promised: Option<Ballot>, entries: &[(Slot, Entry)], out: &mut Vec<u8>) {
    out.push(FORMAT_VERSION);
    match promised {
        None => out.push(0),
        Some(ballot) => {
            out.push(1);
            encode_ballot(ballot, out);
        }
    }
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (slot, entry) in entries {
        out.extend_from_slice(&slot.to_le_bytes());
        encode_ballot(entry.ballot, out);
        match &entry.value {
            Value::Noop => out.push(VALUE_NOOP),
            Value::Command { id, bytes } => {
                out.push(VALUE_COMMAND);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                out.extend_from_slice(bytes);
            }
            Value::Members(members) => {
                out.push(VALUE_MEMBERS);
                encode_members(members, out);
            }
        }
    }
}

/// Appends a configuration: its member count, then each member's id and kind.
pub fn encode_members(members: &[Member], out: &mut Vec<u8>) {
    out.extend_from_slice(&(members.len() as u32).to_le_bytes());
    for member in members {
        out.extend_from_slice(&member.id.to_le_bytes());
        out.push(match member.kind {
            MemberKind::Full => 0,
            MemberKind::Log => 1,
        });
    }
}

/// A configuration as `encode_members` wrote it, read from `reader` (within `total` bytes).
pub(crate) fn decode_members(reader: &mut Reader<'_>, total: usize) -> Result<Vec<Member>, String> {
    let count = u32_le(reader)? as usize;
    if count > total / 5 {
        return Err(format!("{count} members cannot fit in {total} bytes"));
    }
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let id = u32_le(reader)?;
        let kind = match reader.u8()? {
            0 => MemberKind::Full,
            1 => MemberKind::Log,
            other => return Err(format!("member kind {other} is neither full (0) nor log (1)")),
        };
        members.push(Member { id, kind });
    }
    Ok(members)
}

/// A configuration that `encode_members` wrote and nothing follows.
pub fn decode_configuration(bytes: &[u8]) -> Result<Vec<Member>, String> {
    let mut reader = Reader::new(bytes);
    let members = decode_members(&mut reader, bytes.len())?;
    match reader.is_empty() {
        true => Ok(members),
        false => Err("bytes follow the configuration".into()),
    }
}

/// What one persist holds: the promise, if it made one, and the entries.
pub type PersistContent = (Option<Ballot>, Vec<(Slot, Entry)>);

/// A persist's promise and entries, or why the bytes are not one.
pub fn decode_persist(bytes: &[u8]) -> Result<PersistContent, String> {
    let mut reader = Reader::new(bytes);
    let version = reader.u8()?;
    if version != FORMAT_VERSION {
        return Err(format!("paxos record format version {version} is not {FORMAT_VERSION}"));
    }
    let promised = match reader.u8()? {
        0 => None,
        1 => Some(decode_ballot(&mut reader)?),
        other => return Err(format!("promise flag {other} is neither 0 nor 1")),
    };
    let count = u32_le(&mut reader)? as usize;
    // Every entry takes at least 21 bytes: the count cannot promise more than are left.
    if count > bytes.len() / 21 {
        return Err(format!("{count} entries cannot fit in {} bytes", bytes.len()));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let slot = u64_le(&mut reader)?;
        let ballot = decode_ballot(&mut reader)?;
        let value = match reader.u8()? {
            VALUE_NOOP => Value::Noop,
            VALUE_COMMAND => {
                let id = u64_le(&mut reader)?;
                let len = u32_le(&mut reader)? as usize;
                Value::Command { id, bytes: bytes::Bytes::copy_from_slice(reader.take(len)?) }
            }
            VALUE_MEMBERS => Value::Members(decode_members(&mut reader, bytes.len())?),
            other => return Err(format!("value kind {other} is not a no-op (0), command (1) or members (2)")),
        };
        if slot == 0 {
            return Err("an entry at slot 0, which is before the log".into());
        }
        entries.push((slot, Entry { ballot, value }));
    }
    if !reader.is_empty() {
        return Err(format!("{} bytes after the last entry", bytes.len() - reader.position()));
    }
    Ok((promised, entries))
}

fn encode_ballot(ballot: Ballot, out: &mut Vec<u8>) {
    out.extend_from_slice(&ballot.round.to_le_bytes());
    out.extend_from_slice(&ballot.replica.to_le_bytes());
}

fn decode_ballot(reader: &mut Reader<'_>) -> Result<Ballot, String> {
    Ok(Ballot { round: u64_le(reader)?, replica: u32_le(reader)? })
}

fn u64_le(reader: &mut Reader<'_>) -> Result<u64, String> {
    Ok(u64::from_le_bytes(reader.take(8)?.try_into().expect("8 bytes")))
}

fn u32_le(reader: &mut Reader<'_>) -> Result<u32, String> {
    Ok(u32::from_le_bytes(reader.take(4)?.try_into().expect("4 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_round_trip_and_damage_is_named() {
        let ballot = Ballot { round: 7, replica: 2 };
        let entries = vec![
            (5, Entry { ballot, value: Value::Noop }),
            (6, Entry { ballot, value: Value::Command { id: 99, bytes: bytes::Bytes::from_static(b"put") } }),
            (7, Entry { ballot, value: Value::Members(vec![Member::full(1), Member::log(4)]) }),
        ];
        for promised in [None, Some(ballot)] {
            let mut bytes = Vec::new();
            encode_persist(promised, &entries, &mut bytes);
            assert_eq!(decode_persist(&bytes), Ok((promised, entries.clone())));
            for cut in 0..bytes.len() {
                assert!(decode_persist(&bytes[..cut]).is_err(), "cut at {cut} decoded");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(decode_persist(&longer).unwrap_err().contains("after the last entry"));
        }
        let mut bytes = Vec::new();
        encode_persist(None, &[], &mut bytes);
        bytes[0] = 9;
        assert!(decode_persist(&bytes).unwrap_err().contains("version 9"));
        let mut huge = Vec::new();
        encode_persist(None, &[], &mut huge);
        huge[2..6].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_persist(&huge).unwrap_err().contains("cannot fit"));
    }
}
