/**
 * The tokenizer of a policy whose model lives elsewhere (an OpenAI-compatible server, a Tinker
 * service): loaded once from a local model or tokenizer directory, on first use (so a module that
 * never tokenizes does not load the tokenizer stack), and retried after a failed load.
 */
import type { ChatTokenizer } from '../core/chat.ts';
import { ConfigError } from '../core/errors.ts';

export class LocalTokenizer {
  private promise: Promise<ChatTokenizer> | null;

  /** `missing` names the setting to give when there is no directory. */
  constructor(
    private readonly dir: string | undefined,
    private readonly missing: { path: string; message: string },
    given?: ChatTokenizer,
  ) {
    this.promise = given ? Promise.resolve(given) : null;
  }

  get(): Promise<ChatTokenizer> {
    if (!this.promise) {
      const dir = this.dir;
      if (!dir) return Promise.reject(new ConfigError(this.missing));
      const loading = import('../model/tokenizer.ts').then((m) => m.loadTokenizer(dir));
      loading.catch(() => {
        this.promise = null;
      });
      this.promise = loading;
    }
    return this.promise;
  }
}
