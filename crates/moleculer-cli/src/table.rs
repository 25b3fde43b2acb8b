//! Plain text tables, columns padded to their widest cell, and the words their cells use.

/// Renders `rows` under `headers`, two spaces between columns.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(headers.to_vec())];
    out.push(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  "),
    );
    for row in rows {
        out.push(line(row.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}

/// `1 h 02 m`, `3 m 04 s`, `12 s`.
pub fn duration_words(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} m {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} m", s / 3600, s % 3600 / 60),
    }
}

/// Kibibytes as MiB with one decimal.
pub fn memory_words(kib: &serde_json::Value) -> String {
    format!("{:.1} MiB", kib.as_f64().unwrap_or(0.0) / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_words() {
        assert_eq!(duration_words(12.7), "12 s");
        assert_eq!(duration_words(184.0), "3 m 04 s");
        assert_eq!(duration_words(3720.0), "1 h 02 m");
    }

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let text = render(
            &["Node ID", "State"],
            &[
                vec!["node-1".into(), "ONLINE".into()],
                vec!["a-much-longer-node".into(), "OFF".into()],
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Node ID             State");
        assert_eq!(lines[1], "------------------  ------");
        assert_eq!(lines[2], "node-1              ONLINE");
        assert_eq!(lines[3], "a-much-longer-node  OFF");
    }
}
