//! The replication log interface every write enters through. A partition's writes are
//! proposed to its log; a proposal resolves once committed (durable on a quorum of the
//! replication group), and committed entries are applied in slot order behind it. Reads wait
//! for every entry committed before they began to be applied, so an acknowledged write is
//! always visible. A proposer that needs what the apply found (the previous value) asks for
//! it with `propose_applied`. Today the group has one member, this store (`LocalLog`):
//! committed means fdatasync'd in the local WAL. Multi-Paxos implements the same trait with
//! three members.

use std::cell::RefCell;
use std::future::Future;

use crate::command::{Command, Outcome};
use crate::error::Result;
use crate::store::{PartitionId, Store};

/// Where a partition's writes become committed, ordered log entries.
pub trait ReplicationLog {
    /// Proposes `command` for `partition`; resolves once it is committed.
    fn propose(&self, partition: PartitionId, command: Command) -> impl Future<Output = Result<()>>;

    /// Proposes `command` for `partition`; resolves once it is committed and applied, with
    /// what the apply found.
    fn propose_applied(&self, partition: PartitionId, command: Command) -> impl Future<Output = Result<Outcome>>;
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

    /// Submits `command` at the partition's next slot; returns its LSN.
    fn submit(&self, partition: PartitionId, command: Command, want_outcome: bool) -> Result<u64> {
        let mut last_slots = self.last_slots.borrow_mut();
        let last = last_slots.entry(partition).or_insert_with(|| self.store.applied_slot(partition));
        let lsn = self.store.submit(partition, *last + 1, command, want_outcome)?;
        *last += 1;
        Ok(lsn)
    }
}

impl ReplicationLog for LocalLog {
    async fn propose(&self, partition: PartitionId, command: Command) -> Result<()> {
        let lsn = self.submit(partition, command, false)?;
        self.store.committed(lsn).await
    }

    async fn propose_applied(&self, partition: PartitionId, command: Command) -> Result<Outcome> {
        let lsn = self.submit(partition, command, true)?;
        self.store.outcome(lsn).await
    }
}
