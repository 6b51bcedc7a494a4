//! A YAML tree that remembers where each node came from, so every problem of a DAG file can be
//! reported as `path:line:col: message`.
//!
//! serde_yaml reads YAML well but forgets positions, stops at the first error and rejects
//! duplicate keys before we can say which task id is repeated. So DAG files are read from the
//! event stream of yaml-rust2's parser into this small tree, and decoded by hand (`decode.rs`).
//! Scalars resolve by the YAML 1.2 core schema: `yes`/`on` are strings, dates are strings.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

impl From<Marker> for Pos {
    fn from(mark: Marker) -> Self {
        Pos {
            line: mark.line() as u32,
            col: mark.col() as u32 + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in file order. Duplicate keys are kept: the decoder reports them.
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// What a user would call this kind of value, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(text) => Some(text),
            _ => None,
        }
    }
}

/// A YAML syntax error, or a document this loader does not accept.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// The most that aliases may add to a document, counted as nodes plus the characters of their
/// scalars: each alias copies its anchor's value, and a chain of anchors each listing the one
/// before ten times grows tenfold per level (a 445-byte file expands to gigabytes). A real DAG
/// file's anchors (shared defaults, a common `env`) add a few thousand.
pub const MOST_ADDED_BY_ALIASES: usize = 1_000_000;

/// The deepest nesting of lists and mappings a document may have.
pub const DEEPEST_NESTING: usize = 64;

/// Parses one YAML document. An empty file is `Null`.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder {
        text,
        stack: Vec::new(),
        anchors: HashMap::new(),
        added_by_aliases: 0,
        documents: Vec::new(),
        error: None,
    };
    let mut parser = Parser::new_from_str(text);
    if let Err(error) = parser.load(&mut builder, true) {
        return Err(SyntaxError {
            pos: (*error.marker()).into(),
            message: format!("yaml syntax: {}", error.info()),
        });
    }
    if let Some(error) = builder.error {
        return Err(error);
    }
    Ok(builder.documents.into_iter().next().unwrap_or(Node {
        pos: Pos { line: 1, col: 1 },
        value: Value::Null,
    }))
}

/// Builds nodes from parser events: a stack of open collections. After the first error the
/// remaining events are ignored.
struct Builder<'a> {
    text: &'a str,
    /// Each open collection with its anchor (0 for none).
    stack: Vec<(Node, usize)>,
    /// Each anchor's value and its size (see [`size`]).
    anchors: HashMap<usize, (Node, usize)>,
    /// What the aliases so far added (see [`MOST_ADDED_BY_ALIASES`]).
    added_by_aliases: usize,
    documents: Vec<Node>,
    error: Option<SyntaxError>,
}

/// A node's size as [`MOST_ADDED_BY_ALIASES`] counts it: its nodes and their scalars' lengths.
fn size(node: &Node) -> usize {
    match &node.value {
        Value::Str(text) => 1 + text.len(),
        Value::Seq(items) => 1 + items.iter().map(size).sum::<usize>(),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|(key, value)| size(key) + size(value))
                .sum::<usize>()
        }
        _ => 1,
    }
}

impl Builder<'_> {
    fn fail(&mut self, pos: Pos, message: String) {
        self.error.get_or_insert(SyntaxError { pos, message });
    }

    /// The alias written at `mark` (`*name`), as the file spells it.
    fn alias_name(&self, mark: Marker) -> String {
        let name: String = self
            .text
            .chars()
            .skip(mark.index())
            .take_while(|c| !c.is_whitespace() && !matches!(c, ',' | ']' | '}'))
            .take(64)
            .collect();
        match name.starts_with('*') {
            true => name,
            false => "an alias".to_owned(),
        }
    }

    fn push(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            let size = size(&node);
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            Some((parent, _)) => match &mut parent.value {
                Value::Seq(items) => items.push(node),
                Value::Map(entries) => {
                    // A key arrives first and waits, paired with a placeholder, for its value.
                    match entries.last_mut() {
                        Some((_, value)) if value.pos == PENDING => *value = node,
                        _ => entries.push((
                            node,
                            Node {
                                pos: PENDING,
                                value: Value::Null,
                            },
                        )),
                    }
                }
                _ => unreachable!("only collections are pushed on the stack"),
            },
            None if self.documents.is_empty() => self.documents.push(node),
            None => self.fail(
                node.pos,
                "a DAG file holds one YAML document; remove the second `---`".to_owned(),
            ),
        }
    }
}

