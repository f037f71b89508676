//! Thin clients for the peer comparison, pipelined on each connection like Tessera's own
//! client (any number of calls in flight, answers in order), so that every system is driven
//! by a load client of the same strength: Redis (GET and SET over RESP), etcd (its v3 JSON
//! gateway over HTTP/1.1: `/v3/kv/range`, linearizable, and `/v3/kv/put`), and DynamoDB's
//! HTTP API (GetItem and PutItem over HTTP/1.1: Tessera's endpoint, or an emulator's).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};

use base64::Engine;
use futures_lite::{AsyncReadExt, AsyncWriteExt};

/// A call's answer: `Ok` if the peer did what was asked, the peer's error otherwise.
pub type Answer = Result<(), String>;

/// Reads the first whole answer in the bytes: it and its length, `None` if more are needed.
type Parser = fn(&[u8]) -> Result<Option<(Answer, usize)>, String>;

#[derive(Default)]
struct Slot {
    answer: RefCell<Option<Answer>>,
    waker: RefCell<Option<Waker>>,
}

impl Slot {
    fn resolve(&self, answer: Answer) {
        *self.answer.borrow_mut() = Some(answer);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

#[derive(Default)]
struct Shared {
    outbox: RefCell<Vec<u8>>,
    writer: RefCell<Option<Waker>>,
    pending: RefCell<VecDeque<Rc<Slot>>>,
    failed: RefCell<Option<String>>,
}

/// One pipelined connection to a peer, whose answers `parse` reads.
pub struct Connection {
    shared: Rc<Shared>,
}

impl Connection {
    pub async fn connect(address: SocketAddr, parse: Parser) -> std::io::Result<Connection> {
        let stream = glommio::net::TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let (mut reader, mut writer) = futures_lite::io::split(stream);
        let shared = Rc::new(Shared::default());
        let writing = shared.clone();
        glommio::spawn_local(async move {
            loop {
                let batch = futures_lite::future::poll_fn(|context| {
                    let mut outbox = writing.outbox.borrow_mut();
                    if outbox.is_empty() {
                        *writing.writer.borrow_mut() = Some(context.waker().clone());
                        Poll::Pending
                    } else {
                        Poll::Ready(std::mem::take(&mut *outbox))
                    }
                })
                .await;
                if writer.write_all(&batch).await.is_err() {
                    return;
                }
            }
        })
        .detach();
        let reading = shared.clone();
        glommio::spawn_local(async move {
            let (mut buffer, mut filled) = (vec![0u8; 64 << 10], 0);
            let failure = 'read: loop {
                let mut start = 0;
                loop {
                    match parse(&buffer[start..filled]) {
                        Err(error) => break 'read error,
                        Ok(None) => break,
                        Ok(Some((answer, used))) => {
                            start += used;
                            match reading.pending.borrow_mut().pop_front() {
                                Some(slot) => slot.resolve(answer),
                                None => break 'read "an answer to no call".to_string(),
                            }
                        }
                    }
                }
                buffer.copy_within(start..filled, 0);
                filled -= start;
                if filled == buffer.len() {
                    buffer.resize(buffer.len() * 2, 0);
                }
                match reader.read(&mut buffer[filled..]).await {
                    Ok(0) => break "the peer closed the connection".to_string(),
                    Ok(read) => filled += read,
                    Err(error) => break error.to_string(),
                }
            };
            *reading.failed.borrow_mut() = Some(failure.clone());
            for slot in reading.pending.borrow_mut().drain(..) {
                slot.resolve(Err(failure.clone()));
            }
        })
        .detach();
        Ok(Connection { shared })
    }

    /// Sends the request `write` appends, and waits for its answer.
    async fn call(&self, write: impl FnOnce(&mut Vec<u8>)) -> Answer {
        if let Some(failure) = self.shared.failed.borrow().clone() {
            return Err(failure);
        }
        let slot = Rc::new(Slot::default());
        write(&mut self.shared.outbox.borrow_mut());
        self.shared.pending.borrow_mut().push_back(slot.clone());
        if let Some(waker) = self.shared.writer.borrow_mut().take() {
            waker.wake();
        }
        futures_lite::future::poll_fn(|context| match slot.answer.borrow_mut().take() {
            Some(answer) => Poll::Ready(answer),
            None => {
                *slot.waker.borrow_mut() = Some(context.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

// ------------------------------------------------------------------ Redis

/// Appends a RESP command (an array of bulk strings).
fn resp_command(out: &mut Vec<u8>, parts: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
    for part in parts {
        out.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
}

/// A RESP answer to GET or SET: a simple string, an integer, a bulk string (or nil), or an
/// error line.
pub fn parse_resp(bytes: &[u8]) -> Result<Option<(Answer, usize)>, String> {
    let Some(end) = bytes.windows(2).position(|pair| pair == b"\r\n") else { return Ok(None) };
    let line = &bytes[1..end];
    let text = || String::from_utf8_lossy(line).into_owned();
    match bytes.first() {
        Some(b'+' | b':') => Ok(Some((Ok(()), end + 2))),
        Some(b'-') => Ok(Some((Err(text()), end + 2))),
        Some(b'$') => {
            let len: i64 = text().parse().map_err(|_| format!("a bad bulk length {:?}", text()))?;
            if len < 0 {
                return Ok(Some((Ok(()), end + 2)));
            }
            let total = end + 2 + len as usize + 2;
            Ok((bytes.len() >= total).then_some((Ok(()), total)))
        }
        _ => Err(format!("an answer this client does not read: {:?}", text())),
    }
}

pub async fn redis_get(connection: &Connection, key: &[u8]) -> Answer {
    connection.call(|out| resp_command(out, &[b"GET", key])).await
}

pub async fn redis_set(connection: &Connection, key: &[u8], value: &[u8]) -> Answer {
    connection.call(|out| resp_command(out, &[b"SET", key, value])).await
}

// ------------------------------------------------------------------ etcd

/// Appends an HTTP/1.1 POST of the JSON `body` to `path` of etcd's v3 gateway.
fn http_post(out: &mut Vec<u8>, path: &str, body: &str) {
    out.extend_from_slice(
        format!(
            "POST {path} HTTP/1.1\r\nHost: etcd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

/// An HTTP/1.1 answer (its body sized by Content-Length, or chunked): `Ok` for a 200.
pub fn parse_http(bytes: &[u8]) -> Result<Option<(Answer, usize)>, String> {
    let Some(head_end) = bytes.windows(4).position(|window| window == b"\r\n\r\n") else { return Ok(None) };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).ok_or("an HTTP answer with no status")?.to_string();
    let body_start = head_end + 4;
    let header = |name: &str| {
        head.lines()
            .find_map(|line| line.strip_prefix(name).map(|value| value.trim_start_matches(':').trim().to_string()))
    };
    let end = if header("transfer-encoding").is_some_and(|value| value.contains("chunked")) {
        let mut at = body_start;
        loop {
            let Some(line_end) = bytes[at..].windows(2).position(|pair| pair == b"\r\n") else { return Ok(None) };
            let size = String::from_utf8_lossy(&bytes[at..at + line_end]);
            let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("a bad chunk size {size:?}"))?;
            at += line_end + 2 + size + 2;
            if bytes.len() < at {
                return Ok(None);
            }
            if size == 0 {
                break at;
            }
        }
    } else {
        let length: usize = header("content-length")
            .ok_or("an HTTP answer with neither a length nor chunks")?
            .parse()
            .map_err(|_| "a bad Content-Length".to_string())?;
        if bytes.len() < body_start + length {
            return Ok(None);
        }
        body_start + length
    };
    let answer = match status.as_str() {
        "200" => Ok(()),
        _ => Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes[body_start..end]))),
    };
    Ok(Some((answer, end)))
}

fn encoded(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A linearizable read of `key` (etcd's default, served through its leader).
pub async fn etcd_get(connection: &Connection, key: &[u8]) -> Answer {
    let body = format!("{{\"key\":\"{}\"}}", encoded(key));
    connection.call(|out| http_post(out, "/v3/kv/range", &body)).await
}

pub async fn etcd_put(connection: &Connection, key: &[u8], value: &[u8]) -> Answer {
    let body = format!("{{\"key\":\"{}\",\"value\":\"{}\"}}", encoded(key), encoded(value));
    connection.call(|out| http_post(out, "/v3/kv/put", &body)).await
}

// ------------------------------------------------------------------ DynamoDB's HTTP API

/// Appends a POST of DynamoDB's JSON protocol. The credentials are well-formed but signed
/// with nothing: the servers compared accept any (Tessera with `--auth none`, dynalite).
fn dynamodb_post(out: &mut Vec<u8>, operation: &str, body: &str) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs());
    let date = tessera_net::http::sigv4::format_amz_date(now as i64);
    out.extend_from_slice(
        format!(
            "POST / HTTP/1.1\r\nHost: dynamodb\r\nX-Amz-Target: DynamoDB_20120810.{operation}\r\n\
             Content-Type: application/x-amz-json-1.0\r\nX-Amz-Date: {date}\r\nAuthorization: AWS4-HMAC-SHA256 \
             Credential=AKIDLOAD/{}/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date;x-amz-target, \
             Signature={:064}\r\nContent-Length: {}\r\n\r\n{body}",
            &date[..8],
            0,
            body.len()
        )
        .as_bytes(),
    );
}

/// A strongly consistent GetItem of `{"id": {"S": key}}`.
pub async fn dynamodb_get(connection: &Connection, table: &str, key: &str) -> Answer {
    let body = format!("{{\"TableName\":\"{table}\",\"Key\":{{\"id\":{{\"S\":\"{key}\"}}}},\"ConsistentRead\":true}}");
    connection.call(|out| dynamodb_post(out, "GetItem", &body)).await
}

/// A PutItem of `{"id": {"S": key}, "data": {"B": value}}`, the item Tessera's own loads write.
pub async fn dynamodb_put(connection: &Connection, table: &str, key: &str, value: &[u8]) -> Answer {
    let body = format!(
        "{{\"TableName\":\"{table}\",\"Item\":{{\"id\":{{\"S\":\"{key}\"}},\"data\":{{\"B\":\"{}\"}}}}}}",
        encoded(value)
    );
    connection.call(|out| dynamodb_post(out, "PutItem", &body)).await
}

/// Creates `table` (partition key `id`, a string, on demand); `Ok` also if it exists.
pub async fn dynamodb_create(connection: &Connection, table: &str) -> Answer {
    let body = format!(
        "{{\"TableName\":\"{table}\",\"KeySchema\":[{{\"AttributeName\":\"id\",\"KeyType\":\"HASH\"}}],\
         \"AttributeDefinitions\":[{{\"AttributeName\":\"id\",\"AttributeType\":\"S\"}}],\"BillingMode\":\"PAY_PER_REQUEST\"}}"
    );
    match connection.call(|out| dynamodb_post(out, "CreateTable", &body)).await {
        Err(error) if error.contains("ResourceInUseException") => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads every answer in `bytes`, whole; and no cut of them reads as more than it holds.
    fn read_all(parse: Parser, bytes: &[u8]) -> Vec<Answer> {
        let mut at = 0;
        let mut seen = Vec::new();
        while let Some((answer, used)) = parse(&bytes[at..]).unwrap() {
            seen.push(answer);
            at += used;
        }
        assert_eq!(at, bytes.len(), "every byte read");
        for cut in 0..bytes.len() {
            let mut at = 0;
            while let Ok(Some((_, used))) = parse(&bytes[at..cut]) {
                at += used;
            }
            assert!(at <= cut);
        }
        seen
    }

    #[test]
    fn redis_answers_parse_whole_or_not_at_all() {
        let answers = read_all(parse_resp, b"+OK\r\n$3\r\nabc\r\n$-1\r\n-ERR wrong\r\n:5\r\n");
        assert_eq!(answers, vec![Ok(()), Ok(()), Ok(()), Err("ERR wrong".to_string()), Ok(())]);
        assert!(parse_resp(b"*1\r\n").is_err(), "arrays are not answers to GET or SET");
        let mut out = Vec::new();
        resp_command(&mut out, &[b"SET", b"k", b"v1"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\n");
    }

    #[test]
    fn http_answers_parse_whole_or_not_at_all() {
        let sized = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n2\r\n\"}\r\n0\r\n\r\n";
        let failed = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n\r\nwrong";
        let bytes = [&sized[..], &chunked[..], &failed[..]].concat();
        let answers = read_all(parse_http, &bytes);
        assert_eq!(answers[..2], [Ok(()), Ok(())]);
        assert!(answers[2].as_ref().is_err_and(|error| error.contains("400") && error.contains("wrong")));
        let mut out = Vec::new();
        http_post(&mut out, "/v3/kv/put", "{}");
        assert!(out.starts_with(b"POST /v3/kv/put HTTP/1.1\r\n") && out.ends_with(b"Content-Length: 2\r\n\r\n{}"));
    }
}
