//! Registries end to end: push and pull beside skopeo and Docker, `FROM` pulling, logins,
//! and the CI story — a cache written by one store makes a build on an empty store run
//! nothing and give the same image. Every registry is Debian's `docker-registry` on
//! 127.0.0.1, started by the test.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::build::{BASE, Built, build, context, read};
use crate::faulty_proxy::{Fault, FaultyProxy, Rule};
use crate::registry_support::TestRegistry as Registry;
use crate::support::{Dockerd, Kiln, require};

/// The manifest digest a build wrote with `--metadata-file` (the pushed one when the
/// build pushed) and the image ID.
fn built_digest(kiln: &Kiln, ctx: &Path, extra: &[&str]) -> (Built, String) {
    let (built, digest, _) = built_image(kiln, ctx, extra);
    (built, digest)
}

/// A build's report, manifest digest and image ID (config digest).
fn built_image(kiln: &Kiln, ctx: &Path, extra: &[&str]) -> (Built, String, String) {
    let meta = kiln.dir.path().join("metadata.json");
    let mut args = vec!["--metadata-file", meta.to_str().unwrap()];
    args.extend_from_slice(extra);
    let built = build(kiln, ctx, &args);
    let meta: serde_json::Value = serde_json::from_str(&read(&meta)).unwrap();
    let digest = meta["containerimage.digest"].as_str().unwrap().to_owned();
    let id = meta["containerimage.config.digest"]
        .as_str()
        .unwrap()
        .to_owned();
    (built, digest, id)
}

fn skopeo(args: &[&str]) -> String {
    require("skopeo", "skopeo");
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn kiln_pushes_what_skopeo_and_docker_pull_and_pulls_what_docker_pushes() {
    let registry = Registry::start();
    let host = registry.host();
    let kiln = Kiln::new();
    let dockerfile = format!("{BASE}RUN echo hi from kiln > /hi\nCMD [\"cat\", \"/hi\"]\n");
    let ctx = context(&kiln, &dockerfile, &[]);
    let name = format!("{host}/kiln/app:1");
    let (_, digest) = built_digest(&kiln, &ctx, &["-t", &name, "--push"]);

    let inspected: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]))
    .unwrap();
    assert_eq!(inspected["Digest"], digest.as_str());
    let oci = kiln.dir.path().join("skopeo-oci");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{name}"),
        &format!("oci:{}:app", oci.display()),
    ]);

    // `kiln push` of a stored image under another repository: the registry already
    // holds its layers in the first one, so they are mounted, not uploaded.
    let again = kiln.run(&[
        "push",
        "--progress",
        "plain",
        &name,
        &format!("{host}/kiln/other:2"),
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&again.stdout),
        String::from_utf8_lossy(&again.stderr),
    );
    assert!(again.status.success(), "{stderr}");
    assert!(stdout.contains(&digest), "{stdout}");
    assert!(
        stderr.contains("mounted from another repository"),
        "{stderr}"
    );
    assert!(!stderr.contains("uploaded"), "{stderr}");

    let docker = Dockerd::start();
    docker.ok(&["pull", &name]);
    let said = docker.ok(&["run", "--rm", "--network", "none", &name]);
    assert_eq!(said, "hi from kiln\n");
    let from_docker = format!("{host}/docker/app:1");
    docker.ok(&["tag", &name, &from_docker]);
    docker.ok(&["push", &from_docker]);

    // An empty store pulls the base of `FROM` from the registry.
    let fresh = Kiln::new();
    let ctx = context(
        &fresh,
        &format!("FROM {from_docker}\nRUN cat /hi > /seen\n"),
        &[],
    );
    let local = fresh.dir.path().join("out");
    let built = build(
        &fresh,
        &ctx,
        &["-o", &format!("type=local,dest={}", local.display())],
    );
    assert_eq!(read(&local.join("seen")), "hi from kiln\n");
    assert!(
        built.stderr.contains(&format!("pulling {from_docker}")),
        "{}",
        built.stderr
    );
    // And `kiln pull` gives the image Docker pushed, with the same config.
    let pulled = fresh.ok(&["pull", "--progress", "plain", &from_docker]);
    assert!(pulled.contains("Digest: sha256:"), "{pulled}");
    let docker_id = docker.ok(&["inspect", "--format", "{{.Id}}", &from_docker]);
    let kiln_images = fresh.ok(&["images", "--no-trunc", "--format", "json"]);
    assert!(kiln_images.contains(docker_id.trim()), "{kiln_images}");

    // `kiln pull` unpacks the layers into snapshots, as `docker pull` does, unless
    // asked only to download.
    let snapshots = |kiln: &Kiln| match fs::read_dir(kiln.root().join("snapshots-v1/overlay")) {
        Ok(dir) => dir.count(),
        Err(_) => 0,
    };
    let unpacked = Kiln::new();
    unpacked.ok(&["pull", "-q", &from_docker]);
    let layers = inspected_layers(&unpacked, &from_docker);
    assert_eq!(snapshots(&unpacked), layers);
    let downloaded = Kiln::new();
    downloaded.ok(&["pull", "-q", "--no-unpack", &from_docker]);
    assert_eq!(snapshots(&downloaded), 0);
}

