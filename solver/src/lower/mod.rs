//! Lowering: a parsed Dockerfile and the build's options → a [`BuildGraph`] and the
//! image configuration of the target stage.
//!
//! The work follows BuildKit's `dockerfile2llb` in three phases, because each phase
//! needs the previous one finished:
//!
//! 1. **plan** — expand every FROM with the global ARGs, name the stages, find what each
//!    stage depends on (its base, `COPY --from`, `RUN --mount from=`), reject cycles,
//!    and keep only what `--target` needs;
//! 2. **resolve** — ask the [`ImageResolver`] for the base images of the needed stages
//!    only (an unused stage never causes a lookup), then parse the ONBUILD triggers
//!    those images carry, which may add dependencies, and repeat until nothing new;
//! 3. **dispatch** — lower each needed stage's instructions in file order into ops,
//!    one file per hard instruction (`run` for RUN, `copy` for COPY/ADD,
//!    `config` for the instructions that only change the configuration, WORKDIR
//!    included), writing BuildKit's history entries and progress names as it goes.
//!
//! Identical steps are shared through the graph's deduplication: two stages running
//! the same RUN over the same base produce one vertex.
//!
//! Where kiln differs from BuildKit: `ADD` of git sources, `RUN --mount=type=ssh` and
//! cache mounts seeded `from=` another state are refused with a clear error; named
//! build contexts are not supported; file timestamps under SOURCE_DATE_EPOCH are left
//! to the exporter.

mod args;
mod config;
mod copy;
mod history;
mod onbuild;
mod run;
mod stage;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;

use kiln_image::{Digest, ImageConfig, ImageRef, Platform, PlatformError, RefError};
use kiln_parser::instructions::chmod::ChmodError;
use kiln_parser::instructions::mount::{Mount, MountError, MountType};
use kiln_parser::instructions::{Command, Expandable, Instruction};
use kiln_parser::shell::{Env, Lex, ShellError};
use kiln_parser::{Dockerfile, ParseError};

use crate::graph::{BuildGraph, VertexId};
use crate::op::{NetworkMode, Op, OpMetadata, SourceOp};
use args::{Vars, expand};
use stage::StageState;

/// What a build asks of lowering.
#[derive(Clone, Debug)]
pub struct LowerOptions {
    /// `--build-arg NAME=value`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the stage to build (default: the last one).
    pub target: Option<String>,
    /// The platform the image is built for.
    pub target_platform: Platform,
    /// The platform the build runs on.
    pub build_platform: Platform,
    /// `--no-cache`: every step bypasses the cache.
    pub no_cache: bool,
    /// `--no-cache-filter`: the steps of these stages bypass the cache.
    pub no_cache_filter: Vec<String>,
    /// `--label`: added to the target image's labels.
    pub labels: BTreeMap<String, String>,
    /// The `.dockerignore` patterns of the build context.
    pub context_excludes: Vec<String>,
    /// SOURCE_DATE_EPOCH, in seconds: the `created` time of the image and its history.
    pub epoch: Option<i64>,
    /// When the build runs, used as `created` without an epoch.
    pub build_time: jiff::Timestamp,
    /// `--network`: the network of `RUN` steps that do not ask for one.
    pub network: NetworkMode,
    /// The hostname `RUN` steps see.
    pub hostname: String,
}

impl Default for LowerOptions {
    /// A build for the host platform, now, with nothing else asked.
    fn default() -> LowerOptions {
        LowerOptions {
            build_args: BTreeMap::new(),
            target: None,
            target_platform: Platform::host(),
            build_platform: Platform::host(),
            no_cache: false,
            no_cache_filter: Vec::new(),
            labels: BTreeMap::new(),
            context_excludes: Vec::new(),
            epoch: None,
            build_time: jiff::Timestamp::now(),
            network: NetworkMode::Default,
            hostname: "kiln".to_owned(),
        }
    }
}

/// Finds the manifest and configuration an image reference stands for.
pub trait ImageResolver: Send + Sync {
    /// Resolves `reference` for `platform` (picking from an index when needed).
    fn resolve(
        &self,
        reference: &ImageRef,
        platform: &Platform,
    ) -> impl Future<Output = Result<ResolvedImage, ResolveError>> + Send;
}

