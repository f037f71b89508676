//! Binary encoding of stored items (FORMAT.md, "Stored item"). The decoder never trusts its
//! input: every length is bounds-checked and nesting is limited, so a damaged buffer yields an
//! error naming what was wrong, never a panic.

use std::collections::{BTreeMap, BTreeSet};

use crate::number::Number;
use crate::value::{item_size, AttributeValue, Item, NESTING_MAX};

/// Version of the stored-item layout written by this code.
pub const ITEM_FORMAT_VERSION: u8 = 1;
/// Bytes before the attributes: version, flags, reserved, write timestamp, transaction id.
const ITEM_HEADER_LEN: usize = 1 + 1 + 2 + 8 + 8;

/// Per-item metadata kept beside the attributes for transactions and streams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ItemMeta {
    /// Commit timestamp of the write that produced this version (microseconds; 0 if unknown).
    pub write_timestamp: u64,
    /// Transaction holding a pending write on this item, or 0.
    pub pending_transaction: u64,
}

const TAG_S: u8 = 1;
const TAG_N: u8 = 2;
const TAG_B: u8 = 3;
const TAG_FALSE: u8 = 4;
const TAG_TRUE: u8 = 5;
const TAG_NULL: u8 = 6;
const TAG_M: u8 = 7;
const TAG_L: u8 = 8;
const TAG_SS: u8 = 9;
const TAG_NS: u8 = 10;
const TAG_BS: u8 = 11;

/// Bytes a `put_varint` of a u64 takes at most.
pub(crate) const VARINT_LEN_MAX: usize = 10;

/// Appends `value` as an unsigned LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Encodes an item with its metadata.
pub fn encode_item(item: &Item, meta: ItemMeta, out: &mut Vec<u8>) {
    // Room for the whole item at once, rather than a run of reallocations as it grows (they
    // were ~6% of a replica's CPU under 1 KiB puts): the header, then per attribute its name
    // and value (DynamoDB's size of them) and a few bytes of tags and lengths.
    out.reserve(ITEM_HEADER_LEN + VARINT_LEN_MAX + item_size(item) + item.len() * (1 + 2 * VARINT_LEN_MAX));
    out.push(ITEM_FORMAT_VERSION);
    out.push(0); // flags: reserved, zero
    out.extend_from_slice(&[0, 0]); // reserved
    out.extend_from_slice(&meta.write_timestamp.to_le_bytes());
    out.extend_from_slice(&meta.pending_transaction.to_le_bytes());
    put_varint(out, item.len() as u64);
    for (name, value) in item {
        put_bytes(out, name.as_bytes());
        encode_value(value, out);
    }
}

