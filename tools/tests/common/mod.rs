//! Helpers the integration tests share: raw HTTP/1.1 exchanges with the DynamoDB endpoint.
//! Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tessera_net::http::sigv4::format_amz_date;
use tessera_wire::frame::{self, Decoded, Header};

pub mod tree_file;

/// One binary-protocol frame read from `stream`: its header and payload (None once the
/// server closed the connection).
pub fn read_frame(stream: &mut TcpStream) -> Option<(Header, Vec<u8>)> {
    let mut bytes = vec![0u8; 4];
    stream.read_exact(&mut bytes).ok()?;
    let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    bytes.resize(4 + len, 0);
    stream.read_exact(&mut bytes[4..]).ok()?;
    match frame::decode(&bytes).expect("the server's framing is sound") {
        Decoded::Frame(frame, _) => {
            assert!(frame.checksum_ok, "the server's frame fails its checksum");
            Some((frame.header, frame.payload.to_vec()))
        }
        Decoded::Incomplete(_) => unreachable!("a whole frame was read"),
    }
}

/// The error code of an internal RPC answer, which must be an error.
pub fn partition_error(payload: &[u8]) -> tessera_wire::ErrorCode {
    match tessera_wire::PartitionAnswer::decode(payload).expect("a PartitionAnswer") {
        tessera_wire::PartitionAnswer::Error(error) => error.code,
        other => panic!("a PartitionOp was served: {other:?}"),
    }
}

/// An answer's status, headers (lower-case names) and body.
pub type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// One HTTP exchange on `stream`.
pub fn exchange(stream: &mut TcpStream, request: &[u8]) -> Option<Answer> {
    stream.write_all(request).ok()?;
    read_answer(stream)
}

fn read_answer(stream: &mut TcpStream) -> Option<Answer> {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        bytes.push(byte[0]);
    }
    let head = String::from_utf8(bytes).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(": "))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_string()))
        .collect();
    let length: usize = headers.iter().find(|(name, _)| name == "content-length")?.1.parse().ok()?;
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some((status, headers, body))
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(header, _)| header == name).map(|(_, value)| value.as_str())
}

/// A POST as an SDK sends it, with well-formed credentials dated now (signed with nothing
/// in particular: the server under test accepts any).
pub fn post(target: &str, body: &str, date: Option<&str>) -> Vec<u8> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let date = date.map_or_else(|| format_amz_date(now), str::to_string);
    format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Target: {target}\r\nContent-Type: application/x-amz-json-1.0\r\n\
         X-Amz-Date: {date}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIDANY/{}/us-east-1/dynamodb/aws4_request, \
         SignedHeaders=host;x-amz-date;x-amz-target, Signature={}\r\nContent-Length: {}\r\n\r\n{body}",
        &date[..8],
        "0".repeat(64),
        body.len()
    )
    .into_bytes()
}

/// A connection to `node`'s HTTP endpoint.
pub fn connect(node: &Node) -> TcpStream {
    let stream = TcpStream::connect(node.http).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// One request on a new connection: the status and the JSON answer.
pub fn call(node: &Node, operation: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let request = post(&format!("DynamoDB_20120810.{operation}"), &body.to_string(), None);
    let (status, _, answer) = exchange(&mut connect(node), &request).expect("an answer");
    (status, serde_json::from_slice(&answer).expect("a JSON answer"))
}

/// `call`, which must succeed.
pub fn ok(node: &Node, operation: &str, body: serde_json::Value) -> serde_json::Value {
    let (status, answer) = call(node, operation, &body);
    assert_eq!(status, 200, "{operation}: {answer}");
    answer
}

/// Whether `python3` can import boto3 and `aws` runs; installs both from PyPI when not.
pub fn ensure_python_sdk() {
    let ready = || {
        let boto3 = Command::new("python3").args(["-c", "import boto3"]).status().is_ok_and(|status| status.success());
        let cli = Command::new("aws").arg("--version").output().is_ok_and(|output| output.status.success());
        boto3 && cli
    };
    if ready() {
        return;
    }
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "boto3", "awscli"])
        .status()
        .expect("python3 runs (the SDK tests need Python 3 with pip)");
    assert!(
        status.success() && ready(),
        "cannot install boto3 and the AWS CLI: run `python3 -m pip install boto3 awscli`"
    );
}

