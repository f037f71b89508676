//! A table whose partition map no formula produces (uneven ranges, cores out of turn, set by
//! the administration call CreateTable with ranges): every operation, through the binary
//! client and through the HTTP endpoint, is served by that map, every item is stored in the
//! partition and on the core the map names, and a client routing by a stale map is told so
//! (WrongPartition) and learns the new one.

use std::collections::{BTreeMap, BTreeSet};

use std::ops::Bound;

use serde_json::json;
use tessera_engine::{AttributeValue, Item, KeySchema, KeyType, Number, Store, StoreConfig};
use tessera_wire::client::{Client, ClientConfig, ClientError, ItemBuilder};
use tessera_wire::{
    ErrorCode, Expressions, PartitionMap, Query, RangeSpec, Request, RequestFlags, Response, ReturnValues, Scan,
    TableKeys, Write,
};

use common::{call, ok, Node};

mod common;

/// Five ranges of different sizes (from 7/16 of the hash space to 3/32), cores not in turn.
const RANGES: [(u64, u16); 5] = [
    (0, 1),
    (0x4000_0000_0000_0000, 1),
    (0x6000_0000_0000_0000, 0),
    (0xD000_0000_0000_0000, 1),
    (0xE800_0000_0000_0000, 0),
];

/// Items by their key.
type Items = BTreeMap<String, Item>;

fn items(items: impl IntoIterator<Item = Item>) -> Items {
    items.into_iter().map(|item| (id(&item), item)).collect()
}

/// An item's (or key's) key, as `Items` keeps it.
fn id(key: &Item) -> String {
    format!("{:?}/{:?}", key["pk"], key["sk"])
}

fn put(items: &mut Items, item: Item) {
    items.insert(id(&item), item);
}

fn ranges(layout: &[(u64, u16)]) -> Vec<RangeSpec> {
    layout.iter().map(|&(start, core)| RangeSpec { start, core }).collect()
}

fn schema() -> KeySchema {
    KeySchema::composite(("pk", KeyType::S), ("sk", KeyType::N))
}

fn key(pk: u32, sk: i64) -> Item {
    ItemBuilder::new().s("pk", format!("p{pk}")).n("sk", sk).build()
}

fn item(pk: u32, sk: i64, value: i64) -> Item {
    ItemBuilder::new().s("pk", format!("p{pk}")).n("sk", sk).n("v", value).build()
}

/// The map the table's description carries, checked to be the one asked for.
fn described_map(client: &mut Client, table: &str, layout: &[(u64, u16)]) -> PartitionMap {
    let map = client.describe_table(table).unwrap().map.expect("the description carries the map");
    let got: Vec<(u64, u16)> = map.ranges.iter().map(|range| (range.start, range.core)).collect();
    assert_eq!(got, layout, "the map is the one CreateTable chose");
    map
}

fn query(table: &str, pk: u32) -> Query {
    Query {
        table: table.into(),
        partition_key: AttributeValue::S(format!("p{pk}")),
        sort: None,
        backward: false,
        limit: 0,
        exclusive_start_key: None,
        consistent_read: true,
        read: Default::default(),
    }
}

fn scan(table: &str, segment: u32, total_segments: u32) -> Scan {
    Scan {
        table: table.into(),
        segment,
        total_segments,
        limit: 0,
        exclusive_start_key: None,
        consistent_read: true,
        read: Default::default(),
    }
}

/// Every item of `table` through the client: one Scan, and Scans of three segments.
fn scanned(client: &mut Client, table: &str) -> Items {
    let whole = items(client.scan_all(scan(table, 0, 1)).unwrap());
    let mut segments = Items::new();
    for segment in 0..3 {
        segments.extend(items(client.scan_all(scan(table, segment, 3)).unwrap()));
    }
    assert_eq!(whole, segments, "the segments of a Scan read the table once");
    whole
}

