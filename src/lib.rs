//! Cedar: the backend of a small music school. See `docs/architecture.md`.
//!
//! The binary (`src/main.rs`) only parses the command line and calls [`run`].

pub mod app;
pub mod config;
pub mod db;
pub mod error;
pub mod ops;

use config::{Cli, Command, LogFormat, Settings};

/// Runs one command of the `cedar` binary.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
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
    match cli.command {
        Command::Serve(args) => app::serve(settings, args.no_worker).await,
        Command::Migrate => {
            let db = db::Db::connect(&settings).await?;
            let applied = db.migrate().await?;
            println!(
                "{}: {applied} migration(s) applied; {} in total",
                settings.database_url,
                db.applied_migrations().await?
            );
            db.close().await;
            Ok(())
        }
        Command::Openapi => {
            println!("{}", app::openapi().to_pretty_json()?);
            Ok(())
        }
    }
}

fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::new(&settings.log_level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
