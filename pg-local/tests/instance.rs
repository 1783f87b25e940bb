//! The local instance lifecycle against real `initdb`, `pg_ctl` and `postgres`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pg_local::{InstanceHealth, InstanceSpec, LocalInstance, PgBinaries, RunAs, supervise};
use tokio_util::sync::CancellationToken;

fn scratch_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("silo-inst-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    dir
}

fn instance_in(dir: &Path) -> LocalInstance {
    let spec = InstanceSpec {
        root: dir.join("pg"),
        superuser: "silo".into(),
        superuser_password: "pw-for-tests".into(),
        port: 5432,
        listen: None,
        settings: vec![("fsync".into(), "off".into())],
    };
    LocalInstance::new(spec, PgBinaries::locate(None).unwrap(), RunAs::for_this_process("postgres").unwrap())
}

/// Waits until `pid` has exited (gone, or a zombie); fails the test after 10 s.
async fn wait_until_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.contains(") Z") {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} still runs 10 s after it was stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn select_one(instance: &LocalInstance) -> i32 {
    let (client, conn) = instance.client_config("postgres").connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.query_one("SELECT 1", &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn initdb_is_redone_after_an_interrupted_one_and_not_repeated_after_a_complete_one() {
    let dir = scratch_dir();
    let instance = instance_in(dir.path());
    std::fs::create_dir_all(dir.path().join("pg/data.init/base")).unwrap();
    assert!(instance.ensure_initialized().unwrap(), "an interrupted initdb is redone");
    assert!(!dir.path().join("pg/data.init").exists());
    assert!(!instance.ensure_initialized().unwrap(), "a complete cluster is kept");
    assert!(!dir.path().join("pg/.initdb-pwfile").exists(), "the password file is removed");
    let mode = std::fs::metadata(dir.path().join("pg")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[tokio::test]
async fn scram_is_required_and_the_password_works() {
    let dir = scratch_dir();
    let instance = instance_in(dir.path());
    instance.ensure_initialized().unwrap();
    instance.start().unwrap();
    assert_eq!(select_one(&instance).await, 1);
    let mut wrong = instance.client_config("postgres");
    wrong.password("not-the-password");
    let err = wrong.connect(tokio_postgres::NoTls).await.err().expect("a wrong password is refused");
    let code = err.as_db_error().map(|db| db.code().clone());
    assert_eq!(code, Some(tokio_postgres::error::SqlState::INVALID_PASSWORD), "{err:?}");
    instance.stop().unwrap();
    assert!(instance.running_pid().is_none());
}

#[tokio::test]
async fn a_stale_postmaster_pid_does_not_block_a_start() {
    let dir = scratch_dir();
    let instance = instance_in(dir.path());
    instance.ensure_initialized().unwrap();
    let pid = instance.start().unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    wait_until_gone(pid).await;
    // The pid file now names a live process that is not postgres: this test itself.
    let pid_file = instance.data_dir().join("postmaster.pid");
    let text = std::fs::read_to_string(&pid_file).unwrap();
    let rest = text.split_once('\n').unwrap().1;
    std::fs::write(&pid_file, format!("{}\n{rest}", std::process::id())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let new_pid = loop {
        // Orphaned backends of the killed postmaster may hold shared memory for a moment.
        match instance.start() {
            Ok(pid) => break pid,
            Err(err) if Instant::now() < deadline => {
                eprintln!("retrying: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("{err}"),
        }
    };
    assert_ne!(new_pid, pid);
    assert_eq!(select_one(&instance).await, 1);
    instance.stop().unwrap();
}

#[tokio::test]
async fn a_cluster_left_running_by_an_earlier_run_is_restarted() {
    let dir = scratch_dir();
    let earlier = instance_in(dir.path());
    earlier.ensure_initialized().unwrap();
    let old_pid = earlier.start().unwrap();
    // A new Silo process knows nothing of the old one but the directory.
    let later = instance_in(dir.path());
    let new_pid = later.start().unwrap();
    assert_ne!(old_pid, new_pid);
    assert_eq!(select_one(&later).await, 1);
    later.stop().unwrap();
    wait_until_gone(new_pid).await;
    assert!(later.running_pid().is_none());
}

#[tokio::test]
async fn supervisor_reports_a_killed_postmaster_and_restarts_it() {
    let dir = scratch_dir();
    let instance = Arc::new(instance_in(dir.path()));
    instance.ensure_initialized().unwrap();
    let pid = instance.start().unwrap();
    let shutdown = CancellationToken::new();
    let mut handle = supervise(instance.clone(), pid, shutdown.clone());
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let saw_down = tokio::time::timeout(
        Duration::from_secs(5),
        handle.health.wait_for(|h| matches!(h, InstanceHealth::Down { .. })),
    )
    .await
    .expect("the death is noticed")
    .is_ok();
    assert!(saw_down);
    let up = tokio::time::timeout(
        Duration::from_secs(30),
        handle.health.wait_for(|h| matches!(h, InstanceHealth::Up { .. })),
    )
    .await
    .expect("the instance comes back")
    .unwrap()
    .clone();
    let InstanceHealth::Up { pid: new_pid } = up else { unreachable!() };
    assert_ne!(new_pid, pid);
    assert_eq!(handle.restarts.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(select_one(&instance).await, 1);
    shutdown.cancel();
    handle.task.await.unwrap().unwrap();
    instance.stop().unwrap();
}
