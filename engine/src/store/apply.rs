//! The applier: queued records applied to the tree strictly in order, each entry through its
//! partition's machine (`PartitionMachine`), snapshot install steps, configurations, and dropped
//! partitions.

use super::*;

impl Inner {
    /// Applies one entry at `slot`: reads the old images it names, runs the partition's
    /// machine (`PartitionMachine::apply`) and makes its effects. The partition's metadata
    /// (applied slot, counts, schema) is kept in memory and written into the tree just before a
    /// checkpoint is sealed (`save_partition_metas`), so the checkpoint holds exactly the
    /// metadata of the records its tree reflects.
    ///
    /// `keep`: the proposer takes the outcome (a plain put's or delete's is then the value it
    /// replaced, rather than only its length).
    pub(super) async fn apply(
        &self,
        partition: PartitionId,
        slot: u64,
        entry: &Stamped,
        keep: bool,
    ) -> Result<Outcome> {
        let mut keys = Vec::new();
        self.partition_mut(partition).machine.reads(&entry.command, keep, &mut keys);
        let mut images = Images::default();
        for key in keys {
            if !images.contains(key) {
                let full = data_key(partition, key);
                let image = self.with_tree(|tree| tree.get(&full)).await?;
                images.insert(key.to_vec(), image);
            }
        }
        let applied = {
            let repaired = self.damaged_tails.get().unknown_repaired;
            let mut state = self.partition_mut(partition);
            let state = state.know(repaired);
            let applied = state
                .machine
                .apply(slot, entry, &mut images, keep)
                .map_err(|reason| Error::corrupt(self.file.path(), 0, reason))?;
            state.unsaved.schema |= applied.schema_changed;
            state.has_changes |= state.machine.schema.changes != ChangeView::Off;
            state.applied_through(slot);
            applied
        };
        // Blind (`Applied::blind`), each write is counted by the length it replaced.
        let count = |key: &[u8], previous: Option<usize>, value: Option<usize>| {
            if applied.blind {
                self.partition_mut(partition).machine.count(key, previous, value);
            }
        };
        for effect in applied.effects {
            match effect {
                Effect::Put { key, value } => {
                    let full = data_key(partition, &key);
                    let previous = self.with_tree(|tree| tree.put_len(&full, &value)).await?;
                    count(&key, previous, Some(value.len()));
                }
                Effect::Delete { key } => {
                    let full = data_key(partition, &key);
                    let previous = self.with_tree(|tree| tree.delete_len(&full)).await?;
                    count(&key, previous, None);
                }
                Effect::Change { sequence, record } => {
                    let full = keyspace::change_key(partition, sequence);
                    self.with_tree(|tree| tree.put_len(&full, &record).map(drop)).await?;
                }
            }
        }
        Ok(applied.outcome)
    }

    /// Applies a step of installing a snapshot of `partition`.
    pub(super) async fn install(&self, partition: PartitionId, step: &Install) -> Result<()> {
        match step {
            Install::Begin => {
                self.excise_damaged(partition).await?;
                self.empty_partition(partition).await?;
                let mut state = self.known_partition(partition);
                state.machine = PartitionMachine { schema: state.machine.schema, ..PartitionMachine::default() };
                state.installing = true;
            }
            Install::Entries(entries) => {
                for (key, value) in entries {
                    let full = data_key(partition, key);
                    let previous = self.with_tree(|tree| tree.put_len(&full, value)).await?;
                    self.known_partition(partition).machine.count(key, previous, Some(value.len()));
                }
            }
            Install::End { slot, items, bytes, members } => {
                let whole = {
                    let mut state = self.known_partition(partition);
                    let whole = state.installing && state.machine.items == *items && state.machine.bytes == *bytes;
                    state.installing &= !whole;
                    whole
                };
                if whole {
                    self.configure(partition, *slot, members.clone());
                }
            }
        }
        Ok(())
    }

    /// `partition`'s group is configured as `members` from `slot` on (applied).
    pub(super) fn configure(&self, partition: PartitionId, slot: u64, members: Vec<paxos::Member>) {
        let mut state = self.known_partition(partition);
        state.config = Some(members);
        state.unsaved.config = true;
        state.applied_through(slot);
    }

