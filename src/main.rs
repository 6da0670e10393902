//! The `densam` command line: subcommands only; the work lives in the library.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "densam", version, about = "Dense SAM 2 annotations for videos of any length")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {}
}
