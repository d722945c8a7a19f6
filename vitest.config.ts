import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two cores: more workers only make the database the bottleneck.
    maxWorkers: 2,
    // s3rver (the S3 protocol server of the Currents tests) signs continuation tokens with DES,
    // which OpenSSL 3 keeps in its legacy provider.
    execArgv: ['--openssl-legacy-provider'],
  },
});
