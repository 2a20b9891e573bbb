import { Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import { AccessLogFormat } from 'aws-cdk-lib/aws-apigateway';
import * as apigwv2 from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpIamAuthorizer } from 'aws-cdk-lib/aws-apigatewayv2-authorizers';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct, IDependable } from 'constructs';
import { API_ENV } from '../lambda/shared/api-env';
import { JOB_ENV } from '../lambda/shared/config';
import { METRICS_NAMESPACE } from '../lambda/shared/jobs/metrics';
import { TOKEN_ROUTE, TOKEN_ROUTE_SERVICE } from '../lambda/token-route/route';
import type { ApiDeployConfig } from './config';
import type { Database } from './database';
import { NodeFunction } from './node-function';

/** Every route of the API, exactly: anything else is API Gateway's 404 and never reaches the Lambda. */
export const API_ROUTES = [
  'GET /v1/accounts',
  'GET /v1/accounts/{id}',
  'GET /v1/accounts/{id}/sync-history',
  'GET /v1/sync-history',
  'GET /v1/connections',
  'POST /v1/connections/sessions',
  'POST /v1/connections',
  'DELETE /v1/connections/{region}',
  'POST /v1/syncs',
] as const;

/**
 * The internal route the product's servers call for a fresh access token (lambda/token-route):
 * authorised by AWS IAM (SigV4), not by a user's JWT, served by its own function.
 */
export const INTERNAL_TOKEN_ROUTE = TOKEN_ROUTE;

/** The `service` of the API's logs (Powertools) and of its access-log metric. */
export const API_SERVICE_NAME = 'accounts-api';
/** Metric (namespace `AmazonAccounts`) of the requests the stage's throttling refused. */
export const API_THROTTLED_METRIC = 'ApiThrottledRequests';

/**
 * Access log fields (HTTP API `$context` variables), one JSON object per request. Nothing of
 * the request's headers or body: the `Authorization` header (the caller's JWT) is never
 * logged, and neither is the query string (filters, cursors). `environment` and `service` are
 * constants, so the metric filter on these logs can give its metric the jobs' dimensions.
 */
export function accessLogFields(environmentName: string): Record<string, string> {
  return {
    requestId: '$context.requestId',
    requestTime: '$context.requestTime',
    httpMethod: '$context.httpMethod',
    routeKey: '$context.routeKey',
    status: '$context.status',
    protocol: '$context.protocol',
    responseLength: '$context.responseLength',
    responseLatency: '$context.responseLatency',
    integrationLatency: '$context.integrationLatency',
    // The status Lambda answered the invocation with (200 even when the function's response
    // is a 4xx/5xx); '-' when the request never reached the function (e.g. throttled).
    integrationStatus: '$context.integrationStatus',
    integrationError: '$context.integrationErrorMessage',
    errorMessage: '$context.error.message',
    sourceIp: '$context.identity.sourceIp',
    environment: environmentName,
    service: API_SERVICE_NAME,
  };
}

export interface AccountsApiProps {
  /** The environment's name (APP_ENVIRONMENT, log fields). */
  readonly environmentName: string;
  /** Sign-in, CORS and throttling of this environment (cdk.json). */
  readonly config: ApiDeployConfig;
  /** The cluster (Data API) and the API's database login (`accounts_api`). */
  readonly database: Database;
  /** LWA client id/secret (JSON): exchanging authorization codes. */
  readonly lwaClientSecret: secretsmanager.ISecret;
  /** Token encryption key (base64 of 32 bytes): storing the tokens of a new connection. */
  readonly tokenEncryptionKeySecret: secretsmanager.ISecret;
  /** The account-sync job's function, which a manual sync invokes asynchronously. */
  readonly accountSyncFunction: lambda.IFunction;
  /**
   * Amazon's request rates per region, the ceilings of the shared budgets both functions draw
   * from (the jobs' values: one budget per endpoint and region for everyone).
   */
  readonly amazonLimits: { readonly lwaRequestsPerSecond: number; readonly adsRequestsPerSecond: number };
  /** The API is created only after this (the schema migration, which creates its login) succeeded. */
  readonly after: IDependable;
  /** Retention of the function's and the access logs. */
  readonly logRetention: logs.RetentionDays;
  /** What happens to those log groups when they leave the stack. */
  readonly logRemovalPolicy: RemovalPolicy;
}

