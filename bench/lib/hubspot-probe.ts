/**
 * Does this HubSpot emulator speak HubSpot's 2026 platform (date-versioned paths, CRM search)? The benchmarks
 * ask before they choose the connector's settings, so they run against an emulator of either generation.
 */
import axios from 'axios';

export interface HubSpotPlatform {
  /** The emulator answers `POST /crm/objects/2026-09/contacts/search` (anything but 404/405/501). */
  dateVersioned: boolean;
  /** The connector settings that run against it: the default when it does, else legacy without search. */
  settings: Record<string, unknown>;
  note: string;
}

export async function probeHubSpot(baseUrl: string, token: string): Promise<HubSpotPlatform> {
  let status = 0;
  try {
    const r = await axios.post(
      `${baseUrl.replace(/\/+$/, '')}/crm/objects/2026-09/contacts/search`,
      {
        filterGroups: [
          {
            filters: [
              { propertyName: 'hs_additional_emails', operator: 'IN', values: ['bench-probe@example.invalid'] },
            ],
          },
        ],
        properties: ['email'],
        sorts: [],
        limit: 1,
        after: '0',
      },
      { headers: { Authorization: `Bearer ${token}` }, validateStatus: () => true, timeout: 10_000 },
    );
    status = r.status;
  } catch {
    status = 0;
  }
  const dateVersioned = status !== 0 && status !== 404 && status !== 405 && status !== 501;
  return dateVersioned
    ? {
        dateVersioned,
        settings: {},
        note: `emulator serves the 2026-09 paths and search (probe: HTTP ${status}); connector defaults (apiVersion 2026-09, matchAdditionalEmails)`,
      }
    : {
        dateVersioned,
        settings: { apiVersion: 'legacy', matchAdditionalEmails: false },
        note:
          `emulator does NOT serve the 2026-09 paths or search yet (probe: ${status === 0 ? 'no answer' : `HTTP ${status}`}): ` +
          'the HubSpot runs use apiVersion "legacy" with matchAdditionalEmails false, so secondary addresses are not measured',
      };
}
