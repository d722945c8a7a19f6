#!/usr/bin/env node
// The installed command. Runs the compiled CLI (built by `npm ci` through the prepare script).
import { existsSync } from 'node:fs';

const cli = new URL('../dist/src/cli.js', import.meta.url);
if (!existsSync(cli)) {
  process.stderr.write('braze-bridge: not built yet; run `npm ci` (or `npm run build`) in the braze-bridge folder\n');
  process.exit(2);
}
const { main } = await import(cli.href);
await main();
