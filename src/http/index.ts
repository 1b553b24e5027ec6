export * from './clock';
export * from './limiter';
export * from './retry';
export * from './single-flight';
