import { adsProfilesResponseSchema, describeIssues, lwaTokenResponseSchema } from '../../lambda/shared/amazon/schemas';
import * as z from '../../lambda/shared/validation';

// lambda/ validates with zod/mini, which has no messages of its own ("Invalid input" for
// everything); lambda/shared/validation.ts loads the English ones. These are the messages a
// MalformedResponseError or a ConfigError carries.

function problems(schema: z.ZodMiniType, value: unknown): string[] {
  const result = schema.safeParse(value);
  if (result.success) throw new Error('expected a validation failure');
  return describeIssues(result.error);
}

test('malformed Amazon bodies are described by field and rule, in English', () => {
  expect(problems(lwaTokenResponseSchema, { access_token: '', token_type: 'mac', expires_in: '3600' })).toEqual([
    'access_token: Too small: expected string to have >=1 characters',
    'token_type: expected "bearer"',
    'expires_in: Invalid input: expected number, received string',
  ]);
  expect(problems(lwaTokenResponseSchema, { access_token: 'a', token_type: 'bearer', expires_in: 1.5 })).toEqual([
    'expires_in: Invalid input: expected int, received number',
  ]);
  expect(
    problems(adsProfilesResponseSchema, [
      { profileId: '1', countryCode: 'US', currencyCode: 'USD', timezone: 'UTC', accountInfo: { type: 'robot' } },
    ]),
  ).toEqual([
    '0.accountInfo.marketplaceStringId: Invalid input: expected string, received undefined',
    '0.accountInfo.id: Invalid input: expected string, received undefined',
    '0.accountInfo.type: Invalid option: expected one of "seller"|"vendor"|"agency"',
    '0.accountInfo.name: Invalid input: expected string, received undefined',
    '0.accountInfo.validPaymentMethod: Invalid input: expected boolean, received undefined',
  ]);
});

test('unknown fields are accepted and dropped', () => {
  const parsed = lwaTokenResponseSchema.parse({ access_token: 'a', token_type: 'Bearer', expires_in: 60, scope: 'x' });
  expect(parsed).toEqual({ access_token: 'a', token_type: 'Bearer', expires_in: 60 });
});
