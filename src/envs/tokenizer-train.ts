/**
 * A small byte-level BPE tokenizer trained on world text, written as a Hugging Face
 * `tokenizer.json` + `tokenizer_config.json` (Qwen2-style: regex split pre-tokenizer, GPT-2 byte
 * alphabet, ByteLevel decoder, no normaliser), with a ChatML chat template that supports tools.
 *
 * Training is the classic BPE algorithm: split text into pre-tokens with the Qwen2 regex, write
 * each pre-token in the 256-symbol byte alphabet, then repeatedly merge the most frequent adjacent
 * pair (ties broken by the pair's text, so training is deterministic) until the vocabulary holds
 * `vocabSize` entries including the 256 bytes and the special tokens. Because every byte is in the
 * vocabulary, any text encodes and `decode(encode(x)) === x`.
 *
 * `createChatTokenizer` wraps the two JSON files as the project's `ChatTokenizer` (encode, decode,
 * chat template via @huggingface/jinja); `loadChatTokenizer(dir)` reads them from a directory.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import { FileFormatError, InvalidArgumentError } from '../core/errors.ts';
import type { ChatMessage, ChatTokenizer, ToolSpec } from '../core/chat.ts';
import { CHATML_SPECIAL_TOKENS, CHATML_TOOLS_TEMPLATE } from '../model/chat-template.ts';
import { BYTE_CHARS } from '../model/tokenizer-bpe.ts';

/** Special tokens, in id order after the learned vocabulary. The first three are "special" (skipped on decode when asked). */
export const SPECIAL_TOKENS = CHATML_SPECIAL_TOKENS;
const SKIPPABLE = new Set(['<|endoftext|>', '<|im_start|>', '<|im_end|>']);

/** The Qwen2 pre-tokenizer pattern (Oniguruma syntax, as stored in tokenizer.json). */
export const PRETOKENIZE_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/** The same pattern in JavaScript syntax (no inline case-insensitive group). */
const PRETOKENIZE_JS =
  /'(?:[sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+/gu;

const encoder = new TextEncoder();

/** A pre-token written in the byte alphabet, one symbol per byte. */
function byteSymbols(pretoken: string): string[] {
  return [...encoder.encode(pretoken)].map((b) => BYTE_CHARS[b]);
}

export interface TokenizerTrainOptions {
  /** Total vocabulary size including the 256 byte symbols and the special tokens. Default 3000. */
  vocabSize?: number;
  /** Pairs seen fewer times than this are not merged. Default 2. */
  minFrequency?: number;
  /** Context length recorded in tokenizer_config.json. */
  modelMaxLength?: number;
}

export interface TrainedTokenizer {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  vocabSize: number;
  merges: number;
}

/** The world tokenizer's chat template: the project's ChatML template with a tools section. */
export const CHAT_TEMPLATE = CHATML_TOOLS_TEMPLATE;

/** Train a byte-level BPE on `texts`. Deterministic. */
export function trainWorldTokenizer(texts: Iterable<string>, options: TokenizerTrainOptions = {}): TrainedTokenizer {
  const vocabSize = options.vocabSize ?? 3000;
  const minFrequency = options.minFrequency ?? 2;
  const targetMerges = vocabSize - 256 - SPECIAL_TOKENS.length;
  if (!Number.isInteger(vocabSize) || targetMerges < 0)
    throw new InvalidArgumentError('vocabSize', `expected an integer ≥ ${256 + SPECIAL_TOKENS.length}, got ${vocabSize}`);

  // Count pre-tokens (special-token strings are cut out first: they never take part in merges).
  const specialSplit = new RegExp(SPECIAL_TOKENS.map((t) => t.replace(/[|[\]\\/()]/g, '\\$&')).join('|'), 'g');
  const counts = new Map<string, number>();
  for (const text of texts) {
    for (const piece of text.split(specialSplit)) {
      for (const m of piece.matchAll(PRETOKENIZE_JS)) counts.set(m[0], (counts.get(m[0]) ?? 0) + 1);
    }
  }
  const words: { symbols: string[]; count: number }[] = [...counts.entries()]
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map(([w, count]) => ({ symbols: byteSymbols(w), count }));

  // Pair statistics with incremental updates; `where` maps a pair to the words containing it.
  const key = (a: string, b: string) => `${a} ${b}`;
  const pairCount = new Map<string, number>();
  const where = new Map<string, Set<number>>();
  const addWord = (wi: number, sign: 1 | -1) => {
    const { symbols, count } = words[wi];
    for (let i = 0; i + 1 < symbols.length; i++) {
      const k = key(symbols[i], symbols[i + 1]);
      pairCount.set(k, (pairCount.get(k) ?? 0) + sign * count);
      if (sign === 1) {
        let s = where.get(k);
        if (!s) where.set(k, (s = new Set()));
        s.add(wi);
      }
    }
  };
  words.forEach((_, wi) => addWord(wi, 1));

  const merges: string[] = [];
  while (merges.length < targetMerges) {
    let bestKey: string | null = null;
    let bestCount = 0;
    for (const [k, c] of pairCount) {
      if (c > bestCount || (c === bestCount && bestKey !== null && c > 0 && k < bestKey)) {
        bestKey = k;
        bestCount = c;
      }
    }
    if (bestKey === null || bestCount < minFrequency) break;
    merges.push(bestKey);
    const [a, b] = bestKey.split(' ');
    const merged = a + b;
    for (const wi of where.get(bestKey) ?? []) {
      const w = words[wi];
      let has = false;
      for (let i = 0; i + 1 < w.symbols.length; i++) if (w.symbols[i] === a && w.symbols[i + 1] === b) has = true;
      if (!has) continue;
      addWord(wi, -1);
      const out: string[] = [];
      for (let i = 0; i < w.symbols.length; i++) {
        if (i + 1 < w.symbols.length && w.symbols[i] === a && w.symbols[i + 1] === b) {
          out.push(merged);
          i++;
        } else out.push(w.symbols[i]);
      }
      w.symbols = out;
      addWord(wi, 1);
    }
    pairCount.delete(bestKey);
    where.delete(bestKey);
  }

  const vocab: Record<string, number> = {};
  BYTE_CHARS.forEach((c, i) => (vocab[c] = i));
  let next = 256;
  for (const m of merges) {
    const tok = m.replace(' ', '');
    if (!(tok in vocab)) vocab[tok] = next++;
  }
  const addedTokens = SPECIAL_TOKENS.map((content, i) => ({
    id: next + i,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: SKIPPABLE.has(content),
  }));
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false };
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [{ type: 'Split', pattern: { Regex: PRETOKENIZE_PATTERN }, behavior: 'Isolated', invert: false }, byteLevel],
    },
    post_processor: byteLevel,
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
  const addedDecoder: Record<string, unknown> = {};
  for (const t of addedTokens)
    addedDecoder[String(t.id)] = {
      content: t.content,
      lstrip: false,
      normalized: false,
      rstrip: false,
      single_word: false,
      special: t.special,
    };
  const tokenizerConfig = {
    add_bos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: addedDecoder,
    additional_special_tokens: ['<|im_start|>', '<|im_end|>'],
    bos_token: null,
    chat_template: CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: '<|im_end|>',
    errors: 'replace',
    model_max_length: options.modelMaxLength ?? 4096,
    pad_token: '<|endoftext|>',
    split_special_tokens: false,
    tokenizer_class: 'Qwen2Tokenizer',
    unk_token: null,
  };
  return { tokenizerJson, tokenizerConfig, vocabSize: next + SPECIAL_TOKENS.length, merges: merges.length };
}

