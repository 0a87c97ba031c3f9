//! `kiln build`: a Dockerfile and a context become an image.
//!
//! The flow: read and parse the Dockerfile; lower it (with the build's ARGs, target and
//! platform) into a build graph and the image configuration; solve the graph with the
//! local worker, which runs only steps whose cache keys are not in the index; then
//! export the target's layers and configuration (to the image store by default).

mod download;
mod export;
mod fileop;
pub(crate) mod progress;
mod records;
mod remote;
mod resolver;
mod secrets;
pub(crate) mod worker;
pub(crate) mod workspace;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use kiln_cache::SnapshotMode;
use kiln_cache::context::{IgnoreMatcher, StatCache, read_ignore_file};
use kiln_executor::{CancelToken, ExecError, RuncExecutor};
use kiln_image::layer::{Compression, WriteOptions};
use kiln_image::store::ImageStore;
use kiln_image::{Digest, ImageRef, Platform};
use kiln_solver::lower::{LowerOptions, Lowered, lower};
use kiln_solver::op::NetworkMode;
use kiln_solver::{SolveError, SolveOptions, Solver};

use crate::registry;
use crate::state::State;
use crate::transfer::TransferDisplay;
use export::{LoweredImage, Output};
use progress::{Progress, ProgressMode};
use records::RecordWriter;
use remote::RemoteCaches;
use resolver::{Puller, StoreResolver};
use secrets::Secrets;
use worker::{BuildContext, LocalWorker, StateRef, StepError, WorkerParts};

/// Arguments of `kiln build`.
#[derive(clap::Args)]
pub struct BuildArgs {
    /// Name (and tag) of the image; may be given several times.
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    tags: Vec<String>,

    /// The Dockerfile (default: CONTEXT/Dockerfile; `-` reads standard input).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,

    /// Sets a build-time variable (`NAME=value`, or `NAME` to take it from the environment).
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    build_args: Vec<String>,

    /// The stage to build (default: the last).
    #[arg(long)]
    target: Option<String>,

    /// Runs every step, ignoring the cache.
    #[arg(long)]
    no_cache: bool,

    /// Runs every step of these stages, ignoring the cache.
    #[arg(long = "no-cache-filter", value_name = "STAGE")]
    no_cache_filter: Vec<String>,

    /// How progress is shown.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    progress: ProgressMode,

    /// Writes the image ID to this file.
    #[arg(long, value_name = "FILE")]
    iidfile: Option<PathBuf>,

    /// Writes build results (image digest, config digest) as JSON to this file.
    #[arg(long = "metadata-file", value_name = "FILE")]
    metadata_file: Option<PathBuf>,

    /// Sets a label on the image (`KEY=value`).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,

    /// The network of RUN steps: `default`, `none` or `host`.
    #[arg(long, default_value = "default")]
    network: String,

    /// Exposes a secret to RUN steps (`id=NAME,src=FILE` or `id=NAME,env=VAR`).
    #[arg(long = "secret", value_name = "SPEC")]
    secrets: Vec<String>,

    /// The platform to build for (only the host's platform can run RUN steps).
    #[arg(long)]
    platform: Option<String>,

    /// Where the result goes: `type=image` (default), `type=registry`,
    /// `type=oci|docker,dest=FILE[,compression=gzip|zstd|uncompressed]` (gzip unless
    /// asked), `type=tar,dest=FILE`, `type=local,dest=DIR`.
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    output: Option<String>,

    /// Pushes the image to its registry under every `-t` name.
    #[arg(long)]
    push: bool,

    /// Asks the registry for the newest base images even when the store has them.
    #[arg(long)]
    pull: bool,

    /// Reads cache records from a registry or an OCI layout: `type=registry,ref=NAME`,
    /// `type=local,src=DIR[,tag=T]`, or a bare image name. May be given several times.
    #[arg(long = "cache-from", value_name = "SPEC")]
    cache_from: Vec<String>,

    /// Writes this build's cache records: `type=registry,ref=NAME[,mode=min|max]`,
    /// `type=local,dest=DIR[,tag=T][,mode=min|max]` or `type=inline`.
    #[arg(long = "cache-to", value_name = "SPEC")]
    cache_to: Vec<String>,

    /// How many steps may run at once.
    #[arg(long)]
    jobs: Option<usize>,

    /// How step filesystems are made: `overlay`, `copy` (plain copies, slower; for
    /// where overlayfs is unavailable) or `auto` (overlay when it can be mounted).
    #[arg(long, value_enum, default_value_t = SnapshotterChoice::Auto)]
    snapshotter: SnapshotterChoice,

