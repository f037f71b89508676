//! DynamoDB's error messages as the endpoint gives them, each with its source: the row of
//! `tests/dynamodb/MESSAGES.md` that quotes it and says how sure the wording is. The messages of
//! key values over DynamoDB's size limits (MESSAGES.md 4a, 4b) are the engine's, where keys are
//! encoded (`PARTITION_KEY_TOO_LONG` and `SORT_KEY_TOO_LONG` in engine/src/key.rs).

use std::fmt::Write as _;

use tessera_engine::AttributeValue;

/// DynamoDB's pattern for table names, as its constraint messages print it.
const TABLE_NAME_PATTERN: &str = "[a-zA-Z0-9_.-]+";

/// A framework constraint violation (MESSAGES.md, cross-cutting fact 3): `N validation
/// error(s) detected: Value '<v>' at '<field>' failed to satisfy constraint: <rule>; ...`.
fn constraint_violations(value: &str, field: &str, rules: &[String]) -> String {
    let count = rules.len();
    let mut message = format!("{count} validation error{} detected: ", if count == 1 { "" } else { "s" });
    for (i, rule) in rules.iter().enumerate() {
        let separator = if i == 0 { "" } else { "; " };
        let _ = write!(message, "{separator}Value '{value}' at '{field}' failed to satisfy constraint: {rule}");
    }
    message
}

/// A TableName that breaks DynamoDB's naming rules. `control_plane` for CreateTable,
/// DescribeTable and DeleteTable, whose length message differs (MESSAGES.md 8c); the item
/// operations list every violation in the framework form (8a).
pub(crate) fn bad_table_name(name: &str, faults: TableNameFaults, control_plane: bool) -> String {
    if control_plane && (faults.too_short || faults.too_long) {
        // MESSAGES.md 8c (dynalite test/describeTable.js:25-46, asserted against DynamoDB).
        return "TableName must be at least 3 characters long and at most 255 characters long".to_string();
    }
    let mut rules = Vec::new();
    if faults.pattern {
        rules.push(format!("Member must satisfy regular expression pattern: {TABLE_NAME_PATTERN}"));
    }
    if faults.too_short {
        rules.push("Member must have length greater than or equal to 3".to_string());
    }
    if faults.too_long {
        rules.push("Member must have length less than or equal to 255".to_string());
    }
    // MESSAGES.md 8a (Alternator test_item.py:147-162; dynalite test/getItem.js:55-96).
    constraint_violations(name, "tableName", &rules)
}

/// BatchWriteItem with an empty list, or more than 25 requests, for a table: MESSAGES.md
/// 2a/2b (boto/boto3#483, elegantdevelopment/aws-cdk-dynamodb-seeder#3). `tables` is the
/// RequestItems map as table name and request count. DynamoDB prints the map Java-style, each
/// request as `WriteRequest@<object hash>`; the hash means nothing, so the request's index
/// stands in for it.
pub(crate) fn batch_write_table_size(tables: &[(&str, usize)]) -> String {
    let map: Vec<String> = tables
        .iter()
        .map(|(table, count)| {
            let requests: Vec<String> =
                (0..*count).map(|i| format!("com.amazonaws.dynamodb.v20120810.WriteRequest@{i:08x}")).collect();
            format!("{table}=[{}]", requests.join(", "))
        })
        .collect();
    constraint_violations(
        &format!("{{{}}}", map.join(", ")),
        "requestItems",
        &["Map value must satisfy constraint: [Member must have length less than or equal to 25, Member must have length greater than or equal to 1]".to_string()],
    )
}

/// Query's FilterExpression naming a key attribute: MESSAGES.md 9a (dynalite
/// test/query.js:1816-1858, asserted against DynamoDB).
pub(crate) fn filter_on_key(attribute: &str) -> String {
    format!("{FILTER_ON_KEY}{attribute}")
}

const FILTER_ON_KEY: &str = "Filter Expression can only contain non-primary key attributes: Primary key attribute: ";

