"""Every kind of write the DynamoDB API takes, edge values included, against a node that is
then SIGKILLed and restarted: what was acknowledged must be readable afterwards, and what was
refused must never have taken effect.

  crash_api.py write --endpoint URL --log FILE [--seed N] [--count N]
      Creates the tables, then sends COUNT (default: until the node goes away) requests drawn
      from the seed: PutItem, UpdateItem, DeleteItem and BatchWriteItem, with expressions and
      with the legacy parameters, holding edge values (empty sets and strings, 38-digit
      numbers, lists nested past the limit, items at and over 400 KB, binary keys). After each
      request it reads the keys it touched (ConsistentRead) and appends what it found to FILE,
      so FILE holds the state the node had acknowledged; a refused request must have left its
      keys as they were. When the node stops answering (it was killed), the keys of the
      request in flight are marked uncertain and the script exits 0.
  crash_api.py check --endpoint URL [--endpoint URL ...] --log FILE
      After the restart: every key in FILE holds what FILE says last (uncertain keys excepted),
      read with ConsistentRead at the first endpoint and, eventually, with eventually
      consistent reads at every endpoint (each a node whose replica must have decoded and
      applied every entry its leader chose); then every table still takes writes.
"""

import argparse
import base64
import json
import random
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

CONFIG = Config(retries={"max_attempts": 1}, parameter_validation=False, connect_timeout=5, read_timeout=20)
GONE = (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError, ConnectionError)
# Answers after which a write may or may not have taken effect.
UNKNOWN_OUTCOME = {"InternalServerError", "ServiceUnavailable", "ServiceUnavailableException", "ThrottlingException",
                   "RequestLimitExceeded"}
TABLES = {
    # A string partition key and a number sort key.
    "crash_composite": {
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"},
                                 {"AttributeName": "sk", "AttributeType": "N"}],
    },
    # A binary partition key alone.
    "crash_binary": {
        "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "B"}],
    },
}


def client(url):
    return boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1", aws_access_key_id="AKIDCRASH",
                        aws_secret_access_key="crash", config=CONFIG)


def b64(data):
    """Binary values go to the SDK as bytes (it encodes them); canonical() stores them as text."""
    return data


