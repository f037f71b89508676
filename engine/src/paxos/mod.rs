//! Multi-Paxos for one replication group, as a pure state machine: no I/O, no clock, no
//! randomness of its own. The host feeds it inputs (`tick`, `step` with a message, `propose`,
//! `persisted` when a write it asked for is durable) with the time as the host's clock reads
//! it, and drains `Action`s: messages to send, writes to make durable, committed entries to
//! apply. The same code runs in the server and in the deterministic simulator (tests/).
//!
//! The protocol (Lamport's Paxos, run once per slot, with phase 1 shared by all open slots):
//! * A ballot is `(round, replica)`; ballots are totally ordered and each belongs to one
//!   replica. A replica whose election timer fires (randomized between `election_min` and
//!   `election_max` after it last heard from a leader) becomes a candidate: it promises its own
//!   ballot and sends `Prepare { from_slot }`, its first slot not known to be committed.
//! * An acceptor promises a ballot higher than any it promised, durably, and answers with every
//!   entry it accepted from `from_slot` on. It refuses (by silence) while it heard from a leader
//!   less than `election_min` ago: that is what makes leader leases safe.
//! * With promises from a quorum (itself included) the candidate leads: for every slot from
//!   `from_slot` to the highest reported, it re-proposes the entry with the highest ballot
//!   (a no-op where none was reported), then appends a no-op of its own ballot.
//! * Phase 2: the leader appends each proposal at the next slot and sends `Accept` to every
//!   peer without waiting (pipelined). An acceptor accepts entries of a ballot no lower than its
//!   promise, makes them durable, and only then answers `Accepted { up_to }`: the end of its
//!   contiguous run of durable entries of that ballot. A slot is committed once a quorum's
//!   `up_to` (the leader's own durable end included) reaches it. `Accept` carries the leader's
//!   commit index, so acceptors learn what to apply; empty `Accept`s are the heartbeats.
//! * A replica that hears of a higher ballot (in any message) stops leading or campaigning.
//!
//! Leases. Every `Accept` carries the leader's clock reading `sent_at`, echoed in `Accepted`.
//! Once a quorum (the leader counts itself) echoed a reading `t`, each of them heard from the
//! leader at or after `t` and will promise no other ballot for `election_min` of its own clock.
//! The leader serves strongly consistent reads alone until `t + lease`, where `lease` is
//! shorter than `election_min` by the configured clock-drift bound (`Config::validate`), and
//! only once an entry of its own ballot is committed (so everything chosen before is applied).
//! A restarted replica promises nothing for `election_min`, since it may have heard from a
//! leader just before it stopped.
//!
//! Snapshots. The host applies committed entries to its state machine and checkpoints it;
//! it then `compact`s the log through the checkpoint's slot. A peer that needs entries the
//! leader no longer has gets `Action::SendSnapshot`: the host streams its state machine, and
//! the receiving host, once the snapshot is durable, calls `install_snapshot`; replication
//! resumes after it. A candidate ignores promises from replicas whose log starts after its
//! `from_slot`: it could not know the values of the slots in between, and they are ahead of it.
//!
//! Membership. The configuration is itself in the log (`Value::Members`), and a replica uses
//! the newest configuration in its log, committed or not, for every quorum (as in Raft's
//! single-server changes): consecutive configurations differ by one member, so any quorum of
//! one meets any quorum of the next, and a leader proposes a change only once the previous one
//! and an entry of its own ballot are committed. A leader that removed itself steps down once
//! the change is committed. Log replicas (`MemberKind::Log`) vote and accept but never lead,
//! and one that needs entries the leader compacted gets a log start (`Action::StartLog`)
//! rather than a snapshot. A replica that knows no configuration (created for a group its
//! node does not know yet) accepts but never campaigns until it is given one (`join_group`).
//!
//! Invariants (checked by the simulator): one value chosen per slot; entries applied in slot
//! order, the same on every replica; an acceptor acknowledges only durable entries; at most
//! one replica holds a valid lease at any moment.

mod codec;
mod replica;

pub use codec::{decode_configuration, decode_persist, encode_members, encode_persist, PersistContent};
pub use replica::{Action, Anomaly, ChangeError, Config, Durable, ProposeError, Replica, Role, LAST_ROUND};

/// A replica of the group: its index in the group's member list is not assumed; ids are
/// chosen by the host.
pub type ReplicaId = u32;

/// A log position. Slot 0 is before the log: the first entry is at slot 1.
pub type Slot = u64;

/// Time as the host's clock reads it, in microseconds. Only differences are used.
pub type Micros = u64;

/// A ballot: rounds ordered first, the replica's id breaking ties, so no two replicas ever
/// own the same ballot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ballot {
    pub round: u64,
    pub replica: ReplicaId,
}

/// What part a member plays in its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberKind {
    /// Holds the state machine: votes, accepts, applies, may lead and serve reads.
    Full,
    /// Holds the log only: votes and accepts, never leads. Restores quorum durability quickly
    /// when a full replica is lost, while a new full replica is built.
    Log,
}

/// One member of a group's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    pub id: ReplicaId,
    pub kind: MemberKind,
}

impl Member {
    pub fn full(id: ReplicaId) -> Member {
        Member { id, kind: MemberKind::Full }
    }

    pub fn log(id: ReplicaId) -> Member {
        Member { id, kind: MemberKind::Log }
    }
}

/// What a slot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Fills a slot a new leader found open with nothing accepted, and marks the start of a
    /// leadership. Applies nothing.
    Noop,
    /// A command for the replicated state machine, opaque here; `id` is the proposer's, so
    /// the host can tell whether the value chosen for a slot is the one it proposed. Shared
    /// bytes: the log, the persist, the messages to each peer and the apply all hold the same
    /// command without copying it.
    Command { id: u64, bytes: bytes::Bytes },
    /// The group's members from this slot on (a configuration change; see `Replica`).
    Members(Vec<Member>),
}

/// A value and the ballot it was accepted at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub ballot: Ballot,
    pub value: Value,
}

/// What replicas say to each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Phase 1a: promise `ballot`, and report what you accepted from `from_slot` on.
    Prepare { ballot: Ballot, from_slot: Slot },
    /// Phase 1b: promised; the entries accepted at `from_slot` and after, the sender's commit
    /// index, and its first slot still in its log (earlier ones are in its snapshot only).
    Promise { ballot: Ballot, entries: Vec<(Slot, Entry)>, commit: Slot, log_start: Slot },
    /// Phase 2a: accept `entries` (consecutive slots from `first_slot`; empty for a
    /// heartbeat); the leader's commit index and its clock reading, for the lease.
    Accept { ballot: Ballot, first_slot: Slot, entries: Vec<Value>, commit: Slot, sent_at: Micros },
    /// Phase 2b: every slot up to `up_to` (past the sender's commit) holds a durable entry of
    /// `ballot`. `gap`: an `Accept` was refused because slots before it were missing.
    /// `checkpointed`: the slot through which the sender's host made its state machine durable
    /// (the leader keeps its log until every full member has checkpointed what it holds).
    Accepted { ballot: Ballot, up_to: Slot, sent_at: Micros, gap: bool, checkpointed: Slot },
    /// The sender promised `promised`, higher than the ballot of the message it answers.
    Reject { promised: Ballot },
}

/// A message with its sender and receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub from: ReplicaId,
    pub to: ReplicaId,
    pub message: Message,
}
