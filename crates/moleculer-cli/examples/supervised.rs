//! A node for trying `moleculer pm`: the `echo` service through the runner, so that
//!
//! ```sh
//! MOL_NODE_ID=shop MOL_TRANSPORTER=TCP cargo run -p moleculer-cli --example supervised -- --instances 3
//! moleculer pm shop list        # (in another terminal) the three workers
//! moleculer pm shop monit       # CPU, memory and calls/s per worker, live
//! ```

use moleculer_runner::Runner;
use moleculer_test::services::Echo;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    Runner::new().name("echo node").service(Echo).run().await
}
