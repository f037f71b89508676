//! `tessera-load`: an open-loop load generator. Calls are issued on a schedule (the workload's
//! rate timeline), whether or not earlier ones have been answered, and each latency is
//! measured from the call's due time, so queueing in the server or the client shows up in the
//! figures instead of silently lowering the rate (no coordinated omission).
//!
//! A workload file (`--workload FILE`, `workload.rs`; shipped ones in `bench/workloads/`)
//! gives the table and key space, the key popularity, item sizes, the operation mix and the
//! rate timeline. Without one, the flags describe a steady run of GetItem and PutItem (or,
//! with `--updates`, conditional counter updates) over uniformly chosen keys.

mod keys;
mod peers;
mod plot;
mod report;
mod schedule;
mod workload;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{ArgGroup, Parser};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use tessera_engine::{AttributeValue, Item, KeySchema, KeyType, Number};
use tessera_net::client::{ClusterPool, Routed};
use tessera_wire::client::{Client, ClientConfig, ClientError, ClientTls, ItemBuilder};
use tessera_wire::{Expressions, Query, ReadExpressions, Request, ReturnValues, Scan, SortCondition, TableKeys, Write};

use keys::{KeyChooser, Random};
use report::{ErrorKind, Report, Summary};
use schedule::Schedule;
use workload::{ItemSpec, KeySpec, Mix, Op, Phase, Rate, TableSpec, Workload};

/// An open loop issues calls due within this of each other together, up to this late: each
/// sleep costs the generator a park and a wake-up of its reactor (at 26k calls/s, one sleep a
/// call took half a CPU on the machine it shares with the servers; 100 µs cut that by a third:
/// bench/RESULTS.md). Latency is timed from each call's due time, so the lateness counts
/// against the server measured, never for it.
const ISSUE_GRANULE: Duration = Duration::from_micros(100);
/// Calls an open loop issues one after another before it lets the reactor poll its sockets.
const ISSUE_RUN_MAX: usize = 32;
/// The write of an update: a counter increment, conditional on the item existing.
const COUNTER_UPDATE: &str = "SET #c = if_not_exists(#c, :zero) + :one";

