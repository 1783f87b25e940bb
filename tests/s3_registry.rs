//! The private Docker registry (Debian's `docker-registry`, distribution 2.8, with its S3
//! storage driver) on a tenant's bucket in Silo: `skopeo` pushes an OCI image of two layers
//! (one of 12 MiB, so that the driver's multipart uploads and moves run), pulls it back byte
//! for byte, inspects it and deletes it. Both tools are installed by `scripts/setup`.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Silo, free_addr};

const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
const OCI_IMAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/oci_image.py");

/// A `docker-registry serve` child, killed when dropped.
struct Registry {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Registry {
    /// Starts a registry on `silo`'s bucket `bucket` with the key `(id, secret)`.
    async fn start(dir: &Path, silo: &Silo, bucket: &str, (id, secret): (&str, &str)) -> Registry {
        let addr = free_addr();
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1
log:
  level: info
storage:
  s3:
    accesskey: {id}
    secretkey: {secret}
    region: us-east-1
    regionendpoint: http://{silo}
    bucket: {bucket}
    secure: false
    v4auth: true
    chunksize: 5242880
    rootdirectory: /
  delete:
    enabled: true
  redirect:
    disable: true
http:
  addr: {addr}
  secret: silo-registry-test
",
                silo = silo.addr
            ),
        )
        .expect("registry config");
        let log = dir.join("registry.log");
        let child = clean_env(Command::new("docker-registry"))
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("registry log"))
            .spawn()
            .expect("docker-registry is not installed; ./scripts/setup installs it");
        let registry = Registry { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "the registry did not start:\n{}", registry.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        registry
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn image(&self, name: &str) -> String {
        format!("docker://{}/{name}", self.addr)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `command` without the environment's AWS settings (an `AWS_CA_BUNDLE` stops the registry's
/// S3 driver from starting at all).
fn clean_env(mut command: Command) -> Command {
    for name in ["AWS_CA_BUNDLE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_REGION"] {
        command.env_remove(name);
    }
    command
}

/// Runs skopeo with `args`; its stdout, or a panic with its stderr and both servers' logs.
fn skopeo(args: &[&str], registry: &Registry, silo: &Silo) -> Result<String, String> {
    let output = clean_env(Command::new("skopeo"))
        .args(args)
        .output()
        .expect("skopeo is not installed; ./scripts/setup installs it");
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(format!(
        "skopeo {args:?}: {}\n{}\nregistry log:\n{}\nsilo log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        registry.log(),
        silo.stderr()
    ))
}

/// The blobs of an OCI layout, by name, with their bytes.
fn blobs(layout: &Path) -> Vec<(String, Vec<u8>)> {
    let dir = layout.join("blobs/sha256");
    let mut blobs: Vec<_> = std::fs::read_dir(&dir)
        .expect("blobs")
        .map(|entry| {
            let entry = entry.expect("blob");
            (entry.file_name().to_string_lossy().into_owned(), std::fs::read(entry.path()).expect("blob"))
        })
        .collect();
    blobs.sort();
    blobs
}

#[tokio::test]
async fn the_docker_registry_on_a_bucket_pushes_pulls_and_deletes_an_image_with_skopeo() {
    let (silo, tmp) = common::silo_on_fresh_catalog("s3_registry").await;
    let (id, secret) = common::tenant_with_key(&silo, "registry-user");
    common::sdk_client(&silo, &id, &secret).create_bucket().bucket("images").send().await.expect("bucket");
    let registry = Registry::start(tmp.path(), &silo, "images", (&id, &secret)).await;

    let source = tmp.path().join("image");
    let made = Command::new(PYTHON).arg(OCI_IMAGE).arg(&source).output().expect("python");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let manifest = String::from_utf8_lossy(&made.stdout).trim().to_string();
    let oci = |layout: &Path| format!("oci:{}:v1", layout.display());
    let image = registry.image("site/app:v1");

    skopeo(&["copy", "--dest-tls-verify=false", &oci(&source), &image], &registry, &silo)
        .unwrap_or_else(|e| panic!("{e}"));
    let pulled = tmp.path().join("pulled");
    skopeo(&["copy", "--src-tls-verify=false", &image, &oci(&pulled)], &registry, &silo)
        .unwrap_or_else(|e| panic!("{e}"));
    let (sent, got) = (blobs(&source), blobs(&pulled));
    assert_eq!(sent.len(), 4, "two layers, a config and a manifest");
    assert!(sent == got, "the pulled image's blobs are the pushed ones, byte for byte");
    let inspected = skopeo(&["inspect", "--tls-verify=false", &image], &registry, &silo)
        .unwrap_or_else(|e| panic!("{e}"));
    let inspected: serde_json::Value = serde_json::from_str(&inspected).expect("json");
    assert_eq!(inspected["Digest"], manifest, "{inspected}");
    assert_eq!(inspected["Layers"].as_array().map(Vec::len), Some(2), "{inspected}");

    skopeo(&["delete", "--tls-verify=false", &image], &registry, &silo).unwrap_or_else(|e| panic!("{e}"));
    let gone = skopeo(&["inspect", "--tls-verify=false", &image], &registry, &silo);
    assert!(gone.as_ref().is_err_and(|err| err.contains("manifest unknown")), "{gone:?}");
}
