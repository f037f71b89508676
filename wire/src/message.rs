//! The messages, as owned Rust values, and their conversion to and from flatbuffers.
//!
//! Decoding never trusts the peer: the payload is verified against the schema (with bounds on
//! depth, table count and size) before anything is read, and every field the message needs is
//! checked, so a bad message becomes a `WireError` naming what was wrong.

use std::collections::{BTreeMap, BTreeSet};

use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, WIPOffset};
pub use tessera_engine::expr::{ReturnValues, SortCondition};
use tessera_engine::partition::PartitionId;
use tessera_engine::paxos::{Member, MemberKind, ReplicaId};
use tessera_engine::{empty_set_message, AttributeValue, Item, KeyAttribute, KeySchema, KeyType, Number, NESTING_MAX};

use crate::error::{ErrorCode, WireError};
use crate::frame::{self, MessageType};
use crate::generated::tessera::fb;

/// ReturnConsumedCapacity: whether an answer reports the capacity its request consumed. Every
/// item operation takes it, so it travels in the request frame's flags (`flags`), not in each
/// message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReturnConsumedCapacity {
    #[default]
    None,
    /// The units consumed, per table.
    Total,
    /// Also each table's and each index's own share (no indexes exist yet: the table's).
    Indexes,
}

/// What a request frame's flags say: bits 0-1 its ReturnConsumedCapacity (0 NONE, 1 TOTAL,
/// 2 INDEXES), bit 2 that its client routed it by the table's partition map (a core that does
/// not own its partition answers WrongPartition rather than pass it on), bit 15 that a cluster
/// node forwarded it (the receiver must not forward it again: a stale leader hint cannot
/// bounce a request between nodes). Other bits are zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestFlags {
    pub capacity: ReturnConsumedCapacity,
    pub routed: bool,
    pub forwarded: bool,
}

const FLAG_ROUTED: u16 = 0x0004;
const FLAG_FORWARDED: u16 = 0x8000;

impl RequestFlags {
    pub fn bits(self) -> u16 {
        let capacity = match self.capacity {
            ReturnConsumedCapacity::None => 0,
            ReturnConsumedCapacity::Total => 1,
            ReturnConsumedCapacity::Indexes => 2,
        };
        capacity | if self.routed { FLAG_ROUTED } else { 0 } | if self.forwarded { FLAG_FORWARDED } else { 0 }
    }

    /// Reads a request frame's flags; anything else is a ValidationException.
    pub fn from_bits(bits: u16) -> Result<RequestFlags, WireError> {
        let capacity = match bits & !(FLAG_FORWARDED | FLAG_ROUTED) {
            0 => ReturnConsumedCapacity::None,
            1 => ReturnConsumedCapacity::Total,
            2 => ReturnConsumedCapacity::Indexes,
            _ => {
                return Err(invalid(format!(
                    "frame flags {bits:#06x} are not a request's (bits 0-1: ReturnConsumedCapacity 0 NONE, 1 TOTAL, 2 INDEXES; bit 2: routed; bit 15: forwarded)"
                )))
            }
        };
        Ok(RequestFlags { capacity, routed: bits & FLAG_ROUTED != 0, forwarded: bits & FLAG_FORWARDED != 0 })
    }
}

/// The capacity one table's part of a request consumed, in DynamoDB's units
/// (`tessera_engine::capacity`).
#[derive(Clone, Debug, PartialEq)]
pub struct ConsumedCapacity {
    pub table: String,
    pub read_units: f64,
    pub write_units: f64,
    /// The table's own share (DynamoDB's `Table`), present when INDEXES was asked for.
    pub table_units: Option<f64>,
}

impl ConsumedCapacity {
    /// DynamoDB's `CapacityUnits`: read and write units together.
    pub fn capacity_units(&self) -> f64 {
        self.read_units + self.write_units
    }
}

/// A table's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableStatus {
    Creating,
    Active,
    Deleting,
}

/// What DescribeTable reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableDescription {
    pub name: String,
    pub key_schema: KeySchema,
    pub partitions: u32,
    pub status: TableStatus,
    pub created_at_ms: u64,
    pub item_count: u64,
    pub size_bytes: u64,
    /// BillingMode PROVISIONED's throughput; `None`: PAY_PER_REQUEST.
    pub throughput: Option<Throughput>,
    /// Where its partitions are (binary protocol only; `None` past `MAP_IN_DESCRIPTION_MAX`
    /// ranges, and from a server before maps travelled): what clients route by.
    pub map: Option<PartitionMap>,
}

impl TableDescription {
    /// The position in the table's map of the range holding the item with key `key` (or the
    /// whole item), as a client routes it: `None` if the description has no map or the key no
    /// valid partition key value (the server will say why).
    pub fn range_of(&self, key: &Item) -> Option<u32> {
        let map = self.map.as_ref()?;
        let value = key.get(&self.key_schema.partition.name)?;
        let prefix = self.key_schema.encode_partition_prefix(value).ok()?;
        Some(map.index_of_hash(prefix.hash))
    }
}

/// Most ranges a table's description carries its map with (about 1.5 MB of them); a client
/// of a table with more sends every call to any core, which forwards it.
pub const MAP_IN_DESCRIPTION_MAX: usize = 1 << 16;

/// Where a table's partitions are: the ranges of the 64-bit partition-key hash space, in order
/// from 0, each held by one partition. The servers route by it; so do clients, by the copy
/// their last DescribeTable gave them (a stale copy costs a `WrongPartition` answer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionMap {
    /// Bumped by every change to the map.
    pub epoch: u64,
    pub ranges: Vec<PartitionRange>,
}

/// One partition of a table's map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionRange {
    /// The first hash it holds; the next range's start ends it.
    pub start: u64,
    /// Its storage partition id (opaque to routing).
    pub partition: PartitionId,
    /// The core its replicas live on, on every node.
    pub core: u16,
    /// The group member preferred to lead it, so that leaders spread over the nodes (0: none,
    /// as on a single node).
    pub leader: ReplicaId,
}

impl PartitionMap {
    /// The position of the range holding hash `hash`.
    pub fn index_of_hash(&self, hash: u64) -> u32 {
        let after = self.ranges.partition_point(|range| range.start <= hash);
        assert!(after >= 1, "the first range starts at 0");
        (after - 1) as u32
    }
}

/// One range of a table created with a chosen partition map (an administration request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeSpec {
    /// The first partition-key hash it holds.
    pub start: u64,
    /// The core its replicas live on.
    pub core: u16,
}

/// A table's provisioned throughput (BillingMode PROVISIONED), in capacity units per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throughput {
    pub read_units: u64,
    pub write_units: u64,
}

/// A table's tags as (key, value) pairs.
pub type Tags = Vec<(String, String)>;

/// A write's ConditionExpression and the placeholders of all its expressions, as text: the
/// server parses them (DynamoDB's request shape).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expressions {
    pub condition: Option<String>,
    /// ExpressionAttributeNames: ("#n", "name").
    pub names: Vec<(String, String)>,
    /// ExpressionAttributeValues: (":v", value).
    pub values: Vec<(String, AttributeValue)>,
}

impl Expressions {
    /// Expressions with `condition` as the ConditionExpression.
    pub fn condition(text: impl Into<String>) -> Expressions {
        Expressions { condition: Some(text.into()), ..Expressions::default() }
    }

    /// Adds an ExpressionAttributeNames entry (`#placeholder` for `name`).
    pub fn name(mut self, placeholder: impl Into<String>, name: impl Into<String>) -> Expressions {
        self.names.push((placeholder.into(), name.into()));
        self
    }

    /// Adds an ExpressionAttributeValues entry (`:placeholder` for `value`).
    pub fn value(mut self, placeholder: impl Into<String>, value: AttributeValue) -> Expressions {
        self.values.push((placeholder.into(), value));
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateItem {
    pub table: String,
    pub key: Item,
    /// The UpdateExpression.
    pub update: String,
    pub expressions: Expressions,
    pub return_values: ReturnValues,
    pub return_old_on_failure: bool,
}

/// What a read returns (`Select`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Select {
    /// Every attribute, or those of the projection when there is one.
    #[default]
    AllAttributes,
    /// The projection's attributes (a ProjectionExpression is required).
    SpecificAttributes,
    /// Only the count of matching items.
    Count,
}

/// A read's expressions, as text with their placeholders: parsed by the server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadExpressions {
    /// Query's KeyConditionExpression; it replaces the request's partition key and sort
    /// condition when present.
    pub key_condition: Option<String>,
    pub filter: Option<String>,
    pub projection: Option<String>,
    pub names: Vec<(String, String)>,
    pub values: Vec<(String, AttributeValue)>,
    pub select: Select,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub table: String,
    pub partition_key: AttributeValue,
    pub sort: Option<SortCondition>,
    pub backward: bool,
    /// 0: no limit (pages still end at 1 MB).
    pub limit: u32,
    pub exclusive_start_key: Option<Item>,
    pub consistent_read: bool,
    pub read: ReadExpressions,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    pub table: String,
    /// This request's segment of `total_segments` (0 of 0 or 0 of 1: the whole table).
    pub segment: u32,
    pub total_segments: u32,
    pub limit: u32,
    pub exclusive_start_key: Option<Item>,
    pub consistent_read: bool,
    pub read: ReadExpressions,
}

