//! TLS on the real `tessera serve` binary (`--tls-cert`, `--tls-key`): boto3 and curl over
//! https against the HTTP API with signatures checked, the client library (blocking and
//! pipelined) and the command line over TLS on the binary port; keys still checked on every
//! listener; plain-text clients refused cleanly while the node keeps serving; clients that do
//! not trust the certificate failing the handshake; bad certificate and key files refused
//! before anything is made.

use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tessera_engine::{KeySchema, KeyType};
use tessera_net::client::AsyncClient;
use tessera_wire::client::{Client, ClientConfig, ClientError, ClientTls, Credentials, ItemBuilder};
use tessera_wire::ErrorCode;

mod common;

const BINARY: &str = env!("CARGO_BIN_EXE_tessera");
const KEY_ID: &str = "AKIDTLSTEST";
const SECRET: &str = "tls-test-secret-access-key";

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tessera-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate for `names` (DNS names or IP addresses) and its key, as PEM
/// files in `dir`: (certificate, key).
fn certificate(dir: &Scratch, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    (
        dir.write(&format!("{stem}-cert.pem"), &certified.cert.pem()),
        dir.write(&format!("{stem}-key.pem"), &certified.key_pair.serialize_pem()),
    )
}

/// A TLS node with keys checked, in a child process: its binary and HTTP addresses.
struct Node {
    child: Child,
    address: SocketAddr,
    http: SocketAddr,
}

impl Node {
    fn start(data: &Path, cert: &Path, key: &Path, keys: &Path) -> Node {
        let mut child = Command::new(BINARY)
            .args(["serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--cores", "2"])
            .args(["--cache-mib", "64", "--auth", "sigv4", "--keys"])
            .arg(keys)
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .arg("--data-dir")
            .arg(data)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tessera serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
        assert!(line.contains("TLS only"), "{line}");
        let address = line
            .split_whitespace()
            .find_map(|word| word.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Node { child, address, http: common::http_address(&line) }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(tls: &ClientTls, credentials: Option<(&str, &str)>) -> ClientConfig {
    ClientConfig {
        credentials: credentials.map(|(key_id, secret)| Credentials { key_id: key_id.into(), secret: secret.into() }),
        tls: Some(tls.clone()),
        timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    }
}

fn service_code(result: Result<Client, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Service(error)) => error.code,
        Err(other) => panic!("expected a service error, got {other}"),
        Ok(_) => panic!("expected a service error, got a connection"),
    }
}

/// The error of a client whose handshake must fail.
fn handshake_error(result: Result<Client, ClientError>) -> String {
    match result {
        Err(ClientError::Io(error)) => error.to_string(),
        Err(other) => panic!("expected a failed handshake, got {other}"),
        Ok(_) => panic!("expected a failed handshake, got a connection"),
    }
}

/// boto3 against `endpoint` (https), trusting `ca` (or, with `None`, the system's roots):
/// creates table `name` if asked, then puts and reads back an item; prints what it got or
/// the error's code.
fn boto3(endpoint: SocketAddr, ca: Option<&Path>, key: (&str, &str), table: &str, create: bool) -> (bool, String) {
    let script = r#"
import sys, boto3, botocore
endpoint, verify, key_id, secret, table, create = sys.argv[1:7]
client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
    aws_access_key_id=key_id, aws_secret_access_key=secret,
    verify=(verify if verify != "system" else True),
    config=botocore.config.Config(retries={"max_attempts": 1}))
try:
    if create == "create":
        client.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
    client.put_item(TableName=table, Item={"id": {"S": "over-tls"}, "n": {"N": "7"}})
    print(client.get_item(TableName=table, Key={"id": {"S": "over-tls"}}, ConsistentRead=True)["Item"]["n"]["N"])
except botocore.exceptions.ClientError as error:
    print(error.response["Error"]["Code"]); sys.exit(1)
except botocore.exceptions.SSLError as error:
    print("SSLError", error); sys.exit(1)
"#;
    let verify = ca.map_or("system".to_string(), |ca| ca.display().to_string());
    let output = Command::new("python3")
        .args(["-c", script, &format!("https://localhost:{}", endpoint.port()), &verify, key.0, key.1, table])
        .arg(if create { "create" } else { "no" })
        .output()
        .expect("run python3");
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_string();
    (output.status.success(), format!("{printed}{}", String::from_utf8_lossy(&output.stderr)))
}

/// `curl` over https: the status it got, or curl's exit status if the exchange failed.
fn curl(args: &[&str]) -> Result<String, i32> {
    let output =
        Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]).args(args).output().unwrap();
    match output.status.code() {
        Some(0) => Ok(String::from_utf8_lossy(&output.stdout).into_owned()),
        code => Err(code.unwrap_or(-1)),
    }
}

/// What a client that is not speaking TLS gets from a TLS port after sending `request`, and
/// whether the connection then closed (or was reset) within 5 s.
fn plain_exchange(address: SocketAddr, request: &[u8]) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let closed = match stream.read_to_end(&mut answer) {
        Ok(_) => true,
        Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
    };
    (answer, closed)
}

