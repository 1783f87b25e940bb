//! A second throwaway Postgres that takes TCP connections only over TLS, with a certificate
//! for 127.0.0.1 signed by a CA of the test's own (made with the `openssl` command), for the
//! tests of servers registered with `sslmode=verify-full`.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use db_manager::instance::{InstanceSpec, LocalInstance, PgBinaries, RunAs};

pub struct TlsPostgres {
    instance: LocalInstance,
    /// The CA that signed the server's certificate (PEM).
    pub ca_pem: String,
    /// Another CA, which did not.
    pub other_ca_pem: String,
    pub port: u16,
    _dir: tempfile::TempDir,
}

const PASSWORD: &str = "tls-test-password";

/// Runs the `openssl` command in `dir`; panics with its stderr when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

impl TlsPostgres {
    pub fn start() -> TlsPostgres {
        let dir = tempfile::Builder::new().prefix("silo-tls-pg-").tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
        let certs = dir.path();
        for ca in ["ca", "other-ca"] {
            openssl(
                certs,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "1",
                    "-subj",
                    &format!("/CN=silo test {ca}"),
                ]
                .iter()
                .copied()
                .chain(["-keyout", &format!("{ca}.key"), "-out", &format!("{ca}.pem")].iter().copied())
                .collect::<Vec<_>>(),
            );
        }
        openssl(
            certs,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        );
        std::fs::write(certs.join("san.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
            .expect("write san");
        openssl(
            certs,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                "san.cnf",
                "-out",
                "server.crt",
            ],
        );
        let run_as = RunAs::for_this_process("postgres").expect("postgres OS user");
        for file in ["server.crt", "server.key"] {
            let path = certs.join(file);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
            run_as.give(&path).expect("chown");
        }
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let spec = InstanceSpec {
            root: certs.join("pg"),
            superuser: "silo_tls".into(),
            superuser_password: PASSWORD.into(),
            port,
            listen: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            settings: vec![
                ("fsync".into(), "off".into()),
                ("ssl".into(), "on".into()),
                ("ssl_cert_file".into(), certs.join("server.crt").display().to_string()),
                ("ssl_key_file".into(), certs.join("server.key").display().to_string()),
            ],
        };
        let instance = LocalInstance::new(spec, PgBinaries::locate(None).expect("binaries"), run_as);
        instance.ensure_initialized().expect("initdb");
        // TCP only over TLS: a client that does not encrypt finds no pg_hba entry.
        let hba = instance.data_dir().join("pg_hba.conf");
        let text = std::fs::read_to_string(&hba).expect("pg_hba");
        let tls_only: String = text
            .lines()
            .map(|line| {
                if line.starts_with("host ") {
                    line.replacen("host ", "hostssl ", 1)
                } else {
                    line.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&hba, tls_only + "\n").expect("write pg_hba");
        instance.start().expect("start the TLS Postgres");
        let read = |name: &str| std::fs::read_to_string(certs.join(name)).expect("read pem");
        TlsPostgres { ca_pem: read("ca.pem"), other_ca_pem: read("other-ca.pem"), instance, port, _dir: dir }
    }

    /// The admin URL, with `sslmode` when given.
    pub fn url(&self, sslmode: Option<&str>) -> String {
        let base = format!("postgresql://silo_tls:{PASSWORD}@127.0.0.1:{}/postgres", self.port);
        match sslmode {
            Some(mode) => format!("{base}?sslmode={mode}"),
            None => base,
        }
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = self.instance.stop();
    }
}
