//! The owner's side of partition work: writes proposed to a partition's log, bounded scans,
//! item counts, and dropping a deleted table's data.

use std::ops::Bound;

use tessera_engine::{yield_to_reactor, Command, Outcome, PartitionId, ReplicationLog};
use tessera_wire::{ErrorCode, WireError};

use super::mesh::OpResult;
use super::{engine_error, Shard};

/// Entries read from the tree at a time while filling a page.
const SCAN_CHUNK: usize = 128;

impl Shard {
    pub(super) async fn write(
        &self,
        partition: PartitionId,
        command: Command,
        return_old: bool,
    ) -> Result<OpResult, WireError> {
        if return_old {
            match self.log.propose_applied(partition, command).await.map_err(engine_error)? {
                Outcome::Previous(previous) => Ok(OpResult::Value(previous)),
                Outcome::Replaced(_) | Outcome::Batch(_) | Outcome::Conditional { .. } | Outcome::Invalid(_) => {
                    Err(WireError::new(ErrorCode::InternalServerError, "a plain write had another kind of outcome"))
                }
            }
        } else {
            self.log.propose(partition, command).await.map_err(engine_error)?;
            Ok(OpResult::Value(None))
        }
    }

    pub(super) async fn scan(
        &self,
        partition: PartitionId,
        mut lower: Bound<Vec<u8>>,
        mut upper: Bound<Vec<u8>>,
        reverse: bool,
        limit: usize,
        bytes_max: usize,
    ) -> Result<OpResult, WireError> {
        let mut entries = Vec::new();
        let mut bytes = 0;
        loop {
            let want = SCAN_CHUNK.min(limit - entries.len());
            let chunk = self
                .store()
                .scan(partition, bound_ref(&lower), bound_ref(&upper), reverse, want)
                .await
                .map_err(engine_error)?;
            let exhausted = chunk.len() < want;
            for (key, value) in chunk {
                bytes += key.len() + value.len();
                if reverse {
                    upper = Bound::Excluded(key.clone());
                } else {
                    lower = Bound::Excluded(key.clone());
                }
                entries.push((key, value));
                if entries.len() == limit || bytes >= bytes_max {
                    return Ok(OpResult::Entries { entries, more: true });
                }
            }
            if exhausted {
                return Ok(OpResult::Entries { entries, more: false });
            }
            // A page of small items is many chunks: let other requests run between them.
            yield_to_reactor().await;
        }
    }

    /// Items and bytes in `partitions` (the store keeps the counts as it applies writes).
    pub(super) async fn count(&self, partitions: &[PartitionId]) -> Result<OpResult, WireError> {
        let (mut items, mut bytes) = (0u64, 0u64);
        for &partition in partitions {
            let meta = self.store().partition_meta(partition).await.map_err(engine_error)?;
            items += meta.items;
            bytes += meta.bytes;
        }
        Ok(OpResult::Count { items, bytes })
    }

    pub(super) async fn drop_partitions(&self, partitions: &[PartitionId]) -> Result<OpResult, WireError> {
        for &partition in partitions {
            loop {
                let chunk = self
                    .store()
                    .scan(partition, Bound::Unbounded, Bound::Unbounded, false, 256)
                    .await
                    .map_err(engine_error)?;
                if chunk.is_empty() {
                    break;
                }
                let deletes = chunk.into_iter().map(|(key, _)| Command::Delete { key }).collect();
                self.log.propose(partition, Command::Batch(deletes)).await.map_err(engine_error)?;
            }
        }
        Ok(OpResult::Done)
    }
}

fn bound_ref(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(key) => Bound::Included(key),
        Bound::Excluded(key) => Bound::Excluded(key),
        Bound::Unbounded => Bound::Unbounded,
    }
}
