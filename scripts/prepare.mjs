#!/usr/bin/env node
// `npm ci` runs this (the prepare script): compile with TypeScript when it is installed. A
// production install (`npm ci --omit=dev`) has no TypeScript; it then compiles nothing and says
// how to install for production, instead of failing the whole install.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

// npm puts node_modules/.bin on PATH for lifecycle scripts; tsc is there only with dev dependencies.
const r = spawnSync('tsc', ['-p', 'tsconfig.json'], { stdio: 'inherit', shell: process.platform === 'win32' });
if (!r.error) process.exit(r.status ?? 1);
if (r.error.code !== 'ENOENT') throw r.error;
if (!existsSync(new URL('../dist/src/cli.js', import.meta.url))) {
  process.stderr.write(
    'braze-bridge: TypeScript is not installed (--omit=dev), so nothing was compiled. To install for production: ' +
      'npm ci && npm prune --omit=dev --omit=optional (README: Installing for cron, systemd or Kubernetes)\n',
  );
}
