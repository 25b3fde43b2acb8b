//! Cache keys as Moleculer 0.15 makes them, so Rust and JS nodes sharing a Redis cache find
//! each other's entries: `<action>:<params part>`, the params part made of the `keys` the
//! action names (or of all params), strings quoted, objects as `key|value|...`, arrays as
//! `[a|b]`, and parts longer than `maxParamsLength` shortened to a prefix plus the base64
//! SHA-256 of the whole.
//!
//! One difference remains: without `keys`, an object's fields are taken in this crate's map
//! order (sorted), where JS takes them in the order they arrived. Name the `keys` of an action
//! whose cache is shared with JS nodes.

use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::cacher::CacheOptions;
use crate::call_options::Meta;

/// The key of a call of `action` with these params, meta and headers.
pub fn cache_key(
    action: &str,
    opts: &CacheOptions,
    params: &Value,
    meta: &Meta,
    headers: &Meta,
    max_params_length: Option<usize>,
) -> String {
    let hashed = |part: String| shorten(part, max_params_length);
    let part = match opts.keys.as_deref() {
        None => hashed(key_part(Some(params))),
        Some([]) => return action.to_owned(),
        Some([one]) => hashed(key_part(lookup(one, params, meta, headers))),
        Some(keys) => {
            let parts: Vec<String> = keys
                .iter()
                .map(|key| {
                    let value = lookup(key, params, meta, headers);
                    let part = key_part(value);
                    if value.is_some_and(|v| v.is_object() || v.is_array()) {
                        hashed(part)
                    } else {
                        part
                    }
                })
                .collect();
            hashed(parts.join("|"))
        }
    };
    format!("{action}:{part}")
}

/// `#name` from meta, `@name` from headers, else from params; dotted paths go deeper.
fn lookup<'a>(
    key: &str,
    params: &'a Value,
    meta: &'a Meta,
    headers: &'a Meta,
) -> Option<&'a Value> {
    let (map, path) = if let Some(path) = key.strip_prefix('#') {
        (Some(meta), path)
    } else if let Some(path) = key.strip_prefix('@') {
        (Some(headers), path)
    } else {
        (None, key)
    };
    let mut parts = path.split('.');
    let head = parts.next()?;
    let mut value = match map {
        Some(map) => map.get(head)?,
        None => params.get(head)?,
    };
    for part in parts {
        value = value.get(part)?;
    }
    Some(value)
}

/// One value as a key part (`undefined` when absent, as JS writes it).
fn key_part(value: Option<&Value>) -> String {
    let mut out = String::new();
    match value {
        None => out.push_str("undefined"),
        Some(v) => write_part(v, &mut out),
    }
    out
}

fn write_part(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (_, Some(u), _) => out.push_str(&u.to_string()),
            // JS prints whole floats without a fraction.
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e21 => {
                out.push_str(&format!("{f:.0}"));
            }
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => {
            out.push('"');
            out.push_str(s);
            out.push('"');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push('|');
                }
                write_part(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push('|');
                }
                out.push_str(k);
                out.push('|');
                write_part(v, out);
            }
        }
    }
}

/// Moleculer's `_hashedKey`: a part longer than `max` (at least 44) becomes its first
/// `max - 44` characters and the base64 SHA-256 of the whole.
fn shorten(part: String, max: Option<usize>) -> String {
    let Some(max) = max.filter(|m| *m >= 44) else {
        return part;
    };
    // JS counts UTF-16 units; for the ASCII keys this is made for, the same as chars.
    if part.chars().count() <= max {
        return part;
    }
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(part.as_bytes()));
    let prefix: String = part.chars().take(max - 44).collect();
    prefix + &hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(v: Value) -> Meta {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn keys_are_made_as_moleculer_0_15_makes_them() {
        let none = Meta::new();
        let all = CacheOptions::enabled();
        let p = json!({"id": 5, "name": "bob", "tags": ["a", 2], "deep": {"x": true}, "n": null});
        assert_eq!(
            cache_key("users.get", &all, &p, &none, &none, None),
            r#"users.get:deep|x|true|id|5|n|null|name|"bob"|tags|["a"|2]"#
        );
        let one = CacheOptions::keys(["id"]);
        assert_eq!(
            cache_key("users.get", &one, &p, &none, &none, None),
            "users.get:5"
        );
        let m = meta(json!({"tenant": "acme", "user": {"id": 9}}));
        let several = CacheOptions::keys(["id", "name", "#tenant", "#user.id", "missing"]);
        assert_eq!(
            cache_key("users.get", &several, &p, &m, &none, None),
            r#"users.get:5|"bob"|"acme"|9|undefined"#
        );
        let empty = CacheOptions::keys(Vec::<String>::new());
        assert_eq!(
            cache_key("users.get", &empty, &p, &none, &none, None),
            "users.get"
        );
        assert_eq!(
            cache_key(
                "a.b",
                &CacheOptions::keys(["f"]),
                &json!({"f": 2.0}),
                &none,
                &none,
                None
            ),
            "a.b:2"
        );
        assert_eq!(
            cache_key(
                "a.b",
                &CacheOptions::keys(["f"]),
                &json!({"f": 2.5}),
                &none,
                &none,
                None
            ),
            "a.b:2.5"
        );
    }

    #[test]
    fn long_parts_are_shortened_to_a_prefix_and_a_hash() {
        let none = Meta::new();
        let p = json!({"text": "x".repeat(100)});
        let key = cache_key("a.b", &CacheOptions::enabled(), &p, &none, &none, Some(50));
        let part = key.strip_prefix("a.b:").unwrap();
        assert_eq!(part.len(), 50);
        assert!(part.starts_with("text|\""), "{part}");
        let short = cache_key(
            "a.b",
            &CacheOptions::enabled(),
            &json!({"a": 1}),
            &none,
            &none,
            Some(50),
        );
        assert_eq!(short, "a.b:a|1");
        // Under 44, Moleculer does not shorten at all.
        let never = cache_key("a.b", &CacheOptions::enabled(), &p, &none, &none, Some(10));
        assert!(never.len() > 100);
    }
}
