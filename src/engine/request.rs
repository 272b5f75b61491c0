//! Reading a submission: the payload of a `tasks/<queue>` publish checked
//! against the contract, into a [`ParsedRequest`] or a [`BadRequest`] that
//! says which field is wrong. Pure functions, no state.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::config::{MAX_ATTEMPTS, MAX_DELAY_MS, RetryPolicy};
use super::task::{MAX_PRIORITY, ReplyTo};

/// Longest task id accepted from a requester, in bytes.
pub const MAX_TASK_ID_LEN: usize = 256;

/// Longest `countdown`, in seconds (one year).
pub(super) const MAX_COUNTDOWN_SECS: f64 = 31_536_000.0;

/// Decides whether the requester may have results published to a topic;
/// the access layer's answer, borrowed for one submission.
#[derive(Clone, Copy)]
pub struct ReplyCheck<'a>(pub &'a (dyn Fn(&str) -> bool + Sync));

impl std::fmt::Debug for ReplyCheck<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplyCheck")
    }
}

/// A task published to `tasks/<queue>`, as the broker adapter saw it.
#[derive(Debug, Clone, Default)]
pub struct Submission<'a> {
    /// The topic level after `tasks/`, not yet validated.
    pub queue: &'a str,
    /// The raw payload.
    pub payload: &'a [u8],
    /// MQTT 5 Response Topic.
    pub response_topic: Option<String>,
    /// MQTT 5 Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// MQTT 5 user properties.
    pub user_properties: Vec<(String, String)>,
    /// MQTT 5 Message Expiry Interval, in seconds.
    pub message_expiry_secs: Option<u32>,
    /// The identity submitting it, as authenticated.
    pub requester: Option<String>,
    /// Whether the requester may be answered on a reply topic; none lets
    /// every valid topic through (the development profile).
    pub reply_check: Option<ReplyCheck<'a>>,
}

impl Submission<'_> {
    /// True when results may go to `topic` for this requester.
    pub fn may_reply_to(&self, topic: &str) -> bool {
        self.reply_check.is_none_or(|check| (check.0)(topic))
    }

    /// The MQTT 5 reply address: Response Topic and Correlation Data.
    pub(super) fn v5_reply(&self) -> Option<ReplyTo> {
        self.response_topic.clone().map(|topic| ReplyTo {
            topic,
            correlation_data: self.correlation_data.as_ref().map(|b| b.to_vec()),
            correlation_id: None,
        })
    }

    /// Why nothing can be answered on the Response Topic, if it is not a
    /// topic name a client may publish to.
    pub(super) fn response_topic_error(&self) -> Option<String> {
        let t = self
            .response_topic
            .as_ref()
            .filter(|t| !is_valid_reply_topic(t))?;
        Some(format!(
            "Response Topic `{t}` is not a topic name a client may publish to (no wildcards, no NUL, nothing under $SYS)"
        ))
    }

    /// Where the result goes: the MQTT 5 properties win over the JSON's
    /// `reply_to`, whose `correlation_id` is kept.
    pub(super) fn reply_with(&self, json: Option<ReplyTo>) -> Option<ReplyTo> {
        match (self.v5_reply(), json) {
            (Some(mut r), json) => {
                r.correlation_id = json.and_then(|j| j.correlation_id);
                Some(r)
            }
            (None, json) => json,
        }
    }

    /// Why results may not go to `reply` for this requester, if they may not.
    pub(super) fn reply_denied(&self, reply: Option<&ReplyTo>) -> Option<String> {
        let r = reply.filter(|r| !self.may_reply_to(&r.topic))?;
        Some(format!(
            "reply_topic_denied: the requester may not publish to `{}`, so no result can go there",
            r.topic
        ))
    }
}

/// When a task may first be delivered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Start {
    /// `countdown` seconds after submission.
    After(f64),
    /// At this time (`eta`), microseconds since the epoch.
    At(u64),
}

/// When a task that has not started expires.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Expires {
    /// Seconds after submission.
    After(f64),
    /// At this time, microseconds since the epoch.
    At(u64),
}

impl Start {
    /// The time it stands for, given the submission time `now`; none when
    /// that is not in the future.
    pub(super) fn due_us(self, now: u64) -> Option<u64> {
        match self {
            Start::After(s) => Some(now.saturating_add((s * 1e6) as u64)),
            Start::At(t) => Some(t),
        }
        .filter(|t| *t > now)
    }
}

