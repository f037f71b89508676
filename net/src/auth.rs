//! Who may speak on a binary connection or a peer link. A connection proves that it holds a
//! key with one Authenticate request (`Request::Authenticate`): an HMAC-SHA256, under the key's
//! secret, of a fixed context string, the key id, a timestamp and a random nonce (made by
//! `tessera_wire::client::Credentials`; checked here). The same proof opens every peer link
//! (under the cluster's secret) before any replication frame is taken. Keys are of two kinds:
//! the access keys of `--keys` (what the HTTP endpoint checks SigV4 against), which may make
//! data requests, and the cluster's secret (`--cluster-secret`), held by the nodes and the
//! operator, which may also make administration requests and open peer links.
//!
//! A proof is good for `SKEW_MAX` either side of the server's clock. Without TLS it guards
//! against anyone who can reach a port, not against someone on the path who can read and
//! rewrite a connection's bytes.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use hmac::Mac;
use tessera_wire::client::{now_ms, proof_mac, ClientTls, CLUSTER_KEY_ID, NONCE_LEN};
use tessera_wire::{ErrorCode, Request, WireError};

/// How far a proof's timestamp may be from the verifier's clock.
pub const SKEW_MAX: Duration = Duration::from_secs(300);

/// What an authenticated connection may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Privilege {
    /// Data requests.
    Client,
    /// Data and administration requests, peer links: the cluster's secret.
    Cluster,
}

/// The keys a server takes.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// Access keys (id to secret). When present, binary connections must authenticate before
    /// any request, as HTTP requests must carry a SigV4 signature.
    pub clients: Option<HashMap<String, String>>,
    /// The cluster's secret. When present, peer links and administration requests need it.
    pub cluster_secret: Option<String>,
    /// How this node speaks TLS to another node's client port (which speaks nothing else
    /// when this node's does), forwarding requests to a partition's leader.
    pub forwarding_tls: Option<ClientTls>,
}

impl Access {
    /// Whether a binary connection must authenticate before it makes data requests.
    pub fn required(&self) -> bool {
        self.clients.is_some()
    }

    /// Whether a connection that proved `privilege` (None: no proof) may make `request`.
    pub fn admit(&self, request: &Request, privilege: Option<Privilege>) -> Result<(), WireError> {
        let administration = match request {
            Request::ChangeMembers { .. } | Request::RetireReplica { .. } | Request::DescribeReplicas => {
                Some(format!("{} is an administration request", request.operation()))
            }
            Request::CreateTable { ranges, .. } if !ranges.is_empty() => {
                Some("CreateTable with a chosen partition map is an administration request".to_string())
            }
            _ => None,
        };
        self.admit_as(administration, privilege)
    }

    /// Whether a connection that proved `privilege` may send the internal RPC (`PartitionOp`:
    /// another cluster member's work on a partition this node leads).
    pub fn admit_internal(&self, privilege: Option<Privilege>) -> Result<(), WireError> {
        self.admit_as(Some("PartitionOp is a request between cluster members".to_string()), privilege)
    }

    /// `privileged`: what the request is when it needs the cluster's secret.
    fn admit_as(&self, privileged: Option<String>, privilege: Option<Privilege>) -> Result<(), WireError> {
        if let Some(what) =
            privileged.filter(|_| self.cluster_secret.is_some() && privilege != Some(Privilege::Cluster))
        {
            return Err(WireError::new(
                ErrorCode::AccessDeniedException,
                format!("{what}: it needs a connection authenticated with the cluster's secret (--cluster-secret)"),
            ));
        }
        if self.required() && privilege.is_none() {
            return Err(WireError::new(
                ErrorCode::MissingAuthenticationTokenException,
                "this server takes requests only on an authenticated connection: send Authenticate first (the command line and the client library use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the shared credentials file)",
            ));
        }
        Ok(())
    }

