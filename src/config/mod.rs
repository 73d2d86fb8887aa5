//! Settings: command-line flags, then environment variables, then an optional `cedar.toml`,
//! then defaults. Every setting is validated once at start-up; a bad one stops the process
//! with a single line naming the setting and what is wrong.
//!
//! Adding a setting: declare it once in `sources.rs` (flag, variable, file key and help come
//! from that line), add its typed field to [`Settings`] (or a group below), and validate it in
//! [`Settings::merge`] or the group's `resolve_*`.

mod cli;
mod resolve;
mod sources;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

pub use cli::{AdminCommand, AdminCreateArgs, Cli, Command, OptimizeArgs, ServeArgs};
pub use sources::{RawValue, SettingsArgs};

/// A start-up error: always names the setting.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting}: {message}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub message: String,
}

fn bad(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError { setting, message: message.into() }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A secret setting: never shown by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(********)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignupPolicy {
    Open,
    Invite,
}

/// How bearer tokens are verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupabaseAuth {
    /// Project URL without a trailing slash; JWKS at URL/auth/v1/.well-known/jwks.json.
    pub url: Option<String>,
    pub jwt_secret: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    Any,
    None,
    List(Vec<String>),
}

/// Where the data lives. Its `Debug` and `Display` never show a password.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DatabaseUrl {
    /// The URL with any password replaced, safe to log.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
            Self::Postgres(raw) => match url::Url::parse(raw) {
                Ok(mut parsed) => {
                    if parsed.password().is_some() {
                        let _ = parsed.set_password(Some("********"));
                    }
                    parsed.to_string()
                }
                Err(_) => "postgres://(unparseable)".to_owned(),
            },
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: DatabaseUrl,
    pub db_max_connections: u32,
    pub timezone: chrono_tz::Tz,
    pub log_level: String,
    pub log_format: LogFormat,
    pub request_timeout: Duration,
    pub body_limit_bytes: usize,
    pub cors_origins: CorsOrigins,
    pub shutdown_grace: Duration,
    pub public_url: String,
    /// The bearer token `/metrics` requires, when set.
    pub metrics_token: Option<Secret>,
    pub access_token_ttl: Duration,
    pub jwt_key_file: PathBuf,
    pub signup: SignupPolicy,
    /// `Some` when tokens come from Supabase Auth instead of Cedar's built-in auth.
    pub supabase: Option<SupabaseAuth>,
    /// Requests per user (or per IP when anonymous) per minute; 0 = no limit.
    pub rate_limit_per_minute: u32,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub auth_rate_per_ip: u32,
    pub auth_rate_per_account: u32,
    pub makeup_notice_hours: u32,
    pub makeup_expiry_days: u32,
    pub makeup_cap: u32,
    pub worker_concurrency: usize,
    pub ai: AiSettings,
    pub email: EmailSettings,
    pub billing: BillingSettings,
    pub enrollment_auto_approve: bool,
    pub payment_issue_auto_resolve: bool,
    pub payment_issue_overdue_days: u32,
    pub retention: Retention,
    pub progress: ProgressSettings,
    pub schedule_review: ScheduleReviewSettings,
    pub school_year: SchoolYearSettings,
    pub operations: OperationsSettings,
}

/// Backups and the owner's notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationsSettings {
    pub backup_dir: Option<PathBuf>,
    pub backup_cron: String,
    /// `None`: no digest.
    pub owner_digest_cron: Option<String>,
    pub owner_alerts: bool,
    pub webhook_failure_alert: u32,
}

/// How the timetable follows the school year: terms, closures, substitutes, email links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchoolYearSettings {
    /// GoTrue's `SITE_URL`: where email links land after verifying.
    pub site_url: Option<String>,
    pub closure_action: ClosureAction,
    pub closure_makeup_credit: bool,
    /// Bill a substitute's lesson at the substitute's rate (else the student's own teacher's).
    pub bill_substitute_rate: bool,
    pub reenrollment_notice_days: u32,
    pub email_link_days: u32,
    pub etransfer_email: Option<String>,
}

/// What a closure or time off added after booking does to the lessons it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosureAction {
    Cancel,
    Reschedule,
}