/// mimalloc rather than glibc's allocator: every request allocates and frees (items, frames,
/// tasks); measured under tessera-load it cut server CPU per operation ~5% and the median
/// latency ~12% (bench/RESULTS.md).
/// `--endpoint`'s default: a node's binary protocol on this machine.
const ENDPOINT_DEFAULT: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7400));

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An open-loop load generator for Tessera (and, to compare, Redis, etcd or a DynamoDB
/// endpoint): calls are issued on the workload's schedule whether or not earlier ones were
/// answered, and each latency is timed from its call's due time.
#[derive(Parser)]
#[command(name = "tessera-load", version, args_override_self = true)]
#[command(group(ArgGroup::new("peer").args(["redis", "etcd", "dynamodb"])))]
struct Flags {
    /// The node to drive [default: the first of --cluster, else 127.0.0.1:7400]
    #[arg(long, value_name = "ADDR")]
    endpoint: Option<SocketAddr>,
    /// The nodes of a cluster: connections to every node, each call sent to its partition's
    /// leader, learned from NotLeader
    #[arg(long, value_name = "A,B,C", value_delimiter = ',')]
    cluster: Vec<SocketAddr>,
    /// A workload file (bench/workloads/*.toml): table and key space, key popularity, item
    /// sizes, operation mix, rate timeline (phases)
    #[arg(long, value_name = "FILE")]
    workload: Option<String>,
    /// Also write the results as JSON: per operation, errors by kind, and each second's due
    /// calls, answers, errors and p99
    #[arg(long, value_name = "FILE")]
    json: Option<String>,
    /// Draw that timeline as SVG: calls answered and errors per second against the target
    /// rate, and each second's p99 on a log scale, with the phases shaded
    #[arg(long, value_name = "FILE")]
    plot: Option<String>,
    /// The table [default: the workload's, or load]
    #[arg(long, value_name = "NAME")]
    table: Option<String>,
    /// Create the table (partition key id:S) first, with P partitions [default: the
    /// workload's, or 8]
    #[arg(long, value_name = "P", num_args = 0..=1)]
    create: Option<Option<u32>>,
    /// Write every key once (closed loop, 256 in flight) before the timed run
    #[arg(long)]
    prefill: bool,
    /// Run the first phase's rate for S seconds before the schedule, and record nothing of
    /// it (connections, table layouts and leaders are learned then)
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    warmup: f64,
    /// Pipelined connections per server core; each call goes to one on the core owning its
    /// key
    #[arg(long, value_name = "N", default_value_t = 1)]
    connections: usize,
    /// Generator threads
    #[arg(long, value_name = "N", default_value_t = 1)]
    threads: usize,
    /// Closed loop: N calls in flight per thread, each issued when the one before it is
    /// answered, for the workload's length (or --duration), instead of its rates
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// No progress line each second (on standard error)
    #[arg(long)]
    quiet: bool,
    /// Calls a generator thread keeps waiting for answers at most: a call due beyond that is
    /// not sent and counts as shed, so that an overloaded server does not also swamp the
    /// generator, which keeps offering load and measuring what is served
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    outstanding_max: u64,
    /// Drive Redis instead (the peer comparison): gets are GET, puts and inserts SET of a
    /// value as large as the item, on --connections pipelined connections
    #[arg(long, value_name = "ADDR", value_delimiter = ',')]
    redis: Option<Vec<SocketAddr>>,
    /// Drive etcd's members instead, through its v3 JSON gateway: gets are linearizable
    /// ranges, puts and inserts puts; --connections to each member
    #[arg(long, value_name = "A,B,C", value_delimiter = ',')]
    etcd: Option<Vec<SocketAddr>>,
    /// Drive DynamoDB's HTTP API at these addresses instead (Tessera's endpoint, or an
    /// emulator's): gets are strongly consistent GetItem, puts and inserts PutItem, of the
    /// same items; --connections pipelined HTTP/1.1 connections to each; --create makes the
    /// table there (CreateTable)
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    dynamodb: Option<Vec<SocketAddr>>,
    /// Search for the highest steady rate (within 5 %) whose p99 stays at or under P99_MS
    /// with every call answered: probes of --probe-seconds of the workload's mix, doubling
    /// from its first phase's rate, then bisecting
    #[arg(long, value_name = "P99_MS")]
    max_rate: Option<f64>,
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    probe_seconds: f64,
    /// Without --workload: keys, uniformly chosen
    #[arg(long, value_name = "N", default_value_t = 1_000_000, conflicts_with = "workload")]
    keys: u64,
    /// Without --workload: the size of each item's value
    #[arg(long, value_name = "N", default_value_t = 1024, conflicts_with = "workload")]
    value_bytes: usize,
    /// Without --workload: calls per second
    #[arg(long, value_name = "OPS_PER_S", default_value_t = 50_000.0, conflicts_with = "workload")]
    rate: f64,
    /// Without --workload: how long to run
    #[arg(long, value_name = "SECONDS", default_value_t = 20.0, conflicts_with = "workload")]
    duration: f64,
    /// Without --workload: the share of calls that are GetItem (the others write), 0 to 1
    #[arg(long, value_name = "R", default_value_t = 0.5, conflicts_with = "workload")]
    get_ratio: f64,
    /// Without --workload: writes are conditional UpdateItem counter increments instead of
    /// PutItem
    #[arg(long, conflicts_with = "workload")]
    updates: bool,
    /// Connect to the nodes with TLS (serve --tls-cert), trusting --ca-file, each node's
    /// certificate checked against its IP address
    #[arg(long, conflicts_with = "peer")]
    tls: bool,
    /// The certificates (PEM) --tls trusts [default: the system's trust store]
    #[arg(long, value_name = "FILE", env = "TESSERA_CA_FILE", requires = "tls")]
    ca_file: Option<std::path::PathBuf>,
}

#[derive(Clone)]
struct Settings {
    endpoint: SocketAddr,
    /// Every node of a cluster (just the endpoint for a single node).
    nodes: Vec<SocketAddr>,
    workload: Workload,
    /// The workload file's name, or "flags".
    name: String,
    warmup: Duration,
    connections: usize,
    threads: usize,
    create: Option<u32>,
    prefill: bool,
    /// Closed loop with this many calls in flight per thread, instead of the schedule.
    concurrency: Option<usize>,
    json: Option<String>,
    plot: Option<String>,
    quiet: bool,
    /// Drive a peer at these addresses instead of Tessera (gets and puts only).
    peer: Option<(Peer, Vec<SocketAddr>)>,
    /// `--max-rate`: the p99 bound, in ms, and each probe's seconds.
    max_rate: Option<(f64, f64)>,
    /// Open loop: calls a thread has waiting at most; a call due beyond it is shed.
    outstanding_max: u64,
    /// How every connection to the nodes is made (TLS with --tls).
    client: ClientConfig,
}

impl Settings {
    /// The schedule's phases: the warm-up (the first phase's starting rate, not recorded),
    /// then the workload's.
    fn phases(&self) -> Vec<Phase> {
        let first = &self.workload.phases[0];
        let warmup = Phase {
            name: "warm-up".into(),
            seconds: self.warmup.as_secs_f64(),
            rate: Rate::Steady(first.rate.at(0.0, first.seconds)),
            hot: None,
        };
        std::iter::once(warmup).filter(|warmup| warmup.seconds > 0.0).chain(self.workload.phases.clone()).collect()
    }

    /// The phase and the rate due `second` seconds into the measured run.
    fn target(&self, second: usize) -> (String, f64) {
        let mut start = 0.0;
        let t = second as f64;
        for phase in &self.workload.phases {
            if t < start + phase.seconds {
                return (phase.name.clone(), phase.rate.at(t - start, phase.seconds));
            }
            start += phase.seconds;
        }
        ("after".into(), 0.0)
    }
}

fn parse() -> Result<Settings, String> {
    let flags = Flags::parse();
    let endpoint = flags.endpoint.or(flags.cluster.first().copied()).unwrap_or(ENDPOINT_DEFAULT);
    let (mut workload, name) = match &flags.workload {
        Some(path) => {
            (Workload::load(path)?, path.rsplit('/').next().unwrap_or(path).trim_end_matches(".toml").to_string())
        }
        None => (flags_workload(&flags)?, "flags".to_string()),
    };
    if let Some(table) = &flags.table {
        workload.table.name = table.clone();
    }
    let peers = [(Peer::Redis, &flags.redis), (Peer::Etcd, &flags.etcd), (Peer::DynamoDb, &flags.dynamodb)];
    // clap lets one at most through.
    let peer = peers.into_iter().find_map(|(peer, addresses)| Some((peer, addresses.clone()?)));
    if let Some((peer, _)) = &peer {
        let unsupported =
            [Op::Update, Op::Delete, Op::ReadModifyWrite, Op::Scan, Op::Query, Op::BatchGet, Op::BatchWrite];
        if let Some(op) = unsupported.iter().find(|&&op| workload.mix.weight(op) > 0) {
            return Err(format!("a peer ({peer:?}) runs get and put (and insert) only, not {}", op.name()));
        }
        if workload.table.items_per_key > 1 {
            return Err(format!("a peer ({peer:?}) stores one item a key: table.items_per_key must be 1"));
        }
        if flags.create.is_some() && *peer != Peer::DynamoDb {
            return Err("--create makes a table; this peer has none".into());
        }
    }
    Ok(Settings {
        nodes: if flags.cluster.is_empty() { vec![endpoint] } else { flags.cluster },
        endpoint,
        create: flags.create.map(|count| count.unwrap_or(workload.table.partitions)),
        workload,
        name,
        warmup: Duration::try_from_secs_f64(flags.warmup).map_err(|_| "--warmup takes seconds, 0 or more")?,
        connections: flags.connections,
        threads: flags.threads.max(1),
        prefill: flags.prefill,
        concurrency: flags.concurrency,
        json: flags.json,
        plot: flags.plot,
        peer,
        max_rate: flags.max_rate.map(|bound| (bound, flags.probe_seconds)),
        quiet: flags.quiet,
        outstanding_max: flags.outstanding_max.max(1),
        client: ClientConfig {
            tls: flags.tls.then(|| ClientTls::trusting(flags.ca_file.as_deref())).transpose()?,
            ..ClientConfig::default()
        },
    })
}

/// The workload the flags describe: steady, uniform keys, GetItem and PutItem (or updates).
fn flags_workload(flags: &Flags) -> Result<Workload, String> {
    if !(0.0..=1.0).contains(&flags.get_ratio) {
        return Err("--get-ratio takes a number from 0 to 1".into());
    }
    let gets = (flags.get_ratio * 1_000_000.0).round() as u32;
    let writes = 1_000_000 - gets;
    let workload = Workload {
        table: TableSpec { name: "load".into(), keys: flags.keys, partitions: 8, items_per_key: 1 },
        keys: KeySpec::Uniform,
        items: ItemSpec { min_bytes: flags.value_bytes, max_bytes: flags.value_bytes },
        mix: Mix {
            get: gets,
            put: if flags.updates { 0 } else { writes },
            update: if flags.updates { writes } else { 0 },
            ..Mix::default()
        },
        phases: vec![Phase {
            name: "steady".into(),
            seconds: flags.duration,
            rate: Rate::Steady(flags.rate),
            hot: None,
        }],
    };
    workload.validate().map(|()| workload)
}

fn key(index: u64) -> String {
    format!("key-{index:010}")
}

/// The primary key of item `index`: its partition key, and with several items a key its
/// sort key (`TableSpec::items_per_key`).
fn item_key(table: &TableSpec, index: u64) -> ItemBuilder {
    let per_key = u64::from(table.items_per_key);
    if per_key == 1 {
        return ItemBuilder::new().s("id", key(index));
    }
    ItemBuilder::new().s("id", key(index / per_key)).n("n", (index % per_key) as i64)
}

fn item(table: &TableSpec, index: u64, value_bytes: usize) -> Item {
    item_key(table, index).b("data", vec![(index % 251) as u8; value_bytes]).build()
}

/// The table's key schema: `id`, and `n` when its partition keys hold several items.
fn key_schema(table: &TableSpec) -> KeySchema {
    match table.items_per_key {
        1 => KeySchema::hash_only("id", KeyType::S),
        _ => KeySchema::composite(("id", KeyType::S), ("n", KeyType::N)),
    }
}

/// Ends the run with a one-line error (from any thread).
fn fail(message: String) -> ! {
    eprintln!("tessera-load: {message}");
    std::process::exit(1)
}

/// What the calls go to: Tessera (a node or a cluster), or a peer for comparison.
enum Target {
    Tessera(ClusterPool),
    /// A peer's connections, used in turn.
    Peer(Peer, Vec<peers::Connection>, Cell<usize>),
}

/// `--redis`, `--etcd` or `--dynamodb`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    Redis,
    Etcd,
    DynamoDb,
}

