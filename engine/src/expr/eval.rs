//! Evaluation of parsed conditions against items, and projections of items.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::{Comparator, Condition, Operand, Path, PathElement};
use crate::number::Number;
use crate::value::{AttributeValue, Item};

pub(crate) fn condition(condition: &Condition, item: &Item) -> bool {
    match condition {
        Condition::Compare(left, comparator, right) => match (operand(left, item), operand(right, item)) {
            (Some(left), Some(right)) => compare(&left, *comparator, &right),
            // A missing operand is unequal to anything, another missing one too, and unordered
            // (Alternator test_condition_expression.py, test_update_condition_ne_two_unset and
            // test_update_condition_comparison_two_unset, run against DynamoDB).
            _ => *comparator == Comparator::Ne,
        },
        Condition::Between(value, low, high) => match (operand(value, item), operand(low, item), operand(high, item)) {
            (Some(value), Some(low), Some(high)) => {
                compare(&value, Comparator::Ge, &low) && compare(&value, Comparator::Le, &high)
            }
            _ => false,
        },
        Condition::In(value, list) => operand(value, item).is_some_and(|value| {
            list.iter().any(|candidate| operand(candidate, item).is_some_and(|candidate| *candidate == *value))
        }),
        Condition::Exists(path) => resolve(path, item).is_some(),
        Condition::NotExists(path) => resolve(path, item).is_none(),
        Condition::Type(path, name) => resolve(path, item).is_some_and(|value| value.type_name() == name),
        Condition::BeginsWith(value, prefix) => {
            match (operand(value, item).as_deref(), operand(prefix, item).as_deref()) {
                (Some(AttributeValue::S(value)), Some(AttributeValue::S(prefix))) => value.starts_with(prefix.as_str()),
                (Some(AttributeValue::B(value)), Some(AttributeValue::B(prefix))) => value.starts_with(prefix),
                _ => false,
            }
        }
        Condition::Contains(haystack, needle) => match (operand(haystack, item), operand(needle, item)) {
            (Some(haystack), Some(needle)) => contains(&haystack, &needle),
            _ => false,
        },
        Condition::And(left, right) => self::condition(left, item) && self::condition(right, item),
        Condition::Or(left, right) => self::condition(left, item) || self::condition(right, item),
        Condition::Not(inner) => !self::condition(inner, item),
    }
}

/// The value at `path` in `item`, if the path leads anywhere.
pub(crate) fn resolve<'i>(path: &Path, item: &'i Item) -> Option<&'i AttributeValue> {
    let mut elements = path.0.iter();
    let PathElement::Name(top) = elements.next()? else { return None };
    let mut value = item.get(top)?;
    for element in elements {
        value = match (element, value) {
            (PathElement::Name(name), AttributeValue::M(map)) => map.get(name)?,
            (PathElement::Index(index), AttributeValue::L(list)) => list.get(*index)?,
            _ => return None,
        };
    }
    Some(value)
}

fn operand<'i>(operand: &'i Operand, item: &'i Item) -> Option<Cow<'i, AttributeValue>> {
    match operand {
        Operand::Path(path) => resolve(path, item).map(Cow::Borrowed),
        Operand::Value(value) => Some(Cow::Borrowed(value)),
        Operand::Size(path) => size(resolve(path, item)?).map(Cow::Owned),
    }
}

/// `size(...)`: bytes of a string or binary, elements of a set, list or map.
pub(crate) fn size(value: &AttributeValue) -> Option<AttributeValue> {
    let count = match value {
        AttributeValue::S(text) => text.len(),
        AttributeValue::B(bytes) => bytes.len(),
        AttributeValue::Ss(set) => set.len(),
        AttributeValue::Ns(set) => set.len(),
        AttributeValue::Bs(set) => set.len(),
        AttributeValue::L(list) => list.len(),
        AttributeValue::M(map) => map.len(),
        AttributeValue::N(_) | AttributeValue::Bool(_) | AttributeValue::Null => return None,
    };
    Some(AttributeValue::N(Number::from(count as i64)))
}

