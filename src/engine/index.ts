/**
 * Kernel selection: `getKernels()` returns the native addon when it loads, else the TypeScript
 * reference with one warning on stderr per process. `MATPO_KERNELS=reference` forces the reference,
 * `MATPO_KERNELS=native` makes a missing addon an error instead of a fallback.
 */
import type { Kernels } from './kernels.ts';
import { referenceKernels } from './reference.ts';
import { loadNativeKernels } from './native.ts';
import { ConfigError } from '../core/errors.ts';

export type { Kernels, PackedWeight } from './kernels.ts';
export { referenceKernels, reference, type FloatArray, type ReferenceKernels } from './reference.ts';

let chosen: Kernels | undefined;
let warned = false;

export function getKernels(): Kernels {
  if (chosen) return chosen;
  const want = process.env.MATPO_KERNELS ?? '';
  if (want !== '' && want !== 'native' && want !== 'reference') {
    throw new ConfigError({ path: 'MATPO_KERNELS', message: `must be "native" or "reference", got "${want}"` });
  }
  if (want === 'reference') {
    chosen = referenceKernels;
    return chosen;
  }
  try {
    chosen = loadNativeKernels();
  } catch (err) {
    if (want === 'native') throw err;
    if (!warned) {
      warned = true;
      const why = err instanceof Error ? err.message.split('\n')[0] : String(err);
      process.stderr.write(
        `matpo: native kernels unavailable (${why}); using the slow TypeScript reference kernels. ` +
          'Run "npm run build:native" to build them.\n',
      );
    }
    chosen = referenceKernels;
  }
  return chosen;
}
