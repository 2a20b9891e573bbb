import type { IncomingMessage } from 'node:http';
import { cors, parseOrigins } from '../../../local/api-gateway/cors';

// The local API's CORS, as API Gateway answers for the stack's corsPreflight: an allowed
// origin's preflight is answered with the methods and headers, its other answers carry the
// origin and expose Retry-After; any other origin gets no CORS header at all.

const request = (method: string, headers: Record<string, string>) => ({ method, headers }) as IncomingMessage;
const ALLOWED = ['http://localhost:3000'];

test('a preflight from an allowed origin: the origin, methods, headers and max age', () => {
  const decision = cors(
    request('OPTIONS', { origin: 'http://localhost:3000', 'access-control-request-method': 'POST' }),
    ALLOWED,
  );
  expect(decision.preflight).toBe(true);
  expect(decision.headers).toMatchObject({
    'access-control-allow-origin': 'http://localhost:3000',
    'access-control-allow-methods': 'GET,POST,DELETE,OPTIONS',
    'access-control-allow-headers': 'authorization,content-type',
    'access-control-max-age': '3600',
  });
});

test('a request from an allowed origin: the origin, Retry-After exposed', () => {
  const decision = cors(request('POST', { origin: 'http://localhost:3000' }), ALLOWED);
  expect(decision.preflight).toBe(false);
  expect(decision.headers['access-control-allow-origin']).toBe('http://localhost:3000');
  expect(decision.headers['access-control-expose-headers']).toBe('retry-after');
});

test('another origin, or none: no CORS headers (its browser refuses the answer)', () => {
  const cases: Array<Record<string, string>> = [
    { origin: 'https://evil.example' },
    { origin: 'http://localhost:3001' },
    {},
  ];
  for (const headers of cases) {
    expect(cors(request('GET', headers), ALLOWED).headers).toEqual({});
    expect(
      cors(request('OPTIONS', { ...headers, 'access-control-request-method': 'DELETE' }), ALLOWED).headers,
    ).toEqual({});
  }
});

test('CORS_ALLOWED_ORIGINS takes origins only', () => {
  expect(parseOrigins(' http://localhost:3000 , https://app.example.com ')).toEqual([
    'http://localhost:3000',
    'https://app.example.com',
  ]);
  expect(() => parseOrigins('https://app.example.com/path')).toThrow(/not an origin/);
  expect(() => parseOrigins('ftp://x.example')).toThrow(/not an origin/);
  expect(() => parseOrigins('app.example.com')).toThrow(/not an origin/);
});
