//! Retention rules: which tags, and for how long untagged manifests, each repository keeps.
//! The `retention` section of Trow's `--config-file` YAML; garbage collection applies it (see
//! `store::gc`).
//!
//! ```yaml
//! retention:
//!   - repositories: "team/"        # a prefix of repository names; "" is every repository
//!     keep_last: 10                # the 10 tags moved most recently
//!     keep_tags: ["^v[0-9]+\\.[0-9]+\\.[0-9]+$", "^latest$"]   # and every tag matching one
//!     untagged_older_than: 7d      # untagged manifests not written or used for 7 days go
//! ```
//!
//! - **Which rule.** The first rule whose `repositories` is a prefix of the repository's name
//!   applies, and no other: a rule with nothing but `repositories` exempts a prefix from the
//!   rules after it. The prefix is plain text (`team` also covers `teamwork/app`; write `team/`
//!   for the namespace). A repository no rule covers keeps every tag. Rules never apply to the
//!   cache (`f/...`): it is bounded by `registry_proxies.max_size` and evicted by last pull.
//! - **Tags.** A rule with `keep_last` or `keep_tags` removes every tag neither keeps.
//!   `keep_last` counts tags by when they were last moved (pushed, even to the same manifest):
//!   the tag's own write time. `keep_tags` are regular expressions (the `regex` crate's syntax)
//!   that match anywhere in the tag unless anchored (`^...$`). A rule with neither removes no
//!   tag. `keep_last: 0` is refused: it would remove every tag the patterns do not keep, which
//!   is what leaving `keep_last` out says when there are patterns, and every tag when there are
//!   none.
//! - **Untagged manifests.** Without `untagged_older_than`, an untagged manifest goes at the
//!   first collection after the grace period (`--gc-grace`), as everywhere. With it, an
//!   untagged manifest that no manifest references and that has no `subject` stays until it
//!   was not written or read by digest for that long (a read is recorded at most once per half
//!   grace period). A referrer (a signature, an SBOM) and a child of an index never live by
//!   this rule: they live exactly as long as their subject or parent.
//! - **The grace period wins.** It protects pushes in progress, so no rule shortens it:
//!   `untagged_older_than` below `--gc-grace` is refused at start-up
//!   ([`Retention::check_grace`]), and a store handed one anyway keeps untagged manifests for
//!   the grace period.
//!
//! Everything is checked at start-up and errors name the key (`retention[1].keep_tags[0]:
//! ...`; indexes count from 0). Unknown keys are errors too.

use regex::Regex;
use serde::Deserialize;
use serde::de::{self, Deserializer};
use std::time::{Duration, SystemTime};

/// The validated `retention` section: rules in the order written (the first match applies).
#[derive(Clone, Debug, Default)]
pub struct Retention {
    rules: Vec<Rule>,
}

/// One rule; see the module docs.
#[derive(Clone, Debug)]
pub struct Rule {
    /// A prefix of repository names; empty: every repository.
    pub repositories: String,
    /// Keep this many tags, the most recently moved (at least 1).
    pub keep_last: Option<usize>,
    /// Keep every tag matching one of these.
    pub keep_tags: Vec<Regex>,
    /// Untagged manifests not written or used for this long are not kept.
    pub untagged_older_than: Option<Duration>,
}

/// A retention setting that was refused; the message starts with the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct RetentionError {
    pub key: String,
    pub reason: String,
}

fn invalid(key: String, reason: impl Into<String>) -> RetentionError {
    RetentionError {
        key,
        reason: reason.into(),
    }
}

/// A tag as a rule judges it.
#[derive(Clone, Debug)]
pub struct TagAge {
    pub name: String,
    /// When the tag was last moved.
    pub moved: SystemTime,
}

