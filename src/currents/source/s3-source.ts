/**
 * Currents files in an S3 bucket (or an S3-compatible store): lists keys under a prefix and
 * opens bodies as streams. The only module that imports the AWS SDK, and only when a bucket is
 * first read, so commands and sources that never read S3 never load it (about 0.2 s of a
 * `file://` ingest's start). S3 failures become one line that says what to do.
 */
import type { Readable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import { AbortError, ConfigError, MissingObjectError, TransientSourceError } from '../../errors.js';
import type { CurrentsSource, SourceObject } from './currents-source.js';

export interface S3Options {
  region?: string;
  endpoint?: string;
  /** Path-style addressing, for S3-compatible stores; on whenever an endpoint is given. */
  forcePathStyle?: boolean;
  maxAttempts?: number;
}

export class S3Source implements CurrentsSource {
  readonly name: string;
  readonly location: string;
  private client?: S3Client;
  constructor(
    private readonly bucket: string,
    readonly prefix: string,
    private readonly options: S3Options,
  ) {
    // The manifest's source stays the bucket (rows of earlier versions keep matching); the
    // prefix scopes a run through the keys, which are stored whole.
    this.name = `s3://${bucket}`;
    this.location = `s3://${bucket}/${prefix}`;
  }

  /** The SDK and the client, loaded and made on first use. */
  private async sdk(): Promise<{ sdk: typeof import('@aws-sdk/client-s3'); client: S3Client }> {
    const sdk = await import('@aws-sdk/client-s3');
    // The SDK warns on every run that its releases after January 2027 need Node 22; the lock
    // file pins a release that supports Node 20, so the warning is only noise in cron mail.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    this.client ??= new sdk.S3Client({
      region: this.options.region ?? 'us-east-1',
      endpoint: this.options.endpoint,
      forcePathStyle: this.options.forcePathStyle ?? Boolean(this.options.endpoint),
      // The SDK retries throttling, 5xx and network errors with backoff.
      maxAttempts: this.options.maxAttempts ?? 5,
    });
    return { sdk, client: this.client };
  }

  async *list(): AsyncGenerator<SourceObject> {
    const { sdk, client } = await this.sdk();
    let token: string | undefined;
    do {
      let page;
      try {
        page = await client.send(new sdk.ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix || undefined, ContinuationToken: token }));
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
    const { sdk, client } = await this.sdk();
    try {
      const out = await client.send(new sdk.GetObjectCommand({ Bucket: this.bucket, Key: key }));
      return out.Body as Readable;
    } catch (error) {
      throw s3Error(error, `reading s3://${this.bucket}/${key}`);
    }
  }
}

/** S3 failures in one line that says what to do; credentials and access abort (exit 4). */
function s3Error(error: unknown, doing: string): Error {
  const e = error as { name?: string; message?: string; Code?: string; $metadata?: { httpStatusCode?: number } };
  const code = e?.name ?? e?.Code ?? 'Error';
  if (code === 'NoSuchBucket') return new ConfigError([`${doing}: the bucket does not exist (NoSuchBucket); check --source`], { cause: error });
  if (['AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken', 'InvalidToken', 'CredentialsProviderError', 'AllAccessDisabled'].includes(code)) {
    return new AbortError(`${doing}: access refused (${code}); check the AWS credentials and that they may list and read this bucket`, { cause: error });
  }
  if (code === 'NoSuchKey') return new MissingObjectError(`${doing}: the object no longer exists (NoSuchKey)`, { cause: error });
  return new TransientSourceError(`${doing}: ${code}${e?.message && e.message !== code ? ` (${e.message.slice(0, 200)})` : ''}`, { cause: error });
}
