//! `multipart/form-data` bodies (OpenAI's audio endpoints): a sans-IO scanner that finds the
//! form's `model` (and `stream`) as the body arrives, and the request forwarded byte for byte
//! with only the `model` value replaced when routing changed it.
//!
//! Why a scanner of our own rather than a form parser: Lumen never needs the file, only where
//! `model` lies in the bytes it already holds, and it must refuse a broken form as early as
//! possible without buffering a part. The scanner keeps at most one frame plus a
//! delimiter's length of unprocessed bytes, a part's header block up to [`MAX_PART_HEADER`] and
//! a captured field's value up to [`MAX_FIELD`]; everything else only passes through it.

use bytes::Bytes;

/// The largest header block of one part (its `Content-Disposition` and `Content-Type`).
pub const MAX_PART_HEADER: usize = 8 * 1024;
/// The largest value of a field Lumen reads (`model`, `stream`).
pub const MAX_FIELD: usize = 1024;
/// RFC 2046: a boundary is 1 to 70 characters.
const MAX_BOUNDARY: usize = 70;

/// Why a body is not a form Lumen can route. Each is a 400 (`param` names the field when
/// one is to blame).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("The request must be multipart/form-data (this endpoint takes a file upload).")]
    NotMultipart,
    #[error("The multipart/form-data content type has no valid boundary parameter.")]
    NoBoundary,
    #[error("The multipart body is malformed: {0}.")]
    Malformed(&'static str),
    #[error("A multipart part's header block is larger than {MAX_PART_HEADER} bytes.")]
    HeaderTooLarge,
    #[error("The form field '{0}' is larger than {MAX_FIELD} bytes.")]
    FieldTooLarge(&'static str),
    #[error("The form field '{0}' is given more than once.")]
    Duplicate(&'static str),
    #[error("The form field '{0}' is not valid UTF-8.")]
    NotUtf8(&'static str),
    #[error("Missing required parameter: 'model'.")]
    MissingModel,
}

impl FormError {
    /// The form field to blame, as OpenAI's `param`.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            Self::FieldTooLarge(f) | Self::Duplicate(f) | Self::NotUtf8(f) => Some(f),
            Self::MissingModel => Some("model"),
            _ => None,
        }
    }
}

/// A header value's `;`-separated parameters after its first item, as lowercase names and
/// values (quotes taken off), split the way the engines' parsers split them (python-multipart,
/// under FastAPI: a `;` inside double quotes does not separate). Lumen and the engine must read
/// the same boundary and the same part names, or a client could show Lumen one `model` and the
/// engine another: anything two parsers could read differently is refused (`None`) rather than
/// guessed at: a backslash (escapes are unescaped by some parsers and not others), unbalanced
/// quotes, a value with a quote anywhere but around it.
fn params(value: &str) -> Option<(&str, Vec<(String, &str)>)> {
    if value.contains('\\') {
        return None;
    }
    let mut segments = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, b) in value.bytes().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b';' if !quoted => {
                segments.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return None;
    }
    segments.push(&value[start..]);
    let first = segments.first().copied().unwrap_or_default().trim();
    let mut out = Vec::new();
    for segment in segments.iter().skip(1) {
        let Some((name, v)) = segment.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            Some(inner) if !inner.contains('"') => inner,
            _ if v.contains('"') => return None,
            _ => v,
        };
        out.push((name.trim().to_ascii_lowercase(), v));
    }
    Some((first, out))
}

/// RFC 2046's `bchars`: what a boundary may be made of (and not end with a space).
fn boundary_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b)
}

