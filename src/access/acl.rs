//! Who may publish and subscribe where: `[[auth.acl]]` rules first, then the
//! role templates.
//!
//! The first rule that applies to the client and matches the topic decides.
//! A rule's topic is a filter in which `%u` stands for the identity's name
//! and `%c` for the client id. A rule decides a subscription when its filter
//! covers the whole subscribed filter (`deny test/#` refuses `test/a/+`). A
//! subscription that only overlaps a deny rule's filter (`#` against
//! `deny test/nosubscribe`) is granted, and each message is checked as it
//! is delivered ([`may_receive`]): no client receives a topic a deny rule
//! names, and a broad subscription still gets everything else, as with
//! mosquitto's read ACLs. Subscriptions to `$share/<group>/<filter>` are
//! judged by `<filter>`. When no rule decides, the identity's role does (see the role
//! table in docs/PROTOCOL.md); an anonymous client, which exists only when
//! `auth.allow_anonymous` lets it in, is then allowed, as in mosquitto with
//! no ACL file.

use std::borrow::Cow;

use swarmq_worker::wire::{HISTORY_GET_TOPIC, RESULTS_PREFIX, REVOKE_TOPIC};

use super::identity::{Identity, IdentityRole};
use super::topic;

/// Topic a device publishes a workflow to.
pub const WORKFLOWS_TOPIC: &str = "swarmq/workflows";

/// Prefix of a worker's control topic (cancellation of its tasks).
pub const CONTROL_PREFIX: &str = "swarmq/control/";

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Let it through.
    Allow,
    /// Refuse it.
    Deny,
}

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    /// PUBLISH.
    Publish,
    /// SUBSCRIBE.
    Subscribe,
    /// Both.
    All,
}

/// What a client asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Publish to a topic name.
    Publish,
    /// Subscribe to a topic filter.
    Subscribe,
}

impl AclRule {
    /// Builds a rule from its settings' words.
    ///
    /// # Errors
    ///
    /// What is wrong with it, naming the key.
    pub fn parse(
        permission: &str,
        action: &str,
        topic: &str,
        identity: Option<&str>,
        role: Option<&str>,
        reason_code: Option<&str>,
    ) -> Result<AclRule, String> {
        let unspecified = match reason_code {
            None | Some("not_authorized") => false,
            Some("unspecified_error") => true,
            Some(other) => {
                return Err(format!(
                    "reason_code `{other}`: not_authorized (0x87) or unspecified_error (0x80)"
                ));
            }
        };
        let permission = match permission {
            "allow" => Permission::Allow,
            "deny" => Permission::Deny,
            other => return Err(format!("permission `{other}`: allow or deny")),
        };
        let action = match action {
            "publish" => RuleAction::Publish,
            "subscribe" => RuleAction::Subscribe,
            "all" => RuleAction::All,
            other => return Err(format!("action `{other}`: publish, subscribe or all")),
        };
        let probe = topic.replace("%u", "u").replace("%c", "c");
        if !topic::is_valid_filter(&probe) {
            return Err(format!("topic `{topic}` is not a valid topic filter"));
        }
        let role = match role {
            None => None,
            Some(r) => Some(
                IdentityRole::parse(r)
                    .ok_or_else(|| format!("role `{r}`: device, worker, app or admin"))?,
            ),
        };
        if identity.is_some() && role.is_some() {
            return Err("give identity or role, not both".into());
        }
        Ok(AclRule {
            permission,
            action,
            topic: topic.to_string(),
            identity: identity.map(str::to_string),
            role,
            unspecified,
        })
    }
}

impl Action {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
        }
    }
}

/// One `[[auth.acl]]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclRule {
    /// Allow or deny.
    pub permission: Permission,
    /// Publish, subscribe or all.
    pub action: RuleAction,
    /// A topic filter, with `%u` and `%c` placeholders.
    pub topic: String,
    /// Applies to this identity only.
    pub identity: Option<String>,
    /// Applies to this role only.
    pub role: Option<IdentityRole>,
    /// Answer a denial with MQTT 5's 0x80 (unspecified error) instead of 0x87.
    pub unspecified: bool,
}

/// The client asking.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    /// Its identity; `None` for an anonymous client.
    pub identity: Option<&'a Identity>,
    /// Its client id.
    pub client_id: &'a str,
}

