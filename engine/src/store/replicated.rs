//! Replicated mode's replica state: promises and accepted entries persisted to the WAL, and which
//! replicas are amnesiac after a damaged WAL tail until they rejoin.

use super::*;

impl Store {
    /// Replicated mode: appends what `partition`'s replica asked to make durable (its promise
    /// and accepted entries, `paxos::Action::Persist`) to the WAL; returns the record's LSN, to
    /// pass to `durable`.
    pub fn persist_paxos(
        &self,
        partition: PartitionId,
        promised: Option<Ballot>,
        entries: &[(u64, paxos::Entry)],
    ) -> Result<u64> {
        if let Some(cause) = self.inner.poisoned.borrow().clone() {
            return Err(Error::Poisoned { cause });
        }
        if !self.inner.config.replicated {
            return Err(Error::Config("persist_paxos needs a replicated store".into()));
        }
        self.writable()?;
        let last_slot = entries.last().map_or(0, |(slot, _)| *slot);
        let lsn = self.inner.wal.append_with(partition, last_slot, RECORD_PAXOS, |out| {
            paxos::encode_persist(promised, entries, out);
            Ok(())
        })?;
        self.note_paxos_record(partition, lsn, promised, entries);
        Ok(lsn)
    }

    /// Replicated mode: the promises and entries recovered for each partition's replica (past
    /// its applied slot). Taken once, after `open`.
    pub fn take_recovered_paxos(&self) -> BTreeMap<PartitionId, paxos::Durable> {
        std::mem::take(&mut *self.inner.recovered_paxos.borrow_mut())
    }

    /// Remembers a persist: its promise (saved with the next checkpoint) and which unapplied
    /// entries the record holds.
    pub(super) fn note_paxos_record(
        &self,
        partition: PartitionId,
        lsn: u64,
        promised: Option<Ballot>,
        entries: &[(u64, paxos::Entry)],
    ) {
        if let Some(promised) = promised.filter(|promised| *promised > self.inner.promised(partition)) {
            self.inner.known_partition(partition).promised = promised;
        }
        let mut state = self.inner.partition_mut(partition);
        let applied = state.machine.applied_slot;
        for (slot, _) in entries.iter().filter(|(slot, _)| *slot > applied) {
            state.unapplied.insert(*slot, lsn);
        }
    }

    /// Replicated mode: whether `partition`'s replica must start amnesiac
    /// (`paxos::Replica::set_amnesiac`): recovery of this store has found a damaged WAL tail
    /// (now or at an earlier start, `wal::Recovered::damaged_tails`) that the replica has not
    /// rejoined its group since. The damaged records cannot be read, so a partition without
    /// metadata is amnesiac too, until the store knows every partition it holds
    /// (`partitions_known`).
    pub fn amnesiac(&self, partition: PartitionId) -> bool {
        let tails = self.inner.damaged_tails.get();
        let repaired = self
            .inner
            .partitions
            .borrow()
            .get(&partition)
            .filter(|state| state.known)
            .map_or(tails.unknown_repaired, |state| state.repaired);
        self.inner.config.replicated && repaired < tails.count
    }

    /// Replicated mode: `partition`'s replica rejoined its group (`paxos::Action::Rejoined`);
    /// saved with the next checkpoint (until then a restart finds it amnesiac again, which is
    /// safe).
    pub fn rejoined(&self, partition: PartitionId) {
        let count = self.inner.damaged_tails.get().count;
        let mut state = self.inner.known_partition(partition);
        state.repaired = state.repaired.max(count);
    }

    /// Replicated mode: `partitions` are every partition this store holds a replica of, as of
    /// a catalog that is current through a leader elected since this start, so that every
    /// partition that can have had a record in a damaged WAL tail is among them. Each without
    /// metadata is given some (its replica stays amnesiac until it rejoins); once that is
    /// checkpointed, `DamagedTails::unknown_repaired` is recorded, and a partition without
    /// metadata (a new one) is no longer amnesiac. Otherwise each damaged tail would leave every
    /// later partition's replica here amnesiac, and two such nodes of a group of three could
    /// elect no leader for it.
    pub fn partitions_known(&self, partitions: impl IntoIterator<Item = PartitionId>) {
        let tails = self.inner.damaged_tails.get();
        if !self.inner.config.replicated || tails.unknown_repaired == tails.count {
            return;
        }
        for partition in partitions {
            self.inner.known_partition(partition);
        }
        let known = DamagedTails { unknown_repaired: tails.count, ..tails };
        // A crash before the file is written finds partitions without metadata amnesiac still
        // (safe); those made from here on carry the new count in theirs.
        self.inner.damaged_tails.set(known);
        let store = self.clone();
        glommio::spawn_local(async move {
            let wal = store.inner.dir.join("wal");
            let written = match store.checkpoint().await {
                Ok(()) => crate::wal::write_damaged_tails(&wal, known),
                Err(error) => Err(error),
            };
            if let Err(error) = written {
                crate::report!("{}: cannot record that every partition is known after a damaged WAL tail ({error}): partitions without metadata start amnesiac again", store.inner.dir.display());
            }
        })
        .detach();
    }
}
