//! Peer links: how one core's replicas talk to the replicas of the same partitions on other
//! nodes. Core `k` of a node listens on its peer address's port plus `k`, and dials the same
//! core of every other node, so a partition's replicas (which live on the same core index on
//! every node) always talk over one TCP connection per pair of nodes and direction.
//!
//! Sending never waits: messages are queued per peer, and the peer's sender task writes
//! everything queued since its last write as one replication frame (batching follows load).
//! Fault model: a link may drop any message (a failed dial or write, a full queue, a peer
//! that is down, a damaged frame); Multi-Paxos resends what was not acknowledged, so the links
//! retry nothing themselves. A frame that fails its checksum or does not decode is dropped and
//! counted; a lost framing closes the connection.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};
use tessera_engine::paxos::ReplicaId;
use tessera_wire::client::Credentials;
use tessera_wire::replication::{decode_batch, BatchEncoder, PeerMessage};
use tessera_wire::{ErrorCode, MessageType, Request, WireError};

use crate::auth::{Access, Privilege};

use crate::local::Inbox;

/// Most messages queued for one peer; past it, new ones are dropped (and later resent).
const QUEUED_MAX: usize = 1 << 16;
/// Most messages in one replication frame...
const FRAME_MESSAGES_MAX: usize = 1024;
/// ...and most snapshot bytes (a frame may hold 16 MiB).
const FRAME_SNAPSHOT_BYTES_MAX: usize = 4 << 20;
/// How long a dial may take, and the pause after a failed one.
const DIAL_TIMEOUT: Duration = Duration::from_millis(500);
const REDIAL_PAUSE: Duration = Duration::from_millis(50);
/// How long one write to a peer may take before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Messages waiting for one peer's sender task.
#[derive(Default)]
struct Queue {
    messages: RefCell<Vec<PeerMessage>>,
    waker: RefCell<Option<Waker>>,
}

impl Queue {
    fn push(&self, message: PeerMessage) -> bool {
        let mut messages = self.messages.borrow_mut();
        if messages.len() >= QUEUED_MAX {
            return false;
        }
        messages.push(message);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
        true
    }

    /// Everything queued, once something is.
    async fn take(&self) -> Vec<PeerMessage> {
        futures_lite::future::poll_fn(|context| {
            let mut messages = self.messages.borrow_mut();
            if messages.is_empty() {
                *self.waker.borrow_mut() = Some(context.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(std::mem::take(&mut *messages))
            }
        })
        .await
    }
}

/// What a link saw go wrong, for statistics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Messages dropped on the way out: a full queue, a failed dial or write.
    pub dropped: u64,
    /// Frames received and dropped: a bad checksum, a type or payload that is not a batch.
    pub bad_frames: u64,
    /// Incoming connections closed because they did not open with a proof of the cluster's
    /// secret.
    pub unauthenticated: u64,
}

/// One core's links to the same core of every other node.
pub struct PeerLinks {
    queues: BTreeMap<ReplicaId, Rc<Queue>>,
    stats: Rc<Cell<LinkStats>>,
    /// The listener, the senders, and a reader per accepted connection.
    tasks: Rc<RefCell<Vec<glommio::task::JoinHandle<()>>>>,
}

/// The address core `core` of a node whose peer address is `base` listens on.
pub fn core_address(base: SocketAddr, core: usize) -> SocketAddr {
    SocketAddr::new(base.ip(), base.port() + core as u16)
}

impl PeerLinks {
    /// Listens for this core's peers at `core_address(listen, core)` and dials each of
    /// `peers` (node id and base peer address) at the same core. Every batch received is
    /// given to `deliver`. Must run on the core's executor.
    /// With `secret`, each link opens with a proof of it (`crate::auth`), and an incoming
    /// connection that does not open so is closed before anything it sends is delivered.
    pub fn start(
        listen: SocketAddr,
        core: usize,
        peers: &BTreeMap<ReplicaId, SocketAddr>,
        secret: Option<String>,
        deliver: Rc<dyn Fn(Vec<PeerMessage>)>,
    ) -> std::io::Result<PeerLinks> {
        let address = core_address(listen, core);
        // As for the client listeners: a peer port shared with another server (SO_REUSEPORT)
        // would hand it part of this node's replication traffic.
        crate::socket::check_unused(address).map_err(std::io::Error::other)?;
        let listener = TcpListener::bind(address)
            .map_err(|error| std::io::Error::other(format!("cannot listen for peers on {address}: {error}")))?;
        let stats = Rc::new(Cell::new(LinkStats::default()));
        let tasks: Rc<RefCell<Vec<_>>> = Rc::default();
        let access = Rc::new(Access { cluster_secret: secret.clone(), ..Access::default() });
        let accepting = glommio::spawn_local(accept(listener, access, deliver, stats.clone(), Rc::downgrade(&tasks)));
        tasks.borrow_mut().push(accepting.detach());
        let mut queues = BTreeMap::new();
        for (&node, &base) in peers {
            let queue = Rc::new(Queue::default());
            let credentials = secret.as_deref().map(Credentials::cluster);
            let sending =
                glommio::spawn_local(send(core_address(base, core), credentials, queue.clone(), stats.clone()));
            tasks.borrow_mut().push(sending.detach());
            queues.insert(node, queue);
        }
        Ok(PeerLinks { queues, stats, tasks })
    }

