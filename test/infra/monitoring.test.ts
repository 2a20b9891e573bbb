import { AMAZON_REGIONS } from '../../lambda/shared/amazon/regions';
import { METRIC_DIMENSIONS, REGIONAL_METRICS, SERVICE_NAMES } from '../../lambda/shared/jobs/metrics';
import { onlyResource, resourcesOf, templateOf } from './support/stack';

// Connections per region: the dashboard graphs the regional metrics line by line, and no alarm
// reads a region (the alarm count does not grow with the regions).

const env = 'dev';

/** The dashboard body as CloudFormation joins it (tokens left as they are). */
function dashboardBody(): string {
  const { resource } = onlyResource(templateOf(env), 'AWS::CloudWatch::Dashboard');
  const body = resource.Properties?.DashboardBody as { 'Fn::Join': [string, unknown[]] };
  return body['Fn::Join'][1].map((part) => (typeof part === 'string' ? part : '')).join('');
}

test.each([
  [SERVICE_NAMES.tokenRefresh, REGIONAL_METRICS.tokenRefresh],
  [SERVICE_NAMES.accountSync, REGIONAL_METRICS.accountSync],
])('%s: a graph per regional metric, a line per region', (service, metrics) => {
  const body = dashboardBody();
  for (const metric of metrics)
    for (const region of AMAZON_REGIONS)
      expect(body).toContain(
        // (CloudWatch's order: the dimensions sorted by name)
        JSON.stringify([
          'AmazonAccounts',
          metric,
          'environment',
          env,
          METRIC_DIMENSIONS.region,
          region,
          'service',
          service,
        ]).slice(1, -1),
      );
});

test('no alarm reads a region dimension', () => {
  const alarms = JSON.stringify(resourcesOf(templateOf(env), 'AWS::CloudWatch::Alarm'));
  expect(alarms).not.toContain(`"${METRIC_DIMENSIONS.region}"`);
  expect(alarms).toContain('RefreshFailures');
});
