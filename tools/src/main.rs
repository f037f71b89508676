//! `tessera`: runs a node (`serve`) and talks to one (every other command). Items go in and
//! out as DynamoDB JSON; failures print one line and exit non-zero.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

mod admin;
mod cli;

use clap::Parser;
use cli::{AuthMode, Cli, ClusterCommand, Command, Endpoint, Placeholders, SortPart, TableCommand};
use serde_json::{json, Value};
use tessera_engine::paxos;
use tessera_engine::{AttributeValue, KeyAttribute, KeySchema, StoreConfig, WalConfig};
use tessera_net::auth::{new_secret, read_secret};
use tessera_net::json::{consumed_capacity_to_json, item_to_json};
use tessera_net::{
    Auth, Cluster, ClusterNode, HttpConfig, Server, ServerConfig, ServerTls, APPLY_DELAY_DEFAULT, LOG_RETAIN_DEFAULT,
};
use tessera_wire::client::{Client, ClientConfig, ClientError, ClientTls, Credentials};
use tessera_wire::{
    Expressions, Query, ReadExpressions, Request, Response, ReturnValues, Scan, Select, SortCondition,
    TableDescription, TableStatus, UpdateItem,
};

/// mimalloc rather than glibc's allocator: every request allocates and frees (items, frames,
/// tasks); measured under tessera-load it cut server CPU per operation ~5% and the median
/// latency ~12% (bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Cluster(ClusterCommand::Local { nodes, port, http_port, cores, data_dir }) => {
            cluster_local(nodes, port, http_port, cores, &data_dir)
        }
        Command::Cluster(ClusterCommand::Status { cluster, cluster_secret, tls }) => {
            admin_config(cluster_secret.as_deref(), tls.then_some(cli.ca_file.as_deref()))
                .and_then(|config| read_cluster_file(&cluster).and_then(|nodes| admin::status(&nodes, &config)))
        }
        Command::Cluster(ClusterCommand::Replace { cluster, lost, log, full, timeout, cluster_secret, tls }) => {
            admin_config(cluster_secret.as_deref(), tls.then_some(cli.ca_file.as_deref()))
                .and_then(|config| replace(&cluster, admin::Replacement { lost, log, full }, timeout, &config))
        }
        command => {
            cli.endpoint.trusting(cli.ca_file.as_deref()).and_then(|endpoint| client_command(&endpoint, command))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tessera_engine::report!("tessera: {message}");
            ExitCode::FAILURE
        }
    }
}

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_e`, mimalloc.h; the Rust
/// bindings name no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// How long freed memory stays unused before it goes back to the kernel.
const PURGE_DELAY_MS: std::ffi::c_long = 2_000;

/// Frees the calling thread's empty allocator pages and returns to the kernel what has stayed
/// unused for `PURGE_DELAY_MS` (mimalloc does so otherwise only as the thread allocates).
fn collect_memory() {
    // SAFETY: collects the calling thread's own heap and the process's arenas; mimalloc allows
    // it on any thread, at any time.
    unsafe { libmimalloc_sys::mi_collect(false) };
}

fn serve(args: &cli::Serve) -> Result<(), String> {
    // A server returns the memory it freed to the kernel only once it has stayed unused for
    // seconds, not 10 ms later (mimalloc's default): returned memory comes back as fresh pages
    // the kernel must zero (2 MiB at a time with transparent huge pages), which took ~6% of a
    // 3-node cluster's CPU under puts (bench/RESULTS.md). Never returning it, as before, kept
    // a burst's gigabytes for good.
    // SAFETY: sets a process-wide allocator option; any thread may, at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    let cores_available = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    let config = ServerConfig {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        cores: args.cores.unwrap_or(cores_available),
        first_cpu: args.first_cpu.0,
        store: StoreConfig {
            cache_pages: args.cache_mib * 256,
            quarantine_bad_records: args.quarantine_bad_records,
            scrub_interval: (args.scrub_interval_s > 0).then(|| std::time::Duration::from_secs(args.scrub_interval_s)),
            wal: WalConfig { segment_bytes: args.wal_segment_mib << 20, ..WalConfig::default() },
            ..StoreConfig::default()
        },
        cluster: match (args.node_id, &args.cluster) {
            (Some(node), Some(file)) => Some(Cluster {
                log_retain: args.log_retain.unwrap_or(LOG_RETAIN_DEFAULT),
                apply_delay_max: args.apply_delay_ms.map_or(APPLY_DELAY_DEFAULT, std::time::Duration::from_millis),
                secret: args.cluster_secret.as_deref().map(read_secret).transpose()?,
                ..read_cluster(node, file)?
            }),
            // clap requires --node-id and --cluster together.
            _ => None,
        },
        http: None,
        client_keys: None,

        max_connections: args.max_connections,
        request_memory: args.request_memory_mib << 20,
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(ServerTls {
                identity: tessera_net::tls::server_config(cert, key)?,
                forwarding: ClientTls::trusting(Some(cert))?,
            }),
            // clap requires --tls-cert and --tls-key together.
            _ => None,
        },
        collect_memory: Some(collect_memory),
    };
    if let Some(cluster) = &config.cluster {
        let off_loopback = cluster.nodes.values().any(|node| !node.peer.ip().is_loopback());
        if cluster.secret.is_none() && off_loopback {
            return Err("a cluster whose peers are not all on loopback needs --cluster-secret FILE: without it, any process that reaches a peer port could take part in replication".into());
        }
    }
    let auth = auth(args, &config)?;
    let client_keys = match &auth {
        Auth::SigV4(keys) => Some(keys.clone()),
        Auth::None => None,
    };
    let http = args.http_listen.0.map(|listen| HttpConfig { listen, auth });
    let config = ServerConfig { http, client_keys, ..config };
    // SIGINT and SIGTERM are taken by one thread that stops the server cleanly; they are
    // blocked before any other thread starts, so every thread inherits the mask.
    let signals = block_stop_signals();
    let server = Server::start(config.clone())?;
    let role = match &config.cluster {
        None => "a single node".to_string(),
        Some(cluster) => {
            let shared = cluster.shared_zones();
            if !shared.is_empty() {
                tessera_engine::report!("tessera: warning: zones {shared:?} hold more than one node; losing one loses more than one replica of every partition");
            }
            format!("node {} of {}, zone {}", cluster.node, cluster.nodes.len(), cluster.nodes[&cluster.node].zone)
        }
    };
    let tls = if config.tls.is_some() { ", TLS only" } else { "" };
    let http = match (&config.http, server.http_address) {
        (Some(http), Some(address)) => {
            let auth = match &http.auth {
                Auth::None => "auth none: any well-formed credentials".to_string(),
                Auth::SigV4(keys) => format!("auth sigv4: {} access keys", keys.len()),
            };
            format!("; DynamoDB HTTP API on {address} ({auth}{tls})")
        }
        _ => String::new(),
    };
    println!(
        "tessera {}: serving on {} ({role}, {} cores, data in {}{tls}){http}",
        env!("CARGO_PKG_VERSION"),
        server.address,
        config.cores,
        config.data_dir.display()
    );
    let stop = server.stop_flag();
    std::thread::spawn(move || {
        let mut signal = 0;
        // SAFETY: `signals` is an initialized set; sigwait only writes `signal`.
        unsafe { libc::sigwait(&signals, &mut signal) };
        tessera_engine::report!("tessera: stopping (signal {signal}): applying, checkpointing and closing");
        stop.store(true, Ordering::SeqCst);
    });
    server.wait()
}

/// What `serve`'s `--auth none|sigv4` and `--keys FILE` ask for, on the HTTP endpoint (SigV4)
/// and the binary protocol (a proof of a key on each connection) alike. Without `--auth`,
/// keys are checked when they are given or a listener is off loopback.
fn auth(args: &cli::Serve, config: &ServerConfig) -> Result<Auth, String> {
    let keys = args
        .keys
        .as_deref()
        .map(|path| {
            let text =
                std::fs::read_to_string(path).map_err(|error| format!("cannot read the keys file {path}: {error}"))?;
            Auth::parse_keys(&text).map_err(|error| format!("the keys file {path}: {error}"))
        })
        .transpose()?;
    let loopback =
        args.http_listen.0.is_none_or(|listen| listen.ip().is_loopback()) && config.listen.ip().is_loopback();
    let auth = match (args.auth, keys) {
        (Some(AuthMode::None), _) => Auth::None,
        // Keys given are keys to check.
        (Some(AuthMode::Sigv4) | None, Some(keys)) => Auth::SigV4(keys),
        (None, None) if loopback => Auth::None,
        (Some(AuthMode::Sigv4) | None, None) => {
            return Err(
                "checking signatures (--auth sigv4, the default off loopback) needs --keys FILE; --auth none accepts any credentials"
                    .into(),
            )
        }
    };
    Ok(auth)
}

/// The cluster file at `path`, as node `node` sees the cluster.
fn read_cluster(node: u32, path: &str) -> Result<Cluster, String> {
    let nodes = read_cluster_file(path)?;
    if !nodes.contains_key(&node) {
        return Err(format!("node {node} is not in the cluster file {path}"));
    }
    Ok(Cluster {
        node,
        nodes,
        paxos: paxos::Config::default(),
        log_retain: LOG_RETAIN_DEFAULT,
        apply_delay_max: APPLY_DELAY_DEFAULT,
        secret: None,
    })
}

/// A cluster file: one node a line, `ID CLIENT_ADDRESS PEER_ADDRESS [ZONE] [spare]` (core `k`
/// of a node takes replication traffic on its peer port plus `k`; the zone defaults to
/// `zone-ID`; a spare is in no group until `cluster replace` adds it); `#` starts a comment.
fn read_cluster_file(path: &str) -> Result<BTreeMap<u32, ClusterNode>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|error| format!("cannot read the cluster file {path}: {error}"))?;
    let mut nodes = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut fields: Vec<&str> = line.split_whitespace().collect();
        let bad = |what: &str| {
            format!("{path} line {}: {what} (expected ID CLIENT_ADDRESS PEER_ADDRESS [ZONE] [spare])", number + 1)
        };
        let spare = fields.len() > 3 && fields.last() == Some(&"spare");
        if spare {
            fields.pop();
        }
        let (id, client, peer, zone) = match fields[..] {
            [id, client, peer] => (id, client, peer, None),
            [id, client, peer, zone] => (id, client, peer, Some(zone)),
            _ => return Err(bad("three to five fields")),
        };
        let id: u32 = id.parse().map_err(|_| bad("the id is not a number"))?;
        let client = client.parse().map_err(|_| bad("the client address is not ADDRESS:PORT"))?;
        let peer = peer.parse().map_err(|_| bad("the peer address is not ADDRESS:PORT"))?;
        let zone = zone.map_or_else(|| format!("zone-{id}"), str::to_string);
        if nodes.insert(id, ClusterNode { client, peer, zone, spare }).is_some() {
            return Err(bad("the id appears twice"));
        }
    }
    if nodes.values().all(|node| node.spare) {
        return Err(format!("the cluster file {path} names no node that is not a spare"));
    }
    Ok(nodes)
}

