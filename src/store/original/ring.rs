//! A reader of the original's `redo-log`: a mirage `shared-block-ring` in a file of 512-byte
//! sectors (the original creates it with 1 MiB; the geometry follows the file's size, as
//! `mirage-block-unix` gives it).
//!
//! - sector 0: the signature `mirage shared-block-device 1.0`;
//! - sector 1: the producer: a little-endian u64 byte position, then a byte 1 (suspend
//!   acknowledged) or 2 (not);
//! - sector 2: the consumer: a u64 byte position, then a byte 1 (suspended) or 2;
//! - sectors 3…: the data, a circular buffer. Positions only grow; position `p` is byte
//!   `p mod capacity` of the data. Each item is a u32 length (little-endian) and that many
//!   bytes, padded to a multiple of 4, wrapping at the end of the data back to its start.
//!
//! The items from the consumer up to the producer are the operations written but not yet
//! folded into `queues.sexp`; those before the consumer are already in it.

/// The sector size of a file-backed block device.
const SECTOR: usize = 512;
/// The signature in sector 0.
const MAGIC: &[u8] = b"mirage shared-block-device 1.0";
const PRODUCER_AT: usize = SECTOR;
const CONSUMER_AT: usize = 2 * SECTOR;
const DATA_AT: usize = 3 * SECTOR;

/// What is wrong with a ring, and at which byte of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RingError {
    pub(crate) offset: u64,
    pub(crate) reason: String,
}

/// One item not yet consumed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RingItem {
    /// Its position in the ring (grows across wraps).
    pub(crate) position: u64,
    /// Where its length header is in the file.
    pub(crate) file_offset: u64,
    /// Its bytes.
    pub(crate) bytes: Vec<u8>,
}

