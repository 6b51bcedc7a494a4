//! Templates in commands and environment values: Jinja, as Airflow users know it.
//!
//! Templates are rendered when a task instance runs, never at parse time; at parse time this
//! module only checks their syntax and which variables they use, so a typo is reported when the
//! DAG file loads rather than when the task fails at 2 a.m.

use std::collections::BTreeSet;

/// The names a template may use at its top level (Airflow's names). The renderer provides
/// exactly these.
pub const CONTEXT_NAMES: &[&str] = &[
    "ds",
    "ds_nodash",
    "ts",
    "ts_nodash",
    "logical_date",
    "data_interval_start",
    "data_interval_end",
    "run_id",
    "dag_run",
    "params",
    "dag",
    "task",
    "ti",
    "macros",
    "outputs",
    "var",
    "conn",
];

/// A template's syntax error, with the line inside the template when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub message: String,
    /// 1-based line within the template text.
    pub line: Option<usize>,
}

/// True when `text` contains template syntax; plain strings skip the parser entirely.
pub fn is_templated(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// Parses a template and returns the variables it reads that it does not define itself, as
/// dotted paths (`params.region`, `outputs.extract.rows`, `ds`).
pub fn variables(source: &str) -> Result<BTreeSet<String>, TemplateError> {
    let env = minijinja::Environment::empty();
    let template = env
        .template_from_str(source)
        .map_err(|error| TemplateError {
            message: error
                .detail()
                .map(str::to_owned)
                .unwrap_or_else(|| error.kind().to_string()),
            line: error.line(),
        })?;
    Ok(template.undeclared_variables(true).into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_nested_variables() {
        let vars = variables("{{ ds }} {{ params.region }} {% set x = 1 %}{{ x }}").unwrap();
        assert_eq!(
            vars.into_iter().collect::<Vec<_>>(),
            vec!["ds".to_owned(), "params.region".to_owned()]
        );
    }

    #[test]
    fn reports_syntax_errors() {
        let error = variables("echo {{ ds ").unwrap_err();
        assert_eq!(error.line, Some(1));
        assert!(error.message.contains("end of input"), "{}", error.message);
    }

    #[test]
    fn plain_text_is_not_templated() {
        assert!(!is_templated("echo $HOME"));
        assert!(is_templated("echo {{ ds }}"));
    }
}
