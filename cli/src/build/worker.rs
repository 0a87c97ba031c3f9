//! The worker `kiln build` hands the solver: it runs steps with the executor, keeps
//! their results as layers in the content store, and remembers them in the cache index.
//!
//! A step's result is a [`StateRef`]: a chain of layers (bottom first) or the build
//! context. Chains are cheap to pass around; they are unpacked into snapshots only
//! when a step actually runs on them, and a step's own changes (an overlay upper dir)
//! become, by rename, its snapshot, so the next step can run on it without unpacking
//! anything; the layer is hashed from them, and unless it is small, kept as that
//! snapshot until something reads its blob.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::records::RecordWriter;
use anyhow::{Context as _, bail};
use kiln_cache::content::SnapshotLayer;
use kiln_cache::context::{ContextTree, IgnoreMatcher, Selection, StatCache, checksum};
use kiln_cache::{
    CacheIndex, CacheRecord, ChainId, ContentStore, LayerRecord, LayerRef, SnapshotMode,
    Snapshotter, Store,
};
use kiln_executor::{
    CancelToken, ExecRequest, Executor, Mount, MountKind, NetworkMode, OutputStream, RuncExecutor,
    SecurityMode,
};
use kiln_image::layer::{
    ApplyOptions, Compression, LayerDescriptor, Source as LayerSource, WriteOptions, apply_layer,
    write_layer,
};
use kiln_image::oci_spec::image::ImageManifest;
use kiln_image::{BlobRead, Digest, Digester, ImageConfig};
use kiln_solver::op::{ExecMount, ExecOp, Op, SourceOp};
use kiln_solver::{CacheKey, Selector, Vertex, VertexId, Worker};

use super::download;
use super::fileop;
use super::progress::Progress;
use super::remote::RemoteCaches;
use super::secrets::Secrets;
use super::workspace::Workspace;

/// Layers up to this size a build stores as blob files right away; larger ones are kept
/// as their overlay snapshot until something reads them.
const SMALL_LAYER: usize = 1 << 20;

/// What a layer pass writes, kept while it is at most [`SMALL_LAYER`] bytes.
#[derive(Default)]
struct SmallLayer {
    /// The bytes so far; `None` once there were too many.
    bytes: Option<Vec<u8>>,
    seen: usize,
}