    /// Queues `message` for its node; dropped (and counted) if that node is unknown or its
    /// queue is full.
    pub fn send(&self, message: PeerMessage) {
        let queued = self.queues.get(&message.to()).is_some_and(|queue| queue.push(message));
        if !queued {
            count(&self.stats, |stats| stats.dropped += 1);
        }
    }

    pub fn stats(&self) -> LinkStats {
        self.stats.get()
    }

    /// Stops listening and sending.
    pub fn stop(&self) {
        for task in self.tasks.borrow_mut().drain(..) {
            task.cancel();
        }
    }
}

fn count(stats: &Cell<LinkStats>, change: impl FnOnce(&mut LinkStats)) {
    let mut value = stats.get();
    change(&mut value);
    stats.set(value);
}

async fn accept(
    listener: TcpListener,
    access: Rc<Access>,
    deliver: Rc<dyn Fn(Vec<PeerMessage>)>,
    stats: Rc<Cell<LinkStats>>,
    tasks: std::rc::Weak<RefCell<Vec<glommio::task::JoinHandle<()>>>>,
) {
    loop {
        let Ok(stream) = listener.accept().await else { continue };
        let (access, deliver, stats) = (access.clone(), deliver.clone(), stats.clone());
        let reading = glommio::spawn_local(receive(stream, access, deliver, stats)).detach();
        match tasks.upgrade() {
            Some(tasks) => tasks.borrow_mut().push(reading),
            None => reading.cancel(),
        }
    }
}

