//! BatchGetItem and BatchWriteItem: the keys or writes fanned out to their partitions' owners
//! at once, the parts another node leads forwarded to it.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use tessera_engine::{item_size, validate_item, Command, Item, PartitionId, ITEM_SIZE_MAX};
use tessera_wire::frame::FRAME_LEN_MAX;
use tessera_wire::{PartitionAnswer, PartitionOp, Response, TableKeys, WireError, Write};

use super::codec::{decode_stored, encode_exact_key, encode_stored};
use super::expressions::ReadPlan;
use super::mesh::unexpected_answer;
use super::metering::Meter;
use super::{engine_error, invalid, Shard};

/// Most keys one BatchGetItem may ask for.
pub const BATCH_GET_MAX: usize = 100;
/// Most bytes of items one BatchGetItem answers (DynamoDB's 16 MB); the keys of items past it
/// come back unprocessed.
pub const BATCH_GET_BYTES_MAX: usize = 16 << 20;
/// Most writes one BatchWriteItem may carry.
pub const BATCH_WRITE_MAX: usize = 25;
// A partition's share of a BatchWriteItem is sent to its leader as one PartitionOp.
const _: () = assert!(BATCH_WRITE_MAX * ITEM_SIZE_MAX < FRAME_LEN_MAX, "a BatchWriteItem fits in a frame");

impl Shard {
    pub(super) async fn batch_get(
        self: &Rc<Shard>,
        tables: Vec<TableKeys>,
        may_forward: bool,
        meter: &mut Meter,
    ) -> Result<Response, WireError> {
        let count: usize = tables.iter().map(|table| table.keys.len()).sum();
        if count == 0 {
            return Err(invalid("BatchGetItem needs at least one key"));
        }
        if count > BATCH_GET_MAX {
            return Err(invalid(format!(
                "Too many items requested for the BatchGetItem call: {count}, at most {BATCH_GET_MAX}"
            )));
        }
        let mut gets = Vec::new();
        let mut seen = BTreeSet::new();
        let mut plans = BTreeMap::new();
        for request in &tables {
            let table = self.table(&request.table)?;
            let plan = ReadPlan::projection_only(&request.read, "BatchGetItem")?;
            plans.insert(table.name.clone(), (plan, request));
            for key_item in &request.keys {
                let key = encode_exact_key(&table.key_schema, key_item)?;
                if !seen.insert((table.id, key.clone())) {
                    return Err(invalid("Provided list of item keys contains duplicates"));
                }
                let (core, partition) = self.place(&table, &key);
                let (shard, consistent) = (self.clone(), request.consistent_read);
                let get = glommio::spawn_local(async move {
                    let op = PartitionOp::Get { partition, key, consistent };
                    match shard.at_leader(core, op, may_forward).await {
                        PartitionAnswer::Value(value) => value.as_deref().map(decode_stored).transpose(),
                        other => Err(unexpected_answer(other)),
                    }
                });
                gets.push((table.name.clone(), key_item, get));
            }
        }
        assert!(gets.len() <= BATCH_GET_MAX, "{} gets fanned out, over BatchGetItem's {BATCH_GET_MAX}", gets.len());
        let mut responses: BTreeMap<String, Vec<Item>> = BTreeMap::new();
        // Keys left for the caller to ask again, as DynamoDB leaves them: those whose item
        // would take the answer past BATCH_GET_BYTES_MAX, and those refused for now.
        let mut unprocessed: BTreeMap<String, Vec<Item>> = BTreeMap::new();
        let (mut bytes, mut refused) = (0, None);
        for (name, key_item, get) in gets {
            let (plan, request) = &plans[&name];
            let found = match get.await {
                Ok(found) => found,
                Err(error) if error.retryable => {
                    refused = Some(error);
                    unprocessed.entry(name).or_default().push(key_item.clone());
                    continue;
                }
                Err(error) => return Err(error),
            };
            let size = found.as_ref().map_or(0, item_size);
            if bytes + size > BATCH_GET_BYTES_MAX {
                unprocessed.entry(name).or_default().push(key_item.clone());
                continue;
            }
            bytes += size;
            meter.read(&name, size, request.consistent_read);
            let items = responses.entry(name).or_default();
            items.extend(found.map(|item| plan.project(item)));
        }
        assert!(bytes <= BATCH_GET_BYTES_MAX, "a BatchGetItem answer of {bytes} bytes of items");
        if let Some(error) = refused.filter(|_| responses.is_empty()) {
            // Nothing could be read: the caller gets the reason, as DynamoDB answers a batch
            // none of whose keys it could serve.
            return Err(error);
        }
        let unprocessed = unprocessed
            .into_iter()
            .map(|(name, keys)| {
                let request = plans[&name].1;
                TableKeys { table: name, keys, consistent_read: request.consistent_read, read: request.read.clone() }
            })
            .collect();
        Ok(Response::BatchGetItem { responses: responses.into_iter().collect(), unprocessed })
    }

