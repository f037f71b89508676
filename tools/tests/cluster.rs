//! A three-node cluster of real `tessera serve` processes on loopback, under concurrent
//! clients: SIGKILL the leader of a partition and another takes its writes within 2 s (the
//! election timeout is 300-600 ms), with every acknowledged write readable (ConsistentRead);
//! the killed node restarts and catches up; a node paused with SIGSTOP misses writes and
//! catches up after SIGCONT; a follower killed while its leader's log moves past it recovers
//! by snapshot.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_engine::paxos::{Ballot, Envelope, Member, Message, Value};
use tessera_engine::{Item, KeySchema, KeyType};
use tessera_wire::client::{Client, ClientConfig, ClientError, Credentials, ItemBuilder};
use tessera_wire::replication::{encode_batch, PeerMessage};
use tessera_wire::{ErrorCode, MessageType, PartitionOp, ReadExpressions, Request, Response};

use common::{crash_api, exchange, free_addresses, post};

mod common;

const BINARY: &str = env!("CARGO_BIN_EXE_tessera");
const TABLE: &str = "orders";
/// The cluster's secret the test clusters share.
const SECRET: &str = "a-test-cluster-secret-0123456789";

struct Cluster {
    root: PathBuf,
    file: PathBuf,
    /// The cluster's secret, in a file every node is started with.
    secret: PathBuf,
    clients: BTreeMap<u32, SocketAddr>,
    /// Each node's DynamoDB HTTP endpoint (fixed, like the client addresses: one the kernel
    /// chose at start could be another node's, taken while that node is down).
    https: BTreeMap<u32, SocketAddr>,
    /// Each node's peer address (core 0's port).
    peers: BTreeMap<u32, SocketAddr>,
    nodes: BTreeMap<u32, Child>,
    /// Flags every node is started with, beyond the usual.
    flags: Vec<String>,
    /// One cluster at a time: three servers per test, run side by side on a two-CPU machine,
    /// starve each other into timeouts that say nothing about the code.
    _serial: std::sync::MutexGuard<'static, ()>,
}

static SERIAL: Mutex<()> = Mutex::new(());

impl Cluster {
    fn start(name: &str) -> Cluster {
        Cluster::start_with(name, &[])
    }

    fn start_with(name: &str, flags: &[&str]) -> Cluster {
        Cluster::start_with_spares(name, flags, 0)
    }

