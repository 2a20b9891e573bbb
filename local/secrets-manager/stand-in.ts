import { createServer, IncomingMessage, ServerResponse } from 'node:http';
import { AddressInfo } from 'node:net';

/**
 * A stand-in for AWS Secrets Manager's GetSecretValue on 127.0.0.1, for `npm start`: the real
 * job handlers build `new SecretsManagerClient({})`, and `AWS_ENDPOINT_URL_SECRETS_MANAGER`
 * points that client here. It speaks the service's JSON 1.1 protocol (POST /,
 * `X-Amz-Target: secretsmanager.GetSecretValue`), answering ResourceNotFoundException for
 * unknown ids, as the service does.
 */
export interface SecretsManagerStandIn {
  readonly endpoint: string;
  /** How many GetSecretValue calls were answered, per secret id. */
  readonly reads: ReadonlyMap<string, number>;
  /** Makes `value` the secret's current version (what a rotation's last step does). */
  put(id: string, value: string): void;
  close(): Promise<void>;
}

export async function startSecretsManagerStandIn(
  secrets: Readonly<Record<string, string>>,
): Promise<SecretsManagerStandIn> {
  const reads = new Map<string, number>();
  const current = new Map(Object.entries(secrets));
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const send = (status: number, body: unknown) => {
        res.writeHead(status, {
          'content-type': 'application/x-amz-json-1.1',
          'x-amzn-requestid': `local-${Date.now()}`,
        });
        res.end(JSON.stringify(body));
      };
      const target = String(req.headers['x-amz-target'] ?? '');
      if (req.method !== 'POST' || target !== 'secretsmanager.GetSecretValue') {
        send(400, { __type: 'UnknownOperationException', message: `Not supported here: ${target || req.method}` });
        return;
      }
      let id: unknown;
      try {
        id = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { SecretId?: unknown }).SecretId;
      } catch {
        send(400, { __type: 'InvalidRequestException', message: 'Body is not JSON' });
        return;
      }
      if (typeof id !== 'string' || !current.has(id)) {
        send(400, { __type: 'ResourceNotFoundException', message: "Secrets Manager can't find the specified secret." });
        return;
      }
      reads.set(id, (reads.get(id) ?? 0) + 1);
      const name = id.split(':').at(-1) ?? id;
      send(200, {
        ARN: id,
        Name: name,
        SecretString: current.get(id),
        VersionId: 'local',
        VersionStages: ['AWSCURRENT'],
        CreatedDate: Date.now() / 1000,
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    reads,
    put: (id, value) => void current.set(id, value),
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
