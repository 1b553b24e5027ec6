/**
 * Loaded by mocha before every test file: no test may reach the real network.
 * Loopback stays allowed for end-to-end tests that start local servers (emulators).
 */
import nock from 'nock';

nock.disableNetConnect();
nock.enableNetConnect((host) => /^(127\.0\.0\.1|localhost|\[::1\])(:\d+)?$/.test(host));

// Tests must never pick up a developer's real credentials.
for (const k of Object.keys(process.env)) {
  // (CC_OPTOUT_SKIP_BROWSER is a test switch, not a credential: the browser test reads it)
  if (
    /^(CC_|HUBSPOT_|SF_|SALESFORCE_)/.test(k) &&
    k !== 'CC_OPTOUT_SKIP_BROWSER' &&
    k !== 'CC_OPTOUT_SKIP_POSTGRES' &&
    k !== 'CC_OPTOUT_TEST_PG'
  )
    delete process.env[k];
}
