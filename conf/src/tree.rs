//! A spanned TOML tree and a serde `Deserializer` over it that records where every error happened.
//!
//! The deserializer filters keys a struct does not know before serde sees them (each becomes an "unknown key"
//! error at that key), and stamps every other error with the key path and byte span of the value that caused
//! it. The loader uses that to collect all errors of a file, not just the first: it removes the offending value
//! and deserializes again (see [`crate::load`]).

use std::cell::RefCell;
use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One step of a key path: a table key, or an array position.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    /// A table key.
    Key(String),
    /// An array position.
    Index(usize),
}

impl From<&str> for Seg {
    fn from(s: &str) -> Self {
        Seg::Key(s.to_owned())
    }
}

impl From<usize> for Seg {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

/// A dotted key path such as `services[2].backends[0].address`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// This path extended by one step.
    pub fn with(&self, seg: impl Into<Seg>) -> KeyPath {
        let mut v = self.0.clone();
        v.push(seg.into());
        KeyPath(v)
    }
}

/// Builds a [`KeyPath`] from keys and indexes: `path!["services", i, "vip"]`.
#[macro_export]
macro_rules! path {
    ($($seg:expr),* $(,)?) => {
        $crate::tree::KeyPath(vec![$($crate::tree::Seg::from($seg)),*])
    };
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A TOML value with the byte span it came from.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub span: Range<usize>,
    pub kind: Kind,
}

/// The value of a [`Node`]. Arrays keep each element's original position so that paths printed after a
/// removal still name the element as the file numbers it.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Str(String),
    Int(i128),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<(usize, Node)>),
    Table(Vec<Entry>),
}

/// One key of a table.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub key: String,
    pub key_span: Range<usize>,
    pub node: Node,
}

impl Node {
    /// Converts the parser's tree.
    pub fn from_table(t: &Spanned<DeTable<'_>>) -> Node {
        Node {
            span: t.span(),
            kind: Self::table_kind(t.get_ref()),
        }
    }

    fn table_kind(t: &DeTable<'_>) -> Kind {
        Kind::Table(
            t.iter()
                .map(|(k, v)| Entry {
                    key: k.get_ref().to_string(),
                    key_span: k.span(),
                    node: Self::from_value(v),
                })
                .collect(),
        )
    }

    fn from_value(v: &Spanned<DeValue<'_>>) -> Node {
        let kind = match v.get_ref() {
            DeValue::String(s) => Kind::Str(s.to_string()),
            DeValue::Integer(i) => match i128::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Kind::Int(n),
                Err(_) => Kind::Str(i.as_str().to_owned()),
            },
            DeValue::Float(x) => Kind::Float(x.as_str().parse().unwrap_or(f64::NAN)),
            DeValue::Boolean(b) => Kind::Bool(*b),
            DeValue::Datetime(d) => Kind::Datetime(d.to_string()),
            DeValue::Array(a) => Kind::Array(a.iter().map(Self::from_value).enumerate().collect()),
            DeValue::Table(t) => Self::table_kind(t),
        };
        Node { span: v.span(), kind }
    }

    /// Removes the value at `path` (array steps are original positions). Returns whether something was removed.
    pub fn remove(&mut self, path: &[Seg]) -> bool {
        let Some((last, parents)) = path.split_last() else {
            return false;
        };
        let mut node = self;
        for seg in parents {
            match node.child_mut(seg) {
                Some(n) => node = n,
                None => return false,
            }
        }
        match (&mut node.kind, last) {
            (Kind::Table(entries), Seg::Key(k)) => {
                let before = entries.len();
                entries.retain(|e| &e.key != k);
                entries.len() != before
            }
            (Kind::Array(items), Seg::Index(i)) => {
                let before = items.len();
                items.retain(|(orig, _)| orig != i);
                items.len() != before
            }
            _ => false,
        }
    }

    fn child_mut(&mut self, seg: &Seg) -> Option<&mut Node> {
        match (&mut self.kind, seg) {
            (Kind::Table(entries), Seg::Key(k)) => {
                entries.iter_mut().find(|e| &e.key == k).map(|e| &mut e.node)
            }
            (Kind::Array(items), Seg::Index(i)) => items.iter_mut().find(|(o, _)| o == i).map(|(_, n)| n),
            _ => None,
        }
    }

    /// Finds the value a typed path names (array steps are positions in the deserialized vectors). Returns
    /// the path as the file numbers it and the span of the deepest value that exists (a key that was left to
    /// its default points at its table).
    pub fn locate(&self, typed: &KeyPath) -> (KeyPath, Range<usize>) {
        let mut node = self;
        let mut shown = KeyPath::default();
        let mut span = self.span.clone();
        for seg in &typed.0 {
            let next = match (&node.kind, seg) {
                (Kind::Table(entries), Seg::Key(k)) => entries.iter().find(|e| &e.key == k).map(|e| {
                    shown.0.push(seg.clone());
                    &e.node
                }),
                (Kind::Array(items), Seg::Index(i)) => items.get(*i).map(|(orig, n)| {
                    shown.0.push(Seg::Index(*orig));
                    n
                }),
                _ => None,
            };
            match next {
                Some(n) => {
                    node = n;
                    span = n.span.clone();
                }
                None => {
                    // Name the key the user should add even though it has no place in the file.
                    shown.0.push(seg.clone());
                    for rest in typed.0.iter().skip(shown.0.len()) {
                        shown.0.push(rest.clone());
                    }
                    break;
                }
            }
        }
        (shown, span)
    }

    fn describe(&self) -> String {
        match &self.kind {
            Kind::Str(s) => format!("string {s:?}"),
            Kind::Int(n) => format!("integer {n}"),
            Kind::Float(x) => format!("float {x}"),
            Kind::Bool(b) => format!("boolean {b}"),
            Kind::Datetime(d) => format!("datetime {d}"),
            Kind::Array(_) => "an array".to_owned(),
            Kind::Table(_) => "a table".to_owned(),
        }
    }
}

