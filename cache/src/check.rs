//! Verifying the store, and repairing what can be repaired without losing an image.
//!
//! Every part of the store is checked against what it promises:
//!
//! * a blob's bytes hash to its name;
//! * a snapshot directory is complete, as a commit leaves it: a `meta.json` naming the
//!   directory's chain ID, which follows from the recorded parent and diff ID, an `fs/`
//!   tree, and (overlay) every ancestor present and complete too;
//! * a cache record decodes and every blob of its layers is present and intact;
//! * an image of the image store has its manifest (or index), config and layers
//!   present, intact and parseable, and the manifest's config is the image's ID;
//! * the scratch areas hold nothing a dead process left behind.
//!
//! Repair removes what is derived or re-creatable: corrupt blobs (they would fail any
//! reader anyway), incomplete snapshots (rebuilt from their blobs when next needed),
//! cache records whose blobs are gone (the step runs again), abandoned scratch. An
//! unreadable cache index is removed whole: it only saves work. Images are never
//! removed: a damaged image is reported, and stays until the user removes or rebuilds
//! it. A blob that is corrupt is treated as missing by the record and image checks, so
//! a check without repair reports what a repair would leave.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use kiln_image::oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use kiln_image::store::ImageStore;
use kiln_image::{Digest, Digester};

use crate::index::CacheRecord;
use crate::root::Store;
use crate::scratch;
use crate::snapshot::{SnapshotDamage, SnapshotInfo, SnapshotMode};
use crate::{CacheError, ChainId};

/// Something wrong in the store: what, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A blob whose bytes do not hash to its name.
    CorruptBlob {
        /// The blob's name.
        digest: Digest,
        /// What its bytes hash to.
        actual: Digest,
        /// Its file.
        path: PathBuf,
    },
    /// A blob that cannot be read.
    UnreadableBlob {
        /// The blob's name.
        digest: Digest,
        /// Its file.
        path: PathBuf,
        /// What reading it said.
        error: String,
    },
    /// A scratch entry whose process is gone.
    AbandonedScratch {
        /// The entry.
        path: PathBuf,
        /// Its size on disk.
        bytes: u64,
    },
    /// A directory in a snapshot folder that is not a complete snapshot.
    BrokenSnapshot {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        damage: SnapshotDamage,
    },
    /// An overlay snapshot whose ancestor is missing or broken, so it cannot be mounted.
    OrphanSnapshot {
        /// The snapshot's directory.
        path: PathBuf,
        /// Its chain ID.
        chain_id: ChainId,
        /// The first ancestor that is not there.
        missing: ChainId,
    },
    /// The cache index cannot be opened or read.
    UnreadableIndex {
        /// The index file.
        path: PathBuf,
        /// What the database said.
        error: String,
    },
    /// A cache record whose key or value cannot be decoded.
    UnreadableRecord {
        /// The key as stored.
        key: String,
        /// Why it cannot be decoded.
        error: String,
    },
    /// A cache record naming blobs that are missing or corrupt.
    DanglingRecord {
        /// Its cache key.
        key: Digest,
        /// The blobs that are not there (or not intact).
        missing: Vec<Digest>,
    },
    /// The image store cannot be read.
    UnreadableImageStore {
        /// Its file.
        path: PathBuf,
        /// Why.
        error: String,
    },
    /// An image of the image store that cannot be used.
    BrokenImage {
        /// Its name, or `<none>`.
        name: String,
        /// Its manifest (or index).
        manifest: Digest,
        /// What is wrong.
        damage: ImageDamage,
    },
}

/// What is wrong with an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageDamage {
    /// A blob it needs is missing or corrupt.
    MissingBlob {
        /// `manifest`, `config`, `layer` or `index`.
        role: &'static str,
        /// The blob.
        digest: Digest,
    },
    /// A blob it needs does not parse as what it should be.
    Unparseable {
        /// `manifest`, `config` or `index`.
        role: &'static str,
        /// The blob.
        digest: Digest,
        /// The parse error.
        error: String,
    },
    /// The manifest's config is not the image ID the image store records.
    ConfigMismatch {
        /// The image ID in the image store.
        recorded: Digest,
        /// The config the manifest names.
        manifest: Digest,
    },
    /// The manifest's layers and the config's diff IDs do not pair up.
    LayerCount {
        /// Layers in the manifest.
        layers: usize,
        /// Diff IDs in the config.
        diff_ids: usize,
    },
}

/// One problem, and whether a repair removed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What is wrong, and where.
    pub problem: Problem,
    /// Whether it was repaired.
    pub repaired: bool,
}

