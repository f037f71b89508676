//! A copy-on-write B+tree over fixed-size pages, with a bounded page cache. Sans-IO: every
//! operation runs synchronously against the cache and, when it needs a page that is not
//! there, returns `TreeError::Need(id)` before changing anything; the caller (the store) reads
//! the page with a DMA read, hands it over with `insert_loaded`, and runs the operation again.
//!
//! Copy-on-write. A page written by a durable checkpoint is never modified: the first change
//! to it in an epoch copies it to a newly allocated page (and so up to the root), and the old
//! page is freed only once the next checkpoint is durable. `seal` ends an epoch: the dirty pages
//! become read-only and are handed to the checkpoint writer while writes go on in the next
//! epoch. A frame records the epoch that allocated it, and its state follows from that number
//! (`Tree::state`), so sealing and committing change no frame: each is O(1) in the dirty pages,
//! and the writer collects the sealed pages itself (`sealed_pages`), a chunk at a time.
//! Freed pages move through three lists:
//! `pending_free` (referenced by the durable checkpoint) -> the sealed plan -> `free` once the
//! checkpoint that stops referencing them is durable.
//!
//! A page changed after a checkpoint takes a new id (`writable`): a clean page's buffer moves to
//! it (its contents are on disk under the old id), a page of a checkpoint being written is
//! copied, and a value overwritten by one of the same size is rewritten in its cell.
//!
//! Invariants: dirty and sealed frames are never evicted (their only copy is in memory);
//! a dirty frame is never shared with a checkpoint writer, so it is mutated in place; the
//! root is always a leaf or a branch page; page ids 0 and 1 are the meta slots, never tree
//! pages, so 0 doubles as "no page" in links.

pub(crate) mod page;

use std::borrow::Cow;
use std::cell::Cell;
use std::cmp::Ordering;
use std::ops::Bound;
use std::rc::Rc;

use page::{Kind, LongKey, PageId, ValueRef, PAGE_SIZE};

/// First page id available to the tree (0 and 1 hold the meta slots).
pub(crate) const FIRST_DATA_PAGE: PageId = 2;
/// Clean pages the cache always keeps room for beside the pinned ones: an operation needs a
/// root-to-leaf path, a whole overflow chain (a 400 KB value spans 101 pages) and the rests of
/// its leaf's long keys (one page each) cached at once.
const CLEAN_PAGES_MIN: usize = 128;
/// Most frames one eviction call drops.
const EVICTIONS_PER_CALL: usize = 4;
/// Smallest page cache setting.
pub const CACHE_PAGES_MIN: usize = 2 * CLEAN_PAGES_MIN;
const _: () = assert!(400 * 1024 / page::OVERFLOW_DATA_MAX + 1 + page::LONG_KEYS_PER_LEAF_MAX + 16 <= CLEAN_PAGES_MIN);
const _: () = assert!(page::TREE_KEY_LEN_MAX - page::LONG_KEY_HEAD <= page::OVERFLOW_DATA_MAX);

/// Why a tree operation stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TreeError {
    /// Page `id` must be loaded; nothing was changed.
    Need(PageId),
    /// The tree's structure is inconsistent.
    Corrupt(String),
}

pub(crate) type TreeResult<T> = Result<T, TreeError>;

struct Frame {
    page: Rc<[u8]>,
    /// The epoch that allocated the page; 0 for a page read from disk.
    epoch: u64,
    referenced: Cell<bool>,
}

/// Cached frames indexed by page id: page ids are dense (bounded by the file's page count), so
/// a lookup is one indexed load rather than a hash probe.
#[derive(Default)]
struct FrameTable {
    slots: Vec<Option<Frame>>,
    len: usize,
}

impl FrameTable {
    fn get(&self, id: &PageId) -> Option<&Frame> {
        self.slots.get(*id as usize).and_then(Option::as_ref)
    }

    fn get_mut(&mut self, id: &PageId) -> Option<&mut Frame> {
        self.slots.get_mut(*id as usize).and_then(Option::as_mut)
    }

    fn contains_key(&self, id: &PageId) -> bool {
        self.get(id).is_some()
    }

    fn insert(&mut self, id: PageId, frame: Frame) {
        let index = id as usize;
        if index >= self.slots.len() {
            self.slots.resize_with(index + 1, || None);
        }
        if self.slots[index].replace(frame).is_none() {
            self.len += 1;
        }
    }

