//! Deterministic simulation of one Multi-Paxos replication group: the real protocol core
//! (`tessera_engine::paxos::Replica`) on three simulated nodes, each with a simulated disk,
//! clock and network link, driven with a client workload. One seed decides everything:
//! message delays, drops, duplicates and reordering, partitions, crashes (losing unsynced
//! writes, sometimes tearing the one in flight, sometimes damaging the last durable one so
//! that it is lost and the replica restarts amnesiac), disk latencies, clock offsets and rates, and
//! the workload. The same seed replays the same run exactly.
//!
//! What a run checks, as it goes and at the end:
//! * one value chosen per slot, and every replica applies the same values in slot order;
//! * at most one replica holds a read lease at any moment;
//! * every acknowledged write is chosen, at the slot it was acknowledged for;
//! * the client history of each key is linearizable (reads served under the leader's lease);
//! * after the faults stop, the group elects a leader and every replica catches up (an
//!   amnesiac one rejoins as a voter).
//!
//! Some seeds lose a replica for good (its disk with it). A small control plane in the
//! simulation then changes the configuration one member at a time, through the log: a log
//! replica joins to restore quorum durability, the lost replica is removed, a new full replica
//! joins (by snapshot and log), and the log replica is retired.

pub mod linearizability;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use tessera_engine::partition::host::{HostConfig, ReplicaHost};
use tessera_engine::paxos::{
    Action, Ballot, Config, Durable, Entry, Envelope, Member, MemberKind, Micros, Replica, ReplicaId, Role, Slot, Value,
};

use linearizability::{Operation, RegisterOp};

/// A small deterministic generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Random {
        Random(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }

    /// True with probability `per_million` / 1,000,000.
    pub fn chance(&mut self, per_million: u64) -> bool {
        self.next_u64() % 1_000_000 < per_million
    }
}

/// How a run is shaped; `Options::for_seed` draws fault rates from the seed.
#[derive(Clone, Debug)]
pub struct Options {
    pub paxos: Config,
    /// Simulated time with faults and clients, then time with neither to converge.
    pub active: Micros,
    pub quiet: Micros,
    pub clients: usize,
    pub keys: u64,
    pub drop_per_million: u64,
    pub duplicate_per_million: u64,
    pub delay_max: Micros,
    /// Mean time between fault events (a crash or a partition).
    pub fault_interval: Micros,
    pub disk_latency_max: Micros,
    /// Applied slots between a replica's checkpoints; each checkpoint compacts its log.
    pub checkpoint_every: u64,
    /// The replicas' host: what it applies when, and how far it compacts (the server's own
    /// code, `ReplicaHost`).
    pub host: HostConfig,
}

impl Options {
    /// Fault rates drawn from the seed, so seeds differ in kind as well as in detail.
    pub fn for_seed(seed: u64) -> Options {
        let mut random = Random::new(seed ^ 0x5EED);
        Options {
            paxos: Config {
                election_min: 150_000,
                election_max: 300_000,
                heartbeat: 20_000,
                lease: 120_000,
                drift_ppm: 10_000,
                entries_per_message_max: 16,
                entries_in_flight_max: 256,
                unsafe_ack_before_durable: false,
                unsafe_promise_during_lease: false,
                unsafe_amnesiac_votes: false,
            },
            active: 4_000_000,
            quiet: 3_000_000,
            clients: random.between(2, 6) as usize,
            keys: random.between(1, 4),
            drop_per_million: random.between(0, 50_000),
            duplicate_per_million: random.between(0, 30_000),
            delay_max: random.between(200, 20_000),
            fault_interval: random.between(100_000, 1_500_000),
            disk_latency_max: random.between(100, 5_000),
            checkpoint_every: random.between(10, 300),
            host: HostConfig { log_retain: random.between(20, 2_000), unsafe_apply_during_install: false },
        }
    }
}

/// What a run saw, for the caller to print and to check that rare paths ran.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub chosen_slots: u64,
    pub writes_acknowledged: u64,
    pub reads_served: u64,
    /// How often each notable path ran (FoundationDB's code probes).
    pub probes: BTreeMap<&'static str, u64>,
}

/// A run that broke an invariant: the seed reproduces it.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    pub at: Micros,
    pub what: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seed {} failed at {} us: {}", self.seed, self.at, self.what)
    }
}

