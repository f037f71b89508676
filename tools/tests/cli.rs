//! The `tessera` command line as someone types it: usage and version, unknown commands and
//! bad values refused before anything connects, `serve` on a port that is taken, and
//! `--endpoint` given as a URL.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_tessera");
/// Nothing listens on port 1: a command that tried to connect there would fail differently.
const NOWHERE: &str = "127.0.0.1:1";

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tessera-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str], dir: &Path) -> (Option<i32>, String, String) {
    let Output { status, stdout, stderr } = Command::new(BINARY).args(args).current_dir(dir).output().unwrap();
    (status.code(), String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

#[test]
fn no_arguments_print_the_usage_on_standard_error_and_fail() {
    let scratch = Scratch::new("none");
    let (code, stdout, stderr) = run(&[], &scratch.0);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty() && stderr.contains("Usage: tessera") && stderr.contains("serve"), "{stderr}");
}

#[test]
fn version_and_help_print_on_standard_output() {
    let scratch = Scratch::new("help");
    let (code, stdout, _) = run(&["--version"], &scratch.0);
    assert_eq!((code, stdout.as_str()), (Some(0), format!("tessera {}\n", env!("CARGO_PKG_VERSION")).as_str()));
    let (code, stdout, _) = run(&["--help"], &scratch.0);
    assert!(code == Some(0) && stdout.contains("Usage: tessera") && stdout.contains("--endpoint"), "{stdout}");
    let (code, stdout, _) = run(&["serve", "--help"], &scratch.0);
    assert_eq!(code, Some(0));
    for flag in ["Usage: tessera serve", "--data-dir", "--listen", "--first-cpu", "--http-listen", "--auth"] {
        assert!(stdout.contains(flag), "{flag} missing from {stdout}");
    }
    assert_eq!(std::fs::read_dir(&scratch.0).unwrap().count(), 0, "help made a data directory");
}

#[test]
fn an_unknown_command_is_refused_before_anything_connects() {
    let scratch = Scratch::new("unknown");
    let began = Instant::now();
    let (code, _, stderr) = run(&["--endpoint", NOWHERE, "frobnicate", "x"], &scratch.0);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("unrecognized subcommand 'frobnicate'") && !stderr.contains("connect"), "{stderr}");
    assert!(began.elapsed() < Duration::from_secs(5), "took {:?}", began.elapsed());
}

#[test]
fn bad_values_are_refused_by_flag_with_status_2() {
    let scratch = Scratch::new("values");
    let cases: &[(&[&str], &str)] = &[
        (&["serve", "--cores", "many"], "'--cores <N>'"),
        (&["serve", "--first-cpu", "first"], "'--first-cpu <C|none>'"),
        (&["serve", "--listen", "localhost"], "'--listen <ADDR>'"),
        (&["serve", "--auth", "maybe"], "'--auth <AUTH>'"),
        (&["--endpoint", "nowhere", "table", "list"], "'--endpoint <ADDR>'"),
        (&["--endpoint", NOWHERE, "table", "create", "t", "--pk", "id:Q"], "'--pk <NAME:TYPE>'"),
        (&["--endpoint", NOWHERE, "put", "t", "{not json"], "'<ITEM_JSON>'"),
        (&["--endpoint", NOWHERE, "put", "t", r#"{"id":{"S":"a"}}"#, "--values", "[]"], "'--values <JSON>'"),
        (&["--endpoint", NOWHERE, "query", "t", "--pk", r#"{"S":"a"}"#, "--sk", "near", r#"{"N":"1"}"#], "--sk"),
        (&["--endpoint", NOWHERE, "query", "t", "--pk", r#"{"S":"a"}"#, "--sk", "between", r#"{"N":"1"}"#], "--sk"),
        (&["--endpoint", NOWHERE, "scan", "t", "--segments", "all"], "'--segments <N>'"),
    ];
    for (args, flag) in cases {
        let (code, _, stderr) = run(args, &scratch.0);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag) && !stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    assert_eq!(std::fs::read_dir(&scratch.0).unwrap().count(), 0, "a data directory was made");
}

/// `serve` on an address another socket listens on fails, naming it, and leaves no data
/// directory behind: the binary protocol's address and the HTTP API's alike.
#[test]
fn serve_on_a_taken_port_fails_and_makes_no_data_directory() {
    let scratch = Scratch::new("taken");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let serve = |listen: &str, http: &str, data: &str| {
        Command::new(BINARY)
            .args(["serve", "--cores", "1", "--first-cpu", "none", "--listen", listen, "--http-listen", http])
            .arg("--data-dir")
            .arg(scratch.0.join(data))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let binary = serve(&address, "none", "binary");
    let http = serve("127.0.0.1:0", &address, "http");
    for (child, data) in [(binary, "binary"), (http, "http")] {
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{data}: {stderr}");
        assert!(
            stderr.contains(&format!("cannot listen on {address}: another server listens there")),
            "{data}: {stderr}"
        );
        assert!(!scratch.0.join(data).exists(), "{data}: the data directory was made");
    }
}

/// A node of one core, unpinned, without the HTTP API, in a scratch directory.
struct Node {
    child: Child,
    address: String,
    line: String,
    _scratch: Scratch,
}

impl Node {
    fn start() -> Node {
        let scratch = Scratch::new("node");
        let mut child = Command::new(BINARY)
            .args(["serve", "--listen", "127.0.0.1:0", "--cores", "1", "--first-cpu", "none"])
            .args(["--http-listen", "none", "--cache-mib", "64", "--data-dir"])
            .arg(scratch.0.join("data"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let address = line
            .split_whitespace()
            .find(|word| word.parse::<std::net::SocketAddr>().is_ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Node { child, address, line, _scratch: scratch }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_endpoint_may_be_given_as_a_url() {
    let node = Node::start();
    assert!(node.line.starts_with(&format!("tessera {}: serving on", env!("CARGO_PKG_VERSION"))), "{}", node.line);
    let here = std::env::temp_dir();
    let url = format!("http://{}", node.address);
    let (code, stdout, stderr) = run(&["--endpoint", &url, "table", "create", "cli", "--pk", "id:S"], &here);
    assert!(code == Some(0) && stdout.contains(r#""TableName":"cli""#), "{stderr}");
    let item = r#"{"id":{"S":"a"},"n":{"N":"1"}}"#;
    let (code, _, stderr) = run(&["--endpoint", &format!("{url}/"), "put", "cli", item], &here);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stdout, stderr) = run(&["--endpoint", &node.address, "get", "cli", r#"{"id":{"S":"a"}}"#], &here);
    assert_eq!((code, stdout.trim()), (Some(0), item), "{stderr}");
}

/// Port 8000 is the HTTP API's default; the client commands speak the binary protocol, and
/// say which port that is whatever answers (or does not) on 8000.
#[test]
fn the_http_port_as_endpoint_gets_a_hint_at_the_binary_one() {
    let (code, _, stderr) = run(&["--endpoint", "http://127.0.0.1:8000", "table", "list"], &std::env::temp_dir());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("binary protocol, on port 7400"), "{stderr}");
}
