//! `kiln debug expand`: the shell expander behind a JSON pipe.
//!
//! Requests come as JSON so that any input (quotes, newlines, `$`) crosses the process
//! boundary intact and so that scripts comparing kiln with BuildKit can feed both the
//! same cases. An expansion error is an answer (`{"error": …}`, exit 0), because
//! expanding bad input is what the tool is for; a request that is not valid JSON is a
//! misuse and fails the command. `--batch` answers one request per line, flushing each
//! answer, so a driver can hold the process open and talk to it line by line.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::io::{self, BufRead, Read, Write};
use std::process::ExitCode;

use anyhow::Context;
use kiln_parser::shell::{Lex, ShellError};
use serde::{Deserialize, Serialize};

/// Arguments of `kiln debug expand`.
#[derive(clap::Args)]
pub struct ExpandArgs {
    /// Read one JSON request per line and answer each on its own line, instead of one
    /// request from the whole of stdin.
    #[arg(long)]
    batch: bool,
}

/// One request: `{"mode": "word"|"words", "input": …, "env": {…}, "escape": "\\"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(default)]
    mode: Mode,
    input: String,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    escape: Escape,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Mode {
    #[default]
    Word,
    Words,
}

/// The escape character, `\` or `` ` `` as the Dockerfile `escape` directive allows.
#[derive(Deserialize, Clone, Copy)]
#[serde(try_from = "String")]
struct Escape(char);

impl Default for Escape {
    fn default() -> Escape {
        Escape('\\')
    }
}

impl TryFrom<String> for Escape {
    type Error = String;

    fn try_from(text: String) -> Result<Escape, String> {
        match text.as_str() {
            "\\" => Ok(Escape('\\')),
            "`" => Ok(Escape('`')),
            _ => Err(format!("escape must be \"\\\\\" or \"`\", not {text:?}")),
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Answer {
    Word { result: String },
    Words { words: Vec<String> },
    Error { error: String },
}

/// Runs `kiln debug expand`.
pub fn run(args: ExpandArgs) -> anyhow::Result<ExitCode> {
    let mut stdin = io::stdin().lock();
    let mut stdout = io::stdout().lock();
    if args.batch {
        for (index, line) in stdin.lines().enumerate() {
            let line = line.context("reading stdin")?;
            if line.trim().is_empty() {
                continue;
            }
            let request = serde_json::from_str(&line)
                .with_context(|| format!("request on line {} is not valid", index + 1))?;
            write_answer(&mut stdout, &answer(request))?;
        }
    } else {
        let mut text = String::new();
        stdin.read_to_string(&mut text).context("reading stdin")?;
        let request = serde_json::from_str(&text).context("request is not valid")?;
        write_answer(&mut stdout, &answer(request))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn answer(request: Request) -> Answer {
    let lex = Lex::new(request.escape.0);
    let outcome = match request.mode {
        Mode::Word => lex
            .process_word(&request.input, &request.env)
            .map(|result| Answer::Word { result }),
        Mode::Words => lex
            .process_words(&request.input, &request.env)
            .map(|words| Answer::Words { words }),
    };
    outcome.unwrap_or_else(|err| Answer::Error {
        error: describe(&err),
    })
}

/// The error with its causes and where in the input it is.
fn describe(err: &ShellError) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.push_str(&format!(" (at byte {})", err.offset()));
    text
}

/// Writes one answer line. Serialising first keeps a closed stdout an `io::Error` in the
/// chain, which `main` treats as a normal end.
fn write_answer(out: &mut impl Write, answer: &Answer) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(answer).context("encoding answer")?;
    line.push(b'\n');
    out.write_all(&line).context("writing answer")?;
    out.flush().context("writing answer")?;
    Ok(())
}
