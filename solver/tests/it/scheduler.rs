//! The scheduler against a fake worker that records what it runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_image::Digest;
use kiln_solver::op::{CopyAction, ExecOp, FileAction, FileOp, MergeOp, NetworkMode, SourceOp};
use kiln_solver::{
    BuildGraph, CacheKey, Op, OpMetadata, Selector, SolveError, SolveOptions, Solver, StepStatus,
    Vertex, VertexId, Worker,
};

/// Results are strings describing how they were made; files in the "context" are a map
/// the test edits between builds.
#[derive(Default)]
struct FakeWorker {
    cache: Mutex<HashMap<CacheKey, String>>,
    context: Mutex<HashMap<String, String>>,
    executed: Mutex<Vec<String>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    delay: Duration,
    /// Copies prepared ahead, as `name over base`.
    prepared: Mutex<Vec<String>>,
    /// Copies whose execution was handed what was prepared.
    used_prepared: Mutex<Vec<String>>,
    /// Signalled on each preparation; `RUN wait-for-prepare` waits for it.
    on_prepare: tokio::sync::Notify,
}

#[derive(Debug, thiserror::Error)]
#[error("command exited with code 1")]
struct StepFailed;

impl Worker for FakeWorker {
    type Ref = String;
    type Error = StepFailed;
    type Prepared = String;

    async fn checksum(&self, input: &String, selector: &Selector) -> Result<Digest, StepFailed> {
        let context = self.context.lock().unwrap();
        let mut text = input.clone();
        for path in &selector.paths {
            text.push_str(&format!(
                "|{path}={}",
                context.get(path).cloned().unwrap_or_default()
            ));
        }
        Ok(Digest::of(text.as_bytes()))
    }

    async fn lookup(&self, _: &Vertex, key: &CacheKey) -> Result<Option<String>, StepFailed> {
        Ok(self.cache.lock().unwrap().get(key).cloned())
    }

    async fn prepare(&self, _id: VertexId, vertex: &Vertex, inputs: Vec<String>) -> Option<String> {
        let what = format!("{} over {}", vertex.meta.name, inputs[0]);
        self.prepared.lock().unwrap().push(what.clone());
        self.on_prepare.notify_one();
        Some(what)
    }

    async fn execute(
        &self,
        _id: VertexId,
        vertex: &Vertex,
        key: &CacheKey,
        inputs: Vec<String>,
        prepared: Option<String>,
    ) -> Result<String, StepFailed> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        if let Op::Exec(exec) = &vertex.op {
            if exec.args == ["false"] {
                return Err(StepFailed);
            }
            if exec.args == ["wait-for-prepare"] {
                // Bounded, so that a scheduler that never prepares fails the test's
                // assertions instead of hanging it.
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), self.on_prepare.notified()).await;
            }
        }
        if let Some(prepared) = prepared {
            assert!(prepared.starts_with(&vertex.meta.name), "{prepared}");
            self.used_prepared
                .lock()
                .unwrap()
                .push(vertex.meta.name.clone());
        }
        self.executed.lock().unwrap().push(vertex.meta.name.clone());
        let result = format!("{}({})", vertex.meta.name, inputs.join(","));
        self.cache
            .lock()
            .unwrap()
            .insert(key.clone(), result.clone());
        Ok(result)
    }
}

impl FakeWorker {
    fn take_executed(&self) -> Vec<String> {
        let mut names = std::mem::take(&mut *self.executed.lock().unwrap());
        names.sort();
        names
    }
}

fn meta(name: &str) -> OpMetadata {
    OpMetadata {
        name: name.into(),
        line: Some(1),
        ..OpMetadata::default()
    }
}

fn run(args: &[&str]) -> Op {
    Op::Exec(ExecOp {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        cwd: "/".into(),
        user: String::new(),
        network: NetworkMode::Default,
        insecure: false,
        mounts: vec![],
        hostname: "kiln".into(),
        proxy_env: Vec::new(),
    })
}

fn copy(path: &str) -> Op {
    copy_to(path, "/")
}

fn copy_to(path: &str, dest: &str) -> Op {
    Op::File(FileOp {
        has_base: true,
        actions: vec![FileAction::Copy(CopyAction {
            input: 1,
            sources: vec![path.into()],
            dest: dest.into(),
            owner: None,
            mode: None,
            allow_wildcard: false,
            allow_empty_wildcard: false,
            dir_contents_only: true,
            unpack: false,
            parents: false,
            excludes: vec![],
        })],
    })
}

