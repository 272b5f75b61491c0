//! Schedules (Celery's beat, in the broker): a task submitted on a fixed
//! interval (`every`) or a cron expression (`cron`, in a time zone).
//!
//! Each firing is a task with the id `<name>@<due time, RFC 3339 UTC,
//! seconds>`, so it can run only once: the id is an idempotency key, and the
//! schedule's last firing is stored before the firing's task is delivered,
//! so a restart neither repeats nor loses one. After downtime only the most
//! recent missed firing runs. Schedules live in the deadline index like
//! every other timed thing (`Deadline::Schedule`).

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use swarmq_worker::wire;

use super::deadline::{Deadline, ScheduleId};
use super::submit::new_key;
use super::task::{ReplyTo, StoredTask};
use super::{Engine, State};

/// Longest schedule name, in bytes (a firing id adds 21).
pub const MAX_SCHEDULE_NAME_LEN: usize = 64;

/// When a schedule fires, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum When {
    /// Every this long (whole seconds, at least one), at multiples of it
    /// since the Unix epoch.
    Every(String),
    /// A cron expression of 5 fields (minute precision) or 6 (seconds first).
    Cron(String),
}

/// A schedule as declared (`[[schedules]]`) or posted to the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    /// Unique name; the firing ids start with it.
    pub name: String,
    /// Queue each firing goes to.
    pub queue: String,
    /// Task name.
    pub task: String,
    /// Positional arguments.
    #[serde(default)]
    pub args: Vec<Value>,
    /// Keyword arguments.
    #[serde(default)]
    pub kwargs: Map<String, Value>,
    /// Where each firing's result goes, if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// When it fires.
    #[serde(flatten)]
    pub when: When,
    /// IANA time zone a cron expression is read in (default `UTC`).
    #[serde(default = "utc")]
    pub timezone: String,
}

fn utc() -> String {
    "UTC".to_string()
}

/// Where a schedule came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleSource {
    /// `[[schedules]]` in the configuration: removed by editing it.
    Config,
    /// `POST /api/v1/schedules`: kept in the queue store until deleted.
    Api,
}

/// A schedule's durable record: its spec and how far it has fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// What and when.
    pub spec: ScheduleSpec,
    /// Where it came from.
    pub source: ScheduleSource,
    /// When it was first known: occurrences before it never fire.
    pub created_at_us: u64,
    /// The due time of its last firing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired_us: Option<u64>,
}

/// A schedule as the API lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleView {
    /// The record.
    pub record: ScheduleRecord,
    /// Its next due time.
    pub next_due_us: Option<u64>,
}

/// Why a schedule is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Something in the spec is wrong; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// A schedule of that name exists.
    #[error("a schedule named `{0}` exists")]
    Exists(String),
    /// No schedule of that name.
    #[error("no schedule named `{0}`")]
    NotFound(String),
    /// It is declared in the configuration.
    #[error("schedule `{0}` is declared in the configuration; remove it there")]
    Declared(String),
    /// The store failed.
    #[error("schedule not stored: {0}")]
    Store(String),
}

/// A parsed schedule: computes due times.
#[derive(Debug, Clone)]
pub(super) struct Timing {
    kind: TimingKind,
}

#[derive(Debug, Clone)]
enum TimingKind {
    Every { secs: u64 },
    Cron { cron: Box<Cron>, tz: chrono_tz::Tz },
}

impl ScheduleSpec {
    /// Checks the spec.
    ///
    /// # Errors
    ///
    /// [`ScheduleError::Invalid`] naming the field at fault.
    pub fn check(&self) -> Result<(), ScheduleError> {
        self.timing().map(|_| ())
    }

