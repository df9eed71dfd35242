//! Text for people, JSON for tools: every command that prints data does both.

use serde::Serialize;
use serde_json::json;

/// How a command failed, which decides the exit code.
#[derive(Debug)]
pub enum CommandError {
    /// The input was read and is invalid or untrusted (exit 1).
    Invalid { message: String, details: serde_json::Value },
    /// The command could not run as asked (exit 2).
    Usage(String),
}

impl CommandError {
    pub fn invalid(message: impl Into<String>) -> Self {
        CommandError::Invalid { message: message.into(), details: serde_json::Value::Null }
    }

    pub fn invalid_with(message: impl Into<String>, details: impl Serialize) -> Self {
        let details = serde_json::to_value(details).unwrap_or(serde_json::Value::Null);
        CommandError::Invalid { message: message.into(), details }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Invalid { .. } => 1,
            CommandError::Usage(_) => 2,
        }
    }
}

pub struct Output {
    pub json: bool,
}

impl Output {
    /// Print a result: `text` for people, or `data` as one JSON document for tools.
    pub fn print(&self, data: &impl Serialize, text: impl FnOnce() -> String) {
        if self.json {
            match serde_json::to_string_pretty(data) {
                Ok(document) => stdout_line(&document),
                Err(error) => eprintln!("sphere: cannot encode JSON output: {error}"),
            }
        } else {
            stdout_line(&text());
        }
    }

    /// Messages for people (warnings, progress) go to stderr so stdout stays parseable.
    pub fn note(&self, line: &str) {
        eprintln!("{line}");
    }

    pub fn error(&self, error: &CommandError) {
        let (kind, message, details) = match error {
            CommandError::Invalid { message, details } => ("invalid", message, details.clone()),
            CommandError::Usage(message) => ("usage", message, serde_json::Value::Null),
        };
        eprintln!("sphere: error: {message}");
        if self.json {
            let document = json!({ "ok": false, "error": { "kind": kind, "message": message, "details": details } });
            stdout_line(&serde_json::to_string_pretty(&document).unwrap_or_default());
        }
    }
}

/// One line on stdout. `println!` panics when the reader has gone (`sphere app logs ID | grep -q
/// ...` closes the pipe at the first match); like other Unix tools, a vanished reader ends the
/// command quietly instead: nobody is left to read the rest.
fn stdout_line(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(error) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("sphere: cannot write output: {error}");
        std::process::exit(2);
    }
}
