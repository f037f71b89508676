//! The client library (`tessera-wire`: the protocol, the typed calls, the blocking client)
//! depends on neither glommio nor io_uring: a program that only talks to a node builds without
//! them. Checked on the dependency tree cargo resolves for the crate alone, with the features
//! it asks of its dependencies (the engine without `storage`).

use std::path::Path;
use std::process::Command;

/// The crates (names only) of `package`'s normal dependency tree, itself included.
fn dependencies(package: &str) -> Vec<String> {
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let output = Command::new(cargo)
        .args(["tree", "-p", package, "-e", "normal", "--prefix", "none"])
        .current_dir(workspace)
        .output()
        .expect("cargo runs");
    assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
    let tree = String::from_utf8(output.stdout).unwrap();
    tree.lines().filter_map(|line| line.split_whitespace().next()).map(str::to_string).collect()
}

#[test]
fn the_client_depends_on_neither_glommio_nor_io_uring() {
    let crates = dependencies("tessera-wire");
    // The tree was read: the protocol's own dependencies are in it.
    for expected in ["tessera-wire", "tessera-engine", "flatbuffers", "rustls"] {
        assert!(crates.iter().any(|name| name == expected), "{expected} missing from {crates:?}");
    }
    let banned = ["glommio", "io-uring", "io_uring", "iou", "uring-sys"];
    let found: Vec<&String> = crates.iter().filter(|name| banned.contains(&name.as_str())).collect();
    assert!(found.is_empty(), "the client depends on {found:?}");
}

/// The check can fail: the server's crate, which runs on glommio, does depend on it.
#[test]
fn the_check_finds_glommio_where_it_is() {
    assert!(dependencies("tessera-net").iter().any(|name| name == "glommio"));
}
