//! The deployment files: the SAM template passes cfn-lint and says what the code expects (TTL
//! attribute, metric names, schedules of the closes, the event contract); the EC2 crontab fires
//! at each timeframe's closes; the install script is valid bash, idempotent, and switches between
//! the systemd unit and the crontab; the unit passes `systemd-analyze verify`.

use albra_adapters::emf::{names, NAMESPACE};
use albra_adapters::store::dynamo::ATTR_TTL;
use albra_tests::harness;
use albra_tests::moto::workspace_root;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    workspace_root()
}

fn venv_bin(name: &str) -> PathBuf {
    let p = root().join(".venv/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run `make venv` (installs cfn-lint and moto into .venv)",
        p.display()
    );
    p
}

/// The template as JSON, decoded by cfn-lint's own loader (it understands the `!Sub` tags).
fn template() -> Value {
    let out = Command::new(venv_bin("python3"))
        .args([
            "-c",
            "import json,sys\nfrom cfnlint.decode import decode\nt,m=decode(sys.argv[1])\n\
             assert not m, m\nprint(json.dumps(t, default=str))",
        ])
        .arg(root().join("infra/template.yaml"))
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "decode failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("template JSON")
}

/// Minutes of a day (0..1440) a cron minute + hour field pair fires at. Supports `*`, `*/n`,
/// `a/n`, numbers and comma lists: what the crontab and the schedules use.
fn cron_minutes(minute: &str, hour: &str) -> BTreeSet<u32> {
    fn field(f: &str, max: u32) -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        for part in f.split(',') {
            let (base, step) = match part.split_once('/') {
                Some((b, s)) => (b, s.parse::<u32>().expect("step")),
                None => (part, 1),
            };
            let (lo, hi) = match base {
                "*" => (0, max - 1),
                n => {
                    let v: u32 = n.parse().expect("number");
                    (v, if part.contains('/') { max - 1 } else { v })
                }
            };
            out.extend((lo..=hi).step_by(step as usize));
        }
        out
    }
    let mut out = BTreeSet::new();
    for h in field(hour, 24) {
        for m in field(minute, 60) {
            out.insert(h * 60 + m);
        }
    }
    out
}

/// The minutes of a day at which a candle of `tf_minutes` closes.
fn closes(tf_minutes: u32) -> BTreeSet<u32> {
    (0..1440).filter(|m| m % tf_minutes == 0).collect()
}

fn tf_minutes(tf: &str) -> u32 {
    match tf {
        "15m" => 15,
        "1h" => 60,
        "4h" => 240,
        other => panic!("unexpected timeframe {other}"),
    }
}

#[test]
fn cron_matcher_knows_its_fields() {
    assert_eq!(cron_minutes("*/15", "*").len(), 96);
    assert_eq!(cron_minutes("0/15", "*"), cron_minutes("*/15", "*"));
    assert_eq!(
        cron_minutes("0", "*/4"),
        BTreeSet::from([0, 240, 480, 720, 960, 1200])
    );
    assert_eq!(cron_minutes("5", "1,2"), BTreeSet::from([65, 125]));
}

