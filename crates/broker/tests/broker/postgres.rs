//! A real PostgreSQL cluster for the tests, started on first use with `initdb` and `pg_ctl`
//! from Debian's `postgresql` package, in a temporary directory on a free loopback port; never
//! a system cluster. It speaks TLS with a self-signed certificate, which the clients verify.
//! Each test gets a database of its own. A watchdog stops the cluster and removes its directory
//! when the test process ends, however it ends.
//!
//! `COUNTERSIGN_TEST_STORE=postgres` runs the broker suite on it; `COUNTERSIGN_PG_BIN` names
//! the directory of `initdb` and `pg_ctl` when they are not in `/usr/lib/postgresql/*/bin`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The cluster's superuser (trust authentication on loopback only).
const USER: &str = "countersign";

/// Which store the broker suite runs on.
pub fn postgres_under_test() -> bool {
    std::env::var("COUNTERSIGN_TEST_STORE").is_ok_and(|s| s == "postgres")
}

pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    /// The user the server runs as: PostgreSQL refuses to run as root.
    run_as: Option<&'static str>,
    databases: AtomicU32,
    /// Outlives this process on purpose: it is what stops the cluster after it.
    watchdog: Option<std::process::Child>,
}

/// The process's cluster, started on first use.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(Cluster::start)
}

impl Cluster {
    /// A cluster of its own (for a test that stops and starts it).
    pub fn start() -> Self {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let bin = bin_dir();
        let run_as = is_root().then_some("postgres");
        let dir = std::env::temp_dir().join(format!(
            "countersign-pg-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        // Left by an earlier process that had this id and was killed with its watchdog.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(user) = run_as {
            let status = Command::new("chown")
                .args([user, dir.to_str().unwrap()])
                .status()
                .unwrap();
            assert!(status.success(), "chown {}", dir.display());
        }
        let data = dir.join("data");
        let cluster = Self {
            dir,
            port: 0,
            bin,
            run_as,
            databases: AtomicU32::new(0),
            watchdog: None,
        };
        let out = cluster
            .command("initdb")
            .args(["-D", data.to_str().unwrap(), "-U", USER, "-A", "trust"])
            .args(["-E", "UTF8", "--locale=C", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.write_certificate();
        let mut cluster = cluster;
        cluster.port = free_port();
        cluster.pg_ctl_start();
        cluster.watchdog = Some(cluster.watchdog());
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The certificate the clients trust: the server's own, self-signed, for `localhost` and
    /// `127.0.0.1`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A self-signed certificate and its key in the data directory (readable by the server
    /// alone, as PostgreSQL requires), and the certificate again as [`Self::ca_file`].
    fn write_certificate(&self) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        std::fs::write(self.ca_file(), cert.cert.pem()).unwrap();
        let (crt, key) = (
            self.data().join("server.crt"),
            self.data().join("server.key"),
        );
        std::fs::write(&crt, cert.cert.pem()).unwrap();
        std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        if let Some(user) = self.run_as {
            let status = Command::new("chown")
                .arg(user)
                .args([&crt, &key])
                .status()
                .unwrap();
            assert!(status.success(), "chown the server's certificate");
        }
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(path);
                command
            }
            None => Command::new(path),
        }
    }

    /// Starts the server (again, after [`Self::stop`]) and waits until it accepts connections.
    pub fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' \
             -c max_connections=400 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c ssl=on -c ssl_cert_file=server.crt \
             -c ssl_key_file=server.key",
            self.port
        );
        let out = self
            .command("pg_ctl")
            .args([
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                self.data().to_str().unwrap(),
            ])
            .args(["-l", self.dir.join("server.log").to_str().unwrap()])
            .args(["-o", &options])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server (fast: open connections are cut, committed work is kept).
    pub fn stop(&self) {
        let out = self
            .command("pg_ctl")
            .args([
                "stop",
                "-w",
                "-m",
                "fast",
                "-D",
                self.data().to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the cluster and removes its directory once this process has gone.
    fn watchdog(&self) -> std::process::Child {
        let stop = format!(
            "{}{} stop -m immediate -D {}",
            self.run_as
                .map(|u| format!("runuser -u {u} -- "))
                .unwrap_or_default(),
            self.bin.join("pg_ctl").display(),
            self.data().display()
        );
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// A URL for `database`: over TLS, the server's certificate verified.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{USER}@127.0.0.1:{}/{database}?connect_timeout=5&sslmode=verify-full&sslrootcert={}",
            self.port,
            self.ca_file().display()
        )
    }

    /// The database a URL of [`Self::url`] names.
    pub fn database_of(url: &str) -> String {
        let path = url.split('?').next().unwrap();
        path.rsplit('/').next().unwrap().to_owned()
    }

    /// A URL for `database` in clear.
    pub fn plain_url(&self, database: &str) -> String {
        format!(
            "postgres://{USER}@127.0.0.1:{}/{database}?connect_timeout=5&sslmode=disable",
            self.port
        )
    }

    /// A new, empty database; its URL.
    pub fn new_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("test_{n}");
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Runs SQL with `psql`; its output (unaligned, tuples only).
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(psql(&self.bin))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-d", &self.url(database), "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

/// The directory of `initdb` and `pg_ctl`: `COUNTERSIGN_PG_BIN`, or the newest
/// `/usr/lib/postgresql/*/bin`.
fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("COUNTERSIGN_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL is not installed: run scripts/setup.sh (Debian's postgresql package)")
}

fn psql(bin: &Path) -> PathBuf {
    let local = bin.join("psql");
    if local.exists() {
        local
    } else {
        PathBuf::from("psql")
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
