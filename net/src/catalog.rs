//! Tables: their durable descriptions, names, and where a table's partitions are.
//!
//! Each table holds its partition map (`PartitionMap`): ranges of the 64-bit partition-key
//! hash space, in order, each held by one partition, with its storage partition id (opaque to
//! routing), the core its replicas live on, and the group member preferred to lead it. The map
//! has an epoch, bumped by every change to it. Requests are routed by the map, never by a
//! formula: a new table's map is laid out once (`PartitionMap::even`: equal ranges, cores and
//! leaders in turn) and stored. A storage partition id is `storage_partition(table_id, i)`
//! (the table id above the index's 20 bits), so ids are never reused across tables (table ids
//! only grow) and partition 0 is free for the catalog itself.

use std::collections::BTreeMap;

use tessera_engine::paxos::{decode_configuration, encode_members, Member, ReplicaId};
use tessera_engine::{KeyAttribute, KeySchema, KeyType, PartitionId};
use tessera_wire::{
    ErrorCode, RangeSpec, TableDescription, TableStatus, Throughput, WireError, MAP_IN_DESCRIPTION_MAX,
};
pub use tessera_wire::{PartitionMap, PartitionRange};

use crate::messages::{self, TableNameFaults};

/// Storage partition (on core 0) holding the catalog.
pub const CATALOG_PARTITION: PartitionId = 0;
/// The low bits of a storage partition id that hold the partition's index in its table; the
/// table id is above them.
const PARTITION_INDEX_BITS: u32 = 20;
/// Most partitions a table may have.
pub const PARTITIONS_MAX: u32 = 1 << PARTITION_INDEX_BITS;

/// The storage partition id of partition `index` of table `table`: the one place that lays
/// the id out (`table_of` and `index_of` read it back).
pub fn storage_partition(table: u32, index: u32) -> PartitionId {
    assert!(index < PARTITIONS_MAX, "partition index {index} beyond a table's {PARTITIONS_MAX}");
    (u64::from(table) << PARTITION_INDEX_BITS) | u64::from(index)
}

/// The table id in a storage partition id (0: the catalog's).
pub fn table_of(partition: PartitionId) -> u64 {
    partition >> PARTITION_INDEX_BITS
}

/// The partition's index in its table.
pub fn index_of(partition: PartitionId) -> u32 {
    (partition & u64::from(PARTITIONS_MAX - 1)) as u32
}
const TABLE_KEY_PREFIX: &[u8] = b"table/";
/// Catalog key of the next table id.
pub const NEXT_ID_KEY: &[u8] = b"next-table-id";

/// How the server lays out and checks a table's partition map (the map itself, `PartitionMap`,
/// is the wire's: clients route by the same type).
pub trait MapLayout: Sized {
    /// A new table's map: `count` equal ranges of the hash space, on `cores` cores in turn,
    /// preferring `leaders` in turn (the group's full members, in id order).
    fn even(table: u32, count: u32, cores: usize, leaders: &[ReplicaId]) -> Self;

    /// A new table's map with the ranges an administrator chose (starts and cores, in order),
    /// preferring `leaders` in turn; `Err` says why the ranges cannot be a map for `cores`.
    fn placed(table: u32, ranges: &[RangeSpec], cores: usize, leaders: &[ReplicaId]) -> Result<Self, String>;

    /// What every map holds to: ranges from hash 0, their starts strictly increasing, their
    /// partitions distinct and `table`'s, at most `PARTITIONS_MAX` of them.
    fn check(&self, table: u32) -> Result<(), String>;
}

impl MapLayout for PartitionMap {
    fn even(table: u32, count: u32, cores: usize, leaders: &[ReplicaId]) -> PartitionMap {
        assert!((1..=PARTITIONS_MAX).contains(&count) && cores >= 1, "a map of {count} partitions on {cores} cores");
        let ranges = (0..count)
            .map(|index| PartitionRange {
                start: range_start(u64::from(index), u64::from(count)).expect("index < count"),
                partition: storage_partition(table, index),
                core: u16::try_from(index as usize % cores).expect("cores fit in u16"),
                leader: leaders.get(index as usize % leaders.len().max(1)).copied().unwrap_or(0),
            })
            .collect();
        PartitionMap { epoch: 1, ranges }
    }

    fn placed(table: u32, ranges: &[RangeSpec], cores: usize, leaders: &[ReplicaId]) -> Result<PartitionMap, String> {
        if ranges.len() > PARTITIONS_MAX as usize {
            return Err(format!("{} ranges: a table may have at most {PARTITIONS_MAX} partitions", ranges.len()));
        }
        if let Some(range) = ranges.iter().find(|range| usize::from(range.core) >= cores) {
            return Err(format!("a range on core {}: this node runs {cores} cores", range.core));
        }
        let ranges = ranges
            .iter()
            .enumerate()
            .map(|(index, range)| PartitionRange {
                start: range.start,
                partition: storage_partition(table, index as u32),
                core: range.core,
                leader: leaders.get(index % leaders.len().max(1)).copied().unwrap_or(0),
            })
            .collect();
        let map = PartitionMap { epoch: 1, ranges };
        map.check(table)?;
        Ok(map)
    }

