//! A single-pass scanner that checks a payload is one JSON object and finds the few top-level
//! members the gateway reads (`error`, `object`, `usage`, `choices`), skipping every other value
//! without building anything.
//!
//! Why not serde: a derived struct deserialises every key through an identifier visitor and
//! re-validates strings, which was about 4,000 instructions per stream event, most of the cost
//! of relaying a stream. This scanner does the same validation (structure, literals, number
//! grammar, string escapes and control characters, UTF-8) in one forward pass: it accepts what
//! serde_json accepts when it skips values, within the nesting serde_json parses (the `peek`
//! fuzz target holds it to that, member by member). The member values it keeps are handed to
//! serde, which is cheap for those few bytes. A key written with escapes is unescaped by serde
//! before it is matched, so an unusual but valid payload is never misread.

/// Byte ranges of the members the gateway reads, each the raw JSON value.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Members<'a> {
    pub error: Option<&'a [u8]>,
    pub object: Option<&'a [u8]>,
    pub usage: Option<&'a [u8]>,
    pub choices: Option<&'a [u8]>,
}

/// serde_json's own limit when it parses (rather than skips) a value: it refuses the 128th
/// nested array or object, the top-level object included.
pub(crate) const MAX_NESTING: usize = 127;

/// The members of one valid JSON object, or `None` when `raw` is not one (the last of
/// duplicate keys wins, as in serde_json's maps).
pub(crate) fn scan(raw: &[u8]) -> Option<Members<'_>> {
    let mut s = Scanner { b: raw, i: 0 };
    let m = s.top().ok()?;
    s.ws();
    (s.i == raw.len()).then_some(m)
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

type R<T> = Result<T, ()>;

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> R<()> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(())
        }
    }

    /// The top-level object.
    fn top(&mut self) -> R<Members<'a>> {
        let mut m = Members::default();
        self.eat(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(m);
        }
        loop {
            self.ws();
            let key_start = self.i;
            let (key, escaped) = self.string()?;
            let unescaped: String;
            let key = if escaped {
                // Rare: the key as serde reads it (which also refuses a lone surrogate).
                unescaped = serde_json::from_slice(&self.b[key_start..self.i]).map_err(|_| ())?;
                unescaped.as_bytes()
            } else {
                key
            };
            self.eat(b':')?;
            self.ws();
            let start = self.i;
            self.value(1)?;
            let value = &self.b[start..self.i];
            match key {
                b"error" => m.error = Some(value),
                b"object" => m.object = Some(value),
                b"usage" => m.usage = Some(value),
                b"choices" => m.choices = Some(value),
                _ => {}
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(m);
                }
                _ => return Err(()),
            }
        }
    }

    /// One value inside `depth` arrays and objects.
    fn value(&mut self, depth: usize) -> R<()> {
        let c = self.peek().ok_or(())?;
        if matches!(c, b'{' | b'[') && depth >= MAX_NESTING {
            return Err(());
        }
        match c {
            b'"' => self.string().map(|_| ()),
            b'{' => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.string()?;
                    self.eat(b':')?;
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(()),
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(()),
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(()),
        }
    }

    fn literal(&mut self, word: &[u8]) -> R<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(())
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, as JSON (and serde) require.
    fn number(&mut self) -> R<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(()),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digits1()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.digits1()?;
        }
        Ok(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    fn digits1(&mut self) -> R<()> {
        let start = self.i;
        self.digits();
        if self.i > start { Ok(()) } else { Err(()) }
    }

    /// A string starting at the current `"`: its raw contents and whether it has escapes.
    /// Escapes must be valid and raw control characters are refused, as in serde_json.
    fn string(&mut self) -> R<(&'a [u8], bool)> {
        if self.peek() != Some(b'"') {
            return Err(());
        }
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        loop {
            // A plain search over the rest of the slice (no per-byte bounds checks): engine
            // strings are mostly short (ids, roles, single tokens), where a word-at-a-time or
            // SIMD skip measured slower on real chunks.
            let rest = &self.b[self.i..];
            let at = rest
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .ok_or(())?;
            self.i += at;
            match rest[at] {
                b'"' => {
                    let s = &self.b[start..self.i];
                    // Outside strings any non-ASCII byte is already a syntax error; inside, it
                    // must be UTF-8 (an engine's broken bytes are an invalid answer, not text
                    // to relay). `is_ascii` is word-at-a-time, so ASCII strings cost nothing.
                    if !s.is_ascii() && std::str::from_utf8(s).is_err() {
                        return Err(());
                    }
                    self.i += 1;
                    return Ok((s, escaped));
                }
                b'\\' => {
                    escaped = true;
                    match self.b.get(self.i + 1).copied().ok_or(())? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        b'u' => {
                            let hex = self.b.get(self.i + 2..self.i + 6).ok_or(())?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(());
                            }
                            self.i += 6;
                        }
                        _ => return Err(()),
                    }
                }
                _ => return Err(()),
            }
        }
    }
}
