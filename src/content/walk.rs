//! The attachment walk, once per message: every MIME leaf with its declared type and name
//! (mail-parser decodes RFC 2231 and encoded-word names), its type by content, and, for
//! zip archives, every member, nested archives included, within limits on depth, members
//! and expanded bytes (a decompression bomb is a finding, never an out-of-memory: members
//! are decompressed into a counting sink, only nested archives are kept, up to the limit).

use super::magic;
use mail_parser::{MessageParser, MimeHeaders, PartType};
use std::io::Read;

/// Limits of the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Archives nested deeper than this are a finding.
    pub max_depth: usize,
    /// Members of all archives of one message together.
    pub max_members: usize,
    /// Expanded bytes of one member.
    pub max_member_bytes: u64,
    /// Expanded bytes of all members together.
    pub max_total_bytes: u64,
    /// Messages larger than this are not walked (mail-parser decodes every part of the
    /// message at once; clamd, whose own stream limit is 25 MB by default, still scans).
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 4,
            max_members: 1000,
            max_member_bytes: 64 << 20,
            max_total_bytes: 256 << 20,
            max_message_bytes: 16 << 20,
        }
    }
}

/// One part or archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// The declared MIME type (`application/zip`); none for archive members.
    pub declared: Option<String>,
    /// The type by content (`.exe`), or a finding's pseudo-type (`.encrypted`,
    /// `.vba-macro`, `.bomb`, `.pdf-js`, `.too-deep`).
    pub types: Vec<&'static str>,
    /// The declared file name.
    pub name: Option<String>,
    /// Where it sits, amavis-style: `multipart/mixed | application/zip,.zip,invoice.zip |
    /// .exe,invoice.pdf.exe`.
    pub path: String,
}

/// What the walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walked {
    /// Every leaf and member, in order.
    pub components: Vec<Component>,
}

/// True when the message may have attachments: a top-level Content-Type that is not text
/// (a single-part PDF, say), or, in a multipart message, a part header naming a type that
/// is neither text nor multipart, or an attachment disposition. A line scan, no parse: a
/// plain or HTML-and-text message costs about a microsecond, not the walk.
pub fn may_have_attachments(headers: &crate::message::HeaderBlock, msg: &[u8]) -> bool {
    let Some(top) = headers.first(msg, "Content-Type") else {
        return false;
    };
    let top = lower_start(top);
    if !top.starts_with("multipart/") {
        return !top.starts_with("text/");
    }
    let (ct, cd) = (b"content-type:", b"content-disposition:");
    memchr::memchr_iter(b'\n', msg).any(|i| {
        let line = &msg[i + 1..];
        let after = |name: &[u8]| {
            (line.len() > name.len() && line[..name.len()].eq_ignore_ascii_case(name))
                .then(|| lower_start(&line[name.len()..]))
        };
        after(ct).is_some_and(|v| !v.starts_with("text/") && !v.starts_with("multipart/"))
            || after(cd).is_some_and(|v| v.starts_with("attachment"))
    })
}

/// The first bytes of a header value, trimmed and lower case (enough to tell its type).
fn lower_start(v: &[u8]) -> String {
    let v = v.trim_ascii_start();
    String::from_utf8_lossy(&v[..v.len().min(24)]).to_ascii_lowercase()
}

/// Walk the whole message.
pub fn walk(msg: &[u8], limits: &Limits) -> Walked {
    if msg.len() > limits.max_message_bytes {
        tracing::debug!(
            size = msg.len(),
            "message larger than content.max_walk_mb: not walked"
        );
        return Walked::default();
    }
    let mut out = Walker {
        limits: *limits,
        members: 0,
        expanded: 0,
        walked: Walked::default(),
    };
    if let Some(m) = MessageParser::default().parse(msg) {
        out.message(&m, "", 0);
    }
    out.walked
}

struct Walker {
    limits: Limits,
    members: usize,
    expanded: u64,
    walked: Walked,
}

