//! What `$node.health` reports about this machine and process (read from /proc on Linux;
//! fields that cannot be read are null rather than made up).

use std::fs;
use std::time::{SystemTime, UNIX_EPOCH};

use moleculer_core::service_info::ClientInfo;
use serde_json::{json, Value};

/// Machine-wide CPU usage from `/proc/stat`, as the busy share since the previous sample.
#[derive(Debug, Default)]
pub struct CpuSampler {
    last: parking_lot::Mutex<Option<(u64, u64)>>,
}

impl CpuSampler {
    /// CPU usage in percent (0–100) since the last call; the first call covers the time since
    /// boot. `None` where `/proc/stat` cannot be read.
    pub fn sample(&self) -> Option<f64> {
        let text = read("/proc/stat")?;
        let fields: Vec<u64> = text
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
        let total: u64 = fields.iter().sum();
        let mut last = self.last.lock();
        let (prev_idle, prev_total) = last.replace((idle, total)).unwrap_or((0, 0));
        let (d_idle, d_total) = (
            idle.saturating_sub(prev_idle),
            total.saturating_sub(prev_total),
        );
        if d_total == 0 {
            return Some(0.0);
        }
        Some(((d_total - d_idle) as f64 * 100.0 / d_total as f64).round())
    }
}

/// This machine's non-loopback IPv4 addresses (INFO's `ipList`).
pub fn ipv4_addresses() -> Vec<String> {
    if_addrs::get_if_addrs()
        .map(|ifs| {
            ifs.into_iter()
                .filter(|i| !i.is_loopback())
                .filter_map(|i| match i.ip() {
                    std::net::IpAddr::V4(v4) => Some(v4.to_string()),
                    std::net::IpAddr::V6(_) => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn read(path: &str) -> Option<String> {
    fs::read_to_string(path).ok()
}

pub(crate) fn meminfo_kb(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Days since 1970-01-01 to a civil (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// An ISO-8601 UTC timestamp for milliseconds since the epoch.
pub fn iso_time(millis: u128) -> String {
    let secs = (millis / 1000) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        millis % 1000
    )
}

/// The `$node.health` report.
pub fn health_status(client: &ClientInfo, process_uptime: f64) -> Value {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let load: Vec<f64> = read("/proc/loadavg")
        .map(|t| {
            t.split_whitespace()
                .take(3)
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let load1 = load.first().copied();
    let meminfo = read("/proc/meminfo").unwrap_or_default();
    let total = meminfo_kb(&meminfo, "MemTotal:").map(|k| k * 1024);
    let free = meminfo_kb(&meminfo, "MemAvailable:").map(|k| k * 1024);
    let rss = read("/proc/self/status")
        .and_then(|s| meminfo_kb(&s, "VmRSS:"))
        .map(|k| k * 1024);
    let os_uptime: Option<f64> =
        read("/proc/uptime").and_then(|t| t.split_whitespace().next()?.parse().ok());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    json!({
        "cpu": {
            "load1": load1, "load5": load.get(1), "load15": load.get(2), "cores": cores,
            "utilization": load1.map(|l| ((l / cores as f64) * 100.0).min(100.0).round()),
        },
        // `percent` is the used share here; Moleculer reports the free share under this name.
        "mem": { "free": free, "total": total, "percent": total.zip(free).map(|(t, f)| if t == 0 { 0.0 } else { (t - f) as f64 * 100.0 / t as f64 }) },
        "os": {
            "uptime": os_uptime, "type": std::env::consts::OS, "release": read("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()),
            "hostname": gethostname::gethostname().to_string_lossy(), "arch": std::env::consts::ARCH, "platform": std::env::consts::OS,
            "user": std::env::var("USER").ok(),
        },
        "process": { "pid": std::process::id(), "memory": { "rss": rss }, "uptime": process_uptime, "argv": std::env::args().collect::<Vec<_>>() },
        "client": client,
        "net": { "ip": ipv4_addresses() },
        "time": { "now": now, "iso": iso_time(now), "utc": iso_time(now) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_time_formats_known_instants() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_time(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso_time(1_795_000_000_000), "2026-11-18T11:06:40.000Z");
    }

    #[test]
    fn health_has_every_section() {
        let h = health_status(&ClientInfo::rust(), 1.0);
        for key in ["cpu", "mem", "os", "process", "client", "net", "time"] {
            assert!(h.get(key).is_some(), "missing {key}");
        }
        assert_eq!(h["process"]["pid"], std::process::id());
        assert_eq!(h["client"]["type"], "rust");
    }
}
