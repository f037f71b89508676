//! The store against a model (random puts, deletes, batches and scans through checkpoints and
//! reopens), and its answers to what goes wrong: damaged files, undecodable records, bad
//! writes, a damaged WAL tail, a lost checkpoint; replicated mode's promises, snapshots,
//! configurations and change log; scrub and repair of a damaged leaf.

use std::collections::BTreeMap;
use std::ops::Bound;

use proptest::prelude::*;

use super::*;
use crate::command::ConditionalWrite;
use crate::replication::{LocalLog, ReplicationLog};
use crate::testing::{run, scratch_dir};

fn small_config() -> StoreConfig {
    StoreConfig {
        cache_pages: CACHE_PAGES_MIN,
        wal: WalConfig {
            segment_bytes: 512 << 10,
            record_bytes_max: 128 << 10,
            flush_bytes_max: 128 << 10,
            spare_segments_max: 1,
        },
        checkpoint_dirty_pages: 200,
        checkpoint_wal_segments: 3,
        replicated: false,
        quarantine_bad_records: false,
        scrub_interval: None,
        change_trim_interval: None,
    }
}

fn put(key: &[u8], value: &[u8]) -> Command {
    Command::Put { key: key.to_vec(), value: value.to_vec().into() }
}

#[test]
fn writes_survive_reopen_with_and_without_checkpoint() {
    let dir = scratch_dir("store-reopen");
    run(async move {
        let log = LocalLog::new(Store::open(&dir, small_config()).await.unwrap());
        assert_eq!(log.propose_applied(1, put(b"a", b"1")).await.unwrap(), Outcome::Previous(None));
        assert_eq!(log.propose_applied(1, put(b"a", b"2")).await.unwrap(), Outcome::Previous(Some(b"1".to_vec())));
        log.propose(2, put(b"a", b"other partition")).await.unwrap();
        log.store().checkpoint().await.unwrap();
        log.propose(1, put(b"b", b"after checkpoint")).await.unwrap();
        log.propose(1, Command::Delete { key: b"a".to_vec() }).await.unwrap();
        log.store().close().await.unwrap();

        let store = Store::open(&dir, small_config()).await.unwrap();
        assert_eq!(store.get(1, b"a").await.unwrap(), None);
        assert_eq!(store.get(1, b"b").await.unwrap(), Some(b"after checkpoint".to_vec()));
        assert_eq!(store.get(2, b"a").await.unwrap(), Some(b"other partition".to_vec()));
        assert_eq!(store.applied_slot(1), 4);
        assert_eq!(store.partitions().await.unwrap(), [1, 2]);
        assert_eq!(store.applied_slot(2), 1);
        let entries = store.scan(1, Bound::Unbounded, Bound::Unbounded, false, 10).await.unwrap();
        assert_eq!(entries, vec![(b"b".to_vec(), b"after checkpoint".to_vec())]);
        store.close().await.unwrap();
    });
}

/// Proposals resolve once durable, before they are applied; a read that follows must still
/// see every one of them (the read barrier), and the applies must all happen.
#[test]
fn acknowledged_writes_are_visible_to_the_next_read() {
    let dir = scratch_dir("store-read-barrier");
    run(async move {
        let log = Rc::new(LocalLog::new(Store::open(&dir, small_config()).await.unwrap()));
        for round in 0..20u32 {
            let writers: Vec<_> = (0..64u32)
                .map(|writer| {
                    let log = log.clone();
                    glommio::spawn_local(async move {
                        let key = format!("k{writer}");
                        log.propose(1, put(key.as_bytes(), &round.to_le_bytes())).await.unwrap();
                        log.store().get(1, key.as_bytes()).await.unwrap()
                    })
                })
                .collect();
            for writer in writers {
                assert_eq!(writer.await, Some(round.to_le_bytes().to_vec()));
            }
            let entries = log.store().scan(1, Bound::Unbounded, Bound::Unbounded, false, 100).await.unwrap();
            assert_eq!(entries.len(), 64);
            assert!(entries.iter().all(|(_, value)| value == &round.to_le_bytes()));
        }
        log.store().close().await.unwrap();
    });
}

#[derive(Clone, Debug)]
enum Op {
    Put(u64, u16, usize),
    Delete(u64, u16),
    Batch(u64, Vec<(u16, usize)>),
    Scan(u64, u16, bool, usize),
    Checkpoint,
    Reopen,
}

fn key(k: u16) -> Vec<u8> {
    format!("item-{k:05}").into_bytes()
}

fn value(k: u16, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u16 ^ k) as u8).collect()
}

fn op() -> impl Strategy<Value = Op> {
    let partition = 0u64..3;
    let k = 0u16..800;
    let len = prop_oneof![9 => 1usize..600, 1 => 600usize..12_000];
    prop_oneof![
        20 => (partition.clone(), k.clone(), len.clone()).prop_map(|(p, k, l)| Op::Put(p, k, l)),
        6 => (partition.clone(), k.clone()).prop_map(|(p, k)| Op::Delete(p, k)),
        3 => (partition.clone(), proptest::collection::vec((k.clone(), len), 1..6)).prop_map(|(p, b)| Op::Batch(p, b)),
        3 => (partition, k, any::<bool>(), 1usize..40).prop_map(|(p, k, r, l)| Op::Scan(p, k, r, l)),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The store against a BTreeMap model, through reopen, checkpoints and a small cache.
    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..300)) {
        let dir = scratch_dir("store-model");
        run(async move {
            let mut log = LocalLog::new(Store::open(&dir, small_config()).await.unwrap());
            let mut model: BTreeMap<(u64, Vec<u8>), Vec<u8>> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Put(p, k, len) => {
                        let previous = log.propose_applied(p, put(&key(k), &value(k, len))).await.unwrap();
                        assert_eq!(previous, Outcome::Previous(model.insert((p, key(k)), value(k, len))));
                    }
                    Op::Delete(p, k) => {
                        let previous = log.propose_applied(p, Command::Delete { key: key(k) }).await.unwrap();
                        assert_eq!(previous, Outcome::Previous(model.remove(&(p, key(k)))));
                    }
                    Op::Batch(p, items) => {
                        let commands = items.iter().map(|&(k, len)| put(&key(k), &value(k, len))).collect();
                        log.propose(p, Command::Batch(commands)).await.unwrap();
                        for (k, len) in items {
                            model.insert((p, key(k)), value(k, len));
                        }
                    }
                    Op::Scan(p, k, reverse, limit) => {
                        let bound = key(k);
                        let (lower, upper) = if reverse {
                            (Bound::Unbounded, Bound::Included(bound.as_slice()))
                        } else {
                            (Bound::Included(bound.as_slice()), Bound::Unbounded)
                        };
                        let got = log.store().scan(p, lower, upper, reverse, limit).await.unwrap();
                        let range = model.range((p, bound.clone())..(p + 1, Vec::new()));
                        let expected: Vec<(Vec<u8>, Vec<u8>)> = if reverse {
                            model.range((p, Vec::new())..=(p, bound.clone())).rev().take(limit).map(|((_, k), v)| (k.clone(), v.clone())).collect()
                        } else {
                            range.take(limit).map(|((_, k), v)| (k.clone(), v.clone())).collect()
                        };
                        assert_eq!(got, expected);
                    }
                    Op::Checkpoint => log.store().checkpoint().await.unwrap(),
                    Op::Reopen => {
                        log.store().close().await.unwrap();
                        log = LocalLog::new(Store::open(&dir, small_config()).await.unwrap());
                        check_counts(log.store(), &model).await;
                    }
                }
            }
            check_counts(log.store(), &model).await;
            for ((p, k), v) in &model {
                assert_eq!(log.store().get(*p, k).await.unwrap().as_ref(), Some(v));
            }
            let partitions: Vec<u64> = model.keys().map(|(p, _)| *p).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
            assert_eq!(log.store().partitions().await.unwrap(), partitions);
            log.store().close().await.unwrap();
        });
    }
}

