//! The accounts that may log in: one from `--user`/`--password`, any number from an htpasswd
//! file (bcrypt entries only), and the check of a name and password against them.
//!
//! A password is never kept in the clear: the `--password` one as its SHA-256 (compared in
//! constant time), htpasswd ones as their bcrypt hash. bcrypt is slow on purpose (tens of
//! milliseconds at the usual cost), so it runs on the blocking pool, never on a runtime thread;
//! a name that does not exist costs a bcrypt check too (against an existing hash, whose result
//! is thrown away), so the time an answer takes does not tell which names exist.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

/// Why the accounts could not be loaded. Never carries a password or a hash.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("cannot read the password file {path}: {source}")]
    PasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the password file {0} is empty")]
    EmptyPasswordFile(PathBuf),
    #[error("the password is empty")]
    EmptyPassword,
    #[error("a user name may not be empty or contain ':'")]
    BadName,
    #[error("cannot read the htpasswd file {path}: {source}")]
    Htpasswd {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {reason}")]
    HtpasswdLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("user {0:?} is defined twice")]
    Duplicate(String),
}

/// A stored secret.
enum Secret {
    /// SHA-256 of a password given on the command line (or in its file).
    Sha256([u8; 32]),
    /// A bcrypt hash from an htpasswd file (`$2a$`, `$2b$`, `$2x$`, `$2y$`).
    Bcrypt(String),
}

/// The accounts. Empty: authentication is off.
#[derive(Default)]
pub struct Users {
    accounts: BTreeMap<String, Secret>,
    /// A bcrypt hash of the file, checked for names that do not exist.
    decoy: Option<String>,
}

impl std::fmt::Debug for Users {
    /// Names only: secrets never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.accounts.keys()).finish()
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, b);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// `password`, or the contents of the file it names as `file://PATH` (`file:///run/secret`),
/// without the line ending editors add.
pub fn password_value(password: &str) -> Result<String, UsersError> {
    let Some(path) = password.strip_prefix("file://") else {
        return Ok(password.to_string());
    };
    let path = PathBuf::from(path);
    let text = std::fs::read_to_string(&path).map_err(|source| UsersError::PasswordFile {
        path: path.clone(),
        source,
    })?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(UsersError::EmptyPasswordFile(path));
    }
    Ok(value.to_string())
}

impl Users {
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// Adds the `--user`/`--password` account; `password` may be `file://PATH`.
    pub fn add(&mut self, name: &str, password: &str) -> Result<(), UsersError> {
        let password = password_value(password)?;
        if password.is_empty() {
            return Err(UsersError::EmptyPassword);
        }
        self.insert(name, Secret::Sha256(sha256(password.as_bytes())))
    }

    fn insert(&mut self, name: &str, secret: Secret) -> Result<(), UsersError> {
        if name.is_empty() || name.contains(':') {
            return Err(UsersError::BadName);
        }
        if self.accounts.insert(name.to_string(), secret).is_some() {
            return Err(UsersError::Duplicate(name.to_string()));
        }
        Ok(())
    }

    /// Adds every account of the htpasswd file at `path`: `name:hash` lines, bcrypt hashes only
    /// (`htpasswd -B`); blank lines and `#` comments are skipped. Any other hash (MD5 `$apr1$`,
    /// SHA-1 `{SHA}`, crypt, plain text) stops the start-up, naming the line.
    pub fn load_htpasswd(&mut self, path: &Path) -> Result<(), UsersError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Htpasswd {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |line: usize, reason: &str| UsersError::HtpasswdLine {
            path: path.to_path_buf(),
            line,
            reason: reason.to_string(),
        };
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, hash)) = line.split_once(':') else {
                return Err(bad(i + 1, "expected NAME:HASH"));
            };
            let bcrypt_prefix = ["$2a$", "$2b$", "$2x$", "$2y$"]
                .iter()
                .any(|p| hash.starts_with(p));
            if !bcrypt_prefix || hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(bad(
                    i + 1,
                    &format!(
                        "user {name:?}: not a bcrypt hash (only bcrypt is accepted: `htpasswd -B`)"
                    ),
                ));
            }
            self.insert(name, Secret::Bcrypt(hash.to_string()))
                .map_err(|e| bad(i + 1, &e.to_string()))?;
            self.decoy.get_or_insert_with(|| hash.to_string());
        }
        Ok(())
    }

    /// Whether `name` is one of these accounts.
    pub fn contains(&self, name: &str) -> bool {
        self.accounts.contains_key(name)
    }

    /// Whether `name` exists and `password` is its password.
    pub async fn verify(&self, name: &str, password: &str) -> bool {
        match self.accounts.get(name) {
            None => {
                if let Some(decoy) = &self.decoy {
                    bcrypt_check(password, decoy).await;
                }
                false
            }
            Some(Secret::Sha256(want)) => sha256(password.as_bytes()).ct_eq(want).into(),
            Some(Secret::Bcrypt(hash)) => bcrypt_check(password, hash).await,
        }
    }
}

/// Whether `password` matches the bcrypt `hash`, checked on the blocking pool.
async fn bcrypt_check(password: &str, hash: &str) -> bool {
    let (password, hash) = (password.to_string(), hash.to_string());
    tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn htpasswd(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("htpasswd");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[tokio::test]
    async fn plain_and_file_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "from-file\n").unwrap();
        let mut u = Users::default();
        u.add("alice", "s3cret").unwrap();
        u.add("bob", &format!("file://{}", f.display())).unwrap();
        assert!(u.verify("alice", "s3cret").await);
        assert!(!u.verify("alice", "s3cre").await);
        assert!(!u.verify("alice", "from-file").await);
        assert!(u.verify("bob", "from-file").await);
        assert!(!u.verify("carol", "s3cret").await);
        assert!(matches!(
            u.add("alice", "again"),
            Err(UsersError::Duplicate(_))
        ));
        assert!(matches!(
            Users::default().add("x", "file:///nonexistent/pw"),
            Err(UsersError::PasswordFile { .. })
        ));
        assert_eq!(format!("{u:?}"), r#"["alice", "bob"]"#);
    }

    #[tokio::test]
    async fn htpasswd_bcrypt_only() {
        let hash = bcrypt::hash("pa:ss", 4).unwrap();
        let (_d, p) = htpasswd(&format!("# team\n\ncarol:{hash}\n"));
        let mut u = Users::default();
        u.load_htpasswd(&p).unwrap();
        assert!(u.verify("carol", "pa:ss").await);
        assert!(!u.verify("carol", "pa").await);
        // Another name with carol's password: the decoy check never lets it in.
        assert!(!u.verify("dave", "pa:ss").await);

        for (text, line) in [
            ("a:$apr1$abc$0123456789abcdef012345\n", 1),
            (
                &format!("ok:{hash}\n\nb:{{SHA}}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n"),
                3,
            ),
            ("c:plaintext\n", 1),
            ("no-colon\n", 1),
            (&format!("d:{hash}\nd:{hash}\n"), 2),
        ] {
            let (_d, p) = htpasswd(text);
            let err = Users::default().load_htpasswd(&p).unwrap_err();
            match &err {
                UsersError::HtpasswdLine { line: l, .. } => assert_eq!(*l, line, "{err}"),
                other => panic!("{other}"),
            }
            assert!(!err.to_string().contains("SHA}W6"), "{err}");
        }
    }
}
