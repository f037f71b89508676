//! DynamoDB's JSON form of items (`{"id": {"S": "a"}, "n": {"N": "1"}}`): numbers as strings,
//! binaries as base64; and the legacy condition and update parameters. Used by the command line
//! and the HTTP endpoint.

use base64::Engine as _;
use serde_json::{Map, Value};
use tessera_engine::expr::legacy::{AttributeAction, ComparisonOperator, ExpectedAttribute, LegacyCondition};
use tessera_engine::{empty_set_message, AttributeValue, Item, Number};

use crate::messages;

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Why DynamoDB JSON was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonError {
    /// A member of the wrong JSON type for DynamoDB's shapes (`{"N": 3}`, a B that is not
    /// base64): DynamoDB's SerializationException.
    Serialization(String),
    /// JSON of the right shape holding a value DynamoDB's rules refuse: ValidationException.
    Invalid(String),
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsonError::Serialization(message) | JsonError::Invalid(message) => out.write_str(message),
        }
    }
}

impl std::error::Error for JsonError {}

impl JsonError {
    /// The error of a value inside attribute `path`. DynamoDB's serialization messages name
    /// no attribute, so they are kept as they are.
    fn within(self, path: &str) -> JsonError {
        match self {
            JsonError::Serialization(message) => JsonError::Serialization(message),
            JsonError::Invalid(message) => JsonError::Invalid(format!("attribute {path}: {message}")),
        }
    }
}

impl From<JsonError> for String {
    fn from(error: JsonError) -> String {
        error.to_string()
    }
}

impl From<String> for JsonError {
    fn from(message: String) -> JsonError {
        JsonError::Invalid(message)
    }
}

impl From<&str> for JsonError {
    fn from(message: &str) -> JsonError {
        JsonError::Invalid(message.to_string())
    }
}

/// An item from its DynamoDB JSON; the error names the attribute that was wrong.
pub fn item_from_json(json: &Value) -> Result<Item, JsonError> {
    let item = map_from_json(json)?;
    item.iter().try_for_each(|(name, value)| checked(value, name))?;
    Ok(item)
}

fn map_from_json(json: &Value) -> Result<Item, JsonError> {
    let object = json.as_object().ok_or("an item must be a JSON object of attribute names to values")?;
    object.iter().map(|(name, value)| Ok((name.clone(), parse_value(value, name)?))).collect()
}

/// The data model's rules the JSON form cannot break by itself (nesting depth): what the
/// engine's decoders refuse is refused here too, so every value taken from a client can be
/// logged and replayed.
fn checked(value: &AttributeValue, path: &str) -> Result<(), JsonError> {
    value.validate(path).map_err(|error| {
        JsonError::Invalid(match error {
            tessera_engine::Error::Validation(message) => message,
            other => other.to_string(),
        })
    })
}

/// An item from DynamoDB JSON text.
pub fn item_from_text(text: &str) -> Result<Item, JsonError> {
    let json: Value =
        serde_json::from_str(text).map_err(|error| JsonError::Serialization(format!("not valid JSON: {error}")))?;
    item_from_json(&json)
}

/// One attribute value from its DynamoDB JSON (`{"S": "a"}`); `path` names it in errors.
pub fn value_from_json(json: &Value, path: &str) -> Result<AttributeValue, JsonError> {
    let value = parse_value(json, path)?;
    checked(&value, path)?;
    Ok(value)
}

/// A string inside a value's JSON. A JSON number where a string belongs is DynamoDB's
/// SerializationException, as is any other JSON type there.
fn string_member<'j>(json: &'j Value, path: &str, kind: &str, what: &str) -> Result<&'j str, JsonError> {
    match json {
        Value::String(text) => Ok(text),
        Value::Number(number) => Err(JsonError::Serialization(messages::number_not_string(number))),
        _ => Err(JsonError::Serialization(format!("attribute {path}: {kind} takes {what}"))),
    }
}

