//! DynamoDB's JSON protocol (`X-Amz-Target: DynamoDB_20120810.<Operation>`), mapped onto the
//! same requests and answers as the binary protocol: a body becomes a `tessera_wire::Request`
//! that `Shard::execute` serves, and its `Response` becomes the body DynamoDB would send.
//! One implementation of semantics, two encodings. Pure: no I/O.

use serde_json::{json, Map, Value};
use tessera_engine::expr::{legacy, parse_on_condition_failure, ExprError, ReturnValues, Unparser};
use tessera_engine::{AttributeValue, Item, KeyAttribute, KeySchema, KeyType};
use tessera_wire::{
    ConsumedCapacity, ErrorCode, Expressions, Query, ReadExpressions, Request, RequestFlags, Response,
    ReturnConsumedCapacity, Scan, Select, TableDescription, TableKeys, TableStatus, Throughput, UpdateItem, WireError,
    Write,
};

use crate::json::{
    attribute_updates_from_json, consumed_capacity_to_json, expected_from_json, item_from_json, item_to_json,
    legacy_conditions_from_json, value_from_json, JsonError,
};
use crate::messages::{self, TableNameFaults};
use crate::shard::BATCH_WRITE_MAX;

/// The target prefix of DynamoDB's operations.
pub(crate) const TARGET_PREFIX: &str = "DynamoDB_20120810.";
const TYPE_PREFIX: &str = "com.amazonaws.dynamodb.v20120810#";
/// The account every ARN names (Tessera has no accounts).
const ACCOUNT: &str = "000000000000";
/// The parameters older SDKs send instead of expressions, and the expression parameters: a
/// request may use either kind, not both.
const LEGACY_PARAMETERS: [&str; 7] = [
    "Expected",
    "ConditionalOperator",
    "AttributeUpdates",
    "KeyConditions",
    "QueryFilter",
    "ScanFilter",
    "AttributesToGet",
];
const EXPRESSION_PARAMETERS: [&str; 7] = [
    "ConditionExpression",
    "UpdateExpression",
    "KeyConditionExpression",
    "FilterExpression",
    "ProjectionExpression",
    "ExpressionAttributeNames",
    "ExpressionAttributeValues",
];

/// An error answer: HTTP status, DynamoDB's `__type` and message, and for a failed condition
/// the item as it was when the request asked for it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub kind: String,
    pub message: String,
    pub item: Option<Item>,
}

impl ApiError {
    pub(crate) fn new(status: u16, kind: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError { status, kind: kind.into(), message: message.into(), item: None }
    }

    /// `ValidationException`, under the namespace DynamoDB gives it.
    pub(crate) fn validation(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "com.amazon.coral.validate#ValidationException", message)
    }

    /// `SerializationException`: the body is not JSON, or a member has the wrong JSON type.
    pub(crate) fn serialization(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "com.amazon.coral.service#SerializationException", message)
    }

    /// The answer's body. SerializationException's message is `Message`, the others'
    /// `message`, and an UnknownOperationException of an unknown target has none (MESSAGES.md,
    /// cross-cutting fact 1).
    pub(crate) fn body(&self) -> Value {
        let mut body = json!({ "__type": self.kind });
        if !self.message.is_empty() {
            let key = if self.kind.ends_with("#SerializationException") { "Message" } else { "message" };
            body[key] = json!(self.message);
        }
        if let Some(item) = &self.item {
            body["Item"] = item_to_json(item);
        }
        body
    }

    /// The error a binary-protocol answer maps to.
    pub(crate) fn from_wire(error: WireError) -> ApiError {
        let (status, kind) = match error.code {
            ErrorCode::ValidationException => return ApiError::validation(error.message),
            ErrorCode::ThrottlingException => (400, "com.amazon.coral.availability#ThrottlingException".to_string()),
            ErrorCode::InternalServerError => (500, format!("{TYPE_PREFIX}InternalServerError")),
            ErrorCode::ServiceUnavailable | ErrorCode::NotLeader => {
                (503, "com.amazon.coral.availability#ServiceUnavailableException".to_string())
            }
            ErrorCode::ResourceNotFoundException
            | ErrorCode::ResourceInUseException
            | ErrorCode::LimitExceededException
            | ErrorCode::ProvisionedThroughputExceededException
            | ErrorCode::ConditionalCheckFailedException
            | ErrorCode::ItemCollectionSizeLimitExceededException
            | ErrorCode::AccessDeniedException => (400, format!("{TYPE_PREFIX}{}", error.code.name())),
            // Framing and connection errors of the binary protocol cannot come from a request
            // made here (its SigV4 signature is checked by the endpoint); nor can WrongPartition
            // (the endpoint's requests are not routed by a client's map).
            ErrorCode::ChecksumMismatch
            | ErrorCode::WrongPartition
            | ErrorCode::MissingAuthenticationTokenException
            | ErrorCode::UnrecognizedClientException
            | ErrorCode::UnknownMessageType
            | ErrorCode::MalformedMessage
            | ErrorCode::FrameTooLarge
            | ErrorCode::Unknown(_) => (500, format!("{TYPE_PREFIX}InternalServerError")),
        };
        ApiError { status, kind, message: error.message, item: error.item }
    }
}

/// The operations the endpoint serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    CreateTable,
    DeleteTable,
    DescribeTable,
    ListTables,
    PutItem,
    GetItem,
    DeleteItem,
    UpdateItem,
    Query,
    Scan,
    BatchGetItem,
    BatchWriteItem,
    DescribeEndpoints,
    DescribeLimits,
    TagResource,
    UntagResource,
    ListTagsOfResource,
}

impl Operation {
    const ALL: [(Operation, &'static str); 17] = [
        (Operation::CreateTable, "CreateTable"),
        (Operation::DeleteTable, "DeleteTable"),
        (Operation::DescribeTable, "DescribeTable"),
        (Operation::ListTables, "ListTables"),
        (Operation::PutItem, "PutItem"),
        (Operation::GetItem, "GetItem"),
        (Operation::DeleteItem, "DeleteItem"),
        (Operation::UpdateItem, "UpdateItem"),
        (Operation::Query, "Query"),
        (Operation::Scan, "Scan"),
        (Operation::BatchGetItem, "BatchGetItem"),
        (Operation::BatchWriteItem, "BatchWriteItem"),
        (Operation::DescribeEndpoints, "DescribeEndpoints"),
        (Operation::DescribeLimits, "DescribeLimits"),
        (Operation::TagResource, "TagResource"),
        (Operation::UntagResource, "UntagResource"),
        (Operation::ListTagsOfResource, "ListTagsOfResource"),
    ];

    /// DynamoDB's operations (API version 2012-08-10) that the endpoint does not serve.
    const UNSERVED: [&'static str; 40] = [
        "BatchExecuteStatement",
        "CreateBackup",
        "CreateGlobalTable",
        "DeleteBackup",
        "DeleteResourcePolicy",
        "DescribeBackup",
        "DescribeContinuousBackups",
        "DescribeContributorInsights",
        "DescribeExport",
        "DescribeGlobalTable",
        "DescribeGlobalTableSettings",
        "DescribeImport",
        "DescribeKinesisStreamingDestination",
        "DescribeTableReplicaAutoScaling",
        "DescribeTimeToLive",
        "DisableKinesisStreamingDestination",
        "EnableKinesisStreamingDestination",
        "ExecuteStatement",
        "ExecuteTransaction",
        "ExportTableToPointInTime",
        "GetResourcePolicy",
        "ImportTable",
        "ListBackups",
        "ListContributorInsights",
        "ListExports",
        "ListGlobalTables",
        "ListImports",
        "PutResourcePolicy",
        "RestoreTableFromBackup",
        "RestoreTableToPointInTime",
        "TransactGetItems",
        "TransactWriteItems",
        "UpdateContinuousBackups",
        "UpdateContributorInsights",
        "UpdateGlobalTable",
        "UpdateGlobalTableSettings",
        "UpdateKinesisStreamingDestination",
        "UpdateTable",
        "UpdateTableReplicaAutoScaling",
        "UpdateTimeToLive",
    ];

    /// The operation an `X-Amz-Target` header names; DynamoDB's UnknownOperationException
    /// when it names none this endpoint serves, saying so when it is one of DynamoDB's.
    pub(crate) fn from_target(target: Option<&str>) -> Result<Operation, ApiError> {
        let unknown =
            |message: String| ApiError::new(400, "com.amazon.coral.service#UnknownOperationException", message);
        let name =
            target.and_then(|target| target.strip_prefix(TARGET_PREFIX)).ok_or_else(|| unknown(String::new()))?;
        if let Some((operation, _)) = Operation::ALL.iter().find(|(_, known)| *known == name) {
            return Ok(*operation);
        }
        Err(unknown(if Operation::UNSERVED.contains(&name) {
            messages::unsupported_operation(name)
        } else {
            String::new()
        }))
    }
}

/// What a request body asks for.
#[derive(Debug, PartialEq)]
pub(crate) enum Call {
    /// A request for the engine, with the frame flags it would carry, and what its answer's
    /// body needs of the request.
    Engine(Box<Request>, RequestFlags, Reply),
    /// An answer that needs no engine (DescribeEndpoints, DescribeLimits).
    Answer(Value),
}

/// What an answer's body takes from its request besides the engine's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The ResourceArn of a tag operation (a missing table's error names it).
    pub arn: Option<String>,
    /// ListTagsOfResource's NextToken: the key the previous page ended with.
    pub next_token: Option<String>,
    /// A Query's filter came as the legacy QueryFilter (its errors name that parameter).
    pub query_filter: bool,
}

