//! A small bounded element tree read with quick-xml, shared by the XML body parsers.
//!
//! Presence documents are small (a few KiB), so every parser here first builds this tree and
//! then walks it; that keeps each format's code declarative ("the `basic` under `status`
//! under `tuple`") and lets the lenient lookups real clients need ("an `activities` anywhere
//! under the person") stay one line. Names are **local names** only: prefixes and namespace
//! URIs are dropped, because senders disagree on them. Limits: [`MAX_BODY_BYTES`] of input,
//! [`MAX_DEPTH`] nesting, [`MAX_ELEMENTS`] elements, [`MAX_ATTRIBUTES`] attributes per
//! element, [`MAX_TEXT_BYTES`] of text per element or attribute value (cut, not rejected).

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::text::truncate;
use super::{MAX_ATTRIBUTES, MAX_BODY_BYTES, MAX_DEPTH, MAX_ELEMENTS, MAX_TEXT_BYTES};

/// Why an XML body could not be read. Shared by every XML parser in [`crate::body`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("body of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The body's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not well-formed XML (or not UTF-8).
    #[error("malformed XML: {0}")]
    Malformed(String),
    /// Elements nested deeper than [`MAX_DEPTH`].
    #[error("elements nested deeper than {max}")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_ELEMENTS`] elements, or more than [`MAX_ATTRIBUTES`] on one element.
    #[error("more than {max} {what}")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// No root element at all.
    #[error("no root element")]
    Empty,
    /// The root element is not the one the format requires.
    #[error("root element is <{found}>, expected <{expected}>")]
    UnexpectedRoot {
        /// The local name the format requires.
        expected: &'static str,
        /// The local name found (cut to 64 bytes).
        found: String,
    },
}

/// One element: local name, attributes (local name → unescaped value, in document order),
/// the concatenation of its own text and CDATA, and its child elements.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Element {
    pub(crate) name: String,
    pub(crate) attrs: Vec<(String, String)>,
    pub(crate) text: String,
    pub(crate) children: Vec<Element>,
}

impl Element {
    /// The value of the first attribute with this local name.
    pub(crate) fn attr(&self, local: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == local).map(|(_, v)| v.as_str())
    }

    /// The first child with this local name.
    pub(crate) fn child(&self, local: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == local)
    }

    /// Children with this local name.
    pub(crate) fn children_named<'a>(&'a self, local: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == local)
    }

    /// The trimmed text of the first child with this local name.
    pub(crate) fn child_text(&self, local: &str) -> Option<&str> {
        self.child(local).map(|c| c.text.trim())
    }

    /// The first element with this local name in document order below `self` (not `self`).
    pub(crate) fn descendant(&self, local: &str) -> Option<&Element> {
        for c in &self.children {
            if c.name == local {
                return Some(c);
            }
            if let Some(d) = c.descendant(local) {
                return Some(d);
            }
        }
        None
    }

    /// Every element with this local name below `self`, in document order, not descending
    /// into a match.
    pub(crate) fn descendants<'a>(&'a self, local: &str, out: &mut Vec<&'a Element>) {
        for c in &self.children {
            if c.name == local {
                out.push(c);
            } else {
                c.descendants(local, out);
            }
        }
    }

    fn push_text(&mut self, s: &str) {
        if self.text.len() < MAX_TEXT_BYTES {
            let room = MAX_TEXT_BYTES - self.text.len();
            self.text.push_str(truncate(s, room));
        }
    }
}

fn malformed(e: impl std::fmt::Display) -> XmlError {
    XmlError::Malformed(truncate(&e.to_string(), 200).to_string())
}

fn local(name: &[u8]) -> Result<String, XmlError> {
    let s = std::str::from_utf8(name).map_err(malformed)?;
    Ok(truncate(s, 256).to_string())
}

fn element(e: &BytesStart<'_>) -> Result<Element, XmlError> {
    let mut el = Element { name: local(e.local_name().as_ref())?, ..Element::default() };
    for a in e.attributes() {
        let a = a.map_err(malformed)?;
        let key = a.key.local_name();
        // Namespace declarations are not data.
        if a.key.as_ref() == b"xmlns" || a.key.as_ref().starts_with(b"xmlns:") {
            continue;
        }
        if el.attrs.len() >= MAX_ATTRIBUTES {
            return Err(XmlError::TooMany { what: "attributes on one element", max: MAX_ATTRIBUTES });
        }
        let value = a.unescape_value().map_err(malformed)?;
        el.attrs.push((local(key.as_ref())?, truncate(&value, MAX_TEXT_BYTES).to_string()));
    }
    Ok(el)
}

