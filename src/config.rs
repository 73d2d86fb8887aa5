//! Settings: command-line flags, then environment variables, then an optional `cedar.toml`,
//! then defaults. Every setting is validated once at start-up; a bad one stops the process
//! with a single line naming the setting and what is wrong.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

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

/// Settings shared by every subcommand. Kept as raw strings so that validation can name the
/// setting in its own words, whichever source it came from.
#[derive(Debug, Args, Default)]
pub struct SettingsArgs {
    /// Optional settings file (TOML). Default: ./cedar.toml when it exists.
    #[arg(long, env = "CEDAR_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for the SQLite database, keys and file outputs [default: ./cedar-data].
    #[arg(long, env = "CEDAR_DATA_DIR", global = true, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Database: unset = SQLite file in the data dir; `sqlite://PATH` or `postgres://…`.
    #[arg(long, env = "DATABASE_URL", global = true, value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Most connections in the database pool [default: 10 for PostgreSQL, 8 for SQLite].
    #[arg(long, env = "CEDAR_DB_MAX_CONNECTIONS", global = true, value_name = "N")]
    pub db_max_connections: Option<String>,
    /// The school's time zone (IANA name); governs recurrence and schedules [default: America/Toronto].
    #[arg(long, env = "CEDAR_TIMEZONE", global = true, value_name = "ZONE")]
    pub timezone: Option<String>,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives [default: info].
    #[arg(long, env = "CEDAR_LOG_LEVEL", global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "CEDAR_LOG_FORMAT", global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Seconds a request may run before it is abandoned with 503 [default: 30].
    #[arg(long, env = "CEDAR_REQUEST_TIMEOUT_SECS", global = true, value_name = "SECS")]
    pub request_timeout_secs: Option<String>,
    /// Largest request body in bytes; larger ones get 413 [default: 1048576].
    #[arg(long, env = "CEDAR_BODY_LIMIT_BYTES", global = true, value_name = "BYTES")]
    pub body_limit_bytes: Option<String>,
    /// Origins allowed by CORS: `*`, a comma-separated list of origins, or `none` [default: *].
    #[arg(long, env = "CEDAR_CORS_ORIGINS", global = true, value_name = "ORIGINS")]
    pub cors_origins: Option<String>,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT [default: 30].
    #[arg(long, env = "CEDAR_SHUTDOWN_GRACE_SECS", global = true, value_name = "SECS")]
    pub shutdown_grace_secs: Option<String>,
    /// The URL clients use to reach Cedar; the issuer of its tokens is URL/auth/v1
    /// [default: http://CEDAR_ADDR].
    #[arg(long, env = "CEDAR_PUBLIC_URL", global = true, value_name = "URL")]
    pub public_url: Option<String>,
    /// Lifetime of access tokens issued by Cedar, in seconds [default: 3600].
    #[arg(long, env = "CEDAR_ACCESS_TOKEN_SECS", global = true, value_name = "SECS")]
    pub access_token_secs: Option<String>,
    /// PEM file (PKCS#8, P-256) with Cedar's token signing key; created with mode 0600 when
    /// missing [default: DATA_DIR/jwt-es256.pem].
    #[arg(long, env = "CEDAR_JWT_KEY_FILE", global = true, value_name = "FILE")]
    pub jwt_key_file: Option<String>,
    /// Who may create a parent account: `open` (anyone may sign up) or `invite` (admins
    /// create accounts) [default: open].
    #[arg(long, env = "CEDAR_SIGNUP", global = true, value_name = "POLICY")]
    pub signup: Option<String>,
    /// Supabase project URL: accept Supabase Auth tokens, verified with the project's JWKS;
    /// Cedar's own /auth/v1 sign-in is then off.
    #[arg(long, env = "SUPABASE_URL", global = true, value_name = "URL")]
    pub supabase_url: Option<String>,
    /// Supabase legacy JWT secret: accept HS256 tokens signed with it.
    #[arg(long, env = "SUPABASE_JWT_SECRET", global = true, value_name = "SECRET", hide_env_values = true)]
    pub supabase_jwt_secret: Option<String>,
    /// Sign-in and sign-up attempts allowed per client IP per minute [default: 30].
    #[arg(long, env = "CEDAR_AUTH_RATE_PER_IP", global = true, value_name = "N")]
    pub auth_rate_per_ip: Option<String>,
    /// Sign-in attempts allowed per account per 15 minutes [default: 10].
    #[arg(long, env = "CEDAR_AUTH_RATE_PER_ACCOUNT", global = true, value_name = "N")]
    pub auth_rate_per_account: Option<String>,
    /// Hours of notice a student cancellation needs to earn a makeup credit [default: 24].
    #[arg(long, env = "CEDAR_MAKEUP_NOTICE_HOURS", global = true, value_name = "HOURS")]
    pub makeup_notice_hours: Option<String>,
    /// Days a makeup credit stays valid [default: 90].
    #[arg(long, env = "CEDAR_MAKEUP_EXPIRY_DAYS", global = true, value_name = "DAYS")]
    pub makeup_expiry_days: Option<String>,
    /// Jobs one worker process runs at once [default: 4].
    #[arg(long, env = "CEDAR_WORKER_CONCURRENCY", global = true, value_name = "N")]
    pub worker_concurrency: Option<String>,
    /// Most unused makeup credits a student may hold [default: 4].
    #[arg(long, env = "CEDAR_MAKEUP_CAP", global = true, value_name = "N")]
    pub makeup_cap: Option<String>,
    /// AI providers to try, in order, comma-separated: openai, anthropic, offline. `offline`
    /// (Cedar's own templates and rules) is always the last resort [default: the providers
    /// with an API key, then offline].
    #[arg(long, env = "CEDAR_AI_PROVIDERS", global = true, value_name = "LIST")]
    pub ai_providers: Option<String>,
    /// OpenAI API key; enables the openai provider.
    #[arg(long, env = "OPENAI_API_KEY", global = true, value_name = "KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,
    /// Any OpenAI-compatible server (Ollama, vLLM, llama.cpp) [default: https://api.openai.com/v1].
    #[arg(long, env = "OPENAI_BASE_URL", global = true, value_name = "URL")]
    pub openai_base_url: Option<String>,
    /// OpenAI model [default: gpt-4o-mini].
    #[arg(long, env = "CEDAR_OPENAI_MODEL", global = true, value_name = "MODEL")]
    pub openai_model: Option<String>,
    /// Anthropic API key; enables the anthropic provider.
    #[arg(long, env = "ANTHROPIC_API_KEY", global = true, value_name = "KEY", hide_env_values = true)]
    pub anthropic_api_key: Option<String>,
    /// Anthropic API base URL [default: https://api.anthropic.com].
    #[arg(long, env = "ANTHROPIC_BASE_URL", global = true, value_name = "URL")]
    pub anthropic_base_url: Option<String>,
    /// Anthropic model [default: claude-haiku-4-5].
    #[arg(long, env = "CEDAR_ANTHROPIC_MODEL", global = true, value_name = "MODEL")]
    pub anthropic_model: Option<String>,
    /// Seconds one AI request may take [default: 20].
    #[arg(long, env = "CEDAR_AI_TIMEOUT_SECS", global = true, value_name = "SECS")]
    pub ai_timeout_secs: Option<String>,
    /// Retries per provider on 408/409/429/5xx/529 before the next provider [default: 2].
    #[arg(long, env = "CEDAR_AI_MAX_RETRIES", global = true, value_name = "N")]
    pub ai_max_retries: Option<String>,
    /// Monthly budget for external AI in Canadian dollars; once spent, workflows use the
    /// offline provider and ask for review [default: 20].
    #[arg(long, env = "CEDAR_AI_MONTHLY_BUDGET_CAD", global = true, value_name = "CAD")]
    pub ai_monthly_budget_cad: Option<String>,
    /// Most AI tokens (input + output) one workflow run may use [default: 20000].
    #[arg(long, env = "CEDAR_AI_RUN_TOKEN_CAP", global = true, value_name = "TOKENS")]
    pub ai_run_token_cap: Option<String>,
    /// Prices in CAD per million tokens, `model=input/output` comma-separated; a model not
    /// listed is charged at the dearest listed price
    /// [default: gpt-4o-mini=0.21/0.84,claude-haiku-4-5=1.40/7.00].
    #[arg(long, env = "CEDAR_AI_PRICES", global = true, value_name = "LIST")]
    pub ai_prices: Option<String>,
    /// How email leaves: `file` (.eml files in DATA_DIR/outbox), `smtp`, `brevo` or `sendgrid`
    /// [default: file].
    #[arg(long, env = "CEDAR_EMAIL_TRANSPORT", global = true, value_name = "TRANSPORT")]
    pub email_transport: Option<String>,
    /// Sender of every email, `Name <address>` [default: Cedar Heights Music Academy <office@cedarheights.example>].
    #[arg(long, env = "CEDAR_EMAIL_FROM", global = true, value_name = "MAILBOX")]
    pub email_from: Option<String>,
    /// Reply-To of every email [default: the sender].
    #[arg(long, env = "CEDAR_EMAIL_REPLY_TO", global = true, value_name = "MAILBOX")]
    pub email_reply_to: Option<String>,
    /// SMTP server: `smtp://user:pass@host:587?tls=required` (STARTTLS), `smtps://…:465` (TLS),
    /// or `smtp://host:25` (plain, for a local relay).
    #[arg(long, env = "CEDAR_SMTP_URL", global = true, value_name = "URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// Brevo API key (transport `brevo`).
    #[arg(long, env = "BREVO_API_KEY", global = true, value_name = "KEY", hide_env_values = true)]
    pub brevo_api_key: Option<String>,
    /// Brevo API base [default: https://api.brevo.com].
    #[arg(long, env = "BREVO_API_BASE", global = true, value_name = "URL")]
    pub brevo_api_base: Option<String>,
    /// SendGrid API key (transport `sendgrid`).
    #[arg(long, env = "SENDGRID_API_KEY", global = true, value_name = "KEY", hide_env_values = true)]
    pub sendgrid_api_key: Option<String>,
    /// SendGrid API base [default: https://api.sendgrid.com].
    #[arg(long, env = "SENDGRID_API_BASE", global = true, value_name = "URL")]
    pub sendgrid_api_base: Option<String>,
    /// Hours before a lesson its reminder goes out [default: 24].
    #[arg(long, env = "CEDAR_LESSON_REMINDER_HOURS", global = true, value_name = "HOURS")]
    pub lesson_reminder_hours: Option<String>,
    /// New messages are gathered into one email per recipient per this many minutes [default: 5].
    #[arg(long, env = "CEDAR_MESSAGE_DIGEST_MINUTES", global = true, value_name = "MINUTES")]
    pub message_digest_minutes: Option<String>,
    /// Sales tax on invoices, `NAME=PERCENT` (e.g. `HST=13`); unset: no tax.
    #[arg(long, env = "CEDAR_TAX", global = true, value_name = "NAME=PERCENT")]
    pub tax: Option<String>,
    /// Days between an invoice and its due date [default: 14].
    #[arg(long, env = "CEDAR_PAYMENT_TERMS_DAYS", global = true, value_name = "DAYS")]
    pub payment_terms_days: Option<String>,
    /// Percent off tuition for the second and later students of a family [default: 10].
    #[arg(long, env = "CEDAR_SIBLING_DISCOUNT_PERCENT", global = true, value_name = "PERCENT")]
    pub sibling_discount_percent: Option<String>,
    /// One-time fee on a family's first invoice, in cents [default: 0 = none].
    #[arg(long, env = "CEDAR_REGISTRATION_FEE_CENTS", global = true, value_name = "CENTS")]
    pub registration_fee_cents: Option<String>,
    /// Late fee in cents, added once to an invoice unpaid this many days after its due date;
    /// `CENTS@DAYS` [default: 0@15 = no late fee].
    #[arg(long, env = "CEDAR_LATE_FEE", global = true, value_name = "CENTS@DAYS")]
    pub late_fee: Option<String>,
    /// Day of the month the monthly billing run bills the month [default: 1].
    #[arg(long, env = "CEDAR_BILLING_DAY", global = true, value_name = "DAY")]
    pub billing_day: Option<String>,
    /// Stripe secret key; enables card payments.
    #[arg(long, env = "STRIPE_SECRET_KEY", global = true, value_name = "KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<String>,
    /// Stripe API base [default: https://api.stripe.com].
    #[arg(long, env = "STRIPE_API_BASE", global = true, value_name = "URL")]
    pub stripe_api_base: Option<String>,
    /// Signing secret of the Stripe webhook endpoint (`whsec_…`).
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", global = true, value_name = "SECRET", hide_env_values = true)]
    pub stripe_webhook_secret: Option<String>,
    /// Approve enrollment requests without review when every check passes and the best slot is
    /// at the preferred time exactly (`true`/`false`) [default: false].
    #[arg(long, env = "CEDAR_ENROLLMENT_AUTO_APPROVE", global = true, value_name = "BOOL")]
    pub enrollment_auto_approve: Option<String>,
}

