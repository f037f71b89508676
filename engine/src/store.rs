//! One core's storage: a WAL and a B+tree file shared by every partition replica the core
//! owns, and the pipeline between them.
//!
//! Write path: `submit` appends a command to the WAL and queues it; the applier task waits
//! until the record is durable, then applies queued commands strictly in LSN order to the
//! tree, then publishes the outcome. Applied slots are written into the tree right before a
//! checkpoint is sealed. Checkpoints are sealed by the applier
//! between two records, so a checkpoint's tree is exactly the effect of every record up to the
//! LSN it names; its pages are written while applies go on.
//!
//! Checkpoint commit steps and crash argument (FORMAT.md, "Checkpoints"): (1) write the sealed
//! pages, all at page ids that the durable checkpoint does not reference; (2) fdatasync;
//! (3) write the meta page into the slot the durable checkpoint does not occupy; (4) fdatasync.
//! A crash before (4) completes leaves the previous meta (and every page it references)
//! intact; a torn meta fails its CRC and the other slot wins. Only after (4) are the WAL
//! segments it covers recycled and the pages it released reused.
//!
//! Replicated mode (`StoreConfig::replicated`): the WAL also holds the Multi-Paxos log of every
//! replica on the core (`persist_paxos`, records of kind 2: promises and accepted entries),
//! and chosen entries are queued for apply by the replication layer (`apply_chosen`), in slot
//! order per partition, in the order they were chosen across partitions. Nothing is applied
//! at recovery: the promises and entries past each partition's applied slot are handed back
//! (`take_recovered_paxos`) for its replica to start from. A checkpoint covers the WAL only up
//! to the oldest entry not yet applied, so no accepted entry is recycled before its apply, and
//! it saves each partition's promised ballot, so no promise is lost with a recycled record.
//!
//! Invariants: applied slots per partition only grow; the tree reflects a prefix of the log.

use std::cell::{Cell, RefCell, RefMut};
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::btree::page::{self, Kind, PageId, PAGE_SIZE};
use crate::btree::{freelist_entries, Durable, Sealed, Tree, TreeError, TreeResult, CACHE_PAGES_MIN, FIRST_DATA_PAGE};
use crate::command::{Command, Outcome, Stamped};
use crate::disk::{self, File};
use crate::error::{Error, Result};
use crate::key::KEY_LEN_MAX;
use crate::partition::keyspace::{self, config_key, data_key, meta_key, schema_key, MetaKey};
use crate::partition::machine::{Effect, Images};
use crate::partition::{ChangeRecord, ChangeView, Partition, PartitionMachine, PartitionSchema, Sequence};
use crate::paxos::{self, Ballot};
use crate::signal::{guard_executor, yield_to_reactor, Event, Watermark};
use crate::wal::{DamagedTails, Wal, WalConfig};

mod scrub;

pub use crate::partition::{PartitionId, PartitionMeta};
pub use scrub::ScrubStats;

const TREE_FILE: &str = "tree.db";
const META_MAGIC: &[u8; 8] = b"TESSTREE";
/// Most committed records that may wait to be applied before `committed` waits for applies.
const APPLY_LAG_MAX: u64 = 16 * 1024;
/// Checkpoint page writes on the device at once.
const CHECKPOINT_WRITES_IN_FLIGHT: usize = 32;
/// Sealed pages the checkpoint writer collects from the tree at a time.
const CHECKPOINT_CHUNK_PAGES: usize = 64;
/// Chunks a checkpoint writes between two flushes of the device's cache: a WAL write's flush
/// waits behind at most `disk::UNFLUSHED_BYTES_MAX` of checkpoint data.
const CHECKPOINT_SYNC_EVERY_CHUNKS: usize = disk::UNFLUSHED_BYTES_MAX / (CHECKPOINT_CHUNK_PAGES * PAGE_SIZE);
const _: () = assert!(CHECKPOINT_SYNC_EVERY_CHUNKS >= 1, "a chunk bigger than the flush debt allowed");
/// Records applied between two turns of the reactor.
const APPLY_CHUNK: usize = 256;
/// How long a store whose checkpoint found the disk full waits before trying again.
const SPACE_RETRY: Duration = Duration::from_secs(1);
/// WAL record kind of a command applied once durable (a group of one).
const RECORD_COMMAND: u8 = 1;
/// WAL record kind of a Multi-Paxos persist (replicated mode).
const RECORD_PAXOS: u8 = 2;

/// Store settings.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Pages the cache holds (clean pages are evicted beyond this).
    pub cache_pages: usize,
    pub wal: WalConfig,
    /// A checkpoint starts when this many pages are dirty...
    pub checkpoint_dirty_pages: usize,
    /// ...or when the log spans this many segments.
    pub checkpoint_wal_segments: usize,
    /// Partitions are replicated (Multi-Paxos): writes enter through `persist_paxos` and
    /// `apply_chosen` rather than `submit`.
    pub replicated: bool,
    /// What recovery does with a log record whose checksum is good but whose command does not
    /// decode (written by a version with a bug, or read by one): by default its partition is
    /// held (every request to it is refused, naming the record, and the log keeps the record
    /// and every later one) while the other partitions serve; with this set the record is
    /// skipped, reported, and its payload saved under `quarantined/` in the store's directory.
    pub quarantine_bad_records: bool,
    /// How often the background scrub starts a pass over the tree file (`scrub.rs`); `None`:
    /// never.
    pub scrub_interval: Option<Duration>,
    /// How often change records past their partition's retention are trimmed
    /// (`Store::trim_changes`); `None`: never.
    pub change_trim_interval: Option<Duration>,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            cache_pages: 64 * 1024, // 256 MiB
            wal: WalConfig::default(),
            checkpoint_dirty_pages: 32 * 1024,
            checkpoint_wal_segments: 4,
            replicated: false,
            quarantine_bad_records: false,
            scrub_interval: Some(Duration::from_secs(3600)),
            change_trim_interval: Some(Duration::from_secs(60)),
        }
    }
}

struct Queued {
    /// The record's LSN (a group of one, applied once durable), or in replicated mode the
    /// apply's ticket (chosen entries are durable on a quorum already).
    lsn: u64,
    partition: PartitionId,
    slot: u64,
    work: Work,
    /// The proposer will take the outcome (`Store::outcome`); otherwise it is dropped.
    want_outcome: bool,
    /// When it was queued (how long applies lag behind, `Store::apply_delay`).
    queued_at: Instant,
}

/// What the applier does with a queued record.
enum Work {
    Command(Stamped),
    /// A step of installing a snapshot of the partition (replicated mode).
    Install(Install),
    /// Removes the partition: its items, its metadata, and its claim on the WAL (replicated
    /// mode; its table was deleted).
    Drop,
    /// The configuration chosen at the queued slot (replicated mode): applies nothing else.
    Members(Vec<paxos::Member>),
}

/// The steps of installing a partition snapshot, applied in queue order like commands.
enum Install {
    /// Empties the partition and marks it installing (applied slot 0), durably with the next
    /// checkpoint: a crash before `End` leaves a partition that needs a snapshot, never a
    /// half-installed one that looks whole.
    Begin,
    /// Stores these entries (keys without the partition prefix).
    Entries(Vec<(Vec<u8>, Vec<u8>)>),
    /// The snapshot is whole if the partition now holds `items` items of `bytes` bytes: it is
    /// then at `slot`, and no longer installing.
    End { slot: u64, items: u64, bytes: u64, members: Vec<paxos::Member> },
}

struct Inner {
    dir: PathBuf,
    file: File,
    config: StoreConfig,
    tree: RefCell<Tree>,
    wal: Wal,
    /// Every partition replica the store holds, and what it keeps of each.
    partitions: RefCell<ahash::HashMap<PartitionId, Partition>>,
    queue: RefCell<VecDeque<Queued>>,
    outcomes: RefCell<ahash::HashMap<u64, Outcome>>,
    /// Replicated mode: the last apply ticket handed out.
    last_ticket: Cell<u64>,
    /// Replicated mode: what recovery found for each partition's replica, until taken.
    recovered_paxos: RefCell<BTreeMap<PartitionId, paxos::Durable>>,
    /// Highest LSN applied to the tree.
    applied: Watermark,
    work: Event,
    checkpoint_wanted: Cell<bool>,
    checkpoint_running: Cell<bool>,
    checkpoints_started: Cell<u64>,
    /// The last checkpoint was refused for want of disk space: why, and when to try again.
    /// Writes are refused meanwhile (`Error::NoSpace`).
    short_of_space: RefCell<Option<(String, Instant)>>,
    /// Count of checkpoints made durable.
    checkpoints: Watermark,
    /// Sequence number of the durable meta page.
    meta_sequence: Cell<u64>,
    poisoned: RefCell<Option<String>>,
    closed: Cell<bool>,
    /// xorshift state drawing each checkpoint's dirty-page threshold.
    jitter: Cell<u64>,
    applier: RefCell<Option<glommio::Task<()>>>,
    page_reads: Cell<u64>,
    /// The damaged WAL tails recovery has found in this store's life (`Store::amnesiac`).
    damaged_tails: Cell<DamagedTails>,
    damage: scrub::Damage,
}

