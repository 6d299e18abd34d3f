//! Upstream registries for the pull-through cache tests: a real CNCF distribution behind a
//! counting front on a loopback address the test picks, fake upstreams scripted by the test, and
//! the `registry_proxies` config that points Trow at them.
//!
//! - [`Upstream`]: distribution (on `127.0.0.1:<any>`) seeded directly with `skopeo`, and the
//!   counting [`Front`] on the address Trow is configured with (e.g. `127.0.0.2:80`), which
//!   records every request Trow makes; optionally with htpasswd Basic auth, or with the
//!   bearer-token flow against a [`TokenRealm`] ([`Upstream::start_with_token`]).
//! - [`Scripted`]: a server answering with what the test says (a lying upstream, a sentinel
//!   that must never be connected to).
//! - [`ProxyConfig`] / [`Entry`]: the config file.
//!
//! Every test upstream is on a loopback address, which Trow refuses to contact unless the
//! config lists it (its SSRF guard), so each one must appear in the config ([`Upstream::entry`]).
//! Tests that run side by side use different `127.0.0.x` addresses: a port-80 upstream can
//! exist once per address.

pub(crate) mod background;
pub mod config;
pub mod front;
pub mod http1;
pub mod record;
pub mod scripted;
pub mod token;

use std::net::SocketAddr;

pub use config::{Entry, ProxyConfig};
pub use front::Front;
pub use http1::RequestHead;
pub use record::{Request, Requests, assert_no_containerd_requests, describe};
pub use scripted::{Reply, Scripted};
pub use token::{Credentials, TokenRealm, TokenRequest};

use crate::Distribution;
use crate::clients::{run, skopeo};

/// The user of an upstream started with [`Upstream::start_with_auth`].
pub const USER: &str = "trow";
/// [`USER`]'s password.
pub const PASSWORD: &str = "upstream-secret";
/// bcrypt (`$2b$`, cost 4: the fastest distribution accepts) of [`PASSWORD`], computed once
/// with libxcrypt's `crypt(3)`. A constant rather than a hash made per run: bcrypt needs a crate
/// or `htpasswd` (apache2-utils), and the check is deterministic, so a constant does the same.
/// [`Upstream::start_with_auth`] checks the registry really accepts it and refuses others.
const PASSWORD_BCRYPT: &str = "$2b$04$qKSHuF4LvqvnDqbkRNwJ6OfZWm/oHObulCfnDj4waZnmjEPxS3dDe";

/// A CNCF distribution registry behind a counting front.
pub struct Upstream {
    /// The front's IP, e.g. `127.0.0.2`.
    pub host: String,
    /// The front's port.
    pub port: u16,
    /// The registry itself, on `127.0.0.1:<any>`; seeded directly, so seeding is not counted.
    pub registry: Distribution,
    pub front: Front,
    /// The token realm of an upstream started with [`Upstream::start_with_token`].
    pub realm: Option<TokenRealm>,
    auth: bool,
    _dir: tempfile::TempDir,
}

impl Upstream {
    /// An anonymous upstream whose front listens on `host:port` (port 0: any free one).
    pub fn start(host: &str, port: u16) -> Upstream {
        Upstream::start_inner(host, port, false)
    }

    /// An upstream that requires Basic auth as [`USER`] / [`PASSWORD`] (distribution's htpasswd
    /// auth) for every request, `/v2/` included.
    pub fn start_with_auth(host: &str, port: u16) -> Upstream {
        Upstream::start_inner(host, port, true)
    }

    fn start_inner(host: &str, port: u16, auth: bool) -> Upstream {
        let dir = tempfile::tempdir().expect("tempdir");
        let extra = if auth {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{USER}:{PASSWORD_BCRYPT}\n"))
                .expect("write htpasswd");
            format!(
                "auth:\n  htpasswd:\n    realm: trow-tests\n    path: {}\n",
                htpasswd.display()
            )
        } else {
            String::new()
        };
        let registry = Distribution::start_expecting(&extra, if auth { "401" } else { "200" });
        let backend: SocketAddr = registry.addr.parse().expect("registry address");
        let front = Front::start(&format!("{host}:{port}"), backend);
        let up = Upstream {
            host: host.to_string(),
            port: front.addr.port(),
            registry,
            front,
            realm: None,
            auth,
            _dir: dir,
        };
        if auth {
            up.check_auth();
        }
        up
    }

    /// An upstream that authenticates with the bearer-token flow (distribution's `auth: token`):
    /// every request without a token is answered `401` with a challenge naming a [`TokenRealm`]
    /// on `host:<any port>`, which hands out tokens for [`USER`] / [`PASSWORD`].
    pub fn start_with_token(host: &str, port: u16) -> Upstream {
        let realm = TokenRealm::start(&format!("{host}:0"));
        let registry = Distribution::start_expecting(&realm.distribution_yaml(), "401");
        let backend: SocketAddr = registry.addr.parse().expect("registry address");
        let front = Front::start(&format!("{host}:{port}"), backend);
        let up = Upstream {
            host: host.to_string(),
            port: front.addr.port(),
            registry,
            front,
            realm: Some(realm),
            auth: true,
            _dir: tempfile::tempdir().expect("tempdir"),
        };
        up.check_token_auth();
        up
    }