/// Keys accepted in `cedar.toml`; unknown keys are an error so typos do not go unnoticed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    addr: Option<String>,
    data_dir: Option<String>,
    database_url: Option<String>,
    db_max_connections: Option<u32>,
    timezone: Option<String>,
    log_level: Option<String>,
    log_format: Option<String>,
    request_timeout_secs: Option<u64>,
    body_limit_bytes: Option<u64>,
    cors_origins: Option<String>,
    shutdown_grace_secs: Option<u64>,
    public_url: Option<String>,
    access_token_secs: Option<u64>,
    jwt_key_file: Option<String>,
    signup: Option<String>,
    supabase_url: Option<String>,
    supabase_jwt_secret: Option<String>,
    auth_rate_per_ip: Option<u64>,
    auth_rate_per_account: Option<u64>,
    makeup_notice_hours: Option<u64>,
    makeup_expiry_days: Option<u64>,
    makeup_cap: Option<u64>,
    worker_concurrency: Option<u64>,
    ai_providers: Option<String>,
    openai_api_key: Option<String>,
    openai_base_url: Option<String>,
    openai_model: Option<String>,
    anthropic_api_key: Option<String>,
    anthropic_base_url: Option<String>,
    anthropic_model: Option<String>,
    ai_timeout_secs: Option<u64>,
    ai_max_retries: Option<u64>,
    ai_monthly_budget_cad: Option<String>,
    ai_run_token_cap: Option<u64>,
    ai_prices: Option<String>,
    email_transport: Option<String>,
    email_from: Option<String>,
    email_reply_to: Option<String>,
    smtp_url: Option<String>,
    brevo_api_key: Option<String>,
    brevo_api_base: Option<String>,
    sendgrid_api_key: Option<String>,
    sendgrid_api_base: Option<String>,
    lesson_reminder_hours: Option<u64>,
    message_digest_minutes: Option<u64>,
    tax: Option<String>,
    payment_terms_days: Option<u64>,
    sibling_discount_percent: Option<u64>,
    registration_fee_cents: Option<u64>,
    late_fee: Option<String>,
    billing_day: Option<u64>,
    stripe_secret_key: Option<String>,
    stripe_api_base: Option<String>,
    stripe_webhook_secret: Option<String>,
    enrollment_auto_approve: Option<bool>,
}

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
    pub access_token_ttl: Duration,
    pub jwt_key_file: PathBuf,
    pub signup: SignupPolicy,
    /// `Some` when tokens come from Supabase Auth instead of Cedar's built-in auth.
    pub supabase: Option<SupabaseAuth>,
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
}

