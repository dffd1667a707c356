//! Scenario generation: from a seed, what one scenario does to the jobs — its kind (faults, a
//! rate-limit storm, a kill at a step boundary, two evaluators at once, a hand-made position, a
//! hand-deleted stop, a stop the price fires, a clock jump), which EMA_CROSS signal it runs at, and the fault rules armed
//! for the evaluator and for the sync. Pure: nothing here touches a server or a process.

use super::rng::{scenario_seed, Rng};
use crate::binance_server::{FaultKind, FaultRule, When};

/// Every endpoint the evaluator and position-sync call (method, path). `symbolConfig` is not one
/// since the entry sets margin type and leverage without reading them first.
pub const ENDPOINTS: [(&str, &str); 17] = [
    ("GET", "/fapi/v1/time"),
    ("GET", "/fapi/v1/klines"),
    ("GET", "/fapi/v1/exchangeInfo"),
    ("GET", "/fapi/v1/ticker/price"),
    ("GET", "/fapi/v3/account"),
    ("GET", "/fapi/v3/positionRisk"),
    ("POST", "/fapi/v1/leverage"),
    ("POST", "/fapi/v1/marginType"),
    ("POST", "/fapi/v1/order"),
    ("GET", "/fapi/v1/order"),
    ("POST", "/fapi/v1/algoOrder"),
    ("GET", "/fapi/v1/algoOrder"),
    ("DELETE", "/fapi/v1/algoOrder"),
    ("GET", "/fapi/v1/openAlgoOrders"),
    ("GET", "/fapi/v1/userTrades"),
    ("GET", "/fapi/v1/income"),
    ("GET", "/fapi/v1/allOrders"),
];

/// Where a process is killed (SIGKILL), and how the server holds it there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boundary {
    /// The candle is claimed, the klines never come (GET klines held).
    AfterClaim,
    /// PENDING written, the entry never reaches the book (POST order held, not applied).
    AfterPending,
    /// The entry is on the book, its answer never comes (POST order held after applying).
    AfterOrder,
    /// The entry's answer arrived (killed as soon as the server answered it).
    AfterFill,
    /// The stop never reaches the book (POST algoOrder held, not applied).
    BeforeStop,
    /// The stop is on the book, its answer never comes (POST algoOrder held after applying).
    AfterStop,
    /// A sync re-placing a hand-deleted stop (its POST algoOrder held, applied or not).
    DuringSyncReplace { apply: bool },
}

/// A position opened by hand on the website.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manual {
    /// On ETHUSDT, which no strategy trades, before the evaluation.
    OtherSymbol,
    /// On BTCUSDT before the entry, on the signal's side (or against it).
    Before { same_side: bool },
    /// On BTCUSDT after the entry, on its side (adds) or against it (reduces).
    After { same_side: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Random faults on the evaluator and the sync.
    Faults,
    /// Several 429/418 in a row on one endpoint.
    Storm,
    Kill(Boundary),
    /// Two evaluators at once, then the same run again.
    Concurrent,
    Manual(Manual),
    /// The stop is cancelled by hand after the entry; the sync must re-place it.
    DeletedStop,
    /// The server clock jumps by this many ms while the evaluator runs.
    ClockSkew(i64),
    /// The price crosses the stop after the entry; the sync records the close.
    StopFired,
}

/// One scenario, fully determined by (campaign seed, index).
#[derive(Clone, Debug)]
pub struct Scenario {
    pub index: usize,
    pub seed: u64,
    pub kind: Kind,
    /// Which EMA_CROSS signal of the sample it runs at (0 = the first).
    pub signal: usize,
    /// Armed before the first evaluator run.
    pub eval_rules: Vec<FaultRule>,
    /// Armed before the faulted sync (none: that sync is skipped unless the kind needs it).
    pub sync_rules: Vec<FaultRule>,
}

/// How many signals of the sample scenarios choose from.
pub const SIGNALS: usize = 4;

const KILLS: [Boundary; 8] = [
    Boundary::AfterClaim,
    Boundary::AfterPending,
    Boundary::AfterOrder,
    Boundary::AfterFill,
    Boundary::BeforeStop,
    Boundary::AfterStop,
    Boundary::DuringSyncReplace { apply: false },
    Boundary::DuringSyncReplace { apply: true },
];

const MANUALS: [Manual; 5] = [
    Manual::OtherSymbol,
    Manual::Before { same_side: true },
    Manual::Before { same_side: false },
    Manual::After { same_side: true },
    Manual::After { same_side: false },
];

