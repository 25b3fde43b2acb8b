//! The client side of a supervisor's control socket (see `moleculer_runner::control_socket`):
//! one JSON request, one JSON answer.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::commands::Failure;

/// Sends one request to the supervisor of `node` and returns its answer (an error answer is
/// a [`Failure`]).
pub async fn ask(node: &str, request: &Value, wait: Duration) -> Result<Value, Failure> {
    let path = moleculer_runner::control_socket(node);
    let exchange = async {
        let stream = UnixStream::connect(&path).await?;
        let (read, mut write) = stream.into_split();
        write.write_all(format!("{request}\n").as_bytes()).await?;
        let mut line = String::new();
        BufReader::new(read).read_line(&mut line).await?;
        Ok::<String, std::io::Error>(line)
    };
    let line = tokio::time::timeout(wait, exchange)
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
    Ok(answer)
}
