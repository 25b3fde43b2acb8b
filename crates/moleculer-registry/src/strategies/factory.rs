//! Building strategies from their names and options, as they appear in config and in INFO.

use std::fmt;
use std::str::FromStr;

use moleculer_core::strategy::Strategy;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{CpuUsage, Latency, Random, RoundRobin, Shard};
use crate::error::RegistryError;

/// The built-in strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum StrategyKind {
    /// Each endpoint in turn (the default).
    #[default]
    RoundRobin,
    /// A random endpoint.
    Random,
    /// The least CPU-loaded node.
    CpuUsage,
    /// The host with the lowest ping latency.
    Latency,
    /// Consistent hashing on a key.
    Shard,
}

impl FromStr for StrategyKind {
    type Err = RegistryError;

    /// Case-insensitive, as Moleculer resolves names.
    fn from_str(name: &str) -> Result<Self, RegistryError> {
        match name.to_ascii_lowercase().as_str() {
            "roundrobin" => Ok(Self::RoundRobin),
            "random" => Ok(Self::Random),
            "cpuusage" | "cpu" => Ok(Self::CpuUsage),
            "latency" => Ok(Self::Latency),
            "shard" => Ok(Self::Shard),
            _ => Err(RegistryError::UnknownStrategy(name.to_owned())),
        }
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A strategy choice with its options, checked when created.
#[derive(Debug, Clone, PartialEq)]
pub struct StrategyConfig {
    /// Which strategy.
    pub kind: StrategyKind,
    /// Its options (`strategyOptions`), as JSON.
    pub options: Value,
}

impl Default for StrategyConfig {
    fn default() -> Self {
        Self {
            kind: StrategyKind::RoundRobin,
            options: Value::Null,
        }
    }
}

impl StrategyConfig {
    /// Parses a name and options, rejecting unknown names and bad options.
    pub fn new(name: &str, options: Value) -> Result<Self, RegistryError> {
        let config = Self {
            kind: name.parse()?,
            options,
        };
        config.build()?;
        Ok(config)
    }

    /// A new strategy instance (each endpoint list owns one).
    pub fn build(&self) -> Result<Box<dyn Strategy>, RegistryError> {
        Ok(match self.kind {
            StrategyKind::RoundRobin => Box::new(RoundRobin::default()),
            StrategyKind::Random => Box::new(Random::default()),
            StrategyKind::CpuUsage => Box::new(CpuUsage::new(self.options_as()?)),
            StrategyKind::Latency => Box::new(Latency::new(self.options_as()?)),
            StrategyKind::Shard => Box::new(Shard::new(self.options_as()?)),
        })
    }

    fn options_as<T: DeserializeOwned + Default>(&self) -> Result<T, RegistryError> {
        if self.options.is_null() {
            return Ok(T::default());
        }
        T::deserialize(&self.options).map_err(|e| RegistryError::BadStrategyOptions {
            strategy: self.kind.to_string(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(
            "roundRobin".parse::<StrategyKind>().unwrap(),
            StrategyKind::RoundRobin
        );
        assert_eq!(
            "CPUUSAGE".parse::<StrategyKind>().unwrap(),
            StrategyKind::CpuUsage
        );
    }

    #[test]
    fn unknown_names_and_bad_options_are_named() {
        let err = StrategyConfig::new("Fastest", Value::Null).unwrap_err();
        assert!(err.to_string().contains("Fastest"));
        let err = StrategyConfig::new("Shard", json!({"vnode": 3})).unwrap_err();
        assert!(err.to_string().contains("vnode"), "{err}");
        assert!(StrategyConfig::new("Shard", json!({"shardKey": "id", "vnodes": 50})).is_ok());
    }
}