/// Reads the body of `operation`; `host` is the request's Host (DescribeEndpoints names it),
/// `region` the region its credential names (as its tables' ARNs do).
pub(crate) fn decode(operation: Operation, body: &[u8], host: &str, region: &str) -> Result<Call, ApiError> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|error| ApiError::serialization(format!("the request body is not valid JSON: {error}")))?;
    let body = Body(json.as_object().ok_or_else(|| ApiError::serialization("the request body must be a JSON object"))?);
    let capacity = body.capacity()?;
    let flags = RequestFlags { capacity, ..RequestFlags::default() };
    let engine = |request| Ok(Call::Engine(Box::new(request), flags, Reply::default()));
    match operation {
        Operation::CreateTable => engine(create_table(&body)?),
        Operation::TagResource | Operation::UntagResource | Operation::ListTagsOfResource => {
            tag_request(operation, &body, region, flags)
        }
        Operation::DeleteTable => engine(Request::DeleteTable { table: body.table()? }),
        Operation::DescribeTable => engine(Request::DescribeTable { table: body.table()?, counts: true }),
        Operation::ListTables => {
            let limit = body.integer("Limit", "limit", 1, 100)?.unwrap_or(100) as u32;
            let exclusive_start_table = body.string("ExclusiveStartTableName")?.map(str::to_string);
            engine(Request::ListTables { exclusive_start_table, limit })
        }
        Operation::PutItem => {
            let (return_old, return_old_on_failure) = body.write_returns("PutItem")?;
            engine(Request::PutItem {
                table: body.table()?,
                item: body.item("Item", "item")?,
                return_old,
                expressions: body.write_expressions()?.0,
                return_old_on_failure,
            })
        }
        Operation::GetItem => engine(Request::GetItem {
            table: body.table()?,
            key: body.item("Key", "key")?,
            consistent_read: body.boolean("ConsistentRead")?,
            read: body.read_expressions(false)?,
        }),
        Operation::DeleteItem => {
            let (return_old, return_old_on_failure) = body.write_returns("DeleteItem")?;
            engine(Request::DeleteItem {
                table: body.table()?,
                key: body.item("Key", "key")?,
                return_old,
                expressions: body.write_expressions()?.0,
                return_old_on_failure,
            })
        }
        Operation::UpdateItem => {
            let return_values = match body.string("ReturnValues")? {
                Some(name) => ReturnValues::parse(name, "UpdateItem").map_err(ApiError::validation)?,
                None => ReturnValues::None,
            };
            let (expressions, update) = body.write_expressions()?;
            engine(Request::UpdateItem(UpdateItem {
                table: body.table()?,
                key: body.item("Key", "key")?,
                update: update.unwrap_or_default(),
                expressions,
                return_values,
                return_old_on_failure: body.on_condition_failure()?,
            }))
        }
        Operation::Query => {
            body.no_index()?;
            let read = body.read_expressions(true)?;
            if read.key_condition.is_none() {
                return Err(ApiError::validation(
                    "Either the KeyConditions or KeyConditionExpression parameter must be specified in the request.",
                ));
            }
            let query = Request::Query(Query {
                table: body.table()?,
                // The KeyConditionExpression replaces these.
                partition_key: AttributeValue::Null,
                sort: None,
                backward: !body.boolean_or("ScanIndexForward", true)?,
                limit: body.integer("Limit", "limit", 1, u32::MAX.into())?.unwrap_or(0) as u32,
                exclusive_start_key: body.optional_item("ExclusiveStartKey")?,
                consistent_read: body.boolean("ConsistentRead")?,
                read,
            });
            let reply = Reply { query_filter: body.get("QueryFilter").is_some(), ..Reply::default() };
            Ok(Call::Engine(Box::new(query), flags, reply))
        }
        Operation::Scan => {
            body.no_index()?;
            let segment = body.integer("Segment", "segment", 0, 999_999)?;
            let total_segments = body.integer("TotalSegments", "totalSegments", 1, 1_000_000)?;
            let (segment, total_segments) = match (segment, total_segments) {
                (None, None) => (0, 0),
                (Some(segment), Some(total)) if segment < total => (segment as u32, total as u32),
                (Some(segment), Some(total)) => {
                    return Err(ApiError::validation(format!(
                        "The Segment parameter is zero-based and must be less than parameter TotalSegments: Segment: {segment} is not less than TotalSegments: {total}"
                    )))
                }
                (Some(_), None) => {
                    return Err(ApiError::validation(
                        "The TotalSegments parameter is required but was not present in the request when Segment parameter is present",
                    ))
                }
                (None, Some(_)) => {
                    return Err(ApiError::validation(
                        "The Segment parameter is required but was not present in the request when parameter TotalSegments is present",
                    ))
                }
            };
            engine(Request::Scan(Scan {
                table: body.table()?,
                segment,
                total_segments,
                limit: body.integer("Limit", "limit", 1, u32::MAX.into())?.unwrap_or(0) as u32,
                exclusive_start_key: body.optional_item("ExclusiveStartKey")?,
                consistent_read: body.boolean("ConsistentRead")?,
                read: body.read_expressions(false)?,
            }))
        }
        Operation::BatchGetItem => engine(Request::BatchGetItem(batch_get(&body)?)),
        Operation::BatchWriteItem => engine(Request::BatchWriteItem(batch_write(&body)?)),
        Operation::DescribeEndpoints => {
            Ok(Call::Answer(json!({ "Endpoints": [{ "Address": host, "CachePeriodInMinutes": 1440 }] })))
        }
        Operation::DescribeLimits => Ok(Call::Answer(json!({
            "AccountMaxReadCapacityUnits": 80000,
            "AccountMaxWriteCapacityUnits": 80000,
            "TableMaxReadCapacityUnits": 40000,
            "TableMaxWriteCapacityUnits": 40000,
        }))),
    }
}