/// Marks a map entry whose value has not arrived yet. Line 0 never occurs in a real position.
const PENDING: Pos = Pos { line: 0, col: 0 };

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let pos = Pos::from(mark);
        if matches!(event, Event::SequenceStart(..) | Event::MappingStart(..))
            && self.stack.len() >= DEEPEST_NESTING
        {
            self.fail(
                pos,
                format!("lists and mappings are nested more than {DEEPEST_NESTING} deep here"),
            );
            return;
        }
        match event {
            Event::Scalar(text, style, anchor, _tag) => {
                let value = if style == TScalarStyle::Plain {
                    resolve_plain(text)
                } else {
                    Value::Str(text)
                };
                self.push(Node { pos, value }, anchor);
            }
            Event::SequenceStart(anchor, _) => self.stack.push((
                Node {
                    pos,
                    value: Value::Seq(Vec::new()),
                },
                anchor,
            )),
            Event::MappingStart(anchor, _) => self.stack.push((
                Node {
                    pos,
                    value: Value::Map(Vec::new()),
                },
                anchor,
            )),
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = self.stack.pop().expect("parser balances collections");
                self.push(node, anchor);
            }
            Event::Alias(id) => {
                let node = match self.anchors.get(&id) {
                    Some((target, size)) => {
                        self.added_by_aliases += size;
                        if self.added_by_aliases > MOST_ADDED_BY_ALIASES {
                            let alias = self.alias_name(mark);
                            self.fail(
                                pos,
                                format!(
                                    "the YAML aliases up to {alias} add more than \
                                     {MOST_ADDED_BY_ALIASES} nodes and characters to the file \
                                     (each alias copies its anchor's value; anchors that repeat \
                                     each other grow tenfold per level): use fewer aliases"
                                ),
                            );
                            return;
                        }
                        Node {
                            pos,
                            value: target.value.clone(),
                        }
                    }
                    None => Node {
                        pos,
                        value: Value::Null,
                    },
                };
                self.push(node, 0);
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

/// The YAML 1.2 core schema for plain scalars.
fn resolve_plain(text: String) -> Value {
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let first = text.as_bytes()[0];
    if first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.') {
        if let Some(int) = parse_int(&text) {
            return Value::Int(int);
        }
        if text.bytes().any(|b| b.is_ascii_digit())
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
            && let Ok(float) = text.parse::<f64>()
        {
            return Value::Float(float);
        }
    }
    Value::Str(text)
}

fn parse_int(text: &str) -> Option<i64> {
    if let Some(hex) = text.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()
    } else if let Some(octal) = text.strip_prefix("0o") {
        i64::from_str_radix(octal, 8).ok()
    } else {
        text.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(node: &Node) -> &[(Node, Node)] {
        match &node.value {
            Value::Map(entries) => entries,
            other => panic!("expected a mapping, found {other:?}"),
        }
    }

    #[test]
    fn keeps_positions_and_file_order() {
        let root = parse("b: 1\na:\n  - x\n  - 'y'\n").unwrap();
        let entries = map(&root);
        assert_eq!(entries[0].0.as_str(), Some("b"));
        assert_eq!(entries[0].1.pos, Pos { line: 1, col: 4 });
        assert_eq!(entries[1].0.pos, Pos { line: 2, col: 1 });
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("expected a list")
        };
        assert_eq!(items[1].pos, Pos { line: 4, col: 5 });
        assert_eq!(items[1].value, Value::Str("y".into()));
    }

    #[test]
    fn resolves_the_core_schema() {
        let root =
            parse("a: ~\nb: yes\nc: 0x1F\nd: 2024-01-01\ne: 1.5\nf: '1'\ng: -3\nh: true").unwrap();
        let values: Vec<_> = map(&root).iter().map(|(_, v)| v.value.clone()).collect();
        assert_eq!(
            values,
            vec![
                Value::Null,
                Value::Str("yes".into()),
                Value::Int(31),
                Value::Str("2024-01-01".into()),
                Value::Float(1.5),
                Value::Str("1".into()),
                Value::Int(-3),
                Value::Bool(true),
            ]
        );
    }

    #[test]
    fn keeps_duplicate_keys_for_the_decoder() {
        let root = parse("a: 1\na: 2\n").unwrap();
        assert_eq!(map(&root).len(), 2);
    }

    #[test]
    fn resolves_aliases() {
        let root = parse("x: &common {retries: 2}\ny: *common\n").unwrap();
        assert_eq!(map(&root)[0].1.value, map(&root)[1].1.value);
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let error = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(
            error.message.starts_with("yaml syntax: "),
            "{}",
            error.message
        );
        assert!(error.pos.line >= 1);
    }

    #[test]
    fn refuses_a_second_document() {
        let error = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(error.pos.line, 3);
        assert!(error.message.contains("one YAML document"));
    }

    #[test]
    fn refuses_aliases_that_grow_a_file_past_the_bound_and_names_the_alias() {
        // Eight levels of ten: 10^8 nodes if expanded.
        let mut text = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n".to_owned();
        for level in 1..8 {
            let before = format!("*a{}", level - 1);
            let items = [before.as_str(); 10].join(", ");
            text.push_str(&format!("a{level}: &a{level} [{items}]\n"));
        }
        let error = parse(&text).unwrap_err();
        assert!(error.message.contains("*a4"), "{}", error.message);
        assert!(error.message.contains("aliases"), "{}", error.message);
        assert_eq!(error.pos.line, 6);
        // Shared defaults, used often, stay well within it.
        let mut text =
            "defaults: &defaults {retries: 2, retry_delay: 5m, pool: etl}\ntasks:\n".to_owned();
        for task in 0..2000 {
            text.push_str(&format!("  t{task}: {{<<: *defaults, run: \"true\"}}\n"));
        }
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn refuses_nesting_past_the_bound() {
        let deep = format!("{}{}", "[".repeat(70), "]".repeat(70));
        let error = parse(&deep).unwrap_err();
        assert!(
            error.message.contains("nested more than 64"),
            "{}",
            error.message
        );
        assert_eq!(error.pos, Pos { line: 1, col: 65 });
        // Deeper still, the parser's own limit speaks first.
        let deeper = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse(&deeper).is_err());
        let fine = format!("a: {}{}", "[".repeat(60), "]".repeat(60));
        assert!(parse(&fine).is_ok());
    }

    #[test]
    fn empty_text_is_null() {
        assert_eq!(parse("").unwrap().value, Value::Null);
    }
}