/// Keys to read from one table (BatchGetItem).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableKeys {
    pub table: String,
    pub keys: Vec<Item>,
    pub consistent_read: bool,
    /// The ProjectionExpression (and its names) for this table's items.
    pub read: ReadExpressions,
}

/// One write of a BatchWriteItem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    Put { table: String, item: Item },
    Delete { table: String, key: Item },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    CreateTable {
        table: String,
        key_schema: KeySchema,
        partitions: u32,
        /// `None`: BillingMode PAY_PER_REQUEST.
        throughput: Option<Throughput>,
        tags: Tags,
        /// Administration only: the table's partition map, chosen (empty: equal ranges on the
        /// cores in turn; `partitions` is then 0 or their count).
        ranges: Vec<RangeSpec>,
    },
    DeleteTable {
        table: String,
    },
    /// `counts: false` leaves the item count and size at 0 (they take a call to every core).
    DescribeTable {
        table: String,
        counts: bool,
    },
    ListTables {
        exclusive_start_table: Option<String>,
        limit: u32,
    },
    PutItem {
        table: String,
        item: Item,
        return_old: bool,
        expressions: Expressions,
        return_old_on_failure: bool,
    },
    GetItem {
        table: String,
        key: Item,
        consistent_read: bool,
        read: ReadExpressions,
    },
    DeleteItem {
        table: String,
        key: Item,
        return_old: bool,
        expressions: Expressions,
        return_old_on_failure: bool,
    },
    UpdateItem(UpdateItem),
    Query(Query),
    Scan(Scan),
    BatchGetItem(Vec<TableKeys>),
    BatchWriteItem(Vec<Write>),
    Hello,
    DescribeReplicas,
    ChangeMembers {
        partition: u64,
        members: Vec<Member>,
    },
    RetireReplica {
        partition: u64,
    },
    /// A proof that the connection holds the key `key_id` (see `AuthenticateRequest` in the
    /// schema); answered with `Response::Hello`.
    Authenticate {
        key_id: String,
        timestamp_ms: u64,
        nonce: Vec<u8>,
        signature: Vec<u8>,
    },
    /// Adds `tags` to the table (a key it has takes the new value); answered with its tags.
    TagResource {
        table: String,
        tags: Tags,
    },
    /// Removes the table's tags with these keys; answered with its tags.
    UntagResource {
        table: String,
        keys: Vec<String>,
    },
    ListTagsOfResource {
        table: String,
    },
}

/// One replica as the node hosting it sees it (cluster administration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub partition: u64,
    /// The node it believes leads, if it knows one.
    pub leader: Option<u32>,
    pub leading: bool,
    /// The newest configuration in its log, and whether that is committed.
    pub members: Vec<Member>,
    pub members_committed: bool,
    pub commit: u64,
    /// The slot its state machine applied (a log replica applies nothing).
    pub applied: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The core serving the connection, of how many.
    Hello {
        core: u32,
        cores: u32,
    },
    Table(TableDescription),
    ListTables {
        tables: Vec<String>,
        last_evaluated_table: Option<String>,
    },
    /// The item read, or the old item returned by a write.
    Item(Option<Item>),
    Items {
        items: Vec<Item>,
        /// Items read before the filter.
        scanned_count: u32,
        /// Items that matched the filter (`items` is empty with Select COUNT).
        count: u32,
        last_evaluated_key: Option<Item>,
    },
    BatchGetItem {
        responses: Vec<(String, Vec<Item>)>,
        unprocessed: Vec<TableKeys>,
    },
    BatchWriteItem {
        unprocessed: Vec<Write>,
    },
    /// The replicas node `node` hosts.
    Replicas {
        node: u32,
        replicas: Vec<ReplicaStatus>,
    },
    /// An administrative request was carried out (ChangeMembers: the slot proposed at).
    Admin {
        slot: u64,
    },
    /// A table's tags, in key order.
    Tags(Tags),
    Error(WireError),
}

/// Bounds the verifier holds a payload to before anything in it is read.
fn verifier_options() -> flatbuffers::VerifierOptions {
    flatbuffers::VerifierOptions {
        // A value nested NESTING_MAX levels deep is three tables a level (Value, Attribute or
        // list vector, Value) plus the message's own.
        max_depth: 3 * NESTING_MAX + 16,
        max_tables: 4 << 20,
        max_apparent_size: 1 << 31,
        ignore_missing_null_terminator: false,
    }
}

pub(crate) fn root<'a, T: flatbuffers::Follow<'a> + flatbuffers::Verifiable + 'a>(
    payload: &'a [u8],
    what: &str,
) -> Result<T::Inner, WireError> {
    flatbuffers::root_with_opts::<T>(&verifier_options(), payload)
        .map_err(|error| WireError::new(ErrorCode::MalformedMessage, format!("the {what} payload is invalid: {error}")))
}

/// A replication group's members, as the admin messages and the replication frames carry them.
pub(crate) type Members<'a> = WIPOffset<Vector<'a, ForwardsUOffset<fb::PaxosMember<'a>>>>;

pub(crate) fn write_members<'a>(fbb: &mut FlatBufferBuilder<'a>, members: &[Member]) -> Members<'a> {
    let members: Vec<_> = members
        .iter()
        .map(|member| {
            let args = fb::PaxosMemberArgs { id: member.id, log: member.kind == MemberKind::Log };
            fb::PaxosMember::create(fbb, &args)
        })
        .collect();
    fbb.create_vector(&members)
}

pub(crate) fn read_members(
    members: Option<Vector<'_, ForwardsUOffset<fb::PaxosMember<'_>>>>,
    what: &str,
) -> Result<Vec<Member>, WireError> {
    Ok(members
        .ok_or_else(|| WireError::new(ErrorCode::MalformedMessage, format!("a message lacks {what}")))?
        .iter()
        .map(|member| Member { id: member.id(), kind: if member.log() { MemberKind::Log } else { MemberKind::Full } })
        .collect())
}

fn invalid(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::ValidationException, message)
}

fn required<T>(value: Option<T>, what: &str) -> Result<T, WireError> {
    value.ok_or_else(|| invalid(format!("{what} is missing")))
}

// ------------------------------------------------------------------ values: Rust to flatbuffers

fn write_value<'a>(fbb: &mut FlatBufferBuilder<'a>, value: &AttributeValue) -> WIPOffset<fb::Value<'a>> {
    let mut args = fb::ValueArgs::default();
    match value {
        AttributeValue::S(text) => {
            args.kind = fb::ValueKind::S;
            args.text = Some(fbb.create_string(text));
        }
        AttributeValue::N(number) => {
            args.kind = fb::ValueKind::N;
            args.text = Some(fbb.create_string(&number.to_string()));
        }
        AttributeValue::B(bytes) => {
            args.kind = fb::ValueKind::B;
            args.data = Some(fbb.create_vector(bytes));
        }
        AttributeValue::Bool(flag) => {
            args.kind = fb::ValueKind::BOOL;
            args.flag = *flag;
        }
        AttributeValue::Null => args.kind = fb::ValueKind::NULL,
        AttributeValue::M(map) => {
            args.kind = fb::ValueKind::M;
            args.map = Some(write_attributes(fbb, map));
        }
        AttributeValue::L(list) => {
            args.kind = fb::ValueKind::L;
            let values: Vec<_> = list.iter().map(|value| write_value(fbb, value)).collect();
            args.list = Some(fbb.create_vector(&values));
        }
        AttributeValue::Ss(set) => {
            args.kind = fb::ValueKind::SS;
            let texts: Vec<_> = set.iter().map(|text| fbb.create_string(text)).collect();
            args.texts = Some(fbb.create_vector(&texts));
        }
        AttributeValue::Ns(set) => {
            args.kind = fb::ValueKind::NS;
            let texts: Vec<_> = set.iter().map(|number| fbb.create_string(&number.to_string())).collect();
            args.texts = Some(fbb.create_vector(&texts));
        }
        AttributeValue::Bs(set) => {
            args.kind = fb::ValueKind::BS;
            let blobs: Vec<_> = set
                .iter()
                .map(|bytes| {
                    let data = Some(fbb.create_vector(bytes));
                    fb::Blob::create(fbb, &fb::BlobArgs { data })
                })
                .collect();
            args.blobs = Some(fbb.create_vector(&blobs));
        }
    }
    fb::Value::create(fbb, &args)
}