/// The body of `operation`'s answer, given what the engine answered.
pub(crate) fn encode(
    operation: Operation,
    response: Response,
    consumed: &[ConsumedCapacity],
    region: &str,
    reply: &Reply,
) -> Result<Value, ApiError> {
    let mut body = Map::new();
    match response {
        Response::Error(error) => {
            return Err(match &reply.arn {
                // A tag operation's missing table is named by its ARN.
                Some(arn) if error.code == ErrorCode::ResourceNotFoundException => {
                    ApiError::from_wire(WireError::new(error.code, messages::arn_not_found(arn)))
                }
                _ if reply.query_filter => {
                    let mut error = error;
                    if let Some(message) = messages::as_query_filter_message(&error.message) {
                        error.message = message;
                    }
                    ApiError::from_wire(error)
                }
                _ => ApiError::from_wire(error),
            });
        }
        Response::Table(table) => {
            let name = if operation == Operation::DescribeTable { "Table" } else { "TableDescription" };
            let mut description = describe(&table, region);
            if operation == Operation::DeleteTable {
                // DeleteTable's answer has no key schema, definitions or creation time.
                for member in ["KeySchema", "AttributeDefinitions", "CreationDateTime"] {
                    description.as_object_mut().map(|members| members.remove(member));
                }
            }
            body.insert(name.into(), description);
        }
        // TagResource and UntagResource answer an empty body; ListTagsOfResource the tags
        // after NextToken's key (all of them: a table has at most 50).
        Response::Tags(tags) => {
            if operation == Operation::ListTagsOfResource {
                let after = reply.next_token.as_deref();
                let tags: Vec<Value> = tags
                    .iter()
                    .filter(|(key, _)| after.is_none_or(|after| key.as_str() > after))
                    .map(|(key, value)| json!({ "Key": key, "Value": value }))
                    .collect();
                body.insert("Tags".into(), Value::Array(tags));
            }
        }
        Response::ListTables { tables, last_evaluated_table } => {
            body.insert("TableNames".into(), json!(tables));
            if let Some(last) = last_evaluated_table {
                body.insert("LastEvaluatedTableName".into(), json!(last));
            }
        }
        Response::Item(item) => {
            if let Some(item) = item {
                let name = if operation == Operation::GetItem { "Item" } else { "Attributes" };
                body.insert(name.into(), item_to_json(&item));
            }
        }
        Response::Items { items, scanned_count, count, last_evaluated_key } => {
            body.insert("Count".into(), json!(count));
            body.insert("ScannedCount".into(), json!(scanned_count));
            // Select COUNT answers no Items member at all.
            if !(items.is_empty() && count > 0) {
                body.insert("Items".into(), Value::Array(items.iter().map(item_to_json).collect()));
            }
            if let Some(key) = last_evaluated_key {
                body.insert("LastEvaluatedKey".into(), item_to_json(&key));
            }
        }
        Response::BatchGetItem { responses, unprocessed } => {
            let responses: Map<String, Value> = responses
                .into_iter()
                .map(|(table, items)| (table, Value::Array(items.iter().map(item_to_json).collect())))
                .collect();
            let unprocessed: Map<String, Value> = unprocessed
                .into_iter()
                .map(|keys| {
                    let mut entry = Map::new();
                    entry.insert("Keys".into(), Value::Array(keys.keys.iter().map(item_to_json).collect()));
                    if keys.consistent_read {
                        entry.insert("ConsistentRead".into(), json!(true));
                    }
                    if let Some(projection) = &keys.read.projection {
                        entry.insert("ProjectionExpression".into(), json!(projection));
                    }
                    if !keys.read.names.is_empty() {
                        entry.insert("ExpressionAttributeNames".into(), names_to_json(&keys.read.names));
                    }
                    (keys.table, Value::Object(entry))
                })
                .collect();
            body.insert("Responses".into(), Value::Object(responses));
            body.insert("UnprocessedKeys".into(), Value::Object(unprocessed));
        }
        Response::BatchWriteItem { unprocessed } => {
            let mut tables: Map<String, Value> = Map::new();
            for write in unprocessed {
                let (table, request) = match write {
                    Write::Put { table, item } => (table, json!({ "PutRequest": { "Item": item_to_json(&item) } })),
                    Write::Delete { table, key } => (table, json!({ "DeleteRequest": { "Key": item_to_json(&key) } })),
                };
                if let Value::Array(requests) = tables.entry(table).or_insert_with(|| Value::Array(Vec::new())) {
                    requests.push(request);
                }
            }
            body.insert("UnprocessedItems".into(), Value::Object(tables));
        }
        other @ (Response::Hello { .. } | Response::Replicas { .. } | Response::Admin { .. }) => {
            return Err(ApiError::new(
                500,
                format!("{TYPE_PREFIX}InternalServerError"),
                format!("{operation:?} was answered with {other:?}"),
            ))
        }
    }
    if !consumed.is_empty() {
        let batch = matches!(operation, Operation::BatchGetItem | Operation::BatchWriteItem);
        let capacity = if batch {
            Value::Array(consumed.iter().map(consumed_capacity_to_json).collect())
        } else {
            consumed_capacity_to_json(&consumed[0])
        };
        body.insert("ConsumedCapacity".into(), capacity);
    }
    Ok(Value::Object(body))
}

/// A table as DescribeTable shows it.
fn describe(table: &TableDescription, region: &str) -> Value {
    let keys: Vec<&KeyAttribute> = std::iter::once(&table.key_schema.partition).chain(&table.key_schema.sort).collect();
    let key_schema: Vec<Value> = keys
        .iter()
        .zip(["HASH", "RANGE"])
        .map(|(key, kind)| json!({ "AttributeName": key.name, "KeyType": kind }))
        .collect();
    let definitions: Vec<Value> =
        keys.iter().map(|key| json!({ "AttributeName": key.name, "AttributeType": key.key_type.name() })).collect();
    let status = match table.status {
        TableStatus::Creating => "CREATING",
        TableStatus::Active => "ACTIVE",
        TableStatus::Deleting => "DELETING",
    };
    let created = table.created_at_ms as f64 / 1000.0;
    // A provisioned table's answer has no BillingModeSummary (PROVISIONED is the default);
    // an on-demand table's throughput is 0 units.
    let (read_units, write_units) =
        table.throughput.map_or((0, 0), |throughput| (throughput.read_units, throughput.write_units));
    let mut description = json!({
        "TableName": table.name,
        "TableStatus": status,
        "KeySchema": key_schema,
        "AttributeDefinitions": definitions,
        "CreationDateTime": created,
        "ItemCount": table.item_count,
        "TableSizeBytes": table.size_bytes,
        "TableArn": format!("arn:aws:dynamodb:{region}:{ACCOUNT}:table/{}", table.name),
        "TableId": format!("{:08x}-0000-4000-8000-{:012x}", table.created_at_ms >> 16 & 0xffff_ffff, table.created_at_ms & 0xffff_ffff_ffff),
        "ProvisionedThroughput": {
            "NumberOfDecreasesToday": 0,
            "ReadCapacityUnits": read_units,
            "WriteCapacityUnits": write_units,
        },
        "DeletionProtectionEnabled": false,
    });
    if table.throughput.is_none() {
        description["BillingModeSummary"] =
            json!({ "BillingMode": "PAY_PER_REQUEST", "LastUpdateToPayPerRequestDateTime": created });
    }
    description
}

/// The table a tag operation's ResourceArn names, as DynamoDB refuses what names none: no
/// ARN, not an ARN, not a table's ARN; a table ARN of another region or account, or of a name
/// no table can have, names no table here.
fn resource_table(body: &Body<'_>, region: &str) -> Result<(String, String), ApiError> {
    let arn = body.string("ResourceArn")?.ok_or_else(|| ApiError::validation(messages::ARN_MISSING))?;
    if !arn.starts_with("arn:") {
        return Err(ApiError::validation(messages::not_an_arn(arn)));
    }
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ["arn", "aws", "dynamodb", arn_region, account, resource] = parts.as_slice() else {
        return Err(ApiError::validation(messages::not_a_table_arn(arn)));
    };
    let Some(name) = resource.strip_prefix("table/").filter(|name| !name.is_empty() && !name.contains('/')) else {
        return Err(ApiError::validation(messages::not_a_table_arn(arn)));
    };
    if *arn_region != region || *account != ACCOUNT || TableNameFaults::of(name).any() {
        return Err(ApiError::from_wire(WireError::new(
            ErrorCode::ResourceNotFoundException,
            messages::arn_not_found(arn),
        )));
    }
    Ok((name.to_string(), arn.to_string()))
}

/// A tag list (`field` names it in errors: `tags`), as (key, value) pairs.
fn tags(values: &[Value], field: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut tags = Vec::new();
    for (index, tag) in values.iter().enumerate() {
        let member = |name: &str, camel: &str| match tag.get(name) {
            None | Some(Value::Null) => Err(Body::missing(&format!("{field}.{}.member.{camel}", index + 1))),
            Some(Value::String(text)) => Ok(text.clone()),
            Some(_) => Err(ApiError::serialization(format!("{name} must be a string"))),
        };
        if !tag.is_object() {
            return Err(ApiError::serialization("a Tag must be an object"));
        }
        tags.push((member("Key", "key")?, member("Value", "value")?));
    }
    Ok(tags)
}

/// TagResource, UntagResource and ListTagsOfResource, checked in DynamoDB's order.
fn tag_request(operation: Operation, body: &Body<'_>, region: &str, flags: RequestFlags) -> Result<Call, ApiError> {
    let arn = body.string("ResourceArn")?;
    if let Some(arn) = arn.filter(|arn| !arn.starts_with("arn:")) {
        return Err(ApiError::validation(messages::not_an_arn(arn)));
    }
    let (request, next_token) = match operation {
        Operation::TagResource => {
            let list = body.get("Tags").ok_or_else(|| Body::missing("tags"))?;
            let list = list.as_array().ok_or_else(|| ApiError::serialization("Tags must be an array"))?;
            let (table, _) = resource_table(body, region)?;
            if list.is_empty() {
                return Err(ApiError::validation(messages::TAGS_EMPTY));
            }
            (Request::TagResource { table, tags: tags(list, "tags")? }, None)
        }
        Operation::UntagResource => {
            let list = body.get("TagKeys").ok_or_else(|| Body::missing("tagKeys"))?;
            let list = list.as_array().ok_or_else(|| ApiError::serialization("TagKeys must be an array"))?;
            let (table, _) = resource_table(body, region)?;
            if list.is_empty() {
                return Err(ApiError::validation(messages::TAG_KEYS_EMPTY));
            }
            let keys = list
                .iter()
                .map(|key| {
                    key.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| ApiError::serialization("a tag key must be a string"))
                })
                .collect::<Result<_, _>>()?;
            (Request::UntagResource { table, keys }, None)
        }
        _ => {
            let (table, _) = resource_table(body, region)?;
            (Request::ListTagsOfResource { table }, body.string("NextToken")?.map(str::to_string))
        }
    };
    let reply = Reply { arn: arn.map(str::to_string), next_token, ..Reply::default() };
    Ok(Call::Engine(Box::new(request), flags, reply))
}

