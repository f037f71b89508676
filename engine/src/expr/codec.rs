//! The binary form of parsed conditions and updates, carried inside log records: a
//! conditional write is one record, and every replica evaluates the same condition against
//! the same state (FORMAT.md, "Conditional writes"). Decoding never trusts its input.

use super::update::{SetOperand, SetValue, Update};
use super::{Comparator, Condition, Operand, Path, PathElement};
use crate::codec::{decode_value, encode_value, put_bytes, put_varint, Reader};

/// Deepest condition or operand tree decoded (a 4 KB expression nests far less deeply).
const DEPTH_MAX: usize = 4096;

pub(crate) fn encode_condition(condition: &Condition, out: &mut Vec<u8>) {
    match condition {
        Condition::Compare(left, comparator, right) => {
            out.push(1);
            out.push(match comparator {
                Comparator::Eq => 0,
                Comparator::Ne => 1,
                Comparator::Lt => 2,
                Comparator::Le => 3,
                Comparator::Gt => 4,
                Comparator::Ge => 5,
            });
            encode_operand(left, out);
            encode_operand(right, out);
        }
        Condition::Between(value, low, high) => {
            out.push(2);
            [value, low, high].into_iter().for_each(|operand| encode_operand(operand, out));
        }
        Condition::In(value, list) => {
            out.push(3);
            encode_operand(value, out);
            put_varint(out, list.len() as u64);
            list.iter().for_each(|operand| encode_operand(operand, out));
        }
        Condition::Exists(path) => {
            out.push(4);
            encode_path(path, out);
        }
        Condition::NotExists(path) => {
            out.push(5);
            encode_path(path, out);
        }
        Condition::Type(path, name) => {
            out.push(6);
            encode_path(path, out);
            put_bytes(out, name.as_bytes());
        }
        Condition::BeginsWith(left, right) | Condition::Contains(left, right) => {
            out.push(if matches!(condition, Condition::BeginsWith(..)) { 7 } else { 8 });
            encode_operand(left, out);
            encode_operand(right, out);
        }
        Condition::And(left, right) | Condition::Or(left, right) => {
            out.push(if matches!(condition, Condition::And(..)) { 9 } else { 10 });
            encode_condition(left, out);
            encode_condition(right, out);
        }
        Condition::Not(inner) => {
            out.push(11);
            encode_condition(inner, out);
        }
    }
}

pub(crate) fn decode_condition(reader: &mut Reader<'_>, depth: usize) -> Result<Condition, String> {
    if depth > DEPTH_MAX {
        return Err("condition nested too deeply".to_string());
    }
    let operand = |reader: &mut Reader<'_>| decode_operand(reader);
    let inner = |reader: &mut Reader<'_>| decode_condition(reader, depth + 1).map(Box::new);
    Ok(match reader.u8()? {
        1 => {
            let comparator = match reader.u8()? {
                0 => Comparator::Eq,
                1 => Comparator::Ne,
                2 => Comparator::Lt,
                3 => Comparator::Le,
                4 => Comparator::Gt,
                5 => Comparator::Ge,
                other => return Err(format!("unknown comparator {other}")),
            };
            Condition::Compare(operand(reader)?, comparator, operand(reader)?)
        }
        2 => Condition::Between(operand(reader)?, operand(reader)?, operand(reader)?),
        3 => {
            let value = operand(reader)?;
            let count = reader.varint()?;
            let mut list = Vec::new();
            for _ in 0..count {
                list.push(operand(reader)?);
            }
            Condition::In(value, list)
        }
        4 => Condition::Exists(decode_path(reader)?),
        5 => Condition::NotExists(decode_path(reader)?),
        6 => Condition::Type(decode_path(reader)?, reader.string()?),
        7 => Condition::BeginsWith(operand(reader)?, operand(reader)?),
        8 => Condition::Contains(operand(reader)?, operand(reader)?),
        9 => Condition::And(inner(reader)?, inner(reader)?),
        10 => Condition::Or(inner(reader)?, inner(reader)?),
        11 => Condition::Not(inner(reader)?),
        other => return Err(format!("unknown condition kind {other}")),
    })
}

fn encode_operand(operand: &Operand, out: &mut Vec<u8>) {
    match operand {
        Operand::Path(path) => {
            out.push(1);
            encode_path(path, out);
        }
        Operand::Value(value) => {
            out.push(2);
            encode_value(value, out);
        }
        Operand::Size(path) => {
            out.push(3);
            encode_path(path, out);
        }
    }
}

