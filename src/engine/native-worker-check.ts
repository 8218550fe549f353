/**
 * Worker-thread half of the concurrency test in native.test.ts: loads the addon in a worker and runs
 * SGEMM repeatedly while the main thread does the same, reporting whether every result was exact.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadNativeKernels } from './native.ts';

const k = loadNativeKernels();
const { A, B, M, N, K, want, rounds, flags } = workerData as {
  A: Float32Array;
  B: Float32Array;
  M: number;
  N: number;
  K: number;
  want: Float32Array;
  rounds: number;
  flags: Int32Array;
};
let ok = true;
Atomics.store(flags, 0, 1); // started: the main thread now runs its products concurrently
for (let i = 0; i < rounds; i++) {
  const C = new Float32Array(M * N);
  k.sgemm(false, false, M, N, K, A, B, C, false);
  if (C.some((x, j) => x !== want[j])) ok = false;
}
Atomics.store(flags, 1, 1);
parentPort?.postMessage(ok);