/// An image reference pinned to its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The reference, normalised (as the resolver found it).
    pub reference: ImageRef,
    /// The manifest digest.
    pub manifest: Digest,
    /// The image configuration.
    pub config: ImageConfig,
}

/// Why an image could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No such image (or none for the platform). The reference is not repeated in the
    /// message: [`LowerError::Resolve`] names it.
    #[error("not found")]
    NotFound {
        /// The reference asked for.
        reference: String,
    },
    /// The store or registry failed.
    #[error("cannot resolve")]
    Backend {
        /// The reference asked for.
        reference: String,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The lowered build.
#[derive(Debug)]
pub struct Lowered {
    /// The steps.
    pub graph: BuildGraph,
    /// The vertex holding the target stage's final filesystem.
    pub target: VertexId,
    /// The target stage's image configuration and history. `rootfs.diff_ids` holds
    /// the base image's layers; the exporter appends one per entry of `layers`.
    pub image: ImageConfig,
    /// The image the target's filesystem starts from, whose layers come first.
    pub base: Option<VertexId>,
    /// How many entries at the start of the history came with that image (the rest
    /// were added by this build).
    pub inherited_history: usize,
    /// For each history entry added by this build that has a layer, the step that
    /// produced it, in history order.
    pub layers: Vec<LayerStep>,
    /// The stages lowered, in file order (`name`, or `stage-N` when unnamed).
    pub stages_built: Vec<String>,
}

/// A history entry with a layer, and where its content comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerStep {
    /// Index into the image's history.
    pub history: usize,
    /// The vertex holding the filesystem after the step.
    pub vertex: VertexId,
    /// The vertex the layer is the difference from; `None` for the difference from an
    /// empty tree (`COPY --link` layers).
    pub parent: Option<VertexId>,
}

/// A place in the Dockerfile: the line and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    /// 1-based line.
    pub line: usize,
    /// The line's text, for showing it under the error.
    pub text: String,
}

impl Place {
    /// The place of line `line` (a [`kiln_parser::Span`]'s) of `source`.
    fn new(source: &str, line: u32) -> Place {
        let line = line as usize;
        let text = source
            .lines()
            .nth(line.saturating_sub(1))
            .unwrap_or_default()
            .to_owned();
        Place { line, text }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)
    }
}

