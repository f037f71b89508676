//! The glommio front end of the client library (`tessera_wire::client` holds the typed calls,
//! the blocking `Client`, TLS and the authentication proof): `AsyncClient`, a pipelined
//! connection for glommio programs (the load generator, a node forwarding requests), with the
//! same typed methods as `Client` (`typed_calls!`); `AsyncPool`, connections grouped by the
//! core serving each, item calls routed by the table's partition map to the core that owns the
//! item (`Routed`: a stale map is answered WrongPartition, forgotten and fetched again);
//! `ClusterPool`, an `AsyncPool` per node, each call sent to its partition's leader.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::AsyncWriteExt;

use crate::auth::Access;
use crate::local::{Inbox, Outbox, Pending, Producer};
use crate::socket::ByteStream;
use tessera_engine::Item;
use tessera_wire::client::{call, Answer, Call, ClientConfig, ClientError, Credentials, Retries};
use tessera_wire::{
    ErrorCode, MessageType, PartitionAnswer, PartitionOp, Request, RequestFlags, Response, TableDescription, WireError,
};

/// How a node with `access` connects to another to forward a request: proving the cluster's
/// secret, over TLS if it serves TLS.
pub(crate) trait Forwarding {
    fn forwarding(access: &Access) -> Self;
}

impl Forwarding for ClientConfig {
    fn forwarding(access: &Access) -> ClientConfig {
        ClientConfig {
            credentials: access.cluster_secret.as_deref().map(Credentials::cluster),
            tls: access.forwarding_tls.clone(),
            ..ClientConfig::default()
        }
    }
}

/// A pipelined connection for glommio programs (the load generator): any number of calls may
/// be in flight on it at once; each waits for the answer carrying its request id.
pub struct AsyncClient {
    outbox: Rc<Outbox>,
    pending: Rc<Pending<Received>>,
    /// Keeps the writer task going while the client lives.
    _producer: Producer,
    config: ClientConfig,
}

impl AsyncClient {
    /// Connects from the current glommio executor.
    pub async fn connect(address: SocketAddr, config: ClientConfig) -> Result<AsyncClient, ClientError> {
        let stream = glommio::net::TcpStream::connect(address).await.map_err(|error| ClientError::Io(error.into()))?;
        stream.set_nodelay(true).map_err(|error| ClientError::Io(error.into()))?;
        let client = match &config.tls {
            None => AsyncClient::start(stream, config),
            Some(tls) => {
                let late = async {
                    glommio::timer::sleep(config.timeout).await;
                    Err(std::io::ErrorKind::TimedOut.into())
                };
                let stream = futures_lite::future::or(crate::tls::connect(tls, stream, address), late).await?;
                AsyncClient::start(stream, config)
            }
        };
        if let Some(credentials) = &client.config.credentials {
            let proof = call::authenticate(credentials);
            let answer = client.call_once(proof.request()).await?;
            proof.answer(answer)?;
        }
        Ok(client)
    }

    /// A client on `stream`, its reader and writer tasks started.
    fn start(stream: impl ByteStream, config: ClientConfig) -> AsyncClient {
        let (mut reader, mut writer) = futures_lite::io::split(stream);
        let outbox = Rc::new(Outbox::default());
        let producer = Producer::new(&outbox);
        let pending: Rc<Pending<Received>> = Rc::default();
        let writing = outbox.clone();
        glommio::spawn_local(async move {
            let mut spare = Vec::new();
            while let Some(batch) = writing.next(spare).await {
                // The flush sends what a TLS stream holds back; a plain stream holds nothing.
                if writer.write_all(&batch).await.is_err() || writer.flush().await.is_err() {
                    return;
                }
                spare = batch;
            }
        })
        .detach();
        let answers = pending.clone();
        glommio::spawn_local(async move {
            let mut inbox = Inbox::new();
            let failure = loop {
                match inbox.next_frame() {
                    Err(lost) => break lost.to_string(),
                    Ok(Some(frame)) => answers.complete(frame.header.request_id, received(&frame)),
                    Ok(None) => match inbox.fill(&mut reader).await {
                        Ok(0) => break "the server closed the connection".to_string(),
                        Ok(_) => {}
                        Err(error) => break error.to_string(),
                    },
                }
            };
            answers.fail_all(|| Received::Answer(Err(ClientError::Protocol(failure.clone()))));
        })
        .detach();
        AsyncClient { outbox, pending, _producer: producer, config }
    }