fn names_to_json(names: &[(String, String)]) -> Value {
    Value::Object(names.iter().map(|(placeholder, name)| (placeholder.clone(), json!(name))).collect())
}

fn create_table(body: &Body<'_>) -> Result<Request, ApiError> {
    let table = body.table()?;
    for unsupported in ["GlobalSecondaryIndexes", "LocalSecondaryIndexes", "StreamSpecification"] {
        if body.0.get(unsupported).is_some_and(|value| !value.is_null() && value != &json!([])) {
            return Err(ApiError::validation(format!("{unsupported} are not supported by Tessera yet")));
        }
    }
    if body.boolean("DeletionProtectionEnabled")? {
        return Err(ApiError::validation("DeletionProtectionEnabled is not supported by Tessera yet"));
    }
    match body.string("BillingMode")? {
        None | Some("PAY_PER_REQUEST") | Some("PROVISIONED") => {}
        Some(other) => {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{other}' at 'billingMode' failed to satisfy constraint: Member must satisfy enum value set: [PROVISIONED, PAY_PER_REQUEST]"
            )))
        }
    }
    let mut types = Vec::new();
    for definition in body.array("AttributeDefinitions", "attributeDefinitions")? {
        let name = member_string(definition, "AttributeName")?;
        let key_type = match member_string(definition, "AttributeType")? {
            "S" => KeyType::S,
            "N" => KeyType::N,
            "B" => KeyType::B,
            other => {
                return Err(ApiError::validation(format!(
                    "1 validation error detected: Value '{other}' at 'attributeDefinitions.1.member.attributeType' failed to satisfy constraint: Member must satisfy enum value set: [B, N, S]"
                )))
            }
        };
        if types.iter().any(|(known, _)| known == &name) {
            return Err(ApiError::validation(format!(
                "Cannot have two attributes with the same name: {name} is defined twice in AttributeDefinitions"
            )));
        }
        types.push((name, key_type));
    }
    let schema = body.array("KeySchema", "keySchema")?;
    let mut keys = Vec::new();
    for element in schema {
        keys.push((member_string(element, "AttributeName")?, member_string(element, "KeyType")?));
    }
    // Billing is checked after the request's shape, before its keys' meaning (as DynamoDB).
    let throughput = billing(body)?;
    let key = |name: &str| -> Result<KeyAttribute, ApiError> {
        let key_type = types.iter().find(|(known, _)| *known == name).map(|(_, key_type)| *key_type).ok_or_else(|| {
            ApiError::validation(
                "One or more parameter values were invalid: Some index key attributes are not defined in AttributeDefinitions. Keys: [".to_string()
                    + name
                    + "], AttributeDefinitions: ["
                    + &types.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
                    + "]",
            )
        })?;
        Ok(KeyAttribute { name: name.to_string(), key_type })
    };
    let key_schema = match keys.as_slice() {
        [(partition, "HASH")] => KeySchema { partition: key(partition)?, sort: None },
        [(partition, "HASH"), (sort, "RANGE")] => KeySchema { partition: key(partition)?, sort: Some(key(sort)?) },
        _ => {
            return Err(ApiError::validation(
                "Invalid KeySchema: the first element must be the HASH key, optionally followed by one RANGE key",
            ))
        }
    };
    if types.len() != keys.len() {
        return Err(ApiError::validation(
            "One or more parameter values were invalid: Number of attributes in KeySchema does not exactly match number of attributes defined in AttributeDefinitions",
        ));
    }
    let tags = match body.get("Tags") {
        None => Vec::new(),
        Some(Value::Array(list)) => tags(list, "tags")?,
        Some(_) => return Err(ApiError::serialization("Tags must be an array")),
    };
    Ok(Request::CreateTable { table, key_schema, partitions: 0, throughput, tags, ranges: Vec::new() })
}

/// CreateTable's BillingMode and ProvisionedThroughput: the throughput of a PROVISIONED table
/// (the default), `None` for PAY_PER_REQUEST. The units' own constraints come first, as
/// DynamoDB checks a request's shape before its meaning.
fn billing(body: &Body<'_>) -> Result<Option<Throughput>, ApiError> {
    let throughput = match body.get("ProvisionedThroughput") {
        None => None,
        Some(Value::Object(units)) => {
            let mut faults = Vec::new();
            let mut read = |member: &'static str, camel: &'static str| match units.get(member) {
                None | Some(Value::Null) => {
                    faults.push((camel, None));
                    Ok(0)
                }
                Some(value) => {
                    let number = value
                        .as_i64()
                        .ok_or_else(|| ApiError::serialization(format!("{member} must be an integer")))?;
                    if number < 1 {
                        faults.push((camel, Some(number)));
                    }
                    Ok(number.max(0) as u64)
                }
            };
            let write_units = read("WriteCapacityUnits", "writeCapacityUnits")?;
            let read_units = read("ReadCapacityUnits", "readCapacityUnits")?;
            if !faults.is_empty() {
                return Err(ApiError::validation(messages::bad_capacity_units(&faults)));
            }
            Some(Throughput { read_units, write_units })
        }
        Some(_) => return Err(ApiError::serialization("ProvisionedThroughput must be an object")),
    };
    match (body.string("BillingMode")?, throughput) {
        (Some("PAY_PER_REQUEST"), Some(_)) => Err(ApiError::validation(messages::PAY_PER_REQUEST_WITH_THROUGHPUT)),
        (Some("PAY_PER_REQUEST"), None) => Ok(None),
        (_, None) => Err(ApiError::validation(messages::PROVISIONED_WITHOUT_THROUGHPUT)),
        (_, throughput) => Ok(throughput),
    }
}

