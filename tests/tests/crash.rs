//! Kills a writing engine with SIGKILL at random moments, many times over one data
//! directory, and checks after each kill that every acknowledged write is there, that every
//! value is exactly what was written (nothing half-applied), and that batches are atomic.
//!
//! `TESSERA_CRASH_ROUNDS` sets the number of kills (default 12; the soak uses more).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::ops::Bound;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tessera_engine::Store;
use tessera_tests::{crash_config, run, value_for, PARTITIONS};

/// What the acknowledgements so far promise.
#[derive(Default)]
struct Promises {
    present: BTreeSet<(u64, String)>,
    deleted: BTreeSet<(u64, String)>,
    /// Highest acknowledged operation number of each writer (`r{round}-w{writer}`).
    last_acked: BTreeMap<String, u64>,
}

/// Splits `r1-w2-n30[-b0of3]` into (`r1-w2`, 30).
fn writer_and_step(key: &str) -> (String, u64) {
    let mut parts = key.splitn(4, '-');
    let (round, writer, step) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    (format!("{round}-{writer}"), step[1..].parse().unwrap())
}

impl Promises {
    /// A single put `n` is deleted by the writer's operation `n + 2`, which is issued once
    /// `n + 1` is acknowledged and may have been applied without being acknowledged.
    fn may_be_deleted(&self, key: &str) -> bool {
        let (writer, step) = writer_and_step(key);
        step % 5 == 2 && !key.contains("-b") && self.last_acked.get(&writer).is_some_and(|&acked| acked > step)
    }
}

fn seed() -> u64 {
    std::env::var("TESSERA_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    })
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let rounds: u64 = std::env::var("TESSERA_CRASH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
    let mut state = seed();
    println!("crash test seed {state} (TESSERA_CRASH_SEED reproduces the kill schedule)");
    let dir = std::env::temp_dir().join(format!("tessera-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut promises = Promises::default();
    let mut total_acks = 0;
    for round in 0..rounds {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let run_ms = 30 + (state >> 33) % 700;
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
            .arg(&dir)
            .arg(round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("child starts");
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines_rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(run_ms));
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let status = child.wait().unwrap();
        assert!(status.code().is_none(), "the writer died on its own: {status:?}");
        reader.join().unwrap();
        let mut acks = 0;
        for line in lines_rx.try_iter() {
            let fields: Vec<&str> = line.split(' ').collect();
            let partition: u64 = fields[2].parse().unwrap();
            let (writer, step) = writer_and_step(fields[3]);
            let step = if fields[1] == "delete" { step + 2 } else { step };
            let last = promises.last_acked.entry(writer).or_default();
            *last = (*last).max(step);
            for key in &fields[3..] {
                let entry = (partition, key.to_string());
                if fields[1] == "delete" {
                    promises.present.remove(&entry);
                    promises.deleted.insert(entry);
                } else {
                    promises.present.insert(entry);
                }
            }
            acks += 1;
        }
        total_acks += acks;
        verify(&dir, &promises, round);
        println!("round {round}: killed after {run_ms} ms, {acks} acknowledged writes, all present");
    }
    assert!(total_acks > 0, "the writer never acknowledged a write");
    let _ = std::fs::remove_dir_all(&dir);
}

fn verify(dir: &std::path::Path, promises: &Promises, round: u64) {
    let dir = dir.to_path_buf();
    let deleted = promises.deleted.clone();
    let present: BTreeSet<(u64, String)> =
        promises.present.iter().filter(|(_, key)| !promises.may_be_deleted(key)).cloned().collect();
    run(async move {
        let store =
            Store::open(&dir, crash_config()).await.unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        let mut found: BTreeMap<(u64, String), Vec<u8>> = BTreeMap::new();
        for partition in 0..PARTITIONS {
            let entries = store.scan(partition, Bound::Unbounded, Bound::Unbounded, false, usize::MAX).await.unwrap();
            for (key, value) in entries {
                found.insert((partition, String::from_utf8(key).unwrap()), value);
            }
        }
        for ((partition, key), value) in &found {
            assert_eq!(value, &value_for(key), "round {round}: wrong value under {key} in partition {partition}");
        }
        for entry in &present {
            assert!(found.contains_key(entry), "round {round}: acknowledged write of {entry:?} is missing");
        }
        for entry in &deleted {
            assert!(!found.contains_key(entry), "round {round}: acknowledged delete of {entry:?} is undone");
        }
        // Batches are all or nothing.
        let mut batches: BTreeMap<String, usize> = BTreeMap::new();
        for (_, key) in found.keys() {
            if let Some(at) = key.rfind("-b") {
                *batches.entry(key[..at].to_string()).or_default() += 1;
            }
        }
        for (batch, count) in batches {
            assert_eq!(count, 3, "round {round}: batch {batch} is partly applied");
        }
        store.close().await.unwrap();
    });
}