impl Expires {
    /// The time it stands for, given the submission time `now`.
    pub(super) fn at_us(self, now: u64) -> u64 {
        match self {
            Expires::After(s) => now.saturating_add((s * 1e6) as u64),
            Expires::At(t) => t,
        }
    }
}

/// A `retry` object: each field overrides the queue's policy.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct RetryOverride {
    pub(super) max_attempts: Option<u32>,
    pub(super) backoff_ms: Option<u64>,
    pub(super) backoff_max_ms: Option<u64>,
    pub(super) jitter: Option<bool>,
}

impl RetryOverride {
    pub(super) fn apply(&self, base: RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts.unwrap_or(base.max_attempts),
            backoff_ms: self.backoff_ms.unwrap_or(base.backoff_ms),
            backoff_max_ms: self.backoff_max_ms.unwrap_or(base.backoff_max_ms),
            jitter: self.jitter.unwrap_or(base.jitter),
        }
    }
}

/// A request payload that passed validation.
#[derive(Debug, Default)]
pub(super) struct ParsedRequest {
    pub(super) task: Option<String>,
    pub(super) args: Vec<Value>,
    pub(super) kwargs: Map<String, Value>,
    pub(super) id: Option<String>,
    pub(super) reply_to: Option<ReplyTo>,
    pub(super) start: Option<Start>,
    pub(super) expires: Option<Expires>,
    pub(super) priority: u8,
    pub(super) retry: Option<RetryOverride>,
    pub(super) progress: bool,
}

/// A payload that failed validation, with what could still be salvaged to
/// tell the requester.
#[derive(Debug)]
pub(super) struct BadRequest {
    pub(super) message: String,
    pub(super) id: Option<String>,
    pub(super) reply_to: Option<ReplyTo>,
}

/// Checks a task payload against the contract: a JSON object whose known
/// fields have the right types and ranges. Unknown fields are ignored.
pub(super) fn parse_request(payload: &[u8]) -> Result<ParsedRequest, BadRequest> {
    let bad = |message: String| BadRequest {
        message,
        id: None,
        reply_to: None,
    };
    let value: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => return Err(bad(format!("payload is not JSON: {e}"))),
    };
    let Value::Object(mut obj) = value else {
        return Err(bad(format!(
            "payload must be a JSON object, got {}",
            json_type(&value)
        )));
    };
    let (id, reply_to, salvage) = read_envelope(&obj, |id| {
        (id.is_empty() || id.len() > MAX_TASK_ID_LEN)
            .then(|| format!("field `id` must be 1 to {MAX_TASK_ID_LEN} bytes"))
    })?;
    let fail = |message: String| salvage.fail(message);
    let task = str_field(&obj, "task").map_err(&fail)?;
    if task.as_deref() == Some("") {
        return Err(fail("field `task` must not be empty".into()));
    }
    let args = match obj.remove("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(fail(format!(
                "field `args` must be an array, got {}",
                json_type(&other)
            )));
        }
    };
    let kwargs = match obj.remove("kwargs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(fail(format!(
                "field `kwargs` must be an object, got {}",
                json_type(&other)
            )));
        }
    };
    let options = parse_options(&obj).map_err(&fail)?;
    Ok(ParsedRequest {
        task,
        args,
        kwargs,
        id,
        reply_to,
        ..options
    })
}

/// What can be told to a requester whose request is refused: its id and
/// reply address, when those fields were well formed.
#[derive(Debug, Default)]
pub(super) struct Salvage {
    id: Option<String>,
    reply_to: Option<ReplyTo>,
}

impl Salvage {
    /// The refusal `message`, with what was salvaged.
    pub(super) fn fail(&self, message: String) -> BadRequest {
        BadRequest {
            message,
            id: self.id.clone(),
            reply_to: self.reply_to.clone(),
        }
    }
}

