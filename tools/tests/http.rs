//! The DynamoDB HTTP endpoint of the real `tessera serve` binary: the AWS SDK for Python and
//! the AWS CLI against it (`tests/dynamodb/sdk_test.py`), and raw bytes over TCP: garbage,
//! oversized and malformed requests get DynamoDB's typed errors, and the server keeps serving.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{call, connect, crash_api, ensure_python_sdk, exchange, header, ok, post, Node};

mod common;

#[test]
fn the_aws_sdk_for_python_and_the_aws_cli_work_unchanged() {
    ensure_python_sdk();
    let keys = std::env::temp_dir().join(format!("tessera-http-keys-{}", std::process::id()));
    std::fs::write(&keys, "# test keys\nAKIDTESSERATEST:wJalrXUtnFEMI/K7MDENG+bPxRfiCYTESSERA\n").unwrap();
    let node = Node::start("sdk", &["--auth", "sigv4", "--keys", keys.to_str().unwrap()]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/dynamodb/sdk_test.py");
    let output = Command::new("python3")
        .arg(&script)
        .env("TESSERA_HTTP", format!("http://{}", node.http))
        .env("TESSERA_KEY_ID", "AKIDTESSERATEST")
        .env("TESSERA_SECRET", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYTESSERA")
        .output()
        .expect("run the SDK tests");
    let _ = std::fs::remove_file(&keys);
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the SDK tests failed:\n{report}");
    // unittest prints "Ran N tests" and OK: make sure they ran at all.
    assert!(report.contains("OK") && report.contains("Ran 1"), "{report}");
}

/// dynalite (DynamoDB's API over a local store, from npm), installed once under the target
/// directory.
fn dynalite() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dynalite");
    let binary = root.join("node_modules/.bin/dynalite");
    if !binary.exists() {
        std::fs::create_dir_all(&root).unwrap();
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&root)
            .arg("dynalite@3")
            .status()
            .expect("npm runs (the differential test needs Node.js and npm)");
        assert!(status.success() && binary.exists(), "cannot install dynalite with npm");
    }
    binary
}

/// A reference DynamoDB emulator in a child process, on a free loopback port.
struct Reference {
    child: Child,
    address: SocketAddr,
}

