// Remote calls over Moleculer's TCP transporter between two Node.js processes, at 1 and 100
// requests in flight: the counterpart of crates/moleculer-transporter-tcp/benches/tcp.rs.
// Usage: node tcp.js
"use strict";
const net = require("net");
const { spawn } = require("child_process");
const { ServiceBroker } = require("moleculer");
const measure = require("./measure");

const MEASURE_MS = 3000;

function freePort() {
	return new Promise(resolve => {
		const srv = net.createServer();
		srv.listen(0, "127.0.0.1", () => {
			const { port } = srv.address();
			srv.close(() => resolve(port));
		});
	});
}

function broker(nodeID, urls) {
	return new ServiceBroker({ nodeID, logger: false, transporter: { type: "TCP", options: { urls, udpDiscovery: false } } });
}

async function callee(urls) {
	const b = broker("callee", urls);
	b.createService({ name: "bench", actions: { echo(ctx) { return ctx.params; } } });
	await b.start();
	process.stdout.write("ready\n");
	process.stdin.on("end", () => b.stop().then(() => process.exit(0)));
	process.stdin.resume();
}


(async () => {
	if (process.argv[2] === "callee") return callee(JSON.parse(process.argv[3]));
	const ports = [await freePort(), await freePort()];
	const urls = [`127.0.0.1:${ports[0]}/caller`, `127.0.0.1:${ports[1]}/callee`];
	const child = spawn(process.execPath, [__filename, "callee", JSON.stringify(urls)], { stdio: ["pipe", "pipe", "inherit"] });
	await new Promise(r => child.stdout.once("data", r));
	const caller = broker("caller", urls);
	await caller.start();
	await caller.waitForServices("bench", 30000);
	console.log(`moleculer ${ServiceBroker.MOLECULER_VERSION} on node ${process.version} over TCP, two processes, JSON, 10-byte echo`);
	for (const inFlight of [1, 100]) {
		const [ops, p50, p99] = await measure(caller, inFlight, MEASURE_MS);
		console.log(`js   ${String(inFlight).padStart(3)} in flight ${ops.toFixed(0).padStart(9)} calls/s   p50 ${p50.toFixed(3).padStart(7)} ms   p99 ${p99.toFixed(3).padStart(7)} ms`);
	}
	await caller.stop();
	child.stdin.end();
})();
