//! Where a partition's state lives in its core's tree: the typed key layout of every keyspace
//! (FORMAT.md, "Keyspaces"). Every tree key is built and read back here, nowhere else.
//!
//! - Data, a partition's items: `partition id (8, big-endian) ‖ encoded primary key`.
//! - System keys start with eight `0xFF` bytes (a partition id no table may use), then a byte
//!   naming their keyspace:
//!   - `0x00` partition metadata: `FF×8 ‖ partition id ‖ suffix`, where the partition id's top
//!     byte is the keyspace byte `0x00` (every partition id is below 2^56, `ID_LIMIT`), and the
//!     suffix is empty (`PartitionMeta`), `c` (its group configuration) or `s` (its schema,
//!     `PartitionSchema`);
//!   - `0x01` change log: `FF×8 ‖ 0x01 ‖ partition id ‖ slot (8, big-endian) ‖ position (4,
//!     big-endian)` → a change record (`machine::ChangeRecord`), in log order.
//!
//! Keyspace bytes `0x02` (local secondary indexes) and `0x03` (transaction intents) are
//! reserved for what is built on this layout next; nothing writes them yet.

use std::ops::Bound;
#[cfg(test)]
use std::ops::RangeBounds;

/// Identifies a partition replica on a core.
pub type PartitionId = u64;

/// A range of tree keys.
pub type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// Every partition id is below this: its top byte is free, so that a metadata key's partition
/// id cannot be read as another keyspace's byte.
pub const ID_LIMIT: PartitionId = 1 << 56;

const SYSTEM_PREFIX: [u8; 8] = [0xFF; 8];
const SPACE_META: u8 = 0x00;
const SPACE_CHANGES: u8 = 0x01;
const CONFIG_SUFFIX: u8 = b'c';
const SCHEMA_SUFFIX: u8 = b's';

/// Checks the invariant every key of this layout relies on.
fn checked(partition: PartitionId) -> [u8; 8] {
    assert!(partition < ID_LIMIT, "partition id {partition:#x} is outside the key layout (below 2^56)");
    partition.to_be_bytes()
}

/// The tree key of `key` in `partition`'s data keyspace.
pub fn data_key(partition: PartitionId, key: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(8 + key.len());
    full.extend_from_slice(&checked(partition));
    full.extend_from_slice(key);
    full
}

/// The bounds of `partition`'s data keyspace.
pub fn data_range(partition: PartitionId) -> KeyRange {
    let start = data_key(partition, &[]);
    // The next partition's start, which may be `ID_LIMIT` itself.
    (Bound::Included(start), Bound::Excluded((partition + 1).to_be_bytes().to_vec()))
}

/// The item key of a data keyspace's tree key, without its partition.
pub fn item_key(tree_key: &[u8]) -> &[u8] {
    &tree_key[8..]
}

/// The partition of a data keyspace's tree key, if it is one.
pub fn data_partition(tree_key: &[u8]) -> Option<PartitionId> {
    let id = PartitionId::from_be_bytes(tree_key.get(..8)?.try_into().ok()?);
    (id < ID_LIMIT).then_some(id)
}

/// Where the system keys begin: every data key is below.
pub fn system_start() -> Vec<u8> {
    SYSTEM_PREFIX.to_vec()
}

fn system_key(space: u8, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + rest.len());
    key.extend_from_slice(&SYSTEM_PREFIX);
    key.push(space);
    key.extend_from_slice(rest);
    key
}

/// The tree key of `partition`'s metadata (`PartitionMeta`).
pub fn meta_key(partition: PartitionId) -> Vec<u8> {
    let mut key = SYSTEM_PREFIX.to_vec();
    key.extend_from_slice(&checked(partition));
    key
}

/// The tree key of `partition`'s replication group configuration.
pub fn config_key(partition: PartitionId) -> Vec<u8> {
    let mut key = meta_key(partition);
    key.push(CONFIG_SUFFIX);
    key
}

/// The tree key of `partition`'s schema (`PartitionSchema`).
pub fn schema_key(partition: PartitionId) -> Vec<u8> {
    let mut key = meta_key(partition);
    key.push(SCHEMA_SUFFIX);
    key
}

/// The bounds of the metadata keyspace (every partition's).
pub fn meta_range() -> KeyRange {
    (Bound::Included(system_key(SPACE_META, &[])), Bound::Excluded(system_key(SPACE_META + 1, &[])))
}

