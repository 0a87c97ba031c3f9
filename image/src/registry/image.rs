//! Whole images between a registry and a local blob store: every blob of the image
//! moved a few at a time, the manifest last, so that neither side ever holds a manifest
//! whose blobs it lacks.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt as _;
use futures_util::stream;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};

use super::client::place_of;
use super::error::Place;
use super::manifest::parse_manifest;
use super::{MANIFEST_LIMIT, Manifest, RegistryClient, RegistryError, TransferProgress};
use crate::media_type::{Kind, classify};
use crate::{BlobRead, BlobWrite, Digest, ImageRef, Platform};

/// A local store blobs are pulled into and pushed from (kiln's content store).
pub trait BlobStore: BlobRead + BlobWrite + Send + Sync {}

impl<T: BlobRead + BlobWrite + Send + Sync + ?Sized> BlobStore for T {}

/// What [`pull_image`] stored.
#[derive(Clone, Debug)]
pub struct PulledImage {
    /// The platform's image manifest (stored).
    pub manifest: Manifest,
    /// The index it was chosen from, if any (stored too).
    pub index: Option<Manifest>,
    /// The image config's digest.
    pub config: Digest,
    /// The layers, base first.
    pub layers: Vec<Descriptor>,
}

/// Pulls `reference` for `platform` into `store`: config and layers a few at a time
/// (skipping those the store has), then the manifest and the index.
pub async fn pull_image(
    client: &RegistryClient,
    reference: &ImageRef,
    platform: &Platform,
    store: Arc<dyn BlobStore>,
    progress: &dyn TransferProgress,
) -> Result<PulledImage, RegistryError> {
    let place = place_of(reference);
    let resolved = client.resolve(reference, platform).await?;
    let image = &resolved.image;
    let config = descriptor_digest(&place, &resolved.manifest, image.config())?;
    let mut seen = HashSet::new();
    if resolved.index.is_none() {
        // A lone manifest says nothing of its platform; its config does. It is fetched
        // and checked before any layer.
        let size = image.config().size();
        if size > CONFIG_LIMIT {
            return Err(RegistryError::TooLarge {
                place,
                what: format!("config {config}"),
                limit: CONFIG_LIMIT,
            });
        }
        let sink: Arc<dyn BlobWrite + Send + Sync> = store.clone();
        client
            .fetch_blob(reference, &config, Some(size), sink, progress)
            .await?;
        let stored = store.clone();
        let digest = config.clone();
        let bytes = tokio::task::spawn_blocking(move || stored.read_blob(&digest))
            .await
            .unwrap_or_else(|join| Err(std::io::Error::other(join.to_string())))
            .map_err(|source| RegistryError::Store {
                what: "reading",
                digest: config.clone(),
                source,
            })?;
        check_platform(reference, &place, &config, &bytes, platform)?;
        seen.insert(config.clone());
    }
    let mut wanted = Vec::new();
    for d in std::iter::once(image.config()).chain(image.layers()) {
        let digest = descriptor_digest(&place, &resolved.manifest, d)?;
        if seen.insert(digest.clone()) {
            wanted.push((digest, d.size()));
        }
    }
    let sink: Arc<dyn BlobWrite + Send + Sync> = store.clone();
    let limit = client.options().max_concurrent_blobs.max(1);
    // After a failure no new transfer starts, but those under way are waited for, so
    // that when this returns no blob is still being written (or cleaned up) behind it.
    let failed = AtomicBool::new(false);
    let failed = &failed;
    let mut transfers = stream::iter(wanted)
        .map(|(digest, size)| {
            let sink = sink.clone();
            async move {
                if failed.load(Ordering::Relaxed) {
                    return Ok(0);
                }
                let result = client
                    .fetch_blob(reference, &digest, Some(size), sink, progress)
                    .await;
                if result.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                result
            }
        })
        .buffer_unordered(limit);
    let mut first_error = None;
    while let Some(result) = transfers.next().await {
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    drop(transfers);
    if let Some(e) = first_error {
        return Err(e);
    }
    store_document(&store, &resolved.manifest).await?;
    if let Some(index) = &resolved.index {
        store_document(&store, index).await?;
    }
    Ok(PulledImage {
        layers: resolved.image.layers().clone(),
        manifest: resolved.manifest,
        index: resolved.index,
        config,
    })
}

/// Pushes the image whose manifest (or index) `manifest` is in `store` to `reference`:
/// blobs a few at a time (mounted from other repositories of the registry the client
/// has seen holding them), then each platform's manifest by digest, then the top
/// document under the reference's tag. Returns the top document's digest.
pub async fn push_image(
    client: &RegistryClient,
    reference: &ImageRef,
    manifest: &Digest,
    store: Arc<dyn BlobStore>,
    progress: &dyn TransferProgress,
) -> Result<Digest, RegistryError> {
    let place = place_of(reference);
    let top = load_document(&place, &store, manifest).await?;
    match top.kind() {
        Kind::Manifest(_) => {
            push_manifest_blobs(client, reference, &top, &store, progress).await?;
        }
        Kind::Index(_) => {
            let index: ImageIndex =
                serde_json::from_slice(&top.bytes).map_err(|source| RegistryError::BadJson {
                    place: place.clone(),
                    what: format!("index {}", top.digest),
                    source,
                })?;
            for entry in index.manifests() {
                let digest = descriptor_digest(&place, &top, entry)?;
                let by_digest: ImageRef = format!("{}@{digest}", reference.name())
                    .parse()
                    .map_err(|_| RegistryError::BadReference {
                        reference: reference.to_string(),
                        reason: "cannot name a manifest by digest in this repository",
                    })?;
                if !store.has_blob(&digest) {
                    // A platform the store never pulled: fine if the registry has it.
                    if client.head_manifest(&by_digest).await?.is_some() {
                        continue;
                    }
                }
                let child = load_document(&place, &store, &digest).await?;
                if !matches!(child.kind(), Kind::Manifest(_)) {
                    return Err(RegistryError::UnsupportedMediaType {
                        place,
                        reference: digest.to_string(),
                        media_type: child.media_type,
                    });
                }
                push_manifest_blobs(client, reference, &child, &store, progress).await?;
                client
                    .put_manifest(&by_digest, &child.media_type, &child.bytes)
                    .await?;
            }
        }
        _ => {
            return Err(RegistryError::UnsupportedMediaType {
                place,
                reference: manifest.to_string(),
                media_type: top.media_type,
            });
        }
    }
    client
        .put_manifest(reference, &top.media_type, &top.bytes)
        .await
}

/// Pushes the config and distributable layers of an image manifest.
async fn push_manifest_blobs(
    client: &RegistryClient,
    reference: &ImageRef,
    manifest: &Manifest,
    store: &Arc<dyn BlobStore>,
    progress: &dyn TransferProgress,
) -> Result<(), RegistryError> {
    let place = place_of(reference);
    let image: ImageManifest = parse_manifest(&place, manifest)?;
    let mut seen = HashSet::new();
    let mut blobs = Vec::new();
    for d in std::iter::once(image.config()).chain(image.layers()) {
        if let Kind::Layer {
            distributable: false,
            ..
        } = classify(d.media_type())
        {
            continue;
        }
        let digest = descriptor_digest(&place, manifest, d)?;
        if seen.insert(digest.clone()) {
            blobs.push((digest, d.size()));
        }
    }
    let source: Arc<dyn BlobRead + Send + Sync> = store.clone();
    let limit = client.options().max_concurrent_blobs.max(1);
    let mut transfers = stream::iter(blobs)
        .map(|(digest, size)| {
            let source = source.clone();
            async move {
                let mount_from = client.blob_locations(reference, &digest);
                client
                    .push_blob(reference, &digest, size, source, &mount_from, progress)
                    .await
            }
        })
        .buffer_unordered(limit);
    while let Some(result) = transfers.next().await {
        result?;
    }
    Ok(())
}

fn descriptor_digest(
    place: &Place,
    within: &Manifest,
    d: &Descriptor,
) -> Result<Digest, RegistryError> {
    Digest::try_from(d.digest()).map_err(|_| RegistryError::BadDigest {
        place: place.clone(),
        what: format!("document {}", within.digest),
        value: d.digest().to_string(),
    })
}

/// Reads a manifest or index from the store (at most [`MANIFEST_LIMIT`] bytes).
async fn load_document(
    place: &Place,
    store: &Arc<dyn BlobStore>,
    digest: &Digest,
) -> Result<Manifest, RegistryError> {
    let store = store.clone();
    let d = digest.clone();
    let read = tokio::task::spawn_blocking(move || {
        let size = store.blob_size(&d)?;
        if size > MANIFEST_LIMIT {
            return Ok(None);
        }
        store.read_blob(&d).map(Some)
    })
    .await
    .unwrap_or_else(|join| Err(std::io::Error::other(join.to_string())));
    let store_err = |source| RegistryError::Store {
        what: "reading",
        digest: digest.clone(),
        source,
    };
    let bytes = read
        .map_err(store_err)?
        .ok_or_else(|| RegistryError::TooLarge {
            place: place.clone(),
            what: format!("local manifest {digest}"),
            limit: MANIFEST_LIMIT,
        })?;
    if Digest::of(&bytes) != *digest {
        return Err(store_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stored bytes do not match their digest",
        )));
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(&bytes).map_err(|source| RegistryError::BadJson {
        place: place.clone(),
        what: format!("local manifest {digest}"),
        source,
    })?;
    let media_type = match probe.media_type.filter(|m| !m.is_empty()) {
        Some(m) => m,
        None if probe.manifests.is_some() => MediaType::ImageIndex.to_string(),
        None => MediaType::ImageManifest.to_string(),
    };
    Ok(Manifest {
        digest: digest.clone(),
        media_type,
        bytes,
    })
}

