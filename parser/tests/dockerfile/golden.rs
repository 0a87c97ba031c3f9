//! The golden corpus: `testdata/parser/<case>/{Dockerfile,result}` and
//! `testdata/parser-negative/<case>/{Dockerfile,error}`.
//!
//! A positive case must dump (BuildKit's `Node.Dump()` format) exactly as `result`
//! says, and must also pass the typed layer. A negative case must fail to parse with
//! the error (`line N: message`) written in `error`. Every case is checked and all
//! mismatches are reported together. `KILN_BLESS=1` rewrites the expectation files
//! from the parser's current output instead of comparing.

use std::fs;
use std::path::{Path, PathBuf};

fn testdata(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(dir)
}

/// The case directories under `dir`, sorted.
fn cases(dir: &str) -> Vec<PathBuf> {
    let root = testdata(dir);
    let mut cases: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("reading {}: {e}", root.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.join("Dockerfile").is_file())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases under {}", root.display());
    cases
}

fn bless() -> bool {
    std::env::var_os("KILN_BLESS").is_some_and(|v| v == "1")
}

fn read_dockerfile(case: &Path) -> String {
    let path = case.join("Dockerfile");
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Compares `actual` with the expectation file, or rewrites it when blessing.
fn check(case: &Path, file: &str, actual: &str, failures: &mut Vec<String>) {
    let path = case.join(file);
    if bless() {
        fs::write(&path, actual).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return;
    }
    match fs::read_to_string(&path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => failures.push(format!(
            "{}:\n--- expected\n{expected}--- actual\n{actual}",
            path.display()
        )),
        Err(e) => failures.push(format!("{}: {e}", path.display())),
    }
}

fn report(kind: &str, count: usize, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} of {count} {kind} cases failed:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn positive_cases_dump_as_buildkit_does() {
    let cases = cases("parser");
    let mut failures = Vec::new();
    for case in &cases {
        let text = read_dockerfile(case);
        match kiln_parser::syntax::parse_syntax(&text) {
            Ok(tree) => check(case, "result", &tree.dump(), &mut failures),
            Err(err) => failures.push(format!("{}: syntax error: {err}", case.display())),
        }
        if let Err(err) = kiln_parser::parse(&text) {
            failures.push(format!("{}: typed layer: {err}", case.display()));
        }
    }
    report("positive", cases.len(), failures);
}

#[test]
fn negative_cases_fail_with_their_error() {
    let cases = cases("parser-negative");
    let mut failures = Vec::new();
    for case in &cases {
        match kiln_parser::parse(&read_dockerfile(case)) {
            Ok(_) => failures.push(format!("{}: parsed, but should fail", case.display())),
            Err(err) => check(case, "error", &format!("{err}\n"), &mut failures),
        }
    }
    report("negative", cases.len(), failures);
}

#[test]
fn corpus_is_large_enough() {
    let total = cases("parser").len() + cases("parser-negative").len();
    assert!(total >= 80, "only {total} golden cases");
}
