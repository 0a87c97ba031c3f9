//! The registry client against a real registry (Debian's `docker-registry` on
//! 127.0.0.1), checked with `skopeo`, through a proxy that breaks connections, and
//! against a fake registry that answers nonsense.

#[path = "support/faulty_proxy.rs"]
mod faulty_proxy;
#[path = "support/registry.rs"]
mod registry_support;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_image::layer::{WriteOptions, write_layer};
use kiln_image::media_type::Flavor;
use kiln_image::registry::{
    BlobStore, ClientOptions, Credentials, MANIFEST_LIMIT, NoProgress, PulledImage, PushOutcome,
    RegistryClient, RegistryError, RetryPolicy, StoredWhere, Transfer, TransferProgress,
    erase_credentials, pull_image, push_image, store_credentials,
};
use kiln_image::{BlobRead, BlobWrite, Compression, Digest, Digester, ImageRef, Platform};
use serde_json::{Value, json};

use faulty_proxy::{Fault, FaultyProxy, Rule};
use registry_support::{TestRegistry, unique_dir};

// ---------------------------------------------------------------------------------------
// A directory-backed blob store, verifying on write like kiln's content store.

struct DirStore {
    root: PathBuf,
}

impl DirStore {
    fn new() -> (tempfile::TempDir, Arc<DirStore>) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        fs::create_dir_all(root.join("tmp")).unwrap();
        (dir, Arc::new(DirStore { root }))
    }

    fn path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    fn digests(&self) -> Vec<Digest> {
        let mut out: Vec<Digest> = fs::read_dir(self.root.join("blobs/sha256"))
            .unwrap()
            .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
            .map(|s| s.parse().unwrap())
            .collect();
        out.sort();
        out
    }

    /// Every stored blob hashes to its name, and no temp file is left behind.
    fn assert_all_verify(&self) {
        for d in self.digests() {
            let bytes = fs::read(self.path(&d)).unwrap();
            assert_eq!(Digest::of(&bytes), d, "stored blob does not verify");
        }
        let left: Vec<_> = fs::read_dir(self.root.join("tmp")).unwrap().collect();
        assert!(left.is_empty(), "temp files left: {left:?}");
    }
}

impl BlobRead for DirStore {
    fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(fs::File::open(self.path(digest))?))
    }

    fn blob_size(&self, digest: &Digest) -> io::Result<u64> {
        Ok(fs::metadata(self.path(digest))?.len())
    }
}

impl BlobWrite for DirStore {
    fn has_blob(&self, digest: &Digest) -> bool {
        self.path(digest).exists()
    }

    fn write_blob(&self, expected: &Digest, data: &mut dyn Read) -> io::Result<u64> {
        let tmp = tempfile::NamedTempFile::new_in(self.root.join("tmp"))?;
        let mut w = Digester::tee(tmp);
        io::copy(data, &mut w)?;
        let (tmp, actual, n) = w.finish();
        if actual != *expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected {expected}, got {actual}"),
            ));
        }
        tmp.persist(self.path(expected)).map_err(|e| e.error)?;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------
// Images built with kiln's own layer writer.

struct Built {
    manifest: Digest,
    media_type: String,
    config: Digest,
    layers: Vec<Digest>,
    /// Manifest bytes.
    bytes: Vec<u8>,
}

impl Built {
    fn blobs(&self) -> Vec<Digest> {
        let mut v = vec![self.config.clone()];
        v.extend(self.layers.iter().cloned());
        v
    }
}

/// Incompressible bytes from a seed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// An image of one layer per entry of `layers` (compression, size of a random file).
fn build_image(
    store: &DirStore,
    flavor: Flavor,
    layers: &[(Compression, usize)],
    arch: &str,
    seed: u64,
) -> Built {
    let work = tempfile::tempdir().unwrap();
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    let mut digests = Vec::new();
    for (i, (compression, size)) in layers.iter().enumerate() {
        let dir = work.path().join(format!("layer{i}"));
        fs::create_dir_all(dir.join("data")).unwrap();
        fs::write(
            dir.join("data").join(format!("f{i}")),
            noise(seed * 100 + i as u64, *size),
        )
        .unwrap();
        fs::write(
            dir.join(format!("hello-{seed}-{i}.txt")),
            b"hello from kiln\n",
        )
        .unwrap();
        let mut blob = Vec::new();
        let options = WriteOptions::default()
            .with_compression(*compression)
            .with_flavor(flavor)
            .with_source_date_epoch(0);
        let desc = write_layer(&dir, &mut blob, &options).unwrap();
        let (d, _) = store.put_blob(&blob).unwrap();
        assert_eq!(d, desc.digest);
        descriptors.push(serde_json::to_value(desc.descriptor()).unwrap());
        diff_ids.push(desc.diff_id.to_string());
        digests.push(desc.digest);
    }
    let config = serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": [format!("SEED={seed}")]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": layers.iter().map(|_| json!({"created_by": "kiln test"})).collect::<Vec<_>>(),
    }))
    .unwrap();
    let (config_digest, config_size) = store.put_blob(&config).unwrap();
    let media_type = flavor.manifest().to_string();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": flavor.config().to_string(),
            "digest": config_digest.to_string(),
            "size": config_size,
        },
        "layers": descriptors,
    }))
    .unwrap();
    let (manifest_digest, _) = store.put_blob(&manifest).unwrap();
    Built {
        manifest: manifest_digest,
        media_type,
        config: config_digest,
        layers: digests,
        bytes: manifest,
    }
}

/// An OCI index over `images` with their platforms, stored.
fn build_index(store: &DirStore, images: &[(&Built, &str)]) -> (Digest, Vec<u8>) {
    let manifests: Vec<Value> = images
        .iter()
        .map(|(b, arch)| {
            json!({
                "mediaType": b.media_type,
                "digest": b.manifest.to_string(),
                "size": b.bytes.len(),
                "platform": {"architecture": arch, "os": "linux"},
            })
        })
        .collect();
    let bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .unwrap();
    let (d, _) = store.put_blob(&bytes).unwrap();
    (d, bytes)
}

// ---------------------------------------------------------------------------------------
// Helpers.

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 5,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    }
}

fn options() -> ClientOptions {
    ClientOptions {
        credentials: Credentials::none(),
        retry: fast_retry(),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(20),
        ..ClientOptions::default()
    }
}

fn client() -> RegistryClient {
    RegistryClient::new(options()).unwrap()
}

fn iref(s: &str) -> ImageRef {
    s.parse().unwrap()
}

