//! The independent checker: after a scenario, it reads the server's own records (orders, algo
//! orders, positions, the fault journal) and the SQLite state the jobs left, never the jobs'
//! opinion, and lists every violation: an order sent twice for one intent, an exchange position
//! not owned or not summing to its shares, a strategy position without its stop after the clean
//! sync, a record that does not decode or a PENDING left, a fault no output shows, a signal lost,
//! a job over its time cap, a key or signature in any output line, a panic.

use super::jobs::JobRun;
use super::play::Played;
use crate::harness::{MAIN_KEY, MAIN_SECRET};
use albra_adapters::store::SqliteStore;
use albra_core::domain::{AccountId, Position, PositionStatus, Side};
use albra_core::ports::StateStore;
use rust_decimal::Decimal;
use serde_json::Value;
use std::collections::BTreeMap;

/// Violations found in one scenario, by what the campaign counts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Findings {
    pub duplicates: Vec<String>,
    pub unprotected: Vec<String>,
    pub lost: Vec<String>,
    pub hung: Vec<String>,
    pub leaks: Vec<String>,
    /// Exchange positions not owned, or shares not summing to the net.
    pub unowned: Vec<String>,
    /// Records that do not decode; PENDING left after the sync.
    pub half_written: Vec<String>,
    /// Faults that fired in a job whose output shows none.
    pub unseen: Vec<String>,
    /// Entries sent although a MANUAL position against them was known.
    pub against_manual: Vec<String>,
    pub panics: Vec<String>,
}

