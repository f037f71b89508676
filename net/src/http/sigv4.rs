//! AWS Signature Version 4, as the DynamoDB endpoint checks it: the `Authorization` header's
//! credential, signed headers and signature, recomputed from the request's method, path,
//! query, headers and body with the secret key Tessera holds for the access key.
//!
//! `Host` and `X-Amz-Target` must be among the signed headers, so a captured signature cannot
//! be replayed as another operation. With `Auth::None` only the header's form is checked.
//!
//! Pure: the caller gives the request's parts and the time.

use std::collections::HashMap;
use std::fmt::Write as _;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// How far a request's date may be from the server's clock, as DynamoDB allows.
const SKEW_MAX_SECONDS: i64 = 15 * 60;

/// Which requests the endpoint accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Any well-formed SigV4 credentials, whatever their key and signature (as DynamoDB Local
    /// does): a developer's tools work with the fake keys they already use.
    None,
    /// Signatures checked against these access keys (access key id to secret access key).
    SigV4(HashMap<String, String>),
}

impl Auth {
    /// The keys of a `--keys` file: `ACCESS_KEY_ID:SECRET_ACCESS_KEY` a line; blank lines and
    /// lines starting with `#` are skipped.
    pub fn parse_keys(text: &str) -> Result<HashMap<String, String>, String> {
        let mut keys = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, secret) = line
                .split_once(':')
                .filter(|(id, secret)| !id.is_empty() && !secret.is_empty())
                .ok_or_else(|| format!("line {}: expected ACCESS_KEY_ID:SECRET_ACCESS_KEY", number + 1))?;
            if keys.insert(id.to_string(), secret.to_string()).is_some() {
                return Err(format!("line {}: access key {id} appears twice", number + 1));
            }
        }
        Ok(keys)
    }
}

/// Why a request was refused, as DynamoDB names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No Authorization header (`MissingAuthenticationTokenException`).
    Missing,
    /// The access key is not one Tessera knows (`UnrecognizedClientException`).
    UnknownKey,
    /// A malformed header, a date out of range or a wrong signature
    /// (`InvalidSignatureException`); the text says which.
    Invalid(String),
}

/// The parts of an HTTP request a signature covers.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The query string, without `?` (empty when there is none).
    pub query: &'a str,
    /// Every header as received (names in any case).
    pub headers: &'a [(&'a str, &'a [u8])],
    pub body: &'a [u8],
}

/// What a well-formed `Authorization` header says.
#[derive(Debug, PartialEq, Eq)]
struct Authorization<'a> {
    access_key: &'a str,
    /// `DATE/REGION/SERVICE/aws4_request`.
    scope: &'a str,
    date: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn invalid(message: impl Into<String>) -> AuthError {
    AuthError::Invalid(message.into())
}

fn parse_authorization(header: &str) -> Result<Authorization<'_>, AuthError> {
    let rest = header.strip_prefix("AWS4-HMAC-SHA256 ").ok_or_else(|| {
        invalid("Authorization header requires the AWS4-HMAC-SHA256 algorithm (AWS Signature Version 4)")
    })?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (name, value) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| invalid(format!("Authorization header element {:?} is not NAME=VALUE", part.trim())))?;
        match name {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed = Some(value),
            "Signature" => signature = Some(value),
            _ => {}
        }
    }
    let missing = |what: &str| invalid(format!("Authorization header requires '{what}' parameter"));
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let (access_key, scope) =
        credential.split_once('/').filter(|(access_key, _)| !access_key.is_empty()).ok_or_else(|| {
            invalid(format!("Credential {credential:?} is not ACCESS_KEY/DATE/REGION/SERVICE/aws4_request"))
        })?;
    let parts: Vec<&str> = scope.split('/').collect();
    if parts.len() != 4 || parts[3] != "aws4_request" || parts[0].len() != 8 || parts.iter().any(|part| part.is_empty())
    {
        return Err(invalid(format!(
            "Credential should be scoped to a valid region, date, service and aws4_request, not {scope:?}"
        )));
    }
    if signature.len() != 64 || !signature.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(invalid("Signature must be 64 hexadecimal digits"));
    }
    let signed_headers: Vec<&str> = signed.split(';').collect();
    if signed_headers.iter().any(|name| name.is_empty() || name.bytes().any(|byte| byte.is_ascii_uppercase())) {
        return Err(invalid(format!("SignedHeaders {signed:?} must be lower-case header names separated by ';'")));
    }
    Ok(Authorization { access_key, scope, date: parts[0], signed_headers, signature })
}