    /// Sends `request` once and waits for its answer (or the timeout).
    pub async fn call_once(&self, request: &Request) -> Result<Response, ClientError> {
        self.call_once_with(request, RequestFlags::default()).await.map(|(response, _)| response)
    }

    /// Sends `request` once with `flags` (a node forwarding a request marks it so); the answer
    /// and the capacity it reports (when the flags asked for it).
    pub async fn call_once_with(&self, request: &Request, flags: RequestFlags) -> Answer {
        let sent = self.send(|id, out| {
            request.encode_with_flags(id, flags, out);
            Ok(())
        });
        match sent.await? {
            Received::Answer(answer) => answer,
            Received::Partition(_) => {
                Err(ClientError::Protocol(format!("{} was answered as a PartitionOp", request.operation())))
            }
        }
    }

    /// Sends the internal RPC's `op` (a cluster member, to the node that leads its partition).
    pub(crate) async fn partition_op(&self, op: &PartitionOp) -> Result<PartitionAnswer, ClientError> {
        match self.send(|id, out| op.encode(id, out)).await? {
            Received::Partition(answer) => answer,
            Received::Answer(Ok((Response::Error(error), _))) => Ok(PartitionAnswer::Error(error)),
            Received::Answer(answer) => answer.and_then(|(response, _)| {
                Err(ClientError::Protocol(format!("a PartitionOp was answered with {response:?}")))
            }),
        }
    }

    /// Sends the frame `encode` appends (for the request id it is given) and waits for its
    /// answer, or the timeout.
    async fn send(
        &self,
        encode: impl FnOnce(u64, &mut Vec<u8>) -> Result<(), WireError>,
    ) -> Result<Received, ClientError> {
        let (id, reply) = self.pending.open();
        if let Err(error) = encode(id, &mut self.outbox.bytes.borrow_mut()) {
            self.pending.abandon(id);
            return Err(ClientError::Service(error));
        }
        self.outbox.wake();
        match glommio::timer::timeout(self.config.timeout, async { Ok(reply.await) }).await {
            Ok(received) => Ok(received),
            Err(_) => {
                self.pending.abandon(id);
                Err(ClientError::Io(std::io::ErrorKind::TimedOut.into()))
            }
        }
    }

    /// Sends `request`, retrying retryable errors with jittered exponential backoff.
    pub async fn call(&self, request: &Request) -> Result<Response, ClientError> {
        self.call_with(request, RequestFlags::default()).await
    }

    /// `call` with `flags`.
    async fn call_with(&self, request: &Request, flags: RequestFlags) -> Result<Response, ClientError> {
        let mut retries = Retries::new(&self.config);
        loop {
            match retries.judge(self.call_once_with(request, flags).await?.0) {
                Ok(answer) => return answer,
                Err(delay) => glommio::timer::sleep(delay).await,
            }
        }
    }

    /// Sends `call`'s request (as `call` does) and reads its answer.
    async fn run<T>(&self, call: Call<T>) -> Result<T, ClientError> {
        let response = self.call(call.request()).await?;
        call.answer(response)
    }

    tessera_wire::typed_calls!(async);
}

/// An answer as the reader takes it off the connection: a public request's, or the internal
/// RPC's (which only a node forwarding work to another sends for).
enum Received {
    Answer(Answer),
    Partition(Result<PartitionAnswer, ClientError>),
}

fn received(frame: &tessera_wire::frame::Frame) -> Received {
    if frame.header.message_type != MessageType::PartitionAnswer as u16 {
        return Received::Answer(call::answer_of(frame));
    }
    Received::Partition(match frame.checksum_ok {
        false => Err(ClientError::Protocol("an answer failed its checksum".into())),
        true => PartitionAnswer::decode(frame.payload).map_err(|error| ClientError::Protocol(error.to_string())),
    })
}

