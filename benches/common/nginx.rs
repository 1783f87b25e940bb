//! nginx on a free loopback port, the baseline of the S3 benchmarks: it serves a directory and
//! takes WebDAV PUTs under `/put/`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{free_addr, is_root};

/// nginx on a free loopback port: serves `root` and takes WebDAV PUTs under `/put/`.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    pub version: String,
}

impl Nginx {
    pub fn start(work: &Path, root: &Path) -> Nginx {
        let addr = free_addr();
        let dir = work.join("nginx");
        std::fs::create_dir_all(dir.join("put")).expect("nginx dir");
        let config = format!(
            "daemon off; worker_processes 2; pid {dir}/nginx.pid; error_log {dir}/error.log;
            {user}
            events {{ worker_connections 1024; }}
            http {{
                access_log off; sendfile on; tcp_nopush on; tcp_nodelay on;
                keepalive_requests 1000000; client_max_body_size 0;
                client_body_temp_path {dir}/body;
                server {{
                    listen {addr};
                    location / {{ root {root}; }}
                    location /put/ {{ root {dir}; dav_methods PUT; create_full_put_path on; }}
                }}
            }}",
            dir = dir.display(),
            root = root.display(),
            user = if is_root() { "user root;" } else { "" },
        );
        let config_path = dir.join("nginx.conf");
        std::fs::write(&config_path, config).expect("nginx config");
        let version = Command::new("nginx").arg("-v").output().map_or_else(
            |_| "?".into(),
            |o| String::from_utf8_lossy(&o.stderr).trim().trim_start_matches("nginx version: ").to_string(),
        );
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&config_path)
            .arg("-p")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("nginx");
        let nginx = Nginx { child, addr, version };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
