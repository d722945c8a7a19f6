// A module loader hook for tests: appends every module URL the process resolves to the file in
// BB_IMPORT_LOG, so a test can see which libraries a command really loaded.
import { register } from 'node:module';
import { appendFileSync } from 'node:fs';

if (process.env.BB_IMPORT_LOG) {
  const { port1, port2 } = new MessageChannel();
  port1.on('message', (url) => appendFileSync(process.env.BB_IMPORT_LOG, `${url}\n`));
  port1.unref();
  register(
    `data:text/javascript,${encodeURIComponent(`
      let port;
      export function initialize(data) { port = data.port; }
      export async function resolve(specifier, context, next) {
        const result = await next(specifier, context);
        port.postMessage(result.url);
        return result;
      }
    `)}`,
    { data: { port: port2 }, transferList: [port2] },
  );
}
