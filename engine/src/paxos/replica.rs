//! One replica of a replication group: acceptor always, follower, candidate or leader in turn.
//! See the module above for the protocol and its invariants.

use std::collections::{BTreeMap, VecDeque};

use super::{Ballot, Entry, Envelope, Member, MemberKind, Message, Micros, ReplicaId, Slot, Value};

/// Timing and bounds of a group. Every replica of a group must use the same values.
#[derive(Clone, Debug)]
pub struct Config {
    /// A follower that heard nothing from a leader for a random time between these campaigns,
    /// and promises no other ballot for `election_min` after it last heard from one.
    pub election_min: Micros,
    pub election_max: Micros,
    /// How often a leader sends `Accept`s when it has nothing else to send.
    pub heartbeat: Micros,
    /// How long after a quorum echoed a clock reading the leader serves reads alone.
    pub lease: Micros,
    /// The most any replica's clock rate may differ from true time, in parts per million.
    pub drift_ppm: u64,
    /// Most entries in one `Accept`.
    pub entries_per_message_max: usize,
    /// Most entries sent to a peer beyond what it acknowledged.
    pub entries_in_flight_max: u64,
    /// A planted bug for the simulator to find, never set outside tests: acceptors answer
    /// `Accepted` before their entries are durable.
    pub unsafe_ack_before_durable: bool,
    /// A planted bug for the simulator to find, never set outside tests: acceptors promise a
    /// new ballot even while they heard from a leader less than `election_min` ago, so a
    /// leader's lease no longer keeps others from leading.
    pub unsafe_promise_during_lease: bool,
    /// A planted bug for the simulator to find, never set outside tests: `set_amnesiac` is
    /// ignored, so a replica that lost its last durable write votes as if it had not.
    pub unsafe_amnesiac_votes: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            election_min: 300_000,
            election_max: 600_000,
            heartbeat: 50_000,
            lease: 240_000,
            drift_ppm: 10_000,
            entries_per_message_max: 64,
            entries_in_flight_max: 1024,
            unsafe_ack_before_durable: false,
            unsafe_promise_during_lease: false,
            unsafe_amnesiac_votes: false,
        }
    }
}

impl Config {
    /// Why this configuration is unsafe or unworkable, if it is.
    pub fn validate(&self) -> Result<(), String> {
        // The leader's lease runs on its clock, at worst slow by `drift_ppm`; a follower's
        // promise to wait `election_min` runs on its clock, at worst fast by as much. In true
        // time the first must end before the second.
        let lease_true_max = u128::from(self.lease) * u128::from(1_000_000 + self.drift_ppm);
        let quiet_true_min = u128::from(self.election_min) * u128::from(1_000_000u64.saturating_sub(self.drift_ppm));
        if self.drift_ppm >= 1_000_000 || lease_true_max >= quiet_true_min {
            return Err(format!(
                "lease {} us is not shorter than election_min {} us by the clock drift bound of {} ppm",
                self.lease, self.election_min, self.drift_ppm
            ));
        }
        if self.election_max <= self.election_min || self.heartbeat == 0 || self.heartbeat >= self.election_min {
            return Err("election_max must exceed election_min, and heartbeats come well within it".into());
        }
        if self.entries_per_message_max == 0 || self.entries_in_flight_max < self.entries_per_message_max as u64 {
            return Err("entries_per_message_max must be at least 1 and at most entries_in_flight_max".into());
        }
        Ok(())
    }
}

/// What a replica has made durable: the ballot it promised and the entries it accepted.
/// The host stores what `Action::Persist` says and gives it back at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    pub promised: Ballot,
    pub entries: BTreeMap<Slot, Entry>,
}

/// What the host must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Send(Envelope),
    /// Make these durable (the promise, if any, and the entries, replacing what those slots
    /// held), then call `persisted(id)`. Persists complete in the order they were asked for.
    Persist {
        id: u64,
        promised: Option<Ballot>,
        entries: Vec<(Slot, Entry)>,
    },
    /// The value chosen for `slot`, in slot order, each once per start.
    Apply {
        slot: Slot,
        value: Value,
    },
    /// `to` needs entries this replica compacted: send it a snapshot of the state machine;
    /// its host calls `install_snapshot` when it has it durably.
    SendSnapshot {
        to: ReplicaId,
    },
    /// `to`, a log replica, needs entries this replica compacted. It holds no state machine,
    /// so it needs none: its host calls `install_snapshot` with `slot` (committed, and no
    /// later than any full member's checkpoint: `compactable`) and `members` (the
    /// configuration in force there), and its log starts after `slot`.
    StartLog {
        to: ReplicaId,
        slot: Slot,
        members: Vec<Member>,
    },
    /// An amnesiac replica (`Replica::set_amnesiac`) holds everything it could have
    /// acknowledged before it restarted: it has caught up through `through`, the log end of
    /// the leader of `ballot`, a leadership elected after the restart. It votes again from
    /// now on; the host records that durably (losing the record only keeps it amnesiac).
    Rejoined {
        ballot: Ballot,
        through: Slot,
    },
    /// Something no correct group causes (a bug, or damage elsewhere): the host reports it.
    /// The replica's state is unchanged by what it reports.
    Report(Anomaly),
}

/// The round no ballot may have: none could exceed it, so a replica that promised it could
/// never be won over again (and `round + 1` would wrap to a ballot below every other).
/// Messages carrying it are refused; campaigns stay below it.
pub const LAST_ROUND: u64 = u64::MAX;

/// What `Action::Report` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// A message from `from` carried a ballot of `LAST_ROUND`: refused, unanswered.
    LastRound { from: ReplicaId },
    /// This replica has seen round `round`, and no round is left below `LAST_ROUND` to
    /// campaign with: it stays a follower.
    RoundsExhausted { round: u64 },
}

impl std::fmt::Display for Anomaly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Anomaly::LastRound { from } => {
                write!(f, "refused a message from replica {from} whose ballot has the last round, {LAST_ROUND}")
            }
            Anomaly::RoundsExhausted { round } => {
                write!(f, "cannot campaign: round {round} has been seen and no higher round is left")
            }
        }
    }
}

/// Whether `message` carries a ballot of `LAST_ROUND` anywhere.
fn carries_last_round(message: &Message) -> bool {
    let last = |ballot: &Ballot| ballot.round == LAST_ROUND;
    match message {
        Message::Prepare { ballot, .. } | Message::Accept { ballot, .. } | Message::Accepted { ballot, .. } => {
            last(ballot)
        }
        Message::Promise { ballot, entries, .. } => {
            last(ballot) || entries.iter().any(|(_, entry)| last(&entry.ballot))
        }
        Message::Reject { promised } => last(promised),
    }
}

/// Why a proposal was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// Only the leader proposes; this replica believes `leader` leads, if it knows one.
    NotLeader { leader: Option<ReplicaId> },
}

/// Why a configuration change was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeError {
    NotLeader {
        leader: Option<ReplicaId>,
    },
    /// A change waits until the previous one, and an entry of the leader's own ballot, are
    /// committed.
    InProgress,
    /// A change adds, removes or changes the kind of exactly one member.
    NotOneChange,
}

/// The part a replica plays now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    Candidate,
    Leader,
}

/// What is waiting for a persist to complete.
#[derive(Debug)]
struct PendingPersist {
    id: u64,
    /// The ballot of the run of entries it extends, and the run's end once it is durable.
    run: Ballot,
    end: Slot,
    /// Answer once durable.
    reply: Option<Envelope>,
}

