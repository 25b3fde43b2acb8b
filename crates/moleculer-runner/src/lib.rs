//! # moleculer-runner
//!
//! Turns configuration into a running broker:
//!
//! - [`load_options`]: `moleculer.toml`, then `MOL_*` environment overrides with
//!   moleculer-runner's convention (`MOL_HEARTBEAT_INTERVAL=1` sets `heartbeatInterval`,
//!   `MOL_REGISTRY__STRATEGY=Random` sets `registry.strategy`, and the short `MOL_DISCOVERER`
//!   sets `registry.discoverer`). Unknown keys and bad values are refused, naming the key.
//! - [`builder_for`]: a broker builder with the transporter and discoverer the options name
//!   (`"TCP"`, `"tcp://..."`, `"Local"`), resolved explicitly, with no global registry.
//! - [`Runner`]: a node's `main` in one line: command line (`--config`, `--env-file`,
//!   `--silent`), configuration, services, and a graceful stop on SIGINT / SIGTERM; with
//!   `--instances N`, a supervisor of N worker processes whose output is kept in rotated log
//!   files, driven through a control socket ([`control_socket`]).

mod backends;
mod config;
mod control;
mod manager;
mod runner;
mod supervisor;
mod telemetry;
mod worker;
mod worker_logs;
mod worker_status;

pub use backends::builder_for;
pub use config::{config_file, load_options, ConfigError};
pub use control::control_socket;
pub use runner::{Runner, RunnerArgs, HEALTH_FILE_VAR};