    pub(super) async fn batch_write(
        self: &Rc<Shard>,
        writes: Vec<Write>,
        may_forward: bool,
        meter: &mut Meter,
    ) -> Result<Response, WireError> {
        if writes.is_empty() || writes.len() > BATCH_WRITE_MAX {
            return Err(invalid(format!("BatchWriteItem takes 1 to {BATCH_WRITE_MAX} writes, not {}", writes.len())));
        }
        // Everything is validated before anything is written.
        let mut groups: BTreeMap<(usize, PartitionId), (Vec<Command>, Vec<Write>)> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for write in writes {
            let (table, command) = match &write {
                Write::Put { table, item } => {
                    let table = self.table(table)?;
                    validate_item(item).map_err(engine_error)?;
                    let key = table.key_schema.encode_key(item).map_err(engine_error)?.bytes;
                    (table, Command::Put { key, value: encode_stored(item).into() })
                }
                Write::Delete { table, key } => {
                    let table = self.table(table)?;
                    let key = encode_exact_key(&table.key_schema, key)?;
                    (table, Command::Delete { key })
                }
            };
            let key = match &command {
                Command::Put { key, .. } | Command::Delete { key } => key.clone(),
                Command::Batch(_) | Command::Conditional(_) | Command::Schema(_) => {
                    unreachable!("plain single writes only")
                }
            };
            if !seen.insert((table.id, key.clone())) {
                return Err(invalid("Provided list of item keys contains duplicates"));
            }
            let group = groups.entry(self.place(&table, &key)).or_default();
            group.0.push(command);
            group.1.push(write);
        }
        let mut tasks = Vec::new();
        let previous = meter.wanted();
        for ((core, partition), (commands, writes)) in groups {
            // Pushed together above, so the outcomes below pair with the writes; at most the
            // bound checked above, which the leader a share is sent to checks again.
            assert_eq!(commands.len(), writes.len(), "a share's commands are its writes");
            assert!(writes.len() <= BATCH_WRITE_MAX, "a share of {} writes", writes.len());
            let shard = self.clone();
            tasks.push(glommio::spawn_local(async move {
                let op = PartitionOp::Batch { partition, commands, previous };
                (shard.at_leader(core, op, may_forward).await, writes)
            }));
        }
        let mut unprocessed = Vec::new();
        for task in tasks {
            match task.await {
                (PartitionAnswer::Done, _) => {}
                (PartitionAnswer::Values(olds), writes) => {
                    assert_eq!(olds.len(), writes.len(), "a batch answers one old item per write");
                    for (old, write) in olds.iter().zip(&writes) {
                        let old = old.as_deref().map(decode_stored).transpose()?;
                        match write {
                            Write::Put { table, item } => meter.write(table, old.as_ref(), Some(item)),
                            Write::Delete { table, .. } => meter.write(table, old.as_ref(), None),
                        }
                    }
                }
                (PartitionAnswer::Error(error), writes) if error.retryable => unprocessed.extend(writes),
                (other, _) => return Err(unexpected_answer(other)),
            }
        }
        Ok(Response::BatchWriteItem { unprocessed })
    }
}
