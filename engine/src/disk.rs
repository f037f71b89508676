//! The engine's only door to the disk: glommio DMA files (O_DIRECT through io_uring). Every
//! failure becomes an `Error::Io` naming the operation and the file.
//!
//! Fault model: a failed write or fdatasync leaves the file in an unknown state; callers
//! poison themselves rather than retry (see `Error::Poisoned`).

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};

use crate::error::{Error, Result};

/// Largest single DMA transfer issued; bigger reads and writes are split.
const TRANSFER_MAX: usize = 1 << 20;

/// A DMA file with its path kept for error messages; clones share the file.
#[derive(Clone)]
pub(crate) struct File {
    file: Rc<DmaFile>,
    path: PathBuf,
}

impl File {
    /// Opens (creating if asked) a file for O_DIRECT reads and writes.
    pub(crate) async fn open(path: &Path, create: bool) -> Result<File> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .dma_open(path)
            .await
            .map_err(|error| Error::io("open", path, error))?;
        Ok(File {
            file: Rc::new(file),
            path: path.to_path_buf(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) async fn size(&self) -> Result<u64> {
        self.file
            .file_size()
            .await
            .map_err(|error| Error::io("stat", &self.path, error))
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
        let mut done = 0;
        while done < bytes.len() {
            let len = (bytes.len() - done).min(TRANSFER_MAX);
            let mut buffer = self.file.alloc_dma_buffer(len);
            buffer
                .as_bytes_mut()
                .copy_from_slice(&bytes[done..done + len]);
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
        self.file
            .fdatasync()
            .await
            .map_err(|error| Error::io("fdatasync", &self.path, error))
    }

    /// Writes zeros over `[offset, offset + len)` (block-aligned). Used to preallocate: later
    /// overwrites of written blocks need no file-size change, so their fdatasync is cheap.
    pub(crate) async fn write_zeros(&self, offset: u64, len: u64) -> Result<()> {
        let zeros = vec![0u8; TRANSFER_MAX];
        let mut done = 0;
        while done < len {
            let chunk = (len - done).min(TRANSFER_MAX as u64) as usize;
            self.write(offset + done, &zeros[..chunk]).await?;
            done += chunk as u64;
        }
        Ok(())
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
        std::fs::write(&path, [0u8; BLOCK_PROBE])
            .map_err(|error| Error::io("write", &path, error))?;
    }
    let file = File::open(&path, false).await?;
    file.read(0, BLOCK_PROBE).await?;
    Ok(())
}

const BLOCK_PROBE: usize = 4096;

/// Makes a directory entry change (a created or renamed file) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|error| Error::io("fsync directory", dir, error))
}
