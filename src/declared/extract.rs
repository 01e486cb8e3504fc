//! Reading only the declared paths out of a record: one walk over its JSON bytes that
//! descends into the keys some path names and skips every other value without building
//! anything. The record was validated by the event decoder before; a malformed one is still
//! an error here, never a panic.

/// A trie node: the keys below it, and the paths ending here.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Node {
    children: Vec<(String, Node)>,
    pub(crate) leaves: Vec<usize>,
    /// Every path id at or below this node (cleared when its key appears again: a
    /// repeated key's last value wins, as `serde_json` keeps it).
    below: Vec<usize>,
}

impl Node {
    /// The node of `key` below this one.
    #[inline]
    pub(crate) fn child(&self, key: &[u8]) -> Option<&Node> {
        // Every key of every record is looked up here: the length and first byte rule
        // most children out before a comparison of the whole name.
        let first = key.first()?;
        self.children
            .iter()
            .find(|(k, _)| k.len() == key.len() && k.as_bytes()[0] == *first && k.as_bytes() == key)
            .map(|(_, n)| n)
    }

    /// Whether paths go on below it.
    pub(crate) fn has_children(&self) -> bool {
        !self.children.is_empty()
    }

    /// Forgets what an earlier value of this key gave its paths.
    pub(crate) fn clear(&self, out: &mut Values<'_>) {
        for &id in &self.below {
            out[id] = None;
        }
    }
}

/// Every declared path, each once (its id is its index), as a trie.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Paths {
    root: Node,
    count: usize,
}

/// A value's bytes in the record (no surrounding whitespace), by path id.
pub type Values<'r> = smallvec::SmallVec<[Option<&'r [u8]>; 8]>;

impl Paths {
    /// The trie of `paths` (path `i` has id `i`).
    #[must_use]
    pub fn new(paths: &[Vec<String>]) -> Self {
        let mut root = Node::default();
        for (id, parts) in paths.iter().enumerate() {
            let mut node = &mut root;
            node.below.push(id);
            for part in parts {
                let at = match node.children.iter().position(|(k, _)| k == part) {
                    Some(i) => i,
                    None => {
                        node.children.push((part.clone(), Node::default()));
                        node.children.len() - 1
                    }
                };
                node = &mut node.children[at].1;
                node.below.push(id);
            }
            node.leaves.push(id);
        }
        Self {
            root,
            count: paths.len(),
        }
    }

    /// The trie's root, for the event scanner's capture ([`crate::event::decode_capturing`]).
    pub(crate) fn root(&self) -> &Node {
        &self.root
    }

    /// `out` made ready for a record: one empty slot per path.
    pub(crate) fn reset(&self, out: &mut Values<'_>) {
        out.clear();
        out.resize(self.count, None);
    }

    /// The values of every path in `record` (a JSON object), into `out` (reused).
    ///
    /// # Errors
    /// A record that is not well-formed JSON where the walk went.
    pub fn extract<'r>(&self, record: &'r [u8], out: &mut Values<'r>) -> Result<(), String> {
        self.reset(out);
        if self.count == 0 {
            return Ok(());
        }
        let mut w = Walk {
            b: record,
            at: 0,
            out,
        };
        w.ws();
        if w.peek() == Some(b'{') {
            w.object(&self.root)
        } else {
            // Not an object: no field has a value.
            Ok(())
        }
    }
}

struct Walk<'r, 'o> {
    b: &'r [u8],
    at: usize,
    out: &'o mut Values<'r>,
}

fn malformed(at: usize) -> String {
    format!("malformed JSON at byte {at}")
}

impl<'r> Walk<'r, '_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.peek() == Some(c) {
            self.at += 1;
            Ok(())
        } else {
            Err(malformed(self.at))
        }
    }

    /// A string's raw bytes between its quotes (escapes left in), and whether it has any.
    fn string(&mut self) -> Result<(&'r [u8], bool), String> {
        self.eat(b'"')?;
        let start = self.at;
        let mut escaped = false;
        loop {
            let rest = self.b.get(self.at..).unwrap_or_default();
            let Some(i) = memchr::memchr2(b'"', b'\\', rest) else {
                return Err(malformed(self.b.len()));
            };
            self.at += i;
            if self.b[self.at] == b'"' {
                self.at += 1;
                return Ok((&self.b[start..self.at - 1], escaped));
            }
            escaped = true;
            self.at += 2;
        }
    }

    /// Skips one value (of any kind, nested ones included).
    fn skip(&mut self) -> Result<(), String> {
        self.ws();
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(open @ (b'{' | b'[')) => {
                let close = if open == b'{' { b'}' } else { b']' };
                self.at += 1;
                self.ws();
                if self.peek() == Some(close) {
                    self.at += 1;
                    return Ok(());
                }
                loop {
                    if open == b'{' {
                        self.string()?;
                        self.eat(b':')?;
                    }
                    self.skip()?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(c) if c == close => {
                            self.at += 1;
                            return Ok(());
                        }
                        _ => return Err(malformed(self.at)),
                    }
                }
            }
            Some(_) => {
                let start = self.at;
                while let Some(c) = self.peek() {
                    if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.at += 1;
                }
                if self.at == start {
                    Err(malformed(start))
                } else {
                    Ok(())
                }
            }
            None => Err(malformed(self.at)),
        }
    }

    /// Walks an object, recording the values of `node`'s paths below it.
    fn object(&mut self, node: &Node) -> Result<(), String> {
        self.eat(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(());
        }
        loop {
            let (raw, escaped) = self.string()?;
            self.eat(b':')?;
            let name = if escaped {
                let key = std::str::from_utf8(raw)
                    .ok()
                    .and_then(crate::event::scan::unescape);
                std::borrow::Cow::Owned(key.ok_or_else(|| malformed(self.at))?.into_bytes())
            } else {
                std::borrow::Cow::Borrowed(raw)
            };
            match node.child(&name) {
                Some(child) => self.member(child)?,
                None => self.skip()?,
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(malformed(self.at)),
            }
        }
    }

    /// The value of a key some path goes through: recorded if a path ends here, walked
    /// if paths go on below it and it is an object.
    fn member(&mut self, node: &Node) -> Result<(), String> {
        node.clear(self.out);
        self.ws();
        let start = self.at;
        if !node.children.is_empty() && self.peek() == Some(b'{') {
            self.object(node)?;
        } else {
            self.skip()?;
        }
        for &id in &node.leaves {
            self.out[id] = Some(&self.b[start..self.at]);
        }
        Ok(())
    }
}
