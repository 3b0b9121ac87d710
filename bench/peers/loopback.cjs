// Preloaded into the Portkey gateway (node --require): its server calls listen(port) with no host,
// which listens on every interface, and its command line takes only --port. A listen() given a
// port and no host listens on 127.0.0.1 instead, so a benchmark never exposes it to the network.
"use strict";
const net = require("node:net");

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number" && (args.length === 1 || args[1] === undefined || typeof args[1] === "function")) {
    if (args[1] === undefined && args.length > 1) {
      args[1] = "127.0.0.1";
    } else {
      args.splice(1, 0, "127.0.0.1");
    }
  }
  return listen.apply(this, args);
};
