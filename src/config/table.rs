//! The table of settings in docs/operations.md, generated from the one declaration in
//! [`super::settings`] and checked by a test: `SILO_BLESS=1 cargo test --bin silo settings_table`
//! rewrites it.

use clap::Args;

use super::ServeArgs;

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md");
const BEGIN: &str = "<!-- settings: generated from src/config/settings.rs by `SILO_BLESS=1 cargo test --bin silo settings_table` -->\n";
const END: &str = "<!-- end of settings -->\n";

/// The settings that are not flags: file tables and variables only Silo's start reads.
const OTHER_ROWS: &str = "\
| | | `[plans.<name>]` | `small`, `medium`, `large` | database plans: see [databases.md](databases.md#plans) |
| | | `[store]` | see below | the chunk store's tunables |
| | `SILO_SERVER_SECRET` | | generated | 64 hex digits: the secret chunk ids derive from; it must be the one the catalog was first used with |
| | `SILO_ADMIN_TOKEN` | | generated | the admin token for `/v1`; overrides the one in the data directory |
| | `SILO_LOG` | | `info,s3s=warn` | log filter (`tracing` directives, e.g. `info,db_manager=debug`) |
";

/// The markdown table: one row per flag, then [`OTHER_ROWS`].
fn table() -> String {
    let mut out = String::from("| flag | variable | file key | default | meaning |\n|---|---|---|---|---|\n");
    for arg in ServeArgs::augment_args(clap::Command::new("silo")).get_arguments() {
        let id = arg.get_id().as_str();
        let code = |text: &str| format!("`{text}`");
        let flag = arg.get_long().map(|long| code(&format!("--{long}"))).unwrap_or_default();
        let env = arg.get_env().map(|env| code(&env.to_string_lossy())).unwrap_or_default();
        let key = if id == "config" { String::new() } else { code(id) };
        let defaults: Vec<String> =
            arg.get_default_values().iter().map(|value| code(&value.to_string_lossy())).collect();
        let default = if defaults.is_empty() { "none".to_string() } else { defaults.join(", ") };
        let doc = arg.get_long_help().or(arg.get_help()).map(ToString::to_string).unwrap_or_default();
        let meaning = doc.split_whitespace().collect::<Vec<_>>().join(" ");
        out.push_str(&format!("| {flag} | {env} | {key} | {default} | {meaning} |\n"));
    }
    out.push_str(OTHER_ROWS);
    out
}

#[test]
fn the_settings_table_in_operations_md_is_generated_from_the_declaration() {
    let expected = table();
    let generated = || {
        let doc = std::fs::read_to_string(DOC).unwrap();
        let start = doc.find(BEGIN).expect("the begin marker in docs/operations.md") + BEGIN.len();
        let end = start + doc[start..].find(END).expect("the end marker in docs/operations.md");
        (doc[..start].to_string(), doc[start..end].to_string(), doc[end..].to_string())
    };
    if std::env::var_os("SILO_BLESS").is_some() {
        let (before, _, after) = generated();
        std::fs::write(DOC, format!("{before}{expected}{after}")).unwrap();
    }
    let (_, found, _) = generated();
    assert_eq!(found, expected, "regenerate with SILO_BLESS=1 cargo test --bin silo settings_table");
}
