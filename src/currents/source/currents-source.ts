/** What a Currents source is: it lists keys and opens bodies as streams; nothing else. */
import type { Readable } from 'node:stream';

/** One object under the source: its key, version (ETag) and size in bytes. */
export interface SourceObject {
  key: string;
  etag: string;
  size: number;
}

export interface CurrentsSource {
  /** Stable name of the bucket or folder, recorded in the manifest (`s3://bucket`, `file:///dir`). */
  readonly name: string;
  /** The key prefix listed (s3://bucket/<prefix>); '' for a folder. Scopes the manifest. */
  readonly prefix: string;
  /** Where the files are looked for, for messages: `s3://bucket/prefix`, `file:///dir`. */
  readonly location: string;
  /** Every object under the prefix, recursively, following pagination. */
  list(): AsyncGenerator<SourceObject>;
  open(key: string): Promise<Readable>;
}
