//! Validation: raw setting values in, typed [`Settings`] out, or one error naming the
//! variable at fault.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::sources::{FileSettings, Raw, RawValue, SettingsArgs};
use super::*;

impl Settings {
    /// Settings for tests and embedding: defaults, with the given data dir and database.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>, database_url: Option<&str>) -> Result<Self, ConfigError> {
        let args = SettingsArgs {
            data_dir: Some(data_dir.into().to_string_lossy().into_owned()),
            database_url: database_url.map(str::to_owned),
            ..SettingsArgs::default()
        };
        Self::merge(&Raw::merge(&args, None, FileSettings::default()))
    }

    /// Merges flags/environment (already in `args`, by clap) over the settings file over
    /// defaults, and validates the result.
    pub fn resolve(args: &SettingsArgs, addr: Option<&str>) -> Result<Self, ConfigError> {
        let file = load_file(args.config.as_deref())?;
        Self::merge(&Raw::merge(args, addr, file))
    }

    fn merge(raw: &Raw) -> Result<Self, ConfigError> {
        let data_dir_raw = raw.data_dir.raw().unwrap_or_else(|| "./cedar-data".into());
        let ai = resolve_ai(raw)?;
        let billing = resolve_billing(raw)?;
        let email = resolve_email(raw, &data_dir_raw)?;
        let addr_raw = raw.addr.raw().unwrap_or_else(|| "127.0.0.1:8000".into());
        let addr: SocketAddr = addr_raw.parse().map_err(|_| {
            raw.addr.bad(format!("{addr_raw:?} is not a socket address (expected host:port, e.g. 127.0.0.1:8000)"))
        })?;

        let data_dir = PathBuf::from(data_dir_raw);
        if data_dir.as_os_str().is_empty() {
            return Err(raw.data_dir.bad("must not be empty"));
        }
        let database_url = match raw.database_url.text() {
            None => DatabaseUrl::Sqlite(data_dir.join("cedar.db")),
            Some(text) => parse_database_url(&text)?,
        };
        let default_pool = match database_url {
            DatabaseUrl::Sqlite(_) => 8,
            DatabaseUrl::Postgres(_) => 10,
        };
        let db_max_connections = raw.db_max_connections.number(default_pool, 1, 1000)? as u32;

        let tz_raw = raw.timezone.raw().unwrap_or_else(|| "America/Toronto".into());
        let timezone: chrono_tz::Tz = tz_raw.parse().map_err(|_| {
            raw.timezone.bad(format!("{tz_raw:?} is not an IANA time zone name (e.g. America/Toronto)"))
        })?;

        let log_level = raw.log_level.raw().unwrap_or_else(|| "info".into());
        tracing_subscriber::EnvFilter::try_new(&log_level)
            .map_err(|e| raw.log_level.bad(format!("{log_level:?} is not a log filter: {e}")))?;
        let log_format = match raw.log_format.raw().as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(raw.log_format.bad(format!("{other:?} is not one of: text, json"))),
        };

        let request_timeout = Duration::from_secs(raw.request_timeout_secs.number(30, 1, 3600)?);
        let body_limit_bytes = raw.body_limit_bytes.number(1024 * 1024, 1024, 1 << 30)? as usize;
        let cors_origins = parse_cors(&raw.cors_origins, raw.cors_origins.raw().as_deref().unwrap_or("*"))?;
        let shutdown_grace = Duration::from_secs(raw.shutdown_grace_secs.number(30, 0, 3600)?);

        let public_url = match raw.public_url.raw() {
            None => format!("http://{addr}"),
            Some(_) => raw.public_url.http_url("")?,
        };
        let access_token_ttl = Duration::from_secs(raw.access_token_secs.number(3600, 60, 7 * 86_400)?);
        let jwt_key_file = raw.jwt_key_file.raw().map(PathBuf::from).unwrap_or_else(|| data_dir.join("jwt-es256.pem"));
        let signup = match raw.signup.raw().as_deref().unwrap_or("open") {
            "open" => SignupPolicy::Open,
            "invite" => SignupPolicy::Invite,
            other => return Err(raw.signup.bad(format!("{other:?} is not one of: open, invite"))),
        };
        let supabase_url =
            match raw.supabase_url.text() {
                None => None,
                Some(text) => Some(raw.supabase_url.http_url("").map_err(|_| {
                    raw.supabase_url.bad(format!("{text:?} is not a URL like https://xyz.supabase.co"))
                })?),
            };
        let supabase_jwt_secret = match raw.supabase_jwt_secret.raw() {
            Some(secret) if secret.len() < 32 => {
                return Err(raw
                    .supabase_jwt_secret
                    .bad("is shorter than 32 characters; copy it whole from the Supabase dashboard"));
            }
            other => other.map(Secret::new),
        };
        let supabase = (supabase_url.is_some() || supabase_jwt_secret.is_some())
            .then_some(SupabaseAuth { url: supabase_url, jwt_secret: supabase_jwt_secret });

        Ok(Self {
            enrollment_auto_approve: raw.enrollment_auto_approve.boolean(false)?,
            payment_issue_auto_resolve: raw.payment_issue_auto_resolve.boolean(false)?,
            payment_issue_overdue_days: raw.payment_issue_overdue_days.number(14, 0, 365)? as u32,
            progress: ProgressSettings {
                monthly: raw.progress_reports_monthly.boolean(true)?,
                min_attendance_percent: raw.attention_min_attendance_percent.number(75, 0, 100)? as i64,
                drop_points: raw.attention_drop_points.number(20, 1, 100)? as i64,
                missed_in_a_row: raw.attention_missed_in_a_row.number(3, 1, 52)? as i64,
                note_weeks: raw.attention_note_weeks.number(6, 1, 52)? as i64,
                gap_days: raw.attention_gap_days.number(21, 1, 365)? as i64,
                send_delay_secs: raw.progress_send_delay_secs.number(60, 0, 86_400)? as u32,
            },
            schedule_review: ScheduleReviewSettings {
                cron: {
                    let cron = raw.schedule_review_cron.text().unwrap_or_else(|| "0 18 * * 0".into());
                    crate::jobs::cron::Cron::parse(&cron).map_err(|e| raw.schedule_review_cron.bad(e))?;
                    cron
                },
                max_moves: raw.schedule_review_max_moves.number(60, 0, 10_000)? as usize,
                time_limit_secs: raw.schedule_review_time_limit_secs.number(20, 1, 600)?,
                teacher_max_minutes_per_day: raw.teacher_max_minutes_per_day.number(360, 15, 1440)? as u32,
                waitlist_lesson_minutes: raw.waitlist_lesson_minutes.number(30, 15, 120)? as u32,
                school_hours: {
                    let text = raw.school_hours.text().unwrap_or_else(|| DEFAULT_SCHOOL_HOURS.into());
                    parse_school_hours(&text).map_err(|e| raw.school_hours.bad(e))?
                },
            },
            operations: OperationsSettings {
                backup_dir: raw.backup_dir.text().map(PathBuf::from),
                backup_cron: {
                    let cron = raw.backup_cron.text().unwrap_or_else(|| "30 2 * * *".into());
                    crate::jobs::cron::Cron::parse(&cron).map_err(|e| raw.backup_cron.bad(e))?;
                    cron
                },
                owner_digest_cron: match raw.owner_digest_cron.text().as_deref() {
                    Some("off") => None,
                    other => {
                        let cron = other.unwrap_or("0 7 * * *").to_owned();
                        crate::jobs::cron::Cron::parse(&cron).map_err(|e| raw.owner_digest_cron.bad(e))?;
                        Some(cron)
                    }
                },
                owner_alerts: raw.owner_alerts.boolean(true)?,
                webhook_failure_alert: raw.webhook_failure_alert.number(3, 0, 1_000_000)? as u32,
            },
            school_year: SchoolYearSettings {
                site_url: match raw.site_url.text() {
                    None => None,
                    Some(_) => Some(raw.site_url.http_url("")?),
                },
                closure_action: match raw.closure_action.raw().as_deref().unwrap_or("cancel") {
                    "cancel" => ClosureAction::Cancel,
                    "reschedule" => ClosureAction::Reschedule,
                    other => {
                        return Err(raw.closure_action.bad(format!("{other:?} is not one of: cancel, reschedule")));
                    }
                },
                closure_makeup_credit: raw.closure_makeup_credit.boolean(false)?,
                bill_substitute_rate: match raw.substitute_rate.raw().as_deref().unwrap_or("lesson_teacher") {
                    "lesson_teacher" => false,
                    "substitute" => true,
                    other => {
                        return Err(raw
                            .substitute_rate
                            .bad(format!("{other:?} is not one of: lesson_teacher, substitute")));
                    }
                },
                reenrollment_notice_days: raw.reenrollment_notice_days.number(28, 1, 180)? as u32,
                email_link_days: raw.email_link_days.number(30, 1, 365)? as u32,
                etransfer_email: match raw.etransfer_email.text() {
                    None => None,
                    Some(text) if text.contains('@') && !text.contains(char::is_whitespace) => Some(text),
                    Some(text) => return Err(raw.etransfer_email.bad(format!("{text:?} is not an email address"))),
                },
            },
            retention: Retention {
                outbox_days: raw.retention_outbox_days.number(90, 1, 3650)? as u32,
                ai_days: raw.retention_ai_days.number(30, 1, 3650)? as u32,
                audit_years: raw.retention_audit_years.number(7, 1, 50)? as u32,
                former_family_years: raw.retention_former_family_years.number(3, 1, 50)? as u32,
            },
            billing,
            email,
            ai,
            worker_concurrency: raw.worker_concurrency.number(4, 1, 256)? as usize,
            makeup_notice_hours: raw.makeup_notice_hours.number(24, 0, 24 * 30)? as u32,
            makeup_expiry_days: raw.makeup_expiry_days.number(90, 1, 3650)? as u32,
            makeup_cap: raw.makeup_cap.number(4, 0, 100)? as u32,
            public_url,
            access_token_ttl,
            jwt_key_file,
            signup,
            supabase,
            metrics_token: raw.metrics_token.text().map(Secret::new),
            trusted_proxies: match raw.trusted_proxies.text() {
                None => Vec::new(),
                Some(text) => text
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|ip| ip.parse().map_err(|_| raw.trusted_proxies.bad(format!("{ip:?} is not an IP address"))))
                    .collect::<Result<Vec<_>, _>>()?,
            },
            rate_limit_per_minute: raw.rate_limit_per_minute.number(6000, 0, 10_000_000)? as u32,
            auth_rate_per_ip: raw.auth_rate_per_ip.number(30, 1, 1_000_000)? as u32,
            auth_rate_per_account: raw.auth_rate_per_account.number(10, 1, 1_000_000)? as u32,
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

fn resolve_ai(raw: &Raw) -> Result<AiSettings, ConfigError> {
    let account = |key: &RawValue, url: &RawValue, default_url: &str, model: &RawValue, default_model: &str| {
        Ok::<_, ConfigError>(ProviderAccount {
            api_key: key.text().map(Secret::new),
            base_url: url.http_url(default_url)?,
            model: model.text().unwrap_or_else(|| default_model.to_owned()),
        })
    };
    let openai = account(
        &raw.openai_api_key,
        &raw.openai_base_url,
        "https://api.openai.com/v1",
        &raw.openai_model,
        "gpt-4o-mini",
    )?;
    let anthropic = account(
        &raw.anthropic_api_key,
        &raw.anthropic_base_url,
        "https://api.anthropic.com",
        &raw.anthropic_model,
        "claude-haiku-4-5",
    )?;
    let providers = match raw.ai_providers.text() {
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
        Some(text) => {
            let mut list = Vec::new();
            for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (kind, account, key) = match name {
                    "openai" => (AiProviderKind::OpenAi, &openai, &raw.openai_api_key),
                    "anthropic" => (AiProviderKind::Anthropic, &anthropic, &raw.anthropic_api_key),
                    "offline" => continue,
                    other => {
                        return Err(raw
                            .ai_providers
                            .bad(format!("{other:?} is not one of: openai, anthropic, offline")));
                    }
                };
                if account.api_key.is_none() {
                    return Err(raw.ai_providers.bad(format!("{name} is listed but {} is not set", key.name)));
                }
                if !list.contains(&kind) {
                    list.push(kind);
                }
            }
            list
        }
    };
    let monthly_budget_micros = match raw.ai_monthly_budget_cad.text() {
        None => 20_000_000,
        Some(text) => match text.parse::<f64>() {
            Ok(cad) if (0.0..=1_000_000.0).contains(&cad) => (cad * 1_000_000.0).round() as i64,
            _ => {
                return Err(raw
                    .ai_monthly_budget_cad
                    .bad(format!("{text:?} is not an amount in dollars, e.g. 20 or 12.50")));
            }
        },
    };
    let prices_text =
        raw.ai_prices.text().unwrap_or_else(|| "gpt-4o-mini=0.21/0.84,claude-haiku-4-5=1.40/7.00".to_owned());
    let mut prices = Vec::new();
    for entry in prices_text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parsed = entry.split_once('=').and_then(|(model, rates)| {
            let (input, output) = rates.split_once('/')?;
            let (input, output) = (input.trim().parse::<f64>().ok()?, output.trim().parse::<f64>().ok()?);
            (input >= 0.0 && output >= 0.0 && !model.trim().is_empty())
                .then(|| (model.trim().to_owned(), input, output))
        });
        match parsed {
            Some(price) => prices.push(price),
            None => {
                return Err(raw
                    .ai_prices
                    .bad(format!("{entry:?} is not model=input/output, e.g. gpt-4o-mini=0.21/0.84")));
            }
        }
    }
    Ok(AiSettings {
        providers,
        openai,
        anthropic,
        timeout: Duration::from_secs(raw.ai_timeout_secs.number(20, 1, 600)?),
        max_retries: raw.ai_max_retries.number(2, 0, 10)? as u32,
        monthly_budget_micros,
        run_token_cap: raw.ai_run_token_cap.number(20_000, 0, 10_000_000)? as i64,
        family_monthly_micros: (i128::from(monthly_budget_micros)
            * i128::from(raw.ai_family_share_percent.number(10, 1, 100)?)
            / 100)
            .max(1) as i64,
        prices,
    })
}