/// Reads the fields every request to the broker has, a task or a workflow:
/// `id` (checked by `bad_id`, which names what is wrong), `reply_to` and
/// `correlation_id`. The reply address and id are salvaged first, so a
/// requester whose other fields are wrong still hears why.
pub(super) fn read_envelope(
    obj: &Map<String, Value>,
    bad_id: impl Fn(&str) -> Option<String>,
) -> Result<(Option<String>, Option<ReplyTo>, Salvage), BadRequest> {
    let reply_topic = str_field(obj, "reply_to");
    let correlation_id = str_field(obj, "correlation_id");
    let id = str_field(obj, "id");
    let salvage = Salvage {
        reply_to: match (&reply_topic, &correlation_id) {
            (Ok(Some(t)), c) if is_valid_reply_topic(t) => Some(ReplyTo {
                topic: t.clone(),
                correlation_data: None,
                correlation_id: c.clone().ok().flatten(),
            }),
            _ => None,
        },
        id: id.clone().ok().flatten(),
    };
    let fail = |message: String| salvage.fail(message);
    let reply_topic = reply_topic.map_err(fail)?;
    let correlation_id = correlation_id.map_err(fail)?;
    let id = id.map_err(fail)?;
    if let Some(t) = &reply_topic
        && !is_valid_reply_topic(t)
    {
        return Err(fail(format!(
            "field `reply_to` is not a valid topic name: `{t}`"
        )));
    }
    if let Some(message) = id.as_deref().and_then(&bad_id) {
        return Err(fail(message));
    }
    let reply_to = reply_topic.map(|topic| ReplyTo {
        topic,
        correlation_data: None,
        correlation_id,
    });
    Ok((id, reply_to, salvage))
}

/// The lifecycle options: `countdown`, `eta`, `expires`, `priority`,
/// `retry`, `progress`.
pub(super) fn parse_options(obj: &Map<String, Value>) -> Result<ParsedRequest, String> {
    let countdown = match present(obj, "countdown") {
        None => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|s| (0.0..=MAX_COUNTDOWN_SECS).contains(s))
                .ok_or_else(|| {
                    format!(
                        "field `countdown` must be a number of seconds from 0 to {MAX_COUNTDOWN_SECS}, got {}",
                        describe(v)
                    )
                })?,
        ),
    };
    let eta = match present(obj, "eta") {
        None => None,
        Some(v) => Some(v.as_str().and_then(parse_rfc3339_us).ok_or_else(|| {
            format!(
                "field `eta` must be an RFC 3339 time such as 2026-12-01T18:30:00Z, got {}",
                describe(v)
            )
        })?),
    };
    let start = match (countdown, eta) {
        (Some(_), Some(_)) => return Err("give `countdown` or `eta`, not both".into()),
        (Some(c), None) => Some(Start::After(c)),
        (None, Some(t)) => Some(Start::At(t)),
        (None, None) => None,
    };
    let expires = match present(obj, "expires") {
        None => None,
        Some(Value::String(s)) => Some(Expires::At(parse_rfc3339_us(s).ok_or_else(|| {
            format!("field `expires` must be seconds or an RFC 3339 time, got `{s}`")
        })?)),
        Some(v) => Some(Expires::After(
            v.as_f64()
                .filter(|s| (0.0..=MAX_COUNTDOWN_SECS).contains(s))
                .ok_or_else(|| {
                    format!(
                        "field `expires` must be seconds (0 to {MAX_COUNTDOWN_SECS}) or an RFC 3339 time, got {}",
                        describe(v)
                    )
                })?,
        )),
    };
    let priority = match present(obj, "priority") {
        None => 0,
        Some(v) => v
            .as_u64()
            .filter(|p| *p <= u64::from(MAX_PRIORITY))
            .map(|p| p as u8)
            .ok_or_else(|| {
                format!(
                    "field `priority` must be an integer from 0 to {MAX_PRIORITY}, got {}",
                    describe(v)
                )
            })?,
    };
    let retry = match present(obj, "retry") {
        None => None,
        Some(Value::Object(r)) => Some(parse_retry(r)?),
        Some(v) => {
            return Err(format!(
                "field `retry` must be an object, got {}",
                describe(v)
            ));
        }
    };
    let progress = match present(obj, "progress") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(format!(
                "field `progress` must be true or false, got {}",
                describe(v)
            ));
        }
    };
    Ok(ParsedRequest {
        start,
        expires,
        priority,
        retry,
        progress,
        ..ParsedRequest::default()
    })
}

