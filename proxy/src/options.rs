//! Binding options: how a binding's runs are retried and timed, parsed at the edge.
//!
//! One vocabulary everywhere (admin API, `postsub bindings` flags, the `bindings.options`
//! column): `max_attempts`, `backoff_initial`, `backoff_max`, `timeout`, `delay`,
//! `expires_after`, and `events` (which submission events the binding runs on). Durations are written `500ms`, `10s`, `5m`, `1h`, `1d` and kept in whole
//! milliseconds (RabbitMQ's unit for message expiry).
//!
//! Only the options a binding sets are stored; the others take their defaults when read,
//! so a default changed in a later release reaches every binding that did not choose.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use postsub_tasks::Events;
use serde::{Deserialize, Serialize};

/// Attempts in all when a binding does not say.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Wait after the first failed attempt when a binding does not say.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest wait between attempts when a binding does not say.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);
/// Most attempts a binding may ask for.
const MAX_ATTEMPTS_LIMIT: u32 = 1000;
/// Longest duration any option may have (and the longest wait before a retry, whatever a
/// task's `retry_after` says): well inside RabbitMQ's limit on message expiry (~49 days).
pub const LONGEST: Duration = Duration::from_secs(30 * 24 * 3600);

/// A duration option of a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationOption {
    /// Wait after the first failed attempt; doubles per attempt up to `backoff_max`.
    BackoffInitial,
    /// Longest wait between attempts.
    BackoffMax,
    /// How long one attempt may run.
    Timeout,
    /// Run no earlier than this long after the submission.
    Delay,
    /// Give up on a job that could not start within this long after the submission.
    ExpiresAfter,
}

impl DurationOption {
    /// Every duration option.
    pub const ALL: [DurationOption; 5] = [
        DurationOption::BackoffInitial,
        DurationOption::BackoffMax,
        DurationOption::Timeout,
        DurationOption::Delay,
        DurationOption::ExpiresAfter,
    ];

    /// The option's name in the API, the CLI (with dashes) and the database.
    pub fn name(self) -> &'static str {
        match self {
            DurationOption::BackoffInitial => "backoff_initial",
            DurationOption::BackoffMax => "backoff_max",
            DurationOption::Timeout => "timeout",
            DurationOption::Delay => "delay",
            DurationOption::ExpiresAfter => "expires_after",
        }
    }
}

/// An option value that cannot be used; the message names the option and says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OptionError(String);

/// The options a binding sets; the ones it does not set take their defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredOptions", into = "StoredOptions")]
pub struct BindingOptions {
    max_attempts: Option<u32>,
    backoff_initial: Option<Duration>,
    backoff_max: Option<Duration>,
    timeout: Option<Duration>,
    delay: Option<Duration>,
    expires_after: Option<Duration>,
    events: Option<Events>,
}

impl BindingOptions {
    /// Sets `events` from a comma-separated list (`created,updated`), or back to its
    /// default (`created`) with `default`.
    pub fn set_events(&mut self, text: &str) -> Result<(), OptionError> {
        let text = text.trim();
        self.events = if text == "default" {
            None
        } else {
            Some(
                text.parse()
                    .map_err(|err: String| OptionError(format!("events: {err}")))?,
            )
        };
        Ok(())
    }

    /// The submission events the binding runs on (`created` unless set).
    pub fn events(&self) -> Events {
        self.events.unwrap_or_default()
    }

    /// Whether `events` is set (the API shows what a binding chose).
    pub fn events_set(&self) -> bool {
        self.events.is_some()
    }