fn write_attributes<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    item: &BTreeMap<String, AttributeValue>,
) -> WIPOffset<Vector<'a, ForwardsUOffset<fb::Attribute<'a>>>> {
    let attributes: Vec<_> = item
        .iter()
        .map(|(name, value)| {
            let name = Some(fbb.create_string(name));
            let value = Some(write_value(fbb, value));
            fb::Attribute::create(fbb, &fb::AttributeArgs { name, value })
        })
        .collect();
    fbb.create_vector(&attributes)
}

fn write_item<'a>(fbb: &mut FlatBufferBuilder<'a>, item: &Item) -> WIPOffset<fb::Item<'a>> {
    let attributes = Some(write_attributes(fbb, item));
    fb::Item::create(fbb, &fb::ItemArgs { attributes })
}

/// ExpressionAttributeNames and ExpressionAttributeValues entries.
type PlaceholderOffsets<'a> = (
    WIPOffset<Vector<'a, ForwardsUOffset<fb::NameEntry<'a>>>>,
    WIPOffset<Vector<'a, ForwardsUOffset<fb::ValueEntry<'a>>>>,
);

fn write_placeholders<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    names: &[(String, String)],
    values: &[(String, AttributeValue)],
) -> PlaceholderOffsets<'a> {
    let names: Vec<_> = names
        .iter()
        .map(|(placeholder, name)| {
            let args = fb::NameEntryArgs {
                placeholder: Some(fbb.create_string(placeholder)),
                name: Some(fbb.create_string(name)),
            };
            fb::NameEntry::create(fbb, &args)
        })
        .collect();
    let names = fbb.create_vector(&names);
    let values: Vec<_> = values
        .iter()
        .map(|(placeholder, value)| {
            let args = fb::ValueEntryArgs {
                placeholder: Some(fbb.create_string(placeholder)),
                value: Some(write_value(fbb, value)),
            };
            fb::ValueEntry::create(fbb, &args)
        })
        .collect();
    (names, fbb.create_vector(&values))
}

type Placeholders = (Vec<(String, String)>, Vec<(String, AttributeValue)>);

fn read_placeholders(
    names: Option<Vector<'_, ForwardsUOffset<fb::NameEntry<'_>>>>,
    values: Option<Vector<'_, ForwardsUOffset<fb::ValueEntry<'_>>>>,
) -> Result<Placeholders, WireError> {
    let names = names.map_or(Vec::new(), |names| {
        names.iter().map(|entry| (entry.placeholder().to_string(), entry.name().to_string())).collect()
    });
    let values = values.map_or(Ok(Vec::new()), |values| {
        values
            .iter()
            .map(|entry| Ok((entry.placeholder().to_string(), read_value(entry.value(), entry.placeholder(), 0)?)))
            .collect::<Result<Vec<_>, WireError>>()
    })?;
    Ok((names, values))
}

fn write_expressions<'a>(fbb: &mut FlatBufferBuilder<'a>, expressions: &Expressions) -> WIPOffset<fb::Expressions<'a>> {
    let condition = expressions.condition.as_deref().map(|condition| fbb.create_string(condition));
    let (names, values) = write_placeholders(fbb, &expressions.names, &expressions.values);
    fb::Expressions::create(fbb, &fb::ExpressionsArgs { condition, names: Some(names), values: Some(values) })
}

fn write_read_expressions<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    read: &ReadExpressions,
) -> WIPOffset<fb::ReadExpressions<'a>> {
    let mut text = |text: &Option<String>| text.as_deref().map(|text| fbb.create_string(text));
    let (key_condition, filter, projection) = (text(&read.key_condition), text(&read.filter), text(&read.projection));
    let (names, values) = write_placeholders(fbb, &read.names, &read.values);
    let select = match read.select {
        Select::AllAttributes => fb::Select::ALL_ATTRIBUTES,
        Select::SpecificAttributes => fb::Select::SPECIFIC_ATTRIBUTES,
        Select::Count => fb::Select::COUNT,
    };
    let args =
        fb::ReadExpressionsArgs { key_condition, filter, projection, names: Some(names), values: Some(values), select };
    fb::ReadExpressions::create(fbb, &args)
}

fn read_read_expressions(read: Option<fb::ReadExpressions<'_>>) -> Result<ReadExpressions, WireError> {
    let Some(read) = read else { return Ok(ReadExpressions::default()) };
    let (names, values) = read_placeholders(read.names(), read.values())?;
    let select = match read.select() {
        fb::Select::ALL_ATTRIBUTES => Select::AllAttributes,
        fb::Select::SPECIFIC_ATTRIBUTES => Select::SpecificAttributes,
        fb::Select::COUNT => Select::Count,
        other => return Err(invalid(format!("unknown Select {}", other.0))),
    };
    let text = |text: Option<&str>| text.map(str::to_string);
    Ok(ReadExpressions {
        key_condition: text(read.key_condition()),
        filter: text(read.filter()),
        projection: text(read.projection()),
        names,
        values,
        select,
    })
}

fn read_expressions(expressions: Option<fb::Expressions<'_>>) -> Result<Expressions, WireError> {
    let Some(expressions) = expressions else { return Ok(Expressions::default()) };
    let (names, values) = read_placeholders(expressions.names(), expressions.values())?;
    Ok(Expressions { condition: expressions.condition().map(str::to_string), names, values })
}

fn write_items<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    items: &[Item],
) -> WIPOffset<Vector<'a, ForwardsUOffset<fb::Item<'a>>>> {
    let items: Vec<_> = items.iter().map(|item| write_item(fbb, item)).collect();
    fbb.create_vector(&items)
}

fn write_key_element<'a>(fbb: &mut FlatBufferBuilder<'a>, key: &KeyAttribute) -> WIPOffset<fb::KeyElement<'a>> {
    let name = Some(fbb.create_string(&key.name));
    let type_ = match key.key_type {
        KeyType::S => fb::KeyType::S,
        KeyType::N => fb::KeyType::N,
        KeyType::B => fb::KeyType::B,
    };
    fb::KeyElement::create(fbb, &fb::KeyElementArgs { name, type_ })
}

fn write_table_keys<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    tables: &[TableKeys],
) -> WIPOffset<Vector<'a, ForwardsUOffset<fb::TableKeys<'a>>>> {
    let tables: Vec<_> = tables
        .iter()
        .map(|keys| {
            let table = Some(fbb.create_string(&keys.table));
            let keys_offset = Some(write_items(fbb, &keys.keys));
            let read = Some(write_read_expressions(fbb, &keys.read));
            fb::TableKeys::create(
                fbb,
                &fb::TableKeysArgs { table, keys: keys_offset, consistent_read: keys.consistent_read, read },
            )
        })
        .collect();
    fbb.create_vector(&tables)
}

fn write_writes<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    writes: &[Write],
) -> WIPOffset<Vector<'a, ForwardsUOffset<fb::WriteRequest<'a>>>> {
    let writes: Vec<_> = writes
        .iter()
        .map(|write| {
            let args = match write {
                Write::Put { table, item } => fb::WriteRequestArgs {
                    table: Some(fbb.create_string(table)),
                    put: Some(write_item(fbb, item)),
                    delete: None,
                },
                Write::Delete { table, key } => fb::WriteRequestArgs {
                    table: Some(fbb.create_string(table)),
                    put: None,
                    delete: Some(write_item(fbb, key)),
                },
            };
            fb::WriteRequest::create(fbb, &args)
        })
        .collect();
    fbb.create_vector(&writes)
}

// ------------------------------------------------------------------ values: flatbuffers to Rust

fn read_number(text: Option<&str>, path: &str) -> Result<Number, WireError> {
    let text = required(text, &format!("the number text of {path}"))?;
    Number::parse(text).map_err(|error| invalid(format!("{path}: {error}")))
}

