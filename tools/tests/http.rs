//! The DynamoDB HTTP endpoint of the real `tessera serve` binary: the AWS SDK for Python and
//! the AWS CLI against it (`tests/dynamodb/sdk_test.py`), and raw bytes over TCP: garbage,
//! oversized and malformed requests get DynamoDB's typed errors, and the server keeps serving.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{crash_api, ensure_python_sdk, exchange, header, post, Node};

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

fn connect(node: &Node) -> TcpStream {
    let stream = TcpStream::connect(node.http).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
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
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(), 411),
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
