/**
 * Deterministic pseudo-random numbers for the emulators (dataset generation and seeded fault injection).
 * mulberry32: tiny, fast, good enough for test data; the same seed always yields the same sequence.
 */

export interface Rng {
  /** Uniform in [0, 1). */
  next(): number;
  /** Integer in [min, max] (inclusive). */
  int(min: number, max: number): number;
  /** True with probability p. */
  chance(p: number): boolean;
  pick<T>(items: readonly T[]): T;
  /** Lower-case hex string of `len` characters. */
  hex(len: number): string;
  /** An RFC 4122 version-4 shaped UUID. */
  uuid(): string;
  /** Alphanumeric string (A-Z a-z 0-9) of `len` characters. */
  alnum(len: number): string;
}

export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const HEX = '0123456789abcdef';
const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

export function createRng(seed: number): Rng {
  const next = mulberry32(seed);
  const rng: Rng = {
    next,
    int: (min, max) => min + Math.floor(next() * (max - min + 1)),
    chance: (p) => next() < p,
    pick: (items) => items[Math.floor(next() * items.length)],
    hex: (len) => {
      let s = '';
      for (let i = 0; i < len; i++) s += HEX[Math.floor(next() * 16)];
      return s;
    },
    uuid: () => {
      const w = (): string =>
        Math.floor(next() * 4294967296)
          .toString(16)
          .padStart(8, '0');
      const h = w() + w() + w() + w();
      const variant = HEX[8 + Math.floor(next() * 4)];
      return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
    },
    alnum: (len) => {
      let s = '';
      for (let i = 0; i < len; i++) s += ALNUM[Math.floor(next() * ALNUM.length)];
      return s;
    },
  };
  return rng;
}

/** Derive an independent stream seed from a base seed and a label (FNV-1a over the label). */
export function deriveSeed(seed: number, label: string): number {
  let h = 0x811c9dc5 ^ (seed >>> 0);
  for (let i = 0; i < label.length; i++) {
    h ^= label.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}
