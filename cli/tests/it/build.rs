//! `kiln build` end to end: real runc, real overlayfs, base images built from Debian's
//! static busybox with `FROM scratch`.

use std::fs;
use std::path::Path;

use crate::support::Kiln;

const BUSYBOX: &str = "/bin/busybox";

/// The first lines of every test Dockerfile: a busybox base made from scratch.
pub(crate) const BASE: &str = "FROM scratch AS base\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";

/// A build context holding busybox and `files`.
pub(crate) fn context(kiln: &Kiln, dockerfile: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
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
pub(crate) struct Built {
    pub id: String,
    pub ran: Vec<String>,
    pub cached: Vec<String>,
    /// What kiln printed on standard error.
    pub stderr: String,
}

pub(crate) fn build(kiln: &Kiln, ctx: &Path, extra: &[&str]) -> Built {
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
        id: read(&iid),
        ran: ran.into_iter().filter(is_step).collect(),
        cached: cached.into_iter().filter(is_step).collect(),
        stderr,
    }
}

/// Builds with `--output type=local` into a fresh directory and returns it.
fn build_local(kiln: &Kiln, ctx: &Path, extra: &[&str]) -> std::path::PathBuf {
    let out = kiln.dir.path().join("out");
    let dest = format!("type=local,dest={}", out.display());
    let mut args = vec!["-o", dest.as_str()];
    args.extend_from_slice(extra);
    build(kiln, ctx, &args);
    out
}

pub(crate) fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
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
    assert_eq!(
        first.ran.len(),
        4,
        "every step runs the first time: {:?}",
        first.ran
    );
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
        &[
            ("src/main.c", "int main;\n"),
            ("build/out.o", "obj"),
            (".dockerignore", "build\n"),
        ],
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
    let ctx = context(
        &kiln,
        &dockerfile,
        &[("used.txt", "u"), ("unused.txt", "1")],
    );
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
    let built = build(
        &kiln,
        &ctx,
        &["--output", &format!("type=oci,dest={}", out.display())],
    );
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

