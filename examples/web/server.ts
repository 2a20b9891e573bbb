import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { build } from 'esbuild';

/**
 * Serves the example web app (examples/web) on its own origin, as a static host would
 * (S3 + CloudFront in AWS, see docs/web-example.md): index.html for `/`, `/signed-in` and
 * `/amazon/callback`, the TypeScript bundled by esbuild as `/app.js`, `styles.css`, and
 * `config.json` from `config(origin)`. `npm start -- --watch` and `npm run api` start it.
 */
export interface WebExampleConfig {
  readonly apiUrl: string;
  readonly connectRedirectUri: string;
  readonly pageSize?: number;
  readonly signIn: {
    readonly discoveryUrl: string;
    readonly clientId: string;
    readonly scope?: string;
    readonly token?: 'access_token' | 'id_token';
    readonly redirectUri: string;
  };
}

export interface WebExample {
  /** `http://localhost:<port>`: a different origin from the API's `http://127.0.0.1:<port>`. */
  readonly url: string;
  close(): Promise<void>;
}

/** Where the example is served by default; cdk.json's dev CORS origins and redirect URIs name it. */
export const DEFAULT_WEB_PORT = 3000;

const DIR = __dirname;
const SECURITY_HEADERS = {
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src http: https:; form-action 'self'; frame-ancestors 'none'",
};

/** The app's script, bundled for browsers. */
export async function bundleWebExample(): Promise<string> {
  const result = await build({
    entryPoints: [join(DIR, 'src', 'main.ts')],
    bundle: true,
    write: false,
    format: 'esm',
    target: 'es2020',
    sourcemap: 'inline',
    logLevel: 'silent',
  });
  return result.outputFiles[0].text;
}

export async function startWebExample(options: {
  readonly port?: number;
  readonly config: (origin: string) => WebExampleConfig;
}): Promise<WebExample> {
  const script = await bundleWebExample();
  const page = readFileSync(join(DIR, 'index.html'), 'utf8');
  const styles = readFileSync(join(DIR, 'styles.css'), 'utf8');
  let origin = '';
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://local').pathname;
    const send = (status: number, type: string, body: string) =>
      void res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', ...SECURITY_HEADERS }).end(body);
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'Method not allowed');
    if (['/', '/index.html', '/signed-in', '/amazon/callback'].includes(path))
      return send(200, 'text/html; charset=utf-8', page);
    if (path === '/app.js') return send(200, 'text/javascript; charset=utf-8', script);
    if (path === '/styles.css') return send(200, 'text/css; charset=utf-8', styles);
    if (path === '/config.json') return send(200, 'application/json', JSON.stringify(options.config(origin)));
    send(404, 'text/plain', 'Not found');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? DEFAULT_WEB_PORT, '127.0.0.1', () => resolve());
  });
  origin = `http://localhost:${(server.address() as AddressInfo).port}`;
  return {
    url: origin,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * The configuration for the local system: the API at `apiUrl` with the local issuer as the
 * OpenID Connect provider (local/identity/sign-in.ts), redirects back to this origin.
 */
export function localWebConfig(apiUrl: string): (origin: string) => WebExampleConfig {
  return (origin) => ({
    apiUrl,
    connectRedirectUri: `${origin}/amazon/callback`,
    signIn: {
      discoveryUrl: `${apiUrl}/.well-known/openid-configuration`,
      clientId: 'accounts-web-example',
      redirectUri: `${origin}/signed-in`,
    },
  });
}
