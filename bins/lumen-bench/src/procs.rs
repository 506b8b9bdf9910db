//! The processes under test, started from release binaries, measured through `/proc`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The benchmark's API key (`sk-bench`) and its SHA-256, for Lumen's config.
pub const KEY_HEADER: &[(&str, &str)] = &[("authorization", "Bearer sk-bench")];
const KEY_SHA256: &str = "c00397de4384b5bbaf14c02fe1ec7020d28d1eeab6a722c576c84b6678c41c29";

/// Clock ticks per second in `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const CLK_TCK: f64 = 100.0;

pub struct Proc {
    child: Child,
    pid: u32,
    pub addr: SocketAddr,
}

impl Proc {
    /// Binds every thread of the process to `cpus` (a `taskset` list such as `1` or `0,2-3`);
    /// threads it starts later inherit it.
    pub fn pin(&self, cpus: &str) -> Result<(), String> {
        pin_pid(self.pid, cpus)
    }

    /// User plus system CPU seconds so far.
    pub fn cpu(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.pid))
    }

    fn status_kb(&self, field: &str) -> u64 {
        status_field(&format!("/proc/{}/status", self.pid), field)
    }

    pub fn rss_kb(&self) -> u64 {
        self.status_kb("VmRSS:")
    }

    /// Reads the RSS (KB) without borrowing the process: for a sampling task.
    pub fn rss_sampler(&self) -> impl Fn() -> u64 + Send + 'static {
        let path = format!("/proc/{}/status", self.pid);
        move || status_field(&path, "VmRSS:")
    }

    /// Memory the allocator gave back with `MADV_FREE` (`LazyFree:` of smaps_rollup): still
    /// counted in RSS until the kernel needs it, so an RSS that stays high after a burst can be
    /// told apart from memory the process still holds.
    pub fn lazy_free_kb(&self) -> u64 {
        status_field(&format!("/proc/{}/smaps_rollup", self.pid), "LazyFree:")
    }

    /// Threads of the process (the `Threads:` line of its status).
    pub fn threads(&self) -> u64 {
        self.status_kb("Threads:")
    }

    /// Open file descriptors: the entries of `/proc/<pid>/fd` (0 when it cannot be read).
    pub fn fds(&self) -> u64 {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid)).map_or(0, |d| d.count() as u64)
    }

    pub fn peak_rss_kb(&self) -> u64 {
        self.status_kb("VmHWM:")
    }
}

/// A number field of a `/proc/<pid>/status` file (0 when it cannot be read).
fn status_field(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// This process's (the load generator's) CPU seconds so far, all threads.
pub fn own_cpu() -> f64 {
    cpu_seconds("/proc/self/stat")
}

fn cpu_seconds(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / CLK_TCK
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn free_addr() -> Result<SocketAddr, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())
}

/// GET `path` over a fresh connection; the status code, or None if the server is not up.
async fn status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).await.ok()?;
    std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()
}

