//! Lowering: the ops, configuration and history produced for each instruction, ARG
//! scoping, `--target` pruning, deduplication, ONBUILD triggers and errors.

use std::collections::BTreeMap;
use std::sync::Mutex;

use kiln_image::config::{ContainerConfig, History, RootFs};
use kiln_image::{Digest, ImageConfig, ImageRef, Platform};
use kiln_solver::lower::{
    ImageResolver, LowerError, LowerOptions, Lowered, ResolveError, ResolvedImage, lower,
};
use kiln_solver::op::{
    CacheSharing, Chmod, CopyAction, ExecMount, ExecOp, FileAction, NetworkMode, Owner, Principal,
};
use kiln_solver::{Op, SourceOp, VertexId};

/// Serves `busybox` (Env, WorkingDir, one layer) and `onbuild` (busybox with two ONBUILD
/// triggers), and records every lookup.
#[derive(Default)]
struct FakeResolver {
    asked: Mutex<Vec<String>>,
}

fn base_config(env: &[&str], workdir: Option<&str>, on_build: Option<Vec<String>>) -> ImageConfig {
    ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        created: Some("2020-01-01T00:00:00Z".into()),
        config: ContainerConfig {
            env: Some(env.iter().map(|s| s.to_string()).collect()),
            working_dir: workdir.map(str::to_owned),
            cmd: Some(vec!["sh".into()]),
            on_build,
            ..ContainerConfig::default()
        },
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![Digest::of(b"busybox layer")],
        },
        history: vec![History {
            created_by: Some("/bin/sh -c #(nop) ADD file:abc in /".into()),
            ..History::default()
        }],
        ..ImageConfig::default()
    }
}

impl ImageResolver for FakeResolver {
    async fn resolve(
        &self,
        reference: &ImageRef,
        _platform: &Platform,
    ) -> Result<ResolvedImage, ResolveError> {
        self.asked.lock().unwrap().push(reference.to_string());
        let config = match reference.path() {
            "library/busybox" => {
                base_config(&["PATH=/bin:/usr/bin", "HOME=/root"], Some("/home"), None)
            }
            "library/onbuild" => base_config(
                &["PATH=/bin"],
                None,
                Some(vec!["RUN echo fired".into(), "ENV FIRED=yes".into()]),
            ),
            _ => {
                return Err(ResolveError::NotFound {
                    reference: reference.to_string(),
                });
            }
        };
        Ok(ResolvedImage {
            reference: reference.clone(),
            manifest: Digest::of(reference.to_string().as_bytes()),
            config,
        })
    }
}

fn options() -> LowerOptions {
    LowerOptions {
        target_platform: "linux/amd64".parse().unwrap(),
        build_platform: "linux/amd64".parse().unwrap(),
        epoch: Some(1_700_000_000),
        ..LowerOptions::default()
    }
}

async fn lower_with(
    text: &str,
    options: &LowerOptions,
    resolver: &FakeResolver,
) -> Result<Lowered, LowerError> {
    let dockerfile = kiln_parser::parse(text).expect("test Dockerfiles parse");
    lower(&dockerfile, text, options, resolver).await
}

async fn lowered(text: &str) -> Lowered {
    lower_with(text, &options(), &FakeResolver::default())
        .await
        .unwrap()
}

fn exec(l: &Lowered, id: VertexId) -> &ExecOp {
    match &l.graph.vertex(id).op {
        Op::Exec(e) => e,
        other => panic!("expected an exec op, got {other:?}"),
    }
}

fn copies(l: &Lowered, id: VertexId) -> Vec<&CopyAction> {
    match &l.graph.vertex(id).op {
        Op::File(f) => f
            .actions
            .iter()
            .filter_map(|a| match a {
                FileAction::Copy(c) => Some(c),
                _ => None,
            })
            .collect(),
        other => panic!("expected a file op, got {other:?}"),
    }
}