/// The same refusal of a legacy QueryFilter, which DynamoDB words with the parameter's name:
/// MESSAGES.md 9b (dynalite test/query.js:1806-1844, asserted against DynamoDB). The legacy
/// filter reaches the shard as a filter expression, so the endpoint rewords the answer.
pub(crate) fn as_query_filter_message(message: &str) -> Option<String> {
    message.strip_prefix(FILTER_ON_KEY).map(|attribute| {
        format!("QueryFilter can only contain non-primary key attributes: Primary key attribute: {attribute}")
    })
}

/// An ExpressionAttributeNames entry naming the empty attribute: MESSAGES.md 12f (the text an
/// application matches DynamoDB's answer against; Alternator test_limits.py checks its start).
pub(crate) fn empty_placeholder_name(key: &str) -> String {
    format!("ExpressionAttributeNames contains invalid value: Empty attribute name for key {key}")
}

/// Query's ExclusiveStartKey with an attribute that is not the table's key, or without one of
/// its key attributes: MESSAGES.md 5a (Alternator test_query.py:384-392, :414-424).
pub(crate) const QUERY_START_KEY_INVALID: &str = "The provided starting key is invalid";

/// Scan's ExclusiveStartKey likewise: MESSAGES.md 5b (Alternator test_scan.py:490-515).
pub(crate) const SCAN_START_KEY_INVALID: &str =
    "The provided starting key is invalid: The provided key element does not match the schema";

/// Query with an ExclusiveStartKey on a table without a sort key (a partition holds one item,
/// so a query cannot be restarted): MESSAGES.md 12d (Alternator test_query.py:455-468). The
/// key is printed Java-style: `{p=AttributeValue: {S:KPQ4X3JE19}}`.
pub(crate) fn hash_only_start_key(key: &tessera_engine::Item) -> String {
    let attributes: Vec<String> = key
        .iter()
        .map(|(name, value)| {
            let value = match value {
                AttributeValue::S(text) => format!("S:{text}"),
                AttributeValue::N(number) => format!("N:{number}"),
                other => format!("{}:{other:?}", other.type_name()),
            };
            format!("{name}=AttributeValue: {{{value}}}")
        })
        .collect();
    format!("The provided exclusive start key is invalid: ExclusiveStartKey: {{{}}}", attributes.join(", "))
}

/// A Select that does not fit the request's projection (`parameter` is ProjectionExpression
/// or AttributesToGet, the one given): ALL_ATTRIBUTES or COUNT with a projection,
/// SPECIFIC_ATTRIBUTES without one, ALL_PROJECTED_ATTRIBUTES without an index. MESSAGES.md
/// 12a-12c (moto test_dynamodb_select.py:83-262, aws_verified). Query's messages have the
/// `1 validation error detected: ` prefix, Scan's not. None when they fit.
pub(crate) fn select_conflict(select: &str, parameter: Option<&str>, query: bool) -> Option<String> {
    let reason = match (select, parameter) {
        ("ALL_ATTRIBUTES", Some(parameter)) => {
            format!("Cannot specify the {parameter} when choosing to get ALL_ATTRIBUTES")
        }
        ("COUNT", Some(parameter)) => format!("Cannot specify the {parameter} when choosing to get only the Count"),
        ("SPECIFIC_ATTRIBUTES", None) => {
            "Must specify the AttributesToGet or ProjectionExpression when choosing to get SPECIFIC_ATTRIBUTES"
                .to_string()
        }
        ("ALL_PROJECTED_ATTRIBUTES", _) => {
            "ALL_PROJECTED_ATTRIBUTES can be used only when Querying using an IndexName".to_string()
        }
        _ => return None,
    };
    let prefix = if query { "1 validation error detected: " } else { "" };
    Some(format!("{prefix}{reason}"))
}

/// ConditionalOperator with no Expected, QueryFilter or ScanFilter, or an empty one:
/// MESSAGES.md 11b (ExtendDB/extenddb#213, captured from DynamoDB).
pub(crate) const CONDITIONAL_OPERATOR_ALONE: &str = "ConditionalOperator cannot be used without Filter or Expected";

