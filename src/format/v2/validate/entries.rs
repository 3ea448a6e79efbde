//! Entry rules (docs/FORMAT.md v2.7.2), the ancestor stack, and the bounded decoders of
//! meta frame plaintexts (index chunks, block-table chunks, the directory).

use super::*;

// ---------------------------------------------------------------------------------------
// Entries (v2.7.2)

/// Why an entry was refused: [`EntryError::Unsafe`] = [`UnsafePath`] (outside the target,
/// through a non-folder, or twice), [`EntryError::Corrupt`] every other rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryError {
    Unsafe { path: Vec<u8>, reason: String },
    Corrupt(String),
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryError::Unsafe { path, reason } => {
                write!(f, "unsafe path \"{}\": {reason}", path.escape_ascii())
            }
            EntryError::Corrupt(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for EntryError {}

fn unsafe_path(path: &[u8], reason: impl Into<String>) -> EntryError {
    EntryError::Unsafe {
        path: path.to_vec(),
        reason: reason.into(),
    }
}

/// Rule 1: a relative, `/`-separated path that stays inside the target. Bytes, not UTF-8:
/// a non-UTF-8 name is valid.
pub fn check_path(path: &[u8]) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if path.len() > MAX_PATH_LEN {
        return Err("path longer than 4096 bytes");
    }
    if path[0] == b'/' {
        return Err("absolute path");
    }
    if path.contains(&0) {
        return Err("NUL byte in path");
    }
    if cfg!(windows) && path.contains(&b'\\') {
        return Err("backslash in path");
    }
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" => return Err("empty path component"),
            b"." => return Err("`.` component"),
            b".." => return Err("`..` component"),
            _ => {}
        }
    }
    Ok(())
}

/// Validates the entries of index chunk `k`, in order, against v2.7.2 rules 1, 2 and 4–9.
/// Rule 3 (the parent is a folder) is [`Ancestors`]'; the kind of a hard link's target
/// (entry `t`, rule 6) is the caller's to check, since entry `t` may sit in another chunk.
pub struct ChunkCheck<'a> {
    k: usize,
    first_path: &'a [u8],
    expected_count: u32,
    next_first: Option<&'a [u8]>,
    chain_len: usize,
    stream_len: u64,
    prev: Option<Vec<u8>>,
    seen: u32,
}

impl<'a> ChunkCheck<'a> {
    /// `k` must be a chunk of `d` (the caller iterates over `d.chunks`); `chain_len` =
    /// `|chain|` of the header.
    pub fn new(k: usize, d: &'a Directory, chain_len: usize) -> Self {
        let c: &ChunkRef = &d.chunks[k];
        ChunkCheck {
            k,
            first_path: &c.first_path,
            expected_count: c.entry_count,
            next_first: d.chunks.get(k + 1).map(|n| n.first_path.as_slice()),
            chain_len,
            stream_len: d.stream_len,
            prev: None,
            seen: 0,
        }
    }

    /// Check the next entry of the chunk; `number` is its global entry number (chunk `k`'s
    /// first entry is `Σ entry_count` of the chunks before it). For a hard link this checks
    /// `t < number` and that the link carries no metadata; that entry `t` is a file,
    /// symlink, FIFO or device is left to the caller, which may have to open another chunk.
    pub fn check(&mut self, e: &EntryV2, number: u64) -> Result<(), EntryError> {
        let corrupt = |m: String| {
            EntryError::Corrupt(format!(
                "entry {number} (\"{}\"): {m}",
                e.path.escape_ascii()
            ))
        };
        // 1. path
        check_path(&e.path).map_err(|r| unsafe_path(&e.path, r))?;
        // 2. order
        match &self.prev {
            None => {
                if e.path != self.first_path {
                    return Err(corrupt(format!(
                        "index chunk {} does not start with the path the directory records",
                        self.k
                    )));
                }
            }
            Some(prev) => {
                if e.path == *prev {
                    return Err(unsafe_path(&e.path, "duplicate entry"));
                }
                if path_cmp(&e.path, prev).is_lt() {
                    return Err(corrupt("entries out of order".into()));
                }
            }
        }
        // 4.–9.
        check_fields(e, number, self.chain_len, self.stream_len).map_err(corrupt)?;
        self.prev = Some(e.path.clone());
        self.seen += 1;
        Ok(())
    }