impl Walker {
    fn message(&mut self, m: &mail_parser::Message<'_>, prefix: &str, depth: usize) {
        let root = m.root_part();
        let root_type = type_string(root);
        let base = join(prefix, &root_type);
        let multipart = matches!(root.body, PartType::Multipart(_));
        for part in m.parts.iter().skip(usize::from(multipart)) {
            if matches!(part.body, PartType::Multipart(_)) {
                continue;
            }
            let declared = type_string(part);
            let name = part.attachment_name().map(str::to_string);
            let parent = if multipart {
                base.clone()
            } else {
                prefix.to_string()
            };
            match &part.body {
                PartType::Message(inner) if depth < self.limits.max_depth => {
                    self.message(inner, &join(&parent, &declared), depth + 1);
                }
                PartType::Text(_) | PartType::Html(_) if name.is_none() => {}
                _ => {
                    let bytes = part.contents();
                    self.leaf(&parent, Some(declared), name, bytes, depth);
                }
            }
        }
    }

    /// One leaf (a part or a member) with its bytes.
    fn leaf(
        &mut self,
        parent: &str,
        declared: Option<String>,
        name: Option<String>,
        bytes: &[u8],
        depth: usize,
    ) {
        let mut types: Vec<&'static str> = magic::type_of(bytes).into_iter().collect();
        match types.first().copied() {
            Some(".pdf") if magic::pdf_has_javascript(bytes) => types.push(".pdf-js"),
            Some(".doc") if magic::ole_has_macros(bytes) => types.push(".vba-macro"),
            _ => {}
        }
        let label = [
            declared.as_deref().unwrap_or(""),
            types.first().copied().unwrap_or(""),
            name.as_deref().unwrap_or(""),
        ]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(",");
        let path = join(parent, &label);
        let is_zip = types.first() == Some(&".zip");
        let index = self.walked.components.len();
        self.walked.components.push(Component {
            declared,
            types,
            name,
            path: path.clone(),
        });
        if is_zip {
            let found = self.zip(bytes, &path, depth + 1);
            self.walked.components[index].types.extend(found);
        }
    }

    /// The members of a zip archive; returns findings about the archive itself (a member's
    /// own findings, such as `.encrypted`, stay on the member, so the log names it).
    fn zip(&mut self, bytes: &[u8], path: &str, depth: usize) -> Vec<&'static str> {
        if depth > self.limits.max_depth {
            return vec![".too-deep"];
        }
        let Ok(mut archive) = zip::ZipArchive::new(std::io::Cursor::new(bytes)) else {
            return vec![".zip-damaged"];
        };
        let mut found = vec![];
        // The central directory's sizes first: a bomb is found before anything expands.
        let declared: u64 = (0..archive.len())
            .filter_map(|i| archive.by_index_raw(i).ok().map(|f| f.size()))
            .fold(0u64, u64::saturating_add);
        if declared > self.limits.max_total_bytes.saturating_sub(self.expanded) {
            let name = format!("{} members, {declared} bytes expanded", archive.len());
            self.member(path, name, vec![".bomb"]);
            return vec![];
        }
        let mut macro_project = false;
        for i in 0..archive.len() {
            self.members += 1;
            if self.members > self.limits.max_members {
                found.push(".too-many");
                break;
            }
            let (name, encrypted, declared_size, dir) = match archive.by_index_raw(i) {
                Ok(f) => {
                    let name = f
                        .name()
                        .map_or_else(|_| "?".to_string(), |n| n.into_owned());
                    (name, f.encrypted(), f.size(), f.is_dir())
                }
                Err(_) => {
                    found.push(".zip-damaged");
                    continue;
                }
            };
            if dir {
                continue;
            }
            macro_project |= name.eq_ignore_ascii_case("word/vbaProject.bin")
                || name.to_ascii_lowercase().ends_with("/vbaproject.bin");
            if encrypted {
                self.member(path, name, vec![".encrypted"]);
                continue;
            }
            if declared_size > self.limits.max_member_bytes
                || self.expanded.saturating_add(declared_size) > self.limits.max_total_bytes
            {
                self.member(path, name, vec![".bomb"]);
                break;
            }
            match self.read_member(&mut archive, i) {
                Ok(content) => {
                    let child = Some(name);
                    self.leaf(path, None, child, &content, depth);
                }
                Err(bomb) => {
                    self.member(path, name, vec![bomb]);
                    break;
                }
            }
        }
        if macro_project {
            found.push(".vba-macro");
        }
        found
    }

    /// A member's first bytes, or the whole member when it is itself an archive (to walk
    /// it), counting every expanded byte read against the limits. Other members are not
    /// read past their head: only nested archives can hide more.
    fn read_member<R: Read + std::io::Seek>(
        &mut self,
        archive: &mut zip::ZipArchive<R>,
        i: usize,
    ) -> Result<Vec<u8>, &'static str> {
        let mut f = archive.by_index(i).map_err(|_| ".zip-damaged")?;
        let limit = (self.limits.max_member_bytes)
            .min(self.limits.max_total_bytes.saturating_sub(self.expanded));
        let mut head = vec![];
        (&mut f)
            .take(HEAD)
            .read_to_end(&mut head)
            .map_err(|_| ".zip-damaged")?;
        let mut total = head.len() as u64;
        if magic::type_of(&head) == Some(".zip") {
            let mut sink = CountingSink {
                kept: &mut head,
                count: 0,
            };
            let budget = limit.saturating_sub(total) + 1;
            std::io::copy(&mut (&mut f).take(budget), &mut sink).map_err(|_| ".zip-damaged")?;
            total += sink.count;
        }
        self.expanded = self.expanded.saturating_add(total);
        if total > limit {
            return Err(".bomb");
        }
        Ok(head)
    }

    /// A member that was not read, with its finding.
    fn member(&mut self, parent: &str, name: String, types: Vec<&'static str>) {
        let path = join(
            parent,
            &format!("{},{name}", types.first().copied().unwrap_or("")),
        );
        self.walked.components.push(Component {
            declared: None,
            types,
            name: Some(name),
            path,
        });
    }
}

