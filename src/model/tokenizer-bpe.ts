/**
 * A fast encoder for byte-level BPE tokenizers (GPT-2, Qwen2/2.5/3, Llama 3, the world tokenizer),
 * used for text between added tokens in place of @huggingface/tokenizers' generic pipeline, which
 * spends most of its time mapping bytes and managing caches. Same algorithm, same result:
 *
 *   1. pre-tokenize: the ByteLevel regex (GPT-2 pattern) or a Split (Isolated) whose regex the
 *      library has already translated from Oniguruma (we reuse its compiled RegExp);
 *   2. write each pre-token in the GPT-2 byte alphabet (one character per UTF-8 byte);
 *   3. BPE: repeatedly merge the adjacent pair with the lowest merge rank, leftmost first;
 *   4. map the symbols to ids (cached per pre-token).
 *
 * `createFastBpe` returns null for anything else (other models, normalisers, byte fallback,
 * subword prefixes, Metaspace, …), and the caller then uses the library. Tests compare the two on
 * random text.
 */
import type { Tokenizer } from '@huggingface/tokenizers';

type Json = Record<string, unknown>;

/** GPT-2's reversible byte → printable character map (byte b is written BYTE_CHARS[b]). */
function byteAlphabet(): string[] {
  const keep = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const out: string[] = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) out.push(String.fromCharCode(keep(b) ? b : 256 + extra++));
  return out;
}
export const BYTE_CHARS: readonly string[] = byteAlphabet();
const GPT2_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
const SEP = '\u0001';

export interface FastBpe {
  /** Ids of `text` (no added tokens inside), or null when a symbol is missing from the vocabulary. */
  encode(text: string): number[] | null;
}

function isByteLevel(p: unknown, useRegex: boolean): boolean {
  const c = p as Json | null;
  return !!c && c.type === 'ByteLevel' && !c.add_prefix_space && (c.use_regex ?? true) === useRegex;
}

export function createFastBpe(tokenizerJson: Json, lib: Tokenizer): FastBpe | null {
  const model = tokenizerJson.model as Json | undefined;
  if (!model || model.type !== 'BPE') return null;
  if (model.byte_fallback || model.continuing_subword_prefix || model.end_of_word_suffix || model.dropout || model.ignore_merges)
    return null;
  const normalizer = tokenizerJson.normalizer as Json | null | undefined;
  let nfc = false;
  if (normalizer) {
    if (normalizer.type === 'NFC') nfc = true;
    else return null;
  }
  // Pre-tokenizer: ByteLevel with its regex, or Sequence[Split(Isolated), ByteLevel without regex].
  const pre = tokenizerJson.pre_tokenizer as Json | null | undefined;
  let pattern: RegExp;
  if (isByteLevel(pre, true)) {
    pattern = GPT2_PATTERN;
  } else if (pre && pre.type === 'Sequence' && Array.isArray(pre.pretokenizers) && pre.pretokenizers.length === 2) {
    const [split, byteLevel] = pre.pretokenizers as Json[];
    if (split.type !== 'Split' || split.behavior !== 'Isolated' || split.invert || !isByteLevel(byteLevel, false)) return null;
    const compiled = (lib.pre_tokenizer as unknown as { tokenizers?: { pattern?: unknown }[] } | null)?.tokenizers?.[0]?.pattern;
    if (!(compiled instanceof RegExp)) return null;
    pattern = compiled.global ? compiled : new RegExp(compiled.source, compiled.flags + 'g');
  } else {
    return null;
  }

  const vocab = new Map<string, number>(Object.entries(model.vocab as Record<string, number>));
  const ranks = new Map<string, number>();
  const merges = model.merges as (string | [string, string])[];
  merges.forEach((m, i) => {
    const [a, b] = typeof m === 'string' ? m.split(' ', 2) : m;
    const key = a + SEP + b;
    if (!ranks.has(key)) ranks.set(key, i);
  });
  const encoder = new TextEncoder();
  const wordCache = new Map<string, number[]>();

  const bpe = (word: string): number[] | null => {
    const cached = wordCache.get(word);
    if (cached) return cached;
    const symbols = [...word];
    while (symbols.length > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < symbols.length; i++) {
        const r = ranks.get(symbols[i] + SEP + symbols[i + 1]);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      symbols.splice(best, 2, symbols[best] + symbols[best + 1]);
    }
    const ids: number[] = [];
    for (const s of symbols) {
      const id = vocab.get(s);
      if (id === undefined) return null;
      ids.push(id);
    }
    if (word.length < 256) {
      if (wordCache.size > 50_000) wordCache.clear();
      wordCache.set(word, ids);
    }
    return ids;
  };

  const toByteChars = (piece: string): string => {
    let ascii = true;
    for (let i = 0; i < piece.length; i++) {
      if (piece.charCodeAt(i) > 127) {
        ascii = false;
        break;
      }
    }
    let out = '';
    if (ascii) {
      for (let i = 0; i < piece.length; i++) out += BYTE_CHARS[piece.charCodeAt(i)];
    } else {
      for (const b of encoder.encode(piece)) out += BYTE_CHARS[b];
    }
    return out;
  };

  return {
    encode(text) {
      const src = nfc ? text.normalize('NFC') : text;
      const out: number[] = [];
      const emit = (piece: string): boolean => {
        if (piece === '') return true;
        const ids = bpe(toByteChars(piece));
        if (ids === null) return false;
        for (const id of ids) out.push(id);
        return true;
      };
      pattern.lastIndex = 0;
      let at = 0;
      for (let m = pattern.exec(src); m !== null; m = pattern.exec(src)) {
        // Isolated split: text between matches is a piece of its own (the GPT-2 pattern matches everything).
        if (m.index > at && !emit(src.slice(at, m.index))) return null;
        if (!emit(m[0])) return null;
        at = m.index + m[0].length;
        if (m[0] === '') pattern.lastIndex += (src.codePointAt(pattern.lastIndex) ?? 0) > 0xffff ? 2 : 1;
      }
      if (at < src.length && !emit(src.slice(at))) return null;
      return out;
    },
  };
}