    /// The registry challenges with the realm, the realm refuses wrong credentials, and the
    /// registry accepts the realm's tokens: else a bearer test would pass for the wrong reason.
    fn check_token_auth(&self) {
        let realm = self.realm.as_ref().expect("a token upstream");
        let v2 = format!("{}/v2/", self.registry.url);
        let status = |extra: &[&str], url: &str| {
            let mut cmd = crate::clients::command("curl", ["-s", "-o", "/dev/null"]);
            cmd.args(["-w", "%{http_code}"]).args(extra).arg(url);
            run(&mut cmd)
        };
        assert_eq!(
            status(&[], &v2),
            "401",
            "anonymous request to a token upstream"
        );
        let headers = run(&mut crate::clients::command(
            "curl",
            ["-s", "-o", "/dev/null", "-D", "-", v2.as_str()],
        ));
        let challenge = format!("bearer realm=\"{}\"", realm.url());
        assert!(
            headers.to_lowercase().contains(&challenge.to_lowercase()),
            "the registry's challenge does not name the realm ({challenge}):\n{headers}"
        );
        let token_url = format!(
            "{}?service={}&scope=repository:trow-tests/check:pull",
            realm.url(),
            token::SERVICE
        );
        let wrong = format!("{USER}:wrong");
        assert_eq!(status(&["-u", &wrong], &token_url), "401", "wrong password");
        assert_eq!(status(&[], &token_url), "401", "no credentials");
        let right = format!("{USER}:{PASSWORD}");
        let answer = run(&mut crate::clients::command(
            "curl",
            ["-s", "-u", right.as_str(), token_url.as_str()],
        ));
        let json: serde_json::Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("token answer {answer:?}: {e}"));
        let token = json["token"].as_str().expect("a token").to_string();
        let bearer = format!("Authorization: Bearer {token}");
        assert_eq!(
            status(&["-H", &bearer], &v2),
            "200",
            "the registry refused the realm's token:\n{}",
            self.registry.proc.log_text()
        );
        // The access claim is honoured too: a missing repository, not a refused token.
        let tags = format!("{}/v2/trow-tests/check/tags/list", self.registry.url);
        assert_eq!(status(&["-H", &bearer], &tags), "404", "{tags}");
    }

    /// The registry answers 401 without credentials and with wrong ones, 200 with the right ones:
    /// else an auth test would pass for the wrong reason.
    fn check_auth(&self) {
        let url = format!("{}/v2/", self.registry.url);
        let code = |creds: Option<&str>| {
            let mut cmd = crate::clients::command(
                "curl",
                ["-s", "-o", "/dev/null", "-w", "%{http_code}", url.as_str()],
            );
            if let Some(c) = creds {
                cmd.args(["-u", c]);
            }
            run(&mut cmd)
        };
        assert_eq!(code(None), "401", "anonymous request to an auth upstream");
        assert_eq!(
            code(Some(&format!("{USER}:wrong"))),
            "401",
            "wrong password"
        );
        assert_eq!(
            code(Some(&format!("{USER}:{PASSWORD}"))),
            "200",
            "the right password: the htpasswd entry does not match PASSWORD:\n{}",
            self.registry.proc.log_text()
        );
    }

    /// `IP:PORT` of the front.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// How clients name this upstream in a config `host:` and in `?ns=`: `IP` on port 80,
    /// else `IP:PORT`.
    pub fn authority(&self) -> String {
        if self.port == 80 {
            self.host.clone()
        } else {
            self.addr()
        }
    }

    /// How `/v2/f/<name>/...` names it without an alias, and its cache name: the authority with
    /// `:` as `_` (`127.0.0.3_5000`).
    pub fn path_name(&self) -> String {
        self.authority().replace(':', "_")
    }

    /// The config entry for this upstream: its authority, plain http, and no credentials.
    pub fn entry(&self) -> Entry {
        Entry::insecure(&self.authority())
    }

    /// What Trow asked this upstream.
    pub fn requests(&self) -> &Requests {
        &self.front.requests
    }

    /// `skopeo copy --preserve-digests` of `src` (a transport reference, e.g. `oci:DIR:TAG`)
    /// into this registry as `repo_and_tag`, directly (not through the front).
    pub fn push(&self, src: &str, repo_and_tag: &str) {
        self.copy_in(src, repo_and_tag, &[]);
    }

    /// As [`Upstream::push`], for an index: with every manifest it lists (`skopeo copy --all`;
    /// without it skopeo copies only the image of this machine's platform).
    pub fn push_all(&self, src: &str, repo_and_tag: &str) {
        self.copy_in(src, repo_and_tag, &["--all"]);
    }

    fn copy_in(&self, src: &str, repo_and_tag: &str, extra: &[&str]) {
        let mut cmd = skopeo(["copy", "--preserve-digests", "--dest-tls-verify=false"]);
        cmd.args(extra);
        if self.auth {
            cmd.args(["--dest-creds", &format!("{USER}:{PASSWORD}")]);
        }
        cmd.arg(src)
            .arg(format!("docker://{}/{repo_and_tag}", self.registry.addr));
        run(&mut cmd);
    }

    /// From now on the upstream accepts connections and requests but never answers.
    pub fn hang(&self) {
        self.front.hang();
    }

    /// Limits each connection's download to `bytes_per_sec` (0: unlimited).
    pub fn set_throttle(&self, bytes_per_sec: u64) {
        self.front.set_throttle(bytes_per_sec);
    }

    /// The upstream dies: its address refuses connections, open ones are cut, the registry is
    /// SIGKILLed.
    pub fn kill(&mut self) {
        self.front.stop();
        self.registry.kill9();
    }

    /// The registry's log, to print when a test fails.
    pub fn logs_on_panic(&self) -> crate::clients::LogsOnPanic {
        crate::clients::LogsOnPanic::distribution(&self.registry)
    }
}
