//! The chunked event stream's line splitter: one JSON event per line, whatever the HTTP chunk
//! boundaries, with a bounded buffer.

/// What the splitter found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// One non-empty line (trimmed, without its newline).
    Event(Vec<u8>),
    /// A line longer than the bound: dropped (up to its newline).
    TooLong,
}

/// Splits the chunked event stream into lines: one JSON event per line. HTTP chunk
/// boundaries may fall anywhere (inside an event, inside a UTF-8 sequence, between `\r` and
/// `\n`); empty lines are skipped; a line longer than `max` is dropped and reported once.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    skipping: bool,
}

impl LineSplitter {
    /// A splitter that keeps lines up to `max` bytes.
    pub fn new(max: usize) -> LineSplitter {
        LineSplitter { buf: Vec::new(), max: max.max(1), skipping: false }
    }

    /// Feeds a chunk; complete lines go to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<Line>) {
        while !chunk.is_empty() {
            let nl = chunk.iter().position(|b| *b == b'\n');
            let (part, rest) = match nl {
                Some(i) => (&chunk[..i], Some(&chunk[i + 1..])),
                None => (chunk, None),
            };
            if !self.skipping {
                if self.buf.len() + part.len() > self.max {
                    self.buf.clear();
                    self.skipping = true;
                    out.push(Line::TooLong);
                } else {
                    self.buf.extend_from_slice(part);
                }
            }
            match rest {
                Some(r) => {
                    if !self.skipping {
                        self.emit(out);
                    }
                    self.skipping = false;
                    chunk = r;
                }
                None => break,
            }
        }
    }

    /// The end of the stream: a last line without a newline is still an event (as the Node
    /// SDK parses its trailing buffer).
    pub fn finish(&mut self, out: &mut Vec<Line>) {
        if !self.skipping {
            self.emit(out);
        }
        self.buf.clear();
        self.skipping = false;
    }

    /// Bytes held for an unfinished line.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    fn emit(&mut self, out: &mut Vec<Line>) {
        let line = self.buf.trim_ascii();
        if !line.is_empty() {
            out.push(Line::Event(line.to_vec()));
        }
        self.buf.clear();
    }
}

