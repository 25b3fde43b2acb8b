// Shared by the interop suite and the discovery timing script: free ports, polling, Rust and
// Node.js nodes in their own processes, and Redis / etcd servers on loopback.
"use strict";
const net = require("net");
const os = require("os");
const path = require("path");
const { spawn } = require("child_process");

const RUST_NODE_BIN = process.env.RUST_NODE_BIN;
if (!RUST_NODE_BIN) {
	console.error("RUST_NODE_BIN must point to the compiled `node` example (scripts/interop.sh sets it)");
	process.exit(2);
}

const sleep = ms => new Promise(r => setTimeout(r, ms));

function freePort() {
	return new Promise((resolve, reject) => {
		const srv = net.createServer();
		srv.unref();
		srv.on("error", reject);
		srv.listen(0, "127.0.0.1", () => {
			const { port } = srv.address();
			srv.close(() => resolve(port));
		});
	});
}

async function until(what, fn, timeout = 10000, every = 20) {
	const start = Date.now();
	for (;;) {
		try {
			if (await fn()) return Date.now() - start;
		} catch (_) {
			/* not yet */
		}
		if (Date.now() - start > timeout) throw new Error(`timed out waiting for ${what}`);
		await sleep(every);
	}
}

/// A Rust demo node in its own process. With `{ ready: true }` it logs at info level and
/// `child.ready` resolves when the node reports that its broker has started.
function startRust(nodeID, transport, serializer, protocol, { ready = false, env = {} } = {}) {
	const child = spawn(RUST_NODE_BIN, [], {
		cwd: os.tmpdir(),
		env: {
			...env,
			PATH: process.env.PATH,
			RUST_LOG: ready ? "info" : process.env.RUST_LOG || "warn",
			MOL_NODE_ID: nodeID,
			MOL_TRANSPORTER: transport.rust,
			MOL_DISCOVERER: transport.rustDiscoverer || "Local",
			MOL_SERIALIZER: serializer,
			MOL_TRANSIT__PROTOCOL_VERSION: protocol,
			MOL_HEARTBEAT_INTERVAL: "1",
			MOL_HEARTBEAT_TIMEOUT: "3"
		},
		stdio: ["ignore", "inherit", ready ? "pipe" : "inherit"]
	});
	if (ready) {
		child.ready = new Promise(resolve => {
			let seen = "";
			child.stderr.on("data", chunk => {
				seen += chunk;
				if (seen.includes("demo node ready")) {
					seen = "";
					resolve();
				}
			});
		});
	}
	return child;
}

function startJsProcess(pkg, nodeID, serializer, transport) {
	const child = spawn(process.execPath, [path.join(__dirname, "js-node.js"), pkg, nodeID, serializer, JSON.stringify(transport.js), transport.jsDiscoverer || "Local"], {
		stdio: ["ignore", "pipe", "inherit"]
	});
	return new Promise(resolve => child.stdout.once("data", () => resolve(child)));
}

function rustSees(broker, rustID, nodeID) {
	return broker.call("$node.list", {}, { nodeID: rustID }).then(list => list.some(n => n.id === nodeID && n.available));
}

function jsSees(broker, nodeID) {
	const node = broker.registry.nodes.get(nodeID);
	return !!(node && node.available);
}

/// How nodes reach each other: TCP with static urls, or a Redis server.
async function tcpTransport() {
	const ports = await Promise.all([1, 2, 3, 4, 5].map(freePort));
	const urls = [`127.0.0.1:${ports[0]}/rust-1`, `127.0.0.1:${ports[1]}/js-1`, `127.0.0.1:${ports[2]}/js-2`, `127.0.0.1:${ports[3]}/rust-2`, `127.0.0.1:${ports[4]}/js-3`];
	return { name: "TCP", rust: "tcp://" + urls.join(","), js: { type: "TCP", options: { urls, udpDiscovery: false } }, stop() {} };
}

async function redisTransport(withDiscoverer = false) {
	const port = await freePort();
	const server = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
	await until("redis-server", () => new Promise(resolve => {
		const sock = net.connect(port, "127.0.0.1", () => { sock.end(); resolve(true); });
		sock.on("error", () => resolve(false));
	}), 10000);
	const url = `redis://127.0.0.1:${port}`;
	if (withDiscoverer) {
		return { name: "Redis, with the Redis discoverer", rust: url, rustDiscoverer: url, js: url, jsDiscoverer: url, stop() { server.kill("SIGKILL"); } };
	}
	return { name: "Redis", rust: url, js: url, stop() { server.kill("SIGKILL"); } };
}

/// The Redis transporter with the etcd3 discoverer (Moleculer's TCP transporter works only
/// with Local discovery).
async function etcdTransport() {
	const redis = await redisTransport();
	const [clientPort, peerPort] = [await freePort(), await freePort()];
	const dir = path.join(os.tmpdir(), `interop-etcd-${process.pid}-${clientPort}`);
	const client = `http://127.0.0.1:${clientPort}`;
	const peer = `http://127.0.0.1:${peerPort}`;
	const etcd = spawn("etcd", ["--data-dir", dir, "--name", "interop", "--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", `interop=${peer}`, "--log-level", "error"], { stdio: "ignore" });
	await until("etcd", () => new Promise(resolve => {
		const sock = net.connect(clientPort, "127.0.0.1", () => { sock.end(); resolve(true); });
		sock.on("error", () => resolve(false));
	}), 15000);
	const url = `etcd3://127.0.0.1:${clientPort}`;
	return {
		name: "Redis, with the etcd3 discoverer", rust: redis.rust, rustDiscoverer: url, js: redis.js, jsDiscoverer: url,
		stop() { etcd.kill("SIGKILL"); redis.stop(); require("fs").rmSync(dir, { recursive: true, force: true }); }
	};
}


/// Resolves when `child` has exited (at once if it already has).
function exited(child) {
	if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
	return new Promise(resolve => child.once("exit", () => resolve()));
}

module.exports = { sleep, freePort, until, exited, startRust, startJsProcess, rustSees, jsSees, tcpTransport, redisTransport, etcdTransport };
