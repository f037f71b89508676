//! The channel mesh between cores: the `Op`s a core runs on its own partitions (or its catalog
//! copy) and their results, sending an op to the core that owns its partition, and serving
//! the ops other cores send.

use std::collections::BTreeMap;
use std::rc::Rc;

use glommio::channels::channel_mesh::Receivers;
use tessera_engine::paxos::Member;
use tessera_engine::{KeySchema, PartitionId};
use tessera_wire::{
    ErrorCode, PartitionAnswer, PartitionOp, ReplicaStatus, Request, Response, Tags, Throughput, WireError,
};

use super::{invalid, Shard};
use crate::catalog::{key_hash, partition_name, table_of, Catalog, NewMap, TableInfo, CATALOG_PARTITION};
use crate::log::Log;

/// Work on one core's partitions (or its catalog copy).
pub(crate) enum Op {
    /// The internal RPC's op, at the partition's owner.
    Partition(PartitionOp),
    /// Items and bytes in the partitions.
    Count {
        partitions: Vec<PartitionId>,
    },
    /// Core 0 only.
    CreateTable {
        name: String,
        key_schema: KeySchema,
        map: NewMap,
        throughput: Option<Throughput>,
        tags: BTreeMap<String, String>,
    },
    /// Core 0 only: sets the tags `add` and removes those keyed `remove`.
    Retag {
        name: String,
        add: Tags,
        remove: Vec<String>,
    },
    /// Core 0 only.
    DeleteTable {
        name: String,
    },
    /// The whole catalog, sent by core 0 at start-up.
    CatalogLoad(Catalog),
    CatalogPut(TableInfo),
    CatalogRemove(String),
    /// Deletes every entry of the partitions (a deleted table's data).
    Drop {
        partitions: Vec<PartitionId>,
    },
    /// Cluster administration: the core's replicas; a configuration change at a partition's
    /// leader; a replica its group removed, stopped.
    Replicas,
    ChangeMembers {
        partition: PartitionId,
        members: Vec<Member>,
    },
    RetireReplica {
        partition: PartitionId,
    },
}

pub(crate) enum OpResult {
    Partition(PartitionAnswer),
    Count {
        items: u64,
        bytes: u64,
    },
    Table(TableInfo),
    Replicas(Vec<ReplicaStatus>),
    /// The slot a configuration was proposed at.
    Slot(u64),
    Done,
    Error(WireError),
}

pub(crate) enum Message {
    Op(Op),
    Result(OpResult),
}

/// What travels between cores.
pub(crate) struct Envelope {
    token: u64,
    from: usize,
    message: Message,
}

impl Shard {
    /// Serves operations that other cores send, and their replies to ours, until the mesh
    /// closes.
    pub(crate) fn serve_peers(self: &Rc<Shard>, mut receivers: Receivers<Envelope>) {
        for (_, receiver) in receivers.streams() {
            let shard = self.clone();
            glommio::spawn_local(async move {
                while let Some(envelope) = receiver.recv().await {
                    // `call` runs its own core's ops in place: what arrives is another core's.
                    assert!(
                        envelope.from < shard.cores && envelope.from != shard.core,
                        "core {} got an envelope from core {} of {}",
                        shard.core,
                        envelope.from,
                        shard.cores
                    );
                    match envelope.message {
                        Message::Op(op) => {
                            let shard = shard.clone();
                            glommio::spawn_local(async move {
                                let result = shard.run(op).await;
                                let reply = Envelope {
                                    token: envelope.token,
                                    from: shard.core,
                                    message: Message::Result(result),
                                };
                                // The peer is gone only when the server stops.
                                let _ = shard.senders.send_to(envelope.from, reply).await;
                            })
                            .detach();
                        }
                        Message::Result(result) => shard.pending.complete(envelope.token, result),
                    }
                }
            })
            .detach();
        }
    }

    /// Runs `op` on `core`.
    pub(super) async fn call(self: &Rc<Shard>, core: usize, op: Op) -> OpResult {
        assert!(core < self.cores, "an op for core {core} of {}", self.cores);
        if core == self.core {
            return Box::pin(self.run(op)).await;
        }
        let (token, reply) = self.pending.open();
        let envelope = Envelope { token, from: self.core, message: Message::Op(op) };
        if self.senders.send_to(core, envelope).await.is_err() {
            self.pending.abandon(token);
            return OpResult::Error(WireError::new(
                ErrorCode::ServiceUnavailable,
                format!("core {core} is not running"),
            ));
        }
        reply.await
    }

    /// Runs the internal RPC's `op` on `core`, its owner.
    pub(super) async fn on(self: &Rc<Shard>, core: usize, op: PartitionOp) -> PartitionAnswer {
        match self.call(core, Op::Partition(op)).await {
            OpResult::Partition(answer) => answer,
            other => PartitionAnswer::Error(unexpected(other)),
        }
    }

    /// Sends `op` (built per core) to every other core and waits for all of them.
    pub(super) async fn broadcast(self: &Rc<Shard>, op: impl Fn() -> Op) -> Result<(), WireError> {
        for core in (0..self.cores).filter(|&core| core != self.core) {
            if let OpResult::Error(error) = self.call(core, op()).await {
                return Err(error);
            }
        }
        Ok(())
    }

    /// The core partition `index` of `table` lives on, as its map places it.
    pub(super) fn owner(&self, table: &TableInfo, index: u32) -> usize {
        let core = table.core_of(index);
        assert!(core < self.cores, "{}: partition {index} placed on core {core} of {}", table.name, self.cores);
        core
    }

