//! Every message round-trips through its frame, and no byte sequence makes a decoder panic.

use std::collections::BTreeMap;

use proptest::prelude::*;
use tessera_engine::paxos::Member;
use tessera_engine::{AttributeValue, Item, KeySchema, KeyType, Number};
use tessera_wire::frame::{self, Decoded};
use tessera_wire::*;

fn number() -> impl Strategy<Value = Number> {
    (any::<i64>(), -20i64..20)
        .prop_map(|(mantissa, exponent)| Number::parse(&format!("{mantissa}E{exponent}")).expect("in range"))
}

fn value() -> impl Strategy<Value = AttributeValue> {
    let leaf = prop_oneof![
        ".{0,12}".prop_map(AttributeValue::S),
        number().prop_map(AttributeValue::N),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(AttributeValue::B),
        any::<bool>().prop_map(AttributeValue::Bool),
        Just(AttributeValue::Null),
        proptest::collection::btree_set(".{0,6}", 1..4).prop_map(AttributeValue::Ss),
        proptest::collection::btree_set(number(), 1..4).prop_map(AttributeValue::Ns),
        proptest::collection::btree_set(proptest::collection::vec(any::<u8>(), 0..6), 1..4)
            .prop_map(AttributeValue::Bs),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(AttributeValue::L),
            proptest::collection::btree_map("[a-z]{1,5}", inner, 0..4).prop_map(AttributeValue::M),
        ]
    })
}

fn item() -> impl Strategy<Value = Item> {
    proptest::collection::btree_map("[a-z#]{1,8}", value(), 0..6)
}

fn round_trip_request(request: &Request) -> Request {
    let mut bytes = Vec::new();
    request.encode(42, &mut bytes);
    let Ok(Decoded::Frame(frame, used)) = frame::decode(&bytes) else { panic!("one whole frame") };
    assert_eq!((used, frame.header.request_id, frame.checksum_ok), (bytes.len(), 42, true));
    Request::decode(frame.header.message_type, frame.payload).expect("decodes")
}

fn round_trip_response(response: &Response) -> Response {
    let mut bytes = Vec::new();
    response.encode(7, &mut bytes);
    let Ok(Decoded::Frame(frame, _)) = frame::decode(&bytes) else { panic!("one whole frame") };
    Response::decode(frame.header.message_type, frame.payload).expect("decodes")
}

