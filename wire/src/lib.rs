//! Tessera's binary protocol: the frame format, the messages (flatbuffers, schema in
//! `schema/tessera.fbs`) as owned Rust values, and the errors that travel on the wire, with no
//! I/O; and its client library (`client`: the typed calls, blocking connections, TLS, the
//! authentication proof), which needs neither glommio nor io_uring: this crate builds on the
//! engine's data model alone (`tessera-engine` without its `storage` feature).
//!
//! The Rust code generated from the schema is committed in `src/generated`; regenerate it
//! with `cargo build -p tessera-wire --features regen` (builds flatc 23.5.26 from source,
//! matching the `flatbuffers` runtime; needs cmake).

pub mod client;
mod error;
pub mod frame;
mod message;
mod partition_op;
pub mod replication;

#[allow(clippy::all, dead_code, unused_imports, non_camel_case_types, non_snake_case, non_upper_case_globals)]
#[rustfmt::skip]
mod generated {
    include!("generated/tessera_generated.rs");
}

pub use error::{ErrorCode, WireError};
pub use frame::MessageType;
pub use message::{
    ConsumedCapacity, Expressions, PartitionMap, PartitionRange, Query, RangeSpec, ReadExpressions, ReplicaStatus,
    Request, RequestFlags, Response, ReturnConsumedCapacity, ReturnValues, Scan, Select, SortCondition,
    TableDescription, TableKeys, TableStatus, Tags, Throughput, UpdateItem, Write, MAP_IN_DESCRIPTION_MAX,
};
pub use partition_op::{PartitionAnswer, PartitionOp};