impl Scenario {
    /// Scenario `index` of the campaign seeded `campaign`.
    pub fn generate(campaign: u64, index: usize) -> Scenario {
        let seed = scenario_seed(campaign, index);
        let mut r = Rng::new(seed);
        let kind = match r.weighted(&[32, 12, 22, 8, 12, 6, 6, 6]) {
            0 => Kind::Faults,
            1 => Kind::Storm,
            2 => Kind::Kill(*r.pick(&KILLS)),
            3 => Kind::Concurrent,
            4 => Kind::Manual(*r.pick(&MANUALS)),
            5 => Kind::DeletedStop,
            6 => Kind::ClockSkew(*r.pick(&[-9_000, -4_000, 2_500, 7_000])),
            _ => Kind::StopFired,
        };
        let (eval_n, sync_n) = match kind {
            Kind::Faults => (r.range(3, 7), r.range(2, 5)),
            Kind::Storm => (r.range(0, 1), r.range(1, 2)),
            Kind::DeletedStop => (r.range(1, 2), r.range(2, 4)),
            _ => (r.range(1, 3), r.range(1, 3)),
        };
        let mut eval_rules = Vec::new();
        for _ in 0..eval_n {
            let endpoint = *r.pick(&ENDPOINTS);
            eval_rules.extend(rule_and_lookup(&mut r, endpoint));
        }
        // Where the sync reconciles (a hand-made trade, a fired stop), its reads of fills and
        // orders and its stop swaps are where the faults go.
        let reconciles = matches!(kind, Kind::StopFired | Kind::Manual(Manual::After { .. }));
        let sync_rules = (0..sync_n)
            .map(|_| {
                let endpoint = if reconciles {
                    *r.pick(&RECONCILE)
                } else {
                    *r.pick(&ENDPOINTS)
                };
                random_rule(&mut r, endpoint)
            })
            .collect();
        if kind == Kind::Storm {
            eval_rules.push(storm(&mut r));
        }
        if let Kind::Kill(b) = kind {
            if let Some(hold) = hold_rule(b) {
                eval_rules.push(hold);
            }
        }
        Scenario {
            index,
            seed,
            kind,
            signal: r.below(SIGNALS as u64) as usize,
            eval_rules,
            sync_rules,
        }
    }