/// How many layers the stored image `name` has.
fn inspected_layers(kiln: &Kiln, name: &str) -> usize {
    let inspected: serde_json::Value = serde_json::from_str(&kiln.ok(&["inspect", name])).unwrap();
    inspected[0]["Manifest"]["layers"].as_array().unwrap().len()
}

/// A multi-stage Dockerfile whose builder stage's output feeds the final stage. The
/// COPY --from makes the very blob the builder's RUN made, a second or more later.
fn multi_stage() -> String {
    format!(
        "{BASE}FROM base AS builder\nRUN echo compiled > /out\nFROM base\nRUN sleep 1.2 && echo > /x\nCOPY --from=builder /out /out\nRUN cat /out > /final\n"
    )
}

#[test]
fn a_registry_cache_makes_an_empty_store_run_nothing_and_build_the_same_image() {
    let registry = Registry::start();
    let cache = format!("{}/app:buildcache", registry.host());
    let first = Kiln::new();
    let ctx = context(&first, &multi_stage(), &[]);
    let (built, _, id) = built_image(
        &first,
        &ctx,
        &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
    );
    assert_eq!(built.ran.len(), 6, "{:?}", built.ran);

    let second = Kiln::new();
    let ctx = context(&second, &multi_stage(), &[]);
    let (built, again, same_id) = built_image(
        &second,
        &ctx,
        &["--cache-from", &format!("type=registry,ref={cache}")],
    );
    assert!(built.ran.is_empty(), "steps ran: {:?}", built.ran);
    // The same image (config, history, layers' diff IDs); its layers are the
    // compressed blobs of the cache where the first store kept them plain.
    assert_eq!(
        same_id,
        id,
        "the same image:\n{}\n{}",
        first.ok(&["inspect", &id]),
        second.ok(&["inspect", &same_id])
    );
    // Only the final image's layers were downloaded; the builder stage's were not.
    let manifest = second.ok(&["inspect", &again]);
    let downloaded: Vec<&str> = built
        .stderr
        .lines()
        .filter(|l| l.contains(": downloaded"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(downloaded.len(), 5, "{}", built.stderr);
    for short in downloaded {
        let short = short.trim_end_matches(':');
        assert!(
            manifest.contains(short),
            "{short} is not a layer of the image"
        );
    }
    // The records are now local: a third build needs no remote cache.
    let third = build(&second, &ctx, &[]);
    assert!(third.ran.is_empty(), "{:?}", third.ran);

    // A pipeline's later job: a fresh store imports the cache and exports it again to
    // the same place. Layers it did not need (the builder stage's) are not downloaded
    // to be sent back: the registry has them.
    let job = Kiln::new();
    let ctx = context(&job, &multi_stage(), &[]);
    let (built, _, job_id) = built_image(
        &job,
        &ctx,
        &[
            "--cache-from",
            &format!("type=registry,ref={cache}"),
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max"),
        ],
    );
    assert!(built.ran.is_empty(), "steps ran: {:?}", built.ran);
    assert_eq!(job_id, id);
    let downloaded = built
        .stderr
        .lines()
        .filter(|l| l.contains(": downloaded"))
        .count();
    assert_eq!(downloaded, 5, "{}", built.stderr);
    assert!(!built.stderr.contains(": uploaded"), "{}", built.stderr);
    // And the cache it wrote still serves every step.
    let next = Kiln::new();
    let ctx = context(&next, &multi_stage(), &[]);
    let built = build(
        &next,
        &ctx,
        &["--cache-from", &format!("type=registry,ref={cache}")],
    );
    assert!(built.ran.is_empty(), "steps ran: {:?}", built.ran);
}

#[test]
fn a_local_cache_in_min_mode_and_an_inline_cache_work_the_same_way() {
    let registry = Registry::start();
    let dockerfile = format!("{BASE}COPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\n");
    let layout = tempfile::tempdir().unwrap();
    let first = Kiln::new();
    let ctx = context(&first, &dockerfile, &[("a.txt", "a")]);
    let (_, _, id) = built_image(
        &first,
        &ctx,
        &[
            "--cache-to",
            &format!("type=local,dest={}", layout.path().display()),
        ],
    );
    assert!(layout.path().join("index.json").is_file());
    let second = Kiln::new();
    let ctx = context(&second, &dockerfile, &[("a.txt", "a")]);
    let (built, _, again) = built_image(
        &second,
        &ctx,
        &[
            "--cache-from",
            &format!("type=local,src={}", layout.path().display()),
        ],
    );
    assert!(built.ran.is_empty(), "{:?}", built.ran);
    assert_eq!(again, id);

    // Inline: the cache travels in the pushed image's config.
    let name = format!("{}/app:inline", registry.host());
    let third = Kiln::new();
    let ctx = context(&third, &dockerfile, &[("a.txt", "a")]);
    let (_, _, inline_id) = built_image(
        &third,
        &ctx,
        &["-t", &name, "--push", "--cache-to", "type=inline"],
    );
    let fourth = Kiln::new();
    let ctx = context(&fourth, &dockerfile, &[("a.txt", "a")]);
    let (built, _, again) = built_image(
        &fourth,
        &ctx,
        &["--cache-from", &name, "--cache-to", "type=inline"],
    );
    assert!(built.ran.is_empty(), "{:?}", built.ran);
    // The config carries the same records, so the image is the same.
    assert_eq!(again, inline_id);

    // A cache that does not exist yet is a warning, as in a pipeline's first run.
    let fifth = Kiln::new();
    let ctx = context(&fifth, &dockerfile, &[("a.txt", "a")]);
    let built = build(
        &fifth,
        &ctx,
        &[
            "--cache-from",
            &format!("type=registry,ref={}/absent:cache", registry.host()),
        ],
    );
    assert!(built.stderr.contains("not found"), "{}", built.stderr);
    assert_eq!(built.ran.len(), 4, "{:?}", built.ran);
}

/// `kiln` with `DOCKER_CONFIG` pointing at `config`.
fn kiln_with_config(
    kiln: &Kiln,
    config: &Path,
    args: &[&str],
    stdin: &str,
) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("DOCKER_CONFIG", config)
        .arg("--root")
        .arg(kiln.root())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn login_saves_credentials_that_push_and_pull_use_and_logout_removes_them() {
    let registry = Registry::start_with_auth("kiln", "s3cret");
    let host = registry.host();
    let kiln = Kiln::new();
    let config = kiln.dir.path().join("docker-config");
    fs::create_dir_all(&config).unwrap();
    fs::write(config.join("config.json"), r#"{"experimental": "enabled"}"#).unwrap();
    let tar = crate::support::busybox_rootfs(kiln.dir.path());
    let name = format!("{host}/private/busybox:1");
    kiln.ok(&["import", tar.to_str().unwrap(), &name]);

    let out = kiln_with_config(&kiln, &config, &["push", &name], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("401") || stderr.contains("unauthorized"),
        "{stderr}"
    );

    let out = kiln_with_config(
        &kiln,
        &config,
        &["login", "-u", "kiln", "--password-stdin", &host],
        "wrong\n",
    );
    assert!(!out.status.success(), "a wrong password is refused");

    let out = kiln_with_config(
        &kiln,
        &config,
        &["login", "-u", "kiln", "--password-stdin", &host],
        "s3cret\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Login Succeeded"));
    let saved: serde_json::Value =
        serde_json::from_str(&read(&config.join("config.json"))).unwrap();
    assert_eq!(saved["experimental"], "enabled", "other settings are kept");
    assert!(saved["auths"][host.as_str()]["auth"].is_string(), "{saved}");

    let out = kiln_with_config(&kiln, &config, &["push", &name], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other = Kiln::new();
    let out = kiln_with_config(&other, &config, &["pull", &name], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = kiln_with_config(&kiln, &config, &["logout", &host], "");
    assert!(out.status.success());
    let saved: serde_json::Value =
        serde_json::from_str(&read(&config.join("config.json"))).unwrap();
    assert!(saved["auths"].get(host.as_str()).is_none(), "{saved}");
    let out = kiln_with_config(&Kiln::new(), &config, &["pull", &name], "");
    assert!(!out.status.success());
}

#[test]
fn broken_transfers_recover_or_fail_cleanly_and_the_store_stays_valid() {
    let registry = Registry::start();
    let pusher = Kiln::new();
    let tar = crate::support::busybox_rootfs(pusher.dir.path());
    let name = format!("{}/faults/app:1", registry.host());
    pusher.ok(&["import", tar.to_str().unwrap(), &name]);
    pusher.ok(&["push", &name]);
    let inspected: serde_json::Value =
        serde_json::from_str(&pusher.ok(&["inspect", &name])).unwrap();
    let layer = inspected[0]["Manifest"]["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let proxy = FaultyProxy::start(&registry.host());
    let through = format!("{}/faults/app:1", proxy.host());

    // A flipped byte in a layer: the pull fails naming the digest, and stores nothing.
    let puller = Kiln::new();
    proxy.add(
        Rule::new(Fault::FlipBody { offset: 100_000 }, 1)
            .method("GET")
            .path(&layer),
    );
    let err = puller.fails(&["pull", &through]);
    assert!(err.contains("digest"), "{err}");
    assert_eq!(proxy.faults_applied(), 1);
    puller.ok(&["store", "check"]);
    assert!(puller.ok(&["images", "-q"]).trim().is_empty());

    // Connections cut mid-blob: the pull resumes and completes.
    proxy.add(
        Rule::new(Fault::CutResponse { bytes: 64 * 1024 }, 2)
            .method("GET")
            .path(&layer),
    );
    let pulled = puller.ok(&["pull", "--progress", "plain", &through]);
    assert!(pulled.contains("Digest: sha256:"), "{pulled}");
    assert_eq!(proxy.faults_applied(), 3);
    puller.ok(&["store", "check"]);
    let ctx = context(
        &puller,
        &format!("FROM {through}\nRUN echo ok > /ok\n"),
        &[],
    );
    build(&puller, &ctx, &[]);

    // An upload cut mid-way is retried; 503s too.
    proxy.add(Rule::new(Fault::CutRequest { bytes: 32 * 1024 }, 1));
    proxy.add(Rule::new(Fault::Unavailable, 2));
    pusher.ok(&["push", &name, &format!("{}/faults/copy:1", proxy.host())]);
    assert_eq!(proxy.faults_applied(), 6);
    skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}/faults/copy:1", registry.host()),
    ]);
}

#[test]
fn pull_asks_the_registry_again_for_a_tag_the_store_has() {
    let registry = Registry::start();
    let base = format!("{}/base/app:1", registry.host());
    let pusher = Kiln::new();
    let tar = crate::support::busybox_rootfs(pusher.dir.path());
    pusher.ok(&["import", tar.to_str().unwrap(), &base]);
    pusher.ok(&["push", &base]);

    let user = Kiln::new();
    let dockerfile = format!("FROM {base}\nRUN cat /v > /seen || echo old > /seen\n");
    let ctx = context(&user, &dockerfile, &[]);
    let seen = |extra: &[&str]| {
        let out = user.dir.path().join("out");
        let _ = fs::remove_dir_all(&out);
        let mut args = vec![format!("type=local,dest={}", out.display())];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut flags = vec!["-o"];
        flags.extend(args.iter().map(String::as_str));
        build(&user, &ctx, &flags);
        read(&out.join("seen"))
    };
    assert_eq!(seen(&[]), "old\n");

    // The tag moves in the registry.
    let ctx2 = context(&pusher, &format!("{BASE}RUN echo new > /v\n"), &[]);
    build(&pusher, &ctx2, &["-t", &base, "--push"]);

    assert_eq!(
        seen(&[]),
        "old\n",
        "without --pull the stored image is used"
    );
    assert_eq!(seen(&["--pull"]), "new\n");
}

#[test]
fn a_stored_base_for_another_platform_is_pulled_for_the_platform_built() {
    let registry = Registry::start();
    let base = format!("{}/cross/base:1", registry.host());
    // The registry holds the name only for arm64 (one manifest, no index).
    let pusher = Kiln::new();
    let ctx = context(
        &pusher,
        "FROM scratch\nCOPY from-registry /\n",
        &[("from-registry", "arm64\n")],
    );
    build(
        &pusher,
        &ctx,
        &["--platform", "linux/arm64", "-t", &base, "--push"],
    );

    // The store holds the same name for this machine's platform.
    let user = Kiln::new();
    let ctx = context(
        &user,
        "FROM scratch\nCOPY from-store /\n",
        &[("from-store", "host\n")],
    );
    build(&user, &ctx, &["-t", &base]);

    let dockerfile = format!("FROM {base}\nCOPY mine /\n");
    let ctx = context(&user, &dockerfile, &[("mine", "x\n")]);
    let out = user.dir.path().join("out");
    build(
        &user,
        &ctx,
        &[
            "--platform",
            "linux/arm64",
            "-o",
            &format!("type=local,dest={}", out.display()),
        ],
    );
    assert_eq!(read(&out.join("from-registry")), "arm64\n");
    assert!(
        !out.join("from-store").exists(),
        "the stored amd64 image was used"
    );

    // Now the store has the arm64 image under the name, and the registry nothing else:
    // a build for this machine cannot have its base, and says why.
    let stderr = user.fails(&["build", "--progress", "plain", ctx.to_str().unwrap()]);
    let host = kiln_image::Platform::host().to_string();
    assert!(
        stderr.contains(&base)
            && stderr.contains("linux/arm64")
            && stderr.contains(&format!("not {host}")),
        "{stderr}"
    );
}

/// A tar whose entries try to leave the root: `../` names, an absolute name, and a
/// file written through a symlink that points out.
fn hostile_layer(sentinel_dir: &Path) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut raw = |name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        let bytes = name.as_bytes();
        header.as_gnu_mut().unwrap().name[..bytes.len()].copy_from_slice(bytes);
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        if let Some(link) = link {
            let bytes = link.as_bytes();
            header.as_gnu_mut().unwrap().linkname[..bytes.len()].copy_from_slice(bytes);
        }
        header.set_cksum();
        tar.append(&header, data).unwrap();
    };
    let outside = sentinel_dir.join("sentinel");
    raw("ok.txt", tar::EntryType::Regular, None, b"fine");
    raw(
        "out",
        tar::EntryType::Symlink,
        Some(sentinel_dir.to_str().unwrap()),
        b"",
    );
    raw(
        "out/sentinel",
        tar::EntryType::Regular,
        None,
        b"overwritten",
    );
    raw(
        &format!("../../../../../../..{}", outside.display()),
        tar::EntryType::Regular,
        None,
        b"overwritten",
    );
    tar.into_inner().unwrap()
}

