//! Helpers the integration tests share: raw HTTP/1.1 exchanges with the DynamoDB endpoint.
//! Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::io::{Read, Write as _};
use std::net::TcpStream;

use tessera_net::http::sigv4::format_amz_date;

/// An answer's status, headers (lower-case names) and body.
pub type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// One HTTP exchange on `stream`.
pub fn exchange(stream: &mut TcpStream, request: &[u8]) -> Option<Answer> {
    stream.write_all(request).ok()?;
    read_answer(stream)
}

fn read_answer(stream: &mut TcpStream) -> Option<Answer> {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        bytes.push(byte[0]);
    }
    let head = String::from_utf8(bytes).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(": "))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_string()))
        .collect();
    let length: usize = headers.iter().find(|(name, _)| name == "content-length")?.1.parse().ok()?;
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some((status, headers, body))
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(header, _)| header == name).map(|(_, value)| value.as_str())
}

/// A POST as an SDK sends it, with well-formed credentials dated now (signed with nothing
/// in particular: the server under test accepts any).
pub fn post(target: &str, body: &str, date: Option<&str>) -> Vec<u8> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let date = date.map_or_else(|| format_amz_date(now), str::to_string);
    format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Target: {target}\r\nContent-Type: application/x-amz-json-1.0\r\n\
         X-Amz-Date: {date}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIDANY/{}/us-east-1/dynamodb/aws4_request, \
         SignedHeaders=host;x-amz-date;x-amz-target, Signature={}\r\nContent-Length: {}\r\n\r\n{body}",
        &date[..8],
        "0".repeat(64),
        body.len()
    )
    .into_bytes()
}
