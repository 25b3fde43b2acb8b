//! Detecting another live process that uses this node's id, without false alarms.
//!
//! An INFO carrying our node id but another instance id may be a replay of an old packet
//! (Moleculer issue #629) rather than a live duplicate. So the first such INFO only earns a
//! probe: a DISCOVER, carrying our instance id, sent to our own node id. A live duplicate
//! answers it with its INFO (or sends its own probe), and only that proves the conflict. This
//! file holds that decision, free of I/O; membership sends the packets.

use std::collections::HashSet;

/// What to do about an INFO or DISCOVER that carries our own node id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Our own echo, or nothing new: do nothing.
    Ignore,
    /// Unknown instance: probe it (and announce ourselves again, peers may have taken its INFO
    /// for ours).
    Probe,
    /// A live process uses our node id; first proof of it.
    Conflict,
}

/// The conflict state of one broker.
#[derive(Debug, Default)]
pub(crate) struct NodeIdConflict {
    /// Foreign instances we asked to prove they are alive.
    probed: HashSet<String>,
    /// The live duplicate, once proven.
    confirmed: Option<String>,
}

impl NodeIdConflict {
    /// An INFO with our node id from instance `theirs` arrived (we are instance `ours`).
    pub fn on_info(&mut self, ours: &str, theirs: &str) -> Verdict {
        if theirs.is_empty() || theirs == ours {
            return Verdict::Ignore;
        }
        if self.probed.contains(theirs) {
            // It answered our probe.
            return self.confirm(theirs);
        }
        self.probed.insert(theirs.to_owned());
        Verdict::Probe
    }

    /// A DISCOVER with our node id from instance `theirs` arrived: a live duplicate asking us to
    /// prove ourselves. `None` for our own echo (or a DISCOVER that names no instance).
    pub fn on_discover(&mut self, ours: &str, theirs: Option<&str>) -> Option<Verdict> {
        let theirs = theirs.filter(|t| *t != ours)?;
        Some(self.confirm(theirs))
    }

    /// A peer vouches that instance `theirs` is alive and holds our node id: proof enough.
    pub fn taken(&mut self, theirs: &str) -> Verdict {
        self.confirm(theirs)
    }

    fn confirm(&mut self, theirs: &str) -> Verdict {
        if self.confirmed.is_some() {
            return Verdict::Ignore;
        }
        self.confirmed = Some(theirs.to_owned());
        Verdict::Conflict
    }

    /// The live duplicate's instance id, once proven.
    pub fn confirmed(&self) -> Option<&str> {
        self.confirmed.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_echo_is_ignored() {
        let mut c = NodeIdConflict::default();
        assert_eq!(c.on_info("me", "me"), Verdict::Ignore);
        assert_eq!(c.on_info("me", ""), Verdict::Ignore);
        assert_eq!(c.on_discover("me", Some("me")), None);
        assert_eq!(c.on_discover("me", None), None);
        assert_eq!(c.confirmed(), None);
    }

    #[test]
    fn a_replayed_info_only_earns_a_probe() {
        let mut c = NodeIdConflict::default();
        assert_eq!(c.on_info("me", "old"), Verdict::Probe);
        assert_eq!(c.confirmed(), None, "one INFO proves nothing");
    }

    #[test]
    fn an_instance_that_answers_the_probe_is_a_conflict_reported_once() {
        let mut c = NodeIdConflict::default();
        assert_eq!(c.on_info("me", "other"), Verdict::Probe);
        assert_eq!(c.on_info("me", "other"), Verdict::Conflict);
        assert_eq!(c.confirmed(), Some("other"));
        assert_eq!(c.on_info("me", "other"), Verdict::Ignore);
        assert_eq!(c.on_discover("me", Some("other")), Some(Verdict::Ignore));
    }

    #[test]
    fn a_probe_from_another_instance_proves_it_alive() {
        let mut c = NodeIdConflict::default();
        assert_eq!(
            c.on_discover("me", Some("newcomer")),
            Some(Verdict::Conflict)
        );
        assert_eq!(c.confirmed(), Some("newcomer"));
        // A second duplicate does not replace the first.
        assert_eq!(c.on_discover("me", Some("third")), Some(Verdict::Ignore));
        assert_eq!(c.confirmed(), Some("newcomer"));
    }
}
