/**
 * Role prompts, loaded at run time from `prompts/*.md` (the package's own directory by default, or
 * a directory given in the config), with per-key overrides. Placeholders `{question}`, `{subtask}`
 * and `{reason}` are filled in one pass, so braces inside the inserted text are left alone.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, FileFormatError } from '../core/errors.ts';

export const PROMPT_KEYS = [
  'planner-system',
  'planner-user',
  'worker-system',
  'worker-recap',
  'worker-summary',
  'worker-summary-failed',
  'single-system',
  'single-user',
] as const;
export type PromptKey = (typeof PROMPT_KEYS)[number];
export type Prompts = Record<PromptKey, string>;

export const DEFAULT_PROMPTS_DIR = fileURLToPath(new URL('../../prompts/', import.meta.url));

/**
 * Read every prompt from `dir` (falling back to the default directory for files `dir` lacks), then
 * apply `overrides` (prompt text by key).
 */
export function loadPrompts(options: { dir?: string; overrides?: Partial<Record<string, string>> } = {}): Prompts {
  const out = {} as Prompts;
  for (const key of PROMPT_KEYS) {
    const own = options.dir ? join(options.dir, `${key}.md`) : null;
    const file = own && existsSync(own) ? own : join(DEFAULT_PROMPTS_DIR, `${key}.md`);
    try {
      out[key] = readFileSync(file, 'utf8').trim();
    } catch (cause) {
      throw new FileFormatError({ file, message: `cannot read prompt: ${(cause as Error).message}`, cause });
    }
  }
  for (const [key, text] of Object.entries(options.overrides ?? {})) {
    if (!(PROMPT_KEYS as readonly string[]).includes(key))
      throw new ConfigError({ path: `prompts.${key}`, message: `unknown prompt; available: ${PROMPT_KEYS.join(', ')}` });
    if (typeof text !== 'string') throw new ConfigError({ path: `prompts.${key}`, message: 'expected a string' });
    out[key as PromptKey] = text;
  }
  return out;
}

/** Replace `{name}` placeholders with values (unknown placeholders stay as they are). */
export function fillPrompt(template: string, values: Record<string, string>): string {
  return template.replace(/\{([a-z_]+)\}/g, (whole, name: string) => (name in values ? values[name] : whole));
}
