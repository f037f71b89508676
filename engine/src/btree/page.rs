//! Byte layout of one B+tree page and the operations inside a page (FORMAT.md, "Pages").
//!
//! ```text
//! 0      4    5       6      8           10          12         14    16       24         32
//! | crc32c | kind | version | count | prefix_len | heap_start | dead | 0 | page_id | link  | slots... free ...cells |
//! ```
//!
//! Layout reasoning. A lookup touches one page per level and, inside it, does a binary search.
//! The slot array keeps, for each key, the 8 bytes that follow the prefix every key of the page
//! shares (`prefix_len`), as a big-endian `u64`, plus the cell offset and key length: 12 bytes,
//! so a 64-byte cache line holds five slots and the search compares integers in one contiguous
//! array. Only when two prefixes tie does it touch the full key in the cell heap. Keys of one
//! page usually share a long prefix (partition id, partition hash, partition key), which is why
//! the 8 bytes are taken after it rather than at the start of the key. Cells are packed at the
//! page's end and grow downward; the slot array grows upward; the gap between is free space.
//! Deleted cells leave dead bytes that a compaction reclaims before a page is split.
//!
//! A branch stores the shared prefix once, in the page's last `prefix_len` bytes, and its cells
//! hold only the bytes after it: separators of one long partition key's items share more than
//! two kilobytes, and stored whole a branch would hold one of them. A leaf stores its keys whole
//! (or a long key's head, `LongKey`); its shared prefix is the first key's first `prefix_len`
//! bytes.
//!
//! Invariants: slots are sorted by key; every key shares the page's first `prefix_len` bytes;
//! `HEADER_LEN + count * SLOT_LEN <= heap_start <= page size - stored prefix`.

use std::cmp::Ordering;

/// Size of every page: one DMA unit, a common filesystem block.
pub const PAGE_SIZE: usize = 4096;
pub(crate) const HEADER_LEN: usize = 32;
const SLOT_LEN: usize = 12;
pub(crate) const USABLE: usize = PAGE_SIZE - HEADER_LEN;
/// Page layout version written in every page header. Version 1 differs only in its branches,
/// which stored every key whole (`upgrade` rewrites them as they are read).
pub(crate) const PAGE_FORMAT_VERSION: u8 = 2;
const PAGE_FORMAT_V1: u8 = 1;

/// Largest leaf cell kept inline: three of them (with slots) always fit in one page, so a split
/// always has room. Larger values move to overflow pages.
pub(crate) const CELL_INLINE_MAX: usize = USABLE / 3 - SLOT_LEN;
/// Longest key a leaf cell holds whole: with an overflow reference it stays within the inline
/// limit. A longer key is *long*: its leaf cell holds its first `LONG_KEY_HEAD` bytes and a
/// reference (`LongKey`) to an overflow chain holding the rest.
pub(crate) const KEY_INLINE_MAX: usize = CELL_INLINE_MAX - VALUE_OVERFLOW_LEN;
/// Bytes of a long key kept in its leaf cell.
pub(crate) const LONG_KEY_HEAD: usize = 1024;
/// A long key's reference after its head: `len: u32` (the whole key), `first overflow page: u64`.
const LONG_KEY_REF_LEN: usize = 4 + 8;
/// Set in a leaf slot's key length when the key is long (the length is then the head's).
const LONG_KEY_FLAG: usize = 0x8000;
/// Most long keys one leaf holds: each cell is at least a head, its reference and a value.
pub(crate) const LONG_KEYS_PER_LEAF_MAX: usize = USABLE / (LONG_KEY_HEAD + LONG_KEY_REF_LEN + SLOT_LEN);
/// Longest key the tree stores: one such separator with its child id fits in a branch alone
/// (`rebuild` then stores all of it as the page's prefix), so a branch split always has room.
pub const TREE_KEY_LEN_MAX: usize = USABLE - SLOT_LEN - 8;
const VALUE_INLINE_HEADER: usize = 1 + 4;
const VALUE_OVERFLOW_LEN: usize = 1 + 4 + 8;
/// Payload bytes of one overflow page.
pub(crate) const OVERFLOW_DATA_MAX: usize = USABLE;
/// Page ids one freelist page holds.
pub(crate) const FREELIST_IDS_MAX: usize = USABLE / 8;
const _: () = assert!(3 * (CELL_INLINE_MAX + SLOT_LEN) <= USABLE);
const _: () = assert!(LONG_KEY_HEAD + LONG_KEY_REF_LEN + VALUE_OVERFLOW_LEN <= CELL_INLINE_MAX);
const _: () = assert!(LONG_KEY_HEAD < KEY_INLINE_MAX && TREE_KEY_LEN_MAX < LONG_KEY_FLAG);

