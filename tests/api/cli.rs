//! The `cedar` binary: help, settings errors, migrate, openapi, serve and SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::postgres_url;

fn cedar() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cedar"));
    // Start from a clean slate: no settings leak in from the developer's shell or a cedar.toml.
    for (key, _) in std::env::vars() {
        if key.starts_with("CEDAR_") || key == "DATABASE_URL" {
            command.env_remove(key);
        }
    }
    command.env("CEDAR_CONFIG", "/dev/null");
    command
}

#[test]
fn help_documents_every_setting() {
    let output = cedar().args(["serve", "--help"]).output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for setting in [
        "CEDAR_ADDR",
        "CEDAR_DATA_DIR",
        "DATABASE_URL",
        "CEDAR_DB_MAX_CONNECTIONS",
        "CEDAR_TIMEZONE",
        "CEDAR_LOG_LEVEL",
        "CEDAR_LOG_FORMAT",
        "CEDAR_REQUEST_TIMEOUT_SECS",
        "CEDAR_BODY_LIMIT_BYTES",
        "CEDAR_CORS_ORIGINS",
        "CEDAR_SHUTDOWN_GRACE_SECS",
        "CEDAR_CONFIG",
        "CEDAR_PUBLIC_URL",
        "CEDAR_ACCESS_TOKEN_SECS",
        "CEDAR_JWT_KEY_FILE",
        "CEDAR_SIGNUP",
        "SUPABASE_URL",
        "SUPABASE_JWT_SECRET",
        "CEDAR_AUTH_RATE_PER_IP",
        "CEDAR_AUTH_RATE_PER_ACCOUNT",
        "CEDAR_MAKEUP_NOTICE_HOURS",
        "CEDAR_MAKEUP_EXPIRY_DAYS",
        "CEDAR_MAKEUP_CAP",
        "CEDAR_WORKER_CONCURRENCY",
        "--no-worker",
    ] {
        assert!(help.contains(setting), "serve --help does not mention {setting}");
    }
    let top = String::from_utf8(cedar().arg("--help").output().unwrap().stdout).unwrap();
    for command in ["serve", "migrate", "openapi", "admin", "demo", "worker", "optimize"] {
        assert!(top.contains(command));
    }
}

#[test]
fn bad_setting_stops_startup_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("CEDAR_TIMEZONE", "Mars/Olympus"),
        ("CEDAR_LOG_FORMAT", "xml"),
        ("CEDAR_BODY_LIMIT_BYTES", "huge"),
        ("DATABASE_URL", "mysql://root:hunter2@localhost/cedar"),
    ] {
        let output = cedar()
            .args(["serve", "--addr", "127.0.0.1:0"])
            .env("CEDAR_DATA_DIR", dir.path())
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{var}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(var), "{stderr}");
        assert!(!stderr.contains("hunter2"), "a secret was printed: {stderr}");
    }
    let output = cedar().args(["serve", "--addr", "nowhere"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8(output.stderr).unwrap().contains("CEDAR_ADDR"));
}

#[test]
fn database_password_never_reaches_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let output = cedar()
        .args(["migrate"])
        .env("CEDAR_DATA_DIR", dir.path())
        .env("DATABASE_URL", "postgres://cedar:hunter2@127.0.0.1:1/cedar")
        .env("CEDAR_LOG_LEVEL", "trace")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let all = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(all.contains("127.0.0.1:1"), "error names the database: {all}");
    assert!(!all.contains("hunter2"), "{all}");
}

#[test]
fn migrate_creates_the_sqlite_database_and_is_repeatable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested/data");
    let first = cedar().arg("migrate").env("CEDAR_DATA_DIR", &data).output().unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(data.join("cedar.db").exists());
    let out = String::from_utf8(first.stdout).unwrap();
    assert!(out.contains(" 1 migration(s) applied") || out.contains("applied"), "{out}");
    let second = cedar().arg("migrate").env("CEDAR_DATA_DIR", &data).output().unwrap();
    assert!(second.status.success());
    assert!(String::from_utf8(second.stdout).unwrap().contains(": 0 migration(s) applied"));
}

