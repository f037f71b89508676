//! The client library, with no glommio or io_uring under it: the typed API once, I/O-free
//! (`call`: each call's request and how its answer is read; `Retries`: jittered exponential
//! backoff on retryable errors), the proof a connection authenticates with (`Credentials`),
//! client TLS (`ClientTls`), and the blocking front end `Client` for plain programs, with
//! timeouts and NotLeader answers followed; `ItemBuilder`, so that items need not be written
//! as attribute-value trees by hand. The glommio front end (`AsyncClient`, pipelined, and its
//! pools) is `tessera_net::client`, built on the same calls.
//!
//! ```no_run
//! use tessera_wire::client::{Client, ItemBuilder};
//! let mut client = Client::connect("127.0.0.1:7400").unwrap();
//! let item = ItemBuilder::new().s("id", "user#1").n("visits", 3).build();
//! client.put_item("users", item).unwrap();
//! ```

pub mod call;
mod credentials;
mod item;
mod retry;
pub mod tls;

use std::io::{Read, Write as _};
use std::net::SocketAddr;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

pub use call::{is_error, Answer, BatchGetOutput, Call, ClientError, Page};
pub use credentials::{now_ms, proof_mac, Credentials, CLUSTER_KEY_ID, NONCE_LEN};
pub use item::ItemBuilder;
pub use retry::Retries;
/// The data model's types the calls take, so that a client needs no other crate.
pub use tessera_engine::{AttributeValue, Item, KeyAttribute, KeySchema, KeyType, Number};
pub use tls::ClientTls;

use crate::frame::{self, Decoded};
use crate::{
    ConsumedCapacity, ErrorCode, Query, Request, RequestFlags, Response, ReturnConsumedCapacity, Scan, WireError,
};

/// Settings of a client.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long one attempt may wait for its answer.
    pub timeout: Duration,
    /// Attempts of a request whose error is retryable, the first included.
    pub attempts: u32,
    /// The first backoff; each retry doubles it, with random jitter.
    pub backoff: Duration,
    /// The key every connection proves it holds before its first request (`Credentials`),
    /// needed by a server that checks keys; `None`: connections make no proof.
    pub credentials: Option<Credentials>,
    /// TLS, for a server that serves it (`serve --tls-cert`); `None`: plain TCP.
    pub tls: Option<ClientTls>,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            timeout: Duration::from_secs(10),
            attempts: 5,
            backoff: Duration::from_millis(20),
            credentials: None,
            tls: None,
        }
    }
}

/// NotLeader answers a call follows before it gives up.
const REDIRECTS_MAX: u32 = 50;
/// The pause after a NotLeader answer that names no leader (an election is on): with
/// `REDIRECTS_MAX`, a call waits about 10 s for an election (candidates that collide take
/// another round or two of randomized timeouts).
const ELECTION_PAUSE: Duration = Duration::from_millis(200);

/// A blocking client's connection: plain, or TLS over it.
enum Transport {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Transport {
    /// `stream` set up by `config`: no Nagle delay, its timeouts, and TLS if configured (the
    /// handshake done here, within the timeouts).
    fn new(stream: TcpStream, config: &ClientConfig) -> std::io::Result<Transport> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(config.timeout))?;
        stream.set_write_timeout(Some(config.timeout))?;
        match &config.tls {
            None => Ok(Transport::Plain(stream)),
            Some(tls) => {
                let address = stream.peer_addr()?;
                Ok(Transport::Tls(Box::new(tls.connect_blocking(stream, address)?)))
            }
        }
    }

    fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(stream) => stream,
            Transport::Tls(stream) => stream.get_ref(),
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.read(buffer),
            Transport::Tls(stream) => stream.read(buffer),
        }
    }
}

impl std::io::Write for Transport {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.write(bytes),
            Transport::Tls(stream) => stream.write(bytes),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Transport::Plain(stream) => stream.flush(),
            Transport::Tls(stream) => stream.flush(),
        }
    }
}