fn history(l: &Lowered) -> Vec<(String, bool)> {
    l.image
        .history
        .iter()
        .map(|h| (h.created_by.clone().unwrap_or_default(), h.empty_layer))
        .collect()
}

#[tokio::test]
async fn run_over_an_image_inherits_its_env_workdir_and_shell() {
    let l = lowered("FROM busybox\nUSER app\nRUN echo hi\n").await;
    let run = exec(&l, l.target);
    assert_eq!(run.args, ["/bin/sh", "-c", "echo hi"]);
    assert_eq!(run.env, ["HOME=/root", "PATH=/bin:/usr/bin"]);
    assert_eq!((run.cwd.as_str(), run.user.as_str()), ("/home", "app"));
    assert_eq!(run.network, NetworkMode::Default);
    let base = l.graph.vertex(l.target).inputs[0];
    match &l.graph.vertex(base).op {
        Op::Source(SourceOp::Image {
            reference,
            manifest,
            platform,
        }) => {
            assert_eq!(reference, "docker.io/library/busybox:latest");
            assert_eq!(*manifest, Digest::of(b"docker.io/library/busybox:latest"));
            assert_eq!(platform, "linux/amd64");
        }
        other => panic!("expected the image source, got {other:?}"),
    }
    assert_eq!(l.base, Some(base));
    let meta = &l.graph.vertex(l.target).meta;
    assert_eq!(meta.name, "[2/2] RUN echo hi");
    assert_eq!(meta.line, Some(3));
    assert!(
        l.graph
            .vertex(base)
            .meta
            .name
            .starts_with("[1/2] FROM docker.io/library/busybox:latest@sha256:")
    );
    assert_eq!(l.image.rootfs.diff_ids, [Digest::of(b"busybox layer")]);
    assert_eq!(l.image.config.cmd.as_deref(), Some(&["sh".to_owned()][..]));
}

#[tokio::test]
async fn shell_and_exec_forms_and_heredocs() {
    let l = lowered("FROM scratch\nSHELL [\"/bin/bash\", \"-eu\", \"-c\"]\nRUN [\"/bin/true\", \"x\"]\nRUN a && b\nRUN <<EOF\necho one\necho two\nEOF\n").await;
    let last = exec(&l, l.target);
    assert_eq!(
        last.args,
        ["/bin/bash", "-eu", "-c", "echo one\necho two\n"]
    );
    assert_eq!(
        l.graph.vertex(l.target).meta.name,
        "[3/3] RUN <<EOF (echo one...)"
    );
    let prev = l.graph.vertex(l.target).inputs[0];
    assert_eq!(exec(&l, prev).args, ["/bin/bash", "-eu", "-c", "a && b"]);
    let first = l.graph.vertex(prev).inputs[0];
    assert_eq!(exec(&l, first).args, ["/bin/true", "x"]);
    // A script with a shebang is mounted and executed.
    let l = lowered("FROM scratch\nRUN <<EOF\n#!/bin/python\nprint(1)\nEOF\n").await;
    let run = exec(&l, l.target);
    assert_eq!(run.args, ["/bin/sh", "-c", "/dev/pipes/EOF"]);
    assert!(
        matches!(&run.mounts[..], [ExecMount::Bind { input: 1, target, readwrite: false, .. }] if target == "/dev/pipes/")
    );
}

