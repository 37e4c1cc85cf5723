//! The request-path policy: what a request's path must look like before it
//! is routed, and the one spelling of it that is routed and forwarded.
//!
//! A path the proxy routes one way and the upstream reads another way is a
//! way around the route's middlewares (`/%61dmin` routed as the open `/`,
//! served by the upstream as `/admin`). So, in this order:
//!  1. every `%` starts a valid escape; the escapes of characters that
//!     upstreams disagree about (`%2F %5C %00 %3B %25 %3F %23`) are refused
//!     unless the entrypoint allows them, and so are a literal backslash
//!     and a literal `#`;
//!  2. escapes of unreserved characters are decoded and the rest written
//!     in upper case (RFC 3986 §2.3, §6.2.2.1);
//!  3. `;` path parameters are refused, or stripped from every segment;
//!  4. `.` and `..` segments are removed and repeated slashes merged (RFC
//!     3986 §5.2.4); a path that climbs above the root is refused.
//!
//! The result is what routing sees and what the upstream receives. Applying
//! it again changes nothing, so an upstream that normalises the same way
//! reads the path that was routed. Not here: the query string (untouched)
//! and routing itself.
use std::{borrow::Cow, fmt};

/// An escaped character that upstreams read in different ways.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoded {
    Slash,
    Backslash,
    Null,
    Semicolon,
    Percent,
    QuestionMark,
    Hash,
}

impl Encoded {
    pub const ALL: [Encoded; 7] = [
        Encoded::Slash,
        Encoded::Backslash,
        Encoded::Null,
        Encoded::Semicolon,
        Encoded::Percent,
        Encoded::QuestionMark,
        Encoded::Hash,
    ];

    /// Its name in `path.allow_encoded`.
    pub fn name(self) -> &'static str {
        match self {
            Encoded::Slash => "slash",
            Encoded::Backslash => "backslash",
            Encoded::Null => "null",
            Encoded::Semicolon => "semicolon",
            Encoded::Percent => "percent",
            Encoded::QuestionMark => "question_mark",
            Encoded::Hash => "hash",
        }
    }

    pub fn from_name(name: &str) -> Option<Encoded> {
        Encoded::ALL.into_iter().find(|e| e.name() == name)
    }

    fn byte(self) -> u8 {
        match self {
            Encoded::Slash => b'/',
            Encoded::Backslash => b'\\',
            Encoded::Null => 0,
            Encoded::Semicolon => b';',
            Encoded::Percent => b'%',
            Encoded::QuestionMark => b'?',
            Encoded::Hash => b'#',
        }
    }

    fn of_byte(byte: u8) -> Option<Encoded> {
        Encoded::ALL.into_iter().find(|e| e.byte() == byte)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// What to do with `;` path parameters (`/admin;jsessionid=1`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PathParameters {
    /// 400: servlet containers strip them and other servers do not, so a
    /// path with one means different things to different upstreams.
    #[default]
    Reject,
    /// Remove `;...` up to the next `/` in every segment, then route and
    /// forward what is left, as a servlet container would read it.
    Strip,
}

/// An entrypoint's request-path policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathPolicy {
    /// Bit per [`Encoded`]: the escapes let through.
    allowed: u8,
    pub parameters: PathParameters,
}

impl PathPolicy {
    pub fn allow(&mut self, encoded: Encoded) {
        self.allowed |= encoded.bit();
    }

    pub fn allows(&self, encoded: Encoded) -> bool {
        self.allowed & encoded.bit() != 0
    }

    /// The allowed escapes, in [`Encoded::ALL`] order.
    pub fn allowed(&self) -> impl Iterator<Item = Encoded> + '_ {
        Encoded::ALL.into_iter().filter(|e| self.allows(*e))
    }
}

/// Why a path was refused (the client gets 400 with this text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathRejection {
    /// Not `/...` (`*`, an empty path).
    NotAbsolute,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// A refused escape.
    Encoded(Encoded),
    /// A literal `\` or `#`.
    Literal(char),
    /// A `;` parameter where they are refused.
    Parameter,
    /// More `..` than segments before them.
    AboveRoot,
}

