//! How Silo reaches a Postgres server: in the clear (the embedded and dedicated instances, on
//! this machine), or over TLS that verifies the server against the CA given at registration
//! (`sslmode=verify-full`, the documented production setting for registered servers).
//!
//! tokio-postgres knows `disable`, `prefer` and `require`, and `require` checks nothing. So the
//! URL's `sslmode=verify-full` is taken out before tokio-postgres parses it, and Silo connects
//! with rustls over the registration's CA, which checks the chain and the host name. The pg
//! tools get the same through `PGSSLMODE=verify-full` and `PGSSLROOTCERT`. Modes that encrypt
//! without checking who answers (`require`, `verify-ca`) are refused at registration.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use storage_node::catalog::CatalogPool;
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::DbError;

/// A server's connection settings and, for `verify-full`, the TLS that checks it.
#[derive(Clone)]
pub struct Reach {
    pub config: Config,
    tls: Option<Verified>,
}

#[derive(Clone)]
struct Verified {
    client: Arc<rustls::ClientConfig>,
    ca_pem: String,
}

impl std::fmt::Debug for Reach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reach").field("verify_full", &self.tls.is_some()).finish_non_exhaustive()
    }
}

impl Reach {
    /// Parses an admin URL (URL or key=value form) with the CA that verifies the server.
    ///
    /// # Errors
    /// A message (which never repeats the URL: it holds a password) for a URL that does not
    /// parse, a mode that does not verify the server, `verify-full` without a CA, a CA without
    /// `verify-full`, or a CA that is no PEM certificate.
    pub fn parse(url: &str, ca_pem: Option<&str>) -> Result<Reach, String> {
        let (stripped, mode) = take_sslmode(url);
        let mut config: Config = stripped.parse().map_err(|_| "url is not a valid libpq URL".to_string())?;
        match (mode.as_deref(), ca_pem) {
            (Some("verify-full"), Some(pem)) => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                Ok(Reach { config, tls: Some(verified(pem)?) })
            }
            (Some("verify-full"), None) => {
                Err("sslmode=verify-full needs the server's CA in ca_cert (PEM)".into())
            }
            (Some(mode @ ("require" | "verify-ca")), _) => Err(format!(
                "sslmode={mode} does not check the server's name; use sslmode=verify-full with ca_cert"
            )),
            (Some("disable" | "prefer") | None, None) => Ok(Reach { config, tls: None }),
            (Some(_) | None, Some(_)) => Err("ca_cert is used with sslmode=verify-full only".into()),
            (Some(other), None) => Err(format!("unknown sslmode {other:?}")),
        }
    }

    /// Settings for a server on this machine, reached in the clear.
    pub fn plain(config: Config) -> Reach {
        Reach { config, tls: None }
    }

    /// The same server with other settings (another role or database).
    pub fn with_config(&self, config: Config) -> Reach {
        Reach { config, tls: self.tls.clone() }
    }

    /// Whether TLS verifies the server.
    pub fn verifies(&self) -> bool {
        self.tls.is_some()
    }

    /// Connects and drives the connection in a task of its own.
    ///
    /// # Errors
    /// [`DbError::ServerUnreachable`] naming `server`.
    pub async fn connect(&self, server: &str) -> Result<Client, DbError> {
        let mut config = self.config.clone();
        config.connect_timeout(Duration::from_secs(5)).application_name("silo");
        let unreachable = |err: tokio_postgres::Error| DbError::ServerUnreachable {
            server: server.to_string(),
            message: with_causes(&err),
        };
        let client = match &self.tls {
            None => {
                let (client, connection) = config.connect(NoTls).await.map_err(unreachable)?;
                tokio::spawn(drive(connection));
                client
            }
            Some(tls) => {
                let connector = MakeRustlsConnect::new((*tls.client).clone());
                let (client, connection) = config.connect(connector).await.map_err(unreachable)?;
                tokio::spawn(drive(connection));
                client
            }
        };
        Ok(client)
    }

    /// A pool of `size` connections.
    ///
    /// # Errors
    /// [`DbError::ServerUnreachable`] naming `server` when the pool cannot be built.
    pub fn pool(&self, server: &str, size: usize) -> Result<CatalogPool, DbError> {
        let built = match &self.tls {
            None => storage_node::catalog::connect_pool(self.config.clone(), size),
            Some(tls) => storage_node::catalog::connect_pool_with(
                self.config.clone(),
                size,
                MakeRustlsConnect::new((*tls.client).clone()),
            ),
        };
        built.map_err(|err| DbError::ServerUnreachable {
            server: server.to_string(),
            message: err.to_string(),
        })
    }

    /// What a pg tool needs in its environment to check the server as Silo does: with
    /// `verify-full`, the CA written to a file under `dir` (named by its hash, so every use
    /// shares it).
    ///
    /// # Errors
    /// The I/O error of writing the CA file.
    pub fn tool_env(&self, dir: &Path) -> std::io::Result<Vec<(&'static str, String)>> {
        let Some(tls) = &self.tls else { return Ok(vec![("PGSSLMODE", "disable".into())]) };
        let path = ca_file(dir, &tls.ca_pem)?;
        Ok(vec![("PGSSLMODE", "verify-full".into()), ("PGSSLROOTCERT", path.display().to_string())])
    }
}

