//! `--cache-from` and `--cache-to`: cache records shared through a registry or an OCI
//! layout directory.
//!
//! Importing reads only each cache's manifest and record list at the start of the
//! build. A step whose key is found there is a hit like a local one, and its layers
//! are fetched only when something needs their bytes: a later step that runs on them,
//! or the exported image. A stage whose steps all hit and whose result only feeds a
//! step that hit too is never downloaded.
//!
//! Exporting writes the records of the steps this build solved (`mode=max`: every
//! stage's; `mode=min`, the default: only those in the final image's chain) with their
//! layers, as described in `docs/remote-cache.md`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use kiln_cache::remote::{self, DEFAULT_LAYOUT_TAG, Layout, MAX_CONFIG_SIZE};
use kiln_cache::{CacheIndex, CacheRecord, ContentStore, LayerRecord, variant};
use kiln_image::oci_spec::image::{ImageManifest, MediaType};
use kiln_image::registry::{RegistryClient, RegistryError};
use kiln_image::{BlobWrite, Compression, Digest, ImageRef};

use crate::transfer::TransferDisplay;

/// How much of a build a cache export keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheMode {
    /// The steps in the final image's chain.
    Min,
    /// Every step of every stage.
    Max,
}

/// Where a cache lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheLocation {
    /// A registry reference (`type=registry,ref=…`).
    Registry(ImageRef),
    /// An OCI layout directory and the tag in it (`type=local,dest|src=…`).
    Local {
        /// The directory.
        dir: PathBuf,
        /// The cache's name in the layout.
        tag: String,
    },
}

impl std::fmt::Display for CacheLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheLocation::Registry(reference) => write!(f, "{reference}"),
            CacheLocation::Local { dir, tag } => write!(f, "{}:{tag}", dir.display()),
        }
    }
}

/// A `--cache-to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheExport {
    /// Where it goes.
    pub location: CacheLocation,
    /// What it keeps.
    pub mode: CacheMode,
}

/// Splits `type=x,k=v,…` into its pairs.
fn pairs(flag: &str, spec: &str) -> anyhow::Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            bail!("{flag} {spec:?}: {part:?} is not KEY=VALUE");
        };
        if out
            .insert(k.trim().to_owned(), v.trim().to_owned())
            .is_some()
        {
            bail!("{flag} {spec:?}: {k} is given twice");
        }
    }
    Ok(out)
}

fn registry_ref(flag: &str, spec: &str, value: &str) -> anyhow::Result<ImageRef> {
    value
        .parse()
        .with_context(|| format!("{flag} {spec:?}: ref {value:?}"))
}

fn unknown_keys(
    flag: &str,
    spec: &str,
    fields: &HashMap<String, String>,
    known: &[&str],
) -> anyhow::Result<()> {
    let mut unknown: Vec<&str> = fields
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k))
        .collect();
    unknown.sort_unstable();
    if !unknown.is_empty() {
        bail!(
            "{flag} {spec:?}: unknown option {} (known: {})",
            unknown.join(", "),
            known.join(", ")
        );
    }
    Ok(())
}

/// Parses a `--cache-to`; `None` for `type=inline`, which the image export handles.
pub fn parse_cache_to(spec: &str) -> anyhow::Result<Option<CacheExport>> {
    let flag = "--cache-to";
    let fields = pairs(flag, spec)?;
    let mode = match fields.get("mode").map(String::as_str) {
        None | Some("min") => CacheMode::Min,
        Some("max") => CacheMode::Max,
        Some(other) => bail!("{flag} {spec:?}: mode={other}: expected min or max"),
    };
    let location = match fields.get("type").map(String::as_str) {
        Some("registry") => {
            unknown_keys(flag, spec, &fields, &["type", "ref", "mode"])?;
            let value = fields
                .get("ref")
                .with_context(|| format!("{flag} {spec:?}: type=registry needs ref=NAME"))?;
            CacheLocation::Registry(registry_ref(flag, spec, value)?)
        }
        Some("local") => {
            unknown_keys(flag, spec, &fields, &["type", "dest", "tag", "mode"])?;
            let dir = fields
                .get("dest")
                .with_context(|| format!("{flag} {spec:?}: type=local needs dest=DIR"))?;
            CacheLocation::Local {
                dir: PathBuf::from(dir),
                tag: fields
                    .get("tag")
                    .cloned()
                    .unwrap_or_else(|| DEFAULT_LAYOUT_TAG.to_owned()),
            }
        }
        Some("inline") => {
            unknown_keys(flag, spec, &fields, &["type", "mode"])?;
            if mode == CacheMode::Max {
                bail!(
                    "{flag} {spec:?}: an inline cache holds only the image's own layers (mode=min)"
                );
            }
            return Ok(None);
        }
        Some(other) => bail!("{flag} {spec:?}: type={other}: expected registry, local or inline"),
        None => bail!("{flag} {spec:?}: give type=registry|local|inline"),
    };
    Ok(Some(CacheExport { location, mode }))
}