#[derive(Debug)]
struct Campaign {
    ballot: Ballot,
    from_slot: Slot,
    /// Promises received: where each promiser's log starts, and the entries it reported.
    promises: BTreeMap<ReplicaId, (Slot, Vec<(Slot, Entry)>)>,
    /// Whether this replica's own promise is durable.
    promised_self: bool,
    /// The replicas sent a `Prepare`.
    asked: std::collections::BTreeSet<ReplicaId>,
}

#[derive(Debug)]
struct Leadership {
    ballot: Ballot,
    /// The slot of this leadership's own no-op: reads wait until it is committed.
    first_slot: Slot,
    /// Per peer: the next slot to send, the end of its acknowledged run, the latest clock
    /// reading it echoed.
    next: BTreeMap<ReplicaId, Slot>,
    matched: BTreeMap<ReplicaId, Slot>,
    echoed: BTreeMap<ReplicaId, Micros>,
    /// The slot each peer last said its state machine is durable through.
    checkpoints: BTreeMap<ReplicaId, Slot>,
    /// When a snapshot was last asked for, per peer: another is asked for only after
    /// `election_max`, unless the peer acknowledges it first.
    snapshot_asked: BTreeMap<ReplicaId, Micros>,
    next_heartbeat: Micros,
    /// The newest reading a quorum echoed: the lease runs from it (0: none yet).
    lease_start: Micros,
    /// When this leadership began or a quorum last echoed, whichever is later.
    contact: Micros,
}

/// What an amnesiac replica has seen since it restarted (`Replica::set_amnesiac`).
#[derive(Debug, Default)]
struct Amnesia {
    /// The highest ballot whose `Prepare` arrived since the restart: its campaign began after
    /// the replica stopped.
    fresh: Option<Ballot>,
    /// From a heartbeat (an empty `Accept`, sent when the leader has nothing more to send) of
    /// a ballot no lower than `fresh`: that leader's log end, its own first entry included.
    through: Option<(Ballot, Slot)>,
}

#[derive(Debug)]
enum State {
    Follower,
    Candidate(Campaign),
    Leader(Leadership),
}

/// One replica. See the module documentation.
#[derive(Debug)]
pub struct Replica {
    config: Config,
    id: ReplicaId,
    /// The configurations in the log by the slot that holds them (the first: the one in force
    /// at the log's start). The newest is in force, committed or not.
    configs: BTreeMap<Slot, Vec<Member>>,
    random: u64,
    promised: Ballot,
    log: BTreeMap<Slot, Entry>,
    /// The first slot the log still holds; earlier ones are only in the host's snapshot.
    log_start: Slot,
    /// The slot through which the host's state machine is durable.
    checkpointed: Slot,
    /// Every slot up to `commit` holds its chosen value; applies have been emitted up to it.
    commit: Slot,
    /// The run of entries of ballot `run` past `commit`: accepted up to `accepted_end`,
    /// durable up to `durable_end`.
    run: Ballot,
    accepted_end: Slot,
    durable_end: Slot,
    /// The commit index the leader of `run` announced.
    leader_commit: Slot,
    /// The ballot of the newest entry committed here (or of the leader whose snapshot was
    /// installed): once it is the ballot this replica follows or leads, its commit index
    /// covers everything chosen before that leadership (`caught_up`).
    committed_ballot: Ballot,
    leader: Option<ReplicaId>,
    /// Prepares of other ballots are not answered before this time.
    quiet_until: Micros,
    election_deadline: Micros,
    /// The host cannot apply entries yet (its state machine awaits a snapshot): this replica
    /// does not campaign, since as leader it could not serve what it chose.
    standby: bool,
    /// Set while the replica may have forgotten promises and acceptances it acknowledged (its
    /// host lost the last durable write): it neither promises, nor accepts in any way a leader
    /// could count, nor campaigns, until it has caught up from a leadership elected after it
    /// restarted (`Replica::set_amnesiac`).
    amnesia: Option<Amnesia>,
    round_seen: u64,
    next_persist: u64,
    persists: VecDeque<PendingPersist>,
    state: State,
    actions: Vec<Action>,
    /// Entries the leader appended since its last `flush`.
    unflushed: Vec<(Slot, Entry)>,
}

impl Replica {
    /// A replica starting (or restarting) at `now` with what it made durable before; entries
    /// up to `applied` are already applied by the host (in its checkpoint), and the log
    /// starts after them; `members` is the configuration in force at `applied`. `seed` drives
    /// its election timeouts.
    pub fn new(
        config: Config,
        id: ReplicaId,
        members: &[Member],
        mut durable: Durable,
        applied: Slot,
        now: Micros,
        seed: u64,
    ) -> Replica {
        config.validate().expect("a valid paxos configuration");
        let mut configs = BTreeMap::from([(applied, members.to_vec())]);
        for (slot, entry) in durable.entries.range(applied + 1..) {
            if let Value::Members(members) = &entry.value {
                configs.insert(*slot, members.clone());
            }
        }
        let round_seen =
            durable.entries.values().map(|entry| entry.ballot.round).max().unwrap_or(0).max(durable.promised.round);
        let promised =
            durable.entries.values().map(|entry| entry.ballot).max().unwrap_or_default().max(durable.promised);
        let mut replica = Replica {
            config,
            id,
            configs,
            random: seed | 1,
            promised,
            log: durable.entries.split_off(&(applied + 1)),
            log_start: applied + 1,
            checkpointed: applied,
            commit: applied,
            run: Ballot::default(),
            accepted_end: applied,
            durable_end: applied,
            leader_commit: applied,
            committed_ballot: Ballot::default(),
            leader: None,
            // It may have heard from a leader just before it stopped.
            quiet_until: 0,
            election_deadline: 0,
            standby: false,
            amnesia: None,
            round_seen,
            next_persist: 1,
            persists: VecDeque::new(),
            state: State::Follower,
            actions: Vec::new(),
            unflushed: Vec::new(),
        };
        replica.quiet_until = now + replica.config.election_min;
        replica.reset_election_timer(now);
        replica
    }

    /// The host (re)started at `at`, before it created this replica: the replica promises no
    /// other ballot before `at + election_min`, since it may have echoed a leader's lease just
    /// before the host stopped. (Without this call, from the replica's creation: a replica
    /// created lazily, long after the start, would otherwise sit out a needless quiet time.)
    pub fn restarted_at(&mut self, at: Micros) {
        self.quiet_until = self.quiet_until.min(at + self.config.election_min);
    }

    pub fn id(&self) -> ReplicaId {
        self.id
    }

    pub fn role(&self) -> Role {
        match self.state {
            State::Follower => Role::Follower,
            State::Candidate(_) => Role::Candidate,
            State::Leader(_) => Role::Leader,
        }
    }

    /// The ballot this replica leads with, if it leads.
    pub fn leading(&self) -> Option<Ballot> {
        match &self.state {
            State::Leader(leadership) => Some(leadership.ballot),
            _ => None,
        }
    }

    /// The replica this one believes leads (itself when leading).
    pub fn leader(&self) -> Option<ReplicaId> {
        self.leader
    }

    pub fn commit(&self) -> Slot {
        self.commit
    }

    /// The first slot the log still holds.
    pub fn log_start(&self) -> Slot {
        self.log_start
    }

