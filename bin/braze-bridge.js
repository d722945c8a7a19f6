#!/usr/bin/env node
// The installed command. Runs the compiled CLI (built by `npm ci` through the prepare script).
import { existsSync } from 'node:fs';

const cli = new URL('../dist/src/cli.js', import.meta.url);
if (!existsSync(cli)) {
  process.stderr.write('braze-bridge: not built yet; in the braze-bridge folder run `npm ci` (development) or `npm ci && npm prune --omit=dev --omit=optional` (production; README: Installing)\n');
  process.exit(2);
}
const { main } = await import(cli.href);
await main();
