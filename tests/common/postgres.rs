//! A PostgreSQL for the engine tests: `TIDEMARK_TEST_DATABASE_URL` when set, otherwise
//! a throwaway cluster on a free loopback port in a temporary directory, started once
//! per test binary. Every test gets its own fresh database, so tests run in parallel.
//!
//! Each cluster started here gets a watchdog process that stops it (immediate mode)
//! and removes its directory as soon as the test process is gone, however it ends;
//! statics are never dropped, so nothing inside the test process could do that.
//!
//! Without the PostgreSQL binaries a test prints `SKIPPED: PostgreSQL not installed`
//! and returns early — unless `TIDEMARK_REQUIRE_POSTGRES=1`, when it fails.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tidemark::store::postgres::PostgresOptions;

/// A PostgreSQL server the tests may create databases on.
pub struct Cluster {
    base: PathBuf,
    data: PathBuf,
    port: u16,
    bins: Bins,
    /// Root may not run PostgreSQL: its commands run as the `postgres` user.
    as_postgres: bool,
    /// More `postgres` command-line settings (e.g. TLS).
    extra_options: String,
}

/// A database made for one test.
pub struct TestDatabase {
    pub url: String,
    pub name: String,
}

/// A cluster of a test's own (for tests that stop and restart the server); stopped
/// and removed on drop.
pub struct PrivateCluster {
    cluster: Cluster,
}

#[derive(Clone)]
struct Bins {
    initdb: PathBuf,
    pg_ctl: PathBuf,
}

/// Settings a test engine uses unless it needs others.
pub fn options(url: &str) -> PostgresOptions {
    PostgresOptions {
        url: url.to_string(),
        password: None,
        pool_size: 8,
        connect_timeout: Duration::from_secs(3),
        statement_timeout: Duration::from_secs(5),
    }
}

/// A fresh, empty database; `None` (after printing SKIPPED) when there is no
/// PostgreSQL to test against.
pub async fn database() -> Option<TestDatabase> {
    if let Ok(url) = std::env::var("TIDEMARK_TEST_DATABASE_URL") {
        return Some(create_database(&url).await);
    }
    let cluster = shared_cluster()?;
    Some(create_database(&cluster.url("postgres")).await)
}

/// A cluster of the test's own; `None` when PostgreSQL is missing or the tests run
/// against `TIDEMARK_TEST_DATABASE_URL` (which cannot be restarted from here).
pub fn private_cluster() -> Option<PrivateCluster> {
    if std::env::var_os("TIDEMARK_TEST_DATABASE_URL").is_some() {
        println!("SKIPPED: needs a cluster of its own, not TIDEMARK_TEST_DATABASE_URL");
        return None;
    }
    let bins = find_bins()?;
    Some(PrivateCluster {
        cluster: Cluster::start(bins, |_| String::new()),
    })
}

/// Files of a cluster that accepts only TLS connections.
pub struct TlsFiles {
    /// The CA that signed the server certificate (PEM).
    pub ca: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
    /// The only name in the server certificate (not `127.0.0.1`).
    pub server_name: &'static str,
}

