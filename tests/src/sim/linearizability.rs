//! A linearizability checker for histories of one register (Wing and Gong's search with
//! Lowe's memoization, as Porcupine does it): is there an order of the operations, each placed
//! between its call and its return, in which every read returns the latest write?
//!
//! Operations whose outcome the client never learned are given by the caller as either
//! happened (no return: they must be placed somewhere after their call) or left out.

use std::collections::HashSet;

/// What an operation did to the register. Values are unique per write; 0 is "never written".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterOp {
    Write(u64),
    /// The value the read returned.
    Read(u64),
}

/// One operation: called at `call`, returned at `ret` (`None`: took effect, return unknown).
#[derive(Clone, Copy, Debug)]
pub struct Operation {
    pub call: u64,
    pub ret: Option<u64>,
    pub op: RegisterOp,
}

#[derive(Clone, Copy)]
struct Node {
    /// Operation index, and whether this node is its return.
    op: usize,
    is_return: bool,
    prev: usize,
    next: usize,
}

/// Whether `history` is linearizable; on failure, a description of the operations left when
/// the search gave up.
pub fn check(history: &[Operation]) -> Result<(), String> {
    // Events in time order; a call sorts before a return at the same instant (they overlap).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(history.len() * 2);
    for (index, operation) in history.iter().enumerate() {
        events.push((operation.call, false, index));
        events.push((operation.ret.unwrap_or(u64::MAX), true, index));
    }
    events.sort_unstable();
    // A doubly linked list with a head sentinel at 0.
    let count = events.len();
    let mut nodes: Vec<Node> = Vec::with_capacity(count + 1);
    nodes.push(Node { op: usize::MAX, is_return: false, prev: 0, next: if count > 0 { 1 } else { 0 } });
    let mut call_node = vec![0usize; history.len()];
    let mut return_node = vec![0usize; history.len()];
    for (position, &(_, is_return, op)) in events.iter().enumerate() {
        let index = position + 1;
        nodes.push(Node { op, is_return, prev: index - 1, next: if index < count { index + 1 } else { 0 } });
        if is_return {
            return_node[op] = index;
        } else {
            call_node[op] = index;
        }
    }
    let words = history.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, u64)> = HashSet::new();
    let mut stack: Vec<(usize, u64)> = Vec::new();
    let mut state = 0u64;
    let mut entry = nodes[0].next;
    let unlink = |nodes: &mut Vec<Node>, index: usize| {
        let Node { prev, next, .. } = nodes[index];
        nodes[prev].next = next;
        if next != 0 {
            nodes[next].prev = prev;
        }
    };
    let relink = |nodes: &mut Vec<Node>, index: usize| {
        let Node { prev, next, .. } = nodes[index];
        nodes[prev].next = index;
        if next != 0 {
            nodes[next].prev = index;
        }
    };
    while nodes[0].next != 0 {
        if entry == 0 {
            return Err("the search ran off the end of the history".into());
        }
        let node = nodes[entry];
        if !node.is_return {
            let next_state = match history[node.op].op {
                RegisterOp::Write(value) => Some(value),
                RegisterOp::Read(value) => (value == state).then_some(state),
            };
            if let Some(next_state) = next_state {
                linearized[node.op / 64] |= 1 << (node.op % 64);
                if cache.insert((linearized.clone(), next_state)) {
                    stack.push((node.op, state));
                    state = next_state;
                    // Lift the operation out: its call and its return.
                    unlink(&mut nodes, call_node[node.op]);
                    unlink(&mut nodes, return_node[node.op]);
                    entry = nodes[0].next;
                    continue;
                }
                linearized[node.op / 64] &= !(1 << (node.op % 64));
            }
            entry = node.next;
        } else {
            // The first return left: its operation must come before anything after it.
            let Some((op, previous)) = stack.pop() else {
                let operation = history[node.op];
                return Err(format!(
                    "no order fits: {:?} called at {} and returned at {:?} cannot be placed",
                    operation.op, operation.call, operation.ret
                ));
            };
            state = previous;
            linearized[op / 64] &= !(1 << (op % 64));
            relink(&mut nodes, return_node[op]);
            relink(&mut nodes, call_node[op]);
            entry = nodes[call_node[op]].next;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: u64, ret: u64, op: RegisterOp) -> Operation {
        Operation { call, ret: Some(ret), op }
    }

    #[test]
    fn sequential_and_concurrent_histories() {
        use RegisterOp::{Read, Write};
        assert!(check(&[]).is_ok());
        assert!(check(&[op(0, 1, Write(1)), op(2, 3, Read(1))]).is_ok());
        assert!(check(&[op(0, 1, Read(0)), op(2, 3, Write(1)), op(4, 5, Read(1))]).is_ok());
        // A stale read after a completed write is not linearizable.
        assert!(check(&[op(0, 1, Write(1)), op(2, 3, Write(2)), op(4, 5, Read(1))]).is_err());
        // Overlapping writes: a read may see either, but two reads may not go back.
        assert!(check(&[op(0, 10, Write(1)), op(0, 10, Write(2)), op(11, 12, Read(1))]).is_ok());
        assert!(check(&[op(0, 10, Write(1)), op(0, 10, Write(2)), op(11, 12, Read(1)), op(13, 14, Read(2))]).is_err());
        // A write that took effect with its return unknown may be placed late.
        let pending = Operation { call: 0, ret: None, op: Write(7) };
        assert!(check(&[pending, op(5, 6, Read(0)), op(7, 8, Read(7))]).is_ok());
        assert!(check(&[pending, op(5, 6, Read(7)), op(7, 8, Read(0))]).is_err());
        // A read of a value nobody wrote.
        assert!(check(&[op(0, 1, Read(9))]).is_err());
    }
}
