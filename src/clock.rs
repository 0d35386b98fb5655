//! Wall-clock time as Unix seconds: the one place that turns `SystemTime` into the numbers
//! headers, quarantine entries and the Bayes store record.

use std::time::{SystemTime, UNIX_EPOCH};

/// `t` as whole seconds since the Unix epoch (0 for a time before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Now, as whole seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    unix_secs(SystemTime::now())
}

/// Unix seconds that advance with tokio's clock: wall-clock time at the first call, plus
/// tokio's elapsed time since. Windows and greylist delays use it, so tests pause and
/// advance time instead of sleeping.
pub fn tokio_unix() -> u64 {
    use std::sync::OnceLock;
    static BASE: OnceLock<(u64, tokio::time::Instant)> = OnceLock::new();
    let (unix, at) = BASE.get_or_init(|| (now_unix(), tokio::time::Instant::now()));
    unix + tokio::time::Instant::now()
        .saturating_duration_since(*at)
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn seconds_since_the_epoch() {
        assert_eq!(unix_secs(UNIX_EPOCH + Duration::from_millis(1_500)), 1);
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_secs(5)), 0);
        assert!(now_unix() > 1_700_000_000);
    }
}