/// The boundary of a `multipart/form-data` content type. Refused when an engine could read
/// another one from the same header: `boundary` twice, quoting Lumen and the engine could
/// undo differently, characters outside RFC 2046's, or a `charset` other than UTF-8 (the
/// engines decode field names and values with it, so `name="+AG0AbwBkAGUAbA-"` is `model` in
/// UTF-7).
pub fn boundary(content_type: &str) -> Result<&str, FormError> {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("multipart/form-data") {
        return Err(FormError::NotMultipart);
    }
    let (_, params) = params(content_type).ok_or(FormError::NoBoundary)?;
    let mut found = None;
    for (name, value) in params {
        match name.as_str() {
            "boundary" if found.is_some() => return Err(FormError::NoBoundary),
            "boundary" => found = Some(value),
            "charset" if !value.eq_ignore_ascii_case("utf-8") => {
                return Err(FormError::NoBoundary);
            }
            // An extended (RFC 2231) parameter some parser could take for the boundary.
            n if n.starts_with("boundary*") => return Err(FormError::NoBoundary),
            _ => {}
        }
    }
    let value = found.ok_or(FormError::NoBoundary)?;
    let ok = !value.is_empty()
        && value.len() <= MAX_BOUNDARY
        && value.bytes().all(boundary_char)
        && !value.ends_with(' ');
    if ok {
        Ok(value)
    } else {
        Err(FormError::NoBoundary)
    }
}

/// The fields Lumen reads from a complete form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormFields {
    pub model: String,
    /// The `model` value's byte range in the body.
    pub model_at: (usize, usize),
    /// `stream` is `true` (vLLM streams transcriptions as SSE).
    pub stream: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first delimiter (a preamble is allowed and ignored).
    Preamble,
    /// Just after a delimiter: `--` closes the form, CRLF opens a part.
    AfterDelimiter,
    Headers,
    Body,
    /// After the closing delimiter: the epilogue is ignored.
    Done,
}

/// A field Lumen captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Model,
    Stream,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Stream => "stream",
        }
    }
}

/// Feeds on a form's bytes in order, in frames of any size; [`finish`](Self::finish) gives
/// the fields once the body is complete. The first error sticks: [`feed`](Self::feed) returns
/// `false` from then on, so a reader can stop reading at once.
#[derive(Debug)]
pub struct FormScanner {
    /// `\r\n--` and the boundary.
    delimiter: Vec<u8>,
    state: State,
    /// Bytes held: `pending[read..]` are not yet consumed, and start at absolute offset
    /// `offset`. Consuming moves `read`; the consumed bytes are dropped once per frame, not
    /// once per part (a frame of many tiny parts would otherwise be moved once for each).
    pending: Vec<u8>,
    read: usize,
    offset: usize,
    /// The part being read, when it is captured: the field, its value, where it starts.
    capture: Option<(Field, Vec<u8>, usize)>,
    model: Option<(String, (usize, usize))>,
    stream: Option<bool>,
    error: Option<FormError>,
}

impl FormScanner {
    /// A scanner for a body of `content_type` (which must be `multipart/form-data` with a
    /// boundary).
    pub fn new(content_type: &str) -> Result<Self, FormError> {
        let b = boundary(content_type)?;
        let mut delimiter = Vec::with_capacity(4 + b.len());
        delimiter.extend_from_slice(b"\r\n--");
        delimiter.extend_from_slice(b.as_bytes());
        Ok(Self {
            delimiter,
            state: State::Preamble,
            pending: Vec::new(),
            read: 0,
            offset: 0,
            capture: None,
            model: None,
            stream: None,
            error: None,
        })
    }

    /// Scans the next bytes; `false` once the form is known to be bad.
    pub fn feed(&mut self, data: &[u8]) -> bool {
        if self.error.is_some() {
            return false;
        }
        if self.state == State::Done {
            return true;
        }
        self.pending.extend_from_slice(data);
        let ran = self.run();
        self.pending.drain(..self.read.min(self.pending.len()));
        self.read = 0;
        if let Err(e) = ran {
            self.error = Some(e);
            self.pending = Vec::new();
            return false;
        }
        true
    }

    /// The first error found so far.
    pub fn error(&self) -> Option<&FormError> {
        self.error.as_ref()
    }

