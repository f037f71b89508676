//! What a connection sends to prove it holds a key (`Request::Authenticate`): an HMAC-SHA256,
//! under the key's secret, of a fixed context string, the key id, a timestamp and a random
//! nonce. The server's verifier (`tessera_net::auth`) recomputes the same HMAC (`proof_mac`).
//! The same proof, under the cluster's secret, opens every peer link.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Request;

/// The key id the cluster's secret goes by.
pub const CLUSTER_KEY_ID: &str = "tessera-cluster";
/// Bytes of a proof's nonce.
pub const NONCE_LEN: usize = 16;
const CONTEXT: &str = "tessera-authenticate-v1";

/// A key and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub key_id: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ key_id: {:?}, secret: .. }}", self.key_id)
    }
}

/// The clock a proof's timestamp is read from: milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

/// The HMAC of a proof, fed with everything it covers: what the prover signs and the verifier
/// checks.
pub fn proof_mac(secret: &str, key_id: &str, timestamp_ms: u64, nonce: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    for part in [CONTEXT.as_bytes(), key_id.as_bytes(), timestamp_ms.to_string().as_bytes(), nonce] {
        mac.update(part);
        mac.update(b"\n");
    }
    mac
}

impl Credentials {
    /// The cluster's credentials, from the secret in `--cluster-secret`'s file.
    pub fn cluster(secret: &str) -> Credentials {
        Credentials { key_id: CLUSTER_KEY_ID.to_string(), secret: secret.to_string() }
    }

    /// The proof of this key, made now.
    pub fn authenticate(&self) -> Request {
        let mut nonce = vec![0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the system's random source");
        let timestamp_ms = now_ms();
        let signature = proof_mac(&self.secret, &self.key_id, timestamp_ms, &nonce).finalize().into_bytes().to_vec();
        Request::Authenticate { key_id: self.key_id.clone(), timestamp_ms, nonce, signature }
    }

    /// A client's credentials as the AWS tools find them: `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`, else the profile `AWS_PROFILE` (or `default`) of the shared
    /// credentials file (`AWS_SHARED_CREDENTIALS_FILE`, or `~/.aws/credentials`). None if
    /// neither has them.
    pub fn from_environment() -> Result<Option<Credentials>, String> {
        let variable = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        if let (Some(key_id), Some(secret)) = (variable("AWS_ACCESS_KEY_ID"), variable("AWS_SECRET_ACCESS_KEY")) {
            return Ok(Some(Credentials { key_id, secret }));
        }
        let path = match (variable("AWS_SHARED_CREDENTIALS_FILE"), variable("HOME")) {
            (Some(path), _) => path.into(),
            (None, Some(home)) => Path::new(&home).join(".aws").join("credentials"),
            (None, None) => return Ok(None),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
        };
        let profile = variable("AWS_PROFILE").unwrap_or_else(|| "default".to_string());
        Ok(profile_credentials(&text, &profile))
    }
}

/// The access key of `profile` in a shared credentials file's text (INI: `[profile]`, then
/// `aws_access_key_id = ...` and `aws_secret_access_key = ...`).
fn profile_credentials(text: &str, profile: &str) -> Option<Credentials> {
    let mut section = None;
    let (mut key_id, mut secret) = (None, None);
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
            section = Some(name.trim().to_string());
            continue;
        }
        if section.as_deref() != Some(profile) {
            continue;
        }
        if let Some((name, value)) = line.split_once('=') {
            match name.trim() {
                "aws_access_key_id" => key_id = Some(value.trim().to_string()),
                "aws_secret_access_key" => secret = Some(value.trim().to_string()),
                _ => {}
            }
        }
    }
    Some(Credentials { key_id: key_id?, secret: secret? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_credentials_files_are_read_by_profile() {
        let text = "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s1\n\n[work]\n\
                    aws_access_key_id=AKIDWORK\naws_secret_access_key=s2\nregion = eu-west-1\n";
        assert_eq!(profile_credentials(text, "default").unwrap().key_id, "AKIDDEFAULT");
        assert_eq!(
            profile_credentials(text, "work").unwrap(),
            Credentials { key_id: "AKIDWORK".into(), secret: "s2".into() }
        );
        assert!(profile_credentials(text, "missing").is_none());
    }
}
