//! The `silo` binary: the command line, wired to the server and the libraries.

mod admin;
mod backups;
mod catalog_restore;
mod cli;
mod client;
mod config;
mod databases;
mod http;
mod logging;
mod serve;
mod tenants;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Serve(args) => serve::run(*args),
        cli::Command::Gc(args) => admin::gc(args),
        cli::Command::Scrub(args) => admin::scrub(args),
        cli::Command::Tenant(command) => tenants::tenant(command),
        cli::Command::Key(command) => tenants::key(command),
        cli::Command::Usage { tenant, client } => tenants::usage(&tenant, &client),
        cli::Command::Db(command) => databases::db(command),
        cli::Command::Backup(command) => backups::backup(command),
        cli::Command::Catalog(cli::CatalogCommand::Restore(args)) => catalog_restore::restore(args),
        cli::Command::Server(command) => databases::server(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