#[test]
fn copies_from_a_stage_that_finished_early_are_done_early_and_build_the_same() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let kiln = Kiln::new();
    let dockerfile = format!(
        "{BASE}
FROM base AS slow
RUN sleep 3 && mkdir /out && chmod 700 /out && echo slow > /out/name

FROM base AS quick
RUN mkdir -p /out/sub && echo quick > /out/name && echo deep > /out/sub/f && ln -s name /out/link && chmod 640 /out/name

FROM base
COPY --from=slow /out/name /slow/deep/name
COPY --from=slow /out /slowdir
COPY --from=quick /out/name /quick/deep/name
COPY --from=quick /out /quickdir
COPY --from=quick /out/sub /slowdir/sub
COPY --from=quick /out/ /bin/quick/
RUN cat /slowdir/name /quickdir/name /slowdir/sub/f /bin/quick/link > /all
"
    );
    let ctx = context(&kiln, &dockerfile, &[]);
    let out = kiln.dir.path().join("out");
    let first = build(
        &kiln,
        &ctx,
        &["-o", &format!("type=local,dest={}", out.display())],
    );
    assert_eq!(read(&out.join("all")), "slow\nquick\ndeep\nquick\n");

    // The copies from `quick` were done while `slow` still slept, over the stage as it
    // was before the copies from `slow`: the directories they created are seconds
    // older than those the copies from `slow` created, which ran first in order.
    let mtime = |p: &str| fs::symlink_metadata(out.join(p)).unwrap().mtime();
    assert!(
        mtime("quick/deep") + 2 <= mtime("slow/deep"),
        "the copy from the quick stage waited for the slow one: {} vs {}",
        mtime("quick/deep"),
        mtime("slow/deep")
    );
    // A copy into a directory an earlier copy made is done in its turn: `/slowdir`
    // keeps the mode it came with, rather than that of a fresh directory.
    let mode = |p: &str| {
        fs::symlink_metadata(out.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("slowdir"), 0o700);
    assert_eq!(read(&out.join("slowdir/sub/f")), "deep\n");
    assert_eq!(read(&out.join("slowdir/name")), "slow\n");
    // Copies done early are what copies done in their turn give.
    assert_eq!(mode("quickdir/name"), 0o640);
    assert_eq!(
        fs::read_link(out.join("quickdir/link")).unwrap(),
        Path::new("name")
    );
    assert_eq!(read(&out.join("bin/quick/sub/f")), "deep\n");
    assert!(
        out.join("bin/sh").exists(),
        "the copy under /bin hid the base's /bin"
    );

    let second = build(&kiln, &ctx, &[]);
    assert!(second.ran.is_empty(), "{:?}", second.ran);
    assert!(
        ran_any(&first, "COPY --from=quick /out/sub"),
        "{:?}",
        first.ran
    );
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
    // Quiet progress: the output's last lines must come from the failure report itself.
    let out = kiln.run(&["build", "--progress", "quiet", ctx.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("Dockerfile:4"), "{stderr}");
    assert!(stderr.contains("exit code 3"), "{stderr}");
    assert!(stderr.contains("about to fail"), "{stderr}");
}

#[test]
fn the_steps_before_a_failing_one_are_cached_for_the_next_attempt() {
    let kiln = Kiln::new();
    let steps = format!("{BASE}RUN echo one > /one\nCOPY a.txt /a.txt\n");
    let ctx = context(&kiln, &format!("{steps}RUN exit 3\n"), &[("a.txt", "a")]);
    let out = kiln.run(&["build", "--progress", "plain", ctx.to_str().unwrap()]);
    assert!(!out.status.success());
    let ctx = context(
        &kiln,
        &format!("{steps}RUN echo fixed > /fixed\n"),
        &[("a.txt", "a")],
    );
    let built = build(&kiln, &ctx, &[]);
    assert_eq!(built.ran.len(), 1, "{}", built.stderr);
    assert!(
        built.ran[0].ends_with("RUN echo fixed > /fixed"),
        "{}",
        built.stderr
    );
    // BASE's two steps and the two before the failing one.
    assert_eq!(built.cached.len(), 4, "{}", built.stderr);
}

#[test]
fn cache_mounts_persist_between_builds_and_stay_out_of_the_layers() {
    let kiln = Kiln::new();
    let dockerfile = format!(
        "{BASE}ARG RUN_ID\nRUN --mount=type=cache,target=/cache echo $RUN_ID >> /cache/log && cp /cache/log /seen\n"
    );
    let ctx = context(&kiln, &dockerfile, &[]);
    let out = kiln.dir.path().join("out");
    let local = format!("type=local,dest={}", out.display());
    build(&kiln, &ctx, &["--build-arg", "RUN_ID=first", "-o", &local]);
    fs::remove_dir_all(&out).unwrap();
    build(&kiln, &ctx, &["--build-arg", "RUN_ID=second", "-o", &local]);
    assert_eq!(read(&out.join("seen")), "first\nsecond\n");
    assert!(
        fs::read_dir(out.join("cache")).map_or(true, |mut d| d.next().is_none()),
        "cache contents leaked into the image"
    );
}

#[test]
fn source_date_epoch_makes_builds_reproducible_across_stores() {
    let dockerfile = format!("{BASE}COPY a.txt /a.txt\nRUN echo built > /b.txt\nENV X=1\n");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let kiln = Kiln::new();
        let ctx = context(&kiln, &dockerfile, &[("a.txt", "a")]);
        let iid = kiln.dir.path().join("iid");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args([
                "--root",
                kiln.root().to_str().unwrap(),
                "build",
                "--progress",
                "quiet",
            ])
            .args(["--iidfile", iid.to_str().unwrap(), ctx.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ids.push(read(&iid));
        // Different wall-clock times for the two builds.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(ids[0], ids[1]);
}

#[test]
fn outputs_local_tar_and_docker_archive() {
    let kiln = Kiln::new();
    let dockerfile = format!("{BASE}RUN echo hello > /hello && rm /bin/cat\n");
    let ctx = context(&kiln, &dockerfile, &[]);
    let local = kiln.dir.path().join("local");
    build(
        &kiln,
        &ctx,
        &["-o", &format!("type=local,dest={}", local.display())],
    );
    assert_eq!(read(&local.join("hello")), "hello\n");
    assert!(local.join("bin/busybox").is_file());
    assert!(
        fs::symlink_metadata(local.join("bin/cat")).is_err(),
        "the deletion is applied"
    );

    let tar = kiln.dir.path().join("rootfs.tar");
    build(
        &kiln,
        &ctx,
        &["-o", &format!("type=tar,dest={}", tar.display())],
    );
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.lines().any(|l| l == "hello"), "{listing}");
    assert!(!listing.lines().any(|l| l == "bin/cat"));
}

#[test]
fn an_interrupted_build_stops_its_step_and_leaves_nothing_behind() {
    let kiln = Kiln::new();
    let dockerfile = format!("{BASE}RUN echo started && sleep 100\n");
    let ctx = context(&kiln, &dockerfile, &[]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "--root",
            kiln.root().to_str().unwrap(),
            "build",
            "--progress",
            "plain",
        ])
        .arg(&ctx)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    assert!(
        lines.any(|l| l.unwrap().ends_with(" started")),
        "the step never started"
    );
    let signalled = std::time::Instant::now();
    // SAFETY: kill(2) with a valid pid of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(signalled.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(status.code(), Some(143));
    let root = kiln.root();
    let mounts = read(Path::new("/proc/self/mountinfo"));
    assert!(
        !mounts.contains(root.to_str().unwrap()),
        "a mount was left behind"
    );
    let bundles = root.join("executor-v1/bundles");
    assert!(
        fs::read_dir(&bundles).map_or(true, |mut d| d.next().is_none()),
        "a bundle was left in {}",
        bundles.display()
    );
}

#[test]
fn bind_mounts_read_the_context_and_stages_and_writes_to_them_are_discarded() {
    let kiln = Kiln::new();
    let dockerfile = format!(
        "{BASE}FROM base AS tools\nRUN echo from-stage > /tool.txt\n\
         FROM base\n\
         RUN --mount=type=bind,target=/ctx cat /ctx/input.txt > /from-context\n\
         RUN --mount=type=bind,from=tools,source=/tool.txt,target=/t.txt cat /t.txt > /from-stage\n\
         RUN --mount=type=bind,target=/ctx,rw echo scribble > /ctx/input.txt && touch /ctx/new && cat /ctx/input.txt > /rw-saw\n"
    );
    let ctx = context(&kiln, &dockerfile, &[("input.txt", "context data\n")]);
    let out = build_local(&kiln, &ctx, &[]);
    assert_eq!(read(&out.join("from-context")), "context data\n");
    assert_eq!(read(&out.join("from-stage")), "from-stage\n");
    assert_eq!(read(&out.join("rw-saw")), "scribble\n");
    assert_eq!(read(&ctx.join("input.txt")), "context data\n");
    assert!(
        !ctx.join("new").exists(),
        "a read-write bind wrote to the context"
    );
    assert!(
        !out.join("ctx").exists(),
        "the mount point stayed in the image"
    );
}

/// Serves `body` over HTTP on 127.0.0.1 to every request, with a fixed Last-Modified.
fn serve(body: &'static [u8]) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = std::io::Read::read(&mut stream, &mut request);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = std::io::Write::write_all(&mut stream, head.as_bytes());
            let _ = std::io::Write::write_all(&mut stream, body);
        }
    });
    format!("http://{addr}")
}

