/**
 * Chat vocabulary shared by every layer: messages and tools as the chat template sees them, and the
 * tokenizer contract (tokenizer.json + the Jinja chat template).
 */

/** A chat message as the chat template sees it. */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
  /** Name of the tool whose result this is (role 'tool'). */
  name?: string;
}

/** A tool as the chat template sees it (OpenAI function format). */
export interface ToolSpec {
  type: 'function';
  function: { name: string; description: string; parameters: Record<string, unknown> };
}

/**
 * A tokenizer with the model's chat template. Backed by `tokenizer.json` + `tokenizer_config.json`
 * (@huggingface/tokenizers and @huggingface/jinja).
 */
export interface ChatTokenizer {
  readonly vocabSize: number;
  /** Token ids that end an assistant turn (eos and e.g. <|im_end|>). */
  readonly stopTokenIds: readonly number[];
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
  /** Encode plain text; special-token strings in `text` are recognised as special tokens. */
  encode(text: string): number[];
  decode(ids: readonly number[], options?: { skipSpecialTokens?: boolean }): string;
  tokenToId(token: string): number | undefined;
  idToToken(id: number): string | undefined;
  /** Render messages with the chat template (Jinja) to text. */
  applyChatTemplate(messages: readonly ChatMessage[], options?: { tools?: readonly ToolSpec[]; addGenerationPrompt?: boolean }): string;
}
