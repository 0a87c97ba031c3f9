//! ONBUILD triggers: instructions an image (or an earlier stage) leaves for the stages
//! built on it.
//!
//! A trigger is stored as text and parsed only when it fires, with the same parser as
//! the Dockerfile. The parser reads whole Dockerfiles, whose instructions must follow a
//! FROM, so each trigger is parsed after a `FROM scratch` line and must yield exactly
//! one instruction. Fired instructions are placed at the stage's FROM line, as BuildKit
//! places them, so errors and progress point at the stage that fired them.

use kiln_parser::instructions::{Command, Instruction};

use super::{LowerError, Place};

/// Parses `triggers` into the instructions they fire, in order.
pub(crate) fn parse_triggers(
    triggers: &[String],
    at: &Place,
) -> Result<Vec<Instruction<'static>>, LowerError> {
    triggers
        .iter()
        .map(|trigger| {
            let text = format!("FROM scratch\n{trigger}\n");
            let parsed = kiln_parser::parse(&text).map_err(|source| LowerError::Trigger {
                at: at.clone(),
                trigger: trigger.clone(),
                source: Box::new(source),
            })?;
            let mut instructions = match <[_; 1]>::try_from(parsed.stages) {
                Ok([stage]) => stage.instructions,
                Err(_) => Vec::new(),
            };
            let mut instruction = match (instructions.pop(), instructions.is_empty()) {
                (Some(instruction), true) => instruction,
                _ => {
                    return Err(LowerError::TriggerCount {
                        at: at.clone(),
                        trigger: trigger.clone(),
                    });
                }
            };
            if let Command::Onbuild(_) = instruction.command {
                return Err(LowerError::TriggerKeyword {
                    at: at.clone(),
                    keyword: "ONBUILD".to_owned(),
                });
            }
            // The ONBUILD's line, which came from a span.
            let line = u32::try_from(at.line).unwrap_or(u32::MAX);
            instruction.span.line = line;
            instruction.span.end_line = line;
            Ok(instruction.into_owned())
        })
        .collect()
}
