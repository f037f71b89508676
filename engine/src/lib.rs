//! Tessera's storage replica: the DynamoDB item model, the per-core write-ahead log, the
//! page-based B+tree with copy-on-write checkpoints, and crash recovery.
//!
//! The storage (store, WAL, tree, disk I/O on glommio and io_uring, the replication log) is
//! the default feature `storage`; without it the crate is the data model alone, with no
//! glommio, io_uring or libc: values, numbers, keys, the item codec, expressions, commands,
//! capacity, the partition's pure state machine (not the state its store keeps beside it) and
//! the pure Multi-Paxos core, which the protocol (`tessera-wire`) and its client build on.
//!
//! What a node reports on standard error, besides starting and stopping: each replica that
//! starts or stops leading, each anomaly a replica refuses, each run of failed accepts on a
//! listener (with the error), each WAL flush of 100 ms or more, and each core whose timer fires
//! 100 ms or more late, so that a stall in a latency measurement names its cause: an election,
//! the disk, or the CPU. Each line goes out in one write (`report!`), so the nodes of a local
//! cluster, sharing one log, never splice each other's lines.

#[cfg(feature = "storage")]
mod btree;
pub mod capacity;
mod codec;
mod command;
#[cfg(feature = "storage")]
mod disk;
mod error;
pub mod expr;
mod key;
mod number;
pub mod partition;
pub mod paxos;
#[cfg(feature = "storage")]
mod replication;
#[cfg(feature = "storage")]
mod signal;
#[cfg(feature = "storage")]
mod store;
#[cfg(all(test, feature = "storage"))]
mod testing;
mod value;
#[cfg(feature = "storage")]
mod wal;

#[cfg(feature = "storage")]
pub use btree::page::{PAGE_SIZE, TREE_KEY_LEN_MAX};
#[cfg(feature = "storage")]
pub use btree::CACHE_PAGES_MIN;
pub use codec::{decode_item, encode_item, ItemMeta, ITEM_FORMAT_VERSION};
pub use command::{Command, ConditionalCommand, ConditionalWrite, Outcome, Stamped};
pub use error::{Error, Result};
pub use key::{partition_hash, EncodedKey, KeyAttribute, KeySchema, KeyType, KEY_LEN_MAX};
pub use number::Number;
#[cfg(feature = "storage")]
pub use replication::{LocalLog, ReplicationLog};
#[cfg(feature = "storage")]
pub use signal::yield_to_reactor;
#[cfg(feature = "storage")]
pub use store::{PartitionId, PartitionMeta, PartitionSnapshot, ScrubStats, Store, StoreConfig};
pub use value::{
    check_name_length, empty_set_message, item_size, validate_item, AttributeValue, Item, ITEM_SIZE_MAX, NESTING_MAX,
};
#[cfg(feature = "storage")]
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
