/**
 * The model's tokenizer and chat template, loaded from a Hugging Face model directory:
 * `tokenizer.json` (@huggingface/tokenizers), `tokenizer_config.json` (special tokens and the
 * `chat_template`, as a string or a list of named templates), an optional `chat_template.jinja`
 * (preferred when present, as recent transformers versions do), and eos ids from
 * `generation_config.json` / `config.json`.
 *
 * Text between added tokens is encoded by our own byte-level BPE (`tokenizer-bpe.ts`) when the
 * tokenizer is of that kind (same result, several times faster), else by the library.
 *
 * Encoding never adds BOS/EOS on its own (chat templates write them as text) and recognises
 * special-token strings inside the text. A tokenizer without a chat template still encodes and
 * decodes; `applyChatTemplate` then throws a one-line FileFormatError naming the file and field.
 *
 * `createTestTokenizer(dir)` writes a small byte-level BPE tokenizer (merges learned here from a
 * built-in text) with the project's ChatML tools template, so tests get a real tokenizer offline.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { FileFormatError } from '../core/errors.ts';
import type { ChatMessage, ChatTokenizer, ToolSpec } from '../core/chat.ts';
import { CHATML_SPECIAL_TOKENS, CHATML_TOOLS_TEMPLATE, compileChatTemplate, type ChatTemplateFn } from './chat-template.ts';
import { BYTE_CHARS, createFastBpe, type FastBpe } from './tokenizer-bpe.ts';

type Json = Record<string, unknown>;

function readJson(file: string, required: boolean): Json | null {
  if (!existsSync(file)) {
    if (required) throw new FileFormatError({ file, message: 'file not found' });
    return null;
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (cause) {
    throw new FileFormatError({ file, message: `cannot read: ${(cause as Error).message}`, cause });
  }
  try {
    const value = JSON.parse(text) as unknown;
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error('expected a JSON object');
    return value as Json;
  } catch (cause) {
    throw new FileFormatError({ file, message: `invalid JSON: ${(cause as Error).message}`, cause });
  }
}

/** A special-token entry in tokenizer_config.json: a string or an AddedToken object. */
function tokenContent(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string')
    return (value as { content: string }).content;
  return null;
}

function idList(value: unknown): number[] {
  if (typeof value === 'number' && Number.isInteger(value)) return [value];
  if (Array.isArray(value)) return value.filter((v): v is number => typeof v === 'number' && Number.isInteger(v));
  return [];
}

class HfChatTokenizer implements ChatTokenizer {
  readonly vocabSize: number;
  readonly stopTokenIds: readonly number[];
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
  private template: ChatTemplateFn | null = null;
  /** Splits text at added tokens (null when pieces cannot be encoded independently, see `segmentable`). */
  private readonly splitter: RegExp | null;
  private readonly pieceCache = new Map<string, number[]>();
  private pieceCacheChars = 0;

  constructor(
    private readonly tok: Tokenizer,
    private readonly tokenOf: Map<number, string>,
    private readonly idOf: Map<string, number>,
    ids: { bos: number | null; eos: number | null; stops: number[] },
    private readonly templateSource: { source: string; file: string; field?: string } | { missing: string },
    private readonly templateContext: Record<string, unknown>,
    segmentable: boolean,
    private readonly fast: FastBpe | null,
  ) {
    let max = -1;
    for (const id of tokenOf.keys()) if (id > max) max = id;
    this.vocabSize = max + 1;
    this.bosTokenId = ids.bos;
    this.eosTokenId = ids.eos;
    this.stopTokenIds = ids.stops;
    const added = [...tok.get_added_tokens_decoder().values()].map((t) => t.content).sort((a, b) => b.length - a.length);
    this.splitter =
      segmentable && added.length > 0 ? new RegExp(`(${added.map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|')})`) : null;
  }

  /**
   * The library splits text at added tokens and encodes each piece on its own; we do the same split
   * here and cache the pieces (system prompts, tool lists and template glue recur in every agent).
   * Only used when the split is exactly what the library does (see `segmentable`).
   */
  encode(text: string): number[] {
    if (text === '') return [];
    if (this.splitter === null) return this.tok.encode(text, { add_special_tokens: false }).ids;
    const out: number[] = [];
    const parts = text.split(this.splitter);
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i];
      if (part === '') continue;
      if (i % 2 === 1) {
        out.push(this.idOf.get(part)!);
        continue;
      }
      let ids: number[] | undefined = this.pieceCache.get(part);
      if (ids === undefined) {
        const fresh: number[] = this.fast?.encode(part) ?? this.tok.encode(part, { add_special_tokens: false }).ids;
        ids = fresh;
        if (part.length <= 8192) {
          if (this.pieceCacheChars > 4_000_000) {
            this.pieceCache.clear();
            this.pieceCacheChars = 0;
          }
          this.pieceCache.set(part, fresh);
          this.pieceCacheChars += part.length;
        }
      }
      for (const id of ids) out.push(id);
    }
    return out;
  }

  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return '';
    return this.tok.decode(ids as number[], {
      skip_special_tokens: options.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: false,
    });
  }

  tokenToId(token: string): number | undefined {
    return this.idOf.get(token);
  }

  idToToken(id: number): string | undefined {
    return this.tokenOf.get(id);
  }

  applyChatTemplate(
    messages: readonly ChatMessage[],
    options: { tools?: readonly ToolSpec[]; addGenerationPrompt?: boolean } = {},
  ): string {
    if (this.template === null) {
      const t = this.templateSource;
      if ('missing' in t)
        throw new FileFormatError({ file: t.missing, field: 'chat_template', message: 'the tokenizer has no chat template' });
      try {
        this.template = compileChatTemplate(t.source, this.templateContext);
      } catch (cause) {
        throw new FileFormatError({
          file: t.file,
          field: t.field,
          message: `chat template does not parse: ${(cause as Error).message}`,
          cause,
        });
      }
    }
    try {
      return this.template(messages, options);
    } catch (cause) {
      const t = this.templateSource as { file: string; field?: string };
      throw new FileFormatError({ file: t.file, field: t.field, message: `chat template failed: ${(cause as Error).message}`, cause });
    }
  }
}

