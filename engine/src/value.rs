//! The DynamoDB data model: attribute values, items, and item size as DynamoDB counts it.
//!
//! Invariants: sets are never empty and hold no duplicates (they are `BTreeSet`s, so iteration
//! order is deterministic); an item stored by the engine is at most `ITEM_SIZE_MAX` bytes.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Result};
use crate::number::Number;

/// Largest item DynamoDB stores: 400 KB, names and values counted by `item_size`.
pub const ITEM_SIZE_MAX: usize = 400 * 1024;
/// Deepest nesting of lists and maps DynamoDB accepts.
pub const NESTING_MAX: usize = 32;
/// The longest attribute name, in bytes: DynamoDB's documented 64 KB is exclusive (65,535 is
/// the last size it takes; tests/dynamodb/MESSAGES.md 12e).
pub const ATTRIBUTE_NAME_MAX: usize = 65_535;

/// Refuses an attribute name longer than `ATTRIBUTE_NAME_MAX`, in DynamoDB's words
/// (MESSAGES.md 12e), wherever a name comes from: an item's attributes, a placeholder.
pub fn check_name_length(name: &str) -> Result<()> {
    if name.len() > ATTRIBUTE_NAME_MAX {
        return Err(Error::validation(format!(
            "1 validation error detected: Attribute name is too large, must be less than {} bytes",
            ATTRIBUTE_NAME_MAX + 1
        )));
    }
    Ok(())
}

/// One attribute value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttributeValue {
    S(String),
    N(Number),
    B(Vec<u8>),
    Bool(bool),
    Null,
    M(BTreeMap<String, AttributeValue>),
    L(Vec<AttributeValue>),
    Ss(BTreeSet<String>),
    Ns(BTreeSet<Number>),
    Bs(BTreeSet<Vec<u8>>),
}

/// An item: attribute names to values.
pub type Item = BTreeMap<String, AttributeValue>;

impl AttributeValue {
    /// DynamoDB's short name of the value's type (`S`, `N`, `BOOL`, `SS`...).
    pub fn type_name(&self) -> &'static str {
        match self {
            AttributeValue::S(_) => "S",
            AttributeValue::N(_) => "N",
            AttributeValue::B(_) => "B",
            AttributeValue::Bool(_) => "BOOL",
            AttributeValue::Null => "NULL",
            AttributeValue::M(_) => "M",
            AttributeValue::L(_) => "L",
            AttributeValue::Ss(_) => "SS",
            AttributeValue::Ns(_) => "NS",
            AttributeValue::Bs(_) => "BS",
        }
    }

    /// Size of the value alone, by DynamoDB's rules (the attribute name is counted by the
    /// caller): strings and binaries by byte length, numbers by significant digits, lists and
    /// maps 3 bytes plus 1 byte per element plus their elements (map keys included).
    pub fn size(&self) -> usize {
        match self {
            AttributeValue::S(text) => text.len(),
            AttributeValue::N(number) => number.size(),
            AttributeValue::B(bytes) => bytes.len(),
            AttributeValue::Bool(_) | AttributeValue::Null => 1,
            AttributeValue::M(map) => 3 + map.iter().map(|(name, value)| 1 + name.len() + value.size()).sum::<usize>(),
            AttributeValue::L(list) => 3 + list.iter().map(|value| 1 + value.size()).sum::<usize>(),
            AttributeValue::Ss(set) => set.iter().map(String::len).sum(),
            AttributeValue::Ns(set) => set.iter().map(Number::size).sum(),
            AttributeValue::Bs(set) => set.iter().map(Vec::len).sum(),
        }
    }

    /// Checks the rules that the type system does not: no empty set, nesting within bounds.
    pub fn validate(&self, path: &str) -> Result<()> {
        self.validate_at_depth(path, 0)
    }

    fn validate_at_depth(&self, path: &str, depth: usize) -> Result<()> {
        if depth > NESTING_MAX {
            return Err(Error::validation(format!(
                "attribute {path} nests lists and maps deeper than {NESTING_MAX} levels"
            )));
        }
        let empty_set = match self {
            AttributeValue::Ss(set) => set.is_empty(),
            AttributeValue::Ns(set) => set.is_empty(),
            AttributeValue::Bs(set) => set.is_empty(),
            AttributeValue::M(map) => {
                return map.values().try_for_each(|value| value.validate_at_depth(path, depth + 1));
            }
            AttributeValue::L(list) => {
                return list.iter().try_for_each(|value| value.validate_at_depth(path, depth + 1));
            }
            _ => false,
        };
        if empty_set {
            return Err(Error::validation(format!("attribute {path}: {}", empty_set_message(self.type_name()))));
        }
        Ok(())
    }
}

