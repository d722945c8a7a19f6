/**
 * Every secret the configuration or the environment holds, for the logger and for output made
 * before a Config exists: they are scrubbed from every line braze-bridge prints.
 */
import type { Config } from './load-config.js';

/**
 * Every secret the configuration holds, for the logger to scrub from every line: the Braze
 * key, the database password (in the URL or PGPASSWORD), the notify URL and the Movable Ink
 * endpoint (its path carries the key) and credential, also in the base64 form sent on the wire.
 */
export function secretsOf(config: Partial<Pick<Config, 'brazeEndpoint' | 'brazeApiKey' | 'databaseUrl' | 'notifyUrl' | 'movableInkEndpoint' | 'movableInkAuth' | 'pgPassword'>>): string[] {
  const auth = config.movableInkAuth;
  return [
    config.brazeApiKey,
    ...credentialsOf(config.brazeEndpoint),
    passwordOf(config.databaseUrl),
    config.pgPassword,
    config.notifyUrl,
    config.movableInkEndpoint,
    auth,
    auth?.includes(':') ? Buffer.from(auth).toString('base64') : undefined,
  ].filter((s): s is string => Boolean(s));
}

/** `text` with every secret of `config` replaced, for output that does not go through the logger. */
export function scrubSecrets(config: Parameters<typeof secretsOf>[0], text: string): string {
  return secretsOf(config).filter((x) => x.length >= 4).reduce((t, x) => t.split(x).join('[redacted]'), text);
}

/** The secrets in the environment, for output made before (or without) a validated Config. */
export function environmentSecrets(env: NodeJS.ProcessEnv = process.env): string[] {
  return secretsOf({
    brazeApiKey: env.BRAZE_API_KEY?.trim(),
    brazeEndpoint: env.BRAZE_REST_ENDPOINT?.trim(),
    databaseUrl: env.DATABASE_URL,
    pgPassword: env.PGPASSWORD,
    notifyUrl: env.BRAZE_BRIDGE_NOTIFY_URL,
    movableInkEndpoint: env.MOVABLE_INK_ENDPOINT?.trim(),
    movableInkAuth: env.MOVABLE_INK_AUTH?.trim(),
  });
}

/** The password written into a URL (https://user:pass@host): never printed. */
function credentialsOf(url: string | undefined): string[] {
  if (!url) return [];
  try {
    const u = new URL(url);
    return u.password ? [u.password, decodeURIComponent(u.password)] : [];
  } catch {
    return [];
  }
}

function passwordOf(url: string | undefined): string | undefined {
  if (!url) return undefined;
  try {
    return decodeURIComponent(new URL(url).password) || undefined;
  } catch {
    return undefined;
  }
}