/// Pipelined connections to one server, grouped by the core serving each. A call on one item
/// goes to a connection on the core that owns the item's partition by the table's partition map
/// (`route`, the map learned from the table's description on first use), so the server need
/// not pass it between cores; other calls take the connections in turn (`client`). A stale
/// map (the table recreated with other partitions, or its map changed) is answered
/// WrongPartition: the call is sent again unrouted and the map fetched again by the next route.
/// The server routes every call by its own map: the client's is never trusted.
pub struct AsyncPool {
    clients: Vec<AsyncClient>,
    /// Indexes into `clients` of the connections each core serves.
    by_core: Vec<Vec<usize>>,
    /// Layouts of the tables routed to so far.
    tables: std::cell::RefCell<ahash::HashMap<String, TableDescription>>,
    looking_up: std::cell::RefCell<ahash::HashSet<String>>,
    next: std::cell::Cell<usize>,
}

/// Connections tried per wanted connection before a core without one is given up on.
const CONNECT_ATTEMPTS: usize = 8;
/// Most cores a server may claim (an answer beyond it is a protocol error, not an allocation).
const SERVER_CORES_MAX: usize = 4096;

impl AsyncPool {
    /// Opens connections until every core of the server serves `per_core` of them (at least
    /// one). The kernel picks each connection's core, so more may be opened (and closed again)
    /// than kept; a core still without one after a few tries is reached through the others.
    pub async fn connect(address: SocketAddr, per_core: usize, config: ClientConfig) -> Result<AsyncPool, ClientError> {
        let per_core = per_core.max(1);
        let mut pool = AsyncPool {
            clients: Vec::new(),
            by_core: Vec::new(),
            tables: std::cell::RefCell::default(),
            looking_up: std::cell::RefCell::default(),
            next: std::cell::Cell::new(0),
        };
        let mut attempts = CONNECT_ATTEMPTS;
        while attempts > 0 && (pool.clients.is_empty() || pool.by_core.iter().any(|core| core.len() < per_core)) {
            attempts -= 1;
            let client = AsyncClient::connect(address, config.clone()).await?;
            let (core, cores) = client.hello().await?;
            if core >= cores || cores > SERVER_CORES_MAX {
                return Err(ClientError::Protocol(format!("the server answered core {core} of {cores}")));
            }
            if pool.by_core.is_empty() {
                pool.by_core = vec![Vec::new(); cores];
                attempts = per_core * cores * CONNECT_ATTEMPTS;
            }
            if pool.by_core.len() != cores {
                return Err(ClientError::Protocol(format!(
                    "the server answered {cores} cores, earlier {}",
                    pool.by_core.len()
                )));
            }
            if pool.by_core[core].len() < per_core {
                pool.by_core[core].push(pool.clients.len());
                pool.clients.push(client);
            }
        }
        Ok(pool)
    }

    /// The next connection in turn.
    pub fn client(&self) -> &AsyncClient {
        let index = self.next.get();
        self.next.set(index.wrapping_add(1));
        &self.clients[index % self.clients.len()]
    }

    /// The position in `table`'s partition map of the partition holding `key`, once `route`
    /// has learned the map.
    pub fn partition_index(&self, table: &str, key: &Item) -> Option<u32> {
        self.tables.borrow().get(table).and_then(|table| table.range_of(key))
    }

    /// Forgets `table`'s layout (its map is stale): the next `route` looks it up again.
    fn forget(&self, table: &str) {
        self.tables.borrow_mut().remove(table);
    }

    /// The connection for a call on the item with key `key` (or the whole item) in `table`:
    /// one on the core owning it by the table's map, the call marked routed. The table's
    /// layout is looked up on first use; until it is known, or if no connection is on the
    /// owning core, any connection, the call not marked.
    pub async fn route<'a>(&'a self, table: &'a str, key: &Item) -> Routed<'a> {
        let unknown = !self.tables.borrow().contains_key(table);
        // One lookup at a time per table; calls made meanwhile take any connection.
        if unknown && self.looking_up.borrow_mut().insert(table.to_string()) {
            let description = self.client().layout(table).await;
            self.looking_up.borrow_mut().remove(table);
            if let Ok(description) = description {
                self.tables.borrow_mut().insert(table.to_string(), description);
            }
        }
        let core = self.tables.borrow().get(table).and_then(|description| {
            let index = description.range_of(key)?;
            description.map.as_ref().map(|map| usize::from(map.ranges[index as usize].core))
        });
        match core.and_then(|core| self.by_core.get(core)).filter(|connections| !connections.is_empty()) {
            Some(connections) => {
                let index = self.next.get();
                self.next.set(index.wrapping_add(1));
                Routed { pool: self, client: &self.clients[connections[index % connections.len()]], table: Some(table) }
            }
            None => Routed { pool: self, client: self.client(), table: None },
        }
    }
}