/// The unconsumed items of the ring in `file`, oldest first. A file whose signature sector
/// is all zeros, with both positions zero, was never initialised (the original writes the
/// signature last) and holds nothing.
pub(crate) fn unconsumed_items(file: &[u8]) -> Result<Vec<RingItem>, RingError> {
    let error = |offset: usize, reason: String| RingError {
        offset: offset as u64,
        reason,
    };
    if !file.len().is_multiple_of(SECTOR) {
        return Err(error(
            file.len(),
            format!(
                "the file is {} bytes, not a whole number of {SECTOR}-byte sectors (truncated?)",
                file.len()
            ),
        ));
    }
    if file.len() < DATA_AT + SECTOR {
        return Err(error(
            file.len(),
            format!(
                "the file is {} bytes, too small for a ring (at least {} bytes; the original \
                 writes 1048576)",
                file.len(),
                DATA_AT + SECTOR
            ),
        ));
    }
    let position = |at: usize| u64::from_le_bytes(file[at..at + 8].try_into().expect("8 bytes"));
    let (producer, consumer) = (position(PRODUCER_AT), position(CONSUMER_AT));
    if !file[..SECTOR].starts_with(MAGIC) {
        if file[..SECTOR].iter().all(|byte| *byte == 0) && producer == 0 && consumer == 0 {
            return Ok(Vec::new());
        }
        return Err(error(
            0,
            "no shared-block-ring signature (\"mirage shared-block-device 1.0\")".into(),
        ));
    }
    for (at, what) in [(PRODUCER_AT + 8, "producer"), (CONSUMER_AT + 8, "consumer")] {
        if !matches!(file[at], 1 | 2) {
            return Err(error(
                at,
                format!("the {what}'s suspend flag is {}, not 1 or 2", file[at]),
            ));
        }
    }
    let data = &file[DATA_AT..];
    let capacity = data.len() as u64;
    if consumer > producer || producer - consumer > capacity {
        return Err(error(
            PRODUCER_AT,
            format!(
                "the producer position {producer} and the consumer position {consumer} do not \
                 fit a ring of {capacity} bytes"
            ),
        ));
    }
    if !producer.is_multiple_of(4) || !consumer.is_multiple_of(4) {
        return Err(error(
            PRODUCER_AT,
            format!(
                "the producer position {producer} or the consumer position {consumer} is not a \
                 multiple of 4"
            ),
        ));
    }
    // Bytes from ring position `from`, wrapping at the end of the data.
    let read = |from: u64, len: usize| -> Vec<u8> {
        let start = (from % capacity) as usize;
        let first = len.min(data.len() - start);
        let mut bytes = data[start..start + first].to_vec();
        let mut rest = len - first;
        while rest > 0 {
            let this = rest.min(data.len());
            bytes.extend_from_slice(&data[..this]);
            rest -= this;
        }
        bytes
    };
    let mut items = Vec::new();
    let mut at = consumer;
    while at < producer {
        let file_offset = DATA_AT + (at % capacity) as usize;
        let len = u32::from_le_bytes(read(at, 4).try_into().expect("4 bytes")) as u64;
        let padded = (len + 7) & !3;
        if padded > producer - at {
            return Err(error(
                file_offset,
                format!(
                    "the item at ring position {at} claims {len} bytes, past the producer \
                     position {producer}"
                ),
            ));
        }
        items.push(RingItem {
            position: at,
            file_offset: file_offset as u64,
            bytes: read(at + 4, len as usize),
        });
        at += padded;
    }
    Ok(items)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ring of `sectors` sectors holding `items` pushed from position `start` (consumed up
    /// to there), written the way the original's `Ring.Producer` writes them.
    pub(crate) fn ring(sectors: usize, start: u64, items: &[&[u8]]) -> Vec<u8> {
        let mut file = vec![0; sectors * SECTOR];
        file[..MAGIC.len()].copy_from_slice(MAGIC);
        let capacity = ((sectors - 3) * SECTOR) as u64;
        let mut at = start;
        for item in items {
            let mut framed = (item.len() as u32).to_le_bytes().to_vec();
            framed.extend_from_slice(item);
            for (i, byte) in framed.iter().enumerate() {
                file[DATA_AT + ((at + i as u64) % capacity) as usize] = *byte;
            }
            at += (item.len() as u64 + 7) & !3;
        }
        file[PRODUCER_AT..PRODUCER_AT + 8].copy_from_slice(&at.to_le_bytes());
        file[PRODUCER_AT + 8] = 2;
        file[CONSUMER_AT..CONSUMER_AT + 8].copy_from_slice(&start.to_le_bytes());
        file[CONSUMER_AT + 8] = 2;
        file
    }

    fn contents(file: &[u8]) -> Vec<Vec<u8>> {
        unconsumed_items(file)
            .expect("a valid ring")
            .into_iter()
            .map(|item| item.bytes)
            .collect()
    }

    #[test]
    fn items_in_order_including_across_the_wrap() {
        let items: [&[u8]; 3] = [b"first", &[7; 700], b"third, after the wrap"];
        assert_eq!(contents(&ring(8, 0, &items)), items);
        // 5 data sectors = 2560 bytes; start 300 bytes before the end, twice round already.
        let start = 2 * 2560 + 2260;
        assert_eq!(contents(&ring(8, start, &items)), items);
        // An item whose length header sits in the last 4 bytes of the data.
        assert_eq!(contents(&ring(8, 2556, &items)), items);
    }

    #[test]
    fn an_uninitialised_or_empty_ring_holds_nothing() {
        assert!(contents(&vec![0; 2048]).is_empty());
        assert!(contents(&ring(2048, 0, &[])).is_empty());
        assert!(contents(&ring(8, 12_000, &[])).is_empty());
    }

    #[test]
    fn damage_is_reported_with_its_offset() {
        let good = ring(8, 0, &[b"one", b"two"]);
        let check = |file: &[u8], offset: u64, reason: &str| {
            let error = unconsumed_items(file).expect_err(reason);
            assert_eq!(error.offset, offset, "{error:?}");
            assert!(error.reason.contains(reason), "{error:?}");
        };
        check(
            &good[..4000],
            4000,
            "not a whole number of 512-byte sectors",
        );
        check(&good[..1536], 1536, "too small for a ring");
        let mut bad = good.clone();
        bad[3] ^= 0x20;
        check(&bad, 0, "no shared-block-ring signature");
        let mut bad = good.clone();
        bad[PRODUCER_AT + 8] = 0;
        check(&bad, 520, "suspend flag is 0");
        let mut bad = good.clone();
        bad[PRODUCER_AT + 1] = 0x40; // the producer 16,400 bytes beyond the consumer
        check(&bad, 512, "do not fit a ring of 2560 bytes");
        let mut bad = good.clone();
        bad[DATA_AT + 1] = 0x10; // the first item's length becomes 4099
        check(
            &bad,
            1536,
            "claims 4099 bytes, past the producer position 16",
        );
        let mut bad = good;
        bad[PRODUCER_AT] = 15;
        check(&bad, 512, "not a multiple of 4");
    }
}