class Generator:
    """Requests drawn from one seed."""

    def __init__(self, seed):
        self.random = random.Random(seed)

    def choice(self, options):
        return self.random.choice(options)

    def chance(self, p):
        return self.random.random() < p

    def key(self, table):
        r = self.random
        if table == "crash_composite":
            pk = r.choice(["a", "b", "c", "d", "ü-ключ", "x" * 300])
            # Mostly a few sort keys, so that writes meet earlier ones; sometimes an edge.
            sk = r.choice(["1", "2", "3", "4", "5", "-7.5", "0.001", "9" * 38, "1E+125", "-1E-130"])
            key = {"pk": {"S": pk}, "sk": {"N": sk}}
            if self.chance(0.02):
                key = {"pk": {"S": "k" * r.choice([1321, 2048, 2049])}, "sk": {"N": "1"}}  # long keys
            if self.chance(0.01):
                key = {"pk": {"S": ""}, "sk": {"N": "1"}}  # an empty key value: refused
            return key
        data = bytes(r.choice([[0], [0, 0], [1], [2], [0, 255], [255, 0, 1], [7] * 40, list(range(256))]))
        if self.chance(0.02):
            data = b""  # refused
        return {"id": {"B": b64(data)}}

    def scalar(self):
        r = self.random
        return r.choice([
            {"S": ""}, {"S": "text"}, {"S": "ü" * 50}, {"N": "0"}, {"N": "9" * 38}, {"N": "-" + "9" * 38},
            {"N": "1E-130"}, {"N": "9.9999999999999999999999999999999999999E+125"}, {"B": ""}, {"B": b64(b"\x00\xff")},
            {"BOOL": True}, {"NULL": True},
        ])

    def value(self, depth=0):
        r = self.random
        kind = r.random()
        if kind < 0.45 or depth > 3:
            return self.scalar()
        if kind < 0.6:
            return r.choice([{"SS": ["a", "b"]}, {"NS": ["1", "2.5", "9" * 38]}, {"BS": [b64(b"x"), b64(b"")]},
                             {"SS": []}, {"NS": []}, {"BS": []}, {"SS": ["dup", "dup"]}])
        if kind < 0.7:
            # Nested 31 to 34 levels deep: DynamoDB's limit is 32.
            inner = self.scalar()
            for _ in range(r.choice([31, 32, 33, 34])):
                inner = {"L": [inner]}
            return inner
        if kind < 0.85:
            return {"L": [self.value(depth + 1) for _ in range(r.randint(0, 3))]}
        return {"M": {r.choice(["x", "y", "z", ""]): self.value(depth + 1) for _ in range(r.randint(0, 3))}}

    def item(self, table):
        item = dict(self.key(table))
        for _ in range(self.random.randint(0, 4)):
            item[self.choice(["a", "b", "s", "n", "l", "m"])] = self.value()
        if self.chance(0.03):
            # Around the 400 KB item limit.
            item["big"] = {"B": b64(b"\x01" * self.choice([200_000, 390_000, 409_500, 409_700]))}
        return item

    def placeholder_value(self):
        return self.choice([self.value(), {"N": "1"}, {"SS": ["a"]}, {"SS": []}, {"NS": []}, {"L": [{"S": "x"}]}])

    def condition(self):
        """A ConditionExpression with its values, or None."""
        if self.chance(0.5):
            return None
        expression = self.choice([
            "attribute_exists(a)", "attribute_not_exists(a)", "a = :c", "a <> :c", "contains(s, :c)",
            "size(l) < :c", "a IN (:c, :d)", "attribute_type(a, :t)", "begins_with(a, :c)",
        ])
        values = {}
        if ":c" in expression:
            values[":c"] = self.placeholder_value()
        if ":d" in expression:
            values[":d"] = self.placeholder_value()
        if ":t" in expression:
            values[":t"] = {"S": self.choice(["S", "N", "SS", "L", "BOGUS"])}
        return expression, values

    def with_condition(self, request):
        condition = self.condition()
        if condition:
            request["ConditionExpression"], values = condition
            if values:
                request["ExpressionAttributeValues"] = values
        elif self.chance(0.3):
            # The legacy form.
            request["Expected"] = self.choice([
                {"a": {"Exists": False}}, {"a": {"Value": self.placeholder_value()}},
                {"s": {"ComparisonOperator": "CONTAINS", "AttributeValueList": [self.placeholder_value()]}},
                {"n": {"ComparisonOperator": "NOT_CONTAINS", "AttributeValueList": [{"S": "x"}]}},
            ])
        return request

    def update(self, table):
        request = {"TableName": table, "Key": self.key(table), "ReturnValues": self.choice(["NONE", "ALL_NEW"])}
        if self.chance(0.2):
            action = self.choice(["PUT", "ADD", "DELETE"])
            update = {"Action": action}
            if action != "DELETE" or self.chance(0.7):
                update["Value"] = self.placeholder_value()
            request["AttributeUpdates"] = {self.choice(["a", "s", "n"]): update}
            return request
        clauses = self.random.sample([
            "SET a = :v", "SET n = if_not_exists(n, :zero) + :one", "SET l = list_append(if_not_exists(l, :empty), :v)",
            "REMOVE b", "REMOVE l[0]", "ADD n :one", "ADD s :v", "DELETE s :v", "SET m.x = :v", "SET l[5] = :v",
        ], self.random.randint(1, 2))
        # One clause per action keyword.
        by_action = {}
        for clause in clauses:
            action, rest = clause.split(" ", 1)
            by_action.setdefault(action, []).append(rest)
        request["UpdateExpression"] = " ".join(f"{action} {', '.join(parts)}" for action, parts in by_action.items())
        values = {}
        expression = request["UpdateExpression"]
        for name, value in ((":v", self.placeholder_value()), (":one", {"N": "1"}), (":zero", {"N": "0"}),
                            (":empty", {"L": []})):
            if name in expression:
                values[name] = value
        condition = self.condition()
        if condition:
            request["ConditionExpression"], extra = condition
            values.update(extra)
        if values:
            request["ExpressionAttributeValues"] = values
        return request

    def request(self):
        """(operation, request, keys touched as (table, key))."""
        table = self.choice(sorted(TABLES))
        kind = self.random.random()
        if kind < 0.35:
            item = self.item(table)
            request = self.with_condition({"TableName": table, "Item": item})
            return "put_item", request, [(table, {name: item[name] for name in key_names(table)})]
        if kind < 0.7:
            request = self.update(table)
            return "update_item", request, [(table, request["Key"])]
        if kind < 0.85:
            request = self.with_condition({"TableName": table, "Key": self.key(table)})
            return "delete_item", request, [(table, request["Key"])]
        writes, touched = [], []
        for _ in range(self.random.randint(0, 4)):
            if self.chance(0.7):
                item = self.item(table)
                writes.append({"PutRequest": {"Item": item}})
                touched.append((table, {name: item[name] for name in key_names(table)}))
            else:
                key = self.key(table)
                writes.append({"DeleteRequest": {"Key": key}})
                touched.append((table, key))
        return "batch_write_item", {"RequestItems": {table: writes}}, touched