/// A core's storage; cheap to clone, used from one executor.
#[derive(Clone)]
pub struct Store {
    inner: Rc<Inner>,
}

/// Where a checkpoint left the tree, as stored in a meta page.
struct Meta {
    sequence: u64,
    root: PageId,
    page_count: u64,
    freelist_head: PageId,
    covered_lsn: u64,
}

impl Meta {
    fn encode(&self, slot: PageId) -> Vec<u8> {
        let mut bytes = vec![0u8; PAGE_SIZE];
        page::init(&mut bytes, Kind::Meta, slot);
        bytes[32..40].copy_from_slice(META_MAGIC);
        for (at, value) in [
            (40, self.sequence),
            (48, self.root),
            (56, self.page_count),
            (64, self.freelist_head),
            (72, self.covered_lsn),
            (80, PAGE_SIZE as u64),
        ] {
            page::set_u64(&mut bytes, at, value);
        }
        page::seal(&mut bytes);
        bytes
    }

    fn decode(bytes: &[u8], slot: PageId) -> Option<Meta> {
        if bytes.len() < PAGE_SIZE || page::verify(bytes, slot).is_err() || &bytes[32..40] != META_MAGIC {
            return None;
        }
        if page::kind(bytes) != Some(Kind::Meta) || page::get_u64(bytes, 80) != PAGE_SIZE as u64 {
            return None;
        }
        Some(Meta {
            sequence: page::get_u64(bytes, 40),
            root: page::get_u64(bytes, 48),
            page_count: page::get_u64(bytes, 56),
            freelist_head: page::get_u64(bytes, 64),
            covered_lsn: page::get_u64(bytes, 72),
        })
    }
}

impl Store {
    /// Opens the store in `dir`, creating it if empty: loads the newest complete checkpoint
    /// and replays the WAL after it.
    pub async fn open(dir: &Path, config: StoreConfig) -> Result<Store> {
        if config.cache_pages < CACHE_PAGES_MIN {
            return Err(Error::Config(format!("cache_pages must be at least {CACHE_PAGES_MIN}")));
        }
        guard_executor();
        disk::create_dir(dir)?;
        disk::probe_device(dir).await?;
        let path = dir.join(TREE_FILE);
        let file = File::open(&path, true).await?;
        disk::sync_dir(dir)?;
        let metas = file.read(0, 2 * PAGE_SIZE).await?;
        let meta = (0..2u64)
            .filter_map(|slot| {
                let start = slot as usize * PAGE_SIZE;
                metas.get(start..start + PAGE_SIZE).and_then(|bytes| Meta::decode(bytes, slot))
            })
            .max_by_key(|meta| meta.sequence);
        let durable = match &meta {
            Some(meta) => read_durable(&file, meta).await?,
            None => Durable { root: 0, page_count: FIRST_DATA_PAGE, free: Vec::new(), freelist_pages: Vec::new() },
        };
        let covered_lsn = meta.as_ref().map_or(0, |meta| meta.covered_lsn);
        let recovered = Wal::open(&dir.join("wal"), config.wal.clone(), covered_lsn).await?;
        if let Some(damage) = &recovered.damaged_tail {
            // Never silent: an operator can tell a crash's torn write from a damaged disk by
            // what else the machine saw (a power loss, or I/O errors).
            let repair = if config.replicated {
                "; every replica on this core rejoins its group as a non-voting member until a leader elected after this start has caught it up (it may have forgotten promises or entries it acknowledged)"
            } else {
                ""
            };
            crate::report!("{}: {damage}{repair}", dir.display());
        }
        let replicated = config.replicated;
        let store = Store {
            inner: Rc::new(Inner {
                dir: dir.to_path_buf(),
                file,
                tree: RefCell::new(Tree::open(durable, config.cache_pages)),
                config,
                wal: recovered.wal,
                partitions: RefCell::new(ahash::HashMap::default()),
                queue: RefCell::new(VecDeque::new()),
                outcomes: RefCell::new(ahash::HashMap::default()),
                last_ticket: Cell::new(0),
                recovered_paxos: RefCell::new(BTreeMap::new()),
                // Replicated mode counts applies by ticket, from 0 at each start.
                applied: Watermark::new(if replicated { 0 } else { covered_lsn }),
                work: Event::default(),
                checkpoint_wanted: Cell::new(false),
                checkpoint_running: Cell::new(false),
                checkpoints_started: Cell::new(0),
                short_of_space: RefCell::new(None),
                checkpoints: Watermark::new(0),
                meta_sequence: Cell::new(meta.as_ref().map_or(0, |meta| meta.sequence)),
                poisoned: RefCell::new(None),
                closed: Cell::new(false),
                jitter: Cell::new(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(1, |since| since.as_nanos() as u64)
                        | 1,
                ),
                applier: RefCell::new(None),
                page_reads: Cell::new(0),
                damaged_tails: Cell::new(recovered.damaged_tails),
                damage: scrub::Damage::default(),
            }),
        };
        store.load_partition_metas().await?;
        if replicated {
            store.recover_paxos(recovered.records)?;
        } else {
            store.replay_commands(recovered.records).await?;
        }
        let applier = glommio::spawn_local(Inner::applier(store.inner.clone()));
        *store.inner.applier.borrow_mut() = Some(applier);
        if let Some(interval) = store.inner.config.scrub_interval {
            glommio::spawn_local(scrub::run(Rc::downgrade(&store.inner), interval)).detach();
        }
        if let Some(interval) = store.inner.config.change_trim_interval {
            glommio::spawn_local(trim_changes_every(Rc::downgrade(&store.inner), interval)).detach();
        }
        Ok(store)
    }

    /// Applies the commands recovered from the WAL (a group of one): each record past its
    /// partition's applied slot, once.
    async fn replay_commands(&self, records: Vec<crate::wal::Record>) -> Result<()> {
        for record in records {
            if record.kind != RECORD_COMMAND {
                return Err(Error::corrupt(
                    self.inner.dir.join("wal"),
                    0,
                    format!(
                        "WAL record {} has kind {}, not a command (kind {RECORD_COMMAND})",
                        record.lsn, record.kind
                    ),
                ));
            }
            if self.inner.held(record.partition).is_some() {
                // Nothing after the record that stopped the partition is applied either.
                self.inner.applied.advance(record.lsn);
                continue;
            }
            match Stamped::decode(&record.payload) {
                Ok(entry) => {
                    if record.slot > self.applied_slot(record.partition) {
                        self.inner.apply(record.partition, record.slot, &entry, false).await?;
                    }
                }
                Err(reason) => self.undecodable(&record, &reason)?,
            }
            self.inner.applied.advance(record.lsn);
        }
        Ok(())
    }

    /// A WAL record whose checksum is good but whose command does not decode: not disk damage
    /// (the checksum vouches for the bytes) but a bug, in the version that wrote it or in this
    /// one. Its partition is held, or with `quarantine_bad_records` the record is skipped and
    /// kept aside; either way it is reported, naming the partition, slot and key.
    fn undecodable(&self, record: &crate::wal::Record, reason: &str) -> Result<()> {
        let key = Command::key_of(&record.payload)
            .map_or_else(|| "unknown".to_string(), |key| format!("{:?}", String::from_utf8_lossy(key)));
        let what = format!(
            "WAL record {} (slot {}, key {key}) has a valid checksum but a command this version cannot decode ({reason}): a bug, not disk damage",
            record.lsn, record.slot
        );
        if !self.inner.config.quarantine_bad_records {
            crate::report!(
                "{}: partition {} is held, refusing every request: {what}; restart with --quarantine-bad-records to skip the record (losing that write) and serve the partition",
                self.inner.dir.display(),
                record.partition
            );
            self.inner.partition_mut(record.partition).held = Some((what, record.lsn));
            return Ok(());
        }
        let dir = self.inner.dir.join("quarantined");
        let path = dir.join(format!("partition-{}-lsn-{}.bin", record.partition, record.lsn));
        disk::create_dir(&dir)?;
        std::fs::write(&path, &record.payload)
            .and_then(|()| std::fs::File::open(&path)?.sync_all())
            .map_err(|error| Error::io("write", &path, error))?;
        disk::sync_dir(&dir)?;
        crate::report!(
            "{}: partition {}: skipped (--quarantine-bad-records) {what}; its payload is in {}",
            self.inner.dir.display(),
            record.partition,
            path.display()
        );
        Ok(())
    }

