//! The final answer after DATA, as pure functions of what happened, so every combination
//! of parts and outcomes is table-tested: SMTP has one reply for all recipients (it must be
//! truthful about the worst that happened), LMTP one per recipient.

use crate::smtp::filter::{Delivery, Outcome, Part};
use crate::smtp::relay::RelayError;
use crate::smtp::reply::Reply;

/// SMTP has one reply for all recipients: a policy reject can only be that reply when
/// every part is rejected; otherwise the rejected parts are discarded (and quarantined as
/// the filter said), never bounced in the name of other recipients. LMTP keeps them.
pub(super) fn fit_to_mode(lmtp: bool, parts: &mut [Part]) {
    let mixed = parts
        .iter()
        .any(|p| !matches!(p.delivery, Delivery::Reject(_)));
    if !lmtp && mixed {
        for p in parts {
            if matches!(p.delivery, Delivery::Reject(_)) {
                p.delivery = Delivery::Discard;
            }
        }
    }
}

/// One part, relayed to every recipient: the content goes on the transaction opened while
/// the envelope arrived.
pub(super) fn is_single_relay(parts: &[Part]) -> bool {
    matches!(
        parts,
        [Part {
            delivery: Delivery::Relay(_),
            ..
        }]
    )
}

/// The log outcome and the client reply of a next-hop answer to the content. A next hop's
/// transient or nonsensical (< 400 but not 2xx) reply becomes 451 here.
pub(super) fn relay_outcome(
    hop: &str,
    result: Result<Reply, RelayError>,
) -> (Outcome, Option<Reply>) {
    match result {
        Ok(r) if r.is_positive() => (
            Outcome::Relayed {
                queued_as: queued_as(&r),
            },
            Some(Reply::from_next_hop(hop, &r)),
        ),
        Ok(r) if r.is_transient() || r.code < 400 => {
            let mut mirrored = Reply::from_next_hop(hop, &r);
            mirrored.code = 451;
            (Outcome::TempFailed(r.one_line()), Some(mirrored))
        }
        Ok(r) => (
            Outcome::Rejected(r.clone()),
            Some(Reply::from_next_hop(hop, &r)),
        ),
        Err(e) => (
            Outcome::TempFailed(e.to_string()),
            Some(Reply::next_hop_unavailable(hop, &e.to_string())),
        ),
    }
}

/// What happened to a message, for its answer.
pub(super) struct Done<'a> {
    /// LMTP: one reply per recipient.
    pub lmtp: bool,
    /// The message's id.
    pub mail_id: &'a str,
    /// How many recipients the envelope has.
    pub recipients: usize,
    /// The parts, as carried out.
    pub parts: &'a [Part],
    /// Each part's outcome and the reply it earned, in the order of `parts`.
    pub results: &'a [(Outcome, Option<Reply>)],
    /// The quarantine copy's id, when one was kept.
    pub quarantine: Option<&'a str>,
}

/// The answer to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Answer {
    /// One reply (SMTP) or one per recipient (LMTP).
    pub replies: Vec<Reply>,
    /// The client must retry the whole message: its quarantine copy is removed (the retry
    /// brings the message back).
    pub retry: bool,
    /// ... although some parts were delivered: they will be delivered again.
    pub duplicates: bool,
}

/// The answer: in LMTP each recipient hears its own part's reply; in SMTP a tempfailed part
/// makes the whole message 451, else a refusal is the reply, else the one relayed part's
/// reply, else "discarded" or "handled in N parts".
pub(super) fn answer(d: &Done<'_>) -> Answer {
    let delivered = d
        .results
        .iter()
        .any(|(o, _)| matches!(o, Outcome::Relayed { .. }));
    let temp = d
        .results
        .iter()
        .find(|(o, _)| matches!(o, Outcome::TempFailed(_)));
    if d.lmtp {
        let mut per = vec![Reply::ok(); d.recipients];
        for (part, (outcome, reply)) in d.parts.iter().zip(d.results) {
            let r = part_reply(d.mail_id, outcome, reply, d.quarantine);
            for &i in &part.recipients {
                if let Some(slot) = per.get_mut(i) {
                    *slot = r.clone();
                }
            }
        }
        return Answer {
            replies: per,
            retry: false,
            duplicates: false,
        };
    }
    let one = |reply: Reply| Answer {
        replies: vec![reply],
        retry: false,
        duplicates: false,
    };
    if let Some((o, r)) = temp {
        return Answer {
            replies: vec![part_reply(d.mail_id, o, r, None)],
            retry: true,
            duplicates: delivered,
        };
    }
    // Every part rejected, or the next hop refused one part for good: the refusal is the
    // reply, so the sender hears of it.
    if let Some((o, r)) = d
        .results
        .iter()
        .find(|(o, _)| matches!(o, Outcome::Rejected(_)))
    {
        return one(part_reply(d.mail_id, o, r, None));
    }
    match d.results {
        [(o, r)] if is_single_relay(d.parts) => one(part_reply(d.mail_id, o, r, None)),
        _ if !delivered => one(Reply::discarded(d.mail_id, d.quarantine)),
        _ => one(Reply::delivered_in_parts(d.mail_id, d.parts.len())),
    }
}

