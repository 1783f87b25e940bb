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
mod nodes;
mod placement;
mod registration;
mod secret;
mod serve;
mod tenants;

use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    storage_node::store::allocator::tune();
    let matches = cli::Cli::command().get_matches();
    let cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    // `serve` and `config show` need to know which settings a flag or variable gave.
    let settings_matches = innermost(&matches);
    let client = &cli.client;
    let result = match cli.command {
        cli::Command::Serve(args) => args.resolve(settings_matches).and_then(serve::run),
        cli::Command::Config(cli::ConfigCommand::Show(args)) => args.show(settings_matches),
        cli::Command::Gc => admin::gc(client),
        cli::Command::Scrub(args) => admin::scrub(args, client),
        cli::Command::Tenant(command) => tenants::tenant(command, client),
        cli::Command::Key(command) => tenants::key(command, client),
        cli::Command::Usage { tenant } => tenants::usage(&tenant, client),
        cli::Command::Db(command) => databases::db(command, client),
        cli::Command::Backup(command) => backups::backup(command, client),
        cli::Command::Catalog(cli::CatalogCommand::Restore(args)) => catalog_restore::restore(args),
        cli::Command::Server(command) => databases::server(command, client),
        cli::Command::Node(command) => nodes::node(command, client),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The matches of the innermost subcommand given.
fn innermost(matches: &ArgMatches) -> &ArgMatches {
    match matches.subcommand() {
        Some((_, sub)) => innermost(sub),
        None => matches,
    }
}
