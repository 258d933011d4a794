//! The retrospective (`montana report`): a soak file (and optionally the
//! nodes' live `/status` and their logs) turned into `report.md` and SVG
//! plots.
//!
//! The verdict of each component follows a rule stated in the report
//! itself ([`RULES`]), computed from the soak records only, so the same
//! file always gives the same verdicts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

use super::plot;
use super::soak::{NodeRecord, SoakRecord};
use crate::status::StatusSnapshot;

/// The report's file names inside the output directory.
pub const REPORT_FILE: &str = "report.md";
pub const LAG_PLOT: &str = "lag.svg";
pub const HEARTBEAT_PLOT: &str = "heartbeat_errors.svg";
pub const WINDOW_PLOT: &str = "window_time.svg";

/// The section headings, in order (tests check every one is present).
pub const SECTIONS: [&str; 9] = [
    "## Summary",
    "## Verdicts",
    "## Node state",
    "## Heartbeat health",
    "## Convergence and lag",
    "## Cementing",
    "## Resource pressure",
    "## Frequent warnings and errors",
    "## Soak records",
];

/// A component's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
    /// Nothing to judge (e.g. no node ever answered).
    NoData,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
            Verdict::NoData => "NO DATA",
        }
    }
}

/// (component, rule) as written in the report.
pub const RULES: [(&str, &str); 4] = [
    (
        "transport",
        "worst heartbeat error ratio of any node in any poll, errors / (ok + errors) over its \
         last 5 minutes: PASS <= 5 %, WARN <= 20 %, FAIL above",
    ),
    (
        "consensus",
        "FAIL if two nodes ever reported the same window with different T (a fork) or the \
         highest window never advanced; WARN if any node rejected a proposal or message \
         during the soak (refused, so the chain held); PASS otherwise",
    ),
    (
        "sync",
        "share of each node's polls in which it answered with lag <= 1 and not stalled \
         (an unreachable poll counts against it); the worst node decides: PASS >= 95 %, \
         WARN >= 80 %, FAIL below",
    ),
    (
        "storage",
        "FAIL if any node's window ever went down between two of its answers (applied \
         windows lost, e.g. across a restart); PASS otherwise",
    ),
];

