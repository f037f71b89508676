//! The parameters older SDKs still send instead of expressions (`Expected`, `QueryFilter`,
//! `ScanFilter`, `KeyConditions`, `AttributeUpdates`, `AttributesToGet`, with
//! `ConditionalOperator`), translated into the same AST the expressions parse into, so one
//! evaluator serves both.

use super::key::{key_condition, KeyCondition};
use super::update::{SetOperand, SetValue, Update};
use super::{Comparator, Condition, ExprError, Operand, Path, PathElement, IN_OPERANDS_MAX};
use crate::key::KeySchema;
use crate::value::AttributeValue;

/// A legacy `ComparisonOperator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComparisonOperator {
    Eq,
    Ne,
    Le,
    Lt,
    Ge,
    Gt,
    NotNull,
    Null,
    Contains,
    NotContains,
    BeginsWith,
    In,
    Between,
}

impl ComparisonOperator {
    /// The operator from its DynamoDB name (`EQ`, `NOT_NULL`, ...).
    pub fn parse(name: &str) -> Option<ComparisonOperator> {
        Some(match name {
            "EQ" => ComparisonOperator::Eq,
            "NE" => ComparisonOperator::Ne,
            "LE" => ComparisonOperator::Le,
            "LT" => ComparisonOperator::Lt,
            "GE" => ComparisonOperator::Ge,
            "GT" => ComparisonOperator::Gt,
            "NOT_NULL" => ComparisonOperator::NotNull,
            "NULL" => ComparisonOperator::Null,
            "CONTAINS" => ComparisonOperator::Contains,
            "NOT_CONTAINS" => ComparisonOperator::NotContains,
            "BEGINS_WITH" => ComparisonOperator::BeginsWith,
            "IN" => ComparisonOperator::In,
            "BETWEEN" => ComparisonOperator::Between,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            ComparisonOperator::Eq => "EQ",
            ComparisonOperator::Ne => "NE",
            ComparisonOperator::Le => "LE",
            ComparisonOperator::Lt => "LT",
            ComparisonOperator::Ge => "GE",
            ComparisonOperator::Gt => "GT",
            ComparisonOperator::NotNull => "NOT_NULL",
            ComparisonOperator::Null => "NULL",
            ComparisonOperator::Contains => "CONTAINS",
            ComparisonOperator::NotContains => "NOT_CONTAINS",
            ComparisonOperator::BeginsWith => "BEGINS_WITH",
            ComparisonOperator::In => "IN",
            ComparisonOperator::Between => "BETWEEN",
        }
    }
}

/// One attribute's entry in `QueryFilter`, `ScanFilter` or `KeyConditions`.
#[derive(Clone, Debug, PartialEq)]
pub struct LegacyCondition {
    pub operator: ComparisonOperator,
    pub values: Vec<AttributeValue>,
}

/// One attribute's entry in `Expected`: the old form (`Value`, `Exists`) or the newer one
/// (`ComparisonOperator`, `AttributeValueList`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExpectedAttribute {
    pub value: Option<AttributeValue>,
    pub exists: Option<bool>,
    pub operator: Option<ComparisonOperator>,
    pub values: Vec<AttributeValue>,
}

/// One attribute's entry in `AttributeUpdates`.
#[derive(Clone, Debug, PartialEq)]
pub enum AttributeAction {
    Put(AttributeValue),
    /// Without a value the attribute is removed; with a set, those elements are.
    Delete(Option<AttributeValue>),
    Add(AttributeValue),
}

fn invalid(reason: impl std::fmt::Display) -> ExprError {
    ExprError { expression: "", position: None, reason: format!("One or more parameter values were invalid: {reason}") }
}

fn top(name: &str) -> Path {
    Path(vec![PathElement::Name(name.to_string())])
}

/// `Expected` with `ConditionalOperator` (`or` for OR), as a condition (None when empty).
pub fn expected(entries: &[(String, ExpectedAttribute)], or: bool) -> Result<Option<Condition>, ExprError> {
    let conditions = entries
        .iter()
        .map(|(name, entry)| match (entry.operator, entry.exists, &entry.value) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                Err(invalid(format!("ComparisonOperator cannot be used with Exists or Value for attribute {name}")))
            }
            (Some(operator), None, None) => compare(name, &LegacyCondition { operator, values: entry.values.clone() }),
            (None, Some(false), Some(_)) => {
                Err(invalid(format!("Value cannot be used when Exists is false for attribute {name}")))
            }
            (None, Some(false), None) => Ok(Condition::NotExists(top(name))),
            (None, _, Some(value)) => {
                compare(name, &LegacyCondition { operator: ComparisonOperator::Eq, values: vec![value.clone()] })
            }
            (None, _, None) => {
                Err(invalid(format!("Exists is set to TRUE for attribute {name}, but no value is provided")))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(join(conditions, or))
}

/// `QueryFilter` or `ScanFilter` with `ConditionalOperator`, as a condition (None when empty).
pub fn filter(entries: &[(String, LegacyCondition)], or: bool) -> Result<Option<Condition>, ExprError> {
    let conditions = entries.iter().map(|(name, condition)| compare(name, condition)).collect::<Result<Vec<_>, _>>()?;
    Ok(join(conditions, or))
}

/// `KeyConditions`, held to the same rules as a KeyConditionExpression.
pub fn key_conditions(entries: &[(String, LegacyCondition)], schema: &KeySchema) -> Result<KeyCondition, ExprError> {
    let condition = filter(entries, false)?
        .ok_or_else(|| invalid(format!("Query condition missed key schema element: {}", schema.partition.name)))?;
    key_condition(condition, schema, "KeyConditions")
}

/// `AttributesToGet` as projection paths.
pub fn attributes_to_get(names: &[String]) -> Result<Vec<Path>, ExprError> {
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(invalid(format!("Duplicate value in attribute name: {name}")));
        }
    }
    Ok(names.iter().map(|name| top(name)).collect())
}

