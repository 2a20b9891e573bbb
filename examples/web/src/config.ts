/**
 * What the page needs to know, from `config.json` beside it (written by whoever hosts it:
 * the local server, or you when uploading to S3).
 */
export interface WebConfig {
  /** The accounts API's base URL, e.g. `https://abc123.execute-api.eu-west-1.amazonaws.com`. */
  readonly apiUrl: string;
  /** Where Amazon sends the browser back after consent: `<this origin>/amazon/callback`. */
  readonly connectRedirectUri: string;
  /** Accounts per page (1 to 100). @default 10 */
  readonly pageSize?: number;
  /** The product's OpenID Connect provider (authorization code flow with PKCE). */
  readonly signIn: {
    /** Its discovery document, e.g. `https://auth.example.com/.well-known/openid-configuration`. */
    readonly discoveryUrl: string;
    /** The public client id registered for this page. */
    readonly clientId: string;
    /** @default 'openid email' */
    readonly scope?: string;
    /** Which token the API expects: its `aud` and `iss` are what cdk.json's api.jwtAudience / jwtIssuer name. @default 'access_token' */
    readonly token?: 'access_token' | 'id_token';
    /** Where the provider sends the browser back after sign-in: `<this origin>/signed-in`. */
    readonly redirectUri: string;
  };
}

export async function loadConfig(): Promise<WebConfig> {
  const answer = await fetch('/config.json', { cache: 'no-store' });
  if (!answer.ok) throw new Error(`config.json: HTTP ${answer.status}`);
  return (await answer.json()) as WebConfig;
}
