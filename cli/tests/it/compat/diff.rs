//! Differences between an expected and an actual [`Description`], one readable line
//! each, so a failing case says what is wrong without a JSON diff tool.

use std::collections::{BTreeMap, BTreeSet};

use super::describe::{Description, FileEntry, HistoryEntry};

/// Every way `actual` differs from `expected`; empty when they agree.
pub fn differences(expected: &Description, actual: &Description) -> Vec<String> {
    let mut out = Vec::new();
    if expected.layers != actual.layers {
        out.push(format!(
            "layers: expected {}, got {}",
            expected.layers, actual.layers
        ));
    }
    config(&expected.config, &actual.config, &mut out);
    history(&expected.history, &actual.history, &mut out);
    files(&expected.files, &actual.files, &mut out);
    out
}

fn config(
    expected: &BTreeMap<String, serde_json::Value>,
    actual: &BTreeMap<String, serde_json::Value>,
    out: &mut Vec<String>,
) {
    let keys: BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
    for key in keys {
        let (want, got) = (expected.get(key), actual.get(key));
        if want != got {
            out.push(format!(
                "config.{key}: expected {}, got {}",
                show(want),
                show(got)
            ));
        }
    }
}

fn show(value: Option<&serde_json::Value>) -> String {
    value.map_or_else(|| "(absent)".to_owned(), |v| v.to_string())
}

fn history(expected: &[HistoryEntry], actual: &[HistoryEntry], out: &mut Vec<String>) {
    if expected.len() != actual.len() {
        out.push(format!(
            "history: expected {} entries, got {}",
            expected.len(),
            actual.len()
        ));
    }
    for index in 0..expected.len().max(actual.len()) {
        let (want, got) = (expected.get(index), actual.get(index));
        if want != got {
            out.push(format!(
                "history[{index}]: expected {}, got {}",
                show_history(want),
                show_history(got)
            ));
        }
    }
}

fn show_history(entry: Option<&HistoryEntry>) -> String {
    entry.map_or_else(
        || "(none)".to_owned(),
        |e| serde_json::to_string(e).expect("history serialises"),
    )
}

fn files(expected: &[FileEntry], actual: &[FileEntry], out: &mut Vec<String>) {
    let want: BTreeMap<&str, &FileEntry> = expected.iter().map(|f| (f.path.as_str(), f)).collect();
    let got: BTreeMap<&str, &FileEntry> = actual.iter().map(|f| (f.path.as_str(), f)).collect();
    let paths: BTreeSet<&str> = want.keys().chain(got.keys()).copied().collect();
    for path in paths {
        match (want.get(path), got.get(path)) {
            (Some(w), None) => out.push(format!("{path}: missing (expected {})", show_file(w))),
            (None, Some(g)) => out.push(format!("{path}: unexpected ({})", show_file(g))),
            (Some(w), Some(g)) if w != g => {
                let fields = [
                    ("type", Some(w.kind.clone()), Some(g.kind.clone())),
                    ("mode", Some(w.mode.clone()), Some(g.mode.clone())),
                    ("uid", Some(w.uid.to_string()), Some(g.uid.to_string())),
                    ("gid", Some(w.gid.to_string()), Some(g.gid.to_string())),
                    (
                        "size",
                        w.size.map(|s| s.to_string()),
                        g.size.map(|s| s.to_string()),
                    ),
                    ("sha256", w.sha256.clone(), g.sha256.clone()),
                    ("target", w.target.clone(), g.target.clone()),
                    (
                        "hardlink_group",
                        w.hardlink_group.clone(),
                        g.hardlink_group.clone(),
                    ),
                ];
                for (name, w, g) in fields {
                    if w != g {
                        let show = |v: Option<String>| v.unwrap_or_else(|| "(none)".to_owned());
                        out.push(format!(
                            "{path}: {name} expected {}, got {}",
                            show(w),
                            show(g)
                        ));
                    }
                }
            }
            _ => {}
        }
    }
}

fn show_file(entry: &FileEntry) -> String {
    serde_json::to_string(entry).expect("file entry serialises")
}

#[test]
fn differences_name_every_field_that_differs() {
    let file = |path: &str, mode: &str| FileEntry {
        path: path.to_owned(),
        kind: "file".to_owned(),
        mode: mode.to_owned(),
        uid: 0,
        gid: 0,
        size: Some(1),
        sha256: Some("aa".to_owned()),
        target: None,
        hardlink_group: None,
    };
    let history = |created_by: &str| HistoryEntry {
        created_by: Some(created_by.to_owned()),
        empty_layer: true,
        comment: None,
    };
    let expected = Description {
        layers: 2,
        config: [("User".to_owned(), serde_json::json!("app"))].into(),
        history: vec![history("USER app")],
        files: vec![file("/a", "0644"), file("/gone", "0644")],
    };
    assert_eq!(differences(&expected, &expected), Vec::<String>::new());

    let mut actual = expected.clone();
    actual.layers = 3;
    actual.config.clear();
    actual.history = vec![history("USER root"), history("CMD []")];
    actual.files = vec![file("/a", "4755"), file("/new", "0644")];
    assert_eq!(
        differences(&expected, &actual),
        [
            "layers: expected 2, got 3",
            "config.User: expected \"app\", got (absent)",
            "history: expected 1 entries, got 2",
            "history[0]: expected {\"created_by\":\"USER app\",\"empty_layer\":true}, \
             got {\"created_by\":\"USER root\",\"empty_layer\":true}",
            "history[1]: expected (none), got {\"created_by\":\"CMD []\",\"empty_layer\":true}",
            "/a: mode expected 0644, got 4755",
            "/gone: missing (expected {\"path\":\"/gone\",\"type\":\"file\",\"mode\":\"0644\",\
             \"uid\":0,\"gid\":0,\"size\":1,\"sha256\":\"aa\"})",
            "/new: unexpected ({\"path\":\"/new\",\"type\":\"file\",\"mode\":\"0644\",\
             \"uid\":0,\"gid\":0,\"size\":1,\"sha256\":\"aa\"})",
        ]
    );
}
