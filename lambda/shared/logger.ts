/**
 * The one logger interface of the runtime code: the job cores, the migration and the local
 * commands log through it. Handlers pass Powertools' Logger (or Lambda's JSON console); tests
 * and local runs pass recorders. Attributes never carry tokens or secrets.
 */
export interface AppLogger {
  info(message: string, attributes?: Record<string, unknown>): void;
  warn(message: string, attributes?: Record<string, unknown>): void;
  error(message: string, attributes?: Record<string, unknown>): void;
}
