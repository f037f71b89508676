//! The change log's reads and trimming (its records are written by the partition machine's
//! applies).

use super::*;

/// Trims change logs every `interval` while the store is open (`Store::trim_changes`).
pub(super) async fn trim_changes_every(inner: std::rc::Weak<Inner>, interval: Duration) {
    loop {
        glommio::timer::sleep(interval).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.get() || inner.poisoned.borrow().is_some() {
            return;
        }
        let store = Store { inner };
        if let Err(error) = store.trim_changes(crate::command::now_us()).await {
            crate::report!("{}: trimming change logs: {error}", store.inner.dir.display());
        }
    }
}

impl Store {
    /// `partition`'s change log from `from` on, in log order, at most `limit` records: every
    /// change committed before the call that retention has not trimmed.
    pub async fn changes(
        &self,
        partition: PartitionId,
        from: Sequence,
        limit: usize,
    ) -> Result<Vec<(Sequence, ChangeRecord)>> {
        self.read_barrier().await?;
        self.readable(partition)?;
        let (lower, upper) = keyspace::changes_range(partition, from);
        let entries = self.inner.scan_tree(lower, upper, false, limit).await?;
        entries
            .into_iter()
            .map(|(key, value)| {
                let damaged =
                    |reason: String| Error::corrupt(self.inner.file.path(), 0, format!("a change record: {reason}"));
                let sequence = keyspace::change_sequence(partition, &key).ok_or_else(|| damaged("its key".into()))?;
                Ok((sequence, ChangeRecord::decode(&value).map_err(damaged)?))
            })
            .collect()
    }

    /// Removes every change record older than its partition's retention at `now_us`
    /// (microseconds since the Unix epoch), oldest first, a chunk at a time; returns how many.
    /// Records are trimmed by their entry's time, so a record whose time is behind an older
    /// one's (a new leader's clock behind the old one's) waits for that one.
    pub async fn trim_changes(&self, now_us: u64) -> Result<u64> {
        let logged: Vec<(PartitionId, u64)> = self
            .inner
            .partitions
            .borrow()
            .iter()
            .filter(|(_, state)| state.machine.schema.changes != ChangeView::Off || state.has_changes)
            .map(|(&partition, state)| (partition, state.machine.schema.retention_s))
            .collect();
        let mut trimmed = 0;
        for (partition, retention_s) in logged {
            let horizon = now_us.saturating_sub(retention_s.saturating_mul(1_000_000));
            let (mut lower, upper) = keyspace::changes_range(partition, Sequence::default());
            'partition: loop {
                let chunk = self.inner.scan_tree(lower, upper.clone(), false, APPLY_CHUNK).await?;
                let Some((last, _)) = chunk.last() else {
                    if let Some(state) = self.inner.partitions.borrow_mut().get_mut(&partition) {
                        state.has_changes = state.machine.schema.changes != ChangeView::Off;
                    }
                    break;
                };
                lower = Bound::Excluded(last.clone());
                for (key, value) in &chunk {
                    let record = ChangeRecord::decode(value).map_err(|reason| {
                        Error::corrupt(self.inner.file.path(), 0, format!("a change record: {reason}"))
                    })?;
                    if record.at_us >= horizon {
                        break 'partition;
                    }
                    self.inner.with_tree(|tree| tree.delete_len(key).map(drop)).await?;
                    trimmed += 1;
                }
                yield_to_reactor().await;
            }
        }
        Ok(trimmed)
    }
}