    fn check(&self, table: u32) -> Result<(), String> {
        let count = self.ranges.len();
        if !(1..=PARTITIONS_MAX as usize).contains(&count) {
            return Err(format!("a partition map of {count} ranges (1 to {PARTITIONS_MAX})"));
        }
        if self.ranges[0].start != 0 {
            return Err(format!("the first range starts at hash {:#x}, not 0", self.ranges[0].start));
        }
        if let Some(pair) = self.ranges.windows(2).find(|pair| pair[0].start >= pair[1].start) {
            return Err(format!("range starts {:#x} then {:#x}: not increasing", pair[0].start, pair[1].start));
        }
        let mut ids: Vec<PartitionId> = self.ranges.iter().map(|range| range.partition).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err("two ranges name the same partition".into());
        }
        if let Some(range) = self.ranges.iter().find(|range| table_of(range.partition) != u64::from(table)) {
            return Err(format!("partition {:#x} is not table {table}'s", range.partition));
        }
        Ok(())
    }
}

/// How a new table's map is laid out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewMap {
    /// This many equal ranges, on the cores in turn (`MapLayout::even`).
    Even(u32),
    /// The ranges an administrator chose (`MapLayout::placed`).
    Placed(Vec<RangeSpec>),
}

impl NewMap {
    /// The map of table `table` on `cores` cores, leaders preferred in turn from `leaders`.
    pub fn lay_out(&self, table: u32, cores: usize, leaders: &[ReplicaId]) -> Result<PartitionMap, String> {
        match self {
            NewMap::Even(count) => Ok(PartitionMap::even(table, *count, cores, leaders)),
            NewMap::Placed(ranges) => PartitionMap::placed(table, ranges, cores, leaders),
        }
    }
}

/// A table as the catalog holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableInfo {
    pub id: u32,
    pub name: String,
    pub key_schema: KeySchema,
    /// Where its partitions are.
    pub map: PartitionMap,
    pub created_at_ms: u64,
    /// In a cluster, the configuration each of the table's replication groups starts with:
    /// the catalog's group when the table was created (so a table created after a lost node
    /// was replaced starts on the nodes that replaced it). Empty on a single node, and in
    /// tables created before groups were recorded (they start on the cluster file's nodes).
    pub members: Vec<Member>,
    /// BillingMode PROVISIONED's throughput (recorded and reported, not enforced); `None`:
    /// PAY_PER_REQUEST.
    pub throughput: Option<Throughput>,
    /// The table's tags (TagResource), by key.
    pub tags: BTreeMap<String, String>,
}

/// An encoded `TableInfo` of version 2 or later starts with this (where the first format has
/// its id, and no table has id `u32::MAX`), then its version.
const VERSIONED: [u8; 4] = [0xFF; 4];
const TABLE_FORMAT_VERSION: u8 = 2;
/// Marks the optional sections of a version 1 `TableInfo` (none is a key type byte). They
/// come in this order after the sort key: throughput, tags, members (which run to the end).
const MEMBERS_MARK: u8 = 0xC0;
const THROUGHPUT_MARK: u8 = 0xC1;
const TAGS_MARK: u8 = 0xC2;
/// Most tags a table may have (DynamoDB's limit).
pub const TAGS_MAX: usize = 50;
/// The largest capacity units DynamoDB takes for a table's provisioned throughput.
pub const CAPACITY_UNITS_MAX: u64 = 1_000_000_000_000;

impl TableInfo {
    /// How many partitions it has.
    pub fn partitions(&self) -> u32 {
        self.map.ranges.len() as u32
    }

    /// The storage partition id of partition `index` (its position in the map).
    pub fn partition_id(&self, index: u32) -> PartitionId {
        self.map.ranges[index as usize].partition
    }

    /// The core partition `index` lives on.
    pub fn core_of(&self, index: u32) -> usize {
        usize::from(self.map.ranges[index as usize].core)
    }

    /// The partition holding partition-key hash `hash`.
    pub fn partition_of(&self, hash: u64) -> u32 {
        self.map.index_of_hash(hash)
    }

    /// The first hash of partition `index`, or `None` past the last.
    pub fn partition_start(&self, index: u32) -> Option<u64> {
        self.map.ranges.get(index as usize).map(|range| range.start)
    }