/// Every partition's item count and bytes, as the store keeps them, match the model's.
async fn check_counts(store: &Store, model: &BTreeMap<(u64, Vec<u8>), Vec<u8>>) {
    for partition in 0..4 {
        let entries = model.iter().filter(|((p, _), _)| *p == partition);
        let bytes = entries.clone().map(|((_, k), v)| (k.len() + v.len()) as u64).sum();
        let meta = store.partition_meta(partition).await.unwrap();
        assert_eq!((meta.items, meta.bytes), (entries.count() as u64, bytes), "partition {partition}");
    }
}

#[test]
fn overwrites_keep_the_files_bounded() {
    let dir = scratch_dir("store-bounded");
    run(async move {
        let log = LocalLog::new(Store::open(&dir, small_config()).await.unwrap());
        let mut pages = Vec::new();
        for round in 0..100u16 {
            for k in 0..300u16 {
                log.propose(1, put(&key(k), &value(k ^ round, 900))).await.unwrap();
            }
            pages.push(log.store().tree_pages());
        }
        // A leak would grow the file by the pages of every overwrite (hundreds per round);
        // reuse keeps it flat once warm. The page count is a high-water mark: while a
        // checkpoint is being written the pages it releases cannot be reused yet, so it can
        // creep by a few pages with I/O timing (the B+tree's own test checks exactly that no
        // page is ever lost).
        assert!(pages[99] - pages[30] <= pages[30] / 20, "tree pages per round: {pages:?}");
        let wal_files = std::fs::read_dir(dir.join("wal")).unwrap().count();
        assert!(wal_files <= 1 + 3 + 1, "{wal_files} WAL files");
        log.store().close().await.unwrap();
    });
}

fn copy_dir(source: &std::path::Path, target: &std::path::Path) {
    let _ = std::fs::remove_dir_all(target);
    std::fs::create_dir_all(target.join("wal")).unwrap();
    for sub in ["", "wal"] {
        for entry in std::fs::read_dir(source.join(sub)).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), target.join(sub).join(entry.file_name())).unwrap();
            }
        }
    }
}

/// Flips bytes in, and truncates, the checkpoint file and the WAL: every read either returns
/// exactly what was written or reports an error; nothing panics, nothing returns wrong data.
#[test]
fn damaged_files_give_errors_or_correct_data_never_wrong_data() {
    let pristine = scratch_dir("store-damage-pristine");
    let keys: Vec<u16> = (0..600).collect();
    {
        let dir = pristine.clone();
        let keys = keys.clone();
        run(async move {
            let log = LocalLog::new(Store::open(&dir, small_config()).await.unwrap());
            for &k in &keys[..400] {
                log.propose(1, put(&key(k), &value(k, 50 + usize::from(k) * 7 % 3000))).await.unwrap();
            }
            log.store().checkpoint().await.unwrap();
            for &k in &keys[400..] {
                log.propose(1, put(&key(k), &value(k, 50 + usize::from(k) * 7 % 3000))).await.unwrap();
            }
            log.store().close().await.unwrap();
        });
    }
    let wal_file = std::fs::read_dir(pristine.join("wal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .max_by_key(|path| std::fs::metadata(path).unwrap().modified().unwrap())
        .unwrap();
    let wal_name = wal_file.file_name().unwrap().to_owned();
    let tree_len = std::fs::metadata(pristine.join("tree.db")).unwrap().len();
    let mut random = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random
    };
    let (mut errors, mut clean) = (0, 0);
    for case in 0..120 {
        let dir = scratch_dir("store-damage");
        copy_dir(&pristine, &dir);
        let target = if case % 2 == 0 { dir.join("tree.db") } else { dir.join("wal").join(&wal_name) };
        let mut bytes = std::fs::read(&target).unwrap();
        let used = if case % 2 == 0 { tree_len as usize } else { 160 << 10 };
        if case % 10 == 9 {
            bytes.truncate(next() as usize % used);
        } else {
            let at = next() as usize % used.min(bytes.len());
            bytes[at] ^= 1 << (next() % 8);
        }
        std::fs::write(&target, &bytes).unwrap();
        let keys = keys.clone();
        let wal_damage = case % 2 == 1;
        let outcome = run(async move {
            let store = match Store::open(&dir, small_config()).await {
                Ok(store) => store,
                Err(error) => return Err(error.to_string()),
            };
            let mut failed = None;
            for &k in &keys {
                match store.get(1, &key(k)).await {
                    Ok(Some(found)) => {
                        assert_eq!(found, value(k, 50 + usize::from(k) * 7 % 3000), "wrong value for key {k}")
                    }
                    // A damaged final flush is indistinguishable from a torn write: its records
                    // are gone, as an unacknowledged write would be.
                    Ok(None) => assert!(wal_damage && k >= 400, "key {k} vanished silently"),
                    Err(error) => failed = Some(error.to_string()),
                }
            }
            let _ = store.close().await;
            failed.map_or(Ok(()), Err)
        });
        match outcome {
            Ok(()) => clean += 1,
            Err(message) => {
                assert!(message.contains("corruption") || message.contains("poisoned"), "unexpected error: {message}");
                errors += 1;
            }
        }
    }
    assert!(errors > 10 && clean > 10, "{errors} cases reported damage, {clean} read cleanly");
}

#[test]
fn bad_writes_get_typed_errors_and_change_nothing() {
    let dir = scratch_dir("store-bad-writes");
    run(async move {
        let log = LocalLog::new(Store::open(&dir, small_config()).await.unwrap());
        let long = vec![b'k'; KEY_LEN_MAX + 1];
        let error = log.propose(1, put(&long, b"v")).await.unwrap_err();
        assert!(matches!(&error, Error::Validation(message) if message.contains("exceeds")), "{error}");
        let error = log.propose(u64::MAX, put(b"k", b"v")).await.unwrap_err();
        assert!(matches!(&error, Error::Validation(message) if message.contains("reserved")), "{error}");
        let huge = vec![0u8; small_config().wal.record_bytes_max + 1];
        let error = log.propose(1, put(b"k", &huge)).await.unwrap_err();
        assert!(matches!(&error, Error::Validation(message) if message.contains("exceeds")), "{error}");
        // A command the replay decoder would refuse (an empty set in a condition's value,
        // which the edge should have refused) is refused before it is logged.
        let names = std::collections::HashMap::new();
        let values = std::collections::HashMap::from([(
            ":e".to_string(),
            crate::AttributeValue::Ss(std::collections::BTreeSet::new()),
        )]);
        let condition = crate::expr::parse_condition("s = :e", &mut crate::expr::Placeholders::new(&names, &values));
        let unreplayable = Command::conditional(b"k".to_vec(), Some(condition.unwrap()), ConditionalWrite::Delete);
        let error = log.propose(1, unreplayable).await.unwrap_err();
        assert!(matches!(&error, Error::Validation(message) if message.contains("would not replay")), "{error}");
        // The rejected writes consumed no slot and left the store working.
        log.propose(1, put(b"k", b"v")).await.unwrap();
        assert_eq!(log.store().get(1, b"k").await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(log.store().applied_slot(1), 1);
        log.store().close().await.unwrap();
        // And nothing it refused is in the log: the store reopens.
        let store = Store::open(&dir, small_config()).await.unwrap();
        assert_eq!(store.get(1, b"k").await.unwrap(), Some(b"v".to_vec()));
        store.close().await.unwrap();
    });
}

/// A WAL record whose checksum is good but whose command does not decode (a bug, not disk
/// damage) holds its partition alone: the core's other partitions serve, the record and the
/// ones after it stay in the log through checkpoints, and with `quarantine_bad_records` it is
/// skipped, saved aside, and the partition serves again with the records that followed it.
#[test]
fn undecodable_records_hold_their_partition_alone() {
    let dir = scratch_dir("store-undecodable");
    let image = scratch_dir("store-undecodable-image");
    {
        let (dir, image) = (dir.clone(), image.clone());
        run(async move {
            let log = LocalLog::new(Store::open(&dir, small_config()).await.unwrap());
            log.propose(1, put(b"a", b"1")).await.unwrap();
            log.propose(2, put(b"b", b"1")).await.unwrap();
            // Written as a buggy version might have: a put (format 1, kind 1) whose value is cut off.
            let wal = log.store().wal();
            wal.append(1, 2, RECORD_COMMAND, &[1, 1, 3, b'b', b'a', b'd']).unwrap();
            let mut good = Vec::new();
            Stamped::now(put(b"c", b"after")).encode_payload(&mut good).unwrap();
            wal.append(1, 3, RECORD_COMMAND, &good).unwrap();
            let mut other = Vec::new();
            Stamped::now(put(b"b", b"2")).encode_payload(&mut other).unwrap();
            let lsn = wal.append(2, 2, RECORD_COMMAND, &other).unwrap();
            wal.durable(lsn).await.unwrap();
            copy_dir(&dir, &image);
            // The image is the crash; this store, with records it never queued, is abandoned.
            std::mem::forget(log);
        });
    }
    run(async move {
        let store = Store::open(&image, small_config()).await.unwrap();
        let error = store.get(1, b"a").await.unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, Error::Held { partition: 1, .. }), "{message}");
        assert!(
            message.contains("valid checksum") && message.contains("\"bad\"") && message.contains("slot 2"),
            "{message}"
        );
        assert!(store.submit(1, 4, put(b"x", b"y"), false).is_err(), "a held partition takes no writes");
        assert_eq!(store.get(2, b"b").await.unwrap(), Some(b"2".to_vec()), "the other partition serves");
        // Checkpoints do not cover the held record: it is still there after a restart.
        let log = LocalLog::new(store);
        for round in 0..300u32 {
            log.propose(2, put(format!("k{round}").as_bytes(), &[7; 900])).await.unwrap();
        }
        log.store().checkpoint().await.unwrap();
        log.store().close().await.unwrap();
        let store = Store::open(&image, small_config()).await.unwrap();
        assert!(matches!(store.get(1, b"a").await, Err(Error::Held { .. })));
        store.close().await.unwrap();
        // The operator's way out: skip it, keep its payload, serve what followed.
        let config = StoreConfig { quarantine_bad_records: true, ..small_config() };
        let store = Store::open(&image, config.clone()).await.unwrap();
        assert_eq!(store.get(1, b"a").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get(1, b"c").await.unwrap(), Some(b"after".to_vec()));
        assert_eq!(store.get(2, b"k299").await.unwrap(), Some(vec![7; 900]));
        let saved = std::fs::read(image.join("quarantined").join("partition-1-lsn-3.bin")).unwrap();
        assert_eq!(saved[2..], [3, b'b', b'a', b'd']);
        store.close().await.unwrap();
        let store = Store::open(&image, small_config()).await.unwrap();
        assert_eq!(store.get(1, b"c").await.unwrap(), Some(b"after".to_vec()), "skipped for good once checkpointed");
        store.close().await.unwrap();
    });
}