    /// The OCI runtime binary for RUN steps.
    #[arg(long, default_value = "runc")]
    runtime: PathBuf,

    /// Prints only the image ID.
    #[arg(short = 'q', long)]
    quiet: bool,

    /// The build context directory.
    context: PathBuf,
}

/// `--snapshotter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SnapshotterChoice {
    /// Overlay when overlayfs can be mounted, else copy.
    Auto,
    /// Overlay snapshots.
    Overlay,
    /// Plain copies.
    Copy,
}

/// Runs `kiln build`.
pub fn run(root: &Path, args: BuildArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(build(root, args));
    // Steps cancelled by a signal finish their cleanup on blocking threads.
    runtime.shutdown_timeout(std::time::Duration::from_secs(30));
    result
}

async fn build(root: &Path, args: BuildArgs) -> anyhow::Result<ExitCode> {
    let context_dir = fs::canonicalize(&args.context)
        .with_context(|| format!("build context {}", args.context.display()))?;
    if !context_dir.is_dir() {
        bail!("build context {} is not a directory", context_dir.display());
    }
    let (dockerfile_name, dockerfile_path) = match &args.file {
        Some(f) if f.as_os_str() == "-" => ("<stdin>".to_owned(), None),
        Some(f) => (f.display().to_string(), Some(f.clone())),
        None => {
            let p = context_dir.join("Dockerfile");
            ("Dockerfile".to_owned(), Some(p))
        }
    };
    let text = match &dockerfile_path {
        Some(path) => fs::read_to_string(path)
            .with_context(|| format!("reading Dockerfile {}", path.display()))?,
        None => {
            let mut text = String::new();
            io::stdin()
                .read_to_string(&mut text)
                .context("reading the Dockerfile from standard input")?;
            text
        }
    };
    let dockerfile = match kiln_parser::parse(&text) {
        Ok(file) => file,
        Err(err) => {
            eprintln!(
                "{:?}",
                crate::debug::diagnostic(err, dockerfile_name, text.clone())
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let excludes = read_dockerignore(&context_dir, dockerfile_path.as_deref())?;
    let ignore = IgnoreMatcher::new(&excludes).context("reading .dockerignore")?;

    let platform = match &args.platform {
        Some(p) => p
            .parse::<Platform>()
            .with_context(|| format!("--platform {p}"))?,
        None => Platform::host(),
    };
    let tags = args
        .tags
        .iter()
        .map(|t| t.parse::<ImageRef>().with_context(|| format!("-t {t}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let output = Output::parse(args.output.as_deref(), tags, args.push)?;
    let mut cache_exports = Vec::new();
    let mut inline_cache = false;
    for spec in &args.cache_to {
        match remote::parse_cache_to(spec)? {
            Some(export) => cache_exports.push(export),
            None => inline_cache = true,
        }
    }
    let cache_imports = args
        .cache_from
        .iter()
        .map(|spec| remote::parse_cache_from(spec))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let options = LowerOptions {
        build_args: parse_build_args(&args.build_args)?,
        target: args.target.clone(),
        target_platform: platform.clone(),
        build_platform: Platform::host(),
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        labels: parse_pairs("--label", &args.labels)?,
        context_excludes: excludes,
        epoch: source_date_epoch()?,
        network: match args.network.as_str() {
            "default" | "sandbox" => NetworkMode::Default,
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            other => bail!("--network {other}: expected default, none or host"),
        },
        ..LowerOptions::default()
    };

    let state = State::open(root)?;
    let progress = Arc::new(Progress::new(if args.quiet {
        ProgressMode::Quiet
    } else {
        args.progress
    }));
    let transfers = Arc::new(TransferDisplay::attached(
        progress.mode(),
        "pull",
        progress.multi(),
    ));
    let client = registry::client()?;
    let resolver = StoreResolver::new(
        &state,
        Some(Puller {
            client: client.clone(),
            display: Arc::clone(&transfers),
            always: args.pull,
        }),
    );
    let Lowered {
        graph,
        target,
        image,
        base,
        inherited_history,
        layers,
        ..
    } = lower(&dockerfile, &text, &options, &resolver)
        .await
        .with_context(|| dockerfile_name.clone())?;

    let remote = Arc::new(
        RemoteCaches::load(&cache_imports, Some(client.clone()), Arc::clone(&transfers)).await?,
    );
    let cancel = CancelToken::new();
    let executor_dir = root.join("executor-v1");
    let executor = RuncExecutor::new(&executor_dir).with_runtime_binary(&args.runtime);
    executor
        .cleanup_stale()
        .context("cleaning up after an earlier kiln that stopped mid-step")?;
    let stat_cache_file = root.join("contexthash-v1").join(format!(
        "{}.json",
        Digest::of(context_dir.as_os_str().as_encoded_bytes()).hex()
    ));
    let snapshots = state.store.snapshotter(SnapshotMode::Overlay)?;
    let mode = match args.snapshotter {
        SnapshotterChoice::Overlay => SnapshotMode::Overlay,
        SnapshotterChoice::Copy => SnapshotMode::Copy,
        SnapshotterChoice::Auto if workspace::overlay_works(&snapshots.scratch()?) => {
            SnapshotMode::Overlay
        }
        SnapshotterChoice::Auto => {
            eprintln!("kiln: overlayfs cannot be mounted here; steps run on copies (slower)");
            SnapshotMode::Copy
        }
    };
    let snapshots = state.store.snapshotter(mode)?;
    let parts = WorkerParts {
        snapshots,
        index: state.store.index(),
        records: RecordWriter::new(state.store.index())
            .context("starting the cache record writer")?,
        executor,
        context: BuildContext {
            dir: context_dir.clone(),
            ignore,
        },
        stat_cache: StatCache::open(stat_cache_file),
        progress: Arc::clone(&progress),
        // Layers are kept plain (the blob is the diff: one hash, no compression) and
        // compressed when they leave for a registry or cache.
        layer_options: WriteOptions {
            source_date_epoch: options.epoch,
            compression: Compression::None,
            ..WriteOptions::default()
        },
        cancel: cancel.clone(),
        secrets: Secrets::parse(&args.secrets)?,
        cache_mounts: root.join("cachemounts-v1"),
        remote: Arc::clone(&remote),
        solved: Default::default(),
        store: state.store,
    };
    let worker = Arc::new(LocalWorker::new(parts));

    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
    let graph = Arc::new(graph);
    let mut solve_options = SolveOptions {
        events: Some(events_tx),
        ..SolveOptions::default()
    };
    if let Some(jobs) = args.jobs {
        solve_options.jobs = jobs.max(1);
    }
    let solver = Solver::new(Arc::clone(&worker), solve_options);
    let mut targets = vec![target];
    for step in &layers {
        targets.push(step.vertex);
        targets.extend(step.parent);
    }
    targets.extend(base);

    let display = {
        let graph = Arc::clone(&graph);
        let progress = Arc::clone(&progress);
        tokio::spawn(async move {
            while let Some(event) = events_rx.recv().await {
                let name = &graph.vertex(event.vertex).meta.name;
                progress.status(event.vertex, name, &event.status);
            }
        })
    };
    let solved = tokio::select! {
        solved = solver.solve(Arc::clone(&graph), &targets) => solved,
        code = interrupted() => {
            // Running steps see the cancellation, kill their containers and clean up;
            // `run` waits for them before the process exits.
            cancel.cancel();
            eprintln!("kiln: build interrupted, stopping running steps");
            return Ok(ExitCode::from(code));
        }
    };
    drop(solver);
    let _ = display.await;
    // The records of the steps that ran are committed while the image is written.
    worker.parts().records.close();
    let solved = match solved {
        Ok(solved) => solved,
        Err(err) => {
            // The steps that did run stay cached for the next attempt.
            if let Err(e) = worker.parts().records.finish() {
                eprintln!("kiln: warning: writing the build's cache records: {e}");
            }
            return Err(explain(err, &dockerfile_name, &text));
        }
    };
    worker
        .parts()
        .stat_cache
        .save()
        .context("saving the build context's file digests")?;

    let results: BTreeMap<_, _> = targets
        .iter()
        .zip(solved)
        .map(|(id, s)| (*id, s.result))
        .collect();
    let lowered = LoweredImage {
        image: &image,
        target,
        steps: &layers,
        inherited_history,
        epoch: options.epoch,
    };
    if let Some(StateRef::Layers(layers)) = results.get(&target) {
        remote
            .fetch_layers(worker.parts().store.content(), layers)
            .await?;
    }
    let inline = match results.get(&target) {
        Some(StateRef::Layers(layers)) if inline_cache => Some(serde_json::to_value(
            kiln_cache::remote::encode_inline(worker.parts().solved_records(), layers),
        )?),
        _ => None,
    };
    let image = export::export(worker.parts(), &lowered, &results, &output, inline)?;
    let parts = worker.parts();
    parts
        .records
        .finish()
        .context("writing the build's cache records")?;
    let content = parts.store.content();
    remote
        .remember_hits(content, &parts.index)
        .context("keeping the cache records found remotely")?;
    if !cache_exports.is_empty() {
        let solved = parts.solved_records();
        let final_layers = results
            .get(&target)
            .map(|r| r.layers().map(<[_]>::to_vec))
            .transpose()?
            .unwrap_or_default();
        for export in &cache_exports {
            let digest = remote::export(
                export,
                solved.clone(),
                &final_layers,
                content,
                &parts.index,
                &remote,
                Some(&client),
            )
            .await
            .with_context(|| format!("exporting the cache to {}", export.location))?;
            progress.println(&format!(
                "exporting cache to {} ({digest}) done",
                export.location
            ));
        }
    }
    // What the metadata file reports: the pushed manifest when the image was pushed
    // (its layers compressed), the stored one otherwise.
    let mut manifest_digest = image.manifest.clone();
    if let Output::Image { names, push: true } = &output {
        if names.is_empty() {
            bail!("--push needs a name for the image (-t NAME)");
        }
        let pushes = TransferDisplay::attached(progress.mode(), "push", progress.multi());
        for name in names {
            let digest = registry::push(
                &parts.store,
                &ImageStore::open(root),
                &client,
                name,
                &image.manifest,
                &pushes,
            )
            .await?;
            progress.println(&format!("pushing {name} ({digest}) done"));
            manifest_digest = digest;
        }
    }
    if let Some(path) = &args.iidfile {
        fs::write(path, image.config.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.metadata_file {
        let metadata = serde_json::json!({
            "containerimage.digest": manifest_digest.to_string(),
            "containerimage.config.digest": image.config.to_string(),
            "image.name": image.names.join(","),
        });
        fs::write(path, serde_json::to_vec_pretty(&metadata)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.quiet {
        println!("{}", image.config);
    } else {
        progress.println(&format!("writing image {} done", image.config));
        for name in &image.names {
            progress.println(&format!("naming to {name} done"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM, to the exit code a shell gives a process killed by
/// that signal (130, 143).
async fn interrupted() -> u8 {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => 130,
        _ = term.recv() => 143,
    }
}

/// A failed step as BuildKit reports it: the step, the Dockerfile line, the cause.
fn explain(err: SolveError, dockerfile: &str, text: &str) -> anyhow::Error {
    let SolveError::Step {
        name,
        line: Some(line),
        source,
    } = err
    else {
        return anyhow::Error::new(err).context("failed to solve");
    };
    let mut snippet = String::new();
    let lines: Vec<&str> = text.lines().collect();
    let from = line.saturating_sub(3).max(1);
    for n in from..=line.min(lines.len()) {
        let marker = if n == line { ">>>" } else { "   " };
        snippet.push_str(&format!(" {n:>3} | {marker} {}\n", lines[n - 1]));
    }
    // The last lines the failed command printed, as BuildKit shows them under the step.
    let mut tail = String::new();
    let failed = source.downcast_ref::<StepError>().and_then(|step| {
        step.cause()
            .chain()
            .find_map(|e| e.downcast_ref::<ExecError>())
    });
    if let Some(ExecError::Failed { tail: lines, .. }) = failed {
        for l in lines.lines() {
            tail.push_str(&format!("{l}\n"));
        }
    }
    eprintln!(
        "------\n > {name}:\n{tail}------\n{dockerfile}:{line}\n--------------------\n{snippet}--------------------"
    );
    anyhow::anyhow!("failed to solve: {}", error_chain(source.as_ref()))
}

/// An error and its causes on one line, as `{:#}` prints an `anyhow` chain.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        let next = err.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = err.source();
    }
    text
}

/// `.dockerignore` as Docker picks it: `<Dockerfile>.dockerignore` beside the Dockerfile
/// wins over the context's `.dockerignore`.
fn read_dockerignore(context: &Path, dockerfile: Option<&Path>) -> anyhow::Result<Vec<String>> {
    let specific = dockerfile.map(|f| {
        let mut name = f.as_os_str().to_owned();
        name.push(".dockerignore");
        PathBuf::from(name)
    });
    for candidate in specific.into_iter().chain([context.join(".dockerignore")]) {
        match fs::read_to_string(&candidate) {
            Ok(text) => return Ok(read_ignore_file(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", candidate.display())),
        }
    }
    Ok(Vec::new())
}

fn parse_build_args(args: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for arg in args {
        match arg.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_owned(), v.to_owned());
            }
            // `--build-arg NAME` takes the value from the environment, if set.
            None => {
                if let Ok(v) = std::env::var(arg) {
                    out.insert(arg.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

fn parse_pairs(flag: &str, pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("{flag} {p:?}: expected KEY=VALUE"))
        })
        .collect()
}

fn source_date_epoch() -> anyhow::Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => Ok(Some(v.parse().with_context(|| {
            format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")
        })?)),
        Err(_) => Ok(None),
    }
}
