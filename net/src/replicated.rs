//! A core's replicated partitions: one `paxos::Replica` per partition, its WAL writes and
//! applies through the core's store (replicated mode), its messages through the core's peer
//! links, and its timers from one ticking task. Implements `ReplicationLog`, so a write
//! proposed here resolves once chosen (durable on a quorum of the partition's replicas), and
//! `propose_applied` once applied here too.
//!
//! The Replica is pure; this is its host. Action order is kept: persists are appended to the
//! WAL in the order asked and reported durable in that order (one task follows the WAL's
//! durable LSN); chosen entries are queued for apply in slot order. A proposal that is not
//! chosen within `PROPOSAL_TIMEOUT` (this replica lost leadership, or no quorum answers)
//! resolves as `Unavailable`: its outcome is unknown to the caller.
//!
//! The in-memory logs are compacted through what every full replica checkpointed, so a
//! replica that restarts finds the entries it needs at the leader, unless one lags by more
//! than `Cluster::log_retain` entries (it is down, or lost its data): the leader then compacts
//! through its own checkpoint, and that replica gets a snapshot (`snapshot.rs`).
//!
//! Leaders spread over the nodes: partition `i` of a table prefers the group's full member `i`
//! modulo their count (or the leader its partition map names), and that replica campaigns at
//! once when it knows no leader (`prefer_leader`, `Replica::hasten_election`); after a failover
//! leaders stay where they are. A leader admits work only while its core's applier keeps up:
//! once the oldest chosen entry waiting for the tree has waited longer than `apply_delay_max`
//! (`--apply-delay-ms`, default 100), new writes and reads get ThrottlingException (retryable)
//! before they enter the log (`admit`, `Store::apply_delay`), so the apply queue stays bounded
//! when the tree's working set outgrows its cache. A strongly consistent read is served only
//! where `check_read` finds the replica itself may serve it (`Replica::can_read`).
//!
//! Each replica that starts or stops leading is reported on standard error (with its ballot),
//! and so is each anomaly it refuses (`Action::Report`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use tessera_engine::partition::host::{HostConfig, ReplicaHost};
use tessera_engine::paxos::{
    self, Action, ChangeError, Member, MemberKind, Micros, ProposeError, Replica, ReplicaId, Slot, Value,
};
use tessera_engine::{Command, Error, Outcome, PartitionId, ReplicationLog, Result, Stamped, Store};
use tessera_wire::replication::PeerMessage;
use tessera_wire::ReplicaStatus;

use crate::catalog::{partition_name, table_of, CATALOG_PARTITION};
use crate::peers::{LinkStats, PeerLinks};

mod snapshot;

pub use snapshot::SnapshotStats;

/// How often replicas' timers are driven.
const TICK: Duration = Duration::from_millis(5);
/// Ticks between two compactions of the replicas' in-memory logs (about a second).
const COMPACT_EVERY_TICKS: u64 = 200;
/// Entries a leader keeps for a full replica that has not checkpointed them, by default.
pub const LOG_RETAIN_DEFAULT: u64 = 50_000;
/// How long chosen entries may wait for a core's tree before its leaders refuse new writes
/// (ThrottlingException), by default: past what its applier keeps up with, a replicated node
/// sheds writes rather than let the queue, and every strong read behind it, grow without end.
pub const APPLY_DELAY_DEFAULT: Duration = Duration::from_millis(100);

/// A cluster as one node sees it: every node's addresses, and the Multi-Paxos settings all
/// share. Every partition starts with a replica on every node that is not a spare (groups of
/// three on three nodes), on the same core index everywhere; spares host replicas once a
/// configuration change adds them (replacing a lost node: `tessera cluster replace`).
#[derive(Clone, Debug)]
pub struct Cluster {
    pub node: ReplicaId,
    pub nodes: BTreeMap<ReplicaId, ClusterNode>,
    pub paxos: paxos::Config,
    /// Entries a leader keeps for a full replica that has not checkpointed them; one that
    /// lags further (down, or its data lost) gets a snapshot instead.
    pub log_retain: u64,
    /// How long chosen entries may wait for a core's tree before its leaders throttle writes.
    pub apply_delay_max: Duration,
    /// The secret every peer link, forwarded request and administration request proves it
    /// holds (`crate::auth`); `None` only when every peer address is on loopback.
    pub secret: Option<String>,
}

