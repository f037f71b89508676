//! One core's share of the server: its store, its copy of the catalog, and the operations.
//!
//! A request is coordinated by the core whose connection received it. Each partition lives on
//! exactly one core; work on a partition is an `Op` run by that core, called directly when it
//! is local and sent over the glommio channel mesh otherwise. No data is shared between cores
//! and nothing on the data path takes a lock. The catalog is owned by core 0 (stored in its
//! store, partition 0); every change is made there and copied to every core before the
//! request that made it is answered.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::ops::Bound;
use std::rc::Rc;
use std::time::Duration;

use glommio::channels::channel_mesh::{Receivers, Senders};
use tessera_engine::expr::{self, Condition, KeyCondition, Path, Placeholders, Update};
use tessera_engine::paxos::Member;
use tessera_engine::{
    capacity, decode_item, encode_item, item_size, validate_item, yield_to_reactor, AttributeValue, Command,
    ConditionalWrite, Error, Item, ItemMeta, KeySchema, KeyType, Outcome, PartitionId, ReplicationLog,
};
use tessera_wire::{
    ConsumedCapacity, ErrorCode, Expressions, Query, ReadExpressions, ReplicaStatus, Request, RequestFlags, Response,
    ReturnConsumedCapacity, Scan, Select, SortCondition, TableKeys, Tags, Throughput, UpdateItem, WireError, Write,
};

use crate::auth::Access;
use crate::catalog::{
    index_of, key_hash, owner_core, range_start, retag, validate_table_name, validate_throughput, Catalog, TableInfo,
    CATALOG_PARTITION, NEXT_ID_KEY, PARTITIONS_MAX,
};
use crate::client::{AsyncClient, ClientConfig};
use crate::local::Pending;
use crate::log::Log;
use crate::messages;

/// A page of Query or Scan results ends once it holds this many bytes of items.
pub const PAGE_BYTES_MAX: usize = 1 << 20;
/// Most keys one BatchGetItem may ask for.
pub const BATCH_GET_MAX: usize = 100;
/// Most writes one BatchWriteItem may carry.
pub const BATCH_WRITE_MAX: usize = 25;
/// Most table names one ListTables returns.
const LIST_TABLES_MAX: u32 = 100;
/// Entries read from the tree at a time while filling a page.
const SCAN_CHUNK: usize = 128;

/// Work on one core's partitions (or its catalog copy).
pub(crate) enum Op {
    Put {
        partition: PartitionId,
        key: Vec<u8>,
        value: Vec<u8>,
        return_old: bool,
    },
    Delete {
        partition: PartitionId,
        key: Vec<u8>,
        return_old: bool,
    },
    /// `consistent`: a strongly consistent read (a replicated partition serves it only where
    /// it leads with a lease).
    Get {
        partition: PartitionId,
        key: Vec<u8>,
        consistent: bool,
    },
    /// A conditional put, delete or update, checked and written by one log record.
    Conditional {
        partition: PartitionId,
        command: Command,
    },
    /// Entries within the bounds, until `limit` entries or `bytes_max` bytes of values.
    Scan {
        partition: PartitionId,
        consistent: bool,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
        limit: usize,
        bytes_max: usize,
    },
    /// With `previous`, answers the item each write replaced (`Values`, in order).
    Batch {
        partition: PartitionId,
        commands: Vec<Command>,
        previous: bool,
    },
    /// Items and bytes in the partitions.
    Count {
        partitions: Vec<PartitionId>,
    },
    /// Core 0 only.
    CreateTable {
        name: String,
        key_schema: KeySchema,
        partitions: u32,
        throughput: Option<Throughput>,
        tags: BTreeMap<String, String>,
    },
    /// Core 0 only: sets the tags `add` and removes those keyed `remove`.
    Retag {
        name: String,
        add: Tags,
        remove: Vec<String>,
    },
    /// Core 0 only.
    DeleteTable {
        name: String,
    },
    /// The whole catalog, sent by core 0 at start-up.
    CatalogLoad(Catalog),
    CatalogPut(TableInfo),
    CatalogRemove(String),
    /// Deletes every entry of the partitions (a deleted table's data).
    Drop {
        partitions: Vec<PartitionId>,
    },
    /// Cluster administration: the core's replicas; a configuration change at a partition's
    /// leader; a replica its group removed, stopped.
    Replicas,
    ChangeMembers {
        partition: PartitionId,
        members: Vec<Member>,
    },
    RetireReplica {
        partition: PartitionId,
    },
}

pub(crate) enum OpResult {
    Value(Option<Vec<u8>>),
    Values(Vec<Option<Vec<u8>>>),
    /// A conditional write: whether its condition held, and the stored item before and after.
    Conditional {
        passed: bool,
        old: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
    /// `more`: the scan stopped at its limit or byte budget, not at the end of its range.
    Entries {
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        more: bool,
    },
    Count {
        items: u64,
        bytes: u64,
    },
    Table(TableInfo),
    Replicas(Vec<ReplicaStatus>),
    /// The slot a configuration was proposed at.
    Slot(u64),
    Done,
    Error(WireError),
}

pub(crate) enum Message {
    Op(Op),
    Result(OpResult),
}

/// What travels between cores.
pub(crate) struct Envelope {
    token: u64,
    from: usize,
    message: Message,
}

pub(crate) struct Shard {
    core: usize,
    cores: usize,
    log: Log,
    catalog: RefCell<Catalog>,
    senders: Senders<Envelope>,
    pending: Pending<OpResult>,
    /// Serializes catalog changes (core 0).
    catalog_lock: glommio::sync::Semaphore,
    /// Signalled once the catalog is loaded.
    catalog_ready: glommio::sync::Semaphore,
    /// The keys connections must prove they hold; the cluster's secret also opens the
    /// connections this node forwards requests on.
    access: Access,
    /// Core 0 of a cluster member: its catalog partition has caught up since the start
    /// (`Catalog::current`).
    catalog_current: Cell<bool>,
    /// Connections to other cluster members, by client address, for the partitions of a
    /// multi-partition request that they lead.
    forwards: RefCell<HashMap<String, Rc<AsyncClient>>>,
}

fn engine_error(error: Error) -> WireError {
    match error {
        Error::Validation(message) => WireError::new(ErrorCode::ValidationException, message),
        Error::NotLeader { leader, address } => {
            let mut wire = WireError::new(ErrorCode::NotLeader, Error::NotLeader { leader, address: None }.to_string());
            wire.leader = address;
            wire
        }
        Error::Unavailable(reason) => WireError::new(ErrorCode::ServiceUnavailable, reason),
        // Nothing was written; the store resumes once space is freed.
        error @ Error::NoSpace(_) => WireError::new(ErrorCode::ServiceUnavailable, error.to_string()),
        Error::Throttled(reason) => WireError::new(ErrorCode::ThrottlingException, reason),
        other => WireError::new(ErrorCode::InternalServerError, other.to_string()),
    }
}

fn invalid(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::ValidationException, message)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// The smallest byte string greater than every string that starts with `prefix`.
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let end = prefix.iter().rposition(|&byte| byte != 0xFF)?;
    let mut next = prefix[..=end].to_vec();
    next[end] += 1;
    Some(next)
}

