//! `kiln debug parse`: print what kiln's parser makes of a Dockerfile.
//!
//! Two views, one per parser layer: `json` is the typed AST the solver consumes (stages,
//! instructions, validated flags, spans); `buildkit-dump` is the raw-node layer printed
//! exactly as BuildKit's parser golden tests print it, so the two parsers can be
//! compared file by file. A Dockerfile that does not parse is reported as a diagnostic
//! naming the file and line with a caret under the offending text, and the command
//! exits non-zero.

use std::fs;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use kiln_parser::ParseError;

/// Arguments of `kiln debug parse`.
#[derive(clap::Args)]
pub struct ParseArgs {
    /// The Dockerfile to read (`-` reads standard input).
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "Dockerfile"
    )]
    file: PathBuf,

    /// What to print.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
}

/// The output formats.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    /// The typed AST, as JSON.
    Json,
    /// The raw nodes, in BuildKit's parser golden-test format.
    BuildkitDump,
}

/// Runs `kiln debug parse`.
pub fn run(args: ParseArgs) -> anyhow::Result<ExitCode> {
    let (name, bytes) = if args.file.as_os_str() == "-" {
        let mut buf = Vec::new();
        io::stdin()
            .read_to_end(&mut buf)
            .context("reading the Dockerfile from standard input")?;
        ("<stdin>".to_owned(), buf)
    } else {
        let bytes =
            fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
        (args.file.display().to_string(), bytes)
    };
    let text = String::from_utf8(bytes).with_context(|| format!("{name} is not valid UTF-8"))?;
    let output = match args.format {
        Format::Json => kiln_parser::parse(&text)
            .map(|file| serde_json::to_string_pretty(&file).map(|json| json + "\n")),
        Format::BuildkitDump => {
            kiln_parser::syntax::parse_syntax(&text).map(|tree| Ok(tree.dump()))
        }
    };
    match output {
        Ok(rendered) => {
            let mut out = io::stdout().lock();
            out.write_all(rendered.context("rendering the AST as JSON")?.as_bytes())?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("{:?}", diagnostic(err, name, text));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The error as a diagnostic over the named source text.
pub(crate) fn diagnostic(err: ParseError, name: String, text: String) -> miette::Report {
    miette::Report::new(err).with_source_code(miette::NamedSource::new(name, text))
}
