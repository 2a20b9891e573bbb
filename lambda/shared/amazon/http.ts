/**
 * The one HTTP client wrapper of the jobs: global fetch with a hard timeout covering the whole
 * exchange (connect, headers and body), and transport failures turned into one error type.
 * Error messages name the method, host and path only: never headers (Authorization), bodies
 * (tokens, client secrets) or query strings.
 */
export interface HttpRequest {
  readonly method: 'GET' | 'POST';
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body?: string;
  /** Abort the exchange after this long. */
  readonly timeoutMs: number;
}

export interface HttpResponse {
  readonly status: number;
  readonly headers: Headers;
  /** The body as text (read completely within the timeout). */
  readonly text: string;
}

/** The exchange did not complete: `timeout`, or a `network` failure (refused, reset, DNS). */
export class HttpTransportError extends Error {
  constructor(
    readonly kind: 'timeout' | 'network',
    readonly target: string,
    options?: { cause?: unknown },
  ) {
    super(kind === 'timeout' ? `${target} timed out` : `${target} failed: ${describeCause(options?.cause)}`, options);
    this.name = 'HttpTransportError';
  }
}

export type FetchFunction = typeof fetch;

/** Sends one request. Resolves with any HTTP status; rejects only with {@link HttpTransportError}. */
export async function sendHttp(request: HttpRequest, fetchImpl: FetchFunction = fetch): Promise<HttpResponse> {
  const target = describeTarget(request);
  const signal = AbortSignal.timeout(request.timeoutMs);
  try {
    const response = await fetchImpl(request.url, {
      method: request.method,
      headers: request.headers,
      body: request.body,
      signal,
      redirect: 'error',
    });
    const text = await response.text();
    return { status: response.status, headers: response.headers, text };
  } catch (error) {
    const timedOut = signal.aborted || (error as Error)?.name === 'TimeoutError';
    throw new HttpTransportError(timedOut ? 'timeout' : 'network', target, { cause: error });
  }
}

function describeTarget(request: HttpRequest): string {
  try {
    const url = new URL(request.url);
    return `${request.method} ${url.host}${url.pathname}`;
  } catch {
    return `${request.method} (invalid URL)`;
  }
}

/** The network error's code (ECONNRESET, ECONNREFUSED…), which never contains request data. */
function describeCause(cause: unknown): string {
  const inner = (cause as { cause?: { code?: string } })?.cause;
  const code = inner?.code ?? (cause as { code?: string })?.code;
  return code ?? (cause as Error)?.name ?? 'network error';
}