    /// Replicated mode: collects each partition's promises and entries from the WAL records
    /// past the checkpoint, for its replica to start from, and remembers which entries are
    /// not applied yet.
    fn recover_paxos(&self, records: Vec<crate::wal::Record>) -> Result<()> {
        let mut recovered: BTreeMap<PartitionId, paxos::Durable> = BTreeMap::new();
        for (partition, state) in self.inner.partitions.borrow().iter().filter(|(_, state)| state.known) {
            recovered.entry(*partition).or_default().promised = state.promised;
        }
        for record in records {
            let damaged = |reason: String| {
                Error::corrupt(self.inner.dir.join("wal"), 0, format!("WAL record {}: {reason}", record.lsn))
            };
            if record.kind != RECORD_PAXOS {
                return Err(damaged(format!("kind {} in a replicated store, not {RECORD_PAXOS}", record.kind)));
            }
            let (promised, entries) = paxos::decode_persist(&record.payload).map_err(damaged)?;
            self.note_paxos_record(record.partition, record.lsn, promised, &entries);
            let applied = self.applied_slot(record.partition);
            let durable = recovered.entry(record.partition).or_default();
            if let Some(promised) = promised {
                durable.promised = durable.promised.max(promised);
            }
            durable.entries.extend(entries.into_iter().filter(|(slot, _)| *slot > applied));
        }
        *self.inner.recovered_paxos.borrow_mut() = recovered;
        Ok(())
    }

    /// Loads every partition's metadata, configuration and schema from the tree (at open).
    async fn load_partition_metas(&self) -> Result<()> {
        let (lower, upper) = keyspace::meta_range();
        let entries = self.inner.scan_tree(lower, upper, false, usize::MAX).await?;
        let malformed = |what: &str| Error::corrupt(self.inner.file.path(), 0, format!("malformed {what} entry"));
        for (key, value) in entries {
            match keyspace::parse_meta_key(&key).ok_or_else(|| malformed("partition metadata key"))? {
                MetaKey::Config(partition) => {
                    let members = paxos::decode_configuration(&value).map_err(|_| malformed("group configuration"))?;
                    self.inner.partition_mut(partition).config = Some(members);
                }
                MetaKey::Schema(partition) => {
                    let schema = PartitionSchema::decode(&value).map_err(|_| malformed("partition schema"))?;
                    let mut state = self.inner.partition_mut(partition);
                    state.machine.schema = schema;
                    state.has_changes = true;
                }
                MetaKey::Meta(partition) => {
                    let meta = match (PartitionMeta::decode(&value), value.as_slice().try_into()) {
                        (Some(meta), _) => meta,
                        // Written before the counts were kept (the applied slot alone): count once.
                        (None, Ok(slot)) => self.count_partition(partition, u64::from_le_bytes(slot)).await?,
                        _ => return Err(malformed("partition metadata")),
                    };
                    let mut state = self.inner.partition_mut(partition);
                    state.set_meta(meta);
                    state.checkpointed_slot = meta.applied_slot;
                }
            }
        }
        Ok(())
    }

    /// The metadata of a partition saved before counts were kept: its items counted.
    async fn count_partition(&self, partition: PartitionId, applied_slot: u64) -> Result<PartitionMeta> {
        let mut machine = PartitionMachine { applied_slot, ..PartitionMachine::default() };
        let (mut lower, upper) = keyspace::data_range(partition);
        loop {
            let chunk = self.inner.scan_tree(lower, upper.clone(), false, 1024).await?;
            let Some((last, _)) = chunk.last() else { break };
            lower = Bound::Excluded(last.clone());
            chunk.iter().for_each(|(key, value)| machine.count(keyspace::item_key(key), None, Some(value.len())));
        }
        self.inner.partition_mut(partition).unsaved.meta = true;
        Ok(PartitionMeta { applied_slot, items: machine.items, bytes: machine.bytes, ..PartitionMeta::default() })
    }

    /// The slot through which `partition` is in the newest durable checkpoint (its state
    /// there survives any crash; 0 before the first checkpoint of this run).
    pub fn checkpointed_slot(&self, partition: PartitionId) -> u64 {
        self.inner.partitions.borrow().get(&partition).map_or(0, |state| state.checkpointed_slot)
    }

    /// Highest slot applied for `partition` (0 if none).
    pub fn applied_slot(&self, partition: PartitionId) -> u64 {
        self.inner.partitions.borrow().get(&partition).map_or(0, |state| state.machine.applied_slot)
    }

    /// `partition`'s applied slot and item counts, reflecting every write committed before the
    /// call (as a read does).
    pub async fn partition_meta(&self, partition: PartitionId) -> Result<PartitionMeta> {
        self.read_barrier().await?;
        Ok(self
            .inner
            .partitions
            .borrow()
            .get(&partition)
            .filter(|state| state.known)
            .map(Partition::meta)
            .unwrap_or_default())
    }

    /// Highest WAL LSN applied to the tree.
    pub fn applied_lsn(&self) -> u64 {
        self.inner.applied.get()
    }

    /// Appends `command` for `partition` at `slot` to the WAL and queues it for apply; returns
    /// its LSN, to pass to `committed`, or to `outcome` if `want_outcome`. Slots of one
    /// partition must be submitted in order.
    pub fn submit(&self, partition: PartitionId, slot: u64, command: Command, want_outcome: bool) -> Result<u64> {
        if let Some(cause) = self.inner.poisoned.borrow().clone() {
            return Err(Error::Poisoned { cause });
        }
        if self.inner.config.replicated {
            return Err(Error::Config("a replicated store takes writes through persist_paxos and apply_chosen".into()));
        }
        if partition >= keyspace::ID_LIMIT {
            return Err(Error::validation(format!("partition id {partition:#x} is reserved: ids are below 2^56")));
        }
        self.writable()?;
        self.inner.check_held(partition)?;
        crate::key::check_key_len(command.key_len_max())?;
        let entry = Stamped::now(command);
        let lsn = self.inner.wal.append_with(partition, slot, RECORD_COMMAND, |out| {
            entry.encode_payload(out).map_err(Error::unreplayable)
        })?;
        self.inner.queue.borrow_mut().push_back(Queued {
            lsn,
            partition,
            slot,
            work: Work::Command(entry),
            want_outcome,
            queued_at: Instant::now(),
        });
        self.inner.work.notify();
        Ok(lsn)
    }

    /// Replicated mode: appends what `partition`'s replica asked to make durable (its promise
    /// and accepted entries, `paxos::Action::Persist`) to the WAL; returns the record's LSN, to
    /// pass to `durable`.
    pub fn persist_paxos(
        &self,
        partition: PartitionId,
        promised: Option<Ballot>,
        entries: &[(u64, paxos::Entry)],
    ) -> Result<u64> {
        if let Some(cause) = self.inner.poisoned.borrow().clone() {
            return Err(Error::Poisoned { cause });
        }
        if !self.inner.config.replicated {
            return Err(Error::Config("persist_paxos needs a replicated store".into()));
        }
        self.writable()?;
        let last_slot = entries.last().map_or(0, |(slot, _)| *slot);
        let lsn = self.inner.wal.append_with(partition, last_slot, RECORD_PAXOS, |out| {
            paxos::encode_persist(promised, entries, out);
            Ok(())
        })?;
        self.note_paxos_record(partition, lsn, promised, entries);
        Ok(lsn)
    }

    /// Whether the store takes new writes: not while its disk has no room for a checkpoint
    /// (`Error::NoSpace`, retryable; the store retries and resumes by itself).
    pub fn writable(&self) -> Result<()> {
        match self.inner.short_of_space.borrow().as_ref() {
            Some((reason, _)) => Err(Error::NoSpace(reason.clone())),
            None => Ok(()),
        }
    }

    /// Resolves once the WAL record `lsn` is durable.
    pub async fn durable(&self, lsn: u64) -> Result<()> {
        self.inner.wal.durable(lsn).await
    }

    /// Replicated mode: queues the command chosen for `slot` of `partition` for apply (slots
    /// of a partition in order); returns a ticket for `outcome` if `want_outcome`.
    pub fn apply_chosen(&self, partition: PartitionId, slot: u64, entry: Stamped, want_outcome: bool) -> Result<u64> {
        self.queue_chosen(partition, slot, Work::Command(entry), want_outcome)
    }