impl std::io::Write for SmallLayer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.seen += buf.len();
        if self.seen > SMALL_LAYER {
            self.bytes = None;
        } else {
            self.bytes
                .get_or_insert_with(Vec::new)
                .extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A solved step's filesystem.
#[derive(Clone, Debug)]
pub enum StateRef {
    /// Layers in the content store, bottom first (empty for `scratch`).
    Layers(Arc<Vec<LayerRecord>>),
    /// The build context directory.
    Context,
}

impl StateRef {
    /// The layers of a layered state.
    pub fn layers(&self) -> anyhow::Result<&[LayerRecord]> {
        match self {
            StateRef::Layers(layers) => Ok(layers),
            StateRef::Context => bail!("the build context is not a filesystem a step can run on"),
        }
    }
}

/// The build context: its directory and `.dockerignore`.
pub struct BuildContext {
    /// The context directory.
    pub dir: PathBuf,
    /// Its ignore rules.
    pub ignore: IgnoreMatcher,
}

/// Everything a worker needs, shared with its blocking tasks.
pub struct WorkerParts {
    /// The store root (content, snapshots, the root lock).
    pub store: Store,
    /// The overlay snapshotter.
    pub snapshots: Snapshotter,
    /// The cache index.
    pub index: CacheIndex,
    /// Writes the records of the steps this build runs into the index.
    pub records: RecordWriter,
    /// Runs RUN steps.
    pub executor: RuncExecutor,
    /// The build context.
    pub context: BuildContext,
    /// File digests of the context, kept between builds.
    pub stat_cache: StatCache,
    /// Where step output goes.
    pub progress: Arc<Progress>,
    /// How layers are written.
    pub layer_options: WriteOptions,
    /// Cancelled on Ctrl-C.
    pub cancel: CancelToken,
    /// `--secret`s.
    pub secrets: Secrets,
    /// Host directories behind `RUN --mount=type=cache`.
    pub cache_mounts: PathBuf,
    /// The `--cache-from` caches.
    pub remote: Arc<RemoteCaches>,
    /// The cache records of the steps solved so far (hits and runs), for `--cache-to`.
    pub solved: Mutex<Vec<(Digest, CacheRecord)>>,
}

/// The local worker.
pub struct LocalWorker {
    parts: Arc<WorkerParts>,
    /// The threads doing copies ahead of their turn; waited for when the worker goes,
    /// so that none is cut off mid-copy (with an overlay mounted) when the build ends.
    preparing: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl LocalWorker {
    /// A worker over `parts`.
    pub fn new(parts: WorkerParts) -> LocalWorker {
        LocalWorker {
            parts: Arc::new(parts),
            preparing: Mutex::new(Vec::new()),
        }
    }

    /// The parts, for the exporter.
    pub fn parts(&self) -> &WorkerParts {
        &self.parts
    }
}

impl Drop for LocalWorker {
    fn drop(&mut self) {
        let preparing = std::mem::take(self.preparing.get_mut().unwrap_or_else(|e| e.into_inner()));
        for thread in preparing {
            let _ = thread.join();
        }
        // Before the parts (and the store's lock) go; the build has reported any failure.
        let _ = self.parts.records.finish();
    }
}

/// A worker failure, shown under the failing step; its causes stay reachable so that
/// the report can show a failed command's last lines.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StepError(#[from] anyhow::Error);

impl StepError {
    /// What went wrong, with its causes.
    pub fn cause(&self) -> &anyhow::Error {
        &self.0
    }
}

impl Worker for LocalWorker {
    type Ref = StateRef;
    type Error = StepError;
    type Prepared = fileop::PreparedCopy;

    async fn checksum(&self, input: &StateRef, selector: &Selector) -> Result<Digest, StepError> {
        let parts = Arc::clone(&self.parts);
        let input = input.clone();
        let selector = selector.clone();
        blocking(move || parts.checksum(&input, &selector)).await
    }

    async fn lookup(&self, vertex: &Vertex, key: &CacheKey) -> Result<Option<StateRef>, StepError> {
        if matches!(vertex.op, Op::Source(_)) {
            // Cheap to redo, and an image source must be read from the store anyway.
            return Ok(None);
        }
        let parts = Arc::clone(&self.parts);
        let key = key.clone();
        blocking(move || parts.lookup(&key)).await
    }

    async fn prepare(
        &self,
        _id: VertexId,
        vertex: &Vertex,
        inputs: Vec<StateRef>,
    ) -> Option<fileop::PreparedCopy> {
        let Op::File(file) = &vertex.op else {
            return None;
        };
        let parts = Arc::clone(&self.parts);
        let file = file.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Work done ahead must not slow the steps the build is waiting for: it runs on a
        // thread of its own at a lower priority (threads it starts inherit it), taking
        // what CPU those steps leave.
        let thread = std::thread::Builder::new()
            .name("kiln-prepare".into())
            .spawn(move || {
                lower_this_threads_priority();
                let _ = tx.send(fileop::prepare(&parts, &file, &inputs));
            })
            .ok()?;
        {
            let mut preparing = self.preparing.lock().unwrap_or_else(|e| e.into_inner());
            preparing.retain(|t| !t.is_finished());
            preparing.push(thread);
        }
        // A failure here is the step's to report when it runs in its turn.
        rx.await.ok()?.ok().flatten()
    }

    async fn execute(
        &self,
        id: VertexId,
        vertex: &Vertex,
        key: &CacheKey,
        inputs: Vec<StateRef>,
        prepared: Option<fileop::PreparedCopy>,
    ) -> Result<StateRef, StepError> {
        if let Op::Source(SourceOp::Http {
            url,
            checksum,
            filename,
        }) = &vertex.op
        {
            return self.download(url, checksum.as_ref(), filename).await;
        }
        let parts = Arc::clone(&self.parts);
        let op = vertex.op.clone();
        let key = key.clone();
        let reuse = !vertex.meta.ignore_cache;
        blocking(move || parts.execute(id, &op, &key, inputs, reuse, prepared)).await
    }
}

impl LocalWorker {
    /// `ADD <url>`: a one-layer filesystem holding the downloaded file.
    async fn download(
        &self,
        url: &str,
        checksum: Option<&Digest>,
        filename: &str,
    ) -> Result<StateRef, StepError> {
        let scratch = self
            .parts
            .snapshots
            .scratch()
            .map_err(anyhow::Error::from)?;
        let tree = scratch.path().join("download");
        fs::create_dir(&tree).map_err(anyhow::Error::from)?;
        download::fetch(url, checksum, &tree, filename).await?;
        let parts = Arc::clone(&self.parts);
        blocking(move || {
            let layers = parts.commit_tree(&[], &tree, LayerSource::Tree, &tree)?;
            drop(scratch);
            Ok(layers)
        })
        .await
    }
}

/// Gives the calling thread (and the threads it starts) a lower scheduling priority.
fn lower_this_threads_priority() {
    // SAFETY: plain system calls on the calling thread, no memory involved. On Linux
    // the nice value is per thread; a failure leaves the priority as it was.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, StepError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(StepError),
        Err(e) => Err(StepError(anyhow::anyhow!("worker task failed: {e}"))),
    }
}

impl WorkerParts {
    fn checksum(&self, input: &StateRef, selector: &Selector) -> anyhow::Result<Digest> {
        // Whether an empty match is an error is the copy's business; the key covers
        // whatever is there.
        let selection = Selection {
            sources: selector.paths.clone(),
            wildcard: selector.wildcard,
            allow_empty: true,
            excludes: selector.excludes.clone(),
        };
        match input {
            StateRef::Context => {
                let tree = ContextTree::new(&self.context.dir, &self.context.ignore);
                let selected = tree.select(&selection)?;
                Ok(checksum(&selected, &self.stat_cache)?.0)
            }
            StateRef::Layers(layers) => {
                // The input's key already covers its whole content; naming the chain
                // and the paths is enough.
                let mut d = Digester::new();
                for layer in layers.iter() {
                    d.field(b"layer", layer.diff_id.to_string().as_bytes());
                }
                for path in &selector.paths {
                    d.field(b"path", path.as_bytes());
                }
                Ok(d.finish())
            }
        }
    }

    fn lookup(&self, key: &CacheKey) -> anyhow::Result<Option<StateRef>> {
        let content = self.store.content();
        let local = match self.records.get(key.digest()) {
            Some(record) => Some(record),
            None => self.index.get(key.digest())?,
        };
        let local = local
            // A record whose blob was collected since is stale.
            .filter(|record| record.layers.iter().all(|l| content.contains(&l.blob)));
        // A remote record's blobs are fetched when something needs their bytes.
        let Some(record) = local.or_else(|| self.remote.lookup(key.digest())) else {
            return Ok(None);
        };
        self.note_solved(key, &record);
        Ok(Some(StateRef::Layers(Arc::new(record.layers))))
    }

    /// Remembers a solved step's record for `--cache-to`.
    fn note_solved(&self, key: &CacheKey, record: &CacheRecord) {
        self.solved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((key.digest().clone(), record.clone()));
    }

    /// The records of the steps solved so far.
    pub fn solved_records(&self) -> Vec<(Digest, CacheRecord)> {
        self.solved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs a step whose key missed the cache. Unless the step ignores the cache
    /// (`reuse` false), it first takes the key's step lock, so that of the builds on
    /// this root that miss the same key at once only one runs it; the others, once the
    /// lock is theirs, find its record and use it. A copy done ahead (`prepared`) is
    /// committed instead of running the step when it fits the step's real inputs.
    fn execute(
        &self,
        id: VertexId,
        op: &Op,
        key: &CacheKey,
        inputs: Vec<StateRef>,
        reuse: bool,
        prepared: Option<fileop::PreparedCopy>,
    ) -> anyhow::Result<StateRef> {
        let turn = match op {
            Op::Source(_) => None,
            _ if !reuse => None,
            _ => {
                let turn = self
                    .store
                    .step_locks()?
                    .lock(key.digest(), || !self.cancel.is_cancelled())?
                    .context("cancelled while another build ran the same step")?;
                if let Some(done) = self.lookup(key)? {
                    return Ok(done);
                }
                Some(turn)
            }
        };
        let result = match op {
            Op::Source(SourceOp::Scratch) => return Ok(StateRef::Layers(Arc::new(Vec::new()))),
            Op::Source(SourceOp::Local { .. }) => return Ok(StateRef::Context),
            Op::Source(SourceOp::Image { manifest, .. }) => return self.image_layers(manifest),
            Op::Source(SourceOp::Http { url, .. }) => {
                bail!("internal error: the download of {url} reached the blocking worker")
            }
            Op::Merge(_) => self.merge(&inputs)?,
            Op::Exec(exec) => self.run_exec(id, exec, &inputs)?,
            Op::File(file) => {
                let done = match (prepared, inputs.first()) {
                    (Some(prepared), Some(dest)) => fileop::commit_prepared(self, prepared, dest)?,
                    _ => None,
                };
                match done {
                    Some(state) => state,
                    None => fileop::run(self, file, &inputs)?,
                }
            }
        };
        if let StateRef::Layers(layers) = &result {
            let record = CacheRecord {
                layers: layers.to_vec(),
                created: now(),
            };
            self.note_solved(key, &record);
            self.records.put(key.digest(), &record, turn)?;
        }
        Ok(result)
    }

    /// The layers of an image in the store.
    fn image_layers(&self, manifest: &Digest) -> anyhow::Result<StateRef> {
        let layers = stored_image_layers(self.store.content(), manifest)?;
        Ok(StateRef::Layers(Arc::new(layers)))
    }

    /// Stacks the layers of `inputs` in order (`COPY --link`). A layer laid over others
    /// keeps its files, but a directory it holds that is already a directory below keeps
    /// the mode and owner it has there: docker build's image store records a linked
    /// layer as its difference from the layers below, in which such a directory is only
    /// the one below with new contents.
    fn merge(&self, inputs: &[StateRef]) -> anyhow::Result<StateRef> {
        let mut layers: Vec<LayerRecord> = Vec::new();
        for input in inputs {
            for layer in input.layers()? {
                let fitted = self.fit_over(&layers, layer)?;
                layers.push(fitted);
            }
        }
        Ok(StateRef::Layers(Arc::new(layers)))
    }

    /// `layer` with its directories that exist below given the metadata they have there;
    /// the layer itself when none differs.
    fn fit_over(&self, below: &[LayerRecord], layer: &LayerRecord) -> anyhow::Result<LayerRecord> {
        if below.is_empty() {
            return Ok(layer.clone());
        }
        let content = self.store.content();
        let scratch = self.snapshots.scratch()?;
        let tree = scratch.path().join("tree");
        fs::create_dir(&tree)?;
        self.remote
            .fetch_missing(content, std::slice::from_ref(layer))?;
        let blob = content.open_blob(&layer.blob)?;
        apply_layer(
            std::io::BufReader::new(blob),
            &tree,
            &ApplyOptions::default(),
        )
        .with_context(|| format!("unpacking layer {}", layer.blob))?;
        let view = fileop::ScratchView::of_layers(self, below)?;
        let mut changed = false;
        for entry in walkdir::WalkDir::new(&tree).min_depth(1) {
            let entry = entry?;
            if !entry.file_type().is_dir() {
                continue;
            }
            let rel = entry
                .path()
                .strip_prefix(&tree)?
                .to_string_lossy()
                .into_owned();
            let Ok(under) = kiln_executor::file::resolve_in_root(view.path(), &rel) else {
                continue;
            };
            let Ok(base) = fs::symlink_metadata(&under) else {
                continue;
            };
            let own = entry.metadata()?;
            if !base.is_dir()
                || (base.mode() & 0o7777, base.uid(), base.gid())
                    == (own.mode() & 0o7777, own.uid(), own.gid())
            {
                continue;
            }
            std::os::unix::fs::lchown(entry.path(), Some(base.uid()), Some(base.gid()))?;
            fs::set_permissions(
                entry.path(),
                fs::Permissions::from_mode(base.mode() & 0o7777),
            )?;
            changed = true;
        }
        drop(view);
        if !changed {
            return Ok(layer.clone());
        }
        let mut writer = content.writer_hashed_by_caller()?;
        let written = write_layer(&tree, &mut writer, &self.layer_options)?;
        writer.commit(Some(&written.digest))?;
        Ok(LayerRecord {
            diff_id: written.diff_id,
            blob: written.digest,
            size: written.size,
            media_type: written.media_type.to_string(),
            created: layer.created,
        })
    }

    /// The overlay lower dirs (top first) for a chain, unpacking what is missing.
    pub(super) fn lowerdirs(&self, layers: &[LayerRecord]) -> anyhow::Result<Vec<PathBuf>> {
        if layers.is_empty() {
            return Ok(Vec::new());
        }
        let refs: Vec<LayerRef> = layers
            .iter()
            .map(|l| LayerRef {
                blob: l.blob.clone(),
                diff_id: l.diff_id.clone(),
            })
            .collect();
        self.remote.fetch_missing(self.store.content(), layers)?;
        let info = self.snapshots.prepare(self.store.content(), &refs)?;
        Ok(self.snapshots.lowerdirs(&info.chain_id)?)
    }

    fn run_exec(
        &self,
        id: VertexId,
        exec: &ExecOp,
        inputs: &[StateRef],
    ) -> anyhow::Result<StateRef> {
        let base = inputs
            .first()
            .context("a RUN step has no filesystem to run on")?
            .layers()?;
        let scratch = self.snapshots.scratch()?;
        let workspace = Workspace::prepare(self, base, &scratch)?;
        let user =
            fileop::resolve_user_in_lowers(&workspace.lookup_dirs(), &exec.user, scratch.path())?;
        let env = exec
            .env
            .iter()
            .chain(&exec.proxy_env)
            .map(|e| {
                let (k, v) = e.split_once('=').unwrap_or((e, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let progress = Arc::clone(&self.progress);
        let mut request = ExecRequest::new(exec.args.clone(), workspace.rootfs())
            .with_env(env)
            .with_cwd(&exec.cwd)
            .with_user(user)
            .with_hostname(exec.hostname.clone())
            .with_network(match exec.network {
                kiln_solver::op::NetworkMode::Default => NetworkMode::Sandbox,
                kiln_solver::op::NetworkMode::None => NetworkMode::None,
                kiln_solver::op::NetworkMode::Host => NetworkMode::Host,
            })
            .with_security(if exec.insecure {
                SecurityMode::Insecure
            } else {
                SecurityMode::Sandbox
            })
            .with_output(move |_stream: OutputStream, chunk: &[u8]| progress.output(id, chunk))
            .with_cancel(self.cancel.clone());

        let mut mounted = Vec::new();
        for mount in &exec.mounts {
            if let Some((destination, kind)) = self.exec_mount(mount, inputs, &mut mounted)? {
                request = request.with_mount(Mount { destination, kind });
            }
        }
        for (name, value) in self.secrets.env_for(&exec.mounts)? {
            request.env.push((name, value));
        }
        self.executor.run(request)?;
        drop(mounted);
        workspace.commit(self, base, &scratch)
    }

    /// Writes the change set `changes` as a layer on top of `base`, and moves
    /// `snapshot` (the change set itself for overlay snapshots, the whole tree for
    /// copied ones) into the snapshot store as the result's snapshot.
    ///
    /// When the snapshot is the change set itself (an overlay snapshot), the layer is
    /// only hashed: a layer larger than [`SMALL_LAYER`] is kept as the snapshot, which
    /// writes the blob when something first reads it (see
    /// [`ContentStore::keep_as_snapshot`]), so a build does not store its layers twice.
    pub(super) fn commit_tree(
        &self,
        base: &[LayerRecord],
        changes: &Path,
        source: LayerSource,
        snapshot: &Path,
    ) -> anyhow::Result<StateRef> {
        // A step that changed nothing still gets its (empty) layer, as in docker build.
        let options = WriteOptions {
            source,
            ..self.layer_options.clone()
        };
        if changes == snapshot && self.layers_kept_in_snapshots() {
            let hashed = self.hash_changes(changes, source)?;
            return self.commit_hashed(base, hashed, snapshot);
        }
        let content = self.store.content();
        let mut writer = content.writer_hashed_by_caller()?;
        let layer = write_layer(changes, &mut writer, &options)?;
        writer.commit(Some(&layer.digest))?;
        self.snapshots
            .commit_dir(parent_chain(base).as_ref(), &layer.diff_id, snapshot)?;
        Ok(with_layer(base, layer))
    }

    /// Whether a step's layer can be hashed from its change set and then kept as its
    /// snapshot (overlay snapshots, layers stored uncompressed): see [`Self::commit_tree`].
    pub(super) fn layers_kept_in_snapshots(&self) -> bool {
        self.snapshots.mode() == SnapshotMode::Overlay
            && self.layer_options.compression == Compression::None
    }

    /// Hashes an overlay change set as a layer, keeping its bytes when it is small.
    pub(super) fn hash_changes(
        &self,
        changes: &Path,
        source: LayerSource,
    ) -> anyhow::Result<HashedLayer> {
        let options = WriteOptions {
            source,
            ..self.layer_options.clone()
        };
        let mut small = SmallLayer::default();
        let layer = write_layer(changes, &mut small, &options)?;
        Ok(HashedLayer {
            layer,
            bytes: small.bytes,
            source,
        })
    }

    /// Commits a change set hashed by [`Self::hash_changes`] as the layer over `base`,
    /// moving `snapshot` (the change set) into the snapshot store.
    pub(super) fn commit_hashed(
        &self,
        base: &[LayerRecord],
        hashed: HashedLayer,
        snapshot: &Path,
    ) -> anyhow::Result<StateRef> {
        let content = self.store.content();
        let HashedLayer {
            layer,
            bytes,
            source,
        } = hashed;
        let parent = parent_chain(base);
        let chain_id = ChainId::of(parent.as_ref(), &layer.diff_id);
        let bytes = match bytes {
            // The snapshot exists already (built from elsewhere), and ours is about to
            // be dropped for it: keep the blob as a file.
            None if self.snapshots.get(&chain_id)?.is_some()
                && !content.contains(&layer.digest) =>
            {
                let options = WriteOptions {
                    source,
                    ..self.layer_options.clone()
                };
                let mut writer = content.writer_hashed_by_caller()?;
                let written = write_layer(snapshot, &mut writer, &options)?;
                writer.commit(Some(&written.digest))?;
                None
            }
            bytes => bytes,
        };
        let info = self
            .snapshots
            .commit_dir(parent.as_ref(), &layer.diff_id, snapshot)?;
        match bytes {
            Some(bytes) => {
                let mut writer = content.writer_hashed_by_caller()?;
                writer.write_all(&bytes)?;
                writer.commit(Some(&layer.digest))?;
            }
            None => content.keep_as_snapshot(
                &layer.digest,
                &SnapshotLayer {
                    chain_id: info.chain_id,
                    size: layer.size,
                    overlay_upper: source == LayerSource::OverlayUpper,
                    source_date_epoch: self.layer_options.source_date_epoch,
                },
            )?,
        }
        Ok(with_layer(base, layer))
    }

    fn exec_mount(
        &self,
        mount: &ExecMount,
        inputs: &[StateRef],
        mounted: &mut Vec<fileop::ScratchView>,
    ) -> anyhow::Result<Option<(PathBuf, MountKind)>> {
        Ok(Some(match mount {
            ExecMount::Bind {
                input,
                source,
                target,
                readwrite,
            } => {
                let state = inputs
                    .get(*input)
                    .with_context(|| format!("bind mount {target} has no input {input}"))?;
                // The context can be bound as it is when nothing may write to it;
                // anything else is mounted over a throw-away upper dir.
                let base = match state {
                    StateRef::Context if !readwrite => self.context.dir.clone(),
                    StateRef::Context => {
                        let view =
                            fileop::ScratchView::mount(self, vec![self.context.dir.clone()])?;
                        let path = view.path().to_owned();
                        mounted.push(view);
                        path
                    }
                    StateRef::Layers(layers) => {
                        let view = fileop::ScratchView::of_layers(self, layers)?;
                        let path = view.path().to_owned();
                        mounted.push(view);
                        path
                    }
                };
                let host = fileop::join_inside(&base, source)?;
                (
                    PathBuf::from(target),
                    MountKind::Bind {
                        source: host,
                        readonly: !readwrite,
                    },
                )
            }
            ExecMount::Cache {
                id,
                target,
                uid,
                gid,
                mode,
                readonly,
                ..
            } => {
                let dir = self.cache_mounts.join(Digest::of(id.as_bytes()).hex());
                if !dir.exists() {
                    fs::create_dir_all(&dir)?;
                    std::os::unix::fs::chown(&dir, Some(*uid), Some(*gid))?;
                    fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(*mode))?;
                }
                (
                    PathBuf::from(target),
                    MountKind::Bind {
                        source: dir,
                        readonly: *readonly,
                    },
                )
            }
            ExecMount::Tmpfs { target, size } => {
                (PathBuf::from(target), MountKind::Tmpfs { size: *size })
            }
            ExecMount::Secret {
                id,
                target,
                required,
                ..
            } => {
                // An env-only secret has no file; a missing optional one is skipped.
                let (Some(target), Some(source)) = (target, self.secrets.file(id, *required)?)
                else {
                    return Ok(None);
                };
                (
                    PathBuf::from(target),
                    MountKind::Bind {
                        source,
                        readonly: true,
                    },
                )
            }
        }))
    }
}

/// A change set hashed as a layer, not yet committed.
pub(super) struct HashedLayer {
    layer: LayerDescriptor,
    /// The layer's bytes, when it is small enough to store as a blob file.
    bytes: Option<Vec<u8>>,
    source: LayerSource,
}

/// The chain id of the top of `base`, if it has layers.
fn parent_chain(base: &[LayerRecord]) -> Option<ChainId> {
    (!base.is_empty())
        .then(|| ChainId::prefixes(base.iter().map(|l| &l.diff_id)))
        .and_then(|chain| chain.last().cloned())
}

/// `base` with `layer` on top.
fn with_layer(base: &[LayerRecord], layer: LayerDescriptor) -> StateRef {
    let mut layers = base.to_vec();
    layers.push(LayerRecord {
        diff_id: layer.diff_id,
        blob: layer.digest,
        size: layer.size,
        media_type: layer.media_type.to_string(),
        created: now(),
    });
    StateRef::Layers(Arc::new(layers))
}

/// The layers of the image manifest `manifest` in `content`, bottom first, with the
/// diff IDs its config lists.
pub(crate) fn stored_image_layers(
    content: &ContentStore,
    manifest: &Digest,
) -> anyhow::Result<Vec<LayerRecord>> {
    let manifest_bytes = content
        .read_blob(manifest)
        .with_context(|| format!("reading manifest {manifest}"))?;
    let parsed: ImageManifest = serde_json::from_slice(&manifest_bytes)
        .with_context(|| format!("parsing manifest {manifest}"))?;
    let config_digest: Digest = parsed.config().digest().to_string().parse()?;
    let config: ImageConfig = serde_json::from_slice(&content.read_blob(&config_digest)?)
        .with_context(|| format!("parsing image config {config_digest}"))?;
    layer_records(&parsed, &config).with_context(|| format!("image {manifest}"))
}

/// The layers an image manifest lists, bottom first, paired with the diff IDs of its
/// config.
pub(crate) fn layer_records(
    manifest: &ImageManifest,
    config: &ImageConfig,
) -> anyhow::Result<Vec<LayerRecord>> {
    if config.rootfs.diff_ids.len() != manifest.layers().len() {
        bail!(
            "the manifest lists {} layers but the config {} diff IDs",
            manifest.layers().len(),
            config.rootfs.diff_ids.len()
        );
    }
    manifest
        .layers()
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(layer, diff_id)| {
            Ok(LayerRecord {
                diff_id: diff_id.clone(),
                blob: layer.digest().to_string().parse()?,
                size: layer.size(),
                media_type: layer.media_type().to_string(),
                created: 0,
            })
        })
        .collect()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