proptest! {
    #[test]
    fn item_messages_round_trip(item in item(), key in item(), flag in any::<bool>(), placeholder_value in value()) {
        let table = "orders".to_string();
        let expressions = Expressions {
            condition: flag.then(|| "attribute_not_exists(#k) OR #k < :v".to_string()),
            names: vec![("#k".into(), "key name".into())],
            values: vec![(":v".into(), placeholder_value.clone())],
        };
        let requests = vec![
            Request::PutItem { table: table.clone(), item: item.clone(), return_old: flag, expressions: expressions.clone(), return_old_on_failure: !flag },
            Request::PutItem { table: table.clone(), item: item.clone(), return_old: flag, expressions: Expressions::default(), return_old_on_failure: false },
            Request::GetItem { table: table.clone(), key: key.clone(), consistent_read: flag, read: Default::default() },
            Request::GetItem {
                table: table.clone(),
                key: key.clone(),
                consistent_read: flag,
                read: ReadExpressions { projection: Some("a, #k.b[1]".into()), names: expressions.names.clone(), ..Default::default() },
            },
            Request::DeleteItem { table: table.clone(), key: key.clone(), return_old: !flag, expressions: expressions.clone(), return_old_on_failure: flag },
            Request::UpdateItem(UpdateItem {
                table: table.clone(),
                key: key.clone(),
                update: "SET #k = :v".into(),
                expressions: expressions.clone(),
                return_values: if flag { ReturnValues::UpdatedNew } else { ReturnValues::AllOld },
                return_old_on_failure: flag,
            }),
            Request::BatchGetItem(vec![TableKeys { table: table.clone(), keys: vec![key.clone(), item.clone()], consistent_read: flag, read: ReadExpressions { projection: Some("a".into()), ..Default::default() } }]),
            Request::BatchWriteItem(vec![
                Write::Put { table: table.clone(), item: item.clone() },
                Write::Delete { table: table.clone(), key: key.clone() },
            ]),
        ];
        for request in requests {
            prop_assert_eq!(round_trip_request(&request), request);
        }
        let mut failed = WireError::new(ErrorCode::ConditionalCheckFailedException, "The conditional request failed");
        failed.item = Some(item.clone());
        let responses = vec![
            Response::Error(failed),
            Response::Item(Some(item.clone())),
            Response::Item(None),
            Response::Items { items: vec![item.clone(), key.clone()], scanned_count: 9, count: 2, last_evaluated_key: Some(key.clone()) },
            Response::BatchGetItem { responses: vec![(table.clone(), vec![item.clone()])], unprocessed: vec![] },
            Response::BatchWriteItem { unprocessed: vec![Write::Put { table, item }] },
        ];
        for response in responses {
            prop_assert_eq!(round_trip_response(&response), response);
        }
    }

    #[test]
    fn query_and_scan_round_trip(low in value(), high in value(), start in proptest::option::of(item()), limit in any::<u32>()) {
        let conditions = [
            None,
            Some(SortCondition::Eq(low.clone())),
            Some(SortCondition::Lt(low.clone())),
            Some(SortCondition::Le(low.clone())),
            Some(SortCondition::Gt(low.clone())),
            Some(SortCondition::Ge(low.clone())),
            Some(SortCondition::Between(low.clone(), high.clone())),
            Some(SortCondition::BeginsWith(low.clone())),
        ];
        for (index, sort) in conditions.into_iter().enumerate() {
            let request = Request::Query(Query {
                table: "t".into(),
                partition_key: high.clone(),
                sort,
                backward: index % 2 == 0,
                limit,
                exclusive_start_key: start.clone(),
                consistent_read: index % 3 == 0,
                read: ReadExpressions {
                    key_condition: (index % 2 == 0).then(|| "pk = :v".into()),
                    filter: Some("attribute_exists(x)".into()),
                    projection: (index % 3 == 0).then(|| "x".into()),
                    names: vec![("#n".into(), "name".into())],
                    values: vec![(":v".into(), low.clone())],
                    select: [Select::AllAttributes, Select::SpecificAttributes, Select::Count][index % 3],
                },
            });
            prop_assert_eq!(round_trip_request(&request), request);
        }
        let read = ReadExpressions { filter: Some("a < :v".into()), values: vec![(":v".into(), high.clone())], ..Default::default() };
        let scan = Request::Scan(Scan { table: "t".into(), segment: 3, total_segments: 8, limit, exclusive_start_key: start, consistent_read: true, read });
        prop_assert_eq!(round_trip_request(&scan), scan);
    }

    /// Random bytes, as a frame stream and as the payload of every message type.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), message_type in any::<u16>()) {
        let _ = frame::decode(&bytes);
        let _ = Request::decode(message_type, &bytes);
        let _ = Response::decode(message_type, &bytes);
        for kind in 1..=16u16 {
            let _ = Request::decode(kind, &bytes);
        }
        for kind in (0x8001..=0x8009u16).chain([0xFFFF]) {
            let _ = Response::decode(kind, &bytes);
        }
    }

    /// Valid messages with bytes changed: an error or a message, never a panic.
    #[test]
    fn damaged_messages_never_panic(item in item(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let request = Request::BatchWriteItem(vec![Write::Put { table: "t".into(), item: item.clone() }, Write::Delete { table: "t".into(), key: item }]);
        let mut bytes = Vec::new();
        request.encode(1, &mut bytes);
        let mut payload = bytes[frame::HEADER_LEN..].to_vec();
        for (index, byte) in flips {
            let at = index.index(payload.len());
            payload[at] = byte;
        }
        let _ = Request::decode(MessageType::BatchWriteItem as u16, &payload);
        let _ = Request::decode(MessageType::PutItem as u16, &payload);
    }
}

