//! `tessera`: commands over the embedded single-node store in `./data` (or `--data DIR`).
//! The network server (`tessera serve`) arrives with the server; until then these commands
//! open the store in-process, do their work durably, and close it.

use std::ops::Bound;
use std::path::PathBuf;
use std::process::ExitCode;

use tessera_engine::{Command, LocalLog, Outcome, ReplicationLog, Store, StoreConfig};

const USAGE: &str = "usage: tessera [--data DIR] COMMAND
commands:
  put PARTITION KEY VALUE   store VALUE under KEY (durable when the command returns)
  get PARTITION KEY         print the value under KEY
  delete PARTITION KEY      remove KEY
  scan PARTITION [LIMIT]    print the partition's entries in key order
  stats                     print the store's WAL and tree figures
  checkpoint                write a checkpoint now";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut data = PathBuf::from("data");
    if args.first().map(String::as_str) == Some("--data") && args.len() >= 2 {
        data = PathBuf::from(args.remove(1));
        args.remove(0);
    }
    let result = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(2 << 20)
        .name("tessera")
        .make()
        .map_err(|error| format!("cannot start the executor: {error}"))
        .and_then(|executor| executor.run(execute(data, args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tessera: {message}");
            ExitCode::FAILURE
        }
    }
}

fn partition(text: Option<&String>) -> Result<u64, String> {
    let text = text.ok_or(USAGE)?;
    text.parse().map_err(|_| format!("partition must be a number below {}, not {text:?}", u64::MAX))
}

async fn execute(data: PathBuf, args: Vec<String>) -> Result<(), String> {
    let command = args.first().ok_or(USAGE)?.as_str();
    let store = Store::open(&data, StoreConfig::default()).await.map_err(|error| error.to_string())?;
    let log = LocalLog::new(store.clone());
    let arg = |index: usize| args.get(index).ok_or_else(|| USAGE.to_string());
    let result = match command {
        "put" => {
            let command = Command::Put { key: arg(2)?.clone().into_bytes(), value: arg(3)?.clone().into_bytes() };
            log.propose(partition(args.get(1))?, command).await.map(drop).map_err(|e| e.to_string())
        }
        "delete" => {
            let command = Command::Delete { key: arg(2)?.clone().into_bytes() };
            match log.propose_applied(partition(args.get(1))?, command).await {
                Ok(Outcome::Previous(None)) => Err(format!("no key {:?}", arg(2)?)),
                other => other.map(drop).map_err(|e| e.to_string()),
            }
        }
        "get" => match store.get(partition(args.get(1))?, arg(2)?.as_bytes()).await {
            Ok(Some(value)) => {
                println!("{}", String::from_utf8_lossy(&value));
                Ok(())
            }
            Ok(None) => Err(format!("no key {:?}", arg(2)?)),
            Err(error) => Err(error.to_string()),
        },
        "scan" => {
            let limit =
                args.get(2).map_or(Ok(usize::MAX), |text| text.parse().map_err(|_| format!("bad limit {text:?}")))?;
            let entries = store
                .scan(partition(args.get(1))?, Bound::Unbounded, Bound::Unbounded, false, limit)
                .await
                .map_err(|error| error.to_string())?;
            for (key, value) in entries {
                println!("{}\t{}", String::from_utf8_lossy(&key), String::from_utf8_lossy(&value));
            }
            Ok(())
        }
        "stats" => {
            println!("data directory   {}", data.display());
            println!("applied LSN      {}", store.applied_lsn());
            println!("next LSN         {}", store.wal().next_lsn());
            println!("WAL segments     {}", store.wal().segments_in_use());
            println!("tree pages       {}", store.tree_pages());
            Ok(())
        }
        "checkpoint" => store.checkpoint().await.map_err(|error| error.to_string()),
        _ => Err(USAGE.to_string()),
    };
    store.close().await.map_err(|error| error.to_string())?;
    result
}