fn amd64() -> Platform {
    "linux/amd64".parse().unwrap()
}

/// Pushes the image `manifest` names from `store` to `reference`, reporting no progress.
async fn push_silently(
    client: &RegistryClient,
    reference: &ImageRef,
    manifest: &Digest,
    store: Arc<dyn BlobStore>,
) -> Result<Digest, RegistryError> {
    push_image(client, reference, manifest, store, &NoProgress).await
}

/// Pulls `reference` for linux/amd64 into `store`, reporting no progress.
async fn pull_silently(
    client: &RegistryClient,
    reference: &ImageRef,
    store: Arc<dyn BlobStore>,
) -> Result<PulledImage, RegistryError> {
    pull_image(client, reference, &amd64(), store, &NoProgress).await
}

/// Records how every transfer ended.
#[derive(Default)]
struct Recorder {
    finished: Mutex<BTreeMap<Digest, Transfer>>,
}

impl Recorder {
    fn outcomes(&self) -> BTreeMap<Digest, Transfer> {
        self.finished.lock().unwrap().clone()
    }
}

impl TransferProgress for Recorder {
    fn finished(&self, digest: &Digest, how: Transfer) {
        self.finished.lock().unwrap().insert(digest.clone(), how);
    }
}

fn skopeo(args: &[&str]) -> std::process::Output {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run skopeo ({e}): install the Debian package skopeo"));
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Writes an OCI image layout holding `built` (its blobs from `store`) tagged `tag`.
fn write_oci_layout(dir: &Path, store: &DirStore, built: &Built, tag: &str) {
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut all = built.blobs();
    all.push(built.manifest.clone());
    for d in all {
        fs::copy(store.path(&d), dir.join("blobs/sha256").join(d.hex())).unwrap();
    }
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": built.media_type,
            "digest": built.manifest.to_string(),
            "size": built.bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

// ---------------------------------------------------------------------------------------
// Round trips with a real registry and skopeo.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_oci_and_docker_images_read_back_with_skopeo() {
    let registry = TestRegistry::start();
    let host = registry.host();
    let (_d, store) = DirStore::new();
    let client = client();

    // OCI manifest, a gzip and a zstd layer.
    let oci = build_image(
        &store,
        Flavor::Oci,
        &[(Compression::Gzip, 3000), (Compression::Zstd, 5000)],
        "amd64",
        1,
    );
    let reference = iref(&format!("{host}/kiln/oci:v1"));
    let pushed = push_silently(&client, &reference, &oci.manifest, store.clone())
        .await
        .unwrap();
    assert_eq!(pushed, oci.manifest);
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]);
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["Digest"], oci.manifest.to_string());
    assert_eq!(info["Layers"].as_array().unwrap().len(), 2);
    let copy = unique_dir("kiln-skopeo-oci");
    skopeo(&[
        "copy",
        "--insecure-policy",
        "--src-tls-verify=false",
        "--preserve-digests",
        &format!("docker://{reference}"),
        &format!("oci:{}:v1", copy.display()),
    ]);
    let index: Value = serde_json::from_slice(&fs::read(copy.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], oci.manifest.to_string());
    for d in oci.blobs() {
        let bytes = fs::read(copy.join("blobs/sha256").join(d.hex())).unwrap();
        assert_eq!(Digest::of(&bytes), d);
    }
    fs::remove_dir_all(&copy).unwrap();

    // Docker schema 2 manifest, gzip layers.
    let docker = build_image(
        &store,
        Flavor::Docker,
        &[(Compression::Gzip, 2000), (Compression::Gzip, 100)],
        "amd64",
        2,
    );
    let reference = iref(&format!("{host}/kiln/docker:v1"));
    push_silently(&client, &reference, &docker.manifest, store.clone())
        .await
        .unwrap();
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]);
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["Digest"], docker.manifest.to_string());
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]);
    assert_eq!(Digest::of(&raw.stdout), docker.manifest);
    // The dir: transport keeps the Docker manifest as it is.
    let copy = unique_dir("kiln-skopeo-dir");
    skopeo(&[
        "copy",
        "--insecure-policy",
        "--src-tls-verify=false",
        "--preserve-digests",
        &format!("docker://{reference}"),
        &format!("dir:{}", copy.display()),
    ]);
    assert_eq!(
        Digest::of(&fs::read(copy.join("manifest.json")).unwrap()),
        docker.manifest
    );
    for d in docker.blobs() {
        assert_eq!(Digest::of(&fs::read(copy.join(d.hex())).unwrap()), d);
    }
    fs::remove_dir_all(&copy).unwrap();

    // And both pull back with kiln, Docker's media types included.
    let resolved = client.resolve(&reference, &amd64()).await.unwrap();
    assert_eq!(resolved.manifest.digest, docker.manifest);
    assert_eq!(
        resolved.manifest.media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(resolved.image.layers().len(), 2);
    let head = client.head_manifest(&reference).await.unwrap().unwrap();
    assert_eq!(
        head,
        (
            docker.manifest.clone(),
            docker.bytes.len() as u64,
            resolved.manifest.media_type.clone()
        )
    );
    assert!(
        client
            .head_manifest(&iref(&format!("{host}/kiln/docker:nope")))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pushed_by_skopeo_pulls_with_kiln() {
    let registry = TestRegistry::start();
    let host = registry.host();
    let (_s, source) = DirStore::new();
    let built = build_image(
        &source,
        Flavor::Oci,
        &[
            (Compression::Gzip, 200_000),
            (Compression::Zstd, 1000),
            (Compression::None, 10),
        ],
        "amd64",
        3,
    );
    let layout = tempfile::tempdir().unwrap();
    write_oci_layout(layout.path(), &source, &built, "t1");
    let reference = iref(&format!("{host}/from/skopeo:t1"));
    skopeo(&[
        "copy",
        "--insecure-policy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &format!("oci:{}:t1", layout.path().display()),
        &format!("docker://{reference}"),
    ]);

    let (_d, store) = DirStore::new();
    let recorder = Recorder::default();
    let pulled = pull_image(&client(), &reference, &amd64(), store.clone(), &recorder)
        .await
        .unwrap();
    assert_eq!(pulled.manifest.digest, built.manifest);
    assert!(pulled.index.is_none());
    assert_eq!(pulled.config, built.config);
    let layer_digests: Vec<Digest> = pulled
        .layers
        .iter()
        .map(|l| Digest::try_from(l.digest()).unwrap())
        .collect();
    assert_eq!(layer_digests, built.layers);
    let mut expected = built.blobs();
    expected.push(built.manifest.clone());
    expected.sort();
    assert_eq!(store.digests(), expected);
    store.assert_all_verify();
    assert!(
        recorder
            .outcomes()
            .values()
            .all(|t| *t == Transfer::Downloaded)
    );

    // A second pull skips every blob the store has.
    let recorder = Recorder::default();
    pull_image(&client(), &reference, &amd64(), store.clone(), &recorder)
        .await
        .unwrap();
    let outcomes = recorder.outcomes();
    assert_eq!(outcomes.len(), built.blobs().len());
    assert!(
        outcomes.values().all(|t| *t == Transfer::Skipped),
        "{outcomes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_resolves_to_the_platform_asked_for() {
    let registry = TestRegistry::start();
    let host = registry.host();
    let (_d, store) = DirStore::new();
    let amd = build_image(&store, Flavor::Oci, &[(Compression::Gzip, 500)], "amd64", 4);
    let arm = build_image(&store, Flavor::Oci, &[(Compression::Gzip, 600)], "arm64", 5);
    let (index, index_bytes) = build_index(&store, &[(&amd, "amd64"), (&arm, "arm64")]);
    let client = client();
    let reference = iref(&format!("{host}/multi/app:latest"));
    let pushed = push_silently(&client, &reference, &index, store.clone())
        .await
        .unwrap();
    assert_eq!(pushed, index);

    let fetched = client.get_manifest(&reference).await.unwrap();
    assert_eq!(fetched.bytes, index_bytes);
    let arm64: Platform = "linux/arm64".parse().unwrap();
    let resolved = client.resolve(&reference, &arm64).await.unwrap();
    assert_eq!(resolved.index.as_ref().unwrap().digest, index);
    assert_eq!(resolved.manifest.digest, arm.manifest);
    let resolved = client.resolve(&reference, &amd64()).await.unwrap();
    assert_eq!(resolved.manifest.digest, amd.manifest);

    let s390x: Platform = "linux/s390x".parse().unwrap();
    let err = client.resolve(&reference, &s390x).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::NoMatchingPlatform { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("linux/s390x") && msg.contains("linux/amd64") && msg.contains("linux/arm64"),
        "{msg}"
    );

    // Pulling one platform stores that platform's blobs, its manifest and the index.
    let (_p, pulled_store) = DirStore::new();
    let pulled = pull_image(
        &client,
        &reference,
        &arm64,
        pulled_store.clone(),
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(pulled.index.unwrap().digest, index);
    let mut expected = arm.blobs();
    expected.extend([arm.manifest.clone(), index.clone()]);
    expected.sort();
    assert_eq!(pulled_store.digests(), expected);
    pulled_store.assert_all_verify();

    // A store holding only one platform can push the index back: the registry has the
    // other platform's manifest.
    let copy = iref(&format!("{host}/multi/copy:v2"));
    let err = push_silently(&client, &copy, &index, pulled_store.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Store { .. }), "{err:?}");
    let same_repo = iref(&format!("{host}/multi/app:again"));
    push_silently(&client, &same_repo, &index, pulled_store.clone())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_image_for_another_platform_is_refused_before_its_layers_are_fetched() {
    let registry = TestRegistry::start();
    let host = registry.host();
    let (_d, store) = DirStore::new();
    let arm = build_image(&store, Flavor::Oci, &[(Compression::Gzip, 700)], "arm64", 8);
    let client = client();
    let reference = iref(&format!("{host}/single/arm:v1"));
    push_silently(&client, &reference, &arm.manifest, store.clone())
        .await
        .unwrap();

    let (_p, pulled_store) = DirStore::new();
    let err = pull_silently(&client, &reference, pulled_store.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::PlatformMismatch { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&reference.to_string())
            && msg.contains("linux/arm64")
            && msg.contains("linux/amd64"),
        "{msg}"
    );
    for layer in &arm.layers {
        assert!(
            !pulled_store.digests().contains(layer),
            "{layer} was fetched"
        );
    }

    let arm64: Platform = "linux/arm64".parse().unwrap();
    pull_image(
        &client,
        &reference,
        &arm64,
        pulled_store.clone(),
        &NoProgress,
    )
    .await
    .unwrap();
    let mut expected = arm.blobs();
    expected.push(arm.manifest.clone());
    expected.sort();
    assert_eq!(pulled_store.digests(), expected);
    pulled_store.assert_all_verify();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_push_finds_blobs_and_other_repos_mount_them() {
    let registry = TestRegistry::start();
    let host = registry.host();
    let (_d, store) = DirStore::new();
    let built = build_image(
        &store,
        Flavor::Oci,
        &[(Compression::Gzip, 4000), (Compression::Zstd, 4000)],
        "amd64",
        6,
    );
    let client = client();
    let first = iref(&format!("{host}/team/one:v1"));
    let recorder = Recorder::default();
    push_image(&client, &first, &built.manifest, store.clone(), &recorder)
        .await
        .unwrap();
    let outcomes = recorder.outcomes();
    assert_eq!(outcomes.len(), 3);
    assert!(
        outcomes.values().all(|t| *t == Transfer::Uploaded),
        "{outcomes:?}"
    );

    let recorder = Recorder::default();
    push_image(&client, &first, &built.manifest, store.clone(), &recorder)
        .await
        .unwrap();
    let outcomes = recorder.outcomes();
    assert_eq!(outcomes.len(), 3);
    assert!(
        outcomes.values().all(|t| *t == Transfer::Existed),
        "{outcomes:?}"
    );

    let second = iref(&format!("{host}/team/two:v1"));
    let recorder = Recorder::default();
    push_image(&client, &second, &built.manifest, store.clone(), &recorder)
        .await
        .unwrap();
    let outcomes = recorder.outcomes();
    assert_eq!(outcomes.len(), 3);
    assert!(
        outcomes.values().all(|t| *t == Transfer::Mounted),
        "{outcomes:?}"
    );

    // push_blob on its own: an explicit mount source, then an existing blob.
    let third = iref(&format!("{host}/team/three:v1"));
    let layer = &built.layers[0];
    let size = store.blob_size(layer).unwrap();
    let outcome = client
        .push_blob(
            &third,
            layer,
            size,
            store.clone(),
            std::slice::from_ref(&first),
            &NoProgress,
        )
        .await
        .unwrap();
    assert_eq!(outcome, PushOutcome::Mounted);
    assert!(client.blob_exists(&third, layer).await.unwrap());
    let outcome = client
        .push_blob(&third, layer, size, store.clone(), &[], &NoProgress)
        .await
        .unwrap();
    assert_eq!(outcome, PushOutcome::Existed);
    assert!(
        !client
            .blob_exists(&third, &Digest::of(b"absent"))
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_push_round_trips() {
    let registry = TestRegistry::start();
    let host = registry.host();
    let (_d, store) = DirStore::new();
    let built = build_image(
        &store,
        Flavor::Oci,
        &[(Compression::Gzip, 300_000), (Compression::Zstd, 70_000)],
        "amd64",
        7,
    );
    let client = RegistryClient::new(ClientOptions {
        chunk_size: Some(64 * 1024 + 7),
        ..options()
    })
    .unwrap();
    // Through a proxy that only watches, to count the chunks.
    let proxy = FaultyProxy::start(&host);
    let reference = iref(&format!("{}/chunked/app:v1", proxy.host()));
    let recorder = Recorder::default();
    push_image(
        &client,
        &reference,
        &built.manifest,
        store.clone(),
        &recorder,
    )
    .await
    .unwrap();
    let patches: Vec<(u64, u64)> = proxy
        .seen()
        .iter()
        .filter(|s| s.method == "PATCH")
        .map(|s| {
            let range = header(&s.head, "content-range").unwrap();
            let (a, b) = range.split_once('-').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    let expected_chunks: u64 = built
        .blobs()
        .iter()
        .map(|d| store.blob_size(d).unwrap().div_ceil(64 * 1024 + 7))
        .filter(|&n| n > 1)
        .sum();
    assert_eq!(patches.len() as u64, expected_chunks, "{patches:?}");
    assert!(patches.iter().all(|(a, b)| b - a < 64 * 1024 + 7));
    assert!(
        recorder
            .outcomes()
            .values()
            .all(|t| *t == Transfer::Uploaded)
    );
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{host}/chunked/app:v1"),
    ]);
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["Digest"], built.manifest.to_string());

    let (_p, pulled) = DirStore::new();
    pull_silently(&client, &reference, pulled.clone())
        .await
        .unwrap();
    for d in built.blobs() {
        assert_eq!(
            fs::read(pulled.path(&d)).unwrap(),
            fs::read(store.path(&d)).unwrap()
        );
    }
    pulled.assert_all_verify();
}

// ---------------------------------------------------------------------------------------
// Authentication.

fn write_config(dir: &Path, value: &Value) -> PathBuf {
    let path = dir.join("config.json");
    fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path
}

fn base64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_registry_needs_the_configured_credentials() {
    let registry = TestRegistry::start_with_auth("kiln", "s3cret");
    let host = registry.host();
    let (_d, store) = DirStore::new();
    let built = build_image(
        &store,
        Flavor::Oci,
        &[(Compression::Gzip, 1000)],
        "amd64",
        8,
    );
    let reference = iref(&format!("{host}/private/app:v1"));

    // Without credentials: a clear unauthorized error.
    let anonymous = client();
    let err = push_silently(&anonymous, &reference, &built.manifest, store.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("unauthorized") && msg.contains(&host), "{msg}");
    assert!(matches!(
        anonymous.check_auth(&host).await,
        Err(RegistryError::Unauthorized { .. })
    ));

    // With credentials from a docker config file.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &json!({"auths": {host.clone(): {"auth": base64("kiln:s3cret")}}}),
    );
    let authed = RegistryClient::new(ClientOptions {
        credentials: Credentials::from_path(&config),
        ..options()
    })
    .unwrap();
    authed.check_auth(&host).await.unwrap();
    push_silently(&authed, &reference, &built.manifest, store.clone())
        .await
        .unwrap();
    let (_p, pulled) = DirStore::new();
    pull_silently(&authed, &reference, pulled.clone())
        .await
        .unwrap();
    pulled.assert_all_verify();
    assert!(matches!(
        anonymous.get_manifest(&reference).await,
        Err(RegistryError::Unauthorized { .. })
    ));

    // Wrong password: login verification fails.
    let wrong = RegistryClient::new(ClientOptions {
        credentials: Credentials::basic(&host, "kiln", "nope"),
        ..options()
    })
    .unwrap();
    let err = wrong.check_auth(&host).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    let right = RegistryClient::new(ClientOptions {
        credentials: Credentials::basic(&host, "kiln", "s3cret"),
        ..options()
    })
    .unwrap();
    right.check_auth(&host).await.unwrap();
}

/// A `docker-credential-test` helper in a fresh directory, keeping what it is told to
/// store in `<dir>/store-<server>` files.
fn credential_helper(dir: &Path) {
    let script = format!(
        r#"#!/bin/sh
set -e
state="{state}"
case "$1" in
  get)
    server=$(cat)
    f="$state/store-$(echo "$server" | tr -c 'A-Za-z0-9.\n' '_')"
    if [ -f "$f" ]; then cat "$f"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  store)
    input=$(cat)
    server=$(printf '%s' "$input" | sed 's/.*"ServerURL":"\([^"]*\)".*/\1/')
    printf '%s' "$input" > "$state/store-$(echo "$server" | tr -c 'A-Za-z0-9.\n' '_')" ;;
  erase)
    server=$(cat)
    f="$state/store-$(echo "$server" | tr -c 'A-Za-z0-9.\n' '_')"
    if [ -f "$f" ]; then rm "$f"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  *) exit 2 ;;
esac
"#,
        state = dir.display()
    );
    let path = dir.join("docker-credential-test");
    fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_helpers_store_get_and_erase() {
    let registry = TestRegistry::start_with_auth("helper", "pw-from-helper");
    let host = registry.host();
    let (_d, store) = DirStore::new();
    let built = build_image(&store, Flavor::Oci, &[(Compression::Gzip, 100)], "amd64", 9);
    let helpers = tempfile::tempdir().unwrap();
    credential_helper(helpers.path());

    for config_json in [
        json!({"credsStore": "test", "other": {"kept": true}}),
        json!({"credHelpers": {host.clone(): "test"}}),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), &config_json);
        let credentials = Credentials::from_path(&config).with_helper_path(helpers.path());
        assert_eq!(credentials.lookup(&host).unwrap(), None);
        let stored = credentials
            .store(&host, "helper", "pw-from-helper")
            .unwrap();
        assert_eq!(stored, StoredWhere::Helper("test".to_owned()));
        // The helper has it; the file does not.
        assert!(
            !fs::read_to_string(&config)
                .unwrap()
                .contains("pw-from-helper")
        );
        let client = RegistryClient::new(ClientOptions {
            credentials: credentials.clone(),
            ..options()
        })
        .unwrap();
        client.check_auth(&host).await.unwrap();
        let reference = iref(&format!("{host}/helped/app:v1"));
        push_silently(&client, &reference, &built.manifest, store.clone())
            .await
            .unwrap();
        assert!(credentials.erase(&host).unwrap());
        assert!(!credentials.erase(&host).unwrap());
        assert_eq!(credentials.lookup(&host).unwrap(), None);
    }

    // A helper that is not installed is named in the error.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &json!({"credsStore": "absent"}));
    let err = Credentials::from_path(&config)
        .with_helper_path(helpers.path())
        .lookup(&host)
        .unwrap_err();
    assert!(
        err.to_string().contains("docker-credential-absent"),
        "{err}"
    );
}

