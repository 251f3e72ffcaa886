//! The paths of the operator mapping — pure, no I/O: a small JSONPath subset over
//! `serde_json` values, and element paths over a bounded XML document ([`XmlDoc`]).
//!
//! - [`JsonPath`]: `$` is the document (for the event list) or the event (for fields); then
//!   `.name`, `['name']` (names with dots or spaces), `[3]` (an index), `[*]` and `.*` (every
//!   element or member).
//! - [`XmlPath`]: element steps by local name (namespaces ignored), `*` for any name, and a
//!   final `@attr`; the event list's path is absolute, a field's relative to the event (`.` is
//!   the event's own text).
//! - [`XmlDoc`]: elements by local name, their attributes and direct text, parsed with
//!   quick-xml within [`MAX_XML_NODES`] elements and [`MAX_XML_DEPTH`] levels.

use serde_json::Value;

use super::ParseError;
use presence_actors::model::activity::truncate;

/// Most segments in one path.
pub const MAX_PATH_SEGMENTS: usize = 32;
/// Longest path, in bytes.
pub const MAX_PATH_LEN: usize = 256;
/// Deepest XML element nesting accepted.
pub const MAX_XML_DEPTH: usize = 64;
/// Most XML elements in one body.
pub const MAX_XML_NODES: usize = 200_000;
/// Most elements a field path with an attribute looks through for one that has it.
const MAX_FIELD_CANDIDATES: usize = 64;

/// A compiled JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath(Vec<JSeg>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum JSeg {
    Key(String),
    Index(usize),
    Wild,
}

impl JsonPath {
    /// Compiles `$…`.
    pub fn compile(s: &str) -> Result<JsonPath, String> {
        let s = s.trim();
        if s.len() > MAX_PATH_LEN {
            return Err(format!("longer than {MAX_PATH_LEN} bytes"));
        }
        let Some(mut rest) = s.strip_prefix('$') else {
            return Err(format!("{s:?} must start with $"));
        };
        let mut segs = Vec::new();
        while !rest.is_empty() {
            if segs.len() >= MAX_PATH_SEGMENTS {
                return Err(format!("more than {MAX_PATH_SEGMENTS} segments"));
            }
            if let Some(r) = rest.strip_prefix('.') {
                if r.starts_with('.') {
                    return Err("recursive descent (..) is not supported".into());
                }
                let end = r.find(['.', '[']).unwrap_or(r.len());
                let name = &r[..end];
                if name.is_empty() {
                    return Err(format!("empty name in {s:?}"));
                }
                segs.push(if name == "*" { JSeg::Wild } else { JSeg::Key(name.to_string()) });
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix('[') {
                if let Some(q) = r.strip_prefix('\'').or_else(|| r.strip_prefix('"')) {
                    let quote = if r.starts_with('\'') { "']" } else { "\"]" };
                    let end = q.find(quote).ok_or_else(|| format!("unterminated [' in {s:?}"))?;
                    segs.push(JSeg::Key(q[..end].to_string()));
                    rest = &q[end + 2..];
                } else {
                    let end = r.find(']').ok_or_else(|| format!("unterminated [ in {s:?}"))?;
                    let inner = r[..end].trim();
                    if inner == "*" {
                        segs.push(JSeg::Wild);
                    } else {
                        let n: usize = inner.parse().map_err(|_| {
                            format!("[{inner}] is not an index, * or a quoted name (filters are not supported)")
                        })?;
                        segs.push(JSeg::Index(n));
                    }
                    rest = &r[end + 1..];
                }
            } else {
                return Err(format!("unexpected {:?} in {s:?}; use .name or [..]", rest.chars().next().unwrap_or(' ')));
            }
        }
        Ok(JsonPath(segs))
    }

    /// True if the path can select more than one value.
    pub fn is_multi(&self) -> bool {
        self.0.iter().any(|s| matches!(s, JSeg::Wild))
    }

    /// Every value the path selects in `v`, in document order (at most `limit`).
    pub fn select<'a>(&self, v: &'a Value, limit: usize) -> Vec<&'a Value> {
        let mut cur = vec![v];
        for seg in &self.0 {
            let mut next = Vec::new();
            for v in cur {
                match (seg, v) {
                    (JSeg::Key(k), Value::Object(m)) => next.extend(m.get(k)),
                    (JSeg::Index(i), Value::Array(a)) => next.extend(a.get(*i)),
                    (JSeg::Wild, Value::Array(a)) => next.extend(a.iter()),
                    (JSeg::Wild, Value::Object(m)) => next.extend(m.values()),
                    _ => {}
                }
                if next.len() > limit {
                    next.truncate(limit);
                    break;
                }
            }
            cur = next;
        }
        cur
    }

    /// The first value the path selects.
    pub fn first<'a>(&self, v: &'a Value) -> Option<&'a Value> {
        self.select(v, 1).into_iter().next()
    }
}

