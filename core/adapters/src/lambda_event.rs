//! The scheduled event a Lambda function is invoked with: its strict parsing, kept here (pure, no
//! AWS types) so the functions (`albra_adapters::lambda`) and the fuzz targets
//! (`crate::fuzzing`) run the same code.
//!
//! Event contract (JSON object; any other member is rejected):
//! - `time`: RFC 3339 scheduled time. In `infra/template.yaml` each schedule's Input passes
//!   `<aws.scheduler.scheduled-time>`; an EventBridge rule's "Scheduled Event" envelope carries
//!   the same member, so both shapes work.
//! - `timeframe`: `15m`, `1h` or `4h` (evaluator only; also accepted as `detail.timeframe`).
//! - `job`: which job of the function to run, when it runs more than one (also accepted as
//!   `detail.job`): the position-sync function runs `position-sync` (the default) or
//!   `status-report`; the evaluator takes none but its own name.
//! - accepted and ignored: the envelope members (`version`, `id`, `detail-type`, `source`,
//!   `account`, `region`, `resources`, `detail`) and the Scheduler context members
//!   `execution_id`, `attempt`, `schedule_arn`.
//!
//! Every error here is the event's fault: a redelivery of the same event fails the same way.

use serde::Deserialize;
use serde_json::Value;

/// Why an event was refused; the message starts with `rejected event` and ends with what is
/// expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EventError(pub String);

/// The scheduled-event contract (see the module docs). The envelope and context members are
/// read only to be accepted: naming them keeps `deny_unknown_fields` strict for everything else.
#[derive(Deserialize, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScheduleEvent {
    pub time: Option<String>,
    pub timeframe: Option<String>,
    pub job: Option<String>,
    pub detail: Option<EventDetail>,
    #[serde(rename = "detail-type")]
    pub detail_type: Option<String>,
    pub version: Option<Value>,
    pub id: Option<Value>,
    pub source: Option<Value>,
    pub account: Option<Value>,
    pub region: Option<Value>,
    pub resources: Option<Value>,
    pub execution_id: Option<Value>,
    pub attempt: Option<Value>,
    pub schedule_arn: Option<Value>,
}

#[derive(Deserialize, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EventDetail {
    pub timeframe: Option<String>,
    pub job: Option<String>,
}

impl ScheduleEvent {
    /// Parse a payload strictly; the error says what was wrong and `expected`.
    pub fn parse(payload: Value, expected: &str) -> Result<ScheduleEvent, EventError> {
        let ev: ScheduleEvent = serde_json::from_value(payload)
            .map_err(|e| EventError(format!("rejected event: {e}; {expected}")))?;
        if let Some(dt) = &ev.detail_type {
            if dt != "Scheduled Event" {
                return Err(EventError(format!(
                    "rejected event: detail-type `{dt}` is not a `Scheduled Event`; {expected}"
                )));
            }
        }
        Ok(ev)
    }

    /// The scheduled time in ms since the epoch, `None` when absent.
    pub fn time_ms(&self, expected: &str) -> Result<Option<i64>, EventError> {
        match &self.time {
            None => Ok(None),
            Some(t) => chrono::DateTime::parse_from_rfc3339(t)
                .map(|d| Some(d.timestamp_millis()))
                .map_err(|e| {
                    EventError(format!(
                        "rejected event: `time` {t:?} is not an RFC 3339 time ({e}); {expected}"
                    ))
                }),
        }
    }

    /// The job named at the top level, else in `detail`.
    pub fn job(&self) -> Option<&str> {
        self.job
            .as_deref()
            .or(self.detail.as_ref().and_then(|d| d.job.as_deref()))
    }

    /// The timeframe named at the top level, else in `detail`.
    pub fn timeframe(&self) -> Option<&str> {
        self.timeframe
            .as_deref()
            .or(self.detail.as_ref().and_then(|d| d.timeframe.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXPECTED: &str = "expected {\"time\": ..., \"timeframe\": ...}";

    #[test]
    fn scheduler_input_and_rule_envelope_both_parse() {
        let ev = ScheduleEvent::parse(
            json!({"timeframe": "1h", "time": "2026-11-21T13:00:00Z", "execution_id": "x", "attempt": "1"}),
            EXPECTED,
        )
        .unwrap();
        assert_eq!(ev.timeframe(), Some("1h"));
        assert_eq!(ev.time_ms(EXPECTED).unwrap(), Some(1_795_266_000_000));
        let ev = ScheduleEvent::parse(
            json!({
                "version": "0", "id": "53dc4d37", "detail-type": "Scheduled Event",
                "source": "aws.events", "account": "123456789012", "time": "2026-11-21T13:00:00Z",
                "region": "eu-west-1", "resources": ["arn:aws:events:eu-west-1:123456789012:rule/x"],
                "detail": {"timeframe": "4h"}
            }),
            EXPECTED,
        )
        .unwrap();
        assert_eq!(ev.timeframe(), Some("4h"));
        assert_eq!(ev.job(), None);
        let ev = ScheduleEvent::parse(
            json!({"job": "status-report", "time": "2026-11-21T13:30:00Z"}),
            EXPECTED,
        )
        .unwrap();
        assert_eq!(ev.job(), Some("status-report"));
        let ev = ScheduleEvent::parse(
            json!({"detail-type": "Scheduled Event", "detail": {"job": "status-report"}}),
            EXPECTED,
        )
        .unwrap();
        assert_eq!(ev.job(), Some("status-report"));
    }

    #[test]
    fn unexpected_payloads_are_rejected_with_the_reason() {
        let e = ScheduleEvent::parse(json!({"timeframe": "1h", "tf": "x"}), EXPECTED).unwrap_err();
        assert!(e.0.contains("unknown field `tf`"), "{e}");
        assert!(e.0.contains(EXPECTED), "{e}");
        let e = ScheduleEvent::parse(json!([1, 2]), EXPECTED).unwrap_err();
        assert!(e.0.starts_with("rejected event"), "{e}");
        let e =
            ScheduleEvent::parse(json!({"detail-type": "Object Created"}), EXPECTED).unwrap_err();
        assert!(e.0.contains("Object Created"), "{e}");
        let ev = ScheduleEvent::parse(json!({"time": "yesterday"}), EXPECTED).unwrap();
        let e = ev.time_ms(EXPECTED).unwrap_err();
        assert!(e.0.contains("RFC 3339"), "{e}");
    }
}
