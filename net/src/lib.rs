//! The Tessera node: a shard-per-core server speaking the binary protocol of `tessera-wire`,
//! and the glommio front end of its client library (`client`; the typed calls and the blocking
//! client are `tessera_wire::client`).

pub mod auth;
mod budget;
mod catalog;
pub mod client;
pub mod http;
pub mod json;
mod local;
mod log;
mod messages;
pub mod peers;
pub mod replicated;
mod server;
mod shard;
mod socket;
pub mod tls;

pub use budget::{REQUEST_MEMORY_DEFAULT, REQUEST_MEMORY_MIN};
pub use catalog::{partition_name, table_of, PARTITIONS_MAX};
pub use http::{Auth, HttpConfig};
pub use replicated::{Cluster, ClusterNode, SnapshotStats, APPLY_DELAY_DEFAULT, LOG_RETAIN_DEFAULT};
pub use server::{Server, ServerConfig, ServerTls, MAX_CONNECTIONS_DEFAULT};
pub use shard::{BATCH_GET_MAX, BATCH_WRITE_MAX, PAGE_BYTES_MAX};
