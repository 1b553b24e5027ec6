/**
 * Loaded by mocha before every test file: no test may reach the real network.
 * Loopback stays allowed for end-to-end tests that start local servers (emulators).
 */
import nock from 'nock';

nock.disableNetConnect();
nock.enableNetConnect((host) => /^(127\.0\.0\.1|localhost|\[::1\])(:\d+)?$/.test(host));

// Tests must never pick up a developer's real credentials.
for (const k of Object.keys(process.env)) {
  if (/^(CC_|HUBSPOT_|SF_|SALESFORCE_)/.test(k)) delete process.env[k];
}
