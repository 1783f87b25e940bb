//! The front door under attack, against the real binary on loopback: bodies that must not be
//! buffered, idle and slow connections, replayed and long-lived signatures, metrics on the public
//! port, and the modes of the data directory. Each test performs the attack.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use common::{Silo, scratch, silo_cli_json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: u64 = 1 << 20;

/// A Silo on a fresh catalog database, with extra flags.
async fn start(label: &str, extra: &[&str]) -> (Silo, tempfile::TempDir) {
    let url = pg_local::testing::shared().fresh_database(label).await;
    let tmp = scratch();
    let mut args = vec!["--postgres-url", url.as_str()];
    args.extend_from_slice(extra);
    let mut silo = Silo::start(&tmp.path().join("data"), &args);
    silo.wait_ready(Duration::from_secs(30)).await;
    (silo, tmp)
}

/// A tenant with a key; returns the key id, its secret and an SDK client using it.
fn tenant(silo: &Silo, name: &str) -> (String, String, Client) {
    silo_cli_json(silo, &["tenant", "create", name]);
    let key = silo_cli_json(silo, &["key", "create", name]);
    let id = key["access_key_id"].as_str().expect("key id").to_string();
    let secret = key["secret_access_key"].as_str().expect("secret").to_string();
    let client = common::sdk_client(silo, &id, &secret);
    (id, secret, client)
}

/// (VmRSS, VmHWM) of a process, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("memory field")
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Sends `head` then up to `body_len` bytes of `filler` (in 1 MiB writes, until the server
/// closes), while reading the answer; returns the answer and how many body bytes were written.
async fn send_while_reading(silo: &Silo, head: String, body_len: u64, filler: Vec<u8>) -> (String, u64) {
    let stream = TcpStream::connect(silo.addr).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let mut written = 0u64;
        if write.write_all(head.as_bytes()).await.is_err() {
            return written;
        }
        while written < body_len {
            let n = filler.len().min((body_len - written) as usize);
            if write.write_all(&filler[..n]).await.is_err() {
                break;
            }
            written += n as u64;
        }
        written
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    let read_all = async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read_all).await.expect("the server answers and closes");
    writer.abort();
    let written = writer.await.unwrap_or(0);
    (String::from_utf8_lossy(&answer).into_owned(), written)
}

#[tokio::test]
async fn anonymous_form_posts_and_huge_xml_bodies_are_refused_before_they_are_read() {
    let (silo, _tmp) = start("front_bodies", &[]).await;
    let pid = silo.pid();
    let (rss_before, hwm_before) = memory(pid);

    // A browser-style POST-object upload of 256 MiB, anonymous.
    let file_len = 256 * MIB;
    let preamble = "--xyz\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nbig\r\n--xyz\r\n\
                    Content-Disposition: form-data; name=\"file\"; filename=\"big\"\r\n\
                    Content-Type: application/octet-stream\r\n\r\n";
    let epilogue = "\r\n--xyz--\r\n";
    let total = preamble.len() as u64 + file_len + epilogue.len() as u64;
    let head = format!(
        "POST /media HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; boundary=xyz\r\n\
         Content-Length: {total}\r\n\r\n{preamble}",
        silo.addr
    );
    let (answer, written) = send_while_reading(&silo, head, file_len, vec![b'a'; MIB as usize]).await;
    assert!(answer.starts_with("HTTP/1.1 501"), "{answer}");
    assert!(answer.contains("<Code>NotImplemented</Code>"), "{answer}");
    assert!(written < file_len, "the server closed the connection instead of reading 256 MiB");

    // 100 MB of XML with its length declared: refused at once, after 64 KiB were sent.
    let head = format!(
        "POST /media?delete HTTP/1.1\r\nHost: {}\r\nContent-Type: application/xml\r\n\
         Content-Length: 100000000\r\n\r\n",
        silo.addr
    );
    let (answer, _) = send_while_reading(&silo, head, 64 * 1024, vec![b' '; 64 * 1024]).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("MaxMessageLengthExceeded"), "{answer}");

    // 100 MB of XML, chunked (no length): cut off at 1 MiB.
    let head = format!(
        "POST /media?delete HTTP/1.1\r\nHost: {}\r\nContent-Type: application/xml\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        silo.addr
    );
    let mut chunk = format!("{:x}\r\n", MIB).into_bytes();
    chunk.extend(std::iter::repeat_n(b' ', MIB as usize));
    chunk.extend_from_slice(b"\r\n");
    let (answer, written) = send_while_reading(&silo, head, 100 * MIB, chunk).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("MaxMessageLengthExceeded"), "{answer}");
    assert!(written < 100 * MIB, "the server stopped reading");

    let (rss_after, hwm_after) = memory(pid);
    eprintln!("RSS {rss_before} -> {rss_after}, HWM {hwm_before} -> {hwm_after}");
    assert!(rss_after < rss_before + 32 * MIB, "RSS grew from {rss_before} to {rss_after}");
    assert!(
        hwm_after < hwm_before.max(rss_before) + 32 * MIB,
        "peak RSS grew from {hwm_before} to {hwm_after}"
    );
}

