//! Reliability end to end: `kiln store check` on a damaged store, builds killed at
//! random moments, builds side by side on one store, `kiln prune` beside builds, and
//! signals during a step. Images are compared by ID with reference builds on a store of
//! their own: with `SOURCE_DATE_EPOCH` set, an image ID is a function of the Dockerfile
//! and the context alone, so an equal ID means equal layers (diff IDs), config and
//! history.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::{Kiln, leftovers, require};

const BUSYBOX: &str = "/bin/busybox";

/// Every build here is reproducible.
const EPOCH: &str = "1700000000";

/// A busybox base built from scratch, as the other build tests make it.
const BASE: &str = "FROM scratch AS base\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";

/// A build context holding busybox, `files`, and each Dockerfile under its name.
fn context(dir: &Path, dockerfiles: &[(&str, String)], files: &[(&str, &str)]) -> PathBuf {
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: install Debian's busybox-static"
    );
    require("runc", "runc");
    let ctx = dir.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::copy(BUSYBOX, ctx.join("busybox")).unwrap();
    for (name, text) in dockerfiles {
        fs::write(ctx.join(name), text).unwrap();
    }
    for (name, text) in files {
        let path = ctx.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    ctx
}

/// `kiln build` of `ctx/<dockerfile>` with `extra` arguments, as a command to run or
/// spawn; the image ID goes to `iid`.
fn build_command(kiln: &Kiln, ctx: &Path, dockerfile: &str, iid: &Path, extra: &[&str]) -> Command {
    let mut cmd = kiln.command();
    cmd.env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["build", "--progress", "plain", "-f"])
        .arg(ctx.join(dockerfile))
        .arg("--iidfile")
        .arg(iid)
        .args(extra)
        .arg(ctx)
        .stdin(Stdio::null());
    cmd
}

