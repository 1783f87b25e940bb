//! Real S3 tools against one shared Silo, each run as its users run it: s3cmd with the
//! configuration `s3cmd --configure` writes (`bucket_location = US`), restic's `s3:` backend and
//! rclone with `provider = Other`; and the answers Silo gives to requests signed for a region
//! that is not its own. s3cmd comes from the `.venv`, restic and rclone from Debian, all
//! installed by `scripts/setup`; a missing tool fails its test, saying so.

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use common::noise;
use common::{Silo, scratch, silo_cli_json};

/// The Silo the tests of this file share (they make their own tenants), stopped at exit.
struct Shared {
    silo: Silo,
    _tmp: tempfile::TempDir,
}

static SHARED: Mutex<Option<Shared>> = Mutex::new(None);
static ADDR: OnceLock<SocketAddr> = OnceLock::new();

extern "C" fn stop_shared() {
    if let Ok(mut shared) = SHARED.lock() {
        drop(shared.take());
    }
}

/// Starts a Silo with `extra` flags on a fresh catalog database.
fn start_silo(label: &str, extra: &[&str]) -> Shared {
    let label = label.to_string();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    // Its own runtime on its own thread: the tests here are sync, or async on another runtime.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let url = pg_local::testing::shared().fresh_database(&label).await;
            let tmp = scratch();
            let mut args = vec!["--postgres-url", url.as_str()];
            args.extend(extra.iter().map(String::as_str));
            let mut silo = Silo::start(&tmp.path().join("data"), &args);
            silo.wait_ready(Duration::from_secs(30)).await;
            Shared { silo, _tmp: tmp }
        })
    })
    .join()
    .expect("start Silo")
}

/// The address of the shared Silo, started on first use.
fn shared() -> SocketAddr {
    *ADDR.get_or_init(|| {
        let shared = start_silo("s3_tools", &[]);
        let addr = shared.silo.addr;
        *SHARED.lock().expect("shared Silo") = Some(shared);
        // SAFETY: `stop_shared` is a plain `extern "C"` function with no arguments.
        unsafe { nix::libc::atexit(stop_shared) };
        addr
    })
}

/// Runs `f` on the shared Silo.
fn with_silo<T>(f: impl FnOnce(&Silo) -> T) -> T {
    shared();
    let guard = SHARED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&guard.as_ref().expect("the shared Silo runs").silo)
}

/// A new tenant on `silo` and a key of it: (access key id, secret).
fn tenant(silo: &Silo, name: &str) -> (String, String) {
    silo_cli_json(silo, &["tenant", "create", name]);
    let key = silo_cli_json(silo, &["key", "create", name]);
    let field = |name: &str| key[name].as_str().expect("key field").to_string();
    (field("access_key_id"), field("secret_access_key"))
}

/// Runs a tool as a user would, with a scratch `HOME` and none of the environment's AWS
/// settings (the environment may set `AWS_CA_BUNDLE` to a file that breaks rclone and restic);
/// panics with its output and Silo's log when it fails or is not installed.
fn run(home: &Path, program: &str, args: &[&str], env: &[(&str, &str)], log: impl Fn() -> String) -> String {
    let mut command = Command::new(program);
    command.args(args).env("HOME", home);
    for name in [
        "AWS_CA_BUNDLE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_PROFILE",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "RCLONE_CONFIG",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    let output = command.output().unwrap_or_else(|err| {
        panic!("cannot run {program} ({err}): it is not installed; ./scripts/setup installs it")
    });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}):\n{stdout}\n{}\nserver log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        log()
    );
    stdout
}

fn shared_log() -> String {
    with_silo(|silo| silo.stderr())
}

const S3CMD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/s3cmd");

/// A tree of `big` bytes in one file, small files in nested directories, an empty file and
/// names with spaces and non-ASCII letters.
fn write_tree(root: &Path, big: usize) {
    std::fs::create_dir_all(root.join("photos/2026 summer")).expect("mkdir");
    std::fs::write(root.join("big.bin"), noise(big, 1)).expect("write");
    std::fs::write(root.join("empty"), b"").expect("write");
    for i in 0..20u64 {
        let dir = if i % 2 == 0 { "photos" } else { "photos/2026 summer" };
        std::fs::write(root.join(dir).join(format!("small {i}.txt")), noise(100 + 700 * i as usize, i + 2))
            .expect("write");
    }
    std::fs::write(root.join("photos/café.jpg"), noise(70_000, 99)).expect("write");
}

