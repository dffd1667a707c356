//! CloudWatch Embedded Metric Format (EMF): one JSON object per line on stdout, which the Lambda
//! log agent (or the CloudWatch agent on EC2) turns into metrics, so the jobs publish metrics with
//! no CloudWatch API call and no extra latency. This module owns the line format and the Albra
//! metric set: per job run ([`job_line`]) and per account ([`account_line`]).
//!
//! Dimension sets are chosen so that the alarms in `infra/template.yaml` can watch an aggregate
//! over all accounts (`[Stage]` / `[Stage, Job]`) while dashboards can still split by account.

use albra_core::domain::{AccountId, AccountState};
use albra_core::jobs::JobReport;
use rust_decimal::prelude::ToPrimitive;
use serde_json::{json, Map, Value};

/// The CloudWatch namespace of every Albra metric.
pub const NAMESPACE: &str = "Albra";

/// Metric names, shared with the alarms in `infra/template.yaml`.
pub mod names {
    pub const ORDERS_PLACED: &str = "OrdersPlaced";
    pub const ORDERS_REJECTED: &str = "OrdersRejected";
    pub const JOB_DURATION: &str = "JobDurationMs";
    pub const JOB_ERRORS: &str = "JobErrors";
    /// 1 for a run that succeeded for every account, 0 for a run that reported any error: the
    /// heartbeat alarms fire when it stays below 1 (missing data counts), so a job that runs but
    /// fails every time alarms like one that does not run at all.
    pub const HEARTBEAT: &str = "Heartbeat";
    pub const SYNC_DRIFT: &str = "SyncDrift";
    pub const API_WEIGHT: &str = "ApiWeightUsed1m";
    pub const POSITIONS_OPEN: &str = "PositionsOpen";
    pub const EQUITY: &str = "EquityUsdt";
    pub const DRAWDOWN: &str = "DrawdownPct";
    pub const MDD_LEVEL: &str = "MddLevel";
    pub const DAILY_LOSS_HALT: &str = "DailyLossHalt";
}

/// How much of a run becomes CloudWatch metrics. Every value is in the line either way (as a
/// metric or as a plain property, searchable in Logs Insights); custom metrics cost $0.30 a month
/// each beyond CloudWatch's 10 free ones, so the default keeps to the alarms' few.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// Only what the alarms watch ([`ALARM_METRICS`]) is a metric, under `[Stage, Job]` /
    /// `[Stage]`.
    Alarms,
    /// Every value is a metric, and account values are also published per account.
    Full,
}

/// The metrics `infra/template.yaml` alarms on.
pub const ALARM_METRICS: [&str; 5] = [
    names::HEARTBEAT,
    names::ORDERS_REJECTED,
    names::JOB_ERRORS,
    names::MDD_LEVEL,
    names::DAILY_LOSS_HALT,
];

impl Detail {
    /// From `ALBRA_METRICS`: `alarms` (also when unset), `full`, or `off` (`None`: no lines).
    /// `ALBRA_METRICS`'s value; unset or empty gives `unset` (see [`Detail::default_for`]).
    pub fn parse(value: Option<&str>, unset: Option<Detail>) -> Result<Option<Detail>, String> {
        match value.map(str::trim) {
            None | Some("") => Ok(unset),
            Some("alarms") => Ok(Some(Detail::Alarms)),
            Some("full") => Ok(Some(Detail::Full)),
            Some("off") => Ok(None),
            Some(other) => Err(format!(
                "ALBRA_METRICS must be alarms, full or off (got `{other}`)"
            )),
        }
    }

    /// What an unset `ALBRA_METRICS` means: the alarms' metrics where a log agent reads stdout
    /// (on Lambda, or when stdout is a pipe or a file: cron, systemd, the EC2 agent), nothing on
    /// a person's terminal, where a JSON line per run is noise.
    pub fn default_for(in_lambda: bool, stdout_is_terminal: bool) -> Option<Detail> {
        (in_lambda || !stdout_is_terminal).then_some(Detail::Alarms)
    }

    fn is_metric(self, name: &str) -> bool {
        self == Detail::Full || ALARM_METRICS.contains(&name)
    }
}

/// CloudWatch units used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Percent,
    None,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Percent => "Percent",
            Unit::None => "None",
        }
    }
}

