//! libpq connection URLs (`postgresql://user:password@host:port/dbname`), built with `url` so
//! that user names, passwords, IPv6 addresses and unix-socket directories are encoded in one
//! place, the same way everywhere.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use url::Url;

/// What stays as it is in a socket directory used as a URL's host: RFC 3986's unreserved set.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Why a URL could not be built (a host that no URL can hold).
#[derive(Debug, thiserror::Error)]
#[error("no libpq URL can name host {host:?}")]
pub struct UrlError {
    host: String,
}

/// The URL that reaches `dbname` on `host:port` as `user`. A `host` that starts with `/` is a
/// unix-socket directory, percent-encoded as libpq reads it; an IPv6 address gets brackets.
///
/// # Errors
/// [`UrlError`] for a host that is neither an address, a name nor a socket directory.
pub fn postgres_url(
    user: &str,
    password: &str,
    host: &str,
    port: u16,
    dbname: &str,
) -> Result<String, UrlError> {
    let failed = || UrlError { host: host.to_string() };
    let url_host = if host.starts_with('/') {
        utf8_percent_encode(host, UNRESERVED).to_string()
    } else if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let mut url = Url::parse(&format!("postgresql://{url_host}")).map_err(|_| failed())?;
    url.set_port(Some(port)).map_err(|()| failed())?;
    url.set_username(user).map_err(|()| failed())?;
    url.set_password(Some(password)).map_err(|()| failed())?;
    url.set_path(&format!("/{dbname}"));
    Ok(url.into())
}

#[cfg(test)]
mod tests {
    use super::postgres_url;

    #[test]
    fn ordinary_names_read_as_before() {
        let url = postgres_url("t_db", "Secret123", "127.0.0.1", 5432, "t_db").ok();
        assert_eq!(url.as_deref(), Some("postgresql://t_db:Secret123@127.0.0.1:5432/t_db"));
        let url = postgres_url("silo", "pw", "::1", 6000, "postgres").ok();
        assert_eq!(url.as_deref(), Some("postgresql://silo:pw@[::1]:6000/postgres"));
    }

    #[test]
    fn socket_directories_and_odd_passwords_are_encoded() {
        let url = postgres_url("u", "p@ss/w:rd", "/tmp/silo-x.1/run", 5432, "db").ok();
        assert_eq!(url.as_deref(), Some("postgresql://u:p%40ss%2Fw%3Ard@%2Ftmp%2Fsilo-x.1%2Frun:5432/db"));
        let parsed: Option<tokio_postgres::Config> = url.and_then(|u| u.parse().ok());
        assert_eq!(parsed.as_ref().and_then(|c| c.get_password()), Some(&b"p@ss/w:rd"[..]));
    }
}
