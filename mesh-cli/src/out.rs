//! Human output: aligned tables, colours only when stdout is a terminal, and a progress
//! line on stderr for waits longer than a second.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// Whether stdout is a terminal (colours are used only then).
pub(crate) fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// `text` in ANSI colour `code` when `on`.
pub(crate) fn paint(on: bool, code: &str, text: &str) -> String {
    if on {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// The colour of a node status or event kind.
pub(crate) fn tone(word: &str) -> &'static str {
    match word {
        "online" | "joined" | "reachable" | "healthy" | "ok" => "32",
        "taken" | "updated" | "restarted" | "degraded" => "33",
        "offline" | "left" | "unreachable" | "error" => "31",
        _ => "0",
    }
}

/// Rows under a header, each column as wide as its widest cell (the last one unpadded).
/// `paint_col` gives a column whose cells are coloured by [`tone`].
pub(crate) fn table(header: &[&str], rows: &[Vec<String>], paint_col: Option<usize>) -> String {
    let on = colour();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>, bold: bool| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = width
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(c.chars().count());
            let shown = if bold {
                paint(on, "1", c)
            } else if Some(i) == paint_col {
                paint(on, tone(c), c)
            } else {
                c.clone()
            };
            s.push_str(&shown);
            if i != last {
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect(), true);
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.clone(), false));
        out.push('\n');
    }
    out
}

/// Awaits `f`; past one second, says on stderr what it waits for.
pub(crate) async fn waiting<F: Future>(what: &str, f: F) -> F::Output {
    tokio::pin!(f);
    tokio::select! {
        r = &mut f => return r,
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
    let mut err = std::io::stderr();
    let _ = writeln!(err, "mesh: waiting for {what}...");
    f.await
}

/// A duration for people: `850ms`, `12s`, `3m05s`, `2h10m`, `4d03h`.
pub(crate) fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// A JSON value compactly, strings without their quotes.
pub(crate) fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_ages_read() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["wide cell".into(), "x".into()],
                vec!["b".into(), "".into()],
            ],
            None,
        );
        assert_eq!(t, "A          LONGER\nwide cell  x\nb\n");
        assert_eq!(age(850), "850ms");
        assert_eq!(age(12_000), "12s");
        assert_eq!(age(185_000), "3m05s");
        assert_eq!(age(7_800_000), "2h10m");
    }
}
