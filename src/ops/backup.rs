//! Backups and restores. SQLite: `VACUUM INTO`, a consistent copy taken while Cedar serves
//! (one read transaction). PostgreSQL: `pg_dump --format=custom` (one snapshot), restored
//! with `pg_restore`. The password goes to the tools through `PGPASSWORD`, never on their
//! command line. A restore goes into an empty database unless forced, then migrates.
//! Rotation keeps 7 daily, 4 weekly and 12 monthly backups. See `docs/operations.md`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use chrono::{Datelike, NaiveDateTime, Utc};

use crate::config::{DatabaseUrl, Settings};
use crate::db::Db;
use crate::scheduling::lesson_pages;

/// The first bytes of each kind of backup file.
const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";
const PG_DUMP_MAGIC: &[u8] = b"PGDMP";

/// What a backup wrote.
#[derive(Debug, Clone)]
pub struct Backup {
    pub path: PathBuf,
    pub bytes: u64,
}

/// `cedar-YYYYMMDD-HHMMSS.sqlite` or `.pgdump`: sortable, and what rotation reads.
fn file_name(db: &Db, at: NaiveDateTime) -> String {
    let extension = match db {
        Db::Sqlite(_) => "sqlite",
        Db::Postgres(_) => "pgdump",
    };
    format!("cedar-{}.{extension}", at.format("%Y%m%d-%H%M%S"))
}

/// Backs the database up to `to`: a new file, or into `to` when it is a directory (named by
/// the time). Never overwrites.
pub async fn backup(settings: &Settings, db: &Db, to: &Path) -> anyhow::Result<Backup> {
    let path = if to.is_dir() { to.join(file_name(db, Utc::now().naive_utc())) } else { to.to_owned() };
    if path.exists() {
        bail!("{} exists; a backup never overwrites", path.display());
    }
    let partial = path.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    match (db, &settings.database_url) {
        (Db::Sqlite(pool), _) => {
            let target = partial.to_str().context("the backup path is not UTF-8")?;
            sqlx::query("VACUUM INTO $1").bind(target).execute(pool).await.context("VACUUM INTO")?;
        }
        (Db::Postgres(_), DatabaseUrl::Postgres(url)) => {
            let (url, password) = split_password(url)?;
            let mut command = tokio::process::Command::new("pg_dump");
            command
                .args(["--format=custom", "--no-owner", "--no-privileges", "--file"])
                .arg(&partial)
                .arg("--dbname")
                .arg(url);
            run(command, password.as_deref(), "pg_dump").await?;
        }
        _ => bail!("the database URL does not match the connection"),
    }
    // Only a complete file gets the final name.
    std::fs::rename(&partial, &path).with_context(|| format!("naming {}", path.display()))?;
    let bytes = std::fs::metadata(&path)?.len();
    Ok(Backup { path, bytes })
}

/// Restores `from` into the configured database. Refuses a database that already holds
/// Cedar's tables unless `force` (then what is there is replaced), and a backup of the other
/// backend. Migrates afterwards (a backup from an older Cedar).
pub async fn restore(settings: &Settings, from: &Path, force: bool) -> anyhow::Result<()> {
    let mut head = [0u8; 16];
    {
        use std::io::Read;
        let mut file = std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
        let n = file.read(&mut head)?;
        if n < PG_DUMP_MAGIC.len() {
            bail!("{} is not a Cedar backup", from.display());
        }
    }
    let target = Target::inspect(settings).await?;
    match &settings.database_url {
        DatabaseUrl::Sqlite(path) => {
            if !head.starts_with(SQLITE_MAGIC) {
                bail!("{} is not a SQLite backup (a PostgreSQL dump restores into PostgreSQL only)", from.display());
            }
            if target.occupied && !force {
                bail!(
                    "{} already holds Cedar's tables; restore into an empty database, or pass --force",
                    path.display()
                );
            }
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            let staged = path.with_extension("restoring");
            std::fs::copy(from, &staged).context("copying the backup")?;
            std::fs::rename(&staged, path)?;
        }
        DatabaseUrl::Postgres(url) => {
            if !head.starts_with(PG_DUMP_MAGIC) {
                bail!("{} is not a pg_dump custom-format backup", from.display());
            }
            if target.occupied && !force {
                bail!("the database already holds Cedar's tables; restore into an empty database, or pass --force");
            }
            let (url, password) = split_password(url)?;
            let mut command = tokio::process::Command::new("pg_restore");
            command.args(["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction"]);
            if target.occupied {
                command.args(["--clean", "--if-exists"]);
            }
            command.arg("--dbname").arg(url).arg(from);
            run(command, password.as_deref(), "pg_restore").await?;
        }
    }
    let db = Db::connect(settings).await?;
    db.prepare(settings.supabase.is_some()).await?;
    if let Some(handed_out) = target.handed_out {
        lesson_pages::continue_row_versions_after(&db, handed_out).await?;
    }
    db.close().await;
    Ok(())
}

/// What the database a restore replaces holds, read over one connection.
#[derive(Default)]
struct Target {
    /// Cedar's tables (replacing them needs `--force`).
    occupied: bool,
    /// The lessons' last version number (`scheduling::lesson_pages`: a running Cedar checks
    /// kept pages against the numbers handed out so far).
    handed_out: Option<i64>,
}

