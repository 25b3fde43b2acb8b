//! The runner: what a service binary's `main` hands its services to. It reads the command
//! line, an optional env file, `moleculer.toml` (or `--config`) and `MOL_*`, starts the broker,
//! and stops it gracefully on SIGINT or SIGTERM.
//!
//! ```no_run
//! # use moleculer_runner::Runner;
//! # async fn demo() -> std::process::ExitCode {
//! // In `#[tokio::main] async fn main() -> ExitCode`:
//! Runner::new().name("orders node").run().await
//! # }
//! ```
//!
//! Exit codes: 0 after a graceful stop (and for `--help`, `--version`), 2 for a bad command
//! line or configuration, 1 when the broker cannot start.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use moleculer_broker::{BrokerError, Service, ServiceBroker, ServiceBrokerBuilder};
use moleculer_core::Middleware;

use crate::supervisor::{supervise, Outcome};
use crate::telemetry;
use crate::worker::{worker_name, Plan, READY_FILE_VAR, WORKER_VAR};
use crate::worker_logs::{parse_size, LogPolicy};
use crate::worker_status::{self, CallCounter};
use crate::{builder_for, config_file, load_options, ConfigError};

/// The variable naming a file the node rewrites every second while it runs (its node id,
/// whether its transporter is connected, calls served), for `--healthcheck`.
pub const HEALTH_FILE_VAR: &str = "MOLECULER_HEALTH_FILE";
/// A status older than this is a node that hangs or is gone.
const HEALTHY_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The runner's command line.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    version,
    about = "Runs a Moleculer node: moleculer.toml (or --config), then MOL_* variables"
)]
pub struct RunnerArgs {
    /// Configuration file [default: moleculer.toml in the working directory, if there is one]
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Environment variables to load first (KEY=VALUE lines); variables already set win
    #[arg(short = 'E', long = "env-file", value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// No log output
    #[arg(short = 's', long)]
    pub silent: bool,
    /// Run N worker processes of this node (`max`: one per CPU), named <nodeID>-worker-<n>,
    /// restarted when they die
    #[arg(short = 'i', long, value_name = "N|max", value_parser = parse_instances)]
    pub instances: Option<usize>,
    /// With --instances: the folder of the workers' log files (<worker>.log)
    /// [default: <tmp>/moleculer-<nodeID>-logs]
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// With --instances: a worker's log file is rotated at this size (three old files kept)
    #[arg(long, value_name = "SIZE", default_value = "10M", value_parser = parse_size)]
    pub log_max_size: u64,
    /// Checks the status file named by MOLECULER_HEALTH_FILE: exit 0 when the node wrote it
    /// in the last 10 s with its transporter connected, else 1 (a container's HEALTHCHECK)
    #[arg(long)]
    pub healthcheck: bool,
}

/// `N` (at least 1) or `max` (one per CPU).
fn parse_instances(value: &str) -> Result<usize, String> {
    if value.eq_ignore_ascii_case("max") {
        return Ok(std::thread::available_parallelism().map_or(1, |n| n.get()));
    }
    match value.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected a number of at least 1, or max".into()),
    }
}

/// Registers something on the broker before it starts.
type Setup = Box<dyn FnOnce(&ServiceBroker) -> Result<(), BrokerError> + Send>;
/// Adds something to the broker's builder (middlewares must be in place before it is built).
type Build = Box<dyn FnOnce(ServiceBrokerBuilder) -> ServiceBrokerBuilder + Send>;

/// Runs one node with the given services; see the [module docs](self).
pub struct Runner {
    name: String,
    log_level: String,
    builds: Vec<Build>,
    setups: Vec<Setup>,
}

impl Default for Runner {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a run ended early: the sentence to print and the exit code.
struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 2,
        }
    }

    fn runtime(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 1,
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(err: ConfigError) -> Self {
        Failure::usage(err.to_string())
    }
}

impl Runner {
    /// A runner with no services yet.
    pub fn new() -> Self {
        Self {
            name: "node".into(),
            log_level: "info".into(),
            builds: Vec::new(),
            setups: Vec::new(),
        }
    }

