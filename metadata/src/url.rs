//! Database URLs as they may appear in messages: without their password.

/// `url` with any password replaced by `***`: the one in `user:password@` and a `password=`
/// query parameter (both are accepted by Postgres URLs). Everything else is kept, so the message
/// still says which database was meant.
///
/// ```
/// use updraft_metadata::redact_url;
/// assert_eq!(
///     redact_url("postgres://ada:s3cret@db:5432/updraft"),
///     "postgres://ada:***@db:5432/updraft"
/// );
/// assert_eq!(redact_url("sqlite:/var/lib/updraft.db"), "sqlite:/var/lib/updraft.db");
/// ```
pub fn redact_url(url: &str) -> String {
    let url = redact_userinfo(url);
    let Some((base, query)) = url.split_once('?') else {
        return url;
    };
    let parameters: Vec<String> = query
        .split('&')
        .map(|parameter| match parameter.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => parameter.to_owned(),
        })
        .collect();
    format!("{base}?{}", parameters.join("&"))
}

/// Redacts the password of `scheme://user:password@host...`. The host follows the last '@', so
/// an unencoded '@', '/' or '?' in the password is redacted too: this errs towards hiding more.
fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn hides_the_password_of_the_userinfo() {
        assert_eq!(
            redact_url("postgresql://ada:p%40ss@localhost/updraft?sslmode=require"),
            "postgresql://ada:***@localhost/updraft?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://ada:p@s/s?w@localhost/updraft"),
            "postgres://ada:***@localhost/updraft"
        );
    }

    #[test]
    fn hides_a_password_query_parameter() {
        assert_eq!(
            redact_url("postgres://localhost/updraft?user=ada&password=s3cret&sslmode=disable"),
            "postgres://localhost/updraft?user=ada&password=***&sslmode=disable"
        );
    }

    #[test]
    fn keeps_urls_without_a_password() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://localhost/updraft",
            "sqlite:/home/ada/.updraft/updraft.db",
            "sqlite://relative.db?mode=rwc",
            "sqlite::memory:",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }
}