/// Money rules and Stripe.
#[derive(Debug, Clone)]
pub struct BillingSettings {
    /// (name, rate in thousandths of a percent: 13 % = 13_000).
    pub tax: Option<(String, i64)>,
    pub payment_terms_days: u32,
    pub sibling_discount_percent: u32,
    pub registration_fee_cents: i64,
    pub late_fee_cents: i64,
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

impl Settings {
    /// Settings for tests and embedding: defaults, with the given data dir and database.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>, database_url: Option<&str>) -> Result<Self, ConfigError> {
        let args = SettingsArgs {
            data_dir: Some(data_dir.into().to_string_lossy().into_owned()),
            database_url: database_url.map(str::to_owned),
            ..SettingsArgs::default()
        };
        Self::merge(&args, None, FileSettings::default())
    }

    /// Merges flags/environment (already in `args`, by clap) over the settings file over
    /// defaults, and validates the result.
    pub fn resolve(args: &SettingsArgs, addr: Option<&str>) -> Result<Self, ConfigError> {
        let file = load_file(args.config.as_deref())?;
        Self::merge(args, addr, file)
    }

    fn merge(args: &SettingsArgs, addr: Option<&str>, file: FileSettings) -> Result<Self, ConfigError> {
        let pick = |flag: &Option<String>, from_file: Option<String>| flag.clone().or(from_file);

        let ai = resolve_ai(args, &file)?;
        let billing = resolve_billing(args, &file)?;
        let email = resolve_email(
            args,
            &file,
            &pick(&args.data_dir, file.data_dir.clone()).unwrap_or_else(|| "./cedar-data".into()),
        )?;
        let addr_raw = addr.map(str::to_owned).or(file.addr).unwrap_or_else(|| "127.0.0.1:8000".into());
        let addr: SocketAddr = addr_raw.parse().map_err(|_| {
            bad("CEDAR_ADDR", format!("{addr_raw:?} is not a socket address (expected host:port, e.g. 127.0.0.1:8000)"))
        })?;

        let data_dir = PathBuf::from(pick(&args.data_dir, file.data_dir).unwrap_or_else(|| "./cedar-data".into()));
        if data_dir.as_os_str().is_empty() {
            return Err(bad("CEDAR_DATA_DIR", "must not be empty"));
        }

        let database_url = match pick(&args.database_url, file.database_url).filter(|s| !s.trim().is_empty()) {
            None => DatabaseUrl::Sqlite(data_dir.join("cedar.db")),
            Some(raw) => parse_database_url(&raw)?,
        };

        let default_pool = match database_url {
            DatabaseUrl::Sqlite(_) => 8,
            DatabaseUrl::Postgres(_) => 10,
        };
        let db_max_connections = match pick(&args.db_max_connections, file.db_max_connections.map(|n| n.to_string())) {
            None => default_pool,
            Some(raw) => parse_range("CEDAR_DB_MAX_CONNECTIONS", &raw, 1, 1000)? as u32,
        };

        let tz_raw = pick(&args.timezone, file.timezone).unwrap_or_else(|| "America/Toronto".into());
        let timezone: chrono_tz::Tz = tz_raw.parse().map_err(|_| {
            bad("CEDAR_TIMEZONE", format!("{tz_raw:?} is not an IANA time zone name (e.g. America/Toronto)"))
        })?;

        let log_level = pick(&args.log_level, file.log_level).unwrap_or_else(|| "info".into());
        tracing_subscriber::EnvFilter::try_new(&log_level)
            .map_err(|e| bad("CEDAR_LOG_LEVEL", format!("{log_level:?} is not a log filter: {e}")))?;

        let log_format = match pick(&args.log_format, file.log_format).as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(bad("CEDAR_LOG_FORMAT", format!("{other:?} is not one of: text, json")));
            }
        };

        let request_timeout = Duration::from_secs(
            match pick(&args.request_timeout_secs, file.request_timeout_secs.map(|n| n.to_string())) {
                None => 30,
                Some(raw) => parse_range("CEDAR_REQUEST_TIMEOUT_SECS", &raw, 1, 3600)?,
            },
        );
        let body_limit_bytes = match pick(&args.body_limit_bytes, file.body_limit_bytes.map(|n| n.to_string())) {
            None => 1024 * 1024,
            Some(raw) => parse_range("CEDAR_BODY_LIMIT_BYTES", &raw, 1024, 1 << 30)? as usize,
        };
        let cors_origins = parse_cors(pick(&args.cors_origins, file.cors_origins).as_deref().unwrap_or("*"))?;
        let shutdown_grace = Duration::from_secs(
            match pick(&args.shutdown_grace_secs, file.shutdown_grace_secs.map(|n| n.to_string())) {
                None => 30,
                Some(raw) => parse_range("CEDAR_SHUTDOWN_GRACE_SECS", &raw, 0, 3600)?,
            },
        );

        let public_url = match pick(&args.public_url, file.public_url) {
            None => format!("http://{addr}"),
            Some(raw) => {
                let parsed = url::Url::parse(raw.trim())
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
                match parsed {
                    Some(_) => raw.trim().trim_end_matches('/').to_owned(),
                    None => {
                        return Err(bad("CEDAR_PUBLIC_URL", format!("{raw:?} is not an http(s) URL")));
                    }
                }
            }
        };
        let access_token_ttl =
            Duration::from_secs(match pick(&args.access_token_secs, file.access_token_secs.map(|n| n.to_string())) {
                None => 3600,
                Some(raw) => parse_range("CEDAR_ACCESS_TOKEN_SECS", &raw, 60, 7 * 86_400)?,
            });
        let jwt_key_file = pick(&args.jwt_key_file, file.jwt_key_file)
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("jwt-es256.pem"));
        let signup = match pick(&args.signup, file.signup).as_deref().unwrap_or("open") {
            "open" => SignupPolicy::Open,
            "invite" => SignupPolicy::Invite,
            other => {
                return Err(bad("CEDAR_SIGNUP", format!("{other:?} is not one of: open, invite")));
            }
        };
        let supabase_url = match pick(&args.supabase_url, file.supabase_url).filter(|s| !s.trim().is_empty()) {
            None => None,
            Some(raw) => match url::Url::parse(raw.trim()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    Some(raw.trim().trim_end_matches('/').to_owned())
                }
                _ => {
                    return Err(bad("SUPABASE_URL", format!("{raw:?} is not a URL like https://xyz.supabase.co")));
                }
            },
        };
        let supabase_jwt_secret = match pick(&args.supabase_jwt_secret, file.supabase_jwt_secret) {
            Some(raw) if raw.len() < 32 => {
                return Err(bad(
                    "SUPABASE_JWT_SECRET",
                    "is shorter than 32 characters; copy it whole from the Supabase dashboard",
                ));
            }
            other => other.map(Secret::new),
        };
        let supabase = (supabase_url.is_some() || supabase_jwt_secret.is_some())
            .then_some(SupabaseAuth { url: supabase_url, jwt_secret: supabase_jwt_secret });
        let auth_rate_per_ip = match pick(&args.auth_rate_per_ip, file.auth_rate_per_ip.map(|n| n.to_string())) {
            None => 30,
            Some(raw) => parse_range("CEDAR_AUTH_RATE_PER_IP", &raw, 1, 1_000_000)? as u32,
        };
        let auth_rate_per_account =
            match pick(&args.auth_rate_per_account, file.auth_rate_per_account.map(|n| n.to_string())) {
                None => 10,
                Some(raw) => parse_range("CEDAR_AUTH_RATE_PER_ACCOUNT", &raw, 1, 1_000_000)? as u32,
            };

        let makeup_notice_hours = match pick(&args.makeup_notice_hours, file.makeup_notice_hours.map(|n| n.to_string()))
        {
            None => 24,
            Some(raw) => parse_range("CEDAR_MAKEUP_NOTICE_HOURS", &raw, 0, 24 * 30)? as u32,
        };
        let makeup_expiry_days = match pick(&args.makeup_expiry_days, file.makeup_expiry_days.map(|n| n.to_string())) {
            None => 90,
            Some(raw) => parse_range("CEDAR_MAKEUP_EXPIRY_DAYS", &raw, 1, 3650)? as u32,
        };
        let makeup_cap = match pick(&args.makeup_cap, file.makeup_cap.map(|n| n.to_string())) {
            None => 4,
            Some(raw) => parse_range("CEDAR_MAKEUP_CAP", &raw, 0, 100)? as u32,
        };

        let worker_concurrency = match pick(&args.worker_concurrency, file.worker_concurrency.map(|n| n.to_string())) {
            None => 4,
            Some(raw) => parse_range("CEDAR_WORKER_CONCURRENCY", &raw, 1, 256)? as usize,
        };

        let enrollment_auto_approve = match args.enrollment_auto_approve.as_deref().map(str::trim) {
            None => file.enrollment_auto_approve.unwrap_or(false),
            Some("true" | "1" | "yes") => true,
            Some("false" | "0" | "no" | "") => false,
            Some(other) => {
                return Err(bad("CEDAR_ENROLLMENT_AUTO_APPROVE", format!("{other:?} is not true or false")));
            }
        };
        Ok(Self {
            enrollment_auto_approve,
            billing,
            email,
            ai,
            worker_concurrency,
            makeup_notice_hours,
            makeup_expiry_days,
            makeup_cap,
            public_url,
            access_token_ttl,
            jwt_key_file,
            signup,
            supabase,
            auth_rate_per_ip,
            auth_rate_per_account,
            addr,
            data_dir,
            database_url,
            db_max_connections,
            timezone,
            log_level,
            log_format,
            request_timeout,
            body_limit_bytes,
            cors_origins,
            shutdown_grace,
        })
    }
}

