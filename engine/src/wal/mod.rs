//! The per-core write-ahead log: one per core, shared by every partition replica the core
//! owns, with group commit. `append` queues a record and returns its LSN at once; the flusher
//! task writes everything queued as one block-aligned DMA write to a segment opened O_DSYNC
//! (the write completes only once durable: one I/O, no separate fdatasync), so every record
//! that arrives while a flush is in flight joins the next one. `durable(lsn)` resolves only
//! after the write carrying the record completed. A flush that takes `SLOW_FLUSH_REPORTED`
//! (100 ms) or more is reported on standard error.
//!
//! Segments are fixed-size files, zero-filled when created and reused after a checkpoint
//! covers them, so an fdatasync never has to journal a file-size change.
//!
//! Invariants: LSNs are consecutive from 1; flushes are issued one at a time, in LSN order; a
//! flush starts at a block boundary and never rewrites a block of an earlier flush; after any
//! failed write or sync the WAL is poisoned and accepts nothing more.
//!
//! A full disk is not a failure: a segment's space is reserved before it is written, so a
//! disk without room refuses the reservation and nothing was written. The WAL then reports
//! it, refuses new appends (`Error::NoSpace`, retryable) while a flush waits for a segment,
//! retries every `SPACE_RETRY`, and resumes by itself once a segment is made or recycled.

mod format;

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub use format::Record;
use format::{finish_record, mark_flush_start, scan_segment, ScanEnd, SegmentHeader, BLOCK, RECORD_HEADER_LEN};

use crate::disk::{self, File};
use crate::error::{Error, Result};
use crate::signal::{Event, Watermark};

/// A flush that takes this long says so on standard error (the device is slow or busy).
const SLOW_FLUSH_REPORTED: std::time::Duration = std::time::Duration::from_millis(100);
/// How often a WAL short of disk space tries again to create a segment.
const SPACE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// WAL settings.
#[derive(Clone, Debug)]
pub struct WalConfig {
    /// Size of each segment file.
    pub segment_bytes: u64,
    /// Largest record payload accepted.
    pub record_bytes_max: usize,
    /// Most bytes one flush writes (a single larger record is flushed alone).
    pub flush_bytes_max: usize,
    /// Spare segments kept for reuse; more than this are deleted when recycled.
    pub spare_segments_max: usize,
}

impl Default for WalConfig {
    fn default() -> WalConfig {
        WalConfig {
            segment_bytes: 64 << 20,
            // A BatchWriteItem request may carry 16 MB.
            record_bytes_max: (16 << 20) + (64 << 10),
            flush_bytes_max: 4 << 20,
            // A checkpoint starts when the log spans 4 segments; keeping as many spares means
            // the steady state reuses segments rather than zero-filling new ones.
            spare_segments_max: 4,
        }
    }
}

impl WalConfig {
    fn validate(&self) -> Result<()> {
        let record_max = (RECORD_HEADER_LEN + self.record_bytes_max) as u64;
        if !self.segment_bytes.is_multiple_of(BLOCK as u64) || self.segment_bytes < 2 * BLOCK as u64 + record_max {
            return Err(Error::Config(format!(
                "wal segment_bytes {} must be a multiple of {BLOCK} and hold a header block and a {record_max}-byte record",
                self.segment_bytes
            )));
        }
        if self.flush_bytes_max < BLOCK {
            return Err(Error::Config(format!("wal flush_bytes_max must be at least {BLOCK}")));
        }
        Ok(())
    }
}

struct Segment {
    file: File,
    header: Option<SegmentHeader>,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// End offset of each record in `bytes`, with its LSN.
    ends: Vec<(usize, u64)>,
    /// The buffer of the last flush, kept for reuse: a fresh one per flush would be mapped
    /// and zeroed by the kernel each time once batches reach hundreds of KiB.
    spare: Vec<u8>,
}

