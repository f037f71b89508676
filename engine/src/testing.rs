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
