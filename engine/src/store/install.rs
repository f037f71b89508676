//! Snapshots of a partition (replicated mode): a consistent image read from the pinned durable
//! checkpoint (`PartitionSnapshot`), and a received one installed through the apply queue, whole or
//! not at all.

use super::*;

/// A consistent image of one partition as a durable checkpoint holds it (`Store::snapshot`),
/// read a chunk at a time.
pub struct PartitionSnapshot {
    store: Store,
    root: PageId,
    meta: PartitionMeta,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
}

impl PartitionSnapshot {
    /// The partition's applied slot, item count and bytes in the image.
    pub fn meta(&self) -> PartitionMeta {
        self.meta
    }

    /// The next entries (keys without the partition prefix), about `bytes_max` of them (at
    /// least one); empty at the end.
    pub async fn next_chunk(&mut self, bytes_max: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (mut chunk, mut bytes) = (Vec::new(), 0);
        while bytes < bytes_max {
            let mut entries = Vec::new();
            let root = self.root;
            let (lower, upper) = (&mut self.lower, &mut self.upper);
            self.store.inner.with_tree(|tree| tree.scan_resumable(root, lower, upper, false, 16, &mut entries)).await?;
            if entries.is_empty() {
                break;
            }
            for (key, value) in entries {
                bytes += key.len() + value.len();
                chunk.push((keyspace::item_key(&key).to_vec(), value));
            }
        }
        if chunk.is_empty() {
            // Past the end: no later call reads again.
            self.lower = self.upper.clone();
        }
        Ok(chunk)
    }
}

impl Drop for PartitionSnapshot {
    fn drop(&mut self) {
        self.store.inner.tree.borrow_mut().unpin();
    }
}

impl Store {
    /// Replicated mode: a consistent image of `partition` as the newest durable checkpoint
    /// holds it, to stream to a replica that needs it. Writes go on meanwhile; the pages it
    /// reads are kept from reuse until it is dropped.
    pub async fn snapshot(&self, partition: PartitionId) -> Result<PartitionSnapshot> {
        if !self.inner.config.replicated {
            return Err(Error::Config("snapshots need a replicated store".into()));
        }
        let root = self.inner.tree.borrow_mut().pin();
        let (lower, upper) = keyspace::data_range(partition);
        let mut snapshot =
            PartitionSnapshot { store: self.clone(), root, meta: PartitionMeta::default(), lower, upper };
        let key = meta_key(partition);
        let meta = self.inner.with_tree(|tree| tree.get_in(root, &key)).await?;
        let meta = match meta {
            None => PartitionMeta::default(),
            Some(bytes) => PartitionMeta::decode(&bytes)
                .ok_or_else(|| Error::corrupt(self.inner.file.path(), 0, "malformed partition metadata entry"))?,
        };
        if meta.installing {
            return Err(Error::Unavailable(format!(
                "partition {partition} was receiving a snapshot at the last checkpoint: it has none to give"
            )));
        }
        snapshot.meta = meta;
        Ok(snapshot)
    }

    /// Replicated mode: whether `partition` is installing a snapshot (it then serves no reads
    /// and applies nothing until one is whole).
    pub fn installing(&self, partition: PartitionId) -> bool {
        self.inner.partitions.borrow().get(&partition).is_some_and(|state| state.installing)
    }

    /// Replicated mode: removes `partition` (items, metadata, unapplied entries) behind every
    /// chosen entry queued before; its replica must be stopped first (its table was deleted).
    pub async fn drop_partition(&self, partition: PartitionId) -> Result<()> {
        self.applied_work(partition, Work::Drop).await
    }

    /// Replicated mode: starts installing a snapshot of `partition`, behind every chosen
    /// entry queued before: its items are removed and it is marked installing. The caller
    /// stops queueing the partition's chosen entries until `install_end` succeeds.
    pub async fn install_begin(&self, partition: PartitionId) -> Result<()> {
        self.install(partition, Install::Begin).await
    }

    /// Replicated mode: stores a chunk of the snapshot being installed.
    pub async fn install_entries(&self, partition: PartitionId, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        if let Some((key, _)) = entries.iter().find(|(key, _)| key.len() > KEY_LEN_MAX) {
            return Err(Error::validation(format!(
                "a snapshot entry's key of {} bytes exceeds the {KEY_LEN_MAX}-byte limit",
                key.len()
            )));
        }
        self.install(partition, Install::Entries(entries)).await
    }

    /// Replicated mode: ends the snapshot being installed, taken at `slot` of a partition of
    /// `items` items and `bytes` bytes, with `members` the configuration in force there. If
    /// the partition holds exactly those, it is at `slot` now (durably so with the next
    /// checkpoint); otherwise it stays installing and this says what differed.
    pub async fn install_end(
        &self,
        partition: PartitionId,
        slot: u64,
        items: u64,
        bytes: u64,
        members: Vec<paxos::Member>,
    ) -> Result<()> {
        self.install(partition, Install::End { slot, items, bytes, members }).await?;
        let meta = self.inner.partitions.borrow().get(&partition).map(Partition::meta).unwrap_or_default();
        if meta.installing {
            return Err(Error::Unavailable(format!(
                "the snapshot of partition {partition} at slot {slot} should hold {items} items of {bytes} bytes, \
                 and holds {} of {}: it is not installed",
                meta.items, meta.bytes
            )));
        }
        Ok(())
    }

    pub(super) async fn install(&self, partition: PartitionId, step: Install) -> Result<()> {
        self.applied_work(partition, Work::Install(step)).await
    }

    /// Queues `work` behind the chosen entries queued before, and waits until it is applied.
    pub(super) async fn applied_work(&self, partition: PartitionId, work: Work) -> Result<()> {
        let ticket = self.queue_chosen(partition, 0, work, false)?;
        self.inner.applied.wait(ticket).await.map_err(|cause| Error::Poisoned { cause })
    }
}
