//! One core's share of the server: its store, its copy of the catalog, and the operations.
//!
//! A request is coordinated by the core whose connection received it. Each partition lives on
//! exactly one core; work on a partition is an `Op` run by that core, called directly when it
//! is local and sent over the glommio channel mesh otherwise. No data is shared between cores
//! and nothing on the data path takes a lock. The catalog is owned by core 0 (stored in its
//! store, partition 0); every change is made there and copied to every core before the
//! request that made it is answered.
//!
//! This file holds the `Shard` and the dispatch of requests (`execute`) and of ops (`run`) to
//! the rooms below, one module each.

mod batch;
mod codec;
mod ddl;
mod expressions;
mod forward;
mod items;
mod mesh;
mod metering;
mod owner;
mod reads;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use glommio::channels::channel_mesh::Senders;
use tessera_engine::Error;
use tessera_wire::{ConsumedCapacity, ErrorCode, Expressions, Request, RequestFlags, Response, WireError};

pub use self::batch::{BATCH_GET_MAX, BATCH_WRITE_MAX};
pub(crate) use self::mesh::Envelope;
use self::mesh::{unexpected, Op, OpResult};
use self::metering::Meter;
pub use self::reads::PAGE_BYTES_MAX;
use crate::auth::Access;
use crate::catalog::{validate_table_name, Catalog};
use crate::client::AsyncClient;
use crate::local::Pending;
use crate::log::Log;

pub(crate) struct Shard {
    core: usize,
    cores: usize,
    log: Log,
    catalog: RefCell<Catalog>,
    senders: Senders<Envelope>,
    pending: Pending<OpResult>,
    /// Serializes catalog changes (core 0).
    catalog_lock: glommio::sync::Semaphore,
    /// Signalled once the catalog is loaded.
    catalog_ready: glommio::sync::Semaphore,
    /// The keys connections must prove they hold; the cluster's secret also opens the
    /// connections this node forwards requests on.
    access: Access,
    /// Core 0 of a cluster member: its catalog partition has caught up since the start
    /// (`Catalog::current`).
    catalog_current: Cell<bool>,
    /// Connections to other cluster members, by client address, for the partitions of a
    /// multi-partition request that they lead.
    forwards: RefCell<HashMap<String, Rc<AsyncClient>>>,
}

fn engine_error(error: Error) -> WireError {
    match error {
        Error::Validation(message) => WireError::new(ErrorCode::ValidationException, message),
        Error::NotLeader { leader, address } => {
            let mut wire = WireError::new(ErrorCode::NotLeader, Error::NotLeader { leader, address: None }.to_string());
            wire.leader = address;
            wire
        }
        Error::Unavailable(reason) => WireError::new(ErrorCode::ServiceUnavailable, reason),
        // Nothing was written; the store resumes once space is freed.
        error @ Error::NoSpace(_) => WireError::new(ErrorCode::ServiceUnavailable, error.to_string()),
        Error::Throttled(reason) => WireError::new(ErrorCode::ThrottlingException, reason),
        other => WireError::new(ErrorCode::InternalServerError, other.to_string()),
    }
}

fn invalid(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::ValidationException, message)
}

impl Shard {
    pub(crate) fn new(core: usize, cores: usize, log: Log, senders: Senders<Envelope>, access: Access) -> Shard {
        Shard {
            core,
            cores,
            log,
            access,
            catalog: RefCell::new(Catalog::default()),
            senders,
            pending: Pending::default(),
            catalog_lock: glommio::sync::Semaphore::new(1),
            catalog_ready: glommio::sync::Semaphore::new(0),
            catalog_current: Cell::new(false),
            forwards: RefCell::default(),
        }
    }

    pub(crate) fn core(&self) -> usize {
        self.core
    }

    pub(crate) fn cores(&self) -> usize {
        self.cores
    }

    /// The keys connections to this node prove they hold.
    pub(crate) fn access(&self) -> &Access {
        &self.access
    }

    /// Whether this node is a cluster member (its partitions replicated).
    pub(crate) fn replicated(&self) -> bool {
        matches!(self.log, Log::Replicated(_))
    }

    pub(crate) fn store(&self) -> &tessera_engine::Store {
        self.log.store()
    }

    async fn run(self: &Rc<Shard>, op: Op) -> OpResult {
        self.assert_runs_here(&op);
        let result = match op {
            Op::Partition(op) => Ok(OpResult::Partition(self.run_partition(op).await)),
            Op::Count { partitions } => self.count(&partitions).await,
            Op::Replicas => match &self.log {
                Log::Replicated(log) => Ok(OpResult::Replicas(log.replica_statuses())),
                Log::Local(_) => Ok(OpResult::Replicas(Vec::new())),
            },
            Op::ChangeMembers { partition, members } => match &self.log {
                Log::Replicated(log) => {
                    log.change_members(partition, members).map(OpResult::Slot).map_err(engine_error)
                }
                Log::Local(_) => Err(invalid("ChangeMembers: this node is not a cluster member")),
            },
            Op::RetireReplica { partition } => match &self.log {
                Log::Replicated(log) => log.retire_removed(partition).map(|()| OpResult::Done).map_err(engine_error),
                Log::Local(_) => Err(invalid("RetireReplica: this node is not a cluster member")),
            },
            Op::CreateTable { name, key_schema, map, throughput, tags } => {
                self.create_table(name, key_schema, map, throughput, tags).await
            }
            Op::Retag { name, add, remove } => self.retag(&name, &add, &remove).await,
            Op::DeleteTable { name } => self.delete_table(&name).await,
            Op::CatalogLoad(catalog) => {
                self.install_catalog(catalog);
                Ok(OpResult::Done)
            }
            Op::CatalogPut(table) => {
                self.catalog.borrow_mut().tables.insert(table.name.clone(), table);
                Ok(OpResult::Done)
            }
            Op::CatalogRemove(name) => {
                self.catalog.borrow_mut().tables.remove(&name);
                Ok(OpResult::Done)
            }
            Op::Drop { partitions } => self.drop_partitions(&partitions).await,
        };
        result.unwrap_or_else(OpResult::Error)
    }