    /// The position in the map of storage partition `partition`, if it is the table's. Every
    /// op's owner check asks (`assert_runs_here`): a map as `PartitionMap::even` laid it out
    /// holds partition index `i` at position `i`, found at once; any other is searched.
    pub fn index_of_partition(&self, partition: PartitionId) -> Option<u32> {
        let at = index_of(partition);
        if self.map.ranges.get(at as usize).is_some_and(|range| range.partition == partition) {
            return Some(at);
        }
        self.map.ranges.iter().position(|range| range.partition == partition).map(|index| index as u32)
    }

    pub fn describe(&self, item_count: u64, size_bytes: u64) -> TableDescription {
        TableDescription {
            name: self.name.clone(),
            key_schema: self.key_schema.clone(),
            partitions: self.partitions(),
            status: TableStatus::Active,
            created_at_ms: self.created_at_ms,
            item_count,
            size_bytes,
            throughput: self.throughput,
            map: (self.map.ranges.len() <= MAP_IN_DESCRIPTION_MAX).then(|| self.map.clone()),
        }
    }

    /// The catalog key of this table.
    pub fn key(name: &str) -> Vec<u8> {
        [TABLE_KEY_PREFIX, name.as_bytes()].concat()
    }

    /// The entry as the catalog stores it (FORMAT.md, "Catalog entries"), version 2.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = VERSIONED.to_vec();
        out.push(TABLE_FORMAT_VERSION);
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.created_at_ms.to_le_bytes());
        put_text(&mut out, &self.name);
        put_text(&mut out, &self.key_schema.partition.name);
        out.push(key_type_byte(self.key_schema.partition.key_type));
        match &self.key_schema.sort {
            None => out.push(0),
            Some(sort) => {
                out.push(1);
                put_text(&mut out, &sort.name);
                out.push(key_type_byte(sort.key_type));
            }
        }
        let throughput = self.throughput.map_or((0, 0), |units| (units.read_units, units.write_units));
        out.extend_from_slice(&throughput.0.to_le_bytes());
        out.extend_from_slice(&throughput.1.to_le_bytes());
        out.extend_from_slice(&(self.tags.len() as u32).to_le_bytes());
        for text in self.tags.iter().flat_map(|(key, value)| [key, value]) {
            put_text(&mut out, text);
        }
        let mut members = Vec::new();
        encode_members(&self.members, &mut members);
        out.extend_from_slice(&(members.len() as u32).to_le_bytes());
        out.extend_from_slice(&members);
        out.extend_from_slice(&self.map.epoch.to_le_bytes());
        out.extend_from_slice(&(self.map.ranges.len() as u32).to_le_bytes());
        for range in &self.map.ranges {
            out.extend_from_slice(&range.start.to_le_bytes());
            out.extend_from_slice(&range.partition.to_le_bytes());
            out.extend_from_slice(&range.core.to_le_bytes());
            out.extend_from_slice(&range.leader.to_le_bytes());
        }
        out
    }

    /// An entry of any version. An entry of the first version, written before partition maps
    /// were stored, gets the map the first layout gave it on a node of `cores` cores (equal
    /// ranges, core `i % cores`) and no preferred leaders (`Shard::install_catalog` prefers
    /// the group's members in turn for those).
    pub fn decode(bytes: &[u8], cores: usize) -> Option<TableInfo> {
        match bytes.strip_prefix(&VERSIONED) {
            Some(rest) => TableInfo::decode_v2(rest),
            None => TableInfo::decode_v1(bytes, cores),
        }
    }

    fn decode_v2(bytes: &[u8]) -> Option<TableInfo> {
        let mut cursor = Cursor { bytes, at: 0 };
        if cursor.take(1)? != [TABLE_FORMAT_VERSION] {
            return None;
        }
        let id = cursor.u32()?;
        let created_at_ms = cursor.u64()?;
        let name = cursor.text()?;
        let partition = KeyAttribute { name: cursor.text()?, key_type: key_type_of(cursor.take(1)?[0])? };
        let sort = match cursor.take(1)? {
            [0] => None,
            [1] => Some(KeyAttribute { name: cursor.text()?, key_type: key_type_of(cursor.take(1)?[0])? }),
            _ => return None,
        };
        let throughput = match (cursor.u64()?, cursor.u64()?) {
            (0, 0) => None,
            (0, _) | (_, 0) => return None,
            (read_units, write_units) => Some(Throughput { read_units, write_units }),
        };
        let mut tags = BTreeMap::new();
        for _ in 0..cursor.u32()? {
            let key = cursor.text()?;
            if tags.insert(key, cursor.text()?).is_some() {
                return None;
            }
        }
        let members_len = cursor.u32()? as usize;
        let members = decode_configuration(cursor.take(members_len)?).ok()?;
        let epoch = cursor.u64()?;
        let count = cursor.u32()?;
        if !(1..=PARTITIONS_MAX).contains(&count) {
            return None;
        }
        let mut ranges = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let (start, partition) = (cursor.u64()?, cursor.u64()?);
            let core = u16::from_le_bytes(cursor.take(2)?.try_into().ok()?);
            ranges.push(PartitionRange { start, partition, core, leader: cursor.u32()? });
        }
        if !cursor.rest().is_empty() {
            return None;
        }
        let map = PartitionMap { epoch, ranges };
        map.check(id).ok()?;
        let key_schema = KeySchema { partition, sort };
        Some(TableInfo { id, name, key_schema, map, created_at_ms, members, throughput, tags })
    }

    fn decode_v1(bytes: &[u8], cores: usize) -> Option<TableInfo> {
        let mut cursor = Cursor { bytes, at: 0 };
        let id = u32::from_le_bytes(cursor.take(4)?.try_into().ok()?);
        let partitions = u32::from_le_bytes(cursor.take(4)?.try_into().ok()?);
        if !(1..=PARTITIONS_MAX).contains(&partitions) {
            return None;
        }
        let created_at_ms = u64::from_le_bytes(cursor.take(8)?.try_into().ok()?);
        let name = cursor.text()?;
        let partition_name = cursor.text()?;
        let partition_type = key_type_of(cursor.take(1)?[0])?;
        let (mut sort, mut throughput, mut tags, mut members) = (None, None, BTreeMap::new(), Vec::new());
        // Each section may follow only those before it in the order written.
        let mut stage = 0;
        while let Some(&[byte]) = cursor.take(1) {
            stage = match byte {
                THROUGHPUT_MARK if stage < 2 => {
                    let read_units = u64::from_le_bytes(cursor.take(8)?.try_into().ok()?);
                    let write_units = u64::from_le_bytes(cursor.take(8)?.try_into().ok()?);
                    if read_units == 0 || write_units == 0 {
                        return None;
                    }
                    throughput = Some(Throughput { read_units, write_units });
                    2
                }
                TAGS_MARK if stage < 3 => {
                    let count = u32::from_le_bytes(cursor.take(4)?.try_into().ok()?);
                    if count == 0 {
                        return None;
                    }
                    for _ in 0..count {
                        let key = cursor.text()?;
                        if tags.insert(key, cursor.text()?).is_some() {
                            return None;
                        }
                    }
                    3
                }
                MEMBERS_MARK => {
                    members = decode_configuration(cursor.rest()).ok()?;
                    4
                }
                byte if stage == 0 => {
                    sort = Some(KeyAttribute { key_type: key_type_of(byte)?, name: cursor.text()? });
                    1
                }
                _ => return None,
            };
        }
        let key_schema = KeySchema { partition: KeyAttribute { name: partition_name, key_type: partition_type }, sort };
        let map = PartitionMap::even(id, partitions, cores, &[]);
        Some(TableInfo { id, name, key_schema, map, created_at_ms, members, throughput, tags })
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        Some(slice)
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.at..];
        self.at = self.bytes.len();
        rest
    }

    fn text(&mut self) -> Option<String> {
        let len = self.u32()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn key_type_byte(key_type: KeyType) -> u8 {
    match key_type {
        KeyType::S => 0,
        KeyType::N => 1,
        KeyType::B => 2,
    }
}

fn key_type_of(byte: u8) -> Option<KeyType> {
    [KeyType::S, KeyType::N, KeyType::B].get(usize::from(byte)).copied()
}

/// A storage partition as people read it: the catalog, or a table's id and partition index.
pub fn partition_name(partition: PartitionId) -> String {
    match partition {
        CATALOG_PARTITION => "catalog".into(),
        _ => format!("table {} partition {}", table_of(partition), index_of(partition)),
    }
}

/// The hash an encoded key (or partition-key prefix) starts with.
pub fn key_hash(encoded: &[u8]) -> u64 {
    u64::from_be_bytes(encoded[..8].try_into().expect("encoded keys start with the hash"))
}

/// The first hash of range `index` when the hash space is cut into `count` equal ranges, or
/// `None` when `index == count` (the end of the space).
pub fn range_start(index: u64, count: u64) -> Option<u64> {
    let start = (u128::from(index) << 64).div_ceil(u128::from(count));
    u64::try_from(start).ok()
}

/// Every table, by name, with the next table id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    pub tables: BTreeMap<String, TableInfo>,
    pub next_id: u32,
    /// Whether the catalog is known complete. A cluster member's is not from its start until
    /// its catalog partition has caught up with its group (tables made while it was down
    /// arrive in the log, not in its checkpoint): until then a table it does not know gets a
    /// retryable error, never ResourceNotFoundException. Not stored.
    pub current: bool,
}

