/**
 * Engine benchmark (`npm run bench:engine`), printed as one table: this machine's FMA peak and the
 * SGEMM rows (from bench/sgemm.ts), then the `bench-28m` model in f32 — training tokens/s (forward +
 * backward + AdamW on 16 × 512 tokens) and decode tokens/s (32 concurrent sequences, 128 prompt + 128
 * new tokens through the continuous-batching sampler) — side by side with eager PyTorch on the same
 * architecture and the same weights (bench/engine_torch.py, best of 1 and 2 threads) when
 * `python3 -c "import torch"` works, the max |Δ logprob| between the two, and the peak resident
 * memory of the training step. A LoRA row (r = 16 on attention and MLP, base frozen) times the same
 * training step with only the adapter trained.
 *
 * The machine may be shared: every matpo row also reports throughput by process CPU time per thread.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sgemmBench, formatRows, type Row } from './sgemm.ts';
import { loadNativeKernels } from '../src/engine/native.ts';
import { presetConfig } from '../src/model/config.ts';
import { buildLayout, initParams } from '../src/model/params.ts';
import { saveModelDir } from '../src/model/checkpoint.ts';
import { Engine } from '../src/model/engine.ts';
import type { Datum } from '../src/core/records.ts';
import { Rng } from '../src/util/rng.ts';

const TORCH_SCRIPT = fileURLToPath(new URL('./engine_torch.py', import.meta.url));
const TRAIN_B = 16,
  TRAIN_T = 512;
const DEC_B = 32,
  DEC_P = 128,
  DEC_N = 128;
/** `--torch-threads 2` limits the PyTorch thread settings tried (default 1 and 2); `--no-sgemm` skips the kernel rows. */
const argv = process.argv.slice(2);
const flagValue = (name: string): string | undefined => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const TORCH_THREADS = (flagValue('--torch-threads') ?? '1,2').split(',').map(Number);
const WITH_SGEMM = !argv.includes('--no-sgemm');
const progress = (msg: string) => process.stderr.write(`[bench:engine] ${msg}\n`);

