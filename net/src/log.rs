//! Where a core's writes go: a group of one (`LocalLog`, the single-node server) or the core's
//! replicated partitions (`ReplicatedLog`, a cluster member). The shard sees one interface.

use std::rc::Rc;

use tessera_engine::{Command, Error, LocalLog, Outcome, PartitionId, ReplicationLog, Result, Store};

use crate::replicated::ReplicatedLog;

pub(crate) enum Log {
    Local(LocalLog),
    Replicated(Rc<ReplicatedLog>),
}

impl Log {
    pub(crate) fn store(&self) -> &Store {
        match self {
            Log::Local(log) => log.store(),
            Log::Replicated(log) => log.store(),
        }
    }

    /// Whether this core may serve a read of `partition` now: always in a group of one (where
    /// the writes waiting for apply, and so a read's wait, are bounded by the store); in a
    /// replicated partition, not while applies lag past the core's bound (the read would wait
    /// behind them: `ReplicatedLog::admit`), and a strong one only where the leader holds
    /// its lease.
    pub(crate) fn check_read(&self, partition: PartitionId, consistent: bool) -> Result<(), Error> {
        match self {
            Log::Replicated(log) if consistent => log.check_read(partition),
            Log::Replicated(log) => log.admit_read(),
            Log::Local(_) => Ok(()),
        }
    }
}

impl ReplicationLog for Log {
    async fn propose(&self, partition: PartitionId, command: Command) -> Result<()> {
        match self {
            Log::Local(log) => log.propose(partition, command).await,
            Log::Replicated(log) => log.propose(partition, command).await,
        }
    }

    async fn propose_applied(&self, partition: PartitionId, command: Command) -> Result<Outcome> {
        match self {
            Log::Local(log) => log.propose_applied(partition, command).await,
            Log::Replicated(log) => log.propose_applied(partition, command).await,
        }
    }
}
