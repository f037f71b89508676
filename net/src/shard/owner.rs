//! The owner's side of partition work: writes proposed to a partition's log, bounded scans,
//! item counts, and dropping a deleted table's data.

use std::ops::Bound;

use tessera_engine::{yield_to_reactor, Command, Outcome, PartitionId, ReplicationLog};
use tessera_wire::{ErrorCode, PartitionAnswer, PartitionOp, WireError};

use super::batch::BATCH_WRITE_MAX;
use super::mesh::OpResult;
use super::{engine_error, invalid, Shard};
use crate::catalog::partition_name;

/// Entries read from the tree at a time while filling a page.
const SCAN_CHUNK: usize = 128;

impl Shard {
    /// Runs the internal RPC's `op` here, at its partition's owner (`assert_runs_here`).
    pub(super) async fn run_partition(&self, op: PartitionOp) -> PartitionAnswer {
        let answer = match op {
            PartitionOp::Put { partition, key, value, return_old } => {
                self.write(partition, Command::Put { key, value: value.into() }, return_old).await
            }
            PartitionOp::Delete { partition, key, return_old } => {
                self.write(partition, Command::Delete { key }, return_old).await
            }
            PartitionOp::Get { partition, key, consistent } => match self.log.check_read(partition, consistent) {
                Ok(()) => self.store().get(partition, &key).await.map(PartitionAnswer::Value).map_err(engine_error),
                Err(error) => Err(engine_error(error)),
            },
            PartitionOp::Conditional { partition, command } => {
                match self.log.propose_applied(partition, command).await {
                    Err(error) => Err(engine_error(error)),
                    Ok(Outcome::Conditional { passed, old, new }) => {
                        Ok(PartitionAnswer::Conditional { passed, old, new })
                    }
                    Ok(Outcome::Invalid(reason)) => Err(invalid(reason)),
                    Ok(Outcome::Previous(_) | Outcome::Written | Outcome::Batch(_)) => {
                        Err(other_outcome("a conditional write"))
                    }
                }
            }
            PartitionOp::Scan { partition, consistent, lower, upper, reverse, limit, bytes_max } => {
                match self.log.check_read(partition, consistent) {
                    Ok(()) => self.scan(partition, lower, upper, reverse, limit, bytes_max).await,
                    Err(error) => Err(engine_error(error)),
                }
            }
            PartitionOp::Batch { partition, commands, previous } => {
                // BatchWriteItem's bound, checked where the request arrived (`batch_write`) and
                // where another node's op is decoded: one log record of at most that many items.
                assert!(
                    (1..=BATCH_WRITE_MAX).contains(&commands.len()),
                    "a batch of {} writes, not 1 to {BATCH_WRITE_MAX}",
                    commands.len()
                );
                self.batch(partition, commands, previous).await
            }
        };
        answer.unwrap_or_else(PartitionAnswer::Error)
    }

    async fn batch(
        &self,
        partition: PartitionId,
        commands: Vec<Command>,
        previous: bool,
    ) -> Result<PartitionAnswer, WireError> {
        if !previous {
            self.log.propose(partition, Command::Batch(commands)).await.map_err(engine_error)?;
            return Ok(PartitionAnswer::Done);
        }
        let writes = commands.len();
        let Outcome::Batch(outcomes) =
            self.log.propose_applied(partition, Command::Batch(commands)).await.map_err(engine_error)?
        else {
            return Err(other_outcome("a batch"));
        };
        // `batch_write` pairs them with its writes.
        assert_eq!(outcomes.len(), writes, "a batch's outcomes, one per write");
        outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Outcome::Previous(previous) => Ok(previous),
                _ => Err(other_outcome("a batch's write")),
            })
            .collect::<Result<_, _>>()
            .map(PartitionAnswer::Values)
    }

    async fn write(
        &self,
        partition: PartitionId,
        command: Command,
        return_old: bool,
    ) -> Result<PartitionAnswer, WireError> {
        if return_old {
            match self.log.propose_applied(partition, command).await.map_err(engine_error)? {
                Outcome::Previous(previous) => Ok(PartitionAnswer::Value(previous)),
                Outcome::Written | Outcome::Batch(_) | Outcome::Conditional { .. } | Outcome::Invalid(_) => {
                    Err(other_outcome("a plain write"))
                }
            }
        } else {
            self.log.propose(partition, command).await.map_err(engine_error)?;
            Ok(PartitionAnswer::Value(None))
        }
    }

    async fn scan(
        &self,
        partition: PartitionId,
        mut lower: Bound<Vec<u8>>,
        mut upper: Bound<Vec<u8>>,
        reverse: bool,
        limit: usize,
        bytes_max: usize,
    ) -> Result<PartitionAnswer, WireError> {
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
                    return Ok(PartitionAnswer::Entries { entries, more: true });
                }
            }
            if exhausted {
                assert_page(&entries, limit, bytes_max);
                return Ok(PartitionAnswer::Entries { entries, more: false });
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

/// The error of an outcome of another kind than `what` has.
fn other_outcome(what: &str) -> WireError {
    WireError::new(ErrorCode::InternalServerError, format!("{what} had another kind of outcome"))
}

/// Asserts a page's bounds, as the owner's scan keeps them and the coordinator relies on them:
/// at most `limit` entries, and under `bytes_max` bytes before its last entry (the one that
/// reached the bound ends the page, so a page is at most its bound and one item).
pub(super) fn assert_page(entries: &[(Vec<u8>, Vec<u8>)], limit: usize, bytes_max: usize) {
    if let Some(fault) = page_fault(entries, limit, bytes_max) {
        panic!("{fault}");
    }
}

/// What makes `entries` more than a scan of `limit` entries and `bytes_max` bytes may answer
/// (the last entry may cross the byte bound), if anything: checked where a page is made and
/// where another node's page arrives.
pub(super) fn page_fault(entries: &[(Vec<u8>, Vec<u8>)], limit: usize, bytes_max: usize) -> Option<String> {
    if entries.len() > limit {
        return Some(format!("a page of {} entries, over its limit of {limit}", entries.len()));
    }
    let before_last: usize = entries.iter().rev().skip(1).map(|(key, value)| key.len() + value.len()).sum();
    (entries.len() > 1 && before_last >= bytes_max)
        .then(|| format!("a page of {before_last} bytes before its last entry, over its bound of {bytes_max}"))
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
