//! Loading an OCI image layout: `index.json` → manifests (or indexes, narrowed to the
//! host's platform) → config and layers, every blob checked to be in the store with the
//! size its descriptor states, and the config decoded as a build would read it, with one
//! diff ID per layer.
//!
//! Names come from the descriptors' annotations: containerd's and Docker's
//! `io.containerd.image.name` holds the full reference; failing that,
//! `org.opencontainers.image.ref.name` is used when it is a full reference
//! (`busybox:1.36`). A bare `latest` there is only a tag with no repository, so such an
//! entry loads as an untagged image rather than under an invented name.

use std::collections::BTreeMap;

use oci_spec::image::Descriptor;

use super::decode::{decode_config, decode_index, decode_manifest};
use super::members::{Members, read_limited};
use super::{
    ANNOTATION_IMAGE_NAME, ArchiveError, LoadedImage, descriptor_digest, json_err, parse_name,
};
use crate::media_type::{Kind, classify};
use crate::{BlobRead, BlobWrite, Digest, ImageRef, Platform};

/// Reads the layout's `index.json` and checks every image it lists.
pub fn load<S>(members: &Members, store: &S) -> Result<Vec<LoadedImage>, ArchiveError>
where
    S: BlobRead + BlobWrite + ?Sized,
{
    let bytes = members.bytes("index.json", store)?;
    let index = decode_index(&bytes).map_err(json_err("index.json"))?;
    let host = Platform::host();
    let mut by_manifest: BTreeMap<Digest, LoadedImage> = BTreeMap::new();
    for (i, entry) in index.manifests().iter().enumerate() {
        let what = format!("index.json entry {i}");
        let names = names_from_annotations(entry, &what)?;
        let image = resolve(entry, store, &host, &what, true)?;
        let digest = descriptor_digest(&image.manifest, &what)?;
        let slot = by_manifest.entry(digest).or_insert(image);
        for name in names {
            if !slot.names.contains(&name) {
                slot.names.push(name);
            }
        }
    }
    Ok(by_manifest.into_values().collect())
}

fn names_from_annotations(entry: &Descriptor, what: &str) -> Result<Vec<ImageRef>, ArchiveError> {
    let Some(annotations) = entry.annotations() else {
        return Ok(Vec::new());
    };
    let name = annotations.get(ANNOTATION_IMAGE_NAME).or_else(|| {
        annotations
            .get(oci_spec::image::ANNOTATION_REF_NAME)
            .filter(|r| r.contains(':') || r.contains('/'))
    });
    name.map(|n| parse_name(n, what)).into_iter().collect()
}

/// Follows a descriptor down to an image manifest, checking the blobs on the way.
fn resolve<S>(
    desc: &Descriptor,
    store: &S,
    host: &Platform,
    what: &str,
    may_be_index: bool,
) -> Result<LoadedImage, ArchiveError>
where
    S: BlobRead + ?Sized,
{
    let digest = check_blob(store, desc, what)?;
    let media_type = desc.media_type();
    match classify(media_type) {
        Kind::Manifest(_) => {
            let what = format!("{what}: manifest {digest}");
            let bytes = read_limited(store, &digest, &what)?;
            let manifest = decode_manifest(&bytes).map_err(json_err(&what))?;
            let config = check_blob(store, manifest.config(), &what)?;
            for layer in manifest.layers() {
                check_blob(store, layer, &what)?;
            }
            // The config is decoded as builds will read it, so that an image that
            // loads can be built on.
            let config_what = format!("{what}: config {config}");
            let config_bytes = read_limited(store, &config, &config_what)?;
            let parsed = decode_config(&config_bytes).map_err(json_err(&config_what))?;
            if parsed.rootfs.diff_ids.len() != manifest.layers().len() {
                return Err(ArchiveError::LayerCount {
                    what: config_what,
                    layers: manifest.layers().len(),
                    diff_ids: parsed.rootfs.diff_ids.len(),
                });
            }
            Ok(LoadedImage {
                names: Vec::new(),
                manifest: Descriptor::new(media_type.clone(), desc.size(), &digest),
                config,
            })
        }
        Kind::Index(_) if may_be_index => {
            let what = format!("{what}: index {digest}");
            let bytes = read_limited(store, &digest, &what)?;
            let index = decode_index(&bytes).map_err(json_err(&what))?;
            let chosen = index
                .manifests()
                .iter()
                .find(|m| {
                    m.platform().as_ref().is_some_and(|p| {
                        let p = Platform::from(p);
                        p.os() == host.os() && p.architecture() == host.architecture()
                    })
                })
                .ok_or_else(|| ArchiveError::NoPlatformManifest {
                    what: what.clone(),
                    platform: host.clone(),
                })?;
            resolve(chosen, store, host, &what, false)
        }
        _ => Err(ArchiveError::UnsupportedMediaType {
            what: what.to_owned(),
            media_type: media_type.to_string(),
        }),
    }
}

/// The descriptor's digest, after checking that the store holds a blob of that size.
fn check_blob<S>(store: &S, desc: &Descriptor, what: &str) -> Result<Digest, ArchiveError>
where
    S: BlobRead + ?Sized,
{
    let digest = descriptor_digest(desc, what)?;
    let actual = store.blob_size(&digest).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ArchiveError::MissingBlob {
                what: what.to_owned(),
                digest: digest.clone(),
            }
        } else {
            ArchiveError::ReadBlob {
                digest: digest.clone(),
                source,
            }
        }
    })?;
    if actual != desc.size() {
        return Err(ArchiveError::SizeMismatch {
            digest,
            expected: desc.size(),
            actual,
        });
    }
    Ok(digest)
}