    /// Sets `max_attempts` (attempts in all, the first included).
    pub fn set_max_attempts(&mut self, attempts: u32) -> Result<(), OptionError> {
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&attempts) {
            return Err(OptionError(format!(
                "max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}, not {attempts}"
            )));
        }
        self.max_attempts = Some(attempts);
        Ok(())
    }

    /// Sets a duration option from its text (`500ms`, `10s`, `5m`, `1h`, `1d`), or back to
    /// its default with `default`.
    pub fn set_duration(&mut self, option: DurationOption, text: &str) -> Result<(), OptionError> {
        let text = text.trim();
        *self.slot(option) = if text == "default" {
            None
        } else {
            Some(parse_duration(option, text)?)
        };
        Ok(())
    }

    /// Checks the options hold together; call after setting them.
    pub fn check(&self) -> Result<(), OptionError> {
        let policy = self.retry_policy();
        if policy.backoff_max < policy.backoff_initial {
            return Err(OptionError(format!(
                "backoff_max ({}) is shorter than backoff_initial ({})",
                format_duration(policy.backoff_max),
                format_duration(policy.backoff_initial)
            )));
        }
        Ok(())
    }

    /// A duration option as set; `None` when it takes its default.
    pub fn duration(&self, option: DurationOption) -> Option<Duration> {
        match option {
            DurationOption::BackoffInitial => self.backoff_initial,
            DurationOption::BackoffMax => self.backoff_max,
            DurationOption::Timeout => self.timeout,
            DurationOption::Delay => self.delay,
            DurationOption::ExpiresAfter => self.expires_after,
        }
    }

    fn slot(&mut self, option: DurationOption) -> &mut Option<Duration> {
        match option {
            DurationOption::BackoffInitial => &mut self.backoff_initial,
            DurationOption::BackoffMax => &mut self.backoff_max,
            DurationOption::Timeout => &mut self.timeout,
            DurationOption::Delay => &mut self.delay,
            DurationOption::ExpiresAfter => &mut self.expires_after,
        }
    }

    /// How runs of this binding are retried, defaults filled in.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            backoff_initial: self.backoff_initial.unwrap_or(DEFAULT_BACKOFF_INITIAL),
            backoff_max: self.backoff_max.unwrap_or(DEFAULT_BACKOFF_MAX),
        }
    }

    /// When a job of a submission made at `submitted_at` expires (`expires_after` later);
    /// `None` when the binding sets no expiry.
    pub fn expiry(&self, submitted_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let after = TimeDelta::from_std(self.expires_after?).ok()?;
        submitted_at.checked_add_signed(after)
    }

    /// How long one attempt may run: the binding's `timeout`, else `default` (the process's
    /// setting for its mode).
    pub fn timeout_or(&self, default: Duration) -> Duration {
        self.timeout.unwrap_or(default)
    }
}

fn parse_duration(option: DurationOption, text: &str) -> Result<Duration, OptionError> {
    let name = option.name();
    let duration = humantime::parse_duration(text).map_err(|err| {
        OptionError(format!(
            "{name} `{text}` is not a duration ({err}); write it like 500ms, 10s, 5m, 1h or 1d"
        ))
    })?;
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return Err(OptionError(format!(
            "{name} `{text}` is finer than a millisecond; use whole milliseconds"
        )));
    }
    if duration.is_zero() && option != DurationOption::Delay {
        return Err(OptionError(format!("{name} must be longer than 0")));
    }
    if duration > LONGEST {
        return Err(OptionError(format!(
            "{name} `{text}` is longer than {}",
            format_duration(LONGEST)
        )));
    }
    Ok(duration)
}

/// A duration in the options' own notation: the largest unit that divides it (`90s`,
/// `5m`, `1d`, `1500ms`), which [`BindingOptions::set_duration`] reads back.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    const UNITS: [(&str, u128); 4] = [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ];
    UNITS
        .iter()
        .find(|(_, size)| millis >= *size && millis.is_multiple_of(*size))
        .map_or_else(
            || format!("{millis}ms"),
            |(unit, size)| format!("{}{unit}", millis / size),
        )
}

/// How failed attempts of a run are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (per round: see [`crate::job::Job`]).
    pub max_attempts: u32,
    /// Wait after the first failed attempt.
    pub backoff_initial: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, waits from 1s doubling up to 5m.
    fn default() -> Self {
        BindingOptions::default().retry_policy()
    }
}

