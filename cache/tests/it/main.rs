//! Integration tests of the store: one `mod` per area, each test in its own temp root.

mod content;
mod gc;
mod kept;
mod layout;
mod snapshot;

use std::path::{Path, PathBuf};

use kiln_cache::ContentStore;
use kiln_image::Digest;

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

/// An image written into a content store: uncompressed layers, so each layer's blob
/// digest is also its diff ID.
pub(crate) struct TestImage {
    pub(crate) manifest: Digest,
    pub(crate) config: Digest,
    pub(crate) layers: Vec<Digest>,
}

impl TestImage {
    pub(crate) fn write(content: &ContentStore, layers: &[&[u8]]) -> TestImage {
        let layers: Vec<Digest> = layers.iter().map(|l| content.put(l).unwrap()).collect();
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|d| d.to_string()).collect::<Vec<_>>() },
        });
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let config = content.put(&config_bytes).unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config, config_bytes.len()),
            "layers": layers.iter().map(|d| descriptor(
                "application/vnd.oci.image.layer.v1.tar", d, content.size(d).unwrap() as usize)).collect::<Vec<_>>(),
        });
        let manifest = content
            .put(&serde_json::to_vec(&manifest).unwrap())
            .unwrap();
        TestImage {
            manifest,
            config,
            layers,
        }
    }

    /// An index over `manifests`, written into the store.
    pub(crate) fn index(content: &ContentStore, manifests: &[&TestImage]) -> Digest {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests.iter().map(|m| descriptor(
                "application/vnd.oci.image.manifest.v1+json", &m.manifest,
                content.size(&m.manifest).unwrap() as usize)).collect::<Vec<_>>(),
        });
        content.put(&serde_json::to_vec(&index).unwrap()).unwrap()
    }

    /// Every blob of the image.
    pub(crate) fn blobs(&self) -> Vec<Digest> {
        let mut out = vec![self.manifest.clone(), self.config.clone()];
        out.extend(self.layers.iter().cloned());
        out
    }
}

fn descriptor(media_type: &str, digest: &Digest, size: usize) -> serde_json::Value {
    serde_json::json!({ "mediaType": media_type, "digest": digest.to_string(), "size": size })
}
