import { ApiWorld, Handler, request, useApiWorld } from './fixture';
import { checked } from './openapi';
import { seedApiUsers } from './seed';

// GET /v1/connections: each connection's health (migration 0023's connection_health): the last
// health event, its id (the published event's detail.eventId) and since when; the caller's own
// only. Through the API on the Data API path, answers checked against docs/openapi.yaml.

let world: ApiWorld;
let api: Handler;

useApiWorld((started) => {
  ({ world } = started);
  api = checked(world.api());
});
beforeEach(async () => {
  await world.syncs.idle();
  await world.reset();
});

type Health = { lastEvent: string; lastEventId: string; since: string } | null;

async function healthOf(userId: string): Promise<Record<string, Health>> {
  const answer = await api(request('GET', '/v1/connections', { token: world.token(userId) }));
  expect(answer.statusCode).toBe(200);
  const { items } = JSON.parse(answer.body) as { items: Array<{ region: string; health: Health }> };
  return Object.fromEntries(items.map((c) => [c.region, c.health]));
}

async function outbox(userId: string) {
  const { rows } = await world.admin.query<{
    region: string;
    detail_type: string;
    event_id: string;
    occurred_at: Date;
  }>(
    `SELECT region, detail_type, event_id, occurred_at FROM event_outbox WHERE user_id = :u::uuid ORDER BY event_outbox.id`,
    { u: userId },
  );
  return rows;
}

test('each connection shows its last health event and since when; a change of state moves it, an accounts change does not', async () => {
  const [a, b] = await seedApiUsers(world, [
    { regions: ['NA', 'FE'], accountsPerRegion: 1 },
    { regions: ['EU'], accountsPerRegion: 1 },
  ]);
  const connected = await outbox(a.userId);
  const na = connected.find((e) => e.region === 'NA' && e.detail_type === 'Connection Connected')!;
  const first = await healthOf(a.userId);
  expect(first).toEqual({
    NA: { lastEvent: 'Connection Connected', lastEventId: na.event_id, since: expect.any(String) as unknown },
    FE: expect.objectContaining({ lastEvent: 'Connection Connected' }) as unknown,
  });
  expect(Date.parse(first.NA!.since)).toBe(na.occurred_at.getTime());

  await world.admin.query(
    `UPDATE oauth_tokens SET proactive_refresh_enabled = false WHERE user_id = :u::uuid AND region = 'NA'`,
    {
      u: a.userId,
    },
  );
  // An account gone at Amazon is an event, not a change of the connection's health.
  await world.admin.query(`UPDATE user_accounts SET status = 'inactive' WHERE user_id = :u::uuid AND region = 'NA'`, {
    u: a.userId,
  });
  const events = await outbox(a.userId);
  const off = events.find((e) => e.detail_type === 'Connection Refresh Turned Off')!;
  expect(events.map((e) => e.detail_type)).toContain('Connection Accounts Changed');
  const health = await healthOf(a.userId);
  expect(health.NA).toMatchObject({ lastEvent: 'Connection Refresh Turned Off', lastEventId: off.event_id });
  expect(Date.parse(health.NA!.since)).toBe(off.occurred_at.getTime());
  expect(health.FE).toMatchObject({ lastEvent: 'Connection Connected' });
  // B sees its own connection's health only.
  expect(Object.keys(await healthOf(b.userId))).toEqual(['EU']);
});

test('a connection from before the events (no health row) shows null', async () => {
  const [a] = await seedApiUsers(world, [{ regions: ['NA'], accountsPerRegion: 1 }]);
  await world.admin.query(`DELETE FROM connection_health WHERE user_id = :u::uuid`, { u: a.userId });
  expect(await healthOf(a.userId)).toEqual({ NA: null });
});