struct Inner {
    dir: PathBuf,
    config: WalConfig,
    /// Segments in use, oldest first; the last is the one being written.
    chain: RefCell<Vec<Segment>>,
    spares: RefCell<Vec<Segment>>,
    write_offset: Cell<u64>,
    next_lsn: Cell<u64>,
    next_index: Cell<u32>,
    pending: RefCell<Pending>,
    durable: Watermark,
    flush_wanted: Event,
    closed: Cell<bool>,
    flushes: Cell<u64>,
    flusher: RefCell<Option<glommio::Task<()>>>,
    /// A spare segment is being created in the background.
    preparing: Cell<bool>,
    /// The last segment creation was refused for want of space: why, and when to try again.
    short_of_space: RefCell<Option<(String, std::time::Instant)>>,
    /// A flush waits for a segment that the disk has no room for: appends are refused.
    blocked: Cell<bool>,
}

/// Handle to a core's WAL; cheap to clone.
#[derive(Clone)]
pub struct Wal {
    inner: Rc<Inner>,
}

/// What `Wal::open` found: the WAL and the records after the checkpoint, in LSN order.
pub struct Recovered {
    pub wal: Wal,
    pub records: Vec<Record>,
    /// Where the log ended on a record that claims the next LSN but fails its checksum
    /// (`ScanEnd::DamagedTail`): a torn last flush, or one damaged after it was acknowledged.
    pub damaged_tail: Option<String>,
    /// The damaged tails recovery has found in this WAL's life, this one included
    /// (`DAMAGED_TAILS_FILE`): a replicated store's replicas are amnesiac until repaired
    /// through their count.
    pub damaged_tails: DamagedTails,
}

/// What a WAL directory's `DAMAGED_TAILS_FILE` holds (FORMAT.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DamagedTails {
    /// How many damaged tails recovery has found.
    pub count: u64,
    /// Through how many of them every partition that can have had a record in one was known
    /// to the store (holds partition metadata): a partition without metadata reads as repaired
    /// through this count (`Store::partitions_known`).
    pub unknown_repaired: u64,
}

/// The file in a WAL directory that counts the damaged tails recovery found (FORMAT.md).
const DAMAGED_TAILS_FILE: &str = "damaged-tails";
/// Its length: two u64 LE, then their CRC32C.
const DAMAGED_TAILS_LEN: usize = 20;

/// `dir`'s `DAMAGED_TAILS_FILE` (none found without one).
fn read_damaged_tails(dir: &Path) -> Result<DamagedTails> {
    let path = dir.join(DAMAGED_TAILS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(DamagedTails::default()),
        Err(error) => return Err(Error::io("read", &path, error)),
    };
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    if bytes.len() != DAMAGED_TAILS_LEN || crc32c::crc32c(&bytes[..16]).to_le_bytes() != bytes[16..] {
        return Err(Error::corrupt(&path, 0, "malformed count of damaged WAL tails"));
    }
    let tails = DamagedTails { count: word(0), unknown_repaired: word(8) };
    if tails.unknown_repaired > tails.count {
        return Err(Error::corrupt(&path, 8, "more damaged WAL tails repaired than found"));
    }
    Ok(tails)
}