#[tokio::test]
async fn run_mounts_become_inputs_and_exec_mounts() {
    let text = "FROM busybox AS tools\nFROM scratch\nWORKDIR /src\nRUN --mount=type=cache,target=.cache,sharing=locked --mount=from=tools,source=/bin,target=/t --mount=target=/ctx --mount=type=tmpfs,target=/tmp --mount=type=secret,id=tok --network=none --security=insecure make\n";
    let l = lowered(text).await;
    let run = exec(&l, l.target);
    let inputs = &l.graph.vertex(l.target).inputs;
    assert_eq!(inputs.len(), 3);
    assert!(
        matches!(&l.graph.vertex(inputs[2]).op, Op::Source(SourceOp::Local { name, .. }) if name == "context")
    );
    assert!(matches!(
        &l.graph.vertex(inputs[1]).op,
        Op::Source(SourceOp::Image { .. })
    ));
    assert_eq!(
        run.mounts,
        [
            ExecMount::Cache {
                id: ".cache".into(),
                target: "/src/.cache".into(),
                sharing: CacheSharing::Locked,
                readonly: false,
                uid: 0,
                gid: 0,
                mode: 0o755
            },
            ExecMount::Bind {
                input: 1,
                source: "/bin".into(),
                target: "/t".into(),
                readwrite: false
            },
            ExecMount::Bind {
                input: 2,
                source: "/".into(),
                target: "/ctx".into(),
                readwrite: false
            },
            ExecMount::Tmpfs {
                target: "/tmp".into(),
                size: None
            },
            ExecMount::Secret {
                id: "tok".into(),
                target: Some("/run/secrets/tok".into()),
                env: None,
                required: false,
                mode: 0o400,
                uid: 0,
                gid: 0
            },
        ]
    );
    assert_eq!(run.network, NetworkMode::None);
    assert!(run.insecure);
    let err = lower_with(
        "FROM scratch\nRUN --mount=type=ssh true\n",
        &options(),
        &FakeResolver::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, LowerError::Unsupported { ref at, .. } if at.line == 2),
        "{err}"
    );
}

#[tokio::test]
async fn copy_from_context_stages_and_images() {
    let text = "FROM scratch AS build\nCOPY out /out\nFROM scratch\nWORKDIR /app\nCOPY --chown=app:staff --chmod=0755 a b* ./\nCOPY --from=build /out bin/\nCOPY --from=0 /out /x\nCOPY --from=busybox /bin/sh /sh\nCOPY --link c /c\n";
    let l = lowered(text).await;
    let merge = l.graph.vertex(l.target);
    assert!(matches!(merge.op, Op::Merge(_)));
    assert_eq!(merge.meta.name, "[stage-1 6/6] LINK COPY --link c /c");
    let link = merge.inputs[1];
    assert_eq!(
        l.graph.vertex(link).meta.name,
        "[stage-1 6/6] COPY --link c /c"
    );
    assert_eq!(copies(&l, link)[0].sources, ["/c"]);
    assert_eq!(l.layers.last().unwrap().parent, None);
    let from_image = merge.inputs[0];
    let c = copies(&l, from_image);
    assert_eq!(
        (c[0].sources.as_slice(), c[0].dest.as_str()),
        (&["/bin/sh".to_owned()][..], "/sh")
    );
    assert!(
        matches!(&l.graph.vertex(l.graph.vertex(from_image).inputs[1]).op, Op::Source(SourceOp::Image { reference, .. }) if reference.ends_with("busybox:latest"))
    );
    let by_index = l.graph.vertex(from_image).inputs[0];
    let by_name = l.graph.vertex(by_index).inputs[0];
    assert_eq!(
        l.graph.vertex(by_index).inputs[1],
        l.graph.vertex(by_name).inputs[1],
        "the build stage's result both times"
    );
    assert_eq!(copies(&l, by_name)[0].dest, "/app/bin/");
    let ctx_copy = l.graph.vertex(by_name).inputs[0];
    let c = copies(&l, ctx_copy);
    assert_eq!(c.len(), 2);
    assert_eq!(
        (c[0].sources[0].as_str(), c[1].sources[0].as_str()),
        ("/a", "/b*")
    );
    assert_eq!(c[0].dest, "/app/");
    assert_eq!(
        c[0].owner,
        Some(Owner {
            user: Principal::Name("app".into()),
            group: Some(Principal::Name("staff".into()))
        })
    );
    assert_eq!(c[0].mode, Some(Chmod::Octal(0o755)));
    assert!(c[0].allow_wildcard && c[0].dir_contents_only && !c[0].unpack);
    let h = history(&l);
    assert!(
        h.contains(&(
            "COPY --chown=app:staff --chmod=0755 a b* ./ # buildkit".into(),
            false
        )),
        "{h:?}"
    );
    assert_eq!(l.stages_built, ["build", "stage-1"]);
}

