//! `ItemBuilder`, so that items need not be written as attribute-value trees by hand.

use std::collections::BTreeSet;

use tessera_engine::{AttributeValue, Item, Number};

/// Builds an item (or a key) attribute by attribute.
#[derive(Clone, Debug, Default)]
pub struct ItemBuilder {
    item: Item,
}

impl ItemBuilder {
    pub fn new() -> ItemBuilder {
        ItemBuilder::default()
    }

    /// Any attribute value.
    pub fn value(mut self, name: &str, value: AttributeValue) -> ItemBuilder {
        self.item.insert(name.to_string(), value);
        self
    }

    pub fn s(self, name: &str, value: impl Into<String>) -> ItemBuilder {
        self.value(name, AttributeValue::S(value.into()))
    }

    /// A number from an integer.
    pub fn n(self, name: &str, value: i64) -> ItemBuilder {
        let number = Number::parse(&value.to_string()).expect("an i64 is a valid number");
        self.value(name, AttributeValue::N(number))
    }

    /// A number from its decimal text; panics if the text is not a valid DynamoDB number (use
    /// `value` with `Number::parse` to handle that case).
    pub fn n_text(self, name: &str, text: &str) -> ItemBuilder {
        self.value(name, AttributeValue::N(Number::parse(text).expect("a valid number")))
    }

    pub fn b(self, name: &str, value: impl Into<Vec<u8>>) -> ItemBuilder {
        self.value(name, AttributeValue::B(value.into()))
    }

    pub fn bool(self, name: &str, value: bool) -> ItemBuilder {
        self.value(name, AttributeValue::Bool(value))
    }

    pub fn null(self, name: &str) -> ItemBuilder {
        self.value(name, AttributeValue::Null)
    }

    pub fn ss<S: Into<String>>(self, name: &str, values: impl IntoIterator<Item = S>) -> ItemBuilder {
        self.value(name, AttributeValue::Ss(values.into_iter().map(Into::into).collect::<BTreeSet<_>>()))
    }

    /// A nested map.
    pub fn m(self, name: &str, map: ItemBuilder) -> ItemBuilder {
        self.value(name, AttributeValue::M(map.item))
    }

    pub fn l(self, name: &str, values: Vec<AttributeValue>) -> ItemBuilder {
        self.value(name, AttributeValue::L(values))
    }

    pub fn build(self) -> Item {
        self.item
    }
}