/**
 * True when encoding text piece by piece (split at added tokens) gives exactly the library's
 * result: every added token is matched before normalisation and strips no whitespace, and the
 * pre-tokenizer does not depend on the piece's position (Metaspace's "first" scheme does).
 */
function segmentable(tokenizerJson: Json, config: Json): boolean {
  const added = (tokenizerJson.added_tokens ?? []) as { lstrip?: boolean; rstrip?: boolean; normalized?: boolean; single_word?: boolean }[];
  if (added.some((t) => t.lstrip || t.rstrip || t.normalized || t.single_word)) return false;
  if (config.remove_space === true || config.do_lowercase_and_remove_accent === true) return false;
  return !JSON.stringify(tokenizerJson.pre_tokenizer ?? null).includes('Metaspace');
}

/** Load the tokenizer and chat template of a Hugging Face model directory. */
export async function loadTokenizer(dir: string): Promise<ChatTokenizer> {
  const tokenizerFile = join(dir, 'tokenizer.json');
  const configFile = join(dir, 'tokenizer_config.json');
  const tokenizerJson = readJson(tokenizerFile, true)!;
  const config = readJson(configFile, false) ?? {};
  const generation = readJson(join(dir, 'generation_config.json'), false) ?? {};
  const modelConfig = readJson(join(dir, 'config.json'), false) ?? {};

  const model = tokenizerJson.model as { vocab?: unknown } | undefined;
  if (!model || typeof model !== 'object')
    throw new FileFormatError({ file: tokenizerFile, field: 'model', message: 'missing tokenizer model' });
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(tokenizerJson, config);
  } catch (cause) {
    throw new FileFormatError({ file: tokenizerFile, message: `unsupported tokenizer: ${(cause as Error).message}`, cause });
  }
  const idOf = tok.get_vocab(true);
  const tokenOf = new Map<number, string>();
  for (const [t, id] of idOf) tokenOf.set(id, t);

  const idOfContent = (content: string | null): number | null => (content === null ? null : (idOf.get(content) ?? null));
  const bosText = tokenContent(config.bos_token);
  const eosText = tokenContent(config.eos_token);
  const bos = idOfContent(bosText) ?? idList(generation.bos_token_id)[0] ?? idList(modelConfig.bos_token_id)[0] ?? null;
  const eosCandidates = [idOfContent(eosText), ...idList(generation.eos_token_id), ...idList(modelConfig.eos_token_id)].filter(
    (v): v is number => v !== null,
  );
  const eos = eosCandidates[0] ?? null;
  const stops = new Set(eosCandidates);
  const imEnd = idOf.get('<|im_end|>');
  if (imEnd !== undefined) stops.add(imEnd);

  let templateSource: { source: string; file: string; field?: string } | { missing: string };
  const jinjaFile = join(dir, 'chat_template.jinja');
  if (existsSync(jinjaFile)) {
    templateSource = { source: readFileSync(jinjaFile, 'utf8'), file: jinjaFile };
  } else if (typeof config.chat_template === 'string') {
    templateSource = { source: config.chat_template, file: configFile, field: 'chat_template' };
  } else if (Array.isArray(config.chat_template)) {
    const list = config.chat_template as { name?: unknown; template?: unknown }[];
    const entry = list.find((e) => e?.name === 'default') ?? list[0];
    if (!entry || typeof entry.template !== 'string')
      throw new FileFormatError({ file: configFile, field: 'chat_template', message: 'expected a string or a list of {name, template}' });
    templateSource = { source: entry.template, file: configFile, field: 'chat_template' };
  } else if (config.chat_template !== undefined && config.chat_template !== null) {
    throw new FileFormatError({ file: configFile, field: 'chat_template', message: 'expected a string or a list of {name, template}' });
  } else {
    templateSource = { missing: configFile };
  }
  const context: Record<string, unknown> = {
    bos_token: bosText ?? (bos !== null ? tokenOf.get(bos) : '') ?? '',
    eos_token: eosText ?? (eos !== null ? tokenOf.get(eos) : '') ?? '',
  };
  return new HfChatTokenizer(
    tok,
    tokenOf,
    idOf,
    { bos, eos, stops: [...stops] },
    templateSource,
    context,
    segmentable(tokenizerJson, config),
    segmentable(tokenizerJson, config) ? createFastBpe(tokenizerJson, tok) : null,
  );
}