fn read_value(value: fb::Value<'_>, path: &str, depth: usize) -> Result<AttributeValue, WireError> {
    if depth > NESTING_MAX {
        return Err(invalid(format!("{path} nests lists and maps deeper than {NESTING_MAX} levels")));
    }
    Ok(match value.kind() {
        fb::ValueKind::S => AttributeValue::S(required(value.text(), &format!("the text of {path}"))?.to_string()),
        fb::ValueKind::N => AttributeValue::N(read_number(value.text(), path)?),
        fb::ValueKind::B => {
            AttributeValue::B(required(value.data(), &format!("the bytes of {path}"))?.bytes().to_vec())
        }
        fb::ValueKind::BOOL => AttributeValue::Bool(value.flag()),
        fb::ValueKind::NULL => AttributeValue::Null,
        fb::ValueKind::M => {
            AttributeValue::M(read_attributes(required(value.map(), &format!("the map of {path}"))?, path, depth + 1)?)
        }
        fb::ValueKind::L => {
            let list = required(value.list(), &format!("the list of {path}"))?;
            let values =
                list.iter().enumerate().map(|(index, value)| read_value(value, &format!("{path}[{index}]"), depth + 1));
            AttributeValue::L(values.collect::<Result<_, _>>()?)
        }
        fb::ValueKind::SS => {
            let texts = required(value.texts(), &format!("the strings of {path}"))?;
            AttributeValue::Ss(unique_set(texts.iter().map(|text| Ok(text.to_string())), "SS", path)?)
        }
        fb::ValueKind::NS => {
            let texts = required(value.texts(), &format!("the numbers of {path}"))?;
            AttributeValue::Ns(unique_set(texts.iter().map(|text| read_number(Some(text), path)), "NS", path)?)
        }
        fb::ValueKind::BS => {
            let blobs = required(value.blobs(), &format!("the binaries of {path}"))?;
            let values =
                blobs.iter().map(|blob| Ok(required(blob.data(), &format!("a binary of {path}"))?.bytes().to_vec()));
            AttributeValue::Bs(unique_set(values, "BS", path)?)
        }
        other => return Err(invalid(format!("{path} has unknown value kind {}", other.0))),
    })
}

/// A set of type `kind` from its elements, refusing duplicates and emptiness as DynamoDB does.
fn unique_set<T: Ord>(
    elements: impl Iterator<Item = Result<T, WireError>>,
    kind: &str,
    path: &str,
) -> Result<BTreeSet<T>, WireError> {
    let mut set = BTreeSet::new();
    for element in elements {
        if !set.insert(element?) {
            return Err(invalid(format!("the set {path} holds duplicate values")));
        }
    }
    if set.is_empty() {
        return Err(invalid(format!("{path}: {}", empty_set_message(kind))));
    }
    Ok(set)
}

fn read_attributes(
    attributes: Vector<'_, ForwardsUOffset<fb::Attribute<'_>>>,
    path: &str,
    depth: usize,
) -> Result<BTreeMap<String, AttributeValue>, WireError> {
    let mut map = BTreeMap::new();
    for attribute in attributes.iter() {
        let name = attribute.name();
        let inner = if path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
        let value = read_value(attribute.value(), &inner, depth)?;
        if map.insert(name.to_string(), value).is_some() {
            return Err(invalid(format!("attribute {inner} appears twice")));
        }
    }
    Ok(map)
}

fn read_item(item: Option<fb::Item<'_>>, what: &str) -> Result<Item, WireError> {
    let item = required(item, what)?;
    match item.attributes() {
        Some(attributes) => read_attributes(attributes, "", 0),
        None => Ok(Item::new()),
    }
}

fn read_optional_item(item: Option<fb::Item<'_>>, what: &str) -> Result<Option<Item>, WireError> {
    item.map(|item| read_item(Some(item), what)).transpose()
}

fn read_items(items: Option<Vector<'_, ForwardsUOffset<fb::Item<'_>>>>, what: &str) -> Result<Vec<Item>, WireError> {
    items.map_or(Ok(Vec::new()), |items| items.iter().map(|item| read_item(Some(item), what)).collect())
}

fn write_consumed_capacity<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    consumed: &[ConsumedCapacity],
) -> Option<WIPOffset<Vector<'a, ForwardsUOffset<fb::ConsumedCapacity<'a>>>>> {
    if consumed.is_empty() {
        return None;
    }
    let tables: Vec<_> = consumed
        .iter()
        .map(|capacity| {
            let args = fb::ConsumedCapacityArgs {
                table: Some(fbb.create_string(&capacity.table)),
                read_units: capacity.read_units,
                write_units: capacity.write_units,
                table_units: capacity.table_units,
            };
            fb::ConsumedCapacity::create(fbb, &args)
        })
        .collect();
    Some(fbb.create_vector(&tables))
}

fn read_consumed_capacity(
    consumed: Option<Vector<'_, ForwardsUOffset<fb::ConsumedCapacity<'_>>>>,
) -> Vec<ConsumedCapacity> {
    consumed.map_or(Vec::new(), |tables| {
        tables
            .iter()
            .map(|capacity| ConsumedCapacity {
                table: read_string(capacity.table()),
                read_units: capacity.read_units(),
                write_units: capacity.write_units(),
                table_units: capacity.table_units(),
            })
            .collect()
    })
}

/// An error answer's table (an error answer, or the error of an internal RPC's answer).
pub(crate) fn write_error<'a>(fbb: &mut FlatBufferBuilder<'a>, error: &WireError) -> WIPOffset<fb::ErrorResponse<'a>> {
    let message = Some(fbb.create_string(&error.message));
    let item = error.item.as_ref().map(|item| write_item(fbb, item));
    let leader = error.leader.as_deref().map(|leader| fbb.create_string(leader));
    let args = fb::ErrorResponseArgs {
        code: error.code.to_fb(),
        message,
        retryable: error.retryable,
        item,
        leader,
        epoch: error.epoch.unwrap_or(0),
    };
    fb::ErrorResponse::create(fbb, &args)
}

pub(crate) fn read_error(answer: fb::ErrorResponse<'_>) -> Result<WireError, WireError> {
    Ok(WireError {
        code: ErrorCode::from_fb(answer.code()),
        message: read_string(answer.message()),
        retryable: answer.retryable(),
        item: read_optional_item(answer.item(), "the item")?,
        leader: answer.leader().map(str::to_string),
        epoch: Some(answer.epoch()).filter(|_| answer.code() == fb::ErrorCode::WrongPartition),
    })
}

fn read_string(text: Option<&str>) -> String {
    text.unwrap_or_default().to_string()
}

fn read_key_element(key: Option<fb::KeyElement<'_>>, what: &str) -> Result<KeyAttribute, WireError> {
    let key = required(key, what)?;
    let key_type = match key.type_() {
        fb::KeyType::S => KeyType::S,
        fb::KeyType::N => KeyType::N,
        fb::KeyType::B => KeyType::B,
        other => return Err(invalid(format!("{what} has unknown key type {}", other.0))),
    };
    Ok(KeyAttribute { name: key.name().to_string(), key_type })
}

fn read_table_keys(
    tables: Option<Vector<'_, ForwardsUOffset<fb::TableKeys<'_>>>>,
) -> Result<Vec<TableKeys>, WireError> {
    let Some(tables) = tables else { return Ok(Vec::new()) };
    tables
        .iter()
        .map(|keys| {
            Ok(TableKeys {
                table: read_string(keys.table()),
                keys: read_items(keys.keys(), "a key")?,
                consistent_read: keys.consistent_read(),
                read: read_read_expressions(keys.read())?,
            })
        })
        .collect()
}

fn read_writes(writes: Option<Vector<'_, ForwardsUOffset<fb::WriteRequest<'_>>>>) -> Result<Vec<Write>, WireError> {
    let Some(writes) = writes else { return Ok(Vec::new()) };
    writes
        .iter()
        .map(|write| {
            let table = read_string(write.table());
            match (write.put(), write.delete()) {
                (Some(item), None) => Ok(Write::Put { table, item: read_item(Some(item), "the item to put")? }),
                (None, Some(key)) => Ok(Write::Delete { table, key: read_item(Some(key), "the key to delete")? }),
                _ => Err(invalid("a write request must hold exactly one of put and delete")),
            }
        })
        .collect()
}

// ------------------------------------------------------------------ requests

impl Request {
    /// The message type this request travels as.
    pub fn message_type(&self) -> MessageType {
        match self {
            Request::CreateTable { .. } => MessageType::CreateTable,
            Request::DeleteTable { .. } => MessageType::DeleteTable,
            Request::DescribeTable { .. } => MessageType::DescribeTable,
            Request::ListTables { .. } => MessageType::ListTables,
            Request::PutItem { .. } => MessageType::PutItem,
            Request::GetItem { .. } => MessageType::GetItem,
            Request::DeleteItem { .. } => MessageType::DeleteItem,
            Request::UpdateItem(_) => MessageType::UpdateItem,
            Request::Query(_) => MessageType::Query,
            Request::Scan(_) => MessageType::Scan,
            Request::BatchGetItem(_) => MessageType::BatchGetItem,
            Request::BatchWriteItem(_) => MessageType::BatchWriteItem,
            Request::Hello => MessageType::Hello,
            Request::DescribeReplicas => MessageType::DescribeReplicas,
            Request::ChangeMembers { .. } => MessageType::ChangeMembers,
            Request::RetireReplica { .. } => MessageType::RetireReplica,
            Request::Authenticate { .. } => MessageType::Authenticate,
            Request::TagResource { .. } => MessageType::TagResource,
            Request::UntagResource { .. } => MessageType::UntagResource,
            Request::ListTagsOfResource { .. } => MessageType::ListTagsOfResource,
        }
    }

