/** A stand-in for the notify webhook (a Slack incoming webhook) on loopback: keeps what was posted. */
import { createServer } from 'node:http';

export interface Webhook {
  url: string;
  posts: Array<{ text: string; job: string; summary: Record<string, unknown> }>;
  stop(): Promise<void>;
}

export async function startWebhook(path = '/hook'): Promise<Webhook> {
  const posts: Webhook['posts'] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      posts.push(JSON.parse(body));
      res.writeHead(200).end('ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}${path}`,
    posts,
    stop: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
