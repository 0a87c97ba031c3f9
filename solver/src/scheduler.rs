//! The scheduler: solves the vertices a build needs, dependencies first, independent
//! ones at the same time, each one either found in the cache or run by the worker.
//!
//! For each vertex, once its inputs are solved: the content checksums of what it reads
//! are asked of the worker, the cache key is computed, the worker is asked whether it
//! has a result for that key, and only on a miss is the step executed. A worker is
//! expected to make results cheap to hand around (a cached layer need not be unpacked
//! until a step actually runs on it).
//!
//! A step that only copies into its input 0 (`COPY --from=stage src /dest`) may start
//! early: once what it copies from is solved, and an earlier state of input 0 is (the
//! stage's base below a run of such copies), the worker is asked to
//! [`prepare`](Worker::prepare) it over that earlier state. When its turn comes and its
//! key misses the cache, the prepared work is handed to [`execute`](Worker::execute),
//! which uses it only if the states in between provably make no difference. So copies
//! from stages that finish at different times are done as each stage finishes, not one
//! after another once the last has. Only copies from steps this build ran are prepared:
//! a copy from a cached step usually hits the cache itself.
//!
//! When a step fails, no further step starts and steps still running are cancelled by
//! dropping their futures: workers must clean up when that happens.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_image::Digest;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::{JoinHandle, JoinSet};

use crate::graph::{BuildGraph, Vertex, VertexId};
use crate::key::{CacheKey, cache_key};
use crate::op::{FileAction, Op, Selector};

/// What the solver needs from the machinery that runs steps and keeps results.
pub trait Worker: Send + Sync + 'static {
    /// A handle on a solved step's filesystem.
    type Ref: Clone + Send + Sync + 'static;
    /// What can go wrong.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Work done ahead for a step by [`prepare`](Worker::prepare).
    type Prepared: Send + 'static;

    /// The content checksum of a selection of files in a solved input: it must cover
    /// the files' paths, contents, types, modes, owners, link targets and xattrs, and
    /// nothing else (never mtimes).
    fn checksum(
        &self,
        input: &Self::Ref,
        selector: &Selector,
    ) -> impl Future<Output = Result<Digest, Self::Error>> + Send;

    /// The cached result for a key, if there is one.
    fn lookup(
        &self,
        vertex: &Vertex,
        key: &CacheKey,
    ) -> impl Future<Output = Result<Option<Self::Ref>, Self::Error>> + Send;

    /// Starts a copy step before its input 0 is solved: `inputs[0]` is an earlier state
    /// of that input (every step in between is a copy too), the other inputs are the
    /// solved ones. Returns what [`execute`](Worker::execute) may use, or `None` when the
    /// worker cannot or would rather not; failing is never an error here, as the step
    /// still runs in its turn.
    fn prepare(
        &self,
        id: VertexId,
        vertex: &Vertex,
        inputs: Vec<Self::Ref>,
    ) -> impl Future<Output = Option<Self::Prepared>> + Send;

    /// Runs a step over its solved inputs and records the result under `key`. `id`
    /// identifies the step in progress events, so output can be shown beside it.
    /// `prepared` is what [`prepare`](Worker::prepare) made for it, if anything: the
    /// worker uses it only when the result is exactly what running the step would give.
    fn execute(
        &self,
        id: VertexId,
        vertex: &Vertex,
        key: &CacheKey,
        inputs: Vec<Self::Ref>,
        prepared: Option<Self::Prepared>,
    ) -> impl Future<Output = Result<Self::Ref, Self::Error>> + Send;
}

/// How a solve runs.
#[derive(Clone, Debug)]
pub struct SolveOptions {
    /// How many steps may run at once (at least 1).
    pub jobs: usize,
    /// Where progress events go, if anywhere.
    pub events: Option<UnboundedSender<SolveEvent>>,
}

impl Default for SolveOptions {
    fn default() -> SolveOptions {
        SolveOptions {
            jobs: std::thread::available_parallelism().map_or(4, |n| n.get().max(4)),
            events: None,
        }
    }
}

/// Something that happened to a vertex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SolveEvent {
    /// The vertex.
    pub vertex: VertexId,
    /// What happened.
    pub status: StepStatus,
}

/// A vertex's progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepStatus {
    /// Its result was found in the cache.
    Cached,
    /// The worker started running it.
    Started,
    /// The worker finished running it.
    Done {
        /// How long it ran.
        duration: Duration,
    },
    /// It failed.
    Failed,
}

/// A solved vertex.
#[derive(Clone, Debug)]
pub struct Solved<R> {
    /// Its cache key.
    pub key: CacheKey,
    /// Its result.
    pub result: R,
    /// Whether the result came from the cache.
    pub cached: bool,
}