/// Page identifier: the page's offset in the tree file divided by `PAGE_SIZE`.
pub type PageId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Leaf = 1,
    Branch = 2,
    Overflow = 3,
    Freelist = 4,
    Meta = 5,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Leaf,
            2 => Kind::Branch,
            3 => Kind::Overflow,
            4 => Kind::Freelist,
            5 => Kind::Meta,
            _ => return None,
        })
    }
}

fn get_u16(page: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([page[at], page[at + 1]]))
}

fn set_u16(page: &mut [u8], at: usize, value: usize) {
    debug_assert!(value <= usize::from(u16::MAX));
    page[at..at + 2].copy_from_slice(&(value as u16).to_le_bytes());
}

pub(crate) fn get_u64(page: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(page[at..at + 8].try_into().expect("8 bytes"))
}

pub(crate) fn set_u64(page: &mut [u8], at: usize, value: u64) {
    page[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// Starts a fresh page of `kind` in `page` (all other bytes zeroed).
pub(crate) fn init(page: &mut [u8], kind: Kind, id: PageId) {
    page.fill(0);
    page[4] = kind as u8;
    page[5] = PAGE_FORMAT_VERSION;
    set_u16(page, 10, PAGE_SIZE);
    set_u64(page, 16, id);
}

pub(crate) fn kind(page: &[u8]) -> Option<Kind> {
    Kind::from_byte(page[4])
}

pub(crate) fn count(page: &[u8]) -> usize {
    get_u16(page, 6)
}

pub(crate) fn set_count(page: &mut [u8], count: usize) {
    set_u16(page, 6, count);
}

/// The kind-specific link: a branch's leftmost child, the next overflow or freelist page.
pub(crate) fn link(page: &[u8]) -> u64 {
    get_u64(page, 24)
}

pub(crate) fn set_link(page: &mut [u8], value: u64) {
    set_u64(page, 24, value);
}

/// Seals the page for disk: writes the CRC32C of everything after the checksum field.
pub(crate) fn seal(page: &mut [u8]) {
    let crc = crc32c::crc32c(&page[4..]);
    page[..4].copy_from_slice(&crc.to_le_bytes());
}

/// Checks a page read from disk; the error says what is wrong with it.
pub(crate) fn verify(page: &[u8], id: PageId) -> Result<(), String> {
    let stored = u32::from_le_bytes(page[..4].try_into().expect("4 bytes"));
    if stored != crc32c::crc32c(&page[4..]) {
        return Err(format!("page {id} fails its CRC32C check"));
    }
    if page[5] != PAGE_FORMAT_VERSION && page[5] != PAGE_FORMAT_V1 {
        return Err(format!("page {id} has unknown format version {}", page[5]));
    }
    if get_u64(page, 16) != id {
        return Err(format!("page {id} holds the header of page {}", get_u64(page, 16)));
    }
    let kind = kind(page).ok_or_else(|| format!("page {id} has unknown kind {}", page[4]))?;
    if matches!(kind, Kind::Leaf | Kind::Branch) {
        let heap = heap_start(page);
        if HEADER_LEN + count(page) * SLOT_LEN > heap || prefix_len(page) > PAGE_SIZE - HEADER_LEN {
            return Err(format!("page {id} has an inconsistent header"));
        }
        let heap_end = PAGE_SIZE - stored_prefix_len(page);
        if heap > heap_end {
            return Err(format!("page {id} has an inconsistent header"));
        }
        let body_len = if kind == Kind::Branch { 8 } else { 0 };
        for index in 0..count(page) {
            let offset = slot_offset(page, index);
            if offset < heap || offset + key_part_len(page, index) + body_len > heap_end {
                return Err(format!("page {id} slot {index} points outside the cell heap"));
            }
            if slot_long(page, index) {
                let len = read_long_key(page, index).len;
                if kind == Kind::Branch
                    || page[5] == PAGE_FORMAT_V1
                    || slot_key_len(page, index) != LONG_KEY_HEAD
                    || !(KEY_INLINE_MAX + 1..=TREE_KEY_LEN_MAX).contains(&len)
                {
                    return Err(format!("page {id} slot {index} holds a malformed long key"));
                }
            }
        }
    }
    Ok(())
}

fn prefix_len(page: &[u8]) -> usize {
    get_u16(page, 8)
}

/// Bytes of the shared prefix stored at the page's end: a branch's (since version 2).
fn stored_prefix_len(page: &[u8]) -> usize {
    if kind(page) == Some(Kind::Branch) && page[5] != PAGE_FORMAT_V1 {
        prefix_len(page)
    } else {
        0
    }
}

/// The prefix every key of the page shares.
fn shared_prefix(page: &[u8]) -> &[u8] {
    let stored = stored_prefix_len(page);
    if stored > 0 || count(page) == 0 {
        &page[PAGE_SIZE - stored..]
    } else {
        &key(page, 0)[..prefix_len(page)]
    }
}

/// The bytes of slot `index`'s key (a long key's head) after the shared prefix.
fn key_tail(page: &[u8], index: usize) -> &[u8] {
    &key(page, index)[prefix_len(page) - stored_prefix_len(page)..]
}

fn heap_start(page: &[u8]) -> usize {
    get_u16(page, 10)
}

fn dead_bytes(page: &[u8]) -> usize {
    get_u16(page, 12)
}

fn slot_at(index: usize) -> usize {
    HEADER_LEN + index * SLOT_LEN
}

fn slot_prefix(page: &[u8], index: usize) -> u64 {
    let at = slot_at(index);
    u64::from_be_bytes(page[at..at + 8].try_into().expect("8 bytes"))
}

fn slot_offset(page: &[u8], index: usize) -> usize {
    get_u16(page, slot_at(index) + 8)
}

/// Length of the key bytes in the cell: the whole key, or a long key's head.
fn slot_key_len(page: &[u8], index: usize) -> usize {
    get_u16(page, slot_at(index) + 10) & !LONG_KEY_FLAG
}

fn slot_long(page: &[u8], index: usize) -> bool {
    get_u16(page, slot_at(index) + 10) & LONG_KEY_FLAG != 0
}

/// Bytes of the cell that make up its key: the key, or a long key's head and reference.
fn key_part_len(page: &[u8], index: usize) -> usize {
    slot_key_len(page, index) + if slot_long(page, index) { LONG_KEY_REF_LEN } else { 0 }
}

/// Where the rest of a long key is: the whole key's length and the overflow chain that holds
/// its bytes after the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LongKey {
    pub(crate) len: usize,
    pub(crate) first: PageId,
}

impl LongKey {
    /// Bytes in the overflow chain.
    pub(crate) fn rest_len(&self) -> usize {
        self.len - LONG_KEY_HEAD
    }

    pub(crate) fn encode(&self) -> [u8; LONG_KEY_REF_LEN] {
        let mut bytes = [0u8; LONG_KEY_REF_LEN];
        bytes[..4].copy_from_slice(&(self.len as u32).to_le_bytes());
        bytes[4..].copy_from_slice(&self.first.to_le_bytes());
        bytes
    }

    fn parse(bytes: &[u8]) -> LongKey {
        let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
        LongKey { len, first: get_u64(bytes, 4) }
    }
}

fn read_long_key(page: &[u8], index: usize) -> LongKey {
    let at = slot_offset(page, index) + slot_key_len(page, index);
    LongKey::parse(&page[at..at + LONG_KEY_REF_LEN])
}

/// The reference of slot `index`'s key, if it is long.
pub(crate) fn long_key(page: &[u8], index: usize) -> Option<LongKey> {
    slot_long(page, index).then(|| read_long_key(page, index))
}

/// Whether a key is stored long (its head in the leaf cell, the rest in an overflow chain).
pub(crate) fn is_long(key: &[u8]) -> bool {
    key.len() > KEY_INLINE_MAX
}

/// The bytes of a leaf cell before its value: the key, or a long key's head and reference.
pub(crate) fn key_part(key: &[u8], long: Option<LongKey>) -> (&[u8], Option<[u8; LONG_KEY_REF_LEN]>) {
    match long {
        Some(long) => (&key[..LONG_KEY_HEAD], Some(long.encode())),
        None => (key, None),
    }
}

/// Length of `key_part`.
pub(crate) fn key_part_len_of(key: &[u8]) -> usize {
    if is_long(key) {
        LONG_KEY_HEAD + LONG_KEY_REF_LEN
    } else {
        key.len()
    }
}

/// The 8 bytes of `key` after `prefix_len`, zero-padded, as a big-endian integer.
fn key_prefix(key: &[u8], prefix_len: usize) -> u64 {
    let mut bytes = [0u8; 8];
    let rest = key.get(prefix_len..).unwrap_or(&[]);
    let take = rest.len().min(8);
    bytes[..take].copy_from_slice(&rest[..take]);
    u64::from_be_bytes(bytes)
}

/// Key bytes the cell of slot `index` holds: a leaf's key, or of a long key its head (`long_key`
/// says where the rest is); a branch key's bytes after the shared prefix.
pub(crate) fn key(page: &[u8], index: usize) -> &[u8] {
    let offset = slot_offset(page, index);
    &page[offset..offset + slot_key_len(page, index)]
}

/// Bytes of the cell after the key (a leaf's value reference, a branch's child id).
fn cell_body(page: &[u8], index: usize) -> &[u8] {
    &page[slot_offset(page, index) + key_part_len(page, index)..]
}

/// Binary search: `Ok(index)` of an equal key, or `Err(index)` where it would be inserted.
/// A long key that ties with `target` through its head is compared by `rest` (the key's
/// reference and the target's bytes after the head), which the tree answers from the key's
/// overflow chain; its error ends the search.
pub(crate) fn search<E>(
    page: &[u8],
    target: &[u8],
    mut rest: impl FnMut(LongKey, &[u8]) -> Result<Ordering, E>,
) -> Result<Result<usize, usize>, E> {
    let count = count(page);
    if count == 0 {
        return Ok(Err(0));
    }
    let shared_len = prefix_len(page);
    let shared = shared_prefix(page);
    match target[..target.len().min(shared_len)].cmp(shared) {
        Ordering::Less => return Ok(Err(0)),
        Ordering::Greater => return Ok(Err(count)),
        Ordering::Equal if target.len() < shared_len => return Ok(Err(0)),
        Ordering::Equal => {}
    }
    let wanted = key_prefix(target, shared_len);
    let (mut low, mut high) = (0, count);
    while low < high {
        let middle = (low + high) / 2;
        let mut order = slot_prefix(page, middle).cmp(&wanted);
        if order == Ordering::Equal {
            order = compare_key(page, middle, shared_len, target, &mut rest)?;
        }
        match order {
            Ordering::Less => low = middle + 1,
            Ordering::Greater => high = middle,
            Ordering::Equal => return Ok(Ok(middle)),
        }
    }
    Ok(Err(low))
}

/// The order of slot `index`'s key against `target`, both known to share `shared_len` bytes.
fn compare_key<E>(
    page: &[u8],
    index: usize,
    shared_len: usize,
    target: &[u8],
    rest: &mut impl FnMut(LongKey, &[u8]) -> Result<Ordering, E>,
) -> Result<Ordering, E> {
    let Some(long) = long_key(page, index) else {
        return Ok(key_tail(page, index).cmp(&target[shared_len..]));
    };
    let head = key(page, index);
    // The page's shared prefix stops short of every long key's head (`insert_cell`).
    let compared = head.len().min(target.len());
    match head[shared_len..compared].cmp(&target[shared_len..compared]) {
        Ordering::Equal if target.len() <= head.len() => Ok(Ordering::Greater),
        Ordering::Equal => rest(long, &target[head.len()..]),
        order => Ok(order),
    }
}

/// Free bytes between the slot array and the cell heap.
fn gap(page: &[u8]) -> usize {
    heap_start(page) - slot_at(count(page))
}

/// Whether a cell of `cell_len` bytes fits, after compaction if need be.
pub(crate) fn fits(page: &[u8], cell_len: usize) -> bool {
    gap(page) + dead_bytes(page) >= cell_len + SLOT_LEN
}

/// Whether a cell of `key` (whole, or a long key's head) and `body_len` more bytes fits as the
/// page is, after compaction if need be. A branch key that does not share the stored prefix
/// does not: the page must be rebuilt (`rebuild`) or split.
pub(crate) fn fits_cell(page: &[u8], key: &[u8], body_len: usize) -> bool {
    let stored = stored_prefix_len(page);
    key.starts_with(&page[PAGE_SIZE - stored..]) && fits(page, key.len() - stored + body_len)
}

/// Inserts a cell (`key` followed by the `body` parts) at slot `index`. The caller checked
/// `fits_cell`. For a long key, `key` is its head and the body starts with its reference.
pub(crate) fn insert_cell(page: &mut [u8], index: usize, key: &[u8], long: bool, body: &[&[u8]]) {
    let body_len = body.iter().map(|part| part.len()).sum::<usize>();
    assert!(fits_cell(page, key, body_len), "insert_cell without room");
    let whole_key = key;
    let key = &key[stored_prefix_len(page)..];
    let cell_len = key.len() + body_len;
    if gap(page) < cell_len + SLOT_LEN {
        compact(page);
    }
    let count = count(page);
    let offset = heap_start(page) - cell_len;
    page[offset..offset + key.len()].copy_from_slice(key);
    let mut at = offset + key.len();
    for part in body {
        page[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    set_u16(page, 10, offset);
    page.copy_within(slot_at(index)..slot_at(count), slot_at(index + 1));
    set_count(page, count + 1);
    // Keep a leaf's shared-prefix invariant: shrink it if the new key does not share it (a
    // branch's new key shares the stored prefix).
    let shared_len = prefix_len(page);
    let first = if index == 0 { 1 } else { 0 };
    let mut shared_now = if kind(page) == Some(Kind::Branch) {
        shared_len
    } else if count == 0 {
        key.len()
    } else {
        common_prefix_len(key, &self::key(page, first)[..shared_len.min(self::key(page, first).len())])
    };
    if long {
        // A slot's 8 prefix bytes after the shared prefix must be the key's own, so the shared
        // prefix ends at least 8 bytes before the end of a long key's head.
        shared_now = shared_now.min(key.len() - 8);
    }
    if (count == 0 && kind(page) != Some(Kind::Branch)) || shared_now < shared_len {
        set_u16(page, 8, shared_now);
        for slot in 0..=count {
            if slot != index {
                let prefix = key_prefix(self::key(page, slot), shared_now);
                page[slot_at(slot)..slot_at(slot) + 8].copy_from_slice(&prefix.to_be_bytes());
            }
        }
    }
    let at = slot_at(index);
    let prefix = key_prefix(whole_key, prefix_len(page));
    page[at..at + 8].copy_from_slice(&prefix.to_be_bytes());
    set_u16(page, at + 8, offset);
    set_u16(page, at + 10, key.len() | if long { LONG_KEY_FLAG } else { 0 });
}

/// Length of the longest common prefix of two byte strings.
pub(crate) fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Removes slot `index`; its cell's bytes become dead until the next compaction.
pub(crate) fn remove_cell(page: &mut [u8], index: usize, cell_len: usize) {
    let count = count(page);
    page.copy_within(slot_at(index + 1)..slot_at(count), slot_at(index));
    set_count(page, count - 1);
    let dead = dead_bytes(page) + cell_len;
    set_u16(page, 12, dead);
}

/// Overwrites the body of the cell at `index` in place: `body` must be exactly as long as the
/// body it replaces (a value overwritten by one of the same size moves no slot, leaves no dead
/// bytes and needs no compaction).
pub(crate) fn overwrite_body(page: &mut [u8], index: usize, body: &[&[u8]]) {
    let mut at = slot_offset(page, index) + key_part_len(page, index);
    for part in body {
        page[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
}

/// Rewrites the cell heap without dead bytes, keeping slot order.
fn compact(page: &mut [u8]) {
    let mut scratch = [0u8; PAGE_SIZE];
    let heap_end = PAGE_SIZE - stored_prefix_len(page);
    let mut heap = heap_end;
    for index in 0..count(page) {
        let offset = slot_offset(page, index);
        let len = cell_len_at(page, index);
        heap -= len;
        scratch[heap..heap + len].copy_from_slice(&page[offset..offset + len]);
        set_u16(page, slot_at(index) + 8, heap);
    }
    page[heap..heap_end].copy_from_slice(&scratch[heap..heap_end]);
    set_u16(page, 10, heap);
    set_u16(page, 12, 0);
}

/// Full length of the cell at `index` (key and body).
pub(crate) fn cell_len_at(page: &[u8], index: usize) -> usize {
    let key_len = key_part_len(page, index);
    match kind(page) {
        Some(Kind::Branch) => key_len + 8,
        _ => key_len + ValueRef::parse(cell_body(page, index)).encoded_len(),
    }
}

/// A cell taken out of a page, for splits and rebuilds.
pub(crate) struct Cell {
    /// The key (a branch's whole), or a long key's head.
    pub(crate) key: Vec<u8>,
    pub(crate) long: bool,
    /// The rest of the cell (a long key's reference first).
    pub(crate) body: Vec<u8>,
}

impl Cell {
    /// The reference of a long key's cell.
    pub(crate) fn long_key(&self) -> Option<LongKey> {
        self.long.then(|| LongKey::parse(&self.body))
    }
}

/// Cells of a page, in order.
pub(crate) fn cells(page: &[u8]) -> Vec<Cell> {
    let stored = &page[PAGE_SIZE - stored_prefix_len(page)..];
    (0..count(page))
        .map(|index| {
            let cell_key = key(page, index);
            let body_len = cell_len_at(page, index) - cell_key.len();
            let at = slot_offset(page, index) + cell_key.len();
            let key = [stored, cell_key].concat();
            Cell { key, long: slot_long(page, index), body: page[at..at + body_len].to_vec() }
        })
        .collect()
}

/// Rewrites `page` (keeping kind, id and link) to hold exactly `cells` (in key order). A branch
/// stores the longest prefix they share.
pub(crate) fn rebuild(page: &mut [u8], cells: &[Cell]) {
    let (kind, id, link) = (kind(page).expect("known kind"), get_u64(page, 16), link(page));
    init(page, kind, id);
    set_link(page, link);
    if kind == Kind::Branch {
        let shared = branch_prefix_len(cells);
        if let Some(cell) = cells.first() {
            page[PAGE_SIZE - shared..].copy_from_slice(&cell.key[..shared]);
        }
        set_u16(page, 8, shared);
        set_u16(page, 10, PAGE_SIZE - shared);
    }
    for (index, cell) in cells.iter().enumerate() {
        insert_cell(page, index, &cell.key, cell.long, &[&cell.body]);
    }
}

/// The prefix a branch holding `cells` (in key order) stores: the one its first and last keys
/// share.
fn branch_prefix_len(cells: &[Cell]) -> usize {
    match (cells.first(), cells.last()) {
        (Some(first), Some(last)) => common_prefix_len(&first.key, &last.key),
        _ => 0,
    }
}

/// Bytes a set of cells (in key order) needs in a page of `kind`.
pub(crate) fn cells_size(kind: Kind, cells: &[Cell]) -> usize {
    let whole: usize = cells.iter().map(|cell| cell.key.len() + cell.body.len() + SLOT_LEN).sum();
    match kind {
        Kind::Branch => {
            let shared = branch_prefix_len(cells);
            whole + shared - cells.len() * shared
        }
        _ => whole,
    }
}

/// Whether `cells` (in key order) fit in one page of `kind`.
pub(crate) fn cells_fit(kind: Kind, cells: &[Cell]) -> bool {
    cells_size(kind, cells) <= USABLE
}

/// Rewrites a page read from disk in an older layout as the current one (same keys, same
/// children, same values), so that only the current layout is ever read or written.
pub(crate) fn upgrade(page: &mut [u8]) {
    if page[5] != PAGE_FORMAT_V1 {
        return;
    }
    if kind(page) == Some(Kind::Branch) {
        let cells = cells(page);
        rebuild(page, &cells);
    }
    page[5] = PAGE_FORMAT_VERSION;
}

/// Child pointer of a branch: index 0 is the leftmost child, index i > 0 follows key i - 1.
pub(crate) fn child(page: &[u8], index: usize) -> PageId {
    if index == 0 {
        link(page)
    } else {
        get_u64(cell_body(page, index - 1), 0)
    }
}

pub(crate) fn set_child(page: &mut [u8], index: usize, id: PageId) {
    if index == 0 {
        set_link(page, id);
    } else {
        let at = slot_offset(page, index - 1) + slot_key_len(page, index - 1);
        set_u64(page, at, id);
    }
}

/// The child of a branch whose subtree may hold `target` (`rest` as for `search`).
pub(crate) fn child_index<E>(
    page: &[u8],
    target: &[u8],
    rest: impl FnMut(LongKey, &[u8]) -> Result<Ordering, E>,
) -> Result<usize, E> {
    Ok(match search(page, target, rest)? {
        Ok(index) => index + 1,
        Err(index) => index,
    })
}

/// How a leaf cell holds its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ValueRef<'a> {
    Inline(&'a [u8]),
    Overflow { len: usize, first: PageId },
}

impl<'a> ValueRef<'a> {
    pub(crate) fn parse(body: &'a [u8]) -> ValueRef<'a> {
        let len = u32::from_le_bytes(body[1..5].try_into().expect("4 bytes")) as usize;
        if body[0] == 0 {
            ValueRef::Inline(&body[5..5 + len])
        } else {
            ValueRef::Overflow { len, first: get_u64(body, 5) }
        }
    }

    /// The value's length in bytes.
    pub(crate) fn len(&self) -> usize {
        match self {
            ValueRef::Inline(bytes) => bytes.len(),
            ValueRef::Overflow { len, .. } => *len,
        }
    }

    /// Bytes a value of `len` takes in its cell, inline or as an overflow reference.
    pub(crate) fn cell_len(inline: bool, len: usize) -> usize {
        if inline {
            VALUE_INLINE_HEADER + len
        } else {
            VALUE_OVERFLOW_LEN
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            ValueRef::Inline(bytes) => VALUE_INLINE_HEADER + bytes.len(),
            ValueRef::Overflow { .. } => VALUE_OVERFLOW_LEN,
        }
    }

    /// The fixed part of the encoding (an inline value's bytes follow it) and its length.
    pub(crate) fn header(&self) -> ([u8; VALUE_OVERFLOW_LEN], usize) {
        let mut header = [0u8; VALUE_OVERFLOW_LEN];
        match self {
            ValueRef::Inline(bytes) => {
                header[1..5].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
                (header, VALUE_INLINE_HEADER)
            }
            ValueRef::Overflow { len, first } => {
                header[0] = 1;
                header[1..5].copy_from_slice(&(*len as u32).to_le_bytes());
                header[5..13].copy_from_slice(&first.to_le_bytes());
                (header, VALUE_OVERFLOW_LEN)
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn encode(&self) -> Vec<u8> {
        let (header, len) = self.header();
        let mut body = header[..len].to_vec();
        if let ValueRef::Inline(bytes) = self {
            body.extend_from_slice(bytes);
        }
        body
    }
}

/// A leaf's value reference at `index`.
pub(crate) fn value_ref(page: &[u8], index: usize) -> ValueRef<'_> {
    ValueRef::parse(cell_body(page, index))
}

/// Whether a value is stored inline beside a key part of `key_part_len` bytes
/// (`key_part_len_of`); else it goes to overflow pages.
pub(crate) fn value_inline(key_part_len: usize, value_len: usize) -> bool {
    key_part_len + VALUE_INLINE_HEADER + value_len <= CELL_INLINE_MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `search` of a page without long keys.
    fn find(page: &[u8], key: &[u8]) -> Result<usize, usize> {
        search(page, key, |_, _| -> Result<Ordering, ()> { panic!("no long keys here") }).unwrap()
    }

    fn leaf_with(keys: &[&[u8]]) -> Vec<u8> {
        let mut page = vec![0u8; PAGE_SIZE];
        init(&mut page, Kind::Leaf, 7);
        for key in keys {
            let index = find(&page, key).unwrap_err();
            insert_cell(&mut page, index, key, false, &[&ValueRef::Inline(b"v").encode()]);
        }
        page
    }

    #[test]
    fn search_finds_keys_with_shared_prefixes() {
        let keys: Vec<Vec<u8>> = (0..60u32).map(|i| format!("partition-0001/item-{:05}", i * 7).into_bytes()).collect();
        let refs: Vec<&[u8]> = keys.iter().rev().map(Vec::as_slice).collect();
        let page = leaf_with(&refs);
        assert_eq!(count(&page), 60);
        assert!(prefix_len(&page) >= "partition-0001/item-".len());
        for (index, key) in keys.iter().enumerate() {
            assert_eq!(find(&page, key), Ok(index));
        }
        assert_eq!(find(&page, b"partition-0001/item-00001"), Err(1));
        assert_eq!(find(&page, b"a"), Err(0));
        assert_eq!(find(&page, b"partition"), Err(0));
        assert_eq!(find(&page, b"z"), Err(60));
        // A key outside the shared prefix shrinks it and keeps search correct.
        let mut page = page;
        insert_cell(&mut page, 0, b"other", false, &[&ValueRef::Inline(b"v").encode()]);
        assert_eq!(prefix_len(&page), 0);
        assert_eq!(find(&page, b"other"), Ok(0));
        assert_eq!(find(&page, &keys[59]), Ok(60));
    }

    #[test]
    fn removal_and_compaction_reclaim_space() {
        let mut page = leaf_with(&[]);
        let mut inserted = 0;
        while fits(&page, 100 + VALUE_INLINE_HEADER + 1) {
            let key = format!("{inserted:0100}");
            insert_cell(&mut page, inserted, key.as_bytes(), false, &[&ValueRef::Inline(b"v").encode()]);
            inserted += 1;
        }
        let cell = cell_len_at(&page, 0);
        remove_cell(&mut page, 0, cell);
        assert!(fits(&page, cell));
        insert_cell(&mut page, 0, &[b'0'; 100], false, &[&ValueRef::Inline(b"v").encode()]);
        assert_eq!(count(&page), inserted);
        seal(&mut page);
        verify(&page, 7).unwrap();
        page[100] ^= 1;
        assert!(verify(&page, 7).unwrap_err().contains("CRC32C"));
    }

    /// Separators sharing `shared` bytes, one per child `1..=count`.
    fn separators(shared: usize, count: u64) -> Vec<Cell> {
        (1..=count)
            .map(|child| {
                let key = [&vec![b'p'; shared][..], format!("{child:06}").as_bytes()].concat();
                Cell { key, long: false, body: child.to_le_bytes().to_vec() }
            })
            .collect()
    }

    #[test]
    fn branches_store_their_shared_prefix_once() {
        // Sixty separators of 2 KB that share all but their last bytes fit one branch.
        let cells = separators(2070, 60);
        assert!(cells_fit(Kind::Branch, &cells));
        assert!(!cells_fit(Kind::Leaf, &cells));
        let mut page = vec![0u8; PAGE_SIZE];
        init(&mut page, Kind::Branch, 7);
        rebuild(&mut page, &cells);
        assert_eq!(prefix_len(&page), 2070 + 4);
        for (index, cell) in cells.iter().enumerate() {
            assert_eq!(find(&page, &cell.key), Ok(index));
            assert_eq!(child(&page, index + 1), index as PageId + 1);
        }
        assert_eq!(find(&page, b"p"), Err(0));
        assert_eq!(find(&page, b"q"), Err(60));
        // A separator outside the stored prefix needs a rebuild: the page as it is cannot take it.
        assert!(!fits_cell(&page, b"a", 8));
        assert!(fits_cell(&page, &[&vec![b'p'; 2070][..], b"0000xy"].concat(), 8));
        let taken: Vec<Vec<u8>> = super::cells(&page).into_iter().map(|cell| cell.key).collect();
        assert_eq!(taken, cells.iter().map(|cell| cell.key.clone()).collect::<Vec<_>>());
        // Removals and compaction keep the stored prefix.
        for _ in 0..50 {
            let len = cell_len_at(&page, 0);
            remove_cell(&mut page, 0, len);
        }
        compact(&mut page);
        assert_eq!(find(&page, &cells[55].key), Ok(5));
        seal(&mut page);
        verify(&page, 7).unwrap();
    }

    #[test]
    fn version_1_branches_are_upgraded() {
        // A version 1 branch: whole keys in its cells, the shared prefix only in its slots.
        let cells = separators(300, 8);
        let mut page = vec![0u8; PAGE_SIZE];
        init(&mut page, Kind::Leaf, 7);
        for (index, cell) in cells.iter().enumerate() {
            insert_cell(&mut page, index, &cell.key, false, &[&cell.body]);
        }
        page[4] = Kind::Branch as u8;
        page[5] = PAGE_FORMAT_V1;
        set_link(&mut page, 99);
        seal(&mut page);
        verify(&page, 7).unwrap();
        let whole_gap = gap(&page);
        upgrade(&mut page);
        assert_eq!(page[5], PAGE_FORMAT_VERSION);
        assert!(gap(&page) > whole_gap + 7 * 300);
        assert_eq!(child(&page, 0), 99);
        for (index, cell) in cells.iter().enumerate() {
            assert_eq!(find(&page, &cell.key), Ok(index));
            assert_eq!(child(&page, index + 1), index as PageId + 1);
        }
        seal(&mut page);
        verify(&page, 7).unwrap();
        page[5] = 3;
        seal(&mut page);
        assert!(verify(&page, 7).unwrap_err().contains("unknown format version 3"));
    }

    #[test]
    fn long_keys_compare_by_their_rest() {
        // Long keys sharing their whole head, told apart only by the rest; `rests[first]` plays
        // the overflow chain.
        let head = vec![b'h'; LONG_KEY_HEAD + 20];
        let keys: Vec<Vec<u8>> = (0..2u8).map(|i| [&head[..], &[b'a' + i * 2; 400][..]].concat()).collect();
        let rests: Vec<Vec<u8>> = keys.iter().map(|key| key[LONG_KEY_HEAD..].to_vec()).collect();
        let mut page = leaf_with(&[&head[..LONG_KEY_HEAD - 3]]);
        for (i, key) in keys.iter().enumerate() {
            let reference = LongKey { len: key.len(), first: i as PageId }.encode();
            let index = count(&page);
            insert_cell(&mut page, index, &key[..LONG_KEY_HEAD], true, &[&reference, &ValueRef::Inline(b"v").encode()]);
        }
        assert_eq!(prefix_len(&page), LONG_KEY_HEAD - 8);
        let mut lookups = 0;
        let mut find_long = |target: &[u8]| {
            search(&page, target, |long, rest| -> Result<Ordering, ()> {
                lookups += 1;
                Ok(rests[long.first as usize][..].cmp(rest))
            })
            .unwrap()
        };
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(find_long(key), Ok(1 + i));
        }
        assert_eq!(find_long(&[&head[..], &[b'b'][..]].concat()), Err(2));
        assert_eq!(find_long(&head[..LONG_KEY_HEAD]), Err(1));
        assert_eq!(find_long(&head[..LONG_KEY_HEAD - 3]), Ok(0));
        assert_eq!(find_long(b"hh"), Err(0));
        assert_eq!(find_long(b"z"), Err(3));
        assert!(lookups > 0);
        assert_eq!(long_key(&page, 2), Some(LongKey { len: keys[1].len(), first: 1 }));
        assert_eq!(long_key(&page, 0), None);
        assert_eq!(value_ref(&page, 2), ValueRef::Inline(b"v"));
        seal(&mut page);
        verify(&page, 7).unwrap();
    }
}
