/**
 * Where Currents files come from: an S3 bucket (with prefix) or a local copy of one. A source
 * only lists keys and opens bodies as streams; decoding and loading know nothing of it. This
 * module holds the factory that picks a source from a --source URL.
 */
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../../errors.js';
import { FileSource } from './file-source.js';
import { S3Source, type S3Options } from './s3-source.js';

import type { CurrentsSource } from './currents-source.js';

export type { S3Options } from './s3-source.js';
export type { CurrentsSource, SourceObject } from './currents-source.js';

/** The source a --source URL names: `s3://bucket/prefix` or `file:///path`. */
export function openSource(url: string, s3: S3Options = {}): CurrentsSource {
  if (url.startsWith('s3://')) {
    const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(url);
    if (!m || !m[1]) throw new ConfigError([`--source ${url} is not s3://bucket/prefix`]);
    return new S3Source(m[1], m[2]!, s3);
  }
  if (url.startsWith('file://')) return new FileSource(fileURLToPath(url));
  throw new ConfigError([`--source must be s3://bucket/prefix or file:///path; got "${url}"`]);
}
