//! UpdateExpression: the parsed form and its application to an item.
//!
//! Every SET value is computed from the item as it was before the update (DynamoDB's rule),
//! then the actions are applied: SETs in path order, REMOVEs (list elements by their original
//! indexes), ADDs, DELETEs. The parser has already refused overlapping paths, so the actions
//! touch disjoint parts of the item.

use std::collections::BTreeSet;

use super::eval::resolve;
use super::{Path, PathElement};
use crate::error::{Error, Result};
use crate::value::{AttributeValue, Item};

/// The right-hand side of a SET action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetValue {
    Operand(SetOperand),
    Plus(SetOperand, SetOperand),
    Minus(SetOperand, SetOperand),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetOperand {
    Path(Path),
    Value(AttributeValue),
    IfNotExists(Path, Box<SetOperand>),
    ListAppend(Box<SetOperand>, Box<SetOperand>),
}

/// A parsed UpdateExpression.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    pub set: Vec<(Path, SetValue)>,
    pub remove: Vec<Path>,
    pub add: Vec<(Path, AttributeValue)>,
    pub delete: Vec<(Path, AttributeValue)>,
}

impl Update {
    /// Every path the update writes or removes.
    pub fn targets(&self) -> impl Iterator<Item = &Path> {
        self.set
            .iter()
            .map(|(path, _)| path)
            .chain(&self.remove)
            .chain(self.add.iter().map(|(path, _)| path))
            .chain(self.delete.iter().map(|(path, _)| path))
    }