fn resolve_email(raw: &Raw, data_dir: &str) -> Result<EmailSettings, ConfigError> {
    let mailbox = |setting: &RawValue, text: String| -> Result<String, ConfigError> {
        text.parse::<lettre::message::Mailbox>()
            .map(|_| text.clone())
            .map_err(|_| setting.bad(format!("{text:?} is not an address like Office <office@example.ca>")))
    };
    let from = mailbox(
        &raw.email_from,
        raw.email_from.text().unwrap_or_else(|| "Cedar Heights Music Academy <office@cedarheights.example>".into()),
    )?;
    let reply_to = raw.email_reply_to.text().map(|r| mailbox(&raw.email_reply_to, r)).transpose()?;
    let required = |key: &RawValue, transport: &str| {
        key.text()
            .map(Secret::new)
            .ok_or_else(|| key.bad(format!("is required when CEDAR_EMAIL_TRANSPORT is {transport}")))
    };
    let transport = match raw.email_transport.text().as_deref().unwrap_or("file") {
        "file" => EmailTransport::File(PathBuf::from(data_dir).join("outbox")),
        "smtp" => {
            let url = required(&raw.smtp_url, "smtp")?;
            if !(url.expose().starts_with("smtp://") || url.expose().starts_with("smtps://")) {
                return Err(raw.smtp_url.bad("must start with smtp:// or smtps://"));
            }
            EmailTransport::Smtp { url }
        }
        "brevo" => EmailTransport::Brevo {
            api_key: required(&raw.brevo_api_key, "brevo")?,
            base_url: raw.brevo_api_base.http_url("https://api.brevo.com")?,
        },
        "sendgrid" => EmailTransport::SendGrid {
            api_key: required(&raw.sendgrid_api_key, "sendgrid")?,
            base_url: raw.sendgrid_api_base.http_url("https://api.sendgrid.com")?,
        },
        other => {
            return Err(raw.email_transport.bad(format!("{other:?} is not one of: file, smtp, brevo, sendgrid")));
        }
    };
    Ok(EmailSettings {
        transport,
        from,
        reply_to,
        lesson_reminder_hours: raw.lesson_reminder_hours.number(24, 1, 24 * 7)? as u32,
        digest_minutes: raw.message_digest_minutes.number(5, 0, 24 * 60)? as u32,
    })
}