    /// Checks the spec and reads its timing.
    ///
    /// # Errors
    ///
    /// [`ScheduleError::Invalid`] naming the field at fault (a cron
    /// expression that does not parse is named with the parser's reason).
    pub(super) fn timing(&self) -> Result<Timing, ScheduleError> {
        let bad = |m: String| Err(ScheduleError::Invalid(m));
        let name_ok = !self.name.is_empty()
            && self.name.len() <= MAX_SCHEDULE_NAME_LEN
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !name_ok {
            return bad(format!(
                "schedule name `{}` must be 1 to {MAX_SCHEDULE_NAME_LEN} of A-Z a-z 0-9 _ . -",
                self.name
            ));
        }
        if !wire::is_valid_queue_name(&self.queue) {
            return bad(format!(
                "schedule `{}`: invalid queue `{}`",
                self.name, self.queue
            ));
        }
        if self.task.is_empty() {
            return bad(format!(
                "schedule `{}`: `task` must not be empty",
                self.name
            ));
        }
        if let Some(t) = &self.reply_to
            && !super::request::is_valid_reply_topic(t)
        {
            return bad(format!(
                "schedule `{}`: `reply_to` is not a topic name: `{t}`",
                self.name
            ));
        }
        let tz = match chrono_tz::Tz::from_str(&self.timezone) {
            Ok(tz) => tz,
            Err(_) => {
                return bad(format!(
                    "schedule `{}`: unknown time zone `{}` (an IANA name such as Europe/Paris)",
                    self.name, self.timezone
                ));
            }
        };
        let kind = match &self.when {
            When::Every(every) => {
                let d = humantime::parse_duration(every).map_err(|e| {
                    ScheduleError::Invalid(format!(
                        "schedule `{}`: `every = \"{every}\"` is not a duration ({e})",
                        self.name
                    ))
                })?;
                if d.as_secs() == 0 || d.subsec_nanos() != 0 {
                    return bad(format!(
                        "schedule `{}`: `every` must be whole seconds, at least 1s, got `{every}`",
                        self.name
                    ));
                }
                TimingKind::Every { secs: d.as_secs() }
            }
            When::Cron(expr) => {
                let cron = CronParser::builder()
                    .seconds(Seconds::Optional)
                    .build()
                    .parse(expr)
                    .map_err(|e| {
                        ScheduleError::Invalid(format!(
                            "schedule `{}`: cron expression `{expr}` does not parse: {e}",
                            self.name
                        ))
                    })?;
                TimingKind::Cron {
                    cron: Box::new(cron),
                    tz,
                }
            }
        };
        Ok(Timing { kind })
    }
}

impl Timing {
    /// The first due time strictly after `after_us` (whole seconds).
    pub(super) fn next_after(&self, after_us: u64) -> Option<u64> {
        let after_s = after_us / 1_000_000;
        match &self.kind {
            TimingKind::Every { secs } => Some((after_s / secs + 1) * secs * 1_000_000),
            TimingKind::Cron { cron, tz } => {
                let t = tz.timestamp_opt(after_s as i64, 0).single()?;
                let next = cron.find_next_occurrence(&t, false).ok()?;
                u64::try_from(next.timestamp()).ok().map(|s| s * 1_000_000)
            }
        }
    }

    /// The last due time at or before `at_us`.
    pub(super) fn latest_at_or_before(&self, at_us: u64) -> Option<u64> {
        let at_s = at_us / 1_000_000;
        match &self.kind {
            TimingKind::Every { secs } => Some(at_s / secs * secs * 1_000_000),
            TimingKind::Cron { cron, tz } => {
                let t = tz.timestamp_opt(at_s as i64, 0).single()?;
                let prev = cron.find_previous_occurrence(&t, true).ok()?;
                u64::try_from(prev.timestamp()).ok().map(|s| s * 1_000_000)
            }
        }
    }
}

/// The id of a firing due at `due_us`: `<name>@2026-12-01T18:30:00Z`.
pub fn firing_id(name: &str, due_us: u64) -> String {
    let t: DateTime<Utc> = Utc
        .timestamp_opt((due_us / 1_000_000) as i64, 0)
        .single()
        .unwrap_or_default();
    format!("{name}@{}", t.format("%Y-%m-%dT%H:%M:%SZ"))
}

/// A schedule the engine runs.
#[derive(Debug)]
pub(super) struct Running {
    pub(super) id: ScheduleId,
    pub(super) record: ScheduleRecord,
    pub(super) timing: Timing,
    pub(super) due_us: Option<u64>,
}

impl Engine {
    /// Starts running the schedules: those stored from the API and those
    /// declared now (`declared`, which replace stored ones of the same name
    /// and drop stored config ones no longer declared).
    ///
    /// # Errors
    ///
    /// [`ScheduleError::Invalid`] for a declared spec that does not check.
    pub fn start_schedules(&self, declared: Vec<ScheduleSpec>) -> Result<(), ScheduleError> {
        let stored = self
            .inner
            .store
            .load_schedules()
            .map_err(|e| ScheduleError::Store(e.to_string()))?;
        let mut st = self.lock();
        let now = self.now_us();
        for spec in &declared {
            spec.timing()?;
        }
        let mut records: Vec<ScheduleRecord> = Vec::new();
        for spec in declared {
            let previous = stored.iter().find(|r| r.spec.name == spec.name);
            records.push(ScheduleRecord {
                created_at_us: previous.map_or(now, |r| r.created_at_us),
                last_fired_us: previous.and_then(|r| r.last_fired_us),
                spec,
                source: ScheduleSource::Config,
            });
        }
        for r in stored {
            let declared_now = records.iter().any(|d| d.spec.name == r.spec.name);
            match r.source {
                ScheduleSource::Api if !declared_now => records.push(r),
                ScheduleSource::Config if !declared_now => {
                    if let Err(e) = self.inner.store.remove_schedule(&r.spec.name) {
                        tracing::error!(schedule = %r.spec.name, error = %e, "cannot forget an undeclared schedule");
                    }
                }
                _ => {}
            }
        }
        let mut fx = Vec::new();
        for record in records {
            if let Err(e) = self.inner.store.put_schedule(&record) {
                return Err(ScheduleError::Store(e.to_string()));
            }
            self.install(&mut st, record, now, &mut fx)?;
        }
        self.commit(st, fx);
        Ok(())
    }

