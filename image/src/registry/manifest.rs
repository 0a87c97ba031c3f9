//! Manifests and indexes: fetching by tag or digest (verified), `HEAD` checks, picking a
//! platform's manifest out of an index, and pushing manifests.

use oci_spec::image::{ImageIndex, ImageManifest, MediaType};
use reqwest::header::{ACCEPT, CONTENT_TYPE};

use super::client::{place_of, pull_scope, push_scope, read_limited, unexpected};
use super::error::Place;
use super::{MANIFEST_LIMIT, RegistryClient, RegistryError};
use crate::media_type::{Kind, classify};
use crate::{Digest, ImageRef, Platform};

/// The `Accept` header of manifest requests: OCI and Docker schema 2, single and multi
/// platform.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

const DIGEST_HEADER: &str = "Docker-Content-Digest";

/// A manifest or index as the registry serves it: the exact bytes, their digest and
/// media type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Digest of `bytes`.
    pub digest: Digest,
    /// The media type (from the document's `mediaType`, else the `Content-Type`).
    pub media_type: String,
    /// The document.
    pub bytes: Vec<u8>,
}

impl Manifest {
    /// What kind of document this is (manifest, index…).
    pub fn kind(&self) -> Kind {
        classify(&MediaType::from(self.media_type.as_str()))
    }
}

/// An image reference resolved to one platform's manifest.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// The index the manifest was chosen from, when the reference named an index.
    pub index: Option<Manifest>,
    /// The image manifest.
    pub manifest: Manifest,
    /// The manifest parsed (Docker schema 2 manifests parse into the same type).
    pub image: ImageManifest,
}

/// The part of a manifest request's path naming the content: the digest if the
/// reference has one, else its tag.
fn reference_part(reference: &ImageRef) -> String {
    match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_owned(),
        (None, None) => crate::reference::DEFAULT_TAG.to_owned(),
    }
}

impl RegistryClient {
    /// Fetches the manifest or index `reference` names. When it names a digest, the
    /// bytes are verified against it; a tag's answer is checked against the registry's
    /// `Docker-Content-Digest` when it sends one.
    pub async fn get_manifest(&self, reference: &ImageRef) -> Result<Manifest, RegistryError> {
        let http = self.http()?;
        let place = place_of(reference);
        let part = reference_part(reference);
        let what = format!("manifest {part}");
        let url = self.url(
            reference.domain(),
            &format!("{}/manifests/{part}", reference.path()),
        );
        let build = || http.get(&url).header(ACCEPT, MANIFEST_ACCEPT);
        let scopes = [pull_scope(reference)];
        let (place_ref, what_ref, scopes_ref, build_ref) = (&place, &what, &scopes, &build);
        let (bytes, content_type, claimed) = self
            .retrying(|attempt| async move {
                let (place, what, scopes, build) = (place_ref, what_ref, scopes_ref, build_ref);
                let response = self.send(place, scopes, what, attempt, build).await?;
                if !response.status().is_success() {
                    return Err(unexpected(place, what, response).await);
                }
                let content_type = response
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
                let claimed = response
                    .headers()
                    .get(DIGEST_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let bytes = read_limited(place, what, response, MANIFEST_LIMIT)
                    .await
                    .map_err(|e| with_attempt(e, attempt))?;
                Ok((bytes, content_type, claimed))
            })
            .await?;
        let digest = Digest::of(&bytes);
        let expected = match reference.digest() {
            Some(d) => Some(d.clone()),
            None => match claimed {
                Some(text) => {
                    Some(
                        text.parse::<Digest>()
                            .map_err(|_| RegistryError::BadDigest {
                                place: place.clone(),
                                what: format!("{DIGEST_HEADER} of {what}"),
                                value: text,
                            })?,
                    )
                }
                None => None,
            },
        };
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(RegistryError::DigestMismatch {
                place,
                expected,
                actual: digest,
            });
        }
        let media_type = media_type_of(&place, &what, &bytes, content_type)?;
        Ok(Manifest {
            digest,
            media_type,
            bytes,
        })
    }

