//! `silo serve` configuration: flags, `SILO_*` environment variables and an optional TOML file.
//!
//! Each setting is declared once, in [`settings`]. Precedence, highest first: a flag, its
//! environment variable, the file, the default. clap resolves flag over variable over default;
//! [`ServeArgs::resolve`] then lets the file fill in every setting that clap took from its
//! default. `silo config show` prints the result with secrets masked.

mod settings;
#[cfg(test)]
mod table;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches};

pub use settings::{DEFAULT_DATA_DIR, LogFormat, ServeConfig};

/// The flags of `silo serve` (and `silo config show`).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "SILO_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: ServeConfig,
}

impl ServeArgs {
    /// The settings: the flags and variables given in `matches` (this subcommand's), over the
    /// file, over the defaults.
    ///
    /// # Errors
    /// When the file cannot be read or holds an unknown key or a bad value.
    pub fn resolve(&self, matches: &ArgMatches) -> anyhow::Result<ServeConfig> {
        let mut config = match &self.config {
            Some(path) => read_file(path)?,
            None => ServeConfig::default(),
        };
        config.update_from_arg_matches(&given(matches)).context("the command line")?;
        Ok(config)
    }

    /// `silo config show`: the resolved configuration as TOML, secrets masked.
    ///
    /// # Errors
    /// See [`ServeArgs::resolve`].
    pub fn show(&self, matches: &ArgMatches) -> anyhow::Result<()> {
        let config = self.resolve(matches)?;
        print!("{}", toml::to_string(&config).context("the configuration as TOML")?);
        Ok(())
    }
}

/// `matches` without what clap filled in from defaults: what a flag or a variable gave.
fn given(matches: &ArgMatches) -> ArgMatches {
    let mut given = matches.clone();
    for id in matches.ids() {
        if matches.value_source(id.as_str()) == Some(ValueSource::DefaultValue) {
            let _ = given.try_clear_id(id.as_str());
        }
    }
    given
}

