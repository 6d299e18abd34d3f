//! More real clients, pinned Go builds (scripts/go-tools.sh): oras for OCI artifacts and
//! referrers, crane for copying images and indexes between registries, grpcurl for the storage
//! service's gRPC port as README.md tells operators to use it.
//!
//! Every check is on an outcome: bytes pulled equal bytes pushed, digests equal the source's,
//! listings contain what was pushed and lose what was deleted. oras and crane scenarios take only
//! the registry's `host:port` and run against Trow in both topologies; the `distribution`
//! variants (ignored by default) run them against CNCF distribution, to tell a Trow bug from a
//! harness problem: `cargo test -p trow-tests --test tools -- --ignored distribution`.

use std::path::Path;

use serde_json::Value;
use trow_tests::clients::{describe, output, run, skopeo};
use trow_tests::images::{self, Rng};
use trow_tests::tools::Workdir;
use trow_tests::{Distribution, Topology, Trow, sha256_digest};

/// Runs `scenario(addr)` against Trow in both topologies and (ignored) against distribution.
macro_rules! against_registries {
    ($scenario:ident) => {
        mod $scenario {
            #[test]
            fn one_process() {
                let t = trow_tests::Trow::start(trow_tests::Topology::OneProcess);
                let _logs = trow_tests::clients::LogsOnPanic::trow(&t);
                super::$scenario(&t.addr);
            }

            #[test]
            fn split() {
                let t = trow_tests::Trow::start(trow_tests::Topology::Split);
                let _logs = trow_tests::clients::LogsOnPanic::trow(&t);
                super::$scenario(&t.addr);
            }

            #[test]
            #[ignore = "reference run against CNCF distribution"]
            fn distribution() {
                let d = trow_tests::Distribution::start();
                let _logs = trow_tests::clients::LogsOnPanic::distribution(&d);
                super::$scenario(&d.addr);
            }
        }
    };
}

against_registries!(oras_artifacts);
against_registries!(crane_images);

// ---------------------------------------------------------------------------------------------
// oras

const ARTIFACT_TYPE: &str = "application/vnd.trow.test.artifact";
const SIGNATURE_TYPE: &str = "application/vnd.trow.test.signature";

/// `oras` with `args` and `--plain-http`, stdout parsed as JSON (`--format json`).
fn oras_json(w: &Workdir, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["--plain-http", "--format", "json"]);
    w.run_json("oras", a)
}

/// The file `name` of the working dir `oras pull` wrote to `dir`.
fn pulled(w: &Workdir, dir: &str, name: &str) -> Vec<u8> {
    let p = w.path().join(dir).join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("oras pull wrote no {}: {e}", p.display()))
}