/// Items at DynamoDB's 400 KB limit span 101 overflow pages each; with the smallest cache
/// they are written, checkpointed, reopened and read back from disk intact.
#[test]
fn largest_items_round_trip_through_a_small_cache() {
    let dir = scratch_dir("store-large-items");
    let config = StoreConfig {
        wal: WalConfig { record_bytes_max: 512 << 10, segment_bytes: 2 << 20, ..small_config().wal },
        ..small_config()
    };
    run(async move {
        let big = |k: u16| value(k, crate::value::ITEM_SIZE_MAX + 30);
        let log = LocalLog::new(Store::open(&dir, config.clone()).await.unwrap());
        for k in 0..12 {
            log.propose(1, put(&key(k), &big(k))).await.unwrap();
        }
        log.store().checkpoint().await.unwrap();
        for k in 12..16 {
            log.propose(1, put(&key(k), &big(k))).await.unwrap();
        }
        log.store().close().await.unwrap();
        let store = Store::open(&dir, config).await.unwrap();
        for k in 0..16 {
            assert_eq!(store.get(1, &key(k)).await.unwrap(), Some(big(k)), "item {k}");
        }
        assert!(store.page_reads() > 100, "values were read back from disk");
        store.close().await.unwrap();
    });
}

/// A table's longest key as the store holds it: hash, a 2048-byte partition key (length first),
/// a 1024-byte sort key that differs early.
fn longest_key(partition: u8, n: u32) -> Vec<u8> {
    let mut key = vec![0x5A; 8];
    key.extend_from_slice(&2048u16.to_be_bytes());
    key.extend(std::iter::repeat_n(partition, 2048));
    let mut sort = format!("{:06}", n.wrapping_mul(7919) % 1_000_000).into_bytes();
    sort.resize(1024, b'-');
    key.extend_from_slice(&sort);
    key
}

#[test]
fn longest_keys_survive_replay_and_snapshots() {
    let dir = scratch_dir("store-long-keys");
    let (leader_dir, follower_dir) = (scratch_dir("store-long-keys-leader"), scratch_dir("store-long-keys-follower"));
    run(async move {
        let log = LocalLog::new(Store::open(&dir, small_config()).await.unwrap());
        // The store's own limit takes the longest key a table has, and more.
        let widest = vec![b'w'; KEY_LEN_MAX];
        log.propose(1, put(&widest, b"widest")).await.unwrap();
        for n in 0..300u32 {
            log.propose(1, put(&longest_key(1, n), &value(n as u16, 50))).await.unwrap();
            if n == 150 {
                log.store().checkpoint().await.unwrap();
            }
        }
        for n in (0..300u32).step_by(3) {
            log.propose(1, Command::Delete { key: longest_key(1, n) }).await.unwrap();
        }
        // Closed without a checkpoint of the last half: reopening replays it from the log.
        log.store().close().await.unwrap();
        let store = Store::open(&dir, small_config()).await.unwrap();
        let mut expected: Vec<(Vec<u8>, Vec<u8>)> =
            (0..300u32).filter(|n| n % 3 != 0).map(|n| (longest_key(1, n), value(n as u16, 50))).collect();
        expected.sort();
        expected.push((widest.clone(), b"widest".to_vec()));
        let all = store.scan(1, Bound::Unbounded, Bound::Unbounded, false, usize::MAX).await.unwrap();
        assert!(all == expected, "{} entries after replay", all.len());
        for n in 0..300u32 {
            let want = (n % 3 != 0).then(|| value(n as u16, 50));
            assert_eq!(store.get(1, &longest_key(1, n)).await.unwrap(), want, "key {n}");
        }
        // A page of a query restarted after a long key, as ExclusiveStartKey does.
        let after = &expected[40].0;
        let page = store.scan(1, Bound::Excluded(after), Bound::Unbounded, false, 5).await.unwrap();
        assert!(page == expected[41..46]);
        let back = store.scan(1, Bound::Unbounded, Bound::Excluded(after), true, 5).await.unwrap();
        assert!(back.iter().map(|(key, _)| key).eq(expected[35..40].iter().rev().map(|(key, _)| key)));
        store.checkpoint().await.unwrap();
        store.close().await.unwrap();

        // A snapshot of long keys (a replicated store's) installs on another store.
        let leader = Store::open(&leader_dir, replicated_config()).await.unwrap();
        for (slot, (key, value)) in expected.iter().enumerate() {
            leader.apply_chosen_command(1, slot as u64 + 1, put(key, value), false).unwrap();
        }
        leader.checkpoint().await.unwrap();
        let mut snapshot = leader.snapshot(1).await.unwrap();
        let follower = Store::open(&follower_dir, replicated_config()).await.unwrap();
        follower.install_begin(1).await.unwrap();
        loop {
            let chunk = snapshot.next_chunk(8192).await.unwrap();
            if chunk.is_empty() {
                break;
            }
            follower.install_entries(1, chunk).await.unwrap();
        }
        let meta = snapshot.meta();
        drop(snapshot);
        follower.install_end(1, meta.applied_slot, meta.items, meta.bytes, vec![paxos::Member::full(1)]).await.unwrap();
        assert!(follower.scan(1, Bound::Unbounded, Bound::Unbounded, false, usize::MAX).await.unwrap() == expected);
        follower.close().await.unwrap();
        leader.close().await.unwrap();
    });
}