/// Parses a `--cache-from`: `type=registry,ref=…`, `type=local,src=…[,tag=…]`, or a
/// bare image name (a registry cache, or an image with an inline cache).
pub fn parse_cache_from(spec: &str) -> anyhow::Result<CacheLocation> {
    let flag = "--cache-from";
    if !spec.contains('=') {
        return Ok(CacheLocation::Registry(registry_ref(flag, spec, spec)?));
    }
    let fields = pairs(flag, spec)?;
    match fields.get("type").map(String::as_str) {
        Some("registry") => {
            unknown_keys(flag, spec, &fields, &["type", "ref"])?;
            let value = fields
                .get("ref")
                .with_context(|| format!("{flag} {spec:?}: type=registry needs ref=NAME"))?;
            Ok(CacheLocation::Registry(registry_ref(flag, spec, value)?))
        }
        Some("local") => {
            unknown_keys(flag, spec, &fields, &["type", "src", "tag"])?;
            let dir = fields
                .get("src")
                .with_context(|| format!("{flag} {spec:?}: type=local needs src=DIR"))?;
            Ok(CacheLocation::Local {
                dir: PathBuf::from(dir),
                tag: fields
                    .get("tag")
                    .cloned()
                    .unwrap_or_else(|| DEFAULT_LAYOUT_TAG.to_owned()),
            })
        }
        Some(other) => bail!("{flag} {spec:?}: type={other}: expected registry or local"),
        None => bail!("{flag} {spec:?}: give type=registry|local"),
    }
}

/// Where a blob a remote record names can be fetched from.
#[derive(Clone, Debug)]
enum BlobSource {
    Registry(ImageRef),
    Layout(Layout),
}

/// The records of the `--cache-from` caches, and where their blobs are.
pub struct RemoteCaches {
    records: HashMap<Digest, CacheRecord>,
    sources: HashMap<Digest, BlobSource>,
    client: Option<RegistryClient>,
    display: Arc<TransferDisplay>,
    runtime: tokio::runtime::Handle,
    /// Remote records that were hits, to be kept in the local index once their blobs
    /// are here.
    hits: Mutex<Vec<(Digest, CacheRecord)>>,
    /// Serialises fetching so that two steps needing one blob fetch it once.
    fetching: tokio::sync::Mutex<()>,
}