/// The group's first members.
const FIRST_MEMBERS: [ReplicaId; 3] = [1, 2, 3];
const TICK: Micros = 2_000;
const CLIENT_TIMEOUT: Micros = 400_000;
const CLIENT_DELAY_MAX: Micros = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Request {
    Write { key: u64, value: u64 },
    Read { key: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    Written {
        slot: Slot,
    },
    Read {
        value: u64,
    },
    /// Not taken (not the leader, no lease, or lost its slot): try elsewhere.
    Refused {
        leader: Option<ReplicaId>,
    },
}

#[derive(Debug)]
enum Event {
    Tick(ReplicaId),
    /// A message, for the life (epoch) of its receiver it was sent to: links are connections,
    /// so nothing sent to a node reaches it after it restarts.
    Deliver(Envelope, u64),
    DiskDone {
        node: ReplicaId,
        epoch: u64,
        id: u64,
    },
    ClientRequest {
        node: ReplicaId,
        client: usize,
        attempt: u64,
        request: Request,
    },
    ClientReply {
        client: usize,
        attempt: u64,
        reply: Reply,
    },
    ClientTimeout {
        client: usize,
        attempt: u64,
    },
    ClientStart(usize),
    ClientRetry(usize),
    Fault,
    Restart(ReplicaId),
    Heal(ReplicaId),
    HealLink(ReplicaId, ReplicaId),
    /// The control plane's next step after a replica was lost.
    Admin,
    /// A state machine snapshot in transit (host to host, beside the protocol's messages).
    Snapshot {
        from: ReplicaId,
        to: ReplicaId,
        ballot: Ballot,
        slot: Slot,
        state: MachineState,
    },
    /// A received snapshot is durable on its receiver's disk (for the life `epoch`).
    Installed {
        epoch: u64,
        from: ReplicaId,
        to: ReplicaId,
        ballot: Ballot,
        slot: Slot,
        state: MachineState,
    },
    /// A replica installing a snapshot (a repair) asks the leader it knows for one.
    AskSnapshot(ReplicaId, u64),
}

struct Clock {
    offset: Micros,
    rate_ppm: i64,
}

impl Clock {
    fn local(&self, now: Micros) -> Micros {
        let drift = (now as i128 * self.rate_ppm as i128 / 1_000_000) as i64;
        (self.offset as i64 + now as i64 + drift) as Micros
    }
}

/// What a durable write replaced: the promise, and each slot's entry before it.
type Undo = (Ballot, Vec<(Slot, Option<Entry>)>);

struct Node {
    id: ReplicaId,
    host: Option<ReplicaHost>,
    /// Bumped at each crash, so completions of a previous life are ignored.
    epoch: u64,
    clock: Clock,
    durable: Durable,
    /// Writes asked for and not yet durable, oldest first.
    writing: VecDeque<(u64, Action)>,
    /// What the last durable write replaced (the promise, and each slot's entry before), so
    /// that damage to it can be simulated: it is then lost, as a damaged WAL tail is.
    last_write: Option<Undo>,
    /// The host's durable mark: the replica lost a durable write and starts amnesiac
    /// (`Replica::set_amnesiac`) until it rejoins.
    amnesiac: bool,
    disk_free_at: Micros,
    applied: Slot,
    state: MachineState,
    /// The durable checkpoint of the state machine: the slot it covers and its state.
    /// (Written at once: the simulated disk's latency is on the log.)
    checkpoint: (Slot, MachineState),
    /// Proposals waiting for their slot: slot, (command id, client, attempt).
    proposals: BTreeMap<Slot, (u64, usize, u64)>,
    isolated: bool,
    /// Gone for good, disk and all.
    lost: bool,
    /// A log replica: it keeps no state machine checkpoints, so it never compacts its log.
    log_only: bool,
}

/// The replicated state machine: the registers, and the configuration in force.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MachineState {
    registers: BTreeMap<u64, u64>,
    members: Vec<Member>,
}

struct Client {
    attempt: u64,
    /// The operation in progress: its request, call time, and the node it tries.
    current: Option<(Request, Micros)>,
    target: ReplicaId,
    tries: u32,
}

/// A simulation of one seed.
pub struct Simulation {
    seed: u64,
    options: Options,
    random: Random,
    now: Micros,
    sequence: u64,
    events: BinaryHeap<Reverse<(Micros, u64, usize)>>,
    payloads: BTreeMap<usize, Event>,
    nodes: Vec<Node>,
    clients: Vec<Client>,
    next_value: u64,
    chosen: BTreeMap<Slot, Value>,
    /// Per key: the history of operations that completed, or whose outcome is unknown.
    history: BTreeMap<u64, Vec<Operation>>,
    /// Writes whose client gave up: (key, value, call).
    unknown_writes: Vec<(u64, u64, Micros)>,
    /// Acknowledged writes: command id and slot.
    acknowledged: Vec<(u64, Slot)>,
    leaderships: std::collections::BTreeSet<tessera_engine::paxos::Ballot>,
    /// The replica lost for good, and the log and full replicas that replace it.
    replacement: Option<Replacement>,
    /// Links cut (both ways), as (lower id, higher id).
    cut: std::collections::BTreeSet<(ReplicaId, ReplicaId)>,
    report: Report,
}

#[derive(Clone, Copy, Debug)]
struct Replacement {
    lost: ReplicaId,
    log: ReplicaId,
    full: ReplicaId,
}

/// A node that has never run: its first state is `first` (an empty machine with the
/// configuration it joins).
fn new_node(id: ReplicaId, random: &mut Random, drift: i64, first: MachineState) -> Node {
    Node {
        id,
        host: None,
        epoch: 0,
        clock: Clock {
            offset: random.between(0, 10_000_000_000),
            rate_ppm: random.between(0, 2 * drift as u64) as i64 - drift,
        },
        durable: Durable::default(),
        writing: VecDeque::new(),
        last_write: None,
        amnesiac: false,
        disk_free_at: 0,
        applied: 0,
        state: first.clone(),
        checkpoint: (0, first),
        proposals: BTreeMap::new(),
        isolated: false,
        lost: false,
        log_only: false,
    }
}

