//! Consumed capacity: what a request used, per table, when it asked (ReturnConsumedCapacity).

use std::collections::BTreeMap;

use tessera_engine::{capacity, item_size, Item};
use tessera_wire::{ConsumedCapacity, ReturnConsumedCapacity};

/// The capacity a request consumes, per table, counted when it asked (ReturnConsumedCapacity):
/// reads by `capacity::read_units` of each item (a Query or Scan page counts as one read of
/// all the items it read, before any filter), writes by `capacity::write_units` of the item
/// before and after.
pub(super) struct Meter {
    pub(super) mode: ReturnConsumedCapacity,
    /// Table name: read units, write units.
    tables: BTreeMap<String, (f64, f64)>,
}

impl Meter {
    pub(super) fn new(mode: ReturnConsumedCapacity) -> Meter {
        Meter { mode, tables: BTreeMap::new() }
    }

    /// Whether the request asked: writes then need the old item to count.
    pub(super) fn wanted(&self) -> bool {
        self.mode != ReturnConsumedCapacity::None
    }

    pub(super) fn read(&mut self, table: &str, bytes: usize, consistent: bool) {
        if self.wanted() {
            self.tables.entry(table.to_string()).or_default().0 += capacity::read_units(bytes, consistent);
        }
    }

    pub(super) fn write(&mut self, table: &str, old: Option<&Item>, new: Option<&Item>) {
        if self.wanted() {
            self.tables.entry(table.to_string()).or_default().1 += capacity::write_units(size_of(old), size_of(new));
        }
    }

    pub(super) fn report(self) -> Vec<ConsumedCapacity> {
        let indexes = self.mode == ReturnConsumedCapacity::Indexes;
        self.tables
            .into_iter()
            .map(|(table, (read_units, write_units))| ConsumedCapacity {
                table,
                read_units,
                write_units,
                table_units: indexes.then_some(read_units + write_units),
            })
            .collect()
    }
}

/// The size DynamoDB counts of an item that may be absent (0).
pub(super) fn size_of(item: Option<&Item>) -> usize {
    item.map_or(0, item_size)
}
