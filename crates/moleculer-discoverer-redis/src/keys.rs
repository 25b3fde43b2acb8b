//! Moleculer's Redis key names.

/// `MOL[-ns]-DSCVR`.
pub(crate) fn prefix(namespace: &str) -> String {
    if namespace.is_empty() {
        "MOL-DSCVR".to_owned()
    } else {
        format!("MOL-{namespace}-DSCVR")
    }
}

/// `<prefix>-BEAT:<nodeID>|<instance first 8>|<seq>`.
pub(crate) fn beat(prefix: &str, node: &str, instance: &str, seq: u64) -> String {
    format!(
        "{prefix}-BEAT:{node}|{}|{seq}",
        &instance[..instance.len().min(8)]
    )
}

/// `<prefix>-INFO:<nodeID>`.
pub(crate) fn info(prefix: &str, node: &str) -> String {
    format!("{prefix}-INFO:{node}")
}

/// A beat key's node id, instance hash and seq.
pub(crate) fn parse_beat<'a>(prefix: &str, key: &'a str) -> Option<(&'a str, &'a str, u64)> {
    let rest = key.strip_prefix(prefix)?.strip_prefix("-BEAT:")?;
    let mut parts = rest.rsplitn(3, '|');
    let seq = parts.next()?.parse().ok()?;
    let hash = parts.next()?;
    let node = parts.next()?;
    Some((node, hash, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_moleculer() {
        assert_eq!(prefix(""), "MOL-DSCVR");
        assert_eq!(prefix("prod"), "MOL-prod-DSCVR");
        let key = beat("MOL-DSCVR", "node-1", "b8cd3cab-1234", 2);
        assert_eq!(key, "MOL-DSCVR-BEAT:node-1|b8cd3cab|2");
        assert_eq!(
            parse_beat("MOL-DSCVR", &key),
            Some(("node-1", "b8cd3cab", 2))
        );
        assert_eq!(info("MOL-dev-DSCVR", "n"), "MOL-dev-DSCVR-INFO:n");
        assert_eq!(parse_beat("MOL-DSCVR", "MOL-DSCVR-BEAT:bad"), None);
    }
}
