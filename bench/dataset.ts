/**
 * How fast the emulators' dataset generator is (the e2e tests and the benchmarks build worlds of up to 1,000,000
 * contacts). Prints the median of five runs per size. Was a timed unit test; timing belongs here.
 */
import { generateDataset } from '../src/emulators';

const ANCHOR = '2026-06-01T00:00:00Z';

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

for (const contacts of [20_000, 100_000]) {
  const ms: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = process.hrtime.bigint();
    const d = generateDataset({ seed: 1 + i, contacts, anchor: ANCHOR });
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (d.cc.length !== contacts) throw new Error(`dataset has ${d.cc.length} contacts, asked for ${contacts}`);
  }
  console.log(
    `dataset: ${contacts.toLocaleString('en-US')} contacts generated in ${median(ms).toFixed(0)} ms (median of 5)`,
  );
}
