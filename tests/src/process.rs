//! The project's binaries as child processes: started with a given environment, their stderr
//! (the logs) kept for assertions, killed when dropped.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct Running {
    child: Child,
    /// What the process printed on stdout and stderr so far, line by line.
    output: Arc<Mutex<Vec<String>>>,
}

impl Running {
    /// Starts `bin` with `args`, a clean environment plus `env`, capturing its output.
    pub fn spawn(bin: &str, args: &[&str], env: &[(&str, String)]) -> Running {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(collect(stdout, output.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(collect(stderr, output.clone()));
        }
        Running { child, output }
    }

    /// Starts `bin` and waits for an output line starting with `ready_prefix`; returns the
    /// rest of that line.
    pub async fn start(
        bin: &str,
        args: &[&str],
        env: &[(&str, String)],
        ready_prefix: &str,
    ) -> (Running, String) {
        let mut running = Running::spawn(bin, args, env);
        let ready = running
            .wait_for_line(ready_prefix, Duration::from_secs(30))
            .await;
        (running, ready)
    }

    /// Waits for an output line starting with `prefix`; panics with the output if the process
    /// exits first or nothing comes within `limit`.
    pub async fn wait_for_line(&mut self, prefix: &str, limit: Duration) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(line) = self.output().iter().find_map(|l| l.strip_prefix(prefix)) {
                return line.to_owned();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "process exited ({status}) before printing {prefix:?}:\n{}",
                    self.output().join("\n")
                );
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "no line {prefix:?} within {limit:?}:\n{}",
                    self.output().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until some output line contains `needle`, at least `count` times in all.
    pub async fn wait_for_output(&mut self, needle: &str, count: usize, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let seen = self.output().iter().filter(|l| l.contains(needle)).count();
            if seen >= count {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "process exited ({status}) before printing {needle:?}:\n{}",
                    self.output().join("\n")
                );
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{needle:?} seen {seen} times, not {count}, within {limit:?}:\n{}",
                    self.output().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Everything printed so far.
    pub fn output(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
    }

    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Asks the process to stop (SIGTERM, as systemd and `docker stop` do).
    #[cfg(unix)]
    pub fn terminate(&self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }

    /// Waits for the process to exit; panics with its output if it does not within `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("cannot wait for the process: {e}"),
            Err(_) => panic!(
                "the process did not exit within {limit:?}:\n{}",
                self.output().join("\n")
            ),
        }
    }
}

async fn collect(stream: impl tokio::io::AsyncRead + Unpin, output: Arc<Mutex<Vec<String>>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("  [child] {line}");
        output.lock().unwrap().push(line);
    }
}

/// Runs `bin` to completion with a clean environment plus `env`; returns the exit code and
/// everything it printed (stdout, then stderr).
pub async fn run(bin: &str, args: &[&str], env: &[(&str, String)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("command did not finish within 60 s")
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Starts `qlik-webhook serve` on a free port with `env`; returns it and its base URL.
pub async fn serve_forwarder(bin: &str, env: &[(&str, String)]) -> (Running, String) {
    Running::start(
        bin,
        &["serve", "--listen", "127.0.0.1:0"],
        env,
        "qlik-webhook listening on ",
    )
    .await
}

/// The path of another workspace package's binary (`qlik-webhook` for the listener's tests),
/// built first with the test's own profile so a test never runs a stale one.
///
/// A release build (for the benches) goes to a target directory of its own: built for the
/// package alone, its dependencies' features differ from the bench's, and in the shared
/// directory each of the two builds would make the other rebuild (minutes per bench run).
pub fn workspace_bin(package: &str) -> std::path::PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> → target/<profile>
    let mut dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/<profile>/deps")
        .to_owned();
    let release = dir.file_name().is_some_and(|p| p == "release");
    let own_target = release.then(|| dir.with_file_name("workspace-bins"));
    if let Some(target) = &own_target {
        dir = target.join("release");
    }
    let mut built = BUILT.lock().unwrap();
    if !built.iter().any(|p| p == package) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", package, "--bin", package]);
        if let Some(target) = &own_target {
            cmd.arg("--release").arg("--target-dir").arg(target);
        }
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("cannot run cargo to build {package}: {e}"));
        assert!(status.success(), "cargo build -p {package} failed");
        built.push(package.to_owned());
    }
    dir.join(package)
}