/// One EMF log line: dimensions and properties as top-level members, metric values as numbers,
/// and the `_aws` block that declares which members are metrics. A line holds one or more
/// directives (EMF's `CloudWatchMetrics` entries), each publishing its own metrics under its own
/// dimension sets, so one value can carry a dimension the rest of the line does not.
#[derive(Clone, Debug)]
pub struct MetricLine {
    namespace: String,
    timestamp_ms: i64,
    members: Map<String, Value>,
    /// Never empty; [`Self::dimension_set`] and [`Self::metric`] add to the last one.
    directives: Vec<Directive>,
}

#[derive(Clone, Debug, Default)]
struct Directive {
    dimension_sets: Vec<Vec<String>>,
    metrics: Vec<(String, Unit)>,
}

impl MetricLine {
    pub fn new(namespace: &str, timestamp_ms: i64) -> Self {
        MetricLine {
            namespace: namespace.to_string(),
            timestamp_ms,
            members: Map::new(),
            directives: vec![Directive::default()],
        }
    }

    /// Start another directive: the dimension sets and metrics that follow are published
    /// together, apart from those before.
    pub fn directive(mut self) -> Self {
        self.directives.push(Directive::default());
        self
    }

    fn current(&mut self) -> &mut Directive {
        self.directives
            .last_mut()
            .expect("a metric line always has a directive")
    }

    /// A dimension value (a string member). Declare it in a set with [`Self::dimension_set`].
    pub fn dimension(mut self, name: &str, value: &str) -> Self {
        self.members.insert(name.to_string(), Value::from(value));
        self
    }

    /// One set of dimension names the metrics are published under (CloudWatch allows several).
    pub fn dimension_set(mut self, names: &[&str]) -> Self {
        self.current()
            .dimension_sets
            .push(names.iter().map(|s| s.to_string()).collect());
        self
    }

    /// A metric value. A non-finite value is left out: CloudWatch rejects the whole line for it.
    pub fn metric(mut self, name: &str, unit: Unit, value: f64) -> Self {
        if value.is_finite() {
            self.members.insert(name.to_string(), json!(value));
            self.current().metrics.push((name.to_string(), unit));
        }
        self
    }

    /// A value that is a metric at this `detail`, otherwise a plain numeric property.
    pub fn value(self, detail: Detail, name: &str, unit: Unit, value: f64) -> Self {
        if detail.is_metric(name) {
            self.metric(name, unit, value)
        } else if value.is_finite() {
            self.property(name, json!(value))
        } else {
            self
        }
    }

    /// A property that is logged with the line but is not a metric (searchable in Logs Insights).
    pub fn property(mut self, name: &str, value: Value) -> Self {
        self.members.insert(name.to_string(), value);
        self
    }

    /// The line as a JSON value.
    pub fn to_value(&self) -> Value {
        let directive = |d: &Directive| {
            let metrics: Vec<Value> = d
                .metrics
                .iter()
                .map(|(n, u)| json!({"Name": n, "Unit": u.as_str()}))
                .collect();
            json!({
                "Namespace": self.namespace,
                "Dimensions": d.dimension_sets,
                "Metrics": metrics,
            })
        };
        // A directive left without metrics (at `Detail::Alarms`, its values became properties)
        // publishes nothing; the first one stays so the line keeps the EMF shape.
        let mut directives: Vec<Value> = self
            .directives
            .iter()
            .filter(|d| !d.metrics.is_empty())
            .map(directive)
            .collect();
        if directives.is_empty() {
            directives.push(directive(&self.directives[0]));
        }
        let mut root = self.members.clone();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": self.timestamp_ms,
                "CloudWatchMetrics": directives,
            }),
        );
        Value::Object(root)
    }

    /// The line as one line of JSON (no newline).
    pub fn to_line(&self) -> String {
        self.to_value().to_string()
    }

    /// Print the line on stdout, where the Lambda log agent picks EMF up.
    pub fn emit(&self) {
        println!("{}", self.to_line());
    }
}

/// What a job run measured besides its [`JobReport`].
#[derive(Clone, Debug, Default)]
pub struct JobMeasures {
    pub duration_ms: u64,
    /// The exchange's `X-MBX-USED-WEIGHT-1M` after the job (IP weight used this minute).
    pub api_weight_1m: Option<u32>,
}

/// The heartbeat of a run: 1 only when it succeeded for every account ([`JobReport::ok`]), so
/// a run whose accounts all failed does not keep the heartbeat alarm quiet.
pub fn heartbeat(report: &JobReport) -> f64 {
    if report.ok() {
        1.0
    } else {
        0.0
    }
}