#[test]
fn over_tls_every_listener_serves_checks_keys_and_refuses_plain_text() {
    common::ensure_python_sdk();
    let dir = Scratch::new("serve");
    let (cert, key) = certificate(&dir, "node", &["localhost", "127.0.0.1"]);
    let (stranger, _) = certificate(&dir, "stranger", &["localhost", "127.0.0.1"]);
    let keys = dir.write("keys", &format!("{KEY_ID}:{SECRET}\n"));
    let node = Node::start(&dir.0.join("data"), &cert, &key, &keys);
    let trusted = ClientTls::trusting(Some(&cert)).unwrap();

    // A client that says nothing holds its place only until the handshake's deadline.
    let silent = TcpStream::connect(node.address).unwrap();
    let silent_since = Instant::now();

    // The client library on the binary port: keys checked as without TLS.
    let mut client = Client::connect_with(node.address, config(&trusted, Some((KEY_ID, SECRET)))).unwrap();
    client.create_table("binary", KeySchema::hash_only("id", KeyType::S), 2).unwrap();
    client.put_item("binary", ItemBuilder::new().s("id", "a").n("n", 1).build()).unwrap();
    let key_a = ItemBuilder::new().s("id", "a").build();
    assert!(client.get_item("binary", key_a.clone()).unwrap().is_some());
    // A name the certificate holds, rather than the IP connected to.
    let named = trusted.clone().named("localhost").unwrap();
    let mut by_name = Client::connect_with(("localhost", node.address.port()), config(&named, Some((KEY_ID, SECRET))));
    assert!(by_name.as_mut().unwrap().get_item("binary", key_a.clone()).unwrap().is_some());
    let mut anonymous = Client::connect_with(node.address, config(&trusted, None)).unwrap();
    match anonymous.list_tables() {
        Err(ClientError::Service(error)) => assert_eq!(error.code, ErrorCode::MissingAuthenticationTokenException),
        other => panic!("no key, yet {other:?}"),
    }
    let wrong = Client::connect_with(node.address, config(&trusted, Some((KEY_ID, "a-guess"))));
    assert_eq!(service_code(wrong), ErrorCode::UnrecognizedClientException);

    // The pipelined client (as the load generator and forwarding nodes use it).
    let address = node.address;
    let async_config = config(&trusted, Some((KEY_ID, SECRET)));
    let found = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let client = Rc::new(AsyncClient::connect(address, async_config).await.unwrap());
            let puts: Vec<_> = (0..64)
                .map(|n| {
                    let client = client.clone();
                    let item = ItemBuilder::new().s("id", format!("p{n}")).build();
                    glommio::spawn_local(async move { client.put_item("binary", item).await })
                })
                .collect();
            for put in puts {
                put.await.unwrap();
            }
            client.get_item("binary", ItemBuilder::new().s("id", "p63").build()).await.unwrap().is_some()
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(found, "the pipelined client's puts over TLS are read back");

    // Clients that do not trust the certificate, or expect another name, fail the handshake.
    let distrusting = ClientTls::trusting(Some(&stranger)).unwrap();
    let error = handshake_error(Client::connect_with(node.address, config(&distrusting, Some((KEY_ID, SECRET)))));
    assert!(error.contains("certificate"), "{error}");
    let misnamed = trusted.clone().named("db.example").unwrap();
    let error = handshake_error(Client::connect_with(node.address, config(&misnamed, Some((KEY_ID, SECRET)))));
    assert!(error.contains("certificate"), "{error}");

    // The command line: https:// endpoints, the CA from --ca-file or TESSERA_CA_FILE.
    let cli = |endpoint: String, ca: &[&str], environment: &[(&str, &str)]| {
        let mut command = Command::new(BINARY);
        command.args(ca).args(["--endpoint", &endpoint, "table", "list"]);
        for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "TESSERA_CA_FILE"] {
            command.env_remove(name);
        }
        command.env("HOME", &dir.0).envs([("AWS_ACCESS_KEY_ID", KEY_ID), ("AWS_SECRET_ACCESS_KEY", SECRET)]);
        let output = command.envs(environment.iter().copied()).output().unwrap();
        let text = String::from_utf8_lossy(if output.status.success() { &output.stdout } else { &output.stderr });
        (output.status.success(), text.into_owned())
    };
    let https = format!("https://localhost:{}", node.address.port());
    let ca = cert.to_str().unwrap();
    assert_eq!(cli(https.clone(), &["--ca-file", ca], &[]), (true, "binary\n".into()));
    assert_eq!(cli(https.clone(), &[], &[("TESSERA_CA_FILE", ca)]), (true, "binary\n".into()));
    let (ok, text) = cli(https.clone(), &["--ca-file", stranger.to_str().unwrap()], &[]);
    assert!(!ok && text.contains("certificate"), "{text}");
    // The system's store does not hold a self-signed certificate.
    let (ok, text) = cli(https, &[], &[]);
    assert!(!ok && text.contains("certificate"), "{text}");
    let (ok, text) = cli(node.address.to_string(), &[], &[]);
    assert!(!ok && text.contains("MalformedMessage") && text.contains("TLS only"), "{text}");

    // boto3 over https, signatures checked.
    assert_eq!(boto3(node.http, Some(&cert), (KEY_ID, SECRET), "web", true), (true, "7".into()));
    let (ok, text) = boto3(node.http, Some(&cert), (KEY_ID, "a-guess"), "web", false);
    assert!(!ok && text.starts_with("InvalidSignatureException"), "{text}");
    let (ok, text) = boto3(node.http, Some(&cert), ("AKIDUNKNOWN", SECRET), "web", false);
    assert!(!ok && text.starts_with("UnrecognizedClientException"), "{text}");
    let (ok, text) = boto3(node.http, Some(&stranger), (KEY_ID, SECRET), "web", false);
    assert!(!ok && text.starts_with("SSLError"), "{text}");

    // curl, where installed: the health check, and a request without credentials refused.
    let url = format!("https://localhost:{}/", node.http.port());
    if Command::new("curl").arg("--version").output().is_ok() {
        assert_eq!(curl(&["--cacert", ca, &url]), Ok("200".into()));
        let unsigned = ["--cacert", ca, "-H", "X-Amz-Target: DynamoDB_20120810.ListTables", "-d", "{}", &url];
        assert_eq!(curl(&unsigned), Ok("400".into()));
        // 60: the peer's certificate cannot be verified.
        assert_eq!(curl(&["--cacert", stranger.to_str().unwrap(), &url]), Err(60));
    } else {
        eprintln!("curl is not installed: its part of the test is skipped");
    }

    // Plain text to either TLS port: told so in its own protocol, then closed.
    let (answer, closed) = plain_exchange(node.http, &common::post("DynamoDB_20120810.ListTables", "{}", None));
    let text = String::from_utf8_lossy(&answer);
    assert!(closed && text.starts_with("HTTP/1.1 400") && text.contains("https://"), "{text}");
    let mut frame = Vec::new();
    tessera_wire::Request::ListTables { exclusive_start_table: None, limit: 0 }.encode(1, &mut frame);
    let (answer, closed) = plain_exchange(node.address, &frame);
    assert!(closed && String::from_utf8_lossy(&answer).contains("TLS only"), "{answer:?}");
    // Garbage that begins as a TLS record fails the handshake and is closed.
    for address in [node.address, node.http] {
        let (_, closed) = plain_exchange(address, b"\x16\x03\x01\x00\x05hello, not a ClientHello");
        assert!(closed, "{address}");
    }

    // The silent client was closed at the handshake's deadline (10 s), not before.
    let mut silent = silent;
    silent.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(silent.read(&mut [0u8; 16]).unwrap_or(0), 0);
    let waited = silent_since.elapsed();
    assert!(waited >= Duration::from_secs(9) && waited < Duration::from_secs(20), "{waited:?}");

    // And through all of it the node kept serving.
    assert!(client.get_item("binary", key_a).unwrap().is_some());
    assert_eq!(boto3(node.http, Some(&cert), (KEY_ID, SECRET), "web", false), (true, "7".into()));
}