    /// The DynamoDB name of the operation.
    pub fn operation(&self) -> &'static str {
        match self.message_type() {
            MessageType::CreateTable => "CreateTable",
            MessageType::DeleteTable => "DeleteTable",
            MessageType::DescribeTable => "DescribeTable",
            MessageType::ListTables => "ListTables",
            MessageType::PutItem => "PutItem",
            MessageType::GetItem => "GetItem",
            MessageType::DeleteItem => "DeleteItem",
            MessageType::Query => "Query",
            MessageType::Scan => "Scan",
            MessageType::BatchGetItem => "BatchGetItem",
            MessageType::Hello => "Hello",
            MessageType::DescribeReplicas => "DescribeReplicas",
            MessageType::ChangeMembers => "ChangeMembers",
            MessageType::RetireReplica => "RetireReplica",
            MessageType::Authenticate => "Authenticate",
            MessageType::TagResource => "TagResource",
            MessageType::UntagResource => "UntagResource",
            MessageType::ListTagsOfResource => "ListTagsOfResource",
            _ => "BatchWriteItem",
        }
    }

    /// Appends this request as a whole frame to `out`.
    pub fn encode(&self, request_id: u64, out: &mut Vec<u8>) {
        self.encode_with_flags(request_id, RequestFlags::default(), out);
    }

    /// Appends this request as a whole frame to `out`, with `flags` (the capacity it asks to
    /// hear of, whether a node forwarded it).
    pub fn encode_with_flags(&self, request_id: u64, flags: RequestFlags, out: &mut Vec<u8>) {
        let mut fbb = FlatBufferBuilder::with_capacity(256);
        match self {
            Request::CreateTable { table, key_schema, partitions, throughput, tags, ranges } => {
                let table = Some(fbb.create_string(table));
                let ranges: Vec<_> = ranges.iter().map(|range| fb::RangeSpec::new(range.start, range.core)).collect();
                let ranges = (!ranges.is_empty()).then(|| fbb.create_vector(&ranges));
                let partition_key = Some(write_key_element(&mut fbb, &key_schema.partition));
                let sort_key = key_schema.sort.as_ref().map(|sort| write_key_element(&mut fbb, sort));
                let tags = Some(write_tags(&mut fbb, tags));
                let (read_units, write_units) =
                    throughput.map_or((0, 0), |units| (units.read_units, units.write_units));
                let args = fb::CreateTableRequestArgs {
                    table,
                    partition_key,
                    sort_key,
                    partitions: *partitions,
                    read_units,
                    write_units,
                    tags,
                    ranges,
                };
                let root = fb::CreateTableRequest::create(&mut fbb, &args);
                fbb.finish_minimal(root);
            }
            Request::TagResource { table, tags } => {
                let table = Some(fbb.create_string(table));
                let tags = Some(write_tags(&mut fbb, tags));
                let root = fb::TagResourceRequest::create(&mut fbb, &fb::TagResourceRequestArgs { table, tags });
                fbb.finish_minimal(root);
            }
            Request::UntagResource { table, keys } => {
                let table = Some(fbb.create_string(table));
                let keys: Vec<_> = keys.iter().map(|key| fbb.create_string(key)).collect();
                let keys = Some(fbb.create_vector(&keys));
                let root = fb::UntagResourceRequest::create(&mut fbb, &fb::UntagResourceRequestArgs { table, keys });
                fbb.finish_minimal(root);
            }
            Request::ListTagsOfResource { table } => {
                let table = Some(fbb.create_string(table));
                let root =
                    fb::ListTagsOfResourceRequest::create(&mut fbb, &fb::ListTagsOfResourceRequestArgs { table });
                fbb.finish_minimal(root);
            }
            Request::DeleteTable { table } => {
                let table = Some(fbb.create_string(table));
                let root = fb::DeleteTableRequest::create(&mut fbb, &fb::DeleteTableRequestArgs { table });
                fbb.finish_minimal(root);
            }
            Request::DescribeTable { table, counts } => {
                let table = Some(fbb.create_string(table));
                let args = fb::DescribeTableRequestArgs { table, without_counts: !counts };
                let root = fb::DescribeTableRequest::create(&mut fbb, &args);
                fbb.finish_minimal(root);
            }
            Request::ListTables { exclusive_start_table, limit } => {
                let exclusive_start_table = exclusive_start_table.as_deref().map(|table| fbb.create_string(table));
                let root = fb::ListTablesRequest::create(
                    &mut fbb,
                    &fb::ListTablesRequestArgs { exclusive_start_table, limit: *limit },
                );
                fbb.finish_minimal(root);
            }
            Request::PutItem { table, item, return_old, expressions, return_old_on_failure } => {
                let table = Some(fbb.create_string(table));
                let item = Some(write_item(&mut fbb, item));
                let expressions = Some(write_expressions(&mut fbb, expressions));
                let args = fb::PutItemRequestArgs {
                    table,
                    item,
                    return_old: *return_old,
                    expressions,
                    return_old_on_failure: *return_old_on_failure,
                };
                let root = fb::PutItemRequest::create(&mut fbb, &args);
                fbb.finish_minimal(root);
            }
            Request::GetItem { table, key, consistent_read, read } => {
                let table = Some(fbb.create_string(table));
                let key = Some(write_item(&mut fbb, key));
                let read = Some(write_read_expressions(&mut fbb, read));
                let args = fb::GetItemRequestArgs { table, key, consistent_read: *consistent_read, read };
                let root = fb::GetItemRequest::create(&mut fbb, &args);
                fbb.finish_minimal(root);
            }
            Request::DeleteItem { table, key, return_old, expressions, return_old_on_failure } => {
                let table = Some(fbb.create_string(table));
                let key = Some(write_item(&mut fbb, key));
                let expressions = Some(write_expressions(&mut fbb, expressions));
                let args = fb::DeleteItemRequestArgs {
                    table,
                    key,
                    return_old: *return_old,
                    expressions,
                    return_old_on_failure: *return_old_on_failure,
                };
                let root = fb::DeleteItemRequest::create(&mut fbb, &args);
                fbb.finish_minimal(root);
            }
            Request::UpdateItem(request) => {
                let table = Some(fbb.create_string(&request.table));
                let key = Some(write_item(&mut fbb, &request.key));
                let update = Some(fbb.create_string(&request.update));
                let expressions = Some(write_expressions(&mut fbb, &request.expressions));
                let return_values = match request.return_values {
                    ReturnValues::None => fb::ReturnValues::NONE,
                    ReturnValues::AllOld => fb::ReturnValues::ALL_OLD,
                    ReturnValues::UpdatedOld => fb::ReturnValues::UPDATED_OLD,
                    ReturnValues::AllNew => fb::ReturnValues::ALL_NEW,
                    ReturnValues::UpdatedNew => fb::ReturnValues::UPDATED_NEW,
                };
                let args = fb::UpdateItemRequestArgs {
                    table,
                    key,
                    update,
                    expressions,
                    return_values,
                    return_old_on_failure: request.return_old_on_failure,
                };
                let root = fb::UpdateItemRequest::create(&mut fbb, &args);
                fbb.finish_minimal(root);
            }
            Request::Query(query) => {
                let table = Some(fbb.create_string(&query.table));
                let partition_key = Some(write_value(&mut fbb, &query.partition_key));
                let (sort_condition, low, high) = match &query.sort {
                    None => (fb::SortCondition::NONE, None, None),
                    Some(SortCondition::Eq(value)) => (fb::SortCondition::EQ, Some(value), None),
                    Some(SortCondition::Lt(value)) => (fb::SortCondition::LT, Some(value), None),
                    Some(SortCondition::Le(value)) => (fb::SortCondition::LE, Some(value), None),
                    Some(SortCondition::Gt(value)) => (fb::SortCondition::GT, Some(value), None),
                    Some(SortCondition::Ge(value)) => (fb::SortCondition::GE, Some(value), None),
                    Some(SortCondition::Between(low, high)) => (fb::SortCondition::BETWEEN, Some(low), Some(high)),
                    Some(SortCondition::BeginsWith(value)) => (fb::SortCondition::BEGINS_WITH, Some(value), None),
                };
                let sort_value = low.map(|value| write_value(&mut fbb, value));
                let sort_value_high = high.map(|value| write_value(&mut fbb, value));
                let exclusive_start_key = query.exclusive_start_key.as_ref().map(|key| write_item(&mut fbb, key));
                let read = Some(write_read_expressions(&mut fbb, &query.read));
                let args = fb::QueryRequestArgs {
                    table,
                    partition_key,
                    sort_condition,
                    sort_value,
                    sort_value_high,
                    backward: query.backward,
                    limit: query.limit,
                    exclusive_start_key,
                    consistent_read: query.consistent_read,
                    read,
                };
                let root = fb::QueryRequest::create(&mut fbb, &args);
                fbb.finish_minimal(root);
            }
            Request::Scan(scan) => {
                let table = Some(fbb.create_string(&scan.table));
                let exclusive_start_key = scan.exclusive_start_key.as_ref().map(|key| write_item(&mut fbb, key));
                let read = Some(write_read_expressions(&mut fbb, &scan.read));
                let args = fb::ScanRequestArgs {
                    table,
                    segment: scan.segment,
                    total_segments: scan.total_segments,
                    limit: scan.limit,
                    exclusive_start_key,
                    consistent_read: scan.consistent_read,
                    read,
                };
                let root = fb::ScanRequest::create(&mut fbb, &args);
                fbb.finish_minimal(root);
            }
            Request::BatchGetItem(tables) => {
                let tables = Some(write_table_keys(&mut fbb, tables));
                let root = fb::BatchGetItemRequest::create(&mut fbb, &fb::BatchGetItemRequestArgs { tables });
                fbb.finish_minimal(root);
            }
            Request::BatchWriteItem(writes) => {
                let writes = Some(write_writes(&mut fbb, writes));
                let root = fb::BatchWriteItemRequest::create(&mut fbb, &fb::BatchWriteItemRequestArgs { writes });
                fbb.finish_minimal(root);
            }
            Request::Hello => {
                let root = fb::HelloRequest::create(&mut fbb, &fb::HelloRequestArgs {});
                fbb.finish_minimal(root);
            }
            Request::Authenticate { key_id, timestamp_ms, nonce, signature } => {
                let args = fb::AuthenticateRequestArgs {
                    key_id: Some(fbb.create_string(key_id)),
                    timestamp_ms: *timestamp_ms,
                    nonce: Some(fbb.create_vector(nonce)),
                    signature: Some(fbb.create_vector(signature)),
                };
                let root = fb::AuthenticateRequest::create(&mut fbb, &args);
                fbb.finish_minimal(root);
            }
            Request::DescribeReplicas => {
                let root = fb::DescribeReplicasRequest::create(&mut fbb, &fb::DescribeReplicasRequestArgs {});
                fbb.finish_minimal(root);
            }
            Request::ChangeMembers { partition, members } => {
                let members = Some(write_members(&mut fbb, members));
                let args = fb::ChangeMembersRequestArgs { partition: *partition, members };
                let root = fb::ChangeMembersRequest::create(&mut fbb, &args);
                fbb.finish_minimal(root);
            }
            Request::RetireReplica { partition } => {
                let args = fb::RetireReplicaRequestArgs { partition: *partition };
                let root = fb::RetireReplicaRequest::create(&mut fbb, &args);
                fbb.finish_minimal(root);
            }
        }
        frame::encode(request_id, self.message_type(), flags.bits(), fbb.finished_data(), out);
    }

    /// Decodes the payload of a frame of type `message_type`.
    pub fn decode(message_type: u16, payload: &[u8]) -> Result<Request, WireError> {
        let kind = MessageType::from_u16(message_type).filter(|kind| (*kind as u16) < 0x4000).ok_or_else(|| {
            WireError::new(ErrorCode::UnknownMessageType, format!("message type {message_type} is not a request"))
        })?;
        Ok(match kind {
            MessageType::CreateTable => {
                let request = root::<fb::CreateTableRequest>(payload, "CreateTable")?;
                let partition = read_key_element(request.partition_key(), "the partition key")?;
                let sort = request.sort_key().map(|sort| read_key_element(Some(sort), "the sort key")).transpose()?;
                Request::CreateTable {
                    table: read_string(request.table()),
                    key_schema: KeySchema { partition, sort },
                    partitions: request.partitions(),
                    throughput: read_throughput(request.read_units(), request.write_units())?,
                    tags: read_tags(request.tags()),
                    ranges: request
                        .ranges()
                        .into_iter()
                        .flatten()
                        .map(|range| RangeSpec { start: range.start(), core: range.core() })
                        .collect(),
                }
            }
            MessageType::TagResource => {
                let request = root::<fb::TagResourceRequest>(payload, "TagResource")?;
                Request::TagResource { table: read_string(request.table()), tags: read_tags(request.tags()) }
            }
            MessageType::UntagResource => {
                let request = root::<fb::UntagResourceRequest>(payload, "UntagResource")?;
                Request::UntagResource {
                    table: read_string(request.table()),
                    keys: request.keys().map_or(Vec::new(), |keys| keys.iter().map(str::to_string).collect()),
                }
            }
            MessageType::ListTagsOfResource => Request::ListTagsOfResource {
                table: read_string(root::<fb::ListTagsOfResourceRequest>(payload, "ListTagsOfResource")?.table()),
            },
            MessageType::Hello => {
                root::<fb::HelloRequest>(payload, "Hello")?;
                Request::Hello
            }
            MessageType::Authenticate => {
                let request = root::<fb::AuthenticateRequest>(payload, "Authenticate")?;
                Request::Authenticate {
                    key_id: read_string(request.key_id()),
                    timestamp_ms: request.timestamp_ms(),
                    nonce: request.nonce().map(|bytes| bytes.bytes().to_vec()).unwrap_or_default(),
                    signature: request.signature().map(|bytes| bytes.bytes().to_vec()).unwrap_or_default(),
                }
            }
            MessageType::DescribeReplicas => {
                root::<fb::DescribeReplicasRequest>(payload, "DescribeReplicas")?;
                Request::DescribeReplicas
            }
            MessageType::ChangeMembers => {
                let request = root::<fb::ChangeMembersRequest>(payload, "ChangeMembers")?;
                Request::ChangeMembers {
                    partition: request.partition(),
                    members: read_members(request.members(), "the members")?,
                }
            }
            MessageType::RetireReplica => {
                let request = root::<fb::RetireReplicaRequest>(payload, "RetireReplica")?;
                Request::RetireReplica { partition: request.partition() }
            }
            MessageType::DeleteTable => Request::DeleteTable {
                table: read_string(root::<fb::DeleteTableRequest>(payload, "DeleteTable")?.table()),
            },
            MessageType::DescribeTable => {
                let request = root::<fb::DescribeTableRequest>(payload, "DescribeTable")?;
                Request::DescribeTable { table: read_string(request.table()), counts: !request.without_counts() }
            }
            MessageType::ListTables => {
                let request = root::<fb::ListTablesRequest>(payload, "ListTables")?;
                Request::ListTables {
                    exclusive_start_table: request.exclusive_start_table().map(str::to_string),
                    limit: request.limit(),
                }
            }
            MessageType::PutItem => {
                let request = root::<fb::PutItemRequest>(payload, "PutItem")?;
                Request::PutItem {
                    table: read_string(request.table()),
                    item: read_item(request.item(), "the item")?,
                    return_old: request.return_old(),
                    expressions: read_expressions(request.expressions())?,
                    return_old_on_failure: request.return_old_on_failure(),
                }
            }
            MessageType::GetItem => {
                let request = root::<fb::GetItemRequest>(payload, "GetItem")?;
                Request::GetItem {
                    table: read_string(request.table()),
                    key: read_item(request.key(), "the key")?,
                    consistent_read: request.consistent_read(),
                    read: read_read_expressions(request.read())?,
                }
            }
            MessageType::DeleteItem => {
                let request = root::<fb::DeleteItemRequest>(payload, "DeleteItem")?;
                Request::DeleteItem {
                    table: read_string(request.table()),
                    key: read_item(request.key(), "the key")?,
                    return_old: request.return_old(),
                    expressions: read_expressions(request.expressions())?,
                    return_old_on_failure: request.return_old_on_failure(),
                }
            }
            MessageType::UpdateItem => {
                let request = root::<fb::UpdateItemRequest>(payload, "UpdateItem")?;
                let return_values = match request.return_values() {
                    fb::ReturnValues::NONE => ReturnValues::None,
                    fb::ReturnValues::ALL_OLD => ReturnValues::AllOld,
                    fb::ReturnValues::UPDATED_OLD => ReturnValues::UpdatedOld,
                    fb::ReturnValues::ALL_NEW => ReturnValues::AllNew,
                    fb::ReturnValues::UPDATED_NEW => ReturnValues::UpdatedNew,
                    other => return Err(invalid(format!("unknown ReturnValues {}", other.0))),
                };
                Request::UpdateItem(UpdateItem {
                    table: read_string(request.table()),
                    key: read_item(request.key(), "the key")?,
                    update: read_string(request.update()),
                    expressions: read_expressions(request.expressions())?,
                    return_values,
                    return_old_on_failure: request.return_old_on_failure(),
                })
            }
            MessageType::Query => {
                let request = root::<fb::QueryRequest>(payload, "Query")?;
                let value = |value: Option<fb::Value<'_>>, what: &str| read_value(required(value, what)?, what, 0);
                let low = || value(request.sort_value(), "the sort key value");
                let sort = match request.sort_condition() {
                    fb::SortCondition::NONE => None,
                    fb::SortCondition::EQ => Some(SortCondition::Eq(low()?)),
                    fb::SortCondition::LT => Some(SortCondition::Lt(low()?)),
                    fb::SortCondition::LE => Some(SortCondition::Le(low()?)),
                    fb::SortCondition::GT => Some(SortCondition::Gt(low()?)),
                    fb::SortCondition::GE => Some(SortCondition::Ge(low()?)),
                    fb::SortCondition::BETWEEN => Some(SortCondition::Between(
                        low()?,
                        value(request.sort_value_high(), "the upper sort key value of BETWEEN")?,
                    )),
                    fb::SortCondition::BEGINS_WITH => Some(SortCondition::BeginsWith(low()?)),
                    other => return Err(invalid(format!("unknown sort key condition {}", other.0))),
                };
                Request::Query(Query {
                    table: read_string(request.table()),
                    partition_key: value(request.partition_key(), "the partition key value")?,
                    sort,
                    backward: request.backward(),
                    limit: request.limit(),
                    exclusive_start_key: read_optional_item(request.exclusive_start_key(), "the exclusive start key")?,
                    consistent_read: request.consistent_read(),
                    read: read_read_expressions(request.read())?,
                })
            }
            MessageType::Scan => {
                let request = root::<fb::ScanRequest>(payload, "Scan")?;
                Request::Scan(Scan {
                    table: read_string(request.table()),
                    segment: request.segment(),
                    total_segments: request.total_segments(),
                    limit: request.limit(),
                    exclusive_start_key: read_optional_item(request.exclusive_start_key(), "the exclusive start key")?,
                    consistent_read: request.consistent_read(),
                    read: read_read_expressions(request.read())?,
                })
            }
            MessageType::BatchGetItem => Request::BatchGetItem(read_table_keys(
                root::<fb::BatchGetItemRequest>(payload, "BatchGetItem")?.tables(),
            )?),
            _ => Request::BatchWriteItem(read_writes(
                root::<fb::BatchWriteItemRequest>(payload, "BatchWriteItem")?.writes(),
            )?),
        })
    }
}

