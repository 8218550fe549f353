// `matpo train --resume` as real processes, across checkpoint pruning. A run trained 2 steps with
// checkpointEvery 1 and keepCheckpoints 2, resumed to 5, then resumed again to 7: by then every
// checkpoint the run was ever loaded from is deleted, yet each later checkpoint is a complete Hugging
// Face directory (tokenizer and chat template included) that `matpo generate`, `matpo eval` and
// `matpo serve` load. Also: resuming a finished run says so and exits 0; a failed resume changes
// nothing on disk; a config error for a new run leaves no run directory behind.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { buildWorldModel } from '../../testing/world-model.ts';
import { TOKENIZER_FILES } from '../../model/checkpoint.ts';

const BIN = fileURLToPath(new URL('../../../bin/matpo.js', import.meta.url));
let dir: string;
let worldDir: string;
let modelDir: string;

const matpo = (args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 });

function ok(args: string[]): string {
  const r = matpo(args);
  assert.equal(r.status, 0, `matpo ${args.join(' ')}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** Every file under `root` with its bytes, for "nothing changed on disk" checks. */
function snapshot(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.set(p, readFileSync(p).toString('base64'));
    }
  };
  walk(root);
  return out;
}

function writeConfig(name: string, overrides: Record<string, unknown> = {}): string {
  const cfg = {
    model: { path: modelDir, threads: 1 },
    data: { world: worldDir },
    rollout: { mode: 'single', groupSize: 2, questionsPerStep: 1, maxTurns: 2, maxNewTokens: 8, maxSequenceTokens: 600, concurrency: 2 },
    optim: { learningRate: 1e-3, microBatchTokens: 512 },
    run: { name, dir, steps: 2, evalEvery: 0, checkpointEvery: 1, keepCheckpoints: 2, progress: false, seed: 3 },
    ...overrides,
  };
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, stringify(cfg));
  return file;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'matpo-train-resume-'));
  ({ worldDir, modelDir } = await buildWorldModel(dir, { entities: 40, questions: 40, vocab: 400, expertQuestions: 0 }));
});
after(() => rmSync(dir, { recursive: true, force: true }));

test(
  'resume twice across keepCheckpoints pruning: the final checkpoint loads with generate, eval and serve',
  { timeout: 300_000 },
  async () => {
    const runDir = join(dir, 'twice');
    ok(['train', '--config', writeConfig('twice')]);
    ok(['train', '--resume', runDir, '--set', 'run.steps=5']);
    const ck = join(runDir, 'checkpoints');
    assert.deepEqual(
      readdirSync(ck)
        .filter((n) => n.startsWith('step-'))
        .sort(),
      ['step-000004', 'step-000005'],
    );
    ok(['train', '--resume', runDir, '--set', 'run.steps=7']);
    assert.deepEqual(
      readdirSync(ck)
        .filter((n) => n.startsWith('step-'))
        .sort(),
      ['step-000006', 'step-000007'],
    );
    assert.match(readFileSync(join(runDir, 'config.yaml'), 'utf8'), /steps: 7/);

    // every tokenizer file of the original model is in the final checkpoint, byte for byte
    const final = join(ck, 'step-000007');
    for (const f of TOKENIZER_FILES) {
      if (existsSync(join(modelDir, f))) assert.ok(readFileSync(join(final, f)).equals(readFileSync(join(modelDir, f))), f);
    }

    const gen = ok(['generate', '--model', final, '--prompt', 'hello', '--max-new-tokens', '4', '--seed', '1', '--threads', '1']);
    assert.ok(gen.length > 0);
    const ev = ok([
      'eval',
      '--model',
      final,
      '--world',
      worldDir,
      '--mode',
      'single',
      '--questions',
      '1',
      '--no-progress',
      '--set',
      'rollout.maxNewTokens=8',
      '--set',
      'rollout.maxSequenceTokens=600',
      '--set',
      'rollout.maxTurns=2',
      '--set',
      'model.threads=1',
    ]);
    assert.match(ev, /accuracy \d+\.\d+%/);

    const child = spawn(process.execPath, [BIN, 'serve', '--model', final, '--port', '0', '--threads', '1'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout!.on('data', (d) => {
          out += d;
          const m = /at (http:\/\/127\.0\.0\.1:\d+)\/v1/.exec(out);
          if (m) resolve(m[1]);
        });
        child.once('exit', (code) => reject(new Error(`serve exited with ${code}: ${stderr}`)));
      });
      const res = await fetch(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'step-000007', messages: [{ role: 'user', content: 'hello' }], max_tokens: 4, seed: 1 }),
      });
      assert.equal(res.status, 200, await res.clone().text());
      const body = (await res.json()) as {
        choices: { message: { role: string; content: string } }[];
        usage: { completion_tokens: number };
      };
      assert.equal(body.choices[0].message.role, 'assistant');
      assert.ok(body.usage.completion_tokens > 0);
      child.kill('SIGTERM');
      const [code] = await once(child, 'exit');
      assert.equal(code, 0, stderr);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }

    // a finished run: resuming it says so, exits 0 and writes nothing
    const before = snapshot(runDir);
    const r = matpo(['train', '--resume', runDir]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.match(r.stdout, /already finished at step 7 \(run\.steps 7\)/);
    assert.deepEqual(snapshot(runDir), before);
  },
);

test('a failed resume changes nothing on disk; a config error for a new run leaves no run directory', { timeout: 300_000 }, () => {
  const runDir = join(dir, 'fails');
  ok(['train', '--config', writeConfig('fails')]);
  const before = snapshot(runDir);
  const fails = (args: string[], re: RegExp) => {
    const r = matpo(args);
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, re);
    assert.deepEqual(snapshot(runDir), before, `matpo ${args.join(' ')} changed the run directory`);
  };
  fails(['train', '--resume', runDir, '--set', 'run.steps=many'], /run\.steps/);
  fails(['train', '--resume', runDir, '--set', 'run.steps=4', '--set', 'rollout.maxSequenceTokens=100000'], /rollout\.maxSequenceTokens/);
  // the checkpoint to resume from is damaged: no weights
  const last = join(runDir, 'checkpoints', 'step-000002');
  const weights = readFileSync(join(last, 'model.safetensors'));
  rmSync(join(last, 'model.safetensors'));
  const damaged = snapshot(runDir);
  const r = matpo(['train', '--resume', runDir, '--set', 'run.steps=4']);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /model\.safetensors/);
  assert.deepEqual(snapshot(runDir), damaged);
  writeFileSync(join(last, 'model.safetensors'), weights);

  // new runs: errors found before or after the config is parsed leave nothing behind
  for (const [name, overrides, re] of [
    ['bad-model', { model: { path: join(dir, 'no-model'), threads: 1 } }, /model\.path/],
    ['bad-world', { data: { world: join(dir, 'no-world') } }, /no-world/],
  ] as const) {
    const res = matpo(['train', '--config', writeConfig(name, overrides)]);
    assert.equal(res.status, 1, res.stderr);
    assert.match(res.stderr, re);
    assert.ok(!existsSync(join(dir, name)), `${name}: run directory left behind`);
  }
});
