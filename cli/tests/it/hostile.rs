//! Hostile input end to end: build contexts, stages, archives and layers that try to
//! reach files outside where they belong, malformed image archives, and secrets that
//! must not be kept anywhere.
//!
//! Every test has a sentinel file outside the context and the kiln root, holding a
//! string made for the test. It must stay as it was, and its string must never show up
//! in anything kiln wrote (layers decompressed) or in a build's output.

use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};

use kiln_image::Digest;
use serde_json::json;

use crate::support::{BUSYBOX_BASE, Kiln, busybox_context, busybox_rootfs, files_containing};

/// A string no other test or file has.
fn unique(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    getrandom(&mut bytes);
    format!("{prefix}-{}", hex(&bytes))
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("read /dev/urandom");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file outside the context and the root that nothing may read or change.
struct Sentinel {
    dir: PathBuf,
    path: PathBuf,
    value: String,
    meta: fs::Metadata,
}

impl Sentinel {
    fn new(kiln: &Kiln) -> Sentinel {
        let dir = kiln.dir.path().join("outside");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sentinel");
        let value = unique("sentinel");
        fs::write(&path, &value).unwrap();
        let meta = fs::symlink_metadata(&path).unwrap();
        Sentinel {
            dir,
            path,
            value,
            meta,
        }
    }

    fn abs(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// The sentinel is unchanged, alone in its directory, not linked to, and its string
    /// is in none of kiln's files nor in `also` (outputs, logs).
    fn check(&self, kiln: &Kiln, also: &[&str]) {
        let names: Vec<_> = fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            ["sentinel"],
            "something was written next to the sentinel"
        );
        assert_eq!(fs::read_to_string(&self.path).unwrap(), self.value);
        let now = fs::symlink_metadata(&self.path).unwrap();
        assert_eq!(now.nlink(), 1, "the sentinel was hard-linked");
        assert_eq!(
            (
                now.ino(),
                now.mode(),
                now.uid(),
                now.mtime(),
                now.mtime_nsec()
            ),
            (
                self.meta.ino(),
                self.meta.mode(),
                self.meta.uid(),
                self.meta.mtime(),
                self.meta.mtime_nsec()
            ),
            "the sentinel's metadata changed"
        );
        let found = files_containing(&kiln.root(), self.value.as_bytes());
        assert!(found.is_empty(), "the sentinel was read into {found:?}");
        for text in also {
            assert!(!text.contains(&self.value), "the sentinel was read: {text}");
        }
    }
}

/// Runs `kiln build --progress plain` with `args` before the context; returns whether
/// it succeeded and its standard error.
fn build(kiln: &Kiln, ctx: &Path, args: &[&str]) -> (bool, String) {
    let mut all = vec!["build", "--progress", "plain"];
    all.extend_from_slice(args);
    all.push(ctx.to_str().unwrap());
    let out = kiln.run(&all);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn build_ok(kiln: &Kiln, ctx: &Path, args: &[&str]) -> String {
    let (ok, stderr) = build(kiln, ctx, args);
    assert!(ok, "build failed:\n{stderr}");
    stderr
}

fn build_fails(kiln: &Kiln, ctx: &Path, args: &[&str]) -> String {
    let (ok, stderr) = build(kiln, ctx, args);
    assert!(!ok, "build succeeded:\n{stderr}");
    stderr
}

fn local(kiln: &Kiln, name: &str) -> (PathBuf, String) {
    let dir = kiln.dir.path().join(name);
    let spec = format!("type=local,dest={}", dir.display());
    (dir, spec)
}

#[test]
fn copy_sources_never_leave_the_build_context() {
    let kiln = Kiln::new();
    let sentinel = Sentinel::new(&kiln);
    let ctx = busybox_context(&kiln.dir.path().join("ctx"), BUSYBOX_BASE);
    let outside_rel = "../outside/sentinel";
    symlink("../outside", ctx.join("link-rel")).unwrap();
    symlink(&sentinel.dir, ctx.join("link-abs")).unwrap();
    symlink(sentinel.abs(), ctx.join("file-link")).unwrap();

    // Sources that name the outside file directly, or through a link: docker build
    // resolves them inside the context, where there is no such file.
    let cases = [
        format!("COPY {outside_rel} /x"),
        format!("ADD {outside_rel} /x"),
        format!("COPY ../../../../../../../..{} /x", sentinel.abs()),
        format!("COPY {} /x", sentinel.abs()),
        "COPY link-rel/sentinel /x".to_owned(),
        "COPY link-rel/ /x/".to_owned(),
        "COPY link-abs/sentinel /x".to_owned(),
        "COPY file-link /x".to_owned(),
        "COPY --parents link-abs/sentinel /x/".to_owned(),
        "COPY link-* /x/".to_owned(),
    ];
    let mut logs = Vec::new();
    for case in &cases {
        fs::write(ctx.join("Dockerfile"), format!("{BUSYBOX_BASE}{case}\n")).unwrap();
        let (ok, stderr) = build(&kiln, &ctx, &[]);
        if case == "COPY link-* /x/" {
            // The links themselves are copied, as links.
            assert!(ok, "{case}:\n{stderr}");
        } else {
            assert!(!ok, "{case} succeeded:\n{stderr}");
            assert!(stderr.contains("not found"), "{case}:\n{stderr}");
        }
        logs.push(stderr);
    }

    // Inside the context, the same links resolve to what the context holds there, and
    // links inside a copied directory are copied as links.
    fs::create_dir(ctx.join("outside")).unwrap();
    fs::write(ctx.join("outside/sentinel"), "decoy in the context").unwrap();
    fs::create_dir(ctx.join("dir")).unwrap();
    symlink(sentinel.abs(), ctx.join("dir/abs")).unwrap();
    symlink("../../outside/sentinel", ctx.join("dir/rel")).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "{BUSYBOX_BASE}COPY link-rel/sentinel /via-rel\nCOPY dir/ /dir/\n\
             COPY link-* /links/\n"
        ),
    )
    .unwrap();
    let (out, spec) = local(&kiln, "out");
    logs.push(build_ok(&kiln, &ctx, &["-o", &spec, "-t", "copied"]));
    assert_eq!(
        fs::read_to_string(out.join("via-rel")).unwrap(),
        "decoy in the context"
    );
    assert_eq!(fs::read_link(out.join("dir/abs")).unwrap(), sentinel.path);
    assert_eq!(
        fs::read_link(out.join("dir/rel")).unwrap(),
        Path::new("../../outside/sentinel")
    );
    assert_eq!(
        fs::read_link(out.join("links/link-rel")).unwrap(),
        Path::new("../outside")
    );
    let exported = files_containing(&out, sentinel.value.as_bytes());
    assert!(exported.is_empty(), "{exported:?}");
    let logs: Vec<&str> = logs.iter().map(String::as_str).collect();
    sentinel.check(&kiln, &logs);
}

