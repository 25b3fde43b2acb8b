// A Node.js Moleculer node in its own process, so the suite can kill it.
// Usage: node js-node.js <moleculer package> <nodeID> <serializer> <transporter json> [discoverer]
"use strict";
const [pkg, nodeID, serializer, transporter, discoverer] = process.argv.slice(2);
const { ServiceBroker } = require(pkg);
const broker = new ServiceBroker({
	nodeID,
	logger: false,
	serializer,
	heartbeatInterval: 1,
	heartbeatTimeout: 3,
	registry: { discoverer: discoverer || "Local" },
	transporter: JSON.parse(transporter)
});
broker.createService({ name: "jsworker", actions: { ping() { return nodeID; } } });
broker.start().then(() => process.stdout.write("ready\n"));
process.on("SIGTERM", () => broker.stop().then(() => process.exit(0)));
