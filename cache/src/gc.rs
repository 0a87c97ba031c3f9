//! Garbage collection and disk usage: what the roots keep, and what can go.
//!
//! Roots come in two strengths, as in `docker builder prune`:
//!
//! * **tagged** — manifests (or indexes) the image store names. What they reach is never
//!   removed.
//! * **cache** — digests the build cache index still refers to (manifests, layer blobs,
//!   or snapshot chain IDs). What they reach is kept by default, but is fair game with
//!   [`GcOptions::all`].
//!
//! From a blob root the walk follows index → manifests → config + layers; a config's
//! `rootfs.diff_ids` turn into the chain IDs of every prefix stack, which keeps those
//! snapshots. A root digest that names a snapshot keeps it too. A kept snapshot keeps
//! its ancestors, since an overlay snapshot is useless without them.
//!
//! Everything else is *unreachable*. A collection always removes abandoned scratch
//! (temp files and half-built snapshots of dead processes) and broken snapshot
//! directories. Then, with no [`GcOptions::keep`] limit, it removes all unreachable
//! blobs and snapshots (plus cache-only ones with `all`); with a limit, it removes them
//! least recently used first — unreachable before cache-only — and stops as soon as
//! blobs and snapshots together fit in the limit. Removing an overlay snapshot removes
//! its descendants with it.
//!
//! The collector runs only under the store's exclusive lock (see [`crate::root`]), so
//! no build is writing while it decides.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use kiln_image::Digest;
use kiln_image::oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use crate::root::{SNAPSHOTS_DIR, Store};
use crate::scratch::Swept;
use crate::snapshot::{SnapshotInfo, SnapshotMode, Snapshotter};
use crate::{CacheError, CacheRecord, ChainId, ContentStore};

/// Blobs above this size are never parsed as manifests (the distribution spec's limit
/// for a manifest is 4 MiB).
const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// What a collection keeps; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcRoots {
    /// Manifests and indexes named by tags: never removed.
    pub tagged: Vec<Digest>,
    /// Digests the build cache refers to: kept unless [`GcOptions::all`].
    pub cache: Vec<Digest>,
}

/// How much a collection removes; see the module docs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcOptions {
    /// Stop removing once blobs and snapshots take at most this many bytes.
    pub keep: Option<u64>,
    /// Also remove what only the cache roots reach.
    pub all: bool,
}

/// A removed snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedSnapshot {
    /// Its chain ID.
    pub chain_id: ChainId,
    /// Its layout.
    pub mode: SnapshotMode,
    /// Bytes it held.
    pub size: u64,
}

/// What a collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs removed, with their sizes.
    pub blobs: Vec<(Digest, u64)>,
    /// Snapshots removed.
    pub snapshots: Vec<RemovedSnapshot>,
    /// Abandoned scratch and broken snapshot directories removed.
    pub scratch: Swept,
    /// Everything freed, in bytes.
    pub bytes_freed: u64,
}

/// A count of things and the bytes they take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// How many.
    pub count: u64,
    /// Their size in bytes.
    pub bytes: u64,
}

/// Disk usage of the store, as `kiln system df` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// All blobs.
    pub blobs: Usage,
    /// All snapshots.
    pub snapshots: Usage,
    /// Abandoned scratch and broken snapshot directories.
    pub scratch: Swept,
    /// Bytes a default collection would free (scratch and unreachable content).
    pub reclaimable: u64,
    /// Bytes a collection with [`GcOptions::all`] would free.
    pub reclaimable_all: u64,
}

/// How strongly something is held, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tier {
    Unreachable,
    CacheOnly,
    Tagged,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    Blob(Digest),
    Snapshot(SnapshotMode, ChainId),
}

struct Candidate {
    target: Target,
    size: u64,
    last_used: SystemTime,
    tier: Tier,
}

/// Everything in the store, sorted into what may go (weakest, least recently used
/// first) and how overlay snapshots depend on each other.
struct Plan {
    candidates: Vec<Candidate>,
    blobs: Usage,
    snapshots: Usage,
    children: HashMap<ChainId, Vec<ChainId>>,
    overlay: HashMap<ChainId, u64>,
}

