//! Damage to the tree file: reported once per page whoever finds it (a read, a checkpoint's
//! writes of partition metadata, the scrub), and the background scrub that looks for it.
//!
//! The scrub walks every page reachable from the durable checkpoint (pinned meanwhile, so the
//! pages it reaches keep their contents), reading each from the disk with an O_DIRECT read
//! (the page cache would hide damage) and checking its CRC, `SCRUB_PAGES_PER_TICK` pages per
//! `SCRUB_TICK`, one pass every `StoreConfig::scrub_interval`. A damaged page is reported with
//! the partitions whose keys its range holds (from its parents' separators) and remembered:
//! a replicated store's host reinstalls those partitions from a healthy replica
//! (`Store::take_damaged_partitions`), and installing one first cuts the damaged page out of
//! the tree without reading it (`Inner::excise_damaged`). A single node can only report it:
//! reads that reach the page keep failing with a retryable error, the other keys serve.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use super::{read_page, Inner, PartitionId};
use crate::btree::page::{self, Kind, PageId, ValueRef, PAGE_SIZE};
use crate::btree::FIRST_DATA_PAGE;
use crate::error::{Error, Result};
use crate::partition::keyspace;

/// Pages the scrub reads per tick, and the tick: about 6 MB/s of reads, small beside a
/// device's bandwidth, so foreground reads and the WAL's writes barely notice it.
const SCRUB_PAGES_PER_TICK: u64 = 16;
const SCRUB_TICK: Duration = Duration::from_millis(10);
/// A pass that found nothing, after one that found nothing, is reported at most this often.
const CLEAN_PASS_REPORT_EVERY: Duration = Duration::from_secs(3600);

/// What the scrub found since the store opened (for a metric).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScrubStats {
    /// Passes completed.
    pub passes: u64,
    /// Pages read and checked, over every pass.
    pub pages_checked: u64,
    /// Damaged pages found (each counted once, however often it is found), by the scrub or
    /// by any other read.
    pub damaged_pages: u64,
    /// Damaged pages the last completed pass found.
    pub damaged_last_pass: u64,
}

/// A damaged page the scrub found: the tree page to cut out to be rid of it (the page itself,
/// or for an overflow page the leaf whose cell refers to its chain), that page's key range in
/// the checkpoint walked, and its depth there (shallower pages are cut out first).
#[derive(Clone, Debug)]
struct Found {
    tree_page: PageId,
    lower: Vec<u8>,
    upper: Option<Vec<u8>>,
    depth: usize,
}

/// The store's record of damage.
#[derive(Default)]
pub(super) struct Damage {
    /// Pages already reported.
    reported: RefCell<BTreeSet<PageId>>,
    /// What the scrub found and no install has cut out yet.
    found: RefCell<BTreeMap<PageId, Found>>,
    /// Partitions holding keys of a damaged page, not yet taken by the host.
    partitions: RefCell<BTreeSet<PartitionId>>,
    stats: Cell<ScrubStats>,
}

impl Damage {
    pub(super) fn stats(&self) -> ScrubStats {
        self.stats.get()
    }

    pub(super) fn take_partitions(&self) -> Vec<PartitionId> {
        std::mem::take(&mut *self.partitions.borrow_mut()).into_iter().collect()
    }

    fn count(&self, change: impl FnOnce(&mut ScrubStats)) {
        let mut stats = self.stats.get();
        change(&mut stats);
        self.stats.set(stats);
    }
}

/// The partitions whose tree keys may lie in `[lower, upper)` (the partition id is a key's
/// first 8 bytes, big-endian); `u64::MAX` stands for the partitions' metadata.
fn partition_span(lower: &[u8], upper: Option<&[u8]>) -> (PartitionId, PartitionId) {
    let prefix = |key: &[u8]| {
        let mut bytes = [0u8; 8];
        let take = key.len().min(8);
        bytes[..take].copy_from_slice(&key[..take]);
        u64::from_be_bytes(bytes)
    };
    // Keys below an upper bound of at most 8 bytes all lie in partitions before its prefix.
    let last =
        upper.map_or(u64::MAX, |upper| if upper.len() > 8 { prefix(upper) } else { prefix(upper).saturating_sub(1) });
    (prefix(lower), last)
}