#[test]
fn table_messages_round_trip() {
    let schema = KeySchema::composite(("customer", KeyType::S), ("order", KeyType::N));
    let requests = [
        Request::CreateTable {
            table: "orders".into(),
            key_schema: schema.clone(),
            partitions: 8,
            throughput: Some(Throughput { read_units: 5, write_units: 7 }),
            tags: vec![("team".into(), "blue".into()), ("empty".into(), String::new())],
            ranges: vec![RangeSpec { start: 0, core: 1 }, RangeSpec { start: 1 << 60, core: 0 }],
        },
        Request::CreateTable {
            table: "users".into(),
            key_schema: KeySchema::hash_only("id", KeyType::B),
            partitions: 0,
            throughput: None,
            tags: Vec::new(),
            ranges: Vec::new(),
        },
        Request::TagResource { table: "orders".into(), tags: vec![("a".into(), "b".into())] },
        Request::UntagResource { table: "orders".into(), keys: vec!["a".into(), "c".into()] },
        Request::ListTagsOfResource { table: "orders".into() },
        Request::DeleteTable { table: "orders".into() },
        Request::DescribeTable { table: "orders".into(), counts: true },
        Request::DescribeTable { table: "orders".into(), counts: false },
        Request::ListTables { exclusive_start_table: Some("a".into()), limit: 10 },
        Request::ListTables { exclusive_start_table: None, limit: 0 },
        Request::Hello,
        Request::DescribeReplicas,
        Request::ChangeMembers {
            partition: 1 << 20 | 3,
            members: vec![Member::full(1), Member::log(4), Member::full(3)],
        },
        Request::RetireReplica { partition: 0 },
    ];
    for request in requests {
        assert_eq!(round_trip_request(&request), request);
    }
    let description = TableDescription {
        name: "orders".into(),
        key_schema: schema,
        partitions: 8,
        status: TableStatus::Active,
        created_at_ms: 1_700_000_000_000,
        item_count: 12,
        size_bytes: 3456,
        throughput: None,
        map: None,
    };
    let provisioned =
        TableDescription { throughput: Some(Throughput { read_units: 1, write_units: 40_000 }), ..description.clone() };
    let mapped = TableDescription {
        map: Some(PartitionMap {
            epoch: 3,
            ranges: vec![
                PartitionRange { start: 0, partition: 7 << 20, core: 1, leader: 2 },
                PartitionRange { start: 5, partition: (7 << 20) | 1, core: 0, leader: 0 },
            ],
        }),
        ..description.clone()
    };
    let responses = [
        Response::Table(description),
        Response::Table(provisioned),
        Response::Table(mapped),
        Response::Tags(vec![("k".into(), "v".into())]),
        Response::Tags(Vec::new()),
        Response::ListTables { tables: vec!["a".into(), "b".into()], last_evaluated_table: Some("b".into()) },
        Response::Hello { core: 1, cores: 2 },
        Response::Replicas {
            node: 3,
            replicas: vec![
                ReplicaStatus {
                    partition: 0,
                    leader: None,
                    leading: false,
                    members: vec![Member::full(1), Member::full(2), Member::full(3)],
                    members_committed: true,
                    commit: 9,
                    applied: 7,
                },
                ReplicaStatus {
                    partition: 1 << 20,
                    leader: Some(3),
                    leading: true,
                    members: vec![Member::full(1), Member::log(4), Member::full(3)],
                    members_committed: false,
                    commit: 1_000_000,
                    applied: 999_999,
                },
            ],
        },
        Response::Admin { slot: 42 },
        Response::Error(WireError::new(ErrorCode::ResourceNotFoundException, "no table named orders")),
        Response::Error(WireError::new(ErrorCode::ThrottlingException, "slow down")),
        Response::Error(WireError::new(
            ErrorCode::ItemCollectionSizeLimitExceededException,
            "Item collection size limit exceeded",
        )),
    ];
    for response in responses {
        assert_eq!(round_trip_response(&response), response);
    }
}

