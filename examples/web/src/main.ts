import { Account, AccountFilters, AccountsApi, ApiError, Connection, Region } from './api';
import { loadConfig, WebConfig } from './config';
import { currentToken, finishSignIn, signOut, startSignIn } from './sign-in';

/**
 * The example app: sign in, connect Amazon regions, see each connection's health, browse and
 * filter the accounts page by page, open an account's sync history, start a manual sync,
 * disconnect. Plain DOM, no framework: each section has a render function that redraws it
 * from the API's answer.
 */
const REGIONS: Region[] = ['NA', 'EU', 'FE'];
const CONNECT_KEY = 'accounts-example.connect';

let config: WebConfig;
let api: AccountsApi;
let filters: AccountFilters = {};
/** Cursors of the pages before the current one (the first page's is undefined). */
let cursors: Array<string | undefined> = [undefined];
let nextCursor: string | null = null;

const $ = <T extends HTMLElement>(selector: string) => document.querySelector<T>(selector)!;

/** An element with attributes and children (strings become text, never HTML). */
function h(tag: string, attributes: Record<string, string | boolean> = {}, ...children: Array<Node | string>) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false) continue;
    element.setAttribute(name, value === true ? '' : value);
  }
  element.append(...children);
  return element;
}

const when = (iso: string | null) => (iso ? new Date(iso).toLocaleString() : '—');

/** A status as a badge (its colours in styles.css, checked for contrast by the browser test). */
const badge = (status: string) =>
  h('span', { class: `badge badge-${status.replace(/_/g, '-')}` }, status.replace(/_/g, ' '));

