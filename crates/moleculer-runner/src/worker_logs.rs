//! Worker output: each worker's stdout and stderr go to `<log dir>/<worker>.log` (and on to the
//! supervisor's own stdout and stderr unless `--silent`). A file that reaches its size limit is
//! renamed `<worker>.log.1` (the older ones shift to `.2`, `.3`, ...) and a new one begun, so a
//! chatty worker never fills the disk.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};

/// Where and how much worker output is kept.
#[derive(Debug, Clone)]
pub(crate) struct LogPolicy {
    /// The folder of the `<worker>.log` files.
    pub dir: PathBuf,
    /// A file is rotated once it holds this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept besides the current one.
    pub keep: usize,
    /// Whether output is also passed on to the supervisor's terminal.
    pub echo: bool,
}

impl LogPolicy {
    /// The current log file of `worker`.
    pub fn file_of(&self, worker: &str) -> PathBuf {
        self.dir.join(format!("{worker}.log"))
    }
}

/// One worker's log file, shared by the readers of its stdout and stderr.
pub(crate) struct LogFile {
    path: PathBuf,
    file: Option<File>,
    written: u64,
    max_bytes: u64,
    keep: usize,
}

impl LogFile {
    /// Opens (appends to) `path`, creating its folder.
    pub fn open(path: PathBuf, max_bytes: u64, keep: usize) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let written = file.metadata()?.len();
        Ok(Self {
            path,
            file: Some(file),
            written,
            max_bytes: max_bytes.max(1),
            keep,
        })
    }

    /// Appends `bytes`, first rotating when the file is full.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.written > 0 && self.written + bytes.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        if let Some(file) = self.file.as_mut() {
            file.write_all(bytes)?;
            self.written += bytes.len() as u64;
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                let from = rotated(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.file = Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?,
        );
        self.written = 0;
        Ok(())
    }
}

/// `<file>.<n>`: the n-th most recent rotated file.
pub(crate) fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Which of the supervisor's own streams a worker stream is passed on to.
#[derive(Clone, Copy)]
pub(crate) enum Stream {
    Out,
    Err,
}

/// Copies `from` into `log` until it closes. Chunks are written whole: a worker's logger
/// writes a line per write, so lines are not split between files.
pub(crate) async fn capture(
    mut from: impl AsyncRead + Unpin,
    log: Arc<Mutex<LogFile>>,
    echo: Option<Stream>,
) {
    let mut chunk = vec![0u8; 8192];
    let mut warned = false;
    loop {
        let n = match from.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let bytes = &chunk[..n];
        let written = log.lock().map_or(Ok(()), |mut log| log.write(bytes));
        if let Err(err) = written {
            if !warned {
                warned = true;
                tracing::warn!("cannot write a worker's log file: {err}");
            }
        }
        // The terminal may be gone (a closed pipe); the file is what counts.
        let _ = match echo {
            Some(Stream::Out) => std::io::stdout().write_all(bytes),
            Some(Stream::Err) => std::io::stderr().write_all(bytes),
            None => Ok(()),
        };
    }
}

/// `10M`, `512K`, `1G` or plain bytes.
pub(crate) fn parse_size(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let (digits, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => value.split_at(at),
        None => (value, ""),
    };
    let scale: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(format!("'{value}' is not a size (for example 10M, 512K)")),
    };
    match digits.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n.saturating_mul(scale)),
        _ => Err(format!(
            "'{value}' is not a size of at least 1 byte (for example 10M, 512K)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("worker-logs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_full_file_is_rotated_and_only_keep_old_files_stay() {
        let dir = scratch("rotate");
        let path = dir.join("w-worker-1.log");
        let mut log = LogFile::open(path.clone(), 100, 2).unwrap();
        for i in 0..20 {
            log.write(format!("line {i:02} of forty bytes, padded.....\n").as_bytes())
                .unwrap();
        }
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(size(&path) <= 100, "{}", size(&path));
        assert!(size(&rotated(&path, 1)) <= 100);
        assert!(size(&rotated(&path, 2)) > 0);
        assert!(
            !rotated(&path, 3).exists(),
            "only two rotated files are kept"
        );
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.ends_with("line 19 of forty bytes, padded.....\n"));
        let previous = std::fs::read_to_string(rotated(&path, 1)).unwrap();
        assert!(previous.contains("line 17"), "{previous}");
        // Reopening appends where it left off.
        drop(log);
        let mut again = LogFile::open(path.clone(), 100, 2).unwrap();
        again.write(b"after\n").unwrap();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .ends_with("padded.....\nafter\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn capture_copies_a_stream_into_the_file() {
        let dir = scratch("capture");
        let path = dir.join("c.log");
        let log = Arc::new(Mutex::new(LogFile::open(path.clone(), 1 << 20, 1).unwrap()));
        capture(&b"one\ntwo\n"[..], log.clone(), None).await;
        capture(&b"three\n"[..], log, None).await;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\nthree\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").unwrap_err().contains("at least 1"));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5X").unwrap_err().contains("not a size"));
    }
}
