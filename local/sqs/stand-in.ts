import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A stand-in for Amazon SQS on 127.0.0.1, for tests through the real @aws-sdk/client-sqs (AWS
 * JSON 1.0, `X-Amz-Target: AmazonSQS.<Operation>`): SendMessageBatch, ReceiveMessage and
 * DeleteMessageBatch on standard queues named by their URL's path, with visibility timeouts and
 * a redrive policy (a message received more than `maxReceiveCount` times moves to the
 * dead-letter queue when next received, as SQS does). Time is the stand-in's own clock,
 * moved by `advance`, never the wall clock.
 */
export interface QueueConfig {
  readonly visibilityTimeoutSeconds: number;
  readonly deadLetter?: { readonly queueName: string; readonly maxReceiveCount: number };
}

/** A request's JSON body: the fields the operations here read. */
interface SqsInput {
  readonly QueueUrl?: string;
  readonly MaxNumberOfMessages?: number;
  readonly Entries?: ReadonlyArray<{
    readonly Id: string;
    readonly MessageBody?: string;
    readonly ReceiptHandle?: string;
  }>;
}

interface StoredMessage {
  readonly messageId: string;
  readonly body: string;
  receiveCount: number;
  visibleAt: number;
  receiptHandle?: string;
}

export class SqsStandIn {
  private server?: Server;
  private endpoint = '';
  private clock = 0;
  private readonly queues = new Map<string, { config: QueueConfig; messages: StoredMessage[] }>();

  async start(): Promise<string> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.endpoint = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this.endpoint;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server?.close(() => resolve()));
  }

  /** Creates (or empties) a queue; answers its URL. */
  createQueue(name: string, config: QueueConfig): string {
    this.queues.set(name, { config, messages: [] });
    return this.urlOf(name);
  }

  urlOf(name: string): string {
    return `${this.endpoint}/123456789012/${name}`;
  }

  /** Moves the stand-in's clock on. */
  advance(seconds: number): void {
    this.clock += seconds * 1000;
  }

  /** The bodies a queue holds, visible or not. */
  bodies(name: string): string[] {
    return (this.queues.get(name)?.messages ?? []).map((m) => m.body);
  }

  private queue(url: unknown) {
    const name = String(url).split('/').at(-1) ?? '';
    const queue = this.queues.get(name);
    if (!queue) throw Object.assign(new Error(`no queue ${name}`), { type: 'QueueDoesNotExist' });
    return queue;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const input = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as SqsInput;
    const target = String(req.headers['x-amz-target'] ?? '').replace('AmazonSQS.', '');
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/x-amz-json-1.0' });
      res.end(JSON.stringify(body));
    };
    try {
      if (target === 'SendMessageBatch') return send(200, this.sendBatch(input));
      if (target === 'ReceiveMessage') return send(200, this.receive(input));
      if (target === 'DeleteMessageBatch') return send(200, this.deleteBatch(input));
      return send(400, { __type: 'com.amazonaws.sqs#UnsupportedOperation', message: `Not here: ${target}` });
    } catch (error) {
      const e = error as Error & { type?: string };
      return send(400, { __type: `com.amazonaws.sqs#${e.type ?? 'InvalidParameterValue'}`, message: e.message });
    }
  }

  private sendBatch(input: SqsInput) {
    const queue = this.queue(input.QueueUrl);
    const successful = (input.Entries ?? []).map((entry) => {
      const messageId = randomUUID();
      const body = entry.MessageBody ?? '';
      queue.messages.push({ messageId, body, receiveCount: 0, visibleAt: this.clock });
      return { Id: entry.Id, MessageId: messageId, MD5OfMessageBody: md5(body) };
    });
    return { Successful: successful, Failed: [] };
  }

  private receive(input: SqsInput) {
    const queue = this.queue(input.QueueUrl);
    const max = Number(input.MaxNumberOfMessages ?? 1);
    const received: StoredMessage[] = [];
    for (const message of [...queue.messages]) {
      if (received.length >= max) break;
      if (message.visibleAt > this.clock) continue;
      const redrive = queue.config.deadLetter;
      if (redrive && message.receiveCount >= redrive.maxReceiveCount) {
        queue.messages.splice(queue.messages.indexOf(message), 1);
        const dlq = this.queue(redrive.queueName);
        dlq.messages.push({ ...message, receiveCount: 0, visibleAt: this.clock, receiptHandle: undefined });
        continue;
      }
      message.receiveCount++;
      message.visibleAt = this.clock + queue.config.visibilityTimeoutSeconds * 1000;
      message.receiptHandle = randomUUID();
      received.push(message);
    }
    return {
      Messages: received.map((m) => ({
        MessageId: m.messageId,
        ReceiptHandle: m.receiptHandle,
        MD5OfBody: md5(m.body),
        Body: m.body,
        Attributes: { ApproximateReceiveCount: String(m.receiveCount) },
      })),
    };
  }

  private deleteBatch(input: SqsInput) {
    const queue = this.queue(input.QueueUrl);
    const entries = input.Entries ?? [];
    for (const entry of entries) {
      const index = queue.messages.findIndex((m) => m.receiptHandle === entry.ReceiptHandle);
      if (index >= 0) queue.messages.splice(index, 1);
    }
    return { Successful: entries.map((e) => ({ Id: e.Id })), Failed: [] };
  }
}

const md5 = (text: string) => createHash('md5').update(text).digest('hex');
