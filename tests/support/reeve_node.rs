// Shared by several test binaries, each of which uses a part.
#![allow(dead_code)]

//! A reeve node as a real process (`reeve serve`), for the cluster tests: started on a free
//! loopback port, stopped with `kill -9` (or paused with SIGSTOP) like a machine that fails.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const ADMIN: &str = "reeve-cluster-test-admin-secret-0123456789";

pub struct ReeveNode {
    pub name: String,
    pub data_dir: PathBuf,
    pub addr: String,
    nats: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl ReeveNode {
    /// Starts `reeve serve` as node `name` of the cluster on `nats`, with its data in
    /// `data_dir`, and waits until it listens.
    pub fn start(name: &str, data_dir: PathBuf, nats: &[String]) -> ReeveNode {
        let mut node = ReeveNode {
            name: name.to_string(),
            log: data_dir.with_extension("log"),
            data_dir,
            addr: String::new(),
            nats: nats.to_vec(),
            child: None,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(&self.log).expect("a log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_reeve"))
            .args(["serve", "--listen", "127.0.0.1:0", "--runners", "0"])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--cluster")
            .arg(self.nats.join(","))
            .arg("--node-name")
            .arg(&self.name)
            .env("REEVE_ADMIN_TOKEN", ADMIN)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("reeve serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("reeve listening on http://") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        self.child = Some(child);
        self.addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("node {} did not start:\n{}", self.name, self.log()));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/api/v1{path}", self.addr)
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on our own child's pid; it has no memory effects here.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// SIGTERM, and waits for the node to exit (a clean stop).
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Starts a stopped node again on the same data dir (a new port).
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Starts the node again on the same data dir (a new port).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ReeveNode {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        self.kill();
    }
}
