import {
  AUTHENTICATION_RETRY_DELAY_MS,
  isAuthenticationFailure,
  retryingAuthentication,
} from '../../../../lambda/shared/db/authentication';
import { DatabaseError } from '../../../../lambda/shared/db';

// lambda/shared/db/authentication.ts on its own: which errors are a refused password (as
// node-postgres and as the Data API report one), and the one retry after a pause that must fit
// the caller's budget. The password rotation itself, on both database paths, is in
// password-rotation.test.ts.

const refused = () => new DatabaseError('boom', { code: '28P01' });

describe('isAuthenticationFailure', () => {
  test.each([
    ['node-postgres: SQLSTATE 28P01', new DatabaseError('anything', { code: '28P01' })],
    [
      'the Data API: the message with its SQLState',
      new DatabaseError('ERROR: password authentication failed for user "jobs"; SQLState: 28P01'),
    ],
    ['the message alone', new Error('FATAL: Password authentication failed for user "x"')],
    ['SQLState 28P01 alone', new Error('connection refused; SQLState: 28P01')],
    ['a pg error object (code on a plain Error)', Object.assign(new Error('x'), { code: '28P01' })],
  ])('%s is a refused password', (_what, error) => {
    expect(isAuthenticationFailure(error)).toBe(true);
  });

  test.each([
    ['another SQLSTATE', new DatabaseError('terminating connection', { code: '57P01' })],
    ['another SQLSTATE in the message', new DatabaseError('ERROR: deadlock detected; SQLState: 40P01')],
    ['no code, another message', new Error('timeout')],
    ['a code of 28000 (another login failure)', new DatabaseError('no pg_hba.conf entry', { code: '28000' })],
    ['not an Error: a string', '28P01'],
    ['not an Error: an object with the code', { code: '28P01', message: 'password authentication failed' }],
    ['undefined', undefined],
  ])('%s is not', (_what, error) => {
    expect(isAuthenticationFailure(error)).toBe(false);
  });
});

describe('retryingAuthentication', () => {
  test('a refused password is tried once more after the pause; a second refusal is thrown', async () => {
    const sleeps: number[] = [];
    let calls = 0;
    const events: string[] = [];
    const second = refused();
    await expect(
      retryingAuthentication(
        () => {
          calls += 1;
          events.push(`call ${calls}`);
          return Promise.reject(calls === 1 ? refused() : second);
        },
        {
          delayMs: 1_500,
          sleep: (ms) => {
            sleeps.push(ms);
            events.push('sleep');
            return Promise.resolve();
          },
          onRetry: () => events.push('onRetry'),
        },
      ),
    ).rejects.toBe(second);
    expect(events).toEqual(['call 1', 'onRetry', 'sleep', 'call 2']);
    expect(sleeps).toEqual([1_500]);
  });

  test('the pause is taken when it fits the budget exactly, not when it is longer', async () => {
    const attempt = async (budget: number) => {
      let calls = 0;
      const result = await retryingAuthentication(
        () => {
          calls += 1;
          return calls === 1 ? Promise.reject(refused()) : Promise.resolve('ok');
        },
        { delayMs: 1_000, sleep: () => Promise.resolve(), waitBudgetMs: () => budget },
      ).catch((error: unknown) => error);
      return { result, calls };
    };
    expect(await attempt(1_000)).toEqual({ result: 'ok', calls: 2 });
    expect(await attempt(5_000)).toEqual({ result: 'ok', calls: 2 });
    const short = await attempt(999);
    expect(short.calls).toBe(1);
    expect(isAuthenticationFailure(short.result)).toBe(true);
  });

  test('other errors, and any error with the retry off, are thrown at once', async () => {
    for (const [error, delayMs] of [
      [new DatabaseError('deadlock', { code: '40P01' }), 1_000],
      [refused(), false],
    ] as const) {
      let calls = 0;
      let slept = false;
      await expect(
        retryingAuthentication(
          () => {
            calls += 1;
            return Promise.reject(error);
          },
          {
            delayMs,
            sleep: () => {
              slept = true;
              return Promise.resolve();
            },
          },
        ),
      ).rejects.toBe(error);
      expect({ calls, slept }).toEqual({ calls: 1, slept: false });
    }
  });

  test('without a sleep of its own it waits on a timer for the pause, and only then retries', async () => {
    jest.useFakeTimers();
    try {
      let calls = 0;
      const result = retryingAuthentication(
        () => {
          calls += 1;
          return calls === 1 ? Promise.reject(refused()) : Promise.resolve(calls);
        },
        { delayMs: 1_500 },
      );
      await jest.advanceTimersByTimeAsync(1_499);
      expect(calls).toBe(1);
      await jest.advanceTimersByTimeAsync(1);
      expect(await result).toBe(2);
    } finally {
      jest.useRealTimers();
    }
  });

  test('the default pause is 1.5 s', () => {
    expect(AUTHENTICATION_RETRY_DELAY_MS).toBe(1_500);
  });
});