// ---------------------------------------------------------------------------------------------
// Test tokenizer

/**
 * Added tokens of the test tokenizer, in id order after the byte alphabet and merges (same set as
 * the world tokenizer). The first three are special (dropped by `skipSpecialTokens`); the tag
 * tokens are added tokens that decode as text.
 */
export const TEST_SPECIAL_TOKENS = CHATML_SPECIAL_TOKENS;
const SKIPPABLE = new Set<string>(['<|endoftext|>', '<|im_start|>', '<|im_end|>']);

const TRAINING_TEXT =
  `You are a helpful assistant. Answer the question and put the final answer in \\boxed{}.
The planner delegates a subtask to a worker. The worker searches the documents, opens the most relevant ones
and reports the conclusion, supporting information, observations and the contribution to the main task.
{"name": "delegate_subtask", "arguments": {"subtask": "Find the capital of the country where the author was born."}}
{"name": "search", "arguments": {"query": "capital city of the country"}}
{"name": "open", "arguments": {"id": "doc-12", "page": 1}}
<use_mcp_tool><server_name>tools</server_name><tool_name>search</tool_name>` +
  `<arguments>{"query": "who founded the organisation"}</arguments></use_mcp_tool>
The answer is \\boxed{Paris}. The answer is \\boxed{1984}. Error: unknown tool. Error: invalid arguments.
What is the name of the city where the person who wrote the book was born? In which year was it founded?
This is your final turn: no tools. Write a summary with the sections Conclusion, Supporting information,
Observations and Contribution to the main task. The search returned the following results for the query.`;

/** Learn `count` BPE merges from `text` (GPT-2 pre-token split, ties broken by pair text: deterministic). */
function learnMerges(text: string, alphabet: string[], count: number): string[][] {
  const pre = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
  const encoder = new TextEncoder();
  const words = [...text.matchAll(pre)].map((m) => [...encoder.encode(m[0])].map((b) => alphabet[b]));
  const merges: string[][] = [];
  for (let k = 0; k < count; k++) {
    const counts = new Map<string, number>();
    for (const w of words)
      for (let i = 0; i + 1 < w.length; i++) {
        const key = w[i] + '\u0000' + w[i + 1];
        counts.set(key, (counts.get(key) ?? 0) + 1);
      }
    let best: string | null = null;
    let bestCount = 1;
    for (const [key, c] of counts) if (c > bestCount || (c === bestCount && best !== null && key < best)) [best, bestCount] = [key, c];
    if (best === null) break;
    const [a, b] = best.split('\u0000');
    merges.push([a, b]);
    for (const w of words) for (let i = 0; i + 1 < w.length; i++) if (w[i] === a && w[i + 1] === b) w.splice(i, 2, a + b);
  }
  return merges;
}

/** The tokenizer.json and tokenizer_config.json objects of the test tokenizer. */
export function testTokenizerFiles(options: { merges?: number; chatTemplate?: string | null } = {}): {
  tokenizerJson: Json;
  tokenizerConfig: Json;
} {
  const alphabet = [...BYTE_CHARS];
  const merges = learnMerges(TRAINING_TEXT, alphabet, options.merges ?? 300);
  const vocab: Record<string, number> = {};
  alphabet.forEach((c, i) => (vocab[c] = i));
  let next = 256;
  for (const [a, b] of merges) if (!(a + b in vocab)) vocab[a + b] = next++;
  const added = TEST_SPECIAL_TOKENS.map((content, i) => ({
    id: next + i,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: SKIPPABLE.has(content),
  }));
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: true };
  const tokenizerJson: Json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: byteLevel,
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
  const tokenizerConfig: Json = {
    add_bos_token: false,
    add_prefix_space: false,
    bos_token: null,
    eos_token: '<|im_end|>',
    pad_token: '<|endoftext|>',
    unk_token: null,
    clean_up_tokenization_spaces: false,
    model_max_length: 32768,
    tokenizer_class: 'Qwen2Tokenizer',
    added_tokens_decoder: Object.fromEntries(
      added.map((t) => [
        String(t.id),
        { content: t.content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: t.special },
      ]),
    ),
  };
  const template = options.chatTemplate === undefined ? CHATML_TOOLS_TEMPLATE : options.chatTemplate;
  if (template !== null) tokenizerConfig.chat_template = template;
  return { tokenizerJson, tokenizerConfig };
}

/**
 * Write the test tokenizer into `dir` (tokenizer.json, tokenizer_config.json) and load it.
 * `chatTemplate: null` writes no template (for error-path tests).
 */
export async function createTestTokenizer(
  dir: string,
  options: { merges?: number; chatTemplate?: string | null } = {},
): Promise<ChatTokenizer> {
  const { tokenizerJson, tokenizerConfig } = testTokenizerFiles(options);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson) + '\n');
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig, null, 2) + '\n');
  return loadTokenizer(dir);
}