impl fmt::Display for PathRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathRejection::NotAbsolute => write!(f, "the request path does not start with `/`"),
            PathRejection::BadEscape => {
                write!(
                    f,
                    "the request path has a `%` not followed by two hex digits"
                )
            }
            PathRejection::Encoded(e) => write!(
                f,
                "the request path contains an encoded {} (%{:02X}), which this entrypoint refuses",
                e.name().replace('_', " "),
                e.byte()
            ),
            PathRejection::Literal(c) => {
                write!(f, "the request path contains a literal `{c}`")
            }
            PathRejection::Parameter => write!(
                f,
                "the request path contains a `;` path parameter, which this entrypoint refuses"
            ),
            PathRejection::AboveRoot => {
                write!(f, "the request path climbs above the root with `..`")
            }
        }
    }
}

impl std::error::Error for PathRejection {}

/// The one spelling of `path` that is routed and forwarded, or why there is
/// none. Borrows when the path is already in that form.
pub fn normalize<'a>(path: &'a str, policy: &PathPolicy) -> Result<Cow<'a, str>, PathRejection> {
    if !path.starts_with('/') {
        return Err(PathRejection::NotAbsolute);
    }
    if is_plain(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path.as_bytes(), policy)?;
    let segments = remove_dot_segments(&decoded)?;
    Ok(Cow::Owned(segments))
}

/// No escape, backslash, `#`, `;`, empty or dot segment: nothing to do.
fn is_plain(path: &str) -> bool {
    let bytes = path.as_bytes();
    !bytes
        .iter()
        .any(|b| matches!(b, b'%' | b'\\' | b'#' | b';'))
        && !bytes.windows(2).any(|w| w == b"//" || w == b"/.")
}

/// Step 1 to 3: escapes checked, decoded or upper-cased; parameters refused
/// or dropped. Every byte of the result is ASCII.
fn decode(path: &[u8], policy: &PathPolicy) -> Result<Vec<u8>, PathRejection> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        match path[i] {
            b'%' => {
                let byte = path
                    .get(i + 1..i + 3)
                    .and_then(|hex| Some(hex_value(hex[0])? << 4 | hex_value(hex[1])?))
                    .ok_or(PathRejection::BadEscape)?;
                if is_unreserved(byte) {
                    out.push(byte);
                } else {
                    if let Some(encoded) = Encoded::of_byte(byte) {
                        if !policy.allows(encoded) {
                            return Err(PathRejection::Encoded(encoded));
                        }
                    }
                    out.extend_from_slice(format!("%{byte:02X}").as_bytes());
                }
                i += 3;
            }
            b'\\' if !policy.allows(Encoded::Backslash) => {
                return Err(PathRejection::Literal('\\'))
            }
            b'#' => return Err(PathRejection::Literal('#')),
            b';' => match policy.parameters {
                PathParameters::Reject => return Err(PathRejection::Parameter),
                PathParameters::Strip => {
                    while i < path.len() && path[i] != b'/' {
                        i += 1;
                    }
                }
            },
            byte if byte.is_ascii() => {
                out.push(byte);
                i += 1;
            }
            // The URI parser lets only ASCII through; anything else is not
            // a path this proxy can spell for an upstream.
            _ => return Err(PathRejection::BadEscape),
        }
    }
    Ok(out)
}

/// Step 4 on an already decoded path: `.` and `..` removed, empty segments
/// merged, a trailing slash kept.
fn remove_dot_segments(path: &[u8]) -> Result<String, PathRejection> {
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut trailing_slash = false;
    // The path starts with `/`: the first piece is the empty one before it.
    for segment in path.split(|b| *b == b'/').skip(1) {
        trailing_slash = true;
        match segment {
            b"" | b"." => {}
            b".." => {
                if kept.pop().is_none() {
                    return Err(PathRejection::AboveRoot);
                }
            }
            _ => {
                kept.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        // ASCII by construction (decode refuses anything else).
        out.push_str(std::str::from_utf8(segment).map_err(|_| PathRejection::BadEscape)?);
    }
    if trailing_slash || kept.is_empty() {
        out.push('/');
    }
    Ok(out)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
#[path = "path_tests.rs"]
mod tests;
