//! CPU time and peak memory of this process, from `/proc` (Linux).

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
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at ") ".
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line: indexes 11 and 12 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Duration::from_secs_f64((ticks(11) + ticks(12)) / TICKS_PER_SECOND)
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
