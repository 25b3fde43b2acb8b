//! Moleculer's etcd3 key names.

/// `moleculer[-ns]/discovery`.
pub(crate) fn prefix(namespace: &str) -> String {
    if namespace.is_empty() {
        "moleculer/discovery".to_owned()
    } else {
        format!("moleculer-{namespace}/discovery")
    }
}

/// `<prefix>/beats/<nodeID>/<instance first 8>/<seq>`.
pub(crate) fn beat(prefix: &str, node: &str, instance: &str, seq: u64) -> String {
    format!(
        "{prefix}/beats/{node}/{}/{seq}",
        &instance[..instance.len().min(8)]
    )
}

/// `<prefix>/info/<nodeID>`.
pub(crate) fn info(prefix: &str, node: &str) -> String {
    format!("{prefix}/info/{node}")
}

/// A beat key's node id, instance hash and seq.
pub(crate) fn parse_beat<'a>(prefix: &str, key: &'a str) -> Option<(&'a str, &'a str, u64)> {
    let rest = key.strip_prefix(prefix)?.strip_prefix("/beats/")?;
    let mut parts = rest.rsplitn(3, '/');
    let seq = parts.next()?.parse().ok()?;
    let hash = parts.next()?;
    let node = parts.next()?;
    Some((node, hash, seq))
}

/// An INFO key's node id.
pub(crate) fn parse_info<'a>(prefix: &str, key: &'a str) -> Option<&'a str> {
    let node = key.strip_prefix(prefix)?.strip_prefix("/info/")?;
    (!node.is_empty() && !node.contains('/')).then_some(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_moleculer() {
        assert_eq!(prefix(""), "moleculer/discovery");
        assert_eq!(prefix("prod"), "moleculer-prod/discovery");
        let key = beat("moleculer/discovery", "node-1", "b8cd3cab-99", 3);
        assert_eq!(key, "moleculer/discovery/beats/node-1/b8cd3cab/3");
        assert_eq!(
            parse_beat("moleculer/discovery", &key),
            Some(("node-1", "b8cd3cab", 3))
        );
        assert_eq!(
            info("moleculer/discovery", "n"),
            "moleculer/discovery/info/n"
        );
        assert_eq!(
            parse_info("moleculer/discovery", "moleculer/discovery/info/n"),
            Some("n")
        );
        assert_eq!(parse_info("moleculer/discovery", &key), None);
    }
}
