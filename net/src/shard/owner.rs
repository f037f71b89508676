//! The owner's side of partition work: writes proposed to a partition's log, bounded scans,
//! item counts, and dropping a deleted table's data.

use std::ops::Bound;

use tessera_engine::{yield_to_reactor, Command, Outcome, PartitionId, ReplicationLog};
use tessera_wire::{ErrorCode, WireError};

use super::mesh::OpResult;
use super::{engine_error, Shard};
use crate::catalog::partition_name;

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
                Outcome::Written | Outcome::Batch(_) | Outcome::Conditional { .. } | Outcome::Invalid(_) => {
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
        // Callers ask for at least one entry (a Query's or Scan's Limit of 0 is none): with
        // none, no chunk would end the loop.
        assert!(limit > 0, "a scan of {} for no entries", partition_name(partition));
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
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
                // Each chunk starts past the last key read: the page moves on, in its direction.
                assert!(
                    entries.last().is_none_or(|(last, _)| if reverse { key < *last } else { key > *last }),
                    "a scan of {} read a key twice or out of order",
                    partition_name(partition)
                );
                bytes += key.len() + value.len();
                if reverse {
                    upper = Bound::Excluded(key.clone());
                } else {
                    lower = Bound::Excluded(key.clone());
                }
                entries.push((key, value));
                if entries.len() == limit || bytes >= bytes_max {
                    assert_page(&entries, limit, bytes_max);
                    return Ok(OpResult::Entries { entries, more: true });
                }
            }
            if exhausted {
                assert_page(&entries, limit, bytes_max);
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

/// Asserts a page's bounds, as the owner's scan keeps them and the coordinator relies on them:
/// at most `limit` entries, and under `bytes_max` bytes before its last entry (the one that
/// reached the bound ends the page, so a page is at most its bound and one item).
pub(super) fn assert_page(entries: &[(Vec<u8>, Vec<u8>)], limit: usize, bytes_max: usize) {
    assert!(entries.len() <= limit, "a page of {} entries, over its limit of {limit}", entries.len());
    let before_last: usize = entries.iter().rev().skip(1).map(|(key, value)| key.len() + value.len()).sum();
    assert!(
        entries.len() <= 1 || before_last < bytes_max,
        "a page of {before_last} bytes before its last entry, over its bound of {bytes_max}"
    );
}

fn bound_ref(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(key) => Bound::Included(key),
        Bound::Excluded(key) => Bound::Excluded(key),
        Bound::Unbounded => Bound::Unbounded,
    }
}

#[cfg(test)]
mod tests {
    use super::assert_page;

    fn entries(sizes: &[usize]) -> Vec<(Vec<u8>, Vec<u8>)> {
        sizes.iter().map(|&size| (vec![0; 8], vec![0; size - 8])).collect()
    }

    /// A page may cross its byte bound by its last entry, and no more.
    #[test]
    fn a_page_ends_at_the_entry_that_reaches_its_bound() {
        assert_page(&entries(&[60, 60]), 2, 100);
        assert_page(&entries(&[500]), 1, 100);
        assert_page(&[], 1, 100);
        let over = std::panic::catch_unwind(|| assert_page(&entries(&[60, 60, 10]), 3, 100));
        assert!(over.is_err(), "a page that went on past its bound");
        let long = std::panic::catch_unwind(|| assert_page(&entries(&[10, 10]), 1, 100));
        assert!(long.is_err(), "a page over its limit");
    }
}
