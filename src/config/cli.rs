//! The command line: subcommands and their own flags. The settings every subcommand shares
//! are declared in `sources.rs`.

use clap::{Args, Parser, Subcommand};

use super::SettingsArgs;

const LONG_ABOUT: &str = "\
Cedar: the backend of a small music school, in one binary.

Runs with no set-up on an embedded SQLite database (in CEDAR_DATA_DIR); set DATABASE_URL to a
postgres:// URL for production. Every setting below can be given as a flag, as the environment
variable shown, or as a key in cedar.toml (the variable's name in lower case without the CEDAR_
prefix, e.g. `data_dir = \"/var/lib/cedar\"`). Flags win over variables, variables over the file.";

#[derive(Debug, Parser)]
#[command(name = "cedar", version, about = "Backend of a small music school", long_about = LONG_ABOUT)]
pub struct Cli {
    #[command(flatten)]
    pub settings: SettingsArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (and, unless --no-worker, the background worker); migrations run first.
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the OpenAPI document (JSON) and exit.
    Openapi,
    /// Load a realistic demo school (idempotent) and print its logins.
    Demo,
    /// Run background jobs only (any number of these may share one PostgreSQL database).
    Worker,
    /// Administration tasks.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Back the database up to a file (or into a directory, named by the time): SQLite with
    /// `VACUUM INTO` while serving, PostgreSQL with `pg_dump`.
    Backup(BackupArgs),
    /// Restore a backup into the configured database (empty unless --force), then migrate.
    Restore(RestoreArgs),
    /// Exit 0 when Cedar at URL answers 200 (the container health check; no curl needed).
    Healthcheck(HealthcheckArgs),
    /// Optimize a weekly timetable (schedule-opt format v1): the solution JSON on stdout, a
    /// one-line summary on stderr; bad input exits with status 2.
    Optimize(OptimizeArgs),
}

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// What to ask.
    #[arg(long, default_value = "http://127.0.0.1:8000/ready")]
    pub url: String,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The backup file to write, or a directory to write `cedar-YYYYMMDD-HHMMSS.*` into.
    #[arg(long)]
    pub to: std::path::PathBuf,
    /// After writing into a directory, keep only 7 daily, 4 weekly and 12 monthly backups.
    #[arg(long)]
    pub rotate: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file (`cedar backup` output).
    #[arg(long)]
    pub from: std::path::PathBuf,
    /// Replace a database that already holds Cedar's tables.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct OptimizeArgs {
    /// The instance file (`cedar-schedule-opt/1`, see docs/optimizer.md).
    pub instance: std::path::PathBuf,
    /// Wall-clock cap in seconds (the iteration budget normally ends the search first).
    #[arg(long, default_value_t = 30.0)]
    pub time_limit: f64,
    /// Seed of the search: the same seed, limits and threads give the same solution.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Most active students whose weekday, start or teacher may change (room changes are free).
    #[arg(long)]
    pub max_moves: Option<usize>,
    /// Searches run side by side, one core each.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Search steps per thread (about 5 million a second on one core of a small server)
    /// [default: 180 × students^2.5, between 2 and 140 million].
    #[arg(long)]
    pub iterations: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an admin account (the first one, typically). Migrates the database first.
    Create(AdminCreateArgs),
}

#[derive(Debug, Args)]
pub struct AdminCreateArgs {
    /// The admin's email address (also their sign-in name).
    #[arg(long)]
    pub email: String,
    /// At least 8 characters. Prefer CEDAR_ADMIN_PASSWORD to keep it out of shell history.
    #[arg(long, env = "CEDAR_ADMIN_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CEDAR_ADDR", value_name = "HOST:PORT")]
    pub addr: Option<String>,
    /// Serve the API only; run background jobs in separate `cedar worker` processes.
    #[arg(long)]
    pub no_worker: bool,
}