/** Write tokenizer.json and tokenizer_config.json into `dir`. */
export function saveTokenizer(trained: TrainedTokenizer, dir: string): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(trained.tokenizerJson) + '\n');
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(trained.tokenizerConfig, null, 2) + '\n');
}

/** The project's ChatTokenizer over a tokenizer.json + tokenizer_config.json pair. */
export function createChatTokenizer(tokenizerJson: Record<string, unknown>, tokenizerConfig: Record<string, unknown>): ChatTokenizer {
  const tok = new Tokenizer(tokenizerJson, tokenizerConfig);
  const model = tokenizerJson.model as { vocab: Record<string, number> };
  const added = (tokenizerJson.added_tokens as { id: number; content: string }[]) ?? [];
  const idOf = new Map<string, number>(Object.entries(model.vocab));
  for (const t of added) idOf.set(t.content, t.id);
  const tokenOf = new Map<number, string>([...idOf].map(([t, i]) => [i, t]));
  const vocabSize = Math.max(...idOf.values()) + 1;
  const eos = typeof tokenizerConfig.eos_token === 'string' ? (idOf.get(tokenizerConfig.eos_token) ?? null) : null;
  const bos = typeof tokenizerConfig.bos_token === 'string' ? (idOf.get(tokenizerConfig.bos_token) ?? null) : null;
  const imEnd = idOf.get('<|im_end|>');
  const stop = [...new Set([eos, imEnd].filter((x): x is number => typeof x === 'number'))];
  const template = typeof tokenizerConfig.chat_template === 'string' ? new Template(tokenizerConfig.chat_template) : null;
  return {
    vocabSize,
    stopTokenIds: stop,
    bosTokenId: bos,
    eosTokenId: eos,
    encode: (text) => tok.encode(text, { add_special_tokens: false }).ids,
    decode: (ids, options) =>
      ids.length === 0
        ? ''
        : tok.decode([...ids], { skip_special_tokens: options?.skipSpecialTokens ?? false, clean_up_tokenization_spaces: false }),
    tokenToId: (t) => idOf.get(t),
    idToToken: (i) => tokenOf.get(i),
    applyChatTemplate(messages: readonly ChatMessage[], options?: { tools?: readonly ToolSpec[]; addGenerationPrompt?: boolean }) {
      if (template === null) throw new InvalidArgumentError('tokenizer', 'tokenizer_config.json has no chat_template');
      return template.render({
        messages: messages.map((m) => ({ ...m })),
        tools: options?.tools && options.tools.length > 0 ? options.tools : null,
        add_generation_prompt: options?.addGenerationPrompt ?? false,
        bos_token: '',
        eos_token: tokenizerConfig.eos_token ?? '',
      });
    },
  };
}

export function loadChatTokenizer(dir: string): ChatTokenizer {
  const read = (name: string) => {
    const file = join(dir, name);
    try {
      return JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new FileFormatError({ file, message: (err as Error).message, cause: err });
    }
  };
  return createChatTokenizer(read('tokenizer.json'), read('tokenizer_config.json'));
}
