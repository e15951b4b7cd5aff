//! An in-memory [`Storage`] that models what a crash keeps, for tests and the simulation.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::storage::{Storage, StorageFile};

/// A directory of files held in memory, shared by its clones.
///
/// It follows the durability contract of [`Storage`]: [`MemoryStorage::crash`] throws away
/// every byte not covered by a successful [`StorageFile::sync`] and every creation, rename
/// or removal not covered by a successful [`Storage::sync_dir`]. So a journal over it loses
/// exactly its unsynced tail on a simulated crash. It uses no threads, files or clocks, so it
/// can run inside a turmoil simulation; keep one outside the simulated host and hand clones to
/// each incarnation of the switch.
#[derive(Clone, Default, Debug)]
pub struct MemoryStorage {
    dir: Arc<Mutex<Directory>>,
}

#[derive(Default, Debug)]
struct Directory {
    /// The names as the running process sees them.
    current: BTreeMap<String, SharedData>,
    /// The names as of the last `sync_dir`: what a crash leaves.
    durable: BTreeMap<String, SharedData>,
}

type SharedData = Arc<Mutex<FileData>>;

#[derive(Default, Debug)]
struct FileData {
    bytes: Vec<u8>,
    /// How many leading bytes a crash keeps.
    synced: usize,
}

impl MemoryStorage {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulates a crash (power loss): every file loses what was written since its last
    /// sync, and the directory reverts to its last synced listing. Call it after the switch
    /// using this storage has stopped (or its simulated host crashed), before recovering.
    pub fn crash(&self) {
        self.crash_keeping_unsynced(0);
    }

    /// Like [`MemoryStorage::crash`], but each file keeps up to `bytes` of its unsynced tail,
    /// as when the disk happened to persist part of a write before the power went: a torn
    /// write.
    pub fn crash_keeping_unsynced(&self, bytes: usize) {
        let mut dir = lock(&self.dir);
        dir.current = dir.durable.clone();
        for data in dir.current.values() {
            let mut data = lock(data);
            let keep = data.synced.saturating_add(bytes).min(data.bytes.len());
            data.bytes.truncate(keep);
            data.synced = keep;
        }
    }

    /// The names of the files, sorted.
    pub fn file_names(&self) -> Vec<String> {
        lock(&self.dir).current.keys().cloned().collect()
    }

    /// The contents of file `name`, if it exists.
    pub fn contents(&self, name: &str) -> Option<Vec<u8>> {
        let dir = lock(&self.dir);
        dir.current.get(name).map(|data| lock(data).bytes.clone())
    }

    /// How many leading bytes of file `name` are synced.
    pub fn synced_len(&self, name: &str) -> Option<usize> {
        let dir = lock(&self.dir);
        dir.current.get(name).map(|data| lock(data).synced)
    }

    /// Replaces the contents of file `name` (creating it, durably), as damage from outside
    /// would: for corruption tests.
    pub fn set_contents(&self, name: &str, bytes: Vec<u8>) {
        let mut dir = lock(&self.dir);
        let synced = bytes.len();
        let data = Arc::new(Mutex::new(FileData { bytes, synced }));
        dir.current.insert(name.to_owned(), data.clone());
        dir.durable.insert(name.to_owned(), data);
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain bytes; the bytes
/// are still the best information there is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file named {name}"))
}

impl Storage for MemoryStorage {
    type File = MemoryFile;

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.file_names())
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.contents(name).ok_or_else(|| not_found(name))
    }

    fn create(&self, name: &str) -> io::Result<MemoryFile> {
        let mut dir = lock(&self.dir);
        let data = match dir.current.get(name) {
            Some(existing) => {
                let mut existing_data = lock(existing);
                existing_data.bytes.clear();
                existing_data.synced = 0;
                drop(existing_data);
                existing.clone()
            }
            None => {
                let data = SharedData::default();
                dir.current.insert(name.to_owned(), data.clone());
                data
            }
        };
        Ok(MemoryFile { data })
    }

    fn open_append(&self, name: &str) -> io::Result<MemoryFile> {
        let dir = lock(&self.dir);
        let data = dir.current.get(name).ok_or_else(|| not_found(name))?;
        Ok(MemoryFile { data: data.clone() })
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut dir = lock(&self.dir);
        let data = dir.current.remove(from).ok_or_else(|| not_found(from))?;
        dir.current.insert(to.to_owned(), data);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut dir = lock(&self.dir);
        dir.current.remove(name).ok_or_else(|| not_found(name))?;
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut dir = lock(&self.dir);
        dir.durable = dir.current.clone();
        Ok(())
    }

    fn describe(&self, name: &str) -> String {
        format!("memory:{name}")
    }
}

/// A file of a [`MemoryStorage`].
#[derive(Debug)]
pub struct MemoryFile {
    data: SharedData,
}

impl StorageFile for MemoryFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        lock(&self.data).bytes.extend_from_slice(bytes);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut data = lock(&self.data);
        data.synced = data.bytes.len();
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut data = lock(&self.data);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        data.bytes.truncate(len);
        data.synced = data.synced.min(len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_only_synced_bytes_and_entries() {
        let storage = MemoryStorage::new();
        let mut kept = storage.create("kept").unwrap();
        kept.write_all(b"durable").unwrap();
        kept.sync().unwrap();
        kept.write_all(b" lost").unwrap();
        storage.sync_dir().unwrap();
        let mut lost = storage.create("lost").unwrap();
        lost.write_all(b"x").unwrap();
        lost.sync().unwrap();
        storage.rename("kept", "renamed").unwrap();

        storage.crash();
        assert_eq!(storage.file_names(), vec!["kept".to_owned()]);
        assert_eq!(storage.contents("kept").unwrap(), b"durable");
    }

    #[test]
    fn a_torn_crash_keeps_part_of_the_unsynced_tail() {
        let storage = MemoryStorage::new();
        let mut file = storage.create("f").unwrap();
        storage.sync_dir().unwrap();
        file.write_all(b"abc").unwrap();
        file.sync().unwrap();
        file.write_all(b"defgh").unwrap();
        storage.crash_keeping_unsynced(2);
        assert_eq!(storage.contents("f").unwrap(), b"abcde");
    }
}
