//! The JSON documents an archive holds, decoded: OCI indexes and manifests, Docker's
//! `manifest.json`, and the part of an image config loading checks (its diff IDs).
//!
//! These are the only places the loader turns untrusted bytes into typed documents, so
//! they are public for the fuzz targets; a document that decodes still has its digests,
//! sizes and names checked by the loader afterwards.

use oci_spec::image::{ImageIndex, ImageManifest};
use serde::Deserialize;

pub use super::docker::DockerManifestEntry;
use crate::{Digest, ImageConfig};

/// An OCI image index (`index.json`, or a nested index blob).
pub fn decode_index(bytes: &[u8]) -> Result<ImageIndex, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// An OCI (or Docker schema 2) image manifest.
pub fn decode_manifest(bytes: &[u8]) -> Result<ImageManifest, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Docker's `manifest.json`: one entry per image.
pub fn decode_docker_manifest(bytes: &[u8]) -> Result<Vec<DockerManifestEntry>, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// The layer diff IDs an image config lists (`rootfs.diff_ids`), bottom first.
pub fn decode_config_diff_ids(bytes: &[u8]) -> Result<Vec<Digest>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Config {
        rootfs: RootFs,
    }
    #[derive(Deserialize)]
    struct RootFs {
        diff_ids: Vec<Digest>,
    }
    let config: Config = serde_json::from_slice(bytes)?;
    Ok(config.rootfs.diff_ids)
}

/// A whole image config, as builds read a base image's.
pub fn decode_config(bytes: &[u8]) -> Result<ImageConfig, serde_json::Error> {
    serde_json::from_slice(bytes)
}
