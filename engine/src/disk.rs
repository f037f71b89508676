//! The engine's only door to the disk: glommio DMA files (O_DIRECT through io_uring). Every
//! failure becomes an `Error::Io` naming the operation and the file.
//!
//! Fault model: a failed write or fdatasync leaves the file in an unknown state; callers
//! poison themselves rather than retry (see `Error::Poisoned`). The exception is a full disk:
//! space is reserved (`File::preallocate`) before writes that would need it, and a refused
//! reservation wrote nothing, so its caller waits for space and tries again.
//!
//! Every file is held with an exclusive `flock` on the descriptor that does its I/O. Besides
//! keeping two processes off one data directory, this closes a subtle hole: when a process is
//! killed, its in-flight io_uring writes may still land after it has been reaped. Those
//! requests hold the open file, and the lock is released only when the last reference to the
//! file goes, so a successor's `open` waits until no write of its predecessor is in flight.
//!
//! Renames, unlinks and directory fsyncs made while a store serves run on the executor's
//! helper thread (`off_reactor`), so the reactor keeps serving while ext4 commits its journal.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use glommio::io::{DmaFile, OpenOptions};

use crate::error::{Error, Result};

/// Largest single DMA transfer issued; bigger reads and writes are split.
const TRANSFER_MAX: usize = 1 << 20;
/// Most bytes a background writer (a checkpoint, a new segment's zero-fill) leaves written and
/// unflushed: the device's next cache flush pays for them, and that flush may be a WAL write's.
/// 4 MiB gave replicated puts a higher p99 than 512 KiB in every paired run (bench/RESULTS.md).
pub(crate) const UNFLUSHED_BYTES_MAX: usize = 512 << 10;
/// How long `open` waits for another holder of a file's lock before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// A DMA file with its path kept for error messages; clones share the file.
#[derive(Clone)]
pub(crate) struct File {
    file: Rc<DmaFile>,
    path: PathBuf,
}

impl File {
    /// Opens (creating if asked) a file for O_DIRECT reads and writes.
    pub(crate) async fn open(path: &Path, create: bool) -> Result<File> {
        Self::open_with(path, create, 0).await
    }

    /// Opens an existing file for O_DIRECT reads and O_DSYNC writes: a write completes only
    /// once its data is durable (the device cache flushed), as if followed by fdatasync.
    pub(crate) async fn open_synced(path: &Path) -> Result<File> {
        Self::open_with(path, false, libc::O_DSYNC).await
    }

    async fn open_with(path: &Path, create: bool, flags: i32) -> Result<File> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .custom_flags(flags)
            .dma_open(path)
            .await
            .map_err(|error| Error::io("open", path, error))?;
        lock_exclusive(file.as_raw_fd(), path).await?;
        Ok(File { file: Rc::new(file), path: path.to_path_buf() })
    }

    /// Closes the descriptor now (a dropped file is closed only on a later reactor turn, which
    /// never comes if the executor ends first).
    /// The lock is released first, explicitly: with no I/O in flight that is safe, and it
    /// frees the file for a successor even while a clone of this handle is still alive.
    pub(crate) async fn close(self) -> Result<()> {
        // SAFETY: flock only reads the descriptor number, which `self.file` keeps open.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
        self.file.close_rc().await.map(drop).map_err(|error| Error::io("close", &self.path, error))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) async fn size(&self) -> Result<u64> {
        self.file.file_size().await.map_err(|error| Error::io("stat", &self.path, error))
    }

    /// Reads `len` bytes at `offset` (both block-aligned); a short file yields fewer bytes.
    pub(crate) async fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() < len {
            let want = (len - bytes.len()).min(TRANSFER_MAX);
            let position = offset + bytes.len() as u64;
            let chunk = self
                .file
                .read_at_aligned(position, want)
                .await
                .map_err(|error| Error::io("read", &self.path, error))?;
            bytes.extend_from_slice(&chunk);
            if chunk.len() < want {
                break;
            }
        }
        Ok(bytes)
    }

    /// Writes `bytes` at `offset`; `offset` is block-aligned and `bytes` a whole number of
    /// blocks.
    pub(crate) async fn write(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        self.write_parts(offset, &[bytes], |_| ()).await
    }

    /// Writes the concatenation of `parts` at `offset` (block-aligned, a whole number of
    /// blocks in all), copying each part once, straight into the DMA buffers; `finish` is
    /// applied to the copy of each part that lies whole within one buffer (every part, when
    /// parts are blocks).
    pub(crate) async fn write_parts(&self, offset: u64, parts: &[&[u8]], finish: impl Fn(&mut [u8])) -> Result<()> {
        let total: usize = parts.iter().map(|part| part.len()).sum();
        let (mut done, mut part, mut within) = (0, 0, 0);
        while done < total {
            let len = (total - done).min(TRANSFER_MAX);
            let mut buffer = self.file.alloc_dma_buffer(len);
            let target = buffer.as_bytes_mut();
            let mut filled = 0;
            while filled < len {
                let source = &parts[part][within..];
                let take = source.len().min(len - filled);
                target[filled..filled + take].copy_from_slice(&source[..take]);
                if take == parts[part].len() {
                    finish(&mut target[filled..filled + take]);
                }
                filled += take;
                within += take;
                if within == parts[part].len() {
                    part += 1;
                    within = 0;
                }
            }
            let written = self
                .file
                .write_at(buffer, offset + done as u64)
                .await
                .map_err(|error| Error::io("write", &self.path, error))?;
            if written != len {
                return Err(Error::io(
                    "write",
                    &self.path,
                    std::io::Error::other(format!("short write: {written} of {len} bytes")),
                ));
            }
            done += len;
        }
        Ok(())
    }

    pub(crate) async fn fdatasync(&self) -> Result<()> {
        self.file.fdatasync().await.map_err(|error| Error::io("fdatasync", &self.path, error))
    }

    /// Reserves the file's blocks up to `len` bytes (growing its size to at least `len`), so
    /// that writes within them need no allocation: a disk too full fails here, at once and
    /// cleanly (ENOSPC, `Error::is_no_space`), rather than part-way through later writes.
    pub(crate) async fn preallocate(&self, len: u64) -> Result<()> {
        self.file.pre_allocate(len, false).await.map_err(|error| Error::io("preallocate", &self.path, error))
    }

    /// Writes zeros over `[offset, offset + len)` (block-aligned). Used to preallocate: later
    /// overwrites of written blocks need no file-size change, so their fdatasync is cheap.
    pub(crate) async fn write_zeros(&self, offset: u64, len: u64) -> Result<()> {
        let zeros = vec![0u8; UNFLUSHED_BYTES_MAX];
        let mut done = 0;
        while done < len {
            let chunk = (len - done).min(UNFLUSHED_BYTES_MAX as u64) as usize;
            self.write(offset + done, &zeros[..chunk]).await?;
            done += chunk as u64;
            // Flushed as it goes (`UNFLUSHED_BYTES_MAX`): 64 MiB flushed only at the end once
            // stalled every write of a 3-node cluster for ~200 ms.
            self.fdatasync().await?;
        }
        Ok(())
    }
}

