//! Tells the integration tests whether PostgreSQL was asked for: with `TEST_DATABASE_URL`
//! set at build time the `postgres::` variants run; without it they are reported as ignored
//! (with the reason) instead of passing without having run.
//!
//! Release builds of the binary also lay out their functions in the order of
//! `build/cedar.order` (written by `bench/order.sh`): what serving runs sits together, so
//! fewer pages of code stay resident (docs/performance.md). `CEDAR_NO_SYMBOL_ORDER=1` turns
//! it off; so does a target whose linker is not LLD.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=TEST_DATABASE_URL");
    println!("cargo::rustc-check-cfg=cfg(cedar_postgres_tests)");
    if std::env::var("TEST_DATABASE_URL").is_ok_and(|url| !url.is_empty()) {
        println!("cargo::rustc-cfg=cedar_postgres_tests");
    }
    order_symbols();
}

fn order_symbols() {
    println!("cargo::rerun-if-changed=build/cedar.order");
    println!("cargo::rerun-if-env-changed=CEDAR_NO_SYMBOL_ORDER");
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    // Rust links x86_64 Linux binaries with its own LLD (since 1.90); GNU ld has no such option.
    let lld = env("TARGET") == "x86_64-unknown-linux-gnu";
    let order = std::path::Path::new(&env("CARGO_MANIFEST_DIR")).join("build/cedar.order");
    if env("PROFILE") == "release" && lld && env("CEDAR_NO_SYMBOL_ORDER").is_empty() && order.exists() {
        println!("cargo::rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", order.display());
        // Names of functions that changed since the list was written are skipped quietly.
        println!("cargo::rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