/**
 * The accounts API: an API Gateway HTTP API whose user routes (API_ROUTES) all go to one
 * Lambda, plus the internal token route (INTERNAL_TOKEN_ROUTE: IAM authorisation, its own
 * Lambda, see the constructor).
 *
 * No API Gateway authorizer: the Lambda verifies the caller's `Authorization: Bearer <JWT>`
 * itself (aws-jwt-verify, JWKS cached per container). The product's identity provider is
 * Supabase, which signs ES256, an algorithm API Gateway's built-in JWT authorizer is not
 * documented to accept; a Lambda authorizer would add a second invocation (and its latency and
 * cost) to every request for the same check. The function answers 401 to anything it cannot verify, so
 * no route serves data without a valid token, and the token's `sub` becomes the database
 * request's claims, on which Row Level Security decides what is visible.
 *
 * The function runs outside the VPC (it reaches the database through the Data API and Amazon
 * over the internet) and may read exactly three secrets (its database login's, the LWA client,
 * the token key), use the Data API on this cluster, and invoke the account-sync function.
 */
export class AccountsApi extends Construct {
  readonly httpApi: apigwv2.HttpApi;
  readonly stage: apigwv2.HttpStage;
  readonly function: lambda.IFunction;
  /** The internal token route's function (the jobs' database login, the token key, the LWA client). */
  readonly tokenFunction: lambda.IFunction;
  /** The internal token route (IAM authorisation). */
  readonly tokenRoute: apigwv2.HttpRoute;
  /**
   * `execute-api:Invoke` on exactly the internal token route of this stage: the product's roles
   * attach it (its ARN is a stack output) to call the route.
   */
  readonly tokenRoutePolicy: iam.ManagedPolicy;
  readonly accessLogs: logs.LogGroup;
  /** The API's base URL (the `$default` stage), ending in `/`. */
  readonly url: string;
  private readonly throttledRequests: logs.MetricFilter;
  private readonly environmentName: string;

