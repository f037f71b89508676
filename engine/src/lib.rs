//! Tessera's storage replica: the DynamoDB item model, the per-core write-ahead log, the
//! page-based B+tree with copy-on-write checkpoints, and crash recovery.

mod btree;
mod codec;
mod disk;
mod error;
mod key;
mod number;
mod signal;
#[cfg(test)]
mod testing;
mod value;
mod wal;

pub use codec::{decode_item, encode_item, ItemMeta, ITEM_FORMAT_VERSION};
pub use error::{Error, Result};
pub use key::{partition_hash, EncodedKey, KeyAttribute, KeySchema, KeyType};
pub use number::Number;
pub use value::{item_size, validate_item, AttributeValue, Item, ITEM_SIZE_MAX, NESTING_MAX};
pub use wal::{Record, Recovered, Wal, WalConfig};