/// The region a well-formed `Authorization` header's credential is scoped to.
pub fn region(header: &str) -> Option<&str> {
    parse_authorization(header).ok().and_then(|authorization| authorization.scope.split('/').nth(1))
}

/// Seconds since the Unix epoch of an ISO 8601 basic time (`20150830T123600Z`).
fn parse_amz_date(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes().all(|byte| byte.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let (year, month, day) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (hour, minute, second) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// `seconds` since the epoch as ISO 8601 basic time (`20150830T123600Z`, X-Amz-Date's form).
pub fn format_amz_date(seconds: i64) -> String {
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Civil date from days (the inverse of the above).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// A header's value as SigV4 canonicalizes it: trimmed, runs of spaces made one.
fn canonical_value(value: &[u8]) -> Result<String, AuthError> {
    let text = std::str::from_utf8(value).map_err(|_| invalid("a signed header's value is not UTF-8"))?;
    Ok(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The canonical query string: parameters sorted by name, then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(&str, &str)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .collect();
    pairs.sort_unstable();
    pairs.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("&")
}

/// The signature `secret` gives `request` under `authorization`'s scope and signed headers, at
/// `amz_date`.
fn signature(
    request: &SignedRequest<'_>,
    authorization: &Authorization<'_>,
    amz_date: &str,
    secret: &str,
) -> Result<String, AuthError> {
    let mut canonical_headers = String::new();
    for name in &authorization.signed_headers {
        let values = request
            .headers
            .iter()
            .filter(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| canonical_value(value))
            .collect::<Result<Vec<_>, _>>()?;
        if values.is_empty() {
            return Err(invalid(format!("the signed header {name} is not in the request")));
        }
        let _ = writeln!(canonical_headers, "{name}:{}", values.join(","));
    }
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        request.path,
        canonical_query(request.query),
        canonical_headers,
        authorization.signed_headers.join(";"),
        hex(&Sha256::digest(request.body)),
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{}\n{}",
        authorization.scope,
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), authorization.date.as_bytes());
    for part in authorization.scope.split('/').skip(1) {
        key = hmac(&key, part.as_bytes());
    }
    Ok(hex(&hmac(&key, string_to_sign.as_bytes())))
}

fn header<'a>(request: &SignedRequest<'a>, name: &str) -> Option<&'a [u8]> {
    request.headers.iter().find(|(header, _)| header.eq_ignore_ascii_case(name)).map(|(_, value)| *value)
}

