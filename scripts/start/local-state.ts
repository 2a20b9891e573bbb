import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** Where `npm start` keeps its state, and the secrets it creates on its first run. */
export const ROOT = resolve(__dirname, '..', '..');
/** Where npm start keeps its state; ACCOUNTS_LOCAL_DIR moves it (the tests use a temporary folder). */
export const LOCAL = resolve(process.env.ACCOUNTS_LOCAL_DIR ?? join(ROOT, '.local'));
const STATE_FILE = join(LOCAL, 'state.json');
export const LOG_FILE = join(LOCAL, 'logs', 'jobs.log');

export interface LocalState {
  readonly tokenKey: string;
  readonly workerPassword: string;
}

export function loadState(): LocalState {
  if (existsSync(STATE_FILE)) return JSON.parse(readFileSync(STATE_FILE, 'utf8')) as LocalState;
  const state: LocalState = {
    tokenKey: randomBytes(32).toString('base64'),
    workerPassword: randomBytes(18).toString('base64url'),
  };
  mkdirSync(LOCAL, { recursive: true });
  writeFileSync(STATE_FILE, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  return state;
}
