/**
 * Token-exact rendering of one agent's conversation through the model's chat template.
 *
 * A `Trajectory` owns the token stream of one sequence and grows it in three ways:
 *   - `start(messages)`: the first prompt, `encode(render(messages, generation prompt))`, mask 0;
 *   - `appendSample(result)`: the sampled tokens exactly as sampled, mask 1, with their logprobs;
 *     the assistant message recorded for the conversation is their decoded text (display only);
 *   - `appendMessages(messages)`: tool results, worker reports, instructions — mask 0. The text
 *     appended is the *delta* of the template's rendering: render(all + new, generation prompt)
 *     minus everything the tokens already stand for, which is the previous prompt text plus the
 *     sampled text. So the template's closing of the assistant turn that the model did not sample
 *     (the `\n` after `<|im_end|>`, or the whole `<|im_end|>\n` when generation stopped on length)
 *     goes into this prompt delta, and the sampled text is never re-tokenized.
 *
 * Rendering only the tail: a delta depends on the conversation's head (system and first user
 * message, which templates inspect), the message before the assistant turn, the assistant turn and
 * the new messages. Rendering just those (long contents of the context shortened, tools reduced to
 * names) with a marker in place of the assistant content, in one render, is much cheaper than the
 * whole history twice; and the rendering of a given shape of new messages is cached as a skeleton
 * into which their contents are put (`deltaBySkeleton`). Because a template might look further back, every
 * tokenizer's first `TAIL_CHECKS` deltas are computed both ways; if they ever differ, that
 * tokenizer falls back to full renders for good.
 *
 * `renderConversation` renders a complete transcript for supervised training: mask 1 on the
 * assistant turns' content and the stop token that closes them, 0 elsewhere.
 */
import { InvalidArgumentError } from '../core/errors.ts';
import type { ChatMessage, ChatTokenizer, ToolSpec } from '../core/chat.ts';
import type { SampleResult } from '../core/policy.ts';

const TAIL_CHECKS = 16;
const tailState = new WeakMap<ChatTokenizer, { checked: number; ok: boolean }>();

/** Text of one sampled turn: the decoded tokens, and the content without a trailing stop token. */
export interface SampledText {
  /** Decoded sampled tokens (special tokens kept). */
  text: string;
  /** `text` without the trailing stop token: the assistant message content. */
  content: string;
  /** The stop token's text when the sample ended on one, else ''. */
  stopText: string;
}

export function decodeSample(tokenizer: ChatTokenizer, tokens: readonly number[]): SampledText {
  const last = tokens[tokens.length - 1];
  const stopped = last !== undefined && tokenizer.stopTokenIds.includes(last);
  const body = stopped ? tokens.slice(0, -1) : tokens;
  const content = tokenizer.decode(body);
  const stopText = stopped ? tokenizer.decode([last]) : '';
  return { text: content + stopText, content, stopText };
}

/**
 * The text to append after a sampled assistant turn so that the tokens stand for
 * render(context + assistant + added, generation prompt). `context` ends right before the assistant
 * turn and its rendering (with the generation prompt) is what the tokens held before sampling.
 */
function deltaAfterAssistant(
  tokenizer: ChatTokenizer,
  context: readonly ChatMessage[],
  sampled: SampledText,
  added: readonly ChatMessage[],
  tools: readonly ToolSpec[] | undefined,
): string {
  const before = tokenizer.applyChatTemplate(context, { tools, addGenerationPrompt: true });
  const full = tokenizer.applyChatTemplate([...context, { role: 'assistant', content: sampled.content }, ...added], {
    tools,
    addGenerationPrompt: true,
  });
  // A template may re-render earlier turns once a turn is added (e.g. dropping old reasoning); the
  // tokens keep what was sampled, and the delta then comes from the marker render below.
  if (full.startsWith(before)) {
    const rest = full.slice(before.length);
    if (sampled.stopText && rest.startsWith(sampled.text)) return rest.slice(sampled.text.length);
    if (rest.startsWith(sampled.content)) {
      const tail = rest.slice(sampled.content.length);
      // Stopped on a stop token the template writes differently (e.g. eos instead of <|im_end|>): keep the template's closing.
      return sampled.stopText && tail.startsWith(sampled.stopText) ? tail.slice(sampled.stopText.length) : tail;
    }
  }
  // The template rewrites the assistant content (e.g. drops reasoning) or earlier turns: find where
  // the turn ends by rendering a marker in its place.
  return deltaByMarker(tokenizer, context, sampled, added, tools);
}

