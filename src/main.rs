use clap::Parser;

fn main() -> std::process::ExitCode {
    pvc_guard::cli::run(pvc_guard::cli::Cli::parse())
}