/// The answer, with the reason a denial is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Allow,
    /// Refused, and why (sent as the MQTT 5 Reason String).
    Deny(String),
    /// Refused by a rule that answers MQTT 5's "unspecified error" (0x80)
    /// instead of "not authorized" (0x87), for clients that know only 0x80.
    DenyUnspecified(String),
}

impl Verdict {
    /// True for [`Verdict::Allow`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allow)
    }

    /// The reason of a denial.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Verdict::Allow => None,
            Verdict::Deny(r) | Verdict::DenyUnspecified(r) => Some(r),
        }
    }
}

/// Decides whether `who` may publish to the topic name `topic`.
pub fn may_publish(rules: &[AclRule], who: Who<'_>, topic_name: &str) -> Verdict {
    for (i, rule) in rules.iter().enumerate() {
        if !applies(rule, who, Action::Publish) {
            continue;
        }
        let Some(filter) = expand(rule, who) else {
            if rule.permission == Permission::Deny {
                return denied_by_rule(rule, i, Action::Publish, topic_name);
            }
            continue;
        };
        if topic::matches(&filter, topic_name) {
            return match rule.permission {
                Permission::Allow => Verdict::Allow,
                Permission::Deny => denied_by_rule(rule, i, Action::Publish, topic_name),
            };
        }
    }
    let Some(identity) = who.identity else {
        return Verdict::Allow;
    };
    if role_may_publish(identity, topic_name) {
        Verdict::Allow
    } else {
        Verdict::Deny(format!(
            "{} `{}` may not publish to `{topic_name}`",
            identity.role.as_str(),
            identity.name
        ))
    }
}

/// Decides whether `who` may subscribe to `filter` (possibly `$share/…`).
pub fn may_subscribe(rules: &[AclRule], who: Who<'_>, filter: &str) -> Verdict {
    let (group, inner) = topic::split_shared(filter);
    for (i, rule) in rules.iter().enumerate() {
        if !applies(rule, who, Action::Subscribe) {
            continue;
        }
        let Some(rule_filter) = expand(rule, who) else {
            if rule.permission == Permission::Deny {
                return denied_by_rule(rule, i, Action::Subscribe, filter);
            }
            continue;
        };
        if topic::covers(&rule_filter, inner) {
            return match rule.permission {
                Permission::Allow => Verdict::Allow,
                Permission::Deny => denied_by_rule(rule, i, Action::Subscribe, filter),
            };
        }
    }
    let Some(identity) = who.identity else {
        return Verdict::Allow;
    };
    if role_may_subscribe(identity, who.client_id, group.is_some(), inner) {
        Verdict::Allow
    } else {
        Verdict::Deny(format!(
            "{} `{}` may not subscribe to `{filter}`",
            identity.role.as_str(),
            identity.name
        ))
    }
}

/// Whether a message on `topic_name` may be delivered to `who`, which holds
/// a subscription that matches it: the first subscribe rule whose filter
/// matches the topic decides; with none, yes (the subscription itself was
/// judged when it was made).
pub fn may_receive(rules: &[AclRule], who: Who<'_>, topic_name: &str) -> bool {
    for rule in rules {
        if !applies(rule, who, Action::Subscribe) {
            continue;
        }
        let Some(filter) = expand(rule, who) else {
            if rule.permission == Permission::Deny {
                return false;
            }
            continue;
        };
        if topic::matches(&filter, topic_name) {
            return rule.permission == Permission::Allow;
        }
    }
    true
}

/// True when some rule could refuse a delivery: only then is each
/// delivery checked.
pub fn has_subscribe_denials(rules: &[AclRule]) -> bool {
    rules
        .iter()
        .any(|r| r.permission == Permission::Deny && r.action != RuleAction::Publish)
}

fn denied_by_rule(rule: &AclRule, index: usize, action: Action, topic_or_filter: &str) -> Verdict {
    let reason = format!(
        "auth.acl rule {} denies {} `{topic_or_filter}`",
        index + 1,
        action.as_str()
    );
    if rule.unspecified {
        Verdict::DenyUnspecified(reason)
    } else {
        Verdict::Deny(reason)
    }
}

fn applies(rule: &AclRule, who: Who<'_>, action: Action) -> bool {
    let action_matches = match rule.action {
        RuleAction::All => true,
        RuleAction::Publish => action == Action::Publish,
        RuleAction::Subscribe => action == Action::Subscribe,
    };
    if !action_matches {
        return false;
    }
    match (&rule.identity, rule.role) {
        (None, None) => true,
        (Some(name), _) => who.identity.is_some_and(|i| &i.name == name),
        (None, Some(role)) => who.identity.is_some_and(|i| i.role == role),
    }
}

