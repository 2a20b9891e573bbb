import { resolve } from 'node:path';

/** The repository's root, for tests that read or run its files (whatever folder they are in). */
export const ROOT = resolve(__dirname, '..', '..');