  constructor(scope: Construct, id: string, props: AccountsApiProps) {
    super(scope, id);
    const { config } = props;
    this.environmentName = props.environmentName;

    const handler = this.routeFunction(props, 'Handler', {
      entry: 'lambda/accounts-api/handler.ts',
      description: 'Accounts API: lists, connects, disconnects and syncs Amazon accounts (HTTP API)',
      // Requests wait on cold starts: more memory is more CPU for loading the bundle and
      // verifying the first token.
      memorySizeMb: 1024,
      environment: {
        [API_ENV.environment]: props.environmentName,
        [API_ENV.clusterArn]: props.database.cluster.clusterArn,
        [API_ENV.databaseSecretArn]: props.database.apiSecret.secretArn,
        [API_ENV.databaseName]: props.database.databaseName,
        [API_ENV.lwaClientSecretArn]: props.lwaClientSecret.secretArn,
        [API_ENV.tokenKeySecretArn]: props.tokenEncryptionKeySecret.secretArn,
        // The authorization-code exchange draws from the shared LWA budget too (migration 0018).
        [API_ENV.lwaRequestsPerSecond]: String(props.amazonLimits.lwaRequestsPerSecond),
        [API_ENV.jwtIssuer]: config.jwtIssuer,
        [API_ENV.jwtAudience]: [config.jwtAudience].flat().join(','),
        ...(config.jwksUrl ? { [API_ENV.jwksUrl]: config.jwksUrl } : {}),
        [API_ENV.accountSyncFunctionName]: props.accountSyncFunction.functionName,
        [API_ENV.connectRedirectUris]: config.connectRedirectUris.join(','),
        POWERTOOLS_SERVICE_NAME: API_SERVICE_NAME,
      },
      grantDatabase: (fn) => props.database.grantDataApiAccessAsApi(fn),
    });
    this.function = handler;
    // The function itself, unqualified: the API invokes `$LATEST`, never a version or alias.
    iam.Grant.addToPrincipal({
      grantee: handler,
      actions: ['lambda:InvokeFunction'],
      resourceArns: [props.accountSyncFunction.functionArn],
    });

    this.accessLogs = new logs.LogGroup(this, 'AccessLogs', {
      retention: props.logRetention,
      removalPolicy: props.logRemovalPolicy,
    });

    this.httpApi = new apigwv2.HttpApi(this, 'HttpApi', {
      apiName: `AmazonAccounts-${props.environmentName}-accounts-api`,
      description: `Amazon accounts API (${props.environmentName})`,
      // The stage below carries the throttling and access logs the default stage cannot.
      createDefaultStage: false,
      corsPreflight: {
        allowOrigins: [...config.corsAllowedOrigins],
        allowHeaders: ['authorization', 'content-type'],
        allowMethods: [
          apigwv2.CorsHttpMethod.GET,
          apigwv2.CorsHttpMethod.POST,
          apigwv2.CorsHttpMethod.DELETE,
          apigwv2.CorsHttpMethod.OPTIONS,
        ],
        // A 429's Retry-After is not a CORS-safelisted response header.
        exposeHeaders: ['retry-after'],
        // Bearer tokens, never cookies.
        allowCredentials: false,
        maxAge: Duration.hours(1),
      },
    });
    this.stage = new apigwv2.HttpStage(this, 'DefaultStage', {
      httpApi: this.httpApi,
      stageName: '$default',
      autoDeploy: true,
      throttle: { rateLimit: config.throttle.rateLimit, burstLimit: config.throttle.burstLimit },
      accessLogSettings: {
        destination: new apigwv2.LogGroupLogDestination(this.accessLogs),
        format: AccessLogFormat.custom(JSON.stringify(accessLogFields(props.environmentName))),
      },
    });
    this.url = this.stage.url;

    const integration = new HttpLambdaIntegration('Handler', handler, {
      payloadFormatVersion: apigwv2.PayloadFormatVersion.VERSION_2_0,
    });
    for (const route of API_ROUTES) {
      const [method, path] = route.split(' ');
      // No authorizer on purpose (see above): the function verifies the JWT.
      this.httpApi.addRoutes({ path, methods: [method as apigwv2.HttpMethod], integration });
    }

    // The internal token route: its own function, since it needs what the user-facing one must
    // not have (the jobs' database login, which writes the token columns; no JWT involved).
    // The jobs' container code (Data API as the jobs' login, LWA client on the shared budget).
    // The route's own wait for a concurrent refresh ends at 20 s, under the function's 25 s.
    const tokenFunction = this.routeFunction(props, 'TokenHandler', {
      entry: 'lambda/token-route/handler.ts',
      description: "Internal route: a user's fresh Login with Amazon access token for the product's servers (IAM)",
      memorySizeMb: 512,
      environment: {
        [JOB_ENV.environment]: props.environmentName,
        [JOB_ENV.clusterArn]: props.database.cluster.clusterArn,
        [JOB_ENV.databaseSecretArn]: props.database.workerSecret.secretArn,
        [JOB_ENV.databaseName]: props.database.databaseName,
        [JOB_ENV.lwaClientSecretArn]: props.lwaClientSecret.secretArn,
        [JOB_ENV.tokenKeySecretArn]: props.tokenEncryptionKeySecret.secretArn,
        [JOB_ENV.lwaRequestsPerSecond]: String(props.amazonLimits.lwaRequestsPerSecond),
        [JOB_ENV.adsRequestsPerSecond]: String(props.amazonLimits.adsRequestsPerSecond),
        POWERTOOLS_SERVICE_NAME: TOKEN_ROUTE_SERVICE,
        POWERTOOLS_METRICS_NAMESPACE: METRICS_NAMESPACE,
      },
      grantDatabase: (fn) => props.database.grantDataApiAccessAsWorker(fn),
    });
    this.tokenFunction = tokenFunction;

    const [tokenMethod, tokenPath] = INTERNAL_TOKEN_ROUTE.split(' ');
    [this.tokenRoute] = this.httpApi.addRoutes({
      path: tokenPath,
      methods: [tokenMethod as apigwv2.HttpMethod],
      integration: new HttpLambdaIntegration('TokenHandler', tokenFunction, {
        payloadFormatVersion: apigwv2.PayloadFormatVersion.VERSION_2_0,
      }),
      // SigV4-signed requests of principals allowed execute-api:Invoke on this route only.
      authorizer: new HttpIamAuthorizer(),
    });
    this.tokenRoutePolicy = new iam.ManagedPolicy(this, 'TokenRouteInvokePolicy', {
      description: `Call ${INTERNAL_TOKEN_ROUTE} of the accounts API (${props.environmentName}): fresh Amazon access tokens`,
      statements: [
        new iam.PolicyStatement({
          actions: ['execute-api:Invoke'],
          // …/<apiId>/$default/POST/internal/v1/access-tokens: this route, method and stage only.
          resources: [this.httpApi.arnForExecuteApi(tokenMethod, tokenPath, this.stage.stageName)],
        }),
      ],
    });

    Validations.of(this.httpApi).acknowledge({
      id: 'AwsSolutions-APIG4',
      reason:
        'Every user route is authenticated by the Lambda itself (ES256 JWTs of the identity provider, which the built-in JWT authorizer does not document); Row Level Security then isolates each caller. The internal token route has the IAM authorizer.',
    });
    this.throttledRequests = new logs.MetricFilter(this, 'ThrottledRequests', {
      logGroup: this.accessLogs,
      // Answered 429 without reaching the function: the stage's throttling (the function's
      // own 429, a manual sync within 60 s, has an integration status).
      filterPattern: logs.FilterPattern.all(
        logs.FilterPattern.stringValue('$.status', '=', '429'),
        logs.FilterPattern.stringValue('$.integrationStatus', '=', '-'),
      ),
      metricNamespace: METRICS_NAMESPACE,
      metricName: API_THROTTLED_METRIC,
      metricValue: '1',
      unit: cloudwatch.Unit.COUNT,
      // The jobs' dimension set (service, environment), from the access log's constant fields.
      dimensions: { service: '$.service', environment: '$.environment' },
    });
  }