    /// Asks whether `reference` exists without fetching it: its digest, size and media
    /// type, or `None` when the registry does not have it. When the registry leaves out
    /// the digest header, the manifest is fetched to compute it.
    pub async fn head_manifest(
        &self,
        reference: &ImageRef,
    ) -> Result<Option<(Digest, u64, String)>, RegistryError> {
        let http = self.http()?;
        let place = place_of(reference);
        let part = reference_part(reference);
        let what = format!("HEAD manifest {part}");
        let url = self.url(
            reference.domain(),
            &format!("{}/manifests/{part}", reference.path()),
        );
        let build = || http.head(&url).header(ACCEPT, MANIFEST_ACCEPT);
        let response = self
            .request(&place, &[pull_scope(reference)], &what, &build)
            .await?;
        if response.status().as_u16() == 404 {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(unexpected(&place, &what, response).await);
        }
        let headers = response.headers();
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let digest = text(DIGEST_HEADER).and_then(|d| d.parse::<Digest>().ok());
        let size = text("Content-Length").and_then(|s| s.parse::<u64>().ok());
        let media_type =
            text("Content-Type").map(|v| v.split(';').next().unwrap_or(&v).trim().to_owned());
        match (digest, size, media_type) {
            (Some(digest), Some(size), Some(media_type))
                if reference.digest().is_none_or(|d| *d == digest) =>
            {
                Ok(Some((digest, size, media_type)))
            }
            _ => {
                let m = self.get_manifest(reference).await?;
                Ok(Some((m.digest, m.bytes.len() as u64, m.media_type)))
            }
        }
    }

    /// Resolves `reference` to the image manifest for `platform`: an index is searched
    /// for the platform (an error lists the platforms it has when none matches), a
    /// manifest is taken as it is.
    pub async fn resolve(
        &self,
        reference: &ImageRef,
        platform: &Platform,
    ) -> Result<ResolvedImage, RegistryError> {
        let place = place_of(reference);
        let top = self.get_manifest(reference).await?;
        match top.kind() {
            Kind::Manifest(_) => {
                let image = parse_manifest(&place, &top)?;
                Ok(ResolvedImage {
                    index: None,
                    manifest: top,
                    image,
                })
            }
            Kind::Index(_) => {
                let index: ImageIndex = serde_json::from_slice(&top.bytes).map_err(|source| {
                    RegistryError::BadJson {
                        place: place.clone(),
                        what: format!("index {}", top.digest),
                        source,
                    }
                })?;
                let mut available = Vec::new();
                let mut chosen = None;
                for entry in index.manifests() {
                    if !matches!(classify(entry.media_type()), Kind::Manifest(_)) {
                        continue;
                    }
                    let Some(p) = entry.platform() else { continue };
                    let p = Platform::from(p);
                    if p == *platform && chosen.is_none() {
                        chosen = Some(entry.clone());
                    }
                    available.push(p.to_string());
                }
                let Some(entry) = chosen else {
                    return Err(RegistryError::NoMatchingPlatform {
                        reference: reference.to_string(),
                        wanted: platform.to_string(),
                        available,
                    });
                };
                let digest =
                    Digest::try_from(entry.digest()).map_err(|_| RegistryError::BadDigest {
                        place: place.clone(),
                        what: format!("index {}", top.digest),
                        value: entry.digest().to_string(),
                    })?;
                let manifest = self
                    .get_manifest(&reference.with_digest(digest.clone()))
                    .await?;
                if manifest.bytes.len() as u64 != entry.size() {
                    return Err(RegistryError::SizeMismatch {
                        place,
                        digest,
                        expected: entry.size(),
                        actual: manifest.bytes.len() as u64,
                    });
                }
                if !matches!(manifest.kind(), Kind::Manifest(_)) {
                    return Err(RegistryError::UnsupportedMediaType {
                        place,
                        reference: digest.to_string(),
                        media_type: manifest.media_type,
                    });
                }
                let image = parse_manifest(&place, &manifest)?;
                Ok(ResolvedImage {
                    index: Some(top),
                    manifest,
                    image,
                })
            }
            _ => Err(RegistryError::UnsupportedMediaType {
                place,
                reference: reference_part(reference),
                media_type: top.media_type,
            }),
        }
    }

