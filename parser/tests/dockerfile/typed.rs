//! The typed layer's output on the golden Dockerfiles: what the solver will see.

use std::path::Path;
use std::time::Duration;

use kiln_parser::instructions::chmod::Chmod;
use kiln_parser::instructions::mount::{CacheSharing, MountType};
use kiln_parser::instructions::{
    CommandLine, Expandable, Healthcheck, NetworkMode, SecurityMode, Source,
};
use kiln_parser::{Command, Dockerfile};

fn golden(case: &str) -> Dockerfile<'static> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/parser")
        .join(case)
        .join("Dockerfile");
    let text = std::fs::read_to_string(&path).expect("golden case");
    kiln_parser::parse(&text)
        .expect("golden case parses")
        .into_owned()
}

fn commands<'f>(file: &'f Dockerfile, stage: usize) -> Vec<&'f Command<'f>> {
    file.stages[stage]
        .instructions
        .iter()
        .map(|i| &i.command)
        .collect()
}

#[test]
fn stages_and_global_args() {
    let file = golden("arg-forms");
    assert_eq!(file.global_args.len(), 2);
    assert_eq!(file.global_args[0].arg.args[0].name, "BASE");
    assert_eq!(
        file.global_args[0].arg.args[0].default.as_deref(),
        Some("alpine")
    );
    assert_eq!(file.stages[0].base, "$BASE:${VERSION:-3}");
    let Command::Arg(arg) = commands(&file, 0)[0] else {
        panic!("ARG")
    };
    let names: Vec<_> = arg
        .args
        .iter()
        .map(|a| (&*a.name, a.default.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            ("A", None),
            ("B", Some("1")),
            ("C", Some("\"x y\"")),
            ("D", Some(""))
        ]
    );

    let file = golden("from-as-stage-name");
    let names: Vec<_> = file.stages.iter().map(|s| s.name.as_deref()).collect();
    assert_eq!(names, [Some("build"), Some("second"), Some("my-stage_1.0")]);
    let file = golden("from-platform");
    assert_eq!(file.stages[0].platform.as_deref(), Some("$BUILDPLATFORM"));
}

#[test]
fn run_flags_and_forms() {
    let file = golden("run-mount-cache");
    let Command::Run(run) = commands(&file, 0)[0] else {
        panic!("RUN")
    };
    let Expandable::Literal(mount) = &run.mounts[0] else {
        panic!("literal mount")
    };
    assert_eq!(mount.kind, MountType::Cache);
    assert_eq!(mount.sharing, Some(CacheSharing::Locked));
    assert_eq!(
        (mount.mode, mount.uid, mount.gid),
        (Some(0o755), Some(1000), Some(1000))
    );
    assert_eq!(run.command, CommandLine::Shell("pip install x".into()));

    let file = golden("run-mount-variables");
    let Command::Run(run) = commands(&file, 0)[1] else {
        panic!("RUN")
    };
    assert_eq!(
        run.mounts,
        [Expandable::Deferred(
            "type=cache,target=$DIR,id=${ID}".into()
        )]
    );

    let file = golden("run-network");
    let modes: Vec<_> = commands(&file, 0)
        .iter()
        .map(|c| match c {
            Command::Run(r) => r.network,
            _ => panic!("RUN"),
        })
        .collect();
    assert_eq!(
        modes,
        [NetworkMode::None, NetworkMode::Host, NetworkMode::Default]
    );
    let file = golden("run-security");
    let Command::Run(run) = commands(&file, 0)[0] else {
        panic!("RUN")
    };
    assert_eq!(run.security, SecurityMode::Insecure);

    let file = golden("run-exec-form");
    let Command::Run(run) = commands(&file, 0)[0] else {
        panic!("RUN")
    };
    assert_eq!(
        run.command,
        CommandLine::Exec(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()])
    );
}

#[test]
fn heredocs_reach_the_instructions() {
    let file = golden("heredoc-chomp");
    let Command::Run(run) = commands(&file, 0)[0] else {
        panic!("RUN")
    };
    assert_eq!(run.heredocs[0].content, "echo one\necho two\n");
    assert!(run.heredocs[0].expand);

    let file = golden("heredoc-copy");
    let Command::Copy(copy) = commands(&file, 0)[1] else {
        panic!("COPY")
    };
    let Source::Heredoc(doc) = &copy.files.sources[0] else {
        panic!("heredoc source")
    };
    assert_eq!(doc.name, "SCRIPT");
    assert_eq!(doc.content, "#!/bin/sh\nexec app\n");
    assert!(!doc.expand);
    assert_eq!(copy.files.dest, "/usr/bin/run");
    assert_eq!(
        copy.files.chmod,
        Some(Expandable::Literal(Chmod::Octal(0o755)))
    );

    let file = golden("onbuild-heredoc");
    let Command::Onbuild(onbuild) = commands(&file, 0)[0] else {
        panic!("ONBUILD")
    };
    assert_eq!(onbuild.expression, "RUN <<EOF\necho triggered\nEOF");
}