async fn target(settings: &Settings) -> Rc<Target> {
    if let Some((peer, addresses)) = &settings.peer {
        let parse = match peer {
            Peer::Redis => peers::parse_resp,
            Peer::Etcd | Peer::DynamoDb => peers::parse_http,
        };
        let mut connections = Vec::new();
        for &address in addresses {
            for _ in 0..settings.connections {
                let connection = peers::Connection::connect(address, parse)
                    .await
                    .unwrap_or_else(|error| fail(format!("cannot connect to {peer:?} at {address}: {error}")));
                connections.push(connection);
            }
        }
        return Rc::new(Target::Peer(*peer, connections, Cell::new(0)));
    }
    let pool = ClusterPool::connect(&settings.nodes, settings.connections, settings.client.clone())
        .await
        .unwrap_or_else(|error| fail(format!("cannot connect to {:?}: {error}", settings.nodes)));
    Rc::new(Target::Tessera(pool))
}

/// CreateTable over DynamoDB's HTTP API at the first address, then, at every address, GetItem
/// until the table answers there (a cluster's nodes learn of a table as each applies it).
fn create_over_http(addresses: Vec<SocketAddr>, table: String) {
    let creating = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let connect = async |address| {
                peers::Connection::connect(address, peers::parse_http)
                    .await
                    .unwrap_or_else(|error| fail(format!("cannot connect to {address}: {error}")))
            };
            let first = connect(addresses[0]).await;
            if let Err(error) = peers::dynamodb_create(&first, &table).await {
                fail(format!("cannot create table {table}: {error}"));
            }
            for address in addresses {
                let connection = connect(address).await;
                let deadline = Instant::now() + Duration::from_secs(10);
                while let Err(error) = peers::dynamodb_get(&connection, &table, &key(0)).await {
                    if Instant::now() > deadline {
                        fail(format!("table {table} does not answer at {address}: {error}"));
                    }
                    glommio::timer::sleep(Duration::from_millis(20)).await;
                }
            }
        })
        .unwrap_or_else(|error| fail(format!("cannot start an executor: {error}")));
    creating.join().unwrap_or_else(|_| fail("creating the table failed".into()));
}