/// Bytes of a member read to tell its type.
const HEAD: u64 = 64 * 1024;

/// Keeps and counts the bytes written.
struct CountingSink<'a> {
    kept: &'a mut Vec<u8>,
    count: u64,
}

impl std::io::Write for CountingSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.kept.extend_from_slice(buf);
        self.count += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn type_string(part: &mail_parser::MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        },
        None => "text/plain".into(),
    }
}

fn join(prefix: &str, label: &str) -> String {
    if prefix.is_empty() {
        label.to_string()
    } else {
        format!("{prefix} | {label}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use zip::write::SimpleFileOptions;

    /// A zip archive of `files` (deflated).
    pub(crate) fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data) in files {
            w.start_file(*name, SimpleFileOptions::default()).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    /// The same archive with every member marked encrypted (bit 0 of the general purpose
    /// flags, in the local and the central headers): what a password-protected zip
    /// looks like to a reader without the password.
    pub(crate) fn encrypted(mut zip: Vec<u8>) -> Vec<u8> {
        for sig in [&b"PK\x03\x04"[..], &b"PK\x01\x02"[..]] {
            let flag_at = if sig == b"PK\x03\x04" { 6 } else { 8 };
            let mut i = 0;
            while let Some(j) = memchr::memmem::find(&zip[i..], sig) {
                zip[i + j + flag_at] |= 1;
                i += j + 4;
            }
        }
        zip
    }

    /// A multipart/mixed message: a text part and each attachment base64-encoded.
    pub(crate) fn message(attachments: &[(&str, &str, &[u8])]) -> Vec<u8> {
        let mut m = String::from(
            "From: a@x.test\r\nTo: b@y.test\r\nSubject: files\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
             Content-Type: text/plain\r\n\r\nsee attached\r\n",
        );
        for (ctype, name, data) in attachments {
            let b64 = <base64ct::Base64 as base64ct::Encoding>::encode_string(data);
            m.push_str(&format!(
                "--b1\r\nContent-Type: {ctype}; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            ));
            for line in b64.as_bytes().chunks(76) {
                m.push_str(std::str::from_utf8(line).unwrap());
                m.push_str("\r\n");
            }
        }
        m.push_str("--b1--\r\n");
        m.into_bytes()
    }

    fn paths(w: &Walked) -> Vec<String> {
        w.components
            .iter()
            .map(|c| format!("{} {:?}", c.path, c.types))
            .collect()
    }

    const PE: &[u8] = b"MZ\x90\0\x03\0\0\0";

    #[test]
    fn parts_and_nested_members_with_their_paths() {
        let inner = zip_of(&[("invoice.pdf.exe", PE)]);
        let outer = zip_of(&[("readme.txt", b"hello"), ("inner.zip", &inner)]);
        let m = message(&[
            ("application/zip", "invoice.zip", &outer),
            ("application/pdf", "a.pdf", b"%PDF-1.4 /JS (x)"),
        ]);
        let w = walk(&m, &Limits::default());
        assert_eq!(
            paths(&w),
            [
                "multipart/mixed | application/zip,.zip,invoice.zip [\".zip\"]",
                "multipart/mixed | application/zip,.zip,invoice.zip | readme.txt []",
                "multipart/mixed | application/zip,.zip,invoice.zip | .zip,inner.zip [\".zip\"]",
                "multipart/mixed | application/zip,.zip,invoice.zip | .zip,inner.zip | .exe,invoice.pdf.exe [\".exe\"]",
                "multipart/mixed | application/pdf,.pdf,a.pdf [\".pdf\", \".pdf-js\"]",
            ]
        );
        let plain = b"From: a@x.test\r\nContent-Type: text/plain\r\n\r\nhi\r\n";
        assert!(!may_have_attachments(
            &crate::message::HeaderBlock::parse(plain),
            plain
        ));
        assert!(may_have_attachments(
            &crate::message::HeaderBlock::parse(&m),
            &m
        ));
    }

    #[test]
    fn encrypted_members_macros_and_depth_are_findings() {
        let locked = encrypted(zip_of(&[("secret.txt", b"data")]));
        let docm = zip_of(&[
            ("[Content_Types].xml", b"<Types/>"),
            ("word/vbaProject.bin", b"\xd0\xcf\x11\xe0"),
        ]);
        let mut deep = zip_of(&[("x.txt", b"x")]);
        for i in 0..6 {
            deep = zip_of(&[(&format!("level{i}.zip"), &deep)]);
        }
        let m = message(&[
            ("application/zip", "locked.zip", &locked),
            ("application/octet-stream", "report.docm", &docm),
            ("application/zip", "deep.zip", &deep),
        ]);
        let w = walk(&m, &Limits::default());
        let types: Vec<&'static str> = w.components.iter().flat_map(|c| c.types.clone()).collect();
        for want in [".encrypted", ".vba-macro", ".too-deep"] {
            assert!(types.contains(&want), "{want} in {:#?}", paths(&w));
        }
    }

    #[test]
    fn a_bomb_is_a_finding_not_an_allocation() {
        let zeros = vec![0u8; 3 << 20];
        let bomb = zip_of(&[("a.bin", &zeros), ("b.bin", &zeros), ("c.bin", &zeros)]);
        assert!(bomb.len() < 100_000, "small on disk: {}", bomb.len());
        let m = message(&[("application/zip", "bomb.zip", &bomb)]);
        let small = Limits {
            max_member_bytes: 4 << 20,
            max_total_bytes: 8 << 20,
            ..Limits::default()
        };
        let w = walk(&m, &small);
        assert!(
            w.components.iter().any(|c| c.types.contains(&".bomb")),
            "{:#?}",
            paths(&w)
        );
        let w = walk(
            &m,
            &Limits {
                max_member_bytes: 2 << 20,
                ..small
            },
        );
        assert!(
            w.components.iter().any(|c| c.types.contains(&".bomb")),
            "per member"
        );
        assert!(
            walk(&m, &Limits::default())
                .components
                .iter()
                .all(|c| !c.types.contains(&".bomb"))
        );
    }

    #[test]
    fn malformed_mime_and_damaged_archives_do_not_panic() {
        let damaged = b"PK\x03\x04 this is not really a zip";
        let m = message(&[("application/zip", "x.zip", damaged)]);
        let w = walk(&m, &Limits::default());
        assert!(
            w.components
                .iter()
                .any(|c| c.types.contains(&".zip-damaged")),
            "{:#?}",
            paths(&w)
        );
        for junk in [
            &b""[..],
            b"\r\n\r\n",
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n--x",
        ] {
            let _ = walk(junk, &Limits::default());
        }
    }
}