    /// After the chunk's last entry: `count` = the number of entries the chunk held. It
    /// must equal `ChunkRef.entry_count` (and every entry must have passed [`Self::check`]);
    /// the last path must come before the next chunk's `first_path`.
    pub fn finish(self, count: u32) -> Result<(), EntryError> {
        if count != self.expected_count || self.seen != count {
            return Err(EntryError::Corrupt(format!(
                "index chunk {} holds {count} entries, the directory says {}",
                self.k, self.expected_count
            )));
        }
        if let (Some(last), Some(next)) = (&self.prev, self.next_first) {
            if last == next {
                return Err(unsafe_path(last, "duplicate entry"));
            }
            if path_cmp(last, next).is_gt() {
                return Err(EntryError::Corrupt(format!(
                    "index chunk {}'s last entry comes after the next chunk's first",
                    self.k
                )));
            }
        }
        Ok(())
    }
}

/// Rules 4–9 of one entry.
fn check_fields(e: &EntryV2, number: u64, chain_len: usize, stream_len: u64) -> Result<(), String> {
    // 4. kind
    if e.kind > KIND_BLOCK {
        return Err(format!("unknown kind {}", e.kind));
    }
    // 5. common bounds
    if e.mode > 0o7777 {
        return Err(format!("mode {:#o} out of range", e.mode));
    }
    if e.mtime_nsec >= 1_000_000_000 {
        return Err("nanoseconds out of range".into());
    }
    // 6. fields by kind: everything not stated is "empty".
    let file = e.kind == KIND_FILE;
    let device = e.kind == KIND_CHAR || e.kind == KIND_BLOCK;
    if !file && (e.size != 0 || e.data_ranges.is_some() || !e.extents.is_empty()) {
        return Err("size, data ranges or extents on an entry that is not a file".into());
    }
    if file != e.content_hash.is_some() {
        return Err("a file has no content hash, or another kind has one".into());
    }
    if !device && (e.rdev_major != 0 || e.rdev_minor != 0) {
        return Err("device numbers on an entry that is not a device".into());
    }
    match (&e.link_target, e.kind) {
        (None, KIND_SYMLINK) => return Err("symlink without a target".into()),
        (Some(t), KIND_SYMLINK) => {
            if t.is_empty() || t.len() > MAX_PATH_LEN || t.contains(&0) {
                return Err("symlink target empty, too long or holding a NUL byte".into());
            }
        }
        (Some(_), _) => return Err("link target on an entry that is not a symlink".into()),
        (None, _) => {}
    }
    match (e.hardlink_to, e.kind) {
        (None, KIND_HARDLINK) => return Err("hard link without a target".into()),
        (Some(t), KIND_HARDLINK) => {
            if t >= number {
                return Err(format!("hard link to entry {t}, not an earlier one"));
            }
            if e.mode != 0 || e.uid != 0 || e.gid != 0 || e.mtime_sec != 0 || e.mtime_nsec != 0 {
                return Err("hard link with metadata of its own".into());
            }
            if !e.xattrs.is_empty() {
                return Err("hard link with extended attributes".into());
            }
        }
        (Some(_), _) => return Err("hard-link target on an entry that is not a hard link".into()),
        (None, _) => {}
    }
    debug_assert!(matches!(
        e.kind,
        KIND_FILE | KIND_DIR | KIND_SYMLINK | KIND_HARDLINK | KIND_FIFO | KIND_CHAR | KIND_BLOCK
    ));
    // 7. xattrs
    check_xattrs(&e.xattrs)?;
    if file {
        // 8. data ranges
        if let Some(ranges) = &e.data_ranges {
            check_ranges(ranges, e.size)?;
        }
        // 9. extents
        check_extents(&e.extents, e.data_len(), chain_len, stream_len)?;
    }
    Ok(())
}

fn check_xattrs(xattrs: &[Xattr]) -> Result<(), String> {
    if xattrs.len() > MAX_XATTRS {
        return Err(format!(
            "{} extended attributes, more than {MAX_XATTRS}",
            xattrs.len()
        ));
    }
    let mut total = 0usize;
    for (i, x) in xattrs.iter().enumerate() {
        if x.name.is_empty() || x.name.len() > MAX_XATTR_NAME || x.name.contains(&0) {
            return Err("extended attribute name empty, too long or holding a NUL byte".into());
        }
        if !XATTR_NAMESPACES.iter().any(|ns| x.name.starts_with(ns)) {
            return Err(format!(
                "extended attribute \"{}\" outside the user, trusted, security and system \
                 namespaces",
                x.name.escape_ascii()
            ));
        }
        if i > 0 && xattrs[i - 1].name >= x.name {
            return Err("extended attribute names not strictly increasing".into());
        }
        if x.value.len() > MAX_XATTR_VALUE {
            return Err("extended attribute value longer than 65 536 bytes".into());
        }
        total += x.name.len() + x.value.len();
        if total > MAX_XATTR_TOTAL {
            return Err("extended attributes larger than 262 144 bytes in all".into());
        }
    }
    Ok(())
}