fn batch_get(body: &Body<'_>) -> Result<Vec<TableKeys>, ApiError> {
    let tables = body.object("RequestItems", "requestItems")?;
    let mut requests = Vec::new();
    for (table, entry) in tables {
        let entry = Body(
            entry
                .as_object()
                .ok_or_else(|| ApiError::serialization(format!("RequestItems.{table} must be an object")))?,
        );
        let keys = entry
            .array("Keys", "keys")?
            .iter()
            .map(|key| {
                item_from_json(key)
                    .map_err(|error| json_error(error, |error| format!("RequestItems.{table}.Keys: {error}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        requests.push(TableKeys {
            table: table.clone(),
            keys,
            consistent_read: entry.boolean("ConsistentRead")?,
            read: entry.read_expressions(false)?,
        });
    }
    Ok(requests)
}

fn batch_write(body: &Body<'_>) -> Result<Vec<Write>, ApiError> {
    let tables = body.object("RequestItems", "requestItems")?;
    let mut writes = Vec::new();
    let lists = tables
        .iter()
        .map(|(table, requests)| match requests.as_array() {
            Some(requests) => Ok((table, requests)),
            None => Err(ApiError::serialization(format!("RequestItems.{table} must be an array"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if lists.iter().any(|(_, requests)| requests.is_empty() || requests.len() > BATCH_WRITE_MAX) {
        let sizes: Vec<(&str, usize)> =
            lists.iter().map(|(table, requests)| (table.as_str(), requests.len())).collect();
        return Err(ApiError::validation(messages::batch_write_table_size(&sizes)));
    }
    for (table, requests) in lists {
        for request in requests {
            let put = request.get("PutRequest");
            let delete = request.get("DeleteRequest");
            let write = match (put, delete) {
                (Some(put), None) => Write::Put { table: table.clone(), item: member_item(put, "Item")? },
                (None, Some(delete)) => Write::Delete { table: table.clone(), key: member_item(delete, "Key")? },
                _ => {
                    return Err(ApiError::validation(
                        "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes: each WriteRequest must hold exactly one of PutRequest and DeleteRequest",
                    ))
                }
            };
            writes.push(write);
        }
    }
    Ok(writes)
}

/// The answer to DynamoDB JSON that was refused: SerializationException with DynamoDB's text,
/// or ValidationException with the message `invalid` makes.
fn json_error(error: JsonError, invalid: impl FnOnce(String) -> String) -> ApiError {
    match error {
        JsonError::Serialization(message) => ApiError::serialization(message),
        JsonError::Invalid(message) => ApiError::validation(invalid(message)),
    }
}

fn member_string<'a>(value: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    match value.get(name) {
        Some(Value::String(text)) => Ok(text),
        None | Some(Value::Null) => Err(ApiError::validation(format!("{name} must not be null"))),
        Some(_) => Err(ApiError::serialization(format!("{name} must be a string"))),
    }
}

fn member_item(value: &Value, name: &str) -> Result<Item, ApiError> {
    match value.get(name) {
        None | Some(Value::Null) => Err(ApiError::validation(format!("{name} must not be null"))),
        Some(item) => item_from_json(item).map_err(|error| json_error(error, |error| error)),
    }
}

/// A request body's members, read with DynamoDB's errors: a missing required member is a
/// ValidationException naming it, a member of the wrong JSON type a SerializationException.
struct Body<'a>(&'a Map<String, Value>);

impl Body<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|value| !value.is_null())
    }

    fn missing(field: &str) -> ApiError {
        ApiError::validation(format!(
            "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
        ))
    }

    fn string(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(ApiError::serialization(format!("{name} must be a string"))),
        }
    }

    fn table(&self) -> Result<String, ApiError> {
        self.string("TableName")?.map(str::to_string).ok_or_else(|| Body::missing("tableName"))
    }

    fn boolean(&self, name: &str) -> Result<bool, ApiError> {
        self.boolean_or(name, false)
    }

    fn boolean_or(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(Value::Bool(flag)) => Ok(*flag),
            Some(_) => Err(ApiError::serialization(format!("{name} must be true or false"))),
        }
    }

    /// An integer member within `min..=max` (`field` is DynamoDB's name for it in errors).
    fn integer(&self, name: &str, field: &str, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
        let Some(value) = self.get(name) else { return Ok(None) };
        let number = value.as_i64().ok_or_else(|| ApiError::serialization(format!("{name} must be an integer")))?;
        if number < min as i64 {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{number}' at '{field}' failed to satisfy constraint: Member must have value greater than or equal to {min}"
            )));
        }
        if number as u64 > max {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{number}' at '{field}' failed to satisfy constraint: Member must have value less than or equal to {max}"
            )));
        }
        Ok(Some(number as u64))
    }

    fn array(&self, name: &str, field: &str) -> Result<&Vec<Value>, ApiError> {
        match self.get(name) {
            None => Err(Body::missing(field)),
            Some(Value::Array(values)) => Ok(values),
            Some(_) => Err(ApiError::serialization(format!("{name} must be an array"))),
        }
    }

    fn object(&self, name: &str, field: &str) -> Result<&Map<String, Value>, ApiError> {
        match self.get(name) {
            None => Err(Body::missing(field)),
            Some(Value::Object(map)) => Ok(map),
            Some(_) => Err(ApiError::serialization(format!("{name} must be an object"))),
        }
    }

    fn item(&self, name: &str, field: &str) -> Result<Item, ApiError> {
        self.optional_item(name)?.ok_or_else(|| Body::missing(field))
    }

    fn optional_item(&self, name: &str) -> Result<Option<Item>, ApiError> {
        self.get(name)
            .map(|json| {
                item_from_json(json).map_err(|error| {
                    json_error(error, |error| format!("One or more parameter values were invalid: {name}: {error}"))
                })
            })
            .transpose()
    }

    fn capacity(&self) -> Result<ReturnConsumedCapacity, ApiError> {
        match self.string("ReturnConsumedCapacity")? {
            None | Some("NONE") => Ok(ReturnConsumedCapacity::None),
            Some("TOTAL") => Ok(ReturnConsumedCapacity::Total),
            Some("INDEXES") => Ok(ReturnConsumedCapacity::Indexes),
            Some(other) => Err(ApiError::validation(format!(
                "1 validation error detected: Value '{other}' at 'returnConsumedCapacity' failed to satisfy constraint: Member must satisfy enum value set: [INDEXES, TOTAL, NONE]"
            ))),
        }
    }

    /// The legacy parameters of the request written as expressions (None when it has none):
    /// the same trees the legacy forms stand for (`tessera_engine::expr::legacy`), as text with
    /// placeholders of their own, so that they are served and forwarded as any expression is.
    /// A request with both kinds of parameter is refused, as DynamoDB refuses it.
    fn legacy(&self) -> Result<Option<Legacy>, ApiError> {
        let present = |names: &[&'static str]| -> Vec<&'static str> {
            names.iter().copied().filter(|name| self.get(name).is_some()).collect()
        };
        let (old, new) = (present(&LEGACY_PARAMETERS), present(&EXPRESSION_PARAMETERS));
        if old.is_empty() {
            return Ok(None);
        }
        if !new.is_empty() {
            return Err(ApiError::validation(format!(
                "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {{{}}} Expression parameters: {{{}}}",
                old.join(", "),
                new.join(", ")
            )));
        }
        let or = match self.string("ConditionalOperator")? {
            None | Some("AND") => false,
            Some("OR") => true,
            Some(other) => {
                return Err(ApiError::validation(format!(
                    "1 validation error detected: Value '{other}' at 'conditionalOperator' failed to satisfy constraint: Member must satisfy enum value set: [OR, AND]"
                )))
            }
        };
        let conditions = ["Expected", "QueryFilter", "ScanFilter"];
        let has_conditions = |name: &&str| self.get(name).and_then(Value::as_object).is_some_and(|map| !map.is_empty());
        if self.get("ConditionalOperator").is_some() && !conditions.iter().any(has_conditions) {
            return Err(ApiError::validation(messages::CONDITIONAL_OPERATOR_ALONE));
        }
        let refused = |error| json_error(error, |error| format!("One or more parameter values were invalid: {error}"));
        let invalid = |error: ExprError| ApiError::validation(error.to_string());
        let mut unparser = Unparser::default();
        let mut legacy = Legacy::default();
        if let Some(expected) = self.get("Expected") {
            let condition = legacy::expected(&expected_from_json(expected).map_err(refused)?, or).map_err(invalid)?;
            legacy.condition = condition.map(|condition| unparser.condition(&condition));
        }
        if let Some(updates) = self.get("AttributeUpdates") {
            let update =
                legacy::attribute_updates(&attribute_updates_from_json(updates).map_err(refused)?).map_err(invalid)?;
            legacy.update = Some(unparser.update(&update));
        }
        if let Some(conditions) = self.get("KeyConditions") {
            let condition =
                legacy::filter(&legacy_conditions_from_json(conditions).map_err(refused)?, false).map_err(invalid)?;
            legacy.key_condition = condition.map(|condition| unparser.condition(&condition));
        }
        if let Some(filter) = self.get("QueryFilter").or_else(|| self.get("ScanFilter")) {
            let condition =
                legacy::filter(&legacy_conditions_from_json(filter).map_err(refused)?, or).map_err(invalid)?;
            legacy.filter = condition.map(|condition| unparser.condition(&condition));
        }
        if let Some(attributes) = self.get("AttributesToGet") {
            let names: Vec<String> = attributes
                .as_array()
                .and_then(|names| names.iter().map(|name| name.as_str().map(str::to_string)).collect())
                .ok_or_else(|| ApiError::serialization("AttributesToGet must be an array of strings"))?;
            let paths = legacy::attributes_to_get(&names).map_err(invalid)?;
            legacy.projection = Some(unparser.projection(&paths));
        }
        legacy.names = unparser.names;
        legacy.values = unparser.values;
        Ok(Some(legacy))
    }

    fn no_index(&self) -> Result<(), ApiError> {
        match self.string("IndexName")? {
            Some(index) => Err(ApiError::validation(format!("The table does not have the specified index: {index}"))),
            None => Ok(()),
        }
    }

    fn names(&self) -> Result<Vec<(String, String)>, ApiError> {
        let Some(names) = self.get("ExpressionAttributeNames") else { return Ok(Vec::new()) };
        let names =
            names.as_object().ok_or_else(|| ApiError::serialization("ExpressionAttributeNames must be an object"))?;
        names
            .iter()
            .map(|(placeholder, name)| match name {
                Value::String(name) => Ok((placeholder.clone(), name.clone())),
                _ => Err(ApiError::serialization(format!("ExpressionAttributeNames.{placeholder} must be a string"))),
            })
            .collect()
    }

    fn values(&self) -> Result<Vec<(String, AttributeValue)>, ApiError> {
        let Some(values) = self.get("ExpressionAttributeValues") else { return Ok(Vec::new()) };
        let values =
            values.as_object().ok_or_else(|| ApiError::serialization("ExpressionAttributeValues must be an object"))?;
        values
            .iter()
            .map(|(placeholder, value)| {
                let value = value_from_json(value, placeholder).map_err(|error| {
                    json_error(error, |error| format!("ExpressionAttributeValues contains invalid value: {error}"))
                })?;
                Ok((placeholder.clone(), value))
            })
            .collect()
    }

    /// A write's ConditionExpression and placeholders, and its UpdateExpression, from the
    /// expression parameters or the legacy ones.
    fn write_expressions(&self) -> Result<(Expressions, Option<String>), ApiError> {
        if let Some(legacy) = self.legacy()? {
            let expressions = Expressions { condition: legacy.condition, names: legacy.names, values: legacy.values };
            return Ok((expressions, legacy.update));
        }
        let expressions = Expressions {
            condition: self.string("ConditionExpression")?.map(str::to_string),
            names: self.names()?,
            values: self.values()?,
        };
        // The engine refuses a blank expression, but an empty UpdateExpression cannot reach it:
        // the request's empty update means it has none.
        let update = self.string("UpdateExpression")?;
        if update == Some("") {
            return Err(ApiError::validation(messages::EMPTY_UPDATE_EXPRESSION));
        }
        Ok((expressions, update.map(str::to_string)))
    }

    /// PutItem's and DeleteItem's ReturnValues (ALL_OLD or NONE) and
    /// ReturnValuesOnConditionCheckFailure.
    fn write_returns(&self, operation: &str) -> Result<(bool, bool), ApiError> {
        let return_old = match self.string("ReturnValues")? {
            Some(name) => ReturnValues::parse(name, operation).map_err(ApiError::validation)? == ReturnValues::AllOld,
            None => false,
        };
        Ok((return_old, self.on_condition_failure()?))
    }

    fn on_condition_failure(&self) -> Result<bool, ApiError> {
        match self.string("ReturnValuesOnConditionCheckFailure")? {
            Some(name) => parse_on_condition_failure(name).map_err(ApiError::validation),
            None => Ok(false),
        }
    }

    /// A read's expressions, from the expression parameters or the legacy ones; `query` takes
    /// a KeyConditionExpression.
    fn read_expressions(&self, query: bool) -> Result<ReadExpressions, ApiError> {
        let select = self.select()?;
        // Select (named; without it, ALL_ATTRIBUTES or the projection's attributes) must fit
        // the projection given.
        let check_select = |parameter: &str, projection: &Option<String>| {
            let named = self.string("Select")?;
            match named
                .and_then(|named| messages::select_conflict(named, projection.as_ref().map(|_| parameter), query))
            {
                Some(message) => Err(ApiError::validation(message)),
                None => Ok(()),
            }
        };
        if let Some(legacy) = self.legacy()? {
            check_select("AttributesToGet", &legacy.projection)?;
            return Ok(ReadExpressions {
                key_condition: legacy.key_condition.filter(|_| query),
                filter: legacy.filter,
                projection: legacy.projection,
                names: legacy.names,
                values: legacy.values,
                select,
            });
        }
        let projection = self.string("ProjectionExpression")?.map(str::to_string);
        check_select("ProjectionExpression", &projection)?;
        Ok(ReadExpressions {
            key_condition: if query { self.string("KeyConditionExpression")?.map(str::to_string) } else { None },
            filter: self.string("FilterExpression")?.map(str::to_string),
            projection,
            names: self.names()?,
            values: self.values()?,
            select,
        })
    }

    fn select(&self) -> Result<Select, ApiError> {
        let select = match self.string("Select")? {
            None | Some("ALL_ATTRIBUTES") => Select::AllAttributes,
            Some("SPECIFIC_ATTRIBUTES") => Select::SpecificAttributes,
            Some("COUNT") => Select::Count,
            // Refused by `read_expressions` (no table has an index yet).
            Some("ALL_PROJECTED_ATTRIBUTES") => Select::AllAttributes,
            Some(other) => {
                return Err(ApiError::validation(format!(
                    "1 validation error detected: Value '{other}' at 'select' failed to satisfy constraint: Member must satisfy enum value set: [SPECIFIC_ATTRIBUTES, COUNT, ALL_ATTRIBUTES, ALL_PROJECTED_ATTRIBUTES]"
                )))
            }
        };
        Ok(select)
    }
}