/// The rule's filter with its placeholders filled in; `None` when a
/// placeholder has no safe value (no identity for `%u`, a client id that
/// would add levels or wildcards for `%c`).
fn expand<'r>(rule: &'r AclRule, who: Who<'_>) -> Option<Cow<'r, str>> {
    // Most rules have no placeholder: no allocation on the publish path.
    if !rule.topic.contains('%') {
        return Some(Cow::Borrowed(&rule.topic));
    }
    let mut filter = rule.topic.clone();
    if filter.contains("%u") {
        filter = filter.replace("%u", &who.identity?.name);
    }
    if filter.contains("%c") {
        if who.client_id.contains(['/', '+', '#']) || who.client_id.is_empty() {
            return None;
        }
        filter = filter.replace("%c", who.client_id);
    }
    Some(Cow::Owned(filter))
}

/// The role table, for publishing to a topic name.
fn role_may_publish(identity: &Identity, topic_name: &str) -> bool {
    if identity.role == IdentityRole::Admin {
        return true;
    }
    if let Some(queue) = topic_name.strip_prefix("tasks/") {
        return !queue.contains('/')
            && (identity.role == IdentityRole::App || identity.may_use_queue(queue));
    }
    if topic_name == WORKFLOWS_TOPIC
        || topic_name == HISTORY_GET_TOPIC
        || topic_name == REVOKE_TOPIC
        || is_own(identity, "replies", topic_name)
        || is_own(identity, "devices", topic_name)
    {
        return true;
    }
    // Answers and progress: the engine takes them only from the lease holder.
    identity.role == IdentityRole::Worker && topic_name.starts_with(RESULTS_PREFIX)
}

/// The role table, for subscribing to `filter` (shared when in `$share/…`).
fn role_may_subscribe(identity: &Identity, client_id: &str, shared: bool, filter: &str) -> bool {
    match identity.role {
        IdentityRole::Admin => return true,
        IdentityRole::Worker if shared => {
            return filter.strip_prefix("tasks/").is_some_and(|queue| {
                if identity.queues.is_empty() {
                    // Every queue: one level, `+`, or `#` for all of them.
                    !queue.contains('/') || queue == "#"
                } else {
                    !queue.contains(['/', '+', '#']) && identity.may_use_queue(queue)
                }
            });
        }
        _ if shared => return false,
        _ => {}
    }
    let own = |space: &str| topic::covers(&format!("{space}/{}/#", identity.name), filter);
    if own("replies") || own("devices") {
        return true;
    }
    match identity.role {
        IdentityRole::Worker => filter == format!("{CONTROL_PREFIX}{client_id}"),
        IdentityRole::App => topic::covers("tasks/#", filter) || topic::covers("devices/#", filter),
        _ => false,
    }
}

