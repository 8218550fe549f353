/**
 * A tool is a name, a description, a zod input schema and `execute`. Tool output goes back into the
 * agent's context as tokens with mask 0. Errors are returned to the model as the tool result, never
 * thrown through the rollout.
 */
import type { z } from 'zod';

export interface ToolContext {
  signal: AbortSignal;
}

// A list of tools holds tools of different inputs, so the default input type is `any`, not `unknown`
// (execute's parameter would make Tool<X> unassignable to Tool<unknown>).
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export interface Tool<Input = any> {
  name: string;
  description: string;
  inputSchema: z.ZodType<Input>;
  execute(input: Input, context: ToolContext): Promise<string>;
}

export function defineTool<S extends z.ZodType>(tool: {
  name: string;
  description: string;
  inputSchema: S;
  execute(input: z.infer<S>, context: ToolContext): Promise<string>;
}): Tool<z.infer<S>> {
  return tool as unknown as Tool<z.infer<S>>;
}