fn check_ranges(ranges: &[DataRange], size: u64) -> Result<(), String> {
    if ranges.len() > MAX_RANGES {
        return Err(format!(
            "{} data ranges, more than {MAX_RANGES}",
            ranges.len()
        ));
    }
    // The first range may start at 0; every later one at least one byte after the
    // previous end (adjacent ranges are one range).
    let mut min_start = 0u64;
    for (i, r) in ranges.iter().enumerate() {
        let end = r.offset.checked_add(r.len);
        if r.len == 0 || end.is_none_or(|end| end > size) {
            return Err(format!("data range {i} empty or past the file's size"));
        }
        if r.offset < min_start {
            return Err(format!(
                "data range {i} overlaps, touches or precedes the previous"
            ));
        }
        min_start = end.unwrap().saturating_add(1);
    }
    Ok(())
}

fn check_extents(
    extents: &[Extent],
    data_len: u64,
    chain_len: usize,
    stream_len: u64,
) -> Result<(), String> {
    if extents.len() > MAX_EXTENTS {
        return Err(format!(
            "{} extents, more than {MAX_EXTENTS}",
            extents.len()
        ));
    }
    let mut sum = 0u64;
    for (i, x) in extents.iter().enumerate() {
        let end = x.offset.checked_add(x.len);
        if x.len == 0 || end.is_none() {
            return Err(format!("extent {i} empty or overflowing"));
        }
        if x.archive as usize > chain_len {
            return Err(format!(
                "extent {i} names archive {}, not in the chain",
                x.archive
            ));
        }
        // An extent into a parent is checked against that parent's stream length when its
        // directory is read (v2.8.2), before any byte of it is used.
        if x.archive == 0 && end.is_some_and(|end| end > stream_len) {
            return Err(format!("extent {i} ends past this archive's stream"));
        }
        sum = sum
            .checked_add(x.len)
            .ok_or_else(|| "extent lengths overflow".to_string())?;
    }
    if sum != data_len {
        return Err(format!(
            "extents hold {sum} bytes, the file's data is {data_len}"
        ));
    }
    Ok(())
}

/// Rule 3 for a reader that goes through entries in path order: the stack of the current
/// entry's ancestors, each with its kind. Path order puts a folder right before its
/// subtree, so popping every entry that is not an ancestor of the next one leaves exactly
/// its ancestors; memory is one path's depth.
///
/// Every entry is pushed, not only folders, so that "the parent is a symlink" is told from
/// "the parent is missing"; a non-folder is popped by the next entry not under it.
#[derive(Debug, Default)]
pub struct Ancestors {
    pub(super) stack: Vec<(Vec<u8>, u8)>,
}

/// Whether `anc` is a proper ancestor of `path` (a prefix ending at a `/`).
fn is_ancestor(anc: &[u8], path: &[u8]) -> bool {
    path.len() > anc.len() && path.starts_with(anc) && path[anc.len()] == b'/'
}

impl Ancestors {
    pub fn new() -> Self {
        Ancestors::default()
    }

    fn pop_to(&mut self, path: &[u8]) {
        while self
            .stack
            .last()
            .is_some_and(|(a, _)| !is_ancestor(a, path))
        {
            self.stack.pop();
        }
    }

    /// Rule 3 for `e` (entries given in path order): if its path has a parent, that parent
    /// is an entry of kind folder. Then `e` becomes a possible ancestor of what follows.
    pub fn check_parent(&mut self, e: &EntryV2) -> Result<(), EntryError> {
        self.pop_to(&e.path);
        if let Some(p) = parent(&e.path) {
            match self.stack.last() {
                Some((a, kind)) if a.as_slice() == p => {
                    if *kind != KIND_DIR {
                        return Err(unsafe_path(&e.path, "its parent is not a folder"));
                    }
                }
                _ => {
                    return Err(unsafe_path(
                        &e.path,
                        "its parent folder is not in the archive",
                    ));
                }
            }
        }
        self.stack.push((e.path.clone(), e.kind));
        Ok(())
    }

    /// Seed a folder the caller looked up itself (an out-of-order reader starting inside
    /// the index: the folders above the first entry it reads, outermost first).
    pub fn push_known(&mut self, path: Vec<u8>) {
        self.pop_to(&path);
        self.stack.push((path, KIND_DIR));
    }
}

// ---------------------------------------------------------------------------------------
// Meta frame plaintexts

