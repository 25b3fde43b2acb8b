// Remote calls between two Moleculer (Node.js) brokers in one process over the in-memory
// `Fake` transporter, at 1 and 100 requests in flight: the counterpart of
// crates/moleculer-broker/benches/remote.rs. Usage: node remote.js [JSON|MsgPack] [transporter]
// (the transporter defaults to Fake; e.g. redis://127.0.0.1:6379 for scripts/bench-redis.sh).
"use strict";
const { ServiceBroker } = require("moleculer");

const MEASURE_MS = 2000;
const serializer = process.argv[2] || "JSON";
const transporter = process.argv[3] || "Fake";

async function measure(caller, inFlight) {
	const params = { msg: "0123456789" };
	for (let i = 0; i < 2000; i++) await caller.call("bench.echo", params);
	const latencies = [];
	const start = process.hrtime.bigint();
	const limit = BigInt(MEASURE_MS) * 1000000n;
	const worker = async () => {
		while (process.hrtime.bigint() - start < limit) {
			const t = process.hrtime.bigint();
			await caller.call("bench.echo", params);
			latencies.push(Number(process.hrtime.bigint() - t) / 1000);
		}
	};
	await Promise.all(Array.from({ length: inFlight }, worker));
	const secs = Number(process.hrtime.bigint() - start) / 1e9;
	latencies.sort((a, b) => a - b);
	const pct = p => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))];
	return [latencies.length / secs, pct(0.5), pct(0.99)];
}

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
		const [ops, p50, p99] = await measure(a, inFlight);
		console.log(`${serializer.padEnd(8)} ${String(inFlight).padStart(3)} in flight ${ops.toFixed(0).padStart(9)} calls/s   p50 ${p50.toFixed(1).padStart(7)} µs   p99 ${p99.toFixed(1).padStart(7)} µs`);
	}
	await a.stop();
	await b.stop();
})();
