//! The compatibility suite: every case under `testdata/compat/` is built by kiln and
//! must give the image BuildKit gave — the same flattened filesystem (types, modes,
//! owners, contents, link targets, hard-link groups), the same config fields, history
//! and layer count, as recorded in the case's `expected.json`.
//!
//! A case is a directory with a `Dockerfile`, its context files, and optionally `args`
//! (one `NAME=VALUE` build argument a line) and `target` (the stage to build). The
//! busybox every base image is made of is copied in from `/bin/busybox` rather than
//! kept in the repository. `expected.json`, `args` and `target` are not part of the
//! context the builder sees.
//!
//! With `KILN_COMPAT_RECORD=1` the same test records the golden files from the Docker
//! daemon at `DOCKER_HOST`, through the client named by `KILN_COMPAT_DOCKER`, instead of
//! checking kiln (`testdata/compat/record.sh` starts the daemon and sets both).
//! Recording and checking share [`describe`], so they read images the same way.
//! `KILN_COMPAT_CASE=a,b` limits either to the named cases.

mod describe;
mod diff;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use describe::{Description, describe_archive};

use crate::support::{Kiln, require};

/// Set to `1` to record `expected.json` files from Docker instead of checking kiln.
const RECORD_ENV: &str = "KILN_COMPAT_RECORD";
/// A comma-separated list of case names to run instead of all of them.
const ONLY_ENV: &str = "KILN_COMPAT_CASE";
/// The busybox copied into every context.
const BUSYBOX: &str = "/bin/busybox";
/// The Docker client that records, when set; a client found on the PATH may lack
/// BuildKit, so the default is Debian's.
const DOCKER_ENV: &str = "KILN_COMPAT_DOCKER";
/// The client used when `KILN_COMPAT_DOCKER` is unset: Debian's docker.io.
const DEFAULT_DOCKER: &str = "/usr/bin/docker";
/// How many differences a failing case prints before summing up the rest.
const MAX_LINES_PER_CASE: usize = 80;
/// Files of a case directory that are the harness's, not the build context's.
const HARNESS_FILES: &[&str] = &["expected.json", "args", "target"];

/// One case directory.
struct Case {
    name: String,
    dir: PathBuf,
    build_args: Vec<String>,
    target: Option<String>,
}

impl Case {
    fn expected_path(&self) -> PathBuf {
        self.dir.join("expected.json")
    }

    fn tag(&self) -> String {
        format!("compat/{}", self.name)
    }

    /// The `--build-arg` and `--target` flags both builders take.
    fn build_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        for arg in &self.build_args {
            flags.extend(["--build-arg".to_owned(), arg.clone()]);
        }
        if let Some(target) = &self.target {
            flags.extend(["--target".to_owned(), target.clone()]);
        }
        flags
    }

    /// Copies the case into `into` (without the harness's files) and adds busybox.
    fn context(&self, into: &Path) -> PathBuf {
        let ctx = into.join(format!("ctx-{}", self.name));
        copy_tree(&self.dir, &ctx, true);
        std::fs::copy(BUSYBOX, ctx.join("busybox")).expect("copy busybox into the context");
        ctx
    }
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/compat")
}

