/**
 * `npm run token -- --sub <uuid> [--email <address>] [--expires-in <seconds>]`: prints one JWT
 * signed by the local issuer (key in .local/identity, created on first use), which
 * `npm run api` and `npm start` trust when no issuer is configured. For curl and tests.
 */
import { localIssuer } from '../local/identity/issuer';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function parseTokenArgs(argv: readonly string[]): { sub: string; email?: string; expiresInSeconds: number } {
  const value = (flag: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const sub = value('--sub');
  const email = value('--email');
  const expires = value('--expires-in');
  const expiresInSeconds = expires === undefined ? 3600 : Number(expires);
  if (!sub || !UUID.test(sub) || !Number.isInteger(expiresInSeconds) || expiresInSeconds < 1)
    throw new Error('Usage: npm run token -- --sub <uuid> [--email <address>] [--expires-in <seconds>]');
  return { sub: sub.toLowerCase(), email, expiresInSeconds };
}

if (require.main === module) {
  try {
    const args = parseTokenArgs(process.argv.slice(2));
    process.stdout.write(`${localIssuer().token(args)}\n`);
  } catch (error) {
    console.error((error as Error).message);
    process.exit(2);
  }
}