impl RetryPolicy {
    /// Whether another attempt may follow attempt `attempt` (1-based) of a round.
    pub fn allows_after(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The wait after failed attempt `attempt` (1-based), before jitter:
    /// `backoff_initial * 2^(attempt - 1)`, at most `backoff_max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(63);
        let millis = (self.backoff_initial.as_millis() as u64).saturating_mul(1 << doublings);
        Duration::from_millis(millis).min(self.backoff_max)
    }

    /// The wait before the attempt after failed attempt `attempt`: the backoff with jitter,
    /// drawn uniformly from its upper quarter `[3b/4, b]`, and at least `retry_after` when
    /// the task said when a retry is welcome. The jitter spreads runs that failed together
    /// (an outage) while keeping each wait at least 1.5 times the one before, until the
    /// cap: waits visibly grow.
    pub fn retry_delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let full = self.backoff(attempt).as_millis() as u64;
        let jittered = rand::random_range(full - full / 4..=full);
        Duration::from_millis(jittered)
            .max(retry_after.unwrap_or_default())
            .min(LONGEST)
    }
}

/// The options as stored: only those set, durations as text.
#[derive(Serialize, Deserialize)]
struct StoredOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backoff_initial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backoff_max: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    events: Option<String>,
}

impl StoredOptions {
    fn text(&self, option: DurationOption) -> Option<&str> {
        match option {
            DurationOption::BackoffInitial => self.backoff_initial.as_deref(),
            DurationOption::BackoffMax => self.backoff_max.as_deref(),
            DurationOption::Timeout => self.timeout.as_deref(),
            DurationOption::Delay => self.delay.as_deref(),
            DurationOption::ExpiresAfter => self.expires_after.as_deref(),
        }
    }
}

impl TryFrom<StoredOptions> for BindingOptions {
    type Error = OptionError;

    fn try_from(stored: StoredOptions) -> Result<Self, Self::Error> {
        let mut options = BindingOptions::default();
        if let Some(attempts) = stored.max_attempts {
            options.set_max_attempts(attempts)?;
        }
        for option in DurationOption::ALL {
            if let Some(text) = stored.text(option) {
                options.set_duration(option, text)?;
            }
        }
        if let Some(events) = &stored.events {
            options.set_events(events)?;
        }
        Ok(options)
    }
}

