//! SPIRE's docs write PostgreSQL connection strings in libpq's keyword form;
//! sigil opens a real PostgreSQL with one. Needs `SIGIL_TEST_POSTGRES_URL`
//! (required in CI, a skip elsewhere).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[tokio::test]
async fn opens_postgres_with_a_spire_style_keyword_connection_string() {
    let Ok(url) = std::env::var("SIGIL_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("CI").is_err(),
            "SIGIL_TEST_POSTGRES_URL must be set in CI"
        );
        eprintln!("skipping: SIGIL_TEST_POSTGRES_URL not set");
        return;
    };
    // postgres://user:pass@host:port/db -> keyword form.
    let rest = url.split_once("://").unwrap().1;
    let (creds, hostdb) = rest.split_once('@').unwrap();
    let (user, pass) = creds.split_once(':').unwrap();
    let (hostport, db) = hostdb.split_once('/').unwrap();
    let db = db.split('?').next().unwrap();
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "5432"));
    let keyword = format!(
        "dbname={db} user={user} password='{pass}' host={host} port={port} sslmode=disable"
    );
    let ds = sigil_datastore::open("postgres", &keyword)
        .await
        .expect("keyword form opens");
    ds.ping().await.unwrap();
    ds.close().await;
}