/// Why a Dockerfile could not be lowered. Every variant tied to an instruction names
/// its place.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    /// The Dockerfile has no FROM.
    #[error("dockerfile contains no stages to build")]
    NoStages,
    /// `--target` names no stage.
    #[error("target stage {target:?} could not be found")]
    TargetNotFound {
        /// The target asked for.
        target: String,
    },
    /// A word could not be expanded.
    #[error("{at}: cannot expand {word:?}")]
    Expand {
        /// Where.
        at: Place,
        /// The word as written.
        word: String,
        /// Why.
        #[source]
        source: ShellError,
    },
    /// FROM expanded to nothing.
    #[error("{at}: base name ({base}) should not be blank")]
    BlankBase {
        /// Where.
        at: Place,
        /// The base as written.
        base: String,
    },
    /// `FROM --platform` is not a platform.
    #[error("{at}: failed to parse platform {value}")]
    Platform {
        /// Where.
        at: Place,
        /// The expanded value.
        value: String,
        /// Why.
        #[source]
        source: PlatformError,
    },
    /// An image reference is malformed.
    #[error("{at}: failed to parse stage name {reference:?}")]
    Reference {
        /// Where.
        at: Place,
        /// The reference.
        reference: String,
        /// Why.
        #[source]
        source: RefError,
    },
    /// A base image could not be resolved.
    #[error("{at}: {reference}")]
    Resolve {
        /// Where.
        at: Place,
        /// The reference.
        reference: String,
        /// Why.
        #[source]
        source: ResolveError,
    },
    /// `--from` uses a variable.
    #[error(
        "{at}: variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"
    )]
    FromVariable {
        /// Where.
        at: Place,
    },
    /// `--from=<n>` is out of range.
    #[error("{at}: invalid stage index {index}")]
    StageIndex {
        /// Where.
        at: Place,
        /// The index.
        index: usize,
    },
    /// A stage depends on itself through others.
    #[error("{at}: circular dependency detected on stage: {stage}")]
    Circular {
        /// The instruction closing the cycle.
        at: Place,
        /// The stage.
        stage: String,
    },
    /// `COPY --from` or a mount names a stage defined later.
    #[error(
        "{at}: cannot copy from stage {from:?}, it needs to be defined before current stage {stage:?}"
    )]
    LaterStage {
        /// Where.
        at: Place,
        /// The stage referred to.
        from: String,
        /// The stage referring.
        stage: String,
    },
    /// An ONBUILD trigger of a base image does not parse.
    #[error("{at}: cannot parse ONBUILD trigger {trigger:?}")]
    Trigger {
        /// The FROM line of the stage the trigger fires in.
        at: Place,
        /// The trigger.
        trigger: String,
        /// Why.
        #[source]
        source: Box<ParseError>,
    },
    /// An ONBUILD trigger holds more or less than one instruction.
    #[error("{at}: onbuild trigger should be a single expression: {trigger:?}")]
    TriggerCount {
        /// The FROM line of the stage the trigger fires in.
        at: Place,
        /// The trigger.
        trigger: String,
    },
    /// An ONBUILD trigger is not allowed as a trigger.
    #[error("{at}: {keyword} is not allowed as an ONBUILD trigger")]
    TriggerKeyword {
        /// The FROM line of the stage the trigger fires in.
        at: Place,
        /// The trigger's instruction.
        keyword: String,
    },
    /// A `--mount` is invalid after expansion.
    #[error("{at}: invalid mount")]
    Mount {
        /// Where.
        at: Place,
        /// Why.
        #[source]
        source: MountError,
    },
    /// A mount target is the root.
    #[error("{at}: invalid mount target {target:?}")]
    MountTarget {
        /// Where.
        at: Place,
        /// The target.
        target: String,
    },
    /// A feature kiln does not lower.
    #[error("{at}: {feature} is not supported")]
    Unsupported {
        /// Where.
        at: Place,
        /// What.
        feature: &'static str,
    },
    /// A heredoc RUN in exec form or with several commands BuildKit rejects.
    #[error("{at}: parsing produced an invalid run command")]
    HeredocRun {
        /// Where.
        at: Place,
    },
    /// `--chmod` is invalid after expansion.
    #[error("{at}: invalid --chmod")]
    Chmod {
        /// Where.
        at: Place,
        /// Why.
        #[source]
        source: ChmodError,
    },
    /// `--chown` is not `user[:group]`.
    #[error("{at}: invalid --chown value {value:?}")]
    Chown {
        /// Where.
        at: Place,
        /// The expanded value.
        value: String,
    },
    /// A COPY/ADD flag or source that the instruction does not allow.
    #[error("{at}: {problem}")]
    Transfer {
        /// Where.
        at: Place,
        /// What is wrong (`checksum can't be specified for COPY`, …).
        problem: &'static str,
    },
    /// `ADD --checksum` is not a digest.
    #[error("{at}: invalid checksum {value:?}")]
    Checksum {
        /// Where.
        at: Place,
        /// The value.
        value: String,
        /// Why.
        #[source]
        source: kiln_image::DigestError,
    },
    /// An EXPOSE port is malformed.
    #[error("{at}: invalid port {port:?}: {problem}")]
    Port {
        /// Where.
        at: Place,
        /// The port spec.
        port: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// STOPSIGNAL is no signal.
    #[error("{at}: invalid signal: {signal}")]
    Signal {
        /// Where.
        at: Place,
        /// The value.
        signal: String,
    },
    /// VOLUME expanded to an empty path.
    #[error("{at}: VOLUME specified can not be an empty string")]
    EmptyVolume {
        /// Where.
        at: Place,
    },
}

impl LowerError {
    /// The Dockerfile place the error is about, when it has one.
    pub fn place(&self) -> Option<&Place> {
        match self {
            LowerError::NoStages | LowerError::TargetNotFound { .. } => None,
            LowerError::Expand { at, .. }
            | LowerError::BlankBase { at, .. }
            | LowerError::Platform { at, .. }
            | LowerError::Reference { at, .. }
            | LowerError::Resolve { at, .. }
            | LowerError::FromVariable { at }
            | LowerError::StageIndex { at, .. }
            | LowerError::Circular { at, .. }
            | LowerError::LaterStage { at, .. }
            | LowerError::Trigger { at, .. }
            | LowerError::TriggerCount { at, .. }
            | LowerError::TriggerKeyword { at, .. }
            | LowerError::Mount { at, .. }
            | LowerError::MountTarget { at, .. }
            | LowerError::Unsupported { at, .. }
            | LowerError::HeredocRun { at }
            | LowerError::Chmod { at, .. }
            | LowerError::Chown { at, .. }
            | LowerError::Transfer { at, .. }
            | LowerError::Checksum { at, .. }
            | LowerError::Port { at, .. }
            | LowerError::Signal { at, .. }
            | LowerError::EmptyVolume { at } => Some(at),
        }
    }
}