#[test]
fn stored_credentials_keep_the_rest_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &json!({
            "auths": {"other.example": {"auth": base64("a:b"), "email": "x@y"}},
            "psFormat": "table {{.ID}}",
            "proxies": {"default": {"httpProxy": "http://p"}},
        }),
    );
    let stored = store_credentials(Some(&config), "localhost:5000", "me", "pw").unwrap();
    assert_eq!(stored, StoredWhere::File(config.clone()));
    let hub = store_credentials(Some(&config), "docker.io", "hubuser", "hubpw").unwrap();
    assert_eq!(hub, StoredWhere::File(config.clone()));
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let value: Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    assert_eq!(value["psFormat"], "table {{.ID}}");
    assert_eq!(value["proxies"]["default"]["httpProxy"], "http://p");
    assert_eq!(value["auths"]["other.example"]["email"], "x@y");
    assert_eq!(value["auths"]["localhost:5000"]["auth"], base64("me:pw"));
    assert_eq!(
        value["auths"]["https://index.docker.io/v1/"]["auth"],
        base64("hubuser:hubpw")
    );
    let credentials = Credentials::from_path(&config);
    assert_eq!(
        credentials.lookup("localhost:5000").unwrap(),
        Some(kiln_image::registry::Auth::Basic {
            username: "me".to_owned(),
            password: "pw".to_owned()
        })
    );
    assert!(credentials.lookup("docker.io").unwrap().is_some());

    assert!(erase_credentials(Some(&config), "localhost:5000").unwrap());
    assert!(!erase_credentials(Some(&config), "localhost:5000").unwrap());
    let value: Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    assert!(value["auths"].get("localhost:5000").is_none());
    assert_eq!(value["psFormat"], "table {{.ID}}");
    assert_eq!(value["auths"]["other.example"]["email"], "x@y");
    assert_eq!(credentials.lookup("localhost:5000").unwrap(), None);

    // A config file in a directory that does not exist yet.
    let fresh = dir.path().join("new/sub/config.json");
    store_credentials(Some(&fresh), "r.example", "u", "p").unwrap();
    assert!(
        Credentials::from_path(&fresh)
            .lookup("r.example")
            .unwrap()
            .is_some()
    );
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".config"))
        .collect();
    assert!(left.is_empty(), "temp files left: {left:?}");
}