/**
 * One render instead of two: the assistant turn rendered with a marker as its content; the delta is
 * the text after the marker (less the stop token when it was sampled). Exact for templates that
 * write the content verbatim — which the first checks against `deltaAfterAssistant` confirm.
 */
function deltaByMarker(
  tokenizer: ChatTokenizer,
  context: readonly ChatMessage[],
  sampled: SampledText,
  added: readonly ChatMessage[],
  tools: readonly ToolSpec[] | undefined,
): string {
  const marker = '\u0000MATPO_CONTENT\u0000';
  const probe = tokenizer.applyChatTemplate([...context, { role: 'assistant', content: marker }, ...added], {
    tools,
    addGenerationPrompt: true,
  });
  const at = probe.indexOf(marker);
  if (at < 0) throw new InvalidArgumentError('chat_template', 'cannot locate the assistant turn in the rendered conversation');
  const tail = probe.slice(at + marker.length);
  return sampled.stopText && tail.startsWith(sampled.stopText) ? tail.slice(sampled.stopText.length) : tail;
}

const skeletons = new WeakMap<ChatTokenizer, Map<string, string[] | null>>();

/**
 * The delta with the template's work cached: what a template writes around new messages depends on
 * their roles and names, not on what a long tool result or report says. So the delta is rendered
 * once per shape with each long content (> 48 characters; short ones are part of the shape) replaced
 * by a numbered stand-in, split at the stand-ins into a skeleton, and later deltas of the same shape
 * are the skeleton with the real contents put back. Context messages enter the shape by role and
 * name only. When a stand-in does not come out of the template verbatim, the shape is not cached and
 * the delta is rendered; templates that transform contents fail the first checks against full
 * renders and are never served from here.
 */
function deltaBySkeleton(
  tokenizer: ChatTokenizer,
  messages: readonly ChatMessage[],
  assistantAt: number,
  sampled: SampledText,
  added: readonly ChatMessage[],
  tools: readonly ToolSpec[] | undefined,
): string {
  let cache = skeletons.get(tokenizer);
  if (!cache) skeletons.set(tokenizer, (cache = new Map()));
  const context = tailContext(messages, assistantAt).map((m): ChatMessage => ({
    role: m.role,
    content: 'x',
    ...(m.name !== undefined ? { name: m.name } : {}),
  }));
  const standIns: (string | null)[] = added.map((m, k) => (m.content.length > 48 ? `\u0000MATPO_${k}\u0000` : null));
  const key = JSON.stringify([
    context.map((m) => [m.role, m.name ?? null]),
    added.map((m, k) => [m.role, m.name ?? null, standIns[k] ?? m.content]),
    sampled.stopText,
    tools?.map((t) => t.function.name) ?? null,
  ]);
  let skeleton = cache.get(key);
  if (skeleton === undefined) {
    const shaped = added.map((m, k) => (standIns[k] === null ? m : { ...m, content: standIns[k]! }));
    const text = deltaByMarker(tokenizer, context, sampled, shaped, tools);
    skeleton = [];
    let at = 0;
    for (const s of standIns) {
      if (s === null) continue;
      const found = text.indexOf(s, at);
      if (found < 0 || text.indexOf(s, found + s.length) >= 0) {
        skeleton = null;
        break;
      }
      skeleton.push(text.slice(at, found));
      at = found + s.length;
    }
    if (skeleton) skeleton.push(text.slice(at));
    if (cache.size > 10_000) cache.clear();
    cache.set(key, skeleton);
  }
  if (skeleton === null) return deltaByMarker(tokenizer, tailContext(messages, assistantAt), sampled, added, tools);
  let out = skeleton[0];
  let piece = 1;
  added.forEach((m, k) => {
    if (standIns[k] !== null) out += m.content + skeleton![piece++];
  });
  return out;
}

/** A long content cut to its ends (templates test prefixes such as `<tool_response>`, rarely more). */
function shorten(m: ChatMessage): ChatMessage {
  if (m.content.length <= 200) return m;
  return { ...m, content: `${m.content.slice(0, 64)}\u2026${m.content.slice(-64)}` };
}

/**
 * The cheap context for rendering a delta after `messages[assistantAt]`: the head (up to the first
 * user message) and the message before the turn, with long contents shortened. Whatever it leaves
 * out only shows in the rendering before the delta, which cancels out; the first deltas of every
 * tokenizer are checked against full renders to make sure.
 */
