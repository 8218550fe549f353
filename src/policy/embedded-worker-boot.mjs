// Boot file of the embedded engine's worker thread: registers the TypeScript loader in this thread
// (a Worker does not inherit loader hooks registered with tsx's API in the main thread), then loads
// the worker. Under `node --import tsx` the hooks are already there and registering again is harmless.
import { register } from 'tsx/esm/api';
register();
await import('./embedded-worker.ts');
