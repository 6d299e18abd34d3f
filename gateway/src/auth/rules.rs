//! Who may do what: the `authorization` section of the `--config-file` YAML.
//!
//! ```yaml
//! authorization:
//!   groups:
//!     developers: [alice, bob]
//!   rules:
//!     - subjects: [group:developers, user:ci]   # also: authenticated, anonymous
//!       repositories: [team/, tools/builder]    # prefixes, or "*" for every repository
//!       actions: [pull, push]                   # pull, push, delete, audit, "*"
//!     - subjects: [authenticated]
//!       repositories: ["*"]
//!       actions: [pull]
//!   cache_pull: authenticated                   # or anonymous, or rules
//! ```
//!
//! A request is allowed when any rule grants its action on its repository to its caller; there
//! are no deny rules, so the order of rules does not matter. A prefix ends at a name boundary, as
//! in `image_validation`: `team` covers `team` and `team/app` but not `teamwork`; `team/` covers
//! only what is under `team/`. `anonymous` is everyone, with or without credentials;
//! `authenticated`, everyone who logged in.
//!
//! The pull-through cache (`f/<registry>/...` and `?ns=<registry>`) is read by whoever
//! `cache_pull` says: by default every user who logged in (and, with `--anonymous-pull`,
//! everyone), since what it serves is public elsewhere; `rules` matches its `f/<registry>/...`
//! names against the rules like any other repository. Nobody pushes to or deletes from it.
//!
//! The audit API is granted by `audit` on `*`. The catalog is open to every caller who passes
//! authentication, and lists only the repositories the caller may pull.
//!
//! Without the section, every user who logged in may do everything, and with `--anonymous-pull`
//! everyone may pull: authentication alone, as before rules existed.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

use super::Identity;

/// An action on a repository, as a rule names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pull,
    Push,
    Delete,
    /// Reading the audit log.
    Audit,
}

impl Action {
    const ALL: [Action; 4] = [Action::Pull, Action::Push, Action::Delete, Action::Audit];

    fn bit(self) -> u8 {
        1 << self as u8
    }

    /// The action a token scope's action stands for (`pull`, `push`, `delete`).
    pub fn from_scope(action: &str) -> Option<Action> {
        match action {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }
}

/// The section as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationConfig {
    /// Group name → user names.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub cache_pull: CachePull,
    /// Kubernetes tokens as passwords, and the cluster's RBAC (see `super::kubernetes`).
    #[serde(default)]
    pub kubernetes: Option<super::kubernetes::KubernetesConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub subjects: Vec<String>,
    pub repositories: Vec<String>,
    pub actions: Vec<String>,
}

/// Who may pull through the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CachePull {
    /// Every user who logged in.
    #[default]
    Authenticated,
    /// Everyone.
    Anonymous,
    /// As the rules say of `f/<registry>/...`.
    Rules,
}

/// What is wrong with the section; `key` names the place, as the other sections' errors do.
#[derive(Debug, thiserror::Error)]
#[error("authorization.{key}: {reason}")]
pub struct RulesError {
    pub key: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Subject {
    User(String),
    Group(String),
    Authenticated,
    Anonymous,
}

#[derive(Clone, Debug)]
enum Repositories {
    All,
    Prefixes(Vec<String>),
}

#[derive(Clone, Debug)]
struct Rule {
    subjects: Vec<Subject>,
    repositories: Repositories,
    /// [`Action::bit`]s.
    actions: u8,
}

/// The rules in force, checked at start-up.
#[derive(Clone, Debug)]
pub struct Rules {
    groups: BTreeMap<String, BTreeSet<String>>,
    rules: Vec<Rule>,
    cache_pull: CachePull,
}

impl Rules {
    /// What holds without an `authorization` section: users who logged in may do everything;
    /// with `anonymous_pull`, everyone may pull.
    pub fn authenticated_only(anonymous_pull: bool) -> Rules {
        let mut rules = vec![Rule {
            subjects: vec![Subject::Authenticated],
            repositories: Repositories::All,
            actions: Action::ALL.iter().fold(0, |a, x| a | x.bit()),
        }];
        if anonymous_pull {
            rules.push(Rule {
                subjects: vec![Subject::Anonymous],
                repositories: Repositories::All,
                actions: Action::Pull.bit(),
            });
        }
        Rules {
            groups: BTreeMap::new(),
            rules,
            cache_pull: match anonymous_pull {
                true => CachePull::Anonymous,
                false => CachePull::Authenticated,
            },
        }
    }