function tailContext(messages: readonly ChatMessage[], assistantAt: number): ChatMessage[] {
  const keep: ChatMessage[] = [];
  const firstUser = messages.findIndex((m) => m.role === 'user');
  for (let i = 0; i <= firstUser && i < assistantAt; i++) keep.push(shorten(messages[i]));
  const prev = assistantAt - 1;
  if (prev > firstUser) keep.push(shorten(messages[prev]));
  return keep;
}

/** Tool specs reduced to their names (the tool list is rendered in the head, which cancels out). */
function toolStandIns(tools: readonly ToolSpec[] | undefined): ToolSpec[] | undefined {
  return tools?.map((t) => ({ type: 'function', function: { name: t.function.name, description: '', parameters: {} } }));
}

export interface TrajectoryTurn {
  promptStart: number;
  sampleStart: number;
  end: number;
}

/** One agent's token stream: tokens, train mask and sampler logprobs, aligned. */
export class Trajectory {
  readonly tokens: number[] = [];
  readonly mask: number[] = [];
  readonly logprobs: number[] = [];
  /** The conversation as messages (the assistant messages hold the decoded sampled text). */
  readonly messages: ChatMessage[] = [];
  /** Where the current prompt part began (the start of the last mask-0 run). */
  private promptStart = 0;
  /** The last sampled turn, its message index and where its tokens end (prompt tokens after it can be re-rendered). */
  private last: { sampled: SampledText; messageAt: number; end: number } | null = null;
  private readonly toolsLite: ToolSpec[] | undefined;

  constructor(
    readonly tokenizer: ChatTokenizer,
    readonly tools: readonly ToolSpec[] | undefined,
  ) {
    this.toolsLite = toolStandIns(tools);
  }

  get length(): number {
    return this.tokens.length;
  }

  /** The first prompt: the rendering of `messages` with the generation prompt. */
  start(messages: readonly ChatMessage[]): void {
    if (this.tokens.length > 0) throw new InvalidArgumentError('trajectory', 'already started');
    this.messages.push(...messages);
    this.pushPrompt(this.tokenizer.encode(this.tokenizer.applyChatTemplate(messages, { tools: this.tools, addGenerationPrompt: true })));
  }

  /** Append a sampled turn exactly as sampled. Returns its text and where its tokens sit. */
  appendSample(result: SampleResult): SampledText & TrajectoryTurn {
    if (result.tokens.length !== result.logprobs.length)
      throw new InvalidArgumentError('sample', `${result.tokens.length} tokens but ${result.logprobs.length} logprobs`);
    const promptStart = this.promptStart;
    const sampleStart = this.tokens.length;
    for (let i = 0; i < result.tokens.length; i++) {
      this.tokens.push(result.tokens[i]);
      this.mask.push(1);
      this.logprobs.push(result.logprobs[i]);
    }
    const sampled = decodeSample(this.tokenizer, result.tokens);
    this.messages.push({ role: 'assistant', content: sampled.content });
    this.last = { sampled, messageAt: this.messages.length - 1, end: this.tokens.length };
    this.promptStart = this.tokens.length;
    return { ...sampled, promptStart, sampleStart, end: this.tokens.length };
  }

  /**
   * Append messages (tool results, reports, instructions), ending with the generation prompt.
   * Prompt tokens appended since the last sampled turn are re-rendered together with `added`, so
   * messages can be added in several steps; sampled tokens are never touched.
   */
  appendMessages(added: readonly ChatMessage[]): void {
    this.messages.push(...added);
    if (this.last === null) {
      // Nothing sampled yet (or everything sampled was dropped): the whole sequence is prompt.
      this.truncate(0);
      this.pushPrompt(
        this.tokenizer.encode(this.tokenizer.applyChatTemplate(this.messages, { tools: this.tools, addGenerationPrompt: true })),
      );
      return;
    }
    const { sampled, messageAt, end } = this.last;
    const delta = this.delta(this.messages, messageAt, sampled, this.messages.slice(messageAt + 1));
    this.truncate(end);
    this.pushPrompt(this.tokenizer.encode(delta));
  }

  /**
   * Cut the tokens back to the end of the last sampled turn when the sequence ends above `max`
   * tokens: what follows the last sample is prompt only (results the agent never answered), and a
   * training sequence must fit the model. The messages keep the full conversation for display.
   */
  trimTo(max: number): void {
    if (this.tokens.length <= max) return;
    this.truncate(Math.min(max, this.last && this.last.end <= max ? this.last.end : max));
    this.last = null;
  }