  /**
   * A function behind one of the API's routes: what both routes' functions share. Its timeout is
   * below the integration's 29 s, so a slow request ends in the function (with its log) rather
   * than as API Gateway's bare 503. No onFailureQueue: API Gateway invokes synchronously, so
   * Lambda neither retries nor sends to a destination; a failure is the caller's 5xx, counted
   * and alarmed (monitoring). Both use the Data API (each as its own login), read the LWA client
   * and the token key, and start after the migrations (`props.after`).
   */
  private routeFunction(
    props: AccountsApiProps,
    id: string,
    options: {
      entry: string;
      description: string;
      memorySizeMb: number;
      environment: Record<string, string>;
      /** Its Data API access, as the login its work needs. */
      grantDatabase: (fn: lambda.Function) => void;
    },
  ): lambda.Function {
    const { grantDatabase, ...functionOptions } = options;
    const fn = new NodeFunction(this, id, {
      ...functionOptions,
      timeout: Duration.seconds(25),
      logRetention: props.logRetention,
      logRemovalPolicy: props.logRemovalPolicy,
    }).function;
    grantDatabase(fn);
    props.lwaClientSecret.grantRead(fn);
    props.tokenEncryptionKeySecret.grantRead(fn);
    fn.node.addDependency(props.after);
    return fn;
  }

  /**
   * Requests API Gateway refused with 429 because of the stage's throttling, per period (from
   * the access logs: HTTP APIs publish no throttling metric of their own).
   */
  metricThrottledRequests(period = Duration.minutes(5)): cloudwatch.Metric {
    return this.throttledRequests.metric({
      dimensionsMap: { service: API_SERVICE_NAME, environment: this.environmentName },
      statistic: 'Sum',
      period,
      label: 'Throttled by API Gateway (429)',
    });
  }
}
