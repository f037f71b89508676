//! ARCHITECTURE.md's codemap is one hop from the code. Every path it names in backticks
//! exists; every source file of the crates (`engine/src`, `net/src`, `wire/src` but its
//! generated code, `tools/src`, `tests/src`, `bench/src`) is named by a codemap line, so a new
//! module without one fails here; and a few questions a newcomer asks are each answered by
//! exactly one line, which names exactly one file.
//!
//! A codemap line is a non-empty line of the "## Codemap" section that is not a heading. In
//! it, a backticked token with a `/` is a path from the repository's root (a directory when
//! it ends with `/`), and a backticked bare file name (`mod.rs`) is a file of the line's first
//! directory: `net/src/shard/`: `mod.rs` (...), `mesh.rs` (...).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// (question, phrase that must appear in exactly one codemap line, the one file that line
/// must name). A phrase matches where a word starts ("lease" in "leased", not in "release"),
/// whatever the case.
const QUESTIONS: &[(&str, &str, &str)] = &[
    ("where is a conditional write checked?", "conditional write", "engine/src/partition/machine.rs"),
    ("where are partitions placed?", "placed", "net/src/catalog.rs"),
    ("where is a lease checked before a strong read?", "lease", "engine/src/paxos/replica.rs"),
];

/// The source trees every file of which the codemap must name, and what is left out.
const COVERED: &[&str] = &["engine/src", "net/src", "wire/src", "tools/src", "tests/src", "bench/src"];
const NOT_COVERED: &[&str] = &["wire/src/generated"];

/// File names that are paths even without a `/` (inside a directory line).
const EXTENSIONS: &[&str] = &[".rs", ".md", ".toml", ".fbs", ".py", ".sh", ".jsonl", ".gz"];

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    File,
    Dir,
    Missing,
}

/// One codemap line: its text and the paths it names, resolved from the repository's root.
struct Line<'a> {
    text: &'a str,
    files: Vec<String>,
    dirs: Vec<String>,
}

/// The codemap's lines (see the module documentation), or why there are none.
fn codemap(doc: &str) -> Result<Vec<Line<'_>>, String> {
    let mut lines = doc.lines().skip_while(|line| line.trim() != "## Codemap");
    if lines.next().is_none() {
        return Err("ARCHITECTURE.md has no \"## Codemap\" section".to_string());
    }
    let mut map = Vec::new();
    for text in lines.take_while(|line| !line.starts_with("## ")) {
        if text.trim().is_empty() || text.starts_with('#') {
            continue;
        }
        let mut line = Line { text, files: Vec::new(), dirs: Vec::new() };
        // Odd pieces of a split on backticks are the backticked spans.
        for token in text.split('`').skip(1).step_by(2) {
            let path_like = !token.contains(' ')
                && !token.contains("::")
                && (token.contains('/') || EXTENSIONS.iter().any(|extension| token.ends_with(extension)));
            if !path_like {
                continue;
            }
            if token.ends_with('/') {
                line.dirs.push(token.trim_end_matches('/').to_string());
            } else if token.contains('/') {
                line.files.push(token.to_string());
            } else if let Some(dir) = line.dirs.first() {
                line.files.push(format!("{dir}/{token}"));
            } else {
                return Err(format!("`{token}` is a bare file name outside a directory's line: {text}"));
            }
        }
        map.push(line);
    }
    Ok(map)
}

/// Whether `phrase` occurs in `text` where a word starts, ignoring case.
fn mentions(text: &str, phrase: &str) -> bool {
    let (text, phrase) = (text.to_lowercase(), phrase.to_lowercase());
    text.match_indices(&phrase).any(|(at, _)| !text[..at].chars().next_back().is_some_and(char::is_alphanumeric))
}

