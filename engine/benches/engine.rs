//! Storage engine benchmarks: durable puts with group commit at 1, 16 and 256 concurrent
//! writers (1 KiB items) against redb with equal durability (every commit fsync'd before it
//! returns); point gets from cache and from disk; range scans.
//!
//! The engine runs on its own glommio executor pinned to core 0; criterion drives it from the
//! main thread through a channel and times whole batches (`iter_custom`), so the channel's cost
//! is not in the figures. Commit latencies (submit to durable, when the put is acknowledged) are collected too
//! and printed as percentiles at the end of each group.

use std::ops::Bound;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tessera_engine::{
    encode_item, AttributeValue, Command, Item, ItemMeta, KeySchema, KeyType, LocalLog, ReplicationLog, Store,
    StoreConfig,
};

const VALUE_BYTES: usize = 1000;
const PREFILL: u64 = 200_000;
/// Puts overwrite a fixed set of keys (about 120 MiB of items), so every run measures the same
/// steady state rather than a table that grows with the run's length.
const PUT_KEYS: u64 = 100_000;

fn item_for(n: u64) -> (Vec<u8>, Vec<u8>) {
    let schema = KeySchema::hash_only("id", KeyType::S);
    let mut item = Item::new();
    item.insert("id".into(), AttributeValue::S(format!("user#{n:010}")));
    item.insert("data".into(), AttributeValue::B(vec![(n % 251) as u8; VALUE_BYTES]));
    let key = schema.encode_key(&item).expect("valid key").bytes;
    let mut value = Vec::new();
    encode_item(&item, ItemMeta::default(), &mut value);
    (key, value)
}

enum Job {
    Puts { writers: usize, total: u64, reply: mpsc::Sender<(Duration, Vec<Duration>, u64)> },
    Gets { count: u64, reply: mpsc::Sender<Duration> },
    Scans { count: u64, length: usize, reply: mpsc::Sender<Duration> },
}

