//! Options that take `true` / `false` as a short form of `{ enabled = ... }` (`metrics`,
//! `tracing`), as Moleculer does.

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// A settings table with an `enabled` switch.
pub(crate) trait Switchable: Default {
    /// The defaults, with `enabled` set.
    fn switched(enabled: bool) -> Self;
}

/// Reads a flag or a table. A bad table keeps its own error, which names the key (an untagged
/// enum would hide it).
pub(crate) fn flag_or_table<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Switchable + DeserializeOwned,
{
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(enabled) => Ok(T::switched(enabled)),
        table => T::deserialize(table).map_err(serde::de::Error::custom),
    }
}
