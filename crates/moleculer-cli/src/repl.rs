//! `moleculer repl`: an interactive shell on the joined broker. Each line is one of the
//! command-line commands (`call math.add '{"a": 1}'`, `nodes`, ...), split as a shell would;
//! Tab completes command names and the actions and events the cluster knows; history is kept
//! for the session. `exit`, `quit` or end of input leaves.

use clap::Parser;
use moleculer_broker::ServiceBroker;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use crate::commands::{dispatch, Failure};
use crate::{Cli, Command};

/// One line of the REPL.
#[derive(Debug, Parser)]
#[command(
    no_binary_name = true,
    disable_version_flag = true,
    name = "",
    about = "Commands, with JSON in single quotes as in a shell; Tab completes; exit or Ctrl-D leaves"
)]
struct Line {
    #[command(subcommand)]
    command: Command,
}

const COMMANDS: [&str; 13] = [
    "nodes",
    "services",
    "actions",
    "events",
    "call",
    "emit",
    "broadcast",
    "ping",
    "info",
    "bench",
    "help",
    "exit",
    "quit",
];

/// Completes the first word from the commands, later words from the cluster's actions (after
/// `call` and `bench`) and events (after `emit` and `broadcast`).
struct Completion {
    broker: ServiceBroker,
}

impl Completion {
    fn names(&self, events: bool) -> Vec<String> {
        self.broker.with_registry(|r| {
            let mut names: Vec<String> = if events {
                r.events()
                    .lists()
                    .iter()
                    .map(|l| l.name().to_string())
                    .collect()
            } else {
                r.actions()
                    .lists()
                    .into_iter()
                    .map(|l| l.name().to_string())
                    .collect()
            };
            names.retain(|n| !n.starts_with('$'));
            names.sort();
            names.dedup();
            names
        })
    }
}

impl Completer for Completion {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before.rfind(' ').map_or(0, |i| i + 1);
        let word = &before[start..];
        let first = before[..start].split_whitespace().next();
        let pool: Vec<String> = match first {
            None => COMMANDS.iter().map(|c| (*c).to_owned()).collect(),
            Some("call" | "bench") => self.names(false),
            Some("emit" | "broadcast") => self.names(true),
            Some(_) => Vec::new(),
        };
        let candidates = pool
            .into_iter()
            .filter(|c| c.starts_with(word))
            .map(|c| Pair {
                display: c.clone(),
                replacement: c,
            })
            .collect();
        Ok((start, candidates))
    }
}

impl Hinter for Completion {
    type Hint = String;
}
impl Highlighter for Completion {}
impl Validator for Completion {}
impl Helper for Completion {}

/// Reads and runs lines until `exit` or end of input. A failed command prints its error and
/// the shell goes on.
pub async fn run(cli: &Cli, broker: &ServiceBroker) -> Result<(), Failure> {
    let mut editor: Editor<Completion, rustyline::history::DefaultHistory> = Editor::new()
        .map_err(|e| Failure {
            message: format!("error: cannot open the terminal: {e}"),
            code: 1,
        })?;
    editor.set_helper(Some(Completion {
        broker: broker.clone(),
    }));
    // Learn the whole cluster before the first line: a call right after joining would otherwise
    // go to whichever node answered first, and so would the next ones typed quickly.
    crate::commands::settle(broker, cli.wait()).await;
    loop {
        // Reading blocks: off the async workers, so the broker keeps answering meanwhile.
        let (returned, line) = tokio::task::spawn_blocking(move || {
            let line = editor.readline("mol $ ");
            (editor, line)
        })
        .await
        .map_err(|e| Failure {
            message: format!("error: {e}"),
            code: 1,
        })?;
        editor = returned;
        let line = match line {
            Ok(line) => line,
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => return Ok(()),
            Err(err) => {
                return Err(Failure {
                    message: format!("error: {err}"),
                    code: 1,
                })
            }
        };
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(trimmed);
        if matches!(trimmed, "exit" | "quit") {
            return Ok(());
        }
        let Some(words) = shlex::split(trimmed) else {
            eprintln!("error: unbalanced quotes");
            continue;
        };
        let words: Vec<String> = if words.first().map(String::as_str) == Some("help") {
            vec!["--help".into()]
        } else {
            words
        };
        match Line::try_parse_from(words) {
            Ok(Line {
                command: Command::Repl,
            }) => eprintln!("error: already in the REPL"),
            Ok(parsed) => {
                if let Err(failure) = dispatch(cli, &parsed.command, broker).await {
                    eprintln!("{}", failure.message);
                }
            }
            Err(err) => {
                let _ = err.print();
            }
        }
    }
}