/// `cluster replace`: replaces a lost node's replicas (`admin::replace`).
/// Writes `text` to a new file at `path` that only its owner may read.
fn write_private(path: &std::path::Path, text: &str) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}

/// How the administration commands connect: a short timeout, no retries (a node that does not
/// answer is skipped that round), the cluster's secret when there is one, and TLS when asked
/// (`Some(ca_file)`; each node's certificate checked against its IP address).
fn admin_config(
    secret: Option<&std::path::Path>,
    tls: Option<Option<&std::path::Path>>,
) -> Result<ClientConfig, String> {
    let credentials = secret.map(read_secret).transpose()?.as_deref().map(Credentials::cluster);
    let tls = tls.map(ClientTls::trusting).transpose()?;
    Ok(ClientConfig {
        timeout: std::time::Duration::from_secs(2),
        attempts: 1,
        credentials,
        tls,
        ..ClientConfig::default()
    })
}

fn replace(path: &str, plan: admin::Replacement, timeout_secs: u64, config: &ClientConfig) -> Result<(), String> {
    let nodes = read_cluster_file(path)?;
    for (name, id) in [("--lost", plan.lost), ("--log", plan.log), ("--full", plan.full)] {
        if !nodes.contains_key(&id) {
            return Err(format!("{name} {id}: no such node in the cluster file"));
        }
    }
    admin::replace(&nodes, plan, std::time::Duration::from_secs(timeout_secs), config)
}

