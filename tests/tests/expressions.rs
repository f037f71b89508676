//! Runs the expression corpus (`tests/corpus/expressions.jsonl`): every case parses its
//! expression with its placeholders and checks the truth value, the projected item or the
//! error it must give. Also property tests of the evaluator.

use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::Value;
use tessera_engine::expr::legacy;
use tessera_engine::expr::{self, Condition, KeyCondition, Placeholders, ReturnValues, SortCondition, Unparser};
use tessera_engine::{AttributeValue, Item, KeySchema, KeyType, Number};
use tessera_net::json::{
    attribute_updates_from_json, expected_from_json, item_from_json, legacy_conditions_from_json, value_from_json,
};

const CORPUS: &str = include_str!("../corpus/expressions.jsonl");

fn placeholders(case: &Value) -> (HashMap<String, String>, HashMap<String, AttributeValue>) {
    let names = case["names"].as_object().map_or_else(HashMap::new, |names| {
        names.iter().map(|(key, name)| (key.clone(), name.as_str().expect("a name is a string").to_string())).collect()
    });
    let values = case["values"].as_object().map_or_else(HashMap::new, |values| {
        values
            .iter()
            .map(|(key, value)| (key.clone(), value_from_json(value, key).expect("a DynamoDB JSON value")))
            .collect()
    });
    (names, values)
}

/// What a case produced: a truth value, a projected or updated item, or an error message.
#[derive(Debug, PartialEq)]
enum Got {
    Truth(bool),
    Item(Item),
    Error(String),
    Key(KeyCondition),
}

/// The table schema a key-condition case names: `{"pk": "id:S", "sk": "ts:N"}`.
fn schema(case: &Value) -> KeySchema {
    let attribute = |text: &str| {
        let (name, kind) = text.split_once(':').expect("NAME:TYPE");
        let kind = match kind {
            "S" => KeyType::S,
            "N" => KeyType::N,
            "B" => KeyType::B,
            other => panic!("key type {other}"),
        };
        (name.to_string(), kind)
    };
    let (name, kind) = attribute(case["schema"]["pk"].as_str().expect("a partition key"));
    let mut schema = KeySchema::hash_only(&name, kind);
    if let Some(sort) = case["schema"]["sk"].as_str() {
        let (sort_name, sort_kind) = attribute(sort);
        schema = KeySchema::composite((&name, kind), (&sort_name, sort_kind));
    }
    schema
}

/// The expected key condition of a case: `{"partition": V, "sort": ["BETWEEN", V, V]}`.
fn expected_key(json: &Value) -> KeyCondition {
    let value = |json: &Value| value_from_json(json, "key").expect("a DynamoDB JSON value");
    let sort = json["sort"].as_array().map(|sort| {
        let operand = |i: usize| value(&sort[i]);
        match sort[0].as_str().expect("an operator") {
            "=" => SortCondition::Eq(operand(1)),
            "<" => SortCondition::Lt(operand(1)),
            "<=" => SortCondition::Le(operand(1)),
            ">" => SortCondition::Gt(operand(1)),
            ">=" => SortCondition::Ge(operand(1)),
            "BETWEEN" => SortCondition::Between(operand(1), operand(2)),
            "begins_with" => SortCondition::BeginsWith(operand(1)),
            other => panic!("sort operator {other}"),
        }
    });
    KeyCondition { partition_key: value(&json["partition"]), sort }
}

fn run(case: &Value, items: &HashMap<String, Item>) -> Got {
    let (names, values) = placeholders(case);
    let mut placeholders = Placeholders::new(&names, &values);
    let text = case["expression"].as_str().unwrap_or_default();
    let item = || case["item"].as_str().map(|name| items[name].clone()).unwrap_or_default();
    let result = match case["kind"].as_str() {
        Some("condition") => {
            expr::parse_condition(text, &mut placeholders).map(|condition| Got::Truth(condition.evaluate(&item())))
        }
        Some("projection") => {
            expr::parse_projection(text, &mut placeholders).map(|paths| Got::Item(expr::project(&item(), &paths)))
        }
        Some("key") => expr::parse_key_condition(text, &mut placeholders, &schema(case)).map(Got::Key),
        Some(kind) if kind.starts_with("legacy-") => return run_legacy(case, kind, item()),
        Some("update") => expr::parse_update(text, &mut placeholders).map(|update| {
            let old = item();
            let mut new = old.clone();
            if let Err(error) = update.apply(&mut new) {
                return Got::Error(error.to_string());
            }
            // With "return_values", what the update returns must be "returned" (or nothing).
            if let Some(name) = case["return_values"].as_str() {
                let targets: Vec<_> = update.targets().cloned().collect();
                let returned =
                    ReturnValues::parse(name, "UpdateItem").unwrap().select(Some(&old), Some(&new), &targets);
                let expected = case["returned"].is_object().then(|| item_from_json(&case["returned"]).unwrap());
                if returned != expected {
                    return Got::Error(format!("returned {returned:?}"));
                }
            }
            Got::Item(new)
        }),
        other => panic!("unknown case kind {other:?}"),
    };
    match result {
        Err(error) => Got::Error(error.to_string()),
        Ok(got) => match placeholders.check_all_used() {
            Err(message) => Got::Error(message),
            Ok(()) => got,
        },
    }
}