    fn remove(&mut self, id: &PageId) -> Option<Frame> {
        let frame = self.slots.get_mut(*id as usize).and_then(Option::take);
        if frame.is_some() {
            self.len -= 1;
        }
        frame
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// The state a checkpoint needs, taken at `seal`.
pub(crate) struct Sealed {
    /// Ids of the tree pages to write, sorted and unique; `Tree::sealed_pages` hands over
    /// their contents. Checksums are not filled in: the writer seals each page's copy as it
    /// goes (`page::seal`), so sealing costs no pause here.
    pub(crate) ids: Vec<PageId>,
    /// The freelist pages to write, built at `seal`.
    pub(crate) freelist: Vec<(PageId, Rc<[u8]>)>,
    pub(crate) root: PageId,
    pub(crate) page_count: u64,
    pub(crate) freelist_head: PageId,
    /// Pages that become reusable once this checkpoint is durable.
    released: Vec<PageId>,
    /// Pages holding this checkpoint's freelist.
    freelist_pages: Vec<PageId>,
}

/// Where `Tree::path_to` found a page.
struct PathTo {
    path: Vec<(PageId, usize)>,
    lower: Vec<u8>,
    upper: Option<Vec<u8>>,
}

/// Where a tree was left by its last checkpoint.
pub(crate) struct Durable {
    pub(crate) root: PageId,
    pub(crate) page_count: u64,
    pub(crate) free: Vec<PageId>,
    pub(crate) freelist_pages: Vec<PageId>,
}

pub(crate) struct Tree {
    frames: FrameTable,
    /// Ids in the cache, swept by the CLOCK hand for eviction.
    ring: Vec<PageId>,
    hand: usize,
    capacity: usize,
    root: PageId,
    page_count: u64,
    free: Vec<PageId>,
    pending_free: Vec<PageId>,
    /// Pages holding the durable checkpoint's freelist.
    freelist_pages: Vec<PageId>,
    dirty_count: usize,
    /// Ids of pages allocated in this epoch (a superset: some may have been freed since), so
    /// the checkpoint writer visits the dirty pages only, not every cached frame.
    dirty_ids: Vec<PageId>,
    sealed_count: usize,
    /// The current epoch: frames allocated in it are dirty; while a checkpoint is being
    /// written, frames of the epoch before are sealed.
    epoch: u64,
    /// Sealed frames freed by the current epoch while their checkpoint is being written: the
    /// checkpoint still needs their contents (their ids stay unused until it commits).
    orphans: ahash::HashMap<PageId, Rc<[u8]>>,
    /// Count of committed checkpoints; a page read started before a commit is discarded.
    generation: u64,
    sealed: bool,
    /// The root of the newest durable checkpoint (0: none yet).
    durable_root: PageId,
    /// Readers of a durable checkpoint's pages (`pin`): while any is, the pages later
    /// checkpoints release are held rather than reused, so every page the pinned roots reach
    /// keeps its contents.
    pins: usize,
    held: Vec<PageId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Identical to the page on disk; may be evicted.
    Clean,
    /// Allocated in the current epoch; mutated in place.
    Dirty,
    /// Part of the checkpoint being written; read-only and pinned.
    Sealed,
}

/// What a write found in its leaf for its key.
struct InLeaf<T> {
    /// Where the key is (`Ok`), or where it would go (`Err`).
    at: Result<usize, usize>,
    /// The overflow chain of its value, if it has one.
    chain: Vec<PageId>,
    /// What the caller made of its value, if it has one.
    value: Option<T>,
    /// Where the rest of the key is, if it is there and long, and the pages holding it.
    long: Option<(LongKey, Vec<PageId>)>,
}

impl Tree {
    /// A tree as the last checkpoint left it (or an empty one: `durable.root == 0`).
    pub(crate) fn open(durable: Durable, capacity: usize) -> Tree {
        let mut tree = Tree {
            frames: FrameTable::default(),
            ring: Vec::new(),
            hand: 0,
            capacity: capacity.max(CACHE_PAGES_MIN),
            root: durable.root,
            page_count: durable.page_count.max(FIRST_DATA_PAGE),
            free: durable.free,
            pending_free: Vec::new(),
            freelist_pages: durable.freelist_pages,
            dirty_count: 0,
            dirty_ids: Vec::new(),
            sealed_count: 0,
            epoch: 1,
            orphans: ahash::HashMap::default(),
            generation: 0,
            sealed: false,
            durable_root: durable.root,
            pins: 0,
            held: Vec::new(),
        };
        tree.order_free();
        if tree.root == 0 {
            tree.root = tree.alloc(Kind::Leaf);
        }
        tree
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    fn state(&self, frame: &Frame) -> State {
        if frame.epoch == self.epoch {
            State::Dirty
        } else if self.sealed && frame.epoch + 1 == self.epoch {
            State::Sealed
        } else {
            State::Clean
        }
    }

    /// Pages changed since the last seal; the store checkpoints when this grows large.
    pub(crate) fn dirty_pages(&self) -> usize {
        self.dirty_count
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Pages the tree file spans.
    pub(crate) fn page_count(&self) -> u64 {
        self.page_count
    }

    /// Adds a page read from disk (already verified). Ignored if the page is cached or if a
    /// checkpoint committed since the read began (the page id may have been reused).
    pub(crate) fn insert_loaded(&mut self, id: PageId, page: Vec<u8>, generation: u64) {
        if generation != self.generation || self.frames.contains_key(&id) {
            return;
        }
        self.evict_to(self.eviction_target() - 1);
        let mut page = page;
        page::upgrade(&mut page);
        self.frames.insert(id, Frame { page: Rc::from(page), epoch: 0, referenced: Cell::new(true) });
        self.ring.push(id);
    }

    /// Frames to keep: the capacity, but never so few that clean pages drop under the floor
    /// (dirty and sealed pages are pinned until a checkpoint).
    fn eviction_target(&self) -> usize {
        self.capacity.max(self.dirty_count + self.sealed_count + CLEAN_PAGES_MIN)
    }

    /// CLOCK sweep: drops unreferenced clean frames until at most `target` remain, but at most
    /// `EVICTIONS_PER_CALL` of them, so that no call stalls (a commit may leave many more frames
    /// than the target; loads and writes bring them down a few at a time).
    fn evict_to(&mut self, target: usize) {
        let mut budget = 2 * self.ring.len();
        let mut evicted = 0;
        while self.frames.len() > target && budget > 0 && evicted < EVICTIONS_PER_CALL && !self.ring.is_empty() {
            budget -= 1;
            self.hand %= self.ring.len();
            let id = self.ring[self.hand];
            match self.frames.get(&id) {
                None => {
                    self.ring.swap_remove(self.hand);
                }
                Some(frame) if self.state(frame) != State::Clean => self.hand += 1,
                Some(frame) if frame.referenced.replace(false) => self.hand += 1,
                Some(_) => {
                    self.frames.remove(&id);
                    self.ring.swap_remove(self.hand);
                    evicted += 1;
                }
            }
        }
    }

    fn page(&self, id: PageId) -> TreeResult<&[u8]> {
        if id >= self.page_count || id < FIRST_DATA_PAGE {
            return Err(TreeError::Corrupt(format!("a tree pointer names page {id}, outside the file")));
        }
        let frame = self.frames.get(&id).ok_or(TreeError::Need(id))?;
        frame.referenced.set(true);
        Ok(&frame.page)
    }

    fn page_mut(&mut self, id: PageId) -> &mut [u8] {
        let epoch = self.epoch;
        let frame = self.frames.get_mut(&id).expect("page_mut of a cached page");
        assert_eq!(frame.epoch, epoch, "page_mut of a page that is not dirty");
        Rc::get_mut(&mut frame.page).expect("dirty pages are never shared")
    }

    /// Orders the free ids so that allocation takes the lowest first: the pages an epoch
    /// allocates then tend to sit next to each other, and the checkpoint writes runs of them
    /// as one write each rather than one write per page.
    fn order_free(&mut self) {
        self.free.sort_unstable_by(|a, b| b.cmp(a));
    }

    fn alloc(&mut self, kind: Kind) -> PageId {
        static ZEROS: [u8; PAGE_SIZE] = [0; PAGE_SIZE];
        self.alloc_from(&ZEROS, |page, id| page::init(page, kind, id))
    }

    /// Allocates a dirty page holding a copy of `contents` (one copy, straight into the frame),
    /// then `prepare`d with its id.
    fn alloc_from(&mut self, contents: &[u8], prepare: impl FnOnce(&mut [u8], PageId)) -> PageId {
        let id = self.next_id();
        let mut buffer: Rc<[u8]> = Rc::from(contents);
        prepare(Rc::get_mut(&mut buffer).expect("a new page is not shared"), id);
        self.insert_dirty(id, buffer);
        id
    }

    /// The id a new page takes: the lowest free one, or one past the end of the file.
    fn next_id(&mut self) -> PageId {
        self.free.pop().unwrap_or_else(|| {
            self.page_count += 1;
            self.page_count - 1
        })
    }

    /// Caches `page`, unshared, as the dirty page `id`.
    fn insert_dirty(&mut self, id: PageId, page: Rc<[u8]>) {
        self.frames.insert(id, Frame { page, epoch: self.epoch, referenced: Cell::new(true) });
        self.ring.push(id);
        self.dirty_count += 1;
        self.dirty_ids.push(id);
    }

    fn free_page(&mut self, id: PageId) {
        let Some(frame) = self.frames.remove(&id) else {
            self.pending_free.push(id);
            return;
        };
        match self.state(&frame) {
            State::Dirty => {
                self.dirty_count -= 1;
                self.free.push(id);
            }
            State::Sealed => {
                self.sealed_count -= 1;
                self.orphans.insert(id, frame.page);
                self.pending_free.push(id);
            }
            State::Clean => self.pending_free.push(id),
        }
    }

    /// Makes page `id` writable in this epoch, copying it if it belongs to a checkpoint.
    /// Returns the id to use from now on.
    fn writable(&mut self, id: PageId) -> PageId {
        let frame = self.frames.get(&id).expect("writable of a cached page");
        let state = self.state(frame);
        if state == State::Dirty {
            return id;
        }
        // Unshared: what `Rc::get_mut` requires.
        if state == State::Clean && Rc::strong_count(&frame.page) == 1 && Rc::weak_count(&frame.page) == 0 {
            // A clean page's contents are on disk under its old id, which is freed here as
            // `free_page` frees it: nothing needs them in memory any more, so the new page
            // takes the buffer over rather than a copy of it (a copy was most of the first
            // write to each page after a checkpoint).
            let mut page = self.frames.remove(&id).expect("writable of a cached page").page;
            self.pending_free.push(id);
            let new_id = self.next_id();
            page::set_u64(Rc::get_mut(&mut page).expect("checked unshared"), 16, new_id);
            self.insert_dirty(new_id, page);
            return new_id;
        }
        let page = frame.page.clone();
        let new_id = self.alloc_from(&page, |copy, new_id| page::set_u64(copy, 16, new_id));
        self.free_page(id);
        new_id
    }

    fn kind_of(&self, id: PageId) -> TreeResult<Kind> {
        let page = self.page(id)?;
        match page::kind(page) {
            Some(kind @ (Kind::Leaf | Kind::Branch)) => Ok(kind),
            other => Err(TreeError::Corrupt(format!("page {id} is a {other:?} page inside the tree"))),
        }
    }

    /// The root-to-leaf path for `key`: (page id, index of the child taken) per branch, then
    /// the leaf with index 0.
    fn path(&self, key: &[u8]) -> TreeResult<Vec<(PageId, usize)>> {
        let mut path = Vec::with_capacity(8);
        let mut id = self.root;
        loop {
            if path.len() > 64 {
                return Err(TreeError::Corrupt("tree deeper than 64 levels (a cycle?)".into()));
            }
            match self.kind_of(id)? {
                Kind::Leaf => {
                    path.push((id, 0));
                    return Ok(path);
                }
                _ => {
                    let page = self.page(id)?;
                    let index = self.child_index(page, key)?;
                    path.push((id, index));
                    id = page::child(page, index);
                }
            }
        }
    }

    /// Copies the path to writable pages from the root down, fixing child pointers.
    fn make_writable(&mut self, path: &mut [(PageId, usize)]) {
        for level in 0..path.len() {
            let new_id = self.writable(path[level].0);
            if new_id != path[level].0 {
                path[level].0 = new_id;
                if level == 0 {
                    self.root = new_id;
                } else {
                    let (parent, index) = path[level - 1];
                    page::set_child(self.page_mut(parent), index, new_id);
                }
            }
        }
    }

    /// Ids of an overflow chain, checking that every page is cached.
    fn chain(&self, first: PageId, len: usize) -> TreeResult<Vec<PageId>> {
        let mut ids = Vec::with_capacity(len.div_ceil(page::OVERFLOW_DATA_MAX));
        let mut id = first;
        while id != 0 {
            if ids.len() * page::OVERFLOW_DATA_MAX > len {
                return Err(TreeError::Corrupt(format!("overflow chain from page {first} is longer than its value")));
            }
            let page = self.page(id)?;
            if page::kind(page) != Some(Kind::Overflow) {
                return Err(TreeError::Corrupt(format!("page {id} in an overflow chain is not an overflow page")));
            }
            ids.push(id);
            id = page::link(page);
        }
        Ok(ids)
    }

    fn read_value(&self, value: ValueRef<'_>) -> TreeResult<Vec<u8>> {
        match value {
            ValueRef::Inline(bytes) => Ok(bytes.to_vec()),
            ValueRef::Overflow { len, first } => {
                let mut bytes = Vec::with_capacity(len);
                self.read_chain(first, len, &mut bytes)?;
                Ok(bytes)
            }
        }
    }

    /// Appends the `len` bytes of the overflow chain from `first` to `bytes`.
    fn read_chain(&self, first: PageId, len: usize, bytes: &mut Vec<u8>) -> TreeResult<()> {
        let start = bytes.len();
        for id in self.chain(first, len)? {
            let page = self.page(id)?;
            let chunk = page::count(page).min(page::OVERFLOW_DATA_MAX);
            bytes.extend_from_slice(&page[page::HEADER_LEN..page::HEADER_LEN + chunk]);
        }
        if bytes.len() - start != len {
            return Err(TreeError::Corrupt(format!(
                "overflow chain from page {first} holds {} bytes, not {len}",
                bytes.len() - start
            )));
        }
        Ok(())
    }

    /// A long key whole, from its head and its overflow chain.
    fn whole_key(&self, head: &[u8], long: LongKey) -> TreeResult<Vec<u8>> {
        let mut key = Vec::with_capacity(long.len);
        key.extend_from_slice(head);
        self.read_chain(long.first, long.rest_len(), &mut key)?;
        Ok(key)
    }

    /// The key of slot `index` of a leaf, whole.
    fn key_at<'a>(&self, page: &'a [u8], index: usize) -> TreeResult<Cow<'a, [u8]>> {
        let key = page::key(page, index);
        match page::long_key(page, index) {
            None => Ok(Cow::Borrowed(key)),
            Some(long) => self.whole_key(key, long).map(Cow::Owned),
        }
    }

    /// `page::search`, long keys compared through their overflow chains.
    fn search(&self, page: &[u8], key: &[u8]) -> TreeResult<Result<usize, usize>> {
        page::search(page, key, |long, rest| self.compare_rest(long, rest))
    }

    /// `page::child_index`, long keys compared through their overflow chains.
    fn child_index(&self, page: &[u8], key: &[u8]) -> TreeResult<usize> {
        page::child_index(page, key, |long, rest| self.compare_rest(long, rest))
    }

    /// The order of a long key's rest against `target` (a key's bytes after the head).
    fn compare_rest(&self, long: LongKey, target: &[u8]) -> TreeResult<Ordering> {
        let mut rest = Vec::with_capacity(long.rest_len());
        self.read_chain(long.first, long.rest_len(), &mut rest)?;
        Ok(rest.as_slice().cmp(target))
    }

    /// Checks that the rests of every long key in a leaf are cached: a split reads the keys
    /// either side of its split point whole.
    fn cache_long_keys(&self, leaf: PageId) -> TreeResult<()> {
        let page = self.page(leaf)?;
        for index in 0..page::count(page) {
            if let Some(long) = page::long_key(page, index) {
                self.compare_rest(long, &[])?;
            }
        }
        Ok(())
    }

    fn write_overflow(&mut self, value: &[u8]) -> PageId {
        let mut next = 0;
        for chunk in value.chunks(page::OVERFLOW_DATA_MAX).rev() {
            let id = self.alloc(Kind::Overflow);
            let target = self.page_mut(id);
            page::set_count(target, chunk.len());
            page::set_link(target, next);
            target[page::HEADER_LEN..page::HEADER_LEN + chunk.len()].copy_from_slice(chunk);
            next = id;
        }
        next
    }

    /// The value stored under `key`.
    pub(crate) fn get(&self, key: &[u8]) -> TreeResult<Option<Vec<u8>>> {
        self.get_in(self.root, key)
    }

    /// The value stored under `key` in the tree under `root` (the current root, or a pinned
    /// one; 0 is an empty tree).
    pub(crate) fn get_in(&self, root: PageId, key: &[u8]) -> TreeResult<Option<Vec<u8>>> {
        if root == 0 {
            return Ok(None);
        }
        let mut id = root;
        for _ in 0..64 {
            let page = self.page(id)?;
            match page::kind(page) {
                Some(Kind::Leaf) => {
                    return match self.search(page, key)? {
                        Ok(index) => self.read_value(page::value_ref(page, index)).map(Some),
                        Err(_) => Ok(None),
                    };
                }
                Some(Kind::Branch) => id = page::child(page, self.child_index(page, key)?),
                other => return Err(TreeError::Corrupt(format!("page {id} is a {other:?} page inside the tree"))),
            }
        }
        Err(TreeError::Corrupt("tree deeper than 64 levels (a cycle?)".into()))
    }

    /// Stores `value` under `key`; returns the value it replaced.
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8]) -> TreeResult<Option<Vec<u8>>> {
        self.put_then(key, value, |tree, old| tree.read_value(old))
    }