fn parse_retry(r: &Map<String, Value>) -> Result<RetryOverride, String> {
    let mut o = RetryOverride::default();
    for (k, v) in r {
        let ms = |name: &str| {
            v.as_u64().filter(|n| *n <= MAX_DELAY_MS).ok_or_else(|| {
                format!(
                    "field `retry.{name}` must be an integer of milliseconds from 0 to {MAX_DELAY_MS}, got {}",
                    describe(v)
                )
            })
        };
        match k.as_str() {
            "max_attempts" => {
                o.max_attempts = Some(
                    v.as_u64()
                        .filter(|n| (1..=u64::from(MAX_ATTEMPTS)).contains(n))
                        .map(|n| n as u32)
                        .ok_or_else(|| {
                            format!(
                                "field `retry.max_attempts` must be an integer from 1 to {MAX_ATTEMPTS}, got {}",
                                describe(v)
                            )
                        })?,
                );
            }
            "backoff_ms" => o.backoff_ms = Some(ms("backoff_ms")?),
            "backoff_max_ms" => o.backoff_max_ms = Some(ms("backoff_max_ms")?),
            "jitter" => {
                o.jitter = Some(v.as_bool().ok_or_else(|| {
                    format!(
                        "field `retry.jitter` must be true or false, got {}",
                        describe(v)
                    )
                })?);
            }
            other => {
                return Err(format!(
                    "field `retry.{other}` is unknown: use max_attempts, backoff_ms, backoff_max_ms, jitter"
                ));
            }
        }
    }
    Ok(o)
}

fn present<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

pub(super) fn str_field(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "field `{name}` must be a string, got {}",
            json_type(other)
        )),
    }
}

/// A reply topic must be a topic name a client may publish to: non-empty,
/// no wildcards, no NUL, and not under `$SYS` (the broker's own: nobody may
/// make the broker publish there).
pub fn is_valid_reply_topic(t: &str) -> bool {
    !t.is_empty() && t.len() <= 65_535 && !t.contains(['+', '#', '\0']) && !is_sys_topic(t)
}

/// Whether `t` is `$SYS` or below it: the broker's topics, closed to clients.
pub fn is_sys_topic(t: &str) -> bool {
    t == "$SYS" || t.starts_with("$SYS/")
}

pub(super) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value as an error message names it: numbers and strings themselves,
/// other values by type.
pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.len() <= 64 => format!("`{s}`"),
        other => json_type(other).to_string(),
    }
}