// ------------------------------------------------------------------ responses

fn write_table_description<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    table: &TableDescription,
) -> WIPOffset<fb::TableDescription<'a>> {
    let name = Some(fbb.create_string(&table.name));
    let partition_key = Some(write_key_element(fbb, &table.key_schema.partition));
    let sort_key = table.key_schema.sort.as_ref().map(|sort| write_key_element(fbb, sort));
    let status = match table.status {
        TableStatus::Creating => fb::TableStatus::CREATING,
        TableStatus::Active => fb::TableStatus::ACTIVE,
        TableStatus::Deleting => fb::TableStatus::DELETING,
    };
    let (read_units, write_units) = table.throughput.map_or((0, 0), |units| (units.read_units, units.write_units));
    let map = table.map.as_ref().map(|map| {
        let ranges: Vec<_> = map
            .ranges
            .iter()
            .map(|range| fb::PartitionRange::new(range.start, range.partition, range.leader, range.core))
            .collect();
        let ranges = Some(fbb.create_vector(&ranges));
        fb::PartitionMap::create(fbb, &fb::PartitionMapArgs { epoch: map.epoch, ranges })
    });
    fb::TableDescription::create(
        fbb,
        &fb::TableDescriptionArgs {
            read_units,
            write_units,
            name,
            partition_key,
            sort_key,
            partitions: table.partitions,
            status,
            created_at_ms: table.created_at_ms,
            item_count: table.item_count,
            size_bytes: table.size_bytes,
            map,
        },
    )
}

