//! The bounded, ordered parallel pipeline shared by backup and restore.
//!
//! A source thread fills slots (buffers) and submits them; rayon workers transform each
//! slot (seal or open one block); the caller's thread receives the slots back in submit
//! order (write to the archive or to files) and returns them to the free list. The number
//! of slots is fixed, so memory is bounded whatever the size of the data, and buffers are
//! reused rather than allocated (and page-faulted) per block.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel, sync_channel};

use crate::error::{Error, Result};

/// Handed to the source: take a free slot, fill it, submit it.
pub(crate) struct Feed<S, W> {
    free: Receiver<S>,
    done: Sender<(u64, S)>,
    work: Arc<W>,
    seq: u64,
}

impl<S, W> Feed<S, W>
where
    S: Send + 'static,
    W: Fn(&mut S, u64) + Send + Sync + 'static,
{
    /// A free slot, waiting for one if all are in flight. `None` once the sink has stopped
    /// (after an error); the source should then return.
    pub(crate) fn take(&mut self) -> Option<S> {
        self.free.recv().ok()
    }

    /// Send a filled slot to the workers; returns its sequence number.
    pub(crate) fn submit(&mut self, mut slot: S) -> u64 {
        let seq = self.seq;
        self.seq += 1;
        let done = self.done.clone();
        let work = Arc::clone(&self.work);
        rayon::spawn(move || {
            work(&mut slot, seq);
            // The receiver is gone only when the sink failed; the slot is dropped then.
            let _ = done.send((seq, slot));
        });
        seq
    }
}

/// Error a source returns when `Feed::take` said the sink stopped.
pub(crate) fn sink_stopped() -> Error {
    Error::Internal("pipeline stopped".into())
}

/// Run `source` on its own thread, `work` on the rayon pool, and `sink` here, in order.
pub(crate) fn run<S, W, R>(
    slots: usize,
    source: impl FnOnce(&mut Feed<S, W>) -> Result<R> + Send,
    work: W,
    mut sink: impl FnMut(&mut S, u64) -> Result<()>,
) -> Result<R>
where
    S: Default + Send + 'static,
    W: Fn(&mut S, u64) + Send + Sync + 'static,
    R: Send,
{
    let (free_tx, free_rx) = sync_channel::<S>(slots);
    for _ in 0..slots {
        free_tx.send(S::default()).expect("receiver alive");
    }
    let (done_tx, done_rx) = channel::<(u64, S)>();
    let mut feed = Feed {
        free: free_rx,
        done: done_tx,
        work: Arc::new(work),
        seq: 0,
    };
    std::thread::scope(|scope| {
        let source_thread = scope.spawn(move || source(&mut feed));
        let mut free_tx = Some(free_tx);
        let mut pending: BTreeMap<u64, S> = BTreeMap::new();
        let mut next = 0u64;
        let mut failed: Option<Error> = None;
        for (seq, slot) in done_rx.iter() {
            pending.insert(seq, slot);
            while let Some(mut slot) = pending.remove(&next) {
                if failed.is_none()
                    && let Err(e) = sink(&mut slot, next)
                {
                    failed = Some(e);
                    // Closing the free list makes the source's next `take` return None.
                    free_tx = None;
                }
                next += 1;
                if let Some(tx) = &free_tx {
                    let _ = tx.send(slot);
                }
            }
        }
        let produced = match source_thread.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        match failed {
            Some(e) => Err(e),
            None => produced,
        }
    })
}

/// Buffers in flight: enough for every worker to be busy while the reader fills one and
/// the writer drains one.
pub(crate) fn slot_count() -> usize {
    rayon::current_num_threads() * 2 + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_arrive_in_order_with_bounded_slots() {
        let mut seen = Vec::new();
        let n = run(
            3,
            |feed: &mut Feed<Vec<u64>, _>| {
                for i in 0..200u64 {
                    let mut slot = feed.take().ok_or_else(sink_stopped)?;
                    slot.clear();
                    slot.push(i);
                    feed.submit(slot);
                }
                Ok(200)
            },
            |slot: &mut Vec<u64>, seq| {
                if seq % 7 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                slot[0] *= 2;
            },
            |slot, seq| {
                assert_eq!(slot[0], seq * 2);
                seen.push(slot[0]);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(n, 200);
        assert_eq!(seen, (0..200).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[test]
    fn sink_error_stops_the_source() {
        let r: Result<u32> = run(
            2,
            |feed: &mut Feed<Vec<u8>, _>| {
                for _ in 0..1_000_000 {
                    let slot = feed.take().ok_or_else(sink_stopped)?;
                    feed.submit(slot);
                }
                Ok(0)
            },
            |_: &mut Vec<u8>, _| {},
            |_, seq| {
                if seq == 5 {
                    Err(Error::InvalidOption("disk full".into()))
                } else {
                    Ok(())
                }
            },
        );
        assert!(matches!(r, Err(Error::InvalidOption(m)) if m == "disk full"));
    }
}