pub(crate) fn collect(
    store: &Store,
    roots: &GcRoots,
    options: &GcOptions,
) -> Result<GcReport, CacheError> {
    let mut report = GcReport {
        scratch: sweep(store, false)?,
        ..GcReport::default()
    };
    // Nobody else has the store open, so nobody holds or waits for a step lock.
    store.step_locks()?.clear(false)?;
    let plan = plan(store, roots)?;
    let doomed = choose(&plan, options);
    // Cache records that name a blob about to go are dropped first: a collection cut
    // short then leaves unreferenced blobs (collected next time), never a record
    // whose blobs are gone.
    forget_records_of(store, &doomed)?;
    // A blob kept as a snapshot that goes, but wanted itself, is written out first.
    let kept = kept_blobs_to_write_out(store, &doomed)?;
    let overlay = store.snapshotter(SnapshotMode::Overlay)?;
    for (target, planned_size) in doomed {
        match target {
            Target::Blob(digest) => {
                match store.content().delete(&digest) {
                    Ok(()) | Err(CacheError::BlobNotFound(_)) => {}
                    Err(e) => return Err(e),
                }
                report.blobs.push((digest, planned_size));
            }
            Target::Snapshot(mode, chain_id) => {
                for digest in kept.get(&chain_id).into_iter().flatten() {
                    store.content().write_out(digest)?;
                }
                let size = match mode {
                    SnapshotMode::Overlay => overlay.remove(&chain_id)?,
                    SnapshotMode::Copy => {
                        store.snapshotter(SnapshotMode::Copy)?.remove(&chain_id)?
                    }
                };
                report.snapshots.push(RemovedSnapshot {
                    chain_id,
                    mode,
                    size,
                });
            }
        }
    }
    report.bytes_freed = report.scratch.bytes
        + report.blobs.iter().map(|(_, size)| size).sum::<u64>()
        + report.snapshots.iter().map(|s| s.size).sum::<u64>();
    Ok(report)
}

/// What a collection removes, in order, with the sizes the plan gives them: candidates
/// weakest and least recently used first until the keep limit is met, an overlay
/// snapshot's descendants just before it (so no snapshot is ever left without its
/// parent).
fn choose(plan: &Plan, options: &GcOptions) -> Vec<(Target, u64)> {
    let mut total = plan.blobs.bytes + plan.snapshots.bytes;
    let mut removed: HashSet<Target> = HashSet::new();
    let mut doomed = Vec::new();
    for candidate in &plan.candidates {
        if candidate.tier == Tier::CacheOnly && !options.all {
            continue;
        }
        if options.keep.is_some_and(|keep| total <= keep) {
            break;
        }
        if removed.contains(&candidate.target) {
            continue;
        }
        match &candidate.target {
            Target::Snapshot(SnapshotMode::Overlay, chain_id) => {
                let mut order = Vec::new();
                descendants(&plan.children, chain_id, &mut order);
                order.push(chain_id.clone());
                for id in order {
                    let target = Target::Snapshot(SnapshotMode::Overlay, id.clone());
                    if removed.insert(target.clone()) {
                        let size = plan.overlay.get(&id).copied().unwrap_or_default();
                        total = total.saturating_sub(size);
                        doomed.push((target, size));
                    }
                }
            }
            target => {
                removed.insert(target.clone());
                total = total.saturating_sub(candidate.size);
                doomed.push((target.clone(), candidate.size));
            }
        }
    }
    doomed
}

/// The blobs kept as overlay snapshots in `doomed` that are not doomed themselves, by
/// snapshot.
fn kept_blobs_to_write_out(
    store: &Store,
    doomed: &[(Target, u64)],
) -> Result<HashMap<ChainId, Vec<Digest>>, CacheError> {
    let mut out: HashMap<ChainId, Vec<Digest>> = HashMap::new();
    let doomed: HashSet<&Target> = doomed.iter().map(|(target, _)| target).collect();
    for (digest, chain_id) in store.content().kept_layers()? {
        if doomed.contains(&Target::Snapshot(SnapshotMode::Overlay, chain_id.clone()))
            && !doomed.contains(&Target::Blob(digest.clone()))
        {
            out.entry(chain_id).or_default().push(digest);
        }
    }
    Ok(out)
}

/// Removes the cache records that name any blob in `doomed`. Records that cannot be
/// decoded are left for `kiln store check`.
fn forget_records_of(store: &Store, doomed: &[(Target, u64)]) -> Result<(), CacheError> {
    let blobs: HashSet<&Digest> = doomed
        .iter()
        .filter_map(|(target, _)| match target {
            Target::Blob(digest) => Some(digest),
            Target::Snapshot(..) => None,
        })
        .collect();
    if blobs.is_empty() {
        return Ok(());
    }
    let index = store.index();
    let stale: Vec<String> = index
        .raw()?
        .into_iter()
        .filter(|(_, bytes)| {
            serde_json::from_slice::<CacheRecord>(bytes)
                .is_ok_and(|record| record.layers.iter().any(|l| blobs.contains(&l.blob)))
        })
        .map(|(key, _)| key)
        .collect();
    Ok(index.remove_raw(&stale)?)
}