impl Findings {
    /// (name, messages) of every category, in report order.
    pub fn categories(&self) -> [(&'static str, &Vec<String>); 10] {
        [
            ("duplicates", &self.duplicates),
            ("unprotected after one sync", &self.unprotected),
            ("signals lost", &self.lost),
            ("hung jobs", &self.hung),
            ("key leaks", &self.leaks),
            ("positions not owned", &self.unowned),
            ("half-written state", &self.half_written),
            ("faults unseen in output", &self.unseen),
            ("entries against MANUAL", &self.against_manual),
            ("panics", &self.panics),
        ]
    }
    pub fn is_empty(&self) -> bool {
        self.categories().iter().all(|(_, m)| m.is_empty())
    }
}

/// Checks a played scenario.
pub async fn check(p: &Played) -> Findings {
    let mut f = Findings::default();
    let orders = p.server.orders(MAIN_KEY);
    let entries = entry_orders(&orders);
    duplicates(p, &orders, &mut f);
    signal_once(p, entries, &mut f);
    let stored = state(p, &mut f).await;
    ownership(p, &stored, &mut f);
    protection(p, &stored, &mut f);
    for r in &p.runs {
        outputs(r, &mut f);
    }
    f
}

/// Entry orders of the signal candle: our `albEN-` ids (exits add `:close`, steps `:tp…`).
fn entry_orders(orders: &[Value]) -> usize {
    orders
        .iter()
        .filter(|o| {
            let id = o["clientOrderId"].as_str().unwrap_or_default();
            id.starts_with("albEN-") && !id.contains(':')
        })
        .count()
}

/// No client id applied twice as an order; at most one open stop of ours per symbol.
fn duplicates(p: &Played, orders: &[Value], f: &mut Findings) {
    let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
    for o in orders {
        let id = o["clientOrderId"].as_str().unwrap_or_default();
        if id.starts_with("alb") {
            *ids.entry(id).or_default() += 1;
        }
    }
    for (id, n) in ids.into_iter().filter(|(_, n)| *n > 1) {
        f.duplicates
            .push(format!("client id {id} applied {n} times as an order"));
    }
    let mut stops: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in p.server.open_algo_orders(MAIN_KEY) {
        let id = a["clientAlgoId"].as_str().unwrap_or_default();
        if id.starts_with("alb") {
            let sym = a["symbol"].as_str().unwrap_or_default().to_string();
            stops.entry(sym).or_default().push(id.to_string());
        }
    }
    for (sym, ids) in stops.into_iter().filter(|(_, ids)| ids.len() > 1) {
        f.duplicates.push(format!(
            "{} open stops on {sym}: {}",
            ids.len(),
            ids.join(", ")
        ));
    }
}

/// The signal candle was evaluated once in the end: one entry when one was due, none when a
/// MANUAL position against it was known.
fn signal_once(p: &Played, entries: usize, f: &mut Findings) {
    let candle = p.signal.open_time;
    match (p.entry_expected, entries) {
        (true, 0) => f.lost.push(format!(
            "the {:?} signal of candle {candle} was never entered",
            p.signal.side
        )),
        (true, 1) | (false, 0) => {}
        (true, n) => f
            .duplicates
            .push(format!("{n} entries for the signal candle {candle}")),
        (false, n) => f.against_manual.push(format!(
            "{n} entries sent against the MANUAL position (candle {candle})"
        )),
    }
}

/// Every item of the account decodes as its kind; no position is left PENDING. Returns the
/// stored positions.
async fn state(p: &Played, f: &mut Findings) -> Vec<Position> {
    let path = p.dir.path().join("state/albra.db");
    let store = match SqliteStore::open(&path) {
        Ok(s) => s,
        Err(e) => {
            f.half_written
                .push(format!("state {} does not open: {e}", path.display()));
            return Vec::new();
        }
    };
    let items = match store
        .query(&format!("ACCT#{}", AccountId::new("main").0), "")
        .await
    {
        Ok(items) => items,
        Err(e) => {
            f.half_written.push(format!("state query failed: {e}"));
            return Vec::new();
        }
    };
    let mut positions = Vec::new();
    for item in items {
        match decode(&item.sk, &item.body) {
            Ok(Some(pos)) => positions.push(pos),
            Ok(None) => {}
            Err(e) => f.half_written.push(format!("{}: {e}", item.sk)),
        }
    }
    for pos in positions
        .iter()
        .filter(|p| p.status == PositionStatus::Pending)
    {
        f.half_written.push(format!(
            "{} still PENDING after the sync (entry {})",
            pos.key, pos.entry_client_id
        ));
    }
    positions
}

/// Decodes one stored item by its sort key; a position is returned.
fn decode(sk: &str, body: &str) -> Result<Option<Position>, String> {
    use albra_core::domain::{AccountState, TradeRecord};
    use albra_core::risk::StrategyStats;
    use albra_core::state::RunMarker;
    let err = |e: serde_json::Error| e.to_string();
    if sk.starts_with("POS#") {
        return serde_json::from_str::<Position>(body)
            .map(Some)
            .map_err(err);
    }
    if sk.starts_with("TRADE#") {
        serde_json::from_str::<TradeRecord>(body).map_err(err)?;
    } else if sk == "STATE" {
        serde_json::from_str::<AccountState>(body).map_err(err)?;
    } else if sk.starts_with("STATS#") {
        serde_json::from_str::<StrategyStats>(body).map_err(err)?;
    } else if sk.starts_with("ENTRY#") {
        serde_json::from_str::<i64>(body).map_err(err)?;
    } else if sk.starts_with("RUN#") {
        serde_json::from_str::<RunMarker>(body).map_err(err)?;
    } else {
        serde_json::from_str::<Value>(body).map_err(err)?;
    }
    Ok(None)
}

fn signed(p: &Position) -> Decimal {
    match p.side {
        Side::Long => p.qty.get(),
        Side::Short => -p.qty.get(),
    }
}

/// Each symbol's exchange net equals the sum of the open shares stored for it (strategies and
/// MANUAL).
fn ownership(p: &Played, stored: &[Position], f: &mut Findings) {
    for sym in ["BTCUSDT", "ETHUSDT"] {
        let net = p.server.position(MAIN_KEY, sym);
        let shares: Vec<&Position> = stored
            .iter()
            .filter(|s| s.key.symbol.0 == sym && s.is_open())
            .collect();
        let sum: Decimal = shares.iter().map(|s| signed(s)).sum();
        if sum != net {
            let listed: Vec<String> = shares
                .iter()
                .map(|s| format!("{} {:?} {}", s.key.strategy.0, s.side, s.qty.get()))
                .collect();
            f.unowned.push(format!(
                "{sym}: exchange net {net}, stored shares sum to {sum} [{}]",
                listed.join(", ")
            ));
        }
    }
}

/// Every open strategy position has its stored stop open on the exchange.
fn protection(p: &Played, stored: &[Position], f: &mut Findings) {
    let open: Vec<String> = p
        .server
        .open_algo_orders(MAIN_KEY)
        .iter()
        .filter_map(|a| a["clientAlgoId"].as_str().map(str::to_string))
        .collect();
    for pos in stored.iter().filter(|s| s.is_open() && !s.is_manual) {
        match &pos.stop_client_id {
            Some(id) if open.contains(id) => {}
            Some(id) => f.unprotected.push(format!(
                "{} {:?} {}: stored stop {id} is not open on the exchange",
                pos.key,
                pos.side,
                pos.qty.get()
            )),
            None => f.unprotected.push(format!(
                "{} {:?} {}: no stop recorded",
                pos.key,
                pos.side,
                pos.qty.get()
            )),
        }
    }
}

/// What one job printed: a time cap, a key or signature, a panic, faults nothing shows.
fn outputs(r: &JobRun, f: &mut Findings) {
    let who = format!("{:?} ({})", r.job, r.label);
    if r.hung {
        f.hung
            .push(format!("{who} ran past its {:?} cap", r.job.cap()));
    }
    for line in r.lines() {
        if line.contains(MAIN_KEY) || line.contains(MAIN_SECRET) || line.contains("signature=") {
            f.leaks.push(format!("{who} printed: {line}"));
        }
        if line.contains("panicked at") {
            f.panics.push(format!("{who}: {line}"));
        }
    }
    if !r.killed && !r.hung && !r.faults.is_empty() && !visible(r) {
        let faults: Vec<String> = r
            .faults
            .iter()
            .map(|x| format!("{} on {} {}", x.kind.label(), x.method, x.path))
            .collect();
        f.unseen.push(format!(
            "{who} exited 0 and printed no error, warning, retry or error metric after: {}",
            faults.join(", ")
        ));
    }
}

/// Whether a job's output shows that something went wrong: a non-zero exit, an error,
/// CRITICAL, warning or retry line, or a metric line counting job errors or rejected orders.
pub fn visible(r: &JobRun) -> bool {
    if r.code != Some(0) {
        return true;
    }
    r.lines()
        .any(|line| match serde_json::from_str::<Value>(line) {
            // A metric line: its names (JobErrors) are no evidence; its values are.
            Ok(m) => ["JobErrors", "OrdersRejected"]
                .iter()
                .any(|k| m[k].as_f64().is_some_and(|v| v > 0.0)),
            Err(_) => {
                let l = line.to_ascii_lowercase();
                ["error", "critical", "warn", "retry"]
                    .iter()
                    .any(|w| l.contains(w))
            }
        })
}

/// Two jobs that ran at once share the faults fired meanwhile: they go to the one whose output
/// shows trouble (the first when neither does), so each fault is checked once.
pub fn share_faults(mut a: JobRun, mut b: JobRun) -> (JobRun, JobRun) {
    let mut all = std::mem::take(&mut a.faults);
    for x in std::mem::take(&mut b.faults) {
        if !all.contains(&x) {
            all.push(x);
        }
    }
    if !visible(&a) && visible(&b) {
        b.faults = all;
    } else {
        a.faults = all;
    }
    (a, b)
}