    /// Deletes everything of `partition` but its metadata from the tree (its items, its
    /// change log), a chunk at a time.
    pub(super) async fn empty_partition(&self, partition: PartitionId) -> Result<()> {
        for (mut lower, upper) in keyspace::partition_ranges(partition) {
            loop {
                let chunk = self.scan_tree(lower, upper.clone(), false, APPLY_CHUNK).await?;
                let Some((last, _)) = chunk.last() else { break };
                lower = Bound::Excluded(last.clone());
                for (key, _) in &chunk {
                    self.with_tree(|tree| tree.delete(key)).await?;
                }
                yield_to_reactor().await;
            }
        }
        Ok(())
    }

    /// Removes `partition` whole: items, metadata (in memory and in the tree), and the
    /// entries it held unapplied, which would otherwise keep the WAL from being recycled.
    pub(super) async fn drop_partition(&self, partition: PartitionId) -> Result<()> {
        self.empty_partition(partition).await?;
        for key in [meta_key(partition), config_key(partition), schema_key(partition)] {
            self.with_tree(|tree| tree.delete(&key).map(drop)).await?;
        }
        self.partitions.borrow_mut().remove(&partition);
        Ok(())
    }

    pub(super) async fn applier(inner: Rc<Inner>) {
        loop {
            let next = inner.queue.borrow().front().map(|queued| queued.lsn);
            match next {
                None if inner.closed.get() => return,
                None => {
                    if let Err(error) = inner.maybe_checkpoint().await {
                        inner.fail(error.to_string());
                        return;
                    }
                    inner.work.wait().await;
                    continue;
                }
                // Chosen entries (replicated mode) are durable on a quorum already.
                Some(_) if inner.config.replicated => {}
                Some(lsn) => {
                    if let Err(error) = inner.wal.durable(lsn).await {
                        inner.fail(error.to_string());
                        return;
                    }
                }
            }
            let durable = if inner.config.replicated { u64::MAX } else { inner.wal.durable_lsn() };
            let mut applied_here = 0usize;
            loop {
                // Before each chunk, let the reactor turn: writers acknowledged by the flush
                // that woke us submit again and the next flush is issued before the applies
                // run, so the disk works while this core applies. A chunk bounds how long a
                // flush's completion can wait unnoticed behind applies. The turn is taken even
                // when tasks wait for these applies (reads at the barrier, conditional writes
                // for their outcome): skipping it for them delayed the next flush, so batches
                // grew, and conditional updates' median at 30,000 writes/s was 1.53x a put's
                // instead of 1.3x (bench/RESULTS.md).
                if applied_here.is_multiple_of(APPLY_CHUNK) {
                    yield_to_reactor().await;
                }
                applied_here += 1;
                let queued = {
                    let mut queue = inner.queue.borrow_mut();
                    match queue.front() {
                        Some(front) if front.lsn <= durable => queue.pop_front(),
                        _ => None,
                    }
                };
                let Some(queued) = queued else { break };
                assert!(
                    queued.lsn > inner.applied.get(),
                    "record {} applied after {}",
                    queued.lsn,
                    inner.applied.get()
                );
                let applied = match &queued.work {
                    Work::Command(entry) => {
                        inner.apply(queued.partition, queued.slot, entry, queued.want_outcome).await
                    }
                    Work::Install(step) => {
                        inner.install(queued.partition, step).await.map(|()| Outcome::Batch(Vec::new()))
                    }
                    Work::Drop => inner.drop_partition(queued.partition).await.map(|()| Outcome::Batch(Vec::new())),
                    Work::Members(members) => {
                        inner.configure(queued.partition, queued.slot, members.clone());
                        Ok(Outcome::Batch(Vec::new()))
                    }
                };
                match applied {
                    Ok(outcome) => {
                        if queued.want_outcome {
                            inner.outcomes.borrow_mut().insert(queued.lsn, outcome);
                        }
                        inner.applied.advance(queued.lsn);
                    }
                    Err(error) => {
                        inner.fail(error.to_string());
                        return;
                    }
                }
            }
            if let Err(error) = inner.maybe_checkpoint().await {
                inner.fail(error.to_string());
                return;
            }
        }
    }
}
