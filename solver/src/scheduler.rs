//! The scheduler: solves the vertices a build needs, dependencies first, independent
//! ones at the same time, each one either found in the cache or run by the worker.
//!
//! For each vertex, once its inputs are solved: the content checksums of what it reads
//! are asked of the worker, the cache key is computed, the worker is asked whether it
//! has a result for that key, and only on a miss is the step executed. A worker is
//! expected to make results cheap to hand around (a cached layer need not be unpacked
//! until a step actually runs on it).
//!
//! When a step fails, no further step starts and steps still running are cancelled by
//! dropping their futures: workers must clean up when that happens.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_image::Digest;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;

use crate::graph::{BuildGraph, Vertex, VertexId};
use crate::key::{CacheKey, cache_key};
use crate::op::Selector;

/// What the solver needs from the machinery that runs steps and keeps results.
pub trait Worker: Send + Sync + 'static {
    /// A handle on a solved step's filesystem.
    type Ref: Clone + Send + Sync + 'static;
    /// What can go wrong.
    type Error: std::error::Error + Send + Sync + 'static;

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

    /// Runs a step over its solved inputs and records the result under `key`. `id`
    /// identifies the step in progress events, so output can be shown beside it.
    fn execute(
        &self,
        id: VertexId,
        vertex: &Vertex,
        key: &CacheKey,
        inputs: Vec<Self::Ref>,
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

        loop {
            while running.len() < jobs {
                let Some(i) = ready.pop() else { break };
                let id = order[i];
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
        emit(StepStatus::Cached);
        return Ok(Solved {
            key,
            result,
            cached: true,
        });
    }

    emit(StepStatus::Started);
    let started = Instant::now();
    let results = inputs.into_iter().map(|i| i.result).collect();
    let result = worker
        .execute(id, vertex, &key, results)
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
