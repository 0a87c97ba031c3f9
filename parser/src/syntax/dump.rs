//! BuildKit's golden-test format (`Node.Dump()`): one line per instruction,
//! `(keyword ["--flag" …] "arg" …)`, strings quoted as Go's `strconv.Quote` does, an
//! ONBUILD trigger nested as `(onbuild (run "…"))`. Heredoc bodies are not part of it:
//! BuildKit prints only the marker words, which are ordinary arguments.

use crate::golang::quote_into;
use crate::syntax::{Node, SyntaxTree};

impl SyntaxTree {
    /// The whole file in BuildKit's dump format, ending with a newline.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            out.push('(');
            node.dump_into(&mut out);
            out.push_str(")\n");
        }
        out
    }
}

impl Node {
    /// This instruction in BuildKit's dump format, without the enclosing parentheses.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        self.dump_into(&mut out);
        out
    }

    fn dump_into(&self, out: &mut String) {
        out.push_str(&self.keyword.to_lowercase());
        if !self.flags.is_empty() {
            out.push_str(" [");
            for (i, flag) in self.flags.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                quote_into(out, &flag.text);
            }
            out.push(']');
        }
        for arg in &self.args {
            out.push(' ');
            quote_into(out, arg);
        }
        if let Some(trigger) = &self.trigger {
            out.push_str(" (");
            trigger.dump_into(out);
            out.push(')');
        }
    }
}