    /// Adds a schedule (`POST /api/v1/schedules`), stored until deleted.
    ///
    /// # Errors
    ///
    /// [`ScheduleError::Invalid`], [`ScheduleError::Exists`], [`ScheduleError::Store`].
    pub fn add_schedule(&self, spec: ScheduleSpec) -> Result<ScheduleView, ScheduleError> {
        spec.timing()?;
        let mut st = self.lock();
        if st.schedules.contains_key(&spec.name) {
            return Err(ScheduleError::Exists(spec.name));
        }
        let record = ScheduleRecord {
            spec,
            source: ScheduleSource::Api,
            created_at_us: self.now_us(),
            last_fired_us: None,
        };
        self.inner
            .store
            .put_schedule(&record)
            .map_err(|e| ScheduleError::Store(e.to_string()))?;
        let name = record.spec.name.clone();
        tracing::info!(schedule = %name, "schedule added");
        let mut fx = Vec::new();
        let now = self.now_us();
        self.install(&mut st, record, now, &mut fx)?;
        let view = view(&st, &name);
        self.commit(st, fx);
        view.ok_or(ScheduleError::NotFound(name))
    }

    /// Removes an API schedule; firings already queued stay queued.
    ///
    /// # Errors
    ///
    /// [`ScheduleError::NotFound`], [`ScheduleError::Declared`], [`ScheduleError::Store`].
    pub fn remove_schedule(&self, name: &str) -> Result<(), ScheduleError> {
        let mut st = self.lock();
        match st.schedules.get(name) {
            None => return Err(ScheduleError::NotFound(name.to_string())),
            Some(s) if s.record.source == ScheduleSource::Config => {
                return Err(ScheduleError::Declared(name.to_string()));
            }
            Some(_) => {}
        }
        self.inner
            .store
            .remove_schedule(name)
            .map_err(|e| ScheduleError::Store(e.to_string()))?;
        if let Some(s) = st.schedules.remove(name)
            && let Some(due) = s.due_us
        {
            st.deadlines.remove(due, Deadline::Schedule(s.id));
        }
        tracing::info!(schedule = name, "schedule removed");
        Ok(())
    }

    /// Every schedule, by name, with its next due time.
    pub fn schedules(&self) -> Vec<ScheduleView> {
        let st = self.lock();
        st.schedules.keys().filter_map(|n| view(&st, n)).collect()
    }

    fn install(
        &self,
        st: &mut State,
        record: ScheduleRecord,
        now: u64,
        fx: &mut Vec<super::Effect>,
    ) -> Result<(), ScheduleError> {
        let timing = record.spec.timing()?;
        let name = record.spec.name.clone();
        let id = ScheduleId(st.schedule_names.len() as u32);
        st.schedule_names.push(name.clone());
        if let Some(old) = st.schedules.remove(&name)
            && let Some(due) = old.due_us
        {
            st.deadlines.remove(due, Deadline::Schedule(old.id));
        }
        st.schedules.insert(
            name.clone(),
            Running {
                id,
                record,
                timing,
                due_us: None,
            },
        );
        // Catch up (at most the latest missed firing) and arm the next.
        self.fire_due(st, &name, now, fx);
        Ok(())
    }