/// The referrer digests `oras discover` lists for `reference`, with their artifact types.
fn discover(w: &Workdir, reference: &str) -> Vec<(String, String)> {
    let tree = oras_json(w, &["discover", reference]);
    tree["referrers"]
        .as_array()
        .unwrap_or_else(|| panic!("oras discover printed no referrers: {tree}"))
        .iter()
        .map(|r| {
            (
                r["digest"].as_str().unwrap_or_default().to_string(),
                r["artifactType"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// `oras push` an artifact with a type and annotations, `attach` a signature to it, `discover`
/// it, `pull` it back, and `cp` it (with its referrers) to another repository.
fn oras_artifacts(addr: &str) {
    let w = Workdir::new();
    let mut rng = Rng::new();
    let text = format!("hello from trow {}\n", rng.next_u64()).into_bytes();
    let blob = rng.bytes(300_000);
    w.write("readme.txt", &text);
    w.write("data.bin", &blob);
    let src = format!("{addr}/oras/artifact:v1");

    let pushed = oras_json(
        &w,
        &[
            "push",
            &src,
            "--artifact-type",
            ARTIFACT_TYPE,
            "--annotation",
            "org.opencontainers.image.description=a test artifact",
            "--annotation",
            "com.example.build=42",
            "readme.txt:text/plain",
            "data.bin",
        ],
    );
    let digest = pushed["digest"].as_str().expect("push digest").to_string();

    // The registry serves the manifest oras pushed: its digest, type, annotations and layers.
    let manifest = w.run("oras", ["manifest", "fetch", "--plain-http", &src]);
    assert_eq!(
        sha256_digest(manifest.as_bytes()),
        digest,
        "manifest served by tag"
    );
    let m: Value = serde_json::from_str(&manifest).expect("manifest JSON");
    assert_eq!(m["artifactType"], ARTIFACT_TYPE, "{m}");
    assert_eq!(m["annotations"]["com.example.build"], "42", "{m}");
    assert_eq!(
        m["annotations"]["org.opencontainers.image.description"],
        "a test artifact"
    );
    let layers: Vec<&str> = m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(layers, [sha256_digest(&text), sha256_digest(&blob)], "{m}");

    // A referrer: oras attach, then oras discover through the referrers API.
    w.write("signature.txt", b"signed, trow tests\n");
    let attached = oras_json(
        &w,
        &[
            "attach",
            &src,
            "--artifact-type",
            SIGNATURE_TYPE,
            "--annotation",
            "com.example.signer=tests",
            "signature.txt",
        ],
    );
    let sig = attached["digest"]
        .as_str()
        .expect("attach digest")
        .to_string();
    assert_eq!(
        discover(&w, &src),
        [(sig.clone(), SIGNATURE_TYPE.to_string())]
    );

    // Pull gives back the bytes pushed.
    w.run("oras", ["pull", "--plain-http", &src, "-o", "pulled"]);
    assert_eq!(pulled(&w, "pulled", "readme.txt"), text);
    assert_eq!(pulled(&w, "pulled", "data.bin"), blob);

    // Copy to another repository with its referrers; the copy is the same artifact.
    let dst = format!("{addr}/oras/copied:v1");
    w.run(
        "oras",
        [
            "cp",
            "-r",
            "--from-plain-http",
            "--to-plain-http",
            &src,
            &dst,
        ],
    );
    let resolved = w.run("oras", ["resolve", "--plain-http", &dst]);
    assert_eq!(resolved.trim(), digest, "oras resolve of the copy");
    assert_eq!(discover(&w, &dst), [(sig, SIGNATURE_TYPE.to_string())]);
    w.run("oras", ["pull", "--plain-http", &dst, "-o", "copied"]);
    assert_eq!(pulled(&w, "copied", "readme.txt"), text);
    assert_eq!(pulled(&w, "copied", "data.bin"), blob);
}

// ---------------------------------------------------------------------------------------------
// crane

/// `crane --insecure` with `args`; returns stdout.
fn crane(w: &Workdir, args: &[&str]) -> String {
    let mut a = vec!["--insecure"];
    a.extend_from_slice(args);
    w.run("crane", a)
}

/// `crane manifest` of `reference` must be exactly `expected`.
fn assert_crane_manifest(w: &Workdir, reference: &str, expected: &[u8]) {
    let served = crane(w, &["manifest", reference]);
    assert_eq!(
        served.as_bytes(),
        expected,
        "crane manifest {reference} differs from the source's"
    );
}

/// Lines of `s`, trimmed, for listings.
fn lines(s: &str) -> Vec<String> {
    s.lines().map(|l| l.trim().to_string()).collect()
}

/// `crane copy` an image and a multi-platform index from a CNCF distribution (filled by skopeo
/// from an OCI layout) into the registry, then within it; `append` a layer; `ls`, `catalog`,
/// `digest`, `manifest`, `blob`, `export`; `delete` by digest.
fn crane_images(addr: &str) {
    let w = Workdir::new();
    let layout = w.path().join("layout");
    let img = images::build_image(&layout, "img", "amd64");
    let idx = images::build_index(&layout, "idx");
    let upstream = Distribution::start();
    for (tag, all) in [("img", false), ("idx", true)] {
        let mut cmd = skopeo(["copy", "--dest-tls-verify=false"]);
        if all {
            cmd.arg("--all");
        }
        cmd.arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/src/{tag}:1", upstream.addr));
        run(&mut cmd);
    }

    // An image: same digest, same manifest bytes, same layer bytes.
    let image = format!("{addr}/crane/image:1");
    crane(&w, &["copy", &upstream.image("src/img:1"), &image]);
    assert_eq!(crane(&w, &["digest", &image]).trim(), img.manifest_digest);
    assert_crane_manifest(&w, &image, &img.manifest_bytes());
    for layer in &img.layers {
        let mut cmd = w.cmd(
            "crane",
            ["--insecure", "blob", &format!("{addr}/crane/image@{layer}")],
        );
        let out = output(&mut cmd);
        assert!(out.status.success(), "{}", describe(&cmd, &out));
        assert_eq!(
            out.stdout,
            images::read_blob(&layout, layer),
            "layer {layer} bytes"
        );
    }

    // A multi-platform index: the index and every child manifest arrive unchanged.
    let index = format!("{addr}/crane/index:1");
    crane(&w, &["copy", &upstream.image("src/idx:1"), &index]);
    assert_eq!(crane(&w, &["digest", &index]).trim(), idx.index_digest);
    assert_crane_manifest(&w, &index, &idx.index_bytes());
    for child in &idx.images {
        assert_crane_manifest(
            &w,
            &format!("{addr}/crane/index@{}", child.manifest_digest),
            &child.manifest_bytes(),
        );
    }
    // Within the registry (blobs cross-mounted), the copy is the same index.
    let mounted = format!("{addr}/crane/index-copy:1");
    crane(&w, &["copy", &index, &mounted]);
    assert_eq!(crane(&w, &["digest", &mounted]).trim(), idx.index_digest);

    // append: a new layer on the copied image; export shows the file with its bytes.
    let file = Rng::new().bytes(10_000);
    std::fs::create_dir_all(w.path().join("layer")).expect("layer dir");
    w.write("layer/appended.bin", &file);
    run(std::process::Command::new("tar")
        .args(["-cf", "layer.tar", "-C", "layer", "appended.bin"])
        .current_dir(w.path()));
    let appended = format!("{addr}/crane/appended:2");
    let out = crane(
        &w,
        &["append", "-b", &image, "-f", "layer.tar", "-t", &appended],
    );
    let digest = crane(&w, &["digest", &appended]).trim().to_string();
    assert!(
        out.trim().ends_with(&format!("@{digest}")),
        "crane append printed {out:?}, registry says {digest}"
    );
    let m: Value =
        serde_json::from_str(&crane(&w, &["manifest", &appended])).expect("manifest JSON");
    let layers = m["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), img.layers.len() + 1, "{m}");
    crane(&w, &["export", &appended, "export.tar"]);
    std::fs::create_dir_all(w.path().join("export")).expect("export dir");
    run(std::process::Command::new("tar")
        .args(["-xf", "export.tar", "-C", "export", "appended.bin"])
        .current_dir(w.path()));
    assert_eq!(
        std::fs::read(w.path().join("export/appended.bin")).expect("exported file"),
        file
    );

    // Listings.
    assert_eq!(
        lines(&crane(&w, &["ls", &format!("{addr}/crane/image")])),
        ["1"]
    );
    assert_eq!(
        lines(&crane(&w, &["ls", &format!("{addr}/crane/appended")])),
        ["2"]
    );
    let catalog = lines(&crane(&w, &["catalog", addr]));
    for repo in [
        "crane/image",
        "crane/index",
        "crane/index-copy",
        "crane/appended",
    ] {
        assert!(
            catalog.iter().any(|r| r == repo),
            "{repo} not in catalog {catalog:?}"
        );
    }

    // delete by digest: the manifest and its tag are gone, the other repositories untouched.
    let by_digest = format!("{addr}/crane/appended@{digest}");
    crane(&w, &["delete", &by_digest]);
    let mut cmd = w.cmd("crane", ["--insecure", "manifest", &by_digest]);
    let out = output(&mut cmd);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("MANIFEST_UNKNOWN"),
        "deleted manifest still served: {}",
        describe(&cmd, &out)
    );
    assert!(
        lines(&crane(&w, &["ls", &format!("{addr}/crane/appended")]))
            .iter()
            .all(|t| t != "2"),
        "tag 2 still listed after its manifest was deleted"
    );
    assert_eq!(crane(&w, &["digest", &image]).trim(), img.manifest_digest);
}

// ---------------------------------------------------------------------------------------------
// grpcurl

/// The `grpcurl` command lines README.md gives operators, with their example address.
fn readme_grpcurl_commands() -> Vec<Vec<String>> {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&readme).expect("read README.md");
    let cmds: Vec<Vec<String>> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("grpcurl "))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    assert!(
        cmds.iter().any(|c| c.last().is_some_and(|a| a == "list"))
            && cmds
                .iter()
                .any(|c| c.last().is_some_and(|a| a == "grpc.health.v1.Health/Check")),
        "README.md no longer shows `grpcurl ... list` and `... grpc.health.v1.Health/Check`"
    );
    cmds
}

/// Every `rpc Name(` declared in the storage service's .proto file.
fn proto_rpcs() -> Vec<String> {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/proto/trow/storage/v1/storage.proto");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    let rpcs: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("rpc "))
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    assert!(!rpcs.is_empty(), "no rpc found in {}", p.display());
    rpcs
}

/// README.md's grpcurl commands, pointed at the storage port, and `describe` of the service:
/// reflection lists the services, describes every rpc of the .proto, health answers SERVING.
fn grpcurl_storage(topology: Topology) {
    let trow = Trow::start(topology);
    let _logs = trow_tests::clients::LogsOnPanic::trow(&trow);
    let w = Workdir::new();
    let mut ran = 0;
    for cmd in readme_grpcurl_commands() {
        let args: Vec<String> = cmd[1..]
            .iter()
            .map(|a| {
                if a.starts_with("127.0.0.1:") || a.starts_with("localhost:") {
                    trow.storage_addr.clone()
                } else {
                    a.clone()
                }
            })
            .collect();
        let out = w.run("grpcurl", &args);
        match args.last().map(String::as_str) {
            Some("list") => {
                let services = lines(&out);
                for s in [
                    "grpc.health.v1.Health",
                    "grpc.reflection.v1.ServerReflection",
                    "trow.storage.v1.Storage",
                ] {
                    assert!(services.iter().any(|x| x == s), "{s} not in {services:?}");
                }
                // Only what answers here: storage and its audit log; the proxy and admission
                // contracts live elsewhere.
                assert!(
                    services.iter().any(|x| x == "trow.audit.v1.Audit"),
                    "no audit service in {services:?}"
                );
                assert!(
                    !services.iter().any(|x| x.starts_with("trow.")
                        && x != "trow.storage.v1.Storage"
                        && x != "trow.audit.v1.Audit"),
                    "storage lists another service: {services:?}"
                );
            }
            Some("grpc.health.v1.Health/Check") => {
                let v: Value = serde_json::from_str(&out).expect("health JSON");
                assert_eq!(v["status"], "SERVING", "{out}");
            }
            other => {
                panic!("README.md shows a grpcurl command this test does not check: {other:?}")
            }
        }
        ran += 1;
    }
    assert!(ran >= 2);

    let out = w.run(
        "grpcurl",
        [
            "-plaintext",
            &trow.storage_addr,
            "describe",
            "trow.storage.v1.Storage",
        ],
    );
    assert!(
        out.starts_with("trow.storage.v1.Storage is a service:"),
        "{out}"
    );
    for rpc in proto_rpcs() {
        assert!(
            out.contains(&format!("rpc {rpc} (")),
            "describe lacks rpc {rpc}:\n{out}"
        );
    }
    let out = w.run(
        "grpcurl",
        [
            "-plaintext",
            "-d",
            r#"{"service":"trow.storage.v1.Storage"}"#,
            &trow.storage_addr,
            "grpc.health.v1.Health/Check",
        ],
    );
    let v: Value = serde_json::from_str(&out).expect("health JSON");
    assert_eq!(v["status"], "SERVING", "{out}");
}

#[test]
fn grpcurl_storage_one_process() {
    grpcurl_storage(Topology::OneProcess);
}

#[test]
fn grpcurl_storage_split() {
    grpcurl_storage(Topology::Split);
}