/// How much was looked at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checked {
    /// Blobs hashed.
    pub blobs: u64,
    /// Snapshot directories looked at.
    pub snapshots: u64,
    /// Cache records.
    pub records: u64,
    /// Image store entries.
    pub images: u64,
}

/// What a check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Every problem, in the order found (blobs, scratch, snapshots, index, images).
    pub findings: Vec<Finding>,
    /// How much was looked at.
    pub checked: Checked,
}

impl CheckReport {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// The problems still there (all of them, unless this was a repair).
    pub fn unrepaired(&self) -> impl Iterator<Item = &Problem> {
        self.findings
            .iter()
            .filter(|f| !f.repaired)
            .map(|f| &f.problem)
    }
}

pub(crate) fn run(store: &Store, repair: bool) -> Result<CheckReport, CacheError> {
    let mut check = Check {
        store,
        repair,
        report: CheckReport::default(),
        bad_blobs: HashSet::new(),
    };
    check.blobs()?;
    check.scratch()?;
    check.snapshots()?;
    check.index()?;
    check.images();
    Ok(check.report)
}

struct Check<'a> {
    store: &'a Store,
    repair: bool,
    report: CheckReport,
    /// Corrupt or unreadable blobs: missing, for everything that refers to them.
    bad_blobs: HashSet<Digest>,
}

