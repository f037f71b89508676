//! The DynamoDB-compatible HTTP endpoint: HTTP/1.1 with keep-alive on each core (glommio TCP,
//! requests parsed by `httparse`), `POST /` with `X-Amz-Target: DynamoDB_20120810.<Operation>`
//! and a JSON body, checked by SigV4 (`sigv4.rs`), served by the same `Shard::execute` as the
//! binary protocol (`api.rs` maps the encodings), answered with `x-amzn-RequestId`,
//! `x-amz-crc32` and `Date` as DynamoDB answers.
//!
//! Limits, as DynamoDB's: a request head up to 16 KB (`HEAD_MAX`, 400 beyond), a body up to
//! 16 MB (`BODY_MAX`), also once decompressed (Content-Encoding gzip or identity, any other
//! refused). A body is framed by exactly one plain decimal Content-Length or by
//! `Transfer-Encoding: chunked` alone (chunk lines held to RFC 9112's grammar, extensions and
//! trailers read and ignored; other codings 501): a request a proxy could frame otherwise, or
//! malformed chunking, is refused with 400 and its connection closed. A head must arrive within
//! `HEAD_WAIT_MAX` and a body may stall `BODY_STALL_MAX` (10 s each, then 408); an idle
//! connection closes after `IDLE_MAX` (60 s). A connection's pipelined requests are served side
//! by side (up to `IN_FLIGHT_MAX`) and answered in request order.
//!
//! In a cluster, a request answered `NotLeader` is passed to the leader by the node itself
//! (`Shard::forward_with`), since a DynamoDB client cannot follow a hint; while no leader is
//! known (an election) it asks again for up to `ELECTION_WAIT_MAX` (5 s) before answering 503.

pub(crate) mod api;
pub mod sigv4;

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_lite::io::ReadHalf;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use serde_json::Value;
use tessera_wire::{ErrorCode, Response, WireError};

use crate::budget::{RequestMemory, Reserved};
use crate::shard::Shard;
use crate::socket::ByteStream;
use api::{ApiError, Call, Operation};
pub use sigv4::Auth;
use sigv4::{AuthError, SignedRequest};

/// The largest request head (request line and headers): DynamoDB's 16 KB.
const HEAD_MAX: usize = 16 << 10;
/// The largest request body, also once decompressed: DynamoDB's 16 MB request limit.
pub const BODY_MAX: usize = 16 << 20;
const HEADERS_MAX: usize = 64;
/// The longest chunk-size line of a chunked body (size and extensions).
const CHUNK_LINE_MAX: usize = 4 << 10;
/// How long a request at a node that knows no leader for its partition (an election is on)
/// waits for one, asking again every `ELECTION_PAUSE`, before it is answered 503.
const ELECTION_WAIT_MAX: Duration = Duration::from_secs(5);
const ELECTION_PAUSE: Duration = Duration::from_millis(50);
/// Requests one connection may have in progress (pipelined); reading pauses beyond it.
const IN_FLIGHT_MAX: u64 = 256;
/// How long a keep-alive connection may wait for its next request before it is closed.
const IDLE_MAX: Duration = Duration::from_secs(60);
/// How long a request's line and headers may take to arrive, from its first byte.
const HEAD_WAIT_MAX: Duration = Duration::from_secs(10);
/// How long a body may go without a byte arriving.
const BODY_STALL_MAX: Duration = Duration::from_secs(10);
/// A connection's read buffer grown past this for a large body is let go once the body is
/// taken, so an idle connection holds little.
const BUFFER_KEEP_MAX: usize = 64 << 10;

/// How a node serves the HTTP endpoint.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub auth: Auth,
}

/// One core's endpoint state: its request-id counter.
pub(crate) struct Endpoint {
    auth: Auth,
    core: usize,
    next_id: Cell<u64>,
    /// Distinguishes this process's request ids from another's.
    epoch: u64,
}

