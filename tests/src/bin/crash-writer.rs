//! Child process of the crash test: writes continuously to a store until killed, printing a
//! line for every write whose future resolved (`A <kind> <keys...>`), flushed at once.
//!
//! Usage: crash-writer DIR ROUND

use std::io::Write;
use std::rc::Rc;

use tessera_engine::{Command, LocalLog, ReplicationLog, Store};
use tessera_tests::{crash_config, partition_for, run, value_for};

const WRITERS: usize = 24;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("DIR"));
    let round: u64 = args.next().expect("ROUND").parse().expect("ROUND is a number");
    run(async move {
        let store = Store::open(&dir, crash_config()).await.expect("store opens");
        let log = Rc::new(LocalLog::new(store));
        let tasks: Vec<_> =
            (0..WRITERS).map(|writer| glommio::spawn_local(write_forever(log.clone(), round, writer))).collect();
        for task in tasks {
            task.await;
        }
    });
}

async fn write_forever(log: Rc<LocalLog>, round: u64, writer: usize) {
    let mut out = std::io::stdout();
    for n in 0u64.. {
        let base = format!("r{round}-w{writer}-n{n}");
        let (kind, keys, command) = match n % 5 {
            // A batch: every key of it lands or none does.
            3 => {
                let keys: Vec<String> = (0..3).map(|j| format!("{base}-b{j}of3")).collect();
                // One partition per batch: the batch keys share their first key's partition.
                let partition = partition_for(&keys[0]);
                let command = Command::Batch(
                    keys.iter()
                        .map(|key| Command::Put { key: key.clone().into_bytes(), value: value_for(key).into() })
                        .collect(),
                );
                ("batch", (partition, keys), command)
            }
            // A delete of the single put two steps back.
            4 => {
                let key = format!("r{round}-w{writer}-n{}", n - 2);
                let command = Command::Delete { key: key.clone().into_bytes() };
                ("delete", (partition_for(&key), vec![key]), command)
            }
            _ => {
                let command = Command::Put { key: base.clone().into_bytes(), value: value_for(&base).into() };
                ("put", (partition_for(&base), vec![base]), command)
            }
        };
        let (partition, keys) = keys;
        log.propose(partition, command).await.expect("write succeeds");
        writeln!(out, "A {kind} {partition} {}", keys.join(" ")).expect("stdout");
        out.flush().expect("stdout");
    }
}