fn cases() -> Vec<Case> {
    let only: Option<Vec<String>> = std::env::var(ONLY_ENV)
        .ok()
        .filter(|list| !list.is_empty())
        .map(|list| list.split(',').map(str::to_owned).collect());
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(cases_dir()).expect("read testdata/compat") {
        let dir = entry.expect("read testdata/compat").path();
        if !dir.join("Dockerfile").is_file() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if only.as_ref().is_some_and(|only| !only.contains(&name)) {
            continue;
        }
        let build_args = std::fs::read_to_string(dir.join("args"))
            .map(|text| {
                text.lines()
                    .filter(|line| !line.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let target = std::fs::read_to_string(dir.join("target"))
            .ok()
            .map(|text| text.trim().to_owned());
        cases.push(Case {
            name,
            dir,
            build_args,
            target,
        });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(only) = &only {
        assert_eq!(cases.len(), only.len(), "{ONLY_ENV}={only:?}: no such case");
    }
    cases
}

/// Copies a context tree, keeping modes and symlinks; at the top level, leaves the
/// harness's files out.
fn copy_tree(from: &Path, to: &Path, top: bool) {
    std::fs::create_dir_all(to).expect("create context dir");
    for entry in std::fs::read_dir(from).expect("read case dir") {
        let entry = entry.expect("read case dir");
        let name = entry.file_name();
        if top && HARNESS_FILES.iter().any(|f| name == *f) {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_tree(&src, &dst, false);
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&src).expect("read link");
            std::os::unix::fs::symlink(target, &dst).expect("copy symlink");
        } else {
            std::fs::copy(&src, &dst).expect("copy context file");
        }
    }
}

#[test]
fn compat_cases_match_buildkit() {
    assert!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} is missing: apt-get install -y busybox-static"
    );
    let cases = cases();
    assert!(
        !cases.is_empty(),
        "no cases under {}",
        cases_dir().display()
    );
    if std::env::var(RECORD_ENV).is_ok_and(|v| v == "1") {
        record(&cases);
    } else {
        check(&cases);
    }
}

/// Builds every case with kiln and compares with its golden file; fails once, listing
/// every case that differs and how.
fn check(cases: &[Case]) {
    require("runc", "runc");
    let kiln = Kiln::new();
    let mut failures = Vec::new();
    for case in cases {
        let problems = check_case(&kiln, case);
        if problems.is_empty() {
            eprintln!("compat {}: ok", case.name);
        } else {
            eprintln!("compat {}: FAILED", case.name);
            let mut lines: Vec<String> = problems
                .iter()
                .take(MAX_LINES_PER_CASE)
                .map(|p| format!("  {p}"))
                .collect();
            if problems.len() > MAX_LINES_PER_CASE {
                lines.push(format!(
                    "  … and {} more",
                    problems.len() - MAX_LINES_PER_CASE
                ));
            }
            failures.push(format!("== {} ==\n{}", case.name, lines.join("\n")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} compatibility cases differ from BuildKit:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn check_case(kiln: &Kiln, case: &Case) -> Vec<String> {
    let expected = match std::fs::read_to_string(case.expected_path()) {
        Ok(text) => match serde_json::from_str::<Description>(&text) {
            Ok(expected) => expected,
            Err(e) => return vec![format!("expected.json does not parse: {e}")],
        },
        Err(e) => {
            return vec![format!(
                "no expected.json ({e}): run bash testdata/compat/record.sh"
            )];
        }
    };
    let ctx = case.context(kiln.dir.path());
    let tag = case.tag();
    let mut build = vec!["build", "--progress", "plain", "-t", &tag];
    let flags = case.build_flags();
    build.extend(flags.iter().map(String::as_str));
    build.push(ctx.to_str().unwrap());
    let out = kiln.run(&build);
    if !out.status.success() {
        return vec![failed("kiln build", &out)];
    }
    let archive = kiln.dir.path().join(format!("{}.tar", case.name));
    let out = kiln.run(&[
        "save",
        "--format",
        "docker",
        "-o",
        archive.to_str().unwrap(),
        &tag,
    ]);
    if !out.status.success() {
        return vec![failed("kiln save", &out)];
    }
    match describe_archive(&archive) {
        Ok(actual) => diff::differences(&expected, &actual),
        Err(e) => vec![format!("reading kiln's image: {e:#}")],
    }
}

/// A failed command's exit status and the end of its standard error.
fn failed(what: &str, out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(25)..].join("\n    ");
    format!("{what} failed ({}):\n    {tail}", out.status)
}

/// Builds every case with BuildKit and writes its golden file.
fn record(cases: &[Case]) {
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    assert!(
        !host.is_empty(),
        "{RECORD_ENV}=1 needs DOCKER_HOST: run bash testdata/compat/record.sh"
    );
    let docker = std::env::var(DOCKER_ENV)
        .ok()
        .filter(|path| !path.is_empty())
        .unwrap_or_else(|| DEFAULT_DOCKER.to_owned());
    assert!(
        Path::new(&docker).is_file(),
        "{docker} is missing: run bash testdata/compat/record.sh"
    );
    let scratch = tempfile::tempdir().expect("temp dir");
    let mut failures = Vec::new();
    for case in cases {
        match record_case(case, Path::new(&docker), scratch.path()) {
            Ok(()) => eprintln!("recorded {}", case.name),
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "recording failed:\n{}",
        failures.join("\n")
    );
}

fn record_case(case: &Case, client: &Path, scratch: &Path) -> Result<(), String> {
    let ctx = case.context(scratch);
    let tag = case.tag();
    let docker = |args: &[&str]| -> Result<(), String> {
        let out = Command::new(client)
            .env("DOCKER_BUILDKIT", "1")
            .args(args)
            .output()
            .map_err(|e| format!("running {}: {e}", client.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(failed(&format!("docker {}", args[0]), &out))
        }
    };
    // The daemon runs without a bridge network; RUN steps need none anyway.
    let mut build = vec![
        "build",
        "--network",
        "none",
        "--progress",
        "plain",
        "-t",
        &tag,
    ];
    let flags = case.build_flags();
    build.extend(flags.iter().map(String::as_str));
    build.push(ctx.to_str().unwrap());
    docker(&build)?;
    let archive = scratch.join(format!("{}.tar", case.name));
    docker(&["save", "-o", archive.to_str().unwrap(), &tag])?;
    let description = describe_archive(&archive).map_err(|e| format!("{e:#}"))?;
    std::fs::write(case.expected_path(), description.to_golden())
        .map_err(|e| format!("writing expected.json: {e}"))
}