pub(crate) fn disk_usage(store: &Store, roots: &GcRoots) -> Result<DiskUsage, CacheError> {
    let scratch = sweep(store, true)?;
    let plan = plan(store, roots)?;
    let of_tier = |tier| -> u64 {
        plan.candidates
            .iter()
            .filter(|c| c.tier == tier)
            .map(|c| c.size)
            .sum()
    };
    let reclaimable = scratch.bytes + of_tier(Tier::Unreachable);
    Ok(DiskUsage {
        blobs: plan.blobs,
        snapshots: plan.snapshots,
        scratch,
        reclaimable,
        reclaimable_all: reclaimable + of_tier(Tier::CacheOnly),
    })
}

/// Abandoned ingest files, snapshot scratch, and broken snapshot directories.
pub(crate) fn sweep(store: &Store, dry_run: bool) -> Result<Swept, CacheError> {
    let mut swept = store.content().sweep_ingest(dry_run)?;
    for mode in SnapshotMode::ALL {
        let snapshotter = store.snapshotter(mode)?;
        add(&mut swept, snapshotter.remove_broken(dry_run)?);
        if mode == SnapshotMode::Overlay {
            // Both modes share one scratch folder.
            add(&mut swept, snapshotter.sweep_scratch(dry_run)?);
        }
    }
    Ok(swept)
}

fn add(total: &mut Swept, more: Swept) {
    total.entries += more.entries;
    total.bytes += more.bytes;
}

fn descendants(children: &HashMap<ChainId, Vec<ChainId>>, id: &ChainId, out: &mut Vec<ChainId>) {
    for child in children.get(id).into_iter().flatten() {
        descendants(children, child, out);
        out.push(child.clone());
    }
}

fn plan(store: &Store, roots: &GcRoots) -> Result<Plan, CacheError> {
    let tagged = Reach::walk(store.content(), &roots.tagged)?;
    let cache = Reach::walk(store.content(), &roots.cache)?;
    let snapshots: Vec<SnapshotInfo> = SnapshotMode::ALL
        .into_iter()
        .map(|mode| Snapshotter::open(&store.root().join(SNAPSHOTS_DIR), mode)?.list())
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    let parents: HashMap<&ChainId, &ChainId> = snapshots
        .iter()
        .filter_map(|s| Some((&s.chain_id, s.parent.as_ref()?)))
        .collect();
    let tagged_chains = with_ancestors(&tagged.chains, &parents);
    let cache_chains = with_ancestors(&cache.chains, &parents);

    let mut plan = Plan {
        candidates: Vec::new(),
        blobs: Usage::default(),
        snapshots: Usage::default(),
        children: HashMap::new(),
        overlay: HashMap::new(),
    };
    for blob in store.content().entries()? {
        // A blob kept as its snapshot takes no space of its own: the snapshot counts it.
        let size = if blob.in_snapshot { 0 } else { blob.size };
        plan.blobs.count += 1;
        plan.blobs.bytes += size;
        let tier = tier(&tagged.blobs, &cache.blobs, &blob.digest);
        if tier != Tier::Tagged {
            plan.candidates.push(Candidate {
                target: Target::Blob(blob.digest),
                size,
                last_used: blob.last_used,
                tier,
            });
        }
    }
    for snapshot in snapshots {
        plan.snapshots.count += 1;
        plan.snapshots.bytes += snapshot.size;
        if snapshot.mode == SnapshotMode::Overlay {
            plan.overlay
                .insert(snapshot.chain_id.clone(), snapshot.size);
            if let Some(parent) = &snapshot.parent {
                plan.children
                    .entry(parent.clone())
                    .or_default()
                    .push(snapshot.chain_id.clone());
            }
        }
        let tier = tier(&tagged_chains, &cache_chains, &snapshot.chain_id);
        if tier != Tier::Tagged {
            plan.candidates.push(Candidate {
                target: Target::Snapshot(snapshot.mode, snapshot.chain_id),
                size: snapshot.size,
                last_used: snapshot.last_used,
                tier,
            });
        }
    }
    plan.candidates.sort_by_key(|c| (c.tier, c.last_used));
    Ok(plan)
}

fn tier<T: Eq + std::hash::Hash>(tagged: &HashSet<T>, cache: &HashSet<T>, item: &T) -> Tier {
    if tagged.contains(item) {
        Tier::Tagged
    } else if cache.contains(item) {
        Tier::CacheOnly
    } else {
        Tier::Unreachable
    }
}

fn with_ancestors(
    chains: &HashSet<ChainId>,
    parents: &HashMap<&ChainId, &ChainId>,
) -> HashSet<ChainId> {
    let mut out = chains.clone();
    for chain in chains {
        let mut at = chain;
        while let Some(parent) = parents.get(at) {
            if !out.insert((*parent).clone()) {
                break;
            }
            at = parent;
        }
    }
    out
}

/// What a set of roots reaches.
#[derive(Default)]
struct Reach {
    blobs: HashSet<Digest>,
    chains: HashSet<ChainId>,
}

