"""The AWS SDK for Python (boto3) and the AWS CLI against a live `tessera serve`.

Run by `tools/tests/http.rs`, which starts the server with signatures checked and sets:
  TESSERA_HTTP        the endpoint URL (http://127.0.0.1:PORT)
  TESSERA_KEY_ID      an access key the server knows
  TESSERA_SECRET      its secret
Every table a test makes has a name of its own, so the tests share one server.
"""

import base64
import decimal
import json
import os
import subprocess
import unittest
import uuid

import boto3
import botocore
from boto3.dynamodb.conditions import Attr, Key
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["TESSERA_HTTP"]
KEY_ID = os.environ["TESSERA_KEY_ID"]
SECRET = os.environ["TESSERA_SECRET"]
REGION = "eu-west-1"
# No retries: a failure should show as the error it is.
CONFIG = Config(retries={"max_attempts": 1, "mode": "standard"})


def client(key_id=KEY_ID, secret=SECRET):
    return boto3.client(
        "dynamodb",
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=CONFIG,
    )


def resource():
    return boto3.resource(
        "dynamodb",
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        config=CONFIG,
    )


def fresh_name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_orders(ddb, name):
    """A table keyed by customer (S) and order number (N), waited for until ACTIVE."""
    ddb.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "customer", "KeyType": "HASH"},
            {"AttributeName": "n", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "customer", "AttributeType": "S"},
            {"AttributeName": "n", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})


def code(error):
    return error.exception.response["Error"]["Code"]


