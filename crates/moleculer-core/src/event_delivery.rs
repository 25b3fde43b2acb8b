//! What a context knows about the event it delivers: how it was sent, and for which groups.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// How an event was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventType {
    /// Balanced: one handler per group.
    Emit,
    /// Every handler on every node.
    Broadcast,
    /// Every handler on this node only.
    BroadcastLocal,
}

impl EventType {
    /// Moleculer's name for it (`emit`, `broadcast`, `broadcastLocal`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Emit => "emit",
            EventType::Broadcast => "broadcast",
            EventType::BroadcastLocal => "broadcastLocal",
        }
    }
}

/// The groups an event was delivered for; one group (the common case) needs no allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EventGroups {
    /// No group filter.
    #[default]
    All,
    /// One group.
    One(Arc<str>),
    /// Several groups.
    Many(Arc<[Arc<str>]>),
}

impl EventGroups {
    /// The filter for an optional list of group names: none, or an empty list, means every
    /// group.
    pub fn from_names(names: Option<&[String]>) -> Self {
        match names {
            None | Some([]) => EventGroups::All,
            Some([one]) => EventGroups::One(Arc::from(one.as_str())),
            Some(many) => EventGroups::Many(many.iter().map(|s| Arc::from(s.as_str())).collect()),
        }
    }

    /// The groups as string slices.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many): (Option<&Arc<str>>, &[Arc<str>]) = match self {
            EventGroups::All => (None, &[]),
            EventGroups::One(g) => (Some(g), &[]),
            EventGroups::Many(gs) => (None, gs),
        };
        one.into_iter().chain(many).map(|g| &**g)
    }

    /// The groups as owned strings.
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }
}

/// What a context knows about the event it delivers.
#[derive(Debug, Clone)]
pub struct EventDelivery {
    /// The concrete event name (not the pattern).
    pub name: Arc<str>,
    /// How it was sent.
    pub kind: EventType,
    /// Groups it was delivered for.
    pub groups: EventGroups,
}