/// What a stage's filesystem starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Base {
    Scratch,
    Stage(usize),
    Image(String),
}

/// Something a stage reads besides its base.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Dep {
    Stage(usize),
    Image(String),
}

/// A stage after planning.
struct Planned<'a> {
    name: Option<String>,
    display: String,
    at: Place,
    base: Base,
    platform: Platform,
    /// Fired ONBUILD triggers first, then the stage's own instructions.
    instructions: Vec<Instruction<'a>>,
    triggers: usize,
    triggers_loaded: bool,
    deps: Vec<(Dep, Place)>,
}

/// What the dispatch phase shares across stages.
struct Builder<'a> {
    options: &'a LowerOptions,
    source: &'a str,
    lex: Lex,
    graph: BuildGraph,
    globals: Vars,
    created: String,
    proxy_env: Vec<String>,
    context: Option<VertexId>,
    /// The final filesystem of each stage lowered so far, by index.
    stage_fs: Vec<Option<VertexId>>,
    stage_names: Vec<Option<String>>,
    /// Images read by `--from` and mounts, by the name written.
    images: HashMap<String, VertexId>,
}

impl Builder<'_> {
    fn place(&self, line: u32) -> Place {
        Place::new(self.source, line)
    }

    /// The build context, one vertex shared by every step that reads it.
    fn context(&mut self) -> VertexId {
        if let Some(id) = self.context {
            return id;
        }
        let id = self.graph.add(
            Op::Source(SourceOp::Local {
                name: "context".to_owned(),
                excludes: self.options.context_excludes.clone(),
            }),
            Vec::new(),
            OpMetadata {
                name: "[internal] load build context".to_owned(),
                ignore_cache: self.options.no_cache,
                ..OpMetadata::default()
            },
        );
        self.context = Some(id);
        id
    }

    fn scratch(&mut self) -> VertexId {
        self.graph.add(
            Op::Source(SourceOp::Scratch),
            Vec::new(),
            OpMetadata::default(),
        )
    }

    /// The filesystem `--from=<from>` (or a mount's `from=`) names for a step of
    /// `stage` (the index of the stage being lowered).
    fn vertex_named(
        &mut self,
        from: &str,
        allow_index: bool,
        stage: usize,
        display: &str,
        at: &Place,
    ) -> Result<VertexId, LowerError> {
        let found = match from.parse::<usize>() {
            Ok(index) if allow_index => Some(index),
            _ => find_stage(&self.stage_names, from),
        };
        match found {
            Some(index) => match self.stage_fs.get(index).copied().flatten() {
                Some(fs) if index < stage => Ok(fs),
                _ => Err(LowerError::LaterStage {
                    at: at.clone(),
                    from: from.to_owned(),
                    stage: display.to_owned(),
                }),
            },
            None if from.eq_ignore_ascii_case("scratch") => Ok(self.scratch()),
            None => Ok(*self
                .images
                .get(from)
                .expect("every image read by --from is resolved during planning")),
        }
    }
}

fn find_stage(names: &[Option<String>], name: &str) -> Option<usize> {
    let name = name.to_lowercase();
    names
        .iter()
        .position(|n| n.as_deref() == Some(name.as_str()))
}

/// The base-image facts dispatch needs.
#[derive(Clone)]
struct BaseImage {
    vertex: VertexId,
    config: ImageConfig,
}

