// The jobs' test world and a run's dependencies live in test/support/jobs.ts; this re-export
// keeps the imports of files not yet moved over (test/runtime/rate-budget*) working.
export * from '../support/jobs';
