//! The content hash of a file's data bytes (FORMAT.md v2.4, algorithm 1): SHA-256 over
//! 1 MiB windows. The window hashes are what an incremental compares to find the unchanged
//! parts of a changed file, so computing the content hash yields them at no extra cost:
//! one SHA-256 pass over the data, never two.
//!
//! - `data_len ≤ WINDOW`: `content_hash = SHA-256(data)` (the one window's hash);
//! - else: window `i` is data bytes `[i·WINDOW, min((i+1)·WINDOW, data_len))`,
//!   `w_i = SHA-256(window i)`, and `content_hash = SHA-256("coffer/v2/windows" ‖ w_0 ‖ … ‖
//!   w_{n−1})`.
//!
//! Which rule applies follows from `data_len`, which the entry records, so the hash of
//! given data bytes is unambiguous.

use sha2::{Digest, Sha256};

/// Window size of the content hash: 1 MiB of data bytes, fixed by the format (not the
/// archive's block size).
pub const WINDOW: u64 = 1 << 20;

/// Domain of the hash over the window hashes.
const WINDOWS_CONTEXT: &[u8] = b"coffer/v2/windows";

/// A content hash being computed over data bytes fed in order.
#[derive(Clone)]
pub struct ContentHasher {
    window: Sha256,
    in_window: u64,
    /// The first window's hash, held until a second window shows the data is longer
    /// than one window.
    first: Option<[u8; 32]>,
    top: Option<Sha256>,
    /// Every window's hash, kept when asked for (an incremental's state), at most
    /// `keep_limit` of them.
    kept: Option<Vec<[u8; 32]>>,
    keep_limit: usize,
}

impl Default for ContentHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// A finished content hash, with the window hashes when they were kept.
pub struct ContentDigest {
    pub hash: [u8; 32],
    /// `None` when not asked for, or when the data had more than the limit of windows.
    pub windows: Option<Vec<[u8; 32]>>,
}

impl ContentHasher {
    pub fn new() -> Self {
        ContentHasher {
            window: Sha256::new(),
            in_window: 0,
            first: None,
            top: None,
            kept: None,
            keep_limit: 0,
        }
    }

    /// A hasher that also keeps up to `limit` window hashes.
    pub fn keeping_windows(limit: usize) -> Self {
        ContentHasher {
            kept: Some(Vec::new()),
            keep_limit: limit,
            ..Self::new()
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.in_window == WINDOW {
                self.close_window();
            }
            let n = ((WINDOW - self.in_window) as usize).min(data.len());
            self.window.update(&data[..n]);
            self.in_window += n as u64;
            data = &data[n..];
        }
    }

    /// Hash one whole window (`WINDOW` bytes, or fewer for the last one) and return its
    /// hash. Only at a window boundary: every earlier byte came through here too, in
    /// windows of `WINDOW` bytes.
    pub fn update_window(&mut self, window: &[u8]) -> [u8; 32] {
        debug_assert!(self.in_window == 0 && window.len() as u64 <= WINDOW);
        let w: [u8; 32] = Sha256::digest(window).into();
        self.push_window(w);
        w
    }

    /// End the current (full) window: its hash goes to the top-level hash.
    fn close_window(&mut self) {
        let w: [u8; 32] = std::mem::take(&mut self.window).finalize().into();
        self.in_window = 0;
        self.push_window(w);
    }

    fn push_window(&mut self, w: [u8; 32]) {
        self.keep(w);
        match (&mut self.top, self.first.take()) {
            (Some(top), _) => top.update(w),
            (None, None) => self.first = Some(w),
            (None, Some(first)) => {
                let mut top = Sha256::new();
                top.update(WINDOWS_CONTEXT);
                top.update(first);
                top.update(w);
                self.top = Some(top);
            }
        }
    }

    fn keep(&mut self, w: [u8; 32]) {
        if let Some(kept) = &mut self.kept {
            if kept.len() < self.keep_limit {
                kept.push(w);
            } else {
                self.kept = None;
            }
        }
    }