impl Inner {
    /// The partitions this store holds whose keys may lie in `[lower, upper)`, and whether the
    /// partitions' metadata may.
    fn partitions_in(&self, lower: &[u8], upper: Option<&[u8]>) -> (Vec<PartitionId>, bool) {
        let (first, last) = partition_span(lower, upper);
        let mut held: Vec<PartitionId> = self
            .partitions
            .borrow()
            .iter()
            .filter(|(partition, state)| state.known && (first..=last).contains(*partition))
            .map(|(&partition, _)| partition)
            .collect();
        held.sort_unstable();
        (held, last == u64::MAX)
    }

    /// Words for the partitions whose keys `[lower, upper)` may hold.
    fn describe_range(&self, range: Option<(&[u8], Option<&[u8]>)>) -> String {
        let Some((lower, upper)) = range else {
            return "whose partitions are unknown (no cached branch points at it)".into();
        };
        let (partitions, metadata) = self.partitions_in(lower, upper);
        let mut parts = Vec::new();
        if !partitions.is_empty() {
            let list: Vec<String> = partitions.iter().map(u64::to_string).collect();
            parts.push(format!("keys of partition(s) {}", list.join(", ")));
        }
        if metadata {
            parts.push("partition metadata".into());
        }
        if parts.is_empty() {
            return "holding keys of no partition of this store".into();
        }
        format!("holding {}", parts.join(" and "))
    }