def key_names(table):
    return [entry["AttributeName"] for entry in TABLES[table]["KeySchema"]]


def canonical(value):
    """An attribute value with its sets sorted, so that order does not count."""
    if isinstance(value, dict):
        return {k: (sorted(canonical(v)) if k in ("SS", "NS", "BS") else canonical(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    return value


def key_id(table, key):
    return json.dumps([table, canonical(key)], sort_keys=True)


def read(ddb, table, key, consistent=True):
    answer = ddb.get_item(TableName=table, Key=key, ConsistentRead=consistent)
    item = answer.get("Item")
    return None if item is None else canonical(item)


def key_valid(ddb, table, key):
    """Whether a GetItem of the key is served (a refused key cannot hold anything)."""
    try:
        read(ddb, table, key)
        return True
    except ClientError as error:
        if error.response["Error"]["Code"] == "ValidationException":
            return False
        raise


def create_tables(ddb):
    for name, definition in TABLES.items():
        try:
            ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **definition)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceInUseException":
                raise
    for name in TABLES:
        wait_active(ddb, name)


def wait_active(ddb, name):
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if ddb.describe_table(TableName=name)["Table"]["TableStatus"] == "ACTIVE":
                return
        except ClientError:
            pass
        time.sleep(0.1)
    sys.exit(f"table {name} did not become ACTIVE")


def write(args):
    ddb = client(args.endpoint[0])
    create_tables(ddb)
    generator = Generator(args.seed)
    model = {}
    counts = {"acknowledged": 0, "refused": 0, "unknown": 0}
    reasons = {}
    with open(args.log, "a") as log:
        def record(entry):
            log.write(json.dumps(entry) + "\n")
            log.flush()

        sent = 0
        while args.count == 0 or sent < args.count:
            operation, request, touched = generator.request()
            sent += 1
            try:
                for table, key in touched:
                    # A key met for the first time: what it holds before this request.
                    if key_id(table, key) not in model and retry(lambda: key_valid(ddb, table, key), False):
                        model[key_id(table, key)] = retry(lambda: read(ddb, table, key), False)
                try:
                    getattr(ddb, operation)(**request)
                    outcome = "acknowledged"
                except ClientError as error:
                    code = error.response["Error"]["Code"]
                    outcome = "unknown" if code in UNKNOWN_OUTCOME else "refused"
                    reason = f"{code}: {error.response['Error'].get('Message', '')[:70]}"
                    reasons[reason] = reasons.get(reason, 0) + 1
                counts[outcome] += 1
                for table, key in touched:
                    if not retry(lambda: key_valid(ddb, table, key), False):
                        continue
                    found = retry(lambda: read(ddb, table, key), False)
                    ident = key_id(table, key)
                    if outcome == "refused" and model.get(ident) != found:
                        sys.exit(f"a refused {operation} changed {ident}: {model.get(ident)} became {found}\n"
                                 f"request: {json.dumps(canonical(request))[:2000]}")
                    model[ident] = found
                    record({"key": ident, "table": table, "item_key": canonical(key), "found": found})
            except GONE as error:
                for table, key in touched:
                    record({"key": key_id(table, key), "uncertain": True})
                print(f"the node went away after {sent - 1} requests ({error.__class__.__name__}): {counts}",
                      file=sys.stderr)
                return
    print(f"sent {sent} requests: {counts}", file=sys.stderr)
    if args.verbose:
        for reason, count in sorted(reasons.items(), key=lambda entry: -entry[1]):
            print(f"{count:5} {reason}", file=sys.stderr)


def decode_key(item_key):
    return {name: ({"B": base64.b64decode(value["B"])} if "B" in value else value) for name, value in item_key.items()}


def check(args):
    expected, uncertain, keys = {}, set(), {}
    with open(args.log) as log:
        for line in log:
            entry = json.loads(line)
            if entry.get("uncertain"):
                uncertain.add(entry["key"])
                continue
            expected[entry["key"]] = entry["found"]
            keys[entry["key"]] = (entry["table"], decode_key(entry["item_key"]))
    checked = [ident for ident in expected if ident not in uncertain]
    if len(checked) < 40:
        sys.exit(f"only {len(checked)} keys to check: the write phase did too little")
    stored = sum(1 for ident in checked if expected[ident] is not None)
    if stored < 10:
        sys.exit(f"only {stored} keys hold an item: the write phase stored too little")
    first = client(args.endpoint[0])
    for name in TABLES:
        wait_active(first, name)
    for ident in checked:
        table, key = keys[ident]
        found = retry(lambda: read(first, table, key))
        if found != expected[ident]:
            sys.exit(f"after the restart {ident} holds {found}, but {expected[ident]} was acknowledged")
    for url in args.endpoint:
        ddb = client(url)
        deadline = time.time() + 30
        for ident in checked:
            table, key = keys[ident]
            while True:
                found = retry(lambda: read(ddb, table, key, consistent=False))
                if found == expected[ident]:
                    break
                if time.time() > deadline:
                    sys.exit(f"{url}: {ident} holds {found} (eventually consistent), not {expected[ident]}")
                time.sleep(0.2)
    for name in TABLES:
        key = {"pk": {"S": "after"}, "sk": {"N": "1"}} if name == "crash_composite" else {"id": {"B": b64(b"after")}}
        retry(lambda: first.put_item(TableName=name, Item=dict(key, note={"S": "written after the restart"})))
        if read(first, name, key) is None:
            sys.exit(f"{name} lost a write made after the restart")
    print(f"{len(checked)} keys as acknowledged ({stored} holding items, {len(uncertain)} uncertain skipped) "
          f"at {len(args.endpoint)} endpoint(s)", file=sys.stderr)


def retry(call, patient_with_gone=True):
    """A call retried through the moments after a start (elections, catalogs loading); a node
    gone is waited for too, unless `patient_with_gone` is false."""
    deadline = time.time() + 30
    while True:
        try:
            return call()
        except ClientError as error:
            code = error.response["Error"]["Code"]
            if code not in UNKNOWN_OUTCOME | {"NotLeader"} or time.time() > deadline:
                raise
        except GONE:
            if time.time() > deadline or not patient_with_gone:
                raise
        time.sleep(0.2)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["write", "check"])
    parser.add_argument("--endpoint", action="append", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="count the refusals by reason")
    args = parser.parse_args()
    write(args) if args.mode == "write" else check(args)


if __name__ == "__main__":
    main()
