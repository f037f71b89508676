//! The typed API, once, for every front end and without I/O: each typed call is a `Call`, the
//! `Request` it sends and how its `Response` becomes the typed answer. A front end sends the
//! request its own way (the blocking `Client`, the glommio `AsyncClient` of `tessera-net`)
//! and gets its methods from `typed_calls!`, each a one-line wrapper of a function here.

use tessera_engine::{Item, KeySchema};

use super::Credentials;
use crate::frame::Frame;
use crate::{
    ConsumedCapacity, ErrorCode, Expressions, Query, RangeSpec, ReadExpressions, Request, Response, ReturnValues, Scan,
    TableDescription, TableKeys, UpdateItem, WireError, Write,
};

/// What a call can fail with.
#[derive(Debug)]
pub enum ClientError {
    /// The connection failed or timed out.
    Io(std::io::Error),
    /// The server's bytes made no sense (a bug on one side, or not a Tessera server).
    Protocol(String),
    /// The server answered with an error.
    Service(WireError),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Io(error) => write!(f, "connection error: {error}"),
            ClientError::Protocol(message) => write!(f, "protocol error: {message}"),
            ClientError::Service(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<std::io::Error> for ClientError {
    fn from(error: std::io::Error) -> ClientError {
        ClientError::Io(error)
    }
}

/// Whether an error is the service's answer with this code.
pub fn is_error(error: &ClientError, code: ErrorCode) -> bool {
    matches!(error, ClientError::Service(service) if service.code == code)
}

/// What BatchGetItem returns: the items found, per table, and the keys left unprocessed.
pub type BatchGetOutput = (Vec<(String, Vec<Item>)>, Vec<TableKeys>);

/// One page of a Query or Scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<Item>,
    /// Items read, before the filter.
    pub scanned_count: u32,
    /// Items that matched the filter (`items` is empty with Select COUNT).
    pub count: u32,
    /// Pass as `exclusive_start_key` to read the next page; `None` after the last.
    pub last_evaluated_key: Option<Item>,
}

/// An answer and the capacity it reports, or why there is none.
pub type Answer = Result<(Response, Vec<ConsumedCapacity>), ClientError>;

/// The answer a frame from the server carries (whichever request it answers).
pub fn answer_of(frame: &Frame) -> Answer {
    if !frame.checksum_ok {
        return Err(ClientError::Protocol("an answer failed its checksum".into()));
    }
    Response::decode_with_capacity(frame.header.message_type, frame.payload)
        .map_err(|error| ClientError::Protocol(error.to_string()))
}

/// One typed call: the request to send, and how its answer (an error answer already taken
/// out by the front end's retries) becomes the result.
pub struct Call<T> {
    request: Request,
    answer: fn(Response) -> Result<T, ClientError>,
}

impl<T> Call<T> {
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The result of the call, from the server's answer to `request`.
    pub fn answer(self, response: Response) -> Result<T, ClientError> {
        (self.answer)(response)
    }
}

/// The typed methods of a front end, written once for both: `typed_calls!(blocking)` inside
/// `impl Client`, `typed_calls!(async)` inside `impl AsyncClient`. Each method is one line,
/// `self.run(call::NAME(ARGS))` (awaited for `async`): the front end's `run` sends a `Call`'s
/// request with its retries and returns `Call::answer` of the response.
#[doc(hidden)]
#[macro_export]
macro_rules! typed_calls {
    ($mode:ident) => {
        $crate::typed_calls!(@each $mode
            fn create_table(table: &str, key_schema: $crate::client::KeySchema, partitions: u32) -> $crate::TableDescription;
            /// Administration: creates a table whose partition map has the ranges `ranges`
            /// chose (their first hashes, in order from 0, and their cores).
            fn create_table_placed(
                table: &str,
                key_schema: $crate::client::KeySchema,
                ranges: Vec<$crate::RangeSpec>
            ) -> $crate::TableDescription;
            fn delete_table(table: &str) -> $crate::TableDescription;
            fn describe_table(table: &str) -> $crate::TableDescription;
            /// The table's description without its item count and size (which take the server a
            /// call to every core): its key schema and partitions.
            fn layout(table: &str) -> $crate::TableDescription;
            /// The core serving this connection, and the server's number of cores.
            fn hello() -> (usize, usize);
            fn put_item(table: &str, item: $crate::client::Item) -> ();
            /// Puts `item`, returning the item it replaced.
            fn put_item_returning_old(table: &str, item: $crate::client::Item) -> Option<$crate::client::Item>;
            /// Puts `item` if `expressions`' condition holds (`ConditionalCheckFailedException` if not).
            fn put_item_if(table: &str, item: $crate::client::Item, expressions: $crate::Expressions) -> ();
            /// Applies the UpdateExpression `update` to the item under `key` (creating it if absent)
            /// if `expressions`' condition holds; returns what `return_values` asks for.
            fn update_item(
                table: &str,
                key: $crate::client::Item,
                update: &str,
                expressions: $crate::Expressions,
                return_values: $crate::ReturnValues
            ) -> Option<$crate::client::Item>;
            /// Deletes the item under `key` if `expressions`' condition holds, returning it.
            fn delete_item_if(
                table: &str,
                key: $crate::client::Item,
                expressions: $crate::Expressions
            ) -> Option<$crate::client::Item>;
            /// Reads the item under `key` (a strongly consistent read).
            fn get_item(table: &str, key: $crate::client::Item) -> Option<$crate::client::Item>;
            /// Deletes the item under `key`, returning it if there was one.
            fn delete_item(table: &str, key: $crate::client::Item) -> Option<$crate::client::Item>;
            /// One page of a Query.
            fn query(query: $crate::Query) -> $crate::client::Page;
            /// One page of a Scan.
            fn scan(scan: $crate::Scan) -> $crate::client::Page;
            /// Reads up to 100 keys; returns the items found per table and the keys left unprocessed.
            fn batch_get_item(tables: Vec<$crate::TableKeys>) -> $crate::client::BatchGetOutput;
            /// Makes up to 25 writes; returns the writes left unprocessed.
            fn batch_write_item(writes: Vec<$crate::Write>) -> Vec<$crate::Write>;
        );
    };
    (@each $mode:ident $($(#[$doc:meta])* fn $name:ident($($arg:ident: $type:ty),*) -> $out:ty;)*) => {
        $($crate::typed_calls!(@one $mode $(#[$doc])* fn $name($($arg: $type),*) -> $out);)*
    };
    (@one blocking $(#[$doc:meta])* fn $name:ident($($arg:ident: $type:ty),*) -> $out:ty) => {
        $(#[$doc])*
        pub fn $name(&mut self, $($arg: $type),*) -> Result<$out, $crate::client::ClientError> {
            self.run($crate::client::call::$name($($arg),*))
        }
    };
    (@one async $(#[$doc:meta])* fn $name:ident($($arg:ident: $type:ty),*) -> $out:ty) => {
        $(#[$doc])*
        pub async fn $name(&self, $($arg: $type),*) -> Result<$out, $crate::client::ClientError> {
            self.run($crate::client::call::$name($($arg),*)).await
        }
    };
}

fn call<T>(request: Request, answer: fn(Response) -> Result<T, ClientError>) -> Call<T> {
    Call { request, answer }
}

/// The proof of `credentials`, answered as Hello is (an error answer is its reason).
pub fn authenticate(credentials: &Credentials) -> Call<()> {
    call(credentials.authenticate(), |answer| match answer {
        Response::Hello { .. } => Ok(()),
        Response::Error(error) => Err(ClientError::Service(error)),
        other => Err(ClientError::Protocol(format!("Authenticate was answered with {other:?}"))),
    })
}

pub fn create_table(table: &str, key_schema: KeySchema, partitions: u32) -> Call<TableDescription> {
    call(
        Request::CreateTable {
            table: table.into(),
            key_schema,
            partitions,
            throughput: None,
            tags: Vec::new(),
            ranges: Vec::new(),
        },
        table_of,
    )
}

pub fn create_table_placed(table: &str, key_schema: KeySchema, ranges: Vec<RangeSpec>) -> Call<TableDescription> {
    call(
        Request::CreateTable {
            table: table.into(),
            key_schema,
            partitions: 0,
            throughput: None,
            tags: Vec::new(),
            ranges,
        },
        table_of,
    )
}

pub fn delete_table(table: &str) -> Call<TableDescription> {
    call(Request::DeleteTable { table: table.into() }, table_of)
}

pub fn describe_table(table: &str) -> Call<TableDescription> {
    call(Request::DescribeTable { table: table.into(), counts: true }, table_of)
}

/// DescribeTable without the counts.
pub fn layout(table: &str) -> Call<TableDescription> {
    call(Request::DescribeTable { table: table.into(), counts: false }, table_of)
}

pub fn hello() -> Call<(usize, usize)> {
    call(Request::Hello, |answer| match answer {
        Response::Hello { core, cores } => Ok((core as usize, cores as usize)),
        other => unexpected(other),
    })
}

/// One page of ListTables from `start` on: the names, and where the next page starts.
pub fn list_tables_page(start: Option<String>) -> Call<(Vec<String>, Option<String>)> {
    call(Request::ListTables { exclusive_start_table: start, limit: 0 }, |answer| match answer {
        Response::ListTables { tables, last_evaluated_table } => Ok((tables, last_evaluated_table)),
        other => unexpected(other),
    })
}

pub fn put_item(table: &str, item: Item) -> Call<()> {
    call(put_request(table, item, false, Expressions::default()), |_| Ok(()))
}

pub fn put_item_returning_old(table: &str, item: Item) -> Call<Option<Item>> {
    call(put_request(table, item, true, Expressions::default()), item_of)
}

pub fn put_item_if(table: &str, item: Item, expressions: Expressions) -> Call<()> {
    call(put_request(table, item, false, expressions), |_| Ok(()))
}

pub fn update_item(
    table: &str,
    key: Item,
    update: &str,
    expressions: Expressions,
    return_values: ReturnValues,
) -> Call<Option<Item>> {
    let request = Request::UpdateItem(UpdateItem {
        table: table.into(),
        key,
        update: update.into(),
        expressions,
        return_values,
        return_old_on_failure: false,
    });
    call(request, item_of)
}

pub fn delete_item_if(table: &str, key: Item, expressions: Expressions) -> Call<Option<Item>> {
    call(delete_request(table, key, expressions), item_of)
}

pub fn get_item(table: &str, key: Item) -> Call<Option<Item>> {
    call(
        Request::GetItem { table: table.into(), key, consistent_read: true, read: ReadExpressions::default() },
        item_of,
    )
}

pub fn delete_item(table: &str, key: Item) -> Call<Option<Item>> {
    call(delete_request(table, key, Expressions::default()), item_of)
}

pub fn query(query: Query) -> Call<Page> {
    call(Request::Query(query), page_of)
}

pub fn scan(scan: Scan) -> Call<Page> {
    call(Request::Scan(scan), page_of)
}

pub fn batch_get_item(tables: Vec<TableKeys>) -> Call<BatchGetOutput> {
    call(Request::BatchGetItem(tables), |answer| match answer {
        Response::BatchGetItem { responses, unprocessed } => Ok((responses, unprocessed)),
        other => unexpected(other),
    })
}

pub fn batch_write_item(writes: Vec<Write>) -> Call<Vec<Write>> {
    call(Request::BatchWriteItem(writes), |answer| match answer {
        Response::BatchWriteItem { unprocessed } => Ok(unprocessed),
        other => unexpected(other),
    })
}

fn put_request(table: &str, item: Item, return_old: bool, expressions: Expressions) -> Request {
    Request::PutItem { table: table.into(), item, return_old, expressions, return_old_on_failure: false }
}

fn delete_request(table: &str, key: Item, expressions: Expressions) -> Request {
    Request::DeleteItem { table: table.into(), key, return_old: true, expressions, return_old_on_failure: false }
}

pub(crate) fn unexpected<T>(response: Response) -> Result<T, ClientError> {
    Err(ClientError::Protocol(format!("unexpected answer {:?}", response.message_type())))
}

fn table_of(response: Response) -> Result<TableDescription, ClientError> {
    match response {
        Response::Table(table) => Ok(table),
        other => unexpected(other),
    }
}

fn item_of(response: Response) -> Result<Option<Item>, ClientError> {
    match response {
        Response::Item(item) => Ok(item),
        other => unexpected(other),
    }
}

fn page_of(response: Response) -> Result<Page, ClientError> {
    match response {
        Response::Items { items, scanned_count, count, last_evaluated_key } => {
            Ok(Page { items, scanned_count, count, last_evaluated_key })
        }
        other => unexpected(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_engine::AttributeValue;

    fn key() -> Item {
        Item::from([("id".to_string(), AttributeValue::S("k".into()))])
    }

    fn is_protocol<T>(result: Result<T, ClientError>) -> bool {
        matches!(result, Err(ClientError::Protocol(_)))
    }

    #[test]
    fn calls_send_their_request_and_read_their_answer() {
        let get = get_item("t", key());
        assert!(matches!(
            get.request(),
            Request::GetItem { table, consistent_read: true, .. } if table == "t"
        ));
        assert_eq!(get.answer(Response::Item(Some(key()))).unwrap(), Some(key()));
        let put = put_item_returning_old("t", key());
        assert!(matches!(put.request(), Request::PutItem { return_old: true, .. }));
        assert_eq!(put.answer(Response::Item(None)).unwrap(), None);
        assert!(matches!(delete_item("t", key()).request(), Request::DeleteItem { return_old: true, .. }));
        assert!(matches!(layout("t").request(), Request::DescribeTable { counts: false, .. }));
        assert!(matches!(describe_table("t").request(), Request::DescribeTable { counts: true, .. }));
        assert_eq!(hello().answer(Response::Hello { core: 1, cores: 4 }).unwrap(), (1, 4));
        let page = list_tables_page(Some("a".into()));
        assert!(
            matches!(page.request(), Request::ListTables { exclusive_start_table: Some(start), .. } if start == "a")
        );
        let answer = Response::ListTables { tables: vec!["b".into()], last_evaluated_table: None };
        assert_eq!(page.answer(answer).unwrap(), (vec!["b".to_string()], None));
        let items = Response::Items { items: vec![key()], scanned_count: 3, count: 1, last_evaluated_key: None };
        let page = page_of(items).unwrap();
        assert_eq!((page.items.len(), page.scanned_count, page.count), (1, 3, 1));
    }

    #[test]
    fn an_answer_of_another_kind_is_a_protocol_error() {
        assert!(is_protocol(get_item("t", key()).answer(Response::Hello { core: 0, cores: 1 })));
        assert!(is_protocol(hello().answer(Response::Item(None))));
        assert!(is_protocol(page_of(Response::Item(None))));
        assert!(is_protocol(batch_write_item(Vec::new()).answer(Response::Item(None))));
        assert!(is_protocol(delete_table("t").answer(Response::Item(None))));
        let nothing = Response::BatchGetItem { responses: Vec::new(), unprocessed: Vec::new() };
        assert_eq!(batch_get_item(Vec::new()).answer(nothing).unwrap(), (Vec::new(), Vec::new()));
    }

    #[test]
    fn frames_are_read_as_answers_and_damaged_ones_refused() {
        let mut bytes = Vec::new();
        Response::Item(Some(key())).encode(7, &mut bytes);
        let crate::frame::Decoded::Frame(frame, _) = crate::frame::decode(&bytes).unwrap() else { panic!() };
        assert!(
            matches!(answer_of(&frame), Ok((Response::Item(Some(item)), consumed)) if item == key() && consumed.is_empty())
        );
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let crate::frame::Decoded::Frame(frame, _) = crate::frame::decode(&bytes).unwrap() else { panic!() };
        assert!(matches!(answer_of(&frame), Err(ClientError::Protocol(message)) if message.contains("checksum")));
    }

    #[test]
    fn a_proof_is_answered_as_hello_is() {
        let credentials = Credentials::cluster("a-secret-of-enough-length");
        let proof = authenticate(&credentials);
        assert!(
            matches!(proof.request(), Request::Authenticate { key_id, .. } if key_id == crate::client::CLUSTER_KEY_ID)
        );
        assert!(proof.answer(Response::Hello { core: 0, cores: 1 }).is_ok());
        let refused = Response::Error(WireError::new(ErrorCode::UnrecognizedClientException, "no"));
        let error = authenticate(&credentials).answer(refused).unwrap_err();
        assert!(is_error(&error, ErrorCode::UnrecognizedClientException), "{error}");
        assert!(is_protocol(authenticate(&credentials).answer(Response::Item(None))));
    }
}