/// `cluster local`: `count` nodes on loopback, each a `tessera serve` child process with its
/// own data directory under `root`, client port `port` + i - 1 and peer ports from `port` +
/// 100 + 10 (i - 1).
fn cluster_local(count: u32, port: u16, http_port: u16, cores: usize, root: &Path) -> Result<(), String> {
    std::fs::create_dir_all(root).map_err(|error| format!("cannot create {}: {error}", root.display()))?;
    let file = root.join("cluster");
    let lines: Vec<String> = (1..=count)
        .map(|id| {
            let offset = id as u16 - 1;
            format!("{id} 127.0.0.1:{} 127.0.0.1:{} local-{id}", port + offset, port + 100 + 10 * offset)
        })
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n")
        .map_err(|error| format!("cannot write {}: {error}", file.display()))?;
    // The nodes prove this to each other, and administration commands need it too
    // (`--cluster-secret DIR/secret`).
    let secret = root.join("secret");
    write_private(&secret, &(new_secret() + "\n"))?;
    let binary = std::env::current_exe().map_err(|error| error.to_string())?;
    // Pinned, nodes beyond the machine's CPUs would stack on the first ones while others
    // idle (three nodes on two CPUs: two on CPU 0); unpinned, the kernel balances them.
    let cpus = std::thread::available_parallelism().map_or(1, |cpus| cpus.get());
    let pinned = count as usize * cores <= cpus;
    let mut signals = block_stop_signals();
    // A node that exits on its own (it failed, or was killed to try a failover) is reported
    // and reaped when it does, and the others keep running; blocked before the first spawn so
    // that no exit goes unnoticed.
    // SAFETY: `signals` is an initialized set; pthread_sigmask only reads it.
    unsafe {
        libc::sigaddset(&mut signals, libc::SIGCHLD);
        libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut());
    }
    let mut children = Vec::new();
    for id in 1..=count {
        let child = std::process::Command::new(&binary)
            .args(["serve", "--node-id", &id.to_string(), "--cluster"])
            .arg(&file)
            .arg("--cluster-secret")
            .arg(&secret)
            .args(["--listen", &format!("127.0.0.1:{}", port + id as u16 - 1), "--cores", &cores.to_string()])
            .args(["--http-listen", &format!("127.0.0.1:{}", http_port + id as u16 - 1)])
            .args(["--first-cpu", &if pinned { ((id as usize - 1) * cores).to_string() } else { "none".into() }])
            .arg("--data-dir")
            .arg(root.join(format!("node-{id}")))
            .spawn()
            .map_err(|error| format!("cannot start node {id}: {error}"))?;
        children.push((id, child));
    }
    println!(
        "tessera: a local cluster of {count} nodes, clients on 127.0.0.1:{port}..{}, DynamoDB HTTP API on 127.0.0.1:{http_port}..{}",
        port + count as u16 - 1,
        http_port + count as u16 - 1
    );
    loop {
        let mut signal = 0;
        // SAFETY: `signals` is an initialized set; sigwait only writes `signal`.
        unsafe { libc::sigwait(&signals, &mut signal) };
        if signal != libc::SIGCHLD {
            break;
        }
        children.retain_mut(|(id, child)| match child.try_wait() {
            Ok(Some(status)) => {
                tessera_engine::report!("tessera: node {id} exited ({status}); the other nodes keep running");
                false
            }
            _ => true,
        });
        if children.is_empty() {
            return Err("every node of the local cluster has exited".into());
        }
    }
    for (_, child) in &mut children {
        // SAFETY: kill with a child's pid and SIGTERM has no memory effects.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    }
    for (_, mut child) in children {
        let _ = child.wait();
    }
    Ok(())
}

fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: the set is initialized by sigemptyset before use; pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn describe_json(table: &TableDescription) -> Value {
    let key = |key: &KeyAttribute| json!({"AttributeName": key.name, "KeyType": key.key_type.name()});
    json!({
        "TableName": table.name,
        "TableStatus": match table.status {
            TableStatus::Creating => "CREATING",
            TableStatus::Active => "ACTIVE",
            TableStatus::Deleting => "DELETING",
        },
        "PartitionKey": key(&table.key_schema.partition),
        "SortKey": table.key_schema.sort.as_ref().map(key),
        "Partitions": table.partitions,
        "ItemCount": table.item_count,
        "TableSizeBytes": table.size_bytes,
        "CreationDateTimeMs": table.created_at_ms,
    })
}

/// `--condition` and the placeholders of a write.
fn expressions(args: &cli::Write) -> Expressions {
    let Placeholders { names, values } = &args.placeholders;
    Expressions {
        condition: args.condition.clone(),
        names: names.clone().unwrap_or_default().0,
        values: values.clone().unwrap_or_default().0,
    }
}

/// The expressions and placeholders of a read.
fn read_expressions(
    key_condition: Option<&str>,
    filter: Option<&str>,
    projection: Option<&str>,
    placeholders: &Placeholders,
) -> ReadExpressions {
    let Placeholders { names, values } = placeholders;
    ReadExpressions {
        key_condition: key_condition.map(str::to_string),
        filter: filter.map(str::to_string),
        projection: projection.map(str::to_string),
        names: names.clone().unwrap_or_default().0,
        values: values.clone().unwrap_or_default().0,
        select: Select::AllAttributes,
    }
}