/// Report failures; one line each.
#[derive(Debug, Error)]
pub enum ReportError {
    #[error("{0}")]
    Soak(#[from] super::soak::SoakError),
    #[error("the soak file {0} holds no records")]
    Empty(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read log {path}: {source}")]
    Log {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("plot {name}: {why}")]
    Plot { name: String, why: String },
}

/// One component's verdict, the rule, and the figures behind it.
#[derive(Clone, Debug, Serialize)]
pub struct ComponentVerdict {
    pub component: &'static str,
    pub verdict: Verdict,
    pub rule: &'static str,
    pub evidence: String,
}

/// Per node, over the whole soak.
#[derive(Clone, Debug, Default)]
pub struct NodeSummary {
    pub label: String,
    pub addr: String,
    pub polls: usize,
    pub answered: usize,
    pub last: Option<NodeRecord>,
    pub max_lag: u64,
    pub mean_lag: f64,
    /// Polls answered with lag <= 1 and not stalled.
    pub in_sync: usize,
    pub stalled_polls: usize,
    pub worst_heartbeat_ratio: f64,
    pub max_heartbeat_errors_5m: u64,
    pub max_closed_5m: u64,
    pub rejected_first: Option<u64>,
    pub rejected_last: u64,
    pub rss_min: u64,
    pub rss_max: u64,
    pub window_regressions: usize,
    pub first_window: Option<u64>,
}

/// Everything the report says, computed from the records.
#[derive(Clone, Debug)]
pub struct Analysis {
    pub records: usize,
    pub start: f64,
    pub end: f64,
    pub nodes: Vec<NodeSummary>,
    pub forks: Vec<String>,
    pub first_top: u64,
    pub last_top: u64,
    pub max_cemented: u64,
    pub verdicts: Vec<ComponentVerdict>,
}

fn key(n: &NodeRecord) -> String {
    // A node is its status address (labels are unknown until it answers).
    n.addr.clone()
}

/// Analyses the records and judges each component.
pub fn analyse(records: &[SoakRecord]) -> Analysis {
    let mut order: Vec<String> = Vec::new();
    let mut by_node: BTreeMap<String, NodeSummary> = BTreeMap::new();
    let mut forks = Vec::new();
    let mut max_cemented = 0;
    let tops: Vec<u64> = records
        .iter()
        .map(|r| {
            r.nodes
                .iter()
                .filter(|n| n.reachable)
                .map(|n| n.window)
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in records {
        // Same window, different T: a fork.
        let mut t_of: BTreeMap<u64, &NodeRecord> = BTreeMap::new();
        for n in r.nodes.iter().filter(|n| n.reachable && !n.t.is_empty()) {
            match t_of.get(&n.window) {
                Some(o) if o.t != n.t && forks.len() < 20 => forks.push(format!(
                    "poll {}: {} and {} on window {} with different T",
                    r.poll, o.label, n.label, n.window
                )),
                Some(_) => {}
                None => {
                    t_of.insert(n.window, n);
                }
            }
        }
        for n in &r.nodes {
            let k = key(n);
            if !by_node.contains_key(&k) {
                order.push(k.clone());
            }
            let s = by_node.entry(k).or_default();
            s.addr.clone_from(&n.addr);
            if !n.label.is_empty() {
                s.label.clone_from(&n.label);
            }
            s.polls += 1;
            if !n.reachable {
                continue;
            }
            s.answered += 1;
            s.max_lag = s.max_lag.max(n.lag);
            s.mean_lag += n.lag as f64;
            if n.lag <= 1 && !n.stalled {
                s.in_sync += 1;
            }
            s.stalled_polls += n.stalled as usize;
            let beats = n.heartbeats_ok_5m + n.heartbeat_errors_5m;
            if beats > 0 {
                s.worst_heartbeat_ratio = s
                    .worst_heartbeat_ratio
                    .max(n.heartbeat_errors_5m as f64 / beats as f64);
            }
            s.max_heartbeat_errors_5m = s.max_heartbeat_errors_5m.max(n.heartbeat_errors_5m);
            s.max_closed_5m = s.max_closed_5m.max(n.closed_5m);
            if let Some(last) = &s.last {
                if n.window < last.window {
                    s.window_regressions += 1;
                }
            }
            s.rejected_first.get_or_insert(n.rejected);
            // A restart resets the node's counter: count what it shows since.
            s.rejected_last = n.rejected;
            if s.rss_min == 0 || n.rss_bytes < s.rss_min {
                s.rss_min = n.rss_bytes;
            }
            s.rss_max = s.rss_max.max(n.rss_bytes);
            s.first_window.get_or_insert(n.window);
            max_cemented = max_cemented.max(n.cemented);
            s.last = Some(n.clone());
        }
    }
    let nodes: Vec<NodeSummary> = order
        .iter()
        .map(|k| {
            let mut s = by_node.remove(k).expect("inserted above");
            if s.answered > 0 {
                s.mean_lag /= s.answered as f64;
            }
            s
        })
        .collect();
    let mut a = Analysis {
        records: records.len(),
        start: records.first().map_or(0.0, |r| r.time),
        end: records.last().map_or(0.0, |r| r.time),
        nodes,
        forks,
        first_top: tops.first().copied().unwrap_or(0),
        last_top: tops.last().copied().unwrap_or(0),
        max_cemented,
        verdicts: Vec::new(),
    };
    a.verdicts = judge(&a);
    a
}

fn judge(a: &Analysis) -> Vec<ComponentVerdict> {
    let answered: Vec<&NodeSummary> = a.nodes.iter().filter(|n| n.answered > 0).collect();
    let rule = |c: &str| {
        RULES
            .iter()
            .find(|(n, _)| *n == c)
            .map(|(_, r)| *r)
            .expect("every component has a rule")
    };
    let verdict = |component: &'static str, verdict, evidence: String| ComponentVerdict {
        component,
        verdict,
        rule: rule(component),
        evidence,
    };
    if answered.is_empty() {
        return RULES
            .iter()
            .map(|(c, r)| ComponentVerdict {
                component: c,
                verdict: Verdict::NoData,
                rule: r,
                evidence: "no node ever answered".into(),
            })
            .collect();
    }

    let worst = answered
        .iter()
        .max_by(|x, y| x.worst_heartbeat_ratio.total_cmp(&y.worst_heartbeat_ratio))
        .expect("not empty");
    let r = worst.worst_heartbeat_ratio;
    let transport = verdict(
        "transport",
        if r <= 0.05 {
            Verdict::Pass
        } else if r <= 0.20 {
            Verdict::Warn
        } else {
            Verdict::Fail
        },
        format!("worst ratio {:.1} % ({})", r * 100.0, worst.label),
    );

    let rejected: u64 = answered
        .iter()
        .map(|n| {
            n.rejected_last
                .saturating_sub(n.rejected_first.unwrap_or(0))
        })
        .sum();
    let advanced = a.last_top > a.first_top;
    let consensus = if !a.forks.is_empty() {
        verdict("consensus", Verdict::Fail, a.forks.join("; "))
    } else if !advanced {
        verdict(
            "consensus",
            Verdict::Fail,
            format!("the highest window stayed at {}", a.last_top),
        )
    } else if rejected > 0 {
        verdict(
            "consensus",
            Verdict::Warn,
            format!(
                "windows {} -> {}, {rejected} rejections during the soak",
                a.first_top, a.last_top
            ),
        )
    } else {
        verdict(
            "consensus",
            Verdict::Pass,
            format!(
                "windows {} -> {}, no fork, no rejection",
                a.first_top, a.last_top
            ),
        )
    };

    let share = |n: &NodeSummary| n.in_sync as f64 / n.polls.max(1) as f64;
    let worst_sync = a
        .nodes
        .iter()
        .min_by(|x, y| share(x).total_cmp(&share(y)))
        .expect("not empty");
    let s = share(worst_sync);
    let sync = verdict(
        "sync",
        if s >= 0.95 {
            Verdict::Pass
        } else if s >= 0.80 {
            Verdict::Warn
        } else {
            Verdict::Fail
        },
        format!(
            "{} in sync in {:.0} % of its {} polls (max lag {}, {} unreachable, {} stalled)",
            worst_sync.label,
            s * 100.0,
            worst_sync.polls,
            worst_sync.max_lag,
            worst_sync.polls - worst_sync.answered,
            worst_sync.stalled_polls
        ),
    );

    let lost: Vec<String> = answered
        .iter()
        .filter(|n| n.window_regressions > 0)
        .map(|n| format!("{} ({} times)", n.label, n.window_regressions))
        .collect();
    let storage = if lost.is_empty() {
        verdict(
            "storage",
            Verdict::Pass,
            "no node's window ever went down".into(),
        )
    } else {
        verdict(
            "storage",
            Verdict::Fail,
            format!("window went down on {}", lost.join(", ")),
        )
    };
    vec![transport, consensus, sync, storage]
}

/// Distinct warning and error lines counted separately.
const MAX_DISTINCT: usize = 10_000;

/// The most frequent warning and error lines of `logs`, normalised (time
/// stamps and `key=value` fields dropped), most frequent first.
pub fn frequent_problems(logs: &[PathBuf]) -> Result<Vec<(String, u64)>, ReportError> {
    use std::io::BufRead;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for path in logs {
        let wrap = |source| ReportError::Log {
            path: path.display().to_string(),
            source,
        };
        // Streamed line by line: a log may be far larger than memory.
        let mut reader = std::io::BufReader::new(std::fs::File::open(path).map_err(wrap)?);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            if reader.read_until(b'\n', &mut raw).map_err(wrap)? == 0 {
                break;
            }
            let line = String::from_utf8_lossy(&raw);
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(at) = words
                .iter()
                .position(|w| matches!(*w, "WARN" | "ERROR" | "\x1b[33mWARN\x1b[0m"))
            else {
                continue;
            };
            let msg: Vec<&str> = words[at..]
                .iter()
                .copied()
                .filter(|w| !w.contains('='))
                .collect();
            let key = msg.join(" ");
            // Bounded: past MAX_DISTINCT kinds, new ones are counted together.
            let key = if counts.len() >= MAX_DISTINCT && !counts.contains_key(&key) {
                "(other lines)".to_string()
            } else {
                key
            };
            *counts.entry(key).or_default() += 1;
        }
    }
    let mut v: Vec<(String, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(15);
    Ok(v)
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / 1048576.0)
}

fn utc(unix: f64) -> String {
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let secs = unix.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// What to write the report from.
pub struct ReportInput<'a> {
    pub soak_path: &'a Path,
    pub records: &'a [SoakRecord],
    /// Live `/status` of nodes given with `--status` (Err: why not).
    pub live: &'a [(String, Result<StatusSnapshot, String>)],
    pub problems: Option<&'a [(String, u64)]>,
}

/// Renders report.md.
pub fn markdown(input: &ReportInput<'_>, a: &Analysis) -> String {
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# Montana soak report\n");
    let _ = writeln!(w, "{}\n", SECTIONS[0]);
    let span = a.end - a.start;
    let _ = writeln!(
        w,
        "- Soak file: `{}` ({} records)\n- From {} to {} ({:.1} minutes)\n- Nodes: {}\n\
         - Highest window: {} at the first poll, {} at the last\n",
        input.soak_path.display(),
        a.records,
        utc(a.start),
        utc(a.end),
        span / 60.0,
        a.nodes.len(),
        a.first_top,
        a.last_top
    );

    let _ = writeln!(w, "{}\n", SECTIONS[1]);
    let _ = writeln!(
        w,
        "| component | verdict | evidence | rule |\n|---|---|---|---|"
    );
    for v in &a.verdicts {
        let _ = writeln!(
            w,
            "| {} | **{}** | {} | {} |",
            v.component,
            v.verdict.name(),
            v.evidence,
            v.rule
        );
    }
    let _ = writeln!(w);

    let _ = writeln!(w, "{}\n", SECTIONS[2]);
    let _ = writeln!(
        w,
        "At the last poll that each node answered.\n\n\
         | node | address | host | answered | phase | membership | window | cemented | lag | \
         eval backend | verify backend | eval rate (H/s) | verify rate (H/s) | verify share |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for n in &a.nodes {
        match &n.last {
            Some(l) => {
                let _ = writeln!(
                    w,
                    "| {} | {} | {} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {:.3e} | {:.3e} | {:.1} % |",
                    n.label,
                    n.addr,
                    l.host,
                    n.answered,
                    n.polls,
                    l.phase,
                    l.membership,
                    l.window,
                    l.cemented,
                    l.lag,
                    l.eval_backend,
                    l.verify_backend,
                    l.eval_rate,
                    l.verify_rate,
                    l.verify_share * 100.0
                );
            }
            None => {
                let _ = writeln!(
                    w,
                    "| {} | {} | | 0/{} | never answered | | | | | | | | | |",
                    n.label, n.addr, n.polls
                );
            }
        }
    }
    if !input.live.is_empty() {
        let _ = writeln!(w, "\nLive `/status` when the report was written:\n");
        for (addr, s) in input.live {
            let _ = match s {
                Ok(s) => writeln!(
                    w,
                    "- {addr}: {} {}, window {}, cemented {}, lag {}, up {} s",
                    s.label,
                    s.phase_shown(),
                    s.window,
                    s.cemented,
                    s.lag,
                    s.uptime_secs
                ),
                Err(e) => writeln!(w, "- {addr}: unreachable ({e})"),
            };
        }
    }
    let _ = writeln!(w);

    let _ = writeln!(w, "{}\n", SECTIONS[3]);
    let _ = writeln!(
        w,
        "Sums over each node's peers, from the 5-minute counters of each poll.\n\n\
         ![heartbeat errors]({HEARTBEAT_PLOT})\n\n\
         | node | worst error ratio | max errors / 5 min | max closed / 5 min |\n|---|---|---|---|"
    );
    for n in &a.nodes {
        let _ = writeln!(
            w,
            "| {} | {:.1} % | {} | {} |",
            n.label,
            n.worst_heartbeat_ratio * 100.0,
            n.max_heartbeat_errors_5m,
            n.max_closed_5m
        );
    }
    let _ = writeln!(w);

    let _ = writeln!(w, "{}\n", SECTIONS[4]);
    let _ = writeln!(
        w,
        "Lag is in windows behind the best tip the node knows (the proposer's, when it is \
         connected).\n\n![lag per node]({LAG_PLOT})\n\n![seconds per window]({WINDOW_PLOT})\n\n\
         | node | in sync | max lag | mean lag | stalled polls | unreachable polls |\n\
         |---|---|---|---|---|---|"
    );
    for n in &a.nodes {
        let _ = writeln!(
            w,
            "| {} | {:.0} % | {} | {:.2} | {} | {} |",
            n.label,
            100.0 * n.in_sync as f64 / n.polls.max(1) as f64,
            n.max_lag,
            n.mean_lag,
            n.stalled_polls,
            n.polls - n.answered
        );
    }
    if a.forks.is_empty() {
        let _ = writeln!(w, "\nNo two nodes ever showed different T for one window.");
    } else {
        let _ = writeln!(w, "\nForks seen:\n");
        for f in &a.forks {
            let _ = writeln!(w, "- {f}");
        }
    }
    let _ = writeln!(w);

    let _ = writeln!(w, "{}\n", SECTIONS[5]);
    if a.max_cemented == 0 {
        let _ = writeln!(
            w,
            "No node reported a cemented window (cemented = 0 throughout): this network has \
             no quorum cementing yet, or it never cemented during the soak.\n"
        );
    } else {
        let _ = writeln!(
            w,
            "| node | cemented (last) | window (last) |\n|---|---|---|"
        );
        for n in &a.nodes {
            if let Some(l) = &n.last {
                let _ = writeln!(w, "| {} | {} | {} |", n.label, l.cemented, l.window);
            }
        }
        let _ = writeln!(w);
    }

    let _ = writeln!(w, "{}\n", SECTIONS[6]);
    let _ = writeln!(
        w,
        "Resident memory (RSS) of each node process; CPU load is not in `/status`.\n\n\
         | node | RSS min (MiB) | RSS max (MiB) | RSS last (MiB) |\n|---|---|---|---|"
    );
    for n in &a.nodes {
        let last = n.last.as_ref().map_or(0, |l| l.rss_bytes);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} |",
            n.label,
            mib(n.rss_min),
            mib(n.rss_max),
            mib(last)
        );
    }
    let _ = writeln!(w);