#[tokio::test]
async fn oversized_management_bodies_are_refused() {
    let (silo, _tmp) = start("front_json", &[]).await;
    // A declared 2 MiB body: refused from its length, while the client is still sending it.
    let head = format!(
        "POST /v1/tenants HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        silo.addr,
        silo.token(),
        2 * MIB
    );
    let (answer, _) = send_while_reading(&silo, head, 2 * MIB, vec![b' '; MIB as usize]).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    // Without a length (chunked), the body is cut off at the cap too.
    let head = format!(
        "POST /v1/tenants HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        silo.addr,
        silo.token()
    );
    let mut chunk = format!("{:x}\r\n", MIB).into_bytes();
    chunk.extend(std::iter::repeat_n(b' ', MIB as usize));
    chunk.extend_from_slice(b"\r\n");
    let (answer, _) = send_while_reading(&silo, head, 100 * MIB, chunk).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test]
async fn a_thousand_idle_connections_do_not_lock_out_a_normal_client() {
    // This process holds the 1,000 client ends (and other tests' sockets): lift its soft limit.
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    assert!(hard >= 2048, "this test needs 2048 open files, the hard limit is {hard}");
    let (silo, _tmp) = start("front_idle", &["--max-connections", "256", "--idle-timeout-secs", "2"]).await;
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect(silo.addr).await.expect("connect"));
    }
    let opened = Instant::now();
    // Each idle connection is answered 503 (over the cap) or closed after the header timeout.
    let watchers: Vec<_> = idle
        .into_iter()
        .map(|mut tcp| {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                let ended = tokio::time::timeout(Duration::from_secs(10), async {
                    loop {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                })
                .await
                .is_ok();
                (ended, String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 503"))
            })
        })
        .collect();

    let client = reqwest::Client::new();
    let served = loop {
        let response = client.get(silo.url("/healthz")).send().await;
        match response {
            Ok(response) if response.status() == 200 => break opened.elapsed(),
            Ok(response) => {
                assert_eq!(response.status(), 503);
                assert_eq!(response.headers()["retry-after"], "1");
            }
            Err(_) => {}
        }
        assert!(opened.elapsed() < Duration::from_secs(10), "a normal client was locked out");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("served after {served:?}");
    let mut shed = 0;
    for watcher in watchers {
        let (ended, got_503) = watcher.await.expect("watcher");
        assert!(ended, "an idle connection stayed open past the header timeout");
        shed += usize::from(got_503);
    }
    assert!(shed > 0, "connections over the cap are answered 503");
    let metrics = client.get(silo.metrics_url()).send().await.expect("metrics").text().await.unwrap();
    let counted = metrics
        .lines()
        .find_map(|line| line.strip_prefix("silo_http_connections_shed_total "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(counted.is_some_and(|n| n >= shed as u64), "{metrics}");
}

#[tokio::test]
async fn a_slowloris_client_is_disconnected_after_the_header_timeout() {
    let (silo, _tmp) = start("front_slow", &["--header-timeout-secs", "2"]).await;
    let tcp = TcpStream::connect(silo.addr).await.expect("connect");
    let (mut read, mut write) = tcp.into_split();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let head = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: {}", "a".repeat(10_000));
        for byte in head.bytes() {
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut answer)).await;
    let took = started.elapsed();
    writer.abort();
    assert!(closed.is_ok(), "the slow client was still connected after {took:?}");
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(6), "{took:?}");
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));
}

#[tokio::test]
async fn an_upload_that_stalls_mid_body_is_cut_after_the_idle_timeout() {
    let (silo, _tmp) = start("front_stall", &["--idle-timeout-secs", "2"]).await;
    let (id, secret, client) = tenant(&silo, "staller");
    client.create_bucket().bucket("stall").send().await.expect("bucket");
    let (date, auth) = common::sign::sigv2(&id, &secret, "PUT", "/stall/k", SystemTime::now());
    let head = format!(
        "PUT /stall/k HTTP/1.1\r\nHost: {}\r\nDate: {date}\r\nAuthorization: {auth}\r\n\
         Content-Length: 1000000\r\n\r\n0123456789",
        silo.addr
    );
    let mut tcp = TcpStream::connect(silo.addr).await.expect("connect");
    tcp.write_all(head.as_bytes()).await.expect("send");
    let started = Instant::now();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    let took = started.elapsed();
    assert!(closed.is_ok(), "the stalled upload still held its connection after {took:?}");
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("IncompleteBody"), "{answer}");
}

