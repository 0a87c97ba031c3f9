//! `kiln build` end to end: real runc, real overlayfs, base images built from Debian's
//! static busybox with `FROM scratch`.

use std::fs;
use std::path::Path;

use crate::support::Kiln;

const BUSYBOX: &str = "/bin/busybox";

/// The first lines of every test Dockerfile: a busybox base made from scratch.
const BASE: &str = "FROM scratch AS base\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";

/// A build context holding busybox and `files`.
fn context(kiln: &Kiln, dockerfile: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: install Debian's busybox-static"
    );
    crate::support::require("runc", "runc");
    let dir = kiln.dir.path().join("ctx");
    fs::create_dir_all(&dir).unwrap();
    fs::copy(BUSYBOX, dir.join("busybox")).unwrap();
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    for (name, content) in files {
        write(&dir, name, content);
    }
    dir
}

fn write(dir: &Path, name: &str, content: &str) {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// One build's outcome: the image ID and the steps that ran (not cached).
struct Built {
    id: String,
    ran: Vec<String>,
    cached: Vec<String>,
}

fn build(kiln: &Kiln, ctx: &Path, extra: &[&str]) -> Built {
    let iid = kiln.dir.path().join("iid");
    let mut args = vec![
        "build",
        "--progress",
        "plain",
        "--iidfile",
        iid.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    let out = kiln.run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kiln {args:?} failed:\n{stderr}");
    let mut names = std::collections::BTreeMap::new();
    let (mut ran, mut cached) = (Vec::new(), Vec::new());
    for line in stderr.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let Some((n, text)) = rest.split_once(' ') else {
            continue;
        };
        if text == "CACHED" {
            cached.push(names.get(n).cloned().unwrap_or_default());
        } else if text.starts_with("DONE ") {
            ran.push(names.get(n).cloned().unwrap_or_default());
        } else {
            names.entry(n.to_owned()).or_insert_with(|| text.to_owned());
        }
    }
    // Sources are read on every build; the steps are what the cache is about.
    let is_step = |name: &String| !name.starts_with("[internal]") && !name.contains(" FROM ");
    Built {
        id: fs::read_to_string(&iid).unwrap(),
        ran: ran.into_iter().filter(is_step).collect(),
        cached: cached.into_iter().filter(is_step).collect(),
    }
}

fn ran_any(built: &Built, needle: &str) -> bool {
    built.ran.iter().any(|name| name.contains(needle))
}

#[test]
fn a_rebuild_with_nothing_changed_runs_nothing_and_gives_the_same_image() {
    let kiln = Kiln::new();
    let dockerfile = format!("{BASE}COPY a.txt /a.txt\nRUN cat /a.txt > /copy.txt\n");
    let ctx = context(&kiln, &dockerfile, &[("a.txt", "hello\n")]);
    let first = build(&kiln, &ctx, &[]);
    assert_eq!(first.ran.len(), 4, "every step runs the first time: {:?}", first.ran);
    let second = build(&kiln, &ctx, &[]);
    assert!(second.ran.is_empty(), "ran again: {:?}", second.ran);
    assert_eq!(second.cached.len(), 4);
    assert_eq!(first.id, second.id);
}

#[test]
fn a_changed_file_reruns_only_the_copy_that_reads_it_and_what_follows() {
    let kiln = Kiln::new();
    let dockerfile = format!(
        "{BASE}COPY b.txt /b.txt\nRUN cat /b.txt > /b2\nCOPY a.txt /a.txt\nRUN cat /a.txt > /a2\n"
    );
    let ctx = context(&kiln, &dockerfile, &[("a.txt", "a\n"), ("b.txt", "b\n")]);
    let first = build(&kiln, &ctx, &[]);
    write(&ctx, "a.txt", "changed\n");
    let second = build(&kiln, &ctx, &[]);
    assert_eq!(second.ran.len(), 2, "{:?}", second.ran);
    assert!(ran_any(&second, "COPY a.txt"));
    assert!(ran_any(&second, "RUN cat /a.txt"));
    assert_ne!(first.id, second.id);
}

#[test]
fn ignored_or_unread_files_change_nothing() {
    let kiln = Kiln::new();
    let dockerfile = format!("{BASE}COPY . /app\n");
    let ctx = context(
        &kiln,
        &dockerfile,
        &[("src/main.c", "int main;\n"), ("build/out.o", "obj"), (".dockerignore", "build\n")],
    );
    let first = build(&kiln, &ctx, &[]);
    write(&ctx, "build/out.o", "other object");
    write(&ctx, "build/new.o", "new object");
    let second = build(&kiln, &ctx, &[]);
    assert!(second.ran.is_empty(), "{:?}", second.ran);
    assert_eq!(first.id, second.id);

    // A file no step reads.
    let kiln = Kiln::new();
    let dockerfile = format!("{BASE}COPY used.txt /used.txt\n");
    let ctx = context(&kiln, &dockerfile, &[("used.txt", "u"), ("unused.txt", "1")]);
    let first = build(&kiln, &ctx, &[]);
    write(&ctx, "unused.txt", "2");
    let second = build(&kiln, &ctx, &[]);
    assert!(second.ran.is_empty(), "{:?}", second.ran);
    assert_eq!(first.id, second.id);
}

#[test]
fn a_build_arg_used_late_invalidates_only_from_its_first_use() {
    let kiln = Kiln::new();
    let dockerfile =
        format!("{BASE}RUN echo early > /early\nARG LATE=one\nRUN echo $LATE > /late\n");
    let ctx = context(&kiln, &dockerfile, &[]);
    build(&kiln, &ctx, &["--build-arg", "LATE=one"]);
    let second = build(&kiln, &ctx, &["--build-arg", "LATE=two"]);
    assert_eq!(second.ran.len(), 1, "{:?}", second.ran);
    assert!(ran_any(&second, "/late"), "{:?}", second.ran);
}

#[test]
fn unused_stages_are_not_built_and_independent_stages_run_side_by_side() {
    let kiln = Kiln::new();
    // Each stage records when it started and ended; the two must overlap.
    let dockerfile = format!(
        "{BASE}
FROM base AS broken
RUN false

FROM base AS one
RUN cut -d' ' -f1 /proc/uptime > /start && sleep 2 && cut -d' ' -f1 /proc/uptime > /end

FROM base AS two
RUN cut -d' ' -f1 /proc/uptime > /start && sleep 2 && cut -d' ' -f1 /proc/uptime > /end

FROM base
COPY --from=one /start /one.start
COPY --from=one /end /one.end
COPY --from=two /start /two.start
COPY --from=two /end /two.end
CMD [\"cat\", \"/one.start\"]
"
    );
    let ctx = context(&kiln, &dockerfile, &[]);
    let out = kiln.dir.path().join("out.tar");
    build(&kiln, &ctx, &[]);
    let built = build(&kiln, &ctx, &["--output", &format!("type=oci,dest={}", out.display())]);
    assert!(built.ran.is_empty());

    // Read the four timestamps back from the image's layers.
    let unpacked = kiln.dir.path().join("unpacked");
    fs::create_dir_all(&unpacked).unwrap();
    let status = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&out)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(status.success());
    let times = read_times_from_layout(&unpacked);
    let overlap = times["one.start"] < times["two.end"] && times["two.start"] < times["one.end"];
    assert!(overlap, "stages ran one after the other: {times:?}");
}

/// Finds `/one.start`-style files in the layer blobs of an OCI layout.
fn read_times_from_layout(layout: &Path) -> std::collections::BTreeMap<String, f64> {
    let mut times = std::collections::BTreeMap::new();
    for entry in fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let path = entry.unwrap().path();
        let Ok(file) = fs::File::open(&path) else {
            continue;
        };
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let Ok(entries) = archive.entries() else {
            continue;
        };
        for e in entries.flatten() {
            let mut e = e;
            let name = e.path().unwrap().to_string_lossy().into_owned();
            if let Some(stage) = [".start", ".end"]
                .iter()
                .find(|s| name.ends_with(*s))
                .map(|_| name.trim_start_matches('/').to_owned())
            {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut e, &mut text).unwrap();
                times.insert(stage, text.trim().parse().unwrap());
            }
        }
    }
    assert_eq!(times.len(), 4, "found {times:?}");
    times
}

#[test]
fn a_failing_step_is_named_with_its_line_and_exit_code() {
    let kiln = Kiln::new();
    let dockerfile = format!("{BASE}RUN echo about to fail && exit 3\n");
    let ctx = context(&kiln, &dockerfile, &[]);
    let out = kiln.run(&["build", "--progress", "plain", ctx.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("Dockerfile:4"), "{stderr}");
    assert!(stderr.contains("exit code 3"), "{stderr}");
    assert!(stderr.contains("about to fail"), "{stderr}");
}