/// Why a solve failed.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    /// A step failed; `line` is its Dockerfile line when it has one.
    #[error("{name}{}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Step {
        /// The step's display name.
        name: String,
        /// Its Dockerfile line.
        line: Option<usize>,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A step's task ended without a result (it panicked).
    #[error("step {name} stopped unexpectedly")]
    Aborted {
        /// The step's display name.
        name: String,
    },
}

/// Solves build graphs with a worker.
pub struct Solver<W> {
    worker: Arc<W>,
    options: SolveOptions,
}

impl<W: Worker> Solver<W> {
    /// A solver over `worker`.
    pub fn new(worker: Arc<W>, options: SolveOptions) -> Solver<W> {
        Solver { worker, options }
    }

    /// Solves everything the targets need; returns the targets' results in order.
    pub async fn solve(
        &self,
        graph: Arc<BuildGraph>,
        targets: &[VertexId],
    ) -> Result<Vec<Solved<W::Ref>>, SolveError> {
        let order = graph.required(targets);
        let mut slot = vec![usize::MAX; graph.len()];
        for (i, id) in order.iter().enumerate() {
            slot[id.index()] = i;
        }
        let mut waiting: Vec<usize> = order
            .iter()
            .map(|id| graph.vertex(*id).inputs.len())
            .collect();
        let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); order.len()];
        for (i, id) in order.iter().enumerate() {
            for input in &graph.vertex(*id).inputs {
                consumers[slot[input.index()]].push(i);
            }
        }
        let mut solved: Vec<Option<Solved<W::Ref>>> = vec![None; order.len()];
        let mut ready: Vec<usize> = (0..order.len()).filter(|&i| waiting[i] == 0).collect();
        ready.reverse();
        let mut running = JoinSet::new();
        let jobs = self.options.jobs.max(1);
        let mut early = Early::new(&graph, &order);

        loop {
            early.start(self, &graph, &order, &slot, &solved);
            while running.len() < jobs {
                let Some(i) = ready.pop() else { break };
                let id = order[i];
                let prepared = early.take(i);
                let inputs: Vec<Solved<W::Ref>> = graph
                    .vertex(id)
                    .inputs
                    .iter()
                    .map(|input| {
                        solved[slot[input.index()]]
                            .clone()
                            .expect("inputs are solved before their consumers start")
                    })
                    .collect();
                let task = solve_one(
                    Arc::clone(&self.worker),
                    Arc::clone(&graph),
                    id,
                    inputs,
                    prepared,
                    self.options.events.clone(),
                );
                running.spawn(async move { (i, task.await) });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let (i, outcome) = match joined {
                Ok(done) => done,
                Err(_) => {
                    running.abort_all();
                    early.abort_all();
                    let name = first_running_name(&graph, &order, &solved);
                    return Err(SolveError::Aborted { name });
                }
            };
            match outcome {
                Ok(done) => {
                    solved[i] = Some(done);
                    for &consumer in &consumers[i] {
                        waiting[consumer] -= 1;
                        if waiting[consumer] == 0 {
                            ready.push(consumer);
                        }
                    }
                    // Keep starting the earliest-declared steps first.
                    ready.sort_unstable_by(|a, b| b.cmp(a));
                }
                Err(err) => {
                    running.abort_all();
                    early.abort_all();
                    while running.join_next().await.is_some() {}
                    return Err(err);
                }
            }
        }
        Ok(targets
            .iter()
            .map(|t| {
                solved[slot[t.index()]]
                    .clone()
                    .expect("every required vertex was solved")
            })
            .collect())
    }
}

fn first_running_name<R>(
    graph: &BuildGraph,
    order: &[VertexId],
    solved: &[Option<Solved<R>>],
) -> String {
    order
        .iter()
        .zip(solved)
        .find(|(_, s)| s.is_none())
        .map(|(id, _)| graph.vertex(*id).meta.name.clone())
        .unwrap_or_default()
}