impl Catalog {
    /// Whether storage partition `partition` belongs to no table (its table was deleted and
    /// its data not yet removed).
    pub fn orphaned(&self, partition: PartitionId) -> bool {
        partition != CATALOG_PARTITION
            && !self.tables.values().any(|table| table.index_of_partition(partition).is_some())
    }

    /// Whether storage partition `partition` belonged to a table this catalog knows was
    /// deleted: its table id was handed out (below `next_id`, which the same catalog entry
    /// advanced) and no table has it. A catalog that is behind says no for tables it has not
    /// seen created, so a lagging replica never takes a new table's partition for a deleted one.
    pub fn deleted(&self, partition: PartitionId) -> bool {
        table_of(partition) < u64::from(self.next_id) && self.orphaned(partition)
    }

    pub fn table(&self, name: &str) -> Result<&TableInfo, WireError> {
        self.tables.get(name).ok_or_else(|| match self.current {
            true => WireError::new(
                ErrorCode::ResourceNotFoundException,
                format!("Requested resource not found: Table: {name} not found"),
            ),
            false => WireError::new(
                ErrorCode::ServiceUnavailable,
                format!("this node is still catching up on its table catalog since it started, so it cannot yet tell whether table {name} exists; retry"),
            ),
        })
    }
}

/// DynamoDB's rule for table names; `control_plane` picks the message of CreateTable,
/// DescribeTable and DeleteTable rather than the item operations'.
pub fn validate_table_name(name: &str, control_plane: bool) -> Result<(), WireError> {
    let faults = TableNameFaults::of(name);
    if faults.any() {
        Err(WireError::new(ErrorCode::ValidationException, messages::bad_table_name(name, faults, control_plane)))
    } else {
        Ok(())
    }
}

