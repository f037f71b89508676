//! The item coordinator: PutItem, GetItem, DeleteItem and UpdateItem, plain or conditional
//! (one conditional log record at the owner), and the values they return.

use std::rc::Rc;

use tessera_engine::expr::Condition;
use tessera_engine::{validate_item, Command, ConditionalWrite, Item};
use tessera_wire::{
    ErrorCode, Expressions, PartitionAnswer, PartitionOp, ReadExpressions, Response, UpdateItem, WireError,
};

use super::codec::{decode_stored, encode_exact_key, encode_stored};
use super::expressions::{parse_write_expressions, ReadPlan};
use super::mesh::unexpected_answer;
use super::metering::{size_of, Meter};
use super::{engine_error, Shard};
use crate::catalog::TableInfo;

impl Shard {
    /// Runs `op` (a put, delete or get) at `core`: the item it replaced or read.
    async fn old_item(self: &Rc<Shard>, core: usize, op: PartitionOp) -> Result<Option<Item>, WireError> {
        match self.on(core, op).await {
            PartitionAnswer::Value(value) => value.as_deref().map(decode_stored).transpose(),
            other => Err(unexpected_answer(other)),
        }
    }

    pub(super) async fn put_item(
        self: &Rc<Shard>,
        name: &str,
        item: Item,
        return_old: bool,
        meter: &mut Meter,
    ) -> Result<Response, WireError> {
        let table = self.table(name)?;
        validate_item(&item).map_err(engine_error)?;
        let key = table.key_schema.encode_key(&item).map_err(engine_error)?.bytes;
        let (core, partition) = self.place(&table, &key);
        let value = encode_stored(&item);
        let op = PartitionOp::Put { partition, key, value, return_old: return_old || meter.wanted() };
        let old = self.old_item(core, op).await?;
        meter.write(name, old.as_ref(), Some(&item));
        Ok(Response::Item(old.filter(|_| return_old)))
    }

    pub(super) async fn get_item(
        self: &Rc<Shard>,
        name: &str,
        key: &Item,
        consistent: bool,
        read: &ReadExpressions,
        meter: &mut Meter,
    ) -> Result<Response, WireError> {
        let table = self.table(name)?;
        let plan = ReadPlan::projection_only(read, "GetItem")?;
        let key = encode_exact_key(&table.key_schema, key)?;
        let (core, partition) = self.place(&table, &key);
        let item = self.old_item(core, PartitionOp::Get { partition, key, consistent }).await?;
        meter.read(name, size_of(item.as_ref()), consistent);
        Ok(Response::Item(item.map(|item| plan.project(item))))
    }

    pub(super) async fn delete_item(
        self: &Rc<Shard>,
        name: &str,
        key: &Item,
        return_old: bool,
        meter: &mut Meter,
    ) -> Result<Response, WireError> {
        let table = self.table(name)?;
        let key = encode_exact_key(&table.key_schema, key)?;
        let (core, partition) = self.place(&table, &key);
        let old = self
            .old_item(core, PartitionOp::Delete { partition, key, return_old: return_old || meter.wanted() })
            .await?;
        meter.write(name, old.as_ref(), None);
        Ok(Response::Item(old.filter(|_| return_old)))
    }

    pub(super) async fn conditional_put(
        self: &Rc<Shard>,
        name: &str,
        item: Item,
        return_old: bool,
        expressions: &Expressions,
        return_old_on_failure: bool,
        meter: &mut Meter,
    ) -> Result<Response, WireError> {
        let table = self.table(name)?;
        validate_item(&item).map_err(engine_error)?;
        let key = table.key_schema.encode_key(&item).map_err(engine_error)?.bytes;
        let condition = parse_write_expressions(expressions, None)?.0;
        let write = ConditionalWrite::Put(encode_stored(&item));
        let (old, _) = self.conditional(&table, key, condition, write, return_old_on_failure, meter).await?;
        Ok(Response::Item(if return_old { old } else { None }))
    }

    pub(super) async fn conditional_delete(
        self: &Rc<Shard>,
        name: &str,
        key: &Item,
        return_old: bool,
        expressions: &Expressions,
        return_old_on_failure: bool,
        meter: &mut Meter,
    ) -> Result<Response, WireError> {
        let table = self.table(name)?;
        let key = encode_exact_key(&table.key_schema, key)?;
        let condition = parse_write_expressions(expressions, None)?.0;
        let write = ConditionalWrite::Delete;
        let (old, _) = self.conditional(&table, key, condition, write, return_old_on_failure, meter).await?;
        Ok(Response::Item(if return_old { old } else { None }))
    }

    pub(super) async fn update_item(
        self: &Rc<Shard>,
        request: UpdateItem,
        meter: &mut Meter,
    ) -> Result<Response, WireError> {
        let table = self.table(&request.table)?;
        let key = encode_exact_key(&table.key_schema, &request.key)?;
        let (condition, update) = parse_write_expressions(&request.expressions, Some(&request.update))?;
        let update = update.unwrap_or_default();
        let key_names: Vec<&str> = std::iter::once(&table.key_schema.partition)
            .chain(&table.key_schema.sort)
            .map(|key| key.name.as_str())
            .collect();
        update.check_key_attributes(&key_names).map_err(engine_error)?;
        let write_timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        let targets: Vec<_> = update.targets().cloned().collect();
        let write = ConditionalWrite::Update { key_item: request.key, update, write_timestamp };
        let (old, new) = self.conditional(&table, key, condition, write, request.return_old_on_failure, meter).await?;
        Ok(Response::Item(request.return_values.select(old.as_ref(), new.as_ref(), &targets)))
    }

    /// Runs a conditional write at the key's owner: the old and new items when the condition
    /// held, ConditionalCheckFailedException (with the old item if asked) when it did not.
    async fn conditional(
        self: &Rc<Shard>,
        table: &TableInfo,
        key: Vec<u8>,
        condition: Option<Condition>,
        write: ConditionalWrite,
        return_old_on_failure: bool,
        meter: &mut Meter,
    ) -> Result<(Option<Item>, Option<Item>), WireError> {
        let (core, partition) = self.place(table, &key);
        let command = Command::conditional(key, condition, write);
        match self.on(core, PartitionOp::Conditional { partition, command }).await {
            PartitionAnswer::Conditional { passed, old, new } => {
                let old = old.as_deref().map(decode_stored).transpose()?;
                if !passed {
                    let mut error =
                        WireError::new(ErrorCode::ConditionalCheckFailedException, "The conditional request failed");
                    error.item = old.filter(|_| return_old_on_failure);
                    return Err(error);
                }
                let new = new.as_deref().map(decode_stored).transpose()?;
                meter.write(&table.name, old.as_ref(), new.as_ref());
                Ok((old, new))
            }
            other => Err(unexpected_answer(other)),
        }
    }
}
