//! The section's rules, each with the message that names its key.

use super::*;
use std::time::Duration;

fn yaml(text: &str) -> Result<ProxyConfig, ConfigError> {
    from_yaml_section(serde_yaml::from_str(text).unwrap())
}

fn err(text: &str) -> String {
    yaml(text).unwrap_err().to_string()
}

#[test]
fn empty_or_missing_values_are_the_defaults() {
    let d = ProxyConfig::default();
    assert!(!d.offline && !d.configured_only && d.registries.is_empty());
    assert_eq!(d.revalidate_timeout, Duration::from_secs(3));
    assert_eq!(d.fetch_timeout, Duration::from_secs(30));
    assert_eq!(from_yaml_section(serde_yaml::Value::Null).unwrap(), d);
    assert_eq!(yaml("{}").unwrap(), d);
}

#[test]
fn the_full_section_parses_and_reads_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\r\n").unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let cfg = yaml(&format!(
        "offline: true
configured_only: true
revalidate_timeout: 500ms
fetch_timeout: 2s
registries:
  - host: Registry.Example.com:5000
    alias: example
    path_prefix: project-a/team
    username: me
    password_file: {}
    insecure: true
    ca_file: {}
    ignore_repos: [team/base, tools]
  - host: docker.io
    username: hub
    password: inline
",
        pw.display(),
        ca.display()
    ))
    .unwrap();
    assert!(cfg.offline && cfg.configured_only);
    assert_eq!(cfg.revalidate_timeout, Duration::from_millis(500));
    assert_eq!(cfg.fetch_timeout, Duration::from_secs(2));
    let r = &cfg.registries[0];
    assert_eq!(r.host, "registry.example.com:5000");
    assert_eq!(r.alias.as_deref(), Some("example"));
    assert_eq!(r.path_prefix.as_deref(), Some("project-a/team"));
    assert_eq!(r.username.as_deref(), Some("me"));
    assert_eq!(r.password.as_ref().unwrap().expose(), "s3cret");
    assert!(r.insecure);
    assert_eq!(r.ca_file.as_deref(), Some(ca.as_path()));
    assert_eq!(r.ignore_repos, ["team/base", "tools"]);
    assert!(cfg.registries[1].ignore_repos.is_empty());
    assert_eq!(cfg.registries[1].password, Some(Secret::new("inline")));
    assert!(!cfg.registries[1].insecure);
    // Validation is idempotent.
    assert_eq!(cfg.clone().validate().unwrap(), cfg);
}

#[test]
fn revalidate_timeout_takes_humantime_or_seconds() {
    let t = |v: &str| yaml(&format!("revalidate_timeout: {v}")).map(|c| c.revalidate_timeout);
    assert_eq!(t("5").unwrap(), Duration::from_secs(5));
    assert_eq!(t("2.5").unwrap(), Duration::from_millis(2500));
    assert_eq!(t("'7'").unwrap(), Duration::from_secs(7));
    assert_eq!(t("1m 30s").unwrap(), Duration::from_secs(90));
    for bad in ["-1", "abc", "3x", "true"] {
        let e = t(bad).unwrap_err().to_string();
        assert!(e.starts_with("registry_proxies:"), "{bad}: {e}");
    }
    assert_eq!(
        t("0s").unwrap_err().to_string(),
        "registry_proxies.revalidate_timeout: must be greater than zero"
    );
    assert_eq!(
        err("fetch_timeout: 0").to_string(),
        "registry_proxies.fetch_timeout: must be greater than zero"
    );
}

#[test]
fn max_blob_size_takes_bytes_units_or_unlimited() {
    let m = |v: &str| yaml(&format!("max_blob_size: {v}")).map(|c| c.max_blob_size);
    assert_eq!(
        ProxyConfig::default().max_blob_size,
        Some(DEFAULT_MAX_BLOB_SIZE)
    );
    assert_eq!(m("1048576").unwrap(), Some(1 << 20));
    assert_eq!(m("512MiB").unwrap(), Some(512 << 20));
    assert_eq!(m("'1.5 GB'").unwrap(), Some(1_500_000_000));
    assert_eq!(m("2tib").unwrap(), Some(2 << 40));
    assert_eq!(m("100 B").unwrap(), Some(100));
    assert_eq!(m("unlimited").unwrap(), None);
    for bad in ["-1", "abc", "3x", "true", "1e999 GiB", "MiB"] {
        let e = m(bad).unwrap_err().to_string();
        assert!(e.starts_with("registry_proxies:"), "{bad}: {e}");
    }
    assert_eq!(
        m("0").unwrap_err().to_string(),
        "registry_proxies.max_blob_size: must be greater than zero (`unlimited` for no cap)"
    );
}