/// The tighter of two lower bounds.
fn max_lower(a: Bound<Vec<u8>>, b: Bound<Vec<u8>>) -> Bound<Vec<u8>> {
    match (&a, &b) {
        (Bound::Unbounded, _) => b,
        (_, Bound::Unbounded) => a,
        (Bound::Included(x) | Bound::Excluded(x), Bound::Included(y) | Bound::Excluded(y)) => {
            if x > y || (x == y && matches!(a, Bound::Excluded(_))) {
                a
            } else {
                b
            }
        }
    }
}

/// The tighter of two upper bounds.
fn min_upper(a: Bound<Vec<u8>>, b: Bound<Vec<u8>>) -> Bound<Vec<u8>> {
    match (&a, &b) {
        (Bound::Unbounded, _) => b,
        (_, Bound::Unbounded) => a,
        (Bound::Included(x) | Bound::Excluded(x), Bound::Included(y) | Bound::Excluded(y)) => {
            if x < y || (x == y && matches!(a, Bound::Excluded(_))) {
                a
            } else {
                b
            }
        }
    }
}

/// Whether `key` holds exactly the table's key attributes (of any types).
fn has_key_names(schema: &KeySchema, key: &Item) -> bool {
    let expected = 1 + usize::from(schema.sort.is_some());
    key.len() == expected
        && key.contains_key(&schema.partition.name)
        && schema.sort.as_ref().is_none_or(|sort| key.contains_key(&sort.name))
}

/// Checks that `key` holds exactly the table's key attributes, and encodes it.
fn encode_exact_key(schema: &KeySchema, key: &Item) -> Result<Vec<u8>, WireError> {
    if !has_key_names(schema, key) {
        return Err(invalid("The provided key element does not match the schema"));
    }
    schema.encode_key(key).map(|key| key.bytes).map_err(engine_error)
}

/// A Query's or Scan's ExclusiveStartKey, encoded; `names_wrong` is the error when it does not
/// hold exactly the key attributes.
fn encode_start_key(schema: &KeySchema, start: &Item, names_wrong: &str) -> Result<Vec<u8>, WireError> {
    if !has_key_names(schema, start) {
        return Err(invalid(names_wrong));
    }
    encode_exact_key(schema, start)
}

/// A read's parsed expressions (ReadExpressions).
struct ReadPlan {
    key: Option<KeyCondition>,
    filter: Option<Condition>,
    projection: Option<Vec<Path>>,
    count_only: bool,
}

impl ReadPlan {
    /// `schema` is the table's key schema for a Query (whose key condition it parses).
    fn parse(read: &ReadExpressions, schema: Option<&KeySchema>) -> Result<ReadPlan, WireError> {
        let (names, values) = placeholder_maps(&read.names, &read.values)?;
        let mut placeholders = Placeholders::new(&names, &values);
        let key = match schema {
            Some(schema) => parse_optional(read.key_condition.as_deref(), |text| {
                expr::parse_key_condition(text, &mut placeholders, schema)
            })?,
            None => None,
        };
        let filter = parse_optional(read.filter.as_deref(), |text| expr::parse_filter(text, &mut placeholders))?;
        let projection =
            parse_optional(read.projection.as_deref(), |text| expr::parse_projection(text, &mut placeholders))?;
        match (read.select, &projection) {
            (Select::SpecificAttributes, None) => {
                return Err(invalid(
                    "Must specify the AttributesToGet or ProjectionExpression when choosing to get SPECIFIC_ATTRIBUTES",
                ))
            }
            (Select::Count, Some(_)) => {
                return Err(invalid("Cannot specify the ProjectionExpression when choosing to get only the Count"))
            }
            _ => {}
        }
        placeholders.check_all_used().map_err(invalid)?;
        Ok(ReadPlan { key, filter, projection, count_only: read.select == Select::Count })
    }

    /// The plan of a read by key (GetItem, BatchGetItem), which takes a projection only.
    fn projection_only(read: &ReadExpressions, operation: &str) -> Result<ReadPlan, WireError> {
        if read.filter.is_some() || read.key_condition.is_some() || read.select != Select::AllAttributes {
            return Err(invalid(format!("{operation} takes a ProjectionExpression only")));
        }
        ReadPlan::parse(read, None)
    }

    fn project(&self, item: Item) -> Item {
        match &self.projection {
            Some(paths) => expr::project(&item, paths),
            None => item,
        }
    }

    /// A Query or Scan page: the items read, filtered (after the page was read, as DynamoDB
    /// does: ScannedCount counts them all), projected, or only counted.
    fn page(&self, items: Vec<Item>, last_evaluated_key: Option<Item>) -> Response {
        let scanned_count = items.len() as u32;
        let matched: Vec<Item> =
            items.into_iter().filter(|item| self.filter.as_ref().is_none_or(|filter| filter.evaluate(item))).collect();
        let count = matched.len() as u32;
        let items =
            if self.count_only { Vec::new() } else { matched.into_iter().map(|item| self.project(item)).collect() };
        Response::Items { items, scanned_count, count, last_evaluated_key }
    }
}

/// Parses a write's ConditionExpression and, for UpdateItem, its UpdateExpression, with the
/// request's placeholders, all of which must be used.
fn parse_write_expressions(
    expressions: &Expressions,
    update: Option<&str>,
) -> Result<(Option<Condition>, Option<Update>), WireError> {
    let (names, values) = placeholder_maps(&expressions.names, &expressions.values)?;
    let mut placeholders = Placeholders::new(&names, &values);
    let update =
        parse_optional(update.filter(|text| !text.is_empty()), |text| expr::parse_update(text, &mut placeholders))?;
    let condition =
        parse_optional(expressions.condition.as_deref(), |text| expr::parse_condition(text, &mut placeholders))?;
    placeholders.check_all_used().map_err(invalid)?;
    Ok((condition, update))
}

type PlaceholderMaps = (HashMap<String, String>, HashMap<String, AttributeValue>);

/// A request's ExpressionAttributeNames and ExpressionAttributeValues as the parser takes them;
/// each name must be one an item could have (MESSAGES.md 12e, 12f).
fn placeholder_maps(
    names: &[(String, String)],
    values: &[(String, AttributeValue)],
) -> Result<PlaceholderMaps, WireError> {
    for (key, name) in names {
        if name.is_empty() {
            return Err(invalid(messages::empty_placeholder_name(key)));
        }
        tessera_engine::check_name_length(name).map_err(engine_error)?;
    }
    Ok((names.iter().cloned().collect(), values.iter().cloned().collect()))
}

/// Parses an expression the request may leave out; a parse error is a ValidationException.
fn parse_optional<T>(
    text: Option<&str>,
    parse: impl FnOnce(&str) -> Result<T, expr::ExprError>,
) -> Result<Option<T>, WireError> {
    text.map(parse).transpose().map_err(|error| invalid(error.to_string()))
}

fn decode_stored(value: &[u8]) -> Result<Item, WireError> {
    decode_item(value)
        .map(|(item, _)| item)
        .map_err(|reason| WireError::new(ErrorCode::InternalServerError, format!("a stored item is damaged: {reason}")))
}

fn encode_stored(item: &Item) -> Vec<u8> {
    let mut value = Vec::new();
    encode_item(item, ItemMeta::default(), &mut value);
    value
}

