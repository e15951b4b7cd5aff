//! Where the journal's files live: a flat directory of named files behind the [`Storage`]
//! trait, so the same journal, snapshot and recovery code runs over real files
//! ([`DiskStorage`]), over memory that loses what was not synced when it "crashes"
//! ([`super::MemoryStorage`], for tests and the simulation), and through a fault-injecting
//! wrapper ([`super::FaultyStorage`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::StoreError;

/// A directory of files, as the journal uses it. Operations are blocking; the file
/// implementation is only called from the journal's own threads (and once, at start-up,
/// from the caller of `open`).
///
/// Durability contract (what a crash may lose), which [`super::MemoryStorage`] simulates:
/// bytes written to a file survive only once [`StorageFile::sync`] returned `Ok`; a file
/// created, renamed or removed stays so only once [`Storage::sync_dir`] returned `Ok`.
pub trait Storage: Clone + Send + Sync + 'static {
    /// An open file.
    type File: StorageFile;

    /// The names of the files in the directory, in no particular order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// The whole contents of file `name`.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Creates file `name` empty (truncating it if it exists), open for appending.
    fn create(&self, name: &str) -> io::Result<Self::File>;
    /// Opens the existing file `name` for appending at its end.
    fn open_append(&self, name: &str) -> io::Result<Self::File>;
    /// Renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes file `name`.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self) -> io::Result<()>;
    /// A human-readable location of file `name`, for messages.
    fn describe(&self, name: &str) -> String;
}

/// A file open for appending.
pub trait StorageFile: Send + 'static {
    /// Appends all of `bytes`. On error an unknown prefix may have been appended.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes; later appends continue from there.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// From now on, keeps about `bytes` of zeros ahead of the end of what was appended, as
    /// the file's tail, where appends then overwrite them (best effort: without the space,
    /// appends just grow the file). A reader of the file sees the zeros after the appended
    /// bytes. Storage whose syncs cost nothing more for a growing file ignores it.
    fn preallocate(&mut self, bytes: u64) {
        let _ = bytes;
    }
}

/// Files in a directory on disk.
///
/// Holds an exclusive lock on `DIR/LOCK` for as long as any clone lives, so two switches
/// cannot write one journal.
#[derive(Clone, Debug)]
pub struct DiskStorage {
    dir: PathBuf,
    _lock: Arc<File>,
}

/// The name of the lock file in a state directory.
pub const LOCK_FILE: &str = "LOCK";

