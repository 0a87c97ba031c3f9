//! Runs the table files in `testdata/shell/`.
//!
//! Each file holds one case a line, `input | expected`, with `%env`, `%escape` and
//! `%options` directives; the format is described at the top of `word.txt`. Files named
//! `words*.txt` run `process_words` and expect JSON arrays, the others `process_word`
//! and expect JSON strings. Every failing line is reported, not only the first.

use std::collections::BTreeMap;
use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use kiln_parser::shell::{Lex, ShellError};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Word,
    Words,
}

/// The settings directives have established so far in a file.
struct Settings {
    env: BTreeMap<String, String>,
    escape: char,
    options: Vec<String>,
}

impl Settings {
    fn lex(&self) -> Result<Lex, String> {
        let mut lex = Lex::new(self.escape);
        for option in &self.options {
            lex = match option.as_str() {
                "raw_quotes" => lex.with_raw_quotes(true),
                "raw_escapes" => lex.with_raw_escapes(true),
                "skip_process_quotes" => lex.with_skip_process_quotes(true),
                "skip_unset_env" => lex.with_skip_unset_env(true),
                other => return Err(format!("unknown option {other:?}")),
            };
        }
        Ok(lex)
    }
}

fn table_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/shell")
}

/// The error and its causes, as the tables write them.
fn describe(err: &ShellError) -> String {
    let mut text = format!("error({}): {err}", err.offset());
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn outcome(lex: &Lex, mode: Mode, input: &str, env: &BTreeMap<String, String>) -> String {
    let rendered = match mode {
        Mode::Word => lex
            .process_word(input, env)
            .map(|w| serde_json::to_string(&w)),
        Mode::Words => lex
            .process_words(input, env)
            .map(|w| serde_json::to_string(&w)),
    };
    match rendered {
        Ok(json) => json.expect("strings serialise"),
        Err(err) => describe(&err),
    }
}

/// Normalises an expected value written in the table to the form `outcome` produces.
fn normalise_expected(expected: &str) -> Result<String, String> {
    if expected.starts_with("error(") {
        return Ok(expected.to_owned());
    }
    let value: serde_json::Value =
        serde_json::from_str(expected).map_err(|e| format!("expected value is not JSON: {e}"))?;
    Ok(serde_json::to_string(&value).expect("values serialise"))
}

fn parse_input(raw: &str) -> Result<String, String> {
    match raw.strip_prefix("json:") {
        Some(json) => serde_json::from_str(json).map_err(|e| format!("bad json: input: {e}")),
        None => Ok(raw.to_owned()),
    }
}

/// Runs one file; returns the number of cases and the failures.
fn run_file(path: &Path, mode: Mode) -> (usize, Vec<String>) {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut settings = Settings {
        env: BTreeMap::new(),
        escape: '\\',
        options: Vec::new(),
    };
    let mut cases = 0;
    let mut failures = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let place = format!("{}:{}", path.display(), index + 1);
        let result = run_line(line, mode, &mut settings);
        match result {
            Ok(false) => {}
            Ok(true) => cases += 1,
            Err(problem) => failures.push(format!("{place}: {problem}")),
        }
    }
    (cases, failures)
}

/// Applies a directive or checks a case; `Ok(true)` when the line was a passing case.
fn run_line(line: &str, mode: Mode, settings: &mut Settings) -> Result<bool, String> {
    if line.trim().is_empty() || line.starts_with('#') {
        return Ok(false);
    }
    if let Some(json) = line.strip_prefix("%env ") {
        settings.env = serde_json::from_str(json).map_err(|e| format!("bad %env: {e}"))?;
        return Ok(false);
    }
    if let Some(escape) = line.strip_prefix("%escape ") {
        let mut chars = escape.trim().chars();
        settings.escape = match (chars.next(), chars.next()) {
            (Some(c), None) => c,
            _ => return Err(format!("bad %escape {escape:?}")),
        };
        return Ok(false);
    }
    if let Some(options) = line.strip_prefix("%options") {
        settings.options = options
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect();
        return Ok(false);
    }
    let (input, expected) = line
        .split_once(" | ")
        .ok_or_else(|| "no ` | ` between input and expected".to_owned())?;
    let input = parse_input(input.trim())?;
    let expected = normalise_expected(expected.trim())?;
    let actual = outcome(&settings.lex()?, mode, &input, &settings.env);
    if actual != expected {
        return Err(format!(
            "{input:?}\n    expected {expected}\n    got      {actual}"
        ));
    }
    Ok(true)
}

#[test]
fn shell_tables() {
    let mut files: Vec<PathBuf> = fs::read_dir(table_dir())
        .expect("testdata/shell is readable")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no table files in testdata/shell");
    let mut total = 0;
    let mut failures = Vec::new();
    for path in &files {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let mode = if stem.starts_with("words") {
            Mode::Words
        } else {
            Mode::Word
        };
        let (cases, mut failed) = run_file(path, mode);
        assert!(cases + failed.len() > 0, "{} has no cases", path.display());
        total += cases + failed.len();
        failures.append(&mut failed);
    }
    assert!(
        failures.is_empty(),
        "{} of {total} table cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The two escape characters must both be exercised, or the tables lost a section.
#[test]
fn tables_cover_both_escape_characters() {
    let word = fs::read_to_string(table_dir().join("word.txt")).expect("word.txt");
    let words = fs::read_to_string(table_dir().join("words.txt")).expect("words.txt");
    for text in [&word, &words] {
        assert!(text.lines().any(|l| l == "%escape `"));
        assert!(text.lines().any(|l| l == "%escape \\"));
    }
}
