//! Node identifiers.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The id of a broker node in a cluster (Moleculer's `nodeID`).
///
/// Cheap to clone: it is shared, not copied, between the registry, endpoints and contexts.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// Wraps a string as a node id.
    pub fn new(id: impl AsRef<str>) -> Self {
        Self(Arc::from(id.as_ref()))
    }

    /// The default node id of this process: `<hostname>-<pid>`, as Moleculer builds it.
    pub fn for_this_process() -> Self {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let host = if host.is_empty() {
            "node".to_owned()
        } else {
            host
        };
        Self::new(format!("{host}-{}", std::process::id()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for NodeId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for NodeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for NodeId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for NodeId {
    fn from(s: String) -> Self {
        Self(Arc::from(s))
    }
}

impl PartialEq<str> for NodeId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for NodeId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::from)
    }
}

/// A fresh random id for contexts, requests and instances (a UUID v4 string, as Moleculer uses).
pub fn generate_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// [`generate_id`] as a shared string, with one allocation (contexts keep their ids this way).
pub fn generate_shared_id() -> std::sync::Arc<str> {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    std::sync::Arc::from(&*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_id_is_hostname_dash_pid() {
        let id = NodeId::for_this_process();
        let pid = std::process::id().to_string();
        let (host, tail) = id.rsplit_once('-').expect("a dash before the pid");
        assert_eq!(tail, pid);
        assert!(!host.is_empty());
    }

    #[test]
    fn serde_is_a_plain_string() {
        let id = NodeId::new("node-1");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"node-1\"");
        let back: NodeId = serde_json::from_str("\"node-1\"").unwrap();
        assert_eq!(back, id);
    }

    #[test]
    fn generated_ids_differ() {
        assert_ne!(generate_id(), generate_id());
        assert_eq!(generate_id().len(), 36);
    }
}
