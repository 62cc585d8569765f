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
    Some(stat_of(pid)?.cpu)
}

/// User + system CPU time of every process whose command name is `command` (all of
/// PostgreSQL's backends and helpers are `postgres`; RabbitMQ's VM is `beam.smp`), with
/// that of their children that exited: a PostgreSQL backend that closes during a window
/// takes its time along, and its parent, the postmaster, counts it.
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
        .filter(|stat| stat.name == command)
        .map(|stat| stat.cpu + stat.children_cpu)
        .sum()
}

/// What `/proc/{pid}/stat` says of a process's CPU time.
struct Stat {
    name: String,
    /// User + system time of the process.
    cpu: Duration,
    /// User + system time of its children that exited and were waited for.
    children_cpu: Duration,
}

fn stat_of(pid: &str) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces; fields follow ") ".
    let (head, rest) = stat.rsplit_once(") ")?;
    let name = head.split_once(" (")?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime and cstime are fields 14 to 17 of the line: indexes 11 to 14
    // after the name.
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    let seconds = |a, b| {
        Some(Duration::from_secs_f64(
            (ticks(a)? + ticks(b)?) / TICKS_PER_SECOND,
        ))
    };
    Some(Stat {
        name,
        cpu: seconds(11, 12)?,
        children_cpu: seconds(13, 14)?,
    })
}

/// Resident-set high-water mark, in bytes.
pub fn peak_rss() -> u64 {
    memory_field("VmHWM:")
}

/// Current resident set, in bytes.
pub fn rss() -> u64 {
    memory_field("VmRSS:")
}

/// Resident-set high-water mark of process `pid`, in bytes; 0 once it is gone.
pub fn peak_rss_of(pid: &str) -> u64 {
    memory_field_of(pid, "VmHWM:")
}

fn memory_field(name: &str) -> u64 {
    memory_field_of("self", name)
}

fn memory_field_of(pid: &str, name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
