//! `tessera-load`: an open-loop load generator. Requests are issued on a fixed schedule (the
//! target rate), whether or not earlier ones have been answered, and each latency is measured
//! from the request's scheduled time, so queueing in the server or the client shows up in the
//! figures instead of silently lowering the rate (no coordinated omission).
//!
//! The workload is the first one the project measures: GetItem and PutItem in a given mix on
//! items of `--value-bytes` over `--keys` uniformly chosen keys. With `--updates`, the writes
//! are conditional counter updates instead of puts (`SET #c = if_not_exists(#c, :zero) + :one`
//! on an item that must exist), to compare their cost with plain puts.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use tessera_engine::{AttributeValue, Item, KeySchema, KeyType, Number};
use tessera_net::client::{AsyncClient, Client, ClientConfig, ClientError, ClusterPool, ItemBuilder};
use tessera_wire::{Expressions, ReturnValues};

/// The write of `--updates`: a counter increment, conditional on the item existing.
const COUNTER_UPDATE: &str = "SET #c = if_not_exists(#c, :zero) + :one";

/// mimalloc rather than glibc's allocator: every request allocates and frees (items, frames,
/// tasks); measured under tessera-load it cut server CPU per operation ~5% and the median
/// latency ~12% (bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: tessera-load [--endpoint ADDR] [--table NAME] [--keys N] [--value-bytes N]
                    [--rate OPS_PER_S] [--duration SECONDS] [--get-ratio R] [--connections N]
                    [--threads N] [--create PARTITIONS] [--prefill] [--updates] [--warmup SECONDS]
  --connections N  pipelined connections per server core (default 1); each call goes to
                   one on the core owning its key
  --create P   create the table (partition key id:S) with P partitions first
  --prefill    write every key once (closed loop, 256 in flight) before the timed run
  --updates    writes are conditional UpdateItem counter increments instead of PutItem
  --warmup S   run the load for S seconds (default 1) before the measured --duration, and
               record nothing of it (connections, table layouts and leaders are learned then)
  --concurrency N  closed loop: N calls in flight per thread, each issued when the one before
               it is answered (throughput and latency at that concurrency), instead of --rate
  --cluster A,B,C  the nodes of a cluster (the first is --endpoint's default): connections to
               every node, each call sent to its partition's leader, learned from NotLeader";

#[derive(Clone)]
struct Settings {
    endpoint: SocketAddr,
    table: String,
    keys: u64,
    value_bytes: usize,
    rate: f64,
    duration: Duration,
    warmup: Duration,
    get_ratio: f64,
    connections: usize,
    threads: usize,
    create: Option<u32>,
    prefill: bool,
    updates: bool,
    /// Every node of a cluster (just the endpoint for a single node).
    nodes: Vec<SocketAddr>,
    /// Closed loop with this many calls in flight per thread, instead of a rate.
    concurrency: Option<usize>,
}

fn parse() -> Result<Settings, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        return Err(USAGE.into());
    }
    let value = |name: &str| args.iter().position(|arg| arg == name).and_then(|at| args.get(at + 1));
    fn number<T: std::str::FromStr>(text: Option<&String>, name: &str, default: T) -> Result<T, String> {
        text.map_or(Ok(default), |text| text.parse().map_err(|_| format!("{name} takes a number, not {text:?}")))
    }
    let nodes = match value("--cluster") {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|address| address.parse().map_err(|_| format!("--cluster takes ADDRESS:PORT,... not {address:?}")))
            .collect::<Result<Vec<SocketAddr>, String>>()?,
    };
    let endpoint = match nodes.first() {
        Some(first) => number(value("--endpoint"), "--endpoint", *first)?,
        None => number(value("--endpoint"), "--endpoint", "127.0.0.1:7400".parse().expect("address"))?,
    };
    Ok(Settings {
        nodes: if nodes.is_empty() { vec![endpoint] } else { nodes },
        concurrency: value("--concurrency").map(|text| number(Some(text), "--concurrency", 1)).transpose()?,
        endpoint,
        table: value("--table").cloned().unwrap_or_else(|| "load".into()),
        keys: number(value("--keys"), "--keys", 1_000_000)?,
        value_bytes: number(value("--value-bytes"), "--value-bytes", 1024)?,
        rate: number(value("--rate"), "--rate", 50_000.0)?,
        duration: Duration::from_secs_f64(number(value("--duration"), "--duration", 20.0)?),
        warmup: Duration::from_secs_f64(number(value("--warmup"), "--warmup", 1.0)?),
        get_ratio: number(value("--get-ratio"), "--get-ratio", 0.5)?,
        connections: number(value("--connections"), "--connections", 1)?,
        threads: number(value("--threads"), "--threads", 1)?,
        create: value("--create").map(|text| number(Some(text), "--create", 0)).transpose()?,
        prefill: args.iter().any(|arg| arg == "--prefill"),
        updates: args.iter().any(|arg| arg == "--updates"),
    })
}

/// xorshift64: cheap, and each thread seeds its own.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn key(index: u64) -> String {
    format!("key-{index:010}")
}

