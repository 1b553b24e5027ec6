export * from './clock';
export * from './limiter';
export * from './retry';
