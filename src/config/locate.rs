//! Where a key of the config sits in its file, so that every config error can say
//! `file:line:column`, not only the parser's own: a value of the wrong type gets the key's
//! name, and a semantic problem found after parsing (two services on one port) gets the
//! position of the key it is about.
//!
//! The document is read a second time, only when there is an error to place, into a tree of
//! keys and positions that knows nothing of the schema.

use std::fmt::{self, Write as _};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// One step of a path from the document's root to a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

impl From<&str> for Seg {
    fn from(key: &str) -> Seg {
        Seg::Key(key.to_owned())
    }
}

impl From<usize> for Seg {
    fn from(index: usize) -> Seg {
        Seg::Index(index)
    }
}

/// A path as a person reads it: `monitored_services[1].port`.
pub(crate) fn dotted(path: &[Seg]) -> String {
    let mut text = String::new();
    for seg in path {
        match seg {
            Seg::Key(key) if text.is_empty() => text.push_str(key),
            Seg::Key(key) => {
                text.push('.');
                text.push_str(key);
            }
            Seg::Index(index) => {
                let _ = write!(text, "[{index}]");
            }
        }
    }
    text
}

/// A YAML node: keys and items with the position each value starts at.
#[derive(Debug)]
enum Node {
    Map(Vec<(String, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Scalar,
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub line: usize,
    pub column: usize,
}

fn position(spanned: &Spanned<Node>) -> Option<Position> {
    let location = spanned.referenced;
    let line = usize::try_from(location.line()).ok()?;
    let column = usize::try_from(location.column()).ok()?;
    (line > 0).then_some(Position { line, column })
}

/// The config document as keys and positions.
pub(crate) struct Located(Spanned<Node>);

impl Located {
    /// Reads `text` under `options` (the same budget as the real parse); `None` when it is
    /// not a YAML document (then the parser's own error already has a position).
    pub(crate) fn parse(text: &str, options: serde_saphyr::Options) -> Option<Located> {
        serde_saphyr::from_str_with_options(text, options)
            .ok()
            .map(Located)
    }

    /// Where the value of the first of `paths` that the document has starts; when it has
    /// none of them, the deepest part of the first that exists (an entry that lacks the key
    /// is placed at the entry).
    pub(crate) fn position_of_any(&self, paths: &[Vec<Seg>]) -> Option<Position> {
        paths
            .iter()
            .map(|path| self.walk(path))
            .find(|(whole, _)| *whole)
            .or_else(|| Some(self.walk(paths.first()?)))
            .and_then(|(_, found)| found)
    }

    /// Follows `path`: whether all of it exists, and the position of the deepest node
    /// reached.
    fn walk(&self, path: &[Seg]) -> (bool, Option<Position>) {
        let mut node = &self.0;
        let mut found = position(node);
        for seg in path {
            let next = match (&node.value, seg) {
                (Node::Map(entries), Seg::Key(key)) => {
                    entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
                }
                (Node::Seq(items), Seg::Index(index)) => items.get(*index),
                _ => None,
            };
            let Some(next) = next else {
                return (false, found);
            };
            node = next;
            found = position(node).or(found);
        }
        (true, found)
    }

    /// The path of the value that starts at `at` (where the parser reports a value of the
    /// wrong type), when one does.
    pub(crate) fn path_at(&self, at: Position) -> Option<Vec<Seg>> {
        fn walk(node: &Spanned<Node>, at: Position, path: &mut Vec<Seg>) -> bool {
            let children: Vec<(Seg, &Spanned<Node>)> = match &node.value {
                Node::Map(entries) => entries
                    .iter()
                    .map(|(key, value)| (Seg::Key(key.clone()), value))
                    .collect(),
                Node::Seq(items) => items
                    .iter()
                    .enumerate()
                    .map(|(index, item)| (Seg::Index(index), item))
                    .collect(),
                Node::Scalar => Vec::new(),
            };
            for (seg, child) in children {
                path.push(seg);
                if position(child) == Some(at) && matches!(child.value, Node::Scalar) {
                    return true;
                }
                if walk(child, at, path) {
                    return true;
                }
                path.pop();
            }
            false
        }
        let mut path = Vec::new();
        walk(&self.0, at, &mut path).then_some(path)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Key>()? {
            entries.push((key.0, map.next_value()?));
        }
        Ok(Node::Map(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }
}

/// A mapping key of any scalar type, as text.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(Key(key.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, key: i64) -> Result<Key, E> {
                Ok(Key(key.to_string()))
            }
            fn visit_u64<E: de::Error>(self, key: u64) -> Result<Key, E> {
                Ok(Key(key.to_string()))
            }
            fn visit_bool<E: de::Error>(self, key: bool) -> Result<Key, E> {
                Ok(Key(key.to_string()))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "system_name: x\nmonitored_services:\n  - name: web\n    port: 80\n  - name: api\n    port: 81\n    verify_timeout: 10 parsecs\n";

    fn located() -> Located {
        Located::parse(TEXT, serde_saphyr::Options::default()).unwrap()
    }

    #[test]
    fn finds_the_position_of_a_key_path() {
        let path = |index: usize, key: &str| {
            vec![Seg::from("monitored_services"), index.into(), key.into()]
        };
        assert_eq!(
            located().position_of_any(&[path(1, "port")]),
            Some(Position {
                line: 6,
                column: 11
            })
        );
        // The first key the entry has; when it has none, the entry itself.
        assert_eq!(
            located().position_of_any(&[path(0, "unit"), path(0, "port")]),
            Some(Position {
                line: 4,
                column: 11
            })
        );
        assert_eq!(
            located()
                .position_of_any(&[path(0, "unit")])
                .map(|p| p.line),
            Some(3)
        );
    }

    #[test]
    fn names_the_key_of_a_value_by_its_position() {
        let path = located()
            .path_at(Position {
                line: 7,
                column: 21,
            })
            .unwrap();
        assert_eq!(dotted(&path), "monitored_services[1].verify_timeout");
        assert!(located().path_at(Position { line: 1, column: 1 }).is_none());
    }
}