/// The per-run line of a job (`evaluator` or `position-sync`), published under `[Stage, Job]`.
///
/// A job run per `timeframe` (the evaluator: 15m, 1h and 4h runs at the same closes) publishes
/// its [`names::HEARTBEAT`] under `[Stage, Job, Timeframe]` instead, in a directive of its own:
/// each schedule then has a heartbeat of its own that the others' runs cannot stand in for,
/// while the other values stay one metric per job.
pub fn job_line(
    stage: &str,
    job: &str,
    timeframe: Option<&str>,
    timestamp_ms: i64,
    report: &JobReport,
    m: &JobMeasures,
    detail: Detail,
) -> MetricLine {
    let mut line = MetricLine::new(NAMESPACE, timestamp_ms)
        .dimension("Stage", stage)
        .dimension("Job", job)
        .dimension_set(&["Stage", "Job"]);
    if timeframe.is_none() {
        line = line.value(detail, names::HEARTBEAT, Unit::Count, heartbeat(report));
    }
    line = line
        .value(
            detail,
            names::ORDERS_PLACED,
            Unit::Count,
            f64::from(report.orders_placed),
        )
        .value(
            detail,
            names::ORDERS_REJECTED,
            Unit::Count,
            f64::from(report.orders_rejected),
        )
        .value(
            detail,
            names::JOB_ERRORS,
            Unit::Count,
            report.errors.len() as f64,
        )
        .value(
            detail,
            names::JOB_DURATION,
            Unit::Milliseconds,
            m.duration_ms as f64,
        )
        .value(
            detail,
            names::SYNC_DRIFT,
            Unit::Count,
            f64::from(report.sync_drift),
        );
    if let Some(w) = m.api_weight_1m {
        line = line.value(detail, names::API_WEIGHT, Unit::Count, f64::from(w));
    }
    if let Some(tf) = timeframe {
        line = line
            .dimension("Timeframe", tf)
            .directive()
            .dimension_set(&["Stage", "Job", "Timeframe"])
            .value(detail, names::HEARTBEAT, Unit::Count, heartbeat(report));
    }
    line
}