impl Reference {
    fn start() -> Reference {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(dynalite())
            .args(["--port", &port.to_string(), "--createTableMs", "0", "--deleteTableMs", "0"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start dynalite");
        // Killed and waited for by Drop, also when it never listens.
        let reference = Reference { child, address: format!("127.0.0.1:{port}").parse().unwrap() };
        for _ in 0..100 {
            if TcpStream::connect(reference.address).is_ok() {
                return reference;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("dynalite did not listen on {}", reference.address);
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_same_requests_get_the_same_answers_as_from_dynalite() {
    ensure_python_sdk();
    let reference = Reference::start();
    let node = Node::start("differential", &["--auth", "none"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/dynamodb/differential.py");
    let output = Command::new("python3")
        .arg(&script)
        .env("TESSERA_HTTP", format!("http://{}", node.http))
        .env("PEER_HTTP", format!("http://{}", reference.address))
        .output()
        .expect("run the differential test");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(report.contains("requests compared") && report.contains(" 0 differences"), "{report}");
}

fn error_type(body: &[u8]) -> String {
    let json: serde_json::Value = serde_json::from_slice(body).expect("an error body is JSON");
    json["__type"].as_str().expect("__type").rsplit('#').next().unwrap().to_string()
}

#[test]
fn bad_requests_get_dynamodbs_errors_and_the_server_keeps_serving() {
    let node = Node::start("garbage", &["--auth", "none"]);
    let mut stream = connect(&node);
    // Several requests on one kept-alive connection, each with its id and checksum.
    let (status, headers, body) = exchange(&mut stream, &post("DynamoDB_20120810.ListTables", "{}", None)).unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&headers, "x-amz-crc32"), Some(crc32fast::hash(&body).to_string().as_str()));
    assert_eq!(header(&headers, "x-amzn-requestid").map(str::len), Some(52));
    assert_eq!(header(&headers, "content-type"), Some("application/x-amz-json-1.0"));
    for (request, status, kind) in [
        (post("DynamoDB_20120810.Fly", "{}", None), 400, "UnknownOperationException"),
        (post("DynamoDB_20120810.GetItem", "{not json", None), 400, "SerializationException"),
        (
            post("DynamoDB_20120810.GetItem", r#"{"TableName":"nope","Key":{"k":{"S":"a"}}}"#, None),
            400,
            "ResourceNotFoundException",
        ),
        (post("DynamoDB_20120810.GetItem", r#"{"TableName":"abc"}"#, None), 400, "ValidationException"),
        (post("DynamoDB_20120810.ListTables", "{}", Some("20010101T000000Z")), 400, "InvalidSignatureException"),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: DynamoDB_20120810.ListTables\r\nContent-Length: 2\r\n\r\n{}"
                .to_vec(),
            400,
            "MissingAuthenticationTokenException",
        ),
    ] {
        let (got, _, body) = exchange(&mut stream, &request).expect("an answer");
        assert_eq!((got, error_type(&body)), (status, kind.to_string()), "{}", String::from_utf8_lossy(&request));
    }
    // Requests that cannot be read are answered, then the connection is closed.
    let oversized = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", 17 << 20);
    let huge_head = format!("POST / HTTP/1.1\r\nX-Pad: {}\r\n", "a".repeat(20 << 10));
    for (request, status) in [
        (oversized.into_bytes(), 413),
        (huge_head.into_bytes(), 400),
        (b"\x00\x01\x02garbage\r\n\r\n".to_vec(), 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(), 400),
        (b"POST / HTTP/1.1\r\nContent-Length: lots\r\n\r\n".to_vec(), 400),
    ] {
        let mut stream = connect(&node);
        let (got, _, _) = exchange(&mut stream, &request).expect("an answer before the close");
        assert_eq!(got, status, "{}", String::from_utf8_lossy(&request[..40]));
        let mut rest = Vec::new();
        assert_eq!(stream.read_to_end(&mut rest).ok(), Some(0), "closed after the answer");
    }
    // Random bytes: each connection is answered with an error or closed, never left hanging.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..200 {
        let mut random = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let length = (random() % 600) as usize;
        let mut bytes: Vec<u8> = (0..length).map(|_| random() as u8).collect();
        if random() % 2 == 0 {
            // Often a plausible start, so the parser goes deeper.
            bytes.splice(0..0, b"POST / HTTP/1.1\r\n".iter().copied());
        }
        bytes.extend_from_slice(b"\r\n\r\n");
        let mut stream = connect(&node);
        if let Some((status, _, _)) = exchange(&mut stream, &bytes) {
            assert!((400..500).contains(&status), "{status} for {bytes:?}");
        }
    }
    // And the server still serves, on the first connection and on new ones.
    let (status, _, _) = exchange(&mut stream, &post("DynamoDB_20120810.ListTables", "{}", None)).unwrap();
    assert_eq!(status, 200);
    let (status, _, body) =
        exchange(&mut connect(&node), &post("DynamoDB_20120810.DescribeLimits", "{}", None)).unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

/// Requests of every kind the API takes, edge values included, until the node is SIGKILLed
/// mid-stream; after the restart every acknowledged write is there and no refused one is, and
/// the node takes writes again.
#[test]
fn every_kind_of_request_survives_a_sigkill_and_restart() {
    let node = Node::start("crash-api", &["--auth", "none"]);
    let history = node.dir.with_extension("history");
    let endpoint = node.http;
    let node = std::cell::RefCell::new(node);
    crash_api(&history, endpoint, 1500, || node.borrow_mut().kill(), || node.borrow_mut().restart());
}

/// Requests a proxy in front could frame otherwise than the server (request smuggling): two
/// Content-Length headers, a length that is not plain decimal, Transfer-Encoding beside a
/// Content-Length. Each is refused, and its connection closed.
#[test]
fn ambiguous_body_lengths_are_refused_and_the_connection_closed() {
    let node = Node::start("lengths", &["--auth", "none"]);
    for (headers, status, named) in [
        ("Content-Length: 0\r\nContent-Length: 2\r\n", 400, "only one Content-Length"),
        ("Content-Length: 0\r\ncontent-length: 0\r\n", 400, "only one Content-Length"),
        ("Content-Length: +0\r\n", 400, "not a decimal number"),
        ("Content-Length: 0, 0\r\n", 400, "not a decimal number"),
        ("Content-Length: 0x0\r\n", 400, "not a decimal number"),
        ("Transfer-Encoding: chunked\r\nContent-Length: 0\r\n", 400, "both Transfer-Encoding and Content-Length"),
        ("Content-Length: 0\r\nTransfer-Encoding: identity\r\n", 400, "both Transfer-Encoding and Content-Length"),
        ("Content-Length: 99999999999999999999999999\r\n", 413, "larger than 16 MB"),
    ] {
        let request = format!(
            "POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Target: DynamoDB_20120810.ListTables\r\n{headers}\r\n"
        );
        let mut stream = connect(&node);
        let (got, _, body) = exchange(&mut stream, request.as_bytes()).expect("an answer before the close");
        let message = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(got, status, "{headers:?}: {message}");
        assert!(message.contains(named), "{headers:?}: {message}");
        let mut rest = Vec::new();
        assert_eq!(stream.read_to_end(&mut rest).ok(), Some(0), "{headers:?}: closed after the answer");
    }
    // One plain length is served as before.
    let (status, _, _) = exchange(&mut connect(&node), &post("DynamoDB_20120810.ListTables", "{}", None)).unwrap();
    assert_eq!(status, 200);
}

/// `request` with a header `X-Pad` of `length` bytes after its request line.
fn padded(request: &[u8], length: usize) -> Vec<u8> {
    let line = request.windows(2).position(|pair| pair == b"\r\n").unwrap() + 2;
    let mut padded = request[..line].to_vec();
    padded.extend_from_slice(format!("X-Pad: {}\r\n", "a".repeat(length)).as_bytes());
    padded.extend_from_slice(&request[line..]);
    padded
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// `post`'s request with a body of raw bytes and a Content-Encoding.
fn post_encoded(target: &str, coding: &str, body: &[u8]) -> Vec<u8> {
    let head = post(target, "", None);
    let head = String::from_utf8(head)
        .unwrap()
        .replace("Content-Length: 0\r\n", &format!("Content-Encoding: {coding}\r\nContent-Length: {}\r\n", body.len()));
    [head.as_bytes(), body].concat()
}

/// DynamoDB's 16 KB limit on the request line and headers, the Date header of every answer,
/// and request bodies' Content-Encoding (gzip decompressed, held to 16 MB; others refused).
#[test]
fn heads_dates_and_content_encodings() {
    let node = Node::start("encodings", &["--auth", "none"]);
    let now = std::time::SystemTime::now();
    let recent = |headers: &[(String, String)]| {
        let date = header(headers, "date").expect("a Date header");
        let when = httpdate::parse_http_date(date).unwrap_or_else(|_| panic!("{date:?} is not an HTTP date"));
        assert!(date.ends_with(" GMT") && date.len() == 29, "{date:?}");
        let skew = when.duration_since(now).or_else(|_| now.duration_since(when)).unwrap();
        assert!(skew < Duration::from_secs(60), "{date:?}");
    };
    // A head just under 16 KiB is served; one just over is refused and closed.
    let list = post("DynamoDB_20120810.ListTables", "", None);
    let mut stream = connect(&node);
    let (status, headers, body) = exchange(&mut stream, &padded(&list, 15 << 10)).unwrap();
    assert_eq!(status, 400, "an empty body is not JSON: {}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("SerializationException"));
    recent(&headers);
    let mut stream = connect(&node);
    let (status, headers, body) = exchange(&mut stream, &padded(&list, 16 << 10)).expect("an answer");
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("larger than 16 KB"), "{}", String::from_utf8_lossy(&body));
    recent(&headers);
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).ok(), Some(0), "closed after the answer");

    // Content-Encoding on one kept-alive connection.
    let mut stream = connect(&node);
    let (status, headers, body) = exchange(&mut stream, &post("DynamoDB_20120810.ListTables", "{}", None)).unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    recent(&headers);
    for (coding, body, status, expected) in [
        ("gzip", gzip(b"{}"), 200, "TableNames"),
        ("GZIP", gzip(br#"{"Limit":5}"#), 200, "TableNames"),
        ("identity", b"{}".to_vec(), 200, "TableNames"),
        ("br", b"{}".to_vec(), 400, r#"Content-Encoding \"br\" is not supported"#),
        ("deflate", b"{}".to_vec(), 400, r#"Content-Encoding \"deflate\" is not supported"#),
        ("gzip", b"{}".to_vec(), 400, "cannot be decompressed"),
        ("gzip", gzip(&vec![b' '; (16 << 20) + 1]), 413, "larger than 16 MB once decompressed"),
    ] {
        let (got, _, answer) =
            exchange(&mut stream, &post_encoded("DynamoDB_20120810.ListTables", coding, &body)).expect("an answer");
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(got, status, "{coding}: {answer}");
        assert!(answer.contains(expected), "{coding}: {answer}");
    }
    // A body decompressed to exactly 16 MB is within the limit (and then read as JSON).
    let mut at_limit = b"{}".to_vec();
    at_limit.resize(16 << 20, b' ');
    let (got, _, answer) =
        exchange(&mut stream, &post_encoded("DynamoDB_20120810.ListTables", "gzip", &gzip(&at_limit))).unwrap();
    assert_eq!(got, 200, "{}", String::from_utf8_lossy(&answer));
}

/// `call`, which DynamoDB refuses with a ValidationException saying `message`.
fn refused(node: &Node, operation: &str, body: serde_json::Value, message: &str) {
    let (status, answer) = call(node, operation, &body);
    assert_eq!(status, 400, "{operation}: {answer}");
    assert_eq!(answer["__type"].as_str().unwrap().rsplit('#').next(), Some("ValidationException"), "{answer}");
    let got = answer["message"].as_str().or(answer["Message"].as_str()).unwrap_or_default();
    assert_eq!(got, message, "{operation}");
}

/// A key value of type `key_type` ("S" or "B") from its bytes (UTF-8 for S).
fn key_value(key_type: &str, bytes: &[u8]) -> serde_json::Value {
    use base64::Engine as _;
    match key_type {
        "S" => serde_json::json!({ "S": std::str::from_utf8(bytes).unwrap() }),
        _ => serde_json::json!({ "B": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    }
}

/// Every item of a query of partition key `pk`, page by page (`Limit` items each, each page
/// restarted at the last one's LastEvaluatedKey); the sort keys in order.
fn query_all(node: &Node, table: &str, pk: &serde_json::Value, limit: usize) -> (Vec<serde_json::Value>, usize) {
    let (mut sort_keys, mut pages, mut start) = (Vec::new(), 0, None);
    loop {
        let mut request = serde_json::json!({
            "TableName": table, "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": { ":p": pk }, "Limit": limit,
        });
        if let Some(start) = start.take() {
            request["ExclusiveStartKey"] = start;
        }
        let answer = ok(node, "Query", request);
        pages += 1;
        for item in answer["Items"].as_array().unwrap() {
            assert_eq!(&item["pk"], pk);
            sort_keys.push(item["sk"].clone());
        }
        match answer.get("LastEvaluatedKey") {
            Some(last) => start = Some(last.clone()),
            None => return (sort_keys, pages),
        }
    }
}

/// DynamoDB's longest keys (a 2048-byte partition key, a 1024-byte sort key, of S and of B)
/// through the real endpoint: written by PutItem and BatchWriteItem, read by GetItem, Query
/// pages restarted at ExclusiveStartKey and Scan, deleted; one byte longer is refused with
/// DynamoDB's message; and after a SIGKILL and restart every item is there.
#[test]
fn longest_keys_are_stored_queried_and_survive_a_sigkill() {
    const HASH_KEY_TOO_LONG: &str =
        "One or more parameter values were invalid: Size of hashkey has exceeded the maximum size limit of2048 bytes";
    const RANGE_KEY_TOO_LONG: &str = "One or more parameter values were invalid: Aggregated size of all range keys has exceeded the size limit of 1024 bytes";
    let mut node = Node::start("long-keys", &["--auth", "none"]);
    let items = 80usize;
    // Two partition keys of 2048 bytes (for S, 1024 two-byte characters) that share all but
    // their last character; sort keys of 1024 bytes that differ early.
    let pk_bytes = |key_type: &str, last: char| -> Vec<u8> {
        let mut text = if key_type == "S" { "é".repeat(1023) } else { "\u{7f}".repeat(2046) };
        text.push(last);
        text.push(last);
        text.into_bytes()
    };
    let sk_bytes = |n: usize| -> Vec<u8> {
        let mut sort = format!("{n:05}").into_bytes();
        sort.resize(1024, b'-');
        sort
    };
    for key_type in ["S", "B"] {
        let table = format!("long_{key_type}");
        ok(
            &node,
            "CreateTable",
            serde_json::json!({
                "TableName": table, "BillingMode": "PAY_PER_REQUEST",
                "KeySchema": [{ "AttributeName": "pk", "KeyType": "HASH" }, { "AttributeName": "sk", "KeyType": "RANGE" }],
                "AttributeDefinitions": [{ "AttributeName": "pk", "AttributeType": key_type },
                                         { "AttributeName": "sk", "AttributeType": key_type }],
            }),
        );
        for (pk, last) in [(pk_bytes(key_type, 'a'), 'a'), (pk_bytes(key_type, 'b'), 'b')] {
            assert_eq!(pk.len(), 2048);
            let pk = key_value(key_type, &pk);
            // Half by PutItem, half by BatchWriteItem in batches of 20.
            for n in 0..items / 2 {
                let item = serde_json::json!({ "pk": pk, "sk": key_value(key_type, &sk_bytes(n)), "n": { "N": n.to_string() } });
                ok(&node, "PutItem", serde_json::json!({ "TableName": table, "Item": item }));
            }
            for batch in (items / 2..items).collect::<Vec<_>>().chunks(20) {
                let requests: Vec<serde_json::Value> = batch
                    .iter()
                    .map(|n| {
                        serde_json::json!({ "PutRequest": { "Item": {
                        "pk": pk, "sk": key_value(key_type, &sk_bytes(*n)), "n": { "N": n.to_string() } } } })
                    })
                    .collect();
                let answer = ok(&node, "BatchWriteItem", serde_json::json!({ "RequestItems": { &table: requests } }));
                assert_eq!(answer["UnprocessedItems"], serde_json::json!({}), "{last}");
            }
            let key = |n: usize| serde_json::json!({ "pk": pk, "sk": key_value(key_type, &sk_bytes(n)) });
            let got = ok(&node, "GetItem", serde_json::json!({ "TableName": table, "Key": key(items - 1) }));
            assert_eq!(got["Item"]["n"], serde_json::json!({ "N": (items - 1).to_string() }));
            assert_eq!(got["Item"]["pk"], pk);
            let (sort_keys, pages) = query_all(&node, &table, &pk, 7);
            let expected: Vec<serde_json::Value> = (0..items).map(|n| key_value(key_type, &sk_bytes(n))).collect();
            assert_eq!(sort_keys, expected, "{key_type} query");
            assert!(pages > items / 7, "{pages} pages");
            // Deleted by DeleteItem and by BatchWriteItem: every third item.
            ok(&node, "DeleteItem", serde_json::json!({ "TableName": table, "Key": key(0) }));
            let deletes: Vec<serde_json::Value> =
                (3..items).step_by(3).map(|n| serde_json::json!({ "DeleteRequest": { "Key": key(n) } })).collect();
            for batch in deletes.chunks(25) {
                ok(&node, "BatchWriteItem", serde_json::json!({ "RequestItems": { &table: batch } }));
            }
            let got = ok(&node, "GetItem", serde_json::json!({ "TableName": table, "Key": key(3) }));
            assert!(got.get("Item").is_none(), "{got}");
        }
        // One byte more is refused, on writes and reads alike.
        let long_pk = key_value(key_type, &[&pk_bytes(key_type, 'a')[..], b"x"].concat());
        let pk = key_value(key_type, &pk_bytes(key_type, 'a'));
        let long_sk = key_value(key_type, &[&sk_bytes(1)[..], b"x"].concat());
        let sk = key_value(key_type, &sk_bytes(1));
        for (key, message) in [
            (serde_json::json!({ "pk": long_pk, "sk": sk }), HASH_KEY_TOO_LONG),
            (serde_json::json!({ "pk": pk, "sk": long_sk }), RANGE_KEY_TOO_LONG),
        ] {
            refused(&node, "PutItem", serde_json::json!({ "TableName": table, "Item": key }), message);
            refused(&node, "GetItem", serde_json::json!({ "TableName": table, "Key": key }), message);
            refused(&node, "DeleteItem", serde_json::json!({ "TableName": table, "Key": key }), message);
            let batch = serde_json::json!({ "RequestItems": { &table: [{ "PutRequest": { "Item": key } }] } });
            refused(&node, "BatchWriteItem", batch, message);
        }
    }
    let expected: Vec<usize> = (1..items).filter(|n| n % 3 != 0).collect();
    let check = |node: &Node| {
        for key_type in ["S", "B"] {
            let table = format!("long_{key_type}");
            for last in ['a', 'b'] {
                let pk = key_value(key_type, &pk_bytes(key_type, last));
                let (sort_keys, _) = query_all(node, &table, &pk, 11);
                let want: Vec<serde_json::Value> =
                    expected.iter().map(|n| key_value(key_type, &sk_bytes(*n))).collect();
                assert_eq!(sort_keys, want, "{key_type} {last}");
            }
            // A scan in pages of 9 sees every item once.
            let (mut seen, mut start) = (0, None);
            loop {
                let mut request = serde_json::json!({ "TableName": table, "Limit": 9 });
                if let Some(start) = start.take() {
                    request["ExclusiveStartKey"] = start;
                }
                let answer = ok(node, "Scan", request);
                seen += answer["Items"].as_array().unwrap().len();
                match answer.get("LastEvaluatedKey") {
                    Some(last) => start = Some(last.clone()),
                    None => break,
                }
            }
            assert_eq!(seen, 2 * expected.len(), "{key_type} scan");
        }
    };
    check(&node);
    node.kill();
    node.restart();
    // The restarted node serves once it has replayed its log and knows its tables again.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while call(&node, "DescribeTable", &serde_json::json!({ "TableName": "long_B" })).0 != 200 {
        assert!(std::time::Instant::now() < deadline, "the restarted node never served");
        std::thread::sleep(Duration::from_millis(100));
    }
    check(&node);
}

/// BillingMode and ProvisionedThroughput, tags, and DeleteTable's answer, as DynamoDB shapes
/// them; throughput and tags are in the catalog, so they survive a SIGKILL and restart.
#[test]
fn billing_modes_and_tags_are_kept_in_the_catalog() {
    use serde_json::json;
    let mut node = Node::start("tables", &["--auth", "none"]);
    let definition = |name: &str| {
        json!({
            "TableName": name,
            "KeySchema": [{ "AttributeName": "pk", "KeyType": "HASH" }],
            "AttributeDefinitions": [{ "AttributeName": "pk", "AttributeType": "S" }],
        })
    };
    let with = |mut body: serde_json::Value, extra: serde_json::Value| {
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    // Refused as DynamoDB refuses them (MESSAGES.md 13a, 13b, 13j); nothing is created.
    for (extra, message) in [
        (json!({}), "ReadCapacityUnits and WriteCapacityUnits must both be specified when BillingMode is PROVISIONED"),
        (
            json!({ "BillingMode": "PAY_PER_REQUEST", "ProvisionedThroughput": { "ReadCapacityUnits": 1, "WriteCapacityUnits": 1 } }),
            "Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST",
        ),
        (json!({ "ProvisionedThroughput": { "ReadCapacityUnits": 1 } }), "provisionedThroughput.writeCapacityUnits"),
        (
            json!({ "ProvisionedThroughput": { "ReadCapacityUnits": 1_000_000_000_001u64, "WriteCapacityUnits": 1 } }),
            "Given value 1000000000001 for ReadCapacityUnits is out of bounds",
        ),
        (
            json!({ "BillingMode": "PAY_PER_REQUEST", "Tags": (0..51).map(|i| json!({ "Key": i.to_string(), "Value": "" })).collect::<Vec<_>>() }),
            "more than the 50",
        ),
    ] {
        let (status, body) = call(&node, "CreateTable", &with(definition("refused"), extra.clone()));
        assert_eq!(status, 400, "{extra}: {body}");
        assert!(body["message"].as_str().unwrap().contains(message), "{extra}: {body}");
    }
    assert_eq!(call(&node, "DescribeTable", &json!({ "TableName": "refused" })).0, 400);

    let throughput = json!({ "ReadCapacityUnits": 7, "WriteCapacityUnits": 3 });
    let (status, body) = call(
        &node,
        "CreateTable",
        &with(
            definition("provisioned"),
            json!({ "ProvisionedThroughput": throughput, "Tags": [{ "Key": "team", "Value": "blue" }] }),
        ),
    );
    assert_eq!(status, 200, "{body}");
    let expected = json!({ "NumberOfDecreasesToday": 0, "ReadCapacityUnits": 7, "WriteCapacityUnits": 3 });
    assert_eq!(body["TableDescription"]["ProvisionedThroughput"], expected);
    let (status, body) =
        call(&node, "CreateTable", &with(definition("on-demand"), json!({ "BillingMode": "PAY_PER_REQUEST" })));
    assert_eq!(status, 200, "{body}");
    let arn = call(&node, "DescribeTable", &json!({ "TableName": "provisioned" })).1["Table"]["TableArn"]
        .as_str()
        .unwrap()
        .to_string();

    // Tags on the table's ARN, with DynamoDB's limits.
    let many: Vec<_> = (0..49).map(|i| json!({ "Key": format!("k{i:02}"), "Value": i.to_string() })).collect();
    assert_eq!(call(&node, "TagResource", &json!({ "ResourceArn": arn, "Tags": many })), (200, json!({})));
    let (status, body) = call(
        &node,
        "TagResource",
        &json!({ "ResourceArn": arn, "Tags": [{ "Key": "x", "Value": "y" }, { "Key": "z", "Value": "" }] }),
    );
    assert_eq!((status, body["__type"].as_str().unwrap().ends_with("ValidationException")), (400, true), "{body}");
    assert_eq!(
        call(&node, "UntagResource", &json!({ "ResourceArn": arn, "TagKeys": ["k00", "k01", "absent"] })),
        (200, json!({}))
    );
    for (tag, member) in
        [(json!({ "Key": "aws:x", "Value": "" }), "aws:"), (json!({ "Key": "k!", "Value": "" }), "tags.1.member.key")]
    {
        let (status, body) = call(&node, "TagResource", &json!({ "ResourceArn": arn, "Tags": [tag] }));
        assert_eq!(status, 400, "{body}");
        assert!(body["message"].as_str().unwrap().contains(member), "{body}");
    }
    let missing = arn.replace("provisioned", "missing");
    let (status, body) = call(&node, "ListTagsOfResource", &json!({ "ResourceArn": missing }));
    assert_eq!(status, 400);
    assert_eq!(body["message"], format!("Requested resource not found: ResourceArn: {missing} not found"));
    assert_eq!(call(&node, "ListTagsOfResource", &json!({ "ResourceArn": "provisioned" })).0, 400);

    // All of it survives a SIGKILL and restart.
    node.kill();
    node.restart();
    let described = call(&node, "DescribeTable", &json!({ "TableName": "provisioned" })).1;
    assert_eq!(described["Table"]["ProvisionedThroughput"], expected, "{described}");
    assert!(described["Table"].get("BillingModeSummary").is_none(), "{described}");
    let on_demand = call(&node, "DescribeTable", &json!({ "TableName": "on-demand" })).1;
    assert_eq!(on_demand["Table"]["BillingModeSummary"]["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(on_demand["Table"]["ProvisionedThroughput"]["ReadCapacityUnits"], 0);
    let (status, listed) = call(&node, "ListTagsOfResource", &json!({ "ResourceArn": arn }));
    assert_eq!(status, 200, "{listed}");
    let keys: Vec<&str> = listed["Tags"].as_array().unwrap().iter().map(|tag| tag["Key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), 48, "{listed}");
    assert!(keys.contains(&"team") && keys.contains(&"k48") && !keys.contains(&"k00"), "{listed}");
    let after = call(&node, "ListTagsOfResource", &json!({ "ResourceArn": arn, "NextToken": "k47" })).1;
    assert_eq!(after, json!({ "Tags": [{ "Key": "k48", "Value": "48" }, { "Key": "team", "Value": "blue" }] }));

    // DeleteTable answers DELETING with the table's throughput, without its key schema.
    let (status, deleted) = call(&node, "DeleteTable", &json!({ "TableName": "provisioned" }));
    assert_eq!(status, 200, "{deleted}");
    let description = &deleted["TableDescription"];
    assert_eq!(
        (description["TableStatus"].as_str(), description["TableArn"].as_str()),
        (Some("DELETING"), Some(arn.as_str()))
    );
    assert_eq!(description["ProvisionedThroughput"], expected);
    assert!(description.get("KeySchema").is_none() && description.get("CreationDateTime").is_none(), "{deleted}");
    assert_eq!(call(&node, "ListTagsOfResource", &json!({ "ResourceArn": arn })).0, 400);
}

/// `post`'s request with its body sent chunked: `chunks` as they go on the wire after the
/// head (sizes, extensions, data, the last chunk and the trailer section).
fn post_chunked(target: &str, chunks: &[u8]) -> Vec<u8> {
    let head = String::from_utf8(post(target, "", None)).unwrap();
    let head = head.replace("Content-Length: 0\r\n", "Transfer-Encoding: chunked\r\n");
    [head.as_bytes(), chunks].concat()
}

/// A chunked request body (Transfer-Encoding: chunked, RFC 9112 section 7.1) over a raw TCP
/// socket: read whole, extensions and trailers taken, held to 16 MB (413 beyond); malformed
/// chunking is 400 and closes the connection; Transfer-Encoding beside a Content-Length, in
/// HTTP/1.0, or not ending with chunked, is refused.
#[test]
fn chunked_request_bodies_are_read_with_the_same_limits() {
    let node = Node::start("chunked", &["--auth", "none"]);
    let list = "DynamoDB_20120810.ListTables";
    let mut stream = connect(&node);
    for chunks in [
        &b"2\r\n{}\r\n0\r\n\r\n"[..],
        b"1\r\n{\r\n1;name=value;quoted=\"a \\\"b\\\" c\" ; flag\r\n}\r\n0\r\n\r\n",
        b"0001\r\n{\r\n1\r\n}\r\n0\r\nX-Checksum: abc\r\nX-Other: d\r\n\r\n",
        b"C\r\n{\"Limit\": 5}\r\n0\r\n\r\n",
    ] {
        // Each on the same kept-alive connection: the body ended where the chunks said.
        let (status, _, body) = exchange(&mut stream, &post_chunked(list, chunks)).expect("an answer");
        assert_eq!(status, 200, "{}: {}", String::from_utf8_lossy(chunks), String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("TableNames"));
    }
    // A body sent a byte at a time is read the same.
    let request = post_chunked(list, b"1;x=y\r\n{\r\n1\r\n}\r\n0\r\nT: v\r\n\r\n");
    for byte in &request {
        std::io::Write::write_all(&mut stream, std::slice::from_ref(byte)).unwrap();
    }
    let (status, _, _) = exchange(&mut stream, b"").expect("an answer");
    assert_eq!(status, 200);
    // A chunked body of exactly 16 MB is within the limit (then read as JSON); a byte more is not.
    let mut at_limit = b"{}".to_vec();
    at_limit.resize(16 << 20, b' ');
    let mut chunks = Vec::new();
    for piece in at_limit.chunks(1 << 20) {
        chunks.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunks.extend_from_slice(piece);
        chunks.extend_from_slice(b"\r\n");
    }
    let mut over = chunks.clone();
    chunks.extend_from_slice(b"0\r\n\r\n");
    let (status, _, body) = exchange(&mut stream, &post_chunked(list, &chunks)).expect("an answer");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    over.extend_from_slice(b"1\r\n \r\n0\r\n\r\n");
    let mut closed = connect(&node);
    let (status, _, body) = exchange(&mut closed, &post_chunked(list, &over)).expect("an answer");
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    // Malformed chunking, and framings a proxy could read otherwise: refused, then closed.
    let chunked = |chunks: &[u8]| post_chunked(list, chunks);
    let head = |headers: &str, version: &str| {
        format!("POST / {version}\r\nHost: localhost\r\nX-Amz-Target: {list}\r\n{headers}\r\n2\r\n{{}}\r\n0\r\n\r\n")
            .into_bytes()
    };
    for (request, status, named) in [
        (chunked(b"zz\r\n{}\r\n0\r\n\r\n"), 400, "chunked body is malformed"),
        (chunked(b"\r\n{}\r\n0\r\n\r\n"), 400, "chunked body is malformed"),
        (chunked(b"2\r\n{}XX0\r\n\r\n"), 400, "chunked body is malformed"),
        (chunked(b"2;a\nb\r\n{}\r\n0\r\n\r\n"), 400, "chunked body is malformed"),
        (chunked(b"2;=v\r\n{}\r\n0\r\n\r\n"), 400, "chunked body is malformed"),
        (chunked(b"2;a=\"open\r\n{}\r\n0\r\n\r\n"), 400, "chunked body is malformed"),
        (chunked(b"2\r\n{}\r\n0\r\nbad trailer\r\n\r\n"), 400, "chunked body is malformed"),
        (chunked(format!("2;{}\r\n", "x".repeat(5000)).as_bytes()), 400, "chunked body is malformed"),
        (chunked(b"ffffffffffffffffffff\r\n"), 413, "larger than 16 MB"),
        (
            head("Transfer-Encoding: chunked\r\nContent-Length: 9\r\n", "HTTP/1.1"),
            400,
            "both Transfer-Encoding and Content-Length",
        ),
        (head("Transfer-Encoding: chunked\r\n", "HTTP/1.0"), 400, "HTTP/1.0"),
        (head("Transfer-Encoding: chunked, identity\r\n", "HTTP/1.1"), 400, "must end with chunked"),
        (head("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "HTTP/1.1"), 400, "only once"),
        (head("Transfer-Encoding: gzip, chunked\r\n", "HTTP/1.1"), 501, "may only be chunked"),
    ] {
        let mut stream = connect(&node);
        let (got, _, body) = exchange(&mut stream, &request).expect("an answer before the close");
        let message = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(got, status, "{}: {message}", String::from_utf8_lossy(&request[..request.len().min(300)]));
        assert!(message.contains(named), "{message}");
        let mut rest = Vec::new();
        assert_eq!(stream.read_to_end(&mut rest).ok(), Some(0), "closed after the answer");
    }
}
