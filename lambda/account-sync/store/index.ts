// The account sync's statements, by family: which connections are due (due.ts), the claims
// (claims.ts), the fan-out dispatcher's marks (dispatch-marks.ts) and the write-backs
// (write-back.ts).
export * from './claims';
export * from './dispatch-marks';
export * from './write-back';
export { MIN_TOKEN_VALIDITY_SECONDS } from './due';