/// The error and its causes: tokio-postgres says "error performing TLS handshake" and keeps
/// the reason (an unknown issuer, a wrong name) in its source.
fn with_causes(err: &tokio_postgres::Error) -> String {
    let mut message = storage_node::catalog::describe(err);
    if err.as_db_error().is_some() {
        return message; // the server's own words, already in full
    }
    let mut cause = std::error::Error::source(err);
    while let Some(inner) = cause {
        message.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    message
}

async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(err) = connection.await {
        tracing::debug!(error = %err, "server connection ended");
    }
}

/// The URL without its `sslmode` parameter, and that parameter's value.
fn take_sslmode(url: &str) -> (String, Option<String>) {
    let mut mode = None;
    let mut keep = |pair: &str| match pair.split_once('=') {
        Some(("sslmode", value)) => {
            mode = Some(value.trim_matches('\'').to_string());
            false
        }
        _ => true,
    };
    let stripped = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            Some((base, query)) => {
                let kept: Vec<&str> = query.split('&').filter(|pair| keep(pair)).collect();
                if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) }
            }
            None => url.to_string(),
        }
    } else {
        url.split_whitespace().filter(|pair| keep(pair)).collect::<Vec<_>>().join(" ")
    };
    (stripped, mode)
}

fn verified(pem: &str) -> Result<Verified, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|err| format!("ca_cert is not PEM: {err}"))?;
        roots.add(cert).map_err(|err| format!("ca_cert holds a certificate rustls refuses: {err}"))?;
    }
    if roots.is_empty() {
        return Err("ca_cert holds no certificate".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Verified { client: Arc::new(client), ca_pem: pem.to_string() })
}

fn ca_file(dir: &Path, pem: &str) -> std::io::Result<PathBuf> {
    let path = dir.join(format!("ca-{}.pem", &blake3::hash(pem.as_bytes()).to_hex()[..16]));
    // Written again unless it holds exactly this CA (a file someone else left is not trusted).
    if std::fs::read_to_string(&path).ok().as_deref() != Some(pem) {
        std::fs::create_dir_all(dir)?;
        let partial = path.with_extension("partial");
        std::fs::write(&partial, pem)?;
        std::fs::rename(&partial, &path)?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_out_of_both_forms() {
        let (url, mode) = take_sslmode("postgresql://u:p@h:5432/db?sslmode=verify-full&application_name=x");
        assert_eq!(
            (url.as_str(), mode.as_deref()),
            ("postgresql://u:p@h:5432/db?application_name=x", Some("verify-full"))
        );
        let (url, mode) = take_sslmode("postgresql://u:p@h/db?sslmode=verify-full");
        assert_eq!((url.as_str(), mode.as_deref()), ("postgresql://u:p@h/db", Some("verify-full")));
        let (url, mode) = take_sslmode("host=h user=u sslmode=verify-full dbname=d");
        assert_eq!((url.as_str(), mode.as_deref()), ("host=h user=u dbname=d", Some("verify-full")));
        let (_, mode) = take_sslmode("postgresql://u@h/db");
        assert_eq!(mode, None);
    }

    #[test]
    fn modes_that_do_not_verify_are_refused() {
        for url in ["postgresql://u@h/db?sslmode=require", "postgresql://u@h/db?sslmode=verify-ca"] {
            let err = Reach::parse(url, None).map(|_| ()).unwrap_err();
            assert!(err.contains("verify-full"), "{err}");
        }
        assert!(Reach::parse("postgresql://u@h/db?sslmode=verify-full", None).is_err());
        assert!(Reach::parse("postgresql://u@h/db", Some("not pem")).is_err());
        assert!(!Reach::parse("postgresql://u@h/db", None).map(|r| r.verifies()).unwrap_or(true));
    }
}