/// DynamoDB's words for an empty set of type `kind` (`SS`, `NS` or `BS`), which it refuses
/// wherever a value appears (an item, a key, a placeholder's value, a legacy parameter), with
/// its "An" and its two spaces (as asserted against DynamoDB by moto's and dynalite's tests).
/// Every decoder of values from a client uses it.
pub fn empty_set_message(kind: &str) -> String {
    match kind {
        "NS" => "An number set  may not be empty".to_string(),
        // Worded differently, as DynamoDB words it (dynalite's tests, run against it).
        "BS" => "Binary sets should not be empty".to_string(),
        _ => "An string set  may not be empty".to_string(),
    }
}

/// Item size as DynamoDB counts it: attribute names plus value sizes.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(name, value)| name.len() + value.size()).sum()
}

/// Checks an item against the data model's rules, including the 400 KB limit.
pub fn validate_item(item: &Item) -> Result<()> {
    for (name, value) in item {
        if name.is_empty() {
            return Err(Error::validation("an attribute name may not be empty"));
        }
        check_name_length(name)?;
        value.validate(name)?;
    }
    let size = item_size(item);
    if size > ITEM_SIZE_MAX {
        return Err(Error::validation(format!(
            "item size {size} bytes has exceeded the maximum allowed size of {ITEM_SIZE_MAX} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(text: &str) -> AttributeValue {
        AttributeValue::N(Number::parse(text).unwrap())
    }

    #[test]
    fn sizes_follow_dynamodb_rules() {
        let mut item = Item::new();
        item.insert("id".into(), AttributeValue::S("abc".into())); // 2 + 3
        item.insert("n".into(), n("12345")); // 1 + 3 + 1
        item.insert("b".into(), AttributeValue::B(vec![0; 10])); // 1 + 10
        item.insert("ok".into(), AttributeValue::Bool(true)); // 2 + 1
        item.insert("z".into(), AttributeValue::Null); // 1 + 1
        item.insert("l".into(), AttributeValue::L(vec![n("1"), AttributeValue::S("xy".into())])); // 1 + 3 + (1+2) + (1+2)
        let mut inner = BTreeMap::new();
        inner.insert("k".into(), AttributeValue::S("v".into()));
        item.insert("m".into(), AttributeValue::M(inner)); // 1 + 3 + (1 + 1 + 1)
        item.insert("ss".into(), AttributeValue::Ss(["a".to_string(), "bcd".to_string()].into())); // 2 + 4
        item.insert("e".into(), AttributeValue::M(BTreeMap::new())); // 1 + 3
        assert_eq!(item_size(&item), 5 + 5 + 11 + 3 + 2 + 10 + 7 + 6 + 4);
    }

    #[test]
    fn rejects_oversized_items_and_empty_sets() {
        let mut item = Item::new();
        item.insert("k".into(), AttributeValue::B(vec![0; ITEM_SIZE_MAX - 1]));
        assert!(validate_item(&item).is_ok());
        item.insert("k2".into(), AttributeValue::Null);
        let error = validate_item(&item).unwrap_err().to_string();
        assert!(error.contains("exceeded the maximum allowed size"), "{error}");
        let mut item = Item::new();
        item.insert("s".into(), AttributeValue::Ss(BTreeSet::new()));
        assert!(validate_item(&item).unwrap_err().to_string().contains("may not be empty"));
        let mut deep = AttributeValue::Null;
        for _ in 0..=NESTING_MAX {
            deep = AttributeValue::L(vec![deep]);
        }
        let mut item = Item::new();
        item.insert("d".into(), deep);
        assert!(validate_item(&item).unwrap_err().to_string().contains("deeper"));
    }
}