#[test]
fn copy_and_add_flags() {
    let file = golden("copy-flags");
    let Command::Copy(copy) = commands(&file, 0)[0] else {
        panic!("COPY")
    };
    assert_eq!(copy.from.as_deref(), Some("build"));
    assert_eq!(copy.files.chown.as_deref(), Some("1000:1000"));
    assert!(copy.files.link);
    assert_eq!(
        copy.files.sources,
        [Source::Path("a".into()), Source::Path("b".into())]
    );

    let file = golden("copy-chmod-symbolic");
    let chmods: Vec<_> = commands(&file, 0)
        .iter()
        .map(|c| match c {
            Command::Copy(c) => c.files.chmod.clone(),
            _ => panic!("COPY"),
        })
        .collect();
    assert_eq!(
        chmods,
        [
            Some(Expandable::Literal(Chmod::Symbolic("u+x,go-w".into()))),
            Some(Expandable::Literal(Chmod::Symbolic("a=rX".into()))),
            Some(Expandable::Deferred("$MODE".into())),
        ]
    );

    let file = golden("copy-parents-exclude");
    let Command::Copy(copy) = commands(&file, 0)[0] else {
        panic!("COPY")
    };
    assert!(copy.parents);
    assert_eq!(copy.files.excludes, ["*.md", "tmp/"]);

    let file = golden("add-flags");
    let Command::Add(add) = commands(&file, 0)[2] else {
        panic!("ADD")
    };
    assert_eq!(add.unpack, Some(false));
    let Command::Add(add) = commands(&file, 0)[1] else {
        panic!("ADD")
    };
    assert!(add.keep_git_dir);

    let file = golden("copy-empty-flag-values");
    let Command::Copy(copy) = commands(&file, 0)[0] else {
        panic!("COPY")
    };
    assert_eq!(
        (
            copy.from.as_ref(),
            copy.files.chown.as_ref(),
            copy.files.chmod.as_ref()
        ),
        (None, None, None)
    );
}

#[test]
fn healthcheck_env_expose() {
    let file = golden("healthcheck-cmd");
    let Command::Healthcheck(Healthcheck::Check(check)) = commands(&file, 0)[0] else {
        panic!("HEALTHCHECK CMD")
    };
    assert_eq!(
        check.test,
        ["CMD-SHELL", "curl -f http://localhost/ || exit 1"]
    );
    assert_eq!(check.interval, Duration::from_secs(30));
    assert_eq!(check.start_period, Duration::from_secs(90));
    assert_eq!(check.start_interval, Duration::from_secs(2));
    assert_eq!(check.retries, 3);
    let file = golden("healthcheck-none");
    assert_eq!(
        commands(&file, 0),
        [&Command::Healthcheck(Healthcheck::None); 2]
    );

    let file = golden("env-forms");
    let Command::Env(pairs) = commands(&file, 0)[1] else {
        panic!("ENV")
    };
    assert_eq!(pairs[0].key, "PATH");
    assert!(pairs[0].legacy);
    let file = golden("expose");
    assert_eq!(
        commands(&file, 0)[0],
        &Command::Expose(vec!["443/tcp".into(), "53/udp".into(), "80".into()])
    );
}

#[test]
fn spans_name_lines_and_keep_text() {
    let file = golden("continuation-basic");
    let run = &file.stages[0].instructions[0];
    assert_eq!(
        (run.span.line, run.span.end_line, run.span.column),
        (2, 5, 1)
    );
    assert_eq!(
        run.original,
        "RUN apt-get update &&     apt-get install -y       curl       git"
    );
    let file = golden("escape-backtick");
    assert_eq!(file.escape, '`');
    let file = golden("directives-all");
    assert_eq!(file.syntax(), Some("docker/dockerfile:1.7"));
    let check = file.check.expect("check directive");
    assert!(check.error);
    assert_eq!(check.skip, ["JSONArgsRecommended", "StageNameCasing"]);
}