/** A python3 that imports torch (Debian's python3-torch lives under /usr/bin/python3, which a pyenv shim may hide). */
export function findTorchPython(): { python: string; version: string } | null {
  for (const python of ['/usr/bin/python3', 'python3']) {
    const r = spawnSync(python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
    if (r.status === 0) return { python, version: r.stdout.trim() };
  }
  return null;
}
let PYTHON = 'python3';

function runTorch(args: string[]): Record<string, unknown> {
  const r = spawnSync(PYTHON, [TORCH_SCRIPT, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`engine_torch.py ${args.join(' ')} failed: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

/** Best wall and CPU-per-thread time (ms) over runs, after one warm-up. */
async function timeBest(fn: () => unknown | Promise<unknown>, runs: number, threads: number): Promise<{ wall: number; cpu: number }> {
  await fn();
  let wall = Infinity,
    cpu = Infinity;
  for (let i = 0; i < runs; i++) {
    const c = process.cpuUsage();
    const t = performance.now();
    await fn();
    wall = Math.min(wall, performance.now() - t);
    const d = process.cpuUsage(c);
    cpu = Math.min(cpu, (d.user + d.system) / 1000 / threads);
  }
  return { wall, cpu };
}

async function main(): Promise<void> {
  const k = loadNativeKernels();
  console.log(
    `native kernels: isa=${k.isa} tile=${k.gemmTile}; the machine may be shared, so wall-clock numbers are noisy ` +
      '(CPU-time column excludes descheduled time)',
  );
  const rows: Row[] = WITH_SGEMM ? await sgemmBench() : [];
  progress('kernel rows done');
  const threads = 2;
  k.setThreads(threads);

  const dir = mkdtempSync(join(tmpdir(), 'matpo-bench-engine-'));
  try {
    const cfg = presetConfig('bench-28m');
    const layout = buildLayout(cfg);
    const w0 = new Float32Array(layout.total);
    initParams(w0, layout, cfg, 1);
    saveModelDir(dir, { config: cfg, layout, weights: w0 });
    const engine = Engine.load(dir, k);
    const rng = new Rng(7);

    // ---- training: forward + backward + AdamW on 16 × 512 tokens
    const datums: Datum[] = Array.from({ length: TRAIN_B }, () => ({
      tokens: Array.from({ length: TRAIN_T }, () => rng.int(cfg.vocabSize)),
      mask: [],
      advantages: [],
      oldLogprobs: [],
      questionId: '',
      rolloutId: '',
      sequenceId: '',
      role: 'single',
    }));
    const nTok = TRAIN_B * (TRAIN_T - 1);
    const step = (e: Engine = engine) => {
      e.forwardBackward(
        datums,
        (ds, f) => {
          let loss = 0;
          const dLogprobs = f.logprobs.map((lp) => {
            const g = new Float32Array(lp.length);
            for (let t = 1; t < lp.length; t++) {
              loss -= lp[t] / nTok;
              g[t] = -1 / nTok;
            }
            return g;
          });
          return { loss, dLogprobs, metrics: {} };
        },
        { microBatchTokens: TRAIN_B * TRAIN_T },
      );
      e.optimStep({ learningRate: 1e-4, maxGradNorm: 1 });
    };
    const tr = await timeBest(() => step(), 2, threads);
    const trainTps = (TRAIN_B * TRAIN_T) / (tr.wall / 1000);
    const peakRss = process.resourceUsage().maxRSS / 1024;
    progress(
      `train: ${(tr.wall / 1000).toFixed(2)} s/step wall, ${(tr.cpu / 1000).toFixed(2)} s CPU per thread, ` +
        `${trainTps.toFixed(0)} tokens/s, peak RSS ${peakRss.toFixed(0)} MiB`,
    );

    // ---- decode: 32 concurrent sequences, 128 prompt + 128 new tokens
    // distinct random prompts (no shared prefix to reuse), prefix cache off so repeats recompute
    const sampler = engine.sampler({ prefixCache: false });
    const prompts = Array.from({ length: DEC_B }, () => Array.from({ length: DEC_P }, () => rng.int(cfg.vocabSize)));
    let seed = 0;
    const decode = () => Promise.all(prompts.map((p) => sampler.generate(p, { maxNewTokens: DEC_N, temperature: 1, seed: seed++ })));
    const de = await timeBest(decode, 2, threads);
    const decTps = (DEC_B * DEC_N) / (de.wall / 1000);
    progress(
      `decode: ${(de.wall / 1000).toFixed(2)} s wall, ${(de.cpu / 1000).toFixed(2)} s CPU per thread, ${decTps.toFixed(0)} new tokens/s`,
    );

    // ---- PyTorch on the same weights
    const torch = findTorchPython();
    const torchVersion = torch?.version ?? null;
    if (torch) PYTHON = torch.python;
    let torchBlas = '';
    let torchTrain: { tps: number; threads: number } | null = null;
    let torchDecode: { tps: number; threads: number } | null = null;
    let maxDiff: number | null = null;
    if (torchVersion) {
      for (const t of TORCH_THREADS) {
        const r = runTorch(['--model', dir, '--threads', String(t), 'train', String(TRAIN_B), String(TRAIN_T), '1']);
        progress(`PyTorch train, ${t} threads: ${JSON.stringify(r)}`);
        torchBlas = String(r.blas ?? '');
        if (!torchTrain || (r.tokens_per_s as number) > torchTrain.tps) torchTrain = { tps: r.tokens_per_s as number, threads: t };
        const d = runTorch(['--model', dir, '--threads', String(t), 'decode', String(DEC_B), String(DEC_P), String(DEC_N), '1']);
        progress(`PyTorch decode, ${t} threads: ${JSON.stringify(d)}`);
        if (!torchDecode || (d.tokens_per_s as number) > torchDecode.tps) torchDecode = { tps: d.tokens_per_s as number, threads: t };
      }
      // numerical agreement: logprobs of the same tokens under the same (trained) weights
      engine.save(dir);
      const seqs = Array.from({ length: 4 }, (_, i) => Array.from({ length: 64 + 37 * i }, () => rng.int(cfg.vocabSize)));
      const file = join(dir, 'lp.jsonl');
      writeFileSync(file, seqs.map((tokens) => JSON.stringify({ tokens })).join('\n') + '\n');
      const ref = runTorch(['--model', dir, 'logprobs', file]).logprobs as number[][];
      const ours = engine.forward(seqs);
      maxDiff = 0;
      ref.forEach((lp, i) =>
        lp.forEach((v, t) => {
          maxDiff = Math.max(maxDiff!, Math.abs(v - ours.logprobs[i][t + 1]));
        }),
      );
    }

    // ---- the same training step with a LoRA adapter (base frozen)
    const loraEngine = Engine.load(dir, k);
    loraEngine.enableLora({ rank: 16, alpha: 32, trainAttn: true, trainMlp: true, trainUnembed: false, seed: 0 });
    const lo = await timeBest(() => step(loraEngine), 2, threads);
    const loraTps = (TRAIN_B * TRAIN_T) / (lo.wall / 1000);
    progress(
      `train LoRA r=16: ${(lo.wall / 1000).toFixed(2)} s/step wall, ${loraTps.toFixed(0)} tokens/s ` +
        `(${loraEngine.lora!.total} trainable parameters)`,
    );

    const note = torchVersion ? '' : ' (PyTorch not installed: apt-get install python3-torch)';
    rows.push({
      bench: 'train bench-28m f32',
      case: `matpo ${TRAIN_B}x${TRAIN_T} fwd+bwd+AdamW (${(tr.wall / 1000).toFixed(2)} s/step)`,
      threads,
      value: trainTps,
      unit: 'tokens/s',
      cpuValue: (TRAIN_B * TRAIN_T) / (tr.cpu / 1000),
      ...(torchTrain
        ? { target: `>= 1.5x PyTorch (${(trainTps / torchTrain.tps).toFixed(2)}x)`, met: trainTps >= 1.5 * torchTrain.tps }
        : { target: `>= 1.5x PyTorch${note}` }),
    });
    if (torchTrain)
      rows.push({
        bench: 'train bench-28m f32',
        case: `PyTorch ${torchVersion} eager (BLAS: ${torchBlas}), same work`,
        threads: torchTrain.threads,
        value: torchTrain.tps,
        unit: 'tokens/s',
      });
    rows.push({
      bench: 'train bench-28m f32',
      case: `matpo LoRA r=16 attn+MLP, base frozen (${(lo.wall / 1000).toFixed(2)} s/step)`,
      threads,
      value: loraTps,
      unit: 'tokens/s',
      cpuValue: (TRAIN_B * TRAIN_T) / (lo.cpu / 1000),
    });
    rows.push({
      bench: 'decode bench-28m f32',
      case: `matpo ${DEC_B} seqs, ${DEC_P} prompt + ${DEC_N} new (${(de.wall / 1000).toFixed(2)} s)`,
      threads,
      value: decTps,
      unit: 'new tokens/s',
      cpuValue: (DEC_B * DEC_N) / (de.cpu / 1000),
      ...(torchDecode
        ? { target: `>= 2x PyTorch (${(decTps / torchDecode.tps).toFixed(2)}x)`, met: decTps >= 2 * torchDecode.tps }
        : { target: `>= 2x PyTorch${note}` }),
    });
    if (torchDecode)
      rows.push({
        bench: 'decode bench-28m f32',
        case: `PyTorch ${torchVersion} eager (BLAS: ${torchBlas}), KV cache, same work`,
        threads: torchDecode.threads,
        value: torchDecode.tps,
        unit: 'new tokens/s',
      });
    if (maxDiff !== null)
      rows.push({
        bench: 'agreement',
        case: `max |logprob matpo − PyTorch| = ${(maxDiff as number).toExponential(2)}, 4 seqs, trained weights`,
        threads,
        value: (maxDiff as number) * 1e6,
        unit: 'micro-nats',
      });
    rows.push({ bench: 'memory', case: 'peak resident set through the training step', threads, value: peakRss, unit: 'MiB' });
    console.log(formatRows(rows));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
