//! Multi-Paxos under deterministic simulation (`tessera_tests::sim`): a few hundred seeds,
//! each a different mix of drops, duplicates, delays, partitions, crashes, torn writes, power
//! failures, clock skew, snapshots, client load and, in some, a replica lost for good and
//! replaced through configuration changes, and repairs of damaged data by snapshot. The
//! replicas run inside the server's own host code (`ReplicaHost`: what is applied when, how
//! far logs are compacted); every one checked for safety, linearizability and
//! recovery. A longer
//! soak: `cargo run --release -p tessera-tests --bin paxos-soak -- --seeds 100000`.

use std::collections::BTreeMap;

use tessera_tests::sim::{Options, Report, Simulation};

/// Seeds run in CI; `TESSERA_SIM_SEEDS` overrides.
fn seeds() -> u64 {
    std::env::var("TESSERA_SIM_SEEDS").ok().and_then(|text| text.parse().ok()).unwrap_or(300)
}

fn run(seed: u64, options: Options) -> Report {
    Simulation::new(seed, options).run().unwrap_or_else(|failure| {
        panic!("{failure}\nreproduce: cargo run --release -p tessera-tests --bin paxos-soak -- --seed {seed}")
    })
}

#[test]
fn every_seed_keeps_every_invariant() {
    let mut probes: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut chosen, mut acknowledged, mut reads) = (0, 0, 0);
    for seed in 0..seeds() {
        let report = run(seed, Options::for_seed(seed));
        chosen += report.chosen_slots;
        acknowledged += report.writes_acknowledged;
        reads += report.reads_served;
        for (name, count) in report.probes {
            *probes.entry(name).or_default() += count;
        }
    }
    println!("{chosen} slots chosen, {acknowledged} writes acknowledged, {reads} reads served; probes {probes:?}");
    assert!(acknowledged > 1000 && reads > 1000, "the workload ran");
    // The rare paths ran somewhere among the seeds.
    for probe in [
        "crash",
        "power failure",
        "torn write on crash",
        "partition",
        "link cut",
        "message dropped",
        "message duplicated",
        "write outcome unknown",
        "unknown write was chosen",
        "proposal lost its slot",
        "read refused by a leader without a lease",
        "new leadership",
        "snapshot installed",
        "repair started",
        "entries chosen during an install covered by it",
        "replica lost for good",
        "log replica added",
        "lost replica removed",
        "full replica added",
        "log replica retired",
        "lost replica replaced",
        "last durable write lost",
        "amnesiac replica rejoined",
    ] {
        assert!(probes.get(probe).copied().unwrap_or(0) > 0, "no seed ran {probe:?}: {probes:?}");
    }
}

#[test]
fn a_seed_replays_exactly() {
    let first = run(7, Options::for_seed(7));
    let second = run(7, Options::for_seed(7));
    assert_eq!(format!("{first:?}"), format!("{second:?}"));
}

/// The second planted bug: acceptors promise a new ballot while a leader's lease may hold, so
/// two replicas serve strong reads at once (or a read misses a write); the lease checks and
/// the linearizability checker must notice.
#[test]
fn the_simulator_catches_promising_during_a_lease() {
    let failure = first_failure(|options| options.paxos.unsafe_promise_during_lease = true);
    println!("caught: {}", failure.expect("some seed exposes promising during a lease"));
}

/// The planted bug: acceptors acknowledge entries before they are durable. A crash then loses
/// entries a quorum was counted for, and the simulator must notice.
#[test]
fn the_simulator_catches_acknowledging_before_durable() {
    let failure = first_failure(|options| options.paxos.unsafe_ack_before_durable = true);
    println!("caught: {}", failure.expect("some seed exposes acknowledging before durable"));
}

/// The third planted bug: a replica whose last durable write was lost (a damaged WAL tail)
/// votes at once, as if it had forgotten nothing, rather than rejoining as a non-voting member
/// until a leader elected after its restart has caught it up. It can then join a quorum with a
/// replica that never accepted what it forgot, and a slot's value changes; the checks that one
/// value is chosen per slot and that acknowledged writes stay chosen must notice.
#[test]
fn the_simulator_catches_an_amnesiac_replica_voting() {
    let failure = first_failure(|options| options.paxos.unsafe_amnesiac_votes = true);
    println!("caught: {}", failure.expect("some seed exposes an amnesiac replica voting"));
}

/// The fourth planted bug, in the replica's host (`ReplicaHost`, the code the server runs):
/// entries chosen while a snapshot is being installed are applied at once, beside the partial
/// snapshot, instead of waiting until it is durable and then applying those that follow it. A
/// replica then applies slots out of order, or its snapshot replaces entries it applied; the
/// checks that each replica applies every slot once, in order, and that the states agree must
/// notice.
#[test]
fn the_simulator_catches_applying_during_a_snapshot_install() {
    let failure = first_failure(|options| options.host.unsafe_apply_during_install = true);
    println!("caught: {}", failure.expect("some seed exposes applying during an install"));
}

/// The first failure among the CI seeds with `plant` applied to each seed's options.
fn first_failure(plant: impl Fn(&mut Options)) -> Option<tessera_tests::sim::Failure> {
    (0..seeds()).find_map(|seed| {
        let mut options = Options::for_seed(seed);
        plant(&mut options);
        Simulation::new(seed, options).run().err()
    })
}
