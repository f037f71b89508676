//! Tables: the catalog's changes on core 0 (CreateTable, TagResource, UntagResource,
//! DeleteTable), its copies on every core and its reloads in a cluster, and the requests that
//! read it (DescribeTable, ListTables).
//!
//! In a cluster the catalog is a replicated partition of its own, and core 0 reloads it
//! whenever that partition applies an entry. A new table's groups start as the catalog's group
//! is when it is created (recorded in its entry), so a table made after a node was replaced
//! lives on the replacing nodes. CreateTable answers CREATING once the table is chosen; each
//! node's DescribeTable says ACTIVE once that node has applied it, and until then its item
//! requests get ResourceNotFoundException, as during DynamoDB's CREATING. A member's catalog is
//! current only once its partition has caught up with its group after a start
//! (`Shard::await_current_catalog`); before that a table it does not know gets
//! ServiceUnavailable (retryable), not ResourceNotFoundException.
//!
//! DeleteTable: every node, as it applies the deletion, stops its replicas of the table's
//! partitions and drops their data and their hold on the WAL (`ReplicatedLog::retire`); a
//! catalog takes a partition for deleted only if its table id was handed out and no table has
//! it (`Catalog::deleted`), so a node whose catalog lags never drops a new table's partition.
//! The data is removed in the background; table ids are never reused, so nothing sees it
//! meanwhile, and a removal a stop interrupted is finished at the next start.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::rc::Rc;
use std::time::Duration;

use tessera_engine::paxos::MemberKind;
use tessera_engine::{Command, KeySchema, PartitionId, ReplicationLog};
use tessera_wire::{ErrorCode, RangeSpec, Response, Tags, Throughput, WireError};

use super::mesh::{unexpected, Op, OpResult};
use super::{engine_error, invalid, Shard};
use crate::catalog::{
    retag, validate_table_name, validate_throughput, Catalog, NewMap, TableInfo, CATALOG_PARTITION, NEXT_ID_KEY,
    PARTITIONS_MAX,
};
use crate::log::Log;

/// Most table names one ListTables returns.
const LIST_TABLES_MAX: u32 = 100;

impl Shard {
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
                let table =
                    TableInfo::decode(&value, self.cores).ok_or("damaged catalog: a table entry does not decode")?;
                if let Some(range) = table.map.ranges.iter().find(|range| usize::from(range.core) >= self.cores) {
                    return Err(format!(
                        "table {} has a partition on core {} and this node runs {} cores: start it with --cores {} or more",
                        table.name,
                        range.core,
                        self.cores,
                        range.core + 1
                    ));
                }
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

    pub(super) fn install_catalog(&self, catalog: Catalog) {
        if let Log::Replicated(log) = &self.log {
            // Each table's partitions lead on the nodes in turn (those this core owns).
            let mut owned = Vec::new();
            for table in catalog.tables.values() {
                for (index, range) in table.map.ranges.iter().enumerate() {
                    if usize::from(range.core) != self.core {
                        continue;
                    }
                    log.learn_group(range.partition, &table.members);
                    log.prefer_leader(range.partition, range.leader, index as u32);
                    owned.push(range.partition);
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

    pub(super) async fn create_table(
        self: &Rc<Shard>,
        name: String,
        key_schema: KeySchema,
        map: NewMap,
        throughput: Option<Throughput>,
        tags: BTreeMap<String, String>,
    ) -> Result<OpResult, WireError> {
        let _guard = self.lock_catalog().await?;
        if self.catalog.borrow().tables.contains_key(&name) {
            return Err(WireError::new(ErrorCode::ResourceInUseException, format!("Table already exists: {name}")));
        }
        // `execute_create` held an even map's count to a table's, and gave none the cores'.
        if let NewMap::Even(partitions) = map {
            assert!((1..=PARTITIONS_MAX).contains(&partitions), "a table of {partitions} partitions");
        }
        let id = self.catalog.borrow().next_id;
        // Table ids are never reused (the same batch that writes a table writes the next id):
        // a deleted table's data, removed in the background, is nobody else's.
        assert!(
            self.catalog.borrow().tables.values().all(|table| table.id < id),
            "the catalog's next table id {id} is not above every table's"
        );
        // In a cluster the table's groups start as the catalog's is now (after a lost node
        // was replaced, on the nodes that replaced it).
        let members = match &self.log {
            Log::Replicated(log) => log.members(CATALOG_PARTITION),
            Log::Local(_) => Vec::new(),
        };
        assert!(id < u32::MAX, "table ids are below u32::MAX (the catalog's version mark)");
        // Leaders spread over the group's full members, in id order.
        let mut leaders: Vec<_> =
            members.iter().filter(|member| member.kind == MemberKind::Full).map(|member| member.id).collect();
        leaders.sort_unstable();
        let map = map.lay_out(id, self.cores, &leaders).map_err(|why| invalid(format!("the partition map: {why}")))?;
        let table =
            TableInfo { id, name: name.clone(), key_schema, map, created_at_ms: now_ms(), members, throughput, tags };
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
    pub(super) async fn retag(
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

    pub(super) async fn delete_table(self: &Rc<Shard>, name: &str) -> Result<OpResult, WireError> {
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
            let partitions: Vec<PartitionId> = (0..table.partitions())
                .filter(|&index| self.owner(&table, index) == core)
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

    pub(super) async fn execute_create(
        self: &Rc<Shard>,
        table: String,
        key_schema: KeySchema,
        partitions: u32,
        ranges: Vec<RangeSpec>,
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
        let map = match (partitions, ranges.is_empty()) {
            (0, true) => NewMap::Even(self.cores as u32),
            (_, true) => NewMap::Even(partitions),
            (0, false) => NewMap::Placed(ranges),
            (_, false) if partitions as usize == ranges.len() => NewMap::Placed(ranges),
            (_, false) => {
                return Err(invalid(format!(
                    "{partitions} partitions and a partition map of {} ranges: give the map alone, or its count",
                    ranges.len()
                )))
            }
        };
        match self.call(0, Op::CreateTable { name: table, key_schema, map, throughput, tags }).await {
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
    pub(super) async fn execute_retag(
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

    pub(super) async fn describe(self: &Rc<Shard>, name: &str, counts: bool) -> Result<Response, WireError> {
        validate_table_name(name, true)?;
        let table = self.catalog.borrow().table(name).cloned()?;
        let (mut items, mut bytes) = (0, 0);
        for core in (0..self.cores).filter(|_| counts) {
            let partitions = (0..table.partitions())
                .filter(|&index| self.owner(&table, index) == core)
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

    pub(super) fn list_tables(&self, exclusive_start_table: Option<String>, limit: u32) -> Result<Response, WireError> {
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

    /// The table an item operation names (a name DynamoDB's rules refuse is a
    /// ValidationException, not a missing table).
    pub(super) fn table(&self, name: &str) -> Result<TableInfo, WireError> {
        validate_table_name(name, false)?;
        self.catalog.borrow().table(name).cloned()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}
