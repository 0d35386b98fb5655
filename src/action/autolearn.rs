//! SpamAssassin-style autolearning: a message whose score without the Bayes hits is clearly
//! ham or clearly spam is queued for learning into the Bayes store (written by the server
//! every 30 s under the writers' lock, or to Redis every 5 s). Its answer is X-Spam-Status' `autolearn=` value.

use crate::message::Features;
use crate::model::bayes_store::{Class, message_id_with};
use crate::model::learn_queue::LearnQueue;
use crate::verdict::Verdict;

/// Queue the message for learning when it is clear enough; returns the `autolearn=` value:
/// `ham`, `spam`, `no` (not clear), `unavailable` (queue full) or `disabled`.
pub fn autolearn(
    thresholds: Option<(f64, f64)>,
    queue: Option<&LearnQueue>,
    features: &Features<'_>,
    verdict: &Verdict,
) -> &'static str {
    let (Some((ham_below, spam_above)), Some(queue), Some(tokens)) =
        (thresholds, queue, &features.tokens)
    else {
        return "disabled";
    };
    let bayes: f64 = verdict
        .hits
        .iter()
        .filter(|(n, _)| n.starts_with("BAYES_"))
        .map(|(_, s)| s)
        .sum();
    let score = verdict.score - bayes;
    let class = if score <= ham_below {
        Class::Ham
    } else if score >= spam_above {
        Class::Spam
    } else {
        return "no";
    };
    let id = message_id_with(features.raw, &features.headers);
    if !queue.push(id, tokens.clone(), class) {
        return "unavailable";
    }
    if class == Class::Spam { "spam" } else { "ham" }
}
