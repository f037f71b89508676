//! The node: one glommio executor pinned per core, each with its own store (`DIR/core-N`),
//! its own listener on the shared address (SO_REUSEPORT: the kernel spreads connections over
//! the cores), and the channel mesh that carries partition work between cores.
//!
//! A connection's frames are read by one task; every request runs in a task of its own, so
//! requests on one connection are served concurrently and answered as they finish (each answer
//! names its request id). Answers are written by one writer task per connection, which sends
//! everything ready in one write.
//!
//! A core holds at most `ServerConfig::max_connections` client connections open (both
//! protocols together); one more is closed at once (over HTTP after a 503). An accept that
//! fails (the process's file limit reached, say) is reported once per run of failures and
//! retried after a pause: a listener never stops accepting while the server runs. The
//! request bytes a core's connections buffer are bounded by its budget (`crate::budget`), and
//! a frame that stops arriving half-way is given up after `FRAME_STALL_MAX`.
//!
//! With `ServerConfig::tls`, both listeners speak TLS only (`crate::tls`): a connection's
//! handshake, counted under the limit like any connection, must finish within
//! `HANDSHAKE_MAX`, and a client that begins in plain text is told so in its own protocol and
//! closed. The connection code is generic over the stream, so plain connections run it on
//! glommio's `TcpStream` as they did.

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::server::TlsStream;
use futures_rustls::TlsAcceptor;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use tessera_engine::{LocalLog, Store, StoreConfig};
use tessera_wire::client::ClientTls;
use tessera_wire::frame::FRAME_LEN_MAX;
use tessera_wire::{ErrorCode, MessageType, PartitionAnswer, PartitionOp, Request, RequestFlags, Response, WireError};

use crate::auth::Access;
use crate::budget::{self, RequestMemory, REQUEST_MEMORY_MIN};
use crate::http::{Endpoint, HttpConfig};
use crate::local::{Inbox, Outbox, Producer};
use crate::log::Log;
use crate::replicated::{Cluster, ReplicatedLog};
use crate::shard::{Envelope, Shard};
use crate::socket::{check_unused, ByteStream};

/// Requests one connection may have in progress; reading pauses beyond it.
const IN_FLIGHT_MAX: u64 = 512;
/// How long an idle executor spins before it parks. Parking costs a membarrier and a wake-up
/// later; spinning takes the core from the other threads sharing it (a colocated client).
/// Same-hour A/B under tessera-load at 60k ops/s, 4 runs each: 5 µs gave p50 0.63-0.72 ms and
/// p99 3.3-5.3 ms at 18 µs of server CPU per operation; 50 µs p50 0.77-0.81 ms, p99 5.9-25 ms,
/// 20 µs; 0 µs p99 5.7-222 ms.
const SPIN_BEFORE_PARK: Duration = Duration::from_micros(5);
/// How often each core checks whether the server is stopping.
const STOP_POLL: Duration = Duration::from_millis(20);
/// How often a core calls `ServerConfig::collect_memory`.
const COLLECT_INTERVAL: Duration = Duration::from_secs(1);
/// A core whose timer fires this much later than asked says so on standard error.
const LATE_REPORTED: Duration = Duration::from_millis(100);
/// The pause after a failed accept, doubled after each further failure up to the maximum:
/// long enough not to spin while the cause lasts (a file limit held by open connections),
/// short enough to take connections again soon after it ends.
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(10);
const ACCEPT_PAUSE_MAX: Duration = Duration::from_millis(100);
/// How long a frame begun may go without a byte arriving before its connection is closed.
const FRAME_STALL_MAX: Duration = Duration::from_secs(10);
/// How long a client of a TLS listener may take from its connection to the end of its
/// handshake (as long as an HTTP request's head may take to arrive).
const HANDSHAKE_MAX: Duration = Duration::from_secs(10);
/// The first byte of a TLS connection: the content type of a handshake record (RFC 8446 5.1).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// What the binary listener answers a client that speaks to its TLS port in plain text.
const TLS_ONLY: &str = "this port speaks TLS only: connect with TLS (tessera --endpoint https://HOST:PORT)";
/// `ServerConfig::max_connections` unless configured.
pub const MAX_CONNECTIONS_DEFAULT: usize = 10_000;

