//! Tells the integration tests whether PostgreSQL was asked for: with `TEST_DATABASE_URL`
//! set at build time the `postgres::` variants run; without it they are reported as ignored
//! (with the reason) instead of passing without having run.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=TEST_DATABASE_URL");
    println!("cargo::rustc-check-cfg=cfg(cedar_postgres_tests)");
    if std::env::var("TEST_DATABASE_URL").is_ok_and(|url| !url.is_empty()) {
        println!("cargo::rustc-cfg=cedar_postgres_tests");
    }
}
