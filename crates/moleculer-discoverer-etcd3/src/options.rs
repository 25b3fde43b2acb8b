//! Options of the etcd3 discoverer.

use std::str::FromStr;

use moleculer_core::serializer::SerializerKind;

/// Where etcd is, and how values are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Etcd3Options {
    /// Endpoints, e.g. `127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Serializer of the stored values (every node must use the same). Default JSON.
    pub serializer: SerializerKind,
    /// Read every beat key's value every this many beats (safety net for the watch). Default 10.
    pub full_check: u32,
}

impl Default for Etcd3Options {
    fn default() -> Self {
        Self {
            endpoints: vec!["127.0.0.1:2379".into()],
            serializer: SerializerKind::Json,
            full_check: 10,
        }
    }
}

/// A discoverer string that is not an etcd3 URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an etcd3 discoverer (expected \"Etcd3\" or etcd3://host:port[,host:port])")]
pub struct NotAnEtcd3Url(pub String);

impl FromStr for Etcd3Options {
    type Err = NotAnEtcd3Url;

    fn from_str(s: &str) -> Result<Self, NotAnEtcd3Url> {
        if s.eq_ignore_ascii_case("etcd3") {
            return Ok(Self::default());
        }
        let rest = s
            .strip_prefix("etcd3://")
            .ok_or_else(|| NotAnEtcd3Url(s.to_owned()))?;
        let endpoints: Vec<String> = rest
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect();
        if endpoints.is_empty() {
            return Err(NotAnEtcd3Url(s.to_owned()));
        }
        Ok(Self {
            endpoints,
            ..Self::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let o: Etcd3Options = "etcd3://127.0.0.1:2379,127.0.0.1:2380".parse().unwrap();
        assert_eq!(o.endpoints, ["127.0.0.1:2379", "127.0.0.1:2380"]);
        assert!("redis://x"
            .parse::<Etcd3Options>()
            .unwrap_err()
            .to_string()
            .contains("redis://x"));
        assert!("etcd3://".parse::<Etcd3Options>().is_err());
    }
}