/// How to run a node.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Cores to run on (one executor each, pinned to CPUs `first_cpu`.. in turn).
    pub cores: usize,
    /// The CPU core 0's executor is pinned to (several nodes on one machine spread out);
    /// `None`: executors are not pinned, and the kernel places them (for more executors on
    /// a machine than it has CPUs, where pinning would stack some on one CPU).
    pub first_cpu: Option<usize>,
    pub store: StoreConfig,
    /// A member of a cluster: every partition replicated on every node (Multi-Paxos). `None`:
    /// a single node, every partition a group of one.
    pub cluster: Option<Cluster>,
    /// The DynamoDB-compatible HTTP endpoint, if served.
    pub http: Option<HttpConfig>,
    /// Access keys (id to secret) a binary connection must prove it holds before any request
    /// (`crate::auth`), as HTTP requests must be signed with one; `None`: binary connections
    /// need no proof (administration requests still need the cluster's secret, if it has one).
    pub client_keys: Option<std::collections::HashMap<String, String>>,

    /// The most client connections (binary and HTTP together) one core holds open; a
    /// connection beyond it is closed at once.
    pub max_connections: usize,
    /// The request bytes (HTTP bodies, binary frames) one core's client connections may
    /// buffer at once (`crate::budget`); at least `REQUEST_MEMORY_MIN`.
    pub request_memory: usize,
    /// TLS on both client listeners (binary and HTTP), which then speak nothing else; `None`:
    /// plain TCP. Peer links stay plain (a peer proves the cluster's secret).
    pub tls: Option<ServerTls>,
    /// Called on each core's thread every `COLLECT_INTERVAL`, to give the kernel back the
    /// memory the process's allocator holds freed (the binary picks the allocator, so it says
    /// how); `None`: nothing is called. An idle core otherwise kept a burst's buffers: the
    /// allocator returns memory only as it allocates again.
    pub collect_memory: Option<fn()>,
}

/// A node's TLS: its identity, and how it connects to another node's client port (to forward
/// a request to the partition's leader).
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The certificate chain and key it presents (`crate::tls::server_config`).
    pub identity: Arc<rustls::ServerConfig>,
    /// Whom it trusts when it connects to another node (`ClientTls::trusting`).
    pub forwarding: ClientTls,
}

/// A running server; `stop` ends it cleanly (applies, checkpoints and closes every store).
pub struct Server {
    pub address: SocketAddr,
    /// Where the HTTP endpoint listens, if it is served.
    pub http_address: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    executors: Vec<glommio::ExecutorJoinHandle<Result<(), String>>>,
}

/// The addresses a core bound: the binary protocol's and the HTTP endpoint's.
type Bound = (SocketAddr, Option<SocketAddr>);

const CORES_FILE: &str = "cores";