/// An engine on its own pinned executor, taking jobs from the bench thread.
struct Engine {
    jobs: mpsc::Sender<Job>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Engine {
    fn start(name: &str, cache_pages: usize, prefill: u64) -> Engine {
        let dir = std::env::temp_dir().join(format!("tessera-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (jobs, receiver) = mpsc::channel::<Job>();
        let thread = std::thread::spawn(move || {
            let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(0))
                .io_memory(4 << 20)
                .spin_before_park(Duration::from_micros(50))
                .make()
                .expect("executor");
            executor.run(async move {
                let config = StoreConfig { cache_pages, ..StoreConfig::default() };
                let log = Rc::new(LocalLog::new(Store::open(&dir, config).await.expect("store opens")));
                let mut next_key = 0u64;
                // Items are built before timing: the figures are the engine's, not the encoder's.
                let items: Rc<Vec<(Vec<u8>, Vec<u8>)>> = Rc::new((0..prefill.max(PUT_KEYS)).map(item_for).collect());
                if prefill > 0 {
                    run_puts(&log, &items, 256, prefill, prefill, &mut next_key).await;
                    log.store().checkpoint().await.expect("checkpoint");
                }
                while let Ok(job) = receiver.recv() {
                    match job {
                        Job::Puts { writers, total, reply } => {
                            let flushes = log.store().wal().flush_count();
                            let (elapsed, latencies) =
                                run_puts(&log, &items, writers, total, PUT_KEYS, &mut next_key).await;
                            let result = (elapsed, latencies, log.store().wal().flush_count() - flushes);
                            reply.send(result).expect("reply");
                        }
                        Job::Gets { count, reply } => {
                            let mut state = 0x2545_F491_4F6C_DD1Du64;
                            let keys: Vec<Vec<u8>> = (0..count)
                                .map(|_| {
                                    state ^= state << 13;
                                    state ^= state >> 7;
                                    state ^= state << 17;
                                    item_for(state % prefill.max(1)).0
                                })
                                .collect();
                            let start = Instant::now();
                            for key in &keys {
                                let found = log.store().get(1, key).await.expect("get");
                                assert!(found.is_some());
                            }
                            reply.send(start.elapsed()).expect("reply");
                        }
                        Job::Scans { count, length, reply } => {
                            let start = Instant::now();
                            for index in 0..count {
                                let (key, _) = item_for(index * 7919 % prefill.max(1));
                                let entries = log
                                    .store()
                                    .scan(1, Bound::Included(&key), Bound::Unbounded, index % 2 == 1, length)
                                    .await
                                    .expect("scan");
                                assert!(!entries.is_empty());
                            }
                            reply.send(start.elapsed()).expect("reply");
                        }
                    }
                }
                log.store().close().await.expect("close");
                let _ = std::fs::remove_dir_all(&dir);
            });
        });
        Engine { jobs, thread: Some(thread) }
    }

    fn puts(&self, writers: usize, total: u64) -> (Duration, Vec<Duration>, u64) {
        let (reply, answer) = mpsc::channel();
        self.jobs.send(Job::Puts { writers, total, reply }).expect("engine alive");
        answer.recv().expect("engine replies")
    }

    fn gets(&self, count: u64) -> Duration {
        let (reply, answer) = mpsc::channel();
        self.jobs.send(Job::Gets { count, reply }).expect("engine alive");
        answer.recv().expect("engine replies")
    }

    fn scans(&self, count: u64, length: usize) -> Duration {
        let (reply, answer) = mpsc::channel();
        self.jobs.send(Job::Scans { count, length, reply }).expect("engine alive");
        answer.recv().expect("engine replies")
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let (jobs, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.jobs, jobs));
        if let Some(thread) = self.thread.take() {
            thread.join().expect("engine thread");
        }
    }
}

/// `total` durable puts over `keys` distinct keys, spread over `writers` concurrent tasks; returns the elapsed time and
/// every put's commit latency.
async fn run_puts(
    log: &Rc<LocalLog>,
    items: &Rc<Vec<(Vec<u8>, Vec<u8>)>>,
    writers: usize,
    total: u64,
    keys: u64,
    next_key: &mut u64,
) -> (Duration, Vec<Duration>) {
    let first = *next_key;
    *next_key += total;
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers as u64)
        .map(|writer| {
            let log = log.clone();
            let items = items.clone();
            glommio::spawn_local(async move {
                let mut latencies = Vec::new();
                let mut n = first + writer;
                while n < first + total {
                    let (key, value) = items[(n % keys) as usize].clone();
                    let begun = Instant::now();
                    log.propose(1, Command::Put { key, value: value.into() }).await.expect("durable put");
                    latencies.push(begun.elapsed());
                    n += writers as u64;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total as usize);
    for task in tasks {
        latencies.extend(task.await);
    }
    (start.elapsed(), latencies)
}

fn percentiles(label: &str, latencies: &mut [Duration], elapsed: Duration, operations: u64) {
    if latencies.is_empty() {
        return;
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{label}: {:.0} ops/s, commit latency p50 {:?} p90 {:?} p99 {:?} p99.9 {:?} max {:?} ({} samples)",
        operations as f64 / elapsed.as_secs_f64(),
        at(0.50),
        at(0.90),
        at(0.99),
        at(0.999),
        latencies[latencies.len() - 1],
        latencies.len()
    );
}

fn durable_puts(c: &mut Criterion) {
    let mut group = c.benchmark_group("durable_put_1KiB");
    group.sample_size(10).measurement_time(Duration::from_secs(8)).warm_up_time(Duration::from_secs(2));
    // Both engines start with every key of the working set written once, so the figures are
    // the steady state of overwrites, not the first inserts and file growth.
    let engine = Engine::start("puts", 64 * 1024, 0);
    engine.puts(256, 3 * PUT_KEYS);
    for writers in [1usize, 16, 256] {
        let batch = (writers as u64 * 40).max(400);
        group.throughput(Throughput::Elements(batch));
        let mut all = Vec::new();
        let mut elapsed_total = Duration::ZERO;
        let mut count = 0;
        let mut flushes = 0;
        group.bench_with_input(BenchmarkId::new("tessera", writers), &writers, |b, &writers| {
            b.iter_custom(|iterations| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iterations {
                    let (took, latencies, flushed) = engine.puts(writers, batch);
                    flushes += flushed;
                    elapsed += took;
                    elapsed_total += took;
                    count += batch;
                    all.extend(latencies);
                }
                elapsed
            })
        });
        let label = format!(
            "tessera durable puts, {writers} writers, {:.1} puts per fdatasync",
            count as f64 / flushes.max(1) as f64
        );
        percentiles(&label, &mut all, elapsed_total, count);
    }
    drop(engine);

    let dir = std::env::temp_dir().join(format!("tessera-bench-redb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("redb dir");
    let database = std::sync::Arc::new(redb::Database::create(dir.join("bench.redb")).expect("redb opens"));
    const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("items");
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        let transaction = database.begin_write().expect("begin");
        {
            let mut table = transaction.open_table(TABLE).expect("table");
            for n in 0..PUT_KEYS {
                let (key, value) = item_for(n);
                table.insert(key.as_slice(), value.as_slice()).expect("insert");
            }
        }
        transaction.commit().expect("commit");
    }
    for writers in [1usize, 16, 256] {
        let batch = (writers as u64).max(32);
        group.throughput(Throughput::Elements(batch));
        let mut all = Vec::new();
        let mut elapsed_total = Duration::ZERO;
        let mut count = 0;
        group.bench_with_input(BenchmarkId::new("redb", writers), &writers, |b, &writers| {
            b.iter_custom(|iterations| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iterations {
                    let start = Instant::now();
                    let threads: Vec<_> = (0..writers)
                        .map(|_| {
                            let database = database.clone();
                            let next = next.clone();
                            std::thread::spawn(move || {
                                let mut latencies = Vec::new();
                                for _ in 0..(batch / writers as u64).max(1) {
                                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    let (key, value) = item_for(n % PUT_KEYS);
                                    let begun = Instant::now();
                                    // Durability::Immediate (the default): fsync'd before commit returns.
                                    let transaction = database.begin_write().expect("begin");
                                    {
                                        let mut table = transaction.open_table(TABLE).expect("table");
                                        table.insert(key.as_slice(), value.as_slice()).expect("insert");
                                    }
                                    transaction.commit().expect("commit");
                                    latencies.push(begun.elapsed());
                                }
                                latencies
                            })
                        })
                        .collect();
                    for thread in threads {
                        let latencies = thread.join().expect("writer");
                        count += latencies.len() as u64;
                        all.extend(latencies);
                    }
                    let took = start.elapsed();
                    elapsed += took;
                    elapsed_total += took;
                }
                elapsed
            })
        });
        percentiles(&format!("redb durable puts, {writers} writers"), &mut all, elapsed_total, count);
    }
    drop(database);
    let _ = std::fs::remove_dir_all(&dir);
    group.finish();
}

fn point_gets(c: &mut Criterion) {
    let mut group = c.benchmark_group("point_get_1KiB");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    const GETS: u64 = 100_000;
    group.throughput(Throughput::Elements(GETS));
    // All pages cached: 20,000 items (about 25 MiB of pages, mostly in the CPU caches) and
    // 200,000 items (about 250 MiB, so most lookups wait on DRAM at every level)...
    for items in [20_000u64, PREFILL] {
        let cached = Engine::start("gets-cached", 80 * 1024, items);
        cached.gets(GETS); // warm the cache
        group.bench_function(BenchmarkId::new("cached", items), |b| {
            b.iter_custom(|iterations| (0..iterations).map(|_| cached.gets(GETS)).sum())
        });
        drop(cached);
    }
    // ...and with a 1 MiB cache, so nearly every get reads pages from disk.
    let cold = Engine::start("gets-disk", tessera_engine::CACHE_PAGES_MIN, PREFILL);
    group.throughput(Throughput::Elements(GETS / 20));
    group.bench_function("from_disk", |b| {
        b.iter_custom(|iterations| (0..iterations).map(|_| cold.gets(GETS / 20)).sum())
    });
    drop(cold);
    group.finish();
}

fn range_scans(c: &mut Criterion) {
    let mut group = c.benchmark_group("range_scan_100x1KiB");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    const SCANS: u64 = 2_000;
    group.throughput(Throughput::Elements(SCANS * 100));
    let engine = Engine::start("scans", 80 * 1024, PREFILL);
    engine.scans(SCANS, 100);
    group.bench_function("cached", |b| {
        b.iter_custom(|iterations| (0..iterations).map(|_| engine.scans(SCANS, 100)).sum())
    });
    drop(engine);
    group.finish();
}

criterion_group!(benches, durable_puts, point_gets, range_scans);
criterion_main!(benches);
