import { removePostgresTemplates } from './postgres-templates';

/** jest's global teardown (jest.config.js): removes this run's PostgreSQL templates. */
export default removePostgresTemplates;