    /// Stores `value` under `key`; returns the length of the value it replaced, which is all a
    /// partition's byte count needs: the value itself is not copied out.
    pub(crate) fn put_len(&mut self, key: &[u8], value: &[u8]) -> TreeResult<Option<usize>> {
        self.put_then(key, value, |_, old| Ok(old.len()))
    }

    /// Stores `value` under `key`; returns what `take` makes of the value it replaced.
    fn put_then<T>(
        &mut self,
        key: &[u8],
        value: &[u8],
        take: impl FnOnce(&Tree, ValueRef<'_>) -> TreeResult<T>,
    ) -> TreeResult<Option<T>> {
        assert!(key.len() <= page::TREE_KEY_LEN_MAX, "key longer than the tree allows");
        // Before anything is touched: frames beyond the target (a commit leaves its pages
        // clean all at once) are evicted a few per write.
        self.evict_to(self.eviction_target());
        let mut path = self.path(key)?;
        let InLeaf { at: found, chain: old_chain, value: previous, long: old_long } =
            self.find_in_leaf(&path, key, take)?;
        let key_part_len = page::key_part_len_of(key);
        let value_inline = page::value_inline(key_part_len, value.len());
        let leaf = path.last().expect("path ends at a leaf").0;
        let cell_len = key_part_len + ValueRef::cell_len(value_inline, value.len());
        if !page::fits(self.page(leaf)?, cell_len) {
            self.cache_long_keys(leaf)?;
        }
        // Nothing below can need a page: the path, the old chain and (if the leaf may split)
        // its long keys are cached. The leaf's copy (`make_writable`) holds the same cells, so
        // `found` still indexes it.
        self.make_writable(&mut path);
        old_chain.into_iter().for_each(|id| self.free_page(id));
        let value_ref = if value_inline {
            ValueRef::Inline(value)
        } else {
            ValueRef::Overflow { len: value.len(), first: self.write_overflow(value) }
        };
        let (header, header_len) = value_ref.header();
        let inline: &[u8] = if let ValueRef::Inline(bytes) = value_ref { bytes } else { &[] };
        let leaf = path.last().expect("path ends at a leaf").0;
        let index = match found {
            Ok(index) => {
                let page = self.page_mut(leaf);
                let len = page::cell_len_at(page, index);
                if len == cell_len {
                    page::overwrite_body(page, index, &[&header[..header_len], inline]);
                    return Ok(previous);
                }
                // The key stays, and a long one keeps its overflow chain.
                page::remove_cell(page, index, len);
                index
            }
            Err(index) => index,
        };
        let long = match old_long {
            Some((long, _)) => Some(long),
            None if page::is_long(key) => {
                Some(LongKey { len: key.len(), first: self.write_overflow(&key[page::LONG_KEY_HEAD..]) })
            }
            None => None,
        };
        let (key_head, long_ref) = page::key_part(key, long);
        let long_ref: &[u8] = long_ref.as_ref().map_or(&[], |bytes| bytes.as_slice());
        self.insert_at(
            &path,
            path.len() - 1,
            index,
            key_head,
            long.is_some(),
            &[long_ref, &header[..header_len], inline],
        );
        Ok(previous)
    }

    /// Searches the leaf `path` ends at for `key`.
    fn find_in_leaf<T>(
        &self,
        path: &[(PageId, usize)],
        key: &[u8],
        take: impl FnOnce(&Tree, ValueRef<'_>) -> TreeResult<T>,
    ) -> TreeResult<InLeaf<T>> {
        let page = self.page(path.last().expect("path ends at a leaf").0)?;
        let at = self.search(page, key)?;
        let Ok(index) = at else { return Ok(InLeaf { at, chain: Vec::new(), value: None, long: None }) };
        let value = page::value_ref(page, index);
        let chain = match value {
            ValueRef::Overflow { len, first } => self.chain(first, len)?,
            ValueRef::Inline(_) => Vec::new(),
        };
        let long = match page::long_key(page, index) {
            Some(long) => Some((long, self.chain(long.first, long.rest_len())?)),
            None => None,
        };
        Ok(InLeaf { at, chain, value: Some(take(self, value)?), long })
    }

    /// Inserts a cell into the writable page at `path[level]`, splitting upward as needed.
    /// A split leaf's long keys must be cached (`cache_long_keys`).
    fn insert_at(
        &mut self,
        path: &[(PageId, usize)],
        level: usize,
        index: usize,
        key: &[u8],
        long: bool,
        body: &[&[u8]],
    ) {
        let id = path[level].0;
        let target = self.page_mut(id);
        if page::fits_cell(target, key, body.iter().map(|part| part.len()).sum::<usize>()) {
            page::insert_cell(target, index, key, long, body);
            return;
        }
        let kind = page::kind(target).expect("tree page");
        let mut cells = page::cells(target);
        cells.insert(index, page::Cell { key: key.to_vec(), long, body: body.concat() });
        if kind == Kind::Branch && page::cells_fit(kind, &cells) {
            // The new separator shrank the stored prefix, or the prefix the page's separators
            // now share is longer than the one it stores.
            page::rebuild(target, &cells);
            return;
        }
        let split = choose_split(&cells, kind);
        let mut right_cells = cells.split_off(split);
        let (separator, right_link) = match kind {
            Kind::Branch => {
                let cell = right_cells.remove(0);
                (cell.key, page::get_u64(&cell.body, 0))
            }
            _ => {
                // The shortest separator above the left half's last key: whole keys, so a long
                // key's rest is read (cached before the write began).
                let left_last = self.cell_key(cells.last().expect("left half is not empty"));
                let right_first = self.cell_key(&right_cells[0]);
                let keep = page::common_prefix_len(&left_last, &right_first) + 1;
                (right_first[..keep.min(right_first.len())].to_vec(), 0)
            }
        };
        page::rebuild(self.page_mut(id), &cells);
        let right = self.alloc(kind);
        let right_page = self.page_mut(right);
        page::set_link(right_page, right_link);
        page::rebuild(right_page, &right_cells);
        if level == 0 {
            let root = self.alloc(Kind::Branch);
            let root_page = self.page_mut(root);
            page::set_link(root_page, id);
            page::insert_cell(root_page, 0, &separator, false, &[&right.to_le_bytes()]);
            self.root = root;
        } else {
            let child_index = path[level - 1].1;
            self.insert_at(path, level - 1, child_index, &separator, false, &[&right.to_le_bytes()]);
        }
    }

    /// The whole key of a leaf cell taken out of its page.
    fn cell_key<'a>(&self, cell: &'a page::Cell) -> Cow<'a, [u8]> {
        match cell.long_key() {
            None => Cow::Borrowed(&cell.key),
            Some(long) => Cow::Owned(self.whole_key(&cell.key, long).expect("a split leaf's long keys are cached")),
        }
    }