/// An UpdateExpression that is empty: MESSAGES.md 10a (moto test_dynamodb.py:4042-4058,
/// aws_verified).
pub(crate) const EMPTY_UPDATE_EXPRESSION: &str =
    "1 validation error detected: Invalid UpdateExpression: The expression can not be empty;";

/// An operation DynamoDB has that Tessera does not serve. DynamoDB answers an unknown target
/// with UnknownOperationException and no message (MESSAGES.md 14a); the type is kept, and this
/// message says why, so that an SDK shows it rather than "UnknownError".
pub(crate) fn unsupported_operation(operation: &str) -> String {
    format!("Tessera does not support the operation {operation} yet")
}

/// A B value whose base64 length is not a multiple of 4: MESSAGES.md 7a (a real answer quoted
/// in scylladb/scylladb#6487). SerializationException.
pub(crate) fn base64_length(length: usize) -> String {
    format!("Base64 encoded length is expected a multiple of 4 bytes but found: {length}")
}

/// A B value with characters base64 does not have. SerializationException (MESSAGES.md 7b,
/// Alternator test_manual_requests.py:375-379); DynamoDB's text is not known, so this one is
/// Tessera's.
pub(crate) fn base64_invalid(error: impl std::fmt::Display) -> String {
    format!("Invalid Base64 encoded value: {error}")
}

/// A B value that is not a JSON string: MESSAGES.md 7c (dynalite test/helpers.js:421-427).
/// SerializationException.
pub(crate) const BINARY_NOT_STRING: &str = "only base-64-encoded strings are convertible to bytes";

/// A JSON number where DynamoDB wants a string (`{"N": 3}`, `{"S": 3}`): MESSAGES.md 7d
/// (localstack/localstack#9412; dynalite test/helpers.js:391-398). SerializationException.
pub(crate) fn number_not_string(number: &serde_json::Number) -> String {
    let kind = if number.is_f64() { "DECIMAL_VALUE" } else { "NUMBER_VALUE" };
    format!("{kind} cannot be converted to String")
}

/// CreateTable with BillingMode PAY_PER_REQUEST and a ProvisionedThroughput: MESSAGES.md 13b
/// (dynalite 3.2.1 validations/createTable.js:182-186 and actions/updateTable.js:15-17).
pub(crate) const PAY_PER_REQUEST_WITH_THROUGHPUT: &str = "One or more parameter values were invalid: Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST";

/// CreateTable with BillingMode PROVISIONED (or none, its default) and no ProvisionedThroughput:
/// MESSAGES.md 13a (moto test_dynamodb_import_table.py:46-73, aws_verified; dynalite 3.2.1
/// validations/createTable.js:188-192).
pub(crate) const PROVISIONED_WITHOUT_THROUGHPUT: &str = "One or more parameter values were invalid: ReadCapacityUnits and WriteCapacityUnits must both be specified when BillingMode is PROVISIONED";

/// A ProvisionedThroughput member missing or below 1 (framework constraints, in DynamoDB's
/// member order: write, then read): MESSAGES.md 13j (dynalite 3.2.1 validations/createTable.js:30-43;
/// Alternator test_provisioned_throughput.py:41-56 matches `provisionedThroughput.*CapacityUnits`).
/// `units` is (member, value) for each unit that is wrong, `None` for a missing one.
pub(crate) fn bad_capacity_units(units: &[(&str, Option<i64>)]) -> String {
    let count = units.len();
    let mut message = format!("{count} validation error{} detected: ", if count == 1 { "" } else { "s" });
    for (i, (member, value)) in units.iter().enumerate() {
        let separator = if i == 0 { "" } else { "; " };
        let (value, rule) = match value {
            None => ("null".to_string(), "Member must not be null"),
            Some(value) => (format!("'{value}'"), "Member must have value greater than or equal to 1"),
        };
        let _ = write!(
            message,
            "{separator}Value {value} at 'provisionedThroughput.{member}' failed to satisfy constraint: {rule}"
        );
    }
    message
}