async fn wait_for(addr: SocketAddr, path: &str, limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    while status(addr, path).await != Some(200) {
        if start.elapsed() > limit {
            return Err(format!("{addr}{path} not ready within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(start.elapsed())
}

/// Spawns a prepared command quietly and waits until `addr` answers 200 on `ready`.
async fn launch(
    mut cmd: Command,
    binary: &Path,
    package: &str,
    addr: SocketAddr,
    ready: &str,
) -> Result<Proc, String> {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start {}: {e} (build it: cargo build --release -p {package})",
                binary.display()
            )
        })?;
    let pid = child.id().unwrap_or(0);
    wait_for(addr, ready, Duration::from_secs(10)).await?;
    Ok(Proc { child, pid, addr })
}

/// Spawns a prepared command that is to listen on `addr`, killed when the [`Proc`] is
/// dropped; the caller decides when it is ready (another project's server has its own
/// readiness and its own start-up time).
pub fn spawn(mut cmd: Command, binary: &Path, addr: SocketAddr) -> Result<Proc, String> {
    let child = cmd
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let pid = child.id().unwrap_or(0);
    Ok(Proc { child, pid, addr })
}

/// The engine: one worker thread, zero latency, one model.
pub async fn start_sim(dir: &Path) -> Result<Proc, String> {
    start_sim_serving(dir, "m").await
}

/// The engine serving `models` (comma-separated): one worker thread, zero latency.
pub async fn start_sim_serving(dir: &Path, models: &str) -> Result<Proc, String> {
    start_sim_with(dir, models, &[]).await
}

/// The engine serving `models` with more flags (the engine model's, say): one worker thread.
pub async fn start_sim_with(dir: &Path, models: &str, extra: &[String]) -> Result<Proc, String> {
    let addr = free_addr()?;
    let binary = dir.join("lumen-sim");
    let mut cmd = Command::new(&binary);
    cmd.args([
        "--listen",
        &addr.to_string(),
        "--threads",
        "1",
        "--model",
        models,
    ]);
    cmd.args(extra);
    launch(cmd, &binary, "lumen-sim-bin", addr, "/health").await
}

/// A free loopback address to give a server that binds it itself.
pub fn reserve_addr() -> Result<SocketAddr, String> {
    free_addr()
}

/// Lumen from a configuration file that listens on `addr`.
/// `envs` are added to its environment (allocator options, say).
pub async fn start_lumen_file(
    dir: &Path,
    config: &Path,
    addr: SocketAddr,
    envs: &[(String, String)],
) -> Result<Proc, String> {
    let binary = dir.join("lumen");
    let mut cmd = Command::new(&binary);
    cmd.arg("--config").arg(config);
    // Only the file counts: LUMEN_* variables of the calling shell must not change the run.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("LUMEN_") {
            cmd.env_remove(&k);
        }
    }
    cmd.envs(envs.iter().map(|(k, v)| (k, v)));
    launch(cmd, &binary, "lumen", addr, "/ready").await
}

/// A real `redis-server` on a free loopback port, nothing persisted; up when it answers PING.
pub async fn start_redis(binary: &Path) -> Result<Proc, String> {
    let addr = free_addr()?;
    let child = Command::new(binary)
        .args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start {}: {e} (install redis-server)",
                binary.display()
            )
        })?;
    let pid = child.id().unwrap_or(0);
    let start = Instant::now();
    while !redis_pong(addr).await {
        if start.elapsed() > Duration::from_secs(10) {
            return Err(format!("redis-server on {addr} did not answer PING"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(Proc { child, pid, addr })
}

async fn redis_pong(addr: SocketAddr) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").await.is_ok()
        && matches!(
            tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut buf)).await,
            Ok(Ok(_))
        )
        && &buf == b"+PONG\r\n"
}

/// Lumen with governance on: an API key with (high) in-memory limits, metrics, request ids.
/// Returns it with the time from spawn to `/ready` answering 200.
pub async fn start_lumen(dir: &Path, sim: SocketAddr) -> Result<(Proc, Duration), String> {
    let addr = free_addr()?;
    let keys = format!(
        r#"[{{name="bench", sha256="{KEY_SHA256}", limits={{rpm=1000000000, tpm=1000000000000, max_concurrent=100000}}}}]"#
    );
    let start = Instant::now();
    let binary = dir.join("lumen");
    let mut cmd = Command::new(&binary);
    cmd.env("LUMEN_BACKENDS", format!("http://{sim}"))
        .env("LUMEN_SERVER__LISTEN", addr.to_string())
        .env("LUMEN_AUTH__ENABLED", "true")
        .env("LUMEN_AUTH__KEYS", keys)
        .env("LUMEN_LOG__LEVEL", "warn");
    let proc = launch(cmd, &binary, "lumen", addr, "/ready").await?;
    Ok((proc, start.elapsed()))
}

/// `taskset -apc CPUS PID`: every thread of `pid` on `cpus`.
pub fn pin_pid(pid: u32, cpus: &str) -> Result<(), String> {
    let status = std::process::Command::new("taskset")
        .args(["-apc", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run taskset (util-linux): {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("taskset -apc {cpus} {pid} failed: {status}"))
    }
}