fn read_table_description(table: fb::TableDescription<'_>) -> Result<TableDescription, WireError> {
    let partition = read_key_element(Some(table.partition_key()), "the partition key")?;
    let sort = table.sort_key().map(|sort| read_key_element(Some(sort), "the sort key")).transpose()?;
    let status = match table.status() {
        fb::TableStatus::CREATING => TableStatus::Creating,
        fb::TableStatus::ACTIVE => TableStatus::Active,
        fb::TableStatus::DELETING => TableStatus::Deleting,
        other => return Err(invalid(format!("unknown table status {}", other.0))),
    };
    Ok(TableDescription {
        name: table.name().to_string(),
        key_schema: KeySchema { partition, sort },
        partitions: table.partitions(),
        status,
        created_at_ms: table.created_at_ms(),
        item_count: table.item_count(),
        size_bytes: table.size_bytes(),
        throughput: read_throughput(table.read_units(), table.write_units())?,
        map: table.map().map(read_partition_map).transpose()?,
    })
}

/// A partition map as a client routes by it: ranges from hash 0, their starts increasing.
fn read_partition_map(map: fb::PartitionMap<'_>) -> Result<PartitionMap, WireError> {
    let ranges: Vec<PartitionRange> = map
        .ranges()
        .into_iter()
        .flatten()
        .map(|range| PartitionRange {
            start: range.start(),
            partition: range.partition(),
            core: range.core(),
            leader: range.leader(),
        })
        .collect();
    if ranges.first().is_none_or(|first| first.start != 0) {
        return Err(invalid("a partition map whose first range does not start at hash 0"));
    }
    if ranges.windows(2).any(|pair| pair[0].start >= pair[1].start) {
        return Err(invalid("a partition map whose range starts do not increase"));
    }
    Ok(PartitionMap { epoch: map.epoch(), ranges })
}

fn write_tags<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    tags: &[(String, String)],
) -> WIPOffset<Vector<'a, ForwardsUOffset<fb::Tag<'a>>>> {
    let tags: Vec<_> = tags
        .iter()
        .map(|(key, value)| {
            let args = fb::TagArgs { key: Some(fbb.create_string(key)), value: Some(fbb.create_string(value)) };
            fb::Tag::create(fbb, &args)
        })
        .collect();
    fbb.create_vector(&tags)
}

fn read_tags(tags: Option<Vector<'_, ForwardsUOffset<fb::Tag<'_>>>>) -> Tags {
    tags.map_or(Vec::new(), |tags| tags.iter().map(|tag| (tag.key().to_string(), tag.value().to_string())).collect())
}

/// Provisioned throughput from its two units: both 0 is PAY_PER_REQUEST, one alone is refused.
fn read_throughput(read_units: u64, write_units: u64) -> Result<Option<Throughput>, WireError> {
    match (read_units, write_units) {
        (0, 0) => Ok(None),
        (0, _) | (_, 0) => Err(invalid("provisioned throughput needs both read and write units")),
        (read_units, write_units) => Ok(Some(Throughput { read_units, write_units })),
    }
}

impl Response {
    /// The message type this answer travels as.
    pub fn message_type(&self) -> MessageType {
        match self {
            Response::Hello { .. } => MessageType::HelloResponse,
            Response::Table(_) => MessageType::TableResponse,
            Response::ListTables { .. } => MessageType::ListTablesResponse,
            Response::Item(_) => MessageType::ItemResponse,
            Response::Items { .. } => MessageType::ItemsResponse,
            Response::BatchGetItem { .. } => MessageType::BatchGetItemResponse,
            Response::BatchWriteItem { .. } => MessageType::BatchWriteItemResponse,
            Response::Replicas { .. } => MessageType::ReplicasResponse,
            Response::Admin { .. } => MessageType::AdminResponse,
            Response::Tags(_) => MessageType::TagsResponse,
            Response::Error(_) => MessageType::Error,
        }
    }

    /// Appends this answer as a whole frame to `out`.
    pub fn encode(&self, request_id: u64, out: &mut Vec<u8>) {
        self.encode_with_capacity(request_id, &[], out);
    }