/// A store written before item counts were kept holds only the applied slot in a partition's
/// metadata; opening it counts the partition once and keeps the counts from then on.
#[test]
fn partition_counts_are_rebuilt_from_the_applied_slot_alone() {
    let dir = scratch_dir("store-legacy-meta");
    run(async move {
        let log = LocalLog::new(Store::open(&dir, small_config()).await.unwrap());
        for k in 0..50u16 {
            log.propose(1, put(&key(k), &value(k, 100 + usize::from(k)))).await.unwrap();
        }
        log.store().checkpoint().await.unwrap();
        let expected = log.store().partition_meta(1).await.unwrap();
        assert_eq!(expected.items, 50);
        // Rewrite the metadata as the older layout had it, then make that durable.
        let legacy = expected.applied_slot.to_le_bytes();
        log.store().inner.with_tree(|tree| tree.put(&meta_key(1), &legacy).map(drop)).await.unwrap();
        log.store().inner.partition_mut(1).unsaved.meta = false;
        log.store().checkpoint().await.unwrap();
        log.store().close().await.unwrap();

        let store = Store::open(&dir, small_config()).await.unwrap();
        assert_eq!(store.partition_meta(1).await.unwrap(), expected);
        store.checkpoint().await.unwrap();
        store.close().await.unwrap();
        let store = Store::open(&dir, small_config()).await.unwrap();
        assert_eq!(store.partition_meta(1).await.unwrap(), expected);
        store.close().await.unwrap();
    });
}

/// Conditional writes: the condition is checked when the record is applied, so among puts
/// proposed together only the first finds the key absent; updates build on each other and
/// create the item from its key when it is absent; an update that does not fit the stored
/// item writes nothing; everything survives a reopen (the records carry the condition).
#[test]
fn conditional_writes_are_checked_at_apply() {
    use crate::codec::{decode_item, encode_item, ItemMeta};
    use crate::command::{ConditionalCommand, ConditionalWrite};
    use crate::expr::{parse_condition, parse_update, Placeholders};
    use crate::value::{AttributeValue, Item};
    use std::collections::HashMap;

    let dir = scratch_dir("store-conditional");
    let number = |n: i64| AttributeValue::N(crate::Number::from(n));
    let placeholders = move || (HashMap::new(), HashMap::from([(":one".to_string(), number(1))]));
    let condition = move |text: &str| {
        let (names, values) = placeholders();
        parse_condition(text, &mut Placeholders::new(&names, &values)).unwrap()
    };
    let update = move |text: &str| {
        let (names, values) = placeholders();
        parse_update(text, &mut Placeholders::new(&names, &values)).unwrap()
    };
    let key_item = Item::from([("id".to_string(), AttributeValue::S("k".into()))]);
    let encoded = |item: &Item| {
        let mut out = Vec::new();
        encode_item(item, ItemMeta::default(), &mut out);
        out
    };
    run(async move {
        let log = Rc::new(LocalLog::new(Store::open(&dir, small_config()).await.unwrap()));
        // Eight put-if-absent writes proposed at once: exactly one passes.
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let mut item = key_item.clone();
                item.insert("who".into(), number(i));
                let command = Command::Conditional(Box::new(ConditionalCommand {
                    key: b"k".to_vec(),
                    condition: Some(condition("attribute_not_exists(id)")),
                    write: ConditionalWrite::Put(encoded(&item)),
                }));
                let log = log.clone();
                glommio::spawn_local(async move { log.propose_applied(1, command).await.unwrap() })
            })
            .collect();
        let mut passed = 0;
        for racer in racers {
            if let Outcome::Conditional { passed: true, .. } = racer.await {
                passed += 1;
            }
        }
        assert_eq!(passed, 1);

        // Counter updates, each a conditional record, add up exactly.
        let adds: Vec<_> = (0..20)
            .map(|_| {
                let command = Command::Conditional(Box::new(ConditionalCommand {
                    key: b"k".to_vec(),
                    condition: Some(condition("attribute_exists(id)")),
                    write: ConditionalWrite::Update {
                        key_item: key_item.clone(),
                        update: update("ADD hits :one"),
                        write_timestamp: 7,
                    },
                }));
                let log = log.clone();
                glommio::spawn_local(async move { log.propose_applied(1, command).await.unwrap() })
            })
            .collect();
        for add in adds {
            assert!(matches!(add.await, Outcome::Conditional { passed: true, .. }));
        }
        // An update that does not fit the stored item (ADD to a string) writes nothing.
        let unfit = Command::Conditional(Box::new(ConditionalCommand {
            key: b"k".to_vec(),
            condition: None,
            write: ConditionalWrite::Update {
                key_item: key_item.clone(),
                update: update("ADD id :one"),
                write_timestamp: 7,
            },
        }));
        assert!(
            matches!(log.propose_applied(1, unfit).await.unwrap(), Outcome::Invalid(reason) if reason.contains("incorrect data type"))
        );
        // A failed condition writes nothing and reports the stored item.
        let refused = Command::Conditional(Box::new(ConditionalCommand {
            key: b"k".to_vec(),
            condition: Some(condition("hits = :one")),
            write: ConditionalWrite::Delete,
        }));
        assert!(matches!(
            log.propose_applied(1, refused).await.unwrap(),
            Outcome::Conditional { passed: false, old: Some(_), new: None }
        ));
        // An update of an absent item starts from its key.
        let fresh_key = Item::from([("id".to_string(), AttributeValue::S("new".into()))]);
        let create = Command::Conditional(Box::new(ConditionalCommand {
            key: b"new".to_vec(),
            condition: Some(condition("attribute_not_exists(id)")),
            write: ConditionalWrite::Update {
                key_item: fresh_key.clone(),
                update: update("SET hits = :one"),
                write_timestamp: 9,
            },
        }));
        assert!(matches!(
            log.propose_applied(1, create).await.unwrap(),
            Outcome::Conditional { passed: true, old: None, .. }
        ));
        log.store().close().await.unwrap();

        let store = Store::open(&dir, small_config()).await.unwrap();
        let (item, _) = decode_item(&store.get(1, b"k").await.unwrap().unwrap()).unwrap();
        assert_eq!(item["hits"], number(20));
        assert_eq!(item["id"], AttributeValue::S("k".into()));
        let (fresh, meta) = decode_item(&store.get(1, b"new").await.unwrap().unwrap()).unwrap();
        assert_eq!(
            fresh,
            Item::from([("id".to_string(), AttributeValue::S("new".into())), ("hits".to_string(), number(1))])
        );
        assert_eq!(meta.write_timestamp, 9);
        store.close().await.unwrap();
    });
}

/// Chosen commands, stamped as a leader would.
trait ApplyCommand {
    fn apply_chosen_command(&self, partition: PartitionId, slot: u64, command: Command, want: bool) -> Result<u64>;
}

impl ApplyCommand for Store {
    fn apply_chosen_command(&self, partition: PartitionId, slot: u64, command: Command, want: bool) -> Result<u64> {
        self.apply_chosen(partition, slot, Stamped::now(command), want)
    }
}

fn replicated_config() -> StoreConfig {
    StoreConfig { replicated: true, ..small_config() }
}