#[test]
fn bad_certificate_or_key_files_stop_serve_before_the_data_directory() {
    let dir = Scratch::new("bad");
    let (cert, key) = certificate(&dir, "good", &["localhost"]);
    let (_, other_key) = certificate(&dir, "other", &["localhost"]);
    let garbage = dir.write("garbage.pem", "this is not PEM at all\n");
    let fake = dir.write("fake.pem", "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n");
    let missing = dir.0.join("missing.pem");
    // A directory where a file should be: it cannot be read.
    let unreadable = dir.0.join("a-directory");
    std::fs::create_dir(&unreadable).unwrap();
    let cases: [(&Path, &Path, &Path); 7] = [
        (&missing, &key, &missing),
        (&cert, &missing, &missing),
        (&garbage, &key, &garbage),
        (&cert, &garbage, &garbage),
        (&fake, &key, &fake),
        (&cert, &other_key, &other_key),
        (&unreadable, &key, &unreadable),
    ];
    let data = dir.0.join("data");
    for (cert, key, named) in cases {
        let started = Instant::now();
        let output = Command::new(BINARY)
            .args(["serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--cores", "1"])
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .arg("--data-dir")
            .arg(&data)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let message = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{cert:?} {key:?} served");
        assert!(message.contains(&named.display().to_string()), "{cert:?} {key:?}: {message}");
        assert!(started.elapsed() < Duration::from_secs(5), "{message}");
        assert!(!data.exists(), "{cert:?} {key:?}: the data directory was made");
    }
    // --tls-cert needs --tls-key.
    let output = Command::new(BINARY).args(["serve", "--tls-cert"]).arg(&cert).output().unwrap();
    assert!(!output.status.success() && String::from_utf8_lossy(&output.stderr).contains("--tls-key"));
}
