//! Round trips through both formats, Docker 20.10's legacy layout, and hostile archives,
//! against an in-memory blob store.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::Mutex;

use flate2::Compression as GzLevel;
use flate2::write::GzEncoder;
use oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType};
use serde_json::json;

use super::*;

/// Blobs in a map; writes are verified as the trait demands.
#[derive(Default)]
struct MemStore {
    blobs: Mutex<HashMap<Digest, Vec<u8>>>,
}

impl BlobRead for MemStore {
    fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send + '_>> {
        let data = self.get(digest)?;
        Ok(Box::new(io::Cursor::new(data)))
    }

    fn blob_size(&self, digest: &Digest) -> io::Result<u64> {
        Ok(self.get(digest)?.len() as u64)
    }
}

impl BlobWrite for MemStore {
    fn has_blob(&self, digest: &Digest) -> bool {
        self.blobs.lock().unwrap().contains_key(digest)
    }

    fn write_blob(&self, expected: &Digest, data: &mut dyn Read) -> io::Result<u64> {
        let mut buf = Vec::new();
        data.read_to_end(&mut buf)?;
        if &Digest::of(&buf) != expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "digest mismatch",
            ));
        }
        let len = buf.len() as u64;
        self.blobs.lock().unwrap().insert(expected.clone(), buf);
        Ok(len)
    }
}

impl MemStore {
    fn get(&self, digest: &Digest) -> io::Result<Vec<u8>> {
        self.blobs
            .lock()
            .unwrap()
            .get(digest)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
}

/// A one-file layer tar.
fn layer_tar(file: &str, content: &[u8]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    tar.append_data(&mut header, file, content).unwrap();
    tar.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), GzLevel::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn config_json(diff_ids: &[Digest]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-02T03:04:05Z",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2024-01-02T03:04:05Z", "comment": "Imported from -"}],
    }))
    .unwrap()
}

/// Puts a two-layer image (one gzip, one plain) into `store`; returns its manifest.
fn make_image(store: &MemStore) -> Descriptor {
    let base = layer_tar("hello.txt", b"hello\n");
    let top = layer_tar("world.txt", b"world\n");
    let base_gz = gzip(&base);
    let config = config_json(&[Digest::of(&base), Digest::of(&top)]);
    let (config_digest, config_size) = store.put_blob(&config).unwrap();
    let (base_digest, base_size) = store.put_blob(&base_gz).unwrap();
    let (top_digest, top_size) = store.put_blob(&top).unwrap();
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_size,
            &config_digest,
        ))
        .layers(vec![
            Descriptor::new(MediaType::ImageLayerGzip, base_size, &base_digest),
            Descriptor::new(MediaType::ImageLayer, top_size, &top_digest),
        ])
        .build()
        .unwrap();
    let (digest, size) = store
        .put_blob(&serde_json::to_vec(&manifest).unwrap())
        .unwrap();
    Descriptor::new(MediaType::ImageManifest, size, &digest)
}

fn name(s: &str) -> ImageRef {
    s.parse().unwrap()
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Tar members, in order, as (name, bytes) or (name, link target).
enum Entry<'a> {
    File(&'a str, Vec<u8>),
    Symlink(&'a str, &'a str),
}

fn tar_of(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for entry in entries {
        match entry {
            Entry::File(path, data) => {
                let mut header = tar::Header::new_gnu();
                header.set_size(data.len() as u64);
                header.set_mode(0o644);
                // `append_data` refuses `..`; write the raw name to build hostile archives.
                let raw = header.as_old_mut();
                raw.name[..path.len()].copy_from_slice(path.as_bytes());
                header.set_cksum();
                tar.append(&header, &data[..]).unwrap();
            }
            Entry::Symlink(path, target) => {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                tar.append_link(&mut header, path, target).unwrap();
            }
        }
    }
    tar.into_inner().unwrap()
}

fn saved_config_digest(store: &MemStore, manifest: &Descriptor) -> Digest {
    let m: oci_spec::image::ImageManifest = serde_json::from_slice(
        &store
            .read_blob(&Digest::try_from(manifest.digest()).unwrap())
            .unwrap(),
    )
    .unwrap();
    Digest::try_from(m.config().digest()).unwrap()
}

#[test]
fn docker_format_round_trips_with_names_and_manifests() {
    let src = MemStore::default();
    let manifest = make_image(&src);
    let images = [ArchiveImage {
        names: vec![name("busybox:1"), name("localhost:5000/x/y:2")],
        manifest: manifest.clone(),
    }];
    let tar = save(Vec::new(), ArchiveFormat::Docker, &images, &src).unwrap();

    // Docker's view: manifest.json with familiar names and blob paths.
    let mut archive = tar::Archive::new(&tar[..]);
    let mut docker_manifest = None;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("manifest.json") {
            let mut s = String::new();
            entry.read_to_string(&mut s).unwrap();
            docker_manifest = Some(s);
        }
    }
    let docker_manifest: serde_json::Value =
        serde_json::from_str(&docker_manifest.expect("manifest.json written")).unwrap();
    assert_eq!(
        docker_manifest[0]["RepoTags"],
        json!(["busybox:1", "localhost:5000/x/y:2"])
    );
    assert_eq!(docker_manifest[0]["Layers"].as_array().unwrap().len(), 2);

    let dst = MemStore::default();
    let loaded = load(&tar[..], &dst, scratch().path()).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].manifest.digest(), manifest.digest());
    assert_eq!(loaded[0].names, images[0].names);
    assert_eq!(loaded[0].config, saved_config_digest(&src, &manifest));
}