    /// Pushes a manifest or index under `reference`'s tag (or its digest when it has no
    /// tag); returns its digest. A reference with a digest must name these bytes.
    pub async fn put_manifest(
        &self,
        reference: &ImageRef,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, RegistryError> {
        let http = self.http()?;
        let place = place_of(reference);
        let digest = Digest::of(bytes);
        if let Some(d) = reference.digest()
            && *d != digest
        {
            return Err(RegistryError::DigestMismatch {
                place,
                expected: d.clone(),
                actual: digest,
            });
        }
        let part = match reference.tag() {
            Some(t) => t.to_owned(),
            None => digest.to_string(),
        };
        let what = format!("PUT manifest {part}");
        let url = self.url(
            reference.domain(),
            &format!("{}/manifests/{part}", reference.path()),
        );
        let body = bytes::Bytes::copy_from_slice(bytes);
        let build = || {
            http.put(&url)
                .header(CONTENT_TYPE, media_type)
                .body(body.clone())
        };
        let response = self
            .request(&place, &[push_scope(reference)], &what, &build)
            .await?;
        if !response.status().is_success() {
            return Err(unexpected(&place, &what, response).await);
        }
        if let Some(text) = response
            .headers()
            .get(DIGEST_HEADER)
            .and_then(|v| v.to_str().ok())
            && let Ok(claimed) = text.parse::<Digest>()
            && claimed != digest
        {
            return Err(RegistryError::DigestMismatch {
                place,
                expected: digest,
                actual: claimed,
            });
        }
        Ok(digest)
    }
}

/// Parses an image manifest (OCI or Docker schema 2).
pub(super) fn parse_manifest(
    place: &Place,
    manifest: &Manifest,
) -> Result<ImageManifest, RegistryError> {
    let image: ImageManifest =
        serde_json::from_slice(&manifest.bytes).map_err(|source| RegistryError::BadJson {
            place: place.clone(),
            what: format!("manifest {}", manifest.digest),
            source,
        })?;
    for d in std::iter::once(image.config()).chain(image.layers()) {
        Digest::try_from(d.digest()).map_err(|_| RegistryError::BadDigest {
            place: place.clone(),
            what: format!("manifest {}", manifest.digest),
            value: d.digest().to_string(),
        })?;
    }
    Ok(image)
}

/// The media type of a fetched document: its own `mediaType` field, else the
/// `Content-Type` header, else a guess from its shape (OCI documents may omit both).
fn media_type_of(
    place: &Place,
    what: &str,
    bytes: &[u8],
    content_type: Option<String>,
) -> Result<String, RegistryError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        layers: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|source| RegistryError::BadJson {
        place: place.clone(),
        what: what.to_owned(),
        source,
    })?;
    if let Some(m) = probe.media_type.filter(|m| !m.is_empty()) {
        return Ok(m);
    }
    let known = |t: &str| !matches!(classify(&MediaType::from(t)), Kind::Other);
    if let Some(ct) = content_type.filter(|t| known(t)) {
        return Ok(ct);
    }
    if probe.manifests.is_some() {
        return Ok(MediaType::ImageIndex.to_string());
    }
    if probe.layers.is_some() {
        return Ok(MediaType::ImageManifest.to_string());
    }
    Err(RegistryError::UnsupportedMediaType {
        place: place.clone(),
        reference: what.to_owned(),
        media_type: String::new(),
    })
}

/// Sets the attempt count of a transport error raised while reading a body.
fn with_attempt(e: RegistryError, attempt: u32) -> RegistryError {
    match e {
        RegistryError::Transport {
            place,
            what,
            source,
            ..
        } => RegistryError::Transport {
            place,
            what,
            attempts: attempt,
            source,
        },
        other => other,
    }
}