    /// The section's rules. `--anonymous-pull` beside them would silently widen them, so the
    /// two together are refused: rules grant `anonymous` themselves.
    pub fn new(c: &AuthorizationConfig, anonymous_pull: bool) -> Result<Rules, RulesError> {
        if anonymous_pull {
            return Err(RulesError {
                key: "rules".into(),
                reason: "--anonymous-pull cannot be combined with rules; grant `pull` to \
                         `anonymous` in a rule instead"
                    .into(),
            });
        }
        let mut groups = BTreeMap::new();
        for (name, users) in &c.groups {
            if name.is_empty() || users.iter().any(String::is_empty) {
                return Err(RulesError {
                    key: format!("groups.{name}"),
                    reason: "group and user names may not be empty".into(),
                });
            }
            groups.insert(name.clone(), users.iter().cloned().collect());
        }
        let reviewed = c.kubernetes.as_ref().is_some_and(|k| k.token_review);
        let mut rules = Vec::new();
        for (i, r) in c.rules.iter().enumerate() {
            let err = |field: &str, reason: String| RulesError {
                key: format!("rules[{i}].{field}"),
                reason,
            };
            if r.subjects.is_empty() || r.repositories.is_empty() || r.actions.is_empty() {
                return Err(err(
                    "subjects",
                    "a rule needs subjects, repositories and actions".into(),
                ));
            }
            let mut subjects = Vec::new();
            for s in &r.subjects {
                subjects.push(match s.split_once(':') {
                    Some(("user", u)) if !u.is_empty() => Subject::User(u.into()),
                    // With TokenReview, groups also come from the cluster.
                    Some(("group", g)) if groups.contains_key(g) || reviewed => {
                        Subject::Group(g.into())
                    }
                    Some(("group", g)) => {
                        return Err(err("subjects", format!("no group {g:?} is defined")));
                    }
                    None if s == "authenticated" => Subject::Authenticated,
                    None if s == "anonymous" => Subject::Anonymous,
                    _ => {
                        return Err(err(
                            "subjects",
                            format!(
                                "{s:?} is not user:<name>, group:<name>, authenticated or anonymous"
                            ),
                        ));
                    }
                });
            }
            let repositories = if r.repositories.iter().any(|p| p == "*") {
                Repositories::All
            } else {
                for p in &r.repositories {
                    let name = p.trim_end_matches('/');
                    if !trow_names::grammar::valid_repository(name) {
                        return Err(err(
                            "repositories",
                            format!("{p:?} is not a repository name or prefix (or \"*\")"),
                        ));
                    }
                }
                Repositories::Prefixes(r.repositories.clone())
            };
            let mut actions = 0;
            for a in &r.actions {
                actions |= match a.as_str() {
                    "pull" => Action::Pull.bit(),
                    "push" => Action::Push.bit(),
                    "delete" => Action::Delete.bit(),
                    "audit" => Action::Audit.bit(),
                    "*" => Action::ALL.iter().fold(0, |a, x| a | x.bit()),
                    _ => {
                        return Err(err(
                            "actions",
                            format!("{a:?} is not pull, push, delete, audit or \"*\""),
                        ));
                    }
                };
            }
            rules.push(Rule {
                subjects,
                repositories,
                actions,
            });
        }
        Ok(Rules {
            groups,
            rules,
            cache_pull: c.cache_pull,
        })
    }

