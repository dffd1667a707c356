//! The campaign's report: what each scenario contributed (faults fired by kind and endpoint,
//! other disruptions, violations with the scenario's seed), the totals, and the printed figures.
//! A campaign passes when every count but faults and scenarios is zero.

use super::check::Findings;
use super::play::{Disruptions, Played};
use super::scenario::ENDPOINTS;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// One scenario's contribution.
pub struct ScenarioResult {
    pub index: usize,
    pub seed: u64,
    pub description: String,
    pub faults: Vec<(String, String)>,
    pub disruptions: Disruptions,
    pub findings: Findings,
    pub elapsed: Duration,
    /// Every job's output, kept only for failing scenarios.
    pub transcript: String,
}

impl ScenarioResult {
    pub fn new(p: &Played, findings: Findings) -> ScenarioResult {
        let faults = p
            .server
            .fired_faults()
            .into_iter()
            .map(|f| (f.kind.label(), format!("{} {}", f.method, f.path)))
            .collect();
        let transcript = if findings.is_empty() {
            String::new()
        } else {
            transcript(p)
        };
        ScenarioResult {
            index: p.scenario.index,
            seed: p.scenario.seed,
            description: p.scenario.describe(),
            faults,
            disruptions: p.disruptions,
            findings,
            elapsed: p.elapsed,
            transcript,
        }
    }
}

fn transcript(p: &Played) -> String {
    let mut t = String::new();
    for r in &p.runs {
        let faults: Vec<String> = r
            .faults
            .iter()
            .map(|f| format!("{} {} {}", f.kind.label(), f.method, f.path))
            .collect();
        let _ = writeln!(
            t,
            "    --- {:?} ({}): exit {:?}{}{} in {:.1} s; faults [{}]",
            r.job,
            r.label,
            r.code,
            if r.killed { ", killed" } else { "" },
            if r.hung { ", HUNG" } else { "" },
            r.elapsed.as_secs_f64(),
            faults.join(", ")
        );
        for line in r.lines().filter(|l| !l.starts_with('{')) {
            let _ = writeln!(t, "      {line}");
        }
    }
    t
}

/// The campaign's totals.
#[derive(Default)]
pub struct Tally {
    pub seed: u64,
    pub scenarios: usize,
    pub faults: usize,
    pub by_kind: BTreeMap<String, usize>,
    pub by_endpoint: BTreeMap<String, usize>,
    pub disruptions: Disruptions,
    /// Count per violation category, in report order.
    pub counts: Vec<(&'static str, usize)>,
    /// Failing scenarios: (index, seed, description, messages, transcript).
    pub failures: Vec<(usize, u64, String, Vec<String>, String)>,
    pub wall: Duration,
}

impl Tally {
    pub fn new(seed: u64) -> Tally {
        Tally {
            seed,
            counts: Findings::default()
                .categories()
                .iter()
                .map(|(n, _)| (*n, 0))
                .collect(),
            ..Tally::default()
        }
    }

    pub fn add(&mut self, r: ScenarioResult) {
        self.scenarios += 1;
        self.faults += r.faults.len();
        for (kind, endpoint) in &r.faults {
            let kind = kind.split('(').next().unwrap_or(kind).to_string();
            *self.by_kind.entry(kind).or_default() += 1;
            *self.by_endpoint.entry(endpoint.clone()).or_default() += 1;
        }
        let d = &mut self.disruptions;
        d.kills += r.disruptions.kills;
        d.kills_missed += r.disruptions.kills_missed;
        d.clock_jumps += r.disruptions.clock_jumps;
        d.manual_orders += r.disruptions.manual_orders;
        d.stops_deleted += r.disruptions.stops_deleted;
        d.stops_fired += r.disruptions.stops_fired;
        let mut messages = Vec::new();
        for (i, (name, found)) in r.findings.categories().iter().enumerate() {
            self.counts[i].1 += found.len();
            messages.extend(found.iter().map(|m| format!("{name}: {m}")));
        }
        if !messages.is_empty() {
            self.failures
                .push((r.index, r.seed, r.description, messages, r.transcript));
        }
    }

    /// Violations of every kind (faults and scenarios are not violations).
    pub fn violations(&self) -> usize {
        self.counts.iter().map(|(_, n)| n).sum()
    }

    pub fn passed(&self) -> bool {
        self.violations() == 0
    }

    /// The figures as printed at the end of a campaign.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (i, seed, desc, messages, transcript) in &self.failures {
            let _ = writeln!(s, "FAIL scenario {i} (scenario seed {seed}): {desc}");
            for m in messages {
                let _ = writeln!(s, "  {m}");
            }
            let _ = writeln!(
                s,
                "  rerun: albra-chaos --seed {} --from {i} --scenarios 1\n{transcript}",
                self.seed
            );
        }
        let d = &self.disruptions;
        let _ = writeln!(s, "chaos campaign, seed {}", self.seed);
        let _ = writeln!(s, "  {:<28}{}", "scenarios", self.scenarios);
        let _ = writeln!(s, "  {:<28}{}", "faults", self.faults);
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(s, "    {:<26}{}", "by kind", kinds.join(", "));
        let missed: Vec<String> = ENDPOINTS
            .iter()
            .map(|(m, p)| format!("{m} {p}"))
            .filter(|e| !self.by_endpoint.contains_key(e))
            .collect();
        let never = if missed.is_empty() {
            String::new()
        } else {
            format!(" (never: {})", missed.join(", "))
        };
        let _ = writeln!(
            s,
            "    {:<26}{} of {}{never}",
            "endpoints hit",
            ENDPOINTS.len() - missed.len(),
            ENDPOINTS.len()
        );
        let _ = writeln!(
            s,
            "  {:<28}{} (+{} whose boundary was not reached)",
            "kills", d.kills, d.kills_missed
        );
        let _ = writeln!(s, "  {:<28}{}", "clock jumps", d.clock_jumps);
        let _ = writeln!(s, "  {:<28}{}", "hand-made orders", d.manual_orders);
        let _ = writeln!(s, "  {:<28}{}", "stops deleted by hand", d.stops_deleted);
        let _ = writeln!(s, "  {:<28}{}", "stops fired", d.stops_fired);
        for (name, n) in &self.counts {
            let _ = writeln!(s, "  {name:<28}{n}");
        }
        let _ = writeln!(
            s,
            "  {:<28}{:.0} s\n{}",
            "wall time",
            self.wall.as_secs_f64(),
            if self.passed() { "PASS" } else { "FAIL" }
        );
        s
    }
}