#[test]
fn copy_from_a_stage_resolves_its_links_inside_the_stage() {
    let kiln = Kiln::new();
    let sentinel = Sentinel::new(&kiln);
    let climb = "../".repeat(12);
    let stage = format!(
        "{BUSYBOX_BASE}FROM base AS stage\n\
         RUN mkdir /s && ln -s {abs} /s/abs && ln -s {climb}{rel} /s/rel && ln -s / /s/root \
         && ln -s {dir} /s/dir && echo inside > /s/file\n",
        abs = sentinel.abs(),
        rel = sentinel.abs().trim_start_matches('/'),
        dir = sentinel.dir.display(),
    );
    let ctx = busybox_context(&kiln.dir.path().join("ctx"), &stage);
    let mut logs = Vec::new();
    for source in [
        "/s/abs",
        "/s/rel",
        "/s/dir/sentinel",
        "/s/root/../../outside/sentinel",
    ] {
        fs::write(
            ctx.join("Dockerfile"),
            format!("{stage}FROM base\nCOPY --from=stage {source} /x\n"),
        )
        .unwrap();
        let stderr = build_fails(&kiln, &ctx, &[]);
        assert!(stderr.contains("not found"), "{source}:\n{stderr}");
        logs.push(stderr);
    }
    fs::write(
        ctx.join("Dockerfile"),
        format!("{stage}FROM base\nCOPY --from=stage /s/ /copied/\n"),
    )
    .unwrap();
    let (out, spec) = local(&kiln, "out");
    logs.push(build_ok(&kiln, &ctx, &["-o", &spec]));
    assert_eq!(
        fs::read_link(out.join("copied/abs")).unwrap(),
        sentinel.path
    );
    assert_eq!(
        fs::read_to_string(out.join("copied/file")).unwrap(),
        "inside\n"
    );
    let logs: Vec<&str> = logs.iter().map(String::as_str).collect();
    sentinel.check(&kiln, &logs);
}

