// Boot file for the worker thread of native.test.ts: registers the TypeScript loader in the worker
// (a Worker does not inherit the main thread's loader hooks), then loads the worker's check.
import { register } from 'tsx/esm/api';
register();
await import('./native-worker-check.ts');
