//! DynamoDB's JSON form of items (`{"id": {"S": "a"}, "n": {"N": "1"}}`): numbers as strings,
//! binaries as base64; and the legacy condition and update parameters. Used by the command line
//! and the HTTP endpoint.

use base64::Engine as _;
use serde_json::{Map, Value};
use tessera_engine::expr::legacy::{AttributeAction, ComparisonOperator, ExpectedAttribute, LegacyCondition};
use tessera_engine::{empty_set_message, AttributeValue, Item, Number};

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// An item from its DynamoDB JSON; the error names the attribute that was wrong.
pub fn item_from_json(json: &Value) -> Result<Item, String> {
    let item = map_from_json(json)?;
    item.iter().try_for_each(|(name, value)| checked(value, name))?;
    Ok(item)
}

fn map_from_json(json: &Value) -> Result<Item, String> {
    let object = json.as_object().ok_or("an item must be a JSON object of attribute names to values")?;
    object.iter().map(|(name, value)| Ok((name.clone(), parse_value(value, name)?))).collect()
}

/// The data model's rules the JSON form cannot break by itself (nesting depth): what the
/// engine's decoders refuse is refused here too, so every value taken from a client can be
/// logged and replayed.
fn checked(value: &AttributeValue, path: &str) -> Result<(), String> {
    value.validate(path).map_err(|error| match error {
        tessera_engine::Error::Validation(message) => message,
        other => other.to_string(),
    })
}

/// An item from DynamoDB JSON text.
pub fn item_from_text(text: &str) -> Result<Item, String> {
    let json: Value = serde_json::from_str(text).map_err(|error| format!("not valid JSON: {error}"))?;
    item_from_json(&json)
}

/// One attribute value from its DynamoDB JSON (`{"S": "a"}`); `path` names it in errors.
pub fn value_from_json(json: &Value, path: &str) -> Result<AttributeValue, String> {
    let value = parse_value(json, path)?;
    checked(&value, path)?;
    Ok(value)
}