fn read_file(path: &Path) -> anyhow::Result<ServeConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn resolve<const N: usize>(args: [&str; N]) -> anyhow::Result<ServeConfig> {
        let matches = Wrapper::command().try_get_matches_from(std::iter::once("silo").chain(args))?;
        Wrapper::from_arg_matches(&matches)?.args.resolve(&matches)
    }

    fn file(contents: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), contents).unwrap();
        file
    }

    fn resolve_file(contents: &str) -> anyhow::Result<ServeConfig> {
        let toml = file(contents);
        resolve(["--config", toml.path().to_str().unwrap()])
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let config = resolve([]).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("./silo-data"));
        assert_eq!(config.listen.to_string(), "127.0.0.1:8420");
        assert_eq!(config.postgres_os_user, "postgres");
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.region().as_str(), "us-east-1");
        assert_eq!(config.connection_cap(), 1024);
        assert_eq!(config.metrics_listen, None, "metrics are off the public port unless asked for");
        assert_eq!(config.gc_interval(), Some(Duration::from_secs(300)));
        assert_eq!(config.final_backup_retention(), Duration::from_secs(30 * 24 * 3600));
    }

    #[test]
    fn front_door_limits_come_from_the_file() {
        let config = resolve_file(
            "max_connections = 10\nheader_timeout_secs = 3\nidle_timeout_secs = 4\nmetrics_listen = \"127.0.0.1:9500\"\n",
        )
        .unwrap();
        assert_eq!((config.connection_cap(), config.header_timeout()), (10, Duration::from_secs(3)));
        assert_eq!(config.idle_timeout(), Duration::from_secs(4));
        assert_eq!(config.metrics_listen.map(|a| a.port()), Some(9500));
    }

    #[test]
    fn the_region_comes_from_a_flag_or_the_file_and_must_be_lowercase() {
        assert_eq!(resolve_file("region = \"eu-central-1\"\n").unwrap().region().as_str(), "eu-central-1");
        assert_eq!(resolve(["--region", "auto"]).unwrap().region().as_str(), "auto");
        let err = format!("{:#}", resolve(["--region", "US"]).unwrap_err());
        assert!(err.contains("--region"), "{err}");
        let err = format!("{:#}", resolve_file("region = \"US\"\n").unwrap_err());
        assert!(err.contains("region") && err.contains("lowercase"), "{err}");
    }

    #[test]
    fn a_flag_beats_the_file_and_the_file_beats_the_default() {
        let toml = file("listen = \"127.0.0.1:9000\"\ndata_dir = \"/srv/silo\"\nlog_format = \"json\"\n");
        let path = toml.path().to_str().unwrap();
        let config = resolve(["--config", path, "--listen", "127.0.0.1:9100"]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(config.data_dir, PathBuf::from("/srv/silo"));
        assert_eq!(config.log_format, LogFormat::Json);
    }

    #[test]
    fn a_flag_equal_to_the_default_still_beats_the_file() {
        let toml = file("gc_interval_secs = 5\n");
        let config =
            resolve(["--config", toml.path().to_str().unwrap(), "--gc-interval-secs", "300"]).unwrap();
        assert_eq!(config.gc_interval(), Some(Duration::from_secs(300)));
    }

    #[test]
    fn zero_turns_background_gc_off_and_floors_keep_intervals_positive() {
        let config = resolve(["--gc-interval-secs", "0", "--idle-timeout-secs", "0"]).unwrap();
        assert_eq!(config.gc_interval(), None);
        assert_eq!(config.idle_timeout(), Duration::from_secs(1));
    }

    #[test]
    fn the_store_table_sets_chunk_sizes() {
        let config =
            resolve_file("[store]\nchunk_sizes = { min = 65536, avg = 262144, max = 1048576 }\n").unwrap();
        assert_eq!(config.store.chunk_sizes.avg, 262144);
        assert_eq!(config.store.compression.min_saving, 0.10, "unset keys keep their defaults");
    }

    #[test]
    fn plans_come_from_the_file_beside_the_defaults() {
        let config = resolve_file(
            "[plans.tiny]\nconnection_limit = 3\nstorage_quota_bytes = 1000\nstatement_timeout_ms = 500\n\
             backup_retention = { keep_last = 2 }\n",
        )
        .unwrap();
        let tiny = config.plans.get("tiny").unwrap();
        assert_eq!((tiny.connection_limit, tiny.storage_quota_bytes), (3, 1000));
        assert_eq!((tiny.backup_retention.keep_last, tiny.backup_retention.daily), (2, 7));
        assert!(config.plans.get("small").is_some() && config.plans.get("large").is_some());
    }

    #[test]
    fn an_unknown_key_in_the_file_is_an_error() {
        let err = format!("{:#}", resolve_file("listne = \"127.0.0.1:9000\"\n").unwrap_err());
        assert!(err.contains("listne"), "{err}");
    }

    #[test]
    fn internal_tls_settings_must_fit_together() {
        let listen = ["--internal-listen", "127.0.0.1:9421"];
        let pair = ["--internal-tls-cert", "node.pem", "--internal-tls-key", "node.key"];
        let ca = ["--internal-tls-ca", "ca.pem"];
        let ok = |args: Vec<&str>| resolve_vec(&args).internal_tls_pair().map(|pair| pair.is_some());
        // Plain HTTP, as before: nothing to check.
        assert_eq!(ok(vec![]), Ok(false));
        assert_eq!(ok([&listen[..], &["--internal-url", "http://10.0.0.1:9421"]].concat()), Ok(false));
        // HTTPS with its certificate, key and the CA.
        let https = ["--internal-url", "https://node-a.silo.svc:9421"];
        assert_eq!(ok([&listen[..], &pair, &ca, &https].concat()), Ok(true));
        // A CA alone (a node without a TLS listener that reaches TLS peers).
        assert_eq!(ok(ca.to_vec()), Ok(false));
        let err = |args: Vec<&str>| resolve_vec(&args).internal_tls_pair().unwrap_err();
        assert!(err([&listen[..], &pair[..2]].concat()).contains("go together"));
        assert!(err([&listen[..], &pair[2..]].concat()).contains("go together"));
        assert!(err(pair.to_vec()).contains("--internal-listen"));
        let no_ca = err([&listen[..], &pair, &https].concat());
        assert!(no_ca.contains("--internal-tls-ca") && no_ca.contains("https"), "{no_ca}");
        let no_cert = err([&listen[..], &ca, &https].concat());
        assert!(no_cert.contains("--internal-tls-cert"), "{no_cert}");
        let plain = err([&listen[..], &pair, &ca, &["--internal-url", "http://node-a:9421"]].concat());
        assert!(plain.contains("serves HTTPS"), "{plain}");
        // The file's keys are checked the same way.
        let file_err = resolve_file("internal_listen = \"127.0.0.1:9421\"\ninternal_tls_cert = \"n.pem\"\n")
            .unwrap()
            .internal_tls_pair()
            .unwrap_err();
        assert!(file_err.contains("go together"), "{file_err}");
    }

    fn resolve_vec(args: &[&str]) -> ServeConfig {
        let matches = Wrapper::command()
            .try_get_matches_from(std::iter::once("silo").chain(args.iter().copied()))
            .unwrap();
        Wrapper::from_arg_matches(&matches).unwrap().args.resolve(&matches).unwrap()
    }

    #[test]
    fn the_postgres_url_never_shows_in_debug_output_or_in_the_shown_toml() {
        let config = resolve(["--postgres-url", "postgresql://u:hunter2@db/silo"]).unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let shown = toml::to_string(&config).unwrap();
        assert!(!shown.contains("hunter2") && shown.contains("postgres_url"), "{shown}");
        assert_eq!(config.postgres_url.unwrap().expose(), "postgresql://u:hunter2@db/silo");
    }

    #[test]
    fn the_shown_toml_reads_back_as_the_same_configuration() {
        let toml = file(
            "listen = \"127.0.0.1:9000\"\nspare_databases = 0\n[plans.tiny]\nconnection_limit = 3\n\
             storage_quota_bytes = 1000\nstatement_timeout_ms = 500\n",
        );
        let config = resolve(["--config", toml.path().to_str().unwrap(), "--zone", "z2"]).unwrap();
        let shown = toml::to_string(&config).unwrap();
        let again = resolve_file(&shown).unwrap();
        assert_eq!(toml::to_string(&again).unwrap(), shown);
        assert_eq!((again.zone.as_str(), again.spare_databases), ("z2", 0));
    }

    #[test]
    fn every_setting_has_a_silo_variable_named_after_its_file_key() {
        for arg in ServeArgs::augment_args(clap::Command::new("silo")).get_arguments() {
            let env = arg.get_env().map(|env| env.to_string_lossy().into_owned());
            let expected = format!("SILO_{}", arg.get_id().as_str().to_uppercase());
            assert_eq!(env.as_deref(), Some(expected.as_str()), "{}", arg.get_id());
        }
    }
}