impl RemoteCaches {
    /// No remote caches.
    pub fn none(display: Arc<TransferDisplay>) -> RemoteCaches {
        RemoteCaches {
            records: HashMap::new(),
            sources: HashMap::new(),
            client: None,
            display,
            runtime: tokio::runtime::Handle::current(),
            hits: Mutex::new(Vec::new()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads the record lists of `locations`. A registry cache that does not exist yet
    /// is a warning (the first build of a pipeline has none), not an error.
    pub async fn load(
        locations: &[CacheLocation],
        client: Option<RegistryClient>,
        display: Arc<TransferDisplay>,
    ) -> anyhow::Result<RemoteCaches> {
        let mut caches = RemoteCaches::none(display);
        caches.client = client;
        for location in locations {
            let (records, source) = match location {
                CacheLocation::Local { dir, tag } => {
                    let layout = Layout::new(dir);
                    if !dir.join("index.json").exists() {
                        caches.display.println(&format!(
                            "kiln: warning: --cache-from {}: no cache there yet",
                            dir.display()
                        ));
                        continue;
                    }
                    let records = layout.read(tag)?;
                    (records, BlobSource::Layout(layout))
                }
                CacheLocation::Registry(reference) => {
                    let client = caches
                        .client
                        .as_ref()
                        .context("internal error: no registry client for --cache-from")?;
                    match registry_records(client, reference).await {
                        Ok(records) => (records, BlobSource::Registry(reference.clone())),
                        Err(err) if is_not_found(&err) => {
                            caches.display.println(&format!(
                                "kiln: warning: --cache-from {reference}: not found in the registry"
                            ));
                            continue;
                        }
                        Err(err) => {
                            return Err(err).with_context(|| format!("--cache-from {reference}"));
                        }
                    }
                }
            };
            for (key, record) in records {
                for layer in &record.layers {
                    caches
                        .sources
                        .entry(layer.blob.clone())
                        .or_insert_with(|| source.clone());
                }
                caches.records.entry(key).or_insert(record);
            }
        }
        Ok(caches)
    }

    /// The remote record for `key`, if any; remembered as a hit.
    pub fn lookup(&self, key: &Digest) -> Option<CacheRecord> {
        let record = self.records.get(key)?.clone();
        self.hits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((key.clone(), record.clone()));
        Some(record)
    }

    /// Fetches the blobs of `layers` that the content store lacks and a remote cache
    /// has. Called from blocking threads.
    pub fn fetch_missing(
        &self,
        content: &ContentStore,
        layers: &[LayerRecord],
    ) -> anyhow::Result<()> {
        let missing: Vec<&LayerRecord> = layers
            .iter()
            .filter(|l| !content.contains(&l.blob) && self.sources.contains_key(&l.blob))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        self.runtime.block_on(self.fetch(content, &missing))
    }

    /// Fetches the blobs of `layers` that the content store lacks and a remote cache
    /// has (from async code).
    /// The registry repository an imported layer blob can be had from, if any.
    fn registry_source(&self, blob: &Digest) -> Option<&ImageRef> {
        match self.sources.get(blob) {
            Some(BlobSource::Registry(reference)) => Some(reference),
            _ => None,
        }
    }

    pub async fn fetch_layers(
        &self,
        content: &ContentStore,
        layers: &[LayerRecord],
    ) -> anyhow::Result<()> {
        let refs: Vec<&LayerRecord> = layers.iter().collect();
        self.fetch(content, &refs).await
    }

    async fn fetch(&self, content: &ContentStore, layers: &[&LayerRecord]) -> anyhow::Result<()> {
        let _one_at_a_time = self.fetching.lock().await;
        let sink: Arc<dyn BlobWrite + Send + Sync> = Arc::new(content.clone());
        let mut seen = HashSet::new();
        let mut tasks = tokio::task::JoinSet::new();
        for layer in layers {
            if !seen.insert(layer.blob.clone()) || content.contains(&layer.blob) {
                continue;
            }
            let Some(source) = self.sources.get(&layer.blob).cloned() else {
                continue;
            };
            let sink = Arc::clone(&sink);
            let client = self.client.clone();
            let display = Arc::clone(&self.display);
            let layer = (*layer).clone();
            tasks.spawn(async move {
                match source {
                    BlobSource::Registry(reference) => {
                        let client = client.context("internal error: no registry client")?;
                        client
                            .fetch_blob(
                                &reference,
                                &layer.blob,
                                Some(layer.size),
                                sink,
                                display.as_ref(),
                            )
                            .await
                            .with_context(|| {
                                format!("fetching cached layer {} from {reference}", layer.blob)
                            })?;
                    }
                    BlobSource::Layout(layout) => {
                        let path = layout.blob_path(&layer.blob);
                        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                            let mut file = std::fs::File::open(&path)
                                .with_context(|| format!("opening {}", path.display()))?;
                            sink.write_blob(&layer.blob, &mut file)
                                .with_context(|| format!("copying {}", path.display()))?;
                            Ok(())
                        })
                        .await??;
                    }
                }
                anyhow::Ok(())
            });
        }
        // The registry client bounds its own connections; a failure stops the rest.
        while let Some(result) = tasks.join_next().await {
            result??;
        }
        Ok(())
    }

    /// Keeps the remote records that were hits in the local index, once all their
    /// blobs are in the content store, so the next build here needs no remote cache.
    pub fn remember_hits(&self, content: &ContentStore, index: &CacheIndex) -> anyhow::Result<()> {
        let hits = std::mem::take(&mut *self.hits.lock().unwrap_or_else(|e| e.into_inner()));
        for (key, record) in hits {
            if record.layers.iter().all(|l| content.contains(&l.blob)) {
                index.put(&key, &record)?;
            }
        }
        Ok(())
    }
}

fn is_not_found(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<RegistryError>()
            .is_some_and(|e| matches!(e, RegistryError::NotFound { .. }))
    })
}