fn parse_value(json: &Value, path: &str) -> Result<AttributeValue, String> {
    let object = json.as_object().filter(|object| object.len() == 1).ok_or_else(|| {
        format!("attribute {path} must be an object with exactly one type key, such as {{\"S\": \"text\"}}")
    })?;
    let (kind, inner) = object.iter().next().expect("one entry");
    let text = |what: &str| inner.as_str().ok_or_else(|| format!("attribute {path}: {kind} takes {what}"));
    let list = || inner.as_array().ok_or_else(|| format!("attribute {path}: {kind} takes a JSON array"));
    let number = |text: &str| Number::parse(text).map_err(|error| format!("attribute {path}: {error}"));
    let binary =
        |text: &str| BASE64.decode(text).map_err(|error| format!("attribute {path}: B is not valid base64: {error}"));
    Ok(match kind.as_str() {
        "S" => AttributeValue::S(text("a string")?.to_string()),
        "N" => AttributeValue::N(number(text("a number in a string")?)?),
        "B" => AttributeValue::B(binary(text("base64 in a string")?)?),
        "BOOL" => {
            AttributeValue::Bool(inner.as_bool().ok_or_else(|| format!("attribute {path}: BOOL takes true or false"))?)
        }
        "NULL" => match inner {
            Value::Bool(true) => AttributeValue::Null,
            _ => return Err(format!("attribute {path}: NULL takes true")),
        },
        "M" => AttributeValue::M(map_from_json(inner).map_err(|error| format!("attribute {path}: {error}"))?),
        "L" => AttributeValue::L(
            list()?
                .iter()
                .enumerate()
                .map(|(index, value)| parse_value(value, &format!("{path}[{index}]")))
                .collect::<Result<_, _>>()?,
        ),
        "SS" | "NS" | "BS" => {
            let texts = list()?
                .iter()
                .map(|value| {
                    value.as_str().ok_or_else(|| format!("attribute {path}: {kind} takes an array of strings"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if texts.is_empty() {
                return Err(format!("attribute {path}: {}", empty_set_message(kind)));
            }
            let count = texts.len();
            let value = match kind.as_str() {
                "SS" => AttributeValue::Ss(texts.iter().map(|text| text.to_string()).collect()),
                "NS" => AttributeValue::Ns(texts.iter().map(|text| number(text)).collect::<Result<_, _>>()?),
                _ => AttributeValue::Bs(texts.iter().map(|text| binary(text)).collect::<Result<_, _>>()?),
            };
            let distinct = match &value {
                AttributeValue::Ss(set) => set.len(),
                AttributeValue::Ns(set) => set.len(),
                AttributeValue::Bs(set) => set.len(),
                _ => count,
            };
            if distinct != count {
                return Err(format!("attribute {path}: the {kind} set holds duplicate values"));
            }
            value
        }
        other => return Err(format!("attribute {path} has unknown type {other:?}")),
    })
}

/// The entries of a JSON object, each parsed by `parse` (errors name the entry).
fn entries<T>(
    json: &Value,
    what: &str,
    parse: impl Fn(&str, &Value) -> Result<T, String>,
) -> Result<Vec<(String, T)>, String> {
    let object = json.as_object().ok_or_else(|| format!("{what} must be a JSON object of attribute names"))?;
    object.iter().map(|(name, entry)| Ok((name.clone(), parse(name, entry)?))).collect()
}

fn operator_from_json(json: &Value, name: &str) -> Result<ComparisonOperator, String> {
    let text = json.as_str().ok_or_else(|| format!("{name}: ComparisonOperator must be a string"))?;
    ComparisonOperator::parse(text).ok_or_else(|| format!("{name}: unknown ComparisonOperator {text:?}"))
}

fn values_from_json(json: &Value, name: &str) -> Result<Vec<AttributeValue>, String> {
    match json {
        Value::Null => Ok(Vec::new()),
        Value::Array(values) => values.iter().map(|value| value_from_json(value, name)).collect(),
        _ => Err(format!("{name}: AttributeValueList must be an array")),
    }
}

/// `QueryFilter`, `ScanFilter` or `KeyConditions`: `{"a": {"ComparisonOperator": "EQ",
/// "AttributeValueList": [...]}}`.
pub fn legacy_conditions_from_json(json: &Value) -> Result<Vec<(String, LegacyCondition)>, String> {
    entries(json, "a legacy condition map", |name, entry| {
        Ok(LegacyCondition {
            operator: operator_from_json(&entry["ComparisonOperator"], name)?,
            values: values_from_json(&entry["AttributeValueList"], name)?,
        })
    })
}

/// `Expected`: `{"a": {"Value": V, "Exists": B}}` or the ComparisonOperator form.
pub fn expected_from_json(json: &Value) -> Result<Vec<(String, ExpectedAttribute)>, String> {
    entries(json, "Expected", |name, entry| {
        Ok(ExpectedAttribute {
            value: entry.get("Value").map(|value| value_from_json(value, name)).transpose()?,
            exists: entry
                .get("Exists")
                .map(|exists| exists.as_bool().ok_or_else(|| format!("{name}: Exists must be true or false")))
                .transpose()?,
            operator: entry.get("ComparisonOperator").map(|operator| operator_from_json(operator, name)).transpose()?,
            values: values_from_json(&entry["AttributeValueList"], name)?,
        })
    })
}

/// `AttributeUpdates`: `{"a": {"Action": "PUT" | "DELETE" | "ADD", "Value": V}}` (PUT by default).
pub fn attribute_updates_from_json(json: &Value) -> Result<Vec<(String, AttributeAction)>, String> {
    entries(json, "AttributeUpdates", |name, entry| {
        let value = entry.get("Value").map(|value| value_from_json(value, name)).transpose()?;
        let missing = || format!("{name}: this Action needs a Value");
        match entry.get("Action").map(|action| action.as_str().unwrap_or("?")).unwrap_or("PUT") {
            "PUT" => Ok(AttributeAction::Put(value.ok_or_else(missing)?)),
            "DELETE" => Ok(AttributeAction::Delete(value)),
            "ADD" => Ok(AttributeAction::Add(value.ok_or_else(missing)?)),
            other => Err(format!("{name}: unknown Action {other:?}")),
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
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