impl Endpoint {
    pub(crate) fn new(config: &HttpConfig, core: usize) -> Endpoint {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        Endpoint { auth: config.auth.clone(), core, next_id: Cell::new(0), epoch }
    }

    /// A request id as DynamoDB's look: 52 upper-case letters and digits.
    fn request_id(&self) -> String {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let mixed = (self.epoch ^ (self.core as u64).rotate_left(48)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let text = format!("{:020}{:016X}{:016X}", id, mixed, self.epoch);
        text[..52].to_string()
    }
}

/// A parsed request, owned, so the connection's buffer can be reused.
struct HttpRequest {
    /// Room for the body in the core's request memory, held until the request is answered.
    _reserved: Reserved,
    method: String,
    path: String,
    query: String,
    /// HTTP/1.0 closes after the answer unless asked to keep alive.
    minor_version: u8,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    }

    fn keep_alive(&self) -> bool {
        match self.header("connection").map(str::to_ascii_lowercase) {
            Some(value) if value.contains("close") => false,
            Some(value) if value.contains("keep-alive") => true,
            _ => self.minor_version >= 1,
        }
    }
}

/// What reading the next request from a connection gave.
enum Next {
    Request(HttpRequest),
    /// The peer closed (or the connection failed) between requests.
    Closed,
    /// A request that cannot be read: answer this, then close.
    Refuse(u16, &'static str),
}

/// What waiting for more bytes gave.
enum Filled {
    More,
    /// The peer closed, or the connection failed.
    Closed,
    /// Nothing arrived in time.
    Late,
}

/// Bytes read from a connection and not yet taken as requests.
struct Inbound {
    buffer: Vec<u8>,
    /// Where the untaken bytes start (the bytes before are moved out only now and then).
    start: usize,
    chunk: Box<[u8]>,
}

impl Inbound {
    fn new() -> Inbound {
        Inbound { buffer: Vec::new(), start: 0, chunk: vec![0; 16 << 10].into_boxed_slice() }
    }

    fn pending(&self) -> &[u8] {
        &self.buffer[self.start..]
    }

    fn take(&mut self, count: usize) -> &[u8] {
        let taken = &self.buffer[self.start..self.start + count];
        self.start += count;
        taken
    }

    /// The `length` bytes of a body that has arrived: moved out when they are all the buffer
    /// holds (no copy of a large body), else copied; a buffer grown large is let go.
    fn take_body(&mut self, length: usize) -> Vec<u8> {
        let body = if self.buffer.len() - self.start == length {
            let mut buffer = std::mem::take(&mut self.buffer);
            buffer.drain(..self.start);
            self.start = 0;
            buffer
        } else {
            self.take(length).to_vec()
        };
        if self.buffer.capacity() > BUFFER_KEEP_MAX {
            self.buffer = self.pending().to_vec();
            self.start = 0;
        }
        body
    }

    /// Reads more of a body, which may stall at most `BODY_STALL_MAX`.
    async fn fill_body<S: ByteStream>(&mut self, stream: &mut ReadHalf<S>) -> Result<(), Next> {
        match self.fill(stream, BODY_STALL_MAX).await {
            Filled::More => Ok(()),
            Filled::Closed => Err(Next::Closed),
            Filled::Late => Err(Next::Refuse(408, BODY_LATE)),
        }
    }

    /// Reads more, waiting at most `within`.
    async fn fill<S: ByteStream>(&mut self, stream: &mut ReadHalf<S>, within: Duration) -> Filled {
        if self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        } else if self.start > self.buffer.len() / 2 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        let read = async { Some(stream.read(&mut self.chunk).await) };
        let late = async {
            glommio::timer::sleep(within).await;
            None
        };
        match futures_lite::future::or(read, late).await {
            None => Filled::Late,
            Some(Ok(0) | Err(_)) => Filled::Closed,
            Some(Ok(read)) => {
                self.buffer.extend_from_slice(&self.chunk[..read]);
                Filled::More
            }
        }
    }
}

