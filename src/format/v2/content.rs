//! The content hash of a file's data bytes (FORMAT.md v2.4, algorithm 2): BLAKE3 over
//! 1 MiB windows. The window hashes are what an incremental compares to find the unchanged
//! parts of a changed file, so computing the content hash yields them at no extra cost:
//! one BLAKE3 pass over the data, never two.
//!
//! - `data_len ≤ WINDOW`: `content_hash = BLAKE3(data)` (the one window's hash, what
//!   `b3sum` prints);
//! - else: window `i` is data bytes `[i·WINDOW, min((i+1)·WINDOW, data_len))`,
//!   `w_i = BLAKE3(window i)`, and `content_hash = BLAKE3-derive_key("coffer/v2/windows",
//!   w_0 ‖ … ‖ w_{n−1})` (what `b3sum --derive-key coffer/v2/windows` prints for the
//!   concatenated window hashes).
//!
//! Which rule applies follows from `data_len`, which the entry records; the two rules are
//! BLAKE3's hash and derive-key modes besides, so the top-level hash of a large file can
//! never equal the plain hash of any data bytes.
//!
//! BLAKE3 rather than SHA-256 for speed: every byte a backup reads is hashed (FORMAT.md
//! v2.12, question 2).

use blake3::Hasher;

/// Window size of the content hash: 1 MiB of data bytes, fixed by the format (not the
/// archive's block size).
pub const WINDOW: u64 = 1 << 20;

/// BLAKE3 derive-key context of the hash over the window hashes: the mode and the context
/// keep it apart from every plain BLAKE3 hash of data bytes.
const WINDOWS_CONTEXT: &str = "coffer/v2/windows";

fn blake3_of(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

fn top_hasher() -> Hasher {
    Hasher::new_derive_key(WINDOWS_CONTEXT)
}

/// A content hash being computed over data bytes fed in order.
#[derive(Clone)]
pub struct ContentHasher {
    window: Hasher,
    in_window: u64,
    /// The first window's hash, held until a second window shows the data is longer
    /// than one window.
    first: Option<[u8; 32]>,
    top: Option<Hasher>,
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
            window: Hasher::new(),
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
        let w = blake3_of(window);
        self.push_window(w);
        w
    }

    /// End the current (full) window: its hash goes to the top-level hash.
    fn close_window(&mut self) {
        let w = *self.window.finalize().as_bytes();
        self.window.reset();
        self.in_window = 0;
        self.push_window(w);
    }

    fn push_window(&mut self, w: [u8; 32]) {
        self.keep(w);
        match (&mut self.top, self.first.take()) {
            (Some(top), _) => {
                top.update(&w);
            }
            (None, None) => self.first = Some(w),
            (None, Some(first)) => {
                let mut top = top_hasher();
                top.update(&first);
                top.update(&w);
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
            let w = *self.window.finalize().as_bytes();
            self.keep(w);
            match (self.top.take(), self.first.take()) {
                (Some(mut top), _) => *top.update(&w).finalize().as_bytes(),
                (None, None) => w,
                (None, Some(first)) => {
                    let mut top = top_hasher();
                    top.update(&first);
                    *top.update(&w).finalize().as_bytes()
                }
            }
        } else {
            match (self.top.take(), self.first.take()) {
                (Some(top), _) => *top.finalize().as_bytes(),
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
            return *blake3::hash(data).as_bytes();
        }
        let mut key_material = Vec::new();
        for w in data.chunks(WINDOW as usize) {
            key_material.extend_from_slice(blake3::hash(w).as_bytes());
        }
        blake3::derive_key(WINDOWS_CONTEXT, &key_material)
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
                assert_eq!(windows[i], *blake3::hash(chunk).as_bytes());
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

    /// Pinned against an outside implementation (b3sum 1.2.0, Debian): the definition, not
    /// only this code's agreement with itself. The pattern is byte `i` = `i mod 251`.
    /// - empty, "hello", the first 1 MiB: `b3sum FILE`;
    /// - 1 MiB + 1 bytes: `(b3sum --raw w0; b3sum --raw w1) > cat; b3sum --derive-key
    ///   coffer/v2/windows cat`, with w0 the first 1 MiB and w1 the last byte.
    #[test]
    fn pinned_against_b3sum() {
        let pattern: Vec<u8> = (0..WINDOW as usize + 1).map(|i| (i % 251) as u8).collect();
        let w = WINDOW as usize;
        let hex = |d: &[u8]| crate::format::hex(&content_hash(d));
        assert_eq!(
            hex(b""),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(
            hex(b"hello"),
            "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"
        );
        assert_eq!(
            hex(&pattern[..w]),
            "74cb441fd087764ca9c3694da742ebe30cbeb3060a17009ca81825c7a8d10343"
        );
        let mut h = ContentHasher::keeping_windows(4);
        h.update(&pattern);
        let d = h.finalize();
        assert_eq!(
            crate::format::hex(&d.hash),
            "3c6e15f0435005b038013a92a91ac8d43ae446121415c5f96c24240c14104133"
        );
        let windows: Vec<String> = d
            .windows
            .unwrap()
            .iter()
            .map(|w| crate::format::hex(w))
            .collect();
        assert_eq!(
            windows,
            [
                "74cb441fd087764ca9c3694da742ebe30cbeb3060a17009ca81825c7a8d10343",
                "48466bee526f88461838b900c45f868ad55af9e9c6fa5487aab44e5d5abe0dc3",
            ]
        );
        // Not the plain BLAKE3 of the data (`b3sum` of all 1 MiB + 1 bytes).
        assert_ne!(
            crate::format::hex(&d.hash),
            "2f053cd7472cf0cd2f9adaf45c1180255b91b9a865404a63671a0ee5f792ed33"
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
