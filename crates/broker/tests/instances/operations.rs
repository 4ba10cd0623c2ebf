//! Running the broker on PostgreSQL: `migrate` and `check` against empty, current, newer and
//! unreachable databases, and TLS to the database, verified or refused.

use std::process::{Command, Output};

use crate::harness::{BIN, Instances};
use crate::postgres::{Cluster, cluster};
use crate::support::demo_policies;

/// `countersign-broker --store-url URL <args>`, with the demo policies.
fn broker(url: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!("policies = \"{}\"\n", demo_policies().display()),
    )
    .unwrap();
    Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["--store-url", url])
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The failure of a command that must fail, with its message.
fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "succeeded: {}{}",
        stdout(out),
        stderr(out)
    );
    stderr(out)
}

#[test]
fn migrate_and_check_report_the_schema_and_a_newer_one_is_refused() {
    let url = cluster().new_database();
    let name = &Cluster::database_of(&url);

    let older = failed(&broker(&url, &["check"]));
    assert!(
        older.contains("version 0, older than this broker's"),
        "{older}"
    );

    let migrated = broker(&url, &["migrate"]);
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    assert!(stdout(&migrated).contains("migrated the schema from version 0 to"));
    let again = broker(&url, &["migrate"]);
    assert!(
        stdout(&again).contains("the schema is up to date"),
        "{}",
        stdout(&again)
    );
    let ok = broker(&url, &["check"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).starts_with("ok: PostgreSQL store reachable"));

    // A newer broker has been here.
    cluster().psql(name, "UPDATE schema_version SET version = version + 1");
    let newer = failed(&broker(&url, &["check"]));
    assert!(newer.contains("newer than this broker's"), "{newer}");
    let refused = failed(&broker(&url, &["migrate"]));
    assert!(refused.contains("newer than this broker's"), "{refused}");
    let serve = failed(&broker(&url, &["serve", "--listen", "127.0.0.1:0"]));
    assert!(serve.contains("newer than this broker's"), "{serve}");
}

#[test]
fn an_unreachable_database_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://nobody@127.0.0.1:{port}/none?connect_timeout=2");
    for args in [
        &["check"][..],
        &["migrate"],
        &["serve", "--listen", "127.0.0.1:0"],
    ] {
        let message = failed(&broker(&url, args));
        assert!(
            message.contains("connecting to the database"),
            "{args:?}: {message}"
        );
    }
}

#[test]
fn a_certificate_that_cannot_be_verified_is_refused() {
    let url = cluster().new_database();
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    std::fs::write(
        &other,
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .cert
            .pem(),
    )
    .unwrap();
    let ca = cluster().ca_file();
    let base = url.split("&ssl").next().unwrap();
    let port = cluster().port;
    let database = &Cluster::database_of(&url);
    let refused = [
        // Another authority.
        format!("{base}&sslmode=require&sslrootcert={}", other.display()),
        // The public roots, which do not know a self-signed certificate.
        format!("{base}&sslmode=require"),
        // The default mode takes TLS when offered, and verifies it too.
        base.to_owned(),
        // The right authority, the wrong name.
        format!(
            "host=elsewhere.test hostaddr=127.0.0.1 port={port} user=countersign \
             dbname={database} sslmode=verify-full sslrootcert={}",
            ca.display()
        ),
    ];
    for url in &refused {
        let message = failed(&broker(url, &["check"]));
        assert!(
            message.contains("connecting to the database") && message.contains("certificate"),
            "{url}: {message}"
        );
    }
    let named = format!(
        "host=localhost hostaddr=127.0.0.1 port={port} user=countersign dbname={database} \
         sslmode=require sslrootcert='{}'",
        ca.display()
    );
    for url in [&named, &cluster().plain_url(database)] {
        let out = broker(url, &["migrate"]);
        assert!(out.status.success(), "{url}: {}", stderr(&out));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instances_talk_to_the_database_over_tls() {
    let url = cluster().new_database();
    let database = Cluster::database_of(&url);
    let _instances = Instances::start(url, |_| {}).await;
    let connections = cluster().psql(
        &database,
        "SELECT COUNT(*) || ' ' || bool_and(s.ssl) || ' ' || min(s.version) \
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'countersign-broker'",
    );
    let fields: Vec<&str> = connections.split(' ').collect();
    assert!(
        fields[0].parse::<u32>().unwrap() >= 3,
        "connections: {connections}"
    );
    assert_eq!(&fields[1..], ["true", "TLSv1.3"], "{connections}");
}