function say(text: string, kind: 'info' | 'error' = 'info'): void {
  const box = $('#messages');
  box.replaceChildren(h('p', { class: `message message-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text));
}

/** The API's problem title (and detail), Retry-After when it sent one, or why it cannot be reached. */
function explain(error: unknown, doing: string): string {
  if (error instanceof ApiError) {
    const retry = error.retryAfterSeconds !== undefined ? ` Retry-After: ${error.retryAfterSeconds} s.` : '';
    return `${doing} failed — ${error.title}${error.detail ? `: ${error.detail}` : ''}${retry}`;
  }
  return `${doing} failed — ${(error as Error).message}`;
}

let pending = 0;

/** Runs an action, saying why it failed if it does; `<main aria-busy>` while any runs. */
async function attempt(doing: string, action: () => Promise<void>): Promise<void> {
  pending += 1;
  $('main').setAttribute('aria-busy', 'true');
  try {
    await action();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      signOut();
      renderSignedIn();
    }
    say(explain(error, doing), 'error');
  } finally {
    pending -= 1;
    if (pending === 0) $('main').setAttribute('aria-busy', 'false');
  }
}

function renderSignedIn(): void {
  const signedIn = currentToken() !== undefined;
  $('#signed-out').hidden = signedIn;
  for (const id of ['#connections', '#accounts']) $(id).hidden = !signedIn;
  $('#history').hidden = true;
  $('#sign-out').hidden = !signedIn;
}

// ── Connections ──────────────────────────────────────────────────────────────────────────

function healthText(c: Connection): string {
  const parts = [`token valid until ${when(c.expiresAt)}`];
  if (c.lastError) parts.push(`last error: ${c.lastError}`);
  // The API's health record (its last connection event and since when), when it sends one.
  const health = c.health as { lastEvent?: string; since?: string } | null | undefined;
  if (health?.lastEvent) parts.push(`${health.lastEvent}${health.since ? ` since ${when(health.since)}` : ''}`);
  return parts.join('; ');
}

async function loadConnections(): Promise<void> {
  const { items } = await api.listConnections();
  const body = $('#connections tbody');
  body.replaceChildren(
    ...items.map((c) =>
      h(
        'tr',
        { 'data-region': c.region },
        h('th', { scope: 'row' }, c.region),
        h('td', {}, badge(c.status), h('div', { class: 'muted' }, healthText(c))),
        h('td', {}, `${c.accounts.total} (${c.accounts.completed} synced, ${c.accounts.failed} failed)`),
        h(
          'td',
          {},
          c.lastSync ? badge(c.lastSync.syncStatus) : '—',
          h('div', { class: 'muted' }, c.lastSync ? `${c.lastSync.syncType}, ${when(c.lastSync.startedAt)}` : 'never'),
        ),
        h(
          'td',
          { class: 'actions' },
          h('button', { type: 'button', 'data-action': 'sync', 'data-region': c.region }, `Sync ${c.region} now`),
          h(
            'button',
            { type: 'button', 'data-action': 'disconnect', 'data-region': c.region, class: 'danger' },
            `Disconnect ${c.region}`,
          ),
        ),
      ),
    ),
  );
  $('#connections .empty').hidden = items.length > 0;
  const connected = new Set(items.map((c) => c.region));
  const select = $<HTMLSelectElement>('#connect-region');
  select.replaceChildren(...REGIONS.map((r) => h('option', { value: r, disabled: connected.has(r) }, r)));
  const free = REGIONS.find((r) => !connected.has(r));
  if (free) select.value = free;
  $<HTMLButtonElement>('#connect-button').disabled = free === undefined;
}

async function connectRegion(region: Region): Promise<void> {
  const session = await api.startConnect(region, config.connectRedirectUri);
  sessionStorage.setItem(CONNECT_KEY, JSON.stringify({ region, state: session.state }));
  location.assign(session.authorizationUrl);
}

/** Amazon sent the browser back to /amazon/callback: finish connecting, or say why not. */
async function finishConnect(params: URLSearchParams): Promise<void> {
  const pending = JSON.parse(sessionStorage.getItem(CONNECT_KEY) ?? 'null') as { region: Region; state: string } | null;
  sessionStorage.removeItem(CONNECT_KEY);
  history.replaceState(null, '', '/');
  if (!pending || pending.state !== params.get('state')) {
    say('This answer from Amazon does not belong to a connect started in this tab; start connecting again.', 'error');
    return;
  }
  if (params.get('error')) {
    const denied = params.get('error') === 'access_denied';
    say(
      denied
        ? `Amazon access in ${pending.region} was denied at the consent page; nothing was connected. Connect again to allow it.`
        : `Amazon refused the connection in ${pending.region}: ${params.get('error_description') ?? params.get('error')}.`,
      'error',
    );
    return;
  }
  await attempt(`Connecting ${pending.region}`, async () => {
    await api.connect(pending.region, params.get('code') ?? '', pending.state);
    say(`Connected Amazon in ${pending.region}. Its accounts are being synced.`);
  });
}

// ── Accounts ─────────────────────────────────────────────────────────────────────────────

function accountRow(a: Account): HTMLElement {
  return h(
    'tr',
    { 'data-account-id': a.id },
    h('th', { scope: 'row' }, a.accountName ?? a.amazonAccountId, h('div', { class: 'muted' }, a.amazonAccountId)),
    h('td', {}, a.region),
    h('td', {}, a.marketplaceStringId ?? '—', h('div', { class: 'muted' }, a.countryCode ?? '')),
    h('td', {}, badge(a.status)),
    h('td', {}, badge(a.syncStatus), a.syncErrorMessage ? h('div', { class: 'muted' }, a.syncErrorMessage) : ''),
    h('td', {}, when(a.lastSyncedAt)),
    h(
      'td',
      {},
      h(
        'button',
        {
          type: 'button',
          'data-action': 'history',
          'data-account-id': a.id,
          'data-name': a.accountName ?? a.amazonAccountId,
        },
        'History',
      ),
    ),
  );
}

async function loadAccounts(): Promise<void> {
  const page = await api.listAccounts(filters, cursors[cursors.length - 1], config.pageSize ?? 10);
  nextCursor = page.nextCursor;
  $('#accounts tbody').replaceChildren(...page.items.map(accountRow));
  $('#accounts .empty').hidden = page.items.length > 0;
  $('#page-number').textContent = `Page ${cursors.length}`;
  $<HTMLButtonElement>('#previous-page').disabled = cursors.length === 1;
  $<HTMLButtonElement>('#next-page').disabled = nextCursor === null;
}

async function showHistory(accountId: string, name: string): Promise<void> {
  const { items } = await api.accountHistory(accountId);
  $('#history-title').textContent = `Sync history of ${name}`;
  $('#history tbody').replaceChildren(
    ...items.map((i) =>
      h(
        'tr',
        {},
        h('td', {}, when(i.startedAt)),
        h('td', {}, i.syncType),
        h('td', {}, badge(i.syncStatus)),
        h('td', {}, `${i.accountsSynced} synced, ${i.accountsFailed} failed`),
      ),
    ),
  );
  $('#history .empty').hidden = items.length > 0;
  $('#history').hidden = false;
  $<HTMLButtonElement>('#close-history').focus();
}

async function refresh(): Promise<void> {
  await attempt('Loading', async () => {
    await loadConnections();
    await loadAccounts();
  });
}

// ── Wiring ───────────────────────────────────────────────────────────────────────────────

function wire(): void {
  $('#sign-in').addEventListener('click', () => void attempt('Signing in', () => startSignIn(config)));
  $('#sign-out').addEventListener('click', () => {
    signOut();
    renderSignedIn();
    say('Signed out.');
  });
  $('#refresh').addEventListener('click', () => void refresh());
  $('#connect-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const region = $<HTMLSelectElement>('#connect-region').value as Region;
    void attempt(`Connecting ${region}`, () => connectRegion(region));
  });
  $('#connections').addEventListener('click', (event) => {
    const button = (event.target as HTMLElement).closest<HTMLButtonElement>('button[data-action]');
    if (!button) return;
    const region = button.dataset.region as Region;
    if (button.dataset.action === 'sync')
      void attempt(`Syncing ${region}`, async () => {
        await api.syncNow(region);
        say(`Sync of ${region} started; refresh in a moment to see it.`);
      });
    if (button.dataset.action === 'disconnect')
      void attempt(`Disconnecting ${region}`, async () => {
        await api.disconnect(region);
        say(`Disconnected ${region}. Its accounts are kept but no longer synced.`);
        await loadConnections();
        await loadAccounts();
      });
  });
  $('#filters').addEventListener('submit', (event) => {
    event.preventDefault();
    const form = new FormData(event.target as HTMLFormElement);
    const field = (name: string) => {
      const value = form.get(name);
      return typeof value === 'string' ? value.trim() : '';
    };
    filters = {
      region: field('region'),
      status: field('status'),
      syncStatus: field('syncStatus'),
      marketplace: field('marketplace'),
    };
    cursors = [undefined];
    void attempt('Filtering accounts', loadAccounts);
  });
  $('#next-page').addEventListener('click', () => {
    if (nextCursor === null) return;
    cursors.push(nextCursor);
    void attempt('Loading the next page', loadAccounts);
  });
  $('#previous-page').addEventListener('click', () => {
    if (cursors.length > 1) cursors.pop();
    void attempt('Loading the previous page', loadAccounts);
  });
  $('#accounts').addEventListener('click', (event) => {
    const button = (event.target as HTMLElement).closest<HTMLButtonElement>('button[data-action=history]');
    if (button)
      void attempt('Loading the sync history', () => showHistory(button.dataset.accountId!, button.dataset.name!));
  });
  $('#close-history').addEventListener('click', () => {
    $('#history').hidden = true;
  });
}

async function main(): Promise<void> {
  config = await loadConfig();
  api = new AccountsApi(config.apiUrl, currentToken);
  wire();
  const params = new URLSearchParams(location.search);
  if (location.pathname === '/signed-in') {
    history.replaceState(null, '', '/');
    await attempt('Signing in', () => finishSignIn(config, params));
  }
  renderSignedIn();
  if (currentToken() === undefined) return;
  if (location.pathname === '/amazon/callback') await finishConnect(params);
  await refresh();
}

main().catch((error: Error) => say(`The page could not start: ${error.message}`, 'error'));
