//! Property tests of the topic matcher and the ACL rules against a
//! reference implementation written straight from MQTT 3.1.1 section 4.7.

use proptest::prelude::*;

use super::acl::{AclRule, Verdict, Who, may_publish, may_receive, may_subscribe};
use super::identity::{Identity, IdentityRole, Origin};
use super::topic;

/// MQTT topic-filter matching, level by level, as the spec words it.
fn reference_matches(filter: &[&str], topic: &[&str], first: bool) -> bool {
    let dollar = |l: &str| first && l.starts_with('$');
    match (filter.first(), topic.first()) {
        (Some(&"#"), Some(l)) => !dollar(l),
        (Some(&"#"), None) => true,
        (Some(&"+"), Some(l)) => !dollar(l) && reference_matches(&filter[1..], &topic[1..], false),
        (Some(f), Some(t)) => f == t && reference_matches(&filter[1..], &topic[1..], false),
        (None, None) => true,
        _ => false,
    }
}

fn reference(filter: &str, topic_name: &str) -> bool {
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic_name.split('/').collect();
    reference_matches(&f, &t, true)
}

fn level(choices: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(choices).prop_map(str::to_string)
}

/// Topic names over a small alphabet, so that matches are frequent.
fn topic_name() -> impl Strategy<Value = String> {
    proptest::collection::vec(level(&["a", "b", "", "$s", "u1", "c1"]), 1..5)
        .prop_map(|v| v.join("/"))
}

/// Valid filters over the same alphabet, with wildcards.
fn filter_with(levels: &'static [&'static str]) -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(level(levels), 0..5),
        any::<bool>(),
    )
        .prop_map(|(mut v, hash)| {
            if hash || v.is_empty() {
                v.push("#".into());
            }
            v.join("/")
        })
}

fn filter() -> impl Strategy<Value = String> {
    filter_with(&["a", "b", "", "$s", "u1", "c1", "+"])
}

fn rule_filter() -> impl Strategy<Value = String> {
    filter_with(&["a", "b", "$s", "+", "%u", "%c", "x%u"])
}

fn device() -> Identity {
    Identity {
        name: "u1".into(),
        role: IdentityRole::Device,
        queues: vec![],
        token_hash: None,
        password_hash: None,
        created_at_us: 0,
        revoked_at_us: None,
        max_connections: None,
        publish_rate: None,
        origin: Origin::Registry,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn matching_agrees_with_the_reference(f in filter(), t in topic_name()) {
        prop_assert_eq!(topic::matches(&f, &t), reference(&f, &t), "filter {} topic {}", f, t);
    }

    #[test]
    fn a_covering_filter_matches_everything_the_covered_one_does(
        r in filter(), s in filter(), t in topic_name()
    ) {
        if topic::covers(&r, &s) && reference(&s, &t) {
            prop_assert!(reference(&r, &t), "{} covers {} but misses {}", r, s, t);
        }
        prop_assert!(topic::covers(&s, &s));
    }

    #[test]
    fn filters_that_do_not_overlap_share_no_topic(a in filter(), b in filter(), t in topic_name()) {
        if reference(&a, &t) && reference(&b, &t) {
            prop_assert!(topic::overlaps(&a, &b), "{} and {} both match {}", a, b, t);
        }
        prop_assert_eq!(topic::overlaps(&a, &b), topic::overlaps(&b, &a));
    }

    #[test]
    fn a_rule_decides_a_publish_exactly_where_its_expanded_filter_matches(
        rule in rule_filter(), t in topic_name(), allow in any::<bool>()
    ) {
        let identity = device();
        let who = Who { identity: Some(&identity), client_id: "c1" };
        let expanded = rule.replace("%u", "u1").replace("%c", "c1");
        let rules = [AclRule::parse(if allow { "allow" } else { "deny" }, "publish", &rule, None, None, None).unwrap()];
        let verdict = may_publish(&rules, who, &t);
        // The alphabet has none of the role templates' topics: without the
        // rule, a device is refused everything here.
        let by_rule = reference(&expanded, &t);
        match verdict {
            Verdict::Allow => prop_assert!(allow && by_rule, "rule {} topic {}", rule, t),
            Verdict::Deny(reason) | Verdict::DenyUnspecified(reason) => {
                prop_assert!(!allow || !by_rule, "rule {} topic {}", rule, t);
                prop_assert_eq!(reason.contains("auth.acl rule 1"), !allow && by_rule);
            }
        }
    }

    #[test]
    fn no_topic_a_deny_rule_names_reaches_a_subscriber(
        rule in rule_filter(), sub in filter(), t in topic_name()
    ) {
        let identity = device();
        let who = Who { identity: Some(&identity), client_id: "c1" };
        let expanded = rule.replace("%u", "u1").replace("%c", "c1");
        let rules = [
            AclRule::parse("deny", "subscribe", &rule, None, None, None).unwrap(),
            AclRule::parse("allow", "all", "#", None, None, None).unwrap(),
        ];
        if reference(&expanded, &t) && reference(&sub, &t) {
            let granted = may_subscribe(&rules, who, &sub).is_allowed();
            prop_assert!(!granted || !may_receive(&rules, who, &t), "rule {} sub {} topic {}", rule, sub, t);
        }
        // A subscription the deny rule covers whole is refused outright.
        if topic::covers(&expanded, &sub) {
            prop_assert!(!may_subscribe(&rules, who, &sub).is_allowed());
        }
        // Everything else a granted subscription matches still arrives.
        if reference(&sub, &t) && !reference(&expanded, &t) && may_subscribe(&rules, who, &sub).is_allowed() {
            prop_assert!(may_receive(&rules, who, &t));
        }
    }
}
