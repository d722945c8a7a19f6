/**
 * Where Currents files come from: an S3 bucket (with prefix) or a local copy of one. A source
 * only lists keys and opens bodies as streams; decoding and loading know nothing of it.
 */
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Readable } from 'node:stream';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { AbortError, ConfigError, MissingObjectError, TransientSourceError } from '../../errors.js';

export interface SourceObject {
  key: string;
  etag: string;
  size: number;
}

export interface CurrentsSource {
  /** Stable name of the bucket or folder, recorded in the manifest (`s3://bucket`, `file:///dir`). */
  readonly name: string;
  /** Every object under the prefix, recursively, following pagination. */
  list(): AsyncGenerator<SourceObject>;
  open(key: string): Promise<Readable>;
}

export interface S3Options {
  region?: string;
  endpoint?: string;
  /** Path-style addressing, for S3-compatible stores; on whenever an endpoint is given. */
  forcePathStyle?: boolean;
  maxAttempts?: number;
}

export function openSource(url: string, s3: S3Options = {}): CurrentsSource {
  if (url.startsWith('s3://')) {
    const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(url);
    if (!m || !m[1]) throw new ConfigError([`--source ${url} is not s3://bucket/prefix`]);
    return new S3Source(m[1], m[2]!, s3);
  }
  if (url.startsWith('file://')) return new FileSource(fileURLToPath(url));
  throw new ConfigError([`--source must be s3://bucket/prefix or file:///path; got "${url}"`]);
}

class S3Source implements CurrentsSource {
  readonly name: string;
  private readonly client: S3Client;
  constructor(
    private readonly bucket: string,
    private readonly prefix: string,
    options: S3Options,
  ) {
    this.name = `s3://${bucket}`;
    // The SDK warns on every run that its releases after January 2027 need Node 22; the lock
    // file pins a release that supports Node 20, so the warning is only noise in cron mail.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    this.client = new S3Client({
      region: options.region ?? 'us-east-1',
      endpoint: options.endpoint,
      forcePathStyle: options.forcePathStyle ?? Boolean(options.endpoint),
      // The SDK retries throttling, 5xx and network errors with backoff.
      maxAttempts: options.maxAttempts ?? 5,
    });
  }

  async *list(): AsyncGenerator<SourceObject> {
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix || undefined, ContinuationToken: token }));
      } catch (error) {
        throw s3Error(error, `listing s3://${this.bucket}/${this.prefix}`);
      }
      for (const o of page.Contents ?? []) {
        if (o.Key) yield { key: o.Key, etag: (o.ETag ?? '').replace(/"/g, ''), size: o.Size ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async open(key: string): Promise<Readable> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      return out.Body as Readable;
    } catch (error) {
      throw s3Error(error, `reading s3://${this.bucket}/${key}`);
    }
  }
}

/** S3 failures in one line that says what to do; credentials and access abort (exit 4). */
export function s3Error(error: unknown, doing: string): Error {
  const e = error as { name?: string; message?: string; Code?: string; $metadata?: { httpStatusCode?: number } };
  const code = e?.name ?? e?.Code ?? 'Error';
  if (code === 'NoSuchBucket') return new ConfigError([`${doing}: the bucket does not exist (NoSuchBucket); check --source`], { cause: error });
  if (['AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken', 'InvalidToken', 'CredentialsProviderError', 'AllAccessDisabled'].includes(code)) {
    return new AbortError(`${doing}: access refused (${code}); check the AWS credentials and that they may list and read this bucket`, { cause: error });
  }
  if (code === 'NoSuchKey') return new MissingObjectError(`${doing}: the object no longer exists (NoSuchKey)`, { cause: error });
  return new TransientSourceError(`${doing}: ${code}${e?.message && e.message !== code ? ` (${e.message.slice(0, 200)})` : ''}`, { cause: error });
}


class FileSource implements CurrentsSource {
  readonly name: string;
  constructor(private readonly root: string) {
    this.root = resolve(root);
    this.name = `file://${this.root}`;
  }

  async *list(): AsyncGenerator<SourceObject> {
    try {
      if (!(await stat(this.root)).isDirectory()) throw new Error('not a directory');
    } catch {
      throw new ConfigError([`--source ${this.name}: the folder does not exist`]);
    }
    const walk = async function* (dir: string): AsyncGenerator<string> {
      const entries = await readdir(dir, { withFileTypes: true });
      entries.sort((a, b) => (a.name < b.name ? -1 : 1));
      for (const e of entries) {
        const path = join(dir, e.name);
        if (e.isDirectory()) yield* walk(path);
        else if (e.isFile()) yield path;
      }
    };
    for await (const path of walk(this.root)) {
      const s = await stat(path);
      // No ETag on a file system: size and modification time stand in for one.
      yield { key: relative(this.root, path).split(sep).join('/'), etag: `${s.size}-${Math.trunc(s.mtimeMs)}`, size: s.size };
    }
  }

  async open(key: string): Promise<Readable> {
    const path = resolve(this.root, key);
    if (!path.startsWith(this.root + sep)) throw new ConfigError([`key ${key} is outside ${this.root}`]);
    try {
      await stat(path);
    } catch {
      throw new MissingObjectError(`reading ${this.name}/${key}: the file no longer exists`);
    }
    return createReadStream(path);
  }
}