#[tokio::test]
async fn add_urls_local_archives_and_heredocs() {
    let sum = Digest::of(b"x");
    let text = format!(
        "FROM scratch\nADD --checksum={sum} https://example.com/dl/tool.tgz /opt/\nADD site.tar /srv\nCOPY <<conf /etc/app.conf\nname=$HOSTNAME\nconf\n"
    );
    let l = lowered(&text).await;
    let heredoc_copy = l.graph.vertex(l.target);
    let file = heredoc_copy.inputs[1];
    match &l.graph.vertex(file).op {
        Op::File(f) => assert_eq!(
            f.actions,
            [FileAction::Mkfile {
                path: "/conf".into(),
                data: b"name=\n".to_vec(),
                mode: 0o644,
                owner: None
            }]
        ),
        other => panic!("expected the heredoc file, got {other:?}"),
    }
    let add_tar = heredoc_copy.inputs[0];
    assert!(copies(&l, add_tar)[0].unpack);
    let add_url = l.graph.vertex(add_tar).inputs[0];
    let c = copies(&l, add_url);
    assert_eq!(
        (c[0].sources[0].as_str(), c[0].dest.as_str(), c[0].unpack),
        ("/tool.tgz", "/opt/", false)
    );
    let http = l.graph.vertex(add_url).inputs[1];
    assert_eq!(
        l.graph.vertex(http).op,
        Op::Source(SourceOp::Http {
            url: "https://example.com/dl/tool.tgz".into(),
            checksum: Some(sum),
            filename: "tool.tgz".into()
        })
    );
    assert_eq!(history(&l)[2].0, "COPY <<conf /etc/app.conf # buildkit");
    let err = lower_with(
        "FROM scratch\nCOPY https://x/y /y\n",
        &options(),
        &FakeResolver::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, LowerError::Transfer { ref at, .. } if at.line == 2),
        "{err}"
    );
}

