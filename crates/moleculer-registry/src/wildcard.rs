//! Event-name patterns: `?` is one character, `*` any run without a dot, `**` anything.

/// Whether `pattern` contains wildcard characters at all.
pub fn is_pattern(pattern: &str) -> bool {
    pattern.bytes().any(|b| b == b'*' || b == b'?')
}

/// Whether the event name `text` matches `pattern`.
///
/// Same rules as Moleculer's `utils.match`: `?` matches any single character, `*` matches any
/// run of characters within one dot-separated segment, `**` matches across segments. Unlike
/// Moleculer's regex translation, a `.` in the pattern is a literal dot.
pub fn matches(text: &str, pattern: &str) -> bool {
    match_bytes(text.as_bytes(), pattern.as_bytes())
}

fn match_bytes(text: &[u8], pattern: &[u8]) -> bool {
    match pattern.first() {
        None => text.is_empty(),
        Some(b'*') if pattern.get(1) == Some(&b'*') => {
            let rest = &pattern[2..];
            (0..=text.len()).any(|skip| match_bytes(&text[skip..], rest))
        }
        Some(b'*') => {
            let rest = &pattern[1..];
            let segment_end = text.iter().position(|&b| b == b'.').unwrap_or(text.len());
            (0..=segment_end).any(|skip| match_bytes(&text[skip..], rest))
        }
        Some(b'?') => !text.is_empty() && match_bytes(&text[1..], &pattern[1..]),
        Some(&c) => text.first() == Some(&c) && match_bytes(&text[1..], &pattern[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names() {
        assert!(matches("user.created", "user.created"));
        assert!(!matches("user.created", "user.removed"));
        assert!(!matches("user.created.x", "user.created"));
    }

    #[test]
    fn single_star_stays_within_a_segment() {
        assert!(matches("user.created", "user.*"));
        assert!(!matches("user.created.now", "user.*"));
        assert!(matches("user", "*"));
        assert!(!matches("user.created", "*"));
        assert!(matches("user.created", "*.created"));
        assert!(matches("users.created", "user*.created"));
        assert!(matches("user.", "user.*"));
    }

    #[test]
    fn double_star_crosses_segments() {
        assert!(matches("user.created.now", "user.**"));
        assert!(matches("anything.at.all", "**"));
        assert!(matches("a.b.c.end", "a.**.end"));
        assert!(!matches("b.c", "a.**"));
        assert!(matches("$node.connected", "$node.**"));
    }

    #[test]
    fn question_mark_is_one_character() {
        assert!(matches("user.created", "user.creat?d"));
        assert!(!matches("user.creatd", "user.creat?d"));
        assert!(matches("v1.users", "v?.users"));
    }

    #[test]
    fn dot_is_literal() {
        assert!(!matches("userXcreated", "user.created"));
        assert!(!matches("userXcreated", "user.*"));
    }

    #[test]
    fn detects_patterns() {
        assert!(is_pattern("a.*"));
        assert!(is_pattern("a?"));
        assert!(!is_pattern("a.b"));
    }
}