#[test]
fn the_template_passes_cfn_lint() {
    let out = Command::new(venv_bin("cfn-lint"))
        .arg(root().join("infra/template.yaml"))
        .output()
        .expect("run cfn-lint");
    assert!(
        out.status.success(),
        "cfn-lint failed ({:?}):\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_template_matches_what_the_code_writes_and_emits() {
    let t = template();
    let res = t["Resources"].as_object().unwrap();
    let by_type = |ty: &str| -> Vec<(&String, &Value)> {
        res.iter().filter(|(_, r)| r["Type"] == ty).collect()
    };

    // The table: on demand, the store's TTL attribute, point-in-time recovery, pk/sk keys.
    let tables = by_type("AWS::DynamoDB::Table");
    assert_eq!(tables.len(), 1);
    let p = &tables[0].1["Properties"];
    assert_eq!(p["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(p["TimeToLiveSpecification"]["AttributeName"], ATTR_TTL);
    assert_eq!(p["TimeToLiveSpecification"]["Enabled"], true);
    assert_eq!(
        p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
    let keys: Vec<&str> = p["KeySchema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["AttributeName"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["pk", "sk"]);

    // The functions: arm64 custom runtime, bootstrap.
    let globals = &t["Globals"]["Function"];
    assert_eq!(globals["Runtime"], "provided.al2023");
    assert_eq!(globals["Architectures"][0], "arm64");
    assert_eq!(globals["Handler"], "bootstrap");
    let fns = by_type("AWS::Serverless::Function");
    assert_eq!(fns.len(), 4);
    for (name, f) in &fns {
        let stmts = f["Properties"]["Policies"][0]["Statement"]
            .as_array()
            .unwrap();
        let text = serde_json::to_string(stmts).unwrap();
        assert!(
            !text.contains("\"Resource\":\"*\""),
            "{name}: a wildcard resource: {text}"
        );
        assert!(text.contains("StateTable"), "{name}: {text}");
    }

    // The schedules: exact (no flexible window), no late retries, one per close.
    let schedules = by_type("AWS::Scheduler::Schedule");
    assert_eq!(schedules.len(), 5);
    let mut timeframes = BTreeSet::new();
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/events/scheduler-evaluator-1h.json"))
            .unwrap(),
    )
    .unwrap();
    for (name, s) in &schedules {
        let p = &s["Properties"];
        assert_eq!(p["FlexibleTimeWindow"]["Mode"], "OFF", "{name}");
        assert_eq!(
            p["Target"]["RetryPolicy"]["MaximumRetryAttempts"], 0,
            "{name}"
        );
        assert!(
            p["Target"]["RetryPolicy"]["MaximumEventAgeInSeconds"]
                .as_i64()
                .unwrap()
                <= 60,
            "{name}"
        );
        let input: Value = serde_json::from_str(p["Target"]["Input"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{name}: Input is not JSON: {e}"));
        assert_eq!(input["time"], "<aws.scheduler.scheduled-time>", "{name}");
        let expr = p["ScheduleExpression"].as_str().unwrap();
        match input["timeframe"].as_str() {
            Some(tf) => {
                // cron(min hour dom month dow year), UTC.
                assert_eq!(p["ScheduleExpressionTimezone"], "UTC", "{name}");
                let inner = expr.strip_prefix("cron(").unwrap().trim_end_matches(')');
                let f: Vec<&str> = inner.split_whitespace().collect();
                assert_eq!(f.len(), 6, "{expr}");
                assert_eq!(
                    cron_minutes(f[0], f[1]),
                    closes(tf_minutes(tf)),
                    "{name}: {expr}"
                );
                timeframes.insert(tf.to_string());
                // The test events use exactly the members the schedules send.
                let a: BTreeSet<&String> = input.as_object().unwrap().keys().collect();
                let b: BTreeSet<&String> = fixture.as_object().unwrap().keys().collect();
                assert_eq!(a, b, "{name}");
            }
            // The status report on the half hours, aligned with its slots.
            None if input["job"] == "status-report" => {
                assert_eq!(expr, "cron(0/30 * * * ? *)", "{name}");
                assert_eq!(p["ScheduleExpressionTimezone"], "UTC", "{name}");
                assert_eq!(p["Target"]["Arn"]["Fn::GetAtt"][0], "PositionSyncFunction");
            }
            None => assert_eq!(expr, "rate(1 minute)", "{name}"),
        }
    }
    assert_eq!(
        timeframes,
        BTreeSet::from(["15m".into(), "1h".into(), "4h".into()])
    );

    // The alarms watch what the jobs emit, and all go to the topic.
    let alarms = by_type("AWS::CloudWatch::Alarm");
    let watched: BTreeSet<(String, String)> = alarms
        .iter()
        .map(|(_, a)| {
            (
                a["Properties"]["Namespace"].as_str().unwrap().to_string(),
                a["Properties"]["MetricName"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for m in [
        names::HEARTBEAT,
        names::JOB_ERRORS,
        names::MDD_LEVEL,
        names::DAILY_LOSS_HALT,
        names::ORDERS_REJECTED,
    ] {
        assert!(
            watched.contains(&(NAMESPACE.to_string(), m.to_string())),
            "no alarm on {m}: {watched:?}"
        );
    }
    assert!(watched.contains(&("AWS/Lambda".to_string(), "Errors".to_string())));
    for (name, a) in &alarms {
        assert_eq!(
            a["Properties"]["AlarmActions"],
            serde_json::json!([{"Ref": "AlertTopic"}]),
            "{name}"
        );
    }
    let mdd = alarms
        .iter()
        .find(|(_, a)| a["Properties"]["MetricName"] == names::MDD_LEVEL)
        .unwrap();
    assert_eq!(mdd.1["Properties"]["Threshold"], 2);
    assert_eq!(
        mdd.1["Properties"]["ComparisonOperator"],
        "GreaterThanOrEqualToThreshold"
    );
    let subs = by_type("AWS::SNS::Subscription");
    assert_eq!(subs[0].1["Properties"]["Protocol"], "email");
    assert_eq!(subs[0].1["Properties"]["Endpoint"]["Ref"], "AlertEmail");
    for p in ["Stage", "AlertEmail"] {
        assert!(t["Parameters"].get(p).is_some(), "parameter {p}");
    }
}

/// The value of dimension `name` of an alarm, when it has one.
fn dimension<'a>(alarm: &'a Value, name: &str) -> Option<&'a Value> {
    alarm["Properties"]["Dimensions"]
        .as_array()?
        .iter()
        .find(|d| d["Name"] == name)
        .map(|d| &d["Value"])
}

/// The alarms on `metric` in the Albra namespace for `job` (by its `Job` dimension).
fn job_alarms<'a>(t: &'a Value, metric: &str, job: &str) -> Vec<(&'a String, &'a Value)> {
    t["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| {
            r["Type"] == "AWS::CloudWatch::Alarm"
                && r["Properties"]["Namespace"] == NAMESPACE
                && r["Properties"]["MetricName"] == metric
                && dimension(r, "Job").and_then(Value::as_str) == Some(job)
        })
        .collect()
}

#[test]
fn the_alarms_reach_a_person() {
    let t = template();
    let res = t["Resources"].as_object().unwrap();

    // The topic is encrypted with a customer-managed key whose policy lets CloudWatch publish
    // (the AWS-managed alias/aws/sns key cannot), for this account's alarms only, and lets the
    // account administer it.
    let topic = &res["AlertTopic"]["Properties"];
    let key_ref = &topic["KmsMasterKeyId"];
    assert_ne!(key_ref, "alias/aws/sns", "an AWS-managed key: {key_ref}");
    let key_name = key_ref["Fn::GetAtt"][0]
        .as_str()
        .or_else(|| key_ref["Ref"].as_str())
        .unwrap_or_else(|| panic!("the topic's key is not a key of this stack: {key_ref}"));
    let key = &res[key_name];
    assert_eq!(key["Type"], "AWS::KMS::Key", "{key_name}");
    assert_eq!(key["Properties"]["EnableKeyRotation"], true);
    let aliases: Vec<&Value> = res
        .values()
        .filter(|r| r["Type"] == "AWS::KMS::Alias")
        .collect();
    assert_eq!(aliases.len(), 1);
    assert_eq!(aliases[0]["Properties"]["TargetKeyId"]["Ref"], key_name);
    let stmts = key["Properties"]["KeyPolicy"]["Statement"]
        .as_array()
        .unwrap();
    let actions = |s: &Value| -> Vec<String> {
        match &s["Action"] {
            Value::String(a) => vec![a.clone()],
            Value::Array(a) => a.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
            other => panic!("Action {other}"),
        }
    };
    let cw: Vec<&Value> = stmts
        .iter()
        .filter(|s| s["Principal"]["Service"] == "cloudwatch.amazonaws.com")
        .collect();
    assert_eq!(cw.len(), 1, "{stmts:?}");
    assert_eq!(cw[0]["Effect"], "Allow");
    let mut got = actions(cw[0]);
    got.sort();
    assert_eq!(got, ["kms:Decrypt", "kms:GenerateDataKey*"]);
    assert_eq!(
        cw[0]["Condition"]["StringEquals"]["aws:SourceAccount"]["Ref"], "AWS::AccountId",
        "scoped to this account's alarms: {}",
        cw[0]
    );
    let admin = stmts
        .iter()
        .find(|s| {
            s["Principal"]["AWS"]["Fn::Sub"]
                .as_str()
                .is_some_and(|p| p.ends_with(":root"))
        })
        .expect("the account administers the key");
    assert_eq!(actions(admin), ["kms:*"]);
    // Only the account and CloudWatch are named.
    assert_eq!(stmts.len(), 2, "{stmts:?}");

    // Every schedule has a heartbeat alarm on its own timeframe that fires after one missed or
    // failed run and never between two good ones; the sync has one too; both jobs' JobErrors
    // are alarmed. All go to the topic.
    let schedules: BTreeSet<String> = res
        .values()
        .filter(|r| r["Type"] == "AWS::Scheduler::Schedule")
        .filter_map(|r| {
            let input: Value =
                serde_json::from_str(r["Properties"]["Target"]["Input"].as_str()?).ok()?;
            input["timeframe"].as_str().map(str::to_string)
        })
        .collect();
    let beats = job_alarms(&t, names::HEARTBEAT, "evaluator");
    let mut covered = BTreeSet::new();
    for (name, a) in &beats {
        let p = &a["Properties"];
        let tf = dimension(a, "Timeframe")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{name}: the evaluator's heartbeat is per Timeframe"));
        assert_eq!(dimension(a, "Stage").unwrap()["Ref"], "Stage", "{name}");
        let interval = u64::from(tf_minutes(tf)) * 60;
        let period = p["Period"].as_u64().unwrap();
        let n = p["EvaluationPeriods"].as_u64().unwrap();
        assert_eq!(p["DatapointsToAlarm"].as_u64().unwrap_or(n), n, "{name}");
        assert_eq!(
            interval % period,
            0,
            "{name}: buckets align with the closes"
        );
        // Between two good runs at most interval/period buckets in a row are empty (counting the
        // next run's bucket before its data point arrives); one missed run empties
        // 2·interval/period − 1 in a row.
        assert!(
            n > interval / period,
            "{name}: would fire between good runs"
        );
        assert!(
            n < 2 * interval / period,
            "{name}: would not fire after one missed run"
        );
        assert_eq!(p["Threshold"], 1, "{name}");
        assert_eq!(p["ComparisonOperator"], "LessThanThreshold", "{name}");
        assert_eq!(p["TreatMissingData"], "breaching", "{name}");
        covered.insert(tf.to_string());
    }
    assert_eq!(
        covered, schedules,
        "one evaluator heartbeat alarm per schedule"
    );
    assert_eq!(beats.len(), schedules.len());

    let sync_beat = job_alarms(&t, names::HEARTBEAT, "position-sync");
    assert_eq!(sync_beat.len(), 1);
    let p = &sync_beat[0].1["Properties"];
    assert_eq!(p["TreatMissingData"], "breaching");
    assert_eq!(p["ComparisonOperator"], "LessThanThreshold");
    assert_eq!(p["Threshold"], 1);
    assert!(dimension(sync_beat[0].1, "Timeframe").is_none());

    for job in ["evaluator", "position-sync"] {
        let errs = job_alarms(&t, names::JOB_ERRORS, job);
        assert_eq!(errs.len(), 1, "JobErrors alarm for {job}");
        let p = &errs[0].1["Properties"];
        assert_eq!(p["ComparisonOperator"], "GreaterThanOrEqualToThreshold");
        assert_eq!(p["Threshold"], 1);
        assert_eq!(p["Statistic"], "Sum");
    }
    for (name, a) in res
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::CloudWatch::Alarm")
    {
        assert_eq!(
            a["Properties"]["AlarmActions"],
            serde_json::json!([{"Ref": "AlertTopic"}]),
            "{name}"
        );
    }
}

#[test]
fn the_functions_read_only_their_stages_keys() {
    let t = template();
    let fns: Vec<(&String, &Value)> = t["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
        .collect();
    assert_eq!(fns.len(), 4);
    for (name, f) in fns {
        let stmts = f["Properties"]["Policies"][0]["Statement"]
            .as_array()
            .unwrap();
        let text = serde_json::to_string(stmts).unwrap();
        // SSM: this stage's parameters (what core/adapters/src/secrets.rs names), nothing
        // wider; the dashboard only its token.
        let (sid, resource) = if name == "DashboardFunction" {
            ("DashboardToken", "parameter/albra/${Stage}/dashboard/token")
        } else {
            ("Keys", "parameter/albra/${Stage}/*")
        };
        let keys = stmts
            .iter()
            .find(|s| s["Sid"] == sid)
            .unwrap_or_else(|| panic!("{name}: no {sid} statement: {text}"));
        assert_eq!(
            keys["Resource"]["Fn::Sub"],
            format!("arn:${{AWS::Partition}}:ssm:${{AWS::Region}}:${{AWS::AccountId}}:{resource}"),
            "{name}"
        );
        assert!(!text.contains("parameter/albra/*"), "{name}: {text}");
        // KMS: never key/*; kms:Decrypt only on the named key, only through SSM, only when a
        // customer-managed key is named (the AWS-managed aws/ssm key's policy needs none).
        assert!(!text.contains("key/*"), "{name}: {text}");
        let decrypt = stmts
            .iter()
            .find_map(|s| s.get("Fn::If"))
            .unwrap_or_else(|| panic!("{name}: no conditional kms:Decrypt: {text}"));
        assert_eq!(decrypt[0], "HasSsmKmsKey", "{name}");
        assert_eq!(decrypt[1]["Action"], "kms:Decrypt", "{name}");
        assert_eq!(decrypt[1]["Resource"]["Ref"], "SsmKmsKeyArn", "{name}");
        assert_eq!(
            decrypt[1]["Condition"]["StringEquals"]["kms:ViaService"]["Fn::Sub"],
            "ssm.${AWS::Region}.amazonaws.com",
            "{name}"
        );
        assert_eq!(decrypt[2]["Ref"], "AWS::NoValue", "{name}");
        let kms_statements = stmts
            .iter()
            .filter(|s| serde_json::to_string(s).unwrap().contains("kms:"))
            .count();
        assert_eq!(kms_statements, 1, "{name}: {text}");
    }
    assert_eq!(t["Parameters"]["SsmKmsKeyArn"]["Default"], "");
    assert_eq!(
        t["Conditions"]["HasSsmKmsKey"],
        serde_json::json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "SsmKmsKeyArn"}, ""]}]})
    );
    // The functions know their stage: the SSM names and the metrics' Stage come from it.
    assert_eq!(
        t["Globals"]["Function"]["Environment"]["Variables"][albra_adapters::secrets::STAGE_VAR]
            ["Ref"],
        "Stage"
    );
}

/// The function URLs, the bot's and the dashboard's: no AWS auth (Telegram cannot sign, a
/// browser does not), so the secret token and the session cookie are their guards; built by
/// `make lambda`; logs kept as the jobs'; each URL an output.
#[test]
fn the_bot_and_the_dashboard_are_function_urls_built_and_output() {
    let t = template();
    let make = std::fs::read_to_string(root().join("Makefile")).unwrap();
    let built = make
        .lines()
        .find_map(|l| l.strip_prefix("LAMBDA_FUNCTIONS :="))
        .expect("LAMBDA_FUNCTIONS in the Makefile");
    for (resource, dir, output) in [
        ("TelegramWebhook", "telegram-webhook", "TelegramWebhookUrl"),
        ("Dashboard", "dashboard", "DashboardUrl"),
    ] {
        let f = &t["Resources"][format!("{resource}Function")];
        assert_eq!(f["Type"], "AWS::Serverless::Function", "{resource}");
        let p = &f["Properties"];
        assert_eq!(p["FunctionUrlConfig"]["AuthType"], "NONE");
        assert_eq!(p["CodeUri"], format!("build/{dir}/"));
        assert!(p["Timeout"].as_i64().unwrap() <= 60);
        assert_eq!(
            p["LoggingConfig"]["LogGroup"]["Ref"],
            format!("{resource}LogGroup"),
            "its logs are kept as long as the jobs'"
        );
        // SAM names the URL resource <function>Url.
        assert_eq!(
            t["Outputs"][output]["Value"]["Fn::GetAtt"],
            serde_json::json!([format!("{resource}FunctionUrl"), "FunctionUrl"])
        );
        assert!(
            built.split_whitespace().any(|f| f == dir),
            "make lambda does not build {dir}: {built}"
        );
    }
}

/// The dashboard reads: the state table without a write action, and of SSM only its token.
#[test]
fn the_dashboard_can_read_the_table_and_its_token_only() {
    let t = template();
    let statements = &t["Resources"]["DashboardFunction"]["Properties"]["Policies"][0]["Statement"];
    let actions: Vec<String> = statements
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["Action"].as_array())
        .flatten()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        actions,
        [
            "dynamodb:GetItem",
            "dynamodb:Query",
            "dynamodb:DescribeTable",
            "ssm:GetParameter",
            "ssm:GetParameters"
        ]
    );
    let token = statements
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "DashboardToken")
        .unwrap();
    assert_eq!(
        token["Resource"]["Fn::Sub"],
        "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/albra/${Stage}/dashboard/token"
    );
}

