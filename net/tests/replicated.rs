//! Three replicas of a partition in one process, each on its own executor thread with its own
//! store directory, talking over real loopback TCP: writes are chosen by a quorum and applied
//! everywhere; only the leader serves strong reads; when the leader stops, another is elected
//! and every acknowledged write is still there; the stopped replica restarts from its WAL and
//! catches up; in-memory logs are compacted once every replica checkpointed; a replica that
//! was down while its leader's log moved on gets a snapshot. (SIGKILL of real server
//! processes is in the server's tests.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tessera_engine::paxos::{self, ReplicaId};
use tessera_engine::{Command, Error, ReplicationLog, Store, StoreConfig, WalConfig, CACHE_PAGES_MIN};
use tessera_net::replicated::{Cluster, ClusterNode, ReplicatedLog};

const PARTITION: u64 = 7;

enum Ask {
    Put(u64),
    Get {
        key: u64,
        strong: bool,
    },
    /// Where the replica stands, for failure messages.
    State,
    /// A checkpoint of the node's store; answers the first slot its in-memory log still
    /// holds, once a compaction has had time to run.
    Checkpoint,
    /// Snapshots sent and installed: two little-endian u64s.
    Snapshots,
    Stop,
}

type Answer = Result<Option<Vec<u8>>, String>;

fn paxos_config() -> paxos::Config {
    paxos::Config {
        election_min: 150_000,
        election_max: 300_000,
        heartbeat: 20_000,
        lease: 120_000,
        ..paxos::Config::default()
    }
}

fn store_config() -> StoreConfig {
    StoreConfig {
        cache_pages: CACHE_PAGES_MIN,
        wal: WalConfig {
            segment_bytes: 1 << 20,
            record_bytes_max: 128 << 10,
            flush_bytes_max: 128 << 10,
            spare_segments_max: 1,
        },
        checkpoint_dirty_pages: 200,
        checkpoint_wal_segments: 3,
        replicated: true,
        ..Default::default()
    }
}

fn value(key: u64) -> Vec<u8> {
    format!("value of {key}").into_bytes()
}

