//! Byte-level view of the header block: where each header line starts and ends, so headers
//! can be read without decoding and removed or kept without re-serialising anything.

use std::ops::Range;

/// One header field in the original bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHeader {
    /// The field name, without the colon.
    pub name: Range<usize>,
    /// The raw value after the colon, folding included, line ending excluded.
    pub value: Range<usize>,
    /// The whole field including continuation lines and the final line ending.
    pub whole: Range<usize>,
}

/// The header block of a message.
#[derive(Debug, Clone, Default)]
pub struct HeaderBlock {
    /// Fields in order of appearance.
    pub fields: Vec<RawHeader>,
    /// Where the header block ends: the start of the empty separator line, or of the first
    /// line that is not a header (malformed messages), or the end of the message.
    pub end: usize,
}

impl HeaderBlock {
    /// Split the header block of `msg`.
    pub fn parse(msg: &[u8]) -> Self {
        let mut fields: Vec<RawHeader> = Vec::new();
        let mut pos = 0;
        while pos < msg.len() {
            let line_end = memchr::memchr(b'\n', &msg[pos..]).map_or(msg.len(), |i| pos + i + 1);
            let line = &msg[pos..line_end];
            let content = trim_eol(line);
            if content.is_empty() {
                return HeaderBlock { fields, end: pos };
            }
            if matches!(line[0], b' ' | b'\t') {
                match fields.last_mut() {
                    Some(f) => {
                        f.value.end = pos + content.len();
                        f.whole.end = line_end;
                    }
                    None => return HeaderBlock { fields, end: pos },
                }
            } else {
                let Some(colon) = memchr::memchr(b':', content) else {
                    return HeaderBlock { fields, end: pos };
                };
                let name = &content[..colon];
                let name_trimmed = name.trim_ascii_end();
                if name_trimmed.is_empty() || !name_trimmed.iter().all(|&b| (33..=126).contains(&b))
                {
                    return HeaderBlock { fields, end: pos };
                }
                fields.push(RawHeader {
                    name: pos..pos + name_trimmed.len(),
                    value: pos + colon + 1..pos + content.len(),
                    whole: pos..line_end,
                });
            }
            pos = line_end;
        }
        HeaderBlock {
            fields,
            end: msg.len(),
        }
    }

    /// The fields named `name` (case-insensitive).
    pub fn named<'a>(
        &'a self,
        msg: &'a [u8],
        name: &'a str,
    ) -> impl Iterator<Item = &'a RawHeader> + 'a {
        self.fields
            .iter()
            .filter(move |f| msg[f.name.clone()].eq_ignore_ascii_case(name.as_bytes()))
    }

    /// The raw value of the first field named `name`.
    pub fn first<'a>(&self, msg: &'a [u8], name: &str) -> Option<&'a [u8]> {
        self.named(msg, name).next().map(|f| &msg[f.value.clone()])
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_folded_headers() {
        let m = b"Subject: a\r\n b\r\nX-Spam-Flag: YES\r\nFrom:x@y\r\n\r\nbody\r\n";
        let h = HeaderBlock::parse(m);
        assert_eq!(h.fields.len(), 3);
        assert_eq!(&m[h.fields[0].value.clone()], b" a\r\n b");
        assert_eq!(&m[h.fields[1].whole.clone()], b"X-Spam-Flag: YES\r\n");
        assert_eq!(h.first(m, "from"), Some(&b"x@y"[..]));
        assert_eq!(&m[h.end..], b"\r\nbody\r\n");
    }

    #[test]
    fn malformed_blocks_end_early() {
        for (m, n) in [
            (&b" leading continuation\r\n"[..], 0),
            (b"A: 1\r\nnot a header\r\nB: 2\r\n", 1),
            (b"A: 1\nB: 2", 2),
            (b"", 0),
            (b"Bad Name: 1\r\n", 0),
        ] {
            assert_eq!(HeaderBlock::parse(m).fields.len(), n, "{m:?}");
        }
    }
}