/// `tests/dynamodb/crash_api.py` against a node or cluster: its writer sends requests of
/// every kind to `endpoint`, recording what was acknowledged in `history`; once it has
/// recorded `lines` lines, `kill` SIGKILLs the servers, the writer ends as its next request
/// finds no server, and `restart` starts them again and returns the endpoints (DynamoDB HTTP)
/// to check; the check must then find every acknowledged write and no refused one, at each.
pub fn crash_api(
    history: &Path,
    endpoint: std::net::SocketAddr,
    lines: usize,
    kill: impl FnOnce(),
    restart: impl FnOnce() -> Vec<std::net::SocketAddr>,
) {
    ensure_python_sdk();
    let _ = std::fs::remove_file(history);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/dynamodb/crash_api.py");
    let writer = Command::new("python3")
        .arg(&script)
        .args(["write", "--seed", "7", "--endpoint", &format!("http://{endpoint}"), "--log"])
        .arg(history)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the crash test's writer");
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    while std::fs::read_to_string(history).map_or(0, |text| text.lines().count()) < lines {
        assert!(std::time::Instant::now() < deadline, "the writer made too little progress");
        std::thread::sleep(Duration::from_millis(100));
    }
    kill();
    let written = writer.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&written.stderr).to_string();
    assert!(written.status.success() && report.contains("went away"), "the writer failed:\n{report}");
    let endpoints = restart();
    let mut check = Command::new("python3");
    check.arg(&script).arg("check").arg("--log").arg(history);
    for endpoint in endpoints {
        check.args(["--endpoint", &format!("http://{endpoint}")]);
    }
    let checked = check.output().expect("run the crash test's check");
    let _ = std::fs::remove_file(history);
    let verdict = String::from_utf8_lossy(&checked.stderr);
    assert!(checked.status.success(), "after the restart:\n{verdict}\n(the writer: {report})");
    eprintln!("{report}{verdict}");
}

/// The binary protocol's address in `tessera serve`'s start-up line.
pub fn binary_address(line: &str) -> std::net::SocketAddr {
    line.split("serving on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|address| address.parse().ok())
        .unwrap_or_else(|| panic!("no binary protocol address in {line:?}"))
}

/// `count` loopback addresses with ports free now, all different (the listeners found them
/// are held until every one is found: ports released one by one could come back twice).
pub fn free_addresses(count: usize) -> Vec<SocketAddr> {
    let listeners: Vec<_> = (0..count).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|listener| listener.local_addr().unwrap()).collect()
}

/// The DynamoDB HTTP address in `tessera serve`'s start-up line.
pub fn http_address(line: &str) -> std::net::SocketAddr {
    line.split("DynamoDB HTTP API on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|address| address.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP address in {line:?}"))
}

/// A `tessera serve` process serving DynamoDB's HTTP API on a free loopback port, with its
/// data in a fresh temporary directory (removed when dropped).
pub struct Node {
    child: Child,
    /// The binary protocol's address.
    pub address: SocketAddr,
    pub http: SocketAddr,
    pub dir: PathBuf,
    flags: Vec<String>,
}

impl Node {
    pub fn start(name: &str, flags: &[&str]) -> Node {
        let dir = std::env::temp_dir().join(format!("tessera-http-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Node::open(dir, flags)
    }

    /// A node on the data directory `dir` as it is (removed when dropped, as with `start`).
    pub fn open(dir: PathBuf, flags: &[&str]) -> Node {
        let flags: Vec<String> = flags.iter().map(|flag| flag.to_string()).collect();
        let (child, address, http) = Node::spawn(&dir, &flags);
        Node { child, address, http, dir, flags }
    }

    fn spawn(dir: &Path, flags: &[String]) -> (Child, SocketAddr, SocketAddr) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--cores", "2"])
            .args(["--cache-mib", "64", "--data-dir"])
            .arg(dir)
            .args(flags)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tessera serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
        (child, binary_address(&line), http_address(&line))
    }

    /// SIGKILLs the node (`restart` starts it again on the same data directory).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the killed node again; its new HTTP address.
    pub fn restart(&mut self) -> Vec<SocketAddr> {
        (self.child, self.address, self.http) = Node::spawn(&self.dir, &self.flags);
        vec![self.http]
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A child's standard error, line by line, as it comes (each line also echoed to this test's
/// standard error, so that a failing test shows what the node said).
pub fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let (lines, received) = std::sync::mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            eprintln!("{line}");
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    received
}

/// Flips a byte of every record in the WAL directory `wal` that holds `needle` (a value
/// written last, to damage the last flush of a stopped node); how many segments held one.
pub fn flip_in_wal(wal: &Path, needle: &[u8]) -> usize {
    let mut flipped = 0;
    for entry in std::fs::read_dir(wal).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(needle.len()).position(|window| window == needle) {
            bytes[at] ^= 0x20;
            std::fs::write(&path, &bytes).unwrap();
            flipped += 1;
        }
    }
    flipped
}
