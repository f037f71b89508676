//! Forwarding to other cluster members: the parts of a request that another node's replica
//! leads are sent to it, over one connection per node, marked forwarded: a forwarded request
//! is never forwarded again, so a stale leader hint cannot bounce a request between nodes (its
//! node answers NotLeader instead). A Scan's part is the segment that partition is, a batch's
//! the writes or keys that node leads.

use std::net::SocketAddr;
use std::rc::Rc;

use tessera_wire::client::ClientConfig;
use tessera_wire::{ConsumedCapacity, ErrorCode, Request, RequestFlags, Response, ReturnConsumedCapacity, WireError};

use super::Shard;
use crate::client::{AsyncClient, Forwarding};

impl Shard {
    /// Sends `request` to the node at `leader` (a cluster member that leads a partition this
    /// request needs), over a connection kept per node.
    pub(super) async fn forward(&self, leader: &str, request: &Request) -> Result<Response, WireError> {
        self.forward_with(leader, request, ReturnConsumedCapacity::None).await.map(|(response, _)| response)
    }

    /// `forward`, asking the other node for the capacity the request consumed there.
    pub(crate) async fn forward_with(
        &self,
        leader: &str,
        request: &Request,
        capacity: ReturnConsumedCapacity,
    ) -> Result<(Response, Vec<ConsumedCapacity>), WireError> {
        let unavailable = |what: String| WireError::new(ErrorCode::ServiceUnavailable, what);
        let known = self.forwards.borrow().get(leader).cloned();
        let client = match known {
            Some(client) => client,
            None => {
                let address: SocketAddr = leader
                    .parse()
                    .map_err(|_| unavailable(format!("the leader's address {leader:?} does not parse")))?;
                let client = AsyncClient::connect(address, ClientConfig::forwarding(&self.access))
                    .await
                    .map_err(|error| unavailable(format!("cannot reach the leader at {leader}: {error}")))?;
                let client = Rc::new(client);
                self.forwards.borrow_mut().insert(leader.to_string(), client.clone());
                client
            }
        };
        let flags = RequestFlags { capacity, forwarded: true, ..RequestFlags::default() };
        match client.call_once_with(request, flags).await {
            Ok((Response::Error(error), _)) => Err(error),
            Ok(answer) => Ok(answer),
            Err(error) => {
                self.forwards.borrow_mut().remove(leader);
                Err(unavailable(format!("the leader at {leader} failed: {error}")))
            }
        }
    }
}

/// The address of the node that leads, when `error` is a NotLeader answer naming one.
pub(super) fn leader_of(error: &WireError) -> Option<&str> {
    (error.code == ErrorCode::NotLeader).then_some(error.leader.as_deref()).flatten()
}
