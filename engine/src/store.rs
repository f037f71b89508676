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
//!
//! Rooms: `recovery.rs` (what `open` replays), `apply.rs` (the applier), `checkpoint.rs`,
//! `install.rs` (snapshots out and in), `changes.rs` (the change log's reads and trimming),
//! `replicated.rs` (replicas' promises, entries and amnesia), `scrub.rs` (damage); this file
//! holds the store, its configuration and the write and read paths.

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

mod apply;
mod changes;
mod checkpoint;
mod install;
mod recovery;
mod replicated;
mod scrub;

pub use crate::partition::{PartitionId, PartitionMeta};
use changes::trim_changes_every;
use checkpoint::{read_durable, Meta};
pub use install::PartitionSnapshot;
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
        // The applier applies the queue in order, which must be LSN order.
        let queued_before = self.inner.queue.borrow().back().map(|queued| queued.lsn);
        assert!(queued_before.is_none_or(|before| before < lsn), "LSN {lsn} queued after LSN {queued_before:?}");
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
}

#[cfg(test)]
mod tests;
