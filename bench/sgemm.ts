/**
 * Kernel benchmark: measures this machine's FMA peak (1 and 2 threads) on the selected ISA, then
 * SGEMM GFLOP/s for NN/NT/TN at 2048×768×768 and 2048×3072×768 (M×N×K) on 1 and 2 threads with the
 * percentage of the matching peak, the packed small-M product used for decoding, and causal GQA
 * attention forward+backward over 16×512 packed tokens (8 heads, 4 kv heads, D=64), and decode
 * attention against 2048-position KV caches.
 * Best-of-N timings. The machine may be shared with other work, so every row also reports throughput
 * by CPU time per thread (descheduled time excluded), and the FMA peak is measured on the threads' own
 * CPU-time clocks; the % of peak and the targets use those.
 *
 * Run: npm run bench:sgemm
 */
import { pathToFileURL } from 'node:url';
import { loadNativeKernels } from '../src/engine/native.ts';

export interface Row {
  bench: string;
  case: string;
  threads: number;
  /** Throughput by wall-clock time. */
  value: number;
  unit: string;
  /** Throughput by CPU time per thread (time the threads were descheduled on a shared machine excluded). */
  cpuValue?: number;
  /** Percentage of the FMA peak at this thread count (both by CPU time), where it applies. */
  pctPeak?: number;
  /** The target this row is held to, and whether it was met. */
  target?: string;
  met?: boolean;
}

/** Best wall-clock time and best process-CPU-time per thread (ms) over the runs. */
function bestMs(fn: () => void, minRuns: number, minMs: number, threads: number): { wall: number; cpu: number } {
  fn(); // warm-up (page faults, packing buffers)
  let wall = Infinity,
    cpu = Infinity;
  const start = performance.now();
  for (let i = 0; i < minRuns || performance.now() - start < minMs; i++) {
    const c = process.cpuUsage();
    const t = performance.now();
    fn();
    wall = Math.min(wall, performance.now() - t);
    const d = process.cpuUsage(c);
    cpu = Math.min(cpu, (d.user + d.system) / 1000 / threads);
  }
  return { wall, cpu };
}

function randomArray(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.random() * 2 - 1;
  return a;
}

