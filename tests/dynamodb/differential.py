"""The same DynamoDB requests sent to Tessera and to a reference emulator (dynalite), compared.

Run by `tools/tests/http.rs` with
  TESSERA_HTTP   Tessera's endpoint URL
  PEER_HTTP      the reference's endpoint URL
Each case is a list of requests; the answers' items (Item, Attributes, Items, Count,
ScannedCount, LastEvaluatedKey, Responses, UnprocessedItems) and error names must be equal.
Then a seeded random sequence of writes and reads runs against both, each answer compared,
and the tables' final contents too. Where the reference is known to differ from DynamoDB
itself, the case is listed in REFERENCE_DIFFERS with the reason, and Tessera's answer is
checked against DynamoDB's documented behaviour instead.

Last, every case of tests/dynamodb/cases/*.jsonl (the format is described in
tools/tests/conformance.rs, which holds Tessera to them) is sent to the reference alone, and
each case where the reference does not give DynamoDB's documented answer is written to
tests/dynamodb/cases/DYNALITE.md: recorded, not counted as a difference.
"""

import gzip
import http.client
import json
import os
import pathlib
import random
import re
import sys
import time
import urllib.parse

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

CONFIG = Config(retries={"max_attempts": 1}, parameter_validation=False)

# Cases where dynalite answers differently from DynamoDB; for these Tessera must give the
# answer stated here (DynamoDB's).
REFERENCE_DIFFERS = {
    # dynalite predates ReturnValuesOnConditionCheckFailure (2023) and ignores it; DynamoDB
    # returns the item in the error.
    "condition-failure-returns-item": (
        "error ConditionalCheckFailedException with Item",
        lambda ours: ours.get("error") == "ConditionalCheckFailedException" and "Item" in ours),
    # dynalite's legacy filters end at the first condition that fails, even under
    # ConditionalOperator OR (db/index.js, matchesFilter). No item has "count" here, so with
    # OR every item scanned matches.
    "legacy-scan-or": (
        "every item scanned (NULL holds for each)",
        lambda ours: ours.get("Count", 0) > 0 and ours.get("Count") == ours.get("ScannedCount")),
    # dynalite makes NOT_CONTAINS true for a missing attribute; DynamoDB makes it false
    # (MESSAGES.md 11c).
    "legacy-not-contains-missing": (
        "error ConditionalCheckFailedException",
        lambda ours: ours.get("error") == "ConditionalCheckFailedException"),
    # dynalite serves a Scan whose Select is ALL_ATTRIBUTES with a ProjectionExpression;
    # DynamoDB refuses it (MESSAGES.md 12a, moto's tests checked against AWS).
    "select-all-with-projection": (
        "error ValidationException",
        lambda ours: ours.get("error") == "ValidationException"),
    # dynalite serves a ConditionalOperator with no ScanFilter; DynamoDB refuses it
    # (MESSAGES.md 11b).
    "conditional-operator-alone": (
        "error ValidationException",
        lambda ours: ours.get("error") == "ValidationException"),
}


def reference_quirks(answer):
    """The reference's answer with what it is known to get wrong about DynamoDB put right, and
    how many such fixes were made."""
    fixed = 0
    # dynalite answers an empty Attributes map (UPDATED_OLD of attributes an update created)
    # where DynamoDB leaves Attributes out (checked against DynamoDB by other emulators'
    # authors; Tessera's ReturnValues leaves it out).
    if answer.get("Attributes") == {}:
        answer = {key: value for key, value in answer.items() if key != "Attributes"}
        fixed += 1
    return answer, fixed


def client(url):
    return boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1", aws_access_key_id="AKIDDIFF",
                        aws_secret_access_key="diff", config=CONFIG)


def normalize(value):
    """Sets sorted, so that order does not count."""
    if isinstance(value, dict):
        out = {}
        for key, inner in value.items():
            if key in ("SS", "NS", "BS") and isinstance(inner, list):
                out[key] = sorted(inner, key=repr)
            else:
                out[key] = normalize(inner)
        return out
    if isinstance(value, list):
        return [normalize(inner) for inner in value]
    return value


