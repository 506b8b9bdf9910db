//! The per-second samples and what "clear growth" means.
//!
//! Medians over windows, never single samples: a sample can land on a burst of connections or
//! an allocator's arena growing for a moment; a leak moves the median of every later window.

/// One sample of the gateway process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Seconds since sampling began.
    pub t: f64,
    pub phase: Phase,
    /// Requests finished so far.
    pub requests: u64,
    pub rss_kb: u64,
    pub fds: u64,
    pub threads: u64,
    pub redis_rss_kb: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Idle,
    Load,
    After,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Load => "load",
            Phase::After => "after",
        }
    }
}

/// Window of the load phase, in seconds from its start, that stands for "warmed up": caches,
/// pools and allocator arenas have had 15 s to reach their working size.
pub const EARLY: (f64, f64) = (15.0, 30.0);
/// The last this-many seconds of the load phase.
pub const LATE: f64 = 15.0;
/// RSS may grow from the early to the late window by this fraction plus `RSS_SLACK_KB`
/// before it counts as growth (allocator arenas and pools settle in steps of a few MiB).
pub const RSS_TOLERANCE: f64 = 0.10;
pub const RSS_SLACK_KB: u64 = 8 * 1024;
/// Descriptors may differ between the two windows by this many (connections come and go).
pub const FD_SLACK: u64 = 16;
/// After the load, descriptors may exceed the idle level by the idle upstream connections the
/// engine pool keeps (at most one per load connection until its idle timeout) plus this.
pub const FD_AFTER_SLACK: u64 = 8;
/// The descriptor level after the load is the median of its last this-many seconds.
pub const AFTER_TAIL: f64 = 5.0;

/// Summary figures of a run, and the checks they pass or fail.
#[derive(Debug, Clone, Default)]
pub struct Curve {
    pub idle_rss_kb: u64,
    pub idle_fds: u64,
    pub peak_rss_kb: u64,
    pub peak_fds: u64,
    pub early_rss_kb: u64,
    pub early_fds: u64,
    pub late_rss_kb: u64,
    pub late_fds: u64,
    pub after_rss_kb: u64,
    pub after_fds: u64,
    /// Failed checks, in words; empty when the run passed.
    pub failures: Vec<String>,
}

fn median(mut v: Vec<u64>) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2])
}