/// The binary client: every item operation on a table of `RANGES`.
fn through_the_client(client: &mut Client) -> Items {
    let table = "placed";
    let created = client.create_table_placed(table, schema(), ranges(&RANGES)).unwrap();
    assert_eq!(created.partitions, RANGES.len() as u32);
    described_map(client, table, &RANGES);
    let mut expected = Items::new();
    for pk in 0..40 {
        for sk in 0..3 {
            client.put_item(table, item(pk, sk, 0)).unwrap();
            put(&mut expected, item(pk, sk, 0));
        }
    }
    for pk in 0..40 {
        assert_eq!(client.get_item(table, key(pk, 1)).unwrap(), Some(item(pk, 1, 0)));
        let all: Vec<Item> = (0..3).map(|sk| item(pk, sk, 0)).collect();
        assert_eq!(client.query_all(query(table, pk)).unwrap(), all, "Query of p{pk}");
    }
    // UpdateItem, a conditional put (one that holds, one that does not), a conditional delete.
    let set = Expressions { values: vec![(":v".into(), AttributeValue::N(Number::from(7)))], ..Expressions::default() };
    let updated = client.update_item(table, key(3, 2), "SET v = :v", set, ReturnValues::AllNew).unwrap();
    assert_eq!(updated, Some(item(3, 2, 7)));
    expected.remove(&id(&key(3, 2)));
    put(&mut expected, item(3, 2, 7));
    let absent = Expressions::condition("attribute_not_exists(pk)");
    client.put_item_if(table, item(40, 0, 1), absent.clone()).unwrap();
    put(&mut expected, item(40, 0, 1));
    let refused = client.put_item_if(table, item(40, 0, 2), absent).unwrap_err();
    assert!(
        matches!(&refused, ClientError::Service(error) if error.code == ErrorCode::ConditionalCheckFailedException)
    );
    let zero = Expressions {
        values: vec![(":z".into(), AttributeValue::N(Number::from(0)))],
        ..Expressions::condition("v = :z")
    };
    assert_eq!(client.delete_item_if(table, key(5, 0), zero).unwrap(), Some(item(5, 0, 0)));
    expected.remove(&id(&key(5, 0)));
    assert_eq!(client.delete_item(table, key(6, 0)).unwrap(), Some(item(6, 0, 0)));
    expected.remove(&id(&key(6, 0)));
    // A batch of writes over every partition, and a batch of reads.
    let writes: Vec<Write> = (50..70)
        .map(|pk| Write::Put { table: table.into(), item: item(pk, 0, 9) })
        .chain((0..5).map(|pk| Write::Delete { table: table.into(), key: key(pk, 2) }))
        .collect();
    assert!(client.batch_write_item(writes).unwrap().is_empty());
    expected.extend(items((50..70).map(|pk| item(pk, 0, 9))));
    for pk in 0..5 {
        expected.remove(&id(&key(pk, 2)));
    }
    let keys: Vec<Item> = (45..70).map(|pk| key(pk, 0)).collect();
    let tables = vec![TableKeys { table: table.into(), keys, consistent_read: true, read: Default::default() }];
    let (found, unprocessed) = client.batch_get_item(tables).unwrap();
    assert!(unprocessed.is_empty());
    let found = items(found.into_iter().flat_map(|(_, found)| found));
    assert_eq!(found, items((50..70).map(|pk| item(pk, 0, 9))));
    assert_eq!(scanned(client, table), expected);
    expected
}