#[test]
fn oci_format_round_trips_gzip_compressed() {
    let src = MemStore::default();
    let manifest = make_image(&src);
    let images = [ArchiveImage {
        names: vec![name("busybox:latest")],
        manifest: manifest.clone(),
    }];
    let tar = save(Vec::new(), ArchiveFormat::Oci, &images, &src).unwrap();
    let dst = MemStore::default();
    let loaded = load(&gzip(&tar)[..], &dst, scratch().path()).unwrap();
    assert_eq!(loaded[0].manifest.digest(), manifest.digest());
    assert_eq!(loaded[0].names, vec![name("busybox:latest")]);
}

#[test]
fn untagged_images_round_trip_untagged() {
    let src = MemStore::default();
    let manifest = make_image(&src);
    let images = [ArchiveImage {
        names: vec![],
        manifest,
    }];
    for format in [ArchiveFormat::Docker, ArchiveFormat::Oci] {
        let tar = save(Vec::new(), format, &images, &src).unwrap();
        let loaded = load(&tar[..], &MemStore::default(), scratch().path()).unwrap();
        assert!(loaded[0].names.is_empty());
    }
}

/// Docker 20.10's layout: `<id>/layer.tar` (one of them a symlink to another's),
/// `<config hex>.json`, `manifest.json` and no index.
fn legacy_archive(layer: &[u8], diff_id: &Digest) -> (Vec<u8>, Digest) {
    let config = config_json(std::slice::from_ref(diff_id));
    let config_digest = Digest::of(&config);
    let config_name = format!("{}.json", config_digest.hex());
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": ["legacy:1"],
        "Layers": ["bbbb/layer.tar"],
    }]))
    .unwrap();
    let tar = tar_of(&[
        Entry::File("aaaa/VERSION", b"1.0".to_vec()),
        Entry::File("aaaa/json", b"{}".to_vec()),
        Entry::File("aaaa/layer.tar", layer.to_vec()),
        Entry::Symlink("bbbb/layer.tar", "../aaaa/layer.tar"),
        Entry::File(&config_name, config),
        Entry::File("manifest.json", manifest),
        Entry::File("repositories", b"{\"legacy\":{\"1\":\"bbbb\"}}".to_vec()),
    ]);
    (tar, config_digest)
}

#[test]
fn legacy_docker_archives_load_with_plain_or_compressed_layers() {
    let layer = layer_tar("f", b"data");
    let diff_id = Digest::of(&layer);
    for (blob, media_type) in [
        (layer.clone(), MediaType::ImageLayer),
        (gzip(&layer), MediaType::ImageLayerGzip),
    ] {
        let (tar, config) = legacy_archive(&blob, &diff_id);
        let store = MemStore::default();
        let loaded = load(&tar[..], &store, scratch().path()).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].names, vec![name("legacy:1")]);
        assert_eq!(loaded[0].config, config);
        let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(
            &store
                .read_blob(&Digest::try_from(loaded[0].manifest.digest()).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(manifest.layers()[0].media_type(), &media_type);
        assert_eq!(
            Digest::try_from(manifest.layers()[0].digest()).unwrap(),
            Digest::of(&blob)
        );
    }
}

#[test]
fn a_layer_with_the_wrong_diff_id_is_refused() {
    let layer = layer_tar("f", b"data");
    let (tar, _) = legacy_archive(&layer, &Digest::of(b"something else"));
    let err = load(&tar[..], &MemStore::default(), scratch().path()).unwrap_err();
    assert!(matches!(err, ArchiveError::DiffIdMismatch { .. }), "{err}");
}