/// Lowers `dockerfile` (whose text is `source`) for a build with `options`, resolving
/// base images through `resolver`.
pub async fn lower(
    dockerfile: &Dockerfile<'_>,
    source: &str,
    options: &LowerOptions,
    resolver: &impl ImageResolver,
) -> Result<Lowered, LowerError> {
    let last = dockerfile.stages.last().ok_or(LowerError::NoStages)?;
    let lex = Lex::new(dockerfile.escape);
    let target_name = options
        .target
        .clone()
        .or_else(|| last.name.as_deref().map(str::to_owned))
        .unwrap_or_default();
    let globals = args::global_scope(dockerfile, source, options, &lex, &target_name)?;
    let mut planned = plan(dockerfile, source, options, &lex, &globals)?;
    let target = match &options.target {
        None => planned.len() - 1,
        Some(name) => find_stage(
            &planned.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
            name,
        )
        .ok_or_else(|| LowerError::TargetNotFound {
            target: name.clone(),
        })?,
    };
    check_cycles(&planned)?;

    let created = match options.epoch {
        Some(epoch) => jiff::Timestamp::from_second(epoch)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_string(),
        None => options.build_time.to_string(),
    };
    let mut builder = Builder {
        options,
        source,
        lex,
        graph: BuildGraph::new(),
        globals,
        created,
        proxy_env: args::proxy_env(&options.build_args),
        context: None,
        stage_fs: vec![None; planned.len()],
        stage_names: planned.iter().map(|p| p.name.clone()).collect(),
        images: HashMap::new(),
    };

    // Resolve what the target needs; fired triggers may need more, so repeat.
    let mut bases: HashMap<usize, BaseImage> = HashMap::new();
    let reachable = loop {
        let reachable = reachable_from(&planned, target);
        for &index in &reachable {
            let stage = &planned[index];
            if let (Base::Image(name), false) = (&stage.base, bases.contains_key(&index)) {
                let resolved =
                    resolve_image(&mut builder, resolver, name, stage, &stage.at).await?;
                bases.insert(index, resolved);
            }
            for (dep, at) in &stage.deps {
                if let Dep::Image(name) = dep
                    && !builder.images.contains_key(name)
                    && !name.eq_ignore_ascii_case("scratch")
                {
                    let resolved = resolve_image(&mut builder, resolver, name, stage, at).await?;
                    builder.images.insert(name.clone(), resolved.vertex);
                }
            }
        }
        let mut new_deps = false;
        for &index in &reachable {
            if planned[index].triggers_loaded {
                continue;
            }
            let triggers = match &planned[index].base {
                Base::Image(_) => bases[&index]
                    .config
                    .config
                    .on_build
                    .clone()
                    .unwrap_or_default(),
                Base::Stage(base) => planned[*base].instructions[planned[*base].triggers..]
                    .iter()
                    .filter_map(|i| match &i.command {
                        Command::Onbuild(o) => Some(o.expression.to_string()),
                        _ => None,
                    })
                    .collect(),
                Base::Scratch => Vec::new(),
            };
            let stage = &mut planned[index];
            stage.triggers_loaded = true;
            if triggers.is_empty() {
                continue;
            }
            let fired = onbuild::parse_triggers(&triggers, &stage.at)?;
            let names = builder.stage_names.clone();
            for instruction in &fired {
                let deps = instruction_deps(instruction, &names, &builder.lex, &stage.at)?;
                new_deps |= !deps.is_empty();
                stage.deps.extend(deps);
            }
            stage.triggers = fired.len();
            stage.instructions.splice(0..0, fired);
        }
        if !new_deps {
            break reachable;
        }
        check_cycles(&planned)?;
    };

    let mut states: Vec<Option<StageState>> = vec![None; planned.len()];
    let mut stages_built = Vec::new();
    for index in 0..planned.len() {
        if !reachable.contains(&index) {
            continue;
        }
        let stage = &planned[index];
        let mut state = start_stage(&mut builder, stage, &states, bases.get(&index))?;
        for (i, instruction) in stage.instructions.iter().enumerate() {
            state.in_trigger = i < stage.triggers;
            dispatch(&mut builder, &mut state, index, instruction)?;
        }
        builder.stage_fs[index] = Some(state.fs);
        stages_built.push(
            stage
                .name
                .clone()
                .unwrap_or_else(|| format!("stage-{index}")),
        );
        states[index] = Some(state);
    }

    let mut state = states[target]
        .take()
        .expect("the target stage is always lowered");
    if !options.labels.is_empty() {
        let labels = state.image.config.labels.get_or_insert_with(BTreeMap::new);
        labels.extend(options.labels.clone());
    }
    state.image.created = Some(builder.created.clone());
    Ok(Lowered {
        graph: builder.graph,
        target: state.fs,
        image: state.image,
        base: state.base,
        inherited_history: state.inherited_history,
        layers: state.layers,
        stages_built,
    })
}

