// Remote calls between two Moleculer (Node.js) brokers in one process over the in-memory
// `Fake` transporter, at 1 and 100 requests in flight: the counterpart of
// crates/moleculer-broker/benches/remote.rs. Usage: node remote.js [JSON|MsgPack] [transporter]
// (the transporter defaults to Fake; e.g. redis://127.0.0.1:6379 for scripts/bench-redis.sh).
// TRANSMIT=encrypted or compressed adds Moleculer's Encryption (aes-256-cbc) or Compression
// (deflate, every packet) middleware, as BENCH_TRANSMIT does for the Rust bench.
"use strict";
const { ServiceBroker, Middlewares } = require("moleculer");
const measure = require("./measure");

const MEASURE_MS = 2000;
const serializer = process.argv[2] || "JSON";
const transporter = process.argv[3] || "Fake";


(async () => {
	const middlewares = {
		encrypted: [Middlewares.Transmit.Encryption("0123456789abcdef0123456789abcdef", "aes-256-cbc", "0123456789abcdef")],
		compressed: [Middlewares.Transmit.Compression({ method: "deflate", threshold: 0 })]
	}[process.env.TRANSMIT] || [];
	const opts = { transporter, serializer, logger: false, namespace: "bench-js", middlewares };
	const a = new ServiceBroker({ ...opts, nodeID: "caller" });
	const b = new ServiceBroker({ ...opts, nodeID: "callee" });
	b.createService({ name: "bench", actions: { echo(ctx) { return ctx.params; } } });
	await b.start();
	await a.start();
	await a.waitForServices("bench");
	console.log(`moleculer ${ServiceBroker.MOLECULER_VERSION} on node ${process.version}, ${transporter} transporter${process.env.TRANSMIT ? ", transmit: " + process.env.TRANSMIT : ""}`);
	for (const inFlight of [1, 100]) {
		const [ops, p50, p99] = await measure(a, inFlight, MEASURE_MS);
		console.log(`${serializer.padEnd(8)} ${String(inFlight).padStart(3)} in flight ${ops.toFixed(0).padStart(9)} calls/s   p50 ${(p50 * 1000).toFixed(1).padStart(7)} µs   p99 ${(p99 * 1000).toFixed(1).padStart(7)} µs`);
	}
	await a.stop();
	await b.stop();
})();