    /// The fields of a complete form: the closing delimiter seen and a `model` given.
    pub fn finish(self) -> Result<FormFields, FormError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.state != State::Done {
            return Err(FormError::Malformed("the form has no closing boundary"));
        }
        let (model, model_at) = self.model.ok_or(FormError::MissingModel)?;
        if model.is_empty() {
            return Err(FormError::MissingModel);
        }
        Ok(FormFields {
            model,
            model_at,
            stream: self.stream.unwrap_or(false),
        })
    }

    /// Consumes `n` pending bytes.
    fn consume(&mut self, n: usize) {
        self.read += n;
        self.offset += n;
    }

    /// The bytes not yet consumed.
    fn rest(&self) -> &[u8] {
        &self.pending[self.read..]
    }

    fn run(&mut self) -> Result<(), FormError> {
        loop {
            match self.state {
                State::Done => {
                    self.pending = Vec::new();
                    self.read = 0;
                    return Ok(());
                }
                State::Preamble => {
                    // The first delimiter may open the body (no CRLF before it).
                    let open = &self.delimiter[2..];
                    if self.rest().len() < open.len() {
                        return Ok(());
                    }
                    if self.rest().starts_with(open) {
                        self.consume(open.len());
                        self.state = State::AfterDelimiter;
                        continue;
                    }
                    match memchr::memmem::find(self.rest(), &self.delimiter) {
                        Some(at) => {
                            self.consume(at + self.delimiter.len());
                            self.state = State::AfterDelimiter;
                        }
                        None => {
                            let keep = self.delimiter.len() - 1;
                            let drop = self.rest().len().saturating_sub(keep);
                            self.consume(drop);
                            return Ok(());
                        }
                    }
                }
                State::AfterDelimiter => {
                    if self.rest().len() < 2 {
                        return Ok(());
                    }
                    match &self.rest()[..2] {
                        b"--" => self.state = State::Done,
                        b"\r\n" => {
                            self.consume(2);
                            self.state = State::Headers;
                        }
                        _ => return Err(FormError::Malformed("a boundary is followed by junk")),
                    }
                }
                State::Headers => {
                    let end = if self.rest().starts_with(b"\r\n") {
                        Some(0)
                    } else {
                        memchr::memmem::find(self.rest(), b"\r\n\r\n").map(|e| e + 2)
                    };
                    let Some(end) = end else {
                        if self.rest().len() > MAX_PART_HEADER {
                            return Err(FormError::HeaderTooLarge);
                        }
                        return Ok(());
                    };
                    if end > MAX_PART_HEADER {
                        return Err(FormError::HeaderTooLarge);
                    }
                    let field = part_field(&self.rest()[..end])?;
                    self.consume(end + 2);
                    if let Some(f) = field {
                        let taken = match f {
                            Field::Model => self.model.is_some(),
                            Field::Stream => self.stream.is_some(),
                        };
                        if taken || self.capture.is_some() {
                            return Err(FormError::Duplicate(f.name()));
                        }
                        self.capture = Some((f, Vec::new(), self.offset));
                    }
                    self.state = State::Body;
                }
                State::Body => {
                    let found = memchr::memmem::find(self.rest(), &self.delimiter);
                    let body_end = match found {
                        Some(at) => at,
                        // Everything but what could be the start of a delimiter.
                        None => self.rest().len().saturating_sub(self.delimiter.len() - 1),
                    };
                    if let Some((f, value, _)) = &mut self.capture {
                        if value.len() + body_end > MAX_FIELD {
                            return Err(FormError::FieldTooLarge(f.name()));
                        }
                        value.extend_from_slice(&self.pending[self.read..self.read + body_end]);
                    }
                    let Some(at) = found else {
                        self.consume(body_end);
                        return Ok(());
                    };
                    if let Some((f, value, start)) = self.capture.take() {
                        self.keep(f, value, (start, self.offset + at))?;
                    }
                    self.consume(at + self.delimiter.len());
                    self.state = State::AfterDelimiter;
                }
            }
        }
    }

    fn keep(&mut self, f: Field, value: Vec<u8>, at: (usize, usize)) -> Result<(), FormError> {
        let value = String::from_utf8(value).map_err(|_| FormError::NotUtf8(f.name()))?;
        match f {
            Field::Model => self.model = Some((value.trim().to_owned(), at)),
            Field::Stream => self.stream = Some(value.trim().eq_ignore_ascii_case("true")),
        }
        Ok(())
    }
}