#[test]
fn a_hostile_layer_from_a_registry_writes_nothing_outside_and_fails_clearly() {
    let registry = Registry::start();
    let kiln = Kiln::new();
    let sentinel_dir = kiln.dir.path().join("outside");
    fs::create_dir_all(&sentinel_dir).unwrap();
    fs::write(sentinel_dir.join("sentinel"), "untouched").unwrap();

    // An OCI layout holding the hostile image, copied into the registry by skopeo.
    let layout = kiln.dir.path().join("evil-oci");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let digest = kiln_image::Digest::of(bytes).to_string();
        fs::write(blobs.join(&digest[7..]), bytes).unwrap();
        digest
    };
    let layer = hostile_layer(&sentinel_dir);
    let layer_digest = put(&layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "config": {}
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = put(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}]
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = put(&manifest);
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "evil"}}]
    });
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let name = format!("{}/evil/image:1", registry.host());
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:evil", layout.display()),
        &format!("docker://{name}"),
    ]);

    let ctx = context(&kiln, &format!("FROM {name}\nRUN cat /ok.txt\n"), &[]);
    let out = kiln.run(&["build", "--progress", "plain", ctx.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the hostile layer was applied: {stderr}"
    );
    // skopeo compresses the layer on the way; the snapshot is named by its diff ID.
    assert!(
        stderr.contains("cannot unpack layer sha256:")
            && stderr.contains(&layer_digest)
            && stderr.contains("\"out/sentinel\""),
        "the error names the layer and the entry: {stderr}"
    );
    let local = kiln.dir.path().join("local");
    let out = kiln.run(&[
        "build",
        "-o",
        &format!("type=local,dest={}", local.display()),
        ctx.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert_eq!(read(&sentinel_dir.join("sentinel")), "untouched");
    assert_eq!(fs::read_dir(&sentinel_dir).unwrap().count(), 1);
    kiln.ok(&["store", "check"]);
}

/// The file names under `dir`, none if it does not exist.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn layers_kept_as_their_snapshots_leave_exactly_as_built() {
    let registry = Registry::start();
    let kiln = Kiln::new();
    let dockerfile = format!(
        "{BASE}RUN dd if=/dev/urandom of=/big bs=1M count=3 2>/dev/null && sha256sum /big > /big.sum\n"
    );
    let ctx = context(&kiln, &dockerfile, &[]);
    let name = format!("{}/kiln/big:1", registry.host());
    let (_, _, id) = built_image(&kiln, &ctx, &["-t", &name]);

    // The build hashed its large layers (the busybox COPY and the 3 MiB RUN) without
    // storing them a second time: they live in their snapshots.
    let kept_dir = kiln.root().join("content-v1/kept");
    let blobs_dir = kiln.root().join("content-v1/blobs/sha256");
    let kept = names_in(&kept_dir);
    assert_eq!(kept.len(), 2, "{kept:?}");
    for hex in &kept {
        assert!(!blobs_dir.join(hex).exists(), "{hex} stored twice");
    }
    kiln.ok(&["store", "check"]);

    // A push compresses them straight from the snapshots: no plain copy is written.
    kiln.ok(&["push", &name]);
    assert_eq!(names_in(&kept_dir), kept);
    // An uncompressed archive needs the plain blobs: read, they are written out (and
    // checked against their digests) as blobs of their own.
    let archive = kiln.dir.path().join("big.tar");
    kiln.ok(&["save", "-o", archive.to_str().unwrap(), &name]);
    assert!(names_in(&kept_dir).is_empty());
    for hex in &kept {
        assert!(blobs_dir.join(hex).is_file());
    }
    kiln.ok(&["store", "check"]);

    // What the registry holds is the image that was built, byte for byte.
    let fresh = Kiln::new();
    fresh.ok(&["pull", "-q", &name]);
    let images = fresh.ok(&["images", "--no-trunc", "--format", "json"]);
    assert!(images.contains(&id), "{images}");
    let ctx = context(
        &fresh,
        &format!("FROM {name}\nRUN sha256sum -c /big.sum\n"),
        &[],
    );
    build(&fresh, &ctx, &[]);
}