class TableLifecycle(unittest.TestCase):
    def test_create_describe_list_delete(self):
        ddb = client()
        name = fresh_name("life")
        create_orders(ddb, name)
        table = ddb.describe_table(TableName=name)["Table"]
        self.assertEqual(table["TableName"], name)
        self.assertEqual(table["TableStatus"], "ACTIVE")
        self.assertEqual(
            table["KeySchema"],
            [{"AttributeName": "customer", "KeyType": "HASH"}, {"AttributeName": "n", "KeyType": "RANGE"}],
        )
        self.assertEqual(
            sorted(table["AttributeDefinitions"], key=lambda d: d["AttributeName"]),
            [{"AttributeName": "customer", "AttributeType": "S"}, {"AttributeName": "n", "AttributeType": "N"}],
        )
        self.assertEqual(table["ItemCount"], 0)
        self.assertEqual(table["BillingModeSummary"]["BillingMode"], "PAY_PER_REQUEST")
        self.assertTrue(table["TableArn"].endswith(f":table/{name}"))
        self.assertIn(REGION, table["TableArn"])
        # A second table of the same name is refused.
        with self.assertRaises(ClientError) as error:
            create_orders(ddb, name)
        self.assertEqual(code(error), "ResourceInUseException")
        # ListTables pages (Limit 1) reach every table, this one among them.
        names = []
        for page in ddb.get_paginator("list_tables").paginate(PaginationConfig={"PageSize": 1}):
            self.assertLessEqual(len(page["TableNames"]), 1)
            names.extend(page["TableNames"])
        self.assertIn(name, names)
        self.assertEqual(names, sorted(names))
        deleted = ddb.delete_table(TableName=name)["TableDescription"]
        self.assertEqual(deleted["TableName"], name)
        ddb.get_waiter("table_not_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        with self.assertRaises(ddb.exceptions.ResourceNotFoundException):
            ddb.describe_table(TableName=name)
        with self.assertRaises(ddb.exceptions.ResourceNotFoundException):
            ddb.get_item(TableName=name, Key={"customer": {"S": "a"}, "n": {"N": "1"}})

    def test_bad_table_definitions_are_validation_errors(self):
        ddb = client()
        with self.assertRaises(ClientError) as error:
            ddb.create_table(
                TableName=fresh_name("bad"),
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "other", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
        self.assertEqual(code(error), "ValidationException")
        self.assertIn("AttributeDefinitions", error.exception.response["Error"]["Message"])


class OrdersTable(unittest.TestCase):
    """Tests sharing one orders table of their own (named after `prefix`)."""

    prefix = "orders"

    @classmethod
    def setUpClass(cls):
        cls.ddb = client()
        cls.name = fresh_name(cls.prefix)
        create_orders(cls.ddb, cls.name)


class ItemOperations(OrdersTable):
    prefix = "items"

    def key(self, customer, n):
        return {"customer": {"S": customer}, "n": {"N": str(n)}}

    def test_put_get_update_delete_with_expressions(self):
        ddb, name = self.ddb, self.name
        item = {
            **self.key("ada", 1),
            "total": {"N": "12.50"},
            "tags": {"SS": ["gift", "prime"]},
            "blob": {"B": b"\x00\x01\xff"},
            "lines": {"L": [{"M": {"sku": {"S": "x1"}, "qty": {"N": "2"}}}]},
            "paid": {"BOOL": False},
            "note": {"NULL": True},
        }
        ddb.put_item(TableName=name, Item=item, ConditionExpression="attribute_not_exists(customer)")
        got = ddb.get_item(TableName=name, Key=self.key("ada", 1), ConsistentRead=True)["Item"]
        self.assertEqual(got["total"], {"N": "12.5"})
        self.assertEqual(got["blob"], {"B": b"\x00\x01\xff"})
        self.assertEqual(sorted(got["tags"]["SS"]), ["gift", "prime"])
        self.assertEqual(got["lines"], item["lines"])
        projected = ddb.get_item(
            TableName=name,
            Key=self.key("ada", 1),
            ProjectionExpression="#t, #l[0].sku",
            ExpressionAttributeNames={"#t": "total", "#l": "lines"},
        )["Item"]
        self.assertEqual(projected, {"total": {"N": "12.5"}, "lines": {"L": [{"M": {"sku": {"S": "x1"}}}]}})
        # The same put again fails its condition, as the SDK's own exception.
        with self.assertRaises(ddb.exceptions.ConditionalCheckFailedException) as failed:
            ddb.put_item(
                TableName=name,
                Item=item,
                ConditionExpression="attribute_not_exists(customer)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        self.assertEqual(failed.exception.response["Item"]["total"], {"N": "12.5"})
        updated = ddb.update_item(
            TableName=name,
            Key=self.key("ada", 1),
            UpdateExpression="SET paid = :yes, #t = #t + :more ADD tags :new REMOVE note",
            ConditionExpression="paid = :no",
            ExpressionAttributeNames={"#t": "total"},
            ExpressionAttributeValues={
                ":yes": {"BOOL": True},
                ":no": {"BOOL": False},
                ":more": {"N": "0.25"},
                ":new": {"SS": ["fast"]},
            },
            ReturnValues="ALL_NEW",
        )["Attributes"]
        self.assertEqual(updated["total"], {"N": "12.75"})
        self.assertEqual(updated["paid"], {"BOOL": True})
        self.assertEqual(sorted(updated["tags"]["SS"]), ["fast", "gift", "prime"])
        self.assertNotIn("note", updated)
        old = ddb.update_item(
            TableName=name,
            Key=self.key("ada", 1),
            UpdateExpression="SET #t = :v",
            ExpressionAttributeNames={"#t": "total"},
            ExpressionAttributeValues={":v": {"N": "1"}},
            ReturnValues="UPDATED_OLD",
        )["Attributes"]
        self.assertEqual(old, {"total": {"N": "12.75"}})
        with self.assertRaises(ddb.exceptions.ConditionalCheckFailedException):
            ddb.delete_item(TableName=name, Key=self.key("ada", 1), ConditionExpression="paid = :no",
                            ExpressionAttributeValues={":no": {"BOOL": False}})
        gone = ddb.delete_item(TableName=name, Key=self.key("ada", 1), ReturnValues="ALL_OLD")["Attributes"]
        self.assertEqual(gone["total"], {"N": "1"})
        self.assertNotIn("Item", ddb.get_item(TableName=name, Key=self.key("ada", 1)))

    def test_the_legacy_parameters_of_older_applications(self):
        ddb, name = self.ddb, self.name
        ddb.put_item(TableName=name, Item={**self.key("old", 1), "qty": {"N": "1"}}, Expected={"customer": {"Exists": False}})
        with self.assertRaises(ddb.exceptions.ConditionalCheckFailedException):
            ddb.put_item(TableName=name, Item=self.key("old", 1), Expected={"customer": {"Exists": False}})
        updated = ddb.update_item(
            TableName=name, Key=self.key("old", 1), ReturnValues="ALL_NEW",
            AttributeUpdates={"qty": {"Action": "ADD", "Value": {"N": "2"}}, "s": {"Action": "PUT", "Value": {"S": "x"}}},
            Expected={"qty": {"ComparisonOperator": "EQ", "AttributeValueList": [{"N": "1"}]}})["Attributes"]
        self.assertEqual((updated["qty"], updated["s"]), ({"N": "3"}, {"S": "x"}))
        got = ddb.query(TableName=name, AttributesToGet=["qty"], KeyConditions={
            "customer": {"ComparisonOperator": "EQ", "AttributeValueList": [{"S": "old"}]},
            "n": {"ComparisonOperator": "GE", "AttributeValueList": [{"N": "1"}]}})["Items"]
        self.assertEqual(got, [{"qty": {"N": "3"}}])
        with self.assertRaises(ClientError) as error:
            ddb.put_item(TableName=name, Item=self.key("old", 2), Expected={"customer": {"Exists": False}},
                         ConditionExpression="attribute_not_exists(customer)")
        self.assertEqual(code(error), "ValidationException")

    def test_consumed_capacity_is_reported(self):
        ddb, name = self.ddb, self.name
        put = ddb.put_item(TableName=name, Item={**self.key("cap", 1), "v": {"S": "x" * 1500}},
                           ReturnConsumedCapacity="TOTAL")
        self.assertEqual(put["ConsumedCapacity"], {"TableName": name, "CapacityUnits": 2.0})
        get = ddb.get_item(TableName=name, Key=self.key("cap", 1), ReturnConsumedCapacity="TOTAL")
        self.assertEqual(get["ConsumedCapacity"]["CapacityUnits"], 0.5)

    def test_validation_errors(self):
        ddb, name = self.ddb, self.name
        cases = [
            lambda: ddb.put_item(TableName=name, Item={"customer": {"S": "a"}}),
            lambda: ddb.get_item(TableName=name, Key={"customer": {"S": "a"}, "n": {"S": "not a number"}}),
            lambda: ddb.update_item(TableName=name, Key=self.key("a", 1), UpdateExpression="SET = 1"),
            lambda: ddb.put_item(TableName=name, Item=self.key("a", 1), ConditionExpression="size(#missing) > :v",
                                 ExpressionAttributeValues={":v": {"N": "1"}}),
            lambda: ddb.put_item(TableName=name, Item={**self.key("a", 1), "big": {"S": "x" * 409_600}}),
            lambda: ddb.query(TableName=name, KeyConditionExpression="n = :n",
                              ExpressionAttributeValues={":n": {"N": "1"}}),
        ]
        for index, case in enumerate(cases):
            with self.subTest(index=index):
                with self.assertRaises(ClientError) as error:
                    case()
                self.assertEqual(code(error), "ValidationException")


class QueryAndScan(OrdersTable):
    prefix = "reads"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        writes = []
        for customer in ["ada", "bob", "cy"]:
            for n in range(1, 121):
                item = {"customer": {"S": customer}, "n": {"N": str(n)}, "even": {"BOOL": n % 2 == 0},
                        "pad": {"S": "p" * 200}}
                writes.append({"PutRequest": {"Item": item}})
        for start in range(0, len(writes), 25):
            answer = cls.ddb.batch_write_item(RequestItems={cls.name: writes[start:start + 25]})
            assert not answer["UnprocessedItems"], answer

    def test_query_pages_ranges_and_filters(self):
        ddb, name = self.ddb, self.name
        items = []
        pages = ddb.get_paginator("query").paginate(
            TableName=name,
            KeyConditionExpression="customer = :c AND n BETWEEN :lo AND :hi",
            ExpressionAttributeValues={":c": {"S": "ada"}, ":lo": {"N": "10"}, ":hi": {"N": "99"}},
            PaginationConfig={"PageSize": 7},
        )
        page_count = 0
        for page in pages:
            page_count += 1
            self.assertLessEqual(page["Count"], 7)
            items.extend(page["Items"])
        self.assertEqual([int(item["n"]["N"]) for item in items], list(range(10, 100)))
        self.assertEqual(page_count, 13)
        backward = ddb.query(
            TableName=name,
            KeyConditionExpression="customer = :c AND n < :hi",
            FilterExpression="even = :t",
            ExpressionAttributeValues={":c": {"S": "bob"}, ":hi": {"N": "11"}, ":t": {"BOOL": True}},
            ScanIndexForward=False,
        )
        self.assertEqual([int(item["n"]["N"]) for item in backward["Items"]], [10, 8, 6, 4, 2])
        self.assertEqual(backward["ScannedCount"], 10)
        counted = ddb.query(
            TableName=name,
            KeyConditionExpression="customer = :c",
            ExpressionAttributeValues={":c": {"S": "cy"}},
            Select="COUNT",
        )
        self.assertEqual(counted["Count"], 120)
        self.assertNotIn("Items", counted)

    def test_parallel_scan_reads_each_item_once(self):
        ddb, name = self.ddb, self.name
        seen = []
        for segment in range(4):
            for page in ddb.get_paginator("scan").paginate(
                TableName=name, Segment=segment, TotalSegments=4, PaginationConfig={"PageSize": 50}
            ):
                seen.extend((item["customer"]["S"], int(item["n"]["N"])) for item in page["Items"])
        self.assertEqual(len(seen), 360)
        self.assertEqual(len(set(seen)), 360)
        filtered = ddb.scan(TableName=name, FilterExpression="n > :n", ExpressionAttributeValues={":n": {"N": "118"}})
        self.assertEqual(filtered["Count"], 6)

    def test_batch_get_and_its_limits(self):
        ddb, name = self.ddb, self.name
        keys = [{"customer": {"S": "ada"}, "n": {"N": str(n)}} for n in range(1, 101)]
        answer = ddb.batch_get_item(RequestItems={name: {"Keys": keys, "ProjectionExpression": "n"}})
        got = sorted(int(item["n"]["N"]) for item in answer["Responses"][name])
        self.assertEqual(got, list(range(1, 101)))
        self.assertEqual(answer["UnprocessedKeys"], {})
        with self.assertRaises(ClientError) as error:
            ddb.batch_get_item(RequestItems={name: {"Keys": keys + [{"customer": {"S": "x"}, "n": {"N": "0"}}]}})
        self.assertEqual(code(error), "ValidationException")
        too_many = [{"PutRequest": {"Item": {"customer": {"S": "z"}, "n": {"N": str(n)}}}} for n in range(26)]
        with self.assertRaises(ClientError) as error:
            ddb.batch_write_item(RequestItems={name: too_many})
        self.assertEqual(code(error), "ValidationException")


class ResourceApplication(unittest.TestCase):
    """An application written against boto3's Table resource, unchanged."""

    def test_a_shopping_cart(self):
        ddb = resource()
        name = fresh_name("carts")
        table = ddb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "cart", "KeyType": "HASH"}, {"AttributeName": "sku", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "cart", "AttributeType": "S"},
                {"AttributeName": "sku", "AttributeType": "S"},
            ],
            ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 5},
        )
        table.wait_until_exists()
        with table.batch_writer() as batch:
            for index in range(60):
                batch.put_item(Item={
                    "cart": f"cart-{index % 3}",
                    "sku": f"sku-{index:03}",
                    "qty": index % 5 + 1,
                    "price": decimal.Decimal("9.99"),
                    "labels": {"new"} if index % 2 else {"sale", "new"},
                    "meta": {"seen": True, "by": ["web", "app"]},
                })
        table.put_item(Item={"cart": "cart-9", "sku": "gift", "qty": 1, "wrapped": b"bytes"})
        item = table.get_item(Key={"cart": "cart-9", "sku": "gift"})["Item"]
        self.assertEqual(item["qty"], 1)
        self.assertEqual(bytes(item["wrapped"]), b"bytes")
        rows = table.query(
            KeyConditionExpression=Key("cart").eq("cart-0") & Key("sku").begins_with("sku-01"),
            FilterExpression=Attr("qty").gte(3) & Attr("labels").contains("sale"),
        )["Items"]
        self.assertTrue(rows)
        for row in rows:
            self.assertTrue(row["sku"].startswith("sku-01"))
            self.assertGreaterEqual(row["qty"], 3)
            self.assertIn("sale", row["labels"])
            self.assertEqual(row["price"], decimal.Decimal("9.99"))
            self.assertEqual(row["meta"], {"seen": True, "by": ["web", "app"]})
        answer = table.update_item(
            Key={"cart": "cart-0", "sku": "sku-000"},
            UpdateExpression="ADD qty :one SET price = price - :off",
            ConditionExpression=Attr("qty").exists(),
            ExpressionAttributeValues={":one": 1, ":off": decimal.Decimal("0.99")},
            ReturnValues="UPDATED_NEW",
        )
        self.assertEqual(answer["Attributes"], {"qty": 2, "price": decimal.Decimal("9")})
        with self.assertRaises(table.meta.client.exceptions.ConditionalCheckFailedException):
            table.delete_item(Key={"cart": "cart-0", "sku": "sku-000"}, ConditionExpression=Attr("qty").eq(99))
        everything = []
        response = table.scan(Limit=11)
        everything.extend(response["Items"])
        while "LastEvaluatedKey" in response:
            response = table.scan(Limit=11, ExclusiveStartKey=response["LastEvaluatedKey"])
            everything.extend(response["Items"])
        self.assertEqual(len(everything), 61)
        self.assertEqual(table.item_count, 61)
        table.delete()
        table.wait_until_not_exists()