fn item(index: u64, value_bytes: usize) -> Item {
    ItemBuilder::new().s("id", key(index)).b("data", vec![(index % 251) as u8; value_bytes]).build()
}

/// What one thread measured.
struct Report {
    gets: Histogram<u64>,
    puts: Histogram<u64>,
    errors: u64,
    issued: u64,
}

/// Ends the run with a one-line error (from any thread).
fn fail(message: String) -> ! {
    eprintln!("tessera-load: {message}");
    std::process::exit(1)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

async fn pool(settings: &Settings) -> Rc<ClusterPool> {
    let pool = ClusterPool::connect(&settings.nodes, settings.connections, ClientConfig::default())
        .await
        .unwrap_or_else(|error| fail(format!("cannot connect to {:?}: {error}", settings.nodes)));
    Rc::new(pool)
}

/// Writes keys `thread, thread + threads, ...` once each, 256 at a time.
async fn prefill(settings: Settings, thread: usize) {
    let pool = pool(&settings).await;
    let next = Rc::new(Cell::new(thread as u64));
    let workers: Vec<_> = (0..256)
        .map(|_| {
            let (pool, next, settings) = (pool.clone(), next.clone(), settings.clone());
            glommio::spawn_local(async move {
                loop {
                    let index = next.get();
                    if index >= settings.keys {
                        return;
                    }
                    next.set(index + settings.threads as u64);
                    let item = item(index, settings.value_bytes);
                    let put = async |client: &AsyncClient| client.put_item(&settings.table, item.clone()).await;
                    if let Err(error) = pool.call(&settings.table, &item, put).await {
                        fail(format!("prefill: {error}"));
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await;
    }
}

async fn run(settings: Settings, thread: usize) -> Report {
    let pool = pool(&settings).await;
    let report = Rc::new(RefCell::new(Report { gets: histogram(), puts: histogram(), errors: 0, issued: 0 }));
    let rate = settings.rate / settings.threads as f64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut random = Random(0x9E37_79B9_7F4A_7C15 ^ (thread as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    let start = Instant::now();
    let measured_from = start + settings.warmup;
    let total = (rate * (settings.warmup + settings.duration).as_secs_f64()) as u64;
    let mut issued = 0u64;
    let mut measured = 0u64;
    let outstanding = Rc::new(Cell::new(0u64));
    while issued < total {
        let now = Instant::now();
        // Issue everything scheduled up to now, each stamped with its own scheduled time.
        while issued < total && start + interval.mul_f64(issued as f64) <= now {
            let scheduled = start + interval.mul_f64(issued as f64);
            let pool = pool.clone();
            let index = random.next() % settings.keys;
            let is_get = (random.next() % 1_000_000) as f64 / 1_000_000.0 < settings.get_ratio;
            let (report, table, value_bytes) = (report.clone(), settings.table.clone(), settings.value_bytes);
            let updates = settings.updates;
            let outstanding = outstanding.clone();
            outstanding.set(outstanding.get() + 1);
            let recorded = scheduled >= measured_from;
            measured += u64::from(recorded);
            glommio::spawn_local(async move {
                // Each call goes to a connection on the core owning the key's partition.
                let result = one_call(&pool, &table, index, is_get, updates, value_bytes).await;
                let micros = scheduled.elapsed().as_micros() as u64;
                outstanding.set(outstanding.get() - 1);
                if !recorded {
                    return;
                }
                let mut report = report.borrow_mut();
                match result {
                    Ok(()) if is_get => report.gets.saturating_record(micros.max(1)),
                    Ok(()) => report.puts.saturating_record(micros.max(1)),
                    Err(_) => report.errors += 1,
                }
            })
            .detach();
            issued += 1;
        }
        glommio::timer::sleep(Duration::from_micros(200)).await;
    }
    while outstanding.get() > 0 {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    report.borrow_mut().issued = measured;
    Rc::try_unwrap(report).ok().expect("every task is done").into_inner()
}

/// One call of the workload: a GetItem of key `index`, or its write (a PutItem, or with
/// `updates` a conditional counter update).
async fn one_call(
    pool: &ClusterPool,
    table: &str,
    index: u64,
    is_get: bool,
    updates: bool,
    value_bytes: usize,
) -> Result<(), ClientError> {
    if is_get {
        let key = ItemBuilder::new().s("id", key(index)).build();
        let get = async |client: &AsyncClient| client.get_item(table, key.clone()).await.map(drop);
        pool.call(table, &key, get).await
    } else if updates {
        let key = ItemBuilder::new().s("id", key(index)).build();
        let expressions = Expressions::condition("attribute_exists(id)")
            .name("#c", "count")
            .value(":zero", AttributeValue::N(Number::from(0)))
            .value(":one", AttributeValue::N(Number::from(1)));
        let update = async |client: &AsyncClient| {
            let (key, expressions) = (key.clone(), expressions.clone());
            client.update_item(table, key, COUNTER_UPDATE, expressions, ReturnValues::None).await.map(drop)
        };
        pool.call(table, &key, update).await
    } else {
        let item = item(index, value_bytes);
        let put = async |client: &AsyncClient| client.put_item(table, item.clone()).await;
        pool.call(table, &item, put).await
    }
}

/// Closed loop (`--concurrency N`): N calls in flight on this thread, each issued as soon as
/// the one before it is answered; latency from issue to answer, throughput what the server
/// sustains at that concurrency.
async fn run_closed(settings: Settings, thread: usize, concurrency: usize) -> Report {
    let pool = pool(&settings).await;
    let report = Rc::new(RefCell::new(Report { gets: histogram(), puts: histogram(), errors: 0, issued: 0 }));
    let measured_from = Instant::now() + settings.warmup;
    let deadline = measured_from + settings.duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (pool, report, settings) = (pool.clone(), report.clone(), settings.clone());
            glommio::spawn_local(async move {
                let seed = (thread * 10_007 + worker + 1) as u64;
                let mut random = Random(0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0xBF58_476D_1CE4_E5B9));
                while Instant::now() < deadline {
                    let index = random.next() % settings.keys;
                    let is_get = (random.next() % 1_000_000) as f64 / 1_000_000.0 < settings.get_ratio;
                    let issued = Instant::now();
                    let result =
                        one_call(&pool, &settings.table, index, is_get, settings.updates, settings.value_bytes).await;
                    let micros = issued.elapsed().as_micros() as u64;
                    if issued < measured_from {
                        continue;
                    }
                    let mut report = report.borrow_mut();
                    report.issued += 1;
                    match result {
                        Ok(()) if is_get => report.gets.saturating_record(micros.max(1)),
                        Ok(()) => report.puts.saturating_record(micros.max(1)),
                        Err(_) => report.errors += 1,
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await;
    }
    Rc::try_unwrap(report).ok().expect("every worker is done").into_inner()
}

fn line(name: &str, histogram: &Histogram<u64>, seconds: f64) {
    let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    println!(
        "{name:<6} {:>10} {:>10.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
        histogram.len(),
        histogram.len() as f64 / seconds,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        histogram.max() as f64 / 1000.0
    );
}

fn main() {
    let settings = match parse() {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    if let Some(partitions) = settings.create {
        let mut client = Client::connect(settings.endpoint)
            .unwrap_or_else(|error| fail(format!("cannot connect to {}: {error}", settings.endpoint)));
        client
            .create_table(&settings.table, KeySchema::hash_only("id", KeyType::S), partitions)
            .unwrap_or_else(|error| fail(format!("cannot create table {}: {error}", settings.table)));
        // In a cluster each node learns of the table as it applies the catalog's entry.
        for &node in &settings.nodes {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Client::connect(node).and_then(|mut client| client.describe_table(&settings.table)).is_err() {
                if Instant::now() > deadline {
                    fail(format!("node {node} never learned of table {}", settings.table));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let spawn_all = |prefilling: bool| -> Vec<Option<Report>> {
        let handles: Vec<_> = (0..settings.threads)
            .map(|thread| {
                let settings = settings.clone();
                LocalExecutorBuilder::new(Placement::Unbound)
                    .name(&format!("load-{thread}"))
                    .io_memory(1 << 20)
                    .spawn(move || async move {
                        if prefilling {
                            prefill(settings, thread).await;
                            None
                        } else if let Some(concurrency) = settings.concurrency {
                            Some(run_closed(settings, thread, concurrency).await)
                        } else {
                            Some(run(settings, thread).await)
                        }
                    })
                    .expect("load executor")
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().expect("load thread")).collect()
    };
    if settings.prefill {
        let began = Instant::now();
        spawn_all(true);
        let seconds = began.elapsed().as_secs_f64();
        println!("prefill: {} puts in {seconds:.1} s ({:.0} puts/s)", settings.keys, settings.keys as f64 / seconds);
    }
    let began = Instant::now();
    let reports: Vec<Report> = spawn_all(false).into_iter().flatten().collect();
    let seconds = began.elapsed().saturating_sub(settings.warmup).as_secs_f64();
    let mut gets = histogram();
    let mut puts = histogram();
    let mut all = histogram();
    let (mut errors, mut issued) = (0, 0);
    for report in &reports {
        gets.add(&report.gets).expect("same bounds");
        puts.add(&report.puts).expect("same bounds");
        errors += report.errors;
        issued += report.issued;
    }
    all.add(&gets).expect("same bounds");
    all.add(&puts).expect("same bounds");
    println!(
        "target {:.0} ops/s for {:.0} s; issued {issued}, completed {} in {seconds:.1} s ({:.0} ops/s), errors {errors}",
        settings.rate,
        settings.duration.as_secs_f64(),
        all.len(),
        all.len() as f64 / seconds
    );
    println!(
        "{:<6} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "op", "count", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    line("get", &gets, seconds);
    line(if settings.updates { "update" } else { "put" }, &puts, seconds);
    line("all", &all, seconds);
}
