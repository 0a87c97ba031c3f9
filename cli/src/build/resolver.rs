//! Base images for `FROM` and `COPY --from`: found in the local image store, or pulled
//! from their registry when they are not there (or always, with `--pull`).

use kiln_image::oci_spec::image::ImageManifest;
use kiln_image::{BlobRead, Digest, ImageConfig, ImageRef, Platform};
use kiln_solver::lower::{ImageResolver, ResolveError, ResolvedImage};

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use kiln_image::registry::RegistryClient;

use crate::registry;
use crate::state::State;
use crate::transfer::TransferDisplay;

/// How a resolver reaches registries.
pub struct Puller {
    /// The client.
    pub client: RegistryClient,
    /// Where transfers are shown.
    pub display: Arc<TransferDisplay>,
    /// `--pull`: resolve tags in the registry even when the store has them.
    pub always: bool,
}

/// Resolves image references against the local store, pulling what is missing.
pub struct StoreResolver<'a> {
    state: &'a State,
    puller: Option<Puller>,
    /// References pulled by this build (and for which platform), so `--pull` asks the
    /// registry once per name.
    pulled: Mutex<HashSet<(ImageRef, Platform)>>,
}

impl<'a> StoreResolver<'a> {
    /// A resolver over `state`; with a puller, missing images are pulled.
    pub fn new(state: &'a State, puller: Option<Puller>) -> StoreResolver<'a> {
        StoreResolver {
            state,
            puller,
            pulled: Mutex::new(HashSet::new()),
        }
    }

    /// Whether `reference` must be pulled, given what the store holds for it (`stored`):
    /// nothing, or an image for another platform than `platform`, or `--pull` asks the
    /// registry again.
    fn needs_pull(
        &self,
        reference: &ImageRef,
        platform: &Platform,
        stored: Option<&ResolvedImage>,
    ) -> bool {
        let Some(puller) = &self.puller else {
            return false;
        };
        if self
            .pulled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(reference.clone(), platform.clone()))
        {
            return false;
        }
        let usable =
            stored.is_some_and(|found| found.config.platform().is_none_or(|p| p == *platform));
        !usable || (puller.always && reference.digest().is_none())
    }

    fn find(&self, reference: &ImageRef) -> Result<ResolvedImage, ResolveError> {
        let backend = |source: Box<dyn std::error::Error + Send + Sync>| ResolveError::Backend {
            reference: reference.to_string(),
            source,
        };
        let images = self.state.images.read().map_err(|e| backend(Box::new(e)))?;
        let manifest = match (reference.digest(), images.get(reference)) {
            (Some(digest), _) if self.state.store.content().contains(digest) => digest.clone(),
            (None, Some(record)) => record.image.digest.clone(),
            _ => {
                return Err(ResolveError::NotFound {
                    reference: reference.to_string(),
                });
            }
        };
        let content = self.state.store.content();
        let bytes = content
            .read_blob(&manifest)
            .map_err(|e| backend(Box::new(e)))?;
        let parsed: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| backend(Box::new(e)))?;
        let config_digest: Digest = parsed
            .config()
            .digest()
            .to_string()
            .parse()
            .map_err(|e| backend(Box::new(e)))?;
        let config_bytes = content
            .read_blob(&config_digest)
            .map_err(|e| backend(Box::new(e)))?;
        let config: ImageConfig =
            serde_json::from_slice(&config_bytes).map_err(|e| backend(Box::new(e)))?;
        Ok(ResolvedImage {
            reference: reference.clone(),
            manifest,
            config,
        })
    }
}

impl ImageResolver for StoreResolver<'_> {
    async fn resolve(
        &self,
        reference: &ImageRef,
        platform: &Platform,
    ) -> Result<ResolvedImage, ResolveError> {
        let mut found = self.find(reference);
        if let Some(puller) = self
            .puller
            .as_ref()
            .filter(|_| self.needs_pull(reference, platform, found.as_ref().ok()))
        {
            puller
                .display
                .println(&format!("pulling {reference} for {platform}"));
            registry::pull(
                self.state.store.content(),
                &self.state.images,
                &puller.client,
                reference,
                platform,
                &puller.display,
            )
            .await
            .map_err(|error| ResolveError::Backend {
                reference: reference.to_string(),
                // A registry's answer names the image already.
                source: match error.downcast::<kiln_image::registry::RegistryError>() {
                    Ok(e) => Box::new(e),
                    Err(other) => other.into(),
                },
            })?;
            self.pulled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((reference.clone(), platform.clone()));
            found = self.find(reference);
        }
        let found = found?;
        if let Some(stored) = found.config.platform()
            && stored != *platform
        {
            return Err(ResolveError::Backend {
                reference: reference.to_string(),
                source: format!("the stored image is for {stored}, not {platform}").into(),
            });
        }
        Ok(found)
    }
}