fn parse_value(json: &Value, path: &str) -> Result<AttributeValue, JsonError> {
    let object = json.as_object().filter(|object| object.len() == 1).ok_or_else(|| {
        format!("attribute {path} must be an object with exactly one type key, such as {{\"S\": \"text\"}}")
    })?;
    let (kind, inner) = object.iter().next().expect("one entry");
    let string = |json, what: &str| string_member(json, path, kind, what);
    let text = |what: &str| string(inner, what);
    let list = || inner.as_array().ok_or_else(|| format!("attribute {path}: {kind} takes a JSON array"));
    let number = |text: &str| Number::parse(text).map_err(|error| format!("attribute {path}: {error}"));
    // A B that is not a string, or not base64, is a SerializationException too.
    let binary = |json: &Value| -> Result<Vec<u8>, JsonError> {
        let Value::String(text) = json else {
            return Err(JsonError::Serialization(messages::BINARY_NOT_STRING.into()));
        };
        if text.len() % 4 != 0 {
            return Err(JsonError::Serialization(messages::base64_length(text.len())));
        }
        BASE64.decode(text).map_err(|error| JsonError::Serialization(messages::base64_invalid(error)))
    };
    Ok(match kind.as_str() {
        "S" => AttributeValue::S(text("a string")?.to_string()),
        "N" => AttributeValue::N(number(text("a number in a string")?)?),
        "B" => AttributeValue::B(binary(inner)?),
        "BOOL" => {
            AttributeValue::Bool(inner.as_bool().ok_or_else(|| format!("attribute {path}: BOOL takes true or false"))?)
        }
        "NULL" => match inner {
            Value::Bool(true) => AttributeValue::Null,
            _ => return Err(format!("attribute {path}: NULL takes true").into()),
        },
        "M" => AttributeValue::M(map_from_json(inner).map_err(|error| error.within(path))?),
        "L" => AttributeValue::L(
            list()?
                .iter()
                .enumerate()
                .map(|(index, value)| parse_value(value, &format!("{path}[{index}]")))
                .collect::<Result<_, _>>()?,
        ),
        "SS" | "NS" | "BS" => {
            let members = list()?;
            if members.is_empty() {
                return Err(format!("attribute {path}: {}", empty_set_message(kind)).into());
            }
            let count = members.len();
            let value = match kind.as_str() {
                "SS" => AttributeValue::Ss(
                    members.iter().map(|json| Ok(string(json, "an array of strings")?.to_string())).collect::<Result<
                        _,
                        JsonError,
                    >>(
                    )?,
                ),
                "NS" => AttributeValue::Ns(
                    members
                        .iter()
                        .map(|json| Ok(number(string(json, "an array of strings")?)?))
                        .collect::<Result<_, JsonError>>()?,
                ),
                _ => AttributeValue::Bs(members.iter().map(binary).collect::<Result<_, _>>()?),
            };
            let distinct = match &value {
                AttributeValue::Ss(set) => set.len(),
                AttributeValue::Ns(set) => set.len(),
                AttributeValue::Bs(set) => set.len(),
                _ => count,
            };
            if distinct != count {
                return Err(format!("attribute {path}: the {kind} set holds duplicate values").into());
            }
            value
        }
        other => return Err(format!("attribute {path} has unknown type {other:?}").into()),
    })
}

/// The entries of a JSON object, each parsed by `parse` (errors name the entry).
fn entries<T>(
    json: &Value,
    what: &str,
    parse: impl Fn(&str, &Value) -> Result<T, JsonError>,
) -> Result<Vec<(String, T)>, JsonError> {
    let object = json.as_object().ok_or_else(|| format!("{what} must be a JSON object of attribute names"))?;
    object.iter().map(|(name, entry)| Ok((name.clone(), parse(name, entry)?))).collect()
}

fn operator_from_json(json: &Value, name: &str) -> Result<ComparisonOperator, JsonError> {
    let text = json.as_str().ok_or_else(|| format!("{name}: ComparisonOperator must be a string"))?;
    ComparisonOperator::parse(text).ok_or_else(|| format!("{name}: unknown ComparisonOperator {text:?}").into())
}

fn values_from_json(json: &Value, name: &str) -> Result<Vec<AttributeValue>, JsonError> {
    match json {
        Value::Null => Ok(Vec::new()),
        Value::Array(values) => values.iter().map(|value| value_from_json(value, name)).collect(),
        _ => Err(format!("{name}: AttributeValueList must be an array").into()),
    }
}

/// `QueryFilter`, `ScanFilter` or `KeyConditions`: `{"a": {"ComparisonOperator": "EQ",
/// "AttributeValueList": [...]}}`.
pub fn legacy_conditions_from_json(json: &Value) -> Result<Vec<(String, LegacyCondition)>, JsonError> {
    entries(json, "a legacy condition map", |name, entry| {
        Ok(LegacyCondition {
            operator: operator_from_json(&entry["ComparisonOperator"], name)?,
            values: values_from_json(&entry["AttributeValueList"], name)?,
        })
    })
}

/// `Expected`: `{"a": {"Value": V, "Exists": B}}` or the ComparisonOperator form.
pub fn expected_from_json(json: &Value) -> Result<Vec<(String, ExpectedAttribute)>, JsonError> {
    entries(json, "Expected", |name, entry| {
        Ok(ExpectedAttribute {
            value: entry.get("Value").map(|value| value_from_json(value, name)).transpose()?,
            exists: entry
                .get("Exists")
                .map(|exists| {
                    exists.as_bool().ok_or_else(|| JsonError::from(format!("{name}: Exists must be true or false")))
                })
                .transpose()?,
            operator: entry.get("ComparisonOperator").map(|operator| operator_from_json(operator, name)).transpose()?,
            values: values_from_json(&entry["AttributeValueList"], name)?,
        })
    })
}