/// The records of a cache stored in a registry.
async fn registry_records(
    client: &RegistryClient,
    reference: &ImageRef,
) -> anyhow::Result<Vec<(Digest, CacheRecord)>> {
    let manifest = client.get_manifest(reference).await?;
    let place = reference.to_string();
    let parsed: ImageManifest = serde_json::from_slice(&manifest.bytes)
        .with_context(|| format!("{place}: the cache manifest is not valid JSON"))?;
    if is_image_config(parsed.config().media_type()) {
        return inline_records(client, reference, &parsed).await;
    }
    let config = remote::config_descriptor(&parsed, &place)?;
    if config.size() > MAX_CONFIG_SIZE {
        bail!(
            "{place}: cache config of {} bytes is larger than {MAX_CONFIG_SIZE}",
            config.size()
        );
    }
    let digest: Digest = config
        .digest()
        .to_string()
        .parse()
        .with_context(|| format!("{place}: cache config digest"))?;
    let bytes = client
        .get_blob_bytes(reference, &digest, MAX_CONFIG_SIZE)
        .await?;
    Ok(remote::decode(&parsed, &bytes, &place)?)
}

fn is_image_config(media_type: &MediaType) -> bool {
    matches!(media_type, MediaType::ImageConfig)
        || media_type.to_string() == "application/vnd.docker.container.image.v1+json"
}

/// The records of the inline cache of an image (none if it has no inline cache).
async fn inline_records(
    client: &RegistryClient,
    reference: &ImageRef,
    manifest: &ImageManifest,
) -> anyhow::Result<Vec<(Digest, CacheRecord)>> {
    let place = reference.to_string();
    let digest: Digest = manifest
        .config()
        .digest()
        .to_string()
        .parse()
        .with_context(|| format!("{place}: config digest"))?;
    let bytes = client
        .get_blob_bytes(reference, &digest, MAX_CONFIG_SIZE)
        .await?;
    let config: kiln_image::ImageConfig = serde_json::from_slice(&bytes)
        .with_context(|| format!("{place}: the image config is not valid"))?;
    let Some(inline) = &config.inline_cache else {
        return Ok(Vec::new());
    };
    let layers = super::worker::layer_records(manifest, &config).with_context(|| place.clone())?;
    Ok(remote::decode_inline(inline, layers, &place)?)
}

