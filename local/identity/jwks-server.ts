import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

/** Serves a JWKS at `/.well-known/jwks.json` on 127.0.0.1 (tests: the issuer's key download). */
export async function serveJwks(
  jwks: () => { readonly keys: readonly object[] },
): Promise<{ url: string; downloads: () => number; close(): Promise<void> }> {
  let downloads = 0;
  const server = createServer((req, res) => {
    if (req.url === '/.well-known/jwks.json') {
      downloads += 1;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(jwks()));
    } else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
  return {
    url,
    downloads: () => downloads,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
