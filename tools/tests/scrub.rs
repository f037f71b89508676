//! The background scrub of the real binary: a page damaged while the node was stopped is
//! reported by the scrub, naming the file, the page and its partitions, before any request
//! reads it; the node serves the keys the page does not hold.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use tessera_engine::{KeySchema, KeyType};
use tessera_wire::client::{Client, ClientConfig, ClientError, ItemBuilder};

use common::tree_file;

mod common;

const BINARY: &str = env!("CARGO_BIN_EXE_tessera");

/// `tessera serve` on two cores with `flags`; its address and its standard error, line by line.
fn start(dir: &Path, flags: &[&str]) -> (Child, SocketAddr, Receiver<String>) {
    let mut child = Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--http-listen", "none", "--cores", "2"])
        .args(["--cache-mib", "16", "--first-cpu", "none", "--data-dir"])
        .arg(dir)
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tessera serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
    let address = line.split_whitespace().find_map(|word| word.parse().ok()).expect("an address");
    let received = common::stderr_lines(&mut child);
    (child, address, received)
}

/// The first line of `lines` that `wanted` accepts, within `within`.
fn wait_for(lines: &Receiver<String>, within: Duration, wanted: impl Fn(&str) -> bool) -> Option<String> {
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if wanted(&line) => return Some(line),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

fn stop(child: &mut Child) {
    // SAFETY: kill only sends a signal to our child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert!(status.success(), "a clean stop exits 0, not {status}");
}

#[test]
fn the_scrub_reports_a_flipped_byte_of_a_leaf_before_any_read_touches_it() {
    let dir = std::env::temp_dir().join(format!("tessera-scrub-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut child, address, _) = start(&dir, &[]);
    let mut client = Client::connect(address).unwrap();
    client.create_table("items", KeySchema::hash_only("k", KeyType::S), 4).unwrap();
    let keys: Vec<String> = (0..600).map(|n| format!("key-{n}")).collect();
    for key in &keys {
        client.put_item("items", ItemBuilder::new().s("k", key).s("v", "x".repeat(200)).build()).unwrap();
    }
    drop(client);
    stop(&mut child);

    let tree = dir.join("core-1").join("tree.db");
    let leaves = tree_file::leaves(&tree, tree_file::is_table_partition);
    let &(damaged, partition, _) = leaves.first().expect("core 1 has leaves of the table");
    tree_file::flip_byte(&tree, damaged);

    let (mut child, address, lines) = start(&dir, &["--scrub-interval-s", "1"]);
    let report = wait_for(&lines, Duration::from_secs(30), |line| line.contains(&format!("damaged page {damaged} ")));
    let report = report.expect("the scrub reports the damaged page");
    assert!(report.contains("found by the scrub"), "{report}");
    assert!(report.contains(&format!("offset {}", damaged * 4096)), "{report}");
    assert!(report.contains(&tree.display().to_string()), "{report}");
    assert!(report.contains(&format!("partition(s) {partition}")), "{report}");
    assert!(report.contains("fails its CRC32C check"), "{report}");
    let pass = wait_for(&lines, Duration::from_secs(30), |line| line.contains("core-1: scrub pass"));
    assert!(pass.expect("the pass is reported").ends_with(": 1 damaged"));

    // The keys the page holds fail (retryably); every other key is served.
    let config = ClientConfig { attempts: 1, ..ClientConfig::default() };
    let mut client = Client::connect_with(address, config).unwrap();
    let (mut served, mut failed) = (0, 0);
    for key in &keys {
        match client.get_item("items", ItemBuilder::new().s("k", key).build()) {
            Ok(Some(_)) => served += 1,
            Ok(None) => panic!("{key} was lost"),
            Err(ClientError::Service(error)) if error.code.retryable() => failed += 1,
            Err(error) => panic!("{key}: {error}"),
        }
    }
    assert!(failed > 0 && served > keys.len() / 2, "{served} served, {failed} failed");
    // Reported once per page, whoever finds it.
    assert_eq!(wait_for(&lines, Duration::from_secs(3), |line| line.contains("found by a read")), None);
    stop(&mut child);
    let _ = std::fs::remove_dir_all(&dir);
}