    /// The core that hosts storage partition `partition` (the catalog's is core 0's), by the
    /// map of the table it belongs to; `None` if this core knows no such table.
    pub(super) fn partition_core(&self, partition: PartitionId) -> Option<usize> {
        if partition == CATALOG_PARTITION {
            return Some(0);
        }
        let catalog = self.catalog.borrow();
        let table = catalog.tables.values().find(|table| u64::from(table.id) == table_of(partition))?;
        table.index_of_partition(partition).map(|index| self.owner(table, index))
    }

    /// The core an administration request on `partition` goes to: its table's map's, or for
    /// a table this node's catalog does not hold (a log replica applies no catalog entry) the
    /// core hosting a replica of it; core 0 if none does, whose answer says so.
    pub(super) async fn admin_core(self: &Rc<Shard>, partition: PartitionId) -> usize {
        if let Some(core) = self.partition_core(partition) {
            return core;
        }
        for core in 0..self.cores {
            if let OpResult::Replicas(found) = self.call(core, Op::Replicas).await {
                if found.iter().any(|status| status.partition == partition) {
                    return core;
                }
            }
        }
        0
    }

    /// Where an encoded key lives: (owner core, partition id).
    pub(super) fn place(&self, table: &TableInfo, key: &[u8]) -> (usize, PartitionId) {
        let index = table.partition_of(key_hash(key));
        assert!(
            index < table.partitions(),
            "{}: a key placed in partition {index} of {}",
            table.name,
            table.partitions()
        );
        (self.owner(table, index), table.partition_id(index))
    }

    /// The WrongPartition answer to a request on one item that its client routed by a stale
    /// partition map (it reached a core that does not own the item), naming the epoch of the
    /// map this server routes by. `None` for one that reached the owner, for other requests,
    /// and for one the item path refuses anyway (no such table, no valid partition key).
    pub(super) fn misrouted(&self, request: &Request) -> Option<WireError> {
        let (name, key) = match request {
            Request::PutItem { table, item, .. } => (table, item),
            Request::GetItem { table, key, .. } | Request::DeleteItem { table, key, .. } => (table, key),
            Request::UpdateItem(update) => (&update.table, &update.key),
            _ => return None,
        };
        let catalog = self.catalog.borrow();
        let table = catalog.tables.get(name)?;
        let value = key.get(&table.key_schema.partition.name)?;
        let prefix = table.key_schema.encode_partition_prefix(value).ok()?;
        let (core, _) = self.place(table, &prefix.bytes);
        (core != self.core).then(|| WireError {
            epoch: Some(table.map.epoch),
            ..WireError::new(
                ErrorCode::WrongPartition,
                format!(
                    "{name}: the item's partition is on core {core}, not {}, by partition map epoch {}",
                    self.core, table.map.epoch
                ),
            )
        })
    }

    /// Asserts that `op` reached the core it must run on, as `call`'s callers chose it (by
    /// `place`, `owner`, `partition_core`): the owner of the partitions it reads or writes,
    /// core 0 for a table change. A Drop runs wherever its partitions' data is.
    pub(super) fn assert_runs_here(&self, op: &Op) {
        let partitions = match op {
            Op::Partition(op) => &[op.partition()],
            Op::ChangeMembers { partition, .. } | Op::RetireReplica { partition } => std::slice::from_ref(partition),
            Op::Count { partitions } => partitions.as_slice(),
            Op::CreateTable { .. } | Op::Retag { .. } | Op::DeleteTable { .. } => {
                assert_eq!(self.core, 0, "a table change runs on core 0, the catalog's owner");
                return;
            }
            Op::CatalogLoad(_) | Op::CatalogPut(_) | Op::CatalogRemove(_) | Op::Drop { .. } | Op::Replicas => return,
        };
        for &partition in partitions {
            // A partition of a table this core does not know yet is checked by its owner's op.
            let Some(core) = self.partition_core(partition) else { continue };
            assert_eq!(
                core,
                self.core,
                "an op on partition {} reached core {}, not its owner",
                partition_name(partition),
                self.core
            );
        }
    }

    /// The replicas of every core, as DescribeReplicas reports them.
    pub(super) async fn describe_replicas(self: &Rc<Shard>) -> Result<Response, WireError> {
        let Log::Replicated(log) = &self.log else {
            return Err(invalid("DescribeReplicas: this node is not a cluster member"));
        };
        let mut replicas = Vec::new();
        for core in 0..self.cores {
            match self.call(core, Op::Replicas).await {
                OpResult::Replicas(found) => replicas.extend(found),
                OpResult::Error(error) => return Err(error),
                other => return Err(unexpected(other)),
            }
        }
        Ok(Response::Replicas { node: log.node(), replicas })
    }
}

/// An operation's result that is not what the request needed: its error, or an internal one.
pub(super) fn unexpected(result: OpResult) -> WireError {
    match result {
        OpResult::Error(error) | OpResult::Partition(PartitionAnswer::Error(error)) => error,
        _ => wrong_kind(),
    }
}

/// A partition op's answer that is not what the request needed: its error, or an internal one.
pub(super) fn unexpected_answer(answer: PartitionAnswer) -> WireError {
    match answer {
        PartitionAnswer::Error(error) => error,
        _ => wrong_kind(),
    }
}

fn wrong_kind() -> WireError {
    WireError::new(ErrorCode::InternalServerError, "a partition's owner answered with the wrong kind of result")
}