#[test]
fn unknown_fields_are_named() {
    let e = err("offlne: true");
    assert!(e.contains("unknown field `offlne`"), "{e}");
    let e = err("registries:\n  - host: a.io\n    pasword: x\n");
    assert!(e.contains("unknown field `pasword`"), "{e}");
    assert!(matches!(yaml("registries: 3"), Err(ConfigError::Yaml(_))));
}

#[test]
fn embedded_in_a_file_errors_carry_the_line() {
    #[derive(Deserialize)]
    struct File {
        registry_proxies: Option<ProxyConfig>,
    }
    let f: File = serde_yaml::from_str("registry_proxies:\n  offline: true\n").unwrap();
    assert!(f.registry_proxies.unwrap().offline);
    let e = serde_yaml::from_str::<File>("registry_proxies:\n  registries:\n    - hots: x\n")
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("unknown field `hots`") && e.contains("line 3"),
        "{e}"
    );
    let e = serde_yaml::from_str::<File>("registry_proxies:\n  registries:\n    - host: a:b\n")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("registries[0].host"), "{e}");
}

#[test]
fn hosts_are_checked_and_lowercased() {
    let host = |h: &str| yaml(&format!("registries: [{{host: '{h}'}}]"));
    assert_eq!(host("QUAY.io").unwrap().registries[0].host, "quay.io");
    assert_eq!(host("[::1]:5000").unwrap().registries[0].host, "[::1]:5000");
    // Default ports are dropped (the scheme picks the port): one entry, one cache name.
    assert_eq!(host("10.1.2.3:443").unwrap().registries[0].host, "10.1.2.3");
    assert_eq!(host("Quay.io:443").unwrap().registries[0].host, "quay.io");
    // ...unless it is the other scheme's: that port would be silently replaced.
    let e = host("quay.io:80").unwrap_err().to_string();
    assert!(e.contains("port 80 is not the port of https"), "{e}");
    let insecure = |h: &str| yaml(&format!("registries: [{{host: '{h}', insecure: true}}]"));
    assert_eq!(
        insecure("10.1.2.3:80").unwrap().registries[0].host,
        "10.1.2.3"
    );
    let e = insecure("10.1.2.3:443").unwrap_err().to_string();
    assert!(e.contains("port 443 is not the port of http"), "{e}");
    // A one-label host keeps its port, so nothing is replaced.
    assert_eq!(host("myreg:80").unwrap().registries[0].host, "myreg:80");
    for bad in [
        "",
        "::1",
        "a.io:0",
        "a.io:65536",
        "a.io:x",
        "https://a.io",
        "a_b.io",
        "a.io/x",
    ] {
        let e = host(bad).unwrap_err().to_string();
        assert!(
            e.starts_with("registry_proxies.registries[0].host: "),
            "{bad}: {e}"
        );
    }
}

#[test]
fn aliases_and_prefixes_follow_the_grammar() {
    assert_eq!(
        err("registries:
  - host: a.io
  - host: b.io
  - host: c.io
    alias: Ex
"),
        "registry_proxies.registries[2].alias: \"Ex\" is not a valid alias (lowercase \
             letters, digits, '.', '-', '_' only; no ':' or '/')"
    );
    for bad in ["a:b", "a/b", "a__b", "-a", "a.", ""] {
        let e = err(&format!("registries: [{{host: a.io, alias: '{bad}'}}]"));
        assert!(e.contains("is not a valid alias"), "{bad}: {e}");
    }
    assert!(yaml("registries: [{host: a.io, alias: my.mirror_1-x}]").is_ok());
    for bad in ["/a", "a/", "a//b", "A", ""] {
        let e = err(&format!(
            "registries: [{{host: a.io, path_prefix: '{bad}'}}]"
        ));
        assert!(
            e.starts_with("registry_proxies.registries[0].path_prefix: "),
            "{e}"
        );
    }
}

#[test]
fn ignore_repos_are_repository_prefixes() {
    for bad in [
        "/a",
        "a/",
        "a//b",
        "Library/alpine",
        "",
        "docker.io/library/alpine:3",
    ] {
        let e = err(&format!(
            "registries: [{{host: a.io}}, {{host: b.io, ignore_repos: [ok, '{bad}']}}]"
        ));
        assert!(
            e.starts_with("registry_proxies.registries[1].ignore_repos[1]: "),
            "{bad}: {e}"
        );
    }
    let cfg = yaml("registries: [{host: docker.io, ignore_repos: [library/alpine]}]").unwrap();
    assert_eq!(cfg.registries[0].ignore_repos, ["library/alpine"]);
}

#[test]
fn credentials_rules() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "x").unwrap();
    let pw = pw.display();
    assert_eq!(
        err(&format!(
            "registries: [{{host: a.io, username: u, password: p, password_file: {pw}}}]"
        )),
        "registry_proxies.registries[0].password_file: password and password_file are \
             mutually exclusive"
    );
    assert_eq!(
        err("registries: [{host: a.io, password: p}]"),
        "registry_proxies.registries[0].password: is set without username"
    );
    assert_eq!(
        err(&format!(
            "registries: [{{host: a.io, password_file: {pw}}}]"
        )),
        "registry_proxies.registries[0].password_file: is set without username"
    );
    let missing = dir.path().join("missing");
    let e = yaml(&format!(
        "registries: [{{host: a.io, username: u, password_file: {}}}]",
        missing.display()
    ))
    .unwrap_err();
    assert!(
        matches!(&e, ConfigError::Unreadable { key, .. }
                if key == "registry_proxies.registries[0].password_file"),
        "{e}"
    );
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let e = err(&format!(
        "registries: [{{host: a.io, username: u, password_file: {}}}]",
        empty.display()
    ));
    assert!(e.ends_with("is empty"), "{e}");
    assert!(yaml("registries: [{host: a.io, username: u}]").is_ok());
}