/// Writes a cache of `records` to `export`. Layer blobs missing here are fetched from
/// the imported caches first, except those the destination registry already holds.
pub async fn export(
    export: &CacheExport,
    records: Vec<(Digest, CacheRecord)>,
    image_layers: &[LayerRecord],
    content: &ContentStore,
    index: &CacheIndex,
    imported: &RemoteCaches,
    client: Option<&RegistryClient>,
) -> anyhow::Result<Digest> {
    let records = match export.mode {
        CacheMode::Max => records,
        CacheMode::Min => remote::only_image_chain(records, image_layers),
    };
    let records = {
        let (content, index) = (content.clone(), index.clone());
        tokio::task::spawn_blocking(move || compress_records(&content, &index, records)).await??
    };
    let cache = remote::encode(&records);
    let digest = cache.manifest_digest.clone();
    match &export.location {
        CacheLocation::Local { dir, tag } => {
            imported.fetch_layers(content, &cache.layers).await?;
            let layout = Layout::new(dir);
            let content = content.clone();
            let tag = tag.clone();
            tokio::task::spawn_blocking(move || layout.write(&cache, &tag, &content))
                .await?
                .with_context(|| format!("writing the cache to {}", dir.display()))?;
        }
        CacheLocation::Registry(reference) => {
            let client = client.context("internal error: no registry client for --cache-to")?;
            let source: Arc<dyn kiln_image::BlobRead + Send + Sync> = Arc::new(content.clone());
            for layer in &cache.layers {
                // A layer imported and never needed here is not downloaded only to be
                // sent back where it is (a cache exported where it was imported from).
                let mount_from: Vec<ImageRef> = imported
                    .registry_source(&layer.blob)
                    .cloned()
                    .into_iter()
                    .collect();
                if !content.contains(&layer.blob)
                    && !client.blob_exists(reference, &layer.blob).await?
                {
                    imported
                        .fetch_layers(content, std::slice::from_ref(layer))
                        .await?;
                }
                client
                    .push_blob(
                        reference,
                        &layer.blob,
                        layer.size,
                        Arc::clone(&source),
                        &mount_from,
                        imported.display.as_ref(),
                    )
                    .await
                    .with_context(|| {
                        format!("pushing cached layer {} to {reference}", layer.blob)
                    })?;
            }
            let (config_digest, _) = content
                .put_blob(&cache.config)
                .context("storing the cache config")?;
            client
                .push_blob(
                    reference,
                    &config_digest,
                    cache.config.len() as u64,
                    Arc::clone(&source),
                    &[],
                    imported.display.as_ref(),
                )
                .await
                .with_context(|| format!("pushing the cache config to {reference}"))?;
            client
                .put_manifest(
                    reference,
                    MediaType::ImageManifest.to_string().as_str(),
                    &cache.manifest,
                )
                .await
                .with_context(|| format!("pushing the cache manifest to {reference}"))?;
        }
    }
    Ok(digest)
}

/// `records` with their plain layers replaced by gzip variants (made once per layer):
/// a cache is for other machines, and travels compressed like an image.
fn compress_records(
    content: &ContentStore,
    index: &CacheIndex,
    records: Vec<(Digest, CacheRecord)>,
) -> anyhow::Result<Vec<(Digest, CacheRecord)>> {
    let mut variants: HashMap<Digest, LayerRecord> = HashMap::new();
    records
        .into_iter()
        .map(|(key, mut record)| {
            for layer in &mut record.layers {
                let variant = match variants.get(&layer.blob) {
                    Some(known) => known.clone(),
                    None => {
                        let made = variant::compressed(content, index, layer, Compression::Gzip)
                            .with_context(|| format!("compressing layer {}", layer.blob))?;
                        variants.insert(layer.blob.clone(), made.clone());
                        made
                    }
                };
                // Each record keeps its own date for the layer.
                *layer = LayerRecord {
                    created: layer.created,
                    ..variant
                };
            }
            Ok((key, record))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_to_specs() {
        let r = parse_cache_to("type=registry,ref=127.0.0.1:5000/app:cache,mode=max")
            .unwrap()
            .unwrap();
        assert_eq!(r.mode, CacheMode::Max);
        assert!(
            matches!(r.location, CacheLocation::Registry(ref x) if x.to_string() == "127.0.0.1:5000/app:cache")
        );
        let l = parse_cache_to("type=local,dest=/tmp/c").unwrap().unwrap();
        assert_eq!(l.mode, CacheMode::Min);
        assert_eq!(
            l.location,
            CacheLocation::Local {
                dir: "/tmp/c".into(),
                tag: "cache".into()
            }
        );
        assert_eq!(parse_cache_to("type=inline").unwrap(), None);
        for (bad, says) in [
            ("type=registry", "needs ref=NAME"),
            ("type=local,src=/x", "unknown option src"),
            ("type=s3,ref=x", "type=s3"),
            ("mode=max", "give type="),
            ("type=registry,ref=a,mode=all", "mode=all"),
            ("type=inline,mode=max", "mode=min"),
            ("type=registry,ref", "not KEY=VALUE"),
        ] {
            let err = parse_cache_to(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn cache_from_specs() {
        assert!(matches!(
            parse_cache_from("127.0.0.1:5000/app:cache").unwrap(),
            CacheLocation::Registry(_)
        ));
        assert_eq!(
            parse_cache_from("type=local,src=/c,tag=t").unwrap(),
            CacheLocation::Local {
                dir: "/c".into(),
                tag: "t".into()
            }
        );
        let err = parse_cache_from("type=local,dest=/c")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown option dest"), "{err}");
    }
}
