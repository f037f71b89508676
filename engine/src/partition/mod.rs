//! A partition replica's state on its core, in one place: its state machine (`machine`), the
//! layout of its keyspaces in the core's tree (`keyspace`), its schema (`schema`), and what its
//! host keeps beside them (its replica's promise, its group configuration, the WAL records its
//! unapplied entries hold, whether recovery held it).

#[cfg(feature = "storage")]
use std::collections::BTreeMap;

#[cfg(feature = "storage")]
use crate::paxos;
use crate::paxos::Ballot;

pub mod host;
pub mod keyspace;
pub mod machine;
pub mod schema;

pub use keyspace::{PartitionId, Sequence};
pub use machine::{ChangeKind, ChangeRecord, PartitionMachine};
pub use schema::{ChangeView, PartitionSchema};

/// What the store keeps of each partition beside its items, as saved with each checkpoint
/// (FORMAT.md, "Partition metadata"): the last slot applied, how many items it holds and their
/// bytes (keys and stored values, kept by every apply so that counting costs nothing), and its
/// replica's durable state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionMeta {
    pub applied_slot: u64,
    pub items: u64,
    pub bytes: u64,
    /// Replicated mode: the highest ballot the partition's replica promised.
    pub promised: Ballot,
    /// Replicated mode: a snapshot is being installed (the items are partial, the applied
    /// slot 0); reads are refused until one is whole.
    pub installing: bool,
    /// Replicated mode: the count of damaged WAL tails (`Store::amnesiac`) through which the
    /// partition's replica has rejoined its group; below the store's count it is amnesiac.
    pub repaired: u64,
}

#[cfg(feature = "storage")]
impl PartitionMeta {
    /// Without the promised ballot, as written before replication existed.
    const ENCODED_LEN_V1: usize = 24;
    /// Without the installing flag, as written before snapshots were installed.
    const ENCODED_LEN_V2: usize = 36;
    /// Without the repaired count, as written before damaged WAL tails were repaired.
    const ENCODED_LEN_V3: usize = 37;
    const ENCODED_LEN: usize = 45;

    pub(crate) fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut bytes = [0; Self::ENCODED_LEN];
        bytes[..8].copy_from_slice(&self.applied_slot.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.items.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.bytes.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.promised.round.to_le_bytes());
        bytes[32..36].copy_from_slice(&self.promised.replica.to_le_bytes());
        bytes[36] = u8::from(self.installing);
        bytes[37..45].copy_from_slice(&self.repaired.to_le_bytes());
        bytes
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<PartitionMeta> {
        let word = |at: usize| bytes.get(at..at + 8).and_then(|word| word.try_into().ok()).map(u64::from_le_bytes);
        let promised = match bytes.len() {
            Self::ENCODED_LEN_V1 => Ballot::default(),
            Self::ENCODED_LEN_V2 | Self::ENCODED_LEN_V3 | Self::ENCODED_LEN => {
                Ballot { round: word(24)?, replica: u32::from_le_bytes(bytes[32..36].try_into().ok()?) }
            }
            _ => return None,
        };
        let installing = match bytes.get(36) {
            None | Some(0) => false,
            Some(1) => true,
            Some(_) => return None,
        };
        let repaired = if bytes.len() == Self::ENCODED_LEN { word(37)? } else { 0 };
        Some(PartitionMeta {
            applied_slot: word(0)?,
            items: word(8)?,
            bytes: word(16)?,
            promised,
            installing,
            repaired,
        })
    }
}

/// Which parts of a partition's saved state changed since the last checkpoint was sealed.
#[cfg(feature = "storage")]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Unsaved {
    pub meta: bool,
    pub config: bool,
    pub schema: bool,
}

/// One partition replica's state in its store.
#[cfg(feature = "storage")]
#[derive(Debug, Default)]
pub(crate) struct Partition {
    pub machine: PartitionMachine,
    /// Whether the partition has metadata (found at recovery, or made since): without it, its
    /// replica is amnesiac by the store's count of unknown partitions (`Store::amnesiac`).
    pub known: bool,
    pub promised: Ballot,
    pub installing: bool,
    pub repaired: u64,
    /// Replicated mode: the group configuration as of the applied slot (absent: the one the
    /// host started the group with).
    pub config: Option<Vec<paxos::Member>>,
    pub unsaved: Unsaved,
    /// Replicated mode: the LSN of the newest WAL record holding each accepted entry not yet
    /// applied, by slot. The WAL is recycled only below the oldest of them.
    pub unapplied: BTreeMap<u64, u64>,
    /// The applied slot in the newest durable checkpoint.
    pub checkpointed_slot: u64,
    /// Recovery could not replay the partition (`Error::Held`): why, and the LSN of the record
    /// that stopped it; no checkpoint covers it, so the log keeps it.
    pub held: Option<(String, u64)>,
    /// The change log may hold records (its view was on at some point since open, or
    /// recovery found a schema with one): what trimming visits.
    pub has_changes: bool,
}

#[cfg(feature = "storage")]
impl Partition {
    /// Its metadata as saved.
    pub fn meta(&self) -> PartitionMeta {
        PartitionMeta {
            applied_slot: self.machine.applied_slot,
            items: self.machine.items,
            bytes: self.machine.bytes,
            promised: self.promised,
            installing: self.installing,
            repaired: self.repaired,
        }
    }

    /// Takes saved metadata.
    pub fn set_meta(&mut self, meta: PartitionMeta) {
        self.known = true;
        self.machine.applied_slot = meta.applied_slot;
        self.machine.items = meta.items;
        self.machine.bytes = meta.bytes;
        self.promised = meta.promised;
        self.installing = meta.installing;
        self.repaired = meta.repaired;
    }

    /// Gives metadata to a partition that has none, as repaired as `repaired`; marks it to save.
    pub fn know(&mut self, repaired: u64) -> &mut Partition {
        if !self.known {
            self.known = true;
            self.repaired = repaired;
        }
        self.unsaved.meta = true;
        self
    }

    /// The applied slot moved to `slot`: the entries held unapplied through it are in the tree.
    pub fn applied_through(&mut self, slot: u64) {
        self.machine.applied_slot = self.machine.applied_slot.max(slot);
        self.unapplied = self.unapplied.split_off(&(slot + 1));
    }
}