/// A tar written header by header, so that it may hold what tar libraries refuse to
/// write (`..`, absolute names).
#[derive(Default)]
struct RawTar(Vec<u8>);

impl RawTar {
    fn entry(mut self, path: &str, kind: u8, link: &str, data: &[u8]) -> RawTar {
        let mut h = [0u8; 512];
        assert!(path.len() <= 100 && link.len() <= 100);
        h[..path.len()].copy_from_slice(path.as_bytes());
        h[100..108].copy_from_slice(if kind == b'5' {
            b"0000755\0"
        } else {
            b"0000644\0"
        });
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[136..148].copy_from_slice(b"14000000000\0");
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.0.extend_from_slice(&h);
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
        self
    }

    fn file(self, path: &str, data: &[u8]) -> RawTar {
        self.entry(path, b'0', "", data)
    }

    fn dir(self, path: &str) -> RawTar {
        self.entry(path, b'5', "", b"")
    }

    fn symlink(self, path: &str, target: &str) -> RawTar {
        self.entry(path, b'2', target, b"")
    }

    fn hard_link(self, path: &str, target: &str) -> RawTar {
        self.entry(path, b'1', target, b"")
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0; 1024]);
        self.0
    }
}

#[test]
fn add_refuses_archives_that_reach_outside_and_writes_nothing_there() {
    let kiln = Kiln::new();
    let sentinel = Sentinel::new(&kiln);
    let ctx = busybox_context(&kiln.dir.path().join("ctx"), BUSYBOX_BASE);
    let outside = sentinel.dir.to_str().unwrap().to_owned();
    let climb = format!("{}{}", "../".repeat(12), outside.trim_start_matches('/'));
    // (archive, the entry the error must name; None: a harmless archive)
    let cases: Vec<(Vec<u8>, Option<&str>)> = vec![
        (
            RawTar::default().file("../escape", b"x").finish(),
            Some("../escape"),
        ),
        (
            RawTar::default().file("a/../../escape", b"x").finish(),
            Some("a/../../escape"),
        ),
        (
            RawTar::default()
                .file(&format!("{outside}/escape"), b"x")
                .finish(),
            Some("/escape"),
        ),
        (
            RawTar::default()
                .symlink("out", &outside)
                .file("out/escape", b"x")
                .finish(),
            Some("out/escape"),
        ),
        (
            RawTar::default()
                .symlink("up", &climb)
                .file("up/escape", b"x")
                .finish(),
            Some("up/escape"),
        ),
        (
            RawTar::default()
                .symlink("s", sentinel.abs())
                .dir("s/")
                .file("s/escape", b"x")
                .finish(),
            // The directory replaces the link, and the file lands in it.
            None,
        ),
        (
            RawTar::default()
                .hard_link("h", "../outside/sentinel")
                .finish(),
            Some("../outside/sentinel"),
        ),
        (
            RawTar::default().hard_link("h", sentinel.abs()).finish(),
            Some(sentinel.abs()),
        ),
        (
            RawTar::default()
                .symlink("l", &outside)
                .hard_link("h", "l/sentinel")
                .finish(),
            Some("\"h\": path goes through symlink \"l\""),
        ),
        (
            RawTar::default()
                .symlink("l", &outside)
                .file("l/.wh.sentinel", b"")
                .finish(),
            Some("l/.wh.sentinel"),
        ),
        (
            RawTar::default().file(".wh...", b"").finish(),
            Some(".wh..."),
        ),
    ];
    let mut logs = Vec::new();
    for (i, (archive, entry)) in cases.iter().enumerate() {
        let name = format!("hostile-{i}.tar");
        fs::write(ctx.join(&name), archive).unwrap();
        fs::write(
            ctx.join("Dockerfile"),
            format!("{BUSYBOX_BASE}ADD {name} /dest/\n"),
        )
        .unwrap();
        let (ok, stderr) = build(&kiln, &ctx, &[]);
        match entry {
            Some(entry) => {
                assert!(!ok, "case {i} was accepted:\n{stderr}");
                assert!(
                    stderr.contains(&name),
                    "case {i} does not name the archive:\n{stderr}"
                );
                assert!(
                    stderr.contains(entry),
                    "case {i} does not name {entry:?}:\n{stderr}"
                );
            }
            None => assert!(ok, "case {i}:\n{stderr}"),
        }
        logs.push(stderr);
    }
    let logs: Vec<&str> = logs.iter().map(String::as_str).collect();
    sentinel.check(&kiln, &logs);
}

