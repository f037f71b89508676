//! The long Multi-Paxos simulation soak: runs many seeds and stops at the first failure,
//! printing the seed; `--seed S` replays one seed.
//!
//! Usage: paxos-soak [--seeds N] [--from S] [--seed S]

use tessera_tests::sim::{Options, Simulation};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |name: &str| -> Option<u64> {
        let at = args.iter().position(|arg| arg == name)?;
        Some(args.get(at + 1).and_then(|text| text.parse().ok()).unwrap_or_else(|| panic!("{name} takes a number")))
    };
    let (from, count) = match number("--seed") {
        Some(seed) => (seed, 1),
        None => (number("--from").unwrap_or(0), number("--seeds").unwrap_or(10_000)),
    };
    let started = std::time::Instant::now();
    for seed in from..from + count {
        match Simulation::new(seed, Options::for_seed(seed)).run() {
            Ok(report) if count == 1 => println!("{report:?}"),
            Ok(_) => {}
            Err(failure) => {
                eprintln!("{failure}");
                std::process::exit(1);
            }
        }
        if (seed - from + 1) % 1000 == 0 {
            println!("{} seeds passed in {:.0?}", seed - from + 1, started.elapsed());
        }
    }
    println!("seeds {from}..{} passed in {:.1?}", from + count, started.elapsed());
}