#[test]
fn add_downloads_a_url_and_checks_its_checksum() {
    let body: &'static [u8] = b"downloaded payload\n";
    let url = serve(body);
    let sum = format!("sha256:{}", kiln_image::Digest::of(body).hex());
    let kiln = Kiln::new();
    let dockerfile = format!(
        "{BASE}ADD --checksum={sum} {url}/files/payload.txt /srv/\nRUN cat /srv/payload.txt > /copy\n"
    );
    let ctx = context(&kiln, &dockerfile, &[]);
    let out = kiln.dir.path().join("out");
    let first = build(
        &kiln,
        &ctx,
        &["-o", &format!("type=local,dest={}", out.display())],
    );
    assert!(ran_any(&first, "ADD"), "{:?}", first.ran);
    let file = out.join("srv/payload.txt");
    assert_eq!(fs::read(&file).unwrap(), body);
    let meta = fs::metadata(&file).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    assert_eq!(std::os::unix::fs::MetadataExt::mtime(&meta), 784_111_777);
    // Fetched again, the same bytes leave the following steps cached.
    let second = build(&kiln, &ctx, &[]);
    assert!(!ran_any(&second, "RUN cat"), "{:?}", second.ran);

    let wrong = format!("sha256:{}", "0".repeat(64));
    fs::write(
        ctx.join("Dockerfile"),
        format!("{BASE}ADD --checksum={wrong} {url}/payload.txt /srv/\n"),
    )
    .unwrap();
    let err = kiln.fails(&["build", "--progress", "quiet", ctx.to_str().unwrap()]);
    assert!(err.contains("checksum mismatch"), "{err}");
}

