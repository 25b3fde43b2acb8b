//! Process and OS metrics (Moleculer's `process.*` and `os.*`), read from `/proc` each time the
//! metrics are collected. On a system without `/proc` the readings stay at 0.

use std::time::Instant;

use parking_lot::Mutex;
use prometheus::{Gauge, Opts, Registry};

use super::catalog::prom_name;
use crate::health::{self, CpuSampler};

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on every Linux port).
const TICKS_PER_SECOND: f64 = 100.0;

/// The process and OS gauges, and what their rates are computed from.
pub(crate) struct SystemMeter {
    gauges: Vec<(Reading, Gauge)>,
    os_cpu: CpuSampler,
    /// When the meter was made: the uptime where `/proc` cannot tell the process start.
    started: Instant,
    /// Process CPU seconds at the previous reading, for its utilization.
    last_cpu: Mutex<Option<(Instant, f64)>>,
}

#[derive(Clone, Copy)]
enum Reading {
    Pid,
    MemoryRss,
    Uptime,
    CpuUser,
    CpuSystem,
    CpuUtilization,
    OsMemoryFree,
    OsMemoryUsed,
    OsMemoryTotal,
    OsUptime,
    OsLoad1,
    OsLoad5,
    OsLoad15,
    OsCpuUtilization,
    OsCpuTotal,
}

const READINGS: [(Reading, &str, &str); 15] = [
    (Reading::Pid, "process.pid", "Process id"),
    (
        Reading::MemoryRss,
        "process.memory.rss",
        "Resident memory of the process in bytes",
    ),
    (
        Reading::Uptime,
        "process.uptime",
        "Seconds since the process started",
    ),
    (
        Reading::CpuUser,
        "process.cpu.user",
        "CPU seconds the process spent in user mode",
    ),
    (
        Reading::CpuSystem,
        "process.cpu.system",
        "CPU seconds the process spent in the kernel",
    ),
    (
        Reading::CpuUtilization,
        "process.cpu.utilization",
        "Percent of one core the process used since the previous reading",
    ),
    (
        Reading::OsMemoryFree,
        "os.memory.free",
        "Available memory of the machine in bytes",
    ),
    (
        Reading::OsMemoryUsed,
        "os.memory.used",
        "Used memory of the machine in bytes",
    ),
    (
        Reading::OsMemoryTotal,
        "os.memory.total",
        "Total memory of the machine in bytes",
    ),
    (
        Reading::OsUptime,
        "os.uptime",
        "Seconds since the machine booted",
    ),
    (
        Reading::OsLoad1,
        "os.cpu.load.1",
        "Load average over 1 minute",
    ),
    (
        Reading::OsLoad5,
        "os.cpu.load.5",
        "Load average over 5 minutes",
    ),
    (
        Reading::OsLoad15,
        "os.cpu.load.15",
        "Load average over 15 minutes",
    ),
    (
        Reading::OsCpuUtilization,
        "os.cpu.utilization",
        "Percent of all cores in use since the previous reading",
    ),
    (Reading::OsCpuTotal, "os.cpu.total", "Number of cores"),
];

/// What `/proc` says at one moment.
#[derive(Default)]
struct Sample {
    rss: Option<f64>,
    cpu_user: Option<f64>,
    cpu_system: Option<f64>,
    /// Seconds after boot the process started.
    started_at: Option<f64>,
    mem_free: Option<f64>,
    mem_total: Option<f64>,
    os_uptime: Option<f64>,
    load: [Option<f64>; 3],
}

impl Sample {
    fn read() -> Self {
        let mut s = Sample::default();
        if let Some(status) = health::read("/proc/self/status") {
            s.rss = health::meminfo_kb(&status, "VmRSS:").map(|k| (k * 1024) as f64);
        }
        if let Some(stat) = health::read("/proc/self/stat") {
            // Fields after the command name (which may hold spaces) start at `state`.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
            s.cpu_user = ticks(11).map(|t| t / TICKS_PER_SECOND);
            s.cpu_system = ticks(12).map(|t| t / TICKS_PER_SECOND);
            s.started_at = ticks(19).map(|t| t / TICKS_PER_SECOND);
        }
        if let Some(meminfo) = health::read("/proc/meminfo") {
            s.mem_total = health::meminfo_kb(&meminfo, "MemTotal:").map(|k| (k * 1024) as f64);
            s.mem_free = health::meminfo_kb(&meminfo, "MemAvailable:").map(|k| (k * 1024) as f64);
        }
        s.os_uptime =
            health::read("/proc/uptime").and_then(|t| t.split_whitespace().next()?.parse().ok());
        if let Some(load) = health::read("/proc/loadavg") {
            for (slot, value) in s.load.iter_mut().zip(load.split_whitespace()) {
                *slot = value.parse().ok();
            }
        }
        s
    }
}

impl SystemMeter {
    /// Registers the gauges.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let mut gauges = Vec::with_capacity(READINGS.len());
        for (reading, dotted, help) in READINGS {
            let gauge = Gauge::with_opts(Opts::new(prom_name(dotted), help))?;
            registry.register(Box::new(gauge.clone()))?;
            gauges.push((reading, gauge));
        }
        Ok(Self {
            gauges,
            os_cpu: CpuSampler::default(),
            started: Instant::now(),
            last_cpu: Mutex::new(None),
        })
    }

    /// Reads `/proc` and sets every gauge.
    pub fn refresh(&self) {
        let s = Sample::read();
        let now = Instant::now();
        let cpu_seconds = s.cpu_user.zip(s.cpu_system).map(|(u, k)| u + k);
        let process_cpu = cpu_seconds.and_then(|cpu| {
            let previous = self.last_cpu.lock().replace((now, cpu));
            let (then, before) = previous?;
            let wall = now.duration_since(then).as_secs_f64();
            (wall > 0.0).then(|| ((cpu - before) / wall * 100.0).max(0.0))
        });
        let os_cpu = self.os_cpu.sample();
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        for (reading, gauge) in &self.gauges {
            let value = match reading {
                Reading::Pid => Some(f64::from(std::process::id())),
                Reading::MemoryRss => s.rss,
                Reading::Uptime => Some(
                    s.os_uptime
                        .zip(s.started_at)
                        .map_or_else(|| self.started.elapsed().as_secs_f64(), |(os, at)| os - at),
                ),
                Reading::CpuUser => s.cpu_user,
                Reading::CpuSystem => s.cpu_system,
                Reading::CpuUtilization => process_cpu,
                Reading::OsMemoryFree => s.mem_free,
                Reading::OsMemoryUsed => s.mem_total.zip(s.mem_free).map(|(t, f)| t - f),
                Reading::OsMemoryTotal => s.mem_total,
                Reading::OsUptime => s.os_uptime,
                Reading::OsLoad1 => s.load[0],
                Reading::OsLoad5 => s.load[1],
                Reading::OsLoad15 => s.load[2],
                Reading::OsCpuUtilization => os_cpu,
                Reading::OsCpuTotal => Some(cores as f64),
            };
            if let Some(value) = value {
                gauge.set(value);
            }
        }
    }
}
