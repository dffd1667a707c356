//! Fault rules of the test exchange: which requests a fault hits (method, path, optionally one
//! parameter's value), when it fires (the n-th match, each of the next k matches, or a seeded
//! chance per match), and what it does ([`FaultKind`]). Owns the armed rules, their match
//! counters and the journal of every fault fired; the HTTP layer asks [`Rules::pick`] once per
//! request and acts the chosen fault out.

/// What a fault does to the request it hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// No answer within any sane client timeout (60 s); the request takes effect first with
    /// `apply` (the order is placed, only the answer is lost).
    Timeout { apply: bool },
    /// HTTP 503 code -1000 "Unknown error": the outcome is unknown to the client; applied or not
    /// per `apply`.
    Unknown503 { apply: bool },
    /// HTTP 429 code -1003 with `Retry-After`; nothing applied.
    RateLimit429 { retry_after_s: u64 },
    /// HTTP 418 (IP banned) code -1003 with `Retry-After`; nothing applied.
    Banned418 { retry_after_s: u64 },
    /// HTTP 400 code -1021 (timestamp outside recvWindow); nothing applied.
    Timestamp1021,
    /// A CDN's HTML error page (502 or 504) instead of JSON; applied or not per `apply` (a 504
    /// may come after the origin did the work).
    Html5xx { status: u16, apply: bool },
    /// The request takes effect, then the connection breaks mid-answer (the client sees a
    /// truncated body).
    DropAfterApply,
    /// No answer until [`super::BinanceTestServer::release_holds`] or the server is dropped
    /// (kills at step boundaries); applied first or not per `apply`.
    Hold { apply: bool },
}

impl FaultKind {
    /// Whether the request takes effect on the exchange before the fault is acted out.
    pub fn applies(self) -> bool {
        match self {
            FaultKind::Timeout { apply }
            | FaultKind::Unknown503 { apply }
            | FaultKind::Html5xx { apply, .. }
            | FaultKind::Hold { apply } => apply,
            FaultKind::DropAfterApply => true,
            FaultKind::RateLimit429 { .. }
            | FaultKind::Banned418 { .. }
            | FaultKind::Timestamp1021 => false,
        }
    }

    /// A short name for reports: `timeout+apply`, `429(2s)`, `html504`, ….
    pub fn label(self) -> String {
        let applied = |name: &str, apply: bool| {
            if apply {
                format!("{name}+apply")
            } else {
                name.to_string()
            }
        };
        match self {
            FaultKind::Timeout { apply } => applied("timeout", apply),
            FaultKind::Unknown503 { apply } => applied("503", apply),
            FaultKind::RateLimit429 { retry_after_s } => format!("429({retry_after_s}s)"),
            FaultKind::Banned418 { retry_after_s } => format!("418({retry_after_s}s)"),
            FaultKind::Timestamp1021 => "-1021".to_string(),
            FaultKind::Html5xx { status, apply } => applied(&format!("html{status}"), apply),
            FaultKind::DropAfterApply => "drop+apply".to_string(),
            FaultKind::Hold { apply } => applied("hold", apply),
        }
    }
}

/// When a rule fires among the requests it matches (counted from when it was added).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum When {
    /// The n-th match only (1 = the first).
    Nth(u32),
    /// Each of the next k matches.
    Next(u32),
    /// Each match with probability `per_mille` / 1000, drawn from a generator seeded with
    /// `seed` (the same requests in the same order fire the same way); at most `max` times.
    Chance { per_mille: u32, seed: u64, max: u32 },
}

/// One fault rule: the requests it matches, when it fires and what it does.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultRule {
    /// `GET`, `POST`, `DELETE`; `None` matches any method.
    pub method: Option<String>,
    pub path: String,
    /// A parameter (query or form body) that must have this value, e.g. `("type", "MARKET")`.
    pub param: Option<(String, String)>,
    pub when: When,
    pub kind: FaultKind,
}

