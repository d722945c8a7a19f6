#!/usr/bin/env node
// `npm ci` runs this (the prepare script): compile with TypeScript when it is installed. A
// production install (`npm ci --omit=dev`) has no TypeScript; it then compiles nothing and says
// how to install for production, instead of failing the whole install.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

// This package's own tsc (never one found further up PATH): there only with dev dependencies.
const tsc = new URL('../node_modules/.bin/tsc', import.meta.url);
if (existsSync(tsc)) {
  const r = spawnSync(tsc.pathname, ['-p', 'tsconfig.json'], { stdio: 'inherit', shell: process.platform === 'win32' });
  if (r.error) throw r.error;
  process.exit(r.status ?? 1);
}
if (!existsSync(new URL('../dist/src/cli.js', import.meta.url))) {
  process.stderr.write(
    'braze-bridge: TypeScript is not installed (--omit=dev), so nothing was compiled. To install for production: ' +
      'npm ci && npm prune --omit=dev --omit=optional (README: Installing for cron, systemd or Kubernetes)\n',
  );
}
