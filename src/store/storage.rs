//! Where the journal's files live: a flat directory of named files behind the [`Storage`]
//! trait, so the same journal, snapshot and recovery code runs over real files
//! ([`DiskStorage`]), over memory that loses what was not synced when it "crashes"
//! ([`super::MemoryStorage`], for tests and the simulation), and through a fault-injecting
//! wrapper ([`super::FaultyStorage`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
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
        // Append mode keeps writes at the end after a truncate, but cannot be combined with
        // truncation when opening, hence two opens.
        File::create(self.path(name))?;
        self.open_append(name)
    }

    fn open_append(&self, name: &str) -> io::Result<DiskFile> {
        let file = OpenOptions::new().append(true).open(self.path(name))?;
        Ok(DiskFile { file })
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
#[derive(Debug)]
pub struct DiskFile {
    file: File,
}

impl StorageFile for DiskFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        // The file is opened in append mode, so writes after this continue at `len`.
        self.file.set_len(len)
    }
}