/// A request's legacy parameters, written as expressions with their placeholders.
#[derive(Default)]
struct Legacy {
    condition: Option<String>,
    update: Option<String>,
    key_condition: Option<String>,
    filter: Option<String>,
    projection: Option<String>,
    names: Vec<(String, String)>,
    values: Vec<(String, AttributeValue)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(operation: Operation, body: &str) -> Request {
        match decode(operation, body.as_bytes(), "localhost:8000", "us-east-1") {
            Ok(Call::Engine(request, _, _)) => *request,
            other => panic!("{body}: {other:?}"),
        }
    }

    fn error(operation: Operation, body: &str) -> ApiError {
        match decode(operation, body.as_bytes(), "localhost:8000", "us-east-1") {
            Err(error) => error,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn operations_are_named_by_target() {
        assert_eq!(Operation::from_target(Some("DynamoDB_20120810.PutItem")), Ok(Operation::PutItem));
        for bad in [None, Some("DynamoDB_20120810.Fly"), Some("PutItem"), Some("DynamoDBStreams_20120810.ListStreams")]
        {
            let error = Operation::from_target(bad).unwrap_err();
            assert_eq!(error.kind, "com.amazon.coral.service#UnknownOperationException");
            // MESSAGES.md 14a: an unknown target's body has no message.
            assert_eq!(error.body(), json!({ "__type": error.kind }));
        }
        // One of DynamoDB's operations Tessera does not serve says so (an SDK shows it).
        for name in ["TransactWriteItems", "UpdateTable", "DescribeTimeToLive", "ExecuteStatement"] {
            let error = Operation::from_target(Some(&format!("{TARGET_PREFIX}{name}"))).unwrap_err();
            assert_eq!(error.kind, "com.amazon.coral.service#UnknownOperationException");
            assert_eq!(error.body()["message"], format!("Tessera does not support the operation {name} yet"));
        }
    }

    #[test]
    fn create_table_reads_the_key_schema_and_checks_definitions() {
        let request = engine(
            Operation::CreateTable,
            r#"{"TableName":"t","KeySchema":[{"AttributeName":"pk","KeyType":"HASH"},{"AttributeName":"sk","KeyType":"RANGE"}],
                "AttributeDefinitions":[{"AttributeName":"sk","AttributeType":"N"},{"AttributeName":"pk","AttributeType":"S"}],
                "BillingMode":"PAY_PER_REQUEST"}"#,
        );
        assert_eq!(
            request,
            Request::CreateTable {
                table: "t".into(),
                key_schema: KeySchema::composite(("pk", KeyType::S), ("sk", KeyType::N)),
                partitions: 0,
                throughput: None,
                tags: Vec::new(),
                ranges: Vec::new(),
            }
        );
        for (body, expected) in [
            (r#"{"KeySchema":[],"AttributeDefinitions":[]}"#, "Value null at 'tableName'"),
            (
                r#"{"TableName":"t","KeySchema":[{"AttributeName":"pk","KeyType":"HASH"}],"AttributeDefinitions":[],"BillingMode":"PAY_PER_REQUEST"}"#,
                "not defined in AttributeDefinitions",
            ),
            (
                r#"{"TableName":"t","KeySchema":[{"AttributeName":"pk","KeyType":"HASH"}],"AttributeDefinitions":[{"AttributeName":"pk","AttributeType":"S"},{"AttributeName":"x","AttributeType":"S"}],"BillingMode":"PAY_PER_REQUEST"}"#,
                "does not exactly match",
            ),
            (
                r#"{"TableName":"t","KeySchema":[{"AttributeName":"pk","KeyType":"RANGE"}],"AttributeDefinitions":[{"AttributeName":"pk","AttributeType":"S"}],"BillingMode":"PAY_PER_REQUEST"}"#,
                "HASH key",
            ),
            (
                r#"{"TableName":"t","KeySchema":[{"AttributeName":"pk","KeyType":"HASH"}],"AttributeDefinitions":[{"AttributeName":"pk","AttributeType":"X"}]}"#,
                "enum value set: [B, N, S]",
            ),
            (
                r#"{"TableName":"t","GlobalSecondaryIndexes":[{}],"KeySchema":[],"AttributeDefinitions":[]}"#,
                "not supported",
            ),
        ] {
            let error = error(Operation::CreateTable, body);
            assert_eq!(error.kind, "com.amazon.coral.validate#ValidationException", "{body}");
            assert!(error.message.contains(expected), "{body}: {}", error.message);
        }
        // BillingMode and ProvisionedThroughput (MESSAGES.md 13a, 13b, 13j).
        let table = r#""TableName":"t","KeySchema":[{"AttributeName":"pk","KeyType":"HASH"}],"AttributeDefinitions":[{"AttributeName":"pk","AttributeType":"S"}]"#;
        let provisioned = engine(
            Operation::CreateTable,
            &format!(
                r#"{{{table},"ProvisionedThroughput":{{"ReadCapacityUnits":2,"WriteCapacityUnits":3}},"Tags":[{{"Key":"k","Value":""}}]}}"#
            ),
        );
        let Request::CreateTable { throughput, tags, .. } = provisioned else { panic!("{provisioned:?}") };
        assert_eq!(throughput, Some(Throughput { read_units: 2, write_units: 3 }));
        assert_eq!(tags, vec![("k".to_string(), String::new())]);
        for (extra, expected) in [
            ("", messages::PROVISIONED_WITHOUT_THROUGHPUT.to_string()),
            (r#","BillingMode":"PROVISIONED""#, messages::PROVISIONED_WITHOUT_THROUGHPUT.to_string()),
            (
                r#","BillingMode":"PAY_PER_REQUEST","ProvisionedThroughput":{"ReadCapacityUnits":1,"WriteCapacityUnits":1}"#,
                messages::PAY_PER_REQUEST_WITH_THROUGHPUT.to_string(),
            ),
            (
                r#","ProvisionedThroughput":{"ReadCapacityUnits":5}"#,
                "1 validation error detected: Value null at 'provisionedThroughput.writeCapacityUnits' failed to satisfy constraint: Member must not be null".to_string(),
            ),
            (
                r#","ProvisionedThroughput":{"ReadCapacityUnits":0,"WriteCapacityUnits":-1}"#,
                "2 validation errors detected: Value '-1' at 'provisionedThroughput.writeCapacityUnits' failed to satisfy constraint: Member must have value greater than or equal to 1; Value '0' at 'provisionedThroughput.readCapacityUnits' failed to satisfy constraint: Member must have value greater than or equal to 1".to_string(),
            ),
            (
                r#","BillingMode":"PAY_PER_REQUEST","Tags":[{"Key":"k"}]"#,
                "1 validation error detected: Value null at 'tags.1.member.value' failed to satisfy constraint: Member must not be null".to_string(),
            ),
        ] {
            let body = format!("{{{table}{extra}}}");
            let error = error(Operation::CreateTable, &body);
            assert_eq!(error.kind, "com.amazon.coral.validate#ValidationException", "{body}");
            assert_eq!(error.message, expected, "{body}: {}", error.message);
        }
    }

    #[test]
    fn item_requests_carry_their_expressions() {
        let request = engine(
            Operation::PutItem,
            r##"{"TableName":"t","Item":{"pk":{"S":"a"},"n":{"N":"1"}},"ConditionExpression":"attribute_not_exists(#p)",
                "ExpressionAttributeNames":{"#p":"pk"},"ExpressionAttributeValues":{":v":{"N":"2"}},
                "ReturnValues":"ALL_OLD","ReturnValuesOnConditionCheckFailure":"ALL_OLD"}"##,
        );
        let Request::PutItem { table, item, return_old, expressions, return_old_on_failure } = request else {
            panic!("{request:?}")
        };
        assert_eq!((table.as_str(), item.len(), return_old, return_old_on_failure), ("t", 2, true, true));
        assert_eq!(expressions.condition.as_deref(), Some("attribute_not_exists(#p)"));
        assert_eq!(expressions.names, vec![("#p".to_string(), "pk".to_string())]);
        let Request::Query(query) = engine(
            Operation::Query,
            r#"{"TableName":"t","KeyConditionExpression":"pk = :p","ExpressionAttributeValues":{":p":{"S":"a"}},
                "ScanIndexForward":false,"Limit":5,"Select":"COUNT"}"#,
        ) else {
            panic!()
        };
        assert!(query.backward);
        assert_eq!((query.limit, query.read.select), (5, Select::Count));
        let Request::GetItem { read, .. } =
            engine(Operation::GetItem, r#"{"TableName":"t","Key":{"pk":{"S":"a"}},"AttributesToGet":["a","b"]}"#)
        else {
            panic!()
        };
        assert_eq!(read.projection.as_deref(), Some("#n0, #n1"));
        assert_eq!(read.names, vec![("#n0".to_string(), "a".to_string()), ("#n1".to_string(), "b".to_string())]);
    }

    #[test]
    fn legacy_parameters_become_expressions() {
        let Request::UpdateItem(update) = engine(
            Operation::UpdateItem,
            r#"{"TableName":"t","Key":{"pk":{"S":"a"}},"Expected":{"n":{"Value":{"N":"1"}},"gone":{"Exists":false}},
                "ConditionalOperator":"OR","AttributeUpdates":{"n":{"Action":"ADD","Value":{"N":"2"}},"old":{"Action":"DELETE"}}}"#,
        ) else {
            panic!()
        };
        assert_eq!(update.expressions.condition.as_deref(), Some("attribute_not_exists(#n0) OR #n1 = :v0"));
        assert_eq!(update.update, "REMOVE #n2 ADD #n1 :v1");
        let names: Vec<&str> = update.expressions.names.iter().map(|(_, name)| name.as_str()).collect();
        assert_eq!(names, ["gone", "n", "old"]);
        let Request::Query(query) = engine(
            Operation::Query,
            r#"{"TableName":"t","KeyConditions":{"pk":{"ComparisonOperator":"EQ","AttributeValueList":[{"S":"a"}]},
                "sk":{"ComparisonOperator":"BETWEEN","AttributeValueList":[{"N":"1"},{"N":"9"}]}},
                "QueryFilter":{"x":{"ComparisonOperator":"NOT_NULL"}},"AttributesToGet":["x"]}"#,
        ) else {
            panic!()
        };
        assert_eq!(query.read.key_condition.as_deref(), Some("#n0 = :v0 AND #n1 BETWEEN :v1 AND :v2"));
        assert_eq!(query.read.filter.as_deref(), Some("attribute_exists(#n2)"));
        assert_eq!(query.read.projection.as_deref(), Some("#n2"));
    }

    #[test]
    fn bad_bodies_get_dynamodb_errors() {
        for (operation, body, kind, expected) in [
            (Operation::GetItem, "{", "SerializationException", "not valid JSON"),
            (Operation::GetItem, "[]", "SerializationException", "JSON object"),
            (Operation::GetItem, r#"{"TableName":5}"#, "SerializationException", "TableName"),
            (Operation::GetItem, r#"{"TableName":"t"}"#, "ValidationException", "'key'"),
            (Operation::GetItem, r#"{"TableName":"t","Key":{"pk":{"Q":"1"}}}"#, "ValidationException", "unknown type"),
            (
                Operation::PutItem,
                r#"{"TableName":"t","Item":{},"ReturnValues":"ALL_NEW"}"#,
                "ValidationException",
                "ALL_OLD or NONE",
            ),
            (
                Operation::PutItem,
                r#"{"TableName":"t","Item":{},"Expected":{"a":{"Exists":false}},"ConditionExpression":"x"}"#,
                "ValidationException",
                "Non-expression parameters: {Expected} Expression parameters: {ConditionExpression}",
            ),
            (
                Operation::PutItem,
                r#"{"TableName":"t","Item":{},"Expected":{"a":{"Exists":true}}}"#,
                "ValidationException",
                "no value is provided",
            ),
            (
                Operation::Scan,
                r#"{"TableName":"t","ScanFilter":{"a":{"ComparisonOperator":"BETWEEN","AttributeValueList":[{"N":"1"}]}}}"#,
                "ValidationException",
                "number of argument",
            ),
            (
                Operation::Scan,
                r#"{"TableName":"t","ScanFilter":{},"ConditionalOperator":"XOR"}"#,
                "ValidationException",
                "conditionalOperator",
            ),
            (Operation::Query, r#"{"TableName":"t"}"#, "ValidationException", "KeyConditionExpression"),
            (
                Operation::Query,
                r#"{"TableName":"t","KeyConditionExpression":"a = :a","Limit":0}"#,
                "ValidationException",
                "greater than or equal to 1",
            ),
            (Operation::Query, r#"{"TableName":"t","IndexName":"i"}"#, "ValidationException", "specified index: i"),
            (Operation::Scan, r#"{"TableName":"t","Segment":3,"TotalSegments":2}"#, "ValidationException", "less than"),
            (Operation::Scan, r#"{"TableName":"t","Segment":1}"#, "ValidationException", "TotalSegments"),
            (
                Operation::Scan,
                r#"{"TableName":"t","ReturnConsumedCapacity":"ALL"}"#,
                "ValidationException",
                "returnConsumedCapacity",
            ),
            (Operation::BatchWriteItem, r#"{"RequestItems":{"t":[{}]}}"#, "ValidationException", "PutRequest"),
            (Operation::ListTables, r#"{"Limit":101}"#, "ValidationException", "less than or equal to 100"),
            // DynamoDB's exact messages are checked through a real server by the cases of
            // tests/dynamodb/cases/ (tools/tests/conformance.rs).
        ] {
            let body: &str = body;
            let error = error(operation, body);
            assert!(error.kind.ends_with(kind), "{body}: {error:?}");
            // MESSAGES.md, cross-cutting fact 1: SerializationException's message is `Message`.
            let key = if kind == "SerializationException" { "Message" } else { "message" };
            assert_eq!(error.body()[key], json!(error.message), "{body}");
            assert!(error.message.contains(expected), "{body}: {}", error.message);
            assert_eq!(error.status, 400);
        }
    }

    #[test]
    fn answers_are_shaped_as_dynamodb_shapes_them() {
        let item: Item = [("pk".to_string(), AttributeValue::S("a".into()))].into_iter().collect();
        let body = encode(Operation::GetItem, Response::Item(Some(item.clone())), &[], "us-east-1", &Reply::default())
            .unwrap();
        assert_eq!(body, json!({ "Item": { "pk": { "S": "a" } } }));
        let body = encode(Operation::PutItem, Response::Item(None), &[], "us-east-1", &Reply::default()).unwrap();
        assert_eq!(body, json!({}));
        let consumed = ConsumedCapacity { table: "t".into(), read_units: 0.5, write_units: 0.0, table_units: None };
        let body = encode(
            Operation::Query,
            Response::Items { items: vec![item.clone()], scanned_count: 2, count: 1, last_evaluated_key: Some(item) },
            std::slice::from_ref(&consumed),
            "us-east-1",
            &Reply::default(),
        )
        .unwrap();
        assert_eq!(body["Count"], 1);
        assert_eq!(body["ScannedCount"], 2);
        assert_eq!(body["LastEvaluatedKey"], json!({ "pk": { "S": "a" } }));
        assert_eq!(body["ConsumedCapacity"], json!({ "TableName": "t", "CapacityUnits": 0.5 }));
        let counted = encode(
            Operation::Scan,
            Response::Items { items: vec![], scanned_count: 3, count: 3, last_evaluated_key: None },
            &[],
            "r",
            &Reply::default(),
        )
        .unwrap();
        assert!(counted.get("Items").is_none());
        let table = TableDescription {
            name: "t".into(),
            key_schema: KeySchema::hash_only("pk", KeyType::N),
            partitions: 2,
            status: TableStatus::Active,
            created_at_ms: 1_700_000_000_500,
            item_count: 3,
            size_bytes: 99,
            throughput: None,
            map: None,
        };
        let body =
            encode(Operation::DescribeTable, Response::Table(table.clone()), &[], "eu-west-1", &Reply::default())
                .unwrap();
        let described = &body["Table"];
        assert_eq!(described["TableStatus"], "ACTIVE");
        assert_eq!(described["KeySchema"], json!([{ "AttributeName": "pk", "KeyType": "HASH" }]));
        assert_eq!(described["AttributeDefinitions"], json!([{ "AttributeName": "pk", "AttributeType": "N" }]));
        assert_eq!(described["TableArn"], "arn:aws:dynamodb:eu-west-1:000000000000:table/t");
        assert_eq!(described["CreationDateTime"], 1_700_000_000.5);
        assert_eq!((described["ItemCount"].as_u64(), described["TableSizeBytes"].as_u64()), (Some(3), Some(99)));
        assert_eq!(described["BillingModeSummary"]["BillingMode"], "PAY_PER_REQUEST");
        assert_eq!(described["ProvisionedThroughput"]["ReadCapacityUnits"], 0);
        // A provisioned table shows its units and no BillingModeSummary; DeleteTable's answer
        // has no key schema or creation time.
        let provisioned = TableDescription {
            throughput: Some(Throughput { read_units: 4, write_units: 6 }),
            status: TableStatus::Deleting,
            ..table.clone()
        };
        let body =
            encode(Operation::DeleteTable, Response::Table(provisioned), &[], "eu-west-1", &Reply::default()).unwrap();
        let deleted = &body["TableDescription"];
        assert_eq!(deleted["TableStatus"], "DELETING");
        assert_eq!(
            deleted["ProvisionedThroughput"],
            json!({ "NumberOfDecreasesToday": 0, "ReadCapacityUnits": 4, "WriteCapacityUnits": 6 })
        );
        for absent in ["BillingModeSummary", "KeySchema", "AttributeDefinitions", "CreationDateTime"] {
            assert!(deleted.get(absent).is_none(), "{absent}: {deleted}");
        }
        assert_eq!(deleted["TableArn"], described["TableArn"]);
        // Tag operations: ARNs checked, a missing table named by its ARN, pages after NextToken.
        let arn = "arn:aws:dynamodb:us-east-1:000000000000:table/tags";
        let tag = |body: &str| decode(Operation::TagResource, body.as_bytes(), "h", "us-east-1");
        let Ok(Call::Engine(request, _, reply)) =
            tag(&format!(r#"{{"ResourceArn":"{arn}","Tags":[{{"Key":"a","Value":"b"}}]}}"#))
        else {
            panic!()
        };
        assert_eq!(*request, Request::TagResource { table: "tags".into(), tags: vec![("a".into(), "b".into())] });
        let missing = WireError::new(ErrorCode::ResourceNotFoundException, "Requested resource not found");
        let error = encode(Operation::TagResource, Response::Error(missing), &[], "us-east-1", &reply).unwrap_err();
        assert_eq!(error.message, format!("Requested resource not found: ResourceArn: {arn} not found"));
        for (body, message) in [
            (r#"{"Tags":[{"Key":"a","Value":"b"}]}"#.to_string(), "Invalid TableArn".to_string()),
            (r#"{"ResourceArn":"tags","Tags":[]}"#.to_string(), messages::not_an_arn("tags")),
            (format!(r#"{{"ResourceArn":"{arn}"}}"#), "1 validation error detected: Value null at 'tags' failed to satisfy constraint: Member must not be null".to_string()),
            (format!(r#"{{"ResourceArn":"{arn}/index/i","Tags":[]}}"#), messages::not_a_table_arn(&format!("{arn}/index/i"))),
            (format!(r#"{{"ResourceArn":"{arn}","Tags":[]}}"#), messages::TAGS_EMPTY.to_string()),
            (r#"{"ResourceArn":"arn:aws:dynamodb:eu-west-1:000000000000:table/tags","Tags":[{"Key":"a","Value":"b"}]}"#.to_string(), messages::arn_not_found("arn:aws:dynamodb:eu-west-1:000000000000:table/tags")),
        ] {
            assert_eq!(tag(&body).unwrap_err().message, message, "{body}");
        }
        let reply = Reply { arn: Some(arn.into()), next_token: Some("b".into()), ..Reply::default() };
        let tags = Response::Tags(vec![("a".into(), "1".into()), ("b".into(), "2".into()), ("c".into(), "3".into())]);
        let body = encode(Operation::ListTagsOfResource, tags.clone(), &[], "us-east-1", &reply).unwrap();
        assert_eq!(body, json!({ "Tags": [{ "Key": "c", "Value": "3" }] }));
        assert_eq!(encode(Operation::TagResource, tags, &[], "us-east-1", &reply).unwrap(), json!({}));
        let failed = WireError {
            item: Some([("pk".to_string(), AttributeValue::S("a".into()))].into_iter().collect()),
            ..WireError::new(ErrorCode::ConditionalCheckFailedException, "The conditional request failed")
        };
        let error = encode(Operation::PutItem, Response::Error(failed), &[], "r", &Reply::default()).unwrap_err();
        assert_eq!(error.kind, "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException");
        assert_eq!(error.body()["Item"], json!({ "pk": { "S": "a" } }));
        let error = ApiError::from_wire(WireError::new(ErrorCode::ServiceUnavailable, "down"));
        assert_eq!(error.status, 503);
    }
}
