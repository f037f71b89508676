//! Snapshots between a partition's replicas, for a replica that needs entries its leader's
//! log no longer holds (`Action::SendSnapshot`).
//!
//! The leader pins its newest durable checkpoint (`Store::snapshot`: a consistent image at the
//! slot that checkpoint applied, read while writes go on) and streams the partition's items in
//! chunks on the peer link, one at a time: each is acknowledged once the receiver stored it,
//! is sent again every `RESEND_AFTER` until it is, and a chunk not acknowledged within
//! `ACK_TIMEOUT` ends the stream (the core asks again).
//! Once the receiver acknowledged a chunk, the leader's log is not compacted past the
//! snapshot's slot, so the receiver continues from the log.
//!
//! The receiver empties the partition and marks it installing at the first chunk
//! (`Store::install_begin`), stores each chunk, and at the last checks the counts, makes the
//! partition durable at the snapshot's slot (a checkpoint), and only then tells its replica
//! (`Replica::install_snapshot`). From the first chunk until then, the entries its replica
//! chooses are held back (`ReplicaHost::begin_install`) and afterwards applied if they follow the
//! snapshot's slot: the partition never mixes a partial snapshot with entries. A partition
//! still installing (a stream that broke off, or a restart midway) asks its leader for a
//! snapshot every second.
//!
//! Repair: a partition whose pages the store's scrub found damaged (`repair_damaged`) is
//! reinstalled the same way. Its replica stops leading, if it did, and goes on standby (it
//! still votes and accepts, so the group keeps its quorum), and the partition waits for a
//! snapshot as one still installing does, from the leader the others elect. The snapshot must
//! reach the slot this replica had committed when the damage was found (entries chosen after
//! it are deferred; those before would not be applied again): a sender applies what it has
//! chosen and checkpoints before it reads the snapshot, and a receiver refuses an older one.
//! Installing it cuts the damaged pages out of the tree without reading them
//! (`Store::install_begin`).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::FutureExt;

use tessera_engine::partition::host::ReplicaHost;
use tessera_engine::paxos::{Member, ReplicaId, Slot};
use tessera_engine::{Error, PartitionId};
use tessera_wire::replication::{PeerMessage, SnapshotAck, SnapshotChunk, SnapshotEnd};

use super::ReplicatedLog;

/// Bytes of items per chunk (a chunk holds at least one item).
const CHUNK_BYTES: usize = 256 << 10;
/// How long the sender waits for a chunk's acknowledgement (the last one follows the
/// receiver's checkpoint), sending it again now and then (links drop what they cannot send).
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
const RESEND_AFTER: Duration = Duration::from_secs(1);
/// A stream the receiver has not heard from for this long is given up.
const STREAM_IDLE_MAX: Duration = Duration::from_secs(5);

/// Snapshots sent and installed by one core, for statistics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    pub sent: u64,
    pub installed: u64,
}

/// A snapshot being sent to one replica.
struct Outgoing {
    stream: u64,
    /// The slot it reflects: once the receiver answered, the partition's log is not compacted
    /// past it.
    slot: Cell<Slot>,
    ack: RefCell<Option<SnapshotAck>>,
    waker: RefCell<Option<Waker>>,
}