/// A cluster of the test's own that refuses plaintext (`hostssl` only), with a server
/// certificate for [`TlsFiles::server_name`] signed by a fresh CA. `None` when
/// PostgreSQL or openssl is missing.
pub fn private_tls_cluster() -> Option<(PrivateCluster, TlsFiles)> {
    if std::env::var_os("TIDEMARK_TEST_DATABASE_URL").is_some() {
        println!("SKIPPED: needs a cluster of its own, not TIDEMARK_TEST_DATABASE_URL");
        return None;
    }
    let has_openssl = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_openssl {
        println!("SKIPPED: openssl is not installed (needed to make test certificates)");
        return None;
    }
    let bins = find_bins()?;
    const NAME: &str = "db.tidemark.test";
    let cluster = Cluster::start(bins, |cluster| {
        let dir = &cluster.base;
        let sh = |script: &str| {
            run_checked(Command::new("sh").arg("-c").arg(script).current_dir(dir));
        };
        let quiet = ">/dev/null 2>&1";
        for ca in ["ca", "other-ca"] {
            sh(&format!(
                "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout {ca}.key -out {ca}.crt \
                 -subj '/CN=tidemark test {ca}' -addext basicConstraints=critical,CA:TRUE \
                 -addext keyUsage=critical,keyCertSign,cRLSign {quiet}"
            ));
        }
        sh(&format!(
            "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
             -subj '/CN={NAME}' {quiet} && \
             printf 'subjectAltName=DNS:{NAME}\\nextendedKeyUsage=serverAuth\\n' > server.ext && \
             openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
             -out server.crt -extfile server.ext {quiet}"
        ));
        if cluster.as_postgres {
            run_checked(
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(dir.join("server.key"))
                    .arg(dir.join("server.crt")),
            );
        }
        run_checked(Command::new("chmod").arg("600").arg(dir.join("server.key")));
        let hba = dir.join("pg_hba.conf");
        std::fs::write(
            &hba,
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .expect("write pg_hba.conf");
        format!(
            "-c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key \
             -c hba_file={dir}/pg_hba.conf",
            dir = dir.display()
        )
    });
    let files = TlsFiles {
        ca: cluster.base.join("ca.crt"),
        other_ca: cluster.base.join("other-ca.crt"),
        server_name: NAME,
    };
    Some((PrivateCluster { cluster }, files))
}

impl PrivateCluster {
    pub async fn database(&self) -> TestDatabase {
        create_database(&self.cluster.url("postgres")).await
    }

    /// Stop the server at once, as a crash or failover would (`-m immediate`).
    pub fn stop(&self) {
        self.cluster.stop();
    }

    /// Start it again on the same port and data.
    pub fn start(&self) {
        self.cluster.run_server();
    }

    pub fn url(&self, dbname: &str) -> String {
        self.cluster.url(dbname)
    }

    /// The cluster's Unix socket directory (plaintext admin access even when TCP
    /// takes TLS only).
    pub fn socket_dir(&self) -> &Path {
        &self.cluster.base
    }

    pub fn port(&self) -> u16 {
        self.cluster.port
    }

    /// A fresh database created over the Unix socket (which skips `hostssl`); its name.
    pub async fn database_over_socket(&self) -> String {
        create_named_database(&format!(
            "host={} port={} user=postgres dbname=postgres",
            self.cluster.base.display(),
            self.cluster.port
        ))
        .await
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.cluster.stop();
        let _ = std::fs::remove_dir_all(&self.cluster.base);
    }
}

fn shared_cluster() -> Option<&'static Cluster> {
    static SHARED: OnceLock<Option<Cluster>> = OnceLock::new();
    SHARED
        .get_or_init(|| find_bins().map(|bins| Cluster::start(bins, |_| String::new())))
        .as_ref()
}

impl Cluster {
    /// `initdb` a new cluster in a temporary directory, let `setup` prepare files and
    /// return more server settings, and start it.
    fn start(bins: Bins, setup: impl FnOnce(&Cluster) -> String) -> Cluster {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir().join(format!(
            "tidemark-pg-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).expect("create the cluster directory");
        let as_postgres = running_as_root();
        if as_postgres {
            run_checked(Command::new("chown").arg("postgres:postgres").arg(&base));
        }
        let data = base.join("data");
        let mut cluster = Cluster {
            base,
            data,
            port: 0,
            bins,
            as_postgres,
            extra_options: String::new(),
        };
        spawn_watchdog(&cluster);
        let mut initdb = cluster.command(&cluster.bins.initdb.clone());
        initdb.arg("-D").arg(&cluster.data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        ]);
        cluster.run_logged(&mut initdb, "initdb");
        cluster.extra_options = setup(&cluster);
        // A port can be taken between finding it free and the server binding it.
        for attempt in 0..5 {
            cluster.port = free_port();
            if cluster.try_run_server() {
                return cluster;
            }
            eprintln!(
                "PostgreSQL did not start on port {} (attempt {attempt})",
                cluster.port
            );
        }
        panic!(
            "PostgreSQL would not start; see {}",
            cluster.base.join("server.log").display()
        );
    }

    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{dbname}?sslmode=disable",
            self.port
        )
    }

    fn run_server(&self) {
        assert!(
            self.try_run_server(),
            "PostgreSQL did not restart; see {}",
            self.base.join("server.log").display()
        );
    }

    fn try_run_server(&self) -> bool {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off \
             -c max_connections=200 -c shared_buffers=32MB {}",
            self.port,
            self.base.display(),
            self.extra_options
        );
        let mut start = self.command(&self.bins.pg_ctl);
        start
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.base.join("server.log"))
            .args(["-o", &options, "-w", "-t", "30", "start"]);
        self.run(&mut start, "pg_ctl start")
    }

    fn stop(&self) {
        let mut stop = self.command(&self.bins.pg_ctl);
        stop.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"]);
        self.run(&mut stop, "pg_ctl stop");
    }

    /// `program` run as the cluster's owner.
    fn command(&self, program: &Path) -> Command {
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    /// Run with output into a file in the cluster directory (never the test's own
    /// pipes, which a server left holding them would keep open); whether it succeeded.
    fn run(&self, command: &mut Command, what: &str) -> bool {
        let out_path = self.base.join(format!("{}.out", what.replace(' ', "-")));
        let out = std::fs::File::create(&out_path).expect("create a log file");
        let err = out.try_clone().expect("clone a log file handle");
        let status = command
            .current_dir(&self.base)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        if !status.success() {
            let output = std::fs::read_to_string(&out_path).unwrap_or_default();
            eprintln!("{what} failed ({status}):\n{output}");
        }
        status.success()
    }

    fn run_logged(&self, command: &mut Command, what: &str) {
        assert!(self.run(command, what), "{what} failed; see above");
    }
}