/// The order of two values of the same orderable type (N, S, B), or None.
pub(crate) fn order(left: &AttributeValue, right: &AttributeValue) -> Option<Ordering> {
    match (left, right) {
        (AttributeValue::N(left), AttributeValue::N(right)) => Some(left.cmp(right)),
        (AttributeValue::S(left), AttributeValue::S(right)) => Some(left.as_bytes().cmp(right.as_bytes())),
        (AttributeValue::B(left), AttributeValue::B(right)) => Some(left.cmp(right)),
        _ => None,
    }
}

fn compare(left: &AttributeValue, comparator: Comparator, right: &AttributeValue) -> bool {
    match comparator {
        Comparator::Eq => left == right,
        Comparator::Ne => left != right,
        Comparator::Lt => order(left, right) == Some(Ordering::Less),
        Comparator::Le => matches!(order(left, right), Some(Ordering::Less | Ordering::Equal)),
        Comparator::Gt => order(left, right) == Some(Ordering::Greater),
        Comparator::Ge => matches!(order(left, right), Some(Ordering::Greater | Ordering::Equal)),
    }
}

fn contains(haystack: &AttributeValue, needle: &AttributeValue) -> bool {
    match (haystack, needle) {
        (AttributeValue::S(text), AttributeValue::S(part)) => text.contains(part.as_str()),
        (AttributeValue::B(bytes), AttributeValue::B(part)) => {
            part.is_empty() || bytes.windows(part.len()).any(|window| window == part.as_slice())
        }
        (AttributeValue::Ss(set), AttributeValue::S(element)) => set.contains(element),
        (AttributeValue::Ns(set), AttributeValue::N(element)) => set.contains(element),
        (AttributeValue::Bs(set), AttributeValue::B(element)) => set.contains(element),
        (AttributeValue::L(list), element) => list.contains(element),
        _ => false,
    }
}

/// The part of `item` that `paths` name (a ProjectionExpression): nested maps keep the named
/// keys; list elements named by index are kept in index order, compacted. Paths that lead
/// nowhere contribute nothing.
pub fn project(item: &Item, paths: &[Path]) -> Item {
    let mut top: BTreeMap<String, Part> = BTreeMap::new();
    for path in paths {
        let Some(value) = resolve(path, item) else { continue };
        let (PathElement::Name(name), rest) = (&path.0[0], &path.0[1..]) else { continue };
        top.entry(name.clone()).or_insert(Part::Map(BTreeMap::new())).place(rest, value);
    }
    top.into_iter().map(|(name, part)| (name, part.into_value())).collect()
}

/// A projection under construction: a whole value, or the named parts of a map or list.
enum Part {
    Whole(AttributeValue),
    Map(BTreeMap<String, Part>),
    List(BTreeMap<usize, Part>),
}

impl Part {
    fn place(&mut self, rest: &[PathElement], value: &AttributeValue) {
        let Some((first, rest)) = rest.split_first() else {
            *self = Part::Whole(value.clone());
            return;
        };
        let fresh = || Part::Map(BTreeMap::new());
        let child = match (first, &mut *self) {
            (PathElement::Name(name), Part::Map(map)) => map.entry(name.clone()).or_insert_with(fresh),
            (PathElement::Index(index), Part::List(list)) => list.entry(*index).or_insert_with(fresh),
            (PathElement::Index(index), Part::Map(map)) if map.is_empty() => {
                *self = Part::List(BTreeMap::new());
                let Part::List(list) = self else { unreachable!("just set") };
                list.entry(*index).or_insert_with(fresh)
            }
            // Projections never overlap (the parser refuses it), so nothing placed here
            // before can be a whole value or of the other kind.
            _ => unreachable!("overlapping projection paths"),
        };
        child.place(rest, value);
    }

    fn into_value(self) -> AttributeValue {
        match self {
            Part::Whole(value) => value,
            Part::Map(map) => {
                AttributeValue::M(map.into_iter().map(|(name, part)| (name, part.into_value())).collect())
            }
            Part::List(list) => AttributeValue::L(list.into_values().map(Part::into_value).collect()),
        }
    }
}