    /// The log level when `RUST_LOG` is not set (default `info`).
    pub fn log_level(mut self, level: impl Into<String>) -> Self {
        self.log_level = level.into();
        self
    }

    /// What the node is called in its "ready" log line (default "node").
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Adds a service.
    pub fn service<S: Service>(mut self, service: S) -> Self {
        self.setups
            .push(Box::new(move |broker| broker.create_service(service)));
        self
    }

    /// Adds a middleware (in the order given, as on the builder).
    pub fn middleware<M: Middleware>(mut self, middleware: M) -> Self {
        self.builds
            .push(Box::new(move |builder| builder.middleware(middleware)));
        self
    }

    /// Runs `setup` on the broker before it starts (several services, middlewares...).
    pub fn setup(
        mut self,
        setup: impl FnOnce(&ServiceBroker) -> Result<(), BrokerError> + Send + 'static,
    ) -> Self {
        self.setups.push(Box::new(setup));
        self
    }

    /// Runs with this process's command line and environment until SIGINT or SIGTERM.
    pub async fn run(self) -> ExitCode {
        self.run_with(std::env::args_os(), std::env::vars()).await
    }

    /// Runs with the given command line (program name first) and environment.
    pub async fn run_with(
        self,
        args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> ExitCode {
        let args = match RunnerArgs::try_parse_from(args) {
            Ok(args) => args,
            Err(err) => {
                // Usage errors exit 2; --help and --version print and exit 0.
                let _ = err.print();
                return ExitCode::from(err.exit_code() as u8);
            }
        };
        match self.serve(&args, env.into_iter().collect()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(failure) => {
                eprintln!("error: {}", failure.message);
                ExitCode::from(failure.code)
            }
        }
    }

    async fn serve(self, args: &RunnerArgs, env: Vec<(String, String)>) -> Result<(), Failure> {
        let env = with_env_file(env, args.env_file.as_deref())?;
        let var = |name: &str| {
            env.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| PathBuf::from(v))
        };
        if args.healthcheck {
            return healthcheck(var(HEALTH_FILE_VAR));
        }
        let config = config_file(args.config.as_deref()).map_err(Failure::usage)?;
        let worker = env.iter().any(|(k, _)| k == WORKER_VAR);
        // A worker's ready file doubles as its status file; a lone node writes one on request.
        let status_file = var(READY_FILE_VAR).or_else(|| var(HEALTH_FILE_VAR));
        let worker_index = var(WORKER_VAR).and_then(|n| n.to_str()?.parse::<u16>().ok());
        let mut options = load_options(Some(&config), env)?;
        if let Some(n) = worker_index.filter(|_| options.metrics.port != 0) {
            // Each worker is scraped on its own port: worker n on port + n - 1.
            options.metrics.port = options
                .metrics
                .port
                .checked_add(n - 1)
                .ok_or_else(|| Failure::usage(format!("metrics.port {} leaves no port for worker {n} (each worker listens on the next port up)", options.metrics.port)))?;
        }
        // A worker always logs: its output goes to its log file, and the supervisor alone
        // decides (by its own --silent) whether it also reaches the terminal.
        let logs = (!args.silent || worker).then_some(telemetry::Logs {
            default_level: &self.log_level,
            format: options.log_format,
        });
        let service = options.node_id.clone().unwrap_or_else(host_name);
        let shipper = telemetry::init(logs, &options, &service).map_err(Failure::usage)?;
        if let Some(instances) = args.instances.filter(|_| !worker) {
            let base = options.node_id.clone().unwrap_or_else(host_name);
            let logs = LogPolicy {
                dir: args
                    .log_dir
                    .clone()
                    .unwrap_or_else(|| std::env::temp_dir().join(format!("moleculer-{base}-logs"))),
                max_bytes: args.log_max_size,
                keep: 3,
                echo: !args.silent,
            };
            return supervise_group(base, instances, logs).await;
        }
        let mut builder = builder_for(&options)?;
        let counter = CallCounter::default();
        if status_file.is_some() {
            builder = builder.middleware(counter.clone());
        }
        for build in self.builds {
            builder = build(builder);
        }
        let broker = builder.build().map_err(|e| Failure::usage(e.to_string()))?;
        for setup in self.setups {
            setup(&broker).map_err(|e| Failure::runtime(e.to_string()))?;
        }
        if options.transporter.is_none() {
            tracing::warn!("no transporter is configured: this node runs alone (set `transporter` in moleculer.toml or MOL_TRANSPORTER)");
        }
        // Handlers first: a signal that arrives while the broker starts must still stop it
        // gracefully (peers see the node as soon as its INFO goes out, before `start` returns).
        let stop =
            stop_signal().map_err(|e| Failure::runtime(format!("cannot watch signals: {e}")))?;
        broker
            .start()
            .await
            .map_err(|e| Failure::runtime(e.to_string()))?;
        tracing::info!(node = %broker.node_id(), transporter = options.transporter.as_deref().unwrap_or("none"), "{} ready", self.name);
        if let Some(file) = status_file {
            // A supervisor waits for this before it replaces the next worker.
            let connected = broker.clone();
            let metrics = broker
                .metrics_address()
                .map(|a| format!("http://{a}{}", options.metrics.path));
            worker_status::report(
                file,
                broker.node_id().to_string(),
                counter,
                metrics,
                move || connected.is_connected(),
            );
        }
        if let Some(shipper) = &shipper {
            tokio::spawn(shipper.clone().run());
        }
        stop.await;
        tracing::info!(node = %broker.node_id(), "stopping");
        broker.stop().await;
        if let Some(shipper) = &shipper {
            // The spans of the last calls, before the process goes.
            shipper.flush().await;
        }
        Ok(())
    }
}

