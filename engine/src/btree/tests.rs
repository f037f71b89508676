//! The tree against `BTreeMap` over random operation sequences, with a page cache far smaller
//! than the data, checkpoints in between and reopening from the last checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use proptest::prelude::*;

use super::page::{self, Kind, PageId};
use super::{freelist_entries, Durable, Sealed, Tree, TreeError, TreeResult, CACHE_PAGES_MIN, FIRST_DATA_PAGE};

/// A tree with an in-memory "disk" of sealed pages.
struct Harness {
    tree: Tree,
    disk: HashMap<PageId, Vec<u8>>,
    durable: (PageId, u64, PageId),
    capacity: usize,
    /// A checkpoint sealed and not yet written: the tree goes on changing meanwhile.
    sealed: Option<Sealed>,
}

impl Harness {
    fn new(capacity: usize) -> Harness {
        Harness {
            tree: Tree::open(empty_durable(), capacity),
            disk: HashMap::new(),
            durable: (0, FIRST_DATA_PAGE, 0),
            capacity,
            sealed: None,
        }
    }

    fn run<T>(&mut self, mut op: impl FnMut(&mut Tree) -> TreeResult<T>) -> T {
        loop {
            match op(&mut self.tree) {
                Ok(value) => return value,
                Err(TreeError::Need(id)) => {
                    let page = self.disk.get(&id).unwrap_or_else(|| panic!("page {id} was never written")).clone();
                    page::verify(&page, id).unwrap();
                    let generation = self.tree.generation();
                    self.tree.insert_loaded(id, page, generation);
                }
                Err(TreeError::Corrupt(reason)) => panic!("corrupt: {reason}"),
            }
        }
    }

    /// A whole checkpoint of the tree as it is (after finishing one already sealed).
    fn checkpoint(&mut self) {
        self.commit();
        self.seal();
        self.commit();
    }

    /// Seals a checkpoint (if none is sealed); `commit` writes it, maybe after more changes.
    fn seal(&mut self) {
        if self.sealed.is_none() {
            self.sealed = Some(self.tree.seal());
        }
    }

    /// Writes the sealed checkpoint (if any), collecting its pages in small chunks as the
    /// store does, and commits it.
    fn commit(&mut self) {
        let Some(sealed) = self.sealed.take() else { return };
        let mut pages = sealed.freelist.clone();
        for chunk in sealed.ids.chunks(3) {
            pages.extend(self.tree.sealed_pages(chunk));
        }
        for (id, page) in &pages {
            let mut copy = page.to_vec();
            page::seal(&mut copy);
            page::verify(&copy, *id).unwrap();
            self.disk.insert(*id, copy);
        }
        self.durable = (sealed.root, sealed.page_count, sealed.freelist_head);
        self.tree.commit(sealed);
    }

    /// Reopens from the last committed checkpoint (a sealed one is lost, as in a crash).
    fn reopen(&mut self) {
        self.sealed = None;
        let (root, page_count, mut next) = self.durable;
        let (mut free, mut freelist_pages) = (Vec::new(), Vec::new());
        while next != 0 {
            let page = &self.disk[&next];
            assert_eq!(page::kind(page), Some(Kind::Freelist));
            freelist_pages.push(next);
            let (ids, link) = freelist_entries(page);
            free.extend(ids);
            next = link;
        }
        self.tree = Tree::open(Durable { root, page_count, free, freelist_pages }, self.capacity);
    }

    fn scan(
        &mut self,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
        limit: usize,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let (mut lower, mut upper, mut out) = (lower, upper, Vec::new());
        self.run(|tree| tree.scan_resumable(tree.root(), &mut lower, &mut upper, reverse, limit, &mut out));
        out
    }
}

#[derive(Clone, Debug)]
enum Op {
    Put(u16, usize),
    Delete(u16),
    Get(u16),
    Scan(Option<u16>, Option<u16>, bool, usize),
    Checkpoint,
    /// Seals a checkpoint; the next `Commit` writes it, with changes in between.
    Seal,
    Commit,
    Reopen,
}

