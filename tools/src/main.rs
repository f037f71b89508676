//! `tessera`: runs a node (`serve`) and talks to one (every other command). Items go in and
//! out as DynamoDB JSON; failures print one line and exit non-zero.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

mod admin;

use serde_json::{json, Value};
use tessera_engine::paxos;
use tessera_engine::{AttributeValue, KeyAttribute, KeySchema, KeyType, StoreConfig};
use tessera_net::client::Client;
use tessera_net::json::{consumed_capacity_to_json, item_from_text, item_to_json, value_from_json};
use tessera_net::{
    Auth, Cluster, ClusterNode, HttpConfig, Server, ServerConfig, APPLY_DELAY_DEFAULT, LOG_RETAIN_DEFAULT,
};
use tessera_wire::{
    Expressions, Query, ReadExpressions, Request, Response, ReturnConsumedCapacity, ReturnValues, Scan, Select,
    SortCondition, TableDescription, TableStatus, UpdateItem,
};

/// mimalloc rather than glibc's allocator: every request allocates and frees (items, frames,
/// tasks); measured under tessera-load it cut server CPU per operation ~5% and the median
/// latency ~12% (bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: tessera COMMAND
  serve [--data-dir DIR] [--listen ADDR] [--cores N] [--first-cpu C|none] [--cache-mib N]
        [--node-id N --cluster FILE [--log-retain ENTRIES] [--apply-delay-ms MS]]
        run a node (defaults: ./data, 127.0.0.1:7400, every core pinned from CPU 0, or not
        pinned with --first-cpu none, 256 MiB of cache per core);
        with --node-id and --cluster, a member of a cluster (FILE: one node a line,
        ID CLIENT_ADDRESS PEER_ADDRESS [ZONE] [spare]; every node must run the same --cores); a leader
        keeps up to ENTRIES (default 50000) log entries for a replica that has not
        checkpointed them, and sends one that lags further a snapshot; a core whose chosen
        entries have waited more than MS (default 100) to be applied refuses new writes with
        ThrottlingException (retryable) until its applier catches up
        [--http-listen ADDR|none] [--auth none|sigv4] [--keys FILE]
        DynamoDB's HTTP API (default 127.0.0.1:8000) for the AWS SDKs and CLI: with --auth
        sigv4 every request's Signature Version 4 is checked against FILE's keys (one
        ACCESS_KEY_ID:SECRET_ACCESS_KEY a line); with none any well-formed credentials pass;
        the default is none when every listener is on loopback, else sigv4
  cluster local [--nodes 3] [--port 7400] [--http-port 8000] [--cores 1] [--data-dir data-cluster]
        run a cluster of N nodes on loopback, each a serve process (clients on PORT, PORT+1...,
        DynamoDB's HTTP API on HTTP_PORT, HTTP_PORT+1...), pinned to CPUs of their own if the
        machine has enough, else not pinned
  cluster status --cluster FILE
        every replica each reachable node hosts: its group, leader, commit and applied slots
  cluster replace --cluster FILE --lost N --log L --full F [--timeout SECS]
        replace lost node N in every group it is in, one configuration change at a time at
        each group's leader: add a log replica on L (quorum durability restored at once),
        remove N, add a full replica on F, and once F has caught up remove L and retire its
        replicas; L and F are usually spares (ID ... spare in FILE); safe to run again
client commands, against --endpoint ADDR (default 127.0.0.1:7400), given before the command:
  table create NAME --pk NAME:TYPE [--sk NAME:TYPE] [--partitions N]   (TYPE: S, N or B)
  table list | table describe NAME | table delete NAME
  put TABLE ITEM_JSON          e.g. put users '{\"id\":{\"S\":\"a\"},\"age\":{\"N\":\"30\"}}'
  delete TABLE KEY_JSON
  update TABLE KEY_JSON --update EXPR   e.g. --update 'SET #c = #c + :one'
        put, delete and update also take [--condition EXPR] [--names JSON] [--values JSON]
        [--return-values WHAT]: --names '{\"#c\":\"count\"}', --values '{\":one\":{\"N\":\"1\"}}';
        WHAT is NONE or ALL_OLD (put, delete) or also UPDATED_OLD, ALL_NEW, UPDATED_NEW (update);
        the attributes returned are printed as DynamoDB JSON
  query TABLE --key-condition EXPR [--filter EXPR] [--projection EXPR] [--limit N] [--backward]
        e.g. --key-condition 'customer = :c AND n BETWEEN :lo AND :hi'
  query TABLE --pk VALUE_JSON [--sk OP VALUE_JSON [VALUE_JSON]] [...]   the same, without expressions
        OP: eq lt le gt ge between begins_with; VALUE_JSON e.g. '{\"N\":\"5\"}'
  scan TABLE [--filter EXPR] [--projection EXPR] [--segments N | --segment S --total-segments T]
        --segments N reads N segments in parallel
  get TABLE KEY_JSON [--projection EXPR] [--consistent]
        put, delete, update and get take [--return-consumed-capacity TOTAL|INDEXES] and print
        the capacity consumed as {\"ConsumedCapacity\": ...} on standard error
  query, scan and get take --names JSON and --values JSON like the writes; query and scan take
  --count to print how many items match instead of the items
query and scan print one item per line, following every page.";

const ENDPOINT_DEFAULT: &str = "127.0.0.1:7400";
const HTTP_LISTEN_DEFAULT: &str = "127.0.0.1:8000";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut endpoint = ENDPOINT_DEFAULT.to_string();
    if args.first().map(String::as_str) == Some("--endpoint") && args.len() >= 2 {
        endpoint = args.remove(1);
        args.remove(0);
    }
    let result = match args.first().map(String::as_str) {
        _ if args.iter().any(|arg| arg == "--help" || arg == "-h") => {
            println!("{USAGE}");
            Ok(())
        }
        Some("serve") => only_flags(&args[1..], SERVE_FLAGS).and_then(|()| serve(&args[1..])),
        Some("cluster") if args.get(1).map(String::as_str) == Some("local") => {
            only_flags(&args[2..], &["--nodes", "--port", "--http-port", "--cores", "--data-dir"])
                .and_then(|()| cluster_local(&args[2..]))
        }
        Some("cluster") if args.get(1).map(String::as_str) == Some("status") => only_flags(&args[2..], &["--cluster"])
            .and_then(|()| required_flag(&args[2..], "--cluster"))
            .and_then(read_cluster_file)
            .and_then(|nodes| admin::status(&nodes)),
        Some("cluster") if args.get(1).map(String::as_str) == Some("replace") => {
            only_flags(&args[2..], &["--cluster", "--lost", "--log", "--full", "--timeout"])
                .and_then(|()| replace(&args[2..]))
        }
        Some("help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(_) => client_command(&endpoint, &args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tessera_engine::report!("tessera: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Every flag `serve` takes; each is followed by its value.
const SERVE_FLAGS: &[&str] = &[
    "--data-dir",
    "--listen",
    "--cores",
    "--first-cpu",
    "--cache-mib",
    "--node-id",
    "--cluster",
    "--log-retain",
    "--apply-delay-ms",
    "--http-listen",
    "--auth",
    "--keys",
];

/// Refuses an argument that is not one of `flags` (each followed by its value): a mistyped
/// flag must not start a server on defaults the operator did not mean.
fn only_flags(args: &[String], flags: &[&str]) -> Result<(), String> {
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if !flags.contains(&arg.as_str()) {
            return Err(format!(
                "unknown argument {arg:?} (the flags here: {}; tessera help lists them all)",
                flags.join(" ")
            ));
        }
        rest.next();
    }
    Ok(())
}

/// The value after flag `name` in `args`, if the flag is there.
fn flag<'a>(args: &'a [String], name: &str) -> Result<Option<&'a str>, String> {
    match args.iter().position(|arg| arg == name) {
        Some(at) => args.get(at + 1).map(|value| Some(value.as_str())).ok_or_else(|| format!("{name} needs a value")),
        None => Ok(None),
    }
}

fn required_flag<'a>(args: &'a [String], name: &str) -> Result<&'a str, String> {
    flag(args, name)?.ok_or_else(|| format!("{name} is required"))
}