impl Simulation {
    pub fn new(seed: u64, options: Options) -> Simulation {
        let mut random = Random::new(seed);
        let drift = options.paxos.drift_ppm as i64;
        let first = MachineState {
            registers: BTreeMap::new(),
            members: FIRST_MEMBERS.iter().map(|&id| Member::full(id)).collect(),
        };
        let nodes = FIRST_MEMBERS.iter().map(|&id| new_node(id, &mut random, drift, first.clone())).collect();
        let clients = (0..options.clients)
            .map(|index| Client { attempt: 0, current: None, target: FIRST_MEMBERS[index % 3], tries: 0 })
            .collect();
        Simulation {
            seed,
            options,
            random,
            now: 0,
            sequence: 0,
            events: BinaryHeap::new(),
            payloads: BTreeMap::new(),
            nodes,
            clients,
            next_value: 1,
            chosen: BTreeMap::new(),
            history: BTreeMap::new(),
            unknown_writes: Vec::new(),
            acknowledged: Vec::new(),
            leaderships: std::collections::BTreeSet::new(),
            replacement: None,
            cut: std::collections::BTreeSet::new(),
            report: Report { seed, ..Report::default() },
        }
    }

    /// The replica that leads, if one does.
    fn leader(&self) -> Option<ReplicaId> {
        self.nodes
            .iter()
            .find(|node| node.host.as_ref().is_some_and(|host| host.replica().role() == Role::Leader))
            .map(|node| node.id)
    }

    /// The node after `id`, in id order, for a client trying another.
    fn next_node(&self, id: ReplicaId) -> ReplicaId {
        id % self.nodes.len() as ReplicaId + 1
    }

    /// Runs to the end and checks everything.
    pub fn run(mut self) -> Result<Report, Failure> {
        for id in FIRST_MEMBERS {
            self.start(id);
        }
        for client in 0..self.clients.len() {
            let at = self.random.between(0, 50_000);
            self.schedule(at, Event::ClientStart(client));
        }
        let first_fault = self.random.between(0, self.options.fault_interval);
        self.schedule(first_fault, Event::Fault);
        let end = self.options.active + self.options.quiet;
        while let Some(Reverse((at, _, key))) = self.events.pop() {
            if at > end {
                break;
            }
            self.now = at;
            let event = self.payloads.remove(&key).expect("every event has its payload");
            self.handle(event)?;
            self.check_leases()?;
        }
        self.finish()
    }

    fn fail(&self, what: impl Into<String>) -> Failure {
        Failure { seed: self.seed, at: self.now, what: what.into() }
    }

    fn probe(&mut self, name: &'static str) {
        *self.report.probes.entry(name).or_default() += 1;
    }

    fn schedule(&mut self, delay: Micros, event: Event) {
        self.sequence += 1;
        let key = self.sequence as usize;
        self.events.push(Reverse((self.now + delay, self.sequence, key)));
        self.payloads.insert(key, event);
    }

    fn node(&mut self, id: ReplicaId) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    fn active(&self) -> bool {
        self.now < self.options.active
    }

    // ------------------------------------------------------------------ nodes

    fn start(&mut self, id: ReplicaId) {
        let (now, config, seed) = (self.now, self.options.paxos.clone(), self.random.next_u64());
        let host = self.options.host;
        let node = self.node(id);
        let local = node.clock.local(now);
        // The state machine restarts from its checkpoint; the log replays after it.
        node.applied = node.checkpoint.0;
        node.state = node.checkpoint.1.clone();
        node.proposals.clear();
        let members = node.state.members.clone();
        let mut replica = Replica::new(config, id, &members, node.durable.clone(), node.applied, local, seed);
        if node.amnesiac {
            replica.set_amnesiac();
            // Without effect (a planted bug), the mark goes: nothing would clear it.
            node.amnesiac = replica.amnesiac();
        }
        node.host = Some(ReplicaHost::new(replica, host));
        let jitter = self.random.between(0, TICK);
        self.schedule(jitter, Event::Tick(id));
    }

    fn crash(&mut self, id: ReplicaId) {
        let tear = self.random.chance(500_000);
        let keep = self.random.next_u64();
        let node = self.node(id);
        node.host = None;
        node.epoch += 1;
        // The write in flight may be torn: a prefix of its entries reached the disk.
        if let Some((_, Action::Persist { promised, entries, .. })) = node.writing.pop_front() {
            if tear && !entries.is_empty() {
                let kept = (keep % (entries.len() as u64 + 1)) as usize;
                for (slot, entry) in entries.into_iter().take(kept) {
                    node.durable.entries.insert(slot, entry);
                }
                if let Some(promised) = promised.filter(|_| kept > 0) {
                    node.durable.promised = node.durable.promised.max(promised);
                }
                self.probe("torn write on crash");
            }
        }
        let node = self.node(id);
        node.writing.clear();
        node.disk_free_at = 0;
        self.probe("crash");
    }

    /// Crashes `id`, and damages its last durable write (acknowledged, perhaps): recovery
    /// finds the damage and ends the log before it, so the write is lost and the replica
    /// restarts amnesiac.
    fn crash_damaging_last_write(&mut self, id: ReplicaId) {
        self.crash(id);
        let node = self.node(id);
        let Some((promised, slots)) = node.last_write.take() else { return };
        node.durable.promised = promised;
        for (slot, entry) in slots {
            match entry {
                Some(entry) => node.durable.entries.insert(slot, entry),
                None => node.durable.entries.remove(&slot),
            };
        }
        node.amnesiac = true;
        self.probe("last durable write lost");
    }