/// Builds and returns the image ID; fails the test with kiln's output otherwise.
fn build(kiln: &Kiln, ctx: &Path, dockerfile: &str, extra: &[&str]) -> String {
    let iid = tempfile::NamedTempFile::new_in(kiln.dir.path()).unwrap();
    let out = build_command(kiln, ctx, dockerfile, iid.path(), extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kiln build -f {dockerfile} {extra:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::read_to_string(iid.path()).unwrap()
}

/// Runs `kiln store check` and fails the test unless it finds nothing wrong.
fn assert_store_is_clean(kiln: &Kiln, when: &str) {
    let out = kiln.run(&["store", "check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("no problems"),
        "{when}: kiln store check found problems:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_nothing_left(kiln: &Kiln, when: &str) {
    let left = leftovers(&kiln.root());
    assert!(left.is_empty(), "{when}: left behind: {left:#?}");
}

/// A small, seeded random generator (SplitMix64), so a failing run can be repeated.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A uniform fraction in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

/// Blobs, snapshots, records and images of every kind the loop's builds make: a
/// multi-stage build with RUN steps, COPY from the context and COPY --from a stage.
fn crash_dockerfile() -> String {
    format!(
        "{BASE}
FROM base AS tools
ARG V
RUN mkdir -p /out && for i in 1 2 3 4 5 6 7 8; do echo \"$V $i\" > /out/f$i; done
COPY data/ /data/
RUN cat /data/* /out/* > /tools.txt

FROM base
ARG V
COPY --from=tools /out /out
COPY --from=tools /tools.txt /tools.txt
COPY a.txt /a.txt
RUN cat /a.txt /out/* > /all.txt && echo \"$V\" >> /all.txt && rm /out/f1
"
    )
}

/// Which steps a killed build runs again rather than taking from the cache.
#[derive(Debug, Clone, Copy)]
enum Rerun {
    Nothing,
    Tools,
    Everything,
}

/// Arguments every build of the crash loop gets beyond the variant: a cache export
/// into an OCI layout under `dir`, so that kills land in it too.
fn crash_build_args(dir: &Path) -> Vec<String> {
    vec![
        "--cache-to".to_owned(),
        format!("type=local,dest={},mode=max", crash_cache(dir).display()),
    ]
}

/// Where the crash loop's builds export their cache.
fn crash_cache(dir: &Path) -> PathBuf {
    dir.join("exported-cache")
}

/// Kills `kiln build` (and now and then `kiln prune`) with SIGKILL at random moments,
/// and after every kill requires that the next build succeeds with the reference image,
/// that `kiln store check` finds nothing wrong, and that no mount, container or temp
/// entry is left. `KILN_CRASH_KILLS` sets how many kills must land in a running command
/// (default 50), `KILN_CRASH_SEED` repeats a run (`scripts/soak-crash` runs this for
/// longer).
#[test]
fn killed_builds_leave_a_store_the_next_build_uses() {
    const VARIANTS: u64 = 3;
    let kills = env_number("KILN_CRASH_KILLS").unwrap_or(50) as usize;
    let seed = env_number("KILN_CRASH_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    eprintln!("crash loop: {kills} kills, KILN_CRASH_SEED={seed}");
    let started = Instant::now();
    let kiln = Kiln::new();
    let ctx = context(
        kiln.dir.path(),
        &[("Dockerfile", crash_dockerfile())],
        &[("a.txt", "a\n"), ("data/one", "1\n"), ("data/two", "2\n")],
    );
    let extra = crash_build_args(kiln.dir.path());
    // A killed build reruns steps now and then, so that kills land in steps that run
    // rather than in cache hits: rarely all of them (the busybox base is slow to
    // store), often the middle stage's.
    let args = |v: u64, rerun: Rerun| -> Vec<String> {
        let mut args = vec!["--build-arg".to_owned(), format!("V={v}")];
        match rerun {
            Rerun::Nothing => {}
            Rerun::Tools => args.extend(["--no-cache-filter".to_owned(), "tools".to_owned()]),
            Rerun::Everything => args.push("--no-cache".to_owned()),
        }
        args.extend(extra.iter().cloned());
        args
    };
    // The reference images, and how long a build takes in each mode, which bounds
    // the random delay before the kill.
    let reference = Kiln::new();
    let expected: Vec<String> = (0..VARIANTS)
        .map(|v| {
            build(
                &reference,
                &ctx,
                "Dockerfile",
                &as_strs(&args(v, Rerun::Nothing)),
            )
        })
        .collect();
    let duration = |rerun: Rerun| {
        let timer = Instant::now();
        build(&reference, &ctx, "Dockerfile", &as_strs(&args(0, rerun)));
        timer.elapsed()
    };
    let typical = [Rerun::Nothing, Rerun::Tools, Rerun::Everything].map(duration);
    eprintln!("crash loop: builds take {typical:?} (cached, middle stage rerun, no cache)");

    let mut random = Random(seed);
    let (mut landed, mut attempts, mut prunes_killed) = (0, 0, 0);
    let iid = kiln.dir.path().join("killed-iid");
    let mut last_variant = 0;
    while landed < kills {
        attempts += 1;
        assert!(
            attempts <= kills * 4,
            "only {landed} of {attempts} kills landed in a running build"
        );
        let variant = random.below(VARIANTS);
        let rerun = match random.below(8) {
            0 => Rerun::Everything,
            1..=4 => Rerun::Tools,
            _ => Rerun::Nothing,
        };
        // One attempt in ten kills a collection instead (of everything, or of what
        // the cache does not need), which must lose nothing the next build relies on.
        let prune = match random.below(20) {
            0 => Some(vec!["prune", "--all"]),
            1 => Some(vec!["prune"]),
            _ => None,
        };
        let delay = typical[rerun as usize].mul_f64(random.unit());
        let what = match &prune {
            Some(prune) => format!(
                "attempt {attempts} (KILN_CRASH_SEED={seed}, kiln {prune:?}, kill after {delay:?})"
            ),
            None => format!(
                "attempt {attempts} (KILN_CRASH_SEED={seed}, V={variant}, rerun {rerun:?}, kill after {delay:?})"
            ),
        };
        let mut command = match &prune {
            Some(prune) => {
                let mut command = kiln.command();
                command.args(prune);
                command
            }
            None => build_command(
                &kiln,
                &ctx,
                "Dockerfile",
                &iid,
                &as_strs(&args(variant, rerun)),
            ),
        };
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            landed += 1;
            prunes_killed += usize::from(prune.is_some());
        }
        child.wait().unwrap();

        // Tagged, so that a collection keeps the image's own layers.
        let tag = format!("crash:{variant}");
        let mut recovery = args(variant, Rerun::Nothing);
        recovery.extend(["-t".to_owned(), tag]);
        let id = build(&kiln, &ctx, "Dockerfile", &as_strs(&recovery));
        assert_eq!(id, expected[variant as usize], "{what}: wrong image");
        assert_nothing_left(&kiln, &what);
        assert_store_is_clean(&kiln, &what);
        last_variant = variant;
    }
    // The exported cache survived the kills: an empty store builds the last image
    // from it.
    let fresh = Kiln::new();
    let mut from_cache = args(last_variant, Rerun::Nothing);
    from_cache.extend([
        "--cache-from".to_owned(),
        format!("type=local,src={}", crash_cache(kiln.dir.path()).display()),
    ]);
    let id = build(&fresh, &ctx, "Dockerfile", &as_strs(&from_cache));
    assert_eq!(
        id, expected[last_variant as usize],
        "built from the exported cache"
    );
    eprintln!(
        "crash loop: {landed} kills ({prunes_killed} of them in kiln prune) survived in {attempts} attempts, {:?} in all (KILN_CRASH_SEED={seed})",
        started.elapsed()
    );
}

/// Four builds of overlapping Dockerfiles start at once on one store. All must give
/// the reference images, and the step they share (which appends a line to a cache
/// mount, a host directory every build sees) must run once, not four times.
#[test]
fn concurrent_builds_share_a_store_and_run_a_shared_step_once() {
    const BUILDS: usize = 4;
    let shared = "RUN --mount=type=cache,id=runs,target=/runs echo ran >> /runs/shared && sleep 1 && echo shared > /shared\n";
    let dockerfiles: Vec<(String, String)> = (0..BUILDS)
        .map(|n| {
            (
                format!("Dockerfile.{n}"),
                format!("{BASE}{shared}COPY f{n}.txt /f.txt\nRUN echo {n} >> /f.txt\n"),
            )
        })
        .collect();
    let dockerfile_refs: Vec<(&str, String)> = dockerfiles
        .iter()
        .map(|(name, text)| (name.as_str(), text.clone()))
        .collect();
    let files: Vec<(String, String)> = (0..BUILDS)
        .map(|n| (format!("f{n}.txt"), format!("file {n}\n")))
        .collect();
    let file_refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(name, text)| (name.as_str(), text.as_str()))
        .collect();
    let kiln = Arc::new(Kiln::new());
    let ctx = context(kiln.dir.path(), &dockerfile_refs, &file_refs);

    let reference = Kiln::new();
    let expected: Vec<String> = (0..BUILDS)
        .map(|n| build(&reference, &ctx, &format!("Dockerfile.{n}"), &[]))
        .collect();

    let start = Arc::new(Barrier::new(BUILDS));
    let builds: Vec<_> = (0..BUILDS)
        .map(|n| {
            let (kiln, ctx, start) = (Arc::clone(&kiln), ctx.clone(), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                let tag = format!("conc:{n}");
                build(&kiln, &ctx, &format!("Dockerfile.{n}"), &["-t", &tag])
            })
        })
        .collect();
    let ids: Vec<String> = builds.into_iter().map(|b| b.join().unwrap()).collect();
    assert_eq!(ids, expected);

    let runs = cache_mount_file(&kiln.root(), "runs", "shared");
    assert_eq!(
        runs.lines().count(),
        1,
        "the shared step ran {} times",
        runs.lines().count()
    );
    for n in 0..BUILDS {
        kiln.ok(&["inspect", &format!("conc:{n}")]);
    }
    assert_store_is_clean(&kiln, "after the concurrent builds");
    assert_nothing_left(&kiln, "after the concurrent builds");
}

/// The file `name` in the cache mount with id `id` (kept under `cachemounts-v1/`).
fn cache_mount_file(root: &Path, id: &str, name: &str) -> String {
    let hex = kiln_image::Digest::of(id.as_bytes()).hex().to_owned();
    let path = root.join("cachemounts-v1").join(hex).join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `kiln prune` (with and without `--all`) runs over and over while two builders build
/// one Dockerfile after another on the same store. Every build must give its reference
/// image; each builder waits for a prune to complete after each of its builds, so
/// prunes and builds interleave.
#[test]
fn prune_beside_builds_never_takes_what_they_use() {
    const ROUNDS: usize = 3;
    let dockerfiles: Vec<(&str, String)> = vec![
        (
            "Dockerfile.x",
            format!("{BASE}COPY x.txt /x.txt\nRUN cat /x.txt > /x2 && echo x >> /x2\n"),
        ),
        (
            "Dockerfile.y",
            format!(
                "{BASE}FROM base AS part\nRUN echo part > /part\nFROM base\nCOPY --from=part /part /part\nCOPY y.txt /y.txt\nRUN cat /part /y.txt > /y2\n"
            ),
        ),
    ];
    let kiln = Arc::new(Kiln::new());
    let ctx = context(
        kiln.dir.path(),
        &dockerfiles,
        &[("x.txt", "x\n"), ("y.txt", "y\n")],
    );
    let reference = Kiln::new();
    let expected: Vec<String> = dockerfiles
        .iter()
        .map(|(name, _)| build(&reference, &ctx, name, &[]))
        .collect();

    let prunes = Arc::new(AtomicUsize::new(0));
    let builders_done = Arc::new(AtomicUsize::new(0));
    let builders: Vec<_> = dockerfiles
        .iter()
        .enumerate()
        .map(|(n, (name, _))| {
            let (kiln, ctx, name) = (Arc::clone(&kiln), ctx.clone(), name.to_string());
            let (prunes, done) = (Arc::clone(&prunes), Arc::clone(&builders_done));
            let expected = expected[n].clone();
            thread::spawn(move || {
                for round in 0..ROUNDS {
                    let tag = format!("pruned:{n}");
                    let id = build(&kiln, &ctx, &name, &["-t", &tag]);
                    assert_eq!(id, expected, "{name}, round {round}");
                    let seen = prunes.load(Ordering::SeqCst);
                    while prunes.load(Ordering::SeqCst) == seen {
                        thread::sleep(Duration::from_millis(20));
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    let mut all = false;
    while builders_done.load(Ordering::SeqCst) < builders.len()
        && !builders.iter().all(|b| b.is_finished())
    {
        let mut args = vec!["prune"];
        if all {
            args.push("--all");
        }
        kiln.ok(&args);
        prunes.fetch_add(1, Ordering::SeqCst);
        all = !all;
    }
    for b in builders {
        b.join().unwrap();
    }
    let pruned = prunes.load(Ordering::SeqCst);
    assert!(pruned >= ROUNDS, "only {pruned} prunes ran");
    eprintln!(
        "prune beside builds: {} builds, {pruned} prunes",
        ROUNDS * dockerfiles.len()
    );
    for (n, (name, _)) in dockerfiles.iter().enumerate() {
        assert_eq!(build(&kiln, &ctx, name, &[]), expected[n]);
    }
    assert_store_is_clean(&kiln, "after prune beside builds");
}

/// SIGINT and SIGTERM during a RUN: the build stops within two seconds with the
/// shell's exit code for the signal, and leaves no mount, container or temp entry.
#[test]
fn a_signal_during_a_step_stops_it_and_cleans_up_within_two_seconds() {
    for (signal, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let kiln = Kiln::new();
        let ctx = context(
            kiln.dir.path(),
            &[(
                "Dockerfile",
                format!("{BASE}RUN echo started && sleep 100\n"),
            )],
            &[],
        );
        let iid = kiln.dir.path().join("iid");
        let mut child = build_command(&kiln, &ctx, "Dockerfile", &iid, &[])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_line(&mut child, " started");
        let signalled = Instant::now();
        // SAFETY: kill(2) with the pid of our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        let took = signalled.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "signal {signal}: took {took:?}"
        );
        assert_eq!(status.code(), Some(code), "signal {signal}");
        assert_nothing_left(&kiln, &format!("after signal {signal}"));
        assert_store_is_clean(&kiln, &format!("after signal {signal}"));
    }
}

/// Reads the child's standard error until a line ends with `suffix`.
fn wait_for_line(child: &mut Child, suffix: &str) {
    use std::io::BufRead as _;
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let found = lines.any(|l| l.unwrap().ends_with(suffix));
    assert!(found, "the build never printed a line ending in {suffix:?}");
    // Keep draining so the child never blocks on a full pipe.
    thread::spawn(move || for _ in lines {});
}

/// A store damaged in three ways (a corrupt blob, a snapshot removed from under its
/// child, a cache record whose blob is gone): `kiln store check` names each and exits
/// non-zero; `--repair` fixes them; the store is then clean, and builds succeed with
/// the images they gave before.
#[test]
fn store_check_finds_damage_and_repair_lets_builds_succeed() {
    let kiln = Kiln::new();
    let tagged = format!("{BASE}COPY a.txt /a.txt\n");
    let local = format!(
        "{BASE}RUN echo one > /one\nRUN echo two > /two\nCOPY b.txt /b.txt\nRUN cat /one /two /b.txt > /all\n"
    );
    let ctx = context(
        kiln.dir.path(),
        &[("Dockerfile.tagged", tagged), ("Dockerfile.local", local)],
        &[("a.txt", "a\n"), ("b.txt", "b\n")],
    );
    let tagged_id = build(&kiln, &ctx, "Dockerfile.tagged", &["-t", "keep:1"]);
    let root = kiln.root();
    let blobs_before = dir_names(&root.join("content-v1/blobs/sha256"));
    let snaps_before = dir_names(&root.join("snapshots-v1/overlay"));
    let out1 = kiln.dir.path().join("out1");
    let local_out = format!("type=local,dest={}", out1.display());
    build(&kiln, &ctx, "Dockerfile.local", &["-o", &local_out]);

    // Layer blobs of the second build only: no image refers to them.
    let new_blobs: Vec<String> = dir_names(&root.join("content-v1/blobs/sha256"))
        .into_iter()
        .filter(|b| !blobs_before.contains(b))
        .collect();
    assert!(new_blobs.len() >= 3, "{new_blobs:?}");
    let corrupt = &new_blobs[0];
    let deleted = &new_blobs[1];
    fs::write(
        root.join("content-v1/blobs/sha256").join(corrupt),
        b"garbage",
    )
    .unwrap();
    fs::remove_file(root.join("content-v1/blobs/sha256").join(deleted)).unwrap();
    // A snapshot of the second build that another one stacks on.
    let new_snaps: Vec<String> = dir_names(&root.join("snapshots-v1/overlay"))
        .into_iter()
        .filter(|s| !snaps_before.contains(s))
        .collect();
    let parent_of = |snap: &String| -> Option<String> {
        let meta = fs::read_to_string(
            root.join("snapshots-v1/overlay")
                .join(snap)
                .join("meta.json"),
        )
        .ok()?;
        let meta: serde_json::Value = serde_json::from_str(&meta).ok()?;
        Some(
            meta["parent"]
                .as_str()?
                .trim_start_matches("sha256:")
                .to_owned(),
        )
    };
    let removed = new_snaps
        .iter()
        .find(|s| new_snaps.iter().any(|c| parent_of(c).as_ref() == Some(*s)))
        .expect("a new snapshot with a child")
        .clone();
    fs::remove_dir_all(root.join("snapshots-v1/overlay").join(&removed)).unwrap();

    let out = kiln.run(&["store", "check"]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !out.status.success(),
        "check passed a damaged store:\n{report}"
    );
    assert!(
        report.contains(&format!("blob sha256:{corrupt} is corrupt")),
        "{report}"
    );
    assert!(
        report.contains(&format!("ancestor sha256:{removed} is missing")),
        "{report}"
    );
    assert!(
        report.lines().any(|l| l.contains("cache record")
            && l.contains("refers to missing blobs")
            && l.contains(deleted.as_str())),
        "{report}"
    );
    assert!(!report.contains("image keep"), "{report}");

    let out = kiln.run(&["store", "check", "--repair"]);
    let repaired = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "repair failed:\n{repaired}");
    assert!(repaired.contains("all repaired"), "{repaired}");
    assert!(!repaired.contains("problem:"), "{repaired}");
    assert_store_is_clean(&kiln, "after the repair");

    let out2 = kiln.dir.path().join("out2");
    build(
        &kiln,
        &ctx,
        "Dockerfile.local",
        &["-o", &format!("type=local,dest={}", out2.display())],
    );
    assert_eq!(tree(&out1), tree(&out2));
    assert_eq!(build(&kiln, &ctx, "Dockerfile.tagged", &[]), tagged_id);
    assert_store_is_clean(&kiln, "after building again");
}

/// A damaged tagged image is reported by `--repair`, which exits non-zero and keeps it.
#[test]
fn store_repair_reports_a_broken_tagged_image_and_keeps_it() {
    let kiln = Kiln::new();
    let ctx = context(
        kiln.dir.path(),
        &[("Dockerfile", format!("{BASE}COPY a.txt /a.txt\n"))],
        &[("a.txt", "a\n")],
    );
    build(&kiln, &ctx, "Dockerfile", &["-t", "hurt:1"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&kiln.ok(&["inspect", "hurt:1"])).unwrap();
    let layer = find_layer_digest(&inspect).expect("a layer digest in kiln inspect");
    let hex = layer.trim_start_matches("sha256:");
    // A large layer is kept as its snapshot (a record in `kept/`), a small one as a file.
    let content = kiln.root().join("content-v1");
    match fs::remove_file(content.join("blobs/sha256").join(hex)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::remove_file(content.join("kept").join(hex)).unwrap()
        }
        removed => removed.unwrap(),
    }
    let out = kiln.run(&["store", "check", "--repair"]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{report}");
    assert!(
        report.contains("problem: image docker.io/library/hurt:1")
            && report.contains(&format!("layer {layer} is missing")),
        "{report}"
    );
    assert!(kiln.ok(&["images"]).contains("hurt"));
}

/// The first `"layers": [{"digest": …}]` entry found anywhere in `value`.
fn find_layer_digest(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Array(layers)) = map.get("layers")
                && let Some(d) = layers.first().and_then(|l| l.get("digest")?.as_str())
            {
                return Some(d.to_owned());
            }
            map.values().find_map(find_layer_digest)
        }
        serde_json::Value::Array(items) => items.iter().find_map(find_layer_digest),
        _ => None,
    }
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every path under `dir` with its file contents (directories and links by kind).
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.unwrap();
        let rel = entry
            .path()
            .strip_prefix(dir)
            .unwrap()
            .display()
            .to_string();
        let content = if entry.file_type().is_file() {
            fs::read(entry.path()).unwrap()
        } else if entry.file_type().is_symlink() {
            fs::read_link(entry.path())
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else {
            b"dir".to_vec()
        };
        out.push((rel, content));
    }
    out
}