/// The most bytes of an image config read into memory to check its platform.
const CONFIG_LIMIT: u64 = 16 << 20;

/// Refuses an image whose config names another platform than `wanted`. A config that
/// names none (no `architecture` or `os`) is taken for any.
fn check_platform(
    reference: &ImageRef,
    place: &Place,
    digest: &Digest,
    bytes: &[u8],
    wanted: &Platform,
) -> Result<(), RegistryError> {
    #[derive(serde::Deserialize)]
    struct Named {
        #[serde(default)]
        os: String,
        #[serde(default)]
        architecture: String,
        #[serde(default)]
        variant: Option<String>,
    }
    let named: Named = serde_json::from_slice(bytes).map_err(|source| RegistryError::BadJson {
        place: place.clone(),
        what: format!("config {digest}"),
        source,
    })?;
    let Some(actual) = Platform::named(&named.os, &named.architecture, named.variant.as_deref())
    else {
        return Ok(());
    };
    if actual != *wanted {
        return Err(RegistryError::PlatformMismatch {
            reference: reference.to_string(),
            wanted: wanted.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// Writes a fetched manifest or index into the store.
async fn store_document(store: &Arc<dyn BlobStore>, doc: &Manifest) -> Result<(), RegistryError> {
    let store = store.clone();
    let digest = doc.digest.clone();
    let bytes = doc.bytes.clone();
    tokio::task::spawn_blocking(move || store.write_blob(&digest, &mut &bytes[..]))
        .await
        .unwrap_or_else(|join| Err(std::io::Error::other(join.to_string())))
        .map_err(|source| RegistryError::Store {
            what: "writing",
            digest: doc.digest.clone(),
            source,
        })?;
    Ok(())
}