/// The parts of a one-image OCI archive; those left `None` are made to agree with the
/// layers.
#[derive(Default)]
struct OciArchive {
    layers: Vec<Vec<u8>>,
    config: Option<Vec<u8>>,
    manifest: Option<Vec<u8>>,
    index: Option<Vec<u8>>,
}

impl OciArchive {
    fn config(&self) -> Vec<u8> {
        self.config.clone().unwrap_or_else(|| {
            let diff_ids: Vec<String> = self
                .layers
                .iter()
                .map(|l| Digest::of(l).to_string())
                .collect();
            serde_json::to_vec(&json!({
                "architecture": kiln_image::Platform::host().architecture(),
                "os": "linux",
                "config": {"Cmd": ["/bin/sh"]},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
                "history": vec![json!({"created_by": "test layer"}); self.layers.len()],
            }))
            .unwrap()
        })
    }

    fn manifest(&self) -> Vec<u8> {
        self.manifest.clone().unwrap_or_else(|| {
            let config = self.config();
            let layers: Vec<_> = self
                .layers
                .iter()
                .map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", l))
                .collect();
            serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
                "layers": layers,
            }))
            .unwrap()
        })
    }

    fn tar(&self, name: &str) -> Vec<u8> {
        let manifest = self.manifest();
        let index = self.index.clone().unwrap_or_else(|| {
            let mut entry = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
            entry["annotations"] = json!({ "io.containerd.image.name": name });
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [entry]})).unwrap()
        });
        let mut tar = RawTar::default()
            .file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
            .file("index.json", &index)
            .dir("blobs/")
            .dir("blobs/sha256/");
        for blob in [self.config(), manifest].iter().chain(&self.layers) {
            tar = tar.file(&format!("blobs/sha256/{}", Digest::of(blob).hex()), blob);
        }
        tar.finish()
    }
}

fn descriptor(media_type: &str, blob: &[u8]) -> serde_json::Value {
    json!({"mediaType": media_type, "digest": Digest::of(blob).to_string(), "size": blob.len()})
}

/// `kiln load` of `archive`, which must fail; returns its standard error, after checking
/// that no image was loaded.
fn load_fails(kiln: &Kiln, archive: &[u8], what: &str) -> String {
    let path = kiln.dir.path().join("archive.tar");
    fs::write(&path, archive).unwrap();
    let stderr = kiln.fails(&["load", "-i", path.to_str().unwrap()]);
    assert_eq!(
        kiln.ok(&["images", "-q"]),
        "",
        "{what}: an image was loaded"
    );
    stderr
}

