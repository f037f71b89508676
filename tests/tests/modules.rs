//! No import circles between the modules of a crate: each of the project's crates is read
//! from source, every `crate::` and `super::` path outside its tests is resolved to the module
//! (file) it names, and the graph of those uses must have no cycle. A module and the modules
//! inside it are one room and may use each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`http::api`; the crate root is "") to the text of its file.
type Sources = BTreeMap<String, String>;

fn read_crate(src: &Path) -> Sources {
    let mut sources = Sources::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                let relative = path.strip_prefix(src).unwrap().with_extension("");
                let mut parts: Vec<String> = relative.iter().map(|part| part.to_string_lossy().into_owned()).collect();
                if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                    parts.pop();
                }
                if parts.first().is_some_and(|part| part == "bin" || part == "generated") {
                    continue;
                }
                sources.insert(parts.join("::"), std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    sources
}

/// The text without its tests (from the first `#[cfg(test)]`) and without line comments.
fn code(text: &str) -> String {
    let text = text.find("#[cfg(test)]").map_or(text, |at| &text[..at]);
    text.lines().map(|line| line.find("//").map_or(line, |at| &line[..at])).collect::<Vec<_>>().join("\n")
}

/// The paths after each `crate::` or `super::` in `code`, with `use crate::{a, b::c}` split,
/// made absolute (from the crate root) for `module`.
fn used_paths(module: &str, code: &str) -> Vec<Vec<String>> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut paths = Vec::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent(module))] {
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(word) {
                continue;
            }
            let groups: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                group[..group.find('}').unwrap_or(group.len())].split(',').collect()
            } else {
                vec![rest]
            };
            for group in groups {
                let group = group.trim();
                let end = group.find(|c: char| !(word(c) || c == ':')).unwrap_or(group.len());
                let mut path = base.clone();
                path.extend(group[..end].split("::").filter(|part| !part.is_empty()).map(str::to_string));
                paths.push(path);
            }
        }
    }
    paths
}

fn parent(module: &str) -> Vec<String> {
    let mut parts: Vec<String> = module.split("::").filter(|part| !part.is_empty()).map(str::to_string).collect();
    parts.pop();
    parts
}

/// Each module to the modules it uses (the longest prefix of a used path that is a module),
/// leaving out itself, the modules it holds and those that hold it.
fn uses(sources: &Sources) -> BTreeMap<&str, BTreeSet<&str>> {
    let within = |inner: &str, outer: &str| outer.is_empty() || inner.starts_with(&format!("{outer}::"));
    sources
        .iter()
        .map(|(module, text)| {
            let used = used_paths(module, &code(text))
                .into_iter()
                .filter_map(|path| {
                    (1..=path.len()).rev().find_map(|len| sources.get_key_value(&path[..len].join("::")))
                })
                .map(|(used, _)| used.as_str())
                .filter(|used| used != module && !within(used, module) && !within(module, used))
                .collect();
            (module.as_str(), used)
        })
        .collect()
}

/// A cycle of uses, if there is one: the modules along it, the first repeated at the end.
fn cycle<'a>(graph: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Option<Vec<&'a str>> {
    // Depth-first, with the path being walked: meeting a module on it closes a cycle.
    fn walk<'a>(
        module: &'a str,
        graph: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(at) = path.iter().position(|&on| on == module) {
            let mut found = path[at..].to_vec();
            found.push(module);
            return Some(found);
        }
        if !done.insert(module) {
            return None;
        }
        path.push(module);
        for &used in graph.get(module).into_iter().flatten() {
            if let Some(found) = walk(used, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|&module| walk(module, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_crate_has_an_import_circle() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in ["engine", "net", "wire", "tools", "bench", "tests"] {
        let sources = read_crate(&root.join(krate).join("src"));
        assert!(sources.len() > 1 || krate != "engine", "no sources read for {krate}");
        let graph = uses(&sources);
        if let Some(found) = cycle(&graph) {
            panic!("{krate}: an import circle: {}", found.join(" -> "));
        }
    }
}

/// The check finds a circle where there is one, through `use crate::{..}` groups, plain paths
/// and `super::`, and lets a module and its own submodules use each other.
#[test]
fn a_planted_circle_is_found() {
    let sources = |files: &[(&str, &str)]| -> Sources {
        files.iter().map(|(module, text)| (module.to_string(), text.to_string())).collect()
    };
    let circle = sources(&[
        ("", "mod a; mod b; mod c;"),
        ("a", "use crate::{b::Thing, c};"),
        ("b", "fn f() { crate::c::g() }"),
        ("c", "use super::a::Other;"),
    ]);
    assert_eq!(cycle(&uses(&circle)), Some(vec!["a", "b", "c", "a"]));
    let nested = sources(&[
        ("", "mod a;"),
        ("a", "mod inner; use self::inner::X; fn f() { crate::a::inner::g() }"),
        ("a::inner", "use super::Y; // use crate::b::Z;\n#[cfg(test)] mod tests { use crate::b; }"),
        ("b", "use crate::a::inner::X;"),
    ]);
    assert_eq!(cycle(&uses(&nested)), None);
}