/// Parses an RFC 3339 time (`Z` or a `±HH:MM` offset, fractions of a second
/// allowed) into microseconds since the epoch; times before 1970 are 0.
pub fn parse_rfc3339_us(s: &str) -> Option<u64> {
    // humantime reads UTC (`Z`) only: take a numeric offset off and apply it.
    let (utc, offset_s) = match s
        .len()
        .checked_sub(6)
        .and_then(|i| s.get(i..).map(|o| (i, o)))
    {
        Some((i, o)) if matches!(o.as_bytes()[0], b'+' | b'-') && o.as_bytes()[3] == b':' => {
            let h: i64 = o.get(1..3)?.parse().ok()?;
            let m: i64 = o.get(4..6)?.parse().ok()?;
            let sign = if o.starts_with('-') { -1 } else { 1 };
            (format!("{}Z", &s[..i]), sign * (h * 3600 + m * 60))
        }
        _ => (s.to_string(), 0),
    };
    // humantime also stops at 1970: an earlier year (valid RFC 3339) is
    // checked with 1970 in its place and then means "the start".
    if let Some(year) = utc.get(..4).and_then(|y| y.parse::<u32>().ok())
        && year < 1970
    {
        humantime::parse_rfc3339_weak(&format!("1970{}", utc.get(4..)?)).ok()?;
        return Some(0);
    }
    let t = humantime::parse_rfc3339_weak(&utc).ok()?;
    let us = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i128,
        Err(e) => -(e.duration().as_micros() as i128),
    };
    // Local time = UTC + offset, so UTC = local - offset.
    let us = us - i128::from(offset_s) * 1_000_000;
    Some(u64::try_from(us.max(0)).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(payload: &str) -> String {
        parse_request(payload.as_bytes()).unwrap_err().message
    }

    #[test]
    fn request_validation_names_the_field() {
        assert!(parse_request(br#"{"task":"t","args":[1],"kwargs":{"a":1},"id":"x"}"#).is_ok());
        let e = parse_request(br#"{"args":"x","reply_to":"r","correlation_id":"c"}"#).unwrap_err();
        assert!(e.message.contains("`args` must be an array, got a string"));
        assert_eq!(e.reply_to.unwrap().correlation_id.as_deref(), Some("c"));
        assert!(parse_request(br#"{"reply_to":"a/+"}"#).is_err());
        assert!(parse_request(br#"{"reply_to":"$SYS/broker/x"}"#).is_err());
        assert!(parse_request(br#"{"reply_to":"a/#"}"#).is_err());
        assert!(parse_request(br#"{"task":""}"#).is_err());
        assert!(parse_request(format!(r#"{{"id":"{}"}}"#, "x".repeat(300)).as_bytes()).is_err());
        assert!(err("12").contains("got a number"));
    }

    #[test]
    fn lifecycle_options_parse() {
        let p = parse_request(
            br#"{"countdown":1.5,"expires":"2030-01-01T00:00:00+01:00","priority":9,
                "retry":{"max_attempts":3,"backoff_ms":10,"jitter":false},"progress":true}"#,
        )
        .unwrap();
        assert_eq!(p.start, Some(Start::After(1.5)));
        assert_eq!(
            p.expires,
            Some(Expires::At(
                parse_rfc3339_us("2029-12-31T23:00:00Z").unwrap()
            ))
        );
        assert_eq!(p.priority, 9);
        let r = p.retry.unwrap();
        assert_eq!(
            (r.max_attempts, r.backoff_ms, r.backoff_max_ms, r.jitter),
            (Some(3), Some(10), None, Some(false))
        );
        assert!(p.progress);
        let p = parse_request(br#"{"eta":"2026-12-01T18:30:00Z","expires":30}"#).unwrap();
        assert_eq!(
            p.start,
            Some(Start::At(parse_rfc3339_us("2026-12-01T18:30:00Z").unwrap()))
        );
        assert_eq!(p.expires, Some(Expires::After(30.0)));
    }

    #[test]
    fn every_lifecycle_field_with_a_wrong_type_or_range_is_refused_by_name() {
        for (payload, names) in [
            (r#"{"countdown":-1}"#, "`countdown`"),
            (r#"{"countdown":31536001}"#, "`countdown`"),
            (r#"{"countdown":"5"}"#, "`countdown`"),
            (r#"{"eta":"tomorrow"}"#, "`eta`"),
            (r#"{"eta":12}"#, "`eta`"),
            (
                r#"{"countdown":1,"eta":"2026-12-01T18:30:00Z"}"#,
                "not both",
            ),
            (r#"{"expires":-3}"#, "`expires`"),
            (r#"{"expires":"soon"}"#, "`expires`"),
            (r#"{"expires":true}"#, "`expires`"),
            (r#"{"priority":10}"#, "`priority`"),
            (r#"{"priority":-1}"#, "`priority`"),
            (r#"{"priority":1.5}"#, "`priority`"),
            (r#"{"priority":"high"}"#, "`priority`"),
            (r#"{"retry":3}"#, "`retry`"),
            (r#"{"retry":{"max_attempts":0}}"#, "`retry.max_attempts`"),
            (r#"{"retry":{"max_attempts":101}}"#, "`retry.max_attempts`"),
            (r#"{"retry":{"backoff_ms":-5}}"#, "`retry.backoff_ms`"),
            (
                r#"{"retry":{"backoff_max_ms":"x"}}"#,
                "`retry.backoff_max_ms`",
            ),
            (r#"{"retry":{"jitter":1}}"#, "`retry.jitter`"),
            (r#"{"retry":{"attempts":2}}"#, "`retry.attempts` is unknown"),
            (r#"{"progress":"yes"}"#, "`progress`"),
        ] {
            let e = err(payload);
            assert!(e.contains(names), "{payload}: {e}");
        }
    }

    #[test]
    fn rfc3339_times_with_offsets_and_before_1970() {
        assert_eq!(parse_rfc3339_us("1970-01-01T00:00:01Z"), Some(1_000_000));
        assert_eq!(
            parse_rfc3339_us("1970-01-01T01:00:01+01:00"),
            Some(1_000_000)
        );
        assert_eq!(parse_rfc3339_us("0361-01-09T19:01:08-01:24"), Some(0));
        assert_eq!(parse_rfc3339_us("2026-01-01T00:00:00+0x:00"), None);
        assert_eq!(parse_rfc3339_us("1969-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_us("yesterday"), None);
    }
}