/// Runs the group of workers; the supervisor itself joins no cluster.
async fn supervise_group(base: String, instances: usize, logs: LogPolicy) -> Result<(), Failure> {
    tracing::info!(
        "supervising {instances} workers: {} ... {} (logs in {})",
        worker_name(&base, 1),
        worker_name(&base, instances),
        logs.dir.display()
    );
    let plan = Plan {
        base,
        instances,
        args: std::env::args_os().skip(1).collect(),
        logs,
    };
    match supervise(plan).await {
        Ok(Outcome::Stopped { clean: true }) => Ok(()),
        Ok(Outcome::Stopped { clean: false }) => Err(Failure::runtime(
            "not every worker stopped cleanly (see the log above)",
        )),
        Ok(Outcome::Flapping(why)) => Err(Failure::runtime(why)),
        Err(err) => Err(Failure::runtime(format!("cannot run the workers: {err}"))),
    }
}

/// `--healthcheck`: whether the node's status file is fresh and says it is connected.
fn healthcheck(file: Option<PathBuf>) -> Result<(), Failure> {
    let file = file.ok_or_else(|| {
        Failure::usage(format!(
            "--healthcheck needs {HEALTH_FILE_VAR}, the file the node writes"
        ))
    })?;
    let age = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .map_err(|e| Failure::runtime(format!("no status in {}: {e}", file.display())))?
        .elapsed()
        .unwrap_or_default();
    if age > HEALTHY_WITHIN {
        return Err(Failure::runtime(format!(
            "the node last wrote {} {} s ago: it hangs or is gone",
            file.display(),
            age.as_secs()
        )));
    }
    let status = worker_status::read(&file)
        .ok_or_else(|| Failure::runtime(format!("{} is not a status file", file.display())))?;
    if status["connected"] != true {
        return Err(Failure::runtime(format!(
            "node {} is not connected to its transporter",
            status["nodeID"].as_str().unwrap_or("?")
        )));
    }
    println!(
        "node {} is up and connected",
        status["nodeID"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// This machine's host name (Moleculer's default node id stem).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into())
}

/// `env` with the variables of `file` added, those already in `env` winning.
fn with_env_file(
    mut env: Vec<(String, String)>,
    file: Option<&Path>,
) -> Result<Vec<(String, String)>, Failure> {
    let Some(file) = file else { return Ok(env) };
    let entries = dotenvy::from_path_iter(file)
        .map_err(|e| Failure::usage(format!("cannot read the env file {}: {e}", file.display())))?;
    for entry in entries {
        let (key, value) = entry.map_err(|e| {
            Failure::usage(format!("the env file {} is not valid: {e}", file.display()))
        })?;
        if !env.iter().any(|(k, _)| *k == key) {
            env.push((key, value));
        }
    }
    Ok(env)
}

/// Resolves on the first SIGINT or SIGTERM (Ctrl-C only, off Unix).
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunnerArgs, clap::Error> {
        RunnerArgs::try_parse_from(std::iter::once("node").chain(args.iter().copied()))
    }

    #[test]
    fn flags_long_and_short() {
        let a = parse(&["-c", "a.toml", "-E", ".env", "--silent"]).unwrap();
        assert_eq!(a.config, Some(PathBuf::from("a.toml")));
        assert_eq!(a.env_file, Some(PathBuf::from(".env")));
        assert!(a.silent);
        assert_eq!(parse(&[]).unwrap().config, None);
    }

    #[test]
    fn a_bad_flag_is_a_usage_error_with_exit_code_2() {
        for bad in ["0", "x", "-1"] {
            let err = parse(&[&format!("--instances={bad}")]).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains("at least 1"), "{err}");
        }
        assert_eq!(parse(&["-i", "3"]).unwrap().instances, Some(3));
        assert!(parse(&["--instances", "max"]).unwrap().instances >= Some(1));
        let err = parse(&["--instancez", "3"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--instancez"), "{err}");
        assert_eq!(parse(&["--version"]).unwrap_err().exit_code(), 0);
    }

    #[test]
    fn the_env_file_fills_in_what_the_environment_lacks() {
        let dir = std::env::temp_dir().join(format!("runner-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("test.env");
        std::fs::write(&file, "MOL_NODE_ID=from-file\nMOL_NAMESPACE=staging\n").unwrap();
        let env = with_env_file(vec![("MOL_NODE_ID".into(), "from-env".into())], Some(&file))
            .ok()
            .unwrap();
        assert!(env.contains(&("MOL_NODE_ID".into(), "from-env".into())));
        assert!(env.contains(&("MOL_NAMESPACE".into(), "staging".into())));
        let missing = with_env_file(Vec::new(), Some(&dir.join("nope.env")))
            .err()
            .unwrap();
        assert_eq!(missing.code, 2);
        assert!(missing.message.contains("nope.env"), "{}", missing.message);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn healthcheck_wants_a_fresh_status_that_says_connected() {
        let dir = std::env::temp_dir().join(format!("runner-health-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("health");
        let missing = healthcheck(None).err().unwrap();
        assert_eq!(missing.code, 2);
        assert!(missing.message.contains(HEALTH_FILE_VAR));
        assert_eq!(healthcheck(Some(file.clone())).err().unwrap().code, 1);

        std::fs::write(&file, r#"{"nodeID":"n1","connected":true,"calls":3}"#).unwrap();
        assert!(healthcheck(Some(file.clone())).is_ok());
        std::fs::write(&file, r#"{"nodeID":"n1","connected":false,"calls":3}"#).unwrap();
        let down = healthcheck(Some(file.clone())).err().unwrap();
        assert!(down.message.contains("not connected"), "{}", down.message);

        std::fs::write(&file, r#"{"nodeID":"n1","connected":true,"calls":3}"#).unwrap();
        let stale = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(stale)
            .unwrap();
        let hung = healthcheck(Some(file)).err().unwrap();
        assert!(
            hung.message.contains("hangs or is gone"),
            "{}",
            hung.message
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_missing_config_file_that_was_asked_for_exits_2() {
        let code = Runner::new()
            .run_with(
                [
                    "node",
                    "--silent",
                    "--config",
                    "/nonexistent/moleculer.toml",
                ],
                Vec::new(),
            )
            .await;
        assert_eq!(code, ExitCode::from(2));
        let code = Runner::new()
            .run_with(
                ["node", "--silent"],
                vec![("MOL_HEARTBEAT_INTERVALL".to_owned(), "1".to_owned())],
            )
            .await;
        assert_eq!(code, ExitCode::from(2), "a bad config key is a usage error");
    }
}
