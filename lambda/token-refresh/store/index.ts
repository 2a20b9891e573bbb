// The token refresh's statements, by family: which tokens are due (due.ts), the claims
// (claims.ts), the fan-out dispatcher's marks (dispatch-marks.ts), the write-backs
// (write-back.ts) and a token on demand's lease (on-demand.ts).
export * from './claims';
export * from './dispatch-marks';
export * from './write-back';
export * from './on-demand';
export { TOKEN_REFRESH_WINDOW_SECONDS } from './due';