    fn handle(&mut self, event: Event) -> Result<(), Failure> {
        match event {
            Event::Tick(id) => {
                let now = self.now;
                let node = self.node(id);
                let local = node.clock.local(now);
                let Some(host) = node.host.as_mut() else { return Ok(()) };
                host.replica_mut().tick(local);
                self.schedule(TICK, Event::Tick(id));
                self.run_actions(id)?;
            }
            Event::Deliver(envelope, epoch) => {
                let now = self.now;
                let node = self.node(envelope.to);
                if node.epoch != epoch {
                    return Ok(());
                }
                let local = node.clock.local(now);
                if let Some(host) = node.host.as_mut() {
                    host.replica_mut().step(local, envelope.from, envelope.message);
                    self.run_actions(envelope.to)?;
                }
            }
            Event::DiskDone { node: id, epoch, id: write } => {
                let now = self.now;
                let node = self.node(id);
                if node.epoch != epoch {
                    return Ok(());
                }
                let local = node.clock.local(now);
                let (first, action) = node.writing.pop_front().expect("a write completes that was started");
                assert_eq!(first, write, "the disk completes writes in order");
                if let Action::Persist { promised, entries, .. } = action {
                    let before = entries.iter().map(|(slot, _)| (*slot, node.durable.entries.get(slot).cloned()));
                    node.last_write = Some((node.durable.promised, before.collect()));
                    if let Some(promised) = promised {
                        node.durable.promised = node.durable.promised.max(promised);
                    }
                    node.durable.entries.extend(entries);
                }
                node.host.as_mut().expect("a node with writes in flight is up").replica_mut().persisted(local, write);
                self.run_actions(id)?;
            }
            Event::ClientStart(client) => self.client_next(client),
            Event::ClientRetry(client) => self.client_send(client),
            Event::ClientRequest { node, client, attempt, request } => self.serve(node, client, attempt, request)?,
            Event::ClientReply { client, attempt, reply } => self.client_reply(client, attempt, reply),
            Event::ClientTimeout { client, attempt } => {
                if self.clients[client].attempt == attempt {
                    self.client_gave_up(client);
                }
            }
            Event::Fault => self.fault(),
            Event::Restart(id) => {
                if self.node(id).host.is_none() && !self.node(id).lost {
                    self.start(id);
                }
            }
            Event::Admin => self.admin()?,
            Event::Heal(id) => self.node(id).isolated = false,
            Event::HealLink(a, b) => {
                self.cut.remove(&(a, b));
            }
            Event::Snapshot { from, to, ballot, slot, state } => {
                let disk_latency = self.random.between(20, self.options.disk_latency_max);
                let node = self.node(to);
                let Some(host) = node.host.as_mut() else { return Ok(()) };
                if host.install_floor().is_some_and(|floor| slot < floor) {
                    // Older than what the replica had committed before its repair.
                    self.probe("snapshot refused: older than the repair needs");
                    return Ok(());
                }
                if !host.installing() && slot <= node.applied {
                    let members = state.members;
                    host.replica_mut().install_snapshot(slot, from, ballot, members);
                    return self.run_actions(to);
                }
                // Received: what the replica chooses waits until the snapshot is durable.
                host.begin_install();
                let epoch = node.epoch;
                self.schedule(disk_latency, Event::Installed { epoch, from, to, ballot, slot, state });
                self.run_actions(to)?;
            }
            Event::Installed { epoch, from, to, ballot, slot, state } => {
                let node = self.node(to);
                if node.epoch != epoch {
                    return Ok(());
                }
                let Some(host) = node.host.as_mut() else { return Ok(()) };
                if !host.installing() {
                    // Another snapshot was installed first.
                    return Ok(());
                }
                let members = state.members.clone();
                node.applied = slot;
                node.state = state.clone();
                node.checkpoint = (slot, state);
                node.durable.entries = node.durable.entries.split_off(&(slot + 1));
                // Proposals waiting on covered slots learn nothing: their clients time out.
                node.proposals = node.proposals.split_off(&(slot + 1));
                let covered = host.end_install(slot, from, ballot, members);
                self.probe("snapshot installed");
                if !covered.is_empty() {
                    self.probe("entries chosen during an install covered by it");
                }
                self.run_actions(to)?;
            }
            Event::AskSnapshot(id, epoch) => self.ask_snapshot(id, epoch),
        }
        Ok(())
    }

    /// A replica repairing its data asks the leader it knows for a snapshot, every 100 ms
    /// until one is installed (`ReplicaHost::begin_repair`).
    fn ask_snapshot(&mut self, id: ReplicaId, epoch: u64) {
        let node = self.node(id);
        if node.epoch != epoch || !node.host.as_ref().is_some_and(ReplicaHost::installing) {
            return;
        }
        self.schedule(100_000, Event::AskSnapshot(id, epoch));
        let leader =
            self.node(id).host.as_ref().and_then(|host| host.replica().leader()).filter(|&leader| leader != id);
        let Some(leader) = leader else { return };
        let cut = self.cut.contains(&(id.min(leader), id.max(leader)));
        let sender = self.node(leader);
        let Some(ballot) = sender.host.as_ref().and_then(|host| host.replica().leading()) else { return };
        if sender.isolated || self.node(id).isolated || cut {
            return;
        }
        let (slot, state) = (self.node(leader).applied, self.node(leader).state.clone());
        let delay = self.random.between(1, self.options.delay_max);
        self.schedule(delay, Event::Snapshot { from: leader, to: id, ballot, slot, state });
    }