#[tokio::test]
async fn replayed_sigv2_requests_and_presigned_urls_past_seven_days_are_refused() {
    let (silo, _tmp) = start("front_signatures", &[]).await;
    let (id, secret, client) = tenant(&silo, "signer");
    client.create_bucket().bucket("signed").send().await.expect("bucket");
    let body = ByteStream::from_static(b"hello");
    client.put_object().bucket("signed").key("k").body(body).send().await.expect("put");
    let http = reqwest::Client::new();

    let get_v2 = |date: SystemTime| {
        let (date, auth) = common::sign::sigv2_get(&id, &secret, "/signed/k", date);
        http.get(silo.url("/signed/k")).header("date", date).header("authorization", auth).send()
    };
    let fresh = get_v2(SystemTime::now()).await.expect("get");
    assert_eq!(fresh.status(), 200, "a fresh SigV2 request is served");
    let replayed = get_v2(SystemTime::now() - Duration::from_secs(3600)).await.expect("get");
    assert_eq!(replayed.status(), 403);
    assert!(replayed.text().await.unwrap().contains("RequestTimeTooSkewed"));
    // A forged signature (Silo compares SigV2 signatures in constant time, before s3s does).
    let (date, auth) = common::sign::sigv2_get(&id, "not-the-secret", "/signed/k", SystemTime::now());
    let forged = http.get(silo.url("/signed/k")).header("date", date).header("authorization", auth).send();
    let forged = forged.await.expect("get");
    assert_eq!(forged.status(), 403);
    assert!(forged.text().await.unwrap().contains("SignatureDoesNotMatch"));

    let week = Duration::from_secs(7 * 24 * 3600);
    let config = PresigningConfig::expires_in(week).expect("a week is allowed");
    let presigned = client.get_object().bucket("signed").key("k").presigned(config).await.expect("presign");
    let response = http.get(presigned.uri()).send().await.expect("get");
    assert_eq!(response.status(), 200, "a presigned URL of exactly seven days works");
    assert_eq!(response.text().await.unwrap(), "hello");

    let host = silo.addr.to_string();
    let url = common::sign::presign_get(&host, &id, &secret, "/signed/k", week);
    assert_eq!(http.get(&url).send().await.expect("get").status(), 200, "the hand signer matches");
    let url = common::sign::presign_get(&host, &id, &secret, "/signed/k", week + Duration::from_secs(86_400));
    let response = http.get(&url).send().await.expect("get");
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("AuthorizationQueryParametersError"));
}

#[tokio::test]
async fn metrics_are_not_served_on_the_public_port() {
    let (silo, _tmp) = start("front_metrics", &[]).await;
    tenant(&silo, "hidden-tenant-name");
    let http = reqwest::Client::new();
    let response = http.get(silo.url("/metrics")).send().await.expect("get");
    assert_eq!(response.status(), 404);
    let text = response.text().await.unwrap();
    assert!(!text.contains("silo_") && !text.contains("hidden-tenant-name"), "{text}");
    let metrics = http.get(silo.metrics_url()).send().await.expect("get").text().await.unwrap();
    assert!(metrics.contains("silo_http_requests_total"), "{metrics}");
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[tokio::test]
async fn the_data_directory_and_packs_are_readable_by_silo_alone() {
    let url = pg_local::testing::shared().fresh_database("front_modes").await;
    let tmp = scratch();
    let data = tmp.path().join("data");
    let mut silo = Silo::start(&data, &["--postgres-url", &url]);
    silo.wait_ready(Duration::from_secs(30)).await;
    let (_, _, client) = tenant(&silo, "modes");
    client.create_bucket().bucket("modes").send().await.expect("bucket");
    let body = ByteStream::from(vec![7u8; 300_000]);
    client.put_object().bucket("modes").key("k").body(body).send().await.expect("put");

    let packs = data.join("packs");
    let check = || {
        assert_eq!(mode(&data), 0o700, "data dir");
        assert_eq!(mode(&packs), 0o700, "packs dir");
        assert_eq!(mode(&data.join("secrets")), 0o700, "secrets dir");
        let files: Vec<_> = std::fs::read_dir(&packs).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(!files.is_empty(), "a pack was written");
        for file in files {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
    };
    check();

    // A data directory left readable by an older Silo is tightened at the next start.
    drop(silo);
    for dir in [&data, &packs] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for file in std::fs::read_dir(&packs).unwrap() {
        std::fs::set_permissions(file.unwrap().path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut silo = Silo::start(&data, &["--postgres-url", &url]);
    silo.wait_ready(Duration::from_secs(30)).await;
    check();
}