fn resolve_ai(args: &SettingsArgs, file: &FileSettings) -> Result<AiSettings, ConfigError> {
    let pick = |flag: &Option<String>, from_file: &Option<String>| {
        flag.clone().or_else(|| from_file.clone()).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
    };
    let account = |key: Option<String>,
                   url_setting: &'static str,
                   url: Option<String>,
                   default_url: &str,
                   model: Option<String>,
                   default_model: &str| {
        let base_url = url.unwrap_or_else(|| default_url.to_owned());
        match url::Url::parse(&base_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => return Err(bad(url_setting, format!("{base_url:?} is not an http(s) URL"))),
        }
        Ok(ProviderAccount {
            api_key: key.map(Secret::new),
            base_url: base_url.trim_end_matches('/').to_owned(),
            model: model.unwrap_or_else(|| default_model.to_owned()),
        })
    };
    let openai = account(
        pick(&args.openai_api_key, &file.openai_api_key),
        "OPENAI_BASE_URL",
        pick(&args.openai_base_url, &file.openai_base_url),
        "https://api.openai.com/v1",
        pick(&args.openai_model, &file.openai_model),
        "gpt-4o-mini",
    )?;
    let anthropic = account(
        pick(&args.anthropic_api_key, &file.anthropic_api_key),
        "ANTHROPIC_BASE_URL",
        pick(&args.anthropic_base_url, &file.anthropic_base_url),
        "https://api.anthropic.com",
        pick(&args.anthropic_model, &file.anthropic_model),
        "claude-haiku-4-5",
    )?;
    let providers = match pick(&args.ai_providers, &file.ai_providers) {
        None => {
            let mut list = Vec::new();
            if openai.api_key.is_some() {
                list.push(AiProviderKind::OpenAi);
            }
            if anthropic.api_key.is_some() {
                list.push(AiProviderKind::Anthropic);
            }
            list
        }
        Some(raw) => {
            let mut list = Vec::new();
            for name in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (kind, account) = match name {
                    "openai" => (AiProviderKind::OpenAi, &openai),
                    "anthropic" => (AiProviderKind::Anthropic, &anthropic),
                    "offline" => continue,
                    other => {
                        return Err(bad(
                            "CEDAR_AI_PROVIDERS",
                            format!("{other:?} is not one of: openai, anthropic, offline"),
                        ));
                    }
                };
                if account.api_key.is_none() {
                    let key = if kind == AiProviderKind::OpenAi { "OPENAI_API_KEY" } else { "ANTHROPIC_API_KEY" };
                    return Err(bad("CEDAR_AI_PROVIDERS", format!("{name} is listed but {key} is not set")));
                }
                if !list.contains(&kind) {
                    list.push(kind);
                }
            }
            list
        }
    };
    let number = |flag: &Option<String>, from_file: Option<u64>| flag.clone().or(from_file.map(|n| n.to_string()));
    let timeout = Duration::from_secs(match number(&args.ai_timeout_secs, file.ai_timeout_secs) {
        None => 20,
        Some(raw) => parse_range("CEDAR_AI_TIMEOUT_SECS", &raw, 1, 600)?,
    });
    let max_retries = match number(&args.ai_max_retries, file.ai_max_retries) {
        None => 2,
        Some(raw) => parse_range("CEDAR_AI_MAX_RETRIES", &raw, 0, 10)? as u32,
    };
    let monthly_budget_micros = match pick(&args.ai_monthly_budget_cad, &file.ai_monthly_budget_cad) {
        None => 20_000_000,
        Some(raw) => match raw.parse::<f64>() {
            Ok(cad) if (0.0..=1_000_000.0).contains(&cad) => (cad * 1_000_000.0).round() as i64,
            _ => {
                return Err(bad(
                    "CEDAR_AI_MONTHLY_BUDGET_CAD",
                    format!("{raw:?} is not an amount in dollars, e.g. 20 or 12.50"),
                ));
            }
        },
    };
    let run_token_cap = match number(&args.ai_run_token_cap, file.ai_run_token_cap) {
        None => 20_000,
        Some(raw) => parse_range("CEDAR_AI_RUN_TOKEN_CAP", &raw, 0, 10_000_000)? as i64,
    };
    let prices_raw = pick(&args.ai_prices, &file.ai_prices)
        .unwrap_or_else(|| "gpt-4o-mini=0.21/0.84,claude-haiku-4-5=1.40/7.00".to_owned());
    let mut prices = Vec::new();
    for entry in prices_raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parsed = entry.split_once('=').and_then(|(model, rates)| {
            let (input, output) = rates.split_once('/')?;
            let (input, output) = (input.trim().parse::<f64>().ok()?, output.trim().parse::<f64>().ok()?);
            (input >= 0.0 && output >= 0.0 && !model.trim().is_empty())
                .then(|| (model.trim().to_owned(), input, output))
        });
        match parsed {
            Some(price) => prices.push(price),
            None => {
                return Err(bad(
                    "CEDAR_AI_PRICES",
                    format!("{entry:?} is not model=input/output, e.g. gpt-4o-mini=0.21/0.84"),
                ));
            }
        }
    }
    Ok(AiSettings { providers, openai, anthropic, timeout, max_retries, monthly_budget_micros, run_token_cap, prices })
}

