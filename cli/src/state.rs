//! What the image commands work on: the store root (content, snapshots, its lock) and
//! the image store beside it, opened together so every command sees one root.

use std::path::Path;

use anyhow::Context as _;
use kiln_cache::{ContentStore, Store};
use kiln_image::config::ImageConfig;
use kiln_image::oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType};
use kiln_image::store::{ImageStore, ImageTarget, Resolved};
use kiln_image::{BlobRead, BlobWrite, Digest, ImageRef};

/// An opened root.
pub struct State {
    /// Blobs, snapshots and the root lock.
    pub store: Store,
    /// Names of images.
    pub images: ImageStore,
}

impl State {
    /// Opens the state under `root`, creating it if needed.
    pub fn open(root: &Path) -> anyhow::Result<State> {
        let store =
            Store::open(root).with_context(|| format!("opening kiln root {}", root.display()))?;
        Ok(State {
            images: ImageStore::open(root),
            store,
        })
    }

    /// Resolves an image argument (name, ID or digest).
    pub fn resolve(&self, query: &str) -> anyhow::Result<Resolved> {
        Ok(self.images.read()?.resolve(query)?)
    }

    /// Reads a blob of the image (a manifest or config) as JSON.
    pub fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        digest: &Digest,
        what: &str,
    ) -> anyhow::Result<T> {
        let bytes = self
            .store
            .content()
            .read_blob(digest)
            .with_context(|| format!("reading {what} {digest}"))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {what} {digest}"))
    }
}

/// Docker's short form of a name: `busybox:latest`, `localhost:5000/x:1`.
pub fn display_name(name: &ImageRef) -> String {
    match name.tag() {
        Some(tag) => format!("{}:{tag}", name.familiar()),
        None => name.familiar().to_owned(),
    }
}

/// Stores `config` and an OCI image manifest over `layers` in the content store, and
/// returns the manifest as the image store records it.
pub fn store_image(
    content: &ContentStore,
    config: &ImageConfig,
    layers: Vec<Descriptor>,
) -> anyhow::Result<ImageTarget> {
    let (config_digest, config_size) = content.put_blob(&serde_json::to_vec(config)?)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_size,
            &config_digest,
        ))
        .layers(layers)
        .build()?;
    let (digest, size) = content.put_blob(&serde_json::to_vec(&manifest)?)?;
    Ok(ImageTarget {
        media_type: MediaType::ImageManifest,
        digest,
        size,
        config: config_digest,
    })
}
