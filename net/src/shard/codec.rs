//! Keys and items between a request and the store: keys held to the table's key schema and
//! encoded, stored keys and items decoded.

use tessera_engine::{decode_item, encode_item, Item, ItemMeta, KeySchema};
use tessera_wire::{ErrorCode, WireError};

use super::{engine_error, invalid};

/// Whether `key` holds exactly the table's key attributes (of any types).
pub(super) fn has_key_names(schema: &KeySchema, key: &Item) -> bool {
    let expected = 1 + usize::from(schema.sort.is_some());
    key.len() == expected
        && key.contains_key(&schema.partition.name)
        && schema.sort.as_ref().is_none_or(|sort| key.contains_key(&sort.name))
}

/// Checks that `key` holds exactly the table's key attributes, and encodes it.
pub(super) fn encode_exact_key(schema: &KeySchema, key: &Item) -> Result<Vec<u8>, WireError> {
    if !has_key_names(schema, key) {
        return Err(invalid("The provided key element does not match the schema"));
    }
    schema.encode_key(key).map(|key| key.bytes).map_err(engine_error)
}

/// A Query's or Scan's ExclusiveStartKey, encoded; `names_wrong` is the error when it does not
/// hold exactly the key attributes.
pub(super) fn encode_start_key(schema: &KeySchema, start: &Item, names_wrong: &str) -> Result<Vec<u8>, WireError> {
    if !has_key_names(schema, start) {
        return Err(invalid(names_wrong));
    }
    encode_exact_key(schema, start)
}

pub(super) fn decode_key(schema: &KeySchema, key: &[u8]) -> Result<Item, WireError> {
    schema
        .decode_key(key)
        .map_err(|reason| WireError::new(ErrorCode::InternalServerError, format!("a stored key is damaged: {reason}")))
}

pub(super) fn decode_stored(value: &[u8]) -> Result<Item, WireError> {
    decode_item(value)
        .map(|(item, _)| item)
        .map_err(|reason| WireError::new(ErrorCode::InternalServerError, format!("a stored item is damaged: {reason}")))
}

pub(super) fn encode_stored(item: &Item) -> Vec<u8> {
    let mut value = Vec::new();
    encode_item(item, ItemMeta::default(), &mut value);
    value
}
