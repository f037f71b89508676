//! The `tessera-load` command line: help and version, bad values refused by flag, and a run
//! whose every call failed reported as a failure, with the error.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};

const BINARY: &str = env!("CARGO_BIN_EXE_tessera-load");

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let Output { status, stdout, stderr } = Command::new(BINARY).args(args).output().unwrap();
    (status.code(), String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

#[test]
fn help_and_version_print_on_standard_output() {
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    for flag in ["Usage: tessera-load", "--endpoint", "--workload", "--create", "--max-rate", "--outstanding-max"] {
        assert!(stdout.contains(flag), "{flag} missing from {stdout}");
    }
    let (code, stdout, _) = run(&["--version"]);
    assert_eq!((code, stdout), (Some(0), format!("tessera-load {}\n", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn bad_values_are_refused_by_flag_with_status_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["--rate", "fast"], "'--rate <OPS_PER_S>'"),
        (&["--endpoint", "localhost"], "'--endpoint <ADDR>'"),
        (&["--cluster", "127.0.0.1:1,nowhere"], "'--cluster <A,B,C>'"),
        (&["--workload", "w.toml", "--keys", "5"], "cannot be used with '--keys <N>'"),
        (&["--redis", "127.0.0.1:1", "--etcd", "127.0.0.1:2"], "cannot be used with"),
        (&["--get-ratio", "2"], "--get-ratio takes a number from 0 to 1"),
        (&["--warmup=-1"], "--warmup takes seconds"),
        (&["--frobnicate"], "unexpected argument '--frobnicate'"),
    ];
    for (args, expected) in cases {
        let (code, _, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected) && !stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// A stand-in for Redis that answers every GET with an error: no call succeeds, and the run
/// says so, with the error, and exits non-zero (it once printed a table of zeros and exited 0).
#[test]
fn a_run_whose_every_call_failed_fails_and_names_the_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                // Each GET is one RESP array, `*2\r\n...`; the keys hold no `*`.
                while let Ok(read @ 1..) = stream.read(&mut buffer) {
                    let commands = buffer[..read].iter().filter(|&&byte| byte == b'*').count();
                    if stream.write_all(&b"-ERR no such thing\r\n".repeat(commands)).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let (code, stdout, stderr) = run(&[
        "--redis",
        &address,
        "--get-ratio",
        "1",
        "--keys",
        "100",
        "--rate",
        "200",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--quiet",
    ]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("every one of the") && stderr.contains("ERR no such thing"), "{stderr}");
}
