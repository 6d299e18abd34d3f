//! The substitutions the chart topology makes: each one function that panics when the rendered
//! value does not have the shape it replaces, so a chart change breaks the test instead of going
//! unexercised. The rest of what the chart renders is used as it is.
//!
//! - [`program`]: the image's `trow` entrypoint becomes the `trow` binary under test;
//! - [`pod_listen`]: `0.0.0.0:PORT` becomes the pod's own `IP:PORT` (a pod owns its network
//!   namespace; processes on one loopback share one);
//! - [`pod_paths`]: a volume's mount path (in args, env and the mounted files) becomes the dir
//!   under the pod's root where the volume was written;
//! - [`env_value`]: `valueFrom` becomes the value of the rendered Secret, ConfigMap or field.
//!
//! The cluster DNS and the kubelet's service links are emulated in [`super::cluster`].

use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::{Rendered, scalar, str_at};
use crate::trow_bin;

/// Substitution: the container's program. The image's entrypoint is `trow` (no `command`, or
/// one naming `trow`); on loopback it is the binary under test.
pub fn program(command: &Value) -> PathBuf {
    match command {
        Value::Null => {}
        Value::Sequence(s) => {
            assert!(
                s.len() == 1 && scalar(&s[0]).rsplit('/').next() == Some("trow"),
                "the container's command {s:?} is not the image's `trow`"
            );
        }
        v => panic!("command {v:?}"),
    }
    trow_bin()
}

/// Substitution: `0.0.0.0:PORT`, where a pod listens, becomes `ip:PORT`. `None` for any
/// other argument; panics on a wildcard listen address of another shape.
pub fn pod_listen(arg: &str, ip: &str) -> Option<String> {
    let port = arg.strip_prefix("0.0.0.0:")?;
    let port: u16 = port
        .parse()
        .unwrap_or_else(|_| panic!("{arg}: not 0.0.0.0:PORT"));
    Some(format!("{ip}:{port}"))
}

/// Substitution: every mount path in `text` (followed by `/`, a quote, white space or the end)
/// becomes its dir under `root`; returns the text and how many were replaced. Longer mount
/// paths are tried first, so `/etc/trow/config` never eats `/etc/trow/config-x`.
pub fn pod_paths(text: &str, mounts: &[String], root: &Path) -> (String, usize) {
    let mut sorted: Vec<&String> = mounts.iter().collect();
    sorted.sort_by_key(|m| std::cmp::Reverse(m.len()));
    let mut out = String::new();
    let mut count = 0;
    let mut i = 0;
    'scan: while i < text.len() {
        for m in &sorted {
            if text[i..].starts_with(m.as_str()) {
                let after = text[i + m.len()..].chars().next();
                let ends = match after {
                    None => true,
                    Some(c) => c == '/' || c == '"' || c == '\'' || c == ',' || c.is_whitespace(),
                };
                if ends {
                    out.push_str(&root.join(m.trim_start_matches('/')).display().to_string());
                    i += m.len();
                    count += 1;
                    continue 'scan;
                }
            }
        }
        let c = text[i..].chars().next().expect("a char");
        out.push(c);
        i += c.len_utf8();
    }
    (out, count)
}

/// Substitution: an env var's value: `value` (mount paths substituted by the caller), or
/// `valueFrom` a rendered Secret or ConfigMap key, or the pod's fields. `None` when an
/// `optional` reference is missing (the var is then unset, as in Kubernetes).
pub fn env_value(var: &Value, rendered: &Rendered, pod_name: &str, ip: &str) -> Option<String> {
    if !var["value"].is_null() || var["valueFrom"].is_null() {
        return Some(scalar(&var["value"]));
    }
    let from = &var["valueFrom"];
    let key_ref = |kind: &str, r: &Value| -> Option<String> {
        let name = str_at(r, &["name"]);
        let key = str_at(r, &["key"]);
        let optional = r["optional"].as_bool().unwrap_or(false);
        if rendered.get(kind, &name).is_none() && optional {
            return None;
        }
        let data = if kind == "Secret" {
            rendered.secret_data(&name)
        } else {
            rendered.config_map_data(&name)
        };
        match data.get(&key) {
            Some(v) => Some(String::from_utf8(v.clone()).expect("a UTF-8 env value")),
            None if optional => None,
            None => panic!("{kind} {name} has no key {key} (env {:?})", var["name"]),
        }
    };
    if !from["secretKeyRef"].is_null() {
        return key_ref("Secret", &from["secretKeyRef"]);
    }
    if !from["configMapKeyRef"].is_null() {
        return key_ref("ConfigMap", &from["configMapKeyRef"]);
    }
    if !from["fieldRef"].is_null() {
        let field = str_at(&from["fieldRef"], &["fieldPath"]);
        return Some(match field.as_str() {
            "metadata.name" => pod_name.to_string(),
            "metadata.namespace" => rendered.namespace.clone(),
            "status.podIP" => ip.to_string(),
            "spec.nodeName" => "loopback".to_string(),
            other => panic!("env {:?}: fieldRef {other} is not emulated", var["name"]),
        });
    }
    panic!("env {:?}: valueFrom {from:?} is not emulated", var["name"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_move_to_the_pods_ip() {
        assert_eq!(
            pod_listen("0.0.0.0:8000", "127.0.0.9").as_deref(),
            Some("127.0.0.9:8000")
        );
        assert_eq!(pod_listen("http://trow-storage:7000", "127.0.0.9"), None);
    }

    #[test]
    #[should_panic(expected = "not 0.0.0.0:PORT")]
    fn a_wildcard_of_another_shape_fails() {
        pod_listen("0.0.0.0:http", "127.0.0.9");
    }

    #[test]
    fn mount_paths_move_under_the_root_and_only_whole_ones() {
        let mounts = ["/etc/trow/config".to_string(), "/etc/trow/auth".to_string()];
        let root = Path::new("/pods/x");
        let (s, n) = pod_paths(
            "file:///etc/trow/auth/password,/etc/trow/config/config.yaml",
            &mounts,
            root,
        );
        assert_eq!(
            (s.as_str(), n),
            (
                "file:///pods/x/etc/trow/auth/password,/pods/x/etc/trow/config/config.yaml",
                2
            )
        );
        let (s, n) = pod_paths("password_file: \"/etc/trow/configs/0\"", &mounts, root);
        assert_eq!(
            (s.as_str(), n),
            ("password_file: \"/etc/trow/configs/0\"", 0)
        );
    }
}
