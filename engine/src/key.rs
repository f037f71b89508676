//! Primary keys: the table's key schema, the partition hash, and the order-preserving key
//! encoding the B+tree compares bytewise (FORMAT.md, "Keys").
//!
//! Invariants: for two items of one table, the byte order of their encoded keys is the order
//! (partition key hash, partition key, sort key), with N compared numerically and S and B
//! bytewise, as DynamoDB sorts them; partition keys that share a hash order by (length, bytes),
//! which keeps each item collection contiguous. The partition hash is XXH3-64 with seed 0 over
//! the encoded partition key component; it is part of the on-disk format and never changes.

use crate::codec::Reader;
use crate::error::{Error, Result};
use crate::number::DIGITS_MAX;
use crate::value::{AttributeValue, Item};

/// Longest key (encoded primary key) a command may carry: the tree's limit (`TREE_KEY_LEN_MAX`)
/// less the 8-byte partition prefix the store puts before every key. Written out so that the
/// data model builds without the tree (the `storage` feature); checked against it below.
pub const KEY_LEN_MAX: usize = 4036;
#[cfg(feature = "storage")]
const _: () = assert!(KEY_LEN_MAX == crate::btree::page::TREE_KEY_LEN_MAX - 8);
/// Longest partition key value DynamoDB accepts (bytes of an S's UTF-8 or a B's value; an N is
/// never too long).
pub const PARTITION_KEY_LEN_MAX: usize = 2048;
/// Longest sort key value DynamoDB accepts (bytes).
pub const SORT_KEY_LEN_MAX: usize = 1024;

/// DynamoDB's answer to a partition key value over `PARTITION_KEY_LEN_MAX`, on writes and reads
/// alike: tests/dynamodb/MESSAGES.md 4a (moto test_key_length_exceptions.py, verified against
/// DynamoDB; dynalite test/putItem.js). There is no space in "of2048": DynamoDB's own text.
pub(crate) const PARTITION_KEY_TOO_LONG: &str =
    "One or more parameter values were invalid: Size of hashkey has exceeded the maximum size limit of2048 bytes";
/// DynamoDB's answer to a sort key value over `SORT_KEY_LEN_MAX`: MESSAGES.md 4b (Alternator
/// test_limits.py, dynalite test/putItem.js, an answer quoted in formkiq/formkiq-core#271).
pub(crate) const SORT_KEY_TOO_LONG: &str =
    "One or more parameter values were invalid: Aggregated size of all range keys has exceeded the size limit of 1024 bytes";

/// Longest encoded N key component: class and scale bytes, a byte a digit, a terminator.
const NUMBER_ENCODED_LEN_MAX: usize = 3 + DIGITS_MAX as usize;
/// Longest encoded primary key: the hash, a length-prefixed partition key, a sort key. The store
/// keeps every key within the per-attribute limits (so `encode_key` needs no length check of its
/// own).
const ENCODED_KEY_LEN_MAX: usize = 8 + 2 + PARTITION_KEY_LEN_MAX + SORT_KEY_LEN_MAX;
const _: () = assert!(NUMBER_ENCODED_LEN_MAX <= SORT_KEY_LEN_MAX && ENCODED_KEY_LEN_MAX <= KEY_LEN_MAX);

/// The scalar types a key attribute may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    S,
    N,
    B,
}

impl KeyType {
    /// DynamoDB's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::S => "S",
            KeyType::N => "N",
            KeyType::B => "B",
        }
    }
}

/// One key attribute: its name and type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyAttribute {
    pub name: String,
    pub key_type: KeyType,
}

/// A table's primary key: a partition key and an optional sort key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeySchema {
    pub partition: KeyAttribute,
    pub sort: Option<KeyAttribute>,
}

impl KeySchema {
    /// A schema with only a partition key.
    pub fn hash_only(name: &str, key_type: KeyType) -> KeySchema {
        KeySchema { partition: KeyAttribute { name: name.to_string(), key_type }, sort: None }
    }

    /// A schema with a partition key and a sort key.
    pub fn composite(partition: (&str, KeyType), sort: (&str, KeyType)) -> KeySchema {
        KeySchema {
            partition: KeyAttribute { name: partition.0.to_string(), key_type: partition.1 },
            sort: Some(KeyAttribute { name: sort.0.to_string(), key_type: sort.1 }),
        }
    }