    /// Fires schedule `name` if an occurrence is due that it has not fired
    /// (only the latest such), then arms its next occurrence.
    pub(super) fn fire_due(
        &self,
        st: &mut State,
        name: &str,
        now: u64,
        fx: &mut Vec<super::Effect>,
    ) {
        let Some(s) = st.schedules.get(name) else {
            return;
        };
        let floor = s
            .record
            .last_fired_us
            .unwrap_or(0)
            .max(s.record.created_at_us);
        let latest = s.timing.latest_at_or_before(now).filter(|t| *t > floor);
        if let Some(due) = latest {
            let spec = s.record.spec.clone();
            self.fire(st, &spec, due, fx);
            if let Some(s) = st.schedules.get_mut(name) {
                s.record.last_fired_us = Some(due);
                if let Err(e) = self.inner.store.put_schedule(&s.record) {
                    tracing::error!(schedule = name, error = %e, "cannot store a schedule's last firing");
                }
            }
        }
        let Some(s) = st.schedules.get_mut(name) else {
            return;
        };
        if let Some(old) = s.due_us.take() {
            st.deadlines.remove(old, Deadline::Schedule(s.id));
        }
        let next = s.timing.next_after(now);
        s.due_us = next;
        let id = s.id;
        if let Some(t) = next {
            st.deadlines.insert(t, Deadline::Schedule(id));
            if t < st.timer_armed_us {
                st.wake_timer = true;
            }
        }
    }

    /// Submits the firing of `spec` due at `due_us`, unless its id is known.
    fn fire(&self, st: &mut State, spec: &ScheduleSpec, due_us: u64, fx: &mut Vec<super::Effect>) {
        let id = firing_id(&spec.name, due_us);
        if st.ids.contains_key(&id) || st.recent_done_set.contains(&id) {
            return;
        }
        self.ensure_queue(st, &spec.queue);
        let key = new_key(st);
        let task = StoredTask {
            kwargs: spec.kwargs.clone(),
            reply: spec.reply_to.clone().map(|topic| ReplyTo {
                topic,
                correlation_data: None,
                correlation_id: None,
            }),
            submitted_at_us: self.now_us(),
            ..StoredTask::new(&id, &spec.queue, &spec.task, spec.args.clone())
        };
        match self.admit(st, key, task) {
            Ok(()) => {
                tracing::info!(schedule = %spec.name, task_id = %id, "schedule fired");
                self.pump(st, &spec.queue, fx);
            }
            Err(e) => {
                tracing::error!(schedule = %spec.name, error = %e, "cannot store a schedule's firing")
            }
        }
    }

    /// The schedule with deadline id `id`.
    pub(super) fn schedule_name(st: &State, id: ScheduleId) -> Option<String> {
        st.schedule_names.get(id.0 as usize).cloned()
    }
}

fn view(st: &State, name: &str) -> Option<ScheduleView> {
    st.schedules.get(name).map(|s| ScheduleView {
        record: s.record.clone(),
        next_due_us: s.due_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(when: When, tz: &str) -> ScheduleSpec {
        ScheduleSpec {
            name: "s".into(),
            queue: "q".into(),
            task: "t".into(),
            args: vec![],
            kwargs: Map::new(),
            reply_to: None,
            when,
            timezone: tz.into(),
        }
    }

    const T: u64 = 1_796_148_000_000_000; // 2026-12-01T18:00:00Z

    #[test]
    fn every_and_cron_compute_due_times_in_their_zone() {
        let every = spec(When::Every("15m".into()), "UTC").timing().unwrap();
        assert_eq!(every.next_after(T), Some(T + 900_000_000));
        assert_eq!(every.latest_at_or_before(T + 899_000_000), Some(T));
        // 09:30 every day in Paris is 08:30 UTC in December.
        let cron = spec(When::Cron("30 9 * * *".into()), "Europe/Paris")
            .timing()
            .unwrap();
        let next = cron.next_after(T).unwrap();
        assert_eq!(firing_id("s", next), "s@2026-12-02T08:30:00Z");
        let secs = spec(When::Cron("*/5 * * * * *".into()), "UTC")
            .timing()
            .unwrap();
        assert_eq!(secs.next_after(T + 1), Some(T + 5_000_000));
        assert_eq!(firing_id("cleanup", T), "cleanup@2026-12-01T18:00:00Z");
    }

    #[test]
    fn bad_specs_are_refused_naming_what_is_wrong() {
        let err = |s: ScheduleSpec| s.timing().unwrap_err().to_string();
        assert!(
            err(spec(When::Cron("61 * * * *".into()), "UTC"))
                .contains("cron expression `61 * * * *` does not parse")
        );
        assert!(err(spec(When::Cron("every day".into()), "UTC")).contains("does not parse"));
        assert!(err(spec(When::Every("soon".into()), "UTC")).contains("not a duration"));
        assert!(err(spec(When::Every("1500ms".into()), "UTC")).contains("whole seconds"));
        assert!(err(spec(When::Every("1s".into()), "Mars/Olympus")).contains("unknown time zone"));
        let mut s = spec(When::Every("1s".into()), "UTC");
        s.name = "a b".into();
        assert!(err(s).contains("schedule name"));
    }
}