#[test]
fn load_refuses_archives_whose_names_reach_outside() {
    let kiln = Kiln::new();
    let sentinel = Sentinel::new(&kiln);
    let layer = RawTar::default().file("f", b"data").finish();
    let config = OciArchive {
        layers: vec![layer.clone()],
        ..OciArchive::default()
    }
    .config();
    let docker = |config_name: &str, layer_name: &str, extra: RawTar| {
        let manifest = serde_json::to_vec(&json!([{
            "Config": config_name, "RepoTags": ["hostile:1"], "Layers": [layer_name],
        }]))
        .unwrap();
        extra
            .file("config.json", &config)
            .file("layer.tar", &layer)
            .file("manifest.json", &manifest)
            .finish()
    };
    let climb = format!(
        "{}{}",
        "../".repeat(12),
        sentinel.abs().trim_start_matches('/')
    );
    let cases: Vec<(Vec<u8>, String)> = vec![
        (
            docker("../outside/sentinel", "layer.tar", RawTar::default()),
            "../outside/sentinel".into(),
        ),
        (
            docker("config.json", &climb, RawTar::default()),
            climb.clone(),
        ),
        (
            docker("config.json", sentinel.abs(), RawTar::default()),
            sentinel.abs().into(),
        ),
        (
            docker(
                "config.json",
                "link.tar",
                RawTar::default().symlink("link.tar", &climb),
            ),
            climb.clone(),
        ),
        (
            docker(
                "config.json",
                "link.tar",
                RawTar::default().hard_link("link.tar", sentinel.abs()),
            ),
            sentinel.abs().into(),
        ),
        (
            docker(
                "config.json",
                "layer.tar",
                RawTar::default().file("../escape", b"x"),
            ),
            "../escape".into(),
        ),
        (
            docker(
                "config.json",
                "layer.tar",
                RawTar::default().file(&format!("{}/escape", sentinel.dir.display()), b"x"),
            ),
            "/escape".into(),
        ),
    ];
    let mut logs = Vec::new();
    for (i, (archive, named)) in cases.iter().enumerate() {
        let stderr = load_fails(&kiln, archive, &format!("case {i}"));
        assert!(
            stderr.contains("outside the archive") && stderr.contains(named.as_str()),
            "case {i}:\n{stderr}"
        );
        logs.push(stderr);
    }
    let siblings: Vec<_> = fs::read_dir(kiln.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!siblings.iter().any(|n| n == "escape"), "{siblings:?}");
    let logs: Vec<&str> = logs.iter().map(String::as_str).collect();
    sentinel.check(&kiln, &logs);
}

#[test]
fn load_names_the_malformed_document() {
    let kiln = Kiln::new();
    let layer = RawTar::default().file("f", b"data").finish();
    let good = OciArchive {
        layers: vec![layer.clone()],
        ..OciArchive::default()
    };
    let bad_manifest = b"{\"schemaVersion\": 2, \"config\": 7}".to_vec();
    let bad_config = b"{\"rootfs\": \"not an object\"}".to_vec();
    let no_rootfs = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux"})).unwrap();
    let cases: Vec<(Vec<u8>, String)> = vec![
        (
            OciArchive {
                index: Some(b"{\"manifests\": [".to_vec()),
                ..OciArchive::default()
            }
            .tar("x:1"),
            "index.json".into(),
        ),
        (
            OciArchive {
                layers: vec![layer.clone()],
                manifest: Some(bad_manifest.clone()),
                ..OciArchive::default()
            }
            .tar("x:1"),
            format!("manifest {}", Digest::of(&bad_manifest)),
        ),
        (
            OciArchive {
                layers: vec![layer.clone()],
                config: Some(bad_config.clone()),
                ..OciArchive::default()
            }
            .tar("x:1"),
            format!("config {}", Digest::of(&bad_config)),
        ),
        (
            OciArchive {
                layers: vec![layer.clone()],
                config: Some(no_rootfs.clone()),
                ..OciArchive::default()
            }
            .tar("x:1"),
            format!("config {}", Digest::of(&no_rootfs)),
        ),
        (
            RawTar::default()
                .file("manifest.json", b"[{\"Config\": 1}]")
                .finish(),
            "manifest.json".into(),
        ),
        (
            RawTar::default()
                .file("c.json", b"not json")
                .file("l.tar", &layer)
                .file(
                    "manifest.json",
                    br#"[{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l.tar"]}]"#,
                )
                .finish(),
            "c.json".into(),
        ),
        (
            RawTar::default()
                .file("c.json", &good.config())
                .file("l.tar", &layer)
                .file(
                    "manifest.json",
                    br#"[{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l.tar", "l.tar"]}]"#,
                )
                .finish(),
            "2 layers listed but the config has 1 diff IDs".into(),
        ),
    ];
    for (i, (archive, named)) in cases.iter().enumerate() {
        let stderr = load_fails(&kiln, archive, &format!("case {i}"));
        assert!(
            stderr.contains(named.as_str()),
            "case {i} should name {named:?}:\n{stderr}"
        );
    }
    // The well-formed archive these were made from loads.
    let path = kiln.dir.path().join("good.tar");
    fs::write(&path, good.tar("good:1")).unwrap();
    kiln.ok(&["load", "-i", path.to_str().unwrap()]);
}

