//! A small filesystem of its own for one test: what a full disk does to Trow is tested on a
//! tmpfs of a few MiB, not on the machine's disk.

use std::path::PathBuf;
use std::process::Command;

/// A tmpfs mounted for one test (tests run as root); unmounted on drop.
pub struct Tmpfs {
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`8m`, `24m`) at a fresh `data` directory.
    pub fn mount(size: &str) -> Tmpfs {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(&dir).expect("mount point");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount -t tmpfs failed (tests run as root)");
        Tmpfs { dir, _tmp: tmp }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