/// Stop the cluster and remove its directory once this process has exited.
// Never waited for: it is meant to outlive this process.
#[allow(clippy::zombie_processes)]
fn spawn_watchdog(cluster: &Cluster) {
    let stop = if cluster.as_postgres {
        format!(
            "runuser -u postgres -- '{}' -D '{}' -m immediate -w stop",
            cluster.bins.pg_ctl.display(),
            cluster.data.display()
        )
    } else {
        format!(
            "'{}' -D '{}' -m immediate -w stop",
            cluster.bins.pg_ctl.display(),
            cluster.data.display()
        )
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.2; done; \
         if [ -f '{data}/postmaster.pid' ]; then {stop}; fi; rm -rf '{base}'",
        pid = std::process::id(),
        data = cluster.data.display(),
        base = cluster.base.display(),
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the cluster watchdog");
}

/// The PostgreSQL binaries, from PATH or Debian's /usr/lib/postgresql/*/bin.
fn find_bins() -> Option<Bins> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    if let Ok(versions) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut found: Vec<PathBuf> = versions
            .filter_map(Result::ok)
            .map(|v| v.path().join("bin"))
            .collect();
        found.sort();
        dirs.extend(found.into_iter().rev());
    }
    let find = |name: &str| dirs.iter().map(|d| d.join(name)).find(|p| p.is_file());
    match (find("initdb"), find("pg_ctl")) {
        (Some(initdb), Some(pg_ctl)) => Some(Bins { initdb, pg_ctl }),
        _ => {
            if std::env::var("TIDEMARK_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!(
                    "TIDEMARK_REQUIRE_POSTGRES=1 but initdb/pg_ctl are not on PATH nor in \
                     /usr/lib/postgresql/*/bin: install PostgreSQL (apt-get install postgresql)"
                );
            }
            println!("SKIPPED: PostgreSQL not installed (no initdb/pg_ctl on PATH)");
            eprintln!("SKIPPED: PostgreSQL not installed (no initdb/pg_ctl on PATH)");
            None
        }
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run_checked(command: &mut Command) {
    let status = command.status().expect("run a setup command");
    assert!(status.success(), "{command:?} failed: {status}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free loopback port")
}

/// `CREATE DATABASE t_<random>` through `admin_url`; the URL of the new database.
async fn create_database(admin_url: &str) -> TestDatabase {
    let name = create_named_database(admin_url).await;
    TestDatabase {
        url: with_dbname(admin_url, &name),
        name,
    }
}

/// `CREATE DATABASE t_<random>` through `admin` (a URL or key=value settings); its name.
async fn create_named_database(admin: &str) -> String {
    let name = format!("t_{:016x}", random());
    let (client, connection) = tokio_postgres::connect(admin, tokio_postgres::NoTls)
        .await
        .expect("connect to the test server as admin");
    let driver = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    drop(client);
    let _ = driver.await;
    name
}

/// `url` with its database name replaced by `dbname`.
pub fn with_dbname(url: &str, dbname: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{dbname}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.finish()
}