fn resolve_email(args: &SettingsArgs, file: &FileSettings, data_dir: &str) -> Result<EmailSettings, ConfigError> {
    let pick = |flag: &Option<String>, from_file: &Option<String>| {
        flag.clone().or_else(|| from_file.clone()).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
    };
    let mailbox = |setting: &'static str, raw: String| -> Result<String, ConfigError> {
        raw.parse::<lettre::message::Mailbox>()
            .map(|_| raw.clone())
            .map_err(|_| bad(setting, format!("{raw:?} is not an address like Office <office@example.ca>")))
    };
    let from = mailbox(
        "CEDAR_EMAIL_FROM",
        pick(&args.email_from, &file.email_from)
            .unwrap_or_else(|| "Cedar Heights Music Academy <office@cedarheights.example>".into()),
    )?;
    let reply_to =
        pick(&args.email_reply_to, &file.email_reply_to).map(|r| mailbox("CEDAR_EMAIL_REPLY_TO", r)).transpose()?;
    let base = |setting: &'static str, raw: Option<String>, default: &str| -> Result<String, ConfigError> {
        let raw = raw.unwrap_or_else(|| default.to_owned());
        match url::Url::parse(&raw) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                Ok(raw.trim_end_matches('/').to_owned())
            }
            _ => Err(bad(setting, format!("{raw:?} is not an http(s) URL"))),
        }
    };
    let transport = match pick(&args.email_transport, &file.email_transport).as_deref().unwrap_or("file") {
        "file" => EmailTransport::File(PathBuf::from(data_dir).join("outbox")),
        "smtp" => {
            let url = pick(&args.smtp_url, &file.smtp_url)
                .ok_or_else(|| bad("CEDAR_SMTP_URL", "is required when CEDAR_EMAIL_TRANSPORT is smtp"))?;
            if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                return Err(bad("CEDAR_SMTP_URL", "must start with smtp:// or smtps://"));
            }
            EmailTransport::Smtp { url: Secret::new(url) }
        }
        "brevo" => EmailTransport::Brevo {
            api_key: Secret::new(
                pick(&args.brevo_api_key, &file.brevo_api_key)
                    .ok_or_else(|| bad("BREVO_API_KEY", "is required when CEDAR_EMAIL_TRANSPORT is brevo"))?,
            ),
            base_url: base(
                "BREVO_API_BASE",
                pick(&args.brevo_api_base, &file.brevo_api_base),
                "https://api.brevo.com",
            )?,
        },
        "sendgrid" => EmailTransport::SendGrid {
            api_key: Secret::new(
                pick(&args.sendgrid_api_key, &file.sendgrid_api_key)
                    .ok_or_else(|| bad("SENDGRID_API_KEY", "is required when CEDAR_EMAIL_TRANSPORT is sendgrid"))?,
            ),
            base_url: base(
                "SENDGRID_API_BASE",
                pick(&args.sendgrid_api_base, &file.sendgrid_api_base),
                "https://api.sendgrid.com",
            )?,
        },
        other => {
            return Err(bad("CEDAR_EMAIL_TRANSPORT", format!("{other:?} is not one of: file, smtp, brevo, sendgrid")));
        }
    };
    let number = |flag: &Option<String>, from_file: Option<u64>| flag.clone().or(from_file.map(|n| n.to_string()));
    let lesson_reminder_hours = match number(&args.lesson_reminder_hours, file.lesson_reminder_hours) {
        None => 24,
        Some(raw) => parse_range("CEDAR_LESSON_REMINDER_HOURS", &raw, 1, 24 * 7)? as u32,
    };
    let digest_minutes = match number(&args.message_digest_minutes, file.message_digest_minutes) {
        None => 5,
        Some(raw) => parse_range("CEDAR_MESSAGE_DIGEST_MINUTES", &raw, 0, 24 * 60)? as u32,
    };
    Ok(EmailSettings { transport, from, reply_to, lesson_reminder_hours, digest_minutes })
}