    /// Removes `key`; returns the value it held.
    pub(crate) fn delete(&mut self, key: &[u8]) -> TreeResult<Option<Vec<u8>>> {
        self.delete_then(key, |tree, old| tree.read_value(old))
    }

    /// Removes `key`; returns the length of the value it held (not copied out).
    pub(crate) fn delete_len(&mut self, key: &[u8]) -> TreeResult<Option<usize>> {
        self.delete_then(key, |_, old| Ok(old.len()))
    }

    /// Removes `key`; returns what `take` makes of the value it held.
    fn delete_then<T>(
        &mut self,
        key: &[u8],
        take: impl FnOnce(&Tree, ValueRef<'_>) -> TreeResult<T>,
    ) -> TreeResult<Option<T>> {
        self.evict_to(self.eviction_target());
        let mut path = self.path(key)?;
        let InLeaf { at: found, chain: old_chain, value: previous, long } = self.find_in_leaf(&path, key, take)?;
        let Ok(index) = found else {
            return Ok(None);
        };
        self.make_writable(&mut path);
        let key_chain = long.map(|(_, chain)| chain).unwrap_or_default();
        old_chain.into_iter().chain(key_chain).for_each(|id| self.free_page(id));
        let leaf = path.last().expect("path ends at a leaf").0;
        let page = self.page_mut(leaf);
        let len = page::cell_len_at(page, index);
        page::remove_cell(page, index, len);
        let mut level = path.len() - 1;
        // An empty page leaves its parent; a parent left without children follows it.
        while level > 0 && self.is_empty(path[level].0) {
            self.free_page(path[level].0);
            level -= 1;
            let (parent, index) = path[level];
            remove_child(self.page_mut(parent), index);
        }
        self.collapse_root();
        Ok(previous)
    }

    fn is_empty(&self, id: PageId) -> bool {
        let page = self.page(id).expect("cached");
        match page::kind(page) {
            Some(Kind::Branch) => page::count(page) == 0 && page::link(page) == 0,
            _ => page::count(page) == 0,
        }
    }

    /// A root branch with a single child hands the root to that child.
    fn collapse_root(&mut self) {
        loop {
            let page = self.page(self.root).expect("root is cached after a write");
            if page::kind(page) != Some(Kind::Branch) || page::count(page) > 0 {
                return;
            }
            let child = page::link(page);
            let old = self.root;
            if child == 0 {
                self.free_page(old);
                self.root = self.alloc(Kind::Leaf);
                return;
            }
            if !self.frames.contains_key(&child) {
                return; // collapsed on a later write, once the child is cached
            }
            self.free_page(old);
            self.root = child;
        }
    }

    /// Visits entries in key order (or reverse order) within the bounds, until `visit`
    /// returns false. Resumable: after `Need`, the caller loads the page and calls again with
    /// the bound moved past the last key visited.
    fn scan(
        &self,
        root: PageId,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], Vec<u8>) -> bool,
    ) -> TreeResult<()> {
        if root == 0 {
            return Ok(());
        }
        let start = if reverse { upper } else { lower };
        // Descend to the leaf holding the start bound, remembering the branches.
        let mut stack: Vec<(PageId, usize)> = Vec::new();
        let mut id = root;
        loop {
            let page = self.page(id)?;
            match self.kind_of(id)? {
                Kind::Leaf => break,
                _ => {
                    let index = match start {
                        Bound::Unbounded if reverse => page::count(page),
                        Bound::Unbounded => 0,
                        Bound::Included(key) | Bound::Excluded(key) => self.child_index(page, key)?,
                    };
                    stack.push((id, index));
                    id = page::child(page, index);
                }
            }
            if stack.len() > 64 {
                return Err(TreeError::Corrupt("tree deeper than 64 levels (a cycle?)".into()));
            }
        }
        let page = self.page(id)?;
        let count = page::count(page) as isize;
        let mut index: isize = match (start, reverse) {
            (Bound::Unbounded, false) => 0,
            (Bound::Unbounded, true) => count - 1,
            (Bound::Included(key), false) => self.search(page, key)?.unwrap_or_else(|i| i) as isize,
            (Bound::Excluded(key), false) => self.search(page, key)?.map_or_else(|i| i, |i| i + 1) as isize,
            (Bound::Included(key), true) => self.search(page, key)?.map_or_else(|i| i as isize - 1, |i| i as isize),
            (Bound::Excluded(key), true) => self.search(page, key)?.unwrap_or_else(|i| i) as isize - 1,
        };
        loop {
            let page = self.page(id)?;
            while index >= 0 && index < page::count(page) as isize {
                let key = self.key_at(page, index as usize)?;
                let past_end = if reverse { !after_lower(&key, lower) } else { !before_upper(&key, upper) };
                if past_end {
                    return Ok(());
                }
                let value = self.read_value(page::value_ref(page, index as usize))?;
                if !visit(&key, value) {
                    return Ok(());
                }
                index += if reverse { -1 } else { 1 };
            }
            // Move to the neighbouring leaf through the stack.
            loop {
                let Some((branch, child)) = stack.pop() else {
                    return Ok(());
                };
                let branch_page = self.page(branch)?;
                let next = if reverse { child.checked_sub(1) } else { Some(child + 1) };
                if let Some(next) = next.filter(|&n| n <= page::count(branch_page)) {
                    stack.push((branch, next));
                    id = page::child(branch_page, next);
                    break;
                }
            }
            // Descend to the extreme leaf of that subtree.
            while self.kind_of(id)? == Kind::Branch {
                let page = self.page(id)?;
                let index = if reverse { page::count(page) } else { 0 };
                stack.push((id, index));
                id = page::child(page, index);
            }
            let page = self.page(id)?;
            index = if reverse { page::count(page) as isize - 1 } else { 0 };
        }
    }

    /// Collects up to `limit` entries of the tree under `root` (`Tree::root`, or a pinned
    /// root) into `entries`, resumably: after `Need`, the bounds have been moved past the
    /// entries already collected, so calling again (with the same arguments) continues where
    /// it stopped.
    pub(crate) fn scan_resumable(
        &self,
        root: PageId,
        lower: &mut Bound<Vec<u8>>,
        upper: &mut Bound<Vec<u8>>,
        reverse: bool,
        limit: usize,
        entries: &mut Vec<(Vec<u8>, Vec<u8>)>,
    ) -> TreeResult<()> {
        if entries.len() >= limit {
            return Ok(());
        }
        let result = self.scan(
            root,
            lower.as_ref().map(Vec::as_slice),
            upper.as_ref().map(Vec::as_slice),
            reverse,
            &mut |key, value| {
                entries.push((key.to_vec(), value));
                entries.len() < limit
            },
        );
        if let Some((last, _)) = entries.last() {
            let resume = Bound::Excluded(last.clone());
            if reverse {
                *upper = resume;
            } else {
                *lower = resume;
            }
        }
        if entries.len() >= limit {
            Ok(())
        } else {
            result
        }
    }

    /// The path from the root to the branch pointing at page `id` (that branch last, with the
    /// index of `id` in it), and `id`'s key range there (`[lower, upper)`, `None`: unbounded),
    /// searching only the branches whose ranges overlap `[lower, upper)`; `None` if no branch
    /// points at it (it is the root, or no longer in the tree). `cached_only` skips the
    /// branches not in the cache rather than asking for them: never a read, so it can name
    /// the key range of a page a read just found damaged.
    fn path_to(&self, id: PageId, lower: &[u8], upper: Option<&[u8]>, cached_only: bool) -> TreeResult<Option<PathTo>> {
        let mut stack = vec![(Vec::new(), self.root, Vec::new(), None::<Vec<u8>>)];
        while let Some((path, node, low, high)) = stack.pop() {
            if path.len() > 64 {
                return Err(TreeError::Corrupt("tree deeper than 64 levels (a cycle?)".into()));
            }
            let page = match self.page(node) {
                Err(TreeError::Need(_)) if cached_only => continue,
                other => other?,
            };
            if page::kind(page) != Some(Kind::Branch) {
                continue;
            }
            let keys: Vec<Vec<u8>> = page::cells(page).into_iter().map(|cell| cell.key).collect();
            for index in 0..=keys.len() {
                let child_lower = if index == 0 { low.clone() } else { keys[index - 1].clone() };
                let child_upper = if index == keys.len() { high.clone() } else { Some(keys[index].clone()) };
                let mut child_path = path.clone();
                child_path.push((node, index));
                if page::child(page, index) == id {
                    return Ok(Some(PathTo { path: child_path, lower: child_lower, upper: child_upper }));
                }
                let overlaps = upper.is_none_or(|upper| child_lower.as_slice() < upper)
                    && child_upper.as_deref().is_none_or(|child_upper| lower < child_upper);
                if overlaps {
                    stack.push((child_path, page::child(page, index), child_lower, child_upper));
                }
            }
        }
        Ok(None)
    }

    /// The key range of page `id` in the tree as far as the cache shows it (`path_to`).
    pub(crate) fn cached_range(&self, id: PageId) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
        match self.path_to(id, &[], None, true) {
            Ok(Some(found)) => Some((found.lower, found.upper)),
            _ => None,
        }
    }

    /// Replaces page `id`, a damaged page under a branch whose range overlaps `[lower, upper)`,
    /// with an empty leaf, without reading it: its keys leave the tree, and its id is freed
    /// like any page the durable checkpoint references. The pages it referenced (children, or
    /// a leaf's overflow chains) are not read either, so they are neither reachable nor free:
    /// lost to the file until it is rebuilt. False (and nothing changed) if no branch points
    /// at `id`, or `id` is a page allocated since the last checkpoint (a new page took a
    /// freed id): a page of the durable checkpoint is clean or not cached.
    pub(crate) fn excise(&mut self, id: PageId, lower: &[u8], upper: Option<&[u8]>) -> TreeResult<bool> {
        if self.frames.get(&id).is_some_and(|frame| self.state(frame) != State::Clean) {
            return Ok(false);
        }
        let Some(PathTo { mut path, .. }) = self.path_to(id, lower, upper, false)? else { return Ok(false) };
        self.make_writable(&mut path);
        let empty = self.alloc(Kind::Leaf);
        let (parent, index) = *path.last().expect("a branch points at the page");
        page::set_child(self.page_mut(parent), index, empty);
        self.free_page(id);
        Ok(true)
    }

    /// Ends the epoch: the dirty pages and a freelist become the checkpoint to write.
    /// Writes go on while it is written; `commit` is called once it is durable.
    pub(crate) fn seal(&mut self) -> Sealed {
        assert!(!self.sealed, "one checkpoint at a time");
        self.sealed = true;
        // Free after this checkpoint: what is free now, what this epoch stopped using, and the
        // pages of the previous freelist. The new freelist's own pages come out of `free`.
        let mut released = std::mem::take(&mut self.pending_free);
        released.append(&mut self.freelist_pages);
        // The freelist pages come out of `free` first (they are then not listed themselves),
        // the rest from the end of the file: the fewest pages that hold every listed id.
        let mut count = 0;
        while self.free.len() - count.min(self.free.len()) + self.held.len() + released.len()
            > count * page::FREELIST_IDS_MAX
        {
            count += 1;
        }
        let from_free = count.min(self.free.len());
        let mut freelist_pages: Vec<PageId> = self.free.split_off(self.free.len() - from_free);
        freelist_pages.reverse();
        for _ in from_free..count {
            freelist_pages.push(self.page_count);
            self.page_count += 1;
        }
        // Held pages are free once no reader pins a checkpoint, which a restart ends.
        let listed: Vec<PageId> = self.free.iter().chain(&self.held).chain(&released).copied().collect();
        let mut pages = Vec::new();
        let mut next = 0;
        for (position, &id) in freelist_pages.iter().enumerate().rev() {
            let mut buffer = vec![0u8; PAGE_SIZE];
            page::init(&mut buffer, Kind::Freelist, id);
            page::set_link(&mut buffer, next);
            let ids = listed.iter().skip(position * page::FREELIST_IDS_MAX).take(page::FREELIST_IDS_MAX);
            let mut entries = 0;
            for (slot, free_id) in ids.enumerate() {
                page::set_u64(&mut buffer, page::HEADER_LEN + slot * 8, *free_id);
                entries += 1;
            }
            page::set_count(&mut buffer, entries);
            page::seal(&mut buffer);
            pages.push((id, Rc::from(buffer)));
            next = id;
        }
        // Ids allocated, freed and allocated again in the epoch appear twice; the writer wants
        // them in order anyway, to coalesce neighbours into one write.
        let mut ids = std::mem::take(&mut self.dirty_ids);
        ids.sort_unstable();
        ids.dedup();
        self.epoch += 1;
        self.sealed_count = self.dirty_count;
        self.dirty_count = 0;
        Sealed {
            ids,
            freelist: pages,
            root: self.root,
            page_count: self.page_count,
            freelist_head: next,
            released,
            freelist_pages,
        }
    }

    /// The current root.
    pub(crate) fn root(&self) -> PageId {
        self.root
    }

    /// Pins the newest durable checkpoint: its root (0: none yet), whose pages keep their
    /// contents until `unpin`. Reads under it see the tree as that checkpoint holds it.
    pub(crate) fn pin(&mut self) -> PageId {
        self.pins += 1;
        self.durable_root
    }

    /// Ends one `pin`; once none is left, the held pages become free.
    pub(crate) fn unpin(&mut self) {
        self.pins -= 1;
        if self.pins == 0 {
            let held = std::mem::take(&mut self.held);
            self.free.extend(held);
            self.order_free();
        }
    }

    /// The contents of the sealed pages among `ids` (ids the epoch freed again are skipped).
    pub(crate) fn sealed_pages(&self, ids: &[PageId]) -> Vec<(PageId, Rc<[u8]>)> {
        assert!(self.sealed, "sealed_pages without seal");
        ids.iter()
            .filter_map(|&id| match self.frames.get(&id) {
                Some(frame) if self.state(frame) == State::Sealed => Some((id, frame.page.clone())),
                _ => self.orphans.get(&id).map(|page| (id, page.clone())),
            })
            .collect()
    }

    /// The sealed checkpoint is durable: its pages become clean, its released pages free.
    pub(crate) fn commit(&mut self, sealed: Sealed) {
        assert!(self.sealed, "commit without seal");
        self.sealed = false;
        self.orphans.clear();
        self.sealed_count = 0;
        if self.pins > 0 {
            self.held.extend(sealed.released);
        } else {
            self.free.extend(sealed.released);
            self.order_free();
        }
        self.durable_root = sealed.root;
        self.freelist_pages = sealed.freelist_pages;
        self.generation += 1;
        self.evict_to(self.eviction_target());
    }

    /// The checkpoint failed: the store is poisoned, but the tree stays readable.
    pub(crate) fn abandon(&mut self, sealed: Sealed) {
        self.sealed = false;
        let sealed_epoch = self.epoch - 1;
        for id in sealed.ids {
            if let Some(frame) = self.frames.get_mut(&id).filter(|frame| frame.epoch == sealed_epoch) {
                frame.epoch = self.epoch;
                self.dirty_ids.push(id);
            }
        }
        // Freed sealed pages were never durable; their ids stay out of use until a commit.
        self.orphans.clear();
        self.dirty_count += self.sealed_count;
        self.sealed_count = 0;
        // The durable checkpoint still references what this one would have released.
        self.pending_free.extend(sealed.released);
        self.free.extend(sealed.freelist_pages);
    }
}