/// Judges the samples: the load-phase plateau (early vs late window) for RSS and descriptors,
/// and descriptors back near idle after the load. `conns` is the load's connection count.
pub fn judge(samples: &[Sample], conns: u64) -> Curve {
    let of = |p: Phase| samples.iter().filter(move |s| s.phase == p);
    let load_start = of(Phase::Load).map(|s| s.t).next().unwrap_or(0.0);
    let load_end = of(Phase::Load).map(|s| s.t).next_back().unwrap_or(0.0);
    let after_end = of(Phase::After).map(|s| s.t).next_back().unwrap_or(0.0);
    let window = |p: Phase, from: f64, to: f64, f: fn(&Sample) -> u64| {
        median(of(p).filter(|s| s.t >= from && s.t < to).map(f).collect())
    };
    let rss = |s: &Sample| s.rss_kb;
    let fds = |s: &Sample| s.fds;
    let mut failures = Vec::new();
    let mut need = |v: Option<u64>, what: &str| {
        v.unwrap_or_else(|| {
            failures.push(format!("no samples for {what}"));
            0
        })
    };
    let idle_rss_kb = need(median(of(Phase::Idle).map(rss).collect()), "idle");
    let idle_fds = need(median(of(Phase::Idle).map(fds).collect()), "idle");
    let (e0, e1) = (load_start + EARLY.0, load_start + EARLY.1);
    let early_rss_kb = need(window(Phase::Load, e0, e1, rss), "the early load window");
    let early_fds = need(window(Phase::Load, e0, e1, fds), "the early load window");
    let late_from = (load_end - LATE + 1.0).max(e1);
    let late_rss_kb = need(
        window(Phase::Load, late_from, f64::INFINITY, rss),
        "the late load window",
    );
    let late_fds = need(
        window(Phase::Load, late_from, f64::INFINITY, fds),
        "the late load window",
    );
    let tail = after_end - AFTER_TAIL + 1.0;
    let after_rss_kb = need(window(Phase::After, tail, f64::INFINITY, rss), "after");
    let after_fds = need(window(Phase::After, tail, f64::INFINITY, fds), "after");
    let mut c = Curve {
        idle_rss_kb,
        idle_fds,
        peak_rss_kb: samples.iter().map(rss).max().unwrap_or(0),
        peak_fds: samples.iter().map(fds).max().unwrap_or(0),
        early_rss_kb,
        early_fds,
        late_rss_kb,
        late_fds,
        after_rss_kb,
        after_fds,
        failures,
    };
    let rss_cap = (c.early_rss_kb as f64 * (1.0 + RSS_TOLERANCE)) as u64 + RSS_SLACK_KB;
    if c.late_rss_kb > rss_cap {
        c.failures.push(format!(
            "RSS grew under load: median {} KiB in the last {LATE} s vs {} KiB at {}-{} s (cap {rss_cap} KiB)",
            c.late_rss_kb, c.early_rss_kb, EARLY.0, EARLY.1
        ));
    }
    if c.late_fds > c.early_fds + FD_SLACK {
        c.failures.push(format!(
            "descriptors grew under load: median {} in the last {LATE} s vs {} at {}-{} s (slack {FD_SLACK})",
            c.late_fds, c.early_fds, EARLY.0, EARLY.1
        ));
    }
    let fd_cap = c.idle_fds + conns + FD_AFTER_SLACK;
    if c.after_fds > fd_cap {
        c.failures.push(format!(
            "descriptors stayed up after the load: {} vs {} idle (cap {fd_cap})",
            c.after_fds, c.idle_fds
        ));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `secs` of idle, load and after; `rss(t)`/`fds(t)` give the value at load second `t`.
    fn run(load: u64, rss: impl Fn(f64) -> u64, fds: impl Fn(f64) -> u64) -> Vec<Sample> {
        let mut out = Vec::new();
        let mut t = 0.0;
        let mut push = |phase, r, f| {
            out.push(Sample {
                t,
                phase,
                requests: 0,
                rss_kb: r,
                fds: f,
                threads: 4,
                redis_rss_kb: 0,
            });
            t += 1.0;
        };
        for _ in 0..5 {
            push(Phase::Idle, 20_000, 12);
        }
        for i in 0..load {
            push(Phase::Load, rss(i as f64), fds(i as f64));
        }
        for _ in 0..10 {
            push(Phase::After, 30_000, 14);
        }
        out
    }

    #[test]
    fn a_plateau_passes() {
        let s = run(
            60,
            |t| 30_000 + (t as u64 % 3) * 500,
            |t| 80 + (t as u64 % 7),
        );
        let c = judge(&s, 64);
        assert!(c.failures.is_empty(), "{:?}", c.failures);
        assert_eq!(c.idle_fds, 12);
        assert_eq!(c.after_fds, 14);
    }

    #[test]
    fn steady_rss_growth_fails() {
        // 1 MiB a second: about 30 MiB between the windows.
        let s = run(60, |t| 30_000 + (t as u64) * 1024, |_| 80);
        let c = judge(&s, 64);
        assert_eq!(c.failures.len(), 1, "{:?}", c.failures);
        assert!(c.failures[0].starts_with("RSS grew"));
    }

    #[test]
    fn a_descriptor_leak_fails() {
        let s = run(60, |_| 30_000, |t| 80 + t as u64);
        let c = judge(&s, 64);
        assert!(c.failures.iter().any(|f| f.starts_with("descriptors grew")));
    }

    #[test]
    fn descriptors_left_open_after_the_load_fail() {
        let mut s = run(60, |_| 30_000, |_| 80);
        for x in s.iter_mut().filter(|x| x.phase == Phase::After) {
            x.fds = 12 + 64 + FD_AFTER_SLACK + 1;
        }
        let c = judge(&s, 64);
        assert!(
            c.failures
                .iter()
                .any(|f| f.starts_with("descriptors stayed up"))
        );
    }

    #[test]
    fn one_spike_does_not_fail() {
        let s = run(
            60,
            |t| if t as u64 == 55 { 500_000 } else { 30_000 },
            |t| if t as u64 == 50 { 900 } else { 80 },
        );
        assert!(judge(&s, 64).failures.is_empty());
    }

    #[test]
    fn missing_phases_fail() {
        let c = judge(&[], 64);
        assert!(!c.failures.is_empty());
    }
}