/// The size DynamoDB counts of an item that may be absent (0).
fn size_of(item: Option<&Item>) -> usize {
    item.map_or(0, item_size)
}

/// The capacity a request consumes, per table, counted when it asked (ReturnConsumedCapacity):
/// reads by `capacity::read_units` of each item (a Query or Scan page counts as one read of
/// all the items it read, before any filter), writes by `capacity::write_units` of the item
/// before and after.
struct Meter {
    mode: ReturnConsumedCapacity,
    /// Table name: read units, write units.
    tables: BTreeMap<String, (f64, f64)>,
}

impl Meter {
    fn new(mode: ReturnConsumedCapacity) -> Meter {
        Meter { mode, tables: BTreeMap::new() }
    }

    /// Whether the request asked: writes then need the old item to count.
    fn wanted(&self) -> bool {
        self.mode != ReturnConsumedCapacity::None
    }

    fn read(&mut self, table: &str, bytes: usize, consistent: bool) {
        if self.wanted() {
            self.tables.entry(table.to_string()).or_default().0 += capacity::read_units(bytes, consistent);
        }
    }

    fn write(&mut self, table: &str, old: Option<&Item>, new: Option<&Item>) {
        if self.wanted() {
            self.tables.entry(table.to_string()).or_default().1 += capacity::write_units(size_of(old), size_of(new));
        }
    }

    /// Adds what another node counted for part of this request.
    fn add(&mut self, consumed: &[ConsumedCapacity]) {
        for part in consumed {
            let units = self.tables.entry(part.table.clone()).or_default();
            (units.0, units.1) = (units.0 + part.read_units, units.1 + part.write_units);
        }
    }

    fn report(self) -> Vec<ConsumedCapacity> {
        let indexes = self.mode == ReturnConsumedCapacity::Indexes;
        self.tables
            .into_iter()
            .map(|(table, (read_units, write_units))| ConsumedCapacity {
                table,
                read_units,
                write_units,
                table_units: indexes.then_some(read_units + write_units),
            })
            .collect()
    }
}

impl Shard {
    pub(crate) fn new(core: usize, cores: usize, log: Log, senders: Senders<Envelope>, access: Access) -> Shard {
        Shard {
            core,
            cores,
            log,
            access,
            catalog: RefCell::new(Catalog::default()),
            senders,
            pending: Pending::default(),
            catalog_lock: glommio::sync::Semaphore::new(1),
            catalog_ready: glommio::sync::Semaphore::new(0),
            catalog_current: Cell::new(false),
            forwards: RefCell::default(),
        }
    }

    pub(crate) fn core(&self) -> usize {
        self.core
    }

    pub(crate) fn cores(&self) -> usize {
        self.cores
    }

    /// The keys connections to this node prove they hold.
    pub(crate) fn access(&self) -> &Access {
        &self.access
    }

    /// Whether this node is a cluster member (its partitions replicated).
    pub(crate) fn replicated(&self) -> bool {
        matches!(self.log, Log::Replicated(_))
    }

    pub(crate) fn store(&self) -> &tessera_engine::Store {
        self.log.store()
    }

    /// Core 0: reads the catalog from its store.
    pub(crate) async fn load_catalog(&self) -> Result<Catalog, String> {
        let current = !self.replicated() || self.catalog_current.get();
        let mut catalog = Catalog { next_id: 1, current, ..Catalog::default() };
        let entries = self
            .store()
            .scan(CATALOG_PARTITION, Bound::Unbounded, Bound::Unbounded, false, usize::MAX)
            .await
            .map_err(|error| error.to_string())?;
        for (key, value) in entries {
            if key == NEXT_ID_KEY {
                catalog.next_id =
                    u32::from_le_bytes(value.as_slice().try_into().map_err(|_| "damaged catalog: next id")?);
            } else {
                let table = TableInfo::decode(&value).ok_or("damaged catalog: a table entry does not decode")?;
                catalog.tables.insert(table.name.clone(), table);
            }
        }
        Ok(catalog)
    }

    /// Core 0: installs the catalog it loaded here and on every other core.
    pub(crate) async fn publish_catalog(self: &Rc<Shard>, catalog: Catalog) -> Result<(), WireError> {
        self.install_catalog(catalog.clone());
        self.broadcast(|| Op::CatalogLoad(catalog.clone())).await
    }

    fn install_catalog(&self, catalog: Catalog) {
        if let Log::Replicated(log) = &self.log {
            // Each table's partitions lead on the nodes in turn (those this core owns).
            let mut owned = Vec::new();
            for table in catalog.tables.values() {
                for index in (0..table.partitions).filter(|&index| owner_core(index, self.cores) == self.core) {
                    log.learn_group(table.partition_id(index), &table.members);
                    log.prefer_leader(table.partition_id(index), index);
                    owned.push(table.partition_id(index));
                }
            }
            if catalog.current {
                // The catalog partition's replica knows everything chosen before the leadership
                // it follows, and is not amnesiac (`ReplicatedLog::caught_up`): every table made
                // before this start, whose partitions a damaged WAL tail here could have held
                // records of, is in it.
                owned.extend((self.core == 0).then_some(CATALOG_PARTITION));
                log.partitions_known(owned);
            }
            // Every replica of a deleted table's partitions stops here and drops its data.
            for partition in log.partitions().into_iter().filter(|&partition| catalog.deleted(partition)) {
                log.retire(partition, "its table was deleted");
            }
        }
        *self.catalog.borrow_mut() = catalog;
        self.catalog_ready.signal(1);
    }

    /// Sends `request` to the node at `leader` (a cluster member that leads a partition this
    /// request needs), over a connection kept per node.
    async fn forward(&self, leader: &str, request: &Request) -> Result<Response, WireError> {
        self.forward_with(leader, request, ReturnConsumedCapacity::None).await.map(|(response, _)| response)
    }

    /// `forward`, asking the other node for the capacity the request consumed there.
    pub(crate) async fn forward_with(
        &self,
        leader: &str,
        request: &Request,
        capacity: ReturnConsumedCapacity,
    ) -> Result<(Response, Vec<ConsumedCapacity>), WireError> {
        let unavailable = |what: String| WireError::new(ErrorCode::ServiceUnavailable, what);
        let known = self.forwards.borrow().get(leader).cloned();
        let client = match known {
            Some(client) => client,
            None => {
                let address: SocketAddr = leader
                    .parse()
                    .map_err(|_| unavailable(format!("the leader's address {leader:?} does not parse")))?;
                let client = AsyncClient::connect(address, ClientConfig::forwarding(&self.access))
                    .await
                    .map_err(|error| unavailable(format!("cannot reach the leader at {leader}: {error}")))?;
                let client = Rc::new(client);
                self.forwards.borrow_mut().insert(leader.to_string(), client.clone());
                client
            }
        };
        let flags = RequestFlags { capacity, forwarded: true };
        match client.call_once_with(request, flags).await {
            Ok((Response::Error(error), _)) => Err(error),
            Ok(answer) => Ok(answer),
            Err(error) => {
                self.forwards.borrow_mut().remove(leader);
                Err(unavailable(format!("the leader at {leader} failed: {error}")))
            }
        }
    }

