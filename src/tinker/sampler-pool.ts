/**
 * Engines that serve sampling sessions, one `EmbeddedPolicy` per weights directory (a full model, or
 * a LoRA adapter on the served base), loaded on first use and shared by every session on the same
 * weights. The base model's engine stays loaded; other directories are kept up to `capacity` at a
 * time, the least recently used idle one closed first
 * (an engine in use is never closed under its requests).
 */
import type { EmbeddedPolicy } from '../policy/embedded.ts';
import { loadSamplerPolicy, type EngineOptions } from './training-policy.ts';

interface Entry {
  policy: Promise<EmbeddedPolicy>;
  users: number;
  lastUse: number;
}

export class SamplerPool {
  private readonly entries = new Map<string, Entry>();
  private tick = 0;

  constructor(
    private readonly baseDir: string,
    private readonly options: EngineOptions,
    private readonly capacity = 2,
  ) {}

  /** Run `fn` with the engine for `dir` (loading it when needed). */
  async with<T>(dir: string, fn: (policy: EmbeddedPolicy) => Promise<T>): Promise<T> {
    let e = this.entries.get(dir);
    if (!e) {
      const policy = loadSamplerPolicy(this.baseDir, dir, this.options);
      e = { policy, users: 0, lastUse: 0 };
      this.entries.set(dir, e);
      policy.catch(() => this.entries.delete(dir));
    }
    e.users++;
    e.lastUse = ++this.tick;
    try {
      return await fn(await e.policy);
    } finally {
      e.users--;
      await this.evict();
    }
  }

  private async evict(): Promise<void> {
    const others = [...this.entries].filter(([dir]) => dir !== this.baseDir);
    if (others.length <= this.capacity) return;
    const idle = others.filter(([, e]) => e.users === 0).sort((a, b) => a[1].lastUse - b[1].lastUse);
    for (const [dir, e] of idle.slice(0, others.length - this.capacity)) {
      this.entries.delete(dir);
      await (await e.policy.catch(() => null))?.close();
    }
  }

  async close(): Promise<void> {
    const all = [...this.entries.values()];
    this.entries.clear();
    await Promise.all(all.map(async (e) => (await e.policy.catch(() => null))?.close()));
  }
}