/// The per-account line, published under `[Stage]` (the alarms take the maximum over accounts)
/// and, at [`Detail::Full`], also under `[Stage, Account]`.
pub fn account_line(
    stage: &str,
    account: &AccountId,
    timestamp_ms: i64,
    state: &AccountState,
    positions_open: usize,
    detail: Detail,
) -> MetricLine {
    let halted = state.daily_halt_until.is_some_and(|t| t > timestamp_ms);
    let drawdown_pct = (state.drawdown() * rust_decimal::Decimal::ONE_HUNDRED)
        .to_f64()
        .unwrap_or(f64::NAN);
    let mut line = MetricLine::new(NAMESPACE, timestamp_ms)
        .dimension("Stage", stage)
        .dimension("Account", account.as_str())
        .dimension_set(&["Stage"]);
    if detail == Detail::Full {
        line = line.dimension_set(&["Stage", "Account"]);
    }
    line.value(
        detail,
        names::POSITIONS_OPEN,
        Unit::Count,
        positions_open as f64,
    )
    .value(
        detail,
        names::EQUITY,
        Unit::None,
        state.equity.get().to_f64().unwrap_or(f64::NAN),
    )
    .value(detail, names::DRAWDOWN, Unit::Percent, drawdown_pct)
    .value(
        detail,
        names::MDD_LEVEL,
        Unit::None,
        f64::from(state.mdd_level),
    )
    .value(
        detail,
        names::DAILY_LOSS_HALT,
        Unit::Count,
        if halted { 1.0 } else { 0.0 },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job failure whose text is `text` after its scope.
    fn failure(text: &str) -> albra_core::jobs::JobFailure {
        let e = albra_core::ports::ExchangeError::Fatal(text.into());
        albra_core::jobs::JobFailure::step("test", e)
    }
    use albra_core::domain::Notional;
    use rust_decimal_macros::dec;

    #[test]
    fn job_line_has_the_exact_emf_shape() {
        let report = JobReport {
            orders_placed: 2,
            orders_rejected: 1,
            errors: vec![failure("x")],
            sync_drift: 3,
            ..JobReport::default()
        };
        let m = JobMeasures {
            duration_ms: 1234,
            api_weight_1m: Some(17),
        };
        let v = job_line(
            "prod",
            "position-sync",
            None,
            1_700_000_000_000,
            &report,
            &m,
            Detail::Full,
        )
        .to_value();
        let expected = json!({
            "Stage": "prod",
            "Job": "position-sync",
            // The run reported an error: no heartbeat.
            "Heartbeat": 0.0,
            "OrdersPlaced": 2.0,
            "OrdersRejected": 1.0,
            "JobErrors": 1.0,
            "JobDurationMs": 1234.0,
            "SyncDrift": 3.0,
            "ApiWeightUsed1m": 17.0,
            "_aws": {
                "Timestamp": 1_700_000_000_000i64,
                "CloudWatchMetrics": [{
                    "Namespace": "Albra",
                    "Dimensions": [["Stage", "Job"]],
                    "Metrics": [
                        {"Name": "Heartbeat", "Unit": "Count"},
                        {"Name": "OrdersPlaced", "Unit": "Count"},
                        {"Name": "OrdersRejected", "Unit": "Count"},
                        {"Name": "JobErrors", "Unit": "Count"},
                        {"Name": "JobDurationMs", "Unit": "Milliseconds"},
                        {"Name": "SyncDrift", "Unit": "Count"},
                        {"Name": "ApiWeightUsed1m", "Unit": "Count"},
                    ],
                }],
            },
        });
        assert_eq!(v, expected);
        // One line, parseable back to the same value.
        let line = job_line(
            "prod",
            "position-sync",
            None,
            1_700_000_000_000,
            &report,
            &m,
            Detail::Full,
        )
        .to_line();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<Value>(&line).unwrap(), expected);
    }

    #[test]
    fn unknown_weight_is_left_out_not_zero() {
        let v = job_line(
            "dev",
            "position-sync",
            None,
            0,
            &JobReport::default(),
            &JobMeasures::default(),
            Detail::Full,
        )
        .to_value();
        assert!(v.get("ApiWeightUsed1m").is_none());
        let names: Vec<&str> = v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert!(!names.contains(&"ApiWeightUsed1m"), "{names:?}");
        assert!(names.contains(&"Heartbeat"));
    }

    #[test]
    fn account_line_reports_drawdown_level_and_halt() {
        let now = 1_700_000_000_000;
        let st = AccountState {
            equity: Notional::new(dec!(900)),
            peak_equity: Notional::new(dec!(1200)),
            mdd_level: 2,
            daily_halt_until: Some(now + 60_000),
            ..AccountState::default()
        };
        let v = account_line("prod", &AccountId::new("main"), now, &st, 3, Detail::Full).to_value();
        assert_eq!(v["Stage"], "prod");
        assert_eq!(v["Account"], "main");
        assert_eq!(v["PositionsOpen"], 3.0);
        assert_eq!(v["EquityUsdt"], 900.0);
        assert_eq!(v["DrawdownPct"], 25.0);
        assert_eq!(v["MddLevel"], 2.0);
        assert_eq!(v["DailyLossHalt"], 1.0);
        let cw = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "Albra");
        assert_eq!(cw["Dimensions"], json!([["Stage"], ["Stage", "Account"]]));
        assert_eq!(
            cw["Metrics"],
            json!([
                {"Name": "PositionsOpen", "Unit": "Count"},
                {"Name": "EquityUsdt", "Unit": "None"},
                {"Name": "DrawdownPct", "Unit": "Percent"},
                {"Name": "MddLevel", "Unit": "None"},
                {"Name": "DailyLossHalt", "Unit": "Count"},
            ])
        );
        // A halt that has expired is not a halt.
        let past = AccountState {
            daily_halt_until: Some(now - 1),
            ..st
        };
        let v =
            account_line("prod", &AccountId::new("main"), now, &past, 0, Detail::Full).to_value();
        assert_eq!(v["DailyLossHalt"], 0.0);
    }

    #[test]
    fn alarms_detail_publishes_only_the_alarm_metrics_and_keeps_the_rest_as_properties() {
        let report = JobReport {
            orders_placed: 2,
            orders_rejected: 1,
            ..JobReport::default()
        };
        let m = JobMeasures {
            duration_ms: 40,
            api_weight_1m: Some(9),
        };
        let v = job_line(
            "prod",
            "position-sync",
            None,
            5,
            &report,
            &m,
            Detail::Alarms,
        )
        .to_value();
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"],
            json!([
                {"Name": "Heartbeat", "Unit": "Count"},
                {"Name": "OrdersRejected", "Unit": "Count"},
                {"Name": "JobErrors", "Unit": "Count"},
            ])
        );
        assert_eq!(v["OrdersPlaced"], 2.0);
        assert_eq!(v["JobDurationMs"], 40.0);
        assert_eq!(v["ApiWeightUsed1m"], 9.0);
        let st = AccountState {
            equity: Notional::new(dec!(100)),
            peak_equity: Notional::new(dec!(100)),
            ..AccountState::default()
        };
        let v = account_line("prod", &AccountId::new("a"), 5, &st, 1, Detail::Alarms).to_value();
        let cw = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Dimensions"], json!([["Stage"]]));
        assert_eq!(
            cw["Metrics"],
            json!([
                {"Name": "MddLevel", "Unit": "None"},
                {"Name": "DailyLossHalt", "Unit": "Count"},
            ])
        );
        assert_eq!(v["EquityUsdt"], 100.0);
        assert_eq!(v["PositionsOpen"], 1.0);
    }

    #[test]
    fn the_heartbeat_counts_only_a_run_without_errors() {
        let ok = JobReport::default();
        let failed = JobReport {
            errors: vec![
                failure("main: exchange unreachable"),
                failure("sub1: timeout"),
            ],
            ..JobReport::default()
        };
        let hb = |r: &JobReport, detail| {
            job_line(
                "prod",
                "position-sync",
                None,
                0,
                r,
                &JobMeasures::default(),
                detail,
            )
            .to_value()["Heartbeat"]
                .clone()
        };
        for detail in [Detail::Alarms, Detail::Full] {
            assert_eq!(hb(&ok, detail), 1.0);
            // Every account failed: the run happened but is no heartbeat.
            assert_eq!(hb(&failed, detail), 0.0);
        }
        let one_failed = JobReport {
            errors: vec![failure("sub1: timeout")],
            orders_placed: 1,
            ..JobReport::default()
        };
        assert_eq!(hb(&one_failed, Detail::Alarms), 0.0);
    }

    #[test]
    fn a_timeframe_job_beats_per_timeframe_and_keeps_its_other_metrics_per_job() {
        let report = JobReport {
            orders_rejected: 1,
            ..JobReport::default()
        };
        let v = job_line(
            "prod",
            "evaluator",
            Some("1h"),
            7,
            &report,
            &JobMeasures::default(),
            Detail::Alarms,
        )
        .to_value();
        assert_eq!(v["Timeframe"], "1h");
        assert_eq!(v["Heartbeat"], 1.0);
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"],
            json!([
                {
                    "Namespace": "Albra",
                    "Dimensions": [["Stage", "Job"]],
                    "Metrics": [
                        {"Name": "OrdersRejected", "Unit": "Count"},
                        {"Name": "JobErrors", "Unit": "Count"},
                    ],
                },
                {
                    "Namespace": "Albra",
                    "Dimensions": [["Stage", "Job", "Timeframe"]],
                    "Metrics": [{"Name": "Heartbeat", "Unit": "Count"}],
                },
            ])
        );
        let failed = JobReport {
            errors: vec![failure("main: 429")],
            ..JobReport::default()
        };
        let v = job_line(
            "prod",
            "evaluator",
            Some("15m"),
            7,
            &failed,
            &JobMeasures::default(),
            Detail::Full,
        )
        .to_value();
        assert_eq!(v["Heartbeat"], 0.0);
        assert_eq!(v["JobErrors"], 1.0);
    }

    #[test]
    fn detail_from_the_environment_value() {
        let alarms = Some(Detail::Alarms);
        assert_eq!(Detail::parse(None, alarms), Ok(alarms));
        assert_eq!(Detail::parse(Some(""), None), Ok(None));
        assert_eq!(Detail::parse(Some("alarms"), None), Ok(alarms));
        assert_eq!(Detail::parse(Some("full"), None), Ok(Some(Detail::Full)));
        assert_eq!(Detail::parse(Some("off"), alarms), Ok(None));
        assert!(Detail::parse(Some("all"), None)
            .unwrap_err()
            .contains("alarms, full or off"));
        // Unset: metrics where a log agent reads stdout, none on a person's terminal.
        assert_eq!(Detail::default_for(true, true), alarms);
        assert_eq!(Detail::default_for(false, false), alarms);
        assert_eq!(Detail::default_for(false, true), None);
    }

    #[test]
    fn non_finite_values_are_dropped() {
        let v = MetricLine::new(NAMESPACE, 1)
            .metric("A", Unit::None, f64::NAN)
            .metric("B", Unit::Count, 2.0)
            .to_value();
        assert!(v.get("A").is_none());
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"],
            json!([{"Name": "B", "Unit": "Count"}])
        );
    }
}