#[test]
fn the_copying_snapshotter_builds_what_overlay_builds() {
    let dockerfile = format!(
        "{BASE}RUN mkdir -p /data/old /keep && echo 1 > /data/old/f && echo k > /keep/k && echo x > /gone\n\
         RUN rm -rf /data /gone && mkdir /data && echo 2 > /data/new && chmod 700 /keep\n\
         COPY a.txt /keep/a.txt\n\
         FROM base AS other\nRUN echo other > /o\n\
         FROM base\nCOPY --from=other /o /o\nRUN --mount=type=bind,from=other,source=/o,target=/mnt/o,rw cat /mnt/o > /o2\n"
    );
    let mut trees = Vec::new();
    for snapshotter in ["overlay", "copy"] {
        let kiln = Kiln::new();
        let ctx = context(&kiln, &dockerfile, &[("a.txt", "a\n")]);
        let out = kiln.dir.path().join("out");
        build(
            &kiln,
            &ctx,
            &[
                "--snapshotter",
                snapshotter,
                "-o",
                &format!("type=local,dest={}", out.display()),
            ],
        );
        trees.push(describe(&out));
    }
    assert_eq!(trees[0], trees[1]);
    assert!(trees[1].iter().any(|(p, _)| p == "data/new"));
    assert!(
        !trees[1]
            .iter()
            .any(|(p, _)| p == "gone" || p.starts_with("data/old"))
    );
}

/// Every path under `dir` with its type, mode, owner and contents.
fn describe(dir: &Path) -> Vec<(String, String)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for path in walk_all(dir) {
        let meta = fs::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(dir).unwrap().display().to_string();
        let content = if meta.is_file() {
            String::from_utf8_lossy(&fs::read(&path).unwrap()).into_owned()
        } else if meta.file_type().is_symlink() {
            fs::read_link(&path).unwrap().display().to_string()
        } else {
            String::new()
        };
        out.push((
            rel,
            format!("{:o} {}:{} {content}", meta.mode(), meta.uid(), meta.gid()),
        ));
    }
    out.sort();
    out
}

fn walk_all(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let is_dir = fs::symlink_metadata(&path).unwrap().is_dir();
        out.push(path.clone());
        if is_dir {
            out.extend(walk_all(&path));
        }
    }
    out
}

#[test]
fn copy_parents_keeps_source_directories_and_exclude_leaves_files_out() {
    let kiln = Kiln::new();
    let dockerfile = format!(
        "{BASE}COPY --parents src/a/x.txt src/b/*.txt /out/\nCOPY --exclude=**/*.tmp --exclude=skip dir/ /ex/\n"
    );
    let ctx = context(
        &kiln,
        &dockerfile,
        &[
            ("src/a/x.txt", "x"),
            ("src/b/y.txt", "y"),
            ("src/b/z.md", "z"),
            ("dir/keep.txt", "k"),
            ("dir/junk.tmp", "j"),
            ("dir/skip/inner.txt", "s"),
            ("dir/sub/deep.tmp", "d"),
        ],
    );
    let out = build_local(&kiln, &ctx, &[]);
    assert_eq!(read(&out.join("out/src/a/x.txt")), "x");
    assert_eq!(read(&out.join("out/src/b/y.txt")), "y");
    assert!(!out.join("out/src/b/z.md").exists());
    assert!(!out.join("out/x.txt").exists());
    assert_eq!(read(&out.join("ex/keep.txt")), "k");
    assert!(!out.join("ex/junk.tmp").exists());
    assert!(!out.join("ex/skip").exists());
    assert!(!out.join("ex/sub/deep.tmp").exists());
}

/// `--root store` (and `KILN_ROOT=store`) from the directory the user stands in: the
/// RUN step's overlay and bundle paths under it must still be absolute.
#[test]
fn a_relative_root_is_under_the_working_directory() {
    let kiln = Kiln::new();
    let ctx = context(&kiln, &format!("{BASE}RUN echo made > /made\n"), &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .current_dir(kiln.dir.path())
        .args([
            "--root",
            "store",
            "build",
            "--progress",
            "plain",
            "-t",
            "rel",
        ])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build with a relative --root failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let images = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .current_dir(kiln.dir.path())
        .env("KILN_ROOT", "store")
        .args(["images"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&images.stdout).contains("rel"));
}