#[test]
fn hostile_whiteouts_and_links_in_a_loaded_image_are_refused_when_it_is_used() {
    let kiln = Kiln::new();
    let sentinel = Sentinel::new(&kiln);
    let busybox = fs::read(busybox_rootfs(kiln.dir.path())).unwrap();
    let outside = sentinel.dir.to_str().unwrap().to_owned();
    // A lower layer with links out of the image, then a hostile layer over it.
    let lower = RawTar::default()
        .symlink("out", &outside)
        .symlink("up", "../../../../../../../../..")
        .dir("d/")
        .file("d/keep", b"keep")
        .finish();
    let one = |path: &str| RawTar::default().file(path, b"").finish();
    // (hostile layer, the entry the error must name with the overlay snapshotter and
    // with the copying one; None: the build works). Overlay snapshots unpack each layer
    // into a directory of its own, where the lower layer's links do not exist: the
    // entry makes a directory that hides the link. The copying snapshotter unpacks the
    // layers onto one another and refuses to go through the links.
    type Case<'a> = (Vec<u8>, Option<&'a str>, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (one("out/.wh.sentinel"), None, Some("out/.wh.sentinel")),
        (one("out/.wh..wh..opq"), None, Some("out/.wh..wh..opq")),
        (one("up/.wh.etc"), None, Some("up/.wh.etc")),
        (one("out/sentinel"), None, Some("out/sentinel")),
        (one(".wh..."), Some(".wh..."), Some(".wh...")),
        (one("d/.wh.."), Some("d/.wh.."), Some("d/.wh..")),
        (one("d/.wh."), Some("d/.wh."), Some("d/.wh.")),
        (one("../escape"), Some("../escape"), Some("../escape")),
        (
            RawTar::default().hard_link("h", "out/sentinel").finish(),
            Some("hard link target \"out/sentinel\" does not exist"),
            Some("\"h\": path goes through symlink \"out\""),
        ),
        // A directory whose name merely starts like a whiteout is a directory, even
        // one named as the opaque marker.
        (one(".wh.../x"), None, None),
        (one("d/.wh..wh..opq/x"), None, None),
    ];
    let ctx = kiln.dir.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    crate::support::require("runc", "runc");
    let mut logs = Vec::new();
    for (i, (hostile, overlay, copy)) in cases.iter().enumerate() {
        let name = format!("hostile:{i}");
        let archive = OciArchive {
            layers: vec![busybox.clone(), lower.clone(), hostile.clone()],
            ..OciArchive::default()
        }
        .tar(&name);
        let path = kiln.dir.path().join("image.tar");
        fs::write(&path, archive).unwrap();
        kiln.ok(&["load", "-i", path.to_str().unwrap()]);
        fs::write(
            ctx.join("Dockerfile"),
            format!("FROM {name}\nRUN cat /d/keep\n"),
        )
        .unwrap();
        for (snapshotter, entry) in [("overlay", overlay), ("copy", copy)] {
            let (ok, stderr) = build(&kiln, &ctx, &["--snapshotter", snapshotter, "--no-cache"]);
            match entry {
                Some(entry) => {
                    assert!(!ok, "case {i} ({snapshotter}) was accepted:\n{stderr}");
                    assert!(
                        stderr.contains(entry),
                        "case {i} ({snapshotter}) does not name {entry:?}:\n{stderr}"
                    );
                }
                None => assert!(ok, "case {i} ({snapshotter}):\n{stderr}"),
            }
            logs.push(stderr);
        }
    }
    let logs: Vec<&str> = logs.iter().map(String::as_str).collect();
    sentinel.check(&kiln, &logs);
}