#[test]
fn the_crontab_fires_at_every_close_and_syncs_every_minute() {
    let text = std::fs::read_to_string(root().join("infra/ec2/albra.cron")).unwrap();
    assert!(text.contains("CRON_TZ=UTC"));
    let mut seen = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.contains('=') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(f.len() >= 8, "{line}");
        assert_eq!(f[5], "albra", "runs as the albra user: {line}");
        assert_eq!(f[6], "/opt/albra/bin/albra-job", "{line}");
        assert_eq!((f[2], f[3], f[4]), ("*", "*", "*"), "{line}");
        let minutes = cron_minutes(f[0], f[1]);
        match f[7] {
            "evaluator" => {
                assert_eq!(f[8], "--timeframe", "{line}");
                assert_eq!(minutes, closes(tf_minutes(f[9])), "{line}");
                seen.insert(f[9].to_string());
            }
            "position-sync" => {
                assert_eq!(minutes.len(), 1440, "{line}");
                seen.insert("sync".into());
            }
            "status-report" => {
                assert_eq!(minutes.len(), 48, "every half hour: {line}");
                seen.insert("report".into());
            }
            other => panic!("unexpected job {other}: {line}"),
        }
    }
    assert_eq!(
        seen,
        BTreeSet::from([
            "15m".into(),
            "1h".into(),
            "4h".into(),
            "sync".into(),
            "report".into()
        ])
    );
}