    /// The configuration in force: the newest in the log.
    pub fn members(&self) -> &[Member] {
        self.configs.values().next_back().expect("a configuration is always in force")
    }

    /// The host learned its group's first configuration after it created this replica with
    /// none (a replica started by a message from a group the host did not know yet: as an
    /// acceptor it needs no configuration, and without one it never campaigns). It takes
    /// effect only if the replica still knows no configuration, from its log or a snapshot.
    pub fn join_group(&mut self, members: &[Member]) {
        if self.configs.len() == 1 && self.members().is_empty() {
            if let Some(first) = self.configs.values_mut().next() {
                *first = members.to_vec();
            }
        }
    }

    /// Whether this replica knows everything chosen before the leadership it follows or leads:
    /// an entry of that leadership's ballot is committed here (a new leader commits its no-op
    /// first, after every slot it found open). After a restart a replica's commit index starts
    /// at its applied slot and says nothing of what the group chose meanwhile, until then.
    pub fn caught_up(&self) -> bool {
        let following = self.leader.is_some() || matches!(self.state, State::Leader(_));
        following && self.committed_ballot == self.promised
    }

    /// Whether the configuration in force is committed (another change may be proposed).
    pub fn members_committed(&self) -> bool {
        self.configs.keys().next_back().is_none_or(|&slot| slot <= self.commit)
    }

    fn peers(&self) -> Vec<ReplicaId> {
        self.members().iter().map(|member| member.id).filter(|&id| id != self.id).collect()
    }

    fn quorum(&self) -> usize {
        self.members().len() / 2 + 1
    }

    fn is_member(&self) -> bool {
        self.members().iter().any(|member| member.id == self.id)
    }

    fn can_lead(&self) -> bool {
        self.members().contains(&Member::full(self.id))
    }

    /// Puts `entry` in the log at `slot`, keeping the configurations in step with it.
    fn log_insert(&mut self, slot: Slot, entry: Entry) {
        match &entry.value {
            Value::Members(members) => self.configs.insert(slot, members.clone()),
            _ => self.configs.remove(&slot),
        };
        self.log.insert(slot, entry);
    }

    /// Drops the log through `through` (now in the state machine), keeping the configuration in
    /// force there as the first.
    fn drop_log_through(&mut self, through: Slot, base: Option<Vec<Member>>) {
        let base = base.unwrap_or_else(|| {
            self.configs.range(..=through).next_back().map(|(_, members)| members.clone()).expect("a configuration")
        });
        self.log = self.log.split_off(&(through + 1));
        self.configs = self.configs.split_off(&(through + 1));
        self.configs.insert(through, base);
        self.log_start = through + 1;
    }

    /// Whether a strongly consistent read may be served from this replica's applied state at
    /// `now`: it leads, an entry of its own ballot is committed, and its lease holds.
    pub fn can_read(&self, now: Micros) -> bool {
        match &self.state {
            State::Leader(leadership) => {
                self.can_lead()
                    && self.commit >= leadership.first_slot
                    && (self.quorum() == 1 || now < leadership.lease_start + self.config.lease)
            }
            _ => false,
        }
    }

    /// The configuration in force at `slot` (after its entry), if this replica's log still
    /// reaches back that far (its log starts at most one slot after it).
    pub fn members_at(&self, slot: Slot) -> Option<Vec<Member>> {
        if slot + 1 < self.log_start {
            return None;
        }
        self.configs.range(..=slot).next_back().map(|(_, members)| members.clone())
    }

    /// How far the host may compact this replica's log. A leader keeps every entry some other
    /// full member has not checkpointed: a full member restarts from its checkpoint and
    /// campaigns from there, and a log replica, which joins (or catches up) from the leader's
    /// log, must then hold everything after that point. Others may compact what they
    /// committed.
    pub fn compactable(&self) -> Slot {
        match &self.state {
            State::Leader(leadership) => self
                .members()
                .iter()
                .filter(|member| member.kind == MemberKind::Full && member.id != self.id)
                .map(|member| leadership.checkpoints.get(&member.id).copied().unwrap_or(0))
                .fold(self.commit, Slot::min),
            _ => self.commit,
        }
    }

    /// The host made its state machine durable through `slot` (a checkpoint).
    pub fn checkpointed(&mut self, slot: Slot) {
        self.checkpointed = self.checkpointed.max(slot.min(self.commit));
    }

    /// The host's checkpoint covers every slot through `through` (at most `commit`): those
    /// entries leave the log.
    pub fn compact(&mut self, through: Slot) {
        assert!(through <= self.commit, "compacting slot {through} past the commit index {}", self.commit);
        if through >= self.log_start {
            self.drop_log_through(through, None);
        }
    }

    /// The host durably installed a snapshot of the state machine through `slot`, sent by
    /// `from`, the leader of `ballot`, with `members` the configuration in force at `slot`:
    /// replication resumes after it.
    pub fn install_snapshot(&mut self, slot: Slot, from: ReplicaId, ballot: Ballot, members: Vec<Member>) {
        if slot > self.commit {
            self.commit = slot;
            self.committed_ballot = ballot;
            self.checkpointed = slot;
            self.leader_commit = self.leader_commit.max(slot);
            self.drop_log_through(slot, Some(members));
        }
        if ballot >= self.promised && self.run != ballot {
            // A run of the sender's ballot starts at the snapshot.
            self.run = ballot;
            self.accepted_end = self.commit;
            self.durable_end = self.commit;
        } else {
            self.accepted_end = self.accepted_end.max(self.commit);
            self.durable_end = self.durable_end.max(self.commit);
        }
        self.check_rejoined();
        // A sender whose leadership is behind a ballot promised here, or may predate this
        // replica's restart while it is amnesiac, hears so, as an Accept of it would
        // (`on_accept`): it steps down and an election follows. Otherwise it would take the
        // answer below for a stale one and send snapshot after snapshot, never an Accept this
        // replica could refuse.
        let predates_restart =
            self.amnesia.as_ref().is_some_and(|amnesia| amnesia.fresh.is_none_or(|fresh| ballot < fresh));
        if ballot < self.promised || predates_restart {
            let above = Ballot { round: ballot.round.saturating_add(1).min(LAST_ROUND - 1), replica: self.id };
            let promised = if predates_restart { above.max(ballot).max(self.promised) } else { self.promised };
            self.send(from, Message::Reject { promised });
        }
        // Tell the leader where the run now ends, so it sends what follows.
        let message = Message::Accepted {
            ballot: self.run,
            up_to: if self.amnesia.is_some() { self.commit } else { self.durable_end },
            sent_at: 0,
            gap: true,
            checkpointed: self.checkpointed,
        };
        self.send(from, message);
    }