    /// Encodes the primary key of `item` (a full item or a key-only item). Extra attributes are
    /// ignored here; callers that need a key-only map check that themselves.
    pub fn encode_key(&self, item: &Item) -> Result<EncodedKey> {
        let mut key = self.encode_partition_prefix(key_value(&self.partition, item)?)?;
        if let Some(sort) = &self.sort {
            encode_value(sort, key_value(sort, item)?, Component::Sort, true, &mut key.bytes)?;
        }
        Ok(key)
    }

    /// The encoded-key prefix every item with partition key `value` shares (hash, then the
    /// partition key), with the hash. With a sort key the partition-key component is
    /// self-delimiting, so the items of one partition key are exactly the keys with this prefix;
    /// without one the prefix is the whole key.
    pub fn encode_partition_prefix(&self, value: &AttributeValue) -> Result<EncodedKey> {
        let mut partition = Vec::new();
        encode_value(&self.partition, value, Component::Partition, self.sort.is_none(), &mut partition)?;
        let hash = partition_hash(&partition);
        let mut bytes = Vec::with_capacity(8 + partition.len());
        bytes.extend_from_slice(&hash.to_be_bytes());
        bytes.extend_from_slice(&partition);
        Ok(EncodedKey { hash, bytes })
    }

    /// The encoded sort-key component of `value`, appended to a partition prefix to bound a
    /// query. An error if the table has no sort key or `value` has the wrong type.
    pub fn encode_sort_value(&self, value: &AttributeValue) -> Result<Vec<u8>> {
        let sort = self
            .sort
            .as_ref()
            .ok_or_else(|| Error::validation("the table has no sort key, so a sort key condition cannot apply"))?;
        let mut out = Vec::new();
        encode_value(sort, value, Component::Sort, true, &mut out)?;
        Ok(out)
    }

    /// Decodes an encoded key back into its key attributes.
    pub fn decode_key(&self, bytes: &[u8]) -> Result<Item, String> {
        let mut reader = Reader::new(bytes);
        reader.take(8)?;
        let mut item = Item::new();
        let value = decode_component(self.partition.key_type, self.sort.is_none(), &mut reader)?;
        item.insert(self.partition.name.clone(), value);
        if let Some(sort) = &self.sort {
            item.insert(sort.name.clone(), decode_component(sort.key_type, true, &mut reader)?);
        }
        if !reader.is_empty() {
            return Err("trailing bytes after the key".to_string());
        }
        Ok(item)
    }
}

/// A primary key in its stored form, with the partition hash that places it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedKey {
    pub hash: u64,
    pub bytes: Vec<u8>,
}

/// The 64-bit hash that places a partition key (XXH3-64, seed 0, over its encoded component).
pub fn partition_hash(encoded_partition_key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(encoded_partition_key)
}

/// Refuses a key longer than the store keeps (`KEY_LEN_MAX`): a command given to the store
/// directly (a table's keys are within it, `ENCODED_KEY_LEN_MAX`).
#[cfg(feature = "storage")]
pub(crate) fn check_key_len(len: usize) -> Result<()> {
    if len > KEY_LEN_MAX {
        return Err(Error::validation(format!("encoded key of {len} bytes exceeds the {KEY_LEN_MAX}-byte limit")));
    }
    Ok(())
}

/// The value of key attribute `attribute` in `item`.
fn key_value<'a>(attribute: &KeyAttribute, item: &'a Item) -> Result<&'a AttributeValue> {
    item.get(&attribute.name).ok_or_else(|| {
        Error::validation(format!(
            "one or more parameter values were invalid: missing the key {} in the item",
            attribute.name
        ))
    })
}

/// Which part of a primary key a value is: its length limit and DynamoDB's answer past it.
#[derive(Clone, Copy)]
enum Component {
    Partition,
    Sort,
}

impl Component {
    fn len_max(self) -> usize {
        match self {
            Component::Partition => PARTITION_KEY_LEN_MAX,
            Component::Sort => SORT_KEY_LEN_MAX,
        }
    }

    fn too_long(self) -> &'static str {
        match self {
            Component::Partition => PARTITION_KEY_TOO_LONG,
            Component::Sort => SORT_KEY_TOO_LONG,
        }
    }
}