fn resolve_billing(raw: &Raw) -> Result<BillingSettings, ConfigError> {
    let tax = match raw.tax.text() {
        None => None,
        Some(text) => {
            let parsed = text.split_once('=').and_then(|(name, rate)| {
                let rate: f64 = rate.trim().parse().ok()?;
                (!name.trim().is_empty() && (0.0..=50.0).contains(&rate))
                    .then(|| (name.trim().to_owned(), (rate * 1000.0).round() as i64))
            });
            Some(parsed.ok_or_else(|| raw.tax.bad(format!("{text:?} is not NAME=PERCENT, e.g. HST=13")))?)
        }
    };
    let (late_fee_cents, late_fee_after_days) = match raw.late_fee.text() {
        None => (0, 15),
        Some(text) => text
            .split_once('@')
            .and_then(|(c, d)| Some((c.trim().parse::<i64>().ok()?, d.trim().parse::<u32>().ok()?)))
            .filter(|(c, d)| *c >= 0 && *d <= 365)
            .ok_or_else(|| raw.late_fee.bad(format!("{text:?} is not CENTS@DAYS, e.g. 1500@15")))?,
    };
    let stripe = match raw.stripe_secret_key.text() {
        None => None,
        Some(key) => Some(StripeAccount {
            secret_key: Secret::new(key),
            api_base: raw.stripe_api_base.http_url("https://api.stripe.com")?,
        }),
    };
    Ok(BillingSettings {
        tax,
        payment_terms_days: raw.payment_terms_days.number(14, 0, 365)? as u32,
        sibling_discount_percent: raw.sibling_discount_percent.number(10, 0, 100)? as u32,
        registration_fee_cents: crate::domain::Cents(raw.registration_fee_cents.number(0, 0, 10_000_000)? as i64),
        late_fee_cents: crate::domain::Cents(late_fee_cents),
        late_fee_after_days,
        billing_day: raw.billing_day.number(1, 1, 28)? as u32,
        stripe,
        stripe_webhook_secret: raw.stripe_webhook_secret.text().map(Secret::new),
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

fn parse_cors(setting: &RawValue, raw: &str) -> Result<CorsOrigins, ConfigError> {
    let raw = raw.trim();
    match raw {
        "*" => return Ok(CorsOrigins::Any),
        "" | "none" => return Ok(CorsOrigins::None),
        _ => {}
    }
    let mut origins = Vec::new();
    for origin in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let not_origin = || setting.bad(format!("{origin:?} is not an origin like https://app.example.com"));
        let parsed = url::Url::parse(origin).map_err(|_| not_origin())?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.path() != "/" || parsed.query().is_some() {
            return Err(not_origin());
        }
        origins.push(origin.trim_end_matches('/').to_owned());
    }
    Ok(CorsOrigins::List(origins))
}

const DEFAULT_SCHOOL_HOURS: &str = "mon-fri 14:00-21:00, sat 09:00-14:00";

/// `"mon-fri 14:00-21:00, sat 09:00-14:00"` → weekly windows (days: mon … sun, or ranges).
pub fn parse_school_hours(text: &str) -> Result<Vec<crate::time::WeeklyWindow>, String> {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let day = |name: &str| DAYS.iter().position(|d| *d == name.trim()).map(|i| i as u8 + 1);
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("{part:?} is not like \"mon-fri 14:00-21:00\"");
        let (days, hours) =
            part.to_lowercase().split_once(' ').map(|(a, b)| (a.to_owned(), b.trim().to_owned())).ok_or_else(bad)?;
        let (first, last) = match days.split_once('-') {
            Some((a, b)) => (day(a).ok_or_else(bad)?, day(b).ok_or_else(bad)?),
            None => (day(&days).ok_or_else(bad)?, day(&days).ok_or_else(bad)?),
        };
        let (start, end) = hours.split_once('-').ok_or_else(bad)?;
        let (Some(a), Some(b)) = (crate::time::parse_hhmm(start.trim()), crate::time::parse_hhmm(end.trim())) else {
            return Err(bad());
        };
        if first > last || a >= b {
            return Err(bad());
        }
        for weekday in first..=last {
            out.push(crate::time::WeeklyWindow {
                weekday,
                start_time: a.format("%H:%M").to_string(),
                end_time: b.format("%H:%M").to_string(),
            });
        }
    }
    if out.is_empty() {
        return Err("no open hours given".into());
    }
    Ok(out)
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

    #[test]
    fn school_hours_read_day_ranges() {
        let hours = parse_school_hours("mon-fri 14:00-21:00, sat 09:00-14:00").unwrap();
        assert_eq!(hours.len(), 6);
        assert_eq!((hours[5].weekday, hours[5].start_time.as_str(), hours[5].end_time.as_str()), (6, "09:00", "14:00"));
        for bad in ["", "mon 14:00", "fri-mon 14:00-21:00", "mon 21:00-14:00", "funday 09:00-10:00"] {
            assert!(parse_school_hours(bad).is_err(), "{bad}");
        }
    }
}
