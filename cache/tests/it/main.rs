//! Integration tests of the store: one `mod` per area, each test in its own temp root.

mod content;

use std::path::{Path, PathBuf};

/// A temp directory that lives as long as the test.
pub(crate) struct TestContext {
    dir: tempfile::TempDir,
}

impl TestContext {
    pub(crate) fn new() -> TestContext {
        TestContext {
            dir: tempfile::tempdir().expect("create a temp dir for the test"),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

/// Names of the entries directly under `dir`, sorted.
pub(crate) fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}