/// A compiled XML element path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlPath {
    absolute: bool,
    steps: Vec<Option<String>>,
    attr: Option<String>,
}

impl XmlPath {
    /// Compiles an absolute path to the event list (`/root/item`).
    pub fn compile_events(s: &str) -> Result<XmlPath, String> {
        let s = s.trim();
        let Some(r) = s.strip_prefix('/') else {
            return Err(format!("{s:?} must be absolute, starting with /"));
        };
        let p = Self::compile_steps(r, s)?;
        if p.attr.is_some() || p.steps.is_empty() {
            return Err(format!("{s:?} must name elements, not an attribute"));
        }
        Ok(XmlPath { absolute: true, ..p })
    }

    /// Compiles a field path relative to an event (`a/b`, `a/@x`, `@x`, `.`).
    pub fn compile_field(s: &str) -> Result<XmlPath, String> {
        let s = s.trim();
        if s.starts_with('/') {
            return Err(format!("{s:?}: field paths are relative to the event (no leading /)"));
        }
        let r = s.strip_prefix("./").unwrap_or(s);
        if r == "." {
            return Ok(XmlPath { absolute: false, steps: Vec::new(), attr: None });
        }
        Self::compile_steps(r, s)
    }

    fn compile_steps(r: &str, whole: &str) -> Result<XmlPath, String> {
        if whole.len() > MAX_PATH_LEN {
            return Err(format!("longer than {MAX_PATH_LEN} bytes"));
        }
        let parts: Vec<&str> = r.split('/').collect();
        if parts.len() > MAX_PATH_SEGMENTS {
            return Err(format!("more than {MAX_PATH_SEGMENTS} segments"));
        }
        let mut steps = Vec::new();
        let mut attr = None;
        for (i, p) in parts.iter().enumerate() {
            let p = p.trim();
            let ok_name = |n: &str| !n.is_empty() && !n.contains(['[', ']', '(', ')', '@', ' ', '=', '"', '\'']);
            if let Some(a) = p.strip_prefix('@') {
                if i + 1 != parts.len() || !ok_name(a) {
                    return Err(format!("{whole:?}: an attribute (@name) may only end the path"));
                }
                attr = Some(local(a).to_string());
            } else if p == "*" {
                steps.push(None);
            } else if ok_name(p) {
                steps.push(Some(local(p).to_string()));
            } else {
                return Err(format!("{whole:?}: bad step {p:?} (names, *, and a final @attr only)"));
            }
        }
        Ok(XmlPath { absolute: false, steps, attr })
    }
}

/// The local part of a possibly prefixed name.
fn local(n: &str) -> &str {
    n.rsplit(':').next().unwrap_or(n)
}

/// A parsed XML document: elements by local name, their attributes and direct text.
#[derive(Debug, Default)]
pub struct XmlDoc {
    nodes: Vec<XNode>,
    root: Option<usize>,
}

#[derive(Debug)]
struct XNode {
    name: Box<str>,
    attrs: Vec<(Box<str>, String)>,
    text: String,
    children: Vec<usize>,
}

fn xml_err(e: impl std::fmt::Display) -> ParseError {
    ParseError::Xml(truncate(&e.to_string(), 200).to_string())
}