    /// The scrub finds `id`'s data damaged: its replica stops leading and waits for a snapshot
    /// that reaches what it had committed (the damage itself is not modelled: the state is
    /// replaced whole by the snapshot).
    fn damage(&mut self, id: ReplicaId) {
        let now = self.now;
        let node = self.node(id);
        let local = node.clock.local(now);
        let (epoch, log_only) = (node.epoch, node.log_only);
        let Some(host) = node.host.as_mut().filter(|_| !log_only) else { return };
        if host.begin_repair(local) {
            self.probe("repair started");
            // Its step down's messages go out with its next tick's.
            self.schedule(1, Event::AskSnapshot(id, epoch));
        }
    }

    fn fault(&mut self) {
        let alive: Vec<ReplicaId> = self.nodes.iter().filter(|node| !node.lost).map(|node| node.id).collect();
        if !self.active() {
            // The quiet period: everything heals and restarts.
            self.cut.clear();
            for id in alive {
                self.node(id).isolated = false;
                if self.node(id).host.is_none() {
                    self.start(id);
                }
            }
            return;
        }
        let id = alive[self.random.between(0, alive.len() as u64 - 1) as usize];
        let leader_first = self.random.chance(500_000);
        let target = if leader_first { self.leader().unwrap_or(id) } else { id };
        let down = self.random.between(10_000, 1_000_000);
        let member = self.nodes.iter().any(|node| {
            node.host.as_ref().map(ReplicaHost::replica).is_some_and(|replica| {
                replica.role() == Role::Leader && replica.members().contains(&Member::full(target))
            })
        });
        // One replica at most is lost for good per run, a full member of the group.
        let none_lost = self.nodes.iter().all(|node| !node.lost);
        // A group that lost a durable write of a second replica, or lost one for good while
        // another is amnesiac, has no quorum of voters left to repair from: one fault at a time.
        let none_amnesiac = self.nodes.iter().all(|node| !node.amnesiac);
        // Likewise a repair (its data is gone until a snapshot arrives) beside another fault
        // that costs a replica its data.
        let none_repairing = self.nodes.iter().all(|node| node.host.as_ref().is_none_or(|host| !host.installing()));
        let one_fault = none_lost && none_amnesiac && none_repairing;
        if one_fault && member && self.random.chance(80_000) {
            self.lose(target);
        } else if self.random.chance(150_000) {
            // A power failure: every replica stops at once, losing what it had not synced.
            self.probe("power failure");
            for id in alive {
                if self.node(id).host.is_some() {
                    self.crash(id);
                    let down = self.random.between(10_000, 1_000_000);
                    self.schedule(down, Event::Restart(id));
                }
            }
        } else if self.random.chance(100_000) {
            if one_fault && self.replacement.is_none() {
                self.damage(target);
            }
        } else if self.random.chance(500_000) {
            if self.node(target).host.is_some() {
                if one_fault && self.replacement.is_none() && self.random.chance(250_000) {
                    self.crash_damaging_last_write(target);
                } else {
                    self.crash(target);
                }
                self.schedule(down, Event::Restart(target));
            }
        } else if self.random.chance(500_000) {
            self.node(target).isolated = true;
            self.probe("partition");
            let cut = self.random.between(10_000, 1_500_000);
            self.schedule(cut, Event::Heal(target));
        } else {
            // One link cut, both ways: the two nodes still hear the third.
            let other = alive[self.random.between(0, alive.len() as u64 - 1) as usize];
            if other != target {
                self.cut.insert((target.min(other), target.max(other)));
                self.probe("link cut");
                let cut = self.random.between(10_000, 1_500_000);
                self.schedule(cut, Event::HealLink(target.min(other), target.max(other)));
            }
        }
        let next = self.random.between(1, 2 * self.options.fault_interval);
        let next = next.min(self.options.active.saturating_sub(self.now) + 1);
        self.schedule(next, Event::Fault);
    }

    /// Loses `id` for good, and starts the control plane's replacement of it.
    fn lose(&mut self, id: ReplicaId) {
        if self.node(id).host.is_some() {
            self.crash(id);
        }
        let node = self.node(id);
        node.lost = true;
        node.durable = Durable::default();
        self.probe("replica lost for good");
        let count = self.nodes.len() as ReplicaId;
        self.replacement = Some(Replacement { lost: id, log: count + 1, full: count + 2 });
        self.schedule(1_000, Event::Admin);
    }

