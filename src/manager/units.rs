//! Printing numbers for people, the way `docker` prints them, and a progress bar that only
//! appears on a terminal.

use std::time::{Duration, SystemTime};

/// A size in decimal units with 3 significant digits, as `docker ps -s` prints it:
/// `0B`, `2B`, `1.05kB`, `183MB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    let mut s = sig3(v);
    // Rounding can reach 1000 (999.7 → "1e3"): show it as the next unit.
    if s == "1000" && u < UNITS.len() - 1 {
        s = "1".into();
        u += 1;
    }
    format!("{s}{}", UNITS[u])
}

/// `%.3g` without the exponent form: 3 significant digits, trailing zeros dropped.
fn sig3(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    // 99.95 rounds to "100.0" with one decimal; keep three significant digits.
    match s.parse::<f64>() {
        Ok(r) if r >= 100.0 && s.contains('.') => format!("{r:.0}"),
        _ => s,
    }
}

/// How long ago, as `docker ps` says it: "Less than a second ago", "5 seconds ago",
/// "About a minute ago", "3 hours ago".
pub fn ago(then: SystemTime) -> String {
    let d = SystemTime::now().duration_since(then).unwrap_or_default();
    format!("{} ago", human_duration(d))
}

/// A duration in words.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", s / 3600),
        172_800..=1_209_599 => format!("{} days", s / 86400),
        1_209_600..=5_183_999 => format!("{} weeks", s / 604_800),
        5_184_000..=63_071_999 => format!("{} months", s / 2_592_000),
        _ => format!("{} years", s / 31_536_000),
    }
}

/// A progress bar on stderr when it is a terminal; silent otherwise (scripts, logs).
/// Clones share one bar.
#[derive(Clone)]
pub struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    /// A bar for `total` bytes of work, labelled `what`.
    pub fn new(what: impl Into<String>, total: u64) -> Progress {
        Progress::styled(what.into(), total, "{msg} [{bar:30}] {bytes} / {total_bytes}")
    }

    /// A bar for `total` items (containers, volumes), labelled `what`.
    pub fn items(what: impl Into<String>, total: u64) -> Progress {
        Progress::styled(what.into(), total, "{msg} [{bar:30}] {pos} / {len}")
    }

    /// A bar for `total` units drawn with `template`.
    fn styled(what: String, total: u64, template: &str) -> Progress {
        let bar = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what);
        Progress { bar }
    }

    /// Records `n` more bytes done.
    pub fn add(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Ends the bar at 100 % on its own line (nothing when it is not shown).
    pub fn finish(&self) {
        if self.bar.is_finished() {
            return;
        }
        if let Some(len) = self.bar.length() {
            self.bar.set_position(len);
        }
        self.bar.finish();
        // The bar's line ends here, before whatever the command prints next.
        if !self.bar.is_hidden() {
            eprintln!();
        }
    }

    /// Ends the bar where it is, leaving nothing on the screen (after a failure).
    pub fn abandon(&self) {
        self.bar.finish_and_clear();
    }

    /// A reader that counts what it reads into the bar.
    pub fn wrap_read<R: std::io::Read>(&self, r: R) -> indicatif::ProgressBarIter<R> {
        self.bar.wrap_read(r)
    }

    /// A writer that counts what it writes into the bar.
    pub fn wrap_write<W: std::io::Write>(&self, w: W) -> indicatif::ProgressBarIter<W> {
        self.bar.wrap_write(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(2), "2B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(1050), "1.05kB");
        assert_eq!(human_size(12_345), "12.3kB");
        assert_eq!(human_size(183_000_000), "183MB");
        assert_eq!(human_size(183_456_789), "183MB");
        assert_eq!(human_size(999_999), "1MB");
        assert_eq!(human_size(1_500_000_000), "1.5GB");
    }

    #[test]
    fn durations_in_words() {
        assert_eq!(human_duration(Duration::from_secs(0)), "Less than a second");
        assert_eq!(human_duration(Duration::from_secs(5)), "5 seconds");
        assert_eq!(human_duration(Duration::from_secs(90)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(600)), "10 minutes");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600)), "3 hours");
        assert_eq!(human_duration(Duration::from_secs(3 * 86400)), "3 days");
    }
}