/// The client's reply for one part's outcome.
fn part_reply(
    mail_id: &str,
    outcome: &Outcome,
    reply: &Option<Reply>,
    quarantine: Option<&str>,
) -> Reply {
    match (outcome, reply) {
        (_, Some(r)) => r.clone(),
        (Outcome::Discarded, None) => Reply::discarded(mail_id, quarantine),
        (Outcome::TempFailed(why), None) => Reply::scan_failed(why),
        _ => Reply::ok(),
    }
}

/// The queue id in a `250 2.0.0 Ok: queued as XYZ` reply.
fn queued_as(r: &Reply) -> Option<String> {
    let text = r.lines.first()?;
    let i = text.find("queued as ")?;
    let id: String = text[i + 10..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    (!id.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::rewrite::Rewrite;

    const HOP: &str = "smtp:[127.0.0.1]:10025";

    fn relay() -> Delivery {
        Delivery::Relay(Rewrite::default())
    }

    fn part(recipients: &[usize], delivery: Delivery, quarantine: bool) -> Part {
        Part {
            recipients: recipients.to_vec(),
            delivery,
            quarantine,
        }
    }

    fn queued() -> (Outcome, Option<Reply>) {
        relay_outcome(HOP, Ok(Reply::new(250, None, "2.0.0 Ok: queued as 4Xyz9")))
    }

    fn next_hop(code: u16) -> (Outcome, Option<Reply>) {
        relay_outcome(HOP, Ok(Reply::new(code, None, "from the next hop")))
    }

    fn policy_reject() -> Delivery {
        Delivery::Reject(Reply::policy_reject("AbCdEf123456"))
    }

    fn rejected() -> (Outcome, Option<Reply>) {
        let r = Reply::policy_reject("AbCdEf123456");
        (Outcome::Rejected(r.clone()), Some(r))
    }

    fn code_and_text(a: &Answer) -> Vec<(u16, String)> {
        a.replies.iter().map(|r| (r.code, r.one_line())).collect()
    }

    #[test]
    fn smtp_answers() {
        let not_attempted = (Outcome::TempFailed("not attempted".into()), None);
        // (parts, results, quarantine id, reply code, text contains, retry, duplicates)
        type Case = (
            Vec<Part>,
            Vec<(Outcome, Option<Reply>)>,
            Option<&'static str>,
            u16,
            &'static str,
            bool,
            bool,
        );
        let cases: Vec<Case> = vec![
            // One part relayed: the next hop's own words.
            (
                vec![part(&[0, 1], relay(), false)],
                vec![queued()],
                None,
                250,
                "queued as 4Xyz9",
                false,
                false,
            ),
            (
                vec![part(&[0], relay(), false)],
                vec![next_hop(452)],
                None,
                451,
                "from the next hop",
                true,
                false,
            ),
            (
                vec![part(&[0], relay(), false)],
                vec![next_hop(550)],
                None,
                550,
                "from the next hop",
                false,
                false,
            ),
            // A next hop saying 3xx to the content makes no sense: try again.
            (
                vec![part(&[0], relay(), false)],
                vec![next_hop(354)],
                None,
                451,
                "from the next hop",
                true,
                false,
            ),
            (
                vec![part(&[0], relay(), false)],
                vec![relay_outcome(HOP, Err(RelayError::Protocol("gone".into())))],
                None,
                451,
                "unavailable",
                true,
                false,
            ),
            // Discarded, with and without a copy.
            (
                vec![part(&[0], Delivery::Discard, true)],
                vec![(Outcome::Discarded, None)],
                Some("q8Lx2+Tb0mYk"),
                250,
                "quarantined as q8Lx2+Tb0mYk",
                false,
                false,
            ),
            (
                vec![part(&[0], Delivery::Discard, false)],
                vec![(Outcome::Discarded, None)],
                None,
                250,
                "discarded",
                false,
                false,
            ),
            // Every part rejected by policy.
            (
                vec![part(&[0, 1], policy_reject(), true)],
                vec![rejected()],
                Some("q8Lx2+Tb0mYk"),
                554,
                "blocked",
                false,
                false,
            ),
            // Split: one relayed, one discarded.
            (
                vec![
                    part(&[0], relay(), false),
                    part(&[1], Delivery::Discard, true),
                ],
                vec![queued(), (Outcome::Discarded, None)],
                Some("q8Lx2+Tb0mYk"),
                250,
                "handled in 2 parts",
                false,
                false,
            ),
            // Split: the second relayed part tempfails after the first was delivered.
            (
                vec![part(&[0], relay(), false), part(&[1], relay(), false)],
                vec![queued(), next_hop(421)],
                None,
                451,
                "from the next hop",
                true,
                true,
            ),
            // Split: the first fails, the second is not attempted.
            (
                vec![part(&[0], relay(), false), part(&[1], relay(), false)],
                vec![next_hop(451), not_attempted.clone()],
                None,
                451,
                "from the next hop",
                true,
                false,
            ),
            // Split: the next hop refuses one part for good: the sender hears of it.
            (
                vec![part(&[0], relay(), false), part(&[1], relay(), false)],
                vec![queued(), next_hop(554)],
                None,
                554,
                "from the next hop",
                false,
                false,
            ),
            // Split, nothing relayed (two discarded parts with different copies).
            (
                vec![
                    part(&[0], Delivery::Discard, true),
                    part(&[1], Delivery::Discard, false),
                ],
                vec![(Outcome::Discarded, None), (Outcome::Discarded, None)],
                Some("q8Lx2+Tb0mYk"),
                250,
                "quarantined as q8Lx2+Tb0mYk",
                false,
                false,
            ),
        ];
        for (i, (parts, results, quarantine, code, text, retry, duplicates)) in
            cases.into_iter().enumerate()
        {
            let a = answer(&Done {
                lmtp: false,
                mail_id: "AbCdEf123456",
                recipients: 2,
                parts: &parts,
                results: &results,
                quarantine,
            });
            let got = code_and_text(&a);
            assert_eq!(got.len(), 1, "case {i}: {got:?}");
            assert_eq!(got[0].0, code, "case {i}: {got:?}");
            assert!(got[0].1.contains(text), "case {i}: {got:?}");
            assert_eq!((a.retry, a.duplicates), (retry, duplicates), "case {i}");
        }
    }

    #[test]
    fn lmtp_answers_each_recipient_with_its_part() {
        let parts = vec![
            part(&[0, 2], relay(), false),
            part(&[1], Delivery::Discard, true),
            part(&[3], policy_reject(), false),
            part(&[4], relay(), false),
        ];
        let results = vec![
            queued(),
            (Outcome::Discarded, None),
            rejected(),
            next_hop(452),
        ];
        let a = answer(&Done {
            lmtp: true,
            mail_id: "AbCdEf123456",
            recipients: 5,
            parts: &parts,
            results: &results,
            quarantine: Some("q8Lx2+Tb0mYk"),
        });
        let codes: Vec<u16> = a.replies.iter().map(|r| r.code).collect();
        assert_eq!(codes, [250, 250, 250, 554, 451]);
        assert!(
            a.replies[1]
                .one_line()
                .contains("quarantined as q8Lx2+Tb0mYk")
        );
        assert!(a.replies[0].one_line().contains("queued as 4Xyz9"));
        assert!(!a.retry, "LMTP retries per recipient");
    }

    #[test]
    fn smtp_turns_a_partial_reject_into_a_discard() {
        let mut parts = vec![
            part(&[0], relay(), false),
            part(&[1], policy_reject(), true),
        ];
        fit_to_mode(true, &mut parts);
        assert!(
            matches!(parts[1].delivery, Delivery::Reject(_)),
            "LMTP keeps it"
        );
        fit_to_mode(false, &mut parts);
        assert_eq!(parts[1].delivery, Delivery::Discard);
        let mut all = vec![part(&[0, 1], policy_reject(), false)];
        fit_to_mode(false, &mut all);
        assert!(
            matches!(all[0].delivery, Delivery::Reject(_)),
            "every part rejects"
        );
        assert!(is_single_relay(&[part(&[0], relay(), false)]));
        assert!(!is_single_relay(&[part(&[0], Delivery::Discard, false)]));
        assert!(!is_single_relay(&[
            part(&[0], relay(), false),
            part(&[1], relay(), false)
        ]));
    }

    #[test]
    fn queue_id_from_reply() {
        let r = Reply::new(250, None, "2.0.0 Ok: queued as 4Xyz9");
        assert_eq!(queued_as(&r).as_deref(), Some("4Xyz9"));
        assert_eq!(queued_as(&Reply::new(250, None, "Ok")), None);
    }
}