/// The HTTP endpoint: every item operation on a second table of `RANGES`.
fn through_http(node: &Node, client: &mut Client) -> Items {
    let table = "placed_http";
    client.create_table_placed(table, schema(), ranges(&RANGES)).unwrap();
    described_map(client, table, &RANGES);
    let json_key = |pk: u32, sk: i64| json!({ "pk": { "S": format!("p{pk}") }, "sk": { "N": sk.to_string() } });
    let json_item = |pk: u32, sk: i64, v: i64| json!({ "pk": { "S": format!("p{pk}") }, "sk": { "N": sk.to_string() }, "v": { "N": v.to_string() } });
    for pk in 0..30 {
        ok(node, "PutItem", json!({ "TableName": table, "Item": json_item(pk, 0, 1) }));
        ok(node, "PutItem", json!({ "TableName": table, "Item": json_item(pk, 1, 1) }));
    }
    for pk in 0..30 {
        let got = ok(node, "GetItem", json!({ "TableName": table, "Key": json_key(pk, 1), "ConsistentRead": true }));
        assert_eq!(got["Item"], json_item(pk, 1, 1));
        let queried = ok(
            node,
            "Query",
            json!({ "TableName": table, "KeyConditionExpression": "pk = :p",
                    "ExpressionAttributeValues": { ":p": { "S": format!("p{pk}") } } }),
        );
        assert_eq!(queried["Items"], json!([json_item(pk, 0, 1), json_item(pk, 1, 1)]));
    }
    let updated = ok(
        node,
        "UpdateItem",
        json!({ "TableName": table, "Key": json_key(2, 0), "UpdateExpression": "SET v = v + :one",
                "ExpressionAttributeValues": { ":one": { "N": "1" } }, "ReturnValues": "ALL_NEW" }),
    );
    assert_eq!(updated["Attributes"], json_item(2, 0, 2));
    let (status, refused) = call(
        node,
        "DeleteItem",
        &json!({ "TableName": table, "Key": json_key(3, 0), "ConditionExpression": "v = :two",
                 "ExpressionAttributeValues": { ":two": { "N": "2" } } }),
    );
    assert_eq!(
        (status, refused["__type"].as_str().unwrap().rsplit('#').next()),
        (400, Some("ConditionalCheckFailedException"))
    );
    ok(node, "DeleteItem", json!({ "TableName": table, "Key": json_key(4, 0) }));
    let puts: Vec<_> = (40..55).map(|pk| json!({ "PutRequest": { "Item": json_item(pk, 0, 5) } })).collect();
    let written = ok(node, "BatchWriteItem", json!({ "RequestItems": { table: puts } }));
    assert_eq!(written["UnprocessedItems"], json!({}));
    let keys: Vec<_> = (35..55).map(|pk| json_key(pk, 0)).collect();
    let read = ok(node, "BatchGetItem", json!({ "RequestItems": { table: { "Keys": keys, "ConsistentRead": true } } }));
    assert_eq!(read["Responses"][table].as_array().unwrap().len(), 15);
    let mut scanned_http = 0;
    for segment in 0..3 {
        let page = ok(node, "Scan", json!({ "TableName": table, "Segment": segment, "TotalSegments": 3 }));
        assert!(page.get("LastEvaluatedKey").is_none(), "one page holds the table's few items");
        scanned_http += page["Items"].as_array().unwrap().len();
    }
    let mut expected = items((0..30).flat_map(|pk| [item(pk, 0, 1), item(pk, 1, 1)]));
    expected.remove(&id(&key(2, 0)));
    put(&mut expected, item(2, 0, 2));
    expected.remove(&id(&key(4, 0)));
    expected.extend(items((40..55).map(|pk| item(pk, 0, 5))));
    assert_eq!(scanned_http, expected.len());
    assert_eq!(scanned(client, table), expected);
    expected
}

/// The stored keys of every partition in `dir`'s store.
fn stored(dir: &std::path::Path) -> BTreeMap<u64, Vec<Vec<u8>>> {
    let dir = dir.to_path_buf();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).io_memory(4 << 20).make().unwrap().run(async move {
        let config = StoreConfig { cache_pages: 1024, scrub_interval: None, ..StoreConfig::default() };
        let store = Store::open(&dir, config).await.unwrap();
        let mut keys = BTreeMap::new();
        for partition in store.partitions().await.unwrap() {
            let entries = store.scan(partition, Bound::Unbounded, Bound::Unbounded, false, usize::MAX).await.unwrap();
            keys.insert(partition, entries.into_iter().map(|(key, _)| key).collect());
        }
        keys
    })
}