fn decode_entry(c: &mut Cursor) -> Result<EntryV2, String> {
    // Byte strings are bounded only by the bytes left (they cannot allocate more than the
    // plaintext holds), so that an over-long path is still refused by rule 1 as
    // [`UnsafePath`]; sequences of structs by their limit as well, since those grow in
    // memory beyond their encoding.
    let path = c.bytes("path", usize::MAX)?;
    let kind = c.take("kind")?;
    let mode = c.take("mode")?;
    let uid = c.take("uid")?;
    let gid = c.take("gid")?;
    let mtime_sec = c.take("mtime")?;
    let mtime_nsec = c.take("mtime nanoseconds")?;
    let size = c.take("size")?;
    let rdev_major = c.take("rdev major")?;
    let rdev_minor = c.take("rdev minor")?;
    let link_target = match c.option("link target")? {
        true => Some(c.bytes("link target", usize::MAX)?),
        false => None,
    };
    let hardlink_to = c.take("hard-link target")?;
    let n = c.count("extended attributes", MAX_XATTRS, MIN_XATTR)?;
    let mut xattrs = Vec::with_capacity(n);
    for _ in 0..n {
        let name = c.bytes("extended attribute name", MAX_XATTR_NAME)?;
        let value = c.bytes("extended attribute value", MAX_XATTR_VALUE)?;
        xattrs.push(Xattr { name, value });
    }
    let data_ranges = match c.option("data ranges")? {
        true => {
            let n = c.count("data ranges", MAX_RANGES, MIN_RANGE)?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(c.take::<DataRange>("data range")?);
            }
            Some(v)
        }
        false => None,
    };
    let n = c.count("extents", MAX_EXTENTS, MIN_EXTENT)?;
    let mut extents = Vec::with_capacity(n);
    for _ in 0..n {
        extents.push(c.take::<Extent>("extent")?);
    }
    let content_hash = c.take("content hash")?;
    Ok(EntryV2 {
        path,
        kind,
        mode,
        uid,
        gid,
        mtime_sec,
        mtime_nsec,
        size,
        rdev_major,
        rdev_minor,
        link_target,
        hardlink_to,
        xattrs,
        data_ranges,
        extents,
        content_hash,
    })
}

/// Decode an index chunk's plaintext (`Vec<EntryV2>`), consumed exactly. The count is
/// refused before allocating when it exceeds the bytes left divided by 17 (v2.7.2).
pub fn decode_chunk(plain: &[u8]) -> Result<Vec<EntryV2>, String> {
    let mut c = Cursor::new(plain);
    let n = c.count("entry count", usize::MAX, MIN_ENTRY_ENCODING)?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(decode_entry(&mut c).map_err(|e| format!("entry {i} of the chunk: {e}"))?);
    }
    c.finish("index chunk")?;
    Ok(out)
}

/// Decode a block-table chunk's plaintext (`Vec<BlockRefV2>`), consumed exactly.
pub fn decode_block_chunk(plain: &[u8]) -> Result<Vec<BlockRefV2>, String> {
    let mut c = Cursor::new(plain);
    let n = c.count("block record count", BLOCKS_PER_CHUNK, MIN_BLOCK_REF)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(c.take::<BlockRefV2>("block record")?);
    }
    c.finish("block-table chunk")?;
    Ok(out)
}

/// Decode the directory's plaintext, consumed exactly.
pub fn decode_directory(plain: &[u8]) -> Result<Directory, String> {
    let mut c = Cursor::new(plain);
    let n = c.count("index chunk count", MAX_CHUNKS, MIN_CHUNK_REF)?;
    let mut chunks = Vec::with_capacity(n);
    for _ in 0..n {
        let offset = c.take("chunk offset")?;
        let frame_len = c.take("chunk frame length")?;
        let entry_count = c.take("chunk entry count")?;
        let first_path = c.bytes("chunk first path", usize::MAX)?;
        let tag = c.take("chunk tag")?;
        chunks.push(ChunkRef {
            offset,
            frame_len,
            entry_count,
            first_path,
            tag,
        });
    }
    let n = c.count("block-table chunk count", usize::MAX, MIN_BLOCK_CHUNK_REF)?;
    let mut block_chunks = Vec::with_capacity(n);
    for _ in 0..n {
        block_chunks.push(c.take::<BlockChunkRef>("block-table chunk reference")?);
    }
    let entry_count = c.take("entry count")?;
    let stream_len = c.take("stream length")?;
    let n = c.count("parent commitments", MAX_PARENTS, MIN_COMMITMENT)?;
    let mut parent_commitments = Vec::with_capacity(n);
    for _ in 0..n {
        parent_commitments.push(c.take::<[u8; 32]>("parent commitment")?);
    }
    let totals = c.take("totals")?;
    c.finish("directory")?;
    Ok(Directory {
        chunks,
        block_chunks,
        entry_count,
        stream_len,
        parent_commitments,
        totals,
    })
}
