import { JOB_ENV } from '../../lambda/shared/config';

/** A job's environment as the stack sets it, and the secrets it names (config.test.ts, secrets.test.ts). */
export const KEY = Buffer.alloc(32, 9).toString('base64');
export const LWA_ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:lwa-AbCdEf';
export const KEY_ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:token-key-AbCdEf';
export const validEnv = {
  [JOB_ENV.environment]: 'staging',
  [JOB_ENV.clusterArn]: 'arn:aws:rds:eu-west-1:123456789012:cluster:accounts',
  [JOB_ENV.databaseSecretArn]: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:worker-AbCdEf',
  [JOB_ENV.databaseName]: 'accounts',
  [JOB_ENV.lwaClientSecretArn]: LWA_ARN,
  [JOB_ENV.tokenKeySecretArn]: KEY_ARN,
};