/// Prints items one per line, or only how many there are.
fn print_all(items: Vec<tessera_engine::Item>, count_only: bool) {
    if count_only {
        println!("{}", items.len());
    } else {
        items.iter().for_each(|item| println!("{}", item_to_json(item)));
    }
}

/// A connection to `endpoint`.
/// A connection to the node, proving the key the AWS tools would use (environment variables
/// or the shared credentials file), if one is set: a node that checks keys needs it.
fn connect(endpoint: &Endpoint) -> Result<Client, String> {
    let credentials = Credentials::from_environment()?;
    let tls = endpoint.client_tls.clone();
    Client::connect_with(endpoint.address.as_str(), ClientConfig { credentials, tls, ..ClientConfig::default() })
        .map_err(|error| endpoint.error(format!("cannot connect to {}: {error}", endpoint.address)))
}

/// Every item of `scan` read as `segments` segments at once.
fn parallel_scan(endpoint: &Endpoint, scan: Scan, segments: u32) -> Result<Vec<tessera_engine::Item>, String> {
    if segments == 0 {
        return Err("--segments takes a count of at least 1".into());
    }
    let readers: Vec<_> = (0..segments)
        .map(|segment| {
            let (endpoint, scan) = (endpoint.clone(), Scan { segment, total_segments: segments, ..scan.clone() });
            std::thread::spawn(move || -> Result<Vec<tessera_engine::Item>, String> {
                connect(&endpoint)?.scan_all(scan).map_err(|error| endpoint.error(error))
            })
        })
        .collect();
    let mut items = Vec::new();
    for reader in readers {
        items.extend(reader.join().map_err(|_| "a scan thread panicked".to_string())??);
    }
    Ok(items)
}

/// Sends `request`, with the ReturnConsumedCapacity `--return-consumed-capacity` asks for;
/// prints the capacity consumed (DynamoDB JSON) on standard error.
fn call_reporting_capacity(endpoint: &Endpoint, request: &Request, args: &cli::Capacity) -> Result<Response, String> {
    let capacity = args.return_consumed_capacity.unwrap_or_default();
    let (response, consumed) =
        connect(endpoint)?.call_with_capacity(request, capacity).map_err(|error| endpoint.error(error))?;
    for consumed in &consumed {
        eprintln!("{}", serde_json::json!({ "ConsumedCapacity": consumed_capacity_to_json(consumed) }));
    }
    Ok(response)
}

/// Prints the attributes a write returned, if any.
fn print_returned(response: Response) {
    if let Response::Item(Some(item)) = response {
        println!("{}", item_to_json(&item));
    }
}

/// The sort key condition of `--sk OP VALUE_JSON [VALUE_JSON]`.
fn sort_condition(parts: &[SortPart]) -> Result<SortCondition, String> {
    use cli::SortOp::*;
    Ok(match parts {
        [SortPart::Op(Between), SortPart::Value(low), SortPart::Value(high)] => {
            SortCondition::Between(low.clone(), high.clone())
        }
        [SortPart::Op(Between), ..] => return Err("--sk between takes two values".into()),
        [SortPart::Op(op), SortPart::Value(value)] => {
            let value = value.clone();
            match op {
                Eq => SortCondition::Eq(value),
                Lt => SortCondition::Lt(value),
                Le => SortCondition::Le(value),
                Gt => SortCondition::Gt(value),
                Ge => SortCondition::Ge(value),
                BeginsWith => SortCondition::BeginsWith(value),
                Between => unreachable!("matched above"),
            }
        }
        [SortPart::Op(_), _, _] => return Err("--sk takes one value after its operator (between takes two)".into()),
        _ => return Err("--sk takes an operator, then one value (between: two), as in --sk gt '{\"N\":\"5\"}'".into()),
    })
}

