//! The one stable hash: 64-bit FNV-1a. Token hashes in the Bayes store, model feature ids,
//! store checksums and the corpus split all depend on it never changing.

/// The FNV-1a 64 offset basis: the state before any byte.
pub(crate) const BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a 64 over the concatenation of `parts` (a salt and the data, typically).
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h = BASIS;
    for part in parts {
        h = fnv1a_from(h, part);
    }
    h
}

/// FNV-1a 64 continued from state `h` over `data`: `fnv1a(&[a, b]) ==
/// fnv1a_from(fnv1a(&[a]), b)`, so a salt's state can be computed once.
#[inline]
pub(crate) const fn fnv1a_from(mut h: u64, data: &[u8]) -> u64 {
    let mut i = 0;
    while i < data.len() {
        h ^= data[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuing_equals_concatenating() {
        assert_eq!(
            fnv1a(&[b"c4:", b"abcd"]),
            fnv1a_from(fnv1a(&[b"c4:"]), b"abcd")
        );
        assert_eq!(fnv1a(&[]), BASIS);
        // The published test vector for "a".
        assert_eq!(fnv1a(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
    }
}
