//! Work for other cluster members, over one connection per node. The parts of a request that
//! another node's replica leads (a Scan's partition, a batch's keys or writes) go to it as the
//! internal RPC's `PartitionOp`s, run there at the partition's owner and never sent on: a stale
//! leader hint cannot bounce work between nodes (the node answers NotLeader instead). A whole
//! request the HTTP endpoint passes to a leader goes as itself, marked forwarded, and is not
//! forwarded again either.

use std::net::SocketAddr;
use std::rc::Rc;

use tessera_wire::client::{ClientConfig, ClientError};
use tessera_wire::{
    ConsumedCapacity, ErrorCode, PartitionAnswer, PartitionOp, Request, RequestFlags, Response, ReturnConsumedCapacity,
    WireError,
};

use super::batch::BATCH_WRITE_MAX;
use super::owner::page_fault;
use super::Shard;
use crate::catalog::partition_name;
use crate::client::{AsyncClient, Forwarding};

impl Shard {
    /// Runs `op` at `core`, its partition's owner here, or, when another node leads the
    /// partition and `may_forward`, at that node.
    pub(super) async fn at_leader(
        self: &Rc<Shard>,
        core: usize,
        op: PartitionOp,
        may_forward: bool,
    ) -> PartitionAnswer {
        // Kept for the other node only in a cluster (a single node leads all it has).
        let kept = (may_forward && self.replicated()).then(|| op.clone());
        let answer = self.on(core, op).await;
        let (PartitionAnswer::Error(error), Some(op)) = (&answer, kept) else { return answer };
        match leader_of(error) {
            Some(leader) => {
                let leader = leader.to_string();
                self.on_node(&leader, &op).await.unwrap_or_else(PartitionAnswer::Error)
            }
            None => answer,
        }
    }

    /// Runs `op` at the node at `leader` (a cluster member that leads its partition).
    async fn on_node(&self, leader: &str, op: &PartitionOp) -> Result<PartitionAnswer, WireError> {
        let client = self.connection(leader).await?;
        let answer = client.partition_op(op).await.map_err(|error| self.lost(leader, error))?;
        if let (PartitionOp::Scan { limit, bytes_max, .. }, PartitionAnswer::Entries { entries, .. }) = (op, &answer) {
            if let Some(fault) = page_fault(entries, *limit, *bytes_max) {
                return Err(unavailable(format!("the leader at {leader} answered {fault}")));
            }
        }
        Ok(answer)
    }

    /// Sends `request` to the node at `leader`, marked forwarded (the HTTP endpoint passing a
    /// request to a partition's leader), asking for the capacity it consumed there.
    pub(crate) async fn forward_with(
        &self,
        leader: &str,
        request: &Request,
        capacity: ReturnConsumedCapacity,
    ) -> Result<(Response, Vec<ConsumedCapacity>), WireError> {
        let client = self.connection(leader).await?;
        let flags = RequestFlags { capacity, forwarded: true, ..RequestFlags::default() };
        match client.call_once_with(request, flags).await {
            Ok((Response::Error(error), _)) => Err(error),
            Ok(answer) => Ok(answer),
            Err(error) => Err(self.lost(leader, error)),
        }
    }

    /// The connection to the node at `leader`, kept per node.
    async fn connection(&self, leader: &str) -> Result<Rc<AsyncClient>, WireError> {
        if let Some(client) = self.forwards.borrow().get(leader).cloned() {
            return Ok(client);
        }
        let address: SocketAddr =
            leader.parse().map_err(|_| unavailable(format!("the leader's address {leader:?} does not parse")))?;
        let client = AsyncClient::connect(address, ClientConfig::forwarding(&self.access))
            .await
            .map_err(|error| unavailable(format!("cannot reach the leader at {leader}: {error}")))?;
        let client = Rc::new(client);
        self.forwards.borrow_mut().insert(leader.to_string(), client.clone());
        Ok(client)
    }

    /// Drops the connection to `leader`, which failed with `error`.
    fn lost(&self, leader: &str, error: ClientError) -> WireError {
        self.forwards.borrow_mut().remove(leader);
        unavailable(format!("the leader at {leader} failed: {error}"))
    }

    /// Serves the internal RPC's `op` from another node: at the core that owns its partition
    /// here, never sent on.
    pub(crate) async fn serve_partition_op(self: &Rc<Shard>, op: PartitionOp) -> PartitionAnswer {
        if !self.replicated() {
            // A single node has no members to send it; its stored bytes are written only by
            // its own edge, after it has checked the request.
            return PartitionAnswer::Error(WireError::new(
                ErrorCode::AccessDeniedException,
                "PartitionOp is a request between cluster members, and this node is not in a cluster",
            ));
        }
        let Some(core) = self.partition_core(op.partition()) else {
            // This node has not learned the table yet (its catalog lags the sender's).
            return PartitionAnswer::Error(unavailable(format!(
                "this node's catalog does not hold {} yet",
                partition_name(op.partition())
            )));
        };
        if let PartitionOp::Batch { commands, .. } = &op {
            if !(1..=BATCH_WRITE_MAX).contains(&commands.len()) {
                return PartitionAnswer::Error(WireError::new(
                    ErrorCode::ValidationException,
                    format!("a PartitionOp batch of {} writes, not 1 to {BATCH_WRITE_MAX}", commands.len()),
                ));
            }
        }
        self.on(core, op).await
    }
}

fn unavailable(what: String) -> WireError {
    WireError::new(ErrorCode::ServiceUnavailable, what)
}

/// The address of the node that leads, when `error` is a NotLeader answer naming one.
pub(super) fn leader_of(error: &WireError) -> Option<&str> {
    (error.code == ErrorCode::NotLeader).then_some(error.leader.as_deref()).flatten()
}