    /// What the host must do, in order.
    pub fn drain(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// Proposes `value` (a command) at the next slot; the host learns whether it was chosen
    /// there from the `Apply` of that slot.
    pub fn propose(&mut self, now: Micros, id: u64, bytes: Vec<u8>) -> Result<Slot, ProposeError> {
        let State::Leader(leadership) = &self.state else {
            return Err(ProposeError::NotLeader { leader: self.leader });
        };
        let ballot = leadership.ballot;
        Ok(self.append(now, ballot, Value::Command { id, bytes: bytes.into() }))
    }

    /// Proposes a new configuration: `members` differs from the one in force by exactly one
    /// member added, removed, or changed in kind. It is in force (for quorums) as soon as it
    /// is in the log.
    pub fn propose_members(&mut self, now: Micros, members: Vec<Member>) -> Result<Slot, ChangeError> {
        let State::Leader(leadership) = &self.state else {
            return Err(ChangeError::NotLeader { leader: self.leader });
        };
        let (ballot, first_slot) = (leadership.ballot, leadership.first_slot);
        if !self.members_committed() || first_slot > self.commit {
            return Err(ChangeError::InProgress);
        }
        let current = self.members();
        let differs = |a: &[Member], b: &[Member]| a.iter().filter(|member| !b.contains(member)).count();
        let ids =
            |members: &[Member]| members.iter().map(|member| member.id).collect::<std::collections::BTreeSet<_>>();
        let (added, removed) = (differs(&members, current), differs(current, &members));
        let one_change = match (added, removed) {
            (1, 0) | (0, 1) => true,
            // The same ids with one member's kind changed.
            (1, 1) => ids(&members) == ids(current),
            _ => false,
        };
        if !one_change || ids(&members).len() != members.len() {
            return Err(ChangeError::NotOneChange);
        }
        Ok(self.append(now, ballot, Value::Members(members)))
    }

    /// The leader appends `value` at its next slot and sends it on.
    /// The leader appends `value` at its next slot. It is persisted and sent at the next
    /// `flush`, together with everything appended since the last one.
    fn append(&mut self, _now: Micros, ballot: Ballot, value: Value) -> Slot {
        let slot = self.accepted_end + 1;
        let entry = Entry { ballot, value };
        self.log_insert(slot, entry.clone());
        self.accepted_end = slot;
        self.sync_peers();
        self.unflushed.push((slot, entry));
        slot
    }

    /// Persists and sends what was proposed since the last flush: one WAL write and one
    /// message per peer for a batch of proposals. A host calls it once it has made the
    /// proposals of a turn (calling it after each proposal works too, unbatched).
    pub fn flush(&mut self, now: Micros) {
        if self.unflushed.is_empty() {
            return;
        }
        let entries = std::mem::take(&mut self.unflushed);
        self.persist(None, entries, None);
        for peer in self.peers() {
            self.send_entries(now, peer);
        }
    }

    /// The leader's per-peer state follows the configuration in force.
    fn sync_peers(&mut self) {
        let peers = self.peers();
        // A new member is sent the newest entry: it answers where its log ends (`gap`).
        let next = self.accepted_end;
        let State::Leader(leadership) = &mut self.state else { return };
        leadership.next.retain(|peer, _| peers.contains(peer));
        leadership.matched.retain(|peer, _| peers.contains(peer));
        leadership.echoed.retain(|peer, _| peers.contains(peer));
        leadership.checkpoints.retain(|peer, _| peers.contains(peer));
        for peer in peers {
            leadership.next.entry(peer).or_insert(next);
            leadership.matched.entry(peer).or_insert(0);
        }
    }

    /// The write `id` asked for is durable.
    pub fn persisted(&mut self, now: Micros, id: u64) {
        let pending = self.persists.pop_front().expect("a persist completed that was not asked for");
        assert_eq!(pending.id, id, "persists complete in the order they were asked for");
        if pending.run == self.run {
            self.durable_end = self.durable_end.max(pending.end);
        }
        if let Some(reply) = pending.reply {
            let reply = match reply.message {
                // The run may have grown durable further meanwhile.
                Message::Accepted { ballot, sent_at, gap, .. } if ballot == self.run => {
                    let (up_to, checkpointed) = (self.durable_end, self.checkpointed);
                    Envelope { message: Message::Accepted { ballot, up_to, sent_at, gap, checkpointed }, ..reply }
                }
                _ => reply,
            };
            self.actions.push(Action::Send(reply));
        }
        if let State::Candidate(campaign) = &mut self.state {
            if campaign.ballot == self.promised && !campaign.promised_self {
                campaign.promised_self = true;
                self.maybe_lead(now);
            }
        }
        self.advance_commit();
    }

    /// Time passes.
    pub fn tick(&mut self, now: Micros) {
        match &self.state {
            State::Leader(leadership) => {
                let contact = leadership.contact;
                // Whatever a host left unflushed goes out now.
                self.flush(now);
                let State::Leader(leadership) = &self.state else { return };
                if self.quorum() > 1 && now >= contact + self.config.election_max {
                    // No quorum has answered for a whole election timeout: let another lead.
                    self.become_follower(now, None);
                } else if now >= leadership.next_heartbeat {
                    self.heartbeat(now);
                }
            }
            State::Follower | State::Candidate(_) => {
                if now >= self.election_deadline {
                    if self.can_lead() && !self.standby && self.amnesia.is_none() {
                        self.campaign(now);
                    } else {
                        // Log replicas and replicas outside the configuration never lead.
                        self.become_follower(now, self.leader);
                    }
                }
            }
        }
    }

    /// A message arrives.
    pub fn step(&mut self, now: Micros, from: ReplicaId, message: Message) {
        if from == self.id {
            return;
        }
        if carries_last_round(&message) {
            self.actions.push(Action::Report(Anomaly::LastRound { from }));
            return;
        }
        match message {
            Message::Prepare { ballot, from_slot } => self.on_prepare(now, from, ballot, from_slot),
            Message::Promise { ballot, entries, log_start, .. } => {
                self.on_promise(now, from, ballot, entries, log_start)
            }
            // Only a ballot's owner sends its accepts.
            Message::Accept { ballot, first_slot, entries, commit, sent_at } if ballot.replica == from => {
                self.on_accept(now, from, ballot, first_slot, entries, commit, sent_at)
            }
            Message::Accept { .. } => {}
            Message::Accepted { ballot, up_to, sent_at, gap, checkpointed } => {
                self.on_accepted(now, from, ballot, up_to, sent_at, gap, checkpointed)
            }
            Message::Reject { promised } => self.observe(now, promised),
        }
    }

    // ------------------------------------------------------------------ roles

    fn random_below(&mut self, bound: u64) -> u64 {
        // xorshift64*: deterministic from the seed.
        self.random ^= self.random >> 12;
        self.random ^= self.random << 25;
        self.random ^= self.random >> 27;
        self.random.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound.max(1)
    }

    fn reset_election_timer(&mut self, now: Micros) {
        let spread = self.config.election_max - self.config.election_min;
        self.election_deadline = now + self.config.election_min + self.random_below(spread);
    }

    /// Keeps this replica from campaigning (`true`) while its host's state machine awaits a
    /// snapshot, or lets it again. It still votes and accepts; only liveness is affected.
    pub fn set_standby(&mut self, standby: bool) {
        self.standby = standby;
    }

    /// The host lost the last durable write it made (media damage found at recovery, in a
    /// write it cannot read, so perhaps this replica's): the replica may have forgotten a
    /// promise or an acceptance it acknowledged, and an acceptor that forgets can join a new
    /// leader's quorum with one that never knew, so that another value is chosen for a slot.
    /// Call it right after `new`, before any input, and at every start until `Rejoined`.
    ///
    /// Until then it is a non-voting member, as in Chandra et al., "Paxos Made Live" (PODC
    /// '07, 5.1: a replica whose disk was lost catches up without answering with promises or
    /// acknowledgements, until it has seen an instance of Paxos started after it restarted),
    /// and as CTRL's recovery of lost metadata in Alagappan et al., "Protocol-Aware Recovery for
    /// Consensus-Based Storage" (FAST '18): it answers no `Prepare`, acknowledges no entry (its
    /// `Accepted` claim only slots it knows committed, with no clock reading for a lease, so
    /// that a leader sends it what it lacks), and does not campaign. It stores and applies
    /// what a leader sends it. A leader of a ballot it has no `Prepare` of since the restart
    /// gets a `Reject` one round above it, which makes it step down, so that an election
    /// follows.
    ///
    /// Release: once a `Prepare` of ballot `f` has arrived since the restart, a heartbeat of a
    /// ballot `b >= f` has told this replica its leader's log end `e`, and its commit index
    /// reached `e` (by entries or a snapshot). Why that suffices:
    /// * A message reaches the replica only within the life it was sent to (peer links are
    ///   connections; the simulator drops a delivery to a later life), so `f`'s campaign began
    ///   after the crash, and every promise `f` was elected with came after the crash, from
    ///   others (this replica gives none).
    /// * Any ballot `p` this replica promised and forgot was promised before the crash by its
    ///   candidate, and by every member of the quorum it was elected with. A quorum of others
    ///   in a group of up to four is all of the others, the candidate of `p` among them, so
    ///   each promised `f` after `p`: `f > p`, and `b >= f > p`. Following `b` (promising it)
    ///   breaks no forgotten promise, and its next campaign's round exceeds `p`'s.
    /// * An entry it accepted and forgot counted only toward values chosen by a quorum with
    ///   it; `b`'s leader was elected by a quorum of others after the crash, which meets that
    ///   quorum in another member, so `b`'s leader re-proposed the chosen value at its slot,
    ///   before its own first entry, at or below `e`. With its commit index at `e`, this
    ///   replica holds (applied, or in its log) the value chosen at every slot through `e`:
    ///   everything it could have acknowledged, and no later leader's phase 1 needs more of it.
    ///
    /// In a group of five or more, a quorum of others need not include the candidate of a
    /// forgotten promise whose quorum was still forming at the crash; the argument then also
    /// needs that campaign to have ended before `f`'s began (campaigns last at most
    /// `election_max`, and a restart takes longer). A group of one has no one to repair from:
    /// the call has no effect (as on a single node, the damage is only reported).
    pub fn set_amnesiac(&mut self) {
        let alone = self.members().len() == 1 && self.is_member();
        if !self.config.unsafe_amnesiac_votes && !alone {
            self.amnesia = Some(Amnesia::default());
        }
    }

    /// Whether this replica is amnesiac (`set_amnesiac`) still.
    pub fn amnesiac(&self) -> bool {
        self.amnesia.is_some()
    }

    /// Releases an amnesiac replica once it has caught up (`set_amnesiac`).
    fn check_rejoined(&mut self) {
        let Some(amnesia) = &self.amnesia else { return };
        let Some((ballot, through)) = amnesia.through else { return };
        if amnesia.fresh.is_some_and(|fresh| ballot >= fresh) && self.commit >= through {
            self.amnesia = None;
            self.actions.push(Action::Rejoined { ballot, through });
        }
    }

    /// Stops leading or campaigning, if it does: the host can no longer serve what this replica
    /// chooses (its state machine found damage and awaits a snapshot; with `set_standby` it
    /// does not campaign again until released). Another replica leads after an election
    /// timeout, once the lease this one's followers echoed has run out. Only liveness is
    /// affected: a replica may become a follower at any time.
    pub fn step_down(&mut self, now: Micros) {
        if !matches!(self.state, State::Follower) {
            self.become_follower(now, None);
        }
    }

    /// Campaigns at the next tick if this replica follows no known leader: the host prefers
    /// it to lead (leaders spread over nodes rather than gathering where replicas happened to
    /// start first). Affects only who is likely to lead, never safety.
    pub fn hasten_election(&mut self, now: Micros) {
        if matches!(self.state, State::Follower) && self.leader.is_none() && self.can_lead() {
            self.election_deadline = self.election_deadline.min(now);
        }
    }

    /// A ballot higher than ours was seen: stop leading or campaigning.
    fn observe(&mut self, now: Micros, ballot: Ballot) {
        self.round_seen = self.round_seen.max(ballot.round);
        let own = match &self.state {
            State::Leader(leadership) => Some(leadership.ballot),
            State::Candidate(campaign) => Some(campaign.ballot),
            State::Follower => None,
        };
        if own.is_some_and(|own| ballot > own) {
            self.become_follower(now, None);
        }
    }

    fn become_follower(&mut self, now: Micros, leader: Option<ReplicaId>) {
        // Entries proposed and not yet flushed are accepted here all the same: persist them.
        if !self.unflushed.is_empty() {
            let entries = std::mem::take(&mut self.unflushed);
            self.persist(None, entries, None);
        }
        self.state = State::Follower;
        self.leader = leader;
        self.reset_election_timer(now);
    }

    fn campaign(&mut self, now: Micros) {
        let Some(round) = self.round_seen.checked_add(1).filter(|&round| round < LAST_ROUND) else {
            self.actions.push(Action::Report(Anomaly::RoundsExhausted { round: self.round_seen }));
            self.become_follower(now, self.leader);
            return;
        };
        self.round_seen = round;
        let ballot = Ballot { round, replica: self.id };
        // What makes the campaign's promises worth anything: a ballot no acceptor has seen.
        assert!(ballot > self.promised, "campaign ballot {ballot:?} does not exceed the promised {:?}", self.promised);
        self.promised = ballot;
        self.leader = None;
        let from_slot = self.commit + 1;
        let asked = self.peers().into_iter().collect();
        self.state =
            State::Candidate(Campaign { ballot, from_slot, promises: BTreeMap::new(), promised_self: false, asked });
        self.persist(Some(ballot), Vec::new(), None);
        for peer in self.peers() {
            self.send(peer, Message::Prepare { ballot, from_slot });
        }
        self.reset_election_timer(now);
    }

    fn on_prepare(&mut self, now: Micros, from: ReplicaId, ballot: Ballot, from_slot: Slot) {
        if ballot < self.promised {
            self.send(from, Message::Reject { promised: self.promised });
            return;
        }
        if let Some(amnesia) = &mut self.amnesia {
            // Not answered: its campaign began after the restart, which is what releases this
            // replica once it has caught up from a leader of this ballot or a higher one.
            amnesia.fresh = amnesia.fresh.max(Some(ballot));
            self.round_seen = self.round_seen.max(ballot.round);
            return;
        }
        // Silence while a leader's lease may hold (or a duplicate of a prepare answered).
        let quiet = now < self.quiet_until && !self.config.unsafe_promise_during_lease;
        if ballot == self.promised || (quiet && self.leader != Some(ballot.replica)) {
            // Its round is still news: this replica's next campaign goes above it.
            self.round_seen = self.round_seen.max(ballot.round);
            return;
        }
        self.observe(now, ballot);
        let deadline = self.election_deadline;
        self.become_follower(now, None);
        if from_slot < self.log_start {
            // The candidate is behind this replica's compacted log and may not manage to lead:
            // this replica's own campaign is not put off for it.
            self.election_deadline = deadline;
        }
        self.promised = ballot;
        let entries: Vec<(Slot, Entry)> =
            self.log.range(from_slot..).map(|(&slot, entry)| (slot, entry.clone())).collect();
        let message = Message::Promise { ballot, entries, commit: self.commit, log_start: self.log_start };
        let reply = Envelope { from: self.id, to: from, message };
        self.persist(Some(ballot), Vec::new(), Some(reply));
    }

    fn on_promise(
        &mut self,
        now: Micros,
        from: ReplicaId,
        ballot: Ballot,
        entries: Vec<(Slot, Entry)>,
        log_start: Slot,
    ) {
        let State::Candidate(campaign) = &mut self.state else { return };
        if campaign.ballot != ballot {
            return;
        }
        campaign.promises.insert(from, (log_start, entries));
        self.maybe_lead(now);
    }

    /// With a quorum of promises, lead: re-propose every open slot at our ballot, then a no-op.
    ///
    /// The quorum is one of the newest configuration the promises reveal, not only of the one
    /// this replica knew: a replica that missed configuration changes learns of each committed
    /// one from any quorum of the one before (consecutive configurations share a member of
    /// every quorum), and asks its new members in turn, until its quorum is of the newest.
    fn maybe_lead(&mut self, now: Micros) {
        let State::Candidate(campaign) = &self.state else { return };
        if !campaign.promised_self {
            return;
        }
        let (ballot, from_slot) = (campaign.ballot, campaign.from_slot);
        if from_slot < self.log_start {
            // A snapshot installed meanwhile moved the log past this campaign's first slot.
            self.become_follower(now, None);
            return;
        }
        let mut highest: BTreeMap<Slot, Entry> = self.log.range(from_slot..).map(|(&s, e)| (s, e.clone())).collect();
        for (slot, entry) in campaign.promises.values().flat_map(|(_, entries)| entries) {
            if *slot >= from_slot && highest.get(slot).is_none_or(|held| held.ballot < entry.ballot) {
                highest.insert(*slot, entry.clone());
            }
        }
        let newest = highest.values().rev().find_map(|entry| match &entry.value {
            Value::Members(members) => Some(members.clone()),
            _ => None,
        });
        let members = newest.unwrap_or_else(|| {
            self.configs.range(..from_slot).next_back().map(|(_, members)| members.clone()).expect("a configuration")
        });
        if !members.contains(&Member::full(self.id)) {
            self.become_follower(now, None);
            return;
        }
        // A promiser whose log starts after `from_slot` compacted slots this campaign must fill
        // and could not report what was chosen there: only the others count. (Counting it, with
        // the rest enough to meet every quorum of this configuration, is not enough: a change
        // of configuration among those slots, unseen, may have been chosen by a quorum that
        // the rest do not meet.)
        let counted = |id: &ReplicaId| members.iter().any(|member| member.id == *id);
        let votes =
            1 + campaign.promises.iter().filter(|(id, (log_start, _))| counted(id) && *log_start <= from_slot).count();
        if votes < members.len() / 2 + 1 {
            let unasked: Vec<ReplicaId> = members
                .iter()
                .map(|member| member.id)
                .filter(|id| *id != self.id && !campaign.asked.contains(id))
                .collect();
            for peer in unasked {
                if let State::Candidate(campaign) = &mut self.state {
                    campaign.asked.insert(peer);
                }
                self.send(peer, Message::Prepare { ballot, from_slot });
            }
            return;
        }
        let last = highest.keys().next_back().map_or(from_slot - 1, |&slot| slot.max(from_slot - 1));
        // Slots up to `last` keep the value with the highest ballot (a no-op where none was
        // reported); `last + 1` is this leadership's own no-op.
        let entries: Vec<(Slot, Entry)> = (from_slot..=last + 1)
            .map(|slot| (slot, Entry { ballot, value: highest.remove(&slot).map_or(Value::Noop, |entry| entry.value) }))
            .collect();
        for (slot, entry) in &entries {
            self.log_insert(*slot, entry.clone());
        }
        self.run = ballot;
        self.accepted_end = last + 1;
        self.durable_end = self.commit;
        self.leader_commit = self.commit;
        self.leader = Some(self.id);
        let peers = self.peers();
        self.state = State::Leader(Leadership {
            ballot,
            first_slot: last + 1,
            next: peers.iter().map(|&peer| (peer, from_slot)).collect(),
            // Slots before `from_slot` are committed: counting them as acknowledged is safe,
            // and a peer that lacks them says so (`gap`).
            matched: peers.iter().map(|&peer| (peer, from_slot - 1)).collect(),
            echoed: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            snapshot_asked: BTreeMap::new(),
            next_heartbeat: now,
            lease_start: 0,
            contact: now,
        });
        self.persist(None, entries, None);
        self.heartbeat(now);
    }

    // ------------------------------------------------------------------ phase 2

    fn heartbeat(&mut self, now: Micros) {
        let State::Leader(leadership) = &mut self.state else { return };
        leadership.next_heartbeat = now + self.config.heartbeat;
        // Go back to what each peer acknowledged: whatever was lost is sent again.
        for (peer, next) in leadership.next.iter_mut() {
            *next = leadership.matched[peer] + 1;
        }
        for peer in self.peers() {
            let sent = self.send_entries(now, peer);
            // Entries sent through the log's end are followed by an empty Accept that says where
            // it ends: an amnesiac peer rejoins only once told (`set_amnesiac`), and under steady
            // writes a heartbeat would otherwise always carry entries.
            let to_end = match &self.state {
                State::Leader(leadership) => leadership.next[&peer] > self.accepted_end,
                _ => false,
            };
            if !sent || to_end {
                self.send_accept(now, peer, self.accepted_end + 1, Vec::new());
            }
        }
    }

    /// Sends `peer` what it lacks, within the in-flight bound; whether anything was sent.
    fn send_entries(&mut self, now: Micros, peer: ReplicaId) -> bool {
        let mut sent = false;
        loop {
            let State::Leader(leadership) = &mut self.state else { return sent };
            let (next, matched) = (leadership.next[&peer], leadership.matched[&peer]);
            if next < self.log_start {
                // The peer needs compacted entries: a snapshot, asked for again only after a while.
                let asked = leadership.snapshot_asked.get(&peer).copied();
                if asked.is_none_or(|asked| now >= asked + self.config.election_max) {
                    leadership.snapshot_asked.insert(peer, now);
                    let action = if self.members().contains(&Member::log(peer)) {
                        let (&slot, members) = self.configs.iter().next().expect("a configuration");
                        Action::StartLog { to: peer, slot, members: members.clone() }
                    } else {
                        Action::SendSnapshot { to: peer }
                    };
                    self.actions.push(action);
                }
                return true;
            }
            if next > self.accepted_end || next > matched + self.config.entries_in_flight_max {
                return sent;
            }
            let last = self.accepted_end.min(next + self.config.entries_per_message_max as u64 - 1);
            let values: Vec<Value> = (next..=last).map(|slot| self.log[&slot].value.clone()).collect();
            if let State::Leader(leadership) = &mut self.state {
                leadership.next.insert(peer, last + 1);
            }
            self.send_accept(now, peer, next, values);
            sent = true;
        }
    }

    fn send_accept(&mut self, now: Micros, peer: ReplicaId, first_slot: Slot, entries: Vec<Value>) {
        let ballot = self.run;
        let commit = self.commit;
        self.send(peer, Message::Accept { ballot, first_slot, entries, commit, sent_at: now });
    }

    #[allow(clippy::too_many_arguments)]
    fn on_accept(
        &mut self,
        now: Micros,
        from: ReplicaId,
        ballot: Ballot,
        first_slot: Slot,
        values: Vec<Value>,
        commit: Slot,
        sent_at: Micros,
    ) {
        if ballot < self.promised {
            self.send(from, Message::Reject { promised: self.promised });
            return;
        }
        if let Some(amnesia) = &self.amnesia {
            if amnesia.fresh.is_none_or(|fresh| ballot < fresh) {
                // A leadership that may predate the restart: it steps down, and an election
                // follows (`set_amnesiac`).
                let above = Ballot { round: ballot.round.saturating_add(1).min(LAST_ROUND - 1), replica: self.id };
                self.send(from, Message::Reject { promised: above.max(ballot) });
                return;
            }
            if values.is_empty() {
                // A heartbeat: the leader has sent everything, so its log ends before it.
                let end = first_slot - 1;
                if self.amnesia.as_ref().and_then(|amnesia| amnesia.through).is_none_or(|known| known < (ballot, end)) {
                    self.amnesia.as_mut().expect("amnesiac").through = Some((ballot, end));
                }
            }
        }
        let promise = (ballot > self.promised).then_some(ballot);
        self.observe(now, ballot);
        self.promised = ballot;
        if !matches!(self.state, State::Follower) || self.leader != Some(from) {
            self.become_follower(now, Some(from));
        }
        self.quiet_until = now + self.config.election_min;
        self.reset_election_timer(now);
        if self.run != ballot {
            self.run = ballot;
            self.accepted_end = self.commit;
            self.durable_end = self.commit;
        }
        self.leader_commit = self.leader_commit.max(commit);
        let (id, checkpointed, commit_here) = (self.id, self.checkpointed, self.commit);
        // An amnesiac replica claims only committed slots, with no clock reading: it tells the
        // leader where to send from and is counted in no quorum, nor in a lease.
        let amnesiac = self.amnesia.is_some();
        let accepted = move |up_to: Slot, gap| Envelope {
            from: id,
            to: from,
            message: Message::Accepted {
                ballot,
                up_to: if amnesiac { commit_here } else { up_to },
                sent_at: if amnesiac { 0 } else { sent_at },
                gap,
                checkpointed,
            },
        };
        if first_slot > self.accepted_end + 1 {
            // A gap before these entries (or, in a heartbeat, before the leader's end): say
            // where the run ends so the leader goes back.
            let reply = accepted(self.durable_end, true);
            if promise.is_some() {
                self.persist(promise, Vec::new(), None);
            }
            self.actions.push(Action::Send(reply));
            self.advance_commit();
            return;
        }
        let entries: Vec<(Slot, Entry)> = (first_slot..)
            .zip(values)
            .filter(|(slot, _)| *slot > self.accepted_end)
            .map(|(slot, value)| (slot, Entry { ballot, value }))
            .collect();
        for (slot, entry) in &entries {
            self.log_insert(*slot, entry.clone());
            self.accepted_end = *slot;
        }
        if amnesiac {
            // Stored and learnt from, never acknowledged.
            if !entries.is_empty() || promise.is_some() {
                self.persist(promise, entries, None);
            }
            self.actions.push(Action::Send(accepted(self.durable_end, false)));
        } else if entries.is_empty() && promise.is_none() {
            self.actions.push(Action::Send(accepted(self.durable_end, false)));
        } else if self.config.unsafe_ack_before_durable {
            // The planted bug: claim the entries durable before they are.
            let end = self.accepted_end;
            self.persist(promise, entries, None);
            self.durable_end = end;
            self.actions.push(Action::Send(accepted(end, false)));
        } else {
            let reply = accepted(self.durable_end, false);
            self.persist(promise, entries, Some(reply));
        }
        self.advance_commit();
    }

    #[allow(clippy::too_many_arguments)]
    fn on_accepted(
        &mut self,
        now: Micros,
        from: ReplicaId,
        ballot: Ballot,
        up_to: Slot,
        sent_at: Micros,
        gap: bool,
        checkpointed: Slot,
    ) {
        if ballot > self.promised {
            self.observe(now, ballot);
            return;
        }
        let quorum = self.quorum();
        let member = self.is_member();
        let State::Leader(leadership) = &mut self.state else { return };
        if ballot != leadership.ballot || !leadership.next.contains_key(&from) {
            return;
        }
        let matched = leadership.matched.entry(from).or_default();
        *matched = (*matched).max(up_to);
        let known = leadership.checkpoints.entry(from).or_default();
        *known = (*known).max(checkpointed);
        if gap {
            // Send again from where the peer's run ends.
            leadership.next.insert(from, up_to + 1);
        }
        if up_to + 1 >= self.log_start {
            leadership.snapshot_asked.remove(&from);
        }
        let echoed = leadership.echoed.entry(from).or_default();
        *echoed = (*echoed).max(sent_at);
        // The lease runs from the newest reading a quorum (this replica included) echoed.
        let mut readings: Vec<Micros> = leadership.echoed.values().copied().collect();
        readings.sort_unstable_by(|a, b| b.cmp(a));
        // A leader outside the configuration (removing itself) does not count itself.
        let index = if member { quorum.checked_sub(2) } else { Some(quorum - 1) };
        if let Some(&reading) = index.and_then(|index| readings.get(index)) {
            leadership.lease_start = leadership.lease_start.max(reading);
            leadership.contact = leadership.contact.max(reading);
        }
        self.advance_commit();
        self.send_entries(now, from);
    }

    /// Moves the commit index as far as what is known allows, and emits the applies.
    fn advance_commit(&mut self) {
        let target = match &self.state {
            State::Leader(leadership) => {
                let mut ends: Vec<Slot> = leadership.matched.values().copied().collect();
                if self.is_member() {
                    ends.push(self.durable_end);
                }
                ends.sort_unstable_by(|a, b| b.cmp(a));
                ends.get(self.quorum() - 1).map_or(self.commit, |&end| end.min(self.accepted_end))
            }
            // Entries of the leader's ballot that are durable here are the leader's values.
            _ => self.leader_commit.min(self.durable_end),
        };
        while self.commit < target {
            self.commit += 1;
            let entry = self.log.get(&self.commit).expect("a committed slot holds its entry");
            let value = entry.value.clone();
            self.committed_ballot = entry.ballot;
            self.actions.push(Action::Apply { slot: self.commit, value });
        }
        // A leader that removed itself hands over once the change is committed.
        if matches!(self.state, State::Leader(_)) && !self.is_member() && self.members_committed() {
            self.state = State::Follower;
            self.leader = None;
        }
        self.check_rejoined();
    }

    // ------------------------------------------------------------------ output

    fn send(&mut self, to: ReplicaId, message: Message) {
        self.actions.push(Action::Send(Envelope { from: self.id, to, message }));
    }

    fn persist(&mut self, promised: Option<Ballot>, entries: Vec<(Slot, Entry)>, reply: Option<Envelope>) {
        let id = self.next_persist;
        self.next_persist += 1;
        self.persists.push_back(PendingPersist { id, run: self.run, end: self.accepted_end, reply });
        self.actions.push(Action::Persist { id, promised, entries });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Completes every persist the replica asked for, as a host would.
    fn settle(replica: &mut Replica, now: Micros) -> Vec<Action> {
        let mut seen = Vec::new();
        loop {
            let actions = replica.drain();
            if actions.is_empty() {
                return seen;
            }
            for action in &actions {
                if let Action::Persist { id, .. } = action {
                    replica.persisted(now, *id);
                }
            }
            seen.extend(actions);
        }
    }

    #[test]
    fn a_leader_that_steps_down_on_standby_does_not_lead_again_until_released() {
        let config = Config::default();
        let mut replica = Replica::new(config.clone(), 1, &[Member::full(1)], Durable::default(), 0, 0, 9);
        let mut now = 10 * config.election_max;
        replica.tick(now);
        settle(&mut replica, now);
        assert_eq!(replica.role(), Role::Leader, "a group of one elects itself");
        replica.set_standby(true);
        replica.step_down(now);
        assert_eq!((replica.role(), replica.leader()), (Role::Follower, None));
        assert_eq!(replica.propose(now, 1, vec![1]), Err(ProposeError::NotLeader { leader: None }));
        now += 10 * config.election_max;
        replica.tick(now);
        settle(&mut replica, now);
        assert_eq!(replica.role(), Role::Follower, "on standby it does not campaign");
        replica.set_standby(false);
        now += 10 * config.election_max;
        replica.tick(now);
        settle(&mut replica, now);
        assert_eq!(replica.role(), Role::Leader, "released, it leads again");
    }

    #[test]
    fn configuration_changes_are_one_at_a_time_and_wait_for_the_previous() {
        let config = Config::default();
        let mut replica = Replica::new(config.clone(), 1, &[Member::full(1)], Durable::default(), 0, 0, 7);
        assert_eq!(replica.propose(0, 1, b"x".to_vec()), Err(ProposeError::NotLeader { leader: None }));
        replica.tick(config.election_max);
        settle(&mut replica, config.election_max);
        assert_eq!((replica.role(), replica.commit()), (Role::Leader, 1), "a group of one leads alone");
        let now = config.election_max;
        let two_changes = vec![Member::full(1), Member::full(2), Member::full(3)];
        assert_eq!(replica.propose_members(now, two_changes), Err(ChangeError::NotOneChange));
        let duplicate = vec![Member::full(1), Member::log(1)];
        assert_eq!(replica.propose_members(now, duplicate), Err(ChangeError::NotOneChange));
        let with_log = vec![Member::full(1), Member::log(2)];
        assert_eq!(replica.propose_members(now, with_log.clone()), Ok(2));
        replica.flush(now);
        assert_eq!(replica.members(), with_log.as_slice(), "in force once in the log");
        let promoted = vec![Member::full(1), Member::full(2)];
        assert_eq!(replica.propose_members(now, promoted.clone()), Err(ChangeError::InProgress));
        // The new member must accept before anything commits: two of two now.
        let actions = settle(&mut replica, now);
        assert_eq!(replica.commit(), 1);
        assert!(actions.iter().any(|action| matches!(action, Action::Send(Envelope { to: 2, .. }))));
        let accepted = Message::Accepted {
            ballot: replica.leading().unwrap(),
            up_to: 2,
            sent_at: now,
            gap: false,
            checkpointed: 0,
        };
        replica.step(now, 2, accepted);
        settle(&mut replica, now);
        assert!(replica.members_committed() && replica.commit() == 2);
        // A change of kind is one change.
        assert_eq!(replica.propose_members(now, promoted), Ok(3));
        replica.flush(now);
        // Log replicas never campaign, nor do replicas on standby, until released.
        let mut log = Replica::new(config.clone(), 2, &with_log, Durable::default(), 0, 0, 9);
        log.tick(10 * config.election_max);
        assert_eq!((log.role(), log.drain()), (Role::Follower, vec![]));
        let pair = [Member::full(1), Member::full(2)];
        let mut standby = Replica::new(config.clone(), 1, &pair, Durable::default(), 0, 0, 9);
        standby.set_standby(true);
        standby.tick(10 * config.election_max);
        assert_eq!((standby.role(), standby.drain()), (Role::Follower, vec![]));
        standby.set_standby(false);
        standby.tick(20 * config.election_max);
        assert_eq!(standby.role(), Role::Candidate, "released, it campaigns");
        // A replica that knows no configuration accepts but never campaigns, until it joins.
        let mut unknown = Replica::new(config.clone(), 1, &[], Durable::default(), 0, 0, 9);
        unknown.tick(10 * config.election_max);
        assert_eq!((unknown.role(), unknown.drain()), (Role::Follower, vec![]));
        let accept = Message::Accept {
            ballot: Ballot { round: 1, replica: 2 },
            first_slot: 1,
            entries: vec![Value::Noop],
            commit: 0,
            sent_at: 0,
        };
        unknown.step(10 * config.election_max, 2, accept);
        assert!(unknown.drain().iter().any(|action| matches!(action, Action::Persist { .. })));
        unknown.join_group(&pair);
        assert_eq!(unknown.members(), pair);
        // A configuration it knows is not replaced.
        unknown.join_group(&with_log);
        assert_eq!(unknown.members(), pair);
        unknown.tick(30 * config.election_max);
        assert_eq!(unknown.role(), Role::Candidate, "a member now, it campaigns");
    }

    #[test]
    fn the_last_round_is_refused_and_never_campaigned_past() {
        let config = Config::default();
        let group = [Member::full(1), Member::full(2), Member::full(3)];
        let mut replica = Replica::new(config.clone(), 1, &group, Durable::default(), 0, 0, 7);
        let now = 10 * config.election_max;
        let last = Ballot { round: LAST_ROUND, replica: 2 };
        let entry = Entry { ballot: last, value: Value::Noop };
        for message in [
            Message::Prepare { ballot: last, from_slot: 1 },
            Message::Accept { ballot: last, first_slot: 1, entries: vec![Value::Noop], commit: 0, sent_at: now },
            Message::Promise {
                ballot: Ballot { round: 3, replica: 1 },
                entries: vec![(1, entry)],
                commit: 0,
                log_start: 1,
            },
            Message::Accepted { ballot: last, up_to: 1, sent_at: now, gap: false, checkpointed: 0 },
            Message::Reject { promised: last },
        ] {
            replica.step(now, 2, message.clone());
            assert_eq!(replica.drain(), vec![Action::Report(Anomaly::LastRound { from: 2 })], "{message:?}");
        }
        assert_eq!(replica.promised, Ballot::default(), "nothing refused was promised");
        // The round below is a ballot like any: promised, and then none is left above it.
        let below = Ballot { round: LAST_ROUND - 1, replica: 2 };
        replica.step(now, 2, Message::Prepare { ballot: below, from_slot: 1 });
        settle(&mut replica, now);
        assert_eq!(replica.promised, below);
        replica.tick(now + 10 * config.election_max);
        assert_eq!(replica.role(), Role::Follower);
        assert_eq!(replica.drain(), vec![Action::Report(Anomaly::RoundsExhausted { round: LAST_ROUND - 1 })]);
        // A replica that recovered the last round (damage, or a bug) never campaigns: its
        // round + 1 would wrap to 0, below every ballot.
        let durable = Durable { promised: last, entries: BTreeMap::new() };
        let mut recovered = Replica::new(config.clone(), 1, &group, durable, 0, 0, 7);
        recovered.tick(10 * config.election_max);
        assert_eq!(recovered.role(), Role::Follower);
        assert_eq!(recovered.drain(), vec![Action::Report(Anomaly::RoundsExhausted { round: LAST_ROUND })]);
    }
}