/// base → RUN a → COPY x → RUN b ; and a second branch COPY y → RUN c ; merged.
fn graph() -> (Arc<BuildGraph>, VertexId) {
    let mut g = BuildGraph::new();
    let base = g.add(Op::Source(SourceOp::Scratch), vec![], meta("base"));
    let ctx = g.add(
        Op::Source(SourceOp::Local {
            name: "context".into(),
            excludes: vec![],
        }),
        vec![],
        meta("context"),
    );
    let a = g.add(run(&["a"]), vec![base], meta("run a"));
    let cx = g.add(copy("x"), vec![a, ctx], meta("copy x"));
    let b = g.add(run(&["b"]), vec![cx], meta("run b"));
    let cy = g.add(copy("y"), vec![base, ctx], meta("copy y"));
    let c = g.add(run(&["c"]), vec![cy], meta("run c"));
    let out = g.add(Op::Merge(MergeOp { inputs: 2 }), vec![b, c], meta("merge"));
    (Arc::new(g), out)
}

fn solver(worker: &Arc<FakeWorker>) -> Solver<FakeWorker> {
    Solver::new(Arc::clone(worker), SolveOptions::default())
}

#[tokio::test]
async fn a_second_build_runs_nothing_and_gives_the_same_result() {
    let worker = Arc::new(FakeWorker::default());
    let (g, out) = graph();
    let first = solver(&worker).solve(Arc::clone(&g), &[out]).await.unwrap();
    assert_eq!(worker.take_executed().len(), 8);
    let second = solver(&worker).solve(g, &[out]).await.unwrap();
    assert!(worker.take_executed().is_empty());
    assert!(second[0].cached);
    assert_eq!(first[0].key, second[0].key);
    assert_eq!(first[0].result, second[0].result);
}

#[tokio::test]
async fn a_changed_file_reruns_only_the_copy_that_reads_it_and_what_follows() {
    let worker = Arc::new(FakeWorker::default());
    worker
        .context
        .lock()
        .unwrap()
        .insert("x".into(), "1".into());
    let (g, out) = graph();
    solver(&worker).solve(Arc::clone(&g), &[out]).await.unwrap();
    worker.take_executed();

    worker
        .context
        .lock()
        .unwrap()
        .insert("x".into(), "2".into());
    solver(&worker).solve(Arc::clone(&g), &[out]).await.unwrap();
    assert_eq!(worker.take_executed(), ["copy x", "merge", "run b"]);

    // A file no step reads changes nothing.
    worker
        .context
        .lock()
        .unwrap()
        .insert("unread".into(), "1".into());
    solver(&worker).solve(g, &[out]).await.unwrap();
    assert!(worker.take_executed().is_empty());
}

#[tokio::test]
async fn only_what_the_target_needs_is_solved() {
    let worker = Arc::new(FakeWorker::default());
    let mut g = BuildGraph::new();
    let base = g.add(Op::Source(SourceOp::Scratch), vec![], meta("base"));
    let used = g.add(run(&["used"]), vec![base], meta("used"));
    g.add(run(&["unused"]), vec![base], meta("unused"));
    solver(&worker).solve(Arc::new(g), &[used]).await.unwrap();
    assert_eq!(worker.take_executed(), ["base", "used"]);
}

