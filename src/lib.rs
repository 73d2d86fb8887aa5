//! Cedar: the backend of a small music school. See `docs/architecture.md`.
//!
//! The binary (`src/main.rs`) only parses the command line and calls [`run`].

pub mod app;
pub mod auth;
pub mod billing;
pub mod config;
pub mod console;
pub mod db;
pub mod domain;
pub mod error;
pub mod http;
pub mod jobs;
pub mod messaging;
pub mod ops;
pub mod optimize;
pub mod people;
pub mod privacy;
pub mod scheduling;
pub mod school_year;
pub mod tasks;
pub mod time;
pub mod workflows;

use config::{AdminCommand, Cli, Command, LogFormat, Settings};

/// Runs one command of the `cedar` binary.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Healthcheck(args) = &cli.command {
        // No settings, no database: one request, as a container's HEALTHCHECK runs it.
        let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(5)).build()?;
        let status = client.get(&args.url).send().await.map(|r| r.status().as_u16());
        match status {
            Ok(200) => return Ok(()),
            Ok(code) => eprintln!("cedar healthcheck: {} answered {code}", args.url),
            Err(error) => eprintln!("cedar healthcheck: {} unreachable: {error}", args.url),
        }
        std::process::exit(1);
    }
    if let Command::Optimize(args) = &cli.command {
        // No settings, no database: a file in, a file out.
        return optimize_file(args);
    }
    let addr = match &cli.command {
        Command::Serve(args) => args.addr.as_deref(),
        _ => None,
    };
    let settings = match Settings::resolve(&cli.settings, addr) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("cedar: {error}");
            std::process::exit(2);
        }
    };
    init_logging(&settings);
    app::install_constraints();
    match cli.command {
        Command::Serve(args) => app::serve(settings, args.no_worker).await,
        Command::Migrate => {
            let db = db::Db::connect(&settings).await?;
            let applied = db.prepare(settings.supabase.is_some()).await?;
            println!(
                "{}: {applied} migration(s) applied; {} in total",
                settings.database_url,
                db.applied_migrations().await?
            );
            db.close().await;
            Ok(())
        }
        Command::Admin(AdminCommand::Create(args)) => {
            let db = db::Db::connect(&settings).await?;
            db.prepare(settings.supabase.is_some()).await?;
            let password = match args.password {
                Some(password) => password,
                None => std::env::var("CEDAR_ADMIN_PASSWORD").unwrap_or_default(),
            };
            let result = if settings.supabase.is_some() {
                auth::create_supabase_admin_cli(&db, &args.email, args.name.as_deref()).await
            } else {
                auth::create_admin_cli(&db, &args.email, password, args.name.as_deref()).await
            };
            db.close().await;
            match result {
                Ok(user) => {
                    println!("created admin {} ({})", user.email, user.id);
                    Ok(())
                }
                Err(why) => {
                    eprintln!("cedar: {why}");
                    std::process::exit(2);
                }
            }
        }
        Command::Worker => app::work(settings).await,
        Command::Demo => {
            let db = db::Db::connect(&settings).await?;
            db.migrate().await?;
            let summary = people::demo::load(&db, settings.timezone).await?;
            db.close().await;
            if summary.created {
                println!("Loaded the demo school: 8 teachers, 6 rooms, 120 families, 180 students.");
            } else {
                println!("The demo school is already loaded; nothing changed.");
            }
            println!("Demo logins (password: {}):", people::demo::PASSWORD);
            for (role, email) in summary.logins {
                println!("  {role:<8} {email}");
            }
            Ok(())
        }
        Command::Backup(args) => {
            let db = db::Db::connect(&settings).await?;
            let made = ops::backup::backup(&settings, &db, &args.to).await;
            db.close().await;
            let made = made?;
            println!("{}: {} bytes", made.path.display(), made.bytes);
            if args.rotate && args.to.is_dir() {
                for removed in ops::backup::rotate(&args.to)? {
                    println!("rotated out {}", removed.display());
                }
            }
            Ok(())
        }
        Command::Restore(args) => {
            ops::backup::restore(&settings, &args.from, args.force).await?;
            println!("restored {} into {}", args.from.display(), settings.database_url.redacted());
            Ok(())
        }
        Command::Openapi => {
            println!("{}", app::openapi().to_pretty_json()?);
            Ok(())
        }
        Command::Optimize(args) => optimize_file(&args),
        Command::Healthcheck(_) => unreachable!("answered before the settings are read"),
    }
}

fn optimize_file(args: &config::OptimizeArgs) -> anyhow::Result<()> {
    let fail = |message: String| -> ! {
        eprintln!("cedar optimize: {message}");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(&args.instance)
        .unwrap_or_else(|e| fail(format!("cannot read {}: {e}", args.instance.display())));
    let model = optimize::Model::from_json(&text).unwrap_or_else(|e| fail(e.to_string()));
    if !(args.time_limit > 0.0 && args.time_limit <= 86_400.0) || args.threads == 0 || args.threads > 64 {
        fail("--time-limit must be 0–86400 seconds and --threads 1–64".into());
    }
    let options = optimize::Options {
        time_limit: std::time::Duration::from_secs_f64(args.time_limit),
        seed: args.seed,
        max_moves: args.max_moves,
        threads: args.threads,
        iterations: args.iterations,
    };
    let outcome = optimize::optimize(&model, &options, &std::sync::atomic::AtomicBool::new(false));
    println!("{}", serde_json::to_string_pretty(&outcome.solution)?);
    let (b, a) = (&outcome.before, &outcome.after);
    eprintln!(
        "{}: objective {} → {} (+{}); utilization {:.1}% → {:.1}%; gap {} → {} min; waitlist seated {}; moved {}{}; {:.2} s",
        model.name,
        b.objective,
        a.objective,
        a.objective - b.objective,
        b.utilization_pct,
        a.utilization_pct,
        b.gap_minutes,
        a.gap_minutes,
        a.waitlisted_placed,
        a.moved,
        args.max_moves.map(|m| format!(" of {m}")).unwrap_or_default(),
        outcome.wall.as_secs_f64()
    );
    Ok(())
}

fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::new(&settings.log_level);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match settings.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
    };
}