    fn is(&self, who: &Identity, s: &Subject) -> bool {
        match (s, &who.user) {
            (Subject::Anonymous, _) => true,
            (Subject::Authenticated, user) => user.is_some(),
            (Subject::User(u), Some(user)) => u == user,
            (Subject::Group(g), Some(user)) => {
                who.groups.iter().any(|x| x == g)
                    || self.groups.get(g).is_some_and(|m| m.contains(user))
            }
            (_, None) => false,
        }
    }

    /// Whether `who` may do `action` on `repository` (a local name, or `f/<registry>/...` for
    /// the cache, with the registry in its cache spelling).
    pub fn allows(&self, who: &Identity, repository: &str, action: Action) -> bool {
        if trow_proto::cache::is_cached(repository) {
            match (action, self.cache_pull) {
                (Action::Pull, CachePull::Anonymous) => return true,
                (Action::Pull, CachePull::Authenticated) => return who.user.is_some(),
                (Action::Pull, CachePull::Rules) | (Action::Audit, _) => {}
                (Action::Push | Action::Delete, _) => return false,
            }
        }
        self.rules.iter().any(|r| {
            r.actions & action.bit() != 0
                && match &r.repositories {
                    Repositories::All => true,
                    Repositories::Prefixes(ps) => ps
                        .iter()
                        .any(|p| trow_names::policy::prefix_matches(p, repository)),
                }
                && r.subjects.iter().any(|s| self.is(who, s))
        })
    }

    /// Whether `who` may read the audit log: `audit` on every repository.
    pub fn allows_audit(&self, who: &Identity) -> bool {
        self.rules.iter().any(|r| {
            r.actions & Action::Audit.bit() != 0
                && matches!(r.repositories, Repositories::All)
                && r.subjects.iter().any(|s| self.is(who, s))
        })
    }

    /// Whether `who` may pull anything through the cache (a token's pull grant, see
    /// `Auth::grant`).
    pub fn allows_some_cache_pull(&self, who: &Identity) -> bool {
        match self.cache_pull {
            CachePull::Anonymous => true,
            CachePull::Authenticated => who.user.is_some(),
            CachePull::Rules => self.rules.iter().any(|r| {
                r.actions & Action::Pull.bit() != 0
                    && match &r.repositories {
                        Repositories::All => true,
                        Repositories::Prefixes(ps) => ps.iter().any(|p| {
                            let p = p.trim_end_matches('/');
                            p == trow_proto::cache::NAMESPACE || trow_proto::cache::is_cached(p)
                        }),
                    }
                    && r.subjects.iter().any(|s| self.is(who, s))
            }),
        }
    }

