//! What a put's item costs to encode on its way to the log (criterion): a 1 KiB item (a key
//! and a binary value, as tessera-load writes) into its stored form, and the command carrying
//! it into a log record's payload.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tessera_engine::{encode_item, AttributeValue, Command, Item, ItemMeta, Stamped};

fn codec(c: &mut Criterion) {
    let item = Item::from([
        ("id".to_string(), AttributeValue::S("key-0000042137".to_string())),
        ("value".to_string(), AttributeValue::B(vec![0x5a; 1024])),
    ]);
    c.bench_function("codec/encode 1 KiB item", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            encode_item(black_box(&item), ItemMeta::default(), &mut out);
            out
        })
    });
    let mut stored = Vec::new();
    encode_item(&item, ItemMeta::default(), &mut stored);
    let command =
        Stamped { at_us: 1, command: Command::Put { key: b"key-0000042137".to_vec(), value: Bytes::from(stored) } };
    c.bench_function("codec/encode 1 KiB put command", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            black_box(&command).encode_payload(&mut out).unwrap();
            out
        })
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
