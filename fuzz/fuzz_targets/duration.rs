//! Duration options: `BindingOptions::set_duration` on any text, `format_duration` on any
//! duration an option may hold, and the stored form of the options (`BindingOptions` as
//! JSON) on any text.
//!
//! - Text that is accepted sets a whole number of milliseconds, at most `LONGEST`, above 0
//!   unless the option is `delay`; `format_duration` of it reads back to it; `default`
//!   clears the option. Text that is refused leaves the option as it was, and the error
//!   names the option.
//! - `format_duration` of any whole-millisecond duration up to `LONGEST` is a number and
//!   one unit, and reads back to the same duration.
//! - Stored options that load store back to themselves, and their retry policy's waits
//!   grow with the attempt up to `backoff_max` and never pass `LONGEST`.
#![no_main]

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use postsub_proxy::options::{BindingOptions, DurationOption, LONGEST, format_duration};

#[derive(Debug, Arbitrary)]
enum Input {
    Text(u8, String),
    Millis(u8, u64),
    Stored(String),
}

fn option(index: u8) -> DurationOption {
    DurationOption::ALL[usize::from(index) % DurationOption::ALL.len()]
}

/// `format_duration(duration)` is `<n><unit>` and sets `option` back to `duration`.
fn reads_back(option: DurationOption, duration: Duration) {
    let text = format_duration(duration);
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    assert!(
        !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && ["ms", "s", "m", "h", "d"].contains(&&text[digits.len()..]),
        "{duration:?} is shown as {text}"
    );
    let mut options = BindingOptions::default();
    options
        .set_duration(option, &text)
        .unwrap_or_else(|err| panic!("{text} (from {duration:?}) does not read back: {err}"));
    assert_eq!(options.duration(option), Some(duration), "{text}");
}

fn text(option: DurationOption, text: &str) {
    let mut options = BindingOptions::default();
    options
        .set_duration(option, "7s")
        .expect("7s is a duration");
    let before = options;
    match options.set_duration(option, text) {
        Err(err) => {
            assert_eq!(options, before, "a refused {text:?} changed the options");
            assert!(err.to_string().starts_with(option.name()), "{err}");
        }
        Ok(()) if text.trim() == "default" => assert_eq!(options.duration(option), None),
        Ok(()) => {
            let duration = options
                .duration(option)
                .expect("an accepted duration is set");
            assert_eq!(duration.subsec_nanos() % 1_000_000, 0, "{text:?}");
            assert!(duration <= LONGEST, "{text:?}");
            assert!(!duration.is_zero() || option == DurationOption::Delay);
            reads_back(option, duration);
        }
    }
}

fn stored(text: &str) {
    let Ok(options) = serde_json::from_str::<BindingOptions>(text) else {
        return;
    };
    let stored = serde_json::to_value(options).expect("options serialize");
    let loaded: BindingOptions = serde_json::from_value(stored.clone())
        .unwrap_or_else(|err| panic!("{stored} does not load back: {err}"));
    assert_eq!(loaded, options);
    let policy = options.retry_policy();
    let mut last = Duration::ZERO;
    for attempt in (1..=70).chain([u32::MAX]) {
        let backoff = policy.backoff(attempt);
        assert!(backoff >= last, "{policy:?}: attempt {attempt} waits less");
        assert!(
            backoff <= policy.backoff_max,
            "{policy:?}: attempt {attempt}"
        );
        assert!(policy.retry_delay(attempt, None) <= LONGEST);
        last = backoff;
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    match input {
        Input::Text(index, t) => text(option(index), &t),
        Input::Millis(index, millis) => {
            let option = option(index);
            let millis = millis % (LONGEST.as_millis() as u64 + 1);
            if millis > 0 || option == DurationOption::Delay {
                reads_back(option, Duration::from_millis(millis));
            }
        }
        Input::Stored(text) => stored(&text),
    }
});