// ---------------------------------------------------------------------------------------
// Faults between kiln and the registry.

/// A registry, a proxy in front of it, and an image of one 1 MiB layer pushed directly.
struct Faulty {
    _registry: TestRegistry,
    proxy: FaultyProxy,
    _source_dir: tempfile::TempDir,
    source: Arc<DirStore>,
    built: Built,
}

async fn faulty_setup(push: bool) -> Faulty {
    let registry = TestRegistry::start();
    let proxy = FaultyProxy::start(&registry.host());
    let (source_dir, source) = DirStore::new();
    let built = build_image(
        &source,
        Flavor::Oci,
        &[(Compression::Gzip, 1 << 20), (Compression::Gzip, 300)],
        "amd64",
        10,
    );
    if push {
        let reference = iref(&format!("{}/faults/app:v1", registry.host()));
        push_silently(&client(), &reference, &built.manifest, source.clone())
            .await
            .unwrap();
    }
    Faulty {
        _registry: registry,
        proxy,
        _source_dir: source_dir,
        source,
        built,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_resumes_after_cut_connections() {
    let f = faulty_setup(true).await;
    let big = f.built.layers[0].clone();
    f.proxy.add(
        Rule::new(Fault::CutResponse { bytes: 200_000 }, 3)
            .method("GET")
            .path(&format!("/blobs/{big}")),
    );
    let reference = iref(&format!("{}/faults/app:v1", f.proxy.host()));
    let (_d, store) = DirStore::new();
    pull_silently(&client(), &reference, store.clone())
        .await
        .unwrap();
    assert_eq!(
        fs::read(store.path(&big)).unwrap(),
        fs::read(f.source.path(&big)).unwrap()
    );
    store.assert_all_verify();
    assert_eq!(f.proxy.faults_applied(), 3);
    let ranged: Vec<_> = f
        .proxy
        .seen()
        .into_iter()
        .filter(|s| s.path.contains(big.hex()))
        .filter(|s| s.head.to_ascii_lowercase().contains("range: bytes="))
        .collect();
    assert_eq!(ranged.len(), 3, "every retry resumes with a range request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_blob_is_refused_and_not_stored() {
    let f = faulty_setup(true).await;
    let big = f.built.layers[0].clone();
    f.proxy.add(
        Rule::new(Fault::FlipBody { offset: 4321 }, 100)
            .method("GET")
            .path(&format!("/blobs/{big}")),
    );
    let reference = iref(&format!("{}/faults/app:v1", f.proxy.host()));
    let (_d, store) = DirStore::new();
    let err = pull_silently(&client(), &reference, store.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::DigestMismatch { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&big.to_string()) && msg.contains(&format!("{}/faults/app", f.proxy.host())),
        "{msg}"
    );
    assert!(!store.has_blob(&big));
    assert!(
        !store.has_blob(&f.built.manifest),
        "no manifest without its blobs"
    );
    store.assert_all_verify();

    // The same through fetch_blob on its own, with progress.
    let err = client()
        .fetch_blob(&reference, &big, None, store.clone(), &NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::DigestMismatch { .. }),
        "{err:?}"
    );
    assert!(!store.has_blob(&big));
    store.assert_all_verify();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_answers_are_retried() {
    let f = faulty_setup(true).await;
    f.proxy.add(Rule::new(Fault::Unavailable, 3));
    let reference = iref(&format!("{}/faults/app:v1", f.proxy.host()));
    let (_d, store) = DirStore::new();
    pull_silently(&client(), &reference, store.clone())
        .await
        .unwrap();
    store.assert_all_verify();
    assert_eq!(f.proxy.faults_applied(), 3);

    // More failures than attempts: a clear error naming the status and the place.
    f.proxy.add(
        Rule::new(Fault::Unavailable, 100)
            .method("GET")
            .path("/manifests/"),
    );
    let err = client().get_manifest(&reference).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::Status { status: 503, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("faults/app"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_survives_cut_connections() {
    for chunk_size in [None, Some(256 * 1024)] {
        let f = faulty_setup(false).await;
        // Cut uploads halfway through their bodies, and lose the registry's answers.
        f.proxy.add(
            Rule::new(Fault::CutRequest { bytes: 100_000 }, 2)
                .path("/blobs/uploads/")
                .method(if chunk_size.is_some() { "PATCH" } else { "PUT" }),
        );
        f.proxy.add(
            Rule::new(Fault::CutResponse { bytes: 5 }, 1)
                .method("PUT")
                .path("/blobs/uploads/"),
        );
        f.proxy.add(
            Rule::new(Fault::CutResponse { bytes: 5 }, 1)
                .method("POST")
                .path("/blobs/uploads/"),
        );
        f.proxy.add(
            Rule::new(Fault::CutResponse { bytes: 5 }, 1)
                .method("PUT")
                .path("/manifests/"),
        );
        let client = RegistryClient::new(ClientOptions {
            chunk_size,
            max_concurrent_blobs: 1,
            ..options()
        })
        .unwrap();
        let reference = iref(&format!("{}/faults/pushed:v1", f.proxy.host()));
        push_silently(&client, &reference, &f.built.manifest, f.source.clone())
            .await
            .unwrap();
        assert!(f.proxy.faults_applied() >= 4, "{:?}", f.proxy.seen());
        let (_d, store) = DirStore::new();
        pull_silently(&client, &reference, store.clone())
            .await
            .unwrap();
        for d in f.built.blobs() {
            assert_eq!(
                fs::read(store.path(&d)).unwrap(),
                fs::read(f.source.path(&d)).unwrap()
            );
        }
        store.assert_all_verify();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_gives_up_cleanly_when_every_upload_breaks() {
    let f = faulty_setup(false).await;
    f.proxy.add(
        Rule::new(Fault::CutRequest { bytes: 50_000 }, 1000)
            .method("PUT")
            .path("/blobs/uploads/"),
    );
    let reference = iref(&format!("{}/faults/broken:v1", f.proxy.host()));
    let big = f.built.layers[0].clone();
    let size = f.source.blob_size(&big).unwrap();
    let err = client()
        .push_blob(&reference, &big, size, f.source.clone(), &[], &NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Transport { attempts: 5, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&f.proxy.host()) && msg.contains(&big.to_string()),
        "{msg}"
    );
    f.proxy.clear();
    assert!(!client().blob_exists(&reference, &big).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_refuses_a_source_that_does_not_match_its_digest() {
    let registry = TestRegistry::start();
    let (_d, store) = DirStore::new();
    let (real, _) = store.put_blob(&noise(1, 10_000)).unwrap();
    // A blob whose file was altered after it was stored.
    let mut bytes = fs::read(store.path(&real)).unwrap();
    bytes[10] ^= 1;
    fs::write(store.path(&real), &bytes).unwrap();
    let reference = iref(&format!("{}/bad/source:v1", registry.host()));
    for chunk_size in [None, Some(4096)] {
        let client = RegistryClient::new(ClientOptions {
            chunk_size,
            ..options()
        })
        .unwrap();
        let err = client
            .push_blob(&reference, &real, 10_000, store.clone(), &[], &NoProgress)
            .await
            .unwrap_err();
        assert!(
            matches!(err, RegistryError::DigestMismatch { .. }),
            "{err:?}"
        );
        assert!(!client.blob_exists(&reference, &real).await.unwrap());
        // Wrong size from the descriptor.
        let err = client
            .push_blob(&reference, &real, 9_000, store.clone(), &[], &NoProgress)
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::SizeMismatch { .. }), "{err:?}");
    }
}

// ---------------------------------------------------------------------------------------
// A registry that answers nonsense.

/// Answers a request given its method, path and whole head.
type Responder = dyn Fn(&str, &str, &str) -> Vec<u8> + Send + Sync;

/// A fake registry on 127.0.0.1 answering each request with `respond(method, path, head)`.
fn canned_registry(respond: Arc<Responder>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let respond = respond.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let mut words = text.split_whitespace();
                let method = words.next().unwrap_or("").to_owned();
                let path = words.next().unwrap_or("").to_owned();
                let _ = conn.write_all(&respond(&method, &path, &text));
                let _ = conn.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    addr.to_string()
}

fn answer(status: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_registry_answers_become_clear_errors() {
    let good_manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": Digest::of(b"{}").to_string(), "size": 2},
        "layers": [],
    }))
    .unwrap();
    let good_digest = Digest::of(&good_manifest);
    let blob = noise(2, 20).to_vec();
    let blob_digest = Digest::of(&blob);
    let gm = good_manifest.clone();
    let b = blob.clone();
    let host = canned_registry(Arc::new(move |method: &str, path: &str, _head: &str| {
        let oci = (
            "Content-Type",
            "application/vnd.oci.image.manifest.v1+json".to_owned(),
        );
        let index = (
            "Content-Type",
            "application/vnd.oci.image.index.v1+json".to_owned(),
        );
        match (method, path) {
            (_, "/v2/") => answer("200 OK", &[], b"{}"),
            ("GET", "/v2/r/manifests/badjson") => {
                answer("200 OK", &[oci], br#"{"schemaVersion": 2, "layers": ["#)
            }
            ("GET", p) if p.starts_with("/v2/r/manifests/sha256:") => {
                // Whatever digest is asked for, the same (wrong) document.
                answer("200 OK", &[oci], &gm)
            }
            ("GET", "/v2/r/manifests/liar") => answer(
                "200 OK",
                &[oci, ("Docker-Content-Digest", Digest::of(b"other").to_string())],
                &gm,
            ),
            ("GET", "/v2/r/manifests/huge") => {
                let mut out = format!(
                    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
                    oci.1,
                    MANIFEST_LIMIT + 1
                )
                .into_bytes();
                out.extend(std::iter::repeat_n(b' ', 1000));
                out
            }
            ("GET", "/v2/r/manifests/endless") => {
                // No length: the body runs until the connection closes.
                let mut out = format!(
                    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: {}\r\n\r\n",
                    oci.1
                )
                .into_bytes();
                out.extend(std::iter::repeat_n(b' ', (MANIFEST_LIMIT + 10) as usize));
                out
            }
            ("GET", "/v2/r/manifests/badindex") => answer(
                "200 OK",
                &[index],
                br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:zz","size":1}]}"#,
            ),
            ("GET", "/v2/r/manifests/missing") => answer(
                "404 Not Found",
                &[("Content-Type", "application/json".to_owned())],
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            ),
            ("GET", "/v2/r/manifests/oddtype") => answer(
                "200 OK",
                &[("Content-Type", "text/plain".to_owned())],
                br#"{"mediaType":"application/vnd.example.thing","schemaVersion":2}"#,
            ),
            ("GET", p) if p.starts_with("/v2/r/blobs/") => answer("200 OK", &[], &b),
            ("HEAD", p) if p.starts_with("/v2/r/blobs/") => {
                answer("500 Internal Server Error", &[], b"")
            }
            ("GET", "/v2/r/manifests/fire") => answer(
                "500 Internal Server Error",
                &[("Content-Type", "application/json".to_owned())],
                br#"{"errors":[{"code":"UNKNOWN","message":"disk on fire"}]}"#,
            ),
            ("HEAD", p) if p.starts_with("/v2/nolocation/blobs/") => answer("404 Not Found", &[], b""),
            ("POST", "/v2/nolocation/blobs/uploads/") => answer("202 Accepted", &[], b""),
            _ => answer("400 Bad Request", &[], b"garbage that is not json"),
        }
    }));
    let client = client();
    let r = |s: &str| iref(&format!("{host}/r{s}"));

    let err = client.get_manifest(&r(":badjson")).await.unwrap_err();
    assert!(matches!(err, RegistryError::BadJson { .. }), "{err:?}");

    let wanted = Digest::of(b"what I asked for");
    let err = client
        .get_manifest(&r(&format!("@{wanted}")))
        .await
        .unwrap_err();
    match &err {
        RegistryError::DigestMismatch {
            expected,
            actual,
            place,
        } => {
            assert_eq!(*expected, wanted);
            assert_eq!(*actual, good_digest);
            assert_eq!(place.to_string(), format!("{host}/r"));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains(&wanted.to_string()));
    // Asked by its own digest, the same document is fine.
    let m = client
        .get_manifest(&r(&format!("@{good_digest}")))
        .await
        .unwrap();
    assert_eq!(m.bytes, good_manifest);

    let err = client.get_manifest(&r(":liar")).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::DigestMismatch { .. }),
        "{err:?}"
    );

    for tag in [":huge", ":endless"] {
        let err = client.get_manifest(&r(tag)).await.unwrap_err();
        assert!(
            matches!(
                err,
                RegistryError::TooLarge {
                    limit: MANIFEST_LIMIT,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    let err = client.resolve(&r(":badindex"), &amd64()).await.unwrap_err();
    assert!(matches!(err, RegistryError::BadJson { .. }), "{err:?}");

    let err = client.get_manifest(&r(":missing")).await.unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("MANIFEST_UNKNOWN"), "{err}");

    let err = client.resolve(&r(":oddtype"), &amd64()).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::UnsupportedMediaType { .. }),
        "{err:?}"
    );

    // A blob longer than its descriptor says: refused, nothing stored.
    let (_d, store) = DirStore::new();
    let err = client
        .fetch_blob(&r(""), &blob_digest, Some(10), store.clone(), &NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::SizeMismatch { expected: 10, .. }),
        "{err:?}"
    );
    assert!(store.digests().is_empty());
    store.assert_all_verify();
    // The right size goes through.
    let n = client
        .fetch_blob(&r(""), &blob_digest, Some(20), store.clone(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(n, 20);
    assert_eq!(
        client
            .get_blob_bytes(&r(""), &blob_digest, 100)
            .await
            .unwrap(),
        blob
    );
    let err = client
        .get_blob_bytes(&r(""), &blob_digest, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::TooLarge { .. }), "{err:?}");

    // 500s, retried, then reported with the registry's words when it has some.
    let err = client.blob_exists(&r(""), &blob_digest).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::Status { status: 500, .. }),
        "{err:?}"
    );
    let err = client.get_manifest(&r(":fire")).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, RegistryError::Status { status: 500, .. }),
        "{err:?}"
    );
    assert!(
        msg.contains("HTTP 500: UNKNOWN: disk on fire") && msg.contains("/r"),
        "{msg}"
    );

    // An upload session without a Location.
    let err = client
        .push_blob(
            &iref(&format!("{host}/nolocation:v1")),
            &blob_digest,
            20,
            store.clone(),
            &[],
            &NoProgress,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::BadHeader {
                header: "Location",
                ..
            }
        ),
        "{err:?}"
    );
}

/// The value of header `name` in a request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Percent-decodes a query string value.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// The values of query parameter `name` in `path`.
fn query_values(path: &str, name: &str) -> Vec<String> {
    let Some((_, query)) = path.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| unescape(v))
        .collect()
}

/// The scopes a token request asked for, and whether it carried the right credentials.
type TokenRequest = (Vec<String>, bool);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_cover_the_scopes_asked_for() {
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": Digest::of(b"{}").to_string(), "size": 2},
        "layers": [],
    }))
    .unwrap();
    // Token requests seen: (scopes, whether they carried the right basic auth).
    let token_requests: Arc<Mutex<Vec<TokenRequest>>> = Arc::default();
    let seen = token_requests.clone();
    let good_basic = format!("Basic {}", base64("u:pw"));
    let served = manifest.clone();
    let host = canned_registry(Arc::new(move |method: &str, path: &str, head: &str| {
        let this = header(head, "host").unwrap_or("").to_owned();
        let challenge = |scope: &str| {
            answer(
                "401 Unauthorized",
                &[(
                    "WWW-Authenticate",
                    format!(r#"Bearer realm="http://{this}/token",service="fake",scope="{scope}""#),
                )],
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            )
        };
        if path.starts_with("/token") {
            let scopes = query_values(path, "scope");
            assert_eq!(query_values(path, "service"), ["fake"]);
            let auth = header(head, "authorization");
            let good = auth == Some(good_basic.as_str());
            seen.lock().unwrap().push((scopes.clone(), good));
            if auth.is_some() && !good {
                return answer(
                    "401 Unauthorized",
                    &[],
                    br#"{"errors":[{"code":"UNAUTHORIZED","message":"bad creds"}]}"#,
                );
            }
            let token = format!("tok:{}", scopes.join(" "));
            // Anonymous answers use OAuth2's field name, others Docker's.
            let body = if good {
                json!({"token": token, "expires_in": 300})
            } else {
                json!({"access_token": token})
            };
            return answer("200 OK", &[], &serde_json::to_vec(&body).unwrap());
        }
        let granted: Vec<String> = header(head, "authorization")
            .and_then(|a| a.strip_prefix("Bearer tok:"))
            .map(|t| {
                t.split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if path == "/v2/" {
            return if header(head, "authorization").is_some() {
                answer("200 OK", &[], b"{}")
            } else {
                challenge("")
            };
        }
        let rest = path.trim_start_matches("/v2/");
        let repo = rest.split('/').next().unwrap_or("");
        let mut needed = vec![match method {
            "GET" | "HEAD" => format!("repository:{repo}:pull"),
            _ => format!("repository:{repo}:pull,push"),
        }];
        for from in query_values(path, "from") {
            needed.push(format!("repository:{from}:pull"));
        }
        if !needed.iter().all(|n| granted.contains(n)) {
            return challenge(&needed.join(" "));
        }
        match (method, rest) {
            ("GET", "a/manifests/t") => answer(
                "200 OK",
                &[(
                    "Content-Type",
                    "application/vnd.oci.image.manifest.v1+json".to_owned(),
                )],
                &served,
            ),
            ("HEAD", p) if p.starts_with("b/blobs/") => answer("404 Not Found", &[], b""),
            ("POST", p) if p.starts_with("b/blobs/uploads/?mount=") => answer(
                "201 Created",
                &[("Location", "/v2/b/blobs/sha256:x".to_owned())],
                b"",
            ),
            _ => answer("404 Not Found", &[], b""),
        }
    }));
    let a = iref(&format!("{host}/a:t"));
    let b = iref(&format!("{host}/b:t"));

    let authed = RegistryClient::new(ClientOptions {
        credentials: Credentials::basic(&host, "u", "pw"),
        ..options()
    })
    .unwrap();
    let m = authed.get_manifest(&a).await.unwrap();
    assert_eq!(m.bytes, manifest);
    authed.get_manifest(&a).await.unwrap();
    assert_eq!(
        *token_requests.lock().unwrap(),
        [(vec!["repository:a:pull".to_owned()], true)],
        "one token, cached for the second request"
    );

    // A mount asks for a token covering the source repository too.
    let digest = Digest::of(b"layer");
    let (_d, store) = DirStore::new();
    let outcome = authed
        .push_blob(
            &b,
            &digest,
            5,
            store.clone(),
            std::slice::from_ref(&a),
            &NoProgress,
        )
        .await
        .unwrap();
    assert_eq!(outcome, PushOutcome::Mounted);
    assert!(
        token_requests.lock().unwrap().contains(&(
            vec![
                "repository:b:pull,push".to_owned(),
                "repository:a:pull".to_owned()
            ],
            true
        )),
        "{:?}",
        token_requests.lock().unwrap()
    );
    authed.check_auth(&host).await.unwrap();
    assert!(token_requests.lock().unwrap().contains(&(vec![], true)));

    // Anonymous tokens are enough to pull, not to log in.
    let anonymous = client();
    anonymous.get_manifest(&a).await.unwrap();
    assert!(
        token_requests
            .lock()
            .unwrap()
            .contains(&(vec!["repository:a:pull".to_owned()], false))
    );
    let err = anonymous.check_auth(&host).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");

    // Wrong credentials: the token endpoint's refusal, in its words.
    let wrong = RegistryClient::new(ClientOptions {
        credentials: Credentials::basic(&host, "u", "nope"),
        ..options()
    })
    .unwrap();
    let err = wrong.get_manifest(&a).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().contains("bad creds"), "{err}");
    assert!(matches!(
        wrong.check_auth(&host).await,
        Err(RegistryError::Unauthorized { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// Memory.

/// Peak resident memory of this test process in KiB (`VmHWM`).
fn peak_rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_blobs_stream_in_bounded_memory() {
    // VmHWM is the whole process's, and tests running beside this one would count:
    // the measurement runs alone, in a child process of this test binary.
    if std::env::var_os("KILN_REGISTRY_MEMORY_ALONE").is_none() {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "large_blobs_stream_in_bounded_memory",
                "--test-threads=1",
                "--nocapture",
            ])
            .env("KILN_REGISTRY_MEMORY_ALONE", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    // Larger than the 100 MiB budget.
    const SIZE: u64 = 112 << 20;
    let registry = TestRegistry::start();
    let host = registry.host();
    let (_d, store) = DirStore::new();
    // A zero-filled blob, sparse on disk, hashed by coreutils (an unoptimised test
    // build hashes slowly).
    let tmp = store.root.join("tmp/big");
    fs::File::create(&tmp).unwrap().set_len(SIZE).unwrap();
    let out = Command::new("sha256sum").arg(&tmp).output().unwrap();
    let hex = String::from_utf8(out.stdout).unwrap();
    let digest: Digest = format!("sha256:{}", &hex[..64]).parse().unwrap();
    fs::rename(&tmp, store.path(&digest)).unwrap();

    let mono = iref(&format!("{host}/big/mono:v1"));
    let chunked = iref(&format!("{host}/big/chunked:v1"));
    // Chunks larger than the memory budget: a buffered chunk would show.
    for (reference, chunk_size) in [(&mono, None), (&chunked, Some(104 << 20))] {
        let client = RegistryClient::new(ClientOptions {
            chunk_size,
            ..options()
        })
        .unwrap();
        let outcome = client
            .push_blob(reference, &digest, SIZE, store.clone(), &[], &NoProgress)
            .await
            .unwrap();
        assert_eq!(outcome, PushOutcome::Uploaded);
    }
    let (_p, pulled) = DirStore::new();
    let n = client()
        .fetch_blob(&chunked, &digest, Some(SIZE), pulled.clone(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(n, SIZE);
    assert_eq!(fs::metadata(pulled.path(&digest)).unwrap().len(), SIZE);
    let peak = peak_rss_kib();
    assert!(peak < 100 * 1024, "peak RSS {peak} KiB moving {SIZE} bytes");
}
