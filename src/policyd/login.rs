//! "Login owns sender": with a SASL login, the envelope sender must belong to it, by a map
//! in the format of Postfix's `smtpd_sender_login_maps` (a text file of
//! `address-or-@domain  login1,login2` lines, as `texthash:` reads it). The full address is
//! looked up first, then `@domain`; service senders are anyone's; `<>` is configurable.

use std::collections::HashMap;

/// The map and its exceptions.
#[derive(Debug, Clone, Default)]
pub struct LoginMap {
    owners: HashMap<String, Vec<String>>,
    service_senders: Vec<String>,
    allow_null_sender: bool,
}

impl LoginMap {
    /// Parse the map text (`origin` names it in errors: `PATH:LINE: reason`).
    pub fn parse(
        text: &str,
        origin: &str,
        service_senders: &[String],
        allow_null_sender: bool,
    ) -> Result<Self, Vec<String>> {
        let mut owners = HashMap::new();
        let mut errors = vec![];
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, logins)) = line.split_once(char::is_whitespace) else {
                errors.push(format!("{origin}:{}: `{line}` has no login", i + 1));
                continue;
            };
            let logins: Vec<String> = logins
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            if !key.contains('@') {
                errors.push(format!(
                    "{origin}:{}: `{key}` is neither an address nor @domain",
                    i + 1
                ));
                continue;
            }
            owners.insert(key.to_ascii_lowercase(), logins);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(LoginMap {
            owners,
            service_senders: service_senders
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            allow_null_sender,
        })
    }

    /// Entries in the map.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// True when the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// True when `login` may send as `sender`.
    pub fn owns(&self, login: &str, sender: &str) -> bool {
        if sender.is_empty() {
            return self.allow_null_sender;
        }
        let sender = sender.to_ascii_lowercase();
        if self.service_senders.contains(&sender) {
            return true;
        }
        let domain = sender.rsplit_once('@').map(|(_, d)| format!("@{d}"));
        let owners = self
            .owners
            .get(&sender)
            .or_else(|| domain.and_then(|d| self.owners.get(&d)));
        owners.is_some_and(|list| list.iter().any(|l| l == login))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_first_then_the_domain() {
        let text = "# who sends as whom\nalice@example.com  alice\n\
                    shared@example.com alice, bob\n@example.org   carol,dave\n";
        let m = LoginMap::parse(text, "logins", &["noreply@example.com".into()], true).unwrap();
        assert_eq!(m.len(), 3);
        for (login, sender, want) in [
            ("alice", "alice@example.com", true),
            ("alice", "Alice@Example.COM", true),
            ("alice", "bob@example.com", false),
            ("bob", "alice@example.com", false),
            ("bob", "shared@example.com", true),
            ("dave", "anyone@example.org", true),
            ("alice", "anyone@example.org", false),
            ("alice", "stranger@elsewhere.test", false),
            ("eve", "noreply@example.com", true),
            ("eve", "", true),
        ] {
            assert_eq!(m.owns(login, sender), want, "{login} as {sender}");
        }
        let strict = LoginMap::parse(text, "logins", &[], false).unwrap();
        assert!(!strict.owns("alice", ""));
    }

    #[test]
    fn bad_lines_are_reported_with_their_numbers() {
        let e =
            LoginMap::parse("ok@x alice\nlonely\nnodomain alice\n", "m", &[], true).unwrap_err();
        assert_eq!(e.len(), 2);
        assert!(e[0].starts_with("m:2:"), "{e:?}");
        assert!(e[1].starts_with("m:3:"), "{e:?}");
    }
}