#[test]
fn member_names_escaping_the_archive_are_refused() {
    let tar = tar_of(&[Entry::File("../evil", b"x".to_vec())]);
    let err = load(&tar[..], &MemStore::default(), scratch().path()).unwrap_err();
    assert!(matches!(err, ArchiveError::UnsafeName { .. }), "{err}");

    let tar = tar_of(&[Entry::Symlink("layer.tar", "../../etc/passwd")]);
    let err = load(&tar[..], &MemStore::default(), scratch().path()).unwrap_err();
    assert!(matches!(err, ArchiveError::UnsafeLink { .. }), "{err}");
}

#[test]
fn manifests_naming_missing_members_are_refused() {
    let manifest = serde_json::to_vec(&json!([{
        "Config": "nope.json", "RepoTags": ["x:1"], "Layers": [],
    }]))
    .unwrap();
    let tar = tar_of(&[Entry::File("manifest.json", manifest)]);
    let err = load(&tar[..], &MemStore::default(), scratch().path()).unwrap_err();
    assert!(matches!(err, ArchiveError::MissingMember { .. }), "{err}");
}

#[test]
fn blobs_not_matching_their_names_are_refused() {
    let bogus = format!("blobs/sha256/{}", Digest::of(b"one").hex());
    let tar = tar_of(&[Entry::File(&bogus, b"two".to_vec())]);
    let err = load(&tar[..], &MemStore::default(), scratch().path()).unwrap_err();
    assert!(matches!(err, ArchiveError::BlobMismatch { .. }), "{err}");
}

#[test]
fn indexes_pointing_at_absent_blobs_are_refused() {
    let absent = Digest::of(b"not here");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": absent.to_string(),
            "size": 8,
        }],
    }))
    .unwrap();
    let tar = tar_of(&[
        Entry::File("oci-layout", b"{\"imageLayoutVersion\":\"1.0.0\"}".to_vec()),
        Entry::File("index.json", index),
    ]);
    let err = load(&tar[..], &MemStore::default(), scratch().path()).unwrap_err();
    assert!(matches!(err, ArchiveError::MissingBlob { .. }), "{err}");
}

#[test]
fn huge_metadata_is_refused_before_it_is_read() {
    let huge = vec![b' '; (METADATA_LIMIT + 1) as usize];
    let tar = tar_of(&[Entry::File("manifest.json", huge)]);
    let err = load(&tar[..], &MemStore::default(), scratch().path()).unwrap_err();
    assert!(matches!(err, ArchiveError::TooLarge { .. }), "{err}");
}

#[test]
fn saving_notices_a_corrupted_blob() {
    let src = MemStore::default();
    let manifest = make_image(&src);
    let config = saved_config_digest(&src, &manifest);
    let mut corrupted = src.get(&config).unwrap();
    corrupted[0] ^= 1;
    src.blobs.lock().unwrap().insert(config.clone(), corrupted);
    let images = [ArchiveImage {
        names: vec![],
        manifest,
    }];
    let err = save(Vec::new(), ArchiveFormat::Oci, &images, &src).unwrap_err();
    assert!(
        matches!(err, ArchiveError::ReadBlob { ref digest, .. } if digest == &config),
        "{err}"
    );
}

/// An OCI archive of one image whose config blob is `config` (layers as make_image's).
fn oci_archive_with_config(config: &[u8]) -> Vec<u8> {
    let src = MemStore::default();
    let manifest = make_image(&src);
    let good = saved_config_digest(&src, &manifest);
    let mut parsed: serde_json::Value = serde_json::from_slice(
        &src.get(&manifest.digest().to_string().parse().unwrap())
            .unwrap(),
    )
    .unwrap();
    let (digest, size) = src.put_blob(config).unwrap();
    parsed["config"]["digest"] = json!(digest.to_string());
    parsed["config"]["size"] = json!(size);
    let (manifest_digest, manifest_size) =
        src.put_blob(&serde_json::to_vec(&parsed).unwrap()).unwrap();
    assert_ne!(good, digest);
    let images = [ArchiveImage {
        names: vec![],
        manifest: Descriptor::new(MediaType::ImageManifest, manifest_size, &manifest_digest),
    }];
    save(Vec::new(), ArchiveFormat::Oci, &images, &src).unwrap()
}

#[test]
fn oci_configs_that_builds_cannot_read_are_refused_naming_the_config() {
    let bad = b"{\"rootfs\": 3}";
    let err = load(
        &oci_archive_with_config(bad)[..],
        &MemStore::default(),
        scratch().path(),
    )
    .unwrap_err();
    assert!(matches!(err, ArchiveError::Json { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("config {}", Digest::of(bad))),
        "{err}"
    );

    let one_layer = config_json(&[Digest::of(b"only one")]);
    let err = load(
        &oci_archive_with_config(&one_layer)[..],
        &MemStore::default(),
        scratch().path(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ArchiveError::LayerCount {
                layers: 2,
                diff_ids: 1,
                ..
            }
        ),
        "{err}"
    );
}