fn chosen(slot: u64, round: u64, command: &Command) -> (u64, paxos::Entry) {
    let mut bytes = Vec::new();
    Stamped { at_us: slot, command: command.clone() }.encode_payload(&mut bytes).unwrap();
    let value = paxos::Value::Command { id: slot, bytes: bytes.into() };
    (slot, paxos::Entry { ballot: Ballot { round, replica: 1 }, value })
}

/// Replicated mode: promises and accepted entries come back after a restart for the replica
/// to start from; chosen entries are applied when the replication layer says, and only those
/// past the partition's applied slot come back; the promise survives checkpoints that recycle
/// the WAL it was written in.
#[test]
fn replicated_stores_keep_promises_and_unapplied_entries() {
    let dir = scratch_dir("store-replicated");
    run(async move {
        let store = Store::open(&dir, replicated_config()).await.unwrap();
        assert!(store.submit(1, 1, put(b"a", b"1"), false).is_err(), "a replicated store refuses submit");
        let promise = Ballot { round: 3, replica: 2 };
        let entries: Vec<_> = (1..=3).map(|slot| chosen(slot, 3, &put(b"k", &[slot as u8]))).collect();
        let lsn = store.persist_paxos(7, Some(promise), &entries).unwrap();
        store.durable(lsn).await.unwrap();
        // Slot 1 is chosen and applied; 2 and 3 are only accepted.
        let ticket = store.apply_chosen_command(7, 1, put(b"k", &[1]), true).unwrap();
        assert_eq!(store.outcome(ticket).await.unwrap(), Outcome::Previous(None));
        assert_eq!(store.get(7, b"k").await.unwrap(), Some(vec![1]));
        store.close().await.unwrap();

        let store = Store::open(&dir, replicated_config()).await.unwrap();
        // Nothing is applied at recovery, and without a checkpoint the tree lost the apply of
        // slot 1: the replica applies it again once it learns the commit index.
        assert_eq!((store.get(7, b"k").await.unwrap(), store.applied_slot(7)), (None, 0));
        let recovered = store.take_recovered_paxos();
        assert_eq!(recovered[&7].promised, promise);
        assert_eq!(recovered[&7].entries.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
        for slot in 1..=3u64 {
            store.apply_chosen_command(7, slot, put(b"k", &[slot as u8]), false).unwrap();
        }
        assert_eq!(store.get(7, b"k").await.unwrap(), Some(vec![3]));
        // Another partition fills the WAL with chosen, applied entries, before and after two
        // entries of partition 7 that stay unapplied; checkpoints recycle what is before them.
        let filler = vec![0u8; 60 << 10];
        let fill = |range: std::ops::RangeInclusive<u64>| {
            let store = store.clone();
            let filler = filler.clone();
            async move {
                for slot in range {
                    let command = put(&slot.to_be_bytes(), &filler);
                    let lsn = store.persist_paxos(8, None, &[chosen(slot, 1, &command)]).unwrap();
                    store.durable(lsn).await.unwrap();
                    store.apply_chosen_command(8, slot, command, false).unwrap();
                }
            }
        };
        fill(1..=30).await;
        let pending = [chosen(4, 3, &put(b"k", &[4])), chosen(5, 3, &put(b"k", &[5]))];
        let lsn = store.persist_paxos(7, None, &pending).unwrap();
        store.durable(lsn).await.unwrap();
        fill(31..=60).await;
        store.checkpoint().await.unwrap();
        let segments = store.wal().segments_in_use();
        assert!(segments < 60 * 60 / 512, "the WAL before the unapplied entries was recycled: {segments} segments");
        store.close().await.unwrap();

        let store = Store::open(&dir, replicated_config()).await.unwrap();
        let recovered = store.take_recovered_paxos();
        assert_eq!(recovered[&7].promised, promise, "the promise is in the checkpoint");
        assert_eq!(
            recovered[&7].entries.keys().copied().collect::<Vec<_>>(),
            [4, 5],
            "unapplied entries are never recycled; applied ones are in the tree"
        );
        assert_eq!(recovered.get(&8).map_or(0, |durable| durable.entries.len()), 0);
        assert_eq!((store.applied_slot(7), store.applied_slot(8)), (3, 60));
        // Applying them now, and a checkpoint, leaves nothing to recover.
        for slot in 4..=5u64 {
            store.apply_chosen_command(7, slot, put(b"k", &[slot as u8]), false).unwrap();
        }
        store.checkpoint().await.unwrap();
        store.close().await.unwrap();
        let store = Store::open(&dir, replicated_config()).await.unwrap();
        let recovered = store.take_recovered_paxos();
        assert!(recovered.values().all(|durable| durable.entries.is_empty()));
        assert_eq!(recovered[&7].promised, promise);
        assert_eq!(store.get(7, b"k").await.unwrap(), Some(vec![5]));
        assert_eq!((store.applied_slot(7), store.partition_meta(7).await.unwrap().promised), (5, promise));
        let lsn = store.persist_paxos(7, None, &[chosen(6, 3, &put(b"k", &[6]))]).unwrap();
        store.durable(lsn).await.unwrap();
        store.close().await.unwrap();
        // A store of the other mode refuses these records by name.
        let error = Store::open(&dir, small_config()).await.err().expect("a group-of-one store refuses paxos records");
        assert!(error.to_string().contains("kind 2"), "{error}");
    });
}

/// Flips a byte of the one WAL record in `dir` that holds `needle` (the last flush).
fn damage_record_holding(dir: &std::path::Path, needle: &[u8]) {
    let mut flipped = 0;
    for entry in std::fs::read_dir(dir.join("wal")).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(needle.len()).position(|window| window == needle) {
            bytes[at] ^= 0x20;
            std::fs::write(&path, &bytes).unwrap();
            flipped += 1;
        }
    }
    assert_eq!(flipped, 1, "one record holds the needle");
}

/// Replicated mode: a damaged last flush makes every partition amnesiac, those without
/// metadata too, durably across restarts; a partition leaves it by rejoining, and once the
/// store was told every partition it holds, a partition without metadata (a new one) is not
/// amnesiac, while one it was told of stays so until it rejoins.
#[test]
fn a_damaged_wal_tail_keeps_replicas_amnesiac_until_they_rejoin() {
    let dir = scratch_dir("store-amnesiac");
    run(async move {
        let store = Store::open(&dir, replicated_config()).await.unwrap();
        store.apply_chosen_command(7, 1, put(b"k", b"applied"), false).unwrap();
        store.checkpoint().await.unwrap();
        assert!(!store.amnesiac(7) && !store.amnesiac(8));
        let lsn = store
            .persist_paxos(8, Some(Ballot { round: 4, replica: 2 }), &[chosen(1, 4, &put(b"k", b"needle-tail"))])
            .unwrap();
        store.durable(lsn).await.unwrap();
        store.close().await.unwrap();
        damage_record_holding(&dir, b"needle-tail");

        let store = Store::open(&dir, replicated_config()).await.unwrap();
        // Partition 8's promise and entry are gone with the record; 7 and 9 could have had one.
        assert!(store.take_recovered_paxos().get(&8).is_none_or(|durable| durable.entries.is_empty()));
        assert!(store.amnesiac(7) && store.amnesiac(8) && store.amnesiac(9));
        store.rejoined(7);
        assert!(!store.amnesiac(7));
        store.checkpoint().await.unwrap();
        store.close().await.unwrap();

        let store = Store::open(&dir, replicated_config()).await.unwrap();
        assert!(!store.amnesiac(7), "the rejoin was checkpointed");
        assert!(store.amnesiac(8) && store.amnesiac(9), "partitions without metadata stay amnesiac across starts");
        store.partitions_known([7, 8]);
        assert!(store.amnesiac(8) && !store.amnesiac(9), "9 is not held here: new since");
        // The record of it follows a checkpoint (in a task): wait for one more to have run.
        store.checkpoint().await.unwrap();
        store.checkpoint().await.unwrap();
        store.close().await.unwrap();

        let store = Store::open(&dir, replicated_config()).await.unwrap();
        assert!(!store.amnesiac(7) && store.amnesiac(8) && !store.amnesiac(9));
        store.rejoined(8);
        store.checkpoint().await.unwrap();
        store.close().await.unwrap();
        let store = Store::open(&dir, replicated_config()).await.unwrap();
        assert!(!store.amnesiac(7) && !store.amnesiac(8) && !store.amnesiac(9));
        store.close().await.unwrap();
    });
}

