//! Checkpoints: when one starts, what it covers of the WAL, and the writer: sealed pages, flushes,
//! the meta page (the commit steps in the module documentation of `store.rs` and FORMAT.md); each
//! partition's metadata saved just before the seal.
//!
//! A checkpoint starts when the dirty pages pass a threshold drawn afresh each time between 3/4
//! and all of the configured one (replicas under the same load then do not checkpoint in
//! lockstep on a shared disk), when the WAL grows long and a checkpoint would recycle some of
//! it, or when asked (`checkpoint_wanted`). The writer collects the sealed pages a chunk
//! (`CHECKPOINT_CHUNK_PAGES`) at a time, keeps up to `CHECKPOINT_WRITES_IN_FLIGHT` writes on the
//! device, and flushes it every `disk::UNFLUSHED_BYTES_MAX` (512 KiB): unflushed data is a debt
//! the next WAL write's flush would pay. Free pages are allocated lowest first, so a
//! checkpoint's pages coalesce into longer writes.

use super::*;

/// Where a checkpoint left the tree, as stored in a meta page.
pub(super) struct Meta {
    pub(super) sequence: u64,
    pub(super) root: PageId,
    pub(super) page_count: u64,
    pub(super) freelist_head: PageId,
    pub(super) covered_lsn: u64,
}

impl Meta {
    pub(super) fn encode(&self, slot: PageId) -> Vec<u8> {
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

    pub(super) fn decode(bytes: &[u8], slot: PageId) -> Option<Meta> {
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

/// The freelist and the rest of a checkpoint's state.
pub(super) async fn read_durable(file: &File, meta: &Meta) -> Result<Durable> {
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

impl Inner {
    /// Writes the partition metadata changed since the last checkpoint into the tree. Called by
    /// the applier only, between records.
    pub(super) async fn save_partition_metas(&self) -> Result<()> {
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

    /// Seals a checkpoint if one is wanted and none is running. Called by the applier only,
    /// between records.
    pub(super) async fn maybe_checkpoint(self: &Rc<Inner>) -> Result<()> {
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
    pub(super) fn covered_lsn(&self) -> u64 {
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

    pub(super) async fn write_checkpoint(
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
    pub(super) async fn write_sealed(&self, sealed: &Sealed, covered_lsn: u64) -> Result<()> {
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
    pub(super) async fn drain(&self, writing: &mut VecDeque<glommio::task::JoinHandle<Result<()>>>) -> Result<()> {
        let mut outcome = Ok(());
        for write in writing.drain(..) {
            let result = self.written(write).await;
            outcome = outcome.and(result);
        }
        outcome
    }

    /// The outcome of a checkpoint write.
    pub(super) async fn written(&self, write: glommio::task::JoinHandle<Result<()>>) -> Result<()> {
        write.await.unwrap_or_else(|| {
            Err(Error::io("write", self.file.path(), std::io::Error::other("the write's task was cancelled")))
        })
    }

    /// Starts the writes of `pages`, runs of consecutive ids coalesced into one write, waiting
    /// for the oldest write whenever `writing` holds CHECKPOINT_WRITES_IN_FLIGHT.
    pub(super) async fn write_pages(
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

impl Store {
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
}