/// Makes `tails` the durable content of `dir`'s `DAMAGED_TAILS_FILE` (written aside, synced,
/// renamed, the directory synced).
pub(crate) fn write_damaged_tails(dir: &Path, tails: DamagedTails) -> Result<()> {
    let (path, temporary) = (dir.join(DAMAGED_TAILS_FILE), dir.join(format!("{DAMAGED_TAILS_FILE}.tmp")));
    let mut bytes = tails.count.to_le_bytes().to_vec();
    bytes.extend_from_slice(&tails.unknown_repaired.to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
    std::fs::write(&temporary, &bytes)
        .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
        .and_then(|()| std::fs::rename(&temporary, &path))
        .map_err(|error| Error::io("write", &path, error))?;
    disk::sync_dir(dir)
}

/// Whether the oldest segment of `chain` holds only records up to `lsn` (the next one starts
/// at or before `lsn + 1`): a checkpoint covering `lsn` recycles it.
fn first_recyclable(chain: &[Segment], lsn: u64) -> bool {
    chain.get(1).is_some_and(|next| next.header.is_some_and(|header| header.first_lsn <= lsn + 1))
}

fn segment_path(dir: &Path, index: u32) -> PathBuf {
    dir.join(format!("{index:08}.wal"))
}

impl Wal {
    /// Opens the WAL in `dir` (creating it if empty) and reads every record after
    /// `checkpoint_lsn`. Damage inside acknowledged records is an error naming file and offset.
    pub async fn open(dir: &Path, config: WalConfig, checkpoint_lsn: u64) -> Result<Recovered> {
        config.validate()?;
        disk::create_dir(dir)?;
        disk::probe_device(dir).await?;
        let mut segments = Vec::new();
        let mut next_index = 0;
        let entries = std::fs::read_dir(dir).map_err(|error| Error::io("list directory", dir, error))?;
        for entry in entries {
            let entry = entry.map_err(|error| Error::io("list directory", dir, error))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".wal.tmp") {
                // A segment whose creation never finished: it never held a record.
                std::fs::remove_file(entry.path()).map_err(|error| Error::io("remove", entry.path(), error))?;
                continue;
            }
            let Some(index) = name.strip_suffix(".wal").and_then(|stem| stem.parse::<u32>().ok()) else {
                continue;
            };
            next_index = next_index.max(index + 1);
            let file = File::open_synced(&entry.path()).await?;
            if file.size().await? != config.segment_bytes {
                return Err(Error::corrupt(
                    entry.path(),
                    0,
                    format!("WAL segment is not {} bytes long (was segment_bytes changed?)", config.segment_bytes),
                ));
            }
            let header = SegmentHeader::decode(&file.read(0, BLOCK).await?);
            segments.push(Segment { file, header });
        }
        segments.sort_by_key(|segment| segment.header.map_or(0, |header| header.sequence));
        // Replay starts in the newest segment whose first LSN is at or before the first
        // record wanted; older segments are spares.
        let start = segments
            .iter()
            .rposition(|segment| segment.header.is_some_and(|header| header.first_lsn <= checkpoint_lsn + 1));
        if start.is_none() {
            // Records are there, but none from the first one the checkpoint does not cover: they
            // were recycled under a checkpoint that is gone (its meta pages damaged), and
            // replaying what is left would serve a tree missing them.
            if let Some((segment, header)) =
                segments.iter().find_map(|segment| segment.header.map(|header| (segment, header)))
            {
                return Err(Error::corrupt(
                    segment.file.path(),
                    0,
                    format!(
                        "the log holds records from LSN {} on, but the tree's checkpoint needs them from LSN {}: the checkpoint that covered the records before is lost (both meta pages of the tree file damaged?)",
                        header.first_lsn,
                        checkpoint_lsn + 1
                    ),
                ));
            }
        }
        let mut spares = Vec::new();
        let mut chain: Vec<Segment> = Vec::new();
        let mut records = Vec::new();
        let mut expected = checkpoint_lsn + 1;
        let mut write_offset = BLOCK as u64;
        let mut damaged_tail = None;
        let mut rest = segments.into_iter();
        if let Some(start) = start {
            spares.extend(rest.by_ref().take(start));
            for segment in rest.by_ref() {
                let header = segment.header.expect("chain segments have headers");
                if let Some(previous) = chain.last() {
                    let previous = previous.header.expect("chain segments have headers");
                    if header.sequence != previous.sequence + 1 || header.first_lsn < expected {
                        spares.push(segment);
                        break;
                    }
                    if header.first_lsn > expected {
                        return Err(Error::corrupt(
                            segment.file.path(),
                            0,
                            format!("segment starts at LSN {} but LSN {expected} was expected", header.first_lsn),
                        ));
                    }
                }
                let bytes = segment.file.read(0, config.segment_bytes as usize).await?;
                let scan = scan_segment(&bytes, header.first_lsn, config.record_bytes_max);
                match scan.end {
                    ScanEnd::Corrupt { offset, later } => {
                        return Err(Error::corrupt(
                            segment.file.path(),
                            offset as u64,
                            format!("damaged WAL record, although the flush at offset {later} after it was durable"),
                        ));
                    }
                    ScanEnd::Clean { offset } => write_offset = offset as u64,
                    ScanEnd::DamagedTail { offset, lsn } => {
                        write_offset = offset as u64;
                        damaged_tail = Some(format!(
                            "the WAL's last flush ({} before offset {offset}, from LSN {lsn}) fails its checksum: a crash tore it while it was written (then none of its writes was acknowledged), or it was damaged after it was (then they are lost); the log now ends before it",
                            segment.file.path().display()
                        ));
                    }
                }
                if let Some(last) = scan.records.last() {
                    expected = expected.max(last.lsn + 1);
                }
                records.extend(scan.records.into_iter().filter(|record| record.lsn > checkpoint_lsn));
                chain.push(segment);
            }
            spares.extend(rest);
        } else {
            let orphaned = rest.as_slice().iter().any(|segment| segment.header.is_some());
            if orphaned && checkpoint_lsn > 0 {
                return Err(Error::corrupt(
                    dir,
                    0,
                    format!("no WAL segment holds LSN {}, the first after the checkpoint", checkpoint_lsn + 1),
                ));
            }
            spares.extend(rest);
        }
        if records.first().is_some_and(|record| record.lsn != checkpoint_lsn + 1) {
            return Err(Error::corrupt(dir, 0, format!("WAL records after LSN {checkpoint_lsn} are missing")));
        }
        let mut damaged_tails = read_damaged_tails(dir)?;
        if damaged_tail.is_some() {
            // Counted durably before `prepare_tail` zeroes the damaged flush: a crash from here
            // on cannot make the damage forgotten.
            damaged_tails.count += 1;
            write_damaged_tails(dir, damaged_tails)?;
        }
        let wal = Wal {
            inner: Rc::new(Inner {
                dir: dir.to_path_buf(),
                config,
                chain: RefCell::new(chain),
                spares: RefCell::new(spares),
                write_offset: Cell::new(write_offset),
                next_lsn: Cell::new(expected),
                next_index: Cell::new(next_index),
                pending: RefCell::new(Pending::default()),
                durable: Watermark::new(expected - 1),
                flush_wanted: Event::default(),
                closed: Cell::new(false),
                flushes: Cell::new(0),
                flusher: RefCell::new(None),
                preparing: Cell::new(false),
                short_of_space: RefCell::new(None),
                blocked: Cell::new(false),
            }),
        };
        wal.prepare_tail().await?;
        let flusher = glommio::spawn_local(Inner::flusher(wal.inner.clone()));
        *wal.inner.flusher.borrow_mut() = Some(flusher);
        wal.inner.fill_spares(wal.inner.config.spare_segments_max);
        Ok(Recovered { wal, records, damaged_tail, damaged_tails })
    }

    /// Makes the write position safe: activates a first segment if there is none, and zeroes
    /// the blocks a torn flush may have left after the end of the log, so that they can never
    /// be read as records once new flushes surround them.
    async fn prepare_tail(&self) -> Result<()> {
        let inner = &self.inner;
        if inner.chain.borrow().is_empty() {
            // At open a disk without room for the first segment is an error to report, not
            // something to wait for.
            inner.next_segment(inner.next_lsn.get(), false).await?;
            return Ok(());
        }
        let offset = inner.write_offset.get();
        let end = (offset
            + (inner.config.flush_bytes_max.max(inner.config.record_bytes_max + RECORD_HEADER_LEN) as u64))
            .div_ceil(BLOCK as u64)
            * BLOCK as u64;
        let end = end.min(inner.config.segment_bytes);
        if end > offset {
            let file = inner.active_file();
            file.write_zeros(offset, end - offset).await?;
            file.fdatasync().await?;
        }
        Ok(())
    }

    /// Queues a record and returns its LSN. It is durable once `durable(lsn)` resolves.
    #[cfg(test)]
    pub fn append(&self, partition: u64, slot: u64, kind: u8, payload: &[u8]) -> Result<u64> {
        self.append_with(partition, slot, kind, |out| {
            out.extend_from_slice(payload);
            Ok(())
        })
    }

    /// Queues a record whose payload `write` appends straight into the WAL buffer (no
    /// intermediate copy) and returns its LSN.
    pub fn append_with(
        &self,
        partition: u64,
        slot: u64,
        kind: u8,
        write: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    ) -> Result<u64> {
        let inner = &self.inner;
        if let Some(cause) = inner.durable.failure() {
            return Err(Error::Poisoned { cause });
        }
        if inner.blocked.get() {
            let reason = inner.short_of_space.borrow().as_ref().map_or_else(String::new, |(reason, _)| reason.clone());
            return Err(Error::NoSpace(reason));
        }
        let mut pending = inner.pending.borrow_mut();
        let start = pending.bytes.len();
        pending.bytes.resize(start + RECORD_HEADER_LEN, 0);
        if let Err(error) = write(&mut pending.bytes) {
            pending.bytes.truncate(start);
            return Err(error);
        }
        let payload_len = pending.bytes.len() - start - RECORD_HEADER_LEN;
        if payload_len > inner.config.record_bytes_max {
            pending.bytes.truncate(start);
            return Err(Error::validation(format!(
                "log record of {payload_len} bytes exceeds the {}-byte limit",
                inner.config.record_bytes_max
            )));
        }
        let lsn = inner.next_lsn.get();
        inner.next_lsn.set(lsn + 1);
        finish_record(&mut pending.bytes, start, lsn, partition, slot, kind, 0);
        let end = pending.bytes.len();
        pending.ends.push((end, lsn));
        drop(pending);
        inner.flush_wanted.notify();
        Ok(lsn)
    }

    /// Resolves once the record with `lsn` (and every one before it) is durable.
    pub async fn durable(&self, lsn: u64) -> Result<()> {
        self.inner.durable.wait(lsn).await.map_err(|cause| Error::Poisoned { cause })
    }

    /// Highest LSN known durable.
    pub fn durable_lsn(&self) -> u64 {
        self.inner.durable.get()
    }

    /// The LSN the next append gets.
    pub fn next_lsn(&self) -> u64 {
        self.inner.next_lsn.get()
    }

    /// Whether `recycle_through(lsn)` would recycle a segment.
    pub fn recyclable(&self, lsn: u64) -> bool {
        first_recyclable(&self.inner.chain.borrow(), lsn)
    }

    /// A checkpoint covers every record up to `lsn`: segments holding only such records
    /// become spares, to be reused (the extra ones are deleted).
    pub async fn recycle_through(&self, lsn: u64) -> Result<()> {
        let inner = &self.inner;
        let mut surplus = Vec::new();
        {
            let mut chain = inner.chain.borrow_mut();
            let mut spares = inner.spares.borrow_mut();
            while first_recyclable(&chain, lsn) {
                let segment = chain.remove(0);
                if spares.len() < inner.config.spare_segments_max {
                    spares.push(segment);
                } else {
                    surplus.push(segment);
                }
            }
        }
        for segment in surplus {
            let path = segment.file.path().to_path_buf();
            segment.file.close().await?;
            disk::off_reactor(move || std::fs::remove_file(&path).map_err(|error| Error::io("remove", &path, error)))
                .await?;
        }
        Ok(())
    }

    /// Flushes (each one write and one fdatasync) since open: the group commit ratio is
    /// records appended over flushes.
    pub fn flush_count(&self) -> u64 {
        self.inner.flushes.get()
    }

    /// Count of segment files in use by the log (not spares).
    pub fn segments_in_use(&self) -> usize {
        self.inner.chain.borrow().len()
    }

    /// Flushes what is queued, stops the flusher and closes the segment files.
    pub async fn close(&self) -> Result<()> {
        self.inner.closed.set(true);
        self.inner.flush_wanted.notify();
        while self.inner.preparing.get() {
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
        let flusher = self.inner.flusher.borrow_mut().take();
        if let Some(flusher) = flusher {
            flusher.await;
        }
        let segments: Vec<Segment> =
            self.inner.chain.borrow_mut().drain(..).chain(self.inner.spares.borrow_mut().drain(..)).collect();
        for segment in segments {
            segment.file.close().await?;
        }
        match self.inner.durable.failure() {
            Some(cause) => Err(Error::Poisoned { cause }),
            None => Ok(()),
        }
    }
}

impl Inner {
    async fn flusher(inner: Rc<Inner>) {
        loop {
            inner.flush_wanted.wait().await;
            loop {
                let batch = inner.take_batch();
                let Some((bytes, last_lsn)) = batch else {
                    break;
                };
                inner.prepare_spare();
                if let Err(error) = inner.flush(&bytes).await {
                    inner.durable.fail(error.to_string());
                    return;
                }
                inner.pending.borrow_mut().spare = bytes;
                inner.durable.advance(last_lsn);
            }
            if inner.closed.get() {
                return;
            }
        }
    }

    /// Takes queued records up to `flush_bytes_max` (at least one), flagged and padded.
    fn take_batch(&self) -> Option<(Vec<u8>, u64)> {
        let mut pending = self.pending.borrow_mut();
        if pending.ends.is_empty() {
            return None;
        }
        let count = pending.ends.iter().take_while(|(end, _)| *end <= self.config.flush_bytes_max).count().max(1);
        let (cut, last_lsn) = pending.ends[count - 1];
        let mut rest = std::mem::take(&mut pending.spare);
        rest.clear();
        rest.extend_from_slice(&pending.bytes[cut..]);
        let mut bytes = std::mem::replace(&mut pending.bytes, rest);
        bytes.truncate(cut);
        pending.ends.drain(..count);
        pending.ends.iter_mut().for_each(|(end, _)| *end -= cut);
        drop(pending);
        mark_flush_start(&mut bytes, 0);
        bytes.resize(bytes.len().div_ceil(BLOCK) * BLOCK, 0);
        Some((bytes, last_lsn))
    }

    async fn flush(&self, bytes: &[u8]) -> Result<()> {
        if self.write_offset.get() + bytes.len() as u64 > self.config.segment_bytes {
            let first_lsn = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
            self.next_segment(first_lsn, true).await?;
        }
        let offset = self.write_offset.get();
        let file = self.active_file();
        // Segments are open with O_DSYNC: the write completes only once it is durable, so a
        // flush is one I/O (no separate fdatasync round trip through the kernel's workers).
        let started = std::time::Instant::now();
        file.write(offset, bytes).await?;
        let took = started.elapsed();
        if took >= SLOW_FLUSH_REPORTED {
            // Every write acknowledged by this flush waited as long.
            crate::report!(
                "tessera: a WAL flush of {} KiB to {} took {} ms",
                bytes.len() >> 10,
                file.path().display(),
                took.as_millis()
            );
        }
        self.write_offset.set(offset + bytes.len() as u64);
        self.flushes.set(self.flushes.get() + 1);
        Ok(())
    }

    fn active_file(&self) -> File {
        self.chain.borrow().last().expect("an active segment").file.clone()
    }

    /// Activates the segment whose first record will be `first_lsn`. With `wait_for_space`, a
    /// disk without room for a new one blocks appends until a segment is made or recycled.
    async fn next_segment(&self, first_lsn: u64, wait_for_space: bool) -> Result<()> {
        let sequence = self.chain.borrow().last().and_then(|segment| segment.header).map_or(0, |h| h.sequence) + 1;
        let mut segment = loop {
            let spare = self.spares.borrow_mut().pop();
            if let Some(segment) = spare {
                break segment;
            }
            if self.preparing.get() {
                glommio::timer::sleep(std::time::Duration::from_micros(200)).await;
                continue;
            }
            match self.create_segment().await {
                Ok(segment) => break segment,
                Err(Error::NoSpace(_)) if wait_for_space && !self.closed.get() => {
                    self.blocked.set(true);
                    glommio::timer::sleep(SPACE_RETRY).await;
                }
                Err(error) => {
                    self.blocked.set(false);
                    return Err(error);
                }
            }
        };
        if self.blocked.replace(false) {
            crate::report!("tessera: {}: the WAL has a segment again; writes resume", self.dir.display());
        }
        let header = SegmentHeader { sequence, first_lsn, segment_bytes: self.config.segment_bytes };
        let mut block = vec![0u8; BLOCK];
        block[..format::SEGMENT_HEADER_LEN].copy_from_slice(&header.encode());
        segment.file.write(0, &block).await?;
        segment.file.fdatasync().await?;
        segment.header = Some(header);
        self.chain.borrow_mut().push(segment);
        self.write_offset.set(BLOCK as u64);
        Ok(())
    }

    /// Creates a spare segment in the background if none is ready, so that rolling over to a
    /// new segment never waits for a zero-fill.
    fn prepare_spare(self: &Rc<Inner>) {
        if !self.spares.borrow().is_empty() {
            return;
        }
        self.fill_spares(1);
    }

    /// Creates spare segments in the background, one at a time, until `count` are ready. At
    /// open, a new log fills its spares this way before load arrives: zero-filled under load,
    /// each new segment took disk bandwidth from the flushes that acknowledge writes.
    fn fill_spares(self: &Rc<Inner>, count: usize) {
        let backing_off =
            self.short_of_space.borrow().as_ref().is_some_and(|(_, retry_at)| std::time::Instant::now() < *retry_at);
        if self.preparing.get() || self.closed.get() || backing_off {
            return;
        }
        self.preparing.set(true);
        let inner = self.clone();
        glommio::spawn_local(async move {
            while inner.spares.borrow().len() < count && !inner.closed.get() {
                match inner.create_segment().await {
                    Ok(segment) if !inner.closed.get() => inner.spares.borrow_mut().push(segment),
                    Ok(segment) => drop(segment.file.close().await),
                    // Reported; the flush that needs a segment waits for space.
                    Err(Error::NoSpace(_)) => break,
                    Err(error) => {
                        inner.durable.fail(error.to_string());
                        break;
                    }
                }
            }
            inner.preparing.set(false);
        })
        .detach();
    }

    /// Creates and zero-fills a new segment file under a temporary name, then renames it, so a
    /// segment file of the right size has always been fully written once. Its space is
    /// reserved first: on a full disk that fails before anything is written, the temporary
    /// file is removed, and the error is `Error::NoSpace` (reported once).
    async fn create_segment(&self) -> Result<Segment> {
        let index = self.next_index.get();
        self.next_index.set(index + 1);
        let path = segment_path(&self.dir, index);
        let temporary = path.with_extension("wal.tmp");
        let file = File::open(&temporary, true).await?;
        let filled = async {
            file.preallocate(self.config.segment_bytes).await?;
            file.write_zeros(0, self.config.segment_bytes).await?;
            file.fdatasync().await
        }
        .await;
        drop(file.close().await);
        if let Err(error) = filled {
            let removed = temporary.clone();
            let unlinked =
                disk::off_reactor(move || std::fs::remove_file(&removed).map_err(|e| Error::io("remove", &removed, e)))
                    .await;
            if !error.is_no_space() {
                return Err(error);
            }
            return Err(self.short_of_space(unlinked.err()));
        }
        let (renamed, dir) = (path.clone(), self.dir.clone());
        disk::off_reactor(move || {
            std::fs::rename(&temporary, &renamed).map_err(|error| Error::io("rename", &temporary, error))?;
            disk::sync_dir(&dir)
        })
        .await?;
        if self.short_of_space.borrow_mut().take().is_some() && !self.blocked.get() {
            crate::report!("tessera: {}: the disk has room for WAL segments again", self.dir.display());
        }
        Ok(Segment { file: File::open_synced(&path).await?, header: None })
    }

    /// Notes (and reports, the first time) that a segment could not be created for want of
    /// space; the error appends get meanwhile.
    fn short_of_space(&self, unremoved: Option<Error>) -> Error {
        let reason = format!(
            "no room for a new {} WAL segment in {} ({} free); writes resume by themselves once space is freed",
            disk::size_text(self.config.segment_bytes),
            self.dir.display(),
            disk::free_text(&self.dir),
        );
        let mut short = self.short_of_space.borrow_mut();
        if short.is_none() {
            crate::report!("tessera: the disk is full: {reason}");
        }
        if let Some(error) = unremoved {
            crate::report!("tessera: {error}");
        }
        *short = Some((reason.clone(), std::time::Instant::now() + SPACE_RETRY));
        Error::NoSpace(reason)
    }
}

#[cfg(test)]
mod tests;