    /// A one-line description for reports.
    pub fn describe(&self) -> String {
        let rules = |rs: &[FaultRule]| {
            rs.iter()
                .map(|f| {
                    format!(
                        "{} {} {} {:?}",
                        f.kind.label(),
                        f.method.as_deref().unwrap_or("*"),
                        f.path,
                        f.when
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        format!(
            "{:?} at signal {}; evaluator faults [{}]; sync faults [{}]",
            self.kind,
            self.signal,
            rules(&self.eval_rules),
            rules(&self.sync_rules)
        )
    }
}

/// The sync's reconciliation endpoints: fills, income, orders, positions, stops.
const RECONCILE: [(&str, &str); 6] = [
    ("GET", "/fapi/v1/userTrades"),
    ("GET", "/fapi/v1/income"),
    ("GET", "/fapi/v1/allOrders"),
    ("GET", "/fapi/v3/positionRisk"),
    ("GET", "/fapi/v1/openAlgoOrders"),
    ("DELETE", "/fapi/v1/algoOrder"),
];

/// A random fault on `endpoint`; an unknown outcome on an order send brings, half the time, a
/// fault on the lookup that resolves it (GET order or algoOrder), which only then is called.
fn rule_and_lookup(r: &mut Rng, endpoint: (&'static str, &'static str)) -> Vec<FaultRule> {
    let first = random_rule(r, endpoint);
    let unknown = matches!(
        first.kind,
        FaultKind::Timeout { .. }
            | FaultKind::Unknown503 { .. }
            | FaultKind::Html5xx { .. }
            | FaultKind::DropAfterApply
    );
    let lookup = match (endpoint, unknown) {
        (("POST", "/fapi/v1/order"), true) => Some(("GET", "/fapi/v1/order")),
        (("POST", "/fapi/v1/algoOrder"), true) => Some(("GET", "/fapi/v1/algoOrder")),
        _ => None,
    };
    let mut rules = vec![first];
    if let Some(l) = lookup.filter(|_| r.chance(50)) {
        rules.push(random_rule(r, l));
    }
    rules
}

/// A fault of any kind but a hold on `endpoint`, firing once (or on a seeded chance).
fn random_rule(r: &mut Rng, (method, path): (&str, &str)) -> FaultRule {
    let apply = r.chance(50);
    let retry_after_s = retry_after(r);
    let kind = match r.below(8) {
        0 => FaultKind::Timeout { apply },
        1 => FaultKind::Unknown503 { apply },
        2 => FaultKind::RateLimit429 { retry_after_s },
        3 => FaultKind::Banned418 { retry_after_s },
        4 => FaultKind::Timestamp1021,
        5 => FaultKind::Html5xx {
            status: *r.pick(&[502, 504]),
            apply,
        },
        6 => FaultKind::DropAfterApply,
        _ => FaultKind::Unknown503 { apply: true },
    };
    let when = match r.below(10) {
        0..=5 => When::Next(1),
        6..=8 => When::Nth(r.range(2, 3) as u32),
        _ => When::Chance {
            per_mille: 400,
            seed: r.next_u64(),
            max: 2,
        },
    };
    let rule = FaultRule::new(method, path, kind).when(when);
    match path {
        "/fapi/v1/order" if method == "POST" && r.chance(50) => rule.param("type", "MARKET"),
        "/fapi/v1/klines" if r.chance(50) => rule.param("symbol", "BTCUSDT"),
        _ => rule,
    }
}

/// Retry-After of a rate limit: mostly 1–3 s, now and then 4–6 s.
fn retry_after(r: &mut Rng) -> u64 {
    if r.chance(85) {
        r.range(1, 3)
    } else {
        r.range(4, 6)
    }
}

/// Three to five 429s or 418s in a row on one endpoint.
fn storm(r: &mut Rng) -> FaultRule {
    let (method, path) = *r.pick(&ENDPOINTS);
    let retry_after_s = r.range(1, 3);
    let kind = if r.chance(50) {
        FaultKind::RateLimit429 { retry_after_s }
    } else {
        FaultKind::Banned418 { retry_after_s }
    };
    FaultRule::new(method, path, kind).when(When::Next(r.range(3, 5) as u32))
}

/// The hold that stops the evaluator at `b` (a sync boundary's hold is armed later, by the
/// player, when the sync runs).
pub fn hold_rule(b: Boundary) -> Option<FaultRule> {
    let hold = |apply| FaultKind::Hold { apply };
    Some(match b {
        Boundary::AfterClaim => FaultRule::new("GET", "/fapi/v1/klines", hold(false)),
        Boundary::AfterPending => {
            FaultRule::new("POST", "/fapi/v1/order", hold(false)).param("type", "MARKET")
        }
        Boundary::AfterOrder => {
            FaultRule::new("POST", "/fapi/v1/order", hold(true)).param("type", "MARKET")
        }
        Boundary::BeforeStop => FaultRule::new("POST", "/fapi/v1/algoOrder", hold(false)),
        Boundary::AfterStop => FaultRule::new("POST", "/fapi/v1/algoOrder", hold(true)),
        Boundary::AfterFill | Boundary::DuringSyncReplace { .. } => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_is_the_same_from_the_same_seed_and_index() {
        let a = Scenario::generate(11, 3);
        let b = Scenario::generate(11, 3);
        assert_eq!(a.describe(), b.describe());
        assert_eq!(a.seed, b.seed);
        let others: Vec<_> = (0..20)
            .map(|i| Scenario::generate(11, i).describe())
            .collect();
        assert!(others.iter().filter(|d| **d == a.describe()).count() == 1);
    }

    #[test]
    fn a_campaign_draws_every_kind_and_endpoint() {
        let all: Vec<_> = (0..600).map(|i| Scenario::generate(5, i)).collect();
        for b in KILLS {
            assert!(all.iter().any(|s| s.kind == Kind::Kill(b)), "{b:?}");
        }
        for m in MANUALS {
            assert!(all.iter().any(|s| s.kind == Kind::Manual(m)), "{m:?}");
        }
        for k in [
            Kind::Faults,
            Kind::Storm,
            Kind::Concurrent,
            Kind::DeletedStop,
        ] {
            assert!(all.iter().any(|s| s.kind == k), "{k:?}");
        }
        let rules: Vec<_> = all
            .iter()
            .flat_map(|s| s.eval_rules.iter().chain(&s.sync_rules))
            .collect();
        for (m, p) in ENDPOINTS {
            assert!(
                rules
                    .iter()
                    .any(|f| f.method.as_deref() == Some(m) && f.path == p),
                "{m} {p}"
            );
        }
        let labels: std::collections::BTreeSet<_> = rules
            .iter()
            .map(|f| f.kind.label().split('(').next().unwrap().to_string())
            .collect();
        for l in [
            "timeout",
            "timeout+apply",
            "503",
            "503+apply",
            "429",
            "418",
            "-1021",
            "html502",
            "html504+apply",
            "drop+apply",
            "hold",
            "hold+apply",
        ] {
            assert!(labels.contains(l), "{l} missing from {labels:?}");
        }
        let storms = all.iter().filter(|s| s.kind == Kind::Storm);
        assert!(storms.clone().all(|s| s
            .eval_rules
            .iter()
            .any(|f| matches!(f.when, When::Next(3..=5)))));
    }
}