fn client_command(endpoint: &Endpoint, command: Command) -> Result<(), String> {
    let failed = |error: ClientError| endpoint.error(error);
    match command {
        Command::Table(TableCommand::Create { name, pk, sk, partitions }) => {
            let schema = KeySchema { partition: pk, sort: sk };
            println!("{}", describe_json(&connect(endpoint)?.create_table(&name, schema, partitions).map_err(failed)?));
        }
        Command::Table(TableCommand::List) => {
            connect(endpoint)?.list_tables().map_err(failed)?.iter().for_each(|name| println!("{name}"))
        }
        Command::Table(TableCommand::Describe { name }) => {
            println!("{}", describe_json(&connect(endpoint)?.describe_table(&name).map_err(failed)?))
        }
        Command::Table(TableCommand::Delete { name }) => {
            println!("{}", describe_json(&connect(endpoint)?.delete_table(&name).map_err(failed)?))
        }
        Command::Put(args) => {
            let request = Request::PutItem {
                return_old: args.return_values == Some(ReturnValues::AllOld),
                expressions: expressions(&args.write),
                table: args.table,
                item: args.item,
                return_old_on_failure: false,
            };
            print_returned(call_reporting_capacity(endpoint, &request, &args.write.capacity)?);
        }
        Command::Update(args) => {
            let request = Request::UpdateItem(UpdateItem {
                expressions: expressions(&args.write),
                return_values: args.return_values.unwrap_or_default(),
                table: args.table,
                key: args.key,
                update: args.update,
                return_old_on_failure: false,
            });
            print_returned(call_reporting_capacity(endpoint, &request, &args.write.capacity)?);
        }
        Command::Get(args) => {
            let request = Request::GetItem {
                table: args.table.clone(),
                key: args.key.clone(),
                consistent_read: args.consistent,
                read: read_expressions(None, None, args.projection.as_deref(), &args.placeholders),
            };
            match call_reporting_capacity(endpoint, &request, &args.capacity)? {
                Response::Item(Some(item)) => println!("{}", item_to_json(&item)),
                _ => return Err(format!("no item with key {} in {}", item_to_json(&args.key), args.table)),
            }
        }
        // DeleteItem in full when a flag asks for more than the deletion.
        Command::Delete(args)
            if args.write.condition.is_some()
                || args.return_values.is_some()
                || args.write.capacity.return_consumed_capacity.is_some() =>
        {
            let request = Request::DeleteItem {
                return_old: args.return_values == Some(ReturnValues::AllOld),
                expressions: expressions(&args.write),
                table: args.table,
                key: args.key,
                return_old_on_failure: false,
            };
            print_returned(call_reporting_capacity(endpoint, &request, &args.write.capacity)?);
        }
        Command::Delete(args) => {
            if connect(endpoint)?.delete_item(&args.table, args.key.clone()).map_err(failed)?.is_none() {
                return Err(format!("no item with key {} in {}", item_to_json(&args.key), args.table));
            }
        }
        Command::Query(args) => {
            let read = &args.read;
            let sort =
                args.sk.as_deref().map(sort_condition).transpose().unwrap_or_else(|error| cli::invalid("query", error));
            let query = Query {
                table: args.table,
                // Without --pk the key condition names the partition key; this field is not read.
                partition_key: args.pk.unwrap_or(AttributeValue::Null),
                sort,
                backward: args.backward,
                limit: args.limit,
                exclusive_start_key: None,
                consistent_read: true,
                read: read_expressions(
                    args.key_condition.as_deref(),
                    read.filter.as_deref(),
                    read.projection.as_deref(),
                    &read.placeholders,
                ),
            };
            print_all(connect(endpoint)?.query_all(query).map_err(failed)?, read.count);
        }
        Command::Scan(args) => {
            let read = &args.read;
            let scan = Scan {
                table: args.table,
                segment: args.segment,
                total_segments: args.total_segments,
                limit: 0,
                exclusive_start_key: None,
                consistent_read: true,
                read: read_expressions(None, read.filter.as_deref(), read.projection.as_deref(), &read.placeholders),
            };
            let items = match args.segments {
                // A parallel scan: one connection and thread per segment.
                Some(segments) => parallel_scan(endpoint, scan, segments)?,
                None => connect(endpoint)?.scan_all(scan).map_err(failed)?,
            };
            print_all(items, read.count);
        }
        Command::Serve(_) | Command::Cluster(_) => unreachable!("main runs serve and cluster"),
    }
    Ok(())
}
