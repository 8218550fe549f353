/**
 * Finding and loading the tokenizer of a run, to show each recorded token id as its text piece in
 * the dashboard's token view. Where to look, in order: an explicit directory; `tokenizer.json` in the
 * run directory, `<run>/model/` or `<run>/tokenizer/`; any string in config.yaml that names a
 * directory holding `tokenizer.json` (relative to the run directory, then to the working directory);
 * the newest `<run>/checkpoints/*` holding one. Without any, the dashboard falls back to turn texts.
 *
 * Loading prefers the project's `loadTokenizer` (src/model/tokenizer.ts); when that module is not
 * available it reads tokenizer.json + tokenizer_config.json with @huggingface/tokenizers directly.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { Tokenizer } from '@huggingface/tokenizers';

/** What the dashboard needs of a tokenizer. */
export interface TokenDecoder {
  dir: string;
  /** Which loader read it: the project's loadTokenizer, or @huggingface/tokenizers directly. */
  via: 'loadTokenizer' | 'tokenizers';
  /**
   * The text each token adds (special tokens kept); joined, they give the decoded sequence. A token
   * that ends in the middle of a UTF-8 character gets '' and the character goes to the token that
   * completes it.
   */
  pieces(ids: readonly number[]): string[];
}

/**
 * Per-token pieces by decoding short windows: piece i = decode(ctx + ids[i]) minus decode(ctx), with
 * up to 4 tokens of context, so that decoders that drop a leading space on a lone token (Metaspace)
 * and byte-level tokens split inside a character come out right.
 */
export function tokenPieces(decode: (ids: number[]) => string, ids: readonly number[]): string[] {
  const pieces: string[] = new Array(ids.length).fill('');
  let start = 0; // first token whose text is not emitted yet
  for (let i = 0; i < ids.length; i++) {
    const ctx = Math.max(0, start - 4);
    const full = decode(ids.slice(ctx, i + 1) as number[]);
    if (full.endsWith('\uFFFD') && i - start < 3 && i + 1 < ids.length) continue; // wait for the rest of the character
    const prefix = start > ctx ? decode(ids.slice(ctx, start) as number[]) : '';
    pieces[i] = full.startsWith(prefix) ? full.slice(prefix.length) : decode(ids.slice(start, i + 1) as number[]);
    start = i + 1;
  }
  return pieces;
}

async function hasTokenizer(dir: string): Promise<boolean> {
  try {
    return (await stat(join(dir, 'tokenizer.json'))).isFile();
  } catch {
    return false;
  }
}

function stringsIn(value: unknown, out: string[] = []): string[] {
  if (typeof value === 'string') {
    if (value.length > 0 && value.length < 4096 && !value.includes('\n')) out.push(value);
  } else if (Array.isArray(value)) value.forEach((v) => stringsIn(v, out));
  else if (value && typeof value === 'object') Object.values(value).forEach((v) => stringsIn(v, out));
  return out;
}

/** The directory holding the run's tokenizer.json, or null. */
export async function findTokenizerDir(runDir: string, explicit?: string): Promise<string | null> {
  if (explicit) return (await hasTokenizer(explicit)) ? resolve(explicit) : null;
  for (const d of [runDir, join(runDir, 'model'), join(runDir, 'tokenizer')]) if (await hasTokenizer(d)) return resolve(d);
  try {
    const config = parseYaml(await readFile(join(runDir, 'config.yaml'), 'utf8')) as unknown;
    for (const s of stringsIn(config)) {
      for (const d of [resolve(runDir, s), resolve(s)]) if (await hasTokenizer(d)) return d;
    }
  } catch {
    // no or unreadable config: keep looking
  }
  try {
    const names = (await readdir(join(runDir, 'checkpoints'))).sort().reverse();
    for (const n of names) if (await hasTokenizer(join(runDir, 'checkpoints', n))) return resolve(runDir, 'checkpoints', n);
  } catch {
    // no checkpoints
  }
  return null;
}

type Decode = (ids: number[]) => string;

async function viaProjectLoader(dir: string): Promise<Decode | null> {
  try {
    const spec = '../model/tokenizer.ts';
    const mod = (await import(spec)) as { loadTokenizer?: (dir: string) => unknown };
    if (typeof mod.loadTokenizer !== 'function') return null;
    const tok = (await mod.loadTokenizer(dir)) as { decode?: (ids: readonly number[], o?: { skipSpecialTokens?: boolean }) => string };
    if (typeof tok?.decode !== 'function') return null;
    return (ids) => tok.decode!(ids, { skipSpecialTokens: false });
  } catch {
    return null;
  }
}

async function viaHfTokenizers(dir: string): Promise<Decode> {
  const json = JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as object;
  let config: object = {};
  try {
    config = JSON.parse(await readFile(join(dir, 'tokenizer_config.json'), 'utf8')) as object;
  } catch {
    // tokenizer_config.json is optional for decoding
  }
  const tok = new Tokenizer(json, config);
  return (ids) => tok.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
}

const cache = new Map<string, Promise<TokenDecoder>>();

/** Load (once per directory) a decoder for the tokenizer in `dir`. */
export function loadTokenDecoder(dir: string): Promise<TokenDecoder> {
  let p = cache.get(dir);
  if (!p) {
    p = (async () => {
      const project = await viaProjectLoader(dir);
      const decode = project ?? (await viaHfTokenizers(dir));
      return { dir, via: project ? 'loadTokenizer' : 'tokenizers', pieces: (ids) => tokenPieces(decode, ids) };
    })();
    cache.set(dir, p);
    p.catch(() => cache.delete(dir));
  }
  return p;
}
