//! `kiln debug expand` driven through the real binary.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

fn kiln_expand(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["debug", "expand"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln starts");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .expect("request is written");
    child.wait_with_output().expect("kiln finishes")
}

/// Runs one request and returns the answer, asserting a successful exit.
fn answer(request: Value) -> Value {
    let output = kiln_expand(&[], &request.to_string());
    assert!(
        output.status.success(),
        "{request}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("answer is JSON")
}

#[test]
fn word_mode_with_defaults() {
    assert_eq!(
        answer(json!({"input": "${A:-x} \"$B c\"", "env": {"B": "b"}})),
        json!({"result": "x b c"})
    );
    assert_eq!(
        answer(json!({"input": "plain"})),
        json!({"result": "plain"})
    );
}

#[test]
fn words_mode_splits() {
    assert_eq!(
        answer(json!({
            "mode": "words",
            "input": "a \"b c\" $S ''",
            "env": {"S": "d  e"}
        })),
        json!({"words": ["a", "b c", "d", "e"]})
    );
    assert_eq!(
        answer(json!({"mode": "words", "input": "$EMPTY"})),
        json!({"words": []})
    );
}

#[test]
fn backtick_escape() {
    assert_eq!(
        answer(json!({"input": "`$A C:\\dir", "escape": "`", "env": {"A": "no"}})),
        json!({"result": "$A C:\\dir"})
    );
}

#[test]
fn expansion_errors_are_answers() {
    let error = answer(json!({"input": "x${A"}));
    let text = error["error"].as_str().expect("an error answer");
    assert!(text.contains("missing '}'"), "{text}");
    assert!(text.contains("byte 1"), "{text}");
    let error = answer(json!({"mode": "words", "input": "${A:?must be set}"}));
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("A: must be set")),
        "{error}"
    );
}

#[test]
fn malformed_requests_fail() {
    for bad in [
        "{",
        "[]",
        r#"{"mode": "word"}"#,
        r#"{"input": "x", "mode": "lines"}"#,
        r#"{"input": "x", "escape": "$"}"#,
        r#"{"input": "x", "extra": 1}"#,
    ] {
        let output = kiln_expand(&[], bad);
        assert!(!output.status.success(), "{bad} was accepted");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("request is not valid"),
            "{bad}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn batch_answers_line_by_line() {
    let requests = [
        json!({"input": "$A-${B:-b}", "env": {"A": "a"}}),
        json!({"mode": "words", "input": "x\\ y z"}),
        json!({"input": "'open"}),
        json!({"input": "`$A", "escape": "`"}),
    ];
    let stdin: String = requests.iter().map(|r| format!("{r}\n\n")).collect();
    let output = kiln_expand(&["--batch"], &stdin);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<Value> = String::from_utf8(output.stdout)
        .expect("utf-8 output")
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    assert_eq!(answers.len(), 4);
    assert_eq!(answers[0], json!({"result": "a-b"}));
    assert_eq!(answers[1], json!({"words": ["x y", "z"]}));
    assert!(
        answers[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("single-quote"))
    );
    assert_eq!(answers[3], json!({"result": "$A"}));
}

#[test]
fn batch_stops_at_a_malformed_line() {
    let stdin = format!(
        "{}\nnot json\n{}\n",
        json!({"input": "1"}),
        json!({"input": "2"})
    );
    let output = kiln_expand(&["--batch"], &stdin);
    assert!(!output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "{\"result\":\"1\"}\n"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("line 2"));
}
