//! Banned rules with amavisd-new's semantics (`$banned_filename_re`): an ordered list of
//! regular expressions, each banning or allowing, tried against every attribute of each
//! part and archive member (its types by content such as `.exe`, its declared MIME type,
//! its file name); for each part the first rule that matches any attribute decides.
//! Exceptions (a bank for a software vendor) are allow rules put first.

use super::walk::{Component, Walked};
use regex::{Regex, RegexBuilder};

/// The default banned patterns: executables and shortcuts by type, the walk's findings
/// (macros, encrypted archives, bombs, nesting), risky declared types, double extensions,
/// and the names Windows runs or mounts.
pub const DEFAULT_BANNED: [&str; 5] = [
    r"^\.(exe|elf|macho|lnk|iso)$",
    r"^\.(vba-macro|encrypted|bomb|too-deep|too-many)$",
    r"^application/(x-msdownload|x-msdos-program|x-dosexec|hta|x-ms-shortcut|x-iso9660-image)$",
    r"\.[^./]*[a-z][^./]*\.\s*(exe|vbs|pif|scr|bat|cmd|com|cpl|dll)[.\s]*$",
    r"\.(exe|vbs|vbe|pif|scr|cpl|bat|cmd|com|dll|lnk|hta|js|jse|wsf|wsh|msi|ps1|jar|iso|img|vhd|vhdx|docm|xlsm|pptm)$",
];

/// Compiled rules: (pattern, bans).
#[derive(Debug, Clone, Default)]
pub struct BannedRules {
    rules: Vec<(Regex, bool)>,
}

impl BannedRules {
    /// `allow` rules first, then `banned`; every bad pattern is an error naming it.
    pub fn new(banned: &[String], allow: &[String]) -> Result<Self, Vec<String>> {
        let mut rules = vec![];
        let mut errors = vec![];
        for (list, bans) in [(allow, false), (banned, true)] {
            for p in list {
                match RegexBuilder::new(p).case_insensitive(true).build() {
                    Ok(r) => rules.push((r, bans)),
                    Err(e) => errors.push(format!("`{p}`: {e}")),
                }
            }
        }
        if errors.is_empty() {
            Ok(BannedRules { rules })
        } else {
            Err(errors)
        }
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first banned component, with the attribute that matched.
    pub fn first_banned<'w>(&self, walked: &'w Walked) -> Option<(&'w Component, String)> {
        walked
            .components
            .iter()
            .find_map(|c| self.banned_attribute(c).map(|a| (c, a)))
    }

    /// Where the first banned component sits (its amavis-style path), if any.
    pub fn banned_part<'w>(&self, walked: &'w Walked) -> Option<&'w str> {
        self.first_banned(walked).map(|(c, _)| c.path.as_str())
    }

    fn banned_attribute(&self, c: &Component) -> Option<String> {
        let attrs: Vec<&str> = c
            .types
            .iter()
            .copied()
            .chain(c.declared.as_deref())
            .chain(c.name.as_deref())
            .collect();
        for (rule, bans) in &self.rules {
            if let Some(a) = attrs.iter().find(|a| rule.is_match(a)) {
                return bans.then(|| a.to_string());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(declared: Option<&str>, types: &[&'static str], name: Option<&str>) -> Walked {
        Walked {
            components: vec![Component {
                declared: declared.map(str::to_string),
                types: types.to_vec(),
                name: name.map(str::to_string),
                path: String::new(),
            }],
        }
    }

    fn defaults(allow: &[&str]) -> BannedRules {
        let banned: Vec<String> = DEFAULT_BANNED.iter().map(|s| s.to_string()).collect();
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        BannedRules::new(&banned, &allow).unwrap()
    }

    #[test]
    fn amavis_defaults() {
        let r = defaults(&[]);
        for (declared, types, name, banned) in [
            (
                Some("application/pdf"),
                &[".pdf"][..],
                Some("invoice.pdf"),
                false,
            ),
            (
                Some("application/octet-stream"),
                &[".exe"][..],
                Some("invoice.pdf"),
                true,
            ),
            (
                Some("application/octet-stream"),
                &[][..],
                Some("invoice.pdf.exe"),
                true,
            ),
            (
                Some("application/octet-stream"),
                &[][..],
                Some("INVOICE.PDF .EXE"),
                true,
            ),
            (None, &[][..], Some("setup.msi"), true),
            (None, &[][..], Some("photo.jpg"), false),
            (None, &[".vba-macro"][..], Some("report.doc"), true),
            (None, &[".zip", ".encrypted"][..], Some("x.zip"), true),
            (Some("application/x-msdownload"), &[][..], None, true),
            (None, &[][..], Some("disk.iso"), true),
            (None, &[][..], Some("run.js"), true),
            (None, &[".pdf", ".pdf-js"][..], Some("form.pdf"), false),
        ] {
            let w = component(declared, types, name);
            assert_eq!(
                r.first_banned(&w).is_some(),
                banned,
                "{declared:?} {types:?} {name:?}"
            );
        }
    }

    #[test]
    fn an_exception_comes_first() {
        let vendor = defaults(&[r"^\.exe$", r"\.exe$"]);
        let w = component(
            Some("application/octet-stream"),
            &[".exe"],
            Some("setup.exe"),
        );
        assert!(vendor.first_banned(&w).is_none());
        assert!(defaults(&[]).first_banned(&w).is_some());
        assert!(BannedRules::new(&["(".into()], &[]).is_err());
    }
}
