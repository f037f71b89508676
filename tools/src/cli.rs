//! The command line of `tessera`, parsed by clap: each command's flags, their types and
//! defaults, and the help printed for them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, CommandFactory, Parser, Subcommand, ValueEnum};
use serde_json::Value;
use tessera_engine::{AttributeValue, Item, KeyAttribute, KeyType};
use tessera_net::json::{item_from_text, value_from_json};
use tessera_wire::client::ClientTls;
use tessera_wire::{ReturnConsumedCapacity, ReturnValues};

/// The binary protocol's address (`serve --listen`), which the client commands speak.
const ENDPOINT_DEFAULT: &str = "127.0.0.1:7400";
const BINARY_PORT: u16 = 7400;
/// DynamoDB's HTTP API (`serve --http-listen`), for the AWS SDKs and CLI.
const HTTP_LISTEN_DEFAULT: &str = "127.0.0.1:8000";
const HTTP_PORT: u16 = 8000;

/// Runs a Tessera node (serve) or a local cluster, administers a cluster, and talks to a
/// node: items go in and out as DynamoDB JSON; failures print one line and exit non-zero.
#[derive(Parser)]
#[command(name = "tessera", version, arg_required_else_help = true, args_override_self = true)]
#[command(after_help = "query and scan print one item per line, following every page.")]
pub struct Cli {
    /// The node the client commands talk to, on its binary protocol's port (serve --listen),
    /// not DynamoDB's HTTP API's: HOST:PORT or http://HOST:PORT, or https://HOST:PORT for a
    /// node serving TLS (whose certificate must name HOST); given before the command
    #[arg(long, value_name = "ADDR", default_value = ENDPOINT_DEFAULT, value_parser = endpoint)]
    pub endpoint: Endpoint,
    /// The certificates (PEM) a TLS client trusts (a CA's, or a node's self-signed one), for
    /// https:// endpoints and cluster status|replace --tls [default: the system's trust store]
    #[arg(long, value_name = "FILE", env = "TESSERA_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a node; with --node-id and --cluster, a member of a cluster
    Serve(Serve),
    /// Run a cluster on this machine, or look at and repair one
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Create, list, describe or delete tables
    #[command(subcommand)]
    Table(TableCommand),
    /// Write an item, e.g. put users '{"id":{"S":"a"},"age":{"N":"30"}}'
    Put(Put),
    /// Delete the item with a key
    Delete(Delete),
    /// Update the item with a key, e.g. --update 'SET #c = #c + :one'
    Update(Update),
    /// Read the item with a key
    Get(Get),
    /// Read the items under a partition key, in sort key order
    Query(Query),
    /// Read every item of a table
    Scan(Scan),
}