/// Phase 1: stages with their expanded bases, names and dependencies.
fn plan<'a>(
    dockerfile: &Dockerfile<'a>,
    source: &str,
    options: &LowerOptions,
    lex: &Lex,
    globals: &Vars,
) -> Result<Vec<Planned<'a>>, LowerError> {
    let names: Vec<Option<String>> = dockerfile
        .stages
        .iter()
        .map(|s| s.name.as_deref().map(str::to_owned))
        .collect();
    let mut planned = Vec::with_capacity(dockerfile.stages.len());
    let mut external = 0;
    for (index, stage) in dockerfile.stages.iter().enumerate() {
        let at = Place::new(source, stage.span.line);
        let base_name = expand(lex, &stage.base, globals, &at)?;
        if base_name.is_empty() {
            return Err(LowerError::BlankBase {
                at,
                base: stage.base.to_string(),
            });
        }
        let platform = match &stage.platform {
            None => options.target_platform.clone(),
            Some(raw) => {
                let value = expand(lex, raw, globals, &at)?;
                value.parse().map_err(|source| LowerError::Platform {
                    at: at.clone(),
                    value,
                    source,
                })?
            }
        };
        let base = match find_stage(&names[..index], &base_name) {
            Some(j) if names[j].as_deref() == Some(base_name.as_str()) => Base::Stage(j),
            _ if base_name == "scratch" => Base::Scratch,
            _ => Base::Image(base_name),
        };
        let mut deps = Vec::new();
        for instruction in &stage.instructions {
            let at = Place::new(source, instruction.span.line);
            deps.extend(instruction_deps(instruction, &names, lex, &at)?);
        }
        external += deps
            .iter()
            .filter(|(d, _)| matches!(d, Dep::Image(_)))
            .count();
        let name = stage.name.as_deref().map(str::to_owned);
        planned.push(Planned {
            display: name.clone().unwrap_or_else(|| format!("stage-{index}")),
            name,
            at,
            base,
            platform,
            instructions: stage.instructions.clone(),
            triggers: 0,
            triggers_loaded: false,
            deps,
        });
    }
    if planned.len() + external == 1 {
        planned[0].display.clear();
    }
    Ok(planned)
}

/// What one instruction reads from other stages or images.
fn instruction_deps(
    instruction: &Instruction,
    names: &[Option<String>],
    lex: &Lex,
    at: &Place,
) -> Result<Vec<(Dep, Place)>, LowerError> {
    let mut deps = Vec::new();
    match &instruction.command {
        Command::Copy(copy) => {
            if let Some(from) = &copy.from {
                let no_env: [(&str, &str); 0] = [];
                if expand(lex, from, &no_env, at)? != *from {
                    return Err(LowerError::FromVariable { at: at.clone() });
                }
                let dep = match from.parse::<usize>() {
                    Ok(index) if index < names.len() => Dep::Stage(index),
                    Ok(index) => {
                        return Err(LowerError::StageIndex {
                            at: at.clone(),
                            index,
                        });
                    }
                    Err(_) => match find_stage(names, from) {
                        Some(index) => Dep::Stage(index),
                        None => Dep::Image(from.to_string()),
                    },
                };
                deps.push((dep, at.clone()));
            }
        }
        Command::Run(run) => {
            for mount in &run.mounts {
                if let Some(from) = mount_from(mount) {
                    let dep = match find_stage(names, &from) {
                        Some(index) => Dep::Stage(index),
                        None => Dep::Image(from),
                    };
                    deps.push((dep, at.clone()));
                }
            }
        }
        _ => {}
    }
    Ok(deps)
}

/// The stage or image a mount reads, as BuildKit's `detectRunMount` sees it: a cache
/// mount without `from` reads `scratch`, a tmpfs reads nothing.
fn mount_from(mount: &Expandable<Mount>) -> Option<String> {
    let (kind, from) = match mount {
        Expandable::Literal(m) => (m.kind, m.from.as_deref().map(str::to_owned)),
        Expandable::Deferred(spec) => {
            let field = |key: &str| {
                spec.split(',').find_map(|f| {
                    let (k, v) = f.split_once('=')?;
                    k.trim_matches('"')
                        .eq_ignore_ascii_case(key)
                        .then(|| v.trim_matches('"').to_owned())
                })
            };
            let kind = match field("type").as_deref().map(str::to_lowercase).as_deref() {
                Some("cache") => MountType::Cache,
                Some("tmpfs") => MountType::Tmpfs,
                _ => MountType::Bind,
            };
            (kind, field("from"))
        }
    };
    match (kind, from) {
        (MountType::Tmpfs, _) => None,
        (MountType::Cache, None) => Some("scratch".to_owned()),
        (_, from) => from.filter(|f| !f.is_empty()),
    }
}

