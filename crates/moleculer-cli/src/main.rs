//! `moleculer`: joins a live cluster as a short-lived node, does one thing, and leaves.
//!
//! ```sh
//! moleculer --transporter tcp://127.0.0.1:6001/seed nodes
//! moleculer call math.add '{"a": 1, "b": 2}'
//! moleculer --json services
//! ```
//!
//! The cluster comes from `moleculer.toml` (or `--config`), `MOL_*` and the flags. Exit codes:
//! 0 on success, 1 when the command failed (a call's error is printed on stderr with its name,
//! code, type and data), 2 for a bad command line or configuration.

mod bench;
mod commands;
mod control_client;
mod monit;
mod pm;
mod pm_logs;
mod pm_monit;
mod repl;
mod table;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// How to reach the cluster, and what to do there.
#[derive(Debug, Parser)]
#[command(
    name = "moleculer",
    version,
    about = "Lists, calls and pings the nodes of a live Moleculer cluster"
)]
pub struct Cli {
    /// Configuration file [default: moleculer.toml in the working directory, if there is one]
    #[arg(short = 'c', long, global = true, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Transporter (TCP, tcp://host:port/nodeID,..., redis://host:port)
    #[arg(short = 't', long, global = true)]
    transporter: Option<String>,
    /// Namespace of the cluster
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// Serializer (JSON, MsgPack)
    #[arg(short = 's', long, global = true)]
    serializer: Option<String>,
    /// Discoverer (Local, redis://..., etcd3://...)
    #[arg(short = 'd', long, global = true)]
    discoverer: Option<String>,
    /// Print machine-readable JSON on stdout
    #[arg(long, global = true)]
    json: bool,
    /// Milliseconds to wait for the cluster (and for a call's answer)
    #[arg(
        long = "wait",
        global = true,
        default_value_t = 2000,
        value_name = "MS"
    )]
    wait_ms: u64,
    #[command(subcommand)]
    command: Command,
}

/// The commands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// The nodes of the cluster
    Nodes,
    /// The services and the nodes that offer them
    Services,
    /// The actions and the nodes that offer them
    Actions,
    /// The events and the nodes that listen to them
    Events,
    /// Calls an action and prints its result
    Call {
        /// The action, e.g. math.add
        action: String,
        /// Its parameters as JSON
        #[arg(default_value = "{}")]
        params: String,
        /// Meta as a JSON object
        #[arg(long)]
        meta: Option<String>,
        /// Call this node only
        #[arg(long = "node")]
        node: Option<String>,
        /// Timeout in milliseconds
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Emits a balanced event
    Emit {
        /// The event
        event: String,
        /// Its payload as JSON
        #[arg(default_value = "{}")]
        payload: String,
    },
    /// Broadcasts an event to every listener
    Broadcast {
        /// The event
        event: String,
        /// Its payload as JSON
        #[arg(default_value = "{}")]
        payload: String,
    },
    /// Pings one node, or every node
    Ping {
        /// The node
        node: Option<String>,
    },
    /// What this command joined: namespace, transporter, nodes and services
    Info,
    /// An interactive shell: these commands, with history and completion of action names
    Repl,
    /// The workers of a supervisor on this machine (`--instances`), by its node id
    Pm {
        /// The supervisor's node id (its workers are <nodeID>-worker-<n>)
        node: String,
        /// What to do
        #[command(subcommand)]
        action: PmAction,
    },
    /// A live view of every node's metrics: requests and errors per second, mean time,
    /// requests in progress, CPU and memory (nodes need `metrics` on)
    Monit {
        /// Seconds between refreshes
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
        /// Stop after this many refreshes
        #[arg(long)]
        count: Option<u64>,
    },
    /// Calls an action over and over, then prints throughput and latency percentiles
    Bench {
        /// The action
        action: String,
        /// Its parameters as JSON
        #[arg(default_value = "{}")]
        params: String,
        /// Seconds to run
        #[arg(long, default_value_t = 5.0)]
        time: f64,
        /// Calls in flight at once
        #[arg(long, default_value_t = 10)]
        concurrency: usize,
        /// Call this node only
        #[arg(long = "node")]
        node: Option<String>,
    },
}

/// What to do with a supervisor's workers.
#[derive(Debug, Clone, Subcommand)]
pub enum PmAction {
    /// Each worker: pid, status, uptime, restarts, CPU and memory
    List,
    /// Everything known of a worker: pid, status, start time, restarts, last exit, CPU,
    /// memory, calls served, log file and command line
    Describe {
        /// A worker name or number, or `all`
        target: String,
    },
    /// Replaces the workers one at a time, each only after the previous one serves (SIGHUP)
    Reload,
    /// Prints the last lines of a worker's log (or of every worker's), then follows it
    Logs {
        /// A worker name or number [default: all]
        #[arg(default_value = "all")]
        target: String,
        /// How many lines to print from the end of each log
        #[arg(long, default_value_t = 20)]
        lines: usize,
        /// Keep printing lines as the workers write them (until Ctrl-C)
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// A live view of each worker's CPU, memory and calls per second (until Ctrl-C)
    Monit {
        /// Seconds between refreshes
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many refreshes
        #[arg(long)]
        count: Option<u64>,
    },
    /// Restarts a worker (name or number) or all
    Restart {
        /// A worker name or number, or `all`
        target: String,
    },
    /// Stops a worker (it is not restarted) or all
    Stop {
        /// A worker name or number, or `all`
        target: String,
    },
    /// Starts workers stopped with `stop`
    Start {
        /// A worker name or number, or `all`
        target: String,
    },
    /// Runs this many workers
    Scale {
        /// How many
        size: u64,
    },
}

impl Cli {
    fn wait(&self) -> Duration {
        Duration::from_millis(self.wait_ms.max(1))
    }
}

/// Joins, runs the command (or the REPL), leaves.
async fn run(cli: &Cli) -> Result<(), commands::Failure> {
    if let Command::Pm { node, action } = &cli.command {
        // The supervisor is on this machine: no need to join the cluster.
        return pm::run(cli, node, action).await;
    }
    let broker = commands::join(cli).await?;
    let result = match &cli.command {
        Command::Repl => repl::run(cli, &broker).await,
        Command::Monit { interval, count } => monit::run(cli, &broker, *interval, *count).await,
        command => commands::dispatch(cli, command, &broker).await,
    };
    broker.stop().await;
    result
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(err.exit_code() as u8);
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .try_init();
    match run(&cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        // Clap checks (in debug builds) that no two flags share a name; a clash would make
        // every run of the command panic.
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