#[test]
fn ca_file_must_be_readable() {
    let dir = tempfile::tempdir().unwrap();
    let e = err(&format!(
        "registries: [{{host: a.io}}, {{host: b.io, ca_file: {}}}]",
        dir.path().join("nope.pem").display()
    ));
    assert!(
        e.starts_with("registry_proxies.registries[1].ca_file: cannot read "),
        "{e}"
    );
    // A directory exists but cannot be read as a file.
    assert!(
        err(&format!(
            "registries: [{{host: a.io, ca_file: {}}}]",
            dir.path().display()
        ))
        .contains("ca_file: cannot read")
    );
}

#[test]
fn duplicates_are_refused() {
    assert_eq!(
        err("registries:
  - {host: a.io, path_prefix: x}
  - {host: a.io}
  - {host: A.io, path_prefix: x}
"),
        "registry_proxies.registries[2]: same host and path_prefix as registries[0]"
    );
    // Docker Hub's names are one host.
    assert!(
        err("registries: [{host: docker.io}, {host: index.docker.io}]")
            .contains("same host and path_prefix as registries[0]")
    );
    assert!(
        yaml("registries: [{host: a.io}, {host: 'a.io:5000'}, {host: a.io, path_prefix: y}]")
            .is_ok()
    );
    assert_eq!(
        err("registries: [{host: a.io, alias: m}, {host: b.io, alias: m}]"),
        "registry_proxies.registries[1].alias: \"m\" is already the alias of registries[0]"
    );
}

#[test]
fn aliases_cannot_take_over_other_upstreams() {
    let e = err("registries: [{host: a.io}, {host: b.io, alias: a.io}]");
    assert_eq!(
        e,
        "registry_proxies.registries[1].alias: \"a.io\" is the host of registries[0]"
    );
    assert!(
        err("registries: [{host: mirror.io, alias: docker.io}]")
            .contains("is a name of Docker Hub")
    );
    assert!(
        err("registries: [{host: index.docker.io}, {host: m.io, alias: docker.io}]")
            .contains("is the host of registries[0]")
    );
    assert!(
        err("registries: [{host: m.io, alias: x.io_5000}]")
            .contains("is how the cache names x.io:5000")
    );
    assert!(
        err("registries: [{host: m.io, alias: ipv6-0-0-0-0-0-0-0-1}]")
            .contains("is how the cache names [::1]")
    );
    // Harmless: an alias naming its own upstream, Docker Hub's own names, a public host
    // nobody else configures (a mirror standing in for it).
    assert!(yaml("registries: [{host: 'x.io:5000', alias: x.io_5000}]").is_ok());
    assert!(yaml("registries: [{host: registry-1.docker.io, alias: docker.io}]").is_ok());
    assert!(yaml("registries: [{host: a.io}, {host: a.io, path_prefix: p, alias: a.io}]").is_ok());
    assert!(yaml("registries: [{host: mirror.local, alias: gcr.io}]").is_ok());
}

#[test]
fn secrets_never_print() {
    let s = Secret::from("hunter2");
    assert_eq!(format!("{s} {s:?}"), "*** ***");
    assert_eq!(s.expose(), "hunter2");
    let r = RegistryConfig {
        host: "a.io".into(),
        username: Some("u".into()),
        password: Some(s),
        ..RegistryConfig::default()
    };
    assert!(!format!("{r:?}").contains("hunter2"));
}
