//! The type of a part by its content, as amavisd-new names file(1)'s answers: a short
//! name with a dot (`.exe`, `.elf`, `.zip`, `.doc` for OLE, `.pdf`, ...). Our own small
//! table of signatures: the types banned rules ask about, not every format there is.

/// The short type name of `bytes`, when a signature matches.
pub fn type_of(bytes: &[u8]) -> Option<&'static str> {
    let starts = |sig: &[u8]| bytes.starts_with(sig);
    let t = if starts(b"MZ") && pe_header(bytes) {
        ".exe"
    } else if starts(b"\x7fELF") {
        ".elf"
    } else if starts(&[0xfe, 0xed, 0xfa, 0xce])
        || starts(&[0xfe, 0xed, 0xfa, 0xcf])
        || starts(&[0xce, 0xfa, 0xed, 0xfe])
        || starts(&[0xcf, 0xfa, 0xed, 0xfe])
        || starts(&[0xca, 0xfe, 0xba, 0xbe])
    {
        ".macho"
    } else if starts(&[0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1]) {
        ".doc"
    } else if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") {
        ".zip"
    } else if starts(b"Rar!\x1a\x07") {
        ".rar"
    } else if starts(&[0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c]) {
        ".7z"
    } else if starts(&[0x1f, 0x8b]) {
        ".gz"
    } else if bytes.len() > 262 && &bytes[257..262] == b"ustar" {
        ".tar"
    } else if starts(b"%PDF-") {
        ".pdf"
    } else if starts(b"#!") {
        ".sh"
    } else if starts(b"L\x00\x00\x00\x01\x14\x02\x00") {
        ".lnk"
    } else if bytes.len() > 0x8006 && &bytes[0x8001..0x8006] == b"CD001" {
        ".iso"
    } else {
        return None;
    };
    Some(t)
}

/// An MZ header with a PE signature where `e_lfanew` points, or a plain DOS executable.
fn pe_header(bytes: &[u8]) -> bool {
    let Some(off) = bytes.get(0x3c..0x40) else {
        return bytes.len() >= 2;
    };
    let off = u32::from_le_bytes([off[0], off[1], off[2], off[3]]) as usize;
    bytes.get(off..off + 4).is_none_or(|sig| sig == b"PE\0\0") || off == 0
}

/// A PDF that runs JavaScript (`/JavaScript` or `/JS` in its objects).
pub fn pdf_has_javascript(bytes: &[u8]) -> bool {
    memchr::memmem::find(bytes, b"/JavaScript").is_some()
        || memchr::memmem::find(bytes, b"/JS").is_some()
}

/// An OLE (Office 97-2003) file with a VBA project: its directory names `_VBA_PROJECT`
/// (UTF-16) or the `VBA` storage's `dir` stream.
pub fn ole_has_macros(bytes: &[u8]) -> bool {
    const VBA_PROJECT: &[u8] = b"_\0V\0B\0A\0_\0P\0R\0O\0J\0E\0C\0T\0";
    memchr::memmem::find(bytes, VBA_PROJECT).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        let mut pe = b"MZ".to_vec();
        pe.resize(0x40, 0);
        pe[0x3c] = 0x40;
        pe.extend_from_slice(b"PE\0\0rest");
        let mut tar = vec![0u8; 300];
        tar[257..262].copy_from_slice(b"ustar");
        for (bytes, want) in [
            (pe.as_slice(), Some(".exe")),
            (b"\x7fELF\x02\x01".as_slice(), Some(".elf")),
            (&[0xcf, 0xfa, 0xed, 0xfe, 7, 0], Some(".macho")),
            (
                &[0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1, 0],
                Some(".doc"),
            ),
            (b"PK\x03\x04\x14\0", Some(".zip")),
            (b"Rar!\x1a\x07\x01\0", Some(".rar")),
            (&[0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c, 0], Some(".7z")),
            (&[0x1f, 0x8b, 8, 0], Some(".gz")),
            (tar.as_slice(), Some(".tar")),
            (b"%PDF-1.7\n", Some(".pdf")),
            (b"#!/bin/sh\n", Some(".sh")),
            (b"hello world", None),
            (b"M", None),
        ] {
            assert_eq!(type_of(bytes), want, "{:?}", &bytes[..bytes.len().min(8)]);
        }
        assert!(pdf_has_javascript(
            b"%PDF-1.4 << /S /JavaScript /JS (app.alert(1)) >>"
        ));
        assert!(!pdf_has_javascript(b"%PDF-1.4 << /Type /Page >>"));
        assert!(ole_has_macros(
            b"\xd0\xcf\x11\xe0..._\0V\0B\0A\0_\0P\0R\0O\0J\0E\0C\0T\0..."
        ));
    }
}