/// Expression text written by `write` (with its placeholders), parsed back by `parse`: the
/// legacy parameters travel as expressions this way (the HTTP endpoint), so the text must
/// give back the very tree it was written from.
fn reparsed<T>(
    write: impl FnOnce(&mut Unparser) -> String,
    parse: impl FnOnce(&str, &mut Placeholders<'_>) -> Result<T, expr::ExprError>,
) -> Result<T, String> {
    let mut unparser = Unparser::default();
    let text = write(&mut unparser);
    let names: HashMap<_, _> = unparser.names.into_iter().collect();
    let values: HashMap<_, _> = unparser.values.into_iter().collect();
    let mut placeholders = Placeholders::new(&names, &values);
    let parsed = parse(&text, &mut placeholders).map_err(|error| format!("{text:?} does not parse back: {error}"))?;
    placeholders.check_all_used().map(|()| parsed)
}

/// A case of the legacy parameters: what it produced, or its first error as text. What it
/// produced, written as expression text and parsed back, must be the same.
fn run_legacy(case: &Value, kind: &str, mut item: Item) -> Got {
    let or = case["operator"] == "OR";
    let text = |error: expr::ExprError| error.to_string();
    let same_condition = |condition: &Option<Condition>| -> Result<(), String> {
        let Some(condition) = condition else { return Ok(()) };
        let back = reparsed(|unparser| unparser.condition(condition), expr::parse_condition)?;
        (&back == condition).then_some(()).ok_or_else(|| format!("written and parsed back as {back:?}"))
    };
    let mut outcome = || -> Result<Got, String> {
        Ok(match kind {
            "legacy-expected" => {
                let condition = legacy::expected(&expected_from_json(&case["expected"])?, or).map_err(text)?;
                same_condition(&condition)?;
                Got::Truth(condition.is_none_or(|condition| condition.evaluate(&item)))
            }
            "legacy-filter" => {
                let condition = legacy::filter(&legacy_conditions_from_json(&case["filter"])?, or).map_err(text)?;
                same_condition(&condition)?;
                Got::Truth(condition.is_none_or(|condition| condition.evaluate(&item)))
            }
            "legacy-key" => {
                let entries = legacy_conditions_from_json(&case["conditions"])?;
                let key = legacy::key_conditions(&entries, &schema(case)).map_err(text)?;
                let condition = legacy::filter(&entries, false).map_err(text)?.expect("a key condition");
                let back = reparsed(
                    |unparser| unparser.condition(&condition),
                    |text, placeholders| expr::parse_key_condition(text, placeholders, &schema(case)),
                )?;
                if back != key {
                    return Err(format!("written and parsed back as {back:?}"));
                }
                Got::Key(key)
            }
            "legacy-updates" => {
                let update =
                    legacy::attribute_updates(&attribute_updates_from_json(&case["updates"])?).map_err(text)?;
                let back = reparsed(|unparser| unparser.update(&update), expr::parse_update)?;
                if back != update {
                    return Err(format!("written and parsed back as {back:?}"));
                }
                update.apply(&mut item).map_err(|error| error.to_string())?;
                Got::Item(item.clone())
            }
            other => panic!("unknown case kind {other:?}"),
        })
    };
    outcome().unwrap_or_else(Got::Error)
}

#[test]
fn the_corpus_holds() {
    let mut items = HashMap::new();
    let mut failures = Vec::new();
    let mut cases = 0;
    for (number, line) in CORPUS.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with("//") {
            continue;
        }
        let case: Value = serde_json::from_str(line).unwrap_or_else(|error| panic!("line {}: {error}", number + 1));
        if let Some(name) = case["define_item"].as_str() {
            items.insert(name.to_string(), item_from_json(&case["item"]).expect("a DynamoDB JSON item"));
            continue;
        }
        cases += 1;
        let got = run(&case, &items);
        let expected_item = if case["projected"].is_object() { &case["projected"] } else { &case["updated"] };
        let ok = match (&got, &case["expect"], expected_item, &case["error"]) {
            (Got::Truth(truth), Value::Bool(expected), _, _) => truth == expected,
            (Got::Item(item), _, expected @ Value::Object(_), _) => *item == item_from_json(expected).expect("an item"),
            (Got::Error(message), _, _, Value::String(part)) => message.contains(part.as_str()),
            (Got::Key(key), _, _, _) if case["key"].is_object() => *key == expected_key(&case["key"]),
            _ => false,
        };
        if !ok {
            let what = if case["expression"].is_string() { case["expression"].to_string() } else { line.to_string() };
            failures.push(format!("line {}: {what} gave {got:?}", number + 1));
        }
    }
    assert!(cases >= 200, "the corpus shrank to {cases} cases");
    assert!(failures.is_empty(), "{} of {cases} cases failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn errors_name_the_expression_and_keep_the_position() {
    let (names, values) = (HashMap::new(), HashMap::from([(":v".to_string(), AttributeValue::N(Number::from(1)))]));
    let mut placeholders = Placeholders::new(&names, &values);
    let error = expr::parse_condition("price = :v AND status = :v", &mut placeholders).unwrap_err();
    assert_eq!(error.position, Some(16));
    assert_eq!(
        error.to_string(),
        "Invalid ConditionExpression: Attribute name is a reserved keyword; reserved keyword: status"
    );
    // A syntax error names its token and the text around it, as DynamoDB does.
    let mut placeholders = Placeholders::new(&names, &values);
    let error = expr::parse_condition("price = :v AND", &mut placeholders).unwrap_err();
    assert_eq!(error.to_string(), "Invalid ConditionExpression: Syntax error; token: \"<EOF>\", near: \"AND\"");
    let mut placeholders = Placeholders::new(&names, &values);
    let error = expr::parse_condition("price  ==  :v", &mut placeholders).unwrap_err();
    assert_eq!(error.to_string(), "Invalid ConditionExpression: Syntax error; token: \"=\", near: \"==  :v\"");
    let mut placeholders = Placeholders::new(&names, &values);
    let error = expr::parse_filter("", &mut placeholders).unwrap_err();
    assert_eq!(error.to_string(), "Invalid FilterExpression: The expression can not be empty;");
}

/// One of a few small values of several types.
fn small_value() -> impl Strategy<Value = AttributeValue> {
    prop_oneof![
        (-3i64..3).prop_map(|n| AttributeValue::N(Number::from(n))),
        "[ab]{0,2}".prop_map(AttributeValue::S),
        any::<bool>().prop_map(AttributeValue::Bool),
        prop::collection::vec((-2i64..2).prop_map(|n| AttributeValue::N(Number::from(n))), 0..3)
            .prop_map(AttributeValue::L),
    ]
}

/// A small item with the attributes `a`..`d`, each missing or one of a few values.
fn small_item() -> impl Strategy<Value = Item> {
    prop::collection::btree_map("[a-d]", small_value(), 0..4)
}

/// A random condition over `a`..`d` and the placeholders `:n` (a number) and `:s` (a string).
fn condition_text() -> impl Strategy<Value = String> {
    let operand = prop_oneof!["[a-d]", Just(":n".to_string()), Just(":s".to_string()), "size\\([a-d]\\)"];
    let leaf = prop_oneof![
        (operand.clone(), prop::sample::select(vec!["=", "<>", "<", "<=", ">", ">="]), operand.clone())
            .prop_map(|(left, comparator, right)| format!("{left} {comparator} {right}")),
        "[a-d]".prop_map(|path| format!("attribute_exists({path})")),
        "[a-d]".prop_map(|path| format!("attribute_not_exists({path})")),
        "[a-d]".prop_map(|path| format!("begins_with({path}, :s)")),
        "[a-d]".prop_map(|path| format!("contains({path}, :n)")),
        "[a-d]".prop_map(|path| format!("{path} IN (:n, :s)")),
        "[a-d]".prop_map(|path| format!("{path} BETWEEN :lo AND :n")),
    ];
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(left, right)| format!("({left}) AND ({right})")),
            (inner.clone(), inner.clone()).prop_map(|(left, right)| format!("({left}) OR ({right})")),
            inner.prop_map(|inner| format!("NOT ({inner})")),
        ]
    })
}