    /// Reports damage to page `id` once; `range` is its key range if known.
    fn report_damage(&self, id: PageId, error: &Error, range: Option<(&[u8], Option<&[u8]>)>, found_by: &str) {
        if !self.damage.reported.borrow_mut().insert(id) {
            return;
        }
        self.damage.count(|stats| stats.damaged_pages += 1);
        let why = match error {
            Error::Corrupt { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        crate::report!(
            "tessera: damaged page {id} at offset {} of {} ({}), found by {found_by}, {}: {why}",
            id * PAGE_SIZE as u64,
            self.file.path().display(),
            self.dir.display(),
            self.describe_range(range),
        );
    }

    /// A read of page `id` for the tree failed its checks (`Inner::with_tree`).
    pub(super) fn damaged_read(&self, id: PageId, error: &Error) {
        if self.damage.reported.borrow().contains(&id) {
            return;
        }
        let range = self.tree.borrow().cached_range(id);
        self.report_damage(
            id,
            error,
            range.as_ref().map(|(lower, upper)| (lower.as_slice(), upper.as_deref())),
            "a read",
        );
    }

    /// Installing `partition` (replicated mode) begins here: every damaged page the scrub found
    /// in its key range, still damaged on disk, is cut out of the tree (`Tree::excise`), so
    /// that emptying the partition reads none of it. Every partition whose keys such a page
    /// held is then incomplete and marked installing (its host reinstalls it too: the scrub
    /// named it); metadata it held is written again with the next checkpoint.
    pub(super) async fn excise_damaged(&self, partition: PartitionId) -> Result<()> {
        let (lower, upper) = match keyspace::data_range(partition) {
            (std::ops::Bound::Included(lower), std::ops::Bound::Excluded(upper)) => (lower, Some(upper)),
            _ => unreachable!("a data keyspace is a half-open range"),
        };
        let mut found: Vec<(PageId, Found)> = self
            .damage
            .found
            .borrow()
            .iter()
            .filter(|(_, found)| {
                upper.as_ref().is_none_or(|upper| found.lower < *upper)
                    && found.upper.as_ref().is_none_or(|found_upper| lower < *found_upper)
            })
            .map(|(&id, found)| (id, found.clone()))
            .collect();
        // A damaged branch goes before the damaged pages under it (which it takes along).
        found.sort_by_key(|(_, found)| found.depth);
        for (damaged, found) in found {
            self.damage.found.borrow_mut().remove(&damaged);
            // Not damaged any more: its id was freed and written again since the scrub saw it.
            if !matches!(read_page(&self.file, damaged).await, Err(Error::Corrupt { .. })) {
                self.damage.reported.borrow_mut().remove(&damaged);
                continue;
            }
            let excised =
                self.with_tree(|tree| tree.excise(found.tree_page, &found.lower, found.upper.as_deref())).await?;
            if !excised {
                continue;
            }
            self.damage.reported.borrow_mut().remove(&damaged);
            self.damage.reported.borrow_mut().remove(&found.tree_page);
            let (partitions, metadata) = self.partitions_in(&found.lower, found.upper.as_deref());
            for (partition, state) in self.partitions.borrow_mut().iter_mut() {
                if partitions.contains(partition) {
                    state.installing = true;
                    state.unsaved.meta = true;
                }
                if metadata {
                    state.unsaved.meta = true;
                    state.unsaved.config = true;
                    state.unsaved.schema = true;
                }
            }
            crate::report!(
                "tessera: {}: page {} (damaged page {damaged} {}) is cut out of the tree; {}",
                self.dir.display(),
                found.tree_page,
                if found.tree_page == damaged { "itself" } else { "holds a chain through" },
                self.describe_range(Some((&found.lower, found.upper.as_deref()))),
            );
        }
        Ok(())
    }
}

/// A page the walk is to check.
struct Visit {
    id: PageId,
    /// The tree page it belongs to (itself, or the leaf of an overflow chain) and its range.
    tree_page: PageId,
    lower: Rc<Vec<u8>>,
    upper: Option<Rc<Vec<u8>>>,
    depth: usize,
}

/// Ends a pin of the durable checkpoint when dropped.
struct Pinned(Rc<Inner>);

impl Drop for Pinned {
    fn drop(&mut self) {
        self.0.tree.borrow_mut().unpin();
    }
}

/// The scrub of one store: a pass every `interval` (from one start to the next) until the
/// store closes or is dropped.
pub(super) async fn run(inner: Weak<Inner>, interval: Duration) {
    let mut last_report: Option<Instant> = None;
    let mut damaged_before = false;
    // The first pass one interval after the start: a store is not read through as it opens.
    let mut wait = interval;
    loop {
        glommio::timer::sleep(wait).await;
        let started = Instant::now();
        let Some(strong) = inner.upgrade() else { return };
        if strong.closed.get() {
            return;
        }
        match pass(&strong).await {
            Ok(None) => return,
            Ok(Some((checked, damaged))) => {
                strong.damage.count(|stats| {
                    stats.passes += 1;
                    stats.damaged_last_pass = damaged;
                });
                let due = last_report.is_none_or(|at| at.elapsed() >= CLEAN_PASS_REPORT_EVERY);
                if damaged > 0 || damaged_before || due {
                    crate::report!(
                        "tessera: {}: scrub pass {} checked {checked} pages in {:?}: {damaged} damaged",
                        strong.dir.display(),
                        strong.damage.stats().passes,
                        started.elapsed()
                    );
                    last_report = Some(Instant::now());
                }
                damaged_before = damaged > 0;
            }
            Err(error) => {
                if strong.closed.get() {
                    return;
                }
                crate::report!("tessera: {}: a scrub pass stopped: {error}", strong.dir.display());
            }
        }
        wait = interval.saturating_sub(started.elapsed());
    }
}

/// One pass over the durable checkpoint: pages checked and damaged pages found (`None`: the
/// store closed meanwhile).
async fn pass(inner: &Rc<Inner>) -> Result<Option<(u64, u64)>> {
    let root = inner.tree.borrow_mut().pin();
    let _pinned = Pinned(inner.clone());
    let page_count = inner.tree.borrow().page_count();
    let mut found = BTreeMap::new();
    let mut stack = Vec::new();
    if root != 0 {
        stack.push(Visit { id: root, tree_page: root, lower: Rc::new(Vec::new()), upper: None, depth: 0 });
    }
    let mut checked = 0u64;
    while let Some(visit) = stack.pop() {
        if inner.closed.get() {
            return Ok(None);
        }
        if checked > page_count {
            return Err(Error::corrupt(
                inner.file.path(),
                0,
                "the tree reaches more pages than the file holds (a cycle?)",
            ));
        }
        if checked > 0 && checked.is_multiple_of(SCRUB_PAGES_PER_TICK) {
            glommio::timer::sleep(SCRUB_TICK).await;
        }
        checked += 1;
        let bytes = match check(inner, &visit, page_count).await {
            Ok(bytes) => bytes,
            Err(error @ Error::Corrupt { .. }) => {
                let range = (visit.lower.as_slice(), visit.upper.as_deref().map(Vec::as_slice));
                inner.report_damage(visit.id, &error, Some(range), "the scrub");
                let record = Found {
                    tree_page: visit.tree_page,
                    lower: visit.lower.to_vec(),
                    upper: visit.upper.as_deref().cloned(),
                    depth: visit.depth,
                };
                found.insert(visit.id, record);
                continue;
            }
            Err(error) => return Err(error),
        };
        let child = |id: PageId, tree_page: Option<PageId>, lower: &Rc<Vec<u8>>, upper: &Option<Rc<Vec<u8>>>| Visit {
            id,
            tree_page: tree_page.unwrap_or(id),
            lower: lower.clone(),
            upper: upper.clone(),
            depth: visit.depth + 1,
        };
        match page::kind(&bytes) {
            Some(Kind::Overflow) => {
                if page::link(&bytes) != 0 {
                    stack.push(child(page::link(&bytes), Some(visit.tree_page), &visit.lower, &visit.upper));
                }
            }
            Some(Kind::Leaf) => {
                for index in 0..page::count(&bytes) {
                    if let ValueRef::Overflow { first, .. } = page::value_ref(&bytes, index) {
                        stack.push(child(first, Some(visit.id), &visit.lower, &visit.upper));
                    }
                    if let Some(long) = page::long_key(&bytes, index) {
                        stack.push(child(long.first, Some(visit.id), &visit.lower, &visit.upper));
                    }
                }
            }
            _ => {
                let mut bytes = bytes;
                page::upgrade(&mut bytes);
                let keys: Vec<Rc<Vec<u8>>> = page::cells(&bytes).into_iter().map(|cell| Rc::new(cell.key)).collect();
                for index in 0..=keys.len() {
                    let lower = if index == 0 { visit.lower.clone() } else { keys[index - 1].clone() };
                    let upper = if index == keys.len() { visit.upper.clone() } else { Some(keys[index].clone()) };
                    stack.push(child(page::child(&bytes, index), None, &lower, &upper));
                }
            }
        }
    }
    let damaged = found.len() as u64;
    for found in found.values() {
        let (partitions, _) = inner.partitions_in(&found.lower, found.upper.as_deref());
        inner.damage.partitions.borrow_mut().extend(partitions);
    }
    *inner.damage.found.borrow_mut() = found;
    inner.damage.count(|stats| stats.pages_checked += checked);
    Ok(Some((checked, damaged)))
}

/// Reads page `visit.id` from the disk and checks it: its CRC, and that it is a page of the
/// kind its parent expects.
async fn check(inner: &Inner, visit: &Visit, page_count: u64) -> Result<Vec<u8>> {
    let offset = visit.id * PAGE_SIZE as u64;
    if visit.id < FIRST_DATA_PAGE || visit.id >= page_count {
        return Err(Error::corrupt(
            inner.file.path(),
            offset,
            format!("a tree pointer names page {}, outside the file", visit.id),
        ));
    }
    let bytes = read_page(&inner.file, visit.id).await?;
    let expected = if visit.tree_page == visit.id { "a leaf or a branch" } else { "an overflow page" };
    let fits = match page::kind(&bytes) {
        Some(Kind::Leaf | Kind::Branch) => visit.tree_page == visit.id,
        Some(Kind::Overflow) => visit.tree_page != visit.id,
        _ => false,
    };
    if !fits {
        return Err(Error::corrupt(inner.file.path(), offset, format!("page {} is not {expected}", visit.id)));
    }
    Ok(bytes)
}