/// Checks `request` under `auth` at `now` (seconds since the epoch).
pub fn verify(request: &SignedRequest<'_>, auth: &Auth, now: i64) -> Result<(), AuthError> {
    let header_text = header(request, "authorization").ok_or(AuthError::Missing)?;
    let header_text = std::str::from_utf8(header_text).map_err(|_| invalid("the Authorization header is not UTF-8"))?;
    let authorization = parse_authorization(header_text)?;
    let amz_date = header(request, "x-amz-date").ok_or_else(|| {
        invalid("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header")
    })?;
    let amz_date = std::str::from_utf8(amz_date).map_err(|_| invalid("X-Amz-Date is not UTF-8"))?;
    let when = parse_amz_date(amz_date)
        .ok_or_else(|| invalid(format!("X-Amz-Date {amz_date:?} is not a date like 20150830T123600Z")))?;
    if !amz_date.starts_with(authorization.date) {
        return Err(invalid(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}'",
            authorization.date,
            &amz_date[..8]
        )));
    }
    if !authorization.signed_headers.contains(&"host") {
        return Err(invalid("'Host' must be a signed header"));
    }
    // X-Amz-Target names the operation: unsigned, a captured GetItem could be replayed as a
    // DeleteItem of the same key. (The SDKs sign it, as every header they send.)
    if header(request, "x-amz-target").is_some() && !authorization.signed_headers.contains(&"x-amz-target") {
        return Err(invalid("'X-Amz-Target' must be a signed header"));
    }
    if when < now - SKEW_MAX_SECONDS {
        return Err(invalid(format!(
            "Signature expired: {amz_date} is now earlier than {} ({} - 15 min.)",
            format_amz_date(now - SKEW_MAX_SECONDS),
            format_amz_date(now)
        )));
    }
    if when > now + SKEW_MAX_SECONDS {
        return Err(invalid(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + 15 min.)",
            format_amz_date(now + SKEW_MAX_SECONDS),
            format_amz_date(now)
        )));
    }
    let Auth::SigV4(keys) = auth else { return Ok(()) };
    let secret = keys.get(authorization.access_key).ok_or(AuthError::UnknownKey)?;
    let expected = signature(request, &authorization, amz_date, secret)?;
    if expected != authorization.signature.to_ascii_lowercase() {
        return Err(invalid(
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn keys() -> Auth {
        Auth::SigV4(HashMap::from([("AKIDEXAMPLE".to_string(), SECRET.to_string())]))
    }

    /// AWS's published `get-vanilla` case of the SigV4 test suite.
    #[test]
    fn the_published_vanilla_request_verifies() {
        let headers: [(&str, &[u8]); 3] = [
            ("Host", b"example.amazonaws.com"),
            ("X-Amz-Date", b"20150830T123600Z"),
            ("Authorization", b"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        ];
        let request = SignedRequest { method: "GET", path: "/", query: "", headers: &headers, body: b"" };
        let now = parse_amz_date("20150830T123600Z").unwrap();
        assert_eq!(verify(&request, &keys(), now), Ok(()));
        // Another secret, another key, a changed body, a stale date.
        let other = Auth::SigV4(HashMap::from([("AKIDEXAMPLE".to_string(), "x".to_string())]));
        assert!(
            matches!(verify(&request, &other, now), Err(AuthError::Invalid(message)) if message.contains("does not match"))
        );
        assert_eq!(verify(&request, &Auth::SigV4(HashMap::new()), now), Err(AuthError::UnknownKey));
        let changed = SignedRequest { body: b"x", ..request };
        assert!(matches!(verify(&changed, &keys(), now), Err(AuthError::Invalid(_))));
        assert!(
            matches!(verify(&request, &keys(), now + 16 * 60), Err(AuthError::Invalid(message)) if message.starts_with("Signature expired: 20150830T123600Z is now earlier than 20150830T123700Z"))
        );
        assert!(
            matches!(verify(&request, &keys(), now - 16 * 60), Err(AuthError::Invalid(message)) if message.starts_with("Signature not yet current"))
        );
        // Without checking keys, the same request (and any key) passes.
        assert_eq!(verify(&request, &Auth::None, now), Ok(()));
    }

    #[test]
    fn malformed_headers_are_named() {
        let now = parse_amz_date("20150830T123600Z").unwrap();
        let check = |authorization: &'static [u8], date: &'static [u8]| {
            let headers: [(&str, &[u8]); 3] = [("host", b"h"), ("x-amz-date", date), ("authorization", authorization)];
            let request = SignedRequest { method: "POST", path: "/", query: "", headers: &headers, body: b"" };
            verify(&request, &Auth::None, now)
        };
        let good = b"AWS4-HMAC-SHA256 Credential=A/20150830/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        assert_eq!(check(good, b"20150830T123600Z"), Ok(()));
        for (authorization, date, expected) in [
            (&b"Basic abc"[..], &b"20150830T123600Z"[..], "AWS4-HMAC-SHA256"),
            (b"AWS4-HMAC-SHA256 Credential=A/20150830/us-east-1/dynamodb/aws4_request, Signature=00", b"20150830T123600Z", "SignedHeaders"),
            (b"AWS4-HMAC-SHA256 Credential=A/2015/x/aws4_request, SignedHeaders=host, Signature=00", b"20150830T123600Z", "scoped"),
            (b"AWS4-HMAC-SHA256 Credential=A/20150830/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=zz", b"20150830T123600Z", "64 hexadecimal"),
            (good, b"yesterday", "not a date"),
            (good, b"20150831T123600Z", "does not match"),
            (b"AWS4-HMAC-SHA256 Credential=A/20150830/us-east-1/dynamodb/aws4_request, SignedHeaders=x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31", b"20150830T123600Z", "'Host'"),
        ] {
            match check(authorization, date) {
                Err(AuthError::Invalid(message)) => assert!(message.contains(expected), "{message}"),
                other => panic!("{}: {other:?}", String::from_utf8_lossy(authorization)),
            }
        }
        let headers: [(&str, &[u8]); 1] = [("host", b"h")];
        let request = SignedRequest { method: "POST", path: "/", query: "", headers: &headers, body: b"" };
        assert_eq!(verify(&request, &Auth::None, now), Err(AuthError::Missing));
    }

    /// A DynamoDB request signed with `SECRET` over `signed_headers`, and its headers.
    fn signed_call(target: &'static [u8], signed_headers: &str) -> Vec<(&'static str, Vec<u8>)> {
        let date = "20150830T123600Z";
        let mut headers: Vec<(&'static str, Vec<u8>)> = vec![
            ("Host", b"dynamodb.us-east-1.amazonaws.com".to_vec()),
            ("X-Amz-Date", date.as_bytes().to_vec()),
            ("X-Amz-Target", target.to_vec()),
        ];
        let borrowed: Vec<(&str, &[u8])> = headers.iter().map(|(name, value)| (*name, value.as_slice())).collect();
        let request = SignedRequest { method: "POST", path: "/", query: "", headers: &borrowed, body: b"{}" };
        let authorization = Authorization {
            access_key: "AKIDEXAMPLE",
            scope: "20150830/us-east-1/dynamodb/aws4_request",
            date: "20150830",
            signed_headers: signed_headers.split(';').collect(),
            signature: "",
        };
        let signature = signature(&request, &authorization, date, SECRET).unwrap();
        let value = format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/dynamodb/aws4_request, SignedHeaders={signed_headers}, Signature={signature}"
        );
        headers.push(("Authorization", value.into_bytes()));
        headers
    }

    fn verify_call(headers: &[(&str, Vec<u8>)]) -> Result<(), AuthError> {
        let borrowed: Vec<(&str, &[u8])> = headers.iter().map(|(name, value)| (*name, value.as_slice())).collect();
        let request = SignedRequest { method: "POST", path: "/", query: "", headers: &borrowed, body: b"{}" };
        verify(&request, &keys(), parse_amz_date("20150830T123600Z").unwrap())
    }

    #[test]
    fn the_operation_must_be_signed() {
        let get = b"DynamoDB_20120810.GetItem";
        assert_eq!(verify_call(&signed_call(get, "host;x-amz-date;x-amz-target")), Ok(()));
        // A signature that leaves X-Amz-Target out would hold for any operation: refused,
        // though the signature itself is right, and whatever the credentials are checked by.
        let unsigned = signed_call(get, "host;x-amz-date");
        for auth in [keys(), Auth::None] {
            let borrowed: Vec<(&str, &[u8])> = unsigned.iter().map(|(name, value)| (*name, value.as_slice())).collect();
            let request = SignedRequest { method: "POST", path: "/", query: "", headers: &borrowed, body: b"{}" };
            assert_eq!(
                verify(&request, &auth, parse_amz_date("20150830T123600Z").unwrap()),
                Err(AuthError::Invalid("'X-Amz-Target' must be a signed header".into()))
            );
        }
        // A signed target changed afterwards breaks the signature.
        let mut swapped = signed_call(get, "host;x-amz-date;x-amz-target");
        swapped[2].1 = b"DynamoDB_20120810.DeleteItem".to_vec();
        assert!(
            matches!(verify_call(&swapped), Err(AuthError::Invalid(message)) if message.contains("does not match"))
        );
    }

    #[test]
    fn dates_round_trip() {
        for text in ["19700101T000000Z", "20150830T123600Z", "20000229T235959Z", "21001231T010203Z"] {
            assert_eq!(format_amz_date(parse_amz_date(text).unwrap()), text);
        }
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        for bad in ["20151330T000000Z", "2015083OT123600Z", "20150830 123600Z", "", "20150830T123600"] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_files_are_checked() {
        let keys = Auth::parse_keys("# keys\nAKID1:secret1\n\n AKID2:se:cret2 \n").unwrap();
        assert_eq!(keys["AKID2"], "se:cret2");
        assert_eq!(keys.len(), 2);
        assert!(Auth::parse_keys("AKID1\n").unwrap_err().contains("line 1"));
        assert!(Auth::parse_keys("A:b\nA:c\n").unwrap_err().contains("twice"));
    }
}