/// Replicated mode: a snapshot reads a partition as the durable checkpoint holds it while
/// writes and checkpoints go on; installing one replaces the receiver's partition, refuses
/// reads until whole, survives a crash midway as "still installing" (never as a partial
/// partition that looks whole), and is refused when its counts do not match.
#[test]
fn snapshots_read_a_checkpoint_and_install_whole_or_not_at_all() {
    let (leader_dir, follower_dir) = (scratch_dir("store-snapshot-leader"), scratch_dir("store-snapshot-follower"));
    run(async move {
        let leader = Store::open(&leader_dir, replicated_config()).await.unwrap();
        let value = |slot: u64| vec![slot as u8; 300 + (slot as usize % 7) * 100];
        for slot in 1..=500u64 {
            leader.apply_chosen_command(7, slot, put(format!("k{slot:04}").as_bytes(), &value(slot)), false).unwrap();
            leader.apply_chosen_command(8, slot, put(b"other", &value(slot)), false).unwrap();
        }
        leader.checkpoint().await.unwrap();
        let expected = leader.scan(7, Bound::Unbounded, Bound::Unbounded, false, usize::MAX).await.unwrap();
        let mut snapshot = leader.snapshot(7).await.unwrap();
        assert_eq!((snapshot.meta().applied_slot, snapshot.meta().items), (500, 500));
        let mut streamed = Vec::new();
        let mut next = 501u64;
        loop {
            let chunk = snapshot.next_chunk(4096).await.unwrap();
            if chunk.is_empty() {
                break;
            }
            streamed.push(chunk);
            // Overwrites, deletes and checkpoints between chunks change nothing the snapshot reads.
            for _ in 0..20 {
                let key = format!("k{:04}", next % 500 + 1);
                let command = if next.is_multiple_of(3) {
                    Command::Delete { key: key.into_bytes() }
                } else {
                    put(key.as_bytes(), &value(next + 1))
                };
                leader.apply_chosen_command(7, next, command, false).unwrap();
                next += 1;
            }
            leader.checkpoint().await.unwrap();
        }
        assert!(streamed.len() > 10, "{} chunks", streamed.len());
        assert!(streamed.concat() == expected, "the snapshot is not the checkpoint's image");
        let meta = snapshot.meta();
        drop(snapshot);

        let follower = Store::open(&follower_dir, replicated_config()).await.unwrap();
        for slot in 1..=10u64 {
            follower.apply_chosen_command(7, slot, put(format!("stale{slot}").as_bytes(), b"x"), false).unwrap();
            follower.apply_chosen_command(8, slot, put(b"mine", b"kept"), false).unwrap();
        }
        // An install interrupted by a crash (after a checkpoint) comes back as installing.
        follower.install_begin(7).await.unwrap();
        assert!(matches!(follower.get(7, b"stale1").await, Err(Error::Unavailable(_))));
        follower.install_entries(7, streamed[0].clone()).await.unwrap();
        follower.checkpoint().await.unwrap();
        follower.close().await.unwrap();
        let follower = Store::open(&follower_dir, replicated_config()).await.unwrap();
        assert!(follower.installing(7));
        assert_eq!(follower.applied_slot(7), 0);
        assert!(matches!(
            follower.scan(7, Bound::Unbounded, Bound::Unbounded, false, 10).await,
            Err(Error::Unavailable(_))
        ));
        assert_eq!(follower.get(8, b"mine").await.unwrap(), Some(b"kept".to_vec()));
        // A snapshot whose counts do not match what arrived is not installed.
        follower.install_begin(7).await.unwrap();
        for chunk in &streamed[1..] {
            follower.install_entries(7, chunk.clone()).await.unwrap();
        }
        let error = follower
            .install_end(7, meta.applied_slot, meta.items, meta.bytes, vec![paxos::Member::full(1)])
            .await
            .unwrap_err();
        assert!(error.to_string().contains("should hold 500 items"), "{error}");
        assert!(follower.installing(7));
        // A whole one is.
        follower.install_begin(7).await.unwrap();
        for chunk in &streamed {
            follower.install_entries(7, chunk.clone()).await.unwrap();
        }
        follower.install_end(7, meta.applied_slot, meta.items, meta.bytes, vec![paxos::Member::full(1)]).await.unwrap();
        assert!(!follower.installing(7));
        let installed = follower.scan(7, Bound::Unbounded, Bound::Unbounded, false, usize::MAX).await.unwrap();
        assert!(installed == expected);
        follower.checkpoint().await.unwrap();
        follower.close().await.unwrap();
        let follower = Store::open(&follower_dir, replicated_config()).await.unwrap();
        let meta_after = follower.partition_meta(7).await.unwrap();
        assert_eq!((meta_after.applied_slot, meta_after.items, meta_after.bytes), (500, 500, meta.bytes));
        // The configuration the snapshot carried is the partition's now.
        assert_eq!(follower.configuration(7), Some(vec![paxos::Member::full(1)]));
        assert!(follower.scan(7, Bound::Unbounded, Bound::Unbounded, false, usize::MAX).await.unwrap() == expected);
        assert_eq!(follower.get(8, b"mine").await.unwrap(), Some(b"kept".to_vec()));
        follower.close().await.unwrap();
        leader.close().await.unwrap();
    });
}

/// Replicated mode: dropping a partition (its table deleted) removes its items and metadata
/// and releases the WAL its unapplied entries held; other partitions are untouched.
#[test]
fn dropped_partitions_leave_nothing_behind() {
    let dir = scratch_dir("store-drop");
    run(async move {
        let store = Store::open(&dir, replicated_config()).await.unwrap();
        for slot in 1..=50u64 {
            store.apply_chosen_command(7, slot, put(format!("k{slot}").as_bytes(), b"gone"), false).unwrap();
            store.apply_chosen_command(8, slot, put(format!("k{slot}").as_bytes(), b"kept"), false).unwrap();
        }
        // An accepted entry of partition 7 that will never be applied.
        let lsn = store.persist_paxos(7, None, &[chosen(51, 1, &put(b"late", b"x"))]).unwrap();
        store.durable(lsn).await.unwrap();
        store.checkpoint().await.unwrap();
        store.drop_partition(7).await.unwrap();
        assert!(store.scan(7, Bound::Unbounded, Bound::Unbounded, false, 10).await.unwrap().is_empty());
        assert_eq!(store.partition_meta(7).await.unwrap(), PartitionMeta::default());
        // Nothing holds the WAL back now: a checkpoint covers the dropped partition's entry.
        store.checkpoint().await.unwrap();
        assert!(store.inner.covered_lsn() >= lsn);
        store.close().await.unwrap();
        let store = Store::open(&dir, replicated_config()).await.unwrap();
        assert_eq!(store.applied_slot(7), 0);
        assert!(store.scan(7, Bound::Unbounded, Bound::Unbounded, false, 10).await.unwrap().is_empty());
        assert_eq!(store.partition_meta(8).await.unwrap().items, 50);
        assert_eq!(store.get(8, b"k7").await.unwrap(), Some(b"kept".to_vec()));
        store.close().await.unwrap();
    });
}