const HEAD_TOO_LARGE: &str = "the request line and headers are larger than 16 KB";

const HEAD_LATE: &str = "the request line and headers took longer than 10 seconds to arrive";
const BODY_LATE: &str = "the request body stopped arriving (nothing for 10 seconds)";
const NO_MEMORY: &str = "the server has no room for this request's body now: retry later";

/// Reads request `seq`: its head, then (once the core's request memory has room for it) its
/// body. A connection idle for `IDLE_MAX` between requests is closed; a head that takes longer
/// than `HEAD_WAIT_MAX`, or a body that stalls for `BODY_STALL_MAX`, is answered 408.
async fn read_request<S: ByteStream>(
    stream: &mut ReadHalf<S>,
    inbound: &mut Inbound,
    memory: &RequestMemory,
    answers: &Answers,
    seq: u64,
) -> Next {
    let mut head_started = (!inbound.pending().is_empty()).then(std::time::Instant::now);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut request = httparse::Request::new(&mut headers);
        let pending = inbound.pending();
        match request.parse(pending) {
            Ok(httparse::Status::Complete(head)) if head > HEAD_MAX => return Next::Refuse(400, HEAD_TOO_LARGE),
            Ok(httparse::Status::Complete(head)) => {
                let (path, query) =
                    request.path.unwrap_or("/").split_once('?').unwrap_or((request.path.unwrap_or("/"), ""));
                let framing = match body_framing(request.headers, request.version.unwrap_or(1)) {
                    Ok(framing) => framing,
                    Err((status, message)) => return Next::Refuse(status, message),
                };
                // A chunked body's length is known only at its end: room for the largest.
                let declared = match framing {
                    Framing::Length(length) => length,
                    Framing::Chunked => BODY_MAX,
                };
                let Some(reserved) = memory.reserve(declared).await else { return Next::Refuse(503, NO_MEMORY) };
                let mut parsed = HttpRequest {
                    _reserved: reserved,
                    method: request.method.unwrap_or("").to_string(),
                    path: path.to_string(),
                    query: query.to_string(),
                    minor_version: request.version.unwrap_or(1),
                    headers: request
                        .headers
                        .iter()
                        .map(|header| (header.name.to_string(), header.value.to_vec()))
                        .collect(),
                    body: Vec::new(),
                };
                if parsed.header("expect").is_some_and(|expect| expect.eq_ignore_ascii_case("100-continue"))
                    && pending.len() == head
                {
                    answers.interim(seq, b"HTTP/1.1 100 Continue\r\n\r\n".to_vec());
                }
                inbound.take(head);
                parsed.body = match framing {
                    Framing::Length(length) => {
                        while inbound.pending().len() < length {
                            if let Err(next) = inbound.fill_body(stream).await {
                                return next;
                            }
                        }
                        inbound.take_body(length)
                    }
                    Framing::Chunked => match read_chunked(stream, inbound).await {
                        Ok(body) => body,
                        Err(next) => return next,
                    },
                };
                return Next::Request(parsed);
            }
            Ok(httparse::Status::Partial) if pending.len() > HEAD_MAX => return Next::Refuse(400, HEAD_TOO_LARGE),
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Next::Refuse(431, "a request may have at most 64 headers"),
            Err(_) => return Next::Refuse(400, "the request is not HTTP/1.1"),
        }
        let within = match head_started {
            None => IDLE_MAX,
            Some(started) => HEAD_WAIT_MAX.saturating_sub(started.elapsed()),
        };
        match inbound.fill(stream, within).await {
            Filled::More => {
                head_started.get_or_insert_with(std::time::Instant::now);
            }
            Filled::Closed => return Next::Closed,
            // An idle keep-alive connection is closed without an answer, as servers do.
            Filled::Late if head_started.is_none() => return Next::Closed,
            Filled::Late => return Next::Refuse(408, HEAD_LATE),
        }
    }
}

