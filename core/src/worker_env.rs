//! What a try's processes get of their worker's environment: a few basics, the names the DAG,
//! the task or the worker lists (`inherit_env`), and nothing else. The rest of a try's
//! environment is what the DAG declares and the `UPDRAFT_*` context of the try.
//!
//! Updraft's own variables (`UPDRAFT_*`, among them the metadata database's URL) are never
//! passed on: no list may name them.

/// Passed on from the worker when it has them.
pub const BASICS: &[&str] = &["PATH", "HOME", "LANG", "TZ", "USER"];

/// `PATH` when the worker has none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Why `name` cannot be inherited, if it cannot: it must be a variable name (letters, digits
/// and `_`, not starting with a digit) outside `UPDRAFT_*`.
pub fn check_inherited_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let identifier = matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !identifier {
        return Err(format!(
            "\"{name}\" is not a variable name (letters, digits and '_', not starting with a \
             digit)"
        ));
    }
    if name.starts_with("UPDRAFT_") {
        return Err(format!(
            "\"{name}\": variables named UPDRAFT_* are Updraft's own and are never passed to a \
             task (set what a task needs in the DAG's env)"
        ));
    }
    Ok(())
}

/// The names a try inherits: [`BASICS`], then `listed` (the DAG's, the task's and the
/// worker's lists), each once, in that order.
pub fn inherited<'a>(listed: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut names: Vec<&str> = BASICS.to_vec();
    for name in listed {
        if !names.contains(&name) && check_inherited_name(name).is_ok() {
            names.push(name);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updraft_names_and_non_names_are_refused() {
        assert!(check_inherited_name("AWS_PROFILE").is_ok());
        assert!(check_inherited_name("_X1").is_ok());
        assert!(
            check_inherited_name("UPDRAFT_DATABASE_URL")
                .unwrap_err()
                .contains("never passed to a task")
        );
        assert!(
            check_inherited_name("1X")
                .unwrap_err()
                .contains("not a variable name")
        );
        assert!(check_inherited_name("A-B").is_err());
        assert!(check_inherited_name("").is_err());
    }

    #[test]
    fn the_basics_come_first_and_each_name_once() {
        assert_eq!(
            inherited([
                "AWS_PROFILE",
                "PATH",
                "AWS_PROFILE",
                "UPDRAFT_HOME",
                "GOOGLE_APPLICATION_CREDENTIALS"
            ]),
            [
                "PATH",
                "HOME",
                "LANG",
                "TZ",
                "USER",
                "AWS_PROFILE",
                "GOOGLE_APPLICATION_CREDENTIALS"
            ]
        );
    }
}
