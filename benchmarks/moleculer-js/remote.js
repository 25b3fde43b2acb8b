// Remote calls between two Moleculer (Node.js) brokers in one process over the in-memory
// `Fake` transporter, at 1 and 100 requests in flight: the counterpart of
// crates/moleculer-broker/benches/remote.rs. Usage: node remote.js [JSON|MsgPack] [transporter]
// (the transporter defaults to Fake; e.g. redis://127.0.0.1:6379 for scripts/bench-redis.sh).
"use strict";
const { ServiceBroker } = require("moleculer");
const measure = require("./measure");

const MEASURE_MS = 2000;
const serializer = process.argv[2] || "JSON";
const transporter = process.argv[3] || "Fake";


(async () => {
	const opts = { transporter, serializer, logger: false, namespace: "bench-js" };
	const a = new ServiceBroker({ ...opts, nodeID: "caller" });
	const b = new ServiceBroker({ ...opts, nodeID: "callee" });
	b.createService({ name: "bench", actions: { echo(ctx) { return ctx.params; } } });
	await b.start();
	await a.start();
	await a.waitForServices("bench");
	console.log(`moleculer ${ServiceBroker.MOLECULER_VERSION} on node ${process.version}, ${transporter} transporter`);
	for (const inFlight of [1, 100]) {
		const [ops, p50, p99] = await measure(a, inFlight, MEASURE_MS);
		console.log(`${serializer.padEnd(8)} ${String(inFlight).padStart(3)} in flight ${ops.toFixed(0).padStart(9)} calls/s   p50 ${(p50 * 1000).toFixed(1).padStart(7)} µs   p99 ${(p99 * 1000).toFixed(1).padStart(7)} µs`);
	}
	await a.stop();
	await b.stop();
})();