    /// Serves one request: the coordinator's side, whichever core owns the data. Returns the
    /// answer and, if its flags asked for it, the capacity the request consumed. A request
    /// another node forwarded is not forwarded again.
    pub(crate) async fn execute(
        self: &Rc<Shard>,
        request: Request,
        flags: RequestFlags,
    ) -> (Response, Vec<ConsumedCapacity>) {
        if let Some(misrouted) = flags.routed.then(|| self.misrouted(&request)).flatten() {
            return (Response::Error(misrouted), Vec::new());
        }
        let mut meter = Meter::new(flags.capacity);
        let may_forward = !flags.forwarded;
        let result = match request {
            Request::CreateTable { table, key_schema, partitions, throughput, tags, ranges } => {
                self.execute_create(table, key_schema, partitions, ranges, throughput, tags).await
            }
            Request::TagResource { table, tags } => self.execute_retag(table, tags, Vec::new()).await,
            Request::UntagResource { table, keys } => self.execute_retag(table, Vec::new(), keys).await,
            Request::ListTagsOfResource { table } => validate_table_name(&table, true).and_then(|()| {
                let catalog = self.catalog.borrow();
                let tags = &catalog.table(&table)?.tags;
                Ok(Response::Tags(tags.iter().map(|(key, value)| (key.clone(), value.clone())).collect()))
            }),
            Request::DeleteTable { table } => match validate_table_name(&table, true) {
                Err(error) => Err(error),
                Ok(()) => match self.call(0, Op::DeleteTable { name: table }).await {
                    OpResult::Table(table) => {
                        let mut description = table.describe(0, 0);
                        description.status = tessera_wire::TableStatus::Deleting;
                        Ok(Response::Table(description))
                    }
                    other => Err(unexpected(other)),
                },
            },
            Request::DescribeTable { table, counts } => self.describe(&table, counts).await,
            Request::ListTables { exclusive_start_table, limit } => self.list_tables(exclusive_start_table, limit),
            Request::PutItem { table, item, return_old, expressions, return_old_on_failure } => {
                if expressions == Expressions::default() {
                    self.put_item(&table, item, return_old, &mut meter).await
                } else {
                    self.conditional_put(&table, item, return_old, &expressions, return_old_on_failure, &mut meter)
                        .await
                }
            }
            Request::GetItem { table, key, consistent_read, read } => {
                self.get_item(&table, &key, consistent_read, &read, &mut meter).await
            }
            Request::DeleteItem { table, key, return_old, expressions, return_old_on_failure } => {
                if expressions == Expressions::default() {
                    self.delete_item(&table, &key, return_old, &mut meter).await
                } else {
                    self.conditional_delete(&table, &key, return_old, &expressions, return_old_on_failure, &mut meter)
                        .await
                }
            }
            Request::UpdateItem(update) => self.update_item(update, &mut meter).await,
            Request::Query(query) => self.query(query, &mut meter).await,
            Request::Scan(scan) => self.scan_table(scan, may_forward, &mut meter).await,
            Request::BatchGetItem(tables) => self.batch_get(tables, may_forward, &mut meter).await,
            Request::BatchWriteItem(writes) => self.batch_write(writes, may_forward, &mut meter).await,
            Request::Hello => Ok(Response::Hello { core: self.core as u32, cores: self.cores as u32 }),
            // A connection's proof is checked where the connection is served, never here.
            Request::Authenticate { .. } => {
                Err(invalid("Authenticate opens a binary connection; it is not a request to execute"))
            }
            Request::DescribeReplicas => self.describe_replicas().await,
            Request::ChangeMembers { partition, members } => {
                let core = self.admin_core(partition).await;
                match self.call(core, Op::ChangeMembers { partition, members }).await {
                    OpResult::Slot(slot) => Ok(Response::Admin { slot }),
                    OpResult::Error(error) => Err(error),
                    other => Err(unexpected(other)),
                }
            }
            Request::RetireReplica { partition } => {
                let core = self.admin_core(partition).await;
                match self.call(core, Op::RetireReplica { partition }).await {
                    OpResult::Done => Ok(Response::Admin { slot: 0 }),
                    OpResult::Error(error) => Err(error),
                    other => Err(unexpected(other)),
                }
            }
        };
        match result {
            // An error reports no capacity, as in DynamoDB.
            Err(error) => (Response::Error(error), Vec::new()),
            Ok(response) => (response, meter.report()),
        }
    }
}
