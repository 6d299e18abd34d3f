//! docs/RELIABILITY.md stays true to the tests that produce it: every test and file its tables
//! name must exist, so a renamed or deleted test cannot leave a row claiming coverage.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Every `.rs` file of the workspace (not target/ or fuzz/target/), with its text.
fn sources() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut pending = vec![root()];
    while let Some(dir) = pending.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    pending.push(p);
                }
            } else if name.ends_with(".rs") {
                out.push((p.clone(), std::fs::read_to_string(&p).unwrap_or_default()));
            }
        }
    }
    out
}

/// The backticked names in the table cells of the document.
fn cells(doc: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in doc.lines().filter(|l| l.starts_with('|')) {
        let mut rest = line;
        while let Some(start) = rest.find('`') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('`') else { break };
            out.push(after[..end].to_string());
            rest = &after[end + 1..];
        }
    }
    out
}

/// A test or function name: snake_case with at least two underscores (shorter ones are field
/// names and flags, not tests).
fn is_test_name(s: &str) -> bool {
    s.matches('_').count() >= 2
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A directory of the source tree (`tests/tests/faults/`), not a path of the API (`/v2/`).
fn is_source_dir(s: &str) -> bool {
    s.ends_with('/') && (s.contains("tests/") || s.contains("src/"))
}

#[test]
fn every_test_and_file_the_reliability_tables_name_exists() {
    let doc = std::fs::read_to_string(root().join("docs/RELIABILITY.md")).unwrap();
    let sources = sources();
    let defines = |name: &str| {
        let f = format!("fn {name}(");
        let m = format!("mod {name} ");
        let macro_arg = format!("::{name},");
        let macro_end = format!("::{name})");
        // A fuzz target is a file of its name.
        let target = format!("{name}.rs");
        sources.iter().any(|(path, text)| {
            path.ends_with(&target)
                || text.contains(&f)
                || text.contains(&m)
                || text.contains(&macro_arg)
                || text.contains(&macro_end)
        })
    };
    let file_exists = |path: &str| {
        let path = path.trim_end_matches('/');
        root().join(path).exists()
            || ["tests/tests", "tests/tests/faults", "tests/tests/proxy"]
                .iter()
                .any(|d| root().join(d).join(path).exists())
            || sources.iter().any(|(p, _)| p.ends_with(path))
    };
    let mut checked = 0;
    let mut missing = Vec::new();
    for cell in cells(&doc) {
        let (file, name) = match cell.rsplit_once("::") {
            Some((f, n)) => (Some(f), Some(n)),
            None if cell.ends_with(".rs") || is_source_dir(&cell) => (Some(cell.as_str()), None),
            None if is_test_name(&cell) => (None, Some(cell.as_str())),
            None => (None, None),
        };
        if let Some(f) = file
            && (f.ends_with(".rs") || is_source_dir(f))
        {
            checked += 1;
            if !file_exists(f) {
                missing.push(format!("file {f}"));
            }
        }
        if let Some(n) = name {
            checked += 1;
            if !defines(n) {
                missing.push(format!("test {n}"));
            }
        }
    }
    assert!(
        checked >= 20,
        "only {checked} names found: is the table format still parsed?"
    );
    assert!(
        missing.is_empty(),
        "docs/RELIABILITY.md names what does not exist: {missing:#?}"
    );
}
