//! `kiln debug parse` driven through the real binary: both output formats on golden
//! cases, standard input, and the diagnostic for a Dockerfile that does not parse.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn case(dir: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(dir)
        .join(name)
}

fn kiln_parse(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["debug", "parse"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln starts");
    let mut input = child.stdin.take().expect("stdin is piped");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .expect("stdin is written");
    drop(input);
    child.wait_with_output().expect("kiln finishes")
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "kiln failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("output is UTF-8")
}

#[test]
fn buildkit_dump_matches_the_golden_result() {
    for name in ["heredoc-copy", "onbuild", "escape-backtick"] {
        let dir = case("parser", name);
        let dockerfile = dir.join("Dockerfile");
        let output = kiln_parse(
            &[
                "-f",
                dockerfile.to_str().expect("utf-8 path"),
                "--format",
                "buildkit-dump",
            ],
            None,
        );
        let expected = std::fs::read_to_string(dir.join("result")).expect("result file");
        assert_eq!(stdout_of(&output), expected, "{name}");
    }
}

#[test]
fn json_is_the_typed_ast() {
    let dockerfile = case("parser", "multi-stage").join("Dockerfile");
    let output = kiln_parse(&["--file", dockerfile.to_str().expect("utf-8 path")], None);
    let ast: serde_json::Value = serde_json::from_str(&stdout_of(&output)).expect("JSON");
    let stages = ast["stages"].as_array().expect("stages");
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0]["name"], "build");
    assert_eq!(stages[1]["base"], "alpine");
    let copy = &stages[1]["instructions"][0];
    assert_eq!(copy["command"]["instruction"], "copy");
    assert_eq!(copy["command"]["args"]["from"], "build");
    assert_eq!(copy["span"]["line"], 7);
}

#[test]
fn reads_standard_input_and_defaults_to_json() {
    let output = kiln_parse(&["-f", "-"], Some("FROM scratch\nRUN [\"true\"]\n"));
    let ast: serde_json::Value = serde_json::from_str(&stdout_of(&output)).expect("JSON");
    let run = &ast["stages"][0]["instructions"][0]["command"];
    assert_eq!(run["instruction"], "run");
    assert_eq!(run["args"]["command"]["exec"][0], "true");
}

#[test]
fn bad_dockerfile_fails_with_file_line_and_caret() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("Dockerfile.bad");
    std::fs::write(&path, "FROM alpine\nRUN --network=bridge true\n").expect("write");
    let output = kiln_parse(&["-f", path.to_str().expect("utf-8 path")], None);
    assert!(!output.status.success(), "a bad Dockerfile must fail");
    assert!(output.stdout.is_empty(), "nothing on stdout");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Dockerfile.bad:2:5"),
        "file and line: {stderr}"
    );
    assert!(
        stderr.contains("unsupported value \"bridge\" for --network"),
        "message: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    let source_line = lines
        .iter()
        .position(|l| l.contains("RUN --network=bridge true"))
        .expect("the source line is shown");
    let column_of = |line: &str, byte: usize| line[..byte].chars().count();
    let marker = lines.get(source_line + 1).expect("a line under the source");
    let caret_column = column_of(marker, marker.find(['^', '─']).expect("a caret"));
    let source = lines[source_line];
    let flag_column = column_of(source, source.find("--network").expect("the flag"));
    assert_eq!(
        caret_column, flag_column,
        "caret under --network:\n{stderr}"
    );
}

#[test]
fn dump_reports_syntax_errors_too() {
    let output = kiln_parse(
        &["-f", "-", "--format", "buildkit-dump"],
        Some("FROM alpine\nRUN <<EOF\nnever closed\n"),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("<stdin>:2:1"), "{stderr}");
    assert!(stderr.contains("unterminated heredoc"), "{stderr}");
}
