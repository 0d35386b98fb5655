//! The one stable hash: 64-bit FNV-1a. Token hashes in the Bayes store, model feature ids,
//! store checksums and the corpus split all depend on it never changing.

/// FNV-1a 64 over the concatenation of `parts` (a salt and the data, typically).
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}