/// A connection `AsyncPool::route` chose for a call on one item, with the same typed methods
/// as `AsyncClient`.
pub struct Routed<'a> {
    pool: &'a AsyncPool,
    client: &'a AsyncClient,
    /// The table whose map named the connection's core; `None`: the call is not routed.
    table: Option<&'a str>,
}

impl Routed<'_> {
    /// Sends `request` (marked routed when it is), retrying as `AsyncClient::call` does. A
    /// WrongPartition answer (the pool's map of the table is stale) makes the pool forget the
    /// map, and the request is sent again unrouted: the server passes it to the owner.
    pub async fn call(&self, request: &Request) -> Result<Response, ClientError> {
        let flags = RequestFlags { routed: self.table.is_some(), ..RequestFlags::default() };
        match (self.client.call_with(request, flags).await, self.table) {
            (Err(ClientError::Service(WireError { code: ErrorCode::WrongPartition, .. })), Some(table)) => {
                self.pool.forget(table);
                self.client.call(request).await
            }
            (answer, _) => answer,
        }
    }

    /// Sends `call`'s request (as `call` does) and reads its answer.
    async fn run<T>(&self, call: Call<T>) -> Result<T, ClientError> {
        let response = self.call(call.request()).await?;
        call.answer(response)
    }

    tessera_wire::typed_calls!(async);
}

/// Connections to every node of a cluster (an `AsyncPool` each), each call sent to the node
/// that leads its key's partition, learned from NotLeader answers and kept per partition; a
/// single node is a cluster of one.
pub struct ClusterPool {
    pools: Vec<AsyncPool>,
    addresses: Vec<SocketAddr>,
    /// (table, partition index): the index in `pools` of the node that leads it.
    leaders: std::cell::RefCell<ahash::HashMap<(String, u32), usize>>,
}

/// NotLeader answers one `ClusterPool` call follows before it gives up: with the pause after
/// one that names no leader, a call waits about 2 s for an election.
const CLUSTER_REDIRECTS_MAX: usize = 40;

impl ClusterPool {
    /// Connects to every node of `addresses` (`per_core` connections per core of each).
    pub async fn connect(
        addresses: &[SocketAddr],
        per_core: usize,
        config: ClientConfig,
    ) -> Result<ClusterPool, ClientError> {
        let mut pools = Vec::with_capacity(addresses.len());
        for &address in addresses {
            pools.push(AsyncPool::connect(address, per_core, config.clone()).await?);
        }
        if pools.is_empty() {
            return Err(ClientError::Protocol("a cluster pool needs at least one node".into()));
        }
        Ok(ClusterPool { pools, addresses: addresses.to_vec(), leaders: std::cell::RefCell::default() })
    }

    /// Runs `call` on a connection of the node leading `key`'s partition in `table` (on the
    /// core owning it), following NotLeader answers.
    pub async fn call<T>(
        &self,
        table: &str,
        key: &Item,
        call: impl AsyncFn(&Routed<'_>) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut attempts = 0;
        loop {
            let partition = self.pools[0].partition_index(table, key);
            let cached =
                partition.and_then(|partition| self.leaders.borrow().get(&(table.to_string(), partition)).copied());
            let node = cached.unwrap_or(0);
            let result = call(&self.pools[node].route(table, key).await).await;
            attempts += 1;
            let Err(ClientError::Service(WireError { code: ErrorCode::NotLeader, leader, .. })) = &result else {
                return result;
            };
            if attempts >= CLUSTER_REDIRECTS_MAX {
                return result;
            }
            let leader: Option<SocketAddr> = leader.as_deref().and_then(|address| address.parse().ok());
            match (partition, leader.and_then(|leader| self.addresses.iter().position(|node| *node == leader))) {
                (Some(partition), Some(node)) => {
                    self.leaders.borrow_mut().insert((table.to_string(), partition), node);
                }
                // No leader known (an election), or the layout not learned yet: a moment.
                _ => glommio::timer::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}