impl XmlDoc {
    /// Parses `xml` (bounded, never panics).
    pub fn parse(xml: &[u8]) -> Result<XmlDoc, ParseError> {
        use quick_xml::events::{BytesStart, Event};
        let mut reader = quick_xml::Reader::from_reader(xml);
        let mut doc = XmlDoc::default();
        let mut stack: Vec<usize> = Vec::new();
        let open = |doc: &mut XmlDoc,
                    stack: &mut Vec<usize>,
                    e: &BytesStart<'_>,
                    dec: quick_xml::encoding::Decoder|
         -> Result<usize, ParseError> {
            if doc.nodes.len() >= MAX_XML_NODES {
                return Err(ParseError::Xml(format!("more than {MAX_XML_NODES} elements")));
            }
            if stack.len() >= MAX_XML_DEPTH {
                return Err(ParseError::Xml(format!("nested deeper than {MAX_XML_DEPTH}")));
            }
            let name = dec.decode(e.local_name().as_ref()).map_err(xml_err)?.into_owned().into_boxed_str();
            let mut attrs = Vec::new();
            for a in e.attributes() {
                let a = a.map_err(xml_err)?;
                let k = dec.decode(a.key.local_name().as_ref()).map_err(xml_err)?.into_owned().into_boxed_str();
                let v = a.decode_and_unescape_value(dec).map_err(xml_err)?.into_owned();
                attrs.push((k, v));
            }
            let id = doc.nodes.len();
            doc.nodes.push(XNode { name, attrs, text: String::new(), children: Vec::new() });
            match stack.last() {
                Some(&p) => doc.nodes[p].children.push(id),
                None if doc.root.is_none() => doc.root = Some(id),
                None => return Err(ParseError::Xml("more than one root element".into())),
            }
            Ok(id)
        };
        loop {
            let dec = reader.decoder();
            match reader.read_event().map_err(xml_err)? {
                Event::Start(e) => {
                    let id = open(&mut doc, &mut stack, &e, dec)?;
                    stack.push(id);
                }
                Event::Empty(e) => {
                    open(&mut doc, &mut stack, &e, dec)?;
                }
                Event::End(_) => {
                    if stack.pop().is_none() {
                        return Err(ParseError::Xml("unmatched end tag".into()));
                    }
                }
                Event::Text(t) => {
                    let s = t.xml_content().map_err(xml_err)?;
                    doc.push_text(&stack, &s)?;
                }
                Event::CData(t) => {
                    let s = t.decode().map_err(xml_err)?;
                    doc.push_text(&stack, &s)?;
                }
                Event::GeneralRef(r) => {
                    if r.is_char_ref() {
                        match r.resolve_char_ref().map_err(xml_err)? {
                            Some(c) => doc.push_text(&stack, c.encode_utf8(&mut [0; 4]))?,
                            None => return Err(ParseError::Xml("bad character reference".into())),
                        }
                    } else {
                        let name = r.decode().map_err(xml_err)?;
                        match quick_xml::escape::resolve_predefined_entity(&name) {
                            Some(s) => doc.push_text(&stack, s)?,
                            None => {
                                let n = truncate(&name, 32);
                                return Err(ParseError::Xml(format!("unknown entity &{n};")));
                            }
                        }
                    }
                }
                Event::Eof => break,
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            }
        }
        if !stack.is_empty() {
            return Err(ParseError::Xml("document ends inside an element".into()));
        }
        if doc.root.is_none() {
            return Err(ParseError::Xml("no root element".into()));
        }
        Ok(doc)
    }

    fn push_text(&mut self, stack: &[usize], s: &str) -> Result<(), ParseError> {
        match stack.last() {
            Some(&n) => {
                self.nodes[n].text.push_str(s);
                Ok(())
            }
            None if s.trim().is_empty() => Ok(()),
            None => Err(ParseError::Xml("text outside the root element".into())),
        }
    }

    /// The elements an absolute path selects (at most `limit`).
    pub fn select(&self, p: &XmlPath, limit: usize) -> Vec<usize> {
        let Some(root) = self.root else { return Vec::new() };
        let mut steps = p.steps.iter();
        if p.absolute {
            match steps.next() {
                Some(first) if self.matches(root, first) => {}
                _ => return Vec::new(),
            }
        }
        self.walk(vec![root], steps, limit)
    }

    fn matches(&self, n: usize, step: &Option<String>) -> bool {
        step.as_deref().is_none_or(|s| &*self.nodes[n].name == s)
    }