#[tokio::test]
async fn history_matches_buildkit_strings() {
    let text = "\
FROM busybox
ARG V=1
ENV A=b C=\"d e\"
LABEL k=v
WORKDIR /x
RUN echo $V
COPY f /dst
USER 1000:1000
EXPOSE 80 53/udp
VOLUME /data
SHELL [\"/bin/bash\", \"-c\"]
CMD cat
ENTRYPOINT [\"/init\"]
STOPSIGNAL SIGINT
HEALTHCHECK --interval=30s --retries=3 CMD curl -f http://localhost/
MAINTAINER me
";
    let l = lowered(text).await;
    let expected: Vec<(&str, bool)> = vec![
        ("/bin/sh -c #(nop) ADD file:abc in /", false),
        ("ARG V=1", true),
        ("ENV A=b C=d e", true),
        ("LABEL k=v", true),
        ("WORKDIR /x", false),
        ("RUN |1 V=1 /bin/sh -c echo $V # buildkit", false),
        ("COPY f /dst # buildkit", false),
        ("USER 1000:1000", true),
        ("EXPOSE map[53/udp:{} 80/tcp:{}]", true),
        ("VOLUME [/data]", true),
        ("SHELL [/bin/bash -c]", true),
        ("CMD [\"/bin/bash\" \"-c\" \"cat\"]", true),
        ("ENTRYPOINT [\"/init\"]", true),
        ("STOPSIGNAL SIGINT", true),
        (
            "HEALTHCHECK &{[\"CMD-SHELL\" \"curl -f http://localhost/\"] \"30s\" \"0s\" \"0s\" \"0s\" '\\x03'}",
            true,
        ),
        ("MAINTAINER me", true),
    ];
    let got = history(&l);
    let got: Vec<(&str, bool)> = got.iter().map(|(s, e)| (s.as_str(), *e)).collect();
    assert_eq!(got, expected);
    assert!(
        l.image.history[1..]
            .iter()
            .all(|h| h.comment.as_deref() == Some("buildkit.dockerfile.v0")
                && h.created.as_deref() == Some("2023-11-14T22:13:20Z"))
    );
    assert_eq!(l.image.created.as_deref(), Some("2023-11-14T22:13:20Z"));
    // Layers: WORKDIR, RUN, COPY, each a diff against the step before.
    assert_eq!(
        l.layers.iter().map(|s| s.history).collect::<Vec<_>>(),
        [4, 5, 6]
    );
    assert_eq!(l.layers[2].vertex, l.target);
    assert_eq!(l.layers[1].parent, Some(l.layers[0].vertex));
    let c = &l.image.config;
    assert_eq!(
        c.env.as_deref().unwrap(),
        ["PATH=/bin:/usr/bin", "HOME=/root", "A=b", "C=d e"]
    );
    assert_eq!(
        c.cmd.as_deref().unwrap(),
        ["/bin/bash", "-c", "cat"],
        "a CMD set in the stage survives a later ENTRYPOINT"
    );
    assert_eq!(c.working_dir.as_deref(), Some("/x"));
    assert_eq!(
        c.exposed_ports.as_ref().unwrap().keys().collect::<Vec<_>>(),
        ["53/udp", "80/tcp"]
    );
    assert_eq!(c.healthcheck.as_ref().unwrap().interval, 30_000_000_000);
    assert_eq!(c.stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(l.image.author.as_deref(), Some("me"));
}

#[tokio::test]
async fn entrypoint_resets_only_an_inherited_cmd() {
    let l = lowered("FROM busybox\nENTRYPOINT [\"/e\"]\n").await;
    assert_eq!(l.image.config.cmd, None);
    let l = lowered("FROM busybox\nCMD [\"x\"]\nENTRYPOINT [\"/e\"]\n").await;
    assert_eq!(l.image.config.cmd, Some(vec!["x".to_owned()]));
    assert_eq!(l.image.config.args_escaped, Some(true));
}

#[tokio::test]
async fn arg_scoping_global_stage_and_build_args() {
    let text = "ARG IMG=busybox\nARG G=global\nFROM $IMG\nRUN echo a\nARG G\nARG L=local-$G\nRUN echo $G $L\nENV E=$L\n";
    let l = lowered(text).await;
    assert_eq!(l.image.config.env_var("E"), Some("local-global"));
    let run = exec(&l, l.target);
    assert!(
        run.env.contains(&"G=global".to_owned()) && run.env.contains(&"L=local-global".to_owned())
    );
    assert_eq!(
        history(&l)[4].0,
        "RUN |2 G=global L=local-global /bin/sh -c echo $G $L # buildkit"
    );
    // A global ARG is invisible in a stage that does not re-declare it.
    let l = lowered("ARG G=global\nFROM scratch\nENV E=x$G\n").await;
    assert_eq!(l.image.config.env_var("E"), Some("x"));
    // --build-arg overrides defaults, global and local.
    let mut o = options();
    o.build_args = BTreeMap::from([("G".into(), "cli".into()), ("L".into(), "cli-l".into())]);
    let l = lower_with(text, &o, &FakeResolver::default())
        .await
        .unwrap();
    assert_eq!(l.image.config.env_var("E"), Some("cli-l"));
    // The platform arguments are global.
    let l = lowered(
        "FROM scratch\nARG TARGETARCH\nARG BUILDPLATFORM\nENV A=$TARGETARCH B=$BUILDPLATFORM\n",
    )
    .await;
    assert_eq!(
        (l.image.config.env_var("A"), l.image.config.env_var("B")),
        (Some("amd64"), Some("linux/amd64"))
    );
}

#[tokio::test]
async fn a_late_arg_changes_only_the_steps_after_it() {
    let text = "FROM busybox\nRUN early\nARG V\nRUN late\n";
    let resolver = FakeResolver::default();
    let key = |l: &Lowered, id: VertexId| l.graph.vertex(id).op_digest().clone();
    let mut o = options();
    o.build_args = BTreeMap::from([("V".into(), "1".into())]);
    let one = lower_with(text, &o, &resolver).await.unwrap();
    o.build_args = BTreeMap::from([("V".into(), "2".into())]);
    let two = lower_with(text, &o, &resolver).await.unwrap();
    let early = |l: &Lowered| l.graph.vertex(l.target).inputs[0];
    assert_eq!(key(&one, early(&one)), key(&two, early(&two)));
    assert_ne!(key(&one, one.target), key(&two, two.target));
    // Proxy arguments reach RUN without changing its key or its history.
    o.build_args = BTreeMap::from([
        ("V".into(), "2".into()),
        ("HTTP_PROXY".into(), "http://p".into()),
    ]);
    let proxied = lower_with(text, &o, &resolver).await.unwrap();
    assert_eq!(key(&proxied, proxied.target), key(&two, two.target));
    assert_eq!(
        exec(&proxied, proxied.target).proxy_env,
        ["HTTP_PROXY=http://p"]
    );
    assert_eq!(
        history(&proxied)[3].0,
        "RUN |1 V=2 /bin/sh -c late # buildkit"
    );
}

#[tokio::test]
async fn target_builds_and_resolves_only_what_it_needs() {
    let text = "FROM busybox AS unused\nRUN x\nFROM scratch AS dep\nCOPY a /a\nFROM scratch AS final\nCOPY --from=dep /a /b\nFROM onbuild AS last\n";
    let resolver = FakeResolver::default();
    let mut o = options();
    o.target = Some("FINAL".into());
    let l = lower_with(text, &o, &resolver).await.unwrap();
    assert!(
        resolver.asked.lock().unwrap().is_empty(),
        "no base image is needed"
    );
    assert_eq!(l.stages_built, ["dep", "final"]);
    assert!(l.graph.required(&[l.target]).len() == l.graph.len());
    o.target = Some("nope".into());
    let err = lower_with(text, &o, &resolver).await.unwrap_err();
    assert!(matches!(err, LowerError::TargetNotFound { ref target } if target == "nope"));
}

#[tokio::test]
async fn identical_steps_in_two_stages_share_a_vertex() {
    let l = lowered("FROM busybox AS a\nRUN make\nFROM busybox AS b\nRUN make\nFROM scratch\nCOPY --from=a /x /x\nCOPY --from=b /x /y\n").await;
    let from_b = l.graph.vertex(l.target);
    let from_a = l.graph.vertex(from_b.inputs[0]);
    assert_eq!(from_a.inputs[1], from_b.inputs[1]);
    assert_eq!(l.stages_built, ["a", "b", "stage-2"]);
}

#[tokio::test]
async fn onbuild_triggers_fire_in_the_child_stage_only() {
    let l = lowered("FROM onbuild\nRUN after\n").await;
    let after = l.graph.vertex(l.target);
    assert_eq!(after.meta.name, "[3/4] RUN after");
    assert!(exec(&l, l.target).env.contains(&"FIRED=yes".to_owned()));
    let fired = l.graph.vertex(after.inputs[0]);
    assert_eq!(fired.meta.name, "[2/4] ONBUILD RUN echo fired");
    assert_eq!(fired.meta.line, Some(1));
    assert_eq!(
        l.image.config.on_build, None,
        "fired triggers do not carry over"
    );
    // A stage's own ONBUILD is recorded, and fires in a stage built on it.
    let l = lowered("FROM scratch AS base\nONBUILD ENV X=1\nFROM base\n").await;
    assert_eq!(l.image.config.env_var("X"), Some("1"));
    let l = lowered("FROM scratch\nONBUILD RUN x\n").await;
    assert_eq!(l.image.config.on_build, Some(vec!["RUN x".to_owned()]));
}

#[tokio::test]
async fn cache_bypass_by_stage_and_everywhere() {
    let text = "FROM scratch AS a\nCOPY x /x\nFROM scratch AS b\nCOPY --from=a /x /y\n";
    let mut o = options();
    o.no_cache_filter = vec!["b".into()];
    let l = lower_with(text, &o, &FakeResolver::default())
        .await
        .unwrap();
    assert!(l.graph.vertex(l.target).meta.ignore_cache);
    assert!(
        !l.graph
            .vertex(l.graph.vertex(l.target).inputs[1])
            .meta
            .ignore_cache
    );
    o.no_cache = true;
    let l = lower_with(text, &o, &FakeResolver::default())
        .await
        .unwrap();
    assert!(
        l.graph
            .required(&[l.target])
            .iter()
            .filter(|v| !matches!(l.graph.vertex(**v).op, Op::Source(SourceOp::Scratch)))
            .all(|v| l.graph.vertex(*v).meta.ignore_cache)
    );
}

#[tokio::test]
async fn workdir_creates_the_directory_as_the_user() {
    let l = lowered("FROM scratch\nUSER app\nWORKDIR /a\nWORKDIR b/../c\nWORKDIR /\n").await;
    assert_eq!(l.image.config.working_dir.as_deref(), Some("/"));
    let mkdir = l.layers.last().unwrap().vertex;
    match &l.graph.vertex(mkdir).op {
        Op::File(f) => assert_eq!(
            f.actions,
            [FileAction::Mkdir {
                path: "/a/c".into(),
                mode: 0o755,
                parents: true,
                owner: Some(Owner {
                    user: Principal::Name("app".into()),
                    group: None
                })
            }]
        ),
        other => panic!("expected a mkdir, got {other:?}"),
    }
    let h = history(&l);
    assert_eq!(
        &h[1..],
        [
            ("WORKDIR /a".into(), false),
            ("WORKDIR /a/c".into(), false),
            ("WORKDIR /".into(), true)
        ]
    );
}

#[tokio::test]
async fn errors_name_the_line() {
    let cases = [
        ("FROM scratch\nCOPY --from=missing /a /b\n", 2, "missing"),
        (
            "FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\nCOPY --from=a /x /x\n",
            2,
            "circular",
        ),
        (
            "FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\nFROM a\n",
            2,
            "defined before",
        ),
        ("FROM scratch\nENV A=${}\n", 2, "cannot expand"),
        ("ARG E=\nFROM $E\n", 2, "blank"),
        ("FROM scratch\nEXPOSE 80/xyz\n", 2, "invalid proto"),
        ("FROM scratch\nSTOPSIGNAL NOPE\n", 2, "invalid signal"),
        (
            "FROM scratch\nARG M=bad\nCOPY --chmod=$M a /b\n",
            3,
            "chmod",
        ),
        (
            "FROM scratch\nCOPY --from=$X a /b\n",
            2,
            "variable expansion",
        ),
        ("FROM scratch\nCOPY --from=7 a /b\n", 2, "stage index"),
    ];
    for (text, line, needle) in cases {
        let err = lower_with(text, &options(), &FakeResolver::default())
            .await
            .unwrap_err();
        let shown = format!(
            "{err} {:?}",
            std::error::Error::source(&err).map(|s| s.to_string())
        );
        assert_eq!(err.place().map(|p| p.line), Some(line), "{text}: {shown}");
        assert!(shown.contains(needle), "{text}: {shown}");
    }
}