#[tokio::test]
async fn independent_steps_run_at_the_same_time_up_to_the_job_limit() {
    let worker = Arc::new(FakeWorker {
        delay: Duration::from_millis(200),
        ..FakeWorker::default()
    });
    let mut g = BuildGraph::new();
    let base = g.add(Op::Source(SourceOp::Scratch), vec![], meta("base"));
    let steps: Vec<VertexId> = (0..4)
        .map(|i| {
            g.add(
                run(&["sleep", &i.to_string()]),
                vec![base],
                meta(&format!("s{i}")),
            )
        })
        .collect();
    let out = g.add(Op::Merge(MergeOp { inputs: 4 }), steps, meta("merge"));
    let g = Arc::new(g);

    let started = std::time::Instant::now();
    solver(&worker).solve(Arc::clone(&g), &[out]).await.unwrap();
    // base, the four steps side by side, merge: three rounds of 200 ms, not six.
    assert!(
        started.elapsed() < Duration::from_millis(1100),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(worker.max_running.load(Ordering::SeqCst), 4);

    let worker = Arc::new(FakeWorker {
        delay: Duration::from_millis(10),
        ..FakeWorker::default()
    });
    let options = SolveOptions {
        jobs: 2,
        events: None,
    };
    Solver::new(Arc::clone(&worker), options)
        .solve(g, &[out])
        .await
        .unwrap();
    assert_eq!(worker.max_running.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_failing_step_is_named_with_its_line_and_stops_the_build() {
    let worker = Arc::new(FakeWorker::default());
    let mut g = BuildGraph::new();
    let base = g.add(Op::Source(SourceOp::Scratch), vec![], meta("base"));
    let bad = g.add(
        run(&["false"]),
        vec![base],
        OpMetadata {
            name: "[2/3] RUN false".into(),
            line: Some(7),
            ..OpMetadata::default()
        },
    );
    let after = g.add(run(&["after"]), vec![bad], meta("after"));
    let err = solver(&worker)
        .solve(Arc::new(g), &[after])
        .await
        .unwrap_err();
    assert!(matches!(err, SolveError::Step { line: Some(7), .. }));
    assert_eq!(err.to_string(), "[2/3] RUN false (line 7)");
    assert_eq!(worker.take_executed(), ["base"]);
}

#[tokio::test]
async fn ignore_cache_reruns_the_step_and_events_tell_what_happened() {
    let worker = Arc::new(FakeWorker::default());
    let mut g = BuildGraph::new();
    let base = g.add(Op::Source(SourceOp::Scratch), vec![], meta("base"));
    let step = g.add(run(&["x"]), vec![base], meta("x"));
    let g = Arc::new(g);
    solver(&worker)
        .solve(Arc::clone(&g), &[step])
        .await
        .unwrap();
    worker.take_executed();

    let mut g2 = BuildGraph::new();
    let base2 = g2.add(Op::Source(SourceOp::Scratch), vec![], meta("base"));
    let step2 = g2.add(
        run(&["x"]),
        vec![base2],
        OpMetadata {
            ignore_cache: true,
            ..meta("x")
        },
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let options = SolveOptions {
        jobs: 4,
        events: Some(tx),
    };
    Solver::new(Arc::clone(&worker), options)
        .solve(Arc::new(g2), &[step2])
        .await
        .unwrap();
    assert_eq!(worker.take_executed(), ["x"]);
    let mut statuses = Vec::new();
    while let Ok(event) = rx.try_recv() {
        statuses.push((event.vertex, event.status));
    }
    assert_eq!(statuses[0], (base2, StepStatus::Cached));
    assert_eq!(statuses[1], (step2, StepStatus::Started));
    assert!(matches!(statuses[2], (v, StepStatus::Done { .. }) if v == step2));
}

/// A final stage copying from two stages, `a` finishing only once something was
/// prepared: FROM base; COPY --from=a; COPY --from=b; RUN last.
fn two_stage_copies() -> (Arc<BuildGraph>, VertexId) {
    let mut g = BuildGraph::new();
    let base = g.add(Op::Source(SourceOp::Scratch), vec![], meta("base"));
    let a = g.add(run(&["wait-for-prepare"]), vec![base], meta("run a"));
    let b = g.add(run(&["b"]), vec![base], meta("run b"));
    let ca = g.add(copy_to("/out", "/a"), vec![base, a], meta("copy a"));
    let cb = g.add(copy_to("/out", "/b"), vec![ca, b], meta("copy b"));
    let last = g.add(run(&["last"]), vec![cb], meta("last"));
    (Arc::new(g), last)
}

#[tokio::test]
async fn a_copy_from_a_stage_that_finished_first_is_prepared_before_its_turn() {
    let worker = Arc::new(FakeWorker::default());
    let (g, last) = two_stage_copies();
    let first = solver(&worker)
        .solve(Arc::clone(&g), &[last])
        .await
        .unwrap();
    // `copy b` was prepared over the stage's base while `run a` still ran, and its
    // execution was handed the preparation; `copy a` had its input at once.
    assert_eq!(*worker.prepared.lock().unwrap(), ["copy b over base()"]);
    assert_eq!(*worker.used_prepared.lock().unwrap(), ["copy b"]);
    assert_eq!(
        first[0].result,
        "last(copy b(copy a(base(),run a(base())),run b(base())))"
    );

    // Nothing is prepared for steps whose sources came from the cache.
    worker.prepared.lock().unwrap().clear();
    let second = solver(&worker).solve(g, &[last]).await.unwrap();
    assert!(second[0].cached);
    assert!(worker.prepared.lock().unwrap().is_empty());
}

#[tokio::test]
async fn copies_from_the_context_are_not_prepared() {
    let worker = Arc::new(FakeWorker::default());
    let (g, out) = graph();
    solver(&worker).solve(g, &[out]).await.unwrap();
    assert!(worker.prepared.lock().unwrap().is_empty());
}