#[test]
fn secrets_reach_the_step_but_nothing_kiln_keeps_or_prints() {
    let kiln = Kiln::new();
    let secret = unique("secret");
    let dockerfile = format!(
        "{BUSYBOX_BASE}RUN --mount=type=secret,id=s cat /run/secrets/s > /dev/null\n\
         RUN --mount=type=secret,id=s,required=true cat /run/secrets/s | wc -c > /len\n\
         RUN --mount=type=secret,id=s,env=S sh -c 'echo -n \"$S\"' | wc -c > /envlen\n\
         RUN --mount=type=secret,id=s,target=/elsewhere sha256sum /elsewhere > /sum\n"
    );
    let ctx = busybox_context(&kiln.dir.path().join("ctx"), &dockerfile);
    let secret_file = kiln.dir.path().join("secret-file");
    fs::write(&secret_file, &secret).unwrap();
    let spec = format!("id=s,src={}", secret_file.display());

    let mut printed = Vec::new();
    let (out, local_spec) = local(&kiln, "out");
    for (i, progress) in ["plain", "rawjson"].into_iter().enumerate() {
        let iid = kiln.dir.path().join(format!("iid-{i}"));
        let args = [
            "build",
            "--progress",
            progress,
            "--no-cache",
            "--secret",
            &spec,
            "-t",
            "secret-test",
            "--iidfile",
            iid.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ];
        let run = kiln.run(&args);
        let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
        assert!(run.status.success(), "{progress}:\n{stderr}");
        assert!(
            stderr.contains("secret") || !stdout.is_empty(),
            "{progress}: no output"
        );
        printed.extend([stdout, stderr]);
    }
    let run = kiln.run(&[
        "build",
        "--progress",
        "plain",
        "--secret",
        &spec,
        "-o",
        &local_spec,
        ctx.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    printed.push(String::from_utf8_lossy(&run.stderr).into_owned());

    // The step saw it, and the mount point is not left in the image.
    assert_eq!(
        fs::read_to_string(out.join("len")).unwrap().trim(),
        secret.len().to_string()
    );
    assert_eq!(
        fs::read_to_string(out.join("envlen")).unwrap().trim(),
        secret.len().to_string()
    );
    let sum = fs::read_to_string(out.join("sum")).unwrap();
    assert!(
        sum.starts_with(&Digest::of(secret.as_bytes()).hex().to_owned()),
        "{sum}"
    );
    assert!(
        !out.join("run/secrets/s").exists(),
        "the mount point remained"
    );
    assert!(!out.join("elsewhere").exists(), "the mount point remained");

    // A required secret that is not given stops the build, naming it.
    fs::write(
        ctx.join("Dockerfile"),
        format!("{BUSYBOX_BASE}RUN --mount=type=secret,id=s,required=true true\n"),
    )
    .unwrap();
    let missing = kiln.run(&[
        "build",
        "--progress",
        "plain",
        "--no-cache",
        ctx.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&missing.stderr).into_owned();
    assert!(!missing.status.success(), "{stderr}");
    assert!(stderr.contains("secret s is required"), "{stderr}");
    printed.push(stderr);

    // Everything kiln keeps: every blob (layers decompressed), the image config and
    // history, the cache index, snapshots, state; and what it printed.
    printed.push(kiln.ok(&["inspect", "secret-test"]));
    printed.push(kiln.ok(&["history", "--no-trunc", "secret-test"]));
    let index = kiln.root().join("index-v1.redb");
    assert!(index.is_file(), "no cache index at {}", index.display());
    let found = files_containing(&kiln.root(), secret.as_bytes());
    assert!(found.is_empty(), "the secret was stored in {found:?}");
    let found = files_containing(&out, secret.as_bytes());
    assert!(found.is_empty(), "the secret was exported in {found:?}");
    for text in &printed {
        assert!(!text.contains(&secret), "the secret was printed:\n{text}");
    }
}

#[test]
fn a_base_image_without_history_can_be_built_on() {
    // History is optional in an image config; tools that assemble images often leave
    // it out.
    let kiln = Kiln::new();
    crate::support::require("runc", "runc");
    let busybox = fs::read(busybox_rootfs(kiln.dir.path())).unwrap();
    let extra = RawTar::default().file("extra", b"extra\n").finish();
    let config = serde_json::to_vec(&json!({
        "architecture": kiln_image::Platform::host().architecture(),
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [
            Digest::of(&busybox).to_string(),
            Digest::of(&extra).to_string(),
        ]},
    }))
    .unwrap();
    load_and_build_on(
        &kiln,
        "no-history:1",
        vec![busybox, extra],
        config,
        "RUN cat /extra > /copy",
    );
    let history = kiln.ok(&["history", "--no-trunc", "built:1"]);
    assert_eq!(history.lines().count(), 4, "{history}");
    assert!(
        history.contains("RUN /bin/sh -c cat /extra > /copy"),
        "{history}"
    );
}

#[test]
fn a_base_image_whose_history_names_more_layers_than_it_has_can_be_built_on() {
    // The history says three steps made layers; the image has one. The entries past
    // the base's layers are taken as empty, as BuildKit does.
    let kiln = Kiln::new();
    crate::support::require("runc", "runc");
    let busybox = fs::read(busybox_rootfs(kiln.dir.path())).unwrap();
    let config = serde_json::to_vec(&json!({
        "architecture": kiln_image::Platform::host().architecture(),
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(&busybox).to_string()]},
        "history": [
            {"created_by": "made busybox"},
            {"created_by": "a layer that is not there"},
            {"created_by": "another one"},
        ],
    }))
    .unwrap();
    load_and_build_on(
        &kiln,
        "long-history:1",
        vec![busybox],
        config,
        "RUN echo made > /made",
    );
    let config: serde_json::Value =
        serde_json::from_str(&kiln.ok(&["inspect", "built:1"])).unwrap();
    let config = if config.is_array() {
        &config[0]
    } else {
        &config
    };
    let history = config["Config"]["history"].as_array().expect("history");
    let with_layer: Vec<&str> = history
        .iter()
        .filter(|h| h["empty_layer"] != true)
        .map(|h| h["created_by"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(with_layer.len(), 2, "{history:?}");
    assert_eq!(with_layer[0], "made busybox", "{history:?}");
    assert!(
        with_layer[1].starts_with("RUN /bin/sh -c echo made > /made"),
        "{history:?}"
    );
}

/// Loads an image made of `layers` and `config` as `name`, and builds `built:1` from it
/// with one more instruction.
fn load_and_build_on(kiln: &Kiln, name: &str, layers: Vec<Vec<u8>>, config: Vec<u8>, step: &str) {
    let archive = OciArchive {
        layers,
        config: Some(config),
        ..OciArchive::default()
    }
    .tar(name);
    let path = kiln.dir.path().join("image.tar");
    fs::write(&path, archive).unwrap();
    kiln.ok(&["load", "-i", path.to_str().unwrap()]);
    let ctx = kiln.dir.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), format!("FROM {name}\n{step}\n")).unwrap();
    build_ok(kiln, &ctx, &["-t", "built:1"]);
}