    let _ = writeln!(w, "{}\n", SECTIONS[7]);
    match input.problems {
        None => {
            let _ = writeln!(w, "No logs given (`--logs FILE...`).\n");
        }
        Some([]) => {
            let _ = writeln!(w, "No WARN or ERROR lines in the logs given.\n");
        }
        Some(p) => {
            let _ = writeln!(w, "| count | line (fields dropped) |\n|---|---|");
            for (line, n) in p {
                let _ = writeln!(
                    w,
                    "| {n} | `{}` |",
                    line.replace('`', "'").replace('|', "/")
                );
            }
            let _ = writeln!(w);
        }
    }

    let _ = writeln!(w, "{}\n", SECTIONS[8]);
    let unreachable: usize = a.nodes.iter().map(|n| n.polls - n.answered).sum();
    let _ = writeln!(
        w,
        "{} records, {} node answers, {} unreachable.",
        a.records,
        a.nodes.iter().map(|n| n.answered).sum::<usize>(),
        unreachable
    );
    md
}

/// Writes `dir/report.md` and the plots; returns the analysis.
pub fn write(dir: &Path, input: &ReportInput<'_>) -> Result<Analysis, ReportError> {
    if input.records.is_empty() {
        return Err(ReportError::Empty(input.soak_path.display().to_string()));
    }
    let wrap = |p: &Path| {
        let path = p.display().to_string();
        move |source| ReportError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(wrap(dir))?;
    let a = analyse(input.records);
    let plots = [
        (LAG_PLOT, plot::lag(input.records)),
        (HEARTBEAT_PLOT, plot::heartbeat_errors(input.records)),
        (WINDOW_PLOT, plot::window_time(input.records)),
    ];
    for (name, svg) in plots {
        let svg = svg.map_err(|why| ReportError::Plot {
            name: name.into(),
            why,
        })?;
        let p = dir.join(name);
        std::fs::write(&p, svg).map_err(wrap(&p))?;
    }
    let p = dir.join(REPORT_FILE);
    std::fs::write(&p, markdown(input, &a)).map_err(wrap(&p))?;
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(label: &str, window: u64, t: &str) -> NodeRecord {
        NodeRecord {
            addr: format!("{label}:1"),
            reachable: true,
            label: label.into(),
            window,
            t: t.into(),
            heartbeats_ok_5m: 90,
            heartbeat_errors_5m: 0,
            ..Default::default()
        }
    }

    fn records(rows: Vec<Vec<NodeRecord>>) -> Vec<SoakRecord> {
        rows.into_iter()
            .enumerate()
            .map(|(i, nodes)| SoakRecord {
                time: 60.0 * i as f64,
                poll: i as u64 + 1,
                nodes,
            })
            .collect()
    }

    fn verdicts(a: &Analysis) -> Vec<(&'static str, Verdict)> {
        a.verdicts
            .iter()
            .map(|v| (v.component, v.verdict))
            .collect()
    }

    #[test]
    fn a_fork_a_lost_window_and_lossy_heartbeats_are_judged() {
        let mut lossy = node("b", 3, "bb");
        lossy.heartbeat_errors_5m = 10; // 10 %: WARN
        let a = analyse(&records(vec![
            vec![node("a", 2, "a2"), node("b", 2, "a2")],
            vec![node("a", 3, "a3"), lossy],
            vec![node("a", 4, "a4"), node("b", 2, "a2")],
        ]));
        assert_eq!(
            verdicts(&a),
            vec![
                ("transport", Verdict::Warn),
                ("consensus", Verdict::Fail),
                ("sync", Verdict::Pass),
                ("storage", Verdict::Fail),
            ]
        );
        assert!(
            a.verdicts[1].evidence.contains("window 3"),
            "{:?}",
            a.verdicts[1]
        );
        assert!(a.verdicts[3].evidence.contains("b (1 times)"));
    }

    #[test]
    fn no_progress_rejections_and_silence() {
        // Windows never move: consensus fails even though all agree.
        let a = analyse(&records(vec![
            vec![node("a", 2, "x")],
            vec![node("a", 2, "x")],
        ]));
        assert_eq!(a.verdicts[1].verdict, Verdict::Fail);
        // Rejections during the soak: WARN.
        let mut later = node("a", 3, "y");
        later.rejected = 4;
        let mut first = node("a", 2, "x");
        first.rejected = 1;
        let a = analyse(&records(vec![vec![first], vec![later]]));
        assert_eq!(a.verdicts[1].verdict, Verdict::Warn);
        assert!(a.verdicts[1].evidence.contains("3 rejections"));
        // Nobody ever answered.
        let a = analyse(&records(vec![vec![NodeRecord::unreachable(
            "x:1", "", "down",
        )]]));
        assert!(a.verdicts.iter().all(|v| v.verdict == Verdict::NoData));
    }

    #[test]
    fn log_lines_are_counted_boundedly() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("node.log");
        let mut text = String::new();
        for i in 0..MAX_DISTINCT + 50 {
            text += &format!("2026-11-30T20:00:00Z  WARN x: odd thing {i} peer=1\n");
        }
        text += "2026-11-30T20:00:00Z  INFO x: fine\nno newline at the end  ERROR x: odd thing 0";
        std::fs::write(&log, text).unwrap();
        let p = frequent_problems(&[log]).unwrap();
        // 50 WARN kinds past the cap, and the torn ERROR line (a new kind).
        assert_eq!(p[0], ("(other lines)".to_string(), 51));
        assert_eq!(p[1], ("WARN x: odd thing 0".to_string(), 1));
        assert_eq!(p.len(), 15);
        assert!(frequent_problems(&[dir.path().join("none")]).is_err());
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_070_000.0), "2026-11-30 20:20:00 UTC");
    }
}
