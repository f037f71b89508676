//! BatchGetItem and BatchWriteItem: the keys or writes fanned out to their partitions' owners
//! at once, the parts another node leads forwarded to it.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use tessera_engine::{item_size, validate_item, Command, Item, PartitionId, ITEM_SIZE_MAX};
use tessera_wire::frame::FRAME_LEN_MAX;
use tessera_wire::{ConsumedCapacity, ErrorCode, ReadExpressions, Request, Response, TableKeys, WireError, Write};

use super::codec::{decode_stored, encode_exact_key, encode_stored};
use super::expressions::ReadPlan;
use super::forward::leader_of;
use super::mesh::{unexpected, Op, OpResult};
use super::metering::Meter;
use super::{engine_error, invalid, Shard};

/// Most keys one BatchGetItem may ask for.
pub const BATCH_GET_MAX: usize = 100;
/// Most writes one BatchWriteItem may carry.
pub const BATCH_WRITE_MAX: usize = 25;
// A partition's share of a BatchWriteItem is forwarded to its leader as one request.
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
            plans.insert(table.name.clone(), (plan, request.consistent_read));
            for key_item in &request.keys {
                let key = encode_exact_key(&table.key_schema, key_item)?;
                if !seen.insert((table.id, key.clone())) {
                    return Err(invalid("Provided list of item keys contains duplicates"));
                }
                let (core, partition) = self.place(&table, &key);
                let (shard, name, consistent) = (self.clone(), table.name.clone(), request.consistent_read);
                let forwarded = Request::GetItem {
                    table: name.clone(),
                    key: key_item.clone(),
                    consistent_read: consistent,
                    read: ReadExpressions::default(),
                };
                gets.push(glommio::spawn_local(async move {
                    let result = match shard.call(core, Op::Get { partition, key, consistent }).await {
                        OpResult::Value(value) => value.as_deref().map(decode_stored).transpose(),
                        OpResult::Error(error) => match leader_of(&error).filter(|_| may_forward) {
                            // Another node leads the key's partition: ask it.
                            Some(leader) => match shard.forward(leader, &forwarded).await {
                                Ok(Response::Item(item)) => Ok(item),
                                Ok(_) => Err(WireError::new(
                                    ErrorCode::InternalServerError,
                                    "a node answered GetItem wrongly",
                                )),
                                Err(error) => Err(error),
                            },
                            None => Err(error),
                        },
                        other => Err(unexpected(other)),
                    };
                    (name, result)
                }));
            }
        }
        assert!(gets.len() <= BATCH_GET_MAX, "{} gets fanned out, over BatchGetItem's {BATCH_GET_MAX}", gets.len());
        let mut responses: BTreeMap<String, Vec<Item>> = BTreeMap::new();
        for get in gets {
            let (name, result) = get.await;
            let (plan, consistent) = &plans[&name];
            match result? {
                Some(item) => {
                    meter.read(&name, item_size(&item), *consistent);
                    responses.entry(name).or_default().push(plan.project(item))
                }
                None => {
                    meter.read(&name, 0, *consistent);
                    responses.entry(name).or_default();
                }
            }
        }
        Ok(Response::BatchGetItem { responses: responses.into_iter().collect(), unprocessed: Vec::new() })
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
        /// One partition's share of the writes: written here (the outcome, and the writes), or
        /// by the node that leads the partition (what it left unprocessed).
        enum Share {
            Here(OpResult, Vec<Write>),
            There(Result<(Vec<Write>, Vec<ConsumedCapacity>), WireError>),
        }
        let mut tasks = Vec::new();
        let (previous, mode) = (meter.wanted(), meter.mode);
        for ((core, partition), (commands, writes)) in groups {
            // Pushed together above, so the outcomes below pair with the writes; at most the
            // bound checked above, which the leader a share is forwarded to checks again.
            assert_eq!(commands.len(), writes.len(), "a share's commands are its writes");
            assert!(writes.len() <= BATCH_WRITE_MAX, "a share of {} writes", writes.len());
            let shard = self.clone();
            tasks.push(glommio::spawn_local(async move {
                let result = shard.call(core, Op::Batch { partition, commands, previous }).await;
                let leader = match &result {
                    OpResult::Error(error) => leader_of(error).filter(|_| may_forward).map(str::to_string),
                    _ => None,
                };
                // Another node leads the partition: it takes these writes as a batch of its
                // own, and counts their capacity when asked.
                let Some(leader) = leader else { return Share::Here(result, writes) };
                let request = Request::BatchWriteItem(writes);
                Share::There(match shard.forward_with(&leader, &request, mode).await {
                    Ok((Response::BatchWriteItem { unprocessed }, consumed)) => Ok((unprocessed, consumed)),
                    Ok(_) => {
                        Err(WireError::new(ErrorCode::InternalServerError, "a node answered BatchWriteItem wrongly"))
                    }
                    Err(error) => Err(error),
                })
            }));
        }
        let mut unprocessed = Vec::new();
        for task in tasks {
            match task.await {
                Share::There(left) => {
                    let (left, consumed) = left?;
                    unprocessed.extend(left);
                    meter.add(&consumed);
                }
                Share::Here(OpResult::Done, _) => {}
                Share::Here(OpResult::Values(olds), writes) => {
                    assert_eq!(olds.len(), writes.len(), "a batch answers one old item per write");
                    for (old, write) in olds.iter().zip(&writes) {
                        let old = old.as_deref().map(decode_stored).transpose()?;
                        match write {
                            Write::Put { table, item } => meter.write(table, old.as_ref(), Some(item)),
                            Write::Delete { table, .. } => meter.write(table, old.as_ref(), None),
                        }
                    }
                }
                Share::Here(OpResult::Error(error), writes) if error.retryable => unprocessed.extend(writes),
                Share::Here(other, _) => return Err(unexpected(other)),
            }
        }
        Ok(Response::BatchWriteItem { unprocessed })
    }
}