/// Writes keys `thread, thread + threads, ...` once each, 256 at a time.
async fn prefill(settings: Settings, thread: usize) {
    let pool = target(&settings).await;
    let next = Rc::new(Cell::new(thread as u64));
    let workers: Vec<_> = (0..256)
        .map(|worker| {
            let (pool, next, settings) = (pool.clone(), next.clone(), settings.clone());
            glommio::spawn_local(async move {
                let mut random = Random::new((thread * 1000 + worker) as u64);
                loop {
                    let index = next.get();
                    if index >= settings.workload.table.keys {
                        return;
                    }
                    next.set(index + settings.threads as u64);
                    let bytes = item_bytes(&settings.workload.items, &mut random);
                    // A bulk load goes as fast as the servers admit: a throttled write (after
                    // the client's own retries) is tried again after a pause.
                    while let Err(error) = call(&pool, &settings.workload.table, Op::Put, index, bytes, 1).await {
                        if ErrorKind::of(&error) != ErrorKind::Throttled {
                            fail(format!("prefill: {error}"));
                        }
                        glommio::timer::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await;
    }
}

fn item_bytes(items: &ItemSpec, random: &mut Random) -> usize {
    items.min_bytes + random.below((items.max_bytes - items.min_bytes) as u64 + 1) as usize
}

/// Progress shared by the generator threads, for the line printed each second.
struct Progress {
    answered: AtomicU64,
    errors: AtomicU64,
    /// Each thread's latencies so far, refreshed about once a second.
    latencies: Mutex<Vec<Histogram<u64>>>,
    done: AtomicBool,
}

/// A thread's key and operation choices.
struct Chooser {
    keys: KeyChooser,
    random: Random,
    /// This thread's next insert: keys past the key space, interleaved by thread.
    next_insert: u64,
    /// The newest key known (for "latest").
    newest: u64,
    threads: u64,
}

impl Chooser {
    fn new(settings: &Settings, thread: usize) -> Chooser {
        let keys = settings.workload.table.keys;
        Chooser {
            keys: KeyChooser::new(keys, &settings.workload.keys),
            random: Random::new(thread as u64),
            next_insert: keys + thread as u64,
            newest: keys - 1,
            threads: settings.threads as u64,
        }
    }

    /// The next call: its operation, key and item size.
    fn choose(&mut self, workload: &Workload, phase: Option<&Phase>) -> (Op, u64, usize) {
        let op = workload.mix.pick(self.random.unit());
        let index = if op == Op::Insert {
            let index = self.next_insert;
            self.next_insert += self.threads;
            self.newest = self.newest.max(index);
            index
        } else {
            self.keys.pick(&mut self.random, self.newest, phase.and_then(|phase| phase.hot))
        };
        let size = match op {
            // A scan's length, 1 to the mix's most.
            Op::Scan => 1 + self.random.below(u64::from(workload.mix.scan_items_max)) as usize,
            Op::Query => 1 + self.random.below(u64::from(workload.mix.query_items_max)) as usize,
            _ => item_bytes(&workload.items, &mut self.random),
        };
        (op, index, size)
    }
}

async fn run(settings: Settings, thread: usize, progress: Arc<Progress>) -> Report {
    let pool = target(&settings).await;
    let (table, batch) = (settings.workload.table.clone(), settings.workload.mix.batch_items);
    let server = move |op, index, bytes| {
        let (pool, table) = (pool.clone(), table.clone());
        // Each call goes to a connection on the core owning the key's partition.
        async move { call(&pool, &table, op, index, bytes, batch).await }
    };
    open_loop(&settings, thread, progress, server).await
}

/// The open loop of one generator thread: every `threads`-th call of the schedule, each
/// started when due (whatever is still unanswered) by `server(op, key, bytes)`, and timed
/// from its due time.
async fn open_loop<F: Future<Output = Result<(), ClientError>> + 'static>(
    settings: &Settings,
    thread: usize,
    progress: Arc<Progress>,
    server: impl Fn(Op, u64, usize) -> F,
) -> Report {
    let report = Rc::new(RefCell::new(Report::new()));
    let phases = settings.phases();
    let warmup = settings.warmup.as_secs_f64();
    let mut chooser = Chooser::new(settings, thread);
    let threads = settings.threads;
    let mut schedule = Schedule::new(&phases).enumerate().filter(|(k, _)| k % threads == thread).map(|(_, due)| due);
    let start = Instant::now();
    let outstanding = Rc::new(Cell::new(0u64));
    let mut shared_at = Instant::now();
    let mut issued_in_a_row = 0;
    let mut next = schedule.next();
    while let Some((at, phase)) = next {
        let due = start + Duration::from_secs_f64(at);
        let now = Instant::now();
        if now >= shared_at + Duration::from_secs(1) {
            shared_at = now;
            progress.latencies.lock().expect("progress")[thread] = report.borrow().all();
        }
        if due > now {
            issued_in_a_row = 0;
            glommio::timer::sleep((due - now).clamp(ISSUE_GRANULE, Duration::from_millis(100))).await;
            continue;
        }
        let recorded = at >= warmup;
        let second = (at - warmup).max(0.0) as usize;
        if recorded {
            report.borrow_mut().due(second);
        }
        let (op, index, bytes) = chooser.choose(&settings.workload, Some(&phases[phase]));
        next = schedule.next();
        if outstanding.get() >= settings.outstanding_max {
            if recorded {
                progress.errors.fetch_add(1, Ordering::Relaxed);
                report.borrow_mut().record(second, op, 0, Err(ErrorKind::Shed));
            }
            continue;
        }
        let (report, progress, outstanding) = (report.clone(), progress.clone(), outstanding.clone());
        let answer = server(op, index, bytes);
        outstanding.set(outstanding.get() + 1);
        glommio::spawn_local(async move {
            let result = answer.await;
            let micros = due.elapsed().as_micros() as u64;
            outstanding.set(outstanding.get() - 1);
            if recorded {
                count(&progress, &result);
                report.borrow_mut().answered(second, op, micros, result);
            }
        })
        .detach();
        issued_in_a_row += 1;
        if issued_in_a_row >= ISSUE_RUN_MAX {
            // Behind schedule, the loop would go on issuing without a pause, and glommio polls
            // no socket while a task is ready: the calls would neither go out nor be answered
            // (a stall of ~0.5 s in the percentiles, the generator's own, at 65k calls/s).
            issued_in_a_row = 0;
            tessera_engine::yield_to_reactor().await;
        }
    }
    while outstanding.get() > 0 {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    Rc::try_unwrap(report).ok().expect("every task is done").into_inner()
}

fn count(progress: &Progress, result: &Result<(), ClientError>) {
    let counter = if result.is_ok() { &progress.answered } else { &progress.errors };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One call of the workload on key `index` (`bytes`: the size of what a write stores).
/// (`batch`: the keys of a batch operation).
async fn call(
    target: &Target,
    spec: &TableSpec,
    op: Op,
    index: u64,
    bytes: usize,
    batch: u32,
) -> Result<(), ClientError> {
    let table = spec.name.as_str();
    let pool = match target {
        Target::Tessera(pool) => pool,
        Target::Peer(peer, connections, next) => {
            let at = next.get();
            next.set((at + 1) % connections.len());
            // A value as large as the item Tessera stores (the key and a binary attribute).
            let (connection, key) = (&connections[at], key(index));
            let value = || vec![(index % 251) as u8; bytes + key.len()];
            let answer = match (peer, op) {
                (Peer::Redis, Op::Get | Op::GetEventual) => peers::redis_get(connection, key.as_bytes()).await,
                (Peer::Redis, _) => peers::redis_set(connection, key.as_bytes(), &value()).await,
                (Peer::Etcd, Op::Get | Op::GetEventual) => peers::etcd_get(connection, key.as_bytes()).await,
                (Peer::Etcd, _) => peers::etcd_put(connection, key.as_bytes(), &value()).await,
                (Peer::DynamoDb, Op::Get | Op::GetEventual) => peers::dynamodb_get(connection, table, &key).await,
                (Peer::DynamoDb, _) => {
                    peers::dynamodb_put(connection, table, &key, &vec![(index % 251) as u8; bytes]).await
                }
            };
            return answer.map_err(ClientError::Protocol);
        }
    };
    let key = item_key(spec, index).build();
    let get = |consistent_read: bool| {
        let request = Request::GetItem {
            table: table.into(),
            key: key.clone(),
            consistent_read,
            read: ReadExpressions::default(),
        };
        async move |client: &Routed<'_>| client.call(&request).await.map(drop)
    };
    let put = async |client: &Routed<'_>| client.put_item(table, item(spec, index, bytes)).await;
    match op {
        Op::Get => pool.call(table, &key, get(true)).await,
        Op::GetEventual => pool.call(table, &key, get(false)).await,
        Op::Put | Op::Insert => pool.call(table, &key, put).await,
        Op::Update => {
            let expressions = Expressions::condition("attribute_exists(id)")
                .name("#c", "count")
                .value(":zero", AttributeValue::N(Number::from(0)))
                .value(":one", AttributeValue::N(Number::from(1)));
            let update = async |client: &Routed<'_>| {
                let (key, expressions) = (key.clone(), expressions.clone());
                client.update_item(table, key, COUNTER_UPDATE, expressions, ReturnValues::None).await.map(drop)
            };
            pool.call(table, &key, update).await
        }
        Op::Delete => {
            pool.call(table, &key, async |client: &Routed<'_>| client.delete_item(table, key.clone()).await.map(drop))
                .await
        }
        Op::ReadModifyWrite => {
            pool.call(table, &key, get(true)).await?;
            pool.call(table, &key, put).await
        }
        // `bytes` stands for the scan's length here (see `Chooser::choose`).
        Op::Scan => {
            let scan = Scan {
                table: table.into(),
                segment: 0,
                total_segments: 0,
                limit: bytes as u32,
                exclusive_start_key: Some(key.clone()),
                consistent_read: false,
                read: ReadExpressions::default(),
            };
            pool.call(table, &key, async |client: &Routed<'_>| client.scan(scan.clone()).await.map(drop)).await
        }
        // `bytes` stands for the query's length: the chosen item and those after it under its
        // partition key.
        Op::Query => {
            let per_key = u64::from(spec.items_per_key);
            let query = Query {
                table: table.into(),
                partition_key: AttributeValue::S(self::key(index / per_key)),
                sort: Some(SortCondition::Ge(AttributeValue::N(Number::from((index % per_key) as i64)))),
                backward: false,
                limit: bytes as u32,
                exclusive_start_key: None,
                consistent_read: false,
                read: ReadExpressions::default(),
            };
            pool.call(table, &key, async |client: &Routed<'_>| client.query(query.clone()).await.map(drop)).await
        }
        // `bytes` is each item's size; the batch's keys follow the chosen one.
        Op::BatchGet | Op::BatchWrite => {
            let indexes = index..index + u64::from(batch);
            let batch = async |client: &Routed<'_>| {
                if op == Op::BatchGet {
                    let keys = indexes.clone().map(|index| item_key(spec, index).build());
                    let tables = vec![TableKeys {
                        table: table.into(),
                        keys: keys.collect(),
                        consistent_read: false,
                        read: ReadExpressions::default(),
                    }];
                    client.batch_get_item(tables).await.map(drop)
                } else {
                    let writes =
                        indexes.clone().map(|index| Write::Put { table: table.into(), item: item(spec, index, bytes) });
                    client.batch_write_item(writes.collect()).await.map(drop)
                }
            };
            pool.call(table, &key, batch).await
        }
    }
}

/// Closed loop (`--concurrency N`): N calls in flight on this thread, each issued as soon as
/// the one before it is answered; latency from issue to answer, throughput what the server
/// sustains at that concurrency.
async fn run_closed(settings: Settings, thread: usize, concurrency: usize, progress: Arc<Progress>) -> Report {
    let pool = target(&settings).await;
    let report = Rc::new(RefCell::new(Report::new()));
    let measured_from = Instant::now() + settings.warmup;
    let deadline = measured_from + Duration::from_secs_f64(settings.workload.seconds());
    let chooser = Rc::new(RefCell::new(Chooser::new(&settings, thread)));
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (pool, report, settings, chooser, progress) =
                (pool.clone(), report.clone(), settings.clone(), chooser.clone(), progress.clone());
            glommio::spawn_local(async move {
                while Instant::now() < deadline {
                    let (op, index, bytes) = chooser.borrow_mut().choose(&settings.workload, None);
                    let issued = Instant::now();
                    let (table, batch) = (&settings.workload.table, settings.workload.mix.batch_items);
                    let result = call(&pool, table, op, index, bytes, batch).await;
                    let micros = issued.elapsed().as_micros() as u64;
                    if issued < measured_from {
                        continue;
                    }
                    count(&progress, &result);
                    let second = (issued - measured_from).as_secs() as usize;
                    let mut report = report.borrow_mut();
                    report.due(second);
                    report.answered(second, op, micros, result);
                    if worker == 0 && second > 0 && report.timeline[second].due == 1 {
                        progress.latencies.lock().expect("progress")[thread] = report.all();
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

/// Prints a progress line each second on standard error until the run is done.
fn print_progress(progress: Arc<Progress>, warmup: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(warmup);
        let began = Instant::now();
        let mut last = 0;
        loop {
            std::thread::sleep(Duration::from_secs(1));
            if progress.done.load(Ordering::Relaxed) {
                return;
            }
            let answered = progress.answered.load(Ordering::Relaxed);
            let mut all = report::histogram();
            for latencies in progress.latencies.lock().expect("progress").iter() {
                all.add(latencies).expect("same bounds");
            }
            eprintln!(
                "tessera-load: {:>4.0} s  {:>8} answered/s  errors {}  p99 so far {:.2} ms",
                began.elapsed().as_secs_f64(),
                answered - last,
                progress.errors.load(Ordering::Relaxed),
                all.value_at_quantile(0.99) as f64 / 1000.0
            );
            last = answered;
        }
    })
}

/// Runs every generator thread (the prefill, or the measured run) and gathers their reports.
fn spawn_all(settings: &Settings, progress: &Arc<Progress>, prefilling: bool) -> Vec<Option<Report>> {
    let handles: Vec<_> = (0..settings.threads)
        .map(|thread| {
            let (settings, progress) = (settings.clone(), progress.clone());
            LocalExecutorBuilder::new(Placement::Unbound)
                .name(&format!("load-{thread}"))
                .io_memory(1 << 20)
                .spawn(move || async move {
                    if prefilling {
                        prefill(settings, thread).await;
                        None
                    } else if let Some(concurrency) = settings.concurrency {
                        Some(run_closed(settings, thread, concurrency, progress).await)
                    } else {
                        Some(run(settings, thread, progress).await)
                    }
                })
                .expect("load executor")
        })
        .collect();
    handles.into_iter().map(|handle| handle.join().expect("load thread")).collect()
}

/// One measured run: its summary.
fn measure(settings: &Settings, progress: &Arc<Progress>) -> Summary {
    let printer = (!settings.quiet).then(|| print_progress(progress.clone(), settings.warmup));
    let began = Instant::now();
    let mut report = Report::new();
    for thread in spawn_all(settings, progress, false).into_iter().flatten() {
        report.add(&thread);
    }
    let seconds = began.elapsed().saturating_sub(settings.warmup).as_secs_f64();
    progress.done.store(true, Ordering::Relaxed);
    if let Some(printer) = printer {
        let _ = printer.join();
    }
    progress.done.store(false, Ordering::Relaxed);
    Summary::new(&settings.name, &report, seconds, |second| settings.target(second))
}

/// The highest rate, to within 5 %, that `passes`: doubling from `start` until a probe fails
/// (or halving until one passes), then bisecting. `None` if nothing down to 1 call/s passes.
fn search_max_rate(start: f64, mut passes: impl FnMut(f64) -> bool) -> Option<f64> {
    let (mut good, mut bad): (Option<f64>, Option<f64>) = (None, None);
    let mut rate = start.max(1.0);
    loop {
        if passes(rate) {
            good = Some(rate);
        } else {
            bad = Some(rate);
        }
        rate = match (good, bad) {
            (Some(good), Some(bad)) if bad - good <= 0.05 * good => return Some(good),
            (Some(good), Some(bad)) => (good + bad) / 2.0,
            (Some(good), None) => good * 2.0,
            (None, Some(bad)) if bad <= 1.0 => return None,
            (None, Some(bad)) => (bad / 2.0).max(1.0),
            (None, None) => unreachable!("a probe either passes or fails"),
        };
    }
}

fn main() {
    let settings = match parse() {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("tessera-load: {message}");
            std::process::exit(2);
        }
    };
    let table = settings.workload.table.name.clone();
    if let (Some((Peer::DynamoDb, addresses)), Some(_)) = (&settings.peer, settings.create) {
        create_over_http(addresses.clone(), table.clone());
    } else if let Some(partitions) = settings.create {
        let mut client = Client::connect_with(settings.endpoint, settings.client.clone())
            .unwrap_or_else(|error| fail(format!("cannot connect to {}: {error}", settings.endpoint)));
        client
            .create_table(&table, key_schema(&settings.workload.table), partitions)
            .unwrap_or_else(|error| fail(format!("cannot create table {table}: {error}")));
        // In a cluster each node learns of the table as it applies the catalog's entry.
        for &node in &settings.nodes {
            let deadline = Instant::now() + Duration::from_secs(10);
            let connect = || Client::connect_with(node, settings.client.clone());
            while connect().and_then(|mut client| client.describe_table(&table)).is_err() {
                if Instant::now() > deadline {
                    fail(format!("node {node} never learned of table {table}"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let progress = Arc::new(Progress {
        answered: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        latencies: Mutex::new(vec![report::histogram(); settings.threads]),
        done: AtomicBool::new(false),
    });
    if settings.prefill {
        let began = Instant::now();
        spawn_all(&settings, &progress, true);
        let (keys, seconds) = (settings.workload.table.keys, began.elapsed().as_secs_f64());
        println!("prefill: {keys} puts in {seconds:.1} s ({:.0} puts/s)", keys as f64 / seconds);
    }
    if let Some((bound, seconds)) = settings.max_rate {
        let start = settings.workload.phases[0].rate.max();
        let found = search_max_rate(start, |rate| {
            let mut probe = settings.clone();
            probe.workload.phases = vec![Phase { name: "probe".into(), seconds, rate: Rate::Steady(rate), hot: None }];
            probe.quiet = true;
            let summary = measure(&probe, &progress);
            if let Some(failures) = summary.all_failed() {
                fail(format!("probe {rate:.0}/s: {failures}"));
            }
            // Conditional failures are the workload's doing; any other error fails the probe.
            let failed: u64 = summary
                .errors
                .iter()
                .filter(|(kind, _)| **kind != ErrorKind::ConditionalFailed)
                .map(|(_, count)| count)
                .sum();
            let passed = summary.all.p99_ms <= bound && failed == 0 && summary.all.count > 0;
            println!(
                "probe {rate:.0}/s: p99 {:.2} ms, {} answered of {} due, {failed} failed: {}",
                summary.all.p99_ms,
                summary.all.count,
                summary.due,
                if passed { "holds" } else { "does not hold" }
            );
            if !passed {
                // A backlog an overloaded probe left behind must not count against the next.
                std::thread::sleep(Duration::from_secs(2));
            }
            passed
        });
        match found {
            Some(rate) => println!("max rate with p99 <= {bound} ms: {rate:.0}/s"),
            None => fail(format!("no rate down to 1 call/s keeps the p99 at or under {bound} ms")),
        }
        return;
    }
    let summary = measure(&settings, &progress);
    summary.print();
    if let Some(failures) = summary.all_failed() {
        fail(failures);
    }
    if let Some(path) = &settings.json {
        std::fs::write(path, summary.to_json()).unwrap_or_else(|error| fail(format!("cannot write {path}: {error}")));
    }
    if let Some(path) = &settings.plot {
        std::fs::write(path, plot::plot(&summary))
            .unwrap_or_else(|error| fail(format!("cannot write {path}: {error}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(rate: f64, seconds: f64) -> Settings {
        let workload = Workload {
            table: TableSpec { name: "t".into(), keys: 1000, partitions: 1, items_per_key: 1 },
            keys: KeySpec::Uniform,
            items: ItemSpec::default(),
            mix: Mix { get: 1, ..Mix::default() },
            phases: vec![Phase { name: "steady".into(), seconds, rate: Rate::Steady(rate), hot: None }],
        };
        Settings {
            endpoint: "127.0.0.1:1".parse().unwrap(),
            nodes: Vec::new(),
            workload,
            name: "test".into(),
            warmup: Duration::ZERO,
            connections: 1,
            threads: 1,
            create: None,
            prefill: false,
            concurrency: None,
            json: None,
            plot: None,
            quiet: true,
            peer: None,
            max_rate: None,
            outstanding_max: 20_000,
            client: ClientConfig::default(),
        }
    }

    #[test]
    fn the_max_rate_search_finds_the_capacity_within_five_percent() {
        for capacity in [37_000.0, 1_500.0, 250_000.0] {
            let mut probes = Vec::new();
            let found = search_max_rate(20_000.0, |rate| {
                probes.push(rate);
                rate <= capacity
            })
            .unwrap();
            assert!(found <= capacity && found >= capacity * 0.95, "capacity {capacity}: found {found}");
            assert!(probes.len() < 20, "{} probes", probes.len());
        }
        assert_eq!(search_max_rate(100.0, |_| false), None);
    }

    fn progress() -> Arc<Progress> {
        Arc::new(Progress {
            answered: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latencies: Mutex::new(vec![report::histogram()]),
            done: AtomicBool::new(false),
        })
    }

    /// Runs a 2 s open loop at 1000 calls/s against `server`, in an executor of its own.
    fn run_against<F: Future<Output = Result<(), ClientError>> + 'static>(
        server: impl Fn(Instant) -> F + Send + 'static,
    ) -> Report {
        run_with(settings(1000.0, 2.0), server)
    }

    fn run_with<F: Future<Output = Result<(), ClientError>> + 'static>(
        settings: Settings,
        server: impl Fn(Instant) -> F + Send + 'static,
    ) -> Report {
        glommio::LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(|| async move {
                let start = Instant::now();
                open_loop(&settings, 0, progress(), move |_, _, _| server(start)).await
            })
            .unwrap()
            .join()
            .unwrap()
    }

    fn ms(report: &Report, quantile: f64) -> f64 {
        report.all().value_at_quantile(quantile) as f64 / 1000.0
    }

    /// A dense schedule (20k calls/s, one every 50 µs) is issued in batches of calls due within
    /// `ISSUE_GRANULE` of each other, so the generator wakes far fewer times than it calls; and
    /// no call is ever issued before it is due.
    #[test]
    fn dense_schedules_are_issued_in_batches_never_early() {
        let issued = std::sync::Arc::new(Mutex::new(Vec::new()));
        let record = issued.clone();
        let report = run_with(settings(20_000.0, 1.0), move |start| {
            record.lock().unwrap().push(start.elapsed());
            async { Ok(()) }
        });
        let issued = issued.lock().unwrap();
        assert_eq!(report.all().len() as usize, issued.len());
        assert!((19_999..=20_001).contains(&issued.len()), "{} calls", issued.len());
        for (k, at) in issued.iter().enumerate() {
            assert!(at.as_secs_f64() >= k as f64 / 20_000.0, "call {k} went out at {at:?}, before it was due");
        }
        let wakeups = issued.windows(2).filter(|pair| pair[1] - pair[0] > Duration::from_micros(20)).count();
        assert!(wakeups < issued.len() * 3 / 4, "{wakeups} separate issues for {} calls", issued.len());
    }

    /// Behind schedule (its thread held up for 300 ms at 20k calls/s: 6,000 calls due at once),
    /// the open loop lets the reactor run while it catches up: calls answered through it (a
    /// timer here, a socket in a real run) are answered between the backlog's calls, not only
    /// once all of it is issued. It once issued a whole backlog before any call went out.
    #[test]
    fn a_generator_behind_schedule_lets_answers_in_while_it_catches_up() {
        let events = std::sync::Arc::new(Mutex::new(Vec::new()));
        let (record, blocked) = (events.clone(), std::sync::Arc::new(AtomicBool::new(false)));
        run_with(settings(20_000.0, 1.0), move |start| {
            if start.elapsed() >= Duration::from_millis(100) && !blocked.swap(true, Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(300));
            }
            record.lock().unwrap().push(false);
            let record = record.clone();
            async move {
                glommio::timer::sleep(Duration::from_micros(1)).await;
                record.lock().unwrap().push(true);
                Ok(())
            }
        });
        let events = events.lock().unwrap();
        let (mut run, mut longest) = (0, 0);
        for &answered in events.iter() {
            run = if answered { 0 } else { run + 1 };
            longest = longest.max(run);
        }
        assert!(longest < 1000, "{longest} calls issued in a row with none answered");
    }

    /// A server that answers nothing for a second holds `outstanding_max` calls; the calls
    /// due beyond them are shed (counted, not sent), and the schedule goes on.
    #[test]
    fn calls_beyond_the_outstanding_bound_are_shed_and_counted() {
        let settings = Settings { outstanding_max: 100, ..settings(1000.0, 2.0) };
        let report = run_with(settings, |start| async move {
            let until = start + Duration::from_secs(1);
            glommio::timer::sleep(until.saturating_duration_since(Instant::now())).await;
            Ok(())
        });
        let shed = report.errors.get(&ErrorKind::Shed).copied().unwrap_or(0);
        // The first second: 100 held, ~900 shed; the second: answered at once.
        assert!((850..=950).contains(&shed), "{shed} shed");
        assert_eq!(report.all().len() + shed, report.due, "every due call answered or shed");
    }

    /// Coordinated omission is corrected. A server that stalls for half a second answers the
    /// calls due meanwhile only when it resumes: the schedule goes on issuing them on time,
    /// and their waits show in the percentiles. And when the generator itself is held up (its
    /// thread blocked for 300 ms), the calls it issues late are timed from when they were due,
    /// not from when they went out.
    #[test]
    fn a_stalled_server_shows_up_in_the_percentiles() {
        let stalled = run_against(|start| async move {
            let (from, to) = (start + Duration::from_millis(500), start + Duration::from_millis(1000));
            let now = Instant::now();
            if now >= from && now < to {
                glommio::timer::sleep(to - now).await;
            }
            Ok(())
        });
        assert!((1999..=2001).contains(&stalled.all().len()), "every due call was issued: {}", stalled.all().len());
        // A quarter of the calls waited 0-500 ms for the stall to end.
        assert!(ms(&stalled, 0.5) < 5.0, "median {} ms", ms(&stalled, 0.5));
        assert!(
            ms(&stalled, 0.9) > 250.0 && ms(&stalled, 0.99) > 450.0,
            "p90 {}, p99 {}",
            ms(&stalled, 0.9),
            ms(&stalled, 0.99)
        );
        assert_eq!(stalled.timeline.len(), 2);
        assert!(stalled.timeline[0].latencies.value_at_quantile(0.99) > 450_000, "the stall is in second 0");

        let blocked = std::sync::Arc::new(AtomicBool::new(false));
        let held_up = run_against(move |start| {
            let blocked = blocked.clone();
            async move {
                if start.elapsed() >= Duration::from_millis(500) && !blocked.swap(true, Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(300));
                }
                Ok(())
            }
        });
        // 300 calls were issued up to 300 ms late: p95 about 200 ms, p99 about 280 ms.
        let (p95, p99) = (ms(&held_up, 0.95), ms(&held_up, 0.99));
        assert!(p95 > 150.0 && p99 > 250.0, "p95 {p95} ms, p99 {p99} ms");
    }
}
