/**
 * Kernel selection: native by default, the reference when forced or when the addon cannot load (with
 * exactly one warning per process), and a clear error for a bad MATPO_KERNELS value.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const indexPath = fileURLToPath(new URL('./index.ts', import.meta.url));
const script = `import { getKernels } from ${JSON.stringify(indexPath)};
const a = getKernels(); const b = getKernels();
const C = new Float32Array(1); a.sgemm(false, false, 1, 1, 2, new Float32Array([1, 2]), new Float32Array([3, 4]), C, false);
console.log(JSON.stringify({ name: a.name, isa: a.isa, same: a === b, c: C[0] }));`;

function run(env: Record<string, string>): { status: number | null; stdout: string; stderr: string } {
  const res = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    env: { ...process.env, MATPO_KERNELS: '', MATPO_NATIVE_ADDON: '', ...env },
    encoding: 'utf8',
  });
  return { status: res.status, stdout: res.stdout, stderr: res.stderr };
}

test('native kernels by default, silently', () => {
  const r = run({});
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim()) as { name: string; isa: string; same: boolean; c: number };
  assert.equal(out.name, 'native');
  assert.notEqual(out.isa, 'ts');
  assert.equal(out.same, true);
  assert.equal(out.c, 11);
  assert.equal(r.stderr, '');
});

test('MATPO_KERNELS=reference forces the reference without a warning', () => {
  const r = run({ MATPO_KERNELS: 'reference' });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout.trim()), { name: 'reference', isa: 'ts', same: true, c: 11 });
  assert.equal(r.stderr, '');
});

test('a missing addon falls back to the reference with one warning', () => {
  const r = run({ MATPO_NATIVE_ADDON: '/nonexistent/matpo_native.node' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout.trim()).name, 'reference');
  const warnings = r.stderr.split('\n').filter((l) => l.includes('native kernels unavailable'));
  assert.equal(warnings.length, 1, r.stderr);
});

test('a missing addon with MATPO_KERNELS=native is an error; a bad value is a config error', () => {
  const r = run({ MATPO_NATIVE_ADDON: '/nonexistent/matpo_native.node', MATPO_KERNELS: 'native' });
  assert.notEqual(r.status, 0);
  const bad = run({ MATPO_KERNELS: 'gpu' });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /MATPO_KERNELS: must be "native" or "reference", got "gpu"/);
});

test('MATPO_THREADS sets the native pool size; the default is the number of cores', async () => {
  const { availableParallelism } = await import('node:os');
  const nativePath = fileURLToPath(new URL('./native.ts', import.meta.url));
  const code = `import { loadNativeKernels } from ${JSON.stringify(nativePath)}; console.log(loadNativeKernels().threads());`;
  const threadsWith = (env: Record<string, string>): number => {
    const res = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
      env: { ...process.env, MATPO_NATIVE_ADDON: '', MATPO_THREADS: '', ...env },
      encoding: 'utf8',
    });
    assert.equal(res.status, 0, res.stderr);
    return Number(res.stdout.trim());
  };
  assert.equal(threadsWith({ MATPO_THREADS: '1' }), 1);
  assert.equal(threadsWith({ MATPO_THREADS: '3' }), 3);
  assert.equal(threadsWith({}), availableParallelism());
});
