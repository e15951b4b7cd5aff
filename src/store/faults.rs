//! A [`Storage`] wrapper that injects disk errors, for tests of what the switch does when the
//! disk is full or failing.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::storage::{Storage, StorageFile};

/// The switchboard of injected faults, shared by a [`FaultyStorage`], its files and the test
/// that flips the switches. All faults are off initially.
#[derive(Clone, Default, Debug)]
pub struct Faults {
    state: Arc<FaultState>,
}

#[derive(Default, Debug)]
struct FaultState {
    disk_full: AtomicBool,
    sync_failing: AtomicBool,
    injected: AtomicU64,
}

/// The `errno` of "No space left on device".
const ENOSPC: i32 = 28;
/// The `errno` of "Input/output error".
const EIO: i32 = 5;

impl Faults {
    /// No faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// While on, every write appends half of its bytes and then fails with `ENOSPC`, as a
    /// write that runs out of space part-way does.
    pub fn set_disk_full(&self, on: bool) {
        self.state.disk_full.store(on, Ordering::SeqCst);
    }

    /// While on, every file and directory sync fails with `EIO`.
    pub fn set_sync_failing(&self, on: bool) {
        self.state.sync_failing.store(on, Ordering::SeqCst);
    }

    /// Turns every fault off.
    pub fn clear(&self) {
        self.set_disk_full(false);
        self.set_sync_failing(false);
    }

    /// How many operations have failed because of an injected fault.
    pub fn injected(&self) -> u64 {
        self.state.injected.load(Ordering::SeqCst)
    }

    fn check_write(&self) -> Result<(), io::Error> {
        if self.state.disk_full.load(Ordering::SeqCst) {
            self.state.injected.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        Ok(())
    }

    fn check_sync(&self) -> Result<(), io::Error> {
        if self.state.sync_failing.load(Ordering::SeqCst) {
            self.state.injected.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::from_raw_os_error(EIO));
        }
        Ok(())
    }
}

/// A [`Storage`] whose writes and syncs fail while the shared [`Faults`] say so.
#[derive(Clone, Debug)]
pub struct FaultyStorage<S> {
    inner: S,
    faults: Faults,
}

impl<S: Storage> FaultyStorage<S> {
    /// Wraps `inner`; `faults` controls it.
    pub fn new(inner: S, faults: Faults) -> Self {
        Self { inner, faults }
    }
}

impl<S: Storage> Storage for FaultyStorage<S> {
    type File = FaultyFile<S::File>;

    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.inner.read(name)
    }

    fn create(&self, name: &str) -> io::Result<Self::File> {
        Ok(FaultyFile {
            inner: self.inner.create(name)?,
            faults: self.faults.clone(),
        })
    }

    fn open_append(&self, name: &str) -> io::Result<Self::File> {
        Ok(FaultyFile {
            inner: self.inner.open_append(name)?,
            faults: self.faults.clone(),
        })
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.faults.check_sync()?;
        self.inner.sync_dir()
    }

    fn describe(&self, name: &str) -> String {
        self.inner.describe(name)
    }
}

/// A file of a [`FaultyStorage`].
#[derive(Debug)]
pub struct FaultyFile<F> {
    inner: F,
    faults: Faults,
}

impl<F: StorageFile> StorageFile for FaultyFile<F> {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Err(error) = self.faults.check_write() {
            // A real full disk takes what fits and then fails: leave a torn tail behind, which
            // the journal must cut off before it writes again.
            self.inner.write_all(&bytes[..bytes.len() / 2])?;
            return Err(error);
        }
        self.inner.write_all(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.faults.check_sync()?;
        self.inner.sync()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        // Shrinking a file frees space, so it works on a full disk too.
        self.inner.truncate(len)
    }

    fn preallocate(&mut self, bytes: u64) {
        self.inner.preallocate(bytes);
    }
}
