//! The envelope of one transaction: sender and recipients with their ESMTP parameters, and
//! the original client's attributes from XFORWARD, kept so the relay can re-send them as-is.

use crate::smtp::xtext;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// `BODY=` values we accept (BINARYMIME needs CHUNKING, which is not offered). Kept with
/// quarantined mail under the same names, so a release re-sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// `BODY=7BIT`
    #[serde(rename = "7BIT")]
    SevenBit,
    /// `BODY=8BITMIME`
    #[serde(rename = "8BITMIME")]
    EightBitMime,
}

impl Body {
    /// The parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            Body::SevenBit => "7BIT",
            Body::EightBitMime => "8BITMIME",
        }
    }
}

/// The ESMTP parameters of MAIL FROM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=` as declared by the client.
    pub size: Option<u64>,
    /// `BODY=`
    pub body: Option<Body>,
    /// `SMTPUTF8`
    pub smtputf8: bool,
    /// `RET=FULL|HDRS` (DSN)
    pub ret: Option<String>,
    /// `ENVID=` xtext, kept encoded (DSN)
    pub envid: Option<String>,
}

/// The ESMTP parameters of RCPT TO.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// `NOTIFY=` (DSN), upper-cased
    pub notify: Option<String>,
    /// `ORCPT=` (DSN), kept encoded
    pub orcpt: Option<String>,
}

/// The attributes of Postfix's XFORWARD command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XforwardAttr {
    /// Client hostname (or `[UNAVAILABLE]`).
    Name,
    /// Client address.
    Addr,
    /// Client port.
    Port,
    /// SMTP or ESMTP.
    Proto,
    /// The HELO name the client sent.
    Helo,
    /// Postfix's queue id.
    Ident,
    /// LOCAL or REMOTE.
    Source,
}

impl XforwardAttr {
    /// All attributes in the order they are re-sent.
    pub(crate) const ALL: [XforwardAttr; 7] = [
        XforwardAttr::Name,
        XforwardAttr::Addr,
        XforwardAttr::Port,
        XforwardAttr::Proto,
        XforwardAttr::Helo,
        XforwardAttr::Ident,
        XforwardAttr::Source,
    ];

    /// Parse an attribute name (case-insensitive).
    pub(crate) fn from_name(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
    }

    /// The attribute name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            XforwardAttr::Name => "NAME",
            XforwardAttr::Addr => "ADDR",
            XforwardAttr::Port => "PORT",
            XforwardAttr::Proto => "PROTO",
            XforwardAttr::Helo => "HELO",
            XforwardAttr::Ident => "IDENT",
            XforwardAttr::Source => "SOURCE",
        }
    }
}

/// Client attributes received with XFORWARD (decoded values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Xforward {
    values: [Option<String>; 7],
}

impl Xforward {
    /// Record one attribute; later values replace earlier ones.
    pub fn set(&mut self, attr: XforwardAttr, value: String) {
        self.values[attr as usize] = Some(value);
    }

    /// One attribute, unless absent or `[UNAVAILABLE]`/`[TEMPUNAVAIL]`.
    pub fn get(&self, attr: XforwardAttr) -> Option<&str> {
        self.values[attr as usize]
            .as_deref()
            .filter(|v| !v.starts_with("[UNAVAILABLE]") && !v.starts_with("[TEMPUNAVAIL]"))
    }

    /// True when nothing was forwarded.
    pub fn is_empty(&self) -> bool {
        self.values.iter().all(Option::is_none)
    }

    /// The original client address, when forwarded and well-formed.
    pub fn addr(&self) -> Option<IpAddr> {
        let a = self.get(XforwardAttr::Addr)?;
        let a = a.strip_prefix("IPV6:").unwrap_or(a);
        a.parse().ok()
    }

    /// `XFORWARD` command lines for the attributes the next hop supports, each under
    /// Postfix's 512-byte line limit.
    pub fn commands(&self, supported: impl Fn(XforwardAttr) -> bool) -> Vec<String> {
        let mut lines = vec![];
        let mut line = String::from("XFORWARD");
        for attr in XforwardAttr::ALL {
            let Some(v) = &self.values[attr as usize] else {
                continue;
            };
            if !supported(attr) {
                continue;
            }
            let item = format!(" {}={}", attr.name(), xtext::encode(v));
            if line.len() + item.len() > 500 && line.len() > "XFORWARD".len() {
                lines.push(std::mem::replace(&mut line, String::from("XFORWARD")));
            }
            line.push_str(&item);
        }
        if line.len() > "XFORWARD".len() {
            lines.push(line);
        }
        lines
    }
}

/// One accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address without brackets.
    pub address: String,
    /// Its ESMTP parameters.
    pub params: RcptParams,
}

/// Everything known about one transaction besides the message bytes.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The connecting client (Postfix's smtp client).
    pub peer: SocketAddr,
    /// The HELO/EHLO/LHLO name of the connecting client.
    pub helo: String,
    /// The original client, as forwarded.
    pub xforward: Xforward,
    /// The reverse path; empty for the null sender.
    pub sender: String,
    /// MAIL FROM parameters.
    pub mail_params: MailParams,
    /// Recipients the next hop accepted.
    pub recipients: Vec<Recipient>,
}

impl Envelope {
    /// The original client's address: XFORWARD ADDR, else the connecting peer.
    pub fn client_ip(&self) -> IpAddr {
        self.xforward.addr().unwrap_or(self.peer.ip())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xforward_commands_split_and_skip_unsupported() {
        let mut x = Xforward::default();
        x.set(XforwardAttr::Name, "mx.example".into());
        x.set(XforwardAttr::Addr, "IPV6:2001:db8::1".into());
        x.set(XforwardAttr::Helo, "a b".into());
        x.set(XforwardAttr::Ident, "ABC123".into());
        let lines = x.commands(|a| a != XforwardAttr::Ident);
        assert_eq!(
            lines,
            vec!["XFORWARD NAME=mx.example ADDR=IPV6:2001:db8::1 HELO=a+20b"]
        );
        assert_eq!(x.addr(), Some("2001:db8::1".parse().unwrap()));
        x.set(XforwardAttr::Name, "n".repeat(490));
        assert_eq!(x.commands(|_| true).len(), 2);
        x.set(XforwardAttr::Addr, "[UNAVAILABLE]".into());
        assert_eq!(x.addr(), None);
    }
}