impl Check<'_> {
    /// Records a problem, repairing it with `fix` when this is a repair.
    fn found(
        &mut self,
        problem: Problem,
        fix: impl FnOnce() -> Result<(), CacheError>,
    ) -> Result<(), CacheError> {
        let repaired = if self.repair {
            fix()?;
            true
        } else {
            false
        };
        self.report.findings.push(Finding { problem, repaired });
        Ok(())
    }

    fn blobs(&mut self) -> Result<(), CacheError> {
        let content = self.store.content().clone();
        for blob in content.entries()? {
            self.report.checked.blobs += 1;
            let (path, hashed) = if blob.in_snapshot {
                let path = content.kept_path(&blob.digest);
                let hashed = match content.hash_kept(&blob.digest) {
                    // Written out or removed since it was listed.
                    Err(CacheError::BlobNotFound(_)) => continue,
                    hashed => hashed.map_err(|e| error_chain(&e)),
                };
                (path, hashed)
            } else {
                let path = content.path(&blob.digest);
                let hashed = match hash_file(&path) {
                    // Removed since it was listed (by a collection in another process).
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    hashed => hashed.map_err(|e| e.to_string()),
                };
                (path, hashed)
            };
            let problem = match hashed {
                Ok(actual) if actual == blob.digest => continue,
                Ok(actual) => Problem::CorruptBlob {
                    digest: blob.digest.clone(),
                    actual,
                    path,
                },
                Err(error) => Problem::UnreadableBlob {
                    digest: blob.digest.clone(),
                    path,
                    error,
                },
            };
            self.bad_blobs.insert(blob.digest.clone());
            self.found(problem, || match content.delete(&blob.digest) {
                Err(CacheError::BlobNotFound(_)) => Ok(()),
                other => other,
            })?;
        }
        Ok(())
    }

    fn scratch(&mut self) -> Result<(), CacheError> {
        let dirs = [
            self.store.content().ingest_dir().to_owned(),
            self.store.snapshotter(SnapshotMode::Overlay)?.scratch_dir(),
        ];
        let mut found = Vec::new();
        for dir in dirs {
            scratch::sweep_with(&dir, !self.repair, |path, bytes| {
                found.push(Problem::AbandonedScratch {
                    path: path.to_owned(),
                    bytes,
                });
            })?;
        }
        for problem in found {
            // The sweep above already removed it when repairing.
            self.found(problem, || Ok(()))?;
        }
        Ok(())
    }

    fn snapshots(&mut self) -> Result<(), CacheError> {
        for mode in SnapshotMode::ALL {
            let snapshotter = self.store.snapshotter(mode)?;
            let mut valid: HashMap<ChainId, (PathBuf, SnapshotInfo)> = HashMap::new();
            for (path, entry) in snapshotter.inspect()? {
                self.report.checked.snapshots += 1;
                match entry {
                    Ok(info) => {
                        valid.insert(info.chain_id.clone(), (path, info));
                    }
                    Err(damage) => {
                        let problem = Problem::BrokenSnapshot {
                            path: path.clone(),
                            damage,
                        };
                        self.found(problem, || snapshotter.remove_dir(&path))?;
                    }
                }
            }
            if mode != SnapshotMode::Overlay {
                continue;
            }
            let mut orphans: Vec<(PathBuf, ChainId, ChainId)> = valid
                .values()
                .filter_map(|(path, info)| {
                    let missing = first_missing_ancestor(info, &valid)?;
                    Some((path.clone(), info.chain_id.clone(), missing))
                })
                .collect();
            orphans.sort();
            for (path, chain_id, missing) in orphans {
                let problem = Problem::OrphanSnapshot {
                    path: path.clone(),
                    chain_id,
                    missing,
                };
                self.found(problem, || snapshotter.remove_dir(&path))?;
            }
        }
        Ok(())
    }

    fn index(&mut self) -> Result<(), CacheError> {
        let index = self.store.index();
        let raw = match index.raw() {
            Ok(raw) => raw,
            Err(e) => {
                let path = index.path().to_owned();
                let problem = Problem::UnreadableIndex {
                    path: path.clone(),
                    error: error_chain(&e),
                };
                return self.found(problem, || scratch::remove_any(&path));
            }
        };
        let content = self.store.content();
        let mut remove = Vec::new();
        let mut problems = Vec::new();
        for (key, bytes) in raw {
            self.report.checked.records += 1;
            let decoded = key
                .parse::<Digest>()
                .map_err(|e| e.to_string())
                .and_then(|d| {
                    serde_json::from_slice::<CacheRecord>(&bytes)
                        .map(|r| (d, r))
                        .map_err(|e| e.to_string())
                });
            let problem = match decoded {
                Err(error) => Problem::UnreadableRecord {
                    key: key.clone(),
                    error,
                },
                Ok((digest, record)) => {
                    let mut missing: Vec<Digest> = record
                        .layers
                        .iter()
                        .map(|l| &l.blob)
                        .filter(|b| self.bad_blobs.contains(b) || !content.contains(b))
                        .cloned()
                        .collect();
                    if missing.is_empty() {
                        continue;
                    }
                    missing.dedup();
                    Problem::DanglingRecord {
                        key: digest,
                        missing,
                    }
                }
            };
            remove.push(key);
            problems.push(problem);
        }
        if self.repair {
            index.remove_raw(&remove)?;
        }
        for problem in problems {
            self.found(problem, || Ok(()))?;
        }
        Ok(())
    }

    fn images(&mut self) {
        let images = ImageStore::open(self.store.root());
        let records = match images.read() {
            Ok(images) => images.records().to_vec(),
            Err(e) => {
                let problem = Problem::UnreadableImageStore {
                    path: images.path(),
                    error: error_chain(&e),
                };
                self.report.findings.push(Finding {
                    problem,
                    repaired: false,
                });
                return;
            }
        };
        for record in records {
            self.report.checked.images += 1;
            let name = record
                .name
                .as_ref()
                .map_or_else(|| "<none>".to_owned(), ToString::to_string);
            let mut damage = Vec::new();
            self.image_damage(&record.image.digest, &record.image.config, &mut damage);
            for damage in damage {
                self.report.findings.push(Finding {
                    problem: Problem::BrokenImage {
                        name: name.clone(),
                        manifest: record.image.digest.clone(),
                        damage,
                    },
                    repaired: false,
                });
            }
        }
    }

    /// What is wrong with the image whose manifest or index is `top` and whose ID is
    /// `config`.
    fn image_damage(&self, top: &Digest, config: &Digest, out: &mut Vec<ImageDamage>) {
        let Some(bytes) = self.blob(top, "manifest", out) else {
            return;
        };
        let is_index = serde_json::from_slice::<serde_json::Value>(&bytes)
            .is_ok_and(|v| v.get("manifests").is_some());
        if !is_index {
            self.manifest_damage(top, &bytes, Some(config), out);
            return;
        }
        let index = match serde_json::from_slice::<ImageIndex>(&bytes) {
            Ok(index) => index,
            Err(e) => {
                out.push(ImageDamage::Unparseable {
                    role: "index",
                    digest: top.clone(),
                    error: e.to_string(),
                });
                return;
            }
        };
        // An index may list platforms that were never fetched; those present must be
        // whole, and the image's own config must be among them.
        for entry in index.manifests() {
            let Ok(child) = Digest::try_from(entry.digest()) else {
                continue;
            };
            if !self.store.content().contains(&child) && !self.bad_blobs.contains(&child) {
                continue;
            }
            if let Some(bytes) = self.blob(&child, "manifest", out) {
                self.manifest_damage(&child, &bytes, None, out);
            }
        }
        self.blob(config, "config", out);
    }

    fn manifest_damage(
        &self,
        digest: &Digest,
        bytes: &[u8],
        image_id: Option<&Digest>,
        out: &mut Vec<ImageDamage>,
    ) {
        let manifest = match serde_json::from_slice::<ImageManifest>(bytes) {
            Ok(manifest) => manifest,
            Err(e) => {
                out.push(ImageDamage::Unparseable {
                    role: "manifest",
                    digest: digest.clone(),
                    error: e.to_string(),
                });
                return;
            }
        };
        let config = match Digest::try_from(manifest.config().digest()) {
            Ok(config) => config,
            Err(e) => {
                out.push(ImageDamage::Unparseable {
                    role: "manifest",
                    digest: digest.clone(),
                    error: e.to_string(),
                });
                return;
            }
        };
        if let Some(recorded) = image_id
            && *recorded != config
        {
            out.push(ImageDamage::ConfigMismatch {
                recorded: recorded.clone(),
                manifest: config.clone(),
            });
        }
        if let Some(bytes) = self.blob(&config, "config", out) {
            match serde_json::from_slice::<ImageConfiguration>(&bytes) {
                Ok(parsed) if parsed.rootfs().diff_ids().len() != manifest.layers().len() => {
                    out.push(ImageDamage::LayerCount {
                        layers: manifest.layers().len(),
                        diff_ids: parsed.rootfs().diff_ids().len(),
                    });
                }
                Ok(_) => {}
                Err(e) => out.push(ImageDamage::Unparseable {
                    role: "config",
                    digest: config.clone(),
                    error: e.to_string(),
                }),
            }
        }
        for layer in manifest.layers() {
            match Digest::try_from(layer.digest()) {
                Ok(layer) => {
                    if self.bad_blobs.contains(&layer) || !self.store.content().contains(&layer) {
                        out.push(ImageDamage::MissingBlob {
                            role: "layer",
                            digest: layer,
                        });
                    }
                }
                Err(e) => out.push(ImageDamage::Unparseable {
                    role: "manifest",
                    digest: digest.clone(),
                    error: e.to_string(),
                }),
            }
        }
    }

    /// The bytes of an intact blob, or `None` with the damage noted.
    fn blob(
        &self,
        digest: &Digest,
        role: &'static str,
        out: &mut Vec<ImageDamage>,
    ) -> Option<Vec<u8>> {
        if self.bad_blobs.contains(digest) {
            out.push(ImageDamage::MissingBlob {
                role,
                digest: digest.clone(),
            });
            return None;
        }
        match self.store.content().read(digest) {
            Ok(bytes) => Some(bytes),
            Err(_) => {
                out.push(ImageDamage::MissingBlob {
                    role,
                    digest: digest.clone(),
                });
                None
            }
        }
    }
}