/// The weekly schedule review: when it runs and what the optimizer may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleReviewSettings {
    /// When the weekly run starts (cron, school time) for the coming week.
    pub cron: String,
    /// Active students whose day, time or teacher a proposal may change.
    pub max_moves: usize,
    pub time_limit_secs: u64,
    /// The most a teacher teaches in a day (a teacher already above it keeps that day's load).
    pub teacher_max_minutes_per_day: u32,
    /// Length of a waitlisted student's lesson when no request says.
    pub waitlist_lesson_minutes: u32,
    /// The school's open hours; lessons of students without recorded times go inside them.
    pub school_hours: Vec<crate::time::WeeklyWindow>,
}

/// How long each kind of personal data is kept (the `privacy.retention` purge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Bodies of sent or dead emails.
    pub outbox_days: u32,
    /// What AI steps were given and answered, once their run has finished.
    pub ai_days: u32,
    /// The audit trail.
    pub audit_years: u32,
    /// Personal data of a family with no current student, lesson, open invoice or new invoice.
    pub former_family_years: u32,
}

/// Progress reports: when they are drafted and who needs attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressSettings {
    pub monthly: bool,
    pub min_attendance_percent: i64,
    pub drop_points: i64,
    pub missed_in_a_row: i64,
    pub note_weeks: i64,
    pub gap_days: i64,
    /// Seconds an approved report waits for its siblings' before the family's email goes out.
    pub send_delay_secs: u32,
}

/// Money rules and Stripe.
#[derive(Debug, Clone)]
pub struct BillingSettings {
    /// (name, rate in thousandths of a percent: 13 % = 13_000).
    pub tax: Option<(String, i64)>,
    pub payment_terms_days: u32,
    pub sibling_discount_percent: u32,
    pub registration_fee_cents: crate::domain::Cents,
    pub late_fee_cents: crate::domain::Cents,
    pub late_fee_after_days: u32,
    pub billing_day: u32,
    pub stripe: Option<StripeAccount>,
    pub stripe_webhook_secret: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct StripeAccount {
    pub secret_key: Secret,
    pub api_base: String,
}

/// How email is sent.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    pub transport: EmailTransport,
    /// `Name <address>`.
    pub from: String,
    pub reply_to: Option<String>,
    pub lesson_reminder_hours: u32,
    pub digest_minutes: u32,
}

#[derive(Debug, Clone)]
pub enum EmailTransport {
    /// `.eml` files in this directory.
    File(PathBuf),
    Smtp {
        url: Secret,
    },
    Brevo {
        api_key: Secret,
        base_url: String,
    },
    SendGrid {
        api_key: Secret,
        base_url: String,
    },
}

impl EmailTransport {
    pub fn name(&self) -> &'static str {
        match self {
            Self::File(_) => "file",
            Self::Smtp { .. } => "smtp",
            Self::Brevo { .. } => "brevo",
            Self::SendGrid { .. } => "sendgrid",
        }
    }
}

/// Which AI providers workflows may use, and what they may spend.
#[derive(Debug, Clone)]
pub struct AiSettings {
    /// External providers in the order they are tried; the offline provider always follows.
    pub providers: Vec<AiProviderKind>,
    pub openai: ProviderAccount,
    pub anthropic: ProviderAccount,
    pub timeout: Duration,
    pub max_retries: u32,
    /// Millionths of a Canadian dollar per calendar month (school time zone).
    pub monthly_budget_micros: i64,
    pub run_token_cap: i64,
    /// Most the runs about one family may spend per month (millionths of CAD).
    pub family_monthly_micros: i64,
    /// CAD per million tokens: (model, input, output).
    pub prices: Vec<(String, f64, f64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AiProviderKind {
    OpenAi,
    Anthropic,
}

impl AiProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
        }
    }
}

/// How to reach one external provider.
#[derive(Debug, Clone)]
pub struct ProviderAccount {
    pub api_key: Option<Secret>,
    pub base_url: String,
    pub model: String,
}

impl AiSettings {
    /// CAD per million tokens (input, output) for `model`; unknown models cost the dearest
    /// listed price, so the budget errs on the safe side.
    pub fn price(&self, model: &str) -> (f64, f64) {
        if let Some((_, input, output)) = self.prices.iter().find(|(m, _, _)| m == model) {
            return (*input, *output);
        }
        self.prices.iter().fold((0.0, 0.0), |(i, o), (_, input, output)| (i.max(*input), o.max(*output)))
    }
}
