use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cedar::config::Cli::parse();
    match cedar::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cedar: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