/// Appends the encoded `component` of key attribute `attribute`.
fn encode_value(
    attribute: &KeyAttribute,
    value: &AttributeValue,
    component: Component,
    last: bool,
    out: &mut Vec<u8>,
) -> Result<()> {
    let name = &attribute.name;
    let mismatch = || {
        Error::validation(format!(
            "one or more parameter values were invalid: type mismatch for key {name} expected: {} actual: {}",
            attribute.key_type.name(),
            value.type_name()
        ))
    };
    let raw: &[u8] = match (attribute.key_type, value) {
        (KeyType::S, AttributeValue::S(text)) => text.as_bytes(),
        (KeyType::B, AttributeValue::B(bytes)) => bytes,
        (KeyType::N, AttributeValue::N(number)) => {
            number.encode_ordered(out);
            return Ok(());
        }
        _ => return Err(mismatch()),
    };
    if raw.is_empty() {
        return Err(Error::validation(format!(
            "one or more parameter values are not valid: the value of key attribute {name} may not be empty"
        )));
    }
    if raw.len() > component.len_max() {
        return Err(Error::validation(component.too_long()));
    }
    if last {
        out.extend_from_slice(raw);
    } else {
        out.extend_from_slice(&(raw.len() as u16).to_be_bytes());
        out.extend_from_slice(raw);
    }
    Ok(())
}

