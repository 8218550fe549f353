/**
 * The native kernels: loads the C++ addon (native/build/Release/matpo_native.node) — this is the only
 * file that does — and wraps it as `Kernels`. `loadNativeKernels()` throws when the addon is missing
 * or fails to load; `index.ts` turns that into the reference fallback.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import type { Kernels, PackedWeight } from './kernels.ts';

/** The raw addon surface (argument orders follow the contract; extras are documented here). */
interface Addon {
  isa: string;
  gemmTile: string;
  isaSelfCheck: number;
  threads(): number;
  setThreads(n: number): void;
  sgemm(
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    A: Float32Array,
    B: Float32Array,
    C: Float32Array,
    accumulate: boolean,
  ): void;
  packedWeightFloats(N: number, K: number): number;
  packWeightNT(W: Float32Array, N: number, K: number, out: Float32Array): void;
  sgemmPacked(M: number, A: Float32Array, packed: Float32Array, N: number, K: number, C: Float32Array, accumulate: boolean): void;
  peakGflops(threads: number, ms: number): number;
  [kernel: string]: unknown;
}

/** Path of the built addon (MATPO_NATIVE_ADDON overrides it, e.g. to test the fallback). */
export const nativeAddonPath =
  process.env.MATPO_NATIVE_ADDON ||
  join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'native', 'build', 'Release', 'matpo_native.node');

/** A weight packed for the native small-M NT product; `data` may live in a SharedArrayBuffer. */
export class NativePackedWeight implements PackedWeight {
  constructor(
    readonly N: number,
    readonly K: number,
    readonly data: Float32Array,
    readonly isa: string,
  ) {}
}

/** Native kernels plus the benchmark-only extras of the addon. */
export interface NativeKernels extends Kernels {
  readonly name: 'native';
  /** Register tile of the selected SGEMM micro-kernel, "MRxNR". */
  readonly gemmTile: string;
  /** Worst error ratio (<= 1 passes) of the load-time self-check of the selected SIMD path against portable code. */
  readonly isaSelfCheck: number;
  /** FMA peak (GFLOP/s) of the selected ISA on `threads` threads, measured for about `ms` milliseconds. */
  peakGflops(threads: number, ms: number): number;
}

let cached: NativeKernels | undefined;

/** Loads the addon once and returns it as Kernels; throws when it cannot be loaded. */
export function loadNativeKernels(): NativeKernels {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const a = require(nativeAddonPath) as Addon;
  const k = a as unknown as Kernels;
  const kernels: NativeKernels = {
    name: 'native',
    isa: a.isa,
    gemmTile: a.gemmTile,
    isaSelfCheck: a.isaSelfCheck,
    threads: () => a.threads(),
    setThreads: (n) => a.setThreads(n),
    peakGflops: (threads, ms) => a.peakGflops(threads, ms),
    sgemm: (transA, transB, M, N, K, A, B, C, accumulate) => a.sgemm(transA, transB, M, N, K, A, B, C, accumulate),
    packWeightNT(W, N, K) {
      const data = new Float32Array(a.packedWeightFloats(N, K));
      a.packWeightNT(W, N, K, data);
      return new NativePackedWeight(N, K, data, a.isa);
    },
    sgemmPacked(M, A, W, C, accumulate) {
      if (!(W instanceof NativePackedWeight)) throw new TypeError('sgemmPacked: handle was not made by the native packWeightNT');
      a.sgemmPacked(M, A, W.data, W.N, W.K, C, accumulate);
    },
    rmsnormForward: k.rmsnormForward,
    rmsnormBackward: k.rmsnormBackward,
    ropeForward: k.ropeForward,
    ropeBackward: k.ropeBackward,
    attentionForward: k.attentionForward,
    attentionBackward: k.attentionBackward,
    attentionDecode: k.attentionDecode,
    swigluForward: k.swigluForward,
    swigluBackward: k.swigluBackward,
    embeddingForward: k.embeddingForward,
    embeddingBackward: k.embeddingBackward,
    logprobsForward: k.logprobsForward,
    logprobsBackward: k.logprobsBackward,
    adamw: k.adamw,
    sumSquares: k.sumSquares,
  };
  cached = kernels;
  return kernels;
}
