//! The replication log interface every write enters through. A partition's writes are
//! proposed to its log; once committed (durable on a quorum of the replication group) they are
//! applied in slot order and the proposer gets the outcome. Today the group has one member,
//! this store (`LocalLog`): committed means fdatasync'd in the local WAL. Multi-Paxos
//! implements the same trait with three members.

use std::cell::RefCell;
use std::future::Future;

use crate::command::{Command, Outcome};
use crate::error::Result;
use crate::store::{PartitionId, Store};

/// Where a partition's writes become committed, ordered log entries.
pub trait ReplicationLog {
    /// Proposes `command` for `partition`; resolves once it is committed and applied.
    fn propose(&self, partition: PartitionId, command: Command) -> impl Future<Output = Result<Outcome>>;
}

/// A replication group of one: the local store.
pub struct LocalLog {
    store: Store,
    last_slots: RefCell<ahash::HashMap<PartitionId, u64>>,
}

impl LocalLog {
    pub fn new(store: Store) -> LocalLog {
        LocalLog { store, last_slots: RefCell::new(ahash::HashMap::default()) }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

impl ReplicationLog for LocalLog {
    async fn propose(&self, partition: PartitionId, command: Command) -> Result<Outcome> {
        let lsn = {
            let mut last_slots = self.last_slots.borrow_mut();
            let last = last_slots.entry(partition).or_insert_with(|| self.store.applied_slot(partition));
            let lsn = self.store.submit(partition, *last + 1, command)?;
            *last += 1;
            lsn
        };
        self.store.outcome(lsn).await
    }
}