fn decode_component(key_type: KeyType, last: bool, reader: &mut Reader<'_>) -> Result<AttributeValue, String> {
    if key_type == KeyType::N {
        return Ok(AttributeValue::N(reader.number()?));
    }
    let raw = if last {
        reader.rest()
    } else {
        let len = u16::from_be_bytes(reader.take(2)?.try_into().expect("2 bytes"));
        reader.take(usize::from(len))?
    };
    Ok(match key_type {
        KeyType::S => AttributeValue::S(String::from_utf8(raw.to_vec()).map_err(|_| "key string is not UTF-8")?),
        _ => AttributeValue::B(raw.to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::arb_number;
    use crate::number::Number;
    use proptest::prelude::*;

    fn item(pairs: &[(&str, AttributeValue)]) -> Item {
        pairs.iter().map(|(name, value)| (name.to_string(), value.clone())).collect()
    }

    fn sort_bytes(schema: &KeySchema, pk: AttributeValue, sk: AttributeValue) -> Vec<u8> {
        schema.encode_key(&item(&[("pk", pk), ("sk", sk)])).unwrap().bytes
    }

    proptest! {
        /// A full key starts with its partition prefix followed by its sort component, and the
        /// prefix carries the same hash.
        #[test]
        fn keys_are_partition_prefix_then_sort_component(pk in "\\PC{1,8}", sk in arb_number()) {
            let schema = KeySchema::composite(("pk", KeyType::S), ("sk", KeyType::N));
            let full = schema.encode_key(&item(&[("pk", AttributeValue::S(pk.clone())), ("sk", AttributeValue::N(sk))])).unwrap();
            let prefix = schema.encode_partition_prefix(&AttributeValue::S(pk)).unwrap();
            let sort = schema.encode_sort_value(&AttributeValue::N(sk)).unwrap();
            prop_assert_eq!(prefix.hash, full.hash);
            prop_assert_eq!([prefix.bytes, sort].concat(), full.bytes);
        }
    }

    proptest! {
        #[test]
        fn number_sort_keys_order_numerically(a in arb_number(), b in arb_number()) {
            let schema = KeySchema::composite(("pk", KeyType::S), ("sk", KeyType::N));
            let pk = AttributeValue::S("p".into());
            let ka = sort_bytes(&schema, pk.clone(), AttributeValue::N(a));
            let kb = sort_bytes(&schema, pk, AttributeValue::N(b));
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
        }

        #[test]
        fn string_sort_keys_order_bytewise(a in "\\PC{1,8}", b in "[\\x00-\\x02a-c]{1,8}", pk in "[a-c]{1,3}") {
            let schema = KeySchema::composite(("pk", KeyType::B), ("sk", KeyType::S));
            let pk = AttributeValue::B(pk.into_bytes());
            let ka = sort_bytes(&schema, pk.clone(), AttributeValue::S(a.clone()));
            let kb = sort_bytes(&schema, pk.clone(), AttributeValue::S(b.clone()));
            prop_assert_eq!(ka.cmp(&kb), a.as_bytes().cmp(b.as_bytes()));
            prop_assert_eq!(schema.decode_key(&ka).unwrap(), item(&[("pk", pk), ("sk", AttributeValue::S(a))]));
        }

        #[test]
        fn binary_keys_order_bytewise_and_decode(a in proptest::collection::vec(any::<u8>(), 1..8),
                                                 b in proptest::collection::vec(0u8..3, 1..8)) {
            let schema = KeySchema::composite(("pk", KeyType::N), ("sk", KeyType::B));
            let pk = AttributeValue::N(Number::from(7));
            let ka = sort_bytes(&schema, pk.clone(), AttributeValue::B(a.clone()));
            let kb = sort_bytes(&schema, pk.clone(), AttributeValue::B(b.clone()));
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            let decoded = schema.decode_key(&ka).unwrap();
            prop_assert_eq!(decoded, item(&[("pk", pk), ("sk", AttributeValue::B(a))]));
        }

        #[test]
        fn same_partition_key_same_hash(a in arb_number()) {
            let schema = KeySchema::composite(("pk", KeyType::N), ("sk", KeyType::S));
            let one = schema.encode_key(&item(&[("pk", AttributeValue::N(a)), ("sk", AttributeValue::S("x".into()))])).unwrap();
            let two = schema.encode_key(&item(&[("pk", AttributeValue::N(a)), ("sk", AttributeValue::S("y".into()))])).unwrap();
            prop_assert_eq!(one.hash, two.hash);
            prop_assert_eq!(&one.bytes[..8], &one.hash.to_be_bytes()[..]);
        }
    }

    #[test]
    fn hash_is_stable() {
        // Part of the on-disk format: this value may never change.
        let schema = KeySchema::hash_only("id", KeyType::S);
        let key = schema.encode_key(&item(&[("id", AttributeValue::S("user#1".into()))])).unwrap();
        assert_eq!(key.hash, partition_hash(b"user#1"));
        assert_eq!(partition_hash(b""), 0x2D06800538D394C2);
    }

    #[test]
    fn key_errors_name_the_attribute() {
        let schema = KeySchema::composite(("pk", KeyType::S), ("sk", KeyType::N));
        let cases: [(Item, &str); 4] = [
            (item(&[("sk", AttributeValue::N(Number::ZERO))]), "missing the key pk"),
            (
                item(&[("pk", AttributeValue::N(Number::ZERO)), ("sk", AttributeValue::N(Number::ZERO))]),
                "type mismatch for key pk expected: S actual: N",
            ),
            (
                item(&[("pk", AttributeValue::S(String::new())), ("sk", AttributeValue::N(Number::ZERO))]),
                "pk may not be empty",
            ),
            (
                item(&[("pk", AttributeValue::S("x".repeat(2049))), ("sk", AttributeValue::N(Number::ZERO))]),
                PARTITION_KEY_TOO_LONG,
            ),
        ];
        for (input, expected) in cases {
            let message = schema.encode_key(&input).unwrap_err().to_string();
            assert!(message.contains(expected), "{message}");
        }
    }

    /// DynamoDB's limits, counted in bytes of UTF-8 for S (a 2-byte character near the edge)
    /// and of the value for B, on keys, on partition prefixes (Query) and on sort values.
    #[test]
    fn key_values_up_to_dynamodbs_limits() {
        let schema = KeySchema::composite(("pk", KeyType::B), ("sk", KeyType::S));
        let key = |pk: Vec<u8>, sk: String| item(&[("pk", AttributeValue::B(pk)), ("sk", AttributeValue::S(sk))]);
        let longest = schema.encode_key(&key(vec![0xFF; 2048], format!("{}é", "s".repeat(1022)))).unwrap();
        assert_eq!(longest.bytes.len(), ENCODED_KEY_LEN_MAX);
        assert_eq!(schema.decode_key(&longest.bytes).unwrap(), key(vec![0xFF; 2048], format!("{}é", "s".repeat(1022))));
        let refused = |input: Item| schema.encode_key(&input).unwrap_err().to_string();
        assert!(refused(key(vec![0; 2049], "s".into())).ends_with(PARTITION_KEY_TOO_LONG));
        assert!(refused(key(vec![0; 1], format!("{}é", "s".repeat(1023)))).ends_with(SORT_KEY_TOO_LONG));
        assert!(schema.encode_partition_prefix(&AttributeValue::B(vec![0; 2049])).is_err());
        assert!(schema.encode_sort_value(&AttributeValue::S("s".repeat(1025))).is_err());
        let hash_only = KeySchema::hash_only("id", KeyType::S);
        let long = hash_only.encode_key(&item(&[("id", AttributeValue::S("k".repeat(2048)))])).unwrap();
        assert_eq!(long.bytes.len(), 8 + 2048);
        let message = hash_only.encode_key(&item(&[("id", AttributeValue::S("k".repeat(2049)))])).unwrap_err();
        assert!(message.to_string().ends_with(PARTITION_KEY_TOO_LONG));
    }
}