#[test]
fn bad_messages_get_errors_that_say_what_was_wrong() {
    let unknown = Request::decode(0x4242, &[]).unwrap_err();
    assert_eq!(unknown.code, ErrorCode::UnknownMessageType);
    let answer_as_request = Request::decode(MessageType::ItemResponse as u16, &[]).unwrap_err();
    assert_eq!(answer_as_request.code, ErrorCode::UnknownMessageType);
    let garbage = Request::decode(MessageType::PutItem as u16, &[1, 2, 3]).unwrap_err();
    assert_eq!(garbage.code, ErrorCode::MalformedMessage);
    assert!(garbage.message.contains("PutItem"), "{garbage}");

    let deep = (0..40).fold(AttributeValue::Null, |inner, _| AttributeValue::L(vec![inner]));
    let mut bytes = Vec::new();
    Request::PutItem {
        table: "t".into(),
        item: BTreeMap::from([("deep".to_string(), deep)]),
        return_old: false,
        expressions: Expressions::default(),
        return_old_on_failure: false,
    }
    .encode(1, &mut bytes);
    let error = Request::decode(MessageType::PutItem as u16, &bytes[frame::HEADER_LEN..]).unwrap_err();
    assert!(error.message.contains("deeper"), "{error}");
}

/// ReturnConsumedCapacity (and the routed and forwarded bits) travel in the request frame's flags, and the
/// consumed capacity in the four item answers; flags that mean nothing are refused by name.
#[test]
fn consumed_capacity_rides_with_item_requests_and_answers() {
    let request = Request::GetItem {
        table: "orders".into(),
        key: BTreeMap::from([("id".to_string(), AttributeValue::S("a".into()))]),
        consistent_read: false,
        read: ReadExpressions::default(),
    };
    for capacity in [ReturnConsumedCapacity::None, ReturnConsumedCapacity::Total, ReturnConsumedCapacity::Indexes] {
        for (routed, forwarded) in [(false, false), (true, false), (false, true), (true, true)] {
            let flags = RequestFlags { capacity, routed, forwarded };
            let mut bytes = Vec::new();
            request.encode_with_flags(3, flags, &mut bytes);
            let Ok(Decoded::Frame(frame, _)) = frame::decode(&bytes) else { panic!("one whole frame") };
            assert_eq!(RequestFlags::from_bits(frame.header.flags).unwrap(), flags);
            assert_eq!(Request::decode(frame.header.message_type, frame.payload).unwrap(), request);
        }
    }
    for bits in [3, 8, 0x4000, 0x8003, 0x8007] {
        let error = RequestFlags::from_bits(bits).unwrap_err();
        assert_eq!(error.code, ErrorCode::ValidationException);
        assert!(
            error.message.contains(&format!("{bits:#06x}")) && error.message.contains("INDEXES"),
            "{}",
            error.message
        );
    }

    let consumed = vec![
        ConsumedCapacity { table: "orders".into(), read_units: 0.5, write_units: 0.0, table_units: None },
        ConsumedCapacity { table: "lines".into(), read_units: 0.0, write_units: 3.0, table_units: Some(3.0) },
    ];
    assert_eq!(consumed[1].capacity_units(), 3.0);
    let answers = [
        Response::Item(None),
        Response::Items { items: vec![], scanned_count: 4, count: 0, last_evaluated_key: None },
        Response::BatchGetItem { responses: vec![], unprocessed: vec![] },
        Response::BatchWriteItem { unprocessed: vec![] },
    ];
    for answer in answers {
        let mut bytes = Vec::new();
        answer.encode_with_capacity(9, &consumed, &mut bytes);
        let Ok(Decoded::Frame(frame, _)) = frame::decode(&bytes) else { panic!("one whole frame") };
        assert_eq!(frame.header.flags, 0);
        let decoded = Response::decode_with_capacity(frame.header.message_type, frame.payload).unwrap();
        assert_eq!(decoded, (answer.clone(), consumed.clone()));
        let mut plain = Vec::new();
        answer.encode(9, &mut plain);
        let Ok(Decoded::Frame(frame, _)) = frame::decode(&plain) else { panic!("one whole frame") };
        assert_eq!(Response::decode_with_capacity(frame.header.message_type, frame.payload).unwrap().1, vec![]);
    }
}
