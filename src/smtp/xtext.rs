//! RFC 3461 xtext: how XFORWARD values and the DSN parameters ENVID and ORCPT travel in
//! SMTP commands (`+HH` escapes for bytes outside `!`..`~`, `+` and `=`).

/// Decode RFC 3461 xtext (`+HH` escapes); malformed escapes are kept as they are.
pub fn decode(s: &str) -> String {
    if !s.contains('+') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'+'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encode a value as RFC 3461 xtext.
///
/// ```
/// use filterd::smtp::xtext;
/// assert_eq!(xtext::encode("a b=c"), "a+20b+3Dc");
/// assert_eq!(xtext::decode("a+20b+3Dc"), "a b=c");
/// ```
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// True for a parameter value that may stand as xtext (printable ASCII without `=`, or
/// UTF-8 as RFC 6533 allows).
pub fn is_xtext(s: &str) -> bool {
    s.bytes().all(|b| (33..=126).contains(&b) && b != b'=') || !s.is_ascii()
}
