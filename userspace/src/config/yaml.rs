//! The config file as a tree of YAML nodes that remember their line, and a
//! small reader over it that knows the key path of every value it hands out.
//!
//! A generic deserializer knows where it is in the file only while it
//! deserializes; the checks that come later (unknown sets, ports the policy
//! compiler refuses) need the line of a key long after. So the file is read
//! once into [`Node`]s built from yaml-rust2's marked events, and every error,
//! early or late, is reported against the same tree. This is not a general
//! YAML library: tags are ignored, every scalar is text until the reader asks
//! for a type, and mapping keys must be scalars.
use std::collections::BTreeMap;

use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser},
    scanner::{Marker, TScalarStyle},
};

use super::ConfigError;

/// One YAML node and the line (1-based) where it starts.
#[derive(Clone, Debug)]
pub(super) struct Node {
    pub line: usize,
    pub value: Value,
}

#[derive(Clone, Debug)]
pub(super) enum Value {
    /// `~`, `null` or nothing at all after a key.
    Null,
    /// Any other scalar, quoted or not, as written.
    Scalar(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub key: String,
    pub key_line: usize,
    pub value: Node,
}

/// Parses one YAML document. `Ok(None)` for a file with no document (empty,
/// or only comments).
pub(super) fn load(text: &str) -> Result<Option<Node>, ConfigError> {
    let mut builder = TreeBuilder::default();
    Parser::new_from_str(text)
        .load(&mut builder, true)
        .map_err(|e| {
            ConfigError::new(
                "",
                Some(e.marker().line()),
                format!("this is not valid YAML: {}", e.info()),
            )
        })?;
    if let Some(error) = builder.error {
        return Err(error);
    }
    Ok(builder.root)
}

/// Receives parser events and assembles them into a [`Node`] tree.
#[derive(Default)]
struct TreeBuilder {
    stack: Vec<Frame>,
    anchors: BTreeMap<usize, Node>,
    documents: usize,
    root: Option<Node>,
    error: Option<ConfigError>,
}

enum Frame {
    Seq {
        line: usize,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        line: usize,
        anchor: usize,
        entries: Vec<Entry>,
        key: Option<(String, usize)>,
    },
}

impl MarkedEventReceiver for TreeBuilder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let line = mark.line();
        match event {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.fail(
                        line,
                        "a config file holds one YAML document; remove the second `---`",
                    );
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let null = style == TScalarStyle::Plain
                    && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL");
                let value = if null {
                    Value::Null
                } else {
                    Value::Scalar(text)
                };
                self.complete(Node { line, value }, anchor);
            }
            Event::SequenceStart(anchor, _tag) => self.stack.push(Frame::Seq {
                line,
                anchor,
                items: Vec::new(),
            }),
            Event::MappingStart(anchor, _tag) => self.stack.push(Frame::Map {
                line,
                anchor,
                entries: Vec::new(),
                key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    line,
                    anchor,
                    items,
                }) => self.complete(
                    Node {
                        line,
                        value: Value::Seq(items),
                    },
                    anchor,
                ),
                Some(Frame::Map {
                    line,
                    anchor,
                    entries,
                    ..
                }) => self.complete(
                    Node {
                        line,
                        value: Value::Map(entries),
                    },
                    anchor,
                ),
                None => self.fail(line, "unbalanced YAML collection"),
            },
            Event::Alias(id) => match self.anchors.get(&id) {
                // The copy reports the alias's line: that is where it is used.
                Some(node) => {
                    let node = Node {
                        line,
                        value: node.value.clone(),
                    };
                    self.complete(node, 0);
                }
                None => self.fail(line, "this alias names no anchor"),
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

impl TreeBuilder {
    fn fail(&mut self, line: usize, message: &str) {
        self.error = Some(ConfigError::new("", Some(line), message));
    }

    /// Hands a finished node to its parent (or makes it the document).
    fn complete(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                Some((key, key_line)) => entries.push(Entry {
                    key,
                    key_line,
                    value: node,
                }),
                None => match node.value {
                    Value::Scalar(text) => *key = Some((text, node.line)),
                    Value::Null => *key = Some((String::new(), node.line)),
                    Value::Seq(_) | Value::Map(_) => self.fail(
                        node.line,
                        "a key must be a plain name, not a list or mapping",
                    ),
                },
            },
        }
    }
}

/// Every key path in the document and the line to report for it: the line of
/// the key for a mapping entry, the line of the item for a list item.
pub(super) fn index_lines(root: Option<&Node>) -> BTreeMap<String, usize> {
    fn walk(node: &Node, path: &str, lines: &mut BTreeMap<String, usize>) {
        match &node.value {
            Value::Map(entries) => {
                for entry in entries {
                    let path = join(path, &entry.key);
                    lines.entry(path.clone()).or_insert(entry.key_line);
                    walk(&entry.value, &path, lines);
                }
            }
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{path}[{i}]");
                    lines.insert(path.clone(), item.line);
                    walk(item, &path, lines);
                }
            }
            Value::Null | Value::Scalar(_) => {}
        }
    }
    let mut lines = BTreeMap::new();
    if let Some(root) = root {
        walk(root, "", &mut lines);
    }
    lines
}