fn parse_with_standard_values(text: &str) -> Option<Condition> {
    let names = HashMap::new();
    let values = HashMap::from([
        (":n".to_string(), AttributeValue::N(Number::from(1))),
        (":lo".to_string(), AttributeValue::N(Number::from(-1))),
        (":s".to_string(), AttributeValue::S("a".to_string())),
    ]);
    let mut placeholders = Placeholders::new(&names, &values);
    // Random text may repeat a path as both operands, which DynamoDB refuses; skip those.
    expr::parse_condition(text, &mut placeholders).ok()
}

proptest! {
    #[test]
    fn not_negates_every_condition(text in condition_text(), item in small_item()) {
        if let (Some(condition), Some(negated)) =
            (parse_with_standard_values(&text), parse_with_standard_values(&format!("NOT ({text})")))
        {
            prop_assert_eq!(negated.evaluate(&item), !condition.evaluate(&item));
        }
    }

    #[test]
    fn and_or_follow_boolean_algebra(left in condition_text(), right in condition_text(), item in small_item()) {
        let parts = (parse_with_standard_values(&left), parse_with_standard_values(&right));
        let both = (
            parse_with_standard_values(&format!("({left}) AND ({right})")),
            parse_with_standard_values(&format!("({left}) OR ({right})")),
            parse_with_standard_values(&format!("NOT ({left}) OR NOT ({right})")),
        );
        if let ((Some(l), Some(r)), (Some(and), Some(or), Some(de_morgan))) = (parts, both) {
            let (l, r) = (l.evaluate(&item), r.evaluate(&item));
            prop_assert_eq!(and.evaluate(&item), l && r);
            prop_assert_eq!(or.evaluate(&item), l || r);
            prop_assert_eq!(de_morgan.evaluate(&item), !(l && r));
        }
    }

    #[test]
    fn an_update_reads_back_as_it_said(item in small_item(), value in small_value(), set in 0usize..4, offset in 1usize..4) {
        let name = |index: usize| ["a", "b", "c", "d"][index % 4].to_string();
        let (set, remove) = (name(set), name(set + offset));
        let names = HashMap::new();
        let values = HashMap::from([(":v".to_string(), value.clone())]);
        let mut placeholders = Placeholders::new(&names, &values);
        let update = expr::parse_update(&format!("SET {set} = :v REMOVE {remove}"), &mut placeholders).unwrap();
        let mut updated = item.clone();
        update.apply(&mut updated).unwrap();
        prop_assert_eq!(updated.get(&set), Some(&value));
        prop_assert!(!updated.contains_key(&remove));
        // Nothing else changed.
        let others = |item: &Item| item.iter().filter(|(name, _)| **name != set && **name != remove).map(|(n, v)| (n.clone(), v.clone())).collect::<Vec<_>>();
        prop_assert_eq!(others(&updated), others(&item));
    }

    #[test]
    fn counters_add_up_exactly(start in -(10i64.pow(15))..10i64.pow(15), adds in prop::collection::vec((-(10i64.pow(15))..10i64.pow(15), 0u32..6), 0..20)) {
        // Each ADD adds n / 10^scale; i128 in units of 10^-5 is the exact reference.
        let mut item = Item::from([("c".to_string(), AttributeValue::N(Number::from(start)))]);
        let mut expected = i128::from(start) * 100_000;
        for (n, scale) in adds {
            let value = AttributeValue::N(Number::from_parts(n < 0, u128::from(n.unsigned_abs()), -i64::from(scale)).unwrap());
            let names = HashMap::new();
            let values = HashMap::from([(":n".to_string(), value)]);
            let mut placeholders = Placeholders::new(&names, &values);
            expr::parse_update("ADD c :n", &mut placeholders).unwrap().apply(&mut item).unwrap();
            expected += i128::from(n) * 10i128.pow(5 - scale);
        }
        let expected = Number::from_parts(expected < 0, expected.unsigned_abs(), -5).unwrap();
        prop_assert_eq!(item.get("c"), Some(&AttributeValue::N(expected)));
    }

    #[test]
    fn parsing_arbitrary_text_never_panics(text in "[ -~]{0,80}") {
        let names = HashMap::from([("#a".to_string(), "a".to_string())]);
        let values = HashMap::from([(":v".to_string(), AttributeValue::N(Number::from(1)))]);
        let mut placeholders = Placeholders::new(&names, &values);
        let _ = expr::parse_condition(&text, &mut placeholders);
        let _ = expr::parse_projection(&text, &mut placeholders);
        if let Ok(update) = expr::parse_update(&text, &mut placeholders) {
            let _ = update.apply(&mut Item::new());
        }
    }
}