#[derive(Args)]
pub struct Serve {
    /// Where the node keeps its data
    #[arg(long, value_name = "DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// The binary protocol's address (port 0: any free port)
    #[arg(long, value_name = "ADDR", default_value = ENDPOINT_DEFAULT)]
    pub listen: SocketAddr,
    /// Cores to serve on, each an executor with its own store [default: every core]
    #[arg(long, value_name = "N")]
    pub cores: Option<usize>,
    /// The CPU the first core is pinned to (the others follow it), or none to pin no core
    #[arg(long, value_name = "C|none", default_value = "0")]
    pub first_cpu: FirstCpu,
    /// Cache per core, in MiB
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub cache_mib: usize,
    /// The most client connections (binary and HTTP together) each core holds open; one
    /// more is closed at once (over HTTP after a 503)
    #[arg(long, value_name = "N", default_value_t = tessera_net::MAX_CONNECTIONS_DEFAULT,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: usize,
    /// Size of each write-ahead log segment, in MiB. A core keeps up to 4 segments in use and
    /// 4 spares, so it needs about 8 times this on disk besides its data; at least 17 (a
    /// segment holds the largest record, a 16 MiB batch)
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(17..=4096))]
    pub wal_segment_mib: u64,
    /// Request bytes (HTTP bodies, binary frames over 64 KiB) each core's client connections
    /// may hold at once, in MiB; a request beyond it waits, then is refused with a retryable
    /// ServiceUnavailable
    #[arg(long, value_name = "N", default_value_t = tessera_net::REQUEST_MEMORY_DEFAULT >> 20,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range((tessera_net::REQUEST_MEMORY_MIN >> 20) as u64..))]
    pub request_memory_mib: usize,
    /// This node's id in the cluster file
    #[arg(long, value_name = "N", requires = "cluster")]
    pub node_id: Option<u32>,
    /// The cluster file: one node a line, ID CLIENT_ADDRESS PEER_ADDRESS [ZONE] [spare];
    /// every node must run the same --cores
    #[arg(long, value_name = "FILE", requires = "node_id")]
    pub cluster: Option<String>,
    /// Log entries a leader keeps for a replica that has not checkpointed them; it sends one
    /// that lags further a snapshot [default: 50000]
    #[arg(long, value_name = "ENTRIES")]
    pub log_retain: Option<u64>,
    /// A core whose chosen entries have waited longer than this to be applied refuses new
    /// writes with ThrottlingException (retryable) until its applier catches up [default: 100]
    #[arg(long, value_name = "MS")]
    pub apply_delay_ms: Option<u64>,
    /// DynamoDB's HTTP API, for the AWS SDKs and CLI, or none
    #[arg(long, value_name = "ADDR|none", default_value = HTTP_LISTEN_DEFAULT)]
    pub http_listen: HttpListen,
    /// Whether the HTTP API checks each request's Signature Version 4 against --keys; with
    /// none any well-formed credentials pass [default: none when every listener is on
    /// loopback and no --keys are given, else sigv4]
    #[arg(long, value_enum)]
    pub auth: Option<AuthMode>,
    /// The access keys: one ACCESS_KEY_ID:SECRET_ACCESS_KEY a line
    #[arg(long, value_name = "FILE")]
    pub keys: Option<String>,
    /// Skip, report and save aside (under the core's quarantined/) each log record whose
    /// checksum is good but whose command this version cannot decode, losing that write;
    /// without it, such a record's partition refuses every request (the others serve) and
    /// the record stays in the log
    #[arg(long)]
    pub quarantine_bad_records: bool,
    /// Seconds between the starts of two passes of the background scrub, which reads every
    /// page of each core's tree file from the disk and reports damage (in a cluster, the
    /// damaged partitions are reinstalled from a healthy replica); 0: no scrub
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub scrub_interval_s: u64,
    /// The cluster's secret (a file holding it on its first line, 16 characters or more): every
    /// peer link, request forwarded between nodes and administration request proves it holds
    /// it; needed unless every peer address is on loopback
    #[arg(long, value_name = "FILE", requires = "cluster")]
    pub cluster_secret: Option<PathBuf>,
    /// Serve TLS only, on both the binary protocol's and the HTTP API's listener, presenting
    /// this certificate chain (PEM, the node's own certificate first); peer links stay plain.
    /// In a cluster, a node forwarding a request to another trusts the certificates of its own
    /// FILE, and each node's certificate must hold its client address's IP
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// `--first-cpu C|none`.
#[derive(Clone, Copy)]
pub struct FirstCpu(pub Option<usize>);

impl std::str::FromStr for FirstCpu {
    type Err = String;

    fn from_str(text: &str) -> Result<FirstCpu, String> {
        match text {
            "none" => Ok(FirstCpu(None)),
            cpu => cpu.parse().map(|cpu| FirstCpu(Some(cpu))).map_err(|_| "a CPU number or none".to_string()),
        }
    }
}

/// `--http-listen ADDR|none`.
#[derive(Clone, Copy)]
pub struct HttpListen(pub Option<SocketAddr>);

impl std::str::FromStr for HttpListen {
    type Err = String;