fn bash_ok(args: &[&str], path: &Path) -> std::process::Output {
    Command::new("bash")
        .args(args)
        .arg(path)
        .output()
        .expect("run bash")
}

#[test]
fn the_scripts_are_valid_bash() {
    for s in [
        "infra/ec2/install.sh",
        "infra/ec2/albra-job",
        "infra/lambda-config.sh",
    ] {
        let out = bash_ok(&["-n"], &root().join(s));
        assert!(
            out.status.success(),
            "{s}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn install(args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(root().join("infra/ec2/install.sh"))
        .args(args)
        .output()
        .expect("run install.sh")
}

fn tree(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, d: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn install_is_idempotent_keeps_the_operators_files_and_switches_modes() {
    let bins = harness::bin_dir();
    for b in ["albra", "albra-ops", "evaluator", "position-sync"] {
        harness::bin(b);
    }
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().display().to_string();
    let b = bins.display().to_string();
    let out = install(&["--mode", "systemd", "--root", &r, "--bin-dir", &b]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = tree(dir.path());
    assert!(
        first.contains("etc/systemd/system/albra.service"),
        "{first:?}"
    );
    assert!(!first.contains("etc/cron.d/albra"));
    for f in [
        "opt/albra/bin/albra",
        "opt/albra/bin/albra-ops",
        "opt/albra/bin/evaluator",
        "opt/albra/bin/position-sync",
        "opt/albra/bin/albra-job",
        "etc/albra/albra.toml",
        "etc/albra/albra.env",
        // The missed-run check, in both modes.
        "etc/systemd/system/albra-watch.service",
        "etc/systemd/system/albra-watch.timer",
    ] {
        assert!(first.contains(f), "{f} not installed: {first:?}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        std::fs::metadata(dir.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("etc/albra/albra.env"), 0o600, "keys file is private");

    // The operator edits the config; a re-install keeps it and changes nothing else.
    let cfg = dir.path().join("etc/albra/albra.toml");
    std::fs::write(&cfg, "# edited\n").unwrap();
    let out = install(&["--mode", "systemd", "--root", &r, "--bin-dir", &b]);
    assert!(out.status.success());
    assert_eq!(tree(dir.path()), first);
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), "# edited\n");

    // Switch to cron: the unit goes, the crontab comes.
    let out = install(&["--mode", "cron", "--root", &r, "--bin-dir", &b]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cron = tree(dir.path());
    assert!(cron.contains("etc/cron.d/albra"));
    assert!(!cron.contains("etc/systemd/system/albra.service"));
    assert!(cron.contains("etc/systemd/system/albra-watch.timer"));
    assert_eq!(mode("etc/cron.d/albra"), 0o644);

    // Bad use is refused with the fix.
    let out = install(&["--mode", "launchd", "--root", &r]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("systemd or cron"));
    let out = install(&["--mode", "cron", "--root", &r, "--bin-dir", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("build first"));
}

#[test]
fn the_systemd_unit_verifies() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        println!("skipped: systemd-analyze is not installed on this machine");
        return;
    };
    assert!(out.status.success());
    // Point ExecStart at the built binary so verify can check it is executable.
    let unit = std::fs::read_to_string(root().join("infra/ec2/albra.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/opt/albra/bin/albra run --live"),
        "{unit}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("albra.service");
    std::fs::write(
        &path,
        unit.replace(
            "/opt/albra/bin/albra",
            &harness::bin("albra").display().to_string(),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("albra.service:"),
        "unit warnings: {stderr}"
    );
    // systemd mode writes the heartbeats albra-watch reads.
    assert!(
        unit.contains("Environment=ALBRA_JOBS_DIR=/var/lib/albra/jobs"),
        "{unit}"
    );

    // The missed-run check: the timer and the service it starts, which runs albra-job check.
    let service = std::fs::read_to_string(root().join("infra/ec2/albra-watch.service")).unwrap();
    assert!(
        service.contains("ExecStart=/opt/albra/bin/albra-job check"),
        "{service}"
    );
    std::fs::write(
        dir.path().join("albra-watch.service"),
        service.replace(
            "/opt/albra/bin/albra-job",
            &root().join("infra/ec2/albra-job").display().to_string(),
        ),
    )
    .unwrap();
    std::fs::copy(
        root().join("infra/ec2/albra-watch.timer"),
        dir.path().join("albra-watch.timer"),
    )
    .unwrap();
    for u in ["albra-watch.service", "albra-watch.timer"] {
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.path().join(u))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{u}: {stderr}");
        assert!(!stderr.contains("albra-watch."), "{u} warnings: {stderr}");
    }
}

#[test]
fn the_packed_lambda_config_loads_and_reads_every_key_from_ssm() {
    let out = Command::new("bash")
        .arg(root().join("infra/lambda-config.sh"))
        .arg(root().join("config/albra.toml"))
        .output()
        .expect("run lambda-config.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("albra.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let cfg = albra_core::config::Config::load(&path).expect("the packed config loads");
    assert!(!cfg.accounts.is_empty());
    for a in &cfg.accounts {
        match a.key_source().unwrap() {
            albra_core::ports::KeySource::Ssm { prefix } => {
                let stage = albra_adapters::secrets::ssm_stage();
                assert_eq!(prefix, format!("/albra/{stage}/{}", a.id));
            }
            other => panic!("account {} still reads {other:?}", a.id),
        }
    }
    // Nothing but the key sources changed.
    let original = std::fs::read_to_string(root().join("config/albra.toml")).unwrap();
    let packed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(original.lines().count(), packed.lines().count());
    for (a, b) in original.lines().zip(packed.lines()) {
        if a != b {
            assert!(a.trim_start().starts_with("key_source"), "{a} -> {b}");
        }
    }
}
