//! The client library: a blocking client for plain programs, with typed calls, timeouts,
//! and retries with jittered exponential backoff on retryable errors; and `ItemBuilder`, so
//! that items need not be written as attribute-value trees by hand.
//!
//! ```no_run
//! use tessera_net::client::{Client, ItemBuilder};
//! let mut client = Client::connect("127.0.0.1:7400").unwrap();
//! let item = ItemBuilder::new().s("id", "user#1").n("visits", 3).build();
//! client.put_item("users", item).unwrap();
//! ```

use std::collections::BTreeSet;
use std::io::{Read, Write as _};
use std::net::SocketAddr;
use std::net::{TcpStream, ToSocketAddrs};
use std::rc::Rc;
use std::time::Duration;

use futures_lite::AsyncWriteExt;

use crate::auth::{Access, Credentials};
use crate::catalog::{core_of_key, partition_of_key};
use crate::local::{Inbox, Outbox, Pending, Producer};
use crate::socket::ByteStream;
use crate::tls::ClientTls;
use tessera_engine::{AttributeValue, Item, KeySchema, Number};
use tessera_wire::frame::{self, Decoded};
use tessera_wire::{
    ConsumedCapacity, ErrorCode, Expressions, Query, ReadExpressions, Request, RequestFlags, Response,
    ReturnConsumedCapacity, ReturnValues, Scan, TableDescription, TableKeys, UpdateItem, WireError, Write,
};