async fn solve_one<W: Worker>(
    worker: Arc<W>,
    graph: Arc<BuildGraph>,
    id: VertexId,
    inputs: Vec<Solved<W::Ref>>,
    prepared: Option<JoinHandle<Option<W::Prepared>>>,
    events: Option<UnboundedSender<SolveEvent>>,
) -> Result<Solved<W::Ref>, SolveError> {
    let vertex = graph.vertex(id);
    let emit = |status: StepStatus| {
        if let Some(tx) = &events {
            let _ = tx.send(SolveEvent { vertex: id, status });
        }
    };
    let fail = |err: W::Error| {
        emit(StepStatus::Failed);
        SolveError::Step {
            name: vertex.meta.name.clone(),
            line: vertex.meta.line,
            source: Box::new(err),
        }
    };

    let mut checksums = Vec::new();
    for selector in vertex.op.selectors() {
        let input = &inputs[selector.input];
        checksums.push(
            worker
                .checksum(&input.result, &selector)
                .await
                .map_err(fail)?,
        );
    }
    let input_keys: Vec<CacheKey> = inputs.iter().map(|i| i.key.clone()).collect();
    let key = cache_key(vertex.op_digest(), &input_keys, &checksums);

    if !vertex.meta.ignore_cache
        && let Some(result) = worker.lookup(vertex, &key).await.map_err(fail)?
    {
        if let Some(prepared) = prepared {
            prepared.abort();
        }
        emit(StepStatus::Cached);
        return Ok(Solved {
            key,
            result,
            cached: true,
        });
    }

    let prepared = match prepared {
        Some(handle) => handle.await.ok().flatten(),
        None => None,
    };
    emit(StepStatus::Started);
    let started = Instant::now();
    let results = inputs.into_iter().map(|i| i.result).collect();
    let result = worker
        .execute(id, vertex, &key, results, prepared)
        .await
        .map_err(fail)?;
    emit(StepStatus::Done {
        duration: started.elapsed(),
    });
    Ok(Solved {
        key,
        result,
        cached: false,
    })
}

/// The copy steps started early (see the module documentation), by position in the
/// solve order.
struct Early<P> {
    /// Whether the step only copies into its input 0 from its other inputs.
    copies: Vec<bool>,
    /// Whether it was considered already (started, or found not worth it).
    tried: Vec<bool>,
    /// Its preparation, until the step starts.
    handles: Vec<Option<JoinHandle<Option<P>>>>,
}

impl<P: Send + 'static> Early<P> {
    fn new(graph: &BuildGraph, order: &[VertexId]) -> Early<P> {
        let copies: Vec<bool> = order
            .iter()
            .map(|id| only_copies_into_input_0(graph.vertex(*id)))
            .collect();
        Early {
            tried: copies.iter().map(|c| !c).collect(),
            handles: order.iter().map(|_| None).collect(),
            copies,
        }
    }

    /// Starts preparing every copy that can be from now on.
    fn start<W: Worker<Prepared = P>>(
        &mut self,
        solver: &Solver<W>,
        graph: &Arc<BuildGraph>,
        order: &[VertexId],
        slot: &[usize],
        solved: &[Option<Solved<W::Ref>>],
    ) {
        for (i, &id) in order.iter().enumerate() {
            if self.tried[i] {
                continue;
            }
            let vertex = graph.vertex(id);
            let at = |id: &VertexId| slot[id.index()];
            if solved[at(&vertex.inputs[0])].is_some() {
                // Its turn is coming anyway.
                self.tried[i] = true;
                continue;
            }
            let mut sources = Vec::new();
            for input in &vertex.inputs[1..] {
                match &solved[at(input)] {
                    None => break,
                    Some(s) if s.cached || matches!(graph.vertex(*input).op, Op::Source(_)) => {
                        self.tried[i] = true;
                        break;
                    }
                    Some(s) => sources.push(s.result.clone()),
                }
            }
            if self.tried[i] || sources.len() + 1 < vertex.inputs.len() {
                continue;
            }
            // The nearest solved state below a run of copies into input 0.
            let mut below = vertex.inputs[0];
            let base = loop {
                if let Some(s) = &solved[at(&below)] {
                    break Some(s.result.clone());
                }
                if !self.copies[at(&below)] {
                    break None;
                }
                below = graph.vertex(below).inputs[0];
            };
            let Some(base) = base else { continue };
            self.tried[i] = true;
            let mut inputs = vec![base];
            inputs.extend(sources);
            let worker = Arc::clone(&solver.worker);
            let graph = Arc::clone(graph);
            self.handles[i] = Some(tokio::spawn(async move {
                worker.prepare(id, graph.vertex(id), inputs).await
            }));
        }
    }

    fn take(&mut self, i: usize) -> Option<JoinHandle<Option<P>>> {
        self.tried[i] = true;
        self.handles[i].take()
    }

    fn abort_all(&mut self) {
        for handle in self.handles.iter_mut().filter_map(Option::take) {
            handle.abort();
        }
    }
}

/// Whether a step only copies from its other inputs into its input 0.
fn only_copies_into_input_0(vertex: &Vertex) -> bool {
    let Op::File(file) = &vertex.op else {
        return false;
    };
    file.has_base
        && vertex.inputs.len() > 1
        && !file.actions.is_empty()
        && file
            .actions
            .iter()
            .all(|a| matches!(a, FileAction::Copy(copy) if copy.input != 0))
}