  private truncate(n: number): void {
    this.tokens.length = n;
    this.mask.length = n;
    this.logprobs.length = n;
  }

  private delta(messages: readonly ChatMessage[], assistantAt: number, sampled: SampledText, added: readonly ChatMessage[]): string {
    let state = tailState.get(this.tokenizer);
    if (!state) tailState.set(this.tokenizer, (state = { checked: 0, ok: true }));
    const full = () => deltaAfterAssistant(this.tokenizer, messages.slice(0, assistantAt), sampled, added, this.tools);
    if (!state.ok) return full();
    const tail = deltaBySkeleton(this.tokenizer, messages, assistantAt, sampled, added, this.toolsLite);
    if (state.checked < TAIL_CHECKS) {
      state.checked++;
      const reference = full();
      if (reference !== tail) {
        state.ok = false;
        return reference;
      }
    }
    return tail;
  }

  private pushPrompt(ids: readonly number[]): void {
    this.promptStart = this.tokens.length;
    for (const id of ids) {
      this.tokens.push(id);
      this.mask.push(0);
      this.logprobs.push(0);
    }
  }

  /**
   * Drop the middle of the conversation (the reference's overflow policy): keep the head (system
   * and first user message) and the trailing non-assistant messages after the last assistant turn,
   * and rebuild the tokens as their rendering (all mask 0: the dropped turns leave the training
   * sequence). Returns the number of assistant turns dropped.
   */
  dropMiddle(): number {
    const firstUser = this.messages.findIndex((m) => m.role === 'user');
    let lastAssistant = -1;
    for (let i = this.messages.length - 1; i >= 0; i--) {
      if (this.messages[i].role === 'assistant') {
        lastAssistant = i;
        break;
      }
    }
    if (lastAssistant < 0) return 0;
    const head = this.messages.slice(0, firstUser + 1);
    const tail = this.messages.slice(lastAssistant + 1);
    const dropped = this.messages.slice(firstUser + 1, lastAssistant + 1).filter((m) => m.role === 'assistant').length;
    this.messages.length = 0;
    this.messages.push(...head, ...tail);
    this.last = null;
    this.truncate(0);
    this.pushPrompt(
      this.tokenizer.encode(this.tokenizer.applyChatTemplate(this.messages, { tools: this.tools, addGenerationPrompt: true })),
    );
    return dropped;
  }
}

/**
 * Render a full transcript for supervised training. The prompt before each assistant turn is the
 * template's rendering (mask 0); each assistant turn's content is encoded on its own and followed by
 * the stop token (mask 1); the template's text after the turn goes into the next prompt part.
 * The conversation must contain at least one assistant message; trailing non-assistant messages
 * are not rendered (nothing trainable follows them).
 */
export function renderConversation(
  tokenizer: ChatTokenizer,
  messages: readonly ChatMessage[],
  tools?: readonly ToolSpec[],
): { tokens: number[]; mask: number[] } {
  const firstAssistant = messages.findIndex((m) => m.role === 'assistant');
  if (firstAssistant < 0) throw new InvalidArgumentError('messages', 'a transcript needs at least one assistant message');
  const stop = tokenizer.tokenToId('<|im_end|>') ?? tokenizer.eosTokenId;
  if (stop === null) throw new InvalidArgumentError('tokenizer', 'has no <|im_end|> or eos token to close assistant turns');
  const trajectory = new Trajectory(tokenizer, tools && tools.length > 0 ? tools : undefined);
  trajectory.start(messages.slice(0, firstAssistant));
  let i = firstAssistant;
  for (;;) {
    const content = messages[i].content;
    const tokens = [...tokenizer.encode(content), stop];
    trajectory.appendSample({ tokens, logprobs: tokens.map(() => 0), finishReason: 'stop_token' });
    // The recorded message must be the original content (decode(encode(x)) can differ for odd text).
    trajectory.messages[trajectory.messages.length - 1] = { role: 'assistant', content };
    let next = i + 1;
    while (next < messages.length && messages[next].role !== 'assistant') next++;
    if (next >= messages.length) break;
    trajectory.appendMessages(messages.slice(i + 1, next));
    i = next;
  }
  return { tokens: trajectory.tokens, mask: trajectory.mask };
}