/// DynamoDB's rules for the tags a request sets (TaggingRestrictions.html): keys of 1 to 128
/// characters, values of at most 256, both of letters, white space, numbers and `+ - = . _ : /`;
/// no key in the reserved `aws:` namespace. How many a table may have is checked where they
/// are added to its own (`TAGS_MAX`).
pub fn validate_tags(tags: &[(String, String)]) -> Result<(), WireError> {
    let allowed = |c: char| c.is_alphanumeric() || c.is_whitespace() || "+-=._:/".contains(c);
    for (index, (key, value)) in tags.iter().enumerate() {
        for (text, member, min, max) in [(key, "key", 1, 128), (value, "value", 0, 256)] {
            let length = text.chars().count();
            let rule = if length < min {
                format!("Member must have length greater than or equal to {min}")
            } else if length > max {
                format!("Member must have length less than or equal to {max}")
            } else if !text.chars().all(allowed) {
                format!("Member must satisfy regular expression pattern: {}", messages::TAG_PATTERN)
            } else {
                continue;
            };
            return Err(validation(messages::bad_tag(text, index + 1, member, &rule)));
        }
        if key.starts_with("aws:") {
            return Err(validation(messages::reserved_tag_key(key)));
        }
    }
    Ok(())
}

/// A table's tags once `add` is set and `remove` removed, held to DynamoDB's 50 per table.
pub fn retag(
    tags: &BTreeMap<String, String>,
    add: &[(String, String)],
    remove: &[String],
) -> Result<BTreeMap<String, String>, WireError> {
    validate_tags(add)?;
    let mut tags = tags.clone();
    tags.extend(add.iter().cloned());
    for key in remove {
        tags.remove(key);
    }
    if tags.len() > TAGS_MAX {
        return Err(validation(messages::too_many_tags(tags.len())));
    }
    Ok(tags)
}

/// DynamoDB's bound on provisioned capacity units (each at least 1, which the wire protocol
/// already holds to: 0 stands for PAY_PER_REQUEST).
pub fn validate_throughput(throughput: Option<Throughput>) -> Result<(), WireError> {
    let Some(units) = throughput else { return Ok(()) };
    for (value, which) in [(units.read_units, "ReadCapacityUnits"), (units.write_units, "WriteCapacityUnits")] {
        if value > CAPACITY_UNITS_MAX {
            return Err(validation(messages::capacity_units_out_of_bounds(value, which)));
        }
    }
    Ok(())
}