/// The ids a freelist page lists and the next freelist page (0 at the end).
pub(crate) fn freelist_entries(freelist_page: &[u8]) -> (Vec<PageId>, PageId) {
    let entries = page::count(freelist_page).min(page::FREELIST_IDS_MAX);
    let ids = (0..entries).map(|slot| page::get_u64(freelist_page, page::HEADER_LEN + slot * 8)).collect();
    (ids, page::link(freelist_page))
}

fn after_lower(key: &[u8], lower: Bound<&[u8]>) -> bool {
    match lower {
        Bound::Unbounded => true,
        Bound::Included(bound) => key >= bound,
        Bound::Excluded(bound) => key > bound,
    }
}

fn before_upper(key: &[u8], upper: Bound<&[u8]>) -> bool {
    match upper {
        Bound::Unbounded => true,
        Bound::Included(bound) => key <= bound,
        Bound::Excluded(bound) => key < bound,
    }
}

/// Split point for an overfull page: both halves fit, sizes as even as possible. A branch's
/// first right cell moves up, so the right half must keep at least one cell. One always fits:
/// a leaf's cells are at most a third of a page; a branch's cells before and after the new one
/// were in the page, and each half stores at least the prefix the page stored, so each fits,
/// and so does a new first key alone (`TREE_KEY_LEN_MAX`).
fn choose_split(cells: &[page::Cell], kind: Kind) -> usize {
    let mut best = (usize::MAX, 1);
    for split in 1..cells.len() {
        let right_cells = if kind == Kind::Branch { &cells[split + 1..] } else { &cells[split..] };
        let (left, right) = (page::cells_size(kind, &cells[..split]), page::cells_size(kind, right_cells));
        if left <= page::USABLE && right <= page::USABLE {
            let imbalance = left.abs_diff(right);
            if imbalance < best.0 {
                best = (imbalance, split);
            }
        }
    }
    assert!(best.0 != usize::MAX, "no split point fits both halves");
    best.1
}

/// Removes child `index` from a branch (and the key that bounds it).
fn remove_child(branch: &mut [u8], index: usize) {
    let count = page::count(branch);
    if count == 0 {
        page::set_link(branch, 0);
        return;
    }
    if index == 0 {
        let first = page::child(branch, 1);
        page::set_link(branch, first);
    }
    let slot = index.saturating_sub(1);
    let len = page::cell_len_at(branch, slot);
    page::remove_cell(branch, slot, len);
}

#[cfg(test)]
mod tests;