#[test]
fn a_table_laid_out_by_no_formula_is_served_by_its_map_through_the_client_and_http() {
    let mut node = Node::start("placement", &["--auth", "none"]);
    let mut client = Client::connect(node.address).unwrap();
    let mut expected = BTreeMap::new();
    expected.insert("placed", through_the_client(&mut client));
    expected.insert("placed_http", through_http(&node, &mut client));
    let maps: BTreeMap<&str, PartitionMap> =
        expected.keys().map(|&table| (table, described_map(&mut client, table, &RANGES))).collect();
    drop(client);
    node.kill();
    // Each stored key is in the partition its hash's range names, on that range's core; every
    // partition holds some, and nothing else is stored.
    let mut stored_keys = 0;
    let mut holding = BTreeSet::new();
    for core in 0..2u16 {
        for (partition, keys) in stored(&node.dir.join(format!("core-{core}"))) {
            let Some((table, map)) =
                maps.iter().find(|(_, map)| map.ranges.iter().any(|range| range.partition == partition))
            else {
                // The catalog's partition, on core 0.
                assert_eq!((core, partition), (0, 0), "core {core} stores partition {partition:#x}");
                continue;
            };
            for key in keys {
                let hash = u64::from_be_bytes(key[..8].try_into().unwrap());
                let range = map.ranges[map.index_of_hash(hash) as usize];
                assert_eq!((range.partition, range.core), (partition, core), "{table}: a key with hash {hash:#x}");
                holding.insert(partition);
                stored_keys += 1;
            }
        }
    }
    assert_eq!(stored_keys, expected.values().map(Items::len).sum::<usize>());
    assert_eq!(holding.len(), 2 * RANGES.len(), "every partition of both tables holds items");
}

/// A pool that learned a table's map routes by it; once the table is made again with another
/// map, a routed call is answered WrongPartition (with the server's epoch), sent again, and
/// the pool learns the new map.
#[test]
fn a_stale_map_is_answered_wrong_partition_and_refreshed() {
    use tessera_net::client::{AsyncClient, AsyncPool};
    let node = Node::start("stale-map", &["--auth", "none"]);
    let first = [(0, 0), (0x8000_0000_0000_0000, 1)];
    let second = [(0, 1), (0x4000_0000_0000_0000, 0), (0xC000_0000_0000_0000, 1)];
    let address = node.address;
    let (answered, moved, learned) = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .unwrap()
        .run(async move {
            let admin = AsyncClient::connect(address, ClientConfig::default()).await.unwrap();
            admin.create_table_placed("moving", schema(), ranges(&first)).await.unwrap();
            let pool = AsyncPool::connect(address, 1, ClientConfig::default()).await.unwrap();
            for pk in 0..20 {
                pool.route("moving", &key(pk, 0)).await.put_item("moving", item(pk, 0, 1)).await.unwrap();
            }
            let before: Vec<Option<u32>> = (0..20).map(|pk| pool.partition_index("moving", &key(pk, 0))).collect();
            // The table made again with another map: the pool's is stale.
            admin.delete_table("moving").await.unwrap();
            admin.create_table_placed("moving", schema(), ranges(&second)).await.unwrap();
            let now = admin.describe_table("moving").await.unwrap();
            let after: Vec<Option<u32>> = (0..20).map(|pk| now.range_of(&key(pk, 0))).collect();
            // A request marked routed, at a core that does not own its item, is refused.
            let (core, _) = admin.hello().await.unwrap();
            let map = now.map.as_ref().unwrap();
            let pk =
                (0..20).find(|&pk| usize::from(map.ranges[after[pk as usize].unwrap() as usize].core) != core).unwrap();
            let request = Request::GetItem {
                table: "moving".into(),
                key: key(pk, 0),
                consistent_read: true,
                read: Default::default(),
            };
            let flags = RequestFlags { routed: true, ..RequestFlags::default() };
            let answered = admin.call_once_with(&request, flags).await.unwrap().0;
            // Through the pool: every call served (nothing found: the table is new), the map
            // learned again.
            for pk in 0..20 {
                let got = pool.route("moving", &key(pk, 0)).await.get_item("moving", key(pk, 0)).await.unwrap();
                assert_eq!(got, None);
            }
            pool.route("moving", &key(0, 0)).await;
            let learned: Vec<Option<u32>> = (0..20).map(|pk| pool.partition_index("moving", &key(pk, 0))).collect();
            (answered, before != after, learned == after)
        });
    let Response::Error(error) = answered else { panic!("a misrouted request was served: {answered:?}") };
    assert_eq!((error.code, error.epoch), (ErrorCode::WrongPartition, Some(1)), "{error}");
    assert!(moved, "the new map places some keys elsewhere");
    assert!(learned, "the pool routes by the new map");
}
