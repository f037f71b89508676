//! Data written by an earlier release opens and serves: `tests/fixtures/v1.tar.gz` holds data
//! directories of storage format version 1 (engine/FORMAT.md), written by the release before
//! the storage redesign (commit 207d10a) with `tests/fixtures/make-v1.py`: a single node's
//! (two cores, two tables, a checkpointed tree and WAL records written after it, SIGKILLed)
//! and a three-node cluster's (likewise), with a manifest of every item each table must hold.
//! Today's `tessera serve` opens each unpacked copy; through the binary protocol and the
//! DynamoDB HTTP API every item reads back exactly (GetItem, Query, Scan), the deleted ones
//! stay deleted, ListTables and DescribeTable show the tables, new writes succeed, and all of
//! it is still there after a SIGKILL and a restart.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tessera_engine::{AttributeValue, Item, KeySchema, KeyType};
use tessera_net::json::{item_from_json, item_to_json, value_to_json};
use tessera_wire::client::{Client, ItemBuilder};
use tessera_wire::{Expressions, Query, ReturnValues, Scan, TableStatus, Throughput};

use common::{exchange, free_addresses, post, Node};

mod common;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/v1.tar.gz");

/// The fixture unpacked into a fresh temporary directory (removed when dropped).
struct Unpacked {
    root: PathBuf,
    manifest: Value,
}