fn validation(message: String) -> WireError {
    WireError::new(ErrorCode::ValidationException, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_info_round_trips() {
        let tables = [
            TableInfo {
                id: 7,
                name: "orders".into(),
                key_schema: KeySchema::composite(("customer", KeyType::S), ("n", KeyType::N)),
                map: PartitionMap::even(7, 12, 1, &[]),
                created_at_ms: 99,
                members: Vec::new(),
                throughput: None,
                tags: BTreeMap::new(),
            },
            TableInfo {
                id: 8,
                name: "users".into(),
                key_schema: KeySchema::hash_only("id", KeyType::B),
                map: PartitionMap::even(8, 1, 1, &[]),
                created_at_ms: 5,
                members: vec![Member::full(1), Member::log(4), Member::full(3)],
                throughput: None,
                tags: BTreeMap::new(),
            },
            TableInfo {
                id: 9,
                name: "carts".into(),
                key_schema: KeySchema::composite(("customer", KeyType::S), ("n", KeyType::N)),
                map: PartitionMap::even(9, 3, 1, &[]),
                created_at_ms: 5,
                members: vec![Member::full(1), Member::full(2), Member::full(3)],
                throughput: None,
                tags: BTreeMap::new(),
            },
        ];
        let provisioned = TableInfo {
            id: 10,
            map: PartitionMap::even(10, 3, 2, &[1, 2, 3]),
            throughput: Some(Throughput { read_units: 5, write_units: 1_000_000_000_000 }),
            tags: BTreeMap::from([("team".to_string(), "blue".to_string()), ("empty".to_string(), String::new())]),
            ..tables[2].clone()
        };
        let tagged = TableInfo {
            id: 11,
            map: PartitionMap::even(11, 12, 4, &[]),
            tags: provisioned.tags.clone(),
            ..tables[0].clone()
        };
        let hash_only = TableInfo { id: 12, map: uneven(12), throughput: provisioned.throughput, ..tables[1].clone() };
        for table in tables.into_iter().chain([provisioned, tagged, hash_only]) {
            let encoded = table.encode();
            assert_eq!(TableInfo::decode_any(&encoded), Some(table.clone()));
            // Every truncation, and trailing bytes, are refused: version 2 has no optional parts.
            for cut in 0..encoded.len() {
                assert_eq!(TableInfo::decode_any(&encoded[..cut]), None, "cut at {cut}");
            }
            assert_eq!(TableInfo::decode_any(&[encoded.as_slice(), &[0]].concat()), None);
            // A map that breaks its rules does not decode.
            let mut bad = table.clone();
            bad.map.ranges[0].start = 1;
            assert_eq!(TableInfo::decode_any(&bad.encode()), None);
        }
    }

    /// A map no formula makes: four ranges of very different widths, placed and led unevenly.
    fn uneven(table: u32) -> PartitionMap {
        let range = |start: u64, index: u32, core: u16, leader: ReplicaId| PartitionRange {
            start,
            partition: storage_partition(table, index),
            core,
            leader,
        };
        PartitionMap {
            epoch: 7,
            ranges: vec![range(0, 3, 1, 2), range(10, 0, 0, 0), range(1 << 40, 9, 1, 3), range(u64::MAX - 5, 1, 1, 1)],
        }
    }

    #[test]
    fn partition_maps_route_by_their_ranges_and_keep_their_rules() {
        let map = uneven(4);
        map.check(4).unwrap();
        for (hash, index) in
            [(0, 0), (9, 0), (10, 1), ((1 << 40) - 1, 1), (1 << 40, 2), (u64::MAX - 6, 2), (u64::MAX, 3)]
        {
            assert_eq!(map.index_of_hash(hash), index, "hash {hash:#x}");
        }
        let with = |change: &dyn Fn(&mut PartitionMap)| {
            let mut map = uneven(4);
            change(&mut map);
            map.check(4)
        };
        assert!(with(&|map| map.ranges[0].start = 3).unwrap_err().contains("not 0"));
        assert!(with(&|map| map.ranges[2].start = 10).unwrap_err().contains("not increasing"));
        assert!(with(&|map| map.ranges[1].partition = map.ranges[0].partition).unwrap_err().contains("same partition"));
        assert!(with(&|map| map.ranges[3].partition = storage_partition(5, 1)).unwrap_err().contains("not table 4's"));
        assert!(with(&|map| map.ranges.clear()).is_err());
        assert!(map.check(5).is_err());
        let table = TableInfo {
            id: 4,
            name: "t".into(),
            key_schema: KeySchema::hash_only("id", KeyType::S),
            map: uneven(4),
            created_at_ms: 0,
            members: Vec::new(),
            throughput: None,
            tags: BTreeMap::new(),
        };
        for (index, position) in [(3, Some(0)), (0, Some(1)), (9, Some(2)), (1, Some(3)), (2, None)] {
            assert_eq!(table.index_of_partition(storage_partition(4, index)), position, "partition index {index}");
        }
        assert_eq!(table.index_of_partition(storage_partition(5, 0)), None);
        let even = PartitionMap::even(4, 5, 2, &[1, 2, 3]);
        let cores: Vec<u16> = even.ranges.iter().map(|range| range.core).collect();
        let leaders: Vec<ReplicaId> = even.ranges.iter().map(|range| range.leader).collect();
        assert_eq!((cores, leaders), (vec![0, 1, 0, 1, 0], vec![1, 2, 3, 1, 2]));
    }

    impl TableInfo {
        fn decode_any(bytes: &[u8]) -> Option<TableInfo> {
            TableInfo::decode(bytes, 1)
        }

        /// The entry as the first format wrote it (before partition maps were stored).
        fn encode_v1(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&self.id.to_le_bytes());
            out.extend_from_slice(&self.partitions().to_le_bytes());
            out.extend_from_slice(&self.created_at_ms.to_le_bytes());
            for text in [&self.name, &self.key_schema.partition.name] {
                put_text(&mut out, text);
            }
            out.push(key_type_byte(self.key_schema.partition.key_type));
            if let Some(sort) = &self.key_schema.sort {
                out.push(key_type_byte(sort.key_type));
                put_text(&mut out, &sort.name);
            }
            if let Some(throughput) = self.throughput {
                out.push(THROUGHPUT_MARK);
                out.extend_from_slice(&throughput.read_units.to_le_bytes());
                out.extend_from_slice(&throughput.write_units.to_le_bytes());
            }
            if !self.tags.is_empty() {
                out.push(TAGS_MARK);
                out.extend_from_slice(&(self.tags.len() as u32).to_le_bytes());
                for text in self.tags.iter().flat_map(|(key, value)| [key, value]) {
                    put_text(&mut out, text);
                }
            }
            if !self.members.is_empty() {
                out.push(MEMBERS_MARK);
                encode_members(&self.members, &mut out);
            }
            out
        }
    }

    /// An entry of the first format reads with the map its layout gave it on this node.
    #[test]
    fn entries_of_the_first_format_read_with_the_map_their_layout_gave() {
        let table = TableInfo {
            id: 6,
            name: "old".into(),
            key_schema: KeySchema::hash_only("id", KeyType::S),
            map: PartitionMap::even(6, 5, 3, &[]),
            created_at_ms: 1,
            members: vec![Member::full(1), Member::full(2)],
            throughput: Some(Throughput { read_units: 2, write_units: 3 }),
            tags: BTreeMap::from([("k".to_string(), "v".to_string())]),
        };
        assert_eq!(TableInfo::decode(&table.encode_v1(), 3), Some(table.clone()));
        let on_two_cores = TableInfo::decode(&table.encode_v1(), 2).unwrap();
        assert_eq!(on_two_cores.map, PartitionMap::even(6, 5, 2, &[]));
        // Upgraded as soon as it is written again.
        assert_eq!(TableInfo::decode(&on_two_cores.encode(), 3), Some(on_two_cores));
    }

    #[test]
    fn catalogs_written_before_throughput_and_tags_still_read() {
        // A table as the catalog encoded it before BillingMode and tags were recorded: id 7,
        // 12 partitions, created at 99 ms, "orders", HASH customer (S), RANGE n (N), then the
        // members section.
        let mut old = Vec::new();
        old.extend_from_slice(&7u32.to_le_bytes());
        old.extend_from_slice(&12u32.to_le_bytes());
        old.extend_from_slice(&99u64.to_le_bytes());
        for text in ["orders", "customer"] {
            old.extend_from_slice(&(text.len() as u32).to_le_bytes());
            old.extend_from_slice(text.as_bytes());
        }
        old.extend_from_slice(&[0, 1, 1, 0, 0, 0, b'n', MEMBERS_MARK]);
        let members = vec![Member::full(1), Member::full(2), Member::full(3)];
        encode_members(&members, &mut old);
        let table = TableInfo::decode_any(&old).expect("an old entry decodes");
        assert_eq!(table.key_schema, KeySchema::composite(("customer", KeyType::S), ("n", KeyType::N)));
        assert_eq!((table.members, table.throughput, table.tags.len()), (members, None, 0));
        // Sections out of order, repeated, or empty are refused.
        let base = TableInfo { members: Vec::new(), ..TableInfo::decode_any(&old).unwrap() };
        let mut throughput_twice =
            TableInfo { throughput: Some(Throughput { read_units: 1, write_units: 1 }), ..base.clone() }.encode_v1();
        let section = throughput_twice.split_off(throughput_twice.len() - 17);
        throughput_twice.extend_from_slice(&[section.clone(), section].concat());
        assert_eq!(TableInfo::decode_any(&throughput_twice), None);
        let mut no_tags = base.encode_v1();
        no_tags.push(TAGS_MARK);
        no_tags.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(TableInfo::decode_any(&no_tags), None);
        let mut zero_units = base.encode_v1();
        zero_units.push(THROUGHPUT_MARK);
        zero_units.extend_from_slice(&[0; 16]);
        assert_eq!(TableInfo::decode_any(&zero_units), None);
    }

    #[test]
    fn tags_follow_dynamodb_limits() {
        let tag = |key: &str, value: &str| (key.to_string(), value.to_string());
        assert!(
            validate_tags(&[tag("k", ""), tag(&"x".repeat(128), &"y".repeat(256)), tag("a b+-=._:/9", "ѮѮ")]).is_ok()
        );
        for bad in [
            tag("", "v"),
            tag(&"x".repeat(129), "v"),
            tag("k", &"y".repeat(257)),
            tag("hi!", "v"),
            tag("k", "d%g"),
            tag("aws:x", "v"),
        ] {
            assert_eq!(validate_tags(&[bad]).unwrap_err().code, ErrorCode::ValidationException);
        }
        let fifty: Vec<_> = (0..50).map(|i| tag(&i.to_string(), "v")).collect();
        let tags = retag(&BTreeMap::new(), &fifty, &[]).unwrap();
        assert_eq!(retag(&tags, &[tag("0", "again")], &[]).unwrap()["0"], "again");
        assert!(retag(&tags, &[tag("50", "v")], &[]).is_err());
        assert_eq!(retag(&tags, &[tag("50", "v")], &["1".to_string()]).unwrap().len(), 50);
        assert!(validate_throughput(Some(Throughput { read_units: CAPACITY_UNITS_MAX + 1, write_units: 1 })).is_err());
        assert!(validate_throughput(Some(Throughput { read_units: CAPACITY_UNITS_MAX, write_units: 1 })).is_ok());
    }

    #[test]
    fn clients_route_keys_to_the_core_the_server_places_them_on() {
        use tessera_engine::{AttributeValue, Item};
        let even = PartitionMap::even(3, 13, 3, &[]);
        let uneven = [(0, 2), (1 << 61, 0), (1 << 62, 1), (0xC000_0000_0000_0000, 0)];
        let uneven: Vec<RangeSpec> = uneven.iter().map(|&(start, core)| RangeSpec { start, core }).collect();
        let uneven = PartitionMap::placed(3, &uneven, 3, &[]).unwrap();
        for map in [even, uneven] {
            let table = TableInfo {
                id: 3,
                name: "t".into(),
                key_schema: KeySchema::composite(("customer", KeyType::S), ("n", KeyType::N)),
                map,
                created_at_ms: 0,
                members: Vec::new(),
                throughput: None,
                tags: BTreeMap::new(),
            };
            let description = table.describe(0, 0);
            let mut seen = std::collections::HashSet::new();
            for customer in 0..400 {
                let mut item = Item::new();
                item.insert("customer".into(), AttributeValue::S(format!("c{customer}")));
                item.insert("n".into(), AttributeValue::N(tessera_engine::Number::parse("7").unwrap()));
                let placed = table.partition_of(key_hash(&table.key_schema.encode_key(&item).unwrap().bytes));
                assert_eq!(description.range_of(&item), Some(placed));
                seen.insert(table.core_of(placed));
            }
            assert_eq!(seen.len(), 3, "every core gets keys");
            assert_eq!(description.range_of(&Item::new()), None);
            assert_eq!(TableDescription { map: None, ..description }.range_of(&Item::new()), None);
        }
    }

    #[test]
    fn partitions_cover_the_hash_space_in_order() {
        let table = TableInfo {
            id: 1,
            name: "t".into(),
            key_schema: KeySchema::hash_only("id", KeyType::S),
            map: PartitionMap::even(1, 7, 1, &[]),
            created_at_ms: 0,
            members: Vec::new(),
            throughput: None,
            tags: BTreeMap::new(),
        };
        for index in 0..7 {
            let start = table.partition_start(index).unwrap();
            assert_eq!(table.partition_of(start), index);
            if start > 0 {
                assert_eq!(table.partition_of(start - 1), index - 1);
            }
        }
        assert_eq!(table.partition_start(7), None);
        assert_eq!(table.partition_of(u64::MAX), 6);
    }

    #[test]
    fn partitions_of_deleted_tables_are_orphans() {
        let table = TableInfo {
            id: 3,
            name: "kept".into(),
            key_schema: KeySchema::hash_only("id", KeyType::S),
            map: PartitionMap::even(3, 4, 1, &[]),
            created_at_ms: 0,
            members: Vec::new(),
            throughput: None,
            tags: BTreeMap::new(),
        };
        let catalog =
            Catalog { tables: BTreeMap::from([("kept".to_string(), table.clone())]), next_id: 5, current: true };
        assert!(!catalog.orphaned(CATALOG_PARTITION));
        assert!((0..4).all(|index| !catalog.orphaned(table.partition_id(index))));
        assert!(catalog.orphaned(storage_partition(3, 4)));
        // Deleted: a table id already handed out that no table has; not a table yet to come.
        assert!(catalog.deleted(storage_partition(2, 0)) && !catalog.deleted(storage_partition(5, 0)));
        assert!(!catalog.deleted(table.partition_id(0)) && !catalog.deleted(CATALOG_PARTITION));
        assert!(catalog.orphaned(storage_partition(2, 1)));
    }

    #[test]
    fn table_names_follow_dynamodb() {
        assert!(validate_table_name("Orders_2024-v1.0", true).is_ok());
        for bad in ["ab", "has space", "ünï", &"x".repeat(256)] {
            assert_eq!(validate_table_name(bad, true).unwrap_err().code, ErrorCode::ValidationException);
        }
    }
}
