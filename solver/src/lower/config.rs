//! The instructions that change the image configuration, and WORKDIR.
//!
//! Most of these produce no step at all — only a configuration change and an empty-layer
//! history entry — so they live together. Each follows its BuildKit `dispatch*`
//! function: which words are `$VAR`-expanded (ENV, LABEL, USER, EXPOSE, VOLUME,
//! STOPSIGNAL, WORKDIR; not CMD, ENTRYPOINT, SHELL, HEALTHCHECK or MAINTAINER), how
//! the shell form is wrapped in SHELL, ENTRYPOINT resetting an inherited CMD, and the
//! exact history text. WORKDIR is here because it is a config change first; the
//! directory it creates is a small [`FileAction::Mkdir`].

use std::borrow::Cow;
use std::collections::BTreeMap;

use kiln_image::config::{EmptyObject, HealthConfig};
use kiln_parser::instructions::{
    ArgInstruction, Command, CommandLine, Healthcheck, Instruction, KeyValue,
};

use super::args::{self, expand_words};
use super::history::{self, go_list, go_quoted_list};
use super::stage::StageState;
use super::{Builder, LowerError, Place, expand_in};
use crate::op::{FileAction, FileOp, Op, Owner};

/// BuildKit's default shell on Linux.
pub(crate) const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// A shell-form command wrapped in the stage's SHELL.
pub(crate) fn with_shell(state: &StageState, command: &str) -> Vec<String> {
    let mut args: Vec<String> = match &state.image.config.shell {
        Some(shell) if !shell.is_empty() => shell.clone(),
        _ => DEFAULT_SHELL.iter().map(|s| s.to_string()).collect(),
    };
    args.push(command.to_owned());
    args
}

/// Lowers an instruction that only changes the configuration.
pub(crate) fn lower_config(
    builder: &mut Builder<'_>,
    state: &mut StageState,
    command: &Command,
    at: &Place,
) -> Result<(), LowerError> {
    let message = match command {
        Command::Env(pairs) => {
            let pairs = expand_pairs(builder, state, pairs, at)?;
            for (k, v) in &pairs {
                state.env.set(k, v);
                state.image.config.set_env_var(k, v);
            }
            format!("ENV {}", join_pairs(&pairs))
        }
        Command::Label(pairs) => {
            let pairs = expand_pairs(builder, state, pairs, at)?;
            let labels = state.image.config.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in &pairs {
                labels.insert(k.clone(), v.clone());
            }
            format!("LABEL {}", join_pairs(&pairs))
        }
        Command::User(user) => {
            let user = expand_in(builder, state, user, at)?;
            state.image.config.user = Some(user.clone());
            format!("USER {user}")
        }
        Command::Expose(ports) => {
            let mut specs = Vec::new();
            for port in ports {
                specs.extend(expand_words(&builder.lex, port, &state.env, at)?);
            }
            let mut exposed = Vec::new();
            for spec in &specs {
                exposed.extend(port_spec(spec, at)?);
            }
            let set = state
                .image
                .config
                .exposed_ports
                .get_or_insert_with(BTreeMap::new);
            for port in &exposed {
                set.insert(port.clone(), EmptyObject {});
            }
            format!("EXPOSE {}", history::go_set(&exposed))
        }
        Command::Volume(paths) => {
            let mut volumes = Vec::with_capacity(paths.len());
            for path in paths {
                let path = expand_in(builder, state, path, at)?;
                if path.is_empty() {
                    return Err(LowerError::EmptyVolume { at: at.clone() });
                }
                volumes.push(path);
            }
            let set = state.image.config.volumes.get_or_insert_with(BTreeMap::new);
            for v in &volumes {
                set.insert(v.clone(), EmptyObject {});
            }
            format!("VOLUME {}", go_list(&volumes))
        }
        Command::Stopsignal(signal) => {
            let signal = expand_in(builder, state, signal, at)?;
            if !is_signal(&signal) {
                return Err(LowerError::Signal {
                    at: at.clone(),
                    signal,
                });
            }
            state.image.config.stop_signal = Some(signal.clone());
            format!("STOPSIGNAL {signal}")
        }
        Command::Cmd(line) => {
            let args = command_args(state, line);
            // `CMD []` clears the command: Docker omits an empty list.
            state.image.config.cmd = (!args.is_empty()).then(|| args.clone());
            state.image.config.args_escaped = Some(true);
            state.cmd_set = true;
            format!("CMD {}", go_quoted_list(&args))
        }
        Command::Entrypoint(line) => {
            let args = command_args(state, line);
            state.image.config.entrypoint = Some(args.clone());
            if !state.cmd_set {
                state.image.config.cmd = None;
            }
            format!("ENTRYPOINT {}", go_quoted_list(&args))
        }
        Command::Shell(shell) => {
            let shell = owned_words(shell);
            let message = format!("SHELL {}", go_list(&shell));
            state.image.config.shell = Some(shell);
            message
        }
        Command::Healthcheck(check) => {
            let config = match check {
                Healthcheck::None => HealthConfig {
                    test: vec!["NONE".to_owned()],
                    ..HealthConfig::default()
                },
                Healthcheck::Check(c) => HealthConfig {
                    test: owned_words(&c.test),
                    interval: nanos(c.interval),
                    timeout: nanos(c.timeout),
                    start_period: nanos(c.start_period),
                    start_interval: nanos(c.start_interval),
                    retries: c.retries,
                },
            };
            let message = history::healthcheck(&config);
            state.image.config.healthcheck = Some(config);
            message
        }
        Command::Onbuild(trigger) => {
            state
                .image
                .config
                .on_build
                .get_or_insert_with(Vec::new)
                .push(trigger.expression.to_string());
            return Ok(());
        }
        Command::Arg(arg) => lower_arg(builder, state, arg, at)?,
        Command::Maintainer(who) => {
            state.image.author = Some(who.to_string());
            format!("MAINTAINER {who}")
        }
        Command::Run(_) | Command::Copy(_) | Command::Add(_) | Command::Workdir(_) => {
            unreachable!("steps with ops are dispatched to their own lowering")
        }
    };
    state.commit(&builder.created, message, None);
    Ok(())
}

