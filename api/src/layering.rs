//! Keeps the crate's modules layered (see the crate doc): reads the sources and checks that
//! no module below `http`, `worker` and `cli` names them or `app`, that those three leave
//! each other alone, and that the imports between modules form no cycle.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Modules that everything on top uses and that name nothing of the top, not even in a doc
/// comment. A new module must be put here or in [`TOP`].
const BOTTOM: &[&str] = &[
    "auth",
    "backoff",
    "budget",
    "config",
    "coordination",
    "database",
    "domain",
    "events",
    "lifecycle",
    "metrics",
    "providers",
    "queue",
    "ratelimit",
    "scrub",
    "store",
    "task_hash",
    "telemetry",
    "thread",
    "webhooks",
];

/// The entry points: the HTTP API, the workers and the command line, each on its own, with
/// the composition root `app` over the first two. `main.rs` wires everything.
const TOP: &[&str] = &["http", "worker", "cli", "app"];

/// What each top module may not name.
const TOP_FORBIDS: &[(&str, &[&str])] =
    &[("http", &["worker", "cli", "app"]), ("worker", &["http", "cli", "app"]), ("cli", &["http", "worker", "app"])];

/// Files of the crate root that are not modules of their own.
const ROOT_FILES: &[&str] = &["lib", "main", "layering"];

struct Source {
    module: String,
    path: PathBuf,
    text: String,
}

fn sources() -> Vec<Source> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    walk(&root, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let first = path.strip_prefix(&root).unwrap().components().next().unwrap();
            let module = first.as_os_str().to_str().unwrap().trim_end_matches(".rs").to_owned();
            Source { module, text: fs::read_to_string(&path).unwrap(), path }
        })
        .collect()
}

/// The top-level modules `text` names as `crate::name` or inside `crate::{…}`.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Only the names at the group's own level are modules of the crate.
            let (mut depth, mut word, mut starts) = (1, String::new(), true);
            for c in group.chars() {
                if depth == 1 && starts && (c.is_alphanumeric() || c == '_') {
                    word.push(c);
                    continue;
                }
                if !word.is_empty() {
                    names.insert(std::mem::take(&mut word));
                    starts = false;
                }
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => starts = true,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            names.insert(name);
        }
    }
    names
}

/// `text` without its `//` comments: what the compiler sees, close enough for imports.
fn code(text: &str) -> String {
    text.lines().map(|line| line.split_once("//").map_or(line, |(code, _)| code)).collect::<Vec<_>>().join("\n")
}

#[test]
fn every_module_has_a_layer() {
    for source in sources() {
        let m = source.module.as_str();
        assert!(
            BOTTOM.contains(&m) || TOP.contains(&m) || ROOT_FILES.contains(&m),
            "{}: module `{m}` is in no layer; add it to BOTTOM or TOP in layering.rs",
            source.path.display()
        );
    }
}

#[test]
fn the_bottom_never_names_the_top() {
    for source in sources().iter().filter(|s| BOTTOM.contains(&s.module.as_str())) {
        for name in named_modules(&source.text) {
            assert!(!TOP.contains(&name.as_str()), "{} names crate::{name}", source.path.display());
        }
    }
}

#[test]
fn http_worker_and_cli_leave_each_other_and_the_app_alone() {
    for source in sources() {
        let Some((_, forbidden)) = TOP_FORBIDS.iter().find(|(m, _)| *m == source.module) else { continue };
        for name in named_modules(&source.text) {
            assert!(!forbidden.contains(&name.as_str()), "{} names crate::{name}", source.path.display());
        }
    }
}

#[test]
fn the_modules_import_each_other_without_a_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for source in sources().iter().filter(|s| !ROOT_FILES.contains(&s.module.as_str())) {
        let names = named_modules(&code(&source.text));
        graph.entry(source.module.clone()).or_default().extend(names.into_iter().filter(|n| *n != source.module));
    }
    // Depth-first search; a module met again while still on the path closes a cycle.
    fn visit<'a>(
        m: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(at) = path.iter().position(|p| *p == m) {
            panic!("import cycle: {} -> {m}", path[at..].join(" -> "));
        }
        path.push(m);
        for next in graph.get(m).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(m);
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn named_modules_reads_paths_and_groups() {
    let text = "use crate::{a::B, c, d::{e, f}};\nlet x = crate::g::h();";
    let names: Vec<_> = named_modules(text).into_iter().collect();
    assert_eq!(names, ["a", "c", "d", "g"]);
}
