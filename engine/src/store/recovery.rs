//! Recovery: what `Store::open` finds and replays: the commands of a group of one past the
//! checkpoint (a record that does not decode holds its partition, or is quarantined), a replicated
//! store's promises and entries for its replicas, and every partition's saved metadata.

use super::*;

impl Store {
    /// Applies the commands recovered from the WAL (a group of one): each record past its
    /// partition's applied slot, once.
    pub(super) async fn replay_commands(&self, records: Vec<crate::wal::Record>) -> Result<()> {
        for record in records {
            if record.kind != RECORD_COMMAND {
                return Err(Error::corrupt(
                    self.inner.dir.join("wal"),
                    0,
                    format!(
                        "WAL record {} has kind {}, not a command (kind {RECORD_COMMAND})",
                        record.lsn, record.kind
                    ),
                ));
            }
            if self.inner.held(record.partition).is_some() {
                // Nothing after the record that stopped the partition is applied either.
                self.inner.applied.advance(record.lsn);
                continue;
            }
            match Stamped::decode(&record.payload) {
                Ok(entry) => {
                    if record.slot > self.applied_slot(record.partition) {
                        self.inner.apply(record.partition, record.slot, &entry, false).await?;
                    }
                }
                Err(reason) => self.undecodable(&record, &reason)?,
            }
            self.inner.applied.advance(record.lsn);
        }
        Ok(())
    }

    /// A WAL record whose checksum is good but whose command does not decode: not disk damage
    /// (the checksum vouches for the bytes) but a bug, in the version that wrote it or in this
    /// one. Its partition is held, or with `quarantine_bad_records` the record is skipped and
    /// kept aside; either way it is reported, naming the partition, slot and key.
    pub(super) fn undecodable(&self, record: &crate::wal::Record, reason: &str) -> Result<()> {
        let key = Command::key_of(&record.payload)
            .map_or_else(|| "unknown".to_string(), |key| format!("{:?}", String::from_utf8_lossy(key)));
        let what = format!(
            "WAL record {} (slot {}, key {key}) has a valid checksum but a command this version cannot decode ({reason}): a bug, not disk damage",
            record.lsn, record.slot
        );
        if !self.inner.config.quarantine_bad_records {
            crate::report!(
                "{}: partition {} is held, refusing every request: {what}; restart with --quarantine-bad-records to skip the record (losing that write) and serve the partition",
                self.inner.dir.display(),
                record.partition
            );
            self.inner.partition_mut(record.partition).held = Some((what, record.lsn));
            return Ok(());
        }
        let dir = self.inner.dir.join("quarantined");
        let path = dir.join(format!("partition-{}-lsn-{}.bin", record.partition, record.lsn));
        disk::create_dir(&dir)?;
        std::fs::write(&path, &record.payload)
            .and_then(|()| std::fs::File::open(&path)?.sync_all())
            .map_err(|error| Error::io("write", &path, error))?;
        disk::sync_dir(&dir)?;
        crate::report!(
            "{}: partition {}: skipped (--quarantine-bad-records) {what}; its payload is in {}",
            self.inner.dir.display(),
            record.partition,
            path.display()
        );
        Ok(())
    }

    /// Replicated mode: collects each partition's promises and entries from the WAL records
    /// past the checkpoint, for its replica to start from, and remembers which entries are
    /// not applied yet.
    pub(super) fn recover_paxos(&self, records: Vec<crate::wal::Record>) -> Result<()> {
        let mut recovered: BTreeMap<PartitionId, paxos::Durable> = BTreeMap::new();
        for (partition, state) in self.inner.partitions.borrow().iter().filter(|(_, state)| state.known) {
            recovered.entry(*partition).or_default().promised = state.promised;
        }
        for record in records {
            let damaged = |reason: String| {
                Error::corrupt(self.inner.dir.join("wal"), 0, format!("WAL record {}: {reason}", record.lsn))
            };
            if record.kind != RECORD_PAXOS {
                return Err(damaged(format!("kind {} in a replicated store, not {RECORD_PAXOS}", record.kind)));
            }
            let (promised, entries) = paxos::decode_persist(&record.payload).map_err(damaged)?;
            self.note_paxos_record(record.partition, record.lsn, promised, &entries);
            let applied = self.applied_slot(record.partition);
            let durable = recovered.entry(record.partition).or_default();
            if let Some(promised) = promised {
                durable.promised = durable.promised.max(promised);
            }
            durable.entries.extend(entries.into_iter().filter(|(slot, _)| *slot > applied));
        }
        *self.inner.recovered_paxos.borrow_mut() = recovered;
        Ok(())
    }

    /// Loads every partition's metadata, configuration and schema from the tree (at open).
    pub(super) async fn load_partition_metas(&self) -> Result<()> {
        let (lower, upper) = keyspace::meta_range();
        let entries = self.inner.scan_tree(lower, upper, false, usize::MAX).await?;
        let malformed = |what: &str| Error::corrupt(self.inner.file.path(), 0, format!("malformed {what} entry"));
        for (key, value) in entries {
            match keyspace::parse_meta_key(&key).ok_or_else(|| malformed("partition metadata key"))? {
                MetaKey::Config(partition) => {
                    let members = paxos::decode_configuration(&value).map_err(|_| malformed("group configuration"))?;
                    self.inner.partition_mut(partition).config = Some(members);
                }
                MetaKey::Schema(partition) => {
                    let schema = PartitionSchema::decode(&value).map_err(|_| malformed("partition schema"))?;
                    let mut state = self.inner.partition_mut(partition);
                    state.machine.schema = schema;
                    state.has_changes = true;
                }
                MetaKey::Meta(partition) => {
                    let meta = match (PartitionMeta::decode(&value), value.as_slice().try_into()) {
                        (Some(meta), _) => meta,
                        // Written before the counts were kept (the applied slot alone): count once.
                        (None, Ok(slot)) => self.count_partition(partition, u64::from_le_bytes(slot)).await?,
                        _ => return Err(malformed("partition metadata")),
                    };
                    let mut state = self.inner.partition_mut(partition);
                    state.set_meta(meta);
                    state.checkpointed_slot = meta.applied_slot;
                }
            }
        }
        Ok(())
    }

    /// The metadata of a partition saved before counts were kept: its items counted.
    pub(super) async fn count_partition(&self, partition: PartitionId, applied_slot: u64) -> Result<PartitionMeta> {
        let mut machine = PartitionMachine { applied_slot, ..PartitionMachine::default() };
        let (mut lower, upper) = keyspace::data_range(partition);
        loop {
            let chunk = self.inner.scan_tree(lower, upper.clone(), false, 1024).await?;
            let Some((last, _)) = chunk.last() else { break };
            lower = Bound::Excluded(last.clone());
            chunk.iter().for_each(|(key, value)| machine.count(keyspace::item_key(key), None, Some(value.len())));
        }
        self.inner.partition_mut(partition).unsaved.meta = true;
        Ok(PartitionMeta { applied_slot, items: machine.items, bytes: machine.bytes, ..PartitionMeta::default() })
    }
}