fn resolve_billing(args: &SettingsArgs, file: &FileSettings) -> Result<BillingSettings, ConfigError> {
    let pick = |flag: &Option<String>, from_file: &Option<String>| {
        flag.clone().or_else(|| from_file.clone()).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
    };
    let number = |flag: &Option<String>, from_file: Option<u64>| flag.clone().or(from_file.map(|n| n.to_string()));
    let tax = match pick(&args.tax, &file.tax) {
        None => None,
        Some(raw) => {
            let parsed = raw.split_once('=').and_then(|(name, rate)| {
                let rate: f64 = rate.trim().parse().ok()?;
                (!name.trim().is_empty() && (0.0..=50.0).contains(&rate))
                    .then(|| (name.trim().to_owned(), (rate * 1000.0).round() as i64))
            });
            Some(parsed.ok_or_else(|| bad("CEDAR_TAX", format!("{raw:?} is not NAME=PERCENT, e.g. HST=13")))?)
        }
    };
    let payment_terms_days = match number(&args.payment_terms_days, file.payment_terms_days) {
        None => 14,
        Some(raw) => parse_range("CEDAR_PAYMENT_TERMS_DAYS", &raw, 0, 365)? as u32,
    };
    let sibling_discount_percent = match number(&args.sibling_discount_percent, file.sibling_discount_percent) {
        None => 10,
        Some(raw) => parse_range("CEDAR_SIBLING_DISCOUNT_PERCENT", &raw, 0, 100)? as u32,
    };
    let registration_fee_cents = match number(&args.registration_fee_cents, file.registration_fee_cents) {
        None => 0,
        Some(raw) => parse_range("CEDAR_REGISTRATION_FEE_CENTS", &raw, 0, 10_000_000)? as i64,
    };
    let (late_fee_cents, late_fee_after_days) = match pick(&args.late_fee, &file.late_fee) {
        None => (0, 15),
        Some(raw) => raw
            .split_once('@')
            .and_then(|(c, d)| Some((c.trim().parse::<i64>().ok()?, d.trim().parse::<u32>().ok()?)))
            .filter(|(c, d)| *c >= 0 && *d <= 365)
            .ok_or_else(|| bad("CEDAR_LATE_FEE", format!("{raw:?} is not CENTS@DAYS, e.g. 1500@15")))?,
    };
    let billing_day = match number(&args.billing_day, file.billing_day) {
        None => 1,
        Some(raw) => parse_range("CEDAR_BILLING_DAY", &raw, 1, 28)? as u32,
    };
    let stripe = match pick(&args.stripe_secret_key, &file.stripe_secret_key) {
        None => None,
        Some(key) => {
            let base =
                pick(&args.stripe_api_base, &file.stripe_api_base).unwrap_or_else(|| "https://api.stripe.com".into());
            match url::Url::parse(&base) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => return Err(bad("STRIPE_API_BASE", format!("{base:?} is not an http(s) URL"))),
            }
            Some(StripeAccount { secret_key: Secret::new(key), api_base: base.trim_end_matches('/').to_owned() })
        }
    };
    let stripe_webhook_secret = pick(&args.stripe_webhook_secret, &file.stripe_webhook_secret).map(Secret::new);
    Ok(BillingSettings {
        tax,
        payment_terms_days,
        sibling_discount_percent,
        registration_fee_cents,
        late_fee_cents,
        late_fee_after_days,
        billing_day,
        stripe,
        stripe_webhook_secret,
    })
}