/// The field a part's header block names, when Lumen captures it. Every part must have a
/// `Content-Disposition: form-data` with a `name`; header lines must be `name: value`.
fn part_field(block: &[u8]) -> Result<Option<Field>, FormError> {
    let block = std::str::from_utf8(block)
        .map_err(|_| FormError::Malformed("a part header is not valid UTF-8"))?;
    let mut name = None;
    for line in block.split("\r\n").filter(|l| !l.is_empty()) {
        let Some((header, value)) = line.split_once(':') else {
            return Err(FormError::Malformed("a part header line has no ':'"));
        };
        if header.is_empty() || header.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(FormError::Malformed("a part header name is invalid"));
        }
        if !header.eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        if name.is_some() {
            return Err(FormError::Malformed(
                "a part has two Content-Disposition headers",
            ));
        }
        let Some((kind, params)) = params(value) else {
            return Err(FormError::Malformed(
                "a part's Content-Disposition has escapes or unbalanced quotes",
            ));
        };
        if !kind.eq_ignore_ascii_case("form-data") {
            return Err(FormError::Malformed("a part is not form-data"));
        }
        for (k, v) in params {
            if k == "name" {
                if name.is_some() {
                    return Err(FormError::Malformed(
                        "a part's Content-Disposition has two names",
                    ));
                }
                name = Some(v);
            } else if k.starts_with("name*") {
                // RFC 7578 forbids it; some parsers still decode it into the name.
                return Err(FormError::Malformed(
                    "a part's Content-Disposition has an extended name*",
                ));
            }
        }
        if name.is_none() {
            return Err(FormError::Malformed(
                "a part's Content-Disposition has no name",
            ));
        }
    }
    match name {
        None => Err(FormError::Malformed("a part has no Content-Disposition")),
        Some("model") => Ok(Some(Field::Model)),
        Some("stream") => Ok(Some(Field::Stream)),
        Some(_) => Ok(None),
    }
}

/// A form forwarded as the client sent it, but for `model`, which routing resolves (an alias
/// becomes the engine's id). Cloning it (one per attempt) shares the body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FormRequest {
    /// The model to send; starts as the form's own.
    pub model: String,
    original: String,
    body: Bytes,
    content_type: String,
    model_at: (usize, usize),
    /// The client asked for a stream (`stream=true`).
    pub stream: bool,
}

impl FormRequest {
    /// A complete body, with the fields its scanner found in it.
    pub fn new(content_type: String, body: Bytes, fields: FormFields) -> Self {
        Self {
            original: fields.model.clone(),
            model: fields.model,
            body,
            content_type,
            model_at: fields.model_at,
            stream: fields.stream,
        }
    }

    /// Scans a whole body at once (tests, and bodies already in memory).
    pub fn parse(content_type: &str, body: Bytes) -> Result<Self, FormError> {
        let mut s = FormScanner::new(content_type)?;
        s.feed(&body);
        let fields = s.finish()?;
        Ok(Self::new(content_type.to_owned(), body, fields))
    }

    /// The content type to send it with (the client's, boundary included).
    pub fn content_type(&self) -> &str {
        &self.content_type
    }

    /// The body as the client sent it.
    pub fn original(&self) -> &Bytes {
        &self.body
    }

    /// The body to send, as pieces written one after the other: the client's bytes when
    /// `model` is unchanged, else the bytes before the model's value, the new value, and the
    /// bytes after it. No piece copies the body (they share it).
    pub fn segments(&self) -> Vec<Bytes> {
        if self.model == self.original {
            return vec![self.body.clone()];
        }
        let (start, end) = self.model_at;
        vec![
            self.body.slice(..start),
            Bytes::from(self.model.clone()),
            self.body.slice(end..),
        ]
    }

    /// The length of the body to send.
    pub fn len(&self) -> usize {
        self.segments().iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl crate::HasModel for FormRequest {
    fn model(&self) -> &str {
        &self.model
    }
    fn model_mut(&mut self) -> &mut String {
        &mut self.model
    }
}

#[cfg(test)]
mod tests;