/// Replicated mode: a configuration chosen for a slot is applied in order with the commands,
/// saved with the checkpoint, and back after a restart (a restarted replica starts from it,
/// not from the group it began with); a dropped partition loses it.
#[test]
fn group_configurations_survive_restarts() {
    let dir = scratch_dir("store-members");
    run(async move {
        let store = Store::open(&dir, replicated_config()).await.unwrap();
        assert_eq!(store.configuration(7), None);
        let members = vec![paxos::Member::full(1), paxos::Member::full(2), paxos::Member::log(4)];
        store.apply_chosen_command(7, 1, put(b"a", b"1"), false).unwrap();
        store.apply_members(7, 2, members.clone()).unwrap();
        store.apply_chosen_command(7, 3, put(b"b", b"2"), false).unwrap();
        store.apply_members(9, 1, vec![paxos::Member::full(3)]).unwrap();
        store.checkpoint().await.unwrap();
        assert_eq!((store.configuration(7), store.applied_slot(7)), (Some(members.clone()), 3));
        store.close().await.unwrap();
        let store = Store::open(&dir, replicated_config()).await.unwrap();
        assert_eq!((store.configuration(7), store.applied_slot(7)), (Some(members), 3));
        assert_eq!(store.configuration(9), Some(vec![paxos::Member::full(3)]));
        assert_eq!(store.get(7, b"b").await.unwrap(), Some(b"2".to_vec()));
        store.drop_partition(9).await.unwrap();
        store.checkpoint().await.unwrap();
        store.close().await.unwrap();
        let store = Store::open(&dir, replicated_config()).await.unwrap();
        assert_eq!(store.configuration(9), None);
        store.close().await.unwrap();
    });
}

/// Replicated mode: an entry that stays unapplied (a log replica's: it applies nothing) keeps
/// the WAL from being recycled; the WAL then grows, but it does not set off a checkpoint after
/// every apply, as a long log otherwise does: only checkpoints that can recycle something,
/// or that the tree's dirty pages call for, are made.
#[test]
fn a_log_held_by_unapplied_entries_sets_off_no_checkpoint_storm() {
    let dir = scratch_dir("store-held-log");
    run(async move {
        let store = Store::open(&dir, replicated_config()).await.unwrap();
        let lsn = store.persist_paxos(7, None, &[chosen(1, 1, &put(b"held", b"x"))]).unwrap();
        store.durable(lsn).await.unwrap();
        let filler = vec![0u8; 60 << 10];
        for slot in 1..=200u64 {
            let command = put(&(slot % 8).to_be_bytes(), &filler);
            let lsn = store.persist_paxos(8, None, &[chosen(slot, 1, &command)]).unwrap();
            store.durable(lsn).await.unwrap();
            let ticket = store.apply_chosen_command(8, slot, command, true).unwrap();
            store.outcome(ticket).await.unwrap();
        }
        let (segments, checkpoints) = (store.wal().segments_in_use(), store.checkpoints());
        assert!(segments > 20, "the held WAL grows: {segments} segments");
        assert!(checkpoints < 30, "{checkpoints} checkpoints for 200 applies");
        store.close().await.unwrap();
        let store = Store::open(&dir, replicated_config()).await.unwrap();
        assert_eq!(store.take_recovered_paxos()[&7].entries.keys().copied().collect::<Vec<_>>(), [1]);
        store.close().await.unwrap();
    });
}

/// The leaves of the newest checkpoint of the tree file in `dir` whose keys all belong to
/// `partition`.
fn leaves_of(dir: &std::path::Path, partition: PartitionId) -> Vec<PageId> {
    let file = std::fs::read(dir.join(TREE_FILE)).unwrap();
    let page = |id: PageId| &file[id as usize * PAGE_SIZE..(id as usize + 1) * PAGE_SIZE];
    let meta = (0..2).filter_map(|slot| Meta::decode(page(slot), slot)).max_by_key(|meta| meta.sequence).unwrap();
    let (mut stack, mut leaves) = (vec![meta.root], Vec::new());
    while let Some(id) = stack.pop() {
        let bytes = page(id);
        match page::kind(bytes) {
            Some(Kind::Branch) => stack.extend((0..=page::count(bytes)).map(|index| page::child(bytes, index))),
            Some(Kind::Leaf) if page::count(bytes) > 0 => {
                let of = |index: usize| page::key(bytes, index)[..8] == partition.to_be_bytes();
                if of(0) && of(page::count(bytes) - 1) {
                    leaves.push(id);
                }
            }
            _ => {}
        }
    }
    leaves
}