    /// Replicated mode: queues `work` behind the chosen entries queued before; its ticket.
    fn queue_chosen(&self, partition: PartitionId, slot: u64, work: Work, want_outcome: bool) -> Result<u64> {
        if let Some(cause) = self.inner.poisoned.borrow().clone() {
            return Err(Error::Poisoned { cause });
        }
        if !self.inner.config.replicated {
            return Err(Error::Config("apply_chosen and snapshots need a replicated store".into()));
        }
        let ticket = self.inner.last_ticket.get() + 1;
        self.inner.last_ticket.set(ticket);
        let queued_at = Instant::now();
        self.inner.queue.borrow_mut().push_back(Queued { lsn: ticket, partition, slot, work, want_outcome, queued_at });
        self.inner.work.notify();
        Ok(ticket)
    }

    /// Replicated mode: queues the configuration chosen for `slot` of `partition` (in slot
    /// order with its commands, like `apply_chosen`); it is saved with the next checkpoint.
    pub fn apply_members(&self, partition: PartitionId, slot: u64, members: Vec<paxos::Member>) -> Result<u64> {
        self.queue_chosen(partition, slot, Work::Members(members), false)
    }

    /// Replicated mode: `partition`'s group configuration as of its applied slot, if one was
    /// chosen or installed since the group began (else the host's initial one holds).
    pub fn configuration(&self, partition: PartitionId) -> Option<Vec<paxos::Member>> {
        self.inner.partitions.borrow().get(&partition).and_then(|state| state.config.clone())
    }

    /// Replicated mode: a consistent image of `partition` as the newest durable checkpoint
    /// holds it, to stream to a replica that needs it. Writes go on meanwhile; the pages it
    /// reads are kept from reuse until it is dropped.
    pub async fn snapshot(&self, partition: PartitionId) -> Result<PartitionSnapshot> {
        if !self.inner.config.replicated {
            return Err(Error::Config("snapshots need a replicated store".into()));
        }
        let root = self.inner.tree.borrow_mut().pin();
        let (lower, upper) = keyspace::data_range(partition);
        let mut snapshot =
            PartitionSnapshot { store: self.clone(), root, meta: PartitionMeta::default(), lower, upper };
        let key = meta_key(partition);
        let meta = self.inner.with_tree(|tree| tree.get_in(root, &key)).await?;
        let meta = match meta {
            None => PartitionMeta::default(),
            Some(bytes) => PartitionMeta::decode(&bytes)
                .ok_or_else(|| Error::corrupt(self.inner.file.path(), 0, "malformed partition metadata entry"))?,
        };
        if meta.installing {
            return Err(Error::Unavailable(format!(
                "partition {partition} was receiving a snapshot at the last checkpoint: it has none to give"
            )));
        }
        snapshot.meta = meta;
        Ok(snapshot)
    }

    /// Replicated mode: whether `partition`'s replica must start amnesiac
    /// (`paxos::Replica::set_amnesiac`): recovery of this store has found a damaged WAL tail
    /// (now or at an earlier start, `wal::Recovered::damaged_tails`) that the replica has not
    /// rejoined its group since. The damaged records cannot be read, so a partition without
    /// metadata is amnesiac too, until the store knows every partition it holds
    /// (`partitions_known`).
    pub fn amnesiac(&self, partition: PartitionId) -> bool {
        let tails = self.inner.damaged_tails.get();
        let repaired = self
            .inner
            .partitions
            .borrow()
            .get(&partition)
            .filter(|state| state.known)
            .map_or(tails.unknown_repaired, |state| state.repaired);
        self.inner.config.replicated && repaired < tails.count
    }

    /// Replicated mode: `partition`'s replica rejoined its group (`paxos::Action::Rejoined`);
    /// saved with the next checkpoint (until then a restart finds it amnesiac again, which is
    /// safe).
    pub fn rejoined(&self, partition: PartitionId) {
        let count = self.inner.damaged_tails.get().count;
        let mut state = self.inner.known_partition(partition);
        state.repaired = state.repaired.max(count);
    }

    /// Replicated mode: `partitions` are every partition this store holds a replica of, as of
    /// a catalog that is current through a leader elected since this start, so that every
    /// partition that can have had a record in a damaged WAL tail is among them. Each without
    /// metadata is given some (its replica stays amnesiac until it rejoins); once that is
    /// checkpointed, `DamagedTails::unknown_repaired` is recorded, and a partition without
    /// metadata (a new one) is no longer amnesiac. Otherwise each damaged tail would leave every
    /// later partition's replica here amnesiac, and two such nodes of a group of three could
    /// elect no leader for it.
    pub fn partitions_known(&self, partitions: impl IntoIterator<Item = PartitionId>) {
        let tails = self.inner.damaged_tails.get();
        if !self.inner.config.replicated || tails.unknown_repaired == tails.count {
            return;
        }
        for partition in partitions {
            self.inner.known_partition(partition);
        }
        let known = DamagedTails { unknown_repaired: tails.count, ..tails };
        // A crash before the file is written finds partitions without metadata amnesiac still
        // (safe); those made from here on carry the new count in theirs.
        self.inner.damaged_tails.set(known);
        let store = self.clone();
        glommio::spawn_local(async move {
            let wal = store.inner.dir.join("wal");
            let written = match store.checkpoint().await {
                Ok(()) => crate::wal::write_damaged_tails(&wal, known),
                Err(error) => Err(error),
            };
            if let Err(error) = written {
                crate::report!("{}: cannot record that every partition is known after a damaged WAL tail ({error}): partitions without metadata start amnesiac again", store.inner.dir.display());
            }
        })
        .detach();
    }

    /// Replicated mode: whether `partition` is installing a snapshot (it then serves no reads
    /// and applies nothing until one is whole).
    pub fn installing(&self, partition: PartitionId) -> bool {
        self.inner.partitions.borrow().get(&partition).is_some_and(|state| state.installing)
    }

    /// Replicated mode: removes `partition` (items, metadata, unapplied entries) behind every
    /// chosen entry queued before; its replica must be stopped first (its table was deleted).
    pub async fn drop_partition(&self, partition: PartitionId) -> Result<()> {
        self.applied_work(partition, Work::Drop).await
    }

    /// Replicated mode: starts installing a snapshot of `partition`, behind every chosen
    /// entry queued before: its items are removed and it is marked installing. The caller
    /// stops queueing the partition's chosen entries until `install_end` succeeds.
    pub async fn install_begin(&self, partition: PartitionId) -> Result<()> {
        self.install(partition, Install::Begin).await
    }

    /// Replicated mode: stores a chunk of the snapshot being installed.
    pub async fn install_entries(&self, partition: PartitionId, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        if let Some((key, _)) = entries.iter().find(|(key, _)| key.len() > KEY_LEN_MAX) {
            return Err(Error::validation(format!(
                "a snapshot entry's key of {} bytes exceeds the {KEY_LEN_MAX}-byte limit",
                key.len()
            )));
        }
        self.install(partition, Install::Entries(entries)).await
    }

    /// Replicated mode: ends the snapshot being installed, taken at `slot` of a partition of
    /// `items` items and `bytes` bytes, with `members` the configuration in force there. If
    /// the partition holds exactly those, it is at `slot` now (durably so with the next
    /// checkpoint); otherwise it stays installing and this says what differed.
    pub async fn install_end(
        &self,
        partition: PartitionId,
        slot: u64,
        items: u64,
        bytes: u64,
        members: Vec<paxos::Member>,
    ) -> Result<()> {
        self.install(partition, Install::End { slot, items, bytes, members }).await?;
        let meta = self.inner.partitions.borrow().get(&partition).map(Partition::meta).unwrap_or_default();
        if meta.installing {
            return Err(Error::Unavailable(format!(
                "the snapshot of partition {partition} at slot {slot} should hold {items} items of {bytes} bytes, \
                 and holds {} of {}: it is not installed",
                meta.items, meta.bytes
            )));
        }
        Ok(())
    }

    async fn install(&self, partition: PartitionId, step: Install) -> Result<()> {
        self.applied_work(partition, Work::Install(step)).await
    }

    /// Queues `work` behind the chosen entries queued before, and waits until it is applied.
    async fn applied_work(&self, partition: PartitionId, work: Work) -> Result<()> {
        let ticket = self.queue_chosen(partition, 0, work, false)?;
        self.inner.applied.wait(ticket).await.map_err(|cause| Error::Poisoned { cause })
    }