    /// Core 0: reads the catalog again and publishes it to every core.
    async fn reload_catalog(self: &Rc<Shard>) {
        match self.load_catalog().await {
            Ok(catalog) => {
                if let Err(error) = self.publish_catalog(catalog).await {
                    tessera_engine::report!("tessera: cannot publish the catalog: {error}");
                }
            }
            Err(error) => tessera_engine::report!("tessera: cannot reload the catalog: {error}"),
        }
    }

    /// Core 0 of a cluster member: reloads and republishes the catalog whenever an entry of its
    /// partition is applied here (tables made or dropped through another node).
    pub(crate) fn follow_catalog(self: &Rc<Shard>) {
        let Log::Replicated(log) = &self.log else { return };
        let shard = Rc::downgrade(self);
        log.watch(
            CATALOG_PARTITION,
            Rc::new(move || {
                let Some(shard) = shard.upgrade() else { return };
                // The load reads after the apply (the store's read barrier).
                glommio::spawn_local(async move { shard.reload_catalog().await }).detach();
            }),
        );
    }

    /// Core 0 of a cluster member, at its start: once its catalog partition has caught up with
    /// its group's commit (a leader is known and everything it committed is applied here), the
    /// catalog is republished as current.
    pub(crate) fn await_current_catalog(self: &Rc<Shard>) {
        let Log::Replicated(log) = &self.log else { return };
        let (shard, log) = (self.clone(), log.clone());
        glommio::spawn_local(async move {
            while !log.caught_up(CATALOG_PARTITION) {
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
            shard.catalog_current.set(true);
            shard.reload_catalog().await;
        })
        .detach();
    }

    /// Removes, in the background, the data of tables whose deletion a stop interrupted.
    pub(crate) fn remove_orphans(self: &Rc<Shard>) {
        let shard = self.clone();
        glommio::spawn_local(async move {
            let partitions = match shard.store().partitions().await {
                Ok(partitions) => partitions,
                Err(error) => {
                    return tessera_engine::report!("tessera: core {}: cannot list partitions: {error}", shard.core)
                }
            };
            let orphans: Vec<PartitionId> =
                partitions.into_iter().filter(|&partition| shard.catalog.borrow().orphaned(partition)).collect();
            if !orphans.is_empty() {
                tessera_engine::report!(
                    "tessera: core {} removes the data of deleted tables ({} partitions)",
                    shard.core,
                    orphans.len()
                );
                if let OpResult::Error(error) = shard.run(Op::Drop { partitions: orphans }).await {
                    tessera_engine::report!(
                        "tessera: core {}: removing deleted tables' data failed: {error}",
                        shard.core
                    );
                }
            }
        })
        .detach();
    }

    /// Resolves once this core has the catalog.
    pub(crate) async fn catalog_loaded(&self) {
        if let Ok(permit) = self.catalog_ready.acquire_permit(1).await {
            drop(permit);
        }
    }

    /// Serves operations that other cores send, and their replies to ours, until the mesh
    /// closes.
    pub(crate) fn serve_peers(self: &Rc<Shard>, mut receivers: Receivers<Envelope>) {
        for (_, receiver) in receivers.streams() {
            let shard = self.clone();
            glommio::spawn_local(async move {
                while let Some(envelope) = receiver.recv().await {
                    match envelope.message {
                        Message::Op(op) => {
                            let shard = shard.clone();
                            glommio::spawn_local(async move {
                                let result = shard.run(op).await;
                                let reply = Envelope {
                                    token: envelope.token,
                                    from: shard.core,
                                    message: Message::Result(result),
                                };
                                // The peer is gone only when the server stops.
                                let _ = shard.senders.send_to(envelope.from, reply).await;
                            })
                            .detach();
                        }
                        Message::Result(result) => shard.pending.complete(envelope.token, result),
                    }
                }
            })
            .detach();
        }
    }

    /// Runs `op` on `core`.
    async fn call(self: &Rc<Shard>, core: usize, op: Op) -> OpResult {
        if core == self.core {
            return Box::pin(self.run(op)).await;
        }
        let (token, reply) = self.pending.open();
        let envelope = Envelope { token, from: self.core, message: Message::Op(op) };
        if self.senders.send_to(core, envelope).await.is_err() {
            self.pending.abandon(token);
            return OpResult::Error(WireError::new(
                ErrorCode::ServiceUnavailable,
                format!("core {core} is not running"),
            ));
        }
        reply.await
    }

    fn owner(&self, partition_index: u32) -> usize {
        owner_core(partition_index, self.cores)
    }

    /// The core that hosts storage partition `partition` (the catalog's is core 0's).
    fn partition_core(&self, partition: PartitionId) -> usize {
        self.owner(index_of(partition))
    }

    /// The replicas of every core, as DescribeReplicas reports them.
    async fn describe_replicas(self: &Rc<Shard>) -> Result<Response, WireError> {
        let Log::Replicated(log) = &self.log else {
            return Err(invalid("DescribeReplicas: this node is not a cluster member"));
        };
        let mut replicas = Vec::new();
        for core in 0..self.cores {
            match self.call(core, Op::Replicas).await {
                OpResult::Replicas(found) => replicas.extend(found),
                OpResult::Error(error) => return Err(error),
                other => return Err(unexpected(other)),
            }
        }
        Ok(Response::Replicas { node: log.node(), replicas })
    }

    // ------------------------------------------------------------------ partition work

    async fn run(self: &Rc<Shard>, op: Op) -> OpResult {
        let result = match op {
            Op::Put { partition, key, value, return_old } => {
                self.write(partition, Command::Put { key, value: value.into() }, return_old).await
            }
            Op::Delete { partition, key, return_old } => {
                self.write(partition, Command::Delete { key }, return_old).await
            }
            Op::Get { partition, key, consistent } => match self.log.check_read(partition, consistent) {
                Ok(()) => self.store().get(partition, &key).await.map(OpResult::Value).map_err(engine_error),
                Err(error) => Err(engine_error(error)),
            },
            Op::Conditional { partition, command } => match self.log.propose_applied(partition, command).await {
                Err(error) => Err(engine_error(error)),
                Ok(Outcome::Conditional { passed, old, new }) => Ok(OpResult::Conditional { passed, old, new }),
                Ok(Outcome::Invalid(reason)) => Err(invalid(reason)),
                Ok(Outcome::Previous(_) | Outcome::Replaced(_) | Outcome::Batch(_)) => Err(WireError::new(
                    ErrorCode::InternalServerError,
                    "a conditional write had another kind of outcome",
                )),
            },
            Op::Scan { partition, consistent, lower, upper, reverse, limit, bytes_max } => {
                match self.log.check_read(partition, consistent) {
                    Ok(()) => self.scan(partition, lower, upper, reverse, limit, bytes_max).await,
                    Err(error) => Err(engine_error(error)),
                }
            }
            Op::Batch { partition, commands, previous: false } => self
                .log
                .propose(partition, Command::Batch(commands))
                .await
                .map(|()| OpResult::Done)
                .map_err(engine_error),
            Op::Batch { partition, commands, previous: true } => {
                match self.log.propose_applied(partition, Command::Batch(commands)).await.map_err(engine_error) {
                    Ok(Outcome::Batch(outcomes)) => outcomes
                        .into_iter()
                        .map(|outcome| match outcome {
                            Outcome::Previous(previous) => Ok(previous),
                            _ => Err(unexpected(OpResult::Done)),
                        })
                        .collect::<Result<_, _>>()
                        .map(OpResult::Values),
                    Ok(_) => Err(unexpected(OpResult::Done)),
                    Err(error) => Err(error),
                }
            }
            Op::Count { partitions } => self.count(&partitions).await,
            Op::Replicas => match &self.log {
                Log::Replicated(log) => Ok(OpResult::Replicas(log.replica_statuses())),
                Log::Local(_) => Ok(OpResult::Replicas(Vec::new())),
            },
            Op::ChangeMembers { partition, members } => match &self.log {
                Log::Replicated(log) => {
                    log.change_members(partition, members).map(OpResult::Slot).map_err(engine_error)
                }
                Log::Local(_) => Err(invalid("ChangeMembers: this node is not a cluster member")),
            },
            Op::RetireReplica { partition } => match &self.log {
                Log::Replicated(log) => log.retire_removed(partition).map(|()| OpResult::Done).map_err(engine_error),
                Log::Local(_) => Err(invalid("RetireReplica: this node is not a cluster member")),
            },
            Op::CreateTable { name, key_schema, partitions, throughput, tags } => {
                self.create_table(name, key_schema, partitions, throughput, tags).await
            }
            Op::Retag { name, add, remove } => self.retag(&name, &add, &remove).await,
            Op::DeleteTable { name } => self.delete_table(&name).await,
            Op::CatalogLoad(catalog) => {
                self.install_catalog(catalog);
                Ok(OpResult::Done)
            }
            Op::CatalogPut(table) => {
                self.catalog.borrow_mut().tables.insert(table.name.clone(), table);
                Ok(OpResult::Done)
            }
            Op::CatalogRemove(name) => {
                self.catalog.borrow_mut().tables.remove(&name);
                Ok(OpResult::Done)
            }
            Op::Drop { partitions } => self.drop_partitions(&partitions).await,
        };
        result.unwrap_or_else(OpResult::Error)
    }

    async fn write(&self, partition: PartitionId, command: Command, return_old: bool) -> Result<OpResult, WireError> {
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

    async fn scan(
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
    async fn count(&self, partitions: &[PartitionId]) -> Result<OpResult, WireError> {
        let (mut items, mut bytes) = (0u64, 0u64);
        for &partition in partitions {
            let meta = self.store().partition_meta(partition).await.map_err(engine_error)?;
            items += meta.items;
            bytes += meta.bytes;
        }
        Ok(OpResult::Count { items, bytes })
    }

    async fn drop_partitions(&self, partitions: &[PartitionId]) -> Result<OpResult, WireError> {
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

    /// Sends `op` (built per core) to every other core and waits for all of them.
    async fn broadcast(self: &Rc<Shard>, op: impl Fn() -> Op) -> Result<(), WireError> {
        for core in (0..self.cores).filter(|&core| core != self.core) {
            if let OpResult::Error(error) = self.call(core, op()).await {
                return Err(error);
            }
        }
        Ok(())
    }

    /// Serializes catalog changes on core 0. In a cluster, only the catalog partition's
    /// leader (with its lease, its own entry committed) changes the catalog, and it first
    /// reloads it from its store, so a newly elected leader decides on everything chosen before.
    async fn lock_catalog(&self) -> Result<glommio::sync::Permit<'_>, WireError> {
        let permit = self
            .catalog_lock
            .acquire_permit(1)
            .await
            .map_err(|_| WireError::new(ErrorCode::ServiceUnavailable, "the server is stopping"))?;
        if let Log::Replicated(_) = &self.log {
            self.log.check_read(CATALOG_PARTITION, true).map_err(engine_error)?;
            let catalog =
                self.load_catalog().await.map_err(|error| WireError::new(ErrorCode::InternalServerError, error))?;
            self.install_catalog(catalog);
        }
        Ok(permit)
    }

    async fn create_table(
        self: &Rc<Shard>,
        name: String,
        key_schema: KeySchema,
        partitions: u32,
        throughput: Option<Throughput>,
        tags: BTreeMap<String, String>,
    ) -> Result<OpResult, WireError> {
        let _guard = self.lock_catalog().await?;
        if self.catalog.borrow().tables.contains_key(&name) {
            return Err(WireError::new(ErrorCode::ResourceInUseException, format!("Table already exists: {name}")));
        }
        let id = self.catalog.borrow().next_id;
        // In a cluster the table's groups start as the catalog's is now (after a lost node
        // was replaced, on the nodes that replaced it).
        let members = match &self.log {
            Log::Replicated(log) => log.members(CATALOG_PARTITION),
            Log::Local(_) => Vec::new(),
        };
        let table = TableInfo {
            id,
            name: name.clone(),
            key_schema,
            partitions,
            created_at_ms: now_ms(),
            members,
            throughput,
            tags,
        };
        let commands = vec![
            Command::Put { key: TableInfo::key(&name), value: table.encode().into() },
            Command::Put { key: NEXT_ID_KEY.to_vec(), value: (id + 1).to_le_bytes().to_vec().into() },
        ];
        self.log.propose(CATALOG_PARTITION, Command::Batch(commands)).await.map_err(engine_error)?;
        {
            let mut catalog = self.catalog.borrow_mut();
            catalog.next_id = id + 1;
            catalog.tables.insert(name, table.clone());
        }
        self.broadcast(|| Op::CatalogPut(table.clone())).await?;
        Ok(OpResult::Table(table))
    }

    /// Sets and removes a table's tags: its catalog entry is rewritten through the catalog's
    /// log, as a table is created (durable, and in a cluster replicated, before the answer).
    async fn retag(
        self: &Rc<Shard>,
        name: &str,
        add: &[(String, String)],
        remove: &[String],
    ) -> Result<OpResult, WireError> {
        let _guard = self.lock_catalog().await?;
        let mut table = self.catalog.borrow().table(name)?.clone();
        table.tags = retag(&table.tags, add, remove)?;
        self.log
            .propose(CATALOG_PARTITION, Command::Put { key: TableInfo::key(name), value: table.encode().into() })
            .await
            .map_err(engine_error)?;
        self.catalog.borrow_mut().tables.insert(name.to_string(), table.clone());
        self.broadcast(|| Op::CatalogPut(table.clone())).await?;
        Ok(OpResult::Table(table))
    }

    async fn delete_table(self: &Rc<Shard>, name: &str) -> Result<OpResult, WireError> {
        let _guard = self.lock_catalog().await?;
        let table = self.catalog.borrow().table(name)?.clone();
        self.log
            .propose(CATALOG_PARTITION, Command::Delete { key: TableInfo::key(name) })
            .await
            .map_err(engine_error)?;
        self.catalog.borrow_mut().tables.remove(name);
        self.broadcast(|| Op::CatalogRemove(name.to_string())).await?;
        // In a cluster every replica drops its partitions of the table as it applies the
        // deletion (`install_catalog`).
        if matches!(self.log, Log::Replicated(_)) {
            return Ok(OpResult::Table(table));
        }
        // The data goes in the background; the table id is never reused, so nothing can see it.
        for core in 0..self.cores {
            let partitions: Vec<PartitionId> = (0..table.partitions)
                .filter(|&index| self.owner(index) == core)
                .map(|index| table.partition_id(index))
                .collect();
            let shard = self.clone();
            glommio::spawn_local(async move {
                shard.call(core, Op::Drop { partitions }).await;
            })
            .detach();
        }
        Ok(OpResult::Table(table))
    }

    // ------------------------------------------------------------------ requests

    /// Serves one request: the coordinator's side, whichever core owns the data. Returns the
    /// answer and, if its flags asked for it, the capacity the request consumed. A request
    /// another node forwarded is not forwarded again.
    pub(crate) async fn execute(
        self: &Rc<Shard>,
        request: Request,
        flags: RequestFlags,
    ) -> (Response, Vec<ConsumedCapacity>) {
        let mut meter = Meter::new(flags.capacity);
        let may_forward = !flags.forwarded;
        let result = match request {
            Request::CreateTable { table, key_schema, partitions, throughput, tags } => {
                self.execute_create(table, key_schema, partitions, throughput, tags).await
            }
            Request::TagResource { table, tags } => self.execute_retag(table, tags, Vec::new()).await,
            Request::UntagResource { table, keys } => self.execute_retag(table, Vec::new(), keys).await,
            Request::ListTagsOfResource { table } => validate_table_name(&table, true).and_then(|()| {
                let catalog = self.catalog.borrow();
                let tags = &catalog.table(&table)?.tags;
                Ok(Response::Tags(tags.iter().map(|(key, value)| (key.clone(), value.clone())).collect()))
            }),
            Request::DeleteTable { table } => match validate_table_name(&table, true) {
                Err(error) => Err(error),
                Ok(()) => match self.call(0, Op::DeleteTable { name: table }).await {
                    OpResult::Table(table) => {
                        let mut description = table.describe(0, 0);
                        description.status = tessera_wire::TableStatus::Deleting;
                        Ok(Response::Table(description))
                    }
                    other => Err(unexpected(other)),
                },
            },
            Request::DescribeTable { table, counts } => self.describe(&table, counts).await,
            Request::ListTables { exclusive_start_table, limit } => self.list_tables(exclusive_start_table, limit),
            Request::PutItem { table, item, return_old, expressions, return_old_on_failure } => {
                if expressions == Expressions::default() {
                    self.put_item(&table, item, return_old, &mut meter).await
                } else {
                    self.conditional_put(&table, item, return_old, &expressions, return_old_on_failure, &mut meter)
                        .await
                }
            }
            Request::GetItem { table, key, consistent_read, read } => {
                self.get_item(&table, &key, consistent_read, &read, &mut meter).await
            }
            Request::DeleteItem { table, key, return_old, expressions, return_old_on_failure } => {
                if expressions == Expressions::default() {
                    self.delete_item(&table, &key, return_old, &mut meter).await
                } else {
                    self.conditional_delete(&table, &key, return_old, &expressions, return_old_on_failure, &mut meter)
                        .await
                }
            }
            Request::UpdateItem(update) => self.update_item(update, &mut meter).await,
            Request::Query(query) => self.query(query, &mut meter).await,
            Request::Scan(scan) => self.scan_table(scan, may_forward, &mut meter).await,
            Request::BatchGetItem(tables) => self.batch_get(tables, may_forward, &mut meter).await,
            Request::BatchWriteItem(writes) => self.batch_write(writes, may_forward, &mut meter).await,
            Request::Hello => Ok(Response::Hello { core: self.core as u32, cores: self.cores as u32 }),
            // A connection's proof is checked where the connection is served, never here.
            Request::Authenticate { .. } => {
                Err(invalid("Authenticate opens a binary connection; it is not a request to execute"))
            }
            Request::DescribeReplicas => self.describe_replicas().await,
            Request::ChangeMembers { partition, members } => {
                match self.call(self.partition_core(partition), Op::ChangeMembers { partition, members }).await {
                    OpResult::Slot(slot) => Ok(Response::Admin { slot }),
                    OpResult::Error(error) => Err(error),
                    other => Err(unexpected(other)),
                }
            }
            Request::RetireReplica { partition } => {
                match self.call(self.partition_core(partition), Op::RetireReplica { partition }).await {
                    OpResult::Done => Ok(Response::Admin { slot: 0 }),
                    OpResult::Error(error) => Err(error),
                    other => Err(unexpected(other)),
                }
            }
        };
        match result {
            // An error reports no capacity, as in DynamoDB.
            Err(error) => (Response::Error(error), Vec::new()),
            Ok(response) => (response, meter.report()),
        }
    }

    /// The table an item operation names (a name DynamoDB's rules refuse is a
    /// ValidationException, not a missing table).
    fn table(&self, name: &str) -> Result<TableInfo, WireError> {
        validate_table_name(name, false)?;
        self.catalog.borrow().table(name).cloned()
    }

    async fn execute_create(
        self: &Rc<Shard>,
        table: String,
        key_schema: KeySchema,
        partitions: u32,
        throughput: Option<Throughput>,
        tags: Tags,
    ) -> Result<Response, WireError> {
        validate_table_name(&table, true)?;
        validate_throughput(throughput)?;
        let tags = retag(&BTreeMap::new(), &tags, &[])?;
        for key in std::iter::once(&key_schema.partition).chain(key_schema.sort.as_ref()) {
            if key.name.is_empty() || key.name.len() > 255 {
                return Err(invalid(format!("key attribute name {:?} must be 1 to 255 bytes", key.name)));
            }
        }
        if key_schema.sort.as_ref().is_some_and(|sort| sort.name == key_schema.partition.name) {
            return Err(invalid("the partition key and the sort key must have different names"));
        }
        if partitions > PARTITIONS_MAX {
            return Err(invalid(format!("a table may have at most {PARTITIONS_MAX} partitions, not {partitions}")));
        }
        let partitions = if partitions == 0 { self.cores as u32 } else { partitions };
        match self.call(0, Op::CreateTable { name: table, key_schema, partitions, throughput, tags }).await {
            OpResult::Table(table) => {
                let mut description = table.describe(0, 0);
                // In a cluster the table is chosen, and reaches the other nodes as each applies
                // the catalog's entry: CREATING, as DynamoDB says until a table is usable
                // everywhere (DescribeTable at a node says ACTIVE once that node has it).
                if let Log::Replicated(_) = &self.log {
                    description.status = tessera_wire::TableStatus::Creating;
                }
                Ok(Response::Table(description))
            }
            other => Err(unexpected(other)),
        }
    }

    /// TagResource and UntagResource: answered with the table's tags after the change.
    async fn execute_retag(
        self: &Rc<Shard>,
        table: String,
        add: Tags,
        remove: Vec<String>,
    ) -> Result<Response, WireError> {
        validate_table_name(&table, true)?;
        match self.call(0, Op::Retag { name: table, add, remove }).await {
            OpResult::Table(table) => Ok(Response::Tags(table.tags.into_iter().collect())),
            other => Err(unexpected(other)),
        }
    }

    async fn describe(self: &Rc<Shard>, name: &str, counts: bool) -> Result<Response, WireError> {
        validate_table_name(name, true)?;
        let table = self.catalog.borrow().table(name).cloned()?;
        let (mut items, mut bytes) = (0, 0);
        for core in (0..self.cores).filter(|_| counts) {
            let partitions = (0..table.partitions)
                .filter(|&index| self.owner(index) == core)
                .map(|index| table.partition_id(index))
                .collect();
            match self.call(core, Op::Count { partitions }).await {
                OpResult::Count { items: core_items, bytes: core_bytes } => {
                    items += core_items;
                    bytes += core_bytes;
                }
                other => return Err(unexpected(other)),
            }
        }
        Ok(Response::Table(table.describe(items, bytes)))
    }

    fn list_tables(&self, exclusive_start_table: Option<String>, limit: u32) -> Result<Response, WireError> {
        if limit > LIST_TABLES_MAX {
            return Err(invalid(format!("Limit must be between 1 and {LIST_TABLES_MAX}, not {limit}")));
        }
        let limit = if limit == 0 { LIST_TABLES_MAX } else { limit } as usize;
        let catalog = self.catalog.borrow();
        let start = match &exclusive_start_table {
            Some(name) => Bound::Excluded(name.clone()),
            None => Bound::Unbounded,
        };
        let mut names = catalog.tables.range((start, Bound::Unbounded)).map(|(name, _)| name.clone());
        let tables: Vec<String> = names.by_ref().take(limit).collect();
        let last_evaluated_table = names.next().and(tables.last().cloned());
        Ok(Response::ListTables { tables, last_evaluated_table })
    }

    /// Where an encoded key lives: (owner core, partition id).
    fn place(&self, table: &TableInfo, key: &[u8]) -> (usize, PartitionId) {
        let index = table.partition_of(key_hash(key));
        (self.owner(index), table.partition_id(index))
    }

    /// Runs `op` (a put, delete or get) at `core`: the item it replaced or read.
    async fn old_item(self: &Rc<Shard>, core: usize, op: Op) -> Result<Option<Item>, WireError> {
        match self.call(core, op).await {
            OpResult::Value(value) => value.as_deref().map(decode_stored).transpose(),
            other => Err(unexpected(other)),
        }
    }

    async fn put_item(
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
        let op = Op::Put { partition, key, value, return_old: return_old || meter.wanted() };
        let old = self.old_item(core, op).await?;
        meter.write(name, old.as_ref(), Some(&item));
        Ok(Response::Item(old.filter(|_| return_old)))
    }

    async fn get_item(
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
        let item = self.old_item(core, Op::Get { partition, key, consistent }).await?;
        meter.read(name, size_of(item.as_ref()), consistent);
        Ok(Response::Item(item.map(|item| plan.project(item))))
    }

    async fn delete_item(
        self: &Rc<Shard>,
        name: &str,
        key: &Item,
        return_old: bool,
        meter: &mut Meter,
    ) -> Result<Response, WireError> {
        let table = self.table(name)?;
        let key = encode_exact_key(&table.key_schema, key)?;
        let (core, partition) = self.place(&table, &key);
        let old = self.old_item(core, Op::Delete { partition, key, return_old: return_old || meter.wanted() }).await?;
        meter.write(name, old.as_ref(), None);
        Ok(Response::Item(old.filter(|_| return_old)))
    }

    async fn conditional_put(
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

    async fn conditional_delete(
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

    async fn update_item(self: &Rc<Shard>, request: UpdateItem, meter: &mut Meter) -> Result<Response, WireError> {
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
        match self.call(core, Op::Conditional { partition, command }).await {
            OpResult::Conditional { passed, old, new } => {
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
            other => Err(unexpected(other)),
        }
    }

    async fn query(self: &Rc<Shard>, mut query: Query, meter: &mut Meter) -> Result<Response, WireError> {
        let table = self.table(&query.table)?;
        let schema = &table.key_schema;
        let mut plan = ReadPlan::parse(&query.read, Some(schema))?;
        let key_names = std::iter::once(&schema.partition).chain(&schema.sort).map(|key| key.name.as_str());
        if let Some(filter) = &plan.filter {
            let named = filter.attribute_names();
            if let Some(key) = key_names.clone().find(|key| named.contains(key)) {
                return Err(invalid(messages::filter_on_key(key)));
            }
        }
        if let Some(key) = plan.key.take() {
            query.partition_key = key.partition_key;
            query.sort = key.sort;
        }
        let prefix = schema.encode_partition_prefix(&query.partition_key).map_err(engine_error)?.bytes;
        let whole = || -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
            if schema.sort.is_none() {
                (Bound::Included(prefix.clone()), Bound::Included(prefix.clone()))
            } else {
                (Bound::Included(prefix.clone()), successor(&prefix).map_or(Bound::Unbounded, Bound::Excluded))
            }
        };
        let full = |value| -> Result<Vec<u8>, WireError> {
            Ok([prefix.as_slice(), &schema.encode_sort_value(value).map_err(engine_error)?].concat())
        };
        let (all_lower, all_upper) = whole();
        let (lower, upper) = match &query.sort {
            None => (all_lower, all_upper),
            Some(SortCondition::Eq(value)) => (Bound::Included(full(value)?), Bound::Included(full(value)?)),
            Some(SortCondition::Lt(value)) => (all_lower, Bound::Excluded(full(value)?)),
            Some(SortCondition::Le(value)) => (all_lower, Bound::Included(full(value)?)),
            Some(SortCondition::Gt(value)) => (Bound::Excluded(full(value)?), all_upper),
            Some(SortCondition::Ge(value)) => (Bound::Included(full(value)?), all_upper),
            Some(SortCondition::Between(low, high)) => {
                let (low, high) = (full(low)?, full(high)?);
                if low > high {
                    return Err(invalid(
                        "Invalid KeyConditionExpression: The BETWEEN operator requires upper bound to be greater than or equal to lower bound",
                    ));
                }
                (Bound::Included(low), Bound::Included(high))
            }
            Some(SortCondition::BeginsWith(value)) => {
                if schema.sort.as_ref().is_some_and(|sort| sort.key_type == KeyType::N) {
                    return Err(invalid(
                        "Invalid KeyConditionExpression: Incorrect operand type for operator or function; operator or function: begins_with, operand type: N",
                    ));
                }
                let start = full(value)?;
                let end = successor(&start).map_or(all_upper, Bound::Excluded);
                (Bound::Included(start), end)
            }
        };
        let (mut lower, mut upper) = (lower, upper);
        if let Some(start) = &query.exclusive_start_key {
            if schema.sort.is_none() {
                return Err(invalid(messages::hash_only_start_key(start)));
            }
            let start = encode_start_key(schema, start, messages::QUERY_START_KEY_INVALID)?;
            if !start.starts_with(&prefix) {
                return Err(invalid("The provided starting key is invalid: it is not in the queried partition key"));
            }
            if query.backward {
                upper = min_upper(upper, Bound::Excluded(start));
            } else {
                lower = max_lower(lower, Bound::Excluded(start));
            }
        }
        let limit = if query.limit == 0 { usize::MAX } else { query.limit as usize };
        let (core, partition) = self.place(&table, &prefix);
        let op = Op::Scan {
            partition,
            consistent: query.consistent_read,
            lower,
            upper,
            reverse: query.backward,
            limit,
            bytes_max: PAGE_BYTES_MAX,
        };
        let (entries, more) = match self.call(core, op).await {
            OpResult::Entries { entries, more } => (entries, more),
            other => return Err(unexpected(other)),
        };
        let last_evaluated_key = match entries.last() {
            Some((key, _)) if more => Some(decode_key(schema, key)?),
            _ => None,
        };
        let items = entries.iter().map(|(_, value)| decode_stored(value)).collect::<Result<Vec<_>, _>>()?;
        meter.read(&table.name, items.iter().map(item_size).sum(), query.consistent_read);
        Ok(plan.page(items, last_evaluated_key))
    }

    async fn scan_table(
        self: &Rc<Shard>,
        scan: Scan,
        may_forward: bool,
        meter: &mut Meter,
    ) -> Result<Response, WireError> {
        let table = self.table(&scan.table)?;
        if scan.read.key_condition.is_some() {
            return Err(invalid("Scan takes no KeyConditionExpression"));
        }
        let plan = ReadPlan::parse(&scan.read, None)?;
        let total = if scan.total_segments == 0 { 1 } else { scan.total_segments };
        if total > 1_000_000 {
            return Err(invalid(format!("TotalSegments must be between 1 and 1000000, not {total}")));
        }
        if scan.segment >= total {
            return Err(invalid(format!("Segment {} must be less than TotalSegments {total}", scan.segment)));
        }
        let segment_start = range_start(u64::from(scan.segment), u64::from(total)).expect("segment < total");
        let segment_end = range_start(u64::from(scan.segment) + 1, u64::from(total));
        let (mut index, mut lower) = match &scan.exclusive_start_key {
            Some(start) => {
                let start = encode_start_key(&table.key_schema, start, messages::SCAN_START_KEY_INVALID)?;
                let hash = key_hash(&start);
                if hash < segment_start || segment_end.is_some_and(|end| hash >= end) {
                    return Err(invalid("The provided starting key is invalid: it is not in this scan segment"));
                }
                (table.partition_of(hash), Bound::Excluded(start))
            }
            None => (table.partition_of(segment_start), Bound::Included(segment_start.to_be_bytes().to_vec())),
        };
        let mut remaining = if scan.limit == 0 { usize::MAX } else { scan.limit as usize };
        let mut bytes_left = PAGE_BYTES_MAX;
        let mut items = Vec::new();
        let mut last_key = None;
        loop {
            let partition_end = table.partition_start(index + 1);
            let end = match (segment_end, partition_end) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let upper = end.map_or(Bound::Unbounded, |end| Bound::Excluded(end.to_be_bytes().to_vec()));
            let after = match &lower {
                Bound::Excluded(key) => Some(key.clone()),
                _ => None,
            };
            let op = Op::Scan {
                partition: table.partition_id(index),
                consistent: scan.consistent_read,
                lower,
                upper,
                reverse: false,
                limit: remaining,
                bytes_max: bytes_left,
            };
            let (entries, more) = match self.call(self.owner(index), op).await {
                OpResult::Entries { entries, more } => (entries, more),
                OpResult::Error(error) => match leader_of(&error).filter(|_| may_forward) {
                    Some(leader) => {
                        let (mut entries, mut more) =
                            self.scan_elsewhere(leader, &table, index, after, remaining, scan.consistent_read).await?;
                        // The other node's page is held to this one's byte budget, as a local
                        // partition's is: what does not fit is read by the next page.
                        let mut budget = bytes_left;
                        let fits = entries
                            .iter()
                            .take_while(|(key, value)| {
                                let fits = budget > 0;
                                budget = budget.saturating_sub(key.len() + value.len());
                                fits
                            })
                            .count();
                        if fits < entries.len() {
                            entries.truncate(fits);
                            more = true;
                        }
                        (entries, more)
                    }
                    None => return Err(error),
                },
                other => return Err(unexpected(other)),
            };
            for (key, value) in &entries {
                bytes_left = bytes_left.saturating_sub(key.len() + value.len());
                items.push(decode_stored(value)?);
            }
            remaining -= entries.len();
            if let Some((key, _)) = entries.last() {
                last_key = Some(key.clone());
            }
            let segment_done = end == segment_end;
            let page_done = more || remaining == 0 || bytes_left == 0;
            if page_done || segment_done {
                meter.read(&table.name, items.iter().map(item_size).sum(), scan.consistent_read);
            }
            if page_done {
                let last_evaluated_key = match (&last_key, segment_done && !more) {
                    (Some(key), false) => Some(decode_key(&table.key_schema, key)?),
                    _ => None,
                };
                return Ok(plan.page(items, last_evaluated_key));
            }
            if segment_done {
                return Ok(plan.page(items, None));
            }
            index += 1;
            lower = Bound::Included(partition_end.expect("not the last partition").to_be_bytes().to_vec());
        }
    }

    /// Scans partition `index` at the node that leads it (a Scan of the segment the partition
    /// is, when the table's partitions are the segments), after encoded key `after`: its
    /// entries and whether more follow (up to a page of the other node's; the caller holds it
    /// to its own page's byte budget).
    async fn scan_elsewhere(
        &self,
        leader: &str,
        table: &TableInfo,
        index: u32,
        after: Option<Vec<u8>>,
        remaining: usize,
        consistent_read: bool,
    ) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, bool), WireError> {
        let request = Request::Scan(Scan {
            table: table.name.clone(),
            segment: index,
            total_segments: table.partitions,
            limit: u32::try_from(remaining).unwrap_or(0),
            exclusive_start_key: after.map(|key| decode_key(&table.key_schema, &key)).transpose()?,
            consistent_read,
            read: ReadExpressions::default(),
        });
        match self.forward(leader, &request).await? {
            Response::Items { items, last_evaluated_key, .. } => {
                let entries = items
                    .iter()
                    .map(|item| {
                        Ok((table.key_schema.encode_key(item).map_err(engine_error)?.bytes, encode_stored(item)))
                    })
                    .collect::<Result<Vec<_>, WireError>>()?;
                Ok((entries, last_evaluated_key.is_some()))
            }
            _ => Err(WireError::new(ErrorCode::InternalServerError, "a node answered Scan wrongly")),
        }
    }

    async fn batch_get(
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

    async fn batch_write(
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

/// The address of the node that leads, when `error` is a NotLeader answer naming one.
fn leader_of(error: &WireError) -> Option<&str> {
    (error.code == ErrorCode::NotLeader).then_some(error.leader.as_deref()).flatten()
}

fn decode_key(schema: &KeySchema, key: &[u8]) -> Result<Item, WireError> {
    schema
        .decode_key(key)
        .map_err(|reason| WireError::new(ErrorCode::InternalServerError, format!("a stored key is damaged: {reason}")))
}

/// An operation's result that is not what the request needed: its error, or an internal one.
fn unexpected(result: OpResult) -> WireError {
    match result {
        OpResult::Error(error) => error,
        _ => WireError::new(ErrorCode::InternalServerError, "a core answered with the wrong kind of result"),
    }
}

fn bound_ref(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(key) => Bound::Included(key),
        Bound::Excluded(key) => Bound::Excluded(key),
        Bound::Unbounded => Bound::Unbounded,
    }
}