/// Every stage `target` needs, itself included, in file order.
fn reachable_from(planned: &[Planned], target: usize) -> Vec<usize> {
    let mut seen = vec![false; planned.len()];
    let mut todo = vec![target];
    while let Some(index) = todo.pop() {
        if std::mem::replace(&mut seen[index], true) {
            continue;
        }
        if let Base::Stage(base) = planned[index].base {
            todo.push(base);
        }
        for (dep, _) in &planned[index].deps {
            if let Dep::Stage(dep) = dep {
                todo.push(*dep);
            }
        }
    }
    (0..planned.len()).filter(|&i| seen[i]).collect()
}

/// Rejects a stage that depends on itself, naming the instruction that closes the
/// cycle, as BuildKit's `validateCircularDependency` does.
fn check_cycles(planned: &[Planned]) -> Result<(), LowerError> {
    fn visit(
        planned: &[Planned],
        index: usize,
        visited: &mut [bool],
        path: &mut [bool],
    ) -> Option<Place> {
        if std::mem::replace(&mut visited[index], true) {
            return None;
        }
        path[index] = true;
        let base = match planned[index].base {
            Base::Stage(b) => Some((b, planned[index].at.clone())),
            _ => None,
        };
        let deps = planned[index].deps.iter().filter_map(|(d, at)| match d {
            Dep::Stage(s) => Some((*s, at.clone())),
            Dep::Image(_) => None,
        });
        for (dep, at) in base.into_iter().chain(deps) {
            if path[dep] {
                return Some(at);
            }
            if visit(planned, dep, visited, path).is_some() {
                return Some(at);
            }
        }
        path[index] = false;
        None
    }
    let mut visited = vec![false; planned.len()];
    let mut path = vec![false; planned.len()];
    for index in 0..planned.len() {
        if let Some(at) = visit(planned, index, &mut visited, &mut path) {
            return Err(LowerError::Circular {
                at,
                stage: planned[index].display.clone(),
            });
        }
    }
    Ok(())
}

/// Resolves an image and adds its source vertex (or scratch, for an image without
/// layers).
async fn resolve_image(
    builder: &mut Builder<'_>,
    resolver: &impl ImageResolver,
    name: &str,
    stage: &Planned<'_>,
    at: &Place,
) -> Result<BaseImage, LowerError> {
    let reference: ImageRef = name.parse().map_err(|source| LowerError::Reference {
        at: at.clone(),
        reference: name.to_owned(),
        source,
    })?;
    let resolved = resolver
        .resolve(&reference, &stage.platform)
        .await
        .map_err(|source| LowerError::Resolve {
            at: at.clone(),
            reference: name.to_owned(),
            source,
        })?;
    let config = resolved.config;
    let empty = config.rootfs.diff_ids.is_empty() && config.history.iter().all(|h| h.empty_layer);
    let vertex = if empty {
        builder.scratch()
    } else {
        let pinned = resolved.reference.with_digest(resolved.manifest.clone());
        builder.graph.add(
            Op::Source(SourceOp::Image {
                reference: resolved.reference.to_string(),
                manifest: resolved.manifest,
                platform: stage.platform.to_string(),
            }),
            Vec::new(),
            OpMetadata {
                name: match (&stage.base, at == &stage.at) {
                    (Base::Image(_), true) => stage::numbered(
                        &stage.display,
                        1,
                        1 + own_steps(&stage.instructions),
                        false,
                        &format!("FROM {pinned}"),
                    ),
                    _ => format!("FROM {pinned}"),
                },
                stage: stage.name.clone(),
                line: Some(at.line),
                ignore_cache: builder.options.no_cache,
            },
        )
    };
    Ok(BaseImage { vertex, config })
}