/// The first ancestor of an overlay snapshot that is not among `valid`.
fn first_missing_ancestor(
    info: &SnapshotInfo,
    valid: &HashMap<ChainId, (PathBuf, SnapshotInfo)>,
) -> Option<ChainId> {
    let mut next = info.parent.as_ref();
    // Chain IDs are hashes of their ancestry, so a walk cannot loop; the bound only
    // guards against a store edited by hand.
    for _ in 0..=valid.len() {
        let parent = next?;
        match valid.get(parent) {
            Some((_, parent_info)) => next = parent_info.parent.as_ref(),
            None => return Some(parent.clone()),
        }
    }
    None
}

fn hash_file(path: &Path) -> io::Result<Digest> {
    let mut file = std::fs::File::open(path)?;
    let mut digester = Digester::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(digester.finish());
        }
        digester.update(&buf[..n]);
    }
}

/// An error and its causes on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        text.push_str(": ");
        text.push_str(&err.to_string());
        cause = err.source();
    }
    text
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::CorruptBlob {
                digest,
                actual,
                path,
            } => write!(
                f,
                "blob {digest} is corrupt: its content hashes to {actual} ({})",
                path.display()
            ),
            Problem::UnreadableBlob {
                digest,
                path,
                error,
            } => write!(
                f,
                "blob {digest} cannot be read: {error} ({})",
                path.display()
            ),
            Problem::AbandonedScratch { path, bytes } => write!(
                f,
                "scratch left by a process that is gone, {bytes} bytes ({})",
                path.display()
            ),
            Problem::BrokenSnapshot { path, damage } => write!(
                f,
                "snapshot directory is incomplete: {damage} ({})",
                path.display()
            ),
            Problem::OrphanSnapshot {
                path,
                chain_id,
                missing,
            } => write!(
                f,
                "snapshot {chain_id} cannot be mounted: its ancestor {missing} is missing ({})",
                path.display()
            ),
            Problem::UnreadableIndex { path, error } => write!(
                f,
                "cache index cannot be read: {error} ({})",
                path.display()
            ),
            Problem::UnreadableRecord { key, error } => {
                write!(f, "cache record {key:?} cannot be decoded: {error}")
            }
            Problem::DanglingRecord { key, missing } => {
                write!(f, "cache record {key} refers to missing blobs:")?;
                for blob in missing {
                    write!(f, " {blob}")?;
                }
                Ok(())
            }
            Problem::UnreadableImageStore { path, error } => write!(
                f,
                "image store cannot be read: {error} ({})",
                path.display()
            ),
            Problem::BrokenImage {
                name,
                manifest,
                damage,
            } => write!(f, "image {name} ({manifest}): {damage}"),
        }
    }
}