fn decode_operand(reader: &mut Reader<'_>) -> Result<Operand, String> {
    Ok(match reader.u8()? {
        1 => Operand::Path(decode_path(reader)?),
        2 => Operand::Value(decode_value(reader, 0)?),
        3 => Operand::Size(decode_path(reader)?),
        other => return Err(format!("unknown operand kind {other}")),
    })
}

fn encode_path(path: &Path, out: &mut Vec<u8>) {
    put_varint(out, path.0.len() as u64);
    for element in &path.0 {
        match element {
            PathElement::Name(name) => {
                out.push(0);
                put_bytes(out, name.as_bytes());
            }
            PathElement::Index(index) => {
                out.push(1);
                put_varint(out, *index as u64);
            }
        }
    }
}

fn decode_path(reader: &mut Reader<'_>) -> Result<Path, String> {
    let count = reader.varint()?;
    if count == 0 || count > super::PATH_ELEMENTS_MAX as u64 {
        return Err(format!("a path of {count} elements"));
    }
    let mut elements = Vec::new();
    for i in 0..count {
        elements.push(match reader.u8()? {
            0 => PathElement::Name(reader.string()?),
            1 if i > 0 => PathElement::Index(usize::try_from(reader.varint()?).map_err(|_| "index overflows")?),
            other => return Err(format!("unknown path element kind {other}")),
        });
    }
    Ok(Path(elements))
}

pub(crate) fn encode_update(update: &Update, out: &mut Vec<u8>) {
    put_varint(out, update.set.len() as u64);
    for (path, value) in &update.set {
        encode_path(path, out);
        match value {
            SetValue::Operand(operand) => {
                out.push(0);
                encode_set_operand(operand, out);
            }
            SetValue::Plus(left, right) | SetValue::Minus(left, right) => {
                out.push(if matches!(value, SetValue::Plus(..)) { 1 } else { 2 });
                encode_set_operand(left, out);
                encode_set_operand(right, out);
            }
        }
    }
    put_varint(out, update.remove.len() as u64);
    update.remove.iter().for_each(|path| encode_path(path, out));
    for pairs in [&update.add, &update.delete] {
        put_varint(out, pairs.len() as u64);
        for (path, value) in pairs {
            encode_path(path, out);
            encode_value(value, out);
        }
    }
}

pub(crate) fn decode_update(reader: &mut Reader<'_>) -> Result<Update, String> {
    let mut update = Update::default();
    for _ in 0..reader.varint()? {
        let path = decode_path(reader)?;
        let value = match reader.u8()? {
            0 => SetValue::Operand(decode_set_operand(reader, 0)?),
            1 => SetValue::Plus(decode_set_operand(reader, 0)?, decode_set_operand(reader, 0)?),
            2 => SetValue::Minus(decode_set_operand(reader, 0)?, decode_set_operand(reader, 0)?),
            other => return Err(format!("unknown SET value kind {other}")),
        };
        update.set.push((path, value));
    }
    for _ in 0..reader.varint()? {
        update.remove.push(decode_path(reader)?);
    }
    for pairs in [&mut update.add, &mut update.delete] {
        for _ in 0..reader.varint()? {
            pairs.push((decode_path(reader)?, decode_value(reader, 0)?));
        }
    }
    Ok(update)
}

fn encode_set_operand(operand: &SetOperand, out: &mut Vec<u8>) {
    match operand {
        SetOperand::Path(path) => {
            out.push(1);
            encode_path(path, out);
        }
        SetOperand::Value(value) => {
            out.push(2);
            encode_value(value, out);
        }
        SetOperand::IfNotExists(path, fallback) => {
            out.push(3);
            encode_path(path, out);
            encode_set_operand(fallback, out);
        }
        SetOperand::ListAppend(left, right) => {
            out.push(4);
            encode_set_operand(left, out);
            encode_set_operand(right, out);
        }
    }
}

fn decode_set_operand(reader: &mut Reader<'_>, depth: usize) -> Result<SetOperand, String> {
    if depth > DEPTH_MAX {
        return Err("SET operand nested too deeply".to_string());
    }
    Ok(match reader.u8()? {
        1 => SetOperand::Path(decode_path(reader)?),
        2 => SetOperand::Value(decode_value(reader, 0)?),
        3 => SetOperand::IfNotExists(decode_path(reader)?, Box::new(decode_set_operand(reader, depth + 1)?)),
        4 => SetOperand::ListAppend(
            Box::new(decode_set_operand(reader, depth + 1)?),
            Box::new(decode_set_operand(reader, depth + 1)?),
        ),
        other => return Err(format!("unknown SET operand kind {other}")),
    })
}