/// True when `topic_name` is `<space>/<name>` or below it.
fn is_own(identity: &Identity, space: &str, topic_name: &str) -> bool {
    topic_name
        .strip_prefix(space)
        .and_then(|r| r.strip_prefix('/'))
        .and_then(|r| r.strip_prefix(identity.name.as_str()))
        .is_some_and(|r| r.is_empty() || r.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::identity::Origin;

    fn id(name: &str, role: IdentityRole, queues: &[&str]) -> Identity {
        Identity {
            name: name.into(),
            role,
            queues: queues.iter().map(|q| q.to_string()).collect(),
            token_hash: None,
            password_hash: None,
            created_at_us: 0,
            revoked_at_us: None,
            max_connections: None,
            publish_rate: None,
            origin: Origin::Registry,
        }
    }

    fn who<'a>(i: &'a Identity, client_id: &'a str) -> Who<'a> {
        Who {
            identity: Some(i),
            client_id,
        }
    }

    #[test]
    fn a_device_uses_its_queues_and_its_own_spaces_only() {
        let d = id("dev1", IdentityRole::Device, &["mapper", "img*"]);
        let w = who(&d, "dev1:a");
        for ok in [
            "tasks/mapper",
            "tasks/img.small",
            "swarmq/history/get",
            "swarmq/revoke",
            "swarmq/workflows",
            "replies/dev1/x",
            "replies/dev1",
            "devices/dev1/temp",
        ] {
            assert_eq!(may_publish(&[], w, ok), Verdict::Allow, "{ok}");
        }
        for denied in [
            "tasks/other",
            "replies/dev2/x",
            "replies/dev10",
            "swarmq/results/mapper",
            "anything",
        ] {
            assert!(!may_publish(&[], w, denied).is_allowed(), "{denied}");
        }
        for ok in ["replies/dev1/#", "replies/dev1/+", "devices/dev1/a"] {
            assert!(may_subscribe(&[], w, ok).is_allowed(), "{ok}");
        }
        for denied in [
            "#",
            "tasks/#",
            "replies/#",
            "replies/+/x",
            "replies/dev2/#",
            "$share/g/tasks/mapper",
            "$share/g/replies/dev1/#",
        ] {
            assert!(!may_subscribe(&[], w, denied).is_allowed(), "{denied}");
        }
    }

    #[test]
    fn a_worker_joins_shared_groups_of_its_queues() {
        let i = id("w1", IdentityRole::Worker, &["mapper"]);
        let w = who(&i, "w1:0");
        assert!(may_subscribe(&[], w, "$share/workers/tasks/mapper").is_allowed());
        assert!(!may_subscribe(&[], w, "$share/workers/tasks/reduce").is_allowed());
        assert!(!may_subscribe(&[], w, "$share/workers/tasks/+").is_allowed());
        assert!(!may_subscribe(&[], w, "tasks/mapper").is_allowed());
        assert!(may_subscribe(&[], w, "swarmq/control/w1:0").is_allowed());
        assert!(!may_subscribe(&[], w, "swarmq/control/w1:1").is_allowed());
        assert!(may_publish(&[], w, "swarmq/results/mapper").is_allowed());
        let all = id("w2", IdentityRole::Worker, &[]);
        assert!(may_subscribe(&[], who(&all, "w2"), "$share/g/tasks/+").is_allowed());
        assert!(may_subscribe(&[], who(&all, "w2"), "$share/g/tasks/#").is_allowed());
    }

    #[test]
    fn an_app_observes_and_an_admin_does_anything() {
        let a = id("ops", IdentityRole::App, &["mapper"]);
        let w = who(&a, "ops");
        assert!(may_publish(&[], w, "tasks/any").is_allowed());
        assert!(may_subscribe(&[], w, "tasks/#").is_allowed());
        assert!(may_subscribe(&[], w, "devices/+/temp").is_allowed());
        assert!(!may_subscribe(&[], w, "#").is_allowed());
        assert!(!may_subscribe(&[], w, "$share/g/tasks/a").is_allowed());
        let root = id("root", IdentityRole::Admin, &[]);
        assert!(may_subscribe(&[], who(&root, "root"), "#").is_allowed());
        assert!(may_publish(&[], who(&root, "root"), "x/y").is_allowed());
    }

    #[test]
    fn rules_come_first_and_placeholders_are_filled() {
        let rules = vec![
            AclRule {
                permission: Permission::Deny,
                action: RuleAction::Subscribe,
                topic: "test/nosubscribe".into(),
                identity: None,
                role: None,
                unspecified: false,
            },
            AclRule {
                permission: Permission::Allow,
                action: RuleAction::All,
                topic: "site/%u/%c/#".into(),
                identity: None,
                role: Some(IdentityRole::Device),
                unspecified: false,
            },
        ];
        let anon = Who {
            identity: None,
            client_id: "paho",
        };
        assert!(!may_subscribe(&rules, anon, "test/nosubscribe").is_allowed());
        // Overlapping subscriptions are granted; the denied topic is not delivered.
        assert!(may_subscribe(&rules, anon, "test/#").is_allowed());
        assert!(!may_receive(&rules, anon, "test/nosubscribe"));
        assert!(may_receive(&rules, anon, "test/other"));
        assert!(may_subscribe(&rules, anon, "test/other").is_allowed());
        assert!(has_subscribe_denials(&rules));
        let d = id("dev1", IdentityRole::Device, &[]);
        assert!(may_publish(&rules, who(&d, "dev1:x"), "site/dev1/dev1:x/t").is_allowed());
        assert!(!may_publish(&rules, who(&d, "dev1:x"), "site/dev2/dev1:x/t").is_allowed());
        // A client id that would widen the filter fills nothing in.
        assert!(!may_publish(&rules, who(&d, "dev1:+"), "site/dev1/anything/t").is_allowed());
        match may_subscribe(&rules, anon, "test/nosubscribe") {
            Verdict::Deny(reason) => assert!(reason.contains("rule 1"), "{reason}"),
            other => unreachable!("{other:?}"),
        }
    }
}