    fn walk<'s>(
        &self,
        mut cur: Vec<usize>,
        steps: impl Iterator<Item = &'s Option<String>>,
        limit: usize,
    ) -> Vec<usize> {
        for step in steps {
            let mut next = Vec::new();
            'outer: for n in cur {
                for &c in &self.nodes[n].children {
                    if self.matches(c, step) {
                        next.push(c);
                        if next.len() >= limit {
                            break 'outer;
                        }
                    }
                }
            }
            cur = next;
        }
        cur
    }

    /// The first value of a field path under element `n`: the first matching element's
    /// trimmed text, or the attribute of the first matching element that has it. `None` when
    /// nothing matches.
    pub fn field(&self, n: usize, p: &XmlPath) -> Option<&str> {
        match &p.attr {
            Some(a) => self
                .walk(vec![n], p.steps.iter(), MAX_FIELD_CANDIDATES)
                .into_iter()
                .find_map(|el| self.nodes[el].attrs.iter().find(|(k, _)| &**k == a).map(|(_, v)| v.as_str())),
            None => self.walk(vec![n], p.steps.iter(), 1).first().map(|&el| self.nodes[el].text.trim()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jsonpath_subset_compiles_and_selects() {
        let doc = json!({"a": {"b": 1, "c.d": 2}, "items": [{"x": 1}, {"x": 2}], "m": {"p": 3, "q": 4}});
        let sel = |p: &str| JsonPath::compile(p).unwrap().select(&doc, 100).into_iter().cloned().collect::<Vec<_>>();
        assert_eq!(sel("$.a.b"), vec![json!(1)]);
        assert_eq!(sel("$.a['c.d']"), vec![json!(2)]);
        assert_eq!(sel("$[\"a\"][\"b\"]"), vec![json!(1)]);
        assert_eq!(sel("$.items[*].x"), vec![json!(1), json!(2)]);
        assert_eq!(sel("$.items[1].x"), vec![json!(2)]);
        assert_eq!(sel("$.items[7].x"), Vec::<Value>::new());
        assert_eq!(sel("$.m.*"), vec![json!(3), json!(4)]);
        assert_eq!(sel("$"), vec![doc.clone()]);
        assert_eq!(sel("$.a.b.c"), Vec::<Value>::new(), "descending into a number selects nothing");
        assert!(JsonPath::compile("$.items[*]").unwrap().is_multi());
        assert!(!JsonPath::compile("$.a[0].b").unwrap().is_multi());
        for bad in ["a.b", "$..a", "$.a[", "$.a[?(@.x)]", "$.a['x", "$.", "$a", "$.a[-1]"] {
            assert!(JsonPath::compile(bad).is_err(), "{bad} should not compile");
        }
        let long = format!("${}", ".a".repeat(40));
        assert!(JsonPath::compile(&long).is_err());
    }

    #[test]
    fn xml_paths_compile_and_select() {
        let xml = br#"<?xml version="1.0"?>
<p:presence xmlns:p="urn:x"><p:subscriber msisdn="+43664" ts="1767000000">
  <callState> ALERTING </callState><diversion active="true" target="+43699"/>
  <absence type="Krank">Bis &amp; mit <![CDATA[Freitag]]>&#33;</absence></p:subscriber>
<p:subscriber msisdn="+43665"><callState>IDLE</callState></p:subscriber><other/></p:presence>"#;
        let doc = XmlDoc::parse(xml).unwrap();
        let ev = XmlPath::compile_events("/presence/subscriber").unwrap();
        let subs = doc.select(&ev, 100);
        assert_eq!(subs.len(), 2);
        let f = |n: usize, p: &str| doc.field(n, &XmlPath::compile_field(p).unwrap()).map(str::to_string);
        assert_eq!(f(subs[0], "@msisdn").as_deref(), Some("+43664"));
        assert_eq!(f(subs[0], "callState").as_deref(), Some("ALERTING"));
        assert_eq!(f(subs[0], "./diversion/@target").as_deref(), Some("+43699"));
        assert_eq!(f(subs[0], "absence").as_deref(), Some("Bis & mit Freitag!"));
        assert_eq!(f(subs[0], "*/@type").as_deref(), Some("Krank"));
        assert_eq!(f(subs[1], "diversion/@target"), None);
        assert_eq!(f(subs[1], "@nope"), None);
        assert_eq!(doc.select(&XmlPath::compile_events("/presence/*").unwrap(), 100).len(), 3);
        assert!(doc.select(&XmlPath::compile_events("/wrong/subscriber").unwrap(), 100).is_empty());
        assert_eq!(doc.select(&XmlPath::compile_events("/presence").unwrap(), 100).len(), 1);
        for bad in ["presence/x", "/a/@b", "/a[1]", "/a//b", "/"] {
            assert!(XmlPath::compile_events(bad).is_err(), "{bad} should not compile");
        }
        for bad in ["/a", "@a/b", "a[1]", "a//b", "a/text()"] {
            assert!(XmlPath::compile_field(bad).is_err(), "{bad} should not compile");
        }
        for bad in [&b"<a><b></a>"[..], b"<a/><b/>", b"", b"text", b"<a>&bogus;</a>", b"<a>"] {
            assert!(XmlDoc::parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = format!("{}{}", "<a>".repeat(100), "</a>".repeat(100));
        assert!(matches!(XmlDoc::parse(deep.as_bytes()), Err(ParseError::Xml(m)) if m.contains("deeper")));
    }
}