    /// One step of replacing a lost replica, each a configuration change through the log at
    /// the leader, once the previous one is committed: add a log replica, remove the lost
    /// replica, add a new full replica, and once it has caught up, remove the log replica.
    fn admin(&mut self) -> Result<(), Failure> {
        let Some(Replacement { lost, log, full }) = self.replacement else { return Ok(()) };
        self.schedule(50_000, Event::Admin);
        let Some(leader) = self.leader() else { return Ok(()) };
        let now = self.now;
        let node = self.node(leader);
        let local = node.clock.local(now);
        let replica = node.host.as_ref().expect("a leader is up").replica();
        if !replica.members_committed() {
            return Ok(());
        }
        let current = replica.members().to_vec();
        let commit = replica.commit();
        let has = |id: ReplicaId| current.iter().any(|member| member.id == id);
        let mut next = current.clone();
        let step = if has(lost) && !has(log) {
            next.push(Member::log(log));
            "log replica added"
        } else if has(lost) {
            next.retain(|member| member.id != lost);
            "lost replica removed"
        } else if !has(full) {
            next.push(Member::full(full));
            "full replica added"
        } else if has(log) && self.nodes.get(full as usize - 1).is_some_and(|node| node.applied + 16 >= commit) {
            next.retain(|member| member.id != log);
            "log replica retired"
        } else {
            if !has(log) {
                self.replacement = None;
                self.probe("lost replica replaced");
            }
            return Ok(());
        };
        // A joining replica starts empty, with the configuration it joins.
        let joining: Vec<ReplicaId> =
            next.iter().map(|member| member.id).filter(|&id| id as usize > self.nodes.len()).collect();
        for id in joining {
            let drift = self.options.paxos.drift_ppm as i64;
            let first = MachineState { registers: BTreeMap::new(), members: next.clone() };
            let mut node = new_node(id, &mut self.random, drift, first);
            node.log_only = next.contains(&Member::log(id));
            assert_eq!(node.id as usize, self.nodes.len() + 1, "new replicas take the next id");
            self.nodes.push(node);
            self.start(id);
        }
        let replica = self.node(leader).host.as_mut().expect("a leader is up").replica_mut();
        if replica.propose_members(local, next).is_ok() {
            replica.flush(local);
            self.probe(step);
            self.run_actions(leader)?;
        }
        Ok(())
    }

    /// Carries out what a replica asked for.
    fn run_actions(&mut self, id: ReplicaId) -> Result<(), Failure> {
        let actions = match self.node(id).host.as_mut() {
            Some(host) => host.drain(),
            None => return Ok(()),
        };
        for action in actions {
            match action {
                Action::Send(envelope) => self.send(envelope),
                Action::Persist { id: write, .. } => {
                    let latency = self.random.between(20, self.options.disk_latency_max);
                    let now = self.now;
                    let node = self.node(id);
                    let done = node.disk_free_at.max(now) + latency;
                    node.disk_free_at = done;
                    let epoch = node.epoch;
                    node.writing.push_back((write, action));
                    self.schedule(done - now, Event::DiskDone { node: id, epoch, id: write });
                }
                Action::Apply { slot, value } => self.apply(id, slot, value)?,
                Action::SendSnapshot { to } => {
                    let node = self.node(id);
                    let Some(ballot) = node.host.as_ref().and_then(|host| host.replica().leading()) else { continue };
                    let (slot, state) = (node.applied, node.state.clone());
                    if !self.node(id).isolated && !self.node(to).isolated {
                        let delay = self.random.between(1, self.options.delay_max);
                        self.schedule(delay, Event::Snapshot { from: id, to, ballot, slot, state });
                    }
                }
                Action::StartLog { to, slot, members } => {
                    // A log replica gets no state: an empty machine with the configuration.
                    let node = self.node(id);
                    let Some(ballot) = node.host.as_ref().and_then(|host| host.replica().leading()) else { continue };
                    let state = MachineState { registers: BTreeMap::new(), members };
                    if !self.node(id).isolated && !self.node(to).isolated {
                        let delay = self.random.between(1, self.options.delay_max);
                        self.schedule(delay, Event::Snapshot { from: id, to, ballot, slot, state });
                    }
                }
                Action::Rejoined { .. } => {
                    self.node(id).amnesiac = false;
                    self.probe("amnesiac replica rejoined");
                }
                // No correct group gets near the last round.
                Action::Report(anomaly) => return Err(self.fail(format!("replica {id}: {anomaly}"))),
            }
        }
        Ok(())
    }

    fn send(&mut self, envelope: Envelope) {
        let (from, to) = (envelope.from, envelope.to);
        if self.node(from).isolated || self.node(to).isolated || self.cut.contains(&(from.min(to), from.max(to))) {
            return;
        }
        if self.random.chance(self.options.drop_per_million) {
            self.probe("message dropped");
            return;
        }
        if self.random.chance(self.options.duplicate_per_million) {
            let delay = self.random.between(1, self.options.delay_max);
            let epoch = self.node(to).epoch;
            self.schedule(delay, Event::Deliver(envelope.clone(), epoch));
            self.probe("message duplicated");
        }
        let delay = self.random.between(1, self.options.delay_max);
        let epoch = self.node(to).epoch;
        self.schedule(delay, Event::Deliver(envelope, epoch));
    }

    fn apply(&mut self, id: ReplicaId, slot: Slot, value: Value) -> Result<(), Failure> {
        let applied = self.node(id).applied;
        if slot != applied + 1 {
            return Err(self.fail(format!("replica {id} applied slot {slot} after slot {applied}")));
        }
        let every = self.options.checkpoint_every;
        let node = self.node(id);
        node.applied = slot;
        match &value {
            Value::Command { bytes, .. } => {
                let (key, written) = decode(bytes);
                node.state.registers.insert(key, written);
            }
            Value::Members(members) => node.state.members = members.clone(),
            Value::Noop => {}
        }
        // A log replica has no state machine to checkpoint, so it keeps its log: full replicas
        // that fall behind may need those entries from it.
        if !node.log_only && slot >= node.checkpoint.0 + every {
            node.checkpoint = (slot, node.state.clone());
            let host = node.host.as_mut().expect("an applying replica is up");
            host.compact(slot, None);
            // What the log no longer holds, the WAL need not either.
            node.durable.entries = node.durable.entries.split_off(&host.replica().log_start());
        }
        let waiting = node.proposals.remove(&slot);
        match self.chosen.get(&slot) {
            Some(chosen) if *chosen != value => {
                return Err(
                    self.fail(format!("two values chosen for slot {slot}: {chosen:?} and, at replica {id}, {value:?}"))
                );
            }
            Some(_) => {}
            None => {
                self.chosen.insert(slot, value.clone());
                self.report.chosen_slots += 1;
            }
        }
        if let Some((command, client, attempt)) = waiting {
            let reply = match value {
                Value::Command { id: chosen, .. } if chosen == command => Reply::Written { slot },
                _ => {
                    self.probe("proposal lost its slot");
                    Reply::Refused { leader: None }
                }
            };
            self.reply(client, attempt, reply);
        }
        Ok(())
    }

