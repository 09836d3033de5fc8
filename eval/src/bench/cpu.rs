//! CPU time the bench cost the processes on this host, read from `/proc` (Linux only).
//!
//! Three groups are measured: the server process (given with `--server-pid`, or found as
//! the process listening on the base URL's port: `/proc/net/tcp{,6}` gives the listening
//! socket's inode, and the process holding a descriptor `socket:[inode]` in `/proc/*/fd` is
//! the server), every process named `postgres` and every one named `redis-server`. Each is
//! `utime + stime` plus `cutime + cstime`: Postgres forks a backend per connection, and a
//! backend that exits during the run has its time added to the postmaster's `cutime` when it
//! is reaped, so the sum before and after still covers it.
//!
//! Only the server's own host can be measured: when the URL is not a local address and no
//! pid is given, nothing is (a Postgres on the bench's host may be unrelated to a remote
//! server). Reading `/proc` is blocking file I/O, so every read runs on the blocking pool.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use serde::Serialize;

/// `/proc/<pid>/stat` counts in USER_HZ, which is 100 on every Linux target this builds for
/// (the kernel fixes it for user space, whatever its internal tick), so it is not asked of
/// `sysconf`, which would need `unsafe`.
const TICKS_PER_SECOND: f64 = 100.0;

/// The process name (`comm`) of Postgres processes: the postmaster and every backend.
const POSTGRES_COMM: &str = "postgres";
/// The process name of Redis.
const REDIS_COMM: &str = "redis-server";

/// TCP state `LISTEN` in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// Why the CPU time cannot be measured.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("the server at {0} is not on this host; give --server-pid or --no-cpu")]
    NotLocal(String),
    #[error("no process of this user listens on port {0}; give --server-pid or --no-cpu")]
    NoListener(u16),
    #[error("cannot read /proc/{pid}/stat: {reason}")]
    Process { pid: u32, reason: String },
}

/// What to measure, found once before the run.
#[derive(Debug, Clone)]
pub struct Probe {
    server_pid: u32,
}

/// One reading of the three groups, in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    server: u64,
    postgres: Group,
    redis: Group,
}

/// The summed ticks of the processes with one name, and how many there were.
#[derive(Debug, Clone, Copy, Default)]
struct Group {
    ticks: u64,
    processes: usize,
}

/// The CPU a run cost, per ended task.
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    pub server_pid: u32,
    /// Tasks the figures are divided by: those that ended.
    pub tasks: usize,
    pub server_ms_per_task: f64,
    /// `None` when no `postgres` process is visible (e.g. it runs in a container).
    pub postgres_ms_per_task: Option<f64>,
    /// `None` when no `redis-server` process is visible.
    pub redis_ms_per_task: Option<f64>,
    /// The sum of the three.
    pub total_ms_per_task: f64,
    /// Whole-run totals, in ms.
    pub server_ms: f64,
    pub postgres_ms: Option<f64>,
    pub redis_ms: Option<f64>,
    /// Resolution of every figure: /proc counts in 10 ms ticks.
    pub tick_ms: f64,
}

impl Probe {
    /// Finds the server: `pid` when given, else the process listening on `url`'s port when
    /// `url` names this host.
    pub async fn locate(url: &str, pid: Option<u32>) -> Result<Self, CpuError> {
        if let Some(pid) = pid {
            let probe = Self { server_pid: pid };
            // Fails now, not after the run, when the pid is wrong.
            blocking(move || process_ticks(pid)).await?;
            return Ok(probe);
        }
        let parsed = reqwest::Url::parse(url).map_err(|_| CpuError::NotLocal(url.to_owned()))?;
        let port = parsed.port_or_known_default().ok_or_else(|| CpuError::NotLocal(url.to_owned()))?;
        let host = parsed.host_str().unwrap_or_default().trim_matches(['[', ']']).to_owned();
        let targets: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => match tokio::net::lookup_host((host.as_str(), port)).await {
                Ok(addrs) => addrs.map(|a| a.ip()).collect(),
                Err(_) => return Err(CpuError::NotLocal(url.to_owned())),
            },
        };
        let server_pid =
            blocking(move || find_listener(&targets, port)).await?.ok_or_else(|| CpuError::NotLocal(url.to_owned()))?;
        Ok(Self { server_pid })
    }

    /// Reads the three groups now.
    pub async fn sample(&self) -> Result<Sample, CpuError> {
        let pid = self.server_pid;
        blocking(move || {
            let server = process_ticks(pid)?;
            let (postgres, redis) = named_groups();
            Ok(Sample { server, postgres, redis })
        })
        .await
    }

    /// What happened between `before` and `after`, divided by `tasks`.
    pub fn report(&self, before: &Sample, after: &Sample, tasks: usize) -> CpuReport {
        let ms = |ticks: u64| ticks as f64 * 1000.0 / TICKS_PER_SECOND;
        let per_task = |total: f64| if tasks > 0 { total / tasks as f64 } else { 0.0 };
        let group = |b: Group, a: Group| (a.processes > 0).then(|| ms(a.ticks.saturating_sub(b.ticks)));
        let server_ms = ms(after.server.saturating_sub(before.server));
        let postgres_ms = group(before.postgres, after.postgres);
        let redis_ms = group(before.redis, after.redis);
        let total = server_ms + postgres_ms.unwrap_or(0.0) + redis_ms.unwrap_or(0.0);
        CpuReport {
            server_pid: self.server_pid,
            tasks,
            server_ms_per_task: per_task(server_ms),
            postgres_ms_per_task: postgres_ms.map(per_task),
            redis_ms_per_task: redis_ms.map(per_task),
            total_ms_per_task: per_task(total),
            server_ms,
            postgres_ms,
            redis_ms,
            tick_ms: 1000.0 / TICKS_PER_SECOND,
        }
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// `utime + stime + cutime + cstime` of `pid`.
fn process_ticks(pid: u32) -> Result<u64, CpuError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| CpuError::Process { pid, reason: e.to_string() })?;
    parse_stat(&stat).map(|s| s.ticks).ok_or_else(|| CpuError::Process { pid, reason: "unreadable stat line".into() })
}

