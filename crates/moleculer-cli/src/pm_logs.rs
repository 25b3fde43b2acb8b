//! `moleculer pm <nodeID> logs [worker] [--lines n] [--follow]`: the end of each worker's log
//! file (reaching into the last rotated file when the current one is short), then, with
//! `--follow`, what the workers write next, across rotations.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::commands::Failure;
use crate::Cli;

/// How often a followed file is looked at.
const POLL: Duration = Duration::from_millis(200);

/// One worker's log being printed.
struct Followed {
    worker: String,
    file: PathBuf,
    /// Bytes of the current file already printed.
    offset: u64,
    /// The current file's inode: a new one means the file was rotated.
    inode: u64,
    /// The start of a line not finished yet.
    partial: Vec<u8>,
}

/// Prints the last `lines` of each chosen worker's log, then follows them if asked.
pub async fn run(
    cli: &Cli,
    node: &str,
    target: &str,
    lines: usize,
    follow: bool,
) -> Result<(), Failure> {
    let answer = crate::control_client::ask(
        node,
        &json!({ "cmd": "logs", "target": target }),
        cli.wait(),
    )
    .await?;
    let mut followed: Vec<Followed> = answer
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| {
            Some(Followed {
                worker: w["worker"].as_str()?.to_owned(),
                file: PathBuf::from(w["file"].as_str()?),
                offset: 0,
                inode: 0,
                partial: Vec::new(),
            })
        })
        .collect();
    let prefixed = followed.len() > 1;
    for log in &mut followed {
        let (tail, offset) = tail(&log.file, lines)
            .map_err(|e| Failure::failed(format!("cannot read {}: {e}", log.file.display())))?;
        log.offset = offset;
        log.inode = inode(&log.file);
        for line in tail {
            if !print_line(prefixed.then_some(log.worker.as_str()), &line) {
                return Ok(());
            }
        }
    }
    if !follow {
        return Ok(());
    }
    loop {
        tokio::time::sleep(POLL).await;
        for log in &mut followed {
            for line in log.read_new() {
                if !print_line(prefixed.then_some(log.worker.as_str()), &line) {
                    // Whoever read our output is gone (`| head`): nothing more to do.
                    return Ok(());
                }
            }
        }
    }
}

/// Prints one line; false once stdout is closed.
fn print_line(worker: Option<&str>, line: &str) -> bool {
    let mut out = std::io::stdout().lock();
    match worker {
        Some(worker) => writeln!(out, "{worker} | {line}"),
        None => writeln!(out, "{line}"),
    }
    .and_then(|()| out.flush())
    .is_ok()
}

fn inode(file: &Path) -> u64 {
    std::fs::metadata(file).map_or(0, |m| m.ino())
}

/// The last `n` lines of `file` (with the newest rotated file before it), and the size of
/// `file` they run to. A file not written yet is empty.
fn tail(file: &Path, n: usize) -> std::io::Result<(Vec<String>, u64)> {
    let current = read_or_empty(file)?;
    let mut lines: VecDeque<String> = VecDeque::new();
    for text in [read_or_empty(&rotated(file))?, current.clone()] {
        for line in String::from_utf8_lossy(&text).lines() {
            lines.push_back(line.to_owned());
            if lines.len() > n {
                lines.pop_front();
            }
        }
    }
    Ok((lines.into(), current.len() as u64))
}

fn read_or_empty(file: &Path) -> std::io::Result<Vec<u8>> {
    match std::fs::read(file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        other => other,
    }
}

/// `<file>.1`, where the supervisor moves a full log.
fn rotated(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

impl Followed {
    /// The whole lines written since the last look. A new inode means the file was rotated:
    /// the rest of the old one (now `.1`) comes first, then the new one from its start.
    fn read_new(&mut self) -> Vec<String> {
        let mut bytes = Vec::new();
        let now = inode(&self.file);
        if now != self.inode {
            let old = rotated(&self.file);
            if self.inode != 0 && inode(&old) == self.inode {
                let _ = read_from(&old, self.offset, &mut bytes);
            }
            self.inode = now;
            self.offset = 0;
        }
        if let Ok(read) = read_from(&self.file, self.offset, &mut bytes) {
            self.offset += read;
        }
        self.partial.extend_from_slice(&bytes);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        String::from_utf8_lossy(&complete)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Appends what `file` holds past `offset` to `into`; how many bytes that was.
fn read_from(file: &Path, offset: u64, into: &mut Vec<u8>) -> std::io::Result<u64> {
    let mut f = std::fs::File::open(file)?;
    f.seek(SeekFrom::Start(offset))?;
    Ok(f.read_to_end(into)? as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_reaches_into_the_rotated_file_and_follow_survives_a_rotation() {
        let dir = std::env::temp_dir().join(format!("pm-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("w.log");
        std::fs::write(rotated(&file), "a\nb\nc\n").unwrap();
        std::fs::write(&file, "d\ne\n").unwrap();
        let (lines, offset) = tail(&file, 3).unwrap();
        assert_eq!(lines, ["c", "d", "e"]);
        assert_eq!(offset, 4);
        let mut log = Followed {
            worker: "w".into(),
            file: file.clone(),
            offset,
            inode: inode(&file),
            partial: Vec::new(),
        };
        assert!(log.read_new().is_empty());
        std::fs::write(&file, "d\ne\nf\ng").unwrap();
        assert_eq!(log.read_new(), ["f"], "a line is printed once it is whole");
        // Rotation: the old file (with its end) becomes .1, a new file starts, and has grown
        // past the old offset before the next look.
        std::fs::remove_file(rotated(&file)).unwrap();
        std::fs::rename(&file, rotated(&file)).unwrap();
        let mut old = std::fs::OpenOptions::new()
            .append(true)
            .open(rotated(&file))
            .unwrap();
        old.write_all(b"-end\n").unwrap();
        std::fs::write(&file, "h\ni\nj\nk\nl\n").unwrap();
        assert_eq!(log.read_new(), ["g-end", "h", "i", "j", "k", "l"]);
        let (none, _) = tail(&dir.join("missing.log"), 5).unwrap();
        assert!(none.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
