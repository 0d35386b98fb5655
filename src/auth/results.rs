//! The `Authentication-Results:` header (RFC 8601) we prepend, and the recognition of
//! incoming ones that claim our authserv-id (forgeries, removed).

use super::{AuthResult, DmarcVerdict};
use mail_auth::{AuthenticationResults, DkimOutput, SpfOutput};
use std::net::IpAddr;

/// What verification found, as the header reports it.
pub(super) struct Found<'a, 'm> {
    /// SPF for MAIL FROM, when it ran.
    pub spf: Option<&'a SpfOutput>,
    /// SPF for HELO, when it ran.
    pub spf_helo: Option<&'a SpfOutput>,
    /// Every DKIM signature.
    pub dkim: &'a [DkimOutput<'m>],
    /// DMARC for the From domain.
    pub dmarc: DmarcVerdict,
    /// The ARC chain (pass, none, temperror or fail).
    pub arc: AuthResult,
}

/// The header, CRLF-terminated, in the order most tools print it: dkim, spf, dmarc, arc.
pub(super) fn header(
    host: &str,
    ip: Option<IpAddr>,
    sender: &str,
    helo: &str,
    from_domain: &str,
    found: &Found<'_, '_>,
) -> String {
    let mut ar = AuthenticationResults::new(host).with_dkim_results(found.dkim, from_domain);
    if let (Some(ip), Some(out)) = (ip, found.spf) {
        ar = ar.with_spf_mailfrom_result(out, ip, sender, helo);
    }
    if let (Some(ip), Some(out)) = (ip, found.spf_helo) {
        ar = ar.with_spf_ehlo_result(out, ip, helo);
    }
    let mut header = format!("Authentication-Results: {ar}");
    if found.dkim.is_empty() {
        header.push_str(";\r\n\tdkim=none");
    }
    // DMARC and ARC are written here: mail-auth prints `dmarc=none` for a message that
    // fails DMARC without any passing identifier, and ARC knows only none/pass/fail
    // (RFC 8617 section 4.4).
    header.push_str(";\r\n\tdmarc=");
    header.push_str(found.dmarc.as_str());
    if !from_domain.is_empty() && is_domain(from_domain) {
        header.push_str(" header.from=");
        header.push_str(from_domain);
    }
    if let DmarcVerdict::Fail(p) = found.dmarc {
        header.push_str(" policy.dmarc=");
        header.push_str(p.as_str());
    }
    header.push_str(";\r\n\tarc=");
    header.push_str(found.arc.as_str());
    if let Some(ip) = ip {
        header.push_str(&format!(" smtp.remote-ip={}", ip_pvalue(ip)));
    }
    header.push_str("\r\n");
    header
}

/// Safe to print as a pvalue: letters, digits, '-', '.', '_'.
fn is_domain(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

fn ip_pvalue(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        // A pvalue may not hold ':' unquoted.
        IpAddr::V6(v6) => format!("\"{v6}\""),
    }
}

/// True when an `Authentication-Results` value claims `authserv_id` (ours): such headers
/// arriving from outside are forgeries and are removed (RFC 8601 section 5).
pub fn claims_authserv_id(value: &[u8], authserv_id: &str) -> bool {
    let text = String::from_utf8_lossy(value);
    let mut rest = text.trim_start();
    // Skip leading comments: "(comment) id; ..."
    while let Some(r) = rest.strip_prefix('(') {
        match r.find(')') {
            Some(i) => rest = r[i + 1..].trim_start(),
            None => return false,
        }
    }
    let id: &str = rest
        .split(|c: char| c == ';' || c.is_ascii_whitespace() || c == '(')
        .next()
        .unwrap_or("");
    !id.is_empty() && id.eq_ignore_ascii_case(authserv_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_results_are_recognised() {
        assert!(claims_authserv_id(
            b" mx.example.net; spf=pass",
            "mx.example.net"
        ));
        assert!(claims_authserv_id(
            b" MX.Example.NET 1; none",
            "mx.example.net"
        ));
        assert!(claims_authserv_id(
            b" (forged) mx.example.net;\r\n\tdkim=pass",
            "mx.example.net"
        ));
        assert!(!claims_authserv_id(
            b" mx.example.org; spf=pass",
            "mx.example.net"
        ));
        assert!(!claims_authserv_id(
            b" mx.example.net.evil; none",
            "mx.example.net"
        ));
        assert!(!claims_authserv_id(b"", "mx.example.net"));
    }
}
