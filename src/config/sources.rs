//! Where settings come from. Each setting is declared once, in [`settings!`] below: the
//! declaration gives its command-line flag (`--name`), its environment variable and its key
//! in `cedar.toml` (the field name). Flags win over variables (clap reads both), variables
//! over the file. Values stay raw text here; `super::resolve` validates them, naming the
//! variable in every error.

use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

use super::{ConfigError, bad};

/// A raw value and the variable that names it in errors.
#[derive(Debug, Clone)]
pub struct RawValue {
    pub value: Option<String>,
    pub name: &'static str,
}

impl RawValue {
    /// The value as given (flag, variable or file), untrimmed.
    pub fn raw(&self) -> Option<String> {
        self.value.clone()
    }

    /// The value trimmed; an empty value counts as unset.
    pub fn text(&self) -> Option<String> {
        self.value.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
    }

    pub fn bad(&self, message: impl Into<String>) -> ConfigError {
        bad(self.name, message)
    }

    /// A whole number in `min..=max`, or `default` when unset.
    pub fn number(&self, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        match &self.value {
            None => Ok(default),
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(self.bad(format!("{raw:?} is not a whole number between {min} and {max}"))),
            },
        }
    }

    /// An http(s) URL without its trailing slash, or `default` when unset.
    pub fn http_url(&self, default: &str) -> Result<String, ConfigError> {
        let raw = self.text().unwrap_or_else(|| default.to_owned());
        match url::Url::parse(&raw) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                Ok(raw.trim_end_matches('/').to_owned())
            }
            _ => Err(self.bad(format!("{raw:?} is not an http(s) URL"))),
        }
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`), or `default` when unset.
    pub fn boolean(&self, default: bool) -> Result<bool, ConfigError> {
        match self.value.as_deref().map(str::trim) {
            None => Ok(default),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no" | "") => Ok(false),
            Some(other) => Err(self.bad(format!("{other:?} is not true or false"))),
        }
    }
}

/// A value in `cedar.toml`: strings, numbers and booleans are all accepted as text and then
/// validated like the same value from a variable.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum FileValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
}

impl FileValue {
    fn into_text(self) -> String {
        match self {
            Self::Text(s) => s,
            Self::Integer(n) => n.to_string(),
            Self::Float(n) => n.to_string(),
            Self::Boolean(b) => b.to_string(),
        }
    }
}

macro_rules! settings {
    ($( $(#[$meta:meta])* $field:ident => $env:literal, $value_name:literal; )*) => {
        /// Settings shared by every subcommand, as flags or environment variables. Kept as raw
        /// strings so that validation can name the setting in its own words, whichever source
        /// it came from.
        #[derive(Debug, Args, Default)]
        pub struct SettingsArgs {
            /// Optional settings file (TOML). Default: ./cedar.toml when it exists.
            #[arg(long, env = "CEDAR_CONFIG", global = true, value_name = "FILE")]
            pub config: Option<PathBuf>,
            $(
                $(#[$meta])*
                #[arg(long, env = $env, global = true, value_name = $value_name)]
                pub $field: Option<String>,
            )*
        }

        /// Keys accepted in `cedar.toml`; unknown keys are an error so typos do not go unnoticed.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct FileSettings {
            addr: Option<FileValue>,
            $( $field: Option<FileValue>, )*
        }

        /// Every setting after merging its sources, still unvalidated.
        #[derive(Debug)]
        pub struct Raw {
            pub addr: RawValue,
            $( pub $field: RawValue, )*
        }

        impl Raw {
            /// Flags and variables (already in `args`, by clap) over the file.
            pub fn merge(args: &SettingsArgs, addr: Option<&str>, file: FileSettings) -> Self {
                Self {
                    addr: RawValue {
                        value: addr.map(str::to_owned).or(file.addr.map(FileValue::into_text)),
                        name: "CEDAR_ADDR",
                    },
                    $( $field: RawValue {
                        value: args.$field.clone().or(file.$field.map(FileValue::into_text)),
                        name: $env,
                    }, )*
                }
            }
        }
    };
}

settings! {
    /// Directory for the SQLite database, keys and file outputs [default: ./cedar-data].
    data_dir => "CEDAR_DATA_DIR", "DIR";
    /// Database: unset = SQLite file in the data dir; `sqlite://PATH` or `postgres://…`.
    #[arg(hide_env_values = true)]
    database_url => "DATABASE_URL", "URL";
    /// Most connections in the database pool [default: 10 for PostgreSQL, 8 for SQLite].
    db_max_connections => "CEDAR_DB_MAX_CONNECTIONS", "N";
    /// The school's time zone (IANA name); governs recurrence and schedules [default: America/Toronto].
    timezone => "CEDAR_TIMEZONE", "ZONE";
    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives [default: info].
    log_level => "CEDAR_LOG_LEVEL", "FILTER";
    /// Log format: text or json [default: text].
    log_format => "CEDAR_LOG_FORMAT", "FORMAT";
    /// Seconds a request may run before it is abandoned with 503 [default: 30].
    request_timeout_secs => "CEDAR_REQUEST_TIMEOUT_SECS", "SECS";
    /// Largest request body in bytes; larger ones get 413 [default: 1048576].
    body_limit_bytes => "CEDAR_BODY_LIMIT_BYTES", "BYTES";
    /// Origins allowed by CORS: `*`, a comma-separated list of origins, or `none` [default: *].
    cors_origins => "CEDAR_CORS_ORIGINS", "ORIGINS";
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT [default: 30].
    shutdown_grace_secs => "CEDAR_SHUTDOWN_GRACE_SECS", "SECS";
    /// The URL clients use to reach Cedar; the issuer of its tokens is URL/auth/v1
    /// [default: http://CEDAR_ADDR].
    public_url => "CEDAR_PUBLIC_URL", "URL";
    /// Lifetime of access tokens issued by Cedar, in seconds [default: 3600].
    access_token_secs => "CEDAR_ACCESS_TOKEN_SECS", "SECS";
    /// PEM file (PKCS#8, P-256) with Cedar's token signing key; created with mode 0600 when
    /// missing [default: DATA_DIR/jwt-es256.pem].
    jwt_key_file => "CEDAR_JWT_KEY_FILE", "FILE";
    /// Who may create a parent account: `open` (anyone may sign up) or `invite` (admins
    /// create accounts) [default: open].
    signup => "CEDAR_SIGNUP", "POLICY";
    /// Supabase project URL: accept Supabase Auth tokens, verified with the project's JWKS;
    /// Cedar's own /auth/v1 sign-in is then off.
    supabase_url => "SUPABASE_URL", "URL";
    /// Supabase legacy JWT secret: accept HS256 tokens signed with it.
    #[arg(hide_env_values = true)]
    supabase_jwt_secret => "SUPABASE_JWT_SECRET", "SECRET";
    /// When set, `/metrics` answers only `Authorization: Bearer <token>` (what a Prometheus
    /// scrape config's `authorization` sends); unset, it is open.
    #[arg(hide_env_values = true)]
    metrics_token => "CEDAR_METRICS_TOKEN", "TOKEN";
    /// Requests allowed per signed-in user (or per client IP without a token) per minute;
    /// 0 turns the limit off (load benchmarks) [default: 6000, i.e. 100 a second].
    rate_limit_per_minute => "CEDAR_RATE_LIMIT_PER_MINUTE", "N";
    /// Addresses of reverse proxies (comma-separated) whose `X-Forwarded-For` names the client
    /// for rate limits; unset: the TCP peer is the client.
    trusted_proxies => "CEDAR_TRUSTED_PROXIES", "IPS";
    /// Sign-in and sign-up attempts allowed per client IP per minute [default: 30].
    auth_rate_per_ip => "CEDAR_AUTH_RATE_PER_IP", "N";
    /// Sign-in attempts allowed per account per 15 minutes [default: 10].
    auth_rate_per_account => "CEDAR_AUTH_RATE_PER_ACCOUNT", "N";
    /// Hours of notice a student cancellation needs to earn a makeup credit [default: 24].
    makeup_notice_hours => "CEDAR_MAKEUP_NOTICE_HOURS", "HOURS";
    /// Days a makeup credit stays valid [default: 90].
    makeup_expiry_days => "CEDAR_MAKEUP_EXPIRY_DAYS", "DAYS";
    /// Jobs one worker process runs at once [default: 4].
    worker_concurrency => "CEDAR_WORKER_CONCURRENCY", "N";
    /// Most unused makeup credits a student may hold [default: 4].
    makeup_cap => "CEDAR_MAKEUP_CAP", "N";
    /// AI providers to try, in order, comma-separated: openai, anthropic, offline. `offline`
    /// (Cedar's own templates and rules) is always the last resort [default: the providers
    /// with an API key, then offline].
    ai_providers => "CEDAR_AI_PROVIDERS", "LIST";
    /// OpenAI API key; enables the openai provider.
    #[arg(hide_env_values = true)]
    openai_api_key => "OPENAI_API_KEY", "KEY";
    /// Any OpenAI-compatible server (Ollama, vLLM, llama.cpp) [default: https://api.openai.com/v1].
    openai_base_url => "OPENAI_BASE_URL", "URL";
    /// OpenAI model [default: gpt-4o-mini].
    openai_model => "CEDAR_OPENAI_MODEL", "MODEL";
    /// Anthropic API key; enables the anthropic provider.
    #[arg(hide_env_values = true)]
    anthropic_api_key => "ANTHROPIC_API_KEY", "KEY";
    /// Anthropic API base URL [default: https://api.anthropic.com].
    anthropic_base_url => "ANTHROPIC_BASE_URL", "URL";
    /// Anthropic model [default: claude-haiku-4-5].
    anthropic_model => "CEDAR_ANTHROPIC_MODEL", "MODEL";
    /// Seconds one AI request may take [default: 20].
    ai_timeout_secs => "CEDAR_AI_TIMEOUT_SECS", "SECS";
    /// Retries per provider on 408/409/429/5xx/529 before the next provider [default: 2].
    ai_max_retries => "CEDAR_AI_MAX_RETRIES", "N";
    /// Monthly budget for external AI in Canadian dollars; once spent, workflows use the
    /// offline provider and ask for review [default: 20].
    ai_monthly_budget_cad => "CEDAR_AI_MONTHLY_BUDGET_CAD", "CAD";
    /// Most AI tokens (input + output) one workflow run may use [default: 20000].
    ai_run_token_cap => "CEDAR_AI_RUN_TOKEN_CAP", "TOKENS";
    /// Largest share of the monthly AI budget the runs about one family may spend, in percent;
    /// past it that family's runs use the offline provider, so no one family's requests can
    /// spend the school's budget [default: 10].
    ai_family_share_percent => "CEDAR_AI_FAMILY_SHARE_PERCENT", "PERCENT";
    /// Prices in CAD per million tokens, `model=input/output` comma-separated; a model not
    /// listed is charged at the dearest listed price
    /// [default: gpt-4o-mini=0.21/0.84,claude-haiku-4-5=1.40/7.00].
    ai_prices => "CEDAR_AI_PRICES", "LIST";
    /// How email leaves: `file` (.eml files in DATA_DIR/outbox), `smtp`, `brevo` or `sendgrid`
    /// [default: file].
    email_transport => "CEDAR_EMAIL_TRANSPORT", "TRANSPORT";
    /// Sender of every email, `Name <address>` [default: Cedar Heights Music Academy <office@cedarheights.example>].
    email_from => "CEDAR_EMAIL_FROM", "MAILBOX";
    /// Reply-To of every email [default: the sender].
    email_reply_to => "CEDAR_EMAIL_REPLY_TO", "MAILBOX";
    /// SMTP server: `smtp://user:pass@host:587?tls=required` (STARTTLS), `smtps://…:465` (TLS),
    /// or `smtp://host:25` (plain, for a local relay).
    #[arg(hide_env_values = true)]
    smtp_url => "CEDAR_SMTP_URL", "URL";
    /// Brevo API key (transport `brevo`).
    #[arg(hide_env_values = true)]
    brevo_api_key => "BREVO_API_KEY", "KEY";
    /// Brevo API base [default: https://api.brevo.com].
    brevo_api_base => "BREVO_API_BASE", "URL";
    /// SendGrid API key (transport `sendgrid`).
    #[arg(hide_env_values = true)]
    sendgrid_api_key => "SENDGRID_API_KEY", "KEY";
    /// SendGrid API base [default: https://api.sendgrid.com].
    sendgrid_api_base => "SENDGRID_API_BASE", "URL";
    /// Hours before a lesson its reminder goes out [default: 24].
    lesson_reminder_hours => "CEDAR_LESSON_REMINDER_HOURS", "HOURS";
    /// New messages are gathered into one email per recipient per this many minutes [default: 5].
    message_digest_minutes => "CEDAR_MESSAGE_DIGEST_MINUTES", "MINUTES";
    /// Sales tax on invoices, `NAME=PERCENT` (e.g. `HST=13`); unset: no tax.
    tax => "CEDAR_TAX", "NAME=PERCENT";
    /// Days between an invoice and its due date [default: 14].
    payment_terms_days => "CEDAR_PAYMENT_TERMS_DAYS", "DAYS";
    /// Percent off tuition for the second and later students of a family [default: 10].
    sibling_discount_percent => "CEDAR_SIBLING_DISCOUNT_PERCENT", "PERCENT";
    /// One-time fee on a family's first invoice, in cents [default: 0 = none].
    registration_fee_cents => "CEDAR_REGISTRATION_FEE_CENTS", "CENTS";
    /// Late fee in cents, added once to an invoice unpaid this many days after its due date;
    /// `CENTS@DAYS` [default: 0@15 = no late fee].
    late_fee => "CEDAR_LATE_FEE", "CENTS@DAYS";
    /// Day of the month the monthly billing run bills the month [default: 1].
    billing_day => "CEDAR_BILLING_DAY", "DAY";
    /// Stripe secret key; enables card payments.
    #[arg(hide_env_values = true)]
    stripe_secret_key => "STRIPE_SECRET_KEY", "KEY";
    /// Stripe API base [default: https://api.stripe.com].
    stripe_api_base => "STRIPE_API_BASE", "URL";
    /// Signing secret of the Stripe webhook endpoint (`whsec_…`).
    #[arg(hide_env_values = true)]
    stripe_webhook_secret => "STRIPE_WEBHOOK_SECRET", "SECRET";
    /// Approve enrollment requests without review when every check passes and the best slot is
    /// at the preferred time exactly (`true`/`false`) [default: false].
    enrollment_auto_approve => "CEDAR_ENROLLMENT_AUTO_APPROVE", "BOOL";
    /// Resolve a payment issue without review when the classification is certain and the
    /// option low-risk: a first card retry after insufficient funds (`true`/`false`) [default: false].
    payment_issue_auto_resolve => "CEDAR_PAYMENT_ISSUE_AUTO_RESOLVE", "BOOL";
    /// Days past its due date an unpaid invoice starts the payment_issue workflow; 0 = never
    /// [default: 14].
    payment_issue_overdue_days => "CEDAR_PAYMENT_ISSUE_OVERDUE_DAYS", "DAYS";
    /// Draft progress reports for the past month on the 1st of each month (`true`/`false`)
    /// [default: true].
    progress_reports_monthly => "CEDAR_PROGRESS_REPORTS_MONTHLY", "BOOL";
    /// Seconds an approved progress report waits for its siblings' before the family's email
    /// goes out [default: 60].
    progress_send_delay_secs => "CEDAR_PROGRESS_SEND_DELAY_SECS", "SECS";
    /// A student needs attention below this attendance, in percent [default: 75].
    attention_min_attendance_percent => "CEDAR_ATTENTION_MIN_ATTENDANCE_PERCENT", "PERCENT";
    /// …or when attendance fell by this many points since the previous period [default: 20].
    attention_drop_points => "CEDAR_ATTENTION_DROP_POINTS", "POINTS";
    /// …or after this many lessons in a row cancelled or missed [default: 3].
    attention_missed_in_a_row => "CEDAR_ATTENTION_MISSED_IN_A_ROW", "N";
    /// …or with no progress note for this many weeks [default: 6].
    attention_note_weeks => "CEDAR_ATTENTION_NOTE_WEEKS", "WEEKS";
    /// …or this many days since the last lesson attended [default: 21].
    attention_gap_days => "CEDAR_ATTENTION_GAP_DAYS", "DAYS";
    /// When the weekly schedule review starts, as cron in school time [default: "0 18 * * 0",
    /// Sunday 18:00].
    schedule_review_cron => "CEDAR_SCHEDULE_REVIEW_CRON", "CRON";
    /// Most active students a schedule review may move (day, time or teacher) [default: 60].
    schedule_review_max_moves => "CEDAR_SCHEDULE_REVIEW_MAX_MOVES", "N";
    /// Seconds the schedule review's optimizer searches [default: 20].
    schedule_review_time_limit_secs => "CEDAR_SCHEDULE_REVIEW_TIME_LIMIT_SECS", "SECS";
    /// Most minutes a teacher teaches in a day, for the schedule review [default: 360].
    teacher_max_minutes_per_day => "CEDAR_TEACHER_MAX_MINUTES_PER_DAY", "MINUTES";
    /// Length of a waitlisted student's lesson when no request says [default: 30].
    waitlist_lesson_minutes => "CEDAR_WAITLIST_LESSON_MINUTES", "MINUTES";
    /// The school's open hours, e.g. "mon-fri 14:00-21:00, sat 09:00-14:00" (the default).
    school_hours => "CEDAR_SCHOOL_HOURS", "HOURS";
    /// The web app families and staff use (GoTrue's `SITE_URL`): email links verify, then
    /// redirect there with the session in the URL fragment; unset, Cedar shows its own page.
    site_url => "CEDAR_SITE_URL", "URL";
    /// What adding a closure or time off does to lessons already booked then: `cancel` them
    /// (not billed; time off earns makeup credits) or `reschedule` (a task for the office with
    /// free slots) [default: cancel].
    closure_action => "CEDAR_CLOSURE_ACTION", "ACTION";
    /// Whether lessons cancelled by a school closure earn makeup credits (`true`/`false`)
    /// [default: false: holidays are priced into the term].
    closure_makeup_credit => "CEDAR_CLOSURE_MAKEUP_CREDIT", "BOOL";
    /// A lesson taught by a substitute is billed at the rate of the `lesson_teacher` (the
    /// student's own) or of the `substitute` [default: lesson_teacher].
    substitute_rate => "CEDAR_SUBSTITUTE_RATE", "WHOSE";
    /// Days before the next term starts that families are offered re-enrollment [default: 28].
    reenrollment_notice_days => "CEDAR_REENROLLMENT_NOTICE_DAYS", "DAYS";
    /// Days a signed link in an email (invoice, pay, progress report) stays valid [default: 30].
    email_link_days => "CEDAR_EMAIL_LINK_DAYS", "DAYS";
    /// Where families send Interac e-Transfers, shown on the pay page (an email address);
    /// unset: the page asks them to contact the office.
    etransfer_email => "CEDAR_ETRANSFER_EMAIL", "EMAIL";
    /// Directory for the scheduled daily backup (rotated: 7 daily, 4 weekly, 12 monthly); unset:
    /// no scheduled backup.
    backup_dir => "CEDAR_BACKUP_DIR", "DIR";
    /// When the scheduled backup runs, as cron in school time [default: "30 2 * * *"].
    backup_cron => "CEDAR_BACKUP_CRON", "CRON";
    /// When the owner's daily digest email goes to the admins, as cron; `off` for none
    /// [default: "0 7 * * *"].
    owner_digest_cron => "CEDAR_OWNER_DIGEST_CRON", "CRON";
    /// Email the admins at once about what cannot wait (AI budget at 80/100 %, dead jobs,
    /// failing webhook signatures), checked every 10 minutes (`true`/`false`) [default: true].
    owner_alerts => "CEDAR_OWNER_ALERTS", "BOOL";
    /// Stripe webhook deliveries failing their signature within an hour that make an alert;
    /// 0 = never [default: 3].
    webhook_failure_alert => "CEDAR_WEBHOOK_FAILURE_ALERT", "N";
    /// Days the bodies of sent (or dead) emails are kept [default: 90].
    retention_outbox_days => "CEDAR_RETENTION_OUTBOX_DAYS", "DAYS";
    /// Days what AI steps were given and answered is kept after their run ends [default: 30].
    retention_ai_days => "CEDAR_RETENTION_AI_DAYS", "DAYS";
    /// Years the audit trail is kept [default: 7].
    retention_audit_years => "CEDAR_RETENTION_AUDIT_YEARS", "YEARS";
    /// Years after its last lesson and invoice a former family's personal data is erased
    /// (invoices and payments stay) [default: 3].
    retention_former_family_years => "CEDAR_RETENTION_FORMER_FAMILY_YEARS", "YEARS";
}