/// Checks (or records, for a new directory) the number of cores the data is laid out for:
/// partitions are placed by core, so the count cannot change under existing data.
fn check_layout(config: &ServerConfig) -> Result<(), String> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|error| format!("cannot create {}: {error}", config.data_dir.display()))?;
    let path = config.data_dir.join(CORES_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let recorded: usize =
                text.trim().parse().map_err(|_| format!("{} is damaged: {text:?} is not a number", path.display()))?;
            if recorded != config.cores {
                return Err(format!(
                    "{} holds data laid out for {recorded} cores; start with --cores {recorded}",
                    config.data_dir.display()
                ));
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let temporary = path.with_extension("tmp");
            std::fs::write(&temporary, format!("{}\n", config.cores))
                .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
                .and_then(|()| std::fs::rename(&temporary, &path))
                .and_then(|()| std::fs::File::open(&config.data_dir)?.sync_all())
                .map_err(|error| format!("cannot write {}: {error}", path.display()))
        }
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

impl Server {
    /// Starts the node; returns once every core listens.
    pub fn start(config: ServerConfig) -> Result<Server, String> {
        if config.cores == 0 {
            return Err("--cores must be at least 1".into());
        }
        if config.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if config.request_memory < REQUEST_MEMORY_MIN {
            return Err(format!("--request-memory-mib must be at least {}", REQUEST_MEMORY_MIN >> 20));
        }
        // Before the data directory is made: a server that cannot listen leaves nothing behind.
        check_unused(config.listen)?;
        if let Some(http) = &config.http {
            check_unused(http.listen)
                .map_err(|error| format!("{error} (the DynamoDB HTTP API: --http-listen ADDR, or none)"))?;
        }
        check_layout(&config)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mesh = MeshBuilder::<Envelope, _>::full(config.cores, 4096);
        let (ready_sender, ready) = std::sync::mpsc::channel::<Result<Bound, String>>();
        let mut executors = Vec::new();
        let mut address = config.listen;
        let mut http_address = config.http.as_ref().map(|http| http.listen);
        for core in 0..config.cores {
            let mut config = ServerConfig { listen: address, ..config.clone() };
            if let (Some(http), Some(bound)) = (&mut config.http, http_address) {
                http.listen = bound;
            }
            let (mesh, core_stop, ready_sender) = (mesh.clone(), stop.clone(), ready_sender.clone());
            let cpus = std::thread::available_parallelism().map_or(1, |cpus| cpus.get());
            let placement =
                config.first_cpu.map_or(Placement::Unbound, |first| Placement::Fixed((first + core) % cpus));
            let executor = LocalExecutorBuilder::new(placement)
                .name(&format!("tessera-core-{core}"))
                .io_memory(2 << 20)
                .spin_before_park(SPIN_BEFORE_PARK)
                .spawn(move || async move {
                    let result = run_core(core, config, mesh, core_stop, &ready_sender).await;
                    if let Err(error) = &result {
                        let _ = ready_sender.send(Err(error.clone()));
                    }
                    result
                })
                .map_err(|error| format!("cannot start the executor of core {core}: {error}"))?;
            executors.push(executor);
            // Core 0 binds first, so that an address with port 0 becomes one port for all.
            match ready.recv() {
                Ok(Ok(bound)) => (address, http_address) = bound,
                Ok(Err(error)) => {
                    stop.store(true, Ordering::SeqCst);
                    return Err(error);
                }
                Err(_) => return Err(format!("core {core} stopped while starting")),
            }
        }
        // Every core has bound; wait until each has joined the mesh and has the catalog.
        for _ in 0..config.cores {
            match ready.recv() {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    stop.store(true, Ordering::SeqCst);
                    return Err(error);
                }
                Err(_) => return Err("a core stopped while starting".into()),
            }
        }
        Ok(Server { address, http_address, stop, executors })
    }

    /// A flag that stops the server when set (for signal handlers).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Waits until the server stops (see `stop_flag`), and reports the first core's error.
    pub fn wait(self) -> Result<(), String> {
        let mut first = Ok(());
        for executor in self.executors {
            let result = executor.join().map_err(|_| "a core panicked".to_string()).and_then(|result| result);
            if first.is_ok() {
                first = result;
            }
        }
        first
    }

    /// Stops the server and waits for it.
    pub fn stop(self) -> Result<(), String> {
        self.stop.store(true, Ordering::SeqCst);
        self.wait()
    }
}

