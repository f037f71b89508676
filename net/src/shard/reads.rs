//! Query and Scan: a read plan's key range on the partition it names (Query) or a segment's
//! partitions in turn (Scan, forwarded where another node leads), one page at a time.

use std::ops::Bound;
use std::rc::Rc;

use tessera_engine::{item_size, KeyType, ITEM_SIZE_MAX};
use tessera_wire::frame::FRAME_LEN_MAX;
use tessera_wire::{PartitionAnswer, PartitionOp, Query, Response, Scan, SortCondition, WireError};

use super::codec::{decode_key, decode_stored, encode_start_key};
use super::expressions::ReadPlan;
use super::mesh::unexpected_answer;
use super::metering::Meter;
use super::owner::assert_page;
use super::{engine_error, invalid, Shard};
use crate::catalog::{key_hash, range_start};
use crate::messages;

/// A page of Query or Scan results ends once it holds this many bytes of items.
pub const PAGE_BYTES_MAX: usize = 1 << 20;
// A page is at most its bound and one item (`owner::assert_page`): its answer fits in one
// frame, with as much again for the encoding.
const _: () = assert!(2 * (PAGE_BYTES_MAX + ITEM_SIZE_MAX) <= FRAME_LEN_MAX, "a page's answer fits in a frame");

impl Shard {
    pub(super) async fn query(self: &Rc<Shard>, mut query: Query, meter: &mut Meter) -> Result<Response, WireError> {
        let table = self.table(&query.table)?;
        let schema = &table.key_schema;
        let mut plan = ReadPlan::parse(&query.read, Some(schema))?;
        let key_names = std::iter::once(&schema.partition).chain(&schema.sort).map(|key| key.name.as_str());
        if let Some(filter) = &plan.filter {
            let named = filter.attribute_names();
            if let Some(key) = key_names.clone().find(|key| named.contains(key)) {
                return Err(invalid(messages::filter_on_key(key)));
            }
        }
        if let Some(key) = plan.key.take() {
            query.partition_key = key.partition_key;
            query.sort = key.sort;
        }
        let prefix = schema.encode_partition_prefix(&query.partition_key).map_err(engine_error)?.bytes;
        let whole = || -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
            if schema.sort.is_none() {
                (Bound::Included(prefix.clone()), Bound::Included(prefix.clone()))
            } else {
                (Bound::Included(prefix.clone()), successor(&prefix).map_or(Bound::Unbounded, Bound::Excluded))
            }
        };
        let full = |value| -> Result<Vec<u8>, WireError> {
            Ok([prefix.as_slice(), &schema.encode_sort_value(value).map_err(engine_error)?].concat())
        };
        let (all_lower, all_upper) = whole();
        let (lower, upper) = match &query.sort {
            None => (all_lower, all_upper),
            Some(SortCondition::Eq(value)) => (Bound::Included(full(value)?), Bound::Included(full(value)?)),
            Some(SortCondition::Lt(value)) => (all_lower, Bound::Excluded(full(value)?)),
            Some(SortCondition::Le(value)) => (all_lower, Bound::Included(full(value)?)),
            Some(SortCondition::Gt(value)) => (Bound::Excluded(full(value)?), all_upper),
            Some(SortCondition::Ge(value)) => (Bound::Included(full(value)?), all_upper),
            Some(SortCondition::Between(low, high)) => {
                let (low, high) = (full(low)?, full(high)?);
                if low > high {
                    return Err(invalid(
                        "Invalid KeyConditionExpression: The BETWEEN operator requires upper bound to be greater than or equal to lower bound",
                    ));
                }
                (Bound::Included(low), Bound::Included(high))
            }
            Some(SortCondition::BeginsWith(value)) => {
                if schema.sort.as_ref().is_some_and(|sort| sort.key_type == KeyType::N) {
                    return Err(invalid(
                        "Invalid KeyConditionExpression: Incorrect operand type for operator or function; operator or function: begins_with, operand type: N",
                    ));
                }
                let start = full(value)?;
                let end = successor(&start).map_or(all_upper, Bound::Excluded);
                (Bound::Included(start), end)
            }
        };
        let (mut lower, mut upper) = (lower, upper);
        if let Some(start) = &query.exclusive_start_key {
            if schema.sort.is_none() {
                return Err(invalid(messages::hash_only_start_key(start)));
            }
            let start = encode_start_key(schema, start, messages::QUERY_START_KEY_INVALID)?;
            if !start.starts_with(&prefix) {
                return Err(invalid("The provided starting key is invalid: it is not in the queried partition key"));
            }
            if query.backward {
                upper = min_upper(upper, Bound::Excluded(start));
            } else {
                lower = max_lower(lower, Bound::Excluded(start));
            }
        }
        let limit = if query.limit == 0 { usize::MAX } else { query.limit as usize };
        let (core, partition) = self.place(&table, &prefix);
        let op = PartitionOp::Scan {
            partition,
            consistent: query.consistent_read,
            lower,
            upper,
            reverse: query.backward,
            limit,
            bytes_max: PAGE_BYTES_MAX,
        };
        let (entries, more) = match self.on(core, op).await {
            PartitionAnswer::Entries { entries, more } => (entries, more),
            other => return Err(unexpected_answer(other)),
        };
        assert_page(&entries, limit, PAGE_BYTES_MAX);
        let last_evaluated_key = match entries.last() {
            Some((key, _)) if more => Some(decode_key(schema, key)?),
            _ => None,
        };
        let items = entries.iter().map(|(_, value)| decode_stored(value)).collect::<Result<Vec<_>, _>>()?;
        meter.read(&table.name, items.iter().map(item_size).sum(), query.consistent_read);
        Ok(plan.page(items, last_evaluated_key))
    }

    pub(super) async fn scan_table(
        self: &Rc<Shard>,
        scan: Scan,
        may_forward: bool,
        meter: &mut Meter,
    ) -> Result<Response, WireError> {
        let table = self.table(&scan.table)?;
        if scan.read.key_condition.is_some() {
            return Err(invalid("Scan takes no KeyConditionExpression"));
        }
        let plan = ReadPlan::parse(&scan.read, None)?;
        let total = if scan.total_segments == 0 { 1 } else { scan.total_segments };
        if total > 1_000_000 {
            return Err(invalid(format!("TotalSegments must be between 1 and 1000000, not {total}")));
        }
        if scan.segment >= total {
            return Err(invalid(format!("Segment {} must be less than TotalSegments {total}", scan.segment)));
        }
        let segment_start = range_start(u64::from(scan.segment), u64::from(total)).expect("segment < total");
        let segment_end = range_start(u64::from(scan.segment) + 1, u64::from(total));
        let (mut index, mut lower) = match &scan.exclusive_start_key {
            Some(start) => {
                let start = encode_start_key(&table.key_schema, start, messages::SCAN_START_KEY_INVALID)?;
                let hash = key_hash(&start);
                if hash < segment_start || segment_end.is_some_and(|end| hash >= end) {
                    return Err(invalid("The provided starting key is invalid: it is not in this scan segment"));
                }
                (table.partition_of(hash), Bound::Excluded(start))
            }
            None => (table.partition_of(segment_start), Bound::Included(segment_start.to_be_bytes().to_vec())),
        };
        let mut remaining = if scan.limit == 0 { usize::MAX } else { scan.limit as usize };
        let mut bytes_left = PAGE_BYTES_MAX;
        let mut items = Vec::new();
        let mut last_key = None;
        loop {
            // A page ends once it has its items or bytes; the next partition is one of the table's.
            assert!(remaining > 0 && bytes_left > 0, "a Scan page goes on after it is full");
            assert!(
                index < table.partitions(),
                "{}: Scan reached partition {index} of {}",
                table.name,
                table.partitions()
            );
            let partition_end = table.partition_start(index + 1);
            let end = match (segment_end, partition_end) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let upper = end.map_or(Bound::Unbounded, |end| Bound::Excluded(end.to_be_bytes().to_vec()));
            let op = PartitionOp::Scan {
                partition: table.partition_id(index),
                consistent: scan.consistent_read,
                lower,
                upper,
                reverse: false,
                limit: remaining,
                bytes_max: bytes_left,
            };
            let (entries, more) = match self.at_leader(self.owner(&table, index), op, may_forward).await {
                PartitionAnswer::Entries { entries, more } => (entries, more),
                other => return Err(unexpected_answer(other)),
            };
            // Here or at the leader, the part is held to what is left of the page.
            assert_page(&entries, remaining, bytes_left);
            for (key, value) in &entries {
                bytes_left = bytes_left.saturating_sub(key.len() + value.len());
                items.push(decode_stored(value)?);
            }
            remaining -= entries.len();
            if let Some((key, _)) = entries.last() {
                last_key = Some(key.clone());
            }
            let segment_done = end == segment_end;
            let page_done = more || remaining == 0 || bytes_left == 0;
            if page_done || segment_done {
                meter.read(&table.name, items.iter().map(item_size).sum(), scan.consistent_read);
            }
            if page_done {
                let last_evaluated_key = match (&last_key, segment_done && !more) {
                    (Some(key), false) => Some(decode_key(&table.key_schema, key)?),
                    _ => None,
                };
                return Ok(plan.page(items, last_evaluated_key));
            }
            if segment_done {
                return Ok(plan.page(items, None));
            }
            index += 1;
            lower = Bound::Included(partition_end.expect("not the last partition").to_be_bytes().to_vec());
        }
    }
}