    /// Nodes 1-3, and `spares` more (4, 5...) marked spare in the cluster file: running, in no
    /// group until a configuration change adds them.
    fn start_with_spares(name: &str, flags: &[&str], spares: u32) -> Cluster {
        let root = std::env::temp_dir().join(format!("tessera-cluster-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let count = 3 + spares;
        let mut addresses = free_addresses(3 * count as usize).into_iter();
        let mut take = || (1..=count).map(|id| (id, addresses.next().unwrap())).collect::<BTreeMap<u32, SocketAddr>>();
        let (clients, https, peers) = (take(), take(), take());
        let lines: Vec<String> = clients
            .iter()
            .map(|(&id, client)| format!("{id} {client} {}{}", peers[&id], if id > 3 { " spare" } else { "" }))
            .collect();
        let file = root.join("cluster");
        std::fs::write(&file, lines.join("\n")).unwrap();
        let secret = root.join("secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        let serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let flags = flags.iter().map(|flag| flag.to_string()).collect();
        let mut cluster =
            Cluster { root, file, secret, clients, https, peers, nodes: BTreeMap::new(), flags, _serial: serial };
        for id in 1..=count {
            cluster.start_node(id);
        }
        cluster
    }

    fn start_node(&mut self, id: u32) {
        let mut child = Command::new(BINARY)
            .args(["serve", "--node-id", &id.to_string(), "--cores", "1", "--cache-mib", "64"])
            // The nodes spread over the machine's CPUs rather than all on the first.
            .args(["--first-cpu", &(id as usize - 1).to_string(), "--cluster"])
            .arg(&self.file)
            .arg("--cluster-secret")
            .arg(&self.secret)
            .args(["--listen", &self.clients[&id].to_string(), "--http-listen", &self.https[&id].to_string()])
            .arg("--data-dir")
            .arg(self.root.join(format!("node-{id}")))
            .args(&self.flags)
            .stdout(Stdio::piped())
            .stderr(self.log_file(id))
            .spawn()
            .expect("start tessera serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.contains("serving"), "node {id} did not start: {line}\n{}", self.log(id));
        self.nodes.insert(id, child);
    }

    /// Where node `id`'s standard error goes (appended across restarts).
    fn log_file(&self, id: u32) -> std::fs::File {
        let path = self.root.join(format!("node-{id}.log"));
        std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap()
    }

    fn log(&self, id: u32) -> String {
        std::fs::read_to_string(self.root.join(format!("node-{id}.log"))).unwrap_or_default()
    }

    fn client(&self, id: u32) -> Client {
        Client::connect(self.clients[&id]).expect("connect")
    }

    /// A client proving the cluster's secret, as administration requests must.
    fn admin(&self, id: u32) -> Client {
        let config = ClientConfig { credentials: Some(Credentials::cluster(SECRET)), ..ClientConfig::default() };
        Client::connect_with(self.clients[&id], config).expect("connect")
    }

    /// Waits until every node in the groups knows the table (each applies the catalog's
    /// entry on its own).
    fn wait_for_table(&self) {
        for address in self.clients.values().take(3) {
            wait_until("the table reaching every node", Duration::from_secs(5), || {
                Client::connect(address).unwrap().describe_table(TABLE).is_ok()
            });
        }
    }

    /// Once every node knows the table, writes items 0..24 through the nodes in turn: a
    /// partition's leader is elected where its first write arrives, so leaders spread.
    fn spread_leaders(&self) {
        self.wait_for_table();
        for n in 0..24u64 {
            self.client(n as u32 % 3 + 1).put_item(TABLE, item(n)).unwrap();
        }
    }

    /// `tessera cluster replace` of lost node 2 by a log replica on 4 and a full one on 5.
    fn replace_node_2(&self, timeout: &str) -> std::process::Output {
        Command::new(BINARY)
            .args(["cluster", "replace", "--cluster"])
            .arg(&self.file)
            .arg("--cluster-secret")
            .arg(&self.secret)
            .args(["--lost", "2", "--log", "4", "--full", "5", "--timeout", timeout])
            .output()
            .unwrap()
    }

    fn node_at(&self, address: SocketAddr) -> u32 {
        *self.clients.iter().find(|(_, client)| **client == address).expect("a node's address").0
    }

    fn signal(&self, id: u32, signal: libc::c_int) {
        // SAFETY: kill with a child's pid has no memory effects.
        unsafe { libc::kill(self.nodes[&id].id() as libc::pid_t, signal) };
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.nodes.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn key(n: u64) -> Item {
    ItemBuilder::new().s("id", format!("k{n}")).build()
}

fn item(n: u64) -> Item {
    ItemBuilder::new().s("id", format!("k{n}")).n("n", n as i64).build()
}

/// An eventually consistent read at one node, without following it elsewhere.
fn local_read(address: SocketAddr, n: u64) -> Option<Item> {
    let mut client = Client::connect(address).ok()?;
    let request =
        Request::GetItem { table: TABLE.into(), key: key(n), consistent_read: false, read: ReadExpressions::default() };
    match client.call(&request).ok()? {
        Response::Item(item) => item,
        _ => None,
    }
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn all_readable(cluster: &Cluster, via: u32, keys: &[u64]) {
    let mut client = cluster.client(via);
    for &n in keys {
        assert_eq!(client.get_item(TABLE, key(n)).unwrap(), Some(item(n)), "acknowledged k{n} is lost");
    }
}

#[test]
fn a_cluster_survives_sigkill_and_sigstop_of_its_nodes() {
    let mut cluster = Cluster::start("faults");
    cluster.client(1).create_table(TABLE, KeySchema::hash_only("id", KeyType::S), 1).unwrap();
    cluster.wait_for_table();
    // Concurrent clients, one per node, each following NotLeader to the partition's leader.
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..3u64)
        .map(|writer| {
            let (address, acknowledged) = (cluster.clients[&(writer as u32 + 1)], acknowledged.clone());
            std::thread::spawn(move || {
                let mut client = Client::connect(address).unwrap();
                for n in (0..60).map(|i| writer * 1000 + i) {
                    client.put_item(TABLE, item(n)).unwrap();
                    acknowledged.lock().unwrap().push(n);
                }
                client.peer_address().unwrap()
            })
        })
        .collect();
    let leader_address = writers.into_iter().map(|writer| writer.join().unwrap()).last().unwrap();
    let leader = cluster.node_at(leader_address);
    let written: Vec<u64> = acknowledged.lock().unwrap().clone();
    assert_eq!(written.len(), 180);

    // SIGKILL the partition's leader: another takes writes within 2 s.
    cluster.signal(leader, libc::SIGKILL);
    let _ = cluster.nodes.get_mut(&leader).unwrap().wait();
    let survivor = (1..=3).find(|&id| id != leader).unwrap();
    let killed = Instant::now();
    let mut client = cluster.client(survivor);
    client.put_item(TABLE, item(5000)).unwrap();
    let failover = killed.elapsed();
    println!("after SIGKILL of the leader (node {leader}), a write was acknowledged in {failover:?}");
    assert!(failover < Duration::from_secs(2), "failover took {failover:?}");
    let new_leader = cluster.node_at(client.peer_address().unwrap());
    assert_ne!(new_leader, leader);
    let log = cluster.log(new_leader);
    assert!(log.contains("table 1 partition 0: this node leads it (ballot "), "node {new_leader} logged:\n{log}");
    all_readable(&cluster, survivor, &written);

    // The killed node restarts and catches up (read there, eventually consistent).
    cluster.start_node(leader);
    let address = cluster.clients[&leader];
    wait_until("the restarted node catching up", Duration::from_secs(10), || {
        written.iter().chain([&5000]).all(|&n| local_read(address, n) == Some(item(n)))
    });

    // A follower paused with SIGSTOP misses writes, then catches up after SIGCONT.
    let paused = (1..=3).find(|&id| id != new_leader).unwrap();
    cluster.signal(paused, libc::SIGSTOP);
    let via = (1..=3).find(|&id| id != paused).unwrap();
    let mut client = cluster.client(via);
    for n in 6000..6020 {
        client.put_item(TABLE, item(n)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    cluster.signal(paused, libc::SIGCONT);
    // Its core's timer fired 300 ms late, and it says so.
    wait_until("the paused node reporting its lateness", Duration::from_secs(5), || {
        cluster.log(paused).contains("tessera: core 0 ran ")
    });
    let address = cluster.clients[&paused];
    wait_until("the paused node catching up", Duration::from_secs(10), || {
        (6000..6020).all(|n| local_read(address, n) == Some(item(n)))
    });
    all_readable(&cluster, paused, &(6000..6020).collect::<Vec<_>>());
}

/// Requests that span partitions (BatchWriteItem, BatchGetItem, Scan) work at any node of a
/// cluster with strong consistency: the parts whose partitions another node leads are sent
/// to it.
#[test]
fn multi_partition_requests_work_at_every_node() {
    use tessera_engine::Item;
    use tessera_wire::{TableKeys, Write};
    let cluster = Cluster::start("spanning");
    let created = cluster.client(1).create_table(TABLE, KeySchema::hash_only("id", KeyType::S), 8).unwrap();
    // Chosen, and on its way to every node: CREATING until each node's DescribeTable says ACTIVE.
    assert_eq!(created.status, tessera_wire::TableStatus::Creating);
    cluster.spread_leaders();
    for address in cluster.clients.values() {
        let described = Client::connect(address).unwrap().describe_table(TABLE).unwrap();
        assert_eq!(described.status, tessera_wire::TableStatus::Active);
    }
    for via in 1..=3u32 {
        let mut client = cluster.client(via);
        let base = 100 * u64::from(via);
        let writes: Vec<Write> = (base..base + 25).map(|n| Write::Put { table: TABLE.into(), item: item(n) }).collect();
        // Capacity is counted for every write, those another node took included (one unit
        // each: new items under 1 KB).
        let total = tessera_wire::ReturnConsumedCapacity::Total;
        let (unprocessed, consumed) = match client.call_with_capacity(&Request::BatchWriteItem(writes), total).unwrap()
        {
            (Response::BatchWriteItem { unprocessed }, consumed) => (unprocessed, consumed),
            other => panic!("{other:?}"),
        };
        assert!(unprocessed.is_empty(), "{unprocessed:?}");
        let units: f64 = consumed.iter().map(|part| part.write_units).sum();
        assert_eq!(units, 25.0, "write units of a BatchWriteItem at node {via}: {consumed:?}");
        let keys: Vec<Item> = (base..base + 25).map(key).collect();
        let tables =
            vec![TableKeys { table: TABLE.into(), keys, consistent_read: true, read: ReadExpressions::default() }];
        match client.call(&Request::BatchGetItem(tables)).unwrap() {
            Response::BatchGetItem { responses, unprocessed } => {
                assert!(unprocessed.is_empty());
                assert_eq!(responses[0].1.len(), 25, "BatchGetItem at node {via}");
            }
            other => panic!("{other:?}"),
        }
    }
    // A request a node forwarded is never forwarded again: asked with the forwarded flag, a node
    // that does not lead every partition refuses with NotLeader (leaders are spread, so some
    // node does not lead them all).
    let refusals = (1..=3u32)
        .filter(|&via| {
            let keys: Vec<Item> = (0..24).map(key).collect();
            let request = Request::BatchGetItem(vec![TableKeys {
                table: TABLE.into(),
                keys,
                consistent_read: true,
                read: ReadExpressions::default(),
            }]);
            let mut bytes = Vec::new();
            let flags = tessera_wire::RequestFlags { forwarded: true, ..Default::default() };
            request.encode_with_flags(1, flags, &mut bytes);
            let mut stream = std::net::TcpStream::connect(cluster.clients[&via]).unwrap();
            std::io::Write::write_all(&mut stream, &bytes).unwrap();
            let (header, payload) = common::read_frame(&mut stream).expect("an answer frame");
            matches!(
                Response::decode(header.message_type, &payload).unwrap(),
                Response::Error(error) if error.code == tessera_wire::ErrorCode::NotLeader
            )
        })
        .count();
    assert!(refusals > 0, "every node answered a forwarded request for partitions it may not lead");
    for via in 1..=3u32 {
        let scan = strong_scan(7, None);
        let items = cluster.client(via).scan_all(scan).unwrap();
        assert_eq!(items.len(), 24 + 75, "a strongly consistent Scan, in pages of 7, at node {via}");
    }
    // Pages stay within 1 MB (plus the item that crosses it) when partitions other nodes lead
    // are part of them: 40 items of 100 KB over the 8 partitions.
    let mut client = cluster.client(1);
    for n in 0..40u64 {
        let big = ItemBuilder::new().s("id", format!("big{n}")).b("data", vec![n as u8; 100_000]).build();
        client.put_item(TABLE, big).unwrap();
    }
    for via in 1..=3u32 {
        let (mut client, mut start, mut seen) = (cluster.client(via), None, 0);
        loop {
            let scan = strong_scan(0, start);
            let Response::Items { items, last_evaluated_key, .. } = client.call(&Request::Scan(scan)).unwrap() else {
                panic!("a page of items")
            };
            let bytes: usize = items.iter().map(tessera_engine::item_size).sum();
            assert!(bytes <= (1 << 20) + 100_100, "a page of {bytes} bytes at node {via}");
            seen += items.len();
            match last_evaluated_key {
                Some(key) => start = Some(key),
                None => break,
            }
        }
        assert_eq!(seen, 24 + 75 + 40, "every item, page by page, at node {via}");
    }
}

/// On a table whose partition map no formula makes (uneven ranges, through the administration
/// call), BatchWriteItem, BatchGetItem and Scan at every node reach the partitions other nodes
/// lead by the internal RPC: every write lands once and every item is read once, strongly.
#[test]
fn spanning_requests_follow_an_uneven_map_across_leaders() {
    use tessera_wire::{RangeSpec, TableKeys, Write};
    let cluster = Cluster::start("uneven");
    let starts = [0u64, 7 << 60, 9 << 60, 0xC << 60, 0xF << 60];
    let ranges = starts.iter().map(|&start| RangeSpec { start, core: 0 }).collect();
    let created = cluster.admin(1).create_table_placed(TABLE, KeySchema::hash_only("id", KeyType::S), ranges).unwrap();
    let map = created.map.expect("a table's description carries its map");
    assert_eq!(map.ranges.iter().map(|range| range.start).collect::<Vec<_>>(), starts);
    cluster.spread_leaders();
    wait_until("the partitions led by more than one node", Duration::from_secs(20), || {
        let Ok(Response::Replicas { replicas, .. }) = cluster.admin(1).call(&Request::DescribeReplicas) else {
            return false;
        };
        let leaders: std::collections::BTreeSet<_> = replicas
            .iter()
            .filter(|replica| map.ranges.iter().any(|range| range.partition == replica.partition))
            .filter_map(|replica| replica.leader)
            .collect();
        leaders.len() > 1
    });
    let mut written: Vec<u64> = (0..24).collect();
    for via in 1..=3u32 {
        let mut client = cluster.client(via);
        let base = 100 * u64::from(via);
        let writes = (base..base + 25).map(|n| Write::Put { table: TABLE.into(), item: item(n) }).collect();
        match client.call(&Request::BatchWriteItem(writes)).unwrap() {
            Response::BatchWriteItem { unprocessed } => assert!(unprocessed.is_empty(), "{unprocessed:?}"),
            other => panic!("{other:?}"),
        }
        written.extend(base..base + 25);
        let keys = written.iter().map(|&n| key(n)).take(100).collect();
        let tables =
            vec![TableKeys { table: TABLE.into(), keys, consistent_read: true, read: ReadExpressions::default() }];
        match client.call(&Request::BatchGetItem(tables)).unwrap() {
            Response::BatchGetItem { responses, unprocessed } => {
                assert!(unprocessed.is_empty());
                let mut got: Vec<Item> = responses[0].1.clone();
                got.sort_by_key(|item| format!("{item:?}"));
                let mut wanted: Vec<Item> = written.iter().map(|&n| item(n)).collect();
                wanted.sort_by_key(|item| format!("{item:?}"));
                assert_eq!(got, wanted, "BatchGetItem at node {via}");
            }
            other => panic!("{other:?}"),
        }
    }
    for via in 1..=3u32 {
        let scan = strong_scan(7, None);
        let mut items = cluster.client(via).scan_all(scan).unwrap();
        items.sort_by_key(|item| format!("{item:?}"));
        let mut wanted: Vec<Item> = written.iter().map(|&n| item(n)).collect();
        wanted.sort_by_key(|item| format!("{item:?}"));
        assert_eq!(items, wanted, "a strongly consistent Scan, in pages of 7, at node {via}");
    }
}

/// A strongly consistent Scan of the whole table, in pages of `limit` items (0: by size).
fn strong_scan(limit: u32, exclusive_start_key: Option<Item>) -> tessera_wire::Scan {
    tessera_wire::Scan {
        table: TABLE.into(),
        segment: 0,
        total_segments: 1,
        limit,
        exclusive_start_key,
        consistent_read: true,
        read: ReadExpressions::default(),
    }
}

/// A DynamoDB request over HTTP at node `id`: the answer's status and JSON body.
fn dynamodb(cluster: &Cluster, id: u32, operation: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let mut stream = std::net::TcpStream::connect(cluster.https[&id]).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = post(&format!("DynamoDB_20120810.{operation}"), &body.to_string(), None);
    let (status, _, body) = exchange(&mut stream, &request).expect("an HTTP answer");
    (status, serde_json::from_slice(&body).unwrap())
}

#[test]
fn dynamodb_requests_over_http_are_served_at_every_node() {
    // A DynamoDB client cannot follow a leader hint: the node it asks passes the request on.
    let cluster = Cluster::start("http");
    cluster.client(1).create_table(TABLE, KeySchema::hash_only("id", KeyType::S), 4).unwrap();
    cluster.wait_for_table();
    let id = |n: u64| serde_json::json!({ "id": { "S": format!("item-{n}") } });
    for n in 0..60u64 {
        let item = serde_json::json!({ "id": { "S": format!("item-{n}") }, "n": { "N": n.to_string() } });
        let (status, body) =
            dynamodb(&cluster, n as u32 % 3 + 1, "PutItem", serde_json::json!({ "TableName": TABLE, "Item": item }));
        assert_eq!(status, 200, "put {n}: {body}");
    }
    for node in 1..=3 {
        for n in 0..60u64 {
            let request = serde_json::json!({ "TableName": TABLE, "Key": id(n), "ConsistentRead": true });
            let (status, body) = dynamodb(&cluster, node, "GetItem", request);
            assert_eq!(status, 200, "get {n} at node {node}: {body}");
            assert_eq!(body["Item"]["n"]["N"], n.to_string(), "get {n} at node {node}: {body}");
        }
        // A failed condition comes back through the node that passed the request on.
        let update = serde_json::json!({ "TableName": TABLE, "Key": id(7), "UpdateExpression": "SET n = :v",
            "ConditionExpression": "n = :v", "ExpressionAttributeValues": { ":v": { "N": "-1" } } });
        let (status, body) = dynamodb(&cluster, node, "UpdateItem", update);
        assert_eq!(status, 400, "{body}");
        assert!(body["__type"].as_str().unwrap().ends_with("#ConditionalCheckFailedException"), "{body}");
        let (status, body) = dynamodb(
            &cluster,
            node,
            "Scan",
            serde_json::json!({ "TableName": TABLE, "Select": "COUNT", "ConsistentRead": true }),
        );
        assert_eq!((status, body["Count"].as_u64()), (200, Some(60)), "{body}");
    }
}

#[test]
fn writes_past_what_the_replicas_apply_are_throttled_and_never_half_done() {
    // With no apply delay allowed, a write proposed while chosen entries wait for the tree is
    // refused with ThrottlingException: it never took effect, and every write acknowledged is
    // there.
    let cluster = Cluster::start_with("throttle", &["--apply-delay-ms", "0"]);
    cluster.client(1).create_table(TABLE, KeySchema::hash_only("id", KeyType::S), 2).unwrap();
    cluster.wait_for_table();
    let (acknowledged, throttled) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
    let reads_throttled = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    let writers: Vec<_> = (0..12u64)
        .map(|writer| {
            let address = cluster.clients[&(writer as u32 % 3 + 1)];
            let (acknowledged, throttled) = (acknowledged.clone(), throttled.clone());
            let reads_throttled = reads_throttled.clone();
            std::thread::spawn(move || {
                // One attempt a write: a throttled write is seen as such, not retried.
                let config = ClientConfig { attempts: 1, ..ClientConfig::default() };
                let mut client = Client::connect_with(address, config).unwrap();
                for n in (0..).map(|i| writer * 100_000 + i) {
                    if Instant::now() > deadline || (n % 100_000 >= 200 && !throttled.lock().unwrap().is_empty()) {
                        return;
                    }
                    match client.put_item(TABLE, item(n)) {
                        Ok(_) => acknowledged.lock().unwrap().push(n),
                        Err(ClientError::Service(error)) if error.code == ErrorCode::ThrottlingException => {
                            assert!(error.retryable, "{error}");
                            throttled.lock().unwrap().push(n);
                        }
                        Err(error) => panic!("k{n}: {error}"),
                    }
                    // Reads wait behind the same applies: they are shed too, not queued.
                    match client.get_item(TABLE, key(n)) {
                        Ok(_) => {}
                        Err(ClientError::Service(error)) if error.code == ErrorCode::ThrottlingException => {
                            reads_throttled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(error) => panic!("reading k{n}: {error}"),
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let (acknowledged, throttled) = (acknowledged.lock().unwrap().clone(), throttled.lock().unwrap().clone());
    assert!(!throttled.is_empty(), "no write was throttled among {}", acknowledged.len());
    assert!(reads_throttled.load(std::sync::atomic::Ordering::Relaxed) > 0, "no read was throttled");
    all_readable(&cluster, 2, &acknowledged);
    let mut client = cluster.client(3);
    for n in throttled {
        assert_eq!(client.get_item(TABLE, key(n)).unwrap(), None, "throttled k{n} took effect");
    }
}

/// A cluster file that is wrong stops `serve` with a message naming the line and the fault.
#[test]
fn bad_cluster_files_are_refused_by_name() {
    let root = std::env::temp_dir().join(format!("tessera-cluster-file-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let file = root.join("cluster");
    let serve = |text: &str, node: &str| {
        std::fs::write(&file, text).unwrap();
        let output = Command::new(BINARY)
            .args(["serve", "--node-id", node, "--cluster"])
            .arg(&file)
            .args(["--data-dir"])
            .arg(root.join("data"))
            .output()
            .unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let cases = [
        ("1 127.0.0.1:1 127.0.0.1:2\n2 nowhere 127.0.0.1:3\n", "1", "line 2: the client address"),
        ("1 127.0.0.1:1\n", "1", "line 1: three to five fields"),
        ("1 127.0.0.1:1 127.0.0.1:2 spare\n", "1", "names no node that is not a spare"),
        ("1 127.0.0.1:1 127.0.0.1:2\n1 127.0.0.1:3 127.0.0.1:4\n", "1", "line 2: the id appears twice"),
        ("1 127.0.0.1:1 127.0.0.1:2 a\n", "7", "node 7 is not in the cluster file"),
    ];
    for (text, node, expected) in cases {
        let (ok, stderr) = serve(text, node);
        assert!(!ok && stderr.contains(expected), "{text:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// A mistyped flag is refused by name rather than ignored, and `--help` prints the usage:
/// neither starts a server on defaults (`serve --help` once served ./data).
#[test]
fn unknown_flags_are_refused_and_help_starts_nothing() {
    let root = std::env::temp_dir().join(format!("tessera-flags-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let run = |args: &[&str]| {
        let output = Command::new(BINARY).args(args).current_dir(&root).output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    for args in [
        &["serve", "--data-dri", "x"][..],
        &["serve", "--cores"],
        &["cluster", "local", "--node", "3"],
        &["cluster", "status", "--clusterr", "f"],
    ] {
        let (ok, _, stderr) = run(args);
        assert!(
            !ok && (stderr.contains(&format!("unexpected argument '{}'", args[args.len() - 2]))
                || stderr.contains("a value is required for '--cores <N>'")),
            "{args:?}: {stderr}"
        );
    }
    for args in [&["serve", "--help"][..], &["cluster", "local", "-h"], &["--help"]] {
        let (ok, stdout, _) = run(args);
        assert!(ok && stdout.contains("Usage: tessera"), "{args:?}: {stdout}");
    }
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0, "a data directory was made");
    let _ = std::fs::remove_dir_all(&root);
}

/// `tessera cluster local` reports and reaps a node that exits on its own (here SIGKILLed, as
/// someone trying a failover would), keeps the other nodes serving, and stops them on SIGTERM.
#[test]
fn a_local_cluster_reports_a_node_that_exits_and_keeps_the_others() {
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let root = std::env::temp_dir().join(format!("tessera-cluster-local-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let (port, http_port) = local_cluster_ports();
    let mut local = LocalCluster(
        Command::new(BINARY)
            .args([
                "cluster",
                "local",
                "--nodes",
                "3",
                "--port",
                &port.to_string(),
                "--http-port",
                &http_port.to_string(),
            ])
            .arg("--data-dir")
            .arg(root.join("data"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let serving = |id: u16| std::net::TcpStream::connect(("127.0.0.1", port + id - 1)).is_ok();
    wait_until("three nodes serving", Duration::from_secs(20), || (1..=3).all(serving));
    let local_pid = local.0.id();
    let node = |id: u32| node_process(local_pid, id);
    let killed = node(2).expect("node 2 is a child of the local cluster");
    // SAFETY: kill with a pid and SIGKILL has no memory effects.
    unsafe { libc::kill(killed as libc::pid_t, libc::SIGKILL) };
    let log = || std::fs::read_to_string(root.join("log")).unwrap();
    wait_until("node 2's exit reported", Duration::from_secs(5), || {
        log().contains("tessera: node 2 exited (signal: 9 (SIGKILL)); the other nodes keep running")
    });
    assert!(!PathBuf::from(format!("/proc/{killed}")).exists(), "node 2 was left a zombie");
    assert!(serving(1) && serving(3) && node(1).is_some() && node(3).is_some(), "{}", log());
    let status = local.stop().expect("the local cluster stops within 30 s of SIGTERM");
    assert!(status.success() && node(1).is_none() && node(3).is_none(), "{status}: {}", log());
    let _ = std::fs::remove_dir_all(&root);
}

/// A running `tessera cluster local`, stopped (with its nodes) when dropped, so that a failed
/// assertion leaves no process behind.
struct LocalCluster(Child);

impl LocalCluster {
    /// SIGTERM, which it passes on to its nodes, then up to 30 s for it to exit (SIGKILL
    /// after that): its exit status, or `None` if it had to be killed.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        // SAFETY: kill with a child's pid and SIGTERM has no memory effects.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match self.0.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                done => return done.ok().flatten(),
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        None
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.stop();
        }
    }
}

/// A client port and an HTTP port from which `cluster local --nodes 3` finds every port it
/// takes free: clients on `port`..+2, peers on `port` + 100, 110 and 120, HTTP on `http`..+2.
fn local_cluster_ports() -> (u16, u16) {
    let mut base = 20_000 + (std::process::id() % 400) as u16 * 20;
    loop {
        let (port, http) = (base, base + 5);
        let wanted = [port, port + 1, port + 2, port + 100, port + 110, port + 120, http, http + 1, http + 2];
        let held: Vec<_> = wanted.iter().map_while(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).ok()).collect();
        if held.len() == wanted.len() {
            return (port, http);
        }
        base = if base >= 28_000 { 20_000 } else { base + 20 };
    }
}

/// The process `parent` started as node `id` (`--node-id ID` in its command line), if running.
fn node_process(parent: u32, id: u32) -> Option<u32> {
    let id = id.to_string();
    std::fs::read_dir("/proc").ok()?.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok()).find(
        |pid| {
            // The parent pid is the second field after the command name's closing parenthesis.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(1)?.parse::<u32>().ok());
            let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&str> = cmdline.split('\0').collect();
            ppid == Some(parent) && args.windows(2).any(|pair| pair == ["--node-id", id.as_str()])
        },
    )
}

/// The asynchronous `ClusterPool` sends each call to its partition's leader, learning leaders
/// from NotLeader answers, whichever node it asks first.
#[test]
fn the_cluster_pool_finds_each_partitions_leader() {
    use tessera_net::client::{ClusterPool, Routed};
    use tessera_wire::client::ClientConfig;
    let cluster = Cluster::start("pool");
    cluster.client(2).create_table(TABLE, KeySchema::hash_only("id", KeyType::S), 8).unwrap();
    cluster.spread_leaders();
    let addresses: Vec<SocketAddr> = cluster.clients.values().copied().collect();
    let found = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).io_memory(1 << 20).make().unwrap().run(
        async move {
            let pool = ClusterPool::connect(&addresses, 1, ClientConfig::default()).await.unwrap();
            for n in 100..160u64 {
                let put = async |client: &Routed<'_>| client.put_item(TABLE, item(n)).await;
                pool.call(TABLE, &item(n), put).await.unwrap();
            }
            let mut found = 0;
            for n in (0..24u64).chain(100..160) {
                let get = async |client: &Routed<'_>| client.get_item(TABLE, key(n)).await;
                found += usize::from(pool.call(TABLE, &key(n), get).await.unwrap() == Some(item(n)));
            }
            found
        },
    );
    assert_eq!(found, 24 + 60);
}

/// Every node killed at once (SIGKILL) and restarted: the tables and every acknowledged write
/// come back from the nodes' logs, though nothing was checkpointed.
#[test]
fn a_whole_cluster_restarts_after_sigkill() {
    let mut cluster = Cluster::start("restart");
    cluster.client(1).create_table(TABLE, KeySchema::hash_only("id", KeyType::S), 4).unwrap();
    cluster.wait_for_table();
    let mut client = cluster.client(3);
    for n in 0..40u64 {
        client.put_item(TABLE, item(n)).unwrap();
    }
    for id in 1..=3 {
        cluster.signal(id, libc::SIGKILL);
        let _ = cluster.nodes.get_mut(&id).unwrap().wait();
    }
    for id in 1..=3 {
        cluster.start_node(id);
    }
    // The table is in the log, not in any checkpoint: until a node's catalog has caught up, it
    // must answer that it cannot tell yet (retryable), never that the table does not exist.
    for id in 1..=3 {
        let mut client = cluster.client(id);
        wait_until("a node serving its table after the restart", Duration::from_secs(10), || {
            match client.get_item(TABLE, key(0)) {
                Ok(found) => found == Some(item(0)),
                Err(ClientError::Service(error)) if error.code == ErrorCode::ResourceNotFoundException => {
                    panic!("node {id} said the table does not exist: {}", error.message)
                }
                Err(_) => false,
            }
        });
    }
    let mut client = cluster.client(2);
    for n in 0..40u64 {
        assert_eq!(client.get_item(TABLE, key(n)).unwrap(), Some(item(n)), "acknowledged k{n} after the restart");
    }
}

/// A follower is killed; the leader takes far more writes than it keeps for a replica that is
/// behind (`--log-retain 500`), checkpoints, and compacts its log past the follower. The
/// follower restarts, receives a snapshot of the partition, and continues from the log: it
/// then holds every acknowledged write, and with the third node killed it and the leader still
/// form a quorum.
#[test]
fn a_follower_behind_a_recycled_log_recovers_by_snapshot() {
    let mut cluster = Cluster::start_with("snapshot", &["--log-retain", "500"]);
    cluster.client(1).create_table(TABLE, KeySchema::hash_only("id", KeyType::S), 1).unwrap();
    cluster.wait_for_table();
    let mut client = cluster.client(1);
    for n in 0..50u64 {
        client.put_item(TABLE, item(n)).unwrap();
    }
    let leader = cluster.node_at(client.peer_address().unwrap());
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let address = cluster.clients[&follower];
    wait_until("the follower having the first writes", Duration::from_secs(10), || {
        (0..50).all(|n| local_read(address, n) == Some(item(n)))
    });
    cluster.signal(follower, libc::SIGKILL);
    let _ = cluster.nodes.get_mut(&follower).unwrap().wait();
    // Concurrent writers through the leader, 3,000 writes in all.
    let writers: Vec<_> = (0..4u64)
        .map(|writer| {
            let address = cluster.clients[&leader];
            std::thread::spawn(move || {
                let mut client = Client::connect(address).unwrap();
                for n in (0..750).map(|i| 1000 + writer * 1000 + i) {
                    client.put_item(TABLE, item(n)).unwrap();
                }
            })
        })
        .collect();
    writers.into_iter().for_each(|writer| writer.join().unwrap());
    // The leader's log no longer reaches back to what the follower has: give its compaction
    // (about once a second, after a checkpoint it asks for) time to run.
    std::thread::sleep(Duration::from_secs(3));
    cluster.start_node(follower);
    let written: Vec<u64> =
        (0..50).chain((0..4).flat_map(|writer| (0..750).map(move |i| 1000 + writer * 1000 + i))).collect();
    wait_until("the restarted follower holding every write", Duration::from_secs(20), || {
        written.iter().all(|&n| local_read(address, n) == Some(item(n)))
    });
    let log = cluster.log(follower);
    assert!(log.contains("installed a snapshot"), "the follower caught up without a snapshot:\n{log}");
    log.lines().filter(|line| line.contains("snapshot")).for_each(|line| println!("node {follower}: {line}"));
    // It takes part again: with the third node killed, the leader and it choose writes.
    let third = (1..=3).find(|&id| id != leader && id != follower).unwrap();
    cluster.signal(third, libc::SIGKILL);
    let _ = cluster.nodes.get_mut(&third).unwrap().wait();
    let mut client = cluster.client(follower);
    for n in 9000..9010 {
        client.put_item(TABLE, item(n)).unwrap();
    }
    all_readable(&cluster, follower, &written);
}

/// DeleteTable in a cluster: every node stops its replicas of the table's partitions and
/// removes their data (not only where the deleting node leads), and a table created again
/// under the name starts empty, on new partitions.
#[test]
fn deleted_tables_leave_no_replicas_behind() {
    let cluster = Cluster::start("delete");
    cluster.client(1).create_table(TABLE, KeySchema::hash_only("id", KeyType::S), 4).unwrap();
    cluster.spread_leaders();
    cluster.client(2).delete_table(TABLE).unwrap();
    for id in 1..=3 {
        wait_until("every replica of the deleted table stopping", Duration::from_secs(10), || {
            cluster.log(id).matches("(its table was deleted): replica stopped, data removed").count() == 4
        });
    }
    cluster.client(3).create_table(TABLE, KeySchema::hash_only("id", KeyType::S), 2).unwrap();
    cluster.wait_for_table();
    let mut client = cluster.client(1);
    assert_eq!(client.get_item(TABLE, key(5)).unwrap(), None, "the new table starts empty");
    client.put_item(TABLE, item(5)).unwrap();
    all_readable(&cluster, 2, &[5]);
}

/// Replacing a lost node (`tessera cluster replace`), under concurrent writers: node 2 is
/// SIGKILLed and its data removed; every group (the catalog's and the table's two) gets a log
/// replica on spare node 4, loses node 2, gets a full replica on spare node 5, and loses the
/// log replica once node 5 has caught up; node 4 then retires its replicas. The leaders
/// compacted their logs past what node 2 had (`--log-retain 200`), so node 4's log replicas
/// start from a log start and node 5's full replicas from snapshots. Every acknowledged write
/// survives, and node 5 holds them: with node 1 killed too, nodes 3 and 5 are a quorum that
/// serves them all.
#[test]
fn a_lost_node_is_replaced_through_a_log_replica() {
    let mut cluster = Cluster::start_with_spares("replace", &["--log-retain", "200"], 2);
    cluster.client(1).create_table(TABLE, KeySchema::hash_only("id", KeyType::S), 2).unwrap();
    cluster.spread_leaders();
    // Changes the server refuses, by name (the client follows NotLeader to the leader).
    let refused = [
        (0, vec![Member::full(1)], "adds or removes exactly one member"),
        (0, vec![Member::full(1), Member::full(2), Member::full(3), Member::full(4), Member::full(5)], "exactly one"),
        (0, vec![Member::full(1), Member::full(2), Member::log(3)], "a member's kind cannot change"),
        (77, vec![Member::full(1), Member::full(2)], "partition 77 has no replica on node"),
    ];
    for (partition, members, expected) in refused {
        match cluster.admin(1).call(&Request::ChangeMembers { partition, members }) {
            Err(ClientError::Service(error)) => {
                assert!(error.code == ErrorCode::ValidationException && error.message.contains(expected), "{error:?}")
            }
            other => panic!("{other:?}"),
        }
    }
    cluster.signal(2, libc::SIGKILL);
    let _ = cluster.nodes.get_mut(&2).unwrap().wait();
    std::fs::remove_dir_all(cluster.root.join("node-2")).unwrap();

    // Writers through nodes 1 and 3 from before the replacement until after it.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = [1u32, 3]
        .into_iter()
        .map(|node| {
            let (address, stop, acknowledged) = (cluster.clients[&node], stop.clone(), acknowledged.clone());
            std::thread::spawn(move || {
                let mut client = Client::connect(address).unwrap();
                for n in (0..).map(|i| u64::from(node) * 100_000 + i) {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    client.put_item(TABLE, item(n)).unwrap();
                    acknowledged.lock().unwrap().push(n);
                }
            })
        })
        .collect();
    wait_until("writes moving the logs past node 2", Duration::from_secs(30), || {
        acknowledged.lock().unwrap().len() > 1_500
    });
    // The leaders' compaction runs about once a second.
    std::thread::sleep(Duration::from_secs(2));
    let output = cluster.replace_node_2("120");
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "cluster replace failed:\n{report}\n{errors}");
    println!("{report}");
    for step in ["log replica added", "lost replica removed", "full replica added", "log replica removed"] {
        assert_eq!(report.matches(step).count(), 3, "{step} in each of the 3 groups:\n{report}");
    }
    assert_eq!(report.matches("log replica on node 4 retired").count(), 3, "{report}");
    assert!(report.contains("node 2 replaced by node 5 in 3 groups"), "{report}");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writers.into_iter().for_each(|writer| writer.join().unwrap());
    let written: Vec<u64> = acknowledged.lock().unwrap().clone();

    let log4 = cluster.log(4);
    assert!(log4.contains("installed a snapshot through slot"), "node 4 started no log:\n{log4}");
    wait_until("node 4 dropping its log replicas", Duration::from_secs(10), || {
        cluster.log(4).matches("(removed from its group): replica stopped, data removed").count() == 3
    });
    let log5 = cluster.log(5);
    assert!(log5.contains("installed a snapshot through slot"), "node 5 took no snapshot:\n{log5}");
    for (node, log) in [(4, &log4), (5, &log5)] {
        log.lines().filter(|line| line.contains("installed")).for_each(|line| println!("node {node}: {line}"));
    }
    for node in [1, 3] {
        let log = cluster.log(node);
        log.lines().filter(|line| line.contains("sent node")).for_each(|line| println!("node {node}: {line}"));
    }
    // Run again, it finds nothing left to do.
    let again = cluster.replace_node_2("30");
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to do"), "{again:?}");

    // A table created now starts on the nodes that replaced node 2 (its groups are the
    // catalog's), and leaders spread over them.
    cluster.client(3).create_table("later", KeySchema::hash_only("id", KeyType::S), 3).unwrap();
    for node in [1, 3, 5] {
        wait_until("the new table reaching every member", Duration::from_secs(10), || {
            cluster.client(node).describe_table("later").is_ok()
        });
    }
    for n in 0..30 {
        cluster.client(1).put_item("later", item(n)).unwrap();
    }
    let Response::Replicas { replicas, .. } = cluster.admin(5).call(&Request::DescribeReplicas).unwrap() else {
        panic!("no replicas")
    };
    let later: Vec<_> = replicas.iter().filter(|replica| tessera_net::table_of(replica.partition) == 2).collect();
    assert_eq!(later.len(), 3, "{replicas:?}");
    let members = vec![Member::full(1), Member::full(3), Member::full(5)];
    assert!(later.iter().all(|replica| replica.members == members), "{later:?}");

    // Node 5 is a full member with every write: nodes 3 and 5 alone serve them all.
    cluster.signal(1, libc::SIGKILL);
    let _ = cluster.nodes.get_mut(&1).unwrap().wait();
    let mut client = cluster.client(5);
    assert!(client.describe_table(TABLE).is_ok(), "node 5 has the catalog");
    client.put_item(TABLE, item(7)).unwrap();
    all_readable(&cluster, 5, &written);
    for n in 0..30 {
        assert_eq!(client.get_item("later", key(n)).unwrap(), Some(item(n)));
    }
    let address = cluster.clients[&5];
    assert!(written.iter().all(|&n| local_read(address, n) == Some(item(n))), "node 5's own copy lacks writes");
    let status = Command::new(BINARY)
        .args(["cluster", "status", "--cluster"])
        .arg(&cluster.file)
        .arg("--cluster-secret")
        .arg(&cluster.secret)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.contains("node 1: not answering") && status.contains("members 1,3,5"), "{status}");
}

/// A replacement interrupted and carried on, with its log replica restarted in between: node 2
/// is lost while node 5 (the new full replica's host) is down, so `cluster replace` gives up
/// after putting a log replica on node 4 in every group and removing node 2 (it adds no node
/// that does not answer). Node 4 is SIGKILLed and restarted, and node 3 is SIGKILLed: every
/// write now needs the restarted log replica, which takes part again from its WAL alone. Once
/// node 5 is up, `cluster replace` run again finishes; with node 3 back and node 1 killed,
/// nodes 3 and 5 serve every acknowledged write.
#[test]
fn a_replacement_survives_a_restart_of_its_log_replica() {
    let mut cluster = Cluster::start_with_spares("relog", &["--log-retain", "200"], 2);
    let kill = |cluster: &mut Cluster, node: u32| {
        cluster.signal(node, libc::SIGKILL);
        let _ = cluster.nodes.get_mut(&node).unwrap().wait();
    };
    for node in [2, 5] {
        kill(&mut cluster, node);
        std::fs::remove_dir_all(cluster.root.join(format!("node-{node}"))).unwrap();
    }
    cluster.client(1).create_table(TABLE, KeySchema::hash_only("id", KeyType::S), 2).unwrap();
    for node in [1, 3] {
        wait_until("the table reaching the live nodes", Duration::from_secs(10), || {
            cluster.client(node).describe_table(TABLE).is_ok()
        });
    }
    let mut written = Vec::new();
    let mut write = |cluster: &Cluster, range: std::ops::Range<u64>| {
        let mut client = cluster.client(1);
        for n in range {
            client.put_item(TABLE, item(n)).unwrap();
            written.push(n);
        }
    };
    write(&cluster, 0..600);
    let first = cluster.replace_node_2("5");
    let report = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(!first.status.success(), "node 5 is down, yet the replacement finished:\n{report}");
    assert_eq!(report.matches("lost replica removed").count(), 3, "{report}");
    assert!(!report.contains("full replica added"), "node 5 does not answer:\n{report}");

    kill(&mut cluster, 4);
    cluster.start_node(4);
    kill(&mut cluster, 3);
    // The groups are 1, 3 and L4, with 3 down: node 1 and the restarted log replica take
    // every write.
    write(&cluster, 1000..1300);

    cluster.start_node(5);
    let second = cluster.replace_node_2("120");
    let report = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(second.status.success(), "{report}\n{}", String::from_utf8_lossy(&second.stderr));
    assert_eq!(report.matches("full replica added").count(), 3, "{report}");
    assert_eq!(report.matches("log replica removed").count(), 3, "{report}");
    cluster.start_node(3);
    kill(&mut cluster, 1);
    all_readable(&cluster, 5, &written);
}

/// Requests of every kind the API takes, edge values included, sent to one node of a cluster
/// until every node is SIGKILLed mid-stream; after the whole cluster restarts, every
/// acknowledged write is there and no refused one is, read through the first node and, from
/// its own replicas, at each node: every follower decoded and applied what its leader chose.
#[test]
fn every_kind_of_request_survives_a_sigkill_of_the_whole_cluster() {
    let cluster = Cluster::start("crash-api");
    let history = cluster.root.with_extension("history");
    let endpoint = cluster.https[&1];
    let cluster = std::cell::RefCell::new(cluster);
    let kill = || {
        let mut cluster = cluster.borrow_mut();
        for id in 1..=3 {
            cluster.signal(id, libc::SIGKILL);
            let _ = cluster.nodes.get_mut(&id).unwrap().wait();
        }
    };
    let restart = || {
        let mut cluster = cluster.borrow_mut();
        (1..=3).for_each(|id| cluster.start_node(id));
        cluster.https.values().copied().collect()
    };
    crash_api(&history, endpoint, 1200, kill, restart);
}

/// Processes that do not hold the cluster's secret change nothing: Accepts of a high ballot
/// carrying a write, sent to every node's peer port (the next leader would re-propose the
/// highest-ballot value it found), are closed unheard, even once the leader is killed and
/// another elected; a ChangeMembers or DescribeReplicas sent to a client port without the
/// secret is refused, and with a client's key instead of the secret too.
#[test]
fn processes_without_the_cluster_secret_change_nothing() {
    let mut cluster = Cluster::start("forged");
    cluster.client(1).create_table(TABLE, KeySchema::hash_only("id", KeyType::S), 1).unwrap();
    cluster.wait_for_table();
    cluster.client(1).put_item(TABLE, item(1)).unwrap();
    let partition = 1u64 << 20;
    let forged = ItemBuilder::new().s("id", "forged").build();
    let mut value = Vec::new();
    tessera_engine::encode_item(&forged, tessera_engine::ItemMeta::default(), &mut value);
    let encoded = KeySchema::hash_only("id", KeyType::S).encode_key(&forged).unwrap().bytes;
    let mut command = Vec::new();
    let put = tessera_engine::Command::Put { key: encoded, value: value.clone().into() };
    tessera_engine::Stamped::now(put).encode_payload(&mut command).unwrap();
    for (&id, peer) in &cluster.peers {
        let mut stream = std::net::TcpStream::connect(peer).unwrap();
        let messages: Vec<PeerMessage> = (1..20u64)
            .map(|slot| {
                let entries = vec![Value::Command { id: 1 << 40 | slot, bytes: command.clone().into() }];
                let ballot = Ballot { round: 1 << 40, replica: 1 + id % 3 };
                let message = Message::Accept { ballot, first_slot: slot, entries, commit: 0, sent_at: 0 };
                PeerMessage::Paxos((partition, Envelope { from: 1 + id % 3, to: id, message }))
            })
            .collect();
        let mut frame = Vec::new();
        encode_batch(&messages, &mut frame);
        stream.write_all(&frame).unwrap();
        // Closed by the node, unheard.
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(stream.read(&mut [0u8; 16]).unwrap_or(0), 0, "node {id} kept the connection");
    }
    // The internal RPC without the secret: the same write, refused by every node.
    for (id, address) in &cluster.clients {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut bytes = Vec::new();
        let key = KeySchema::hash_only("id", KeyType::S).encode_key(&forged).unwrap().bytes;
        let op = PartitionOp::Put { partition, key, value: value.clone(), return_old: false };
        op.encode(1, &mut bytes).unwrap();
        stream.write_all(&bytes).unwrap();
        let (header, payload) = common::read_frame(&mut stream).expect("an answer");
        assert_eq!(header.message_type, MessageType::PartitionAnswer as u16);
        assert_eq!(common::partition_error(&payload), ErrorCode::AccessDeniedException, "node {id}");
    }
    // Administration without the secret.
    let members = vec![Member::full(1), Member::full(2)];
    for request in [Request::ChangeMembers { partition, members }, Request::DescribeReplicas] {
        match cluster.client(1).call(&request) {
            Err(ClientError::Service(error)) => assert_eq!(error.code, ErrorCode::AccessDeniedException, "{error:?}"),
            other => panic!("{other:?}"),
        }
    }
    // The leader goes; the next one must find no forged value to re-propose.
    let Response::Replicas { replicas, .. } = cluster.admin(1).call(&Request::DescribeReplicas).unwrap() else {
        panic!("replicas")
    };
    let leader = replicas.iter().find(|replica| replica.partition == partition).and_then(|replica| replica.leader);
    let leader = leader.expect("the partition has a leader");
    cluster.signal(leader, libc::SIGKILL);
    let _ = cluster.nodes.get_mut(&leader).unwrap().wait();
    let survivor = (1..=3).find(|&id| id != leader).unwrap();
    let mut client = cluster.client(survivor);
    wait_until("a new leader taking writes", Duration::from_secs(10), || client.put_item(TABLE, item(2)).is_ok());
    assert_eq!(client.get_item(TABLE, forged.clone()).unwrap(), None, "a forged write was chosen");
    assert_eq!(client.get_item(TABLE, key(1)).unwrap(), Some(item(1)));
}

/// A follower whose last WAL record is damaged while it is down (a byte flipped in the flush
/// that made its last acknowledged entry durable) may have forgotten what it acknowledged:
/// it reports the damage, rejoins as a non-voting member, is caught up by a leader elected
/// after its restart, and only then votes again. The cluster serves writes throughout, and
/// every acknowledged write is readable at that node.
#[test]
fn a_damaged_last_record_is_repaired_from_the_peers() {
    let mut cluster = Cluster::start("waltail");
    cluster.client(1).create_table(TABLE, KeySchema::hash_only("id", KeyType::S), 1).unwrap();
    cluster.wait_for_table();
    let mut client = cluster.client(1);
    for n in 0..50u64 {
        client.put_item(TABLE, item(n)).unwrap();
    }
    let needle = ItemBuilder::new().s("id", "k-needle").s("v", "needle-in-the-last-record").build();
    client.put_item(TABLE, needle.clone()).unwrap();
    let leader = cluster.node_at(client.peer_address().unwrap());
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let address = cluster.clients[&follower];
    let read_needle = |address: SocketAddr| {
        let mut client = Client::connect(address).ok()?;
        let key = ItemBuilder::new().s("id", "k-needle").build();
        let request =
            Request::GetItem { table: TABLE.into(), key, consistent_read: false, read: ReadExpressions::default() };
        match client.call(&request).ok()? {
            Response::Item(item) => item,
            _ => None,
        }
    };
    wait_until("the follower applying the last write", Duration::from_secs(10), || {
        read_needle(address) == Some(needle.clone())
    });
    cluster.signal(follower, libc::SIGKILL);
    let _ = cluster.nodes.get_mut(&follower).unwrap().wait();
    // The record of the last entry the follower accepted (and acknowledged) holds the needle.
    let wal = cluster.root.join(format!("node-{follower}")).join("core-0").join("wal");
    assert_eq!(common::flip_in_wal(&wal, b"needle"), 1, "the last record is in one WAL segment");

    // Writers go on through the other nodes while the follower is down and rejoins.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (stop, acknowledged, via) = (stop.clone(), acknowledged.clone(), cluster.clients[&leader]);
        std::thread::spawn(move || {
            let mut client = Client::connect(via).unwrap();
            let mut longest = Duration::ZERO;
            for n in 1000.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let started = Instant::now();
                // An election (the rejoining node makes its leader step down) is retried.
                while client.put_item(TABLE, item(n)).is_err() {
                    assert!(started.elapsed() < Duration::from_secs(10), "no write taken for 10 s");
                    std::thread::sleep(Duration::from_millis(20));
                }
                longest = longest.max(started.elapsed());
                acknowledged.lock().unwrap().push(n);
            }
            longest
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    cluster.start_node(follower);
    // Both replicas of its core rejoin: the catalog's and the table's partition's.
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.log(follower).matches("it votes again").count() < 2 {
        assert!(Instant::now() < deadline, "the follower did not rejoin as a voter: {}", cluster.log(follower));
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let longest = writer.join().unwrap();
    let log = cluster.log(follower);
    assert!(log.contains("fails its checksum") && log.contains("non-voting member"), "{log}");
    log.lines().filter(|line| line.contains("checksum") || line.contains("votes again")).for_each(|line| {
        println!("node {follower}: {line}");
    });
    let written: Vec<u64> = (0..50).chain(acknowledged.lock().unwrap().iter().copied()).collect();
    println!("{} writes acknowledged while the follower rejoined; the slowest took {longest:?}", written.len() - 50);
    assert!(written.len() > 60, "the cluster served writes meanwhile");
    wait_until("the follower holding every acknowledged write", Duration::from_secs(20), || {
        read_needle(address) == Some(needle.clone()) && written.iter().all(|&n| local_read(address, n) == Some(item(n)))
    });
    // It votes: with one of the others killed, it and the remaining one choose writes.
    let other = (1..=3).find(|&id| id != follower).unwrap();
    cluster.signal(other, libc::SIGKILL);
    let _ = cluster.nodes.get_mut(&other).unwrap().wait();
    let mut client = cluster.client(follower);
    for n in 9000..9010 {
        client.put_item(TABLE, item(n)).unwrap();
    }
    all_readable(&cluster, follower, &written);
    assert_eq!(client.get_item(TABLE, ItemBuilder::new().s("id", "k-needle").build()).unwrap(), Some(needle));
}

/// A follower whose tree file has a damaged leaf (a byte flipped while it was stopped):
/// after its restart the scrub finds the page, the partition is reinstalled from a healthy
/// replica by snapshot, every item is then served by that node again, and the next scrub
/// pass finds nothing.
#[test]
fn a_damaged_leaf_is_repaired_from_a_healthy_replica() {
    let mut cluster = Cluster::start_with("scrub", &["--scrub-interval-s", "1"]);
    cluster.client(1).create_table(TABLE, KeySchema::hash_only("id", KeyType::S), 1).unwrap();
    cluster.wait_for_table();
    let padded =
        |n: u64| ItemBuilder::new().s("id", format!("k{n}")).n("n", n as i64).s("pad", "p".repeat(300)).build();
    let mut client = cluster.client(1);
    for n in 0..400u64 {
        client.put_item(TABLE, padded(n)).unwrap();
    }
    let leader = cluster.node_at(client.peer_address().unwrap());
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let address = cluster.clients[&follower];
    wait_until("the follower having every write", Duration::from_secs(20), || {
        (0..400).all(|n| local_read(address, n) == Some(padded(n)))
    });
    // A clean stop checkpoints everything: the leaves are in the tree file.
    cluster.signal(follower, libc::SIGTERM);
    assert!(cluster.nodes.get_mut(&follower).unwrap().wait().unwrap().success());
    let tree = cluster.root.join(format!("node-{follower}")).join("core-0").join("tree.db");
    let leaves = common::tree_file::leaves(&tree, common::tree_file::is_table_partition);
    let &(damaged, _, _) = leaves.get(leaves.len() / 2).expect("leaves of the table");
    common::tree_file::flip_byte(&tree, damaged);
    cluster.start_node(follower);

    let logged = |text: &str| cluster.log(follower).contains(text);
    wait_until("the scrub finding the page", Duration::from_secs(30), || {
        logged(&format!("damaged page {damaged} at offset {}", damaged * 4096)) && logged("found by the scrub")
    });
    wait_until("the partition reinstalled", Duration::from_secs(60), || logged("installed a snapshot"));
    let log = cluster.log(follower);
    let installed = log.find("installed a snapshot").unwrap();
    println!("node {follower}:\n{log}");
    assert!(log.contains("its data here is damaged"), "{log}");
    assert!(log.contains(&format!("page {damaged} (damaged page {damaged} itself) is cut out of the tree")), "{log}");
    // Every item is served by that node again, and writes after the repair reach it.
    let mut client = cluster.client(leader);
    for n in 400..420u64 {
        client.put_item(TABLE, padded(n)).unwrap();
    }
    wait_until("the repaired follower holding every write", Duration::from_secs(20), || {
        (0..420).all(|n| local_read(address, n) == Some(padded(n)))
    });
    // The next passes walk the checkpoint the install made: nothing damaged.
    wait_until("a clean scrub pass after the repair", Duration::from_secs(30), || {
        cluster.log(follower)[installed..]
            .lines()
            .any(|line| line.contains("scrub pass") && line.ends_with(": 0 damaged"))
    });
}
