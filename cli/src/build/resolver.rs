//! Base images for `FROM` and `COPY --from`, found in the local image store.

use kiln_image::oci_spec::image::ImageManifest;
use kiln_image::{BlobRead, Digest, ImageConfig, ImageRef, Platform};
use kiln_solver::lower::{ImageResolver, ResolveError, ResolvedImage};

use crate::state::State;

/// Resolves image references against the local store.
pub struct StoreResolver<'a> {
    state: &'a State,
}

impl<'a> StoreResolver<'a> {
    /// A resolver over `state`.
    pub fn new(state: &'a State) -> StoreResolver<'a> {
        StoreResolver { state }
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
        _platform: &Platform,
    ) -> Result<ResolvedImage, ResolveError> {
        self.find(reference)
    }
}
