//! TLS to both dependencies: Postgres with `sslmode` (this machine's cluster has `ssl = on`
//! with Debian's self-signed snakeoil certificate; `.ci/run` makes sure of it) and Redis over
//! `rediss://` from a `redis-server` that listens only on a TLS port, with a CA and server
//! certificate the test makes with `openssl`.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use orchestrator::{app::App, config::Settings};
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::helpers::{TestApp, data_dir, drop_database, eventually, test_settings};

/// Whether the connection that runs the query is encrypted, as the server sees it.
const SSL_IN_USE: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

/// `settings`' database URL with `query` as its query string.
fn with_query(settings: &mut Settings, query: &str) {
    let mut url = url::Url::parse(&settings.database_url).expect("a database URL");
    url.set_query(Some(query));
    settings.database_url = url.to_string();
}

/// Runs one task to the end and expects it `completed`.
async fn completes_a_task(app: &TestApp) {
    let id = app.submit("Summarise why TLS matters for managed databases").await;
    let task = app.wait(id).await;
    assert_eq!(task["status"], "completed", "{task}");
}

#[tokio::test]
async fn postgres_with_sslmode_require_runs_tasks_over_tls() {
    let mut settings = test_settings();
    with_query(&mut settings, "sslmode=require");
    let app = TestApp::spawn_with(settings, 1).await;

    completes_a_task(&app).await;
    let encrypted: bool = sqlx::query_scalar(SSL_IN_USE).fetch_one(&app.db).await.expect("pg_stat_ssl");
    assert!(encrypted, "the app's pool talks to Postgres in the clear");
    app.stop().await;
}

/// The certificate the server presents, which is also its own CA (self-signed).
async fn server_certificate(settings: &Settings) -> String {
    let mut url = url::Url::parse(&settings.database_url).expect("a database URL");
    url.set_path("/postgres");
    let pool = sqlx::PgPool::connect(url.as_str()).await.expect("the admin database");
    let path: String = sqlx::query_scalar("SHOW ssl_cert_file").fetch_one(&pool).await.expect("ssl_cert_file");
    pool.close().await;
    path
}

#[tokio::test]
async fn postgres_verify_ca_trusts_sslrootcert_and_refuses_without_it() {
    // verify-ca, not verify-full: the snakeoil certificate names the host it was made on.
    let mut trusting = test_settings();
    let root = server_certificate(&trusting).await;
    with_query(&mut trusting, &format!("sslmode=verify-ca&sslrootcert={root}"));
    let app = TestApp::spawn_with(trusting, 0).await;
    let encrypted: bool = sqlx::query_scalar(SSL_IN_USE).fetch_one(&app.db).await.expect("pg_stat_ssl");
    assert!(encrypted);
    app.stop().await;

    // Without the root the self-signed certificate is unknown, and the app does not start.
    let mut untrusting = test_settings();
    with_query(&mut untrusting, "sslmode=verify-ca");
    let error = App::connect(untrusting.clone()).await.err().expect("an untrusted server is refused");
    let message = format!("{error:#}");
    assert!(message.contains("cannot reach Postgres") && message.contains("sslrootcert"), "{message}");
    assert!(message.contains("UnknownIssuer"), "{message}");
    drop_database(&untrusting.database_url).await;
}

/// A CA and a certificate for 127.0.0.1 signed by it, in a fresh directory.
struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    async fn make() -> Self {
        let dir = data_dir(&format!("tls-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(
            &dir,
            &["req", "-x509", "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=orchestrator test CA"],
            &key,
        )
        .await;
        openssl(&dir, &["req", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"], &key).await;
        std::fs::write(
            dir.join("server.ext"),
            "basicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1\n",
        )
        .expect("the extensions file");
        let sign = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-extfile", "server.ext"];
        openssl(&dir, &["x509", "-req", "-in", "server.csr", "-out", "server.pem"], &sign).await;
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `openssl` in `dir` with `args` then `more`; certificates live one day.
async fn openssl(dir: &Path, args: &[&str], more: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .args(more)
        .args(["-days", "1"])
        .current_dir(dir)
        .output()
        .await
        .expect("openssl is installed");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A redis-server with TLS only (`--port 0`); killed when dropped.
struct TlsRedis {
    url: String,
    _child: Child,
}

impl TlsRedis {
    async fn start(certs: &Certificates) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--tls-cert-file", &certs.path("server.pem"), "--tls-key-file", &certs.path("server.key")])
            .args(["--tls-ca-cert-file", &certs.path("ca.pem"), "--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed");
        let url = format!("rediss://127.0.0.1:{port}");
        let ca = std::fs::read(certs.path("ca.pem")).expect("the CA");
        let client = orchestrator::queue::open_client(&url, Some(ca)).expect("a client");
        eventually(Duration::from_secs(10), "the TLS redis to answer", || async {
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING").query_async::<String>(&mut conn).await.ok()
        })
        .await;
        Self { url, _child: child }
    }
}

#[tokio::test]
async fn redis_over_rediss_with_redis_ca_cert_serves_the_queue() {
    let certs = Certificates::make().await;
    let redis = TlsRedis::start(&certs).await;
    let mut settings = test_settings();
    settings.redis_url = redis.url.clone();
    settings.redis_ca_cert = Some(certs.path("ca.pem").into());
    let app = TestApp::spawn_with(settings.clone(), 1).await;

    // The server has no plain port, so every job went over TLS.
    completes_a_task(&app).await;
    // Cancel notices come over pub/sub, a connection of its own outside the pool: the
    // worker's subscription shows that one trusts the CA too.
    let channel = format!("{}:cancel", app.app.redis_namespace);
    eventually(Duration::from_secs(10), "the worker to subscribe to cancel notices", || async {
        let mut conn = app.app.queue.pool().get().await.ok()?;
        let (_, subscribers): (String, u64) =
            redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(&mut conn).await.ok()?;
        (subscribers > 0).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn rediss_without_the_ca_refuses_to_start_and_says_why() {
    let certs = Certificates::make().await;
    let redis = TlsRedis::start(&certs).await;
    let mut settings = test_settings();
    settings.redis_url = redis.url.clone();

    let error = App::connect(settings.clone()).await.err().expect("an unknown issuer is refused");
    let message = format!("{error:#}");
    assert!(message.contains("over TLS") && message.contains("REDIS_CA_CERT"), "{message}");
    assert!(message.contains("UnknownIssuer"), "{message}");
    drop_database(&settings.database_url).await;
}

#[tokio::test]
async fn redis_ca_cert_with_a_plain_url_or_no_certificate_is_refused_before_connecting() {
    let certs = Certificates::make().await;
    let mut plain = test_settings();
    plain.redis_ca_cert = Some(certs.path("ca.pem").into());
    let message = format!("{:#}", App::connect(plain).await.err().expect("a CA without rediss:// is refused"));
    assert!(message.contains("REDIS_CA_CERT") && message.contains("rediss://"), "{message}");

    let mut not_pem = test_settings();
    not_pem.redis_url = "rediss://127.0.0.1:1".into();
    not_pem.redis_ca_cert = Some(certs.path("server.ext").into());
    let message = format!("{:#}", App::connect(not_pem).await.err().expect("a file without a certificate is refused"));
    assert!(message.contains("no PEM certificate"), "{message}");
}