impl Unpacked {
    fn new(name: &str) -> Unpacked {
        let root = std::env::temp_dir().join(format!("tessera-upgrade-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let archive =
            std::fs::File::open(FIXTURE).expect("tests/fixtures/v1.tar.gz (made by tests/fixtures/make-v1.py)");
        // The archive stores the files sparse (GNU tar); they are written out in full, zeros
        // and all, as the release that made them left them: a hole is not what it wrote, and
        // glommio's probe for polled I/O (engine's disk::probe_device) passes wrongly on one.
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(archive));
        for entry in archive.entries().expect("a tar archive") {
            let mut entry = entry.expect("an archive entry");
            let name = entry.path().expect("a path").into_owned();
            assert!(name.components().all(|part| matches!(part, Component::Normal(_))), "{name:?} leaves the root");
            let path = root.join(&name);
            if entry.header().entry_type().is_dir() {
                std::fs::create_dir_all(&path).unwrap();
            } else {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let written = std::io::copy(&mut entry, &mut std::fs::File::create(&path).unwrap()).unwrap();
                assert_eq!(written, entry.size(), "{name:?}");
            }
        }
        let manifest = serde_json::from_slice(&std::fs::read(root.join("manifest.json")).unwrap()).unwrap();
        Unpacked { root, manifest }
    }
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// What a table must hold and say about itself.
struct Expected {
    name: String,
    key: KeySchema,
    partitions: u32,
    /// BillingMode PROVISIONED's read and write units; `None`: PAY_PER_REQUEST.
    throughput: Option<Throughput>,
    tags: BTreeMap<String, String>,
    items: Vec<Item>,
    deleted: Vec<Item>,
}

impl Expected {
    fn all(part: &Value) -> Vec<Expected> {
        let key_attribute = |schema: &Value| {
            let key_type = match schema["type"].as_str().unwrap() {
                "S" => KeyType::S,
                "N" => KeyType::N,
                "B" => KeyType::B,
                other => panic!("a key of type {other}"),
            };
            (schema["name"].as_str().unwrap().to_string(), key_type)
        };
        let items = |list: &Value| -> Vec<Item> {
            list.as_array().unwrap().iter().map(|item| item_from_json(item).expect("a manifest item")).collect()
        };
        part["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|table| {
                let partition = key_attribute(&table["partition_key"]);
                let key = match table["sort_key"].is_null() {
                    true => KeySchema::hash_only(&partition.0, partition.1),
                    false => {
                        let sort = key_attribute(&table["sort_key"]);
                        KeySchema::composite((&partition.0, partition.1), (&sort.0, sort.1))
                    }
                };
                let tags = table.get("tags").and_then(Value::as_object).map_or_else(BTreeMap::new, |tags| {
                    tags.iter().map(|(name, value)| (name.clone(), value.as_str().unwrap().to_string())).collect()
                });
                Expected {
                    name: table["name"].as_str().unwrap().to_string(),
                    key,
                    partitions: table["partitions"].as_u64().unwrap() as u32,
                    throughput: match table["billing_mode"].as_str().unwrap() {
                        "PAY_PER_REQUEST" => None,
                        _ => Some(Throughput {
                            read_units: table["throughput"]["read"].as_u64().unwrap(),
                            write_units: table["throughput"]["write"].as_u64().unwrap(),
                        }),
                    },
                    tags,
                    items: items(&table["items"]),
                    deleted: items(&table["deleted_keys"]),
                }
            })
            .collect()
    }

    fn key_of(&self, item: &Item) -> Item {
        let mut names = vec![&self.key.partition.name];
        names.extend(self.key.sort.as_ref().map(|sort| &sort.name));
        names.into_iter().map(|name| (name.clone(), item[name].clone())).collect()
    }

    /// A key of this table's schema no manifest item has.
    fn new_key(&self, n: u32) -> Item {
        let value = |key_type: KeyType| match key_type {
            KeyType::S => AttributeValue::S(format!("written-after-upgrade-{n}")),
            KeyType::N => AttributeValue::N(tessera_engine::Number::parse(&format!("{}", 9_000_000 + n)).unwrap()),
            KeyType::B => AttributeValue::B(format!("written-after-upgrade-{n}").into_bytes()),
        };
        let mut key = ItemBuilder::new().value(&self.key.partition.name, value(self.key.partition.key_type));
        if let Some(sort) = &self.key.sort {
            key = key.value(&sort.name, value(sort.key_type));
        }
        key.build()
    }
}

/// DynamoDB's order of sort key values: numbers numerically, strings and binaries bytewise.
fn sort_order(a: &AttributeValue, b: &AttributeValue) -> std::cmp::Ordering {
    match (a, b) {
        (AttributeValue::N(a), AttributeValue::N(b)) => a.cmp(b),
        (AttributeValue::S(a), AttributeValue::S(b)) => a.as_bytes().cmp(b.as_bytes()),
        (AttributeValue::B(a), AttributeValue::B(b)) => a.cmp(b),
        other => panic!("sort key values of different types: {other:?}"),
    }
}

/// One DynamoDB API call over HTTP: the status and the answer's JSON.
fn call(http: SocketAddr, operation: &str, body: &Value) -> (u16, Value) {
    let mut stream = TcpStream::connect(http).expect("connect to the HTTP API");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let request = post(&format!("DynamoDB_20120810.{operation}"), &body.to_string(), None);
    let (status, _, answer) = exchange(&mut stream, &request).expect("an HTTP answer");
    (status, serde_json::from_slice(&answer).expect("a JSON answer"))
}

fn ok(http: SocketAddr, operation: &str, body: Value) -> Value {
    let (status, answer) = call(http, operation, &body);
    assert_eq!(status, 200, "{operation} {body}: {answer}");
    answer
}

/// Every page of a Query or Scan over HTTP: the items (or, with Select COUNT, none) and the count.
fn pages(http: SocketAddr, operation: &str, body: Value) -> (Vec<Item>, u64) {
    let (mut items, mut count, mut start) = (Vec::new(), 0, None);
    loop {
        let mut request = body.clone();
        if let Some(start) = start.take() {
            request["ExclusiveStartKey"] = start;
        }
        let answer = ok(http, operation, request);
        count += answer["Count"].as_u64().unwrap();
        items.extend(
            answer
                .get("Items")
                .into_iter()
                .flat_map(|page| page.as_array().unwrap())
                .map(|item| item_from_json(item).unwrap()),
        );
        match answer.get("LastEvaluatedKey") {
            Some(key) => start = Some(key.clone()),
            None => return (items, count),
        }
    }
}

/// Everything the manifest says, read through the binary protocol at `binary` and through
/// the HTTP API at each of `https` in turn.
fn check(binary: SocketAddr, https: &[SocketAddr], tables: &[Expected], deleted_tables: &[String]) {
    let mut client = Client::connect(binary).expect("connect");
    let mut names: Vec<String> = tables.iter().map(|table| table.name.clone()).collect();
    names.sort();
    assert_eq!(client.list_tables().unwrap(), names, "deleted: {deleted_tables:?}");
    for &http in https {
        assert_eq!(ok(http, "ListTables", json!({}))["TableNames"], json!(names));
    }
    let mut turn = https.iter().copied().cycle();
    for table in tables {
        let described = client.describe_table(&table.name).unwrap();
        assert_eq!(described.key_schema, table.key, "{}", table.name);
        assert_eq!(described.status, TableStatus::Active, "{}", table.name);
        assert_eq!(described.partitions, table.partitions, "{}", table.name);
        assert_eq!(described.throughput, table.throughput, "{}", table.name);
        let http = turn.next().unwrap();
        let description = &ok(http, "DescribeTable", json!({"TableName": table.name}))["Table"];
        assert_eq!(description["TableStatus"], "ACTIVE");
        assert_eq!(description["KeySchema"][0]["AttributeName"], table.key.partition.name.as_str());
        assert_eq!(description["KeySchema"].as_array().unwrap().len(), 1 + table.key.sort.is_some() as usize);
        match table.throughput {
            None => assert_eq!(description["BillingModeSummary"]["BillingMode"], "PAY_PER_REQUEST", "{}", table.name),
            Some(throughput) => {
                let provisioned = &description["ProvisionedThroughput"];
                assert_eq!(provisioned["ReadCapacityUnits"], throughput.read_units, "{}", table.name);
                assert_eq!(provisioned["WriteCapacityUnits"], throughput.write_units, "{}", table.name);
            }
        }
        let tags = ok(http, "ListTagsOfResource", json!({"ResourceArn": description["TableArn"]}));
        let tags: BTreeMap<String, String> = tags["Tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|tag| (tag["Key"].as_str().unwrap().into(), tag["Value"].as_str().unwrap().into()))
            .collect();
        assert_eq!(tags, table.tags, "{}", table.name);

        for item in &table.items {
            let key = table.key_of(item);
            assert_eq!(client.get_item(&table.name, key.clone()).unwrap().as_ref(), Some(item), "{}", table.name);
            let body = json!({"TableName": table.name, "Key": item_to_json(&key), "ConsistentRead": true});
            let answer = ok(turn.next().unwrap(), "GetItem", body);
            assert_eq!(item_from_json(&answer["Item"]).as_ref(), Ok(item), "{}: {key:?}", table.name);
        }
        for key in &table.deleted {
            assert_eq!(client.get_item(&table.name, key.clone()).unwrap(), None, "{}: {key:?}", table.name);
            let body = json!({"TableName": table.name, "Key": item_to_json(key), "ConsistentRead": true});
            assert_eq!(ok(turn.next().unwrap(), "GetItem", body).get("Item"), None, "{}: {key:?}", table.name);
        }

        if let Some(sort) = &table.key.sort {
            let partition = &table.key.partition.name;
            let mut by_partition: Vec<(&AttributeValue, Vec<&Item>)> = Vec::new();
            for item in &table.items {
                match by_partition.iter_mut().find(|(value, _)| *value == &item[partition]) {
                    Some((_, items)) => items.push(item),
                    None => by_partition.push((&item[partition], vec![item])),
                }
            }
            for (value, mut items) in by_partition {
                items.sort_by(|a, b| sort_order(&a[&sort.name], &b[&sort.name]));
                let items: Vec<Item> = items.into_iter().cloned().collect();
                let query = Query {
                    table: table.name.clone(),
                    partition_key: value.clone(),
                    sort: None,
                    backward: false,
                    limit: 0,
                    exclusive_start_key: None,
                    consistent_read: true,
                    read: Default::default(),
                };
                assert_eq!(client.query_all(query).unwrap(), items, "{}: {value:?}", table.name);
                let body = json!({
                    "TableName": table.name, "ConsistentRead": true, "KeyConditionExpression": "#p = :p",
                    "ExpressionAttributeNames": {"#p": partition},
                    "ExpressionAttributeValues": {":p": value_to_json(value)},
                });
                assert_eq!(pages(turn.next().unwrap(), "Query", body).0, items, "{}: {value:?}", table.name);
            }
        }

        let scan = Scan {
            table: table.name.clone(),
            segment: 0,
            total_segments: 0,
            limit: 0,
            exclusive_start_key: None,
            consistent_read: true,
            read: Default::default(),
        };
        let scanned = client.scan_all(scan).unwrap();
        assert_eq!(scanned.len(), table.items.len(), "{}", table.name);
        assert!(scanned.iter().all(|item| table.items.contains(item)), "{}", table.name);
        let body = json!({"TableName": table.name, "ConsistentRead": true, "Select": "COUNT"});
        assert_eq!(pages(turn.next().unwrap(), "Scan", body).1, table.items.len() as u64, "{}", table.name);

        // DescribeTable counts the items a node's replicas have applied (DynamoDB's ItemCount
        // is not current either): in a cluster, a follower's count is right once it catches up.
        let count = table.items.len() as u64;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut counts = || {
            let mut counts = vec![client.describe_table(&table.name).unwrap().item_count];
            for &http in https {
                let description = ok(http, "DescribeTable", json!({"TableName": table.name}));
                counts.push(description["Table"]["ItemCount"].as_u64().unwrap());
            }
            counts
        };
        let mut found = counts();
        while found.iter().any(|&found| found != count) {
            assert!(Instant::now() < deadline, "{}: ItemCount {found:?}, not {count}", table.name);
            std::thread::sleep(Duration::from_millis(100));
            found = counts();
        }
    }
}

/// New writes to every table, through both protocols: a put of each, an update and a delete
/// of a manifest item; `tables` then holds what they must.
fn write_more(binary: SocketAddr, http: SocketAddr, tables: &mut [Expected], round: u32) {
    let mut client = Client::connect(binary).expect("connect");
    for table in tables {
        let mut item = table.new_key(2 * round);
        item.insert("written".into(), AttributeValue::S(format!("by today's release, round {round}")));
        client.put_item(&table.name, item.clone()).unwrap();
        table.items.push(item);
        let mut item = table.new_key(2 * round + 1);
        item.insert("flags".into(), AttributeValue::Ss(["new".to_string(), "http".to_string()].into()));
        ok(http, "PutItem", json!({"TableName": table.name, "Item": item_to_json(&item)}));
        table.items.push(item);

        let key = table.key_of(&table.items[0]);
        let updated = ok(
            http,
            "UpdateItem",
            json!({
                "TableName": table.name, "Key": item_to_json(&key), "ReturnValues": "ALL_NEW",
                "UpdateExpression": "SET upgraded = :round ADD ss :tag",
                "ExpressionAttributeValues": {":round": {"N": round.to_string()}, ":tag": {"SS": ["upgraded"]}},
            }),
        );
        let updated = item_from_json(&updated["Attributes"]).unwrap();
        assert_eq!(updated["upgraded"], AttributeValue::N(tessera_engine::Number::parse(&round.to_string()).unwrap()));
        table.items[0] = updated;
        let key = table.key_of(&table.items[1]);
        let updated = client
            .update_item(&table.name, key, "REMOVE s", Expressions::default(), ReturnValues::AllNew)
            .unwrap()
            .expect("ALL_NEW");
        assert!(!updated.contains_key("s"));
        table.items[1] = updated;

        let gone = table.items.remove(2);
        assert_eq!(client.delete_item(&table.name, table.key_of(&gone)).unwrap(), Some(gone.clone()));
        table.deleted.push(table.key_of(&gone));
    }
}

#[test]
fn a_single_node_data_directory_of_format_1_opens_and_serves() {
    let unpacked = Unpacked::new("single");
    let single = &unpacked.manifest["single"];
    assert_eq!(single["cores"], 2, "common::Node serves on 2 cores");
    let mut tables = Expected::all(single);
    let deleted: Vec<String> =
        single["deleted_tables"].as_array().unwrap().iter().map(|name| name.as_str().unwrap().into()).collect();
    let segment = single["wal_segment_mib"].to_string();
    let mut node = Node::open(unpacked.root.join(single["dir"].as_str().unwrap()), &["--wal-segment-mib", &segment]);
    check(node.address, &[node.http], &tables, &deleted);
    write_more(node.address, node.http, &mut tables, 1);
    check(node.address, &[node.http], &tables, &deleted);
    node.kill();
    node.restart();
    check(node.address, &[node.http], &tables, &deleted);
}

/// The fixture's three cluster nodes, on new addresses (no address is in the data).
struct Cluster {
    root: PathBuf,
    file: PathBuf,
    secret: PathBuf,
    clients: Vec<SocketAddr>,
    https: Vec<SocketAddr>,
    nodes: Vec<Child>,
    segment_mib: String,
}

impl Cluster {
    /// Nodes 1-3 on the data in `root`/cluster, with WAL segments of `segment_mib`.
    fn start(root: &Path, segment_mib: &str) -> Cluster {
        let addresses = free_addresses(9);
        let (clients, rest) = addresses.split_at(3);
        let (https, peers) = rest.split_at(3);
        let file = root.join("cluster-file");
        let lines: Vec<String> = (0..3).map(|at| format!("{} {} {}", at + 1, clients[at], peers[at])).collect();
        std::fs::write(&file, lines.join("\n")).unwrap();
        let secret = root.join("cluster-secret");
        std::fs::write(&secret, "an-upgrade-test-secret-0123456789\n").unwrap();
        let mut cluster = Cluster {
            root: root.to_path_buf(),
            file,
            secret,
            clients: clients.to_vec(),
            https: https.to_vec(),
            nodes: Vec::new(),
            segment_mib: segment_mib.to_string(),
        };
        cluster.spawn();
        cluster
    }

    fn spawn(&mut self) {
        for id in 1..=3 {
            let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
                .args(["serve", "--node-id", &id.to_string(), "--cores", "1", "--cache-mib", "64"])
                .args(["--wal-segment-mib", &self.segment_mib, "--first-cpu", "none", "--cluster"])
                .arg(&self.file)
                .arg("--cluster-secret")
                .arg(&self.secret)
                .args(["--listen", &self.clients[id - 1].to_string()])
                .args(["--http-listen", &self.https[id - 1].to_string()])
                .arg("--data-dir")
                .arg(self.root.join(format!("cluster/node-{id}")))
                .stdout(Stdio::piped())
                .spawn()
                .expect("start tessera serve");
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
            assert!(line.contains("serving"), "node {id} did not start: {line:?}");
            self.nodes.push(child);
        }
        // Leaders are elected anew: wait until a consistent read of every partition answers
        // at every node.
        let deadline = Instant::now() + Duration::from_secs(30);
        for &http in &self.https {
            let body = json!({"TableName": "v1_cluster", "ConsistentRead": true, "Select": "COUNT"});
            while call(http, "Scan", &body).0 != 200 {
                assert!(Instant::now() < deadline, "no leaders after the restart");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn kill(&mut self) {
        for mut child in self.nodes.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn a_three_node_cluster_of_format_1_opens_and_serves() {
    let unpacked = Unpacked::new("cluster");
    let mut tables = Expected::all(&unpacked.manifest["cluster"]);
    assert_eq!(tables.iter().map(|table| table.name.as_str()).collect::<Vec<_>>(), ["v1_cluster"]);
    let mut cluster = Cluster::start(&unpacked.root, &unpacked.manifest["cluster"]["wal_segment_mib"].to_string());
    check(cluster.clients[0], &cluster.https, &tables, &[]);
    write_more(cluster.clients[0], cluster.https[1], &mut tables, 1);
    check(cluster.clients[0], &cluster.https, &tables, &[]);
    cluster.kill();
    cluster.spawn();
    check(cluster.clients[0], &cluster.https, &tables, &[]);
}
