//! What the Postfix beside us says, read once at start with `postconf -x`: its local
//! domains (`mydestination`, `virtual_mailbox_domains`, `virtual_alias_domains`,
//! `relay_domains`; tables listed with `postmap -s`, files read) and `mynetworks`.

use ipnet::IpNet;
use std::process::Command;

/// The domain parameters, in the order they are reported.
const DOMAIN_PARAMS: [&str; 4] = [
    "mydestination",
    "virtual_mailbox_domains",
    "virtual_alias_domains",
    "relay_domains",
];

/// What Postfix said.
#[derive(Debug, Clone, Default)]
pub(super) struct PostfixSays {
    /// Local domains, from every parameter.
    pub domains: Vec<String>,
    /// `mynetworks`.
    pub mynetworks: Vec<IpNet>,
    /// One clause per parameter (`mydestination: a, b`), and what could not be read.
    pub summary: Vec<String>,
}

fn tool(name: &str) -> String {
    let sbin = format!("/usr/sbin/{name}");
    if std::path::Path::new(&sbin).exists() {
        sbin
    } else {
        name.to_string()
    }
}

/// Ask `postconf` (with `-c config_dir` unless empty).
pub(super) fn ask(config_dir: &str) -> Result<PostfixSays, String> {
    let mut cmd = Command::new(tool("postconf"));
    if !config_dir.is_empty() {
        cmd.arg("-c").arg(config_dir);
    }
    let out = cmd
        .arg("-x")
        .args(DOMAIN_PARAMS)
        .arg("mynetworks")
        .output()
        .map_err(|e| format!("cannot run postconf: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "postconf failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim_start().strip_prefix('='))
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let mut says = PostfixSays::default();
    for param in DOMAIN_PARAMS {
        let mut found = vec![];
        for item in items(&value(param)) {
            match expand(item, config_dir) {
                Ok(list) => found.extend(list),
                Err(e) => says.summary.push(format!("{param}: {item} not read ({e})")),
            }
        }
        says.summary.push(format!("{param}: {}", found.join(", ")));
        says.domains.extend(found);
    }
    for item in items(&value("mynetworks")) {
        let net = item.replace(['[', ']'], "");
        match net
            .parse::<IpNet>()
            .or_else(|_| net.parse::<std::net::IpAddr>().map(IpNet::from))
        {
            Ok(n) => says.mynetworks.push(n),
            Err(_) => says
                .summary
                .push(format!("mynetworks: {item} not read (not a network)")),
        }
    }
    Ok(says)
}

/// The items of a Postfix list value: commas and white space separate, except inside
/// `{ }` (an `inline:{ a=b, c=d }` table is one item).
fn items(value: &str) -> Vec<&str> {
    let mut out = vec![];
    let (mut depth, mut start) = (0usize, None);
    for (i, c) in value.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            c if depth == 0 && (c == ',' || c.is_whitespace()) => {
                if let Some(s) = start.take() {
                    out.push(&value[s..i]);
                }
                continue;
            }
            _ => {}
        }
        start.get_or_insert(i);
    }
    if let Some(s) = start {
        out.push(&value[s..]);
    }
    out
}

/// One list item as domains: a name as it is, a file's first column, a table's keys.
fn expand(item: &str, config_dir: &str) -> Result<Vec<String>, String> {
    let first_column = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect()
    };
    if item.starts_with('/') {
        return std::fs::read_to_string(item)
            .map(|t| first_column(&t))
            .map_err(|e| e.to_string());
    }
    if !item.contains(':') {
        return Ok(vec![item.to_string()]);
    }
    let mut cmd = Command::new(tool("postmap"));
    if !config_dir.is_empty() {
        cmd.arg("-c").arg(config_dir);
    }
    let out = cmd
        .arg("-s")
        .arg(item)
        .output()
        .map_err(|e| format!("cannot run postmap: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(first_column(&String::from_utf8_lossy(&out.stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_main_cf_is_read_with_its_tables_and_files() {
        if !std::path::Path::new(&tool("postconf")).exists() && which("postconf").is_none() {
            eprintln!("skipped: postconf is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("relays"), "# ours\nrelay.test  OK\n\nother.test\n").unwrap();
        std::fs::write(
            d.join("main.cf"),
            format!(
                "compatibility_level = 3.6\nmyhostname = mx.filterd.test\nmydomain = filterd.test\n\
                 mydestination = $myhostname, localhost.$mydomain\n\
                 virtual_alias_domains = inline:{{ alias.test=x }}\n\
                 relay_domains = {}/relays\nmynetworks = 127.0.0.0/8 [::1]/128 192.0.2.0/24\n",
                d.display()
            ),
        )
        .unwrap();
        let says = ask(&d.display().to_string()).unwrap();
        assert_eq!(
            says.domains,
            [
                "mx.filterd.test",
                "localhost.filterd.test",
                "alias.test",
                "relay.test",
                "other.test"
            ],
            "{:?}",
            says.summary
        );
        assert_eq!(says.mynetworks.len(), 3);
        assert!(says.summary[0].starts_with("mydestination: mx.filterd.test"));
        assert!(ask("/nonexistent/postfix").is_err());
    }

    fn which(name: &str) -> Option<()> {
        Command::new(name).arg("-h").output().ok().map(|_| ())
    }
}
