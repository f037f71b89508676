//! Helpers for the engine's tests: a glommio executor and scratch directories.

use std::future::Future;
use std::path::PathBuf;

/// Runs `future` on a fresh single-core executor with a small registered I/O buffer (the
/// default 10 MiB exceeds some machines' memlock limit).
pub(crate) fn run<T: 'static>(future: impl Future<Output = T> + 'static) -> T {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .expect("executor starts")
        .run(future)
}

/// A fresh, empty directory under the system's temporary directory, unique per test name and
/// process, removed with everything in it when the returned guard is dropped.
pub(crate) fn scratch_dir(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("tessera-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    Scratch(dir)
}

/// A scratch directory (`scratch_dir`), which derefs to its path.
pub(crate) struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = PathBuf;

    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A scratch directory on a fresh ext4 filesystem of `mib` MiB (a loop device), for tests of a
/// full disk: `None`, the test saying it is skipped, unless this process may mount.
pub(crate) fn small_filesystem(name: &str, mib: u64) -> Option<Mounted> {
    // SAFETY: geteuid only reads the process's credentials.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: a small filesystem needs root to mount");
        return None;
    }
    let base = std::env::temp_dir().join(format!("tessera-fs-{}-{name}", std::process::id()));
    let mounted = Mounted { image: base.with_extension("img"), dir: base.with_extension("mnt") };
    std::fs::File::create(&mounted.image).and_then(|image| image.set_len(mib << 20)).expect("image file");
    std::fs::create_dir_all(&mounted.dir).expect("mount point");
    // No blocks reserved for root, who runs the tests here and would otherwise use them.
    let script = format!(
        "mkfs.ext4 -q -F -m 0 {image} && mount -o loop {image} {dir}",
        image = mounted.image.display(),
        dir = mounted.dir.display()
    );
    let status = std::process::Command::new("sh").args(["-c", &script]).status().expect("sh");
    assert!(status.success(), "{script} failed");
    Some(mounted)
}

/// A mounted filesystem image (`small_filesystem`), unmounted and removed when dropped.
pub(crate) struct Mounted {
    image: PathBuf,
    pub(crate) dir: PathBuf,
}

impl Mounted {
    /// Fills the filesystem to the last block with `filler` (appended to); its path.
    pub(crate) fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let filler = self.dir.join("filler");
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&filler).expect("filler");
        for size in [1 << 20, 4096] {
            while file.write_all(&vec![0x55u8; size]).is_ok() {}
        }
        filler
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
        let _ = std::fs::remove_file(&self.image);
    }
}
