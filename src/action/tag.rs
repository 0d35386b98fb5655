//! Tagging at the byte level: drop incoming `X-Spam-*` headers (forgeries or leftovers from
//! elsewhere), prepend our verdict headers and our own `Received:` line. Nothing else of the
//! message changes, so bodies and DKIM signatures survive.

use crate::message::HeaderBlock;
use crate::smtp::rewrite::Rewrite;

/// Build the rewrite: `prefix` goes on top; every original header line except `X-Spam-*`
/// ones and those `also_drop(name, value)` picks is kept, and the body is kept whole.
pub fn rewrite(
    msg: &[u8],
    headers: &HeaderBlock,
    prefix: Vec<u8>,
    also_drop: impl Fn(&[u8], &[u8]) -> bool,
) -> Rewrite {
    let mut keep = Vec::with_capacity(4);
    let mut start = 0;
    for f in &headers.fields {
        let name = &msg[f.name.clone()];
        if (name.len() >= 7 && name[..7].eq_ignore_ascii_case(b"X-Spam-"))
            || also_drop(name, &msg[f.value.clone()])
        {
            if f.whole.start > start {
                keep.push(start..f.whole.start);
            }
            start = f.whole.end;
        }
    }
    if start < msg.len() {
        keep.push(start..msg.len());
    }
    Rewrite { prefix, keep }
}

/// The `Subject:` line of spam: `tag` before the original value (its raw bytes, encoded
/// words and folding kept), a copy of the tag already there removed first; a message
/// without a Subject gets one.
pub fn tagged_subject(original: Option<&[u8]>, tag: &str) -> Vec<u8> {
    let mut line = b"Subject: ".to_vec();
    line.extend_from_slice(tag.as_bytes());
    let value = original.unwrap_or_default();
    let start = value
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(value.len());
    let mut rest = &value[start..];
    let bare = tag.trim_end().as_bytes();
    while !bare.is_empty() && rest.starts_with(bare) {
        rest = &rest[bare.len()..];
        let skip = rest
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        rest = &rest[skip..];
    }
    let mut end = rest.len();
    while end > 0 && matches!(rest[end - 1], b'\r' | b'\n') {
        end -= 1;
    }
    line.extend_from_slice(&rest[..end]);
    line.extend_from_slice(b"\r\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_only_x_spam_headers() {
        let m = b"X-Spam-Flag: NO\r\nDrop-Me: x\r\nSubject: hi\r\nx-spam-status: Yes,\r\n\tscore=99\r\nX-Spamish: keep\r\n\r\nX-Spam-Flag: body\r\n";
        let h = HeaderBlock::parse(m);
        let r = rewrite(m, &h, b"X-New: 1\r\n".to_vec(), |n, _| n == b"Drop-Me");
        let out: Vec<u8> = r.parts(m).concat();
        assert_eq!(
            out,
            b"X-New: 1\r\nSubject: hi\r\nX-Spamish: keep\r\n\r\nX-Spam-Flag: body\r\n"
        );
        assert_eq!(r.len(), out.len());
    }

    #[test]
    fn subject_tags() {
        let t = "***SPAM*** ";
        let cases: [(Option<&[u8]>, &[u8]); 5] = [
            (Some(b" hello\r\n"), b"Subject: ***SPAM*** hello\r\n"),
            (
                Some(b" ***SPAM*** hello\r\n"),
                b"Subject: ***SPAM*** hello\r\n",
            ),
            (
                Some(b" =?utf-8?b?w6k=?=\r\n\tmore\r\n"),
                b"Subject: ***SPAM*** =?utf-8?b?w6k=?=\r\n\tmore\r\n",
            ),
            (Some(b"\r\n"), b"Subject: ***SPAM*** \r\n"),
            (None, b"Subject: ***SPAM*** \r\n"),
        ];
        for (orig, want) in cases {
            assert_eq!(
                String::from_utf8_lossy(&tagged_subject(orig, t)),
                String::from_utf8_lossy(want)
            );
        }
    }
}