impl Outgoing {
    fn answer(&self, ack: SnapshotAck) {
        *self.ack.borrow_mut() = Some(ack);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Sends `chunk` until the receiver acknowledges it, or says why not.
    async fn deliver(&self, log: &Weak<ReplicatedLog>, chunk: SnapshotChunk) -> Result<(), String> {
        let (next, deadline) = (chunk.seq + 1, Instant::now() + ACK_TIMEOUT);
        loop {
            log.upgrade().ok_or("the node is stopping")?.send(PeerMessage::Chunk(chunk.clone()));
            let waited = async { Some(self.acknowledged(next).await) }.or(async {
                glommio::timer::sleep(RESEND_AFTER).await;
                None
            });
            match waited.await {
                Some(result) => return result,
                None if Instant::now() >= deadline => {
                    return Err(format!("chunk {} was not acknowledged within {ACK_TIMEOUT:?}", chunk.seq))
                }
                None => {}
            }
        }
    }

    /// The receiver's acknowledgement of every chunk before `next`, or why there is none.
    async fn acknowledged(&self, next: u32) -> Result<(), String> {
        futures_lite::future::poll_fn(|context| {
            match self.ack.borrow().as_ref() {
                Some(ack) if ack.refused.is_some() => {
                    return Poll::Ready(Err(format!("refused: {}", ack.refused.as_deref().unwrap_or_default())))
                }
                Some(ack) if ack.next == 0 => return Poll::Ready(Err("the receiver started over".to_string())),
                Some(ack) if ack.next >= next => return Poll::Ready(Ok(())),
                _ => {}
            }
            *self.waker.borrow_mut() = Some(context.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// A snapshot being received.
struct Incoming {
    from: ReplicaId,
    stream: u64,
    /// The next chunk expected.
    next: u32,
    /// A chunk is being stored.
    busy: bool,
    heard: Instant,
}

/// A core's snapshot streams, both ways.
#[derive(Default)]
pub(super) struct Snapshots {
    outgoing: RefCell<BTreeMap<(PartitionId, ReplicaId), Rc<Outgoing>>>,
    incoming: RefCell<BTreeMap<PartitionId, Incoming>>,
    next_stream: Cell<u64>,
    stats: Cell<SnapshotStats>,
}

impl Snapshots {
    /// Forgets `partition` (retired): a snapshot being received goes; one being sent ends at
    /// its next acknowledgement or timeout.
    pub(super) fn forget(&self, partition: PartitionId) {
        self.incoming.borrow_mut().remove(&partition);
        self.outgoing.borrow_mut().retain(|(of, _), _| *of != partition);
    }
}

impl ReplicatedLog {
    pub fn snapshot_stats(&self) -> SnapshotStats {
        self.snapshots.stats.get()
    }

    /// The slot below which `partition`'s log must stay: the oldest snapshot being sent to a
    /// replica that acknowledged a chunk (one that is down holds nothing back).
    pub(super) fn snapshot_floor(&self, partition: PartitionId) -> Option<Slot> {
        let outgoing = self.snapshots.outgoing.borrow();
        outgoing
            .range((partition, 0)..=(partition, ReplicaId::MAX))
            .filter(|(_, outgoing)| outgoing.ack.borrow().is_some())
            .map(|(_, outgoing)| outgoing.slot.get())
            .min()
    }

    /// Starts streaming a snapshot of `partition` to `to`, unless one is on its way.
    pub(super) fn send_snapshot(&self, partition: PartitionId, to: ReplicaId) {
        self.stream(partition, to, None);
    }

    /// Starts the log of `to`, a log replica of `partition` that needs entries this leader
    /// compacted, after `slot` (`Action::StartLog`): a stream of one chunk holding no items
    /// and the configuration in force at `slot`, installed like a snapshot of nothing (a log
    /// replica has no state machine).
    pub(super) fn start_log(&self, partition: PartitionId, to: ReplicaId, slot: Slot, members: Vec<Member>) {
        self.stream(partition, to, Some((slot, members)));
    }

    /// A snapshot (or, with `log_start`, a log start) of `partition` for `to`, unless one is
    /// on its way.
    fn stream(&self, partition: PartitionId, to: ReplicaId, log_start: Option<(Slot, Vec<Member>)>) {
        if self.snapshots.outgoing.borrow().contains_key(&(partition, to)) {
            return;
        }
        let sequence = self.snapshots.next_stream.get() + 1;
        self.snapshots.next_stream.set(sequence);
        let stream = (self.now() << 16) ^ sequence;
        let outgoing = Rc::new(Outgoing {
            stream,
            // The checkpoint it will read is at least this one.
            slot: Cell::new(log_start.as_ref().map_or(self.store.checkpointed_slot(partition), |(slot, _)| *slot)),
            ack: RefCell::new(None),
            waker: RefCell::new(None),
        });
        self.snapshots.outgoing.borrow_mut().insert((partition, to), outgoing.clone());
        let me = self.me.borrow().clone();
        glommio::spawn_local(async move {
            let started = Instant::now();
            let what = if log_start.is_some() { "log start" } else { "snapshot" };
            let result = match log_start {
                None => stream_snapshot(&me, partition, to, &outgoing).await,
                Some((slot, members)) => send_log_start(&me, partition, to, &outgoing, slot, members).await,
            };
            let Some(log) = me.upgrade() else { return };
            let mut streams = log.snapshots.outgoing.borrow_mut();
            if streams.get(&(partition, to)).is_some_and(|current| current.stream == outgoing.stream) {
                streams.remove(&(partition, to));
            }
            drop(streams);
            match result {
                Ok((slot, items, bytes)) => {
                    log.count(|stats| stats.sent += 1);
                    tessera_engine::report!(
                        "tessera: partition {partition}: sent node {to} a {what} through slot {slot} ({items} items, {bytes} bytes) in {:?}",
                        started.elapsed()
                    );
                }
                Err(reason) => tessera_engine::report!("tessera: partition {partition}: the {what} for node {to} stopped: {reason}"),
            }
        })
        .detach();
    }

    fn count(&self, change: impl FnOnce(&mut SnapshotStats)) {
        let mut stats = self.snapshots.stats.get();
        change(&mut stats);
        self.snapshots.stats.set(stats);
    }

    /// A snapshot stream's acknowledgement, or a replica asking for a snapshot (`next` 0 on
    /// a stream it does not know: a stream of ours to it then ends, and a new one starts).
    pub(super) fn receive_ack(&self, ack: SnapshotAck) {
        let outgoing = self.snapshots.outgoing.borrow().get(&(ack.partition, ack.from)).cloned();
        if let Some(outgoing) = &outgoing {
            if outgoing.stream == ack.stream {
                return outgoing.answer(ack);
            }
        }
        if ack.next != 0 || ack.refused.is_some() {
            return;
        }
        let leads = self.replicas.borrow().get(&ack.partition).and_then(|host| host.replica().leading()).is_some();
        if !leads {
            return;
        }
        if let Some(outgoing) = outgoing {
            self.snapshots.outgoing.borrow_mut().remove(&(ack.partition, ack.from));
            outgoing.answer(SnapshotAck { refused: Some("the receiver asked for a new one".into()), ..ack.clone() });
        }
        self.send_snapshot(ack.partition, ack.from);
    }

    fn acknowledge(&self, partition: PartitionId, to: ReplicaId, stream: u64, next: u32, refused: Option<String>) {
        self.send(PeerMessage::Ack(SnapshotAck { partition, from: self.node, to, stream, next, refused }));
    }

    /// A chunk of a snapshot for one of this core's replicas.
    pub(super) fn receive_chunk(&self, chunk: SnapshotChunk) {
        let partition = chunk.partition;
        let (commit, installing, floor) =
            self.with_host(partition, |host| (host.replica().commit(), host.installing(), host.install_floor()));
        let mut incoming = self.snapshots.incoming.borrow_mut();
        let known = incoming
            .get(&partition)
            .is_some_and(|current| (current.from, current.stream) == (chunk.from, chunk.stream));
        if chunk.seq == 0 && !known {
            if incoming.get(&partition).is_some_and(|current| current.busy) {
                return;
            }
            if !installing && commit >= chunk.slot {
                drop(incoming);
                let refused = format!("the replica is at slot {commit} already, the snapshot at {}", chunk.slot);
                return self.acknowledge(partition, chunk.from, chunk.stream, 0, Some(refused));
            }
            if let Some(floor) = floor.filter(|&floor| chunk.slot < floor) {
                drop(incoming);
                let refused = format!(
                    "the replica had committed slot {floor} before its repair, the snapshot is at {}",
                    chunk.slot
                );
                return self.acknowledge(partition, chunk.from, chunk.stream, 0, Some(refused));
            }
            let (from, stream) = (chunk.from, chunk.stream);
            incoming.insert(partition, Incoming { from, stream, next: 0, busy: true, heard: Instant::now() });
            drop(incoming);
            // From now on, what the replica chooses waits for the snapshot, and it does not
            // campaign (as leader it could not serve what it chose).
            self.with_host(partition, ReplicaHost::begin_install);
            tessera_engine::report!(
                "tessera: partition {partition}: receiving a snapshot through slot {} from node {from}",
                chunk.slot
            );
            glommio::spawn_local(store_chunk(self.me.borrow().clone(), chunk)).detach();
            return;
        }
        match incoming.get_mut(&partition) {
            Some(current) if current.from == chunk.from && current.stream == chunk.stream => {
                if current.busy {
                    return;
                }
                if chunk.seq == current.next {
                    current.busy = true;
                    current.heard = Instant::now();
                    drop(incoming);
                    glommio::spawn_local(store_chunk(self.me.borrow().clone(), chunk)).detach();
                } else if chunk.seq < current.next {
                    // Its acknowledgement was lost.
                    let next = current.next;
                    drop(incoming);
                    self.acknowledge(partition, chunk.from, chunk.stream, next, None);
                }
            }
            _ => {
                drop(incoming);
                let refused = "no snapshot of this stream is being received".to_string();
                self.acknowledge(partition, chunk.from, chunk.stream, 0, Some(refused));
            }
        }
    }

    /// The snapshot of `partition` through `slot` is durable here: the replica continues
    /// after it, with the entries it chose meanwhile that follow it.
    fn installed(&self, chunk: &SnapshotChunk, end: SnapshotEnd) {
        let (partition, slot) = (chunk.partition, chunk.slot);
        // The entries chosen meanwhile that follow the snapshot are applied as this returns.
        let covered = self.with_host(partition, |host| host.end_install(slot, chunk.from, chunk.ballot, end.members));
        let watcher = self.watchers.borrow().get(&partition).cloned();
        if let Some(watcher) = watcher {
            watcher();
        }
        for chosen in covered {
            if let Some(waiter) = self.waiters.borrow_mut().remove(&(partition, chosen)) {
                waiter.reply.resolve(Err(Error::Unavailable(format!(
                    "slot {chosen} of partition {partition} was chosen while a snapshot was installed: the write may or may not have taken effect"
                ))));
            }
        }
        self.count(|stats| stats.installed += 1);
        tessera_engine::report!(
            "tessera: partition {partition}: installed a snapshot through slot {slot} from node {} ({} items, {} bytes)",
            chunk.from, end.items, end.bytes
        );
    }

    /// Starts the repair of every partition the store found damaged that a full replica here
    /// holds and that is not installing already (module documentation).
    pub(super) fn repair_damaged(&self) {
        for partition in self.store.take_damaged_partitions() {
            if !self.replicas.borrow().contains_key(&partition) {
                continue;
            }
            let now = self.now();
            let repairing = self.with_host(partition, |host| host.begin_repair(now).then(|| host.replica().commit()));
            let Some(commit) = repairing else { continue };
            tessera_engine::report!(
                "tessera: partition {partition}: its data here is damaged; this replica leads it no more until it is reinstalled from a snapshot (through slot {commit} at least) that it asks the leader for"
            );
        }
    }

    /// Asks the leader of every partition still installing a snapshot, and not receiving one,
    /// for one; gives up streams that went quiet.
    pub(super) fn ask_for_snapshots(&self) {
        let installing: Vec<PartitionId> = self
            .replicas
            .borrow()
            .iter()
            .filter(|(_, host)| host.installing())
            .map(|(&partition, _)| partition)
            .collect();
        for partition in installing {
            {
                let mut incoming = self.snapshots.incoming.borrow_mut();
                match incoming.get(&partition) {
                    Some(current) if current.busy || current.heard.elapsed() < STREAM_IDLE_MAX => continue,
                    Some(_) => {
                        incoming.remove(&partition);
                    }
                    None => {}
                }
            }
            let leader = self.with_replica(partition, |replica| replica.leader()).filter(|&leader| leader != self.node);
            if let Some(leader) = leader {
                self.acknowledge(partition, leader, 0, 0, None);
            }
        }
    }
}

/// Streams a snapshot of `partition` to `to`; the snapshot's slot, items and bytes.
async fn stream_snapshot(
    log: &Weak<ReplicatedLog>,
    partition: PartitionId,
    to: ReplicaId,
    outgoing: &Outgoing,
) -> Result<(Slot, u64, u64), String> {
    let gone = || "the node is stopping".to_string();
    let (store, node, ballot) = {
        let log = log.upgrade().ok_or_else(gone)?;
        let ballot = log.with_replica(partition, |replica| replica.leading());
        (log.store.clone(), log.node, ballot.ok_or("this replica no longer leads")?)
    };
    // Everything chosen here so far applied and checkpointed: the snapshot reaches what the
    // receiver may have committed (a replica under repair needs that much).
    store.partition_meta(partition).await.map_err(|error| error.to_string())?;
    store.checkpoint().await.map_err(|error| error.to_string())?;
    let mut snapshot = store.snapshot(partition).await.map_err(|error| error.to_string())?;
    let meta = snapshot.meta();
    let slot = meta.applied_slot;
    outgoing.slot.set(slot);
    let members = log
        .upgrade()
        .ok_or_else(gone)?
        .with_replica(partition, |replica| replica.members_at(slot))
        .ok_or_else(|| format!("the configuration at slot {slot} is no longer known"))?;
    let mut entries = snapshot.next_chunk(CHUNK_BYTES).await.map_err(|error| error.to_string())?;
    let mut seq = 0;
    loop {
        let following = match entries.is_empty() {
            true => Vec::new(),
            false => snapshot.next_chunk(CHUNK_BYTES).await.map_err(|error| error.to_string())?,
        };
        let last = following.is_empty().then(|| SnapshotEnd {
            members: members.clone(),
            items: meta.items,
            bytes: meta.bytes,
        });
        let done = last.is_some();
        let chunk = SnapshotChunk {
            partition,
            from: node,
            to,
            stream: outgoing.stream,
            seq,
            slot,
            ballot,
            entries: std::mem::replace(&mut entries, following),
            last,
        };
        outgoing.deliver(log, chunk).await?;
        if done {
            return Ok((slot, meta.items, meta.bytes));
        }
        if seq == 0 {
            // Until the receiver first answered (it may have been down all along), the log was
            // free to move past this snapshot's slot; if it did, the receiver could not continue
            // from it, and a newer snapshot is wanted instead (the core asks again).
            let log_start = log.upgrade().ok_or_else(gone)?.with_replica(partition, |replica| replica.log_start());
            if log_start > slot + 1 {
                return Err(format!(
                    "the log moved past slot {slot} before the receiver answered; a newer one follows"
                ));
            }
        }
        seq += 1;
    }
}

/// Sends the one chunk of a log start: no items, the configuration at `slot`.
async fn send_log_start(
    log: &Weak<ReplicatedLog>,
    partition: PartitionId,
    to: ReplicaId,
    outgoing: &Outgoing,
    slot: Slot,
    members: Vec<Member>,
) -> Result<(Slot, u64, u64), String> {
    let (node, ballot) = {
        let log = log.upgrade().ok_or("the node is stopping")?;
        let ballot = log.with_replica(partition, |replica| replica.leading());
        (log.node, ballot.ok_or("this replica no longer leads")?)
    };
    let last = Some(SnapshotEnd { members, items: 0, bytes: 0 });
    let chunk = SnapshotChunk {
        partition,
        from: node,
        to,
        stream: outgoing.stream,
        seq: 0,
        slot,
        ballot,
        entries: Vec::new(),
        last,
    };
    outgoing.deliver(log, chunk).await?;
    Ok((slot, 0, 0))
}

/// Stores one chunk (the first begins the install, the last ends it), then acknowledges it.
async fn store_chunk(log: Weak<ReplicatedLog>, chunk: SnapshotChunk) {
    let Some(store) = log.upgrade().map(|log| log.store.clone()) else { return };
    let partition = chunk.partition;
    let mut result = Ok(());
    if chunk.seq == 0 {
        result = store.install_begin(partition).await;
    }
    if result.is_ok() {
        result = store.install_entries(partition, chunk.entries.clone()).await;
    }
    if let (Ok(()), Some(end)) = (&result, &chunk.last) {
        result = store.install_end(partition, chunk.slot, end.items, end.bytes, end.members.clone()).await;
        if result.is_ok() {
            // Durable before the replica continues from it.
            result = store.checkpoint().await;
        }
    }
    let Some(log) = log.upgrade() else { return };
    match result {
        Ok(()) => {
            if let Some(end) = chunk.last.clone() {
                log.snapshots.incoming.borrow_mut().remove(&partition);
                log.installed(&chunk, end);
            } else if let Some(current) = log.snapshots.incoming.borrow_mut().get_mut(&partition) {
                current.next = chunk.seq + 1;
                current.busy = false;
                current.heard = Instant::now();
            }
            log.acknowledge(partition, chunk.from, chunk.stream, chunk.seq + 1, None);
        }
        Err(error) => {
            log.snapshots.incoming.borrow_mut().remove(&partition);
            tessera_engine::report!(
                "tessera: partition {partition}: the snapshot from node {} failed: {error}",
                chunk.from
            );
            log.acknowledge(partition, chunk.from, chunk.stream, 0, Some(error.to_string()));
        }
    }
}
