//! Text shown to people. Values from DAG files, requests and the command line reach messages;
//! their control characters are escaped on the way out, so that a newline in a value cannot
//! forge a second `file:line:col: problem` line and an ANSI escape cannot reach a terminal.

use std::borrow::Cow;
use std::fmt::Write;

/// `text` on one line: every control character escaped (`\n`, `\r`, `\t`, the others as
/// `\u{1b}`), and a backslash before one of those escapes doubled so it cannot pass for one.
pub fn one_line(text: &str) -> Cow<'_, str> {
    escape(text, false)
}

/// `text` with its control characters escaped as in [`one_line`], but its line breaks kept:
/// for messages that are several lines by design.
pub fn lines(text: &str) -> Cow<'_, str> {
    escape(text, true)
}

fn escape(text: &str, keep_newlines: bool) -> Cow<'_, str> {
    let needs = |c: char| c.is_control() && !(keep_newlines && c == '\n');
    if !text.chars().any(needs) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' if keep_newlines => out.push('\n'),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_borrowed() {
        assert!(matches!(one_line("plain \"text\" ü"), Cow::Borrowed(_)));
        assert_eq!(
            one_line("a\nb.yaml:1:1: forged\r\t\u{1b}[31mred\u{7f}\u{9b}"),
            "a\\nb.yaml:1:1: forged\\r\\t\\u{1b}[31mred\\u{7f}\\u{9b}"
        );
        assert_eq!(lines("one\ntwo\u{1b}[0m"), "one\ntwo\\u{1b}[0m");
    }
}