/// How a digest was reached, which says whether to look inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A root or an index entry: a manifest or index if it parses as one.
    Sniff,
    Config,
    Layer,
}

impl Reach {
    fn walk(content: &ContentStore, roots: &[Digest]) -> Result<Reach, CacheError> {
        let mut reach = Reach::default();
        let mut stack: Vec<(Digest, Role)> =
            roots.iter().map(|d| (d.clone(), Role::Sniff)).collect();
        reach
            .chains
            .extend(roots.iter().cloned().map(ChainId::from));
        while let Some((digest, role)) = stack.pop() {
            if !reach.blobs.insert(digest.clone()) || role == Role::Layer {
                continue;
            }
            let Ok(size) = content.size(&digest) else {
                // Not (or no longer) present: nothing to keep, nothing to follow.
                continue;
            };
            // A blob kept as its snapshot is a layer a build made, never a manifest; reading
            // it would write it out.
            if size > MAX_MANIFEST_SIZE || content.in_snapshot(&digest) {
                continue;
            }
            let bytes = content.read(&digest)?;
            match role {
                Role::Config => {
                    // A config that is not an image config (an artifact's) names no layers.
                    if let Ok(config) = serde_json::from_slice::<ImageConfiguration>(&bytes) {
                        let diff_ids: Vec<Digest> = config
                            .rootfs()
                            .diff_ids()
                            .iter()
                            .filter_map(|d| d.parse().ok())
                            .collect();
                        reach.chains.extend(ChainId::prefixes(&diff_ids));
                    }
                }
                Role::Sniff => stack.extend(children(&digest, &bytes)?),
                Role::Layer => {}
            }
        }
        Ok(reach)
    }
}

/// The blobs a manifest or index refers to; nothing for any other blob.
fn children(digest: &Digest, bytes: &[u8]) -> Result<Vec<(Digest, Role)>, CacheError> {
    let Ok(serde_json::Value::Object(object)) = serde_json::from_slice::<serde_json::Value>(bytes)
    else {
        return Ok(Vec::new());
    };
    let bad = |source| CacheError::BadManifest {
        digest: digest.clone(),
        source,
    };
    let value = serde_json::Value::Object(object);
    let descriptors: Vec<(&kiln_image::oci_spec::image::Digest, Role)>;
    let (index, manifest);
    if value.get("manifests").is_some() {
        index = serde_json::from_value::<ImageIndex>(value).map_err(bad)?;
        descriptors = index
            .manifests()
            .iter()
            .map(|m| (m.digest(), Role::Sniff))
            .collect();
    } else if value.get("layers").is_some() && value.get("config").is_some() {
        manifest = serde_json::from_value::<ImageManifest>(value).map_err(bad)?;
        descriptors = std::iter::once((manifest.config().digest(), Role::Config))
            .chain(manifest.layers().iter().map(|l| (l.digest(), Role::Layer)))
            .collect();
    } else {
        return Ok(Vec::new());
    }
    // Digests of other algorithms cannot be in this store.
    Ok(descriptors
        .into_iter()
        .filter_map(|(d, role)| Some((Digest::try_from(d).ok()?, role)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(d: &Digest) -> serde_json::Value {
        serde_json::json!({ "mediaType": "application/octet-stream", "digest": d.to_string(), "size": 1 })
    }

    #[test]
    fn children_follow_indexes_and_manifests_only() {
        let (a, b, c) = (Digest::of(b"a"), Digest::of(b"b"), Digest::of(b"c"));
        let me = Digest::of(b"me");
        let index = serde_json::json!({ "schemaVersion": 2, "manifests": [desc(&a), desc(&b)] });
        let got = children(&me, &serde_json::to_vec(&index).unwrap()).unwrap();
        assert_eq!(
            got,
            vec![(a.clone(), Role::Sniff), (b.clone(), Role::Sniff)]
        );

        let manifest = serde_json::json!({ "schemaVersion": 2, "config": desc(&a), "layers": [desc(&b), desc(&c)] });
        let got = children(&me, &serde_json::to_vec(&manifest).unwrap()).unwrap();
        assert_eq!(
            got,
            vec![(a, Role::Config), (b, Role::Layer), (c, Role::Layer)]
        );

        for leaf in [
            &b"\x1f\x8b\x08binary"[..],
            b"[1, 2]",
            br#"{"architecture": "amd64"}"#,
            b"",
        ] {
            assert!(children(&me, leaf).unwrap().is_empty());
        }
        let broken = br#"{"schemaVersion": 2, "manifests": "nope"}"#;
        assert!(
            matches!(children(&me, broken), Err(CacheError::BadManifest { digest, .. }) if digest == me)
        );
    }
}