impl FaultRule {
    /// `kind` on the next `method` request to `path`.
    pub fn new(method: &str, path: &str, kind: FaultKind) -> FaultRule {
        FaultRule {
            method: Some(method.to_ascii_uppercase()),
            path: path.to_string(),
            param: None,
            when: When::Next(1),
            kind,
        }
    }
    /// Only requests whose parameter `name` equals `value`.
    pub fn param(mut self, name: &str, value: &str) -> FaultRule {
        self.param = Some((name.to_string(), value.to_string()));
        self
    }
    pub fn when(mut self, when: When) -> FaultRule {
        self.when = when;
        self
    }
    fn matches(&self, method: &str, path: &str, get: &dyn Fn(&str) -> Option<String>) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.path == path
            && self
                .param
                .as_ref()
                .is_none_or(|(k, v)| get(k).as_deref() == Some(v.as_str()))
    }
}

/// A fault that fired: which rule, on which request of the journal, doing what.
#[derive(Clone, Debug, PartialEq)]
pub struct FiredFault {
    /// The rule's id, as [`super::BinanceTestServer::add_rule`] returned it.
    pub rule: usize,
    /// Index of the request in [`super::BinanceTestServer::requests`].
    pub request: usize,
    pub method: String,
    pub path: String,
    pub kind: FaultKind,
    /// Server time when it fired.
    pub time: i64,
}

struct Armed {
    id: usize,
    rule: FaultRule,
    seen: u32,
    fired: u32,
    rng: u64,
}

impl Armed {
    /// Counts one matching request and says whether the rule fires on it.
    fn wants(&mut self) -> bool {
        self.seen += 1;
        match self.rule.when {
            When::Nth(n) => self.seen == n,
            When::Next(k) => self.fired < k,
            When::Chance { per_mille, max, .. } => {
                self.fired < max && (splitmix(&mut self.rng) % 1000) < u64::from(per_mille)
            }
        }
    }
    fn spent(&self) -> bool {
        match self.rule.when {
            When::Nth(n) => self.seen >= n,
            When::Next(k) => self.fired >= k,
            When::Chance { max, .. } => self.fired >= max,
        }
    }
}

/// SplitMix64: a tiny, well-mixed generator for the seeded chance rules.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The armed rules and the journal of fired faults.
#[derive(Default)]
pub(crate) struct Rules {
    armed: Vec<Armed>,
    next_id: usize,
    pub fired: Vec<FiredFault>,
}

impl Rules {
    /// Arms `rule`; returns its id.
    pub fn add(&mut self, rule: FaultRule) -> usize {
        let id = self.next_id;
        self.next_id += 1;
        let rng = match rule.when {
            When::Chance { seed, .. } => seed,
            _ => 0,
        };
        self.armed.push(Armed {
            id,
            rule,
            seen: 0,
            fired: 0,
            rng,
        });
        id
    }

    /// Disarms every rule (the journal of fired faults stays).
    pub fn clear(&mut self) {
        self.armed.clear();
    }

    /// How many rules are armed and not yet spent.
    pub fn pending(&self) -> usize {
        self.armed.iter().filter(|a| !a.spent()).count()
    }