/// Whether two encoded items hold the same attributes, whatever their metadata (an item's
/// encoding is canonical: its attributes in name order).
pub(crate) fn same_attributes(a: &[u8], b: &[u8]) -> bool {
    match (a.get(..1), b.get(..1), a.get(ITEM_HEADER_LEN..), b.get(ITEM_HEADER_LEN..)) {
        (Some(a_version), Some(b_version), Some(a), Some(b)) => a_version == b_version && a == b,
        _ => a == b,
    }
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

pub(crate) fn encode_value(value: &AttributeValue, out: &mut Vec<u8>) {
    match value {
        AttributeValue::S(text) => {
            out.push(TAG_S);
            put_bytes(out, text.as_bytes());
        }
        AttributeValue::N(number) => {
            out.push(TAG_N);
            number.encode_ordered(out);
        }
        AttributeValue::B(bytes) => {
            out.push(TAG_B);
            put_bytes(out, bytes);
        }
        AttributeValue::Bool(flag) => out.push(if *flag { TAG_TRUE } else { TAG_FALSE }),
        AttributeValue::Null => out.push(TAG_NULL),
        AttributeValue::M(map) => {
            out.push(TAG_M);
            put_varint(out, map.len() as u64);
            for (name, value) in map {
                put_bytes(out, name.as_bytes());
                encode_value(value, out);
            }
        }
        AttributeValue::L(list) => {
            out.push(TAG_L);
            put_varint(out, list.len() as u64);
            list.iter().for_each(|value| encode_value(value, out));
        }
        AttributeValue::Ss(set) => {
            out.push(TAG_SS);
            put_varint(out, set.len() as u64);
            set.iter().for_each(|text| put_bytes(out, text.as_bytes()));
        }
        AttributeValue::Ns(set) => {
            out.push(TAG_NS);
            put_varint(out, set.len() as u64);
            set.iter().for_each(|number| number.encode_ordered(out));
        }
        AttributeValue::Bs(set) => {
            out.push(TAG_BS);
            put_varint(out, set.len() as u64);
            set.iter().for_each(|bytes| put_bytes(out, bytes));
        }
    }
}

/// A bounds-checked cursor over untrusted bytes.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, position: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.position == self.bytes.len()
    }

    pub(crate) fn position(&self) -> usize {
        self.position
    }

    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self.position.checked_add(len).filter(|&end| end <= self.bytes.len()).ok_or_else(|| {
            format!("needs {len} bytes at offset {}, {} left", self.position, self.bytes.len() - self.position)
        })?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    /// Everything not yet read.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.position..];
        self.position = self.bytes.len();
        rest
    }

    pub(crate) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn varint(&mut self) -> Result<u64, String> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            value |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!("varint longer than 10 bytes at offset {}", self.position))
    }

    /// A varint used as a length or count: it may not exceed the bytes left, since every
    /// element takes at least one byte. This bounds allocations by the input size.
    fn count(&mut self) -> Result<usize, String> {
        let count = self.varint()?;
        let left = (self.bytes.len() - self.position) as u64;
        if count > left {
            return Err(format!("count {count} exceeds the {left} bytes left"));
        }
        Ok(count as usize)
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.count()?;
        self.take(len)
    }

    pub(crate) fn string(&mut self) -> Result<String, String> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "string is not UTF-8".to_string())
    }

    pub(crate) fn number(&mut self) -> Result<Number, String> {
        let (number, used) = Number::decode_ordered(&self.bytes[self.position..]).map_err(str::to_string)?;
        self.position += used;
        Ok(number)
    }
}

/// Decodes a stored item; the error says what was wrong and where.
pub fn decode_item(bytes: &[u8]) -> Result<(Item, ItemMeta), String> {
    let mut reader = Reader::new(bytes);
    let version = reader.u8()?;
    if version != ITEM_FORMAT_VERSION {
        return Err(format!("unknown item format version {version}"));
    }
    let header = reader.take(ITEM_HEADER_LEN - 1)?;
    if header[..3] != [0, 0, 0] {
        return Err("reserved item header bytes are not zero".to_string());
    }
    let meta = ItemMeta {
        write_timestamp: u64::from_le_bytes(header[3..11].try_into().expect("8 bytes")),
        pending_transaction: u64::from_le_bytes(header[11..19].try_into().expect("8 bytes")),
    };
    let item = decode_map(&mut reader, 0)?;
    if !reader.is_empty() {
        return Err(format!("{} trailing bytes after the item", bytes.len() - reader.position()));
    }
    Ok((item, meta))
}

fn decode_map(reader: &mut Reader<'_>, depth: usize) -> Result<BTreeMap<String, AttributeValue>, String> {
    let count = reader.count()?;
    let mut map = BTreeMap::new();
    for _ in 0..count {
        let name = reader.string()?;
        let value = decode_value(reader, depth)?;
        if map.insert(name, value).is_some() {
            return Err("duplicate attribute name".to_string());
        }
    }
    Ok(map)
}

