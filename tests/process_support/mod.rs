//! `otagw` as a separate process, for the crash tests: started with a data directory and
//! settings from the environment, killed (SIGKILL) when dropped, waited on until healthy.
#![allow(dead_code)] // each test binary uses its own part

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_otagw");

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `otagw ARGS` with its data directory and `envs`; logs at warn on standard error.
pub fn otagw(dir: &Path, args: &[&str], envs: &[(&str, String)]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("OTAGW_DATA_DIR", dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in envs {
        c.env(k, v);
    }
    c
}

/// Runs `c` to its end: its standard output, trimmed (asserts it succeeded).
pub fn output(mut c: Command) -> String {
    let out = c.stdout(Stdio::piped()).output().expect("run otagw");
    assert!(out.status.success(), "{c:?} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits (20 s at most) until the gateway at `base` answers its health check.
pub async fn wait_healthy(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("{base}/api/v1/ota/health")).send().await {
            if r.status().as_u16() == 200 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