    /// Checks an Authenticate request; what the connection may do from then on.
    pub fn verify(&self, key_id: &str, timestamp_ms: u64, nonce: &[u8], proof: &[u8]) -> Result<Privilege, WireError> {
        let unrecognized =
            |why: &str| WireError::new(ErrorCode::UnrecognizedClientException, format!("authentication failed: {why}"));
        let cluster = self.cluster_secret.as_ref().filter(|_| key_id == CLUSTER_KEY_ID);
        let (secret, privilege) = match cluster {
            Some(secret) => (secret, Privilege::Cluster),
            None => match self.clients.as_ref().and_then(|clients| clients.get(key_id)) {
                Some(secret) => (secret, Privilege::Client),
                None => return Err(unrecognized(&format!("the key {key_id:?} is not one this server knows"))),
            },
        };
        if nonce.len() != NONCE_LEN {
            return Err(unrecognized(&format!("the nonce must be {NONCE_LEN} bytes")));
        }
        let skew = now_ms().abs_diff(timestamp_ms);
        if skew > SKEW_MAX.as_millis() as u64 {
            return Err(unrecognized(&format!(
                "the timestamp is {} s from this server's clock (at most {} s are allowed)",
                skew / 1000,
                SKEW_MAX.as_secs()
            )));
        }
        // Compared in constant time.
        proof_mac(secret, key_id, timestamp_ms, nonce)
            .verify_slice(proof)
            .map_err(|_| unrecognized("the signature does not match the key"))?;
        Ok(privilege)
    }
}

/// Reads a secret from a file (its first line, trimmed); refuses a short one.
pub fn read_secret(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let secret = text.lines().next().unwrap_or("").trim().to_string();
    if secret.len() < 16 {
        return Err(format!("the secret in {} must be at least 16 characters", path.display()));
    }
    Ok(secret)
}

/// A new random secret (32 bytes, hex), for a cluster whose operator gave none.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the system's random source");
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_wire::client::Credentials;

    fn access() -> Access {
        Access {
            clients: Some(HashMap::from([("AKID".to_string(), "client-secret".to_string())])),
            cluster_secret: Some("cluster-secret-of-enough-length".to_string()),
            forwarding_tls: None,
        }
    }

    fn verify(access: &Access, request: &Request) -> Result<Privilege, WireError> {
        let Request::Authenticate { key_id, timestamp_ms, nonce, signature } = request else { panic!() };
        access.verify(key_id, *timestamp_ms, nonce, signature)
    }

    #[test]
    fn proofs_are_checked_against_the_right_secret() {
        let access = access();
        let client = Credentials { key_id: "AKID".into(), secret: "client-secret".into() };
        assert_eq!(verify(&access, &client.authenticate()).unwrap(), Privilege::Client);
        let cluster = Credentials::cluster("cluster-secret-of-enough-length");
        assert_eq!(verify(&access, &cluster.authenticate()).unwrap(), Privilege::Cluster);
        for wrong in [
            Credentials { key_id: "AKID".into(), secret: "guess".into() },
            Credentials { key_id: "OTHER".into(), secret: "client-secret".into() },
            Credentials::cluster("client-secret"),
        ] {
            let error = verify(&access, &wrong.authenticate()).unwrap_err();
            assert_eq!(error.code, ErrorCode::UnrecognizedClientException, "{wrong:?}");
        }
        // A proof is bound to its timestamp and nonce.
        let Request::Authenticate { key_id, timestamp_ms, nonce, signature } = client.authenticate() else { panic!() };
        assert!(access.verify(&key_id, timestamp_ms + 1, &nonce, &signature).is_err());
        let mut other = nonce.clone();
        other[0] ^= 1;
        assert!(access.verify(&key_id, timestamp_ms, &other, &signature).is_err());
        let stale = timestamp_ms - SKEW_MAX.as_millis() as u64 - 1000;
        let old = signature_for(&client, stale, &nonce);
        assert!(access.verify(&key_id, stale, &nonce, &old).unwrap_err().message.contains("clock"));
        // Without a cluster secret, its key id is just an unknown key.
        let no_cluster = Access { cluster_secret: None, ..access };
        assert!(verify(&no_cluster, &Credentials::cluster("cluster-secret-of-enough-length").authenticate()).is_err());
    }

    fn signature_for(credentials: &Credentials, timestamp_ms: u64, nonce: &[u8]) -> Vec<u8> {
        proof_mac(&credentials.secret, &credentials.key_id, timestamp_ms, nonce).finalize().into_bytes().to_vec()
    }
}