/// `AttributeUpdates`: `{"a": {"Action": "PUT" | "DELETE" | "ADD", "Value": V}}` (PUT by default).
pub fn attribute_updates_from_json(json: &Value) -> Result<Vec<(String, AttributeAction)>, JsonError> {
    entries(json, "AttributeUpdates", |name, entry| {
        let value = entry.get("Value").map(|value| value_from_json(value, name)).transpose()?;
        let missing = || format!("{name}: this Action needs a Value");
        match entry.get("Action").map(|action| action.as_str().unwrap_or("?")).unwrap_or("PUT") {
            "PUT" => Ok(AttributeAction::Put(value.ok_or_else(missing)?)),
            "DELETE" => Ok(AttributeAction::Delete(value)),
            "ADD" => Ok(AttributeAction::Add(value.ok_or_else(missing)?)),
            other => Err(format!("{name}: unknown Action {other:?}").into()),
        }
    })
}

/// The DynamoDB JSON of an item.
pub fn item_to_json(item: &Item) -> Value {
    Value::Object(item.iter().map(|(name, value)| (name.clone(), value_to_json(value))).collect::<Map<_, _>>())
}

/// The DynamoDB JSON of one value.
pub fn value_to_json(value: &AttributeValue) -> Value {
    let (kind, inner) = match value {
        AttributeValue::S(text) => ("S", Value::String(text.clone())),
        AttributeValue::N(number) => ("N", Value::String(number.to_string())),
        AttributeValue::B(bytes) => ("B", Value::String(BASE64.encode(bytes))),
        AttributeValue::Bool(flag) => ("BOOL", Value::Bool(*flag)),
        AttributeValue::Null => ("NULL", Value::Bool(true)),
        AttributeValue::M(map) => ("M", item_to_json(map)),
        AttributeValue::L(list) => ("L", Value::Array(list.iter().map(value_to_json).collect())),
        AttributeValue::Ss(set) => ("SS", Value::Array(set.iter().cloned().map(Value::String).collect())),
        AttributeValue::Ns(set) => {
            ("NS", Value::Array(set.iter().map(|number| Value::String(number.to_string())).collect()))
        }
        AttributeValue::Bs(set) => {
            ("BS", Value::Array(set.iter().map(|bytes| Value::String(BASE64.encode(bytes))).collect()))
        }
    };
    Value::Object(Map::from_iter([(kind.to_string(), inner)]))
}

/// DynamoDB's JSON form of a `ConsumedCapacity`: `TableName` and `CapacityUnits`, and with
/// INDEXES the table's own share as `Table`.
pub fn consumed_capacity_to_json(consumed: &tessera_wire::ConsumedCapacity) -> Value {
    let mut object = Map::new();
    object.insert("TableName".into(), Value::from(consumed.table.as_str()));
    object.insert("CapacityUnits".into(), Value::from(consumed.capacity_units()));
    if let Some(units) = consumed.table_units {
        object.insert("Table".into(), serde_json::json!({ "CapacityUnits": units }));
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips() {
        let text = r#"{"s":{"S":"a"},"n":{"N":"-1.50"},"b":{"B":"AAEC"},"t":{"BOOL":true},"z":{"NULL":true},
            "m":{"M":{"x":{"L":[{"N":"1"},{"S":"y"}]}}},"ss":{"SS":["a","b"]},"ns":{"NS":["1","2"]},"bs":{"BS":["AA=="]}}"#;
        let item = item_from_text(text).unwrap();
        assert_eq!(item["n"], AttributeValue::N(Number::parse("-1.5").unwrap()));
        assert_eq!(item["b"], AttributeValue::B(vec![0, 1, 2]));
        assert_eq!(item_from_json(&item_to_json(&item)).unwrap(), item);
    }

    #[test]
    fn errors_name_the_attribute() {
        for (text, expected) in [
            (r#"{"a":{"N":"x"}}"#, "attribute a"),
            (r#"{"a":{"M":{"b":{"Q":"1"}}}}"#, "attribute b has unknown type"),
            (r#"{"a":{"SS":["x","x"]}}"#, "duplicate"),
            (r#"{"a":{"S":"x","N":"1"}}"#, "exactly one type key"),
            (r#"[1]"#, "JSON object"),
            (r#"{"a":"#, "not valid JSON"),
        ] {
            let error = item_from_text(text).unwrap_err();
            assert!(error.to_string().contains(expected), "{text}: {error}");
        }
    }
}