    /// Replicated mode: the promises and entries recovered for each partition's replica (past
    /// its applied slot). Taken once, after `open`.
    pub fn take_recovered_paxos(&self) -> BTreeMap<PartitionId, paxos::Durable> {
        std::mem::take(&mut *self.inner.recovered_paxos.borrow_mut())
    }

    /// Remembers a persist: its promise (saved with the next checkpoint) and which unapplied
    /// entries the record holds.
    fn note_paxos_record(
        &self,
        partition: PartitionId,
        lsn: u64,
        promised: Option<Ballot>,
        entries: &[(u64, paxos::Entry)],
    ) {
        if let Some(promised) = promised.filter(|promised| *promised > self.inner.promised(partition)) {
            self.inner.known_partition(partition).promised = promised;
        }
        let mut state = self.inner.partition_mut(partition);
        let applied = state.machine.applied_slot;
        for (slot, _) in entries.iter().filter(|(slot, _)| *slot > applied) {
            state.unapplied.insert(*slot, lsn);
        }
    }

    /// How long the oldest record waiting for the tree has waited (zero when none waits): what
    /// a strong read here waits behind, at least.
    pub fn apply_delay(&self) -> Duration {
        self.inner.queue.borrow().front().map_or(Duration::ZERO, |queued| queued.queued_at.elapsed())
    }

    /// Resolves once the record `lsn` is durable (committed). Applies run behind commits; if
    /// they fall more than `APPLY_LAG_MAX` records behind, this also waits for them, so the
    /// queue of committed but unapplied records stays bounded.
    pub async fn committed(&self, lsn: u64) -> Result<()> {
        self.inner.wal.durable(lsn).await?;
        self.inner.applied.wait(lsn.saturating_sub(APPLY_LAG_MAX)).await.map_err(|cause| Error::Poisoned { cause })
    }

    /// Waits until every record committed before the call is applied: a read that follows
    /// sees every acknowledged write.
    async fn read_barrier(&self) -> Result<()> {
        // Replicated mode: every chosen entry queued before the read.
        let target =
            if self.inner.config.replicated { self.inner.last_ticket.get() } else { self.inner.wal.durable_lsn() };
        self.inner.applied.wait(target).await.map_err(|cause| Error::Poisoned { cause })
    }

    /// Resolves once the record `lsn` (submitted with `want_outcome`) is durable and applied,
    /// with what the apply found.
    pub async fn outcome(&self, lsn: u64) -> Result<Outcome> {
        self.inner.applied.wait(lsn).await.map_err(|cause| Error::Poisoned { cause })?;
        self.inner
            .outcomes
            .borrow_mut()
            .remove(&lsn)
            .ok_or_else(|| Error::validation(format!("the outcome of LSN {lsn} was already taken")))
    }

    /// The value stored under `key` in `partition`.
    pub async fn get(&self, partition: PartitionId, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read_barrier().await?;
        self.readable(partition)?;
        let full = data_key(partition, key);
        self.inner.with_tree(|tree| tree.get(&full)).await
    }

    /// Entries of `partition` with keys within the bounds, in key order (or reverse), at most
    /// `limit` of them. Keys are returned without the partition prefix.
    pub async fn scan(
        &self,
        partition: PartitionId,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.read_barrier().await?;
        self.readable(partition)?;
        let (start, end) = keyspace::data_range(partition);
        let prefix = |bound: Bound<&[u8]>, end: Bound<Vec<u8>>| match bound {
            Bound::Included(key) => Bound::Included(data_key(partition, key)),
            Bound::Excluded(key) => Bound::Excluded(data_key(partition, key)),
            Bound::Unbounded => end,
        };
        let (lower, upper) = (prefix(lower, start), prefix(upper, end));
        let mut entries = self.inner.scan_tree(lower, upper, reverse, limit).await?;
        entries.iter_mut().for_each(|(key, _)| *key = keyspace::item_key(key).to_vec());
        Ok(entries)
    }

    /// `partition`'s change log from `from` on, in log order, at most `limit` records: every
    /// change committed before the call that retention has not trimmed.
    pub async fn changes(
        &self,
        partition: PartitionId,
        from: Sequence,
        limit: usize,
    ) -> Result<Vec<(Sequence, ChangeRecord)>> {
        self.read_barrier().await?;
        self.readable(partition)?;
        let (lower, upper) = keyspace::changes_range(partition, from);
        let entries = self.inner.scan_tree(lower, upper, false, limit).await?;
        entries
            .into_iter()
            .map(|(key, value)| {
                let damaged =
                    |reason: String| Error::corrupt(self.inner.file.path(), 0, format!("a change record: {reason}"));
                let sequence = keyspace::change_sequence(partition, &key).ok_or_else(|| damaged("its key".into()))?;
                Ok((sequence, ChangeRecord::decode(&value).map_err(damaged)?))
            })
            .collect()
    }

    /// Removes every change record older than its partition's retention at `now_us`
    /// (microseconds since the Unix epoch), oldest first, a chunk at a time; returns how many.
    /// Records are trimmed by their entry's time, so a record whose time is behind an older
    /// one's (a new leader's clock behind the old one's) waits for that one.
    pub async fn trim_changes(&self, now_us: u64) -> Result<u64> {
        let logged: Vec<(PartitionId, u64)> = self
            .inner
            .partitions
            .borrow()
            .iter()
            .filter(|(_, state)| state.machine.schema.changes != ChangeView::Off || state.has_changes)
            .map(|(&partition, state)| (partition, state.machine.schema.retention_s))
            .collect();
        let mut trimmed = 0;
        for (partition, retention_s) in logged {
            let horizon = now_us.saturating_sub(retention_s.saturating_mul(1_000_000));
            let (mut lower, upper) = keyspace::changes_range(partition, Sequence::default());
            'partition: loop {
                let chunk = self.inner.scan_tree(lower, upper.clone(), false, APPLY_CHUNK).await?;
                let Some((last, _)) = chunk.last() else {
                    if let Some(state) = self.inner.partitions.borrow_mut().get_mut(&partition) {
                        state.has_changes = state.machine.schema.changes != ChangeView::Off;
                    }
                    break;
                };
                lower = Bound::Excluded(last.clone());
                for (key, value) in &chunk {
                    let record = ChangeRecord::decode(value).map_err(|reason| {
                        Error::corrupt(self.inner.file.path(), 0, format!("a change record: {reason}"))
                    })?;
                    if record.at_us >= horizon {
                        break 'partition;
                    }
                    self.inner.with_tree(|tree| tree.delete_len(key).map(drop)).await?;
                    trimmed += 1;
                }
                yield_to_reactor().await;
            }
        }
        Ok(trimmed)
    }

    /// Refuses reads of a partition whose items are a partial snapshot.
    fn readable(&self, partition: PartitionId) -> Result<()> {
        self.inner.check_held(partition)?;
        if self.installing(partition) {
            return Err(Error::Unavailable(format!(
                "partition {partition} is receiving a snapshot from its leader: its items are incomplete"
            )));
        }
        Ok(())
    }

    /// Ids of the partitions that hold entries, in order (found by seeking, not scanning).
    pub async fn partitions(&self) -> Result<Vec<PartitionId>> {
        self.read_barrier().await?;
        let mut found = Vec::new();
        let mut lower = Bound::Included(data_key(0, &[]));
        loop {
            let first = self.inner.scan_tree(lower, Bound::Excluded(keyspace::system_start()), false, 1).await?;
            let Some(partition) = first.first().and_then(|(key, _)| keyspace::data_partition(key)) else { break };
            found.push(partition);
            lower = keyspace::data_range(partition).1;
            lower = match lower {
                Bound::Excluded(next) => Bound::Included(next),
                other => other,
            };
        }
        Ok(found)
    }

    /// Asks for a checkpoint soon, without waiting for it.
    pub fn request_checkpoint(&self) {
        self.inner.checkpoint_wanted.set(true);
        self.inner.work.notify();
    }

    /// Makes everything applied so far part of a durable checkpoint.
    pub async fn checkpoint(&self) -> Result<()> {
        let target = self.inner.checkpoints_started.get() + 1;
        self.inner.checkpoint_wanted.set(true);
        self.inner.work.notify();
        self.inner.checkpoints.wait(target).await.map_err(|cause| Error::Poisoned { cause })
    }

    /// Applies everything submitted, waits for a running checkpoint, and stops the store's
    /// tasks. Nothing is lost without it: this only lets the directory be reopened in-process.
    pub async fn close(&self) -> Result<()> {
        let last =
            if self.inner.config.replicated { self.inner.last_ticket.get() } else { self.inner.wal.next_lsn() - 1 };
        let applied = self.inner.applied.wait(last).await;
        while self.inner.checkpoint_running.get() {
            let done = self.inner.checkpoints.get() + 1;
            let _ = self.inner.checkpoints.wait(done).await;
        }
        self.inner.closed.set(true);
        self.inner.work.notify();
        let applier = self.inner.applier.borrow_mut().take();
        if let Some(applier) = applier {
            applier.await;
        }
        self.inner.wal.close().await?;
        self.inner.file.clone().close().await?;
        applied.map_err(|cause| Error::Poisoned { cause })
    }

    /// The WAL of this store (for statistics).
    pub fn wal(&self) -> &Wal {
        &self.inner.wal
    }

    /// Tree pages read from disk since open (cache misses).
    pub fn page_reads(&self) -> u64 {
        self.inner.page_reads.get()
    }

    /// Checkpoints made durable since open.
    pub fn checkpoints(&self) -> u64 {
        self.inner.checkpoints.get()
    }

    /// Pages the tree file spans.
    pub fn tree_pages(&self) -> u64 {
        self.inner.tree.borrow().page_count()
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// What the scrub (and any read) found damaged since open.
    pub fn scrub_stats(&self) -> ScrubStats {
        self.inner.damage.stats()
    }

    /// Partitions whose keys a damaged page the scrub found holds, not taken before: a
    /// replicated store's host reinstalls each from a healthy replica (installing it cuts the
    /// damaged page out of the tree first).
    pub fn take_damaged_partitions(&self) -> Vec<PartitionId> {
        self.inner.damage.take_partitions()
    }
}

