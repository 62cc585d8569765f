//! CPU time and peak memory of this process, and CPU time of others, from `/proc` (Linux).

use std::time::Duration;

/// Clock ticks per second of `/proc/self/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// A measuring window: CPU time since it started, peak RSS within it.
pub struct Usage {
    cpu_at_start: Duration,
}

impl Usage {
    /// Resets the peak-RSS mark and notes the CPU time so far.
    pub fn start() -> Self {
        // "5" resets VmHWM to the current RSS, so the peak is this window's.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        Self {
            cpu_at_start: cpu_time(),
        }
    }

    /// CPU time used and peak RSS (bytes) since [`Usage::start`].
    pub fn finish(self) -> (Duration, u64) {
        (cpu_time().saturating_sub(self.cpu_at_start), peak_rss())
    }
}

/// User + system CPU time of the whole process.
fn cpu_time() -> Duration {
    cpu_time_of("self").unwrap_or_default()
}

/// User + system CPU time of process `pid` (a number or `self`), if it still runs.
pub fn cpu_time_of(pid: &str) -> Option<Duration> {
    let (_, ticks) = stat_of(pid)?;
    Some(ticks)
}

/// User + system CPU time of every process whose command name is `command` (all of
/// PostgreSQL's backends and helpers are `postgres`; RabbitMQ's VM is `beam.smp`).
pub fn cpu_time_of_command(command: &str) -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid = entry.file_name().into_string().ok()?;
            pid.bytes().all(|b| b.is_ascii_digit()).then_some(pid)
        })
        .filter_map(|pid| stat_of(&pid))
        .filter(|(name, _)| name == command)
        .map(|(_, cpu)| cpu)
        .sum()
}

/// The command name and user + system CPU time in `/proc/{pid}/stat`.
fn stat_of(pid: &str) -> Option<(String, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces; fields follow ") ".
    let (head, rest) = stat.rsplit_once(") ")?;
    let name = head.split_once(" (")?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: indexes 11 and 12 after the name.
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    let cpu = Duration::from_secs_f64((ticks(11)? + ticks(12)?) / TICKS_PER_SECOND);
    Some((name, cpu))
}

/// Resident-set high-water mark, in bytes.
pub fn peak_rss() -> u64 {
    memory_field("VmHWM:")
}

/// Current resident set, in bytes.
pub fn rss() -> u64 {
    memory_field("VmRSS:")
}

fn memory_field(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
