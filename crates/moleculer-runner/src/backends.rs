//! Backends chosen by name or URL.

use moleculer_broker::{BrokerError, BrokerOptions, ServiceBroker, ServiceBrokerBuilder};
use moleculer_cacher_redis::RedisCacher;
use moleculer_discoverer_redis::{NotARedisDiscoverer, RedisDiscoverer, RedisDiscovererOptions};
use moleculer_transporter_redis::{NotARedisUrl, RedisOptions, RedisTransporter};
use moleculer_transporter_tcp::{TcpOptions, TcpTransporter};

use crate::config::ConfigError;

fn refuse(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Broker(BrokerError::Options {
        key: key.into(),
        reason: reason.into(),
    })
}

#[cfg(feature = "etcd3")]
fn with_etcd3(
    builder: ServiceBrokerBuilder,
    options: &BrokerOptions,
    discoverer: &str,
) -> Result<ServiceBrokerBuilder, ConfigError> {
    use moleculer_discoverer_etcd3::{Etcd3Discoverer, Etcd3Options, NotAnEtcd3Url};
    let mut etcd: Etcd3Options = discoverer
        .parse()
        .map_err(|e: NotAnEtcd3Url| refuse("registry.discoverer", e.to_string()))?;
    etcd.serializer = options.serializer_kind()?;
    Ok(builder.discoverer(Etcd3Discoverer::new(etcd)))
}

#[cfg(not(feature = "etcd3"))]
fn with_etcd3(
    _builder: ServiceBrokerBuilder,
    _options: &BrokerOptions,
    discoverer: &str,
) -> Result<ServiceBrokerBuilder, ConfigError> {
    Err(refuse(
        "registry.discoverer",
        format!("'{discoverer}' needs the etcd3 feature, which this build lacks (cargo run --features etcd3; it needs protoc)"),
    ))
}

fn is_redis(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == "redis" || lower.starts_with("redis://") || lower.starts_with("rediss://")
}

/// A builder with these options and the transporter and discoverer they name.
pub fn builder_for(options: &BrokerOptions) -> Result<ServiceBrokerBuilder, ConfigError> {
    let mut builder = ServiceBroker::builder().options(options.clone());
    let discoverer = options.registry.discoverer.as_str();
    let local_discovery = discoverer.eq_ignore_ascii_case("local");
    if is_redis(discoverer) {
        let mut redis: RedisDiscovererOptions = discoverer
            .parse()
            .map_err(|e: NotARedisDiscoverer| refuse("registry.discoverer", e.to_string()))?;
        redis.serializer = options.serializer_kind()?;
        redis
            .apply(&options.registry.discoverer_options)
            .map_err(|e| refuse("registry.discovererOptions", e))?;
        builder = builder.discoverer(RedisDiscoverer::new(redis));
    } else if discoverer.eq_ignore_ascii_case("etcd3") || discoverer.starts_with("etcd3://") {
        builder = with_etcd3(builder, options, discoverer)?;
    } else if !local_discovery {
        return Err(refuse(
            "registry.discoverer",
            format!("'{discoverer}' is not available (expected \"Local\", \"redis://host:port\" or \"etcd3://host:port\")"),
        ));
    }
    if let Some(cacher) = options.cacher.as_ref().filter(|c| is_redis(&c.kind)) {
        let url = if cacher.kind.eq_ignore_ascii_case("redis") {
            "redis://127.0.0.1:6379"
        } else {
            cacher.kind.as_str()
        };
        let redis = RedisCacher::new(url, &cacher.options, &options.namespace)
            .map_err(|e| refuse("cacher", e.message.clone()))?;
        builder = builder.cacher(redis);
    }
    let Some(transporter) = options.transporter.as_deref() else {
        return Ok(builder);
    };
    let lower = transporter.to_ascii_lowercase();
    if lower == "tcp" || lower.starts_with("tcp://") {
        if !local_discovery {
            return Err(refuse("registry.discoverer", "the TCP transporter discovers by gossip; use \"Local\" with it (as Moleculer requires)"));
        }
        let tcp_options = TcpOptions::from_config(transporter, &options.transporter_options)
            .map_err(|e| refuse("transporter", e))?;
        let tcp = TcpTransporter::new(tcp_options);
        // The TCP transporter discovers by gossip; "Local" discovery means exactly that on TCP.
        return Ok(builder
            .transporter(tcp.clone())
            .discoverer(tcp.discoverer()));
    }
    if is_redis(transporter) {
        let redis: RedisOptions = transporter
            .parse()
            .map_err(|e: NotARedisUrl| refuse("transporter", e.to_string()))?;
        return Ok(builder.transporter(RedisTransporter::new(redis)));
    }
    Err(refuse(
        "transporter",
        format!("'{transporter}' is not available in this build (expected \"TCP\", \"tcp://host:port/nodeID,...\" or \"redis://host:port\")"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_tcp_and_refuses_unknown_backends() {
        let mut o = BrokerOptions {
            transporter: Some("tcp://127.0.0.1:6001/a".into()),
            ..Default::default()
        };
        assert!(builder_for(&o).is_ok());
        o.transporter = Some("redis://127.0.0.1:6379".into());
        assert!(builder_for(&o).is_ok());
        o.registry.discoverer = "redis://127.0.0.1:6379".into();
        assert!(builder_for(&o).is_ok());
        o.transporter = Some("TCP".into());
        let err = builder_for(&o).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("gossip"), "{err}");
        o.registry.discoverer = "Local".into();
        o.transporter = Some("nats://localhost".into());
        let err = builder_for(&o).map(|_| ()).unwrap_err().to_string();
        assert!(
            err.contains("`transporter`") && err.contains("nats://"),
            "{err}"
        );
        o.transporter = None;
        o.registry.discoverer = "Consul".into();
        let err = builder_for(&o).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("registry.discoverer"), "{err}");
    }
}