impl fmt::Display for ImageDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageDamage::MissingBlob { role, digest } => {
                write!(f, "its {role} {digest} is missing or corrupt")
            }
            ImageDamage::Unparseable {
                role,
                digest,
                error,
            } => write!(f, "its {role} {digest} cannot be parsed: {error}"),
            ImageDamage::ConfigMismatch { recorded, manifest } => write!(
                f,
                "its manifest names config {manifest}, but the image ID is {recorded}"
            ),
            ImageDamage::LayerCount { layers, diff_ids } => write!(
                f,
                "its manifest has {layers} layers but its config lists {diff_ids} diff IDs"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use kiln_image::oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType};

    use super::*;
    use crate::{CacheRecord, LayerRecord, Snapshotter};

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("root")).unwrap();
        (dir, store)
    }

    fn problems(report: &CheckReport) -> Vec<&Problem> {
        report.findings.iter().map(|f| &f.problem).collect()
    }

    /// Checks, expects `expect` to hold of the problems found, repairs, and expects a
    /// clean store afterwards.
    fn found_then_repaired(store: Store, expect: impl Fn(&[&Problem])) -> Store {
        let report = store.check().unwrap();
        expect(&problems(&report));
        assert!(report.findings.iter().all(|f| !f.repaired));
        let exclusive = store.lock_exclusive().unwrap();
        let repaired = exclusive.repair().unwrap();
        expect(&problems(&repaired));
        assert!(repaired.findings.iter().all(|f| f.repaired), "{repaired:?}");
        let store = exclusive.into_shared().unwrap();
        let after = store.check().unwrap();
        assert!(after.is_clean(), "{after:?}");
        store
    }

    /// Commits a one-file snapshot of `diff_id` over `parent`.
    fn snapshot(snaps: &Snapshotter, parent: Option<&ChainId>, diff_id: &Digest) -> SnapshotInfo {
        let scratch = snaps.scratch().unwrap();
        let tree = scratch.path().join("tree");
        fs::create_dir(&tree).unwrap();
        fs::write(tree.join("f"), diff_id.hex()).unwrap();
        snaps.commit_dir(parent, diff_id, &tree).unwrap()
    }

    fn layer(blob: &Digest) -> LayerRecord {
        LayerRecord {
            diff_id: blob.clone(),
            blob: blob.clone(),
            size: 1,
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            created: 0,
        }
    }

    fn record(blobs: &[&Digest]) -> CacheRecord {
        CacheRecord {
            layers: blobs.iter().map(|b| layer(b)).collect(),
            created: 0,
        }
    }

    /// Stores an image of `layers` and names it `name` in the image store.
    fn image(store: &Store, name: &str, layers: &[&Digest]) -> (Digest, Digest) {
        let content = store.content();
        let diff_ids: Vec<String> = layers.iter().map(|d| d.to_string()).collect();
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        });
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let config_digest = content.put(&config_bytes).unwrap();
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(Descriptor::new(
                MediaType::ImageConfig,
                config_bytes.len() as u64,
                &config_digest,
            ))
            .layers(
                layers
                    .iter()
                    .map(|d| Descriptor::new(MediaType::ImageLayer, 1, *d))
                    .collect::<Vec<_>>(),
            )
            .build()
            .unwrap();
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
        let manifest_digest = content.put(&manifest_bytes).unwrap();
        let file = serde_json::json!({ "version": 1, "images": [{
            "name": name,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest.to_string(),
            "size": manifest_bytes.len(),
            "config": config_digest.to_string(),
            "created": "2024-01-01T00:00:00Z",
        }]});
        fs::write(
            store.root().join("images-v1.json"),
            serde_json::to_vec(&file).unwrap(),
        )
        .unwrap();
        (manifest_digest, config_digest)
    }

    #[test]
    fn a_healthy_store_is_clean() {
        let (_dir, store) = open();
        let a = store.content().put(b"layer a").unwrap();
        let b = store.content().put(b"layer b").unwrap();
        let snaps = store.snapshotter(SnapshotMode::Overlay).unwrap();
        let base = snapshot(&snaps, None, &a);
        snapshot(&snaps, Some(&base.chain_id), &b);
        store
            .index()
            .put(&Digest::of(b"key"), &record(&[&a, &b]))
            .unwrap();
        image(&store, "docker.io/library/ok:1", &[&a, &b]);
        let report = store.check().unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(
            report.checked,
            Checked {
                blobs: 4,
                snapshots: 2,
                records: 1,
                images: 1
            }
        );
    }

    #[test]
    fn a_corrupt_blob_is_removed_with_the_records_that_need_it() {
        let (_dir, store) = open();
        let good = store.content().put(b"good").unwrap();
        let bad = store.content().put(b"original").unwrap();
        fs::write(store.content().path(&bad), b"flipped").unwrap();
        let key = Digest::of(b"key");
        store.index().put(&key, &record(&[&good, &bad])).unwrap();
        let store = found_then_repaired(store, |found| {
            assert_eq!(found.len(), 2, "{found:?}");
            assert!(
                matches!(found[0], Problem::CorruptBlob { digest, actual, .. }
                if *digest == bad && *actual == Digest::of(b"flipped"))
            );
            assert!(
                matches!(found[1], Problem::DanglingRecord { key: k, missing }
                if *k == key && *missing == [bad.clone()])
            );
            assert!(found[0].to_string().contains(&bad.to_string()));
        });
        assert!(!store.content().contains(&bad));
        assert!(store.content().contains(&good));
        assert_eq!(store.index().get(&key).unwrap(), None);
    }

    #[test]
    fn incomplete_snapshot_directories_are_named_and_removed() {
        let (_dir, store) = open();
        let snaps = store.snapshotter(SnapshotMode::Overlay).unwrap();
        let damages = [
            SnapshotDamage::NoMetadata,
            SnapshotDamage::BadMetadata,
            SnapshotDamage::WrongName,
            SnapshotDamage::NoTree,
        ];
        let mut dirs = Vec::new();
        for (n, damage) in damages.iter().enumerate() {
            let info = snapshot(&snaps, None, &Digest::of(&[n as u8]));
            let dir = info.fs.parent().unwrap().to_owned();
            match damage {
                SnapshotDamage::NoMetadata => fs::remove_file(dir.join("meta.json")).unwrap(),
                SnapshotDamage::BadMetadata => fs::write(dir.join("meta.json"), b"{").unwrap(),
                SnapshotDamage::WrongName => {
                    let meta = fs::read_to_string(dir.join("meta.json")).unwrap();
                    let other = Digest::of(b"other").to_string();
                    let meta = meta.replace(&info.diff_id.to_string(), &other);
                    fs::write(dir.join("meta.json"), meta).unwrap();
                }
                SnapshotDamage::NoTree => fs::remove_dir_all(&info.fs).unwrap(),
            }
            assert!(snaps.get(&info.chain_id).unwrap().is_none());
            dirs.push((dir, *damage));
        }
        dirs.sort_by(|a, b| a.0.cmp(&b.0));
        found_then_repaired(store, |found| {
            let got: Vec<_> = found
                .iter()
                .map(|p| match p {
                    Problem::BrokenSnapshot { path, damage } => (path.clone(), *damage),
                    other => panic!("unexpected {other}"),
                })
                .collect();
            assert_eq!(got, dirs);
        });
        for (dir, _) in &dirs {
            assert!(!dir.exists());
        }
    }

    #[test]
    fn a_snapshot_without_its_parent_is_an_orphan_and_prepare_rebuilds_the_parent() {
        let (_dir, store) = open();
        let snaps = store.snapshotter(SnapshotMode::Overlay).unwrap();
        let base = snapshot(&snaps, None, &Digest::of(b"a"));
        let child = snapshot(&snaps, Some(&base.chain_id), &Digest::of(b"b"));
        let grandchild = snapshot(&snaps, Some(&child.chain_id), &Digest::of(b"c"));
        fs::remove_dir_all(base.fs.parent().unwrap()).unwrap();
        found_then_repaired(store, |found| {
            let orphans: Vec<_> = found
                .iter()
                .map(|p| match p {
                    Problem::OrphanSnapshot {
                        chain_id, missing, ..
                    } => {
                        assert_eq!(*missing, base.chain_id);
                        chain_id.clone()
                    }
                    other => panic!("unexpected {other}"),
                })
                .collect();
            let mut expected = vec![child.chain_id.clone(), grandchild.chain_id.clone()];
            expected.sort_by_key(|c| c.digest().hex().to_owned());
            assert_eq!(orphans, expected);
        });
        assert!(snaps.list().unwrap().is_empty());
    }

    #[test]
    fn prepare_rebuilds_a_lost_ancestor_of_an_existing_snapshot() {
        let (_dir, store) = open();
        let snaps = store.snapshotter(SnapshotMode::Overlay).unwrap();
        let layers: Vec<crate::LayerRef> = ["a", "b"]
            .into_iter()
            .map(|name| crate::test_support::one_file_layer(&store, name))
            .collect();
        let top = snaps.prepare(store.content(), &layers).unwrap();
        let base = ChainId::base(&layers[0].diff_id);
        let base_dir = snaps.lowerdirs(&base).unwrap()[0]
            .parent()
            .unwrap()
            .to_owned();
        fs::remove_dir_all(&base_dir).unwrap();
        assert!(snaps.lowerdirs(&top.chain_id).is_err());
        snaps.prepare(store.content(), &layers).unwrap();
        let dirs = snaps.lowerdirs(&top.chain_id).unwrap();
        assert_eq!(dirs.len(), 2);
        assert!(dirs[1].join("a").is_file());
    }

    #[test]
    fn dangling_and_unreadable_records_are_removed() {
        let (_dir, store) = open();
        let present = store.content().put(b"present").unwrap();
        let gone = Digest::of(b"never stored");
        let (kept, dangling) = (Digest::of(b"kept"), Digest::of(b"dangling"));
        store.index().put(&kept, &record(&[&present])).unwrap();
        store
            .index()
            .put(&dangling, &record(&[&present, &gone]))
            .unwrap();
        {
            let db = redb::Database::create(store.index().path()).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("records-v1"))
                .unwrap()
                .insert("sha256:garbage", &b"{}"[..])
                .unwrap();
            txn.commit().unwrap();
        }
        let store = found_then_repaired(store, |found| {
            assert_eq!(found.len(), 2, "{found:?}");
            assert!(
                found
                    .iter()
                    .any(|p| matches!(p, Problem::DanglingRecord { key, missing }
                if *key == dangling && *missing == [gone.clone()]))
            );
            assert!(
                found
                    .iter()
                    .any(|p| matches!(p, Problem::UnreadableRecord { key, .. }
                if key == "sha256:garbage"))
            );
        });
        assert_eq!(store.index().all().unwrap().len(), 1);
        assert!(store.index().get(&kept).unwrap().is_some());
    }

    #[test]
    fn an_unreadable_index_is_dropped() {
        let (_dir, store) = open();
        fs::write(store.index().path(), b"not a database at all").unwrap();
        found_then_repaired(store, |found| {
            assert!(
                matches!(found, [Problem::UnreadableIndex { .. }]),
                "{found:?}"
            );
        });
    }

    #[test]
    fn a_damaged_image_is_reported_and_never_removed() {
        let (_dir, store) = open();
        let a = store.content().put(b"layer a").unwrap();
        let b = store.content().put(b"layer b").unwrap();
        let (manifest, config) = image(&store, "docker.io/library/hurt:1", &[&a, &b]);
        store.content().delete(&b).unwrap();
        fs::write(store.content().path(&config), b"{not json").unwrap();
        let before = fs::read(store.root().join("images-v1.json")).unwrap();

        let report = store.check().unwrap();
        let found = problems(&report);
        assert!(found.iter().any(|p| matches!(p, Problem::BrokenImage {
            damage: ImageDamage::MissingBlob { role: "layer", digest }, manifest: m, name,
        } if *digest == b && *m == manifest && name == "docker.io/library/hurt:1")));
        assert!(found.iter().any(|p| matches!(p, Problem::BrokenImage {
            damage: ImageDamage::MissingBlob { role: "config", digest }, ..
        } if *digest == config)));

        let exclusive = store.lock_exclusive().unwrap();
        let repaired = exclusive.repair().unwrap();
        let broken: Vec<_> = repaired
            .findings
            .iter()
            .filter(|f| matches!(f.problem, Problem::BrokenImage { .. }))
            .collect();
        assert_eq!(broken.len(), 2);
        assert!(broken.iter().all(|f| !f.repaired));
        assert_eq!(repaired.unrepaired().count(), 2);
        assert_eq!(
            fs::read(exclusive.store().root().join("images-v1.json")).unwrap(),
            before
        );
        assert!(exclusive.store().content().contains(&manifest));
    }

    #[test]
    fn an_unparseable_manifest_and_a_wrong_image_id_are_named() {
        let (_dir, store) = open();
        let a = store.content().put(b"layer a").unwrap();
        image(&store, "docker.io/library/one:1", &[&a]);
        let file = store.root().join("images-v1.json");
        let text = fs::read_to_string(&file).unwrap();
        let wrong_id = store.content().put(b"{}").unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let recorded = value["images"][0]["config"].as_str().unwrap().to_owned();
        fs::write(&file, text.replace(&recorded, &wrong_id.to_string())).unwrap();
        let found = store.check().unwrap();
        assert!(
            matches!(&problems(&found)[..], [Problem::BrokenImage {
                damage: ImageDamage::ConfigMismatch { recorded, .. }, ..
            }] if *recorded == wrong_id),
            "{found:?}"
        );

        let manifest = value["images"][0]["digest"].as_str().unwrap().to_owned();
        let junk = store.content().put(b"[]").unwrap();
        let text = fs::read_to_string(&file).unwrap();
        fs::write(&file, text.replace(&manifest, &junk.to_string())).unwrap();
        let found = store.check().unwrap();
        assert!(
            matches!(
                &problems(&found)[..],
                [Problem::BrokenImage {
                    damage: ImageDamage::Unparseable {
                        role: "manifest",
                        ..
                    },
                    ..
                }]
            ),
            "{found:?}"
        );
    }

    #[test]
    fn a_collection_leaves_no_record_naming_a_blob_it_removed() {
        let (_dir, store) = open();
        let kept = store.content().put(b"kept").unwrap();
        let dropped = store.content().put(b"dropped").unwrap();
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        store.index().put(&a, &record(&[&kept])).unwrap();
        store.index().put(&b, &record(&[&kept, &dropped])).unwrap();
        let exclusive = store.lock_exclusive().unwrap();
        let roots = crate::GcRoots {
            tagged: vec![kept.clone()],
            cache: Vec::new(),
        };
        let report = exclusive.gc(&roots, &crate::GcOptions::default()).unwrap();
        assert_eq!(report.blobs, vec![(dropped, 7)]);
        let store = exclusive.into_shared().unwrap();
        assert!(store.index().get(&a).unwrap().is_some());
        assert_eq!(store.index().get(&b).unwrap(), None);
        assert!(store.check().unwrap().is_clean());
    }

    #[test]
    fn abandoned_scratch_is_found_and_live_scratch_is_left_alone() {
        let (_dir, store) = open();
        let snaps = store.snapshotter(SnapshotMode::Overlay).unwrap();
        let live = snaps.scratch().unwrap();
        let dead = snaps.scratch_dir().join("snap-dead");
        fs::create_dir_all(dead.join("upper")).unwrap();
        let dead_blob = store.content().ingest_dir().join("blob-dead");
        fs::write(&dead_blob, b"partial").unwrap();
        found_then_repaired(store, |found| {
            let mut paths: Vec<_> = found
                .iter()
                .map(|p| match p {
                    Problem::AbandonedScratch { path, .. } => path.clone(),
                    other => panic!("unexpected {other}"),
                })
                .collect();
            paths.sort();
            let mut expected = vec![dead.clone(), dead_blob.clone()];
            expected.sort();
            assert_eq!(paths, expected);
        });
        assert!(live.path().exists());
        assert!(!dead.exists() && !dead_blob.exists());
    }

    #[test]
    fn opening_an_unused_store_sweeps_what_a_crash_left() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let store = Store::open(&root).unwrap();
        let dead = store
            .snapshotter(SnapshotMode::Overlay)
            .unwrap()
            .scratch_dir()
            .join("snap-dead");
        fs::create_dir(&dead).unwrap();
        let image_temp = root.join(".tmpAbC123");
        fs::write(&image_temp, b"{\"version\":1,").unwrap();
        fs::create_dir(root.join("contexthash-v1")).unwrap();
        let hash_temp = root.join("contexthash-v1/.tmpXyZ789");
        fs::write(&hash_temp, b"{").unwrap();
        let kept = root.join("contexthash-v1/0123.json");
        fs::write(&kept, b"{}").unwrap();
        // Another process (here, another open) still uses the store: nothing is swept.
        let second = Store::open(&root).unwrap();
        drop(store);
        assert!(dead.exists() && image_temp.exists() && hash_temp.exists());
        drop(second);
        // The last one out swept.
        assert!(!dead.exists() && !image_temp.exists() && !hash_temp.exists());
        assert!(kept.exists());
        fs::create_dir(&dead).unwrap();
        let _store = Store::open(&root).unwrap();
        assert!(!dead.exists(), "the first one in sweeps too");
    }
}
