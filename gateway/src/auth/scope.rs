//! Scopes, in the Docker token protocol's grammar: `repository:<name>:<action>[,<action>...]`
//! and `registry:catalog:*`; what a request needs, and whether what a token grants covers it.
//!
//! The actions a request needs are distribution's: `pull` for reads (GET, HEAD), `pull,push`
//! for writes (POST, PUT, PATCH), `delete` for DELETE; the catalog needs `registry:catalog:*`.

use axum::http::Method;
use serde::{Deserialize, Serialize};

/// One resource and the actions on it: a scope, and a JWT's `access` entry (the same shape as
/// distribution's tokens).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

pub const PULL: &str = "pull";

impl Access {
    pub fn repository(name: &str, actions: &[&str]) -> Access {
        Access {
            kind: "repository".into(),
            name: name.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    pub fn catalog() -> Access {
        Access {
            kind: "registry".into(),
            name: "catalog".into(),
            actions: vec!["*".into()],
        }
    }

    /// Reading the audit log (`/audit/v1/...`).
    pub fn audit() -> Access {
        Access {
            kind: "registry".into(),
            name: "audit".into(),
            actions: vec!["*".into()],
        }
    }

    /// Parses one scope. The name may contain `:` only in the registry type's grammar; a
    /// repository name never does, so the type is before the first `:` and the actions after
    /// the last.
    pub fn parse(scope: &str) -> Option<Access> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        let actions: Vec<String> = actions
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        Some(Access {
            kind: kind.into(),
            name: name.into(),
            actions,
        })
    }

    /// `type:name:a,b`, as a challenge's `scope` says it.
    pub fn scope(&self) -> String {
        format!("{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }

    /// Whether this grant covers every action of `need` on the same resource.
    pub fn covers(&self, need: &Access) -> bool {
        self.kind == need.kind
            && self.name == need.name
            && need
                .actions
                .iter()
                .all(|a| self.actions.iter().any(|g| g == a || g == "*"))
    }
}

/// What a request needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    /// The resource and actions; None: any valid credentials (the version check `/v2/`).
    pub access: Option<Access>,
    /// The repository the rules judge, when it is not the scope's: the cache's
    /// `f/<registry>/<repository>` for a `?ns=<registry>` read (see `layer`).
    pub target: Option<String>,
    /// Only a user who logged in, never an anonymous caller (nor an anonymous token).
    pub user: bool,
}

impl Need {
    fn new(access: Option<Access>) -> Need {
        Need {
            access,
            target: None,
            user: false,
        }
    }
}

/// What `method` on `path` (under `/v2`) needs. `repository` is the name the path addresses,
/// when it addresses one.
pub fn needed(method: &Method, path: &str, repository: Option<&str>) -> Need {
    let read = method == Method::GET || method == Method::HEAD;
    if path == "/v2" || path == "/v2/" {
        // Clients expect the version check to challenge them when the registry has auth.
        return Need::new(None);
    }
    if path == "/metrics" {
        // For any user, never anonymous.
        return Need {
            user: true,
            ..Need::new(None)
        };
    }
    if path.starts_with("/audit/") {
        // `audit` in the rules; never anonymous unless a rule says so: the log says who
        // pulled what.
        return Need::new(Some(Access::audit()));
    }
    if path == "/v2/_catalog" {
        return Need::new(Some(Access::catalog()));
    }
    let actions: &[&str] = if read {
        &[PULL]
    } else if method == Method::DELETE {
        &["delete"]
    } else {
        &[PULL, "push"]
    };
    Need::new(repository.map(|name| Access::repository(name, actions)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_scopes() {
        let a = Access::parse("repository:team/app:pull,push").unwrap();
        assert_eq!(a, Access::repository("team/app", &["pull", "push"]));
        assert_eq!(a.scope(), "repository:team/app:pull,push");
        assert_eq!(
            Access::parse("registry:catalog:*").unwrap(),
            Access::catalog()
        );
        assert!(Access::parse("repository").is_none());
        assert!(Access::parse("repository::pull").is_none());
    }

    #[test]
    fn grants_cover_what_they_name() {
        let pp = Access::repository("a", &["pull", "push"]);
        assert!(pp.covers(&Access::repository("a", &["pull"])));
        assert!(pp.covers(&Access::repository("a", &["pull", "push"])));
        assert!(!pp.covers(&Access::repository("a", &["delete"])));
        assert!(!pp.covers(&Access::repository("a/b", &["pull"])));
        assert!(!pp.covers(&Access::repository("b", &["pull"])));
        assert!(Access::repository("a", &["*"]).covers(&Access::repository("a", &["delete"])));
        assert!(!Access::catalog().covers(&Access::repository("catalog", &["pull"])));
    }

    #[test]
    fn requests_need_distributions_actions() {
        let need = |m: Method, p: &str, r: Option<&str>| needed(&m, p, r);
        let repo = |actions: &[&str]| Some(Access::repository("a/b", actions));
        assert_eq!(need(Method::GET, "/v2/", None).access, None);
        let n = need(Method::HEAD, "/v2/a/b/blobs/sha256:x", Some("a/b"));
        assert_eq!(n.access, repo(&["pull"]));
        let n = need(Method::PATCH, "/v2/a/b/blobs/uploads/x", Some("a/b"));
        assert_eq!(n.access, repo(&["pull", "push"]));
        let n = need(Method::DELETE, "/v2/a/b/manifests/x", Some("a/b"));
        assert_eq!(n.access, repo(&["delete"]));
        let n = need(Method::GET, "/v2/_catalog", None);
        assert_eq!(n.access, Some(Access::catalog()));
        let n = need(Method::GET, "/audit/v1/events", None);
        assert_eq!(n.access, Some(Access::audit()));
    }
}
