/**
 * Checkpoints of the Tinker server on disk, and the `tinker://` paths that name them.
 *
 *   tinker://<model_id>/weights/<name>           → <root>/runs/<model_id>/weights/<name>/
 *   tinker://<model_id>/sampler_weights/<name>   → <root>/runs/<model_id>/sampler_weights/<name>/
 *   ephemeral sampler weights (no name)          → <root>/runs/<model_id>/ephemeral/<sampling_session_id>/
 *   the run itself                               → <root>/runs/<model_id>/run.json
 *
 * Each checkpoint directory holds a model directory (config.json, safetensors, tokenizer files),
 * optimizer state for training checkpoints, and `checkpoint.json` (what weights_info and the
 * listing report). Names are `[A-Za-z0-9_.-]+` (no `..`), at most 255 characters. Files are written
 * into a temporary sibling and renamed into place, so a listed checkpoint is always complete.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { InvalidArgumentError } from '../core/errors.ts';
import type { TinkerLoraConfig } from './training-policy.ts';

export type CheckpointKind = 'weights' | 'sampler_weights';

export interface CheckpointMeta {
  checkpoint_id: string;
  checkpoint_type: 'training' | 'sampler';
  time: string;
  tinker_path: string;
  model_id: string;
  base_model: string;
  lora: TinkerLoraConfig | null;
}

export interface RunMeta {
  model_id: string;
  base_model: string;
  lora: TinkerLoraConfig | null;
  created: string;
  user_metadata: Record<string, unknown> | null;
}

const NAME = /^[A-Za-z0-9_.-]{1,255}$/;

export function checkName(name: string, field: string): void {
  if (!NAME.test(name) || name === '.' || name === '..') {
    throw new InvalidArgumentError(field, `checkpoint name ${JSON.stringify(name)} must match [A-Za-z0-9_.-]+ (at most 255 characters)`);
  }
}

/** Parse `tinker://<model_id>/<weights|sampler_weights>/<name>`. */
export function parseTinkerPath(path: string, field: string): { modelId: string; kind: CheckpointKind; name: string } {
  const m = /^tinker:\/\/([^/]+)\/(weights|sampler_weights)\/([^/]+)$/.exec(path);
  if (!m)
    throw new InvalidArgumentError(
      field,
      `expected tinker://<model_id>/weights/<name> or tinker://<model_id>/sampler_weights/<name>, got ${JSON.stringify(path)}`,
    );
  checkName(m[3], field);
  if (m[1].includes('..')) throw new InvalidArgumentError(field, `bad model id in ${JSON.stringify(path)}`);
  return { modelId: m[1], kind: m[2] as CheckpointKind, name: m[3] };
}

export function tinkerPath(modelId: string, kind: CheckpointKind, name: string): string {
  return `tinker://${modelId}/${kind}/${name}`;
}

export class CheckpointStore {
  constructor(readonly root: string) {
    mkdirSync(join(root, 'runs'), { recursive: true });
  }

  runDir(modelId: string): string {
    return join(this.root, 'runs', modelId);
  }

  dir(modelId: string, kind: CheckpointKind, name: string): string {
    return join(this.runDir(modelId), kind, name);
  }

  ephemeralDir(modelId: string, samplingSessionId: string): string {
    return join(this.runDir(modelId), 'ephemeral', samplingSessionId.replace(/[^A-Za-z0-9_.-]/g, '_'));
  }

  writeRun(meta: RunMeta): void {
    mkdirSync(this.runDir(meta.model_id), { recursive: true });
    writeFileSync(join(this.runDir(meta.model_id), 'run.json'), JSON.stringify(meta, null, 2) + '\n');
  }

  readRun(modelId: string): RunMeta | null {
    const f = join(this.runDir(modelId), 'run.json');
    if (!existsSync(f)) return null;
    return JSON.parse(readFileSync(f, 'utf8')) as RunMeta;
  }

  runIds(): string[] {
    const d = join(this.root, 'runs');
    return existsSync(d)
      ? readdirSync(d)
          .filter((n) => existsSync(join(d, n, 'run.json')))
          .sort()
      : [];
  }

  /**
   * Write a checkpoint: `write(tmpDir)` fills a temporary directory, which then replaces `dir`.
   * Without `overwrite`, an existing checkpoint of that name is an error.
   */
  async write(
    dir: string,
    meta: CheckpointMeta | null,
    overwrite: boolean,
    field: string,
    write: (tmp: string) => Promise<void>,
  ): Promise<void> {
    if (existsSync(dir) && !overwrite)
      throw new InvalidArgumentError(field, `checkpoint ${meta?.tinker_path ?? dir} already exists (pass overwrite to replace it)`);
    const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
    mkdirSync(tmp, { recursive: true });
    try {
      await write(tmp);
      if (meta) writeFileSync(join(tmp, 'checkpoint.json'), JSON.stringify(meta, null, 2) + '\n');
      if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
      renameSync(tmp, dir);
    } catch (err) {
      rmSync(tmp, { recursive: true, force: true });
      throw err;
    }
  }

  /** The checkpoint a tinker path names, or a user error naming `field`. */
  resolve(path: string, field: string): { dir: string; meta: CheckpointMeta } {
    const p = parseTinkerPath(path, field);
    const dir = this.dir(p.modelId, p.kind, p.name);
    const metaFile = join(dir, 'checkpoint.json');
    if (!existsSync(metaFile)) throw new InvalidArgumentError(field, `no checkpoint at ${path}`);
    return { dir, meta: JSON.parse(readFileSync(metaFile, 'utf8')) as CheckpointMeta };
  }

  list(modelId: string): (CheckpointMeta & { size_bytes: number })[] {
    const out: (CheckpointMeta & { size_bytes: number })[] = [];
    for (const kind of ['weights', 'sampler_weights'] as const) {
      const d = join(this.runDir(modelId), kind);
      if (!existsSync(d)) continue;
      for (const name of readdirSync(d).sort()) {
        const metaFile = join(d, name, 'checkpoint.json');
        if (!existsSync(metaFile)) continue;
        const meta = JSON.parse(readFileSync(metaFile, 'utf8')) as CheckpointMeta;
        out.push({ ...meta, size_bytes: dirSize(join(d, name)) });
      }
    }
    return out;
  }

  /** Delete `weights/<name>` or `sampler_weights/<name>` of a run; false when it does not exist. */
  delete(modelId: string, kind: CheckpointKind, name: string): boolean {
    const dir = this.dir(modelId, kind, name);
    if (!existsSync(join(dir, 'checkpoint.json'))) return false;
    rmSync(dir, { recursive: true, force: true });
    return true;
  }
}

function dirSize(dir: string): number {
  let n = 0;
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const s = statSync(p);
    n += s.isDirectory() ? dirSize(p) : s.size;
  }
  return n;
}