/// An error found while deserializing, with where it happened once known.
#[derive(Debug)]
pub(crate) struct DeError {
    pub message: String,
    /// Path with original array positions; `None` until a deserializer stamps it.
    pub path: Option<KeyPath>,
    pub span: Option<Range<usize>>,
    /// Set for "missing key" errors: the key.
    pub missing: Option<&'static str>,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            path: None,
            span: None,
            missing: None,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            message: format!("missing key `{field}`"),
            path: None,
            span: None,
            missing: Some(field),
        }
    }
}

/// An unknown key found on the way, reported even when deserialization otherwise succeeds.
#[derive(Debug, Clone)]
pub(crate) struct UnknownKey {
    pub path: KeyPath,
    pub span: Range<usize>,
    pub expected: &'static [&'static str],
}

/// State shared by the deserializers of one pass.
#[derive(Debug, Default)]
pub(crate) struct Ctx {
    pub unknown: RefCell<Vec<UnknownKey>>,
}

/// Deserializer of one node.
pub(crate) struct De<'a> {
    node: &'a Node,
    path: KeyPath,
    ctx: &'a Ctx,
}

impl<'a> De<'a> {
    /// The deserializer of a whole document.
    pub fn root(node: &'a Node, ctx: &'a Ctx) -> Self {
        De {
            node,
            path: KeyPath::default(),
            ctx,
        }
    }

    /// Stamps an error that has no location yet with this node's.
    fn stamp(&self, mut e: DeError) -> DeError {
        if e.path.is_none() {
            if e.message.ends_with("address syntax") {
                e.message = self.address_expectation();
            }
            if !matches!(self.node.kind, Kind::Table(_) | Kind::Array(_))
                && !e.message.contains("invalid type")
            {
                e.message = format!("{} (found {})", e.message, self.node.describe());
            }
            e.path = Some(self.path.clone());
            e.span = Some(self.node.span.clone());
        }
        e
    }

