// Shared by several test binaries, each of which uses a part.
#![allow(dead_code)]

//! A real NATS JetStream cluster on loopback for the cluster tests: three `nats-server`
//! processes with their own store dirs, stopped (killed) when the value is dropped.
//! `scripts/test` installs `nats-server` from Debian when it is missing.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct NatsServer {
    pub name: String,
    pub client_port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The `nats-server` binary, or a test failure that says how to get it.
pub fn nats_server_bin() -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join("nats-server");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "nats-server is not installed: run the suite with scripts/test, which installs it (apt-get install -y nats-server)"
    );
}

impl NatsServer {
    fn start(&mut self) {
        let log = std::fs::File::create(&self.log).expect("a log file for nats-server");
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl NatsCluster {
    /// Starts `n` servers in one JetStream cluster and waits until each takes connections.
    pub fn start(n: usize) -> NatsCluster {
        let dir = tempfile::tempdir().expect("a temp dir");
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, c)| format!("nats-route://127.0.0.1:{c}"))
            .collect();
        let mut servers = Vec::new();
        for (i, (client_port, cluster_port)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store = dir.path().join(&name);
            let config = dir.path().join(format!("{name}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{client_port}\njetstream {{\n  store_dir: \"{}\"\n}}\ncluster {{\n  name: reeve-test\n  listen: 127.0.0.1:{cluster_port}\n  routes: [{}]\n}}\n",
                    store.display(),
                    routes.join(", ")
                ),
            )
            .expect("nats-server config written");
            let mut s = NatsServer {
                log: dir.path().join(format!("{name}.log")),
                name,
                client_port: *client_port,
                config,
                child: None,
            };
            s.start();
            servers.push(s);
        }
        for s in &servers {
            let up = (0..100).any(|_| {
                if std::net::TcpStream::connect(("127.0.0.1", s.client_port)).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
                false
            });
            assert!(up, "nats-server {} did not start:\n{}", s.name, s.log());
        }
        NatsCluster { servers, _dir: dir }
    }

    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            s.kill();
        }
    }
}