    fn from_str(text: &str) -> Result<HttpListen, String> {
        match text {
            "none" => Ok(HttpListen(None)),
            address => address
                .parse()
                .map(|address| HttpListen(Some(address)))
                .map_err(|error| format!("ADDRESS:PORT or none: {error}")),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum AuthMode {
    None,
    Sigv4,
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Run a cluster of N nodes on loopback, each a serve process (clients on PORT,
    /// PORT+1..., DynamoDB's HTTP API on HTTP_PORT, HTTP_PORT+1...), pinned to CPUs of their
    /// own if the machine has enough, else not pinned
    Local {
        /// Nodes to run
        #[arg(long, value_name = "N", default_value_t = 3)]
        nodes: u32,
        /// The first node's binary protocol port; the others' follow it
        #[arg(long, value_name = "PORT", default_value_t = BINARY_PORT)]
        port: u16,
        /// The first node's HTTP API port; the others' follow it
        #[arg(long, value_name = "HTTP_PORT", default_value_t = HTTP_PORT)]
        http_port: u16,
        /// Cores per node
        #[arg(long, value_name = "N", default_value_t = 1)]
        cores: usize,
        /// Where the cluster file and each node's data go
        #[arg(long, value_name = "DIR", default_value = "data-cluster")]
        data_dir: PathBuf,
    },
    /// Every replica each reachable node hosts: its group, leader, commit and applied slots
    Status {
        #[arg(long, value_name = "FILE")]
        cluster: String,
        /// The cluster's secret (a file; see serve --cluster-secret): administration requests need it
        #[arg(long, value_name = "FILE")]
        cluster_secret: Option<PathBuf>,
        /// The nodes serve TLS (serve --tls-cert): connect with it, trusting --ca-file, each
        /// node's certificate checked against its client address's IP
        #[arg(long)]
        tls: bool,
    },
    /// Replace lost node N in every group it is in, one configuration change at a time at
    /// each group's leader: add a log replica on L (quorum durability restored at once),
    /// remove N, add a full replica on F, and once F has caught up remove L and retire its
    /// replicas; L and F are usually spares (ID ... spare in FILE); safe to run again
    Replace {
        #[arg(long, value_name = "FILE")]
        cluster: String,
        #[arg(long, value_name = "N")]
        lost: u32,
        #[arg(long, value_name = "L")]
        log: u32,
        #[arg(long, value_name = "F")]
        full: u32,
        #[arg(long, value_name = "SECS", default_value_t = 600)]
        timeout: u64,
        /// The cluster's secret (a file; see serve --cluster-secret): administration requests need it
        #[arg(long, value_name = "FILE")]
        cluster_secret: Option<PathBuf>,
        /// The nodes serve TLS (serve --tls-cert): connect with it, trusting --ca-file, each
        /// node's certificate checked against its client address's IP
        #[arg(long)]
        tls: bool,
    },
}

#[derive(Subcommand)]
pub enum TableCommand {
    /// Create a table
    Create {
        name: String,
        /// The partition key, NAME:TYPE (TYPE: S, N or B)
        #[arg(long, value_name = "NAME:TYPE", value_parser = key_attribute)]
        pk: KeyAttribute,
        /// The sort key, NAME:TYPE
        #[arg(long, value_name = "NAME:TYPE", value_parser = key_attribute)]
        sk: Option<KeyAttribute>,
        /// Partitions [default: the server's choice]
        #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
        partitions: u32,
    },
    /// The tables' names
    List,
    Describe {
        name: String,
    },
    Delete {
        name: String,
    },
}

/// ExpressionAttributeNames and ExpressionAttributeValues.
#[derive(Args)]
pub struct Placeholders {
    /// Placeholders for attribute names, e.g. '{"#c":"count"}'
    #[arg(long, value_name = "JSON", value_parser = names)]
    pub names: Option<Names>,
    /// Placeholders for values, e.g. '{":one":{"N":"1"}}'
    #[arg(long, value_name = "JSON", value_parser = values)]
    pub values: Option<Values>,
}

/// `--names`: placeholders and the attribute names they stand for.
#[derive(Clone, Default)]
pub struct Names(pub Vec<(String, String)>);

/// `--values`: placeholders and the values they stand for.
#[derive(Clone, Default)]
pub struct Values(pub Vec<(String, AttributeValue)>);

fn json_object(text: &str) -> Result<serde_json::Map<String, Value>, String> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("not a JSON object".into()),
        Err(error) => Err(format!("not valid JSON: {error}")),
    }
}

fn names(text: &str) -> Result<Names, String> {
    let names = json_object(text)?.into_iter().map(|(placeholder, name)| match name {
        Value::String(name) => Ok((placeholder, name)),
        _ => Err(format!("{placeholder} must map to a string")),
    });
    names.collect::<Result<_, _>>().map(Names)
}

fn values(text: &str) -> Result<Values, String> {
    let values = json_object(text)?
        .into_iter()
        .map(|(placeholder, value)| Ok((placeholder.clone(), value_from_json(&value, &placeholder)?)));
    values.collect::<Result<_, String>>().map(Values)
}

/// An item, or a key, as DynamoDB JSON.
fn item(text: &str) -> Result<Item, String> {
    item_from_text(text).map_err(String::from)
}

/// One value as DynamoDB JSON, such as {"N":"5"}.
fn value(text: &str) -> Result<AttributeValue, String> {
    let json: Value = serde_json::from_str(text).map_err(|error| format!("not valid JSON: {error}"))?;
    value_from_json(&json, "VALUE_JSON").map_err(String::from)
}

/// What put, delete and update share.
#[derive(Args)]
pub struct Write {
    /// Write only if this holds, e.g. 'attribute_exists(id)'
    #[arg(long, value_name = "EXPR")]
    pub condition: Option<String>,
    #[command(flatten)]
    pub placeholders: Placeholders,
    #[command(flatten)]
    pub capacity: Capacity,
}

/// `--return-consumed-capacity`.
#[derive(Args)]
pub struct Capacity {
    /// Print the capacity consumed as {"ConsumedCapacity": ...} on standard error: NONE,
    /// TOTAL or INDEXES
    #[arg(long, value_name = "WHAT", value_parser = consumed_capacity)]
    pub return_consumed_capacity: Option<ReturnConsumedCapacity>,
}

fn consumed_capacity(text: &str) -> Result<ReturnConsumedCapacity, String> {
    match text {
        "NONE" => Ok(ReturnConsumedCapacity::None),
        "TOTAL" => Ok(ReturnConsumedCapacity::Total),
        "INDEXES" => Ok(ReturnConsumedCapacity::Indexes),
        _ => Err("it takes NONE, TOTAL or INDEXES".into()),
    }
}

/// `--return-values` of PutItem and DeleteItem (NONE or ALL_OLD), of UpdateItem (any).
fn put_returns(text: &str) -> Result<ReturnValues, String> {
    ReturnValues::parse(text, "PutItem")
}

fn delete_returns(text: &str) -> Result<ReturnValues, String> {
    ReturnValues::parse(text, "DeleteItem")
}

fn update_returns(text: &str) -> Result<ReturnValues, String> {
    ReturnValues::parse(text, "UpdateItem")
}

#[derive(Args)]
pub struct Put {
    pub table: String,
    #[arg(value_name = "ITEM_JSON", value_parser = item)]
    pub item: Item,
    /// The attributes to print: the item replaced, if any (ALL_OLD), or none (NONE)
    #[arg(long, value_name = "WHAT", value_parser = put_returns)]
    pub return_values: Option<ReturnValues>,
    #[command(flatten)]
    pub write: Write,
}

#[derive(Args)]
pub struct Delete {
    pub table: String,
    #[arg(value_name = "KEY_JSON", value_parser = item)]
    pub key: Item,
    /// The attributes to print: the item deleted (ALL_OLD), or none (NONE)
    #[arg(long, value_name = "WHAT", value_parser = delete_returns)]
    pub return_values: Option<ReturnValues>,
    #[command(flatten)]
    pub write: Write,
}

#[derive(Args)]
pub struct Update {
    pub table: String,
    #[arg(value_name = "KEY_JSON", value_parser = item)]
    pub key: Item,
    /// The update expression, e.g. 'SET #c = #c + :one'
    #[arg(long, value_name = "EXPR")]
    pub update: String,
    /// The attributes to print, as DynamoDB JSON: NONE, ALL_OLD, UPDATED_OLD, ALL_NEW or
    /// UPDATED_NEW
    #[arg(long, value_name = "WHAT", value_parser = update_returns)]
    pub return_values: Option<ReturnValues>,
    #[command(flatten)]
    pub write: Write,
}

#[derive(Args)]
pub struct Get {
    pub table: String,
    #[arg(value_name = "KEY_JSON", value_parser = item)]
    pub key: Item,
    /// The attributes to read
    #[arg(long, value_name = "EXPR")]
    pub projection: Option<String>,
    /// A strongly consistent read
    #[arg(long)]
    pub consistent: bool,
    #[command(flatten)]
    pub placeholders: Placeholders,
    #[command(flatten)]
    pub capacity: Capacity,
}

/// Either --key-condition, or --pk with an optional --sk.
#[derive(Args)]
#[command(group(ArgGroup::new("partition").args(["key_condition", "pk"]).required(true).multiple(true)))]
pub struct Query {
    pub table: String,
    /// e.g. 'customer = :c AND n BETWEEN :lo AND :hi'
    #[arg(long, value_name = "EXPR")]
    pub key_condition: Option<String>,
    /// The partition key's value, e.g. '{"S":"c1"}' (the same as a key condition, without
    /// expressions)
    #[arg(long, value_name = "VALUE_JSON", value_parser = value)]
    pub pk: Option<AttributeValue>,
    /// A condition on the sort key: OP VALUE_JSON [VALUE_JSON], OP one of eq lt le gt ge
    /// between begins_with, e.g. --sk between '{"N":"1"}' '{"N":"9"}'
    #[arg(long, num_args = 2..=3, value_names = ["OP", "VALUE_JSON"], value_parser = sort_part, requires = "pk")]
    pub sk: Option<Vec<SortPart>>,
    #[command(flatten)]
    pub read: Read,
    /// Items to read at most [default: every one]
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub limit: u32,
    /// In descending sort key order
    #[arg(long)]
    pub backward: bool,
}

#[derive(Args)]
pub struct Scan {
    pub table: String,
    #[command(flatten)]
    pub read: Read,
    /// Read N segments in parallel, one connection each
    #[arg(long, value_name = "N", conflicts_with_all = ["segment", "total_segments"])]
    pub segments: Option<u32>,
    /// Read only segment S of --total-segments
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub segment: u32,
    #[arg(long, value_name = "T", default_value_t = 1)]
    pub total_segments: u32,
}

/// What query and scan share.
#[derive(Args)]
pub struct Read {
    /// Keep only the items for which this holds
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// The attributes to read
    #[arg(long, value_name = "EXPR")]
    pub projection: Option<String>,
    #[command(flatten)]
    pub placeholders: Placeholders,
    /// Print how many items match instead of the items
    #[arg(long)]
    pub count: bool,
}

/// `--endpoint`: a node's address, with the scheme (`http://`, or `https://` for TLS) and a
/// trailing `/` a URL would have taken off.
#[derive(Clone)]
pub struct Endpoint {
    pub address: String,
    /// The host of `address`, the name its certificate must hold (an IPv6 address without
    /// its brackets).
    pub host: String,
    pub port: u16,
    /// Whether the node is spoken to over TLS (`https://`).
    pub tls: bool,
    /// How, once `trusting` has said whom to trust.
    pub client_tls: Option<ClientTls>,
}

impl Endpoint {
    /// The endpoint ready to be connected to: over TLS, trusting the certificates of
    /// `ca_file` (or the system's store), the node's certificate checked against the host.
    pub fn trusting(self, ca_file: Option<&Path>) -> Result<Endpoint, String> {
        if !self.tls {
            return Ok(self);
        }
        let client_tls = ClientTls::trusting(ca_file)?.named(&self.host)?;
        Ok(Endpoint { client_tls: Some(client_tls), ..self })
    }

    /// `error`, with a hint when the port is the HTTP API's: the binary protocol does not
    /// speak HTTP.
    pub fn error(&self, error: impl std::fmt::Display) -> String {
        match self.port {
            HTTP_PORT => format!(
                "{error} (port {HTTP_PORT} is DynamoDB's HTTP API; these commands speak the binary protocol, on port {BINARY_PORT} unless serve --listen says otherwise)"
            ),
            _ => error.to_string(),
        }
    }
}

fn endpoint(text: &str) -> Result<Endpoint, String> {
    let (tls, address) = match text.split_once("://") {
        None => (false, text),
        Some(("http", rest)) => (false, rest),
        Some(("https", rest)) => (true, rest),
        Some((scheme, _)) => return Err(format!("{text:?}: the scheme is http:// or https://, not {scheme}://")),
    };
    let address = address.trim_end_matches('/');
    let (host, port) = address
        .rsplit_once(':')
        .and_then(|(host, port)| port.parse().ok().filter(|_| !host.is_empty()).map(|port| (host, port)))
        .ok_or_else(|| {
            format!("{text:?} is not HOST:PORT, http://HOST:PORT or https://HOST:PORT, such as {ENDPOINT_DEFAULT}")
        })?;
    let host = host.strip_prefix('[').and_then(|host| host.strip_suffix(']')).unwrap_or(host);
    Ok(Endpoint { address: address.to_string(), host: host.to_string(), port, tls, client_tls: None })
}

/// A word of `--sk OP VALUE_JSON [VALUE_JSON]`.
#[derive(Clone)]
pub enum SortPart {
    Op(SortOp),
    Value(AttributeValue),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum SortOp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
    Between,
    BeginsWith,
}

fn sort_part(text: &str) -> Result<SortPart, String> {
    if text.trim_start().starts_with('{') {
        return value(text).map(SortPart::Value);
    }
    SortOp::from_str(text, false).map(SortPart::Op).map_err(|_| {
        format!("{text:?} is neither an operator (eq, lt, le, gt, ge, between, begins_with) nor a JSON value")
    })
}

/// Reports a value clap took but that does not fit the others (as clap reports its own
/// errors: on standard error, exit status 2), and exits.
pub fn invalid(subcommand: &str, message: impl std::fmt::Display) -> ! {
    let mut command = Cli::command();
    command.build();
    let command = command.find_subcommand_mut(subcommand).expect("a subcommand of tessera");
    command.error(clap::error::ErrorKind::ValueValidation, message).exit()
}

fn key_attribute(text: &str) -> Result<KeyAttribute, String> {
    let (name, kind) = text.rsplit_once(':').ok_or_else(|| format!("key {text:?} must be NAME:TYPE, such as id:S"))?;
    let key_type = match kind {
        "S" => KeyType::S,
        "N" => KeyType::N,
        "B" => KeyType::B,
        other => return Err(format!("key type {other:?} must be S, N or B")),
    };
    Ok(KeyAttribute { name: name.to_string(), key_type })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn endpoints_drop_a_scheme_and_need_a_port() {
        for text in ["http://127.0.0.1:7400", "http://127.0.0.1:7400/", "127.0.0.1:7400"] {
            let parsed = endpoint(text).unwrap();
            assert_eq!((parsed.address.as_str(), parsed.port), ("127.0.0.1:7400", 7400), "{text}");
        }
        assert_eq!(endpoint("localhost:9").unwrap().address, "localhost:9");
        assert!(!endpoint("http://localhost:9").unwrap().tls);
        let secure = endpoint("https://db.example:7400/").unwrap();
        assert_eq!(
            (secure.address.as_str(), secure.host.as_str(), secure.tls),
            ("db.example:7400", "db.example", true)
        );
        assert_eq!(endpoint("https://[::1]:7400").unwrap().host, "::1");
        for text in ["127.0.0.1", "http://127.0.0.1", ":7400", "host:port", "ftp://127.0.0.1:7400"] {
            assert!(endpoint(text).is_err(), "{text}");
        }
        assert!(endpoint("127.0.0.1:8000").unwrap().error("refused").contains("binary protocol, on port 7400"));
        assert_eq!(endpoint("127.0.0.1:7401").unwrap().error("refused"), "refused");
        assert!(ENDPOINT_DEFAULT.ends_with(&format!(":{BINARY_PORT}")));
        assert!(HTTP_LISTEN_DEFAULT.ends_with(&format!(":{HTTP_PORT}")));
    }
}