/// The smallest byte string greater than every string that starts with `prefix`.
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let end = prefix.iter().rposition(|&byte| byte != 0xFF)?;
    let mut next = prefix[..=end].to_vec();
    next[end] += 1;
    Some(next)
}

/// The tighter of two lower bounds.
fn max_lower(a: Bound<Vec<u8>>, b: Bound<Vec<u8>>) -> Bound<Vec<u8>> {
    match (&a, &b) {
        (Bound::Unbounded, _) => b,
        (_, Bound::Unbounded) => a,
        (Bound::Included(x) | Bound::Excluded(x), Bound::Included(y) | Bound::Excluded(y)) => {
            if x > y || (x == y && matches!(a, Bound::Excluded(_))) {
                a
            } else {
                b
            }
        }
    }
}

/// The tighter of two upper bounds.
fn min_upper(a: Bound<Vec<u8>>, b: Bound<Vec<u8>>) -> Bound<Vec<u8>> {
    match (&a, &b) {
        (Bound::Unbounded, _) => b,
        (_, Bound::Unbounded) => a,
        (Bound::Included(x) | Bound::Excluded(x), Bound::Included(y) | Bound::Excluded(y)) => {
            if x < y || (x == y && matches!(a, Bound::Excluded(_))) {
                a
            } else {
                b
            }
        }
    }
}
