//! The ESMTP parameters of MAIL FROM and RCPT TO (SIZE, BODY, SMTPUTF8, RET, ENVID,
//! NOTIFY, ORCPT), parsed into the envelope's plain data; anything else is refused by name.

use crate::smtp::envelope::{Body, MailParams, RcptParams};
use crate::smtp::xtext::is_xtext;

/// A parameter that is unknown or malformed, as the client wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadParameter(pub String);

/// MAIL FROM parameters; the first unknown or malformed one is refused.
pub fn mail_params(raw: &[(String, Option<String>)]) -> Result<MailParams, BadParameter> {
    let mut p = MailParams::default();
    for (k, v) in raw {
        let bad = || BadParameter(render(k, v));
        match (k.as_str(), v.as_deref()) {
            ("SIZE", Some(n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                p.size = Some(n.parse().map_err(|_| bad())?)
            }
            ("BODY", Some(b)) if b.eq_ignore_ascii_case("7BIT") => p.body = Some(Body::SevenBit),
            ("BODY", Some(b)) if b.eq_ignore_ascii_case("8BITMIME") => {
                p.body = Some(Body::EightBitMime)
            }
            ("SMTPUTF8", None) => p.smtputf8 = true,
            ("RET", Some(r))
                if r.eq_ignore_ascii_case("FULL") || r.eq_ignore_ascii_case("HDRS") =>
            {
                p.ret = Some(r.to_ascii_uppercase())
            }
            ("ENVID", Some(e)) if is_xtext(e) && e.len() <= 100 => p.envid = Some(e.to_string()),
            _ => return Err(bad()),
        }
    }
    Ok(p)
}

/// RCPT TO parameters; the first unknown or malformed one is refused.
pub(crate) fn rcpt_params(raw: &[(String, Option<String>)]) -> Result<RcptParams, BadParameter> {
    let mut p = RcptParams::default();
    for (k, v) in raw {
        let bad = || BadParameter(render(k, v));
        match (k.as_str(), v.as_deref()) {
            ("NOTIFY", Some(n)) => {
                let n = n.to_ascii_uppercase();
                let parts: Vec<&str> = n.split(',').collect();
                let valid = if parts.contains(&"NEVER") {
                    parts.len() == 1
                } else {
                    parts
                        .iter()
                        .all(|p| matches!(*p, "SUCCESS" | "FAILURE" | "DELAY"))
                };
                if !valid {
                    return Err(bad());
                }
                p.notify = Some(n);
            }
            ("ORCPT", Some(o)) if o.contains(';') && is_xtext(o) && o.len() <= 500 => {
                p.orcpt = Some(o.to_string())
            }
            _ => return Err(bad()),
        }
    }
    Ok(p)
}

fn render(k: &str, v: &Option<String>) -> String {
    match v {
        Some(v) => format!("{k}={v}"),
        None => k.to_string(),
    }
}