/// What a call can fail with.
#[derive(Debug)]
pub enum ClientError {
    /// The connection failed or timed out.
    Io(std::io::Error),
    /// The server's bytes made no sense (a bug on one side, or not a Tessera server).
    Protocol(String),
    /// The server answered with an error.
    Service(WireError),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Io(error) => write!(f, "connection error: {error}"),
            ClientError::Protocol(message) => write!(f, "protocol error: {message}"),
            ClientError::Service(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<std::io::Error> for ClientError {
    fn from(error: std::io::Error) -> ClientError {
        ClientError::Io(error)
    }
}

/// Settings of a client.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long one attempt may wait for its answer.
    pub timeout: Duration,
    /// Attempts of a request whose error is retryable, the first included.
    pub attempts: u32,
    /// The first backoff; each retry doubles it, with random jitter.
    pub backoff: Duration,
    /// The key every connection proves it holds before its first request (`crate::auth`),
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

impl ClientConfig {
    /// How a node with `access` connects to another to forward a request: proving the
    /// cluster's secret, over TLS if it serves TLS.
    pub(crate) fn forwarding(access: &Access) -> ClientConfig {
        ClientConfig {
            credentials: access.cluster_secret.as_deref().map(Credentials::cluster),
            tls: access.forwarding_tls.clone(),
            ..ClientConfig::default()
        }
    }
}

/// What a server answers an Authenticate request with: a Hello answer, or the reason.
fn authenticated(answer: Response) -> Result<(), ClientError> {
    match answer {
        Response::Hello { .. } => Ok(()),
        Response::Error(error) => Err(ClientError::Service(error)),
        other => Err(ClientError::Protocol(format!("Authenticate was answered with {other:?}"))),
    }
}

fn put_request(table: &str, item: Item, return_old: bool, expressions: Expressions) -> Request {
    Request::PutItem { table: table.into(), item, return_old, expressions, return_old_on_failure: false }
}

fn delete_request(table: &str, key: Item, expressions: Expressions) -> Request {
    Request::DeleteItem { table: table.into(), key, return_old: true, expressions, return_old_on_failure: false }
}

fn update_request(
    table: &str,
    key: Item,
    update: &str,
    expressions: Expressions,
    return_values: ReturnValues,
) -> Request {
    Request::UpdateItem(UpdateItem {
        table: table.into(),
        key,
        update: update.into(),
        expressions,
        return_values,
        return_old_on_failure: false,
    })
}

/// Randomness for backoff jitter (xorshift; not for anything else).
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let clock =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |now| now.as_nanos() as u64);
        Jitter(clock ^ u64::from(std::process::id()) ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// A number in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The retry policy of one request: retryable errors are retried after a jittered,
/// doubling backoff until the attempts run out.
struct Retries {
    backoff: Duration,
    attempts_left: u32,
    /// Seeded at the first retry: most requests never need it.
    jitter: Option<Jitter>,
}

impl Retries {
    fn new(config: &ClientConfig) -> Retries {
        Retries { backoff: config.backoff, attempts_left: config.attempts.max(1), jitter: None }
    }

    /// The answer to give the caller, or how long to wait before the next attempt.
    fn judge(&mut self, response: Response) -> Result<Result<Response, ClientError>, Duration> {
        self.attempts_left -= 1;
        match response {
            Response::Error(error) if error.retryable && self.attempts_left > 0 => {
                let delay = self.backoff.mul_f64(0.5 + self.jitter.get_or_insert_with(Jitter::new).unit());
                self.backoff = self.backoff.saturating_mul(2);
                Err(delay)
            }
            Response::Error(error) => Ok(Err(ClientError::Service(error))),
            response => Ok(Ok(response)),
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

/// What BatchGetItem returns: the items found, per table, and the keys left unprocessed.
pub type BatchGetOutput = (Vec<(String, Vec<Item>)>, Vec<TableKeys>);

/// One page of a Query or Scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<Item>,
    /// Items read, before the filter.
    pub scanned_count: u32,
    /// Items that matched the filter (`items` is empty with Select COUNT).
    pub count: u32,
    /// Pass as `exclusive_start_key` to read the next page; `None` after the last.
    pub last_evaluated_key: Option<Item>,
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
            let (answer, _) = client.call_once(&credentials.authenticate(), ReturnConsumedCapacity::None)?;
            authenticated(answer)?;
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
    fn call_once(
        &mut self,
        request: &Request,
        capacity: ReturnConsumedCapacity,
    ) -> Result<(Response, Vec<ConsumedCapacity>), ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut bytes = Vec::new();
        request.encode_with_flags(id, RequestFlags { capacity, forwarded: false }, &mut bytes);
        self.stream.write_all(&bytes)?;
        self.stream.flush()?;
        loop {
            match frame::decode(&self.buffer).map_err(|lost| ClientError::Protocol(lost.to_string()))? {
                Decoded::Frame(frame, used) => {
                    let (header, checksum_ok) = (frame.header, frame.checksum_ok);
                    let answer = Response::decode_with_capacity(header.message_type, frame.payload);
                    self.buffer.drain(..used);
                    if !checksum_ok {
                        return Err(ClientError::Protocol("an answer failed its checksum".into()));
                    }
                    let (response, consumed) = answer.map_err(|error| ClientError::Protocol(error.to_string()))?;
                    match header.request_id {
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

    pub fn create_table(
        &mut self,
        table: &str,
        key_schema: KeySchema,
        partitions: u32,
    ) -> Result<TableDescription, ClientError> {
        table_of(self.call(&Request::CreateTable {
            table: table.into(),
            key_schema,
            partitions,
            throughput: None,
            tags: Vec::new(),
        })?)
    }

    pub fn delete_table(&mut self, table: &str) -> Result<TableDescription, ClientError> {
        table_of(self.call(&Request::DeleteTable { table: table.into() })?)
    }

    pub fn describe_table(&mut self, table: &str) -> Result<TableDescription, ClientError> {
        table_of(self.call(&Request::DescribeTable { table: table.into(), counts: true })?)
    }

    /// Every table name, following every page.
    pub fn list_tables(&mut self) -> Result<Vec<String>, ClientError> {
        let mut names = Vec::new();
        let mut start = None;
        loop {
            match self.call(&Request::ListTables { exclusive_start_table: start, limit: 0 })? {
                Response::ListTables { tables, last_evaluated_table } => {
                    names.extend(tables);
                    match last_evaluated_table {
                        Some(last) => start = Some(last),
                        None => return Ok(names),
                    }
                }
                other => return unexpected(other),
            }
        }
    }

    pub fn put_item(&mut self, table: &str, item: Item) -> Result<(), ClientError> {
        self.call(&put_request(table, item, false, Expressions::default())).map(drop)
    }

    /// Puts `item`, returning the item it replaced.
    pub fn put_item_returning_old(&mut self, table: &str, item: Item) -> Result<Option<Item>, ClientError> {
        item_of(self.call(&put_request(table, item, true, Expressions::default()))?)
    }

    /// Puts `item` if `expressions`' condition holds (`ConditionalCheckFailedException` if not).
    pub fn put_item_if(&mut self, table: &str, item: Item, expressions: Expressions) -> Result<(), ClientError> {
        self.call(&put_request(table, item, false, expressions)).map(drop)
    }

    /// Applies the UpdateExpression `update` to the item under `key` (creating it if absent)
    /// if `expressions`' condition holds; returns what `return_values` asks for.
    pub fn update_item(
        &mut self,
        table: &str,
        key: Item,
        update: &str,
        expressions: Expressions,
        return_values: ReturnValues,
    ) -> Result<Option<Item>, ClientError> {
        item_of(self.call(&update_request(table, key, update, expressions, return_values))?)
    }

    /// Deletes the item under `key` if `expressions`' condition holds, returning it.
    pub fn delete_item_if(
        &mut self,
        table: &str,
        key: Item,
        expressions: Expressions,
    ) -> Result<Option<Item>, ClientError> {
        item_of(self.call(&delete_request(table, key, expressions))?)
    }

    pub fn get_item(&mut self, table: &str, key: Item) -> Result<Option<Item>, ClientError> {
        item_of(self.call(&Request::GetItem {
            table: table.into(),
            key,
            consistent_read: true,
            read: ReadExpressions::default(),
        })?)
    }

    /// Deletes the item under `key`, returning it if there was one.
    pub fn delete_item(&mut self, table: &str, key: Item) -> Result<Option<Item>, ClientError> {
        item_of(self.call(&delete_request(table, key, Expressions::default()))?)
    }

    pub fn query(&mut self, query: Query) -> Result<Page, ClientError> {
        page_of(self.call(&Request::Query(query))?)
    }

    pub fn scan(&mut self, scan: Scan) -> Result<Page, ClientError> {
        page_of(self.call(&Request::Scan(scan))?)
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

    /// Reads up to 100 keys; returns the items found per table and the keys left unprocessed.
    pub fn batch_get_item(&mut self, tables: Vec<TableKeys>) -> Result<BatchGetOutput, ClientError> {
        match self.call(&Request::BatchGetItem(tables))? {
            Response::BatchGetItem { responses, unprocessed } => Ok((responses, unprocessed)),
            other => unexpected(other),
        }
    }

    /// Makes up to 25 writes; returns the writes left unprocessed.
    pub fn batch_write_item(&mut self, writes: Vec<Write>) -> Result<Vec<Write>, ClientError> {
        batch_write_of(self.call(&Request::BatchWriteItem(writes))?)
    }
}

fn unexpected<T>(response: Response) -> Result<T, ClientError> {
    Err(ClientError::Protocol(format!("unexpected answer {:?}", response.message_type())))
}

fn response_error<T>(response: Response) -> Result<T, ClientError> {
    match response {
        Response::Error(error) => Err(ClientError::Service(error)),
        other => unexpected(other),
    }
}

fn table_of(response: Response) -> Result<TableDescription, ClientError> {
    match response {
        Response::Table(table) => Ok(table),
        other => unexpected(other),
    }
}

fn item_of(response: Response) -> Result<Option<Item>, ClientError> {
    match response {
        Response::Item(item) => Ok(item),
        other => unexpected(other),
    }
}

fn batch_get_of(response: Response) -> Result<BatchGetOutput, ClientError> {
    match response {
        Response::BatchGetItem { responses, unprocessed } => Ok((responses, unprocessed)),
        other => unexpected(other),
    }
}

fn batch_write_of(response: Response) -> Result<Vec<Write>, ClientError> {
    match response {
        Response::BatchWriteItem { unprocessed } => Ok(unprocessed),
        other => unexpected(other),
    }
}

fn page_of(response: Response) -> Result<Page, ClientError> {
    match response {
        Response::Items { items, scanned_count, count, last_evaluated_key } => {
            Ok(Page { items, scanned_count, count, last_evaluated_key })
        }
        other => unexpected(other),
    }
}

/// Builds an item (or a key) attribute by attribute.
#[derive(Clone, Debug, Default)]
pub struct ItemBuilder {
    item: Item,
}

impl ItemBuilder {
    pub fn new() -> ItemBuilder {
        ItemBuilder::default()
    }

    /// Any attribute value.
    pub fn value(mut self, name: &str, value: AttributeValue) -> ItemBuilder {
        self.item.insert(name.to_string(), value);
        self
    }

    pub fn s(self, name: &str, value: impl Into<String>) -> ItemBuilder {
        self.value(name, AttributeValue::S(value.into()))
    }

    /// A number from an integer.
    pub fn n(self, name: &str, value: i64) -> ItemBuilder {
        let number = Number::parse(&value.to_string()).expect("an i64 is a valid number");
        self.value(name, AttributeValue::N(number))
    }

    /// A number from its decimal text; panics if the text is not a valid DynamoDB number (use
    /// `value` with `Number::parse` to handle that case).
    pub fn n_text(self, name: &str, text: &str) -> ItemBuilder {
        self.value(name, AttributeValue::N(Number::parse(text).expect("a valid number")))
    }

    pub fn b(self, name: &str, value: impl Into<Vec<u8>>) -> ItemBuilder {
        self.value(name, AttributeValue::B(value.into()))
    }

    pub fn bool(self, name: &str, value: bool) -> ItemBuilder {
        self.value(name, AttributeValue::Bool(value))
    }

    pub fn null(self, name: &str) -> ItemBuilder {
        self.value(name, AttributeValue::Null)
    }

    pub fn ss<S: Into<String>>(self, name: &str, values: impl IntoIterator<Item = S>) -> ItemBuilder {
        self.value(name, AttributeValue::Ss(values.into_iter().map(Into::into).collect::<BTreeSet<_>>()))
    }

    /// A nested map.
    pub fn m(self, name: &str, map: ItemBuilder) -> ItemBuilder {
        self.value(name, AttributeValue::M(map.item))
    }

    pub fn l(self, name: &str, values: Vec<AttributeValue>) -> ItemBuilder {
        self.value(name, AttributeValue::L(values))
    }

    pub fn build(self) -> Item {
        self.item
    }
}

/// Whether an error is the service's answer with this code.
pub fn is_error(error: &ClientError, code: ErrorCode) -> bool {
    matches!(error, ClientError::Service(service) if service.code == code)
}

/// An answer and the capacity it reports, or why there is none.
type Answer = Result<(Response, Vec<ConsumedCapacity>), ClientError>;

/// A pipelined connection for glommio programs (the load generator): any number of calls may
/// be in flight on it at once; each waits for the answer carrying its request id.
pub struct AsyncClient {
    outbox: Rc<Outbox>,
    pending: Rc<Pending<Answer>>,
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
                let stream = futures_lite::future::or(tls.connect(stream, address), late).await?;
                AsyncClient::start(stream, config)
            }
        };
        if let Some(credentials) = &client.config.credentials {
            authenticated(client.call_once(&credentials.authenticate()).await?)?;
        }
        Ok(client)
    }

    /// A client on `stream`, its reader and writer tasks started.
    fn start(stream: impl ByteStream, config: ClientConfig) -> AsyncClient {
        let (mut reader, mut writer) = futures_lite::io::split(stream);
        let outbox = Rc::new(Outbox::default());
        let producer = Producer::new(&outbox);
        let pending: Rc<Pending<Answer>> = Rc::default();
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
                    Ok(Some(frame)) => {
                        let decoded = Response::decode_with_capacity(frame.header.message_type, frame.payload);
                        let response = match (frame.checksum_ok, decoded) {
                            (false, _) => Err(ClientError::Protocol("an answer failed its checksum".into())),
                            (true, Ok(answer)) => Ok(answer),
                            (true, Err(error)) => Err(ClientError::Protocol(error.to_string())),
                        };
                        answers.complete(frame.header.request_id, response);
                    }
                    Ok(None) => match inbox.fill(&mut reader).await {
                        Ok(0) => break "the server closed the connection".to_string(),
                        Ok(_) => {}
                        Err(error) => break error.to_string(),
                    },
                }
            };
            answers.fail_all(|| Err(ClientError::Protocol(failure.clone())));
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
        let (id, reply) = self.pending.open();
        request.encode_with_flags(id, flags, &mut self.outbox.bytes.borrow_mut());
        self.outbox.wake();
        match glommio::timer::timeout(self.config.timeout, async { Ok(reply.await) }).await {
            Ok(answer) => answer,
            Err(_) => {
                self.pending.abandon(id);
                Err(ClientError::Io(std::io::ErrorKind::TimedOut.into()))
            }
        }
    }

    /// Sends `request`, retrying retryable errors with jittered exponential backoff.
    pub async fn call(&self, request: &Request) -> Result<Response, ClientError> {
        let mut retries = Retries::new(&self.config);
        loop {
            match retries.judge(self.call_once(request).await?) {
                Ok(answer) => return answer,
                Err(delay) => glommio::timer::sleep(delay).await,
            }
        }
    }

    pub async fn put_item(&self, table: &str, item: Item) -> Result<(), ClientError> {
        self.call(&put_request(table, item, false, Expressions::default())).await.map(drop)
    }

    /// Puts `item` if `expressions`' condition holds (`ConditionalCheckFailedException` if not).
    pub async fn put_item_if(&self, table: &str, item: Item, expressions: Expressions) -> Result<(), ClientError> {
        self.call(&put_request(table, item, false, expressions)).await.map(drop)
    }

    /// Applies the UpdateExpression `update` to the item under `key` (see `Client::update_item`).
    pub async fn update_item(
        &self,
        table: &str,
        key: Item,
        update: &str,
        expressions: Expressions,
        return_values: ReturnValues,
    ) -> Result<Option<Item>, ClientError> {
        item_of(self.call(&update_request(table, key, update, expressions, return_values)).await?)
    }

    pub async fn get_item(&self, table: &str, key: Item) -> Result<Option<Item>, ClientError> {
        item_of(
            self.call(&Request::GetItem {
                table: table.into(),
                key,
                consistent_read: true,
                read: ReadExpressions::default(),
            })
            .await?,
        )
    }

    /// Deletes the item under `key`, returning it if there was one.
    pub async fn delete_item(&self, table: &str, key: Item) -> Result<Option<Item>, ClientError> {
        item_of(self.call(&delete_request(table, key, Expressions::default())).await?)
    }

    pub async fn query(&self, query: Query) -> Result<Page, ClientError> {
        page_of(self.call(&Request::Query(query)).await?)
    }

    pub async fn scan(&self, scan: Scan) -> Result<Page, ClientError> {
        page_of(self.call(&Request::Scan(scan)).await?)
    }

    pub async fn batch_get_item(&self, tables: Vec<TableKeys>) -> Result<BatchGetOutput, ClientError> {
        batch_get_of(self.call(&Request::BatchGetItem(tables)).await?)
    }

    pub async fn batch_write_item(&self, writes: Vec<Write>) -> Result<Vec<Write>, ClientError> {
        batch_write_of(self.call(&Request::BatchWriteItem(writes)).await?)
    }

    pub async fn create_table(
        &self,
        table: &str,
        key_schema: KeySchema,
        partitions: u32,
    ) -> Result<TableDescription, ClientError> {
        table_of(
            self.call(&Request::CreateTable {
                table: table.into(),
                key_schema,
                partitions,
                throughput: None,
                tags: Vec::new(),
            })
            .await?,
        )
    }

    pub async fn describe_table(&self, table: &str) -> Result<TableDescription, ClientError> {
        table_of(self.call(&Request::DescribeTable { table: table.into(), counts: true }).await?)
    }

    /// The table's description without its item count and size (which take the server a call
    /// to every core): its key schema and partitions.
    pub async fn layout(&self, table: &str) -> Result<TableDescription, ClientError> {
        table_of(self.call(&Request::DescribeTable { table: table.into(), counts: false }).await?)
    }

    /// The core serving this connection, and the server's number of cores.
    pub async fn hello(&self) -> Result<(usize, usize), ClientError> {
        match self.call(&Request::Hello).await? {
            Response::Hello { core, cores } => Ok((core as usize, cores as usize)),
            other => unexpected(other),
        }
    }
}

/// Pipelined connections to one server, grouped by the core serving each. A call on one item
/// goes to a connection on the core that owns the item's partition (`route`), so the server
/// need not forward it between cores; other calls take the connections in turn (`client`).
/// Routing is only a hint: a stale table layout (the table recreated with other partitions)
/// costs a forward inside the server, never a wrong answer.
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

    /// The index of the partition holding `key` in `table`, once `route` has learned the
    /// table's layout.
    pub fn partition_index(&self, table: &str, key: &Item) -> Option<u32> {
        self.tables.borrow().get(table).and_then(|table| partition_of_key(table, key))
    }

    /// The connection for a call on the item with key `key` (or the whole item) in `table`:
    /// one on the core owning it. The table's layout is looked up on first use.
    pub async fn route(&self, table: &str, key: &Item) -> &AsyncClient {
        let unknown = !self.tables.borrow().contains_key(table);
        // One lookup at a time per table; calls made meanwhile take any connection.
        if unknown && self.looking_up.borrow_mut().insert(table.to_string()) {
            let description = self.client().layout(table).await;
            self.looking_up.borrow_mut().remove(table);
            if let Ok(description) = description {
                self.tables.borrow_mut().insert(table.to_string(), description);
            }
        }
        let core = self.tables.borrow().get(table).and_then(|table| core_of_key(table, self.by_core.len(), key));
        match core.map(|core| &self.by_core[core]).filter(|connections| !connections.is_empty()) {
            Some(connections) => {
                let index = self.next.get();
                self.next.set(index.wrapping_add(1));
                &self.clients[connections[index % connections.len()]]
            }
            None => self.client(),
        }
    }
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
        call: impl AsyncFn(&AsyncClient) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut attempts = 0;
        loop {
            let partition = self.pools[0].partition_index(table, key);
            let cached =
                partition.and_then(|partition| self.leaders.borrow().get(&(table.to_string(), partition)).copied());
            let node = cached.unwrap_or(0);
            let result = call(self.pools[node].route(table, key).await).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors_back_off_until_the_attempts_run_out() {
        let config = ClientConfig { attempts: 4, backoff: Duration::from_millis(10), ..ClientConfig::default() };
        let mut retries = Retries::new(&config);
        let throttled = || Response::Error(WireError::new(ErrorCode::ThrottlingException, "slow down"));
        for attempt in 0..3 {
            let delay = retries.judge(throttled()).expect_err("retried");
            let base = Duration::from_millis(10) * 2u32.pow(attempt);
            assert!(delay >= base / 2 && delay <= base * 3 / 2, "attempt {attempt}: {delay:?}");
        }
        assert!(matches!(retries.judge(throttled()), Ok(Err(ClientError::Service(_)))));

        let mut retries = Retries::new(&config);
        let invalid = Response::Error(WireError::new(ErrorCode::ValidationException, "bad"));
        assert!(matches!(retries.judge(invalid), Ok(Err(ClientError::Service(_)))));
        assert!(matches!(retries.judge(Response::Item(None)), Ok(Ok(Response::Item(None)))));
    }
}