    /// Appends this answer and the capacity its request consumed as a whole frame to `out`
    /// (answers to item operations carry it; others have no room for it and drop it).
    pub fn encode_with_capacity(&self, request_id: u64, consumed: &[ConsumedCapacity], out: &mut Vec<u8>) {
        let mut fbb = FlatBufferBuilder::with_capacity(256);
        let consumed_capacity = write_consumed_capacity(&mut fbb, consumed);
        match self {
            Response::Hello { core, cores } => {
                let args = fb::HelloResponseArgs { core: *core, cores: *cores };
                let root = fb::HelloResponse::create(&mut fbb, &args);
                fbb.finish_minimal(root);
            }
            Response::Table(table) => {
                let table = Some(write_table_description(&mut fbb, table));
                let root = fb::TableResponse::create(&mut fbb, &fb::TableResponseArgs { table });
                fbb.finish_minimal(root);
            }
            Response::ListTables { tables, last_evaluated_table } => {
                let names: Vec<_> = tables.iter().map(|table| fbb.create_string(table)).collect();
                let tables = Some(fbb.create_vector(&names));
                let last_evaluated_table = last_evaluated_table.as_deref().map(|table| fbb.create_string(table));
                let args = fb::ListTablesResponseArgs { tables, last_evaluated_table };
                let root = fb::ListTablesResponse::create(&mut fbb, &args);
                fbb.finish_minimal(root);
            }
            Response::Item(item) => {
                let item = item.as_ref().map(|item| write_item(&mut fbb, item));
                let root = fb::ItemResponse::create(&mut fbb, &fb::ItemResponseArgs { item, consumed_capacity });
                fbb.finish_minimal(root);
            }
            Response::Items { items, scanned_count, count, last_evaluated_key } => {
                let items = Some(write_items(&mut fbb, items));
                let last_evaluated_key = last_evaluated_key.as_ref().map(|key| write_item(&mut fbb, key));
                let args = fb::ItemsResponseArgs {
                    items,
                    scanned_count: *scanned_count,
                    last_evaluated_key,
                    count: *count,
                    consumed_capacity,
                };
                let root = fb::ItemsResponse::create(&mut fbb, &args);
                fbb.finish_minimal(root);
            }
            Response::BatchGetItem { responses, unprocessed } => {
                let tables: Vec<_> = responses
                    .iter()
                    .map(|(table, items)| {
                        let table = Some(fbb.create_string(table));
                        let items = Some(write_items(&mut fbb, items));
                        fb::TableItems::create(&mut fbb, &fb::TableItemsArgs { table, items })
                    })
                    .collect();
                let responses = Some(fbb.create_vector(&tables));
                let unprocessed = Some(write_table_keys(&mut fbb, unprocessed));
                let args = fb::BatchGetItemResponseArgs { responses, unprocessed, consumed_capacity };
                let root = fb::BatchGetItemResponse::create(&mut fbb, &args);
                fbb.finish_minimal(root);
            }
            Response::BatchWriteItem { unprocessed } => {
                let unprocessed = Some(write_writes(&mut fbb, unprocessed));
                let args = fb::BatchWriteItemResponseArgs { unprocessed, consumed_capacity };
                let root = fb::BatchWriteItemResponse::create(&mut fbb, &args);
                fbb.finish_minimal(root);
            }
            Response::Replicas { node, replicas } => {
                let replicas: Vec<_> = replicas
                    .iter()
                    .map(|replica| {
                        let members = Some(write_members(&mut fbb, &replica.members));
                        let args = fb::ReplicaStatusArgs {
                            partition: replica.partition,
                            leader: replica.leader.unwrap_or(0),
                            leading: replica.leading,
                            members,
                            members_committed: replica.members_committed,
                            commit: replica.commit,
                            applied: replica.applied,
                        };
                        fb::ReplicaStatus::create(&mut fbb, &args)
                    })
                    .collect();
                let replicas = Some(fbb.create_vector(&replicas));
                let root = fb::ReplicasResponse::create(&mut fbb, &fb::ReplicasResponseArgs { node: *node, replicas });
                fbb.finish_minimal(root);
            }
            Response::Admin { slot } => {
                let root = fb::AdminResponse::create(&mut fbb, &fb::AdminResponseArgs { slot: *slot });
                fbb.finish_minimal(root);
            }
            Response::Tags(tags) => {
                let tags = Some(write_tags(&mut fbb, tags));
                let root = fb::TagsResponse::create(&mut fbb, &fb::TagsResponseArgs { tags });
                fbb.finish_minimal(root);
            }
            Response::Error(error) => {
                let root = write_error(&mut fbb, error);
                fbb.finish_minimal(root);
            }
        }
        frame::encode(request_id, self.message_type(), 0, fbb.finished_data(), out);
    }

    /// Decodes the payload of a frame of type `message_type`.
    pub fn decode(message_type: u16, payload: &[u8]) -> Result<Response, WireError> {
        Response::decode_with_capacity(message_type, payload).map(|(response, _)| response)
    }

    /// Decodes the payload of a frame of type `message_type`, and the capacity it reports.
    pub fn decode_with_capacity(
        message_type: u16,
        payload: &[u8],
    ) -> Result<(Response, Vec<ConsumedCapacity>), WireError> {
        let mut consumed = Vec::new();
        let kind = MessageType::from_u16(message_type)
            .filter(|kind| (*kind as u16) >= 0x8000 && *kind != MessageType::PartitionAnswer)
            .ok_or_else(|| {
                WireError::new(ErrorCode::UnknownMessageType, format!("message type {message_type} is not an answer"))
            })?;
        let response = match kind {
            MessageType::HelloResponse => {
                let answer = root::<fb::HelloResponse>(payload, "Hello answer")?;
                Response::Hello { core: answer.core(), cores: answer.cores() }
            }
            MessageType::TableResponse => {
                Response::Table(read_table_description(root::<fb::TableResponse>(payload, "table answer")?.table())?)
            }
            MessageType::ListTablesResponse => {
                let answer = root::<fb::ListTablesResponse>(payload, "ListTables answer")?;
                Response::ListTables {
                    tables: answer.tables().map_or(Vec::new(), |tables| tables.iter().map(str::to_string).collect()),
                    last_evaluated_table: answer.last_evaluated_table().map(str::to_string),
                }
            }
            MessageType::ItemResponse => {
                let answer = root::<fb::ItemResponse>(payload, "item answer")?;
                consumed = read_consumed_capacity(answer.consumed_capacity());
                Response::Item(read_optional_item(answer.item(), "the item")?)
            }
            MessageType::ItemsResponse => {
                let answer = root::<fb::ItemsResponse>(payload, "items answer")?;
                consumed = read_consumed_capacity(answer.consumed_capacity());
                Response::Items {
                    items: read_items(answer.items(), "an item")?,
                    scanned_count: answer.scanned_count(),
                    count: answer.count(),
                    last_evaluated_key: read_optional_item(answer.last_evaluated_key(), "the last evaluated key")?,
                }
            }
            MessageType::BatchGetItemResponse => {
                let answer = root::<fb::BatchGetItemResponse>(payload, "BatchGetItem answer")?;
                consumed = read_consumed_capacity(answer.consumed_capacity());
                let responses = answer.responses().map_or(Ok(Vec::new()), |tables| {
                    tables
                        .iter()
                        .map(|table| Ok((read_string(table.table()), read_items(table.items(), "an item")?)))
                        .collect::<Result<_, WireError>>()
                })?;
                Response::BatchGetItem { responses, unprocessed: read_table_keys(answer.unprocessed())? }
            }
            MessageType::BatchWriteItemResponse => {
                let answer = root::<fb::BatchWriteItemResponse>(payload, "BatchWriteItem answer")?;
                consumed = read_consumed_capacity(answer.consumed_capacity());
                Response::BatchWriteItem { unprocessed: read_writes(answer.unprocessed())? }
            }
            MessageType::ReplicasResponse => {
                let answer = root::<fb::ReplicasResponse>(payload, "DescribeReplicas answer")?;
                let replicas = answer.replicas().map_or(Ok(Vec::new()), |replicas| {
                    replicas
                        .iter()
                        .map(|replica| {
                            Ok(ReplicaStatus {
                                partition: replica.partition(),
                                leader: Some(replica.leader()).filter(|&leader| leader != 0),
                                leading: replica.leading(),
                                members: read_members(replica.members(), "a replica's members")?,
                                members_committed: replica.members_committed(),
                                commit: replica.commit(),
                                applied: replica.applied(),
                            })
                        })
                        .collect::<Result<_, WireError>>()
                })?;
                Response::Replicas { node: answer.node(), replicas }
            }
            MessageType::AdminResponse => {
                Response::Admin { slot: root::<fb::AdminResponse>(payload, "administrative answer")?.slot() }
            }
            MessageType::TagsResponse => {
                Response::Tags(read_tags(root::<fb::TagsResponse>(payload, "tags answer")?.tags()))
            }
            _ => Response::Error(read_error(root::<fb::ErrorResponse>(payload, "error answer")?)?),
        };
        Ok((response, consumed))
    }
}
