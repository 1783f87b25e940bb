//! nginx on a free loopback port, as its users run it: a load balancer in front of a cluster's
//! nodes (what an ingress controller or a Kubernetes Service is to clients in production), and
//! the static-file baseline of the S3 benchmarks. Debian's package (`apt-get install nginx`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_addr, is_root};

/// An nginx process; killed when dropped.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    pub version: String,
    dir: PathBuf,
}

impl Nginx {
    /// nginx serving `root`, with WebDAV PUTs under `/put/` (the benchmarks' baseline).
    pub fn serving(work: &Path, root: &Path) -> Nginx {
        Nginx::start(work, |addr, dir| {
            std::fs::create_dir_all(dir.join("put")).expect("nginx put dir");
            format!(
                "sendfile on; tcp_nopush on;
                server {{
                    listen {addr};
                    location / {{ root {root}; }}
                    location /put/ {{ root {dir}; dav_methods PUT; create_full_put_path on; }}
                }}",
                root = root.display(),
                dir = dir.display(),
            )
        })
    }

    /// nginx balancing requests over `nodes` round robin, as ingress-nginx does by default: a
    /// request whose node refuses the connection, resets it or times out goes to the next node
    /// (`proxy_next_upstream`, with the request body buffered so that it can be sent again),
    /// and a node that failed is left out for a second. Hosts and headers pass unchanged, so
    /// SigV4 signatures made for the balancer's address check on every node.
    pub fn balancing(work: &Path, nodes: &[SocketAddr]) -> Nginx {
        let servers: String =
            nodes.iter().map(|node| format!("server {node} max_fails=1 fail_timeout=1s;\n")).collect();
        Nginx::start(work, |addr, _| {
            format!(
                "upstream silo {{ {servers} keepalive 32; }}
                server {{
                    listen {addr};
                    location / {{
                        proxy_pass http://silo;
                        proxy_http_version 1.1;
                        proxy_set_header Connection \"\";
                        proxy_set_header Host $http_host;
                        proxy_buffering off;
                        proxy_connect_timeout 2s;
                        proxy_next_upstream error timeout;
                        proxy_next_upstream_tries 3;
                    }}
                }}"
            )
        })
    }

    /// nginx with `server(addr, dir)` in its `http` block, after the settings every use shares;
    /// `dir` is its own directory (config, logs, temp files).
    fn start(work: &Path, server: impl FnOnce(SocketAddr, &Path) -> String) -> Nginx {
        let addr = free_addr();
        let dir = work.join(format!("nginx-{}", addr.port()));
        std::fs::create_dir_all(&dir).expect("nginx dir");
        let temp: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
            .iter()
            .map(|kind| format!("{kind}_temp_path {}/{kind};\n", dir.display()))
            .collect();
        let config = format!(
            "daemon off; worker_processes 2; pid {dir}/nginx.pid; error_log {dir}/error.log;
            {user}
            events {{ worker_connections 1024; }}
            http {{
                access_log off; tcp_nodelay on;
                keepalive_requests 1000000; client_max_body_size 0;
                {temp}
                {server}
            }}",
            dir = dir.display(),
            user = if is_root() { "user root;" } else { "" },
            server = server(addr, &dir),
        );
        let config_path = dir.join("nginx.conf");
        std::fs::write(&config_path, config).expect("nginx config");
        let version = Command::new(program()).arg("-v").output().map_or_else(
            |_| "?".into(),
            |o| String::from_utf8_lossy(&o.stderr).trim().trim_start_matches("nginx version: ").to_string(),
        );
        let child = Command::new(program())
            .arg("-c")
            .arg(&config_path)
            .arg("-p")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("nginx (apt-get install nginx)");
        let nginx = Nginx { child, addr, version, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start:\n{}", nginx.error_log());
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What nginx logged: errors, and each request it passed to another node.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

/// Debian's nginx, found where a user's `PATH` may not look (`/usr/sbin`).
fn program() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() { "/usr/sbin/nginx" } else { "nginx" }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, so that the master stops its workers: SIGKILL would leave them running.
        let master = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if nix::sys::signal::kill(master, nix::sys::signal::Signal::SIGTERM).is_err() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