/// A blocking connection to a Tessera server.
pub struct Client {
    stream: Transport,
    buffer: Vec<u8>,
    next_id: u64,
    config: ClientConfig,
    /// The node first connected to: where a client goes back when a node a NotLeader answer
    /// named cannot be reached.
    home: SocketAddr,
}

impl Client {
    pub fn connect(address: impl ToSocketAddrs) -> Result<Client, ClientError> {
        Client::connect_with(address, ClientConfig::default())
    }

    pub fn connect_with(address: impl ToSocketAddrs, config: ClientConfig) -> Result<Client, ClientError> {
        let stream = Transport::new(TcpStream::connect(address)?, &config)?;
        let home = stream.socket().peer_addr()?;
        let credentials = config.credentials.clone();
        let mut client = Client { stream, buffer: Vec::new(), next_id: 1, config, home };
        if let Some(credentials) = credentials {
            let proof = call::authenticate(&credentials);
            let (answer, _) = client.call_once(proof.request(), ReturnConsumedCapacity::None)?;
            proof.answer(answer)?;
        }
        Ok(client)
    }

    /// Sends `request` and returns the answer, retrying retryable errors with backoff.
    pub fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        self.call_with_capacity(request, ReturnConsumedCapacity::None).map(|(response, _)| response)
    }

    /// Sends `request` asking for the capacity it consumes (ReturnConsumedCapacity); returns
    /// the answer and that capacity, per table, retrying retryable errors with backoff.
    pub fn call_with_capacity(
        &mut self,
        request: &Request,
        capacity: ReturnConsumedCapacity,
    ) -> Result<(Response, Vec<ConsumedCapacity>), ClientError> {
        let mut retries = Retries::new(&self.config);
        let mut redirects = 0;
        loop {
            let (response, consumed) = match self.call_once(request, capacity) {
                // A node a NotLeader answer named is down: back home, and wait for an election.
                Err(ClientError::Io(_)) if redirects > 0 && redirects < REDIRECTS_MAX => {
                    redirects += 1;
                    std::thread::sleep(ELECTION_PAUSE);
                    let home = self.home;
                    // If home is down too, the next call fails the same way, up to the bound.
                    let _ = self.reconnect(home);
                    continue;
                }
                answer => answer?,
            };
            // A cluster member that does not lead the partition names the node that does (or
            // none, during an election): follow it, a bounded number of times.
            if let Response::Error(WireError { code: ErrorCode::NotLeader, leader, .. }) = &response {
                if redirects < REDIRECTS_MAX {
                    redirects += 1;
                    match leader.as_deref().map(str::parse::<SocketAddr>) {
                        // A node that cannot be reached is handled as a lost connection above.
                        Some(Ok(address)) if self.reconnect(address).is_ok() => {}
                        _ => std::thread::sleep(ELECTION_PAUSE),
                    }
                    continue;
                }
            }
            match retries.judge(response) {
                Ok(answer) => return answer.map(|response| (response, consumed)),
                Err(delay) => std::thread::sleep(delay),
            }
        }
    }

    /// Sends `call`'s request (as `call` does) and reads its answer.
    fn run<T>(&mut self, call: Call<T>) -> Result<T, ClientError> {
        let response = self.call(call.request())?;
        call.answer(response)
    }

    /// The node this client talks to now (after following any NotLeader answers).
    pub fn peer_address(&self) -> Result<SocketAddr, ClientError> {
        Ok(self.stream.socket().peer_addr()?)
    }

    /// Connects to `address` instead (the node a NotLeader answer named).
    fn reconnect(&mut self, address: SocketAddr) -> Result<(), ClientError> {
        self.stream = Transport::new(TcpStream::connect_timeout(&address, self.config.timeout)?, &self.config)?;
        self.buffer.clear();
        Ok(())
    }

    /// Sends `request` once and waits for its answer.
    fn call_once(&mut self, request: &Request, capacity: ReturnConsumedCapacity) -> Answer {
        let id = self.next_id;
        self.next_id += 1;
        let mut bytes = Vec::new();
        request.encode_with_flags(id, RequestFlags { capacity, ..RequestFlags::default() }, &mut bytes);
        self.stream.write_all(&bytes)?;
        self.stream.flush()?;
        loop {
            match frame::decode(&self.buffer).map_err(|lost| ClientError::Protocol(lost.to_string()))? {
                Decoded::Frame(frame, used) => {
                    let (request_id, answer) = (frame.header.request_id, call::answer_of(&frame));
                    self.buffer.drain(..used);
                    let (response, consumed) = answer?;
                    match request_id {
                        answered if answered == id => return Ok((response, consumed)),
                        // An error about the framing of our stream: nothing more will come.
                        0 => return response_error(response),
                        _ => continue,
                    }
                }
                Decoded::Incomplete(_) => {
                    let mut chunk = [0u8; 64 << 10];
                    let read = self.stream.read(&mut chunk)?;
                    if read == 0 {
                        return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                    self.buffer.extend_from_slice(&chunk[..read]);
                }
            }
        }
    }

    crate::typed_calls!(blocking);

    /// Every table name, following every page.
    pub fn list_tables(&mut self) -> Result<Vec<String>, ClientError> {
        let mut names = Vec::new();
        let mut start = None;
        loop {
            let (tables, last_evaluated_table) = self.run(call::list_tables_page(start))?;
            names.extend(tables);
            match last_evaluated_table {
                Some(last) => start = Some(last),
                None => return Ok(names),
            }
        }
    }

    /// Every item a Query matches, following every page.
    pub fn query_all(&mut self, query: Query) -> Result<Vec<Item>, ClientError> {
        let first = query.exclusive_start_key.clone();
        self.follow_pages(first, |client, start| client.query(Query { exclusive_start_key: start, ..query.clone() }))
    }

    /// Every item of one scan segment, following every page.
    pub fn scan_all(&mut self, scan: Scan) -> Result<Vec<Item>, ClientError> {
        let first = scan.exclusive_start_key.clone();
        self.follow_pages(first, |client, start| client.scan(Scan { exclusive_start_key: start, ..scan.clone() }))
    }

    /// Reads pages from `start` on, each after the last one's LastEvaluatedKey.
    fn follow_pages(
        &mut self,
        mut start: Option<Item>,
        mut page: impl FnMut(&mut Client, Option<Item>) -> Result<Page, ClientError>,
    ) -> Result<Vec<Item>, ClientError> {
        let mut items = Vec::new();
        loop {
            let next = page(self, start)?;
            items.extend(next.items);
            match next.last_evaluated_key {
                Some(key) => start = Some(key),
                None => return Ok(items),
            }
        }
    }
}

/// An answer about the framing of the whole stream (request id 0): its error.
fn response_error<T>(response: Response) -> Result<T, ClientError> {
    match response {
        Response::Error(error) => Err(ClientError::Service(error)),
        other => call::unexpected(other),
    }
}

/// Blocking connections shared by threads: `with` lends an idle connection (opening one if
/// none is idle) and takes it back afterwards, unless the call failed at the connection level.
pub struct ClientPool {
    address: SocketAddr,
    config: ClientConfig,
    idle: std::sync::Mutex<Vec<Client>>,
}

impl ClientPool {
    pub fn new(address: SocketAddr, config: ClientConfig) -> ClientPool {
        ClientPool { address, config, idle: std::sync::Mutex::new(Vec::new()) }
    }

    /// Runs `call` with a pooled connection.
    pub fn with<T>(&self, call: impl FnOnce(&mut Client) -> Result<T, ClientError>) -> Result<T, ClientError> {
        let idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let mut client = match idle {
            Some(client) => client,
            None => Client::connect_with(self.address, self.config.clone())?,
        };
        let result = call(&mut client);
        if !matches!(result, Err(ClientError::Io(_) | ClientError::Protocol(_))) {
            self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(client);
        }
        result
    }
}
