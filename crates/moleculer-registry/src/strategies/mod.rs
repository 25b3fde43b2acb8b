//! Load-balancing strategies, one per file, and the factory that builds them by name.

pub mod cpu_usage;
pub mod factory;
pub mod latency;
pub mod random;
pub mod rng;
pub mod round_robin;
mod sampling;
pub mod shard;

pub use cpu_usage::{CpuUsage, CpuUsageOptions};
pub use factory::{StrategyConfig, StrategyKind};
pub use latency::{Latency, LatencyOptions};
pub use random::Random;
pub use round_robin::RoundRobin;
pub use shard::{Shard, ShardOptions};