/// Trims change logs every `interval` while the store is open (`Store::trim_changes`).
async fn trim_changes_every(inner: std::rc::Weak<Inner>, interval: Duration) {
    loop {
        glommio::timer::sleep(interval).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.get() || inner.poisoned.borrow().is_some() {
            return;
        }
        let store = Store { inner };
        if let Err(error) = store.trim_changes(crate::command::now_us()).await {
            crate::report!("{}: trimming change logs: {error}", store.inner.dir.display());
        }
    }
}

/// A consistent image of one partition as a durable checkpoint holds it (`Store::snapshot`),
/// read a chunk at a time.
pub struct PartitionSnapshot {
    store: Store,
    root: PageId,
    meta: PartitionMeta,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
}

impl PartitionSnapshot {
    /// The partition's applied slot, item count and bytes in the image.
    pub fn meta(&self) -> PartitionMeta {
        self.meta
    }

    /// The next entries (keys without the partition prefix), about `bytes_max` of them (at
    /// least one); empty at the end.
    pub async fn next_chunk(&mut self, bytes_max: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (mut chunk, mut bytes) = (Vec::new(), 0);
        while bytes < bytes_max {
            let mut entries = Vec::new();
            let root = self.root;
            let (lower, upper) = (&mut self.lower, &mut self.upper);
            self.store.inner.with_tree(|tree| tree.scan_resumable(root, lower, upper, false, 16, &mut entries)).await?;
            if entries.is_empty() {
                break;
            }
            for (key, value) in entries {
                bytes += key.len() + value.len();
                chunk.push((keyspace::item_key(&key).to_vec(), value));
            }
        }
        if chunk.is_empty() {
            // Past the end: no later call reads again.
            self.lower = self.upper.clone();
        }
        Ok(chunk)
    }
}

impl Drop for PartitionSnapshot {
    fn drop(&mut self) {
        self.store.inner.tree.borrow_mut().unpin();
    }
}

/// The freelist and the rest of a checkpoint's state.
async fn read_durable(file: &File, meta: &Meta) -> Result<Durable> {
    let mut free = Vec::new();
    let mut freelist_pages = Vec::new();
    let mut next = meta.freelist_head;
    while next != 0 {
        if freelist_pages.len() as u64 > meta.page_count {
            return Err(Error::corrupt(file.path(), next * PAGE_SIZE as u64, "freelist chain loops"));
        }
        let bytes = read_page(file, next).await?;
        if page::kind(&bytes) != Some(Kind::Freelist) {
            return Err(Error::corrupt(file.path(), next * PAGE_SIZE as u64, "freelist page has the wrong kind"));
        }
        freelist_pages.push(next);
        let (ids, link) = freelist_entries(&bytes);
        if let Some(bad) = ids.iter().find(|&&id| id < FIRST_DATA_PAGE || id >= meta.page_count) {
            return Err(Error::corrupt(
                file.path(),
                next * PAGE_SIZE as u64,
                format!("freelist names page {bad}, outside the file"),
            ));
        }
        free.extend(ids);
        next = link;
    }
    Ok(Durable { root: meta.root, page_count: meta.page_count, free, freelist_pages })
}

/// Reads and verifies one page.
async fn read_page(file: &File, id: PageId) -> Result<Vec<u8>> {
    let offset = id * PAGE_SIZE as u64;
    let bytes = file.read(offset, PAGE_SIZE).await?;
    if bytes.len() < PAGE_SIZE {
        return Err(Error::corrupt(file.path(), offset, format!("page {id} lies beyond the end of the file")));
    }
    page::verify(&bytes, id).map_err(|reason| Error::corrupt(file.path(), offset, reason))?;
    Ok(bytes)
}

