/**
 * `{"dryRun": true}`: the event a deploy check (`npm run verify`) invokes a job with. The job
 * then only reads: it claims nothing, writes nothing, calls no Amazon, and answers with what a
 * real run would start on (how many items are due now).
 */
export interface DryRunEvent {
  readonly dryRun: true;
}

export function isDryRun(event: unknown): event is DryRunEvent {
  return typeof event === 'object' && event !== null && (event as { dryRun?: unknown }).dryRun === true;
}
