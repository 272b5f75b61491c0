//! MQTT topic names and filters, compared level by level.
//!
//! Three questions, all by the rules of MQTT 3.1.1 section 4.7 (the same in
//! 5.0): does a filter match a topic name ([`matches`]); does every topic a
//! filter could match also match another one ([`covers`], for allowing a
//! subscription); and could any topic match both ([`overlaps`], for denying
//! one). A filter's `+` or `#` in the first level does not match a topic that
//! starts with `$` (4.7.2), so `#` never reaches `$SYS/…`.

/// True when `filter` matches the topic name `topic`.
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    let mut first = true;
    loop {
        match (f.next(), t.next()) {
            (Some("#"), Some(level)) => return !(first && level.starts_with('$')),
            // `a/#` matches `a` itself (4.7.1.2).
            (Some("#"), None) => return true,
            (Some("+"), Some(level)) => {
                if first && level.starts_with('$') {
                    return false;
                }
            }
            (Some(fl), Some(tl)) => {
                if fl != tl {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

/// True when every topic that `sub` matches is also matched by `rule`.
pub fn covers(rule: &str, sub: &str) -> bool {
    let mut r = rule.split('/');
    let mut s = sub.split('/');
    let mut first = true;
    loop {
        match (r.next(), s.next()) {
            (Some("#"), Some(sl)) => return !(first && is_dollar_literal(sl)),
            (Some("#"), None) => return true,
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(sl)) => {
                if first && is_dollar_literal(sl) {
                    return false;
                }
            }
            (Some(_), Some("+")) => return false,
            (Some(rl), Some(sl)) => {
                if rl != sl {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

/// True when some topic name is matched by both `a` and `b`.
pub fn overlaps(a: &str, b: &str) -> bool {
    let mut x = a.split('/');
    let mut y = b.split('/');
    let mut first = true;
    loop {
        match (x.next(), y.next()) {
            (Some("#"), Some(l)) | (Some(l), Some("#")) => {
                return !(first && is_dollar_literal(l));
            }
            // `a/#` also matches `a`.
            (Some("#"), None) | (None, Some("#")) => return true,
            (Some("+"), Some(l)) | (Some(l), Some("+")) => {
                if first && is_dollar_literal(l) {
                    return false;
                }
            }
            (Some(l), Some(m)) => {
                if l != m {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

/// A first level that only `$` topics have: a literal starting with `$`.
fn is_dollar_literal(level: &str) -> bool {
    level.starts_with('$')
}

/// True when `filter` is a well-formed topic filter: `#` only as the last
/// level, `+` and `#` only as whole levels, no NUL, not empty.
pub fn is_valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, l)| match *l {
        "#" => i == last,
        "+" => true,
        l => !l.contains(['+', '#']),
    })
}

/// Splits `$share/<group>/<filter>` into the group and the filter.
pub fn split_shared(filter: &str) -> (Option<&str>, &str) {
    if let Some(rest) = filter.strip_prefix("$share/")
        && let Some((group, inner)) = rest.split_once('/')
    {
        return (Some(group), inner);
    }
    (None, filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_follows_the_spec_examples() {
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
    }

    #[test]
    fn covering_and_overlapping() {
        assert!(covers("replies/dev1/#", "replies/dev1/#"));
        assert!(covers("replies/dev1/#", "replies/dev1/a/+"));
        assert!(covers("replies/dev1/#", "replies/dev1"));
        assert!(!covers("replies/dev1/#", "replies/+/x"));
        assert!(!covers("replies/dev1/#", "#"));
        assert!(!covers("tasks/a", "tasks/+"));
        assert!(covers("tasks/+", "tasks/a"));
        assert!(!covers("#", "$SYS/#"));
        assert!(overlaps("test/nosubscribe", "test/#"));
        assert!(overlaps("test/nosubscribe", "#"));
        assert!(!overlaps("test/nosubscribe", "test/other"));
        assert!(!overlaps("#", "$SYS/x"));
        assert!(overlaps("a/#", "a"));
    }

    #[test]
    fn filters_are_validated_and_shared_ones_split() {
        assert!(is_valid_filter("a/+/#"));
        assert!(!is_valid_filter("a/#/b"));
        assert!(!is_valid_filter("a/b+"));
        assert!(!is_valid_filter(""));
        assert_eq!(split_shared("$share/g/tasks/x"), (Some("g"), "tasks/x"));
        assert_eq!(split_shared("tasks/x"), (None, "tasks/x"));
    }
}