/// Takes an exclusive `flock`, waiting up to `LOCK_WAIT` for a predecessor's in-flight I/O.
async fn lock_exclusive(fd: i32, path: &Path) -> Result<()> {
    let mut waited = Duration::ZERO;
    loop {
        // SAFETY: flock only reads the descriptor number, which the caller keeps open.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(Error::io("lock", path, error));
        }
        if waited >= LOCK_WAIT {
            return Err(Error::io(
                "lock",
                path,
                std::io::Error::other(
                    "the file is in use by another process (is another Tessera running on this directory?)",
                ),
            ));
        }
        glommio::timer::sleep(Duration::from_millis(5)).await;
        waited += Duration::from_millis(5);
    }
}

/// Settles, before any other DMA file on the device of `dir` is opened, whether glommio may
/// use its polled ring for that device. glommio decides with a test read at offset 0 of the
/// first file it opens there and remembers the answer for the process; on an empty file that
/// read succeeds trivially and the polled ring is chosen even where the device cannot poll,
/// so every later read fails with EOPNOTSUPP. A one-block file makes the test read real.
pub(crate) async fn probe_device(dir: &Path) -> Result<()> {
    let path = dir.join("dma-probe");
    let existing = std::fs::metadata(&path).map(|meta| meta.len()).unwrap_or(0);
    if existing < BLOCK_PROBE as u64 {
        std::fs::write(&path, [0u8; BLOCK_PROBE]).map_err(|error| Error::io("write", &path, error))?;
    }
    let file = File::open(&path, false).await?;
    file.read(0, BLOCK_PROBE).await?;
    file.close().await
}

const BLOCK_PROBE: usize = 4096;

/// Creates `dir` (and missing parents) if it does not exist, and makes its entry durable.
pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|error| Error::io("create directory", dir, error))?;
    let parent = dir.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    sync_dir(parent)
}

/// Runs blocking filesystem calls (rename, unlink, a directory fsync, which waits for an ext4
/// journal commit) on the executor's helper thread, so the core's reactor keeps serving
/// meanwhile. For calls made while the store serves; opening may block.
pub(crate) async fn off_reactor<T: Send + 'static>(call: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    glommio::executor().spawn_blocking(call).await
}

/// `bytes` for a message: in MiB, or KiB below one MiB.
pub(crate) fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// What is free on the filesystem holding `path`, for messages about a full disk.
pub(crate) fn free_text(path: &Path) -> String {
    free_bytes(path).map_or_else(|| "unknown".into(), size_text)
}

/// Bytes free for an unprivileged writer on the filesystem holding `path` (statvfs).
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct it is given and reads the NUL-terminated
    // path, which `name` keeps alive for the call.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(name.as_ptr(), &mut stat) } == 0).then(|| stat.f_bavail * stat.f_frsize)
}

/// Makes a directory entry change (a created or renamed file) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|error| Error::io("fsync directory", dir, error))
}