    /// The fault for one request, if a rule fires on it. Every matching rule counts the request;
    /// the first (oldest) that wants to fire does, and rules that are spent are dropped.
    pub fn pick(
        &mut self,
        method: &str,
        path: &str,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Option<(usize, FaultKind)> {
        let mut chosen = None;
        for a in self.armed.iter_mut() {
            if !a.rule.matches(method, path, get) {
                continue;
            }
            if chosen.is_none() {
                if a.wants() {
                    a.fired += 1;
                    chosen = Some((a.id, a.rule.kind));
                }
            } else if matches!(a.rule.when, When::Nth(_)) {
                // A request taken by an older rule still counts towards the n-th.
                a.seen += 1;
            }
        }
        self.armed.retain(|a| !a.spent());
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_params(_: &str) -> Option<String> {
        None
    }

    fn market(name: &str) -> Option<String> {
        (name == "type").then(|| "MARKET".to_string())
    }

    const T: FaultKind = FaultKind::Timestamp1021;

    #[test]
    fn next_one_is_consumed_by_method_and_path() {
        let mut r = Rules::default();
        let id = r.add(FaultRule::new("post", "/fapi/v1/order", T));
        assert_eq!(r.pick("GET", "/fapi/v1/order", &no_params), None);
        assert_eq!(r.pick("POST", "/fapi/v1/time", &no_params), None);
        assert_eq!(r.pick("POST", "/fapi/v1/order", &no_params), Some((id, T)));
        assert_eq!(r.pick("POST", "/fapi/v1/order", &no_params), None);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn nth_fires_on_that_match_only_and_next_k_on_k_in_a_row() {
        let mut r = Rules::default();
        let third = r.add(FaultRule::new("GET", "/a", T).when(When::Nth(3)));
        let fired: Vec<_> = (0..5)
            .map(|_| r.pick("GET", "/a", &no_params).is_some())
            .collect();
        assert_eq!(fired, [false, false, true, false, false]);
        let k = FaultKind::RateLimit429 { retry_after_s: 1 };
        let two = r.add(FaultRule::new("GET", "/a", k).when(When::Next(2)));
        assert_eq!(r.pick("GET", "/a", &no_params), Some((two, k)));
        assert_eq!(r.pick("GET", "/a", &no_params), Some((two, k)));
        assert_eq!(r.pick("GET", "/a", &no_params), None);
        assert_ne!(third, two);
    }

    #[test]
    fn an_older_rule_wins_and_the_younger_waits_its_turn() {
        let mut r = Rules::default();
        let first = r.add(FaultRule::new("GET", "/a", T));
        let hold = FaultKind::Hold { apply: false };
        let second = r.add(FaultRule::new("GET", "/a", hold));
        assert_eq!(r.pick("GET", "/a", &no_params), Some((first, T)));
        assert_eq!(r.pick("GET", "/a", &no_params), Some((second, hold)));
        // An n-th rule counts requests an older rule took.
        let a = r.add(FaultRule::new("GET", "/a", T));
        let b = r.add(FaultRule::new("GET", "/a", hold).when(When::Nth(2)));
        assert_eq!(r.pick("GET", "/a", &no_params), Some((a, T)));
        assert_eq!(r.pick("GET", "/a", &no_params), Some((b, hold)));
    }

    #[test]
    fn a_parameter_narrows_the_match() {
        let mut r = Rules::default();
        let id = r.add(FaultRule::new("POST", "/fapi/v1/order", T).param("type", "MARKET"));
        let limit = |n: &str| (n == "type").then(|| "LIMIT".to_string());
        assert_eq!(r.pick("POST", "/fapi/v1/order", &limit), None);
        assert_eq!(r.pick("POST", "/fapi/v1/order", &no_params), None);
        assert_eq!(r.pick("POST", "/fapi/v1/order", &market), Some((id, T)));
    }

    #[test]
    fn chance_is_reproducible_from_its_seed_and_capped() {
        let draw = |seed| {
            let mut r = Rules::default();
            r.add(FaultRule::new("GET", "/a", T).when(When::Chance {
                per_mille: 300,
                seed,
                max: 1000,
            }));
            (0..400)
                .map(|_| r.pick("GET", "/a", &no_params).is_some())
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        let hits = a.iter().filter(|f| **f).count();
        assert!((80..160).contains(&hits), "{hits} of 400 at 30 %");
        let mut r = Rules::default();
        r.add(FaultRule::new("GET", "/a", T).when(When::Chance {
            per_mille: 1000,
            seed: 1,
            max: 2,
        }));
        let fired = (0..5)
            .filter(|_| r.pick("GET", "/a", &no_params).is_some())
            .count();
        assert_eq!(fired, 2);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn labels_name_the_kind_and_whether_it_applied() {
        assert_eq!(FaultKind::Timeout { apply: true }.label(), "timeout+apply");
        assert_eq!(FaultKind::Banned418 { retry_after_s: 2 }.label(), "418(2s)");
        assert_eq!(
            FaultKind::Html5xx {
                status: 502,
                apply: false
            }
            .label(),
            "html502"
        );
        assert!(FaultKind::DropAfterApply.applies());
        assert!(!FaultKind::RateLimit429 { retry_after_s: 1 }.applies());
    }
}