impl DiskStorage {
    /// Opens the state directory `dir`, creating it (and its parents) if missing, and takes
    /// its lock.
    ///
    /// Fails with a clear error if `dir` exists but is not a directory, cannot be created,
    /// is not writable, or is locked by another process.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        match std::fs::metadata(dir) {
            Ok(metadata) if !metadata.is_dir() => {
                return Err(StoreError::NotADirectory {
                    path: dir.display().to_string(),
                })
            }
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                    action: "create the state directory",
                    path: dir.display().to_string(),
                    source,
                })?;
            }
            Err(source) => {
                return Err(StoreError::Io {
                    action: "inspect the state directory",
                    path: dir.display().to_string(),
                    source,
                })
            }
        }
        let lock_path = dir.join(LOCK_FILE);
        // Creating the lock file doubles as the writability check: it fails with a
        // permission error on a read-only directory or file system.
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|source| StoreError::Io {
                action: "write in the state directory",
                path: lock_path.display().to_string(),
                source,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: dir.display().to_string(),
                })
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(StoreError::Io {
                    action: "lock the state directory",
                    path: lock_path.display().to_string(),
                    source,
                })
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: Arc::new(lock),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Storage for DiskStorage {
    type File = DiskFile;

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Ok(name) = entry.file_name().into_string() {
                    names.push(name);
                }
            }
        }
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.path(name))
    }

    fn create(&self, name: &str) -> io::Result<DiskFile> {
        File::create(self.path(name))?;
        self.open_append(name)
    }

    fn open_append(&self, name: &str) -> io::Result<DiskFile> {
        // Not in append mode: appends may overwrite a preallocated tail, at `len`.
        let file = OpenOptions::new().write(true).open(self.path(name))?;
        let len = file.metadata()?.len();
        Ok(DiskFile {
            file,
            len,
            zeroed_to: len,
            preallocate: 0,
        })
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.path(from), self.path(to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.path(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn describe(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// A file of a [`DiskStorage`].
///
/// With [`StorageFile::preallocate`] (the journal's active segment), appends overwrite zeros
/// written ahead of them, and an `fdatasync` then flushes only the data: a sync of an
/// append that grows the file must also commit the new size to the filesystem's journal,
/// which on the development VM's ext4 made it about a third slower and dearer in CPU
/// (docs/performance.md).
#[derive(Debug)]
pub struct DiskFile {
    file: File,
    /// The end of what was appended: where the next append goes.
    len: u64,
    /// The file's zeroed tail ends here (it is `len` without preallocation).
    zeroed_to: u64,
    /// How far ahead of `len` to keep zeros (0: not at all).
    preallocate: u64,
}

/// Zeros are written in pieces of this size.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

impl DiskFile {
    /// Writes zeros from `zeroed_to` (never below `len`: those bytes hold data) to `to`.
    fn zero_fill(&mut self, to: u64) -> io::Result<()> {
        let mut at = self.zeroed_to.max(self.len);
        while at < to {
            let piece = (to - at).min(ZEROS.len() as u64) as usize;
            self.file.write_all_at(&ZEROS[..piece], at)?;
            at += piece as u64;
            self.zeroed_to = at;
        }
        Ok(())
    }
}

impl StorageFile for DiskFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let end = self.len + bytes.len() as u64;
        if self.preallocate > 0 && end > self.zeroed_to {
            // Best effort: on a full disk the append below still takes what space is left.
            if let Err(error) = self.zero_fill(end + self.preallocate) {
                tracing::debug!(%error, "cannot preallocate journal space");
            }
        }
        self.file.write_all_at(bytes, self.len)?;
        self.len = end;
        self.zeroed_to = self.zeroed_to.max(end);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.len = len;
        self.zeroed_to = len;
        Ok(())
    }

    fn preallocate(&mut self, bytes: u64) {
        self.preallocate = bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_disk(storage: &DiskStorage, name: &str) -> Vec<u8> {
        storage.read(name).unwrap()
    }

    #[test]
    fn preallocated_appends_overwrite_zeros_and_continue_after_a_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let storage = DiskStorage::open(dir.path()).unwrap();
        let mut file = storage.create("journal").unwrap();
        file.preallocate(4096);
        file.write_all(b"abc").unwrap();
        let mut expected = b"abc".to_vec();
        expected.resize(3 + 4096, 0);
        assert_eq!(on_disk(&storage, "journal"), expected);
        // Within the zeroed tail: no growth.
        file.write_all(b"de").unwrap();
        expected[3..5].copy_from_slice(b"de");
        assert_eq!(on_disk(&storage, "journal"), expected);
        file.sync().unwrap();
        // Past it: zeros again ahead of the new end.
        let long = vec![7u8; 5000];
        file.write_all(&long).unwrap();
        let contents = on_disk(&storage, "journal");
        assert_eq!(contents.len(), 5 + 5000 + 4096);
        assert_eq!(&contents[5..5005], &long[..]);
        assert!(contents[5005..].iter().all(|&b| b == 0));
        // A truncate cuts the zeros too; the next append goes right after it.
        file.truncate(1).unwrap();
        assert_eq!(on_disk(&storage, "journal"), b"a");
        file.write_all(b"xy").unwrap();
        assert_eq!(&on_disk(&storage, "journal")[..3], b"axy");
        // Reopened, appends continue at the end of the file as it is.
        drop(file);
        let mut reopened = storage.open_append("journal").unwrap();
        let before = on_disk(&storage, "journal").len();
        reopened.write_all(b"z").unwrap();
        assert_eq!(on_disk(&storage, "journal").len(), before + 1);
    }

    #[test]
    fn without_preallocation_a_file_holds_exactly_what_was_appended() {
        let dir = tempfile::tempdir().unwrap();
        let storage = DiskStorage::open(dir.path()).unwrap();
        let mut file = storage.create("snapshot").unwrap();
        file.write_all(b"abc").unwrap();
        file.write_all(b"de").unwrap();
        assert_eq!(on_disk(&storage, "snapshot"), b"abcde");
    }
}