fn key_of(n: u16) -> Vec<u8> {
    // A shared prefix like a partition's, then a varying part, some keys long. Keys of the
    // multiples of 11 share more than a long key's head (as items of one long partition key
    // do), so only their overflow rests order them; multiples of 13 are long keys that differ
    // early.
    let mut key = b"\x00\x00\x00\x00\x00\x00\x00\x07pk-".to_vec();
    if n.is_multiple_of(11) {
        key.extend(std::iter::repeat_n(b'y', page::LONG_KEY_HEAD + 50));
    }
    key.extend_from_slice(format!("{:05}", n).as_bytes());
    if n.is_multiple_of(7) {
        key.extend(std::iter::repeat_n(b'x', 200 + usize::from(n % 300)));
    }
    if n.is_multiple_of(13) && !n.is_multiple_of(11) {
        key.extend(std::iter::repeat_n(b'z', 1000 + usize::from(n % 1700)));
    }
    if n.is_multiple_of(22) {
        key.extend(std::iter::repeat_n(b'z', 300 + usize::from(n % 1000)));
    }
    assert!(key.len() <= page::TREE_KEY_LEN_MAX);
    key
}

fn value_of(n: u16, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_add(n as u8)).collect()
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u16..1500;
    // About one length in five is the same fixed size, so that keys are often overwritten by
    // values as long as the ones they replace.
    let len = prop_oneof![2 => Just(100usize), 5 => 0usize..200, 1 => 200usize..1400, 1 => 1400usize..20_000];
    prop_oneof![
        30 => (key.clone(), len).prop_map(|(k, l)| Op::Put(k, l)),
        10 => key.clone().prop_map(Op::Delete),
        10 => key.clone().prop_map(Op::Get),
        4 => (proptest::option::of(key.clone()), proptest::option::of(key), any::<bool>(), 1usize..50)
            .prop_map(|(a, b, r, l)| Op::Scan(a, b, r, l)),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Seal),
        1 => Just(Op::Commit),
        1 => Just(Op::Reopen),
    ]
}

fn check(ops: Vec<Op>, capacity: usize) {
    let mut harness = Harness::new(capacity);
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut durable_model = model.clone();
    let mut sealed_model = None;
    // Each write's value differs from the one before it, even when just as long.
    let mut writes = 0u16;
    for op in ops {
        match op {
            Op::Put(k, len) => {
                writes = writes.wrapping_add(1);
                let (key, value) = (key_of(k), value_of(k.wrapping_add(writes), len));
                // Half the writes ask only for the replaced value's length, as an apply whose
                // outcome nobody takes does.
                if k % 2 == 0 {
                    let previous = harness.run(|tree| tree.put(&key, &value));
                    assert_eq!(previous, model.insert(key, value));
                } else {
                    let previous = harness.run(|tree| tree.put_len(&key, &value));
                    assert_eq!(previous, model.insert(key, value).map(|old| old.len()));
                }
            }
            Op::Delete(k) => {
                let key = key_of(k);
                if k % 2 == 0 {
                    let removed = harness.run(|tree| tree.delete(&key));
                    assert_eq!(removed, model.remove(&key));
                } else {
                    let removed = harness.run(|tree| tree.delete_len(&key));
                    assert_eq!(removed, model.remove(&key).map(|old| old.len()));
                }
            }
            Op::Get(k) => {
                let key = key_of(k);
                assert_eq!(harness.run(|tree| tree.get(&key)), model.get(&key).cloned());
            }
            Op::Scan(a, b, reverse, limit) => {
                let lower = a.map_or(Bound::Unbounded, |k| Bound::Included(key_of(k)));
                let upper = b.map_or(Bound::Unbounded, |k| Bound::Excluded(key_of(k)));
                let got = harness.scan(lower.clone(), upper.clone(), reverse, limit);
                let valid = match (&lower, &upper) {
                    (Bound::Included(l), Bound::Excluded(u)) => l <= u,
                    _ => true,
                };
                let expected: Vec<(Vec<u8>, Vec<u8>)> = if !valid {
                    Vec::new()
                } else if reverse {
                    model.range((lower, upper)).rev().take(limit).map(|(k, v)| (k.clone(), v.clone())).collect()
                } else {
                    model.range((lower, upper)).take(limit).map(|(k, v)| (k.clone(), v.clone())).collect()
                };
                assert_eq!(got, expected);
            }
            Op::Checkpoint => {
                harness.checkpoint();
                durable_model = model.clone();
                sealed_model = None;
            }
            Op::Seal => {
                if harness.sealed.is_none() {
                    harness.seal();
                    sealed_model = Some(model.clone());
                }
            }
            Op::Commit => {
                harness.commit();
                if let Some(sealed) = sealed_model.take() {
                    durable_model = sealed;
                }
            }
            Op::Reopen => {
                harness.reopen();
                model = durable_model.clone();
                sealed_model = None;
            }
        }
    }
    let everything = harness.scan(Bound::Unbounded, Bound::Unbounded, false, usize::MAX);
    assert_eq!(everything, model.into_iter().collect::<Vec<_>>());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn matches_btreemap(ops in proptest::collection::vec(op(), 1..600)) {
        check(ops, 1 << 20);
    }

    #[test]
    fn matches_btreemap_with_tiny_cache(ops in proptest::collection::vec(op(), 1..600)) {
        check(ops, CACHE_PAGES_MIN);
    }
}

