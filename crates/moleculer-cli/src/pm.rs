//! `moleculer pm <nodeID> ...`: the workers of a supervisor on this machine, through its
//! control socket.

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::commands::Failure;
use crate::table::render;
use crate::{Cli, PmAction};

/// Sends one request to the supervisor of `node` and prints its answer.
pub async fn run(cli: &Cli, node: &str, action: &PmAction) -> Result<(), Failure> {
    let request = match action {
        PmAction::List => json!({ "cmd": "list" }),
        PmAction::Restart { target } => json!({ "cmd": "restart", "target": target }),
        PmAction::Stop { target } => json!({ "cmd": "stop", "target": target }),
        PmAction::Start { target } => json!({ "cmd": "start", "target": target }),
        PmAction::Scale { size } => json!({ "cmd": "scale", "size": size }),
    };
    let path = moleculer_runner::control_socket(node);
    let ask = async {
        let stream = UnixStream::connect(&path).await?;
        let (read, mut write) = stream.into_split();
        write.write_all(format!("{request}\n").as_bytes()).await?;
        let mut line = String::new();
        BufReader::new(read).read_line(&mut line).await?;
        Ok::<String, std::io::Error>(line)
    };
    let line = tokio::time::timeout(cli.wait(), ask)
        .await
        .map_err(|_| Failure::failed(format!("the supervisor of '{node}' did not answer")))?
        .map_err(|e| {
            Failure::failed(format!(
                "no supervisor of '{node}' on this machine ({}: {e})",
                path.display()
            ))
        })?;
    let answer: Value = serde_json::from_str(&line)
        .map_err(|e| Failure::failed(format!("the supervisor answered something else: {e}")))?;
    if let Some(err) = answer["error"].as_str() {
        return Err(Failure::failed(err.to_owned()));
    }
    if cli.json || !matches!(action, PmAction::List) {
        println!("{answer}");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = answer
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            vec![
                w["worker"].as_str().unwrap_or_default().to_owned(),
                w["pid"]
                    .as_u64()
                    .map_or_else(|| "-".into(), |p| p.to_string()),
                w["status"].as_str().unwrap_or_default().to_owned(),
                format!("{:.0} s", w["uptimeSeconds"].as_f64().unwrap_or(0.0)),
                w["restarts"].to_string(),
                format!("{:.1}%", w["cpuPercent"].as_f64().unwrap_or(0.0)),
                format!("{:.1} MiB", w["memoryKiB"].as_f64().unwrap_or(0.0) / 1024.0),
            ]
        })
        .collect();
    println!(
        "{}",
        render(
            &["Worker", "PID", "Status", "Uptime", "Restarts", "CPU", "Memory"],
            &rows
        )
    );
    Ok(())
}