fn load_file(explicit: Option<&Path>) -> Result<FileSettings, ConfigError> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let default = PathBuf::from("cedar.toml");
            if !default.exists() {
                return Ok(FileSettings::default());
            }
            default
        }
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| bad("CEDAR_CONFIG", format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        let message = e.message().to_owned();
        bad("CEDAR_CONFIG", format!("{}: {message}", path.display()))
    })
}

fn parse_range(setting: &'static str, raw: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    match raw.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(bad(setting, format!("{raw:?} is not a whole number between {min} and {max}"))),
    }
}

fn parse_database_url(raw: &str) -> Result<DatabaseUrl, ConfigError> {
    let raw = raw.trim();
    if let Some(rest) = raw.strip_prefix("sqlite://").or_else(|| raw.strip_prefix("sqlite:")) {
        let path = rest.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err(bad("DATABASE_URL", "a sqlite URL needs a file path, e.g. sqlite://./cedar-data/cedar.db"));
        }
        return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
    }
    if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        let parsed =
            url::Url::parse(raw).map_err(|e| bad("DATABASE_URL", format!("not a valid PostgreSQL URL: {e}")))?;
        if parsed.host_str().is_none_or(str::is_empty) && !raw.contains("host=") {
            return Err(bad(
                "DATABASE_URL",
                "a PostgreSQL URL needs a host, e.g. postgres://user@127.0.0.1:5432/cedar",
            ));
        }
        return Ok(DatabaseUrl::Postgres(raw.to_owned()));
    }
    // Never echo the value: it may hold a password.
    Err(bad("DATABASE_URL", "must start with sqlite:// or postgres://"))
}