/// `filter` + `sets` = `filter.sets`; the root path is empty.
pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A value in the document, with the key path and line that errors about it
/// name.
#[derive(Clone, Copy)]
pub(super) struct Val<'a> {
    pub node: &'a Node,
    /// The line an error about this value points at: the scalar's own line,
    /// or for a null or a collection the line of the key that introduced it.
    pub line: usize,
}

/// A checked mapping: every key is one the caller knows, none twice.
pub(super) struct Table<'a> {
    path: String,
    entries: &'a [Entry],
}

impl<'a> Val<'a> {
    pub fn root(node: &'a Node) -> Self {
        Val {
            node,
            line: node.line,
        }
    }

    pub fn error(&self, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(path, Some(self.line), message)
    }

    /// The value as a mapping whose keys are all in `known` (a null value is
    /// an empty mapping). An unknown key is reported with the nearest known
    /// one when it looks like a typo.
    pub fn table(&self, path: &str, known: &[&str]) -> Result<Table<'a>, ConfigError> {
        #[cfg(test)]
        KNOWN_KEYS.with(|keys| {
            keys.borrow_mut()
                .extend(known.iter().map(|k| k.to_string()))
        });
        let entries: &'a [Entry] = match &self.node.value {
            Value::Map(entries) => entries,
            Value::Null => &[],
            other => {
                return Err(self.error(
                    path,
                    format!(
                        "expected a mapping (`key: value` lines or {{ key: value }}), found {}",
                        describe(other)
                    ),
                ))
            }
        };
        for (i, entry) in entries.iter().enumerate() {
            let key_path = join(path, &entry.key);
            if !known.contains(&entry.key.as_str()) {
                let hint = match closest_name(&entry.key, known.iter().copied()) {
                    Some(near) => format!(" (did you mean `{near}`?)"),
                    None => format!("; expected one of: {}", known.join(", ")),
                };
                return Err(ConfigError::new(
                    &key_path,
                    Some(entry.key_line),
                    format!("unknown key `{}`{hint}", entry.key),
                ));
            }
            if let Some(first) = entries[..i].iter().find(|e| e.key == entry.key) {
                return Err(ConfigError::new(
                    &key_path,
                    Some(entry.key_line),
                    format!(
                        "`{}` is given twice (first on line {})",
                        entry.key, first.key_line
                    ),
                ));
            }
        }
        Ok(Table {
            path: path.to_string(),
            entries,
        })
    }

    /// The value as a mapping whose keys are names the file chooses (sets,
    /// entrypoints, services): any key is known, none may appear twice.
    pub fn named_table(&self, path: &str) -> Result<Table<'a>, ConfigError> {
        let names: Vec<&str> = match &self.node.value {
            Value::Map(entries) => entries.iter().map(|e| e.key.as_str()).collect(),
            _ => Vec::new(),
        };
        self.table(path, &names)
    }

    /// The value as a list (a null value is an empty list), each item with its
    /// key path.
    pub fn list(&self, path: &str, example: &str) -> Result<Vec<(String, Val<'a>)>, ConfigError> {
        match &self.node.value {
            Value::Seq(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, node)| {
                    (
                        format!("{path}[{i}]"),
                        Val {
                            node,
                            line: node.line,
                        },
                    )
                })
                .collect()),
            Value::Null => Ok(Vec::new()),
            other => Err(self.error(
                path,
                format!("expected a list like {example}, found {}", describe(other)),
            )),
        }
    }

    /// The value as text; `what` says what was expected, for the error.
    pub fn text(&self, path: &str, what: &str) -> Result<&'a str, ConfigError> {
        match &self.node.value {
            Value::Scalar(text) => Ok(text),
            other => Err(self.error(path, format!("expected {what}, found {}", describe(other)))),
        }
    }
}

impl<'a> Table<'a> {
    /// The key path of `key` in this table.
    pub fn key_path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    pub fn get(&self, key: &str) -> Option<Val<'a>> {
        self.entries.iter().find(|e| e.key == key).map(Entry::val)
    }

    /// Every entry in file order: key, line of the key, value.
    pub fn entries(&self) -> impl Iterator<Item = (&'a str, usize, Val<'a>)> {
        self.entries
            .iter()
            .map(|e| (e.key.as_str(), e.key_line, e.val()))
    }
}

impl Entry {
    fn val(&self) -> Val<'_> {
        Val {
            node: &self.value,
            line: match self.value.value {
                Value::Scalar(_) => self.value.line,
                _ => self.key_line,
            },
        }
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Scalar(_) => "a single value",
        Value::Seq(_) => "a list",
        Value::Map(_) => "a mapping",
    }
}

pub(super) use crate::policy::closest_name;

#[cfg(test)]
thread_local! {
    /// Every key name a table accepted while parsing on this thread: the
    /// test that holds docs/config.md to the reader collects them.
    pub(super) static KNOWN_KEYS: std::cell::RefCell<std::collections::BTreeSet<String>> =
        const { std::cell::RefCell::new(std::collections::BTreeSet::new()) };
}
