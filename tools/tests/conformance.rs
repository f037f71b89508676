//! DynamoDB's documented answers, as data: every case of every `tests/dynamodb/cases/*.jsonl`
//! file is sent to a real `tessera serve` over its HTTP endpoint, and every case that does not
//! get its documented answer is reported (all of them, not only the first).
//!
//! A file holds one case per line, a JSON object (lines starting with `//` are comments, blank
//! lines are skipped):
//!
//! ```text
//! {"name": "unique-kebab-name", "source": "where DynamoDB documents this answer",
//!  "setup": [{"op": "CreateTable", "body": {...}}, ...],       optional; each must get a 2xx
//!  "op": "UpdateItem", "body": {...}, "headers": {...},         headers optional
//!  "expect": {"status": 400, "type": "ValidationException", "message": "exact text"}}
//! ```
//!
//! `${T}` and `${T2}` anywhere in a case stand for table names of that case alone, and `${c*N}`
//! for N copies of the one character c (names and values too long to write out). `op` is sent
//! as `X-Amz-Target: DynamoDB_20120810.<op>`; a body that is a JSON string is sent as that text
//! verbatim (for bodies that are not JSON), any other as its JSON; a `Content-Encoding: gzip`
//! header has the body sent gzipped. `expect` takes `status` (required), `type` (the `__type`
//! after `#`), one of `message` (exact), `message_starts` and `message_contains` (the error's
//! `message`; `Message` for a SerializationException, as DynamoDB writes it), `json` (a subset of a 2xx answer:
//! objects by the keys given, recursively; arrays element by element, of equal length) and
//! `absent` (top-level keys the answer must not have). `tests/dynamodb/differential.py` runs
//! the same files against dynalite and records where it differs in `cases/DYNALITE.md`.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{exchange, Node};

mod common;

/// The keys a case may have, and those of its `expect`: any other is a typo that would make a
/// check silently absent, so it fails the case.
const CASE_KEYS: &[&str] = &["name", "source", "setup", "op", "body", "headers", "expect"];
const EXPECT_KEYS: &[&str] = &["status", "type", "message", "message_starts", "message_contains", "json", "absent"];

/// One case, where it was read, and its text with the table names put in.
struct Case {
    file: String,
    line: usize,
    name: String,
    case: Value,
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/dynamodb/cases")
}

/// Every case of every file, in file then line order. A line that is not a JSON object, or a
/// name used twice, is a failure of its own.
fn read_cases(failures: &mut Vec<String>) -> Vec<Case> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("tests/dynamodb/cases exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "jsonl"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        for (index, text) in std::fs::read_to_string(&path).unwrap().lines().enumerate() {
            let line = index + 1;
            let text = text.trim();
            if text.is_empty() || text.starts_with("//") {
                continue;
            }
            let number = cases.len();
            let text = repeats(
                &text.replace("${T}", &format!("conf-{number}-a")).replace("${T2}", &format!("conf-{number}-b")),
            );
            let case: Value = match serde_json::from_str(&text) {
                Ok(case @ Value::Object(_)) => case,
                Ok(_) => {
                    failures.push(format!("{file}:{line}: not a JSON object"));
                    continue;
                }
                Err(error) => {
                    failures.push(format!("{file}:{line}: not JSON: {error}"));
                    continue;
                }
            };
            let name = case["name"].as_str().unwrap_or("").to_string();
            if let Some(first) = seen.insert(name.clone(), format!("{file}:{line}")) {
                failures.push(format!("{file}:{line}: the name {name:?} is also the case at {first}"));
            }
            cases.push(Case { file: file.clone(), line, name, case });
        }
    }
    cases
}