/// The state a stage starts from: its base's filesystem and configuration, the step
/// environment made from the configuration's Env, and the base's WORKDIR and USER.
fn start_stage(
    builder: &mut Builder<'_>,
    stage: &Planned<'_>,
    states: &[Option<StageState>],
    image: Option<&BaseImage>,
) -> Result<StageState, LowerError> {
    let own_steps = own_steps(&stage.instructions[stage.triggers..]) + stage.triggers;
    let ignore_cache = builder.options.no_cache
        || stage.name.as_ref().is_some_and(|n| {
            builder
                .options
                .no_cache_filter
                .iter()
                .any(|f| f.eq_ignore_ascii_case(n))
        });
    let mut state = match (&stage.base, image) {
        (Base::Stage(base), _) => {
            let mut state = states[*base]
                .clone()
                .expect("a base stage is lowered before the stages built on it");
            state.image.config.on_build = None;
            // A stage built on another one keeps the values of its ARGs in the step
            // environment (they live in the filesystem state, as in BuildKit), but not
            // their declarations: its RUN history lists only ARGs it declares itself.
            state.args = Vec::new();
            state
        }
        (_, Some(image)) => {
            let mut config = image.config.clone();
            config.created = None;
            // The image's triggers fire here (they are among the instructions) and do
            // not carry over.
            config.config.on_build = None;
            StageState {
                name: None,
                display: String::new(),
                fs: image.vertex,
                env: Vars::default(),
                args: Vec::new(),
                layers: Vec::new(),
                base: Some(image.vertex),
                inherited_history: config.history.len(),
                step: 0,
                total: 0,
                in_trigger: false,
                ignore_cache,
                cmd_set: false,
                image: config,
            }
        }
        (_, None) => StageState {
            name: None,
            display: String::new(),
            fs: builder.scratch(),
            env: Vars::default(),
            args: Vec::new(),
            layers: Vec::new(),
            base: None,
            inherited_history: 0,
            step: 0,
            total: 0,
            in_trigger: false,
            ignore_cache,
            cmd_set: false,
            image: ImageConfig::for_platform(&stage.platform),
        },
    };
    state.name = stage.name.clone();
    state.display = stage.display.clone();
    state.step = 0;
    state.total = own_steps + usize::from(matches!(stage.base, Base::Image(_)));
    state.in_trigger = false;
    state.ignore_cache = ignore_cache;
    state.cmd_set = false;
    if let Base::Image(_) = stage.base {
        // The FROM step is numbered, as BuildKit counts it.
        state.step_name("");
    }
    // Docker records the working directory even when no WORKDIR set one.
    if state
        .image
        .config
        .working_dir
        .as_deref()
        .is_none_or(str::is_empty)
    {
        state.image.config.working_dir = Some("/".to_owned());
    }
    if state.image.config.env_var("PATH").is_none() {
        state.image.config.set_env_var(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    }
    for entry in state.image.config.env.clone().unwrap_or_default() {
        let (k, v) = entry.split_once('=').unwrap_or((&entry, ""));
        state.env.set(k, v);
    }
    Ok(state)
}

/// The instructions that are numbered steps (triggers included when fired).
fn own_steps(instructions: &[Instruction]) -> usize {
    instructions
        .iter()
        .filter(|i| {
            matches!(
                i.command,
                Command::Run(_) | Command::Copy(_) | Command::Add(_) | Command::Workdir(_)
            )
        })
        .count()
}

/// Lowers one instruction of stage `index`.
fn dispatch(
    builder: &mut Builder<'_>,
    state: &mut StageState,
    index: usize,
    instruction: &Instruction,
) -> Result<(), LowerError> {
    let at = builder.place(instruction.span.line);
    match &instruction.command {
        Command::Run(run) => run::lower_run(builder, state, index, instruction, run, &at),
        Command::Copy(copy) => copy::lower_copy(builder, state, index, instruction, copy, &at),
        Command::Add(add) => copy::lower_add(builder, state, instruction, add, &at),
        Command::Workdir(dir) => config::lower_workdir(builder, state, instruction, dir, &at),
        command => config::lower_config(builder, state, command, &at),
    }
}

/// Expands with the stage's step environment.
fn expand_in(
    builder: &Builder<'_>,
    state: &StageState,
    word: &str,
    at: &Place,
) -> Result<String, LowerError> {
    expand(&builder.lex, word, &state.env as &dyn Env, at)
}