    /// What an address-shaped key expects, by the key's name: prefixes for pools and ranges, else addresses.
    fn address_expectation(&self) -> String {
        let key = self.path.0.iter().rev().find_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        });
        match key {
            Some("prefix" | "addresses" | "sources" | "pool") => {
                "invalid address prefix; expected an address with a length such as 198.51.100.0/24".to_owned()
            }
            Some("router_id" | "next_hop") => {
                "invalid IPv4 address; expected an address such as 192.0.2.1".to_owned()
            }
            _ => "invalid IP address; expected an address such as 192.0.2.1 or 2001:db8::1".to_owned(),
        }
    }

    fn type_error(&self, expected: &str) -> DeError {
        self.stamp(<DeError as de::Error>::custom(format!(
            "invalid type: {}, expected {expected}",
            self.node.describe()
        )))
    }
}

impl<'de> de::Deserializer<'de> for De<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.kind {
            Kind::Str(s) | Kind::Datetime(s) => visitor.visit_borrowed_str(s),
            Kind::Int(n) => match (i64::try_from(*n), u64::try_from(*n)) {
                (Ok(i), _) => visitor.visit_i64(i),
                (_, Ok(u)) => visitor.visit_u64(u),
                _ => visitor.visit_i128(*n),
            },
            Kind::Float(x) => visitor.visit_f64(*x),
            Kind::Bool(b) => visitor.visit_bool(*b),
            Kind::Array(items) => visitor.visit_seq(Seq {
                items: items.iter(),
                path: self.path.clone(),
                ctx: self.ctx,
            }),
            Kind::Table(entries) => visitor.visit_map(Map {
                entries: entries.iter().collect::<Vec<_>>().into_iter(),
                value: None,
                path: self.path.clone(),
                ctx: self.ctx,
            }),
        };
        r.map_err(|e| self.stamp(e))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let path = self.path.clone();
        let span = self.node.span.clone();
        visitor.visit_some(self).map_err(|mut e| {
            if e.path.is_none() {
                e.path = Some(path);
                e.span = Some(span);
            }
            e
        })
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let path = self.path.clone();
        let span = self.node.span.clone();
        visitor.visit_newtype_struct(self).map_err(|mut e| {
            if e.path.is_none() {
                e.path = Some(path);
                e.span = Some(span);
            }
            e
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let Kind::Table(entries) = &self.node.kind else {
            return Err(self.type_error("a table"));
        };
        let mut known = Vec::with_capacity(entries.len());
        for e in entries {
            if fields.contains(&e.key.as_str()) {
                known.push(e);
            } else {
                self.ctx.unknown.borrow_mut().push(UnknownKey {
                    path: self.path.with(e.key.as_str()),
                    span: e.key_span.clone(),
                    expected: fields,
                });
            }
        }
        let r = visitor.visit_map(Map {
            entries: known.into_iter(),
            value: None,
            path: self.path.clone(),
            ctx: self.ctx,
        });
        r.map_err(|e| self.stamp(e))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let Kind::Str(s) = &self.node.kind else {
            return Err(self.type_error("a string"));
        };
        let d: de::value::StrDeserializer<'_, DeError> = s.as_str().into_deserializer();
        visitor.visit_enum(d).map_err(|e| self.stamp(e))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

/// Elements of an array.
struct Seq<'a> {
    items: std::slice::Iter<'a, (usize, Node)>,
    path: KeyPath,
    ctx: &'a Ctx,
}

impl<'de> SeqAccess<'de> for Seq<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            None => Ok(None),
            Some((orig, node)) => seed
                .deserialize(De {
                    node,
                    path: self.path.with(*orig),
                    ctx: self.ctx,
                })
                .map(Some),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// Keys of a table.
struct Map<'a> {
    entries: std::vec::IntoIter<&'a Entry>,
    value: Option<&'a Entry>,
    path: KeyPath,
    ctx: &'a Ctx,
}

impl<'de> MapAccess<'de> for Map<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(entry);
        let d: de::value::BorrowedStrDeserializer<'_, DeError> =
            de::value::BorrowedStrDeserializer::new(&entry.key);
        seed.deserialize(d).map(Some).map_err(|mut e| {
            e.path = Some(self.path.with(entry.key.as_str()));
            e.span = Some(entry.key_span.clone());
            e
        })
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some(entry) = self.value.take() else {
            return Err(<DeError as de::Error>::custom(
                "a value was requested before its key",
            ));
        };
        seed.deserialize(De {
            node: &entry.node,
            path: self.path.with(entry.key.as_str()),
            ctx: self.ctx,
        })
    }
}