fn decode_set<'a, T: Ord>(
    reader: &mut Reader<'a>,
    mut element: impl FnMut(&mut Reader<'a>) -> Result<T, String>,
) -> Result<BTreeSet<T>, String> {
    let count = reader.count()?;
    let mut set = BTreeSet::new();
    for _ in 0..count {
        if !set.insert(element(reader)?) {
            return Err("duplicate set element".to_string());
        }
    }
    if set.is_empty() {
        return Err("empty set".to_string());
    }
    Ok(set)
}

pub(crate) fn decode_value(reader: &mut Reader<'_>, depth: usize) -> Result<AttributeValue, String> {
    if depth > NESTING_MAX {
        return Err("nesting deeper than allowed".to_string());
    }
    let tag = reader.u8()?;
    Ok(match tag {
        TAG_S => AttributeValue::S(reader.string()?),
        TAG_N => AttributeValue::N(reader.number()?),
        TAG_B => AttributeValue::B(reader.bytes()?.to_vec()),
        TAG_FALSE => AttributeValue::Bool(false),
        TAG_TRUE => AttributeValue::Bool(true),
        TAG_NULL => AttributeValue::Null,
        TAG_M => AttributeValue::M(decode_map(reader, depth + 1)?),
        TAG_L => {
            let count = reader.count()?;
            let mut list = Vec::with_capacity(count);
            for _ in 0..count {
                list.push(decode_value(reader, depth + 1)?);
            }
            AttributeValue::L(list)
        }
        TAG_SS => AttributeValue::Ss(decode_set(reader, Reader::string)?),
        TAG_NS => AttributeValue::Ns(decode_set(reader, Reader::number)?),
        TAG_BS => AttributeValue::Bs(decode_set(reader, |r| r.bytes().map(<[u8]>::to_vec))?),
        other => return Err(format!("unknown attribute type tag {other}")),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn arb_number() -> impl Strategy<Value = Number> {
        (any::<bool>(), 0u128..10u128.pow(38), -130i64..=88).prop_map(|(negative, coefficient, exponent)| {
            Number::from_parts(negative, coefficient, exponent).unwrap_or(Number::ZERO)
        })
    }

    pub(crate) fn arb_value() -> impl Strategy<Value = AttributeValue> {
        let leaf = prop_oneof![
            ".{0,12}".prop_map(AttributeValue::S),
            arb_number().prop_map(AttributeValue::N),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(AttributeValue::B),
            any::<bool>().prop_map(AttributeValue::Bool),
            Just(AttributeValue::Null),
            proptest::collection::btree_set(".{0,6}", 1..4).prop_map(AttributeValue::Ss),
            proptest::collection::btree_set(arb_number(), 1..4).prop_map(AttributeValue::Ns),
            proptest::collection::btree_set(proptest::collection::vec(any::<u8>(), 0..4), 1..4)
                .prop_map(AttributeValue::Bs),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(AttributeValue::L),
                proptest::collection::btree_map(".{0,6}", inner, 0..4).prop_map(AttributeValue::M),
            ]
        })
    }

    pub(crate) fn arb_item() -> impl Strategy<Value = Item> {
        proptest::collection::btree_map("[a-z]{1,8}", arb_value(), 0..6)
    }

    proptest! {
        #[test]
        fn items_round_trip(item in arb_item(), stamp in any::<u64>(), txn in any::<u64>()) {
            let meta = ItemMeta { write_timestamp: stamp, pending_transaction: txn };
            let mut bytes = Vec::new();
            encode_item(&item, meta, &mut bytes);
            prop_assert_eq!(decode_item(&bytes).unwrap(), (item, meta));
        }

        #[test]
        fn damaged_items_never_panic(item in arb_item(), flip in any::<usize>(), cut in any::<usize>()) {
            let mut bytes = Vec::new();
            encode_item(&item, ItemMeta::default(), &mut bytes);
            let mut damaged = bytes.clone();
            let index = flip % damaged.len();
            damaged[index] ^= 0x5A;
            let _ = decode_item(&damaged);
            let _ = decode_item(&bytes[..cut % bytes.len()]);
        }
    }
}
