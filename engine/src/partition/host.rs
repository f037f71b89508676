//! The decisions of a partition replica's host, without I/O: which chosen entries are applied
//! and when, and how far the in-memory log is compacted. The server's host
//! (`tessera_net::replicated`) and the deterministic simulator both run a replica through this,
//! so what the simulator checks is what the server does.
//!
//! A chosen entry (`Action::Apply`) is applied by the host's part in the group's newest
//! configuration: a full member applies it; a log member applies none (its entries hold the
//! WAL until it is retired); a replica whose configuration does not name its node yet (it is
//! joining, and the entry that adds it is still to come) holds it back until it learns its
//! part. While a snapshot is being installed (from its first chunk, or a repair, until it is
//! durable), every entry the replica chooses waits, and afterwards is applied if it follows
//! the snapshot's slot: the partition never mixes a partial snapshot with entries.

use crate::paxos::{Action, Ballot, Member, MemberKind, Micros, Replica, ReplicaId, Slot, Value};

/// Host settings.
#[derive(Clone, Copy, Debug)]
pub struct HostConfig {
    /// Entries a leader keeps for a full replica that has not checkpointed them; one that lags
    /// further gets a snapshot instead.
    pub log_retain: u64,
    /// A planted bug for the simulator to find: entries chosen while a snapshot is being
    /// installed are applied at once, beside the partial snapshot. Never set outside tests.
    pub unsafe_apply_during_install: bool,
}

/// A replica and what its host holds for it.
pub struct ReplicaHost {
    replica: Replica,
    node: ReplicaId,
    config: HostConfig,
    /// Entries chosen while this node's part in the group was unknown.
    held: Vec<(Slot, Value)>,
    /// While a snapshot is being installed: the entries chosen meanwhile, and the slot the
    /// snapshot must reach (a repair's: what the replica had committed).
    installing: Option<(Vec<(Slot, Value)>, Slot)>,
    /// Routed actions not yet drained.
    out: Vec<Action>,
}

impl ReplicaHost {
    pub fn new(replica: Replica, config: HostConfig) -> ReplicaHost {
        let node = replica.id();
        ReplicaHost { replica, node, config, held: Vec::new(), installing: None, out: Vec::new() }
    }

    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The replica, to step, tick or propose through; its actions are taken with `drain`.
    pub fn replica_mut(&mut self) -> &mut Replica {
        &mut self.replica
    }

    /// The part this node plays in the replica's newest configuration (none: it is not a
    /// member, or does not know yet that it is one).
    pub fn part(&self) -> Option<MemberKind> {
        self.replica.members().iter().find(|member| member.id == self.node).map(|member| member.kind)
    }

    /// What the replica asked for, with its chosen entries routed (module documentation): an
    /// `Action::Apply` here is one to apply now, in slot order.
    pub fn drain(&mut self) -> Vec<Action> {
        for action in self.replica.drain() {
            match action {
                Action::Apply { slot, value } => self.chosen(slot, value),
                other => self.out.push(other),
            }
        }
        std::mem::take(&mut self.out)
    }

    fn chosen(&mut self, slot: Slot, value: Value) {
        if let Some((deferred, _)) = self.installing.as_mut().filter(|_| !self.config.unsafe_apply_during_install) {
            deferred.push((slot, value));
            return;
        }
        let part = self.part();
        self.settle_held(part);
        match part {
            Some(MemberKind::Full) => self.out.push(Action::Apply { slot, value }),
            Some(MemberKind::Log) => {}
            None => self.held.push((slot, value)),
        }
    }

    /// Entries held back while the part was unknown: applied once a full member, dropped once a
    /// log member.
    fn settle_held(&mut self, part: Option<MemberKind>) {
        if part.is_none() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        if part == Some(MemberKind::Full) {
            self.out.extend(held.into_iter().map(|(slot, value)| Action::Apply { slot, value }));
        }
    }

    /// The group started with `members` (a replica created before its node knew the group).
    pub fn join_group(&mut self, members: &[Member]) {
        self.replica.join_group(members);
        let part = self.part();
        self.settle_held(part);
    }

    /// Whether a snapshot is being installed.
    pub fn installing(&self) -> bool {
        self.installing.is_some()
    }

    /// The slot a snapshot being installed must reach, if one is.
    pub fn install_floor(&self) -> Option<Slot> {
        self.installing.as_ref().map(|(_, floor)| *floor)
    }

    /// A snapshot's install begins (its first chunk, or a restart midway): what the replica
    /// chooses from now on waits for it, and it does not campaign (as leader it could not
    /// serve what it chose).
    pub fn begin_install(&mut self) {
        self.installing.get_or_insert_with(|| (Vec::new(), 0));
        self.replica.set_standby(true);
    }

    /// The partition's data here is damaged: it stops leading and waits for a snapshot that
    /// reaches what it had committed (entries chosen after are deferred; those before would
    /// not be applied again). False if it is not a full member or installs already.
    pub fn begin_repair(&mut self, now: Micros) -> bool {
        if self.part() != Some(MemberKind::Full) || self.installing() {
            return false;
        }
        self.replica.set_standby(true);
        self.replica.step_down(now);
        self.installing = Some((Vec::new(), self.replica.commit()));
        true
    }

    /// The snapshot through `slot`, from the leader `from` of `ballot`, with `members` the
    /// configuration in force there, is durable here: the replica continues after it, with the
    /// entries chosen meanwhile that follow it (drained as `Action::Apply`). Returns the slots
    /// chosen meanwhile that the snapshot covers: their writes may or may not be in it.
    pub fn end_install(&mut self, slot: Slot, from: ReplicaId, ballot: Ballot, members: Vec<Member>) -> Vec<Slot> {
        self.replica.install_snapshot(slot, from, ballot, members);
        self.replica.set_standby(false);
        // What a joining replica held back before the snapshot is in it, or older.
        self.held.clear();
        let (deferred, _) = self.installing.take().unwrap_or_default();
        let mut covered = Vec::new();
        for (chosen, value) in deferred {
            if chosen > slot {
                self.chosen(chosen, value);
            } else {
                covered.push(chosen);
            }
        }
        covered
    }

    /// Drops from the in-memory log what every full replica has checkpointed
    /// (`Replica::compactable`), or, when one lags by more than `log_retain` entries and no log
    /// replica (which cannot take a snapshot) is a member, what this one has checkpointed
    /// (`checkpointed`); never past `floor` (a snapshot being sent, which the receiver
    /// continues from).
    pub fn compact(&mut self, checkpointed: Slot, floor: Option<Slot>) {
        let replica = &mut self.replica;
        replica.checkpointed(checkpointed);
        let mut through = replica.compactable().min(checkpointed);
        let full_only = replica.members().iter().all(|member| member.kind == MemberKind::Full);
        if full_only && checkpointed.saturating_sub(through) > self.config.log_retain {
            through = checkpointed.min(replica.commit());
        }
        if let Some(floor) = floor {
            through = through.min(floor);
        }
        assert!(through <= checkpointed, "compacting through {through}, past the checkpoint at {checkpointed}");
        if through >= replica.log_start() {
            replica.compact(through);
        }
    }
}