/// Reads replication frames from one incoming connection until it closes. With a cluster
/// secret, the first frame must prove it; a connection that does not is closed unheard.
async fn receive(
    mut stream: TcpStream,
    access: Rc<Access>,
    deliver: Rc<dyn Fn(Vec<PeerMessage>)>,
    stats: Rc<Cell<LinkStats>>,
) {
    let _ = stream.set_nodelay(true);
    let mut inbox = Inbox::new();
    let mut proven = access.cluster_secret.is_none();
    loop {
        loop {
            match inbox.next_frame() {
                Ok(None) => break,
                Ok(Some(frame)) if !proven => {
                    let proof = frame.checksum_ok.then(|| Request::decode(frame.header.message_type, frame.payload));
                    let verified = match proof {
                        Some(Ok(Request::Authenticate { key_id, timestamp_ms, nonce, signature })) => {
                            access.verify(&key_id, timestamp_ms, &nonce, &signature)
                        }
                        _ => Err(WireError::new(ErrorCode::MissingAuthenticationTokenException, "no proof")),
                    };
                    if verified != Ok(Privilege::Cluster) {
                        count(&stats, |stats| stats.unauthenticated += 1);
                        return;
                    }
                    proven = true;
                }
                Ok(Some(frame)) => {
                    let batch = (frame.checksum_ok && frame.header.message_type == MessageType::Replication as u16)
                        .then(|| decode_batch(frame.payload).ok())
                        .flatten();
                    match batch {
                        Some(messages) => deliver(messages),
                        None => count(&stats, |stats| stats.bad_frames += 1),
                    }
                }
                // The framing is lost: nothing more on this connection can be trusted.
                Err(_) => {
                    count(&stats, |stats| stats.bad_frames += 1);
                    return;
                }
            }
        }
        match inbox.fill(&mut stream).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Writes everything queued for one peer, dialing it when there is no connection (and opening
/// each connection with a proof of the cluster's secret, given `credentials`).
async fn send(address: SocketAddr, credentials: Option<Credentials>, queue: Rc<Queue>, stats: Rc<Cell<LinkStats>>) {
    let mut stream: Option<TcpStream> = None;
    // A connection just made: its first write opens with the proof.
    let mut fresh = false;
    let (mut bytes, mut encoder) = (Vec::new(), BatchEncoder::default());
    loop {
        let messages = queue.take().await;
        if stream.is_none() {
            match TcpStream::connect_timeout(address, DIAL_TIMEOUT).await {
                Ok(connected) => {
                    let _ = connected.set_nodelay(true);
                    // A peer that stops reading must not hold this link forever.
                    let _ = connected.set_write_timeout(Some(WRITE_TIMEOUT));
                    stream = Some(connected);
                    fresh = true;
                }
                Err(_) => {
                    count(&stats, |stats| stats.dropped += messages.len() as u64);
                    glommio::timer::sleep(REDIAL_PAUSE).await;
                    continue;
                }
            }
        }
        bytes.clear();
        if let (Some(credentials), true) = (&credentials, fresh) {
            credentials.authenticate().encode(0, &mut bytes);
        }
        fresh = false;
        let (mut start, mut snapshot_bytes) = (0, 0);
        for (at, message) in messages.iter().enumerate() {
            if let PeerMessage::Chunk(chunk) = message {
                snapshot_bytes += chunk.entries.iter().map(|(key, value)| key.len() + value.len()).sum::<usize>();
            }
            if at + 1 - start == FRAME_MESSAGES_MAX || snapshot_bytes >= FRAME_SNAPSHOT_BYTES_MAX {
                encoder.encode(&messages[start..=at], &mut bytes);
                (start, snapshot_bytes) = (at + 1, 0);
            }
        }
        if start < messages.len() {
            encoder.encode(&messages[start..], &mut bytes);
        }
        let connection = stream.as_mut().expect("connected above");
        if connection.write_all(&bytes).await.is_err() {
            count(&stats, |stats| stats.dropped += messages.len() as u64);
            stream = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::sync::{Arc, Mutex};

    use tessera_engine::paxos::{Ballot, Envelope, Message};

    use super::*;

    /// Runs `work` on a new single-executor thread.
    fn on_executor<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(
        work: impl FnOnce() -> F + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        std::thread::spawn(move || {
            glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .io_memory(1 << 20)
                .make()
                .expect("executor")
                .run(work())
        })
    }

    fn free_port() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    }

    /// Two nodes' core 0 over loopback: every message arrives in order, garbage on the port is
    /// dropped and counted without disturbing the link, and a message for an unknown node is
    /// counted as dropped.
    #[test]
    fn batches_cross_real_tcp_and_garbage_is_dropped() {
        let (one, two) = (free_port(), free_port());
        let received: Arc<Mutex<Vec<PeerMessage>>> = Arc::default();
        let (sink, done) = (received.clone(), Arc::new(Mutex::new(false)));
        let finished = done.clone();
        let receiver = on_executor(move || async move {
            let deliver: Rc<dyn Fn(Vec<PeerMessage>)> = Rc::new(move |messages| sink.lock().unwrap().extend(messages));
            let links = PeerLinks::start(two, 0, &BTreeMap::from([(1, one)]), None, deliver).unwrap();
            // Until the sender saw everything arrive, and the garbage was read.
            let stop = std::time::Instant::now() + Duration::from_secs(10);
            while !*finished.lock().unwrap() || (links.stats().bad_frames == 0 && std::time::Instant::now() < stop) {
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            let stats = links.stats();
            links.stop();
            stats
        });
        // Garbage on the receiver's port first (once it listens).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut garbage = loop {
            match std::net::TcpStream::connect(core_address(two, 0)) {
                Ok(stream) => break stream,
                Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Err(error) => panic!("the receiver never listened: {error}"),
            }
        };
        garbage.write_all(&[0x10, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]).unwrap();
        let sent = (0..1000u64)
            .map(|slot| {
                let message = Message::Prepare { ballot: Ballot { round: slot, replica: 1 }, from_slot: slot };
                PeerMessage::Paxos((slot % 7, Envelope { from: 1, to: 2, message }))
            })
            .collect::<Vec<_>>();
        let expected = sent.clone();
        let (stop, all_in) = (done.clone(), received.clone());
        let sending = on_executor(move || async move {
            let deliver: Rc<dyn Fn(Vec<PeerMessage>)> = Rc::new(|_| {});
            let links = PeerLinks::start(one, 0, &BTreeMap::from([(2, two)]), None, deliver).unwrap();
            for message in sent {
                links.send(message);
            }
            links.send(expected_unknown());
            while all_in.lock().unwrap().len() < 1000 && std::time::Instant::now() < deadline {
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            *stop.lock().unwrap() = true;
            let stats = links.stats();
            links.stop();
            stats
        });
        let sender_stats = sending.join().unwrap();
        let receiver_stats = receiver.join().unwrap();
        drop(garbage);
        assert_eq!(*received.lock().unwrap(), expected, "every message, in order");
        assert_eq!(sender_stats.dropped, 1, "the message for an unknown node");
        assert_eq!(receiver_stats.bad_frames, 1, "the garbage frame");
    }

    fn expected_unknown() -> PeerMessage {
        PeerMessage::Paxos((0, Envelope { from: 1, to: 9, message: Message::Reject { promised: Ballot::default() } }))
    }
}