/// The fields of a `/proc/<pid>/stat` line the bench needs.
#[derive(Debug, PartialEq)]
struct Stat {
    comm: String,
    ticks: u64,
}

/// Parses `pid (comm) state ppid … utime stime cutime cstime …`. The name may hold spaces and
/// parentheses, so it runs to the *last* `)`.
fn parse_stat(line: &str) -> Option<Stat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let comm = line.get(open + 1..close)?.to_owned();
    // After the name: state (field 3) is index 0, so utime (field 14) is index 11.
    let fields: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    let tick = |i: usize| fields.get(i)?.parse::<i64>().ok();
    let ticks = [tick(11)?, tick(12)?, tick(13)?, tick(14)?].iter().map(|t| u64::try_from(*t).unwrap_or(0)).sum();
    Some(Stat { comm, ticks })
}

/// The Postgres and Redis processes visible in `/proc`, summed by name.
fn named_groups() -> (Group, Group) {
    let (mut postgres, mut redis) = (Group::default(), Group::default());
    let Ok(entries) = std::fs::read_dir("/proc") else { return (postgres, redis) };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
        // A process may exit between the listing and the read: it is simply not counted.
        let Ok(line) = std::fs::read_to_string(Path::new("/proc").join(pid).join("stat")) else { continue };
        let Some(stat) = parse_stat(&line) else { continue };
        let group = match stat.comm.as_str() {
            POSTGRES_COMM => &mut postgres,
            REDIS_COMM => &mut redis,
            _ => continue,
        };
        group.ticks += stat.ticks;
        group.processes += 1;
    }
    (postgres, redis)
}

/// The pid holding the socket that listens on `port` at one of `targets` (or at the
/// unspecified address, when the target is loopback); `None` when there is none, i.e. the
/// server is not on this host, or another user's process it cannot see.
fn find_listener(targets: &[IpAddr], port: u16) -> Result<Option<u32>, CpuError> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            if let Some(listener) = parse_listener(line)
                && listener.port == port
                && targets.iter().any(|t| *t == listener.ip || (t.is_loopback() && listener.ip.is_unspecified()))
            {
                inodes.insert(listener.inode);
            }
        }
    }
    if inodes.is_empty() {
        return if targets.iter().any(IpAddr::is_loopback) { Err(CpuError::NoListener(port)) } else { Ok(None) };
    }
    let Ok(processes) = std::fs::read_dir("/proc") else { return Ok(None) };
    for process in processes.flatten() {
        let name = process.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        // Other users' descriptors are unreadable: skipped.
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let target = target.to_string_lossy();
            if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']'))
                && inode.parse::<u64>().is_ok_and(|i| inodes.contains(&i))
            {
                return Ok(Some(pid));
            }
        }
    }
    Err(CpuError::NoListener(port))
}

/// A listening socket of `/proc/net/tcp{,6}`.
#[derive(Debug, PartialEq)]
struct Listener {
    ip: IpAddr,
    port: u16,
    inode: u64,
}

/// `sl local_address rem_address st … inode …`, with the address as hex `IP:PORT`: the IP in
/// the kernel's byte order (each 32-bit word little-endian here), the port big-endian.
fn parse_listener(line: &str) -> Option<Listener> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.get(3) != Some(&TCP_LISTEN) {
        return None;
    }
    let (ip, port) = fields.get(1)?.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let inode = fields.get(9)?.parse().ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(|w| w.to_le_bytes());
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(ip.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(Listener { ip, port, inode })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_are_read() {
        let line = "2285 (postgres) S 1 2285 2285 0 -1 4194560 1176 29 0 0 12 34 5 6 20 0 1 0 1234 0";
        assert_eq!(parse_stat(line), Some(Stat { comm: "postgres".into(), ticks: 12 + 34 + 5 + 6 }));
        let odd = "77 (a (b) c) R 1 2 3 4 5 6 7 8 9 10 100 200 0 0 20";
        assert_eq!(parse_stat(odd), Some(Stat { comm: "a (b) c".into(), ticks: 300 }));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn listening_sockets_are_parsed_in_both_families() {
        let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 5455 1 0 100 0 0 10 0";
        assert_eq!(parse_listener(v4), Some(Listener { ip: IpAddr::V4(Ipv4Addr::LOCALHOST), port: 8080, inode: 5455 }));
        let established = v4.replace(" 0A ", " 01 ");
        assert_eq!(parse_listener(&established), None);
        let v6 = "   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 991 1 0 100 0 0 10 0";
        assert_eq!(parse_listener(v6), Some(Listener { ip: IpAddr::V6(Ipv6Addr::LOCALHOST), port: 8080, inode: 991 }));
    }

    #[test]
    fn the_report_divides_by_the_ended_tasks() {
        let probe = Probe { server_pid: 1 };
        let before = Sample { server: 100, postgres: Group { ticks: 50, processes: 3 }, redis: Group::default() };
        let after = Sample { server: 300, postgres: Group { ticks: 450, processes: 4 }, redis: Group::default() };
        let report = probe.report(&before, &after, 100);
        assert_eq!(report.server_ms, 2000.0);
        assert_eq!(report.server_ms_per_task, 20.0);
        assert_eq!(report.postgres_ms_per_task, Some(40.0));
        assert_eq!(report.redis_ms_per_task, None);
        assert_eq!(report.total_ms_per_task, 60.0);
    }
}