async fn run_core(
    core: usize,
    config: ServerConfig,
    mesh: MeshBuilder<Envelope, glommio::channels::channel_mesh::Full>,
    stop: Arc<AtomicBool>,
    ready: &std::sync::mpsc::Sender<Result<Bound, String>>,
) -> Result<(), String> {
    let listener =
        TcpListener::bind(config.listen).map_err(|error| format!("cannot listen on {}: {error}", config.listen))?;
    let address = listener.local_addr().map_err(|error| error.to_string())?;
    let http = match &config.http {
        None => None,
        Some(http) => {
            let listener = TcpListener::bind(http.listen)
                .map_err(|error| format!("cannot listen for HTTP on {}: {error}", http.listen))?;
            let bound = listener.local_addr().map_err(|error| error.to_string())?;
            Some((listener, bound, Rc::new(Endpoint::new(http, core))))
        }
    };
    let bound = (address, http.as_ref().map(|(_, bound, _)| *bound));
    let _ = ready.send(Ok(bound));
    let dir = config.data_dir.join(format!("core-{core}"));
    let store_config = StoreConfig { replicated: config.cluster.is_some(), ..config.store.clone() };
    let store = Store::open(&dir, store_config)
        .await
        .map_err(|error| format!("cannot open the store in {}: {error}", dir.display()))?;
    let (senders, receivers) = mesh.join().await.map_err(|_| "cannot join the core mesh".to_string())?;
    let log = match &config.cluster {
        None => Log::Local(LocalLog::new(store.clone())),
        Some(cluster) => {
            Log::Replicated(ReplicatedLog::start(store.clone(), cluster, core).map_err(|error| error.to_string())?)
        }
    };
    let replicated = matches!(log, Log::Replicated(_));
    let access = Access {
        clients: config.client_keys.clone(),
        cluster_secret: config.cluster.as_ref().and_then(|cluster| cluster.secret.clone()),
        forwarding_tls: config.tls.as_ref().map(|tls| tls.forwarding.clone()),
    };
    let shard = Rc::new(Shard::new(core, config.cores, log, senders, access));
    shard.serve_peers(receivers);
    if core == 0 {
        let catalog = shard.load_catalog().await?;
        shard.publish_catalog(catalog).await.map_err(|error| error.to_string())?;
        // In a cluster the catalog changes as its partition's chosen entries are applied here.
        shard.follow_catalog();
        shard.await_current_catalog();
    } else {
        shard.catalog_loaded().await;
    }
    // A replicated node's catalog is complete only once its partition caught up: data that
    // looks orphaned before may not be, so nothing is removed at start.
    if !replicated {
        shard.remove_orphans();
    }
    let _ = ready.send(Ok(bound));

    let connections = Rc::new(Connections { open: Cell::new(0), max: config.max_connections });
    let memory = Rc::new(RequestMemory::new(config.request_memory));
    let tls = config.tls.as_ref().map(|tls| TlsAcceptor::from(tls.identity.clone()));
    let accepting_http = http.map(|(listener, _, endpoint)| {
        let (shard, connections, memory, tls) = (shard.clone(), connections.clone(), memory.clone(), tls.clone());
        glommio::spawn_local(accept_connections(listener, core, "HTTP", connections, move |stream, admitted| {
            let (shard, endpoint, memory, tls) = (shard.clone(), endpoint.clone(), memory.clone(), tls.clone());
            glommio::spawn_local(async move {
                match (admitted, tls) {
                    (Some(admitted), None) => {
                        crate::http::connection(shard, endpoint, memory, stream).await;
                        drop(admitted);
                    }
                    (Some(admitted), Some(tls)) => {
                        let refusal = || crate::http::plain_refusal(&endpoint);
                        if let Some(stream) = handshake(stream, &tls, refusal).await {
                            crate::http::connection(shard, endpoint, memory, stream).await;
                        }
                        drop(admitted);
                    }
                    (None, None) => crate::http::refuse_busy(&endpoint, stream).await,
                    // Closed at once: a 503 over TLS would cost a handshake the core has no
                    // room for.
                    (None, Some(_)) => {}
                }
            })
            .detach();
        }))
    });
    let accepting = {
        let shard = shard.clone();
        glommio::spawn_local(accept_connections(listener, core, "client", connections, move |stream, admitted| {
            // Beyond the limit the stream is dropped here: closed at once.
            if let Some(admitted) = admitted {
                let (shard, memory, tls) = (shard.clone(), memory.clone(), tls.clone());
                glommio::spawn_local(async move {
                    match tls {
                        None => connection(shard, memory, stream).await,
                        Some(tls) => {
                            let refusal = || {
                                let mut out = Vec::new();
                                let error = WireError::new(ErrorCode::MalformedMessage, TLS_ONLY);
                                Response::Error(error).encode(0, &mut out);
                                out
                            };
                            if let Some(stream) = handshake(stream, &tls, refusal).await {
                                connection(shard, memory, stream).await;
                            }
                        }
                    }
                    drop(admitted);
                })
                .detach();
            }
        }))
    };
    let mut collected = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let asleep = Instant::now();
        glommio::timer::sleep(STOP_POLL).await;
        let late = asleep.elapsed().saturating_sub(STOP_POLL);
        if late >= LATE_REPORTED {
            // Every request on this core waited as long: the CPU was taken, or a task held it.
            tessera_engine::report!("tessera: core {core} ran {} ms late", late.as_millis());
        }
        if let Some(collect) = config.collect_memory {
            if collected.elapsed() >= COLLECT_INTERVAL {
                collect();
                collected = Instant::now();
            }
        }
    }
    drop(accepting.cancel());
    if let Some(accepting) = accepting_http {
        drop(accepting.cancel());
    }
    store.checkpoint().await.map_err(|error| error.to_string())?;
    store.close().await.map_err(|error| error.to_string())
}

/// The client connections a core holds open, against its limit.
struct Connections {
    open: Cell<usize>,
    max: usize,
}

/// One admitted connection's place under the limit, given back when dropped.
struct Admitted(Rc<Connections>);