/// Capacity units above DynamoDB's bound (10^12): MESSAGES.md 13j (dynalite 3.2.1
/// validations/createTable.js:194-197, asserted against DynamoDB in test/createTable.js).
/// `which` is ReadCapacityUnits or WriteCapacityUnits.
pub(crate) fn capacity_units_out_of_bounds(value: impl std::fmt::Display, which: &str) -> String {
    format!("Given value {value} for {which} is out of bounds")
}

/// TagResource, UntagResource or ListTagsOfResource without a ResourceArn: MESSAGES.md 13e
/// (dynalite test/tagResource.js:37-39).
pub(crate) const ARN_MISSING: &str = "Invalid TableArn";

/// A ResourceArn that is not an ARN: MESSAGES.md 13k (observed against DynamoDB, 2026); older
/// DynamoDB answered AccessDeniedException (13f, Alternator test_tag.py:160-163).
pub(crate) fn not_an_arn(arn: &str) -> String {
    format!("One or more parameter values were invalid: ARNs must start with 'arn:': {arn}")
}

/// An ARN that does not name a table (an index's, a stream's, another service's):
/// MESSAGES.md 13f (Alternator test_tag.py:301-315, comment quoting DynamoDB).
pub(crate) fn not_a_table_arn(arn: &str) -> String {
    format!(
        "One or more parameter values were invalid: Invalid resource arn provided, only table or stream is accepted. Provided resource arn: {arn}"
    )
}

/// A well-formed table ARN naming no table (of this region and account): MESSAGES.md 13k
/// (observed against DynamoDB, 2026); dynalite's older text reads "ResourcArn" (13h).
pub(crate) fn arn_not_found(arn: &str) -> String {
    format!("Requested resource not found: ResourceArn: {arn} not found")
}

/// TagResource with an empty Tags list: MESSAGES.md 13g (dynalite test/tagResource.js:65-85; sic "Atleast").
pub(crate) const TAGS_EMPTY: &str = "Atleast one Tag needs to be provided as Input.";

/// UntagResource with an empty TagKeys list: MESSAGES.md 13g (dynalite test/untagResource.js:73-77).
pub(crate) const TAG_KEYS_EMPTY: &str = "Atleast one Tag Key needs to be provided as Input.";

/// DynamoDB's characters for tag keys and values (TaggingRestrictions.html: letters, white
/// space, numbers and `+ - = . _ : /`), as a constraint message prints the rule.
pub(crate) const TAG_PATTERN: &str = "^[\\p{L}\\p{Z}\\p{N}_.:/=+\\-]*$";

/// A tag key or value that breaks a length or character rule (framework form): MESSAGES.md 13d;
/// DynamoDB's exact text is not known (Alternator test_tag.py only matches ValidationException).
/// `position` counts from 1, `member` is `key` or `value`.
pub(crate) fn bad_tag(value: &str, position: usize, member: &str, rule: &str) -> String {
    constraint_violations(value, &format!("tags.{position}.member.{member}"), &[rule.to_string()])
}

/// More than 50 tags on a table: ValidationException (Alternator test_tag.py:156-159, against
/// DynamoDB); the text is not known (MESSAGES.md 13c), so this one is Tessera's.
pub(crate) fn too_many_tags(count: usize) -> String {
    format!("One or more parameter values were invalid: The table would have {count} tags, more than the 50 a table may have")
}

/// A tag key in the reserved `aws:` namespace: DynamoDB's text is not known (MESSAGES.md 13c),
/// so this one is Tessera's.
pub(crate) fn reserved_tag_key(key: &str) -> String {
    format!("One or more parameter values were invalid: The tag key {key} is reserved: keys starting with aws: are for AWS's own tags")
}

/// How a table name breaks DynamoDB's rule (3 to 255 characters of `a-z A-Z 0-9 _ - .`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TableNameFaults {
    pub pattern: bool,
    pub too_short: bool,
    pub too_long: bool,
}

impl TableNameFaults {
    pub(crate) fn of(name: &str) -> TableNameFaults {
        TableNameFaults {
            pattern: name.is_empty()
                || !name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.')),
            too_short: name.len() < 3,
            too_long: name.len() > 255,
        }
    }

    pub(crate) fn any(self) -> bool {
        self.pattern || self.too_short || self.too_long
    }
}
