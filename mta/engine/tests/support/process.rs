//! Child processes of test peers: killed (and reaped) on Drop, with their output
//! captured to files so a failing test can show it.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A spawned peer process. Dropping it sends SIGKILL and waits for the process, so
/// no peer outlives its test (a panicking test unwinds through the Drop too).
pub struct ChildGuard {
    name: String,
    child: Mutex<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout and stderr redirected to `<dir>/<name>.stdout` and
    /// `<dir>/<name>.stderr`. Stdin is left as configured on `cmd` (set it before).
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Result<ChildGuard, String> {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let out = File::create(&stdout).map_err(|e| format!("create {}: {e}", stdout.display()))?;
        let err = File::create(&stderr).map_err(|e| format!("create {}: {e}", stderr.display()))?;
        cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn {name} ({cmd:?}): {e}"))?;
        Ok(ChildGuard {
            name: name.to_string(),
            child: Mutex::new(child),
            stdout,
            stderr,
        })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.lock().id()
    }

    /// `Some(status)` once the process has exited (non-blocking).
    pub fn exited(&self) -> Option<ExitStatus> {
        self.lock().try_wait().ok().flatten()
    }

    /// `Ok(())` while the process runs, else an error naming it with its exit status
    /// and stderr: the `alive` check for [`super::port::wait_bound`].
    pub fn check_alive(&self) -> Result<(), String> {
        match self.exited() {
            None => Ok(()),
            Some(status) => Err(format!(
                "{} exited ({status}); stderr:\n{}",
                self.name,
                self.stderr_text()
            )),
        }
    }

    /// Everything the process wrote to stdout so far (lossy UTF-8).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stdout).unwrap_or_default()).into_owned()
    }

    /// Everything the process wrote to stderr so far (lossy UTF-8).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }

    /// Takes the stdin pipe (if the command was spawned with `Stdio::piped()`).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .stdin
            .take()
    }

    /// Path of the stdout capture file.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        // kill() fails only if the process was already reaped; wait() reaps it
        // (SIGKILL cannot be ignored, so this does not block).
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The effective user id of this process, from `/proc/self/status` (no libc needed).
pub fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    euid() == Some(0)
}

/// Runs `cmd` to completion with `input` on its stdin (then closed), collecting
/// stdout and stderr; kills it and returns an error if it is not done within
/// `deadline`.
pub fn run_bounded(cmd: &mut Command, input: &[u8], deadline: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    // Threads, so that a full pipe never blocks the deadline check.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let end = Instant::now() + deadline;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= end => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("{cmd:?} still running after {deadline:?}: killed"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => break Err(format!("wait for {cmd:?}: {e}")),
        }
    };
    // The process is gone: its pipes close, so the threads finish. (A grandchild
    // holding them open would keep them running: not the case for our tools.)
    let _ = writer.join();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    match status {
        Ok(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        Err(e) => Err(format!(
            "{e}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )),
    }
}