/// Parses `xml` into its root element, checking the root's local name when `root` is given.
pub(crate) fn parse(xml: &[u8], root: Option<&'static str>) -> Result<Element, XmlError> {
    if xml.len() > MAX_BODY_BYTES {
        return Err(XmlError::TooLarge { len: xml.len(), max: MAX_BODY_BYTES });
    }
    // A UTF-8 byte-order mark is allowed in front of the declaration.
    let xml = xml.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(xml);
    std::str::from_utf8(xml).map_err(|_| XmlError::Malformed("body is not UTF-8".into()))?;
    let mut reader = Reader::from_reader(xml);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::with_capacity(16);
    let mut done: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let ev = reader.read_event().map_err(malformed)?;
        match ev {
            Event::Start(e) => {
                open(&mut stack, &done, &mut count, &e)?;
            }
            Event::Empty(e) => {
                open(&mut stack, &done, &mut count, &e)?;
                close(&mut stack, &mut done);
            }
            Event::End(_) => {
                if stack.is_empty() {
                    return Err(XmlError::Malformed("unmatched end tag".into()));
                }
                close(&mut stack, &mut done);
            }
            Event::Text(t) => {
                let s = t.xml_content().map_err(malformed)?;
                if let Some(top) = stack.last_mut() {
                    top.push_text(&s);
                }
            }
            Event::CData(t) => {
                let s = t.decode().map_err(malformed)?;
                if let Some(top) = stack.last_mut() {
                    top.push_text(&s);
                }
            }
            Event::GeneralRef(r) => {
                let mut buf = [0u8; 4];
                let s: &str = if r.is_char_ref() {
                    match r.resolve_char_ref().map_err(malformed)? {
                        Some(c) => c.encode_utf8(&mut buf),
                        None => return Err(XmlError::Malformed("bad character reference".into())),
                    }
                } else {
                    let name = r.decode().map_err(malformed)?;
                    match quick_xml::escape::resolve_predefined_entity(&name) {
                        Some(s) => s,
                        None => {
                            return Err(XmlError::Malformed(format!("unknown entity &{};", truncate(&name, 32))));
                        }
                    }
                };
                if let Some(top) = stack.last_mut() {
                    top.push_text(s);
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed("document ends inside an element".into()));
    }
    let root_el = done.ok_or(XmlError::Empty)?;
    if let Some(expected) = root {
        if root_el.name != expected {
            return Err(XmlError::UnexpectedRoot { expected, found: truncate(&root_el.name, 64).to_string() });
        }
    }
    Ok(root_el)
}

fn open(
    stack: &mut Vec<Element>,
    done: &Option<Element>,
    count: &mut usize,
    e: &BytesStart<'_>,
) -> Result<(), XmlError> {
    if stack.is_empty() && done.is_some() {
        return Err(XmlError::Malformed("more than one root element".into()));
    }
    if stack.len() >= MAX_DEPTH {
        return Err(XmlError::TooDeep { max: MAX_DEPTH });
    }
    *count += 1;
    if *count > MAX_ELEMENTS {
        return Err(XmlError::TooMany { what: "elements", max: MAX_ELEMENTS });
    }
    stack.push(element(e)?);
    Ok(())
}

fn close(stack: &mut Vec<Element>, done: &mut Option<Element>) {
    if let Some(el) = stack.pop() {
        match stack.last_mut() {
            Some(parent) => parent.children.push(el),
            None => *done = Some(el),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_tree_of_local_names() {
        let x = br#"<?xml version="1.0"?><a:root xmlns:a="urn:x" b:k="v&amp;w" xmlns:b="urn:y">
            <a:kid>one &lt; <![CDATA[two]]> &#x263A;</a:kid><kid2/></a:root>"#;
        let r = parse(x, Some("root")).expect("parse");
        assert_eq!(r.attrs, vec![("k".to_string(), "v&w".to_string())]);
        assert_eq!(r.child_text("kid"), Some("one < two \u{263A}"));
        assert!(r.child("kid2").is_some());
        assert_eq!(r.descendant("kid2").map(|e| e.name.as_str()), Some("kid2"));
    }

    #[test]
    fn rejects_what_it_must() {
        assert!(matches!(parse(b"<a><b></a>", None), Err(XmlError::Malformed(_))));
        assert!(matches!(parse(b"<a>", None), Err(XmlError::Malformed(_))));
        assert!(matches!(parse(b"<a/><b/>", None), Err(XmlError::Malformed(_))));
        assert!(matches!(parse(b"</a>", None), Err(XmlError::Malformed(_))));
        assert!(matches!(parse(b"<a>&bogus;</a>", None), Err(XmlError::Malformed(_))));
        assert!(matches!(parse(b"  ", None), Err(XmlError::Empty)));
        assert!(matches!(parse(b"<a/>", Some("b")), Err(XmlError::UnexpectedRoot { .. })));
        assert!(matches!(parse(b"<a>\xff</a>", None), Err(XmlError::Malformed(_))));
        let deep = format!("{}{}", "<a>".repeat(MAX_DEPTH + 1), "</a>".repeat(MAX_DEPTH + 1));
        assert!(matches!(parse(deep.as_bytes(), None), Err(XmlError::TooDeep { .. })));
        let ok = format!("{}{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        assert!(parse(ok.as_bytes(), None).is_ok());
        let many = format!("<r>{}</r>", "<e/>".repeat(MAX_ELEMENTS));
        assert!(matches!(parse(many.as_bytes(), None), Err(XmlError::TooMany { .. })));
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert!(matches!(parse(&big, None), Err(XmlError::TooLarge { .. })));
        let attrs: String = (0..=MAX_ATTRIBUTES).map(|i| format!(" a{i}=\"x\"")).collect();
        assert!(matches!(parse(format!("<r{attrs}/>").as_bytes(), None), Err(XmlError::TooMany { .. })));
    }

    #[test]
    fn long_text_is_cut() {
        let x = format!("<a>{}</a>", "é".repeat(MAX_TEXT_BYTES));
        let r = parse(x.as_bytes(), None).expect("parse");
        assert_eq!(r.text.len(), MAX_TEXT_BYTES);
    }
}
