#!/bin/sh
# Installs the Portkey gateway for `bench.run --peers portkey` under var/peers/portkey.
#
# Pinned to 1.15.2, the newest release on the npm registry. Its HTTP server library is held at
# @hono/node-server 1.13.5 (the version the gateway's own repository patches and builds with;
# @hono/node-ws 1.2.0 is the newest that accepts it): with the newest one its range allows
# (1.19.x), `new Response(stream, upstreamResponse)` keeps the upstream's immutable headers, the
# gateway's header append throws, and every streamed answer is a 500 "Something went wrong".
# Install scripts are skipped: the package's only one runs patch-package, whose patches are not
# published.
set -eu
cd "$(dirname "$0")/../.."
VERSION=1.15.2
rm -rf var/peers/portkey
mkdir -p var/peers/portkey
echo '{"overrides": {"@hono/node-server": "1.13.5", "@hono/node-ws": "1.2.0"}}' > var/peers/portkey/package.json
npm install --prefix var/peers/portkey --ignore-scripts --no-audit --no-fund "@portkey-ai/gateway@$VERSION"