    /// At most one replica may hold a read lease at any moment; counts leaderships.
    fn check_leases(&mut self) -> Result<(), Failure> {
        for node in &self.nodes {
            if let Some(ballot) = node.host.as_ref().and_then(|host| host.replica().leading()) {
                if self.leaderships.insert(ballot) {
                    *self.report.probes.entry("new leadership").or_default() += 1;
                }
            }
        }
        let holders: Vec<ReplicaId> = self
            .nodes
            .iter()
            .filter(|node| node.host.as_ref().is_some_and(|host| host.replica().can_read(node.clock.local(self.now))))
            .map(|node| node.id)
            .collect();
        if holders.len() > 1 {
            return Err(self.fail(format!("replicas {holders:?} hold read leases at once")));
        }
        Ok(())
    }

    // ------------------------------------------------------------------ clients

    fn client_next(&mut self, client: usize) {
        if !self.active() {
            return;
        }
        let key = self.random.between(1, self.options.keys);
        let request = if self.random.chance(500_000) {
            let value = self.next_value;
            self.next_value += 1;
            Request::Write { key, value }
        } else {
            Request::Read { key }
        };
        self.clients[client].current = Some((request, self.now));
        self.clients[client].tries = 0;
        self.client_send(client);
    }

    fn client_send(&mut self, client: usize) {
        let Some((request, _)) = self.clients[client].current else { return };
        self.clients[client].attempt += 1;
        self.clients[client].tries += 1;
        let (attempt, node) = (self.clients[client].attempt, self.clients[client].target);
        let delay = self.random.between(1, CLIENT_DELAY_MAX);
        self.schedule(delay, Event::ClientRequest { node, client, attempt, request });
        self.schedule(CLIENT_TIMEOUT, Event::ClientTimeout { client, attempt });
    }

    fn reply(&mut self, client: usize, attempt: u64, reply: Reply) {
        let delay = self.random.between(1, CLIENT_DELAY_MAX);
        self.schedule(delay, Event::ClientReply { client, attempt, reply });
    }

    fn serve(&mut self, id: ReplicaId, client: usize, attempt: u64, request: Request) -> Result<(), Failure> {
        let now = self.now;
        let command_id = (client as u64) << 32 | attempt;
        let node = &mut self.nodes[id as usize - 1];
        let local = node.clock.local(now);
        let Some(replica) = node.host.as_mut().map(ReplicaHost::replica_mut) else { return Ok(()) };
        if node.isolated {
            return Ok(());
        }
        let mut refused_without_lease = false;
        let reply = match request {
            Request::Write { key, value } => match replica.propose(local, command_id, encode(key, value)) {
                Ok(slot) => {
                    replica.flush(local);
                    node.proposals.insert(slot, (command_id, client, attempt));
                    self.run_actions(id)?;
                    return Ok(());
                }
                Err(tessera_engine::paxos::ProposeError::NotLeader { leader }) => Reply::Refused { leader },
            },
            Request::Read { key } => {
                if replica.can_read(local) {
                    Reply::Read { value: node.state.registers.get(&key).copied().unwrap_or(0) }
                } else {
                    refused_without_lease = replica.role() == Role::Leader;
                    Reply::Refused { leader: replica.leader().filter(|&leader| leader != id) }
                }
            }
        };
        if refused_without_lease {
            self.probe("read refused by a leader without a lease");
        }
        self.reply(client, attempt, reply);
        Ok(())
    }

    fn client_reply(&mut self, client: usize, attempt: u64, reply: Reply) {
        if self.clients[client].attempt != attempt {
            return;
        }
        let Some((request, call)) = self.clients[client].current else { return };
        match (reply, request) {
            (Reply::Written { slot }, Request::Write { key, value }) => {
                let command_id = (client as u64) << 32 | attempt;
                self.acknowledged.push((command_id, slot));
                self.report.writes_acknowledged += 1;
                self.record(key, Operation { call, ret: Some(self.now), op: RegisterOp::Write(value) });
            }
            (Reply::Read { value }, Request::Read { key }) => {
                self.report.reads_served += 1;
                self.record(key, Operation { call, ret: Some(self.now), op: RegisterOp::Read(value) });
            }
            (Reply::Refused { leader }, _) => {
                // Not taken: try the hinted leader, or the next replica, after a pause. The
                // bumped attempt retires this attempt's timeout.
                let target = self.clients[client].target;
                self.clients[client].target = leader.unwrap_or_else(|| self.next_node(target));
                self.clients[client].attempt += 1;
                if self.clients[client].tries < 50 {
                    let pause = self.random.between(1_000, 20_000);
                    self.schedule(pause, Event::ClientRetry(client));
                    return;
                }
                self.probe("client gave up after refusals");
            }
            _ => unreachable!("replies match their requests"),
        }
        self.clients[client].current = None;
        let think = self.random.between(100, 10_000);
        self.schedule(think, Event::ClientStart(client));
    }