    /// Whether anything at all is granted to callers without credentials: then a request
    /// without them is let through to the rules instead of being challenged.
    pub fn grants_anonymous(&self) -> bool {
        self.cache_pull == CachePull::Anonymous
            || self
                .rules
                .iter()
                .any(|r| r.subjects.contains(&Subject::Anonymous))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> Result<Rules, RulesError> {
        let c: AuthorizationConfig = serde_yaml::from_str(yaml).unwrap();
        Rules::new(&c, false)
    }

    fn user(name: &str) -> Identity {
        Identity {
            user: Some(name.into()),
            groups: vec![],
            kubernetes: false,
            expires: None,
        }
    }

    const RULES: &str = r#"
groups:
  devs: [alice, bob]
rules:
  - subjects: [group:devs]
    repositories: [team]
    actions: [pull, push]
  - subjects: [user:ci]
    repositories: [tools/]
    actions: ["*"]
  - subjects: [authenticated]
    repositories: [public]
    actions: [pull]
  - subjects: [anonymous]
    repositories: [open/]
    actions: [pull]
  - subjects: [user:auditor]
    repositories: ["*"]
    actions: [audit]
"#;

    #[test]
    fn rules_grant_by_subject_prefix_and_action() {
        let r = rules(RULES).unwrap();
        let alice = user("alice");
        assert!(r.allows(&alice, "team", Action::Push));
        assert!(r.allows(&alice, "team/app", Action::Pull));
        assert!(!r.allows(&alice, "teamwork", Action::Pull), "boundary");
        assert!(!r.allows(&alice, "team/app", Action::Delete));
        assert!(!r.allows(&alice, "tools/x", Action::Pull));
        let ci = user("ci");
        assert!(r.allows(&ci, "tools/x", Action::Delete));
        assert!(
            !r.allows(&ci, "tools", Action::Pull),
            "tools/ is only below"
        );
        assert!(r.allows(&ci, "public", Action::Pull));
        assert!(!r.allows(&ci, "public", Action::Push));
        let anon = Identity::default();
        assert!(r.allows(&anon, "open/x", Action::Pull));
        assert!(!r.allows(&anon, "public", Action::Pull));
        assert!(
            r.allows(&alice, "open/x", Action::Pull),
            "anonymous is everyone"
        );
        assert!(r.grants_anonymous());
        assert!(r.allows_audit(&user("auditor")));
        assert!(!r.allows_audit(&alice));
        assert!(!r.allows(&user("auditor"), "team", Action::Pull));
        let mut via_review = user("carol");
        via_review.groups = vec!["devs".into()];
        assert!(r.allows(&via_review, "team/x", Action::Push));
    }

    #[test]
    fn the_cache_has_its_own_default() {
        let r = rules(RULES).unwrap();
        let cached = "f/docker.io/library/nginx";
        assert!(r.allows(&user("nobody"), cached, Action::Pull));
        assert!(!r.allows(&Identity::default(), cached, Action::Pull));
        assert!(!r.allows(&user("ci"), cached, Action::Push));
        let by_rules = rules(
            "rules:\n  - subjects: [user:a]\n    repositories: [f/docker.io]\n    actions: [pull]\ncache_pull: rules\n",
        )
        .unwrap();
        assert!(by_rules.allows(&user("a"), cached, Action::Pull));
        assert!(!by_rules.allows(&user("b"), cached, Action::Pull));
        assert!(!by_rules.allows(&user("a"), "f/quay.io/x", Action::Pull));
        let open = rules("cache_pull: anonymous\n").unwrap();
        assert!(open.allows(&Identity::default(), cached, Action::Pull));
        assert!(open.grants_anonymous());
    }

    #[test]
    fn without_rules_authentication_decides() {
        let r = Rules::authenticated_only(false);
        assert!(r.allows(&user("x"), "a/b", Action::Delete));
        assert!(r.allows_audit(&user("x")));
        assert!(!r.allows(&Identity::default(), "a/b", Action::Pull));
        assert!(!r.grants_anonymous());
        let r = Rules::authenticated_only(true);
        assert!(r.allows(&Identity::default(), "a/b", Action::Pull));
        assert!(!r.allows(&Identity::default(), "a/b", Action::Push));
        assert!(r.allows(&Identity::default(), "f/quay.io/x", Action::Pull));
    }

    #[test]
    fn bad_rules_are_named() {
        let e = rules(
            "rules:\n  - subjects: [group:nope]\n    repositories: [a]\n    actions: [pull]\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "rules[0].subjects");
        let e = rules("rules:\n  - subjects: [root]\n    repositories: [a]\n    actions: [pull]\n")
            .unwrap_err();
        assert_eq!(e.key, "rules[0].subjects");
        let e = rules(
            "rules:\n  - subjects: [anonymous]\n    repositories: [A]\n    actions: [pull]\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "rules[0].repositories");
        let e = rules(
            "rules:\n  - subjects: [anonymous]\n    repositories: [a]\n    actions: [write]\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "rules[0].actions");
        let e = rules("rules:\n  - subjects: []\n    repositories: [a]\n    actions: [pull]\n")
            .unwrap_err();
        assert_eq!(e.key, "rules[0].subjects");
        let c: AuthorizationConfig = serde_yaml::from_str("rules: []\n").unwrap();
        assert!(
            Rules::new(&c, true).is_err(),
            "--anonymous-pull beside rules"
        );
        assert!(serde_yaml::from_str::<AuthorizationConfig>("rule: []\n").is_err());
        assert!(serde_yaml::from_str::<AuthorizationConfig>("cache_pull: all\n").is_err());
    }
}
