//! A `message-switch` process started by a test with its own arguments, killed when
//! dropped, with its stderr read line by line on a thread.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use super::{wait_until, DEADLINE};

/// Reads `child`'s piped stderr line by line on a thread.
pub fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    lines_of(child.stderr.take().expect("piped stderr"))
}

/// Reads `stream` (a child's piped output) line by line on a thread, so that a test can wait
/// for a line; the receiver ends when the stream does.
pub fn lines_of(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (lines, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// A running process and its stderr lines.
pub struct Spawned {
    /// The process.
    pub child: Child,
    /// Its stderr, line by line.
    pub stderr: mpsc::Receiver<String>,
}

impl Spawned {
    /// Starts `command` with stdin and stdout closed and stderr piped.
    pub fn start(command: &mut Command) -> Spawned {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the process starts");
        let stderr = stderr_lines(&mut child);
        Spawned { child, stderr }
    }

    /// Takes charge of a process started elsewhere (e.g. with stderr to a file), so that it
    /// is killed if the test fails; it has no stderr lines.
    pub fn adopt(child: Child) -> Spawned {
        let (_, stderr) = mpsc::channel();
        Spawned { child, stderr }
    }

    /// The next stderr line that starts with `prefix` (failing after the deadline).
    pub fn line_starting(&self, prefix: &str) -> String {
        self.line_where(prefix, |line| line.starts_with(prefix))
    }

    /// The next stderr line that contains `text` (failing after the deadline).
    pub fn line_containing(&self, text: &str) -> String {
        self.line_where(text, |line| line.contains(text))
    }

    /// The stderr lines up to and including the next one starting with `prefix`.
    pub fn lines_through(&self, prefix: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.next_line(prefix);
            let done = line.starts_with(prefix);
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// Sends SIGTERM, as systemd stops a service.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the exit (failing after the deadline); returns whether it succeeded, with
    /// the stderr lines not read yet.
    pub fn wait(&mut self) -> (bool, Vec<String>) {
        let success = wait_until("the process exits", || {
            self.child
                .try_wait()
                .expect("try_wait")
                .map(|s| s.success())
        });
        (success, self.stderr.try_iter().collect())
    }

    fn line_where(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        loop {
            let line = self.next_line(what);
            if wanted(&line) {
                return line;
            }
        }
    }

    fn next_line(&self, what: &str) -> String {
        self.stderr
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("the process logs a line with {what:?}"))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