/// What a metadata keyspace key names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaKey {
    Meta(PartitionId),
    Config(PartitionId),
    Schema(PartitionId),
}

/// Reads back a metadata keyspace key.
pub fn parse_meta_key(key: &[u8]) -> Option<MetaKey> {
    if key.get(..8)? != SYSTEM_PREFIX {
        return None;
    }
    let partition = PartitionId::from_be_bytes(key.get(8..16)?.try_into().ok()?);
    if partition >= ID_LIMIT {
        return None;
    }
    match key.get(16..)? {
        [] => Some(MetaKey::Meta(partition)),
        [CONFIG_SUFFIX] => Some(MetaKey::Config(partition)),
        [SCHEMA_SUFFIX] => Some(MetaKey::Schema(partition)),
        _ => None,
    }
}

/// A change's place in its partition's change log: the slot of the log entry that made it, and
/// its position among that entry's changes. Identical on every replica (it follows from the
/// replicated log), and in log order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sequence {
    pub slot: u64,
    pub position: u32,
}

fn changes_prefix(partition: PartitionId) -> Vec<u8> {
    system_key(SPACE_CHANGES, &checked(partition))
}

/// The tree key of the change at `sequence` in `partition`'s change log.
pub fn change_key(partition: PartitionId, sequence: Sequence) -> Vec<u8> {
    let mut key = changes_prefix(partition);
    key.extend_from_slice(&sequence.slot.to_be_bytes());
    key.extend_from_slice(&sequence.position.to_be_bytes());
    key
}

/// The bounds of `partition`'s change log from `from` on.
pub fn changes_range(partition: PartitionId, from: Sequence) -> KeyRange {
    let start = change_key(partition, from);
    (Bound::Included(start), Bound::Excluded(system_key(SPACE_CHANGES, &(partition + 1).to_be_bytes())))
}

/// The sequence of a change log tree key of `partition`.
pub fn change_sequence(partition: PartitionId, key: &[u8]) -> Option<Sequence> {
    let rest = key.strip_prefix(changes_prefix(partition).as_slice())?;
    let (slot, position) = (rest.get(..8)?, rest.get(8..)?);
    Some(Sequence {
        slot: u64::from_be_bytes(slot.try_into().ok()?),
        position: u32::from_be_bytes(position.try_into().ok()?),
    })
}

/// Every keyspace range that holds `partition`'s state beside its metadata: what dropping or
/// emptying it removes.
pub fn partition_ranges(partition: PartitionId) -> [KeyRange; 2] {
    [data_range(partition), changes_range(partition, Sequence::default())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspaces_do_not_overlap_and_read_back() {
        let partition = (7 << 20) | 3;
        let (meta, config, schema) = (meta_key(partition), config_key(partition), schema_key(partition));
        let change = change_key(partition, Sequence { slot: 9, position: 2 });
        assert_eq!(parse_meta_key(&meta), Some(MetaKey::Meta(partition)));
        assert_eq!(parse_meta_key(&config), Some(MetaKey::Config(partition)));
        assert_eq!(parse_meta_key(&schema), Some(MetaKey::Schema(partition)));
        assert_eq!(parse_meta_key(&change), None);
        assert_eq!(change_sequence(partition, &change), Some(Sequence { slot: 9, position: 2 }));
        assert_eq!(change_sequence(partition + 1, &change), None);
        let within = |key: &Vec<u8>, range: &KeyRange| range.contains(key);
        let data = data_key(partition, b"item");
        assert!(within(&data, &data_range(partition)) && !within(&data, &data_range(partition + 1)));
        assert!(data < system_start() && !within(&data, &meta_range()));
        for key in [&meta, &config, &schema] {
            assert!(within(key, &meta_range()) && *key > system_start());
        }
        assert!(!within(&change, &meta_range()) && within(&change, &changes_range(partition, Sequence::default())));
        assert!(!within(&change, &changes_range(partition, Sequence { slot: 10, position: 0 })));
        assert!(!within(
            &change_key(partition + 1, Sequence::default()),
            &changes_range(partition, Sequence::default())
        ));
        assert_eq!(data_partition(&data), Some(partition));
        assert_eq!(item_key(&data), b"item");
    }

    #[test]
    #[should_panic(expected = "outside the key layout")]
    fn a_partition_id_past_the_layout_is_refused() {
        data_key(ID_LIMIT, b"k");
    }
}