/// Where a node takes clients' requests, its replication peers (core `k` on `peer`'s port
/// plus `k`), and the failure domain it is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNode {
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub zone: String,
    /// In no group at first: a node standing by to replace a lost one.
    pub spare: bool,
}

impl Cluster {
    /// Zones holding more than one node that is not a spare: every partition starts with a
    /// replica on each of those, so losing such a zone loses more than one replica of every
    /// partition.
    pub fn shared_zones(&self) -> Vec<&str> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for node in self.nodes.values().filter(|node| !node.spare) {
            *counts.entry(node.zone.as_str()).or_default() += 1;
        }
        counts.into_iter().filter(|(_, count)| *count > 1).map(|(zone, _)| zone).collect()
    }
}

/// What a chosen value asks the store to apply.
enum Chosen {
    Command(Stamped),
    Members(Vec<Member>),
}

/// A proposal that waits for its slot.
struct Waiter {
    command: u64,
    want_outcome: bool,
    deadline: Instant,
    reply: Rc<Reply>,
}

/// Where a proposal's result lands.
#[derive(Default)]
struct Reply {
    result: RefCell<Option<Result<Option<Outcome>>>>,
    waker: RefCell<Option<Waker>>,
}

impl Reply {
    fn resolve(&self, result: Result<Option<Outcome>>) {
        *self.result.borrow_mut() = Some(result);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    async fn wait(&self) -> Result<Option<Outcome>> {
        futures_lite::future::poll_fn(|context| match self.result.borrow_mut().take() {
            Some(result) => Poll::Ready(result),
            None => {
                *self.waker.borrow_mut() = Some(context.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// Where a core's replicas run.
pub struct ReplicatedLog {
    node: ReplicaId,
    /// Client addresses by node, for leader hints.
    clients: BTreeMap<ReplicaId, SocketAddr>,
    /// The configuration every group starts with: the cluster's nodes that are not spares.
    initial: Vec<Member>,
    config: paxos::Config,
    store: Store,
    links: RefCell<Option<PeerLinks>>,
    replicas: RefCell<BTreeMap<PartitionId, ReplicaHost>>,
    recovered: RefCell<BTreeMap<PartitionId, paxos::Durable>>,
    started: Instant,
    /// Persists appended to the WAL and not yet reported: partition, persist id, LSN.
    persisting: RefCell<VecDeque<(PartitionId, u64, u64)>>,
    persist_waker: RefCell<Option<Waker>>,
    waiters: RefCell<BTreeMap<(PartitionId, Slot), Waiter>>,
    next_command: Cell<u64>,
    proposal_timeout: Duration,
    tasks: RefCell<Vec<glommio::task::JoinHandle<()>>>,
    /// Called after an entry of the partition is queued for apply (the catalog's follower).
    watchers: RefCell<BTreeMap<PartitionId, Rc<dyn Fn()>>>,
    /// Partitions with proposals not yet flushed, and whether a flush is on its way: the
    /// proposals of one turn of the executor go out as one WAL write and one message per peer.
    unflushed: RefCell<std::collections::BTreeSet<PartitionId>>,
    flush_scheduled: Cell<bool>,
    me: RefCell<Weak<ReplicatedLog>>,
    ticks: Cell<u64>,
    host: HostConfig,
    apply_delay_max: Duration,
    snapshots: snapshot::Snapshots,
    /// Partitions of deleted tables: their replicas are stopped and their messages ignored.
    retired: RefCell<std::collections::BTreeSet<PartitionId>>,
    /// By table id: the configuration its groups started with (`learn_group`).
    first_members: RefCell<BTreeMap<u64, Vec<Member>>>,
}

impl ReplicatedLog {
    /// Starts the replicas of core `core` of this node: `store` must be a replicated store.
    pub fn start(store: Store, cluster: &Cluster, core: usize) -> std::io::Result<Rc<ReplicatedLog>> {
        let (node, config) = (cluster.node, cluster.paxos.clone());
        config.validate().map_err(std::io::Error::other)?;
        let own = cluster
            .nodes
            .get(&node)
            .ok_or_else(|| std::io::Error::other(format!("node {node} is not in the cluster")))?;
        let members: Vec<Member> =
            cluster.nodes.iter().filter(|(_, node)| !node.spare).map(|(&id, _)| Member::full(id)).collect();
        let peers: BTreeMap<ReplicaId, SocketAddr> =
            cluster.nodes.iter().filter(|(&id, _)| id != node).map(|(&id, addresses)| (id, addresses.peer)).collect();
        let proposal_timeout = Duration::from_micros(4 * config.election_max);
        let log = Rc::new(ReplicatedLog {
            node,
            clients: cluster.nodes.iter().map(|(&id, node)| (id, node.client)).collect(),
            initial: members,
            config,
            recovered: RefCell::new(store.take_recovered_paxos()),
            store,
            links: RefCell::new(None),
            replicas: RefCell::new(BTreeMap::new()),
            started: Instant::now(),
            persisting: RefCell::new(VecDeque::new()),
            persist_waker: RefCell::new(None),
            waiters: RefCell::new(BTreeMap::new()),
            // Proposal ids differ across restarts: a waiter never mistakes an old entry for its own.
            next_command: Cell::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |since| since.as_micros() as u64),
            ),
            proposal_timeout,
            tasks: RefCell::new(Vec::new()),
            watchers: RefCell::new(BTreeMap::new()),
            unflushed: RefCell::default(),
            flush_scheduled: Cell::new(false),
            me: RefCell::new(Weak::new()),
            ticks: Cell::new(0),
            host: HostConfig { log_retain: cluster.log_retain, unsafe_apply_during_install: false },
            apply_delay_max: cluster.apply_delay_max,
            snapshots: snapshot::Snapshots::default(),
            retired: RefCell::default(),
            first_members: RefCell::default(),
        });
        *log.me.borrow_mut() = Rc::downgrade(&log);
        let weak = Rc::downgrade(&log);
        let deliver: Rc<dyn Fn(Vec<PeerMessage>)> = Rc::new(move |messages| {
            if let Some(log) = weak.upgrade() {
                log.deliver(messages);
            }
        });
        *log.links.borrow_mut() = Some(PeerLinks::start(own.peer, core, &peers, cluster.secret.clone(), deliver)?);
        let tasks = vec![
            glommio::spawn_local(tick(Rc::downgrade(&log))).detach(),
            glommio::spawn_local(report_persists(Rc::downgrade(&log))).detach(),
        ];
        *log.tasks.borrow_mut() = tasks;
        // Every partition with durable replica state starts now rather than on first use, so
        // that after a restart of the whole cluster its entries are committed and applied
        // (the catalog's among them) before anything asks for them.
        // A partition that was installing a snapshot when the node stopped applies nothing until
        // one is whole.
        let partitions: Vec<PartitionId> = log.recovered.borrow().keys().copied().collect();
        for partition in partitions {
            let installing = log.store.installing(partition);
            log.with_host(partition, |host| {
                if installing {
                    host.begin_install();
                }
            });
        }
        Ok(log)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stops the replicas' tasks and links (the store stays open).
    pub fn stop(&self) {
        for task in self.tasks.borrow_mut().drain(..) {
            task.cancel();
        }
        if let Some(links) = self.links.borrow_mut().take() {
            links.stop();
        }
    }

    /// The first slot `partition`'s in-memory log holds (for statistics and tests).
    pub fn log_start(&self, partition: PartitionId) -> Slot {
        self.with_replica(partition, |replica| replica.log_start())
    }

    pub fn link_stats(&self) -> LinkStats {
        self.links.borrow().as_ref().map(PeerLinks::stats).unwrap_or_default()
    }

    /// Whether this node may serve a strongly consistent read of `partition` now (it leads
    /// with a lease); otherwise which replica it believes leads.
    pub fn check_read(&self, partition: PartitionId) -> Result<()> {
        self.admit("reads")?;
        let now = self.now();
        self.with_replica(partition, |replica| {
            if replica.can_read(now) {
                Ok(())
            } else {
                Err(self.not_leader(replica.leader()))
            }
        })
    }

    /// Refuses work (`what`: "reads", "writes") with ThrottlingException (retryable) while the
    /// oldest chosen entry waiting for this core's tree has waited longer than
    /// `apply_delay_max`: a read waits behind every such entry, a write too, so what waits
    /// stays bounded for both rather than queueing into seconds.
    fn admit(&self, what: &str) -> Result<()> {
        let delay = self.store.apply_delay();
        if delay > self.apply_delay_max {
            return Err(Error::Throttled(format!(
                "{what} arrive faster than this partition's replicas apply writes (chosen entries have waited {} ms on its core); retry after a pause",
                delay.as_millis()
            )));
        }
        Ok(())
    }

    /// An eventually consistent read's admission (`admit`).
    pub fn admit_read(&self) -> Result<()> {
        self.admit("reads")
    }

    /// Calls `watcher` whenever a chosen entry of `partition` is queued for apply here.
    pub fn watch(&self, partition: PartitionId, watcher: Rc<dyn Fn()>) {
        self.watchers.borrow_mut().insert(partition, watcher);
    }

    /// Partition `index` of a table (storage partition `partition`) is preferred to lead on
    /// its group's full member `index` modulo their count, in id order: that replica, if it
    /// knows no leader yet (a new table, or a restart), campaigns at once, so leaders spread
    /// over the nodes. Starts the replica here if it is not running.
    pub fn prefer_leader(&self, partition: PartitionId, leader: ReplicaId, index: u32) {
        // A table created before maps recorded leaders names none: its partitions prefer the
        // group's full members in turn, as they did when it was created.
        let group: Vec<ReplicaId> = self
            .first_configuration(partition)
            .iter()
            .filter(|member| member.kind == MemberKind::Full)
            .map(|member| member.id)
            .collect();
        let preferred = match leader {
            0 => group.get(index as usize % group.len().max(1)).copied(),
            leader => Some(leader),
        };
        let now = self.now();
        self.with_replica(partition, |replica| {
            if preferred == Some(replica.id()) {
                replica.hasten_election(now);
            }
        });
    }

    /// The partitions whose replicas run here.
    pub fn partitions(&self) -> Vec<PartitionId> {
        self.replicas.borrow().keys().copied().collect()
    }

    /// Stops `partition`'s replica for good and removes its data in the background: its table
    /// was deleted (every replica does this as it applies the deletion), or its group removed
    /// it (`why` says which). Its messages are ignored from now on, and proposals waiting on it
    /// fail.
    pub fn retire(&self, partition: PartitionId, why: &'static str) {
        if !self.retired.borrow_mut().insert(partition) {
            return;
        }
        self.replicas.borrow_mut().remove(&partition);
        self.recovered.borrow_mut().remove(&partition);
        self.snapshots.forget(partition);
        let waiting: Vec<(PartitionId, Slot)> =
            self.waiters.borrow().keys().filter(|(of, _)| *of == partition).copied().collect();
        for key in waiting {
            if let Some(waiter) = self.waiters.borrow_mut().remove(&key) {
                let reason = format!("partition {partition}: {why}");
                waiter.reply.resolve(Err(Error::Unavailable(reason)));
            }
        }
        let store = self.store.clone();
        glommio::spawn_local(async move {
            match store.drop_partition(partition).await {
                Ok(()) => {
                    tessera_engine::report!("tessera: partition {partition} ({why}): replica stopped, data removed")
                }
                Err(error) => {
                    tessera_engine::report!("tessera: partition {partition} ({why}): removing its data failed: {error}")
                }
            }
        })
        .detach();
    }

    /// This node's id.
    pub fn node(&self) -> ReplicaId {
        self.node
    }

    /// Every replica this core hosts, as cluster administration reports them.
    pub fn replica_statuses(&self) -> Vec<ReplicaStatus> {
        self.partitions()
            .into_iter()
            .map(|partition| {
                let applied = self.store.applied_slot(partition);
                self.with_replica(partition, |replica| ReplicaStatus {
                    partition,
                    leader: replica.leader(),
                    leading: replica.leading().is_some(),
                    members: replica.members().to_vec(),
                    members_committed: replica.members_committed(),
                    commit: replica.commit(),
                    applied,
                })
            })
            .collect()
    }

    /// Proposes `members` as `partition`'s configuration, at its leader here: one member added
    /// or removed from the configuration in force (the server does not change a member's
    /// kind: a log replica has no state machine to become full with). The slot it was
    /// proposed at; it is in force from there, and done once committed.
    pub fn change_members(&self, partition: PartitionId, members: Vec<Member>) -> Result<Slot> {
        if !self.replicas.borrow().contains_key(&partition) {
            return Err(Error::Validation(format!("partition {partition} has no replica on node {}", self.node)));
        }
        let now = self.now();
        let proposed = self.with_replica(partition, |replica| {
            let changes_kind = members.iter().any(|member| {
                replica.members().iter().any(|current| current.id == member.id && current.kind != member.kind)
            });
            if changes_kind {
                return Err(Error::Validation(
                    "a member's kind cannot change: add a full replica and remove the log replica instead".into(),
                ));
            }
            replica.propose_members(now, members).map_err(|error| match error {
                ChangeError::NotLeader { leader } => self.not_leader(leader),
                ChangeError::InProgress => Error::Unavailable(format!(
                    "partition {partition}: a configuration change (or the leader's first entry) is not committed yet"
                )),
                ChangeError::NotOneChange => Error::Validation(format!(
                    "partition {partition}: a configuration change adds or removes exactly one member"
                )),
            })
        })?;
        self.schedule_flush(partition);
        Ok(proposed)
    }

    /// Retires this node's replica of `partition`, which its group removed: the leader stops
    /// sending to a replica it removed, so only the operator's tool can tell it.
    pub fn retire_removed(&self, partition: PartitionId) -> Result<()> {
        let leading = self.replicas.borrow().get(&partition).map(|host| host.replica().leading().is_some());
        match leading {
            None => {
                return Err(Error::Validation(format!("partition {partition} has no replica on node {}", self.node)))
            }
            Some(true) => {
                return Err(Error::Validation(format!(
                    "partition {partition}: the replica on node {} leads its group; remove it from the group first",
                    self.node
                )))
            }
            Some(false) => {}
        }
        self.retire(partition, "removed from its group");
        Ok(())
    }

    /// Whether `partition`'s replica knows everything chosen before the current leadership
    /// (`Replica::caught_up`), is not amnesiac (it may have forgotten what it had) and this
    /// node has applied all of it.
    /// False while the node hosts no replica of it (one is not made here: a retired replica
    /// stays retired).
    pub fn caught_up(&self, partition: PartitionId) -> bool {
        let replicas = self.replicas.borrow();
        let Some(replica) = replicas.get(&partition).map(ReplicaHost::replica) else { return false };
        replica.caught_up() && !replica.amnesiac() && self.store.applied_slot(partition) >= replica.commit()
    }

    /// `partitions` are every partition this core holds a replica of, by a current catalog
    /// (`Store::partitions_known`).
    pub fn partitions_known(&self, partitions: impl IntoIterator<Item = PartitionId>) {
        self.store.partitions_known(partitions);
    }

    /// The replica this node believes leads `partition`.
    pub fn leader(&self, partition: PartitionId) -> Option<ReplicaId> {
        self.with_replica(partition, |replica| replica.leader())
    }

    /// The error for a request this node's replica cannot take, naming the leader it knows.
    fn not_leader(&self, leader: Option<ReplicaId>) -> Error {
        let leader = leader.filter(|&leader| leader != self.node);
        let address = leader.and_then(|leader| self.clients.get(&leader)).map(SocketAddr::to_string);
        Error::NotLeader { leader, address }
    }

    fn now(&self) -> Micros {
        self.started.elapsed().as_micros() as Micros
    }

    /// Runs `f` on `partition`'s replica (started on first use), then carries out what it
    /// asked for.
    fn with_replica<T>(&self, partition: PartitionId, f: impl FnOnce(&mut Replica) -> T) -> T {
        self.with_host(partition, |host| f(host.replica_mut()))
    }

    /// Runs `f` on `partition`'s host (its replica started on first use), then carries out
    /// what its replica asked for.
    fn with_host<T>(&self, partition: PartitionId, f: impl FnOnce(&mut ReplicaHost) -> T) -> T {
        let now = self.now();
        let (result, actions) = {
            let mut replicas = self.replicas.borrow_mut();
            let host = replicas.entry(partition).or_insert_with(|| {
                let durable = self.recovered.borrow_mut().remove(&partition).unwrap_or_default();
                let applied = self.store.applied_slot(partition);
                let seed = u64::from(self.node) << 48 ^ partition ^ now;
                // The configuration as of the applied slot (later ones are in the log).
                let members =
                    self.store.configuration(partition).unwrap_or_else(|| self.first_configuration(partition));
                let mut replica = Replica::new(self.config.clone(), self.node, &members, durable, applied, now, seed);
                // This log's clock started with the process's replication.
                replica.restarted_at(0);
                // The store lost a durable write it cannot read (a damaged WAL tail), perhaps
                // this replica's: it votes again only once a new leader has caught it up.
                if self.store.amnesiac(partition) {
                    replica.set_amnesiac();
                }
                ReplicaHost::new(replica, self.host)
            });
            let was_leading = host.replica().leading();
            let result = f(host);
            let leading = host.replica().leading();
            if leading != was_leading {
                match leading {
                    Some(ballot) => tessera_engine::report!(
                        "tessera: {}: this node leads it (ballot {} of node {})",
                        partition_name(partition),
                        ballot.round,
                        ballot.replica
                    ),
                    None => {
                        tessera_engine::report!("tessera: {}: this node no longer leads it", partition_name(partition))
                    }
                }
            }
            (result, host.drain())
        };
        self.carry_out(partition, actions);
        result
    }

    /// The configuration `partition`'s group started with: the catalog's, the cluster file's
    /// nodes that are not spares; a table's, what its catalog entry records (`learn_group`);
    /// none for a table this node does not know (yet): such a replica accepts but does not
    /// campaign or apply until it learns its group.
    fn first_configuration(&self, partition: PartitionId) -> Vec<Member> {
        match partition {
            CATALOG_PARTITION => self.initial.clone(),
            _ => self.first_members.borrow().get(&table_of(partition)).cloned().unwrap_or_default(),
        }
    }

    /// `partition`'s group started with `members`, as its table's catalog entry says (none
    /// recorded: the cluster file's nodes that are not spares). Replicas created from now on
    /// start with it, and one created before that knows no configuration takes it.
    pub fn learn_group(&self, partition: PartitionId, members: &[Member]) {
        let members = if members.is_empty() { self.initial.clone() } else { members.to_vec() };
        self.first_members.borrow_mut().insert(table_of(partition), members.clone());
        if self.replicas.borrow().contains_key(&partition) {
            self.with_host(partition, |host| host.join_group(&members));
        }
    }

    /// The newest configuration `partition`'s replica here knows.
    pub fn members(&self, partition: PartitionId) -> Vec<Member> {
        self.with_replica(partition, |replica| replica.members().to_vec())
    }

    fn deliver(&self, messages: Vec<PeerMessage>) {
        let now = self.now();
        for message in messages {
            if message.to() != self.node {
                continue;
            }
            let partition = match &message {
                PeerMessage::Paxos((partition, _)) => *partition,
                PeerMessage::Chunk(chunk) => chunk.partition,
                PeerMessage::Ack(ack) => ack.partition,
            };
            if self.retired.borrow().contains(&partition) {
                continue;
            }
            match message {
                PeerMessage::Paxos((partition, envelope)) => {
                    self.with_replica(partition, |replica| replica.step(now, envelope.from, envelope.message))
                }
                PeerMessage::Chunk(chunk) => self.receive_chunk(chunk),
                PeerMessage::Ack(ack) => self.receive_ack(ack),
            }
        }
    }

    fn send(&self, message: PeerMessage) {
        if let Some(links) = self.links.borrow().as_ref() {
            links.send(message);
        }
    }

    /// Carries out what a replica asked for; its chosen entries are routed by its host
    /// already (`ReplicaHost::drain`).
    fn carry_out(&self, partition: PartitionId, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send(envelope) => self.send(PeerMessage::Paxos((partition, envelope))),
                // If the store refuses (it is poisoned), this replica never reports the persist
                // and so never acknowledges: the others go on without it.
                Action::Persist { id, promised, entries } => {
                    if let Ok(lsn) = self.store.persist_paxos(partition, promised, &entries) {
                        self.persisting.borrow_mut().push_back((partition, id, lsn));
                        if let Some(waker) = self.persist_waker.borrow_mut().take() {
                            waker.wake();
                        }
                    }
                }
                Action::Apply { slot, value } => self.apply(partition, slot, value),
                Action::SendSnapshot { to } => self.send_snapshot(partition, to),
                Action::StartLog { to, slot, members } => self.start_log(partition, to, slot, members),
                Action::Rejoined { ballot, through } => {
                    self.store.rejoined(partition);
                    tessera_engine::report!(
                        "tessera: {}: caught up through slot {through} from the leader of ballot {} of node {}, elected since this start: it votes again",
                        partition_name(partition),
                        ballot.round,
                        ballot.replica
                    );
                }
                Action::Report(anomaly) => tessera_engine::report!("tessera: partition {partition}: {anomaly}"),
            }
        }
    }

    /// Queues the value chosen for `slot` for apply, and answers its proposer.
    fn apply(&self, partition: PartitionId, slot: Slot, value: Value) {
        let waiter = self.waiters.borrow_mut().remove(&(partition, slot));
        let (command, chosen_id) = match value {
            Value::Command { id, bytes } => match Stamped::decode_shared(&bytes) {
                Ok(entry) => (Chosen::Command(entry), Some(id)),
                Err(reason) => {
                    // A chosen command that does not decode (the same bytes everywhere): every
                    // replica skips it alike, and its proposer hears of it.
                    let error =
                        format!("the command chosen for slot {slot} of partition {partition} is damaged: {reason}");
                    if let Some(waiter) = waiter {
                        waiter.reply.resolve(Err(Error::Unavailable(error)));
                    }
                    return;
                }
            },
            // A no-op applies nothing but moves the applied slot.
            Value::Noop => (Chosen::Command(Stamped { at_us: 0, command: Command::Batch(Vec::new()) }), None),
            // A configuration is saved with the partition, for its replica to restart from.
            Value::Members(members) => (Chosen::Members(members), None),
        };
        let ours = waiter.as_ref().is_some_and(|waiter| Some(waiter.command) == chosen_id);
        let want_outcome = ours && waiter.as_ref().is_some_and(|waiter| waiter.want_outcome);
        let ticket = match command {
            Chosen::Command(entry) => self.store.apply_chosen(partition, slot, entry, want_outcome),
            Chosen::Members(members) => self.store.apply_members(partition, slot, members),
        };
        let watcher = self.watchers.borrow().get(&partition).cloned();
        if let Some(watcher) = watcher {
            watcher();
        }
        let Some(waiter) = waiter else { return };
        match (ours, ticket) {
            (false, _) => waiter.reply.resolve(Err(Error::Unavailable(format!(
                "slot {slot} of partition {partition} was chosen for another write: this one was not applied"
            )))),
            (true, Err(error)) => waiter.reply.resolve(Err(error)),
            (true, Ok(_)) if !want_outcome => waiter.reply.resolve(Ok(None)),
            (true, Ok(ticket)) => {
                let store = self.store.clone();
                glommio::spawn_local(async move {
                    waiter.reply.resolve(store.outcome(ticket).await.map(Some));
                })
                .detach();
            }
        }
    }

    async fn propose_command(
        &self,
        partition: PartitionId,
        command: Command,
        want_outcome: bool,
    ) -> Result<Option<Outcome>> {
        // Admission: a write proposed now would wait behind more than the core's applier
        // keeps up with (and every strong read after it too). Refused before it is in the
        // log, it has not taken effect: the client may retry it. So is one while this node's
        // disk is full.
        self.admit("writes")?;
        self.store.writable()?;
        let id = self.next_command.get();
        self.next_command.set(id + 1);
        let mut bytes = Vec::new();
        Stamped::now(command).encode_payload(&mut bytes).map_err(Error::unreplayable)?;
        let now = self.now();
        let slot = self.with_replica(partition, |replica| replica.propose(now, id, bytes));
        let slot = match slot {
            Ok(slot) => slot,
            Err(ProposeError::NotLeader { leader }) => return Err(self.not_leader(leader)),
        };
        self.schedule_flush(partition);
        // Nothing was chosen yet (its persist is not even durable): the waiter is in time.
        let reply = Rc::new(Reply::default());
        let deadline = Instant::now() + self.proposal_timeout;
        let waiter = Waiter { command: id, want_outcome, deadline, reply: reply.clone() };
        self.waiters.borrow_mut().insert((partition, slot), waiter);
        reply.wait().await
    }

    /// Flushes `partition`'s proposals after the tasks ready now have run (and proposed).
    fn schedule_flush(&self, partition: PartitionId) {
        self.unflushed.borrow_mut().insert(partition);
        if self.flush_scheduled.replace(true) {
            return;
        }
        let me = self.me.borrow().clone();
        glommio::spawn_local(async move {
            futures_lite::future::yield_now().await;
            let Some(log) = me.upgrade() else { return };
            log.flush_scheduled.set(false);
            let partitions = std::mem::take(&mut *log.unflushed.borrow_mut());
            let now = log.now();
            for partition in partitions {
                log.with_replica(partition, |replica| replica.flush(now));
            }
        })
        .detach();
    }

    /// Drives every replica's timers, expires proposals that waited too long, and now and
    /// then compacts the replicas' in-memory logs and asks for snapshots that are wanted.
    fn tick_all(&self) {
        let now = self.now();
        let ticks = self.ticks.get() + 1;
        self.ticks.set(ticks);
        let compacting = ticks.is_multiple_of(COMPACT_EVERY_TICKS);
        let partitions: Vec<PartitionId> = self.replicas.borrow().keys().copied().collect();
        for partition in partitions {
            let checkpointed = self.store.checkpointed_slot(partition);
            // Only compaction needs the floor: not looked up on the other ticks.
            let floor = if compacting { self.snapshot_floor(partition) } else { None };
            let unchecked = self.with_host(partition, |host| {
                host.replica_mut().tick(now);
                if compacting {
                    host.compact(checkpointed, floor);
                }
                host.replica().commit().saturating_sub(checkpointed)
            });
            // A log longer than the retained length is cut only at a checkpoint: ask for one.
            if compacting && unchecked > self.host.log_retain {
                self.store.request_checkpoint();
            }
        }
        if compacting {
            self.repair_damaged();
            self.ask_for_snapshots();
        }
        let expired: Vec<(PartitionId, Slot)> = self
            .waiters
            .borrow()
            .iter()
            .filter(|(_, waiter)| waiter.deadline <= Instant::now())
            .map(|(key, _)| *key)
            .collect();
        for key in expired {
            if let Some(waiter) = self.waiters.borrow_mut().remove(&key) {
                waiter.reply.resolve(Err(Error::Unavailable(format!(
                    "slot {} of partition {} was not chosen in time: the write may or may not take effect",
                    key.1, key.0
                ))));
            }
        }
    }
}

async fn tick(log: Weak<ReplicatedLog>) {
    loop {
        glommio::timer::sleep(TICK).await;
        let Some(log) = log.upgrade() else { return };
        log.tick_all();
    }
}

/// Reports persists durable, in the order they were appended.
async fn report_persists(log: Weak<ReplicatedLog>) {
    loop {
        let Some(strong) = log.upgrade() else { return };
        let front = strong.persisting.borrow().front().map(|(_, _, lsn)| *lsn);
        match front {
            None => {
                let waiting = futures_lite::future::poll_fn(|context| {
                    if strong.persisting.borrow().is_empty() {
                        *strong.persist_waker.borrow_mut() = Some(context.waker().clone());
                        Poll::Pending
                    } else {
                        Poll::Ready(())
                    }
                });
                waiting.await;
            }
            Some(lsn) => {
                if strong.store.durable(lsn).await.is_err() {
                    return;
                }
                let durable = strong.store.wal().durable_lsn();
                loop {
                    let next = strong.persisting.borrow().front().copied();
                    match next {
                        Some((partition, id, lsn)) if lsn <= durable => {
                            strong.persisting.borrow_mut().pop_front();
                            let now = strong.now();
                            strong.with_replica(partition, |replica| replica.persisted(now, id));
                        }
                        _ => break,
                    }
                }
            }
        }
    }
}

impl ReplicationLog for ReplicatedLog {
    async fn propose(&self, partition: PartitionId, command: Command) -> Result<()> {
        self.propose_command(partition, command, false).await.map(drop)
    }

    async fn propose_applied(&self, partition: PartitionId, command: Command) -> Result<Outcome> {
        self.propose_command(partition, command, true)
            .await?
            .ok_or_else(|| Error::Unavailable("the write's outcome was not kept".into()))
    }
}
