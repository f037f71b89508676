//! A thin Redis client for the peer comparison: GET and SET over RESP, pipelined on each
//! connection like Tessera's own client (any number of calls in flight, answers in order), so
//! both are driven by a load client of the same strength.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};

use futures_lite::{AsyncReadExt, AsyncWriteExt};

/// A call's answer: `Ok` for a value, nil or OK; the error line otherwise.
type Answer = Result<(), String>;

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

/// One pipelined connection.
pub struct Redis {
    shared: Rc<Shared>,
}

/// Appends a RESP command (an array of bulk strings).
fn command(out: &mut Vec<u8>, parts: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
    for part in parts {
        out.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
}

/// The first whole answer in `bytes` and its length, `None` if more bytes are needed.
fn parse(bytes: &[u8]) -> Result<Option<(Answer, usize)>, String> {
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

impl Redis {
    pub async fn connect(address: SocketAddr) -> std::io::Result<Redis> {
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
                    Ok(0) => break "redis closed the connection".to_string(),
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
        Ok(Redis { shared })
    }

    async fn call(&self, parts: &[&[u8]]) -> Answer {
        if let Some(failure) = self.shared.failed.borrow().clone() {
            return Err(failure);
        }
        let slot = Rc::new(Slot::default());
        command(&mut self.shared.outbox.borrow_mut(), parts);
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

    pub async fn get(&self, key: &[u8]) -> Answer {
        self.call(&[b"GET", key]).await
    }

    pub async fn set(&self, key: &[u8], value: &[u8]) -> Answer {
        self.call(&[b"SET", key, value]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_whole_or_not_at_all() {
        let answers: &[u8] = b"+OK\r\n$3\r\nabc\r\n$-1\r\n-ERR wrong\r\n:5\r\n";
        let mut at = 0;
        let mut seen = Vec::new();
        while let Some((answer, used)) = parse(&answers[at..]).unwrap() {
            seen.push(answer);
            at += used;
        }
        assert_eq!(at, answers.len());
        assert_eq!(seen, vec![Ok(()), Ok(()), Ok(()), Err("ERR wrong".to_string()), Ok(())]);
        for cut in [1, 4, 7, 10, 12] {
            let parsed = parse(&answers[5..5 + cut]).unwrap();
            assert!(parsed.is_none() || cut >= 9, "a cut bulk string at {cut} is incomplete");
        }
        assert!(parse(b"*1\r\n").is_err(), "arrays are not answers to GET or SET");
        let mut out = Vec::new();
        command(&mut out, &[b"SET", b"k", b"v1"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\n");
    }
}