    fn client_gave_up(&mut self, client: usize) {
        let Some((request, call)) = self.clients[client].current.take() else { return };
        if let Request::Write { key, value } = request {
            // The write may or may not have been chosen: decided at the end.
            self.unknown_writes.push((key, value, call));
            self.probe("write outcome unknown");
        }
        self.clients[client].target = self.next_node(self.clients[client].target);
        self.clients[client].attempt += 1;
        let think = self.random.between(100, 10_000);
        self.schedule(think, Event::ClientStart(client));
    }

    fn record(&mut self, key: u64, operation: Operation) {
        self.history.entry(key).or_default().push(operation);
    }

    // ------------------------------------------------------------------ the end

    fn finish(mut self) -> Result<Report, Failure> {
        // Liveness: after the quiet period every replica is up and has applied everything.
        let highest = self.chosen.keys().next_back().copied().unwrap_or(0);
        let leaders = self
            .nodes
            .iter()
            .filter(|node| node.host.as_ref().is_some_and(|h| h.replica().role() == Role::Leader))
            .count();
        if leaders != 1 {
            return Err(self.fail(format!("{leaders} leaders after the quiet period; {}", self.describe())));
        }
        let leader = self.leader().expect("one leader");
        let members: Vec<Member> = self.node(leader).host.as_ref().expect("up").replica().members().to_vec();
        let in_config = |node: &Node| members.iter().any(|member| member.id == node.id);
        if let Some(replacement) = self.replacement {
            return Err(self.fail(format!("the replacement {replacement:?} did not finish: members {members:?}")));
        }
        if members.iter().filter(|member| member.kind == MemberKind::Full).count() != 3 || members.len() != 3 {
            return Err(self.fail(format!("the group ended with members {members:?}")));
        }
        for node in self.nodes.iter().filter(|node| in_config(node)) {
            if node.applied < highest {
                return Err(self.fail(format!(
                    "replica {} applied {} of {highest} chosen slots after the quiet period; {}",
                    node.id,
                    node.applied,
                    self.describe()
                )));
            }
        }
        // An amnesiac replica has been made to rejoin by an election it saw.
        if let Some(node) = self.nodes.iter().find(|node| in_config(node) && node.amnesiac) {
            return Err(self.fail(format!(
                "replica {} is still amnesiac after the quiet period; {}",
                node.id,
                self.describe()
            )));
        }
        let state = self.node(leader).state.clone();
        if self.nodes.iter().filter(|node| in_config(node)).any(|node| node.state != state) {
            return Err(self.fail("replicas' states differ after applying the same slots"));
        }
        // Every acknowledged write is chosen at its slot.
        for &(command, slot) in &self.acknowledged {
            match self.chosen.get(&slot) {
                Some(Value::Command { id, .. }) if *id == command => {}
                other => {
                    return Err(self.fail(format!(
                        "acknowledged write {command:#x} at slot {slot} was lost: the slot holds {other:?}"
                    )))
                }
            }
        }
        // Writes whose outcome is unknown took effect if they were chosen.
        let chosen_values: std::collections::BTreeSet<(u64, u64)> = self
            .chosen
            .values()
            .filter_map(|value| match value {
                Value::Command { bytes, .. } => Some(decode(bytes)),
                Value::Noop | Value::Members(_) => None,
            })
            .collect();
        for (key, value, call) in std::mem::take(&mut self.unknown_writes) {
            if chosen_values.contains(&(key, value)) {
                self.probe("unknown write was chosen");
                self.record(key, Operation { call, ret: None, op: RegisterOp::Write(value) });
            }
        }
        for (key, history) in &self.history {
            if let Err(reason) = linearizability::check(history) {
                return Err(self.fail(format!("key {key}'s history is not linearizable: {reason}")));
            }
        }
        Ok(self.report)
    }
}

impl Simulation {
    /// Each replica's state, for failure messages.
    fn describe(&self) -> String {
        let states: Vec<String> = self
            .nodes
            .iter()
            .map(|node| match node.host.as_ref() {
                None => format!("{}: down", node.id),
                Some(host) => format!(
                    "{}: {:?} of {:?}{}{}, leader {:?}, commit {}, applied {}, log {}..{:?}, members {:?}",
                    node.id,
                    host.replica().role(),
                    host.replica().leading(),
                    if host.replica().amnesiac() { " (amnesiac)" } else { "" },
                    match host.install_floor() {
                        Some(floor) => format!(" (installing a snapshot through {floor} at least)"),
                        None => String::new(),
                    },
                    host.replica().leader(),
                    host.replica().commit(),
                    node.applied,
                    host.replica().log_start(),
                    node.durable.entries.keys().next_back(),
                    host.replica().members()
                ),
            })
            .collect();
        states.join("; ")
    }
}

fn encode(key: u64, value: u64) -> Vec<u8> {
    [key.to_le_bytes(), value.to_le_bytes()].concat()
}

fn decode(bytes: &[u8]) -> (u64, u64) {
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    (word(0), word(8))
}