fn number_flag<T: std::str::FromStr>(args: &[String], name: &str) -> Result<Option<T>, String> {
    flag(args, name)?.map(|text| text.parse().map_err(|_| format!("{name} takes a number, not {text:?}"))).transpose()
}

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_e`, mimalloc.h; the Rust
/// bindings name no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn serve(args: &[String]) -> Result<(), String> {
    // A server keeps the memory it freed rather than returning it to the kernel a second
    // later: returned memory comes back as fresh pages the kernel must zero (2 MiB at a time
    // with transparent huge pages), which took ~6% of a 3-node cluster's CPU under puts; kept,
    // the cluster's peak rose ~9% (bench/RESULTS.md).
    // SAFETY: sets a process-wide allocator option; any thread may, at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let cores_available = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    let mut store = StoreConfig::default();
    if let Some(mib) = number_flag::<usize>(args, "--cache-mib")? {
        store.cache_pages = mib * 256;
    }
    let config = ServerConfig {
        data_dir: PathBuf::from(flag(args, "--data-dir")?.unwrap_or("data")),
        listen: flag(args, "--listen")?
            .unwrap_or(ENDPOINT_DEFAULT)
            .parse()
            .map_err(|error| format!("--listen takes ADDRESS:PORT: {error}"))?,
        cores: number_flag(args, "--cores")?.unwrap_or(cores_available),
        first_cpu: match flag(args, "--first-cpu")? {
            Some("none") => None,
            _ => Some(number_flag(args, "--first-cpu")?.unwrap_or(0)),
        },
        store,
        cluster: match (number_flag::<u32>(args, "--node-id")?, flag(args, "--cluster")?) {
            (None, None) => None,
            (Some(node), Some(file)) => Some(Cluster {
                log_retain: number_flag(args, "--log-retain")?.unwrap_or(LOG_RETAIN_DEFAULT),
                apply_delay_max: number_flag(args, "--apply-delay-ms")?
                    .map_or(APPLY_DELAY_DEFAULT, std::time::Duration::from_millis),
                ..read_cluster(node, file)?
            }),
            _ => return Err("a cluster member needs both --node-id N and --cluster FILE".into()),
        },
        http: None,
    };
    let config = ServerConfig { http: http_config(args, &config)?, ..config };
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
    let http = match (&config.http, server.http_address) {
        (Some(http), Some(address)) => {
            let auth = match &http.auth {
                Auth::None => "auth none: any well-formed credentials".to_string(),
                Auth::SigV4(keys) => format!("auth sigv4: {} access keys", keys.len()),
            };
            format!("; DynamoDB HTTP API on {address} ({auth})")
        }
        _ => String::new(),
    };
    println!(
        "tessera: serving on {} ({role}, {} cores, data in {}){http}",
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

/// The HTTP endpoint `serve`'s flags ask for: `--http-listen ADDR|none`, `--auth none|sigv4`,
/// `--keys FILE`. Without `--auth`, signatures are checked when keys are given or a listener
/// is off loopback.
fn http_config(args: &[String], config: &ServerConfig) -> Result<Option<HttpConfig>, String> {
    let listen = match flag(args, "--http-listen")?.unwrap_or(HTTP_LISTEN_DEFAULT) {
        "none" => return Ok(None),
        text => {
            text.parse::<SocketAddr>().map_err(|error| format!("--http-listen takes ADDRESS:PORT or none: {error}"))?
        }
    };
    let keys = flag(args, "--keys")?
        .map(|path| {
            let text =
                std::fs::read_to_string(path).map_err(|error| format!("cannot read the keys file {path}: {error}"))?;
            Auth::parse_keys(&text).map_err(|error| format!("the keys file {path}: {error}"))
        })
        .transpose()?;
    let loopback = listen.ip().is_loopback() && config.listen.ip().is_loopback();
    let auth = match (flag(args, "--auth")?, keys) {
        (Some("none"), _) => Auth::None,
        // Keys given are keys to check.
        (Some("sigv4") | None, Some(keys)) => Auth::SigV4(keys),
        (None, None) if loopback => Auth::None,
        (Some("sigv4") | None, None) => {
            return Err(
                "checking signatures (--auth sigv4, the default off loopback) needs --keys FILE; --auth none accepts any credentials"
                    .into(),
            )
        }
        (Some(other), _) => return Err(format!("--auth takes none or sigv4, not {other:?}")),
    };
    Ok(Some(HttpConfig { listen, auth }))
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
fn replace(args: &[String]) -> Result<(), String> {
    let nodes = read_cluster_file(required_flag(args, "--cluster")?)?;
    let node = |name: &str| -> Result<u32, String> {
        let id = number_flag::<u32>(args, name)?.ok_or_else(|| format!("{name} is required"))?;
        match nodes.contains_key(&id) {
            true => Ok(id),
            false => Err(format!("{name} {id}: no such node in the cluster file")),
        }
    };
    let plan = admin::Replacement { lost: node("--lost")?, log: node("--log")?, full: node("--full")? };
    let timeout = std::time::Duration::from_secs(number_flag(args, "--timeout")?.unwrap_or(600));
    admin::replace(&nodes, plan, timeout)
}

/// `cluster local`: N nodes on loopback, each a `tessera serve` child process with its own
/// data directory, client port `--port` + i - 1 and peer ports from `--port` + 100 + 10 (i - 1).
fn cluster_local(args: &[String]) -> Result<(), String> {
    let count: u32 = number_flag(args, "--nodes")?.unwrap_or(3);
    let port: u16 = number_flag(args, "--port")?.unwrap_or(7400);
    let http_port: u16 = number_flag(args, "--http-port")?.unwrap_or(8000);
    let cores: usize = number_flag(args, "--cores")?.unwrap_or(1);
    let root = PathBuf::from(flag(args, "--data-dir")?.unwrap_or("data-cluster"));
    std::fs::create_dir_all(&root).map_err(|error| format!("cannot create {}: {error}", root.display()))?;
    let file = root.join("cluster");
    let lines: Vec<String> = (1..=count)
        .map(|id| {
            let offset = id as u16 - 1;
            format!("{id} 127.0.0.1:{} 127.0.0.1:{} local-{id}", port + offset, port + 100 + 10 * offset)
        })
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n")
        .map_err(|error| format!("cannot write {}: {error}", file.display()))?;
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

fn key_attribute(text: &str) -> Result<KeyAttribute, String> {
    let (name, kind) = text.rsplit_once(':').ok_or_else(|| format!("key {text:?} must be NAME:TYPE, such as id:S"))?;
    let key_type = match kind {
        "S" => KeyType::S,
        "N" => KeyType::N,
        "B" => KeyType::B,
        other => return Err(format!("key type {other:?} must be S, N or B")),
    };
    Ok(KeyAttribute { name: name.to_string(), key_type })
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

fn value_arg(text: &str, what: &str) -> Result<AttributeValue, String> {
    let json: Value = serde_json::from_str(text).map_err(|error| format!("{what} is not valid JSON: {error}"))?;
    value_from_json(&json, what)
}

/// `--names` and `--values`: ExpressionAttributeNames and ExpressionAttributeValues.
type Placeholders = (Vec<(String, String)>, Vec<(String, AttributeValue)>);

fn placeholders(args: &[String]) -> Result<Placeholders, String> {
    let json = |name: &str| -> Result<serde_json::Map<String, Value>, String> {
        flag(args, name)?.map_or(Ok(serde_json::Map::new()), |text| match serde_json::from_str(text) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(format!("{name} takes a JSON object")),
        })
    };
    let names = json("--names")?
        .into_iter()
        .map(|(placeholder, name)| match name {
            Value::String(name) => Ok((placeholder, name)),
            _ => Err(format!("--names: {placeholder} must map to a string")),
        })
        .collect::<Result<_, String>>()?;
    let values = json("--values")?
        .into_iter()
        .map(|(placeholder, value)| Ok((placeholder.clone(), value_from_json(&value, &placeholder)?)))
        .collect::<Result<_, String>>()?;
    Ok((names, values))
}

/// `--condition` and the placeholders of a write.
fn expressions(args: &[String]) -> Result<Expressions, String> {
    let (names, values) = placeholders(args)?;
    Ok(Expressions { condition: flag(args, "--condition")?.map(str::to_string), names, values })
}

/// `--key-condition`, `--filter`, `--projection` and the placeholders of a read.
fn read_expressions(args: &[String]) -> Result<ReadExpressions, String> {
    let (names, values) = placeholders(args)?;
    let text = |name: &str| flag(args, name).map(|text| text.map(str::to_string));
    Ok(ReadExpressions {
        key_condition: text("--key-condition")?,
        filter: text("--filter")?,
        projection: text("--projection")?,
        names,
        values,
        select: Select::AllAttributes,
    })
}

fn return_values(args: &[String], operation: &str) -> Result<ReturnValues, String> {
    flag(args, "--return-values")?.map_or(Ok(ReturnValues::None), |name| ReturnValues::parse(name, operation))
}

/// Whether `--count` asked for the number of matching items (over every page) rather than
/// the items.
fn query_count(args: &[String]) -> bool {
    args.iter().any(|arg| arg == "--count")
}

/// Prints items one per line, or only how many there are.
fn print_all(items: Vec<tessera_engine::Item>, count_only: bool) {
    if count_only {
        println!("{}", items.len());
    } else {
        items.iter().for_each(|item| println!("{}", item_to_json(item)));
    }
}

/// Every item of `scan` read as `segments` segments at once.
fn parallel_scan(endpoint: &str, scan: Scan, segments: u32) -> Result<Vec<tessera_engine::Item>, String> {
    if segments == 0 {
        return Err("--segments takes a count of at least 1".into());
    }
    let readers: Vec<_> = (0..segments)
        .map(|segment| {
            let (endpoint, scan) = (endpoint.to_string(), Scan { segment, total_segments: segments, ..scan.clone() });
            std::thread::spawn(move || -> Result<Vec<tessera_engine::Item>, String> {
                let mut client =
                    Client::connect(&endpoint).map_err(|error| format!("cannot connect to {endpoint}: {error}"))?;
                client.scan_all(scan).map_err(|error| error.to_string())
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
fn call_reporting_capacity(client: &mut Client, request: &Request, args: &[String]) -> Result<Response, String> {
    let capacity = match flag(args, "--return-consumed-capacity")? {
        None | Some("NONE") => ReturnConsumedCapacity::None,
        Some("TOTAL") => ReturnConsumedCapacity::Total,
        Some("INDEXES") => ReturnConsumedCapacity::Indexes,
        Some(other) => return Err(format!("--return-consumed-capacity takes NONE, TOTAL or INDEXES, not {other:?}")),
    };
    let (response, consumed) = client.call_with_capacity(request, capacity).map_err(|error| error.to_string())?;
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

fn client_command(endpoint: &str, args: &[String]) -> Result<(), String> {
    let arg = |index: usize| args.get(index).map(String::as_str).ok_or_else(|| USAGE.to_string());
    let mut client = Client::connect(endpoint).map_err(|error| format!("cannot connect to {endpoint}: {error}"))?;
    let failed = |error: tessera_net::client::ClientError| error.to_string();
    match arg(0)? {
        "table" => match arg(1)? {
            "create" => {
                let partition = key_attribute(flag(args, "--pk")?.ok_or("table create needs --pk NAME:TYPE")?)?;
                let sort = flag(args, "--sk")?.map(key_attribute).transpose()?;
                let partitions = number_flag(args, "--partitions")?.unwrap_or(0);
                let table = client.create_table(arg(2)?, KeySchema { partition, sort }, partitions).map_err(failed)?;
                println!("{}", describe_json(&table));
            }
            "list" => client.list_tables().map_err(failed)?.iter().for_each(|name| println!("{name}")),
            "describe" => println!("{}", describe_json(&client.describe_table(arg(2)?).map_err(failed)?)),
            "delete" => println!("{}", describe_json(&client.delete_table(arg(2)?).map_err(failed)?)),
            other => return Err(format!("unknown table command {other:?}\n{USAGE}")),
        },
        "put" => {
            let return_old = return_values(args, "PutItem")? == ReturnValues::AllOld;
            let request = Request::PutItem {
                table: arg(1)?.to_string(),
                item: item_from_text(arg(2)?)?,
                return_old,
                expressions: expressions(args)?,
                return_old_on_failure: false,
            };
            print_returned(call_reporting_capacity(&mut client, &request, args)?);
        }
        "update" => {
            let request = Request::UpdateItem(UpdateItem {
                table: arg(1)?.to_string(),
                key: item_from_text(arg(2)?)?,
                update: flag(args, "--update")?.ok_or("update needs --update EXPR")?.to_string(),
                expressions: expressions(args)?,
                return_values: return_values(args, "UpdateItem")?,
                return_old_on_failure: false,
            });
            print_returned(call_reporting_capacity(&mut client, &request, args)?);
        }
        "get" => {
            let request = Request::GetItem {
                table: arg(1)?.to_string(),
                key: item_from_text(arg(2)?)?,
                consistent_read: args.iter().any(|arg| arg == "--consistent"),
                read: read_expressions(args)?,
            };
            match call_reporting_capacity(&mut client, &request, args)? {
                Response::Item(Some(item)) => println!("{}", item_to_json(&item)),
                _ => return Err(format!("no item with key {} in {}", arg(2)?, arg(1)?)),
            }
        }
        "delete"
            if ["--condition", "--return-values", "--return-consumed-capacity"]
                .iter()
                .any(|name| args.iter().any(|arg| arg == name)) =>
        {
            let request = Request::DeleteItem {
                table: arg(1)?.to_string(),
                key: item_from_text(arg(2)?)?,
                return_old: return_values(args, "DeleteItem")? == ReturnValues::AllOld,
                expressions: expressions(args)?,
                return_old_on_failure: false,
            };
            print_returned(call_reporting_capacity(&mut client, &request, args)?);
        }
        "delete" => {
            if client.delete_item(arg(1)?, item_from_text(arg(2)?)?).map_err(failed)?.is_none() {
                return Err(format!("no item with key {} in {}", arg(2)?, arg(1)?));
            }
        }
        "query" => {
            let read = read_expressions(args)?;
            let partition_key = match (flag(args, "--pk")?, &read.key_condition) {
                (Some(text), _) => value_arg(text, "--pk")?,
                // The key condition names the partition key; this field is not read.
                (None, Some(_)) => AttributeValue::Null,
                (None, None) => return Err("query needs --key-condition EXPR or --pk VALUE_JSON".into()),
            };
            let sort = match args.iter().position(|arg| arg == "--sk") {
                None => None,
                Some(at) => {
                    let value = |offset: usize| {
                        args.get(at + offset)
                            .ok_or("--sk OP needs a value".to_string())
                            .and_then(|text| value_arg(text, "--sk"))
                    };
                    Some(match args.get(at + 1).map(String::as_str) {
                        Some("eq") => SortCondition::Eq(value(2)?),
                        Some("lt") => SortCondition::Lt(value(2)?),
                        Some("le") => SortCondition::Le(value(2)?),
                        Some("gt") => SortCondition::Gt(value(2)?),
                        Some("ge") => SortCondition::Ge(value(2)?),
                        Some("between") => SortCondition::Between(value(2)?, value(3)?),
                        Some("begins_with") => SortCondition::BeginsWith(value(2)?),
                        other => {
                            return Err(format!(
                                "--sk operator {other:?} must be eq, lt, le, gt, ge, between or begins_with"
                            ))
                        }
                    })
                }
            };
            let query = Query {
                table: arg(1)?.to_string(),
                partition_key,
                sort,
                backward: args.iter().any(|arg| arg == "--backward"),
                limit: number_flag(args, "--limit")?.unwrap_or(0),
                exclusive_start_key: None,
                consistent_read: true,
                read,
            };
            print_all(client.query_all(query).map_err(failed)?, query_count(args));
        }
        "scan" => {
            let scan = Scan {
                table: arg(1)?.to_string(),
                segment: number_flag(args, "--segment")?.unwrap_or(0),
                total_segments: number_flag(args, "--total-segments")?.unwrap_or(1),
                limit: 0,
                exclusive_start_key: None,
                consistent_read: true,
                read: read_expressions(args)?,
            };
            let items = match number_flag::<u32>(args, "--segments")? {
                // A parallel scan: one connection and thread per segment.
                Some(segments) => parallel_scan(endpoint, scan, segments)?,
                None => client.scan_all(scan).map_err(failed)?,
            };
            print_all(items, query_count(args));
        }
        other => return Err(format!("unknown command {other:?}\n{USAGE}")),
    }
    Ok(())
}