/// Every file under `root`, relative, with its bytes.
fn read_tree(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let bytes = std::fs::read(&path).expect("read");
                out.push((path.strip_prefix(root).expect("under root").to_path_buf(), bytes));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn assert_same_tree(original: &Path, copy: &Path) {
    let (a, b) = (read_tree(original), read_tree(copy));
    let names = |tree: &[(PathBuf, Vec<u8>)]| tree.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "the same files");
    for ((path, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{} differs", path.display());
    }
}

/// The configuration `s3cmd --configure` writes for these answers, untouched.
fn s3cmd_config(path: &Path, addr: SocketAddr, (key, secret): &(String, String)) {
    let text = format!(
        "[default]\naccess_key = {key}\nsecret_key = {secret}\nbucket_location = US\nhost_base = {addr}\n\
         host_bucket = {addr}\ngpg_passphrase = \nuse_https = False\nproxy_host = \nproxy_port = 0\n\
         signature_v2 = False\ncheck_ssl_certificate = True\n"
    );
    std::fs::write(path, text).expect("write the s3cmd config");
}

#[test]
fn s3cmd_with_the_configuration_it_writes_syncs_both_ways() {
    let addr = shared();
    let keys = with_silo(|silo| tenant(silo, "s3cmd-user"));
    let tmp = scratch();
    let config = tmp.path().join("s3cfg");
    s3cmd_config(&config, addr, &keys);
    let config = config.to_str().expect("utf-8 path");
    let s3cmd = |args: &[&str]| {
        let mut all = vec!["-c", config];
        all.extend(args);
        run(tmp.path(), S3CMD, &all, &[], shared_log)
    };

    // The first command of a new user: ListBuckets, signed for "US".
    s3cmd(&["ls"]);
    s3cmd(&["mb", "s3://s3cmd-media"]);
    assert!(s3cmd(&["ls"]).contains("s3://s3cmd-media"));
    let info = s3cmd(&["info", "s3://s3cmd-media"]);
    assert!(info.contains("us-east-1"), "{info}");

    // 20 MiB is two parts of s3cmd's 15 MiB multipart chunks.
    let source = tmp.path().join("source");
    write_tree(&source, 20 << 20);
    let up = format!("{}/", source.display());
    s3cmd(&["sync", &up, "s3://s3cmd-media/tree/"]);
    let back = tmp.path().join("back");
    std::fs::create_dir(&back).expect("mkdir");
    s3cmd(&["sync", "s3://s3cmd-media/tree/", &format!("{}/", back.display())]);
    assert_same_tree(&source, &back);
}

#[test]
fn s3cmd_boto3_and_restic_follow_silo_to_its_configured_region() {
    let other = start_silo("s3_tools_region", &["--region", "eu-central-1"]);
    let keys = tenant(&other.silo, "s3cmd-eu");
    let tmp = scratch();
    let config = tmp.path().join("s3cfg");
    s3cmd_config(&config, other.silo.addr, &keys);
    let config = config.to_str().expect("utf-8 path");
    let log = || other.silo.stderr();
    let s3cmd = |args: &[&str]| {
        let mut all = vec!["-c", config];
        all.extend(args);
        run(tmp.path(), S3CMD, &all, &[], log)
    };
    // Signed for US, answered AuthorizationHeaderMalformed with <Region>eu-central-1</Region>:
    // s3cmd signs again for that region.
    s3cmd(&["ls"]);
    s3cmd(&["mb", "s3://s3cmd-eu"]);
    let file = tmp.path().join("hello.txt");
    std::fs::write(&file, b"hello from eu-central-1").expect("write");
    s3cmd(&["put", file.to_str().expect("utf-8"), "s3://s3cmd-eu/hello.txt"]);
    let info = s3cmd(&["info", "s3://s3cmd-eu"]);
    assert!(info.contains("eu-central-1"), "GetBucketLocation answers the region:\n{info}");
    let copy = tmp.path().join("copy.txt");
    s3cmd(&["get", "s3://s3cmd-eu/hello.txt", copy.to_str().expect("utf-8")]);
    assert_eq!(std::fs::read(&copy).expect("read"), b"hello from eu-central-1");

    // boto3 signing for us-east-1 follows the answer the same way.
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    let script = "import boto3, os\n\
        s3 = boto3.client('s3', endpoint_url=os.environ['ENDPOINT'], region_name='us-east-1')\n\
        print(s3.get_object(Bucket='s3cmd-eu', Key='hello.txt')['Body'].read().decode())\n";
    let endpoint = format!("http://{}", other.silo.addr);
    let env = [
        ("ENDPOINT", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", keys.0.as_str()),
        ("AWS_SECRET_ACCESS_KEY", keys.1.as_str()),
    ];
    let got = run(tmp.path(), python, &["-c", script], &env, log);
    assert_eq!(got.trim(), "hello from eu-central-1");

    // restic (minio-go) asks GetBucketLocation, then signs for what it answers.
    let repository = format!("s3:http://{}/restic-eu", other.silo.addr);
    let env = [
        ("RESTIC_REPOSITORY", repository.as_str()),
        ("RESTIC_PASSWORD", "correct horse battery staple"),
        ("AWS_ACCESS_KEY_ID", keys.0.as_str()),
        ("AWS_SECRET_ACCESS_KEY", keys.1.as_str()),
    ];
    run(tmp.path(), "restic", &["init"], &env, log);
    run(tmp.path(), "restic", &["backup", file.to_str().expect("utf-8")], &env, log);
    let listed = run(tmp.path(), "restic", &["ls", "latest"], &env, log);
    assert!(listed.contains("hello.txt"), "{listed}");
}

#[test]
fn restic_backs_up_checks_and_restores_byte_exact() {
    let addr = shared();
    let (key, secret) = with_silo(|silo| tenant(silo, "restic-user"));
    let tmp = scratch();
    let source = tmp.path().join("source");
    write_tree(&source, 24 << 20);
    let repository = format!("s3:http://{addr}/restic-backups");
    let env = [
        ("RESTIC_REPOSITORY", repository.as_str()),
        ("RESTIC_PASSWORD", "correct horse battery staple"),
        ("AWS_ACCESS_KEY_ID", key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
    ];
    let restic = |args: &[&str]| run(tmp.path(), "restic", args, &env, shared_log);
    restic(&["init"]);
    restic(&["backup", source.to_str().expect("utf-8")]);
    restic(&["check", "--read-data"]);
    let target = tmp.path().join("restored");
    restic(&["restore", "latest", "--target", target.to_str().expect("utf-8")]);
    let restored = target.join(source.strip_prefix("/").expect("absolute"));
    assert_same_tree(&source, &restored);
}

#[test]
fn rclone_syncs_and_checks_with_provider_other() {
    let addr = shared();
    let (key, secret) = with_silo(|silo| tenant(silo, "rclone-user"));
    let tmp = scratch();
    let config = tmp.path().join("rclone.conf");
    std::fs::write(
        &config,
        format!(
            "[silo]\ntype = s3\nprovider = Other\naccess_key_id = {key}\nsecret_access_key = {secret}\n\
             endpoint = http://{addr}\n"
        ),
    )
    .expect("write the rclone config");
    let config = config.to_str().expect("utf-8 path");
    let source = tmp.path().join("source");
    write_tree(&source, 12 << 20);
    let source = source.to_str().expect("utf-8");
    let rclone = |args: &[&str]| {
        let mut all = vec!["--config", config];
        all.extend(args);
        run(tmp.path(), "rclone", &all, &[], shared_log)
    };
    rclone(&["sync", source, "silo:rclone-sync/tree"]);
    rclone(&["check", "--download", source, "silo:rclone-sync/tree"]);
    let back = tmp.path().join("back");
    rclone(&["sync", "silo:rclone-sync/tree", back.to_str().expect("utf-8")]);
    assert_same_tree(Path::new(source), &back);
}

/// rclone comparing by checksum (the ETag's MD5, and the MD5 it stores with multipart
/// uploads) rather than by size and time: `sync --checksum` sends only what changed, `check`
/// (by hash, no download) finds a difference and then none; `--s3-acl public-read` publishes.
#[test]
fn rclone_syncs_and_checks_by_checksum_and_publishes_with_an_acl() {
    let addr = shared();
    let (key, secret) = with_silo(|silo| tenant(silo, "rclone-sums"));
    let tmp = scratch();
    let config = tmp.path().join("rclone.conf");
    std::fs::write(
        &config,
        format!(
            "[silo]\ntype = s3\nprovider = Other\naccess_key_id = {key}\nsecret_access_key = {secret}\n\
             endpoint = http://{addr}\n"
        ),
    )
    .expect("write the rclone config");
    let config = config.to_str().expect("utf-8 path");
    let source = tmp.path().join("source");
    write_tree(&source, 12 << 20);
    let source = source.to_str().expect("utf-8");
    let rclone = |args: &[&str]| {
        let mut all = vec!["--config", config];
        all.extend(args);
        run(tmp.path(), "rclone", &all, &[], shared_log)
    };
    rclone(&["sync", "--checksum", source, "silo:rclone-sums/tree"]);
    rclone(&["check", source, "silo:rclone-sums/tree"]);
    // Same size and time, other bytes: only a checksum tells them apart.
    let changed = Path::new(source).join("photos/small 0.txt");
    let before = std::fs::metadata(&changed).expect("stat").modified().expect("mtime");
    let mut bytes = std::fs::read(&changed).expect("read");
    bytes[0] ^= 0xff;
    std::fs::write(&changed, &bytes).expect("write");
    std::fs::File::options().write(true).open(&changed).expect("open").set_modified(before).expect("touch");
    let all = ["--config", config, "check", source, "silo:rclone-sums/tree"];
    let failed =
        Command::new("rclone").args(all).env("HOME", tmp.path()).env_remove("AWS_CA_BUNDLE").output();
    assert!(!failed.expect("rclone check").status.success(), "check finds the changed file by its hash");
    rclone(&["sync", "--checksum", source, "silo:rclone-sums/tree"]);
    rclone(&["check", source, "silo:rclone-sums/tree"]);
    let back = tmp.path().join("back");
    rclone(&["sync", "--checksum", "silo:rclone-sums/tree", back.to_str().expect("utf-8")]);
    assert_same_tree(Path::new(source), &back);

    rclone(&[
        "copyto",
        "--s3-acl",
        "public-read",
        &changed.to_string_lossy(),
        "silo:rclone-sums/site/page.txt",
    ]);
    // The status line of an anonymous GET.
    let fetch = |path: &str| {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        let request =
            format!("GET /rclone-sums/{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).expect("request");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).expect("answer");
        String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_owned()
    };
    assert!(fetch("site/page.txt").starts_with("HTTP/1.1 200"), "rclone's public-read ACL holds");
    assert!(fetch("tree/big.bin").starts_with("HTTP/1.1 403"), "the rest stays private");
}

fn sdk_client(addr: SocketAddr, (key, secret): &(String, String), region: &'static str) -> Client {
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(format!("http://{addr}"))
        .region(Region::new(region))
        .credentials_provider(Credentials::new(key, secret, None, None, "silo-test"))
        .force_path_style(true)
        .http_client(aws_smithy_http_client::Builder::new().build_http());
    Client::from_conf(config.build())
}

#[tokio::test]
async fn a_request_signed_for_us_is_served_as_us_east_1() {
    let addr = shared();
    let keys = with_silo(|silo| tenant(silo, "legacy-us"));
    let us = sdk_client(addr, &keys, "US");
    us.create_bucket().bucket("legacy-us").send().await.expect("CreateBucket signed for US");
    // Keys that need encoding in the path, a query, a multipart upload: every part of the
    // canonical request that the re-signing rebuilds.
    let key = "dir/with space/ünï+cødé&=?.txt";
    us.put_object()
        .bucket("legacy-us")
        .key(key)
        .body(ByteStream::from_static(b"legacy"))
        .send()
        .await
        .expect("put");
    let listed =
        us.list_objects_v2().bucket("legacy-us").prefix("dir/with space/").delimiter("/").send().await;
    assert_eq!(listed.expect("list").contents().len(), 1);
    let upload =
        us.create_multipart_upload().bucket("legacy-us").key("multi").send().await.expect("create upload");
    let upload_id = upload.upload_id().expect("upload id");
    let part = us
        .upload_part()
        .bucket("legacy-us")
        .key("multi")
        .upload_id(upload_id)
        .part_number(1)
        .body(ByteStream::from(noise(1 << 20, 7)))
        .send()
        .await
        .expect("upload part");
    let parts = aws_sdk_s3::types::CompletedMultipartUpload::builder()
        .parts(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(1)
                .e_tag(part.e_tag().expect("etag"))
                .build(),
        )
        .build();
    us.complete_multipart_upload()
        .bucket("legacy-us")
        .key("multi")
        .upload_id(upload_id)
        .multipart_upload(parts)
        .send()
        .await
        .expect("complete");
    let got = us.get_object().bucket("legacy-us").key(key).send().await.expect("get");
    assert_eq!(got.body.collect().await.expect("body").into_bytes().as_ref(), b"legacy");

    // The re-signing blesses no bad signature: a wrong secret signed for US is still refused.
    let forged = sdk_client(addr, &(keys.0.clone(), "not-the-secret".to_string()), "US");
    let err = forged.list_objects_v2().bucket("legacy-us").send().await.expect_err("a wrong secret");
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"));
}

#[tokio::test]
async fn other_regions_get_the_answers_aws_gives() {
    let addr = shared();
    let keys = with_silo(|silo| tenant(silo, "regions"));
    let home = sdk_client(addr, &keys, "us-east-1");
    home.create_bucket().bucket("regions-home").send().await.expect("create");

    let away = sdk_client(addr, &keys, "eu-west-1");
    let err = away.list_objects_v2().bucket("regions-home").send().await.expect_err("signed for eu-west-1");
    assert_eq!(err.code(), Some("AuthorizationHeaderMalformed"));
    let response = err.raw_response().expect("a response");
    assert_eq!(response.status().as_u16(), 400);
    let body = std::str::from_utf8(response.body().bytes().expect("a body")).expect("utf-8").to_string();
    assert!(body.contains("<Region>us-east-1</Region>"), "{body}");
    assert_eq!(response.headers().get("x-amz-bucket-region"), Some("us-east-1"));

    // GetBucketLocation answers whatever region it is signed for: it is how clients learn it.
    let location = away.get_bucket_location().bucket("regions-home").send().await.expect("location");
    let constraint = location.location_constraint().map_or("", |c| c.as_str());
    assert_eq!(constraint, "", "us-east-1 is the empty constraint, as on AWS");

    // A presigned URL for another region: AuthorizationQueryParametersError, with the region.
    let presigned = away
        .get_object()
        .bucket("regions-home")
        .key("x")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).expect("config"))
        .await
        .expect("presign");
    let response = reqwest::get(presigned.uri()).await.expect("fetch");
    assert_eq!(response.status(), 400);
    let body = response.text().await.expect("body");
    assert!(
        body.contains("AuthorizationQueryParametersError") && body.contains("<Region>us-east-1</Region>"),
        "{body}"
    );

    // A request cannot show the check one region and s3s another: every scope it carries counts.
    let http = reqwest::Client::new();
    let today = "20261130";
    let scope = |region: &str| format!("{}/{today}/{region}/s3/aws4_request", keys.0);
    let both = http
        .get(format!(
            "http://{addr}/regions-home?X-Amz-Credential={}&X-Amz-Signature=00",
            scope("eu-west-1").replace('/', "%2F")
        ))
        .header(
            "Authorization",
            format!("AWS4-HMAC-SHA256 Credential={}, SignedHeaders=host, Signature=00", scope("us-east-1")),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(both.status(), 400);
    assert!(both.text().await.expect("body").contains("AuthorizationQueryParametersError"));
    // A signed streaming upload for US is not re-signed (its chunks are signed for US too): it
    // is told the region to sign for.
    let streaming = http
        .put(format!("http://{addr}/regions-home/streamed"))
        .header(
            "Authorization",
            format!("AWS4-HMAC-SHA256 Credential={}, SignedHeaders=host, Signature=00", scope("US")),
        )
        .header("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
        .body("0;chunk-signature=00\r\n\r\n")
        .send()
        .await
        .expect("send");
    assert_eq!(streaming.status(), 400);
    let body = streaming.text().await.expect("body");
    assert!(
        body.contains("AuthorizationHeaderMalformed") && body.contains("<Region>us-east-1</Region>"),
        "{body}"
    );

    // CreateBucket for another region, and for no region at all.
    let create = |name: &'static str, constraint: &'static str| {
        let home = home.clone();
        async move {
            let configuration = CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(constraint))
                .build();
            home.create_bucket().bucket(name).create_bucket_configuration(configuration).send().await
        }
    };
    let err = create("regions-eu", "eu-west-1").await.expect_err("another region");
    assert_eq!(err.code(), Some("IllegalLocationConstraintException"));
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    let err = create("regions-bad", "Mars_1").await.expect_err("no region");
    assert_eq!(err.code(), Some("InvalidLocationConstraint"));
    create("regions-explicit", "us-east-1").await.expect("Silo's own region");
}
