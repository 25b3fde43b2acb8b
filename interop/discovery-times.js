// How fast the etcd3 discoverer sees nodes come and go: Rust and Moleculer JS side by side in
// the same run, same etcd and Redis, same heartbeat settings (interval 1 s, timeout 3 s).
// A Rust observer and a JS observer watch subjects of both kinds start (time until the observer
// lists the subject as available; from spawn and from the subject's own "started") and die by
// SIGKILL (time until the observer drops it).
// Usage: RUST_NODE_BIN=<path to the `node` example> node discovery-times.js [trials]
"use strict";
const { sleep, until, startRust, startJsProcess, rustSees, jsSees, etcdTransport } = require("./harness");
const { ServiceBroker } = require("moleculer");

const TRIALS = Number(process.argv[2] || 3);
const POLL_MS = 5;

function median(values) {
	const sorted = [...values].sort((a, b) => a - b);
	return sorted[Math.floor(sorted.length / 2)];
}

(async () => {
	const transport = await etcdTransport();
	const rustObserver = startRust("observer-rust", transport, "JSON", "5");
	const js = new ServiceBroker({
		nodeID: "observer-js",
		logger: false,
		heartbeatInterval: 1,
		heartbeatTimeout: 3,
		registry: { discoverer: transport.jsDiscoverer },
		transporter: transport.js
	});
	const rows = [];
	try {
		await js.start();
		await until("the Rust observer", () => jsSees(js, "observer-rust") && rustSees(js, "observer-rust", "observer-js"), 30000);
		const observers = {
			rust: id => rustSees(js, "observer-rust", id),
			js: async id => jsSees(js, id)
		};
		for (const kind of ["rust", "js"]) {
			for (let trial = 0; trial < TRIALS; trial++) {
				const id = `subject-${kind}-${trial}`;
				const spawned = Date.now();
				let readyAt;
				// Polling starts at once: an observer may list the subject before its `start` returns.
				let child;
				let started;
				if (kind === "rust") {
					child = startRust(id, transport, "JSON", "5", { ready: true });
					started = child.ready;
				} else {
					started = startJsProcess("moleculer", id, "JSON", transport).then(c => { child = c; });
				}
				started.then(() => { readyAt = Date.now(); });
				const seen = {};
				await Promise.all(Object.entries(observers).map(async ([observer, sees]) => {
					await until(`${observer} to see ${id}`, () => sees(id), 30000, POLL_MS);
					seen[observer] = Date.now();
				}));
				await until(`${id} to report started`, () => readyAt !== undefined, 10000, POLL_MS);
				await sleep(1500); // a few heartbeats in, as in a running cluster
				const killed = Date.now();
				child.kill("SIGKILL");
				const dropped = {};
				await Promise.all(Object.entries(observers).map(async ([observer, sees]) => {
					await until(`${observer} to drop ${id}`, async () => !(await sees(id)), 30000, POLL_MS);
					dropped[observer] = Date.now();
				}));
				for (const observer of Object.keys(observers)) {
					rows.push({ observer, subject: kind, fromSpawn: seen[observer] - spawned, fromStarted: seen[observer] - readyAt, kill: dropped[observer] - killed });
				}
				console.log(`${id}: started ${readyAt - spawned} ms after spawn; seen by rust/js at ${seen.rust - spawned}/${seen.js - spawned} ms; dropped by rust/js ${dropped.rust - killed}/${dropped.js - killed} ms after SIGKILL`);
			}
		}
		console.log(`\n== etcd3 discoverer, medians of ${TRIALS} trials (heartbeat interval 1 s, timeout 3 s; polled every ${POLL_MS} ms)`);
		console.log("observer  subject   seen after spawn   seen after started   dropped after SIGKILL");
		for (const observer of ["rust", "js"]) {
			for (const subject of ["rust", "js"]) {
				const r = rows.filter(x => x.observer === observer && x.subject === subject);
				const fmt = key => `${median(r.map(x => x[key]))} ms`.padStart(8);
				console.log(`${observer.padEnd(9)} ${subject.padEnd(9)} ${fmt("fromSpawn").padStart(16)}   ${fmt("fromStarted").padStart(18)}   ${fmt("kill").padStart(21)}`);
			}
		}
	} finally {
		await js.stop().catch(() => {});
		rustObserver.kill("SIGKILL");
		await sleep(300);
		transport.stop();
	}
	process.exit(0);
})().catch(err => {
	console.error(err);
	process.exit(1);
});
