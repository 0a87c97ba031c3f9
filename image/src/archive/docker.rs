//! Docker's `manifest.json`: written by [`super::save`] for the docker format, and read
//! for archives that have no OCI index (Docker before 25, and tools imitating it).
//!
//! Such archives carry configs and layers but no manifests, so loading one means
//! writing a manifest: the config is kept byte for byte (so the image ID stays Docker's)
//! and each layer is checked against the config's `rootfs.diff_ids`, decompressing it
//! when a tool stored it compressed, before a manifest naming it is written.

use std::io;

use oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType};
use serde::{Deserialize, Serialize};

use super::decode::{decode_config_diff_ids, decode_docker_manifest};
use super::members::{Members, read_limited};
use super::{ArchiveError, LoadedImage, json_err, parse_name};
use crate::layer::Compression;
use crate::media_type::Flavor;
use crate::{BlobRead, BlobWrite, Digest, Digester};

/// One image in `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerManifestEntry {
    /// The member holding the config.
    pub config: String,
    /// `repository:tag` names, familiar form (`busybox:latest`); `null` when untagged.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub repo_tags: Vec<String>,
    /// The members holding the layers, bottom first.
    pub layers: Vec<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// Checks every image `manifest.json` lists and writes a manifest for each.
pub fn load<S>(members: &Members, store: &S) -> Result<Vec<LoadedImage>, ArchiveError>
where
    S: BlobRead + BlobWrite + ?Sized,
{
    let bytes = members.bytes("manifest.json", store)?;
    let entries = decode_docker_manifest(&bytes).map_err(json_err("manifest.json"))?;
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| load_entry(members, store, entry, &format!("manifest.json entry {i}")))
        .collect()
}

fn load_entry<S>(
    members: &Members,
    store: &S,
    entry: &DockerManifestEntry,
    what: &str,
) -> Result<LoadedImage, ArchiveError>
where
    S: BlobRead + BlobWrite + ?Sized,
{
    let names = entry
        .repo_tags
        .iter()
        .map(|name| parse_name(name, what))
        .collect::<Result<Vec<_>, _>>()?;
    let config = members.blob(&entry.config, store)?;
    let config_bytes = read_limited(store, &config, &entry.config)?;
    let diff_ids = decode_config_diff_ids(&config_bytes).map_err(json_err(&entry.config))?;
    if diff_ids.len() != entry.layers.len() {
        return Err(ArchiveError::LayerCount {
            what: what.to_owned(),
            layers: entry.layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    let mut layers = Vec::with_capacity(entry.layers.len());
    for (path, expected) in entry.layers.iter().zip(diff_ids) {
        let digest = members.blob(path, store)?;
        let size = store
            .blob_size(&digest)
            .map_err(|source| read_err(&digest, source))?;
        let (media_type, actual) = inspect_layer(store, &digest)?;
        if actual != expected {
            return Err(ArchiveError::DiffIdMismatch {
                what: what.to_owned(),
                layer: path.clone(),
                expected,
                actual,
            });
        }
        layers.push(Descriptor::new(media_type, size, &digest));
    }
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_bytes.len() as u64,
            &config,
        ))
        .layers(layers)
        .build()
        .expect("every required manifest field is set");
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(json_err(what))?;
    let (digest, size) = store
        .put_blob(&manifest_bytes)
        .map_err(|source| ArchiveError::Store {
            name: format!("{what}: manifest"),
            source,
        })?;
    Ok(LoadedImage {
        names,
        manifest: Descriptor::new(MediaType::ImageManifest, size, &digest),
        config,
    })
}

/// A layer's media type (by its compression) and diff ID (the digest of the tar inside).
fn inspect_layer<S>(store: &S, digest: &Digest) -> Result<(MediaType, Digest), ArchiveError>
where
    S: BlobRead + ?Sized,
{
    let blob = store
        .open_blob(digest)
        .map_err(|source| read_err(digest, source))?;
    let (compression, mut tar) =
        Compression::decompress(blob).map_err(|source| ArchiveError::Layer {
            digest: digest.clone(),
            source,
        })?;
    let media_type = Flavor::Oci.layer(compression);
    if compression == Compression::None {
        return Ok((media_type, digest.clone()));
    }
    let mut digester = Digester::new();
    io::copy(&mut tar, &mut digester).map_err(|source| read_err(digest, source))?;
    Ok((media_type, digester.finish()))
}

fn read_err(digest: &Digest, source: io::Error) -> ArchiveError {
    ArchiveError::ReadBlob {
        digest: digest.clone(),
        source,
    }
}