export async function sgemmBench(): Promise<Row[]> {
  const k = loadNativeKernels();
  const rows: Row[] = [];
  const threadsBefore = k.threads();
  const peak: Record<number, number> = {};
  for (const t of [1, 2]) {
    k.setThreads(t);
    let p = 0;
    for (let i = 0; i < 3; i++) p = Math.max(p, k.peakGflops(t, 250));
    peak[t] = p;
    rows.push({ bench: 'fma-peak', case: `${k.isa} (thread CPU time)`, threads: t, value: p, unit: 'GFLOP/s', cpuValue: p });
  }

  const shapes: [number, number, number][] = [
    [2048, 768, 768],
    [2048, 3072, 768],
  ];
  const variants: [string, boolean, boolean][] = [
    ['NN', false, false],
    ['NT', false, true],
    ['TN', true, false],
  ];
  for (const [M, N, K] of shapes) {
    const A = randomArray(M * K),
      B = randomArray(K * N),
      C = new Float32Array(M * N);
    for (const [name, tA, tB] of variants) {
      for (const t of [1, 2]) {
        k.setThreads(t);
        const ms = bestMs(() => k.sgemm(tA, tB, M, N, K, A, B, C, false), 4, 600, t);
        const flops = 2 * M * N * K;
        const cpuGf = flops / (ms.cpu * 1e6);
        const pct = (100 * cpuGf) / peak[t];
        const goal = t === 1 ? 75 : 65;
        rows.push({
          bench: 'sgemm',
          case: `${name} ${M}x${N}x${K}`,
          threads: t,
          value: flops / (ms.wall * 1e6),
          unit: 'GFLOP/s',
          cpuValue: cpuGf,
          pctPeak: pct,
          target: `>= ${goal}% of peak`,
          met: pct >= goal,
        });
      }
    }
  }

  // decode-style products with a packed weight (memory bound: report GB/s of weight streamed too)
  for (const [M, N, K] of [
    [1, 3072, 768],
    [8, 3072, 768],
  ] as const) {
    const W = randomArray(N * K),
      A = randomArray(M * K),
      C = new Float32Array(M * N);
    const P = k.packWeightNT(W, N, K);
    for (const t of [1, 2]) {
      k.setThreads(t);
      const ms = bestMs(() => k.sgemmPacked(M, A, P, C, false), 20, 300, t);
      rows.push({
        bench: 'sgemmPacked',
        case: `M=${M} ${N}x${K} (${((N * K * 4) / (ms.wall * 1e6)).toFixed(1)} GB/s)`,
        threads: t,
        value: (2 * M * N * K) / (ms.wall * 1e6),
        unit: 'GFLOP/s',
        cpuValue: (2 * M * N * K) / (ms.cpu * 1e6),
      });
    }
  }

  // attention over 16 sequences × 512 tokens
  {
    const B = 16,
      L = 512,
      H = 8,
      KV = 4,
      D = 64,
      T = B * L;
    const cu = Int32Array.from({ length: B + 1 }, (_, i) => i * L);
    const q = randomArray(T * H * D),
      kk = randomArray(T * KV * D),
      v = randomArray(T * KV * D);
    const out = new Float32Array(T * H * D),
      lse = new Float32Array(T * H),
      dout = randomArray(T * H * D);
    const dq = new Float32Array(T * H * D),
      dk = new Float32Array(T * KV * D),
      dv = new Float32Array(T * KV * D);
    const scale = 1 / Math.sqrt(D);
    // causal matmul flops: forward 2 products, backward 5, each 2·D per (query, key ≤ query) pair
    const pairs = (B * H * (L * (L + 1))) / 2;
    const fwdFlops = 2 * 2 * D * pairs,
      bwdFlops = 5 * 2 * D * pairs;
    for (const t of [1, 2]) {
      k.setThreads(t);
      const f = bestMs(() => k.attentionForward(out, lse, q, kk, v, cu, B, H, KV, D, scale), 2, 500, t);
      const b = bestMs(() => k.attentionBackward(dq, dk, dv, dout, q, kk, v, out, lse, cu, B, H, KV, D, scale), 2, 500, t);
      rows.push({
        bench: 'attention',
        case: `fwd 16x512 H8 KV4 D64 (${f.wall.toFixed(1)} ms)`,
        threads: t,
        value: fwdFlops / (f.wall * 1e6),
        unit: 'GFLOP/s',
        cpuValue: fwdFlops / (f.cpu * 1e6),
        pctPeak: (100 * fwdFlops) / (f.cpu * 1e6) / peak[t],
      });
      rows.push({
        bench: 'attention',
        case: `bwd 16x512 H8 KV4 D64 (${b.wall.toFixed(1)} ms)`,
        threads: t,
        value: bwdFlops / (b.wall * 1e6),
        unit: 'GFLOP/s',
        cpuValue: bwdFlops / (b.cpu * 1e6),
        pctPeak: (100 * bwdFlops) / (b.cpu * 1e6) / peak[t],
      });
      rows.push({
        bench: 'attention',
        case: 'fwd+bwd tokens/s',
        threads: t,
        value: T / ((f.wall + b.wall) / 1000),
        unit: 'tokens/s',
        cpuValue: T / ((f.cpu + b.cpu) / 1000),
      });
    }
  }
  // decode attention: n queries against 2048-position caches (one slot each), 8 heads, 4 kv heads
  {
    const H = 8,
      KV = 4,
      D = 64,
      S = 2048;
    for (const n of [1, 16]) {
      const kc = randomArray(n * S * KV * D),
        vc = randomArray(n * S * KV * D);
      const q = randomArray(n * H * D),
        o = new Float32Array(n * H * D);
      const slot = Int32Array.from({ length: n }, (_, i) => i),
        pos = new Int32Array(n).fill(S - 1);
      for (const t of [1, 2]) {
        k.setThreads(t);
        const ms = bestMs(() => k.attentionDecode(o, q, kc, vc, slot, pos, n, S, H, KV, D, 0.125), 10, 300, t);
        rows.push({
          bench: 'attentionDecode',
          case: `n=${n} ctx=${S} H8 KV4 D64 (${ms.wall.toFixed(2)} ms)`,
          threads: t,
          value: (n * S * KV * D * 8) / (ms.wall * 1e6),
          unit: 'GB/s of cache',
          cpuValue: (n * S * KV * D * 8) / (ms.cpu * 1e6),
        });
      }
    }
  }
  k.setThreads(threadsBefore);
  return rows;
}

export function formatRows(rows: Row[]): string {
  const lines = [
    '| bench | case | threads | wall | by CPU time | unit | % peak (CPU time) | target |',
    '|---|---|---:|---:|---:|---|---:|---|',
  ];
  const fmt = (x: number | undefined): string => (x === undefined ? '' : x >= 1000 ? x.toFixed(0) : x.toFixed(1));
  for (const r of rows) {
    const pct = r.pctPeak === undefined ? '' : `${r.pctPeak.toFixed(1)}%`;
    const target = r.target ? `${r.target} ${r.met ? 'met' : 'MISSED'}` : '';
    lines.push(`| ${r.bench} | ${r.case} | ${r.threads} | ${fmt(r.value)} | ${fmt(r.cpuValue)} | ${r.unit} | ${pct} | ${target} |`);
  }
  return lines.join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const k = loadNativeKernels();
  console.log(`native kernels: isa=${k.isa} tile=${k.gemmTile} (machine load makes timings noisy)`);
  console.log(formatRows(await sgemmBench()));
}