/// `ARG`: declares the arguments and adds the valued ones to the step environment.
fn lower_arg(
    builder: &Builder<'_>,
    state: &mut StageState,
    arg: &ArgInstruction,
    at: &Place,
) -> Result<String, LowerError> {
    // History shows each declaration with its default as written (expanded), not the
    // value a --build-arg gives it, as BuildKit records it.
    let mut words = Vec::with_capacity(arg.args.len());
    for decl in &arg.args {
        match &decl.default {
            Some(default) => {
                let default = expand_in(builder, state, default, at)?;
                words.push(format!("{}={default}", decl.name));
            }
            None => words.push(decl.name.to_string()),
        }
    }
    let declared = args::declare(
        arg,
        &state.env,
        &builder.globals,
        &builder.options.build_args,
        &builder.lex,
        at,
    )?;
    for decl in declared {
        if let Some(value) = &decl.value {
            state.env.set(&decl.name, value);
        }
        state.args.push(decl);
    }
    Ok(format!("ARG {}", words.join(" ")))
}

/// `WORKDIR`: resolved against the previous one; a directory other than `/` is created
/// (with parents, owned by the current USER as BuildKit does).
pub(crate) fn lower_workdir(
    builder: &mut Builder<'_>,
    state: &mut StageState,
    instruction: &Instruction,
    dir: &str,
    at: &Place,
) -> Result<(), LowerError> {
    let dir = expand_in(builder, state, dir, at)?;
    // As BuildKit: an absolute WORKDIR is kept as written, a relative one is joined to
    // the previous one and cleaned.
    let wd = if dir.starts_with('/') {
        dir
    } else {
        clean_path(&join_path(state.workdir(), &dir))
    };
    state.image.config.working_dir = Some(wd.clone());
    let mut layer = None;
    if wd != "/" {
        let name = history::uppercase_command(
            &expand_in(builder, state, &instruction.original, at)
                .unwrap_or_else(|_| instruction.original.to_string()),
        );
        let name = state.step_name(&name);
        let parent = state.fs;
        let owner = Owner::parse(state.user());
        state.fs = builder.graph.add(
            Op::File(FileOp {
                has_base: true,
                actions: vec![FileAction::Mkdir {
                    path: wd.clone(),
                    mode: 0o755,
                    parents: true,
                    owner,
                }],
            }),
            vec![parent],
            state.meta(name, at),
        );
        layer = Some((state.fs, Some(parent)));
    }
    state.commit(&builder.created, format!("WORKDIR {wd}"), layer);
    Ok(())
}