impl Connections {
    fn admit(self: &Rc<Self>) -> Option<Admitted> {
        let open = self.open.get();
        (open < self.max).then(|| {
            self.open.set(open + 1);
            Admitted(self.clone())
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let open = self.0.open.get();
        assert!(open > 0, "a connection given back that was never admitted");
        self.0.open.set(open - 1);
    }
}

/// Accepts `listener`'s connections for as long as the core runs, handing each to `accepted`
/// with its place under the connection limit (`None`: beyond it). A failed accept (EMFILE
/// when the process holds its limit of files, say) is reported once per run of failures,
/// and retried after a pause that grows while the failures go on.
async fn accept_connections(
    listener: TcpListener,
    core: usize,
    protocol: &str,
    connections: Rc<Connections>,
    accepted: impl Fn(TcpStream, Option<Admitted>),
) {
    let mut pause: Option<Duration> = None;
    loop {
        match listener.accept().await {
            Ok(stream) => {
                pause = None;
                let _ = stream.set_nodelay(true);
                accepted(stream, connections.admit());
            }
            Err(error) => {
                let next = match pause {
                    None => {
                        tessera_engine::report!(
                            "tessera: core {core} cannot accept {protocol} connections ({} open): {error}; retrying",
                            connections.open.get()
                        );
                        ACCEPT_PAUSE_MIN
                    }
                    Some(pause) => (pause * 2).min(ACCEPT_PAUSE_MAX),
                };
                pause = Some(next);
                glommio::timer::sleep(next).await;
            }
        }
    }
}

/// The TLS stream of a connection to a TLS listener, once its handshake is done, within
/// `HANDSHAKE_MAX` of its connection; `None` (the connection closed) if the handshake failed
/// or took longer. A client whose first byte cannot begin a TLS record speaks in plain text:
/// it is sent `refusal()`, an answer in its own protocol saying so, and the connection closes
/// (what it sent, up to 16 KiB, read first, so that the close does not reset the connection
/// and lose the answer).
async fn handshake(
    mut stream: TcpStream,
    acceptor: &TlsAcceptor,
    refusal: impl FnOnce() -> Vec<u8>,
) -> Option<TlsStream<TcpStream>> {
    let shaking = async {
        let mut first = [0u8; 1];
        if stream.peek(&mut first).await.ok()? == 0 {
            return None;
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            let _ = stream.read(&mut [0u8; 16 << 10]).await;
            let _ = stream.write_all(&refusal()).await;
            let _ = stream.close().await;
            return None;
        }
        acceptor.accept(stream).await.ok()
    };
    let late = async {
        glommio::timer::sleep(HANDSHAKE_MAX).await;
        None
    };
    futures_lite::future::or(shaking, late).await
}

/// Serves one connection until the peer closes it, its framing is lost, a frame stalls
/// half-way, or a large frame finds no room in the core's request memory.
async fn connection<S: ByteStream>(shard: Rc<Shard>, memory: Rc<RequestMemory>, stream: S) {
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let outbox = Rc::new(Outbox::default());
    let answers = Producer::new(&outbox);
    let writing = glommio::spawn_local(async move {
        let mut spare = Vec::new();
        while let Some(batch) = outbox.next(spare).await {
            // The flush sends what a TLS stream holds back; a plain stream holds nothing.
            if writer.write_all(&batch).await.is_err() || writer.flush().await.is_err() {
                return;
            }
            spare = batch;
        }
        let _ = writer.close().await;
    });
    let in_flight = Rc::new(glommio::sync::Semaphore::new(IN_FLIGHT_MAX));
    let mut inbox = Inbox::new();
    // What the connection proved it may do (`crate::auth`), once it sent Authenticate.
    let mut privilege = None;
    // Room for the frame being read, once it is known to be large.
    let mut reserved = None;
    'reading: loop {
        loop {
            match inbox.next_frame() {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    let reserved = reserved.take();
                    let id = frame.header.request_id;
                    if frame.checksum_ok && frame.header.message_type == MessageType::PartitionOp as u16 {
                        // Another cluster member's work on a partition this node leads.
                        let op =
                            shard.access().admit_internal(privilege).and_then(|()| PartitionOp::decode(frame.payload));
                        match op {
                            Err(error) => answers.send(|out| PartitionAnswer::Error(error).encode(id, out)),
                            Ok(op) => {
                                let Ok(permit) = in_flight.acquire_static_permit(1).await else { break 'reading };
                                let (shard, producer) = (shard.clone(), Producer::new(&answers.0));
                                glommio::spawn_local(async move {
                                    let answer = shard.serve_partition_op(op).await;
                                    producer.send(|out| {
                                        within_frame(
                                            out,
                                            |out| answer.encode(id, out),
                                            |error, out| PartitionAnswer::Error(error).encode(id, out),
                                        )
                                    });
                                    drop((permit, reserved));
                                })
                                .detach();
                            }
                        }
                        continue;
                    }
                    let request = if !frame.checksum_ok {
                        Err(WireError::new(ErrorCode::ChecksumMismatch, "the frame's CRC32C does not match its bytes"))
                    } else {
                        RequestFlags::from_bits(frame.header.flags)
                            .and_then(|flags| Ok((Request::decode(frame.header.message_type, frame.payload)?, flags)))
                    }
                    .map_err(Some);
                    let request = request.and_then(|(request, flags)| match request {
                        Request::Authenticate { key_id, timestamp_ms, nonce, signature } => {
                            Err(match shard.access().verify(&key_id, timestamp_ms, &nonce, &signature) {
                                Ok(granted) => {
                                    privilege = Some(granted);
                                    let hello =
                                        Response::Hello { core: shard.core() as u32, cores: shard.cores() as u32 };
                                    answers.send(|out| hello.encode(id, out));
                                    None
                                }
                                Err(error) => Some(error),
                            })
                        }
                        request => shard.access().admit(&request, privilege).map(|()| (request, flags)).map_err(Some),
                    });
                    match request {
                        Err(None) => {}
                        Err(Some(error)) => {
                            let refused = error.code == ErrorCode::UnrecognizedClientException;
                            answers.send(|out| Response::Error(error).encode(id, out));
                            // A wrong proof gets no second try on the same connection.
                            if refused {
                                break 'reading;
                            }
                        }
                        Ok((request, flags)) => {
                            let Ok(permit) = in_flight.acquire_static_permit(1).await else { break 'reading };
                            let (shard, producer) = (shard.clone(), Producer::new(&answers.0));
                            glommio::spawn_local(async move {
                                let (response, consumed) = shard.execute(request, flags).await;
                                producer.send(|out| {
                                    within_frame(
                                        out,
                                        |out| response.encode_with_capacity(id, &consumed, out),
                                        |error, out| Response::Error(error).encode(id, out),
                                    )
                                });
                                drop((permit, reserved));
                            })
                            .detach();
                        }
                    }
                }
                Err(lost) => {
                    let error = WireError::new(ErrorCode::FrameTooLarge, lost.to_string());
                    answers.send(|out| Response::Error(error).encode(0, out));
                    break 'reading;
                }
            }
        }
        let wanted = inbox.wanted();
        if reserved.is_none() && wanted > budget::UNRESERVED_MAX {
            reserved = memory.reserve(wanted).await;
            if reserved.is_none() {
                let error = WireError::new(
                    ErrorCode::ServiceUnavailable,
                    format!("no room for a {wanted}-byte request in this core's request memory: retry later"),
                );
                answers.send(|out| Response::Error(error).encode(0, out));
                break;
            }
        }
        // Between frames a connection may idle; within one, bytes must keep coming.
        let partial = inbox.partial();
        let stall = async {
            if partial {
                glommio::timer::sleep(FRAME_STALL_MAX).await;
            } else {
                std::future::pending::<()>().await;
            }
            Err(std::io::ErrorKind::TimedOut.into())
        };
        match futures_lite::future::or(inbox.fill(&mut reader), stall).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // Requests still being served hold producers of their own; the writer ends after the last.
    drop(answers);
    writing.await;
}

/// Appends the answer `encode` writes to `out`, or, when it would be a frame larger than a
/// receiver takes (`FRAME_LEN_MAX`: items of many small attributes encode to more than
/// their size), the error `refuse` writes instead: the client gets a typed answer, not a
/// stream it must drop.
fn within_frame(out: &mut Vec<u8>, encode: impl FnOnce(&mut Vec<u8>), refuse: impl FnOnce(WireError, &mut Vec<u8>)) {
    let start = out.len();
    encode(out);
    let len = out.len() - start - 4;
    if len > FRAME_LEN_MAX {
        out.truncate(start);
        let message = format!("the answer is {len} bytes encoded, over the protocol's frame limit of {FRAME_LEN_MAX}: ask for fewer items at a time");
        refuse(WireError::new(ErrorCode::FrameTooLarge, message), out);
    }
}
