//! Reading mail corpora: files, directories (maildir `cur/` and `new/` included), mbox files,
//! and the deterministic train/test split shared by `filtertrain` and `corpus-tools`.

pub mod metrics;

use std::path::{Path, PathBuf};

/// Every message file under `path`: the file itself, or the files of a directory tree
/// (hidden files skipped), sorted for a stable order.
pub fn message_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = vec![];
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let ft = entry.file_type()?;
            if ft.is_dir() {
                // Maildir: cur/ and new/ hold messages, tmp/ holds half-delivered ones.
                if name != "tmp" {
                    stack.push(entry.path());
                }
            } else if ft.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Drop an mbox `From ` separator line at the start of a stored message, as a delivering
/// MTA would (filterd never sees one).
pub fn strip_from_line(raw: &[u8]) -> &[u8] {
    if raw.starts_with(b"From ") {
        match memchr::memchr(b'\n', raw) {
            Some(i) => &raw[i + 1..],
            None => &[],
        }
    } else {
        raw
    }
}

/// Split an mbox file into messages (`From ` lines at line starts separate them; `>From `
/// quoting is undone).
pub fn split_mbox(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![];
    let mut cur: Option<Vec<u8>> = None;
    for line in data.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") {
            if let Some(m) = cur.take() {
                out.push(m);
            }
            cur = Some(Vec::new());
            continue;
        }
        let m = cur.get_or_insert_with(Vec::new);
        let unquoted = if line.starts_with(b">From ")
            || (line.starts_with(b">>")
                && line
                    .iter()
                    .skip_while(|&&b| b == b'>')
                    .take(5)
                    .eq(b"From ".iter()))
        {
            &line[1..]
        } else {
            line
        };
        m.extend_from_slice(unquoted);
    }
    if let Some(m) = cur {
        out.push(m);
    }
    out.retain(|m| !m.iter().all(|b| b.is_ascii_whitespace()));
    out
}

/// Which part of the deterministic split a file belongs to: `true` for test. The split
/// hashes the file name only, so it is the same on every machine and in every run.
/// `fold` 0 is the reported split; other folds are for tuning without touching it.
pub fn is_test(path: &Path, test_percent: u64, fold: u64) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let salt = if fold == 0 {
        String::new()
    } else {
        format!("fold{fold}:")
    };
    let h = crate::fnv::fnv1a(&[salt.as_bytes(), name.as_bytes()]);
    h % 100 < test_percent
}

/// Which of `parts` groups a file of a train part belongs to, for nested cross-validation
/// inside one fold's train part (the score fit): a hash of the file name, as the split.
pub fn nested_group(path: &Path, fold: u64, parts: u64) -> u64 {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let salt = format!("nested{fold}:");
    crate::fnv::fnv1a(&[salt.as_bytes(), name.as_bytes()]) % parts.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbox_and_from_lines() {
        let mbox =
            b"From a@b Mon Jan 1\nSubject: 1\n\n>From here\nx\nFrom c@d Tue\nSubject: 2\n\ny\n";
        let msgs = split_mbox(mbox);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0], b"Subject: 1\n\nFrom here\nx\n");
        assert_eq!(strip_from_line(b"From x\nA: b\n"), b"A: b\n");
        assert_eq!(strip_from_line(b"A: b\n"), b"A: b\n");
    }
}