/// An answer's status and JSON body (`Value::Null` for a body that is not JSON).
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn error_type(&self) -> Option<&str> {
        self.body["__type"].as_str().map(|kind| kind.rsplit('#').next().unwrap())
    }

    /// The error's message: under `Message` for a SerializationException, as DynamoDB's
    /// framework writes it (MESSAGES.md, cross-cutting fact 1), else under `message`.
    fn message(&self) -> Option<&str> {
        let key = if self.error_type() == Some("SerializationException") { "Message" } else { "message" };
        self.body[key].as_str()
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

/// Sends one request of a case (`op`, `body`, optional `headers`) on a new connection.
fn send(node: &Node, op: &str, body: &Value, headers: Option<&Value>) -> Result<Answer, String> {
    let mut bytes = match body {
        Value::String(text) => text.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    };
    let mut extra = String::new();
    if let Some(headers) = headers {
        let Some(headers) = headers.as_object() else { return Err("headers is not an object".into()) };
        for (name, value) in headers {
            let Some(value) = value.as_str() else { return Err(format!("header {name} is not a string")) };
            if name.eq_ignore_ascii_case("content-encoding") && value.eq_ignore_ascii_case("gzip") {
                let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(&bytes).unwrap();
                bytes = encoder.finish().unwrap();
            }
            extra.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    // `post`'s signed-looking request, with the extra headers before its Content-Length.
    let head = String::from_utf8(common::post(&format!("DynamoDB_20120810.{op}"), "", None)).unwrap();
    let head = head.replace("Content-Length: 0\r\n", &format!("{extra}Content-Length: {}\r\n", bytes.len()));
    let mut stream = TcpStream::connect(node.http).map_err(|error| format!("connect: {error}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let (status, _, body) =
        exchange(&mut stream, &[head.as_bytes(), &bytes].concat()).ok_or("no answer (closed or timed out)")?;
    Ok(Answer { status, body: serde_json::from_slice(&body).unwrap_or(Value::Null) })
}

/// Waits until a table a setup step created is ACTIVE.
fn wait_active(node: &Node, table: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = send(node, "DescribeTable", &serde_json::json!({ "TableName": table }), None)?;
        if answer.body["Table"]["TableStatus"] == "ACTIVE" {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("table {table} not ACTIVE within 10 s: {answer}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where `got` fails to hold the subset `expected`, as a path and what differs.
fn subset_mismatch(path: &str, expected: &Value, got: &Value) -> Option<String> {
    match (expected, got) {
        (Value::Object(expected), Value::Object(got)) => expected.iter().find_map(|(key, inner)| match got.get(key) {
            Some(value) => subset_mismatch(&format!("{path}.{key}"), inner, value),
            None => Some(format!("{path}.{key} is missing")),
        }),
        (Value::Array(expected), Value::Array(got)) if expected.len() == got.len() => expected
            .iter()
            .zip(got)
            .enumerate()
            .find_map(|(index, (inner, value))| subset_mismatch(&format!("{path}[{index}]"), inner, value)),
        _ if expected == got => None,
        _ => Some(format!("{path} is {got}, expected {expected}")),
    }
}

/// What in `answer` breaks `expect`, if anything.
fn check(expect: &Value, answer: &Answer) -> Result<(), String> {
    let Some(expect) = expect.as_object() else { return Err("expect is not an object".into()) };
    if let Some(key) = expect.keys().find(|key| !EXPECT_KEYS.contains(&key.as_str())) {
        return Err(format!("expect has an unknown key {key:?}"));
    }
    let Some(status) = expect.get("status").and_then(Value::as_u64) else { return Err("expect has no status".into()) };
    let mut wrong = Vec::new();
    if u64::from(answer.status) != status {
        wrong.push(format!("status {}, expected {status}", answer.status));
    }
    if let Some(kind) = expect.get("type") {
        if answer.error_type() != kind.as_str() {
            wrong.push(format!("type {:?}, expected {kind}", answer.error_type()));
        }
    }
    let message = answer.message();
    for (key, holds) in [
        ("message", (|got: &str, text: &str| got == text) as fn(&str, &str) -> bool),
        ("message_starts", |got, text| got.starts_with(text)),
        ("message_contains", |got, text| got.contains(text)),
    ] {
        if let Some(text) = expect.get(key) {
            let Some(text) = text.as_str() else { return Err(format!("expect.{key} is not a string")) };
            if !message.is_some_and(|got| holds(got, text)) {
                wrong.push(format!("message {message:?}, expected {key} {text:?}"));
            }
        }
    }
    if let Some(json) = expect.get("json") {
        if let Some(mismatch) = subset_mismatch("", json, &answer.body) {
            wrong.push(format!("json: {mismatch}"));
        }
    }
    if let Some(absent) = expect.get("absent") {
        let Some(absent) = absent.as_array() else { return Err("expect.absent is not a list".into()) };
        for key in absent {
            let key = key.as_str().ok_or("expect.absent holds a non-string")?;
            if answer.body.get(key).is_some() {
                wrong.push(format!("{key} is present"));
            }
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\n      got: {answer}", wrong.join("; ")))
    }
}

/// Runs one case: its setup, then its request and the check of the answer.
fn run(node: &Node, case: &Value) -> Result<(), String> {
    let object = case.as_object().unwrap();
    if let Some(key) = object.keys().find(|key| !CASE_KEYS.contains(&key.as_str())) {
        return Err(format!("unknown key {key:?}"));
    }
    for key in ["name", "source", "op"] {
        if case[key].as_str().is_none_or(str::is_empty) {
            return Err(format!("no {key}"));
        }
    }
    for (index, step) in case["setup"].as_array().map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
        let op = step["op"].as_str().ok_or(format!("setup[{index}] has no op"))?;
        let answer = send(node, op, &step["body"], step.get("headers"))?;
        if !(200..300).contains(&answer.status) {
            return Err(format!("setup[{index}] {op} failed: {answer}"));
        }
        if op == "CreateTable" {
            wait_active(node, step["body"]["TableName"].as_str().unwrap_or(""))?;
        }
    }
    let answer = send(node, case["op"].as_str().unwrap(), &case["body"], case.get("headers"))?;
    check(&case["expect"], &answer)
}

#[test]
fn every_case_gets_dynamodbs_documented_answer() {
    let mut failures = Vec::new();
    let cases = read_cases(&mut failures);
    assert!(!cases.is_empty(), "no cases in {}", cases_dir().display());
    let node = Node::start("conformance", &["--auth", "none"]);
    for Case { file, line, name, case } in &cases {
        if let Err(why) = run(&node, case) {
            failures.push(format!("{name} ({file}:{line}): {why}\n      expected: {}", case["expect"]));
        }
    }
    eprintln!("{} cases run, {} failed", cases.len(), failures.len());
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// `text` with each `${c*N}` replaced by N copies of the character c.
fn repeats(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let (before, after) = rest.split_at(start);
        out.push_str(before);
        let mut chars = after[2..].chars();
        let parsed = chars.next().and_then(|c| {
            let tail = chars.as_str().strip_prefix('*')?;
            let end = tail.find('}')?;
            let count: usize = tail[..end].parse().ok()?;
            Some((c, count, after.len() - tail.len() + end + 1))
        });
        match parsed {
            Some((c, count, used)) => {
                out.extend(std::iter::repeat_n(c, count));
                rest = &after[used..];
            }
            None => {
                out.push_str("${");
                rest = &after[2..];
            }
        }
    }
    out.push_str(rest);
    out
}