def outcome(ddb, operation, request):
    """What an answer says that both must agree on."""
    try:
        answer = getattr(ddb, operation)(**request)
    except ClientError as error:
        result = {"error": error.response["Error"]["Code"]}
        if "Item" in error.response:
            result["Item"] = normalize(error.response["Item"])
        return result
    kept = {}
    for key in ("Item", "Attributes", "Count", "ScannedCount", "LastEvaluatedKey", "UnprocessedItems"):
        if key in answer:
            kept[key] = normalize(answer[key])
    if "Items" in answer:
        kept["Items"] = normalize(answer["Items"])
    if "Responses" in answer:
        kept["Responses"] = {table: sorted(normalize(items), key=repr) for table, items in answer["Responses"].items()}
    if "TableNames" in answer:
        kept["TableNames"] = answer["TableNames"]
    return kept


def table_definition(name, sort=True):
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
    definitions = [{"AttributeName": "pk", "AttributeType": "S"}]
    if sort:
        keys.append({"AttributeName": "sk", "KeyType": "RANGE"})
        definitions.append({"AttributeName": "sk", "AttributeType": "N"})
    return {"TableName": name, "KeySchema": keys, "AttributeDefinitions": definitions, "BillingMode": "PAY_PER_REQUEST"}


def key(pk, sk):
    return {"pk": {"S": pk}, "sk": {"N": str(sk)}}