#[test]
fn openapi_command_prints_the_document() {
    let output = cedar().arg("openapi").output().unwrap();
    assert!(output.status.success());
    let spec: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(spec["paths"]["/ready"].is_object());
    // Every operation declares its path parameters and the answers the shared plumbing gives.
    for (path, item) in spec["paths"].as_object().unwrap() {
        let names: Vec<&str> = path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).collect();
        for (method, operation) in item.as_object().unwrap() {
            let declared: Vec<&str> = operation["parameters"]
                .as_array()
                .map(|ps| ps.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            for name in &names {
                assert!(declared.contains(name), "{method} {path} does not declare {{{name}}}");
            }
            for status in ["400", "429"] {
                assert!(operation["responses"][status].is_object(), "{method} {path} does not document {status}");
            }
            if operation["requestBody"].is_object() {
                assert!(operation["responses"]["422"].is_object(), "{method} {path} does not document 422");
            }
        }
    }
    // Text enums are documented by their wire values.
    assert_eq!(spec["components"]["schemas"]["Language"]["enum"], serde_json::json!(["en", "fr"]));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[expect(clippy::zombie_processes, reason = "the caller owns the child and waits for it")]
fn serve_until_ready(command: &mut Command) -> (std::process::Child, u16) {
    let port = free_port();
    let mut child = command
        .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            stream.write_all(b"GET /ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
            let mut reply = String::new();
            let _ = stream.read_to_string(&mut reply);
            if reply.starts_with("HTTP/1.1 200") {
                return (child, port);
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cedar did not become ready");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn terminate_and_wait(mut child: std::process::Child) -> std::process::ExitStatus {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "cedar did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_on_sqlite_then_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (child, _port) = serve_until_ready(cedar().env("CEDAR_DATA_DIR", dir.path()));
    assert!(terminate_and_wait(child).success());
}

#[test]
#[cfg_attr(not(cedar_postgres_tests), ignore = "set TEST_DATABASE_URL=postgres://… to run it")]
fn serve_on_postgres_when_configured() {
    let admin = postgres_url().expect("TEST_DATABASE_URL is set when this test is built to run");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let database = runtime.block_on(crate::common::TestDatabase::create(crate::common::Backend::Postgres));
    assert!(database.url.as_deref().unwrap().starts_with(&admin[..10]));
    let (child, _port) = serve_until_ready(
        cedar().env("CEDAR_DATA_DIR", database.data_dir.path()).env("DATABASE_URL", database.url.as_deref().unwrap()),
    );
    assert!(terminate_and_wait(child).success());
    drop(database);
}

#[test]
fn admin_create_makes_the_first_admin_and_refuses_weak_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let weak = cedar()
        .args(["admin", "create", "--email", "owner@cedarheights.ca", "--password", "short"])
        .env("CEDAR_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(weak.status.code(), Some(2));
    let stderr = String::from_utf8(weak.stderr).unwrap();
    assert!(stderr.contains("too weak") && stderr.contains("at least 8"), "{stderr}");

    let created = cedar()
        .args(["admin", "create", "--email", "Owner@CedarHeights.ca", "--name", "Owner"])
        .env("CEDAR_DATA_DIR", dir.path())
        .env("CEDAR_ADMIN_PASSWORD", "a-strong-passphrase")
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert!(String::from_utf8(created.stdout).unwrap().contains("created admin owner@cedarheights.ca"));

    let again = cedar()
        .args(["admin", "create", "--email", "owner@cedarheights.ca", "--password", "another-passphrase"])
        .env("CEDAR_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8(again.stderr).unwrap().contains("already exists"));
}

#[test]
fn served_admin_can_sign_in_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let created = cedar()
        .args(["admin", "create", "--email", "owner@cedarheights.ca", "--password", "a-strong-passphrase"])
        .env("CEDAR_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(created.status.success());
    let (child, port) = serve_until_ready(cedar().env("CEDAR_DATA_DIR", dir.path()));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        let client = reqwest::Client::new();
        let session: serde_json::Value = client
            .post(format!("http://127.0.0.1:{port}/auth/v1/token?grant_type=password"))
            .json(&serde_json::json!({"email": "owner@cedarheights.ca", "password": "a-strong-passphrase"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = session["access_token"].as_str().expect("a token").to_owned();
        client.get(format!("http://127.0.0.1:{port}/v1/users")).bearer_auth(token).send().await.unwrap().status()
    });
    assert!(terminate_and_wait(child).success());
    assert_eq!(status, 200);
    // The signing key was created owner-only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("jwt-es256.pem")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}