    pub fn finalize(mut self) -> ContentDigest {
        // A last partial window (or the only one, even empty) closes here.
        let last_is_open = self.in_window > 0 || (self.first.is_none() && self.top.is_none());
        let hash = if last_is_open {
            let w: [u8; 32] = std::mem::take(&mut self.window).finalize().into();
            self.keep(w);
            match (self.top.take(), self.first.take()) {
                (Some(mut top), _) => {
                    top.update(w);
                    top.finalize().into()
                }
                (None, None) => w,
                (None, Some(first)) => {
                    let mut top = Sha256::new();
                    top.update(WINDOWS_CONTEXT);
                    top.update(first);
                    top.update(w);
                    top.finalize().into()
                }
            }
        } else {
            match (self.top.take(), self.first.take()) {
                (Some(top), _) => top.finalize().into(),
                // Exactly one full window.
                (None, Some(first)) => first,
                (None, None) => unreachable!("handled as an open window"),
            }
        };
        ContentDigest {
            hash,
            windows: self.kept,
        }
    }
}

/// The content hash of `data` in one call.
pub fn content_hash(data: &[u8]) -> [u8; 32] {
    let mut h = ContentHasher::new();
    h.update(data);
    h.finalize().hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_definition(data: &[u8]) -> [u8; 32] {
        if data.len() as u64 <= WINDOW {
            return Sha256::digest(data).into();
        }
        let mut top = Sha256::new();
        top.update(WINDOWS_CONTEXT);
        for w in data.chunks(WINDOW as usize) {
            top.update(Sha256::digest(w));
        }
        top.finalize().into()
    }

    #[test]
    fn matches_the_definition_at_every_window_boundary() {
        let w = WINDOW as usize;
        let data: Vec<u8> = (0..3 * w + 7).map(|i| (i * 31 % 251) as u8).collect();
        for len in [0, 1, w - 1, w, w + 1, 2 * w, 2 * w + 5, 3 * w + 7] {
            let d = &data[..len];
            assert_eq!(content_hash(d), by_definition(d), "length {len}");
            // Fed in uneven pieces, the result is the same.
            let mut h = ContentHasher::keeping_windows(8);
            for piece in d.chunks(w / 3 + 1) {
                h.update(piece);
            }
            let got = h.finalize();
            assert_eq!(got.hash, by_definition(d), "pieces, length {len}");
            let windows = got.windows.unwrap();
            assert_eq!(windows.len(), len.div_ceil(w).max(1));
            for (i, chunk) in d.chunks(w).enumerate() {
                assert_eq!(windows[i], <[u8; 32]>::from(Sha256::digest(chunk)));
            }
        }
    }

    #[test]
    fn whole_windows_hash_as_bytes_fed_in_pieces() {
        let w = WINDOW as usize;
        for len in [0, 5, w, w + 1, 2 * w, 2 * w + 3] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let mut h = ContentHasher::keeping_windows(8);
            let mut hashes = Vec::new();
            let mut rest = &data[..];
            loop {
                let n = rest.len().min(w);
                hashes.push(h.update_window(&rest[..n]));
                rest = &rest[n..];
                if n < w || rest.is_empty() {
                    break;
                }
            }
            let d = h.finalize();
            assert_eq!(d.hash, by_definition(&data), "length {len}");
            assert_eq!(d.windows.unwrap(), hashes);
        }
    }

    #[test]
    fn a_small_file_hashes_as_plain_sha256() {
        assert_eq!(
            crate::format::hex(&content_hash(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn window_hashes_are_dropped_past_the_limit() {
        let data = vec![7u8; 3 * WINDOW as usize];
        let mut h = ContentHasher::keeping_windows(2);
        h.update(&data);
        let d = h.finalize();
        assert!(d.windows.is_none());
        assert_eq!(d.hash, by_definition(&data));
    }
}