/// `AttributeUpdates` as an update. ADD of a list appends to the list (or starts one).
pub fn attribute_updates(entries: &[(String, AttributeAction)]) -> Result<Update, ExprError> {
    let mut update = Update::default();
    for (name, action) in entries {
        let path = top(name);
        match action {
            AttributeAction::Put(value) => update.set.push((path, SetValue::Operand(SetOperand::Value(value.clone())))),
            AttributeAction::Delete(None) => update.remove.push(path),
            AttributeAction::Delete(Some(value)) if is_set(value) => update.delete.push((path, value.clone())),
            AttributeAction::Delete(Some(value)) => {
                return Err(invalid(format!(
                    "DELETE action with value is not supported for the type {}",
                    value.type_name()
                )))
            }
            AttributeAction::Add(AttributeValue::L(list)) => {
                let existing =
                    SetOperand::IfNotExists(path.clone(), Box::new(SetOperand::Value(AttributeValue::L(Vec::new()))));
                let appended = SetOperand::ListAppend(
                    Box::new(existing),
                    Box::new(SetOperand::Value(AttributeValue::L(list.clone()))),
                );
                update.set.push((path, SetValue::Operand(appended)));
            }
            AttributeAction::Add(value) if is_set(value) || matches!(value, AttributeValue::N(_)) => {
                update.add.push((path, value.clone()))
            }
            AttributeAction::Add(value) => {
                return Err(invalid(format!("ADD action is not supported for the type {}", value.type_name())))
            }
        }
    }
    Ok(update)
}

fn is_set(value: &AttributeValue) -> bool {
    matches!(value, AttributeValue::Ss(_) | AttributeValue::Ns(_) | AttributeValue::Bs(_))
}

fn join(conditions: Vec<Condition>, or: bool) -> Option<Condition> {
    let combine = |left: Condition, right: Condition| {
        if or {
            Condition::Or(Box::new(left), Box::new(right))
        } else {
            Condition::And(Box::new(left), Box::new(right))
        }
    };
    conditions.into_iter().reduce(combine)
}

/// One attribute's legacy comparison as a condition, with DynamoDB's argument checks.
fn compare(name: &str, condition: &LegacyCondition) -> Result<Condition, ExprError> {
    use ComparisonOperator as Op;
    let operator = condition.operator;
    let values = &condition.values;
    let wanted = match operator {
        Op::NotNull | Op::Null => Some(0),
        Op::Between => Some(2),
        Op::In => None,
        _ => Some(1),
    };
    let count_ok = match wanted {
        Some(count) => values.len() == count,
        None => (1..=IN_OPERANDS_MAX).contains(&values.len()),
    };
    if !count_ok {
        return Err(invalid(format!("Invalid number of argument(s) for the {} ComparisonOperator", operator.name())));
    }
    let scalar =
        |value: &AttributeValue| matches!(value, AttributeValue::S(_) | AttributeValue::N(_) | AttributeValue::B(_));
    let needs_scalar =
        matches!(operator, Op::Le | Op::Lt | Op::Ge | Op::Gt | Op::Contains | Op::NotContains | Op::In | Op::Between);
    for value in values {
        let fits = if operator == Op::BeginsWith {
            matches!(value, AttributeValue::S(_) | AttributeValue::B(_))
        } else {
            !needs_scalar || scalar(value)
        };
        if !fits {
            return Err(invalid(format!(
                "ComparisonOperator {} is not valid for {} AttributeValue type",
                operator.name(),
                value.type_name()
            )));
        }
    }
    // MESSAGES.md 3j/11a (dynalite validations/index.js:507,579; Alternator
    // test_expected.py:809-815 against DynamoDB).
    if values.windows(2).any(|pair| pair[0].type_name() != pair[1].type_name()) {
        return Err(invalid("AttributeValues inside AttributeValueList must be of same type".to_string()));
    }
    let path = || Operand::Path(top(name));
    let value = |i: usize| Operand::Value(values[i].clone());
    let comparison = |comparator| Condition::Compare(path(), comparator, value(0));
    Ok(match operator {
        Op::Eq => comparison(Comparator::Eq),
        Op::Ne => comparison(Comparator::Ne),
        Op::Le => comparison(Comparator::Le),
        Op::Lt => comparison(Comparator::Lt),
        Op::Ge => comparison(Comparator::Ge),
        Op::Gt => comparison(Comparator::Gt),
        Op::NotNull => Condition::Exists(top(name)),
        Op::Null => Condition::NotExists(top(name)),
        Op::Contains => Condition::Contains(path(), value(0)),
        // False for a missing attribute, as CONTAINS is (unlike NE): MESSAGES.md 11c
        // (Alternator test_expected.py:689-697, against DynamoDB).
        Op::NotContains => Condition::And(
            Box::new(Condition::Exists(top(name))),
            Box::new(Condition::Not(Box::new(Condition::Contains(path(), value(0))))),
        ),
        Op::BeginsWith => Condition::BeginsWith(path(), value(0)),
        Op::In => Condition::In(path(), values.iter().cloned().map(Operand::Value).collect()),
        Op::Between => Condition::Between(path(), value(0), value(1)),
    })
}