impl Target {
    async fn inspect(settings: &Settings) -> anyhow::Result<Self> {
        if let DatabaseUrl::Sqlite(path) = &settings.database_url
            && !path.exists()
        {
            return Ok(Self::default());
        }
        let db = Db::connect(settings).await?;
        let target = Self::read(&db).await;
        db.close().await;
        target
    }

    async fn read(db: &Db) -> anyhow::Result<Self> {
        let tables: i64 = match db {
            Db::Sqlite(pool) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
                )
                .fetch_one(pool)
                .await?
            }
            Db::Postgres(pool) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema()")
                    .fetch_one(pool)
                    .await?
            }
        };
        Ok(Self { occupied: tables > 0, handed_out: lesson_pages::last_row_version(db).await? })
    }
}

/// The URL without its password, and the password (for `PGPASSWORD`).
fn split_password(raw: &str) -> anyhow::Result<(String, Option<String>)> {
    let mut url = url::Url::parse(raw).context("DATABASE_URL is not a URL")?;
    let password = url.password().map(|p| {
        url::form_urlencoded::parse(format!("p={p}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
    });
    let _ = url.set_password(None);
    Ok((url.to_string(), password))
}

async fn run(mut command: tokio::process::Command, password: Option<&str>, tool: &str) -> anyhow::Result<()> {
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let output =
        command.output().await.with_context(|| format!("running {tool} (install the PostgreSQL client tools)"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!("{tool} failed ({}): {}", output.status, stderr.trim());
    }
    Ok(())
}

/// Which of the backups (by the time in their names) rotation keeps: the newest of each of
/// the last 7 days, 4 ISO weeks and 12 months that have one.
pub fn keep(times: &[NaiveDateTime]) -> BTreeSet<NaiveDateTime> {
    let mut sorted: Vec<NaiveDateTime> = times.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let mut kept = BTreeSet::new();
    let mut pick = |key: &dyn Fn(&NaiveDateTime) -> (i32, u32), limit: usize| {
        let mut seen = Vec::new();
        for t in &sorted {
            let k = key(t);
            if !seen.contains(&k) {
                if seen.len() == limit {
                    break;
                }
                seen.push(k);
                kept.insert(*t);
            }
        }
    };
    pick(&|t| (t.year(), t.ordinal()), 7);
    pick(&|t| (t.iso_week().year(), t.iso_week().week()), 4);
    pick(&|t| (t.year(), t.month()), 12);
    kept
}

/// Deletes the backups in `dir` that rotation does not keep; returns the removed paths.
pub fn rotate(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let stamp = name.strip_prefix("cedar-").and_then(|rest| rest.split('.').next()).unwrap_or_default();
        if let Ok(at) = NaiveDateTime::parse_from_str(stamp, "%Y%m%d-%H%M%S")
            && (name.ends_with(".sqlite") || name.ends_with(".pgdump"))
        {
            found.push((at, path));
        }
    }
    let kept = keep(&found.iter().map(|(at, _)| *at).collect::<Vec<_>>());
    let mut removed = Vec::new();
    for (at, path) in found {
        if !kept.contains(&at) {
            std::fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// The scheduled backup (`CEDAR_BACKUP_DIR`): a new file, then rotation.
pub async fn scheduled(state: &crate::app::AppState) -> anyhow::Result<()> {
    let Some(dir) = &state.settings.operations.backup_dir else { return Ok(()) };
    std::fs::create_dir_all(dir)?;
    let made = backup(&state.settings, &state.db, dir).await?;
    let removed = rotate(dir)?;
    metrics::gauge!("backup_last_success_timestamp_seconds").set(Utc::now().timestamp() as f64);
    metrics::gauge!("backup_last_size_bytes").set(made.bytes as f64);
    tracing::info!(path = %made.path.display(), bytes = made.bytes, removed = removed.len(), "backup written");
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, NaiveDate};

    use super::*;

    #[test]
    fn rotation_keeps_seven_days_four_weeks_and_twelve_months() {
        let start = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap().and_hms_opt(2, 30, 0).unwrap();
        // Two a day for 500 days.
        let times: Vec<NaiveDateTime> = (0..1000).map(|i| start + Duration::hours(12 * i)).collect();
        let kept = keep(&times);
        let newest = *times.last().unwrap();
        assert!(kept.contains(&newest));
        let days: BTreeSet<_> = kept.iter().filter(|t| newest - **t < Duration::days(7)).collect();
        assert_eq!(days.len(), 7, "the newest of each of the last 7 days");
        let months: BTreeSet<_> = kept.iter().map(|t| (t.year(), t.month())).collect();
        assert_eq!(months.len(), 12, "{kept:?}");
        assert!(kept.len() <= 7 + 4 + 12);
        // Keeping is stable: rotating what was kept keeps it all.
        assert_eq!(keep(&kept.iter().copied().collect::<Vec<_>>()), kept);
    }

    #[test]
    fn passwords_leave_the_url_for_pgpassword() {
        let (url, password) = split_password("postgres://cedar:s%40cret@db:5432/cedar").unwrap();
        assert_eq!(url, "postgres://cedar@db:5432/cedar");
        assert_eq!(password.as_deref(), Some("s@cret"));
    }
}
