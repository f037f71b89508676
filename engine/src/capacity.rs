//! Capacity units as DynamoDB counts them (`ReturnConsumedCapacity`), from item sizes as
//! `item_size` counts them: a read unit is 4 KB read with strong consistency (half a unit when
//! eventually consistent), a write unit is 1 KB written. Every request consumes at least one
//! unit of its kind, an absent item included. The basis of admission control later.

/// Bytes one read unit covers.
pub const READ_UNIT_BYTES: usize = 4096;
/// Bytes one write unit covers.
pub const WRITE_UNIT_BYTES: usize = 1024;

/// Read units to read `bytes` (one item, or the sum of a Query or Scan page before any
/// filter): rounded up to 4 KB, at least one unit, halved when eventually consistent.
pub fn read_units(bytes: usize, consistent: bool) -> f64 {
    let units = bytes.div_ceil(READ_UNIT_BYTES).max(1) as f64;
    if consistent {
        units
    } else {
        units / 2.0
    }
}

/// Write units of a write that replaces an item of `old_bytes` (0 when there was none) with
/// one of `new_bytes` (0 for a delete): the larger of the two, rounded up to 1 KB, at least
/// one. A conditional write whose condition fails consumes the same as if it had written
/// nothing new (`new_bytes` 0).
pub fn write_units(old_bytes: usize, new_bytes: usize) -> f64 {
    old_bytes.max(new_bytes).div_ceil(WRITE_UNIT_BYTES).max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of DynamoDB's documentation ("Read/write capacity mode").
    #[test]
    fn documented_examples() {
        assert_eq!(read_units(3500, true), 1.0, "a 3.5 KB item, strongly consistent");
        assert_eq!(read_units(3500, false), 0.5, "eventually consistent: half");
        assert_eq!(read_units(7 * 1024, true), 2.0, "7 KB rounds up to 8 KB");
        assert_eq!(read_units(0, true), 1.0, "an absent item still costs one unit");
        assert_eq!(read_units(0, false), 0.5);
        assert_eq!(write_units(0, 1536), 2.0, "a 1.5 KB write rounds up to 2 KB");
        assert_eq!(write_units(0, 500), 1.0);
        assert_eq!(write_units(3000, 100), 3.0, "the larger of before and after");
        assert_eq!(write_units(0, 0), 1.0, "deleting nothing still costs one unit");
        assert_eq!(write_units(4096, 0), 4.0);
    }
}
