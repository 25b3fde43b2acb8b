//! A demo node: `math.add`, `math.div`, `greeter.hello`, and a `user.created` handler in group
//! `mailer` whose received events `mailer.received` returns.
//!
//! Run with: `cargo run --example node` (no server needed). It reads `moleculer.toml` from the
//! current directory, then `MOL_*` variables, e.g.
//!
//! ```sh
//! MOL_NODE_ID=node-a MOL_TRANSPORTER=tcp://127.0.0.1:6001/node-a,127.0.0.1:6002/node-b cargo run --example node
//! MOL_NODE_ID=node-b MOL_TRANSPORTER=tcp://127.0.0.1:6001/node-a,127.0.0.1:6002/node-b cargo run --example node
//! ```

#[path = "support/demo.rs"]
mod demo;

#[tokio::main]
async fn main() {
    demo::init_logging("info");
    if let Err(err) = demo::run_node().await {
        // A sentence, not a debug dump: this is what an operator reads.
        eprintln!("the node stopped: {err}");
        std::process::exit(1);
    }
}