/// A leaf damaged on disk: the scrub finds it (and names its partition), the other partition
/// serves, and installing a snapshot of its partition cuts it out without reading it; the
/// tree stays whole: counts, the next pass, a reopen, and writes that reuse the freed pages.
#[test]
fn a_damaged_leaf_is_found_by_the_scrub_and_cut_out_by_an_install() {
    let dir = scratch_dir("store-scrub");
    run(async move {
        let value = |n: u64| vec![n as u8; 200];
        let store = Store::open(&dir, replicated_config()).await.unwrap();
        for slot in 1..=300u64 {
            store.apply_chosen_command(7, slot, put(format!("k{slot:04}").as_bytes(), &value(slot)), false).unwrap();
        }
        for slot in 1..=50u64 {
            store.apply_chosen_command(1000, slot, put(format!("o{slot:04}").as_bytes(), &value(slot)), false).unwrap();
        }
        store.checkpoint().await.unwrap();
        let image = store.scan(7, Bound::Unbounded, Bound::Unbounded, false, usize::MAX).await.unwrap();
        let others = store.scan(1000, Bound::Unbounded, Bound::Unbounded, false, usize::MAX).await.unwrap();
        store.close().await.unwrap();
        let leaves = leaves_of(&dir, 7);
        assert!(leaves.len() > 3, "{leaves:?}");
        let damaged = leaves[leaves.len() / 2];
        let mut file = std::fs::read(dir.join(TREE_FILE)).unwrap();
        file[damaged as usize * PAGE_SIZE + 3000] ^= 1;
        std::fs::write(dir.join(TREE_FILE), &file).unwrap();

        let config = StoreConfig { scrub_interval: Some(Duration::from_millis(50)), ..replicated_config() };
        let store = Store::open(&dir, config).await.unwrap();
        while store.scrub_stats().passes == 0 {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        let stats = store.scrub_stats();
        assert_eq!((stats.damaged_last_pass, stats.damaged_pages), (1, 1));
        assert!(stats.pages_checked > leaves.len() as u64);
        assert_eq!(store.take_damaged_partitions(), vec![7]);
        assert_eq!(store.scan(1000, Bound::Unbounded, Bound::Unbounded, false, usize::MAX).await.unwrap(), others);
        assert!(matches!(
            store.scan(7, Bound::Unbounded, Bound::Unbounded, false, usize::MAX).await,
            Err(Error::Corrupt { .. })
        ));

        store.install_begin(7).await.unwrap();
        assert_eq!((store.partition_meta(7).await.unwrap().items, store.installing(7)), (0, true));
        let bytes = image.iter().map(|(key, value)| (key.len() + value.len()) as u64).sum();
        store.install_entries(7, image.clone()).await.unwrap();
        store.install_end(7, 300, 300, bytes, vec![paxos::Member::full(1)]).await.unwrap();
        store.checkpoint().await.unwrap();
        let passes = store.scrub_stats().passes;
        while store.scrub_stats().passes <= passes + 1 {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(store.scrub_stats().damaged_last_pass, 0);
        assert_eq!(store.scan(7, Bound::Unbounded, Bound::Unbounded, false, usize::MAX).await.unwrap(), image);
        // Writes after it allocate the freed pages; every count and page survives a reopen.
        for slot in 301..=400u64 {
            store.apply_chosen_command(7, slot, put(format!("k{slot:04}").as_bytes(), &value(slot)), false).unwrap();
        }
        store.checkpoint().await.unwrap();
        store.close().await.unwrap();
        let store = Store::open(&dir, replicated_config()).await.unwrap();
        let meta = store.partition_meta(7).await.unwrap();
        let all = store.scan(7, Bound::Unbounded, Bound::Unbounded, false, usize::MAX).await.unwrap();
        assert_eq!((meta.items, meta.applied_slot, meta.installing, all.len()), (400, 400, false, 400));
        assert_eq!(meta.bytes, all.iter().map(|(key, value)| (key.len() + value.len()) as u64).sum::<u64>());
        assert_eq!(store.scan(1000, Bound::Unbounded, Bound::Unbounded, false, usize::MAX).await.unwrap(), others);
        store.close().await.unwrap();
    });
}

/// An encoded item of one string attribute.
fn item_bytes(value: &str) -> Vec<u8> {
    let item = crate::value::Item::from([("v".to_string(), crate::value::AttributeValue::S(value.to_string()))]);
    let mut bytes = Vec::new();
    crate::codec::encode_item(&item, crate::codec::ItemMeta::default(), &mut bytes);
    bytes
}

fn changes_on(view: crate::partition::ChangeView) -> Command {
    Command::Schema(crate::partition::PartitionSchema { changes: view, retention_s: 3600 })
}

/// The change log keyspace: with a view set by a schema entry, each change is recorded in log
/// order with the images the view keeps, survives a restart (from the checkpoint and from the
/// WAL's replay alike), is trimmed by its entry's time, and goes with its partition.
#[test]
fn the_change_log_records_changes_in_log_order_and_survives_restarts() {
    use crate::partition::{ChangeKind, ChangeView, Sequence};
    let dir = scratch_dir("store-change-log");
    let image = scratch_dir("store-change-log-image");
    run(async move {
        let log = LocalLog::new(Store::open(&dir, small_config()).await.unwrap());
        log.propose(3, put(b"before", &item_bytes("0"))).await.unwrap();
        log.propose(3, changes_on(ChangeView::NewAndOldImages)).await.unwrap();
        log.propose(3, put(b"a", &item_bytes("1"))).await.unwrap();
        log.propose(3, put(b"a", &item_bytes("1"))).await.unwrap();
        log.store().checkpoint().await.unwrap();
        log.propose(3, Command::Batch(vec![put(b"a", &item_bytes("2")), put(b"b", &item_bytes("1"))])).await.unwrap();
        log.propose(3, Command::Delete { key: b"a".to_vec() }).await.unwrap();
        log.propose(4, put(b"elsewhere", &item_bytes("1"))).await.unwrap();
        let expected = log.store().changes(3, Sequence::default(), usize::MAX).await.unwrap();
        let summary: Vec<_> = expected
            .iter()
            .map(|(sequence, record)| (sequence.slot, sequence.position, record.kind, record.key.clone()))
            .collect();
        assert_eq!(
            summary,
            [
                (3, 0, ChangeKind::Insert, b"a".to_vec()),
                (5, 0, ChangeKind::Modify, b"a".to_vec()),
                (5, 1, ChangeKind::Insert, b"b".to_vec()),
                (6, 0, ChangeKind::Remove, b"a".to_vec()),
            ],
            "slot 4 left the item as it was; slot 1 came before the view"
        );
        assert_eq!(expected[1].1.old, Some(item_bytes("1")));
        assert_eq!(expected[1].1.new, Some(item_bytes("2")));
        assert!(expected.windows(2).all(|pair| pair[0].1.at_us <= pair[1].1.at_us && pair[0].1.at_us > 0));
        assert!(log.store().changes(4, Sequence::default(), 10).await.unwrap().is_empty(), "partition 4 has no view");
        let from = log.store().changes(3, Sequence { slot: 5, position: 1 }, 1).await.unwrap();
        assert_eq!(from, expected[2..3]);
        // A crash: the records after the checkpoint come back from the WAL's replay.
        copy_dir(&dir, &image);
        let crashed = Store::open(&image, small_config()).await.unwrap();
        assert_eq!(crashed.changes(3, Sequence::default(), usize::MAX).await.unwrap(), expected);
        crashed.close().await.unwrap();
        log.store().checkpoint().await.unwrap();
        log.store().close().await.unwrap();
        let store = Store::open(&dir, small_config()).await.unwrap();
        assert_eq!(store.changes(3, Sequence::default(), usize::MAX).await.unwrap(), expected);
        // Trimmed by time: none is an hour old yet; an hour on, all are.
        let now = crate::command::now_us();
        assert_eq!(store.trim_changes(now).await.unwrap(), 0);
        assert_eq!(store.trim_changes(expected[1].1.at_us + 3_600_000_000).await.unwrap(), 1);
        assert_eq!(store.changes(3, Sequence::default(), usize::MAX).await.unwrap(), expected[1..]);
        assert_eq!(store.trim_changes(now + 3_600_000_001).await.unwrap(), 3);
        assert!(store.changes(3, Sequence::default(), usize::MAX).await.unwrap().is_empty());
        store.close().await.unwrap();
    });
}

/// Replicas that apply the same chosen entries hold the same change log, byte for byte: the
/// sequence follows from the slot, the time from the entry's stamp.
#[test]
fn replicas_applying_the_same_entries_hold_the_same_change_log() {
    use crate::partition::{ChangeView, Sequence};
    let dirs = [scratch_dir("store-change-log-a"), scratch_dir("store-change-log-b")];
    run(async move {
        let mut logs = Vec::new();
        for (at, dir) in dirs.iter().enumerate() {
            let store = Store::open(dir, replicated_config()).await.unwrap();
            let entries = [
                changes_on(ChangeView::OldImage),
                put(b"k", &item_bytes("1")),
                put(b"k", &item_bytes("2")),
                Command::Delete { key: b"k".to_vec() },
            ];
            for (slot, command) in (1..).zip(entries) {
                // Applied at different moments on each replica; stamped once, by the leader.
                if at == 1 {
                    glommio::timer::sleep(Duration::from_millis(2)).await;
                }
                store.apply_chosen(9, slot, Stamped { at_us: 1_000 * slot, command }, false).unwrap();
            }
            logs.push(store.changes(9, Sequence::default(), usize::MAX).await.unwrap());
            store.close().await.unwrap();
        }
        assert_eq!(logs[0].len(), 3);
        assert_eq!(logs[0], logs[1]);
        assert_eq!(logs[0][1].1.old, Some(item_bytes("1")));
        assert_eq!(logs[0][1].1.new, None, "OLD_IMAGE keeps only the old image");
        assert_eq!(logs[0][2].1.at_us, 4_000);
    });
}

/// A tree whose meta pages are both damaged, over a log recycled under its checkpoints, is
/// refused by name: replaying what the log still holds would serve a tree missing the records
/// the lost checkpoint covered. (While the log was never recycled, the replay rebuilds all.)
#[test]
fn a_lost_checkpoint_over_a_recycled_log_is_refused() {
    let dir = scratch_dir("store-lost-checkpoint");
    let dir_for_run = dir.clone();
    run(async move {
        let log = LocalLog::new(Store::open(&dir_for_run, small_config()).await.unwrap());
        for round in 0..2_000u32 {
            log.propose(1, put(format!("k{round}").as_bytes(), &[7; 900])).await.unwrap();
        }
        log.store().checkpoint().await.unwrap();
        log.store().close().await.unwrap();
    });
    let path = dir.join(TREE_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    for slot in 0..2 {
        bytes[slot * PAGE_SIZE + 40] ^= 0xFF;
    }
    std::fs::write(&path, &bytes).unwrap();
    run(async move {
        let error = Store::open(&dir, small_config()).await.err().expect("a lost checkpoint is refused");
        assert!(matches!(error, Error::Corrupt { .. }), "{error}");
        assert!(error.to_string().contains("both meta pages"), "{error}");
    });
}
