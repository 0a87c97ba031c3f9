//! Build arguments: where a `$NAME` gets its value, and from which point on.
//!
//! BuildKit keeps two scopes. The global one holds the automatic platform arguments
//! and the ARGs declared before the first FROM (with `--build-arg` overriding their
//! defaults); only FROM lines read it directly. A stage sees a global ARG only once it
//! re-declares it (`ARG NAME` without a value takes the global value). Inside a stage,
//! a declared ARG joins the step environment at the point of declaration, so it changes
//! the keys of the steps after it and of no step before it.
//!
//! Both scopes are ordered lists with replace-in-place semantics ([`Vars`]), which is
//! also the shape of the environment BuildKit hands to `RUN` steps.

use std::collections::BTreeMap;

use kiln_parser::Dockerfile;
use kiln_parser::instructions::ArgInstruction;
use kiln_parser::shell::{Env, Lex};

use super::{LowerError, LowerOptions, Place};

/// Ordered variables; setting an existing name replaces its value in place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Vars(Vec<(String, String)>);

impl Vars {
    /// Sets `name` to `value`, keeping the name's first position.
    pub(crate) fn set(&mut self, name: &str, value: &str) {
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some(entry) => entry.1 = value.to_owned(),
            None => self.0.push((name.to_owned(), value.to_owned())),
        }
    }

    /// The variables as `KEY=value` entries, in order.
    pub(crate) fn entries(&self) -> Vec<String> {
        self.0.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

impl Env for Vars {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The global scope: the platform arguments, then the ARGs before the first FROM.
pub(crate) fn global_scope(
    dockerfile: &Dockerfile,
    source: &str,
    options: &LowerOptions,
    lex: &Lex,
    target: &str,
) -> Result<Vars, LowerError> {
    let mut vars = Vars::default();
    let (build, target_platform) = (&options.build_platform, &options.target_platform);
    let automatic = [
        ("BUILDPLATFORM", build.to_string()),
        ("BUILDOS", build.os().to_owned()),
        ("BUILDARCH", build.architecture().to_owned()),
        (
            "BUILDVARIANT",
            build.variant().unwrap_or_default().to_owned(),
        ),
        ("TARGETPLATFORM", target_platform.to_string()),
        ("TARGETOS", target_platform.os().to_owned()),
        ("TARGETARCH", target_platform.architecture().to_owned()),
        (
            "TARGETVARIANT",
            target_platform.variant().unwrap_or_default().to_owned(),
        ),
        ("TARGETSTAGE", target.to_owned()),
    ];
    for (name, value) in automatic {
        let value = options.build_args.get(name).cloned().unwrap_or(value);
        vars.set(name, &value);
    }
    for global in &dockerfile.global_args {
        let at = Place::new(source, global.span.line);
        for decl in &global.arg.args {
            let value = match (options.build_args.get(&*decl.name), &decl.default) {
                (Some(value), _) => Some(value.clone()),
                (None, Some(default)) => Some(expand(lex, default, &vars, &at)?),
                (None, None) => None,
            };
            if let Some(value) = value {
                vars.set(&decl.name, &value);
            }
        }
    }
    Ok(vars)
}

/// One ARG declared in a stage, with the value it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DeclaredArg {
    /// The name.
    pub(crate) name: String,
    /// The value, when it has one.
    pub(crate) value: Option<String>,
}

/// Declares a stage's ARGs as BuildKit's `dispatchArg` does: a `--build-arg` wins, then
/// the default (expanded in the stage's environment), then the global value for a
/// declaration without default. Returns the declarations in order; the caller adds the
/// valued ones to the step environment.
pub(crate) fn declare(
    arg: &ArgInstruction,
    env: &Vars,
    globals: &Vars,
    build_args: &BTreeMap<String, String>,
    lex: &Lex,
    at: &Place,
) -> Result<Vec<DeclaredArg>, LowerError> {
    let mut out = Vec::with_capacity(arg.args.len());
    let mut env = env.clone();
    for decl in &arg.args {
        let value = match (build_args.get(&*decl.name), &decl.default) {
            (Some(value), _) => Some(value.clone()),
            (None, Some(default)) => Some(expand(lex, default, &env, at)?),
            (None, None) => globals.get(&decl.name).map(str::to_owned),
        };
        if let Some(value) = &value {
            env.set(&decl.name, value);
        }
        out.push(DeclaredArg {
            name: decl.name.to_string(),
            value,
        });
    }
    Ok(out)
}

/// The predefined proxy arguments, usable by `RUN` without declaration.
pub(crate) fn proxy_env(build_args: &BTreeMap<String, String>) -> Vec<String> {
    const PROXIES: [&str; 5] = [
        "http_proxy",
        "https_proxy",
        "ftp_proxy",
        "no_proxy",
        "all_proxy",
    ];
    build_args
        .iter()
        .filter(|(k, _)| PROXIES.iter().any(|p| k.eq_ignore_ascii_case(p)))
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// Expands one word, naming the place on failure.
pub(crate) fn expand(
    lex: &Lex,
    word: &str,
    env: &dyn Env,
    at: &Place,
) -> Result<String, LowerError> {
    lex.process_word(word, env)
        .map_err(|source| LowerError::Expand {
            at: at.clone(),
            word: word.to_owned(),
            source,
        })
}

/// Expands and splits words (`EXPOSE`), naming the place on failure.
pub(crate) fn expand_words(
    lex: &Lex,
    word: &str,
    env: &dyn Env,
    at: &Place,
) -> Result<Vec<String>, LowerError> {
    lex.process_words(word, env)
        .map_err(|source| LowerError::Expand {
            at: at.clone(),
            word: word.to_owned(),
            source,
        })
}
