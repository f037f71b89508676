//! The real `tessera serve` binary on a loopback port, driven by the client library, by the
//! command line, by garbage bytes, and by SIGKILL.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tessera_engine::{AttributeValue, Item, KeySchema, KeyType, Number};
use tessera_wire::client::{Client, ClientConfig, ClientError, Credentials, ItemBuilder};
use tessera_wire::frame::{self, Decoded};
use tessera_wire::{
    ErrorCode, Expressions, MessageType, PartitionOp, Query, Request, Response, ReturnValues, Scan, SortCondition,
    TableKeys, Write,
};

mod common;

const BINARY: &str = env!("CARGO_BIN_EXE_tessera");

/// A node running in a child process.
struct Node {
    child: Child,
    address: SocketAddr,
    dir: PathBuf,
}

impl Node {
    fn start(dir: &Path) -> Node {
        Node::start_with(dir, &[])
    }

    fn start_with(dir: &Path, flags: &[&str]) -> Node {
        let mut child = Command::new(BINARY)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--cores",
                "2",
                "--cache-mib",
                "64",
            ])
            .arg("--data-dir")
            .arg(dir)
            .args(flags)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tessera serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
        let address = line
            .split_whitespace()
            .find_map(|word| word.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Node { child, address, dir: dir.to_path_buf() }
    }

    fn fresh(name: &str) -> Node {
        let dir = std::env::temp_dir().join(format!("tessera-server-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Node::start(&dir)
    }

    fn client(&self) -> Client {
        Client::connect(self.address).expect("connect")
    }

    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let output = Command::new(BINARY)
            .args(["--endpoint", &self.address.to_string()])
            .args(args)
            .output()
            .expect("run tessera");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn kill(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::take(&mut self.dir)
    }

    /// SIGTERM, and waits for the clean stop.
    fn terminate(mut self) -> PathBuf {
        // SAFETY: kill only sends a signal to our child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "a clean stop exits 0, not {status}");
        std::mem::take(&mut self.dir)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(Number::parse(&value.to_string()).unwrap())
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}

fn text(value: &AttributeValue) -> String {
    match value {
        AttributeValue::S(text) => text.clone(),
        other => panic!("expected a string, got {other:?}"),
    }
}

fn orders_key(customer: &str, number: i64) -> Item {
    ItemBuilder::new().s("customer", customer).n("n", number).build()
}

fn service_error(result: Result<impl std::fmt::Debug, ClientError>, code: ErrorCode) -> String {
    match result {
        Err(ClientError::Service(error)) if error.code == code => error.message,
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

fn query(table: &str, pk: AttributeValue, sort: Option<SortCondition>) -> Query {
    Query {
        table: table.into(),
        partition_key: pk,
        sort,
        backward: false,
        limit: 0,
        exclusive_start_key: None,
        consistent_read: true,
        read: Default::default(),
    }
}

fn numbers(items: &[Item]) -> Vec<i64> {
    items
        .iter()
        .map(|item| item["n"].clone())
        .map(|value| match value {
            AttributeValue::N(number) => number.to_string().parse().unwrap(),
            other => panic!("n is {other:?}"),
        })
        .collect()
}

#[test]
fn tables_items_and_queries_through_the_client() {
    let node = Node::fresh("client");
    let mut client = node.client();
    let schema = KeySchema::composite(("customer", KeyType::S), ("n", KeyType::N));
    let table = client.create_table("orders", schema.clone(), 5).unwrap();
    assert_eq!((table.name.as_str(), table.partitions), ("orders", 5));
    service_error(client.create_table("orders", schema.clone(), 5), ErrorCode::ResourceInUseException);
    service_error(client.create_table("no", schema.clone(), 1), ErrorCode::ValidationException);
    client.create_table("users", KeySchema::hash_only("id", KeyType::B), 0).unwrap();
    assert_eq!(client.list_tables().unwrap(), ["orders", "users"]);

    for number in 1..=20 {
        let item = ItemBuilder::new().s("customer", "c1").n("n", number).s("note", format!("order {number}")).build();
        client.put_item("orders", item).unwrap();
    }
    client.put_item("orders", ItemBuilder::new().s("customer", "c2").n("n", 1).build()).unwrap();
    let replaced = ItemBuilder::new().s("customer", "c1").n("n", 3).bool("changed", true).build();
    let old = client.put_item_returning_old("orders", replaced.clone()).unwrap().unwrap();
    assert_eq!(old["note"], s("order 3"));
    assert_eq!(client.get_item("orders", orders_key("c1", 3)).unwrap(), Some(replaced));
    assert_eq!(client.get_item("orders", orders_key("c9", 3)).unwrap(), None);
    assert_eq!(client.delete_item("orders", orders_key("c1", 20)).unwrap().unwrap()["note"], s("order 20"));
    assert_eq!(client.delete_item("orders", orders_key("c1", 20)).unwrap(), None);

    let all = client.query_all(query("orders", s("c1"), None)).unwrap();
    assert_eq!(numbers(&all), (1..=19).collect::<Vec<_>>());
    let cases = [
        (SortCondition::Eq(n(5)), vec![5]),
        (SortCondition::Lt(n(3)), vec![1, 2]),
        (SortCondition::Le(n(3)), vec![1, 2, 3]),
        (SortCondition::Gt(n(17)), vec![18, 19]),
        (SortCondition::Ge(n(17)), vec![17, 18, 19]),
        (SortCondition::Between(n(4), n(6)), vec![4, 5, 6]),
    ];
    for (condition, expected) in cases {
        let found = client.query_all(query("orders", s("c1"), Some(condition.clone()))).unwrap();
        assert_eq!(numbers(&found), expected, "{condition:?}");
    }
    // Backward, three at a time: pages follow LastEvaluatedKey.
    let mut backward = query("orders", s("c1"), Some(SortCondition::Ge(n(10))));
    backward.backward = true;
    backward.limit = 3;
    let first = client.query(backward.clone()).unwrap();
    assert_eq!(numbers(&first.items), [19, 18, 17]);
    assert!(first.last_evaluated_key.is_some());
    assert_eq!(numbers(&client.query_all(backward).unwrap()), (10..=19).rev().collect::<Vec<_>>());
    let message = service_error(
        client.query(query("orders", s("c1"), Some(SortCondition::BeginsWith(n(1))))),
        ErrorCode::ValidationException,
    );
    assert!(message.contains("begins_with"), "{message}");
    service_error(
        client.query(query("orders", s("c1"), Some(SortCondition::Between(n(6), n(4))))),
        ErrorCode::ValidationException,
    );
    service_error(client.query(query("orders", n(1), None)), ErrorCode::ValidationException);

    // begins_with on a string sort key.
    let schema = KeySchema::composite(("pk", KeyType::S), ("sk", KeyType::S));
    client.create_table("events", schema, 3).unwrap();
    for sk in ["2024-01-05", "2024-02-01", "2024-02-17", "2025-02-01"] {
        client.put_item("events", ItemBuilder::new().s("pk", "p").s("sk", sk).build()).unwrap();
    }
    let february = client.query_all(query("events", s("p"), Some(SortCondition::BeginsWith(s("2024-02"))))).unwrap();
    assert_eq!(february.iter().map(|item| item["sk"].clone()).collect::<Vec<_>>(), [s("2024-02-01"), s("2024-02-17")]);

    // Errors that name what was wrong.
    let message = service_error(client.get_item("missing", orders_key("c1", 1)), ErrorCode::ResourceNotFoundException);
    assert!(message.contains("missing"), "{message}");
    service_error(
        client.get_item("orders", ItemBuilder::new().s("customer", "c1").build()),
        ErrorCode::ValidationException,
    );
    let wrong_type = ItemBuilder::new().n("customer", 1).n("n", 1).build();
    let message = service_error(client.put_item("orders", wrong_type), ErrorCode::ValidationException);
    assert!(message.contains("type mismatch"), "{message}");
    let huge = ItemBuilder::new().s("customer", "c1").n("n", 1).b("blob", vec![0u8; 400 * 1024]).build();
    service_error(client.put_item("orders", huge), ErrorCode::ValidationException);

    let described = client.describe_table("orders").unwrap();
    assert_eq!(described.item_count, 20);
    client.delete_table("orders").unwrap();
    service_error(client.describe_table("orders"), ErrorCode::ResourceNotFoundException);
    assert_eq!(client.list_tables().unwrap(), ["events", "users"]);
    // A new table of the same name starts empty.
    client.create_table("orders", KeySchema::composite(("customer", KeyType::S), ("n", KeyType::N)), 2).unwrap();
    assert!(client.query_all(query("orders", s("c1"), None)).unwrap().is_empty());
}

#[test]
fn scans_page_by_the_megabyte_and_segments_cover_each_item_once() {
    let node = Node::fresh("scan");
    let mut client = node.client();
    client.create_table("blobs", KeySchema::hash_only("id", KeyType::S), 7).unwrap();
    let mut writes = Vec::new();
    for index in 0..300 {
        let item = ItemBuilder::new().s("id", format!("item-{index:04}")).b("data", vec![index as u8; 10_000]).build();
        writes.push(Write::Put { table: "blobs".into(), item });
        if writes.len() == 25 {
            assert!(client.batch_write_item(std::mem::take(&mut writes)).unwrap().is_empty());
        }
    }
    let scan = |segment, total| Scan {
        table: "blobs".into(),
        segment,
        total_segments: total,
        limit: 0,
        exclusive_start_key: None,
        consistent_read: true,
        read: Default::default(),
    };
    // 300 items of 10 KB are 3 MB: at least three 1 MB pages.
    let mut pages = 0;
    let mut seen = Vec::new();
    let mut request = scan(0, 1);
    loop {
        let page = client.scan(request.clone()).unwrap();
        pages += 1;
        let bytes: usize = page.items.len() * 10_000;
        assert!(bytes <= (1 << 20) + 20_000, "a page of {bytes} bytes");
        seen.extend(page.items.iter().map(|item| text(&item["id"])));
        match page.last_evaluated_key {
            Some(key) => request.exclusive_start_key = Some(key),
            None => break,
        }
    }
    assert!(pages >= 3, "{pages} pages");
    assert_eq!(seen.len(), 300);
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 300);

    // Four parallel segments, each paged with a small limit: every item exactly once.
    let mut union = Vec::new();
    for segment in 0..4 {
        let mut request = scan(segment, 4);
        request.limit = 17;
        union.extend(client.scan_all(request).unwrap().iter().map(|item| text(&item["id"])));
    }
    assert_eq!(union.len(), 300);
    assert_eq!(union.iter().collect::<BTreeSet<_>>().len(), 300);
    service_error(client.scan(scan(4, 4)), ErrorCode::ValidationException);
    service_error(client.scan(scan(0, 1_000_001)), ErrorCode::ValidationException);
}

#[test]
fn batches_have_dynamodb_limits() {
    let node = Node::fresh("batch");
    let mut client = node.client();
    client.create_table("pairs", KeySchema::hash_only("k", KeyType::N), 4).unwrap();
    let put = |k: i64| Write::Put { table: "pairs".into(), item: ItemBuilder::new().n("k", k).s("v", "x").build() };
    let key = |k: i64| ItemBuilder::new().n("k", k).build();
    assert!(client.batch_write_item((0..25).map(put).collect()).unwrap().is_empty());
    service_error(client.batch_write_item((0..26).map(put).collect()), ErrorCode::ValidationException);
    service_error(client.batch_write_item(vec![]), ErrorCode::ValidationException);
    let message = service_error(client.batch_write_item(vec![put(1), put(1)]), ErrorCode::ValidationException);
    assert!(message.contains("duplicates"), "{message}");
    // A bad write fails the whole batch before anything is written.
    let bad = Write::Put { table: "pairs".into(), item: ItemBuilder::new().s("k", "text").build() };
    service_error(client.batch_write_item(vec![put(100), bad]), ErrorCode::ValidationException);
    assert_eq!(client.get_item("pairs", key(100)).unwrap(), None);
    assert!(client.batch_write_item(vec![Write::Delete { table: "pairs".into(), key: key(0) }]).unwrap().is_empty());

    let keys = |range: std::ops::Range<i64>| {
        vec![TableKeys {
            table: "pairs".into(),
            keys: range.map(key).collect(),
            consistent_read: true,
            read: Default::default(),
        }]
    };
    let (responses, unprocessed) = client.batch_get_item(keys(0..30)).unwrap();
    assert!(unprocessed.is_empty());
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].1.len(), 24, "keys 1..25 exist, 0 was deleted");
    service_error(client.batch_get_item(keys(0..101)), ErrorCode::ValidationException);
    let mut duplicate = keys(0..2);
    duplicate[0].keys.push(key(1));
    service_error(client.batch_get_item(duplicate), ErrorCode::ValidationException);

    // An answer holds at most 16 MB of items: 60 items of about 390 KB (23 MB) come back in
    // parts, the rest as unprocessed keys with the request's settings, until every item is read.
    for k in 1000..1060 {
        let big = ItemBuilder::new().n("k", k).b("v", vec![k as u8; 390_000]).build();
        client.put_item("pairs", big).unwrap();
    }
    let mut asked = keys(1000..1060);
    asked[0].read.projection = Some("k, v".into());
    let (mut read, mut calls) = (BTreeSet::new(), 0);
    while !asked.is_empty() {
        let (responses, unprocessed) = client.batch_get_item(asked).unwrap();
        let items = &responses[0].1;
        let bytes: usize = items.iter().map(tessera_engine::item_size).sum();
        assert!(bytes <= 16 << 20, "an answer of {bytes} bytes of items");
        assert!(!items.is_empty(), "an answer with no item");
        read.extend(items.iter().map(|item| format!("{:?}", item.get("k"))));
        for keys in &unprocessed {
            assert!(keys.consistent_read && keys.read.projection.as_deref() == Some("k, v"), "{keys:?}");
        }
        asked = unprocessed;
        calls += 1;
    }
    assert_eq!(read.len(), 60);
    assert!(calls >= 2, "23 MB of items answered in {calls} call");

    // Cluster administration has nothing to work on in a single node.
    for request in [Request::DescribeReplicas, Request::RetireReplica { partition: 0 }] {
        let message = service_error(client.call(&request), ErrorCode::ValidationException);
        assert!(message.contains("not a cluster member"), "{message}");
    }
}

#[test]
fn the_command_line_speaks_dynamodb_json() {
    let node = Node::fresh("cli");
    let (ok, out, err) =
        node.cli(&["table", "create", "pets", "--pk", "owner:S", "--sk", "name:S", "--partitions", "3"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"TableName\":\"pets\""), "{out}");
    for (owner, name) in [("ann", "rex"), ("ann", "tom"), ("bob", "kit")] {
        let item = format!(r#"{{"owner":{{"S":"{owner}"}},"name":{{"S":"{name}"}},"age":{{"N":"3"}}}}"#);
        let (ok, _, err) = node.cli(&["put", "pets", &item]);
        assert!(ok, "{err}");
    }
    let (ok, out, _) = node.cli(&["get", "pets", r#"{"owner":{"S":"ann"},"name":{"S":"tom"}}"#]);
    assert!(ok);
    let item: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(item["age"]["N"], "3");
    let (ok, out, _) = node.cli(&["query", "pets", "--pk", r#"{"S":"ann"}"#, "--backward"]);
    assert!(ok);
    let names: Vec<serde_json::Value> = out.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(names.iter().map(|item| item["name"]["S"].as_str().unwrap()).collect::<Vec<_>>(), ["tom", "rex"]);
    let (ok, out, _) = node.cli(&["scan", "pets"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 3);
    let (ok, out, _) = node.cli(&["table", "list"]);
    assert!(ok && out.trim() == "pets", "{out}");
    let (ok, _, err) = node.cli(&["get", "pets", r#"{"owner":{"S":"ann"}}"#]);
    assert!(!ok && err.lines().count() == 1 && err.contains("ValidationException"), "{err}");
    let (ok, _, err) = node.cli(&["put", "pets", "{not json"]);
    assert!(!ok && err.contains("not valid JSON"), "{err}");
    let (ok, _, err) = node.cli(&["get", "nothing", r#"{"a":{"S":"b"}}"#]);
    assert!(!ok && err.contains("ResourceNotFoundException"), "{err}");
    let (ok, _, _) = node.cli(&["delete", "pets", r#"{"owner":{"S":"bob"},"name":{"S":"kit"}}"#]);
    assert!(ok);

    // Expressions: update with a condition, names and values, printing what it returns.
    let rex = r#"{"owner":{"S":"ann"},"name":{"S":"rex"}}"#;
    let one = r#"{":one":{"N":"1"},":three":{"N":"3"}}"#;
    let increment = [
        "update",
        "pets",
        rex,
        "--update",
        "SET #a = #a + :one",
        "--condition",
        "#a = :three",
        "--names",
        r##"{"#a":"age"}"##,
        "--values",
        one,
    ];
    let (ok, out, err) = node.cli(&[&increment[..], &["--return-values", "UPDATED_NEW"]].concat());
    assert!(ok, "{err}");
    assert_eq!(out.trim(), r#"{"age":{"N":"4"}}"#);
    // Again: the age is no longer 3.
    let (ok, _, err) = node.cli(&increment);
    assert!(!ok && err.lines().count() == 1 && err.contains("ConditionalCheckFailedException"), "{err}");
    let (ok, _, err) =
        node.cli(&["put", "pets", rex, "--condition", "attribute_not_exists(#o)", "--names", r##"{"#o":"owner"}"##]);
    assert!(!ok && err.contains("ConditionalCheckFailedException"), "{err}");
    let (ok, out, err) =
        node.cli(&["delete", "pets", rex, "--condition", "attribute_exists(age)", "--return-values", "ALL_OLD"]);
    assert!(ok, "{err}");
    assert!(out.contains(r#""age":{"N":"4"}"#), "{out}");
    let (ok, _, err) = node.cli(&["update", "pets", rex, "--update", "SET status = :one", "--values", one]);
    assert!(!ok && err.contains("reserved keyword: status"), "{err}");
    let (ok, _, err) = node.cli(&["put", "pets", rex, "--return-values", "ALL_NEW"]);
    assert!(!ok && err.contains("ALL_OLD or NONE"), "{err}");

    // Reads with expressions.
    let ann = r#"{":o":{"S":"ann"},":r":{"S":"t"}}"#;
    let (ok, out, err) = node.cli(&[
        "query",
        "pets",
        "--key-condition",
        "#o = :o",
        "--names",
        r##"{"#o":"owner"}"##,
        "--values",
        r#"{":o":{"S":"ann"}}"#,
        "--projection",
        "#n",
        "--names",
        r##"{"#o":"owner"}"##,
    ]);
    assert!(!ok && err.contains("#n"), "an undefined name is refused: {out} {err}");
    let (ok, out, err) = node.cli(&[
        "query",
        "pets",
        "--key-condition",
        "#o = :o AND begins_with(#n, :r)",
        "--names",
        r##"{"#o":"owner","#n":"name"}"##,
        "--values",
        ann,
        "--projection",
        "#n",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), r#"{"name":{"S":"tom"}}"#);
    let (ok, out, err) = node.cli(&[
        "scan",
        "pets",
        "--segments",
        "3",
        "--filter",
        "age = :a",
        "--values",
        r#"{":a":{"N":"3"}}"#,
        "--count",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1", "tom (rex was deleted, kit too)");
    let (ok, out, err) = node.cli(&[
        "get",
        "pets",
        r#"{"owner":{"S":"ann"},"name":{"S":"tom"}}"#,
        "--projection",
        "age",
        "--consistent",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), r#"{"age":{"N":"3"}}"#);
    let (ok, _, _) = node.cli(&["table", "delete", "pets"]);
    assert!(ok);
}

/// Reads answers from a raw connection until `count` arrived or the server closed it.
fn read_answers(stream: &mut TcpStream, count: usize) -> (Vec<(u64, Response)>, bool) {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buffer = Vec::new();
    let mut answers = Vec::new();
    while answers.len() < count {
        match frame::decode(&buffer).expect("the server's framing is sound") {
            Decoded::Frame(frame, used) => {
                assert!(frame.checksum_ok);
                let response = Response::decode(frame.header.message_type, frame.payload).expect("a valid answer");
                answers.push((frame.header.request_id, response));
                buffer.drain(..used);
            }
            Decoded::Incomplete(_) => {
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk) {
                    Ok(0) => return (answers, true),
                    Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                    Err(error) => panic!("the server neither answered nor closed: {error}"),
                }
            }
        }
    }
    (answers, false)
}

fn error_code(response: &Response) -> ErrorCode {
    match response {
        Response::Error(error) => error.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn garbage_gets_typed_errors_and_the_server_keeps_serving() {
    let node = Node::fresh("garbage");
    let mut client = node.client();
    client.create_table("pairs", KeySchema::hash_only("k", KeyType::S), 2).unwrap();

    // Intact frames with bad contents: each gets its error, the connection lives on.
    let mut stream = TcpStream::connect(node.address).unwrap();
    let mut bytes = Vec::new();
    frame::encode(1, MessageType::PutItem, 0, b"not a flatbuffer", &mut bytes);
    frame::encode(2, MessageType::ItemResponse, 0, b"", &mut bytes);
    let mut damaged = Vec::new();
    Request::DescribeTable { table: "pairs".into(), counts: true }.encode(3, &mut damaged);
    let last = damaged.len() - 1;
    damaged[last] ^= 0xFF;
    bytes.extend_from_slice(&damaged);
    let mut unknown = Vec::new();
    Request::DescribeTable { table: "pairs".into(), counts: true }.encode(4, &mut unknown);
    unknown[16..18].copy_from_slice(&0x7777u16.to_le_bytes());
    let checksum = crc32c::crc32c(&unknown[8..]);
    unknown[4..8].copy_from_slice(&checksum.to_le_bytes());
    bytes.extend_from_slice(&unknown);
    Request::DescribeTable { table: "pairs".into(), counts: true }.encode(5, &mut bytes);
    stream.write_all(&bytes).unwrap();
    let (answers, closed) = read_answers(&mut stream, 5);
    assert!(!closed);
    let by_id: BTreeMap<u64, Response> = answers.into_iter().collect();
    assert_eq!(error_code(&by_id[&1]), ErrorCode::MalformedMessage);
    assert_eq!(error_code(&by_id[&2]), ErrorCode::UnknownMessageType);
    assert_eq!(error_code(&by_id[&3]), ErrorCode::ChecksumMismatch);
    assert_eq!(error_code(&by_id[&4]), ErrorCode::UnknownMessageType);
    assert!(matches!(by_id[&5], Response::Table(_)));

    // The internal RPC is for cluster members: a single node refuses it, garbage in one gets
    // a typed answer, and the connection lives on.
    let mut bytes = Vec::new();
    let get = PartitionOp::Get { partition: 1 << 20, key: b"k".to_vec(), consistent: true };
    get.encode(6, &mut bytes).unwrap();
    frame::encode(7, MessageType::PartitionOp, 0, b"not a flatbuffer", &mut bytes);
    frame::encode(8, MessageType::PartitionAnswer, 0, b"", &mut bytes);
    stream.write_all(&bytes).unwrap();
    let mut internal = BTreeMap::new();
    while internal.len() < 3 {
        let (header, payload) = common::read_frame(&mut stream).expect("an answer");
        let code = if header.message_type == MessageType::PartitionAnswer as u16 {
            common::partition_error(&payload)
        } else {
            error_code(&Response::decode(header.message_type, &payload).unwrap())
        };
        internal.insert(header.request_id, code);
    }
    assert_eq!(internal[&6], ErrorCode::AccessDeniedException);
    assert_eq!(internal[&7], ErrorCode::MalformedMessage);
    assert_eq!(internal[&8], ErrorCode::UnknownMessageType);
    let mut describe = Vec::new();
    Request::DescribeTable { table: "pairs".into(), counts: true }.encode(9, &mut describe);
    stream.write_all(&describe).unwrap();
    assert!(matches!(read_answers(&mut stream, 1).0[0].1, Response::Table(_)));

    // An impossible length: one answer, then the server closes the connection.
    let mut stream = TcpStream::connect(node.address).unwrap();
    stream.write_all(&u32::MAX.to_le_bytes()).unwrap();
    stream.write_all(&[0xAB; 64]).unwrap();
    let (answers, closed) = read_answers(&mut stream, 2);
    assert_eq!(answers.len(), 1);
    assert_eq!(error_code(&answers[0].1), ErrorCode::FrameTooLarge);
    assert!(closed);

    // Random garbage on many connections, and a truncated frame left hanging: the server
    // answers or closes each, and other clients are served meanwhile.
    let mut state = 0x1234_5678_9ABC_DEF1u64;
    let mut hanging = TcpStream::connect(node.address).unwrap();
    let mut half = Vec::new();
    Request::DescribeTable { table: "pairs".into(), counts: true }.encode(9, &mut half);
    hanging.write_all(&half[..half.len() / 2]).unwrap();
    for round in 0..50 {
        let mut garbage = vec![0u8; 1 + round * 37 % 3000];
        for byte in garbage.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        let mut stream = TcpStream::connect(node.address).unwrap();
        let _ = stream.write_all(&garbage);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let _ = read_answers(&mut stream, usize::MAX);
        client.put_item("pairs", ItemBuilder::new().s("k", format!("after-{round}")).build()).unwrap();
    }
    assert_eq!(client.describe_table("pairs").unwrap().item_count, 50);
}

/// Over the binary protocol too, values the data model forbids (empty sets, nesting past 32
/// levels) are refused wherever they appear, as DynamoDB refuses them, and nothing refused
/// stops the node from restarting after a SIGKILL (an acknowledged `DELETE s :e` of an empty
/// set once did).
#[test]
fn values_the_data_model_forbids_are_refused_everywhere_and_never_break_a_restart() {
    let node = Node::fresh("forbidden-values");
    let mut client = node.client();
    client.create_table("sets", KeySchema::hash_only("k", KeyType::S), 4).unwrap();
    let key = ItemBuilder::new().s("k", "a").build();
    client.put_item("sets", ItemBuilder::new().s("k", "a").build()).unwrap();
    let mut deep = AttributeValue::Null;
    for _ in 0..40 {
        deep = AttributeValue::L(vec![deep]);
    }
    let forbidden = [AttributeValue::Ss(BTreeSet::new()), AttributeValue::Ns(BTreeSet::new()), deep];
    for value in &forbidden {
        let values = |name: &str| Expressions { values: vec![(name.to_string(), value.clone())], ..Default::default() };
        let condition = |name: &str| Expressions { condition: Some(format!("s = {name}")), ..values(name) };
        let mut item = ItemBuilder::new().s("k", "b").build();
        item.insert("s".into(), value.clone());
        let refusals = [
            client.update_item("sets", key.clone(), "DELETE s :e", values(":e"), ReturnValues::None).map(drop),
            client.update_item("sets", key.clone(), "SET s = :e", values(":e"), ReturnValues::None).map(drop),
            client.put_item_if("sets", ItemBuilder::new().s("k", "c").build(), condition(":e")),
            client.delete_item_if("sets", ItemBuilder::new().s("k", "missing").build(), condition(":e")).map(drop),
            client.put_item("sets", item),
        ];
        for refusal in refusals {
            service_error(refusal, ErrorCode::ValidationException);
        }
    }
    let dir = node.kill();
    let node = Node::start(&dir);
    assert_eq!(node.client().get_item("sets", key.clone()).unwrap(), Some(key));
}

#[test]
fn acknowledged_writes_survive_sigkill_and_restart() {
    let node = Node::fresh("kill");
    node.client().create_table("acks", KeySchema::hash_only("k", KeyType::S), 8).unwrap();
    let address = node.address;
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            std::thread::spawn(move || {
                let mut client = Client::connect(address).unwrap();
                let mut acknowledged = Vec::new();
                for index in 0.. {
                    let key = format!("w{writer}-{index}");
                    let item = ItemBuilder::new().s("k", key.clone()).n("i", index).build();
                    match client.put_item("acks", item) {
                        Ok(()) => acknowledged.push(key),
                        Err(_) => return acknowledged,
                    }
                }
                unreachable!()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let dir = node.kill();
    let acknowledged: Vec<String> = writers.into_iter().flat_map(|writer| writer.join().unwrap()).collect();
    assert!(acknowledged.len() > 100, "only {} writes were acknowledged", acknowledged.len());

    let node = Node::start(&dir);
    let mut client = node.client();
    let stored: BTreeSet<String> = client
        .scan_all(Scan {
            table: "acks".into(),
            segment: 0,
            total_segments: 1,
            limit: 0,
            exclusive_start_key: None,
            consistent_read: true,
            read: Default::default(),
        })
        .unwrap()
        .into_iter()
        .map(|item| text(&item["k"]))
        .collect();
    for key in &acknowledged {
        assert!(stored.contains(key), "acknowledged write {key} is missing after the restart");
    }
    // And a clean stop keeps everything too.
    let dir = node.terminate();
    let node = Node::start(&dir);
    let count = node.client().describe_table("acks").unwrap().item_count;
    assert_eq!(count, stored.len() as u64);
}

#[test]
fn a_client_pool_serves_many_threads() {
    let node = Node::fresh("pool");
    node.client().create_table("shared", KeySchema::hash_only("k", KeyType::N), 4).unwrap();
    let pool = std::sync::Arc::new(tessera_wire::client::ClientPool::new(node.address, Default::default()));
    let threads: Vec<_> = (0..8)
        .map(|thread| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for k in thread * 50..(thread + 1) * 50 {
                    pool.with(|client| client.put_item("shared", ItemBuilder::new().n("k", k).build())).unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|thread| thread.join().unwrap());
    assert_eq!(pool.with(|client| client.describe_table("shared")).unwrap().item_count, 400);
    let message =
        service_error(pool.with(|client| client.describe_table("nothing")), ErrorCode::ResourceNotFoundException);
    assert!(message.contains("nothing"), "{message}");
}

#[test]
fn the_async_pool_pipelines_many_calls_per_connection() {
    let node = Node::fresh("async");
    let address = node.address;
    let found = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let config = tessera_wire::client::ClientConfig::default();
            let pool = std::rc::Rc::new(tessera_net::client::AsyncPool::connect(address, 3, config).await.unwrap());
            pool.client().create_table("pipelined", KeySchema::hash_only("k", KeyType::N), 4).await.unwrap();
            // 600 puts in flight at once over three connections per core, then 600 gets
            // likewise, each sent to a connection on the core owning its key.
            let puts: Vec<_> = (0..600)
                .map(|k| {
                    let pool = pool.clone();
                    glommio::spawn_local(async move {
                        let item = ItemBuilder::new().n("k", k).n("square", k * k).build();
                        pool.client().put_item("pipelined", item).await.unwrap();
                    })
                })
                .collect();
            for put in puts {
                put.await;
            }
            let gets: Vec<_> = (0..600)
                .map(|k| {
                    let pool = pool.clone();
                    glommio::spawn_local(async move {
                        let key = ItemBuilder::new().n("k", k).build();
                        let item = pool.route("pipelined", &key).await.get_item("pipelined", key).await.unwrap();
                        item.map(|item| item["square"] == n(k * k))
                    })
                })
                .collect();
            let mut found = 0;
            for get in gets {
                assert_eq!(get.await, Some(true));
                found += 1;
            }
            // The rest of the typed calls.
            let client = pool.client();
            let deletes =
                (0..10).map(|k| Write::Delete { table: "pipelined".into(), key: ItemBuilder::new().n("k", k).build() });
            assert!(client.batch_write_item(deletes.collect()).await.unwrap().is_empty());
            let keys = (5..15).map(|k| ItemBuilder::new().n("k", k).build()).collect();
            let (responses, _) = client
                .batch_get_item(vec![TableKeys {
                    table: "pipelined".into(),
                    keys,
                    consistent_read: true,
                    read: Default::default(),
                }])
                .await
                .unwrap();
            assert_eq!(responses[0].1.len(), 5);
            assert!(client.delete_item("pipelined", ItemBuilder::new().n("k", 20).build()).await.unwrap().is_some());
            let scan = Scan {
                table: "pipelined".into(),
                segment: 0,
                total_segments: 1,
                limit: 0,
                exclusive_start_key: None,
                consistent_read: true,
                read: Default::default(),
            };
            assert_eq!(client.scan(scan).await.unwrap().items.len(), 589);
            let page = client.query(query("pipelined", n(30), None)).await.unwrap();
            assert_eq!(page.items.len(), 1);
            assert_eq!(client.describe_table("pipelined").await.unwrap().item_count, 589);
            found
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(found, 600);
}

/// Conditional writes through the real server, from many clients at once: each round, of
/// eight threads putting the same new key with `attribute_not_exists`, exactly one wins;
/// concurrent `ADD` counters end at the exact total; optimistic locking on a version
/// attribute loses no increment; a failed condition can return the item as it was.
#[test]
fn conditional_writes_race_correctly() {
    use tessera_wire::{Expressions, ReturnValues};
    let node = Node::fresh("conditional");
    node.client().create_table("locks", KeySchema::hash_only("id", KeyType::S), 4).unwrap();
    let address = node.address;
    let rounds = 20;
    let threads = 8;
    let winners: Vec<_> = (0..threads)
        .map(|thread| {
            std::thread::spawn(move || {
                let mut client = Client::connect(address).unwrap();
                let mut won = Vec::new();
                for round in 0..rounds {
                    let item = ItemBuilder::new().s("id", format!("round-{round}")).n("owner", thread).build();
                    match client.put_item_if("locks", item, Expressions::condition("attribute_not_exists(id)")) {
                        Ok(()) => won.push(round),
                        Err(ClientError::Service(error))
                            if error.code == ErrorCode::ConditionalCheckFailedException => {}
                        Err(other) => panic!("round {round}: {other:?}"),
                    }
                }
                won
            })
        })
        .collect();
    let mut wins = vec![0; rounds as usize];
    for thread in winners {
        for round in thread.join().unwrap() {
            wins[round as usize] += 1;
        }
    }
    assert_eq!(wins, vec![1; rounds as usize], "exactly one put wins each round");

    // Counters: 8 threads x 50 ADDs of 1.5 end at exactly 600.
    let adders: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = Client::connect(address).unwrap();
                for _ in 0..50 {
                    let key = ItemBuilder::new().s("id", "counter").build();
                    let add = Expressions::default().name("#c", "count").value(":d", n(1));
                    let add = add.value(":half", AttributeValue::N(Number::parse("0.5").unwrap()));
                    client
                        .update_item(
                            "locks",
                            key,
                            "SET #c = if_not_exists(#c, :d) + :half ADD hits :d",
                            add,
                            ReturnValues::None,
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    adders.into_iter().for_each(|thread| thread.join().unwrap());
    let mut client = node.client();
    let counter = client.get_item("locks", ItemBuilder::new().s("id", "counter").build()).unwrap().unwrap();
    assert_eq!(counter["hits"], n(400));
    assert_eq!(counter["count"], AttributeValue::N(Number::parse("201").unwrap()), "1 + 400 x 0.5");

    // Optimistic locking: read the version, write version + 1 only if it is unchanged, retry
    // on a conflict; no increment is lost.
    client.put_item("locks", ItemBuilder::new().s("id", "doc").n("version", 0).n("edits", 0).build()).unwrap();
    let editors: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = Client::connect(address).unwrap();
                let key = || ItemBuilder::new().s("id", "doc").build();
                let mut conflicts = 0;
                for _ in 0..25 {
                    loop {
                        let doc = client.get_item("locks", key()).unwrap().unwrap();
                        let expressions = Expressions::condition("version = :seen")
                            .value(":seen", doc["version"].clone())
                            .value(":one", n(1));
                        match client.update_item(
                            "locks",
                            key(),
                            "SET version = version + :one, edits = edits + :one",
                            expressions,
                            ReturnValues::None,
                        ) {
                            Ok(_) => break,
                            Err(ClientError::Service(error))
                                if error.code == ErrorCode::ConditionalCheckFailedException =>
                            {
                                conflicts += 1
                            }
                            Err(other) => panic!("{other:?}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    let conflicts: i32 = editors.into_iter().map(|thread| thread.join().unwrap()).sum();
    let doc = client.get_item("locks", ItemBuilder::new().s("id", "doc").build()).unwrap().unwrap();
    assert_eq!((doc["version"].clone(), doc["edits"].clone()), (n(100), n(100)), "after {conflicts} conflicts");

    // A failed condition can return the item as it was; ReturnValues work; keys cannot be updated.
    let request = Request::UpdateItem(tessera_wire::UpdateItem {
        table: "locks".into(),
        key: ItemBuilder::new().s("id", "doc").build(),
        update: "SET edits = :zero".into(),
        expressions: Expressions::condition("version < :zero").value(":zero", n(0)),
        return_values: ReturnValues::AllNew,
        return_old_on_failure: true,
    });
    match client.call(&request) {
        Err(ClientError::Service(error)) => {
            assert_eq!(error.code, ErrorCode::ConditionalCheckFailedException);
            assert_eq!(error.item.unwrap()["version"], n(100));
        }
        other => panic!("expected a failed condition, got {other:?}"),
    }
    let updated = client
        .update_item(
            "locks",
            ItemBuilder::new().s("id", "doc").build(),
            "SET edits = :zero",
            Expressions::default().value(":zero", n(0)),
            ReturnValues::UpdatedOld,
        )
        .unwrap();
    assert_eq!(updated, Some(ItemBuilder::new().n("edits", 100).build()));
    let message = service_error(
        client.update_item(
            "locks",
            ItemBuilder::new().s("id", "doc").build(),
            "SET id = :zero",
            Expressions::default().value(":zero", n(0)),
            ReturnValues::None,
        ),
        ErrorCode::ValidationException,
    );
    assert!(message.contains("Cannot update attribute id"), "{message}");
    for (condition, placeholder, expected) in [
        ("status = :v", ":v", "reserved keyword: status"),
        ("attribute_exists(id)", ":unused", "unused in expressions"),
    ] {
        let expressions = Expressions::condition(condition).value(placeholder, n(1));
        let message = service_error(
            client.put_item_if("locks", ItemBuilder::new().s("id", "x").build(), expressions),
            ErrorCode::ValidationException,
        );
        assert!(message.contains(expected), "{message}");
    }
}

/// Reads with expressions through the real server: KeyConditionExpression, FilterExpression
/// applied after the page is read (ScannedCount counts every item read, Count the matches),
/// ProjectionExpression on GetItem, Query and Scan, Select COUNT, and their errors.
#[test]
fn reads_take_key_conditions_filters_and_projections() {
    use tessera_wire::{ReadExpressions, Select};
    let node = Node::fresh("reads");
    let mut client = node.client();
    client.create_table("orders", KeySchema::composite(("customer", KeyType::S), ("n", KeyType::N)), 3).unwrap();
    for number in 1..=10 {
        let item = ItemBuilder::new()
            .s("customer", "c1")
            .n("n", number)
            .n("amount", number * 10)
            .s("state", if number % 2 == 0 { "shipped" } else { "open" })
            .build();
        client.put_item("orders", item).unwrap();
    }
    let read = |key_condition: &str, filter: Option<&str>, projection: Option<&str>, select: Select| ReadExpressions {
        key_condition: Some(key_condition.to_string()),
        filter: filter.map(str::to_string),
        projection: projection.map(str::to_string),
        names: vec![("#s".into(), "state".into())],
        values: vec![(":c".into(), s("c1")), (":lo".into(), n(3)), (":hi".into(), n(8)), (":st".into(), s("shipped"))],
        select,
    };
    let mut query = query("orders", s("ignored"), None);
    query.read =
        read("customer = :c AND n BETWEEN :lo AND :hi", Some("#s = :st"), Some("n, amount"), Select::AllAttributes);
    let page = client.query(query.clone()).unwrap();
    assert_eq!((page.scanned_count, page.count), (6, 3), "n 3..8 read, 4, 6 and 8 shipped");
    assert_eq!(numbers(&page.items), [4, 6, 8]);
    assert_eq!(page.items[0], ItemBuilder::new().n("n", 4).n("amount", 40).build(), "projected");

    query.read = read("customer = :c AND n BETWEEN :lo AND :hi", Some("#s = :st"), None, Select::Count);
    let page = client.query(query.clone()).unwrap();
    assert_eq!((page.scanned_count, page.count, page.items.len()), (6, 3, 0));

    // Limit bounds the items read, not the matches.
    query.read = read("customer = :c AND n BETWEEN :lo AND :hi", Some("#s = :st"), None, Select::AllAttributes);
    query.limit = 2;
    let page = client.query(query.clone()).unwrap();
    assert_eq!((page.scanned_count, page.count), (2, 1));
    assert!(page.last_evaluated_key.is_some());

    let scan = Scan {
        table: "orders".into(),
        segment: 0,
        total_segments: 1,
        limit: 0,
        exclusive_start_key: None,
        consistent_read: true,
        read: ReadExpressions {
            filter: Some("amount > :t".into()),
            values: vec![(":t".into(), n(75))],
            ..Default::default()
        },
    };
    let page = client.scan(scan).unwrap();
    assert_eq!((page.scanned_count, page.count), (10, 3));

    let get = Request::GetItem {
        table: "orders".into(),
        key: orders_key("c1", 2),
        consistent_read: true,
        read: ReadExpressions {
            projection: Some("#s".into()),
            names: vec![("#s".into(), "state".into())],
            ..Default::default()
        },
    };
    assert_eq!(client.call(&get).unwrap(), Response::Item(Some(ItemBuilder::new().s("state", "shipped").build())));
    let batch = TableKeys {
        table: "orders".into(),
        keys: vec![orders_key("c1", 1), orders_key("c1", 9)],
        consistent_read: true,
        read: ReadExpressions { projection: Some("amount".into()), ..Default::default() },
    };
    let (found, _) = client.batch_get_item(vec![batch]).unwrap();
    let amounts = &found[0].1;
    assert_eq!(amounts.len(), 2);
    for amount in [10, 90] {
        assert!(amounts.contains(&ItemBuilder::new().n("amount", amount).build()), "{amounts:?}");
    }

    for (key_condition, filter, expected) in [
        ("customer = :c AND n > :lo AND n < :hi", None, "only contain one condition per key"),
        ("n > :lo", None, "missed key schema element: customer"),
        ("customer = :c", Some("state = :st"), "reserved keyword: state"),
        ("customer = :c", Some("#s = :nope"), "attribute value: :nope"),
    ] {
        query.read = read(key_condition, filter, None, Select::AllAttributes);
        let message = service_error(client.query(query.clone()), ErrorCode::ValidationException);
        assert!(message.contains(expected), "{key_condition} / {filter:?}: {message}");
    }
    query.read = read("customer = :c", None, None, Select::SpecificAttributes);
    let message = service_error(client.query(query.clone()), ErrorCode::ValidationException);
    assert!(message.contains("SPECIFIC_ATTRIBUTES"), "{message}");
}

/// ReturnConsumedCapacity through the real server, against DynamoDB's rules: writes count the
/// larger of the item before and after in 1 KB units, reads 4 KB units (halved when
/// eventually consistent), a Query or Scan page its items' total before any filter, batches
/// each item on its own; INDEXES adds the table's share; errors report none.
#[test]
fn consumed_capacity_follows_dynamodb_rules() {
    use tessera_wire::{
        ConsumedCapacity, Expressions, ReadExpressions, ReturnConsumedCapacity, ReturnValues, UpdateItem,
    };
    let node = Node::fresh("capacity");
    let mut client = node.client();
    client.create_table("docs", KeySchema::hash_only("id", KeyType::S), 2).unwrap();
    // "id" + "kN" is 4 bytes; "filler" + its text is 6 + len.
    let doc = |id: &str, pad: usize| ItemBuilder::new().s("id", id).s("filler", "x".repeat(pad)).build();
    let key = |id: &str| ItemBuilder::new().s("id", id).build();
    let units = |request: Request, capacity: ReturnConsumedCapacity| -> Vec<ConsumedCapacity> {
        let (response, consumed) = node.client().call_with_capacity(&request, capacity).unwrap();
        assert!(!matches!(response, Response::Error(_)), "{response:?}");
        consumed
    };
    let total = |consumed: &[ConsumedCapacity]| -> (f64, f64) {
        assert_eq!(consumed.len(), 1, "{consumed:?}");
        assert_eq!((consumed[0].table.as_str(), consumed[0].table_units), ("docs", None));
        (consumed[0].read_units, consumed[0].write_units)
    };
    let put = |item: Item| Request::PutItem {
        table: "docs".into(),
        item,
        return_old: false,
        expressions: Expressions::default(),
        return_old_on_failure: false,
    };
    let get = |id: &str, consistent_read: bool| Request::GetItem {
        table: "docs".into(),
        key: key(id),
        consistent_read,
        read: ReadExpressions::default(),
    };
    let t = ReturnConsumedCapacity::Total;
    // A 1,510-byte item: 2 write units; replaced by an 11-byte one: still 2 (the larger); then 1.
    assert_eq!(total(&units(put(doc("k1", 1500)), t)), (0.0, 2.0));
    assert_eq!(total(&units(put(doc("k1", 1)), t)), (0.0, 2.0));
    assert_eq!(total(&units(put(doc("k1", 1)), t)), (0.0, 1.0));
    assert_eq!(units(put(doc("k1", 1)), ReturnConsumedCapacity::None), vec![]);
    assert_eq!(total(&units(get("k1", true), t)), (1.0, 0.0));
    assert_eq!(total(&units(get("k1", false), t)), (0.5, 0.0));
    assert_eq!(total(&units(get("absent", true), t)), (1.0, 0.0), "an absent item costs a unit");
    // Five items of 1,009 bytes and k1's 11: a Scan page of 5,056 bytes is 2 units, whatever the
    // filter keeps; eventually consistent, 1.
    for id in ["k2", "k3", "k4", "k5", "k6"] {
        client.put_item("docs", doc(id, 999)).unwrap();
    }
    let scan = |consistent_read: bool| {
        Request::Scan(Scan {
            table: "docs".into(),
            segment: 0,
            total_segments: 1,
            limit: 0,
            exclusive_start_key: None,
            consistent_read,
            read: ReadExpressions {
                filter: Some("id = :none".into()),
                values: vec![(":none".into(), s("none"))],
                ..Default::default()
            },
        })
    };
    assert_eq!(total(&units(scan(true), t)), (2.0, 0.0));
    assert_eq!(total(&units(scan(false), t)), (1.0, 0.0));
    // BatchGetItem counts each item: two found and one absent, 3 units (1.5 eventually).
    let batch_get = |consistent_read: bool| {
        Request::BatchGetItem(vec![TableKeys {
            table: "docs".into(),
            keys: vec![key("k1"), key("k2"), key("absent")],
            consistent_read,
            read: ReadExpressions::default(),
        }])
    };
    assert_eq!(total(&units(batch_get(true), t)), (3.0, 0.0));
    assert_eq!(total(&units(batch_get(false), t)), (1.5, 0.0));
    // BatchWriteItem: a new 1,009-byte item (1), a delete of one (1), a 3,010-byte
    // replacement (3).
    let writes = vec![
        Write::Put { table: "docs".into(), item: doc("k7", 999) },
        Write::Delete { table: "docs".into(), key: key("k2") },
        Write::Put { table: "docs".into(), item: doc("k3", 3000) },
    ];
    assert_eq!(total(&units(Request::BatchWriteItem(writes), t)), (0.0, 5.0));
    // A delete counts the item it removed; a conditional update the larger of before and after.
    let delete = Request::DeleteItem {
        table: "docs".into(),
        key: key("k3"),
        return_old: false,
        expressions: Expressions::default(),
        return_old_on_failure: false,
    };
    assert_eq!(total(&units(delete, t)), (0.0, 3.0));
    let update = |condition: &str| {
        Request::UpdateItem(UpdateItem {
            table: "docs".into(),
            key: key("k4"),
            update: "SET filler = :short".into(),
            expressions: Expressions::condition(condition).value(":short", s("y")),
            return_values: ReturnValues::None,
            return_old_on_failure: false,
        })
    };
    let indexes = units(update("attribute_exists(filler)"), ReturnConsumedCapacity::Indexes);
    assert_eq!(
        indexes,
        vec![ConsumedCapacity { table: "docs".into(), read_units: 0.0, write_units: 1.0, table_units: Some(1.0) }]
    );
    let failed = client.call_with_capacity(&update("attribute_not_exists(filler)"), t);
    service_error(failed, ErrorCode::ConditionalCheckFailedException);
    // A Query page: three items of about 1,516 bytes in one partition key, 2 units.
    client.create_table("lines", KeySchema::composite(("order", KeyType::S), ("n", KeyType::N)), 2).unwrap();
    for number in 1..=3 {
        let line = ItemBuilder::new().s("order", "o1").n("n", number).s("filler", "z".repeat(1500)).build();
        client.put_item("lines", line).unwrap();
    }
    let (_, consumed) = client.call_with_capacity(&Request::Query(query("lines", s("o1"), None)), t).unwrap();
    assert_eq!(
        consumed,
        vec![ConsumedCapacity { table: "lines".into(), read_units: 2.0, write_units: 0.0, table_units: None }]
    );
    // The command line prints it on standard error.
    let (ok, _, stderr) = node.cli(&["get", "docs", r#"{"id":{"S":"k5"}}"#, "--return-consumed-capacity", "INDEXES"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        stderr.trim(),
        r#"{"ConsumedCapacity":{"CapacityUnits":0.5,"Table":{"CapacityUnits":0.5},"TableName":"docs"}}"#
    );
    let (ok, _, stderr) = node.cli(&["get", "docs", r#"{"id":{"S":"k5"}}"#, "--return-consumed-capacity", "SOME"]);
    assert!(!ok && stderr.contains("NONE, TOTAL or INDEXES"), "{stderr}");
}

/// With access keys (`--auth sigv4 --keys FILE`), a binary connection must prove it holds one
/// before any request, as an HTTP request must be signed with one: no proof, an unknown key
/// and a wrong secret are refused; the command line proves the key the AWS tools would use
/// (environment variables, or a profile of the shared credentials file).
#[test]
fn with_keys_the_binary_protocol_needs_a_proof_of_one() {
    let dir = std::env::temp_dir().join(format!("tessera-server-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys");
    std::fs::write(&keys, "AKIDBINARY:binary-secret-key\n").unwrap();
    let node = Node::start_with(&dir.join("data"), &["--auth", "sigv4", "--keys", keys.to_str().unwrap()]);
    let message = service_error(node.client().list_tables(), ErrorCode::MissingAuthenticationTokenException);
    assert!(message.contains("AWS_ACCESS_KEY_ID"), "{message}");
    let with = |key_id: &str, secret: &str| {
        let credentials = Some(Credentials { key_id: key_id.into(), secret: secret.into() });
        Client::connect_with(node.address, ClientConfig { credentials, ..ClientConfig::default() })
    };
    for (key_id, secret) in [("AKIDBINARY", "a-guess"), ("AKIDOTHER", "binary-secret-key")] {
        match with(key_id, secret) {
            Err(ClientError::Service(error)) => assert_eq!(error.code, ErrorCode::UnrecognizedClientException),
            other => panic!("{key_id}: {:?}", other.map(drop)),
        }
    }
    let mut client = with("AKIDBINARY", "binary-secret-key").unwrap();
    client.create_table("keyed", KeySchema::hash_only("k", KeyType::S), 2).unwrap();
    assert_eq!(client.list_tables().unwrap(), ["keyed"]);
    // The command line, with the key in the environment, in a profile, and nowhere.
    let profile = dir.join("credentials");
    std::fs::write(&profile, "[other]\naws_access_key_id = AKIDBINARY\naws_secret_access_key = binary-secret-key\n")
        .unwrap();
    let cli = |environment: &[(&str, &str)]| {
        let mut command = Command::new(BINARY);
        command.args(["--endpoint", &node.address.to_string(), "table", "list"]);
        for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE"] {
            command.env_remove(name);
        }
        command.env("HOME", &dir).envs(environment.iter().copied());
        let output = command.output().unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    assert_eq!(
        cli(&[("AWS_ACCESS_KEY_ID", "AKIDBINARY"), ("AWS_SECRET_ACCESS_KEY", "binary-secret-key")]),
        (true, "keyed\n".into())
    );
    let shared = [("AWS_SHARED_CREDENTIALS_FILE", profile.to_str().unwrap()), ("AWS_PROFILE", "other")];
    assert_eq!(cli(&shared), (true, "keyed\n".into()));
    assert!(!cli(&[]).0, "no key, no answer");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tessera serve` on one core with `flags`, its open files limited to `files` when given,
/// its standard error collected line by line; its binary and HTTP addresses.
fn start_watched(
    dir: &Path,
    flags: &[&str],
    files: Option<u64>,
) -> (Child, SocketAddr, SocketAddr, std::sync::mpsc::Receiver<String>) {
    use std::os::unix::process::CommandExt as _;
    let mut command = Command::new(BINARY);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--cores", "1"])
        .args(["--cache-mib", "16", "--first-cpu", "none", "--data-dir"])
        .arg(dir)
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(files) = files {
        // SAFETY: setrlimit is async-signal-safe, and only the child's limit changes.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit { rlim_cur: files, rlim_max: files };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command.spawn().expect("start tessera serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
    let address = line.split_whitespace().find_map(|word| word.parse().ok()).expect("an address");
    let http = common::http_address(&line);
    let received = common::stderr_lines(&mut child);
    (child, address, http, received)
}

/// Whether a new client is served, within `within`: a binary ListTables and an HTTP one.
fn served_again(address: SocketAddr, http: SocketAddr, within: Duration) -> bool {
    let config = ClientConfig {
        timeout: Duration::from_secs(1),
        attempts: 1,
        backoff: Duration::from_millis(10),
        ..ClientConfig::default()
    };
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        let binary = Client::connect_with(address, config.clone()).is_ok_and(|mut client| client.list_tables().is_ok());
        let over_http = TcpStream::connect(http).is_ok_and(|mut stream| {
            stream.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
            let mut answer = Vec::new();
            stream.write_all(request).is_ok()
                && stream.read_to_end(&mut answer).is_ok()
                && answer.starts_with(b"HTTP/1.1 200")
        });
        if binary && over_http {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A server out of file descriptors (EMFILE on accept) goes on accepting once connections
/// close: each listener reports the failures and retries, rather than ending for good.
#[test]
fn failed_accepts_are_survived() {
    let dir = std::env::temp_dir().join(format!("tessera-server-emfile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut child, address, http, lines) = start_watched(&dir, &[], Some(128));
    assert!(served_again(address, http, Duration::from_secs(5)), "served before the flood");
    // Idle connections to both listeners, until each has reported a failed accept.
    let mut idle = Vec::new();
    let mut reported = (false, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !(reported.0 && reported.1) {
        assert!(std::time::Instant::now() < deadline, "no failed accept reported: {reported:?}");
        for target in [address, http] {
            if let Ok(stream) = TcpStream::connect_timeout(&target, Duration::from_millis(200)) {
                idle.push(stream);
            }
        }
        while let Ok(line) = lines.try_recv() {
            reported.0 |= line.contains("cannot accept client connections");
            reported.1 |= line.contains("cannot accept HTTP connections");
        }
        if idle.len() % 64 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(idle);
    assert!(served_again(address, http, Duration::from_secs(10)), "served again once the connections closed");
    // One line per run of failures, not one per failed accept.
    let reports = lines.try_iter().filter(|line| line.contains("cannot accept")).count();
    assert!(reports <= 4, "{reports} reports");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Beyond --max-connections a core closes a new connection at once (an HTTP one after a
/// 503), and takes new ones again as others close.
#[test]
fn connections_beyond_the_maximum_are_closed() {
    let dir = std::env::temp_dir().join(format!("tessera-server-max-connections-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut child, address, http, _lines) = start_watched(&dir, &["--max-connections", "3"], None);
    let mut client = Client::connect(address).expect("connect");
    assert!(client.list_tables().is_ok());
    let mut idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(address).unwrap()).collect();
    // Served in turn by the one core: the first three hold its places.
    let mut extra = TcpStream::connect(address).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(matches!(extra.read(&mut [0u8; 16]), Ok(0) | Err(_)), "closed at once");
    let mut extra = TcpStream::connect(http).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = Vec::new();
    let _ = extra.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("ServiceUnavailableException") && answer.contains("Connection: close"), "{answer}");
    assert!(client.list_tables().is_ok(), "the admitted ones are served");
    // Places given back are taken again.
    idle.truncate(0);
    drop(client);
    assert!(served_again(address, http, Duration::from_secs(5)));
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A damaged last WAL record (a byte flipped in the final flush of a killed node) is not
/// passed over in silence: the restarted node reports that its log's last flush fails its
/// checksum (torn by the crash, or damaged after it was acknowledged) and where.
#[test]
fn a_damaged_last_record_is_reported_at_restart() {
    let dir = std::env::temp_dir().join(format!("tessera-server-tail-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut child, address, _, _) = start_watched(&dir, &[], None);
    let mut client = Client::connect(address).unwrap();
    client.create_table("tail", KeySchema::hash_only("k", KeyType::S), 1).unwrap();
    client.put_item("tail", ItemBuilder::new().s("k", "a").s("v", "needle-in-the-last-record").build()).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let wal = dir.join("core-0").join("wal");
    assert!(common::flip_in_wal(&wal, b"needle") > 0, "the record is in a WAL segment");
    let (mut child, _, _, lines) = start_watched(&dir, &[], None);
    let reported = lines.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(reported.contains("last flush") && reported.contains("fails its checksum"), "{reported}");
}

/// A small ext4 filesystem on a loop device, mounted for one test and removed after it.
struct SmallDisk {
    image: PathBuf,
    mount: PathBuf,
}

impl SmallDisk {
    /// None (the test is skipped, saying so) unless this process may mount filesystems.
    fn mount(name: &str, mib: u64) -> Option<SmallDisk> {
        // SAFETY: geteuid only reads the process's credentials.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a small filesystem needs root");
            return None;
        }
        let base = std::env::temp_dir().join(format!("tessera-disk-{name}-{}", std::process::id()));
        let (image, mount) = (base.with_extension("img"), base.with_extension("mnt"));
        let run = |command: &mut Command| {
            let output = command.output().expect("run a filesystem tool");
            assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
        };
        std::fs::File::create(&image).unwrap().set_len(mib << 20).unwrap();
        // No blocks reserved for root: the server runs as root here and would use them.
        run(Command::new("mkfs.ext4").args(["-q", "-F", "-m", "0"]).arg(&image));
        std::fs::create_dir_all(&mount).unwrap();
        run(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&mount));
        Some(SmallDisk { image, mount })
    }

    /// Fills what is left of the filesystem, appending to one file; its path.
    fn fill(&self) -> PathBuf {
        let filler = self.mount.join("filler");
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&filler).unwrap();
        let block = vec![0x55u8; 1 << 20];
        while file.write_all(&block).is_ok() {}
        let small = [0x55u8; 4096];
        while file.write_all(&small).is_ok() {}
        let _ = file.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        let _ = std::fs::remove_dir(&self.mount);
        let _ = std::fs::remove_file(&self.image);
    }
}

/// A full disk is reported at once, writes are refused with a retryable error (nothing is
/// acknowledged that is not durable) and resume by themselves once space is freed; every
/// acknowledged write survives a SIGKILL after it. A node that cannot get its first WAL
/// segment says how much it needs, and leaves no partial segment behind.
#[test]
fn a_full_disk_refuses_writes_until_space_is_freed() {
    let Some(disk) = SmallDisk::mount("full", 300) else { return };
    let dir = disk.mount.join("data");
    let flags = ["--wal-segment-mib", "17"];
    let (mut child, address, _, lines) = start_watched(&dir, &flags, None);
    let mut client = Client::connect(address).unwrap();
    client.create_table("full", KeySchema::hash_only("k", KeyType::S), 1).unwrap();
    let reserve = disk.mount.join("reserve");
    std::fs::write(&reserve, vec![0x55u8; 30 << 20]).unwrap();
    let filler = disk.fill();
    std::fs::remove_file(&reserve).unwrap();

    // A fresh node with room for less than one segment exits at once naming what it needs.
    let fresh = disk.mount.join("fresh");
    let output = Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--http-listen", "none", "--cores", "1", "--first-cpu", "none"])
        .arg("--data-dir")
        .arg(&fresh)
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{message}");
    assert!(message.contains("no room for a new 64 MiB WAL segment"), "{message}");
    let partial: Vec<_> = walk(&fresh).into_iter().filter(|path| path.to_string_lossy().ends_with(".tmp")).collect();
    assert!(partial.is_empty(), "partial segments left behind: {partial:?}");
    std::fs::remove_dir_all(&fresh).unwrap();
    disk.fill();

    let value = "v".repeat(8 << 10);
    let mut acknowledged = Vec::new();
    let refused = loop {
        let key = format!("k{:06}", acknowledged.len());
        match client.put_item("full", ItemBuilder::new().s("k", key.clone()).s("v", value.clone()).build()) {
            Ok(()) => acknowledged.push(key),
            Err(error) => break error,
        }
        assert!(acknowledged.len() < 100_000, "a full disk never refused a write");
    };
    let refusal = format!("{refused:?}");
    assert!(refusal.contains("ServiceUnavailable") && refusal.contains("disk is full"), "{refusal}");
    let reported: Vec<String> = lines.try_iter().collect();
    assert!(reported.iter().any(|line| line.contains("the disk is full") && line.contains(" free)")), "{reported:?}");
    // Reads go on meanwhile.
    assert!(client.get_item("full", ItemBuilder::new().s("k", acknowledged[0].clone()).build()).unwrap().is_some());

    std::fs::remove_file(&filler).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let key = format!("k{:06}", acknowledged.len());
        match client.put_item("full", ItemBuilder::new().s("k", key.clone()).s("v", value.clone()).build()) {
            Ok(()) => {
                acknowledged.push(key);
                break;
            }
            Err(error) => assert!(std::time::Instant::now() < deadline, "writes never resumed: {error:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(lines.try_iter().any(|line| line.contains("writes resume")), "the recovery is reported");
    let _ = child.kill();
    let _ = child.wait();

    let (mut child, address, _, _) = start_watched(&dir, &flags, None);
    let mut client = Client::connect(address).unwrap();
    for key in &acknowledged {
        let found = client.get_item("full", ItemBuilder::new().s("k", key.clone()).build()).unwrap();
        assert!(found.is_some(), "acknowledged write {key} is missing after the restart");
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// A process's resident memory, from /proc.
fn resident_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next().and_then(|kib| kib.parse::<u64>().ok()));
    kib.unwrap_or(0) >> 10
}

/// Many connections each sending most of a declared 16 MiB body hold no more than the core's
/// request memory: the bodies beyond it are refused (503, retryable) and their connections
/// closed, a body that stops arriving is answered 408, and the memory goes back once they
/// are gone. The same for binary frames.
#[test]
fn buffered_request_bytes_stay_within_the_request_memory() {
    let dir = std::env::temp_dir().join(format!("tessera-server-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut child, address, http, _lines) = start_watched(&dir, &["--request-memory-mib", "40"], None);
    let pid = child.id();
    let before = resident_mib(pid);
    let declared = 16 << 20;
    let sent = 15 << 20;
    // The first HTTP body is sent alone, so that it holds a reservation and then stalls
    // (answered 408); of the others, those beyond the budget are refused.
    let senders: Vec<_> = (0..24)
        .map(|index| {
            if index == 1 {
                std::thread::sleep(Duration::from_secs(1));
            }
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(if index % 2 == 0 { http } else { address }).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                let mut head = if index % 2 == 0 {
                    format!(
                        "POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Target: DynamoDB_20120810.PutItem\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {declared}\r\n\r\n"
                    )
                    .into_bytes()
                } else {
                    // A binary frame's length field, then part of it.
                    (declared as u32).to_le_bytes().to_vec()
                };
                head.resize(head.len() + (64 << 10), b' ');
                let _ = stream.write_all(&head);
                let chunk = vec![b' '; 1 << 20];
                for _ in 0..sent >> 20 {
                    if stream.write_all(&chunk).is_err() {
                        break;
                    }
                }
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer);
                String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned()
            })
        })
        .collect();
    let mut peak = 0;
    while senders.iter().any(|sender| !sender.is_finished()) {
        peak = peak.max(resident_mib(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    let answers: Vec<String> = senders.into_iter().map(|sender| sender.join().unwrap()).collect();
    let http_answers: Vec<&String> = answers.iter().step_by(2).collect();
    let refused = http_answers.iter().filter(|answer| answer.starts_with("HTTP/1.1 503 ")).count();
    let late = http_answers.iter().filter(|answer| answer.starts_with("HTTP/1.1 408 ")).count();
    eprintln!("resident {before} MiB before, peak {peak} MiB; HTTP: {refused} refused, {late} timed out");
    assert!(refused > 0 && late > 0 && refused + late == http_answers.len(), "{http_answers:?}");
    assert!(peak < before + 40 + 48, "resident memory peaked at {peak} MiB from {before} MiB");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // Each core collects its freed memory every second; the allocator gives back what stayed
    // unused for two: within seconds, even though the server is idle (a few MiB of it may
    // remain in the allocator's caches).
    while resident_mib(pid) > before + 16 {
        assert!(std::time::Instant::now() < deadline, "memory kept: {} MiB from {before} MiB", resident_mib(pid));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(served_again(address, http, Duration::from_secs(5)));
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A request whose head, or body, stops arriving part-way is answered 408 and its connection
/// closed, rather than held open for good (the idle keep-alive limit is a minute, too long to
/// wait for here).
#[test]
fn slow_heads_and_stalled_bodies_time_out() {
    let dir = std::env::temp_dir().join(format!("tessera-server-slow-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut child, _, http, _lines) = start_watched(&dir, &[], None);
    let partial = [
        "POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Target: Dynamo".to_string(),
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{\"TableName\"".to_string(),
    ];
    let started = std::time::Instant::now();
    let waiting: Vec<_> = partial
        .into_iter()
        .map(|sent| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(http).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                stream.write_all(sent.as_bytes()).unwrap();
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer);
                String::from_utf8_lossy(&answer).into_owned()
            })
        })
        .collect();
    for answer in waiting.into_iter().map(|thread| thread.join().unwrap()) {
        assert!(answer.starts_with("HTTP/1.1 408 ") && answer.contains("RequestTimeoutException"), "{answer}");
        assert!(answer.contains("Connection: close"), "{answer}");
    }
    assert!(started.elapsed() < Duration::from_secs(25), "took {:?}", started.elapsed());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