impl Inner {
    /// `partition`'s state, made empty if the store holds none yet.
    fn partition_mut(&self, partition: PartitionId) -> RefMut<'_, Partition> {
        RefMut::map(self.partitions.borrow_mut(), |partitions| partitions.entry(partition).or_default())
    }

    /// `partition`'s state, given metadata if it has none (as repaired as `Store::amnesiac`
    /// reads an absent one), and marked to be saved.
    fn known_partition(&self, partition: PartitionId) -> RefMut<'_, Partition> {
        let repaired = self.damaged_tails.get().unknown_repaired;
        let mut state = self.partition_mut(partition);
        state.know(repaired);
        state
    }

    fn promised(&self, partition: PartitionId) -> Ballot {
        self.partitions.borrow().get(&partition).map_or(Ballot::default(), |state| state.promised)
    }

    /// Why recovery held `partition`, if it did.
    fn held(&self, partition: PartitionId) -> Option<String> {
        self.partitions.borrow().get(&partition).and_then(|state| state.held.as_ref().map(|(why, _)| why.clone()))
    }

    /// Runs a tree operation, loading pages it needs until it completes.
    async fn with_tree<T>(&self, mut op: impl FnMut(&mut Tree) -> TreeResult<T>) -> Result<T> {
        loop {
            let result = op(&mut self.tree.borrow_mut());
            match result {
                Ok(value) => return Ok(value),
                Err(TreeError::Need(id)) => {
                    self.page_reads.set(self.page_reads.get() + 1);
                    let generation = self.tree.borrow().generation();
                    let bytes = read_page(&self.file, id).await.inspect_err(|error| {
                        if matches!(error, Error::Corrupt { .. }) {
                            self.damaged_read(id, error);
                        }
                    })?;
                    self.tree.borrow_mut().insert_loaded(id, bytes, generation);
                }
                Err(TreeError::Corrupt(reason)) => return Err(Error::corrupt(self.file.path(), 0, reason)),
            }
        }
    }

    async fn scan_tree(
        &self,
        mut lower: Bound<Vec<u8>>,
        mut upper: Bound<Vec<u8>>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut entries = Vec::new();
        self.with_tree(|tree| tree.scan_resumable(tree.root(), &mut lower, &mut upper, reverse, limit, &mut entries))
            .await?;
        Ok(entries)
    }

    /// Applies one entry at `slot`: reads the old images it names, runs the partition's
    /// machine (`PartitionMachine::apply`) and makes its effects. The partition's metadata
    /// (applied slot, counts, schema) is kept in memory and written into the tree just before a
    /// checkpoint is sealed (`save_partition_metas`), so the checkpoint holds exactly the
    /// metadata of the records its tree reflects.
    ///
    /// `keep`: the proposer takes the outcome (a plain put's or delete's is then the value it
    /// replaced, rather than only its length).
    async fn apply(&self, partition: PartitionId, slot: u64, entry: &Stamped, keep: bool) -> Result<Outcome> {
        let mut keys = Vec::new();
        PartitionMachine::reads(&entry.command, &mut keys);
        let mut images = Images::default();
        for key in keys {
            if !images.contains(key) {
                let full = data_key(partition, key);
                let image = self.with_tree(|tree| tree.get(&full)).await?;
                images.insert(key.to_vec(), image);
            }
        }
        let applied = {
            let repaired = self.damaged_tails.get().unknown_repaired;
            let mut state = self.partition_mut(partition);
            let state = state.know(repaired);
            let applied = state
                .machine
                .apply(slot, entry, &mut images, keep)
                .map_err(|reason| Error::corrupt(self.file.path(), 0, reason))?;
            state.unsaved.schema |= applied.schema_changed;
            state.has_changes |= state.machine.schema.changes != ChangeView::Off;
            state.applied_through(slot);
            applied
        };
        for effect in applied.effects {
            match effect {
                Effect::Put { key, value } => {
                    let full = data_key(partition, &key);
                    self.with_tree(|tree| tree.put_len(&full, &value).map(drop)).await?;
                }
                Effect::Delete { key } => {
                    let full = data_key(partition, &key);
                    self.with_tree(|tree| tree.delete_len(&full).map(drop)).await?;
                }
                Effect::Change { sequence, record } => {
                    let full = keyspace::change_key(partition, sequence);
                    self.with_tree(|tree| tree.put_len(&full, &record).map(drop)).await?;
                }
            }
        }
        Ok(applied.outcome)
    }

    /// Applies a step of installing a snapshot of `partition`.
    async fn install(&self, partition: PartitionId, step: &Install) -> Result<()> {
        match step {
            Install::Begin => {
                self.excise_damaged(partition).await?;
                self.empty_partition(partition).await?;
                let mut state = self.known_partition(partition);
                state.machine = PartitionMachine { schema: state.machine.schema, ..PartitionMachine::default() };
                state.installing = true;
            }
            Install::Entries(entries) => {
                for (key, value) in entries {
                    let full = data_key(partition, key);
                    let previous = self.with_tree(|tree| tree.put_len(&full, value)).await?;
                    self.known_partition(partition).machine.count(key, previous, Some(value.len()));
                }
            }
            Install::End { slot, items, bytes, members } => {
                let whole = {
                    let mut state = self.known_partition(partition);
                    let whole = state.installing && state.machine.items == *items && state.machine.bytes == *bytes;
                    state.installing &= !whole;
                    whole
                };
                if whole {
                    self.configure(partition, *slot, members.clone());
                }
            }
        }
        Ok(())
    }

    /// `partition`'s group is configured as `members` from `slot` on (applied).
    fn configure(&self, partition: PartitionId, slot: u64, members: Vec<paxos::Member>) {
        let mut state = self.known_partition(partition);
        state.config = Some(members);
        state.unsaved.config = true;
        state.applied_through(slot);
    }

    /// Deletes everything of `partition` but its metadata from the tree (its items, its
    /// change log), a chunk at a time.
    async fn empty_partition(&self, partition: PartitionId) -> Result<()> {
        for (mut lower, upper) in keyspace::partition_ranges(partition) {
            loop {
                let chunk = self.scan_tree(lower, upper.clone(), false, APPLY_CHUNK).await?;
                let Some((last, _)) = chunk.last() else { break };
                lower = Bound::Excluded(last.clone());
                for (key, _) in &chunk {
                    self.with_tree(|tree| tree.delete(key)).await?;
                }
                yield_to_reactor().await;
            }
        }
        Ok(())
    }

    /// Removes `partition` whole: items, metadata (in memory and in the tree), and the
    /// entries it held unapplied, which would otherwise keep the WAL from being recycled.
    async fn drop_partition(&self, partition: PartitionId) -> Result<()> {
        self.empty_partition(partition).await?;
        for key in [meta_key(partition), config_key(partition), schema_key(partition)] {
            self.with_tree(|tree| tree.delete(&key).map(drop)).await?;
        }
        self.partitions.borrow_mut().remove(&partition);
        Ok(())
    }

    /// Writes the partition metadata changed since the last checkpoint into the tree. Called by
    /// the applier only, between records.
    async fn save_partition_metas(&self) -> Result<()> {
        let mut writes = Vec::new();
        for (&partition, state) in self.partitions.borrow_mut().iter_mut() {
            let unsaved = std::mem::take(&mut state.unsaved);
            if unsaved.meta && state.known {
                writes.push((meta_key(partition), state.meta().encode().to_vec()));
            }
            if let Some(config) = state.config.as_ref().filter(|_| unsaved.config) {
                let mut encoded = Vec::new();
                paxos::encode_members(config, &mut encoded);
                writes.push((config_key(partition), encoded));
            }
            if unsaved.schema {
                let mut encoded = Vec::new();
                state.machine.schema.encode(&mut encoded);
                writes.push((schema_key(partition), encoded));
            }
        }
        for (key, value) in writes {
            self.with_tree(|tree| tree.put(&key, &value).map(drop)).await?;
        }
        Ok(())
    }

    async fn applier(inner: Rc<Inner>) {
        loop {
            let next = inner.queue.borrow().front().map(|queued| queued.lsn);
            match next {
                None if inner.closed.get() => return,
                None => {
                    if let Err(error) = inner.maybe_checkpoint().await {
                        inner.fail(error.to_string());
                        return;
                    }
                    inner.work.wait().await;
                    continue;
                }
                // Chosen entries (replicated mode) are durable on a quorum already.
                Some(_) if inner.config.replicated => {}
                Some(lsn) => {
                    if let Err(error) = inner.wal.durable(lsn).await {
                        inner.fail(error.to_string());
                        return;
                    }
                }
            }
            let durable = if inner.config.replicated { u64::MAX } else { inner.wal.durable_lsn() };
            let mut applied_here = 0usize;
            loop {
                // Before each chunk, let the reactor turn: writers acknowledged by the flush
                // that woke us submit again and the next flush is issued before the applies
                // run, so the disk works while this core applies. A chunk bounds how long a
                // flush's completion can wait unnoticed behind applies. The turn is taken even
                // when tasks wait for these applies (reads at the barrier, conditional writes
                // for their outcome): skipping it for them delayed the next flush, so batches
                // grew, and conditional updates' median at 30,000 writes/s was 1.53x a put's
                // instead of 1.3x (bench/RESULTS.md).
                if applied_here.is_multiple_of(APPLY_CHUNK) {
                    yield_to_reactor().await;
                }
                applied_here += 1;
                let queued = {
                    let mut queue = inner.queue.borrow_mut();
                    match queue.front() {
                        Some(front) if front.lsn <= durable => queue.pop_front(),
                        _ => None,
                    }
                };
                let Some(queued) = queued else { break };
                let applied = match &queued.work {
                    Work::Command(entry) => {
                        inner.apply(queued.partition, queued.slot, entry, queued.want_outcome).await
                    }
                    Work::Install(step) => {
                        inner.install(queued.partition, step).await.map(|()| Outcome::Batch(Vec::new()))
                    }
                    Work::Drop => inner.drop_partition(queued.partition).await.map(|()| Outcome::Batch(Vec::new())),
                    Work::Members(members) => {
                        inner.configure(queued.partition, queued.slot, members.clone());
                        Ok(Outcome::Batch(Vec::new()))
                    }
                };
                match applied {
                    Ok(outcome) => {
                        if queued.want_outcome {
                            inner.outcomes.borrow_mut().insert(queued.lsn, outcome);
                        }
                        inner.applied.advance(queued.lsn);
                    }
                    Err(error) => {
                        inner.fail(error.to_string());
                        return;
                    }
                }
            }
            if let Err(error) = inner.maybe_checkpoint().await {
                inner.fail(error.to_string());
                return;
            }
        }
    }

    fn check_held(&self, partition: PartitionId) -> Result<()> {
        match self.held(partition) {
            Some(reason) => Err(Error::Held { partition, reason }),
            None => Ok(()),
        }
    }

    fn fail(&self, cause: String) {
        self.poisoned.borrow_mut().get_or_insert(cause.clone());
        self.applied.fail(cause.clone());
        self.checkpoints.fail(cause);
    }

    /// Seals a checkpoint if one is wanted and none is running. Called by the applier only,
    /// between records.
    async fn maybe_checkpoint(self: &Rc<Inner>) -> Result<()> {
        let backing_off = self.short_of_space.borrow().as_ref().is_some_and(|(_, retry_at)| Instant::now() < *retry_at);
        if self.checkpoint_running.get() || self.poisoned.borrow().is_some() || self.closed.get() || backing_off {
            return Ok(());
        }
        // Each checkpoint starts at a threshold between 3/4 and all of the configured one, drawn
        // afresh: stores under the same load (the replicas of a cluster) then checkpoint at
        // different moments rather than all at once on a shared disk.
        let threshold = self.config.checkpoint_dirty_pages.min(self.tree.borrow().capacity() / 2);
        let threshold = threshold - threshold / 4 * (self.jitter.get() % 1024) as usize / 1024;
        let tree_full = self.tree.borrow().dirty_pages() >= threshold;
        // A long log calls for a checkpoint only if one would recycle some of it: entries that
        // stay unapplied (a log replica's) hold it all, and it must not set off one per apply.
        let log_long = self.wal.segments_in_use() >= self.config.checkpoint_wal_segments
            && self.wal.recyclable(self.covered_lsn());
        if !(self.checkpoint_wanted.get() || tree_full || log_long) {
            return Ok(());
        }
        self.save_partition_metas().await?;
        self.checkpoint_wanted.set(false);
        self.checkpoint_running.set(true);
        self.checkpoints_started.set(self.checkpoints_started.get() + 1);
        let mut jitter = self.jitter.get();
        jitter ^= jitter << 13;
        jitter ^= jitter >> 7;
        jitter ^= jitter << 17;
        self.jitter.set(jitter);
        let sealed = self.tree.borrow_mut().seal();
        let covered_lsn = self.covered_lsn();
        let slots = self
            .partitions
            .borrow()
            .iter()
            .filter(|(_, state)| state.known)
            .map(|(&partition, state)| (partition, state.machine.applied_slot))
            .collect();
        glommio::spawn_local(Inner::write_checkpoint(self.clone(), sealed, covered_lsn, slots)).detach();
        Ok(())
    }

    /// The WAL a checkpoint sealed now makes redundant: every applied record (a group of one);
    /// in replicated mode, every durable record before the oldest unapplied entry (entries at
    /// or below applied slots are in the tree, promises in the partition metadata).
    fn covered_lsn(&self) -> u64 {
        if !self.config.replicated {
            // A held partition's records stay in the log for the operator to decide on.
            let held =
                self.partitions.borrow().values().filter_map(|state| state.held.as_ref().map(|(_, lsn)| lsn - 1)).min();
            return held.map_or(self.applied.get(), |held| held.min(self.applied.get()));
        }
        let oldest =
            self.partitions.borrow().values().filter_map(|state| state.unapplied.values().min().copied()).min();
        let durable = self.wal.durable_lsn();
        oldest.map_or(durable, |oldest| durable.min(oldest - 1))
    }

    async fn write_checkpoint(
        inner: Rc<Inner>,
        sealed: Sealed,
        covered_lsn: u64,
        slots: ahash::HashMap<PartitionId, u64>,
    ) {
        let result = inner.write_sealed(&sealed, covered_lsn).await;
        inner.checkpoint_running.set(false);
        match result {
            Ok(()) => {
                inner.tree.borrow_mut().commit(sealed);
                for (partition, state) in inner.partitions.borrow_mut().iter_mut() {
                    state.checkpointed_slot = slots.get(partition).copied().unwrap_or(0);
                }
                if inner.short_of_space.borrow_mut().take().is_some() {
                    crate::report!("tessera: {}: a checkpoint was written; writes resume", inner.dir.display());
                }
                if let Err(error) = inner.wal.recycle_through(covered_lsn).await {
                    inner.fail(error.to_string());
                    return;
                }
                inner.checkpoints.advance(inner.checkpoints.get() + 1);
                inner.work.notify();
            }
            Err(error) if error.is_no_space() => {
                // The writes went to pages the durable checkpoint does not reference: it still
                // stands, and this one is sealed again later from the same dirty pages.
                inner.tree.borrow_mut().abandon(sealed);
                inner.checkpoints_started.set(inner.checkpoints_started.get() - 1);
                let reason = format!(
                    "no room for a checkpoint of {} ({} free); writes resume by themselves once space is freed",
                    inner.dir.display(),
                    disk::free_text(&inner.dir),
                );
                let first = inner.short_of_space.borrow().is_none();
                if first {
                    crate::report!("tessera: the disk is full: {reason}");
                }
                *inner.short_of_space.borrow_mut() = Some((reason, Instant::now() + SPACE_RETRY));
                let retry = inner.clone();
                glommio::spawn_local(async move {
                    glommio::timer::sleep(SPACE_RETRY).await;
                    retry.checkpoint_wanted.set(true);
                    retry.work.notify();
                })
                .detach();
            }
            Err(error) => {
                inner.tree.borrow_mut().abandon(sealed);
                inner.fail(error.to_string());
            }
        }
    }

    /// Steps (1) to (4) of the commit described in the module documentation.
    async fn write_sealed(&self, sealed: &Sealed, covered_lsn: u64) -> Result<()> {
        // The freelist pages, then the tree pages, collected from the tree a chunk at a time so
        // that no step holds the core for long. Up to CHECKPOINT_WRITES_IN_FLIGHT writes are on
        // the device at once (one after another, a 16k-page checkpoint took 250-500 ms).
        // Space for every page first: on a full disk the checkpoint fails here, having written
        // nothing, and is retried (the pages after the old end would otherwise be allocated by
        // the writes themselves, which can fail part-way or fall short).
        self.file.preallocate(sealed.page_count * PAGE_SIZE as u64).await?;
        let mut writing = VecDeque::new();
        let mut outcome = self.write_pages(sealed.freelist.clone(), &mut writing).await;
        for (at, chunk) in sealed.ids.chunks(CHECKPOINT_CHUNK_PAGES).enumerate() {
            if outcome.is_err() {
                break;
            }
            if at > 0 && at.is_multiple_of(CHECKPOINT_SYNC_EVERY_CHUNKS) {
                // Written but not yet flushed data is a debt the device's next cache flush
                // pays, and the next flush is a WAL write's: bounded here, that write waits for
                // a few megabytes rather than the whole checkpoint.
                outcome = self.drain(&mut writing).await;
                if outcome.is_ok() {
                    outcome = self.file.fdatasync().await;
                }
                if outcome.is_err() {
                    break;
                }
            }
            let pages = self.tree.borrow().sealed_pages(chunk);
            outcome = self.write_pages(pages, &mut writing).await;
        }
        // Every write is awaited, even after a failure: none may land after this returns.
        let drained = self.drain(&mut writing).await;
        outcome.and(drained)?;
        self.file.fdatasync().await?;
        let sequence = self.meta_sequence.get() + 1;
        let meta = Meta {
            sequence,
            root: sealed.root,
            page_count: sealed.page_count,
            freelist_head: sealed.freelist_head,
            covered_lsn,
        };
        let slot = sequence % 2;
        self.file.write(slot * PAGE_SIZE as u64, &meta.encode(slot)).await?;
        self.file.fdatasync().await?;
        self.meta_sequence.set(sequence);
        Ok(())
    }

    /// Awaits every write in `writing` (all of them, even after one failed).
    async fn drain(&self, writing: &mut VecDeque<glommio::task::JoinHandle<Result<()>>>) -> Result<()> {
        let mut outcome = Ok(());
        for write in writing.drain(..) {
            let result = self.written(write).await;
            outcome = outcome.and(result);
        }
        outcome
    }

    /// The outcome of a checkpoint write.
    async fn written(&self, write: glommio::task::JoinHandle<Result<()>>) -> Result<()> {
        write.await.unwrap_or_else(|| {
            Err(Error::io("write", self.file.path(), std::io::Error::other("the write's task was cancelled")))
        })
    }

    /// Starts the writes of `pages`, runs of consecutive ids coalesced into one write, waiting
    /// for the oldest write whenever `writing` holds CHECKPOINT_WRITES_IN_FLIGHT.
    async fn write_pages(
        &self,
        mut pages: Vec<(PageId, Rc<[u8]>)>,
        writing: &mut VecDeque<glommio::task::JoinHandle<Result<()>>>,
    ) -> Result<()> {
        pages.sort_unstable_by_key(|(id, _)| *id);
        let mut start = 0;
        while start < pages.len() {
            let mut end = start + 1;
            while end < pages.len() && pages[end].0 == pages[end - 1].0 + 1 && end - start < 256 {
                end += 1;
            }
            let run: Vec<Rc<[u8]>> = pages[start..end].iter().map(|(_, bytes)| bytes.clone()).collect();
            let (file, offset) = (self.file.clone(), pages[start].0 * PAGE_SIZE as u64);
            let write = glommio::spawn_local(async move {
                let parts: Vec<&[u8]> = run.iter().map(|bytes| &bytes[..]).collect();
                file.write_parts(offset, &parts, page::seal).await
            });
            writing.push_back(write.detach());
            if writing.len() >= CHECKPOINT_WRITES_IN_FLIGHT {
                self.written(writing.pop_front().expect("a write in flight")).await?;
            }
            start = end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