#[test]
fn steady_overwrites_reuse_pages() {
    let mut harness = Harness::new(CACHE_PAGES_MIN);
    let mut high_water = Vec::new();
    for round in 0..30u16 {
        for k in 0..400u16 {
            let value = value_of(k.wrapping_add(round), 300 + usize::from(k % 3) * 1000);
            harness.run(|tree| tree.put(&key_of(k), &value));
        }
        harness.checkpoint();
        high_water.push(harness.tree.page_count());
    }
    // After warm-up the file stops growing: freed pages are reused.
    assert_eq!(high_water[10], high_water[29], "page counts: {high_water:?}");
}

#[test]
fn deleting_everything_leaves_an_empty_tree() {
    let mut harness = Harness::new(CACHE_PAGES_MIN);
    for k in 0..2000u16 {
        harness.run(|tree| tree.put(&key_of(k), &value_of(k, 100)));
    }
    harness.checkpoint();
    for k in (0..2000u16).rev() {
        assert!(harness.run(|tree| tree.delete(&key_of(k))).is_some());
    }
    assert!(harness.scan(Bound::Unbounded, Bound::Unbounded, false, usize::MAX).is_empty());
    harness.checkpoint();
    harness.reopen();
    assert!(harness.scan(Bound::Unbounded, Bound::Unbounded, true, usize::MAX).is_empty());
    harness.run(|tree| tree.put(b"again", b"value"));
    assert_eq!(harness.run(|tree| tree.get(b"again")), Some(b"value".to_vec()));
}

#[test]
fn a_pinned_checkpoint_reads_unchanged_while_the_tree_changes() {
    let mut harness = Harness::new(CACHE_PAGES_MIN);
    for k in 0..3000u16 {
        harness.run(|tree| tree.put(&key_of(k), &value_of(k, 100 + usize::from(k % 3) * 900)));
    }
    harness.checkpoint();
    let before = harness.scan(Bound::Unbounded, Bound::Unbounded, false, usize::MAX);
    let root = harness.tree.pin();
    // Rewrite, delete and add across several checkpoints, one of them sealed while changes go on.
    for round in 0..4u16 {
        for k in (round..3000).step_by(3) {
            harness.run(|tree| tree.put(&key_of(k), &value_of(k + round + 1, 50)));
        }
        for k in (round..3000).step_by(11) {
            harness.run(|tree| tree.delete(&key_of(k)));
        }
        harness.seal();
        for k in 3000..3100 + round * 100 {
            harness.run(|tree| tree.put(&key_of(k), &value_of(k, 30)));
        }
        harness.commit();
        harness.check_accounting();
    }
    let mut pinned = Vec::new();
    let (mut lower, mut upper) = (Bound::Unbounded, Bound::Unbounded);
    harness.run(|tree| tree.scan_resumable(root, &mut lower, &mut upper, false, usize::MAX, &mut pinned));
    assert!(pinned == before, "the pinned checkpoint changed under its reader");
    assert_eq!(harness.run(|tree| tree.get_in(root, &key_of(5))), Some(value_of(5, 100 + 2 * 900)));
    assert!(!harness.tree.held.is_empty(), "pages were released while pinned");
    // A checkpoint written while pinned lists the held pages as free: nothing leaks on reopen.
    harness.checkpoint();
    let mut reopened = harness.clone_disk();
    reopened.reopen();
    reopened.check_accounting();
    harness.tree.unpin();
    assert!(harness.tree.held.is_empty());
    harness.check_accounting();
    // Held pages are reused once free.
    let pages = harness.tree.page_count();
    for k in 0..3000u16 {
        harness.run(|tree| tree.put(&key_of(k), &value_of(k, 60)));
    }
    harness.checkpoint();
    assert!(harness.tree.page_count() <= pages + 8, "freed pages were not reused");
}

