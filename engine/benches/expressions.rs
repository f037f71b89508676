//! Expression parse and evaluate costs (criterion): a typical optimistic-locking condition, a
//! filter with functions, and a counter update, each parsed once and evaluated many times.

use std::collections::HashMap;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tessera_engine::expr::{self, Placeholders};
use tessera_engine::{AttributeValue, Item, Number};

fn item() -> Item {
    let number = |n: i64| AttributeValue::N(Number::from(n));
    Item::from([
        ("id".to_string(), AttributeValue::S("order-1042".to_string())),
        ("version".to_string(), number(7)),
        ("amount".to_string(), number(12990)),
        ("state".to_string(), AttributeValue::S("shipped".to_string())),
        ("tags".to_string(), AttributeValue::Ss(["gift".to_string(), "prime".to_string()].into())),
        (
            "address".to_string(),
            AttributeValue::M([("city".to_string(), AttributeValue::S("Seattle".to_string()))].into()),
        ),
    ])
}

fn expressions(c: &mut Criterion) {
    let names = HashMap::from([("#s".to_string(), "state".to_string())]);
    let values = HashMap::from([
        (":v".to_string(), AttributeValue::N(Number::from(7))),
        (":one".to_string(), AttributeValue::N(Number::from(1))),
        (":min".to_string(), AttributeValue::N(Number::from(1000))),
        (":s".to_string(), AttributeValue::S("ship".to_string())),
        (":t".to_string(), AttributeValue::S("prime".to_string())),
        (":c".to_string(), AttributeValue::S("Seattle".to_string())),
    ]);
    let condition = "attribute_exists(id) AND version = :v";
    let filter = "amount >= :min AND begins_with(#s, :s) AND contains(tags, :t) AND address.city = :c";
    let update = "SET version = version + :one";
    let item = item();
    let parse = |text: &str| expr::parse_condition(text, &mut Placeholders::new(&names, &values)).unwrap();
    c.bench_function("expr/parse condition", |b| b.iter(|| parse(black_box(condition))));
    c.bench_function("expr/parse filter", |b| b.iter(|| parse(black_box(filter))));
    let (condition, filter) = (parse(condition), parse(filter));
    c.bench_function("expr/evaluate condition", |b| b.iter(|| condition.evaluate(black_box(&item))));
    c.bench_function("expr/evaluate filter", |b| b.iter(|| filter.evaluate(black_box(&item))));
    let parse_update = |text: &str| expr::parse_update(text, &mut Placeholders::new(&names, &values)).unwrap();
    c.bench_function("expr/parse update", |b| b.iter(|| parse_update(black_box(update))));
    let update = parse_update(update);
    c.bench_function("expr/apply update", |b| {
        b.iter_batched(|| item.clone(), |mut item| update.apply(&mut item).unwrap(), criterion::BatchSize::SmallInput)
    });
}

criterion_group!(benches, expressions);
criterion_main!(benches);
