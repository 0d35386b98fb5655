//! Every SMTP reply filterd can send, in one place: the typed `Reply` and the catalogue
//! of texts. No other module writes reply text; outcomes convert into a `Reply` here.

use std::fmt::Write as _;

/// An enhanced status code (RFC 3463), e.g. `4.3.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enhanced(pub u8, pub u16, pub u16);

impl std::fmt::Display for Enhanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One SMTP reply: a code, an optional enhanced code and one or more text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The enhanced status code, written after the code when the client asked for them.
    pub enhanced: Option<Enhanced>,
    /// The text lines; a multi-line reply has more than one.
    pub lines: Vec<String>,
}

impl Reply {
    /// A single-line reply.
    pub fn new(code: u16, enhanced: Option<Enhanced>, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced,
            lines: vec![text.into()],
        }
    }

    fn enh(code: u16, class_subject_detail: (u16, u16), text: impl Into<String>) -> Self {
        let class = (code / 100) as u8;
        Reply::new(
            code,
            Some(Enhanced(
                class,
                class_subject_detail.0,
                class_subject_detail.1,
            )),
            text,
        )
    }

    /// True for 2xx replies.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// True for 4xx replies.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// The reply as it goes on the wire, CRLF-terminated, every line carrying the code.
    pub(crate) fn to_wire(&self) -> Vec<u8> {
        let mut out = String::with_capacity(64);
        let n = self.lines.len().max(1);
        for i in 0..n {
            let sep = if i + 1 == n { ' ' } else { '-' };
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            let _ = write!(out, "{}{}", self.code, sep);
            if let Some(e) = self.enhanced {
                // EHLO keyword lines carry no enhanced code (RFC 2034 only covers text replies).
                if self.lines.len() == 1 {
                    let _ = write!(out, "{e} ");
                }
            }
            out.push_str(text);
            out.push_str("\r\n");
        }
        out.into_bytes()
    }

    /// The reply as one line for logs.
    pub fn one_line(&self) -> String {
        match self.enhanced {
            Some(e) => format!("{} {} {}", self.code, e, self.lines.join(" / ")),
            None => format!("{} {}", self.code, self.lines.join(" / ")),
        }
    }

    // ---- session ----

    /// The greeting, sent at once on connect.
    pub fn greeting(hostname: &str, lmtp: bool) -> Self {
        let proto = if lmtp { "LMTP" } else { "ESMTP" };
        Reply::new(220, None, format!("{hostname} {proto} filterd"))
    }
    /// Reply to HELO.
    pub fn helo(hostname: &str) -> Self {
        Reply::new(250, None, hostname.to_string())
    }
    /// Reply to EHLO/LHLO: the hostname, then one keyword per line.
    pub(crate) fn ehlo(hostname: &str, max_size: usize) -> Self {
        Reply {
            code: 250,
            enhanced: None,
            lines: vec![
                hostname.to_string(),
                "PIPELINING".into(),
                format!("SIZE {max_size}"),
                "8BITMIME".into(),
                "ENHANCEDSTATUSCODES".into(),
                "SMTPUTF8".into(),
                "DSN".into(),
                "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE".into(),
            ],
        }
    }
    /// Generic success.
    pub fn ok() -> Self {
        Reply::enh(250, (0, 0), "Ok")
    }
    /// MAIL accepted.
    pub(crate) fn sender_ok() -> Self {
        Reply::enh(250, (1, 0), "Ok")
    }
    /// RCPT accepted.
    pub(crate) fn recipient_ok() -> Self {
        Reply::enh(250, (1, 5), "Ok")
    }
    /// Go ahead with the message.
    pub(crate) fn start_data() -> Self {
        Reply::new(354, None, "End data with <CR><LF>.<CR><LF>")
    }
    /// QUIT.
    pub(crate) fn bye() -> Self {
        Reply::enh(221, (0, 0), "Bye")
    }
    /// VRFY is not offered.
    pub(crate) fn vrfy() -> Self {
        Reply::enh(252, (0, 0), "Cannot VRFY user")
    }
    /// HELP.
    pub(crate) fn help() -> Self {
        Reply::enh(214, (0, 0), "See RFC 5321; filterd is a content filter")
    }
    /// A client outside the allow-list.
    pub(crate) fn client_refused(ip: std::net::IpAddr) -> Self {
        Reply::enh(554, (7, 1), format!("Client [{ip}] not allowed"))
    }
    /// Too many connections at once.
    pub(crate) fn too_many_connections() -> Self {
        Reply::enh(421, (7, 0), "Too many connections, try again later")
    }
    /// The server is shutting down.
    pub(crate) fn shutting_down(hostname: &str) -> Self {
        Reply::enh(421, (3, 2), format!("{hostname} Service shutting down"))
    }
    /// The memory budget for messages in flight is used up: try again later (at DATA 452,
    /// at the end of the content 451).
    pub(crate) fn insufficient_storage(code: u16) -> Self {
        Reply::enh(code, (3, 1), "Insufficient system storage, try again later")
    }
    /// The client made too many errors (Postfix's `smtpd_hard_error_limit`).
    pub(crate) fn too_many_errors(hostname: &str) -> Self {
        Reply::enh(421, (7, 0), format!("{hostname} Error: too many errors"))
    }
    /// The client was idle too long.
    pub fn timeout(hostname: &str) -> Self {
        Reply::enh(421, (4, 2), format!("{hostname} Error: timeout exceeded"))
    }

    // ---- syntax and sequence ----

    /// An unknown command.
    pub(crate) fn unknown_command() -> Self {
        Reply::enh(502, (5, 2), "Error: command not recognized")
    }
    /// A known command this filter does not offer.
    pub(crate) fn not_implemented() -> Self {
        Reply::enh(502, (5, 1), "Error: command not implemented")
    }
    /// Command syntax error.
    pub(crate) fn syntax(what: &str) -> Self {
        Reply::enh(501, (5, 4), format!("Syntax: {what}"))
    }
    /// Bad address syntax.
    pub(crate) fn bad_address(what: &str) -> Self {
        Reply::enh(501, (1, 3), format!("Bad address syntax: {what}"))
    }
    /// A command line longer than the limit.
    pub(crate) fn command_too_long() -> Self {
        Reply::enh(500, (5, 2), "Error: command line too long")
    }
    /// Commands in the wrong order.
    pub(crate) fn bad_sequence(what: &str) -> Self {
        Reply::enh(503, (5, 1), format!("Error: {what}"))
    }
    /// An unsupported MAIL/RCPT parameter.
    pub(crate) fn bad_parameter(what: &str) -> Self {
        Reply::enh(555, (5, 4), format!("Unsupported option: {what}"))
    }
    /// SIZE parameter over the limit.
    pub(crate) fn size_exceeded_declared() -> Self {
        Reply::enh(552, (3, 4), "Message size exceeds fixed limit")
    }
    /// Too many recipients in one transaction.
    pub(crate) fn too_many_recipients() -> Self {
        Reply::enh(452, (5, 3), "Error: too many recipients")
    }
    /// DATA with no accepted recipient.
    pub(crate) fn no_valid_recipients() -> Self {
        Reply::enh(554, (5, 1), "Error: no valid recipients")
    }

    // ---- end of data ----

    /// The message was larger than the limit.
    pub(crate) fn message_too_big() -> Self {
        Reply::enh(552, (3, 4), "Message size exceeds fixed limit")
    }
    /// A data line longer than the safety limit.
    pub(crate) fn data_line_too_long(limit: usize) -> Self {
        Reply::enh(
            554,
            (6, 0),
            format!("Message has a line longer than {limit} bytes"),
        )
    }
    /// An internal failure while scanning: Postfix keeps the message and retries.
    pub(crate) fn scan_failed(reason: &str) -> Self {
        Reply::enh(
            451,
            (3, 0),
            format!("Error in processing, try again later: {reason}"),
        )
    }
    /// Scan time budget exceeded.
    pub(crate) fn scan_timeout() -> Self {
        Reply::enh(451, (3, 0), "Scan time budget exceeded, try again later")
    }
    /// The message already passed this filterd too often: a mail loop (Postfix's own words
    /// for it: "Too many hops").
    pub(crate) fn mail_loop(passes: usize) -> Self {
        Reply::enh(
            554,
            (4, 6),
            format!(
                "Too many hops: mail loop (this filterd already handled the message {passes} times)"
            ),
        )
    }
    /// A connection from this filterd's own relay client: the next hop points back at us.
    pub(crate) fn loop_connection() -> Self {
        Reply::enh(
            554,
            (4, 6),
            "Mail loop: this connection comes from this filterd itself (check next_hop)",
        )
    }
    /// Blocked by policy (destiny reject): Postfix bounces it to the envelope sender.
    pub(crate) fn policy_reject(mail_id: &str) -> Self {
        Reply::enh(
            554,
            (7, 0),
            format!("Reject, id={mail_id} - message blocked by content policy (spam)"),
        )
    }
    /// Accepted and not delivered (destiny discard), as amavisd-new says it.
    pub fn discarded(mail_id: &str, quarantine: Option<&str>) -> Self {
        let q = quarantine.map_or(String::new(), |q| format!(", quarantined as {q}"));
        Reply::enh(250, (7, 0), format!("Ok, discarded, id={mail_id}{q}"))
    }
    /// Delivered in several next-hop transactions (recipients with different outcomes).
    pub(crate) fn delivered_in_parts(mail_id: &str, parts: usize) -> Self {
        Reply::enh(
            250,
            (0, 0),
            format!("Ok, id={mail_id}, handled in {parts} parts by recipient policy"),
        )
    }
    /// The quarantine copy could not be written: nothing was accepted.
    pub(crate) fn quarantine_failed(why: &str) -> Self {
        Reply::enh(
            451,
            (3, 0),
            format!("Quarantine unavailable, try again later: {why}"),
        )
    }
    /// The next hop is unreachable or failed mid-conversation.
    pub(crate) fn next_hop_unavailable(next_hop: &str, why: &str) -> Self {
        Reply::enh(
            451,
            (4, 1),
            format!("Next hop {next_hop} unavailable: {why}"),
        )
    }
    /// Mirror a next hop reply, keeping its code and enhanced code, naming it in the text
    /// (the form amavisd-new uses: `from MTA(smtp:[127.0.0.1]:10025): 250 2.0.0 Ok: queued as X`).
    pub(crate) fn from_next_hop(next_hop: &str, downstream: &Reply) -> Self {
        let enhanced = downstream
            .enhanced
            .or(Some(Enhanced((downstream.code / 100) as u8, 0, 0)));
        Reply::new(
            downstream.code,
            enhanced,
            format!("from MTA(smtp:{next_hop}): {}", downstream.one_line()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms() {
        assert_eq!(Reply::ok().to_wire(), b"250 2.0.0 Ok\r\n");
        assert_eq!(
            Reply::start_data().to_wire(),
            b"354 End data with <CR><LF>.<CR><LF>\r\n"
        );
        let ehlo = String::from_utf8(Reply::ehlo("h", 10).to_wire()).unwrap();
        assert!(ehlo.starts_with("250-h\r\n250-PIPELINING\r\n"));
        assert!(ehlo.ends_with("250 XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE\r\n"));
    }

    #[test]
    fn mirrors_next_hop() {
        let down = Reply::new(250, Some(Enhanced(2, 0, 0)), "Ok: queued as ABC");
        let r = Reply::from_next_hop("[127.0.0.1]:10025", &down);
        assert_eq!(
            r.to_wire(),
            b"250 2.0.0 from MTA(smtp:[127.0.0.1]:10025): 250 2.0.0 Ok: queued as ABC\r\n"
        );
        let down = Reply::new(554, None, "no");
        assert_eq!(
            Reply::from_next_hop("x", &down).enhanced,
            Some(Enhanced(5, 0, 0))
        );
    }
}
