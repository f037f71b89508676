//! Tessera's storage replica: the DynamoDB item model, the per-core write-ahead log, the
//! page-based B+tree with copy-on-write checkpoints, and crash recovery.

mod btree;
pub mod capacity;
mod codec;
mod command;
mod disk;
mod error;
pub mod expr;
mod key;
mod number;
pub mod partition;
pub mod paxos;
mod replication;
mod signal;
mod store;
#[cfg(test)]
mod testing;
mod value;
mod wal;

pub use btree::page::{PAGE_SIZE, TREE_KEY_LEN_MAX};
pub use btree::CACHE_PAGES_MIN;
pub use codec::{decode_item, encode_item, ItemMeta, ITEM_FORMAT_VERSION};
pub use command::{Command, ConditionalCommand, ConditionalWrite, Outcome, Stamped};
pub use error::{Error, Result};
pub use key::{partition_hash, EncodedKey, KeyAttribute, KeySchema, KeyType, KEY_LEN_MAX};
pub use number::Number;
pub use replication::{LocalLog, ReplicationLog};
pub use signal::yield_to_reactor;
pub use store::{PartitionId, PartitionMeta, PartitionSnapshot, ScrubStats, Store, StoreConfig};
pub use value::{
    check_name_length, empty_set_message, item_size, validate_item, AttributeValue, Item, ITEM_SIZE_MAX, NESTING_MAX,
};
pub use wal::{Record, Recovered, Wal, WalConfig};

/// `eprintln!` as one write: the line and its newline go to standard error in a single
/// `write`, so that the lines of the nodes of a local cluster, which share one log, never
/// interleave mid-line (`eprintln!` writes each formatted piece on its own).
#[macro_export]
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut line = format!($($arg)*);
        line.push('\n');
        // Nowhere to report a failure to report.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }};
}
