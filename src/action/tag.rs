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
    prefix: String,
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
    Rewrite {
        prefix: prefix.into_bytes(),
        keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_only_x_spam_headers() {
        let m = b"X-Spam-Flag: NO\r\nDrop-Me: x\r\nSubject: hi\r\nx-spam-status: Yes,\r\n\tscore=99\r\nX-Spamish: keep\r\n\r\nX-Spam-Flag: body\r\n";
        let h = HeaderBlock::parse(m);
        let r = rewrite(m, &h, "X-New: 1\r\n".into(), |n, _| n == b"Drop-Me");
        let out: Vec<u8> = r.parts(m).concat();
        assert_eq!(
            out,
            b"X-New: 1\r\nSubject: hi\r\nX-Spamish: keep\r\n\r\nX-Spam-Flag: body\r\n"
        );
        assert_eq!(r.len(), out.len());
    }
}
