//! The shipped rule set, compiled into the binary from the `rules/` directory (so filterd
//! runs on its defaults anywhere); a test keeps this list equal to the directory.

/// File name and text, in the order they apply.
pub(super) const FILES: &[(&str, &str)] = &[
    (
        "10_sextortion.cf",
        include_str!("../../rules/10_sextortion.cf"),
    ),
    ("20_fraud.cf", include_str!("../../rules/20_fraud.cf")),
    ("30_phishing.cf", include_str!("../../rules/30_phishing.cf")),
    ("40_uri.cf", include_str!("../../rules/40_uri.cf")),
    (
        "50_obfuscation.cf",
        include_str!("../../rules/50_obfuscation.cf"),
    ),
    (
        "60_commercial.cf",
        include_str!("../../rules/60_commercial.cf"),
    ),
    ("90_ham.cf", include_str!("../../rules/90_ham.cf")),
];