impl From<BindingOptions> for StoredOptions {
    fn from(options: BindingOptions) -> Self {
        let text = |option| options.duration(option).map(format_duration);
        StoredOptions {
            max_attempts: options.max_attempts,
            backoff_initial: text(DurationOption::BackoffInitial),
            backoff_max: text(DurationOption::BackoffMax),
            timeout: text(DurationOption::Timeout),
            delay: text(DurationOption::Delay),
            expires_after: text(DurationOption::ExpiresAfter),
            events: options.events.map(|events| events.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(option: DurationOption, text: &str) -> Result<BindingOptions, OptionError> {
        let mut options = BindingOptions::default();
        options.set_duration(option, text)?;
        options.check()?;
        Ok(options)
    }

    #[test]
    fn durations_parse_and_show_in_the_same_notation() {
        for (text, shown) in [
            ("500ms", "500ms"),
            ("10s", "10s"),
            ("90s", "90s"),
            ("5m", "5m"),
            ("1h", "1h"),
            ("1d", "1d"),
            ("1500ms", "1500ms"),
            ("1m 30s", "90s"),
        ] {
            let options = set(DurationOption::Timeout, text).unwrap();
            let duration = options.duration(DurationOption::Timeout).unwrap();
            assert_eq!(format_duration(duration), shown, "{text}");
        }
    }

    #[test]
    fn bad_values_are_refused_with_the_option_named() {
        let err = set(DurationOption::BackoffInitial, "soon").unwrap_err();
        assert!(
            err.0
                .starts_with("backoff_initial `soon` is not a duration"),
            "{err}"
        );
        let err = set(DurationOption::Timeout, "0s").unwrap_err();
        assert_eq!(err.0, "timeout must be longer than 0");
        let err = set(DurationOption::Timeout, "1500us").unwrap_err();
        assert!(err.0.contains("whole milliseconds"), "{err}");
        let err = set(DurationOption::ExpiresAfter, "31d").unwrap_err();
        assert!(err.0.contains("longer than 30d"), "{err}");
        let err = set(DurationOption::BackoffMax, "500ms").unwrap_err();
        assert_eq!(
            err.0,
            "backoff_max (500ms) is shorter than backoff_initial (1s)"
        );
        let err = BindingOptions::default().set_max_attempts(0).unwrap_err();
        assert_eq!(err.0, "max_attempts must be between 1 and 1000, not 0");
        assert!(set(DurationOption::Delay, "0s").is_ok());
    }

    #[test]
    fn default_resets_an_option() {
        let mut options = set(DurationOption::Delay, "1h").unwrap();
        options
            .set_duration(DurationOption::Delay, "default")
            .unwrap();
        assert_eq!(options, BindingOptions::default());
    }

    #[test]
    fn only_set_options_are_stored() {
        let mut options = set(DurationOption::BackoffInitial, "200ms").unwrap();
        options.set_max_attempts(3).unwrap();
        let stored = serde_json::to_value(options).unwrap();
        assert_eq!(
            stored,
            serde_json::json!({"max_attempts": 3, "backoff_initial": "200ms"})
        );
        let read: BindingOptions = serde_json::from_value(stored).unwrap();
        assert_eq!(read, options);
        assert_eq!(read.retry_policy().backoff_max, DEFAULT_BACKOFF_MAX);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_keeps_it_growing() {
        let policy = RetryPolicy {
            max_attempts: 10,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
        };
        let backoffs: Vec<u128> = (1..=6).map(|a| policy.backoff(a).as_millis()).collect();
        assert_eq!(backoffs, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy.backoff(u32::MAX), Duration::from_millis(1000));
        for _ in 0..200 {
            let first = policy.retry_delay(1, None);
            let second = policy.retry_delay(2, None);
            assert!(first >= Duration::from_millis(75) && first <= Duration::from_millis(100));
            assert!(second >= first * 3 / 2, "{second:?} after {first:?}");
        }
        let capped = policy.retry_delay(9, None);
        assert!(capped >= Duration::from_millis(750) && capped <= Duration::from_millis(1000));
        let hinted = policy.retry_delay(1, Some(Duration::from_secs(30)));
        assert_eq!(hinted, Duration::from_secs(30));
        assert!(policy.allows_after(9) && !policy.allows_after(10));
    }
}

#[cfg(test)]
mod properties {
    use proptest::{prelude::*, sample};

    use super::*;

    fn option() -> impl Strategy<Value = DurationOption> {
        sample::select(DurationOption::ALL.to_vec())
    }

    /// Text a user might write for a duration: one to three `<n><unit>` parts (humantime's
    /// units, spaced or not), `default`, or anything.
    fn duration_text() -> impl Strategy<Value = String> {
        let unit = sample::select(vec![
            "ns", "us", "ms", "s", "sec", "m", "min", "h", "hr", "d", "days", "w", "M", "y", "",
        ]);
        let part = (
            prop_oneof![0u64..2000, any::<u64>()],
            unit,
            sample::select(vec!["", " "]),
        )
            .prop_map(|(n, unit, space)| format!("{n}{space}{unit}"));
        prop_oneof![
            8 => prop::collection::vec(part, 1..4).prop_map(|parts| parts.join(" ")),
            1 => Just(" default ".to_owned()),
            1 => ".{0,12}",
        ]
    }

    /// Every duration an option may hold, at a granularity that meets each unit.
    fn held(option: DurationOption) -> impl Strategy<Value = Duration> {
        let least = u64::from(option != DurationOption::Delay);
        let longest = LONGEST.as_millis() as u64;
        let unit = sample::select(vec![1u64, 1_000, 60_000, 3_600_000, 86_400_000]);
        prop_oneof![
            (least..=longest).prop_map(Duration::from_millis),
            (unit, 1u64..=30).prop_map(|(unit, n)| Duration::from_millis(unit * n)),
        ]
    }

    /// `format_duration(duration)` is `<n><unit>`, the largest unit that divides it, and
    /// sets `option` back to `duration`.
    fn reads_back(option: DurationOption, duration: Duration) -> Result<(), TestCaseError> {
        let text = format_duration(duration);
        let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit = &text[digits.len()..];
        let n: u128 = digits
            .parse()
            .map_err(|_| TestCaseError::fail(text.clone()))?;
        let size = match unit {
            "d" => 86_400_000,
            "h" => 3_600_000,
            "m" => 60_000,
            "s" => 1_000,
            "ms" => 1,
            _ => return Err(TestCaseError::fail(format!("{text}: unit {unit}"))),
        };
        prop_assert_eq!(n * size, duration.as_millis());
        let larger = [86_400_000u128, 3_600_000, 60_000, 1_000].into_iter();
        prop_assert!(
            larger
                .filter(|bigger| *bigger > size)
                .all(|bigger| !(n * size).is_multiple_of(bigger)),
            "{} is not in its largest unit",
            text
        );
        let mut options = BindingOptions::default();
        options
            .set_duration(option, &text)
            .map_err(|err| TestCaseError::fail(format!("{text}: {err}")))?;
        prop_assert_eq!(options.duration(option), Some(duration));
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn accepted_text_holds_a_duration_that_reads_back(
            option in option(),
            text in duration_text(),
        ) {
            let mut options = BindingOptions::default();
            options.set_duration(option, "7s").unwrap();
            let before = options;
            match options.set_duration(option, &text) {
                Err(err) => {
                    prop_assert_eq!(options, before, "refused text changed the options");
                    prop_assert!(err.0.starts_with(option.name()), "{}", err);
                }
                Ok(()) if text.trim() == "default" => {
                    prop_assert_eq!(options.duration(option), None);
                }
                Ok(()) => {
                    let duration = options.duration(option).unwrap();
                    prop_assert_eq!(duration.subsec_nanos() % 1_000_000, 0);
                    prop_assert!(duration <= LONGEST);
                    prop_assert!(!duration.is_zero() || option == DurationOption::Delay);
                    reads_back(option, duration)?;
                }
            }
        }

        #[test]
        fn every_duration_an_option_holds_is_shown_so_it_reads_back(
            (option, duration) in option().prop_flat_map(|option| (Just(option), held(option))),
        ) {
            reads_back(option, duration)?;
        }

        #[test]
        fn stored_options_load_as_they_were_and_waits_grow_to_the_cap(
            max_attempts in proptest::option::of(1u32..=1000),
            durations in prop::collection::vec(
                proptest::option::of(held(DurationOption::Timeout)),
                5,
            ),
            retry_after in proptest::option::of(0u64..=u64::from(u32::MAX)),
        ) {
            let mut options = BindingOptions::default();
            if let Some(attempts) = max_attempts {
                options.set_max_attempts(attempts).unwrap();
            }
            for (option, duration) in DurationOption::ALL.into_iter().zip(durations) {
                *options.slot(option) = duration;
            }
            let stored = serde_json::to_value(options).unwrap();
            let loaded: BindingOptions = serde_json::from_value(stored.clone()).unwrap();
            prop_assert_eq!(loaded, options, "{}", stored);

            let policy = options.retry_policy();
            let retry_after = retry_after.map(Duration::from_millis);
            let mut last = Duration::ZERO;
            for attempt in (1..=40).chain([u32::MAX]) {
                let backoff = policy.backoff(attempt);
                prop_assert!(backoff >= last && backoff <= policy.backoff_max);
                let delay = policy.retry_delay(attempt, retry_after);
                prop_assert!(delay <= LONGEST);
                let least = (backoff - backoff / 4).max(retry_after.unwrap_or_default());
                prop_assert!(delay >= least.min(LONGEST), "{:?} after {}", delay, attempt);
                last = backoff;
            }
        }
    }
}