    /// Refuses an update of a primary-key attribute.
    pub fn check_key_attributes(&self, key_names: &[&str]) -> Result<()> {
        for path in self.targets() {
            if let Some(PathElement::Name(top)) = path.0.first() {
                if key_names.contains(&top.as_str()) {
                    return Err(Error::validation(format!(
                        "Cannot update attribute {top}. This attribute is part of the key"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The item after the update of `old` (None: the item does not exist), whose key
    /// attributes are `key_item`; None when the update leaves no item. An update that only
    /// REMOVEs or DELETEs creates no item where there was none (DynamoDB's rule: there is
    /// nothing to remove from), and of a missing item no path is checked.
    pub fn apply_to(&self, old: Option<Item>, key_item: &Item) -> Result<Option<Item>> {
        let existed = old.is_some();
        if !existed && self.set.is_empty() && self.add.is_empty() {
            return Ok(None);
        }
        let mut item = old.unwrap_or_else(|| key_item.clone());
        self.apply_as(&mut item, existed)?;
        Ok(Some(item))
    }

    /// Applies the update to a stored `item`. On error `item` is left as it was.
    pub fn apply(&self, item: &mut Item) -> Result<()> {
        self.apply_as(item, true)
    }

    /// `apply`, where `existed` says whether the item was stored (not made from its key).
    fn apply_as(&self, item: &mut Item, existed: bool) -> Result<()> {
        let values = self.set.iter().map(|(_, value)| set_value(value, item)).collect::<Result<Vec<_>>>()?;
        let mut updated = item.clone();
        // In path order: elements SET past a list's end are appended by their index, lowest
        // first, whatever order the expression names them in (DynamoDB's documented rule).
        // The paths are disjoint, so no other SET depends on the order.
        let mut sets: Vec<(&Path, AttributeValue)> = self.set.iter().map(|(path, _)| path).zip(values).collect();
        sets.sort_by_key(|(path, _)| *path);
        for (path, value) in sets {
            assign(&mut updated, path, value)?;
        }
        // Higher list indexes first, so that each REMOVE sees the original positions.
        let mut removals: Vec<&Path> = self.remove.iter().collect();
        removals.sort_unstable_by(|a, b| b.cmp(a));
        for path in removals {
            if !remove(&mut updated, path) && existed {
                return Err(invalid_path());
            }
        }
        for (path, value) in &self.add {
            let sum = match resolve(path, &updated) {
                None => value.clone(),
                Some(existing) => add(existing, value)?,
            };
            assign(&mut updated, path, sum)?;
        }
        for (path, value) in &self.delete {
            let Some(existing) = resolve(path, &updated) else { continue };
            match without(existing, value)? {
                Some(rest) => assign(&mut updated, path, rest)?,
                None => {
                    remove(&mut updated, path);
                }
            }
        }
        *item = updated;
        Ok(())
    }
}

/// A path through something that is not the map or list it needs (MESSAGES.md 10f,
/// Alternator test_update_expression.py:1055-1137, quoting DynamoDB).
fn invalid_path() -> Error {
    Error::validation("The document path provided in the update expression is invalid for update")
}

fn wrong_type() -> Error {
    Error::validation("An operand in the update expression has an incorrect data type")
}

fn set_value(value: &SetValue, item: &Item) -> Result<AttributeValue> {
    let number = |operand: &SetOperand| match set_operand(operand, item)? {
        AttributeValue::N(number) => Ok(number),
        _ => Err(wrong_type()),
    };
    match value {
        SetValue::Operand(operand) => set_operand(operand, item),
        SetValue::Plus(left, right) => Ok(AttributeValue::N(number(left)?.checked_add(&number(right)?)?)),
        SetValue::Minus(left, right) => Ok(AttributeValue::N(number(left)?.checked_sub(&number(right)?)?)),
    }
}

fn set_operand(operand: &SetOperand, item: &Item) -> Result<AttributeValue> {
    match operand {
        SetOperand::Value(value) => Ok(value.clone()),
        SetOperand::Path(path) => resolve(path, item)
            .cloned()
            .ok_or_else(|| Error::validation("The provided expression refers to an attribute that does not exist in the item")),
        SetOperand::IfNotExists(path, fallback) => match resolve(path, item) {
            Some(value) => Ok(value.clone()),
            None => set_operand(fallback, item),
        },
        SetOperand::ListAppend(left, right) => match (set_operand(left, item)?, set_operand(right, item)?) {
            (AttributeValue::L(mut left), AttributeValue::L(right)) => {
                left.extend(right);
                Ok(AttributeValue::L(left))
            }
            (AttributeValue::L(_), other) | (other, _) => Err(Error::validation(format!(
                "Invalid UpdateExpression: Incorrect operand type for operator or function; operator or function: list_append, operand type: {}",
                other.type_name()
            ))),
        },
    }
}

/// The container holding the last element of a path whose other elements are `parents`
/// (`parents[0]` is the top-level name), if it exists. The mutable twin of `eval::resolve`.
fn parent_mut<'i>(item: &'i mut Item, parents: &[PathElement]) -> Option<&'i mut AttributeValue> {
    let (PathElement::Name(top), rest) = parents.split_first()? else { return None };
    let mut parent = item.get_mut(top)?;
    for element in rest {
        parent = match (element, parent) {
            (PathElement::Name(name), AttributeValue::M(map)) => map.get_mut(name)?,
            (PathElement::Index(index), AttributeValue::L(list)) => list.get_mut(*index)?,
            _ => return None,
        };
    }
    Some(parent)
}

/// Writes `value` at `path`: the parent must exist; an index past a list's end appends.
fn assign(item: &mut Item, path: &Path, value: AttributeValue) -> Result<()> {
    let invalid = invalid_path;
    let (last, parents) = path.0.split_last().expect("paths are never empty");
    if parents.is_empty() {
        let PathElement::Name(top) = last else { return Err(invalid()) };
        item.insert(top.clone(), value);
        return Ok(());
    }
    match (last, parent_mut(item, parents).ok_or_else(invalid)?) {
        (PathElement::Name(name), AttributeValue::M(map)) => {
            map.insert(name.clone(), value);
        }
        (PathElement::Index(index), AttributeValue::L(list)) if *index < list.len() => list[*index] = value,
        (PathElement::Index(_), AttributeValue::L(list)) => list.push(value),
        _ => return Err(invalid()),
    }
    Ok(())
}

/// Removes what `path` names, if anything; later list elements move down. False when the
/// path is invalid: its parent is missing, or is not a map (for a name) or a list (for an
/// index). A missing map key or an index past a list's end is valid and removes nothing.
fn remove(item: &mut Item, path: &Path) -> bool {
    let (last, parents) = path.0.split_last().expect("paths are never empty");
    if parents.is_empty() {
        if let PathElement::Name(top) = last {
            item.remove(top);
        }
        return true;
    }
    match (last, parent_mut(item, parents)) {
        (PathElement::Name(name), Some(AttributeValue::M(map))) => {
            map.remove(name);
            true
        }
        (PathElement::Index(index), Some(AttributeValue::L(list))) => {
            if *index < list.len() {
                list.remove(*index);
            }
            true
        }
        _ => false,
    }
}

/// ADD: a number to a number, or a set's elements to a set of the same type.
fn add(existing: &AttributeValue, value: &AttributeValue) -> Result<AttributeValue> {
    match (existing, value) {
        (AttributeValue::N(left), AttributeValue::N(right)) => Ok(AttributeValue::N(left.checked_add(right)?)),
        _ => combine_sets(existing, value, true).ok_or_else(wrong_type),
    }
}

/// DELETE: a set without `value`'s elements, or None when nothing is left (DynamoDB removes
/// an attribute whose set becomes empty).
fn without(existing: &AttributeValue, value: &AttributeValue) -> Result<Option<AttributeValue>> {
    let rest = combine_sets(existing, value, false).ok_or_else(wrong_type)?;
    let empty = matches!(&rest, AttributeValue::Ss(set) if set.is_empty())
        || matches!(&rest, AttributeValue::Ns(set) if set.is_empty())
        || matches!(&rest, AttributeValue::Bs(set) if set.is_empty());
    Ok((!empty).then_some(rest))
}

/// The union (or difference) of two sets of the same type; None for anything else.
fn combine_sets(left: &AttributeValue, right: &AttributeValue, union: bool) -> Option<AttributeValue> {
    fn combine<T: Ord + Clone>(left: &BTreeSet<T>, right: &BTreeSet<T>, union: bool) -> BTreeSet<T> {
        if union {
            left.union(right).cloned().collect()
        } else {
            left.difference(right).cloned().collect()
        }
    }
    Some(match (left, right) {
        (AttributeValue::Ss(left), AttributeValue::Ss(right)) => AttributeValue::Ss(combine(left, right, union)),
        (AttributeValue::Ns(left), AttributeValue::Ns(right)) => AttributeValue::Ns(combine(left, right, union)),
        (AttributeValue::Bs(left), AttributeValue::Bs(right)) => AttributeValue::Bs(combine(left, right, union)),
        _ => return None,
    })
}
