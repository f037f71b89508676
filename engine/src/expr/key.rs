//! KeyConditionExpression: a Query's condition on the primary key. It is parsed with the
//! condition grammar and then held to DynamoDB's narrower rules: equality on the partition
//! key, AND, and at most one of `= < <= > >=`, BETWEEN or `begins_with` on the sort key.

use super::{Comparator, Condition, ExprError, Operand, Path, PathElement};
use crate::key::{KeySchema, KeyType};
use crate::value::AttributeValue;

/// A Query's condition on the sort key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SortCondition {
    Eq(AttributeValue),
    Lt(AttributeValue),
    Le(AttributeValue),
    Gt(AttributeValue),
    Ge(AttributeValue),
    Between(AttributeValue, AttributeValue),
    BeginsWith(AttributeValue),
}

/// What a KeyConditionExpression selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyCondition {
    pub partition_key: AttributeValue,
    pub sort: Option<SortCondition>,
}

/// Holds a parsed condition to the key-condition rules of `schema`.
/// `kind` names the parameter in errors (the expression, or the legacy `KeyConditions`).
pub(crate) fn key_condition(
    condition: Condition,
    schema: &KeySchema,
    kind: &'static str,
) -> Result<KeyCondition, ExprError> {
    let mut leaves = Vec::new();
    flatten(condition, &mut leaves, kind)?;
    let mut partition_key = None;
    let mut sort = None;
    for leaf in leaves {
        let (name, found) = leaf_on_key(leaf, kind)?;
        if name == schema.partition.name {
            let Found::Compare(Comparator::Eq, value) = found else {
                return Err(ExprError::whole(kind, format!("the partition key {name} takes only the = operator")));
            };
            check_type(&value, schema.partition.key_type, kind)?;
            if partition_key.replace(value).is_some() {
                return Err(ExprError::whole(kind, "KeyConditionExpressions must only contain one condition per key"));
            }
        } else if let Some(sort_key) = schema.sort.as_ref().filter(|sort_key| sort_key.name == name) {
            let condition = match found {
                Found::Compare(Comparator::Ne, _) => {
                    return Err(ExprError::whole(kind, "unsupported operator on KeyConditionExpression: operator: <>"))
                }
                Found::Compare(comparator, value) => {
                    check_type(&value, sort_key.key_type, kind)?;
                    match comparator {
                        Comparator::Eq => SortCondition::Eq(value),
                        Comparator::Lt => SortCondition::Lt(value),
                        Comparator::Le => SortCondition::Le(value),
                        Comparator::Gt => SortCondition::Gt(value),
                        Comparator::Ge => SortCondition::Ge(value),
                        Comparator::Ne => unreachable!("refused above"),
                    }
                }
                Found::Between(low, high) => {
                    check_type(&low, sort_key.key_type, kind)?;
                    check_type(&high, sort_key.key_type, kind)?;
                    SortCondition::Between(low, high)
                }
                Found::BeginsWith(prefix) => {
                    if sort_key.key_type == KeyType::N {
                        return Err(ExprError::whole(
                            kind,
                            "incorrect operand type for operator or function; operator or function: begins_with, operand type: N",
                        ));
                    }
                    check_type(&prefix, sort_key.key_type, kind)?;
                    SortCondition::BeginsWith(prefix)
                }
            };
            if sort.replace(condition).is_some() {
                return Err(ExprError::whole(kind, "KeyConditionExpressions must only contain one condition per key"));
            }
        } else {
            return Err(ExprError::whole(
                kind,
                format!("query key condition not supported: {name} is not a key attribute"),
            ));
        }
    }
    let partition_key = partition_key.ok_or_else(|| {
        ExprError::whole(kind, format!("query condition missed key schema element: {}", schema.partition.name))
    })?;
    Ok(KeyCondition { partition_key, sort })
}

/// The conditions joined by AND; anything else is refused.
fn flatten(condition: Condition, leaves: &mut Vec<Condition>, kind: &'static str) -> Result<(), ExprError> {
    match condition {
        Condition::And(left, right) => {
            flatten(*left, leaves, kind)?;
            flatten(*right, leaves, kind)
        }
        Condition::Or(..) => Err(ExprError::whole(kind, format!("invalid operator used in {kind}: OR"))),
        Condition::Not(_) => Err(ExprError::whole(kind, format!("invalid operator used in {kind}: NOT"))),
        leaf => {
            leaves.push(leaf);
            Ok(())
        }
    }
}

/// One key condition: an attribute compared with a value.
enum Found {
    Compare(Comparator, AttributeValue),
    Between(AttributeValue, AttributeValue),
    BeginsWith(AttributeValue),
}

/// The key attribute a leaf constrains and how.
fn leaf_on_key(leaf: Condition, kind: &'static str) -> Result<(String, Found), ExprError> {
    let unsupported = |what: &str| ExprError::whole(kind, format!("invalid operator used in {kind}: {what}"));
    match leaf {
        Condition::Compare(Operand::Path(path), comparator, Operand::Value(value)) => {
            Ok((top_name(path, kind)?, Found::Compare(comparator, value)))
        }
        Condition::Compare(Operand::Value(value), comparator, Operand::Path(path)) => {
            let flipped = match comparator {
                Comparator::Lt => Comparator::Gt,
                Comparator::Le => Comparator::Ge,
                Comparator::Gt => Comparator::Lt,
                Comparator::Ge => Comparator::Le,
                same => same,
            };
            Ok((top_name(path, kind)?, Found::Compare(flipped, value)))
        }
        Condition::Between(Operand::Path(path), Operand::Value(low), Operand::Value(high)) => {
            Ok((top_name(path, kind)?, Found::Between(low, high)))
        }
        Condition::BeginsWith(Operand::Path(path), Operand::Value(prefix)) => {
            Ok((top_name(path, kind)?, Found::BeginsWith(prefix)))
        }
        Condition::Compare(..) | Condition::Between(..) | Condition::BeginsWith(..) => {
            Err(ExprError::whole(kind, "a key condition compares a key attribute with a value"))
        }
        Condition::In(..) => Err(unsupported("IN")),
        Condition::Exists(_) => Err(unsupported("attribute_exists")),
        Condition::NotExists(_) => Err(unsupported("attribute_not_exists")),
        Condition::Type(..) => Err(unsupported("attribute_type")),
        Condition::Contains(..) => Err(unsupported("contains")),
        Condition::And(..) | Condition::Or(..) | Condition::Not(_) => unreachable!("flattened"),
    }
}

fn top_name(path: Path, kind: &'static str) -> Result<String, ExprError> {
    match <[PathElement; 1]>::try_from(path.0) {
        Ok([PathElement::Name(name)]) => Ok(name),
        _ => Err(ExprError::whole(kind, "KeyConditionExpressions cannot have conditions on nested attributes")),
    }
}

fn check_type(value: &AttributeValue, key_type: KeyType, kind: &'static str) -> Result<(), ExprError> {
    if value.type_name() == key_type.name() {
        Ok(())
    } else {
        Err(ExprError::whole(
            kind,
            format!(
                "one or more parameter values were invalid: condition parameter type {} does not match schema type {}",
                value.type_name(),
                key_type.name()
            ),
        ))
    }
}