struct Node {
    asks: mpsc::Sender<(Ask, mpsc::Sender<Answer>)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Node {
    fn start(id: ReplicaId, dir: PathBuf, addresses: BTreeMap<ReplicaId, SocketAddr>) -> Node {
        let (asks, inbox) = mpsc::channel::<(Ask, mpsc::Sender<Answer>)>();
        let thread = std::thread::spawn(move || {
            glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .io_memory(1 << 20)
                .make()
                .expect("executor")
                .run(async move {
                    let store = Store::open(&dir, store_config()).await.expect("store opens");
                    let nodes = addresses
                        .iter()
                        .map(|(&node, &peer)| {
                            (node, ClusterNode { client: peer, peer, zone: format!("zone-{node}"), spare: false })
                        })
                        .collect();
                    // A short log: a replica down for a few hundred writes needs a snapshot.
                    let cluster = Cluster {
                        node: id,
                        nodes,
                        paxos: paxos_config(),
                        log_retain: 200,
                        apply_delay_max: tessera_net::APPLY_DELAY_DEFAULT,
                        // Every peer link opens with a proof of it.
                        secret: Some("in-process-cluster-secret".into()),
                    };
                    let log = ReplicatedLog::start(store, &cluster, 0).expect("log starts");
                    // As the server does for a table's partitions once its catalog names them:
                    // the group starts on the cluster's nodes.
                    log.learn_group(PARTITION, &[]);
                    loop {
                        match inbox.try_recv() {
                            Ok((Ask::Stop, _)) | Err(mpsc::TryRecvError::Disconnected) => break,
                            Ok((ask, answer)) => {
                                let log = Rc::clone(&log);
                                glommio::spawn_local(async move {
                                    let _ = answer.send(serve(&log, ask).await);
                                })
                                .detach();
                            }
                            Err(mpsc::TryRecvError::Empty) => glommio::timer::sleep(Duration::from_millis(1)).await,
                        }
                    }
                    // Stop the replica; closing the store releases its directory for a restart
                    // in this process (a crash is the real-process tests' business).
                    log.stop();
                    log.store().close().await.expect("store closes");
                    // Let the cancelled tasks go, and with them the listening socket.
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                })
        });
        Node { asks, thread: Some(thread) }
    }

    fn ask(&self, ask: Ask) -> Answer {
        let (answer, answers) = mpsc::channel();
        self.asks.send((ask, answer)).map_err(|_| "the node stopped".to_string())?;
        answers.recv_timeout(Duration::from_secs(10)).map_err(|_| "no answer".to_string())?
    }

    fn stop(mut self) {
        let (answer, _) = mpsc::channel();
        let _ = self.asks.send((Ask::Stop, answer));
        self.thread.take().unwrap().join().unwrap();
    }
}

async fn serve(log: &ReplicatedLog, ask: Ask) -> Answer {
    match ask {
        Ask::Put(key) => {
            let command = Command::Put { key: key.to_be_bytes().to_vec(), value: value(key).into() };
            log.propose(PARTITION, command).await.map(|()| None).map_err(|error| error.to_string())
        }
        Ask::Get { key, strong } => {
            if strong {
                log.check_read(PARTITION).map_err(|error| error.to_string())?;
            }
            log.store().get(PARTITION, &key.to_be_bytes()).await.map_err(|error| error.to_string())
        }
        Ask::State => Ok(Some(
            format!(
                "leader {:?}, applied slot {}, links {:?}",
                log.leader(PARTITION),
                log.store().applied_slot(PARTITION),
                log.link_stats()
            )
            .into_bytes(),
        )),
        Ask::Checkpoint => {
            log.store().checkpoint().await.map_err(|error| error.to_string())?;
            Ok(Some(log.log_start(PARTITION).to_le_bytes().to_vec()))
        }
        Ask::Snapshots => {
            let stats = log.snapshot_stats();
            Ok(Some([stats.sent.to_le_bytes(), stats.installed.to_le_bytes()].concat()))
        }
        Ask::Stop => Ok(None),
    }
}

fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Writes `key` through whichever node takes it, waiting for a leader up to `within`;
/// returns the node that took it.
fn put_anywhere(nodes: &BTreeMap<ReplicaId, Node>, key: u64, within: Duration) -> ReplicaId {
    let deadline = Instant::now() + within;
    loop {
        for (&id, node) in nodes {
            if node.ask(Ask::Put(key)).is_ok() {
                return id;
            }
        }
        assert!(Instant::now() < deadline, "no node took a write within {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Three replicas on loopback, each with a directory under a fresh root.
fn three_nodes(name: &str) -> (PathBuf, BTreeMap<ReplicaId, SocketAddr>, BTreeMap<ReplicaId, Node>) {
    let root = std::env::temp_dir().join(format!("tessera-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let addresses: BTreeMap<ReplicaId, SocketAddr> = (1..=3).map(|id| (id, free_address())).collect();
    let nodes =
        addresses.keys().map(|&id| (id, Node::start(id, root.join(format!("node-{id}")), addresses.clone()))).collect();
    (root, addresses, nodes)
}

fn eventually_has(node: &Node, keys: std::ops::Range<u64>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for key in keys {
        loop {
            if node.ask(Ask::Get { key, strong: false }) == Ok(Some(value(key))) {
                break;
            }
            if Instant::now() > deadline {
                let state =
                    node.ask(Ask::State).map(|state| String::from_utf8_lossy(&state.unwrap_or_default()).into_owned());
                panic!("key {key} never arrived; the replica: {state:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[test]
fn three_replicas_choose_apply_fail_over_and_catch_up() {
    let (root, addresses, mut nodes) = three_nodes("replicated");
    let dir = |id: ReplicaId| root.join(format!("node-{id}"));

    let leader = put_anywhere(&nodes, 0, Duration::from_secs(10));
    for key in 1..100 {
        assert_eq!(nodes[&leader].ask(Ask::Put(key)), Ok(None), "the leader takes every write");
    }
    for node in nodes.values() {
        eventually_has(node, 0..100);
    }
    // Once every replica checkpointed them, the leader's in-memory log lets them go.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let starts: Vec<u64> = nodes
            .values()
            .map(|node| u64::from_le_bytes(node.ask(Ask::Checkpoint).unwrap().unwrap().try_into().unwrap()))
            .collect();
        if starts[leader as usize - 1] > 50 {
            break;
        }
        assert!(Instant::now() < deadline, "the leader's log was never compacted: starts {starts:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(nodes[&leader].ask(Ask::Get { key: 5, strong: true }), Ok(Some(value(5))));
    let follower = *nodes.keys().find(|&&id| id != leader).unwrap();
    let refused = nodes[&follower].ask(Ask::Get { key: 5, strong: true }).unwrap_err();
    assert!(refused.contains("not the leader"), "{refused}");
    assert!(matches!(
        Error::NotLeader { leader: Some(leader), address: None }.to_string(),
        message if message.contains(&leader.to_string())
    ));

    // The leader stops; the other two elect one and go on, with every acknowledged write.
    nodes.remove(&leader).unwrap().stop();
    let stopped = Instant::now();
    let new_leader = put_anywhere(&nodes, 100, Duration::from_secs(5));
    let failover = stopped.elapsed();
    println!("a new leader took a write {failover:?} after the old one stopped (election timeout 150-300 ms)");
    assert_ne!(new_leader, leader);
    assert!(failover < Duration::from_secs(2), "a new leader took a write {failover:?} after the old one stopped");
    for key in 0..=100 {
        assert_eq!(nodes[&new_leader].ask(Ask::Get { key, strong: true }), Ok(Some(value(key))), "key {key}");
    }
    for key in 101..150 {
        assert_eq!(nodes[&new_leader].ask(Ask::Put(key)), Ok(None));
    }

    // The stopped replica restarts from its directory and catches up.
    nodes.insert(leader, Node::start(leader, dir(leader), addresses.clone()));
    eventually_has(&nodes[&leader], 0..150);
    for (_, node) in nodes {
        node.stop();
    }
    let _ = std::fs::remove_dir_all(&root);
}

fn snapshot_stats(node: &Node) -> (u64, u64) {
    let bytes = node.ask(Ask::Snapshots).unwrap().unwrap();
    (u64::from_le_bytes(bytes[..8].try_into().unwrap()), u64::from_le_bytes(bytes[8..].try_into().unwrap()))
}

/// A follower stops; the others take writes and checkpoint until the leader's log no longer
/// holds what the follower lacks. Restarted, the follower gets a snapshot of the leader's
/// checkpoint and continues from the log: it then holds every write, and takes part again.
#[test]
fn a_replica_behind_a_recycled_log_recovers_by_snapshot() {
    let (root, addresses, mut nodes) = three_nodes("snapshot");
    let dir = |id: ReplicaId| root.join(format!("node-{id}"));
    let leader = put_anywhere(&nodes, 0, Duration::from_secs(10));
    for key in 1..50 {
        assert_eq!(nodes[&leader].ask(Ask::Put(key)), Ok(None));
    }
    let follower = *nodes.keys().find(|&&id| id != leader).unwrap();
    eventually_has(&nodes[&follower], 0..50);
    nodes.remove(&follower).unwrap().stop();
    // Far more writes than the leader keeps for a replica that is down.
    for key in 50..1500 {
        assert_eq!(nodes[&leader].ask(Ask::Put(key)), Ok(None), "key {key}");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let start = u64::from_le_bytes(nodes[&leader].ask(Ask::Checkpoint).unwrap().unwrap().try_into().unwrap());
        if start > 1000 {
            break;
        }
        assert!(Instant::now() < deadline, "the leader's log still starts at slot {start}");
        std::thread::sleep(Duration::from_millis(200));
    }
    nodes.insert(follower, Node::start(follower, dir(follower), addresses.clone()));
    eventually_has(&nodes[&follower], 0..1500);
    // One, or two if the first (begun while it was down) was behind the log by the time it
    // was installed.
    assert!(snapshot_stats(&nodes[&follower]).1 >= 1, "the follower installed a snapshot");
    // Sent by whichever node led then (the restarted node's campaign may move leadership).
    let sent: u64 = nodes.iter().filter(|(&id, _)| id != follower).map(|(_, node)| snapshot_stats(node).0).sum();
    assert!(sent >= 1, "the leader sent it");
    // It continues from the log, and counts in a quorum: with the third node stopped, the
    // leader and it still choose writes.
    let leader = put_anywhere(&nodes, 1500, Duration::from_secs(5));
    for key in 1501..1550 {
        assert_eq!(nodes[&leader].ask(Ask::Put(key)), Ok(None));
    }
    eventually_has(&nodes[&follower], 1500..1550);
    // Stop a node other than the follower (the leader's peer if the follower does not lead).
    let third = *nodes.keys().filter(|&&id| id != follower).max_by_key(|&&id| id != leader).unwrap();
    nodes.remove(&third).unwrap().stop();
    put_anywhere(&nodes, 1550, Duration::from_secs(5));
    eventually_has(&nodes[&follower], 1550..1551);
    for (_, node) in nodes {
        node.stop();
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// A follower that stopped partway through installing a snapshot (its partition durably
/// marked installing, its items partial) restarts: it serves no reads of the partition, applies
/// nothing from its log onto the partial items, asks its leader for a snapshot, and ends with
/// every write.
#[test]
fn a_replica_stopped_while_installing_asks_for_a_snapshot() {
    let (root, addresses, mut nodes) = three_nodes("installing");
    let dir = |id: ReplicaId| root.join(format!("node-{id}"));
    let leader = put_anywhere(&nodes, 0, Duration::from_secs(10));
    for key in 1..200 {
        assert_eq!(nodes[&leader].ask(Ask::Put(key)), Ok(None));
    }
    let follower = *nodes.keys().find(|&&id| id != leader).unwrap();
    eventually_has(&nodes[&follower], 0..200);
    nodes.remove(&follower).unwrap().stop();
    // What a crash partway through an install leaves: the partition emptied and marked
    // installing, one stray item in it, all of it in a durable checkpoint.
    let follower_dir = dir(follower);
    std::thread::spawn(move || {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .make()
            .expect("executor")
            .run(async move {
                let store = Store::open(&follower_dir, store_config()).await.unwrap();
                store.install_begin(PARTITION).await.unwrap();
                store.install_entries(PARTITION, vec![(7u64.to_be_bytes().to_vec(), b"stray".to_vec())]).await.unwrap();
                store.checkpoint().await.unwrap();
                store.close().await.unwrap();
            })
    })
    .join()
    .unwrap();
    for key in 200..250 {
        assert_eq!(nodes[&leader].ask(Ask::Put(key)), Ok(None));
    }
    nodes.insert(follower, Node::start(follower, dir(follower), addresses.clone()));
    eventually_has(&nodes[&follower], 0..250);
    assert!(snapshot_stats(&nodes[&follower]).1 >= 1, "the follower installed a snapshot");
    for (_, node) in nodes {
        node.stop();
    }
    let _ = std::fs::remove_dir_all(&root);
}
