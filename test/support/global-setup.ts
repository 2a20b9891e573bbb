import { makePostgresTemplates } from './postgres-templates';

/** jest's global setup (jest.config.js): the PostgreSQL templates of this run. */
export default makePostgresTemplates;