fn empty_durable() -> Durable {
    Durable { root: 0, page_count: FIRST_DATA_PAGE, free: Vec::new(), freelist_pages: Vec::new() }
}

impl Harness {
    /// Another harness over a copy of this one's disk and durable state.
    fn clone_disk(&self) -> Harness {
        Harness {
            tree: Tree::open(empty_durable(), self.capacity),
            disk: self.disk.clone(),
            durable: self.durable,
            capacity: self.capacity,
            sealed: None,
        }
    }

    /// Every page id below the page count is in exactly one place: reachable from the root
    /// (tree or overflow page), free, pending free, or holding the freelist.
    fn check_accounting(&mut self) {
        let mut owners: HashMap<PageId, &'static str> = HashMap::new();
        let mut claim = |id: PageId, owner: &'static str| {
            if let Some(previous) = owners.insert(id, owner) {
                panic!("page {id} is both {previous} and {owner}");
            }
        };
        let mut stack = vec![self.tree.root];
        while let Some(id) = stack.pop() {
            claim(id, "reachable");
            let page = self.run(|tree| tree.page(id).map(<[u8]>::to_vec));
            match page::kind(&page) {
                Some(Kind::Branch) => (0..=page::count(&page)).for_each(|index| stack.push(page::child(&page, index))),
                Some(Kind::Leaf) => {
                    for index in 0..page::count(&page) {
                        if let page::ValueRef::Overflow { first, .. } = page::value_ref(&page, index) {
                            stack.push(first);
                        }
                        if let Some(long) = page::long_key(&page, index) {
                            stack.push(long.first);
                        }
                    }
                }
                Some(Kind::Overflow) if page::link(&page) != 0 => stack.push(page::link(&page)),
                _ => {}
            }
        }
        self.tree.free.iter().for_each(|&id| claim(id, "free"));
        self.tree.pending_free.iter().for_each(|&id| claim(id, "pending"));
        self.tree.held.iter().for_each(|&id| claim(id, "held"));
        self.tree.freelist_pages.iter().for_each(|&id| claim(id, "freelist"));
        for id in FIRST_DATA_PAGE..self.tree.page_count() {
            assert!(owners.contains_key(&id), "page {id} is leaked: neither reachable nor free");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// No page is ever lost or owned twice, through puts, deletes, checkpoints and reopens.
    #[test]
    fn pages_are_never_leaked(ops in proptest::collection::vec(op(), 1..400)) {
        let mut harness = Harness::new(CACHE_PAGES_MIN);
        for op in ops {
            match op {
                Op::Put(k, len) => {
                    harness.run(|tree| tree.put(&key_of(k), &value_of(k, len)));
                }
                Op::Delete(k) => {
                    harness.run(|tree| tree.delete(&key_of(k)));
                }
                Op::Checkpoint => {
                    harness.checkpoint();
                    harness.check_accounting();
                }
                Op::Seal => harness.seal(),
                Op::Commit => {
                    harness.commit();
                    harness.check_accounting();
                }
                Op::Reopen => {
                    harness.reopen();
                    harness.check_accounting();
                }
                Op::Get(_) | Op::Scan(..) => {}
            }
        }
        harness.checkpoint();
        harness.check_accounting();
    }
}

#[test]
fn reads_keep_the_cache_within_its_capacity() {
    let mut harness = Harness::new(CACHE_PAGES_MIN);
    for k in 0..1500u16 {
        harness.run(|tree| tree.put(&key_of(k), &value_of(k, 600)));
    }
    harness.checkpoint();
    harness.reopen();
    for round in 0..3 {
        for k in 0..1500u16 {
            assert!(harness.run(|tree| tree.get(&key_of(k))).is_some());
            let cached = harness.tree.frames.len();
            assert!(cached <= CACHE_PAGES_MIN + 1, "round {round}, key {k}: {cached} pages cached");
        }
    }
}

/// A tree key as the store makes it for a table's longest keys: partition id, hash, a
/// length-prefixed partition key of `pk_len` bytes, then a sort key.
fn long_item_key(pk: u8, pk_len: usize, sort: &[u8]) -> Vec<u8> {
    let mut key = vec![0, 0, 0, 0, 0, 0, 0, 9, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, pk];
    key.extend_from_slice(&(pk_len as u16).to_be_bytes());
    key.extend(std::iter::repeat_n(pk, pk_len));
    key.extend_from_slice(sort);
    key
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Items under partition keys of up to 2048 bytes with sort keys of up to 1024: every
    /// comparison inside one partition key reads long keys' rests; splits make long separators;
    /// checkpoints, crashes (a reopen loses what the last checkpoint does not hold) and deletes
    /// down to nothing keep the tree equal to the model and every page accounted for.
    #[test]
    fn longest_keys_match_btreemap(
        ops in proptest::collection::vec(
            (0u8..3, prop_oneof![Just(2048usize), 1usize..2048], proptest::collection::vec(0u8..3, 1..4),
             prop_oneof![Just(1024usize), 1usize..1024], 0usize..600, 0u8..10),
            1..300),
    ) {
        let mut harness = Harness::new(CACHE_PAGES_MIN);
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut durable_model = model.clone();
        for (pk, pk_len, sort_start, sort_len, value_len, action) in ops {
            let mut sort = sort_start;
            sort.resize(sort_len, b's');
            let key = long_item_key(pk, pk_len, &sort);
            prop_assert!(key.len() <= 8 + crate::KEY_LEN_MAX);
            match action {
                0..=5 => {
                    let value = value_of(value_len as u16, value_len);
                    prop_assert_eq!(harness.run(|tree| tree.put(&key, &value)), model.insert(key.clone(), value));
                }
                6 | 7 => prop_assert_eq!(harness.run(|tree| tree.delete(&key)), model.remove(&key)),
                8 => {
                    harness.checkpoint();
                    harness.check_accounting();
                    durable_model = model.clone();
                }
                _ => {
                    harness.reopen();
                    model = durable_model.clone();
                }
            }
            prop_assert_eq!(harness.run(|tree| tree.get(&long_item_key(pk, pk_len, &sort))), model.get(&key).cloned());
        }
        let everything = harness.scan(Bound::Unbounded, Bound::Unbounded, false, usize::MAX);
        prop_assert!(everything == model.clone().into_iter().collect::<Vec<_>>());
        let backwards = harness.scan(Bound::Unbounded, Bound::Unbounded, true, usize::MAX);
        prop_assert!(backwards == model.clone().into_iter().rev().collect::<Vec<_>>());
        // One partition key's items, as a Query reads them: a prefix range.
        let lower = long_item_key(1, 2048, b"");
        let upper = long_item_key(1, 2048, b"\xff");
        let range = harness.scan(Bound::Included(lower.clone()), Bound::Excluded(upper.clone()), false, 7);
        let expected: Vec<_> = model.range(lower..upper).take(7).map(|(k, v)| (k.clone(), v.clone())).collect();
        prop_assert!(range == expected);
        for key in model.keys() {
            prop_assert!(harness.run(|tree| tree.delete(key)).is_some());
        }
        harness.checkpoint();
        harness.check_accounting();
        harness.reopen();
        harness.check_accounting();
        prop_assert!(harness.scan(Bound::Unbounded, Bound::Unbounded, false, usize::MAX).is_empty());
    }
}

#[test]
fn many_longest_keys_of_one_partition_key() {
    let mut harness = Harness::new(CACHE_PAGES_MIN);
    let sort_of = |n: u32| {
        let mut sort = format!("{:08}", n.wrapping_mul(2_654_435_761) % 100_000).into_bytes();
        sort.resize(1024, b'-');
        sort
    };
    for n in 0..3000u32 {
        harness.run(|tree| tree.put(&long_item_key(7, 2048, &sort_of(n)), &value_of(n as u16, 100)));
        if n % 700 == 0 {
            harness.checkpoint();
        }
    }
    harness.checkpoint();
    harness.check_accounting();
    harness.reopen();
    let all = harness.scan(Bound::Unbounded, Bound::Unbounded, false, usize::MAX);
    assert_eq!(all.len(), 3000);
    assert!(all.windows(2).all(|pair| pair[0].0 < pair[1].0), "scan out of order");
    assert!(all.iter().all(|(key, _)| key.len() == 16 + 2 + 2048 + 1024));
    for n in (0..3000u32).step_by(2) {
        assert!(harness.run(|tree| tree.delete(&long_item_key(7, 2048, &sort_of(n)))).is_some());
    }
    harness.checkpoint();
    harness.check_accounting();
    for n in 0..3000u32 {
        let got = harness.run(|tree| tree.get(&long_item_key(7, 2048, &sort_of(n))));
        assert_eq!(got, (n % 2 == 1).then(|| value_of(n as u16, 100)), "key {n}");
    }
}
