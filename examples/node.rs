//! A demo node: `math.add`, `math.div`, `greeter.hello`, `cached.square` (cached when
//! `MOL_CACHER` names a cacher), and a `user.created` handler in group
//! `mailer` whose received events `mailer.received` returns.
//!
//! Run with: `cargo run --example node` (no server needed; `-- --help` lists the flags). It reads
//! `moleculer.toml` from the current directory (or `--config FILE`), then `MOL_*` variables, e.g.
//!
//! ```sh
//! MOL_NODE_ID=node-a MOL_TRANSPORTER=tcp://127.0.0.1:6001/node-a,127.0.0.1:6002/node-b cargo run --example node
//! MOL_NODE_ID=node-b MOL_TRANSPORTER=tcp://127.0.0.1:6001/node-a,127.0.0.1:6002/node-b cargo run --example node
//! ```

#[path = "support/demo.rs"]
mod demo;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    demo::run_node("info").await
}