fn parse_cors(raw: &str) -> Result<CorsOrigins, ConfigError> {
    let raw = raw.trim();
    match raw {
        "*" => return Ok(CorsOrigins::Any),
        "" | "none" => return Ok(CorsOrigins::None),
        _ => {}
    }
    let mut origins = Vec::new();
    for origin in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parsed = url::Url::parse(origin).map_err(|_| {
            bad("CEDAR_CORS_ORIGINS", format!("{origin:?} is not an origin like https://app.example.com"))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.path() != "/" || parsed.query().is_some() {
            return Err(bad("CEDAR_CORS_ORIGINS", format!("{origin:?} is not an origin like https://app.example.com")));
        }
        origins.push(origin.trim_end_matches('/').to_owned());
    }
    Ok(CorsOrigins::List(origins))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> SettingsArgs {
        SettingsArgs { config: Some(PathBuf::from("/dev/null")), ..SettingsArgs::default() }
    }

    #[test]
    fn defaults_are_sane() {
        let s = Settings::resolve(&args(), None).unwrap();
        assert_eq!(s.addr.to_string(), "127.0.0.1:8000");
        assert_eq!(s.database_url, DatabaseUrl::Sqlite(PathBuf::from("./cedar-data/cedar.db")));
        assert_eq!(s.timezone, chrono_tz::America::Toronto);
        assert_eq!(s.body_limit_bytes, 1 << 20);
    }

    #[test]
    fn each_bad_setting_is_named() {
        let cases: Vec<(SettingsArgs, Option<&str>, &str)> = vec![
            (SettingsArgs { timezone: Some("Mars/Olympus".into()), ..args() }, None, "CEDAR_TIMEZONE"),
            (SettingsArgs { database_url: Some("mysql://x".into()), ..args() }, None, "DATABASE_URL"),
            (SettingsArgs { log_format: Some("xml".into()), ..args() }, None, "CEDAR_LOG_FORMAT"),
            (SettingsArgs { body_limit_bytes: Some("-1".into()), ..args() }, None, "CEDAR_BODY_LIMIT_BYTES"),
            (SettingsArgs { cors_origins: Some("not a url".into()), ..args() }, None, "CEDAR_CORS_ORIGINS"),
            (args(), Some("localhost"), "CEDAR_ADDR"),
        ];
        for (a, addr, setting) in cases {
            let err = Settings::resolve(&a, addr).unwrap_err();
            assert_eq!(err.setting, setting, "{err}");
            assert!(!err.to_string().contains('\n'));
        }
    }

    #[test]
    fn passwords_never_show() {
        let a = SettingsArgs { database_url: Some("postgres://cedar:hunter2@db:5432/cedar".into()), ..args() };
        let s = Settings::resolve(&a, None).unwrap();
        let shown = format!("{s:?} {}", s.database_url);
        assert!(!shown.contains("hunter2"), "{shown}");
        let err = Settings::resolve(&SettingsArgs { database_url: Some("mysql://u:hunter2@x".into()), ..args() }, None)
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        let a = SettingsArgs {
            supabase_jwt_secret: Some("super-secret-jwt-token-with-at-least-32-characters".into()),
            ..args()
        };
        let s = Settings::resolve(&a, None).unwrap();
        assert!(!format!("{s:?}").contains("super-secret"));
    }

    #[test]
    fn settings_file_is_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("cedar-cfg-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(&good, "timezone = \"America/Vancouver\"\nrequest_timeout_secs = 5\n").unwrap();
        let s = Settings::resolve(&SettingsArgs { config: Some(good), ..SettingsArgs::default() }, None).unwrap();
        assert_eq!(s.timezone, chrono_tz::America::Vancouver);
        assert_eq!(s.request_timeout, Duration::from_secs(5));

        let typo = dir.join("typo.toml");
        std::fs::write(&typo, "time_zone = \"UTC\"\n").unwrap();
        let err = Settings::resolve(&SettingsArgs { config: Some(typo), ..SettingsArgs::default() }, None).unwrap_err();
        assert_eq!(err.setting, "CEDAR_CONFIG");
        assert!(err.to_string().contains("time_zone"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }
}