impl Retention {
    /// Rules in order of precedence, checked as the config file's are.
    pub fn new(rules: Vec<RawRule>) -> Result<Retention, RetentionError> {
        let rules = rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.validate(i))
            .collect::<Result<_, _>>()?;
        Ok(Retention { rules })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rule that applies to `repository`: the first whose prefix it starts with.
    pub fn rule_for(&self, repository: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| repository.starts_with(&r.repositories))
    }

    /// Refuses an `untagged_older_than` shorter than the garbage collection's grace period,
    /// which protects pushes in progress and which no rule may shorten.
    pub fn check_grace(&self, grace: Duration) -> Result<(), RetentionError> {
        for (i, r) in self.rules.iter().enumerate() {
            if let Some(d) = r.untagged_older_than
                && d < grace
            {
                return Err(invalid(
                    format!("retention[{i}].untagged_older_than"),
                    format!(
                        "{} is shorter than the garbage collection's grace period ({}, --gc-grace), which protects pushes in progress",
                        humantime::format_duration(d),
                        humantime::format_duration(grace)
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl Rule {
    /// Whether the rule removes tags at all (it keeps some by count or by name).
    pub fn limits_tags(&self) -> bool {
        self.keep_last.is_some() || !self.keep_tags.is_empty()
    }

    /// Whether `tag` matches one of `keep_tags`.
    pub fn keeps_by_name(&self, tag: &str) -> bool {
        self.keep_tags.iter().any(|p| p.is_match(tag))
    }

    /// The tags of `tags` this rule removes, in name order.
    pub fn tags_to_remove(&self, tags: &[TagAge]) -> Vec<String> {
        if !self.limits_tags() {
            return Vec::new();
        }
        let mut newest_first: Vec<&TagAge> = tags.iter().collect();
        // Ties (one push moving several tags within the clock's resolution) by name, so that
        // a dry run and the collection after it choose the same.
        newest_first.sort_by(|a, b| b.moved.cmp(&a.moved).then_with(|| a.name.cmp(&b.name)));
        let kept_by_count = self.keep_last.unwrap_or(0);
        let mut removed: Vec<String> = newest_first
            .into_iter()
            .enumerate()
            .filter(|(rank, t)| *rank >= kept_by_count && !self.keeps_by_name(&t.name))
            .map(|(_, t)| t.name.clone())
            .collect();
        removed.sort();
        removed
    }
}

/// A rule as written in the config file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub repositories: String,
    #[serde(default)]
    pub keep_last: Option<usize>,
    #[serde(default)]
    pub keep_tags: Vec<String>,
    /// A humantime duration (`7d`, `12h`, `1h 30m`).
    #[serde(default)]
    pub untagged_older_than: Option<String>,
}

impl RawRule {
    fn validate(self, i: usize) -> Result<Rule, RetentionError> {
        let key = |field: &str| format!("retention[{i}].{field}");
        let prefix_chars = |c: char| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '/')
        };
        if !self.repositories.chars().all(prefix_chars) || self.repositories.starts_with('/') {
            return Err(invalid(
                key("repositories"),
                format!(
                    "{:?} can start no repository name (lower case letters, digits, '.', '_', '-' and '/', not first)",
                    self.repositories
                ),
            ));
        }
        if self.keep_last == Some(0) {
            return Err(invalid(
                key("keep_last"),
                "must be at least 1 (to keep only the tags keep_tags matches, leave keep_last out)",
            ));
        }
        let keep_tags = self
            .keep_tags
            .iter()
            .enumerate()
            .map(|(j, p)| {
                Regex::new(p).map_err(|e| {
                    invalid(
                        key(&format!("keep_tags[{j}]")),
                        format!("{p:?} is not a regular expression: {e}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let untagged_older_than = self
            .untagged_older_than
            .as_deref()
            .map(|s| match humantime::parse_duration(s) {
                Ok(d) if !d.is_zero() => Ok(d),
                Ok(_) => Err(invalid(key("untagged_older_than"), "must be more than 0")),
                Err(e) => Err(invalid(
                    key("untagged_older_than"),
                    format!("{s:?} is not a duration such as 7d or 12h: {e}"),
                )),
            })
            .transpose()?;
        Ok(Rule {
            repositories: self.repositories,
            keep_last: self.keep_last,
            keep_tags,
            untagged_older_than,
        })
    }
}

/// `retention: [rule, ...]`, validated as it is read.
impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Retention, D::Error> {
        Retention::new(Vec::<RawRule>::deserialize(d)?).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        retention: Retention,
    }

    fn parse(text: &str) -> Result<Retention, String> {
        serde_yaml::from_str::<File>(text)
            .map(|f| f.retention)
            .map_err(|e| e.to_string())
    }

    fn tag(name: &str, secs: u64) -> TagAge {
        TagAge {
            name: name.into(),
            moved: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let r = parse(
            r#"retention:
  - repositories: "team/"
    keep_last: 10
    keep_tags: ["^v[0-9]+\\.[0-9]+\\.[0-9]+$", "^latest$"]
    untagged_older_than: 7d
  - repositories: ""
"#,
        )
        .unwrap();
        let rule = &r.rules()[0];
        assert_eq!(rule.keep_last, Some(10));
        assert!(rule.keeps_by_name("v1.2.3") && rule.keeps_by_name("latest"));
        assert!(!rule.keeps_by_name("v1.2.3-rc1") && !rule.keeps_by_name("latest2"));
        assert_eq!(
            rule.untagged_older_than,
            Some(Duration::from_secs(7 * 86400))
        );
        assert!(!r.rules()[1].limits_tags());
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            (
                "retention:\n  - repositories: a/\n    keep_tags: [ok, \"(\"]\n",
                "retention[0].keep_tags[1]",
            ),
            (
                "retention:\n  - repositories: a/\n  - repositories: b/\n    keep_last: 0\n",
                "retention[1].keep_last",
            ),
            (
                "retention:\n  - repositories: a/\n    untagged_older_than: soon\n",
                "retention[0].untagged_older_than",
            ),
            (
                "retention:\n  - repositories: a/\n    untagged_older_than: 0s\n",
                "retention[0].untagged_older_than",
            ),
            (
                "retention:\n  - repositories: Team/\n",
                "retention[0].repositories",
            ),
            ("retention:\n  - keep_last: 3\n", "repositories"),
            (
                "retention:\n  - repositories: a/\n    keep_lst: 3\n",
                "keep_lst",
            ),
            (
                "retention:\n  - repositories: a/\n    keep_last: -1\n",
                "keep_last",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(key), "{key} not named in {e:?}");
        }
    }

    #[test]
    fn the_grace_period_is_never_shortened() {
        let r = parse("retention:\n  - repositories: a/\n  - repositories: \"\"\n    untagged_older_than: 30m\n").unwrap();
        r.check_grace(Duration::from_secs(1800)).unwrap();
        let e = r.check_grace(Duration::from_secs(3600)).unwrap_err();
        assert_eq!(e.key, "retention[1].untagged_older_than");
        assert!(e.to_string().contains("grace"), "{e}");
    }

    #[test]
    fn the_first_matching_prefix_applies() {
        let r = parse(
            "retention:\n  - repositories: team/keep\n  - repositories: team/\n    keep_last: 1\n",
        )
        .unwrap();
        assert!(!r.rule_for("team/keep/app").unwrap().limits_tags());
        assert_eq!(r.rule_for("team/app").unwrap().keep_last, Some(1));
        assert!(r.rule_for("teamwork").is_none());
        assert!(Retention::default().rule_for("a").is_none());
    }

    #[test]
    fn tags_go_unless_kept_by_count_or_name() {
        let tags = [
            tag("a", 1),
            tag("b", 5),
            tag("c", 3),
            tag("v1", 0),
            tag("d", 5),
        ];
        let rule = |keep_last, keep_tags: &[&str]| Rule {
            repositories: String::new(),
            keep_last,
            keep_tags: keep_tags.iter().map(|p| Regex::new(p).unwrap()).collect(),
            untagged_older_than: None,
        };
        // Newest first: b and d (a tie, by name), c, a, v1.
        assert_eq!(rule(Some(2), &[]).tags_to_remove(&tags), ["a", "c", "v1"]);
        assert_eq!(rule(Some(2), &["^v"]).tags_to_remove(&tags), ["a", "c"]);
        assert_eq!(
            rule(None, &["^v", "^a$"]).tags_to_remove(&tags),
            ["b", "c", "d"]
        );
        assert_eq!(
            rule(Some(10), &[]).tags_to_remove(&tags),
            Vec::<String>::new()
        );
        assert!(rule(None, &[]).tags_to_remove(&tags).is_empty());
    }
}
