//! The file system's floor for restoring a tree: the time to create every file and folder of
//! SOURCE again under DEST with the same sizes, using the system calls coffer's restore makes
//! for each file (create a temporary name, write, set mode and times, rename), from THREADS
//! threads, with no archive, no decryption and no authentication at all. A restore of the
//! same tree cannot be faster than this on the same file system; docs/PERFORMANCE.md compares
//! the two.
//!
//!     cargo run --release --example create_floor -- SOURCE DEST [THREADS]
//!
//! DEST must not exist. Prints one line: files, bytes, threads, seconds, GB/s.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: create_floor SOURCE DEST [THREADS]");
        std::process::exit(2);
    }
    let source = PathBuf::from(&args[1]);
    let dest = PathBuf::from(&args[2]);
    let threads: usize = args.get(3).map_or(Ok(2), |t| t.parse()).unwrap_or(2).max(1);

    // Survey first, outside the timed part: the restore knows the whole index up front too.
    let mut folders = Vec::new();
    let mut files = Vec::new();
    survey(&source, Path::new(""), &mut folders, &mut files)?;
    let bytes: u64 = files.iter().map(|(_, len)| len).sum();
    let largest = files.iter().map(|(_, len)| *len).max().unwrap_or(0);
    let content = vec![0x5au8; usize::try_from(largest).expect("file fits in memory")];

    let start = Instant::now();
    fs::create_dir(&dest)?;
    for folder in &folders {
        fs::create_dir(dest.join(folder))?;
    }
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> std::io::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((path, len)) = files.get(i) else {
                            return Ok(());
                        };
                        let len = usize::try_from(*len).expect("file fits in memory");
                        write_like_restore(&dest.join(path), &content[..len])?;
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("worker panicked"))
    })?;
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "files {} bytes {} threads {} seconds {:.3} GB/s {:.3}",
        files.len(),
        bytes,
        threads,
        seconds,
        bytes as f64 / seconds / 1e9
    );
    Ok(())
}

fn survey(
    root: &Path,
    rel: &Path,
    folders: &mut Vec<PathBuf>,
    files: &mut Vec<(PathBuf, u64)>,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = rel.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            folders.push(path.clone());
            survey(root, &path, folders, files)?;
        } else if kind.is_file() {
            files.push((path, entry.metadata()?.len()));
        }
    }
    Ok(())
}

/// The same calls, in the same order, as restore's create_partial + finish_partial for a
/// small file.
fn write_like_restore(dest: &Path, content: &[u8]) -> std::io::Result<()> {
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".partial");
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(content)?;
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    file.set_modified(std::time::SystemTime::UNIX_EPOCH)?;
    fs::rename(&tmp, dest)
}