def cases(table):
    """(name, operation, request) in order; later cases see earlier cases' writes."""
    item = {**key("a", 1), "n": {"N": "10"}, "s": {"S": "text"}, "ss": {"SS": ["x", "y"]},
            "m": {"M": {"inner": {"L": [{"N": "1"}, {"S": "two"}]}}}, "b": {"B": b"\x01\x02"}}
    yield "put", "put_item", {"TableName": table, "Item": item}
    yield "get", "get_item", {"TableName": table, "Key": key("a", 1), "ConsistentRead": True}
    yield "get-missing", "get_item", {"TableName": table, "Key": key("zz", 1)}
    yield "get-projection", "get_item", {"TableName": table, "Key": key("a", 1), "ProjectionExpression": "#m.inner[1], s",
                                         "ExpressionAttributeNames": {"#m": "m"}}
    yield "put-if-absent-fails", "put_item", {"TableName": table, "Item": key("a", 1),
                                              "ConditionExpression": "attribute_not_exists(pk)"}
    yield "put-return-old", "put_item", {"TableName": table, "Item": {**item, "n": {"N": "11"}}, "ReturnValues": "ALL_OLD"}
    yield "update-all-new", "update_item", {
        "TableName": table, "Key": key("a", 1),
        "UpdateExpression": "SET n = n + :one, #new = if_not_exists(#new, :zero) ADD ss :z REMOVE b",
        "ExpressionAttributeNames": {"#new": "fresh"},
        "ExpressionAttributeValues": {":one": {"N": "1"}, ":zero": {"N": "0"}, ":z": {"SS": ["z"]}},
        "ReturnValues": "ALL_NEW"}
    yield "update-updated-old", "update_item", {
        "TableName": table, "Key": key("a", 1), "UpdateExpression": "SET s = :t, m.inner[0] = :t",
        "ExpressionAttributeValues": {":t": {"S": "new"}}, "ReturnValues": "UPDATED_OLD"}
    yield "update-updated-new", "update_item", {
        "TableName": table, "Key": key("a", 1), "UpdateExpression": "SET s = :t DELETE ss :x",
        "ExpressionAttributeValues": {":t": {"S": "newer"}, ":x": {"SS": ["x"]}}, "ReturnValues": "UPDATED_NEW"}
    yield "update-creates", "update_item", {
        "TableName": table, "Key": key("b", 2), "UpdateExpression": "SET v = :v",
        "ExpressionAttributeValues": {":v": {"N": "-0.50"}}, "ReturnValues": "ALL_NEW"}
    yield "update-condition-fails", "update_item", {
        "TableName": table, "Key": key("b", 2), "UpdateExpression": "SET v = :v", "ConditionExpression": "v > :v",
        "ExpressionAttributeValues": {":v": {"N": "5"}}}
    yield "condition-failure-returns-item", "put_item", {
        "TableName": table, "Item": key("b", 2), "ConditionExpression": "attribute_not_exists(pk)",
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
    for sk in range(1, 31):
        yield f"fill-{sk}", "put_item", {"TableName": table, "Item": {**key("q", sk), "even": {"BOOL": sk % 2 == 0},
                                                                      "tag": {"S": f"t{sk % 3}"}}}
    condition = {":p": {"S": "q"}, ":lo": {"N": "5"}, ":hi": {"N": "20"}}
    yield "query-between", "query", {"TableName": table, "KeyConditionExpression": "pk = :p AND sk BETWEEN :lo AND :hi",
                                     "ExpressionAttributeValues": condition}
    yield "query-backward-limit", "query", {"TableName": table, "KeyConditionExpression": "pk = :p AND sk > :lo",
                                            "ExpressionAttributeValues": {":p": {"S": "q"}, ":lo": {"N": "5"}},
                                            "ScanIndexForward": False, "Limit": 4}
    yield "query-page-2", "query", {"TableName": table, "KeyConditionExpression": "pk = :p",
                                    "ExpressionAttributeValues": {":p": {"S": "q"}}, "Limit": 4,
                                    "ExclusiveStartKey": key("q", 4)}
    yield "query-filter", "query", {"TableName": table, "KeyConditionExpression": "pk = :p",
                                    "FilterExpression": "even = :t AND tag IN (:a, :b)",
                                    "ExpressionAttributeValues": {":p": {"S": "q"}, ":t": {"BOOL": True},
                                                                  ":a": {"S": "t0"}, ":b": {"S": "t1"}}}
    yield "query-count", "query", {"TableName": table, "KeyConditionExpression": "pk = :p", "Select": "COUNT",
                                   "ExpressionAttributeValues": {":p": {"S": "q"}}}
    yield "query-limit-filter", "query", {"TableName": table, "KeyConditionExpression": "pk = :p", "Limit": 5,
                                          "FilterExpression": "even = :t",
                                          "ExpressionAttributeValues": {":p": {"S": "q"}, ":t": {"BOOL": True}}}
    yield "scan-filter", "scan", {"TableName": table, "FilterExpression": "attribute_exists(v) OR n >= :n",
                                  "ExpressionAttributeValues": {":n": {"N": "0"}}}
    yield "scan-count", "scan", {"TableName": table, "Select": "COUNT"}
    yield "batch-write", "batch_write_item", {"RequestItems": {table: [
        {"PutRequest": {"Item": {**key("w", 1), "v": {"S": "1"}}}},
        {"PutRequest": {"Item": {**key("w", 2), "v": {"S": "2"}}}},
        {"DeleteRequest": {"Key": key("q", 30)}}]}}
    yield "batch-get", "batch_get_item", {"RequestItems": {table: {"Keys": [key("w", 1), key("w", 2), key("q", 30)],
                                                                   "ProjectionExpression": "v"}}}
    yield "delete-return-old", "delete_item", {"TableName": table, "Key": key("w", 1), "ReturnValues": "ALL_OLD"}
    yield "delete-condition-fails", "delete_item", {"TableName": table, "Key": key("w", 2),
                                                    "ConditionExpression": "v = :x",
                                                    "ExpressionAttributeValues": {":x": {"S": "nope"}}}
    # The legacy parameters older SDKs send.
    yield "legacy-put-if-absent", "put_item", {"TableName": table, "Item": {**key("L", 1), "count": {"N": "1"}},
                                               "Expected": {"pk": {"Exists": False}}}
    yield "legacy-put-if-absent-fails", "put_item", {"TableName": table, "Item": key("L", 1),
                                                     "Expected": {"pk": {"Exists": False}}}
    yield "legacy-update", "update_item", {
        "TableName": table, "Key": key("L", 1), "ReturnValues": "ALL_NEW",
        "AttributeUpdates": {"count": {"Action": "ADD", "Value": {"N": "5"}}, "tags": {"Action": "PUT", "Value": {"SS": ["a", "b"]}},
                             "list": {"Action": "ADD", "Value": {"L": [{"S": "x"}]}}},
        "Expected": {"count": {"ComparisonOperator": "EQ", "AttributeValueList": [{"N": "1"}]}}}
    yield "legacy-update-delete-from-set", "update_item", {
        "TableName": table, "Key": key("L", 1), "ReturnValues": "UPDATED_NEW",
        "AttributeUpdates": {"tags": {"Action": "DELETE", "Value": {"SS": ["a"]}}, "count": {"Action": "DELETE"}}}
    yield "legacy-expected-or", "update_item", {
        "TableName": table, "Key": key("L", 1), "ConditionalOperator": "OR", "ReturnValues": "ALL_OLD",
        "AttributeUpdates": {"v": {"Value": {"S": "or"}}},
        # The true one first: dynalite stops at a false first one even with OR (below).
        "Expected": {"tags": {"ComparisonOperator": "CONTAINS", "AttributeValueList": [{"S": "b"}]},
                     "count": {"ComparisonOperator": "GT", "AttributeValueList": [{"N": "100"}]}}}
    yield "legacy-expected-fails", "delete_item", {
        "TableName": table, "Key": key("L", 1),
        "Expected": {"tags": {"ComparisonOperator": "NOT_CONTAINS", "AttributeValueList": [{"S": "b"}]}}}
    yield "legacy-get", "get_item", {"TableName": table, "Key": key("L", 1), "AttributesToGet": ["tags", "v", "nope"]}
    yield "legacy-query", "query", {
        "TableName": table, "AttributesToGet": ["sk", "tag"],
        "KeyConditions": {"pk": {"ComparisonOperator": "EQ", "AttributeValueList": [{"S": "q"}]},
                          "sk": {"ComparisonOperator": "BETWEEN", "AttributeValueList": [{"N": "3"}, {"N": "12"}]}},
        "QueryFilter": {"tag": {"ComparisonOperator": "NE", "AttributeValueList": [{"S": "t1"}]}}}
    yield "legacy-query-begins", "query", {
        "TableName": table, "KeyConditions": {"pk": {"ComparisonOperator": "EQ", "AttributeValueList": [{"S": "q"}]},
                                              "sk": {"ComparisonOperator": "GE", "AttributeValueList": [{"N": "28"}]}}}
    yield "legacy-scan-or", "scan", {
        "TableName": table, "ConditionalOperator": "OR",
        "ScanFilter": {"tag": {"ComparisonOperator": "IN", "AttributeValueList": [{"S": "t0"}]},
                       "count": {"ComparisonOperator": "NULL"}}}
    yield "legacy-mixed", "put_item", {"TableName": table, "Item": key("L", 2), "Expected": {"pk": {"Exists": False}},
                                       "ConditionExpression": "attribute_not_exists(pk)"}
    yield "legacy-bad-count", "scan", {"TableName": table, "ScanFilter": {
        "n": {"ComparisonOperator": "BETWEEN", "AttributeValueList": [{"N": "1"}]}}}
    yield "legacy-exists-without-value", "put_item", {"TableName": table, "Item": key("L", 2),
                                                      "Expected": {"pk": {"Exists": True}}}
    # Errors: each must be refused with the same name.
    yield "no-such-table", "get_item", {"TableName": "nope-table", "Key": key("a", 1)}
    yield "key-missing-sort", "get_item", {"TableName": table, "Key": {"pk": {"S": "a"}}}
    yield "key-wrong-type", "put_item", {"TableName": table, "Item": {"pk": {"S": "a"}, "sk": {"S": "1"}}}
    yield "key-extra-attribute", "get_item", {"TableName": table, "Key": {**key("a", 1), "x": {"S": "1"}}}
    yield "empty-string-key", "put_item", {"TableName": table, "Item": {"pk": {"S": ""}, "sk": {"N": "1"}}}
    yield "bad-number", "put_item", {"TableName": table, "Item": {**key("a", 9), "n": {"N": "1e200"}}}
    yield "empty-set", "put_item", {"TableName": table, "Item": {**key("a", 9), "ss": {"SS": []}}}
    yield "duplicate-set", "put_item", {"TableName": table, "Item": {**key("a", 9), "ss": {"SS": ["a", "a"]}}}
    yield "syntax-error", "update_item", {"TableName": table, "Key": key("a", 1), "UpdateExpression": "SET n = "}
    yield "reserved-word", "get_item", {"TableName": table, "Key": key("a", 1), "ProjectionExpression": "size, name"}
    yield "unused-value", "put_item", {"TableName": table, "Item": key("a", 9),
                                       "ExpressionAttributeValues": {":x": {"S": "1"}},
                                       "ConditionExpression": "attribute_exists(pk)"}
    yield "undefined-value", "put_item", {"TableName": table, "Item": key("a", 9), "ConditionExpression": "n = :x"}
    yield "update-key-attribute", "update_item", {"TableName": table, "Key": key("a", 1),
                                                  "UpdateExpression": "SET pk = :x",
                                                  "ExpressionAttributeValues": {":x": {"S": "b"}}}
    yield "overlapping-paths", "update_item", {"TableName": table, "Key": key("a", 1),
                                               "UpdateExpression": "SET m.inner = :x, m.inner[0] = :x",
                                               "ExpressionAttributeValues": {":x": {"S": "b"}}}
    yield "bad-return-values", "put_item", {"TableName": table, "Item": key("a", 9), "ReturnValues": "ALL_NEW"}
    yield "query-no-key-condition", "query", {"TableName": table}
    yield "query-on-sort-only", "query", {"TableName": table, "KeyConditionExpression": "sk = :s",
                                          "ExpressionAttributeValues": {":s": {"N": "1"}}}
    yield "scan-bad-segment", "scan", {"TableName": table, "Segment": 2, "TotalSegments": 2}
    yield "batch-write-duplicates", "batch_write_item", {"RequestItems": {table: [
        {"PutRequest": {"Item": key("d", 1)}}, {"DeleteRequest": {"Key": key("d", 1)}}]}}
    yield "batch-get-too-many", "batch_get_item", {"RequestItems": {table: {"Keys": [key("k", n) for n in range(101)]}}}
    yield "item-too-large", "put_item", {"TableName": table, "Item": {**key("big", 1), "v": {"S": "x" * 409_600}}}
    yield "create-existing", "create_table", table_definition(table)
    # DynamoDB's checks, each with its row in tests/dynamodb/MESSAGES.md.
    yield "bad-table-name-get", "get_item", {"TableName": "non!existent!table", "Key": key("a", 1)}  # 8a
    yield "bad-table-name-short", "put_item", {"TableName": "xx", "Item": key("a", 1)}  # 8a
    yield "bad-table-name-describe", "describe_table", {"TableName": "a;"}  # 8c
    yield "filter-on-key", "query", {"TableName": table, "KeyConditionExpression": "pk = :p",  # 9a
                                     "FilterExpression": "sk > :s",
                                     "ExpressionAttributeValues": {":p": {"S": "q"}, ":s": {"N": "1"}}}
    yield "query-start-key-extra", "query", {"TableName": table, "KeyConditionExpression": "pk = :p",  # 5a
                                             "ExpressionAttributeValues": {":p": {"S": "q"}},
                                             "ExclusiveStartKey": {**key("q", 4), "x": {"S": "1"}}}
    yield "scan-start-key-missing", "scan", {"TableName": table, "ExclusiveStartKey": {"pk": {"S": "q"}}}  # 5b
    yield "batch-write-too-many", "batch_write_item", {"RequestItems": {table: [  # 2a
        {"PutRequest": {"Item": key("many", n)}} for n in range(26)]}}
    yield "batch-write-empty", "batch_write_item", {"RequestItems": {table: []}}  # 2b
    yield "select-all-with-projection", "scan", {"TableName": table, "Select": "ALL_ATTRIBUTES",  # 12a
                                                 "ProjectionExpression": "v"}
    yield "conditional-operator-alone", "scan", {"TableName": table, "ConditionalOperator": "AND"}  # 11b
    yield "legacy-in-mixed-types", "scan", {"TableName": table, "ScanFilter": {  # 11a
        "v": {"ComparisonOperator": "IN", "AttributeValueList": [{"N": "3"}, {"S": "dog"}]}}}
    yield "legacy-not-contains-missing", "put_item", {"TableName": table, "Item": key("L", 3),  # 11c
                                                      "Expected": {"nope": {"ComparisonOperator": "NOT_CONTAINS",
                                                                            "AttributeValueList": [{"S": "a"}]}}}
    # dynalite wrote the item the case above must not have written: removed from both, so that
    # the final contents compare what else happened.
    yield "legacy-not-contains-undone", "delete_item", {"TableName": table, "Key": key("L", 3)}
    yield "empty-update-expression", "update_item", {"TableName": table, "Key": key("a", 1),  # 10a
                                                     "UpdateExpression": ""}


def random_sequence(table, seed, count):
    """A seeded mix of puts, conditional updates, deletes and reads over a few keys."""
    rng = random.Random(seed)
    for index in range(count):
        k = key(rng.choice("abc"), rng.randrange(4))
        choice = rng.random()
        if choice < 0.3:
            item = {**k, "v": {"N": str(rng.randrange(-50, 50))}}
            if rng.random() < 0.3:
                item["s"] = {"SS": sorted({rng.choice("xyz") for _ in range(3)})}
            yield f"random-{index}-put", "put_item", {"TableName": table, "Item": item, "ReturnValues": "ALL_OLD"}
        elif choice < 0.55:
            yield f"random-{index}-update", "update_item", {
                "TableName": table, "Key": k, "UpdateExpression": "ADD v :d SET c = if_not_exists(c, :z) + :one",
                "ConditionExpression": "attribute_not_exists(v) OR v < :cap",
                "ExpressionAttributeValues": {":d": {"N": str(rng.randrange(1, 20))}, ":z": {"N": "0"},
                                              ":one": {"N": "1"}, ":cap": {"N": "40"}},
                "ReturnValues": rng.choice(["ALL_NEW", "UPDATED_OLD", "NONE"])}
        elif choice < 0.7:
            yield f"random-{index}-delete", "delete_item", {
                "TableName": table, "Key": k, "ConditionExpression": "attribute_not_exists(c) OR c < :n",
                "ExpressionAttributeValues": {":n": {"N": "3"}}, "ReturnValues": "ALL_OLD"}
        elif choice < 0.85:
            yield f"random-{index}-get", "get_item", {"TableName": table, "Key": k, "ConsistentRead": True}
        else:
            yield f"random-{index}-query", "query", {
                "TableName": table, "KeyConditionExpression": "pk = :p AND sk >= :s",
                "ExpressionAttributeValues": {":p": k["pk"], ":s": {"N": str(rng.randrange(3))}},
                "ScanIndexForward": rng.random() < 0.5}


def everything(ddb, table):
    items = []
    request = {"TableName": table, "ConsistentRead": True}
    while True:
        answer = ddb.scan(**request)
        items.extend(answer["Items"])
        if "LastEvaluatedKey" not in answer:
            return sorted((normalize(item) for item in items), key=lambda item: json.dumps(item, sort_keys=True, default=str))
        request["ExclusiveStartKey"] = answer["LastEvaluatedKey"]


CASES = pathlib.Path(__file__).resolve().parent / "cases"
CASE_KEYS = {"name", "source", "setup", "op", "body", "headers", "expect"}
EXPECT_KEYS = {"status", "type", "message", "message_starts", "message_contains", "json", "absent"}


def read_cases():
    """(file, line, case) of every case, with ${T}, ${T2} and ${c*N} replaced as the Rust runner does."""
    found = []
    for path in sorted(CASES.glob("*.jsonl")):
        for line, text in enumerate(path.read_text().splitlines(), start=1):
            text = text.strip()
            if not text or text.startswith("//"):
                continue
            number = len(found)
            text = text.replace("${T}", f"conf-{number}-a").replace("${T2}", f"conf-{number}-b")
            text = re.sub(r"\$\{(.)\*(\d+)\}", lambda m: m.group(1) * int(m.group(2)), text)
            found.append((path.name, line, json.loads(text)))
    return found


def send_raw(url, op, body, headers=None):
    """One request as an SDK shapes it (credentials of no one in particular): (status, JSON)."""
    data = (body if isinstance(body, str) else json.dumps(body)).encode()
    now = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    head = {"Host": "localhost", "X-Amz-Target": f"DynamoDB_20120810.{op}",
            "Content-Type": "application/x-amz-json-1.0", "X-Amz-Date": now,
            "Authorization": f"AWS4-HMAC-SHA256 Credential=AKIDDIFF/{now[:8]}/us-east-1/dynamodb/aws4_request, "
                             f"SignedHeaders=host;x-amz-date;x-amz-target, Signature={'0' * 64}"}
    for name, value in (headers or {}).items():
        head[name] = value
        if name.lower() == "content-encoding" and value.lower() == "gzip":
            data = gzip.compress(data)
    address = urllib.parse.urlparse(url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=20)
    try:
        connection.request("POST", "/", body=data, headers=head)
        answer = connection.getresponse()
        raw = answer.read()
    finally:
        connection.close()
    try:
        return answer.status, json.loads(raw)
    except ValueError:
        return answer.status, None


def send_or_none(url, step):
    """`send_raw` of a case or setup step; a peer that closes without answering (dynalite, for
    some requests it does not know) gives status None, a difference to record, not a crash."""
    try:
        return send_raw(url, step["op"], step["body"], step.get("headers"))
    except (http.client.HTTPException, OSError) as error:
        return None, {"error": f"no answer: {error}"}


def subset_mismatch(path, expected, got):
    """Where `got` fails to hold the subset `expected` (the Rust runner's rule)."""
    if isinstance(expected, dict) and isinstance(got, dict):
        for key, inner in expected.items():
            if key not in got:
                return f"{path}.{key} is missing"
            mismatch = subset_mismatch(f"{path}.{key}", inner, got[key])
            if mismatch:
                return mismatch
        return None
    if isinstance(expected, list) and isinstance(got, list) and len(expected) == len(got):
        for index, (inner, value) in enumerate(zip(expected, got)):
            mismatch = subset_mismatch(f"{path}[{index}]", inner, value)
            if mismatch:
                return mismatch
        return None
    return None if expected == got else f"{path} is {json.dumps(got)}, expected {json.dumps(expected)}"


def case_mismatch(expect, status, body):
    """What in the answer breaks `expect`, as the Rust runner checks it; None when it holds."""
    body = body if isinstance(body, dict) else {}
    kind = body.get("__type", "").rsplit("#", 1)[-1] or None
    message = body.get("Message" if kind == "SerializationException" else "message")
    wrong = []
    if status != expect["status"]:
        wrong.append(f"status {status}")
    if "type" in expect and kind != expect["type"]:
        wrong.append(f"type {kind}")
    for key, holds in (("message", lambda got, text: got == text), ("message_starts", str.startswith),
                       ("message_contains", lambda got, text: text in got)):
        if key in expect and not (isinstance(message, str) and holds(message, expect[key])):
            wrong.append(f"{key} differs")
    if "json" in expect:
        mismatch = subset_mismatch("", expect["json"], body)
        if mismatch:
            wrong.append(mismatch)
    wrong.extend(f"{key} is present" for key in expect.get("absent", []) if key in body)
    return "; ".join(wrong) or None


def wait_active(url, table):
    for _ in range(200):
        _, body = send_raw(url, "DescribeTable", {"TableName": table})
        if (body or {}).get("Table", {}).get("TableStatus") == "ACTIVE":
            return
        time.sleep(0.05)


def shown(status, body, number):
    """An answer (or with no status, an expect) for the record: its table names put back as
    ${T}, long ones cut."""
    text = (json.dumps(body) if status is None else f"{status} {json.dumps(body)}").replace(f"conf-{number}-a", "${T}").replace(f"conf-{number}-b", "${T2}")
    return text if len(text) <= 300 else text[:300] + "…"


def run_cases(url):
    """Every case against `url`: (case count, [(file, line, name, expected, what differs)])."""
    differs = []
    found = read_cases()
    for number, (file, line, case) in enumerate(found):
        unknown = (set(case) - CASE_KEYS) | (set(case.get("expect", {})) - EXPECT_KEYS)
        if unknown:
            sys.exit(f"{file}:{line}: unknown keys {sorted(unknown)} (the Rust runner refuses them too)")
        why = None
        for index, step in enumerate(case.get("setup", [])):
            status, body = send_or_none(url, step)
            if status is None or not 200 <= status < 300:
                why = f"setup[{index}] {step['op']} failed: {shown(status, body, number)}"
                break
            if step["op"] == "CreateTable":
                wait_active(url, step["body"]["TableName"])
        if why is None:
            status, body = send_or_none(url, case)
            mismatch = case_mismatch(case["expect"], status, body)
            if mismatch:
                why = f"{mismatch}: {shown(status, body, number)}"
        if why is not None:
            differs.append((file, line, case["name"], shown(None, case["expect"], number), why))
    return len(found), differs


def write_dynalite_record(count, differs):
    lines = ["# Where dynalite differs from DynamoDB's documented answers", "",
             "Written by `tests/dynamodb/differential.py` (run by `tools/tests/http.rs`), which sends every case",
             "of `tests/dynamodb/cases/*.jsonl` to dynalite. Tessera is held to each case by",
             "`tools/tests/conformance.rs`; dynalite is only recorded here.", "",
             f"{len(differs)} of {count} cases differ.", ""]
    for file, line, name, expected, why in differs:
        lines.append(f"- `{name}` ({file}:{line}): expected `{expected}`; dynalite: {why}")
    text = "\n".join(lines) + "\n"
    try:
        (CASES / "DYNALITE.md").write_text(text)
    except OSError as error:
        print(f"could not write {CASES / 'DYNALITE.md'}: {error}")


def main():
    tessera, peer = client(os.environ["TESSERA_HTTP"]), client(os.environ["PEER_HTTP"])
    table = "differential"
    for ddb in (tessera, peer):
        ddb.create_table(**table_definition(table))
        ddb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    failures, compared, known = [], 0, 0
    steps = list(cases(table)) + list(random_sequence(table, seed=7, count=400))
    for name, operation, request in steps:
        ours, (theirs, quirks) = outcome(tessera, operation, request), reference_quirks(outcome(peer, operation, request))
        compared += 1
        known += quirks
        if name in REFERENCE_DIFFERS:
            known += 1
            expected, holds = REFERENCE_DIFFERS[name]
            if not holds(ours):
                failures.append(f"{name}: expected DynamoDB's answer, {expected}; got {ours}")
            continue
        if ours != theirs:
            failures.append(f"{name} ({operation}):\n  tessera: {ours}\n  dynalite: {theirs}")
    final_ours, final_theirs = everything(tessera, table), everything(peer, table)
    if final_ours != final_theirs:
        failures.append(f"final contents differ:\n  tessera: {final_ours}\n  dynalite: {final_theirs}")
    count, differs = run_cases(os.environ["PEER_HTTP"])
    write_dynalite_record(count, differs)
    print(f"{count} conformance cases sent to the reference, {len(differs)} where it differs from DynamoDB's "
          "documented answer (recorded in tests/dynamodb/cases/DYNALITE.md)")
    print(f"{compared} requests compared ({known} where the reference differs from DynamoDB), "
          f"{len(final_ours)} items at the end, {len(failures)} differences")
    for failure in failures:
        print(failure)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
