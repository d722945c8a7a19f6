/**
 * Currents files in a local folder laid out like the bucket (`file:///path`), for a copy made
 * with `aws s3 sync` and for benchmarks that should measure the loader, not a network. Keys
 * are paths relative to the folder; size and modification time stand in for an ETag.
 */
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join, relative, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { ConfigError, MissingObjectError } from '../../errors.js';
import type { CurrentsSource, SourceObject } from './currents-source.js';

export class FileSource implements CurrentsSource {
  readonly name: string;
  readonly prefix = '';
  readonly location: string;
  private readonly root: string;
  constructor(root: string) {
    this.root = resolve(root);
    this.name = `file://${this.root}`;
    this.location = this.name;
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
    // A key like ../../etc/passwd must not read outside the folder.
    if (!path.startsWith(this.root + sep)) throw new ConfigError([`key ${key} is outside ${this.root}`]);
    try {
      await stat(path);
    } catch {
      throw new MissingObjectError(`reading ${this.name}/${key}: the file no longer exists`);
    }
    return createReadStream(path);
  }
}