/// How a request's body is framed (RFC 9112 section 6).
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    /// Content-Length bytes (none: no body).
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// How a request's body is framed: its one Content-Length header (none: no body), or
/// `Transfer-Encoding: chunked`; or the status and message refusing a request whose framing is
/// ambiguous. A proxy in front may read a length the server does not (two Content-Length
/// headers, a value that is not plain decimal, a Transfer-Encoding beside it or in HTTP/1.0,
/// chunked twice or not last), and so take one request's body for another request: a request
/// its receivers could frame differently is refused, and its connection closed. A transfer
/// coding other than chunked is not implemented (501).
fn body_framing(headers: &[httparse::Header<'_>], minor_version: u8) -> Result<Framing, (u16, &'static str)> {
    let mut lengths = headers.iter().filter(|header| header.name.eq_ignore_ascii_case("content-length"));
    let codings: Vec<&[u8]> = headers
        .iter()
        .filter(|header| header.name.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|header| header.value.split(|&byte| byte == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    let Some(length) = lengths.next() else {
        if codings.is_empty() {
            return Ok(Framing::Length(0));
        }
        if minor_version == 0 {
            return Err((400, "an HTTP/1.0 request may not have a Transfer-Encoding"));
        }
        let chunked = |coding: &[u8]| coding.eq_ignore_ascii_case(b"chunked");
        return match codings.as_slice() {
            [coding] if chunked(coding) => Ok(Framing::Chunked),
            [.., last] if !chunked(last) => Err((400, "a request's Transfer-Encoding must end with chunked")),
            _ if codings.iter().filter(|coding| chunked(coding)).count() > 1 => {
                Err((400, "a request's Transfer-Encoding may name chunked only once"))
            }
            _ => Err((501, "a request's Transfer-Encoding may only be chunked")),
        };
    };
    if !codings.is_empty() {
        return Err((400, "a request may not have both Transfer-Encoding and Content-Length"));
    }
    if lengths.next().is_some() {
        return Err((400, "a request may have only one Content-Length header"));
    }
    let digits = length.value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err((400, "Content-Length is not a decimal number"));
    }
    // Only digits: a number that does not parse is too large for any length.
    match std::str::from_utf8(digits).ok().and_then(|text| text.parse::<usize>().ok()) {
        Some(length) if length <= BODY_MAX => Ok(Framing::Length(length)),
        _ => Err((413, BODY_TOO_LARGE)),
    }
}

const BODY_TOO_LARGE: &str = "the request body is larger than 16 MB";
const BAD_CHUNK: &str = "the request's chunked body is malformed";

/// Reads a chunked body (RFC 9112 section 7.1): chunks until the last (size 0), their
/// extensions checked and ignored, then the trailer section, whose fields are read and
/// discarded. Held to `BODY_MAX` in all; malformed chunking is 400. httparse's own
/// `parse_chunk_size` takes a size line with no digits, or bare line feeds in an extension,
/// which a proxy in front may frame otherwise, so the line is held to the grammar here.
async fn read_chunked<S: ByteStream>(stream: &mut ReadHalf<S>, inbound: &mut Inbound) -> Result<Vec<u8>, Next> {
    let mut body = Vec::new();
    loop {
        // The size line.
        let line = loop {
            let pending = inbound.pending();
            let end = pending.windows(2).position(|pair| pair == b"\r\n");
            // Without its CRLF yet, the line is at least as long as what came but a last CR.
            if end.unwrap_or(pending.len().saturating_sub(1)) > CHUNK_LINE_MAX {
                return Err(Next::Refuse(400, BAD_CHUNK));
            }
            if let Some(end) = end {
                break end;
            }
            inbound.fill_body(stream).await?;
        };
        let size = chunk_size(&inbound.pending()[..line]).ok_or(Next::Refuse(400, BAD_CHUNK))?;
        inbound.take(line + 2);
        if size == 0 {
            break;
        }
        if size > BODY_MAX - body.len() {
            return Err(Next::Refuse(413, BODY_TOO_LARGE));
        }
        // The data and its CRLF.
        while inbound.pending().len() < size + 2 {
            inbound.fill_body(stream).await?;
        }
        body.extend_from_slice(inbound.take(size));
        if inbound.take(2) != b"\r\n" {
            return Err(Next::Refuse(400, BAD_CHUNK));
        }
    }
    // The trailer section: field lines, then an empty line.
    loop {
        let mut fields = [httparse::EMPTY_HEADER; HEADERS_MAX];
        match httparse::parse_headers(inbound.pending(), &mut fields) {
            Ok(httparse::Status::Complete((length, _))) => {
                inbound.take(length);
                return Ok(body);
            }
            Ok(httparse::Status::Partial) if inbound.pending().len() <= HEAD_MAX => {
                inbound.fill_body(stream).await?;
            }
            Ok(httparse::Status::Partial) => {
                return Err(Next::Refuse(400, "the request's trailer is larger than 16 KB"))
            }
            Err(_) => return Err(Next::Refuse(400, BAD_CHUNK)),
        }
    }
}

/// The size a chunk-size line gives (`line` without its CRLF): `1*HEXDIG *( BWS ";" BWS
/// token [ BWS "=" BWS ( token / quoted-string ) ] )` (RFC 9112 section 7.1.1); `None` if the
/// line is not that. A size beyond any body's limit saturates.
fn chunk_size(line: &[u8]) -> Option<usize> {
    let digits = line.iter().take_while(|byte| byte.is_ascii_hexdigit()).count();
    if digits == 0 {
        return None;
    }
    let size = line[..digits].iter().fold(0usize, |size, &digit| {
        let value = (digit as char).to_digit(16).unwrap_or(0) as usize;
        size.saturating_mul(16).saturating_add(value)
    });
    let tchar = |byte: u8| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte);
    let mut rest = &line[digits..];
    let skip_space = |rest: &mut &[u8]| {
        while let [b' ' | b'\t', tail @ ..] = rest {
            *rest = tail;
        }
    };
    let token = |rest: &mut &[u8]| {
        let length = rest.iter().take_while(|&&byte| tchar(byte)).count();
        *rest = &rest[length..];
        length > 0
    };
    loop {
        skip_space(&mut rest);
        let [b';', tail @ ..] = rest else { return rest.is_empty().then_some(size) };
        rest = tail;
        skip_space(&mut rest);
        if !token(&mut rest) {
            return None;
        }
        skip_space(&mut rest);
        let [b'=', tail @ ..] = rest else { continue };
        rest = tail;
        skip_space(&mut rest);
        if let [b'"', tail @ ..] = rest {
            // A quoted string: qdtext, or a backslash and the byte it quotes, to a quote.
            rest = tail;
            loop {
                match rest {
                    [b'"', tail @ ..] => {
                        rest = tail;
                        break;
                    }
                    [b'\\', quoted, tail @ ..] if *quoted == b'\t' || *quoted >= b' ' && *quoted != 0x7F => rest = tail,
                    [byte, tail @ ..] if *byte == b'\t' || *byte >= b' ' && *byte != 0x7F && *byte != b'\\' => {
                        rest = tail
                    }
                    _ => return None,
                }
            }
        } else if !token(&mut rest) {
            return None;
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        411 => "Length Required",
        501 => "Not Implemented",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// An answer's bytes: status line, DynamoDB's headers (and the Date every HTTP/1.1 answer
/// carries), the JSON body.
fn answer(status: u16, request_id: &str, body: &[u8], close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 256);
    let crc = crc32fast::hash(body);
    let connection = if close { "Connection: close\r\n" } else { "" };
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status} {}\r\nServer: Tessera\r\nDate: {date}\r\nx-amzn-RequestId: {request_id}\r\nx-amz-crc32: {crc}\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\n{connection}\r\n",
            reason(status),
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body);
    out
}

fn error_answer(error: &ApiError, request_id: &str, close: bool) -> Vec<u8> {
    let body = serde_json::to_vec(&error.body()).expect("JSON values serialize");
    answer(error.status, request_id, &body, close)
}

/// The error DynamoDB gives for a refused signature.
fn auth_error(error: AuthError) -> ApiError {
    let (kind, message) = match error {
        AuthError::Missing => {
            ("MissingAuthenticationTokenException", "Request is missing Authentication Token".to_string())
        }
        AuthError::UnknownKey => {
            ("UnrecognizedClientException", "The security token included in the request is invalid.".to_string())
        }
        AuthError::Invalid(message) => ("InvalidSignatureException", message),
    };
    ApiError::new(400, format!("com.amazon.coral.service#{kind}"), message)
}

/// The region a request's credential is scoped to (its tables' ARNs name it).
fn region(request: &HttpRequest) -> &str {
    request
        .header("authorization")
        .and_then(sigv4::region)
        .filter(|region| region.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-'))
        .unwrap_or("us-east-1")
}

/// A connection's answers, written in the order of their requests (HTTP/1.1) however they
/// complete: request `seq`'s answer is written once every earlier one has been.
#[derive(Default)]
struct Answers {
    /// Finished answers not yet written, by request number; `true`: close after it.
    ready: RefCell<BTreeMap<u64, (Vec<u8>, bool)>>,
    /// Interim answers (100 Continue), written when their request is next.
    interim: RefCell<BTreeMap<u64, Vec<u8>>>,
    /// The next request whose answer is to be written.
    next: Cell<u64>,
    /// Requests read so far; none will follow once `done`.
    issued: Cell<u64>,
    done: Cell<bool>,
    writer: RefCell<Option<Waker>>,
}

impl Answers {
    fn wake(&self) {
        if let Some(waker) = self.writer.borrow_mut().take() {
            waker.wake();
        }
    }

    fn finish(&self, seq: u64, bytes: Vec<u8>, close: bool) {
        self.ready.borrow_mut().insert(seq, (bytes, close));
        self.wake();
    }

    fn interim(&self, seq: u64, bytes: Vec<u8>) {
        self.interim.borrow_mut().insert(seq, bytes);
        self.wake();
    }

    /// The next bytes to write, in order, and whether the connection closes after them;
    /// `None` once every answer is written and no request will follow.
    async fn next_batch(&self) -> Option<(Vec<u8>, bool)> {
        futures_lite::future::poll_fn(|context| {
            let mut batch = Vec::new();
            let mut close = false;
            loop {
                let next = self.next.get();
                if let Some(bytes) = self.interim.borrow_mut().remove(&next) {
                    batch.extend_from_slice(&bytes);
                }
                let Some((bytes, last)) = self.ready.borrow_mut().remove(&next) else { break };
                batch.extend_from_slice(&bytes);
                self.next.set(next + 1);
                if last {
                    close = true;
                    break;
                }
            }
            if !batch.is_empty() {
                return Poll::Ready(Some((batch, close)));
            }
            if self.done.get() && self.next.get() == self.issued.get() {
                return Poll::Ready(None);
            }
            *self.writer.borrow_mut() = Some(context.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// Serves one HTTP connection until the peer closes it, asks to, or sends what cannot be read.
/// Pipelined requests are served side by side (up to `IN_FLIGHT_MAX`), their answers written
/// in order.
pub(crate) async fn connection<S: ByteStream>(
    shard: Rc<Shard>,
    endpoint: Rc<Endpoint>,
    memory: Rc<RequestMemory>,
    stream: S,
) {
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let answers = Rc::new(Answers::default());
    let writing = {
        let answers = answers.clone();
        glommio::spawn_local(async move {
            while let Some((batch, close)) = answers.next_batch().await {
                // The flush sends what a TLS stream holds back; a plain stream holds nothing.
                if writer.write_all(&batch).await.is_err() || writer.flush().await.is_err() || close {
                    break;
                }
            }
            let _ = writer.close().await;
        })
    };
    read_requests(&shard, &endpoint, &memory, &mut reader, &answers).await;
    answers.done.set(true);
    answers.wake();
    writing.await;
}

/// Answers a connection beyond the core's connection limit 503 (DynamoDB's retryable
/// ServiceUnavailableException, which the SDKs retry with backoff), then closes it.
pub(crate) async fn refuse_busy(endpoint: &Endpoint, mut stream: TcpStream) {
    let error = ApiError::new(
        503,
        "com.amazon.coral.availability#ServiceUnavailableException",
        "the server holds as many connections as it allows: retry later",
    );
    let _ = stream.write_all(&error_answer(&error, &endpoint.request_id(), true)).await;
    let _ = stream.close().await;
}

/// The answer to a client that speaks plain HTTP to a TLS listener, before it is closed.
pub(crate) fn plain_refusal(endpoint: &Endpoint) -> Vec<u8> {
    let error = ApiError::new(
        400,
        "com.amazon.coral.service#SerializationException",
        "this port speaks HTTPS only: send the request to https://",
    );
    error_answer(&error, &endpoint.request_id(), true)
}

/// Reads requests and starts serving each, until the connection ends or asks to close.
async fn read_requests<S: ByteStream>(
    shard: &Rc<Shard>,
    endpoint: &Rc<Endpoint>,
    memory: &RequestMemory,
    reader: &mut ReadHalf<S>,
    answers: &Rc<Answers>,
) {
    let in_flight = Rc::new(glommio::sync::Semaphore::new(IN_FLIGHT_MAX));
    let mut inbound = Inbound::new();
    loop {
        let seq = answers.issued.get();
        let next = read_request(reader, &mut inbound, memory, answers, seq).await;
        let request = match next {
            Next::Request(request) => request,
            Next::Closed => return,
            Next::Refuse(status, message) => {
                answers.issued.set(seq + 1);
                // Types the SDKs retry for the refusals a retry can cure.
                let kind = match status {
                    503 => "com.amazon.coral.availability#ServiceUnavailableException",
                    408 => "com.amazon.coral.service#RequestTimeoutException",
                    _ => "com.amazon.coral.service#SerializationException",
                };
                let error = ApiError::new(status, kind, message);
                answers.finish(seq, error_answer(&error, &endpoint.request_id(), true), true);
                return;
            }
        };
        answers.issued.set(seq + 1);
        let close = !request.keep_alive();
        let Ok(permit) = in_flight.acquire_static_permit(1).await else { return };
        let (shard, endpoint, answering) = (shard.clone(), endpoint.clone(), answers.clone());
        glommio::spawn_local(async move {
            let request_id = endpoint.request_id();
            let bytes = match serve(&shard, &endpoint, &request).await {
                Ok(body) => answer(200, &request_id, &serde_json::to_vec(&body).expect("JSON values serialize"), close),
                Err(error) => error_answer(&error, &request_id, close),
            };
            answering.finish(seq, bytes, close);
            drop(permit);
        })
        .detach();
        if close {
            return;
        }
    }
}

/// A request's body as its Content-Encoding says: as sent (none, or identity) or gunzipped
/// (gzip, as DynamoDB accepts), held to the same 16 MB once decompressed. Any other coding is
/// refused, named.
fn decoded_body(request: &HttpRequest) -> Result<Cow<'_, [u8]>, ApiError> {
    let mut codings = request.headers.iter().filter(|(name, _)| name.eq_ignore_ascii_case("content-encoding"));
    let Some((_, coding)) = codings.next() else { return Ok(Cow::Borrowed(&request.body)) };
    if codings.next().is_some() {
        return Err(ApiError::serialization("a request may have only one Content-Encoding header"));
    }
    let coding = coding.trim_ascii();
    if coding.eq_ignore_ascii_case(b"identity") {
        return Ok(Cow::Borrowed(&request.body));
    }
    if !coding.eq_ignore_ascii_case(b"gzip") {
        return Err(ApiError::serialization(format!(
            "Content-Encoding {:?} is not supported: send gzip or identity",
            String::from_utf8_lossy(coding)
        )));
    }
    let mut decoded = Vec::new();
    // One byte past the limit tells a body at the limit from a larger one.
    flate2::read::MultiGzDecoder::new(request.body.as_slice())
        .take(BODY_MAX as u64 + 1)
        .read_to_end(&mut decoded)
        .map_err(|error| ApiError::serialization(format!("the gzip request body cannot be decompressed: {error}")))?;
    if decoded.len() > BODY_MAX {
        return Err(ApiError::new(
            413,
            "com.amazon.coral.service#SerializationException",
            "the request body is larger than 16 MB once decompressed",
        ));
    }
    Ok(Cow::Owned(decoded))
}

/// One request's answer body, or its error.
async fn serve(shard: &Rc<Shard>, endpoint: &Endpoint, request: &HttpRequest) -> Result<Value, ApiError> {
    if request.method == "GET" && request.path == "/" {
        // DynamoDB's health check.
        return Ok(Value::String(format!("healthy: dynamodb.{}.amazonaws.com", region(request))));
    }
    if request.method != "POST" || request.path != "/" {
        return Err(ApiError::new(
            404,
            "com.amazon.coral.service#UnknownOperationException",
            format!("{} {} is not an operation: DynamoDB's are POST /", request.method, request.path),
        ));
    }
    let headers: Vec<(&str, &[u8])> =
        request.headers.iter().map(|(name, value)| (name.as_str(), value.as_slice())).collect();
    let signed = SignedRequest {
        method: &request.method,
        path: &request.path,
        query: &request.query,
        headers: &headers,
        body: &request.body,
    };
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs() as i64);
    sigv4::verify(&signed, &endpoint.auth, now).map_err(auth_error)?;
    // The signature covers the body as sent; it is decoded only once it is known good.
    let body = decoded_body(request)?;
    let operation = Operation::from_target(request.header("x-amz-target"))?;
    let host = request.header("host").unwrap_or("localhost");
    let region = region(request);
    let (request, flags, reply) = match api::decode(operation, &body, host, region)? {
        Call::Answer(body) => return Ok(body),
        Call::Engine(engine_request, flags, reply) => (*engine_request, flags, reply),
    };
    // A node that does not lead the partition passes the request to the one that does (a
    // DynamoDB client cannot follow a leader hint); during an election (no leader known) it
    // asks again for a while. The request is kept for that.
    let Some(kept) = shard.replicated().then(|| request.clone()) else {
        let (response, consumed) = shard.execute(request, flags).await;
        return api::encode(operation, response, &consumed, region, &reply);
    };
    let (mut waited, mut first) = (Duration::ZERO, Some(request));
    let (response, consumed) = loop {
        let attempt = first.take().unwrap_or_else(|| kept.clone());
        let (response, consumed) = shard.execute(attempt, flags).await;
        let Response::Error(WireError { code: ErrorCode::NotLeader, leader, .. }) = &response else {
            break (response, consumed);
        };
        match leader {
            Some(leader) => {
                break shard
                    .forward_with(leader, &kept, flags.capacity)
                    .await
                    .unwrap_or_else(|error| (Response::Error(error), Vec::new()))
            }
            None if waited < ELECTION_WAIT_MAX => {
                glommio::timer::sleep(ELECTION_PAUSE).await;
                waited += ELECTION_PAUSE;
            }
            None => break (response, consumed),
        }
    };
    api::encode(operation, response, &consumed, region, &reply)
}