/// Everything wrong with `doc`'s codemap, given what each path is (`kind`) and the source
/// files it must name (`sources`, from the repository's root).
fn problems(doc: &str, kind: impl Fn(&str) -> Kind, sources: &BTreeSet<String>) -> Vec<String> {
    let map = match codemap(doc) {
        Ok(map) => map,
        Err(problem) => return vec![problem],
    };
    let mut problems = Vec::new();
    let mut named = BTreeSet::new();
    for line in &map {
        for dir in &line.dirs {
            if kind(dir) != Kind::Dir {
                problems.push(format!("`{dir}/` is not a directory: {}", line.text));
            }
        }
        for file in &line.files {
            if kind(file) == Kind::Missing {
                problems.push(format!("`{file}` does not exist: {}", line.text));
            }
            named.insert(file.clone());
        }
    }
    for source in sources.difference(&named) {
        problems.push(format!("{source} has no codemap line"));
    }
    for (question, phrase, file) in QUESTIONS {
        let answers: Vec<&Line> = map.iter().filter(|line| mentions(line.text, phrase)).collect();
        match answers.as_slice() {
            [line] if line.files == [*file] => {}
            [line] => problems.push(format!(
                "{question} The one line saying \"{phrase}\" must name {file} alone, it names {:?}: {}",
                line.files, line.text
            )),
            lines => problems.push(format!(
                "{question} {} codemap lines say \"{phrase}\", one must (naming {file}){}",
                lines.len(),
                lines.iter().map(|line| format!("\n  {}", line.text)).collect::<String>()
            )),
        }
    }
    problems
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `.rs` files under `COVERED` but `NOT_COVERED`, from the repository's root.
fn sources(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut pending: Vec<PathBuf> = COVERED.iter().map(|dir| root.join(dir)).collect();
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display())) {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if NOT_COVERED.contains(&relative.as_str()) {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if relative.ends_with(".rs") {
                found.insert(relative);
            }
        }
    }
    found
}

#[test]
fn the_codemap_is_one_hop_from_the_code() {
    let root = root();
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let sources = sources(&root);
    assert!(sources.len() > 50, "too few sources found: {sources:?}");
    let kind = |path: &str| match std::fs::metadata(root.join(path)) {
        Ok(metadata) if metadata.is_dir() => Kind::Dir,
        Ok(_) => Kind::File,
        Err(_) => Kind::Missing,
    };
    let problems = problems(&doc, kind, &sources);
    assert!(problems.is_empty(), "ARCHITECTURE.md's codemap:\n{}", problems.join("\n"));
}

/// The checks catch what they are for: a missing path, a module without a line, a phrase on
/// two lines or on none, and a line that answers with more than one file.
#[test]
fn a_broken_codemap_is_caught() {
    let files =
        ["engine/src/partition/machine.rs", "net/src/catalog.rs", "engine/src/paxos/replica.rs", "net/src/a.rs"];
    let kind = |path: &str| match path {
        "net/src" => Kind::Dir,
        path if files.contains(&path) => Kind::File,
        _ => Kind::Missing,
    };
    let sources: BTreeSet<String> = files.iter().map(|file| file.to_string()).collect();
    let good = "# A\n## Codemap\n\n- `engine/src/partition/machine.rs`: a Conditional write's check\n\
                - `net/src/catalog.rs`: where partitions are placed (not replaced)\n\
                - `engine/src/paxos/replica.rs`: the leased read\n\
                - `net/src/`: `a.rs` (the release)\n## Invariants\n- lease, placed\n";
    assert_eq!(problems(good, kind, &sources), Vec::<String>::new());
    let broken = |from: &str, to: &str| {
        assert!(good.contains(from));
        problems(&good.replacen(from, to, 1), kind, &sources)
    };
    let one = |found: Vec<String>, expected: &str| {
        assert!(
            found.len() == 1 && found[0].contains(expected),
            "expected one problem with {expected:?}, got {found:?}"
        );
    };
    one(broken("`a.rs`", "`b.rs`, `a.rs`"), "`net/src/b.rs` does not exist");
    one(broken("`net/src/`: `a.rs` (the release)", "`net/src/`: the release"), "net/src/a.rs has no codemap line");
    one(broken("the leased read", "the read"), "0 codemap lines say \"lease\"");
    one(broken("the release", "the lease"), "2 codemap lines say \"lease\"");
    one(broken("a Conditional write's check", "conditional writes, checked (`net/src/a.rs`)"), "must name");
    one(broken("`net/src/`: `a.rs`", "`a.rs`"), "bare file name");
    one(broken("## Codemap", "## Map"), "no \"## Codemap\" section");
}
