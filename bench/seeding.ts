/** The shape of the data the benchmark seeds (shared by bench/servers.ts and the checks in bench/jobs.ts). */

/** Profiles per user at Amazon in the account sync runs: 1, 2, 3, 4, 1, … (2.5 on average). */
export const profilesFor = (i: number) => 1 + (i % 4);

/** Users are seeded in chunks of this many (one JSON parameter each); a multiple of 4. */
export const SEED_CHUNK = 5000;