/// `path` made absolute against `dir` (kept as is when already absolute).
pub(crate) fn join_path(dir: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{}/{path}", dir.trim_end_matches('/'))
    }
}

/// Go's `path.Clean` of an absolute path.
pub(crate) fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

fn command_args(state: &StageState, line: &CommandLine) -> Vec<String> {
    match line {
        CommandLine::Exec(args) => owned_words(args),
        CommandLine::Shell(command) => with_shell(state, command),
    }
}

/// Words of the AST (borrowed from the Dockerfile) as strings of the image config.
pub(crate) fn owned_words(words: &[Cow<'_, str>]) -> Vec<String> {
    words.iter().map(|word| word.to_string()).collect()
}

fn expand_pairs(
    builder: &Builder<'_>,
    state: &StageState,
    pairs: &[KeyValue],
    at: &Place,
) -> Result<Vec<(String, String)>, LowerError> {
    pairs
        .iter()
        .map(|kv| {
            Ok((
                expand_in(builder, state, &kv.key, at)?,
                expand_in(builder, state, &kv.value, at)?,
            ))
        })
        .collect()
}

fn join_pairs(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// An EXPOSE spec (`[ip:][host:]port[-end][/proto]`) as the `port/proto` entries it
/// stands for, as BuildKit's `parsePortSpec` reads it.
fn port_spec(raw: &str, at: &Place) -> Result<Vec<String>, LowerError> {
    let err = |problem| LowerError::Port {
        at: at.clone(),
        port: raw.to_owned(),
        problem,
    };
    let parts: Vec<&str> = raw.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [c] => ("".to_owned(), "", *c),
        [h, c] => ("".to_owned(), *h, *c),
        [rest @ .., h, c] => (rest.join(":"), *h, *c),
        [] => unreachable!("split yields at least one part"),
    };
    let (port, proto) = container.split_once('/').unwrap_or((container, ""));
    let proto = match proto.to_lowercase().as_str() {
        "" | "tcp" => "tcp",
        "udp" => "udp",
        "sctp" => "sctp",
        _ => return Err(err("invalid proto")),
    };
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(err("invalid IP address"));
    }
    if port.is_empty() {
        return Err(err("no port specified"));
    }
    let (start, end) = port_range(port).ok_or_else(|| err("invalid containerPort"))?;
    if !host.is_empty() {
        let (hs, he) = port_range(host).ok_or_else(|| err("invalid hostPort"))?;
        if end - start != he - hs && end != start {
            return Err(err("invalid ranges specified for container and host ports"));
        }
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

fn port_range(ports: &str) -> Option<(u16, u16)> {
    match ports.split_once('-') {
        None => ports.parse().ok().map(|p| (p, p)),
        Some((a, b)) => {
            let (a, b): (u16, u16) = (a.parse().ok()?, b.parse().ok()?);
            (b >= a).then_some((a, b))
        }
    }
}

/// Whether `signal` names a Linux signal, as Docker's `signal.ParseSignal` accepts.
fn is_signal(signal: &str) -> bool {
    const NAMES: [&str; 35] = [
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
        "UNUSED",
    ];
    if let Ok(n) = signal.parse::<i64>() {
        return n != 0;
    }
    let upper = signal.to_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if NAMES.contains(&name) || name == "RTMIN" || name == "RTMAX" {
        return true;
    }
    let offset = |prefix: &str, max: u32| {
        name.strip_prefix(prefix)
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=max).contains(&n))
    };
    offset("RTMIN+", 15) || offset("RTMAX-", 14)
}