class Authentication(unittest.TestCase):
    def test_a_wrong_secret_is_an_invalid_signature(self):
        with self.assertRaises(ClientError) as error:
            client(secret="not-the-secret").list_tables()
        self.assertEqual(code(error), "InvalidSignatureException")
        self.assertEqual(error.exception.response["ResponseMetadata"]["HTTPStatusCode"], 400)

    def test_an_unknown_key_is_unrecognized(self):
        with self.assertRaises(ClientError) as error:
            client(key_id="AKIDNOBODYKNOWS", secret="x").list_tables()
        self.assertEqual(code(error), "UnrecognizedClientException")

    def test_an_unsigned_request_is_missing_its_token(self):
        unsigned = boto3.client("dynamodb", endpoint_url=ENDPOINT, region_name=REGION, config=Config(
            signature_version=botocore.UNSIGNED, retries={"max_attempts": 1}))
        with self.assertRaises(ClientError) as error:
            unsigned.list_tables()
        self.assertEqual(code(error), "MissingAuthenticationTokenException")


class CommandLine(unittest.TestCase):
    """The AWS CLI, as a person would type it."""

    def aws(self, *args, check=True):
        env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION=REGION,
                   AWS_MAX_ATTEMPTS="1", AWS_PAGER="")
        result = subprocess.run(["aws", "dynamodb", "--endpoint-url", ENDPOINT, "--output", "json", *args],
                                capture_output=True, text=True, env=env, timeout=60)
        if check:
            self.assertEqual(result.returncode, 0, result.stderr)
            return json.loads(result.stdout) if result.stdout.strip() else {}
        return result

    def test_the_cli_round_trip(self):
        name = fresh_name("cli")
        self.aws("create-table", "--table-name", name,
                 "--attribute-definitions", "AttributeName=id,AttributeType=B",
                 "--key-schema", "AttributeName=id,KeyType=HASH", "--billing-mode", "PAY_PER_REQUEST")
        self.aws("wait", "table-exists", "--table-name", name)
        key = base64.b64encode(b"\x01\x02").decode()
        self.aws("put-item", "--table-name", name, "--item", json.dumps({"id": {"B": key}, "n": {"N": "7"}}))
        got = self.aws("get-item", "--table-name", name, "--key", json.dumps({"id": {"B": key}}))
        self.assertEqual(got["Item"]["n"], {"N": "7"})
        scanned = self.aws("scan", "--table-name", name)
        self.assertEqual(scanned["Count"], 1)
        failed = self.aws("put-item", "--table-name", name, "--item", json.dumps({"id": {"B": key}}),
                          "--condition-expression", "attribute_not_exists(id)", check=False)
        self.assertNotEqual(failed.returncode, 0)
        self.assertIn("ConditionalCheckFailedException", failed.stderr)
        self.assertIn(name, self.aws("list-tables")["TableNames"])
        self.aws("delete-table", "--table-name", name)


if __name__ == "__main__":
    unittest.main(verbosity=2)
